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
//! its own waits, and deletes its ephemeral keys — all in the entry that ends it.
//!
//! Ephemeral keys (ZooKeeper's semantics): a put through a session attaches the key to it, and
//! the key is deleted when the session ends, unless it was deleted meanwhile; a plain put of an
//! attached key keeps the attachment (the key stays ephemeral), a put through another session
//! moves it. The attachment remembers the key's incarnation (its create revision): a key that
//! was deleted and created again by a plain put is a different key and survives the session.
//! That is why a plain put or delete never looks at attachments (no read added to them), and a
//! stale attachment of a deleted key costs only its `s k` record until the session ends.

use super::clients;
use super::kv;
use super::layout::{
    decode_record, key_owner_key, session_attached_key, session_attached_prefix, session_key,
    session_locks_prefix, session_of, SessionRecord,
};
use super::locks;
use super::overlay::Overlay;
use super::result::{CommandResult, LockWaitEnded, SessionId, SessionInfo};
use crate::error::{Error, Result};
use crate::limits::{
    MAX_SESSIONS, MAX_SESSION_CHECKPOINT_BATCH, MAX_SESSION_EXPIRE_BATCH, MAX_SESSION_KEYS,
    MAX_SESSION_TTL_MS, MIN_SESSION_TTL_MS,
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

/// End every named session that exists (an expiry proposed by the leader).
pub(crate) fn expire(
    overlay: &mut Overlay<'_>,
    sessions: &mut usize,
    ids: &[SessionId],
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<CommandResult> {
    let mut ended = 0u32;
    for &session in ids {
        if end(overlay, sessions, session, index, waits)? {
            ended += 1;
        }
    }
    Ok(CommandResult::SessionsUpdated { sessions: ended })
}

/// Revoke one session.
pub(crate) fn revoke(
    overlay: &mut Overlay<'_>,
    sessions: &mut usize,
    session: SessionId,
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<CommandResult> {
    Ok(if end(overlay, sessions, session, index, waits)? {
        CommandResult::SessionRevoked
    } else {
        CommandResult::SessionNotFound
    })
}

/// End `session` at `index`: forget it first (so promotions below see it gone), then release its
/// locks and fail its waits, then delete its ephemeral keys. `false` if it did not exist.
fn end(
    overlay: &mut Overlay<'_>,
    sessions: &mut usize,
    session: SessionId,
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<bool> {
    if record(overlay, session)?.is_none() {
        return Ok(false);
    }
    overlay.remove(session_key(session));
    *sessions = sessions.checked_sub(1).ok_or_else(|| {
        Error::Fatal(format!(
            "session count underflow ending session {session} at {index}"
        ))
    })?;
    let names: Vec<Vec<u8>> = scan_prefix(overlay, &session_locks_prefix(session))?
        .into_iter()
        .map(|(key, _)| tail_after_session(&key))
        .collect::<Result<_>>()?;
    for name in names {
        locks::session_ended(overlay, &name, session, index, waits)?;
    }
    let attached = scan_prefix(overlay, &session_attached_prefix(session))?;
    for (attachment, value) in attached {
        let key = tail_after_session(&attachment)?;
        let incarnation: LogIndex = decode_record("session key", &value)?;
        overlay.remove(attachment);
        if overlay.get_meta(&key)?.map(|m| m.create_revision) == Some(incarnation) {
            kv::delete(overlay, &key, index)?;
        }
        let owner_key = key_owner_key(&key);
        if owner(overlay, &owner_key)? == Some(session) {
            overlay.remove(owner_key);
        }
    }
    Ok(true)
}

/// The key after the session id of an `s k` or `x s` key.
fn tail_after_session(key: &[u8]) -> Result<Vec<u8>> {
    session_of(key)
        .map(|(_, tail)| tail.to_vec())
        .ok_or_else(|| Error::corrupt(0, "malformed session-indexed key in the state"))
}

/// Every (key, value) pair under `prefix`, collected (the caller writes while it walks them).
pub(crate) fn scan_prefix(view: &Overlay<'_>, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let end = kv::prefix_end(prefix);
    view.iter(prefix, end.as_deref()).collect()
}

fn owner(view: &Overlay<'_>, owner_key: &[u8]) -> Result<Option<SessionId>> {
    match view.get(owner_key)? {
        Some(bytes) => decode_record("key owner", &bytes).map(Some),
        None => Ok(None),
    }
}

/// Put `key` = `value` at `index` and attach it to `session` (see the module docs).
pub(crate) fn put_ephemeral(
    overlay: &mut Overlay<'_>,
    key: &[u8],
    value: &[u8],
    session: SessionId,
    index: LogIndex,
) -> Result<CommandResult> {
    let Some(mut rec) = record(overlay, session)? else {
        return Ok(CommandResult::SessionNotFound);
    };
    let attachment = session_attached_key(session, key);
    let already = overlay.get(&attachment)?.is_some();
    if !already && rec.keys as usize >= MAX_SESSION_KEYS {
        return Ok(CommandResult::LimitReached {
            what: format!("session {session} has MAX_SESSION_KEYS ({MAX_SESSION_KEYS}) keys"),
        });
    }
    let owner_key = key_owner_key(key);
    if let Some(previous) = owner(overlay, &owner_key)?.filter(|&p| p != session) {
        // The key moves to this session: the previous owner no longer deletes it.
        if let Some(mut prev) = record(overlay, previous)? {
            let prev_attachment = session_attached_key(previous, key);
            if overlay.get(&prev_attachment)?.is_some() {
                overlay.remove(prev_attachment);
                prev.keys = prev.keys.saturating_sub(1);
                store(overlay, previous, &prev)?;
            }
        }
    }
    let put = kv::put(overlay, key, value, index)?;
    let incarnation = put.previous.map_or(index, |m| m.create_revision);
    overlay.put_encoded(attachment, &incarnation)?;
    overlay.put_encoded(owner_key, &session)?;
    if !already {
        rec.keys += 1;
        store(overlay, session, &rec)?;
    }
    Ok(CommandResult::Put(put))
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
