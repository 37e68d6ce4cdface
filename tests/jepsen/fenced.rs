//! The fenced counter: client threads take one lock, read a counter, and write it back
//! incremented in a transaction whose only compare is `LockHeld { lock, token }`.
//!
//! The lock's fence alone must make each read-increment-write atomic: a write is applied only
//! while its grant is current, grants of one lock do not overlap in the log, and the holder
//! read the counter after its grant. There is deliberately no compare on the counter's value
//! (it would hide a broken fence behind a compare-and-swap). Each write also puts a log key
//! `fenced/log/COUNT` (written once per count if nothing is doubled) and, in the same
//! transaction, gets the counter as it was just before the write (a value other than the one
//! the holder read is an interleaving caught in the act).
//!
//! Each stored value is a [`Stamp`]: the count, the token of the grant that wrote it, and the
//! attempt's id. One increment per grant, so the tokens of successive counts must strictly
//! increase.
//!
//! Some attempts *stall* between the read and the write: the client drops its session handle
//! (its keepalives stop, as in a process paused past its TTL), waits until a linearizable read
//! says the session is gone and (for 5 s at most) until another holder has
//! incremented the counter, and only then sends its fenced write, which must be refused: were
//! it applied, the other holder's increment would be lost and the count written twice.

use crate::history::History;
use haven::client::{LockWait, Session, SessionState};
use haven::raft::rng::SplitMix64;
use haven::sm::{Compare, LockMode, Txn, TxnOp, TxnOpResult};
use haven::{Client, ErrorCode};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The lock every client takes.
pub const LOCK: &[u8] = b"fenced/lock";
/// The counter it protects.
pub const COUNTER: &[u8] = b"fenced/counter";
/// The prefix of the log keys, one per count.
pub const LOG_PREFIX: &[u8] = b"fenced/log/";

/// The log key of `count`.
pub fn log_key(count: u64) -> Vec<u8> {
    format!("fenced/log/{count:010}").into_bytes()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the counter and each log key hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The count after this write.
    pub count: u64,
    /// The fencing token of the grant that wrote it.
    pub token: u64,
    /// The attempt that wrote it.
    pub attempt: u64,
}

impl Stamp {
    /// `COUNT TOKEN ATTEMPT` as text.
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {} {}", self.count, self.token, self.attempt).into_bytes()
    }

    /// A stored value back to a stamp.
    pub fn decode(bytes: &[u8]) -> Result<Stamp, String> {
        let bad = || format!("a stored value is not a stamp this test wrote: {bytes:?}");
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let words: Vec<u64> = text
            .split(' ')
            .map(|w| w.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match words[..] {
            [count, token, attempt] => Ok(Stamp {
                count,
                token,
                attempt,
            }),
            _ => Err(bad()),
        }
    }
}

fn show(stamp: Option<Stamp>) -> String {
    stamp.map_or_else(
        || "nil".into(),
        |s| {
            format!(
                "(count {} token {} attempt {})",
                s.count, s.token, s.attempt
            )
        },
    )
}

/// How an attempt's fenced write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; the counter just before the write, as the transaction's get saw it.
    Ok {
        /// The counter the write replaced.
        before: Option<Stamp>,
    },
    /// The compare failed: the grant was no longer current. Not applied.
    Rejected,
    /// `Unavailable`: not applied.
    Failed(String),
    /// Timeout or any other error: may have been applied, now or later.
    Unknown(String),
}

/// Whether (and how far) an attempt stalled between its read and its write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// It wrote right after reading.
    No,
    /// It dropped its session and waited, but no read confirmed the session's end in time.
    Waited,
    /// It dropped its session and a linearizable read said the session was gone before the
    /// write was sent: the write must not apply.
    SessionGone,
    /// Like `SessionGone`, and a read also showed that another holder had incremented the
    /// counter since: were the write applied, it would lose that increment.
    Overtaken,
}

impl Stall {
    /// Whether the holder's session was known to be gone before its write.
    pub fn stale(self) -> bool {
        matches!(self, Stall::SessionGone | Stall::Overtaken)
    }
}

/// One fenced write: what the holder read and wrote, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Unique in the run.
    pub id: u64,
    /// The client thread.
    pub process: u64,
    /// The session the lock was held through.
    pub session: u64,
    /// The grant's fencing token.
    pub token: u64,
    /// The counter the holder read after its grant (`None`: absent, count 0).
    pub read: Option<Stamp>,
    /// Whether it stalled.
    pub stall: Stall,
    /// When the write was sent and when its answer came (the history's clock).
    pub invoked_ns: u64,
    /// See `invoked_ns`.
    pub completed_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl Attempt {
    /// The count this attempt writes.
    pub fn count(&self) -> u64 {
        self.read.map_or(0, |r| r.count) + 1
    }

    /// What it writes.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            count: self.count(),
            token: self.token,
            attempt: self.id,
        }
    }

    /// One line for the kept record.
    pub fn format(&self) -> String {
        let mut line = format!(
            "{:015} {:015} p{} a{} s{} token {} read {} write {} stall {:?} ",
            self.invoked_ns,
            self.completed_ns,
            self.process,
            self.id,
            self.session,
            self.token,
            show(self.read),
            self.count(),
            self.stall,
        );
        let _ = match &self.outcome {
            Outcome::Ok { before } => write!(line, "ok before {}", show(*before)),
            Outcome::Rejected => write!(line, "rejected"),
            Outcome::Failed(m) => write!(line, "fail # {}", m.replace('\n', " ")),
            Outcome::Unknown(m) => write!(line, "info # {}", m.replace('\n', " ")),
        };
        line
    }
}

/// A stored value with its version (writes since creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The stamp.
    pub stamp: Stamp,
    /// 1 if written once.
    pub version: u64,
}

/// The counter and the log keys read after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Final {
    /// The counter (`None`: absent).
    pub counter: Option<Stored>,
    /// The log keys by count.
    pub log: BTreeMap<u64, Stored>,
}

/// What a correct history adds up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attempts acknowledged (applied).
    pub ok: u64,
    /// Refused by the fence.
    pub rejected: u64,
    /// Not applied (`Unavailable`).
    pub failed: u64,
    /// Outcome unknown.
    pub unknown: u64,
    /// Unknown ones that did apply.
    pub unknown_applied: u64,
    /// Attempts that stalled with their session confirmed gone, and of those, refused.
    pub stale: u64,
    /// See `stale`.
    pub stale_rejected: u64,
    /// Stale holders that wrote after another holder had incremented the counter.
    pub overtaken: u64,
    /// The final count.
    pub count: u64,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "final count {} = {} acknowledged + {} of {} unknown; {} rejected by the fence, {} \
             failed; {} stale holders (session gone before the write, {} of them after another \
             holder's increment), {} of them rejected",
            self.count,
            self.ok,
            self.unknown_applied,
            self.unknown,
            self.rejected,
            self.failed,
            self.stale,
            self.overtaken,
            self.stale_rejected
        )
    }
}

/// Check the attempts against the final state: every count from 1 to the final one written
/// exactly once (no increment doubled), by an attempt that was acknowledged or of unknown
/// outcome, with the token and count that attempt wrote; every acknowledged attempt's write
/// still there (no increment lost) and made on the value it read; tokens strictly increasing
/// with the count; and no write of a holder whose session was known to be gone.
pub fn check(attempts: &[Attempt], last: &Final) -> Result<Tally, String> {
    let mut problems: Vec<String> = Vec::new();
    let mut by_id: HashMap<u64, &Attempt> = HashMap::new();
    for a in attempts {
        if by_id.insert(a.id, a).is_some() {
            problems.push(format!("attempt id {} recorded twice", a.id));
        }
    }
    let mut tally = Tally::default();
    for a in attempts {
        match &a.outcome {
            Outcome::Ok { .. } => tally.ok += 1,
            Outcome::Rejected => tally.rejected += 1,
            Outcome::Failed(_) => tally.failed += 1,
            Outcome::Unknown(_) => tally.unknown += 1,
        }
        if a.stall.stale() {
            tally.stale += 1;
            if a.outcome == Outcome::Rejected {
                tally.stale_rejected += 1;
            }
        }
        if a.stall == Stall::Overtaken {
            tally.overtaken += 1;
        }
    }

    // The log: counts 1..=N, each written once by an attempt that may have applied.
    let top = last.log.keys().next_back().copied().unwrap_or(0);
    tally.count = top;
    if last.log.len() as u64 != top {
        let missing: Vec<u64> = (1..=top).filter(|n| !last.log.contains_key(n)).collect();
        problems.push(format!(
            "log keys are not 1..={top}: counts {missing:?} missing (an increment skipped)"
        ));
    }
    let mut writer_of: HashMap<u64, u64> = HashMap::new();
    for (&n, stored) in &last.log {
        let s = stored.stamp;
        if stored.version != 1 {
            problems.push(format!(
                "count {n} was written {} times (an increment doubled); the last write: {}",
                stored.version,
                show(Some(s))
            ));
        }
        if s.count != n {
            problems.push(format!("log key of count {n} holds {}", show(Some(s))));
        }
        if let Some(other) = writer_of.insert(s.attempt, n) {
            problems.push(format!(
                "attempt {} wrote counts {other} and {n} (an increment doubled)",
                s.attempt
            ));
        }
        let Some(a) = by_id.get(&s.attempt) else {
            problems.push(format!(
                "count {n} written by attempt {}, which no client made",
                s.attempt
            ));
            continue;
        };
        if a.stamp() != s {
            problems.push(format!(
                "count {n} holds {} but attempt {} wrote {}",
                show(Some(s)),
                a.id,
                show(Some(a.stamp()))
            ));
        }
        match &a.outcome {
            Outcome::Ok { .. } => {}
            Outcome::Unknown(_) => tally.unknown_applied += 1,
            Outcome::Rejected | Outcome::Failed(_) => problems.push(format!(
                "count {n}: attempt {} was applied although it was answered {:?}",
                a.id, a.outcome
            )),
        }
        if a.stall.stale() {
            problems.push(format!(
                "count {n}: attempt {} (token {}) was applied although a linearizable read had \
                 said its session was gone before the write was sent: a stale token accepted",
                a.id, a.token
            ));
        }
    }
    // Tokens strictly increase with the count.
    let mut previous: Option<(u64, u64)> = None;
    for (&n, stored) in &last.log {
        if let Some((pn, pt)) = previous {
            if stored.stamp.token <= pt {
                problems.push(format!(
                    "count {n} has token {} after count {pn}'s token {pt}: tokens must strictly \
                     increase (a former holder's write was accepted)",
                    stored.stamp.token
                ));
            }
        }
        previous = Some((n, stored.stamp.token));
    }
    // The counter is the last log entry.
    let expected = last.log.values().next_back().map(|s| s.stamp);
    if last.counter.map(|c| c.stamp) != expected {
        problems.push(format!(
            "the counter holds {} but the last log entry is {}",
            show(last.counter.map(|c| c.stamp)),
            show(expected)
        ));
    }
    if let Some(c) = last.counter {
        if c.version != top {
            problems.push(format!(
                "the counter was written {} times for {top} counts",
                c.version
            ));
        }
    }
    // Every acknowledged increment is there, made on the value its holder read.
    for a in attempts {
        let Outcome::Ok { before } = &a.outcome else {
            continue;
        };
        if writer_of.get(&a.id) != Some(&a.count()) {
            problems.push(format!(
                "attempt {} (token {}) was acknowledged writing count {} but count {} holds {}: \
                 an acknowledged increment lost",
                a.id,
                a.token,
                a.count(),
                a.count(),
                show(last.log.get(&a.count()).map(|s| s.stamp))
            ));
        }
        if *before != a.read {
            problems.push(format!(
                "attempt {} (token {}) read {} after its grant but its fenced write replaced {}: \
                 another write came between the holder's read and its write",
                a.id,
                a.token,
                show(a.read),
                show(*before)
            ));
        }
    }
    if tally.count < tally.ok || tally.count > tally.ok + tally.unknown {
        problems.push(format!(
            "final count {} outside [{} acknowledged, {} acknowledged + unknown]",
            tally.count,
            tally.ok,
            tally.ok + tally.unknown
        ));
    }
    if problems.is_empty() {
        Ok(tally)
    } else {
        problems.truncate(50);
        Err(problems.join("\n"))
    }
}

/// The attempts of a run, on the history's clock.
pub struct Attempts {
    history: Arc<History>,
    list: Mutex<Vec<Attempt>>,
    next_id: AtomicU64,
}

impl Attempts {
    /// Empty; times from `history`'s clock.
    pub fn new(history: Arc<History>) -> Attempts {
        Attempts {
            history,
            list: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// A fresh attempt id.
    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// A copy of every attempt so far.
    pub fn all(&self) -> Vec<Attempt> {
        lock(&self.list).clone()
    }

    /// How many so far, and how many acknowledged.
    pub fn counts(&self) -> (usize, usize) {
        let list = lock(&self.list);
        let ok = list
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Ok { .. }))
            .count();
        (list.len(), ok)
    }

    /// Write every attempt to `path`, one line each.
    pub fn write_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut text = String::new();
        for a in lock(&self.list).iter() {
            text.push_str(&a.format());
            text.push('\n');
        }
        std::fs::write(path, text)
    }
}

/// One client thread.
pub struct FencedClient {
    /// Its own client.
    pub client: Client,
    /// Its process number (for the record).
    pub process: u64,
    /// Its random stream (which attempts stall).
    pub rng: SplitMix64,
    /// Stall one attempt in this many (0: never, by chance).
    pub stall_one_in: u64,
    /// Stall the first attempt whatever the chance says.
    pub stall_first: bool,
    /// The TTL of its sessions.
    pub ttl: Duration,
    /// How long it waits for the lock.
    pub lock_wait: Duration,
    /// The shared record.
    pub attempts: Arc<Attempts>,
    /// Set when the phase ends.
    pub stop: Arc<AtomicBool>,
    /// Stop after this many acknowledged increments.
    pub max_ok: u64,
}

/// Ends a session the client gives up on (its lock or wait may be left in an unknown state): a
/// revoke releases them at once; if the revoke fails too, the session expires after its TTL.
fn abandon(session: &mut Option<Session>) {
    if let Some(s) = session.take() {
        let _ = s.revoke();
    }
}

/// Wait (bounded) until a linearizable read says session `id` is gone.
fn wait_session_gone(client: &Client, id: haven::sm::SessionId, stop: &AtomicBool) -> bool {
    // A silent session ends within TTL + a checkpoint interval + an election; faults may hold
    // it longer, and then the attempt is recorded as `Stall::Waited`.
    let deadline = Instant::now() + Duration::from_secs(8);
    // Bounded by `deadline`.
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        if let Ok(None) = client.session_info(id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Wait (bounded) until the counter moved past `read`: another holder incremented it.
fn wait_counter_moved(client: &Client, read: Option<Stamp>, stop: &AtomicBool) -> bool {
    // Other holders are usually queued on the lock and increment within milliseconds of the
    // session's end; the bound only matters under faults (or with one client).
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = read.map_or(0, |r| r.count);
    // Bounded by `deadline`.
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        if let Ok(Some(v)) = client.get(COUNTER) {
            if Stamp::decode(&v.value).is_ok_and(|now| now.count > seen) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The fenced write of `attempt`'s stamp under grant `token`.
pub fn fenced_write(client: &Client, token: haven::sm::FencingToken, stamp: Stamp) -> Outcome {
    let txn = Txn {
        compares: vec![Compare::LockHeld {
            name: LOCK.to_vec(),
            token,
        }],
        success: vec![
            TxnOp::Get {
                key: COUNTER.to_vec(),
            },
            TxnOp::Put {
                key: COUNTER.to_vec(),
                value: stamp.encode(),
            },
            TxnOp::Put {
                key: log_key(stamp.count),
                value: stamp.encode(),
            },
        ],
        failure: vec![],
    };
    match client.txn(&txn) {
        Ok(r) if r.succeeded => match r.results.first() {
            Some(TxnOpResult::Get(v)) => {
                match v.as_ref().map(|v| Stamp::decode(&v.value)).transpose() {
                    Ok(before) => Outcome::Ok { before },
                    Err(e) => Outcome::Unknown(format!("anomaly: {e}")),
                }
            }
            other => Outcome::Unknown(format!("anomaly: the txn's get answered {other:?}")),
        },
        Ok(_) => Outcome::Rejected,
        Err(e) if e.code() == ErrorCode::Unavailable => Outcome::Failed(e.to_string()),
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

/// Run attempts until `stop` or `max_ok` acknowledged ones; the anomalies seen (answers no
/// correct cluster gives).
pub fn run_client(mut t: FencedClient) -> Vec<String> {
    let mut anomalies = Vec::new();
    let mut session: Option<Session> = None;
    let mut ok = 0;
    let mut first = true;
    // Bounded: every call ends by its deadline; `stop` ends the loop.
    while !t.stop.load(Ordering::SeqCst) && ok < t.max_ok {
        if session
            .as_ref()
            .is_some_and(|s| s.state() == SessionState::Lost)
        {
            session = None;
        }
        let s = match &session {
            Some(s) => s.clone(),
            None => match t.client.grant_session(t.ttl) {
                Ok(s) => {
                    session = Some(s.clone());
                    s
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let session_id = s.id().0;
        let guard = match t.client.lock(
            LOCK,
            LockMode::Exclusive,
            &s,
            LockWait::Deadline(t.lock_wait),
        ) {
            Ok(Some(g)) => g,
            Ok(None) => continue,
            Err(_) => {
                // Expired, or the wait's cancel did not get through (it may be granted later).
                drop(s);
                abandon(&mut session);
                continue;
            }
        };
        let read = match t.client.get(COUNTER) {
            Ok(v) => match v.map(|v| Stamp::decode(&v.value)).transpose() {
                Ok(read) => read,
                Err(e) => {
                    anomalies.push(e);
                    continue;
                }
            },
            Err(_) => {
                drop(guard);
                continue;
            }
        };
        let stall_draw = t.stall_one_in > 0 && t.rng.chance(1, t.stall_one_in);
        let stall = if stall_draw || (t.stall_first && first) {
            // Stop keeping the session alive, as a paused process would.
            let id = s.id();
            drop(s);
            session = None;
            if !wait_session_gone(&t.client, id, &t.stop) {
                Stall::Waited
            } else if wait_counter_moved(&t.client, read, &t.stop) {
                Stall::Overtaken
            } else {
                Stall::SessionGone
            }
        } else {
            drop(s);
            Stall::No
        };
        first = false;
        let mut attempt = Attempt {
            id: t.attempts.new_id(),
            process: t.process,
            session: session_id,
            token: guard.token().0,
            read,
            stall,
            invoked_ns: t.attempts.history.now_ns(),
            completed_ns: 0,
            outcome: Outcome::Rejected,
        };
        attempt.outcome = fenced_write(&t.client, guard.token(), attempt.stamp());
        attempt.completed_ns = t.attempts.history.now_ns();
        if let Outcome::Unknown(m) = &attempt.outcome {
            if m.starts_with("anomaly: ") {
                anomalies.push(format!("attempt {}: {m}", attempt.id));
            }
        }
        let outcome = attempt.outcome.clone();
        lock(&t.attempts.list).push(attempt);
        match outcome {
            Outcome::Ok { .. } => {
                ok += 1;
                if guard.unlock().is_err() {
                    abandon(&mut session);
                }
            }
            Outcome::Rejected | Outcome::Failed(_) if stall == Stall::No => {
                if guard.unlock().is_err() {
                    abandon(&mut session);
                }
            }
            // The session was dropped, or the write may still be in flight: release everything
            // this session held.
            _ => {
                drop(guard);
                abandon(&mut session);
            }
        }
    }
    abandon(&mut session);
    anomalies
}
