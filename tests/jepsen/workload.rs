//! The client workload: threads issuing random reads, writes and compare-and-swaps on a small
//! set of active keys, each operation recorded in the history.
//!
//! Every written value is unique in the run (one counter), so a read names the write it saw.
//! A key is retired after `ops_per_key` operations were issued on it and a fresh key takes its
//! slot: contention stays high (every client may hit every active key) while each key's
//! sub-history stays short enough for the linearizability search.

use crate::history::{Action, History, Kind};
use crate::lincheck::OpResult;
use haven::raft::rng::SplitMix64;
use haven::sm::CasResult;
use haven::{Client, ErrorCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bytes of key number `key`.
pub fn key_bytes(key: u64) -> Vec<u8> {
    format!("jepsen/{key}").into_bytes()
}

/// The bytes of value `value`.
pub fn value_bytes(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// A stored value back to its number.
pub fn parse_value(bytes: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("a stored value is not one this test wrote: {bytes:?}"))
}

struct Slot {
    key: u64,
    issued: u64,
    /// The last value some client saw in this key (a good guess for a CAS).
    last_seen: Option<u64>,
}

/// The active keys and the allocators of keys, values and process numbers.
pub struct Keys {
    slots: Mutex<Vec<Slot>>,
    next_key: AtomicU64,
    next_value: AtomicU64,
    next_process: AtomicU64,
    ops_per_key: u64,
}

impl Keys {
    /// `active` keys at a time, each retired after `ops_per_key` operations.
    pub fn new(active: usize, ops_per_key: u64) -> Keys {
        let slots = (0..active as u64)
            .map(|key| Slot {
                key,
                issued: 0,
                last_seen: None,
            })
            .collect();
        Keys {
            slots: Mutex::new(slots),
            next_key: AtomicU64::new(active as u64),
            next_value: AtomicU64::new(1),
            next_process: AtomicU64::new(0),
            ops_per_key,
        }
    }

    /// A fresh process number.
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::SeqCst)
    }

    /// A value never written before.
    pub fn new_value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::SeqCst)
    }

    /// Every key used so far.
    pub fn all_keys(&self) -> Vec<u64> {
        (0..self.next_key.load(Ordering::SeqCst)).collect()
    }

    /// Pick an active key for one more operation: the key and the last value seen in it.
    fn pick(&self, rng: &mut SplitMix64) -> (u64, Option<u64>) {
        let mut slots = lock(&self.slots);
        let i = rng.below(slots.len() as u64) as usize;
        let slot = &mut slots[i];
        let picked = (slot.key, slot.last_seen);
        slot.issued += 1;
        if slot.issued >= self.ops_per_key {
            *slot = Slot {
                key: self.next_key.fetch_add(1, Ordering::SeqCst),
                issued: 0,
                last_seen: None,
            };
        }
        picked
    }

    fn saw(&self, key: u64, value: u64) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.iter_mut().find(|s| s.key == key) {
            slot.last_seen = Some(value);
        }
    }
}

/// The outcome of one call, as the history records it.
pub struct Outcome {
    /// ok (with the result), fail or info.
    pub kind: Kind,
    /// The error, for fail and info.
    pub message: Option<String>,
    /// Something no correct cluster can answer (a value this test never wrote, a CAS that
    /// failed although the key held the expected value).
    pub anomaly: Option<String>,
}

fn error_outcome(e: &haven::Error) -> Outcome {
    Outcome {
        // Unavailable: definitely not applied. Timeout and everything else: maybe.
        kind: if e.code() == ErrorCode::Unavailable {
            Kind::Fail
        } else {
            Kind::Info
        },
        message: Some(e.to_string()),
        anomaly: None,
    }
}

/// Run `action` on `key` with `client` and translate the answer.
pub fn execute(client: &Client, key: u64, action: Action) -> Outcome {
    let key_b = key_bytes(key);
    let ok = |result| Outcome {
        kind: Kind::Ok(result),
        message: None,
        anomaly: None,
    };
    let anomaly = |text: String| Outcome {
        kind: Kind::Info,
        message: Some(text.clone()),
        anomaly: Some(text),
    };
    match action {
        Action::Read => match client.get(&key_b) {
            Ok(None) => ok(OpResult::Read(None)),
            Ok(Some(v)) => match parse_value(&v.value) {
                Ok(value) => ok(OpResult::Read(Some(value))),
                Err(e) => anomaly(format!("read of key {key}: {e}")),
            },
            Err(e) => error_outcome(&e),
        },
        Action::Write(value) => match client.put(&key_b, &value_bytes(value)) {
            Ok(_) => ok(OpResult::Written),
            Err(e) => error_outcome(&e),
        },
        Action::Cas { expected, new } => {
            match client.compare_and_swap(&key_b, Some(&value_bytes(expected)), &value_bytes(new)) {
                Ok(CasResult::Swapped { .. }) => ok(OpResult::Cas(true)),
                Ok(CasResult::Failed { current }) => {
                    let current = current.map(|v| parse_value(&v.value)).transpose();
                    match current {
                        Ok(Some(c)) if c == expected => anomaly(format!(
                            "cas on key {key} failed although the member reports the expected \
                             value {expected} as current"
                        )),
                        Ok(_) => ok(OpResult::Cas(false)),
                        Err(e) => anomaly(format!("cas of key {key}: {e}")),
                    }
                }
                Err(e) => error_outcome(&e),
            }
        }
    }
}

/// One client thread's settings.
pub struct ClientThread {
    /// Its client (its own connection).
    pub client: Client,
    /// Its random stream.
    pub rng: SplitMix64,
    /// The shared keys.
    pub keys: Arc<Keys>,
    /// The history.
    pub history: Arc<History>,
    /// Set when the load phase ends.
    pub stop: Arc<AtomicBool>,
}

/// Run operations until `stop`; returns the anomalies seen.
pub fn run_client(mut t: ClientThread) -> Vec<String> {
    let mut anomalies = Vec::new();
    let mut process = t.keys.new_process();
    // Bounded: each operation ends by the client's request deadline; `stop` ends the loop.
    while !t.stop.load(Ordering::SeqCst) {
        let (key, last_seen) = t.keys.pick(&mut t.rng);
        let action = match t.rng.below(10) {
            0..=3 => Action::Read,
            4..=6 => Action::Write(t.keys.new_value()),
            _ => Action::Cas {
                // Mostly the last value seen (likely to swap), sometimes an older one.
                expected: match last_seen {
                    Some(v) if !t.rng.chance(1, 5) => v,
                    Some(v) => t.rng.below(v + 1),
                    None => t.keys.new_value(),
                },
                new: t.keys.new_value(),
            },
        };
        t.history.invoke(process, key, action);
        let outcome = execute(&t.client, key, action);
        match (action, outcome.kind) {
            (Action::Read, Kind::Ok(OpResult::Read(Some(v)))) => t.keys.saw(key, v),
            (Action::Write(v), Kind::Ok(_)) => t.keys.saw(key, v),
            (Action::Cas { new, .. }, Kind::Ok(OpResult::Cas(true))) => t.keys.saw(key, new),
            _ => {}
        }
        t.history
            .complete(process, key, action, outcome.kind, outcome.message);
        if let Some(a) = outcome.anomaly {
            anomalies.push(a);
        }
        if outcome.kind == Kind::Info {
            // The operation may still be in flight: a new process, as in Jepsen.
            process = t.keys.new_process();
        }
    }
    anomalies
}
