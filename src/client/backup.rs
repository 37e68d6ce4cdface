//! Taking a backup over the client API: the member writes a snapshot of its state as of a
//! linearizable read (so it holds every write acknowledged before the call), and the client
//! reads that file in chunks by offset (`docs/FORMAT.md`, "Client protocol", version 3).

use super::Client;
use crate::error::{Error, Result};
use crate::node::{verify_backup, BackupInfo};
use crate::proto::{ReadMode, ReadOp, Request, Response, SnapshotChunk, SnapshotInfo};
use crate::types::{LogIndex, Term};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How often a backup starts over when the member's snapshot disappears mid-way (a newer one
/// replaced it, or the client failed over to another member).
const BACKUP_ATTEMPTS: usize = 3;

impl Client {
    /// Ask the member to write a snapshot of its state as of a linearizable read (every write
    /// acknowledged before this call is in it). Its bytes are read with
    /// [`Client::snapshot_chunk`].
    pub fn snapshot_begin(&self) -> Result<SnapshotInfo> {
        let request = Request::Read {
            op: ReadOp::Snapshot,
            mode: ReadMode::Linearizable,
        };
        match self.retry(request, false)? {
            Response::Snapshot(info) => Ok(info),
            other => Err(super::unexpected(&other)),
        }
    }

    /// The chunk at `offset` of the member's snapshot (`index`, `term`); `None` if that member
    /// does not have it (any more).
    pub fn snapshot_chunk(
        &self,
        index: LogIndex,
        term: Term,
        offset: u64,
    ) -> Result<Option<SnapshotChunk>> {
        let request = Request::SnapshotChunk {
            index,
            term,
            offset,
        };
        match self.retry(request, false)? {
            Response::SnapshotChunk(chunk) => Ok(chunk),
            other => Err(super::unexpected(&other)),
        }
    }

    /// Save a backup of the cluster's state to `path`: a fresh snapshot from the member this
    /// client talks to, holding every write acknowledged before the call, written to a
    /// temporary file, fsynced, verified completely and renamed to `path`. Starts over (up to
    /// three times) if the member's snapshot goes away mid-way.
    pub fn save_snapshot(&self, path: impl AsRef<Path>) -> Result<BackupInfo> {
        let path = path.as_ref();
        let temp = temp_path(path);
        let mut last = None;
        for _ in 0..BACKUP_ATTEMPTS {
            let info = self.snapshot_begin()?;
            match self.download(&info, &temp) {
                Ok(true) => {}
                Ok(false) => {
                    last = Some(info);
                    continue;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
            }
            let checked = verify_backup(&temp).and_then(|backup| {
                if (backup.index, backup.term, backup.sha256)
                    == (info.index, info.term, info.sha256)
                {
                    Ok(backup)
                } else {
                    Err(Error::corrupt(
                        0,
                        "the saved file is not the snapshot the member described",
                    ))
                }
            });
            let backup = match checked {
                Ok(b) => b,
                Err(e) => {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e);
                }
            };
            std::fs::rename(&temp, path)
                .map_err(|e| Error::io(format!("renaming {}", temp.display()), e))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::wal::sync_dir(dir)?;
            }
            return Ok(backup);
        }
        let _ = std::fs::remove_file(&temp);
        Err(Error::Unavailable(format!(
            "the member's snapshot{} went away during the download {BACKUP_ATTEMPTS} times",
            last.map_or_else(String::new, |i| format!(" (last at index {})", i.index.0))
        )))
    }

    /// Read the whole snapshot into `temp` (fsynced). `Ok(false)`: the member no longer has
    /// it, or it changed under us: start over.
    fn download(&self, info: &SnapshotInfo, temp: &Path) -> Result<bool> {
        let mut file =
            File::create(temp).map_err(|e| Error::io(format!("creating {}", temp.display()), e))?;
        let mut offset = 0u64;
        loop {
            let Some(chunk) = self.snapshot_chunk(info.index, info.term, offset)? else {
                return Ok(false);
            };
            if chunk.sha256 != info.sha256 || chunk.offset != offset {
                return Ok(false);
            }
            file.write_all(&chunk.data)
                .map_err(|e| Error::io(format!("writing {}", temp.display()), e))?;
            offset += chunk.data.len() as u64;
            if chunk.done {
                break;
            }
            if chunk.data.is_empty() || offset > info.size {
                return Err(Error::Fatal(format!(
                    "the member sent no progress at offset {offset} of a {}-byte snapshot",
                    info.size
                )));
            }
        }
        if offset != info.size {
            return Ok(false);
        }
        file.sync_all()
            .map_err(|e| Error::io(format!("fsyncing {}", temp.display()), e))?;
        Ok(true)
    }
}

/// `FILE.tmp` beside `FILE`.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
