//! What a session's end and an ephemeral put do across features: releasing the session's locks
//! and elections (the lock table promotes the next waiters or campaigners and fails the
//! session's own waits), deleting its
//! ephemeral keys (through kv, so watchers see the deletes), and attaching a key to a session.
//! Above `sessions.rs` (the records), `locks.rs` and `kv.rs`, which it calls; see
//! `sessions.rs` for the semantics.

use super::kv;
use super::layout::{
    decode_record, key_owner_key, session_attached_key, session_attached_prefix, session_key,
    session_locks_prefix, session_of, LockSpace,
};
use super::locks;
use super::overlay::Overlay;
use super::result::{CommandResult, LockWaitEnded, SessionId};
use super::sessions::{record, scan_prefix, store};
use crate::error::{Error, Result};
use crate::limits::MAX_SESSION_KEYS;
use crate::types::LogIndex;

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
        if end(overlay, sessions, session, End::Expired, index, waits)? {
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
    Ok(
        if end(overlay, sessions, session, End::Revoked, index, waits)? {
            CommandResult::SessionRevoked
        } else {
            CommandResult::SessionNotFound
        },
    )
}

/// How a session ended: an expiry starts the lock-delay of the locks it held; a revoke, like a
/// release, is the client's own clean end (it knows its grants are gone) and starts none.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Expired,
    Revoked,
}

/// End `session` at `index`: forget it first (so promotions below see it gone), then release its
/// locks and fail its waits, then delete its ephemeral keys. `false` if it did not exist.
fn end(
    overlay: &mut Overlay<'_>,
    sessions: &mut usize,
    session: SessionId,
    how: End,
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
    // Locks first, then elections (a fixed order: every member ends them the same way).
    for space in [LockSpace::Locks, LockSpace::Elections] {
        let held: Vec<(Vec<u8>, u64)> =
            scan_prefix(overlay, &session_locks_prefix(space, session))?
                .into_iter()
                .map(|(key, value)| {
                    Ok((
                        tail_after_session(&key)?,
                        locks::decode_session_lock(&value)?,
                    ))
                })
                .collect::<Result<_>>()?;
        for (name, lock_delay_ms) in held {
            let delay_ms = if how == End::Expired {
                lock_delay_ms
            } else {
                0
            };
            locks::session_ended(overlay, space, &name, session, delay_ms, index, waits)?;
        }
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

pub(super) fn owner(view: &Overlay<'_>, owner_key: &[u8]) -> Result<Option<SessionId>> {
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
