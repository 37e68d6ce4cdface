//! Feature: the lock table — named locks, exclusive or shared, held through a session, with
//! FIFO waiters and fencing tokens.
//!
//! Rules (each decided by the entry being applied, identically on every member):
//! - Waiters are served in the order of their request's log index. A shared request waits only
//!   for earlier exclusive ones (holders or waiters); an exclusive request waits for everyone
//!   earlier. So once one waiter cannot be granted, none behind it can, and a promotion is a walk
//!   from the head of the queue that stops at the first waiter that must wait.
//! - A grant's fencing token is the log index of the entry that granted it: an acquire granted at
//!   once, or the release / cancel / session end that promoted the waiter. Log indexes only
//!   grow, so tokens of one lock strictly increase across grants, failovers and restarts; shared
//!   holders promoted by one entry share a token (a release therefore names its session too).
//! - At grant time the waiter's session is checked again (etcd #11456 granted a lock to a
//!   waiter whose lease was gone); a session's end also removes its waits at once.
//! - Lock-delay (Chubby): an acquire may ask for one (`lock_delay_ms`, at most
//!   `MAX_LOCK_DELAY_MS`, default 0), kept in its `x s` key. When a holder's session *expires*
//!   (not on release, cancel or an explicit revoke: those are the client's own clean ends), the
//!   lock is marked delayed (`x d`) and granted to no one — acquires queue or answer `Busy`,
//!   waiters stay queued in order — until a `LockDelayEnd` entry, which the leader's keeper
//!   proposes once its clock says the delay passed (this file holds no clock), promotes them.
//!   A holder that lost its session without knowing may still act for up to the delay; the
//!   delay keeps the next holder from overlapping it, for clients that do not fence.
//! - A waiter that is granted or failed by a later entry is reported in that entry's
//!   `ApplyOutcome::lock_waits`, and its client's remembered result is amended (if it is still
//!   the client's last command), so a retried acquire answers `Granted { token }` after the
//!   grant and `Queued` before it.
//!
//! Elections (`elect.rs`) are a second table with the same rules under their own prefix
//! ([`LockSpace`]): every function here takes the space its name lives in.

use super::layout::{
    decode_record, lock_delay_key, lock_delays_prefix, lock_key, lock_records_prefix,
    session_lock_key, LockDelayRecord, LockRecord, LockSpace,
};
use super::overlay::Overlay;
use super::result::{
    CancelResult, CommandResult, FencingToken, LockHolder, LockInfo, LockMode, LockResult,
    LockWaitEnded, LockWaitResult, LockWaiter, SessionId,
};
use super::sessions;
use crate::error::{Error, Result};
use crate::limits::{
    MAX_LOCK_DELAY_END_BATCH, MAX_LOCK_DELAY_MS, MAX_LOCK_NAME_BYTES, MAX_LOCK_WAITERS,
    MAX_SESSION_LOCKS,
};
use crate::types::LogIndex;

// ----- limits -----

/// Check a lock name: non-empty, at most `MAX_LOCK_NAME_BYTES`.
pub(crate) fn validate_name(what: &str, name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what}: lock name is empty"
        )));
    }
    if name.len() > MAX_LOCK_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what}: lock name is {} bytes, over the limit of {MAX_LOCK_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// Check an acquire's lock-delay.
pub(crate) fn validate_lock_delay(lock_delay_ms: u64) -> Result<()> {
    if lock_delay_ms > MAX_LOCK_DELAY_MS {
        return Err(Error::InvalidArgument(format!(
            "lock acquire: lock_delay_ms {lock_delay_ms} is over the limit of {MAX_LOCK_DELAY_MS}"
        )));
    }
    Ok(())
}

/// Check a delay end's list.
pub(crate) fn validate_delay_end(names: &[Vec<u8>]) -> Result<()> {
    if names.is_empty() || names.len() > MAX_LOCK_DELAY_END_BATCH {
        return Err(Error::InvalidArgument(format!(
            "lock delay end: {} locks, not in 1..={MAX_LOCK_DELAY_END_BATCH}",
            names.len()
        )));
    }
    names
        .iter()
        .try_for_each(|name| validate_name("lock delay end", name))
}

// ----- apply -----

fn load(view: &Overlay<'_>, space: LockSpace, name: &[u8]) -> Result<LockRecord> {
    match view.get(&lock_key(space, name))? {
        Some(bytes) => decode_record("lock", &bytes),
        None => Ok(LockRecord::default()),
    }
}

fn save(
    overlay: &mut Overlay<'_>,
    space: LockSpace,
    name: &[u8],
    record: &LockRecord,
) -> Result<()> {
    if record.holders.is_empty() && record.waiters.is_empty() {
        overlay.remove(lock_key(space, name));
        Ok(())
    } else {
        overlay.put_encoded(lock_key(space, name), record)
    }
}

fn delay(view: &Overlay<'_>, space: LockSpace, name: &[u8]) -> Result<Option<LockDelayRecord>> {
    if space == LockSpace::Elections {
        // Lock-delay is the lock table's alone: a campaign asks for none.
        return Ok(None);
    }
    match view.get(&lock_delay_key(name))? {
        Some(bytes) => decode_record("lock delay", &bytes).map(Some),
        None => Ok(None),
    }
}

/// The lock-delay kept in a session's `x s` key: empty for 0 (every key written before
/// lock-delay existed), otherwise the u64.
pub(crate) fn decode_session_lock(value: &[u8]) -> Result<u64> {
    if value.is_empty() {
        Ok(0)
    } else {
        decode_record("session lock delay", value)
    }
}

/// Whether a request of `mode` at the head of the queue can join `holders`.
fn compatible(holders: &[LockHolder], mode: LockMode) -> bool {
    match mode {
        LockMode::Exclusive => holders.is_empty(),
        LockMode::Shared => holders.iter().all(|h| h.mode == LockMode::Shared),
    }
}

/// One acquire request, as the command and its entry give it.
pub(crate) struct Acquire<'a> {
    pub(crate) space: LockSpace,
    pub(crate) name: &'a [u8],
    pub(crate) mode: LockMode,
    pub(crate) session: SessionId,
    pub(crate) wait: bool,
    pub(crate) client_id: u64,
    pub(crate) seq: u64,
    /// What the holder publishes with its grant (an election's candidate value; empty for a
    /// lock).
    pub(crate) value: &'a [u8],
    /// How long the lock stays ungranted if this request's session expires while holding it
    /// (always 0 for an election).
    pub(crate) lock_delay_ms: u64,
}

/// Acquire at `index`: grant now, queue, or answer why not.
pub(crate) fn acquire(
    overlay: &mut Overlay<'_>,
    request: &Acquire<'_>,
    index: LogIndex,
) -> Result<CommandResult> {
    let Some(mut session) = sessions::record(overlay, request.session)? else {
        return Ok(CommandResult::Lock(LockResult::SessionNotFound));
    };
    let space = request.space;
    let mut record = load(overlay, space, request.name)?;
    if let Some(holder) = record.holders.iter().find(|h| h.session == request.session) {
        return Ok(CommandResult::Lock(LockResult::AlreadyHeld {
            token: Some(holder.token),
        }));
    }
    if record.waiters.iter().any(|w| w.session == request.session) {
        return Ok(CommandResult::Lock(LockResult::AlreadyHeld { token: None }));
    }
    let grantable = record.waiters.is_empty()
        && compatible(&record.holders, request.mode)
        && delay(overlay, space, request.name)?.is_none();
    if !grantable && !request.wait {
        return Ok(CommandResult::Lock(LockResult::Busy));
    }
    if record.holders.len() + record.waiters.len() >= MAX_LOCK_WAITERS {
        return Ok(CommandResult::LimitReached {
            what: format!("lock has MAX_LOCK_WAITERS ({MAX_LOCK_WAITERS}) holders and waiters"),
        });
    }
    if session.locks as usize >= MAX_SESSION_LOCKS {
        return Ok(CommandResult::LimitReached {
            what: format!(
                "session {} holds or waits for MAX_SESSION_LOCKS ({MAX_SESSION_LOCKS}) locks",
                request.session
            ),
        });
    }
    session.locks += 1;
    sessions::store(overlay, request.session, &session)?;
    let session_lock = session_lock_key(space, request.session, request.name);
    if request.lock_delay_ms == 0 {
        overlay.insert(session_lock, Vec::new());
    } else {
        overlay.put_encoded(session_lock, &request.lock_delay_ms)?;
    }
    let result = if grantable {
        let token = FencingToken(index.0);
        record.holders.push(LockHolder {
            token,
            session: request.session,
            mode: request.mode,
            client_id: request.client_id,
            value: request.value.to_vec(),
        });
        LockResult::Granted { token }
    } else {
        record.waiters.push(LockWaiter {
            request: index,
            session: request.session,
            mode: request.mode,
            client_id: request.client_id,
            seq: request.seq,
            value: request.value.to_vec(),
        });
        LockResult::Queued
    };
    save(overlay, space, request.name, &record)?;
    Ok(CommandResult::Lock(result))
}

/// Release the grant `token` of `session` on `name` at `index`, promoting the next waiters.
pub(crate) fn release(
    overlay: &mut Overlay<'_>,
    space: LockSpace,
    name: &[u8],
    token: FencingToken,
    session: SessionId,
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<CommandResult> {
    let mut record = load(overlay, space, name)?;
    let Some(at) = record
        .holders
        .iter()
        .position(|h| h.token == token && h.session == session)
    else {
        return Ok(CommandResult::LockReleased { released: false });
    };
    record.holders.remove(at);
    forget_session_lock(overlay, space, session, name)?;
    promote(overlay, space, name, &mut record, index, waits)?;
    save(overlay, space, name, &record)?;
    Ok(CommandResult::LockReleased { released: true })
}

/// Cancel the pending waits of `client_id` on `name` at `index`.
pub(crate) fn cancel(
    overlay: &mut Overlay<'_>,
    space: LockSpace,
    name: &[u8],
    client_id: u64,
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<CommandResult> {
    let mut record = load(overlay, space, name)?;
    let (cancelled, kept): (Vec<LockWaiter>, Vec<LockWaiter>) = std::mem::take(&mut record.waiters)
        .into_iter()
        .partition(|w| w.client_id == client_id);
    record.waiters = kept;
    if cancelled.is_empty() {
        if let Some(holder) = record.holders.iter().find(|h| h.client_id == client_id) {
            return Ok(CommandResult::LockCancel(CancelResult::AlreadyGranted {
                token: holder.token,
            }));
        }
        return Ok(CommandResult::LockCancel(CancelResult::Cancelled));
    }
    for waiter in cancelled {
        forget_session_lock(overlay, space, waiter.session, name)?;
        end_wait(overlay, name, &waiter, LockWaitResult::Cancelled, waits)?;
    }
    // The head may have been a waiter that blocked those behind it.
    promote(overlay, space, name, &mut record, index, waits)?;
    save(overlay, space, name, &record)?;
    Ok(CommandResult::LockCancel(CancelResult::Cancelled))
}

/// Withdraw `session`'s pending wait on `name` at `index`, whoever asks (an election's
/// campaign withdrawn by session, so that a client that lost its client id can still withdraw
/// it). The waiting request's remembered result becomes `LockCancel(Cancelled)`, so its retry
/// learns that it will never be granted.
pub(crate) fn cancel_session(
    overlay: &mut Overlay<'_>,
    space: LockSpace,
    name: &[u8],
    session: SessionId,
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<CommandResult> {
    let mut record = load(overlay, space, name)?;
    let Some(at) = record.waiters.iter().position(|w| w.session == session) else {
        if let Some(holder) = record.holders.iter().find(|h| h.session == session) {
            return Ok(CommandResult::LockCancel(CancelResult::AlreadyGranted {
                token: holder.token,
            }));
        }
        return Ok(CommandResult::LockCancel(CancelResult::Cancelled));
    };
    let waiter = record.waiters.remove(at);
    forget_session_lock(overlay, space, waiter.session, name)?;
    end_wait(overlay, name, &waiter, LockWaitResult::Cancelled, waits)?;
    sessions::amend_client(
        overlay,
        waiter.client_id,
        waiter.seq,
        CommandResult::LockCancel(CancelResult::Cancelled),
    )?;
    // The head may have been a waiter that blocked those behind it.
    promote(overlay, space, name, &mut record, index, waits)?;
    save(overlay, space, name, &record)?;
    Ok(CommandResult::LockCancel(CancelResult::Cancelled))
}

/// `session` ended at `index` (its record is already gone): drop its grants and its waits on
/// `name`, then promote. `delay_ms` (nonzero only for an expiry of a request that asked for a
/// lock-delay): if the session held the lock, it stays ungranted until a `LockDelayEnd`.
pub(crate) fn session_ended(
    overlay: &mut Overlay<'_>,
    space: LockSpace,
    name: &[u8],
    session: SessionId,
    delay_ms: u64,
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<()> {
    overlay.remove(session_lock_key(space, session, name));
    let mut record = load(overlay, space, name)?;
    let held = record.holders.iter().any(|h| h.session == session);
    record.holders.retain(|h| h.session != session);
    if held && delay_ms > 0 && space == LockSpace::Locks {
        let longest = delay(overlay, space, name)?
            .map_or(0, |d| d.delay_ms)
            .max(delay_ms);
        overlay.put_encoded(
            lock_delay_key(name),
            &LockDelayRecord {
                delay_ms: longest,
                since: index,
            },
        )?;
    }
    let (failed, kept): (Vec<LockWaiter>, Vec<LockWaiter>) = std::mem::take(&mut record.waiters)
        .into_iter()
        .partition(|w| w.session == session);
    record.waiters = kept;
    for waiter in failed {
        end_wait(overlay, name, &waiter, LockWaitResult::SessionEnded, waits)?;
    }
    promote(overlay, space, name, &mut record, index, waits)?;
    save(overlay, space, name, &record)
}

/// End the lock-delay of each of `names` at `index` and promote their waiters. Locks not (or
/// no longer) delayed are skipped: a repeated proposal changes nothing.
pub(crate) fn end_delays(
    overlay: &mut Overlay<'_>,
    names: &[Vec<u8>],
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<CommandResult> {
    let mut ended = 0u32;
    for name in names {
        let space = LockSpace::Locks;
        if delay(overlay, space, name)?.is_none() {
            continue;
        }
        overlay.remove(lock_delay_key(name));
        let mut record = load(overlay, space, name)?;
        promote(overlay, space, name, &mut record, index, waits)?;
        save(overlay, space, name, &record)?;
        ended += 1;
    }
    Ok(CommandResult::LockDelaysEnded { locks: ended })
}

/// Grant waiters from the head of the queue while they are compatible with the holders; each
/// grant re-checks the waiter's session (a waiter whose session is gone fails instead). A
/// delayed lock grants no one (its `LockDelayEnd` promotes).
fn promote(
    overlay: &mut Overlay<'_>,
    space: LockSpace,
    name: &[u8],
    record: &mut LockRecord,
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<()> {
    if delay(overlay, space, name)?.is_some() {
        return Ok(());
    }
    while let Some(head) = record.waiters.first() {
        if !compatible(&record.holders, head.mode) {
            break;
        }
        let waiter = record.waiters.remove(0);
        if sessions::record(overlay, waiter.session)?.is_none() {
            overlay.remove(session_lock_key(space, waiter.session, name));
            end_wait(overlay, name, &waiter, LockWaitResult::SessionEnded, waits)?;
            continue;
        }
        let token = FencingToken(index.0);
        record.holders.push(LockHolder {
            token,
            session: waiter.session,
            mode: waiter.mode,
            client_id: waiter.client_id,
            value: waiter.value.clone(),
        });
        end_wait(
            overlay,
            name,
            &waiter,
            LockWaitResult::Granted { token },
            waits,
        )?;
    }
    Ok(())
}

/// Report how `waiter`'s wait ended and remember it for a retry of its acquire.
fn end_wait(
    overlay: &mut Overlay<'_>,
    name: &[u8],
    waiter: &LockWaiter,
    result: LockWaitResult,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<()> {
    let remembered = match result {
        LockWaitResult::Granted { token } => Some(LockResult::Granted { token }),
        LockWaitResult::SessionEnded => Some(LockResult::SessionNotFound),
        // The cancel is the client's newer command: its own result is what a retry gets.
        LockWaitResult::Cancelled => None,
    };
    if let Some(remembered) = remembered {
        sessions::amend_client(
            overlay,
            waiter.client_id,
            waiter.seq,
            CommandResult::Lock(remembered),
        )?;
    }
    waits.push(LockWaitEnded {
        client_id: waiter.client_id,
        seq: waiter.seq,
        name: name.to_vec(),
        result,
    });
    Ok(())
}

/// `session` no longer holds or waits for `name`.
fn forget_session_lock(
    overlay: &mut Overlay<'_>,
    space: LockSpace,
    session: SessionId,
    name: &[u8],
) -> Result<()> {
    overlay.remove(session_lock_key(space, session, name));
    if let Some(mut rec) = sessions::record(overlay, session)? {
        rec.locks = rec.locks.saturating_sub(1);
        sessions::store(overlay, session, &rec)?;
    }
    Ok(())
}

/// Set the value the holder with grant `token` publishes (an election's proclaim): `false` if
/// no holder has that token.
pub(crate) fn publish(
    overlay: &mut Overlay<'_>,
    space: LockSpace,
    name: &[u8],
    token: FencingToken,
    value: &[u8],
) -> Result<bool> {
    let mut record = load(overlay, space, name)?;
    let Some(holder) = record.holders.iter_mut().find(|h| h.token == token) else {
        return Ok(false);
    };
    holder.value = value.to_vec();
    save(overlay, space, name, &record)?;
    Ok(true)
}

// ----- reads -----

/// Whether `token` is a current grant of `name` (the fenced-write compare, `check_token`).
pub(crate) fn is_held(
    view: &Overlay<'_>,
    space: LockSpace,
    name: &[u8],
    token: FencingToken,
) -> Result<bool> {
    Ok(load(view, space, name)?
        .holders
        .iter()
        .any(|h| h.token == token))
}

/// Every lock in its lock-delay, in name order, with the delay to arm (what the leader's
/// keeper waits out before proposing `LockDelayEnd`).
pub(crate) fn delays(view: &Overlay<'_>) -> Result<Vec<(Vec<u8>, u64)>> {
    let prefix = lock_delays_prefix();
    let end = super::layout::prefix_end(&prefix);
    let mut out = Vec::new();
    for pair in view.iter(&prefix, end.as_deref()) {
        let (key, value) = pair?;
        let record: LockDelayRecord = decode_record("lock delay", &value)?;
        out.push((key[prefix.len()..].to_vec(), record.delay_ms));
    }
    Ok(out)
}

/// `name`'s holders and waiters (`None` if it has neither).
pub(crate) fn info(view: &Overlay<'_>, space: LockSpace, name: &[u8]) -> Result<Option<LockInfo>> {
    let record = load(view, space, name)?;
    if record.holders.is_empty() && record.waiters.is_empty() {
        return Ok(None);
    }
    Ok(Some(LockInfo {
        name: name.to_vec(),
        holders: record.holders,
        waiters: record.waiters,
    }))
}

/// Up to `limit` locks with holders or waiters, in name order, starting after `after` (empty:
/// from the first); plus whether more remain.
pub(crate) fn list(
    view: &Overlay<'_>,
    after: &[u8],
    limit: usize,
) -> Result<(Vec<LockInfo>, bool)> {
    let prefix = lock_records_prefix(LockSpace::Locks);
    let mut start = lock_key(LockSpace::Locks, after);
    if !after.is_empty() {
        start.push(0);
    }
    let end = super::layout::prefix_end(&prefix);
    let (pairs, more) = view.scan(&start, end.as_deref(), limit)?;
    let mut out = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let record: LockRecord = decode_record("lock", &value)?;
        out.push(LockInfo {
            name: key[prefix.len()..].to_vec(),
            holders: record.holders,
            waiters: record.waiters,
        });
    }
    Ok((out, more))
}
