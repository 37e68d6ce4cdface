//! A 3-member cluster over TLS (certificates made by the test): remote clients write through
//! TLS with client certificates and a client secret, the leader is stopped and another takes
//! over, the old leader restarts and catches up.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "tls_support/mod.rs"]
mod tls_support;

use cluster_support::{wait_for, Cluster, CLUSTER};
use haven::net::ClusterSecret;
use haven::{Client, ClientOptions, ErrorCode, NodeId};
use std::time::Duration;
use tls_support::{client_tls, member_tls, Ca};

const LEADER_WAIT: Duration = Duration::from_secs(10);
const CLIENT_SECRET: &[u8] = b"the client secret, not the member one";

fn client(
    cluster: &Cluster,
    options: ClientOptions,
    secret: &ClusterSecret,
) -> Result<Client, haven::Error> {
    let strings: Vec<String> = cluster.addrs.iter().map(|a| a.to_string()).collect();
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    Client::connect(&refs, CLUSTER, secret, options)
}

#[test]
fn tls_cluster_writes_fails_over_and_restarts() {
    let ca = Ca::new("member CA");
    let clients_ca = Ca::new("client CA");
    let client_secret = ClusterSecret::new(CLIENT_SECRET.to_vec()).unwrap();
    let tls: Vec<_> = (1..=3)
        .map(|id| member_tls(&ca, id, Some(&clients_ca)))
        .collect();
    let mut cluster = Cluster::start(3, |c| {
        c.tls = Some(tls[(c.id.0 - 1) as usize].clone());
        c.client_secret = Some(client_secret.clone());
    });
    let leader = cluster.wait_leader(LEADER_WAIT);

    let alice = clients_ca.client("alice");
    let options = ClientOptions {
        tls: Some(client_tls(&ca, Some(&alice))),
        ..ClientOptions::default()
    };
    // Without a certificate, or with the member secret: refused.
    let no_cert = ClientOptions {
        tls: Some(client_tls(&ca, None)),
        ..ClientOptions::default()
    };
    let refused = client(&cluster, no_cert, &client_secret).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Auth, "{refused}");
    let refused = client(&cluster, options.clone(), &cluster_support::secret()).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Auth, "{refused}");

    let remote = client(&cluster, options.clone(), &client_secret).expect("TLS client");
    for k in 0..50 {
        remote
            .put(format!("k{k}").as_bytes(), b"before")
            .expect("put");
    }

    // Failover: the leader stops, another is elected, writes go on over TLS.
    cluster.stop(leader);
    let new_leader = cluster.wait_leader(LEADER_WAIT);
    assert_ne!(new_leader, leader);
    wait_for("a write after failover", LEADER_WAIT, || {
        remote.put(b"after-failover", b"yes").ok()
    });
    for k in 0..50 {
        remote
            .put(format!("k{k}").as_bytes(), b"after")
            .expect("put");
    }

    // The old leader restarts and catches up over mutual TLS.
    cluster.restart(leader);
    cluster.wait_leader(LEADER_WAIT);
    cluster.wait_converged(Duration::from_secs(15));
    let restarted = cluster.node(leader).client();
    wait_for(
        "the restarted member to read the new value",
        LEADER_WAIT,
        || {
            let v = restarted.get(b"k49").ok()??;
            (v.value == b"after").then_some(())
        },
    );
    let status = cluster.node(leader).status().expect("status");
    assert_eq!(status.id, NodeId(leader as u64 + 1));
}
