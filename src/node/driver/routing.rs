//! Client requests: where each one goes. Writes and membership changes are proposed here when
//! this member leads, forwarded to the leader when another leads, and wait (bounded) for a
//! leader otherwise; linearizable reads are batched into one ReadIndex per iteration; stale
//! reads go straight to the apply thread. Also what becomes of waiting requests when the core
//! refuses one ([`Driver::refused`]) or the leader changes ([`Driver::on_soft_state`]).

use super::{Driver, Pending, ReadBatch, Waiting};
use crate::error::{Error, Result};
use crate::limits::{
    MAX_KEY_BYTES, MAX_LOCK_NAME_BYTES, MAX_SCAN_LIMIT, MAX_SESSION_CHECKPOINT_BATCH,
};
use crate::logging::Level;
use crate::net::resolve_address;
use crate::net::{ClientEvent, SendOutcome};
use crate::node::apply_thread::{ApplyTask, PendingRead};
use crate::node::peer_message::PeerMessage;
use crate::node::reply::Reply;
use crate::node::transfer::TransferTask;
use crate::node::{node_role, Internal};
use crate::proto::{
    AdminOp, ClientRequest, ClientResponse, NodeRole, ReadMode, ReadOp, Request, Response,
    CLIENT_PROTOCOL_VERSION, MIN_STATUS_PROTOCOL_VERSION,
};
use crate::raft::{MembershipChange, RaftError, ReadState, Role, SoftState};
use crate::types::{LogIndex, NodeId, Term};
use crossbeam_channel::TrySendError;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The requests waiting on something the core refused (see [`Driver::refused`]).
pub(super) enum Refused {
    /// Writes proposed as one batch.
    Writes(Vec<Pending>),
    /// Linearizable reads batched under one ReadIndex.
    Reads(Vec<PendingRead>),
    /// One membership change or leadership transfer.
    Admin(Reply),
}

impl Driver {
    /// Whether requests can be routed now: a leader is known and, if it is us, no leadership
    /// transfer is under way.
    pub(super) fn leader_usable(&self) -> bool {
        match self.raft.leader() {
            Some(l) if l == self.id => self.raft.transfer_target().is_none(),
            Some(_) => true,
            None => false,
        }
    }

    pub(super) fn on_client_event(&mut self, event: ClientEvent<ClientRequest, ClientResponse>) {
        let (conn, request_id, request) = match event {
            ClientEvent::Request {
                conn,
                request_id,
                request,
            } => (conn, request_id, request),
            ClientEvent::Unreadable {
                conn,
                request_id,
                version,
                error,
            } => {
                if version > CLIENT_PROTOCOL_VERSION {
                    Reply::Remote { conn, request_id }.fail(unsupported_protocol(version));
                } else {
                    conn.close_for(format!(
                        "undecodable request of protocol version {version}: {error}"
                    ));
                }
                return;
            }
            ClientEvent::Closed { conn } => {
                // Answers to it are dropped by the transport; its watches end here.
                self.shared.watches.connection_closed(conn.connection_id());
                return;
            }
        };
        let reply = Reply::Remote { conn, request_id };
        if request.version > CLIENT_PROTOCOL_VERSION {
            reply.fail(unsupported_protocol(request.version));
            return;
        }
        if request.version < MIN_STATUS_PROTOCOL_VERSION && request.request == Request::Status {
            reply.fail(Error::InvalidArgument(format!(
                "status needs client protocol version {MIN_STATUS_PROTOCOL_VERSION} or newer \
                 (this client speaks {}): upgrade the client",
                request.version
            )));
            return;
        }
        let timeout = Duration::from_millis(
            u64::from(request.timeout_ms).min(crate::node::MAX_REQUEST_TIMEOUT_MS),
        );
        // A storage failure inside a request is reported to the client and ends the node in
        // the next iteration (the core's state is then already marked failed).
        if let Err(e) = self.on_request(request.request, reply, self.now() + timeout) {
            self.shared.set_failure(&e.to_string());
            self.ch.internal_tx.send(Internal::Fatal(e.to_string()));
        }
    }

    /// Open a remote client's watch on this member (never forwarded: it is pushed on the
    /// connection it was opened on).
    fn open_watch(
        &mut self,
        watch_id: u64,
        spec: crate::proto::WatchSpec,
        reply: Reply,
        deadline: Instant,
    ) {
        match reply {
            Reply::Remote { conn, request_id } => self.shared.watches.watch_remote(
                conn.clone(),
                watch_id,
                spec,
                Reply::Remote { conn, request_id },
                deadline,
            ),
            other => other.fail(Error::InvalidArgument(
                "watch: only a remote client's connection can carry a watch (in process, use \
                 Client::watch)"
                    .into(),
            )),
        }
    }

    pub(super) fn on_request(
        &mut self,
        request: Request,
        reply: Reply,
        deadline: Instant,
    ) -> Result<()> {
        if self.stopping.is_some() {
            reply.fail(Error::Unavailable(format!(
                "member {} is shutting down",
                self.id
            )));
            return Ok(());
        }
        match request {
            Request::Write(command) => {
                if let Err(e) = command.validate() {
                    reply.fail(e);
                    return Ok(());
                }
                self.route_to_leader(Pending {
                    request: Request::Write(command),
                    reply,
                    deadline,
                })
            }
            Request::Read { op, mode } => {
                if let Err(e) = validate_read(&op) {
                    reply.fail(e);
                    return Ok(());
                }
                let read = PendingRead {
                    op,
                    reply,
                    deadline,
                };
                match mode {
                    ReadMode::Stale => {
                        self.to_apply(ApplyTask::StaleRead(read));
                    }
                    ReadMode::Linearizable => {
                        if self.raft.leader().is_some() {
                            self.queued_reads.push(read);
                        } else {
                            self.wait_for_leader(Pending {
                                request: Request::Read { op: read.op, mode },
                                reply: read.reply,
                                deadline,
                            });
                        }
                    }
                }
                Ok(())
            }
            Request::Status => {
                reply.send(Ok(Response::Status(Box::new(self.status()))));
                Ok(())
            }
            Request::StateHash => {
                self.to_apply(ApplyTask::StateHash(reply));
                Ok(())
            }
            Request::Admin(op) => self.route_to_leader(Pending {
                request: Request::Admin(op),
                reply,
                deadline,
            }),
            Request::SnapshotChunk {
                index,
                term,
                offset,
            } => {
                // The transfer thread reads snapshot files (never the driver: file IO).
                let task = TransferTask::ServeClient {
                    index,
                    term,
                    offset,
                    reply,
                };
                if let Err(TrySendError::Full(TransferTask::ServeClient { reply, .. })) =
                    self.ch.transfer.try_send(task)
                {
                    reply.fail(Error::Unavailable(format!(
                        "member {} is busy with snapshot transfers",
                        self.id
                    )));
                }
                Ok(())
            }
            // Served by this member, never forwarded: a watch is pushed on the connection it
            // was opened on.
            Request::Watch { watch_id, spec } => {
                self.open_watch(watch_id, spec.into(), reply, deadline);
                Ok(())
            }
            Request::OpenWatch { watch_id, spec } => {
                self.open_watch(watch_id, spec, reply, deadline);
                Ok(())
            }
            Request::CancelWatch { watch_id } => {
                if let Reply::Remote { conn, .. } = &reply {
                    self.shared
                        .watches
                        .cancel_remote(conn.connection_id(), watch_id, deadline);
                }
                reply.send(Ok(Response::Done));
                Ok(())
            }
            Request::SessionKeepAlive { sessions } => {
                if sessions.len() > MAX_SESSION_CHECKPOINT_BATCH {
                    reply.fail(Error::InvalidArgument(format!(
                        "keepalive: {} sessions, over the limit of \
                         {MAX_SESSION_CHECKPOINT_BATCH}",
                        sessions.len()
                    )));
                    return Ok(());
                }
                if self.raft.leader() != Some(self.id) {
                    return self.route_to_leader(Pending {
                        request: Request::SessionKeepAlive { sessions },
                        reply,
                        deadline,
                    });
                }
                let now = self.now();
                match self.leases.keepalive(&sessions, now) {
                    Some(answer) => reply.send(Ok(Response::SessionKeepAlive(answer))),
                    None => reply.fail(Error::Unavailable(format!(
                        "member {} leads but cannot answer keepalives yet (its term's first \
                         entry, or a session's grant, is not applied here yet); retry",
                        self.id
                    ))),
                }
                Ok(())
            }
        }
    }

    /// Writes and membership changes: propose here if we lead, else forward to the leader, else
    /// wait (bounded) for one.
    pub(super) fn route_to_leader(&mut self, p: Pending) -> Result<()> {
        match self.raft.leader() {
            Some(l) if l == self.id => {
                if self.raft.transfer_target().is_some() {
                    self.wait_for_leader(p);
                    return Ok(());
                }
                match p.request {
                    Request::Admin(op) => self.admin(op, p.reply, p.deadline)?,
                    _ => self.queued_writes.push(p),
                }
            }
            Some(l) => {
                if p.reply.is_forwarded() {
                    p.reply.fail(Error::Unavailable(format!(
                        "member {} is not the leader (it follows {l})",
                        self.id
                    )));
                } else {
                    self.forward(p, l);
                }
            }
            None => self.wait_for_leader(p),
        }
        Ok(())
    }

    pub(super) fn wait_for_leader(&mut self, pending: Pending) {
        let give_up = pending.deadline.min(self.now() + self.no_leader_wait);
        self.waiting_leader.push(Waiting { pending, give_up });
    }

    pub(super) fn drain_waiting(&mut self) {
        for w in std::mem::take(&mut self.waiting_leader) {
            let p = w.pending;
            if let Err(e) = self.on_request(p.request, p.reply, p.deadline) {
                self.ch.internal_tx.send(Internal::Fatal(e.to_string()));
            }
        }
    }

    pub(super) fn forward(&mut self, p: Pending, leader: NodeId) {
        let id = self.next_forward_id;
        self.next_forward_id += 1;
        let timeout_ms = p
            .deadline
            .saturating_duration_since(self.now())
            .as_millis()
            .min(u128::from(u32::MAX)) as u32;
        let message = PeerMessage::Forward {
            id,
            timeout_ms,
            request: p.request,
        };
        match self.transport.send(leader, message) {
            SendOutcome::Queued => {
                self.stats.forwarded += 1;
                self.forwarded.insert(id, (p.reply, p.deadline));
            }
            other => p.reply.fail(Error::Unavailable(format!(
                "cannot forward to leader {leader}: {other:?}"
            ))),
        }
    }

    pub(super) fn admin(&mut self, op: AdminOp, reply: Reply, deadline: Instant) -> Result<()> {
        let membership = self.raft.membership().clone();
        let change = match op {
            AdminOp::AddLearner { id, address } => {
                if let Err(e) = resolve_address(&address) {
                    reply.fail(e);
                    return Ok(());
                }
                let same = |m: &BTreeMap<NodeId, String>| m.get(&id) == Some(&address);
                if same(&membership.learners) || same(&membership.voters) {
                    reply.send(Ok(Response::Done)); // a retry of a change already made
                    return Ok(());
                }
                MembershipChange::AddLearner { id, address }
            }
            AdminOp::PromoteLearner { id } => {
                if membership.is_voter(id) {
                    reply.send(Ok(Response::Done));
                    return Ok(());
                }
                MembershipChange::PromoteLearner { id }
            }
            AdminOp::RemoveMember { id } => {
                if !membership.contains(id) {
                    reply.send(Ok(Response::Done));
                    return Ok(());
                }
                MembershipChange::Remove { id }
            }
            AdminOp::TransferLeadership { to } => {
                if to == self.id {
                    reply.send(Ok(Response::Done));
                    return Ok(());
                }
                match self.raft.transfer_leadership(to) {
                    Ok(()) => {
                        dlog!(self, Level::Info, "leadership_transfer_started", to = to.0);
                        self.transfers.push((to, reply, deadline));
                    }
                    Err(e) => return self.refused(e, Refused::Admin(reply)),
                }
                return Ok(());
            }
        };
        match self.raft.change_membership(change.clone()) {
            Ok(proposed) => {
                dlog!(
                    self,
                    Level::Info,
                    "membership_change_proposed",
                    change = format!("{change:?}"),
                    index = proposed.first.0
                );
                self.add_proposal(proposed.first, proposed.term, reply, deadline);
            }
            Err(e) => return self.refused(e, Refused::Admin(reply)),
        }
        Ok(())
    }

    pub(super) fn add_proposal(
        &mut self,
        index: LogIndex,
        term: Term,
        reply: Reply,
        deadline: Instant,
    ) {
        if let Some((_, old, _)) = self.proposals.insert(index, (term, reply, deadline)) {
            // Only possible if an entry we proposed was overwritten without us noticing the
            // leadership change: its outcome is unknown.
            old.fail(Error::Timeout(format!(
                "entry {index} was overwritten; outcome unknown"
            )));
        }
        self.proposal_deadlines
            .push(Reverse((deadline, index, term)));
    }

    pub(super) fn propose_queued(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.queued_writes);
        let mut data = Vec::with_capacity(pending.len());
        let mut waiting = Vec::with_capacity(pending.len());
        for p in pending {
            let encoded = match &p.request {
                Request::Write(command) => command.encode(),
                other => Err(Error::InvalidArgument(format!(
                    "a {} request cannot be proposed",
                    other.name()
                ))),
            };
            match encoded {
                Ok(bytes) => {
                    data.push(bytes);
                    waiting.push(p);
                }
                Err(e) => p.reply.fail(e),
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        match self.raft.propose(data) {
            Ok(proposed) => {
                self.stats.proposals += waiting.len() as u64;
                for (i, p) in waiting.into_iter().enumerate() {
                    let index = LogIndex(proposed.first.0 + i as u64);
                    self.add_proposal(index, proposed.term, p.reply, p.deadline);
                }
            }
            Err(e) => return self.refused(e, Refused::Writes(waiting)),
        }
        Ok(())
    }

    pub(super) fn read_queued(&mut self) -> Result<()> {
        let reads = std::mem::take(&mut self.queued_reads);
        let context = self.next_read_context;
        self.next_read_context += 1;
        match self.raft.read_index(context.to_le_bytes().to_vec()) {
            Ok(()) => {
                self.read_batches.insert(
                    context,
                    ReadBatch {
                        reads,
                        issued: self.now(),
                    },
                );
            }
            Err(e) => return self.refused(e, Refused::Reads(reads)),
        }
        Ok(())
    }

    /// The core refused a proposal, a ReadIndex, a membership change or a leadership transfer:
    /// the one place that decides what becomes of the requests that were waiting on it. A
    /// storage failure stops the member (`Err`). A refusal another leader can serve re-routes:
    /// writes refused because we no longer lead (or are handing leadership over) are routed
    /// again, linearizable reads refused because we do not lead wait for a leader. Any other
    /// refusal answers every waiting request with the core's reason.
    pub(super) fn refused(&mut self, e: RaftError, waiting: Refused) -> Result<()> {
        if let RaftError::Storage(e) = e {
            return Err(e);
        }
        match waiting {
            Refused::Writes(writes) => {
                if matches!(
                    e,
                    RaftError::NotLeader { .. } | RaftError::TransferInProgress { .. }
                ) {
                    for p in writes {
                        self.route_to_leader(p)?;
                    }
                } else {
                    let why = Error::from(e).to_string();
                    for p in writes {
                        p.reply.fail(Error::Unavailable(why.clone()));
                    }
                }
            }
            Refused::Reads(reads) => {
                if matches!(e, RaftError::NotLeader { .. }) {
                    for read in reads {
                        let mode = ReadMode::Linearizable;
                        self.wait_for_leader(Pending {
                            request: Request::Read { op: read.op, mode },
                            reply: read.reply,
                            deadline: read.deadline,
                        });
                    }
                } else {
                    let why = Error::from(e).to_string();
                    for read in reads {
                        read.reply.fail(Error::Unavailable(why.clone()));
                    }
                }
            }
            Refused::Admin(reply) => match e {
                // Only a membership change is refused this way (a transfer never is).
                RaftError::ChangeInProgress => reply.fail(Error::Unavailable(
                    "a membership change (or the leader's first entry) is not committed yet; \
                     retry"
                        .into(),
                )),
                e => reply.fail(e.into()),
            },
        }
        Ok(())
    }

    pub(super) fn on_read_state(&mut self, state: ReadState) {
        let Ok(bytes) = <[u8; 8]>::try_from(state.context.as_slice()) else {
            return;
        };
        let Some(batch) = self.read_batches.remove(&u64::from_le_bytes(bytes)) else {
            return; // already retried or failed
        };
        match state.index {
            Some(index) => {
                self.stats.reads += batch.reads.len() as u64;
                self.to_apply(ApplyTask::Reads {
                    index,
                    reads: batch.reads,
                });
            }
            // The leader could not serve it (it lost leadership): ask again.
            None => self.requeue_reads(batch.reads, self.now()),
        }
    }

    pub(super) fn requeue_reads(&mut self, reads: Vec<PendingRead>, now: Instant) {
        for read in reads {
            if read.deadline <= now {
                read.reply.fail(Error::Timeout(
                    "no quorum confirmed the read index in time".into(),
                ));
            } else {
                self.queued_reads.push(read);
            }
        }
    }

    pub(super) fn on_soft_state(&mut self, soft: SoftState) {
        let was_leader = self.role == Role::Leader;
        let old_leader = self.leader;
        self.role = soft.role;
        self.leader = soft.leader;
        if soft.role == Role::Candidate {
            self.stats.elections_started += 1;
        }
        let role = role_name(node_role(soft.role));
        let leader = soft.leader.map_or("none".to_string(), |l| l.0.to_string());
        dlog!(
            self,
            Level::Info,
            "role_changed",
            role = role,
            leader = leader
        );
        if soft.role == Role::Leader && !was_leader {
            // The no-op of this term is the last entry now: arm once it is applied.
            self.leases.on_leader(self.raft.last_index());
        }
        if soft.role != Role::Leader {
            self.leases.on_follower();
        }
        if was_leader && soft.role != Role::Leader {
            // Entries above the commit index may or may not survive under the next leader.
            let commit = self.raft.commit_index();
            let unknown = self.proposals.split_off(&commit.next());
            for (index, (_, reply, _)) in unknown {
                reply.fail(Error::Timeout(format!(
                    "leadership was lost before entry {index} committed; it may still be \
                     applied"
                )));
            }
            self.outgoing.clear();
        }
        if old_leader != soft.leader {
            for (_, (reply, _)) in self.forwarded.drain() {
                reply.fail(Error::Timeout(
                    "the leader changed while a forwarded request was in flight; it may have \
                     been applied"
                        .into(),
                ));
            }
            let now = self.now();
            let batches: Vec<ReadBatch> = self.read_batches.drain().map(|(_, b)| b).collect();
            for batch in batches {
                self.requeue_reads(batch.reads, now);
            }
        }
        if let Some(leader) = soft.leader {
            let (done, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
                .into_iter()
                .partition(|(to, _, _)| *to == leader);
            self.transfers = kept;
            for (_, reply, _) in done {
                reply.send(Ok(Response::Done));
            }
        }
        if self.leader_usable() && !self.waiting_leader.is_empty() {
            self.drain_waiting();
        }
    }
}

/// Check a read's arguments before any round trip (the state machine checks them again).
pub(super) fn validate_read(op: &ReadOp) -> Result<()> {
    match op {
        ReadOp::Snapshot => {}
        ReadOp::Get { key } => {
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "get: key of {} bytes is not in 1..={MAX_KEY_BYTES}",
                    key.len()
                )));
            }
        }
        ReadOp::Range { start, end, limit } | ReadOp::RangeAt { start, end, limit } => {
            if *limit == 0 || *limit as usize > MAX_SCAN_LIMIT {
                return Err(Error::InvalidArgument(format!(
                    "range: limit {limit} is not in 1..={MAX_SCAN_LIMIT}"
                )));
            }
            if start.len() > MAX_KEY_BYTES || end.as_ref().is_some_and(|e| e.len() > MAX_KEY_BYTES)
            {
                return Err(Error::InvalidArgument(format!(
                    "range: a bound is over the key limit of {MAX_KEY_BYTES} bytes"
                )));
            }
            if end.as_ref().is_some_and(|e| e <= start) {
                return Err(Error::InvalidArgument(
                    "range: end must be greater than start".into(),
                ));
            }
        }
        ReadOp::MapOwners { name, key } | ReadOp::MapPartition { name, key } => {
            crate::sm::validate_map_key_read(name, key)?;
        }
        ReadOp::Map { name } | ReadOp::MapMoves { name, .. } => {
            crate::sm::validate_map_name(name)?;
        }
        ReadOp::Lock { name } | ReadOp::CheckToken { name, .. } => {
            if name.is_empty() || name.len() > MAX_LOCK_NAME_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "lock name of {} bytes is not in 1..={MAX_LOCK_NAME_BYTES}",
                    name.len()
                )));
            }
        }
        ReadOp::Locks { after, limit } => {
            if *limit == 0 || *limit as usize > MAX_SCAN_LIMIT || after.len() > MAX_LOCK_NAME_BYTES
            {
                return Err(Error::InvalidArgument(format!(
                    "locks: limit {limit} is not in 1..={MAX_SCAN_LIMIT} or the start name is \
                     over {MAX_LOCK_NAME_BYTES} bytes"
                )));
            }
        }
        ReadOp::Session { .. } => {}
        ReadOp::Leader { name } | ReadOp::Election { name } => {
            if name.is_empty() || name.len() > MAX_LOCK_NAME_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "leader: election name of {} bytes is not in 1..={MAX_LOCK_NAME_BYTES}",
                    name.len()
                )));
            }
        }
    }
    Ok(())
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Follower => "follower",
        NodeRole::PreCandidate => "pre_candidate",
        NodeRole::Candidate => "candidate",
        NodeRole::Leader => "leader",
        NodeRole::Stopped => "stopped",
    }
}

/// The answer to a request of a client protocol version newer than this member speaks.
fn unsupported_protocol(found: u32) -> Error {
    Error::UnsupportedVersion {
        what: "client protocol",
        found,
        supported: CLIENT_PROTOCOL_VERSION,
    }
}
