//! Elections for applications, client side: [`Client::campaign`] blocks until the caller leads
//! and returns a [`Leadership`] (proclaim, resign; resigns on drop), [`Client::leader`] reads
//! who leads, and [`Client::observe`] returns an [`ElectionObserver`] that reports every change
//! of leader.
//!
//! An election is a lock of its own table in the replicated state (`sm/elect.rs`): the leader
//! holds it, campaigners wait in the order their campaigns were committed, and a leadership
//! ends when its holder resigns or its session ends (expired or revoked), whereupon the next
//! campaigner leads. The token of a leadership is the log index of the entry that made it
//! leader, so tokens of one election strictly increase; fence the leader's writes with it
//! (`Compare::LockHeld` does not apply: it names a lock; use the token as a revision to compare
//! against, or check [`Client::leader`]).
//!
//! The observer watches the election through the member's pushed frames (a [`Watch`] of the
//! election's record, resumed on another member when its member goes, with no gap and no
//! duplicate), starting from a linearizable read of the leader, so it misses no change after
//! that read. The record also changes when a campaigner joins or leaves; those changes repeat
//! the leader and are not reported.

use super::coord::Session;
use super::watch::{Watch, WatchNotice};
use super::{Client, Response};
use crate::error::{Error, ErrorCode, Result};
use crate::proto::{EventKind, ReadMode, ReadOp, WatchSpec};
use crate::sm::{
    CancelResult, Command, CommandResult, ElectionLeader, FencingToken, LockResult, Op, SessionId,
};
use crate::types::LogIndex;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Changes an [`ElectionObserver`] holds for its user before its thread waits.
const OBSERVER_BUFFER: usize = 1024;

/// How often the observer's thread looks at its cancel flag while waiting.
const OBSERVER_POLL: Duration = Duration::from_millis(20);

/// The caller leads an election (from [`Client::campaign`]). Resigns when dropped (best effort;
/// [`Leadership::resign`] reports errors).
#[derive(Debug)]
pub struct Leadership {
    client: Client,
    name: Vec<u8>,
    token: FencingToken,
    resigned: bool,
}

impl Leadership {
    /// The fencing token of this leadership: the log index of the entry that made the caller
    /// leader. Strictly increasing per election across leaders, failovers and restarts.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The election's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// Publish `value` as the leader's value. `LockNotHeld` if this leadership is over (its
    /// session ended, or it resigned).
    pub fn proclaim(&self, value: &[u8]) -> Result<()> {
        self.client.proclaim(&self.name, self.token, value)
    }

    /// Step down now; the next campaigner leads. `LockNotHeld` if the leadership was already
    /// over (its session ended).
    pub fn resign(mut self) -> Result<()> {
        self.resigned = true;
        self.client.resign(&self.name, self.token)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if !self.resigned {
            let _ = self.client.resign(&self.name, self.token);
        }
    }
}

/// A change of an election's leader, as an [`ElectionObserver`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderChange {
    /// The revision (log index) of the entry that made the change (for the first report, the
    /// revision of the read it came from).
    pub revision: LogIndex,
    /// Who leads from then on, `None`: nobody.
    pub leader: Option<ElectionLeader>,
    /// Changes between the previous report and this one may be missing: the watch needed
    /// revisions its member no longer kept (or fell too far behind), so the observer read the
    /// leader again. Never set on the first report.
    pub after_gap: bool,
}

/// Reports every change of an election's leader, "no leader" included, in order, each with its
/// revision: iterate it (blocking), or receive from [`ElectionObserver::receiver`]. The first
/// report is the leader when it started. Items are `Ok(change)`, or one last `Err` when it
/// cannot go on (no member within the watch's resume timeout). Dropping it stops it.
pub struct ElectionObserver {
    changes: Receiver<Result<LeaderChange>>,
    cancelled: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ElectionObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectionObserver")
            .field("queued", &self.changes.len())
            .finish()
    }
}

impl ElectionObserver {
    /// The channel the changes arrive on (for `select!`). It disconnects after the last one.
    pub fn receiver(&self) -> &Receiver<Result<LeaderChange>> {
        &self.changes
    }

    /// The next change within `timeout`: `None` both at the end and on timeout.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Result<LeaderChange>> {
        self.changes.recv_timeout(timeout).ok()
    }

    /// Stop now (also done on drop).
    pub fn cancel(&mut self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Iterator for ElectionObserver {
    type Item = Result<LeaderChange>;

    fn next(&mut self) -> Option<Self::Item> {
        self.changes.recv().ok()
    }
}

impl Drop for ElectionObserver {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Client {
    /// Campaign in election `name` with `value` through `session`: blocks until the caller
    /// leads (campaigners lead in the order their campaigns were committed), then returns the
    /// leadership with its fencing token. `SessionExpired` if the session ended first,
    /// `LockNotHeld` if the campaign was withdrawn ([`Client::withdraw`]); a failure while
    /// waiting withdraws the campaign (a committed entry), so it never leads later unnoticed. A session campaigns in an election once (`InvalidArgument` for a
    /// second campaign while the first leads or waits).
    pub fn campaign(&self, name: &[u8], value: &[u8], session: &Session) -> Result<Leadership> {
        let op = Op::ElectionCampaign {
            name: name.to_vec(),
            value: value.to_vec(),
            session: session.id(),
        };
        Command {
            client_id: 1,
            seq: 1,
            op: op.clone(),
        }
        .validate()?;
        // One write session for the campaign and its withdrawal: the withdrawal names the
        // waiting campaign by its client id.
        let mut ws = self.take_session(self.deadline())?;
        let command = Command {
            client_id: ws.client_id,
            seq: ws.next_seq,
            op,
        };
        ws.next_seq += 1;
        let leadership = |token| Leadership {
            client: self.clone(),
            name: name.to_vec(),
            token,
            resigned: false,
        };
        // Retried with the same seq: the state machine answers a repeat without queueing it
        // twice (`Queued` while it waits, `Granted` once it leads).
        let error = loop {
            match self.send_write(command.clone(), self.deadline()).0 {
                Ok(CommandResult::Lock(LockResult::Granted { token })) => {
                    self.put_session(ws);
                    return Ok(leadership(token));
                }
                Ok(CommandResult::Lock(LockResult::Queued)) => continue,
                // Someone withdrew this campaign (`ElectionCancel` of its session).
                Ok(CommandResult::LockCancel(_)) => {
                    self.put_session(ws);
                    return Err(Error::LockNotHeld(format!(
                        "the campaign of session {} was withdrawn",
                        session.id()
                    )));
                }
                Err(e) if matches!(e.code(), ErrorCode::Timeout | ErrorCode::Unavailable) => {
                    if session.state() == super::SessionState::Lost {
                        break Error::SessionExpired(format!(
                            "session {} ended while it campaigned",
                            session.id()
                        ));
                    }
                    continue;
                }
                Ok(CommandResult::Lock(LockResult::SessionNotFound)) => {
                    self.put_session(ws);
                    return Err(Error::SessionExpired(format!(
                        "session {} does not exist",
                        session.id()
                    )));
                }
                Ok(CommandResult::Lock(LockResult::AlreadyHeld { .. })) => {
                    self.put_session(ws);
                    return Err(Error::InvalidArgument(format!(
                        "session {} already leads or campaigns in this election",
                        session.id()
                    )));
                }
                Ok(CommandResult::LimitReached { what })
                | Ok(CommandResult::Rejected { reason: what }) => {
                    self.put_session(ws);
                    return Err(Error::InvalidArgument(what));
                }
                Ok(other) => break super::unexpected_result(other),
                Err(e) => break e,
            }
        };
        // The campaign may be queued: withdraw it (by session, so this works even if the
        // client id was evicted), and resign if it led meanwhile.
        self.put_session(ws);
        let cancel = Op::ElectionCancel {
            name: name.to_vec(),
            session: session.id(),
        };
        if let Ok(CommandResult::LockCancel(CancelResult::AlreadyGranted { token })) =
            self.write(cancel)
        {
            let _ = self.resign(name, token);
        }
        Err(error)
    }

    /// Publish `value` as the leader's value of election `name`, if `token` leads it.
    /// `LockNotHeld` otherwise.
    pub fn proclaim(&self, name: &[u8], token: FencingToken, value: &[u8]) -> Result<()> {
        match self.write(Op::ElectionProclaim {
            name: name.to_vec(),
            token,
            value: value.to_vec(),
        })? {
            CommandResult::Proclaimed { proclaimed: true } => Ok(()),
            CommandResult::Proclaimed { proclaimed: false } => Err(Error::LockNotHeld(format!(
                "token {token} does not lead this election"
            ))),
            other => Err(super::unexpected_result(other)),
        }
    }

    /// Withdraw `session`'s pending campaign in election `name` (its `campaign` call then fails
    /// with `LockNotHeld`): after this it can never lead. `Ok(Some(token))` if it leads
    /// already (resign with that token), `Ok(None)` once withdrawn (or if it did not
    /// campaign).
    pub fn withdraw(&self, name: &[u8], session: SessionId) -> Result<Option<FencingToken>> {
        match self.write(Op::ElectionCancel {
            name: name.to_vec(),
            session,
        })? {
            CommandResult::LockCancel(CancelResult::Cancelled) => Ok(None),
            CommandResult::LockCancel(CancelResult::AlreadyGranted { token }) => Ok(Some(token)),
            other => Err(super::unexpected_result(other)),
        }
    }

    /// The leader with `token` steps down from election `name`; the next campaigner leads.
    /// `LockNotHeld` if `token` does not lead it.
    pub fn resign(&self, name: &[u8], token: FencingToken) -> Result<()> {
        match self.write(Op::ElectionResign {
            name: name.to_vec(),
            token,
        })? {
            CommandResult::LockReleased { released: true } => Ok(()),
            CommandResult::LockReleased { released: false } => Err(Error::LockNotHeld(format!(
                "token {token} does not lead this election"
            ))),
            other => Err(super::unexpected_result(other)),
        }
    }

    /// Who leads election `name` (`None`: nobody campaigns in it), read linearizably.
    pub fn leader(&self, name: &[u8]) -> Result<Option<ElectionLeader>> {
        self.leader_at(name).map(|(leader, _)| leader)
    }

    /// [`Client::leader`], with the revision the answer reflects: watching the election from
    /// that revision + 1 misses no change.
    pub fn leader_at(&self, name: &[u8]) -> Result<(Option<ElectionLeader>, LogIndex)> {
        let op = ReadOp::Leader {
            name: name.to_vec(),
        };
        match self.read(op, ReadMode::Linearizable)? {
            Response::Leader { leader, revision } => Ok((leader, revision)),
            other => Err(super::unexpected(&other)),
        }
    }

    /// Election `name`'s leader and campaigners (in the order they will lead), as a lock's
    /// holders and waiters, read linearizably; `None` if nobody campaigns in it.
    pub fn election(&self, name: &[u8]) -> Result<Option<crate::sm::LockInfo>> {
        let op = ReadOp::Election {
            name: name.to_vec(),
        };
        match self.read(op, ReadMode::Linearizable)? {
            Response::Lock(info) => Ok(info),
            other => Err(super::unexpected(&other)),
        }
    }

    /// Observe election `name`: the leader now, then every change of leader (a new leader, a
    /// proclaim, "no leader"), in order, each with its revision. Fails at once with
    /// `InvalidArgument` for a bad name, or when no member answers within the request timeout.
    pub fn observe(&self, name: &[u8]) -> Result<ElectionObserver> {
        WatchSpec::election(name, LogIndex(0)).validate()?;
        let (leader, revision) = self.leader_at(name)?;
        let watch = self.watch(WatchSpec::election(name, revision.next()))?;
        let (tx, rx) = bounded(OBSERVER_BUFFER);
        let cancelled = Arc::new(AtomicBool::new(false));
        let first = LeaderChange {
            revision,
            leader,
            after_gap: false,
        };
        let observer = Observer {
            client: self.clone(),
            name: name.to_vec(),
            last: first.leader.clone(),
            tx,
            cancelled: Arc::clone(&cancelled),
        };
        let thread = std::thread::Builder::new()
            .name("haven-observer".into())
            .spawn(move || observer.run(first, watch))
            .map_err(|e| Error::io("spawning an election observer thread", e))?;
        Ok(ElectionObserver {
            changes: rx,
            cancelled,
            thread: Some(thread),
        })
    }
}

/// The observer's thread: turns the election's watch notices into leader changes.
struct Observer {
    client: Client,
    name: Vec<u8>,
    /// The leader last reported.
    last: Option<ElectionLeader>,
    tx: Sender<Result<LeaderChange>>,
    cancelled: Arc<AtomicBool>,
}

impl Observer {
    fn run(mut self, first: LeaderChange, mut watch: Watch) {
        if !self.deliver(Ok(first)) {
            return;
        }
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                return;
            }
            let notice = match watch.receiver().recv_timeout(OBSERVER_POLL) {
                Ok(notice) => notice,
                Err(RecvTimeoutError::Timeout) => continue,
                // The watch delivered its last notice (an error, reported already).
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match notice {
                Ok(WatchNotice::Events { revision, events }) => {
                    // The last event of the revision is the election's state after it.
                    let Some(event) = events.last() else { continue };
                    let leader = match event.kind {
                        EventKind::Leader { token, session } => Some(ElectionLeader {
                            value: event.value.clone(),
                            token,
                            session,
                        }),
                        EventKind::NoLeader => None,
                        _ => continue,
                    };
                    if !self.report(revision, leader, false) {
                        return;
                    }
                }
                Ok(WatchNotice::Progress { .. }) => {}
                // The member could not deliver every change: read again, watch from there.
                Ok(WatchNotice::Compacted { .. } | WatchNotice::Overflow) => match self.resync() {
                    Ok(next) => watch = next,
                    Err(e) => {
                        self.deliver(Err(e));
                        return;
                    }
                },
                Err(e) => {
                    self.deliver(Err(e));
                    return;
                }
            }
        }
    }

    /// Read the leader again and watch from there; report the leader if it changed.
    fn resync(&mut self) -> Result<Watch> {
        let (leader, revision) = self.client.leader_at(&self.name)?;
        let watch = self
            .client
            .watch(WatchSpec::election(&self.name, revision.next()))?;
        self.report(revision, leader, true);
        Ok(watch)
    }

    /// Report `leader` at `revision` if it differs from the last one reported; false if the
    /// observer was dropped.
    fn report(&mut self, revision: LogIndex, leader: Option<ElectionLeader>, gap: bool) -> bool {
        if leader == self.last {
            return true;
        }
        self.last = leader.clone();
        self.deliver(Ok(LeaderChange {
            revision,
            leader,
            after_gap: gap,
        }))
    }

    fn deliver(&self, change: Result<LeaderChange>) -> bool {
        let mut change = change;
        loop {
            match self.tx.send_timeout(change, OBSERVER_POLL) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(back)) => {
                    if self.cancelled.load(Ordering::SeqCst) {
                        return false;
                    }
                    change = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }
}
