//! A run's directory and what happens to it at the end, for both Jepsen-style tests: the
//! children are killed (also while unwinding); a run that passed leaves nothing behind unless
//! asked to keep it; otherwise its records (the nemesis history, and what else the test keeps)
//! are written beside the member logs and data, and the path is printed.

use crate::cluster::Processes;
use crate::history::{self, History};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Keeper {
    dir: PathBuf,
    /// How the test names itself in what it prints ("jepsen", "jepsen-locks").
    name: &'static str,
    history: Arc<History>,
    processes: Arc<Processes>,
    /// Writes the test's other records into the directory; the history is written here.
    records: Box<dyn Fn(&Path)>,
    keep: bool,
    succeeded: bool,
}

impl Keeper {
    /// A new run directory under the target's temporary directory, named after the test, the
    /// seed, the time and this process.
    pub fn create(
        name: &'static str,
        seed: u64,
        keep: bool,
        history: Arc<History>,
        processes: Arc<Processes>,
        records: Box<dyn Fn(&Path)>,
    ) -> Keeper {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{seed}-{unix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the run directory");
        Keeper {
            dir,
            name,
            history,
            processes,
            records,
            keep,
            succeeded: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn history_path(&self) -> PathBuf {
        self.dir.join("history.txt")
    }

    /// The run passed: its directory goes unless it is to be kept.
    pub fn succeeded(&mut self) {
        self.succeeded = true;
    }

    /// Write the history and the test's other records; the history's path.
    pub fn write_records(&self) -> PathBuf {
        let path = self.history_path();
        if let Err(e) = history::write_file(&path, &self.history.events()) {
            eprintln!("{}: could not write {}: {e}", self.name, path.display());
        }
        (self.records)(&self.dir);
        path
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.processes.kill_all();
        if self.succeeded && !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        self.write_records();
        println!(
            "{}: {}records kept in {} (history.txt, member logs and data beside it)",
            self.name,
            if self.succeeded { "" } else { "FAILED; " },
            self.dir.display()
        );
    }
}
