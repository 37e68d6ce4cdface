//! The Raft state machine of one node: elections, replication, commit, reads, transfer,
//! membership. See the module docs of [`crate::raft`] for the driving contract.

use super::config::{Config, InjectedBug};
use super::log::RaftLog;
use super::membership::{Membership, MembershipChange};
use super::message::{Message, MessageBody, SnapshotMeta};
use super::progress::{Progress, ReplicationState};
use super::reject::{check_shape, RejectReason, Rejection, Rejections};
use super::rng::SplitMix64;
use super::storage::{LogStore, StorageError};
use crate::error::Error;
use crate::limits::MAX_ENTRY_BYTES;
use crate::types::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// What a node currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes, without having changed term.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Leads the current term.
    Leader,
}

/// Volatile state the runtime may want to react to (it is not persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// The leader this node knows of in its current term.
    pub leader: Option<NodeId>,
}

/// The outcome of a ReadIndex request made on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// The context passed to [`Raft::read_index`].
    pub context: Vec<u8>,
    /// Serve the read once the local state machine has applied this index. `None`: the request
    /// was dropped (leadership changed); retry, which obtains a fresh index.
    pub index: Option<LogIndex>,
}

/// Where a proposal went. An entry found at one of these indices with another term was NOT
/// applied (it was overwritten by a later leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposed {
    /// The leader's term: the term of every proposed entry.
    pub term: Term,
    /// Index of the first entry.
    pub first: LogIndex,
    /// Index of the last entry.
    pub last: LogIndex,
}

/// Why the core refused a request or could not go on.
#[non_exhaustive]
#[derive(Debug)]
pub enum RaftError {
    /// Only the leader can do this; `leader` is the leader this node knows of, if any.
    NotLeader {
        /// Where to forward the request.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is under way; proposals are refused until it ends.
    TransferInProgress {
        /// The node leadership is being handed to.
        to: NodeId,
    },
    /// A membership change is pending: the previous change or this leader's no-op entry is not
    /// committed yet.
    ChangeInProgress,
    /// Too many requests are queued (ReadIndex); retry later.
    Overloaded(String),
    /// The request is malformed.
    InvalidArgument(String),
    /// Storage failed, or persisted bytes are corrupt. Fatal: stop the node.
    Storage(Error),
}

impl fmt::Display for RaftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaftError::NotLeader { leader: Some(l) } => write!(f, "not the leader (try {l})"),
            RaftError::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            RaftError::TransferInProgress { to } => {
                write!(f, "leadership transfer to {to} in progress")
            }
            RaftError::ChangeInProgress => write!(f, "a membership change is still pending"),
            RaftError::Overloaded(m) => write!(f, "overloaded: {m}"),
            RaftError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            RaftError::Storage(e) => write!(f, "storage: {e}"),
        }
    }
}

impl std::error::Error for RaftError {}

impl From<StorageError> for RaftError {
    fn from(e: StorageError) -> RaftError {
        match e {
            StorageError::Io(e) => RaftError::Storage(e),
            StorageError::Compacted => RaftError::Storage(Error::Fatal(
                "a log entry the core needed was compacted (compaction past the applied index?)"
                    .into(),
            )),
        }
    }
}

impl From<RaftError> for Error {
    fn from(e: RaftError) -> Error {
        match e {
            RaftError::Storage(e) => e,
            RaftError::InvalidArgument(m) => Error::InvalidArgument(m),
            other => Error::Unavailable(other.to_string()),
        }
    }
}

/// What the runtime must do next. See the module docs of [`crate::raft`] for the order.
#[derive(Debug, Default)]
pub struct Ready {
    /// Sequence number; pass it to [`Raft::advance_persisted`] once everything this `Ready`
    /// (and every earlier one) asked to persist is durable.
    pub number: u64,
    /// Changed role or leader, if any.
    pub soft_state: Option<SoftState>,
    /// (a) The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// (a) Entries to append, in order; the first may replace a stored suffix.
    pub entries: Vec<Entry>,
    /// (a) A snapshot received from the leader to install: the runtime replaces its log by
    /// it (discarding every entry), records it as the latest snapshot, and restores the state
    /// machine from its data (which it stored before stepping the `Snapshot` message in).
    pub snapshot: Option<SnapshotMeta>,
    /// (b) Messages to send now, before or while (a) is written.
    pub messages: Vec<Message>,
    /// (c) Messages to send only after (a), and every earlier `Ready`'s (a), is durable.
    pub persisted_messages: Vec<Message>,
    /// (d) Committed entries, durable locally, to apply in order.
    pub committed_entries: Vec<Entry>,
    /// (e) Results of ReadIndex requests made on this node.
    pub read_states: Vec<ReadState>,
    /// (g) Peer messages dropped since the last `Ready` because no correct member could have
    /// sent them: log them (at most 64 per `Ready`; [`Raft::rejected_messages`] counts all).
    pub rejected: Vec<Rejection>,
}

impl Ready {
    /// Whether (a) holds anything to write.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }

    /// Whether this `Ready` asks for nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.must_persist()
            && self.soft_state.is_none()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.rejected.is_empty()
    }
}

/// A `Ready`'s write, remembered until the runtime acknowledges it.
struct PendingWrite {
    number: u64,
    last_entry: Option<(LogIndex, Term)>,
    snapshot: Option<LogIndex>,
}

/// A ReadIndex request waiting for a quorum to confirm this leader.
struct PendingRead {
    round: u64,
    index: LogIndex,
    context: Vec<u8>,
    /// The follower that forwarded it, or `None` if made on this node.
    from: Option<NodeId>,
}

/// Most heartbeat rounds remembered for lease bookkeeping.
const MAX_TRACKED_ROUNDS: usize = 1024;

/// The Raft core of one node. Pure: no IO, no clock, no threads; see [`crate::raft`].
pub struct Raft<S: LogStore> {
    config: Config,
    id: NodeId,
    term: Term,
    vote: Option<NodeId>,
    log: RaftLog<S>,
    role: Role,
    leader: Option<NodeId>,
    rng: SplitMix64,

    /// The configuration as of `base_membership.0` (committed).
    base_membership: (LogIndex, Membership),
    /// Membership entries in the log after the base, in index order. The last one (or the
    /// base) is in force: a configuration takes effect when appended.
    config_history: Vec<(LogIndex, Membership)>,

    /// Logical clock: ticks since this core was created.
    now: u64,
    /// Started with a term above 0: it may have answered a leader before (lease guard).
    restarted: bool,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_ticks: u32,

    // Candidate state.
    votes: BTreeMap<NodeId, bool>,

    // Leader state.
    progress: BTreeMap<NodeId, Progress>,
    noop_index: LogIndex,
    pending_conf_index: LogIndex,
    /// Leadership transfer: (target, ticks since it started, TimeoutNow sent).
    transfer: Option<(NodeId, u32, bool)>,
    /// New entries or acknowledgements: try to send AppendEntries at the next `ready()`.
    replicate_pending: bool,
    /// Commit advanced: tell followers even without new entries.
    commit_pending: bool,
    read_round: u64,
    /// Reads queued for the next round; the round starts at the next `ready()`.
    read_round_pending: bool,
    round_ticks: VecDeque<(u64, u64)>,
    lease_until: u64,
    lease_disabled: bool,
    pending_reads: VecDeque<PendingRead>,
    reads_waiting_noop: Vec<(Vec<u8>, Option<NodeId>)>,

    /// Peer messages dropped as impossible: counts per sender, and those not yet reported.
    rejections: Rejections,

    // Output not yet handed out.
    msgs: Vec<Message>,
    msgs_after_persist: Vec<Message>,
    read_states: Vec<ReadState>,
    last_soft: SoftState,
    last_hard: HardState,
    ready_number: u64,
    pending_writes: VecDeque<PendingWrite>,
}

type Res<T> = Result<T, RaftError>;

impl<S: LogStore> Raft<S> {
    /// Start (or restart) a node over `store`. `applied` is the index the runtime's state
    /// machine already reflects (at least the store's snapshot index); committed entries after
    /// it will be handed out again for applying.
    ///
    /// Reads the membership entries of the stored log (the entries after the last snapshot) to
    /// know the configuration in force; a corrupt one is an error.
    pub fn new(config: Config, store: S, applied: LogIndex) -> Res<Raft<S>> {
        config.validate().map_err(|e| match e {
            Error::InvalidArgument(m) => RaftError::InvalidArgument(m),
            other => RaftError::Storage(other),
        })?;
        let hard = store.hard_state()?;
        let snapshot = store.snapshot_meta()?;
        let last = store.last_index();
        if store.first_index() != snapshot.index.next() {
            return Err(RaftError::Storage(Error::corrupt(
                0,
                format!(
                    "log starts at {} but the snapshot ends at {}",
                    store.first_index(),
                    snapshot.index
                ),
            )));
        }
        if hard.commit > last {
            return Err(RaftError::Storage(Error::corrupt(
                0,
                format!(
                    "hard state commit {} beyond the log's end {last}",
                    hard.commit
                ),
            )));
        }
        if applied < snapshot.index || applied > last {
            return Err(RaftError::InvalidArgument(format!(
                "applied index {applied} outside [snapshot {}, last {last}]",
                snapshot.index
            )));
        }
        let commit = hard.commit.max(applied).max(snapshot.index);
        let mut config_history = Vec::new();
        let mut next = snapshot.index.next();
        while next <= last {
            let batch = store.entries(next, last.next(), 4 << 20)?;
            for e in &batch {
                if let Some(m) = Membership::from_entry(e).map_err(RaftError::Storage)? {
                    config_history.push((e.index, m));
                }
            }
            next = LogIndex(next.0 + batch.len().max(1) as u64);
        }
        let log = RaftLog::new(config.id, store, commit, applied);
        let soft = SoftState {
            role: Role::Follower,
            leader: None,
        };
        let mut raft = Raft {
            id: config.id,
            rng: SplitMix64::new(config.seed ^ config.id.0.wrapping_mul(0x9E37_79B9)),
            term: hard.term,
            vote: hard.vote,
            log,
            role: Role::Follower,
            leader: None,
            base_membership: (snapshot.index, snapshot.membership),
            config_history,
            now: 0,
            restarted: hard.term.0 > 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: config.election_ticks,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            noop_index: LogIndex(0),
            pending_conf_index: LogIndex(0),
            transfer: None,
            replicate_pending: false,
            commit_pending: false,
            read_round: 0,
            read_round_pending: false,
            round_ticks: VecDeque::new(),
            lease_until: 0,
            lease_disabled: false,
            pending_reads: VecDeque::new(),
            reads_waiting_noop: Vec::new(),
            rejections: Rejections::default(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            last_soft: soft,
            last_hard: hard,
            ready_number: 0,
            pending_writes: VecDeque::new(),
            config,
        };
        raft.prune_config_history();
        raft.reset_election_timer();
        Ok(raft)
    }

    // ----- accessors -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node knows of in its current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.log.commit
    }

    /// The index the runtime reported applied.
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    /// The last index of the log (including unpersisted entries).
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The first index still in the log (snapshot index + 1).
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// Entries up to here are durable locally.
    pub fn persisted_index(&self) -> LogIndex {
        self.log.persisted_index()
    }

    /// The term of the entry at `index` (`Ok(None)` past the end; `Compacted` before the
    /// snapshot).
    pub fn log_term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        self.log.term(index)
    }

    /// Entries `[lo, hi)` of the log (stable and unstable).
    pub fn log_entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, StorageError> {
        self.log
            .entries(lo, hi.min(self.last_index().next()), usize::MAX, usize::MAX)
    }

    /// The configuration in force (the latest one in the log).
    pub fn membership(&self) -> &Membership {
        self.config_history
            .last()
            .map(|(_, m)| m)
            .unwrap_or(&self.base_membership.1)
    }

    /// The configuration as of the commit index (for snapshots: it is the configuration at any
    /// applied index at or above the last membership entry at or below the commit index).
    pub fn committed_membership(&self) -> &Membership {
        &self.base_membership.1
    }

    /// The leader's view of a member's replication: (match index, next index, state).
    pub fn progress(&self, id: NodeId) -> Option<(LogIndex, LogIndex, ReplicationState)> {
        self.progress
            .get(&id)
            .map(|p| (p.match_index, p.next_index, p.state))
    }

    /// How many peer messages this core dropped because no correct member could have sent
    /// them, per sender (senders beyond the first 64 share the count of `NodeId(0)`). Each
    /// one is also reported once in [`Ready::rejected`].
    pub fn rejected_messages(&self) -> &BTreeMap<NodeId, u64> {
        self.rejections.counts()
    }

    /// The leadership transfer under way, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|(to, _, _)| to)
    }

    /// The log storage.
    pub fn store(&self) -> &S {
        &self.log.store
    }

    /// The log storage, to write what a `Ready` asked to persist.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.log.store
    }

    /// Give the storage back (a crash in the simulator, a shutdown in the runtime).
    pub fn into_store(self) -> S {
        self.log.store
    }

    // ----- inputs -----

    /// Advance the logical clock by one tick.
    pub fn tick(&mut self) -> Res<()> {
        self.now += 1;
        if self.role == Role::Leader {
            return self.tick_leader();
        }
        // Saturating: a node outside the configuration ticks forever without campaigning.
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.randomized_election_ticks && self.promotable() {
            let pre = self.config.pre_vote;
            self.campaign(pre, false)?;
        }
        Ok(())
    }

    fn tick_leader(&mut self) -> Res<()> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if let Some((to, elapsed, sent)) = self.transfer {
            if elapsed + 1 >= self.config.election_ticks {
                self.transfer = None; // the target did not take over in time: abort
            } else {
                self.transfer = Some((to, elapsed + 1, sent));
            }
        }
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                let active = self
                    .membership()
                    .voters
                    .keys()
                    .filter(|&&v| {
                        v == self.id || self.progress.get(&v).is_some_and(|p| p.recent_active)
                    })
                    .count();
                if active < self.membership().quorum() {
                    self.become_follower(self.term, None);
                    return Ok(());
                }
                for p in self.progress.values_mut() {
                    p.recent_active = false;
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        Ok(())
    }

    /// Propose a batch of commands. Only the leader accepts; others answer `NotLeader` with a
    /// hint. Returns where the entries went.
    pub fn propose<I>(&mut self, commands: I) -> Res<Proposed>
    where
        I: IntoIterator<Item = Vec<u8>>,
    {
        self.check_can_propose()?;
        let commands: Vec<Vec<u8>> = commands.into_iter().collect();
        if commands.is_empty() {
            return Err(RaftError::InvalidArgument("empty proposal batch".into()));
        }
        if let Some(big) = commands.iter().find(|c| c.len() > MAX_ENTRY_BYTES) {
            return Err(RaftError::InvalidArgument(format!(
                "command of {} bytes over the limit of {MAX_ENTRY_BYTES}",
                big.len()
            )));
        }
        let first = self.log.last_index().next();
        let mut index = first.prev();
        for data in commands {
            index = index.next();
            self.log.push(Entry {
                group: self.config.group,
                term: self.term,
                index,
                kind: EntryKind::Normal,
                data,
            });
        }
        self.replicate_pending = true;
        Ok(Proposed {
            term: self.term,
            first,
            last: index,
        })
    }

    fn check_can_propose(&self) -> Res<()> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some((to, _, _)) = self.transfer {
            return Err(RaftError::TransferInProgress { to });
        }
        Ok(())
    }

    /// Propose a single-server membership change. Refused unless the previous change and this
    /// leader's no-op entry are committed (Ongaro's fix for single-server changes). The new
    /// configuration is in force as soon as it is appended.
    pub fn change_membership(&mut self, change: MembershipChange) -> Res<Proposed> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.commit || self.log.commit < self.noop_index {
            return Err(RaftError::ChangeInProgress);
        }
        let next = self
            .membership()
            .apply(&change)
            .map_err(RaftError::InvalidArgument)?;
        let index = self.log.last_index().next();
        self.log.push(Entry {
            group: self.config.group,
            term: self.term,
            index,
            kind: EntryKind::Membership,
            data: next.encode(),
        });
        self.pending_conf_index = index;
        self.config_history.push((index, next));
        self.membership_changed()?;
        self.replicate_pending = true;
        Ok(Proposed {
            term: self.term,
            first: index,
            last: index,
        })
    }

    /// Ask for a linearizable read. The result arrives as a [`ReadState`] in a later `Ready`
    /// (on a follower: after a round trip to the leader). Serve the read once the state
    /// machine has applied `ReadState::index`.
    pub fn read_index(&mut self, context: Vec<u8>) -> Res<()> {
        if self.role == Role::Leader {
            return self.leader_read(context, None);
        }
        match self.leader {
            Some(leader) => {
                let m = self.message(leader, MessageBody::ReadIndex { context });
                self.msgs.push(m);
                Ok(())
            }
            None => Err(RaftError::NotLeader { leader: None }),
        }
    }

    /// Hand leadership to `to` (dissertation 3.10): bring it up to date, then tell it to start
    /// an election at once. Proposals are refused meanwhile; the transfer is abandoned after an
    /// election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Res<()> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id {
            return Err(RaftError::InvalidArgument("already the leader".into()));
        }
        if !self.membership().is_voter(to) {
            return Err(RaftError::InvalidArgument(format!("{to} is not a voter")));
        }
        if self.transfer.map(|(t, _, _)| t) == Some(to) {
            return Ok(());
        }
        self.transfer = Some((to, 0, false));
        if let Some(p) = self.progress.get_mut(&to) {
            p.send_empty = true; // make sure catching up starts now, not at the next heartbeat
        }
        self.maybe_send_timeout_now(to);
        self.replicate_pending = true;
        Ok(())
    }

    /// The runtime's report on a snapshot transfer to `to`: `ok` once the follower stored it,
    /// `false` if the transfer failed (the leader will retry later).
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(p) = self.progress.get_mut(&to) {
            if let ReplicationState::Snapshot { .. } = p.state {
                if !ok {
                    // Forget the snapshot: probing from the last known match finds the
                    // entries compacted again and retries the transfer.
                    p.state = ReplicationState::Probe;
                }
                // On success this resumes right after the snapshot.
                p.become_probe();
                // Either way, wait for the next heartbeat answer before probing again.
                p.probe_sent = true;
            }
        }
    }

    /// Acknowledge that everything `Ready` number `number` (and every earlier one) asked to
    /// persist is durable.
    pub fn advance_persisted(&mut self, number: u64) -> Res<()> {
        assert!(
            number <= self.ready_number,
            "node {} term {}: ack of Ready {number} never handed out (last {}), index {}",
            self.id,
            self.term,
            self.ready_number,
            self.log.last_index()
        );
        while let Some(w) = self.pending_writes.front() {
            if w.number > number {
                break;
            }
            if let Some(index) = w.snapshot {
                self.log.stable_snapshot(index);
            }
            if let Some((index, term)) = w.last_entry {
                self.log.stable_to(index, term);
            }
            self.pending_writes.pop_front();
        }
        if self.role == Role::Leader {
            self.maybe_commit()?;
        }
        Ok(())
    }

    /// Acknowledge that the state machine applied every committed entry up to `index`.
    pub fn advance_applied(&mut self, index: LogIndex) {
        assert!(
            index <= self.log.applying,
            "node {} term {}: applied {index} beyond the entries handed out ({})",
            self.id,
            self.term,
            self.log.applying
        );
        self.log.applied = self.log.applied.max(index);
    }

    /// Whether [`Raft::ready`] has anything to return.
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.last_soft
            || self.hard_state() != self.last_hard
            || self.log.has_unpersisted()
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || !self.read_states.is_empty()
            || self.log.has_committed_to_apply()
            || self.rejections.has_pending()
            || (self.role == Role::Leader
                && (self.replicate_pending || self.commit_pending || self.read_round_pending))
    }

    /// Collect what the runtime must do. See [`Ready`] and the module docs.
    pub fn ready(&mut self) -> Res<Ready> {
        if self.role == Role::Leader {
            self.flush_leader()?;
        }
        self.ready_number += 1;
        let number = self.ready_number;
        let soft = self.soft_state();
        let soft_state = (soft != self.last_soft).then_some(soft);
        self.last_soft = soft;
        let hard = self.hard_state();
        let hard_state = (hard != self.last_hard).then_some(hard);
        self.last_hard = hard;
        let snapshot = self.log.take_pending_snapshot();
        let entries = self.log.take_unpersisted();
        let committed_entries = self.log.take_committed(self.config.max_apply_bytes)?;
        if !entries.is_empty() || snapshot.is_some() {
            self.pending_writes.push_back(PendingWrite {
                number,
                last_entry: entries.last().map(|e| (e.index, e.term)),
                snapshot: snapshot.as_ref().map(|s| s.index),
            });
        }
        Ok(Ready {
            number,
            soft_state,
            hard_state,
            entries,
            snapshot,
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.msgs_after_persist),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            rejected: self.rejections.take_pending(),
        })
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    /// Process one message from a peer. A message no correct member could have sent in this
    /// node's state is dropped and counted ([`Raft::rejected_messages`], [`Ready::rejected`]);
    /// no peer message can make the core panic. An `Err` is a storage failure only.
    pub fn step(&mut self, m: Message) -> Res<()> {
        let (from, term, name) = (m.from, m.term, m.body.name());
        match self.step_checked(m) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => {
                self.rejections.record(Rejection {
                    from,
                    term,
                    message: name,
                    reason,
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `step`, with `Ok(Err(reason))` for a message to drop and count.
    fn step_checked(&mut self, m: Message) -> Res<Result<(), RejectReason>> {
        if let Err(reason) = check_shape(&m, self.id, self.config.group) {
            return Ok(Err(reason));
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::RequestVote {
                    pre_vote, transfer, ..
                } => {
                    if !transfer && !self.may_grant_votes() {
                        // We hear from a live leader (or may have, just before a restart):
                        // this candidate is disrupting (it may have been removed or
                        // partitioned). Ignore it (dissertation 4.2.3, 6.4.1).
                        return Ok(Ok(()));
                    }
                    if !pre_vote {
                        // The election timer restarts on a granted vote (Figure 2), not on
                        // every newer term: a removed or cut-off member campaigning in ever
                        // higher terms would otherwise keep resetting it, and two voters that
                        // then time out together split the vote again and again (found by the
                        // simulator, lease seed 633). `handle_vote_request` resets it on grant.
                        let timer = (self.election_elapsed, self.randomized_election_ticks);
                        self.become_follower(m.term, None);
                        (self.election_elapsed, self.randomized_election_ticks) = timer;
                    }
                }
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {} // carries the term we would campaign in; not a newer term
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match &m.body {
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // A stale leader (e.g. back from a partition) would otherwise never learn
                    // the new term: with pre-vote and lease checks nobody bumps its term.
                    let reply = self.message(
                        m.from,
                        MessageBody::AppendEntriesResponse {
                            success: false,
                            index: LogIndex(0),
                            hint_index: LogIndex(0),
                            hint_term: Term(0),
                        },
                    );
                    self.msgs.push(reply);
                }
                MessageBody::RequestVote { pre_vote, .. } => {
                    // Refuse with our term (figure 2), so a candidate that fell behind in
                    // terms catches up instead of campaigning below us forever.
                    let reply = self.message(
                        m.from,
                        MessageBody::RequestVoteResponse {
                            pre_vote: *pre_vote,
                            granted: false,
                        },
                    );
                    self.msgs_after_persist.push(reply);
                }
                _ => {}
            }
            return Ok(Ok(()));
        }

        let from = m.from;
        // Only the leader of our term sends these; if we know that leader and it is someone
        // else (or us), the sender lies (election safety, 5.2). (Not ReadIndexResponse: a
        // member we took for the leader answers "retry" once it is not.)
        let leader_only = matches!(
            m.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
                | MessageBody::TimeoutNow
        );
        if leader_only && self.leader.is_some_and(|l| l != from) {
            return Ok(Err(RejectReason::SecondLeader));
        }
        match m.body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer,
            } => self.handle_vote_request(
                from,
                m.term,
                pre_vote,
                transfer,
                last_log_index,
                last_log_term,
            )?,
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                self.handle_vote_response(from, m.term, pre_vote, granted)?
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.follow(from);
                return self.handle_append(
                    from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                );
            }
            MessageBody::Heartbeat { commit, round } => {
                self.follow(from);
                let commit = commit.min(self.log.last_index());
                self.commit_to(commit);
                let reply = self.message(from, MessageBody::HeartbeatResponse { round });
                self.msgs.push(reply);
            }
            MessageBody::Snapshot { meta } => {
                self.follow(from);
                self.handle_snapshot(from, meta)?
            }
            MessageBody::AppendEntriesResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => {
                if self.role == Role::Leader {
                    // We sent nothing beyond our log, and in our own term it only grows.
                    if index > self.log.last_index() {
                        return Ok(Err(RejectReason::AckBeyondLog));
                    }
                    self.handle_append_response(from, success, index, hint_index, hint_term)?;
                }
            }
            MessageBody::HeartbeatResponse { round } => {
                if self.role == Role::Leader {
                    if round > self.read_round {
                        return Ok(Err(RejectReason::RoundNotSent));
                    }
                    self.handle_heartbeat_response(from, round);
                }
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && self.promotable() {
                    self.campaign(false, true)?;
                }
            }
            MessageBody::ReadIndex { context } => {
                if self.role == Role::Leader {
                    if self.reads_full() {
                        // The follower retries, as after a leader change: a peer's request
                        // never fails this node.
                        self.deliver_read(context, Some(from), None);
                    } else {
                        self.leader_read(context, Some(from))?;
                    }
                } else {
                    let reply = self.message(
                        from,
                        MessageBody::ReadIndexResponse {
                            context,
                            index: None,
                        },
                    );
                    self.msgs.push(reply);
                }
            }
            MessageBody::ReadIndexResponse { context, index } => {
                self.read_states.push(ReadState { context, index });
            }
        }
        Ok(Ok(()))
    }

    // ----- roles -----

    /// Whether this node may campaign: a voter in the configuration in force, with no
    /// snapshot installation pending.
    fn promotable(&self) -> bool {
        self.membership().is_voter(self.id)
    }

    /// Whether this node may grant a (pre-)vote to a candidate of a newer term now (a
    /// transfer's candidate aside). Not while it hears from a live leader (CheckQuorum,
    /// dissertation 4.2.3), and, with lease reads, not during the first minimum election
    /// timeout after a start: before the restart this node may have answered a leader whose
    /// lease still runs, and that leader counts on it refusing votes until an election
    /// timeout has passed since (6.4.1).
    fn may_grant_votes(&self) -> bool {
        let hears_leader = self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_ticks;
        !hears_leader && !self.just_started()
    }

    /// With lease reads: the first minimum election timeout after a restart. (A node that
    /// never saw a term above 0 answered no leader: its first start needs no guard.)
    fn just_started(&self) -> bool {
        self.config.lease_read_ticks.is_some()
            && self.restarted
            && self.now < u64::from(self.config.election_ticks)
            && self.config.injected_bug != Some(InjectedBug::LeaseVoteRightAfterRestart)
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let e = self.config.election_ticks;
        self.randomized_election_ticks = e + self.rng.below(e as u64) as u32;
    }

    /// A message from the leader of our term: make sure we follow it. `step` already dropped
    /// such messages from anyone but the leader we know, so this is an internal invariant.
    fn follow(&mut self, leader: NodeId) {
        assert!(
            self.role != Role::Leader && self.leader.map_or(true, |l| l == leader),
            "node {} term {}: following {leader} while {:?} leads, index {}",
            self.id,
            self.term,
            self.leader,
            self.log.last_index()
        );
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(leader));
        }
        self.leader = Some(leader);
        self.election_elapsed = 0;
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.fail_pending_reads();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.transfer = None;
        self.replicate_pending = false;
        self.commit_pending = false;
        self.read_round_pending = false;
        self.heartbeat_elapsed = 0;
        self.reset_election_timer();
    }

    fn campaign(&mut self, pre_vote: bool, transfer: bool) -> Res<()> {
        if pre_vote {
            self.role = Role::PreCandidate;
            self.leader = None;
        } else {
            if self.role == Role::Leader {
                self.fail_pending_reads();
            }
            self.term = Term(self.term.0 + 1);
            self.vote = Some(self.id);
            self.role = Role::Candidate;
            self.leader = None;
        }
        self.progress.clear();
        self.transfer = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
        if self.vote_result() == Some(true) {
            // A single voter wins alone.
            return if pre_vote {
                self.campaign(false, transfer)
            } else {
                self.become_leader();
                Ok(())
            };
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term()?;
        let term = if pre_vote {
            Term(self.term.0 + 1)
        } else {
            self.term
        };
        let voters: Vec<NodeId> = self.membership().voters.keys().copied().collect();
        for to in voters.into_iter().filter(|&v| v != self.id) {
            let mut m = self.message(
                to,
                MessageBody::RequestVote {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    transfer,
                },
            );
            m.term = term;
            if pre_vote {
                self.msgs.push(m); // promises nothing
            } else {
                self.msgs_after_persist.push(m); // only once our own vote is durable
            }
        }
        Ok(())
    }

    /// `Some(true)`: a quorum granted; `Some(false)`: a quorum refused; `None`: undecided.
    fn vote_result(&self) -> Option<bool> {
        let m = self.membership();
        let granted = m
            .voters
            .keys()
            .filter(|v| self.votes.get(v) == Some(&true))
            .count();
        let refused = m
            .voters
            .keys()
            .filter(|v| self.votes.get(v) == Some(&false))
            .count();
        if granted >= m.quorum() {
            Some(true)
        } else if refused > m.voters.len() - m.quorum() {
            Some(false)
        } else {
            None
        }
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        msg_term: Term,
        pre_vote: bool,
        transfer: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) -> Res<()> {
        // Granting again the vote we cast (and persisted) changes nothing; any other grant
        // waits out the first election timeout after a start (see `may_grant_votes`).
        let can_vote = self.vote == Some(from)
            || (((self.vote.is_none() && self.leader.is_none())
                || (pre_vote && msg_term > self.term))
                && (transfer || !self.just_started()));
        let up_to_date = self.config.injected_bug == Some(InjectedBug::VoteWithoutLogCheck)
            || self.log.is_up_to_date(last_log_index, last_log_term)?;
        let granted = can_vote && up_to_date;
        let mut reply = self.message(from, MessageBody::RequestVoteResponse { pre_vote, granted });
        if granted {
            // A pre-vote grant carries the candidate's future term so it is not mistaken for
            // a newer term; a real grant is at our (equal) term.
            reply.term = msg_term;
            if !pre_vote {
                self.vote = Some(from);
                self.election_elapsed = 0;
            }
        }
        self.msgs_after_persist.push(reply);
        Ok(())
    }

    fn handle_vote_response(
        &mut self,
        from: NodeId,
        msg_term: Term,
        pre_vote: bool,
        granted: bool,
    ) -> Res<()> {
        let expected = match (self.role, pre_vote) {
            (Role::PreCandidate, true) => {
                msg_term == Term(self.term.0 + 1) || (msg_term == self.term && !granted)
            }
            (Role::Candidate, false) => msg_term == self.term,
            _ => false,
        };
        if !expected {
            return Ok(());
        }
        self.votes.insert(from, granted);
        match self.vote_result() {
            Some(true) if pre_vote => self.campaign(false, false),
            Some(true) => {
                self.become_leader();
                Ok(())
            }
            Some(false) => {
                self.become_follower(self.term, None);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn become_leader(&mut self) {
        assert!(
            self.role == Role::Candidate,
            "node {} term {}: becoming leader from {:?}, index {}",
            self.id,
            self.term,
            self.role,
            self.log.last_index()
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.transfer = None;
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.lease_until = 0;
        self.lease_disabled = false;
        self.round_ticks.clear();
        let last = self.log.last_index();
        self.progress.clear();
        let members: Vec<NodeId> = self.membership().members().collect();
        for id in members.into_iter().filter(|&id| id != self.id) {
            self.progress.insert(id, self.new_progress(last.next()));
        }
        // Any configuration entry in the log may be uncommitted: no change until the no-op
        // (which follows all of them) commits.
        self.pending_conf_index = last;
        self.noop_index = last.next();
        // The injected 5.4.2 bug also skips the no-op, which otherwise masks it (a no-op of
        // the new term reaches a majority together with the older entries).
        if self.config.injected_bug != Some(InjectedBug::CommitPreviousTermByCount) {
            self.log.push(Entry {
                group: self.config.group,
                term: self.term,
                index: self.noop_index,
                kind: EntryKind::Noop,
                data: Vec::new(),
            });
        }
        self.replicate_pending = true;
    }

    fn new_progress(&self, next: LogIndex) -> Progress {
        Progress::new(
            next,
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
        )
    }

    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            group: self.config.group,
            from: self.id,
            to,
            term: self.term,
            body,
        }
    }

    // ----- follower side of replication -----

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) -> Res<Result<(), RejectReason>> {
        let commit = self.log.commit;
        if prev_log_index < commit {
            // Everything up to our commit index matches the leader's log already.
            let m = self.append_response(from, true, commit, LogIndex(0), Term(0));
            self.msgs_after_persist.push(m);
            return Ok(Ok(()));
        }
        if self.log.match_term(prev_log_index, prev_log_term)? {
            // `check_shape` made the entries consecutive from `prev_log_index`, within range.
            let last_new = LogIndex(prev_log_index.0 + entries.len() as u64);
            if let Some(k) = self.log.find_conflict(&entries)? {
                let at = entries[k].index;
                assert!(
                    at > self.log.commit,
                    "node {} term {}: entry at index {at} from {from} conflicts with the \
                     committed log (commit {}), though the entries follow prev index \
                     {prev_log_index} at or above it",
                    self.id,
                    self.term,
                    self.log.commit
                );
                let truncates = at <= self.log.last_index();
                // Decode configurations first: a corrupt one fails before the log changes.
                let mut configs = Vec::new();
                for e in &entries[k..] {
                    if let Some(m) = Membership::from_entry(e).map_err(RaftError::Storage)? {
                        configs.push((e.index, m));
                    }
                }
                let mut entries = entries;
                self.log.append(entries.split_off(k));
                let mut changed = !configs.is_empty();
                if truncates {
                    let before = self.config_history.len();
                    self.config_history.retain(|(i, _)| *i < at);
                    changed |= before != self.config_history.len();
                }
                self.config_history.extend(configs);
                if changed {
                    self.membership_changed()?;
                }
            }
            self.commit_to(leader_commit.min(last_new));
            let m = self.append_response(from, true, last_new, LogIndex(0), Term(0));
            self.msgs_after_persist.push(m);
        } else {
            let probe = prev_log_index.min(self.log.last_index());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(probe, prev_log_term)?;
            let m = self.append_response(from, false, prev_log_index, hint_index, hint_term);
            self.msgs_after_persist.push(m);
        }
        Ok(Ok(()))
    }

    fn append_response(
        &self,
        to: NodeId,
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) -> Message {
        self.message(
            to,
            MessageBody::AppendEntriesResponse {
                success,
                index,
                hint_index,
                hint_term,
            },
        )
    }

    fn handle_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) -> Res<()> {
        let index = if meta.index <= self.log.commit {
            self.log.commit
        } else if self.log.match_term(meta.index, meta.term)? {
            // Our log already holds the snapshot's last entry: it is committed, keep the rest.
            self.commit_to(meta.index);
            meta.index
        } else {
            let index = meta.index;
            self.base_membership = (meta.index, meta.membership.clone());
            self.config_history.clear();
            self.log.restore(meta);
            self.membership_changed()?;
            index
        };
        let m = self.append_response(from, true, index, LogIndex(0), Term(0));
        self.msgs_after_persist.push(m);
        Ok(())
    }

    fn commit_to(&mut self, index: LogIndex) {
        if index > self.log.commit {
            self.log.commit = index;
            self.prune_config_history();
        }
    }

    /// Fold configurations at or below the commit index into the base.
    fn prune_config_history(&mut self) {
        while self
            .config_history
            .first()
            .is_some_and(|(i, _)| *i <= self.log.commit)
        {
            self.base_membership = self.config_history.remove(0);
        }
    }

    /// The configuration in force changed (appended, truncated or installed).
    fn membership_changed(&mut self) -> Res<()> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let members: Vec<NodeId> = self.membership().members().collect();
        self.progress.retain(|id, _| members.contains(id));
        let next = self.log.last_index();
        for id in members {
            if id != self.id && !self.progress.contains_key(&id) {
                let p = self.new_progress(next);
                self.progress.insert(id, p);
            }
        }
        if let Some((to, _, _)) = self.transfer {
            if !self.membership().is_voter(to) {
                self.transfer = None;
            }
        }
        self.maybe_commit()
    }

    // ----- leader side of replication -----

    fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) -> Res<()> {
        let Some(p) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        p.recent_active = true;
        if success {
            if p.update(index) {
                match p.state {
                    ReplicationState::Probe => p.become_replicate(),
                    ReplicationState::Snapshot { index: s } if p.match_index >= s => {
                        p.become_replicate()
                    }
                    _ => {}
                }
                self.maybe_commit()?;
                if self.transfer.map(|(t, _, _)| t) == Some(from) {
                    self.maybe_send_timeout_now(from);
                }
            }
            self.replicate_pending = true;
            return Ok(());
        }
        // Rejected. Ignore answers to requests we have since superseded.
        let stale = match p.state {
            ReplicationState::Replicate => index <= p.match_index,
            ReplicationState::Probe => index != p.next_index.prev(),
            ReplicationState::Snapshot { .. } => true,
        };
        if stale {
            return Ok(());
        }
        let probe_at = if hint_term.0 > 0 {
            self.log.find_conflict_by_term(hint_index, hint_term)?.0
        } else {
            hint_index
        };
        let p = self.progress.get_mut(&from).expect("checked above");
        let next = index.min(probe_at.next()).max(p.match_index.next());
        p.become_probe();
        p.next_index = next;
        self.replicate_pending = true;
        Ok(())
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        p.acked_round = p.acked_round.max(round);
        match p.state {
            // The follower is reachable: probe again.
            ReplicationState::Probe => p.probe_sent = false,
            // A full window may be full of lost messages: let one more through. If the
            // follower misses entries it rejects it, and probing finds where the logs match.
            ReplicationState::Replicate if p.inflights.full() => p.inflights.free_first(),
            _ => {}
        }
        if p.match_index < last {
            // The follower lags: send what it misses, or at least an empty AppendEntries at
            // `next_index - 1`, which it rejects if earlier messages were lost; the leader
            // then probes back to where the logs match.
            p.send_empty = true;
            self.replicate_pending = true;
        }
        self.advance_reads();
    }

    /// Commit the highest index a quorum of voters holds, if it is of the current term
    /// (Raft section 5.4.2: never commit an older term's entry by counting replicas).
    fn maybe_commit(&mut self) -> Res<()> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let membership = self.membership();
        let mut matches: Vec<LogIndex> = membership
            .voters
            .keys()
            .map(|&v| {
                if v == self.id {
                    self.log.persisted_index()
                } else {
                    self.progress.get(&v).map_or(LogIndex(0), |p| p.match_index)
                }
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_index = matches[membership.quorum() - 1];
        if quorum_index <= self.log.commit {
            return Ok(());
        }
        let allowed = self.config.injected_bug == Some(InjectedBug::CommitPreviousTermByCount)
            || self.log.term_present(quorum_index)? == self.term;
        if !allowed {
            return Ok(());
        }
        self.commit_to(quorum_index);
        self.commit_pending = true;
        if self.log.commit >= self.noop_index && !self.reads_waiting_noop.is_empty() {
            for (context, from) in std::mem::take(&mut self.reads_waiting_noop) {
                self.leader_read(context, from)?;
            }
        }
        // A leader removed from the configuration leads until the removal commits, then steps
        // down (dissertation 4.2.2).
        if !self.membership().contains(self.id) && self.config_history.is_empty() {
            self.become_follower(self.term, None);
        }
        Ok(())
    }

    /// Send whatever replication is due (called from `ready()`, so that many proposals made
    /// between two `ready()` calls share AppendEntries).
    fn flush_leader(&mut self) -> Res<()> {
        if self.read_round_pending {
            self.read_round_pending = false;
            self.broadcast_heartbeat();
        }
        if !self.replicate_pending && !self.commit_pending {
            return Ok(());
        }
        let with_commit = self.commit_pending;
        self.replicate_pending = false;
        self.commit_pending = false;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_appends(to, with_commit)?;
        }
        Ok(())
    }

    /// Send AppendEntries to `to` while there are entries and the window allows; with
    /// `with_commit`, send an empty one if nothing else carries the new commit index.
    fn send_appends(&mut self, to: NodeId, with_commit: bool) -> Res<()> {
        let mut sent_any = false;
        loop {
            let last = self.log.last_index();
            let Some(p) = self.progress.get(&to) else {
                return Ok(());
            };
            if p.paused() {
                return Ok(());
            }
            let next = p.next_index;
            let has_entries = next <= last;
            // A probe finds where the logs match even when there is nothing new to send.
            let must_probe =
                (p.state == ReplicationState::Probe || p.send_empty) && p.match_index.next() < next;
            if !has_entries && (sent_any || !(with_commit || must_probe)) {
                return Ok(());
            }
            let prev = next.prev();
            let prev_term = match self.log.term(prev) {
                Ok(Some(t)) => t,
                Ok(None) => panic!(
                    "node {} term {}: next index {next} of {to} beyond last index {last}",
                    self.id, self.term
                ),
                Err(StorageError::Compacted) => return self.send_snapshot(to),
                Err(e) => return Err(e.into()),
            };
            let entries = if has_entries {
                match self.log.entries(
                    next,
                    last.next(),
                    self.config.max_append_bytes,
                    self.config.max_append_entries,
                ) {
                    Ok(e) => e,
                    Err(StorageError::Compacted) => return self.send_snapshot(to),
                    Err(e) => return Err(e.into()),
                }
            } else {
                Vec::new()
            };
            let bytes: usize = entries.iter().map(Entry::size_bytes).sum();
            let sent_last = entries.last().map_or(prev, |e| e.index);
            let count = entries.len();
            let p = self.progress.get_mut(&to).expect("checked above");
            let commit = self.log.commit;
            p.sent_entries(sent_last, count, bytes);
            p.send_empty = false;
            let probing = p.state == ReplicationState::Probe;
            let m = self.message(
                to,
                MessageBody::AppendEntries {
                    prev_log_index: prev,
                    prev_log_term: prev_term,
                    entries,
                    leader_commit: commit,
                },
            );
            self.msgs.push(m);
            sent_any = true;
            if probing || count == 0 {
                return Ok(());
            }
        }
    }

    fn send_snapshot(&mut self, to: NodeId) -> Res<()> {
        if self.log.first_index() != self.store().first_index() {
            // Our own snapshot install is not durable yet; retry after it is.
            return Ok(());
        }
        let meta = self.store().snapshot_meta()?;
        assert!(
            meta.index.0 > 0,
            "node {} term {}: entries compacted but no snapshot, index {}",
            self.id,
            self.term,
            self.log.first_index()
        );
        if let Some(p) = self.progress.get_mut(&to) {
            p.become_snapshot(meta.index);
        }
        let m = self.message(to, MessageBody::Snapshot { meta });
        self.msgs.push(m);
        Ok(())
    }

    fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let last = self.log.last_index();
        let Some((t, elapsed, false)) = self.transfer else {
            return;
        };
        if t != to || self.progress.get(&to).map(|p| p.match_index) != Some(last) {
            return;
        }
        self.transfer = Some((t, elapsed, true));
        // The target will be elected without waiting for our lease to lapse: no lease read
        // may be served from now on in this term.
        self.lease_disabled = true;
        let m = self.message(to, MessageBody::TimeoutNow);
        self.msgs.push(m);
    }

    fn broadcast_heartbeat(&mut self) {
        self.read_round += 1;
        let round = self.read_round;
        if self.round_ticks.len() >= MAX_TRACKED_ROUNDS {
            self.round_ticks.pop_front();
        }
        self.round_ticks.push_back((round, self.now));
        let commit = self.log.commit;
        let targets: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.match_index.min(commit)))
            .collect();
        for (to, commit) in targets {
            let m = self.message(to, MessageBody::Heartbeat { commit, round });
            self.msgs.push(m);
        }
    }

    // ----- reads -----

    fn reads_full(&self) -> bool {
        self.pending_reads.len() + self.reads_waiting_noop.len() >= self.config.max_pending_reads
    }

    fn leader_read(&mut self, context: Vec<u8>, from: Option<NodeId>) -> Res<()> {
        if self.reads_full() {
            return Err(RaftError::Overloaded(format!(
                "{} reads pending",
                self.config.max_pending_reads
            )));
        }
        if self.log.commit < self.noop_index {
            // Until our no-op commits we do not know the commit index of earlier terms.
            self.reads_waiting_noop.push((context, from));
            return Ok(());
        }
        let index = self.log.commit;
        let alone = self.membership().voters.len() == 1 && self.membership().is_voter(self.id);
        let bug = self.config.injected_bug == Some(InjectedBug::ReadWithoutQuorumCheck);
        if alone || self.lease_valid() || bug {
            self.deliver_read(context, from, Some(index));
            return Ok(());
        }
        self.pending_reads.push_back(PendingRead {
            round: self.read_round + 1,
            index,
            context,
            from,
        });
        self.read_round_pending = true;
        Ok(())
    }

    fn lease_valid(&self) -> bool {
        self.config.lease_read_ticks.is_some()
            && !self.lease_disabled
            && self.transfer.is_none()
            && self.now < self.lease_until
    }

    fn deliver_read(&mut self, context: Vec<u8>, from: Option<NodeId>, index: Option<LogIndex>) {
        match from {
            None => self.read_states.push(ReadState { context, index }),
            Some(to) => {
                let m = self.message(to, MessageBody::ReadIndexResponse { context, index });
                self.msgs.push(m);
            }
        }
    }

    /// Release the reads whose round a quorum of voters confirmed, and extend the lease.
    fn advance_reads(&mut self) {
        let membership = self.membership();
        let mut acked: Vec<u64> = membership
            .voters
            .keys()
            .map(|&v| {
                if v == self.id {
                    u64::MAX
                } else {
                    self.progress.get(&v).map_or(0, |p| p.acked_round)
                }
            })
            .collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acked[membership.quorum() - 1];
        while let Some(&(round, start)) = self.round_ticks.front() {
            if round > confirmed {
                break;
            }
            if let Some(lease) = self.config.lease_read_ticks {
                self.lease_until = self.lease_until.max(start + lease as u64);
            }
            self.round_ticks.pop_front();
        }
        while self
            .pending_reads
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let r = self.pending_reads.pop_front().expect("checked above");
            self.deliver_read(r.context, r.from, Some(r.index));
        }
    }

    fn fail_pending_reads(&mut self) {
        let waiting = std::mem::take(&mut self.reads_waiting_noop);
        let pending: Vec<(Vec<u8>, Option<NodeId>)> = std::mem::take(&mut self.pending_reads)
            .into_iter()
            .map(|r| (r.context, r.from))
            .collect();
        for (context, from) in waiting.into_iter().chain(pending) {
            self.deliver_read(context, from, None);
        }
        self.round_ticks.clear();
        self.lease_until = 0;
    }
}

impl<S: LogStore> fmt::Debug for Raft<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.id)
            .field("term", &self.term)
            .field("role", &self.role)
            .field("leader", &self.leader)
            .field("commit", &self.log.commit)
            .field("last", &self.log.last_index())
            .finish()
    }
}
