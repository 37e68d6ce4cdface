//! The configuration of one member, checked once at open.

use crate::error::{Error, Result};
use crate::limits::{
    DEFAULT_WAL_CACHE_BYTES, DEFAULT_WAL_SEGMENT_BYTES, DEFAULT_WATCH_BUFFER_EVENTS,
    DEFAULT_WATCH_PROGRESS_INTERVAL_MS, DEFAULT_WATCH_WINDOW_EVENTS, MAX_CLIENT_CONNECTIONS,
    MAX_MEMBERS, MAX_WAL_SEGMENT_BYTES, MAX_WATCH_BUFFER_EVENTS, MAX_WATCH_WINDOW_EVENTS,
    MIN_WAL_SEGMENT_BYTES,
};
use crate::net::{ClusterSecret, MemberTls};
use crate::types::{ClusterId, NodeId};
use crate::wal::FaultInjector;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest request timeout a member accepts (a remote client's is capped to it).
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Settings of one member. [`Config::new`] fills in the defaults; [`Config::validate`] (called
/// by [`Node::open`](super::Node::open)) rejects nonsense with a message naming the field.
#[derive(Clone)]
pub struct Config {
    /// This member's id (not 0, unique in the cluster).
    pub id: NodeId,
    /// The cluster's id; every member and client of one cluster uses the same.
    pub cluster_id: ClusterId,
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Where to listen for peers and remote clients.
    pub listen_addr: SocketAddr,
    /// The founding members, this one included: id -> the address the others reach it at
    /// (`host:port`). Every founding member must be given the same map: on the very first start
    /// it becomes the cluster's first configuration. On a member started with `join`, the
    /// members of the running cluster to contact (its own entry gives its address).
    pub members: BTreeMap<NodeId, String>,
    /// Start as a new member of a running cluster (empty data directory, waits to be added
    /// with `add_learner` and to receive the state) instead of founding one. Ignored once the
    /// data directory holds a log.
    pub join: bool,
    /// The member secret (16 to 1024 bytes): members prove it to each other.
    pub secret: ClusterSecret,
    /// The secret remote clients prove. `None`: clients use the member secret (a development
    /// setup: any client could then act as a member).
    pub client_secret: Option<ClusterSecret>,
    /// TLS on every connection (mutual TLS between members). `None`: plaintext.
    pub tls: Option<MemberTls>,
    /// Dial these addresses instead of the members' advertised ones (NAT, tunnels,
    /// fault-injecting proxies in tests).
    pub peer_routes: BTreeMap<NodeId, SocketAddr>,
    /// The Raft clock: one tick every this many milliseconds.
    pub tick_ms: u64,
    /// Minimum election timeout; each timeout is drawn from `[this, 2 * this)`.
    pub election_timeout_ms: u64,
    /// A leader sends heartbeats this often.
    pub heartbeat_interval_ms: u64,
    /// Serve linearizable reads on the leader from its lease, without a round trip. Safe only
    /// if clocks do not drift apart by more than the election timeout / lease ratio (see
    /// `raft::Config::lease_read_ticks`).
    pub lease_reads: bool,
    /// Take a snapshot after this many entries were applied since the last one.
    pub snapshot_entries: u64,
    /// ... or after this many bytes of entries were applied since the last one.
    pub snapshot_bytes: u64,
    /// Keep at least this many entries in the log behind the newest snapshot, for followers
    /// that lag a little (they then catch up from the log instead of a whole snapshot).
    pub snapshot_trailing_entries: u64,
    /// How long a leader waits for a follower to ask for the next snapshot chunk before it
    /// reports the transfer failed (and starts another later).
    pub snapshot_transfer_timeout_ms: u64,
    /// Memory for the state machine's caches, in bytes: three quarters are sled's page cache, a
    /// quarter a cache of recently used records in front of sled.
    pub state_cache_bytes: u64,
    /// Size of one WAL segment file.
    pub wal_segment_bytes: u64,
    /// Bytes of recent entries the WAL keeps in memory.
    pub wal_cache_bytes: usize,
    /// Default deadline of a request made through [`Node::client`](super::Node::client).
    pub request_timeout_ms: u64,
    /// Serve remote clients on `listen_addr`.
    pub serve_clients: bool,
    /// Most remote-client connections served at once.
    pub max_client_connections: usize,
    /// Serve the read-only HTTP endpoint (`/metrics`, `/health`, `/status`; see
    /// `observe::http`) on this address; `None` (the default) serves none.
    pub http_listen: Option<SocketAddr>,
    /// `/health` answers 503 when the member's applied index is more than this many entries
    /// behind its commit index.
    pub health_max_lag_entries: u64,
    /// Recent events (changes of user keys) kept for watches that start in the past; a watch
    /// from before them is ended with `Compacted`. 0 keeps none (and records changes only
    /// while a watch is open).
    pub watch_window_events: usize,
    /// Events one watcher may have queued and not yet taken; beyond, it is ended with
    /// `Overflow`.
    pub watch_buffer_events: usize,
    /// An idle watch gets a progress notification (the member's applied revision) this often.
    pub watch_progress_interval_ms: u64,
    /// Test seam: make the WAL's fdatasync fail on demand.
    #[doc(hidden)]
    pub wal_faults: Option<Arc<FaultInjector>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .field("cluster_id", &self.cluster_id)
            .field("data_dir", &self.data_dir)
            .field("listen_addr", &self.listen_addr)
            .field("members", &self.members)
            .field("join", &self.join)
            .field("peer_routes", &self.peer_routes)
            .field("tick_ms", &self.tick_ms)
            .field("election_timeout_ms", &self.election_timeout_ms)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("http_listen", &self.http_listen)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A configuration with the defaults: tick 10 ms, election timeout 150-300 ms, heartbeat
    /// every 50 ms, ReadIndex reads (no lease), a snapshot every 100,000 entries or 256 MiB
    /// with 10,000 entries kept behind it, 128 MiB of state caches (96 MiB
    /// of them sled's), 64 MiB WAL segments, requests
    /// time out after 5 s, remote clients served, no HTTP endpoint (`/health` tolerates an
    /// apply lag of 10,000 entries once one is configured).
    pub fn new(
        id: NodeId,
        cluster_id: ClusterId,
        data_dir: impl Into<PathBuf>,
        listen_addr: SocketAddr,
        members: BTreeMap<NodeId, String>,
        secret: ClusterSecret,
    ) -> Config {
        Config {
            id,
            cluster_id,
            data_dir: data_dir.into(),
            listen_addr,
            members,
            join: false,
            secret,
            client_secret: None,
            tls: None,
            peer_routes: BTreeMap::new(),
            tick_ms: 10,
            election_timeout_ms: 150,
            heartbeat_interval_ms: 50,
            lease_reads: false,
            snapshot_entries: 100_000,
            snapshot_bytes: 256 << 20,
            snapshot_trailing_entries: 10_000,
            snapshot_transfer_timeout_ms: 10_000,
            state_cache_bytes: 128 << 20,
            wal_segment_bytes: DEFAULT_WAL_SEGMENT_BYTES,
            // Half the WAL's default: followers that lag further read from disk, and the
            // member's memory stays well under 200 MiB.
            wal_cache_bytes: DEFAULT_WAL_CACHE_BYTES / 2,
            request_timeout_ms: 5_000,
            serve_clients: true,
            max_client_connections: 256,
            http_listen: None,
            health_max_lag_entries: 10_000,
            watch_window_events: DEFAULT_WATCH_WINDOW_EVENTS,
            watch_buffer_events: DEFAULT_WATCH_BUFFER_EVENTS,
            watch_progress_interval_ms: DEFAULT_WATCH_PROGRESS_INTERVAL_MS,
            wal_faults: None,
        }
    }

    /// Reject nonsense once, at open. The message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.id.0 == 0 {
            return bad("id: 0 is not a valid node id".into());
        }
        if self.members.is_empty() {
            return bad("members: at least this member must be listed".into());
        }
        if self.members.len() > MAX_MEMBERS {
            return bad(format!(
                "members: {} listed, a cluster has at most {MAX_MEMBERS}",
                self.members.len()
            ));
        }
        if !self.members.contains_key(&self.id) {
            return bad(format!(
                "members: this member ({}) must be listed with its address",
                self.id
            ));
        }
        for (id, address) in &self.members {
            if id.0 == 0 {
                return bad("members: 0 is not a valid node id".into());
            }
            crate::net::resolve_address(address)
                .map_err(|e| Error::InvalidArgument(format!("members: address of {id}: {e}")))?;
        }
        for id in self.peer_routes.keys() {
            if id.0 == 0 || *id == self.id {
                return bad(format!("peer_routes: {id} is not a peer"));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir: empty path".into());
        }
        if self.tick_ms == 0 || self.tick_ms > 1_000 {
            return bad(format!("tick_ms: {} is not in 1..=1000", self.tick_ms));
        }
        let ticks = |ms: u64| ms / self.tick_ms;
        if self.heartbeat_interval_ms < self.tick_ms
            || self.heartbeat_interval_ms % self.tick_ms != 0
        {
            return bad(format!(
                "heartbeat_interval_ms: {} must be a positive multiple of tick_ms ({})",
                self.heartbeat_interval_ms, self.tick_ms
            ));
        }
        if self.election_timeout_ms % self.tick_ms != 0
            || ticks(self.election_timeout_ms) < 2 * ticks(self.heartbeat_interval_ms)
        {
            return bad(format!(
                "election_timeout_ms: {} must be a multiple of tick_ms ({}) and at least twice \
                 heartbeat_interval_ms ({})",
                self.election_timeout_ms, self.tick_ms, self.heartbeat_interval_ms
            ));
        }
        // A session must outlive an election without keepalives reaching a new leader: the
        // shortest TTL a grant may ask for is at least 1.5x the longest election timeout.
        if self.election_timeout_ms.saturating_mul(3) > crate::limits::MIN_SESSION_TTL_MS {
            return bad(format!(
                "election_timeout_ms: {} is too long for sessions: 1.5x the longest election \
                 timeout (2 x {0} ms) must not exceed MIN_SESSION_TTL_MS ({} ms)",
                self.election_timeout_ms,
                crate::limits::MIN_SESSION_TTL_MS
            ));
        }
        if self.lease_reads && ticks(self.election_timeout_ms) < 4 {
            return bad("lease_reads: needs an election timeout of at least 4 ticks".into());
        }
        if self.snapshot_entries == 0 {
            return bad("snapshot_entries: must be positive".into());
        }
        if self.snapshot_bytes < 1 << 20 {
            return bad(format!(
                "snapshot_bytes: {} is below 1 MiB",
                self.snapshot_bytes
            ));
        }
        if self.snapshot_transfer_timeout_ms < 100 {
            return bad("snapshot_transfer_timeout_ms: must be at least 100".into());
        }
        if self.state_cache_bytes < 1 << 20 || self.state_cache_bytes > 1 << 40 {
            return bad(format!(
                "state_cache_bytes: {} is not between 1 MiB and 1 TiB",
                self.state_cache_bytes
            ));
        }
        if self.wal_segment_bytes < MIN_WAL_SEGMENT_BYTES
            || self.wal_segment_bytes > MAX_WAL_SEGMENT_BYTES
        {
            return bad(format!(
                "wal_segment_bytes: {} is not between {MIN_WAL_SEGMENT_BYTES} and \
                 {MAX_WAL_SEGMENT_BYTES}",
                self.wal_segment_bytes
            ));
        }
        if self.wal_cache_bytes > 1 << 40 {
            return bad("wal_cache_bytes: over 1 TiB".into());
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > MAX_REQUEST_TIMEOUT_MS {
            return bad(format!(
                "request_timeout_ms: {} is not in 1..={MAX_REQUEST_TIMEOUT_MS}",
                self.request_timeout_ms
            ));
        }
        if self.watch_window_events > MAX_WATCH_WINDOW_EVENTS {
            return bad(format!(
                "watch_window_events: {} is over the limit of {MAX_WATCH_WINDOW_EVENTS}",
                self.watch_window_events
            ));
        }
        if self.watch_buffer_events == 0 || self.watch_buffer_events > MAX_WATCH_BUFFER_EVENTS {
            return bad(format!(
                "watch_buffer_events: {} is not in 1..={MAX_WATCH_BUFFER_EVENTS}",
                self.watch_buffer_events
            ));
        }
        if !(10..=60_000).contains(&self.watch_progress_interval_ms) {
            return bad(format!(
                "watch_progress_interval_ms: {} is not in 10..=60000",
                self.watch_progress_interval_ms
            ));
        }
        if self.max_client_connections == 0 || self.max_client_connections > MAX_CLIENT_CONNECTIONS
        {
            return bad(format!(
                "max_client_connections: {} is not in 1..={MAX_CLIENT_CONNECTIONS}",
                self.max_client_connections
            ));
        }
        Ok(())
    }

    /// The Raft clock period.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// Election timeout in ticks (the minimum).
    pub(crate) fn election_ticks(&self) -> u32 {
        (self.election_timeout_ms / self.tick_ms) as u32
    }

    /// Heartbeat interval in ticks.
    pub(crate) fn heartbeat_ticks(&self) -> u32 {
        (self.heartbeat_interval_ms / self.tick_ms) as u32
    }

    /// The longest election timeout: how long a cluster may be without a leader in normal
    /// operation.
    pub fn max_election_timeout(&self) -> Duration {
        Duration::from_millis(2 * self.election_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let members: BTreeMap<NodeId, String> = [
            (NodeId(1), "127.0.0.1:7001".to_string()),
            (NodeId(2), "127.0.0.1:7002".to_string()),
        ]
        .into();
        Config::new(
            NodeId(1),
            ClusterId(7),
            "/tmp/x",
            "127.0.0.1:7001".parse().unwrap(),
            members,
            ClusterSecret::new(*b"0123456789abcdef").unwrap(),
        )
    }

    fn rejected(f: impl FnOnce(&mut Config), field: &str) {
        let mut c = config();
        f(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(field), "{e} does not name {field}");
    }

    #[test]
    fn defaults_are_valid_and_nonsense_names_its_field() {
        config().validate().unwrap();
        rejected(|c| c.id = NodeId(0), "id");
        rejected(|c| c.id = NodeId(3), "members");
        rejected(
            |c| {
                c.members.insert(NodeId(2), "no port".into());
            },
            "members",
        );
        rejected(|c| c.tick_ms = 0, "tick_ms");
        rejected(|c| c.heartbeat_interval_ms = 15, "heartbeat_interval_ms");
        rejected(|c| c.election_timeout_ms = 60, "election_timeout_ms");
        rejected(|c| c.election_timeout_ms = 340, "MIN_SESSION_TTL_MS");
        let mut longest = config();
        longest.election_timeout_ms = 330;
        longest.validate().unwrap();
        rejected(|c| c.snapshot_entries = 0, "snapshot_entries");
        rejected(|c| c.state_cache_bytes = 0, "state_cache_bytes");
        rejected(|c| c.request_timeout_ms = 0, "request_timeout_ms");
        rejected(|c| c.max_client_connections = 0, "max_client_connections");
        rejected(|c| c.watch_buffer_events = 0, "watch_buffer_events");
        rejected(
            |c| c.watch_progress_interval_ms = 0,
            "watch_progress_interval_ms",
        );
        rejected(
            |c| {
                c.peer_routes
                    .insert(NodeId(1), "127.0.0.1:1".parse().unwrap());
            },
            "peer_routes",
        );
    }

    #[test]
    fn election_timeout_is_in_ticks() {
        let c = config();
        assert_eq!(c.election_ticks(), 15);
        assert_eq!(c.heartbeat_ticks(), 5);
        assert_eq!(c.max_election_timeout(), Duration::from_millis(300));
    }
}
