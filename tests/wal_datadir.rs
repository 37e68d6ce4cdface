//! The data directory: layout, exclusive lock, and the meta file's node and cluster ids.

use haven::datadir::DataDir;
use haven::{ClusterId, Error, NodeId};

#[test]
fn a_new_directory_gets_its_layout_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    {
        let dd = DataDir::open(&root, NodeId(1), ClusterId(7)).unwrap();
        for p in [dd.wal_dir(), dd.state_dir(), dd.snap_dir()] {
            assert!(p.is_dir(), "{}", p.display());
        }
        assert!(root.join("LOCK").is_file());
        assert!(root.join("meta").is_file());
        assert!(!root.join("meta.tmp").exists());
        assert_eq!(dd.node_id(), NodeId(1));
        assert_eq!(dd.cluster_id(), ClusterId(7));
        assert_eq!(dd.root(), root);
    }
    // The lock went with the value.
    DataDir::open(&root, NodeId(1), ClusterId(7)).unwrap();
}

#[test]
fn a_second_opener_is_refused_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let first = DataDir::open(tmp.path(), NodeId(1), ClusterId(7)).unwrap();
    match DataDir::open(tmp.path(), NodeId(1), ClusterId(7)) {
        Err(Error::DataDir(m)) => {
            assert!(m.contains(&tmp.path().display().to_string()), "{m}");
            assert!(m.contains("locked"), "{m}");
        }
        other => panic!("expected DataDir, got {other:?}"),
    }
    drop(first);
    DataDir::open(tmp.path(), NodeId(1), ClusterId(7)).unwrap();
}

#[test]
fn another_nodes_or_clusters_directory_is_refused_naming_both_ids() {
    let tmp = tempfile::tempdir().unwrap();
    drop(DataDir::open(tmp.path(), NodeId(1), ClusterId(7)).unwrap());
    for (node, cluster) in [(2, 7), (1, 8)] {
        match DataDir::open(tmp.path(), NodeId(node), ClusterId(cluster)) {
            Err(Error::DataDir(m)) => {
                assert!(m.contains("n1") && m.contains("c7"), "{m}");
                assert!(
                    m.contains(&format!("n{node}")) && m.contains(&format!("c{cluster}")),
                    "{m}"
                );
            }
            other => panic!("expected DataDir for n{node}/c{cluster}, got {other:?}"),
        }
    }
}

#[test]
fn corrupt_meta_is_corrupt_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    drop(DataDir::open(tmp.path(), NodeId(1), ClusterId(7)).unwrap());
    let meta = tmp.path().join("meta");
    let mut bytes = std::fs::read(&meta).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0x40;
    std::fs::write(&meta, &bytes).unwrap();
    match DataDir::open(tmp.path(), NodeId(1), ClusterId(7)) {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file.as_deref(), Some(meta.as_path())),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::write(&meta, b"").unwrap();
    assert!(matches!(
        DataDir::open(tmp.path(), NodeId(1), ClusterId(7)),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn meta_of_a_newer_version_is_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    drop(DataDir::open(tmp.path(), NodeId(1), ClusterId(7)).unwrap());
    let meta = tmp.path().join("meta");
    let bytes = std::fs::read(&meta).unwrap();
    let plen = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let mut payload = bytes[16..16 + plen].to_vec();
    payload[0] = 3;
    let mut frame = Vec::new();
    haven::codec::append_raw_frame(&mut frame, bytes[3], haven::datadir::META_SALT, &payload)
        .unwrap();
    std::fs::write(&meta, &frame).unwrap();
    match DataDir::open(tmp.path(), NodeId(1), ClusterId(7)) {
        Err(Error::UnsupportedVersion { what, found, .. }) => {
            assert_eq!((what, found), ("meta", 3))
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn a_log_without_meta_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(DataDir::open(tmp.path(), NodeId(1), ClusterId(7)).unwrap());
    std::fs::write(
        tmp.path().join("wal").join("00000000000000000001.wal"),
        [0u8; 64],
    )
    .unwrap();
    std::fs::remove_file(tmp.path().join("meta")).unwrap();
    assert!(matches!(
        DataDir::open(tmp.path(), NodeId(1), ClusterId(7)),
        Err(Error::DataDir(_))
    ));
}
