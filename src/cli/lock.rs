//! `haven session grant`, `haven lock NAME`, `haven locks`: sessions and locks from the shell.
//!
//! `haven lock` grants a session (kept alive by this process), takes the lock, prints the
//! fencing token as a decimal number on stdout, holds the lock for `--hold-ms` or until stdin
//! closes, releases it and exits 0; exit 1 if `--wait-ms` passed without a grant. The lock is
//! held only while this process keeps its session alive: a paused or killed holder loses it
//! after the session's TTL, and the token is what lets the protected resource refuse the late
//! writes of a holder that did not notice (see the README, "Sessions and locks").

use super::exit::{fail, Outcome, EXIT_NO};
use super::kv::{to_hex, ClusterArgs};
use haven::client::{LockOptions, LockWait, SessionState};
use haven::observe::json_string;
use haven::sm::{LockInfo, LockMode};
use haven::{Error, Result};
use std::io::{Read, Write};
use std::time::Duration;

/// `haven session ...`.
#[derive(clap::Subcommand, Debug)]
pub enum SessionCommand {
    /// Grant a session and print its id and TTL (`ID<TAB>TTL_MS`). Nothing keeps it alive
    /// after this command exits: it expires after its TTL unless revoked first.
    Grant {
        /// The session's time to live without keepalives, in milliseconds.
        #[arg(long)]
        ttl_ms: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// `haven lock NAME`.
#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// The lock's name (text).
    pub name: String,
    /// Take it shared (readers share it; a writer waits for all of them).
    #[arg(long)]
    pub shared: bool,
    /// Give up after this many milliseconds without a grant (exit 1); default: wait forever.
    #[arg(long)]
    pub wait_ms: Option<u64>,
    /// Hold the lock this many milliseconds, then release it; default: until stdin closes.
    #[arg(long)]
    pub hold_ms: Option<u64>,
    /// The TTL of the session the lock is held through, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub ttl_ms: u64,
    /// Lock-delay: if this process's session expires while it holds the lock (it was paused or
    /// cut off, not a release), the lock is granted to no one for this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub lock_delay_ms: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `haven locks`.
#[derive(clap::Args, Debug)]
pub struct LocksArgs {
    /// One JSON object per lock, one per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn print(line: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| fail(Error::io("writing to stdout", e)))
}

/// `haven session grant`.
pub fn session(command: &SessionCommand) -> Outcome {
    match command {
        SessionCommand::Grant { ttl_ms, cluster } => {
            let client = cluster.connect().map_err(fail)?;
            let session = client
                .grant_session(Duration::from_millis(*ttl_ms))
                .map_err(fail)?;
            print(&format!("{}\t{}", session.id(), session.ttl().as_millis()))
        }
    }
}

/// `haven lock NAME`.
pub fn lock(args: &LockArgs) -> Outcome {
    if args.name.is_empty() {
        return Err(fail(Error::InvalidArgument(
            "the lock name is empty".into(),
        )));
    }
    let client = args.cluster.connect().map_err(fail)?;
    let session = client
        .grant_session(Duration::from_millis(args.ttl_ms))
        .map_err(fail)?;
    let mode = if args.shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let wait = match args.wait_ms {
        Some(0) => LockWait::Try,
        Some(ms) => LockWait::Deadline(Duration::from_millis(ms)),
        None => LockWait::Forever,
    };
    let options = LockOptions {
        mode,
        wait,
        lock_delay: Duration::from_millis(args.lock_delay_ms),
    };
    let Some(guard) = client
        .lock_with(args.name.as_bytes(), &session, options)
        .map_err(fail)?
    else {
        let _ = session.revoke();
        return Err((EXIT_NO, format!("lock {:?} not granted in time", args.name)));
    };
    print(&guard.token().to_string())?;
    hold(args.hold_ms);
    if session.state() == SessionState::Lost {
        return Err(fail(Error::SessionExpired(format!(
            "the session of lock {:?} ended while it was held: the lock passed on",
            args.name
        ))));
    }
    guard.unlock().map_err(fail)?;
    let _ = session.revoke();
    Ok(())
}

/// Wait `hold_ms`, or until stdin closes (end of file or an error). `haven lock` and `haven elect`
/// hold this way.
pub(super) fn hold(hold_ms: Option<u64>) {
    match hold_ms {
        Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
        None => {
            let mut sink = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            // Bounded by stdin: returns when the other side closes it.
            while let Ok(n) = stdin.read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "exclusive",
        LockMode::Shared => "shared",
    }
}

fn name_text(name: &[u8]) -> String {
    String::from_utf8(name.to_vec()).unwrap_or_else(|_| format!("0x{}", to_hex(name)))
}

/// One line of `haven locks`.
pub fn lock_line(lock: &LockInfo, json: bool) -> Result<String> {
    let name = name_text(&lock.name);
    Ok(if json {
        let holders: Vec<String> = lock
            .holders
            .iter()
            .map(|h| {
                format!(
                    "{{\"token\":{},\"session\":{},\"mode\":\"{}\"}}",
                    h.token,
                    h.session,
                    mode_name(h.mode)
                )
            })
            .collect();
        let waiters: Vec<String> = lock
            .waiters
            .iter()
            .map(|w| {
                format!(
                    "{{\"request\":{},\"session\":{},\"mode\":\"{}\"}}",
                    w.request.0,
                    w.session,
                    mode_name(w.mode)
                )
            })
            .collect();
        format!(
            "{{\"name\":{},\"holders\":[{}],\"waiters\":[{}]}}",
            json_string(&name),
            holders.join(","),
            waiters.join(",")
        )
    } else {
        let holders: Vec<String> = lock
            .holders
            .iter()
            .map(|h| format!("{}:{}@{}", mode_name(h.mode), h.token, h.session))
            .collect();
        format!(
            "{name}\t{}\t{} waiting",
            holders.join(","),
            lock.waiters.len()
        )
    })
}

/// `haven locks`.
pub fn locks(args: &LocksArgs) -> Outcome {
    let client = args.cluster.connect().map_err(fail)?;
    for lock in client.locks().map_err(fail)? {
        print(&lock_line(&lock, args.json).map_err(fail)?)?;
    }
    Ok(())
}
