//! The replicated partition map at the state-machine level (`src/sm/ring.rs`): every command,
//! its bad inputs (rejected, nothing changed), epochs and bounded moves, and that the stored
//! table survives a reopen, a crash with replay and a snapshot restore byte for byte.

#[path = "support/sm.rs"]
mod sm_util;

use haven::sm::placement::{
    compute, diff, Change, LoadCap, MapParams, Owner, OwnerId, PlacementVersion, Strategy, Table,
    DEFAULT_LOAD_CAP_PER_MILLE,
};
use haven::sm::{
    Command, CommandResult, MapChange, MapMoves, Op, PARTITION_MAP_COMMAND_VERSION,
    PLACEMENT_VERSION_COMMAND_VERSION,
};
use haven::snapshots::SnapshotFiles;
use haven::{Entry, ErrorCode, LogIndex};
use sm_util::{command_entry, untracked, Harness};

/// The create a client sends now: a map of the current placement version.
fn create(name: &str, partitions: u32, replicas: u32, strategy: Strategy) -> Op {
    Op::CreateMapVersioned {
        name: name.into(),
        partitions,
        replicas,
        strategy,
        load_cap: LoadCap::PerMille(DEFAULT_LOAD_CAP_PER_MILLE),
        placement: PlacementVersion::CURRENT,
    }
}

fn join(name: &str, owner: &str, weight: u32) -> Op {
    Op::JoinMap {
        name: name.into(),
        owner: owner.into(),
        weight,
    }
}

fn leave(name: &str, owner: &str) -> Op {
    Op::LeaveMap {
        name: name.into(),
        owner: owner.into(),
    }
}

fn weight(name: &str, owner: &str, weight: u32) -> Op {
    Op::SetOwnerWeight {
        name: name.into(),
        owner: owner.into(),
        weight,
    }
}

fn changed(result: CommandResult) -> MapChange {
    match result {
        CommandResult::MapChanged(change) => change,
        other => panic!("expected MapChanged, got {other:?}"),
    }
}

fn rejected(result: CommandResult) -> String {
    match result {
        CommandResult::Rejected { reason } => reason,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

/// The change an op makes, for replaying it on a pure table.
fn change_of(op: &Op) -> Change {
    match op {
        Op::JoinMap { owner, weight, .. } => Change::Join(Owner::new(owner.as_str(), *weight)),
        Op::LeaveMap { owner, .. } => Change::Leave(OwnerId(owner.clone())),
        Op::SetOwnerWeight { owner, weight, .. } => {
            Change::SetWeight(OwnerId(owner.clone()), *weight)
        }
        other => panic!("not a change: {other:?}"),
    }
}

fn table(h: &Harness, name: &str) -> Table {
    h.sm.partition_map(name).unwrap().table.clone()
}

fn changes() -> Vec<Op> {
    vec![
        join("m", "a", 1),
        join("m", "b", 1),
        join("m", "c", 2),
        join("m", "d", 1),
        weight("m", "b", 3),
        leave("m", "a"),
        join("m", "e", 1),
        leave("m", "c"),
    ]
}

#[test]
fn every_change_is_the_pure_table_change_with_its_epoch_and_moves() {
    for strategy in [
        Strategy::Rendezvous,
        Strategy::Ring {
            vnodes_per_weight: 40,
        },
    ] {
        let mut h = Harness::new();
        let params = MapParams {
            partitions: 256,
            replicas: 3,
            strategy,
            load_cap: LoadCap::PerMille(DEFAULT_LOAD_CAP_PER_MILLE),
        };
        let created = changed(h.apply_op(create("m", 256, 3, strategy)));
        assert_eq!(
            created,
            MapChange {
                epoch: 1,
                slots_moved: 0,
                replica_moves: 0
            }
        );
        let mut pure = compute(&[], &params).unwrap();
        assert_eq!(table(&h, "m"), pure);
        for (i, op) in changes().into_iter().enumerate() {
            let next = pure.apply(&change_of(&op)).unwrap();
            let expected_moves = diff(&pure, &next).unwrap();
            let change = changed(h.apply_op(op));
            let epoch = i as u64 + 2;
            assert_eq!(change.epoch, epoch);
            assert_eq!(change.slots_moved, expected_moves.len() as u64);
            assert_eq!(
                change.replica_moves,
                haven::sm::placement::replica_moves(&pure, &next).unwrap()
            );
            assert_eq!(table(&h, "m"), next, "{strategy:?} after change {i}");
            assert_eq!(h.sm.partition_map("m").unwrap().epoch, epoch);
            // The moves of this epoch are exactly the diff.
            match h.sm.map_moves("m", epoch - 1).unwrap() {
                MapMoves::Moves {
                    current_epoch,
                    epochs,
                } => {
                    assert_eq!(current_epoch, epoch);
                    assert_eq!(epochs.len(), 1);
                    assert_eq!(epochs[0].epoch, epoch);
                    assert_eq!(epochs[0].moves().unwrap(), expected_moves);
                }
                other => panic!("{other:?}"),
            }
            pure = next;
        }
        // Owners answers from the applied table.
        let owners = h.sm.map_owners("m", b"user:42").unwrap();
        let (partition, row) = pure.lookup(b"user:42");
        assert_eq!(owners.partition, partition);
        assert_eq!(owners.epoch, 9);
        let ids: Vec<OwnerId> = row
            .iter()
            .map(|&o| pure.owners()[o as usize].id.clone())
            .collect();
        assert_eq!(owners.owners, ids);
        assert_eq!(owners.owners.len(), 3);
        // All moves since creation, in order.
        match h.sm.map_moves("m", 0).unwrap() {
            MapMoves::Moves { epochs, .. } => {
                let list: Vec<u64> = epochs.iter().map(|e| e.epoch).collect();
                assert_eq!(list, (2..=9).collect::<Vec<_>>());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn partition_map_commands_are_stamped_with_their_command_version() {
    let cmd = untracked(join("m", "a", 1));
    assert_eq!(cmd.encode().unwrap()[0], PARTITION_MAP_COMMAND_VERSION);
    assert_eq!(cmd.min_version(), PARTITION_MAP_COMMAND_VERSION);
    assert_eq!(untracked(sm_util::put(b"k", b"v")).min_version(), 1);
    assert_eq!(Command::decode(&cmd.encode().unwrap()).unwrap(), cmd);
}

/// A no-op of the same entry count, so state hashes compare.
fn no_op() -> Op {
    sm_util::delete(b"absent")
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let long_name = "n".repeat(haven::limits::MAX_MAP_NAME_BYTES + 1);
    let long_owner = "o".repeat(haven::limits::MAX_OWNER_ID_BYTES + 1);
    let setup = [create("m", 64, 2, Strategy::Rendezvous), join("m", "a", 1)];
    let bad: Vec<(Op, &str)> = vec![
        (join("nope", "a", 1), "no map named"),
        (leave("nope", "a"), "no map named"),
        (weight("nope", "a", 2), "no map named"),
        (join("m", "a", 1), "already joined"),
        (join("m", "b", 0), "weight"),
        (weight("m", "a", 0), "weight"),
        (
            join("m", "b", haven::limits::MAX_OWNER_WEIGHT + 1),
            "weight",
        ),
        (leave("m", "zed"), "not an owner"),
        (weight("m", "zed", 1), "not an owner"),
        (join(&long_name, "a", 1), "map name"),
        (join("", "a", 1), "map name"),
        (join("m", &long_owner, 1), "owner id"),
        (join("m", "", 1), "owner id"),
        (create("m", 64, 2, Strategy::Rendezvous), "exists already"),
        (create("z", 0, 2, Strategy::Rendezvous), "partitions"),
        (create("z", 64, 0, Strategy::Rendezvous), "replicas"),
        (
            create("z", 1 << 20, 8, Strategy::Rendezvous),
            "over the limit",
        ),
        (
            create(
                "z",
                64,
                2,
                Strategy::Ring {
                    vnodes_per_weight: 0,
                },
            ),
            "vnodes",
        ),
        (
            Op::CreateMap {
                name: "z".into(),
                partitions: 64,
                replicas: 2,
                strategy: Strategy::Rendezvous,
                load_cap: LoadCap::PerMille(999),
            },
            "load cap",
        ),
    ];
    let mut h = Harness::new();
    let mut twin = Harness::new();
    for op in &setup {
        h.apply_op(op.clone());
        twin.apply_op(op.clone());
    }
    let before = table(&h, "m");
    for (op, what) in bad {
        // The runtime refuses it before proposing (InvalidArgument) when the input alone is bad.
        if let Err(e) = untracked(op.clone()).validate() {
            assert_eq!(e.code(), ErrorCode::InvalidArgument);
        }
        let reason = rejected(h.apply_op(op.clone()));
        assert!(reason.contains(what), "{op:?}: {reason}");
        assert!(
            reason.contains("InvalidArgument") || reason.contains("invalid"),
            "{reason}"
        );
        twin.apply_op(no_op());
    }
    assert_eq!(table(&h, "m"), before);
    assert_eq!(h.sm.partition_map("m").unwrap().epoch, 2);
    assert!(h.sm.partition_map("z").is_none());
    assert_eq!(h.sm.state_hash().unwrap(), twin.sm.state_hash().unwrap());
    // Reads of an unknown map are InvalidArgument, a map read is None.
    assert_eq!(
        h.sm.map_owners("nope", b"k").unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        h.sm.map_moves("nope", 0).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        h.sm.map_owners(&long_name, b"k").unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
}

#[test]
fn a_tracked_retry_gets_the_remembered_change_and_moves_nothing_twice() {
    let mut h = Harness::new();
    let client = h.register();
    h.apply_op(create("m", 64, 2, Strategy::Rendezvous));
    let cmd = Command {
        client_id: client,
        seq: 1,
        op: join("m", "a", 1),
    };
    let first = changed(h.apply(cmd.clone()));
    let again = changed(h.apply(cmd));
    assert_eq!(first, again);
    assert_eq!(h.sm.partition_map("m").unwrap().epoch, 2);
}

#[test]
fn moves_older_than_the_kept_epochs_are_compacted() {
    let kept = haven::limits::MAX_MAP_MOVES_EPOCHS;
    let mut h = Harness::new();
    h.apply_op(create("m", 32, 1, Strategy::Rendezvous));
    h.apply_op(join("m", "a", 1));
    h.apply_op(join("m", "b", 1));
    let changes = kept + 8;
    for i in 0..changes {
        h.apply_op(weight("m", "a", 1 + (i as u32 % 3)));
    }
    let epoch = 3 + changes;
    assert_eq!(h.sm.partition_map("m").unwrap().epoch, epoch);
    for since in [0, 1, epoch - kept - 1] {
        assert_eq!(
            h.sm.map_moves("m", since).unwrap(),
            MapMoves::Compacted {
                current_epoch: epoch,
                oldest_since: epoch - kept
            },
            "since {since}"
        );
    }
    match h.sm.map_moves("m", epoch - kept).unwrap() {
        MapMoves::Moves { epochs, .. } => {
            assert_eq!(epochs.len() as u64, kept);
            assert_eq!(epochs[0].epoch, epoch - kept + 1);
            assert_eq!(epochs.last().unwrap().epoch, epoch);
        }
        other => panic!("{other:?}"),
    }
    match h.sm.map_moves("m", epoch).unwrap() {
        MapMoves::Moves { epochs, .. } => assert!(epochs.is_empty()),
        other => panic!("{other:?}"),
    }
    // Exactly the kept epochs are stored: a snapshot restore of them verifies and hashes the same.
    let snap = h.sm.write_snapshot(h.snap_dir()).unwrap();
    let mut fresh = Harness::new();
    fresh.sm.restore_snapshot(&snap.path).unwrap();
    assert_eq!(fresh.sm.state_hash().unwrap(), h.sm.state_hash().unwrap());
    assert_eq!(
        fresh.sm.map_moves("m", epoch - kept).unwrap(),
        h.sm.map_moves("m", epoch - kept).unwrap()
    );
}

fn map_bytes(h: &Harness, name: &str) -> Vec<u8> {
    h.sm.partition_map(name).unwrap().table.canonical_bytes()
}

#[test]
fn the_table_survives_reopen_crash_replay_and_snapshot_restore_byte_for_byte() {
    let mut h = Harness::new();
    h.apply_op(create("m", 128, 3, Strategy::Rendezvous));
    // Deferred: the crash below loses these from sled; replay must recompute the same table.
    h.apply_batch_with(
        &changes().into_iter().map(untracked).collect::<Vec<_>>(),
        true,
    );
    let expected = map_bytes(&h, "m");
    let hash = h.sm.state_hash().unwrap();
    let moves = h.sm.map_moves("m", 1).unwrap();

    let h = h.crash_and_replay();
    assert_eq!(map_bytes(&h, "m"), expected);
    assert_eq!(h.sm.state_hash().unwrap(), hash);
    let h = h.reopen();
    assert_eq!(map_bytes(&h, "m"), expected);
    assert_eq!(h.sm.map_moves("m", 1).unwrap(), moves);

    let snap = h.sm.write_snapshot(h.snap_dir()).unwrap();
    let mut fresh = Harness::new();
    // The restored state replaces maps the machine had before.
    fresh.apply_op(create("old", 8, 1, Strategy::Rendezvous));
    fresh.sm.restore_snapshot(&snap.path).unwrap();
    assert!(fresh.sm.partition_map("old").is_none());
    assert_eq!(map_bytes(&fresh, "m"), expected);
    assert_eq!(fresh.sm.state_hash().unwrap(), hash);
    assert_eq!(fresh.sm.map_moves("m", 1).unwrap(), moves);
    // A reader taken before the restore sees the restored maps.
    let reader = fresh.sm.map_reader();
    assert_eq!(reader.get("m").unwrap().table.canonical_bytes(), expected);
}

#[test]
fn a_batch_that_fails_part_way_publishes_no_map() {
    let mut h = Harness::new();
    let first = h.next_index();
    let entries: Vec<Entry> = vec![
        command_entry(
            first,
            1,
            &untracked(create("m", 8, 1, Strategy::Rendezvous)),
        ),
        // A gap: the batch fails and nothing of it is applied.
        command_entry(first + 2, 1, &untracked(join("m", "a", 1))),
    ];
    assert_eq!(
        h.sm.apply(&entries).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    assert!(h.sm.partition_map("m").is_none());
    assert_eq!(h.sm.applied().0, LogIndex(first - 1));
    // Create and join in one batch: the join sees the map the batch created.
    let results = h.apply_batch(&[
        untracked(create("m", 8, 1, Strategy::Rendezvous)),
        untracked(join("m", "a", 1)),
    ]);
    assert_eq!(changed(results[1].clone()).epoch, 2);
}

/// docs/FORMAT.md, "Partition map records": a small map's whole stored table, pinned.
#[test]
fn a_small_maps_stored_table_is_pinned() {
    let mut h = Harness::new();
    h.apply_op(create("demo", 8, 2, Strategy::Rendezvous));
    for op in [
        join("demo", "a", 1),
        join("demo", "b", 1),
        join("demo", "c", 2),
    ] {
        h.apply_op(op);
    }
    let map = h.sm.partition_map("demo").unwrap();
    let rows: Vec<Vec<u32>> = (0..8).map(|p| map.table.row(p).to_vec()).collect();
    let record = map.to_record();
    let mut bytes = vec![1u8];
    bytes.extend(haven::codec::encode_value(&record).unwrap());
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(rows, PINNED_ROWS);
    assert_eq!(hex, PINNED_RECORD_HEX);
}

/// Owners a, b, c are indices 0, 1, 2.
const PINNED_ROWS: [[u32; 2]; 8] = [
    [2, 0],
    [1, 2],
    [0, 2],
    [2, 0],
    [1, 2],
    [2, 1],
    [2, 1],
    [0, 2],
];
const PINNED_RECORD_HEX: &str =
    "010408020101fbfc03030161010162010163021002000102000202000102020102010002";

// ----- placement versions -----

/// A create as the previous release wrote it (command version 2, `Op::CreateMap` without a
/// placement version), encoded by a build of 0284cfb^: untracked, map "m", 128 partitions,
/// R = 3, rendezvous, the default cap.
const OLD_CREATE_HEX: &str = "02000006016d80030101fbfc03";

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// tests/placement.rs, `versioned_sequence`: its leave runs the vacancy chains and the lift.
fn versioned_changes() -> Vec<Op> {
    vec![
        join("m", "o0", 2),
        join("m", "o1", 2),
        join("m", "o2", 3),
        join("m", "o3", 4),
        join("m", "o4", 2),
        join("m", "o5", 1),
        leave("m", "o3"),
    ]
}

/// The table after the whole sequence, as the placement of 0284cfb^ computed it (xxh64 of
/// `canonical_bytes`; tests/placement.rs, `OLD_PLACEMENT_HASHES`).
const OLD_FINAL_HASH: u64 = 0x023a_3d89_f3b9_a859;

fn table_hash(h: &Harness, name: &str) -> u64 {
    haven::sm::placement::xxh64(&map_bytes(h, name), 0)
}

#[test]
fn an_old_format_create_makes_a_version_1_map_that_replays_the_old_tables() {
    let bytes = unhex(OLD_CREATE_HEX);
    let old = Command::decode(&bytes).unwrap();
    assert!(matches!(old.op, Op::CreateMap { .. }), "{old:?}");
    assert_eq!(old.op.map_placement(), Some(PlacementVersion::V1));
    assert_eq!(
        old.encode().unwrap(),
        bytes,
        "the old encoding is unchanged"
    );

    let mut h = Harness::new();
    let index = h.next_index();
    let entry = sm_util::entry(index, 1, haven::EntryKind::Normal, bytes);
    h.sm.apply(&[entry]).unwrap();
    let map = h.sm.partition_map("m").unwrap();
    assert_eq!(map.table.version(), PlacementVersion::V1);
    for op in versioned_changes() {
        changed(h.apply_op(op));
    }
    assert_eq!(table_hash(&h, "m"), OLD_FINAL_HASH);
    // The version is stored with the map: after a crash (replay) and a reopen it is still 1.
    let h = h.crash_and_replay();
    assert_eq!(table_hash(&h, "m"), OLD_FINAL_HASH);
    let mut h = h.reopen();
    assert_eq!(table_hash(&h, "m"), OLD_FINAL_HASH);
    assert_eq!(
        h.sm.partition_map("m").unwrap().table.version(),
        PlacementVersion::V1
    );
    let before = table(&h, "m");
    changed(h.apply_op(join("m", "o6", 1)));
    let expected = before.apply(&Change::Join(Owner::new("o6", 1))).unwrap();
    assert_eq!(expected.version(), PlacementVersion::V1);
    assert_eq!(table(&h, "m"), expected);
}

#[test]
fn a_create_today_makes_a_map_of_the_current_version_that_differs_from_version_1() {
    let mut h = Harness::new();
    let cmd = untracked(create("m", 128, 3, Strategy::Rendezvous));
    assert_eq!(cmd.encode().unwrap()[0], PLACEMENT_VERSION_COMMAND_VERSION);
    assert_eq!(cmd.min_version(), PLACEMENT_VERSION_COMMAND_VERSION);
    assert_eq!(Command::decode(&cmd.encode().unwrap()).unwrap(), cmd);
    changed(h.apply(cmd));
    for op in versioned_changes() {
        changed(h.apply_op(op));
    }
    let map = h.sm.partition_map("m").unwrap();
    assert_eq!(map.table.version(), PlacementVersion::CURRENT);
    assert_ne!(table_hash(&h, "m"), OLD_FINAL_HASH);
    let h = h.reopen();
    assert_eq!(
        h.sm.partition_map("m").unwrap().table.version(),
        PlacementVersion::CURRENT
    );
}

#[test]
fn a_create_with_an_unknown_placement_version_is_refused_and_changes_nothing() {
    let newer = PlacementVersion(PlacementVersion::CURRENT.0 + 1);
    let op = |placement| Op::CreateMapVersioned {
        name: "m".into(),
        partitions: 64,
        replicas: 2,
        strategy: Strategy::Rendezvous,
        load_cap: LoadCap::default(),
        placement,
    };
    let cmd = untracked(op(newer));
    assert_eq!(
        cmd.validate().unwrap_err().code(),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        Command::decode(&cmd.encode().unwrap()).unwrap_err().code(),
        ErrorCode::UnsupportedVersion
    );
    // In the log, like an entry of a newer command version: the member refuses to apply it
    // (and stops), nothing of the batch is applied.
    let mut h = Harness::new();
    let mut twin = Harness::new();
    let applied = h.sm.applied();
    let entries = [command_entry(h.next_index(), 1, &cmd)];
    assert_eq!(
        h.sm.apply(&entries).unwrap_err().code(),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(h.sm.applied(), applied);
    assert!(h.sm.partition_map("m").is_none());
    // Version 0 decodes but is no version: rejected at apply, nothing changed.
    let zero = untracked(op(PlacementVersion(0)));
    assert_eq!(
        zero.validate().unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    rejected(h.apply(zero));
    twin.apply_op(no_op());
    assert!(h.sm.partition_map("m").is_none());
    assert_eq!(h.sm.state_hash().unwrap(), twin.sm.state_hash().unwrap());
}
