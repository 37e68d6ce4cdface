//! Partitions through the fault-injecting proxy: the minority answers `Unavailable` or
//! `Timeout`, the majority goes on, and after healing every member converges to one state.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/proxy.rs"]
mod proxy;

use cluster_support::{free_addrs, wait_for, Cluster};
use haven::{ClientOptions, ErrorCode, ReadMode};
use proxy::Links;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn the_minority_refuses_the_majority_goes_on_and_all_converge_after_healing() {
    let addrs = free_addrs(3);
    let links = Links::new(3);
    links.set_targets(&addrs);
    let cluster = Cluster::start_routed(3, &addrs, |i, j| Some(links.addr(i, j)), |_| {});
    let old = cluster.wait_leader(WAIT);
    for k in 0..20 {
        cluster
            .node(old)
            .client()
            .put(format!("before{k}").as_bytes(), b"1")
            .unwrap();
    }
    let old_term = cluster.node(old).status().unwrap().term;
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    links.partition(&[&[old], &majority]);

    // The majority elects a new leader and takes writes.
    let new = wait_for("a leader in the majority", WAIT, || {
        let s = cluster.node(majority[0]).status().ok()?;
        let l = (s.leader?.0 - 1) as usize;
        majority.contains(&l).then_some(l)
    });
    let new_term = cluster.node(new).status().unwrap().term;
    // Pre-vote and CheckQuorum: one or two elections, not a storm.
    assert!(
        new_term.0 <= old_term.0 + 3,
        "terms went from {old_term} to {new_term}"
    );
    for (n, &i) in majority.iter().enumerate() {
        cluster
            .node(i)
            .client()
            .put(format!("majority{n}").as_bytes(), b"2")
            .unwrap();
    }

    // The minority answers with a definite "not applied" or "maybe", never a false success.
    let minority = cluster.node(old).client_with(ClientOptions {
        request_timeout: Duration::from_millis(1500),
        ..ClientOptions::default()
    });
    let e = minority.put(b"minority", b"3").unwrap_err();
    assert!(
        matches!(e.code(), ErrorCode::Unavailable | ErrorCode::Timeout),
        "{e}"
    );
    let e = minority.get(b"before0").unwrap_err();
    assert!(
        matches!(e.code(), ErrorCode::Unavailable | ErrorCode::Timeout),
        "{e}"
    );
    // Stale reads are served locally, from what the member has.
    assert!(minority
        .get_with(b"before0", ReadMode::Stale)
        .unwrap()
        .is_some());

    links.heal();
    let hash = cluster.wait_converged(WAIT);
    assert_ne!(hash, [0; 32]);
    for (_, node) in cluster.running() {
        let c = node.client();
        assert!(c.get(b"majority0").unwrap().is_some());
        assert!(c.get(b"majority1").unwrap().is_some());
        // The minority's write either never happened or happened once.
        if let Some(v) = c.get(b"minority").unwrap() {
            assert_eq!(v.meta.version, 1);
        }
    }
}

#[test]
fn an_asymmetric_partition_does_not_stop_the_cluster() {
    let addrs = free_addrs(3);
    let links = Links::new(3);
    links.set_targets(&addrs);
    let cluster = Cluster::start_routed(3, &addrs, |i, j| Some(links.addr(i, j)), |_| {});
    let leader = cluster.wait_leader(WAIT);
    let other = (leader + 1) % 3;
    // The leader can no longer reach one follower (but hears from it).
    links.set(leader, other, proxy::Mode::Cut);
    let client = cluster.node((leader + 2) % 3).client();
    for k in 0..20 {
        client.put(format!("k{k}").as_bytes(), b"v").unwrap();
    }
    links.heal();
    cluster.wait_converged(WAIT);
}
