//! Sessions and locks end to end, through `Client`s of an in-process cluster: FIFO hand-over,
//! shared and exclusive, try / deadline / forever, a timed-out wait never granted afterwards, a
//! session's end releasing its locks and failing its waits, ephemeral keys, fenced writes,
//! tokens increasing across a failover and a full restart, the TTL bound under repeated
//! leadership transfers, lock-delay after an expiry, a retried acquire answered the same after a
//! failover, a paused leader that re-arms before it revokes, and a blocked `lock` failed by its
//! session's end. Bounds on time are generous (no timing assertions beyond them).

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{remote_client, secret, wait_for, Cluster, CLUSTER};
use haven::client::{ClientOptions, LockOptions, LockWait, SessionState};
use haven::limits::LOCK_WAIT_HOLD_MS;
use haven::net::ClientConnection;
use haven::proto::{ClientRequest, ClientResponse, Request, Response};
use haven::sm::{
    Command, CommandResult, Compare, FencingToken, LockMode, LockResult, Op, SessionId, Txn, TxnOp,
    UNTRACKED_CLIENT,
};
use haven::{ErrorCode, NodeId};
use std::net::SocketAddr;
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

#[test]
fn lock_delay_after_an_expiry_holds_the_lock_back_then_grants_the_waiter() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node(leader).client();
    let holder = client.grant_session(TTL).unwrap();
    let holder_id = holder.id();
    let delayed = LockOptions {
        wait: LockWait::Try,
        lock_delay: Duration::from_secs(3),
        ..LockOptions::default()
    };
    let g = client
        .lock_with(b"d", &holder, delayed)
        .unwrap()
        .expect("free lock");
    let first = g.token();
    // The holder goes silent: no unlock (forget the guard), no keepalives (drop the handle).
    std::mem::forget(g);
    drop(holder);
    let (tx, rx) = mpsc::channel();
    let waiter_client = client.clone();
    let waiter = std::thread::spawn(move || {
        let s = waiter_client.grant_session(TTL).unwrap();
        let g = waiter_client
            .lock(b"d", LockMode::Exclusive, &s, LockWait::Forever)
            .unwrap()
            .expect("forever");
        tx.send(g.token()).unwrap();
        g.unlock().unwrap();
    });
    wait_for("waiter queued", WAIT, || {
        let locks = client.locks().unwrap();
        locks
            .iter()
            .any(|l| l.name == b"d" && l.waiters.len() == 1)
            .then_some(())
    });
    wait_for("holder's session expired", WAIT, || {
        client
            .session_info(holder_id)
            .unwrap()
            .is_none()
            .then_some(())
    });
    // Just after the expiry (well within the 3 s delay): nobody holds it, the waiter waits.
    let locks = client.locks().unwrap();
    let d = locks.iter().find(|l| l.name == b"d").expect("lock listed");
    assert!(d.holders.is_empty(), "granted during the lock-delay: {d:?}");
    assert_eq!(d.waiters.len(), 1);
    assert!(rx.try_recv().is_err());
    // Then the leader ends the delay and the waiter is granted.
    let token = rx.recv_timeout(WAIT).expect("granted after the delay");
    assert!(token > first);
    waiter.join().unwrap();
}

/// One write on a raw client connection to `addr`, retried while no leader answers.
fn raw_write(addr: SocketAddr, cmd: &Command) -> CommandResult {
    let request = Request::Write(cmd.clone());
    wait_for("a raw write", WAIT, || {
        let conn: ClientConnection<ClientRequest, ClientResponse> =
            ClientConnection::connect(addr, CLUSTER, &secret(), 77, Duration::from_secs(5)).ok()?;
        let framed = ClientRequest {
            version: request.protocol_version(),
            timeout_ms: 2 * LOCK_WAIT_HOLD_MS as u32,
            request: request.clone(),
        };
        let answer = conn.call(framed, Duration::from_millis(3 * LOCK_WAIT_HOLD_MS));
        conn.close();
        match answer {
            Ok(Ok(Response::Write(result))) => Some(result),
            _ => None,
        }
    })
}

#[test]
fn a_retried_acquire_gets_the_same_answer_after_a_leader_failover() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let survivor = (leader + 1) % 3;
    // Sessions kept alive over TCP through every member, so they outlive the failover.
    let client = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    let (sa, sb) = (
        client.grant_session(Duration::from_secs(5)).unwrap(),
        client.grant_session(Duration::from_secs(5)).unwrap(),
    );
    let register = Command {
        client_id: UNTRACKED_CLIENT,
        seq: 0,
        op: Op::RegisterClient,
    };
    let registered = |result| match result {
        CommandResult::Registered { client_id } => client_id,
        other => panic!("register: {other:?}"),
    };
    let a = registered(raw_write(cluster.addrs[survivor], &register));
    let b = registered(raw_write(cluster.addrs[survivor], &register));
    let acquire = |client_id, session: SessionId| Command {
        client_id,
        seq: 1,
        op: Op::LockAcquire {
            name: b"r".to_vec(),
            mode: LockMode::Exclusive,
            session,
            wait: true,
        },
    };
    // a: granted at once. b: queued, then granted by a's release.
    let a_cmd = acquire(a, sa.id());
    let a_token = match raw_write(cluster.addrs[survivor], &a_cmd) {
        CommandResult::Lock(LockResult::Granted { token }) => token,
        other => panic!("a: {other:?}"),
    };
    let b_cmd = acquire(b, sb.id());
    let addr = cluster.addrs[survivor];
    let b_cmd_thread = b_cmd.clone();
    let b_wait = std::thread::spawn(move || raw_write(addr, &b_cmd_thread));
    wait_for("b queued", WAIT, || {
        let locks = client.locks().ok()?;
        locks
            .iter()
            .any(|l| l.name == b"r" && l.waiters.len() == 1)
            .then_some(())
    });
    client.unlock(b"r", a_token, sa.id()).unwrap();
    let b_token = match b_wait.join().unwrap() {
        CommandResult::Lock(LockResult::Granted { token }) => token,
        other => panic!("b: {other:?}"),
    };
    assert!(b_token > a_token);
    // The leader fails; both acquires are sent again, unchanged, to the new leader's cluster.
    cluster.stop(leader);
    let new_leader = cluster.wait_leader(WAIT);
    assert_ne!(new_leader, leader);
    for member in [survivor, new_leader] {
        let addr = cluster.addrs[member];
        // a's acquire was a's last command: the remembered answer is its grant.
        assert_eq!(
            raw_write(addr, &a_cmd),
            CommandResult::Lock(LockResult::Granted { token: a_token })
        );
        // b's answer was amended when its wait was granted: the grant, not `Queued`.
        assert_eq!(
            raw_write(addr, &b_cmd),
            CommandResult::Lock(LockResult::Granted { token: b_token })
        );
    }
    // And nothing was applied twice: b still holds with its token, a holds nothing.
    assert!(client.check_token(b"r", b_token).unwrap());
    assert!(!client.check_token(b"r", a_token).unwrap());
    let locks = client.locks().unwrap();
    let r = locks.iter().find(|l| l.name == b"r").unwrap();
    assert_eq!(r.holders.len(), 1);
    assert!(r.waiters.is_empty());
}

#[test]
fn a_leader_whose_clock_jumped_rearms_before_it_revokes_a_kept_alive_session() {
    // One member: it stays leader through the jump (no one else can be elected), so only the
    // re-arm stands between its sessions and an expiry (etcd #12528: a resumed leader revoked
    // every lease).
    let cluster = Cluster::start(1, |_| {});
    cluster.wait_leader(WAIT);
    let client = cluster.node(0).client();
    let s = client.grant_session(TTL).unwrap();
    let g = client
        .lock(b"p", LockMode::Exclusive, &s, LockWait::Try)
        .unwrap()
        .expect("free lock");
    // Let a few keepalives through, then jump the leader's clock past every deadline.
    std::thread::sleep(TTL / 2);
    cluster.node(0).inject_clock_jump(TTL * 10);
    // Keepalives keep arriving: the session must survive well past its TTL after the jump.
    std::thread::sleep(TTL * 3);
    assert!(
        client.session_info(s.id()).unwrap().is_some(),
        "the session was revoked after the leader's clock jumped"
    );
    assert_ne!(s.state(), SessionState::Lost);
    assert!(client.check_token(b"p", g.token()).unwrap());
    // The lease keeper still works after the re-arm: a silent session does expire.
    let silent = client.grant_session(TTL).unwrap().id();
    wait_for("silent session expired", WAIT, || {
        client.session_info(silent).unwrap().is_none().then_some(())
    });
    g.unlock().unwrap();
}

#[test]
fn a_sessions_end_fails_its_blocked_lock_call_at_once_with_session_expired() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node((leader + 1) % 3).client();
    let holder = client.grant_session(TTL).unwrap();
    let g = client
        .lock(b"w", LockMode::Exclusive, &holder, LockWait::Try)
        .unwrap()
        .expect("free lock");
    let waiting = client.grant_session(TTL).unwrap();
    let to_revoke = waiting.clone();
    let waiter_client = client.clone();
    let waiter = std::thread::spawn(move || {
        let result = waiter_client.lock(b"w", LockMode::Exclusive, &waiting, LockWait::Forever);
        (result.map(|g| g.map(|g| g.token())), Instant::now())
    });
    wait_for("waiter queued", WAIT, || {
        let locks = client.locks().unwrap();
        locks
            .iter()
            .any(|l| l.name == b"w" && l.waiters.len() == 1)
            .then_some(())
    });
    let revoked_at = Instant::now();
    to_revoke.revoke().unwrap();
    let (result, returned_at) = waiter.join().unwrap();
    let err = result.expect_err("the waiter's session ended");
    assert_eq!(err.code(), ErrorCode::SessionExpired, "{err}");
    // Answered by the entry that ended the session, not by the held answer's timeout
    // (LOCK_WAIT_HOLD_MS) and a retry.
    assert!(
        returned_at.saturating_duration_since(revoked_at)
            < Duration::from_millis(LOCK_WAIT_HOLD_MS),
        "the blocked lock call waited for the hold timeout"
    );
    // The holder is untouched.
    assert!(client.check_token(b"w", g.token()).unwrap());
    g.unlock().unwrap();
}
