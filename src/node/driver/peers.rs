//! Messages from other members: Raft messages (a snapshot offer is fetched before the core
//! sees it), requests forwarded to this leader and the answers to ours, snapshot-transfer
//! control; and the transport's peer set, kept equal to the configuration in force.

use super::{storage, Driver};
use crate::error::{Error, Result};
use crate::logging::Level;
use crate::net::resolve_address;
use crate::node::peer_message::PeerMessage;
use crate::node::reply::Reply;
use crate::node::transfer::TransferTask;
use crate::proto::WireError;
use crate::raft::{Message, MessageBody};
use crate::types::{LogIndex, NodeId, Term};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

impl Driver {
    pub(super) fn on_peer(&mut self, from: NodeId, message: PeerMessage) -> Result<()> {
        self.last_contact.insert(from, self.now());
        match message {
            PeerMessage::Raft(m) => {
                if m.from != from {
                    dlog!(
                        self,
                        Level::Warn,
                        "peer_message_spoofed",
                        peer = from.0,
                        claimed = m.from.0
                    );
                    return Ok(());
                }
                self.on_raft_message(m)?;
            }
            PeerMessage::Forward {
                id,
                timeout_ms,
                request,
            } => {
                let timeout = Duration::from_millis(
                    u64::from(timeout_ms).min(crate::node::MAX_REQUEST_TIMEOUT_MS),
                );
                let reply = Reply::Forwarded {
                    transport: Arc::clone(&self.transport),
                    to: from,
                    id,
                };
                self.on_request(request, reply, self.now() + timeout)?;
            }
            PeerMessage::ForwardReply { id, response } => {
                if let Some((reply, _)) = self.forwarded.remove(&id) {
                    reply.send(response.map_err(|e: WireError| Error::from(e)));
                }
            }
            PeerMessage::SnapshotRequest {
                index,
                term,
                offset,
            } => {
                let now = self.now();
                if let Some(o) = self.outgoing.get_mut(&from) {
                    if o.index == index && o.term == term {
                        o.last_activity = now;
                    }
                }
                self.to_transfer(TransferTask::Serve {
                    to: from,
                    index,
                    term,
                    offset,
                });
            }
            PeerMessage::SnapshotChunk(chunk) => {
                self.to_transfer(TransferTask::Chunk { from, chunk });
            }
            PeerMessage::SnapshotGone { index, term } => {
                self.to_transfer(TransferTask::Gone { from, index, term });
            }
            PeerMessage::SnapshotDone { index, term, ok } => {
                let matches = self
                    .outgoing
                    .get(&from)
                    .is_some_and(|o| o.index == index && o.term == term);
                if matches {
                    self.outgoing.remove(&from);
                    if ok {
                        self.stats.snapshots_sent += 1;
                    }
                    dlog!(
                        self,
                        Level::Info,
                        "snapshot_send_finished",
                        to = from.0,
                        index = index.0,
                        ok = ok
                    );
                    self.raft.report_snapshot(from, ok);
                }
            }
        }
        Ok(())
    }

    pub(super) fn on_raft_message(&mut self, m: Message) -> Result<()> {
        if let MessageBody::Snapshot { meta } = &m.body {
            let current = m.term >= self.raft.term();
            let covered = meta.index <= self.raft.commit_index()
                || matches!(self.raft.log_term(meta.index), Ok(Some(t)) if t == meta.term);
            if current && !covered {
                // The core takes the snapshot only once its data is durable here.
                let key = (meta.index, meta.term, m.from);
                if self.fetching != Some(key) {
                    dlog!(
                        self,
                        Level::Info,
                        "snapshot_offered",
                        from = m.from.0,
                        index = meta.index.0
                    );
                }
                self.fetching = Some(key);
                self.to_transfer(TransferTask::Fetch(m));
                return Ok(());
            }
        }
        self.raft.step(m).map_err(storage)
    }

    /// Keep the transport's peer set equal to the configuration in force (a member being
    /// added is dialled as soon as its change is appended). Before a joining member knows
    /// any configuration it talks to the members it was given.
    pub(super) fn sync_peers(&mut self) {
        let membership = self.raft.membership();
        if self.membership.as_ref() == Some(membership) {
            return;
        }
        let membership = membership.clone();
        let mut wanted: BTreeMap<NodeId, String> = membership
            .voters
            .iter()
            .chain(membership.learners.iter())
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        if wanted.is_empty() {
            wanted = self.config.members.clone();
        }
        wanted.remove(&self.id);
        for (id, address) in &wanted {
            let addr = match self.config.peer_routes.get(id) {
                Some(addr) => *addr,
                None => match resolve_address(address) {
                    Ok(addr) => addr,
                    Err(e) => {
                        dlog!(
                            self,
                            Level::Warn,
                            "peer_address_unresolved",
                            peer = id.0,
                            error = e
                        );
                        continue;
                    }
                },
            };
            if self.peer_addrs.get(id) != Some(&addr) {
                match self.transport.set_peer(*id, addr) {
                    Ok(()) => {
                        self.peer_addrs.insert(*id, addr);
                    }
                    Err(e) => dlog!(self, Level::Warn, "peer_add_failed", peer = id.0, error = e),
                }
            }
        }
        let gone: Vec<NodeId> = self
            .peer_addrs
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.transport.remove_peer(id);
            self.peer_addrs.remove(&id);
        }
        if self.membership.is_some() {
            dlog!(
                self,
                Level::Info,
                "membership_changed",
                voters = membership.voters.len(),
                learners = membership.learners.len()
            );
        }
        self.membership = Some(membership);
    }
    /// The data of a snapshot offered by `message.from` is durable here, at `path`: step the
    /// offer into the core (which installs it through the next `Ready`) and tell the sender.
    pub(super) fn on_snapshot_fetched(&mut self, message: Message, path: PathBuf) -> Result<()> {
        let MessageBody::Snapshot { meta } = &message.body else {
            return Ok(());
        };
        let (index, term, from) = (meta.index, meta.term, message.from);
        if self.fetching == Some((index, term, from)) {
            self.fetching = None;
        }
        self.install_paths.insert((index, term), path);
        self.stats.snapshots_received += 1;
        self.raft.step(message).map_err(storage)?;
        self.transport.send(
            from,
            PeerMessage::SnapshotDone {
                index,
                term,
                ok: true,
            },
        );
        Ok(())
    }

    /// The transfer thread gave up fetching snapshot (`index`, `term`): a later offer starts
    /// again.
    pub(super) fn on_snapshot_fetch_failed(&mut self, index: LogIndex, term: Term) {
        if self
            .fetching
            .is_some_and(|(i, t, _)| i == index && t == term)
        {
            self.fetching = None;
        }
    }
}
