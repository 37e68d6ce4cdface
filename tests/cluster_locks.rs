//! Sessions and locks end to end, through `Client`s of an in-process cluster: FIFO hand-over,
//! shared and exclusive, try / deadline / forever, a timed-out wait never granted afterwards, a
//! session's end releasing its locks and failing its waits, ephemeral keys, fenced writes,
//! tokens increasing across a failover and a full restart, and the TTL bound under repeated
//! leadership transfers. Bounds on time are generous (no timing assertions beyond them).

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{wait_for, Cluster};
use haven::client::{LockWait, SessionState};
use haven::sm::{Compare, FencingToken, LockMode, Txn, TxnOp};
use haven::{ErrorCode, NodeId};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_millis(1_000);

#[test]
fn waiters_are_served_in_request_order_and_a_timed_out_wait_is_never_granted() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node((leader + 1) % 3).client();
    let s0 = client.grant_session(TTL).unwrap();
    let held = client
        .lock(b"l", LockMode::Exclusive, &s0, LockWait::Try)
        .unwrap()
        .expect("free lock");
    // A try on a held lock: None at once. A short deadline: None, and cancelled.
    let s_try = client.grant_session(TTL).unwrap();
    assert!(client
        .lock(b"l", LockMode::Exclusive, &s_try, LockWait::Try)
        .unwrap()
        .is_none());
    let timed_out = client
        .lock(
            b"l",
            LockMode::Exclusive,
            &s_try,
            LockWait::Deadline(Duration::from_millis(300)),
        )
        .unwrap();
    assert!(timed_out.is_none());
    // Three waiters queued in order; each reports its grant order.
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for i in 0..3u32 {
        let c = client.clone();
        let tx = tx.clone();
        let s = client.grant_session(TTL).unwrap();
        threads.push(std::thread::spawn(move || {
            let g = c
                .lock(b"l", LockMode::Exclusive, &s, LockWait::Forever)
                .unwrap()
                .expect("forever");
            tx.send((i, g.token())).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            g.unlock().unwrap();
        }));
        // Make sure waiter i is queued before i + 1 asks.
        wait_for("waiter queued", WAIT, || {
            let locks = client.locks().unwrap();
            (locks.iter().map(|l| l.waiters.len()).sum::<usize>() == i as usize + 1).then_some(())
        });
    }
    let first_token = held.token();
    held.unlock().unwrap();
    let order: Vec<(u32, FencingToken)> = (0..3).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        order.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let mut last = first_token;
    for (_, token) in &order {
        assert!(*token > last, "tokens strictly increase: {order:?}");
        last = *token;
    }
    // The cancelled waiter (s_try) was never granted: nobody holds the lock now.
    assert!(client.locks().unwrap().is_empty());
}

#[test]
fn shared_holders_coexist_and_a_writer_waits_for_them() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node(leader).client();
    let (a, b, w) = (
        client.grant_session(TTL).unwrap(),
        client.grant_session(TTL).unwrap(),
        client.grant_session(TTL).unwrap(),
    );
    let ra = client
        .lock(b"rw", LockMode::Shared, &a, LockWait::Try)
        .unwrap()
        .unwrap();
    let rb = client
        .lock(b"rw", LockMode::Shared, &b, LockWait::Try)
        .unwrap()
        .unwrap();
    assert!(client
        .lock(b"rw", LockMode::Exclusive, &w, LockWait::Try)
        .unwrap()
        .is_none());
    assert!(client.check_token(b"rw", ra.token()).unwrap());
    assert!(client.check_token(b"rw", rb.token()).unwrap());
    drop(ra);
    drop(rb);
    let wg = client
        .lock(b"rw", LockMode::Exclusive, &w, LockWait::Deadline(WAIT))
        .unwrap()
        .unwrap();
    assert!(!client.check_token(b"rw", FencingToken(1)).unwrap());
    wg.unlock().unwrap();
}

#[test]
fn a_revoked_session_releases_its_locks_fails_its_waits_and_deletes_its_keys() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node(leader).client();
    let holder = client.grant_session(TTL).unwrap();
    let g = client
        .lock(b"x", LockMode::Exclusive, &holder, LockWait::Try)
        .unwrap()
        .unwrap();
    let token = g.token();
    client.put_with_session(b"eph", b"1", &holder).unwrap();
    // A fenced write with the current token succeeds.
    let fenced = |t: FencingToken| Txn {
        compares: vec![Compare::LockHeld {
            name: b"x".to_vec(),
            token: t,
        }],
        success: vec![TxnOp::Put {
            key: b"data".to_vec(),
            value: t.0.to_le_bytes().to_vec(),
        }],
        failure: vec![],
    };
    assert!(client.txn(&fenced(token)).unwrap().succeeded);
    std::mem::forget(g); // the session's end releases it, not the guard
    holder.revoke().unwrap();
    assert_eq!(holder.state(), SessionState::Lost);
    assert!(
        client.get(b"eph").unwrap().is_none(),
        "ephemeral key deleted"
    );
    assert!(!client.check_token(b"x", token).unwrap());
    assert!(
        !client.txn(&fenced(token)).unwrap().succeeded,
        "stale token refused"
    );
    let err = client
        .lock(b"x", LockMode::Exclusive, &holder, LockWait::Try)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::SessionExpired);
}

#[test]
fn a_silent_session_expires_within_its_bound_despite_repeated_leader_changes() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node(leader).client();
    // Granted through a session handle that is dropped at once: no keepalives ever.
    let id = client.grant_session(TTL).unwrap().id();
    let started = Instant::now();
    let mut transfers = 0;
    loop {
        let l = cluster.wait_leader(WAIT);
        let to = (l + 1) % 3;
        let _ = cluster
            .node(l)
            .client()
            .transfer_leadership(NodeId(to as u64 + 1));
        transfers += 1;
        let alive = cluster
            .node(to)
            .client()
            .session_info(id)
            .unwrap()
            .is_some();
        if !alive {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "session {id} still alive after {transfers} transfers"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        transfers >= 2,
        "the bound was exercised across leader changes"
    );
}

#[test]
fn tokens_increase_across_a_failover_and_a_full_restart() {
    let mut cluster = Cluster::start(3, |_| {});
    let mut last = FencingToken(0);
    for round in 0..3 {
        let leader = cluster.wait_leader(WAIT);
        let client = cluster.node(leader).client();
        let s = client.grant_session(TTL).unwrap();
        let g = wait_for("lock", WAIT, || {
            client
                .lock(b"t", LockMode::Exclusive, &s, LockWait::Try)
                .ok()
                .flatten()
        });
        assert!(
            g.token() > last,
            "round {round}: {} after {last}",
            g.token()
        );
        last = g.token();
        g.unlock().unwrap();
        s.revoke().unwrap();
        match round {
            0 => {
                cluster.stop(leader);
                cluster.restart(leader);
            }
            _ => {
                for i in 0..3 {
                    cluster.stop(i);
                }
                for i in 0..3 {
                    cluster.restart(i);
                }
            }
        }
    }
}
