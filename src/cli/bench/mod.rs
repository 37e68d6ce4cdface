//! `haven bench`: measure a part of haven on this machine. Each target prints a table (or JSON)
//! on stdout and its progress on stderr.

pub mod cluster;
pub mod lock;
pub mod ring;
pub mod wal;
pub mod watch;

use super::exit::EXIT_RUN_FAILED;
use super::BenchTarget;

/// Run one bench; the process exit code (1 and one stderr line if it failed).
pub fn run(target: BenchTarget) -> i32 {
    let (name, outcome) = match target {
        BenchTarget::Cluster(args) => ("cluster", cluster::run(&args)),
        BenchTarget::Ring(args) => ("ring", ring::run(&args)),
        BenchTarget::Wal(args) => ("wal", wal::run_wal(&args)),
        BenchTarget::Watch(args) => ("watch", watch::run(&args)),
        BenchTarget::Lock(args) => ("lock", lock::run(&args)),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("haven bench {name}: {e}");
            EXIT_RUN_FAILED
        }
    }
}
