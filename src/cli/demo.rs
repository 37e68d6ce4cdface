//! `haven demo`: a whole cluster on this machine, told as a story a newcomer can follow.
//!
//! Starts 3 (or 5) `haven serve` children on free loopback ports, data under a new directory
//! in the current one (its filesystem, so real fdatasync), with a random secret; shows who
//! leads; writes N keys with concurrent writers; SIGKILLs the leader and measures the time
//! until a new leader accepts a write; checks every key; writes more while the old leader is
//! down, restarts it and watches it catch up; checks that every member holds the same state;
//! prints the status table. Children are killed on every way out: drop (also on panic) and
//! SIGINT/SIGTERM (a thread waiting for them kills the children and removes the directory).

use super::children::{free_addrs, kill_all_registered, start_member, Member, WorkDir};
use super::exit::{exit_code, Outcome, EXIT_NO};
use super::progress::{Plain, Progress};
use super::status;
use haven::client::NodeRole;
use haven::net::ClusterSecret;
use haven::{Client, ClientOptions, ClusterId, Error, NodeId, ReadMode, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CLUSTER: ClusterId = ClusterId(1);
/// Writers sharing the client connections while loading keys (each one write in flight).
const WRITERS: usize = 32;
/// How long a step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `haven demo` (all optional).
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keys to write before the failover.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Members in the cluster: 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Keep the cluster's directory (data, logs, secret) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// A failed check: exit 1 with this message.
fn check_failed(message: String) -> (i32, String) {
    (EXIT_NO, format!("check failed: {message}"))
}

fn fail(e: Error) -> (i32, String) {
    (exit_code(&e), e.to_string())
}

/// Stdout, flushed after every line so the story appears as it happens even through a pipe.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Block SIGINT and SIGTERM in this thread (so in every thread it starts) and start a thread
/// that, on either, kills every child, removes `dir` (unless kept) and exits 130.
fn handle_interrupts(dir: PathBuf, keep: bool) {
    // SAFETY: plain libc calls on a sigset_t we own.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let spawned = std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: a valid set and out-pointer.
            unsafe {
                libc::sigwait(&set, &mut signal);
            }
            kill_all_registered();
            if !keep {
                // The children are gone (SIGKILL); give the kernel a moment to close their
                // files before removing the directory.
                std::thread::sleep(Duration::from_millis(100));
                let _ = std::fs::remove_dir_all(&dir);
            }
            eprintln!("\nhaven demo: interrupted; the cluster was stopped");
            std::process::exit(130);
        });
    if spawned.is_err() {
        eprintln!("haven demo: could not watch for Ctrl-C; the cluster is still removed on exit");
    }
}

/// The running cluster: its members (index i is member i+1), addresses and secret.
struct Cluster {
    dir: PathBuf,
    addrs: Vec<SocketAddr>,
    members: Vec<Member>,
    secret: ClusterSecret,
    secret_file: PathBuf,
}

impl Cluster {
    fn addresses(&self, except: Option<usize>) -> Vec<String> {
        self.addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(i + 1) != except)
            .map(|(_, a)| a.to_string())
            .collect()
    }

    fn client(&self, except: Option<usize>, timeout: Duration) -> Result<Client> {
        let addrs = self.addresses(except);
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        Client::connect(
            &refs,
            CLUSTER,
            &self.secret,
            ClientOptions {
                request_timeout: timeout,
                ..ClientOptions::default()
            },
        )
    }

    /// A client pinned to member `id` (no switch to the leader).
    fn pinned(&self, id: usize) -> Result<Client> {
        let addr = self.addrs[id - 1].to_string();
        Client::connect(
            &[addr.as_str()],
            CLUSTER,
            &self.secret,
            ClientOptions {
                request_timeout: Duration::from_secs(2),
                prefer_leader: false,
                read_mode: ReadMode::Stale,
                ..ClientOptions::default()
            },
        )
    }

    fn start(&mut self, id: usize) -> Result<()> {
        let member = start_member(&self.dir, id, &self.addrs, &self.secret_file, CLUSTER, &[])?;
        self.members[id - 1] = member;
        Ok(())
    }
}

/// Poll `f` every 20 ms until it gives `Some`, or fail after `STEP_TIMEOUT` naming `what`.
fn wait_for<T>(
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> std::result::Result<T, (i32, String)> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(check_failed(format!(
                "{what} did not happen within {} s",
                STEP_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn key(i: usize) -> String {
    format!("demo/key-{i:06}")
}

/// Write keys `range` with `WRITERS` concurrent writers; fails on the first error.
fn write_keys(
    client: &Client,
    range: std::ops::Range<usize>,
    value: &(dyn Fn(usize) -> String + Sync),
    label: &'static str,
) -> std::result::Result<Duration, (i32, String)> {
    let total = range.len() as u64;
    let next = AtomicU64::new(range.start as u64);
    let done = AtomicU64::new(0);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..WRITERS.min(range.len().max(1)) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= range.end {
                        return;
                    }
                    match client.put(key(i).as_bytes(), value(i).as_bytes()) {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e);
                            stop.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            });
        }
        let mut progress = Progress::new(label, total, Plain::QuarterLines);
        loop {
            let d = done.load(Ordering::Relaxed);
            if d >= total || stop.load(Ordering::Relaxed) {
                progress.finish(d);
                break;
            }
            progress.set(d, "");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(fail(e));
    }
    Ok(started.elapsed())
}

/// Every key in `expected` read back (range scans of the key prefix, linearizable): the
/// number checked, or the first discrepancies.
fn verify(
    client: &Client,
    expected: &BTreeMap<String, String>,
) -> std::result::Result<usize, (i32, String)> {
    let prefix = b"demo/key-".to_vec();
    let end = haven::sm::prefix_end(&prefix);
    let mut start = prefix.clone();
    let mut seen = BTreeMap::new();
    loop {
        let page = client
            .range(&start, end.as_deref(), haven::limits::MAX_SCAN_LIMIT as u32)
            .map_err(fail)?;
        for kv in &page.entries {
            seen.insert(
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            );
        }
        match page.entries.last() {
            Some(last) if page.more => {
                start = last.key.clone();
                start.push(0);
            }
            _ => break,
        }
    }
    let missing = expected.keys().filter(|k| !seen.contains_key(*k)).count();
    let wrong = expected
        .iter()
        .filter(|(k, v)| seen.get(*k).is_some_and(|s| s != *v))
        .count();
    let extra = seen.keys().filter(|k| !expected.contains_key(*k)).count();
    if missing + wrong + extra > 0 {
        return Err(check_failed(format!(
            "{missing} keys missing, {wrong} with a wrong value, {extra} unexpected"
        )));
    }
    Ok(expected.len())
}

/// The leader every running member agrees on (asking each one directly).
fn agreed_leader(cluster: &Cluster, not: Option<usize>) -> Option<(usize, u64)> {
    let mut agreed = None;
    for m in cluster.members.iter().filter(|m| m.is_running()) {
        let s = cluster.pinned(m.id).ok()?.status().ok()?;
        let leader = s.leader.filter(|l| Some(l.0 as usize) != not)?;
        if agreed.is_some_and(|(l, _)| l != leader.0 as usize) {
            return None;
        }
        agreed = Some((leader.0 as usize, s.term.0));
    }
    agreed
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Run the demo; the process exit code.
pub fn run(args: &DemoArgs) -> i32 {
    match demo(args) {
        Ok(()) => 0,
        Err((code, message)) => {
            super::exit::report("demo", &message);
            code
        }
    }
}

fn demo(args: &DemoArgs) -> Outcome {
    if args.members != 3 && args.members != 5 {
        return Err(fail(Error::InvalidArgument(
            "--members must be 3 or 5".into(),
        )));
    }
    if args.keys == 0 || args.keys > 1_000_000 {
        return Err(fail(Error::InvalidArgument(
            "--keys must be 1 to 1000000".into(),
        )));
    }
    let demo_started = Instant::now();
    let mut workdir = WorkDir::create("haven-demo").map_err(fail)?;
    if args.keep {
        workdir.keep();
    }
    let dir = workdir.path().to_path_buf();
    handle_interrupts(dir.clone(), args.keep);

    // 1. The cluster.
    let mut secret_bytes = [0u8; 32];
    getrandom::getrandom(&mut secret_bytes)
        .map_err(|e| fail(Error::Fatal(format!("no randomness for the secret: {e}"))))?;
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, secret_bytes)
        .map_err(|e| fail(Error::io("writing the secret", e)))?;
    let addrs = free_addrs(args.members).map_err(fail)?;
    say(&format!(
        "haven demo: a {}-member cluster on this machine, data in {}",
        args.members,
        dir.display()
    ));
    let mut cluster = Cluster {
        dir: dir.clone(),
        addrs,
        members: Vec::new(),
        secret: ClusterSecret::new(secret_bytes.to_vec()).map_err(fail)?,
        secret_file,
    };
    for id in 1..=args.members {
        let member = start_member(&dir, id, &cluster.addrs, &cluster.secret_file, CLUSTER, &[])
            .map_err(fail)?;
        say(&format!(
            "  started member {id}: haven serve --listen {} (pid {})",
            cluster.addrs[id - 1],
            member.pid().unwrap_or(0)
        ));
        cluster.members.push(member);
    }
    let started = Instant::now();
    let (leader, term) = wait_for("a leader election", || agreed_leader(&cluster, None))?;
    say(&format!(
        "\n1. The members elected member {leader} as leader (term {term}) in {}.",
        ms(started.elapsed())
    ));

    // 2. Writes.
    let client = cluster
        .client(None, Duration::from_secs(10))
        .map_err(fail)?;
    let mut tag = [0u8; 4];
    let _ = getrandom::getrandom(&mut tag);
    let tag = super::kv::to_hex(&tag);
    let value = |i: usize| format!("value-{i}-{tag}");
    say(&format!(
        "\n2. Writing {} keys through the leader ({WRITERS} concurrent writers; each write is \
         acknowledged once a majority has it on disk).",
        args.keys
    ));
    let took = write_keys(&client, 0..args.keys, &value, "writing")?;
    say(&format!(
        "   wrote {} keys in {} ({:.0} writes/s).",
        args.keys,
        ms(took),
        args.keys as f64 / took.as_secs_f64().max(1e-3)
    ));
    let mut expected: BTreeMap<String, String> =
        (0..args.keys).map(|i| (key(i), value(i))).collect();

    // 3. Crash the leader.
    say(&format!(
        "\n3. Crashing the leader: SIGKILL to member {leader} (pid {}).",
        cluster.members[leader - 1].pid().unwrap_or(0)
    ));
    let survivors = cluster
        .client(Some(leader), Duration::from_secs(20))
        .map_err(fail)?;
    let killed_at = Instant::now();
    cluster.members[leader - 1].kill();
    survivors
        .put(b"demo/after-failover", b"accepted")
        .map_err(fail)?;
    let failover = killed_at.elapsed();
    expected.insert("demo/after-failover".into(), "accepted".into());
    let (new_leader, new_term) = wait_for("agreement on the new leader", || {
        agreed_leader(&cluster, Some(leader))
    })?;
    say(&format!(
        "   member {new_leader} took over (term {new_term}); the first write after the crash \
         was accepted {} after the kill.",
        ms(failover)
    ));
    say(&format!("   failover time: {}", ms(failover)));

    // 4. Nothing acknowledged is lost. (The failover key has another prefix; check it alone.)
    let keys_only: BTreeMap<String, String> = expected
        .iter()
        .filter(|(k, _)| k.starts_with("demo/key-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let checked = verify(&survivors, &keys_only)?;
    match survivors.get(b"demo/after-failover").map_err(fail)? {
        Some(v) if v.value == b"accepted" => {}
        other => {
            return Err(check_failed(format!(
                "the write after the failover reads back as {other:?}"
            )))
        }
    }
    say(&format!(
        "\n4. Read back all {checked} keys from the surviving members: every value is there and \
         correct."
    ));

    // 5. More writes while the old leader is down, then bring it back.
    let more = (args.keys / 10).max(1);
    say(&format!(
        "\n5. Writing {more} more keys while member {leader} is down, then restarting it."
    ));
    write_keys(&survivors, args.keys..args.keys + more, &value, "writing")?;
    for i in args.keys..args.keys + more {
        expected.insert(key(i), value(i));
    }
    let target = survivors.status().map_err(fail)?.commit_index;
    cluster.start(leader).map_err(fail)?;
    let restarted_at = Instant::now();
    let behind = wait_for("the restarted member to answer", || {
        cluster.pinned(leader).ok()?.status().ok()
    })?;
    say(&format!(
        "   member {leader} restarted from its own disk at applied index {} ({} entries behind \
         the cluster's commit index {}).",
        behind.applied_index.0,
        target.0.saturating_sub(behind.applied_index.0),
        target.0
    ));
    let caught_up = wait_for("the restarted member to catch up", || {
        let s = cluster.pinned(leader).ok()?.status().ok()?;
        (s.applied_index >= target && s.role == NodeRole::Follower).then_some(s)
    })?;
    say(&format!(
        "   it caught up to index {} in {}, as a follower of member {}.",
        caught_up.applied_index.0,
        ms(restarted_at.elapsed()),
        caught_up.leader.map_or(0, |l: NodeId| l.0)
    ));

    // 6. Every member holds the same state.
    let (applied, hash) = wait_for("all members to hold the same state", || {
        let mut seen = None;
        for m in &cluster.members {
            let h = cluster.pinned(m.id).ok()?.state_hash().ok()?;
            if seen.is_some_and(|s| s != h) {
                return None;
            }
            seen = Some(h);
        }
        seen
    })?;
    let key_of_last = key(args.keys + more - 1);
    let local = cluster
        .pinned(leader)
        .and_then(|c| c.get(key_of_last.as_bytes()))
        .map_err(fail)?;
    if local.map(|v| v.value) != Some(value(args.keys + more - 1).into_bytes()) {
        return Err(check_failed(format!(
            "member {leader}'s own copy of {key_of_last} is wrong after catching up"
        )));
    }
    let total_keys = verify(
        &survivors,
        &expected
            .iter()
            .filter(|(k, _)| k.starts_with("demo/key-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )?;
    say(&format!(
        "\n6. All {} members applied index {} and hold identical state (sha256 {}…); all {} keys \
         read back correctly.",
        args.members,
        applied.0,
        &super::kv::to_hex(&hash)[..16],
        total_keys
    ));

    // 7. The status table.
    let view = status::gather(
        &cluster.addresses(None),
        CLUSTER,
        &cluster.secret,
        Duration::from_secs(2),
    )
    .map_err(fail)?;
    say("\n7. haven status:");
    for line in status::table(&view).lines() {
        say(&format!("   {line}"));
    }

    // Stop: gracefully, so the logs end cleanly; drops kill whatever is left.
    for m in &mut cluster.members {
        m.stop();
    }
    drop(cluster);
    say(&format!(
        "\nDone in {:.1} s: failover {}, {} keys checked, no acknowledged write lost.{}",
        demo_started.elapsed().as_secs_f64(),
        ms(failover),
        total_keys + 1,
        if args.keep {
            format!(" Data and logs kept in {}.", dir.display())
        } else {
            String::new()
        }
    ));
    Ok(())
}
