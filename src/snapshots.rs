//! Snapshot files in `DATA_DIR/snap/`: their names, writing one durably, verifying, listing and
//! pruning them, and restoring a [`StateMachine`] from one.
//!
//! The bytes inside a file are the state machine's snapshot format (`src/sm/snapshot.rs`,
//! `docs/FORMAT.md` "Snapshot file"), which `src/sm` encodes and decodes over `std::io` streams
//! without touching a file. This module is the file side, above `sm` and below the runtime
//! (`src/node` takes, installs, serves and prunes snapshots through it), and its disk
//! operations go through `crate::fs`, the disk seam.
//!
//! A file is written under a temporary name (`{index:020}-{term:020}.snap.tmp`), fsynced,
//! renamed to `{index:020}-{term:020}-{sha256 hex}.snap` and the directory fsynced, so a file
//! with a final name is always complete.

use crate::error::{Error, Result};
use crate::fs;
use crate::sm::{self, SnapshotSummary, StateMachine};
use crate::types::{LogIndex, Term};
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// How many snapshot files the runtime keeps (the `keep` it passes to [`prune_snapshots`]): the
/// newest and the one before it, so a snapshot still being sent to a follower survives the next.
pub const SNAPSHOTS_TO_KEEP: usize = 2;

const FILE_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// A snapshot file: the applied position it captures, how to check it, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
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

impl SnapshotFile {
    fn new(summary: SnapshotSummary, path: PathBuf) -> SnapshotFile {
        SnapshotFile {
            index: summary.index,
            term: summary.term,
            size: summary.size,
            sha256: summary.sha256,
            path,
        }
    }

    fn summary(&self) -> SnapshotSummary {
        SnapshotSummary {
            index: self.index,
            term: self.term,
            size: self.size,
            sha256: self.sha256,
        }
    }
}

/// Taking and restoring a [`StateMachine`]'s snapshots as files (the machine itself does no
/// file IO: it writes and reads the snapshot format over streams).
pub trait SnapshotFiles {
    /// Write the whole state (KV, client table, membership, applied index and term) as a
    /// snapshot file in `snap_dir` (usually `DATA_DIR/snap`; created if missing): written under
    /// a temporary name, fsynced, renamed, directory fsynced. The snapshot covers exactly
    /// [`StateMachine::applied`]. Apply is blocked meanwhile (the machine is borrowed).
    fn write_snapshot(&self, snap_dir: impl AsRef<Path>) -> Result<SnapshotFile>;

    /// Replace the whole state with the snapshot file at `path`.
    ///
    /// The file is verified completely first (every frame, every record, the sha256, the file
    /// name); a bad file is refused (`Corrupt`, `UnsupportedVersion`) and the state is
    /// untouched. A snapshot older than the applied index is refused (`InvalidArgument`): the
    /// state never moves backwards. Then the state is replaced atomically (see
    /// `StateMachine::restore_verified`): a crash leaves the old state or the new one.
    fn restore_snapshot(&mut self, path: impl AsRef<Path>) -> Result<SnapshotFile>;
}

impl SnapshotFiles for StateMachine {
    fn write_snapshot(&self, snap_dir: impl AsRef<Path>) -> Result<SnapshotFile> {
        self.check_usable()?;
        let dir = snap_dir.as_ref();
        let (index, term) = self.applied();
        fs::create_dir_all(dir)?;
        let mut temp =
            fs::TempFile::create(dir.join(format!("{:020}-{:020}{TEMP_SUFFIX}", index.0, term.0)))?;
        let summary = self.write_snapshot_to(&mut temp)?;
        let path = dir.join(snapshot_file_name(index, term, &summary.sha256));
        temp.commit(&path)?;
        Ok(SnapshotFile::new(summary, path))
    }

    fn restore_snapshot(&mut self, path: impl AsRef<Path>) -> Result<SnapshotFile> {
        self.check_usable()?;
        let path = path.as_ref();
        let verified = verify_snapshot(path)?;
        self.restore_verified(&verified.summary(), || {
            fs::open_file(path).map(BufReader::new)
        })
        .map_err(|e| e.in_file(path, 0))?;
        Ok(verified)
    }
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

/// Verify a snapshot file completely (every frame, every record, the sha256, and that a
/// snapshot-shaped file name agrees with the content) without changing anything. The runtime
/// calls this on a snapshot received from the leader before installing it;
/// [`SnapshotFiles::restore_snapshot`] calls it too.
pub fn verify_snapshot(path: impl AsRef<Path>) -> Result<SnapshotFile> {
    let path = path.as_ref();
    let verified = (|| {
        let summary = sm::verify_snapshot(BufReader::new(fs::open_file(path)?))?;
        if let Some((index, term, named_sha)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_file_name)
        {
            if index != summary.index || term != summary.term || named_sha != summary.sha256 {
                return Err(Error::corrupt(
                    0,
                    "snapshot file name disagrees with its content",
                ));
            }
        }
        Ok(summary)
    })()
    .map_err(|e| e.in_file(path, 0))?;
    Ok(SnapshotFile::new(verified, path.to_path_buf()))
}

/// The membership payload stored in the snapshot file at `path` (the payload of the last
/// membership entry the snapshot covers), `None` if the snapshot covers none. Reads and verifies
/// the whole file. The runtime needs it on restart to tell the Raft core the configuration at
/// its compaction point when the state machine has already applied beyond that point.
pub fn snapshot_membership(path: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
    let path = path.as_ref();
    fs::open_file(path)
        .and_then(|file| sm::snapshot_membership(BufReader::new(file)))
        .map_err(|e| e.in_file(path, 0))
}

/// The complete snapshot files in `dir`, oldest first (by index, then term). Taken from the file
/// names and sizes; not verified (use [`verify_snapshot`]). A missing directory has none.
pub fn list_snapshots(dir: impl AsRef<Path>) -> Result<Vec<SnapshotFile>> {
    let mut found = Vec::new();
    for file in fs::list_dir(dir.as_ref())? {
        let Some((index, term, sha256)) = file.name.as_deref().and_then(parse_file_name) else {
            continue;
        };
        found.push(SnapshotFile {
            index,
            term,
            size: fs::file_size(&file.path)?,
            sha256,
            path: file.path,
        });
    }
    found.sort_by_key(|m| (m.index, m.term));
    Ok(found)
}

/// The newest snapshot file in `dir` (not verified), if any.
pub fn newest_snapshot(dir: impl AsRef<Path>) -> Result<Option<SnapshotFile>> {
    Ok(list_snapshots(dir)?.pop())
}

/// Delete all but the newest `keep` snapshot files in `dir` (usually [`SNAPSHOTS_TO_KEEP`]).
/// Returns the deleted paths. `keep` must be at least 1: the log may be compacted behind the
/// newest snapshot, which must survive. Temporary files are left alone: one may be a snapshot
/// the apply thread is writing right now (see [`remove_leftover_temp_files`]).
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
    remove_all(dir, &doomed)?;
    Ok(doomed)
}

/// Delete the temporary files of snapshot writes that a crash interrupted. Only for a member
/// that is starting: while it runs, a temporary file may be a write in progress. Returns the
/// deleted paths.
pub fn remove_leftover_temp_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let doomed: Vec<PathBuf> = fs::list_dir(dir)?
        .into_iter()
        .filter(|entry| {
            entry
                .name
                .as_deref()
                .is_some_and(|n| n.ends_with(TEMP_SUFFIX))
        })
        .map(|entry| entry.path)
        .collect();
    remove_all(dir, &doomed)?;
    Ok(doomed)
}

fn remove_all(dir: &Path, doomed: &[PathBuf]) -> Result<()> {
    for path in doomed {
        fs::remove_file(path)?;
    }
    if !doomed.is_empty() {
        fs::sync_dir(dir)?;
    }
    Ok(())
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

    #[test]
    fn prune_leaves_a_snapshot_being_written_alone_and_start_up_removes_leftovers() {
        // Regression (issue 14): the transfer thread's prune deleted every temporary file,
        // including the snapshot the apply thread was writing, whose rename then failed.
        let dir = tempfile::tempdir().unwrap();
        let in_progress = dir.path().join(format!("{:020}-{:020}{TEMP_SUFFIX}", 7, 1));
        std::fs::write(&in_progress, b"half a snapshot").unwrap();
        let removed = prune_snapshots(dir.path(), 1).unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(
            in_progress.exists(),
            "prune must not touch a write in progress"
        );
        let removed = remove_leftover_temp_files(dir.path()).unwrap();
        assert_eq!(removed, vec![in_progress.clone()]);
        assert!(!in_progress.exists());
    }
}
