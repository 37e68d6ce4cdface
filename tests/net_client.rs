//! Remote clients: pipelined calls from many threads, and what a caller is told when the
//! connection fails before or after its request went out.

#[path = "support/net.rs"]
mod net_support;

use crossbeam_channel::{unbounded, Receiver};
use haven::net::{ClientConnection, ClientEvent, ClientHandle};
use haven::Error;
use net_support::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

type Client = ClientConnection<Req, Resp>;
type Events = Receiver<ClientEvent<Req, Resp>>;

fn member(log: &Log) -> (Net, Events) {
    let (tx, _rx) = unbounded();
    let (ctx, crx) = unbounded();
    let net = Net::start(config(1, secret(), log), &[], tx, Some(ctx)).expect("start");
    (net, crx)
}

fn connect(net: &Net, client_id: u64) -> Client {
    Client::connect(
        net.local_addr(),
        CLUSTER,
        &secret(),
        client_id,
        Duration::from_secs(5),
    )
    .expect("connect")
}

fn answer(req: &Req) -> Resp {
    Resp {
        thread: req.thread,
        n: req.n,
        doubled: req.n * 2,
    }
}

fn next_request(events: &Events) -> (ClientHandle<Resp>, u64, Req) {
    match events
        .recv_timeout(Duration::from_secs(5))
        .expect("a request")
    {
        ClientEvent::Request {
            conn,
            request_id,
            request,
        } => (conn, request_id, request),
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn pipelined_calls_from_many_threads_each_get_their_own_response() {
    let log = Log::default();
    let (net, events) = member(&log);
    let client = connect(&net, 77);
    assert_eq!(client.member(), haven::NodeId(1));

    // The "runtime": takes every request already queued and answers them in reverse order, so
    // responses overtake each other and must be routed by request id.
    let largest_batch = Arc::new(AtomicUsize::new(0));
    let server_batch = Arc::clone(&largest_batch);
    let server = thread::spawn(move || {
        let mut answered = 0;
        // Bounded: the client closes after its calls, which delivers `Closed`.
        while let Ok(event) = events.recv_timeout(Duration::from_secs(10)) {
            let mut batch = Vec::new();
            let mut closed = false;
            for event in std::iter::once(event).chain(events.try_iter()) {
                match event {
                    ClientEvent::Request {
                        conn,
                        request_id,
                        request,
                    } => {
                        assert_eq!(conn.client_id(), 77);
                        batch.push((conn, request_id, request));
                    }
                    ClientEvent::Closed { .. } => closed = true,
                    ClientEvent::Unreadable { error, .. } => panic!("unreadable request: {error}"),
                }
            }
            server_batch.fetch_max(batch.len(), Ordering::SeqCst);
            for (conn, request_id, request) in batch.into_iter().rev() {
                assert!(conn.respond(request_id, answer(&request)));
                answered += 1;
            }
            if closed {
                break;
            }
        }
        answered
    });

    const THREADS: u64 = 8;
    const CALLS: u64 = 150;
    thread::scope(|s| {
        for t in 0..THREADS {
            let client = &client;
            s.spawn(move || {
                for n in 0..CALLS {
                    let req = Req { thread: t, n };
                    let resp = client
                        .call(req.clone(), Duration::from_secs(10))
                        .expect("call");
                    assert_eq!(resp, answer(&req));
                }
            });
        }
    });
    assert_eq!(client.in_flight(), 0);
    drop(client);
    assert_eq!(server.join().expect("server"), (THREADS * CALLS) as usize);
    assert!(
        largest_batch.load(Ordering::SeqCst) >= 2,
        "requests were never in flight together"
    );
    assert_eq!(net.stats().client_requests_received, THREADS * CALLS);
}

#[test]
fn unanswered_request_times_out_as_maybe_applied() {
    let log = Log::default();
    let (net, events) = member(&log);
    let client = connect(&net, 1);
    let start = Instant::now();
    let result = client.call(Req { thread: 0, n: 1 }, Duration::from_millis(300));
    let elapsed = start.elapsed();
    match result {
        Err(Error::Timeout(m)) => assert!(m.contains("may have been applied"), "{m}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    // The request did reach the member.
    let (conn, request_id, _) = next_request(&events);
    // A late answer is dropped quietly; the connection stays usable.
    assert!(conn.respond(request_id, answer(&Req { thread: 0, n: 1 })));
    let responder = thread::spawn(move || {
        let (conn, id, req) = next_request(&events);
        conn.respond(id, answer(&req))
    });
    let resp = client
        .call(Req { thread: 0, n: 2 }, Duration::from_secs(5))
        .expect("second call");
    assert_eq!(resp.doubled, 4);
    assert!(responder.join().expect("responder"));
}

#[test]
fn connection_dropped_after_the_request_was_sent_gives_timeout_then_unavailable() {
    let log = Log::default();
    let (net, events) = member(&log);
    let client = connect(&net, 1);
    let closer = thread::spawn(move || {
        let (conn, _, _) = next_request(&events);
        conn.close();
        assert!(conn.is_closed());
        assert!(!conn.respond(1, answer(&Req { thread: 0, n: 0 })));
        match events
            .recv_timeout(Duration::from_secs(5))
            .expect("closed event")
        {
            ClientEvent::Closed { conn: closed } => {
                assert_eq!(closed.connection_id(), conn.connection_id())
            }
            other => panic!("expected Closed, got {other:?}"),
        }
    });
    let start = Instant::now();
    match client.call(Req { thread: 0, n: 1 }, Duration::from_secs(10)) {
        Err(Error::Timeout(m)) => assert!(m.contains("lost after the request was sent"), "{m}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    // Noticed when the connection broke, not at the end of the 10 s timeout.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    closer.join().expect("closer");
    assert!(client.is_closed());
    match client.call(Req { thread: 0, n: 2 }, Duration::from_secs(1)) {
        Err(Error::Unavailable(m)) => assert!(m.contains("not sent"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn member_shutdown_mid_request_gives_timeout() {
    let log = Log::default();
    let (net, events) = member(&log);
    let client = connect(&net, 1);
    let caller =
        thread::spawn(move || client.call(Req { thread: 0, n: 1 }, Duration::from_secs(10)));
    let (_conn, _, _) = next_request(&events);
    net.shutdown();
    match caller.join().expect("caller") {
        Err(Error::Timeout(m)) => assert!(m.contains("may have been applied"), "{m}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[test]
fn member_notices_a_client_that_goes_away() {
    let log = Log::default();
    let (net, events) = member(&log);
    let client = connect(&net, 5);
    assert!(wait_until(Duration::from_secs(5), || net
        .stats()
        .client_connections
        == 1));
    let caller = thread::spawn(move || {
        let _ = client.call(Req { thread: 0, n: 1 }, Duration::from_millis(200));
        // `client` drops here: the connection closes.
    });
    let (conn, request_id, _) = next_request(&events);
    caller.join().expect("caller");
    match events.recv_timeout(Duration::from_secs(5)).expect("closed") {
        ClientEvent::Closed { conn: closed } => assert_eq!(closed.client_id(), 5),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(conn.is_closed());
    assert!(!conn.respond(request_id, answer(&Req { thread: 0, n: 1 })));
    assert!(wait_until(Duration::from_secs(5), || net
        .stats()
        .client_connections
        == 0));
}

#[test]
fn connecting_to_nothing_is_unavailable() {
    match Client::connect(
        dead_addr(),
        CLUSTER,
        &secret(),
        1,
        Duration::from_millis(500),
    ) {
        Err(Error::Unavailable(m)) => assert!(m.contains("cannot connect"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Figures, not a speed requirement (the numbers depend on the machine):
/// `cargo test --release --test net_client -- --ignored --nocapture`
#[test]
#[ignore]
fn figures_client_round_trips() {
    let log = Log::default();
    let (net, events) = member(&log);
    let server = thread::spawn(move || {
        while let Ok(ClientEvent::Request {
            conn,
            request_id,
            request,
        }) = events.recv_timeout(Duration::from_secs(5))
        {
            conn.respond(request_id, answer(&request));
        }
    });
    let client = connect(&net, 1);
    let calls = 20_000u64;
    let start = Instant::now();
    for n in 0..calls {
        client
            .call(Req { thread: 0, n }, Duration::from_secs(5))
            .expect("call");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sequential: {calls} calls in {secs:.3} s = {:.1} us per call",
        secs * 1e6 / calls as f64
    );
    let threads = 8u64;
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..threads {
            let client = &client;
            s.spawn(move || {
                for n in 0..calls / threads {
                    client
                        .call(Req { thread: t, n }, Duration::from_secs(5))
                        .expect("call");
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "pipelined from {threads} threads: {calls} calls in {secs:.3} s = {:.0} calls/s",
        calls as f64 / secs
    );
    drop(client);
    drop(net);
    server.join().expect("server");
}
