//! Elections end to end through `Client`s of an in-process cluster: campaign, leader, proclaim,
//! resign, campaigners taking over in order when a leader's session ends, and an observer that
//! sees every change of leader ("no leader" included) in order across the loss of the member
//! it watches on, with tokens strictly increasing across a failover. Also the other non-key
//! watch target, a partition map's epochs with their moves (`Client::watch_map`). No timing
//! assertions: the bounds are generous waits.

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{remote_client, wait_for, Cluster};
use haven::client::{ClientOptions, ElectionObserver, EventKind, LeaderChange, WatchNotice};
use haven::sm::placement::{LoadCap, Strategy};
use haven::sm::FencingToken;
use haven::sm::MapMoves;
use haven::ErrorCode;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_millis(1_000);

/// What the observer reported so far: (value, token) of each leader, `None` for no leader.
type Seen = Vec<Option<(Vec<u8>, FencingToken)>>;

/// Take the observer's next change (failing the test after `WAIT`).
fn next(observer: &ElectionObserver) -> LeaderChange {
    observer
        .next_timeout(WAIT)
        .expect("an observed change within the wait")
        .expect("the observer goes on")
}

fn summary(change: &LeaderChange) -> Option<(Vec<u8>, FencingToken)> {
    change.leader.as_ref().map(|l| (l.value.clone(), l.token))
}

#[test]
fn an_observer_sees_every_change_of_leader_in_order_across_a_leader_failover() {
    let mut cluster = Cluster::start(3, |_| {});
    cluster.wait_leader(WAIT);
    // A remote client: it follows the leader, and its watch moves when that member goes.
    let client = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    let observer = client.observe(b"svc").unwrap();
    let mut seen: Seen = Vec::new();
    let mut revisions = Vec::new();
    let mut take = |observer: &ElectionObserver, seen: &mut Seen| {
        let change = next(observer);
        assert!(!change.after_gap, "no gap expected: {change:?}");
        revisions.push(change.revision);
        seen.push(summary(&change));
    };
    take(&observer, &mut seen);
    assert_eq!(seen, vec![None], "nobody leads at first");

    // a leads, proclaims, resigns: no leader.
    let s1 = client.grant_session(TTL).unwrap();
    let a = client.campaign(b"svc", b"a", &s1).unwrap();
    let leader = client.leader(b"svc").unwrap().expect("a leads");
    assert_eq!(
        (leader.value.as_slice(), leader.token),
        (&b"a"[..], a.token())
    );
    assert_eq!(leader.session, s1.id());
    take(&observer, &mut seen);
    a.proclaim(b"a2").unwrap();
    take(&observer, &mut seen);
    let token_a = a.token();
    a.resign().unwrap();
    take(&observer, &mut seen);
    // A resigned leadership can neither proclaim nor resign again.
    assert_eq!(
        client
            .proclaim(b"svc", token_a, b"late")
            .unwrap_err()
            .code(),
        ErrorCode::LockNotHeld
    );
    assert_eq!(
        client.resign(b"svc", token_a).unwrap_err().code(),
        ErrorCode::LockNotHeld
    );

    // b leads; then the cluster's leader (which the client and its watch are connected to)
    // stops, and b's proclaims go on through the new one.
    let s2 = client.grant_session(Duration::from_secs(10)).unwrap();
    let b = client.campaign(b"svc", b"b", &s2).unwrap();
    take(&observer, &mut seen);
    let old = cluster.wait_leader(WAIT);
    cluster.stop(old);
    b.proclaim(b"b2").unwrap();
    take(&observer, &mut seen);
    let token_b = b.token();
    // b's session ends (revoked): no leader; c campaigns and leads.
    s2.revoke().unwrap();
    take(&observer, &mut seen);
    assert_eq!(
        b.proclaim(b"gone").unwrap_err().code(),
        ErrorCode::LockNotHeld
    );
    drop(b);
    let s3 = client.grant_session(TTL).unwrap();
    let c = client.campaign(b"svc", b"c", &s3).unwrap();
    take(&observer, &mut seen);
    assert_eq!(
        seen,
        vec![
            None,
            Some((b"a".to_vec(), token_a)),
            Some((b"a2".to_vec(), token_a)),
            None,
            Some((b"b".to_vec(), token_b)),
            Some((b"b2".to_vec(), token_b)),
            None,
            Some((b"c".to_vec(), c.token())),
        ]
    );
    assert!(
        token_a < token_b && token_b < c.token(),
        "tokens strictly increase"
    );
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions increase: {revisions:?}"
    );
    // Nothing else was reported (a proclaim of the same value is no change).
    c.proclaim(b"c").unwrap();
    assert!(observer.next_timeout(Duration::from_millis(300)).is_none());
    cluster.restart(old);
}

#[test]
fn campaigners_lead_in_order_when_the_leaders_session_expires() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let client = cluster.node((leader + 1) % 3).client();
    let s1 = client.grant_session(TTL).unwrap();
    let first = client.campaign(b"e", b"one", &s1).unwrap();
    let observer = client.observe(b"e").unwrap();
    assert_eq!(next(&observer).leader.unwrap().value, b"one");
    // Two campaigners queue, in this order.
    let mut threads = Vec::new();
    for (i, value) in [b"two", b"six"].into_iter().enumerate() {
        let c = client.clone();
        let s = client.grant_session(Duration::from_secs(10)).unwrap();
        threads.push(std::thread::spawn(move || {
            let l = c.campaign(b"e", value, &s).unwrap();
            let token = l.token();
            // Hold until the observer saw it, then resign (the next one leads).
            std::thread::sleep(Duration::from_millis(100));
            l.resign().unwrap();
            (token, s)
        }));
        wait_for("campaigner queued", WAIT, || {
            let info = client.election(b"e").unwrap()?;
            (info.waiters.len() == i + 1).then_some(())
        });
    }
    // The leader's session stops being kept alive: it expires and "two" leads.
    let first_token = first.token();
    std::mem::forget(first);
    drop(s1);
    let two = next(&observer);
    let six = next(&observer);
    let none = next(&observer);
    let tokens: Vec<(FencingToken, _)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(summary(&two), Some((b"two".to_vec(), tokens[0].0)));
    assert_eq!(summary(&six), Some((b"six".to_vec(), tokens[1].0)));
    assert_eq!(none.leader, None);
    assert!(first_token < tokens[0].0 && tokens[0].0 < tokens[1].0);
    assert_eq!(client.leader(b"e").unwrap(), None);
    assert_eq!(client.election(b"e").unwrap(), None);
}

#[test]
fn a_withdrawn_campaign_or_one_through_a_session_that_ended_fails() {
    let cluster = Cluster::start(3, |_| {});
    cluster.wait_leader(WAIT);
    let client = cluster.node(0).client();
    let s = client.grant_session(TTL).unwrap();
    let l = client.campaign(b"x", b"v", &s).unwrap();
    // A second campaign of the same session is refused, the first one stands.
    assert_eq!(
        client.campaign(b"x", b"w", &s).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert_eq!(client.leader(b"x").unwrap().unwrap().token, l.token());
    // A campaign withdrawn by its session (here from another thread) fails with LockNotHeld
    // and never leads.
    let s2 = client.grant_session(TTL).unwrap();
    let (c, id) = (client.clone(), s2.id());
    let waiting = std::thread::spawn(move || c.campaign(b"x", b"w", &s2).map(|l| l.token()));
    wait_for("campaign queued", WAIT, || {
        (client.election(b"x").unwrap()?.waiters.len() == 1).then_some(())
    });
    assert_eq!(client.withdraw(b"x", id).unwrap(), None);
    assert_eq!(
        waiting.join().unwrap().unwrap_err().code(),
        ErrorCode::LockNotHeld
    );
    assert_eq!(client.withdraw(b"x", s.id()).unwrap(), Some(l.token()));
    s.revoke().unwrap();
    assert_eq!(
        client.campaign(b"x", b"v", &s).unwrap_err().code(),
        ErrorCode::SessionExpired
    );
    assert_eq!(client.leader(b"x").unwrap(), None);
    assert_eq!(
        client.leader(b"").unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
}

#[test]
fn a_map_watch_delivers_each_epoch_with_its_moves() {
    let cluster = Cluster::start(3, |_| {});
    cluster.wait_leader(WAIT);
    let client = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    client
        .create_map("m", 64, 2, Strategy::Rendezvous, LoadCap::PerMille(1020))
        .unwrap();
    // Read, then watch from the read's revision + 1: every later change, once.
    let (_, revision) = client.range_at(b"", None, 1).unwrap();
    let watch = client.watch_map("m", revision.next()).unwrap();
    // A key watch on the same member sees none of it, and the map watch no key.
    let keys = client.watch_prefix(b"", revision.next()).unwrap();
    client.join("m", "a", 1).unwrap();
    client.put(b"k", b"v").unwrap();
    client.join("m", "b", 1).unwrap();
    client.leave("m", "a").unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match watch.next_timeout(WAIT).expect("a notice").unwrap() {
            WatchNotice::Events { events, .. } => {
                for event in events {
                    let EventKind::MapEpoch { epoch } = event.kind else {
                        panic!("only map events: {event:?}");
                    };
                    assert_eq!(event.key, b"m");
                    let moves = event.map_moves().unwrap().unwrap();
                    assert_eq!(moves.epoch, epoch);
                    seen.push(moves);
                }
            }
            WatchNotice::Progress { .. } => {}
            other => panic!("the watch ended: {other:?}"),
        }
    }
    assert_eq!(
        seen.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    // The moves are those the map reports for the same epochs.
    let MapMoves::Moves { epochs, .. } = client.moves("m", 1).unwrap() else {
        panic!("moves since epoch 1 are kept");
    };
    assert_eq!(epochs, seen);
    let key_events = loop {
        match keys.next_timeout(WAIT).expect("a notice").unwrap() {
            WatchNotice::Events { events, .. } => break events,
            WatchNotice::Progress { .. } => {}
            other => panic!("expected the put: {other:?}"),
        }
    };
    assert_eq!(key_events.len(), 1);
    assert_eq!(key_events[0].key, b"k");
}
