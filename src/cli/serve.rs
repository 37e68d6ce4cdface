//! `haven serve`: run one member in the foreground until SIGTERM or SIGINT.

use super::exit::{EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE};
use haven::net::{ClusterSecret, MemberTls};
use haven::node::{Config, Node, NodeThread};
use haven::{ClusterId, Error, NodeId, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `haven serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// This member's id (not 0).
    #[arg(long)]
    pub id: u64,
    /// Address to listen on for peers and clients (HOST:PORT).
    #[arg(long)]
    pub listen: String,
    /// Every founding member as ID=HOST:PORT, comma separated, this one included. With
    /// --join: the running cluster's members to contact, plus this one.
    #[arg(long)]
    pub peers: String,
    /// The data directory (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// File holding the member secret, which members prove to each other (16 to 1024 bytes; a
    /// trailing newline is ignored).
    #[arg(long)]
    pub secret_file: PathBuf,
    /// File holding the client secret, which remote clients prove. Without it clients use
    /// the member secret and could act as members: a development setup (a warning is logged).
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// This member's certificate (PEM, leaf first), signed by --tls-ca, valid for the
    /// addresses peers dial. Turns TLS on for every connection (with --tls-key, --tls-ca).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The member CA (PEM): every member's certificate is signed by it (mutual TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Require every remote client to present a certificate signed by this CA (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// The cluster's id.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// Join a running cluster as a new member (empty data directory) instead of founding one.
    #[arg(long)]
    pub join: bool,
    /// Raft tick in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// Minimum election timeout in milliseconds (each timeout is drawn from [t, 2t)).
    #[arg(long, default_value_t = 150)]
    pub election_timeout_ms: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Take a snapshot every this many applied entries.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_entries: u64,
    /// Entries kept in the log behind the newest snapshot.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_trailing_entries: u64,
    /// Memory for the state machine's caches in MiB (three quarters sled's page cache, a quarter
    /// the record cache in front of it).
    #[arg(long, default_value_t = 128)]
    pub state_cache_mib: u64,
    /// Serve linearizable reads from the leader's lease (needs bounded clock drift).
    #[arg(long)]
    pub lease_reads: bool,
    /// Serve GET /metrics, /health and /status over HTTP on this address (HOST:PORT; bind a
    /// loopback or private address: the endpoint has no authentication). Off by default.
    #[arg(long, value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
    /// /health answers 503 when this member's applied index is more than this many entries
    /// behind its commit index.
    #[arg(long, default_value_t = 10_000)]
    pub health_max_lag: u64,
    /// Events of the recent past each member keeps for watches that start behind the present
    /// (0: none, then a watch can only start from now, and nothing is recorded while no watch
    /// is open).
    #[arg(long, default_value_t = haven::limits::DEFAULT_WATCH_WINDOW_EVENTS)]
    pub watch_window_events: usize,
}

/// Parse `1=host:port,2=host:port`.
pub fn parse_peers(spec: &str) -> Result<BTreeMap<NodeId, String>> {
    let mut peers = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!("--peers: {item:?} is not ID=HOST:PORT"))
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("--peers: {id:?} is not a node id")))?;
        if peers
            .insert(NodeId(id), address.trim().to_string())
            .is_some()
        {
            return Err(Error::InvalidArgument(format!(
                "--peers: node id {id} is listed twice"
            )));
        }
    }
    if peers.is_empty() {
        return Err(Error::InvalidArgument("--peers: no member listed".into()));
    }
    Ok(peers)
}

/// Read a cluster secret file (a trailing newline is ignored, so `echo` can write one).
pub fn read_secret(path: &std::path::Path) -> Result<ClusterSecret> {
    let mut secret = std::fs::read(path)
        .map_err(|e| Error::io(format!("reading the secret file {}", path.display()), e))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    ClusterSecret::new(secret).map_err(|e| Error::InvalidArgument(format!("--secret-file: {e}")))
}

/// Build the member's configuration from the arguments.
pub fn config(args: &ServeArgs) -> Result<Config> {
    let listen: SocketAddr = haven::net::resolve_address(&args.listen)
        .map_err(|e| Error::InvalidArgument(format!("--listen: {e}")))?;
    let members = parse_peers(&args.peers)?;
    let secret = read_secret(&args.secret_file)?;
    let mut config = Config::new(
        NodeId(args.id),
        ClusterId(args.cluster_id),
        &args.data_dir,
        listen,
        members,
        secret,
    );
    config.join = args.join;
    config.tick_ms = args.tick_ms;
    config.election_timeout_ms = args.election_timeout_ms;
    config.heartbeat_interval_ms = args.heartbeat_ms;
    config.snapshot_entries = args.snapshot_entries;
    config.snapshot_trailing_entries = args.snapshot_trailing_entries;
    config.state_cache_bytes = args.state_cache_mib << 20;
    config.lease_reads = args.lease_reads;
    config.client_secret = args
        .client_secret_file
        .as_deref()
        .map(|path| {
            read_secret(path).map_err(|e| {
                Error::InvalidArgument(format!("--client-secret-file: {e}").replace(
                    "--client-secret-file: --secret-file: ",
                    "--client-secret-file: ",
                ))
            })
        })
        .transpose()?;
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        config.tls = Some(MemberTls::from_files(
            cert,
            key,
            ca,
            args.client_ca.as_deref(),
        )?);
    }
    if let Some(http) = &args.http_listen {
        let addr = haven::net::resolve_address(http)
            .map_err(|e| Error::InvalidArgument(format!("--http-listen: {e}")))?;
        config.http_listen = Some(addr);
    }
    config.health_max_lag_entries = args.health_max_lag;
    config.watch_window_events = args.watch_window_events;
    Ok(config)
}

/// Block SIGTERM and SIGINT in this thread (and so in every thread started after), so that
/// [`wait_for_signal`] receives them instead of the default handler killing the process.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a sigset_t we own; no Rust invariants involved.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Wait up to `timeout` for one of the blocked signals; `None` when none came.
fn wait_for_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` is a valid signal set, `timeout` a valid timespec, and a null info
    // pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
    (signal > 0).then_some(signal)
}

/// Run a member until SIGTERM/SIGINT; the process exit code.
pub fn run(args: &ServeArgs) -> i32 {
    let config = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("haven serve: {e}");
            return EXIT_USAGE;
        }
    };
    if config.client_secret.is_none() {
        haven::event!(haven::logging::Level::Warn, node: Some(args.id), term: None,
            "development_setup",
            message = "no --client-secret-file: clients authenticate with the member secret, \
                       so any client could act as a member; give clients their own secret");
    }
    let signals = block_signals();
    let node = match Node::open(config) {
        Ok(node) => node,
        Err(e) => {
            haven::event!(haven::logging::Level::Error, node: Some(args.id), term: None,
                "open_failed", error = e);
            eprintln!("haven serve: {e}");
            return EXIT_RUN_FAILED;
        }
    };
    inject_fault_from_env(&node);
    // Until a signal, or until the member fails (a storage failure, a thread that panicked):
    // then exit non-zero, so that a supervisor restarts the process.
    let signal = loop {
        if let Some(signal) = wait_for_signal(&signals, FAILURE_POLL) {
            break signal;
        }
        if let Some(why) = node.failure() {
            haven::event!(haven::logging::Level::Error, node: Some(args.id), term: None,
                "member_failed", error = why);
            eprintln!("haven serve: the member stopped: {why}");
            let _ = node.shutdown();
            return EXIT_RUN_FAILED;
        }
    };
    haven::event!(haven::logging::Level::Info, node: Some(args.id), term: None,
        "signal_received", signal = signal);
    match node.shutdown() {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("haven serve: {e}");
            EXIT_RUN_FAILED
        }
    }
}

/// How often `haven serve` looks at the member's health between signals.
const FAILURE_POLL: Duration = Duration::from_millis(100);

/// Fault injection for tests: `HAVEN_FAULT_PANIC=driver|apply` makes that thread of the
/// member panic once it runs, to show that the process then exits non-zero.
fn inject_fault_from_env(node: &Node) {
    let thread = match std::env::var("HAVEN_FAULT_PANIC").as_deref() {
        Ok("driver") => NodeThread::Driver,
        Ok("apply") => NodeThread::Apply,
        _ => return,
    };
    node.inject_panic(thread);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_name_the_problem() {
        let peers = parse_peers("1=127.0.0.1:7001, 2=localhost:7002").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[&NodeId(2)], "localhost:7002");
        assert!(parse_peers("1=a,1=b")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(parse_peers("x=a")
            .unwrap_err()
            .to_string()
            .contains("node id"));
        assert!(parse_peers("1:a")
            .unwrap_err()
            .to_string()
            .contains("ID=HOST:PORT"));
        assert!(parse_peers("").is_err());
    }
}
