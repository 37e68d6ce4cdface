//! WAL record types and their encoding. Each record is one codec frame (see `docs/FORMAT.md`,
//! "WAL records"); the frame's `kind` byte says which record it is and the checksum salt is the
//! segment number.

use crate::codec::{append_frame, decode_value};
use crate::error::{Error, Result};
use crate::types::{Entry, HardState, LogIndex, Term};
use bincode::{Decode, Encode};

/// Version of the WAL record layout (the set of record kinds and their payloads). It is the first
/// field of every segment header, so a segment written by a newer build is refused as a whole.
pub const WAL_FORMAT_VERSION: u32 = 1;

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

/// Append the frame of a segment header to `out`.
pub(crate) fn append_segment_header(out: &mut Vec<u8>, header: &SegmentHeader) -> Result<usize> {
    append_frame(out, KIND_SEGMENT_HEADER, header.segment, header)
}

/// Append an entries record to `out`.
pub(crate) fn append_entries(out: &mut Vec<u8>, salt: u64, entries: &[Entry]) -> Result<usize> {
    append_frame(out, KIND_ENTRIES, salt, &entries)
}

/// Append a hard-state record to `out`.
pub(crate) fn append_hard_state(out: &mut Vec<u8>, salt: u64, hs: &HardState) -> Result<usize> {
    append_frame(out, KIND_HARD_STATE, salt, hs)
}

/// Append a truncate-suffix record to `out`.
pub(crate) fn append_truncate(out: &mut Vec<u8>, salt: u64, from: LogIndex) -> Result<usize> {
    append_frame(out, KIND_TRUNCATE, salt, &from)
}

/// Append a compaction record to `out`.
pub(crate) fn append_compact(
    out: &mut Vec<u8>,
    salt: u64,
    index: LogIndex,
    term: Term,
) -> Result<usize> {
    append_frame(out, KIND_COMPACT, salt, &(index, term))
}

/// Decode a verified frame's payload. Offsets in errors are relative to the payload; the caller
/// adds the file and the frame's position.
pub(crate) fn decode_record(kind: u8, payload: &[u8]) -> Result<Record> {
    match kind {
        KIND_SEGMENT_HEADER => {
            // The version is a varint and versions are small (< 251), so it is the first byte.
            // Checking it before decoding the rest tells a newer layout from a corrupt one.
            match payload.first() {
                Some(&v) if u32::from(v) == WAL_FORMAT_VERSION => {}
                Some(&v) => {
                    return Err(Error::UnsupportedVersion {
                        what: "wal segment",
                        found: u32::from(v),
                        supported: WAL_FORMAT_VERSION,
                    })
                }
                None => return Err(Error::corrupt(0, "empty segment header")),
            }
            Ok(Record::SegmentHeader(decode_value(payload)?))
        }
        KIND_ENTRIES => Ok(Record::Entries(decode_value(payload)?)),
        KIND_HARD_STATE => Ok(Record::HardState(decode_value(payload)?)),
        KIND_TRUNCATE => Ok(Record::Truncate(decode_value(payload)?)),
        KIND_COMPACT => {
            let (index, term): (LogIndex, Term) = decode_value(payload)?;
            Ok(Record::Compact(index, term))
        }
        other => Err(Error::corrupt(
            0,
            format!("unknown wal record kind {other}"),
        )),
    }
}

/// Upper bound of the frame length of an entries record holding entries whose payload sizes sum
/// to `data_bytes`, `count` entries in all.
pub(crate) fn entries_frame_bound(count: usize, data_bytes: usize) -> usize {
    crate::codec::frame_len(VEC_LEN_BOUND + count * ENTRY_OVERHEAD_BOUND + data_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::read_frame;
    use crate::limits::MAX_FRAME_PAYLOAD_BYTES;
    use crate::types::{EntryKind, GroupId, NodeId};

    fn round_trip(buf: &[u8], salt: u64) -> Record {
        let frame = read_frame(buf, salt, MAX_FRAME_PAYLOAD_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(frame.len, buf.len());
        decode_record(frame.kind, frame.payload).unwrap()
    }

    #[test]
    fn every_record_kind_round_trips() {
        let header = SegmentHeader {
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
        };
        let mut buf = Vec::new();
        append_segment_header(&mut buf, &header).unwrap();
        assert_eq!(round_trip(&buf, 7), Record::SegmentHeader(header));

        let entries = vec![Entry {
            group: GroupId(0),
            term: Term(u64::MAX),
            index: LogIndex(u64::MAX),
            kind: EntryKind::Membership,
            data: vec![5; 300],
        }];
        let mut buf = Vec::new();
        let len = append_entries(&mut buf, 3, &entries).unwrap();
        assert!(len <= entries_frame_bound(1, 300), "bound {len}");
        assert_eq!(round_trip(&buf, 3), Record::Entries(entries));

        let mut buf = Vec::new();
        append_hard_state(&mut buf, 3, &header.hard_state).unwrap();
        assert_eq!(round_trip(&buf, 3), Record::HardState(header.hard_state));

        let mut buf = Vec::new();
        append_truncate(&mut buf, 3, LogIndex(9)).unwrap();
        assert_eq!(round_trip(&buf, 3), Record::Truncate(LogIndex(9)));

        let mut buf = Vec::new();
        append_compact(&mut buf, 3, LogIndex(9), Term(4)).unwrap();
        assert_eq!(round_trip(&buf, 3), Record::Compact(LogIndex(9), Term(4)));
    }

    #[test]
    fn newer_segment_header_version_is_unsupported() {
        let mut payload = crate::codec::encode_value(&SegmentHeader {
            version: WAL_FORMAT_VERSION + 1,
            segment: 1,
            compacted_index: LogIndex(0),
            compacted_term: Term(0),
            last_index: LogIndex(0),
            last_term: Term(0),
            hard_state: HardState::default(),
        })
        .unwrap();
        assert!(matches!(
            decode_record(KIND_SEGMENT_HEADER, &payload),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        payload.clear();
        assert!(matches!(
            decode_record(KIND_SEGMENT_HEADER, &payload),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn unknown_kind_is_corrupt() {
        assert!(matches!(
            decode_record(99, &[0]),
            Err(Error::Corrupt { .. })
        ));
    }
}
