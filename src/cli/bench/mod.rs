//! `haven bench`: measure a part of haven on this machine. Each target prints a table (or JSON)
//! on stdout and its progress on stderr.

pub mod cluster;
pub mod lock;
pub mod ring;
pub mod wal;
pub mod watch;

use super::children::WorkDir;
use super::exit::EXIT_RUN_FAILED;
use super::BenchTarget;
use haven::{Client, Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// The checks every bench of a child-process cluster makes on its common options.
fn check_members_and_seconds(members: usize, seconds: f64) -> Result<()> {
    if members == 0 || members > 7 {
        return Err(Error::InvalidArgument("--members must be 1 to 7".into()));
    }
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(Error::InvalidArgument(
            "--seconds must be in (0, 3600]".into(),
        ));
    }
    Ok(())
}

/// Wait (up to 20 s) until the cluster has a leader: a client connects and a write succeeds;
/// that client.
fn wait_for_leader(connect: impl Fn() -> Result<Client>) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match connect().and_then(|c| c.put(b"bench-ready", b"1").map(|_| c)) {
            Ok(c) => return Ok(c),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(Error::Unavailable(format!("cluster did not start: {e}"))),
        }
    }
}

/// The bench's working directory (`given`, or a new one named `prefix` under the current
/// directory) with the cluster secret written to `secret` in it; the directory and that file.
fn workdir_with_secret(
    given: Option<&Path>,
    prefix: &str,
    secret: &[u8],
) -> Result<(WorkDir, PathBuf)> {
    let workdir = match given {
        Some(d) => WorkDir::given(d)?,
        None => WorkDir::create(prefix)?,
    };
    let secret_file = workdir.path().join("secret");
    std::fs::write(&secret_file, secret).map_err(|e| Error::io("writing the secret", e))?;
    Ok((workdir, secret_file))
}
