//! The `haven` command line: argument parsing and the commands that do not need a cluster.

pub mod bench;
pub mod cluster_bench;
pub mod serve;

use clap::{Parser, Subcommand};

/// haven: an embeddable, replicated, fault-tolerant storage engine.
#[derive(Parser, Debug)]
#[command(name = "haven", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the version of the haven library this binary was built with.
    Version,
    /// Run one cluster member in the foreground until SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
    /// Measure a part of haven on this machine.
    Bench {
        /// What to measure.
        #[command(subcommand)]
        target: BenchTarget,
    },
}

/// What `haven bench` measures.
#[derive(Subcommand, Debug)]
pub enum BenchTarget {
    /// Synced WAL appends of 256-byte entries in batches of 1, 16 and 256, against the raw
    /// floor (write + fdatasync of as many bytes to a plain preallocated file).
    Wal(bench::WalBenchArgs),
    /// A 3-member cluster of `haven serve` processes on loopback, driven by closed-loop
    /// writers over the remote client: ops/s, latency percentiles, members' memory.
    Cluster(cluster_bench::ClusterBenchArgs),
}

/// Run the parsed command; the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Version => {
            println!("haven {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Serve(args) => serve::run(&args),
        Command::Bench {
            target: BenchTarget::Cluster(args),
        } => match cluster_bench::run(&args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("haven bench cluster: {e}");
                1
            }
        },
        Command::Bench {
            target: BenchTarget::Wal(args),
        } => match bench::run_wal(&args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("haven bench wal: {e}");
                1
            }
        },
    }
}
