//! What decides how a segment is read: its own header, not today's options.
//! - Issue 14, section 5: segments written with a larger `segment_bytes` used to be refused as
//!   `Corrupt` after the option was lowered (the read limit came from the options).
//! - Format version 1 segments (before write offsets) are still read; the log continues in a
//!   new version 2 segment.

#[path = "support/wal.rs"]
mod wal_common;

use haven::codec::{append_raw_frame, encode_value};
use haven::wal::{Wal, WalOptions, WAL_FORMAT_VERSION};
use haven::{HardState, LogIndex, Term};
use wal_common::*;

#[test]
fn segments_written_with_a_larger_segment_size_open_after_it_is_lowered() {
    let dir = tempfile::tempdir().unwrap();
    let large = WalOptions {
        segment_bytes: 32 << 20,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), large).unwrap();
    append(&wal, 1, 50, 1, 300);
    wal.write(haven::wal::WriteBatch {
        hard_state: Some(hard_state(1, 40)),
        ..Default::default()
    })
    .unwrap();
    drop(wal);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1);
    assert_eq!(std::fs::metadata(&segs[0]).unwrap().len(), 32 << 20);

    // Reopened with the smallest segments a configuration allows.
    let (wal, _) = Wal::open(dir.path(), small_options())
        .unwrap_or_else(|e| panic!("reopening with smaller segments: {e}"));
    assert_eq!(wal.last_index(), LogIndex(50));
    assert_eq!(wal.hard_state(), hard_state(1, 40));
    assert_eq!(read_all(&wal).len(), 50);
    append(&wal, 51, 60, 1, 300);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(read_all(&wal).len(), 60);
}

#[test]
fn a_segment_larger_than_its_header_says_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    append(&wal, 1, 5, 1, 100);
    drop(wal);
    let seg = segments(dir.path()).pop().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(SMALL_SEGMENT + 4096).unwrap();
    match Wal::open(dir.path(), small_options()) {
        Err(haven::Error::Corrupt { file, reason, .. }) => {
            assert_eq!(file.as_deref(), Some(seg.as_path()), "{reason}");
            assert!(reason.contains("header allows"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// A version 1 segment, byte by byte as `docs/FORMAT.md` describes it: header without
/// `segment_bytes`, records without a write offset.
fn write_v1_segment(dir: &std::path::Path, last: u64) {
    const KIND_SEGMENT_HEADER: u8 = 1;
    const KIND_ENTRIES: u8 = 2;
    const KIND_HARD_STATE: u8 = 3;
    let header = (
        1u32,
        1u64,
        LogIndex(0),
        Term(0),
        LogIndex(0),
        Term(0),
        HardState::default(),
    );
    let mut bytes = Vec::new();
    append_raw_frame(
        &mut bytes,
        KIND_SEGMENT_HEADER,
        1,
        &encode_value(&header).unwrap(),
    )
    .unwrap();
    for i in (1..=last).step_by(5) {
        let payload = encode_value(&entries(i, (i + 4).min(last), 1, 200)).unwrap();
        append_raw_frame(&mut bytes, KIND_ENTRIES, 1, &payload).unwrap();
    }
    let hs = encode_value(&hard_state(1, last / 2)).unwrap();
    append_raw_frame(&mut bytes, KIND_HARD_STATE, 1, &hs).unwrap();
    bytes.resize(SMALL_SEGMENT as usize, 0);
    std::fs::write(dir.join("00000000000000000001.wal"), &bytes).unwrap();
}

#[test]
fn version_1_segments_are_still_read_and_the_log_continues_in_a_new_segment() {
    assert_eq!(WAL_FORMAT_VERSION, 2);
    let dir = tempfile::tempdir().unwrap();
    write_v1_segment(dir.path(), 23);
    let v1 = std::fs::read(&segments(dir.path())[0]).unwrap();
    let (wal, report) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(wal.last_index(), LogIndex(23));
    assert_eq!(wal.hard_state(), hard_state(1, 11));
    assert_eq!(read_all(&wal).len(), 23);
    append(&wal, 24, 30, 1, 200);
    drop(wal);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2, "new records went into the version 1 segment");
    assert_eq!(
        std::fs::read(&segs[0]).unwrap(),
        v1,
        "the version 1 segment changed"
    );
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(read_all(&wal).len(), 30);
    assert_eq!(wal.hard_state(), hard_state(1, 11));
}
