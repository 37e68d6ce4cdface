//! WAL record types and their encoding. Each record is one codec frame (see `docs/FORMAT.md`,
//! "WAL records"); the frame's `kind` byte says which record it is and the checksum salt is the
//! segment number.

use crate::codec::{append_frame, decode_value};
use crate::error::{Error, Result};
use crate::types::{Entry, HardState, LogIndex, Term};
use bincode::{Decode, Encode};

/// Version of the WAL record layout (the set of record kinds and their payloads). It is the first
/// field of every segment header, so a segment written by a newer build is refused as a whole.
///
/// Version 2 added the write offset in front of every record but the segment header (so that
/// recovery can tell a torn last write from damage to a synced one) and `segment_bytes` to the
/// segment header. Version 1 segments are still read (see [`WAL_FORMAT_V1`]).
pub const WAL_FORMAT_VERSION: u32 = 2;
/// The first format: records without a write offset, headers without `segment_bytes`. Read,
/// never written; a log whose last segment is version 1 continues in a new segment.
pub(crate) const WAL_FORMAT_V1: u32 = 1;

/// The first record of every segment: the log's state at the moment the segment was started.
pub(crate) const KIND_SEGMENT_HEADER: u8 = 1;
/// A run of contiguous entries.
pub(crate) const KIND_ENTRIES: u8 = 2;
/// The Raft hard state (term, vote, commit).
pub(crate) const KIND_HARD_STATE: u8 = 3;
/// Discard every entry with index >= the given index.
pub(crate) const KIND_TRUNCATE: u8 = 4;
/// Everything <= (index, term) is covered by a snapshot.
pub(crate) const KIND_COMPACT: u8 = 5;

/// Upper bound of the bincode encoding of one entry beyond its payload bytes: group (<= 5 bytes),
/// term, index (<= 9 each), kind (1), payload length (<= 9).
pub(crate) const ENTRY_OVERHEAD_BOUND: usize = 5 + 9 + 9 + 1 + 9;
/// Upper bound of the bincode encoding of an entry vector's length prefix.
pub(crate) const VEC_LEN_BOUND: usize = 9;
/// Upper bound of the bincode encoding of a record's write offset (a u64 varint).
pub(crate) const WRITE_OFFSET_BOUND: usize = 9;

/// The log's state when a segment was started. Because every segment repeats it, the segments
/// before a compaction point can be deleted without losing the hard state or the compaction
/// point, and recovery can start at the oldest segment that is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(crate) struct SegmentHeader {
    /// [`WAL_FORMAT_VERSION`] of the writer. Must stay the first field (see `decode_record`).
    pub version: u32,
    /// The segment's own number (equal to the number in its file name and to the salt).
    pub segment: u64,
    /// Compaction point: index.
    pub compacted_index: LogIndex,
    /// Compaction point: term.
    pub compacted_term: Term,
    /// Last index of the log when the segment was started.
    pub last_index: LogIndex,
    /// Term of that last entry (the compaction term when the log was empty).
    pub last_term: Term,
    /// Hard state when the segment was started.
    pub hard_state: HardState,
    /// Size of the segment file as the writer made it: the largest this file may be when it is
    /// read (0 in a version 1 header, which did not record it).
    pub segment_bytes: u64,
}

/// A version 1 segment header: [`SegmentHeader`] without `segment_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
struct SegmentHeaderV1 {
    version: u32,
    segment: u64,
    compacted_index: LogIndex,
    compacted_term: Term,
    last_index: LogIndex,
    last_term: Term,
    hard_state: HardState,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    SegmentHeader(SegmentHeader),
    Entries(Vec<Entry>),
    HardState(HardState),
    Truncate(LogIndex),
    Compact(LogIndex, Term),
}

/// Append the frame of a segment header to `out` (always the first bytes of a segment's first
/// write, so it needs no write offset).
pub(crate) fn append_segment_header(out: &mut Vec<u8>, header: &SegmentHeader) -> Result<usize> {
    append_frame(out, KIND_SEGMENT_HEADER, header.segment, header)
}

// Every other record starts with its write offset: how many bytes into the write (the one
// `pwrite` that is followed by one fdatasync) that carries it the frame starts. The writer
// appends a write's frames to one buffer, so that is the buffer's length at the time.

/// Append an entries record to `out`, whose length is the write offset.
pub(crate) fn append_entries(out: &mut Vec<u8>, salt: u64, entries: &[Entry]) -> Result<usize> {
    let at = out.len() as u64;
    append_frame(out, KIND_ENTRIES, salt, &(at, entries))
}

/// Append a hard-state record to `out`, whose length is the write offset.
pub(crate) fn append_hard_state(out: &mut Vec<u8>, salt: u64, hs: &HardState) -> Result<usize> {
    let at = out.len() as u64;
    append_frame(out, KIND_HARD_STATE, salt, &(at, hs))
}

/// Append a truncate-suffix record to `out`, whose length is the write offset.
pub(crate) fn append_truncate(out: &mut Vec<u8>, salt: u64, from: LogIndex) -> Result<usize> {
    let at = out.len() as u64;
    append_frame(out, KIND_TRUNCATE, salt, &(at, from))
}

/// Append a compaction record to `out`, whose length is the write offset.
pub(crate) fn append_compact(
    out: &mut Vec<u8>,
    salt: u64,
    index: LogIndex,
    term: Term,
) -> Result<usize> {
    let at = out.len() as u64;
    append_frame(out, KIND_COMPACT, salt, &(at, index, term))
}

/// The version a segment header payload declares, checked before the rest is decoded: it is a
/// varint and versions are small (< 251), so it is the payload's first byte. This tells a newer
/// layout (`UnsupportedVersion`) from a corrupt one.
fn header_version(payload: &[u8]) -> Result<u32> {
    match payload.first() {
        Some(&v) if u32::from(v) == WAL_FORMAT_VERSION || u32::from(v) == WAL_FORMAT_V1 => {
            Ok(u32::from(v))
        }
        Some(&v) => Err(Error::UnsupportedVersion {
            what: "wal segment",
            found: u32::from(v),
            supported: WAL_FORMAT_VERSION,
        }),
        None => Err(Error::corrupt(0, "empty segment header")),
    }
}

/// A decoded record and its write offset (`None` in a version 1 segment, 0 for a header).
pub(crate) type Decoded = (Record, Option<u64>);

/// Decode a verified frame's payload, found in a segment of format `version` (a segment header
/// declares its own). Offsets in errors are relative to the payload; the caller adds the file
/// and the frame's position.
pub(crate) fn decode_record(version: u32, kind: u8, payload: &[u8]) -> Result<Decoded> {
    if kind == KIND_SEGMENT_HEADER {
        let header = match header_version(payload)? {
            WAL_FORMAT_V1 => {
                let h: SegmentHeaderV1 = decode_value(payload)?;
                SegmentHeader {
                    version: h.version,
                    segment: h.segment,
                    compacted_index: h.compacted_index,
                    compacted_term: h.compacted_term,
                    last_index: h.last_index,
                    last_term: h.last_term,
                    hard_state: h.hard_state,
                    segment_bytes: 0,
                }
            }
            _ => decode_value(payload)?,
        };
        return Ok((Record::SegmentHeader(header), Some(0)));
    }
    if version == WAL_FORMAT_V1 {
        let record = match kind {
            KIND_ENTRIES => Record::Entries(decode_value(payload)?),
            KIND_HARD_STATE => Record::HardState(decode_value(payload)?),
            KIND_TRUNCATE => Record::Truncate(decode_value(payload)?),
            KIND_COMPACT => {
                let (index, term): (LogIndex, Term) = decode_value(payload)?;
                Record::Compact(index, term)
            }
            other => return Err(unknown_kind(other)),
        };
        return Ok((record, None));
    }
    let (at, record) = match kind {
        KIND_ENTRIES => {
            let (at, entries): (u64, Vec<Entry>) = decode_value(payload)?;
            (at, Record::Entries(entries))
        }
        KIND_HARD_STATE => {
            let (at, hs): (u64, HardState) = decode_value(payload)?;
            (at, Record::HardState(hs))
        }
        KIND_TRUNCATE => {
            let (at, from): (u64, LogIndex) = decode_value(payload)?;
            (at, Record::Truncate(from))
        }
        KIND_COMPACT => {
            let (at, index, term): (u64, LogIndex, Term) = decode_value(payload)?;
            (at, Record::Compact(index, term))
        }
        other => return Err(unknown_kind(other)),
    };
    Ok((record, Some(at)))
}

fn unknown_kind(kind: u8) -> Error {
    Error::corrupt(0, format!("unknown wal record kind {kind}"))
}

/// The write offset of a verified version 2 record frame, read from the front of its payload
/// without decoding the rest (recovery looks at frames past a torn spot this way). `None` for a
/// segment header (which is only ever at offset 0) or bytes that do not hold one.
pub(crate) fn peek_write_offset(kind: u8, payload: &[u8]) -> Option<u64> {
    if kind == KIND_SEGMENT_HEADER {
        return None;
    }
    // bincode's varint: < 251 is the value; 251, 252, 253 prefix a u16, u32, u64 (little endian).
    let (&tag, rest) = payload.split_first()?;
    let wide = |n: usize| -> Option<u64> {
        let bytes = rest.get(..n)?;
        let mut le = [0u8; 8];
        le.get_mut(..n)?.copy_from_slice(bytes);
        Some(u64::from_le_bytes(le))
    };
    match tag {
        0..=250 => Some(u64::from(tag)),
        251 => wide(2),
        252 => wide(4),
        253 => wide(8),
        _ => None,
    }
}

/// Upper bound of the frame length of an entries record holding entries whose payload sizes sum
/// to `data_bytes`, `count` entries in all.
pub(crate) fn entries_frame_bound(count: usize, data_bytes: usize) -> usize {
    crate::codec::frame_len(
        WRITE_OFFSET_BOUND + VEC_LEN_BOUND + count * ENTRY_OVERHEAD_BOUND + data_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{append_raw_frame, encode_value, read_frame};
    use crate::limits::MAX_FRAME_PAYLOAD_BYTES;
    use crate::types::{EntryKind, GroupId, NodeId};

    fn round_trip(buf: &[u8], salt: u64) -> Decoded {
        let frame = read_frame(buf, salt, MAX_FRAME_PAYLOAD_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(frame.len, buf.len());
        decode_record(WAL_FORMAT_VERSION, frame.kind, frame.payload).unwrap()
    }

    fn header() -> SegmentHeader {
        SegmentHeader {
            version: WAL_FORMAT_VERSION,
            segment: 7,
            compacted_index: LogIndex(10),
            compacted_term: Term(2),
            last_index: LogIndex(20),
            last_term: Term(3),
            hard_state: HardState {
                term: Term(3),
                vote: Some(NodeId(2)),
                commit: LogIndex(15),
            },
            segment_bytes: 1 << 26,
        }
    }

    #[test]
    fn every_record_kind_round_trips_with_its_write_offset() {
        let header = header();
        let mut buf = Vec::new();
        append_segment_header(&mut buf, &header).unwrap();
        assert_eq!(
            round_trip(&buf, 7),
            (Record::SegmentHeader(header), Some(0))
        );

        let entries = vec![Entry {
            group: GroupId(0),
            term: Term(u64::MAX),
            index: LogIndex(u64::MAX),
            kind: EntryKind::Membership,
            data: vec![5; 300],
        }];
        // Records appended behind others carry the length of what is before them.
        let mut buf = vec![0u8; 4000];
        let len = append_entries(&mut buf, 3, &entries).unwrap();
        assert!(len <= entries_frame_bound(1, 300), "bound {len}");
        let frame = buf.split_off(4000);
        assert_eq!(
            round_trip(&frame, 3),
            (Record::Entries(entries), Some(4000))
        );
        let payload = &frame[crate::codec::FRAME_HEADER_BYTES..];
        assert_eq!(peek_write_offset(KIND_ENTRIES, payload), Some(4000));

        let mut buf = Vec::new();
        append_hard_state(&mut buf, 3, &header.hard_state).unwrap();
        assert_eq!(
            round_trip(&buf, 3),
            (Record::HardState(header.hard_state), Some(0))
        );

        let mut buf = vec![0u8; 8];
        append_truncate(&mut buf, 3, LogIndex(9)).unwrap();
        assert_eq!(
            round_trip(&buf.split_off(8), 3),
            (Record::Truncate(LogIndex(9)), Some(8))
        );

        let mut buf = Vec::new();
        append_compact(&mut buf, 3, LogIndex(9), Term(4)).unwrap();
        assert_eq!(
            round_trip(&buf, 3),
            (Record::Compact(LogIndex(9), Term(4)), Some(0))
        );
    }

    #[test]
    fn small_records_fit_the_writer_bounds() {
        let big = HardState {
            term: Term(u64::MAX),
            vote: Some(NodeId(u64::MAX)),
            commit: LogIndex(u64::MAX),
        };
        let mut buf = vec![0u8; 1 << 20];
        let at = buf.len();
        let len = append_hard_state(&mut buf, 1, &big).unwrap()
            + append_compact(&mut buf, 1, LogIndex(u64::MAX), Term(u64::MAX)).unwrap();
        assert_eq!(buf.len() - at, len);
        assert!(len <= 2 * 64);
        let mut buf = Vec::new();
        let h = SegmentHeader {
            segment: u64::MAX,
            compacted_index: LogIndex(u64::MAX),
            compacted_term: Term(u64::MAX),
            last_index: LogIndex(u64::MAX),
            last_term: Term(u64::MAX),
            hard_state: big,
            segment_bytes: u64::MAX,
            ..header()
        };
        assert!(append_segment_header(&mut buf, &h).unwrap() <= 128);
    }

    /// Version 1 segments (no write offsets, no `segment_bytes`) are still read.
    #[test]
    fn version_1_records_decode() {
        let h = header();
        let v1 = (
            WAL_FORMAT_V1,
            h.segment,
            h.compacted_index,
            h.compacted_term,
            h.last_index,
            h.last_term,
            h.hard_state,
        );
        let mut buf = Vec::new();
        append_raw_frame(
            &mut buf,
            KIND_SEGMENT_HEADER,
            7,
            &encode_value(&v1).unwrap(),
        )
        .unwrap();
        let expect = SegmentHeader {
            version: WAL_FORMAT_V1,
            segment_bytes: 0,
            ..h
        };
        assert_eq!(
            round_trip(&buf, 7),
            (Record::SegmentHeader(expect), Some(0))
        );
        let payload = encode_value(&(LogIndex(9), Term(4))).unwrap();
        assert_eq!(
            decode_record(WAL_FORMAT_V1, KIND_COMPACT, &payload).unwrap(),
            (Record::Compact(LogIndex(9), Term(4)), None)
        );
        let payload = encode_value(&h.hard_state).unwrap();
        assert_eq!(
            decode_record(WAL_FORMAT_V1, KIND_HARD_STATE, &payload).unwrap(),
            (Record::HardState(h.hard_state), None)
        );
    }

    #[test]
    fn newer_segment_header_version_is_unsupported() {
        let mut payload = crate::codec::encode_value(&SegmentHeader {
            version: WAL_FORMAT_VERSION + 1,
            ..header()
        })
        .unwrap();
        assert!(matches!(
            decode_record(WAL_FORMAT_VERSION, KIND_SEGMENT_HEADER, &payload),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
        payload.clear();
        assert!(matches!(
            decode_record(WAL_FORMAT_VERSION, KIND_SEGMENT_HEADER, &payload),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn unknown_kind_is_corrupt() {
        for version in [WAL_FORMAT_V1, WAL_FORMAT_VERSION] {
            assert!(matches!(
                decode_record(version, 99, &[0]),
                Err(Error::Corrupt { .. })
            ));
        }
    }
}
