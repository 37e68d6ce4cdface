//! Transport configuration: the cluster secret, timeouts, limits and the log sink.

use crate::error::{Error, Result};
use crate::limits::MAX_CLIENT_CONNECTIONS;
use crate::logging::Level;
use crate::types::{ClusterId, NodeId};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Shortest cluster secret accepted, in bytes. 16 random bytes are 128 bits of key.
pub const MIN_SECRET_BYTES: usize = 16;

/// Longest cluster secret accepted, in bytes (HMAC hashes longer keys anyway; this only keeps
/// configuration mistakes, such as passing a whole file, visible).
pub const MAX_SECRET_BYTES: usize = 1024;

/// How often a remote client that has nothing to send writes a keepalive frame, so that the
/// member's idle timeout only closes connections whose client is really gone.
pub const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// The shared secret every member and remote client of one cluster knows. The handshake proves
/// knowledge of it with HMAC-SHA256; it never crosses the wire.
///
/// `Debug` does not print the bytes, and the bytes are overwritten with zeros on drop.
#[derive(Clone)]
pub struct ClusterSecret {
    bytes: Vec<u8>,
}

impl ClusterSecret {
    /// A secret from raw bytes: at least [`MIN_SECRET_BYTES`] and at most [`MAX_SECRET_BYTES`],
    /// otherwise `InvalidArgument`. There is no unauthenticated mode: every connection proves it
    /// knows a secret.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<ClusterSecret> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(Error::InvalidArgument(format!(
                "cluster secret is {} bytes; it must be at least {MIN_SECRET_BYTES}",
                bytes.len()
            )));
        }
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(Error::InvalidArgument(format!(
                "cluster secret is {} bytes; it must be at most {MAX_SECRET_BYTES}",
                bytes.len()
            )));
        }
        Ok(ClusterSecret { bytes })
    }

    /// The key bytes (crate-internal: only the handshake uses them).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret(<{} bytes redacted>)", self.bytes.len())
    }
}

impl Drop for ClusterSecret {
    fn drop(&mut self) {
        for byte in self.bytes.iter_mut() {
            // SAFETY: `byte` is a valid, aligned, exclusive reference into our own buffer. A
            // volatile write keeps the compiler from removing the wipe as a dead store.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// Write one transport event through haven's log facade ([`crate::logging`]): the event `net`
/// with the member's id and the line as its `message` field.
pub(crate) fn log_event(level: Level, node: NodeId, message: &str) {
    crate::event!(level, node: Some(node.0), term: None, "net", message = message);
}

/// Everything a [`Transport`](super::Transport) needs to start.
#[derive(Clone)]
pub struct TransportConfig {
    /// This member's id (never 0).
    pub node_id: NodeId,
    /// The cluster this member belongs to; connections from other clusters are refused.
    pub cluster_id: ClusterId,
    /// The member secret: peers prove it to each other (and clients too, when no
    /// `client_secret` is set).
    pub secret: ClusterSecret,
    /// The secret remote clients prove. `None`: clients use the member secret, so any client
    /// could also open a peer lane (a development setup; `haven serve` warns).
    pub client_secret: Option<ClusterSecret>,
    /// TLS for every connection (mutual TLS on peer lanes). `None`: plaintext.
    pub tls: Option<super::MemberTls>,
    /// Where to listen for peers and remote clients (port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// The whole handshake must finish within this time, or the connection is dropped.
    pub handshake_timeout: Duration,
    /// How long a TCP connect to a peer may take.
    pub connect_timeout: Duration,
    /// How long one write to a peer or client may block before the connection is declared dead.
    pub write_timeout: Duration,
    /// An inbound connection that delivers no byte for this long is closed.
    pub idle_timeout: Duration,
    /// A peer lane with nothing to send writes a keepalive frame this often.
    pub keepalive_interval: Duration,
    /// First reconnect delay after a failed connect; doubles per failure (with jitter).
    pub reconnect_backoff_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_backoff_max: Duration,
    /// Most remote-client connections served at once (at most [`MAX_CLIENT_CONNECTIONS`]).
    pub max_client_connections: usize,
    /// Called after each peer message or client event is handed to its channel. A consumer
    /// that waits on several channels can park on its own primitive and be woken by this,
    /// instead of a channel select that spins and yields before it parks.
    pub on_deliver: Option<DeliverHook>,
    /// Digest of the membership this member was founded with (`None` for a member that joined
    /// a running cluster). Sent in every peer handshake: two founding members with different
    /// digests refuse each other, because they were started with different peer lists and
    /// their first log entries differ at the same index and term.
    pub founding_digest: Option<[u8; 32]>,
}

/// See [`TransportConfig::on_deliver`].
pub type DeliverHook = Arc<dyn Fn() + Send + Sync>;

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportConfig")
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("secret", &self.secret)
            .field("client_secret", &self.client_secret)
            .field("tls", &self.tls)
            .field("listen_addr", &self.listen_addr)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("reconnect_backoff_min", &self.reconnect_backoff_min)
            .field("reconnect_backoff_max", &self.reconnect_backoff_max)
            .field("max_client_connections", &self.max_client_connections)
            .field("founding_digest", &self.founding_digest.is_some())
            .finish_non_exhaustive()
    }
}

impl TransportConfig {
    /// A configuration with the default timeouts (handshake 2 s, connect 1 s, write 5 s, idle
    /// 10 s, keepalive 1 s, backoff 20 ms doubling to 1 s) and the stderr log sink.
    pub fn new(
        node_id: NodeId,
        cluster_id: ClusterId,
        secret: ClusterSecret,
        listen_addr: SocketAddr,
    ) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id,
            secret,
            client_secret: None,
            tls: None,
            listen_addr,
            handshake_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(1),
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_secs(1),
            max_client_connections: 256,
            on_deliver: None,
            founding_digest: None,
        }
    }

    /// Reject nonsense once, at start: zero ids or durations, a keepalive that would not keep a
    /// connection alive, an inverted backoff range, too many client connections.
    pub fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidArgument(m));
        if self.node_id.0 == 0 {
            return invalid("node id 0 is reserved".into());
        }
        let durations = [
            ("handshake_timeout", self.handshake_timeout),
            ("connect_timeout", self.connect_timeout),
            ("write_timeout", self.write_timeout),
            ("idle_timeout", self.idle_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                return invalid(format!("{name} must be greater than zero"));
            }
        }
        // Three keepalives must fit in one idle timeout, or a healthy but quiet connection
        // would be closed by a single late keepalive.
        let keepalive = self.keepalive_interval.max(CLIENT_KEEPALIVE_INTERVAL);
        if self.idle_timeout < keepalive * 3 {
            return invalid(format!(
                "idle_timeout ({:?}) must be at least 3 x the keepalive interval ({:?})",
                self.idle_timeout, keepalive
            ));
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return invalid("reconnect_backoff_max is below reconnect_backoff_min".into());
        }
        if self.max_client_connections > MAX_CLIENT_CONNECTIONS {
            return invalid(format!(
                "max_client_connections {} is over the limit of {MAX_CLIENT_CONNECTIONS}",
                self.max_client_connections
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        let secret = ClusterSecret::new(*b"0123456789abcdef").unwrap();
        TransportConfig::new(
            NodeId(1),
            ClusterId(7),
            secret,
            "127.0.0.1:0".parse().unwrap(),
        )
    }

    #[test]
    fn short_secret_is_invalid_argument() {
        match ClusterSecret::new(*b"fifteen bytes!!") {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("at least 16"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert!(ClusterSecret::new(*b"sixteen bytes!!!").is_ok());
        assert!(ClusterSecret::new(vec![1u8; MAX_SECRET_BYTES + 1]).is_err());
    }

    #[test]
    fn secret_debug_does_not_print_the_bytes() {
        let secret = ClusterSecret::new(*b"super-secret-key-material").unwrap();
        let shown = format!("{secret:?} {:?}", config());
        assert!(!shown.contains("super-secret"), "{shown}");
    }

    #[test]
    fn default_config_is_valid_and_nonsense_is_rejected() {
        config().validate().unwrap();
        let mut c = config();
        c.node_id = NodeId(0);
        assert!(c.validate().is_err());
        let mut c = config();
        c.idle_timeout = Duration::from_secs(2);
        assert!(c.validate().is_err());
        let mut c = config();
        c.reconnect_backoff_max = Duration::from_millis(1);
        assert!(c.validate().is_err());
        let mut c = config();
        c.handshake_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = config();
        c.max_client_connections = MAX_CLIENT_CONNECTIONS + 1;
        assert!(c.validate().is_err());
    }
}
