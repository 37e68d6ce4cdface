//! Sessions and locks for clients: a [`Session`] handle kept alive in the background, and
//! [`LockGuard`]s that release on drop.
//!
//! One keepalive thread per [`Client`] sends ONE `SessionKeepAlive` request for all of that
//! client's live sessions every third of the shortest TTL among them. A session's state is
//! [`SessionState::Alive`] while keepalives are answered, [`SessionState::Unknown`] when no
//! answer came for longer than its TTL (no quorum reachable: it may still be alive, or it may
//! have expired), and [`SessionState::Lost`] once a leader said it does not exist (expired or
//! revoked); a loss is final and is reported once ([`Session::take_lost`]).

use super::{Client, Inner};
use crate::error::{Error, ErrorCode, Result};
use crate::proto::{ReadMode, ReadOp, Request, Response};
use crate::sm::{
    CancelResult, Command, CommandResult, FencingToken, LockInfo, LockMode, LockResult, Op,
    PutResult, SessionId, SessionInfo,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// What the client knows of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The leader answered the last keepalive.
    Alive,
    /// No keepalive was answered for longer than the TTL (no quorum reachable): the session may
    /// be alive or gone. Locks held through it must be treated as possibly lost.
    Unknown,
    /// A leader said the session does not exist (expired or revoked). Final.
    Lost,
}

pub(super) struct SessionShared {
    id: SessionId,
    ttl: Duration,
    state: Mutex<(SessionState, Instant)>,
    loss_reported: AtomicBool,
}

/// The sessions a client keeps alive, and whether its keepalive thread runs.
#[derive(Default)]
pub(super) struct Keeper {
    sessions: HashMap<SessionId, Weak<SessionShared>>,
    running: bool,
}

/// A session (lease) granted to this client, kept alive in the background while the handle
/// lives. Dropping it stops the keepalives (the session then expires after its TTL); call
/// [`Session::revoke`] to end it at once.
#[derive(Clone)]
pub struct Session {
    shared: Arc<SessionShared>,
    client: Client,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .field("state", &self.state())
            .finish()
    }
}

impl Session {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.shared.id
    }

    /// Its TTL.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// What the client knows of it now.
    pub fn state(&self) -> SessionState {
        let (state, last_ok) = *super::lock(&self.shared.state);
        if state == SessionState::Alive && last_ok.elapsed() > self.shared.ttl {
            return SessionState::Unknown;
        }
        state
    }

    /// `true` exactly once, the first time this is called after the session was lost.
    pub fn take_lost(&self) -> bool {
        self.state() == SessionState::Lost
            && !self.shared.loss_reported.swap(true, Ordering::SeqCst)
    }

    /// End the session now: its locks are released and its ephemeral keys deleted.
    pub fn revoke(&self) -> Result<()> {
        let result = self.client.write(Op::SessionRevoke {
            session: self.shared.id,
        })?;
        super::lock(&self.shared.state).0 = SessionState::Lost;
        match result {
            CommandResult::SessionRevoked | CommandResult::SessionNotFound => Ok(()),
            other => Err(super::unexpected_result(other)),
        }
    }
}

/// How long [`Client::lock`] waits for a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Do not wait: `None` if the lock is not free now.
    Try,
    /// Wait at most this long; a wait that times out is cancelled by a committed entry, so it
    /// can never be granted afterwards.
    Deadline(Duration),
    /// Wait until granted (or the session ends).
    Forever,
}

/// How [`Client::lock_with`] takes a lock. `LockOptions::default()`: exclusive, wait forever,
/// no lock-delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// Exclusive or shared.
    pub mode: LockMode,
    /// How long to wait.
    pub wait: LockWait,
    /// Lock-delay (Chubby's): if the session *expires* while holding this grant, the lock is
    /// granted to no one for this long, so a holder that lost its session without knowing
    /// (paused, partitioned) has that long to notice before the next holder starts. Not after
    /// an unlock or a revoke. At most `MAX_LOCK_DELAY_MS`, whole milliseconds; zero by default.
    /// Fencing tokens remain the real protection: see the README.
    pub lock_delay: Duration,
}

impl Default for LockOptions {
    fn default() -> LockOptions {
        LockOptions {
            mode: LockMode::Exclusive,
            wait: LockWait::Forever,
            lock_delay: Duration::ZERO,
        }
    }
}

/// A held lock. Released when dropped (best effort; [`LockGuard::unlock`] reports errors).
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    name: Vec<u8>,
    token: FencingToken,
    session: SessionId,
    released: bool,
}

impl LockGuard {
    /// The fencing token of this grant: pass it with every write to the protected resource
    /// (`Compare::LockHeld`, or `check_token` on the resource's side).
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// Keep the lock held past this guard: it stays held until [`Client::unlock`] with this
    /// token, or until its session ends. For holders that outlive a Rust scope (the C ABI).
    pub fn into_token(mut self) -> FencingToken {
        self.released = true;
        self.token
    }

    /// Release now. `LockNotHeld` if the grant was already gone (its session ended).
    pub fn unlock(mut self) -> Result<()> {
        self.released = true;
        self.client.unlock(&self.name, self.token, self.session)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.client.unlock(&self.name, self.token, self.session);
        }
    }
}

impl Client {
    /// Grant a session of `ttl` (at least `MIN_SESSION_TTL_MS`), kept alive in the background
    /// while the returned handle (or a clone) lives.
    pub fn grant_session(&self, ttl: Duration) -> Result<Session> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let (id, ttl_ms) = match self.write(Op::SessionGrant { ttl_ms })? {
            CommandResult::SessionGranted { session, ttl_ms } => (session, ttl_ms),
            CommandResult::LimitReached { what } => return Err(Error::Unavailable(what)),
            other => return Err(super::unexpected_result(other)),
        };
        let shared = Arc::new(SessionShared {
            id,
            ttl: Duration::from_millis(ttl_ms),
            state: Mutex::new((SessionState::Alive, Instant::now())),
            loss_reported: AtomicBool::new(false),
        });
        let start = {
            let mut keeper = super::lock(&self.inner.keeper);
            keeper.sessions.insert(id, Arc::downgrade(&shared));
            !std::mem::replace(&mut keeper.running, true)
        };
        if start {
            let inner = Arc::downgrade(&self.inner);
            std::thread::Builder::new()
                .name("haven-keepalive".into())
                .spawn(move || keepalive_loop(inner))
                .map_err(|e| Error::io("starting the keepalive thread", e))?;
        }
        Ok(Session {
            shared,
            client: self.clone(),
        })
    }

    /// Take lock `name` through `session`, waiting as `wait` says. `Ok(None)`: not granted
    /// (busy, or the wait timed out and was cancelled). `SessionExpired` if the session ended
    /// (also while waiting: the wait fails as soon as the entry that ended it applies).
    pub fn lock(
        &self,
        name: &[u8],
        mode: LockMode,
        session: &Session,
        wait: LockWait,
    ) -> Result<Option<LockGuard>> {
        self.lock_with(
            name,
            session,
            LockOptions {
                mode,
                wait,
                lock_delay: Duration::ZERO,
            },
        )
    }

    /// [`Client::lock`] with every option, among them a lock-delay ([`LockOptions`]).
    pub fn lock_with(
        &self,
        name: &[u8],
        session: &Session,
        options: LockOptions,
    ) -> Result<Option<LockGuard>> {
        let LockOptions {
            mode,
            wait,
            lock_delay,
        } = options;
        let until = match wait {
            LockWait::Try | LockWait::Forever => None,
            LockWait::Deadline(d) => Some(Instant::now() + d),
        };
        let lock_delay_ms = u64::try_from(lock_delay.as_millis()).unwrap_or(u64::MAX);
        // Without a delay, the version-3 command: members of the previous version apply it.
        let acquire = if lock_delay_ms == 0 {
            Op::LockAcquire {
                name: name.to_vec(),
                mode,
                session: session.id(),
                wait: wait != LockWait::Try,
            }
        } else {
            Op::LockAcquireWithDelay {
                name: name.to_vec(),
                mode,
                session: session.id(),
                wait: wait != LockWait::Try,
                lock_delay_ms,
            }
        };
        let probe = Command {
            client_id: 1,
            seq: 1,
            op: acquire.clone(),
        };
        probe.validate()?;
        // One write session (client id) for the acquire and its cancel: the cancel names the
        // waiting request by that client id.
        let mut ws = self.take_session(self.deadline())?;
        let command = Command {
            client_id: ws.client_id,
            seq: ws.next_seq,
            op: acquire,
        };
        ws.next_seq += 1;
        let guard = |token| LockGuard {
            client: self.clone(),
            name: name.to_vec(),
            token,
            session: session.id(),
            released: false,
        };
        let outcome = loop {
            let attempt_deadline = match until {
                Some(u) => u.min(self.deadline()),
                None => self.deadline(),
            };
            let timed_out = until.is_some_and(|u| Instant::now() >= u);
            if timed_out {
                break None;
            }
            match self.send_write(command.clone(), attempt_deadline).0 {
                Ok(CommandResult::Lock(LockResult::Granted { token })) => {
                    break Some(Ok(Some(guard(token))))
                }
                Ok(CommandResult::Lock(LockResult::Queued)) => continue,
                Ok(CommandResult::Lock(LockResult::Busy)) => break Some(Ok(None)),
                Ok(CommandResult::Lock(LockResult::SessionNotFound)) => {
                    break Some(Err(Error::SessionExpired(format!(
                        "session {} does not exist",
                        session.id()
                    ))))
                }
                Ok(CommandResult::Lock(LockResult::AlreadyHeld { .. })) => {
                    break Some(Err(Error::InvalidArgument(format!(
                        "session {} already holds or waits for this lock",
                        session.id()
                    ))))
                }
                Ok(CommandResult::LimitReached { what }) => {
                    break Some(Err(Error::InvalidArgument(what)))
                }
                Ok(CommandResult::Rejected { reason }) => {
                    break Some(Err(Error::InvalidArgument(reason)))
                }
                Ok(other) => break Some(Err(super::unexpected_result(other))),
                Err(e) if matches!(e.code(), ErrorCode::Timeout | ErrorCode::Unavailable) => {
                    continue
                }
                Err(e) => break Some(Err(e)),
            }
        };
        let result = match outcome {
            Some(result) => result,
            // The wait timed out: a committed cancel makes sure it is never granted later.
            None => {
                let cancel = Command {
                    client_id: ws.client_id,
                    seq: ws.next_seq,
                    op: Op::LockCancel {
                        name: name.to_vec(),
                    },
                };
                ws.next_seq += 1;
                match self.send_write(cancel, self.deadline()).0 {
                    Ok(CommandResult::LockCancel(CancelResult::Cancelled)) => Ok(None),
                    Ok(CommandResult::LockCancel(CancelResult::AlreadyGranted { token })) => {
                        Ok(Some(guard(token)))
                    }
                    Ok(other) => Err(super::unexpected_result(other)),
                    Err(e) => Err(e),
                }
            }
        };
        self.put_session(ws);
        result
    }

    /// Release the grant `token` of `session` on lock `name`. `LockNotHeld` if it is not held.
    pub fn unlock(&self, name: &[u8], token: FencingToken, session: SessionId) -> Result<()> {
        match self.write(Op::LockRelease {
            name: name.to_vec(),
            token,
            session,
        })? {
            CommandResult::LockReleased { released: true } => Ok(()),
            CommandResult::LockReleased { released: false } => Err(Error::LockNotHeld(format!(
                "token {token} of session {session} is not a grant of this lock"
            ))),
            other => Err(super::unexpected_result(other)),
        }
    }

    /// Whether `token` is a current grant of lock `name` (a linearizable read): what a
    /// resource outside haven asks before accepting a fenced request.
    pub fn check_token(&self, name: &[u8], token: FencingToken) -> Result<bool> {
        let op = ReadOp::CheckToken {
            name: name.to_vec(),
            token,
        };
        match self.read(op, ReadMode::Linearizable)? {
            Response::TokenHeld(held) => Ok(held),
            other => Err(super::unexpected(&other)),
        }
    }

    /// What the replicated state knows of session `id` (`None`: it does not exist), read
    /// linearizably. Its remaining TTL is the leader's last checkpoint.
    pub fn session_info(&self, id: SessionId) -> Result<Option<SessionInfo>> {
        match self.read(ReadOp::Session { session: id }, ReadMode::Linearizable)? {
            Response::Session(info) => Ok(info),
            other => Err(super::unexpected(&other)),
        }
    }

    /// Every lock with holders or waiters, in name order (read page by page, each page
    /// linearizable).
    pub fn locks(&self) -> Result<Vec<LockInfo>> {
        let mut out: Vec<LockInfo> = Vec::new();
        loop {
            let after = out.last().map(|l| l.name.clone()).unwrap_or_default();
            let op = ReadOp::Locks { after, limit: 1000 };
            match self.read(op, ReadMode::Linearizable)? {
                Response::Locks { locks, more } => {
                    out.extend(locks);
                    if !more {
                        return Ok(out);
                    }
                }
                other => return Err(super::unexpected(&other)),
            }
        }
    }

    /// Store `value` under `key`, attached to `session`: the key is deleted when the session
    /// ends (an ephemeral key). `SessionExpired` if the session does not exist.
    pub fn put_with_session(
        &self,
        key: &[u8],
        value: &[u8],
        session: &Session,
    ) -> Result<PutResult> {
        match self.write(Op::PutEphemeral {
            key: key.to_vec(),
            value: value.to_vec(),
            session: session.id(),
        })? {
            CommandResult::Put(r) => Ok(r),
            CommandResult::SessionNotFound => Err(Error::SessionExpired(format!(
                "session {} does not exist",
                session.id()
            ))),
            CommandResult::LimitReached { what } => Err(Error::InvalidArgument(what)),
            other => Err(super::unexpected_result(other)),
        }
    }
}

/// The keepalive thread of one client: one request for all live sessions, every third of the
/// shortest TTL. Ends when the client is gone or no session handle is left.
fn keepalive_loop(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let live: Vec<Arc<SessionShared>> = {
            let mut keeper = super::lock(&inner.keeper);
            keeper.sessions.retain(|_, s| s.strong_count() > 0);
            let live: Vec<_> = keeper.sessions.values().filter_map(Weak::upgrade).collect();
            let live: Vec<_> = live
                .into_iter()
                .filter(|s| super::lock(&s.state).0 != SessionState::Lost)
                .collect();
            if live.is_empty() {
                keeper.running = false;
                return;
            }
            live
        };
        let interval = live.iter().map(|s| s.ttl).min().unwrap_or_default() / 3;
        let request = Request::SessionKeepAlive {
            sessions: live.iter().map(|s| s.id).collect(),
        };
        let deadline = Instant::now() + interval;
        if let Ok(Response::SessionKeepAlive(answers)) = inner.backend.call(request, deadline) {
            let now = Instant::now();
            for (id, ttl) in answers {
                if let Some(s) = live.iter().find(|s| s.id == id) {
                    let mut state = super::lock(&s.state);
                    *state = match ttl {
                        Some(_) => (SessionState::Alive, now),
                        None => (SessionState::Lost, state.1),
                    };
                }
            }
        }
        drop(live);
        drop(inner);
        std::thread::sleep(interval.max(Duration::from_millis(10)));
    }
}
