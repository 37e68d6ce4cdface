//! In-process clusters on loopback TCP: every member takes writes and serves linearizable
//! reads, followers forward, and a restarted member catches up.

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{wait_for, Cluster};
use haven::sm::{CasResult, Compare, CompareOp, Txn, TxnOp};
use haven::{ErrorCode, NodeId, ReadMode};
use std::time::Duration;

const LEADER_WAIT: Duration = Duration::from_secs(10);

#[test]
fn three_members_write_on_every_member_and_read_on_every_member() {
    let cluster = Cluster::start(3, |_| {});
    cluster.wait_leader(LEADER_WAIT);
    for (i, node) in cluster.running() {
        let client = node.client();
        for k in 0..20 {
            let key = format!("m{i}-k{k}");
            let put = client.put(key.as_bytes(), b"value").unwrap();
            assert!(put.revision.0 > 1);
        }
    }
    // A write acknowledged before a read starts is seen by a linearizable read anywhere.
    for (_, node) in cluster.running() {
        let client = node.client();
        for i in 0..3 {
            for k in 0..20 {
                let key = format!("m{i}-k{k}");
                let got = client.get(key.as_bytes()).unwrap();
                assert_eq!(got.map(|v| v.value), Some(b"value".to_vec()), "{key}");
            }
        }
        let page = client.scan_prefix(b"m1-", 100).unwrap();
        assert_eq!(page.entries.len(), 20);
        assert!(!page.more);
    }
    cluster.wait_converged(Duration::from_secs(10));
}

#[test]
fn five_members_agree_on_one_state() {
    let cluster = Cluster::start(5, |_| {});
    cluster.wait_leader(LEADER_WAIT);
    for (i, node) in cluster.running() {
        node.client()
            .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    let hash = cluster.wait_converged(Duration::from_secs(10));
    assert_ne!(hash, [0u8; 32]);
    for (_, node) in cluster.running() {
        let status = node.status().unwrap();
        assert_eq!(status.members.len(), 5);
        assert!(status.members.iter().all(|m| m.voter));
    }
}

#[test]
fn operations_return_revisions_and_expected_outcomes_as_values() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(LEADER_WAIT);
    let follower = (leader + 1) % 3;
    let client = cluster.node(follower).client();

    let first = client.put(b"a", b"1").unwrap();
    assert!(first.previous.is_none());
    let second = client.put(b"a", b"2").unwrap();
    assert_eq!(second.previous.unwrap().version, 1);
    let value = client.get(b"a").unwrap().unwrap();
    assert_eq!(value.value, b"2");
    assert_eq!(value.meta.create_revision, first.revision);
    assert_eq!(value.meta.mod_revision, second.revision);
    assert_eq!(value.meta.version, 2);

    // CAS lost and CAS on an absent key are values, not errors.
    match client.compare_and_swap(b"a", Some(b"1"), b"3").unwrap() {
        CasResult::Failed { current } => assert_eq!(current.unwrap().value, b"2"),
        other => panic!("expected a failed CAS, got {other:?}"),
    }
    assert!(matches!(
        client.compare_and_swap(b"new", None, b"x").unwrap(),
        CasResult::Swapped { .. }
    ));
    assert!(client.get(b"absent").unwrap().is_none());
    assert!(!client.delete(b"absent").unwrap().existed());
    assert!(client.delete(b"new").unwrap().existed());

    let txn = Txn {
        compares: vec![Compare::Value {
            key: b"a".to_vec(),
            op: CompareOp::Equal,
            value: b"2".to_vec(),
        }],
        success: vec![
            TxnOp::Put {
                key: b"b".to_vec(),
                value: b"from-txn".to_vec(),
            },
            TxnOp::Get { key: b"a".to_vec() },
        ],
        failure: vec![],
    };
    let result = client.txn(&txn).unwrap();
    assert!(result.succeeded);
    assert_eq!(result.results.len(), 2);
    assert_eq!(
        client.get(b"b").unwrap().unwrap().value,
        b"from-txn".to_vec()
    );
    let range = client.range(b"a", Some(b"c"), 10).unwrap();
    assert_eq!(range.entries.len(), 2);
    let deleted = client.delete_range(b"a", None, 100).unwrap();
    assert_eq!(deleted.deleted, 2);
    assert!(client.get(b"a").unwrap().is_none());
}

#[test]
fn bad_input_is_invalid_argument_and_writes_nothing() {
    let cluster = Cluster::start(3, |_| {});
    cluster.wait_leader(LEADER_WAIT);
    let client = cluster.node(0).client();
    let before = cluster.wait_converged(Duration::from_secs(10));
    let big = vec![0u8; haven::limits::MAX_VALUE_BYTES + 1];
    let e = client.put(b"k", &big).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let e = client.put(b"", b"v").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let e = client.get(b"").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let e = client.range(b"b", Some(b"a"), 10).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let e = client.range(b"a", None, 0).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    // Nothing was proposed: the state (applied index included) did not change; no session
    // was even registered.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cluster.wait_converged(Duration::from_secs(10)), before);
}

#[test]
fn stale_reads_are_local_and_eventually_current() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(LEADER_WAIT);
    cluster.node(leader).client().put(b"s", b"1").unwrap();
    for (_, node) in cluster.running() {
        let client = node.client();
        wait_for(
            "a stale read to see the write",
            Duration::from_secs(5),
            || {
                client
                    .get_with(b"s", ReadMode::Stale)
                    .unwrap()
                    .map(|v| v.value)
                    .filter(|v| v == b"1")
            },
        );
    }
}

#[test]
fn a_restarted_member_catches_up() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(LEADER_WAIT);
    let down = (leader + 1) % 3;
    cluster.stop(down);
    let client = cluster.node(leader).client();
    for k in 0..50 {
        client.put(format!("k{k}").as_bytes(), b"v").unwrap();
    }
    cluster.restart(down);
    cluster.wait_converged(Duration::from_secs(10));
    let status = cluster.node(down).status().unwrap();
    assert!(status.applied_index >= cluster.node(leader).status().unwrap().commit_index);
    assert_eq!(status.id, NodeId(down as u64 + 1));
}

#[test]
fn lease_reads_when_enabled_still_see_every_acknowledged_write() {
    let cluster = Cluster::start(3, |c| c.lease_reads = true);
    let leader = cluster.wait_leader(LEADER_WAIT);
    let readers: Vec<_> = cluster.running().map(|(_, n)| n.client()).collect();
    let writer = cluster.node(leader).client();
    for round in 0..30u32 {
        writer.put(b"lease", &round.to_le_bytes()).unwrap();
        for r in &readers {
            let got = r.get(b"lease").unwrap().unwrap();
            assert_eq!(got.value, round.to_le_bytes(), "round {round}");
        }
    }
    let status = cluster.node(leader).status().unwrap();
    assert!(status.counters.reads >= 30, "{status:?}");
}

/// A leader holds a commit notice (an AppendEntries without entries) up to a millisecond for
/// entries that would carry it (`node/driver/commit_notices.rs`); with nothing more to send it
/// still goes by itself, long before the next heartbeat would tell the followers. Heartbeats
/// here are 165 ms apart: with the notices never sent (tried), every round waits 150-172 ms, for
/// each starts just after the heartbeat that ended the one before. With them a round takes a
/// few milliseconds; a median above 40 ms would take five of ten rounds stalled that long.
#[test]
fn an_idle_follower_learns_a_commit_without_waiting_for_a_heartbeat() {
    let cluster = Cluster::start(3, |c| {
        c.heartbeat_interval_ms = 165;
        c.election_timeout_ms = 330;
    });
    let leader = cluster.wait_leader(LEADER_WAIT);
    let client = cluster.node(leader).client();
    let mut delays = Vec::new();
    for round in 0..10 {
        let put = client
            .put(format!("idle-{round}").as_bytes(), b"v")
            .unwrap();
        let started = std::time::Instant::now();
        wait_for(
            "the followers to apply the write",
            Duration::from_secs(10),
            || {
                cluster
                    .running()
                    .filter(|(i, _)| *i != leader)
                    .all(|(_, node)| node.status().is_ok_and(|s| s.applied_index >= put.revision))
                    .then_some(())
            },
        );
        delays.push(started.elapsed());
    }
    delays.sort();
    assert!(
        delays[5] < Duration::from_millis(40),
        "followers learned of idle commits late (sorted delays {delays:?})"
    );
}
