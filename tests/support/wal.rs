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

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Run a seeded test for `HAVEN_WAL_SEEDS` seeds (default `default_count`) from
/// `HAVEN_WAL_SEED_START` (default 0) over all cores, like the Raft simulator does with
/// `HAVEN_SIM_*`. Every failing seed is printed with the line that replays it alone; the test
/// fails if any did.
pub fn run_seeds(test: &str, default_count: u64, run: impl Fn(u64) + Sync) {
    let count = env_u64("HAVEN_WAL_SEEDS", default_count);
    let start = env_u64("HAVEN_WAL_SEED_START", 0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(2)
        .min(count.max(1));
    let began = std::time::Instant::now();
    let mut failures: Vec<(u64, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let run = &run;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut seed = start + t;
                    while seed < start + count {
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed)));
                        if let Err(panic) = outcome {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            eprintln!(
                                "{test}: seed {seed} FAILED: {what}\n  replay: \
                                 HAVEN_WAL_SEED_START={seed} HAVEN_WAL_SEEDS=1 cargo test \
                                 --release --test {test}"
                            );
                            failures.push((seed, what));
                        }
                        seed += threads;
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    failures.sort();
    eprintln!(
        "{test}: {count} seeds from {start} in {:.1}s, {} failed",
        began.elapsed().as_secs_f64(),
        failures.len()
    );
    if let Some((seed, what)) = failures.first() {
        panic!(
            "{} of {count} seeds failed; first: seed {seed}: {what}\n  replay: \
             HAVEN_WAL_SEED_START={seed} HAVEN_WAL_SEEDS=1 cargo test --release --test {test}",
            failures.len()
        );
    }
}

/// A scratch directory on tmpfs when there is one: these tests check what recovery makes of
/// the bytes in the files, not whether the disk keeps them, so an fdatasync need not cost.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// The bytes of every segment file in `dir`, by path.
pub fn segment_images(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    segments(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// The byte range `[lo, hi)` where `after` differs from `before` (zeros where `before` is
/// shorter), or `None` if they are equal.
pub fn changed_range(before: &[u8], after: &[u8]) -> Option<(usize, usize)> {
    let old = |i: usize| before.get(i).copied().unwrap_or(0);
    let lo = (0..after.len()).find(|&i| after[i] != old(i))?;
    let hi = (0..after.len()).rev().find(|&i| after[i] != old(i))? + 1;
    Some((lo, hi))
}

/// Page size of the power-loss simulator, and the sector size a page may tear at.
pub const PAGE: usize = 4096;
pub const SECTOR: usize = 512;

/// What power loss may leave of one unfinished write: `after` is the file with the write
/// complete, `before` without it; only bytes in `[lo, hi)` (the write) change. Each 4 KiB page
/// of the write independently reached the disk, did not (old bytes), was zeroed, was filled
/// with garbage, or tore at 512-byte sectors. Returns the image and whether an earlier page of
/// the write was lost while a later one survived (the case kill -9 never produces).
pub fn tear_write(
    rng: &mut Rng,
    before: &[u8],
    after: &[u8],
    lo: usize,
    hi: usize,
) -> (Vec<u8>, bool) {
    let mut image = after.to_vec();
    let old = |i: usize| before.get(i).copied().unwrap_or(0);
    let mut lost_before = false;
    let mut out_of_order = false;
    let mut page = lo / PAGE * PAGE;
    while page < hi {
        let (a, b) = (page.max(lo), (page + PAGE).min(hi));
        let lost = match rng.below(6) {
            0 | 1 => false,
            2 => {
                (a..b).for_each(|i| image[i] = old(i));
                true
            }
            3 => {
                (a..b).for_each(|i| image[i] = 0);
                true
            }
            4 => {
                (a..b).for_each(|i| image[i] = rng.next() as u8);
                true
            }
            _ => {
                let mut sector = a / SECTOR * SECTOR;
                let mut any = false;
                while sector < b {
                    if rng.below(2) == 0 {
                        (sector.max(a)..(sector + SECTOR).min(b)).for_each(|i| image[i] = old(i));
                        any = true;
                    }
                    sector += SECTOR;
                }
                any
            }
        };
        if lost {
            lost_before = true;
        } else if lost_before {
            out_of_order = true;
        }
        page += PAGE;
    }
    (image, out_of_order)
}
