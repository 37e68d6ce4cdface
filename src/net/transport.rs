//! The transport: one listener, the peer set with its sender lanes, the inbound connections.

use super::client_handle::ClientEvent;
use super::config::TransportConfig;
use super::handshake::Role;
use super::inbound;
use super::peer::SenderContext;
use super::shared::{lock, InboundCounters, PeerEntry, Shared};
use super::{Lane, Message, PeerStats, SendOutcome, TransportStats};
use crate::error::{Error, Result};
use crate::limits::MAX_MEMBERS;
use crate::logging::Level;
use crate::types::NodeId;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A member's transport: listener, peer lanes and remote-client service.
///
/// `M` is the peer message type (Raft messages and snapshot chunks), `Req`/`Resp` the remote
/// client request and response types (use `()` for a transport that serves no clients and pass
/// `None` as the client channel).
pub struct Transport<M: Message, Req: Message = (), Resp: Message = ()> {
    shared: Arc<Shared<M, Req, Resp>>,
    listener: Arc<TcpListener>,
    local_addr: SocketAddr,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

impl<M: Message, Req: Message, Resp: Message> Transport<M, Req, Resp> {
    /// Listen on `config.listen_addr` and start serving.
    ///
    /// `peers` are the other members (this member's own id must not be among them). Inbound
    /// peer messages are delivered to `inbound` as `(from, message)`; remote-client events to
    /// `clients` (with `None`, client connections are refused at the handshake). When a
    /// channel is bounded and full, the connection's reader waits: TCP pushes back on the
    /// sender.
    pub fn start(
        config: TransportConfig,
        peers: &[(NodeId, SocketAddr)],
        inbound: Sender<(NodeId, M)>,
        clients: Option<Sender<ClientEvent<Req, Resp>>>,
    ) -> Result<Transport<M, Req, Resp>> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen_addr)
            .map_err(|e| Error::io(format!("binding {}", config.listen_addr), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let sender_ctx = Arc::new(SenderContext {
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            secret: config.secret.clone(),
            founding_digest: config.founding_digest,
            tls: config.tls.as_ref().map(|t| Arc::clone(t.dialer())),
            connect_timeout: config.connect_timeout,
            handshake_timeout: config.handshake_timeout,
            write_timeout: config.write_timeout,
            keepalive_interval: config.keepalive_interval,
            backoff_min: config.reconnect_backoff_min,
            backoff_max: config.reconnect_backoff_max,
            stopping: Arc::clone(&stopping),
        });
        let shared = Arc::new(Shared {
            config,
            stopping,
            sender_ctx,
            peers: RwLock::new(HashMap::new()),
            inbound,
            clients,
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            next_conn_id: AtomicU64::new(1),
            pending_handshakes: AtomicUsize::new(0),
            counters: InboundCounters::default(),
        });
        let listener = Arc::new(listener);
        let transport = Transport {
            shared: Arc::clone(&shared),
            listener: Arc::clone(&listener),
            local_addr,
            accept_thread: Mutex::new(None),
        };
        // On an error below, dropping `transport` shuts down what was started.
        transport.set_peers(peers)?;
        let accept_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name(format!("haven-net-{}-accept", shared.config.node_id))
            .spawn(move || inbound::accept_loop(accept_shared, listener))
            .map_err(|e| Error::io("spawning the accept thread", e))?;
        *lock(&transport.accept_thread) = Some(handle);
        shared.log(Level::Info, &format!("listening on {local_addr}"));
        Ok(transport)
    }

    /// The address the listener is bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This member's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    fn send_on(&self, to: NodeId, lane: Lane, msg: M) -> SendOutcome {
        if self.shared.is_stopping() {
            return SendOutcome::ShutDown;
        }
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        match peers.get(&to) {
            None => SendOutcome::UnknownPeer,
            Some(entry) => match lane {
                Lane::Control => entry.control.try_send(msg),
                Lane::Bulk => entry.bulk.try_send(msg),
            },
        }
    }

    /// Queue a message on the peer's control lane. Never blocks on the network: a full queue
    /// drops the message (counted in [`LaneStats::dropped_queue_full`](super::LaneStats)).
    pub fn send(&self, to: NodeId, msg: M) -> SendOutcome {
        self.send_on(to, Lane::Control, msg)
    }

    /// Queue a message on the peer's bulk lane (snapshot chunks). Never blocks; the queue is
    /// short ([`PEER_BULK_SEND_QUEUE`]), so a full queue means "retry this chunk later".
    pub fn send_bulk(&self, to: NodeId, msg: M) -> SendOutcome {
        self.send_on(to, Lane::Bulk, msg)
    }

    /// Add a peer, or move an existing one to a new address (its lanes reconnect there; queued
    /// messages are dropped, counters continue). Does not block on the network.
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) -> Result<()> {
        if id.0 == 0 {
            return Err(Error::InvalidArgument("peer id 0 is reserved".into()));
        }
        if id == self.shared.config.node_id {
            return Err(Error::InvalidArgument(format!(
                "{id} is this member's own id, not a peer"
            )));
        }
        if self.shared.is_stopping() {
            return Err(Error::Unavailable("transport is shut down".into()));
        }
        let mut peers = self.shared.peers.write().unwrap_or_else(|e| e.into_inner());
        let counters = match peers.get(&id) {
            Some(entry) if entry.addr == addr => return Ok(()),
            Some(entry) => Some((entry.control.counters(), entry.bulk.counters())),
            None if peers.len() + 1 >= MAX_MEMBERS => {
                return Err(Error::InvalidArgument(format!(
                    "a cluster has at most {MAX_MEMBERS} members; cannot add {id}"
                )))
            }
            None => None,
        };
        let entry = self.shared.spawn_lanes(id, addr, counters)?;
        if let Some(old) = peers.insert(id, entry) {
            drop(peers);
            self.shared.retire(old);
        }
        Ok(())
    }

    /// Remove a peer: its lanes stop (queued messages are dropped) and its inbound connections
    /// are closed; from now on its handshakes are refused. Returns whether it was a peer.
    pub fn remove_peer(&self, id: NodeId) -> bool {
        let removed = self
            .shared
            .peers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.shared.close_inbound_from(id);
        match removed {
            Some(entry) => {
                self.shared.retire(entry);
                true
            }
            None => false,
        }
    }

    /// Make the peer set exactly `peers` (after a membership change): add the new, move the
    /// changed, remove the absent.
    pub fn set_peers(&self, peers: &[(NodeId, SocketAddr)]) -> Result<()> {
        if peers.len() >= MAX_MEMBERS {
            return Err(Error::InvalidArgument(format!(
                "{} peers: a cluster has at most {MAX_MEMBERS} members",
                peers.len()
            )));
        }
        let current: Vec<NodeId> = self.shared.peer_ids();
        for id in current {
            if !peers.iter().any(|(p, _)| *p == id) {
                self.remove_peer(id);
            }
        }
        for (id, addr) in peers {
            self.set_peer(*id, *addr)?;
        }
        Ok(())
    }

    /// The configured peers, by id.
    pub fn peers(&self) -> Vec<(NodeId, SocketAddr)> {
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = peers.iter().map(|(id, e)| (*id, e.addr)).collect();
        out.sort();
        out
    }

    /// Counters of the outbound side of one peer.
    pub fn peer_stats(&self, id: NodeId) -> Option<PeerStats> {
        let peers = self.shared.peers.read().unwrap_or_else(|e| e.into_inner());
        peers.get(&id).map(|entry| PeerStats {
            addr: entry.addr,
            control: entry.control.stats(),
            bulk: entry.bulk.stats(),
        })
    }

    /// Counters of the inbound side.
    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        let peer_connections = lock(&self.shared.conns)
            .values()
            .filter(|conn| matches!(conn.role, Some(Role::Peer { .. })))
            .count();
        TransportStats {
            handshakes_accepted: c.handshakes_accepted.load(Ordering::Relaxed),
            handshakes_refused: c.handshakes_refused.load(Ordering::Relaxed),
            connections_rejected: c.connections_rejected.load(Ordering::Relaxed),
            peer_connections,
            client_connections: c.client_connections.load(Ordering::Relaxed),
            messages_received: c.messages_received.load(Ordering::Relaxed),
            client_requests_received: c.client_requests_received.load(Ordering::Relaxed),
            peer_connections_replaced: c.peer_connections_replaced.load(Ordering::Relaxed),
        }
    }

    /// Stop accepting, close every connection, stop every lane and join every thread.
    /// Idempotent; also run on drop. Blocks for at most about the connect timeout (a lane in
    /// the middle of a TCP connect finishes it first).
    pub fn shutdown(&self) {
        let mut accept_thread = lock(&self.accept_thread);
        let first = !self.shared.stopping.swap(true, Ordering::SeqCst);
        if first {
            self.wake_accept();
        }
        if let Some(handle) = accept_thread.take() {
            let _ = handle.join();
        }
        let peers: Vec<PeerEntry<M>> = self
            .shared
            .peers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, entry)| entry)
            .collect();
        for entry in peers {
            self.shared.retire(entry);
        }
        for (_, conn) in lock(&self.shared.conns).drain() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        // Bounded: no thread is started once `stopping` is set and the accept thread is gone,
        // so each round joins what is left.
        loop {
            let threads: Vec<JoinHandle<()>> = lock(&self.shared.threads).drain(..).collect();
            if threads.is_empty() {
                break;
            }
            for handle in threads {
                let _ = handle.join();
            }
        }
        if first {
            self.shared.log(Level::Info, "transport shut down");
        }
    }

    /// Wake the accept thread from a blocking `accept`.
    fn wake_accept(&self) {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: the listener's fd stays open while `self.listener` lives. On Linux,
            // shutting down a listening socket makes a blocked accept return at once.
            unsafe {
                libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        // Portable fallback: connect to ourselves so that accept returns.
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let _ = TcpStream::connect_timeout(
            &SocketAddr::new(ip, self.local_addr.port()),
            Duration::from_millis(200),
        );
    }
}

impl<M: Message, Req: Message, Resp: Message> Drop for Transport<M, Req, Resp> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<M: Message, Req: Message, Resp: Message> std::fmt::Debug for Transport<M, Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.shared.config.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::shared::lock;
    use super::super::{ClusterSecret, Transport, TransportConfig};
    use crate::types::{ClusterId, NodeId};
    use crossbeam_channel::unbounded;
    use std::net::TcpStream;

    /// Broke: only connecting sockets turned Nagle off, so a member's pushed watch frames on
    /// an accepted connection waited for the client's delayed ACK (~40 ms at p99).
    #[test]
    fn accepted_connections_have_nodelay() {
        let secret = ClusterSecret::new(b"a secret of sixteen bytes".to_vec()).unwrap();
        let config = TransportConfig::new(
            NodeId(1),
            ClusterId(1),
            secret,
            "127.0.0.1:0".parse().unwrap(),
        );
        let (tx, _rx) = unbounded();
        let transport: Transport<Vec<u8>> = Transport::start(config, &[], tx, None).unwrap();
        let _client = TcpStream::connect(transport.local_addr()).unwrap();
        // The accept thread registers the connection: wait for it (the bound only keeps a
        // broken build from hanging; it is not a performance assertion).
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let nodelay = loop {
            let conns = lock(&transport.shared.conns);
            if let Some(conn) = conns.values().next() {
                break conn.stream.nodelay().unwrap();
            }
            drop(conns);
            assert!(std::time::Instant::now() < give_up, "never accepted");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(nodelay, "an accepted connection must have TCP_NODELAY");
    }
}
