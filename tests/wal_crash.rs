//! Crash test with real processes (design rule 1: an entry is acknowledged only after the
//! fdatasync of its record, and an acknowledged entry is never lost).
//!
//! The parent re-executes this binary as a child (`HAVEN_WAL_CRASH_CHILD` set). The child opens
//! the data directory and appends synced batches with recognizable payloads, sometimes
//! truncating its tail (a new leader) or compacting, and prints every acknowledgement. The
//! parent SIGKILLs it at a random moment, reopens the log and checks that every acknowledged
//! entry is there and intact, that nothing but whole records survived, and that the hard state
//! is at least the last acknowledged one. 25 rounds, each bounded in time; a guard kills and
//! reaps the child whatever happens.
//!
//! `harness = false` (see Cargo.toml): the child needs a `main` of its own.

#[path = "support/wal.rs"]
mod wal_common;

use haven::datadir::DataDir;
use haven::wal::{Wal, WalOptions, WriteBatch};
use haven::{ClusterId, Error, LogIndex, NodeId, Term};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wal_common::*;

const TEST_NAME: &str = "wal_crash_kill_9_never_loses_acknowledged_entries";
const CHILD_ENV: &str = "HAVEN_WAL_CRASH_CHILD";
const ROUNDS: u64 = 25;
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(10);
const TOTAL_BUDGET: Duration = Duration::from_secs(30);

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 64 * 1024,
        cache_bytes: 16 * 1024,
        ..WalOptions::default()
    }
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    if args.iter().any(|a| a == "--ignored") {
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out");
        return;
    }
    // Honour a name filter the way libtest does (`cargo test --test wal_crash some_filter`).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out");
        return;
    }
    println!("running 1 test");
    parent();
    println!("test {TEST_NAME} ... ok");
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}

/// Kills and reaps the child on every path out of a round, a failed assertion included.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the parent knows from the child's output.
#[derive(Default)]
struct Knowledge {
    /// Acknowledged entries still expected: index -> term.
    acked: BTreeMap<u64, u64>,
    /// Term and commit of the last acknowledged hard state.
    hard_state: (u64, u64),
    // For the summary line.
    torn_tails: u64,
    compactions: u64,
    truncations: u64,
    last_index: u64,
}

impl Knowledge {
    fn learn(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |k: usize| -> u64 { words[k].parse().unwrap() };
        match words.first().copied() {
            Some("ready") => {}
            // Submitted a batch that replaces entries >= from: they may vanish from now on.
            Some("trunc") => {
                let from = num(1);
                self.truncations += 1;
                self.acked.retain(|&i, _| i < from);
            }
            // Submitted a compaction: entries <= index may vanish from now on.
            Some("compact") => {
                let upto = num(1);
                self.compactions += 1;
                self.acked.retain(|&i, _| i > upto);
            }
            Some("ack") => {
                let (lo, hi, term, commit) = (num(1), num(2), num(3), num(4));
                self.acked.retain(|&i, _| i < lo);
                for i in lo..=hi {
                    self.acked.insert(i, term);
                }
                self.hard_state = (term, commit);
            }
            _ => panic!("unexpected line from the child: {line:?}"),
        }
    }
}

fn parent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0xC0FF_EE00_D15C);
    let mut known = Knowledge::default();
    let started = Instant::now();
    let mut rounds = 0;
    let mut acks_seen = 0usize;
    while rounds < ROUNDS && started.elapsed() < TOTAL_BUDGET {
        rounds += 1;
        let term = rounds;
        let child = Command::new(&exe)
            .env(CHILD_ENV, &root)
            .env("HAVEN_WAL_CRASH_TERM", term.to_string())
            .env("HAVEN_WAL_CRASH_SEED", rng.next().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut guard = ChildGuard(child);
        let stdout = guard.0.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    // Only whole lines count: a line cut by the kill acknowledged nothing.
                    Ok(n) if n > 0 && line.ends_with('\n') => {
                        if lines_tx.send(line).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        // Wait until the child has opened the log, then let it run for a random while.
        let first = lines_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the child did not start");
        assert_eq!(first.trim(), "ready");
        if rounds == 1 {
            // While the child holds the data directory, another process may not open it.
            match DataDir::open(&root, NodeId(1), ClusterId(1)) {
                Err(Error::DataDir(m)) => assert!(m.contains("locked"), "{m}"),
                other => panic!("second opener across processes: expected DataDir, got {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(250)));
        drop(guard); // SIGKILL + reap.
        reader.join().unwrap();
        for line in lines_rx.try_iter() {
            if line.starts_with("ack") {
                acks_seen += 1;
            }
            known.learn(line.trim());
        }
        verify(&root, &mut known, rounds);
    }
    eprintln!(
        "wal_crash: {rounds} rounds, {acks_seen} acknowledged batches, {torn_tails} torn tails \
         cut, {compactions} compactions, {truncations} truncations, last index {last_index}",
        torn_tails = known.torn_tails,
        compactions = known.compactions,
        truncations = known.truncations,
        last_index = known.last_index,
    );
    assert!(
        rounds >= 10,
        "only {rounds} rounds ran within the time budget"
    );
    assert!(
        acks_seen >= 50,
        "the child acknowledged only {acks_seen} batches in all"
    );
}

fn verify(root: &Path, known: &mut Knowledge, round: u64) {
    let dd = DataDir::open(root, NodeId(1), ClusterId(1)).unwrap();
    let (wal, report) = Wal::open(dd.wal_dir(), options())
        .unwrap_or_else(|e| panic!("round {round}: the log does not open after kill -9: {e}"));
    // Every entry present is whole and intact, contiguous, with terms never decreasing.
    let all = read_all(&wal);
    for pair in all.windows(2) {
        assert!(
            pair[0].term <= pair[1].term,
            "round {round}: terms decrease"
        );
    }
    // Every acknowledged entry is there with its term.
    if let Some((&max, _)) = known.acked.last_key_value() {
        assert!(
            wal.last_index() >= LogIndex(max),
            "round {round}: acknowledged entry {max} lost (last index {}, report {report:?})",
            wal.last_index()
        );
    }
    for (&index, &term) in &known.acked {
        assert_eq!(
            wal.term(LogIndex(index)).unwrap(),
            Some(Term(term)),
            "round {round}: acknowledged entry {index} (term {term}) lost or replaced"
        );
    }
    known.torn_tails += u64::from(report.torn_tail.is_some());
    known.last_index = wal.last_index().0;
    let hs = wal.hard_state();
    assert!(
        (hs.term.0, hs.commit.0) >= known.hard_state,
        "round {round}: hard state {hs:?} older than the acknowledged {:?}",
        known.hard_state
    );
}

/// The child: append until killed (or until its lifetime runs out).
fn child(root: &Path) {
    let term: u64 = std::env::var("HAVEN_WAL_CRASH_TERM")
        .unwrap()
        .parse()
        .unwrap();
    let seed: u64 = std::env::var("HAVEN_WAL_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let mut rng = Rng(seed | 1);
    let dd = DataDir::open(root, NodeId(1), ClusterId(1)).unwrap();
    let (wal, _) = Wal::open(dd.wal_dir(), options()).unwrap();
    let out = std::io::stdout();
    let say = |line: String| {
        let mut out = out.lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    say("ready".into());
    let started = Instant::now();
    let mut commit = wal.hard_state().commit.0;
    let mut batches = 0u64;
    while started.elapsed() < CHILD_MAX_LIFETIME {
        batches += 1;
        let last = wal.last_index().0;
        // Sometimes a new leader replaces the uncommitted tail.
        let mut lo = last + 1;
        if batches == 1 && rng.below(3) == 0 && last > commit + 1 {
            lo = last - rng.below((last - commit).min(5));
            lo = lo.max(commit + 1);
            say(format!("trunc {lo}"));
        }
        let count = 1 + rng.below(20);
        let hi = lo + count - 1;
        let len = 10 + rng.below(1500) as usize;
        commit = commit.max(lo.saturating_sub(4));
        let batch = WriteBatch {
            entries: entries(lo, hi, term, len),
            hard_state: Some(hard_state(term, commit)),
            ..WriteBatch::default()
        };
        if batches % 40 == 0 && commit > 300 {
            let upto = commit - 200;
            say(format!("compact {upto}"));
            let t = wal.term(LogIndex(upto)).unwrap().unwrap();
            wal.write(WriteBatch {
                compact_to: Some((LogIndex(upto), t)),
                ..WriteBatch::default()
            })
            .unwrap();
        }
        if rng.below(2) == 0 {
            wal.write(batch).unwrap();
        } else {
            // Through the writer thread rather than on this thread.
            let (tx, rx) = mpsc::channel();
            wal.submit(batch, Box::new(move |r| tx.send(r).unwrap()));
            rx.recv().unwrap().unwrap();
        }
        say(format!("ack {lo} {hi} {term} {commit}"));
    }
}
