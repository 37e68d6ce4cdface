//! Bad input gets a clear, typed error; nothing is written and nothing crashes: a wrong secret
//! or cluster id, another node's data directory, a locked one, nonsense configuration, garbage
//! bytes sent to the port, bad command-line arguments.

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{fast, free_addrs, remote_client, secret, Cluster, CLUSTER};
use haven::net::{ClientConnection, ClusterSecret};
use haven::node::{Config, Node};
use haven::proto::{ClientRequest, ClientResponse, ReadMode, ReadOp, Request, Response, WireError};
use haven::{Client, ClientOptions, ClusterId, ErrorCode, NodeId};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &std::path::Path, id: u64) -> Config {
    let addr = free_addrs(1)[0];
    let mut c = Config::new(
        NodeId(id),
        CLUSTER,
        dir,
        addr,
        [(NodeId(id), addr.to_string())].into(),
        secret(),
    );
    fast(&mut c);
    c
}

#[test]
fn a_wrong_secret_or_cluster_id_is_refused_as_auth() {
    let cluster = Cluster::start(1, |_| {});
    cluster.wait_leader(WAIT);
    let addr = cluster.addrs[0].to_string();
    let wrong = ClusterSecret::new(b"not-the-cluster-secret".to_vec()).unwrap();
    let e = Client::connect(&[&addr], CLUSTER, &wrong, ClientOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Auth, "{e}");
    let e =
        Client::connect(&[&addr], ClusterId(1), &secret(), ClientOptions::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Auth, "{e}");
    // Nothing was written by those attempts, and the member still serves the right client.
    let before = cluster.wait_converged(WAIT);
    let good = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    assert!(good.get(b"k").unwrap().is_none());
    assert_eq!(cluster.wait_converged(WAIT), before);
}

#[test]
fn another_nodes_or_a_locked_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path(), 1)).unwrap();
    // The same directory while it is open: locked.
    let e = Node::open(config(dir.path(), 1)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::DataDir, "{e}");
    node.shutdown().unwrap();
    drop(node);
    // Node 1's directory opened as node 2, or for another cluster.
    let e = Node::open(config(dir.path(), 2)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::DataDir, "{e}");
    let mut other_cluster = config(dir.path(), 1);
    other_cluster.cluster_id = ClusterId(99);
    let e = Node::open(other_cluster).unwrap_err();
    assert_eq!(e.code(), ErrorCode::DataDir, "{e}");
    // Its owner still opens it, with its data.
    let node = Node::open(config(dir.path(), 1)).unwrap();
    node.client().put(b"k", b"v").unwrap();
    node.shutdown().unwrap();
}

#[test]
fn nonsense_configuration_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 1);
    c.tick_ms = 0;
    let e = Node::open(c).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("tick_ms"), "{e}");
    let mut c = config(dir.path(), 1);
    c.members.insert(NodeId(2), "nowhere".into());
    let e = Node::open(c).unwrap_err();
    assert!(e.to_string().contains("members"), "{e}");
    let mut c = config(dir.path(), 1);
    c.id = NodeId(0);
    let e = Node::open(c).unwrap_err();
    assert!(e.to_string().contains("id"), "{e}");
    // Nothing was created for a refused configuration.
    assert!(!dir.path().join("meta").exists());
}

#[test]
fn garbage_bytes_on_the_port_change_nothing() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.wait_leader(WAIT);
    let before = cluster.wait_converged(WAIT);
    for addr in &cluster.addrs {
        for garbage in [
            vec![0u8; 64],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            // A frame header claiming a huge payload.
            vec![
                b'H', b'V', 1, 1, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ] {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(&garbage);
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
        }
    }
    assert_eq!(cluster.wait_converged(WAIT), before);
    // Everyone still works.
    cluster.node(leader).client().put(b"after", b"ok").unwrap();
    for (_, node) in cluster.running() {
        assert!(node.client().get(b"after").unwrap().is_some());
    }
}

/// A request of a protocol version the member does not speak yet, with a body this build cannot
/// decode (a request kind from the future): the leading fields of every `ClientRequest`, then
/// a `Request` tag no version knows.
#[derive(bincode::Encode, bincode::Decode)]
struct FutureRequest {
    version: u32,
    timeout_ms: u32,
    request_tag: u32,
    body: Vec<u8>,
}

fn raw_call(
    conn: &ClientConnection<FutureRequest, ClientResponse>,
    request: FutureRequest,
) -> ClientResponse {
    conn.call(request, Duration::from_secs(10)).unwrap()
}

#[test]
fn a_newer_protocol_version_is_refused_as_unsupported_and_a_broken_request_closes() {
    let cluster = Cluster::start(1, |_| {});
    cluster.wait_leader(WAIT);
    let before = cluster.wait_converged(WAIT);
    let connect = || {
        ClientConnection::<FutureRequest, ClientResponse>::connect(
            cluster.addrs[0],
            CLUSTER,
            &secret(),
            91,
            Duration::from_secs(5),
        )
        .unwrap()
    };
    let future = |version| FutureRequest {
        version,
        timeout_ms: 1_000,
        request_tag: 200,
        body: vec![1, 2, 3],
    };
    let conn = connect();
    let newest = haven::proto::CLIENT_PROTOCOL_VERSION;
    let answer = raw_call(&conn, future(newest + 1));
    let Err(WireError { code, message }) = answer else {
        panic!(
            "a request of version {} was answered: {answer:?}",
            newest + 1
        );
    };
    assert_eq!(code, ErrorCode::UnsupportedVersion as i32, "{message}");
    // The connection stays usable: the same client's next request (of a version the member
    // speaks) is served on it.
    let get = ClientRequest {
        version: 2,
        timeout_ms: 1_000,
        request: Request::Read {
            op: ReadOp::Get { key: b"k".to_vec() },
            mode: ReadMode::Linearizable,
        },
    };
    let plain: ClientConnection<ClientRequest, ClientResponse> = ClientConnection::connect(
        cluster.addrs[0],
        CLUSTER,
        &secret(),
        92,
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(matches!(
        plain.call(get, WAIT),
        Ok(Ok(Response::Value(None)))
    ));
    let again = raw_call(&conn, future(newest + 7));
    assert!(
        matches!(again, Err(WireError { code, .. }) if code == ErrorCode::UnsupportedVersion as i32)
    );
    assert!(!conn.is_closed());
    // The same body claiming a version the member speaks: no correct client sends it, so the
    // member closes the connection (the call fails) and serves others as before.
    let broken = connect();
    assert!(broken.call(future(newest), Duration::from_secs(5)).is_err());
    assert_eq!(cluster.wait_converged(WAIT), before);
    let good = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    assert!(good.get(b"k").unwrap().is_none());
}

#[test]
fn bad_command_lines_exit_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, b"short").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_haven"))
            .args(args)
            .output()
            .unwrap()
    };
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let secret = secret_file.to_str().unwrap();
    let out = run(&[
        "serve",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--peers",
        "1:x",
        "--data-dir",
        data,
        "--secret-file",
        secret,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--peers"));
    let out = run(&[
        "serve",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--peers",
        "1=127.0.0.1:1",
        "--data-dir",
        data,
        "--secret-file",
        secret,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret"));
    assert!(!std::path::Path::new(data).exists());
}

#[test]
fn a_failed_fdatasync_stops_the_member_and_the_others_go_on() {
    let faults = std::sync::Arc::new(haven::wal::FaultInjector::new());
    let faulty = faults.clone();
    let cluster = Cluster::start(3, move |c| {
        if c.id == NodeId(1) {
            c.wal_faults = Some(faulty.clone());
        }
    });
    cluster.wait_leader(WAIT);
    cluster.node(1).client().put(b"before", b"1").unwrap();
    faults.fail_syncs();
    // Member 1's next write fails its fdatasync: it stops, and says why.
    let failure = cluster_support::wait_for("member 1 to stop", WAIT, || {
        let _ = cluster.node(1).client().put(b"during", b"2");
        let status = cluster.node(0).status().unwrap();
        (status.role == haven::client::NodeRole::Stopped).then_some(status.failure?)
    });
    assert!(failure.contains("fdatasync"), "{failure}");
    let e = cluster.node(0).client().put(b"k", b"v").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Fatal, "{e}");
    // The two others still form a quorum.
    let put = cluster.node(2).client().put(b"after", b"3").unwrap();
    assert!(put.revision.0 > 0);
    assert!(cluster.node(1).client().get(b"after").unwrap().is_some());
}
