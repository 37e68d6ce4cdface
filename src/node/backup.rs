//! Backups: checking a backup file and preparing the data directory of a member of a NEW
//! cluster from one. (Taking one is `Client::save_snapshot`, which reads a member's snapshot in
//! chunks over the client protocol.)
//!
//! A backup file is a snapshot file byte for byte (`docs/FORMAT.md`, "Snapshot file" and
//! "Backup file"): a header with the format version, index and term; the state's records, the
//! cluster's membership among them; a trailer with a sha256 over everything before it.
//!
//! Restoring a member writes, in a new data directory: `meta` with the new cluster id and the
//! digest of the new founding membership (so restored members refuse members started with
//! another list, as founding members do); the backup under its snapshot name in `snap/`; and a
//! WAL compacted to the snapshot's (index, term) holding one entry after it, at index + 1 and
//! the snapshot's term, that makes the `--peers` list the configuration, and a hard state at
//! that term. Every restored member writes the same entry, so their logs match. The state is
//! restored from the snapshot at the member's first start (as after any compaction).
//!
//! This file is haven's one user of the snapshot file functions for backups: when they move,
//! only its `use` line changes.

use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::raft::Membership;
use crate::snapshots::{snapshot_file_name, snapshot_membership, verify_snapshot};
use crate::types::{ClusterId, Entry, EntryKind, GroupId, HardState, LogIndex, NodeId, Term};
use crate::wal::{sync_dir, Wal, WalOptions, WriteBatch};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a backup file holds, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The last log index the backup includes (every key's revision is at most this).
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The file's size in bytes.
    pub size: u64,
    /// sha256 over the file's bytes before its trailer.
    pub sha256: [u8; 32],
    /// The membership of the cluster it was taken from, at `index`.
    pub membership: Membership,
}

/// Verify a backup file completely (every frame's crc, every record, the trailer's sha256 and
/// count) and describe it. `Corrupt` names the offset of the first bad byte;
/// `UnsupportedVersion` a file written by a newer haven.
pub fn verify_backup(path: impl AsRef<Path>) -> Result<BackupInfo> {
    let path = path.as_ref();
    let meta = verify_snapshot(path)?;
    let membership = match snapshot_membership(path)? {
        Some(bytes) => Membership::decode(&bytes)?,
        None => Membership::default(),
    };
    Ok(BackupInfo {
        index: meta.index,
        term: meta.term,
        size: meta.size,
        sha256: meta.sha256,
        membership,
    })
}

/// A member's data directory prepared by [`restore_backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The new cluster's id (start the member with it).
    pub cluster_id: ClusterId,
    /// The backup it was restored from.
    pub backup: BackupInfo,
}

/// The cluster id a restore uses when none is given: derived from the backup's sha256 and the
/// new members, so every member restored from the same backup into the same member list gets
/// the same id without being told, and it is (with overwhelming probability) not the id of the
/// cluster the backup came from. Never 0.
pub fn restored_cluster_id(backup: &BackupInfo, members: &BTreeMap<NodeId, String>) -> ClusterId {
    let membership = Membership {
        voters: members.clone(),
        learners: BTreeMap::new(),
    };
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"haven restore v1");
    hasher.update(backup.sha256);
    hasher.update(membership.encode());
    let digest: [u8; 32] = hasher.finalize().into();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    ClusterId(u64::from_le_bytes(id).max(1))
}

/// Prepare `data_dir` (missing or empty) as the data directory of member `id` of a NEW cluster
/// whose founding members are `members` (`id` among them), holding the state of the backup at
/// `backup_path`. The cluster id is `cluster_id`, else [`restored_cluster_id`]. Start every
/// member with that id and the same `--peers` (`members`).
///
/// Errors: `InvalidArgument` (id 0 or not in `members`), `DataDir` (the directory is not
/// empty), `Corrupt`/`UnsupportedVersion` (the backup), `Io`.
pub fn restore_backup(
    backup_path: impl AsRef<Path>,
    data_dir: impl AsRef<Path>,
    id: NodeId,
    cluster_id: Option<ClusterId>,
    members: &BTreeMap<NodeId, String>,
) -> Result<Restored> {
    let (backup_path, data_dir) = (backup_path.as_ref(), data_dir.as_ref());
    if id.0 == 0 || !members.contains_key(&id) {
        return Err(Error::InvalidArgument(format!(
            "member {id} is not among the new cluster's members"
        )));
    }
    if cluster_id.is_some_and(|c| c.0 == 0) {
        return Err(Error::InvalidArgument("cluster id 0 is not valid".into()));
    }
    let backup = verify_backup(backup_path)?;
    let not_empty = std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some());
    if not_empty {
        return Err(Error::DataDir(format!(
            "{} is not empty: a restore prepares a new data directory",
            data_dir.display()
        )));
    }
    let cluster_id = cluster_id.unwrap_or_else(|| restored_cluster_id(&backup, members));
    let membership = Membership {
        voters: members.clone(),
        learners: BTreeMap::new(),
    };

    let mut dir = DataDir::open(data_dir, id, cluster_id)?;
    dir.set_founding_digest(Some(super::founding_digest(&membership)))?;
    copy_durably(
        backup_path,
        &dir.snap_dir().join(snapshot_file_name(
            backup.index,
            backup.term,
            &backup.sha256,
        )),
    )?;
    let (wal, _) = Wal::open(dir.wal_dir(), WalOptions::default())?;
    wal.write(WriteBatch {
        compact_to: Some((backup.index, backup.term)),
        entries: vec![Entry {
            group: GroupId(0),
            term: backup.term,
            index: backup.index.next(),
            kind: EntryKind::Membership,
            data: membership.encode(),
        }],
        hard_state: Some(HardState {
            term: backup.term,
            vote: None,
            commit: backup.index,
        }),
    })?;
    drop(wal);
    Ok(Restored { cluster_id, backup })
}

/// Copy `from` to `to` through a temporary file: write, fsync, rename, fsync the directory;
/// then verify the copy (its name now states its index, term and sha256 too).
fn copy_durably(from: &Path, to: &Path) -> Result<()> {
    let temp: PathBuf = to.with_extension("snap.tmp");
    let mut source = std::fs::File::open(from)
        .map_err(|e| Error::io(format!("opening the backup {}", from.display()), e))?;
    let mut file = std::fs::File::create(&temp)
        .map_err(|e| Error::io(format!("creating {}", temp.display()), e))?;
    std::io::copy(&mut source, &mut file)
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io(format!("writing {}", temp.display()), e))?;
    drop(file);
    std::fs::rename(&temp, to).map_err(|e| Error::io(format!("renaming {}", temp.display()), e))?;
    if let Some(dir) = to.parent() {
        sync_dir(dir)?;
    }
    verify_snapshot(to).map(|_| ())
}
