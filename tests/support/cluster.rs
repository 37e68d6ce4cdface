//! Helpers shared by the `node_*` and `cluster_*` tests: in-process clusters on loopback ports,
//! `haven serve` child processes that are always killed and reaped, and polling with a bound.
//!
//! Include with `#[path = "support/cluster.rs"] mod cluster_support;`.
#![allow(dead_code)] // each test binary uses a different part

use haven::net::ClusterSecret;
use haven::node::{Config, Node};
use haven::{Client, ClientOptions, ClusterId, Error, NodeId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &[u8] = b"cluster-test-secret-0123456789";
pub const CLUSTER: ClusterId = ClusterId(4242);

pub fn secret() -> ClusterSecret {
    ClusterSecret::new(SECRET.to_vec()).unwrap()
}

/// `n` distinct free loopback ports (bound and released; a collision with another process is
/// possible but rare, and shows as a bind error at start).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    haven::net::free_loopback_addrs(n).expect("free loopback ports")
}

/// Poll `f` every 10 ms until it returns `Some`, or panic after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Print haven's events as the binary does, warnings and worse unless the run asks for more
/// with `HAVEN_LOG` (haven itself writes nothing unless a logger is installed).
pub fn quiet_logs() {
    // Installed once per test binary; later calls change nothing.
    let _ = haven::logging::LogfmtLogger::from_env(haven::logging::LevelFilter::Warn).install();
}

/// Fast timings for tests: tick 5 ms, election 100-200 ms, heartbeat 20 ms (several test
/// clusters share two cores: shorter timeouts elect spuriously under that load).
pub fn fast(config: &mut Config) {
    config.tick_ms = 5;
    config.election_timeout_ms = 100;
    config.heartbeat_interval_ms = 20;
    config.state_cache_bytes = 8 << 20;
    config.wal_segment_bytes = 1 << 20;
    config.wal_cache_bytes = 4 << 20;
}

/// A cluster of in-process members on loopback.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<SocketAddr>,
    pub nodes: Vec<Option<Node>>,
    pub configs: Vec<Config>,
}

impl Cluster {
    /// Start `n` founding members with ids 1..=n, each configured by `tune` after the defaults
    /// and [`fast`].
    pub fn start(n: usize, tune: impl Fn(&mut Config)) -> Cluster {
        Cluster::start_routed(n, &free_addrs(n), |_, _| None, tune)
    }

    /// Start `n` members listening on `addrs`; member i dials member j at `route(i, j)` when it
    /// gives one (a fault-injecting proxy), else at j's address.
    pub fn start_routed(
        n: usize,
        addrs: &[SocketAddr],
        route: impl Fn(usize, usize) -> Option<SocketAddr>,
        tune: impl Fn(&mut Config),
    ) -> Cluster {
        quiet_logs();
        let dir = tempfile::tempdir().unwrap();
        let addrs = addrs.to_vec();
        let members: BTreeMap<NodeId, String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (NodeId(i as u64 + 1), a.to_string()))
            .collect();
        let configs: Vec<Config> = (0..n)
            .map(|i| {
                let mut c = Config::new(
                    NodeId(i as u64 + 1),
                    CLUSTER,
                    dir.path().join(format!("n{}", i + 1)),
                    addrs[i],
                    members.clone(),
                    secret(),
                );
                fast(&mut c);
                for j in (0..n).filter(|&j| j != i) {
                    if let Some(addr) = route(i, j) {
                        c.peer_routes.insert(NodeId(j as u64 + 1), addr);
                    }
                }
                tune(&mut c);
                c
            })
            .collect();
        let nodes = configs
            .iter()
            .map(|c| Some(Node::open(c.clone()).expect("open member")))
            .collect();
        Cluster {
            dir,
            addrs,
            nodes,
            configs,
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("member is running")
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// The index of the member every running member agrees leads, waiting up to `timeout`.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        wait_for("an agreed leader", timeout, || {
            let mut leader = None;
            for (_, node) in self.running() {
                let status = node.status().ok()?;
                if status.failure.is_some() {
                    // A member that stopped after a failure takes no part any more.
                    continue;
                }
                let l = status.leader?;
                if leader.is_some_and(|x| x != l) {
                    return None;
                }
                leader = Some(l);
            }
            let l = leader?;
            let index = (l.0 - 1) as usize;
            let node = self.nodes.get(index)?.as_ref()?;
            node.failure().is_none().then_some(index)
        })
    }

    /// Stop member `i` gracefully.
    pub fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().expect("graceful shutdown");
        }
    }

    /// Restart member `i`: a graceful stop (if running), then open it again from its data
    /// directory. (Crashes are `kill -9` of `haven serve` processes, in `cluster_process.rs`.)
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.nodes[i] = Some(Node::open(self.configs[i].clone()).expect("reopen member"));
    }

    /// Wait until every running member has applied all of its log and all report the same
    /// applied index and state hash; that hash.
    pub fn wait_converged(&self, timeout: Duration) -> [u8; 32] {
        wait_for("members to converge on one state", timeout, || {
            let mut seen: Option<(haven::LogIndex, [u8; 32])> = None;
            for (_, node) in self.running() {
                // Everything in its log applied first: a new leader's no-op (or any entry still
                // in flight) would change the state after the hash was taken.
                let status = node.status().ok()?;
                if status.applied_index < status.last_index {
                    return None;
                }
                let (applied, hash) = node.state_hash().ok()?;
                match seen {
                    None => seen = Some((applied, hash)),
                    Some(s) if s == (applied, hash) => {}
                    Some(_) => return None,
                }
            }
            seen.map(|(_, h)| h)
        })
    }
}

/// A client connected over TCP to the given members.
pub fn remote_client(addrs: &[SocketAddr], options: ClientOptions) -> Result<Client, Error> {
    let strings: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    Client::connect(&refs, CLUSTER, &secret(), options)
}

/// A `haven serve` child process, killed (SIGKILL) and reaped when dropped.
pub struct ServeProcess {
    pub id: u64,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl ServeProcess {
    /// Start `haven serve` for member `id` of `addrs` (ids 1..=n), data in `dir/n{id}`.
    pub fn start(dir: &Path, id: u64, addrs: &[SocketAddr], extra: &[&str]) -> ServeProcess {
        ServeProcess::start_with_env(dir, id, addrs, extra, &[])
    }

    /// [`ServeProcess::start`] with extra environment variables.
    pub fn start_with_env(
        dir: &Path,
        id: u64,
        addrs: &[SocketAddr],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServeProcess {
        let secret_file = dir.join("secret");
        if !secret_file.exists() {
            std::fs::write(&secret_file, SECRET).unwrap();
        }
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let log = dir.join(format!("n{id}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_haven"))
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--listen", &addrs[(id - 1) as usize].to_string()])
            .args(["--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(dir.join(format!("n{id}")))
            .arg("--secret-file")
            .arg(&secret_file)
            .args(["--cluster-id", &CLUSTER.0.to_string()])
            .args(extra)
            .env("HAVEN_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn haven serve");
        ServeProcess {
            id,
            child: Some(child),
            log,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit (up to `timeout`, then SIGKILL); the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait up to `timeout` for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
