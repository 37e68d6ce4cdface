//! Helpers of the `cli_*` tests: run the `haven` binary with a bound on its run time, and a
//! cluster of `haven serve` children (killed and reaped even when a test fails).
//!
//! Include with `#[path = "support/cli.rs"] mod cli_support;`.
#![allow(dead_code)] // each test binary uses a different part

#[path = "cluster.rs"]
pub mod cluster_support;

pub use cluster_support::{free_addrs, ServeProcess, CLUSTER};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What one run of `haven` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stderr lines (without empty ones).
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Run `haven ARGS` in `cwd`, with `stdin` as its input; killed if it runs longer than
/// `limit` (then the test fails).
pub fn haven_in(cwd: &Path, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Run {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("stdout");
    let err = out_dir.path().join("stderr");
    let input = out_dir.path().join("stdin");
    std::fs::write(&input, stdin.unwrap_or_default()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_haven"))
        .args(args)
        .current_dir(cwd)
        .env("HAVEN_LOG", "warn")
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn haven");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "haven {args:?} ran longer than {limit:?}; stderr so far: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

/// Run `haven ARGS` (no input, at most 60 s).
pub fn haven(args: &[&str]) -> Run {
    haven_in(Path::new("."), args, None, Duration::from_secs(60))
}

/// A cluster of `haven serve` children and the options that reach it.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<SocketAddr>,
    pub members: Vec<ServeProcess>,
}

const TIMINGS: &[&str] = &[
    "--tick-ms",
    "5",
    "--election-timeout-ms",
    "100",
    "--heartbeat-ms",
    "20",
    "--state-cache-mib",
    "16",
];

impl TestCluster {
    /// `n` members; returns once a write through the CLI succeeds (so a leader exists).
    pub fn start(n: usize) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs = free_addrs(n);
        let members = (1..=n as u64)
            .map(|id| ServeProcess::start(dir.path(), id, &addrs, TIMINGS))
            .collect();
        let cluster = TestCluster {
            dir,
            addrs,
            members,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = cluster.run(&["put", "cli-test-ready", "1"]);
            if run.code == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not accept a write within 30 s: {run:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    pub fn secret_file(&self) -> PathBuf {
        self.dir.path().join("secret")
    }

    /// `--cluster A,B,C`.
    pub fn cluster_list(&self) -> String {
        self.addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `command` followed by the options that reach this cluster.
    pub fn args(&self, command: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--cluster".into(),
            self.cluster_list(),
            "--secret-file".into(),
            self.secret_file().display().to_string(),
            "--cluster-id".into(),
            CLUSTER.0.to_string(),
        ]);
        v
    }

    /// Run `haven COMMAND --cluster ... --secret-file ... --cluster-id ...`.
    pub fn run(&self, command: &[&str]) -> Run {
        let args = self.args(command);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        haven(&refs)
    }

    /// The same, with `stdin` as input.
    pub fn run_with_stdin(&self, command: &[&str], stdin: &[u8]) -> Run {
        let args = self.args(command);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        haven_in(Path::new("."), &refs, Some(stdin), Duration::from_secs(60))
    }
}
