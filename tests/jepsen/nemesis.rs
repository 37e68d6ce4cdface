//! The nemesis: on a seeded schedule, one fault at a time, then a full heal.
//!
//! Faults: SIGKILL a minority, the leader, or a majority (restarted at the heal); SIGSTOP the
//! leader or a minority (SIGCONT at the heal); partitions through the proxies (random halves, a
//! bridge, the leader isolated, the leader's outbound or inbound links cut, or halves whose
//! links hold every byte and deliver them at the heal); slow links (5-205 ms); and
//! three churns that act again and again within their window: a crash loop (kill a member,
//! restart it a moment later, kill another), short pauses of whoever leads (100-600 ms, around
//! the election timeout, where a deposed leader may not know it yet), and a partition that
//! changes every few hundred milliseconds. Every fault and every heal lasts a window of the
//! [`Pace`] (2-4 s in the linearizability run). Because each fault is healed completely before
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

/// A fault that keeps acting during its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Churn {
    /// Restart the member that is down, or kill a random one.
    CrashLoop,
    /// Resume the paused member, or pause whoever leads.
    PauseLeaderLoop,
    /// A new random partition, or a heal.
    FlappingPartition,
}

/// The member that says it leads; a random one if none does right now.
fn leader(cluster: &Cluster, rng: &mut SplitMix64) -> usize {
    cluster
        .leader(Duration::from_millis(300))
        .unwrap_or_else(|| rng.below(cluster.n as u64) as usize)
}

/// One step of a churn; how long until the next.
fn churn_step(
    churn: Churn,
    cluster: &Cluster,
    history: &History,
    rng: &mut SplitMix64,
) -> Duration {
    let n = cluster.n;
    match churn {
        Churn::CrashLoop => {
            if let Some(down) = (0..n).find(|&i| !cluster.is_running(i)) {
                cluster.start_member(down);
                history.nemesis("restart", names(&[down]));
            } else {
                let victim = rng.below(n as u64) as usize;
                cluster.kill(victim);
                history.nemesis("kill", names(&[victim]));
            }
            Duration::from_millis(200 + rng.below(700))
        }
        Churn::PauseLeaderLoop => {
            if let Some(paused) = (0..n).find(|&i| cluster.is_paused(i)) {
                cluster.resume(paused);
                history.nemesis("resume", names(&[paused]));
            } else {
                let l = leader(cluster, rng);
                cluster.pause(l);
                history.nemesis("pause", names(&[l]));
            }
            Duration::from_millis(100 + rng.below(500))
        }
        Churn::FlappingPartition => {
            if rng.chance(1, 3) {
                cluster.links.heal();
                history.nemesis("heal-links", String::new());
            } else {
                let minority = (n - 1) / 2;
                let order = shuffled(rng, n);
                let groups = vec![order[..minority].to_vec(), order[minority..].to_vec()];
                cluster.partition(&groups);
                history.nemesis("partition", group_names(&groups));
            }
            Duration::from_millis(200 + rng.below(600))
        }
    }
}

/// Every fault kind, by the name the history and `HAVEN_JEPSEN_FAULTS` use. Kills of a
/// minority are listed twice: they are the commonest failure in practice.
pub const FAULTS: &[&str] = &[
    "kill",
    "kill",
    "kill-leader",
    "kill-majority",
    "pause-leader",
    "pause",
    "partition-halves",
    "partition-bridge",
    "partition-leader",
    "blackhole-halves",
    "cut-leader-one-way",
    "slow-links",
    "crash-loop",
    "pause-leader-loop",
    "flapping-partition",
];

/// Inject the fault `kind`; a description for the history and the churn to keep running.
fn inject(
    kind: &'static str,
    cluster: &Cluster,
    rng: &mut SplitMix64,
) -> (&'static str, String, Option<Churn>) {
    let n = cluster.n;
    let minority = (n - 1) / 2;
    let kill = |victims: Vec<usize>| {
        for &i in &victims {
            cluster.kill(i);
        }
        names(&victims)
    };
    let detail = match kind {
        "kill" => {
            let count = 1 + rng.below(minority as u64) as usize;
            kill(shuffled(rng, n).into_iter().take(count).collect())
        }
        "kill-leader" => kill(vec![leader(cluster, rng)]),
        "kill-majority" => kill(shuffled(rng, n).into_iter().take(minority + 1).collect()),
        "pause-leader" => {
            let l = leader(cluster, rng);
            cluster.pause(l);
            names(&[l])
        }
        "pause" => {
            let count = 1 + rng.below(minority as u64) as usize;
            let victims: Vec<usize> = shuffled(rng, n).into_iter().take(count).collect();
            for &i in &victims {
                cluster.pause(i);
            }
            names(&victims)
        }
        "partition-halves" => {
            let order = shuffled(rng, n);
            let groups = vec![order[..minority].to_vec(), order[minority..].to_vec()];
            cluster.partition(&groups);
            group_names(&groups)
        }
        "partition-bridge" => {
            // Two sides that each see the bridge member in the middle, and not each other.
            let order = shuffled(rng, n);
            let mid = n / 2;
            let groups = vec![order[..=mid].to_vec(), order[mid..].to_vec()];
            cluster.partition(&groups);
            group_names(&groups)
        }
        "blackhole-halves" => {
            // Like partition-halves, but the links hold what crosses them and deliver it all
            // at the heal: seconds-old messages on connections that never broke.
            let order = shuffled(rng, n);
            let groups = vec![order[..minority].to_vec(), order[minority..].to_vec()];
            cluster.partition_with(&groups, Mode::Blackhole);
            group_names(&groups)
        }
        "partition-leader" => {
            let l = leader(cluster, rng);
            let rest: Vec<usize> = (0..n).filter(|&i| i != l).collect();
            let groups = vec![vec![l], rest];
            cluster.partition(&groups);
            group_names(&groups)
        }
        "cut-leader-one-way" => {
            let l = leader(cluster, rng);
            let outbound = rng.chance(1, 2);
            cluster.cut_one_way(l, outbound, Mode::Cut);
            let direction = if outbound { "outbound" } else { "inbound" };
            format!("{} {direction}", names(&[l]))
        }
        "slow-links" => {
            // Up to about the election timeout (150-300 ms): elections under way while
            // messages arrive late.
            let delay = Duration::from_millis(5 + rng.below(200));
            cluster.set_all_links(Mode::Delay(delay));
            format!("{delay:?} on every link")
        }
        "crash-loop" | "pause-leader-loop" | "flapping-partition" => String::new(),
        other => panic!("unknown fault kind {other:?}"),
    };
    let churn = match kind {
        "crash-loop" => Some(Churn::CrashLoop),
        "pause-leader-loop" => Some(Churn::PauseLeaderLoop),
        "flapping-partition" => Some(Churn::FlappingPartition),
        _ => None,
    };
    (kind, detail, churn)
}

/// The fault kinds to draw from: all, or those named in `filter` (comma separated).
pub fn fault_kinds(filter: Option<&str>) -> Vec<&'static str> {
    let Some(filter) = filter else {
        return FAULTS.to_vec();
    };
    let wanted: Vec<&str> = filter.split(',').map(str::trim).collect();
    for w in &wanted {
        assert!(
            FAULTS.contains(w),
            "HAVEN_JEPSEN_FAULTS: unknown fault {w:?}; known: {FAULTS:?}"
        );
    }
    FAULTS
        .iter()
        .copied()
        .filter(|f| wanted.contains(f))
        .collect()
}

/// How long the quiet start, each fault and each heal last.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Before the first fault.
    pub quiet: Duration,
    /// Shortest fault or heal window, in milliseconds.
    pub window_min_ms: u64,
    /// A window lasts `window_min_ms` plus a random part below this.
    pub window_spread_ms: u64,
}

impl Pace {
    /// The linearizability run's: 2 s of quiet, then faults and heals of 2-4 s each.
    pub const STEADY: Pace = Pace {
        quiet: Duration::from_secs(2),
        window_min_ms: 2_000,
        window_spread_ms: 2_000,
    };
}

/// Run the schedule until `stop`, then heal. Everything is healed when this returns.
pub fn run(
    cluster: &Cluster,
    history: &History,
    seed: u64,
    kinds: &[&'static str],
    pace: Pace,
    stop: &AtomicBool,
) -> NemesisReport {
    let mut rng = SplitMix64::new(seed ^ 0x006e_656d_6573_6973);
    let crashes = Mutex::new(Vec::new());
    let mut faults = 0;
    let between = |rng: &mut SplitMix64| {
        Duration::from_millis(pace.window_min_ms + rng.below(pace.window_spread_ms))
    };
    // A quiet start, so the history begins with a working cluster.
    let mut running = sleep_watching(cluster, history, &crashes, stop, pace.quiet);
    // Bounded: every round sleeps at least two windows and `stop` ends it.
    while running {
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let (what, detail, churn) = inject(kind, cluster, &mut rng);
        faults += 1;
        history.nemesis(what, detail);
        let fault_end = Instant::now() + between(&mut rng);
        // Bounded by `fault_end`.
        while running && Instant::now() < fault_end {
            let next = match churn {
                Some(churn) => churn_step(churn, cluster, history, &mut rng),
                None => fault_end.saturating_duration_since(Instant::now()),
            };
            let next = next.min(fault_end.saturating_duration_since(Instant::now()));
            running = sleep_watching(cluster, history, &crashes, stop, next);
        }
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
