//! The driver thread: owns the Raft core and turns its `Ready`s into WAL writes, sends and
//! applies (see the module docs of [`crate::node`] and the contract in [`crate::raft`]).
//!
//! One thread, one loop ([`Driver::run`]): take every queued input without waiting (internal
//! events first, then peer messages, remote-client requests, local requests; at most
//! [`MAX_DRIVER_INPUTS_PER_ITERATION`]), tick the core if a tick is due and expire what waited
//! too long, then propose every queued write as one batch, ask one ReadIndex for every queued
//! read, and handle each `Ready`. The jobs live in one file each:
//!
//! | file | job |
//! |------|-----|
//! | `mod.rs` | the loop, the state it keeps, the clock seam, internal events |
//! | `commit_notices.rs` | a leader's commit notices (AppendEntries without entries), held up to 1 ms for entries to carry them |
//! | `durability.rs` | the `Ready` durability order: WAL writes in flight, held messages, handing committed entries to apply, installing and compacting snapshots. Read this one to trust the node |
//! | `routing.rs` | client requests: propose here, forward to the leader, or wait for one; ReadIndex batches; membership and leadership admin; what happens to waiting requests when the core refuses or the leader changes |
//! | `peers.rs` | messages from other members: Raft, forwarded requests and their answers, snapshot-transfer control; the transport's peer set |
//! | `timeouts.rs` | ticks and the sweep of every deadline |
//! | `status.rs` | `status`, graceful shutdown, failing everything after a storage failure |
//!
//! **The clock seam.** The driver never calls `Instant::now()` itself: it asks its [`Clock`]
//! (`self.now()`), which [`Node::open`](crate::node::Node::open) sets to [`SystemClock`]. Every
//! deadline, tick, latency and last-contact time the driver keeps comes from there, so a
//! simulation of the whole runtime can hand the driver a clock it advances. `SystemClock` reads
//! `Instant::now()` on every call, as the driver did before the seam, so timeouts behave exactly
//! as before (a clock cached once per loop iteration would make a deadline set after a long
//! `Ready` start early). The other time-dependent call is the wait for input
//! ([`Parker::park_timeout`](crate::park::Parker::park_timeout)), a real sleep bounded by the
//! next tick; a simulated driver would be stepped instead of run.

/// Log an event with this node's id and term (defined before the submodules so they see it).
macro_rules! dlog {
    ($d:expr, $level:expr, $event:expr $(, $key:ident = $value:expr)* $(,)?) => {
        crate::event!($level, node: Some($d.id.0), term: Some($d.raft.term().0), $event
            $(, $key = $value)*)
    };
}

mod commit_notices;
mod durability;
mod peers;
mod routing;
mod status;
mod timeouts;

use self::commit_notices::CommitNotices;
use super::apply_thread::{ApplyTask, PendingRead};
use super::peer_message::PeerMessage;
use super::reply::Reply;
use super::sessions::LeaseKeeper;
use super::transfer::TransferTask;
use super::wal_store::WalStore;
use super::{Config, Input, Internal, NodeShared, NodeTransport, SharedCounters};
use crate::error::{Error, Result};
use crate::limits::MAX_DRIVER_INPUTS_PER_ITERATION;
#[cfg(doc)]
use crate::limits::{APPLY_QUEUE, TRANSFER_QUEUE};
use crate::net::ClientEvent;
use crate::park::{ParkedSender, Parker, Waking};
use crate::proto::{ClientRequest, ClientResponse, Counters, Histogram, Request};
use crate::raft::{Membership, Message, Raft, RaftError, Role, SnapshotMeta};
use crate::types::{HardState, LogIndex, NodeId, Term};
use crate::wal::Wal;
use crossbeam_channel::{Receiver, Sender};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the driver reads the time: the one seam between the driver and the wall clock.
pub(crate) trait Clock: Send {
    /// The current instant; never goes backwards.
    fn now(&self) -> Instant;
}

/// The production clock: `Instant::now()` on every call.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The channels the driver reads and writes.
pub(crate) struct Channels {
    pub(crate) inputs: Receiver<Input>,
    pub(crate) peers: Receiver<(NodeId, PeerMessage)>,
    pub(crate) clients: Receiver<ClientEvent<ClientRequest, ClientResponse>>,
    pub(crate) internal: Receiver<Internal>,
    pub(crate) internal_tx: Waking<Internal>,
    pub(crate) parker: Arc<Parker>,
    pub(crate) apply: ParkedSender<ApplyTask>,
    pub(crate) transfer: Sender<TransferTask>,
}

/// A request waiting to be routed.
struct Pending {
    request: Request,
    reply: Reply,
    deadline: Instant,
}

/// A request waiting until a leader is known; after `give_up` it fails with `Unavailable`.
struct Waiting {
    pending: Pending,
    give_up: Instant,
}

/// A WAL write not yet acknowledged. `number` 0: not a `Ready`'s write (a compaction).
struct InFlightWrite {
    number: u64,
    submitted: Instant,
    install: Option<SnapshotMeta>,
    compaction: Option<LogIndex>,
}

/// Reads waiting for their ReadIndex.
struct ReadBatch {
    reads: Vec<PendingRead>,
    issued: Instant,
}

/// A snapshot the core told us to send to a follower.
struct Outgoing {
    index: LogIndex,
    term: Term,
    last_activity: Instant,
}

/// A graceful shutdown in progress.
struct Stopping {
    since: Instant,
}

pub(crate) struct Driver {
    id: NodeId,
    /// Where every instant the driver keeps comes from (see the module doc).
    clock: Box<dyn Clock>,
    config: Config,
    raft: Raft<WalStore>,
    wal: Arc<Wal>,
    transport: Arc<NodeTransport>,
    shared: Arc<NodeShared>,
    counters: Arc<SharedCounters>,
    ch: Channels,
    stats: Counters,

    tick: Duration,
    next_tick: Instant,
    max_catch_up_ticks: u32,
    no_leader_wait: Duration,

    role: Role,
    leader: Option<NodeId>,

    queued_writes: Vec<Pending>,
    queued_reads: Vec<PendingRead>,
    waiting_leader: Vec<Waiting>,
    proposals: BTreeMap<LogIndex, (Term, Reply, Instant)>,
    proposal_deadlines: BinaryHeap<Reverse<(Instant, LogIndex, Term)>>,
    forwarded: HashMap<u64, (Reply, Instant)>,
    next_forward_id: u64,
    read_batches: HashMap<u64, ReadBatch>,
    next_read_context: u64,
    transfers: Vec<(NodeId, Reply, Instant)>,

    in_flight: VecDeque<InFlightWrite>,
    held: VecDeque<(u64, Vec<Message>)>,
    /// A leader's commit notices waiting for entries to carry them (`commit_notices.rs`).
    notices: CommitNotices,
    hard_state: HardState,
    written_hard_state: HardState,

    membership: Option<Membership>,
    peer_addrs: BTreeMap<NodeId, SocketAddr>,
    snapshots: Vec<SnapshotMeta>,
    outgoing: HashMap<NodeId, Outgoing>,
    fetching: Option<(LogIndex, Term, NodeId)>,
    install_paths: HashMap<(LogIndex, Term), PathBuf>,
    last_contact: HashMap<NodeId, Instant>,
    stopping: Option<Stopping>,
    /// Session deadlines while leading (`node/sessions.rs`).
    leases: LeaseKeeper,
    /// Added to the clock: zero, except after [`Input::InjectClockJump`] (fault injection: the
    /// driver sees time it did not observe pass at once, as after a pause).
    clock_jump: Duration,
}

impl Driver {
    /// The current instant, from the driver's [`Clock`].
    fn now(&self) -> Instant {
        self.clock.now() + self.clock_jump
    }

    /// Queue a task for the apply thread, waiting while its queue is full ([`APPLY_QUEUE`]:
    /// the apply thread never waits for the driver, so the wait ends). Fails only once the
    /// apply thread is gone (after it stopped), when there is nobody left to answer.
    fn to_apply(&self, task: ApplyTask) {
        let _ = self.ch.apply.send(task);
    }

    /// Queue a task for the transfer thread without waiting; a task that finds the queue full
    /// ([`TRANSFER_QUEUE`]) is dropped, which every transfer task tolerates (its sender asks
    /// again), and so is one sent after the thread stopped.
    fn to_transfer(&self, task: TransferTask) {
        let _ = self.ch.transfer.try_send(task);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        clock: Box<dyn Clock>,
        raft: Raft<WalStore>,
        wal: Arc<Wal>,
        transport: Arc<NodeTransport>,
        shared: Arc<NodeShared>,
        counters: Arc<SharedCounters>,
        ch: Channels,
    ) -> Driver {
        let hard_state = wal.hard_state();
        let snapshot = raft.store().snapshot().clone();
        let tick = config.tick();
        Driver {
            id: config.id,
            max_catch_up_ticks: 4 * config.election_ticks(),
            no_leader_wait: 2 * config.max_election_timeout(),
            tick,
            next_tick: clock.now() + tick,
            clock,
            role: raft.role(),
            leader: raft.leader(),
            raft,
            wal,
            transport,
            shared,
            counters,
            ch,
            stats: Counters {
                wal_write_latency: Histogram::new(),
                ..Counters::default()
            },
            queued_writes: Vec::new(),
            queued_reads: Vec::new(),
            waiting_leader: Vec::new(),
            proposals: BTreeMap::new(),
            proposal_deadlines: BinaryHeap::new(),
            forwarded: HashMap::new(),
            next_forward_id: 1,
            read_batches: HashMap::new(),
            next_read_context: 1,
            transfers: Vec::new(),
            in_flight: VecDeque::new(),
            held: VecDeque::new(),
            notices: CommitNotices::default(),
            hard_state,
            written_hard_state: hard_state,
            membership: None,
            peer_addrs: BTreeMap::new(),
            snapshots: if snapshot.index.0 > 0 {
                vec![snapshot]
            } else {
                Vec::new()
            },
            outgoing: HashMap::new(),
            fetching: None,
            install_paths: HashMap::new(),
            last_contact: HashMap::new(),
            stopping: None,
            // A gap in the loop longer than the shortest election timeout is a pause.
            leases: LeaseKeeper::new(Duration::from_millis(config.election_timeout_ms)),
            clock_jump: Duration::ZERO,
            config,
        }
    }

    pub(crate) fn run(mut self) {
        self.sync_peers();
        loop {
            if let Err(e) = self.iteration() {
                self.fail(e);
                return;
            }
            if self.stop_complete() {
                break;
            }
        }
        self.finish();
    }

    fn iteration(&mut self) -> Result<()> {
        let mut handled = 0;
        while handled < MAX_DRIVER_INPUTS_PER_ITERATION {
            if self.poll_one()? {
                handled += 1;
                continue;
            }
            if handled > 0 {
                break;
            }
            let now = self.now();
            let wake_at = self
                .notices
                .next_deadline()
                .map_or(self.next_tick, |due| due.min(self.next_tick));
            if now >= wake_at {
                break;
            }
            // Nothing queued: sleep until a producer wakes us, the next tick is due or a held
            // commit notice must go.
            self.ch.parker.park_timeout(wake_at - now);
        }
        self.on_clock()?;
        self.flush()?;
        self.send_due_notices();
        Ok(())
    }

    /// Handle one queued input, if any (internal events first: WAL completions free held
    /// messages). Never blocks.
    fn poll_one(&mut self) -> Result<bool> {
        if let Ok(m) = self.ch.internal.try_recv() {
            self.tick_to_now()?;
            self.on_internal(m)?;
            return Ok(true);
        }
        if let Ok((from, msg)) = self.ch.peers.try_recv() {
            self.tick_to_now()?;
            self.on_peer(from, msg)?;
            return Ok(true);
        }
        if let Ok(event) = self.ch.clients.try_recv() {
            self.tick_to_now()?;
            self.on_client_event(event);
            return Ok(true);
        }
        if let Ok(input) = self.ch.inputs.try_recv() {
            self.tick_to_now()?;
            self.on_input(input)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn flush(&mut self) -> Result<()> {
        if !self.queued_writes.is_empty() {
            self.propose_queued()?;
        }
        if !self.queued_reads.is_empty() {
            self.read_queued()?;
        }
        while self.raft.has_ready() {
            let ready = self.raft.ready().map_err(storage)?;
            self.on_ready(ready)?;
        }
        Ok(())
    }

    fn on_input(&mut self, input: Input) -> Result<()> {
        match input {
            Input::Request {
                request,
                reply,
                deadline,
            } => self.on_request(request, reply, deadline),
            Input::TakeSnapshot(done) => {
                self.to_apply(ApplyTask::TakeSnapshot(done));
                Ok(())
            }
            Input::Shutdown => {
                self.begin_shutdown();
                Ok(())
            }
            Input::InjectPanic(super::NodeThread::Driver) => {
                panic!("injected panic (fault injection)")
            }
            Input::InjectClockJump(by) => {
                self.clock_jump += by;
                Ok(())
            }
            Input::InjectPanic(super::NodeThread::Apply) => {
                self.to_apply(ApplyTask::InjectPanic);
                Ok(())
            }
        }
    }

    fn on_internal(&mut self, event: Internal) -> Result<()> {
        match event {
            Internal::Persisted { number, result } => self.on_persisted(number, result)?,
            Internal::Applied(index) => {
                if index <= self.raft.applied_index() {
                    return Ok(());
                }
                self.raft.advance_applied(index);
                let now = self.now();
                self.leases.on_applied(index, now);
            }
            Internal::Sessions {
                sessions,
                lock_delays,
                applied,
            } => {
                let now = self.now();
                self.leases.sync(sessions, applied, now);
                self.leases.sync_lock_delays(lock_delays, now);
            }
            Internal::SnapshotTaken(meta) => self.on_snapshot_taken(meta),
            Internal::SnapshotFetched { message, path } => {
                self.on_snapshot_fetched(message, path)?;
            }
            Internal::SnapshotFetchFailed { index, term } => {
                self.on_snapshot_fetch_failed(index, term);
            }
            Internal::Fatal(why) => return Err(Error::Fatal(why)),
        }
        Ok(())
    }
}

fn storage(e: RaftError) -> Error {
    match e {
        RaftError::Storage(e) => e,
        other => Error::Fatal(format!("unexpected error from the Raft core: {other}")),
    }
}
