//! The nemesis: on a seeded schedule, one fault at a time, then a full heal.
//!
//! Faults: SIGKILL a minority, the leader, or a majority (restarted at the heal); SIGSTOP the
//! leader or a minority (SIGCONT at the heal); partitions through the proxies (random halves, a
//! bridge, the leader isolated, the leader's outbound or inbound links cut); and slow links.
//! Every fault lasts 2-4 s and every heal 2-4 s. Because each fault is healed completely before
//! the next, and the last one when the load ends, the final phase always starts from a cluster
//! that can form a majority.
//!
//! The seed fixes the sequence of fault kinds, random targets and durations; which member
//! leads at a given moment depends on the run, so leader-targeted faults may hit another
//! member on a replay.

use crate::cluster::Cluster;
use crate::history::History;
use crate::proxy::Mode;
use haven::raft::rng::SplitMix64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the nemesis did, for the report.
#[derive(Debug, Default)]
pub struct NemesisReport {
    /// Faults injected.
    pub faults: u64,
    /// Members that exited without being killed (a crash: always a failure).
    pub crashes: Vec<String>,
}

fn shuffled(rng: &mut SplitMix64, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

fn names(members: &[usize]) -> String {
    let names: Vec<String> = members.iter().map(|i| format!("n{}", i + 1)).collect();
    names.join(",")
}

fn group_names(groups: &[Vec<usize>]) -> String {
    let groups: Vec<String> = groups.iter().map(|g| format!("[{}]", names(g))).collect();
    groups.join(" ")
}

/// Record every member that exited without being killed (a crash: always a failure).
pub fn watch_crashes(cluster: &Cluster, history: &History, crashes: &Mutex<Vec<String>>) {
    // Bounded: each member is reported at most once (its slot is emptied).
    while let Some((i, status)) = cluster.exited_member() {
        let text = format!(
            "member n{} exited on its own ({status}); see {}",
            i + 1,
            cluster.log_path(i).display()
        );
        history.nemesis("crash", text.clone());
        crashes.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }
}

/// Sleep up to `d`, waking early when `stop` is set; also watch for members that exited on
/// their own. Returns `false` if stopped.
fn sleep_watching(
    cluster: &Cluster,
    history: &History,
    crashes: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    d: Duration,
) -> bool {
    let until = Instant::now() + d;
    // Bounded by `d`.
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        watch_crashes(cluster, history, crashes);
        std::thread::sleep(Duration::from_millis(50));
    }
    !stop.load(Ordering::SeqCst)
}

/// Inject one fault; a description for the history.
fn inject(cluster: &Cluster, rng: &mut SplitMix64) -> (&'static str, String) {
    let n = cluster.n;
    let minority = (n - 1) / 2;
    // The member that says it leads; a random one if none does right now.
    let leader = |rng: &mut SplitMix64| {
        cluster
            .leader(Duration::from_millis(300))
            .unwrap_or_else(|| rng.below(n as u64) as usize)
    };
    match rng.below(11) {
        0 | 1 => {
            let count = 1 + rng.below(minority as u64) as usize;
            let victims: Vec<usize> = shuffled(rng, n).into_iter().take(count).collect();
            for &i in &victims {
                cluster.kill(i);
            }
            ("kill", names(&victims))
        }
        2 => {
            let l = leader(rng);
            cluster.kill(l);
            ("kill-leader", names(&[l]))
        }
        3 => {
            let victims: Vec<usize> = shuffled(rng, n).into_iter().take(minority + 1).collect();
            for &i in &victims {
                cluster.kill(i);
            }
            ("kill-majority", names(&victims))
        }
        4 => {
            let l = leader(rng);
            cluster.pause(l);
            ("pause-leader", names(&[l]))
        }
        5 => {
            let count = 1 + rng.below(minority as u64) as usize;
            let victims: Vec<usize> = shuffled(rng, n).into_iter().take(count).collect();
            for &i in &victims {
                cluster.pause(i);
            }
            ("pause", names(&victims))
        }
        6 => {
            let order = shuffled(rng, n);
            let groups = vec![order[..minority].to_vec(), order[minority..].to_vec()];
            cluster.partition(&groups);
            ("partition-halves", group_names(&groups))
        }
        7 => {
            // Two sides that each see the bridge member in the middle, and not each other.
            let order = shuffled(rng, n);
            let mid = n / 2;
            let groups = vec![order[..=mid].to_vec(), order[mid..].to_vec()];
            cluster.partition(&groups);
            ("partition-bridge", group_names(&groups))
        }
        8 => {
            let l = leader(rng);
            let rest: Vec<usize> = (0..n).filter(|&i| i != l).collect();
            let groups = vec![vec![l], rest];
            cluster.partition(&groups);
            ("partition-leader", group_names(&groups))
        }
        9 => {
            let l = leader(rng);
            let outbound = rng.chance(1, 2);
            cluster.cut_one_way(l, outbound, Mode::Cut);
            let what = if outbound {
                "cut-leader-outbound"
            } else {
                "cut-leader-inbound"
            };
            (what, names(&[l]))
        }
        _ => {
            let delay = Duration::from_millis(5 + rng.below(40));
            cluster.set_all_links(Mode::Delay(delay));
            ("slow-links", format!("{delay:?} on every link"))
        }
    }
}

/// Run the schedule until `stop`, then heal. Everything is healed when this returns.
pub fn run(cluster: &Cluster, history: &History, seed: u64, stop: &AtomicBool) -> NemesisReport {
    let mut rng = SplitMix64::new(seed ^ 0x006e_656d_6573_6973);
    let crashes = Mutex::new(Vec::new());
    let mut faults = 0;
    let between = |rng: &mut SplitMix64| Duration::from_millis(2_000 + rng.below(2_000));
    // A quiet start, so the history begins with a working cluster.
    let mut running = sleep_watching(cluster, history, &crashes, stop, Duration::from_secs(2));
    // Bounded: every round sleeps at least 4 s and `stop` ends it.
    while running {
        let (what, detail) = inject(cluster, &mut rng);
        faults += 1;
        history.nemesis(what, detail);
        let fault_time = between(&mut rng);
        running = sleep_watching(cluster, history, &crashes, stop, fault_time);
        watch_crashes(cluster, history, &crashes);
        let restarted = cluster.heal_all();
        history.nemesis("heal", format!("restarted [{}]", names(&restarted)));
        if running {
            let heal_time = between(&mut rng);
            running = sleep_watching(cluster, history, &crashes, stop, heal_time);
        }
    }
    NemesisReport {
        faults,
        crashes: crashes.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}
