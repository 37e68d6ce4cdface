//! What the transport's threads share: the configuration, the peer set with its lanes, the
//! registry of inbound connections, and the bookkeeping on them. Below both the inbound side
//! (`inbound.rs`), which accepts and serves connections, and the [`Transport`](super::Transport)
//! facade (`transport.rs`), which owns it all.

use super::client_handle::ClientEvent;
use super::config::{log_event, TransportConfig};
use super::handshake::Role;
use super::peer::{LaneCounters, LaneHandle, SenderContext};
use super::{Lane, Message};
use crate::error::Result;
use crate::limits::{PEER_BULK_SEND_QUEUE, PEER_SEND_QUEUE};
use crate::logging::Level;
use crate::types::NodeId;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

/// The outbound side of one peer: its address and two lanes.
pub(super) struct PeerEntry<M> {
    pub(super) addr: SocketAddr,
    pub(super) control: LaneHandle<M>,
    pub(super) bulk: LaneHandle<M>,
}

/// An inbound connection, registered from accept until its thread ends, so that shutdown and
/// membership changes can close it.
pub(super) struct InboundConn {
    pub(super) stream: TcpStream,
    /// Where it came from.
    pub(super) addr: SocketAddr,
    /// None while the handshake runs.
    pub(super) role: Option<Role>,
}

/// Inbound counters.
#[derive(Default)]
pub(super) struct InboundCounters {
    pub(super) handshakes_accepted: AtomicU64,
    pub(super) handshakes_refused: AtomicU64,
    pub(super) connections_rejected: AtomicU64,
    pub(super) client_connections: AtomicUsize,
    pub(super) messages_received: AtomicU64,
    pub(super) client_requests_received: AtomicU64,
    pub(super) peer_connections_replaced: AtomicU64,
}

/// Everything the transport's threads share.
pub(super) struct Shared<M, Req, Resp> {
    pub(super) config: TransportConfig,
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) sender_ctx: Arc<SenderContext>,
    pub(super) peers: RwLock<HashMap<NodeId, PeerEntry<M>>>,
    pub(super) inbound: Sender<(NodeId, M)>,
    pub(super) clients: Option<Sender<ClientEvent<Req, Resp>>>,
    pub(super) conns: Mutex<HashMap<u64, InboundConn>>,
    pub(super) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(super) next_conn_id: AtomicU64,
    pub(super) pending_handshakes: AtomicUsize,
    pub(super) counters: InboundCounters,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these maps half-updated (every update is one insert or
    // remove), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<M: Message, Req: Message, Resp: Message> Shared<M, Req, Resp> {
    pub(super) fn log(&self, level: Level, what: &str) {
        let node = self.config.node_id;
        log_event(level, node, &format!("{node}: {what}"));
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether `id` is a configured peer (the acceptor admits only those).
    pub(super) fn is_peer(&self, id: NodeId) -> bool {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    pub(super) fn peer_ids(&self) -> Vec<NodeId> {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<NodeId> = peers.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Record that connection `id` (from `addr`) finished its handshake as `role`. An older
    /// connection from the same peer and lane is closed: newer wins, because a restarted peer
    /// reconnects before its old connection times out (a half-open connection would otherwise
    /// hold a thread until the idle timeout). Only a holder of the member secret (and, with
    /// TLS, of a member certificate) can claim a peer role, so this is a member replacing its
    /// own lane; it is still logged with both addresses and counted
    /// ([`TransportStats::peer_connections_replaced`](super::TransportStats)), because two
    /// live processes with one id would otherwise take turns silently.
    pub(super) fn register_role(&self, id: u64, role: Role, addr: SocketAddr) {
        let mut conns = lock(&self.conns);
        if let Role::Peer { .. } = role {
            let older: Vec<u64> = conns
                .iter()
                .filter(|(other, c)| **other != id && c.role == Some(role))
                .map(|(other, _)| *other)
                .collect();
            for other in older {
                if let Some(old) = conns.remove(&other) {
                    let _ = old.stream.shutdown(Shutdown::Both);
                    self.counters
                        .peer_connections_replaced
                        .fetch_add(1, Ordering::Relaxed);
                    self.log(
                        Level::Warn,
                        &format!(
                            "{role} connected again from {addr}; closing its older connection \
                             from {} (newer wins)",
                            old.addr
                        ),
                    );
                }
            }
        }
        if let Some(conn) = conns.get_mut(&id) {
            conn.role = Some(role);
        }
    }

    pub(super) fn unregister(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    /// Close every inbound connection from `node`.
    pub(super) fn close_inbound_from(&self, node: NodeId) {
        let mut conns = lock(&self.conns);
        let from_node: Vec<u64> = conns
            .iter()
            .filter(|(_, c)| matches!(c.role, Some(Role::Peer { node_id, .. }) if node_id == node))
            .map(|(id, _)| *id)
            .collect();
        for id in from_node {
            if let Some(conn) = conns.remove(&id) {
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
        }
    }

    pub(super) fn push_thread(&self, handle: JoinHandle<()>) {
        let mut threads = lock(&self.threads);
        // Reap what already ended, so the list stays as long as the live threads.
        let (done, live): (Vec<_>, Vec<_>) = threads.drain(..).partition(|h| h.is_finished());
        *threads = live;
        threads.push(handle);
        drop(threads);
        for handle in done {
            let _ = handle.join();
        }
    }

    pub(super) fn spawn_lanes(
        &self,
        id: NodeId,
        addr: SocketAddr,
        counters: Option<(Arc<LaneCounters>, Arc<LaneCounters>)>,
    ) -> Result<PeerEntry<M>> {
        let (control_counters, bulk_counters) = counters.unwrap_or_default();
        let control = LaneHandle::spawn(
            Arc::clone(&self.sender_ctx),
            id,
            addr,
            Lane::Control,
            PEER_SEND_QUEUE,
            control_counters,
        )?;
        let bulk = match LaneHandle::spawn(
            Arc::clone(&self.sender_ctx),
            id,
            addr,
            Lane::Bulk,
            PEER_BULK_SEND_QUEUE,
            bulk_counters,
        ) {
            Ok(bulk) => bulk,
            Err(e) => {
                if let Some(handle) = control.close() {
                    self.push_thread(handle);
                }
                return Err(e);
            }
        };
        Ok(PeerEntry {
            addr,
            control,
            bulk,
        })
    }

    /// Stop a peer's lanes without blocking the caller; their threads are joined at shutdown.
    pub(super) fn retire(&self, entry: PeerEntry<M>) {
        for handle in [entry.control.close(), entry.bulk.close()]
            .into_iter()
            .flatten()
        {
            self.push_thread(handle);
        }
    }
}
