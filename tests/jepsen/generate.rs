//! Histories for testing the checking pipeline (events -> operations -> lincheck), generated
//! linearizable by construction: each operation that takes effect does so at one instant
//! between its invocation and its completion, and its result is computed from the register
//! at that instant.

use crate::history::{Action, Event, Kind};
use crate::lincheck::OpResult;
use haven::raft::rng::SplitMix64;
use std::collections::BTreeMap;

/// A generated history and each key's value at its end.
#[derive(Clone)]
pub struct Generated {
    /// The events, in time order.
    pub events: Vec<Event>,
    /// The final value of every key.
    pub finals: BTreeMap<u64, Option<u64>>,
    /// The first time after every event.
    pub end_ns: u64,
}

struct Planned {
    process: u64,
    key: u64,
    action: Action,
    invoked: u64,
    effect: u64,
    completed: u64,
    /// 0: ok, 1: fail (never takes effect), 2: info that took effect, 3: info that did not.
    fate: u64,
}

/// `processes` processes, each running `ops` operations on `keys` keys; about one in
/// `unknown_one_in` operations fails or ends unknown (0: none).
pub fn linearizable(
    seed: u64,
    processes: u64,
    ops: usize,
    keys: u64,
    unknown_one_in: u64,
) -> Generated {
    let mut rng = SplitMix64::new(seed);
    let mut planned = Vec::new();
    let mut next_value = 1u64;
    let mut last_written = vec![None::<u64>; keys as usize];
    for p in 0..processes {
        // Times are multiples of `processes` plus the process number: all distinct.
        let mut t = 1 + rng.below(20);
        for _ in 0..ops {
            let invoked = t;
            let effect = invoked + 1 + rng.below(30);
            let completed = effect + 1 + rng.below(30);
            t = completed + 1 + rng.below(10);
            let key = rng.below(keys);
            let action = match rng.below(3) {
                0 => Action::Read,
                1 => {
                    next_value += 1;
                    Action::Write(next_value)
                }
                _ => {
                    next_value += 1;
                    // Often the last value written to the key, so that some swaps succeed.
                    let expected = match last_written[key as usize] {
                        Some(v) if rng.chance(2, 3) => v,
                        _ => 1 + rng.below(next_value),
                    };
                    Action::Cas {
                        expected,
                        new: next_value,
                    }
                }
            };
            if let Action::Write(v) | Action::Cas { new: v, .. } = action {
                last_written[key as usize] = Some(v);
            }
            let fate = if unknown_one_in > 0 && rng.chance(1, unknown_one_in) {
                1 + rng.below(3)
            } else {
                0
            };
            let stamp = |x: u64| x * processes + p;
            planned.push(Planned {
                process: p,
                key,
                action,
                invoked: stamp(invoked),
                effect: stamp(effect),
                completed: stamp(completed),
                fate,
            });
        }
    }
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| planned[i].effect);
    let mut state: BTreeMap<u64, Option<u64>> = (0..keys).map(|k| (k, None)).collect();
    let mut results = vec![OpResult::Written; planned.len()];
    for i in order {
        let pl = &planned[i];
        if pl.fate == 1 || pl.fate == 3 {
            continue;
        }
        let s = state.get_mut(&pl.key).expect("every key has a state");
        results[i] = match pl.action {
            Action::Read => OpResult::Read(*s),
            Action::Write(v) => {
                *s = Some(v);
                OpResult::Written
            }
            Action::Cas { expected, new } => {
                let swapped = *s == Some(expected);
                if swapped {
                    *s = Some(new);
                }
                OpResult::Cas(swapped)
            }
        };
    }
    let mut events = Vec::new();
    for (pl, result) in planned.iter().zip(results) {
        events.push(Event::Client {
            time_ns: pl.invoked,
            process: pl.process,
            kind: Kind::Invoke,
            key: pl.key,
            action: pl.action,
            message: None,
        });
        let (kind, message) = match pl.fate {
            0 => (Kind::Ok(result), None),
            1 => (Kind::Fail, Some("unavailable: not applied".to_string())),
            _ => (
                Kind::Info,
                Some("timeout: may have been applied".to_string()),
            ),
        };
        events.push(Event::Client {
            time_ns: pl.completed,
            process: pl.process,
            kind,
            key: pl.key,
            action: pl.action,
            message,
        });
    }
    events.sort_by_key(Event::time_ns);
    let end_ns = events.last().map_or(0, |e| e.time_ns()) + 1;
    Generated {
        events,
        finals: state,
        end_ns,
    }
}

/// Append a completed operation of a new process to `g`, after everything else.
pub fn append(g: &mut Generated, process: u64, key: u64, action: Action, kind: Kind) {
    let invoked = g.end_ns;
    g.events.push(Event::Client {
        time_ns: invoked,
        process,
        kind: Kind::Invoke,
        key,
        action,
        message: None,
    });
    g.events.push(Event::Client {
        time_ns: invoked + 1,
        process,
        kind,
        key,
        action,
        message: None,
    });
    g.end_ns = invoked + 2;
}
