//! The client: remote and in-process backends, forwarding through followers, linearizable
//! reads on followers, transparent retries that apply a write at most once, failover.

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{remote_client, wait_for, Cluster};
use haven::{ClientOptions, ErrorCode, NodeId, ReadMode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_write_acknowledged_before_a_read_starts_is_seen_on_every_follower() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let writer = cluster.node(leader).client();
    let readers: Vec<_> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| cluster.node(i).client())
        .collect();
    for round in 0..50u32 {
        let value = round.to_le_bytes();
        writer.put(b"register", &value).unwrap();
        for r in &readers {
            // Linearizable (ReadIndex) on a follower: never the previous value.
            let got = r.get(b"register").unwrap().unwrap();
            assert_eq!(got.value, value, "round {round}");
        }
    }
}

#[test]
fn followers_forward_writes_and_a_remote_client_reaches_any_member() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let follower = (leader + 1) % 3;
    // A remote client pinned to a follower (it does not move to the leader).
    let client = remote_client(
        &[cluster.addrs[follower]],
        ClientOptions {
            prefer_leader: false,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let put = client.put(b"via-follower", b"1").unwrap();
    assert!(put.revision.0 > 0);
    assert_eq!(client.status().unwrap().id, NodeId(follower as u64 + 1));
    assert!(cluster.node(follower).status().unwrap().counters.forwarded >= 1);
    assert_eq!(
        client.get(b"via-follower").unwrap().unwrap().value,
        b"1".to_vec()
    );
    let (applied, hash) = client.state_hash().unwrap();
    assert!(applied.0 > 0);
    assert_ne!(hash, [0; 32]);

    // A client given every member finds the leader.
    let all = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    assert_eq!(all.status().unwrap().id, NodeId(leader as u64 + 1));
}

#[test]
fn writes_retried_across_leader_changes_apply_at_most_once() {
    let mut cluster = Cluster::start(3, |_| {});
    cluster.wait_leader(WAIT);
    let client = remote_client(
        &cluster.addrs,
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        let stop = Arc::clone(&stop);
        writers.push(std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("w{w}-{n}");
                n += 1;
                match client.put(key.as_bytes(), b"v") {
                    Ok(_) => acknowledged.push(key),
                    // Only "maybe" or "not applied", never anything else.
                    Err(e) => assert!(
                        matches!(e.code(), ErrorCode::Timeout | ErrorCode::Unavailable),
                        "{e}"
                    ),
                }
            }
            (acknowledged, n)
        }));
    }
    // Move leadership around, then crash (stop) the leader and bring it back.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        let leader = cluster.wait_leader(WAIT);
        let to = NodeId(((leader + 1) % 3) as u64 + 1);
        let _ = cluster.node(leader).transfer_leadership(to);
    }
    let leader = cluster.wait_leader(WAIT);
    cluster.stop(leader);
    std::thread::sleep(Duration::from_millis(300));
    cluster.restart(leader);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    let mut attempted = Vec::new();
    for (w, h) in writers.into_iter().enumerate() {
        let (acks, n) = h.join().unwrap();
        acknowledged.extend(acks);
        attempted.extend((0..n).map(|i| format!("w{w}-{i}")));
    }
    assert!(
        acknowledged.len() > 50,
        "only {} writes",
        acknowledged.len()
    );
    cluster.wait_converged(WAIT);
    let reader = cluster.node(0).client();
    for key in &acknowledged {
        let v = reader.get(key.as_bytes()).unwrap();
        assert!(v.is_some(), "acknowledged write {key} lost");
    }
    // Every key was written by one put: a version above 1 would be a double apply.
    for key in &attempted {
        if let Some(v) = reader.get(key.as_bytes()).unwrap() {
            assert_eq!(v.meta.version, 1, "{key} applied more than once");
        }
    }
}

#[test]
fn a_remote_client_fails_over_when_its_member_stops() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let client = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    client.put(b"a", b"1").unwrap();
    assert_eq!(client.status().unwrap().id, NodeId(leader as u64 + 1));
    cluster.stop(leader);
    client.put(b"b", b"2").unwrap();
    assert_eq!(client.get(b"a").unwrap().unwrap().value, b"1".to_vec());
    let status = wait_for("a status from the new connection", WAIT, || {
        client.status().ok()
    });
    assert_ne!(status.id, NodeId(leader as u64 + 1));
    // A stale read is served by whichever member the client now talks to, once it applied.
    wait_for("a stale read of the write", WAIT, || {
        client
            .get_with(b"b", ReadMode::Stale)
            .ok()
            .flatten()
            .filter(|v| v.value == b"2")
    });
}
