//! The TCP transport: framing, authenticated handshake, per-peer sender threads, remote clients.
//!
//! One [`Transport`] per member listens on one TCP port for both peers and remote clients. Every
//! connection starts with the authenticated handshake (`handshake.rs`, `docs/FORMAT.md`): both
//! sides prove knowledge of the [`ClusterSecret`] with HMAC-SHA256 over fresh nonces, the cluster
//! id and both ids, before a single application frame is read. After it, every message is one
//! codec frame whose checksum is salted with a value derived from the handshake.
//!
//! **Peers.** Connections are one-directional: a member dials each peer and only writes on that
//! connection; it receives on the connections its peers dialled. Each peer has two lanes, each
//! its own connection, sender thread and bounded queue:
//! - the *control* lane ([`Transport::send`], queue
//!   [`PEER_SEND_QUEUE`](crate::limits::PEER_SEND_QUEUE)) for Raft messages, and
//! - the *bulk* lane ([`Transport::send_bulk`], queue
//!   [`PEER_BULK_SEND_QUEUE`](crate::limits::PEER_BULK_SEND_QUEUE)) for snapshot
//!   chunks, so that a heartbeat never waits behind megabytes of snapshot.
//!
//! Messages on one lane arrive in order; there is no order between lanes. Sending never blocks
//! the caller: a full queue returns [`SendOutcome::QueueFull`] and counts a drop (Raft
//! retransmits; a snapshot sender retries the chunk later). While a peer is unreachable (between
//! reconnect attempts, which back off exponentially with jitter) queued messages are discarded
//! and counted too, so that a peer coming back is not flooded with stale heartbeats. A sender
//! writes every message already queued (up to 256 KiB) in one `write`: coalescing.
//!
//! **Remote clients.** A connection with the client role carries `(request_id, request)` frames;
//! they arrive as [`ClientEvent`]s, and the runtime answers through the cloneable
//! [`ClientHandle`], in any order, with many requests in flight. [`ClientConnection`] is the
//! client side.
//!
//! ```
//! use haven::net::{ClientConnection, ClientEvent, ClusterSecret, SendOutcome, Transport,
//!                  TransportConfig};
//! use haven::{ClusterId, NodeId};
//! use std::time::Duration;
//!
//! # fn main() -> haven::Result<()> {
//! let secret = ClusterSecret::new(*b"at least sixteen bytes of secret")?;
//! let any_port = "127.0.0.1:0".parse().unwrap();
//! let config = |id| TransportConfig::new(NodeId(id), ClusterId(1), secret.clone(), any_port);
//!
//! // Two members; peer messages here are plain strings, client requests and responses u64.
//! let (tx1, _rx1) = crossbeam_channel::unbounded();
//! let (clients_tx, clients_rx) = crossbeam_channel::unbounded();
//! let n1 = Transport::<String, u64, u64>::start(config(1), &[], tx1, Some(clients_tx))?;
//! let (tx2, rx2) = crossbeam_channel::unbounded();
//! let n2 = Transport::<String, u64, u64>::start(config(2), &[(NodeId(1), n1.local_addr())],
//!                                               tx2, None)?;
//! n1.set_peer(NodeId(2), n2.local_addr())?;
//!
//! // Peer to peer: never blocks the caller.
//! assert_eq!(n1.send(NodeId(2), "hello".to_string()), SendOutcome::Queued);
//! let (from, msg) = rx2.recv_timeout(Duration::from_secs(5)).unwrap();
//! assert_eq!((from, msg.as_str()), (NodeId(1), "hello"));
//!
//! // A remote client; the "runtime" answers on another thread.
//! std::thread::spawn(move || {
//!     while let Ok(ClientEvent::Request { conn, request_id, request }) = clients_rx.recv() {
//!         conn.respond(request_id, request * 2);
//!     }
//! });
//! let client = ClientConnection::<u64, u64>::connect(
//!     n1.local_addr(), ClusterId(1), &secret, 7, Duration::from_secs(5))?;
//! assert_eq!(client.call(21, Duration::from_secs(5))?, 42);
//! # Ok(())
//! # }
//! ```
//!
//! No async runtime: threads and crossbeam channels only. Every thread the transport starts is
//! joined by [`Transport::shutdown`] (also run on drop).

mod address;
mod client_connection;
mod client_handle;
mod config;
mod handshake;
mod inbound;
mod peer;
mod refusal;
mod shared;
mod tls;
mod transport;
mod wire;

pub use address::{free_loopback_addrs, resolve_address};
pub use client_connection::ClientConnection;
pub use client_handle::{ClientEvent, ClientHandle, PushOutcome};
pub use config::{
    ClusterSecret, DeliverHook, TransportConfig, CLIENT_KEEPALIVE_INTERVAL, MAX_SECRET_BYTES,
    MIN_SECRET_BYTES,
};
pub use tls::{ClientTls, MemberTls};
pub use transport::Transport;

use bincode::{Decode, Encode};
use std::fmt;
use std::net::SocketAddr;

/// What the transport can carry: any type with a bincode encoding that can move between threads.
/// Raft messages, snapshot chunks, client requests and responses all qualify; the transport never
/// looks inside them.
pub trait Message: Encode + Decode<()> + Send + 'static {}

impl<T: Encode + Decode<()> + Send + 'static> Message for T {}

/// One of the two connections a member keeps to each peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Lane {
    /// Raft messages: heartbeats, votes, appends and their responses.
    Control,
    /// Large transfers (snapshot chunks), kept off the control lane.
    Bulk,
}

impl Lane {
    /// The byte that stands for this lane in the handshake transcript.
    pub(crate) fn wire_tag(self) -> u8 {
        match self {
            Lane::Control => 0,
            Lane::Bulk => 1,
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lane::Control => f.write_str("control"),
            Lane::Bulk => f.write_str("bulk"),
        }
    }
}

/// What became of a message handed to [`Transport::send`] or [`Transport::send_bulk`]. These are
/// expected outcomes, not errors: the Raft driver may ignore them, because Raft retransmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for the peer's sender thread. Not a delivery guarantee.
    Queued,
    /// The lane's queue is full (the peer is slow or unreachable); the message was dropped and
    /// counted.
    QueueFull,
    /// No peer with that id is configured.
    UnknownPeer,
    /// The transport is shut down.
    ShutDown,
}

/// Counters of one lane to one peer (monotonic except `connected` and `queued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneStats {
    /// Whether the lane has an authenticated connection right now.
    pub connected: bool,
    /// Messages waiting in the queue.
    pub queued: usize,
    /// Messages written to the socket.
    pub messages_sent: u64,
    /// Socket writes that carried messages; `messages_sent - write_batches` messages rode along
    /// in a write of another message (coalescing).
    pub write_batches: u64,
    /// Bytes written, keepalives included.
    pub bytes_sent: u64,
    /// Messages refused because the queue was full.
    pub dropped_queue_full: u64,
    /// Messages discarded because the peer could not be reached (between reconnect attempts).
    pub dropped_unreachable: u64,
    /// Messages lost in a write that failed (the connection is then replaced).
    pub dropped_write_failed: u64,
    /// Messages that could not be encoded within the frame limit.
    pub dropped_too_large: u64,
    /// Successful connects (handshake included).
    pub connects: u64,
    /// Failed connect or handshake attempts.
    pub connect_failures: u64,
}

impl LaneStats {
    /// Every message this lane dropped, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_unreachable
            + self.dropped_write_failed
            + self.dropped_too_large
    }
}

/// The outbound side of one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    /// Where the peer is dialled.
    pub addr: SocketAddr,
    /// The control lane.
    pub control: LaneStats,
    /// The bulk lane.
    pub bulk: LaneStats,
}

/// Counters of the inbound side of a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransportStats {
    /// Handshakes that completed (peers and clients).
    pub handshakes_accepted: u64,
    /// Handshakes that failed: refused, timed out, garbage, closed early.
    pub handshakes_refused: u64,
    /// Connections closed at accept because too many handshakes were in progress.
    pub connections_rejected: u64,
    /// Inbound peer connections open now.
    pub peer_connections: usize,
    /// Remote-client connections open now.
    pub client_connections: usize,
    /// Peer messages delivered to the inbound channel.
    pub messages_received: u64,
    /// Client requests delivered to the client channel.
    pub client_requests_received: u64,
    /// Peer connections closed because a newer one claimed the same member and lane (a
    /// restarted member, normally; see the log line for both addresses).
    pub peer_connections_replaced: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_can_be_shared_between_threads() {
        // The runtime shares the transport between its driver and its client threads, and
        // hands client handles and connections to worker threads.
        assert_send_sync::<Transport<Vec<u8>, Vec<u8>, Vec<u8>>>();
        assert_send_sync::<ClientHandle<Vec<u8>>>();
        assert_send_sync::<ClientConnection<Vec<u8>, Vec<u8>>>();
        assert_send_sync::<ClusterSecret>();
    }
}
