//! Feature: sessions (leases) and the keys attached to them (ephemeral keys).
//!
//! A session is granted with a TTL; its id is the log index of the grant. The state machine
//! holds no clock: it never decides that a session lapsed. The leader's lease keeper
//! (`node/sessions.rs`) does, with its monotonic clock, and proposes `SessionExpire`; it also
//! proposes `SessionCheckpoint` entries carrying each session's remaining TTL, stored here so
//! that a new leader re-arms a session from its last checkpoint rather than from the full TTL
//! (etcd #9888: leases that live forever under frequent elections).
//!
//! A session's end (revoke or expiry) releases its locks (promoting their next waiters), fails
//! its own waits, and deletes its ephemeral keys — all in the entry that ends it. That, and the
//! ephemeral put, reach across features (locks, kv), so they live above them in
//! `session_end.rs`; this file is the session records themselves, below the lock table.
//!
//! Ephemeral keys (ZooKeeper's semantics): a put through a session attaches the key to it, and
//! the key is deleted when the session ends, unless it was deleted meanwhile; a plain put of an
//! attached key keeps the attachment (the key stays ephemeral), a put through another session
//! moves it. The attachment remembers the key's incarnation (its create revision): a key that
//! was deleted and created again by a plain put is a different key and survives the session.
//! That is why a plain put or delete never looks at attachments (no read added to them), and a
//! stale attachment of a deleted key costs only its `s k` record until the session ends.

use super::clients;
use super::layout::{decode_record, prefix_end, session_key, session_of, SessionRecord};
use super::overlay::Overlay;
use super::result::{CommandResult, SessionId, SessionInfo};
use crate::error::{Error, Result};
use crate::limits::{
    MAX_SESSIONS, MAX_SESSION_CHECKPOINT_BATCH, MAX_SESSION_EXPIRE_BATCH, MAX_SESSION_TTL_MS,
    MIN_SESSION_TTL_MS,
};
use crate::types::LogIndex;

// ----- limits -----

/// Check a grant's TTL.
pub(crate) fn validate_grant(ttl_ms: u64) -> Result<()> {
    if !(MIN_SESSION_TTL_MS..=MAX_SESSION_TTL_MS).contains(&ttl_ms) {
        return Err(Error::InvalidArgument(format!(
            "session grant: ttl_ms {ttl_ms} is not in \
             {MIN_SESSION_TTL_MS}..={MAX_SESSION_TTL_MS}"
        )));
    }
    Ok(())
}

/// Check a checkpoint's list.
pub(crate) fn validate_checkpoint(remaining: &[(SessionId, u64)]) -> Result<()> {
    if remaining.is_empty() || remaining.len() > MAX_SESSION_CHECKPOINT_BATCH {
        return Err(Error::InvalidArgument(format!(
            "session checkpoint: {} sessions, not in 1..={MAX_SESSION_CHECKPOINT_BATCH}",
            remaining.len()
        )));
    }
    Ok(())
}

/// Check an expiry's list.
pub(crate) fn validate_expire(sessions: &[SessionId]) -> Result<()> {
    if sessions.is_empty() || sessions.len() > MAX_SESSION_EXPIRE_BATCH {
        return Err(Error::InvalidArgument(format!(
            "session expire: {} sessions, not in 1..={MAX_SESSION_EXPIRE_BATCH}",
            sessions.len()
        )));
    }
    Ok(())
}

// ----- apply -----

/// The stored record of `session`, `None` if it does not exist.
pub(crate) fn record(view: &Overlay<'_>, session: SessionId) -> Result<Option<SessionRecord>> {
    match view.get(&session_key(session))? {
        Some(bytes) => decode_record("session", &bytes).map(Some),
        None => Ok(None),
    }
}

/// Store `session`'s record.
pub(crate) fn store(
    overlay: &mut Overlay<'_>,
    session: SessionId,
    record: &SessionRecord,
) -> Result<()> {
    overlay.put_encoded(session_key(session), record)
}

/// Grant a session of `ttl_ms` at `index` (its id). `sessions`: how many exist.
pub(crate) fn grant(
    overlay: &mut Overlay<'_>,
    sessions: &mut usize,
    ttl_ms: u64,
    index: LogIndex,
) -> Result<CommandResult> {
    if *sessions >= MAX_SESSIONS {
        return Ok(CommandResult::LimitReached {
            what: format!("MAX_SESSIONS ({MAX_SESSIONS}) sessions exist"),
        });
    }
    let session = SessionId(index.0);
    store(
        overlay,
        session,
        &SessionRecord {
            ttl_ms,
            remaining_ms: ttl_ms,
            keys: 0,
            locks: 0,
        },
    )?;
    *sessions += 1;
    Ok(CommandResult::SessionGranted { session, ttl_ms })
}

/// Record the leader's view of the remaining TTLs (capped at each session's TTL); sessions
/// that no longer exist are skipped.
pub(crate) fn checkpoint(
    overlay: &mut Overlay<'_>,
    remaining: &[(SessionId, u64)],
) -> Result<CommandResult> {
    let mut updated = 0u32;
    for &(session, remaining_ms) in remaining {
        if let Some(mut rec) = record(overlay, session)? {
            rec.remaining_ms = remaining_ms.min(rec.ttl_ms);
            store(overlay, session, &rec)?;
            updated += 1;
        }
    }
    Ok(CommandResult::SessionsUpdated { sessions: updated })
}

/// Every (key, value) pair under `prefix`, collected (the caller writes while it walks them).
pub(crate) fn scan_prefix(view: &Overlay<'_>, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let end = prefix_end(prefix);
    view.iter(prefix, end.as_deref()).collect()
}

/// Remember, for a retry, that the acquire `seq` of `client_id` ended with `result` (see
/// `clients::amend`).
pub(crate) fn amend_client(
    overlay: &mut Overlay<'_>,
    client_id: u64,
    seq: u64,
    result: CommandResult,
) -> Result<()> {
    clients::amend(overlay, client_id, seq, result)
}

// ----- reads -----

/// What the state knows of `session`.
pub(crate) fn info(view: &Overlay<'_>, session: SessionId) -> Result<Option<SessionInfo>> {
    Ok(record(view, session)?.map(|rec| SessionInfo {
        session,
        ttl_ms: rec.ttl_ms,
        checkpointed_remaining_ms: rec.remaining_ms,
    }))
}

/// Every session, in id order (at most `MAX_SESSIONS`).
pub(crate) fn all(view: &Overlay<'_>) -> Result<Vec<SessionInfo>> {
    let prefix = super::layout::session_records_prefix();
    let mut out = Vec::new();
    for (key, value) in scan_prefix(view, &prefix)? {
        let (session, _) = session_of(&key)
            .ok_or_else(|| Error::corrupt(0, "malformed session key in the state"))?;
        let rec: SessionRecord = decode_record("session", &value)?;
        out.push(SessionInfo {
            session,
            ttl_ms: rec.ttl_ms,
            checkpointed_remaining_ms: rec.remaining_ms,
        });
    }
    Ok(out)
}

/// How many sessions the tree holds (at open and after a restore).
pub(crate) fn count(tree: &sled::Tree) -> Result<usize> {
    let mut n = 0;
    for item in tree.scan_prefix(super::layout::session_records_prefix()) {
        item.map_err(|e| super::layout::sled_error("counting sessions", e))?;
        n += 1;
    }
    Ok(n)
}
