//! `haven bench lock`: a cluster of `haven serve` child processes on loopback (real fdatasync,
//! data under the current directory, as `haven bench cluster`), driven over the remote client.
//!
//! 1. Uncontended, one client: each round is a plain put, then a try-acquire of a free lock,
//!    then its release, so the put and the lock calls meet the same cluster at the same time.
//!    Reported: acquire p50/p99, acquire+release p50/p99, the put's p50/p99, and acquire p50
//!    over put p50 (issue 9's target: at most 1.2; an acquire is one log entry, like a put).
//! 2. Contended: `--contenders` threads, each with its own session, take one exclusive lock in
//!    turn (wait forever, release at once). Reported: grants per second (hand-offs/s; etcd's
//!    mutex reached about 190/s in the issue's reference, the target is 2,000/s). A hand-off
//!    is the release's commit, its apply granting the head waiter, that waiter's held answer
//!    sent from the same apply batch, and the new holder's release reaching the leader.

use super::cluster::percentile;
use crate::cli::children::{free_addrs, start_member, Member};
use haven::client::{LockOptions, LockWait};
use haven::net::ClusterSecret;
use haven::sm::LockMode;
use haven::{Client, ClientOptions, ClusterId, Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"haven bench lock secret";
const CLUSTER: ClusterId = ClusterId(8);

/// Options of `haven bench lock`.
#[derive(clap::Args, Debug)]
pub struct LockBenchArgs {
    /// Members in the cluster.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Seconds of each measurement (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Contenders for the one lock in the hand-off measurement.
    #[arg(long, default_value_t = 16)]
    pub contenders: usize,
    /// TCP connections the contenders share (default: one per contender, at most 16).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Directory for the members' data (default: a new directory under the current one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Uncontended latencies, sorted, in microseconds.
struct Uncontended {
    put_us: Vec<u32>,
    acquire_us: Vec<u32>,
    acquire_release_us: Vec<u32>,
    seconds: f64,
}

/// The contended run.
struct Contended {
    handoffs: u64,
    errors: u64,
    seconds: f64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// Run the benchmark and print its report.
pub fn run(args: &LockBenchArgs) -> Result<()> {
    super::check_members_and_seconds(args.members, args.seconds)?;
    if args.contenders == 0 || args.contenders > haven::limits::MAX_LOCK_WAITERS {
        return Err(Error::InvalidArgument(format!(
            "--contenders must be 1 to {}",
            haven::limits::MAX_LOCK_WAITERS
        )));
    }
    let (workdir, secret_file) =
        super::workdir_with_secret(args.dir.as_deref(), "haven-bench-lock", SECRET)?;
    let dir = workdir.path();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| Error::io("creating the data directory", e))?;
    let addrs = free_addrs(args.members)?;
    let mut members: Vec<Member> = (1..=args.members)
        .map(|id| start_member(&data, id, &addrs, &secret_file, CLUSTER, &[]))
        .collect::<Result<_>>()?;
    let secret = ClusterSecret::new(SECRET.to_vec())?;
    let addr_strings: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let addr_refs: Vec<&str> = addr_strings.iter().map(String::as_str).collect();
    let options = ClientOptions {
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let connect = || Client::connect(&addr_refs, CLUSTER, &secret, options.clone());
    let probe = super::wait_for_leader(connect)?;
    let measure_for = Duration::from_secs_f64(args.seconds);
    eprintln!("haven bench lock: uncontended, {:.1} s", args.seconds);
    let uncontended = uncontended(&probe, measure_for)?;
    eprintln!(
        "haven bench lock: {} contenders, {:.1} s",
        args.contenders, args.seconds
    );
    let connections = args
        .connections
        .unwrap_or(args.contenders.min(16))
        .clamp(1, args.contenders);
    let clients: Vec<Client> = (0..connections).map(|_| connect()).collect::<Result<_>>()?;
    let contended = contended(&clients, args.contenders, measure_for)?;
    let leader = probe
        .status()
        .ok()
        .and_then(|s| s.leader)
        .map_or(0, |l| l.0);
    drop(clients);
    drop(probe);
    for m in &mut members {
        m.stop();
    }
    report(args, connections, leader, &uncontended, &contended);
    Ok(())
}

fn uncontended(client: &Client, measure_for: Duration) -> Result<Uncontended> {
    let session = client.grant_session(Duration::from_secs(10))?;
    let value = vec![b'v'; 100];
    let mut out = Uncontended {
        put_us: Vec::new(),
        acquire_us: Vec::new(),
        acquire_release_us: Vec::new(),
        seconds: 0.0,
    };
    let try_lock = LockOptions {
        mode: LockMode::Exclusive,
        wait: LockWait::Try,
        lock_delay: Duration::ZERO,
    };
    let warm_up = Duration::from_millis(500);
    let started = Instant::now();
    let mut measuring_since = None;
    let mut n: u64 = 0;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= warm_up + measure_for {
            break;
        }
        let measuring = elapsed >= warm_up;
        if measuring && measuring_since.is_none() {
            measuring_since = Some(Instant::now());
        }
        let key = format!("bench-lock-put-{}", n % 1000);
        n += 1;
        let t0 = Instant::now();
        client.put(key.as_bytes(), &value)?;
        let t1 = Instant::now();
        let guard = client
            .lock_with(b"bench-uncontended", &session, try_lock)?
            .ok_or_else(|| Error::Unavailable("the uncontended lock was busy".into()))?;
        let t2 = Instant::now();
        guard.unlock()?;
        let t3 = Instant::now();
        if measuring {
            out.put_us.push(micros(t1 - t0));
            out.acquire_us.push(micros(t2 - t1));
            out.acquire_release_us.push(micros(t3 - t1));
        }
    }
    out.seconds = measuring_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let _ = session.revoke();
    out.put_us.sort_unstable();
    out.acquire_us.sort_unstable();
    out.acquire_release_us.sort_unstable();
    Ok(out)
}

fn contended(clients: &[Client], contenders: usize, measure_for: Duration) -> Result<Contended> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let handoffs = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for c in 0..contenders {
        let client = clients[c % clients.len()].clone();
        let session = client.grant_session(Duration::from_secs(10))?;
        let (stop, measuring, handoffs, errors) = (
            Arc::clone(&stop),
            Arc::clone(&measuring),
            Arc::clone(&handoffs),
            Arc::clone(&errors),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("bench-contender-{c}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match client.lock(
                            b"bench-contended",
                            LockMode::Exclusive,
                            &session,
                            LockWait::Forever,
                        ) {
                            Ok(Some(guard)) => {
                                if measuring.load(Ordering::Relaxed) {
                                    handoffs.fetch_add(1, Ordering::Relaxed);
                                }
                                if guard.unlock().is_err() {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(None) | Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let _ = session.revoke();
                })
                .map_err(|e| Error::io("spawning a contender", e))?,
        );
    }
    std::thread::sleep(Duration::from_millis(500)); // warm-up: every contender queued
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    std::thread::sleep(measure_for);
    measuring.store(false, Ordering::SeqCst);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    Ok(Contended {
        handoffs: handoffs.load(Ordering::SeqCst),
        errors: errors.load(Ordering::SeqCst),
        seconds,
    })
}

fn report(args: &LockBenchArgs, connections: usize, leader: u64, u: &Uncontended, c: &Contended) {
    let put_p50 = percentile(&u.put_us, 0.50);
    let put_p99 = percentile(&u.put_us, 0.99);
    let acq_p50 = percentile(&u.acquire_us, 0.50);
    let acq_p99 = percentile(&u.acquire_us, 0.99);
    let ar_p50 = percentile(&u.acquire_release_us, 0.50);
    let ar_p99 = percentile(&u.acquire_release_us, 0.99);
    let ratio = if put_p50 > 0.0 {
        acq_p50 / put_p50
    } else {
        0.0
    };
    let per_sec = if c.seconds > 0.0 {
        c.handoffs as f64 / c.seconds
    } else {
        0.0
    };
    if args.json {
        println!(
            r#"{{"members":{},"leader":{leader},"uncontended":{{"rounds":{},"seconds":{:.3},"put_p50_ms":{put_p50:.3},"put_p99_ms":{put_p99:.3},"acquire_p50_ms":{acq_p50:.3},"acquire_p99_ms":{acq_p99:.3},"acquire_release_p50_ms":{ar_p50:.3},"acquire_release_p99_ms":{ar_p99:.3},"acquire_over_put_p50":{ratio:.3}}},"contended":{{"contenders":{},"connections":{connections},"seconds":{:.3},"handoffs":{},"handoffs_per_sec":{per_sec:.1},"errors":{}}}}}"#,
            args.members,
            u.put_us.len(),
            u.seconds,
            args.contenders,
            c.seconds,
            c.handoffs,
            c.errors,
        );
    } else {
        println!(
            "haven bench lock: {} members, uncontended {} rounds in {:.1} s",
            args.members,
            u.put_us.len(),
            u.seconds
        );
        println!("  put              p50 {put_p50:.3} ms   p99 {put_p99:.3} ms");
        println!(
            "  acquire          p50 {acq_p50:.3} ms   p99 {acq_p99:.3} ms   ({ratio:.2}x a put)"
        );
        println!("  acquire+release  p50 {ar_p50:.3} ms   p99 {ar_p99:.3} ms");
        println!(
            "  {} contenders over {connections} connections: {:.0} hand-offs/s ({} in {:.1} s, \
             {} errors)",
            args.contenders, per_sec, c.handoffs, c.seconds, c.errors
        );
    }
}
