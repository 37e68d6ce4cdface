//! The replicated partition map end to end: the same sequence of changes gives the
//! byte-identical table on every member of a 3-member cluster, also on a member that caught up
//! by a snapshot install and after restarts; the in-process client answers owners from the
//! member's applied copy, the remote client with one read.

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::{remote_client, Cluster};
use haven::sm::placement::{compute, Change, LoadCap, MapParams, Owner, OwnerId, Strategy};
use haven::sm::MapMoves;
use haven::{ClientOptions, ErrorCode, ReadMode};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn small_snapshots(c: &mut haven::Config) {
    c.snapshot_entries = 200;
    c.snapshot_trailing_entries = 20;
    c.snapshot_transfer_timeout_ms = 5_000;
}

/// Every running member's copy of map `name`, as its in-process client reads it without a
/// round trip (`owners`) and as a stale `map` read returns it.
fn tables(cluster: &Cluster, name: &str) -> Vec<Vec<u8>> {
    cluster
        .running()
        .map(|(_, node)| {
            let client = node.client_with(ClientOptions {
                read_mode: ReadMode::Stale,
                ..ClientOptions::default()
            });
            let map = client.map(name).unwrap().expect("the map exists");
            let owners = client.owners(name, b"user:42").unwrap();
            assert_eq!(owners.epoch, map.epoch);
            assert_eq!(owners, map.owners(b"user:42"));
            // The borrowed answer is the same one, read from the same applied table.
            let borrowed = client.key_owners(name, b"user:42").unwrap();
            assert_eq!(borrowed.to_owners(), owners);
            assert_eq!(
                (borrowed.epoch(), borrowed.partition(), borrowed.len()),
                (owners.epoch, owners.partition, owners.owners.len())
            );
            assert!(borrowed.iter().eq(owners.owners.iter()));
            assert_eq!(borrowed.primary(), owners.owners.first());
            let mut bytes = map.epoch.to_le_bytes().to_vec();
            bytes.extend(map.table.canonical_bytes());
            bytes
        })
        .collect()
}

fn assert_all_equal(tables: &[Vec<u8>]) {
    assert!(tables.len() >= 2);
    for t in &tables[1..] {
        assert!(t == &tables[0], "members disagree on the table");
    }
}

#[test]
fn every_member_holds_the_byte_identical_table_after_restarts_and_a_snapshot_install() {
    let mut cluster = Cluster::start(3, small_snapshots);
    let leader = cluster.wait_leader(WAIT);
    let down = (leader + 1) % 3;
    let client = cluster.node(leader).client();
    client
        .create_map("m", 512, 3, Strategy::Rendezvous, LoadCap::PerMille(1020))
        .unwrap();
    let mut pure = compute(
        &[],
        &MapParams {
            partitions: 512,
            replicas: 3,
            ..MapParams::default()
        },
    )
    .unwrap();
    let mut changes = vec![];
    for (i, owner) in ["n1", "n2", "n3", "n4", "n5"].into_iter().enumerate() {
        changes.push(Change::Join(Owner::new(owner, 1 + i as u32 % 2)));
    }
    let apply = |change: &Change| match change {
        Change::Join(o) => client.join("m", &o.id.0, o.weight).unwrap(),
        Change::Leave(id) => client.leave("m", &id.0).unwrap(),
        Change::SetWeight(id, w) => client.set_weight("m", &id.0, *w).unwrap(),
    };
    for change in &changes {
        apply(change);
        pure = pure.apply(change).unwrap();
    }
    cluster.wait_converged(WAIT);
    assert_all_equal(&tables(&cluster, "m"));

    // One member misses changes and the log behind them: it catches up by snapshot.
    cluster.stop(down);
    let later = [
        Change::Leave(OwnerId::from("n2")),
        Change::SetWeight(OwnerId::from("n4"), 3),
        Change::Join(Owner::new("n6", 2)),
    ];
    for change in &later {
        apply(change);
        pure = pure.apply(change).unwrap();
    }
    for k in 0..600 {
        client.put(format!("k{k:05}").as_bytes(), b"v").unwrap();
    }
    assert!(cluster.node(leader).status().unwrap().first_index.0 > 100);
    cluster.restart(down);
    cluster.wait_converged(WAIT);
    let caught_up = cluster.node(down).status().unwrap();
    assert!(caught_up.counters.snapshots_installed >= 1, "{caught_up:?}");
    let after_install = tables(&cluster, "m");
    assert_all_equal(&after_install);
    // ... and it is the table the pure placement computes from the same sequence.
    let map = cluster.node(down).client().map("m").unwrap().unwrap();
    assert_eq!(map.table, pure);
    assert_eq!(map.epoch, 1 + (changes.len() + later.len()) as u64);

    // Restarts of every member keep it, byte for byte.
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader(WAIT);
    cluster.wait_converged(WAIT);
    assert_eq!(tables(&cluster, "m"), after_install);
}

#[test]
fn a_remote_client_reads_owners_partition_map_and_moves() {
    let cluster = Cluster::start(3, |_| {});
    cluster.wait_leader(WAIT);
    let remote = remote_client(&cluster.addrs, ClientOptions::default()).unwrap();
    remote
        .create_map("jobs", 64, 2, Strategy::Rendezvous, LoadCap::PerMille(1020))
        .unwrap();
    remote.join("jobs", "w1", 1).unwrap();
    let change = remote.join("jobs", "w2", 1).unwrap();
    assert_eq!(change.epoch, 3);
    // Linearizable: sees the change just acknowledged.
    let owners = remote.owners_linearizable("jobs", b"job-7").unwrap();
    assert_eq!(owners.epoch, 3);
    assert_eq!(owners.owners.len(), 2);
    let (epoch, partition) = remote.partition_of("jobs", b"job-7").unwrap();
    assert!(epoch <= 3);
    assert_eq!(partition, owners.partition);
    let map = remote.map("jobs").unwrap().unwrap();
    assert_eq!(map.owners(b"job-7"), owners);
    match remote.moves("jobs", 1).unwrap() {
        MapMoves::Moves {
            current_epoch,
            epochs,
        } => {
            assert_eq!(current_epoch, 3);
            assert_eq!(epochs.len(), 2);
            // The first owner took every partition.
            assert_eq!(epochs[0].moves.len(), 64);
        }
        other => panic!("{other:?}"),
    }
    // Errors are typed: an unknown map, a duplicate owner.
    let e = remote.owners_linearizable("nope", b"k").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let e = remote.join("jobs", "w1", 1).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.to_string().contains("already joined"), "{e}");
    assert!(remote.map("nope").unwrap().is_none());
    // In process, an unknown map fails without a request.
    let local = cluster.node(0).client();
    assert!(
        remote.applied_map("jobs").is_none(),
        "remote: no local copy"
    );
    assert!(local.applied_map("nope").is_none());
    assert_eq!(
        local.owners("nope", b"k").unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        local.key_owners("nope", b"k").unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    // Remote, `key_owners` is one stale read: the same answer as `owners`, at most as recent
    // as the linearizable one.
    let borrowed = remote.key_owners("jobs", b"job-7").unwrap();
    assert!(borrowed.epoch() <= 3);
    assert_eq!(borrowed.partition(), owners.partition);
    assert_eq!(borrowed.len(), borrowed.iter().count());
    assert_eq!(
        remote.key_owners("nope", b"k").unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
}
