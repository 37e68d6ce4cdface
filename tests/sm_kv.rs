//! Key-value semantics of the state machine: revisions, versions, compare-and-swap,
//! transactions, ranges, limits, and how apply treats entries (skip, gap, malformed, versions).

#[path = "support/sm.rs"]
mod sm_util;

use haven::limits::{MAX_KEY_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES};
use haven::sm::{
    CasResult, Command, CommandResult, Compare, CompareOp, DeleteRangeResult, EntryResult, KeyMeta,
    Op, StateMachine, Txn, TxnOp, TxnOpResult, VersionedValue,
};
use haven::{EntryKind, Error, ErrorCode, LogIndex, Term};
use proptest::prelude::*;
use sm_util::*;

fn meta(create: u64, modified: u64, version: u64) -> KeyMeta {
    KeyMeta {
        create_revision: LogIndex(create),
        mod_revision: LogIndex(modified),
        version,
    }
}

fn value(v: &[u8], create: u64, modified: u64, version: u64) -> Option<VersionedValue> {
    Some(VersionedValue {
        value: v.to_vec(),
        meta: meta(create, modified, version),
    })
}

#[test]
fn revision_of_a_write_is_its_log_index_and_version_counts_writes() {
    let mut h = Harness::new();
    assert_eq!(
        h.apply_op(put(b"a", b"1")),
        CommandResult::Put(haven::sm::PutResult {
            revision: LogIndex(1),
            previous: None
        })
    );
    h.apply_op(put(b"other", b"x"));
    assert_eq!(
        h.apply_op(put(b"a", b"2")),
        CommandResult::Put(haven::sm::PutResult {
            revision: LogIndex(3),
            previous: Some(meta(1, 1, 1))
        })
    );
    assert_eq!(h.sm.get(b"a").unwrap(), value(b"2", 1, 3, 2));
    assert_eq!(h.sm.get(b"other").unwrap(), value(b"x", 2, 2, 1));
}

#[test]
fn delete_resets_revisions_and_version() {
    let mut h = Harness::new();
    h.apply_op(put(b"a", b"1"));
    h.apply_op(put(b"a", b"2"));
    match h.apply_op(delete(b"a")) {
        CommandResult::Delete(d) => {
            assert!(d.existed());
            assert_eq!(d.previous, Some(meta(1, 2, 2)));
            assert_eq!(d.revision, LogIndex(3));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.sm.get(b"a").unwrap(), None);
    match h.apply_op(delete(b"a")) {
        CommandResult::Delete(d) => assert!(!d.existed()),
        other => panic!("unexpected {other:?}"),
    }
    h.apply_op(put(b"a", b"3"));
    assert_eq!(h.sm.get(b"a").unwrap(), value(b"3", 5, 5, 1));
}

fn cas(key: &[u8], expected: Option<&[u8]>, new_value: &[u8]) -> Op {
    Op::CompareAndSwap {
        key: key.to_vec(),
        expected: expected.map(<[u8]>::to_vec),
        new_value: new_value.to_vec(),
    }
}

#[test]
fn cas_on_absent_key_requires_expected_none() {
    let mut h = Harness::new();
    assert_eq!(
        h.apply_op(cas(b"k", Some(b"x"), b"new")),
        CommandResult::Cas(CasResult::Failed { current: None })
    );
    assert_eq!(h.sm.get(b"k").unwrap(), None);
    assert_eq!(
        h.apply_op(cas(b"k", None, b"new")),
        CommandResult::Cas(CasResult::Swapped {
            revision: LogIndex(2),
            previous: None
        })
    );
    assert_eq!(h.sm.get(b"k").unwrap(), value(b"new", 2, 2, 1));
}

#[test]
fn cas_on_present_key_compares_value_and_reports_current_on_failure() {
    let mut h = Harness::new();
    h.apply_op(put(b"k", b"v1"));
    assert_eq!(
        h.apply_op(cas(b"k", None, b"zz")),
        CommandResult::Cas(CasResult::Failed {
            current: value(b"v1", 1, 1, 1)
        })
    );
    assert_eq!(
        h.apply_op(cas(b"k", Some(b"wrong"), b"zz")),
        CommandResult::Cas(CasResult::Failed {
            current: value(b"v1", 1, 1, 1)
        })
    );
    assert_eq!(
        h.apply_op(cas(b"k", Some(b"v1"), b"v2")),
        CommandResult::Cas(CasResult::Swapped {
            revision: LogIndex(4),
            previous: Some(meta(1, 1, 1))
        })
    );
    assert_eq!(h.sm.get(b"k").unwrap(), value(b"v2", 1, 4, 2));
}

fn txn(compares: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Op {
    Op::Txn(Txn {
        compares,
        success,
        failure,
    })
}

fn tput(key: &[u8], value: &[u8]) -> TxnOp {
    TxnOp::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn tget(key: &[u8]) -> TxnOp {
    TxnOp::Get { key: key.to_vec() }
}

/// Run a txn whose only success op puts "s" and failure op puts "f"; returns which ran.
fn branch_taken(h: &mut Harness, compare: Compare) -> bool {
    match h.apply_op(txn(
        vec![compare],
        vec![tput(b"branch", b"s")],
        vec![tput(b"branch", b"f")],
    )) {
        CommandResult::Txn(t) => {
            let stored = h.sm.get(b"branch").unwrap().unwrap().value;
            assert_eq!(stored, if t.succeeded { b"s" } else { b"f" });
            t.succeeded
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn txn_compares_on_every_field() {
    let mut h = Harness::new();
    h.apply_op(put(b"k", b"m")); // index 1
    h.apply_op(put(b"k", b"m")); // index 2: version 2, create 1, mod 2
    let k = b"k".to_vec();
    let value = |op, v: &[u8]| Compare::Value {
        key: k.clone(),
        op,
        value: v.to_vec(),
    };
    assert!(branch_taken(&mut h, value(CompareOp::Equal, b"m")));
    assert!(!branch_taken(&mut h, value(CompareOp::Equal, b"n")));
    assert!(branch_taken(&mut h, value(CompareOp::NotEqual, b"n")));
    assert!(branch_taken(&mut h, value(CompareOp::Less, b"n")));
    assert!(!branch_taken(&mut h, value(CompareOp::Less, b"m")));
    assert!(branch_taken(&mut h, value(CompareOp::Greater, b"a")));

    let version = |op, version| Compare::Version {
        key: k.clone(),
        op,
        version,
    };
    assert!(branch_taken(&mut h, version(CompareOp::Equal, 2)));
    assert!(!branch_taken(&mut h, version(CompareOp::Equal, 1)));
    assert!(branch_taken(&mut h, version(CompareOp::Greater, 1)));
    assert!(branch_taken(&mut h, version(CompareOp::Less, 3)));

    let create = |op, r| Compare::CreateRevision {
        key: k.clone(),
        op,
        revision: LogIndex(r),
    };
    assert!(branch_taken(&mut h, create(CompareOp::Equal, 1)));
    assert!(!branch_taken(&mut h, create(CompareOp::Equal, 2)));
    assert!(branch_taken(&mut h, create(CompareOp::NotEqual, 2)));

    let modified = |op, r| Compare::ModRevision {
        key: k.clone(),
        op,
        revision: LogIndex(r),
    };
    assert!(branch_taken(&mut h, modified(CompareOp::Equal, 2)));
    assert!(branch_taken(&mut h, modified(CompareOp::Less, 3)));
    assert!(!branch_taken(&mut h, modified(CompareOp::Greater, 2)));

    let exists = |key: &[u8], exists| Compare::Exists {
        key: key.to_vec(),
        exists,
    };
    assert!(branch_taken(&mut h, exists(b"k", true)));
    assert!(!branch_taken(&mut h, exists(b"k", false)));
    assert!(branch_taken(&mut h, exists(b"absent", false)));
}

#[test]
fn txn_compares_on_absent_key_see_zero_and_no_value() {
    let mut h = Harness::new();
    let key = b"absent".to_vec();
    assert!(branch_taken(
        &mut h,
        Compare::Version {
            key: key.clone(),
            op: CompareOp::Equal,
            version: 0
        }
    ));
    assert!(branch_taken(
        &mut h,
        Compare::ModRevision {
            key: key.clone(),
            op: CompareOp::Equal,
            revision: LogIndex(0)
        }
    ));
    assert!(branch_taken(
        &mut h,
        Compare::CreateRevision {
            key: key.clone(),
            op: CompareOp::Equal,
            revision: LogIndex(0)
        }
    ));
    // A value compare on an absent key never holds, whatever the operator.
    for op in [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ] {
        assert!(!branch_taken(
            &mut h,
            Compare::Value {
                key: key.clone(),
                op,
                value: b"x".to_vec()
            }
        ));
    }
}

#[test]
fn txn_runs_one_branch_in_order_at_one_revision() {
    let mut h = Harness::new();
    h.apply_op(put(b"a", b"1"));
    let result = h.apply_op(txn(
        vec![Compare::Exists {
            key: b"a".to_vec(),
            exists: true,
        }],
        vec![
            tget(b"b"),
            tput(b"b", b"2"),
            tget(b"b"),
            TxnOp::Delete { key: b"a".to_vec() },
            tget(b"a"),
        ],
        vec![tput(b"never", b"x")],
    ));
    let CommandResult::Txn(t) = result else {
        panic!("unexpected {result:?}");
    };
    assert!(t.succeeded);
    assert_eq!(t.revision, LogIndex(2));
    assert_eq!(
        t.results,
        vec![
            TxnOpResult::Get(None),
            TxnOpResult::Put(haven::sm::PutResult {
                revision: LogIndex(2),
                previous: None
            }),
            TxnOpResult::Get(value(b"2", 2, 2, 1)),
            TxnOpResult::Delete(haven::sm::DeleteResult {
                revision: LogIndex(2),
                previous: Some(meta(1, 1, 1))
            }),
            TxnOpResult::Get(None),
        ]
    );
    assert_eq!(h.sm.get(b"never").unwrap(), None);
    assert_eq!(h.sm.get(b"a").unwrap(), None);
    assert_eq!(h.sm.get(b"b").unwrap(), value(b"2", 2, 2, 1));
}

#[test]
fn txn_with_one_invalid_op_is_rejected_whole_and_writes_nothing() {
    let mut h = Harness::new();
    h.apply_op(put(b"a", b"1"));
    let before = h.sm.state_hash().unwrap();
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    let result = h.apply_op(txn(
        vec![],
        vec![tput(b"a", b"2"), tput(b"b", b"3"), tput(b"c", &big)],
        vec![],
    ));
    match result {
        CommandResult::Rejected { reason } => {
            assert!(reason.contains("txn success op 2"), "{reason}")
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(h.sm.get(b"a").unwrap(), value(b"1", 1, 1, 1));
    assert_eq!(h.sm.get(b"b").unwrap(), None);
    // Only the applied index moved.
    assert_eq!(h.sm.applied().0, LogIndex(2));
    assert_ne!(h.sm.state_hash().unwrap(), before);
    let mut same_state = Harness::new();
    same_state.apply_op(put(b"a", b"1"));
    same_state.apply_op(Op::Delete {
        key: b"unrelated".to_vec(),
    });
    assert_eq!(
        same_state.sm.state_hash().unwrap(),
        h.sm.state_hash().unwrap()
    );
}

#[test]
fn validate_refuses_every_limit_with_invalid_argument() {
    let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    let too_many: Vec<TxnOp> = (0..=MAX_TXN_OPS).map(|i| tget(&[i as u8 + 1])).collect();
    let bad_ops = vec![
        put(b"", b"v"),
        put(&long_key, b"v"),
        put(b"k", &big),
        delete(b""),
        cas(b"k", Some(&big), b"v"),
        cas(b"k", None, &big),
        Op::DeleteRange {
            start: b"b".to_vec(),
            end: Some(b"a".to_vec()),
            limit: 10,
        },
        txn(vec![], too_many, vec![]),
        txn(
            vec![Compare::Exists {
                key: long_key.clone(),
                exists: true,
            }],
            vec![],
            vec![],
        ),
        txn(vec![], vec![], vec![tget(b"")]),
    ];
    for op in bad_ops {
        let cmd = untracked(op);
        match cmd.validate() {
            Err(e) => assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}"),
            Ok(()) => panic!("accepted {cmd:?}"),
        }
        // Applied anyway (a buggy proposer): rejected identically, nothing written.
        let mut h = Harness::new();
        let result = h.apply(cmd);
        assert!(
            matches!(result, CommandResult::Rejected { .. }),
            "{result:?}"
        );
        assert_eq!(h.sm.scan_prefix(b"", 10).unwrap().entries, vec![]);
    }
}

#[test]
fn delete_range_deletes_at_most_limit_and_reports_more() {
    let mut h = Harness::new();
    for k in [&b"a"[..], b"p1", b"p2", b"p3", b"p4", b"q"] {
        h.apply_op(put(k, b"v"));
    }
    let prefix = |limit| Op::DeleteRange {
        start: b"p".to_vec(),
        end: haven::sm::prefix_end(b"p"),
        limit,
    };
    assert_eq!(
        h.apply_op(prefix(3)),
        CommandResult::DeleteRange(DeleteRangeResult {
            revision: LogIndex(7),
            deleted: 3,
            more: true
        })
    );
    assert_eq!(
        h.apply_op(prefix(3)),
        CommandResult::DeleteRange(DeleteRangeResult {
            revision: LogIndex(8),
            deleted: 1,
            more: false
        })
    );
    let keys: Vec<Vec<u8>> =
        h.sm.scan_prefix(b"", 100)
            .unwrap()
            .entries
            .into_iter()
            .map(|kv| kv.key)
            .collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"q".to_vec()]);
    // Unbounded end, from the first key.
    h.apply_op(Op::DeleteRange {
        start: vec![],
        end: None,
        limit: 100,
    });
    assert!(h.sm.scan_prefix(b"", 100).unwrap().entries.is_empty());
}

#[test]
fn range_and_prefix_scans_page_with_limit() {
    let mut h = Harness::new();
    let cmds: Vec<Command> = (0..20u8)
        .map(|i| untracked(put(&[b'k', i], &[i])))
        .chain([untracked(put(b"z", b"last"))])
        .collect();
    h.apply_batch(&cmds);
    let page = h.sm.scan_prefix(b"k", 8).unwrap();
    assert_eq!(page.entries.len(), 8);
    assert!(page.more);
    assert_eq!(page.entries[0].key, vec![b'k', 0]);
    // Next page starts after the last key returned.
    let mut next_start = page.entries[7].key.clone();
    next_start.push(0);
    let end = haven::sm::prefix_end(b"k");
    let page2 = h.sm.range(&next_start, end.as_deref(), 100).unwrap();
    assert_eq!(page2.entries.len(), 12);
    assert!(!page2.more);
    assert_eq!(page2.entries[0].key, vec![b'k', 8]);
    assert_eq!(page2.entries[0].value, vec![8]);
    assert_eq!(page2.entries[0].meta, meta(9, 9, 1));
    let all = h.sm.range(b"", None, 100).unwrap();
    assert_eq!(all.entries.len(), 21);
    assert_eq!(all.entries[20].key, b"z".to_vec());
    for bad_limit in [0, haven::limits::MAX_SCAN_LIMIT + 1] {
        assert!(matches!(
            h.sm.range(b"", None, bad_limit),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(h.sm.get(b""), Err(Error::InvalidArgument(_))));
}

#[test]
fn evaluate_compares_reads_without_writing() {
    let mut h = Harness::new();
    h.apply_op(put(b"k", b"v"));
    let holds = vec![
        Compare::Value {
            key: b"k".to_vec(),
            op: CompareOp::Equal,
            value: b"v".to_vec(),
        },
        Compare::Exists {
            key: b"x".to_vec(),
            exists: false,
        },
    ];
    assert!(h.sm.evaluate_compares(&holds).unwrap());
    let fails = vec![Compare::Version {
        key: b"k".to_vec(),
        op: CompareOp::Greater,
        version: 1,
    }];
    assert!(!h.sm.evaluate_compares(&fails).unwrap());
    assert_eq!(h.sm.applied().0, LogIndex(1));
}

#[test]
fn entries_in_one_batch_see_each_others_writes() {
    let mut h = Harness::new();
    let results = h.apply_batch(&[
        untracked(put(b"k", b"1")),
        untracked(cas(b"k", Some(b"1"), b"2")),
        untracked(delete(b"k")),
        untracked(put(b"k", b"3")),
    ]);
    assert!(matches!(
        results[1],
        CommandResult::Cas(CasResult::Swapped { .. })
    ));
    assert!(matches!(&results[2], CommandResult::Delete(d) if d.existed()));
    assert_eq!(h.sm.get(b"k").unwrap(), value(b"3", 4, 4, 1));
    assert_eq!(h.sm.applied(), (LogIndex(4), Term(1)));
}

#[test]
fn noop_and_membership_entries_advance_applied_and_store_membership() {
    let mut h = Harness::new();
    assert_eq!(h.sm.membership(), None);
    let outcomes =
        h.sm.apply(&[
            entry(1, 1, EntryKind::Noop, vec![]),
            entry(2, 1, EntryKind::Membership, b"members-v1".to_vec()),
            entry(3, 2, EntryKind::Noop, vec![]),
        ])
        .unwrap();
    assert_eq!(outcomes[0].result, EntryResult::Noop);
    assert_eq!(outcomes[1].result, EntryResult::Membership);
    assert_eq!(h.sm.applied(), (LogIndex(3), Term(2)));
    assert_eq!(h.sm.membership(), Some(b"members-v1".to_vec()));
    let h = h.reopen();
    assert_eq!(h.sm.membership(), Some(b"members-v1".to_vec()));
    assert_eq!(h.sm.applied(), (LogIndex(3), Term(2)));
}

#[test]
fn apply_after_reopen_skips_already_applied_entries() {
    let mut h = Harness::new();
    let cmds: Vec<Command> = (0..5u8).map(|i| untracked(put(b"counter", &[i]))).collect();
    let entries: Vec<_> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| command_entry(i as u64 + 1, 1, c))
        .collect();
    h.sm.apply(&entries[..3]).unwrap();
    let mut h = h.reopen();
    assert_eq!(h.sm.applied(), (LogIndex(3), Term(1)));
    // The runtime replays from an older point: the first three are skipped, not re-applied.
    let outcomes = h.sm.apply(&entries).unwrap();
    let indexes: Vec<u64> = outcomes.iter().map(|o| o.index.0).collect();
    assert_eq!(indexes, vec![4, 5]);
    assert_eq!(h.sm.get(b"counter").unwrap(), value(&[4], 1, 5, 5));
    // Replaying everything again changes nothing.
    let hash = h.sm.state_hash().unwrap();
    assert!(h.sm.apply(&entries).unwrap().is_empty());
    assert_eq!(h.sm.state_hash().unwrap(), hash);
}

#[test]
fn gap_or_term_regression_is_refused_and_nothing_applied() {
    let mut h = Harness::new();
    h.sm.apply(&[entry(1, 2, EntryKind::Noop, vec![])]).unwrap();
    let put_cmd = untracked(put(b"k", b"v"));
    let gap = [command_entry(2, 2, &put_cmd), command_entry(4, 2, &put_cmd)];
    assert!(matches!(h.sm.apply(&gap), Err(Error::InvalidArgument(_))));
    let older_term = [command_entry(2, 1, &put_cmd)];
    assert!(matches!(
        h.sm.apply(&older_term),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(h.sm.applied(), (LogIndex(1), Term(2)));
    assert_eq!(h.sm.get(b"k").unwrap(), None);
    // Still usable afterwards.
    h.sm.apply(&[command_entry(2, 2, &put_cmd)]).unwrap();
    assert!(h.sm.get(b"k").unwrap().is_some());
}

#[test]
fn malformed_payload_applies_as_noop_with_a_result() {
    let mut h = Harness::new();
    let outcomes =
        h.sm.apply(&[
            entry(1, 1, EntryKind::Normal, vec![]),
            entry(2, 1, EntryKind::Normal, vec![1, 0xFF, 0xFF, 0xFF]),
            command_entry(3, 1, &untracked(put(b"k", b"v"))),
        ])
        .unwrap();
    assert!(matches!(outcomes[0].result, EntryResult::Malformed { .. }));
    assert!(matches!(outcomes[1].result, EntryResult::Malformed { .. }));
    assert!(matches!(
        command_result(&outcomes[2]),
        CommandResult::Put(_)
    ));
    assert_eq!(h.sm.applied().0, LogIndex(3));
}

#[test]
fn newer_command_version_fails_the_batch_without_applying_any_of_it() {
    let mut h = Harness::new();
    let mut newer = untracked(put(b"k2", b"v")).encode().unwrap();
    newer[0] = haven::sm::COMMAND_VERSION + 1;
    let batch = [
        command_entry(1, 1, &untracked(put(b"k1", b"v"))),
        entry(2, 1, EntryKind::Normal, newer),
    ];
    assert!(matches!(
        h.sm.apply(&batch),
        Err(Error::UnsupportedVersion { .. })
    ));
    assert_eq!(h.sm.applied().0, LogIndex(0));
    assert_eq!(h.sm.get(b"k1").unwrap(), None);
    // The member is not poisoned: it can apply the entries it understands.
    h.sm.apply(&batch[..1]).unwrap();
    assert!(h.sm.get(b"k1").unwrap().is_some());
}

#[test]
fn open_refuses_zero_cache() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        StateMachine::open(dir.path().join("s"), 0),
        Err(Error::InvalidArgument(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Garbage command bytes never panic: decode returns an error or a command, and apply
    /// answers every entry with a result.
    #[test]
    fn garbage_command_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), lead in 0u8..3) {
        let mut data = bytes;
        if let Some(first) = data.first_mut() {
            *first = lead; // exercise versions 0, 1 and 2
        }
        let decoded = Command::decode(&data);
        if let Ok(cmd) = &decoded {
            let _ = cmd.validate();
        }
        let mut h = Harness::new();
        match h.sm.apply(&[entry(1, 1, EntryKind::Normal, data)]) {
            Ok(outcomes) => prop_assert_eq!(outcomes.len(), 1),
            Err(e) => prop_assert_eq!(e.code(), ErrorCode::UnsupportedVersion),
        }
    }
}

#[test]
fn second_open_of_a_live_database_is_refused_as_data_dir() {
    let h = Harness::new();
    match StateMachine::open(h.state_path(), CACHE_BYTES) {
        Err(e) => assert_eq!(e.code(), ErrorCode::DataDir, "{e}"),
        Ok(_) => panic!("a second open of a live database succeeded"),
    }
    assert_eq!(h.sm.applied().0, LogIndex(0));
}

#[test]
fn txn_over_the_byte_limit_is_refused_by_validate_and_encode() {
    let one_mib = vec![0u8; MAX_VALUE_BYTES];
    let success: Vec<TxnOp> = (0..5u8).map(|i| tput(&[b'k', i], &one_mib)).collect();
    let cmd = untracked(txn(vec![], success, vec![]));
    let err = cmd.validate().unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("over the limit of"), "{err}");
    // Too big to be a log entry at all: encode refuses it too.
    assert_eq!(cmd.encode().unwrap_err().code(), ErrorCode::InvalidArgument);
}
