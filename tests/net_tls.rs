//! TLS and principals on the transport: mutual TLS between members, client certificates,
//! mixed TLS/plaintext configurations, and why a client credential never opens a peer lane.

#[path = "support/net.rs"]
mod net_support;
#[path = "tls_support/mod.rs"]
mod tls_support;

use crossbeam_channel::{unbounded, Receiver};
use haven::net::{
    ClientConnection, ClientEvent, ClientTls, ClusterSecret, SendOutcome, TransportConfig,
};
use haven::{Error, NodeId};
use net_support::*;
use std::net::SocketAddr;
use std::time::Duration;
use tls_support::{client_tls, member_tls, Ca};

type Inbound = Receiver<(NodeId, Msg)>;
type Client = ClientConnection<Req, Resp>;

/// Long enough that a mismatch answered by a timeout would show as `Timeout`, not `Auth`.
const HANDSHAKE: Duration = Duration::from_secs(10);

fn start(config: TransportConfig, peers: &[(NodeId, SocketAddr)]) -> (Net, Inbound) {
    let (tx, rx) = unbounded();
    let (ctx, crx) = unbounded::<ClientEvent<Req, Resp>>();
    let net = Net::start(config, peers, tx, Some(ctx)).expect("start transport");
    // Answer every client request (the thread ends when the transport drops its sender).
    std::thread::spawn(move || {
        while let Ok(event) = crx.recv() {
            if let ClientEvent::Request {
                conn,
                request_id,
                request,
            } = event
            {
                conn.respond(
                    request_id,
                    Resp {
                        thread: request.thread,
                        n: request.n,
                        doubled: request.n * 2,
                    },
                );
            }
        }
    });
    (net, rx)
}

fn tls_config(
    node: u64,
    secret: ClusterSecret,
    log: &Log,
    tls: haven::net::MemberTls,
) -> TransportConfig {
    let mut config = config(node, secret, log);
    config.handshake_timeout = HANDSHAKE;
    config.tls = Some(tls);
    config
}

fn connect(net: &Net, secret: &ClusterSecret, tls: Option<&ClientTls>) -> Result<Client, Error> {
    Client::connect_with(net.local_addr(), CLUSTER, secret, 7, HANDSHAKE, tls)
}

fn call(client: &Client) -> Resp {
    client
        .call(Req { thread: 1, n: 21 }, Duration::from_secs(5))
        .expect("call")
}

fn expect_auth<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Err(Error::Auth(message)) => message,
        other => panic!("expected Error::Auth, got {other:?}"),
    }
}

fn delivered(rx: &Inbound) -> Option<(NodeId, Msg)> {
    rx.recv_timeout(Duration::from_secs(5)).ok()
}

#[test]
fn members_talk_over_mutual_tls_and_clients_call_over_tls() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let ca = Ca::new("member CA");
    let (b, b_in) = start(
        tls_config(2, secret(), &log_b, member_tls(&ca, 2, None)),
        &[],
    );
    let (a, a_in) = start(
        tls_config(1, secret(), &log_a, member_tls(&ca, 1, None)),
        &[(NodeId(2), b.local_addr())],
    );
    b.set_peer(NodeId(1), a.local_addr()).expect("peer");
    for n in 0..100 {
        assert_eq!(a.send(NodeId(2), Msg::Seq(n)), SendOutcome::Queued);
    }
    for n in 0..100 {
        assert_eq!(delivered(&b_in), Some((NodeId(1), Msg::Seq(n))));
    }
    // A large message crosses many TLS records; the bulk lane too.
    let blob = vec![0xA5u8; 3 << 20];
    assert_eq!(
        b.send_bulk(NodeId(1), Msg::Blob(blob.clone())),
        SendOutcome::Queued
    );
    assert_eq!(delivered(&a_in), Some((NodeId(2), Msg::Blob(blob))));

    // No client certificate needed without a client CA.
    let client = connect(&b, &secret(), Some(&client_tls(&ca, None))).expect("TLS client");
    assert_eq!(call(&client).doubled, 42);
    // Many calls in flight on one TLS connection, from several threads.
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let client = &client;
            s.spawn(move || {
                for n in 0..200 {
                    let resp = client
                        .call(Req { thread: t, n }, Duration::from_secs(5))
                        .expect("call");
                    assert_eq!((resp.thread, resp.doubled), (t, n * 2));
                }
            });
        }
    });
    assert_eq!(b.stats().handshakes_refused, 0);
}

#[test]
fn clients_without_a_certificate_from_another_ca_or_expired_are_refused_with_auth() {
    let log = Log::default();
    let ca = Ca::new("member CA");
    let clients_ca = Ca::new("client CA");
    let stranger_ca = Ca::new("some other CA");
    let (member, _) = start(
        tls_config(1, secret(), &log, member_tls(&ca, 1, Some(&clients_ca))),
        &[],
    );

    let none = expect_auth(connect(&member, &secret(), Some(&client_tls(&ca, None))));
    assert!(none.contains("TLS"), "{none}");
    let foreign = stranger_ca.client("mallory");
    let other = expect_auth(connect(
        &member,
        &secret(),
        Some(&client_tls(&ca, Some(&foreign))),
    ));
    assert!(other.contains("TLS"), "{other}");
    let expired = clients_ca.expired_client("late");
    let late = expect_auth(connect(
        &member,
        &secret(),
        Some(&client_tls(&ca, Some(&expired))),
    ));
    assert!(late.contains("TLS"), "{late}");
    // The member counts a refusal after its linger, which may end after the client's error.
    assert!(wait_until(Duration::from_secs(5), || member
        .stats()
        .handshakes_refused
        == 3));

    // A certificate from the client CA is let in.
    let good = clients_ca.client("alice");
    let client = connect(&member, &secret(), Some(&client_tls(&ca, Some(&good)))).expect("client");
    assert_eq!(call(&client).doubled, 42);
}

#[test]
fn member_with_a_certificate_from_another_ca_cannot_join() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let ca = Ca::new("member CA");
    let wrong = Ca::new("wrong CA");
    let (b, b_in) = start(
        tls_config(2, secret(), &log_b, member_tls(&ca, 2, None)),
        &[],
    );
    // Same secret, same cluster, a certificate (and a trust anchor) from another CA.
    let (a, _) = start(
        tls_config(1, secret(), &log_a, member_tls(&wrong, 1, None)),
        &[(NodeId(2), b.local_addr())],
    );
    b.set_peer(NodeId(1), a.local_addr()).expect("peer");
    assert_eq!(a.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    log_a
        .wait_for_warning(&["TLS handshake with", "failed"])
        .expect("the dialling member reports the refused certificate");
    assert!(wait_until(Duration::from_secs(5), || {
        a.peer_stats(NodeId(2))
            .is_some_and(|s| s.control.connect_failures >= 1)
    }));
    assert!(b_in.recv_timeout(Duration::from_millis(300)).is_err());
    // And the other way: b refuses a's certificate when a dials, a refuses b's when b dials.
    assert_eq!(b.send(NodeId(1), Msg::Seq(2)), SendOutcome::Queued);
    assert!(wait_until(Duration::from_secs(5), || {
        b.peer_stats(NodeId(1))
            .is_some_and(|s| s.control.connect_failures >= 1)
    }));
    assert_eq!(
        a.stats().handshakes_accepted + b.stats().handshakes_accepted,
        0
    );
}

#[test]
fn a_client_certificate_cannot_open_a_peer_lane_even_with_the_member_secret() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let ca = Ca::new("member CA");
    let clients_ca = Ca::new("client CA");
    let (b, b_in) = start(
        tls_config(2, secret(), &log_b, member_tls(&ca, 2, Some(&clients_ca))),
        &[],
    );
    // A "member" whose certificate came from the client CA.
    let stolen = clients_ca.client("a client");
    let posing = haven::net::MemberTls::from_pem(
        stolen.cert_pem.as_bytes(),
        stolen.key_pem.as_bytes(),
        ca.pem.as_bytes(),
        None,
    )
    .expect("TLS settings");
    let (a, _) = start(
        tls_config(1, secret(), &log_a, posing),
        &[(NodeId(2), b.local_addr())],
    );
    b.set_peer(NodeId(1), dead_addr()).expect("peer");
    assert_eq!(a.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    let line = log_b
        .wait_for_warning(&[
            "refused connection from",
            "no certificate signed by the member CA",
        ])
        .expect("refused and logged");
    assert!(line.contains("peer n1"), "{line}");
    log_a
        .wait_for_warning(&["refused the connection", "member CA"])
        .expect("the poser is told why");
    assert!(b_in.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn a_client_secret_cannot_open_a_peer_lane_and_clients_must_use_it() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let client_secret = other_secret();
    let mut config_b = config(2, secret(), &log_b);
    config_b.client_secret = Some(client_secret.clone());
    let (b, b_in) = start(config_b, &[]);
    b.set_peer(NodeId(1), dead_addr()).expect("peer");
    // Somebody holding only the client secret dials as member 1.
    let (a, _) = start(
        config(1, client_secret.clone(), &log_a),
        &[(NodeId(2), b.local_addr())],
    );
    assert_eq!(a.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    let line = log_b
        .wait_for_warning(&[
            "refused connection from",
            "does not verify with the member secret",
        ])
        .expect("refused and logged");
    assert!(line.contains("peer n1"), "{line}");
    assert!(b_in.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(b.stats().peer_connections, 0);

    // Clients prove the client secret; the member secret is not a client credential here.
    let wrong = expect_auth(connect(&b, &secret(), None));
    assert!(wrong.contains("secrets differ"), "{wrong}");
    let client = connect(&b, &client_secret, None).expect("client with the client secret");
    assert_eq!(call(&client).doubled, 42);
}

#[test]
fn tls_against_plaintext_fails_at_once_with_a_clear_auth_both_ways() {
    let (log_plain, log_tls, log_peer) = (Log::default(), Log::default(), Log::default());
    let ca = Ca::new("member CA");
    let mut plain_config = config(1, secret(), &log_plain);
    plain_config.handshake_timeout = HANDSHAKE;
    let (plain, _) = start(plain_config, &[]);
    let (tls, _) = start(
        tls_config(2, secret(), &log_tls, member_tls(&ca, 2, None)),
        &[],
    );

    // A TLS client against a plaintext member.
    let m = expect_auth(connect(&plain, &secret(), Some(&client_tls(&ca, None))));
    assert!(m.contains("does not use TLS"), "{m}");
    // A plaintext client against a TLS member.
    let m = expect_auth(connect(&tls, &secret(), None));
    assert!(m.contains("requires TLS"), "{m}");

    // Peer lanes: a TLS member dialling a plaintext one, and the reverse.
    plain.set_peer(NodeId(3), dead_addr()).expect("peer");
    tls.set_peer(NodeId(3), dead_addr()).expect("peer");
    let (peer, _) = start(
        tls_config(3, secret(), &log_peer, member_tls(&ca, 3, None)),
        &[(NodeId(1), plain.local_addr())],
    );
    assert_eq!(peer.send(NodeId(1), Msg::Seq(1)), SendOutcome::Queued);
    log_peer
        .wait_for_warning(&["does not use TLS"])
        .expect("the TLS member is told the other does not use TLS");
    let mut plain_peer_config = config(3, secret(), &log_peer);
    plain_peer_config.handshake_timeout = HANDSHAKE;
    let (plain_peer, _) = start(plain_peer_config, &[(NodeId(2), tls.local_addr())]);
    assert_eq!(plain_peer.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    log_peer
        .wait_for_warning(&["requires TLS"])
        .expect("the plaintext member is told TLS is required");
    log_tls
        .wait_for_warning(&["refused connection from", "requires TLS"])
        .expect("the TLS member logs the refusal");
}

#[test]
fn a_second_connection_claiming_a_members_lane_replaces_it_and_is_logged_and_counted() {
    let (log_b, log_a1, log_a2) = (Log::default(), Log::default(), Log::default());
    let (b, b_in) = start(config(2, secret(), &log_b), &[]);
    b.set_peer(NodeId(1), dead_addr()).expect("peer");
    let (a1, _) = start(config(1, secret(), &log_a1), &[(NodeId(2), b.local_addr())]);
    assert_eq!(a1.send(NodeId(2), Msg::Seq(1)), SendOutcome::Queued);
    assert_eq!(delivered(&b_in), Some((NodeId(1), Msg::Seq(1))));
    assert_eq!(b.stats().peer_connections_replaced, 0);
    // A second process with the same id (a restarted member, or a misconfigured one).
    let (a2, _) = start(config(1, secret(), &log_a2), &[(NodeId(2), b.local_addr())]);
    assert_eq!(a2.send(NodeId(2), Msg::Seq(2)), SendOutcome::Queued);
    assert_eq!(delivered(&b_in), Some((NodeId(1), Msg::Seq(2))));
    assert!(wait_until(Duration::from_secs(5), || b
        .stats()
        .peer_connections_replaced
        == 1));
    log_b
        .wait_for_warning(&[
            "peer n1 (control lane) connected again from 127.0.0.1:",
            "older connection from 127.0.0.1:",
        ])
        .expect("logged with both addresses");
}
