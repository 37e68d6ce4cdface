//! Recovery: scan and verify every segment, replay its records into a [`LogState`], and decide
//! what a bad frame means.
//!
//! Rules (also in `docs/FORMAT.md`, "Recovery"):
//! - Segments are replayed in number order, starting after the last gap in the numbering (a gap
//!   can only be left by compaction deleting a prefix of segments out of order in a crash).
//! - A segment file may be no larger than its header says it was made (`segment_bytes`), and
//!   never larger than `MAX_WAL_SEGMENT_BYTES`: checked before the file is read.
//! - In a sealed (not last) segment, every byte after the last record must be zero and every
//!   frame must verify; otherwise the WAL refuses to open with `Corrupt { file, offset }`.
//! - In the last segment, the first frame that does not verify (or a zero header followed by
//!   non-zero bytes) is where the last write may have been torn. Power loss can keep any subset
//!   of that write's pages, so frames of the same write may verify after it: they are dropped
//!   with it. But a frame that verifies and belongs to a *later* write (its write offset says
//!   its write began after the bad spot) proves that the write holding the bad spot had been
//!   synced before it: `Corrupt`. A torn tail is zeroed on disk, synced and reported.
//!   (Version 1 segments carry no write offsets: any frame that verifies after the bad spot
//!   makes it `Corrupt`.)
//! - After replay, every live index must be held by a replayed record; otherwise a segment is
//!   missing and the WAL refuses to open.

use super::record::{
    decode_record, peek_write_offset, Record, SegmentHeader, KIND_SEGMENT_HEADER, WAL_FORMAT_V1,
    WAL_FORMAT_VERSION,
};
use super::segment::{parse_segment_name, read_all, segment_path, PREPARED_EXT};
use super::state::{LogState, RecordPos};
use crate::codec::{
    read_frame, verify_frame, FrameHeader, HeaderDefect, FRAME_ALIGN, FRAME_HEADER_BYTES,
};
use crate::error::{Error, Result};
use crate::limits::{MAX_FRAME_PAYLOAD_BYTES, MAX_WAL_SEGMENT_BYTES};
use crate::types::{Entry, HardState, LogIndex, Term};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A torn or zero-filled tail cut from the last segment at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// Offset of the end of the last whole record (where the dropped bytes began).
    pub offset: u64,
    /// Non-zero bytes dropped (from `offset` to the last non-zero byte, rounded up to 8).
    pub bytes_dropped: u64,
}

/// What [`crate::wal::Wal::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files replayed.
    pub segments_replayed: usize,
    /// Records replayed (segment headers included).
    pub records_replayed: u64,
    /// Entries in the log after recovery.
    pub live_entries: u64,
    /// The torn tail cut from the last segment, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Segment files deleted because a compaction had made them unnecessary (a crash came
    /// between the compaction and their deletion), and leftover prepared segments.
    pub removed_files: Vec<PathBuf>,
}

/// One segment that survives recovery.
#[derive(Debug)]
pub(crate) struct RecoveredSegment {
    pub seq: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// WAL format version (from the header; the current one for a last segment without one).
    pub version: u32,
    /// Last index of the log when the segment was started (from its header), `None` when the
    /// last segment has no header yet.
    pub start_last: Option<LogIndex>,
    /// File length.
    pub size: u64,
    /// End of the last whole record.
    pub end: u64,
}

/// The outcome of recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub state: LogState,
    /// Surviving segments in order; the last one is where writing continues. Empty for a new log.
    pub segments: Vec<RecoveredSegment>,
    pub report: RecoveryReport,
}

/// Replays records, keeping track of entries that live in segments already deleted.
struct Replayer {
    state: Option<LogState>,
    cache_limit: usize,
    /// The real compaction point. While `phantom` is set, `state` pretends everything up to the
    /// phantom's end is compacted.
    compacted: (LogIndex, Term),
    /// Entries `(compacted, phantom]` were in segments before the first replayed one; a later
    /// compaction record must cover them.
    phantom: Option<LogIndex>,
    records: u64,
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::corrupt(0, reason)
}

impl Replayer {
    fn apply(&mut self, record: Record, seq: u64, offset: u64, len: usize) -> Result<()> {
        self.records += 1;
        let Some(state) = self.state.as_mut() else {
            let Record::SegmentHeader(h) = record else {
                return Err(corrupt("segment does not start with a segment header"));
            };
            self.start(h, seq)?;
            return Ok(());
        };
        match record {
            Record::SegmentHeader(h) => {
                if h.segment != seq {
                    return Err(corrupt(format!(
                        "segment header names segment {}",
                        h.segment
                    )));
                }
                // A header repeats the state the replay must have reached: anything else means a
                // segment was lost or reordered.
                let compacted = match self.phantom {
                    None => state.compacted().0,
                    Some(_) => self.compacted.0,
                };
                if h.last_index != state.last_index() || h.compacted_index != compacted {
                    return Err(corrupt(format!(
                        "segment header says last index {} and compaction point {}, replay of the \
                         earlier segments reached {} and {}",
                        h.last_index,
                        h.compacted_index,
                        state.last_index(),
                        compacted
                    )));
                }
                state.set_hard_state(h.hard_state);
            }
            Record::Entries(entries) => {
                let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
                    return Err(corrupt("empty entries record"));
                };
                if first.index != state.last_index().next() {
                    return Err(corrupt(format!(
                        "entries record starts at index {} but the log ends at {}",
                        first.index,
                        state.last_index()
                    )));
                }
                check_run(&entries, state.last_term())?;
                let pos = RecordPos {
                    first: first.index,
                    count: entries.len() as u32,
                    segment: seq,
                    offset,
                    len: len as u32,
                };
                debug_assert!(last.index >= first.index);
                state.append(entries, &[pos]);
            }
            Record::HardState(hs) => state.set_hard_state(hs),
            Record::Truncate(from) => {
                if from > state.last_index().next() {
                    return Err(corrupt(format!(
                        "truncate from {from} beyond the end of the log ({})",
                        state.last_index()
                    )));
                }
                if from > state.compacted().0 {
                    state.truncate(from);
                } else if self.phantom.is_some() && from > self.compacted.0 {
                    // The truncation reaches into entries of deleted segments: they are gone, and
                    // so is the need for a compaction to cover them beyond `from - 1`.
                    let hs = state.hard_state();
                    if from.prev() == self.compacted.0 {
                        self.phantom = None;
                        *state = LogState::new(self.compacted, hs, self.cache_limit);
                    } else {
                        // The term of `from - 1` is in a deleted segment; it is never read,
                        // because a later compaction must cover it (checked after replay).
                        self.phantom = Some(from.prev());
                        *state = LogState::new((from.prev(), Term(0)), hs, self.cache_limit);
                    }
                } else {
                    return Err(corrupt(format!(
                        "truncate from {from} at or below the compaction point {}",
                        self.compacted.0
                    )));
                }
            }
            Record::Compact(index, term) => match self.phantom {
                Some(end) if index < end => {
                    if index > self.compacted.0 {
                        self.compacted = (index, term);
                    }
                }
                Some(end) => {
                    self.phantom = None;
                    self.compacted = (index, term);
                    if index == end {
                        // The pretend compaction point becomes the real one, with its term.
                        state.set_compacted_term(term);
                    } else {
                        state.compact(index, term);
                    }
                }
                None => {
                    state.compact(index, term);
                    self.compacted = state.compacted();
                }
            },
        }
        Ok(())
    }

    fn start(&mut self, h: SegmentHeader, seq: u64) -> Result<()> {
        if h.segment != seq {
            return Err(corrupt(format!(
                "segment header names segment {}",
                h.segment
            )));
        }
        if h.last_index < h.compacted_index {
            return Err(corrupt(format!(
                "segment header: last index {} below compaction point {}",
                h.last_index, h.compacted_index
            )));
        }
        self.compacted = (h.compacted_index, h.compacted_term);
        let state = if h.last_index > h.compacted_index {
            self.phantom = Some(h.last_index);
            LogState::new((h.last_index, h.last_term), h.hard_state, self.cache_limit)
        } else {
            LogState::new(self.compacted, h.hard_state, self.cache_limit)
        };
        self.state = Some(state);
        Ok(())
    }
}

/// Indices contiguous and terms never decreasing within `entries`, starting at or above
/// `prev_term`.
fn check_run(entries: &[Entry], prev_term: Term) -> Result<()> {
    let mut term = prev_term;
    let mut index = match entries.first() {
        Some(e) => e.index,
        None => return Ok(()),
    };
    for e in entries {
        if e.index != index {
            return Err(corrupt(format!(
                "entries record not contiguous: index {} where {index} was expected",
                e.index
            )));
        }
        if e.term < term {
            return Err(corrupt(format!(
                "entry {} has term {} below the previous term {term}",
                e.index, e.term
            )));
        }
        term = e.term;
        index = index.next();
    }
    Ok(())
}

/// How a segment's scan ended.
enum ScanEnd {
    /// A zero header (or too few bytes for a header) at this offset.
    Clean(usize),
    /// A frame that does not parse or verify at this offset.
    Bad(usize, Error),
}

/// What the scan of one segment learned besides where its records end.
struct Scanned {
    end: ScanEnd,
    /// The segment's header, if its first frame verified.
    header: Option<SegmentHeader>,
    /// Where the write holding the last whole record began (version 2 segments).
    write_start: Option<usize>,
}

impl Scanned {
    fn version(&self) -> u32 {
        self.header.map_or(WAL_FORMAT_VERSION, |h| h.version)
    }
}

/// Scan one segment's bytes, replaying every whole record. Returns where the records end.
fn scan(data: &[u8], seq: u64, path: &Path, replay: &mut Replayer) -> Result<Scanned> {
    let mut offset = 0usize;
    let mut header = None;
    let mut write_start = None;
    let end = loop {
        let Some(head) = data.get(offset..offset + FRAME_HEADER_BYTES) else {
            break ScanEnd::Clean(offset);
        };
        let mut head_bytes = [0u8; FRAME_HEADER_BYTES];
        head_bytes.copy_from_slice(head);
        let frame = match FrameHeader::parse(&head_bytes, MAX_FRAME_PAYLOAD_BYTES) {
            Ok(h) => h,
            Err(HeaderDefect::Zeroed) => break ScanEnd::Clean(offset),
            Err(defect) => break ScanEnd::Bad(offset, defect.into_error(0)),
        };
        let payload_start = offset + FRAME_HEADER_BYTES;
        let Some(payload) = data.get(payload_start..payload_start + frame.payload_len as usize)
        else {
            break ScanEnd::Bad(offset, corrupt("frame extends beyond the end of the file"));
        };
        match verify_frame(&frame, seq, payload) {
            Ok(()) => {}
            Err(e @ Error::UnsupportedVersion { .. }) => return Err(e),
            Err(e) => break ScanEnd::Bad(offset, e),
        }
        // The frame verified: from here on any defect is real corruption (or a writer bug),
        // wherever it is.
        let at = |e: Error| e.in_file(path, offset as u64);
        if (frame.kind == KIND_SEGMENT_HEADER) != (offset == 0) {
            return Err(at(corrupt(
                "a segment header is the first record of a segment and only there",
            )));
        }
        let version = header.map_or(WAL_FORMAT_VERSION, |h: SegmentHeader| h.version);
        let (record, write_offset) = decode_record(version, frame.kind, payload).map_err(at)?;
        if let Record::SegmentHeader(h) = record {
            header = Some(h);
        }
        if let Some(back) = write_offset {
            // A frame either starts a new write (right after the previous one ended) or
            // continues the write the frame before it belongs to.
            let start = offset.checked_sub(back as usize);
            if start != Some(offset) && (start.is_none() || start != write_start) {
                return Err(at(corrupt(format!(
                    "record says its write began {back} bytes before it, but the write of the \
                     record before it began at {write_start:?}"
                ))));
            }
            write_start = start;
        }
        let len = frame.frame_len();
        replay.apply(record, seq, offset as u64, len).map_err(at)?;
        offset += len;
    };
    Ok(Scanned {
        end,
        header,
        write_start,
    })
}

/// Offset one past the last non-zero byte at or after `from`, rounded up to the frame alignment
/// (and capped at the data length); `None` if all zero.
fn nonzero_end(data: &[u8], from: usize) -> Option<usize> {
    let tail = data.get(from..)?;
    let last = tail.iter().rposition(|&b| b != 0)?;
    Some(
        (from + last + 1)
            .next_multiple_of(FRAME_ALIGN)
            .min(data.len()),
    )
}

/// Decide whether the bytes of the last segment from `bad` on (where the records stop: a frame
/// that does not verify, or a zero header followed by non-zero bytes) can be a torn last write.
/// `Err` with the reason when a frame after `bad` shows that they cannot. `search_from` is where
/// to start looking for frames (8-byte aligned offsets up to the last non-zero byte).
fn check_torn(
    data: &[u8],
    bad: usize,
    search_from: usize,
    seq: u64,
    scanned: &Scanned,
) -> std::result::Result<(), String> {
    let Some(dirty_end) = nonzero_end(data, bad) else {
        return Ok(());
    };
    let mut at = search_from.next_multiple_of(FRAME_ALIGN);
    while at + FRAME_HEADER_BYTES <= dirty_end {
        let frame = match data.get(at..at + 2) {
            Some(magic) if magic == b"HV".as_slice() => {
                let rest = data.get(at..).unwrap_or_default();
                read_frame(rest, seq, MAX_FRAME_PAYLOAD_BYTES)
            }
            _ => Ok(None),
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Err(Error::UnsupportedVersion { .. }) => {
                return Err(format!(
                    "a frame of an unknown version follows at offset {at}"
                ))
            }
            _ => {
                at += FRAME_ALIGN;
                continue;
            }
        };
        if scanned.version() == WAL_FORMAT_V1 {
            return Err(format!(
                "a valid frame follows at offset {at}, so this is not a torn tail"
            ));
        }
        let Some(start) = peek_write_offset(frame.kind, frame.payload)
            .and_then(|back| at.checked_sub(usize::try_from(back).ok()?))
        else {
            return Err(format!(
                "a valid frame at offset {at} is not a record a write can leave there"
            ));
        };
        if start > bad {
            return Err(format!(
                "a valid frame follows at offset {at}, written by a later write (begun at \
                 {start}), so the write holding offset {bad} had been synced: this is not a torn \
                 tail"
            ));
        }
        if start != bad && Some(start) != scanned.write_start {
            return Err(format!(
                "a valid frame at offset {at} says its write began at {start}, which is neither \
                 where the last whole record's write began nor where the records stop"
            ));
        }
        // A frame of the torn write itself (a later page survived, an earlier one did not).
        at += frame.len.max(FRAME_ALIGN);
    }
    Ok(())
}

/// The largest a segment file may be: what its header says the writer made it (version 2), and
/// never more than `MAX_WAL_SEGMENT_BYTES`. Read from the file's first bytes only, before the
/// file is read whole.
fn segment_limit(file: &File, size: u64, seq: u64) -> u64 {
    let mut head = vec![0u8; (size.min(4096)) as usize];
    if file.read_exact_at(&mut head, 0).is_err() {
        return MAX_WAL_SEGMENT_BYTES;
    }
    let Ok(Some(frame)) = read_frame(&head, seq, MAX_FRAME_PAYLOAD_BYTES) else {
        return MAX_WAL_SEGMENT_BYTES;
    };
    match decode_record(WAL_FORMAT_VERSION, frame.kind, frame.payload) {
        Ok((Record::SegmentHeader(h), _)) if h.segment_bytes > 0 => {
            h.segment_bytes.min(MAX_WAL_SEGMENT_BYTES)
        }
        _ => MAX_WAL_SEGMENT_BYTES,
    }
}

/// Recover the log in `dir`. How large each segment file may be comes from its own header
/// (see `segment_limit`), so a bogus file cannot make recovery allocate without limit and a
/// segment written under a larger `segment_bytes` option is still read.
pub(crate) fn recover(dir: &Path, cache_limit: usize) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let mut seqs = Vec::new();
    let listing =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for item in listing {
        let item = item.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_segment_name(name) {
            seqs.push(seq);
        } else if name.ends_with(&format!(".{PREPARED_EXT}")) {
            // A prepared segment never used: its content is zeros, nothing to keep.
            let path = item.path();
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            report.removed_files.push(path);
        }
    }
    seqs.sort_unstable();
    // Replay starts after the last gap: segments before one were being deleted by a compaction.
    // Whether that is really so is checked after replay (every live entry must be found).
    let start = seqs
        .windows(2)
        .rposition(|w| w[1] != w[0] + 1)
        .map_or(0, |i| i + 1);
    let (garbage, live) = seqs.split_at(start);

    let mut replay = Replayer {
        state: None,
        cache_limit,
        compacted: (LogIndex(0), Term(0)),
        phantom: None,
        records: 0,
    };
    let mut segments = Vec::new();
    let mut zero_range: Option<(usize, usize)> = None;
    for (i, &seq) in live.iter().enumerate() {
        let is_last = i + 1 == live.len();
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("reading size of {}", path.display()), e))?
            .len();
        let limit = segment_limit(&file, size, seq);
        if size > limit {
            return Err(Error::corrupt(
                0,
                format!("segment is {size} bytes, over the {limit} its header allows"),
            )
            .in_file(&path, 0));
        }
        let data = read_all(&file, &path)?;
        let had_header = replay.state.is_some();
        let records_before = replay.records;
        let mut scanned = scan(&data, seq, &path, &mut replay)?;
        let scan_end = std::mem::replace(&mut scanned.end, ScanEnd::Clean(0));
        let end = match scan_end {
            ScanEnd::Clean(end) => match nonzero_end(&data, end) {
                None => end,
                Some(dirty_end) => {
                    if !is_last {
                        let first = data
                            .get(end..)
                            .and_then(|t| t.iter().position(|&b| b != 0))
                            .map_or(end, |p| end + p);
                        return Err(Error::corrupt(
                            first as u64,
                            "non-zero bytes after the last record of a sealed segment",
                        )
                        .in_file(&path, 0));
                    }
                    if let Err(why) = check_torn(&data, end, end + FRAME_ALIGN, seq, &scanned) {
                        return Err(Error::corrupt(
                            end as u64,
                            format!("zero frame header: {why}"),
                        )
                        .in_file(&path, 0));
                    }
                    zero_range = Some((end, dirty_end));
                    end
                }
            },
            ScanEnd::Bad(at, err) => {
                if !is_last {
                    return Err(err.in_file(&path, at as u64));
                }
                if let Err(why) = check_torn(&data, at, at + FRAME_ALIGN, seq, &scanned) {
                    let reason = match err {
                        Error::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    return Err(
                        Error::corrupt(at as u64, format!("{reason}; {why}")).in_file(&path, 0)
                    );
                }
                let dirty_end = nonzero_end(&data, at).unwrap_or(at);
                zero_range = Some((at, dirty_end));
                at
            }
        };
        if replay.records == records_before && !is_last {
            return Err(Error::corrupt(0, "sealed segment holds no record").in_file(&path, 0));
        }
        if !had_header && replay.state.is_none() && seq != 1 {
            return Err(Error::corrupt(
                0,
                "the only segment has no header, but it is not the first segment of a log",
            )
            .in_file(&path, 0));
        }
        let start_last = match scanned.header {
            Some(h) if replay.records > records_before => Some(h.last_index),
            _ => None,
        };
        segments.push(RecoveredSegment {
            seq,
            path,
            file: Arc::new(file),
            version: scanned.version(),
            start_last,
            size,
            end: end as u64,
        });
    }

    if let (Some(first), Some(end)) = (segments.first(), replay.phantom) {
        // A phantom is only ever left in place while the real compaction point is below its end.
        return Err(Error::corrupt(
            0,
            format!(
                "entries {}..={end} are in segments before this one that are missing",
                replay.compacted.0.next()
            ),
        )
        .in_file(&first.path, 0));
    }
    let state = replay.state.take().unwrap_or_else(|| {
        LogState::new((LogIndex(0), Term(0)), HardState::default(), cache_limit)
    });
    state.check_invariants();

    // Cut the torn tail only now that everything else verified.
    if let (Some((from, to)), Some(last)) = (zero_range, segments.last()) {
        if to > from {
            let zeros = vec![0u8; to - from];
            last.file
                .write_all_at(&zeros, from as u64)
                .and_then(|()| last.file.sync_data())
                .map_err(|e| {
                    Error::io(
                        format!("zeroing the torn tail of {}", last.path.display()),
                        e,
                    )
                })?;
        }
        report.torn_tail = Some(TornTail {
            file: last.path.clone(),
            offset: from as u64,
            bytes_dropped: (to - from) as u64,
        });
    }
    for &seq in garbage {
        let path = segment_path(dir, seq);
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        report.removed_files.push(path);
    }
    report.segments_replayed = segments.len();
    report.records_replayed = replay.records;
    report.live_entries = state.last_index().0 - state.compacted().0 .0;
    Ok(Recovered {
        state,
        segments,
        report,
    })
}
