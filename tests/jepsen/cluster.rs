//! A cluster of `haven serve` child processes on 127.0.0.1 whose peer traffic crosses one
//! fault-injecting proxy per directed link.
//!
//! Member `j` listens on its own port (clients connect there directly). Every member is given
//! the same member map (it becomes the first configuration, log entry 1), in which member `j`'s
//! address is its [`Router`]: the router reads the `Hello` of each incoming connection and
//! sends a connection from member `i` through proxy(i->j) of [`Links`], so the nemesis can cut,
//! blackhole or delay every directed link on its own.
//!
//! [`Processes`] owns the children. It is shared with the watchdog, and its `Drop` resumes
//! every paused child, then SIGKILLs and reaps every child, so no process outlives the test
//! even when it panics.

use crate::proxy::{Links, Mode};
use crate::router::Router;
use haven::client::NodeRole;
use haven::net::ClusterSecret;
use haven::{Client, ClientOptions, ClusterId, ReadMode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The cluster id every member and client uses.
pub const CLUSTER: ClusterId = ClusterId(0x4a45_5053);
const SECRET: &[u8] = b"jepsen-test-secret-0123456789abcdef";

/// The shared cluster secret.
pub fn secret() -> ClusterSecret {
    ClusterSecret::new(SECRET.to_vec()).expect("a valid secret")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One member's process state.
#[derive(Default)]
struct Slot {
    child: Option<Child>,
    paused: bool,
}

/// The children, by member index. Shared with the watchdog.
#[derive(Default)]
pub struct Processes {
    slots: Mutex<Vec<Slot>>,
}

impl Processes {
    /// SIGCONT (if paused), SIGKILL and reap every child. Idempotent.
    pub fn kill_all(&self) {
        let mut slots = lock(&self.slots);
        for slot in slots.iter_mut() {
            kill_slot(slot);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: sending a signal to a child we have not reaped yet (so its pid is still ours).
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

fn kill_slot(slot: &mut Slot) {
    if let Some(mut child) = slot.child.take() {
        if slot.paused {
            signal(&child, libc::SIGCONT);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    slot.paused = false;
}

/// Timing options passed to every member.
#[derive(Debug, Clone)]
pub struct MemberOptions {
    /// `--lease-reads`.
    pub lease_reads: bool,
}

/// The running cluster.
pub struct Cluster {
    /// How many members.
    pub n: usize,
    /// Where member `i` listens (clients connect here).
    pub addrs: Vec<SocketAddr>,
    /// The per-link proxies.
    pub links: Links,
    /// Each member's advertised address.
    routers: Vec<Router>,
    processes: Arc<Processes>,
    dir: PathBuf,
    options: MemberOptions,
}

/// `n` free loopback ports for the members' listeners, below the kernel's ephemeral range
/// (a killed member's port stays free for the seconds it is down).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    haven::net::free_loopback_addrs(n).expect("free loopback ports")
}

impl Cluster {
    /// Start `n` members with data under `dir`.
    pub fn start(
        n: usize,
        dir: &Path,
        processes: Arc<Processes>,
        options: MemberOptions,
    ) -> Cluster {
        std::fs::write(dir.join("secret"), SECRET).expect("write the secret file");
        let addrs = free_addrs(n);
        let links = Links::new(n);
        links.set_targets(&addrs);
        let routers = (0..n)
            .map(|j| {
                let from: HashMap<u64, SocketAddr> = (0..n)
                    .filter(|&i| i != j)
                    .map(|i| (i as u64 + 1, links.addr(i, j)))
                    .collect();
                Router::start(j as u64 + 1, addrs[j], from)
            })
            .collect();
        {
            let mut slots = lock(&processes.slots);
            slots.clear();
            slots.resize_with(n, Slot::default);
        }
        let cluster = Cluster {
            n,
            addrs,
            links,
            routers,
            processes,
            dir: dir.to_path_buf(),
            options,
        };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster
    }

    /// Member `i`'s log file (its stderr, appended across restarts).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{}.log", i + 1))
    }

    fn command(&self, i: usize) -> Command {
        let peers: Vec<String> = self
            .routers
            .iter()
            .enumerate()
            .map(|(j, router)| format!("{}={}", j + 1, router.addr()))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open the member log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_haven"));
        command
            .arg("serve")
            .args(["--id", &(i + 1).to_string()])
            .args(["--listen", &self.addrs[i].to_string()])
            .args(["--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("n{}", i + 1)))
            .arg("--secret-file")
            .arg(self.dir.join("secret"))
            .args(["--cluster-id", &CLUSTER.0.to_string()])
            // Small snapshot intervals, so that a member that was down or cut off for a few
            // seconds catches up through a snapshot transfer, not only from the log.
            .args(["--snapshot-entries", "5000"])
            .args(["--snapshot-trailing-entries", "1000"])
            .env("HAVEN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if self.options.lease_reads {
            command.arg("--lease-reads");
        }
        command
    }

    /// Start member `i` (it must not be running). A member that exits within 300 ms (its port
    /// was taken in the meantime, or the previous process's lock was not released yet) is
    /// started again, for up to 10 s.
    pub fn start_member(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = self.command(i).spawn().expect("spawn haven serve");
            {
                let mut slots = lock(&self.processes.slots);
                assert!(slots[i].child.is_none(), "member {} already runs", i + 1);
                slots[i] = Slot {
                    child: Some(child),
                    paused: false,
                };
            }
            std::thread::sleep(Duration::from_millis(300));
            let exited = {
                let mut slots = lock(&self.processes.slots);
                let slot = &mut slots[i];
                match slot.child.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(status))) => {
                        slot.child = None;
                        Some(status)
                    }
                    _ => None,
                }
            };
            let Some(status) = exited else { return };
            assert!(
                Instant::now() < deadline,
                "member {} keeps exiting at start ({status}); see {}",
                i + 1,
                self.log_path(i).display()
            );
        }
    }

    /// SIGKILL member `i` and reap it (resuming it first if paused).
    pub fn kill(&self, i: usize) {
        kill_slot(&mut lock(&self.processes.slots)[i]);
    }

    /// Whether member `i` has a process (running or paused).
    pub fn is_running(&self, i: usize) -> bool {
        lock(&self.processes.slots)[i].child.is_some()
    }

    /// Whether member `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        lock(&self.processes.slots)[i].paused
    }

    /// SIGSTOP member `i`.
    pub fn pause(&self, i: usize) {
        let mut slots = lock(&self.processes.slots);
        let slot = &mut slots[i];
        if let Some(child) = &slot.child {
            signal(child, libc::SIGSTOP);
            slot.paused = true;
        }
    }

    /// SIGCONT member `i` if it is paused.
    pub fn resume(&self, i: usize) {
        let mut slots = lock(&self.processes.slots);
        let slot = &mut slots[i];
        if let (Some(child), true) = (&slot.child, slot.paused) {
            signal(child, libc::SIGCONT);
        }
        slot.paused = false;
    }

    /// Resume every paused member, restart every stopped one, heal every link.
    pub fn heal_all(&self) -> Vec<usize> {
        self.links.heal();
        let mut restarted = Vec::new();
        for i in 0..self.n {
            self.resume(i);
            if !self.is_running(i) {
                self.start_member(i);
                restarted.push(i);
            }
        }
        restarted
    }

    /// A member that exited on its own (a crash, not a kill of ours): its index and status.
    pub fn exited_member(&self) -> Option<(usize, String)> {
        let mut slots = lock(&self.processes.slots);
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some(Ok(Some(status))) = slot.child.as_mut().map(Child::try_wait) {
                slot.child = None;
                return Some((i, status.to_string()));
            }
        }
        None
    }

    /// Peer connections routed through their link, and every connection the routers could not
    /// identify (must be none: else peers would bypass the nemesis).
    pub fn routing(&self) -> (u64, Vec<String>) {
        let routed = self.routers.iter().map(Router::routed_peers).sum();
        let unidentified = self.routers.iter().flat_map(Router::unidentified).collect();
        (routed, unidentified)
    }

    /// Set every link between groups to cut and every link inside one to pass.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        let refs: Vec<&[usize]> = groups.iter().map(Vec::as_slice).collect();
        self.links.partition(&refs);
    }

    /// Like [`Cluster::partition`], with `mode` on the links between groups.
    pub fn partition_with(&self, groups: &[Vec<usize>], mode: Mode) {
        for i in 0..self.n {
            for j in (0..self.n).filter(|&j| j != i) {
                let together = groups.iter().any(|g| g.contains(&i) && g.contains(&j));
                self.links
                    .set(i, j, if together { Mode::Pass } else { mode });
            }
        }
    }

    /// Set every link out of (`outbound`) or into member `i`.
    pub fn cut_one_way(&self, i: usize, outbound: bool, mode: Mode) {
        for j in (0..self.n).filter(|&j| j != i) {
            if outbound {
                self.links.set(i, j, mode);
            } else {
                self.links.set(j, i, mode);
            }
        }
    }

    /// Every link to `mode`.
    pub fn set_all_links(&self, mode: Mode) {
        for i in 0..self.n {
            for j in (0..self.n).filter(|&j| j != i) {
                self.links.set(i, j, mode);
            }
        }
    }

    /// A client of the whole cluster, trying member `first` first.
    pub fn client(
        &self,
        first: usize,
        prefer_leader: bool,
        request_timeout: Duration,
    ) -> haven::Result<Client> {
        let addrs: Vec<String> = (0..self.n)
            .map(|k| self.addrs[(first + k) % self.n].to_string())
            .collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        Client::connect(
            &refs,
            CLUSTER,
            &secret(),
            ClientOptions {
                request_timeout,
                connect_timeout: Duration::from_millis(500),
                read_mode: ReadMode::Linearizable,
                prefer_leader,
                tls: None,
            },
        )
    }

    /// A client of member `i` alone (status, state hash).
    pub fn member_client(&self, i: usize, request_timeout: Duration) -> haven::Result<Client> {
        self.member_client_with(i, request_timeout, ReadMode::Linearizable)
    }

    /// A client of member `i` alone, reading with `read_mode`.
    pub fn member_client_with(
        &self,
        i: usize,
        request_timeout: Duration,
        read_mode: ReadMode,
    ) -> haven::Result<Client> {
        let addr = self.addrs[i].to_string();
        Client::connect(
            &[addr.as_str()],
            CLUSTER,
            &secret(),
            ClientOptions {
                request_timeout,
                connect_timeout: request_timeout,
                read_mode,
                prefer_leader: false,
                tls: None,
            },
        )
    }

    /// The member that says it leads, asking each (a paused or dead member costs `timeout`).
    pub fn leader(&self, timeout: Duration) -> Option<usize> {
        (0..self.n).find(|&i| {
            self.member_client(i, timeout)
                .and_then(|c| c.status())
                .is_ok_and(|s| s.role == NodeRole::Leader)
        })
    }

    /// Wait until every member answers and all name the same leader; its index.
    pub fn wait_for_agreed_leader(&self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        loop {
            let mut leaders = Vec::new();
            for i in 0..self.n {
                match self
                    .member_client(i, Duration::from_millis(500))
                    .and_then(|c| c.status())
                {
                    Ok(status) => leaders.push(status.leader),
                    Err(e) => {
                        leaders.push(None);
                        last = format!("member {}: {e}", i + 1);
                    }
                }
            }
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) {
                    return Ok((leader.0 - 1) as usize);
                }
            }
            if leaders.iter().all(Option::is_some) {
                last = format!("members name different leaders: {leaders:?}");
            }
            if Instant::now() >= deadline {
                return Err(format!("no agreed leader after {timeout:?}: {last}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
