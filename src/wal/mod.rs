//! The durable, log-structured Raft log: segments, checksums, group commit, recovery.
//!
//! The WAL is the source of truth for the Raft log (design rule 1): an entry is acknowledged only
//! after the fdatasync that covers its record has returned.
//!
//! # Shape
//! - **Segments**: append-only files of [`WalOptions::segment_bytes`] (64 MiB by default), named
//!   by a sequence number, zero-filled ahead of use by a preparer thread so that an append never
//!   changes file metadata (see `segment.rs` for the measurement behind zeros over `fallocate`).
//! - **Records**: one codec frame each, salted with the segment number: segment header, entries,
//!   hard state, truncate-suffix, compaction. `docs/FORMAT.md` gives every byte.
//! - **Group commit**: [`Wal::submit`] queues a [`WriteBatch`]; one writer thread drains every
//!   queued batch, writes them with one `pwrite` (more only when a segment fills up), issues one
//!   fdatasync, publishes the new state to readers and then runs the callbacks.
//! - **Reads** come from an in-memory index of record positions and term runs, a bounded cache of
//!   the newest entries, and, for older entries, the segment files (each frame verified again).
//! - **Failure**: any IO error while writing (a failed fdatasync above all) is fatal for the log:
//!   the batches in flight fail, every later write fails with [`Error::Fatal`], and a failed
//!   fdatasync is never retried (after one, the kernel may have dropped the dirty pages; a retry
//!   could "succeed" without the data ever reaching the disk).
//!
//! # Example
//! ```
//! use haven::wal::{Wal, WalOptions, WriteBatch};
//! use haven::{Entry, EntryKind, GroupId, LogIndex, Term};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (wal, _report) = Wal::open(dir.path(), WalOptions::default()).unwrap();
//! let entry = Entry {
//!     group: GroupId(0),
//!     term: Term(1),
//!     index: LogIndex(1),
//!     kind: EntryKind::Normal,
//!     data: b"hello".to_vec(),
//! };
//! wal.write(WriteBatch { entries: vec![entry.clone()], ..WriteBatch::default() }).unwrap();
//! assert_eq!(wal.last_index(), LogIndex(1));
//! assert_eq!(wal.entries(LogIndex(1), LogIndex(2), u64::MAX).unwrap(), vec![entry]);
//! ```

mod record;
mod recovery;
mod segment;
mod state;
mod writer;

pub use record::WAL_FORMAT_VERSION;
pub use recovery::{RecoveryReport, TornTail};
pub use segment::{sync_dir, FaultInjector};

use crate::codec::read_frame;
use crate::error::{Error, Result};
use crate::histogram::AtomicHistogram;
use crate::limits::{
    DEFAULT_WAL_CACHE_BYTES, DEFAULT_WAL_SEGMENT_BYTES, MAX_FRAME_PAYLOAD_BYTES,
    MAX_WAL_SEGMENT_BYTES, MIN_WAL_SEGMENT_BYTES, WAL_SUBMIT_QUEUE,
};
use crate::park::{self, ParkedReceiver, ParkedSender};
use crate::types::{Entry, HardState, LogIndex, Term};
use record::{decode_record, Record};
use state::{LogState, RecordPos};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a [`Wal`] is configured.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size of a segment file, in bytes. At least [`MIN_WAL_SEGMENT_BYTES`]; rounded up to a
    /// multiple of 4096. A record larger than a segment gets a segment of its own, sized to fit.
    pub segment_bytes: u64,
    /// Bytes of the newest entries kept in memory (0 disables the cache: every read goes to disk).
    pub cache_bytes: usize,
    /// Test seam: make fdatasync fail on demand. `None` in production.
    pub faults: Option<Arc<FaultInjector>>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: DEFAULT_WAL_SEGMENT_BYTES,
            cache_bytes: DEFAULT_WAL_CACHE_BYTES,
            faults: None,
        }
    }
}

impl WalOptions {
    /// Check the options once, at open.
    pub fn validate(&self) -> Result<()> {
        if self.segment_bytes < MIN_WAL_SEGMENT_BYTES {
            return Err(Error::InvalidArgument(format!(
                "wal segment_bytes {} below the minimum of {MIN_WAL_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        if self.segment_bytes > MAX_WAL_SEGMENT_BYTES {
            return Err(Error::InvalidArgument(format!(
                "wal segment_bytes {} over the maximum of {MAX_WAL_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        Ok(())
    }

    fn segment_bytes_rounded(&self) -> u64 {
        self.segment_bytes.next_multiple_of(4096)
    }
}

/// One atomic-per-record unit of work for the WAL. Its parts are written in this order:
/// compaction, then (a truncate-suffix if the first entry index is <= the last index, and) the
/// entries, then the hard state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Entries to append. Contiguous, with non-decreasing terms; the first index must be in
    /// `first_index()..=last_index() + 1` (after `compact_to` is applied). An index <= the last
    /// index discards that entry and everything after it first (a new leader replaced them).
    pub entries: Vec<Entry>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Everything <= (index, term) is covered by a snapshot: see [`Wal::compacted`].
    pub compact_to: Option<(LogIndex, Term)>,
}

impl WriteBatch {
    /// True if the batch carries nothing to write (it then only waits for the batches submitted
    /// before it to be durable).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.hard_state.is_none() && self.compact_to.is_none()
    }
}

/// Called once a batch is durable (or has failed).
pub type DurableCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// A queued batch.
pub(crate) struct Request {
    batch: WriteBatch,
    on_durable: DurableCallback,
}

/// A segment file readers may read from.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRef {
    path: PathBuf,
    file: Arc<File>,
    /// WAL format version of the segment (from its header): how its records decode.
    version: u32,
}

/// What readers see: only durable state.
#[derive(Debug)]
pub(crate) struct Published {
    log: LogState,
    segments: BTreeMap<u64, SegmentRef>,
}

/// State shared by the handle, the readers and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    published: RwLock<Published>,
    /// Set (with the reason) when the log stopped taking writes.
    fatal: Mutex<Option<String>>,
    fatal_flag: AtomicBool,
    /// Latency of every successful fdatasync of a segment.
    sync_latency: AtomicHistogram,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Published> {
        // A panic while holding the lock leaves the state as the panicking thread left it; the
        // writer only mutates after a successful sync and each mutation is self-contained.
        self.published.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Published> {
        self.published.write().unwrap_or_else(|e| e.into_inner())
    }

    fn fatal_error(&self) -> Option<Error> {
        if !self.fatal_flag.load(Ordering::Acquire) {
            return None;
        }
        let reason = self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(Error::Fatal(format!(
            "the wal refuses writes after an earlier failure: {}",
            reason.unwrap_or_default()
        )))
    }

    fn set_fatal(&self, reason: String) {
        let mut slot = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.fatal_flag.store(true, Ordering::Release);
    }
}

/// The write-ahead log. `Send + Sync`: reads may run on any thread while the writer thread
/// writes. Dropping it waits for the batches already submitted to finish.
pub struct Wal {
    shared: Arc<Shared>,
    dir: PathBuf,
    /// Parked: the writer thread waits for batches without spinning (see `park.rs`).
    submit_tx: Option<ParkedSender<Request>>,
    /// The queue's receiving end, for a `write` that drains it on its own thread.
    submit_rx: Arc<ParkedReceiver<Request>>,
    /// The writer state; whoever holds it drains the queue.
    core: Arc<Mutex<writer::Writer>>,
    writer: Option<JoinHandle<()>>,
    preparer: Option<JoinHandle<()>>,
    stop_preparer: Arc<AtomicBool>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .finish()
    }
}

impl Wal {
    /// Open (or create) the log in `dir`: recover every segment (see [`RecoveryReport`]) and
    /// start the writer and preparer threads.
    ///
    /// Errors: `Corrupt { file, offset }` for a bad checksum outside a torn tail of the last
    /// segment, `UnsupportedVersion` for a segment written by a newer format, `Io`.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, RecoveryReport)> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating wal directory {}", dir.display()), e))?;
        let segment_bytes = options.segment_bytes_rounded();
        // How large a segment may be comes from each segment's own header, not from the options
        // (which may have changed since it was written).
        let recovered = recovery::recover(&dir, options.cache_bytes)?;
        let report = recovered.report.clone();
        let shared = Arc::new(Shared {
            published: RwLock::new(Published {
                log: LogState::new((LogIndex(0), Term(0)), HardState::default(), 0),
                segments: BTreeMap::new(),
            }),
            fatal: Mutex::new(None),
            fatal_flag: AtomicBool::new(false),
            sync_latency: AtomicHistogram::default(),
        });
        let stop_preparer = Arc::new(AtomicBool::new(false));
        let (prepared_rx, preparer) =
            writer::spawn_preparer(dir.clone(), segment_bytes, Arc::clone(&stop_preparer))?;
        let (submit_tx, submit_rx) = park::bounded(WAL_SUBMIT_QUEUE);
        let submit_rx = Arc::new(submit_rx);
        let writer_state = writer::Writer::start(
            dir.clone(),
            Arc::clone(&shared),
            recovered,
            prepared_rx,
            segment_bytes,
            options.faults.clone(),
        );
        let writer_state = match writer_state {
            Ok(w) => w,
            Err(e) => {
                stop_preparer.store(true, Ordering::SeqCst);
                let _ = preparer.join();
                return Err(e);
            }
        };
        let mut report = report;
        report
            .removed_files
            .extend(writer_state.removed_at_start.iter().cloned());
        let core = Arc::new(Mutex::new(writer_state));
        let writer = {
            let core = Arc::clone(&core);
            let queue = Arc::clone(&submit_rx);
            std::thread::Builder::new()
                .name("haven-wal-writer".into())
                .spawn(move || writer_thread(&core, &queue))
                .map_err(|e| Error::io("spawning the wal writer thread", e))?
        };
        Ok((
            Wal {
                shared,
                dir,
                submit_tx: Some(submit_tx),
                submit_rx,
                core,
                writer: Some(writer),
                preparer: Some(preparer),
                stop_preparer,
            },
            report,
        ))
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Index of the first entry in the log (`compacted().0 + 1`; equal to `last_index() + 1`
    /// when the log is empty).
    pub fn first_index(&self) -> LogIndex {
        self.shared.read().log.first_index()
    }

    /// Index of the last entry (the compaction index when the log is empty; 0 for a new log).
    pub fn last_index(&self) -> LogIndex {
        self.shared.read().log.last_index()
    }

    /// Term of the entry at `index`: `Some` for every entry in the log and for the compaction
    /// point (index 0 has term 0 in a new log); `None` below the compaction point or beyond the
    /// last index.
    pub fn term(&self, index: LogIndex) -> Result<Option<Term>> {
        Ok(self.shared.read().log.term(index))
    }

    /// The persisted hard state (default for a new log).
    pub fn hard_state(&self) -> HardState {
        self.shared.read().log.hard_state()
    }

    /// The compaction point: everything <= (index, term) is covered by a snapshot.
    pub fn compacted(&self) -> (LogIndex, Term) {
        self.shared.read().log.compacted()
    }

    /// Why the log stopped taking writes, if it did (a failed fdatasync, an IO error).
    pub fn failure(&self) -> Option<Error> {
        self.shared.fatal_error()
    }

    /// How long the log's fdatasync calls have taken since it was opened.
    pub fn sync_latency(&self) -> &AtomicHistogram {
        &self.shared.sync_latency
    }

    /// Entries in `[lo, hi)`, stopping before the total of [`Entry::size_bytes`] would exceed
    /// `max_bytes`, but always at least one entry when the range is not empty.
    ///
    /// `lo` must be >= `first_index()` and `hi` <= `last_index() + 1`, else `InvalidArgument`
    /// (the caller checks `first_index()` to learn that it needs a snapshot instead). Entries
    /// older than the cache are read from the segment files and verified again: `Corrupt` if
    /// the bytes changed on disk.
    pub fn entries(&self, lo: LogIndex, hi: LogIndex, max_bytes: u64) -> Result<Vec<Entry>> {
        if lo > hi {
            return Err(Error::InvalidArgument(format!(
                "entries range {lo}..{hi} is reversed"
            )));
        }
        if lo == hi {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut budget = Budget::new(max_bytes);
        // Under the lock: copy what the cache has and plan the disk reads; read the disk after
        // releasing it, so a slow read never delays the writer publishing a batch. Segments are
        // append-only and readers hold the file open, so the plan stays valid even if the
        // segment is deleted meanwhile.
        let (plan, disk_hi, cached) = {
            let published = self.shared.read();
            let log = &published.log;
            if lo < log.first_index() || hi > log.last_index().next() {
                return Err(Error::InvalidArgument(format!(
                    "entries {lo}..{hi} outside the log {}..{}",
                    log.first_index(),
                    log.last_index().next()
                )));
            }
            let cache_first = log.cache_first().unwrap_or(log.last_index().next());
            if lo >= cache_first {
                for e in log.cached(lo, hi) {
                    if !budget.take(e) {
                        break;
                    }
                    out.push(e.clone());
                }
                return Ok(out);
            }
            let disk_hi = hi.min(cache_first);
            let mut plan = Vec::new();
            for pos in log.positions(lo, disk_hi) {
                let Some(seg) = published.segments.get(&pos.segment) else {
                    panic!(
                        "wal: record of entries {}..{} is in segment {} that is not open",
                        pos.first,
                        pos.end(),
                        pos.segment
                    );
                };
                plan.push((pos, seg.clone()));
            }
            // Copy the cached part now too (bounded by max_bytes, checked again below).
            let mut cached = Vec::new();
            let mut cached_budget = Budget::new(max_bytes);
            for e in log.cached(disk_hi, hi) {
                if !cached_budget.take(e) {
                    break;
                }
                cached.push(e.clone());
            }
            (plan, disk_hi, cached)
        };
        'records: for (pos, seg) in plan {
            for e in read_record(&seg, &pos)? {
                if e.index < lo || e.index >= disk_hi || e.index >= pos.end() {
                    continue;
                }
                if !budget.take(&e) {
                    break 'records;
                }
                out.push(e);
            }
        }
        if !budget.exhausted {
            for e in cached {
                if !budget.take(&e) {
                    break;
                }
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Queue `batch`; `on_durable` runs once the batch is durable (after the fdatasync that
    /// covers it; reads reflect the batch by then), or with the error that stopped it:
    /// `InvalidArgument` (nothing of the batch was written: a gap, a truncation of committed
    /// entries, a decreasing term...), `Fatal` (the log stopped taking writes).
    ///
    /// Gaps are `InvalidArgument`, not a panic: the WAL is shared by the whole node, and a
    /// caller's bug must not take the log down with it; the Raft core treats the error as the
    /// bug it is.
    ///
    /// Callbacks run in submission order on the thread doing the turn (the writer thread, or a
    /// thread inside [`Wal::write`]) while it holds the writer lock: keep them short, and never
    /// write to the WAL from one.
    ///
    /// Does not wait for IO. It blocks only when [`WAL_SUBMIT_QUEUE`] batches are already
    /// waiting (back-pressure). Batches become durable in submission order.
    pub fn submit(&self, batch: WriteBatch, on_durable: DurableCallback) {
        if let Some(e) = self.shared.fatal_error() {
            on_durable(Err(e));
            return;
        }
        let request = Request { batch, on_durable };
        let Some(tx) = self.submit_tx.as_ref() else {
            (request.on_durable)(Err(Error::Unavailable("the wal is closed".into())));
            return;
        };
        if let Err(err) = tx.send(request) {
            let request = err.into_inner();
            let e = self
                .shared
                .fatal_error()
                .unwrap_or_else(|| Error::Unavailable("the wal writer has stopped".into()));
            (request.on_durable)(Err(e));
        }
    }

    /// Submit `batch` and wait until it is durable. When no turn is in progress, the calling
    /// thread does the turn itself (taking whatever else is queued first, in order), which saves
    /// two thread hand-offs; otherwise it queues the batch like [`Wal::submit`] and waits.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let slot: Arc<Mutex<Option<Result<()>>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.shared.fatal_error().is_none() {
            if let Ok(mut core) = self.core.try_lock() {
                let filled = Arc::clone(&slot);
                let own = Request {
                    batch,
                    on_durable: Box::new(move |result| {
                        *filled.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                    }),
                };
                core.drain_and_turn(self.submit_rx.channel(), Some(own));
                drop(core);
                let result = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                // No result: the turn panicked before acknowledging (the log is now fatal).
                return result.unwrap_or_else(|| {
                    Err(self
                        .shared
                        .fatal_error()
                        .unwrap_or_else(|| Error::Fatal("the wal writer stopped mid-turn".into())))
                });
            }
        }
        self.submit(
            batch,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| Err(Error::Unavailable("the wal writer has stopped".into())))
    }
}

/// The writer thread: whenever a batch is queued, take the writer lock and drain the queue.
/// It waits for the queue to be non-empty *before* taking anything from it, so a batch is never
/// held outside the lock (which would let a later batch, drained by a `write` caller, overtake it).
/// The wait parks at once (no spinning or yielding first, unlike a crossbeam `Select`).
fn writer_thread(core: &Mutex<writer::Writer>, queue: &ParkedReceiver<Request>) {
    loop {
        // The timeout only bounds a lost wake-up, which the parker rules out.
        if !queue.wait_ready(Duration::from_secs(1)) {
            continue;
        }
        let mut core = core.lock().unwrap_or_else(|e| e.into_inner());
        if core.drain_and_turn(queue.channel(), None) {
            return;
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what was submitted and exit.
        self.submit_tx = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.stop_preparer.store(true, Ordering::SeqCst);
        self.core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release_preparer();
        if let Some(preparer) = self.preparer.take() {
            let _ = preparer.join();
        }
    }
}

/// Counts entry bytes against a `max_bytes` limit; the first entry is always taken.
struct Budget {
    max_bytes: u64,
    used: u64,
    taken: usize,
    exhausted: bool,
}

impl Budget {
    fn new(max_bytes: u64) -> Self {
        Budget {
            max_bytes,
            used: 0,
            taken: 0,
            exhausted: false,
        }
    }

    fn take(&mut self, e: &Entry) -> bool {
        let size = e.size_bytes() as u64;
        if self.taken > 0 && self.used.saturating_add(size) > self.max_bytes {
            self.exhausted = true;
            return false;
        }
        self.used = self.used.saturating_add(size);
        self.taken += 1;
        true
    }
}

/// Read one entries record back from its segment, verifying it again.
fn read_record(seg: &SegmentRef, pos: &RecordPos) -> Result<Vec<Entry>> {
    let mut buf = vec![0u8; pos.len as usize];
    seg.file
        .read_exact_at(&mut buf, pos.offset)
        .map_err(|e| Error::io(format!("reading {}", seg.path.display()), e))?;
    let at = |e: Error| e.in_file(&seg.path, pos.offset);
    let Some(frame) = read_frame(&buf, pos.segment, MAX_FRAME_PAYLOAD_BYTES).map_err(at)? else {
        return Err(at(Error::corrupt(
            0,
            "record is shorter than when it was written",
        )));
    };
    match decode_record(seg.version, frame.kind, frame.payload)
        .map_err(at)?
        .0
    {
        Record::Entries(entries) if entries.first().map(|e| e.index) == Some(pos.first) => {
            Ok(entries)
        }
        _ => Err(at(Error::corrupt(
            0,
            format!(
                "expected the entries record starting at index {}",
                pos.first
            ),
        ))),
    }
}
