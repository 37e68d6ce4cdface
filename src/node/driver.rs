//! The driver thread: owns the Raft core and turns its `Ready`s into WAL writes, sends and
//! applies (see the module docs of [`crate::node`] and the contract in [`crate::raft`]).

use super::apply::{ApplyTask, PendingRead, Waiter};
use super::config::resolve_address;
use super::message::PeerMessage;
use super::queue::{Parker, Waking, WorkSender};
use super::reply::Reply;
use super::store::WalStore;
use super::transfer::TransferTask;
use super::{node_role, Config, Input, Internal, NodeShared, NodeTransport, SharedCounters};
use crate::client::proto::{
    AdminOp, ClientRequest, ClientResponse, Counters, Histogram, MemberStatus, NodeRole, ReadMode,
    ReadOp, Request, Response, Status, WireError, CLIENT_PROTOCOL_VERSION,
    MIN_STATUS_PROTOCOL_VERSION,
};
use crate::error::{Error, Result};
use crate::event;
use crate::limits::{MAX_KEY_BYTES, MAX_SCAN_LIMIT};
use crate::log::Level;
use crate::net::{ClientEvent, SendOutcome};
use crate::raft::{
    Membership, MembershipChange, Message, MessageBody, Raft, RaftError, ReadState, Ready, Role,
    SnapshotMeta, SoftState,
};
use crate::types::{Entry, HardState, LogIndex, NodeId, Term};
use crate::wal::{Wal, WriteBatch};
use crossbeam_channel::{Receiver, Sender};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most inputs handled before the driver proposes, reads and takes a `Ready` (keeps the batch
/// and the latency of one iteration bounded).
const MAX_INPUTS_PER_ITERATION: usize = 4096;

/// The channels the driver reads and writes.
pub(crate) struct Channels {
    pub(crate) inputs: Receiver<Input>,
    pub(crate) peers: Receiver<(NodeId, PeerMessage)>,
    pub(crate) clients: Receiver<ClientEvent<ClientRequest, ClientResponse>>,
    pub(crate) internal: Receiver<Internal>,
    pub(crate) internal_tx: Waking<Internal>,
    pub(crate) parker: Arc<Parker>,
    pub(crate) apply: WorkSender<ApplyTask>,
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
}

/// Log an event with this node's id and term.
macro_rules! dlog {
    ($d:expr, $level:expr, $event:expr $(, $key:ident = $value:expr)* $(,)?) => {
        event!($level, node: Some($d.id.0), term: Some($d.raft.term().0), $event
            $(, $key = $value)*)
    };
}

/// A failed WAL write stops the member (the WAL refuses every later write anyway).
fn wal_failure(e: Error) -> Error {
    match e {
        Error::Fatal(m) => Error::Fatal(format!("WAL write failed: {m}")),
        other => Error::Fatal(format!("WAL write failed: {other}")),
    }
}

fn storage(e: RaftError) -> Error {
    match e {
        RaftError::Storage(e) => e,
        other => Error::Fatal(format!("unexpected error from the Raft core: {other}")),
    }
}

impl Driver {
    pub(crate) fn new(
        config: Config,
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
            next_tick: Instant::now() + tick,
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
        while handled < MAX_INPUTS_PER_ITERATION {
            if self.poll_one()? {
                handled += 1;
                continue;
            }
            if handled > 0 {
                break;
            }
            let now = Instant::now();
            if now >= self.next_tick {
                break;
            }
            // Nothing queued: sleep until a producer wakes us or the next tick is due.
            self.ch.parker.park_timeout(self.next_tick - now);
        }
        self.on_clock()?;
        self.flush()
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

    // ----- the clock -----

    /// Give the core every tick the monotonic clock owes it, before each input and not only
    /// between batches: the core judges lease reads by the ticks it has seen, so after a
    /// pause (SIGSTOP, a stall) the up to `MAX_INPUTS_PER_ITERATION` inputs queued meanwhile
    /// would otherwise meet a clock that lags real time, and a ReadIndex could be answered
    /// from a lease that already expired. One clock read per input.
    fn tick_to_now(&mut self) -> Result<()> {
        let now = Instant::now();
        if now >= self.next_tick {
            self.catch_up_ticks(now)?;
        }
        Ok(())
    }

    fn on_clock(&mut self) -> Result<()> {
        let now = Instant::now();
        if now < self.next_tick {
            return Ok(());
        }
        self.catch_up_ticks(now)?;
        self.expire(now);
        if self.leader_usable() && !self.waiting_leader.is_empty() {
            self.drain_waiting();
        }
        Ok(())
    }

    fn catch_up_ticks(&mut self, now: Instant) -> Result<()> {
        let mut ticks = 0;
        while now >= self.next_tick && ticks < self.max_catch_up_ticks {
            self.raft.tick().map_err(storage)?;
            self.next_tick += self.tick;
            ticks += 1;
        }
        if now >= self.next_tick {
            // A long pause: the core saw enough ticks to time out (and for any lease, which
            // is shorter than an election timeout, to expire); skip the rest.
            self.next_tick = now + self.tick;
        }
        Ok(())
    }

    /// Whether requests can be routed now: a leader is known and, if it is us, no leadership
    /// transfer is under way.
    fn leader_usable(&self) -> bool {
        match self.raft.leader() {
            Some(l) if l == self.id => self.raft.transfer_target().is_none(),
            Some(_) => true,
            None => false,
        }
    }

    fn expire(&mut self, now: Instant) {
        if !self.waiting_leader.is_empty() {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_leader)
                .into_iter()
                .partition(|w| w.give_up <= now);
            self.waiting_leader = kept;
            for w in expired {
                w.pending.reply.fail(Error::Unavailable(format!(
                    "no leader known to member {} within {:?}",
                    self.id, self.no_leader_wait
                )));
            }
        }
        while let Some(Reverse((deadline, index, term))) = self.proposal_deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.proposal_deadlines.pop();
            if self
                .proposals
                .get(&index)
                .is_some_and(|(t, _, d)| *t == term && *d == deadline)
            {
                if let Some((_, reply, _)) = self.proposals.remove(&index) {
                    reply.fail(Error::Timeout(format!(
                        "entry {index} was proposed but not applied before the deadline; it \
                         may still be"
                    )));
                }
            }
        }
        if !self.forwarded.is_empty() {
            let expired: Vec<u64> = self
                .forwarded
                .iter()
                .filter(|(_, (_, d))| *d <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                if let Some((reply, _)) = self.forwarded.remove(&id) {
                    reply.fail(Error::Timeout(
                        "the leader did not answer the forwarded request in time; it may have \
                         been applied"
                            .into(),
                    ));
                }
            }
        }
        if !self.read_batches.is_empty() {
            // A ReadIndex request (or its answer) may be lost, and the core does not fail
            // requests forwarded to a leader that went away: ask again.
            let retry_after = self.config.max_election_timeout();
            let stale: Vec<u64> = self
                .read_batches
                .iter()
                .filter(|(_, b)| now.duration_since(b.issued) >= retry_after)
                .map(|(ctx, _)| *ctx)
                .collect();
            for ctx in stale {
                if let Some(batch) = self.read_batches.remove(&ctx) {
                    self.requeue_reads(batch.reads, now);
                }
            }
        }
        if !self.transfers.is_empty() {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
                .into_iter()
                .partition(|(_, _, d)| *d <= now);
            self.transfers = kept;
            for (to, reply, _) in expired {
                reply.fail(Error::Timeout(format!(
                    "{to} did not become leader in time; it still may"
                )));
            }
        }
        if !self.outgoing.is_empty() {
            let timeout = Duration::from_millis(self.config.snapshot_transfer_timeout_ms);
            let stalled: Vec<NodeId> = self
                .outgoing
                .iter()
                .filter(|(_, o)| now.duration_since(o.last_activity) >= timeout)
                .map(|(id, _)| *id)
                .collect();
            for to in stalled {
                if let Some(o) = self.outgoing.remove(&to) {
                    dlog!(
                        self,
                        Level::Warn,
                        "snapshot_send_timed_out",
                        to = to.0,
                        index = o.index.0
                    );
                    self.raft.report_snapshot(to, false);
                }
            }
        }
    }

    fn requeue_reads(&mut self, reads: Vec<PendingRead>, now: Instant) {
        for read in reads {
            if read.deadline <= now {
                read.reply.fail(Error::Timeout(
                    "no quorum confirmed the read index in time".into(),
                ));
            } else {
                self.queued_reads.push(read);
            }
        }
    }

    // ----- inputs -----

    fn on_input(&mut self, input: Input) -> Result<()> {
        match input {
            Input::Request {
                request,
                reply,
                deadline,
            } => self.on_request(request, reply, deadline),
            Input::TakeSnapshot(done) => {
                self.ch.apply.send(ApplyTask::TakeSnapshot(done));
                Ok(())
            }
            Input::Shutdown => {
                self.begin_shutdown();
                Ok(())
            }
        }
    }

    fn on_client_event(&mut self, event: ClientEvent<ClientRequest, ClientResponse>) {
        let ClientEvent::Request {
            conn,
            request_id,
            request,
        } = event
        else {
            return; // Closed: answers to it are dropped by the transport
        };
        let reply = Reply::Remote { conn, request_id };
        if request.version > CLIENT_PROTOCOL_VERSION {
            reply.fail(Error::UnsupportedVersion {
                what: "client protocol",
                found: request.version,
                supported: CLIENT_PROTOCOL_VERSION,
            });
            return;
        }
        if request.version < MIN_STATUS_PROTOCOL_VERSION && request.request == Request::Status {
            reply.fail(Error::InvalidArgument(format!(
                "status needs client protocol version {MIN_STATUS_PROTOCOL_VERSION} or newer \
                 (this client speaks {}): upgrade the client",
                request.version
            )));
            return;
        }
        let timeout = Duration::from_millis(
            u64::from(request.timeout_ms).min(super::config::MAX_REQUEST_TIMEOUT_MS),
        );
        // A storage failure inside a request is reported to the client and ends the node in
        // the next iteration (the core's state is then already marked failed).
        if let Err(e) = self.on_request(request.request, reply, Instant::now() + timeout) {
            self.shared.set_failure(&e.to_string());
            self.ch.internal_tx.send(Internal::Fatal(e.to_string()));
        }
    }

    fn on_request(&mut self, request: Request, reply: Reply, deadline: Instant) -> Result<()> {
        if self.stopping.is_some() {
            reply.fail(Error::Unavailable(format!(
                "member {} is shutting down",
                self.id
            )));
            return Ok(());
        }
        match request {
            Request::Write(command) => {
                if let Err(e) = command.validate() {
                    reply.fail(e);
                    return Ok(());
                }
                self.route_to_leader(Pending {
                    request: Request::Write(command),
                    reply,
                    deadline,
                })
            }
            Request::Read { op, mode } => {
                if let Err(e) = validate_read(&op) {
                    reply.fail(e);
                    return Ok(());
                }
                let read = PendingRead {
                    op,
                    reply,
                    deadline,
                };
                match mode {
                    ReadMode::Stale => {
                        self.ch.apply.send(ApplyTask::StaleRead(read));
                    }
                    ReadMode::Linearizable => {
                        if self.raft.leader().is_some() {
                            self.queued_reads.push(read);
                        } else {
                            self.wait_for_leader(Pending {
                                request: Request::Read { op: read.op, mode },
                                reply: read.reply,
                                deadline,
                            });
                        }
                    }
                }
                Ok(())
            }
            Request::Status => {
                reply.send(Ok(Response::Status(Box::new(self.status()))));
                Ok(())
            }
            Request::StateHash => {
                self.ch.apply.send(ApplyTask::StateHash(reply));
                Ok(())
            }
            Request::Admin(op) => self.route_to_leader(Pending {
                request: Request::Admin(op),
                reply,
                deadline,
            }),
        }
    }

    /// Writes and membership changes: propose here if we lead, else forward to the leader, else
    /// wait (bounded) for one.
    fn route_to_leader(&mut self, p: Pending) -> Result<()> {
        match self.raft.leader() {
            Some(l) if l == self.id => {
                if self.raft.transfer_target().is_some() {
                    self.wait_for_leader(p);
                    return Ok(());
                }
                match p.request {
                    Request::Admin(op) => self.admin(op, p.reply, p.deadline)?,
                    _ => self.queued_writes.push(p),
                }
            }
            Some(l) => {
                if p.reply.is_forwarded() {
                    p.reply.fail(Error::Unavailable(format!(
                        "member {} is not the leader (it follows {l})",
                        self.id
                    )));
                } else {
                    self.forward(p, l);
                }
            }
            None => self.wait_for_leader(p),
        }
        Ok(())
    }

    fn wait_for_leader(&mut self, pending: Pending) {
        let give_up = pending.deadline.min(Instant::now() + self.no_leader_wait);
        self.waiting_leader.push(Waiting { pending, give_up });
    }

    fn drain_waiting(&mut self) {
        for w in std::mem::take(&mut self.waiting_leader) {
            let p = w.pending;
            if let Err(e) = self.on_request(p.request, p.reply, p.deadline) {
                self.ch.internal_tx.send(Internal::Fatal(e.to_string()));
            }
        }
    }

    fn forward(&mut self, p: Pending, leader: NodeId) {
        let id = self.next_forward_id;
        self.next_forward_id += 1;
        let timeout_ms = p
            .deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(u128::from(u32::MAX)) as u32;
        let message = PeerMessage::Forward {
            id,
            timeout_ms,
            request: p.request,
        };
        match self.transport.send(leader, message) {
            SendOutcome::Queued => {
                self.stats.forwarded += 1;
                self.forwarded.insert(id, (p.reply, p.deadline));
            }
            other => p.reply.fail(Error::Unavailable(format!(
                "cannot forward to leader {leader}: {other:?}"
            ))),
        }
    }

    fn admin(&mut self, op: AdminOp, reply: Reply, deadline: Instant) -> Result<()> {
        let membership = self.raft.membership().clone();
        let change = match op {
            AdminOp::AddLearner { id, address } => {
                if let Err(e) = resolve_address(&address) {
                    reply.fail(e);
                    return Ok(());
                }
                let same = |m: &BTreeMap<NodeId, String>| m.get(&id) == Some(&address);
                if same(&membership.learners) || same(&membership.voters) {
                    reply.send(Ok(Response::Done)); // a retry of a change already made
                    return Ok(());
                }
                MembershipChange::AddLearner { id, address }
            }
            AdminOp::PromoteLearner { id } => {
                if membership.is_voter(id) {
                    reply.send(Ok(Response::Done));
                    return Ok(());
                }
                MembershipChange::PromoteLearner { id }
            }
            AdminOp::RemoveMember { id } => {
                if !membership.contains(id) {
                    reply.send(Ok(Response::Done));
                    return Ok(());
                }
                MembershipChange::Remove { id }
            }
            AdminOp::TransferLeadership { to } => {
                if to == self.id {
                    reply.send(Ok(Response::Done));
                    return Ok(());
                }
                match self.raft.transfer_leadership(to) {
                    Ok(()) => {
                        dlog!(self, Level::Info, "leadership_transfer_started", to = to.0);
                        self.transfers.push((to, reply, deadline));
                    }
                    Err(RaftError::Storage(e)) => return Err(e),
                    Err(e) => reply.fail(e.into()),
                }
                return Ok(());
            }
        };
        match self.raft.change_membership(change.clone()) {
            Ok(proposed) => {
                dlog!(
                    self,
                    Level::Info,
                    "membership_change_proposed",
                    change = format!("{change:?}"),
                    index = proposed.first.0
                );
                self.add_proposal(proposed.first, proposed.term, reply, deadline);
            }
            Err(RaftError::ChangeInProgress) => reply.fail(Error::Unavailable(
                "a membership change (or the leader's first entry) is not committed yet; retry"
                    .into(),
            )),
            Err(RaftError::Storage(e)) => return Err(e),
            Err(e) => reply.fail(e.into()),
        }
        Ok(())
    }

    fn add_proposal(&mut self, index: LogIndex, term: Term, reply: Reply, deadline: Instant) {
        if let Some((_, old, _)) = self.proposals.insert(index, (term, reply, deadline)) {
            // Only possible if an entry we proposed was overwritten without us noticing the
            // leadership change: its outcome is unknown.
            old.fail(Error::Timeout(format!(
                "entry {index} was overwritten; outcome unknown"
            )));
        }
        self.proposal_deadlines
            .push(Reverse((deadline, index, term)));
    }

    // ----- proposing and reading -----

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

    fn propose_queued(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.queued_writes);
        let mut data = Vec::with_capacity(pending.len());
        let mut waiting = Vec::with_capacity(pending.len());
        for p in pending {
            let encoded = match &p.request {
                Request::Write(command) => command.encode(),
                other => Err(Error::InvalidArgument(format!(
                    "a {} request cannot be proposed",
                    other.name()
                ))),
            };
            match encoded {
                Ok(bytes) => {
                    data.push(bytes);
                    waiting.push(p);
                }
                Err(e) => p.reply.fail(e),
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        match self.raft.propose(data) {
            Ok(proposed) => {
                self.stats.proposals += waiting.len() as u64;
                for (i, p) in waiting.into_iter().enumerate() {
                    let index = LogIndex(proposed.first.0 + i as u64);
                    self.add_proposal(index, proposed.term, p.reply, p.deadline);
                }
            }
            Err(RaftError::NotLeader { .. }) | Err(RaftError::TransferInProgress { .. }) => {
                for p in waiting {
                    self.route_to_leader(p)?;
                }
            }
            Err(RaftError::Storage(e)) => return Err(e),
            Err(e) => {
                let e = Error::from(e);
                for p in waiting {
                    p.reply.fail(Error::Unavailable(e.to_string()));
                }
            }
        }
        Ok(())
    }

    fn read_queued(&mut self) -> Result<()> {
        let reads = std::mem::take(&mut self.queued_reads);
        let context = self.next_read_context;
        self.next_read_context += 1;
        match self.raft.read_index(context.to_le_bytes().to_vec()) {
            Ok(()) => {
                self.read_batches.insert(
                    context,
                    ReadBatch {
                        reads,
                        issued: Instant::now(),
                    },
                );
            }
            Err(RaftError::NotLeader { .. }) => {
                for read in reads {
                    let mode = ReadMode::Linearizable;
                    self.wait_for_leader(Pending {
                        request: Request::Read { op: read.op, mode },
                        reply: read.reply,
                        deadline: read.deadline,
                    });
                }
            }
            Err(RaftError::Storage(e)) => return Err(e),
            Err(e) => {
                let e = Error::from(e);
                for read in reads {
                    read.reply.fail(Error::Unavailable(e.to_string()));
                }
            }
        }
        Ok(())
    }

    fn on_read_state(&mut self, state: ReadState) {
        let Ok(bytes) = <[u8; 8]>::try_from(state.context.as_slice()) else {
            return;
        };
        let Some(batch) = self.read_batches.remove(&u64::from_le_bytes(bytes)) else {
            return; // already retried or failed
        };
        match state.index {
            Some(index) => {
                self.stats.reads += batch.reads.len() as u64;
                self.ch.apply.send(ApplyTask::Reads {
                    index,
                    reads: batch.reads,
                });
            }
            // The leader could not serve it (it lost leadership): ask again.
            None => self.requeue_reads(batch.reads, Instant::now()),
        }
    }

    // ----- Ready -----

    fn on_ready(&mut self, ready: Ready) -> Result<()> {
        let Ready {
            number,
            soft_state,
            hard_state,
            entries,
            snapshot,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            rejected,
        } = ready;
        for r in rejected {
            dlog!(
                self,
                Level::Warn,
                "peer_message_rejected",
                peer = r.from.0,
                message = r.message,
                message_term = r.term.0,
                reason = r.reason
            );
        }
        if let Some(soft) = soft_state {
            self.on_soft_state(soft);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        // A change of term or vote must be durable before any message that depends on it; a
        // change of the commit index alone need not be (Raft recomputes it), so it rides along
        // with the next write instead of costing an fdatasync of its own.
        let vote_changed = self.hard_state.term != self.written_hard_state.term
            || self.hard_state.vote != self.written_hard_state.vote;
        let log_changed = !entries.is_empty() || snapshot.is_some();
        if log_changed || vote_changed {
            let batch = WriteBatch {
                entries,
                hard_state: self.take_hard_state(),
                compact_to: snapshot.as_ref().map(|s| (s.index, s.term)),
            };
            if self.raft.role() == Role::Leader || !self.in_flight.is_empty() {
                // The leader writes its own log while the followers write theirs.
                self.submit(number, batch, snapshot, None);
            } else {
                // A follower has nothing to do until its write is durable (its answer waits
                // for it), so it writes on this thread: no hand-off to the WAL's writer and
                // back, which is most of a follower's share of a write's latency. Messages
                // that arrive meanwhile queue up and share the next write.
                let started = Instant::now();
                self.wal.write(batch).map_err(wal_failure)?;
                self.stats.wal_writes += 1;
                self.stats
                    .wal_write_latency
                    .record(started.elapsed().as_micros() as u64);
                if let Some(meta) = snapshot {
                    self.on_install_durable(meta);
                }
                self.raft.advance_persisted(number).map_err(storage)?;
            }
        }
        for m in messages {
            self.send_raft(m);
        }
        if !persisted_messages.is_empty() {
            if self.in_flight.iter().all(|w| w.number == 0) {
                for m in persisted_messages {
                    self.send_raft(m);
                }
            } else {
                self.held.push_back((number, persisted_messages));
            }
        }
        if !committed_entries.is_empty() {
            self.hand_to_apply(committed_entries);
        }
        for state in read_states {
            self.on_read_state(state);
        }
        if log_changed {
            self.sync_peers();
        }
        Ok(())
    }

    fn take_hard_state(&mut self) -> Option<HardState> {
        if self.hard_state == self.written_hard_state {
            return None;
        }
        self.written_hard_state = self.hard_state;
        Some(self.hard_state)
    }

    fn submit(
        &mut self,
        number: u64,
        batch: WriteBatch,
        install: Option<SnapshotMeta>,
        compaction: Option<LogIndex>,
    ) {
        self.in_flight.push_back(InFlightWrite {
            number,
            submitted: Instant::now(),
            install,
            compaction,
        });
        let tx = self.ch.internal_tx.clone();
        self.wal.submit(
            batch,
            Box::new(move |result| {
                tx.send(Internal::Persisted { number, result });
            }),
        );
    }

    fn on_persisted(&mut self, number: u64, result: Result<()>) -> Result<()> {
        result.map_err(wal_failure)?;
        let Some(write) = self.in_flight.pop_front() else {
            panic!(
                "node {} term {}: WAL acknowledged write {number} with none in flight, index {}",
                self.id,
                self.raft.term(),
                self.raft.last_index()
            );
        };
        assert_eq!(
            write.number,
            number,
            "node {} term {}: WAL acknowledgements out of order, index {}",
            self.id,
            self.raft.term(),
            self.raft.last_index()
        );
        self.stats.wal_writes += 1;
        self.stats
            .wal_write_latency
            .record(write.submitted.elapsed().as_micros() as u64);
        if let Some(meta) = write.install {
            self.on_install_durable(meta);
        }
        if let Some(keep_from) = write.compaction {
            let _ = self.ch.transfer.send(TransferTask::Prune { keep_from });
        }
        if number > 0 {
            self.raft.advance_persisted(number).map_err(storage)?;
        }
        // Messages of a Ready may go once no write of that Ready or an earlier one is pending.
        let oldest_pending = self
            .in_flight
            .iter()
            .find(|w| w.number > 0)
            .map_or(u64::MAX, |w| w.number);
        while self.held.front().is_some_and(|(n, _)| *n < oldest_pending) {
            if let Some((_, messages)) = self.held.pop_front() {
                for m in messages {
                    self.send_raft(m);
                }
            }
        }
        Ok(())
    }

    /// A snapshot from the leader is now the start of our log: restore the state from it
    /// (before any entry after it is handed out, which happens once the core hears the write
    /// is durable).
    fn on_install_durable(&mut self, meta: SnapshotMeta) {
        let Some(path) = self.install_paths.remove(&(meta.index, meta.term)) else {
            panic!(
                "node {} term {}: installing snapshot at index {} term {} whose data was never \
                 fetched",
                self.id,
                self.raft.term(),
                meta.index,
                meta.term
            );
        };
        self.install_paths.retain(|(i, _), _| *i > meta.index);
        self.raft.store_mut().set_snapshot(meta.clone());
        let later = self.proposals.split_off(&meta.index.next());
        let orphans = std::mem::replace(&mut self.proposals, later)
            .into_iter()
            .map(|(index, (term, reply, _))| Waiter { index, term, reply })
            .collect();
        self.stats.snapshots_installed += 1;
        dlog!(
            self,
            Level::Info,
            "snapshot_installed",
            index = meta.index.0,
            snapshot_term = meta.term.0
        );
        self.snapshots = vec![meta.clone()];
        self.ch.apply.send(ApplyTask::Restore {
            meta: meta.clone(),
            path,
            orphans,
        });
        let _ = self.ch.transfer.send(TransferTask::Prune {
            keep_from: meta.index,
        });
    }

    fn hand_to_apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        let mut waiters = Vec::new();
        while let Some(first) = self.proposals.first_entry() {
            if *first.key() > last {
                break;
            }
            let (index, (term, reply, _)) = first.remove_entry();
            waiters.push(Waiter { index, term, reply });
        }
        self.ch.apply.send(ApplyTask::Apply { entries, waiters });
    }

    fn send_raft(&mut self, m: Message) {
        if let MessageBody::Snapshot { meta } = &m.body {
            dlog!(
                self,
                Level::Info,
                "snapshot_send_started",
                to = m.to.0,
                index = meta.index.0
            );
            self.outgoing.insert(
                m.to,
                Outgoing {
                    index: meta.index,
                    term: meta.term,
                    last_activity: Instant::now(),
                },
            );
        }
        let to = m.to;
        self.transport.send(to, PeerMessage::Raft(m));
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        let was_leader = self.role == Role::Leader;
        let old_leader = self.leader;
        self.role = soft.role;
        self.leader = soft.leader;
        if soft.role == Role::Candidate {
            self.stats.elections_started += 1;
        }
        let role = role_name(node_role(soft.role));
        let leader = soft.leader.map_or("none".to_string(), |l| l.0.to_string());
        dlog!(
            self,
            Level::Info,
            "role_changed",
            role = role,
            leader = leader
        );
        if was_leader && soft.role != Role::Leader {
            // Entries above the commit index may or may not survive under the next leader.
            let commit = self.raft.commit_index();
            let unknown = self.proposals.split_off(&commit.next());
            for (index, (_, reply, _)) in unknown {
                reply.fail(Error::Timeout(format!(
                    "leadership was lost before entry {index} committed; it may still be \
                     applied"
                )));
            }
            self.outgoing.clear();
        }
        if old_leader != soft.leader {
            for (_, (reply, _)) in self.forwarded.drain() {
                reply.fail(Error::Timeout(
                    "the leader changed while a forwarded request was in flight; it may have \
                     been applied"
                        .into(),
                ));
            }
            let now = Instant::now();
            let batches: Vec<ReadBatch> = self.read_batches.drain().map(|(_, b)| b).collect();
            for batch in batches {
                self.requeue_reads(batch.reads, now);
            }
        }
        if let Some(leader) = soft.leader {
            let (done, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
                .into_iter()
                .partition(|(to, _, _)| *to == leader);
            self.transfers = kept;
            for (_, reply, _) in done {
                reply.send(Ok(Response::Done));
            }
        }
        if self.leader_usable() && !self.waiting_leader.is_empty() {
            self.drain_waiting();
        }
    }

    // ----- peers -----

    fn on_peer(&mut self, from: NodeId, message: PeerMessage) -> Result<()> {
        self.last_contact.insert(from, Instant::now());
        match message {
            PeerMessage::Raft(m) => {
                if m.from != from {
                    dlog!(
                        self,
                        Level::Warn,
                        "peer_message_spoofed",
                        peer = from.0,
                        claimed = m.from.0
                    );
                    return Ok(());
                }
                self.on_raft_message(m)?;
            }
            PeerMessage::Forward {
                id,
                timeout_ms,
                request,
            } => {
                let timeout = Duration::from_millis(
                    u64::from(timeout_ms).min(super::config::MAX_REQUEST_TIMEOUT_MS),
                );
                let reply = Reply::Forwarded {
                    transport: Arc::clone(&self.transport),
                    to: from,
                    id,
                };
                self.on_request(request, reply, Instant::now() + timeout)?;
            }
            PeerMessage::ForwardReply { id, response } => {
                if let Some((reply, _)) = self.forwarded.remove(&id) {
                    reply.send(response.map_err(|e: WireError| Error::from(e)));
                }
            }
            PeerMessage::SnapshotRequest {
                index,
                term,
                offset,
            } => {
                if let Some(o) = self.outgoing.get_mut(&from) {
                    if o.index == index && o.term == term {
                        o.last_activity = Instant::now();
                    }
                }
                let _ = self.ch.transfer.send(TransferTask::Serve {
                    to: from,
                    index,
                    term,
                    offset,
                });
            }
            PeerMessage::SnapshotChunk {
                index,
                term,
                sha256,
                offset,
                data,
                done,
            } => {
                let _ = self.ch.transfer.send(TransferTask::Chunk {
                    from,
                    index,
                    term,
                    sha256,
                    offset,
                    data,
                    done,
                });
            }
            PeerMessage::SnapshotGone { index, term } => {
                let _ = self
                    .ch
                    .transfer
                    .send(TransferTask::Gone { from, index, term });
            }
            PeerMessage::SnapshotDone { index, term, ok } => {
                let matches = self
                    .outgoing
                    .get(&from)
                    .is_some_and(|o| o.index == index && o.term == term);
                if matches {
                    self.outgoing.remove(&from);
                    if ok {
                        self.stats.snapshots_sent += 1;
                    }
                    dlog!(
                        self,
                        Level::Info,
                        "snapshot_send_finished",
                        to = from.0,
                        index = index.0,
                        ok = ok
                    );
                    self.raft.report_snapshot(from, ok);
                }
            }
        }
        Ok(())
    }

    fn on_raft_message(&mut self, m: Message) -> Result<()> {
        if let MessageBody::Snapshot { meta } = &m.body {
            let current = m.term >= self.raft.term();
            let covered = meta.index <= self.raft.commit_index()
                || matches!(self.raft.log_term(meta.index), Ok(Some(t)) if t == meta.term);
            if current && !covered {
                // The core takes the snapshot only once its data is durable here.
                let key = (meta.index, meta.term, m.from);
                if self.fetching != Some(key) {
                    dlog!(
                        self,
                        Level::Info,
                        "snapshot_offered",
                        from = m.from.0,
                        index = meta.index.0
                    );
                }
                self.fetching = Some(key);
                let _ = self.ch.transfer.send(TransferTask::Fetch(m));
                return Ok(());
            }
        }
        self.raft.step(m).map_err(storage)
    }

    /// Keep the transport's peer set equal to the configuration in force (a member being
    /// added is dialled as soon as its change is appended). Before a joining member knows
    /// any configuration it talks to the members it was given.
    fn sync_peers(&mut self) {
        let membership = self.raft.membership();
        if self.membership.as_ref() == Some(membership) {
            return;
        }
        let membership = membership.clone();
        let mut wanted: BTreeMap<NodeId, String> = membership
            .voters
            .iter()
            .chain(membership.learners.iter())
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        if wanted.is_empty() {
            wanted = self.config.members.clone();
        }
        wanted.remove(&self.id);
        for (id, address) in &wanted {
            let addr = match self.config.peer_routes.get(id) {
                Some(addr) => *addr,
                None => match resolve_address(address) {
                    Ok(addr) => addr,
                    Err(e) => {
                        dlog!(
                            self,
                            Level::Warn,
                            "peer_address_unresolved",
                            peer = id.0,
                            error = e
                        );
                        continue;
                    }
                },
            };
            if self.peer_addrs.get(id) != Some(&addr) {
                match self.transport.set_peer(*id, addr) {
                    Ok(()) => {
                        self.peer_addrs.insert(*id, addr);
                    }
                    Err(e) => dlog!(self, Level::Warn, "peer_add_failed", peer = id.0, error = e),
                }
            }
        }
        let gone: Vec<NodeId> = self
            .peer_addrs
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.transport.remove_peer(id);
            self.peer_addrs.remove(&id);
        }
        if self.membership.is_some() {
            dlog!(
                self,
                Level::Info,
                "membership_changed",
                voters = membership.voters.len(),
                learners = membership.learners.len()
            );
        }
        self.membership = Some(membership);
    }

    // ----- internal events -----

    fn on_internal(&mut self, event: Internal) -> Result<()> {
        match event {
            Internal::Persisted { number, result } => self.on_persisted(number, result)?,
            Internal::Applied(index) => {
                if index <= self.raft.applied_index() {
                    return Ok(());
                }
                self.raft.advance_applied(index);
            }
            Internal::SnapshotTaken(meta) => self.on_snapshot_taken(meta),
            Internal::SnapshotFetched { message, path } => {
                let MessageBody::Snapshot { meta } = &message.body else {
                    return Ok(());
                };
                let (index, term, from) = (meta.index, meta.term, message.from);
                if self.fetching == Some((index, term, from)) {
                    self.fetching = None;
                }
                self.install_paths.insert((index, term), path);
                self.stats.snapshots_received += 1;
                self.raft.step(message).map_err(storage)?;
                self.transport.send(
                    from,
                    PeerMessage::SnapshotDone {
                        index,
                        term,
                        ok: true,
                    },
                );
            }
            Internal::SnapshotFetchFailed { index, term } => {
                if self
                    .fetching
                    .is_some_and(|(i, t, _)| i == index && t == term)
                {
                    self.fetching = None;
                }
            }
            Internal::Fatal(why) => return Err(Error::Fatal(why)),
        }
        Ok(())
    }

    /// Compact the log behind the newest snapshot that leaves `snapshot_trailing_entries`
    /// entries after it (never past a snapshot file already fsynced: the apply thread reports
    /// a snapshot only after it is).
    fn on_snapshot_taken(&mut self, meta: SnapshotMeta) {
        self.snapshots.push(meta.clone());
        let current = self.raft.store().snapshot().index;
        let limit = meta
            .index
            .0
            .saturating_sub(self.config.snapshot_trailing_entries);
        let target = self
            .snapshots
            .iter()
            .filter(|s| s.index.0 <= limit && s.index > current)
            .max_by_key(|s| s.index)
            .cloned();
        let Some(target) = target else {
            return;
        };
        dlog!(
            self,
            Level::Info,
            "log_compacted",
            index = target.index.0,
            newest_snapshot = meta.index.0
        );
        self.raft.store_mut().set_snapshot(target.clone());
        self.snapshots.retain(|s| s.index >= target.index);
        let batch = WriteBatch {
            entries: Vec::new(),
            hard_state: self.take_hard_state(),
            compact_to: Some((target.index, target.term)),
        };
        self.submit(0, batch, None, Some(target.index));
    }

    // ----- status -----

    fn status(&self) -> Status {
        let membership = self.raft.membership();
        let leading = self.raft.role() == Role::Leader;
        let now = Instant::now();
        let member = |id: NodeId, address: &String, voter: bool| MemberStatus {
            id,
            address: address.clone(),
            voter,
            match_index: if !leading {
                None
            } else if id == self.id {
                Some(self.raft.persisted_index())
            } else {
                self.raft.progress(id).map(|(m, _, _)| m)
            },
            last_contact_ms: if id == self.id {
                None
            } else {
                self.last_contact
                    .get(&id)
                    .map(|t| now.duration_since(*t).as_millis() as u64)
            },
        };
        let mut members: Vec<MemberStatus> = membership
            .voters
            .iter()
            .map(|(id, a)| member(*id, a, true))
            .chain(
                membership
                    .learners
                    .iter()
                    .map(|(id, a)| member(*id, a, false)),
            )
            .collect();
        members.sort_by_key(|m| m.id);
        let mut counters = self.stats.clone();
        counters.entries_applied = self.counters.entries_applied.load(Ordering::Relaxed);
        counters.snapshots_taken = self.counters.snapshots_taken.load(Ordering::Relaxed);
        let (fsync_counts, fsync_sum) = self.wal.sync_latency().snapshot();
        counters.fsync_latency = Histogram {
            counts: fsync_counts,
        };
        counters.fsync_latency_sum_micros = fsync_sum;
        counters.transport_drops = self
            .transport
            .peers()
            .iter()
            .filter_map(|(id, _)| self.transport.peer_stats(*id))
            .map(|s| s.control.dropped() + s.bulk.dropped())
            .sum();
        Status {
            id: self.id,
            role: node_role(self.raft.role()),
            term: self.raft.term(),
            leader: self.raft.leader(),
            commit_index: self.raft.commit_index(),
            applied_index: LogIndex(self.counters.applied.load(Ordering::Relaxed)),
            first_index: self.raft.first_index(),
            last_index: self.raft.last_index(),
            members,
            counters,
            failure: None,
        }
    }

    // ----- stopping -----

    fn begin_shutdown(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        dlog!(self, Level::Info, "shutdown_started");
        self.stopping = Some(Stopping {
            since: Instant::now(),
        });
        let id = self.id;
        self.fail_not_started(|| Error::Unavailable(format!("member {id} is shutting down")));
        // Hand leadership to the most up-to-date voter so the cluster does not wait for an
        // election timeout.
        if self.raft.role() == Role::Leader {
            let successor = self
                .raft
                .membership()
                .voters
                .keys()
                .filter(|&&v| v != self.id)
                .filter_map(|&v| self.raft.progress(v).map(|(m, _, _)| (m, v)))
                .max();
            if let Some((_, to)) = successor {
                if self.raft.transfer_leadership(to).is_ok() {
                    dlog!(self, Level::Info, "leadership_handed_over", to = to.0);
                }
            }
        }
    }

    /// Whether a graceful shutdown may finish: leadership handed over (or an election timeout
    /// spent trying), and every WAL write acknowledged.
    fn stop_complete(&self) -> bool {
        let Some(stopping) = &self.stopping else {
            return false;
        };
        let elapsed = stopping.since.elapsed();
        let handed_over =
            self.raft.role() != Role::Leader || elapsed >= self.config.max_election_timeout();
        let drained = self.in_flight.is_empty() && !self.raft.has_ready();
        (handed_over && drained) || elapsed >= self.config.max_election_timeout() * 4
    }

    /// After a graceful stop: requests still waiting end with `Timeout` (their entries may
    /// still commit), the apply and transfer threads finish their queues and stop.
    fn finish(&mut self) {
        if !self.in_flight.is_empty() {
            dlog!(
                self,
                Level::Warn,
                "shutdown_with_writes_in_flight",
                writes = self.in_flight.len()
            );
        }
        let unknown = || Error::Timeout("the member shut down before the outcome was known".into());
        self.fail_waiting(unknown, unknown);
        self.ch.apply.send(ApplyTask::Stop);
        let _ = self.ch.transfer.send(TransferTask::Stop);
        dlog!(self, Level::Info, "driver_stopped");
    }

    /// Answer every request still waiting: `unknown` for those that may have taken effect
    /// (proposed, forwarded, transfers), `error` for the rest.
    fn fail_waiting(&mut self, unknown: impl Fn() -> Error, error: impl Fn() -> Error) {
        for (_, (_, reply, _)) in std::mem::take(&mut self.proposals) {
            reply.fail(unknown());
        }
        for (_, (reply, _)) in self.forwarded.drain() {
            reply.fail(unknown());
        }
        for (_, reply, _) in std::mem::take(&mut self.transfers) {
            reply.fail(unknown());
        }
        self.fail_not_started(error);
    }

    /// Answer `error` to every request that has not taken effect: writes queued or waiting for
    /// a leader, reads queued or waiting for their ReadIndex.
    fn fail_not_started(&mut self, error: impl Fn() -> Error) {
        for p in std::mem::take(&mut self.queued_writes) {
            p.reply.fail(error());
        }
        for w in std::mem::take(&mut self.waiting_leader) {
            w.pending.reply.fail(error());
        }
        for r in std::mem::take(&mut self.queued_reads) {
            r.reply.fail(error());
        }
        for (_, batch) in self.read_batches.drain() {
            for r in batch.reads {
                r.reply.fail(error());
            }
        }
    }

    /// A storage failure (WAL, state machine, corrupt entry): the core can no longer be
    /// trusted. Stop taking part: fail everything, stop the other threads and the transport.
    fn fail(&mut self, error: Error) {
        let why = error.to_string();
        dlog!(self, Level::Error, "node_failed", error = why);
        self.shared.set_failure(&why);
        self.fail_waiting(
            || {
                Error::Timeout(format!(
                    "the member stopped after a storage failure ({why}); the outcome is unknown"
                ))
            },
            || Error::Fatal(why.clone()),
        );
        self.ch.apply.send(ApplyTask::Stop);
        let _ = self.ch.transfer.send(TransferTask::Stop);
        self.transport.shutdown();
    }
}

/// Check a read's arguments before any round trip (the state machine checks them again).
fn validate_read(op: &ReadOp) -> Result<()> {
    match op {
        ReadOp::Get { key } => {
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "get: key of {} bytes is not in 1..={MAX_KEY_BYTES}",
                    key.len()
                )));
            }
        }
        ReadOp::Range { start, end, limit } => {
            if *limit == 0 || *limit as usize > MAX_SCAN_LIMIT {
                return Err(Error::InvalidArgument(format!(
                    "range: limit {limit} is not in 1..={MAX_SCAN_LIMIT}"
                )));
            }
            if start.len() > MAX_KEY_BYTES || end.as_ref().is_some_and(|e| e.len() > MAX_KEY_BYTES)
            {
                return Err(Error::InvalidArgument(format!(
                    "range: a bound is over the key limit of {MAX_KEY_BYTES} bytes"
                )));
            }
            if end.as_ref().is_some_and(|e| e <= start) {
                return Err(Error::InvalidArgument(
                    "range: end must be greater than start".into(),
                ));
            }
        }
    }
    Ok(())
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Follower => "follower",
        NodeRole::PreCandidate => "pre_candidate",
        NodeRole::Candidate => "candidate",
        NodeRole::Leader => "leader",
        NodeRole::Stopped => "stopped",
    }
}
