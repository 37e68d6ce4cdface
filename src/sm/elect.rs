//! Feature: elections for applications — `campaign`, `proclaim`, `resign`, `leader` — built on
//! the lock table.
//!
//! An election is a lock in its own table ([`LockSpace::Elections`], prefix `e`), so its name can
//! never meet a user lock's. A campaign is an exclusive acquire that waits (forever, or until the
//! campaigner's session ends or it withdraws): the holder is the leader, the waiters are the
//! campaigners in the order of their request's log index, and each carries its value
//! (`LockHolder::value`). Everything the lock table promises holds here as is: FIFO order, the
//! session re-checked at grant time, a session's end ending its leadership and promoting the
//! next campaigner, the fencing token (the log index of the grant, strictly increasing per
//! election), idempotent retries through the client table, and queued campaigns answered through
//! `ApplyOutcome::lock_waits`. What elections add: the leader's value is readable and can be
//! changed by the leader alone (`proclaim`), and a leader resigns by its token alone (one leader
//! at a time, so the token names it).

use super::layout::LockSpace;
use super::locks;
use super::overlay::Overlay;
use super::result::{CommandResult, ElectionLeader, FencingToken, LockWaitEnded};
use crate::error::{Error, Result};
use crate::limits::{MAX_ELECTION_VALUE_BYTES, MAX_LOCK_NAME_BYTES};
use crate::types::LogIndex;

// ----- limits -----

/// Check an election name: non-empty, at most `MAX_LOCK_NAME_BYTES`.
pub(crate) fn validate_name(what: &str, name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > MAX_LOCK_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what}: election name of {} bytes is not in 1..={MAX_LOCK_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// Check an election name and a candidate's value (at most `MAX_ELECTION_VALUE_BYTES`).
pub(crate) fn validate_value(what: &str, name: &[u8], value: &[u8]) -> Result<()> {
    validate_name(what, name)?;
    if value.len() > MAX_ELECTION_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what}: value is {} bytes, over the limit of {MAX_ELECTION_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

// ----- apply -----

/// Replace the leader's value, if `token` is the current leader's grant: `Proclaimed { false }`
/// otherwise (it resigned, its session ended, or it never led).
pub(crate) fn proclaim(
    overlay: &mut Overlay<'_>,
    name: &[u8],
    token: FencingToken,
    value: &[u8],
) -> Result<CommandResult> {
    let proclaimed = locks::publish(overlay, LockSpace::Elections, name, token, value)?;
    Ok(CommandResult::Proclaimed { proclaimed })
}

/// The leader with grant `token` steps down at `index`; the next campaigner leads.
/// `LockReleased { false }` if `token` does not lead.
pub(crate) fn resign(
    overlay: &mut Overlay<'_>,
    name: &[u8],
    token: FencingToken,
    index: LogIndex,
    waits: &mut Vec<LockWaitEnded>,
) -> Result<CommandResult> {
    let session = locks::info(overlay, LockSpace::Elections, name)?
        .and_then(|info| info.holders.into_iter().find(|h| h.token == token))
        .map(|h| h.session);
    match session {
        Some(session) => locks::release(
            overlay,
            LockSpace::Elections,
            name,
            token,
            session,
            index,
            waits,
        ),
        None => Ok(CommandResult::LockReleased { released: false }),
    }
}

// ----- reads -----

/// Who leads election `name`, `None` if nobody campaigns in it.
pub(crate) fn leader(view: &Overlay<'_>, name: &[u8]) -> Result<Option<ElectionLeader>> {
    Ok(
        locks::info(view, LockSpace::Elections, name)?.and_then(|info| {
            info.holders.into_iter().next().map(|h| ElectionLeader {
                value: h.value,
                token: h.token,
                session: h.session,
            })
        }),
    )
}
