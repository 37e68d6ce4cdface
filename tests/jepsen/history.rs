//! The history of a run: every client operation as an invocation and a completion, and every
//! nemesis action, on ONE clock (nanoseconds since the test started, strictly increasing).
//!
//! Events are appended under one mutex and stamped while it is held, so the order of the list
//! is the order of the clock, as in a Jepsen history. A client invokes, sends, then completes:
//! the real effect of an operation lies between its two stamps.
//!
//! The file format is text, one event per line, fields separated by single spaces:
//!
//! ```text
//! TIME_NS PROCESS TYPE F KEY ARGS... [RESULT] [# message]
//! 000000123456789 p3 invoke write k7 1234
//! 000000123999001 p3 ok write k7 1234
//! 000000124000000 p4 invoke cas k7 1234 1300
//! 000000125000000 p4 ok cas k7 1234 1300 true
//! 000000126000000 p5 invoke read k7
//! 000000127000000 p5 ok read k7 1300        (nil: the key is absent)
//! 000000128000000 p6 info write k7 1301 # timeout: ...
//! 000000129000000 nemesis info kill n2 # what the nemesis did
//! ```
//!
//! `parse` reads it back, so a kept history can be checked again (`HAVEN_JEPSEN_HISTORY`).

use crate::lincheck::{self, Completion, Op, OpResult, Operation};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// What an invocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read a key.
    Read,
    /// Write a (unique) value.
    Write(u64),
    /// If the key holds `expected`, store `new` (unique).
    Cas {
        /// The value the key must hold.
        expected: u64,
        /// The value to store.
        new: u64,
    },
}

/// The type of an event, Jepsen's `:type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The operation starts.
    Invoke,
    /// It took effect, with this result.
    Ok(OpResult),
    /// It did not take effect (`Unavailable`).
    Fail,
    /// Unknown: it may have taken effect (`Timeout` and every other error).
    Info,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client operation's invocation or completion.
    Client {
        /// Nanoseconds since the test started.
        time_ns: u64,
        /// The process.
        process: u64,
        /// Invoke, ok, fail or info.
        kind: Kind,
        /// The key.
        key: u64,
        /// The operation.
        action: Action,
        /// Why it failed or is unknown.
        message: Option<String>,
    },
    /// Something the nemesis (or the final phases) did to the cluster.
    Nemesis {
        /// Nanoseconds since the test started.
        time_ns: u64,
        /// A word: `kill`, `pause`, `partition`, `heal`, ...
        what: String,
        /// Details (targets, groups).
        detail: String,
    },
}

impl Event {
    /// The event's time stamp.
    pub fn time_ns(&self) -> u64 {
        match self {
            Event::Client { time_ns, .. } | Event::Nemesis { time_ns, .. } => *time_ns,
        }
    }
}

/// The shared, append-only history of a run.
pub struct History {
    start: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    events: Vec<Event>,
    last_ns: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                events: Vec::new(),
                last_ns: 0,
            }),
        }
    }

    /// Append an event built from its time stamp (taken under the lock, strictly increasing).
    fn push(&self, build: impl FnOnce(u64) -> Event) -> u64 {
        let mut inner = lock(&self.inner);
        let elapsed = self.start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let time_ns = elapsed.max(inner.last_ns + 1);
        inner.last_ns = time_ns;
        inner.events.push(build(time_ns));
        time_ns
    }

    /// Record that `process` invokes `action` on `key`.
    pub fn invoke(&self, process: u64, key: u64, action: Action) {
        self.push(|time_ns| Event::Client {
            time_ns,
            process,
            kind: Kind::Invoke,
            key,
            action,
            message: None,
        });
    }

    /// Record how the operation `process` invoked last ended.
    pub fn complete(
        &self,
        process: u64,
        key: u64,
        action: Action,
        kind: Kind,
        message: Option<String>,
    ) {
        self.push(|time_ns| Event::Client {
            time_ns,
            process,
            kind,
            key,
            action,
            message,
        });
    }

    /// Record a nemesis action.
    pub fn nemesis(&self, what: &str, detail: String) {
        self.push(|time_ns| Event::Nemesis {
            time_ns,
            what: what.to_string(),
            detail,
        });
    }

    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.inner).events.clone()
    }

    /// How many events so far.
    pub fn len(&self) -> usize {
        lock(&self.inner).events.len()
    }

    /// The counts so far (without copying the events).
    pub fn summary(&self) -> Summary {
        summarize(&lock(&self.inner).events)
    }

    /// Nanoseconds since the clock started, read without appending an event (for records
    /// kept beside the history, so they can be lined up with it).
    #[allow(dead_code)] // tests/jepsen_locks.rs
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
    }

    /// Seconds since the clock started (for progress lines).
    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

// ----- the text format -----

fn action_words(action: Action) -> (&'static str, String) {
    match action {
        Action::Read => ("read", String::new()),
        Action::Write(v) => ("write", format!(" {v}")),
        Action::Cas { expected, new } => ("cas", format!(" {expected} {new}")),
    }
}

/// One event as one line (no newline).
pub fn format_event(event: &Event) -> String {
    let mut line = String::new();
    match event {
        Event::Client {
            time_ns,
            process,
            kind,
            key,
            action,
            message,
        } => {
            let kind_word = match kind {
                Kind::Invoke => "invoke",
                Kind::Ok(_) => "ok",
                Kind::Fail => "fail",
                Kind::Info => "info",
            };
            let (f, args) = action_words(*action);
            let _ = write!(line, "{time_ns:015} p{process} {kind_word} {f} k{key}");
            match (action, kind) {
                // A read's argument is its result.
                (Action::Read, Kind::Ok(OpResult::Read(v))) => match v {
                    Some(v) => {
                        let _ = write!(line, " {v}");
                    }
                    None => line.push_str(" nil"),
                },
                (Action::Cas { .. }, Kind::Ok(OpResult::Cas(swapped))) => {
                    let _ = write!(line, "{args} {swapped}");
                }
                _ => line.push_str(&args),
            }
            if let Some(m) = message {
                let _ = write!(line, " # {}", m.replace('\n', " "));
            }
        }
        Event::Nemesis {
            time_ns,
            what,
            detail,
        } => {
            let _ = write!(line, "{time_ns:015} nemesis info {what}");
            if !detail.is_empty() {
                let _ = write!(line, " # {}", detail.replace('\n', " "));
            }
        }
    }
    line
}

/// Write `events` to `path`, one line each.
pub fn write_file(path: &Path, events: &[Event]) -> std::io::Result<()> {
    let mut text = String::with_capacity(events.len() * 48);
    for event in events {
        text.push_str(&format_event(event));
        text.push('\n');
    }
    std::fs::write(path, text)
}

/// Parse one line written by [`format_event`].
pub fn parse_event(line: &str) -> Result<Event, String> {
    let (fields, message) = match line.split_once(" # ") {
        Some((f, m)) => (f, Some(m.to_string())),
        None => (line, None),
    };
    let words: Vec<&str> = fields.split(' ').filter(|w| !w.is_empty()).collect();
    let bad = || format!("history line {line:?} does not parse");
    let num = |w: Option<&&str>| -> Result<u64, String> {
        w.and_then(|w| w.parse().ok()).ok_or_else(bad)
    };
    let time_ns = num(words.first())?;
    let process = *words.get(1).ok_or_else(bad)?;
    if process == "nemesis" {
        let what = words.get(3).ok_or_else(bad)?.to_string();
        return Ok(Event::Nemesis {
            time_ns,
            what,
            detail: message.unwrap_or_default(),
        });
    }
    let process = process
        .strip_prefix('p')
        .and_then(|p| p.parse().ok())
        .ok_or_else(bad)?;
    let key = words
        .get(4)
        .and_then(|k| k.strip_prefix('k'))
        .and_then(|k| k.parse().ok())
        .ok_or_else(bad)?;
    let kind_word = *words.get(2).ok_or_else(bad)?;
    let (action, result) = match *words.get(3).ok_or_else(bad)? {
        "read" => {
            let result = match words.get(5) {
                Some(&"nil") => Some(OpResult::Read(None)),
                Some(v) => Some(OpResult::Read(Some(v.parse().map_err(|_| bad())?))),
                None => None,
            };
            (Action::Read, result)
        }
        "write" => (Action::Write(num(words.get(5))?), Some(OpResult::Written)),
        "cas" => {
            let action = Action::Cas {
                expected: num(words.get(5))?,
                new: num(words.get(6))?,
            };
            let result = match words.get(7) {
                Some(&"true") => Some(OpResult::Cas(true)),
                Some(&"false") => Some(OpResult::Cas(false)),
                Some(_) => return Err(bad()),
                None => None,
            };
            (action, result)
        }
        _ => return Err(bad()),
    };
    let kind = match kind_word {
        "invoke" => Kind::Invoke,
        "ok" => Kind::Ok(result.ok_or_else(bad)?),
        "fail" => Kind::Fail,
        "info" => Kind::Info,
        _ => return Err(bad()),
    };
    Ok(Event::Client {
        time_ns,
        process,
        kind,
        key,
        action,
        message,
    })
}

/// Read a history file.
pub fn read_file(path: &Path) -> Result<Vec<Event>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_event)
        .collect()
}

// ----- to the checker -----

/// Pair every invocation with its completion and turn the client operations into the
/// checker's operations. An invocation without a completion (the run was cut short) is
/// unknown. Reads that failed or whose outcome is unknown are kept here; the checker ignores
/// them (they change nothing).
pub fn operations(events: &[Event]) -> Result<Vec<Operation>, String> {
    let mut open: HashMap<u64, (u64, u64, Action)> = HashMap::new();
    let mut ops = Vec::new();
    for event in events {
        let Event::Client {
            time_ns,
            process,
            kind,
            key,
            action,
            ..
        } = event
        else {
            continue;
        };
        if *kind == Kind::Invoke {
            if let Some(previous) = open.insert(*process, (*time_ns, *key, *action)) {
                return Err(format!(
                    "process {process} invoked at {time_ns} while its operation invoked at {} \
                     is still open",
                    previous.0
                ));
            }
            continue;
        }
        let Some((invoked, invoked_key, invoked_action)) = open.remove(process) else {
            return Err(format!(
                "process {process} completes at {time_ns} without an invocation"
            ));
        };
        if invoked_key != *key || invoked_action != *action {
            return Err(format!(
                "process {process}: completion at {time_ns} does not match its invocation"
            ));
        }
        let completion = match kind {
            Kind::Ok(result) => Completion::Ok(*result),
            Kind::Fail => Completion::Fail,
            Kind::Info => Completion::Info,
            Kind::Invoke => unreachable!("handled above"),
        };
        ops.push(operation(
            *process, *key, *action, invoked, *time_ns, completion,
        ));
    }
    for (process, (invoked, key, action)) in open {
        ops.push(operation(
            process,
            key,
            action,
            invoked,
            invoked,
            Completion::Info,
        ));
    }
    Ok(ops)
}

fn operation(
    process: u64,
    key: u64,
    action: Action,
    invoked: u64,
    completed: u64,
    completion: Completion,
) -> Operation {
    Operation {
        process,
        key,
        op: match action {
            Action::Read => Op::Read,
            Action::Write(v) => Op::Write(v),
            Action::Cas { expected, new } => Op::Cas(expected, new),
        },
        invoked,
        completed,
        completion,
    }
}

/// Check a history: each key's operations must be linearizable within `budget` search steps
/// (an exceeded budget is a failure).
pub fn check(events: &[Event], budget: u64) -> Result<(), String> {
    let ops = operations(events)?;
    lincheck::check(&ops, budget).map_err(|e| e.to_string())
}

/// ok/fail/info counts of one operation type.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Completed with a result.
    pub ok: u64,
    /// Not applied.
    pub fail: u64,
    /// Unknown.
    pub info: u64,
}

/// What a history holds, for the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Reads.
    pub read: Counts,
    /// Writes.
    pub write: Counts,
    /// Compare-and-swaps that swapped or lost (both ok), failed or unknown.
    pub cas: Counts,
    /// Compare-and-swaps that completed without swapping.
    pub cas_lost: u64,
    /// Nemesis events.
    pub nemesis: u64,
    /// Distinct keys.
    pub keys: u64,
}

/// Count what `events` hold.
pub fn summarize(events: &[Event]) -> Summary {
    let mut summary = Summary::default();
    let mut keys = std::collections::HashSet::new();
    for event in events {
        match event {
            Event::Nemesis { .. } => summary.nemesis += 1,
            Event::Client {
                kind, key, action, ..
            } => {
                keys.insert(*key);
                let counts = match action {
                    Action::Read => &mut summary.read,
                    Action::Write(_) => &mut summary.write,
                    Action::Cas { .. } => &mut summary.cas,
                };
                match kind {
                    Kind::Invoke => {}
                    Kind::Ok(result) => {
                        counts.ok += 1;
                        if *result == OpResult::Cas(false) {
                            summary.cas_lost += 1;
                        }
                    }
                    Kind::Fail => counts.fail += 1,
                    Kind::Info => counts.info += 1,
                }
            }
        }
    }
    summary.keys = keys.len() as u64;
    summary
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = |c: &Counts| format!("{}/{}/{}", c.ok, c.fail, c.info);
        write!(
            f,
            "ok/fail/info: read {} write {} cas {} (cas ok without swap: {}); keys {}; nemesis \
             events {}",
            c(&self.read),
            c(&self.write),
            c(&self.cas),
            self.cas_lost,
            self.keys,
            self.nemesis
        )
    }
}
