//! The `haven` command line: argument parsing and dispatch. Exit codes are documented in
//! [`exit`] and the README.

pub mod bench;
pub mod children;
pub mod demo;
pub mod elect;
pub mod exit;
pub mod kv;
pub mod lock;
pub mod member;
pub mod progress;
pub mod ring;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod tls;
pub mod watch;

use clap::{Parser, Subcommand};
use exit::finish;

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
    /// Start a 3-member cluster on this machine and show it at work: leader election,
    /// 10,000 writes, a SIGKILL of the leader and the failover time, every key checked, the
    /// crashed member restarted and caught up, the status table. Cleans up after itself.
    Demo(demo::DemoArgs),
    /// Print the version of the haven library this binary was built with.
    Version,
    /// Run one cluster member in the foreground until SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
    /// Store a value under a key.
    Put(kv::PutArgs),
    /// Print a key's value (exit 1, nothing on stdout, if the key is absent).
    Get(kv::GetArgs),
    /// Delete a key (exit 1 if it was absent).
    Del(kv::DelArgs),
    /// Compare-and-swap: store NEW_VALUE if the key holds --expect VALUE (or is absent, with
    /// --expect-absent); exit 1 if the comparison failed.
    Cas(kv::CasArgs),
    /// Print keys (and values) in key order, one `KEY<TAB>VALUE` line each.
    Scan(kv::ScanArgs),
    /// One row per member: role, term, commit and applied index, lag, last contact.
    Status(status::StatusArgs),
    /// TLS helpers: `haven tls gen` makes a CA and certificates for a test cluster.
    Tls {
        /// What to do.
        #[command(subcommand)]
        command: tls::TlsCommand,
    },
    /// List, add, promote and remove members.
    Member {
        /// What to do.
        #[command(subcommand)]
        action: member::MemberCommand,
    },
    /// Back up a cluster's state, check a backup, restore one into a new cluster.
    Snapshot {
        /// What to do.
        #[command(subcommand)]
        action: snapshot::SnapshotCommand,
    },
    /// Print who leads election NAME (`VALUE TAB TOKEN TAB SESSION`, or --json; exit 1 if
    /// nobody leads), or move the cluster's leadership (`haven leader transfer ID`). An
    /// election named `transfer`: options first, then `-- transfer`.
    Leader(elect::LeaderArgs),
    /// Campaign in election NAME with VALUE, print the fencing token once leading, hold the
    /// leadership (--hold-ms, or until stdin closes), resign.
    Elect(elect::ElectArgs),
    /// Replicated partition maps: create, join, leave, weight, show, owners KEY, moves.
    Ring(ring::RingArgs),
    /// Sessions (leases): `haven session grant --ttl-ms N`.
    Session {
        /// What to do.
        #[command(subcommand)]
        action: lock::SessionCommand,
    },
    /// Take a lock, print its fencing token, hold it (--hold-ms, or until stdin closes),
    /// release it; exit 1 if --wait-ms passed without a grant.
    Lock(lock::LockArgs),
    /// Every lock with holders or waiters (`NAME<TAB>HOLDERS<TAB>N waiting`, or --json).
    Locks(lock::LocksArgs),
    /// Print every change of the keys under PREFIX as it happens, one line per event
    /// (`REVISION TAB put|delete TAB KEY TAB VALUE`, or JSON with --json); exit 0 after --count
    /// events, 1 if the cluster ends the watch (compacted, overflow).
    Watch(watch::WatchArgs),
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
    Wal(bench::wal::WalBenchArgs),
    /// A 3-member cluster of `haven serve` processes on loopback, driven by closed-loop
    /// writers over the remote client: ops/s, latency percentiles, members' memory.
    Cluster(bench::cluster::ClusterBenchArgs),
    /// Partition-map placement: balance, movement, lookup and rebuild time per strategy.
    Ring(bench::ring::RingBenchArgs),
    /// Watch fan-out: a 3-member cluster in this process under a paced write load; events/s
    /// delivered to each count of watchers, completeness, write-to-delivery latency.
    Watch(bench::watch::WatchBenchArgs),
    /// Locks: a 3-member cluster of `haven serve` processes; uncontended acquire+release
    /// latency beside a plain put's, and hand-offs/s among contenders on one lock.
    Lock(bench::lock::LockBenchArgs),
}

/// Run the parsed command; the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Version => {
            println!("haven {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Serve(args) => serve::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Put(args) => finish("put", kv::put(&args)),
        Command::Get(args) => finish("get", kv::get(&args)),
        Command::Del(args) => finish("del", kv::del(&args)),
        Command::Cas(args) => finish("cas", kv::cas(&args)),
        Command::Scan(args) => finish("scan", kv::scan(&args)),
        Command::Status(args) => finish("status", status::run(&args).map_err(exit::fail)),
        Command::Tls { command } => finish("tls", tls::run(&command).map_err(exit::fail)),
        Command::Member { action } => finish("member", member::run(&action)),
        Command::Snapshot { action } => finish("snapshot", snapshot::run(&action)),
        Command::Leader(args) => finish("leader", elect::leader(&args)),
        Command::Elect(args) => finish("elect", elect::elect(&args)),
        Command::Ring(args) => finish("ring", ring::run(&args)),
        Command::Watch(args) => finish("watch", watch::run(&args)),
        Command::Session { action } => finish("session", lock::session(&action)),
        Command::Lock(args) => finish("lock", lock::lock(&args)),
        Command::Locks(args) => finish("locks", lock::locks(&args)),
        Command::Bench { target } => bench::run(target),
    }
}
