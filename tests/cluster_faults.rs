//! A member whose thread dies or whose disk fails stops loudly (issue 14): its status reports
//! the failure, every call fails with `Fatal`, `haven serve` exits non-zero, and the other
//! members keep committing without losing an acknowledged write.

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{free_addrs, wait_for, Cluster, ServeProcess};
use haven::client::NodeRole;
use haven::node::NodeThread;
use haven::wal::FaultInjector;
use haven::Error;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Index of a running member that is not the leader.
fn a_follower(cluster: &Cluster, leader: usize) -> usize {
    (0..cluster.nodes.len()).find(|&i| i != leader).unwrap()
}

fn assert_stopped_loudly(cluster: &Cluster, i: usize, what: &str) {
    let node = cluster.node(i);
    let why = wait_for("the failure to be recorded", WAIT, || node.failure());
    assert!(why.contains(what), "failure names the cause: {why}");
    let status = node.status().expect("status of a failed member");
    assert_eq!(status.role, NodeRole::Stopped);
    assert_eq!(status.failure.as_deref(), Some(why.as_str()));
    match node.client().put(b"after-failure", b"x") {
        Err(Error::Fatal(message)) => assert_eq!(message, why),
        other => panic!("a call on a failed member must fail with Fatal, got {other:?}"),
    }
}

/// Writes through the leader still commit, and every acknowledged key is on the survivors.
fn survivors_keep_committing(cluster: &Cluster, failed: usize, prefix: &str) {
    let leader = cluster.wait_leader(WAIT);
    assert_ne!(leader, failed);
    let client = cluster.node(leader).client();
    for k in 0..20 {
        client
            .put(format!("{prefix}/{k}").as_bytes(), b"v")
            .expect("the survivors commit");
    }
    for (i, node) in cluster.running().filter(|(i, _)| *i != failed) {
        let reader = node.client();
        wait_for(&format!("member {i} to have every write"), WAIT, || {
            (0..20)
                .all(|k| {
                    reader
                        .get(format!("{prefix}/{k}").as_bytes())
                        .ok()
                        .flatten()
                        .is_some()
                })
                .then_some(())
        });
    }
}

#[test]
fn a_panicking_driver_stops_its_member_loudly_and_the_others_go_on() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let victim = a_follower(&cluster, leader);
    cluster.node(leader).client().put(b"before", b"1").unwrap();
    cluster.node(victim).inject_panic(NodeThread::Driver);
    assert_stopped_loudly(&cluster, victim, "driver panicked: injected panic");
    survivors_keep_committing(&cluster, victim, "driver-died");
}

#[test]
fn a_panicking_apply_thread_stops_its_member_loudly_and_the_others_go_on() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let victim = a_follower(&cluster, leader);
    cluster.node(victim).inject_panic(NodeThread::Apply);
    assert_stopped_loudly(&cluster, victim, "apply panicked: injected panic");
    survivors_keep_committing(&cluster, victim, "apply-died");
}

#[test]
fn an_fdatasync_failure_on_one_member_of_three_stops_it_and_loses_nothing() {
    let faults = Arc::new(FaultInjector::new());
    let victim_faults = Arc::clone(&faults);
    // Member 3 gets the injector; the leader may be any member, so fail it whichever role it
    // has: the rule (a failed fsync is fatal, never retried) is the same for both.
    let cluster = Cluster::start(3, move |c| {
        if c.id.0 == 3 {
            c.wal_faults = Some(Arc::clone(&victim_faults));
        }
    });
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node(leader).client();
    for k in 0..20 {
        client.put(format!("acked/{k}").as_bytes(), b"v").unwrap();
    }
    faults.fail_syncs();
    // The next write that reaches member 3's WAL fails its fdatasync. Writes go on through
    // whichever member leads afterwards.
    let writer = || {
        let leader = cluster.wait_leader(WAIT);
        cluster.node(leader).client()
    };
    let mut acked = Vec::new();
    for k in 0..40 {
        let key = format!("during/{k}");
        if writer().put(key.as_bytes(), b"v").is_ok() {
            acked.push(key);
        }
        if cluster.node(2).failure().is_some() && k >= 20 {
            break;
        }
    }
    let why = wait_for("member 3 to fail", WAIT, || cluster.node(2).failure());
    assert!(
        why.to_lowercase().contains("fsync") || why.contains("sync"),
        "{why}"
    );
    assert_eq!(cluster.node(2).status().unwrap().role, NodeRole::Stopped);
    survivors_keep_committing(&cluster, 2, "after-fsync-failure");
    // No acknowledged write was lost: every one is on both survivors.
    for (_, node) in cluster.running().filter(|(i, _)| *i != 2) {
        let reader = node.client();
        for key in (0..20)
            .map(|k| format!("acked/{k}"))
            .chain(acked.iter().cloned())
        {
            wait_for(&format!("{key} on a survivor"), WAIT, || {
                reader.get(key.as_bytes()).ok().flatten().map(|_| ())
            });
        }
    }
}

#[test]
fn haven_serve_exits_non_zero_when_its_member_fails() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(1);
    let mut serve = ServeProcess::start_with_env(
        dir.path(),
        1,
        &addrs,
        &[],
        &[("HAVEN_FAULT_PANIC", "driver")],
    );
    let status = serve
        .wait_exit(WAIT)
        .expect("haven serve exits by itself after its driver panicked");
    assert!(!status.success(), "exit status {status:?}");
    let log = serve.log_text();
    assert!(
        log.contains("the member stopped: thread haven-1-driver panicked"),
        "{log}"
    );
}

#[test]
fn an_impossible_peer_message_is_dropped_counted_per_peer_and_shown_in_status() {
    use haven::net::{Transport, TransportConfig};
    use haven::node::PeerMessage;
    use haven::raft::{Message, MessageBody};
    use haven::{GroupId, LogIndex, NodeId, Term};

    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let follower = a_follower(&cluster, leader);
    let (leader_id, follower_id) = (NodeId(leader as u64 + 1), NodeId(follower as u64 + 1));
    let term = cluster.node(leader).status().unwrap().term;
    // Whoever holds the member secret can dial as a member: here, as the follower.
    let config = TransportConfig::new(
        follower_id,
        cluster_support::CLUSTER,
        cluster_support::secret(),
        "127.0.0.1:0".parse().unwrap(),
    );
    let (tx, _rx) = crossbeam_channel::unbounded();
    let forger =
        Transport::<PeerMessage>::start(config, &[(leader_id, cluster.addrs[leader])], tx, None)
            .expect("dial as a member");
    // An acknowledgement of entries far beyond the leader's log: no correct follower sends it.
    let forged = PeerMessage::Raft(Message {
        group: GroupId(0),
        from: follower_id,
        to: leader_id,
        term,
        body: MessageBody::AppendEntriesResponse {
            success: true,
            index: LogIndex(u64::MAX / 2),
            hint_index: LogIndex(0),
            hint_term: Term(0),
        },
    });
    let status = wait_for("the forged message to be counted", WAIT, || {
        forger.send(leader_id, forged.clone());
        let status = cluster.node(leader).status().ok()?;
        (status.counters.peer_messages_rejected > 0).then_some(status)
    });
    let row = status.members.iter().find(|m| m.id == follower_id).unwrap();
    assert!(row.rejected_messages > 0, "{row:?}");
    assert!(cluster.node(leader).failure().is_none());
    forger.shutdown();
    // The leader keeps leading and committing.
    survivors_keep_committing(&cluster, usize::MAX, "after-forgery");
}
