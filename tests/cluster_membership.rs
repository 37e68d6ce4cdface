//! Membership: a new member joins with an empty data directory (as a learner, caught up by
//! snapshot), is promoted, members are removed, leadership is transferred.

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{fast, free_addrs, secret, wait_for, Cluster, CLUSTER};
use haven::node::{Config, Node};
use haven::{ErrorCode, NodeId};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_new_member_joins_catches_up_by_snapshot_and_becomes_a_voter() {
    let mut cluster = Cluster::start(3, |c| {
        c.snapshot_entries = 100;
        c.snapshot_trailing_entries = 10;
    });
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node(leader).client();
    for k in 0..300 {
        client.put(format!("k{k}").as_bytes(), b"v").unwrap();
    }
    // Member 4: an empty data directory, started with `join`, knowing the running members.
    let addr = free_addrs(1)[0];
    let mut members = cluster.configs[0].members.clone();
    members.insert(NodeId(4), addr.to_string());
    let mut config = Config::new(
        NodeId(4),
        CLUSTER,
        cluster.dir.path().join("n4"),
        addr,
        members,
        secret(),
    );
    fast(&mut config);
    config.join = true;
    let joiner = Node::open(config).unwrap();
    // It never campaigns on its own.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(joiner.status().unwrap().term.0, 0);

    // Membership ops work through any member (a follower forwards them).
    let follower = (leader + 1) % 3;
    cluster
        .node(follower)
        .add_learner(NodeId(4), &addr.to_string())
        .unwrap();
    // Adding it again is a no-op, not an error (a retried request).
    cluster
        .node(leader)
        .add_learner(NodeId(4), &addr.to_string())
        .unwrap();
    wait_for("the learner to apply everything", WAIT, || {
        let s = joiner.status().ok()?;
        let l = cluster.node(leader).status().ok()?;
        (s.applied_index >= l.commit_index && s.applied_index.0 > 300).then_some(())
    });
    let status = joiner.status().unwrap();
    assert!(status.counters.snapshots_received >= 1, "{status:?}");
    assert!(
        !status
            .members
            .iter()
            .find(|m| m.id == NodeId(4))
            .unwrap()
            .voter
    );

    cluster.node(leader).promote_learner(NodeId(4)).unwrap();
    let status = cluster.node(leader).status().unwrap();
    let voters = status.members.iter().filter(|m| m.voter).count();
    assert_eq!(voters, 4);
    assert_eq!(
        joiner.client().get(b"k299").unwrap().unwrap().value,
        b"v".to_vec()
    );
    // Writes through the new member are applied everywhere.
    joiner.client().put(b"from-4", b"hello").unwrap();
    let hash = wait_for("all four to converge", WAIT, || {
        let (a, h) = joiner.state_hash().ok()?;
        for (_, n) in cluster.running() {
            if n.state_hash().ok()? != (a, h) {
                return None;
            }
        }
        Some(h)
    });
    assert_ne!(hash, [0; 32]);

    // Remove it again; the cluster goes on with three voters.
    cluster.node(leader).remove_member(NodeId(4)).unwrap();
    cluster.node(leader).remove_member(NodeId(4)).unwrap(); // idempotent
    joiner.shutdown().unwrap();
    cluster.node(follower).client().put(b"after", b"x").unwrap();
    let status = cluster.node(leader).status().unwrap();
    assert_eq!(status.members.len(), 3);
    cluster.stop(follower);
    // Three voters, one down: still a quorum.
    cluster.node(leader).client().put(b"still", b"up").unwrap();
}

#[test]
fn leadership_moves_where_asked() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let target = NodeId(((leader + 1) % 3) as u64 + 1);
    cluster
        .node((leader + 2) % 3)
        .transfer_leadership(target)
        .unwrap();
    let now = cluster.wait_leader(WAIT);
    assert_eq!(NodeId(now as u64 + 1), target);
    cluster.node(leader).client().put(b"k", b"v").unwrap();
    // A transfer to a non-member is refused as bad input.
    let e = cluster
        .node(now)
        .transfer_leadership(NodeId(9))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
}

#[test]
fn removing_the_last_voter_or_adding_a_bad_address_is_refused() {
    let cluster = Cluster::start(1, |_| {});
    cluster.wait_leader(WAIT);
    let node = cluster.node(0);
    let e = node.remove_member(NodeId(1)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let e = node.add_learner(NodeId(2), "not an address").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    let e = node.promote_learner(NodeId(7)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
}
