//! Snapshot files: the whole state machine as one self-checking file in `DATA_DIR/snap/`.
//!
//! A snapshot is a stream of codec frames (salted with [`SNAPSHOT_SALT`]): one header frame, any
//! number of record frames carrying the raw (key, value) pairs of the state tree in key order,
//! and one trailer frame with the record count and a sha256 over every byte before the trailer.
//! The file is written under a temporary name, fsynced, renamed to
//! `{index:020}-{term:020}-{sha256 hex}.snap` and the directory fsynced, so a file with a final
//! name is always complete. `docs/FORMAT.md` ("Snapshot file") gives the bytes.
//!
//! This module is the only place in `src/sm` that touches files directly (sled does its own IO).

use super::store::{
    check_pair, decode_record, AppliedRecord, Pairs, KEY_APPLIED, KEY_LAYOUT, LAYOUT_VERSION,
    OLDEST_LAYOUT_VERSION,
};
use crate::codec::{append_frame, verify_frame, FrameHeader, FRAME_HEADER_BYTES};
use crate::error::{Error, Result};
use crate::limits::{MAX_FRAME_PAYLOAD_BYTES, SNAPSHOT_CHUNK_BYTES};
use crate::types::{LogIndex, Term};
use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The snapshot format version this build writes and the newest it reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// How many snapshot files the runtime keeps (the `keep` it passes to [`prune_snapshots`]): the
/// newest and the one before it, so a snapshot still being sent to a follower survives the next.
pub const SNAPSHOTS_TO_KEEP: usize = 2;

/// The frame salt of snapshot streams (ASCII "HVSNAP01" read as a little-endian u64), so that a
/// WAL frame (salted with its small segment number) never verifies inside a snapshot.
pub const SNAPSHOT_SALT: u64 = u64::from_le_bytes(*b"HVSNAP01");

const KIND_HEADER: u8 = 1;
const KIND_RECORDS: u8 = 2;
const KIND_TRAILER: u8 = 3;
const FILE_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// A snapshot file: the applied position it captures and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// File size in bytes.
    pub size: u64,
    /// sha256 over the file's bytes before the trailer frame.
    pub sha256: [u8; 32],
    /// Where the file is.
    pub path: PathBuf,
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

/// The file name of a snapshot: `{index:020}-{term:020}-{sha256 hex}.snap` (zero-padded so names
/// sort by index).
pub fn snapshot_file_name(index: LogIndex, term: Term, sha256: &[u8; 32]) -> String {
    let mut name = format!("{:020}-{:020}-", index.0, term.0);
    for byte in sha256 {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push_str(FILE_SUFFIX);
    name
}

fn parse_file_name(name: &str) -> Option<(LogIndex, Term, [u8; 32])> {
    let stem = name.strip_suffix(FILE_SUFFIX)?;
    let mut parts = stem.split('-');
    let (index, term, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || index.len() != 20 || term.len() != 20 || hex.len() != 64 {
        return None;
    }
    let index = index.parse().ok()?;
    let term = term.parse().ok()?;
    let mut sha256 = [0u8; 32];
    for (i, byte) in sha256.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((LogIndex(index), Term(term), sha256))
}

fn io_error(context: &str, path: &Path, source: std::io::Error) -> Error {
    Error::io(format!("{context} {}", path.display()), source)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsyncing snapshot directory", dir, e))
}

/// Counts and hashes what goes into the file.
struct HashingWriter {
    file: BufWriter<File>,
    hasher: Sha256,
    size: u64,
}

impl HashingWriter {
    fn write(&mut self, bytes: &[u8], hashed: bool, path: &Path) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| io_error("writing snapshot", path, e))?;
        if hashed {
            self.hasher.update(bytes);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }
}

/// Write the pairs of `tree` (a consistent state at `index`/`term`: the caller applies nothing
/// meanwhile) as a snapshot file in `dir`.
pub(crate) fn write_snapshot(
    pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    index: LogIndex,
    term: Term,
    dir: &Path,
) -> Result<SnapshotMeta> {
    write_snapshot_of_layout(pairs, index, term, dir, LAYOUT_VERSION)
}

/// [`write_snapshot`] with the state layout `layout` in the header (tests write older
/// layouts; the pairs must be of that layout).
pub(crate) fn write_snapshot_of_layout(
    pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    index: LogIndex,
    term: Term,
    dir: &Path,
    layout: u32,
) -> Result<SnapshotMeta> {
    fs::create_dir_all(dir).map_err(|e| io_error("creating snapshot directory", dir, e))?;
    let temp_path = dir.join(format!("{:020}-{:020}{TEMP_SUFFIX}", index.0, term.0));
    let written = write_temp(pairs, index, term, layout, &temp_path);
    let (size, sha256) = match written {
        Ok(done) => done,
        Err(e) => {
            // Best effort: a leftover temp file is also removed by `prune_snapshots`.
            let _ = fs::remove_file(&temp_path);
            return Err(e);
        }
    };
    let path = dir.join(snapshot_file_name(index, term, &sha256));
    fs::rename(&temp_path, &path).map_err(|e| io_error("renaming snapshot", &path, e))?;
    sync_dir(dir)?;
    Ok(SnapshotMeta {
        index,
        term,
        size,
        sha256,
        path,
    })
}

fn write_temp(
    pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    index: LogIndex,
    term: Term,
    layout: u32,
    temp_path: &Path,
) -> Result<(u64, [u8; 32])> {
    let file = File::create(temp_path).map_err(|e| io_error("creating snapshot", temp_path, e))?;
    let mut out = HashingWriter {
        file: BufWriter::new(file),
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
    out.write(&frame, true, temp_path)?;

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
            out.write(&frame, true, temp_path)?;
            chunk.clear();
            chunk_bytes = 0;
        }
    }
    if !chunk.is_empty() {
        frame.clear();
        append_frame(&mut frame, KIND_RECORDS, SNAPSHOT_SALT, &chunk)?;
        out.write(&frame, true, temp_path)?;
    }

    let sha256: [u8; 32] = out.hasher.clone().finalize().into();
    frame.clear();
    append_frame(
        &mut frame,
        KIND_TRAILER,
        SNAPSHOT_SALT,
        &SnapshotTrailer { records, sha256 },
    )?;
    out.write(&frame, false, temp_path)?;
    let size = out.size;
    let file = out
        .file
        .into_inner()
        .map_err(|e| io_error("writing snapshot", temp_path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| io_error("fsyncing snapshot", temp_path, e))?;
    Ok((size, sha256))
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
        verify_frame(&header, SNAPSHOT_SALT, &body[..payload_len]).map_err(|e| match e {
            Error::Corrupt { reason, .. } => Error::corrupt(offset, reason),
            other => other,
        })?;
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
    crate::codec::decode_value(&frame.payload).map_err(|e| match e {
        Error::Corrupt { reason, .. } => {
            Error::corrupt(frame.offset, format!("snapshot {what}: {reason}"))
        }
        other => other,
    })
}

/// Read and verify a snapshot from start to end, handing each verified record frame's pairs to
/// `sink` in order. Every frame's crc, the key order, every record and the trailer's sha256 and
/// count are checked; the sha256 can only be checked at the end, so a caller that must not act
/// on unverified bytes reads the file twice (see `StateMachine::restore_snapshot`).
pub(crate) fn read_snapshot(
    path: &Path,
    mut sink: impl FnMut(Pairs) -> Result<()>,
) -> Result<SnapshotMeta> {
    read_snapshot_inner(path, &mut sink).map_err(|e| e.in_file(path, 0))
}

fn read_snapshot_inner(
    path: &Path,
    sink: &mut dyn FnMut(Pairs) -> Result<()>,
) -> Result<SnapshotMeta> {
    let file = File::open(path).map_err(|e| io_error("opening snapshot", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| io_error("reading metadata of snapshot", path, e))?
        .len();
    let mut reader = FrameReader {
        inner: BufReader::new(file),
        offset: 0,
        hasher: Sha256::new(),
    };
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
    if let Some((index, term, named_sha)) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_file_name)
    {
        if index != header.index || term != header.term || named_sha != sha256 {
            return Err(Error::corrupt(
                0,
                "snapshot file name disagrees with its content",
            ));
        }
    }
    Ok(SnapshotMeta {
        index: header.index,
        term: header.term,
        size,
        sha256,
        path: path.to_path_buf(),
    })
}

/// Verify a snapshot file completely (every frame, every record, the sha256 and the file name)
/// without changing anything. The runtime calls this on a snapshot received from the leader
/// before installing it; [`super::StateMachine::restore_snapshot`] calls it too.
pub fn verify_snapshot(path: impl AsRef<Path>) -> Result<SnapshotMeta> {
    read_snapshot(path.as_ref(), |_| Ok(()))
}

/// The complete snapshot files in `dir`, oldest first (by index, then term). Taken from the file
/// names and sizes; not verified (use [`verify_snapshot`]). A missing directory has none.
pub fn list_snapshots(dir: impl AsRef<Path>) -> Result<Vec<SnapshotMeta>> {
    let dir = dir.as_ref();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing snapshot directory", dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing snapshot directory", dir, e))?;
        let name = entry.file_name();
        let Some((index, term, sha256)) = name.to_str().and_then(parse_file_name) else {
            continue;
        };
        let size = entry
            .metadata()
            .map_err(|e| io_error("reading metadata of", &entry.path(), e))?
            .len();
        found.push(SnapshotMeta {
            index,
            term,
            size,
            sha256,
            path: entry.path(),
        });
    }
    found.sort_by_key(|m| (m.index, m.term));
    Ok(found)
}

/// The newest snapshot file in `dir` (not verified), if any.
pub fn newest_snapshot(dir: impl AsRef<Path>) -> Result<Option<SnapshotMeta>> {
    Ok(list_snapshots(dir)?.pop())
}

/// Delete all but the newest `keep` snapshot files in `dir` (usually [`SNAPSHOTS_TO_KEEP`]),
/// and any temporary file left by an interrupted write. Returns the deleted paths. `keep` must
/// be at least 1: the log may be compacted behind the newest snapshot, which must survive.
pub fn prune_snapshots(dir: impl AsRef<Path>, keep: usize) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    if keep == 0 {
        return Err(Error::InvalidArgument(
            "prune_snapshots must keep at least one snapshot".into(),
        ));
    }
    let mut doomed: Vec<PathBuf> = Vec::new();
    let snapshots = list_snapshots(dir)?;
    let old = snapshots.len().saturating_sub(keep);
    doomed.extend(snapshots.into_iter().take(old).map(|m| m.path));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(TEMP_SUFFIX))
            {
                doomed.push(entry.path());
            }
        }
    }
    for path in &doomed {
        fs::remove_file(path).map_err(|e| io_error("deleting snapshot", path, e))?;
    }
    if !doomed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort_by_index() {
        let sha = [0xABu8; 32];
        let name = snapshot_file_name(LogIndex(42), Term(7), &sha);
        assert_eq!(parse_file_name(&name), Some((LogIndex(42), Term(7), sha)));
        assert!(
            snapshot_file_name(LogIndex(9), Term(1), &sha)
                < snapshot_file_name(LogIndex(10), Term(1), &sha)
        );
        assert_eq!(parse_file_name("00000000000000000042-x.snap"), None);
        assert_eq!(parse_file_name("whatever.snap.tmp"), None);
    }
}
