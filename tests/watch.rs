//! Watches: every change in order, a revision's events together, read-then-watch without a
//! gap, `Compacted` before the window, `Overflow` for a slow watcher, one watcher per member
//! seeing exactly the committed sequence across a leader kill, resume after the member a
//! remote client watches through dies, and the same events (previous values included) to
//! in-process and remote watchers sharing one revision; an in-process watch read on the
//! user's thread, then through its receiver, with no gap and no duplicate; progress to an idle
//! watch.

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{remote_client, Cluster};
use haven::client::{EventKind, Watch, WatchNotice, WatchSpec};
use haven::sm::{Txn, TxnOp};
use haven::{ClientOptions, LogIndex};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// (revision, put/delete, key, value) as a watcher saw it.
type Seen = (u64, EventKind, Vec<u8>, Vec<u8>);

/// Take notices until `done` says so (progress notices are checked for monotonicity and
/// skipped). Panics on an end or error notice, or when nothing comes for `WAIT`.
fn collect(watch: &Watch, mut done: impl FnMut(&[Seen]) -> bool) -> Vec<Seen> {
    let mut seen: Vec<Seen> = Vec::new();
    let mut last_revision = 0;
    while !done(&seen) {
        let notice = watch
            .next_timeout(WAIT)
            .unwrap_or_else(|| panic!("no notice within {WAIT:?}; saw {} events", seen.len()))
            .expect("watch failed");
        match notice {
            WatchNotice::Events { revision, events } => {
                assert!(revision.0 > last_revision, "revisions go up");
                assert!(!events.is_empty());
                last_revision = revision.0;
                for e in events {
                    assert_eq!(e.revision, revision, "a notice holds one revision");
                    seen.push((revision.0, e.kind, e.key, e.value));
                }
            }
            WatchNotice::Progress { revision } => {
                assert!(revision.0 >= last_revision, "progress never goes back");
                last_revision = revision.0;
            }
            other => panic!("watch ended: {other:?}"),
        }
    }
    seen
}

#[test]
fn events_arrive_in_order_with_a_revisions_events_together() {
    let cluster = Cluster::start(1, |_| {});
    cluster.wait_leader(WAIT);
    let client = cluster.node(0).client();
    let watch = client.watch_prefix(b"w/", LogIndex(0)).unwrap();
    let a = client.put(b"w/a", b"1").unwrap().revision;
    client.put(b"other", b"x").unwrap();
    let txn = Txn {
        compares: vec![],
        success: vec![
            TxnOp::Put {
                key: b"w/b".to_vec(),
                value: b"2".to_vec(),
            },
            TxnOp::Put {
                key: b"outside".to_vec(),
                value: b"3".to_vec(),
            },
            TxnOp::Delete {
                key: b"w/a".to_vec(),
            },
        ],
        failure: vec![],
    };
    let t = client.txn(&txn).unwrap().revision;
    let d = client.delete(b"w/b").unwrap().revision;
    // Grouping: the transaction's two events in the watched prefix come as ONE notice.
    let mut notices = Vec::new();
    while notices.len() < 3 {
        match watch.next_timeout(WAIT).expect("a notice").unwrap() {
            WatchNotice::Progress { .. } => {}
            WatchNotice::Events { revision, events } => notices.push((revision, events)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(notices[0].0, a);
    assert_eq!(notices[0].1.len(), 1);
    assert_eq!(notices[0].1[0].value, b"1");
    assert_eq!(notices[1].0, t);
    let kinds: Vec<_> = notices[1]
        .1
        .iter()
        .map(|e| (e.kind, e.key.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Put, b"w/b".to_vec()),
            (EventKind::Delete, b"w/a".to_vec())
        ]
    );
    assert_eq!(notices[2].0, d);
    assert_eq!(notices[2].1[0].kind, EventKind::Delete);
}

#[test]
fn an_in_process_watch_read_directly_then_through_its_receiver_misses_and_repeats_nothing() {
    let cluster = Cluster::start(1, |_| {});
    cluster.wait_leader(WAIT);
    let client = cluster.node(0).client();
    let mut watch = client.watch_prefix(b"r/", LogIndex(0)).unwrap();
    let mut written = Vec::new();
    for i in 0..40u32 {
        let key = format!("r/{i}").into_bytes();
        let revision = client.put(&key, &i.to_le_bytes()).unwrap().revision;
        written.push((revision.0, key));
    }
    // Some on the user's thread (no pump yet): the first push may hold many revisions, so
    // some are still queued in the watch when the receiver is asked for.
    let mut seen = collect(&watch, |seen| seen.len() >= 10);
    // A timeout beyond the clock's range waits without a deadline (events are still due).
    if let WatchNotice::Events { revision, events } = watch
        .next_timeout(Duration::MAX)
        .expect("a notice")
        .unwrap()
    {
        for e in events {
            seen.push((revision.0, e.kind, e.key, e.value));
        }
    }
    let receiver = watch.receiver().clone();
    // Then the receiver, the iterator and next_timeout share one sequence.
    while seen.len() < 20 {
        match receiver.recv_timeout(WAIT).expect("a notice").unwrap() {
            WatchNotice::Events { revision, events } => {
                for e in events {
                    seen.push((revision.0, e.kind, e.key, e.value));
                }
            }
            WatchNotice::Progress { .. } => {}
            other => panic!("watch ended: {other:?}"),
        }
    }
    for notice in watch.by_ref() {
        match notice.unwrap() {
            WatchNotice::Events { revision, events } => {
                for e in events {
                    seen.push((revision.0, e.kind, e.key, e.value));
                }
            }
            WatchNotice::Progress { .. } => {}
            other => panic!("watch ended: {other:?}"),
        }
        if seen.len() >= 30 {
            break;
        }
    }
    let rest = collect(&watch, |rest| seen.len() + rest.len() >= 40);
    seen.extend(rest);
    let got: Vec<(u64, Vec<u8>)> = seen.into_iter().map(|(r, _, k, _)| (r, k)).collect();
    assert_eq!(got, written);
    // Cancelled: the receiver disconnects (after any progress notice already queued).
    watch.cancel();
    loop {
        match receiver.recv_timeout(WAIT) {
            Ok(Ok(WatchNotice::Progress { .. })) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            other => panic!("after cancel: {other:?}"),
        }
    }
}

#[test]
fn read_then_watch_from_its_revision_plus_one_has_no_gap_and_no_duplicate() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let writer = cluster.node(leader).client();
    let follower = cluster.node((leader + 1) % 3).client();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let (stop, written, writer) = (Arc::clone(&stop), Arc::clone(&written), writer.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let value = i.to_le_bytes().to_vec();
                let r = writer
                    .put(format!("r/{}", i % 7).as_bytes(), &value)
                    .unwrap();
                written.lock().unwrap().push(r.revision.0);
                i += 1;
            }
        })
    };
    while written.lock().unwrap().len() < 50 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Read while writes go on, then watch from just after the read.
    let (page, revision) = follower.scan_prefix_at(b"r/", 100).unwrap();
    let watch = follower.watch_prefix(b"r/", revision.next()).unwrap();
    while written.lock().unwrap().len() < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let expected: Vec<u64> = written
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|r| *r > revision.0)
        .collect();
    let last = *expected.last().unwrap();
    let seen = collect(&watch, |s| s.last().is_some_and(|e| e.0 >= last));
    let revisions: Vec<u64> = seen.iter().map(|e| e.0).collect();
    assert_eq!(revisions, expected, "exactly the writes after the read");
    // The read plus the events rebuild the final state.
    let mut state: BTreeMap<Vec<u8>, Vec<u8>> = page
        .entries
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    for (_, _, key, value) in seen {
        state.insert(key, value);
    }
    let now: BTreeMap<_, _> = writer
        .scan_prefix(b"r/", 100)
        .unwrap()
        .entries
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(state, now);
}

#[test]
fn a_watch_from_before_the_window_is_ended_with_compacted() {
    let cluster = Cluster::start(1, |c| c.watch_window_events = 10);
    cluster.wait_leader(WAIT);
    let client = cluster.node(0).client();
    let first = client.put(b"c/0", b"v").unwrap().revision;
    for i in 1..30u32 {
        client.put(format!("c/{i}").as_bytes(), b"v").unwrap();
    }
    let watch = client.watch_prefix(b"c/", first).unwrap();
    match watch.next_timeout(WAIT).expect("a notice").unwrap() {
        WatchNotice::Compacted { oldest } => assert!(oldest > first, "{oldest} vs {first}"),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(watch.next_timeout(Duration::from_secs(1)).is_none());
    // Within the window it works.
    let recent = client.put(b"c/x", b"y").unwrap().revision;
    let watch = client.watch_prefix(b"c/", recent).unwrap();
    let seen = collect(&watch, |s| !s.is_empty());
    assert_eq!(seen[0].0, recent.0);
}

/// With no watch open the apply thread queues its batches for the watch thread without waking
/// it, until a quarter of the queue waits. More batches than the queue holds, faster than the
/// thread's own tick (30 s here), must still all reach the window: a watch opened afterwards
/// from the first of them gets every one, not `Compacted`.
#[test]
fn with_no_watch_open_more_batches_than_the_queue_holds_still_reach_the_window() {
    let cluster = Cluster::start(1, |c| c.watch_progress_interval_ms = 60_000);
    cluster.wait_leader(WAIT);
    let client = cluster.node(0).client();
    const WRITES: usize = 6000;
    let mut revisions = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        revisions.push(
            client
                .put(format!("q/{i:05}").as_bytes(), b"v")
                .unwrap()
                .revision,
        );
    }
    let watch = client.watch_prefix(b"q/", revisions[0]).unwrap();
    let seen = collect(&watch, |seen| seen.len() >= WRITES);
    let keys: Vec<Vec<u8>> = (0..WRITES)
        .map(|i| format!("q/{i:05}").into_bytes())
        .collect();
    assert_eq!(seen.iter().map(|s| s.2.clone()).collect::<Vec<_>>(), keys);
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        revisions.iter().map(|r| r.0).collect::<Vec<_>>()
    );
}

#[test]
fn a_watcher_that_does_not_keep_up_is_ended_with_overflow() {
    let cluster = Cluster::start(1, |c| c.watch_buffer_events = 16);
    cluster.wait_leader(WAIT);
    let client = cluster.node(0).client();
    let watch = client.watch_prefix(b"o/", LogIndex(0)).unwrap();
    // The client's own buffer (4096 notices) is larger than the member's (16 events), but the
    // pump stops taking pushes while the user takes nothing and its buffer is full; write more
    // than both hold.
    let total = 5_000u32;
    for i in 0..total {
        client
            .put(format!("o/{}", i % 10).as_bytes(), b"v")
            .unwrap();
    }
    let mut events = 0;
    let mut last = 0;
    loop {
        match watch
            .next_timeout(WAIT)
            .expect("a notice before the end")
            .unwrap()
        {
            WatchNotice::Events {
                revision,
                events: e,
            } => {
                assert!(revision.0 > last);
                last = revision.0;
                events += e.len();
            }
            WatchNotice::Progress { .. } => {}
            WatchNotice::Overflow => break,
            other => panic!("expected Overflow, got {other:?}"),
        }
    }
    assert!(
        events < total as usize,
        "ended before the end: {events} events"
    );
    assert!(watch.next_timeout(Duration::from_secs(1)).is_none());
}

#[test]
fn a_watcher_on_each_member_sees_exactly_the_committed_sequence_across_a_leader_kill() {
    let mut cluster = Cluster::start(3, |_| {});
    cluster.wait_leader(WAIT);
    let first = cluster
        .node(0)
        .client()
        .put(b"k/start", b"0")
        .unwrap()
        .revision;
    // One remote watcher per member (pinned to it), all from the same revision.
    let watchers: Vec<(Watch, haven::Client)> = (0..3)
        .map(|i| {
            let options = ClientOptions {
                prefer_leader: false,
                ..ClientOptions::default()
            };
            let client = remote_client(&cluster.addrs[i..=i], options).unwrap();
            (client.watch_prefix(b"k/", first).unwrap(), client)
        })
        .collect();
    let addrs = cluster.addrs.clone();
    let writer = remote_client(&addrs, ClientOptions::default()).unwrap();
    let mut history = vec![(first.0, b"k/start".to_vec(), b"0".to_vec())];
    let put = |i: u32, history: &mut Vec<(u64, Vec<u8>, Vec<u8>)>| {
        let key = format!("k/{}", i % 13).into_bytes();
        let value = i.to_le_bytes().to_vec();
        // A write whose outcome is unknown would make the history ambiguous: retry until it is
        // known (the client applies it at most once).
        let r = writer.put(&key, &value).unwrap();
        writer.put(b"noise", b"x").unwrap();
        history.push((r.revision.0, key, value));
    };
    for i in 0..200 {
        put(i, &mut history);
    }
    let leader = cluster.wait_leader(WAIT);
    cluster.stop(leader);
    for i in 200..400 {
        put(i, &mut history);
    }
    let last = history.last().unwrap().0;
    for (i, (watch, _)) in watchers.iter().enumerate() {
        if i == leader {
            continue; // its member is gone; its client has no other member to resume on
        }
        let seen = collect(watch, |s| s.last().is_some_and(|e| e.0 >= last));
        let got: Vec<(u64, Vec<u8>, Vec<u8>)> =
            seen.into_iter().map(|(r, _, k, v)| (r, k, v)).collect();
        assert_eq!(got, history, "watcher on member {i}");
    }
    // And the history ends in the final state.
    let mut state = BTreeMap::new();
    for (_, k, v) in &history {
        state.insert(k.clone(), v.clone());
    }
    let now: BTreeMap<_, _> = writer
        .scan_prefix(b"k/", 100)
        .unwrap()
        .entries
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(state, now);
}

#[test]
fn a_remote_watch_resumes_on_another_member_without_gap_or_duplicate() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    // Watch through a follower first in the list, so its death forces a move.
    let follower = (leader + 1) % 3;
    let mut order = vec![cluster.addrs[follower]];
    order.extend((0..3).filter(|&i| i != follower).map(|i| cluster.addrs[i]));
    let options = ClientOptions {
        prefer_leader: false,
        ..ClientOptions::default()
    };
    let watcher = remote_client(&order, options).unwrap();
    let writer = cluster.node(leader).client();
    let watch = watcher.watch_prefix(b"m/", LogIndex(0)).unwrap();
    let mut expected = Vec::new();
    for i in 0..100u32 {
        expected.push(
            writer
                .put(format!("m/{i}").as_bytes(), b"v")
                .unwrap()
                .revision
                .0,
        );
    }
    let before = collect(&watch, |s| s.len() >= 100);
    cluster.stop(follower);
    for i in 100..200u32 {
        expected.push(
            writer
                .put(format!("m/{i}").as_bytes(), b"v")
                .unwrap()
                .revision
                .0,
        );
    }
    let after = collect(&watch, |s| s.len() >= 100);
    let revisions: Vec<u64> = before.iter().chain(after.iter()).map(|e| e.0).collect();
    assert_eq!(revisions, expected);
}

/// (revision, put/delete, key, value, previous value) as a watcher saw it.
type SeenWithPrevious = (u64, EventKind, Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Every event up to revision `last`.
fn events_through(watch: &Watch, last: LogIndex) -> Vec<SeenWithPrevious> {
    let mut out = Vec::new();
    loop {
        match watch.next_timeout(WAIT).expect("a notice").unwrap() {
            WatchNotice::Progress { .. } => {}
            WatchNotice::Events { revision, events } => {
                for e in events {
                    out.push((revision.0, e.kind, e.key, e.value, e.prev_value));
                }
                if revision >= last {
                    return out;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Revisions are shared by every watcher on a member; each watcher must still get exactly its
/// own selection (a transaction only partly in its range) and, when it asks, previous values,
/// whether it reads in process or over a connection (whose frames are written from one
/// encoding per revision).
#[test]
fn watchers_sharing_revisions_each_get_their_own_selection_and_previous_values() {
    let cluster = Cluster::start(1, |_| {});
    cluster.wait_leader(WAIT);
    let local = cluster.node(0).client();
    let remote = remote_client(&[cluster.addrs[0]], ClientOptions::default()).unwrap();
    let first = local.put(b"p/a", b"1").unwrap().revision;
    let mut with_previous = WatchSpec::prefix(b"p/", first.next());
    with_previous.prev_value = true;
    let plain = WatchSpec::prefix(b"p/", first.next());
    let everything = WatchSpec::prefix(b"", first.next());
    let watches: Vec<(&str, Watch)> = vec![
        (
            "local, previous",
            local.watch(with_previous.clone()).unwrap(),
        ),
        ("remote, previous", remote.watch(with_previous).unwrap()),
        ("local", local.watch(plain.clone()).unwrap()),
        ("remote", remote.watch(plain).unwrap()),
        ("local, all keys", local.watch(everything.clone()).unwrap()),
        ("remote, all keys", remote.watch(everything).unwrap()),
    ];
    let txn = Txn {
        compares: vec![],
        success: vec![
            TxnOp::Put {
                key: b"q/x".to_vec(),
                value: b"outside".to_vec(),
            },
            TxnOp::Put {
                key: b"p/a".to_vec(),
                value: b"2".to_vec(),
            },
            TxnOp::Put {
                key: b"p/b".to_vec(),
                value: b"new".to_vec(),
            },
        ],
        failure: vec![],
    };
    let t = local.txn(&txn).unwrap().revision;
    let d = local.delete(b"p/a").unwrap().revision;
    let q = local.put(b"q/y", b"also outside").unwrap().revision;
    let p = local.put(b"p/c", b"3").unwrap().revision;
    let put = EventKind::Put;
    let del = EventKind::Delete;
    let ours = vec![
        (
            t.0,
            put,
            b"p/a".to_vec(),
            b"2".to_vec(),
            Some(b"1".to_vec()),
        ),
        (t.0, put, b"p/b".to_vec(), b"new".to_vec(), None),
        (d.0, del, b"p/a".to_vec(), Vec::new(), Some(b"2".to_vec())),
        (p.0, put, b"p/c".to_vec(), b"3".to_vec(), None),
    ];
    let without_previous = |events: &[SeenWithPrevious]| {
        events
            .iter()
            .map(|(r, k, key, value, _)| (*r, *k, key.clone(), value.clone(), None))
            .collect::<Vec<_>>()
    };
    let all = vec![
        (t.0, put, b"q/x".to_vec(), b"outside".to_vec(), None),
        ours[0].clone(),
        ours[1].clone(),
        ours[2].clone(),
        (q.0, put, b"q/y".to_vec(), b"also outside".to_vec(), None),
        ours[3].clone(),
    ];
    for (name, watch) in &watches {
        let expected = match *name {
            "local, previous" | "remote, previous" => ours.clone(),
            "local" | "remote" => without_previous(&ours),
            _ => without_previous(&all),
        };
        assert_eq!(events_through(watch, p), expected, "{name}");
    }
}

#[test]
fn a_watch_spec_with_an_empty_range_is_refused() {
    let cluster = Cluster::start(1, |_| {});
    cluster.wait_leader(WAIT);
    let e = cluster
        .node(0)
        .client()
        .watch(WatchSpec::range(b"b", Some(b"a"), LogIndex(0)))
        .unwrap_err();
    assert_eq!(e.code(), haven::ErrorCode::InvalidArgument);
}

/// An idle watch hears `Progress`: while nothing under its prefix changes, it learns every
/// `watch_progress_interval_ms` how far the member's state has got (writes elsewhere included),
/// so a client that resumes from there misses nothing. A progress notice never goes back and
/// never passes an event not yet delivered. In process and remote alike.
#[test]
fn an_idle_watch_hears_progress_up_to_the_latest_write_elsewhere() {
    let cluster = Cluster::start(1, |c| c.watch_progress_interval_ms = 50);
    cluster.wait_leader(WAIT);
    let client = cluster.node(0).client();
    let remote = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    let watches = [
        ("local", client.watch_prefix(b"idle/", LogIndex(0)).unwrap()),
        (
            "remote",
            remote.watch_prefix(b"idle/", LogIndex(0)).unwrap(),
        ),
    ];
    let mut last = LogIndex(0);
    for i in 0..5u32 {
        last = client
            .put(format!("busy/{i}").as_bytes(), b"v")
            .unwrap()
            .revision;
    }
    for (name, watch) in &watches {
        let mut at = LogIndex(0);
        while at < last {
            match watch.next_timeout(WAIT) {
                Some(Ok(WatchNotice::Progress { revision })) => {
                    assert!(revision >= at, "{name}: progress went back to {revision}");
                    at = revision;
                }
                other => panic!("{name}: an idle watch got {other:?} before progress to {last}"),
            }
        }
    }
    let put = client.put(b"idle/x", b"1").unwrap().revision;
    for (name, watch) in &watches {
        loop {
            match watch.next_timeout(WAIT) {
                Some(Ok(WatchNotice::Progress { revision })) => {
                    assert!(
                        revision < put,
                        "{name}: progress to {revision} passed the event"
                    );
                }
                Some(Ok(WatchNotice::Events { revision, events })) => {
                    assert_eq!(revision, put, "{name}");
                    assert_eq!(events.len(), 1, "{name}");
                    assert_eq!(events[0].key, b"idle/x", "{name}");
                    break;
                }
                other => panic!("{name}: expected the event at {put}, got {other:?}"),
            }
        }
    }
}
