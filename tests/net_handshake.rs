//! The authenticated handshake, as a stranger, a misconfigured peer or an attacker sees it:
//! who gets in, who is refused with which reason, and that refusals cost the member nothing.

#[path = "support/net.rs"]
mod net_support;

use crossbeam_channel::{unbounded, Receiver};
use haven::net::{ClientConnection, ClientEvent, SendOutcome, Transport};
use haven::{ClusterId, Error, NodeId};
use net_support::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

type Inbound = Receiver<(NodeId, Msg)>;
type Clients = Receiver<ClientEvent<Req, Resp>>;

fn start(node: u64, secret: haven::net::ClusterSecret, log: &Log) -> (Net, Inbound, Clients) {
    start_with(config(node, secret, log), &[])
}

fn start_with(
    config: haven::net::TransportConfig,
    peers: &[(NodeId, SocketAddr)],
) -> (Net, Inbound, Clients) {
    let (tx, rx) = unbounded();
    let (ctx, crx) = unbounded();
    let net = Net::start(config, peers, tx, Some(ctx)).expect("start transport");
    (net, rx, crx)
}

/// Read from a raw connection until the member closes it; returns how long that took, or None
/// if it stayed open for `limit`.
fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {} // a refusal frame, then the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn expect_auth<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::Auth(message)) => message,
        other => panic!("expected Error::Auth, got {other:?}"),
    }
}

#[test]
fn handshake_succeeds_and_the_first_message_is_delivered() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let (b, b_in, _) = start(2, secret(), &log_b);
    let (a, _, _) = start_with(config(1, secret(), &log_a), &[(NodeId(2), b.local_addr())]);
    b.set_peer(NodeId(1), a.local_addr()).expect("add peer");

    assert_eq!(a.send(NodeId(2), Msg::Seq(7)), SendOutcome::Queued);
    let got = b_in
        .recv_timeout(Duration::from_secs(5))
        .expect("delivered");
    assert_eq!(got, (NodeId(1), Msg::Seq(7)));
    assert_eq!(b.stats().handshakes_accepted, 1);
    assert_eq!(b.stats().handshakes_refused, 0);
    let stats = a.peer_stats(NodeId(2)).expect("peer");
    assert!(stats.control.connected);
    assert_eq!(stats.control.connects, 1);
}

#[test]
fn client_with_wrong_secret_is_refused_with_auth_and_logged_with_its_address() {
    let log = Log::default();
    let (member, _, clients) = start(1, secret(), &log);
    let result = ClientConnection::<Req, Resp>::connect(
        member.local_addr(),
        CLUSTER,
        &other_secret(),
        9,
        Duration::from_secs(5),
    );
    let message = expect_auth(result);
    assert!(message.contains("secrets differ"), "{message}");
    assert!(
        message.contains(&member.local_addr().to_string()),
        "{message}"
    );
    let line = log
        .wait_for_warning(&[
            "refused connection from 127.0.0.1:",
            "client 9",
            "secrets differ",
        ])
        .expect("the member logs the refusal with the client's address");
    assert!(line.starts_with("n1: "), "{line}");
    assert!(clients.try_recv().is_err(), "nothing may be delivered");
    assert_eq!(member.stats().handshakes_refused, 1);
    assert_eq!(member.stats().client_connections, 0);
}

#[test]
fn peers_with_different_secrets_refuse_each_other_in_both_directions() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let (a, a_in, _) = start(1, secret(), &log_a);
    let (b, b_in, _) = start(2, other_secret(), &log_b);
    a.set_peer(NodeId(2), b.local_addr()).expect("peer");
    b.set_peer(NodeId(1), a.local_addr()).expect("peer");

    // a -> b: b refuses and logs; a's sender reports Auth in its log.
    assert_eq!(a.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    let refused_at_b = log_b
        .wait_for_warning(&[
            "refused connection from 127.0.0.1:",
            "peer n1",
            "secrets differ",
        ])
        .expect("b logs a's refusal");
    assert!(
        refused_at_b.contains("authentication failed"),
        "{refused_at_b}"
    );
    let seen_at_a = log_a
        .wait_for_warning(&["n1 -> n2", "refused the connection", "secrets differ"])
        .expect("a logs that b refused it");
    assert!(seen_at_a.contains("authentication failed"), "{seen_at_a}");

    // b -> a: the same, the other way round.
    assert_eq!(b.send(NodeId(1), Msg::Seq(2)), SendOutcome::Queued);
    log_a
        .wait_for_warning(&[
            "refused connection from 127.0.0.1:",
            "peer n2",
            "secrets differ",
        ])
        .expect("a logs b's refusal");
    log_b
        .wait_for_warning(&["n2 -> n1", "secrets differ"])
        .expect("b logs that a refused it");

    assert!(a_in.try_recv().is_err() && b_in.try_recv().is_err());
    assert_eq!(a.stats().messages_received + b.stats().messages_received, 0);
    let a_to_b = a.peer_stats(NodeId(2)).expect("peer").control;
    assert!(a_to_b.connect_failures >= 1 && a_to_b.messages_sent == 0);
    assert!(!a_to_b.connected);
}

#[test]
fn wrong_cluster_id_is_refused() {
    let log = Log::default();
    let (member, _, clients) = start(1, secret(), &log);
    let result = ClientConnection::<Req, Resp>::connect(
        member.local_addr(),
        ClusterId(43),
        &secret(),
        5,
        Duration::from_secs(5),
    );
    let message = expect_auth(result);
    assert!(
        message.contains("cluster c43") && message.contains("cluster c42"),
        "{message}"
    );
    log.wait_for_warning(&["refused connection from 127.0.0.1:", "cluster c43"])
        .expect("logged");
    assert!(clients.try_recv().is_err());
}

#[test]
fn unknown_node_id_is_refused() {
    let (log_a, log_b) = (Log::default(), Log::default());
    // b's membership is {n2, n3}: n1 is a stranger to it, even with the right secret.
    let (b, b_in, _) = start_with(config(2, secret(), &log_b), &[(NodeId(3), dead_addr())]);
    let (a, _, _) = start_with(config(1, secret(), &log_a), &[(NodeId(2), b.local_addr())]);
    assert_eq!(a.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    let line = log_a
        .wait_for_warning(&["n1 is not a member known to n2", "[n3]"])
        .expect("a is told why");
    assert!(line.contains("authentication failed"), "{line}");
    log_b
        .wait_for_warning(&["refused connection from 127.0.0.1:", "n1 is not a member"])
        .expect("b logs it");
    assert!(b_in.try_recv().is_err());
}

#[test]
fn peer_address_that_reaches_another_member_is_refused() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let (b, b_in, _) = start(2, secret(), &log_b);
    b.set_peer(NodeId(1), dead_addr()).expect("peer");
    // a believes n3 lives at b's address.
    let (a, _, _) = start_with(config(1, secret(), &log_a), &[(NodeId(3), b.local_addr())]);
    assert_eq!(a.send(NodeId(3), Msg::Seq(1)), SendOutcome::Queued);
    log_a
        .wait_for_warning(&["dialled n3 but reached member n2"])
        .expect("a is told it dialled the wrong member");
    assert!(b_in.try_recv().is_err());
}

#[test]
fn client_is_refused_by_a_member_that_serves_no_clients() {
    let log = Log::default();
    let (tx, _rx) = unbounded();
    let member: Transport<Msg> =
        Transport::start(config(1, secret(), &log), &[], tx, None).expect("start");
    let result = ClientConnection::<Req, Resp>::connect(
        member.local_addr(),
        CLUSTER,
        &secret(),
        1,
        Duration::from_secs(5),
    );
    let message = expect_auth(result);
    assert!(
        message.contains("does not serve remote clients"),
        "{message}"
    );
}

/// The VmPeak (virtual memory high-water mark) of this process, in KiB.
fn vm_peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn garbage_and_huge_declared_lengths_are_dropped_and_the_listener_keeps_serving() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let mut config_b = config(2, secret(), &log_b);
    // A long deadline, so that a quick close proves the bytes were refused, not timed out.
    config_b.handshake_timeout = Duration::from_secs(10);
    let (b, b_in, _) = start_with(config_b, &[]);
    let peak_before = vm_peak_kib();

    // 1. Not haven at all.
    let mut http = TcpStream::connect(b.local_addr()).expect("connect");
    http.write_all(b"GET / HTTP/1.1\r\nHost: haven\r\n\r\n")
        .expect("write");
    let closed = time_until_closed(&mut http, Duration::from_secs(5)).expect("closed");
    assert!(closed < Duration::from_secs(2), "took {closed:?}");

    // 2. A well-formed header that announces a 4 GiB frame.
    let mut huge = TcpStream::connect(b.local_addr()).expect("connect");
    let mut header = Vec::new();
    header.extend_from_slice(b"HV");
    header.extend_from_slice(&[1, 1]);
    header.extend_from_slice(&u32::MAX.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    huge.write_all(&header).expect("write");
    let closed = time_until_closed(&mut huge, Duration::from_secs(5)).expect("closed");
    assert!(closed < Duration::from_secs(2), "took {closed:?}");
    log_b
        .wait_for_warning(&["refused connection from 127.0.0.1:", "over the limit"])
        .expect("the length is refused from the header alone");

    // 3. 256 KiB of pseudo-random bytes.
    let mut noise = TcpStream::connect(b.local_addr()).expect("connect");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let bytes: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = noise.write_all(&bytes); // the member may close before all of it is written
    assert!(time_until_closed(&mut noise, Duration::from_secs(5)).is_some());

    // Refusing them cost no large allocation: a 4 GiB buffer would show in the peak of
    // virtual memory. (The bound is loose because thread stacks and malloc arenas also
    // reserve address space.)
    if let (Some(before), Some(after)) = (peak_before, vm_peak_kib()) {
        assert!(
            after.saturating_sub(before) < 2 * 1024 * 1024,
            "VmPeak grew from {before} KiB to {after} KiB"
        );
    }
    assert_eq!(b.stats().handshakes_refused, 3);

    // The listener still serves a real peer.
    b.set_peer(NodeId(1), dead_addr()).expect("peer");
    let (a, _, _) = start_with(config(1, secret(), &log_a), &[(NodeId(2), b.local_addr())]);
    assert_eq!(a.send(NodeId(2), Msg::Seq(99)), SendOutcome::Queued);
    assert_eq!(
        b_in.recv_timeout(Duration::from_secs(5))
            .expect("delivered"),
        (NodeId(1), Msg::Seq(99))
    );
}

#[test]
fn silent_and_trickling_connections_are_dropped_at_the_handshake_deadline() {
    let log = Log::default();
    let mut config = config(1, secret(), &log);
    config.handshake_timeout = Duration::from_millis(300);
    let (member, _, _) = start_with(config, &[]);

    let mut silent = TcpStream::connect(member.local_addr()).expect("connect");
    let closed = time_until_closed(&mut silent, Duration::from_secs(3)).expect("dropped");
    assert!(
        closed >= Duration::from_millis(200) && closed < Duration::from_secs(2),
        "silent connection dropped after {closed:?}"
    );

    // One byte every 50 ms keeps each read alive but not the handshake.
    let mut trickle = TcpStream::connect(member.local_addr()).expect("connect");
    trickle.set_nodelay(true).expect("nodelay");
    let start = Instant::now();
    let mut dropped = false;
    // A valid-looking header announcing 64 bytes, then zeros.
    let mut bytes = b"HV\x01\x01\x40\x00\x00\x00".to_vec();
    bytes.resize(60, 0);
    for byte in bytes {
        if trickle.write_all(&[byte]).is_err() {
            dropped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropped = dropped || time_until_closed(&mut trickle, Duration::from_secs(2)).is_some();
    assert!(dropped, "the trickling connection was never dropped");
    assert!(start.elapsed() < Duration::from_secs(4));
    log.wait_for_warning(&["refused connection from 127.0.0.1:", "not finished in time"])
        .expect("logged");
    assert_eq!(member.stats().handshakes_refused, 2);
}

#[test]
fn too_many_pending_handshakes_are_closed_at_accept() {
    let log = Log::default();
    let mut config = config(1, secret(), &log);
    config.handshake_timeout = Duration::from_millis(800);
    let (member, _, _) = start_with(config, &[]);
    let extra = 8;
    let limit = haven::limits::MAX_PENDING_HANDSHAKES;
    let held: Vec<TcpStream> = (0..limit + extra)
        .filter_map(|_| TcpStream::connect(member.local_addr()).ok())
        .collect();
    assert!(
        wait_until(Duration::from_secs(3), || member
            .stats()
            .connections_rejected
            >= 1),
        "no connection was rejected: {:?}",
        member.stats()
    );
    log.wait_for_warning(&["handshakes already in progress"])
        .expect("logged");
    drop(held);
    // Once the silent ones time out, a real client gets in again.
    let addr = member.local_addr();
    assert!(wait_until(Duration::from_secs(5), || {
        ClientConnection::<Req, Resp>::connect(addr, CLUSTER, &secret(), 1, Duration::from_secs(1))
            .is_ok()
    }));
}
