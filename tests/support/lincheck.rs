//! A linearizability checker for key-value histories: Wing & Gong's search with Lowe's
//! memoisation of (linearized set, state) pairs, applied per key (linearizability is local, so
//! a history is linearizable iff each key's sub-history is).
//!
//! Reusable: the simulator includes it, and so can a test over real processes
//! (`#[path = "support/lincheck.rs"] mod lincheck;`). Keys and values are `u64`; every key
//! starts absent. Writes should use unique values (the checker is exact either way, but unique
//! values make the search small).
//!
//! Completions:
//! - `Ok(result)`: the operation took effect once, between its invocation and completion;
//! - `Fail`: it definitely did not take effect (the checker ignores it);
//! - `Info`: unknown (a timeout or a crash): it may have taken effect at any time after its
//!   invocation, or never.
//!
//! A search that exceeds its budget is reported as [`CheckError::BudgetExceeded`]: callers must
//! treat that as a failure, never as a pass.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the key.
    Read,
    /// Write a value.
    Write(u64),
    /// Compare-and-swap: if the key holds `expected`, store `new`.
    Cas(u64, u64),
}

/// The result of an operation that completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// A read's value (`None`: absent).
    Read(Option<u64>),
    /// A write completed.
    Written,
    /// Whether a compare-and-swap swapped.
    Cas(bool),
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Completion {
    /// It took effect with this result.
    Ok(OpResult),
    /// It definitely did not take effect.
    Fail,
    /// Unknown: it may or may not have taken effect.
    Info,
}

/// One operation of a history. Times are any increasing counter shared by all processes;
/// `completed` must be later than `invoked` (and is ignored for `Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client process.
    pub process: u64,
    /// The key.
    pub key: u64,
    /// The operation.
    pub op: Op,
    /// When it was invoked.
    pub invoked: u64,
    /// When it completed.
    pub completed: u64,
    /// How it ended.
    pub completion: Completion,
}

/// Why a history failed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// No linearization exists for this key.
    NotLinearizable {
        /// The key.
        key: u64,
        /// How many of the key's operations the deepest partial linearization covered.
        deepest: usize,
        /// The key's operations (for the failure report).
        ops: usize,
    },
    /// The search for this key explored more states than its budget allows.
    BudgetExceeded {
        /// The key.
        key: u64,
        /// The budget.
        budget: u64,
    },
    /// The history itself is malformed.
    Malformed(String),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::NotLinearizable { key, deepest, ops } => write!(
                f,
                "key {key}: not linearizable (deepest partial linearization {deepest} of {ops} ops)"
            ),
            CheckError::BudgetExceeded { key, budget } => write!(
                f,
                "key {key}: linearizability search exceeded its budget of {budget} steps (FAIL)"
            ),
            CheckError::Malformed(m) => write!(f, "malformed history: {m}"),
        }
    }
}

/// Check every key of `history`, each with at most `budget` search steps.
pub fn check(history: &[Operation], budget: u64) -> Result<(), CheckError> {
    let mut by_key: HashMap<u64, Vec<&Operation>> = HashMap::new();
    for op in history {
        if op.completion != Completion::Info && op.completed <= op.invoked {
            return Err(CheckError::Malformed(format!(
                "operation completes at {} before its invocation at {}",
                op.completed, op.invoked
            )));
        }
        by_key.entry(op.key).or_default().push(op);
    }
    let mut keys: Vec<u64> = by_key.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        check_key(key, &by_key[&key], budget)?;
    }
    Ok(())
}

type State = Option<u64>;

/// One operation in the search: what it does and, if it completed, what it must observe.
#[derive(Clone, Copy)]
struct SearchOp {
    op: Op,
    result: Option<OpResult>,
}

impl SearchOp {
    /// Apply to `state`: `None` if the recorded result is impossible from `state`.
    fn step(&self, state: State) -> Option<State> {
        match (self.op, self.result) {
            (Op::Read, Some(OpResult::Read(v))) => (v == state).then_some(state),
            (Op::Read, None) => Some(state),
            (Op::Write(v), Some(OpResult::Written) | None) => Some(Some(v)),
            (Op::Cas(e, n), Some(OpResult::Cas(true))) => (state == Some(e)).then_some(Some(n)),
            (Op::Cas(e, _), Some(OpResult::Cas(false))) => (state != Some(e)).then_some(state),
            (Op::Cas(e, n), None) => Some(if state == Some(e) { Some(n) } else { state }),
            // A result that does not fit the operation can never be linearized.
            _ => None,
        }
    }
}

/// Event list node: a call or a return of operation `op`.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call: index of its return event.
    partner: usize,
    prev: usize,
    next: usize,
}

fn check_key(key: u64, ops: &[&Operation], budget: u64) -> Result<(), CheckError> {
    // Failed operations never happened; unknown reads change nothing and promise nothing.
    let kept: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| match o.completion {
            Completion::Fail => false,
            Completion::Info => o.op != Op::Read,
            Completion::Ok(_) => true,
        })
        .collect();
    let n = kept.len();
    let search: Vec<SearchOp> = kept
        .iter()
        .map(|o| SearchOp {
            op: o.op,
            result: match o.completion {
                Completion::Ok(r) => Some(r),
                _ => None,
            },
        })
        .collect();
    let required = kept
        .iter()
        .filter(|o| matches!(o.completion, Completion::Ok(_)))
        .count();

    // Events sorted by time; unknown completions return "at infinity". Calls sort before
    // returns at equal times (an operation invoked when another completes may follow it).
    let mut times: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in kept.iter().enumerate() {
        times.push((o.invoked, false, i));
        let end = match o.completion {
            Completion::Info => u64::MAX,
            _ => o.completed,
        };
        times.push((end, true, i));
    }
    times.sort_unstable();
    // Node 0 is the head sentinel; events are 1..=2n.
    let mut events = vec![
        Event {
            op: usize::MAX,
            is_call: false,
            partner: 0,
            prev: 0,
            next: 0,
        };
        2 * n + 1
    ];
    let mut call_of = vec![0usize; n];
    let mut return_of = vec![0usize; n];
    for (k, &(_, is_return, op)) in times.iter().enumerate() {
        let e = k + 1;
        events[e] = Event {
            op,
            is_call: !is_return,
            partner: 0,
            prev: e - 1,
            next: if e == 2 * n { 0 } else { e + 1 },
        };
        if is_return {
            return_of[op] = e;
        } else {
            call_of[op] = e;
        }
    }
    events[0].next = if n == 0 { 0 } else { 1 };
    events[0].prev = 2 * n;
    for op in 0..n {
        events[call_of[op]].partner = return_of[op];
    }

    fn unlink(events: &mut [Event], e: usize) {
        let (p, nx) = (events[e].prev, events[e].next);
        events[p].next = nx;
        events[nx].prev = p;
    }
    fn relink(events: &mut [Event], e: usize) {
        let (p, nx) = (events[e].prev, events[e].next);
        events[p].next = e;
        events[nx].prev = e;
    }

    let words = n.div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut done_required = 0usize;
    let mut deepest = 0usize;
    let mut steps = 0u64;
    let mut entry = events[0].next;
    loop {
        if done_required == required {
            return Ok(());
        }
        steps += 1;
        if steps > budget {
            return Err(CheckError::BudgetExceeded { key, budget });
        }
        if entry == 0 {
            // Only unknown operations remain unlinearized and none may be needed: the check
            // above would have returned. Reaching the end otherwise means a required return
            // was passed, which the return branch prevents.
            unreachable!("lincheck: ran off the event list with required operations left");
        }
        let ev = events[entry];
        if ev.is_call {
            let op = ev.op;
            let next_state = search[op].step(state);
            let mut advanced = false;
            if let Some(s) = next_state {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), s)) {
                    stack.push((entry, state));
                    state = s;
                    if search[op].result.is_some() {
                        done_required += 1;
                    }
                    deepest = deepest.max(stack.len());
                    unlink(&mut events, entry);
                    unlink(&mut events, ev.partner);
                    entry = events[0].next;
                    advanced = true;
                } else {
                    linearized[op / 64] &= !(1 << (op % 64));
                }
            }
            if !advanced {
                entry = ev.next;
            }
        } else {
            // A return whose operation is not linearized yet: undo the last choice.
            let Some((call, prev_state)) = stack.pop() else {
                return Err(CheckError::NotLinearizable {
                    key,
                    deepest,
                    ops: n,
                });
            };
            let op = events[call].op;
            state = prev_state;
            linearized[op / 64] &= !(1 << (op % 64));
            if search[op].result.is_some() {
                done_required -= 1;
            }
            let partner = events[call].partner;
            relink(&mut events, partner);
            relink(&mut events, call);
            entry = events[call].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven::raft::rng::SplitMix64;

    fn op(process: u64, op: Op, invoked: u64, completed: u64, c: Completion) -> Operation {
        Operation {
            process,
            key: 0,
            op,
            invoked,
            completed,
            completion: c,
        }
    }

    const BUDGET: u64 = 1_000_000;

    /// A concurrent history that is linearizable by construction: each operation takes effect
    /// at a random instant between its invocation and completion, in that order.
    /// Returns the history and the final value of each key.
    fn generated(
        seed: u64,
        processes: u64,
        ops_per_process: usize,
        with_unknown: bool,
    ) -> (Vec<Operation>, Vec<Option<u64>>) {
        let mut rng = SplitMix64::new(seed);
        let keys = 2u64;
        // Plan: for every process, a sequence of (invoke, effect, complete) instants.
        struct Planned {
            process: u64,
            key: u64,
            op: Op,
            invoked: u64,
            effect: u64,
            completed: u64,
            info: bool,
        }
        let mut planned = Vec::new();
        let mut value = 1u64;
        for p in 0..processes {
            let mut t = rng.below(5);
            for _ in 0..ops_per_process {
                let invoked = t * 4 + 1; // times spaced so effects are distinct
                let effect = invoked + 1 + rng.below(10) * 4;
                let completed = effect + 1 + rng.below(6) * 4;
                t = completed / 4 + 1 + rng.below(3);
                let key = rng.below(keys);
                let op = match rng.below(3) {
                    0 => Op::Read,
                    1 => {
                        value += 1;
                        Op::Write(value)
                    }
                    _ => {
                        value += 1;
                        Op::Cas(rng.below(value), value)
                    }
                };
                planned.push(Planned {
                    process: p,
                    key,
                    op,
                    invoked: invoked * processes + p,
                    effect: effect * processes + p,
                    completed: completed * processes + p,
                    info: with_unknown && rng.chance(1, 10),
                });
            }
        }
        // Apply effects in effect-time order to compute results.
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| planned[i].effect);
        let mut state = vec![None; keys as usize];
        let mut results = vec![OpResult::Written; planned.len()];
        for i in order {
            let pl = &planned[i];
            let s = &mut state[pl.key as usize];
            results[i] = match pl.op {
                Op::Read => OpResult::Read(*s),
                Op::Write(v) => {
                    *s = Some(v);
                    OpResult::Written
                }
                Op::Cas(e, n) => {
                    let ok = *s == Some(e);
                    if ok {
                        *s = Some(n);
                    }
                    OpResult::Cas(ok)
                }
            };
        }
        let history = planned
            .iter()
            .zip(results)
            .map(|(pl, r)| Operation {
                process: pl.process,
                key: pl.key,
                op: pl.op,
                invoked: pl.invoked,
                completed: pl.completed,
                // An unknown outcome hides the result, not the effect: still linearizable.
                completion: if pl.info {
                    Completion::Info
                } else {
                    Completion::Ok(r)
                },
            })
            .collect();
        (history, state)
    }

    #[test]
    fn generated_linearizable_histories_pass() {
        for seed in 0..50 {
            let (h, _) = generated(seed, 4, 40, true);
            assert_eq!(check(&h, BUDGET), Ok(()), "seed {seed}");
        }
    }

    #[test]
    fn injected_stale_read_fails() {
        let mut found = 0;
        for seed in 0..50 {
            let (mut h, _) = generated(seed, 4, 40, true);
            // Find writes W1 -> W2 (W2 invoked after W1 completed) that both complete before a
            // read R is invoked; make R return W1's value: a stale read.
            let mut injected = false;
            'outer: for r in 0..h.len() {
                if h[r].op != Op::Read || !matches!(h[r].completion, Completion::Ok(_)) {
                    continue;
                }
                for w1 in 0..h.len() {
                    let Op::Write(v1) = h[w1].op else { continue };
                    if h[w1].key != h[r].key
                        || h[w1].completion != Completion::Ok(OpResult::Written)
                    {
                        continue;
                    }
                    for w2 in 0..h.len() {
                        let overwrites = matches!(h[w2].op, Op::Write(_))
                            && h[w2].key == h[r].key
                            && h[w2].completion == Completion::Ok(OpResult::Written)
                            && h[w2].invoked > h[w1].completed
                            && h[w2].completed < h[r].invoked;
                        if overwrites {
                            h[r].completion = Completion::Ok(OpResult::Read(Some(v1)));
                            injected = true;
                            break 'outer;
                        }
                    }
                }
            }
            if injected {
                found += 1;
                assert!(
                    matches!(check(&h, BUDGET), Err(CheckError::NotLinearizable { .. })),
                    "seed {seed}: stale read accepted"
                );
            }
        }
        assert!(
            found >= 10,
            "stale reads injected into only {found} histories"
        );
    }

    #[test]
    fn injected_lost_write_fails() {
        for seed in 0..50 {
            let (mut h, finals) = generated(seed, 4, 30, false);
            let end = h.iter().map(|o| o.completed.max(o.invoked)).max().unwrap() + 10;
            // A write acknowledged after everything else, then a read that does not see it.
            // (No unknown outcomes here: one could legally take effect after that write.)
            h.push(Operation {
                process: 99,
                key: 0,
                op: Op::Write(1_000_000),
                invoked: end,
                completed: end + 1,
                completion: Completion::Ok(OpResult::Written),
            });
            let mut lost = h.clone();
            lost.push(Operation {
                process: 98,
                key: 0,
                op: Op::Read,
                invoked: end + 2,
                completed: end + 3,
                completion: Completion::Ok(OpResult::Read(finals[0])),
            });
            assert!(
                matches!(
                    check(&lost, BUDGET),
                    Err(CheckError::NotLinearizable { key: 0, .. })
                ),
                "seed {seed}: lost write accepted"
            );
            h.push(Operation {
                process: 98,
                key: 0,
                op: Op::Read,
                invoked: end + 2,
                completed: end + 3,
                completion: Completion::Ok(OpResult::Read(Some(1_000_000))),
            });
            assert_eq!(check(&h, BUDGET), Ok(()), "seed {seed}: control");
        }
    }

    #[test]
    fn small_cases() {
        use Completion::*;
        use OpResult::*;
        // Concurrent write and read: the read may see either value.
        let h = vec![
            op(1, Op::Write(1), 0, 10, Ok(Written)),
            op(2, Op::Read, 1, 2, Ok(Read(Some(1)))),
            op(3, Op::Read, 3, 4, Ok(Read(None))),
        ];
        // Read 3 saw the initial value after read 2 saw the write: not linearizable.
        assert!(check(&h, BUDGET).is_err());
        // An unknown write may take effect late...
        let h = vec![
            op(1, Op::Write(1), 0, 0, Info),
            op(2, Op::Read, 5, 6, Ok(Read(None))),
            op(3, Op::Read, 7, 8, Ok(Read(Some(1)))),
        ];
        assert_eq!(check(&h, BUDGET), Result::Ok(()));
        // ...or never; a failed write never does.
        let h = vec![
            op(1, Op::Write(1), 0, 1, Fail),
            op(2, Op::Read, 5, 6, Ok(Read(Some(1)))),
        ];
        assert!(check(&h, BUDGET).is_err());
        // Compare-and-swap semantics.
        let h = vec![
            op(1, Op::Write(1), 0, 1, Ok(Written)),
            op(2, Op::Cas(1, 2), 2, 3, Ok(Cas(true))),
            op(3, Op::Cas(1, 3), 4, 5, Ok(Cas(false))),
            op(4, Op::Read, 6, 7, Ok(Read(Some(2)))),
        ];
        assert_eq!(check(&h, BUDGET), Result::Ok(()));
        let h = vec![
            op(1, Op::Write(1), 0, 1, Ok(Written)),
            op(2, Op::Cas(1, 2), 2, 3, Ok(Cas(false))),
        ];
        assert!(check(&h, BUDGET).is_err());
    }

    #[test]
    fn exceeded_budget_is_a_failure() {
        let (h, _) = generated(7, 6, 60, true);
        assert_eq!(check(&h, BUDGET), Ok(()));
        assert!(matches!(
            check(&h, 10),
            Err(CheckError::BudgetExceeded { budget: 10, .. })
        ));
    }
}
