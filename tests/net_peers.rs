//! Peer lanes: ordering, coalescing, back-pressure without blocking, reconnects, membership
//! changes at runtime, keepalives and the idle timeout.

#[path = "support/net.rs"]
mod net_support;
#[path = "support/proxy.rs"]
mod proxy;

use crossbeam_channel::{unbounded, Receiver};
use haven::net::{SendOutcome, TransportConfig};
use haven::{Error, NodeId};
use net_support::*;
use proxy::{Mode, Proxy};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

type Inbound = Receiver<(NodeId, Msg)>;

fn start(config: TransportConfig, peers: &[(NodeId, SocketAddr)]) -> (Net, Inbound) {
    let (tx, rx) = unbounded();
    let net = Net::start(config, peers, tx, None).expect("start transport");
    (net, rx)
}

fn node(id: u64, log: &Log) -> (Net, Inbound) {
    start(config(id, secret(), log), &[])
}

/// Send `Seq(0..count)` to `to`, retrying a message while the queue is full (the test wants
/// every message; the Raft driver would drop instead).
fn send_all(net: &Net, to: NodeId, count: u64) {
    for n in 0..count {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match net.send(to, Msg::Seq(n)) {
                SendOutcome::Queued => break,
                SendOutcome::QueueFull if Instant::now() < deadline => {
                    thread::sleep(Duration::from_micros(200))
                }
                other => panic!("send {n} to {to}: {other:?}"),
            }
        }
    }
}

#[test]
fn messages_arrive_in_order_per_peer_under_load_and_writes_are_coalesced() {
    let log = Log::default();
    let (b, b_in) = node(2, &log);
    let (a, _) = start(config(1, secret(), &log), &[(NodeId(2), b.local_addr())]);
    let (c, _) = start(config(3, secret(), &log), &[(NodeId(2), b.local_addr())]);
    b.set_peers(&[(NodeId(1), a.local_addr()), (NodeId(3), c.local_addr())])
        .expect("peers");

    const COUNT: u64 = 20_000;
    thread::scope(|s| {
        s.spawn(|| send_all(&a, NodeId(2), COUNT));
        s.spawn(|| send_all(&c, NodeId(2), COUNT));
        let mut next = [0u64; 4];
        let deadline = Instant::now() + Duration::from_secs(20);
        while next[1] < COUNT || next[3] < COUNT {
            let left = deadline.saturating_duration_since(Instant::now());
            let (from, msg) = b_in
                .recv_timeout(left)
                .expect("all messages arrive in time");
            let slot = from.0 as usize;
            assert_eq!(msg, Msg::Seq(next[slot]), "out of order from {from}");
            next[slot] += 1;
        }
    });
    for sender in [&a, &c] {
        let lane = sender.peer_stats(NodeId(2)).expect("peer").control;
        assert_eq!(lane.messages_sent, COUNT);
        // QueueFull refusals (retried above) are the only drops allowed.
        assert_eq!(lane.dropped(), lane.dropped_queue_full, "{lane:?}");
        assert!(
            lane.write_batches < COUNT / 4,
            "little coalescing: {} writes for {COUNT} messages",
            lane.write_batches
        );
    }
    assert_eq!(b.stats().messages_received, 2 * COUNT);
}

#[test]
fn control_lane_does_not_wait_behind_bulk_transfers() {
    let log = Log::default();
    let (b, b_in) = node(2, &log);
    let (a, _) = start(config(1, secret(), &log), &[(NodeId(2), b.local_addr())]);
    b.set_peer(NodeId(1), a.local_addr()).expect("peer");
    // Open both lanes first, so that the race below is about bytes, not handshakes.
    assert_eq!(a.send(NodeId(2), Msg::Seq(0)), SendOutcome::Queued);
    assert_eq!(
        a.send_bulk(NodeId(2), Msg::Blob(vec![])),
        SendOutcome::Queued
    );
    for _ in 0..2 {
        b_in.recv_timeout(Duration::from_secs(5)).expect("warm-up");
    }

    let chunk = vec![0xAB; 1024 * 1024];
    let bulk = haven::limits::PEER_BULK_SEND_QUEUE;
    for _ in 0..bulk {
        assert_eq!(
            a.send_bulk(NodeId(2), Msg::Blob(chunk.clone())),
            SendOutcome::Queued
        );
    }
    assert_eq!(a.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    let mut blobs_before_control = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut control_seen = false;
    let mut blobs = 0;
    while blobs < bulk || !control_seen {
        let left = deadline.saturating_duration_since(Instant::now());
        match b_in.recv_timeout(left).expect("everything arrives").1 {
            Msg::Seq(1) => control_seen = true,
            Msg::Blob(data) => {
                assert_eq!(data.len(), chunk.len());
                blobs += 1;
                if !control_seen {
                    blobs_before_control += 1;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        blobs_before_control < bulk,
        "the control message waited behind all {bulk} MiB of bulk data"
    );
    let stats = a.peer_stats(NodeId(2)).expect("peer");
    assert_eq!(stats.bulk.messages_sent, bulk as u64 + 1);
    assert_eq!(stats.control.messages_sent, 2);
}

#[test]
fn full_queue_counts_drops_and_never_blocks_the_caller() {
    let log = Log::default();
    // A peer that accepts TCP connections (the kernel's backlog) but never answers: the
    // sender thread is stuck in the handshake while the caller keeps sending.
    let stuck = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (a, _) = start(
        config(1, secret(), &log),
        &[(NodeId(2), stuck.local_addr().expect("addr"))],
    );
    let total = 3 * haven::limits::PEER_SEND_QUEUE;
    let mut full = 0u64;
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for n in 0..total {
        let t = Instant::now();
        let outcome = a.send(NodeId(2), Msg::Seq(n as u64));
        slowest = slowest.max(t.elapsed());
        match outcome {
            SendOutcome::Queued => {}
            SendOutcome::QueueFull => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = start.elapsed();
    assert!(
        full >= (total - haven::limits::PEER_SEND_QUEUE - 1) as u64,
        "{full}"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "one send took {slowest:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "{total} sends took {elapsed:?}"
    );
    let lane = a.peer_stats(NodeId(2)).expect("peer").control;
    assert_eq!(lane.dropped_queue_full, full);
    // When the handshake times out, what was queued is discarded and counted too.
    assert!(wait_until(Duration::from_secs(5), || {
        a.peer_stats(NodeId(2))
            .is_some_and(|s| s.control.dropped_unreachable > 0 && s.control.queued == 0)
    }));
    let lane = a.peer_stats(NodeId(2)).expect("peer").control;
    assert_eq!(lane.dropped(), total as u64, "{lane:?}");
    assert_eq!(lane.messages_sent, 0);
}

#[test]
fn sender_reconnects_with_backoff_after_the_listener_restarts() {
    let log = Log::default();
    let (b, b_in) = node(2, &log);
    let b_addr = b.local_addr();
    let (a, _) = start(config(1, secret(), &log), &[(NodeId(2), b_addr)]);
    b.set_peer(NodeId(1), a.local_addr()).expect("peer");
    assert_eq!(a.send(NodeId(2), Msg::Seq(0)), SendOutcome::Queued);
    assert_eq!(
        b_in.recv_timeout(Duration::from_secs(5)).expect("first"),
        (NodeId(1), Msg::Seq(0))
    );

    // Kill b; a keeps sending during the outage.
    drop(b);
    let mut sent = 0u64;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_millis(400) {
        sent += 1;
        a.send(NodeId(2), Msg::Seq(sent));
        thread::sleep(Duration::from_millis(5));
    }
    let during = a.peer_stats(NodeId(2)).expect("peer").control;
    assert!(during.connect_failures >= 1, "{during:?}");
    // Backoff: far fewer connect attempts than messages.
    assert!(
        during.connect_failures * 4 < sent,
        "{} attempts for {sent} messages",
        during.connect_failures
    );

    // Restart b on the same port.
    let mut config_b = config(2, secret(), &log);
    config_b.listen_addr = b_addr;
    let restarted = (0..100).find_map(|_| {
        let (tx, rx) = unbounded();
        match Net::start(config_b.clone(), &[(NodeId(1), a.local_addr())], tx, None) {
            Ok(net) => Some((net, rx)),
            Err(Error::Io { .. }) => {
                thread::sleep(Duration::from_millis(20));
                None
            }
            Err(e) => panic!("restart: {e}"),
        }
    });
    let (_b2, b2_in) = restarted.expect("port reusable");
    // Later messages arrive, in order.
    let mut first_after = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while first_after.is_none() && Instant::now() < deadline {
        sent += 1;
        a.send(NodeId(2), Msg::Seq(sent));
        if let Ok((_, Msg::Seq(n))) = b2_in.recv_timeout(Duration::from_millis(20)) {
            first_after = Some(n);
        }
    }
    let first_after = first_after.expect("a reconnected to the restarted listener");
    for _ in 0..10 {
        sent += 1;
        a.send(NodeId(2), Msg::Seq(sent));
    }
    let mut expected = first_after + 1;
    while expected <= sent {
        match b2_in
            .recv_timeout(Duration::from_secs(5))
            .expect("later messages")
        {
            (_, Msg::Seq(n)) if n >= expected => {
                assert_eq!(n, expected, "gap after reconnect");
                expected += 1;
            }
            (_, Msg::Seq(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let after = a.peer_stats(NodeId(2)).expect("peer").control;
    assert!(after.connects >= 2 && after.connected, "{after:?}");
}

#[test]
fn peer_set_changes_at_runtime() {
    let log = Log::default();
    let (a, _) = node(1, &log);
    assert_eq!(a.send(NodeId(2), Msg::Seq(0)), SendOutcome::UnknownPeer);
    assert!(matches!(
        a.set_peer(NodeId(1), a.local_addr()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        a.set_peer(NodeId(0), a.local_addr()),
        Err(Error::InvalidArgument(_))
    ));
    let too_many: Vec<(NodeId, SocketAddr)> = (2..=haven::limits::MAX_MEMBERS as u64 + 1)
        .map(|n| (NodeId(n), dead_addr()))
        .collect();
    assert!(matches!(
        a.set_peers(&too_many),
        Err(Error::InvalidArgument(_))
    ));

    // Add n2 at runtime.
    let (b, b_in) = start(config(2, secret(), &log), &[(NodeId(1), a.local_addr())]);
    a.set_peer(NodeId(2), b.local_addr()).expect("add");
    assert_eq!(a.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    assert_eq!(
        b_in.recv_timeout(Duration::from_secs(5)).expect("1").1,
        Msg::Seq(1)
    );

    // n2 moves to another address: the lane follows, its counters continue.
    let (b2, b2_in) = start(config(2, secret(), &log), &[(NodeId(1), a.local_addr())]);
    a.set_peers(&[(NodeId(2), b2.local_addr())]).expect("move");
    assert_eq!(a.peers(), vec![(NodeId(2), b2.local_addr())]);
    assert_eq!(a.send(NodeId(2), Msg::Seq(2)), SendOutcome::Queued);
    assert_eq!(
        b2_in.recv_timeout(Duration::from_secs(5)).expect("2").1,
        Msg::Seq(2)
    );
    // The sender counts a message once its write returned, which can be after the receiver
    // already has it.
    let counted = || {
        let lane = a.peer_stats(NodeId(2)).expect("peer").control;
        (lane.messages_sent, lane.connects)
    };
    assert!(
        wait_until(Duration::from_secs(5), || counted() == (2, 2)),
        "{:?}",
        counted()
    );

    // n2 removes n1 from its membership: n1's connection is closed and new ones refused.
    assert!(b2.remove_peer(NodeId(1)));
    assert!(wait_until(Duration::from_secs(5), || b2
        .stats()
        .peer_connections
        == 0));
    for n in 3..20 {
        a.send(NodeId(2), Msg::Seq(n));
        thread::sleep(Duration::from_millis(10));
    }
    log.wait_for_warning(&["n1 is not a member known to n2"])
        .expect("refused after removal");
    assert!(
        b2_in.try_recv().is_err(),
        "a removed member delivered a message"
    );

    // n1 removes n2: sends are refused locally.
    assert!(a.remove_peer(NodeId(2)));
    assert!(!a.remove_peer(NodeId(2)));
    assert_eq!(a.send(NodeId(2), Msg::Seq(99)), SendOutcome::UnknownPeer);
    assert!(a.peers().is_empty());
    drop(b);
}

#[test]
fn quiet_connection_is_kept_alive_and_a_silent_one_is_closed_at_the_idle_timeout() {
    let log = Log::default();
    let (b, b_in) = node(2, &log);
    // n1 reaches n2 directly, n3 through a proxy that will blackhole.
    let link = Proxy::start(b.local_addr());
    let (a, _) = start(config(1, secret(), &log), &[(NodeId(2), b.local_addr())]);
    let (c, _) = start(config(3, secret(), &log), &[(NodeId(2), link.addr())]);
    b.set_peers(&[(NodeId(1), a.local_addr()), (NodeId(3), c.local_addr())])
        .expect("peers");
    a.send(NodeId(2), Msg::Seq(1));
    c.send(NodeId(2), Msg::Seq(1));
    for _ in 0..2 {
        b_in.recv_timeout(Duration::from_secs(5))
            .expect("delivered");
    }
    assert_eq!(b.stats().peer_connections, 2);

    // Nothing to say for longer than the idle timeout (3 s): keepalives hold n1's
    // connection open; n3's keepalives are swallowed, so n2 closes that one.
    link.set_mode(Mode::Blackhole);
    let idle = config(2, secret(), &log).idle_timeout;
    thread::sleep(idle + Duration::from_millis(700));
    log.wait_for_warning(&["closing peer n3", "nothing received"])
        .expect("n2 closed the silent connection");
    assert!(wait_until(Duration::from_secs(2), || b
        .stats()
        .peer_connections
        == 1));

    assert_eq!(a.send(NodeId(2), Msg::Seq(2)), SendOutcome::Queued);
    assert_eq!(
        b_in.recv_timeout(Duration::from_secs(5))
            .expect("still open"),
        (NodeId(1), Msg::Seq(2))
    );
    let lane = a.peer_stats(NodeId(2)).expect("peer").control;
    assert_eq!(
        lane.connects, 1,
        "the quiet connection was replaced: {lane:?}"
    );
    assert!(lane.bytes_sent > 0);
}

#[test]
fn messages_flow_through_a_proxy_and_stop_when_it_cuts() {
    let log = Log::default();
    let (b, b_in) = node(2, &log);
    let link = Proxy::start(b.local_addr());
    let (a, _) = start(config(1, secret(), &log), &[(NodeId(2), link.addr())]);
    b.set_peer(NodeId(1), a.local_addr()).expect("peer");
    a.send(NodeId(2), Msg::Seq(1));
    assert_eq!(
        b_in.recv_timeout(Duration::from_secs(5)).expect("1").1,
        Msg::Seq(1)
    );

    link.set_mode(Mode::Cut);
    for n in 2..30 {
        a.send(NodeId(2), Msg::Seq(n));
        thread::sleep(Duration::from_millis(10));
    }
    assert!(b_in.recv_timeout(Duration::from_millis(200)).is_err());
    let lane = a.peer_stats(NodeId(2)).expect("peer").control;
    assert!(lane.dropped() > 0 && lane.connect_failures > 0, "{lane:?}");

    link.set_mode(Mode::Pass);
    let mut delivered = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 100;
    while !delivered && Instant::now() < deadline {
        n += 1;
        a.send(NodeId(2), Msg::Seq(n));
        delivered = b_in.recv_timeout(Duration::from_millis(20)).is_ok();
    }
    assert!(delivered, "no message after the link healed");
}

/// Figures, not a speed requirement (the numbers depend on the machine):
/// `cargo test --release --test net_peers -- --ignored --nocapture`
#[test]
#[ignore]
fn figures_peer_throughput_and_connect_latency() {
    let log = Log::default();
    let (b, b_in) = node(2, &log);
    let (a, _) = start(config(1, secret(), &log), &[(NodeId(2), b.local_addr())]);
    b.set_peer(NodeId(1), a.local_addr()).expect("peer");
    for (label, count, make) in [
        (
            "small (Seq)",
            200_000u64,
            (|n| Msg::Seq(n)) as fn(u64) -> Msg,
        ),
        ("1 KiB blob", 50_000, |_| Msg::Blob(vec![7; 1024])),
    ] {
        let before = a.peer_stats(NodeId(2)).expect("peer").control;
        let start = Instant::now();
        thread::scope(|s| {
            s.spawn(|| {
                for n in 0..count {
                    // Retry on a full queue: the figure is for delivered messages.
                    while a.send(NodeId(2), make(n)) == SendOutcome::QueueFull {
                        thread::yield_now();
                    }
                }
            });
            for _ in 0..count {
                b_in.recv_timeout(Duration::from_secs(10))
                    .expect("delivered");
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let lane = a.peer_stats(NodeId(2)).expect("peer").control;
        println!(
            "{label}: {count} messages in {secs:.3} s = {:.0} msg/s; {:.1} messages per write",
            count as f64 / secs,
            (lane.messages_sent - before.messages_sent) as f64
                / (lane.write_batches - before.write_batches).max(1) as f64
        );
    }
    // Connect + handshake (4 frames, 2 round trips, 3 HMACs per side) on loopback.
    let (tx, _rx) = unbounded();
    let (ctx, _crx) = unbounded();
    let member = Net::start(config(3, secret(), &log), &[], tx, Some(ctx)).expect("start");
    let rounds = 200;
    let start = Instant::now();
    for i in 0..rounds {
        haven::net::ClientConnection::<Req, Resp>::connect(
            member.local_addr(),
            CLUSTER,
            &secret(),
            i,
            Duration::from_secs(5),
        )
        .expect("connect");
    }
    println!(
        "connect + handshake + close: {:.0} us each ({rounds} rounds)",
        start.elapsed().as_micros() as f64 / f64::from(rounds as u32)
    );
}
