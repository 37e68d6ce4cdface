//! The file-system seam: the durable file operations haven's own files need (the WAL's
//! directory, snapshot files, snapshot transfers, the data directory's `meta`), each in one
//! place with one error message.
//!
//! Why one module: a file that must survive a crash is always made the same way — written under
//! a temporary name, fsynced, renamed to its final name, and the directory fsynced so that the
//! rename itself survives (without the last step, a power loss may keep the old directory entry
//! and lose the new one). Done in one place it is done right everywhere, and this module is the
//! seam where a later fault-injecting twin (a simulated disk that fails an fsync, tears a write
//! or loses an unsynced rename) replaces the real calls. The WAL's hot path (its segment
//! writes and fdatasyncs, with their own `FaultInjector`) stays in `src/wal`; its directory
//! fsync comes from here.
//!
//! Every function maps the `std::io::Error` to [`Error::Io`] naming the path. As everywhere in
//! haven, a failed fsync is never retried (see `src/wal`): the caller treats it as fatal for
//! whatever it was making durable.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// fsync a directory, so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// fsync a file (data and metadata) that was written at `path`.
pub(crate) fn sync_file(file: &File, path: &Path) -> Result<()> {
    file.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

/// Rename `from` to `to` and fsync the directory of `to`, so the new name survives a crash.
/// `from` must already be synced (see [`sync_file`]).
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        )
    })?;
    sync_dir(parent_of(to))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Create `dir` and its parents if missing.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

/// Open `path` for reading.
pub(crate) fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// Delete `path`. Durable only after a [`sync_dir`] of its directory.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io(format!("deleting {}", path.display()), e))
}

/// One file of a directory listing.
#[derive(Debug, Clone)]
pub(crate) struct DirFile {
    /// The file name, if it is UTF-8 (haven's own names always are).
    pub(crate) name: Option<String>,
    /// The full path.
    pub(crate) path: PathBuf,
}

/// The entries of `dir`, in no particular order. A missing directory has none.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<DirFile>> {
    let ctx = || format!("listing {}", dir.display());
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(ctx(), e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(ctx(), e))?;
        found.push(DirFile {
            name: entry.file_name().to_str().map(str::to_owned),
            path: entry.path(),
        });
    }
    Ok(found)
}

/// The size of the file at `path` in bytes.
pub(crate) fn file_size(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::io(format!("reading metadata of {}", path.display()), e))
}

/// A file being written under a temporary name; [`TempFile::commit`] makes it durable under
/// its final name (flush, fsync, rename, directory fsync), so a file with a final name is
/// always complete. Dropped uncommitted (an error on the way), the temporary file is deleted
/// (best effort: whoever lists the directory later must still expect leftovers after a crash).
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl TempFile {
    /// Create (or truncate) the temporary file `path`.
    pub(crate) fn create(path: impl Into<PathBuf>) -> Result<TempFile> {
        let path = path.into();
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(TempFile {
            path,
            out: Some(BufWriter::new(file)),
        })
    }

    /// Flush, fsync, rename to `to` and fsync the directory of `to`.
    pub(crate) fn commit(mut self, to: &Path) -> Result<()> {
        let Some(out) = self.out.take() else {
            return Err(Error::Fatal(format!(
                "{} was committed twice",
                self.path.display()
            )));
        };
        let file = out
            .into_inner()
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e.into_error()))?;
        sync_file(&file, &self.path)?;
        drop(file);
        rename_durably(&self.path, to)?;
        // Renamed: nothing left to clean up on drop.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.out {
            Some(out) => out.write(buf),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.out = None;
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_temp_file_has_only_its_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("x.tmp");
        let done = dir.path().join("x");
        let mut file = TempFile::create(&temp).unwrap();
        file.write_all(b"hello").unwrap();
        file.commit(&done).unwrap();
        assert!(!temp.exists());
        assert_eq!(fs::read(&done).unwrap(), b"hello");
        assert_eq!(file_size(&done).unwrap(), 5);
    }

    #[test]
    fn an_uncommitted_temp_file_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join("y.tmp");
        let mut file = TempFile::create(&temp).unwrap();
        file.write_all(b"half").unwrap();
        assert!(temp.exists());
        drop(file);
        assert!(!temp.exists());
    }

    #[test]
    fn a_missing_directory_lists_empty_and_a_bad_rename_names_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_dir(&dir.path().join("nope")).unwrap().is_empty());
        let err = rename_durably(&dir.path().join("a"), &dir.path().join("b")).unwrap_err();
        let text = err.to_string();
        for path in [dir.path().join("a"), dir.path().join("b")] {
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
    }
}
