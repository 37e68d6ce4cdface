//! Property test: random command sequences, applied in random batches (with reopens and
//! snapshot restores in between), give the same results and the same final state as a simple
//! in-memory model built on a `BTreeMap`.

#[path = "support/sm.rs"]
mod sm_util;

use haven::sm::{
    CasResult, Command, CommandResult, Compare, CompareOp, DeleteRangeResult, DeleteResult,
    KeyMeta, Op, PutResult, Txn, TxnOp, TxnOpResult, TxnResult, VersionedValue,
};
use haven::snapshots::SnapshotFiles;
use haven::LogIndex;
use proptest::prelude::*;
use sm_util::*;
use std::collections::BTreeMap;

/// The reference: a sorted map of values with revisions, and a client table without a bound.
#[derive(Default)]
struct Model {
    kv: BTreeMap<Vec<u8>, VersionedValue>,
    /// client id -> (last seq, last result)
    clients: BTreeMap<u64, (u64, CommandResult)>,
}

impl Model {
    fn apply(&mut self, index: u64, cmd: &Command) -> CommandResult {
        if let Err(e) = cmd.validate() {
            return CommandResult::Rejected {
                reason: e.to_string(),
            };
        }
        if let Op::RegisterClient = cmd.op {
            let result = CommandResult::Registered { client_id: index };
            self.clients.insert(index, (0, result.clone()));
            return result;
        }
        if cmd.client_id == 0 {
            return self.exec(index, &cmd.op);
        }
        match self.clients.get(&cmd.client_id) {
            None => CommandResult::UnknownClient,
            Some((last, result)) if cmd.seq == *last => result.clone(),
            Some((last, _)) if cmd.seq < *last => CommandResult::Stale { last_seq: *last },
            Some(_) => {
                let result = self.exec(index, &cmd.op);
                self.clients
                    .insert(cmd.client_id, (cmd.seq, result.clone()));
                result
            }
        }
    }

    fn put(&mut self, index: u64, key: &[u8], value: &[u8]) -> PutResult {
        let previous = self.kv.get(key).map(|v| v.meta);
        let meta = KeyMeta {
            create_revision: previous.map_or(LogIndex(index), |m| m.create_revision),
            mod_revision: LogIndex(index),
            version: previous.map_or(0, |m| m.version) + 1,
        };
        self.kv.insert(
            key.to_vec(),
            VersionedValue {
                value: value.to_vec(),
                meta,
            },
        );
        PutResult {
            revision: LogIndex(index),
            previous,
        }
    }

    fn delete(&mut self, index: u64, key: &[u8]) -> DeleteResult {
        DeleteResult {
            revision: LogIndex(index),
            previous: self.kv.remove(key).map(|v| v.meta),
        }
    }

    fn holds(&self, compare: &Compare) -> bool {
        let current = self.kv.get(compare.key());
        let num = |f: fn(&KeyMeta) -> u64| current.map_or(0, |v| f(&v.meta));
        let cmp = |op: CompareOp, a: u64, b: u64| match op {
            CompareOp::Equal => a == b,
            CompareOp::NotEqual => a != b,
            CompareOp::Less => a < b,
            CompareOp::Greater => a > b,
        };
        match compare {
            Compare::Value { op, value, .. } => current.is_some_and(|v| match op {
                CompareOp::Equal => v.value == *value,
                CompareOp::NotEqual => v.value != *value,
                CompareOp::Less => v.value < *value,
                CompareOp::Greater => v.value > *value,
            }),
            Compare::Version { op, version, .. } => cmp(*op, num(|m| m.version), *version),
            Compare::CreateRevision { op, revision, .. } => {
                cmp(*op, num(|m| m.create_revision.0), revision.0)
            }
            Compare::ModRevision { op, revision, .. } => {
                cmp(*op, num(|m| m.mod_revision.0), revision.0)
            }
            Compare::Exists { exists, .. } => current.is_some() == *exists,
            _ => unreachable!("no other compares are generated"),
        }
    }

    fn exec(&mut self, index: u64, op: &Op) -> CommandResult {
        match op {
            Op::Put { key, value } => CommandResult::Put(self.put(index, key, value)),
            Op::Delete { key } => CommandResult::Delete(self.delete(index, key)),
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
            } => {
                let current = self.kv.get(key).cloned();
                if current.as_ref().map(|v| &v.value) == expected.as_ref() {
                    let put = self.put(index, key, new_value);
                    CommandResult::Cas(CasResult::Swapped {
                        revision: put.revision,
                        previous: put.previous,
                    })
                } else {
                    CommandResult::Cas(CasResult::Failed { current })
                }
            }
            Op::DeleteRange { start, end, limit } => {
                let in_range: Vec<Vec<u8>> = self
                    .kv
                    .keys()
                    .filter(|k| *k >= start && end.as_ref().map_or(true, |e| *k < e))
                    .cloned()
                    .collect();
                let deleted = in_range.len().min(*limit as usize);
                for key in &in_range[..deleted] {
                    self.kv.remove(key);
                }
                CommandResult::DeleteRange(DeleteRangeResult {
                    revision: LogIndex(index),
                    deleted: deleted as u64,
                    more: in_range.len() > deleted,
                })
            }
            Op::Txn(txn) => {
                let succeeded = txn.compares.iter().all(|c| self.holds(c));
                let ops = if succeeded {
                    &txn.success
                } else {
                    &txn.failure
                };
                let results = ops
                    .iter()
                    .map(|op| match op {
                        TxnOp::Put { key, value } => TxnOpResult::Put(self.put(index, key, value)),
                        TxnOp::Delete { key } => TxnOpResult::Delete(self.delete(index, key)),
                        TxnOp::Get { key } => TxnOpResult::Get(self.kv.get(key).cloned()),
                        _ => unreachable!("no other txn ops are generated"),
                    })
                    .collect();
                CommandResult::Txn(TxnResult {
                    revision: LogIndex(index),
                    succeeded,
                    results,
                })
            }
            Op::RegisterClient => unreachable!("handled in apply"),
            _ => unreachable!("no other ops are generated"),
        }
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"a".to_vec(),
        b"b".to_vec(),
        b"ba".to_vec(),
        b"bb".to_vec(),
        b"c".to_vec(),
        vec![],
    ])
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![vec![], b"x".to_vec(), b"y".to_vec(), b"zz".to_vec()])
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(vec![
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ])
}

fn compare() -> impl Strategy<Value = Compare> {
    prop_oneof![
        (key(), compare_op(), value()).prop_map(|(key, op, value)| Compare::Value {
            key,
            op,
            value
        }),
        (key(), compare_op(), 0u64..4).prop_map(|(key, op, version)| Compare::Version {
            key,
            op,
            version
        }),
        (key(), compare_op(), 0u64..40).prop_map(|(key, op, r)| Compare::CreateRevision {
            key,
            op,
            revision: LogIndex(r)
        }),
        (key(), compare_op(), 0u64..40).prop_map(|(key, op, r)| Compare::ModRevision {
            key,
            op,
            revision: LogIndex(r)
        }),
        (key(), any::<bool>()).prop_map(|(key, exists)| Compare::Exists { key, exists }),
    ]
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| TxnOp::Put { key, value }),
        key().prop_map(|key| TxnOp::Delete { key }),
        key().prop_map(|key| TxnOp::Get { key }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (key(), value()).prop_map(|(key, value)| Op::Put { key, value }),
        1 => key().prop_map(|key| Op::Delete { key }),
        2 => (key(), proptest::option::of(value()), value()).prop_map(|(key, expected, new_value)| {
            Op::CompareAndSwap { key, expected, new_value }
        }),
        1 => (key(), proptest::option::of(key()), 0u32..4).prop_map(|(start, end, limit)| {
            Op::DeleteRange { start, end, limit }
        }),
        2 => (
            proptest::collection::vec(compare(), 0..3),
            proptest::collection::vec(txn_op(), 0..4),
            proptest::collection::vec(txn_op(), 0..3),
        )
            .prop_map(|(compares, success, failure)| Op::Txn(Txn { compares, success, failure })),
    ]
}

/// Who sends a command: untracked, or one of two clients with the next, same or an older seq.
#[derive(Debug, Clone, Copy)]
enum Sender {
    Untracked,
    Next(usize),
    Same(usize),
    Older(usize),
    Unknown,
}

fn sender() -> impl Strategy<Value = Sender> {
    prop_oneof![
        2 => Just(Sender::Untracked),
        4 => (0usize..2).prop_map(Sender::Next),
        1 => (0usize..2).prop_map(Sender::Same),
        1 => (0usize..2).prop_map(Sender::Older),
        1 => Just(Sender::Unknown),
    ]
}

/// What happens after a batch.
#[derive(Debug, Clone, Copy)]
enum Between {
    Nothing,
    Reopen,
    SnapshotRestore,
    /// Write the pending writes of deferred batches to sled.
    Flush,
    /// Lose the pending writes (a crash), reopen and replay the log from the applied index.
    CrashAndReplay,
}

fn between() -> impl Strategy<Value = Between> {
    prop_oneof![
        6 => Just(Between::Nothing),
        1 => Just(Between::Reopen),
        1 => Just(Between::SnapshotRestore),
        1 => Just(Between::Flush),
        1 => Just(Between::CrashAndReplay),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_match_btreemap_model(
        steps in proptest::collection::vec((sender(), op()), 1..60),
        batch_sizes in proptest::collection::vec((1usize..8, between(), any::<bool>()), 1..20),
        record_cache in prop_oneof![Just(0usize), Just(2048), Just(1 << 20)],
    ) {
        // A 2 KiB record cache evicts all the time; 1 MiB holds everything.
        let mut h = Harness::with_record_cache(record_cache);
        let mut model = Model::default();
        // Two registered clients (indexes 1 and 2), tracked by the model too.
        let clients = [h.register(), h.register()];
        for (i, id) in clients.iter().enumerate() {
            prop_assert_eq!(*id, i as u64 + 1);
            model.apply(*id, &untracked(Op::RegisterClient));
        }
        let mut seqs = [0u64; 2];
        let commands: Vec<Command> = steps
            .into_iter()
            .map(|(who, op)| {
                let (client_id, seq) = match who {
                    Sender::Untracked => (0, 0),
                    Sender::Next(c) => {
                        seqs[c] += 1;
                        (clients[c], seqs[c])
                    }
                    Sender::Same(c) => (clients[c], seqs[c].max(1)),
                    Sender::Older(c) => (clients[c], seqs[c].saturating_sub(1).max(1)),
                    Sender::Unknown => (1_000_000, 1),
                };
                Command { client_id, seq, op }
            })
            .collect();

        let mut rest = commands.as_slice();
        let mut plan = batch_sizes.iter().cycle();
        while !rest.is_empty() {
            let &(size, after, deferred) = plan.next().unwrap();
            let (batch, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            let first = h.next_index();
            let results = h.apply_batch_with(batch, deferred);
            for (i, (cmd, got)) in batch.iter().zip(results).enumerate() {
                let expected = model.apply(first + i as u64, cmd);
                prop_assert_eq!(got, expected, "command {:?} at index {}", cmd, first + i as u64);
            }
            match after {
                Between::Nothing => {}
                Between::Reopen => {
                    h.sm.flush_pending().unwrap();
                    h = h.reopen();
                }
                Between::Flush => h.sm.flush_pending().unwrap(),
                Between::CrashAndReplay => {
                    let before = h.sm.state_hash().unwrap();
                    h = h.crash_and_replay();
                    prop_assert_eq!(h.sm.state_hash().unwrap(), before);
                }
                Between::SnapshotRestore => {
                    let snap = h.sm.write_snapshot(h.snap_dir()).unwrap();
                    let mut fresh = Harness::new();
                    fresh.sm.restore_snapshot(&snap.path).unwrap();
                    prop_assert_eq!(fresh.sm.state_hash().unwrap(), h.sm.state_hash().unwrap());
                    h = fresh;
                }
            }
        }

        let page = h.sm.scan_prefix(b"", 100).unwrap();
        prop_assert!(!page.more);
        let got: Vec<(Vec<u8>, VersionedValue)> = page
            .entries
            .into_iter()
            .map(|kv| (kv.key, VersionedValue { value: kv.value, meta: kv.meta }))
            .collect();
        let expected: Vec<(Vec<u8>, VersionedValue)> = model.kv.clone().into_iter().collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(h.sm.client_count(), model.clients.len());

        // The same entries applied one at a time give the same state hash: batching is invisible.
        let mut one_by_one = Harness::new();
        one_by_one.register();
        one_by_one.register();
        for cmd in &commands {
            one_by_one.apply(cmd.clone());
        }
        prop_assert_eq!(one_by_one.sm.state_hash().unwrap(), h.sm.state_hash().unwrap());
    }
}
