//! Helpers shared by the `net_*` integration tests: message types, fast configurations, a
//! logger that records the transports' events, and bounded waiting.
#![allow(dead_code)] // each test binary uses a different part of it

use bincode::{Decode, Encode};
use haven::logging::{Event, Level};
use haven::net::{ClusterSecret, Transport, TransportConfig};
use haven::{ClusterId, NodeId};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
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

/// Every transport event (haven's event `net`) of this test binary, as (node, level, message).
static EVENTS: Mutex<Vec<(u64, Level, String)>> = Mutex::new(Vec::new());

/// The process's logger in a `net_*` test: records the transports' events.
struct Recorder;

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let event = Event::from_record(record);
        if let (Some(node), "net", Some(message)) =
            (event.node, event.name.as_str(), event.field("message"))
        {
            let line = (node, event.level, message.to_string());
            EVENTS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }

    fn flush(&self) {}
}

fn events() -> std::sync::MutexGuard<'static, Vec<(u64, Level, String)>> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Recorder).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
    EVENTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The log lines of the transports configured with [`config`] and this `Log`: the events of
/// their node ids logged after the `Log` was made. (Tests running at the same time with the
/// same node ids share lines; the parts a test waits for name what only that test provokes.)
#[derive(Clone)]
pub struct Log {
    since: usize,
    nodes: Arc<Mutex<Vec<u64>>>,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            since: events().len(),
            nodes: Arc::default(),
        }
    }
}

impl Log {
    fn watch(&self, node: u64) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(node);
    }

    pub fn lines(&self) -> Vec<(Level, String)> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        events()[self.since..]
            .iter()
            .filter(|(node, _, _)| nodes.contains(node))
            .map(|(_, level, line)| (*level, line.clone()))
            .collect()
    }

    /// The first warning containing every one of `parts`, waiting up to 5 s for it.
    pub fn wait_for_warning(&self, parts: &[&str]) -> Option<String> {
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = self
                .lines()
                .into_iter()
                .find(|(level, line)| {
                    *level == Level::Warn && parts.iter().all(|p| line.contains(p))
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
    log.watch(node);
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
