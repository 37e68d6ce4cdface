//! `haven bench cluster`: a 3-member cluster of `haven serve` child processes on loopback (real
//! fdatasync, in a directory under the working directory, so on its filesystem, not a tmpfs),
//! driven by N closed-loop writers over the remote client, each with its own session: each
//! writer puts a value, waits for the answer, and puts the next.
//!
//! Reports ops/s, p50/p99/max latency and each member's resident memory (VmHWM, VmRSS).

use crate::cli::children::{free_addrs, start_member, Member};
use crate::cli::progress::{Plain, Progress};
use haven::net::ClusterSecret;
use haven::{Client, ClientOptions, ClusterId, Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"haven bench cluster secret";
const CLUSTER: ClusterId = ClusterId(7);
/// Distinct keys written (a mix of inserts and overwrites; bounds the state's size).
const KEYSPACE: u64 = 100_000;

/// Options of `haven bench cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterBenchArgs {
    /// Members in the cluster.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Closed-loop writers (each one session, one write in flight).
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Seconds to measure (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// TCP connections the writers share (default: one per 32 writers, at most 8).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Directory for the members' data (default: a new directory under the current one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run twice, over plaintext and then over TLS (certificates made by `haven tls gen`),
    /// and report TLS's throughput as a fraction of plaintext's.
    #[arg(long)]
    pub tls: bool,
    /// Each member's `--watch-window-events` (default: serve's default); 0 turns change
    /// capture off while no watch is open, to measure what capture costs.
    #[arg(long)]
    pub watch_window_events: Option<usize>,
}

/// CPU time (user + system) a process has used, in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (for /proc CPU times).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Resident memory of a process from /proc: (VmHWM, VmRSS) in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// What one writer measured.
struct WriterResult {
    latencies_us: Vec<u32>,
    errors: u64,
}

/// The `p` quantile (0..=1) of `sorted` microseconds, in milliseconds.
pub(super) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

/// Run the benchmark; prints the report (two, and their ratio, with `--tls`).
pub fn run(args: &ClusterBenchArgs) -> Result<()> {
    if !args.tls {
        return run_once(args, false).map(|_| ());
    }
    let plain = run_once(args, false)?;
    let tls = run_once(args, true)?;
    let ratio = if plain > 0.0 { tls / plain } else { 0.0 };
    if args.json {
        println!(r#"{{"tls_over_plaintext_ops_ratio":{ratio:.3}}}"#);
    } else {
        println!("TLS / plaintext throughput: {ratio:.3}");
    }
    Ok(())
}

/// One run, over TLS or plaintext; prints its report and returns its ops/s.
fn run_once(args: &ClusterBenchArgs, tls: bool) -> Result<f64> {
    super::check_members_and_seconds(args.members, args.seconds)?;
    if args.writers == 0 || args.writers > 4096 {
        return Err(Error::InvalidArgument("--writers must be 1 to 4096".into()));
    }
    if args.value_bytes > haven::limits::MAX_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "--value-bytes is over the limit of {}",
            haven::limits::MAX_VALUE_BYTES
        )));
    }
    let (workdir, secret_file) =
        super::workdir_with_secret(args.dir.as_deref(), "haven-bench-cluster", SECRET)?;
    let dir = workdir.path();
    let window = args.watch_window_events.map(|n| n.to_string());
    let addrs = free_addrs(args.members)?;
    let tls_dir = dir.join(if tls { "tls" } else { "no-tls" });
    if tls {
        crate::cli::tls::generate(&crate::cli::tls::TlsGenArgs {
            dir: tls_dir.clone(),
            members: args.members,
            clients: 0,
            hosts: "127.0.0.1".into(),
            days: 1,
        })?;
    }
    let mut members = Vec::new();
    for id in 1..=args.members {
        let cert = tls_dir.join(format!("member-{id}.pem"));
        let key = tls_dir.join(format!("member-{id}-key.pem"));
        let ca = tls_dir.join("ca.pem");
        let (cert, key, ca) = (
            cert.to_string_lossy(),
            key.to_string_lossy(),
            ca.to_string_lossy(),
        );
        let mut extra: Vec<&str> = if tls {
            vec!["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca]
        } else {
            Vec::new()
        };
        if let Some(events) = &window {
            extra.extend(["--watch-window-events", events.as_str()]);
        }
        // Plaintext and TLS runs use their own data directories.
        let data = dir.join(if tls { "tls-data" } else { "data" });
        std::fs::create_dir_all(&data).map_err(|e| Error::io("creating the data directory", e))?;
        members.push(start_member(
            &data,
            id,
            &addrs,
            &secret_file,
            CLUSTER,
            &extra,
        )?);
    }
    let secret = ClusterSecret::new(SECRET.to_vec())?;
    let addr_strings: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let addr_refs: Vec<&str> = addr_strings.iter().map(String::as_str).collect();
    let options = ClientOptions {
        request_timeout: Duration::from_secs(10),
        tls: if tls {
            Some(haven::net::ClientTls::from_files(
                &tls_dir.join("ca.pem"),
                None,
                None,
            )?)
        } else {
            None
        },
        ..ClientOptions::default()
    };

    // Wait for a leader: a client connects (finding the leader) and a write succeeds.
    let probe =
        super::wait_for_leader(|| Client::connect(&addr_refs, CLUSTER, &secret, options.clone()))?;
    let leader = probe.status()?.leader;
    drop(probe);

    let connections = args
        .connections
        .unwrap_or_else(|| args.writers.div_ceil(32).min(8))
        .clamp(1, args.writers);
    let clients: Vec<Client> = (0..connections)
        .map(|_| Client::connect(&addr_refs, CLUSTER, &secret, options.clone()))
        .collect::<Result<_>>()?;

    let value = vec![b'v'; args.value_bytes];
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for w in 0..args.writers {
        let client = clients[w % connections].clone();
        let value = value.clone();
        let stop = Arc::clone(&stop);
        let measuring = Arc::clone(&measuring);
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-writer-{w}"))
                .spawn(move || {
                    let mut result = WriterResult {
                        latencies_us: Vec::with_capacity(1 << 16),
                        errors: 0,
                    };
                    let mut n: u64 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let k = (w as u64 * 7919 + n * 104_729) % KEYSPACE;
                        let key = format!("key-{k:08}");
                        n += 1;
                        let start = Instant::now();
                        let ok = client.put(key.as_bytes(), &value).is_ok();
                        if measuring.load(Ordering::Relaxed) {
                            if ok {
                                let us = start.elapsed().as_micros().min(u128::from(u32::MAX));
                                result.latencies_us.push(us as u32);
                            } else {
                                result.errors += 1;
                            }
                        }
                    }
                    result
                })
                .map_err(|e| Error::io("spawning a writer", e))?,
        );
    }
    std::thread::sleep(Duration::from_secs(1)); // warm-up: sessions registered, caches warm
    let pids: Vec<Option<u32>> = members
        .iter()
        .map(Member::pid)
        .chain(std::iter::once(Some(std::process::id())))
        .collect();
    let cpu_before: Vec<Option<u64>> = pids.iter().map(|p| p.and_then(cpu_ticks)).collect();
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let measure_for = Duration::from_secs_f64(args.seconds);
    let mut progress = Progress::new("seconds", measure_for.as_secs().max(1), Plain::Silent);
    while started.elapsed() < measure_for {
        progress.set(started.elapsed().as_secs(), "measuring");
        std::thread::sleep((measure_for - started.elapsed()).min(Duration::from_millis(100)));
    }
    measuring.store(false, Ordering::SeqCst);
    progress.finish(measure_for.as_secs().max(1));
    let elapsed = started.elapsed();
    // CPU seconds each member (and, last, this process: the writers) used while measuring.
    let cpu_seconds: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| match (p.and_then(cpu_ticks), before) {
            (Some(after), Some(before)) => after.saturating_sub(*before) as f64,
            _ => 0.0,
        } / ticks_per_second())
        .collect();
    stop.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for h in handles {
        if let Ok(r) = h.join() {
            latencies.extend(r.latencies_us);
            errors += r.errors;
        }
    }
    let memory: Vec<(usize, Option<(u64, u64)>)> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (i + 1, m.pid().and_then(memory_kib)))
        .collect();
    drop(clients);
    for m in &mut members {
        m.stop();
    }
    latencies.sort_unstable();
    let ops = latencies.len() as f64 / elapsed.as_secs_f64();
    let count = latencies.len().max(1) as f64;
    let cpu_us_per_op: Vec<f64> = cpu_seconds.iter().map(|s| s * 1e6 / count).collect();
    let total_cpu_us_per_op: f64 = cpu_us_per_op.iter().sum();
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    let max = latencies.last().map_or(0.0, |&l| f64::from(l) / 1000.0);
    if args.json {
        let mem: Vec<String> = memory
            .iter()
            .map(|(id, m)| {
                let (hwm, rss) = m.unwrap_or((0, 0));
                let cpu = cpu_us_per_op.get(id - 1).copied().unwrap_or(0.0);
                format!(
                    r#"{{"id":{id},"vm_hwm_kib":{hwm},"vm_rss_kib":{rss},"cpu_us_per_op":{cpu:.1}}}"#
                )
            })
            .collect();
        println!(
            r#"{{"tls":{tls},"members":{},"writers":{},"connections":{},"value_bytes":{},"seconds":{:.3},"ops":{},"errors":{},"ops_per_sec":{:.1},"p50_ms":{:.3},"p99_ms":{:.3},"max_ms":{:.3},"leader":{},"client_cpu_us_per_op":{:.1},"total_cpu_us_per_op":{:.1},"memory":[{}]}}"#,
            args.members,
            args.writers,
            connections,
            args.value_bytes,
            elapsed.as_secs_f64(),
            latencies.len(),
            errors,
            ops,
            p50,
            p99,
            max,
            leader.map_or(0, |l| l.0),
            cpu_us_per_op.last().copied().unwrap_or(0.0),
            total_cpu_us_per_op,
            mem.join(",")
        );
    } else {
        println!(
            "haven bench cluster ({}): {} members, {} writers over {} connections, {}-byte \
             values, {:.1} s",
            if tls { "TLS" } else { "plaintext" },
            args.members,
            args.writers,
            connections,
            args.value_bytes,
            elapsed.as_secs_f64()
        );
        println!(
            "  {:.0} ops/s   p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms   errors {}",
            ops, p50, p99, max, errors
        );
        println!(
            "  CPU per op: {:.1} us in total, {:.1} us in the writers' process",
            total_cpu_us_per_op,
            cpu_us_per_op.last().copied().unwrap_or(0.0)
        );
        for (id, m) in memory {
            let cpu = cpu_us_per_op.get(id - 1).copied().unwrap_or(0.0);
            match m {
                Some((hwm, rss)) => println!(
                    "  member {id}: VmHWM {:.1} MiB, VmRSS {:.1} MiB, CPU {cpu:.1} us/op{}",
                    hwm as f64 / 1024.0,
                    rss as f64 / 1024.0,
                    if leader.map(|l| l.0 as usize) == Some(id) {
                        " (leader)"
                    } else {
                        ""
                    }
                ),
                None => println!("  member {id}: memory unknown"),
            }
        }
    }
    Ok(ops)
}
