//! The runtime: turns the Raft core, the WAL and the state machine into a cluster member.
//!
//! [`Node::open`] opens the data directory, the WAL and the state, and starts:
//!
//! | thread | owns | does |
//! |--------|------|------|
//! | driver (`haven-{id}-driver`) | the Raft core (over [`LogStore`](crate::raft::LogStore) on the WAL) | ticks, peer messages, client requests, proposals, ReadIndex, Ready handling, forwarding |
//! | apply (`haven-{id}-apply`) | the `sm::StateMachine` | applies committed entries, answers proposers and reads, snapshots, restores |
//! | transfer (`haven-{id}-snap`) | snapshot files in flight | serves snapshot chunks (leader), fetches them (follower) |
//! | WAL writer + preparer | the log files | group commit (see `wal`) |
//! | transport threads | sockets | see `net` |
//!
//! Per loop iteration the driver drains every queued input, proposes all queued writes as ONE
//! batch, asks for ONE ReadIndex for all queued reads, and handles each `Ready`: its persist part
//! goes to the WAL asynchronously (the WAL's callback posts the `Ready` number back), `messages`
//! are sent at once, `persisted_messages` are held until the WAL acknowledged that `Ready` and
//! every earlier one, committed entries go to the apply thread together with the proposers
//! waiting for them. So the leader writes its own log while it replicates, and heartbeats never
//! wait behind disk IO or a big apply.
//!
//! ```
//! use haven::node::{Config, Node};
//! use haven::net::ClusterSecret;
//! use haven::{ClusterId, NodeId};
//!
//! # fn main() -> haven::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let listen = "127.0.0.1:0".parse().unwrap();
//! let members = [(NodeId(1), "127.0.0.1:1".to_string())].into();
//! let secret = ClusterSecret::new(*b"a secret of 16+ bytes")?;
//! let node = Node::open(Config::new(NodeId(1), ClusterId(9), dir.path(), listen, members, secret))?;
//! let client = node.client();
//! client.put(b"greeting", b"hello")?;
//! assert_eq!(client.get(b"greeting")?.unwrap().value, b"hello");
//! node.shutdown()?;
//! # Ok(())
//! # }
//! ```

mod apply_thread;
mod backup;
mod config;
mod driver;
mod endpoint;
mod peer_message;
mod reply;
mod sessions;
mod transfer;
mod wal_store;
mod watch;
mod watch_fanout;

pub use self::backup::{restore_backup, restored_cluster_id, verify_backup, BackupInfo, Restored};
pub use self::config::{Config, MAX_REQUEST_TIMEOUT_MS};
pub use self::peer_message::{PeerMessage, SnapshotChunk};

use self::apply_thread::{ApplyThread, SnapshotPolicy};
use self::driver::Driver;
use self::reply::Reply;
use self::transfer::{ServeLimit, Transfer};
use self::wal_store::WalStore;
pub(crate) use self::watch::LocalWatch;
use self::watch::{WatchHub, WatchSettings};
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::event;
use crate::limits::{APPLY_QUEUE, DRIVER_INPUT_QUEUE, DRIVER_PEER_QUEUE, TRANSFER_QUEUE};
use crate::logging::Level;
use crate::net::{Transport, TransportConfig};
use crate::park::{self, Parker, Waking};
use crate::proto::{AdminOp, ClientRequest, ClientResponse, NodeRole, Request, Response, Status};
use crate::raft::{self, Membership, Message, Raft, SnapshotMeta};
use crate::sm::{MapReader, StateMachine};
use crate::snapshots::{list_snapshots, snapshot_membership, SnapshotFiles};
use crate::types::{Entry, EntryKind, GroupId, HardState, LogIndex, NodeId, Term};
use crate::wal::{Wal, WalOptions, WriteBatch};
use crossbeam_channel::{bounded, unbounded, Sender};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The transport a member runs: peer messages, remote-client requests and responses.
pub type NodeTransport = Transport<PeerMessage, ClientRequest, ClientResponse>;

/// What the WAL, the apply thread and the transfer thread tell the driver.
pub(crate) enum Internal {
    /// The WAL write of `Ready` number `number` finished.
    Persisted { number: u64, result: Result<()> },
    /// The state machine applied up to this index.
    Applied(LogIndex),
    /// The state machine's sessions after an apply (or restore) that changed them, for the
    /// lease keeper (sent before the `Applied` of the same batch), as of `applied` (a session's
    /// id is the index of its grant, so an id above it is one the keeper has not seen yet, not
    /// a lost one).
    Sessions {
        sessions: Vec<crate::sm::SessionInfo>,
        /// The locks in their lock-delay, with the delay (ms) to wait out.
        lock_delays: Vec<(Vec<u8>, u64)>,
        applied: LogIndex,
    },
    /// The apply thread wrote a snapshot file (fsynced).
    SnapshotTaken(SnapshotMeta),
    /// The data of this `Snapshot` message is durable here, at `path`: step it into the core.
    SnapshotFetched { message: Message, path: PathBuf },
    /// A fetch gave up.
    SnapshotFetchFailed { index: LogIndex, term: Term },
    /// A storage failure: stop.
    Fatal(String),
}

/// What the node's handles ask of the driver.
pub(crate) enum Input {
    Request {
        request: Request,
        reply: Reply,
        deadline: Instant,
    },
    /// Take a snapshot now.
    TakeSnapshot(Sender<Result<LogIndex>>),
    Shutdown,
    /// Fault injection for tests: make this thread panic.
    InjectPanic(NodeThread),
    /// Fault injection for tests: the driver's clock jumps forward by this much.
    InjectClockJump(Duration),
}

/// A member thread that [`Node::inject_panic`] can make panic (fault injection for tests).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeThread {
    /// The driver (the Raft core's thread).
    Driver,
    /// The apply thread (the state machine's).
    Apply,
}

/// Counters updated off the driver thread.
#[derive(Default)]
pub(crate) struct SharedCounters {
    pub(crate) entries_applied: AtomicU64,
    pub(crate) snapshots_taken: AtomicU64,
    pub(crate) applied: AtomicU64,
}

/// What every handle of a node shares.
pub(crate) struct NodeShared {
    pub(crate) id: NodeId,
    pub(crate) inputs: Sender<Input>,
    /// Wakes the driver after an input is queued.
    pub(crate) parker: Arc<Parker>,
    pub(crate) stopped: AtomicBool,
    /// Why the member stopped taking part (a storage failure, a thread that panicked): once
    /// set, every call fails with `Fatal` and this reason.
    pub(crate) failure: Mutex<Option<String>>,
    /// `failure` is set (read without the lock on every call).
    pub(crate) failed: AtomicBool,
    pub(crate) request_timeout: Duration,
    pub(crate) serve_limit: ServeLimit,
    /// The partition maps as the apply thread has applied them (local `owners` reads).
    pub(crate) maps: MapReader,
    /// Opens and closes this member's watches (`watch.rs`).
    pub(crate) watches: WatchHub,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NodeShared {
    pub(crate) fn set_failure(&self, why: &str) {
        let mut slot = lock(&self.failure);
        if slot.is_none() {
            *slot = Some(why.to_string());
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn closed_error(&self) -> Error {
        match lock(&self.failure).clone() {
            Some(why) => Error::Fatal(why),
            None => Error::Unavailable(format!("member {} is shut down", self.id)),
        }
    }

    /// The member's status (see [`Node::status`]).
    pub(crate) fn status(&self) -> Result<Status> {
        match self.call(Request::Status, Instant::now() + self.request_timeout) {
            Ok(Response::Status(status)) => Ok(*status),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => match lock(&self.failure).clone() {
                Some(why) => Ok(Status {
                    id: self.id,
                    role: NodeRole::Stopped,
                    term: Term(0),
                    leader: None,
                    commit_index: LogIndex(0),
                    applied_index: LogIndex(0),
                    first_index: LogIndex(0),
                    last_index: LogIndex(0),
                    members: Vec::new(),
                    counters: Default::default(),
                    failure: Some(why),
                }),
                None => Err(e),
            },
        }
    }

    /// One attempt at a request, answered by the driver or the apply thread.
    pub(crate) fn call(&self, request: Request, deadline: Instant) -> Result<Response> {
        if self.stopped.load(Ordering::SeqCst) || self.failed.load(Ordering::SeqCst) {
            return Err(self.closed_error());
        }
        let (tx, rx) = bounded(1);
        let input = Input::Request {
            request,
            reply: Reply::Local(tx),
            deadline,
        };
        match self.inputs.send_deadline(input, deadline) {
            Ok(()) => self.parker.notify(),
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                return Err(Error::Unavailable(format!(
                    "member {} is overloaded: its request queue stayed full",
                    self.id
                )))
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                return Err(self.closed_error())
            }
        }
        // The driver answers by the deadline; the grace covers answers produced right at it.
        match rx.recv_deadline(deadline + Duration::from_millis(100)) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::Timeout(format!(
                "member {} did not answer in time",
                self.id
            ))),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if self.stopped.load(Ordering::SeqCst) {
                    Err(Error::Timeout(format!(
                        "member {} stopped while the request was in flight",
                        self.id
                    )))
                } else {
                    Err(Error::Timeout(format!(
                        "member {} dropped the request",
                        self.id
                    )))
                }
            }
        }
    }
}

/// What `Node::shutdown` stops and joins.
struct Running {
    driver: JoinHandle<()>,
    apply: JoinHandle<()>,
    watch: JoinHandle<()>,
    transfer: JoinHandle<()>,
    transport: Arc<NodeTransport>,
    wal: Arc<Wal>,
    http: Option<crate::observe::http::HttpServer>,
    _data_dir: DataDir,
}

/// A cluster member running in this process. See the module docs.
///
/// Dropping it shuts it down (as [`Node::shutdown`], ignoring errors).
pub struct Node {
    shared: Arc<NodeShared>,
    config: Config,
    local_addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.shared.id)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Node {
    /// Open the data directory and start the member (see the module docs).
    ///
    /// On the very first start of a founding member (empty data directory, no `join`), the
    /// cluster's first configuration (`Config::members`) becomes entry 1 of its log, identical
    /// on every founding member. On a restart the configuration comes from the log, the
    /// snapshot is restored if the state is behind the log's compaction point, and the log is
    /// replayed from the state's applied index.
    ///
    /// Errors: `InvalidArgument` (configuration), `DataDir` (locked, or another node's or
    /// cluster's directory), `Corrupt`/`UnsupportedVersion` (WAL, state, snapshots), `Io`.
    pub fn open(config: Config) -> Result<Node> {
        config.validate()?;
        let id = config.id;
        let mut data_dir = DataDir::open(&config.data_dir, id, config.cluster_id)?;
        let wal_options = WalOptions {
            segment_bytes: config.wal_segment_bytes,
            cache_bytes: config.wal_cache_bytes,
            faults: config.wal_faults.clone(),
        };
        let (wal, report) = Wal::open(data_dir.wal_dir(), wal_options)?;
        if let Some(torn) = &report.torn_tail {
            event!(Level::Warn, node: Some(id.0), term: None, "wal_torn_tail_truncated",
                file = torn.file.display(), offset = torn.offset, bytes = torn.bytes_dropped);
        }
        let wal = Arc::new(wal);
        // No thread runs yet, so a temporary snapshot file is one a crash interrupted.
        crate::snapshots::remove_leftover_temp_files(data_dir.snap_dir())?;
        let mut sm = open_state_machine(&data_dir, config.state_cache_bytes)?;
        bootstrap(&wal, &sm, &mut data_dir, &config)?;
        let snapshot = recover_snapshot(&wal, &mut sm, &data_dir, id)?;
        let (applied, _) = sm.applied();
        if applied > wal.last_index().max(snapshot.index) {
            return Err(Error::DataDir(format!(
                "the state has applied index {applied} but the log ends at {}: the log is \
                 missing entries the state already reflects",
                wal.last_index()
            )));
        }
        let store = WalStore::new(Arc::clone(&wal), snapshot);
        let mut raft_config = raft::Config::new(id, random_seed());
        raft_config.election_ticks = config.election_ticks();
        raft_config.heartbeat_ticks = config.heartbeat_ticks();
        if config.lease_reads {
            // A lease of 3/4 of the election timeout tolerates clocks drifting by a third.
            raft_config.lease_read_ticks = Some(config.election_ticks() * 3 / 4);
        }
        let raft = Raft::new(raft_config, store, applied).map_err(Error::from)?;

        let parker = Arc::new(Parker::default());
        let (peer_tx, peer_rx) = bounded(DRIVER_PEER_QUEUE);
        let (client_tx, client_rx) = bounded(DRIVER_INPUT_QUEUE);
        let mut transport_config = TransportConfig::new(
            id,
            config.cluster_id,
            config.secret.clone(),
            config.listen_addr,
        );
        transport_config.max_client_connections = config.max_client_connections;
        transport_config.client_secret = config.client_secret.clone();
        transport_config.tls = config.tls.clone();
        transport_config.founding_digest = data_dir.founding_digest();
        let wake = Arc::clone(&parker);
        transport_config.on_deliver = Some(Arc::new(move || wake.notify()));
        let transport = Arc::new(NodeTransport::start(
            transport_config,
            &[],
            peer_tx,
            config.serve_clients.then_some(client_tx),
        )?);
        let local_addr = transport.local_addr();

        let (input_tx, input_rx) = bounded(DRIVER_INPUT_QUEUE);
        // Unbounded, and bounded anyway: see `limits.rs` (MAX_DRIVER_INTERNAL_QUEUE).
        let (internal_tx, internal_rx) = unbounded();
        let internal_tx = Waking::new(internal_tx, Arc::clone(&parker));
        let (apply_tx, apply_rx) = park::bounded(APPLY_QUEUE);
        let (transfer_tx, transfer_rx) = bounded(TRANSFER_QUEUE);
        let counters = Arc::new(SharedCounters::default());
        counters.applied.store(applied.0, Ordering::Relaxed);
        let serve_limit: ServeLimit = Arc::new(AtomicU64::new(u64::MAX));
        let (watches, watch_feed, watch_loop) = watch::start(
            id,
            applied,
            WatchSettings {
                window_events: config.watch_window_events,
                buffer_events: config.watch_buffer_events,
                progress_interval: Duration::from_millis(config.watch_progress_interval_ms),
            },
        );
        let watch = spawn(format!("haven-{}-watch", id.0), watch_loop)?;
        let shared = Arc::new(NodeShared {
            id,
            inputs: input_tx,
            parker: Arc::clone(&parker),
            stopped: AtomicBool::new(false),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            serve_limit: Arc::clone(&serve_limit),
            maps: sm.map_reader(),
            watches,
        });

        // Before any thread starts, so a bad address fails the open with nothing to stop.
        let http = match config.http_listen {
            Some(addr) => Some(endpoint::start(
                addr,
                &shared,
                &transport,
                config.health_max_lag_entries,
            )?),
            None => None,
        };

        let apply_thread = ApplyThread {
            id,
            sm,
            snap_dir: data_dir.snap_dir(),
            tasks: apply_rx,
            internal: internal_tx.clone(),
            counters: Arc::clone(&counters),
            policy: SnapshotPolicy {
                entries: config.snapshot_entries,
                bytes: config.snapshot_bytes,
            },
            reads: Default::default(),
            entries_since_snapshot: 0,
            bytes_since_snapshot: 0,
            pending_since: None,
            failed: None,
            watch_feed,
            held_lock_waits: Default::default(),
        };
        let apply = spawn_member_thread(
            format!("haven-{}-apply", id.0),
            &shared,
            Some(internal_tx.clone()),
            move || apply_thread.run(),
        )?;
        let transfer = Transfer::new(
            id,
            data_dir.snap_dir(),
            transfer_rx,
            internal_tx.clone(),
            Arc::clone(&transport),
            Duration::from_millis(config.snapshot_transfer_timeout_ms),
            serve_limit,
        );
        let transfer = spawn_member_thread(
            format!("haven-{}-snap", id.0),
            &shared,
            Some(internal_tx.clone()),
            move || transfer.run(),
        )?;
        let driver = Driver::new(
            config.clone(),
            Box::new(driver::SystemClock),
            raft,
            Arc::clone(&wal),
            Arc::clone(&transport),
            Arc::clone(&shared),
            counters,
            driver::Channels {
                inputs: input_rx,
                peers: peer_rx,
                clients: client_rx,
                internal: internal_rx,
                internal_tx,
                parker,
                apply: apply_tx,
                transfer: transfer_tx,
            },
        );
        let driver =
            spawn_member_thread(format!("haven-{}-driver", id.0), &shared, None, move || {
                driver.run()
            })?;
        event!(Level::Info, node: Some(id.0), term: None, "node_started",
            listen = local_addr, applied = applied.0, last_index = wal.last_index().0);
        Ok(Node {
            shared,
            config,
            local_addr,
            running: Mutex::new(Some(Running {
                driver,
                apply,
                watch,
                transfer,
                transport,
                wal,
                http,
                _data_dir: data_dir,
            })),
        })
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The address the member listens on (with the real port when port 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the HTTP endpoint listens (with the real port when port 0 was configured), if
    /// [`Config::http_listen`] asked for one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        lock(&self.running)
            .as_ref()
            .and_then(|r| r.http.as_ref().map(|h| h.local_addr()))
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The request path into this member, for the in-process client backend
    /// (`client/local.rs`, where `Node::client` lives).
    pub(crate) fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    /// Why this member stopped taking part, if it did: a storage failure or a thread that
    /// panicked. A supervisor (such as `haven serve`) watches it and restarts the process.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// Fault injection for tests: make one of the member's threads panic, to check that the
    /// member then stops loudly.
    #[doc(hidden)]
    pub fn inject_panic(&self, thread: NodeThread) {
        if self.shared.inputs.send(Input::InjectPanic(thread)).is_ok() {
            self.shared.parker.notify();
        }
    }

    /// Fault injection for tests: the driver's clock jumps forward by `by` at once, as a paused
    /// process sees it when it resumes (time passed that no loop iteration observed), without
    /// stopping anything else.
    #[doc(hidden)]
    pub fn inject_clock_jump(&self, by: Duration) {
        if self.shared.inputs.send(Input::InjectClockJump(by)).is_ok() {
            self.shared.parker.notify();
        }
    }

    /// This member's view: role, term, leader, commit and applied index, members (with the
    /// leader's replication progress when this member leads), counters.
    ///
    /// A member stopped by a storage failure answers with role [`NodeRole::Stopped`] and the
    /// cause in [`Status::failure`] (the rest is empty: its core is gone).
    pub fn status(&self) -> Result<Status> {
        self.shared.status()
    }

    /// The applied index and the sha256 of this member's state (`docs/FORMAT.md`, "State
    /// hash"): members that applied the same index have the same hash.
    pub fn state_hash(&self) -> Result<(LogIndex, [u8; 32])> {
        match self.call(Request::StateHash)? {
            Response::StateHash { applied, hash } => Ok((applied, hash)),
            other => Err(unexpected(&other)),
        }
    }

    /// Add a learner (a non-voting member that receives the log); waits until the change is
    /// committed. Start the new member with `join` and an empty data directory.
    pub fn add_learner(&self, id: NodeId, address: &str) -> Result<()> {
        self.client().admin(AdminOp::AddLearner {
            id,
            address: address.to_string(),
        })
    }

    /// Make a learner a voter; waits until the change is committed.
    pub fn promote_learner(&self, id: NodeId) -> Result<()> {
        self.client().admin(AdminOp::PromoteLearner { id })
    }

    /// Remove a member; waits until the change is committed.
    pub fn remove_member(&self, id: NodeId) -> Result<()> {
        self.client().admin(AdminOp::RemoveMember { id })
    }

    /// Hand leadership to voter `to`; waits until it leads.
    pub fn transfer_leadership(&self, to: NodeId) -> Result<()> {
        self.client().admin(AdminOp::TransferLeadership { to })
    }

    /// Take a snapshot now and compact the log behind it (as the configured thresholds would).
    /// Returns the snapshot's index.
    pub fn snapshot_now(&self) -> Result<LogIndex> {
        let (tx, rx) = bounded(1);
        self.shared
            .inputs
            .send(Input::TakeSnapshot(tx))
            .map_err(|_| self.shared.closed_error())?;
        self.shared.parker.notify();
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| Error::Timeout("no snapshot within a minute".into()))?
    }

    /// Test hook: serve snapshot chunks to followers only below this byte offset (`u64::MAX`
    /// serves everything), to cut a transfer half way and resume it.
    #[doc(hidden)]
    pub fn set_snapshot_serve_limit(&self, bytes: u64) {
        self.shared.serve_limit.store(bytes, Ordering::SeqCst);
    }

    /// Open a watch on this member (the in-process client's path, `client/local.rs`).
    pub(crate) fn watch_local(
        shared: &NodeShared,
        spec: crate::proto::WatchSpec,
        deadline: Instant,
    ) -> Result<LocalWatch> {
        if shared.stopped.load(Ordering::SeqCst) {
            return Err(shared.closed_error());
        }
        shared.watches.watch_local(spec, deadline)
    }

    fn call(&self, request: Request) -> Result<Response> {
        self.shared
            .call(request, Instant::now() + self.shared.request_timeout)
    }

    /// Graceful shutdown: a leader first hands leadership to an up-to-date voter; new requests
    /// are refused (`Unavailable`); writes already in flight to the WAL finish and committed
    /// entries are applied; then every thread stops and every file is closed. Requests whose
    /// outcome is unknown end with `Timeout`. A crash at any point is safe too.
    pub fn shutdown(&self) -> Result<()> {
        let Some(mut running) = lock(&self.running).take() else {
            return Ok(());
        };
        // The endpoint first: it asks the driver, which is about to stop.
        if let Some(http) = running.http.as_mut() {
            http.shutdown();
        }
        self.shared.stopped.store(true, Ordering::SeqCst);
        let _ = self.shared.inputs.send(Input::Shutdown);
        self.shared.parker.notify();
        let _ = running.driver.join();
        let _ = running.apply.join();
        self.shared.watches.stop();
        let _ = running.watch.join();
        let _ = running.transfer.join();
        running.transport.shutdown();
        drop(running.transport);
        let failure = running.wal.failure();
        drop(running.wal);
        event!(Level::Info, node: Some(self.shared.id.0), term: None, "node_stopped");
        match failure.or_else(|| lock(&self.shared.failure).clone().map(Error::Fatal)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn unexpected(response: &Response) -> Error {
    Error::Fatal(format!("unexpected response from the member: {response:?}"))
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| Error::io("spawning a node thread", e))
}

/// Start one of the member's threads so that its panic stops the member loudly, never
/// silently: the panic message becomes the member's failure (`status()` reports it, every
/// later call fails with `Fatal`, `haven serve` exits non-zero), and the driver is told to
/// stop taking part (`internal`; `None` for the driver itself, which is gone).
fn spawn_member_thread(
    name: String,
    shared: &Arc<NodeShared>,
    internal: Option<Waking<Internal>>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    spawn(name.clone(), move || {
        let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) else {
            return;
        };
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let why = format!("thread {name} panicked: {message}");
        event!(Level::Error, node: Some(shared.id.0), term: None, "thread_panicked",
            thread = name, error = why);
        shared.set_failure(&why);
        if let Some(internal) = internal {
            internal.send(Internal::Fatal(why));
        }
        shared.parker.notify();
    })
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Only election timeouts depend on it; the clock is a fine fallback.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        return nanos as u64 ^ std::process::id() as u64;
    }
    u64::from_le_bytes(bytes)
}

/// Open the state machine, retrying while sled still holds the lock of a handle this process
/// dropped moments ago (see `sm`). Three quarters of `cache_bytes` are sled's page cache, a
/// quarter the record cache in front of it. sled's share is the larger because a put that
/// misses sled's cache reads and decodes pages back from sled's log (`haven bench cluster`
/// at 100,000 keys: 32 MiB of sled cache cost ~10% more CPU per write than 96 MiB, for ~5 MiB
/// more RSS); the record cache's metadata map needs ~100 bytes a key.
fn open_state_machine(data_dir: &DataDir, cache_bytes: u64) -> Result<StateMachine> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let record_cache = (cache_bytes / 4) as usize;
    loop {
        match StateMachine::open_with_record_cache(
            data_dir.state_dir(),
            cache_bytes - cache_bytes / 4,
            record_cache,
        ) {
            Err(Error::DataDir(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// First start of a founding member: write the first configuration as entry 1 (term 0), the
/// same on every founding member, so that the configuration is part of the replicated state
/// from the start (every snapshot carries it; a member that joins later learns it from the log
/// or a snapshot).
///
/// The digest of that configuration is recorded in the data directory first (and sent in every
/// peer handshake from then on): founding members started with different peer lists would each
/// write a different entry 1 at term 0, which Raft's log matching cannot tell apart, so they
/// refuse each other instead (docs/FORMAT.md, "Handshake").
fn bootstrap(wal: &Wal, sm: &StateMachine, data_dir: &mut DataDir, config: &Config) -> Result<()> {
    let fresh = wal.last_index() == LogIndex(0)
        && wal.compacted().0 == LogIndex(0)
        && wal.hard_state() == HardState::default()
        && sm.applied().0 == LogIndex(0);
    if !fresh {
        return Ok(());
    }
    let membership = Membership {
        voters: config.members.clone(),
        learners: Default::default(),
    };
    let digest = (!config.join).then(|| founding_digest(&membership));
    data_dir.set_founding_digest(digest)?;
    if config.join {
        return Ok(());
    }
    let entry = Entry {
        group: GroupId(0),
        term: Term(0),
        index: LogIndex(1),
        kind: EntryKind::Membership,
        data: membership.encode(),
    };
    wal.write(WriteBatch {
        entries: vec![entry],
        ..WriteBatch::default()
    })?;
    event!(Level::Info, node: Some(config.id.0), term: Some(0), "cluster_bootstrapped",
        voters = config.members.len());
    Ok(())
}

/// sha256 of a founding membership's encoding (the payload of entry 1).
fn founding_digest(membership: &Membership) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(membership.encode()).into()
}

/// The snapshot at the WAL's compaction point: restore it if the state is behind it, and
/// return its metadata (with the configuration at that index) for the Raft core.
fn recover_snapshot(
    wal: &Wal,
    sm: &mut StateMachine,
    data_dir: &DataDir,
    id: NodeId,
) -> Result<SnapshotMeta> {
    let (index, term) = wal.compacted();
    if index.0 == 0 {
        return Ok(SnapshotMeta {
            index,
            term,
            membership: Membership::default(),
        });
    }
    let file = list_snapshots(data_dir.snap_dir())?
        .into_iter()
        .find(|s| s.index == index && s.term == term)
        .ok_or_else(|| {
            Error::DataDir(format!(
                "the log is compacted to index {index} term {term} but {} holds no snapshot \
                 file for it",
                data_dir.snap_dir().display()
            ))
        })?;
    if sm.applied().0 < index {
        event!(Level::Info, node: Some(id.0), term: None, "restoring_snapshot",
            index = index.0, applied = sm.applied().0);
        sm.restore_snapshot(&file.path)?;
    }
    let membership = if sm.applied().0 == index {
        sm.membership()
    } else {
        snapshot_membership(&file.path)?
    };
    let membership = match membership {
        Some(bytes) => Membership::decode(&bytes)?,
        None => Membership::default(),
    };
    Ok(SnapshotMeta {
        index,
        term,
        membership,
    })
}

/// The role as reported in [`Status`].
pub(crate) fn node_role(role: raft::Role) -> NodeRole {
    match role {
        raft::Role::Follower => NodeRole::Follower,
        raft::Role::PreCandidate => NodeRole::PreCandidate,
        raft::Role::Candidate => NodeRole::Candidate,
        raft::Role::Leader => NodeRole::Leader,
    }
}
