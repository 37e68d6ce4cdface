//! The apply thread: owns the [`StateMachine`]. Applies committed entries in batches, answers
//! the proposers waiting for them, serves reads once the applied index reaches their read
//! index, takes snapshots and restores the ones received from a leader.
//!
//! It runs beside the driver so that a large sled batch, a snapshot being written or a restore
//! never delays the driver's ticks, heartbeats or WAL submissions.

use super::reply::Reply;
use super::watch::WatchFeed;
use super::{Internal, SharedCounters};
use crate::error::{Error, Result};
use crate::event;
use crate::limits::{
    APPLY_FLUSH_PENDING_AFTER_MS, APPLY_FLUSH_PENDING_BYTES, APPLY_FLUSH_PENDING_WRITES,
    LOCK_WAIT_HOLD_MS, MAX_APPLY_MERGED_BYTES, MAX_APPLY_MERGED_TASKS, MAX_HELD_LOCK_WAITS,
};
use crate::logging::Level;
use crate::park::{ParkedReceiver, Waking};
use crate::proto::{ReadOp, Response, SnapshotInfo};
use crate::raft::{Membership, SnapshotMeta};
use crate::sm::{
    ApplyOutcome, CancelResult, CommandResult, EntryResult, LockResult, LockWaitResult,
    StateMachine,
};
use crate::snapshots::SnapshotFiles;
use crate::types::{Entry, LogIndex, NodeId, Term};
use crossbeam_channel::RecvTimeoutError;
use crossbeam_channel::Sender;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A proposer waiting for its entry: answered when index `index` is applied. If the entry
/// applied there has another term, the proposal was overwritten: NOT applied.
pub(crate) struct Waiter {
    pub(crate) index: LogIndex,
    pub(crate) term: Term,
    pub(crate) reply: Reply,
}

/// A read waiting to be served.
pub(crate) struct PendingRead {
    pub(crate) op: ReadOp,
    pub(crate) reply: Reply,
    pub(crate) deadline: Instant,
}

/// Work for the apply thread, in the order the driver produced it.
pub(crate) enum ApplyTask {
    /// Apply committed entries (consecutive) and answer their waiters.
    Apply {
        entries: Vec<Entry>,
        waiters: Vec<Waiter>,
    },
    /// Replace the state by a snapshot received from the leader (its install is durable in the
    /// WAL). Waiters at or below its index can no longer learn their outcome.
    Restore {
        meta: SnapshotMeta,
        path: PathBuf,
        orphans: Vec<Waiter>,
    },
    /// Serve these linearizable reads once `index` is applied.
    Reads {
        index: LogIndex,
        reads: Vec<PendingRead>,
    },
    /// Serve a read from the current state, now.
    StaleRead(PendingRead),
    /// Answer with the applied index and the state hash.
    StateHash(Reply),
    /// Take a snapshot now (tests, operators); answers with its index.
    TakeSnapshot(Sender<Result<LogIndex>>),
    /// Finish the queue, flush, and stop.
    Stop,
    /// Fault injection for tests ([`Node::inject_panic`](super::Node::inject_panic)): panic.
    InjectPanic,
}

/// When to take a snapshot.
pub(crate) struct SnapshotPolicy {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

pub(crate) struct ApplyThread {
    pub(crate) id: NodeId,
    pub(crate) sm: StateMachine,
    pub(crate) snap_dir: PathBuf,
    pub(crate) tasks: ParkedReceiver<ApplyTask>,
    pub(crate) internal: Waking<Internal>,
    pub(crate) counters: Arc<SharedCounters>,
    pub(crate) policy: SnapshotPolicy,
    /// Reads waiting for the applied index, by read index.
    pub(crate) reads: BTreeMap<LogIndex, Vec<PendingRead>>,
    pub(crate) entries_since_snapshot: u64,
    pub(crate) bytes_since_snapshot: u64,
    /// When the oldest write still pending in the state machine was applied.
    pub(crate) pending_since: Option<Instant>,
    /// Set after a failure: the machine applies nothing more.
    pub(crate) failed: Option<String>,
    /// Where the changes of applied entries go, for watches (`watch.rs`).
    pub(crate) watch_feed: WatchFeed,
    /// Answers to lock acquires that queued, by (client id, seq): sent when an entry grants or
    /// fails the wait (`ApplyOutcome::lock_waits`), or `Queued` after `LOCK_WAIT_HOLD_MS`.
    pub(crate) held_lock_waits: HashMap<(u64, u64), Vec<(Reply, Instant)>>,
}

/// How long the oldest pending write may wait before a flush.
const FLUSH_PENDING_AFTER: Duration = Duration::from_millis(APPLY_FLUSH_PENDING_AFTER_MS);

impl ApplyThread {
    pub(crate) fn run(mut self) {
        self.report_sessions();
        // A task taken from the queue while merging Apply tasks, handled next.
        let mut next: Option<ApplyTask> = None;
        loop {
            let task = match next.take() {
                Some(task) => task,
                None => {
                    let wake = [
                        self.next_read_deadline(),
                        self.pending_since.map(|t| t + FLUSH_PENDING_AFTER),
                        self.next_hold_deadline(),
                    ];
                    let wait = wake
                        .into_iter()
                        .flatten()
                        .min()
                        .map_or(Duration::from_millis(100), |d| {
                            d.saturating_duration_since(Instant::now())
                        });
                    match self.tasks.recv_timeout(wait) {
                        Ok(task) => task,
                        Err(RecvTimeoutError::Timeout) => {
                            self.expire_reads();
                            self.expire_held_lock_waits();
                            self.maybe_flush();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            match task {
                ApplyTask::Apply { entries, waiters } => {
                    next = self.apply_merged(entries, waiters);
                }
                ApplyTask::Restore {
                    meta,
                    path,
                    orphans,
                } => self.restore(meta, path, orphans),
                ApplyTask::Reads { index, reads } => {
                    self.reads.entry(index).or_default().extend(reads);
                    self.serve_reads();
                }
                ApplyTask::StaleRead(read) => self.serve(read),
                ApplyTask::StateHash(reply) => {
                    let (applied, _) = self.sm.applied();
                    reply.send(
                        self.sm
                            .state_hash()
                            .map(|hash| Response::StateHash { applied, hash }),
                    );
                }
                ApplyTask::TakeSnapshot(done) => {
                    let _ = done.send(self.snapshot().map(|file| file.index));
                }
                ApplyTask::InjectPanic => panic!("injected panic (fault injection)"),
                ApplyTask::Stop => {
                    self.fail_reads(|| Error::Unavailable("the member is shutting down".into()));
                    if let Err(e) = self.sm.flush() {
                        event!(Level::Warn, node: Some(self.id.0), term: None,
                            "state_flush_failed", error = e);
                    }
                    break;
                }
            }
            self.expire_reads();
            self.expire_held_lock_waits();
            self.maybe_flush();
        }
    }

    /// Tell the driver's lease keeper the sessions and the delayed locks as they are now.
    fn report_sessions(&self) {
        match self
            .sm
            .sessions()
            .and_then(|s| Ok((s, self.sm.lock_delays()?)))
        {
            Ok((sessions, lock_delays)) => self.internal.send(Internal::Sessions {
                sessions,
                lock_delays,
                applied: self.sm.applied().0,
            }),
            Err(e) => event!(Level::Error, node: Some(self.id.0), term: None,
                "sessions_read_failed", error = e),
        }
    }

    /// Hold the answers of acquires that queued; answer the waits the entries ended.
    fn settle_lock_waits(&mut self, outcomes: &[ApplyOutcome], queued: Vec<(u64, u64, Reply)>) {
        let now = Instant::now();
        let held: usize = self.held_lock_waits.values().map(Vec::len).sum();
        for (i, (client_id, seq, reply)) in queued.into_iter().enumerate() {
            if held + i >= MAX_HELD_LOCK_WAITS {
                reply.send(Ok(Response::Write(CommandResult::Lock(LockResult::Queued))));
                continue;
            }
            let deadline = now + Duration::from_millis(LOCK_WAIT_HOLD_MS);
            self.held_lock_waits
                .entry((client_id, seq))
                .or_default()
                .push((reply, deadline));
        }
        for ended in outcomes.iter().flat_map(|o| &o.lock_waits) {
            let Some(replies) = self.held_lock_waits.remove(&(ended.client_id, ended.seq)) else {
                continue;
            };
            let result = match ended.result {
                LockWaitResult::Granted { token } => {
                    CommandResult::Lock(LockResult::Granted { token })
                }
                LockWaitResult::SessionEnded => CommandResult::Lock(LockResult::SessionNotFound),
                LockWaitResult::Cancelled => CommandResult::LockCancel(CancelResult::Cancelled),
            };
            for (reply, _) in replies {
                reply.send(Ok(Response::Write(result.clone())));
            }
        }
    }

    fn next_hold_deadline(&self) -> Option<Instant> {
        self.held_lock_waits
            .values()
            .flatten()
            .map(|(_, d)| *d)
            .min()
    }

    /// Answer `Queued` to holds past their time: the client asks again.
    fn expire_held_lock_waits(&mut self) {
        if self.held_lock_waits.is_empty() {
            return;
        }
        let now = Instant::now();
        for replies in self.held_lock_waits.values_mut() {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(replies)
                .into_iter()
                .partition(|(_, d)| *d <= now);
            *replies = kept;
            for (reply, _) in expired {
                reply.send(Ok(Response::Write(CommandResult::Lock(LockResult::Queued))));
            }
        }
        self.held_lock_waits.retain(|_, r| !r.is_empty());
    }

    /// Write the state machine's pending writes to sled when enough are pending or the oldest
    /// has waited long enough (see `StateMachine::apply_deferred`: one sled batch has a high
    /// fixed cost, so many applied batches share one).
    fn maybe_flush(&mut self) {
        let Some(since) = self.pending_since else {
            return;
        };
        if self.failed.is_some() {
            return;
        }
        if self.sm.pending_writes() < APPLY_FLUSH_PENDING_WRITES
            && self.sm.pending_bytes() < APPLY_FLUSH_PENDING_BYTES
            && since.elapsed() < FLUSH_PENDING_AFTER
        {
            return;
        }
        self.pending_since = None;
        if let Err(e) = self.sm.flush_pending() {
            event!(Level::Error, node: Some(self.id.0), term: None, "state_flush_failed",
                error = e);
            self.fail(format!("writing applied entries to the state failed: {e}"));
        }
    }

    /// Apply this batch together with the Apply tasks already queued behind it, as one
    /// state-machine batch (one sled batch). Returns the first other task met, to be handled
    /// next.
    fn apply_merged(
        &mut self,
        mut entries: Vec<Entry>,
        mut waiters: Vec<Waiter>,
    ) -> Option<ApplyTask> {
        let mut bytes: usize = entries.iter().map(Entry::size_bytes).sum();
        let mut next = None;
        for _ in 0..MAX_APPLY_MERGED_TASKS {
            if bytes >= MAX_APPLY_MERGED_BYTES {
                break;
            }
            match self.tasks.try_recv().ok() {
                Some(ApplyTask::Apply {
                    entries: more,
                    waiters: more_waiters,
                }) => {
                    bytes += more.iter().map(Entry::size_bytes).sum::<usize>();
                    entries.extend(more);
                    waiters.extend(more_waiters);
                }
                Some(other) => {
                    next = Some(other);
                    break;
                }
                None => break,
            }
        }
        self.apply(entries, waiters);
        next
    }

    fn apply(&mut self, entries: Vec<Entry>, waiters: Vec<Waiter>) {
        if let Some(why) = &self.failed {
            for w in waiters {
                w.reply.fail(Error::Fatal(why.clone()));
            }
            return;
        }
        let count = entries.len() as u64;
        let bytes: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
        let capture = self.watch_feed.capture();
        self.sm.set_change_capture(capture);
        match self.sm.apply_deferred(&entries) {
            Ok(mut outcomes) => {
                if self.pending_since.is_none() && self.sm.pending_writes() > 0 {
                    self.pending_since = Some(Instant::now());
                }
                let (queued, answers) = answer_waiters(&outcomes, waiters);
                // Lock grants first: on a hand-off the new holder hears of its grant before
                // the releaser hears its release was done, so the new holder's next write
                // (usually its own release) reaches the leader ahead of the releaser's next
                // acquire rather than queueing behind that entry's sync.
                self.settle_lock_waits(&outcomes, queued);
                for (reply, answer) in answers {
                    reply.send(answer);
                }
                if outcomes.iter().any(changes_sessions) {
                    self.report_sessions();
                }
                self.counters
                    .entries_applied
                    .fetch_add(count, Ordering::Relaxed);
                let (applied, _) = self.sm.applied();
                self.watch_feed.publish(&mut outcomes, applied, capture);
                self.counters.applied.store(applied.0, Ordering::Relaxed);
                // The driver needs this news only at its next iteration (it arms a new
                // leader's sessions once its first entry applies): waking it for every batch
                // cost each member a context switch per entry.
                self.internal.send_quiet(Internal::Applied(applied));
                self.entries_since_snapshot += count;
                self.bytes_since_snapshot += bytes;
                self.serve_reads();
                if self.entries_since_snapshot >= self.policy.entries
                    || self.bytes_since_snapshot >= self.policy.bytes
                {
                    if let Err(e) = self.snapshot() {
                        event!(Level::Error, node: Some(self.id.0), term: None,
                            "snapshot_failed", error = e);
                    }
                }
            }
            Err(e) => {
                let why = format!("applying entries failed: {e}");
                event!(Level::Error, node: Some(self.id.0), term: None, "apply_failed",
                    error = e);
                for w in waiters {
                    w.reply.fail(Error::Fatal(why.clone()));
                }
                self.fail(why);
            }
        }
    }

    fn fail(&mut self, why: String) {
        self.fail_reads(|| Error::Fatal(why.clone()));
        self.internal.send(Internal::Fatal(why.clone()));
        self.failed = Some(why);
    }

    /// Write a snapshot of the current state and tell the driver, which compacts the log
    /// behind it.
    fn snapshot(&mut self) -> Result<crate::snapshots::SnapshotFile> {
        if let Some(why) = &self.failed {
            return Err(Error::Fatal(why.clone()));
        }
        let membership = match self.sm.membership() {
            Some(bytes) => Membership::decode(&bytes)?,
            None => Membership::default(),
        };
        let started = Instant::now();
        let file = self.sm.write_snapshot(&self.snap_dir)?;
        self.entries_since_snapshot = 0;
        self.bytes_since_snapshot = 0;
        self.counters
            .snapshots_taken
            .fetch_add(1, Ordering::Relaxed);
        event!(Level::Info, node: Some(self.id.0), term: None, "snapshot_taken",
            index = file.index.0, bytes = file.size,
            ms = started.elapsed().as_millis());
        let meta = SnapshotMeta {
            index: file.index,
            term: file.term,
            membership,
        };
        self.internal.send(Internal::SnapshotTaken(meta));
        Ok(file)
    }

    fn restore(&mut self, meta: SnapshotMeta, path: PathBuf, orphans: Vec<Waiter>) {
        for w in orphans {
            w.reply.fail(Error::Timeout(
                "the member installed a snapshot from the leader; the proposal's outcome is \
                 unknown"
                    .into(),
            ));
        }
        if self.failed.is_some() {
            return;
        }
        let started = Instant::now();
        match self.sm.restore_snapshot(&path) {
            Ok(file) => {
                self.pending_since = None; // the restore replaced the pending writes
                self.entries_since_snapshot = 0;
                self.bytes_since_snapshot = 0;
                self.counters.applied.store(file.index.0, Ordering::Relaxed);
                self.watch_feed.restored(file.index);
                event!(Level::Info, node: Some(self.id.0), term: None, "snapshot_restored",
                    index = meta.index.0, ms = started.elapsed().as_millis());
                self.report_sessions();
                self.internal.send(Internal::Applied(file.index));
                self.serve_reads();
            }
            Err(e) => {
                event!(Level::Error, node: Some(self.id.0), term: None, "restore_failed",
                    error = e, path = path.display());
                self.fail(format!("restoring snapshot {} failed: {e}", path.display()));
            }
        }
    }

    fn serve(&mut self, read: PendingRead) {
        if let Some(why) = &self.failed {
            read.reply.fail(Error::Fatal(why.clone()));
            return;
        }
        let result = match &read.op {
            ReadOp::Get { key } => self.sm.get(key).map(Response::Value),
            ReadOp::Range { start, end, limit } => self
                .sm
                .range(start, end.as_deref(), *limit as usize)
                .map(Response::Range),
            // A backup: a snapshot like the periodic ones (it resets their count and the log
            // is compacted behind it as usual), whose bytes the client then reads in chunks.
            ReadOp::Snapshot => self.snapshot().map(|file| {
                Response::Snapshot(SnapshotInfo {
                    index: file.index,
                    term: file.term,
                    size: file.size,
                    sha256: file.sha256,
                })
            }),
            ReadOp::MapOwners { name, key } => {
                self.sm.map_owners(name, key).map(Response::MapOwners)
            }
            ReadOp::MapPartition { name, key } => {
                self.sm
                    .map_owners(name, key)
                    .map(|owners| Response::MapPartition {
                        epoch: owners.epoch,
                        partition: owners.partition,
                    })
            }
            ReadOp::Map { name } => Ok(Response::Map(
                self.sm.partition_map(name).map(|map| map.to_record()),
            )),
            ReadOp::MapMoves { name, since_epoch } => self
                .sm
                .map_moves(name, *since_epoch)
                .map(Response::MapMoves),
            ReadOp::RangeAt { start, end, limit } => self
                .sm
                .range(start, end.as_deref(), *limit as usize)
                .map(|page| Response::RangeAt {
                    page,
                    revision: self.sm.applied().0,
                }),
            ReadOp::Lock { name } => self.sm.lock(name).map(Response::Lock),
            ReadOp::Locks { after, limit } => self
                .sm
                .locks(after, *limit as usize)
                .map(|(locks, more)| Response::Locks { locks, more }),
            ReadOp::CheckToken { name, token } => {
                self.sm.check_token(name, *token).map(Response::TokenHeld)
            }
            ReadOp::Session { session } => self.sm.session(*session).map(Response::Session),
            ReadOp::Leader { name } => self.sm.leader(name).map(|leader| Response::Leader {
                leader,
                revision: self.sm.applied().0,
            }),
            ReadOp::Election { name } => self.sm.election(name).map(Response::Lock),
        };
        read.reply.send(result);
    }

    fn serve_reads(&mut self) {
        let (applied, _) = self.sm.applied();
        while let Some(entry) = self.reads.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                self.serve(read);
            }
        }
    }

    fn next_read_deadline(&self) -> Option<Instant> {
        self.reads.values().flatten().map(|r| r.deadline).min()
    }

    fn expire_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let now = Instant::now();
        for reads in self.reads.values_mut() {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(reads)
                .into_iter()
                .partition(|r| r.deadline <= now);
            *reads = kept;
            for r in expired {
                r.reply.fail(Error::Timeout(
                    "the member did not apply up to the read index in time".into(),
                ));
            }
        }
        self.reads.retain(|_, reads| !reads.is_empty());
    }

    fn fail_reads(&mut self, error: impl Fn() -> Error) {
        for (_, reads) in std::mem::take(&mut self.reads) {
            for r in reads {
                r.reply.fail(error());
            }
        }
    }
}

/// Whether an entry changed the sessions or the delayed locks (an expiry starts lock-delays, a
/// `LockDelayEnd` ends them): the lease keeper must hear of it.
fn changes_sessions(outcome: &ApplyOutcome) -> bool {
    matches!(
        &outcome.result,
        EntryResult::Command {
            result: CommandResult::SessionGranted { .. }
                | CommandResult::SessionRevoked
                | CommandResult::SessionsUpdated { .. }
                | CommandResult::LockDelaysEnded { .. },
            ..
        }
    )
}

/// A held acquire: (client id, seq, its reply).
type QueuedAcquire = (u64, u64, Reply);

/// The answer of each waiter from the outcome at its index, to send. Acquires that queued are
/// not answered: they come back as (client id, seq, reply), to be held until their wait ends.
fn answer_waiters(
    outcomes: &[ApplyOutcome],
    waiters: Vec<Waiter>,
) -> (Vec<QueuedAcquire>, Vec<(Reply, Result<Response>)>) {
    let mut queued = Vec::new();
    let mut answers = Vec::with_capacity(waiters.len());
    let Some(first) = outcomes.first().map(|o| o.index) else {
        for w in waiters {
            answers.push((
                w.reply,
                Err(Error::Timeout(
                    "the entry was applied before (replay); its outcome is unknown".into(),
                )),
            ));
        }
        return (queued, answers);
    };
    for w in waiters {
        let outcome = w
            .index
            .0
            .checked_sub(first.0)
            .and_then(|offset| outcomes.get(offset as usize));
        let Some(outcome) = outcome else {
            answers.push((
                w.reply,
                Err(Error::Timeout(format!(
                    "entry {} was not in the applied batch; its outcome is unknown",
                    w.index
                ))),
            ));
            continue;
        };
        if outcome.term != w.term {
            answers.push((
                w.reply,
                Err(Error::Unavailable(format!(
                    "the proposal at index {} was replaced by a later leader's entry (term {} \
                     instead of {}); it was not applied",
                    w.index, outcome.term, w.term
                ))),
            ));
            continue;
        }
        let response = match &outcome.result {
            EntryResult::Command {
                client_id,
                seq,
                result: CommandResult::Lock(LockResult::Queued),
            } => {
                queued.push((*client_id, *seq, w.reply));
                continue;
            }
            EntryResult::Command { result, .. } => Ok(Response::Write(result.clone())),
            EntryResult::Membership | EntryResult::Noop => Ok(Response::Done),
            EntryResult::Malformed { reason } => Err(Error::InvalidArgument(format!(
                "the command could not be decoded: {reason}"
            ))),
        };
        answers.push((w.reply, response));
    }
    (queued, answers)
}
