//! Clean shutdown: stop accepting, close connections, join every thread. A test binary of its
//! own, so that counting this process's threads is not disturbed by other tests.

#[path = "support/net.rs"]
mod net_support;

use crossbeam_channel::unbounded;
use haven::net::{ClientConnection, ClientEvent, SendOutcome};
use haven::NodeId;
use net_support::*;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Threads of this process (Linux); None elsewhere.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

#[test]
fn shutdown_stops_accepting_closes_connections_and_joins_every_thread() {
    let before = thread_count();
    let log = Log::default();
    let stuck = TcpListener::bind("127.0.0.1:0").expect("bind");

    let (a_tx, _a_rx) = unbounded();
    let (b_tx, b_rx) = unbounded();
    let (b_ctx, b_crx) = unbounded();
    let b = Net::start(config(2, secret(), &log), &[], b_tx, Some(b_ctx)).expect("b");
    let a = Net::start(
        config(1, secret(), &log),
        &[
            (NodeId(2), b.local_addr()),
            // A peer whose lane will be in the middle of a handshake at shutdown.
            (NodeId(3), stuck.local_addr().expect("addr")),
        ],
        a_tx,
        None,
    )
    .expect("a");
    b.set_peer(NodeId(1), a.local_addr()).expect("peer");

    // Traffic on every kind of connection: both lanes, a client with a call answered.
    a.send(NodeId(2), Msg::Seq(1));
    a.send_bulk(NodeId(2), Msg::Blob(vec![1; 10]));
    a.send(NodeId(3), Msg::Seq(1));
    for _ in 0..2 {
        b_rx.recv_timeout(Duration::from_secs(5))
            .expect("delivered");
    }
    let responder = thread::spawn(move || {
        if let Ok(ClientEvent::Request {
            conn,
            request_id,
            request,
        }) = b_crx.recv_timeout(Duration::from_secs(5))
        {
            conn.respond(
                request_id,
                Resp {
                    thread: request.thread,
                    n: request.n,
                    doubled: 2 * request.n,
                },
            );
        }
    });
    let client = ClientConnection::<Req, Resp>::connect(
        b.local_addr(),
        CLUSTER,
        &secret(),
        1,
        Duration::from_secs(5),
    )
    .expect("client");
    let resp = client
        .call(Req { thread: 0, n: 21 }, Duration::from_secs(5))
        .expect("call");
    assert_eq!(resp.doubled, 42);
    responder.join().expect("responder");
    assert_eq!(b.stats().peer_connections, 2);
    assert_eq!(b.stats().client_connections, 1);

    // Shut b down: it is quick, idempotent, stops accepting and closes the client.
    let b_addr = b.local_addr();
    let start = Instant::now();
    b.shutdown();
    b.shutdown();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(TcpStream::connect(b_addr).is_err(), "b still accepts");
    assert_eq!(b.send(NodeId(1), Msg::Seq(1)), SendOutcome::ShutDown);
    assert!(wait_until(Duration::from_secs(2), || client.is_closed()));

    // a's lane to n3 is stuck in a handshake; shutdown interrupts it.
    let start = Instant::now();
    a.shutdown();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    drop(client);
    drop(a);
    drop(b);
    if let (Some(before), Some(_)) = (before, thread_count()) {
        assert!(
            wait_until(Duration::from_secs(2), || thread_count() == Some(before)),
            "threads before: {before}, after: {:?}",
            thread_count()
        );
    }
}
