//! Lock-delay in the state machine (issue 9, "optional lock-delay after an expiry, not after a
//! clean release"): a holder's session *expiring* makes its lock grant no one until a
//! `LockDelayEnd` entry; a release or a revoke does not; waiters stay queued and are granted in
//! request order by the entry that ends the delay; the delay survives a reopen; and old
//! (version 3) acquires mean "no delay".

#[path = "support/sm.rs"]
mod sm_util;

use haven::sm::{
    Command, CommandResult, FencingToken, LockMode, LockResult, LockWaitEnded, LockWaitResult, Op,
    SessionId,
};
use sm_util::{command_entry, command_result, untracked, Harness};

/// Apply one command; its result and the lock waits it ended.
fn apply(h: &mut Harness, cmd: Command) -> (CommandResult, Vec<LockWaitEnded>) {
    let index = h.next_index();
    let entry = command_entry(index, h.term, &cmd);
    h.log.push(entry.clone());
    let outcomes = h.sm.apply(&[entry]).unwrap();
    (command_result(&outcomes[0]), outcomes[0].lock_waits.clone())
}

fn grant(h: &mut Harness) -> SessionId {
    match h.apply_op(Op::SessionGrant { ttl_ms: 5_000 }) {
        CommandResult::SessionGranted { session, .. } => session,
        other => panic!("grant: {other:?}"),
    }
}

fn acquire(client_id: u64, seq: u64, session: SessionId, lock_delay_ms: u64) -> Command {
    Command {
        client_id,
        seq,
        op: Op::LockAcquireWithDelay {
            name: b"l".to_vec(),
            mode: LockMode::Exclusive,
            session,
            wait: true,
            lock_delay_ms,
        },
    }
}

fn granted(result: &CommandResult) -> FencingToken {
    match result {
        CommandResult::Lock(LockResult::Granted { token }) => *token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn expire(session: SessionId) -> Command {
    untracked(Op::SessionExpire {
        sessions: vec![session],
    })
}

fn end_delay() -> Command {
    untracked(Op::LockDelayEnd {
        names: vec![b"l".to_vec()],
    })
}

#[test]
fn an_expiry_delays_the_lock_and_the_delay_end_grants_the_waiters_in_order() {
    let mut h = Harness::new();
    let (c1, c2, c3) = (h.register(), h.register(), h.register());
    let (s1, s2, s3) = (grant(&mut h), grant(&mut h), grant(&mut h));
    let (r, _) = apply(&mut h, acquire(c1, 1, s1, 2_000));
    let first = granted(&r);
    let (r, _) = apply(&mut h, acquire(c2, 1, s2, 0));
    assert_eq!(r, CommandResult::Lock(LockResult::Queued));

    // s1 expires while holding: nobody is granted, the waiter stays queued.
    let (r, waits) = apply(&mut h, expire(s1));
    assert_eq!(r, CommandResult::SessionsUpdated { sessions: 1 });
    assert!(waits.is_empty(), "granted during the delay: {waits:?}");
    assert_eq!(h.sm.lock_delays().unwrap(), vec![(b"l".to_vec(), 2_000)]);
    let info = h.sm.lock(b"l").unwrap().expect("waiter still listed");
    assert!(info.holders.is_empty());
    assert_eq!(info.waiters.len(), 1);

    // A new request queues behind it; a try is busy.
    let (r, _) = apply(&mut h, acquire(c3, 1, s3, 0));
    assert_eq!(r, CommandResult::Lock(LockResult::Queued));
    let s_try = grant(&mut h);
    let (r, _) = apply(
        &mut h,
        untracked(Op::LockAcquire {
            name: b"l".to_vec(),
            mode: LockMode::Exclusive,
            session: s_try,
            wait: false,
        }),
    );
    assert_eq!(r, CommandResult::Lock(LockResult::Busy));

    // The delay survives a reopen (it is replicated state, not a timer).
    h = h.reopen();
    assert_eq!(h.sm.lock_delays().unwrap(), vec![(b"l".to_vec(), 2_000)]);

    // The end grants the head of the queue, with this entry's index as its token.
    let end_index = h.next_index();
    let (r, waits) = apply(&mut h, end_delay());
    assert_eq!(r, CommandResult::LockDelaysEnded { locks: 1 });
    assert_eq!(
        waits,
        vec![LockWaitEnded {
            client_id: c2,
            seq: 1,
            name: b"l".to_vec(),
            result: LockWaitResult::Granted {
                token: FencingToken(end_index)
            },
        }]
    );
    assert!(FencingToken(end_index) > first);
    assert!(h.sm.lock_delays().unwrap().is_empty());
    // A retried acquire of the granted waiter answers its grant.
    let (r, _) = apply(&mut h, acquire(c2, 1, s2, 0));
    assert_eq!(granted(&r), FencingToken(end_index));
    // A repeated end changes nothing.
    let (r, waits) = apply(&mut h, end_delay());
    assert_eq!(r, CommandResult::LockDelaysEnded { locks: 0 });
    assert!(waits.is_empty());

    // c2 releases (no delay after a release): c3 is granted by the release itself.
    let release_index = h.next_index();
    let (r, waits) = apply(
        &mut h,
        Command {
            client_id: c2,
            seq: 2,
            op: Op::LockRelease {
                name: b"l".to_vec(),
                token: FencingToken(end_index),
                session: s2,
            },
        },
    );
    assert_eq!(r, CommandResult::LockReleased { released: true });
    assert_eq!(waits.len(), 1);
    assert_eq!((waits[0].client_id, waits[0].seq), (c3, 1));
    assert_eq!(
        waits[0].result,
        LockWaitResult::Granted {
            token: FencingToken(release_index)
        }
    );
}

#[test]
fn a_release_or_a_revoke_starts_no_delay_and_a_zero_delay_expiry_neither() {
    let mut h = Harness::new();
    let c = h.register();
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    // Release of a delayed grant.
    let s = grant(&mut h);
    let (r, _) = apply(&mut h, acquire(c, next(), s, 5_000));
    let token = granted(&r);
    let release = Command {
        client_id: c,
        seq: next(),
        op: Op::LockRelease {
            name: b"l".to_vec(),
            token,
            session: s,
        },
    };
    assert_eq!(
        apply(&mut h, release).0,
        CommandResult::LockReleased { released: true }
    );
    assert!(h.sm.lock_delays().unwrap().is_empty());
    // Revoke of a session holding a delayed grant: the client's own clean end.
    let (r, _) = apply(&mut h, acquire(c, next(), s, 5_000));
    granted(&r);
    let revoke = Command {
        client_id: c,
        seq: next(),
        op: Op::SessionRevoke { session: s },
    };
    assert_eq!(apply(&mut h, revoke).0, CommandResult::SessionRevoked);
    assert!(h.sm.lock_delays().unwrap().is_empty());
    // Expiry of a grant that asked for no delay (old command and explicit 0).
    for op_delay in [None, Some(0)] {
        let s = grant(&mut h);
        let op = match op_delay {
            None => Op::LockAcquire {
                name: b"l".to_vec(),
                mode: LockMode::Exclusive,
                session: s,
                wait: true,
            },
            Some(d) => acquire(c, 0, s, d).op,
        };
        let (r, _) = apply(
            &mut h,
            Command {
                client_id: c,
                seq: next(),
                op,
            },
        );
        granted(&r);
        apply(&mut h, expire(s));
        assert!(h.sm.lock_delays().unwrap().is_empty(), "{op_delay:?}");
    }
    // A free lock is granted at once again.
    let s = grant(&mut h);
    let (r, _) = apply(&mut h, acquire(c, next(), s, 0));
    granted(&r);
}

#[test]
fn an_expiring_waiter_starts_no_delay_and_a_delayed_lock_without_waiters_ends_quietly() {
    let mut h = Harness::new();
    let (c1, c2, c3) = (h.register(), h.register(), h.register());
    let (s1, s2, s3) = (grant(&mut h), grant(&mut h), grant(&mut h));
    granted(&apply(&mut h, acquire(c1, 1, s1, 0)).0);
    // s2 waits with a delay and expires while waiting: it held nothing, no delay.
    assert_eq!(
        apply(&mut h, acquire(c2, 1, s2, 3_000)).0,
        CommandResult::Lock(LockResult::Queued)
    );
    let (_, waits) = apply(&mut h, expire(s2));
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].result, LockWaitResult::SessionEnded);
    assert!(h.sm.lock_delays().unwrap().is_empty());
    // s3 holds after s1 releases, with a delay; it expires together with nobody waiting.
    let release = Command {
        client_id: c1,
        seq: 2,
        op: Op::LockRelease {
            name: b"l".to_vec(),
            token: h.sm.lock(b"l").unwrap().unwrap().holders[0].token,
            session: s1,
        },
    };
    apply(&mut h, release);
    granted(&apply(&mut h, acquire(c3, 1, s3, 1_000)).0);
    apply(&mut h, expire(s3));
    assert_eq!(h.sm.lock_delays().unwrap(), vec![(b"l".to_vec(), 1_000)]);
    // No holders and no waiters, but the lock stays delayed; its end grants nobody.
    assert!(h.sm.lock(b"l").unwrap().is_none());
    let (r, waits) = apply(&mut h, end_delay());
    assert_eq!(r, CommandResult::LockDelaysEnded { locks: 1 });
    assert!(waits.is_empty());
    assert!(h.sm.lock_delays().unwrap().is_empty());
}
