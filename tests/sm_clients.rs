//! At-most-once application through the client table (Raft dissertation, section 6.3):
//! duplicates, stale retries, unknown and evicted clients, the bound on the table.

#[path = "support/sm.rs"]
mod sm_util;

use haven::limits::{MAX_CLIENTS, MAX_RETAINED_RESULT_BYTES};
use haven::sm::{Command, CommandResult, Op, Txn, TxnOp, TxnOpResult};
use haven::LogIndex;
use sm_util::*;

fn cmd(client_id: u64, seq: u64, op: Op) -> Command {
    Command { client_id, seq, op }
}

#[test]
fn registration_hands_out_the_log_index_as_client_id() {
    let mut h = Harness::new();
    h.apply_op(put(b"x", b"y"));
    assert_eq!(h.register(), 2);
    assert_eq!(h.register(), 3);
    assert_eq!(h.sm.client_count(), 2);
}

#[test]
fn same_seq_twice_applies_once_and_returns_the_same_result() {
    let mut h = Harness::new();
    let client = h.register();
    let first = h.apply(cmd(client, 1, put(b"k", b"v")));
    assert!(matches!(first, CommandResult::Put(_)));
    let hash = h.sm.state_hash().unwrap();
    // A retry (after a leader change, say) is committed again at a later index.
    let again = h.apply(cmd(client, 1, put(b"k", b"v")));
    assert_eq!(again, first);
    assert_eq!(h.sm.get(b"k").unwrap().unwrap().meta.version, 1);
    // Only the applied index moved; the KV and client table did not.
    assert_ne!(h.sm.state_hash().unwrap(), hash);
    assert_eq!(
        h.sm.get(b"k").unwrap().unwrap().meta.mod_revision,
        LogIndex(2)
    );
}

#[test]
fn duplicate_in_the_same_batch_is_also_applied_once() {
    let mut h = Harness::new();
    let client = h.register();
    let results = h.apply_batch(&[
        cmd(client, 1, put(b"k", b"1")),
        cmd(client, 1, put(b"k", b"1")),
        cmd(client, 2, put(b"k", b"2")),
        cmd(client, 2, put(b"k", b"2")),
    ]);
    assert_eq!(results[0], results[1]);
    assert_eq!(results[2], results[3]);
    assert_eq!(h.sm.get(b"k").unwrap().unwrap().meta.version, 2);
}

#[test]
fn older_seq_is_stale_and_not_applied() {
    let mut h = Harness::new();
    let client = h.register();
    h.apply(cmd(client, 1, put(b"k", b"1")));
    h.apply(cmd(client, 5, put(b"k", b"5")));
    assert_eq!(
        h.apply(cmd(client, 3, put(b"k", b"3"))),
        CommandResult::Stale { last_seq: 5 }
    );
    assert_eq!(h.sm.get(b"k").unwrap().unwrap().value, b"5".to_vec());
}

#[test]
fn unregistered_client_is_unknown_and_not_applied() {
    let mut h = Harness::new();
    assert_eq!(
        h.apply(cmd(99, 1, put(b"k", b"v"))),
        CommandResult::UnknownClient
    );
    assert_eq!(h.sm.get(b"k").unwrap(), None);
}

#[test]
fn untracked_commands_apply_every_time() {
    let mut h = Harness::new();
    h.apply_op(put(b"k", b"v"));
    h.apply_op(put(b"k", b"v"));
    assert_eq!(h.sm.get(b"k").unwrap().unwrap().meta.version, 2);
    assert_eq!(h.sm.client_count(), 0);
}

#[test]
fn rejected_command_is_not_recorded_so_a_retry_is_rejected_again() {
    let mut h = Harness::new();
    let client = h.register();
    let bad = cmd(client, 1, put(b"", b"v"));
    let first = h.apply(bad.clone());
    assert!(matches!(first, CommandResult::Rejected { .. }));
    assert_eq!(h.apply(bad), first);
    // The seq was not consumed: a valid command with it applies.
    assert!(matches!(
        h.apply(cmd(client, 1, put(b"k", b"v"))),
        CommandResult::Put(_)
    ));
}

#[test]
fn client_table_remembers_across_reopen() {
    let mut h = Harness::new();
    let client = h.register();
    let first = h.apply(cmd(client, 1, put(b"k", b"v")));
    let mut h = h.reopen();
    assert_eq!(h.sm.client_count(), 1);
    assert_eq!(h.apply(cmd(client, 1, put(b"k", b"v"))), first);
    assert_eq!(h.sm.get(b"k").unwrap().unwrap().meta.version, 1);
}

#[test]
fn large_result_is_remembered_as_its_revision_only() {
    let mut h = Harness::new();
    let big = vec![7u8; MAX_RETAINED_RESULT_BYTES + 1];
    h.apply_op(put(b"big", &big));
    let client = h.register();
    let read_big = cmd(
        client,
        1,
        Op::Txn(Txn {
            compares: vec![],
            success: vec![TxnOp::Get {
                key: b"big".to_vec(),
            }],
            failure: vec![],
        }),
    );
    let first = h.apply(read_big.clone());
    let CommandResult::Txn(t) = &first else {
        panic!("unexpected {first:?}");
    };
    assert!(matches!(&t.results[0], TxnOpResult::Get(Some(v)) if v.value == big));
    assert_eq!(
        h.apply(read_big),
        CommandResult::NotRetained {
            revision: LogIndex(3)
        }
    );
}

/// Eviction rule: with the table full, registering evicts the client whose last applied command
/// is oldest; that client then gets UnknownClient for any seq (never a second application).
#[test]
fn full_table_evicts_least_recently_applied_client() {
    let mut h = Harness::new();
    let register_all: Vec<Command> = (0..MAX_CLIENTS)
        .map(|_| untracked(Op::RegisterClient))
        .collect();
    let ids: Vec<u64> = h
        .apply_batch(&register_all)
        .into_iter()
        .map(|r| match r {
            CommandResult::Registered { client_id } => client_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(h.sm.client_count(), MAX_CLIENTS);
    let (oldest, second) = (ids[0], ids[1]);
    // The oldest registration applies a command: now `second` is the least recently applied.
    let applied = h.apply(cmd(oldest, 1, put(b"k", b"1")));
    let newcomer = h.register();
    assert_eq!(h.sm.client_count(), MAX_CLIENTS);
    assert_eq!(
        h.apply(cmd(second, 1, put(b"k", b"2"))),
        CommandResult::UnknownClient
    );
    // The survivors keep their memory; the newcomer works.
    assert_eq!(h.apply(cmd(oldest, 1, put(b"k", b"1"))), applied);
    assert!(matches!(
        h.apply(cmd(newcomer, 1, put(b"k", b"3"))),
        CommandResult::Put(_)
    ));
    // Next to go is ids[2], then ids[3]: order by last applied index, deterministic.
    h.register();
    assert_eq!(
        h.apply(cmd(ids[2], 1, put(b"k", b"4"))),
        CommandResult::UnknownClient
    );
    assert!(matches!(
        h.apply(cmd(ids[3], 1, put(b"k", b"5"))),
        CommandResult::Put(_)
    ));
    // Reopen recounts the table.
    let h = h.reopen();
    assert_eq!(h.sm.client_count(), MAX_CLIENTS);
}
