//! The HTTP endpoint of `haven serve --http-listen`, over 127.0.0.1: `/metrics` (the families
//! of `haven status --prometheus` plus the transport's), `/health` (200 with a leader, 503 with
//! a one-line reason without one), `/status` (the JSON of `haven status --json`), read-only.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::cluster_support::wait_for;
use cli_support::{free_addrs, haven, ServeProcess};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// (status code, body) of one request.
fn request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    wait_for(&format!("an answer to GET {path}"), WAIT, || {
        request(addr, "GET", path)
    })
}

/// The value of the series `name{labels}` in Prometheus text.
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_health_and_status_over_http_and_health_fails_without_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(6);
    let (peers, http) = addrs.split_at(3);
    let mut members: Vec<ServeProcess> = (1..=3u64)
        .map(|id| {
            let listen = http[(id - 1) as usize].to_string();
            ServeProcess::start(
                dir.path(),
                id,
                peers,
                &[
                    "--tick-ms",
                    "5",
                    "--election-timeout-ms",
                    "100",
                    "--heartbeat-ms",
                    "20",
                    "--state-cache-mib",
                    "16",
                    "--http-listen",
                    &listen,
                    "--health-max-lag",
                    "1000",
                ],
            )
        })
        .collect();

    // Every member healthy once a leader is elected.
    for addr in http {
        wait_for("a healthy member", WAIT, || {
            let (code, body) = request(*addr, "GET", "/health")?;
            (code == 200).then_some(body)
        });
    }
    let (code, body) = get(http[0], "/health");
    assert_eq!(code, 200);
    assert!(body.starts_with("ok: member 1, leader "), "{body}");
    assert_eq!(body.lines().count(), 1, "{body:?}");

    // Writes through the CLI, so the counters move.
    let secret = dir.path().join("secret");
    let cluster = peers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..5 {
        let run = haven(&[
            "put",
            &format!("k{i}"),
            "v",
            "--cluster",
            &cluster,
            "--secret-file",
            secret.to_str().unwrap(),
            "--cluster-id",
            "4242",
        ]);
        assert_eq!(run.code, 0, "{run:?}");
    }

    // /metrics: this member's families, the same names `haven status --prometheus` prints,
    // plus the transport's by reason.
    for (i, addr) in http.iter().enumerate() {
        let member = format!("member=\"{}\"", i + 1);
        let (code, text) = get(*addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        for family in [
            "haven_up",
            "haven_role",
            "haven_term",
            "haven_commit_index",
            "haven_applied_index",
            "haven_entries_applied_total",
            "haven_transport_drops_total",
            "haven_wal_fsync_seconds",
            "haven_peer_messages_dropped_total",
            "haven_connections_refused_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing from {text}"
            );
        }
        assert!(
            series(
                &text,
                "haven_up",
                &format!("{member},address=\"{}\"", peers[i])
            ) == Some(1.0),
            "{text}"
        );
        assert!(series(&text, "haven_applied_index", &member).unwrap() >= 5.0);
        for reason in ["handshake_failed", "too_many_handshakes"] {
            assert!(
                series(
                    &text,
                    "haven_connections_refused_total",
                    &format!("{member},reason=\"{reason}\"")
                )
                .is_some(),
                "{text}"
            );
        }
        // Only this member's own series: each member is scraped on its own.
        assert!(!text.contains(&format!("haven_term{{member=\"{}\"}}", (i + 1) % 3 + 1)));
    }

    // /status: the JSON of `haven status --json`, one row, naming the leader.
    let (code, text) = get(http[1], "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert!(
        v["leader"].as_u64().is_some_and(|l| (1..=3).contains(&l)),
        "{v}"
    );
    let rows = v["members"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["id"], 2);
    assert_eq!(rows[0]["reachable"], true);
    assert_eq!(rows[0]["address"], peers[1].to_string());

    // Read-only, and nothing but the three paths.
    for method in ["POST", "PUT", "DELETE"] {
        let (code, _) = request(http[0], method, "/health").unwrap();
        assert_eq!(code, 405, "{method}");
    }
    assert_eq!(get(http[0], "/nope").0, 404);

    // Two of three gone: the survivor knows no leader and says so in one line.
    members[1].kill();
    members[2].kill();
    let reason = wait_for("an unhealthy survivor", WAIT, || {
        let (code, body) = request(http[0], "GET", "/health")?;
        (code == 503).then_some(body)
    });
    assert!(reason.contains("knows no leader"), "{reason}");
    assert_eq!(reason.trim_end().lines().count(), 1, "{reason:?}");
    members[0].kill();
}
