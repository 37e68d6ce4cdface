//! The data directory: its layout, its lock, and the `meta` file that says whose it is.
//!
//! ```text
//! DATA_DIR/
//!   LOCK    exclusive flock, held as long as the DataDir value lives
//!   meta    node id + cluster id, one checksummed frame (docs/FORMAT.md, "Meta file")
//!   wal/    WAL segments
//!   state/  the state machine's database
//!   snap/   snapshot files
//! ```
//!
//! Opening checks, in order: the lock (a second opener, in this process or another, is refused),
//! then `meta` (a directory of another node or cluster is refused, naming both ids). A new
//! directory gets its `meta` written through a temporary file, fsync, rename and a directory
//! fsync, so a crash leaves either no `meta` or a whole one.

use crate::codec::{append_frame, decode_value, read_frame};
use crate::error::{Error, Result};
use crate::types::{ClusterId, NodeId};
use bincode::{Decode, Encode};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Version of the meta file's payload layout written by this build. Version 1 (no founding
/// digest) is still read.
pub const META_VERSION: u32 = 2;
/// Frame kind of the meta record.
const META_KIND: u8 = 1;
/// Checksum salt of the meta frame: ASCII "havenmet" (a meta frame never verifies as a WAL
/// record and the other way round).
pub const META_SALT: u64 = u64::from_le_bytes(*b"havenmet");
/// Largest meta payload accepted (checked before reading it).
const MAX_META_PAYLOAD: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
struct Meta {
    /// Must stay the first field: see `decode_meta`.
    version: u32,
    node_id: NodeId,
    cluster_id: ClusterId,
    /// Digest of the membership this member founded its cluster with; None for a member that
    /// joined a running cluster (and for directories written by version 1).
    founding: Option<[u8; 32]>,
}

/// The version 1 payload: `Meta` without `founding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
struct MetaV1 {
    version: u32,
    node_id: NodeId,
    cluster_id: ClusterId,
}

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    node_id: NodeId,
    cluster_id: ClusterId,
    founding: Option<[u8; 32]>,
    /// Holds the flock; closing the file releases it.
    _lock: File,
}

impl DataDir {
    /// Open `path` as the data directory of `node_id` in `cluster_id`, creating it if new.
    ///
    /// Errors: `DataDir` if another opener holds the lock, or the directory belongs to another
    /// node or cluster; `Corrupt` (naming the file) if `meta` fails verification;
    /// `UnsupportedVersion` for a meta written by a newer build; `Io`.
    pub fn open(path: impl AsRef<Path>, node_id: NodeId, cluster_id: ClusterId) -> Result<DataDir> {
        let root = path.as_ref().to_path_buf();
        if node_id.0 == 0 {
            return Err(Error::InvalidArgument("node id 0 is not a valid id".into()));
        }
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("creating data directory {}", root.display()), e))?;
        let lock = lock(&root)?;
        let meta_path = root.join("meta");
        let mut wanted = Meta {
            version: META_VERSION,
            node_id,
            cluster_id,
            founding: None,
        };
        match std::fs::read(&meta_path) {
            Ok(bytes) => {
                let found = decode_meta(&bytes).map_err(|e| e.in_file(&meta_path, 0))?;
                if found.node_id != node_id || found.cluster_id != cluster_id {
                    return Err(Error::DataDir(format!(
                        "{} belongs to node {} of cluster {}, not to node {} of cluster {}",
                        root.display(),
                        found.node_id,
                        found.cluster_id,
                        node_id,
                        cluster_id
                    )));
                }
                wanted.founding = found.founding;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // No meta: a new directory, unless a log is already there (then whose it is is
                // unknown, and guessing could merge two nodes' data).
                if has_wal_segments(&root.join("wal")) {
                    return Err(Error::DataDir(format!(
                        "{} has WAL segments but no meta file: refusing to guess whose they are",
                        root.display()
                    )));
                }
                write_meta(&root, &wanted)?;
            }
            Err(e) => return Err(Error::io(format!("reading {}", meta_path.display()), e)),
        }
        for sub in ["wal", "state", "snap"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        crate::fs::sync_dir(&root)?;
        Ok(DataDir {
            root,
            node_id,
            cluster_id,
            founding: wanted.founding,
            _lock: lock,
        })
    }

    /// Digest of the membership this member founded its cluster with (`None` for a member
    /// that joined a running cluster, or a directory from before the digest was recorded).
    pub fn founding_digest(&self) -> Option<[u8; 32]> {
        self.founding
    }

    /// Record the founding digest (atomically rewrites `meta`; a no-op if it is unchanged).
    /// The node sets it once, on the first start, before it writes its first log entry.
    pub fn set_founding_digest(&mut self, founding: Option<[u8; 32]>) -> Result<()> {
        if founding == self.founding {
            return Ok(());
        }
        let meta = Meta {
            version: META_VERSION,
            node_id: self.node_id,
            cluster_id: self.cluster_id,
            founding,
        };
        write_meta(&self.root, &meta)?;
        self.founding = founding;
        Ok(())
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the WAL segments live.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// Where the state machine's database lives.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Where snapshot files live.
    pub fn snap_dir(&self) -> PathBuf {
        self.root.join("snap")
    }

    /// The node this directory belongs to.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The cluster this directory belongs to.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }
}

/// Take the exclusive, non-blocking flock on `root/LOCK`. flock locks belong to the open file
/// description, so a second open in the same process conflicts too.
fn lock(root: &Path) -> Result<File> {
    let path = root.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::DataDir(format!(
                "{} is locked ({} is held by another open of this directory, in this process \
                 or another)",
                root.display(),
                path.display()
            )));
        }
        return Err(Error::io(format!("locking {}", path.display()), err));
    }
    Ok(file)
}

fn decode_meta(bytes: &[u8]) -> Result<Meta> {
    let Some(frame) = read_frame(bytes, META_SALT, MAX_META_PAYLOAD)? else {
        return Err(Error::corrupt(0, "meta file is truncated"));
    };
    if frame.kind != META_KIND {
        return Err(Error::corrupt(
            0,
            format!("meta frame has kind {}", frame.kind),
        ));
    }
    if frame.len != bytes.len() {
        return Err(Error::corrupt(
            frame.len as u64,
            "trailing bytes after the meta frame",
        ));
    }
    // The version is a small varint, so its one byte comes first (as in WAL segment headers).
    match frame.payload.first() {
        Some(&v) if u32::from(v) == META_VERSION => decode_value(frame.payload),
        Some(1) => {
            let old: MetaV1 = decode_value(frame.payload)?;
            Ok(Meta {
                version: old.version,
                node_id: old.node_id,
                cluster_id: old.cluster_id,
                founding: None,
            })
        }
        Some(&v) => Err(Error::UnsupportedVersion {
            what: "meta",
            found: u32::from(v),
            supported: META_VERSION,
        }),
        None => Err(Error::corrupt(0, "empty meta payload")),
    }
}

/// Write `meta` atomically: temporary file, fsync, rename, directory fsync.
fn write_meta(root: &Path, meta: &Meta) -> Result<()> {
    let mut bytes = Vec::new();
    append_frame(&mut bytes, META_KIND, META_SALT, meta)?;
    let tmp = root.join("meta.tmp");
    let mut file = crate::fs::TempFile::create(&tmp)?;
    file.write_all(&bytes)
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    file.commit(&root.join("meta"))
}

fn has_wal_segments(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|items| {
        items
            .filter_map(|i| i.ok())
            .any(|i| i.file_name().to_string_lossy().ends_with(".wal"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_refuses_trailing_bytes() {
        for founding in [None, Some([9; 32])] {
            let meta = Meta {
                version: META_VERSION,
                node_id: NodeId(3),
                cluster_id: ClusterId(77),
                founding,
            };
            let mut bytes = Vec::new();
            append_frame(&mut bytes, META_KIND, META_SALT, &meta).unwrap();
            assert_eq!(decode_meta(&bytes).unwrap(), meta);
            bytes.extend_from_slice(&[0; 8]);
            assert!(matches!(decode_meta(&bytes), Err(Error::Corrupt { .. })));
        }
        assert!(matches!(decode_meta(&[]), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn version_1_meta_reads_as_no_founding_digest() {
        let old = MetaV1 {
            version: 1,
            node_id: NodeId(3),
            cluster_id: ClusterId(77),
        };
        let mut bytes = Vec::new();
        append_frame(&mut bytes, META_KIND, META_SALT, &old).unwrap();
        let meta = decode_meta(&bytes).unwrap();
        assert_eq!(
            (meta.node_id, meta.cluster_id, meta.founding),
            (NodeId(3), ClusterId(77), None)
        );
    }

    #[test]
    fn founding_digest_is_recorded_and_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = DataDir::open(tmp.path(), NodeId(2), ClusterId(5)).unwrap();
        assert_eq!(dir.founding_digest(), None);
        dir.set_founding_digest(Some([4; 32])).unwrap();
        drop(dir);
        let dir = DataDir::open(tmp.path(), NodeId(2), ClusterId(5)).unwrap();
        assert_eq!(dir.founding_digest(), Some([4; 32]));
    }
}
