//! Helpers shared by the WAL integration tests.
#![allow(dead_code)]

use haven::wal::{FaultInjector, Wal, WalOptions, WriteBatch};
use haven::{Entry, EntryKind, GroupId, HardState, LogIndex, Term};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Small segments so that tests cross many segment boundaries.
pub const SMALL_SEGMENT: u64 = 64 * 1024;

pub fn small_options() -> WalOptions {
    WalOptions {
        segment_bytes: SMALL_SEGMENT,
        ..WalOptions::default()
    }
}

/// A WAL in `dir` with small segments and a fault injector the test controls.
pub fn open_with_faults(dir: &Path) -> (Wal, Arc<FaultInjector>) {
    let faults = Arc::new(FaultInjector::new());
    let options = WalOptions {
        faults: Some(Arc::clone(&faults)),
        ..small_options()
    };
    let (wal, _) = Wal::open(dir, options).unwrap();
    (wal, faults)
}

/// A recognizable payload: it names its index and term, then filler derived from both, so a
/// misplaced, stale or mixed-up entry never passes `check_entry`.
pub fn payload(index: u64, term: u64, len: usize) -> Vec<u8> {
    let mut data = format!("i{index}t{term}:").into_bytes();
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.push(b'a' + (x % 26) as u8);
    }
    data
}

pub fn entry(index: u64, term: u64, len: usize) -> Entry {
    Entry {
        group: GroupId(0),
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: payload(index, term, len),
    }
}

pub fn entries(lo: u64, hi: u64, term: u64, len: usize) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term, len)).collect()
}

/// Panics unless `e` carries the payload `entry(e.index, e.term, len)` would.
pub fn check_entry(e: &Entry) {
    let prefix = format!("i{}t{}:", e.index.0, e.term.0);
    assert!(
        e.data.starts_with(prefix.as_bytes()),
        "entry {} term {} carries a foreign payload",
        e.index,
        e.term
    );
    assert_eq!(
        e.data,
        payload(e.index.0, e.term.0, e.data.len()),
        "entry {} term {} payload damaged",
        e.index,
        e.term
    );
}

pub fn append(wal: &Wal, lo: u64, hi: u64, term: u64, len: usize) {
    wal.write(WriteBatch {
        entries: entries(lo, hi, term, len),
        ..WriteBatch::default()
    })
    .unwrap();
}

pub fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: None,
        commit: LogIndex(commit),
    }
}

/// Read the whole log and check every entry.
pub fn read_all(wal: &Wal) -> Vec<Entry> {
    let got = wal
        .entries(wal.first_index(), wal.last_index().next(), u64::MAX)
        .unwrap();
    assert_eq!(
        got.len() as u64,
        wal.last_index().0 + 1 - wal.first_index().0,
        "a full read returned the wrong number of entries"
    );
    for (k, e) in got.iter().enumerate() {
        assert_eq!(e.index.0, wal.first_index().0 + k as u64);
        check_entry(e);
        assert_eq!(wal.term(e.index).unwrap(), Some(e.term));
    }
    got
}

/// Segment files in `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// `(offset, frame length, kind)` of every record in a segment file, up to the first zero header.
pub fn frames(path: &Path) -> Vec<(u64, u64, u8)> {
    use haven::codec::{FrameHeader, FRAME_HEADER_BYTES};
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + FRAME_HEADER_BYTES <= data.len() {
        let head: [u8; FRAME_HEADER_BYTES] = data[at..at + FRAME_HEADER_BYTES].try_into().unwrap();
        let Ok(h) = FrameHeader::parse(&head, usize::MAX) else {
            break;
        };
        out.push((at as u64, h.frame_len() as u64, h.kind));
        at += h.frame_len();
    }
    out
}

/// Overwrite bytes of a file in place.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

/// Flip every bit of one byte of a file.
pub fn flip_byte(path: &Path, offset: u64) {
    let data = std::fs::read(path).unwrap();
    patch(path, offset, &[!data[offset as usize]]);
}

/// A tiny deterministic generator for seeded loops (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
