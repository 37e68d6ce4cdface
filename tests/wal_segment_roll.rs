//! Regression (issue 14, section 1): a record that does not fit the active segment rolls over to
//! a new one, and the new segment's header must describe the log *before* that record. The
//! writer used to apply a compaction or a truncation to its tentative state before making room,
//! so the header claimed the record that followed it and every later open refused the log as
//! `Corrupt` ("segment header says last index ... replay of the earlier segments reached ...").
//!
//! Each record kind is landed with exactly 0, 8, ... 72 bytes left in the active segment (both
//! sides of every bound the writer uses), then the log is reopened and compared with what was
//! written. Compactions are also reopened as after a crash between the fdatasync of the
//! compaction and the deletion of the segments it made unnecessary (the deleted files put back).

#[path = "support/wal.rs"]
mod wal_common;

use haven::wal::{Wal, WriteBatch};
use haven::{HardState, LogIndex, Term};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wal_common::*;

/// Entries of the filler batches are this long (payload bytes), except the last one.
const FILL_PAYLOAD: usize = 1000;

/// What the log must hold after the record under test.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    compacted: (u64, u64),
    last: u64,
    /// Term of every live entry, from compacted.0 + 1.
    terms: Vec<u64>,
    hard_state: HardState,
}

/// End of the last record of the newest segment, and that segment's size.
fn segment_fill(dir: &Path) -> (u64, u64) {
    let seg = segments(dir).pop().unwrap();
    let end = frames(&seg).last().map_or(0, |&(o, l, _)| o + l);
    (end, std::fs::metadata(&seg).unwrap().len())
}

/// Append single-entry batches until exactly `free` bytes are left in the active segment
/// (a multiple of 8). Returns the last index written (all term 1), or `None` if `free` is less
/// than the writer's bound for an entries record leaves (it then rolled over instead).
fn fill_to(wal: &Wal, dir: &Path, free: u64) -> Option<u64> {
    // Calibrate: the frame of a one-entry record with a payload of p bytes is
    // round_up_8(c + p) for a constant c (within one varint class, payloads of 251..65535
    // bytes). Eight consecutive payload sizes show where the frame grows, which gives c.
    // Most of the segment in one record (one write, one fdatasync), then one entry at a time.
    append(wal, 1, 40, 1, FILL_PAYLOAD);
    let mut next = 41u64;
    let mut sizes = Vec::new();
    for k in 0..8u64 {
        let (before, _) = segment_fill(dir);
        append(wal, next, next, 1, FILL_PAYLOAD + k as usize);
        next += 1;
        let (after, _) = segment_fill(dir);
        sizes.push(after - before);
    }
    let jump = (1..8).find(|&k| sizes[k] > sizes[k - 1]).unwrap_or(0);
    let c = sizes[jump] - (FILL_PAYLOAD + jump) as u64 - 7;
    let frame = sizes[0];
    let (after, size) = segment_fill(dir);
    let mut left = size - after;
    assert!(left > free + frame + 400, "segment too small for the test");
    while left - free > frame + 300 {
        append(wal, next, next, 1, FILL_PAYLOAD);
        next += 1;
        left -= frame;
    }
    // The last entry gets the smallest payload whose frame is exactly `left - free` bytes (the
    // most padding, so the writer's upper bound for the record is as small as it gets).
    let want = left - free;
    let payload = want - 7 - c;
    append(wal, next, next, 1, payload as usize);
    let (end, size) = segment_fill(dir);
    if size - end > free + FILL_PAYLOAD as u64 {
        return None;
    }
    assert_eq!(
        size - end,
        free,
        "the filler left the wrong number of bytes"
    );
    Some(next)
}

fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    segments(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn check(wal: &Wal, expect: &Expect, what: &str) {
    assert_eq!(
        wal.compacted(),
        (LogIndex(expect.compacted.0), Term(expect.compacted.1)),
        "{what}: compaction point"
    );
    assert_eq!(
        wal.last_index(),
        LogIndex(expect.last),
        "{what}: last index"
    );
    assert_eq!(wal.hard_state(), expect.hard_state, "{what}: hard state");
    for (k, &t) in expect.terms.iter().enumerate() {
        let i = expect.compacted.0 + 1 + k as u64;
        assert_eq!(
            wal.term(LogIndex(i)).unwrap(),
            Some(Term(t)),
            "{what}: term of {i}"
        );
    }
    let all = read_all(wal);
    assert_eq!(all.len(), expect.terms.len(), "{what}: entries read");
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Entries,
    HardState,
    CompactInside,
    CompactAtLast,
    CompactBeyond,
    Truncate,
}

const KINDS: [Kind; 6] = [
    Kind::Entries,
    Kind::HardState,
    Kind::CompactInside,
    Kind::CompactAtLast,
    Kind::CompactBeyond,
    Kind::Truncate,
];

/// Land `kind` with `free` bytes left in the active segment, reopen, compare. Returns whether
/// the record rolled over to a new segment, `None` if no entry leaves exactly `free` bytes.
fn land(kind: Kind, free: u64) -> Option<bool> {
    let what = format!("{kind:?} with {free} bytes free");
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    let last = fill_to(&wal, dir.path(), free)?;
    let segs_before = segments(dir.path()).len();
    let files_before = snapshot_files(dir.path());
    let mut expect = Expect {
        compacted: (0, 0),
        last,
        terms: vec![1; last as usize],
        hard_state: HardState::default(),
    };
    let mut batch = WriteBatch::default();
    match kind {
        Kind::Entries => {
            batch.entries = entries(last + 1, last + 1, 1, 0);
            expect.last += 1;
            expect.terms.push(1);
        }
        Kind::HardState => {
            expect.hard_state = hard_state(2, last / 2);
            batch.hard_state = Some(expect.hard_state);
        }
        Kind::CompactInside => {
            let at = last / 2;
            batch.compact_to = Some((LogIndex(at), Term(1)));
            expect.compacted = (at, 1);
            expect.terms.drain(..at as usize);
        }
        Kind::CompactAtLast => {
            batch.compact_to = Some((LogIndex(last), Term(1)));
            expect.compacted = (last, 1);
            expect.terms.clear();
        }
        Kind::CompactBeyond => {
            batch.compact_to = Some((LogIndex(last + 10), Term(2)));
            expect.compacted = (last + 10, 2);
            expect.last = last + 10;
            expect.terms.clear();
        }
        Kind::Truncate => {
            // A new leader replaces the last entry (nothing is committed).
            batch.entries = entries(last, last, 2, 0);
            *expect.terms.last_mut().unwrap() = 2;
        }
    }
    wal.write(batch).unwrap();
    check(&wal, &expect, &format!("{what}, before reopening"));
    let rolled = segments(dir.path()).len() > segs_before
        || segments(dir.path()).last() != files_before.keys().last();
    drop(wal);

    let (wal, _) = Wal::open(dir.path(), small_options())
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    check(&wal, &expect, &format!("{what}, reopened"));
    drop(wal);

    // A crash between the compaction's fdatasync and the deletion of the old segments: put the
    // deleted files back as they were (sealed segments are never written again).
    let mut restored = false;
    for (path, bytes) in &files_before {
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
            restored = true;
        }
    }
    if restored {
        let (wal, report) = Wal::open(dir.path(), small_options())
            .unwrap_or_else(|e| panic!("{what}: reopen with the old segments left failed: {e}"));
        check(
            &wal,
            &expect,
            &format!("{what}, reopened with the old segments left"),
        );
        assert!(
            !report.removed_files.is_empty(),
            "{what}: the old segments were not removed at open"
        );
    }
    Some(rolled)
}

#[test]
fn every_record_kind_at_a_segment_boundary_reopens() {
    for kind in KINDS {
        let mut rolls = 0;
        let mut landed = 0;
        for free in (0..=104).step_by(8) {
            match land(kind, free) {
                Some(true) => rolls += 1,
                Some(false) => {}
                None => continue,
            }
            landed += 1;
        }
        // The sweep must actually have crossed the boundary for this kind, both ways.
        assert!(rolls > 0, "{kind:?} never rolled over to a new segment");
        assert!(rolls < landed, "{kind:?} always rolled over");
    }
}

/// The reproduction from the issue: 64 KiB segments, 1000-byte single-entry batches that leave
/// 32 bytes free (in format version 1; 40 in version 2, whose entries bound is 8 bytes larger),
/// then `compact_to = (32, 1)`, or a truncation.
#[test]
fn compaction_after_a_batch_that_leaves_few_bytes_free_reopens() {
    let free = if land(Kind::Entries, 32).is_some() {
        32
    } else {
        40
    };
    assert_eq!(land(Kind::CompactInside, free), Some(true));
    assert_eq!(land(Kind::Truncate, free), Some(true));
}
