//! Unit tests of the placement core; the randomized properties are in tests/placement.rs.

/// XXH64 (seed 0) reference values from python-xxhash 4.1.0.
pub(super) const XXH64_VECTORS: &[(&[u8], u64)] = &[
    (b"a", 0xD24E_C4F1_A98C_6E5B),
    (b"ab", 0x65F7_08CA_92D0_4A61),
    (b"abcd", 0xDE03_27B0_D25D_92CC),
    (b"abcdefg", 0x1860_940E_2902_822D),
    (b"user:42", 0xDC1F_EA7D_A8D2_D1C2),
    (b"0123456789abcdef", 0x5C5B_90C3_4E37_6D0B),
    (
        b"The quick brown fox jumps over the lazy dog",
        0x0B24_2D36_1FDA_71BC,
    ),
    (
        b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        0x92F0_DE5A_88A3_C094,
    ),
];

use super::*;

/// Key -> XXH64 -> partition of 4096: the vectors docs/FORMAT.md repeats.
const PARTITION_VECTORS: &[(&[u8], u64, u32)] = &[
    (b"", 0xEF46_DB37_51D8_E999, 2457),
    (b"a", 0xD24E_C4F1_A98C_6E5B, 3675),
    (b"user:42", 0xDC1F_EA7D_A8D2_D1C2, 450),
    (b"config/mode", 0x0870_9C55_6A37_BFD8, 4056),
    (b"orders/2024-06-01/000017", 0x402E_C068_4E7E_73D9, 985),
    (
        b"The quick brown fox jumps over the lazy dog",
        0x0B24_2D36_1FDA_71BC,
        444,
    ),
];

#[test]
fn key_to_partition_vectors_are_pinned() {
    for &(key, hash, partition) in PARTITION_VECTORS {
        assert_eq!(
            key_hash(key),
            hash,
            "key {:?}",
            String::from_utf8_lossy(key)
        );
        assert_eq!(partition_of(key, 4096), partition);
    }
}

fn small_params(strategy: Strategy) -> MapParams {
    MapParams {
        partitions: 8,
        replicas: 2,
        strategy,
        load_cap: LoadCap::default(),
    }
}

fn small_owners() -> Vec<Owner> {
    vec![
        Owner::new("a", 1),
        Owner::new("b", 1),
        Owner::new("c", 2),
        Owner::new("d", 1),
    ]
}

fn rows(table: &Table) -> Vec<Vec<&str>> {
    (0..table.params().partitions)
        .map(|p| {
            table
                .row(p)
                .iter()
                .map(|&o| table.owners()[o as usize].id.0.as_str())
                .collect()
        })
        .collect()
}

#[test]
fn small_map_tables_are_pinned() {
    let rendezvous = compute(&small_owners(), &small_params(Strategy::Rendezvous)).unwrap();
    let ring = compute(
        &small_owners(),
        &small_params(Strategy::Ring {
            vnodes_per_weight: 160,
        }),
    )
    .unwrap();
    assert_eq!(rows(&rendezvous), PINNED_RENDEZVOUS);
    assert_eq!(rows(&ring), PINNED_RING);
}

#[test]
fn bad_parameters_and_owners_are_invalid_arguments() {
    let bad_params = [
        MapParams {
            partitions: 0,
            ..MapParams::default()
        },
        MapParams {
            replicas: 0,
            ..MapParams::default()
        },
        MapParams {
            replicas: crate::limits::MAX_MAP_REPLICAS + 1,
            ..MapParams::default()
        },
        MapParams {
            load_cap: LoadCap::PerMille(999),
            ..MapParams::default()
        },
        MapParams {
            strategy: Strategy::Ring {
                vnodes_per_weight: 0,
            },
            ..MapParams::default()
        },
    ];
    for params in bad_params {
        let err = compute(&small_owners(), &params).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument, "{params:?}");
    }
    let bad_owners = [
        vec![Owner::new("", 1)],
        vec![Owner::new("a", 0)],
        vec![Owner::new("a", 1), Owner::new("a", 2)],
        vec![Owner::new(
            "x".repeat(crate::limits::MAX_OWNER_ID_BYTES + 1),
            1,
        )],
    ];
    for owners in bad_owners {
        let err = compute(&owners, &MapParams::default()).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument, "{owners:?}");
    }
    let table = compute(&small_owners(), &MapParams::default()).unwrap();
    for change in [
        Change::Join(Owner::new("a", 1)),
        Change::Leave("nobody".into()),
        Change::SetWeight("a".into(), 0),
    ] {
        let err = table.apply(&change).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::InvalidArgument, "{change:?}");
    }
}

#[test]
fn a_map_without_owners_has_empty_rows_and_grows_from_there() {
    let empty = compute(&[], &MapParams::default()).unwrap();
    assert_eq!(empty.width(), 0);
    assert_eq!(empty.lookup(b"k").1, &[] as &[u32]);
    let one = empty.apply(&Change::Join(Owner::new("a", 1))).unwrap();
    assert_eq!(one.width(), 1);
    assert!((0..4096).all(|p| one.row(p) == [0]));
    let two = one.apply(&Change::Join(Owner::new("b", 1))).unwrap();
    assert_eq!(two.width(), 2);
    let loads = two.loads();
    assert_eq!(loads[0].replicas + loads[1].replicas, 2 * 4096);
    assert!(loads.iter().all(|l| l.primaries == 2048), "{loads:?}");
    let back = two.apply(&Change::Leave("a".into())).unwrap();
    assert_eq!(back.width(), 1);
    assert!((0..4096).all(|p| back.row(p) == [0]));
}

#[test]
fn lookup_returns_the_row_of_the_key_partition() {
    let table = compute(&small_owners(), &MapParams::default()).unwrap();
    for &(key, _, partition) in PARTITION_VECTORS {
        let (p, row) = table.lookup(key);
        assert_eq!(p, partition);
        assert_eq!(row, table.row(partition));
        assert_eq!(row.len(), 3);
    }
    assert!(
        table.row(4096).is_empty(),
        "out of range is empty, not a panic"
    );
}

/// Owners a, b, d (weight 1) and c (weight 2), P = 8, R = 2, default cap.
const PINNED_RENDEZVOUS: [[&str; 2]; 8] = [
    ["c", "d"],
    ["b", "c"],
    ["a", "b"],
    ["c", "a"],
    ["b", "c"],
    ["c", "a"],
    ["d", "c"],
    ["d", "c"],
];
const PINNED_RING: [[&str; 2]; 8] = [
    ["c", "b"],
    ["b", "c"],
    ["c", "d"],
    ["a", "c"],
    ["b", "c"],
    ["c", "a"],
    ["d", "c"],
    ["d", "a"],
];
