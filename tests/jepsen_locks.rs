//! Jepsen-style tests of locks with fencing tokens, on real `haven serve` processes (the
//! harness of `tests/jepsen/`).
//!
//! - `fenced_counter_under_kills_pauses_and_partitions`: client threads increment a counter
//!   under one lock with fenced writes (`tests/jepsen/fenced.rs`) while the nemesis kills,
//!   pauses and partitions members; then a heal, a full restart and a few more increments
//!   (one of them by a holder whose session is gone). No increment may be lost or doubled,
//!   the tokens of successive counts must strictly increase, and no stale holder's write may
//!   apply. About 30 s of load (`HAVEN_JEPSEN_LOCK_SECONDS`), `HAVEN_JEPSEN_LOCK_CLIENTS`
//!   (default 5), `HAVEN_JEPSEN_MEMBERS`, `HAVEN_JEPSEN_FAULTS`, `HAVEN_JEPSEN_KEEP=1` as in
//!   `tests/jepsen.rs`; the seed is printed and `HAVEN_JEPSEN_SEED` replays its schedule.
//! - `sigstopped_holder_loses_the_lock_and_its_fenced_write_is_rejected`: a child process
//!   (this binary, `HAVEN_JEPSEN_LOCK_CHILD` set) takes the lock and is SIGSTOPped; its session
//!   expires, the lock passes on, the new holder writes; the child, resumed, sends its fenced
//!   write with its old token and must be refused.
//! - The checker's own tests: correct histories pass; a lost, a doubled, a stale write fail.
//!
//! `harness = false` (see Cargo.toml): the child needs a `main` of its own. The runner below
//! takes name filters, `--exact`, `--skip NAME` and `--list` like libtest.

#[path = "support/lincheck.rs"]
mod lincheck;
#[path = "support/proxy.rs"]
mod proxy;

#[allow(dead_code)] // the linearizability run (tests/jepsen.rs) uses the rest of these
#[path = "jepsen/cluster.rs"]
mod cluster;
#[path = "jepsen/env.rs"]
mod env;
#[path = "jepsen/fenced.rs"]
mod fenced;
#[allow(dead_code)]
#[path = "jepsen/history.rs"]
mod history;
#[path = "jepsen/keeper.rs"]
mod keeper;
#[allow(dead_code)]
#[path = "jepsen/nemesis.rs"]
mod nemesis;
#[allow(dead_code)]
#[path = "jepsen/router.rs"]
mod router;
#[path = "jepsen/watchdog.rs"]
mod watchdog;

use cluster::{Cluster, MemberOptions, Processes};
use fenced::{Attempt, Attempts, FencedClient, Final, Outcome, Stall, Stamp, Stored};
use haven::client::LockWait;
use haven::raft::rng::SplitMix64;
use haven::sm::{Compare, LockMode, Txn, TxnOp};
use haven::{Client, ClientOptions, ReadMode};
use history::History;
use keeper::Keeper;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use watchdog::Watchdog;

const CHILD_ENV: &str = "HAVEN_JEPSEN_LOCK_CHILD";

type TestFn = fn();

const TESTS: &[(&str, TestFn)] = &[
    (
        "fenced_checker_accepts_histories_correct_by_construction",
        fenced_checker_accepts_histories_correct_by_construction,
    ),
    (
        "fenced_checker_rejects_lost_doubled_and_stale_writes",
        fenced_checker_rejects_lost_doubled_and_stale_writes,
    ),
    (
        "sigstopped_holder_loses_the_lock_and_its_fenced_write_is_rejected",
        sigstopped_holder_loses_the_lock_and_its_fenced_write_is_rejected,
    ),
    (
        "fenced_counter_under_kills_pauses_and_partitions",
        fenced_counter_under_kills_pauses_and_partitions,
    ),
];

fn main() {
    if let Ok(addrs) = std::env::var(CHILD_ENV) {
        std::process::exit(child(&addrs));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters: Vec<&str> = Vec::new();
    let mut skips: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--skip" => {
                skips.extend(args.get(i + 1).map(String::as_str));
                i += 1;
            }
            // libtest options that take a value.
            "--test-threads" | "--logfile" | "--format" | "--color" | "-Z" => i += 1,
            _ if !a.starts_with('-') => filters.push(a),
            _ => {}
        }
        i += 1;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let matches = |name: &str, f: &str| if exact { name == f } else { name.contains(f) };
    let selected: Vec<&(&str, TestFn)> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| matches(name, s)))
        .collect();
    let filtered_out = TESTS.len() - selected.len();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return;
    }
    if args.iter().any(|a| a == "--ignored") {
        println!(
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {} filtered out",
            TESTS.len()
        );
        return;
    }
    println!("running {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        println!("test {name} ...");
        let started = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => println!(
                "test {name} ... ok ({:.1} s)",
                started.elapsed().as_secs_f64()
            ),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "test result: {}. {} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered \
         out",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        std::process::exit(101);
    }
}

// ----- the checker's own tests -----

/// Attempts and a final state correct by construction: grants in token order, each attempt
/// applied (acknowledged, or unknown and applied) on the value before it, or not applied
/// (rejected, failed, unknown and lost), some stale holders refused.
fn correct_history(seed: u64, n: u64) -> (Vec<Attempt>, Final) {
    let mut rng = SplitMix64::new(seed);
    let mut attempts = Vec::new();
    let mut last = Final::default();
    let mut current: Option<Stamp> = None;
    let mut token = 10;
    for id in 1..=n {
        token += 1 + rng.below(4);
        let roll = rng.below(20);
        let stall = match roll {
            0 => Stall::SessionGone,
            1 => Stall::Overtaken,
            2 => Stall::Waited,
            _ => Stall::No,
        };
        // A stale holder read a while ago: maybe an older value.
        let read = current;
        let (outcome, applied) = match roll {
            0 | 1 => (Outcome::Rejected, false),
            2 => (Outcome::Failed("unavailable".into()), false),
            3 => (Outcome::Unknown("timeout".into()), true),
            4 => (Outcome::Unknown("timeout".into()), false),
            _ => (Outcome::Ok { before: read }, true),
        };
        let a = Attempt {
            id,
            process: id % 5,
            session: 1000 + id,
            token,
            read,
            stall,
            invoked_ns: id * 10,
            completed_ns: id * 10 + 5,
            outcome,
        };
        if applied {
            let stamp = a.stamp();
            last.log.insert(stamp.count, Stored { stamp, version: 1 });
            current = Some(stamp);
            last.counter = Some(Stored {
                stamp,
                version: stamp.count,
            });
        }
        attempts.push(a);
    }
    (attempts, last)
}

fn fenced_checker_accepts_histories_correct_by_construction() {
    for seed in 0..40 {
        let (attempts, last) = correct_history(seed, 60);
        let tally = fenced::check(&attempts, &last)
            .unwrap_or_else(|e| panic!("seed {seed}: a correct history rejected:\n{e}"));
        assert!(
            tally.ok > 20 && tally.count >= tally.ok,
            "seed {seed}: {tally}"
        );
    }
    // Empty: nothing written, nothing acknowledged.
    assert!(fenced::check(&[], &Final::default()).is_ok());
}

/// The highest count written by an acknowledged attempt, and that attempt's index.
fn last_acknowledged(attempts: &[Attempt], last: &Final) -> (u64, usize) {
    let (count, stored) = last
        .log
        .iter()
        .rev()
        .find(|(_, s)| {
            attempts
                .iter()
                .any(|a| a.id == s.stamp.attempt && matches!(a.outcome, Outcome::Ok { .. }))
        })
        .expect("an acknowledged write");
    let index = attempts
        .iter()
        .position(|a| a.id == stored.stamp.attempt)
        .expect("its attempt");
    (*count, index)
}

fn assert_rejected(result: Result<fenced::Tally, String>, words: &str, what: &str, seed: u64) {
    match result {
        Ok(tally) => panic!("seed {seed}: {what} accepted: {tally}"),
        Err(e) => assert!(
            e.contains(words),
            "seed {seed}: {what} rejected, but not for {words:?}:\n{e}"
        ),
    }
}

fn fenced_checker_rejects_lost_doubled_and_stale_writes() {
    for seed in 0..20 {
        let (attempts, last) = correct_history(seed, 60);
        assert!(fenced::check(&attempts, &last).is_ok(), "seed {seed}");
        let (n, index) = last_acknowledged(&attempts, &last);

        // Lost: the last acknowledged increment (and what followed it) is gone.
        let mut lost = last.clone();
        lost.log.retain(|&c, _| c < n);
        lost.counter = lost.log.values().next_back().map(|s| Stored {
            stamp: s.stamp,
            version: s.stamp.count,
        });
        assert_rejected(
            fenced::check(&attempts, &lost),
            "acknowledged increment lost",
            "a lost increment",
            seed,
        );

        // Lost by an overwrite: a later holder wrote the same count again.
        let mut overwritten = last.clone();
        if let Some(s) = overwritten.log.get_mut(&n) {
            s.version = 2;
        }
        assert_rejected(
            fenced::check(&attempts, &overwritten),
            "written 2 times",
            "a count written twice",
            seed,
        );

        // Doubled: the last write applied twice (a retried increment counted again).
        let mut doubled = last.clone();
        let top = *doubled.log.keys().next_back().expect("a write");
        let again = Stamp {
            count: top + 1,
            ..doubled.log[&top].stamp
        };
        doubled.log.insert(
            top + 1,
            Stored {
                stamp: again,
                version: 1,
            },
        );
        doubled.counter = Some(Stored {
            stamp: again,
            version: top + 1,
        });
        assert_rejected(
            fenced::check(&attempts, &doubled),
            "an increment doubled",
            "a doubled increment",
            seed,
        );

        // A former holder's write accepted after a newer grant's: the token goes down.
        let mut stale = attempts.clone();
        let mut stale_last = last.clone();
        let previous_token = stale_last
            .log
            .range(..n)
            .next_back()
            .map_or(0, |(_, s)| s.stamp.token);
        stale[index].token = previous_token.saturating_sub(1);
        let stamp = stale[index].stamp();
        stale_last.log.insert(n, Stored { stamp, version: 1 });
        if top == n {
            stale_last.counter = Some(Stored {
                stamp,
                version: top,
            });
        }
        assert_rejected(
            fenced::check(&stale, &stale_last),
            "tokens must strictly increase",
            "a decreasing token",
            seed,
        );

        // A holder known to have lost its session had its write applied.
        let mut gone = attempts.clone();
        gone[index].stall = Stall::SessionGone;
        assert_rejected(
            fenced::check(&gone, &last),
            "stale token accepted",
            "a write after the session ended",
            seed,
        );

        // A write answered "rejected" was applied.
        let mut refused = attempts.clone();
        refused[index].outcome = Outcome::Rejected;
        assert_rejected(
            fenced::check(&refused, &last),
            "applied although it was answered",
            "a rejected write applied",
            seed,
        );

        // Interleaved: the holder's write replaced a value other than the one it read.
        let mut interleaved = attempts.clone();
        interleaved[index].outcome = Outcome::Ok {
            before: Some(Stamp {
                count: n,
                token: 1,
                attempt: 999_999,
            }),
        };
        assert_rejected(
            fenced::check(&interleaved, &last),
            "between the holder's read and its write",
            "an interleaved write",
            seed,
        );
    }
}

// ----- a holder paused past its TTL -----

/// The child: take the lock, say so, wait for the parent's word (it is SIGSTOPped meanwhile),
/// then send the fenced write with the old token and say how it ended. Exit 0 once the outcome
/// is printed, 2 on any other failure.
fn child(addrs: &str) -> i32 {
    match child_steps(addrs) {
        Ok(()) => 0,
        Err(e) => {
            println!("child-error {e}");
            2
        }
    }
}

fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn child_steps(addrs: &str) -> Result<(), String> {
    let addrs: Vec<&str> = addrs.split(',').collect();
    let client = Client::connect(
        &addrs,
        cluster::CLUSTER,
        &cluster::secret(),
        ClientOptions {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            read_mode: ReadMode::Linearizable,
            prefer_leader: true,
            tls: None,
        },
    )
    .map_err(|e| format!("connect: {e}"))?;
    let session = client
        .grant_session(PAUSE_TTL)
        .map_err(|e| format!("grant: {e}"))?;
    let guard = client
        .lock(
            fenced::LOCK,
            LockMode::Exclusive,
            &session,
            LockWait::Deadline(Duration::from_secs(20)),
        )
        .map_err(|e| format!("lock: {e}"))?
        .ok_or("the lock was not granted within 20 s")?;
    let read = client
        .get(fenced::COUNTER)
        .map_err(|e| format!("read: {e}"))?
        .map(|v| Stamp::decode(&v.value))
        .transpose()?;
    say(&format!("holding {} {}", session.id().0, guard.token().0))?;
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("stdin: {e}"))?;
    if line.trim() != "write" {
        return Err(format!("expected \"write\" on stdin, got {line:?}"));
    }
    say(&format!("session {:?}", session.state()))?;
    let stamp = Stamp {
        count: read.map_or(0, |r| r.count) + 1,
        token: guard.token().0,
        attempt: 1,
    };
    let result = match fenced::fenced_write(&client, guard.token(), stamp) {
        Outcome::Ok { .. } => "fenced-write applied".to_string(),
        Outcome::Rejected => "fenced-write rejected".to_string(),
        Outcome::Failed(m) | Outcome::Unknown(m) => format!("fenced-write error {m}"),
    };
    say(&result)
}

/// The child's session TTL (the minimum: the test waits about this long for it to expire).
const PAUSE_TTL: Duration = Duration::from_millis(1_000);

/// The child process: resumed (if stopped), SIGKILLed and reaped on every path out.
struct ChildGuard {
    child: Child,
    stopped: bool,
}

impl ChildGuard {
    fn signal(&mut self, signal: i32) {
        // SAFETY: signalling our own child, not reaped yet (its pid is still ours).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        self.stopped = signal == libc::SIGSTOP;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.stopped {
            self.signal(libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next line of the child's stdout, within `timeout`; panics with `what` and the lines
/// seen so far otherwise.
fn next_line(lines: &mpsc::Receiver<String>, seen: &mut Vec<String>, what: &str) -> String {
    match lines.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => {
            seen.push(line.clone());
            if line.starts_with("child-error") {
                panic!("the child failed while {what}: {seen:?}");
            }
            line
        }
        Err(_) => panic!("no line from the child while {what} within 30 s; so far: {seen:?}"),
    }
}

fn sigstopped_holder_loses_the_lock_and_its_fenced_write_is_rejected() {
    let dir = tempfile::Builder::new()
        .prefix("jepsen-sigstop")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let processes = Arc::new(Processes::default());
    let cluster = Cluster::start(
        3,
        dir.path(),
        Arc::clone(&processes),
        MemberOptions { lease_reads: false },
    );
    cluster
        .wait_for_agreed_leader(Duration::from_secs(30))
        .unwrap();
    let client = cluster.client(0, true, Duration::from_secs(2)).unwrap();
    let addrs: Vec<String> = cluster.addrs.iter().map(ToString::to_string).collect();
    let child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, addrs.join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard {
        child,
        stopped: false,
    };
    let stdout = child.child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    // Ends when the child's stdout closes (the guard kills it at the latest).
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let holding = next_line(&lines, &mut seen, "taking the lock");
    let (old_session, old_token) = match holding.split(' ').collect::<Vec<_>>()[..] {
        ["holding", s, t] => (s.parse::<u64>().unwrap(), t.parse::<u64>().unwrap()),
        _ => panic!("unexpected line from the child: {holding:?}"),
    };
    assert!(client
        .check_token(fenced::LOCK, haven::sm::FencingToken(old_token))
        .unwrap());

    // Paused past its TTL: its keepalives stop with it, its session expires, the lock passes.
    child.signal(libc::SIGSTOP);
    // A longer TTL than the child's: this holder must not lose the lock to a slow machine.
    let session = client.grant_session(Duration::from_secs(10)).unwrap();
    let guard = client
        .lock(
            fenced::LOCK,
            LockMode::Exclusive,
            &session,
            LockWait::Deadline(Duration::from_secs(30)),
        )
        .unwrap()
        .expect("the lock passes on once the paused holder's session expires");
    assert!(
        guard.token().0 > old_token,
        "new token {} after {old_token}",
        guard.token().0
    );
    assert_eq!(
        client
            .session_info(haven::sm::SessionId(old_session))
            .unwrap(),
        None,
        "the paused holder's session ended"
    );
    assert!(!client
        .check_token(fenced::LOCK, haven::sm::FencingToken(old_token))
        .unwrap());
    let mine = Stamp {
        count: 1,
        token: guard.token().0,
        attempt: 2,
    };
    let written = client
        .txn(&Txn {
            compares: vec![Compare::LockHeld {
                name: fenced::LOCK.to_vec(),
                token: guard.token(),
            }],
            success: vec![TxnOp::Put {
                key: fenced::COUNTER.to_vec(),
                value: mine.encode(),
            }],
            failure: vec![],
        })
        .unwrap();
    assert!(written.succeeded, "the new holder's fenced write");

    // Resumed, the old holder sends its write with the old token: refused where the data is.
    child.signal(libc::SIGCONT);
    child
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"write\n")
        .unwrap();
    let state = next_line(&lines, &mut seen, "reporting its session");
    assert!(state.starts_with("session "), "{seen:?}");
    let outcome = next_line(&lines, &mut seen, "sending its fenced write");
    assert_eq!(
        outcome, "fenced-write rejected",
        "the paused holder's late write (token {old_token}) must be refused; child said {seen:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the child did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "child exit {status}; it said {seen:?}");
    let counter = client.get(fenced::COUNTER).unwrap().expect("the counter");
    assert_eq!(Stamp::decode(&counter.value), Ok(mine));
    assert_eq!(
        counter.meta.version, 1,
        "written once: by the new holder only"
    );
    // Still the holder: the old holder's attempt changed nothing.
    guard.unlock().unwrap();
    println!(
        "sigstop: the paused holder's token {old_token} refused after the lock passed to \
         token {}; child said {seen:?}",
        mine.token
    );
    processes.kill_all();
}

// ----- the fenced counter under faults -----

/// What the run does, from the environment.
struct Settings {
    members: usize,
    clients: usize,
    seconds: u64,
    seed: u64,
    keep: bool,
    faults: Vec<&'static str>,
}

impl Settings {
    fn from_env() -> Settings {
        let members = env::env_u64("HAVEN_JEPSEN_MEMBERS").unwrap_or(3) as usize;
        assert!(
            members == 3 || members == 5,
            "HAVEN_JEPSEN_MEMBERS must be 3 or 5, not {members}"
        );
        let clients = env::env_u64("HAVEN_JEPSEN_LOCK_CLIENTS").unwrap_or(5) as usize;
        assert!(
            (1..=32).contains(&clients),
            "HAVEN_JEPSEN_LOCK_CLIENTS must be 1..=32, not {clients}"
        );
        let seconds = env::env_u64("HAVEN_JEPSEN_LOCK_SECONDS").unwrap_or(30);
        assert!(seconds >= 5, "HAVEN_JEPSEN_LOCK_SECONDS must be at least 5");
        Settings {
            members,
            clients,
            seconds,
            seed: env::seed(),
            keep: env::env_flag("HAVEN_JEPSEN_KEEP"),
            faults: nemesis::fault_kinds(std::env::var("HAVEN_JEPSEN_FAULTS").ok().as_deref()),
        }
    }
}

/// Faults and heals of 1-2.5 s: several of each in a short run, most longer than the 1 s
/// session TTL (sessions expire across them).
const PACE: nemesis::Pace = nemesis::Pace {
    quiet: Duration::from_secs(1),
    window_min_ms: 1_000,
    window_spread_ms: 1_500,
};
/// Session TTL of the clients (the minimum: expiries happen under the faults).
const TTL: Duration = Duration::from_millis(1_000);
/// One attempt in this many stalls under the faults (each stall holds the lock for about a
/// TTL and a checkpoint interval).
const STALL_ONE_IN: u64 = 500;
/// Acknowledged increments of the first client after the full restart (its first attempt
/// stalls).
const AFTER_RESTART_OK: u64 = 3;

/// Sets the flag when dropped (also while unwinding).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn fenced_counter_under_kills_pauses_and_partitions() {
    let s = Settings::from_env();
    let started = Instant::now();
    println!(
        "jepsen-locks: seed {} (replay with HAVEN_JEPSEN_SEED={}), {} members, {} clients, {} s \
         of load{}",
        s.seed,
        s.seed,
        s.members,
        s.clients,
        s.seconds,
        if s.faults.len() < nemesis::FAULTS.len() {
            format!(", faults {:?}", s.faults)
        } else {
            String::new()
        }
    );
    let history = Arc::new(History::new());
    let attempts = Arc::new(Attempts::new(Arc::clone(&history)));
    let processes = Arc::new(Processes::default());
    let records = Arc::clone(&attempts);
    let mut keeper = Keeper::create(
        "jepsen-locks",
        s.seed,
        s.keep,
        Arc::clone(&history),
        Arc::clone(&processes),
        Box::new(move |dir| {
            let a = dir.join("fenced.txt");
            if let Err(e) = records.write_file(&a) {
                eprintln!("jepsen-locks: could not write {}: {e}", a.display());
            }
        }),
    );
    let _watchdog = Watchdog::start(
        Duration::from_secs(s.seconds + 240),
        s.seed,
        Arc::clone(&processes),
        Arc::clone(&history),
        keeper.history_path(),
    );
    match phases(&s, keeper.dir(), &history, &attempts, &processes) {
        Ok(tally) => {
            keeper.succeeded();
            println!("jepsen-locks: {tally}");
            println!(
                "jepsen-locks: {} nemesis events; total {:.1} s",
                history.len(),
                started.elapsed().as_secs_f64()
            );
        }
        Err(problems) => {
            keeper.write_records();
            panic!(
                "jepsen-locks: seed {} FAILED (replay with HAVEN_JEPSEN_SEED={}):\n{problems}\n\
                 records in {}",
                s.seed,
                s.seed,
                keeper.dir().display()
            );
        }
    }
}

/// Client threads running attempts until `stop` (or each has `max_ok` acknowledged).
#[allow(clippy::too_many_arguments)]
fn clients(
    cluster: &Cluster,
    s: &Settings,
    attempts: &Arc<Attempts>,
    stop: &Arc<AtomicBool>,
    phase: u64,
    stall_one_in: u64,
) -> Result<Vec<FencedClient>, String> {
    (0..s.clients)
        .map(|c| {
            let client = cluster
                .client(c % cluster.n, c % 2 == 0, Duration::from_millis(1_000))
                .map_err(|e| format!("client {c} could not connect: {e}"))?;
            let process = phase * 100 + c as u64;
            Ok(FencedClient {
                client,
                process,
                rng: SplitMix64::new(s.seed.wrapping_add(0x9e37_79b9 * (process + 1))),
                stall_one_in,
                // After the restart, one holder stalls for sure: a stale write with no fault
                // around it.
                stall_first: phase == 1 && c == 0,
                ttl: TTL,
                lock_wait: Duration::from_secs(5),
                attempts: Arc::clone(attempts),
                stop: Arc::clone(stop),
                // After the restart the first client's attempts end the phase; the others
                // contend until then.
                max_ok: if phase == 1 && c == 0 {
                    AFTER_RESTART_OK
                } else {
                    u64::MAX
                },
            })
        })
        .collect()
}

/// Run the client threads (and the nemesis, if given a schedule) until `until`, or until the
/// first client is done; the anomalies and the nemesis's report.
fn load(
    threads: Vec<FencedClient>,
    cluster: &Cluster,
    history: &History,
    attempts: &Attempts,
    nemesis: Option<&Settings>,
    stop: &AtomicBool,
    until: Instant,
) -> (Vec<String>, Option<nemesis::NemesisReport>) {
    std::thread::scope(|scope| {
        let _stop_on_panic = StopOnDrop(stop);
        let handles: Vec<_> = threads
            .into_iter()
            .map(|t| scope.spawn(move || fenced::run_client(t)))
            .collect();
        let nemesis = nemesis.map(|s| {
            scope.spawn(move || nemesis::run(cluster, history, s.seed, &s.faults, PACE, stop))
        });
        let mut next_progress = Instant::now() + Duration::from_secs(10);
        // Bounded by `until`.
        while Instant::now() < until && !handles.first().is_some_and(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if Instant::now() >= next_progress {
                next_progress += Duration::from_secs(10);
                let (n, ok) = attempts.counts();
                println!(
                    "jepsen-locks: {:>5.1} s: {n} fenced writes, {ok} acknowledged",
                    history.elapsed_s()
                );
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
        let report = nemesis.map(|n| {
            n.join().unwrap_or_else(|_| nemesis::NemesisReport {
                faults: 0,
                crashes: vec!["the nemesis thread panicked".into()],
            })
        });
        (anomalies, report)
    })
}

fn phases(
    s: &Settings,
    dir: &Path,
    history: &Arc<History>,
    attempts: &Arc<Attempts>,
    processes: &Arc<Processes>,
) -> Result<fenced::Tally, String> {
    let n = s.members;
    let cluster = Cluster::start(
        n,
        dir,
        Arc::clone(processes),
        MemberOptions { lease_reads: false },
    );
    let leader = cluster.wait_for_agreed_leader(Duration::from_secs(30))?;
    history.nemesis("start", format!("{n} members up, n{} leads", leader + 1));
    let mut problems = Vec::new();

    // ----- load under faults -----
    let stop = Arc::new(AtomicBool::new(false));
    let threads = clients(&cluster, s, attempts, &stop, 0, STALL_ONE_IN)?;
    let (anomalies, report) = load(
        threads,
        &cluster,
        history,
        attempts,
        Some(s),
        &stop,
        Instant::now() + Duration::from_secs(s.seconds),
    );
    problems.extend(anomalies);
    let report = report.expect("the nemesis ran");
    problems.extend(report.crashes);
    let under_faults = attempts.counts();

    // ----- heal, restart the whole cluster: tokens keep growing across it -----
    let restarted = cluster.heal_all();
    history.nemesis("final-heal", format!("restarted {restarted:?}"));
    cluster.wait_for_agreed_leader(Duration::from_secs(30))?;
    history.nemesis("kill-all", String::new());
    for i in 0..n {
        cluster.kill(i);
    }
    for i in 0..n {
        cluster.start_member(i);
    }
    history.nemesis("restart-all", String::new());
    cluster.wait_for_agreed_leader(Duration::from_secs(30))?;

    // ----- a few increments without faults, one by a holder whose session is gone -----
    let stop = Arc::new(AtomicBool::new(false));
    let threads = clients(&cluster, s, attempts, &stop, 1, 0)?;
    let (anomalies, _) = load(
        threads,
        &cluster,
        history,
        attempts,
        None,
        &stop,
        Instant::now() + Duration::from_secs(30),
    );
    problems.extend(anomalies);
    let crashes = std::sync::Mutex::new(Vec::new());
    nemesis::watch_crashes(&cluster, history, &crashes);
    problems.extend(crashes.into_inner().unwrap_or_else(|e| e.into_inner()));

    // ----- read the counter and the log, check -----
    let last = read_final(&cluster)?;
    let all = attempts.all();
    println!(
        "jepsen-locks: {} fenced writes under faults ({} acknowledged), {} in all; {} faults",
        under_faults.0,
        under_faults.1,
        all.len(),
        report.faults
    );
    match fenced::check(&all, &last) {
        Ok(tally) => {
            let after_restart = all
                .iter()
                .filter(|a| a.process >= 100 && matches!(a.outcome, Outcome::Ok { .. }))
                .count();
            if under_faults.1 == 0 || after_restart == 0 {
                problems.push(format!(
                    "too little happened to check: {} increments acknowledged under faults, \
                     {after_restart} after the restart",
                    under_faults.1
                ));
            }
            // After the restart the first client's first holder stalls while the others
            // contend: with two clients or more, another holder's increment comes before its
            // write.
            let exercised = if s.clients >= 2 {
                tally.overtaken
            } else {
                tally.stale
            };
            if exercised == 0 {
                problems.push(
                    "no stale holder's fenced write after another holder's increment: the \
                     fence was not exercised"
                        .into(),
                );
            }
            if problems.is_empty() {
                return Ok(tally);
            }
        }
        Err(e) => problems.push(e),
    }
    Err(problems.join("\n"))
}

/// The counter and every log key, read linearizably (retried for up to 30 s).
fn read_final(cluster: &Cluster) -> Result<Final, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_error = String::new();
    // Bounded by `deadline`.
    while Instant::now() < deadline {
        match cluster
            .client(0, true, Duration::from_secs(2))
            .map_err(|e| e.to_string())
            .and_then(|c| try_read_final(&c))
        {
            Ok(f) => return Ok(f),
            Err(e) => last_error = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("final read: {last_error}"))
}

fn try_read_final(client: &Client) -> Result<Final, String> {
    let stored = |value: &[u8], version| -> Result<Stored, String> {
        Ok(Stored {
            stamp: Stamp::decode(value)?,
            version,
        })
    };
    let mut last = Final {
        counter: client
            .get(fenced::COUNTER)
            .map_err(|e| e.to_string())?
            .map(|v| stored(&v.value, v.meta.version))
            .transpose()?,
        log: Default::default(),
    };
    let end = haven::sm::prefix_end(fenced::LOG_PREFIX);
    let mut start = fenced::LOG_PREFIX.to_vec();
    // Bounded: every page moves `start` past its last key.
    loop {
        let page = client
            .range(&start, end.as_deref(), 1_000)
            .map_err(|e| e.to_string())?;
        for kv in &page.entries {
            let count = std::str::from_utf8(&kv.key[fenced::LOG_PREFIX.len()..])
                .ok()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("a log key this test did not write: {:?}", kv.key))?;
            last.log.insert(count, stored(&kv.value, kv.meta.version)?);
        }
        match page.entries.last() {
            Some(kv) if page.more => {
                start = kv.key.clone();
                start.push(0);
            }
            _ => return Ok(last),
        }
    }
}
