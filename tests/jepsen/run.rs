//! One run: start the cluster, load it under the nemesis, heal, read every key, restart the
//! whole cluster, read every key again, compare the members' state hashes, check the history.

use crate::check::{self, Values};
use crate::cluster::{Cluster, MemberOptions, Processes};
use crate::env::{self, env_flag, env_u64};
use crate::history::{self, Action, History, Kind};
use crate::keeper::Keeper;
use crate::lincheck::OpResult;
use crate::nemesis;
use crate::watchdog::Watchdog;
use crate::workload::{self, ClientThread, Keys};
use haven::raft::rng::SplitMix64;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Search steps allowed per key. A key's sub-history is at most `ops_per_key` operations plus
/// its final reads; an overrun fails the run.
pub const CHECK_BUDGET: u64 = 2_000_000;

/// What a run does, from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HAVEN_JEPSEN_MEMBERS`: 3 (default) or 5.
    pub members: usize,
    /// `HAVEN_JEPSEN_CLIENTS`: client threads, default 8.
    pub clients: usize,
    /// `HAVEN_JEPSEN_SECONDS`: seconds of load, default 60.
    pub seconds: u64,
    /// `HAVEN_JEPSEN_SEED`: the seed of the schedule and the workload (random by default).
    pub seed: u64,
    /// `HAVEN_JEPSEN_KEEP=1`: keep the history (and member logs and data) even on success.
    pub keep: bool,
    /// `HAVEN_JEPSEN_LEASE_READS=1`: members serve linearizable reads from the leader lease.
    pub lease_reads: bool,
    /// `HAVEN_JEPSEN_FAULTS`: the fault kinds to draw from (comma separated; default all).
    pub faults: Vec<&'static str>,
    /// `HAVEN_JEPSEN_KEYS`: keys being written at a time, default 4.
    pub active_keys: usize,
    /// Operations issued on a key before a fresh key replaces it.
    pub ops_per_key: u64,
    /// Each client operation's deadline, retries included.
    pub request_timeout: Duration,
}

impl Settings {
    /// Read the settings; a bad value panics naming the variable.
    pub fn from_env() -> Settings {
        let members = env_u64("HAVEN_JEPSEN_MEMBERS").unwrap_or(3) as usize;
        assert!(
            members == 3 || members == 5,
            "HAVEN_JEPSEN_MEMBERS must be 3 or 5, not {members}"
        );
        let clients = env_u64("HAVEN_JEPSEN_CLIENTS").unwrap_or(8) as usize;
        assert!(
            (1..=32).contains(&clients),
            "HAVEN_JEPSEN_CLIENTS must be 1..=32, not {clients}"
        );
        let seconds = env_u64("HAVEN_JEPSEN_SECONDS").unwrap_or(60);
        assert!(seconds >= 5, "HAVEN_JEPSEN_SECONDS must be at least 5");
        let seed = env::seed();
        Settings {
            members,
            clients,
            seconds,
            seed,
            keep: env_flag("HAVEN_JEPSEN_KEEP"),
            lease_reads: env_flag("HAVEN_JEPSEN_LEASE_READS"),
            faults: nemesis::fault_kinds(std::env::var("HAVEN_JEPSEN_FAULTS").ok().as_deref()),
            // Every client may contend for every key; 4 keys for 8 clients keep contention
            // high. At least one key per 4 clients: 16 clients on one key (every operation
            // concurrent with 15 others, commuting reads) overran the search budget although
            // the history was linearizable (a larger budget proved it).
            active_keys: (env_u64("HAVEN_JEPSEN_KEYS").unwrap_or(4) as usize)
                .clamp(clients.div_ceil(4), 64),
            ops_per_key: 400,
            request_timeout: Duration::from_millis(1000),
        }
    }
}

/// What a successful run measured.
pub struct Report {
    summary: history::Summary,
    faults: BTreeMap<String, u64>,
    injected: u64,
    keys: usize,
    applied: u64,
    check_time: Duration,
    load_time: Duration,
    total_time: Duration,
}

/// Run the whole test; panics (keeping the history) on any violation.
pub fn jepsen(settings: &Settings) {
    let started = Instant::now();
    println!(
        "jepsen: seed {} (replay with HAVEN_JEPSEN_SEED={}), {} members, {} clients, {} s of \
         load{}{}",
        settings.seed,
        settings.seed,
        settings.members,
        settings.clients,
        settings.seconds,
        if settings.lease_reads {
            ", lease reads"
        } else {
            ""
        },
        if settings.faults.len() < nemesis::FAULTS.len() {
            format!(", faults {:?}", settings.faults)
        } else {
            String::new()
        }
    );
    let history = Arc::new(History::new());
    let processes = Arc::new(Processes::default());
    let mut keeper = Keeper::create(
        "jepsen",
        settings.seed,
        settings.keep,
        Arc::clone(&history),
        Arc::clone(&processes),
        Box::new(|_| {}),
    );
    // Every phase has its own bound; this catches what they miss.
    let limit = env_u64("HAVEN_JEPSEN_WATCHDOG_SECONDS").unwrap_or(settings.seconds + 300);
    let _watchdog = Watchdog::start(
        Duration::from_secs(limit),
        settings.seed,
        Arc::clone(&processes),
        Arc::clone(&history),
        keeper.history_path(),
    );
    match phases(settings, keeper.dir(), &history, &processes) {
        Ok(mut report) => {
            keeper.succeeded();
            report.total_time = started.elapsed();
            print_report(settings, &report);
            if settings.keep {
                println!(
                    "jepsen: history kept at {}",
                    keeper.history_path().display()
                );
            }
        }
        Err(problems) => {
            let path = keeper.write_records();
            panic!(
                "jepsen: seed {} FAILED:\n{problems}\nhistory: {}",
                settings.seed,
                path.display()
            );
        }
    }
}

fn print_report(settings: &Settings, r: &Report) {
    let faults: Vec<String> = r.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("jepsen: {}", r.summary);
    println!(
        "jepsen: {} faults injected; nemesis events: {}",
        r.injected,
        faults.join(", ")
    );
    println!(
        "jepsen: {} keys read before and after the full restart; all {} members at applied \
         index {} with equal state hashes",
        r.keys, settings.members, r.applied
    );
    println!(
        "jepsen: load {:.1} s, linearizability check {:.2} s (budget {CHECK_BUDGET} steps per \
         key), total {:.1} s",
        r.load_time.as_secs_f64(),
        r.check_time.as_secs_f64(),
        r.total_time.as_secs_f64()
    );
}

/// The phases; every violation found is returned (the run goes on to collect them all).
fn phases(
    settings: &Settings,
    dir: &Path,
    history: &Arc<History>,
    processes: &Arc<Processes>,
) -> Result<Report, String> {
    let n = settings.members;
    let cluster = Cluster::start(
        n,
        dir,
        Arc::clone(processes),
        MemberOptions {
            lease_reads: settings.lease_reads,
        },
    );
    let leader = cluster.wait_for_agreed_leader(Duration::from_secs(30))?;
    history.nemesis("start", format!("{n} members up, n{} leads", leader + 1));

    // ----- load under faults -----
    let keys = Arc::new(Keys::new(settings.active_keys, settings.ops_per_key));
    let stop = Arc::new(AtomicBool::new(false));
    let mut problems: Vec<String> = Vec::new();
    let mut clients = Vec::new();
    for c in 0..settings.clients {
        // Spread first contacts over the members; half the clients move to the leader, the
        // others stay where they are and are forwarded.
        let client = cluster
            .client(c % n, c % 2 == 0, settings.request_timeout)
            .map_err(|e| format!("client {c} could not connect: {e}"))?;
        clients.push(ClientThread {
            client,
            rng: SplitMix64::new(settings.seed.wrapping_add(0x9e37_79b9 * (c as u64 + 1))),
            keys: Arc::clone(&keys),
            history: Arc::clone(history),
            stop: Arc::clone(&stop),
        });
    }
    let load_started = Instant::now();
    let (anomalies, nemesis_report) = std::thread::scope(|s| {
        // `scope` joins every thread before it lets a panic out: make sure they all stop.
        let _stop_on_panic = StopOnDrop(&stop);
        let handles: Vec<_> = clients
            .into_iter()
            .map(|t| s.spawn(move || workload::run_client(t)))
            .collect();
        let nemesis = s.spawn(|| {
            nemesis::run(
                &cluster,
                history,
                settings.seed,
                &settings.faults,
                nemesis::Pace::STEADY,
                &stop,
            )
        });
        let load_end = load_started + Duration::from_secs(settings.seconds);
        let mut next_progress = load_started + Duration::from_secs(10);
        // Bounded by the load duration.
        while Instant::now() < load_end {
            std::thread::sleep(Duration::from_millis(100));
            if Instant::now() >= next_progress {
                next_progress += Duration::from_secs(10);
                let s = history.summary();
                println!("jepsen: {:>5.1} s: {s}", history.elapsed_s());
            }
        }
        stop.store(true, Ordering::SeqCst);
        let mut anomalies = Vec::new();
        for h in handles {
            match h.join() {
                Ok(found) => anomalies.extend(found),
                Err(_) => anomalies.push("a client thread panicked".to_string()),
            }
        }
        let report = nemesis
            .join()
            .map_err(|_| "the nemesis thread panicked".to_string());
        (anomalies, report)
    });
    let load_time = load_started.elapsed();
    let nemesis_report = nemesis_report?;
    problems.extend(anomalies);

    // ----- heal, read every key -----
    let injected = nemesis_report.faults;
    let crashes = Mutex::new(nemesis_report.crashes);
    nemesis::watch_crashes(&cluster, history, &crashes);
    let restarted = cluster.heal_all();
    history.nemesis(
        "final-heal",
        format!("restarted {restarted:?} (member indexes)"),
    );
    cluster.wait_for_agreed_leader(Duration::from_secs(30))?;
    let all_keys = keys.all_keys();
    let before = read_all(&cluster, history, &keys, &all_keys)?;
    let before_restart = history.len();

    // ----- full restart, read every key again -----
    history.nemesis("kill-all", String::new());
    for i in 0..n {
        cluster.kill(i);
    }
    for i in 0..n {
        cluster.start_member(i);
    }
    history.nemesis("restart-all", String::new());
    cluster.wait_for_agreed_leader(Duration::from_secs(30))?;
    let after = read_all(&cluster, history, &keys, &all_keys)?;
    let events = history.events();
    if let Err(e) = check::check_restart_values(&events[..before_restart], &before, &after) {
        problems.push(format!("durability across the full restart:\n{e}"));
    }

    // ----- every member on one state -----
    let applied = match converge(&cluster, Duration::from_secs(30)) {
        Ok(applied) => applied,
        Err(e) => {
            problems.push(e);
            problems.push(compare_member_states(&cluster, dir));
            0
        }
    };
    nemesis::watch_crashes(&cluster, history, &crashes);
    problems.extend(crashes.into_inner().unwrap_or_else(|e| e.into_inner()));
    let (routed, unidentified) = cluster.routing();
    if routed < (n * (n - 1)) as u64 || !unidentified.is_empty() {
        problems.push(format!(
            "peer routing: {routed} peer connections went through their link's proxy; \
             unidentified connections: {unidentified:?}"
        ));
    }

    // ----- linearizability -----
    let check_started = Instant::now();
    let checked = history::check(&events, CHECK_BUDGET);
    let check_time = check_started.elapsed();
    if let Err(e) = checked {
        problems.push(format!("linearizability: {e}"));
    }

    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let mut faults = BTreeMap::new();
    for event in &events {
        if let history::Event::Nemesis { what, .. } = event {
            *faults.entry(what.clone()).or_insert(0) += 1;
        }
    }
    Ok(Report {
        summary: history::summarize(&events),
        faults,
        injected,
        keys: all_keys.len(),
        applied,
        check_time,
        load_time,
        total_time: Duration::ZERO,
    })
}

/// Sets the flag when dropped (also while unwinding).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Read every key through a client of the whole cluster, recording each attempt; retries a
/// key until it reads, for at most 60 s in all.
fn read_all(
    cluster: &Cluster,
    history: &History,
    keys: &Keys,
    all: &[u64],
) -> Result<Values, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        match cluster.client(0, true, Duration::from_secs(2)) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return Err(format!("final reads: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut values = Values::new();
    for &key in all {
        // Bounded by `deadline`.
        loop {
            let process = keys.new_process();
            history.invoke(process, key, Action::Read);
            let outcome = workload::execute(&client, key, Action::Read);
            history.complete(
                process,
                key,
                Action::Read,
                outcome.kind,
                outcome.message.clone(),
            );
            if let Some(a) = outcome.anomaly {
                return Err(a);
            }
            if let Kind::Ok(OpResult::Read(v)) = outcome.kind {
                values.insert(key, v);
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "final reads: key {key} could not be read within 60 s (last error: {}); \
                     {} of {} keys read",
                    outcome.message.unwrap_or_default(),
                    values.len(),
                    all.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(values)
}

/// Wait until every member reports the same applied index, then require equal state hashes.
/// The common applied index.
fn converge(cluster: &Cluster, timeout: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    // Bounded by `deadline`.
    loop {
        let mut seen = Vec::new();
        for i in 0..cluster.n {
            match cluster
                .member_client(i, Duration::from_secs(1))
                .and_then(|c| c.state_hash())
            {
                Ok((applied, hash)) => seen.push((i, applied.0, hash)),
                Err(e) => last = format!("member n{}: {e}", i + 1),
            }
        }
        if seen.len() == cluster.n {
            let applied = seen[0].1;
            if seen.iter().all(|s| s.1 == applied) {
                if seen.iter().all(|s| s.2 == seen[0].2) {
                    return Ok(applied);
                }
                let hashes: Vec<String> = seen
                    .iter()
                    .map(|(i, _, h)| format!("n{}: {}", i + 1, hex(h)))
                    .collect();
                return Err(format!(
                    "state divergence: every member applied index {applied} but their state \
                     hashes differ: {}",
                    hashes.join(", ")
                ));
            }
            let indexes: Vec<String> = seen
                .iter()
                .map(|(i, a, _)| format!("n{}: {a}", i + 1))
                .collect();
            last = format!("applied indexes differ: {}", indexes.join(", "));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the members did not reach one applied index within {timeout:?}: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Each member's key-value state as lines `key value create_revision mod_revision version`,
/// read locally (stale mode) from that member alone.
fn member_kv(cluster: &Cluster, i: usize) -> Result<Vec<String>, String> {
    let client = cluster
        .member_client(i, Duration::from_secs(5))
        .map_err(|e| format!("n{}: {e}", i + 1))?;
    let mut lines = Vec::new();
    let mut start: Vec<u8> = Vec::new();
    // Bounded: each page moves `start` past its last key; a member has finitely many keys.
    loop {
        let page = client
            .range_with(&start, None, 1000, haven::ReadMode::Stale)
            .map_err(|e| format!("n{}: {e}", i + 1))?;
        for kv in &page.entries {
            lines.push(format!(
                "{} {} {} {} {}",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.meta.create_revision.0,
                kv.meta.mod_revision.0,
                kv.meta.version
            ));
        }
        match page.entries.last() {
            Some(last) if page.more => {
                start = last.key.clone();
                start.push(0);
            }
            _ => return Ok(lines),
        }
    }
}

/// After a state-hash mismatch: write each member's key-value state to `nI.kv.txt` in `dir`
/// and say how they differ (the hash also covers the client table, which this cannot show).
fn compare_member_states(cluster: &Cluster, dir: &Path) -> String {
    let mut states = Vec::new();
    for i in 0..cluster.n {
        match member_kv(cluster, i) {
            Ok(lines) => {
                let _ = std::fs::write(dir.join(format!("n{}.kv.txt", i + 1)), lines.join("\n"));
                states.push(lines);
            }
            Err(e) => return format!("could not read every member's state: {e}"),
        }
    }
    let mut report = Vec::new();
    for i in 1..states.len() {
        let a: std::collections::BTreeSet<&String> = states[0].iter().collect();
        let b: std::collections::BTreeSet<&String> = states[i].iter().collect();
        let only_a: Vec<&&String> = a.difference(&b).take(5).collect();
        let only_b: Vec<&&String> = b.difference(&a).take(5).collect();
        report.push(format!(
            "n1 vs n{}: {} vs {} keys; {} lines only in n1 (first: {only_a:?}), {} only in n{} \
             (first: {only_b:?})",
            i + 1,
            states[0].len(),
            states[i].len(),
            a.difference(&b).count(),
            b.difference(&a).count(),
            i + 1
        ));
    }
    format!(
        "member states (key value create mod version, files nI.kv.txt):\n{}",
        report.join("\n")
    )
}
