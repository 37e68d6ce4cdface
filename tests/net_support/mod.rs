//! Helpers shared by the `net_*` integration tests: message types, fast configurations, a log
//! sink that records lines, and bounded waiting.
#![allow(dead_code)] // each test binary uses a different part of it

use bincode::{Decode, Encode};
use haven::net::{ClusterSecret, LogLevel, LogSink, Transport, TransportConfig};
use haven::{ClusterId, NodeId};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A stand-in for Raft messages.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// The `n`-th message of a stream.
    Seq(u64),
    /// A payload of some size (a snapshot chunk, an append with entries).
    Blob(Vec<u8>),
}

/// A stand-in client request.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Req {
    pub thread: u64,
    pub n: u64,
}

/// A stand-in client response.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Resp {
    pub thread: u64,
    pub n: u64,
    pub doubled: u64,
}

pub type Net = Transport<Msg, Req, Resp>;

pub const CLUSTER: ClusterId = ClusterId(42);

pub fn secret() -> ClusterSecret {
    ClusterSecret::new(*b"correct horse battery staple").expect("secret")
}

pub fn other_secret() -> ClusterSecret {
    ClusterSecret::new(*b"incorrect donkey battery stapler").expect("secret")
}

/// Log lines recorded by a transport under test.
#[derive(Clone, Default)]
pub struct Log {
    lines: Arc<Mutex<Vec<(LogLevel, String)>>>,
}

impl Log {
    pub fn sink(&self) -> LogSink {
        let lines = Arc::clone(&self.lines);
        Arc::new(move |level, line| {
            lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((level, line.to_string()));
        })
    }

    pub fn lines(&self) -> Vec<(LogLevel, String)> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first warning containing every one of `parts`, waiting up to 5 s for it.
    pub fn wait_for_warning(&self, parts: &[&str]) -> Option<String> {
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = self
                .lines()
                .into_iter()
                .find(|(level, line)| {
                    *level == LogLevel::Warn && parts.iter().all(|p| line.contains(p))
                })
                .map(|(_, line)| line);
            found.is_some()
        });
        found
    }
}

/// A configuration with short timeouts so that failure paths finish quickly.
pub fn config(node: u64, secret: ClusterSecret, log: &Log) -> TransportConfig {
    let mut config = TransportConfig::new(
        NodeId(node),
        CLUSTER,
        secret,
        "127.0.0.1:0".parse().expect("addr"),
    );
    config.handshake_timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(500);
    config.write_timeout = Duration::from_secs(2);
    config.idle_timeout = Duration::from_secs(3);
    config.keepalive_interval = Duration::from_millis(200);
    config.reconnect_backoff_min = Duration::from_millis(10);
    config.reconnect_backoff_max = Duration::from_millis(200);
    config.log = log.sink();
    config
}

/// Poll `condition` every 5 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

/// An address nothing listens on (bound, read, released).
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}
