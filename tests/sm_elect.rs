//! Elections in the state machine (`src/sm/elect.rs`, on the lock table): campaigners lead in
//! the order of their request, only the leader proclaims, a resign or a session's end promotes
//! the next campaigner, a retried campaign gets the same answer, a campaign withdrawn by its
//! session never leads, the leader read, and an election's name never meets a lock's.

#[path = "support/sm.rs"]
mod sm_util;

use haven::sm::{
    CancelResult, ChangeCapture, ChangeTarget, Command, CommandResult, ElectionLeader,
    FencingToken, LockMode, LockResult, LockWaitResult, Op, SessionId,
};
use sm_util::{command_entry, Harness};

fn grant(h: &mut Harness) -> SessionId {
    match h.apply_op(Op::SessionGrant { ttl_ms: 10_000 }) {
        CommandResult::SessionGranted { session, .. } => session,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn campaign(name: &[u8], value: &[u8], session: SessionId) -> Op {
    Op::ElectionCampaign {
        name: name.to_vec(),
        value: value.to_vec(),
        session,
    }
}

/// A tracked command of `client` with `seq`.
fn tracked(client_id: u64, seq: u64, op: Op) -> Command {
    Command { client_id, seq, op }
}

fn granted(result: CommandResult) -> FencingToken {
    match result {
        CommandResult::Lock(LockResult::Granted { token }) => token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn leader(h: &Harness, name: &[u8]) -> Option<ElectionLeader> {
    h.sm.leader(name).unwrap()
}

#[test]
fn campaigners_lead_in_request_order_and_resign_promotes_the_next() {
    let mut h = Harness::new();
    let (a, b, c) = (grant(&mut h), grant(&mut h), grant(&mut h));
    assert_eq!(leader(&h, b"e"), None);
    let client = h.register();
    let ta = granted(h.apply(tracked(client, 1, campaign(b"e", b"A", a))));
    assert_eq!(
        h.apply(tracked(client, 2, campaign(b"e", b"B", b))),
        CommandResult::Lock(LockResult::Queued)
    );
    assert_eq!(
        h.apply(tracked(client, 3, campaign(b"e", b"C", c))),
        CommandResult::Lock(LockResult::Queued)
    );
    let now = leader(&h, b"e").unwrap();
    assert_eq!(
        (now.value.as_slice(), now.token, now.session),
        (&b"A"[..], ta, a)
    );

    // Resign by token: B (the earlier campaigner) leads, with a larger token.
    let index = h.next_index();
    assert_eq!(
        h.apply_op(Op::ElectionResign {
            name: b"e".to_vec(),
            token: ta,
        }),
        CommandResult::LockReleased { released: true }
    );
    let now = leader(&h, b"e").unwrap();
    assert_eq!(now.value, b"B");
    assert_eq!(now.session, b);
    assert_eq!(now.token, FencingToken(index));
    assert!(now.token > ta);
    // A second resign of the same token changes nothing.
    assert_eq!(
        h.apply_op(Op::ElectionResign {
            name: b"e".to_vec(),
            token: ta,
        }),
        CommandResult::LockReleased { released: false }
    );
    assert_eq!(leader(&h, b"e").unwrap().session, b);
}

#[test]
fn only_the_leader_proclaims() {
    let mut h = Harness::new();
    let (a, b) = (grant(&mut h), grant(&mut h));
    let client = h.register();
    let ta = granted(h.apply(tracked(client, 1, campaign(b"e", b"A", a))));
    h.apply(tracked(client, 2, campaign(b"e", b"B", b)));
    let proclaim = |token, value: &[u8]| Op::ElectionProclaim {
        name: b"e".to_vec(),
        token,
        value: value.to_vec(),
    };
    assert_eq!(
        h.apply_op(proclaim(ta, b"A2")),
        CommandResult::Proclaimed { proclaimed: true }
    );
    assert_eq!(leader(&h, b"e").unwrap().value, b"A2");
    // A token that does not lead (made up, or of another election) proclaims nothing.
    assert_eq!(
        h.apply_op(proclaim(FencingToken(ta.0 + 1), b"X")),
        CommandResult::Proclaimed { proclaimed: false }
    );
    assert_eq!(
        h.apply_op(Op::ElectionProclaim {
            name: b"other".to_vec(),
            token: ta,
            value: b"X".to_vec(),
        }),
        CommandResult::Proclaimed { proclaimed: false }
    );
    assert_eq!(leader(&h, b"e").unwrap().value, b"A2");
    assert_eq!(leader(&h, b"other"), None);
    // Once it resigned, the old leader's proclaim is refused and B's value stands.
    h.apply_op(Op::ElectionResign {
        name: b"e".to_vec(),
        token: ta,
    });
    assert_eq!(
        h.apply_op(proclaim(ta, b"late")),
        CommandResult::Proclaimed { proclaimed: false }
    );
    assert_eq!(leader(&h, b"e").unwrap().value, b"B");
}

#[test]
fn a_session_end_ends_leadership_and_fails_its_campaigns() {
    let mut h = Harness::new();
    let (a, b, c) = (grant(&mut h), grant(&mut h), grant(&mut h));
    let client = h.register();
    granted(h.apply(tracked(client, 1, campaign(b"e", b"A", a))));
    h.apply(tracked(client, 2, campaign(b"e", b"B", b)));
    h.apply(tracked(client, 3, campaign(b"e", b"C", c)));
    // B's session ends while it campaigns: its campaign fails at once.
    let first = h.next_index();
    let entry = command_entry(
        first,
        h.term,
        &sm_util::untracked(Op::SessionRevoke { session: b }),
    );
    let outcomes = h.sm.apply(&[entry]).unwrap();
    let waits = &outcomes[0].lock_waits;
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!((waits[0].client_id, waits[0].seq), (client, 2));
    assert_eq!(waits[0].result, LockWaitResult::SessionEnded);
    assert_eq!(leader(&h, b"e").unwrap().session, a);
    // A's session expires: C leads, and the grant is reported for its held request.
    let index = h.next_index();
    let entry = command_entry(
        index,
        h.term,
        &sm_util::untracked(Op::SessionExpire { sessions: vec![a] }),
    );
    let outcomes = h.sm.apply(&[entry]).unwrap();
    let waits = &outcomes[0].lock_waits;
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!((waits[0].client_id, waits[0].seq), (client, 3));
    assert_eq!(
        waits[0].result,
        LockWaitResult::Granted {
            token: FencingToken(index)
        }
    );
    let now = leader(&h, b"e").unwrap();
    assert_eq!((now.session, now.value.as_slice()), (c, &b"C"[..]));
    // C's end leaves no leader and no record.
    h.apply_op(Op::SessionRevoke { session: c });
    assert_eq!(leader(&h, b"e"), None);
    assert_eq!(h.sm.election(b"e").unwrap(), None);
}

#[test]
fn a_retried_campaign_gets_the_same_answer() {
    let mut h = Harness::new();
    let (a, b) = (grant(&mut h), grant(&mut h));
    let client = h.register();
    let first = tracked(client, 1, campaign(b"e", b"A", a));
    let ta = granted(h.apply(first.clone()));
    assert_eq!(granted(h.apply(first)), ta, "a retry of a grant");
    let queued = tracked(client, 2, campaign(b"e", b"B", b));
    assert_eq!(
        h.apply(queued.clone()),
        CommandResult::Lock(LockResult::Queued)
    );
    assert_eq!(
        h.apply(queued.clone()),
        CommandResult::Lock(LockResult::Queued),
        "a retry while it waits queues nothing twice"
    );
    assert_eq!(h.sm.election(b"e").unwrap().unwrap().waiters.len(), 1);
    let index = h.next_index();
    h.apply_op(Op::ElectionResign {
        name: b"e".to_vec(),
        token: ta,
    });
    // The remembered answer was amended by the grant.
    assert_eq!(granted(h.apply(queued)), FencingToken(index));
    // A new campaign of a session that leads already: AlreadyHeld with its token.
    assert_eq!(
        h.apply(tracked(client, 3, campaign(b"e", b"again", b))),
        CommandResult::Lock(LockResult::AlreadyHeld {
            token: Some(FencingToken(index))
        })
    );
}

#[test]
fn a_withdrawn_campaign_never_leads_and_its_retry_learns_it() {
    let mut h = Harness::new();
    let (a, b) = (grant(&mut h), grant(&mut h));
    let (c1, c2, other) = (h.register(), h.register(), h.register());
    let ta = granted(h.apply(tracked(c1, 1, campaign(b"e", b"A", a))));
    let queued = tracked(c2, 1, campaign(b"e", b"B", b));
    h.apply(queued.clone());
    // Withdrawn by session, from another client (the campaigner's id may be gone): the held
    // request is told at once, and a retry of it learns it too.
    let index = h.next_index();
    let withdraw = tracked(
        other,
        1,
        Op::ElectionCancel {
            name: b"e".to_vec(),
            session: b,
        },
    );
    let outcomes =
        h.sm.apply(&[command_entry(index, h.term, &withdraw)])
            .unwrap();
    assert_eq!(
        sm_util::command_result(&outcomes[0]),
        CommandResult::LockCancel(CancelResult::Cancelled)
    );
    let waits = &outcomes[0].lock_waits;
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!((waits[0].client_id, waits[0].seq), (c2, 1));
    assert_eq!(waits[0].result, LockWaitResult::Cancelled);
    assert_eq!(
        h.apply(queued),
        CommandResult::LockCancel(CancelResult::Cancelled)
    );
    // Withdrawing the leader's session does not unseat it: it is told its token.
    assert_eq!(
        h.apply_op(Op::ElectionCancel {
            name: b"e".to_vec(),
            session: a,
        }),
        CommandResult::LockCancel(CancelResult::AlreadyGranted { token: ta })
    );
    h.apply_op(Op::ElectionResign {
        name: b"e".to_vec(),
        token: ta,
    });
    assert_eq!(leader(&h, b"e"), None);
    // B's session took part in nothing any more: it can campaign again.
    assert!(matches!(
        h.apply_op(campaign(b"e", b"B2", b)),
        CommandResult::Lock(LockResult::Granted { .. })
    ));
}

#[test]
fn elections_and_locks_have_separate_names() {
    let mut h = Harness::new();
    let (a, b) = (grant(&mut h), grant(&mut h));
    let client = h.register();
    // The same name as a lock and as an election: both granted, neither sees the other.
    let lock = h.apply(tracked(
        client,
        1,
        Op::LockAcquire {
            name: b"same".to_vec(),
            mode: LockMode::Exclusive,
            session: a,
            wait: false,
        },
    ));
    let lock_token = granted(lock);
    let election_token = granted(h.apply(tracked(client, 2, campaign(b"same", b"v", b))));
    assert_eq!(h.sm.lock(b"same").unwrap().unwrap().holders.len(), 1);
    assert!(h.sm.check_token(b"same", lock_token).unwrap());
    assert!(!h.sm.check_token(b"same", election_token).unwrap());
    assert_eq!(leader(&h, b"same").unwrap().token, election_token);
    let (locks, _) = h.sm.locks(b"", 100).unwrap();
    assert_eq!(locks.len(), 1, "elections are not listed as locks");
    // Releasing the lock leaves the election alone.
    h.apply_op(Op::LockRelease {
        name: b"same".to_vec(),
        token: lock_token,
        session: a,
    });
    assert_eq!(leader(&h, b"same").unwrap().session, b);
}

#[test]
fn elections_survive_reopen_and_crash_replay_with_equal_state_hash() {
    let mut h = Harness::new();
    let (a, b) = (grant(&mut h), grant(&mut h));
    let client = h.register();
    let ta = granted(
        h.apply_batch_with(&[tracked(client, 1, campaign(b"e", b"A", a))], true)[0].clone(),
    );
    h.apply_batch_with(&[tracked(client, 2, campaign(b"e", b"B", b))], true);
    let hash = h.sm.state_hash().unwrap();
    let before = leader(&h, b"e");
    let h = h.crash_and_replay();
    assert_eq!(leader(&h, b"e"), before);
    assert_eq!(leader(&h, b"e").unwrap().token, ta);
    assert_eq!(h.sm.state_hash().unwrap(), hash);
}

#[test]
fn campaign_limits_are_checked() {
    let mut h = Harness::new();
    let a = grant(&mut h);
    let big = vec![0u8; haven::limits::MAX_ELECTION_VALUE_BYTES + 1];
    assert!(matches!(
        h.apply_op(campaign(b"e", &big, a)),
        CommandResult::Rejected { .. }
    ));
    assert!(matches!(
        h.apply_op(campaign(b"", b"v", a)),
        CommandResult::Rejected { .. }
    ));
    assert!(h.sm.leader(b"").is_err());
    // A campaign of a session that does not exist changes nothing.
    assert_eq!(
        h.apply_op(campaign(b"e", b"v", SessionId(999))),
        CommandResult::Lock(LockResult::SessionNotFound)
    );
    assert_eq!(leader(&h, b"e"), None);
    // Election commands are stamped with command version 5 (4 is lock-delay's).
    let bytes = sm_util::untracked(campaign(b"e", b"v", a))
        .encode()
        .unwrap();
    assert_eq!(bytes[0], 5);
}

#[test]
fn capture_reports_election_changes_as_their_own_target() {
    let mut h = Harness::new();
    let a = grant(&mut h);
    h.sm.set_change_capture(ChangeCapture::ChangesWithPrevious);
    let index = h.next_index();
    let entry = command_entry(index, h.term, &sm_util::untracked(campaign(b"k", b"A", a)));
    let outcomes = h.sm.apply(&[entry]).unwrap();
    let changes = &outcomes[0].changes;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].target, ChangeTarget::Election);
    assert_eq!(changes[0].key, b"k");
    assert_eq!(
        changes[0].leader().unwrap().unwrap().token,
        FencingToken(index)
    );
    assert!(changes[0].value().is_err(), "not a user key");
    let index = h.next_index();
    let entry = command_entry(
        index,
        h.term,
        &sm_util::untracked(Op::SessionRevoke { session: a }),
    );
    let outcomes = h.sm.apply(&[entry]).unwrap();
    let changes = &outcomes[0].changes;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].leader().unwrap(), None);
}
