//! Clusters of `haven serve` processes: SIGKILL of the leader, a whole-cluster crash, graceful
//! SIGTERM. Every child is killed and reaped even when a test fails (`ServeProcess` drops).

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{free_addrs, quiet_logs, remote_client, wait_for, ServeProcess};
use haven::{Client, ClientOptions, LogIndex, NodeId};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
/// Fast timings for the children: election timeout 100-200 ms.
const TIMINGS: &[&str] = &[
    "--tick-ms",
    "5",
    "--election-timeout-ms",
    "100",
    "--heartbeat-ms",
    "20",
    "--snapshot-entries",
    "300",
    "--snapshot-trailing-entries",
    "50",
    "--state-cache-mib",
    "16",
];

fn start_all(dir: &Path, addrs: &[SocketAddr]) -> Vec<ServeProcess> {
    (1..=addrs.len() as u64)
        .map(|id| ServeProcess::start(dir, id, addrs, TIMINGS))
        .collect()
}

fn connect(addrs: &[SocketAddr]) -> Client {
    wait_for("a client connection", WAIT, || {
        remote_client(addrs, ClientOptions::default()).ok()
    })
}

fn pinned(addr: SocketAddr) -> Option<Client> {
    remote_client(
        &[addr],
        ClientOptions {
            prefer_leader: false,
            request_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        },
    )
    .ok()
}

/// (leader id, term) once every listed member agrees on a leader.
fn agreed_leader(addrs: &[SocketAddr]) -> (NodeId, u64) {
    agreed_leader_except(addrs, None)
}

/// (leader id, term) once every listed member agrees on a leader other than `not`.
fn agreed_leader_except(addrs: &[SocketAddr], not: Option<NodeId>) -> (NodeId, u64) {
    wait_for("an agreed leader", WAIT, || {
        let mut seen = None;
        for addr in addrs {
            let s = pinned(*addr)?.status().ok()?;
            let l = (s.leader.filter(|l| Some(*l) != not)?, s.term.0);
            if seen.is_some_and(|x: (NodeId, u64)| x.0 != l.0) {
                return None;
            }
            seen = Some(l);
        }
        seen
    })
}

/// The state hash every listed member reports, once they agree.
fn converged(addrs: &[SocketAddr]) -> (LogIndex, [u8; 32]) {
    wait_for("members to converge", WAIT, || {
        let mut seen = None;
        for addr in addrs {
            let h = pinned(*addr)?.state_hash().ok()?;
            if seen.is_some_and(|x| x != h) {
                return None;
            }
            seen = Some(h);
        }
        seen
    })
}

fn write_keys(client: &Client, prefix: &str, count: usize) -> Vec<String> {
    let mut acked = Vec::new();
    for k in 0..count {
        let key = format!("{prefix}{k:04}");
        client.put(key.as_bytes(), key.as_bytes()).unwrap();
        acked.push(key);
    }
    acked
}

fn assert_present(client: &Client, keys: &[String]) {
    for key in keys {
        let got = client.get(key.as_bytes()).unwrap();
        assert_eq!(
            got.map(|v| v.value),
            Some(key.as_bytes().to_vec()),
            "acknowledged write {key} lost"
        );
    }
}

#[test]
fn killing_the_leader_elects_another_loses_nothing_and_the_member_catches_up() {
    quiet_logs();
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let mut procs = start_all(dir.path(), &addrs);
    let client = connect(&addrs);
    let mut acked = write_keys(&client, "before", 200);
    let (leader, term) = agreed_leader(&addrs);
    let index = (leader.0 - 1) as usize;

    let killed_at = Instant::now();
    procs[index].kill();
    let others: Vec<SocketAddr> = (0..3).filter(|&i| i != index).map(|i| addrs[i]).collect();
    let (new_leader, new_term) = agreed_leader_except(&others, Some(leader));
    let elapsed = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    // Pre-vote keeps it to one or two elections; wall time is only reported (loaded machines).
    assert!(new_term <= term + 3, "term went from {term} to {new_term}");
    eprintln!("new leader {new_leader} in term {new_term} after {elapsed:?}");

    // The client fails over and goes on; nothing acknowledged is lost.
    acked.extend(write_keys(&client, "after", 400));
    assert_present(&client, &acked);

    // The killed member comes back, catches up (by snapshot: the log was compacted meanwhile).
    procs[index] = ServeProcess::start(dir.path(), leader.0, &addrs, TIMINGS);
    let (applied, _) = converged(&addrs);
    assert!(applied.0 >= 600);
    let back = pinned(addrs[index]).unwrap();
    assert_eq!(
        back.get(b"after0399").unwrap().map(|v| v.value),
        Some(b"after0399".to_vec())
    );
}

#[test]
fn every_acknowledged_write_survives_a_whole_cluster_crash() {
    quiet_logs();
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let mut procs = start_all(dir.path(), &addrs);
    let client = connect(&addrs);
    let acked = write_keys(&client, "k", 500);
    drop(client);
    for p in &mut procs {
        p.kill();
    }
    let procs = start_all(dir.path(), &addrs);
    let client = connect(&addrs);
    assert_present(&client, &acked);
    converged(&addrs);
    drop(procs);
}

#[test]
fn sigterm_shuts_a_member_down_gracefully() {
    quiet_logs();
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let mut procs = start_all(dir.path(), &addrs);
    let client = connect(&addrs);
    write_keys(&client, "k", 20);
    let (leader, _) = agreed_leader(&addrs);
    let index = (leader.0 - 1) as usize;
    let status = procs[index].terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit: {status:?}\n{}",
        procs[index].log_text()
    );
    let log = procs[index].log_text();
    assert!(log.contains("event=leadership_handed_over"), "{log}");
    assert!(log.contains("event=node_stopped"), "{log}");
    // The others go on at once (leadership was handed over, no election timeout to wait).
    client.put(b"after", b"1").unwrap();
}

/// Founding members started with different `--peers` would each write a different entry 1 at
/// term 0, which Raft cannot tell apart: they must refuse each other at the handshake, while
/// the members that agree go on. The refusal survives a restart (the digest is in `meta`).
#[test]
fn founding_members_with_different_peer_lists_refuse_each_other() {
    quiet_logs();
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(4);
    let agreeing = &addrs[..3];
    let mut procs = [
        ServeProcess::start(dir.path(), 1, agreeing, TIMINGS),
        ServeProcess::start(dir.path(), 2, agreeing, TIMINGS),
        // Member 3 believes in a fourth founding member.
        ServeProcess::start(dir.path(), 3, &addrs, TIMINGS),
    ];
    let majority = &addrs[..2];
    agreed_leader(majority);
    let client = connect(majority);
    client.put(b"k", b"v").unwrap();
    let refused = "different member lists";
    wait_for("the mismatch to be logged", WAIT, || {
        procs[2].log_text().contains(refused).then_some(())
    });
    // Member 3 never received the write: its state is not the majority's.
    let (index, hash) = converged(majority);
    let third = pinned(addrs[2]).expect("member 3 answers");
    let h = third.state_hash().unwrap();
    assert!(
        h.0 < index && h.1 != hash,
        "member 3 has {h:?}, the majority {index:?}"
    );
    // Restarted with the right peers, the directory still carries the digest it was founded
    // with: still refused, still logged.
    procs[2].kill();
    let before = procs[2].log_text().matches(refused).count();
    procs[2] = ServeProcess::start(dir.path(), 3, agreeing, TIMINGS);
    wait_for("the mismatch to be logged again", WAIT, || {
        (procs[2].log_text().matches(refused).count() > before).then_some(())
    });
}
