//! The snapshot format: the whole state machine as one self-checking byte stream, written to
//! any `std::io::Write` and read from any `std::io::Read`. Files (temporary name, fsync, rename,
//! listing, pruning) are not this module's business: `src/snapshots.rs` keeps them in
//! `DATA_DIR/snap/`, since `src/sm` does no IO of its own (sled does its own).
//!
//! A snapshot is a stream of codec frames (salted with [`SNAPSHOT_SALT`]): one header frame, any
//! number of record frames carrying the raw (key, value) pairs of the state tree in key order,
//! and one trailer frame with the record count and a sha256 over every byte before the trailer.
//! `docs/FORMAT.md` ("Snapshot file") gives the bytes.

use super::layout::{
    check_pair, decode_record, AppliedRecord, Pairs, KEY_APPLIED, KEY_LAYOUT, LAYOUT_VERSION,
    OLDEST_LAYOUT_VERSION,
};
use crate::codec::{append_frame, verify_frame, FrameHeader, FRAME_HEADER_BYTES};
use crate::error::{Error, Result};
use crate::limits::{MAX_FRAME_PAYLOAD_BYTES, SNAPSHOT_CHUNK_BYTES};
use crate::types::{LogIndex, Term};
use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// The snapshot format version this build writes and the newest it reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// The frame salt of snapshot streams (ASCII "HVSNAP01" read as a little-endian u64), so that a
/// WAL frame (salted with its small segment number) never verifies inside a snapshot.
pub const SNAPSHOT_SALT: u64 = u64::from_le_bytes(*b"HVSNAP01");

const KIND_HEADER: u8 = 1;
const KIND_RECORDS: u8 = 2;
const KIND_TRAILER: u8 = 3;

/// What a snapshot stream holds, as its header and trailer state it (`src/snapshots.rs` adds
/// where the file is: `SnapshotFile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotSummary {
    /// The last log index the snapshot includes.
    pub(crate) index: LogIndex,
    /// The term of that entry.
    pub(crate) term: Term,
    /// Stream size in bytes.
    pub(crate) size: u64,
    /// sha256 over the stream's bytes before the trailer frame.
    pub(crate) sha256: [u8; 32],
}

#[derive(Debug, Encode, Decode)]
struct SnapshotHeader {
    format_version: u32,
    layout_version: u32,
    index: LogIndex,
    term: Term,
}

#[derive(Debug, Encode, Decode)]
struct SnapshotTrailer {
    records: u64,
    sha256: [u8; 32],
}

/// Counts and hashes what goes into the stream.
struct HashingWriter<W> {
    out: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn write(&mut self, bytes: &[u8], hashed: bool) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("writing snapshot", e))?;
        if hashed {
            self.hasher.update(bytes);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }
}

/// Write `pairs` (a consistent state at `index`/`term` of state layout `layout`, in key order:
/// the caller applies nothing meanwhile) as a snapshot stream to `out`. Returns what the stream
/// holds; `out` is flushed, making it durable is the caller's business.
pub(crate) fn write_snapshot(
    pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    index: LogIndex,
    term: Term,
    layout: u32,
    out: impl Write,
) -> Result<SnapshotSummary> {
    let mut out = HashingWriter {
        out,
        hasher: Sha256::new(),
        size: 0,
    };
    let mut frame = Vec::new();
    let header = SnapshotHeader {
        format_version: SNAPSHOT_FORMAT_VERSION,
        layout_version: layout,
        index,
        term,
    };
    append_frame(&mut frame, KIND_HEADER, SNAPSHOT_SALT, &header)?;
    out.write(&frame, true)?;

    let mut records = 0u64;
    let mut chunk: Pairs = Vec::new();
    let mut chunk_bytes = 0usize;
    for item in pairs {
        let (key, value) = item?;
        chunk_bytes += key.len() + value.len();
        chunk.push((key, value));
        records += 1;
        if chunk_bytes >= SNAPSHOT_CHUNK_BYTES {
            frame.clear();
            append_frame(&mut frame, KIND_RECORDS, SNAPSHOT_SALT, &chunk)?;
            out.write(&frame, true)?;
            chunk.clear();
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        frame.clear();
        append_frame(&mut frame, KIND_RECORDS, SNAPSHOT_SALT, &chunk)?;
        out.write(&frame, true)?;
    }

    let sha256: [u8; 32] = out.hasher.clone().finalize().into();
    frame.clear();
    append_frame(
        &mut frame,
        KIND_TRAILER,
        SNAPSHOT_SALT,
        &SnapshotTrailer { records, sha256 },
    )?;
    out.write(&frame, false)?;
    out.out
        .flush()
        .map_err(|e| Error::io("writing snapshot", e))?;
    Ok(SnapshotSummary {
        index,
        term,
        size: out.size,
        sha256,
    })
}

/// One verified frame read from a stream.
struct RawFrame {
    kind: u8,
    payload: Vec<u8>,
    offset: u64,
}

/// Reads frames from a byte stream, verifying each and hashing every frame that is not a
/// trailer.
struct FrameReader<R> {
    inner: R,
    offset: u64,
    hasher: Sha256,
}

impl<R: Read> FrameReader<R> {
    /// Fill `buf` as far as the stream allows; returns how many bytes were read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading snapshot", e)),
            }
        }
        Ok(filled)
    }

    /// The next frame, or `None` at a clean end of stream.
    fn next_frame(&mut self) -> Result<Option<RawFrame>> {
        let offset = self.offset;
        let mut head = [0u8; FRAME_HEADER_BYTES];
        match self.read_full(&mut head)? {
            0 => return Ok(None),
            FRAME_HEADER_BYTES => {}
            _ => {
                return Err(Error::corrupt(
                    offset,
                    "snapshot truncated inside a frame header",
                ))
            }
        }
        let header = FrameHeader::parse(&head, MAX_FRAME_PAYLOAD_BYTES)
            .map_err(|defect| defect.into_error(offset))?;
        // The length was checked against the limit by `parse`, before this allocation.
        let mut body = vec![0u8; header.frame_len() - FRAME_HEADER_BYTES];
        if self.read_full(&mut body)? != body.len() {
            return Err(Error::corrupt(offset, "snapshot truncated inside a frame"));
        }
        let payload_len = header.payload_len as usize;
        if body[payload_len..].iter().any(|&b| b != 0) {
            return Err(Error::corrupt(offset, "non-zero frame padding"));
        }
        verify_frame(&header, SNAPSHOT_SALT, &body[..payload_len])
            .map_err(|e| e.map_corrupt(|_, reason| (offset, reason)))?;
        if header.kind != KIND_TRAILER {
            self.hasher.update(head);
            self.hasher.update(&body);
        }
        self.offset += header.frame_len() as u64;
        body.truncate(payload_len);
        Ok(Some(RawFrame {
            kind: header.kind,
            payload: body,
            offset,
        }))
    }
}

fn decode_at<T: Decode<()>>(frame: &RawFrame, what: &str) -> Result<T> {
    crate::codec::decode_value(&frame.payload).map_err(|e| {
        e.map_corrupt(|_, reason| (frame.offset, format!("snapshot {what}: {reason}")))
    })
}

/// Read and verify a snapshot stream from start to end, handing each verified record frame's
/// pairs to `sink` in order. Every frame's crc, the key order, every record and the trailer's
/// sha256 and count are checked; the sha256 can only be checked at the end, so a caller that must
/// not act on unverified bytes reads the stream twice (see `StateMachine::restore_verified`).
pub(crate) fn read_snapshot(
    input: impl Read,
    mut sink: impl FnMut(Pairs) -> Result<()>,
) -> Result<SnapshotSummary> {
    read_snapshot_inner(
        &mut FrameReader {
            inner: input,
            offset: 0,
            hasher: Sha256::new(),
        },
        &mut sink,
    )
}

fn read_snapshot_inner<R: Read>(
    reader: &mut FrameReader<R>,
    sink: &mut dyn FnMut(Pairs) -> Result<()>,
) -> Result<SnapshotSummary> {
    let Some(first) = reader.next_frame()? else {
        return Err(Error::corrupt(0, "empty snapshot file"));
    };
    if first.kind != KIND_HEADER {
        return Err(Error::corrupt(
            0,
            "snapshot does not start with a header frame",
        ));
    }
    let header: SnapshotHeader = decode_at(&first, "header")?;
    if header.format_version > SNAPSHOT_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "snapshot",
            found: header.format_version,
            supported: SNAPSHOT_FORMAT_VERSION,
        });
    }
    if header.format_version == 0 {
        return Err(Error::corrupt(0, "snapshot format version 0"));
    }
    if header.layout_version > LAYOUT_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "state layout",
            found: header.layout_version,
            supported: LAYOUT_VERSION,
        });
    }
    if header.layout_version < OLDEST_LAYOUT_VERSION {
        return Err(Error::corrupt(
            0,
            "snapshot has an unknown state layout version",
        ));
    }

    let mut records = 0u64;
    let mut last_key: Option<Vec<u8>> = None;
    let mut saw_applied = false;
    let mut saw_layout = false;
    let trailer = loop {
        let Some(frame) = reader.next_frame()? else {
            return Err(Error::corrupt(
                reader.offset,
                "snapshot truncated: no trailer frame",
            ));
        };
        match frame.kind {
            KIND_RECORDS => {
                let pairs: Pairs = decode_at(&frame, "records")?;
                for (key, value) in &pairs {
                    let bad = |reason: String| Error::corrupt(frame.offset, reason);
                    if last_key.as_ref().is_some_and(|last| last >= key) {
                        return Err(bad("snapshot keys out of order".into()));
                    }
                    check_pair(key, value, header.layout_version)
                        .map_err(|e| bad(format!("snapshot record: {e}")))?;
                    if key == KEY_APPLIED {
                        let applied: AppliedRecord = decode_record("applied", value)?;
                        if applied.index != header.index || applied.term != header.term {
                            return Err(bad(format!(
                                "snapshot header says {}/{} but its state is applied to {}/{}",
                                header.index, header.term, applied.index, applied.term
                            )));
                        }
                        saw_applied = true;
                    }
                    if key == KEY_LAYOUT {
                        let layout: u32 = decode_record("layout", value)?;
                        if layout != header.layout_version {
                            return Err(bad("snapshot layout record disagrees with header".into()));
                        }
                        saw_layout = true;
                    }
                    last_key = Some(key.clone());
                    records += 1;
                }
                sink(pairs)?;
            }
            KIND_TRAILER => break decode_at::<SnapshotTrailer>(&frame, "trailer")?,
            other => {
                return Err(Error::corrupt(
                    frame.offset,
                    format!("unexpected snapshot frame kind {other}"),
                ))
            }
        }
    };
    let sha256: [u8; 32] = reader.hasher.clone().finalize().into();
    if trailer.sha256 != sha256 {
        return Err(Error::corrupt(reader.offset, "snapshot sha256 mismatch"));
    }
    if trailer.records != records {
        return Err(Error::corrupt(
            reader.offset,
            format!(
                "snapshot trailer counts {} records, file holds {records}",
                trailer.records
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if reader.read_full(&mut extra)? != 0 {
        return Err(Error::corrupt(
            reader.offset,
            "bytes after the snapshot trailer",
        ));
    }
    if !saw_layout || (!saw_applied && header.index != LogIndex(0)) {
        return Err(Error::corrupt(
            reader.offset,
            "snapshot lacks the applied index or layout record",
        ));
    }
    Ok(SnapshotSummary {
        index: header.index,
        term: header.term,
        size: reader.offset,
        sha256,
    })
}

/// Verify a snapshot stream completely (every frame, every record, the sha256).
pub(crate) fn verify_snapshot(input: impl Read) -> Result<SnapshotSummary> {
    read_snapshot(input, |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_of_a_written_stream_is_what_reading_it_finds() {
        let pairs = vec![
            (
                KEY_APPLIED.to_vec(),
                crate::codec::encode_value(&AppliedRecord {
                    index: LogIndex(4),
                    term: Term(2),
                })
                .unwrap(),
            ),
            (
                KEY_LAYOUT.to_vec(),
                crate::codec::encode_value(&LAYOUT_VERSION).unwrap(),
            ),
        ];
        let mut bytes = Vec::new();
        let written = write_snapshot(
            pairs.into_iter().map(Ok),
            LogIndex(4),
            Term(2),
            LAYOUT_VERSION,
            &mut bytes,
        )
        .unwrap();
        assert_eq!(written.size, bytes.len() as u64);
        assert_eq!(verify_snapshot(&bytes[..]).unwrap(), written);
        assert!(verify_snapshot(&bytes[..bytes.len() - 1]).is_err());
    }
}
