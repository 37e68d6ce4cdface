//! Log compaction behind snapshots, and members that fall behind the compaction point
//! catching up by a streamed snapshot, also when the stream is cut half way.

#[path = "support/cluster.rs"]
mod cluster_support;
#[path = "support/proxy.rs"]
mod proxy;

use cluster_support::{free_addrs, wait_for, Cluster};
use proxy::{Links, Mode};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn small_snapshots(c: &mut haven::Config) {
    c.snapshot_entries = 200;
    c.snapshot_trailing_entries = 20;
    c.snapshot_transfer_timeout_ms = 5_000;
}

/// Write `count` keys of `value_bytes` through `client`.
fn write_keys(client: &haven::Client, prefix: &str, count: usize, value_bytes: usize) {
    let value = vec![b'x'; value_bytes];
    for k in 0..count {
        client
            .put(format!("{prefix}{k:05}").as_bytes(), &value)
            .unwrap();
    }
}

#[test]
fn a_member_behind_the_compaction_point_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, small_snapshots);
    let leader = cluster.wait_leader(WAIT);
    let down = (leader + 1) % 3;
    cluster.stop(down);
    let client = cluster.node(leader).client();
    write_keys(&client, "k", 600, 64);
    // The leader compacted its log past everything the stopped member has.
    let status = cluster.node(leader).status().unwrap();
    assert!(status.counters.snapshots_taken >= 2, "{status:?}");
    assert!(status.first_index.0 > 100, "log not compacted: {status:?}");

    cluster.restart(down);
    cluster.wait_converged(WAIT);
    let caught_up = cluster.node(down).status().unwrap();
    assert!(caught_up.counters.snapshots_received >= 1, "{caught_up:?}");
    let got = cluster.node(down).client().get(b"k00599").unwrap();
    assert_eq!(got.unwrap().value, vec![b'x'; 64]);

    // And it keeps following from the log afterwards.
    write_keys(&client, "after", 10, 8);
    cluster.wait_converged(WAIT);
}

#[test]
fn a_snapshot_transfer_cut_half_way_resumes() {
    let addrs = free_addrs(3);
    let links = Links::new(3);
    links.set_targets(&addrs);
    let mut cluster = Cluster::start_routed(
        3,
        &addrs,
        |i, j| Some(links.addr(i, j)),
        |c| {
            small_snapshots(c);
            c.snapshot_entries = 400;
        },
    );
    let leader = cluster.wait_leader(WAIT);
    let down = (leader + 1) % 3;
    cluster.stop(down);
    // ~3.5 MiB of state: a snapshot of several 1 MiB chunks.
    write_keys(&cluster.node(leader).client(), "big", 900, 4096);
    let leader_node = cluster.node(leader);
    assert!(leader_node.status().unwrap().first_index.0 > 100);

    // Serve only the first chunks, then drop every connection between the two while the
    // follower keeps asking.
    leader_node.set_snapshot_serve_limit(1 << 20);
    cluster.restart(down);
    wait_for("a partial snapshot download", WAIT, || {
        let snap_dir = cluster.configs[down].data_dir.join("snap");
        std::fs::read_dir(snap_dir)
            .ok()?
            .flatten()
            .find(|e| {
                e.path().extension().is_some_and(|x| x == "part")
                    && e.metadata().is_ok_and(|m| m.len() >= 1 << 20)
            })
            .map(|_| ())
    });
    links.set_both(leader, down, Mode::Cut);
    std::thread::sleep(Duration::from_millis(300));
    links.set_both(leader, down, Mode::Pass);
    cluster.node(leader).set_snapshot_serve_limit(u64::MAX);

    cluster.wait_converged(WAIT);
    let status = cluster.node(down).status().unwrap();
    assert!(status.counters.snapshots_received >= 1, "{status:?}");
    let got = cluster.node(down).client().get(b"big00899").unwrap();
    assert_eq!(got.unwrap().value.len(), 4096);
}

#[test]
fn a_restart_restores_from_the_snapshot_and_replays_the_log() {
    let mut cluster = Cluster::start(3, small_snapshots);
    let leader = cluster.wait_leader(WAIT);
    write_keys(&cluster.node(leader).client(), "r", 500, 32);
    cluster.wait_converged(WAIT);
    // Restart every member: each reopens its snapshot, state and log.
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader(WAIT);
    cluster.wait_converged(WAIT);
    for (_, node) in cluster.running() {
        assert_eq!(
            node.client().get(b"r00499").unwrap().unwrap().value,
            vec![b'x'; 32]
        );
    }
}
