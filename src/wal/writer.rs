//! The writer (group commit) and the preparer thread (zero-filled segments made ahead).
//!
//! The writer state owns the active segment and sits behind a mutex. The writer thread takes the
//! mutex whenever batches are queued; a blocking `Wal::write` that finds the mutex free takes it
//! and does the turn on its own thread (saving the two thread wake-ups of a hand-off, about a
//! fifth of an fdatasync on the development VM). Either way one thread at a time drains the
//! queue, and batches are written in queue order. Each turn takes every queued batch (bounded),
//! checks
//! each against the log as it will be once the earlier ones are written, encodes the records into
//! one buffer, writes it with one `pwrite`, issues one fdatasync, publishes the new state to
//! readers, and only then runs the callbacks. When a segment fills up, what is buffered for it is
//! written and fdatasync'ed ("sealed") before the first byte goes to the next segment, so a
//! crash can only ever tear the last segment.

use super::record::{
    append_compact, append_entries, append_hard_state, append_segment_header, append_truncate,
    entries_frame_bound, SegmentHeader, WAL_FORMAT_VERSION,
};
use super::recovery::Recovered;
use super::segment::{
    prepare_zeroed, segment_path, sync_data, sync_dir, FaultInjector, PREPARED_EXT,
};
use super::state::{LogState, RecordPos};
use super::{Request, SegmentRef, Shared};
use crate::error::{Error, Result};
use crate::limits::{
    MAX_ENTRY_BYTES, MAX_WAL_BATCH_ENTRIES, MAX_WAL_DRAIN_BATCHES, MAX_WAL_DRAIN_BYTES,
};
use crate::types::{Entry, HardState, LogIndex, Term};
use crossbeam_channel::{Receiver, TryRecvError};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Upper bound of a segment header frame (its payload is at most 7 varints and an option).
pub(crate) const SEGMENT_HEADER_BOUND: usize = 128;
/// Upper bound of a hard-state, truncate or compaction frame.
const SMALL_RECORD_BOUND: usize = 64;

/// Capacity of the write buffer kept between turns.
const BUF_KEEP_BYTES: usize = 4 << 20;

/// Size of a segment made for one record of `frame_bytes` (whole frame) that does not fit a
/// normal one: room for the segment header and the record, rounded up to 4096.
pub(crate) fn oversize_segment_bytes(frame_bytes: usize) -> u64 {
    ((SEGMENT_HEADER_BOUND + frame_bytes) as u64).next_multiple_of(4096)
}

type Prepared = Result<(PathBuf, File)>;

/// Start the preparer: it keeps one zero-filled segment file ready and hands it over through
/// the returned channel (a rendezvous: the next file is made as soon as one is taken).
pub(crate) fn spawn_preparer(
    dir: PathBuf,
    segment_bytes: u64,
    stop: Arc<AtomicBool>,
) -> Result<(Receiver<Prepared>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded::<Prepared>(0);
    let handle = std::thread::Builder::new()
        .name("haven-wal-prepare".into())
        .spawn(move || {
            for n in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let path = dir.join(format!("{n:020}.{PREPARED_EXT}"));
                let result = prepare_zeroed(&path, segment_bytes, &stop).map(|f| (path.clone(), f));
                let failed = result.is_err();
                if let Err(returned) = tx.send(result) {
                    // The writer is gone: the file is not needed.
                    if let Ok((path, _)) = returned.into_inner() {
                        let _ = std::fs::remove_file(path);
                    }
                    return;
                }
                if failed {
                    return;
                }
            }
        })
        .map_err(|e| Error::io("spawning the wal preparer thread", e))?;
    Ok((rx, handle))
}

/// The log as it will be once everything encoded so far in this turn is durable. Scalars only,
/// plus the term runs appended this turn; older terms come from the published state.
#[derive(Debug, Clone)]
struct Tentative {
    compacted: (LogIndex, Term),
    last: LogIndex,
    last_term: Term,
    hard_state: HardState,
    /// Entries <= this (and above `compacted`) are as published.
    base_last: LogIndex,
    /// `(first index, term)` runs of the entries appended this turn, above `base_last`.
    runs: Vec<(LogIndex, Term)>,
}

impl Tentative {
    fn from_published(log: &LogState) -> Self {
        Tentative {
            compacted: log.compacted(),
            last: log.last_index(),
            last_term: log.last_term(),
            hard_state: log.hard_state(),
            base_last: log.last_index(),
            runs: Vec::new(),
        }
    }

    fn term(&self, index: LogIndex, published: &LogState) -> Option<Term> {
        if index == self.compacted.0 {
            return Some(self.compacted.1);
        }
        if index < self.compacted.0 || index > self.last {
            return None;
        }
        if index <= self.base_last {
            return published.term(index);
        }
        let run = self.runs.partition_point(|&(start, _)| start <= index);
        run.checked_sub(1)
            .and_then(|i| self.runs.get(i))
            .map(|&(_, t)| t)
    }

    /// Apply a compaction; false if it changes nothing (at or below the compaction point).
    fn compact(&mut self, index: LogIndex, term: Term, published: &LogState) -> bool {
        if index <= self.compacted.0 {
            return false;
        }
        if index <= self.last && self.term(index, published) == Some(term) {
            self.compacted = (index, term);
        } else {
            self.compacted = (index, term);
            self.last = index;
            self.last_term = term;
            self.base_last = index;
            self.runs.clear();
        }
        true
    }

    fn truncate(&mut self, from: LogIndex, published: &LogState) {
        let prev = from.prev();
        let Some(prev_term) = self.term(prev, published) else {
            panic!(
                "wal: truncate from {from}: no term for index {prev} (compacted {}, last {})",
                self.compacted.0, self.last
            );
        };
        self.last = prev;
        self.last_term = prev_term;
        if prev < self.base_last {
            self.base_last = prev;
        }
        self.runs.retain(|&(start, _)| start <= prev);
    }

    fn append(&mut self, entries: &[Entry]) {
        for e in entries {
            if self.runs.is_empty() || e.term != self.last_term {
                self.runs.push((e.index, e.term));
            }
            self.last = e.index;
            self.last_term = e.term;
        }
    }

    /// Check `batch` against this state and apply it; on error, `self` is unchanged in meaning
    /// (callers validate on a clone).
    fn validate(&mut self, batch: &super::WriteBatch, published: &LogState) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidArgument(m));
        if let Some((index, term)) = batch.compact_to {
            self.compact(index, term, published);
        }
        if let Some(first) = batch.entries.first() {
            let mut expect = first.index;
            let mut term = first.term;
            for e in &batch.entries {
                if e.index != expect {
                    return invalid(format!(
                        "batch entries not contiguous: index {} where {expect} was expected",
                        e.index
                    ));
                }
                if e.term < term {
                    return invalid(format!(
                        "entry {} has term {} below the term {term} of the entry before it",
                        e.index, e.term
                    ));
                }
                if e.data.len() > MAX_ENTRY_BYTES {
                    return invalid(format!(
                        "entry {} payload is {} bytes, over the limit of {MAX_ENTRY_BYTES}",
                        e.index,
                        e.data.len()
                    ));
                }
                expect = expect.next();
                term = e.term;
            }
            if first.index <= self.compacted.0 {
                return invalid(format!(
                    "entries start at {}, at or below the compaction point {}",
                    first.index, self.compacted.0
                ));
            }
            if first.index > self.last.next() {
                return invalid(format!(
                    "entries start at {} but the log ends at {}: a gap",
                    first.index, self.last
                ));
            }
            if first.index <= self.last {
                if first.index <= self.hard_state.commit {
                    return invalid(format!(
                        "entries at {} would replace committed entries (commit index {})",
                        first.index, self.hard_state.commit
                    ));
                }
                self.truncate(first.index, published);
            }
            if first.term < self.last_term {
                return invalid(format!(
                    "entry {} has term {} below the term {} of the entry before it",
                    first.index, first.term, self.last_term
                ));
            }
            self.append(&batch.entries);
        }
        if let Some(hs) = batch.hard_state {
            let old = self.hard_state;
            if hs.term < old.term {
                return invalid(format!("hard state term {} below {}", hs.term, old.term));
            }
            if hs.term == old.term && old.vote.is_some() && hs.vote != old.vote {
                return invalid(format!(
                    "hard state changes the vote of term {} from {:?} to {:?}",
                    hs.term, old.vote, hs.vote
                ));
            }
            self.hard_state = hs;
        }
        Ok(())
    }
}

/// A state change to publish once the turn's fdatasync returned.
enum Op {
    Compact(LogIndex, Term),
    Truncate(LogIndex),
    Append(Vec<Entry>, Vec<RecordPos>),
    HardState(HardState),
    NewSegment(u64, SegmentRef),
}

/// The segment being written.
struct Active {
    seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// File size (writes never go beyond it, except in an oversize segment made to fit).
    size: u64,
    /// Bytes written to the file so far.
    written: u64,
}

/// The writer thread's state.
pub(crate) struct Writer {
    dir: PathBuf,
    shared: Arc<Shared>,
    prepared: Receiver<Prepared>,
    faults: Option<Arc<FaultInjector>>,
    active: Active,
    /// `(segment, last index when it was started)` of every segment, oldest first.
    starts: VecDeque<(u64, LogIndex)>,
    /// Bytes encoded for the active segment, to be written at `active.written`.
    buf: Vec<u8>,
    tentative: Tentative,
    segment_bytes: u64,
    oversize_count: u64,
    /// Files deleted at start (reported by `Wal::open`).
    pub removed_at_start: Vec<PathBuf>,
    /// Reused between turns to avoid an allocation per turn.
    turn_buf: Vec<Request>,
    /// Entries the cache let go of this turn, freed after the callbacks ran.
    evicted: Vec<Entry>,
}

impl Writer {
    /// Take over the recovered log: publish it, make sure the last segment has a header (or
    /// create the first segment), delete segments a compaction made unnecessary.
    pub(crate) fn start(
        dir: PathBuf,
        shared: Arc<Shared>,
        recovered: Recovered,
        prepared: Receiver<Prepared>,
        segment_bytes: u64,
        faults: Option<Arc<FaultInjector>>,
    ) -> Result<Writer> {
        let Recovered {
            state, segments, ..
        } = recovered;
        let tentative = Tentative::from_published(&state);
        let mut starts = VecDeque::new();
        let mut active = None;
        let mut active_version = WAL_FORMAT_VERSION;
        {
            let mut published = shared.write();
            published.log = state;
            for seg in segments {
                published.segments.insert(
                    seg.seq,
                    SegmentRef {
                        path: seg.path.clone(),
                        file: Arc::clone(&seg.file),
                        version: seg.version,
                    },
                );
                active_version = seg.version;
                if let Some(start_last) = seg.start_last {
                    starts.push_back((seg.seq, start_last));
                }
                active = Some(Active {
                    seq: seg.seq,
                    path: seg.path,
                    file: seg.file,
                    size: seg.size,
                    written: seg.end,
                });
            }
        }
        let needs_header = active.as_ref().map_or(true, |a| a.written == 0);
        let active = match active {
            Some(a) => a,
            None => {
                let (path, file) = take_prepared(&prepared)?;
                let active = activate(&dir, 1, path, file)?;
                shared.write().segments.insert(
                    1,
                    SegmentRef {
                        path: active.path.clone(),
                        file: Arc::clone(&active.file),
                        version: WAL_FORMAT_VERSION,
                    },
                );
                active
            }
        };
        let mut writer = Writer {
            dir,
            shared,
            prepared,
            faults,
            active,
            starts,
            buf: Vec::with_capacity(BUF_KEEP_BYTES),
            tentative,
            segment_bytes,
            oversize_count: 0,
            removed_at_start: Vec::new(),
            turn_buf: Vec::new(),
            evicted: Vec::new(),
        };
        if needs_header {
            writer.starts.retain(|&(seq, _)| seq != writer.active.seq);
            writer
                .starts
                .push_back((writer.active.seq, writer.tentative.last));
            writer.encode_header()?;
            writer.flush()?;
            writer.sync()?;
        } else if active_version != WAL_FORMAT_VERSION {
            // Records of this version never go into an older segment: continue in a new one.
            let mut ops = Vec::new();
            writer.roll(None, &mut ops)?;
            writer.flush()?;
            writer.sync()?;
            writer.publish(ops);
        }
        writer.removed_at_start = writer.delete_compacted_segments();
        Ok(writer)
    }

    /// Let go of the preparer's channel, so a preparer blocked handing over a file sees the
    /// writer is gone, deletes the file and exits.
    pub(crate) fn release_preparer(&mut self) {
        self.prepared = crossbeam_channel::never();
    }

    /// Take every queued batch (bounded in count and bytes) and append `own` (a blocking
    /// `write` that found the writer idle), then write, sync and acknowledge them all.
    /// The caller holds the writer lock, so the queue is drained by one thread at a time and
    /// batches are written in queue order.
    pub(crate) fn drain_and_turn(
        &mut self,
        queue: &Receiver<Request>,
        own: Option<Request>,
    ) -> bool {
        let mut turn = std::mem::take(&mut self.turn_buf);
        let mut bytes = 0usize;
        let mut disconnected = false;
        while turn.len() < MAX_WAL_DRAIN_BATCHES && bytes < MAX_WAL_DRAIN_BYTES {
            match queue.try_recv() {
                Ok(req) => {
                    bytes += req
                        .batch
                        .entries
                        .iter()
                        .map(|e| e.data.len())
                        .sum::<usize>();
                    turn.push(req);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if let Some(own) = own {
            turn.push(own);
        }
        if !turn.is_empty() {
            // An internal invariant broken mid-turn panics (with its message on stderr); the
            // log then stops taking writes rather than leaving callers waiting forever, and
            // every callback of the turn not yet called is called with the error. `turn` keeps
            // each request until its callback has run (see `Writer::turn`), so none is lost.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.turn(&mut turn)));
            if let Err(panic) = outcome {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let reason = format!("the wal writer panicked mid-turn: {what}");
                self.shared.set_fatal(reason.clone());
                for req in turn.drain(..) {
                    (req.on_durable)(Err(Error::Fatal(reason.clone())));
                }
            }
        }
        self.turn_buf = turn;
        disconnected
    }

    /// Write, sync, publish and acknowledge one turn's batches.
    ///
    /// A request stays in `requests` until its callback has been called (the callback is
    /// swapped for a no-op first), so that if anything here panics, `drain_and_turn` finds
    /// every callback not yet called and fails it.
    fn turn(&mut self, requests: &mut Vec<Request>) {
        if let Some(e) = self.shared.fatal_error() {
            for req in requests.drain(..) {
                (req.on_durable)(Err(Error::Fatal(e.to_string())));
            }
            return;
        }
        self.tentative = Tentative::from_published(&self.shared.read().log);
        let mut ops = Vec::new();
        let mut failure = None;
        for req in requests.iter_mut() {
            // Taken, not cloned: `req` keeps only its callback from here on.
            let batch = std::mem::take(&mut req.batch);
            if failure.is_some() {
                continue;
            }
            let checked = {
                let published = self.shared.read();
                let mut after = self.tentative.clone();
                after.validate(&batch, &published.log)
            };
            if let Err(e) = checked {
                take_callback(req)(Err(e));
                continue;
            }
            if let Err(e) = self.encode_batch(batch, &mut ops) {
                failure = Some(e);
            }
        }
        if failure.is_none() && !self.buf.is_empty() {
            failure = self.flush().and_then(|()| self.sync()).err();
        }
        if let Some(e) = failure {
            // Nothing of this turn is acknowledged or published; the log takes no more writes.
            self.shared.set_fatal(e.to_string());
            let reason = format!("the wal stopped taking writes: {e}");
            for req in requests.iter_mut() {
                take_callback(req)(Err(Error::Fatal(reason.clone())));
            }
            requests.clear();
            return;
        }
        let compacted = self.publish(ops);
        if compacted {
            self.delete_compacted_segments();
        }
        for req in requests.iter_mut() {
            take_callback(req)(Ok(()));
        }
        requests.clear();
        // Freed only now: dropping a few hundred entries is not free, and nobody waits for it.
        self.evicted.clear();
    }

    /// Apply the turn's changes to the published state; true if a compaction was among them.
    fn publish(&mut self, ops: Vec<Op>) -> bool {
        let mut compacted = false;
        let mut published = self.shared.write();
        for op in ops {
            match op {
                Op::Compact(index, term) => {
                    published.log.compact(index, term);
                    compacted = true;
                }
                Op::Truncate(from) => published.log.truncate(from),
                Op::Append(entries, positions) => {
                    published
                        .log
                        .append_evicting(entries, &positions, &mut self.evicted)
                }
                Op::HardState(hs) => published.log.set_hard_state(hs),
                Op::NewSegment(seq, seg) => {
                    published.segments.insert(seq, seg);
                }
            }
        }
        let log = &published.log;
        assert!(
            log.last_index() == self.tentative.last && log.compacted() == self.tentative.compacted,
            "wal: published log (last {}, compacted {}) differs from the written one (last {}, \
             compacted {})",
            log.last_index(),
            log.compacted().0,
            self.tentative.last,
            self.tentative.compacted.0
        );
        compacted
    }

    /// Delete the oldest segments while every live entry is in a later one. Returns the paths
    /// deleted. A failed deletion is retried at the next compaction (the file is only garbage).
    fn delete_compacted_segments(&mut self) -> Vec<PathBuf> {
        let compacted = self.shared.read().log.compacted().0;
        let mut removed = Vec::new();
        while self.starts.len() >= 2 && self.starts.get(1).is_some_and(|&(_, l)| l <= compacted) {
            let Some((seq, _)) = self.starts.front().copied() else {
                break;
            };
            if seq == self.active.seq {
                break;
            }
            let path = segment_path(&self.dir, seq);
            if std::fs::remove_file(&path).is_err() && path.exists() {
                break;
            }
            self.starts.pop_front();
            self.shared.write().segments.remove(&seq);
            removed.push(path);
        }
        removed
    }

    /// Encode one validated batch, rolling over segments as needed.
    ///
    /// Order matters for every record: first make room (a roll-over writes the new segment's
    /// header from `tentative`, and a header describes the log *before* its first record), then
    /// encode the record, then apply it to `tentative`.
    fn encode_batch(&mut self, batch: super::WriteBatch, ops: &mut Vec<Op>) -> Result<()> {
        if let Some((index, term)) = batch.compact_to {
            // `Tentative::compact` changes nothing at or below the compaction point.
            if index > self.tentative.compacted.0 {
                self.make_room(SMALL_RECORD_BOUND, ops)?;
                let salt = self.active.seq;
                append_compact(&mut self.buf, salt, index, term)?;
                ops.push(Op::Compact(index, term));
                let published = self.shared.read();
                self.tentative.compact(index, term, &published.log);
            }
        }
        if let Some(first) = batch.entries.first().map(|e| e.index) {
            if first <= self.tentative.last {
                self.make_room(SMALL_RECORD_BOUND, ops)?;
                let salt = self.active.seq;
                append_truncate(&mut self.buf, salt, first)?;
                ops.push(Op::Truncate(first));
                let published = self.shared.read();
                self.tentative.truncate(first, &published.log);
            }
            let positions = self.encode_entries(&batch.entries, ops)?;
            ops.push(Op::Append(batch.entries, positions));
        }
        if let Some(hs) = batch.hard_state {
            self.make_room(SMALL_RECORD_BOUND, ops)?;
            let salt = self.active.seq;
            append_hard_state(&mut self.buf, salt, &hs)?;
            ops.push(Op::HardState(hs));
            self.tentative.hard_state = hs;
        }
        Ok(())
    }

    /// Encode entries as one or more records: as many as fit the active segment (at most
    /// `MAX_WAL_BATCH_ENTRIES` per record), then the rest in the next segment(s). An entry that
    /// does not fit even an empty segment gets an oversize segment of its own.
    fn encode_entries(&mut self, entries: &[Entry], ops: &mut Vec<Op>) -> Result<Vec<RecordPos>> {
        let mut positions = Vec::new();
        let mut rest = entries;
        while let Some(head) = rest.first() {
            let space = self.space_left();
            let mut count = 0;
            let mut data = 0;
            while let Some(e) = rest.get(count) {
                if count == MAX_WAL_BATCH_ENTRIES
                    || entries_frame_bound(count + 1, data + e.data.len()) as u64 > space
                {
                    break;
                }
                data += e.data.len();
                count += 1;
            }
            if count == 0 {
                let need = entries_frame_bound(1, head.data.len());
                if (SEGMENT_HEADER_BOUND + need) as u64 > self.segment_bytes {
                    self.roll(Some(oversize_segment_bytes(need)), ops)?;
                } else {
                    self.roll(None, ops)?;
                }
                continue;
            }
            let (chunk, after) = rest.split_at(count);
            let offset = self.active.written + self.buf.len() as u64;
            let len = append_entries(&mut self.buf, self.active.seq, chunk)?;
            positions.push(RecordPos {
                first: head.index,
                count: count as u32,
                segment: self.active.seq,
                offset,
                len: len as u32,
            });
            self.tentative.append(chunk);
            rest = after;
        }
        Ok(positions)
    }

    fn space_left(&self) -> u64 {
        self.active
            .size
            .saturating_sub(self.active.written + self.buf.len() as u64)
    }

    /// Roll over unless `bytes` fit in the active segment.
    fn make_room(&mut self, bytes: usize, ops: &mut Vec<Op>) -> Result<()> {
        if self.space_left() < bytes as u64 {
            self.roll(None, ops)?;
        }
        Ok(())
    }

    /// Seal the active segment and continue in a new one: the prepared one, or for `oversize`
    /// a segment of that many bytes made on the spot.
    fn roll(&mut self, oversize: Option<u64>, ops: &mut Vec<Op>) -> Result<()> {
        self.flush()?;
        self.sync()?;
        let (path, file) = match oversize {
            Some(size) => {
                self.oversize_count += 1;
                let path = self.dir.join(format!(
                    "oversize-{:020}.{PREPARED_EXT}",
                    self.oversize_count
                ));
                let file = prepare_zeroed(&path, size, &AtomicBool::new(false))?;
                (path, file)
            }
            None => take_prepared(&self.prepared)?,
        };
        let seq = self.active.seq + 1;
        self.active = activate(&self.dir, seq, path, file)?;
        self.starts.push_back((seq, self.tentative.last));
        ops.push(Op::NewSegment(
            seq,
            SegmentRef {
                path: self.active.path.clone(),
                file: Arc::clone(&self.active.file),
                version: WAL_FORMAT_VERSION,
            },
        ));
        self.encode_header()
    }

    fn encode_header(&mut self) -> Result<()> {
        let t = &self.tentative;
        let header = SegmentHeader {
            version: WAL_FORMAT_VERSION,
            segment: self.active.seq,
            compacted_index: t.compacted.0,
            compacted_term: t.compacted.1,
            last_index: t.last,
            last_term: t.last_term,
            hard_state: t.hard_state,
            segment_bytes: self.active.size,
        };
        append_segment_header(&mut self.buf, &header)?;
        Ok(())
    }

    /// Write the buffered bytes to the active segment.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.active
            .file
            .write_all_at(&self.buf, self.active.written)
            .map_err(|e| Error::io(format!("writing {}", self.active.path.display()), e))?;
        self.active.written += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > BUF_KEEP_BYTES {
            // A burst of large batches must not pin its buffer for the life of the log.
            self.buf = Vec::with_capacity(BUF_KEEP_BYTES);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        sync_data(&self.active.file, self.faults.as_deref())
            .map_err(|e| Error::io(format!("fdatasync of {}", self.active.path.display()), e))?;
        let micros = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        self.shared.sync_latency.record(micros);
        Ok(())
    }
}

/// The request's callback, leaving a no-op in its place (a boxed zero-sized closure does not
/// allocate), so a callback is never called twice.
fn take_callback(req: &mut Request) -> super::DurableCallback {
    std::mem::replace(&mut req.on_durable, Box::new(|_| {}))
}

fn take_prepared(prepared: &Receiver<Prepared>) -> Result<(PathBuf, File)> {
    match prepared.recv() {
        Ok(result) => result,
        Err(_) => Err(Error::Fatal("the wal segment preparer has stopped".into())),
    }
}

/// Give a prepared file its segment name, durably (the rename must survive a crash before any
/// record in the file is acknowledged).
fn activate(dir: &std::path::Path, seq: u64, from: PathBuf, file: File) -> Result<Active> {
    let path = segment_path(dir, seq);
    std::fs::rename(&from, &path).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", from.display(), path.display()),
            e,
        )
    })?;
    sync_dir(dir)?;
    let size = file
        .metadata()
        .map_err(|e| Error::io(format!("reading size of {}", path.display()), e))?
        .len();
    Ok(Active {
        seq,
        path,
        file: Arc::new(file),
        size,
        written: 0,
    })
}
