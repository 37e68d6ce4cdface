//! `haven bench watch`: watch fan-out under a write load. A 3-member cluster in this process
//! (real TCP between the members, data directories under the current directory); writers paced
//! at `--rate` writes/s for `--seconds`; for each count in `--watchers`, that many watches on
//! the written prefix, spread over the members (in process, or over TCP with `--remote`).
//!
//! Reported per watcher count: writes/s achieved, events delivered per second (all watchers
//! together), whether every watcher received every event exactly once and in order, the CPU
//! time the whole process (three members, writers, watchers) spent per write, and latencies
//! over every event delivered to every watcher:
//! - write-to-delivery (p50/p99/max): from the start of the write (its value carries the time)
//!   to its delivery. It includes the write's own commit, so it bounds commit-to-delivery from
//!   above.
//! - ack-to-delivery (p50/p99/max): from the moment the writer heard its write acknowledged
//!   (after the leader applied it, so a little after the commit) to the delivery, 0 when the
//!   watcher had it first. The best estimate of commit-to-delivery a client can take without
//!   the members' help; it errs low by the leader's apply-to-reply time (microseconds in
//!   process, but more when the writer's thread waits for a core). Its p99 is also given
//!   apart for the watchers on the leader and for those on the followers (JSON only): a
//!   follower applies an entry only once the leader's next AppendEntries tells it the commit,
//!   so its watchers' tail is mostly that hop, not the watch fan-out.
//! - write-to-ack p99: the commit latency the writers saw.
//!
//! The load: `--writers` threads (64 by default) share one sequence of writes, write `i` due
//! at `i / rate` after the start; each write is a separate `put` through the leader's
//! in-process client, and a writer waits for its write before taking the next due one. A put
//! blocks until its commit, so the writers are what keeps enough writes in flight: on 2 cores
//! with every member in this process a commit takes about 2-5 ms under this load, and 32
//! writers reached 9,000-9,300 writes/s, 16 about 7,000 (and cost more CPU per write: smaller
//! Raft batches). Each writer thus wakes twice per write (its pacing sleep, its commit), about
//! 20,000 wake-ups a second; measured with perf, the writer threads are about a tenth of the
//! process's CPU. Before measuring, the bench writes once and waits for the cluster to settle
//! ([`settle`]).

use crate::cli::children::{free_addrs, WorkDir};
use haven::client::{Watch, WatchNotice};
use haven::net::ClusterSecret;
use haven::node::{Config, Node};
use haven::{Client, ClientOptions, ClusterId, LogIndex, NodeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `haven bench watch`.
#[derive(clap::Args, Debug)]
pub struct WatchBenchArgs {
    /// Target write rate (writes/s), paced over the writers.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds of writing per watcher count.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Concurrent writers (each waits for its write; the pacing spreads the rate over them).
    #[arg(long, default_value_t = 64)]
    pub writers: usize,
    /// Watcher counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    pub watchers: Vec<usize>,
    /// Watch over TCP (remote clients, pushed frames) instead of in process.
    #[arg(long)]
    pub remote: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One watcher count's figures.
struct Row {
    watchers: usize,
    writes: u64,
    write_seconds: f64,
    delivered: u64,
    deliver_seconds: f64,
    complete: usize,
    ended: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    ack_max_ms: f64,
    /// ack-to-delivery p99 of the watchers on the leader, and of those on the followers
    /// (`None` without such watchers).
    ack_p99_leader_ms: Option<f64>,
    ack_p99_followers_ms: Option<f64>,
    commit_p99_ms: f64,
    cpu_seconds: f64,
}

impl Row {
    fn writes_per_second(&self) -> f64 {
        self.writes as f64 / self.write_seconds
    }

    fn events_per_second(&self) -> f64 {
        self.delivered as f64 / self.deliver_seconds
    }

    fn cpu_micros_per_write(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.writes.max(1) as f64
    }
}

/// What one watcher saw.
struct Received {
    revisions: Vec<u64>,
    latencies_micros: Vec<u32>,
    /// When each event arrived (micros since the epoch).
    arrivals_micros: Vec<u64>,
    ended: bool,
}

/// CPU time (user + system) this process has used so far, in seconds.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we hand it and has no other precondition.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

const SECRET: &[u8] = b"haven bench watch secret";

/// The members, and the size of their WAL segments.
fn start_cluster(dir: &std::path::Path) -> Result<(Vec<Node>, u64), String> {
    let addrs = free_addrs(3).map_err(|e| format!("no free ports: {e}"))?;
    let members: BTreeMap<NodeId, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (NodeId(i as u64 + 1), a.to_string()))
        .collect();
    let secret = ClusterSecret::new(SECRET.to_vec()).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    let mut segment_bytes = 0;
    for (i, addr) in addrs.iter().enumerate() {
        let config = Config::new(
            NodeId(i as u64 + 1),
            ClusterId(1),
            dir.join(format!("n{}", i + 1)),
            *addr,
            members.clone(),
            secret.clone(),
        );
        segment_bytes = config.wal_segment_bytes;
        nodes.push(Node::open(config).map_err(|e| format!("member {}: {e}", i + 1))?);
    }
    Ok((nodes, segment_bytes))
}

fn wait_for_leader(nodes: &[Node]) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for (i, n) in nodes.iter().enumerate() {
            if n.status().is_ok_and(|s| s.leader == Some(n.id())) {
                return Ok(i);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("no leader within 20 s".into())
}

/// Wait (at most 10 s each) until every member has its next WAL segment prepared, then until
/// the idle cluster uses under 5% of a core over two windows of 200 ms running: the members'
/// start-up work would otherwise land in the first measurement. Above all, once the first write
/// took the WAL's first prepared segment, each member's preparer zero-fills and syncs the next
/// 64 MiB (CPU, about a tenth of a 4 s measurement's on 2 cores, and disk writes that slow the
/// WAL's syncs). In a long run that comes back once per segment, amortized over its writes.
fn settle(dir: &std::path::Path, members: usize, segment_bytes: u64) {
    let start = Instant::now();
    let give_up = start + Duration::from_secs(10);
    while prepared_segments(dir, segment_bytes) < members && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(20));
    }
    let give_up = Instant::now() + Duration::from_secs(10);
    let window = Duration::from_millis(200);
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < give_up {
        let before = process_cpu_seconds();
        std::thread::sleep(window);
        let busy = process_cpu_seconds() - before >= 0.05 * window.as_secs_f64();
        quiet = if busy { 0 } else { quiet + 1 };
    }
    eprintln!(
        "haven bench watch: the cluster settled in {} ms",
        start.elapsed().as_millis()
    );
}

/// WAL segment files under `dir` prepared to their full size (`*.prep`, at most three levels
/// down: member, wal directory, file).
fn prepared_segments(dir: &std::path::Path, segment_bytes: u64) -> usize {
    fn walk(dir: &std::path::Path, depth: u32, segment_bytes: u64) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut count = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() && depth > 0 {
                count += walk(&path, depth - 1, segment_bytes);
            } else if path.extension().is_some_and(|e| e == "prep") && meta.len() >= segment_bytes {
                count += 1;
            }
        }
        count
    }
    walk(dir, 2, segment_bytes)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

/// Take events until `expected` of them arrived (`expected` is `u64::MAX - 1` while the writes
/// go on, then their count; `u64::MAX` cuts the watcher off).
fn receive(watch: Watch, epoch: Instant, expected: Arc<AtomicU64>) -> Received {
    let mut got = Received {
        revisions: Vec::new(),
        latencies_micros: Vec::new(),
        arrivals_micros: Vec::new(),
        ended: false,
    };
    loop {
        let expected = expected.load(Ordering::SeqCst);
        if expected == u64::MAX || got.revisions.len() as u64 >= expected {
            break;
        }
        match watch.next_timeout(Duration::from_millis(50)) {
            Some(Ok(WatchNotice::Events { revision, events })) => {
                let now = epoch.elapsed().as_micros() as u64;
                for e in events {
                    got.revisions.push(revision.0);
                    let sent = e
                        .value
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(now, u64::from_le_bytes);
                    got.latencies_micros
                        .push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                    got.arrivals_micros.push(now);
                }
            }
            Some(Ok(WatchNotice::Progress { .. })) => {}
            Some(Ok(_)) | Some(Err(_)) => {
                got.ended = true;
                break;
            }
            None => {}
        }
    }
    got
}

fn measure(
    args: &WatchBenchArgs,
    nodes: &[Node],
    leader: usize,
    watchers: usize,
    phase: usize,
) -> Result<Row, String> {
    let prefix = format!("bench/{phase}/");
    let secret = ClusterSecret::new(SECRET.to_vec()).map_err(|e| e.to_string())?;
    let epoch = Instant::now();
    let expected = Arc::new(AtomicU64::new(u64::MAX - 1));
    let mut receivers = Vec::new();
    let mut remote_clients = Vec::new();
    for w in 0..watchers {
        let node = &nodes[w % nodes.len()];
        let client = if args.remote {
            let addr = node.local_addr().to_string();
            let options = ClientOptions {
                prefer_leader: false,
                ..ClientOptions::default()
            };
            let c = Client::connect(&[addr.as_str()], ClusterId(1), &secret, options)
                .map_err(|e| format!("watcher {w}: {e}"))?;
            remote_clients.push(c.clone());
            c
        } else {
            node.client()
        };
        let watch = client
            .watch_prefix(prefix.as_bytes(), LogIndex(0))
            .map_err(|e| format!("watcher {w}: {e}"))?;
        let expected = Arc::clone(&expected);
        let receiver = std::thread::Builder::new()
            .name(format!("bench-watcher-{w}"))
            .spawn(move || receive(watch, epoch, expected))
            .map_err(|e| format!("watcher {w}: {e}"))?;
        receivers.push(receiver);
    }
    // Paced writers: write i is due at i / rate after the start.
    let writer = nodes[leader].client();
    let total = (args.rate as f64 * args.seconds).max(1.0) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let cpu_at_start = process_cpu_seconds();
    let start = Instant::now();
    let writers: Vec<_> = (0..args.writers.max(1))
        .map(|w| {
            let (writer, next, failures, prefix) = (
                writer.clone(),
                Arc::clone(&next),
                Arc::clone(&failures),
                prefix.clone(),
            );
            let rate = args.rate.max(1);
            // Returns each write's revision, when its acknowledgement came (micros since the
            // epoch) and how long the write took (micros).
            std::thread::Builder::new()
                .name(format!("bench-writer-{w}"))
                .spawn(move || {
                    let mut acks: Vec<(u64, u64, u32)> = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return acks;
                        }
                        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let sent = epoch.elapsed().as_micros() as u64;
                        let mut value = sent.to_le_bytes().to_vec();
                        value.extend_from_slice(&[0u8; 24]);
                        let key = format!("{prefix}{}", i % 1000);
                        match writer.put(key.as_bytes(), &value) {
                            Ok(put) => {
                                let acked = epoch.elapsed().as_micros() as u64;
                                let took = (acked - sent).min(u64::from(u32::MAX)) as u32;
                                acks.push((put.revision.0, acked, took));
                            }
                            Err(_) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| format!("writer: {e}"))?;
    let mut acked_at: HashMap<u64, u64> = HashMap::new();
    let mut commit_micros: Vec<u32> = Vec::new();
    for w in writers {
        for (revision, acked, took) in w.join().unwrap_or_default() {
            acked_at.insert(revision, acked);
            commit_micros.push(took);
        }
    }
    let write_seconds = start.elapsed().as_secs_f64();
    let writes = total - failures.load(Ordering::Relaxed);
    expected.store(writes, Ordering::SeqCst);
    // Every watcher ends once it has every event; one that cannot within 10 s is cut off.
    let cutoff = Instant::now() + Duration::from_secs(10);
    while receivers.iter().any(|r| !r.is_finished()) && Instant::now() < cutoff {
        std::thread::sleep(Duration::from_millis(1));
    }
    let deliver_seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds() - cpu_at_start;
    expected.store(u64::MAX, Ordering::SeqCst);
    let mut all_latencies = Vec::new();
    let mut ack_latencies: Vec<u32> = Vec::new();
    let mut delivered = 0u64;
    let mut complete = 0;
    let mut ended = 0;
    // Watcher w is on member w % members (see above).
    let (mut on_leader, mut on_followers): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    for (w, r) in receivers.into_iter().enumerate() {
        let got = r
            .join()
            .map_err(|_| "a watcher thread panicked".to_string())?;
        delivered += got.revisions.len() as u64;
        let in_order = got.revisions.windows(2).all(|w| w[0] < w[1]);
        if in_order && got.revisions.len() as u64 == writes && !got.ended {
            complete += 1;
        }
        if got.ended {
            ended += 1;
        }
        all_latencies.extend(got.latencies_micros);
        for (revision, arrived) in got.revisions.iter().zip(&got.arrivals_micros) {
            if let Some(acked) = acked_at.get(revision) {
                let after = arrived.saturating_sub(*acked).min(u64::from(u32::MAX));
                ack_latencies.push(after as u32);
                if w % nodes.len() == leader {
                    on_leader.push(after as u32);
                } else {
                    on_followers.push(after as u32);
                }
            }
        }
    }
    all_latencies.sort_unstable();
    ack_latencies.sort_unstable();
    on_leader.sort_unstable();
    on_followers.sort_unstable();
    commit_micros.sort_unstable();
    drop(remote_clients);
    Ok(Row {
        watchers,
        writes,
        write_seconds,
        delivered,
        deliver_seconds,
        complete,
        ended,
        p50_ms: percentile(&all_latencies, 0.50),
        p99_ms: percentile(&all_latencies, 0.99),
        max_ms: percentile(&all_latencies, 1.0),
        ack_p50_ms: percentile(&ack_latencies, 0.50),
        ack_p99_ms: percentile(&ack_latencies, 0.99),
        ack_max_ms: percentile(&ack_latencies, 1.0),
        ack_p99_leader_ms: (!on_leader.is_empty()).then(|| percentile(&on_leader, 0.99)),
        ack_p99_followers_ms: (!on_followers.is_empty()).then(|| percentile(&on_followers, 0.99)),
        commit_p99_ms: percentile(&commit_micros, 0.99),
        cpu_seconds,
    })
}

/// Milliseconds as JSON: three decimals, or `null`.
fn json_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "null".to_string(), |ms| format!("{ms:.3}"))
}

/// Run the bench.
pub fn run(args: &WatchBenchArgs) -> haven::Result<()> {
    run_inner(args).map_err(haven::Error::Fatal)
}

fn run_inner(args: &WatchBenchArgs) -> Result<(), String> {
    if args.watchers.is_empty() || args.seconds <= 0.0 || args.rate == 0 {
        return Err("--watchers, --seconds and --rate must be positive".into());
    }
    let dir = WorkDir::create("haven-bench-watch").map_err(|e| e.to_string())?;
    let (nodes, segment_bytes) = start_cluster(dir.path())?;
    let leader = wait_for_leader(&nodes)?;
    nodes[leader]
        .client()
        .put(b"bench/warm-up", b"")
        .map_err(|e| format!("warm-up write: {e}"))?;
    settle(dir.path(), nodes.len(), segment_bytes);
    let mut rows = Vec::new();
    for (phase, &watchers) in args.watchers.iter().enumerate() {
        eprintln!("haven bench watch: {watchers} watcher(s)...");
        rows.push(measure(args, &nodes, leader, watchers, phase)?);
    }
    for n in &nodes {
        let _ = n.shutdown();
    }
    if args.json {
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"watchers\":{},\"writes\":{},\"writes_per_second\":{:.0},\
                     \"events_delivered\":{},\"events_per_second\":{:.0},\
                     \"watchers_complete\":{},\"watchers_ended\":{},\
                     \"p50_write_to_delivery_ms\":{:.3},\"p99_write_to_delivery_ms\":{:.3},\
                     \"max_write_to_delivery_ms\":{:.3},\"p50_ack_to_delivery_ms\":{:.3},\
                     \"p99_ack_to_delivery_ms\":{:.3},\"max_ack_to_delivery_ms\":{:.3},\
                     \"p99_ack_to_delivery_leader_ms\":{},\
                     \"p99_ack_to_delivery_followers_ms\":{},\
                     \"p99_write_to_ack_ms\":{:.3},\"cpu_us_per_write\":{:.1}}}",
                    r.watchers,
                    r.writes,
                    r.writes_per_second(),
                    r.delivered,
                    r.events_per_second(),
                    r.complete,
                    r.ended,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.ack_p50_ms,
                    r.ack_p99_ms,
                    r.ack_max_ms,
                    json_ms(r.ack_p99_leader_ms),
                    json_ms(r.ack_p99_followers_ms),
                    r.commit_p99_ms,
                    r.cpu_micros_per_write()
                )
            })
            .collect();
        println!(
            "{{\"bench\":\"watch\",\"remote\":{},\"rate\":{},\"seconds\":{},\"results\":[{}]}}",
            args.remote,
            args.rate,
            args.seconds,
            items.join(",")
        );
    } else {
        println!(
            "{:>8} {:>8} {:>9} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "watchers",
            "writes",
            "writes/s",
            "delivered",
            "events/s",
            "complete",
            "w->d p50",
            "w->d p99",
            "a->d p50",
            "a->d p99",
            "w->a p99",
            "cpu us/w"
        );
        for r in &rows {
            println!(
                "{:>8} {:>8} {:>9.0} {:>10} {:>10.0} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.1}",
                r.watchers,
                r.writes,
                r.writes_per_second(),
                r.delivered,
                r.events_per_second(),
                format!("{}/{}", r.complete, r.watchers),
                r.p50_ms,
                r.p99_ms,
                r.ack_p50_ms,
                r.ack_p99_ms,
                r.commit_p99_ms,
                r.cpu_micros_per_write()
            );
        }
        println!(
            "(ms; w->d: write start to delivery, a->d: write acknowledged to delivery, \
             w->a: the write's own latency; cpu us/w: the process's CPU time per write)"
        );
    }
    Ok(())
}
