//! Coordination: sessions (leases kept alive in the background), locks with fencing tokens,
//! and the partition map's owners. Each function is one call of the Rust [`Client`] API.
//!
//! A `haven_session_t` owns a [`Session`] handle: while it lives, the client that granted it
//! sends its keepalives (one request per client for all of its sessions). A lock taken through
//! `haven_lock` is not tied to a C object: it is held until `haven_unlock` with its token, or
//! until its session ends (revoked, or expired after its TTL without keepalives).
//!
//! [`Client`]: crate::Client

use super::args::{self, handle, text};
use super::kv::push_record;
use super::{entry, haven_buf_t, haven_t};
use crate::client::{LockWait, Session, SessionState};
use crate::error::{Error, Result};
use crate::limits::{MAX_KEY_BYTES, MAX_LOCK_NAME_BYTES};
use crate::sm::{FencingToken, LockInfo, LockMode};
use std::ffi::{c_char, c_int};
use std::fmt::Write as _;
use std::time::Duration;

/// A session granted by `haven_session_grant`. Opaque to C; free with `haven_session_free`.
pub struct haven_session_t {
    session: Session,
}

impl haven_session_t {
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }
}

/// `haven_session_state`: the leader answered the last keepalive.
pub const HAVEN_SESSION_ALIVE: c_int = 0;
/// No keepalive was answered for longer than the TTL (no quorum reachable): the session may
/// be alive or gone; treat its locks as possibly lost.
pub const HAVEN_SESSION_UNKNOWN: c_int = 1;
/// A leader said the session does not exist (expired or revoked). Final.
pub const HAVEN_SESSION_LOST: c_int = 2;

/// `haven_lock`'s `mode`: one holder at a time.
pub const HAVEN_LOCK_EXCLUSIVE: c_int = 0;
/// Any number of shared holders at once, none exclusive.
pub const HAVEN_LOCK_SHARED: c_int = 1;

fn session<'a>(s: *const haven_session_t) -> Result<&'a Session> {
    // SAFETY: NULL or a session from haven_session_grant not yet freed (the header's contract).
    unsafe { s.as_ref() }
        .map(|s| &s.session)
        .ok_or_else(|| Error::InvalidArgument("the session is NULL".into()))
}

/// Grant a session (lease) of `ttl_ms` milliseconds (at least the cluster's minimum, 1000 by
/// default) through `h`, and put its handle in `*out` (free with `haven_session_free`).
///
/// The client behind `h` keeps the session alive in the background (a keepalive every third
/// of the TTL, on one haven thread per handle) for as long as the `haven_session_t` lives.
/// Blocks until the grant is committed. Errors: INVALID_ARGUMENT, UNAVAILABLE (not granted),
/// TIMEOUT (may have been granted: it then expires after its TTL). On error `*out` is not
/// written. Thread safe. Free the session before closing `h`.
#[no_mangle]
pub extern "C" fn haven_session_grant(
    h: *mut haven_t,
    ttl_ms: u64,
    out: *mut *mut haven_session_t,
) -> c_int {
    entry("haven_session_grant", || {
        let h = handle(h)?;
        let out = args::out("out", out)?;
        if ttl_ms == 0 {
            return Err(Error::InvalidArgument("ttl_ms: must be positive".into()));
        }
        let session = h.client().grant_session(Duration::from_millis(ttl_ms))?;
        *out = Box::into_raw(Box::new(haven_session_t { session }));
        Ok(())
    })
}

/// The session's id in `*id` (what `haven_locks_json` lists as holders' `session`). Does not
/// block; thread safe.
#[no_mangle]
pub extern "C" fn haven_session_id(s: *const haven_session_t, id: *mut u64) -> c_int {
    entry("haven_session_id", || {
        let session = session(s)?;
        *args::out("id", id)? = session.id().0;
        Ok(())
    })
}

/// What the client knows of the session now, in `*state`: `HAVEN_SESSION_ALIVE`,
/// `HAVEN_SESSION_UNKNOWN` or `HAVEN_SESSION_LOST`. Does not block (the background keepalives
/// keep it current); thread safe.
#[no_mangle]
pub extern "C" fn haven_session_state(s: *const haven_session_t, state: *mut c_int) -> c_int {
    entry("haven_session_state", || {
        let session = session(s)?;
        *args::out("state", state)? = match session.state() {
            SessionState::Alive => HAVEN_SESSION_ALIVE,
            SessionState::Unknown => HAVEN_SESSION_UNKNOWN,
            SessionState::Lost => HAVEN_SESSION_LOST,
        };
        Ok(())
    })
}

/// End the session now: its locks are released, its queued lock requests fail and its
/// ephemeral keys are deleted. Revoking a session that is already gone succeeds. The handle
/// stays valid (its state is then `HAVEN_SESSION_LOST`); free it with `haven_session_free`.
///
/// Blocks until the revoke is committed. Errors: INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT.
/// Thread safe.
#[no_mangle]
pub extern "C" fn haven_session_revoke(s: *mut haven_session_t) -> c_int {
    entry("haven_session_revoke", || session(s)?.revoke())
}

/// Free a session handle (NULL is ignored): its keepalives stop, so it expires after its TTL
/// unless another handle keeps it alive (revoke it first to end it at once). Does not block.
/// No other call may be running on `s` or follow it.
#[no_mangle]
pub extern "C" fn haven_session_free(s: *mut haven_session_t) {
    let _ = entry("haven_session_free", || {
        if !s.is_null() {
            // SAFETY: `s` came from haven_session_grant and this is its last use (contract).
            drop(unsafe { Box::from_raw(s) });
        }
        Ok(())
    });
}

fn lock_name<'a>(name: *const c_char) -> Result<&'a [u8]> {
    let name = text("name", name)?.as_bytes();
    if name.is_empty() || name.len() > MAX_LOCK_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "name: a lock name is 1 to {MAX_LOCK_NAME_BYTES} bytes, not {}",
            name.len()
        )));
    }
    Ok(name)
}

/// Take lock `name` (NUL-terminated, 1 to 1024 bytes) through `session`, in `mode`
/// (`HAVEN_LOCK_EXCLUSIVE` or `HAVEN_LOCK_SHARED`), and put the grant's fencing token (> 0) in
/// `*token`.
///
/// `wait_ms`: 0 = try once, do not wait; -1 = wait until granted (or the session ends); > 0 =
/// wait at most that long. Not granted (busy with `wait_ms` 0, or the wait passed) ->
/// `HAVEN_ERR_TIMEOUT` and the request is withdrawn by a committed cancel, so it is never
/// granted afterwards. (Should even the cancel fail to commit within the request timeout, the
/// error is that failure's; a late grant then belongs to the session and ends with it.)
///
/// The lock stays held after this call returns, until `haven_unlock` with the token or the
/// end of the session. Pass the token with every write to the protected resource
/// (`HAVEN_CMP_LOCK_HELD` in `haven_txn`, or `haven_check_token` on the resource's side).
///
/// `name` is borrowed for the call. Blocks as `wait_ms` says (and for the grant's commit).
/// Errors: INVALID_ARGUMENT (also: this session already holds or waits for the lock),
/// SESSION_EXPIRED (the session is gone), TIMEOUT, UNAVAILABLE. On error `*token` is not
/// written. Thread safe.
#[no_mangle]
pub extern "C" fn haven_lock(
    h: *mut haven_t,
    session: *mut haven_session_t,
    name: *const c_char,
    mode: c_int,
    wait_ms: i64,
    token: *mut u64,
) -> c_int {
    entry("haven_lock", || {
        let h = handle(h)?;
        let session = self::session(session)?;
        let name = lock_name(name)?;
        let mode = match mode {
            HAVEN_LOCK_EXCLUSIVE => LockMode::Exclusive,
            HAVEN_LOCK_SHARED => LockMode::Shared,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "mode: {other} is not HAVEN_LOCK_EXCLUSIVE or HAVEN_LOCK_SHARED"
                )))
            }
        };
        let wait = match wait_ms {
            0 => LockWait::Try,
            -1 => LockWait::Forever,
            ms if ms > 0 => LockWait::Deadline(Duration::from_millis(ms as u64)),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "wait_ms: {other} (0: try, -1: forever, > 0: milliseconds)"
                )))
            }
        };
        let token = args::out("token", token)?;
        match h.client().lock(name, mode, session, wait)? {
            Some(guard) => {
                *token = guard.into_token().0;
                Ok(())
            }
            None => Err(Error::Timeout(match wait {
                LockWait::Try => "the lock is held by another session".into(),
                _ => format!("the lock was not granted within {wait_ms} ms"),
            })),
        }
    })
}

/// Release the grant `token` of `session` on lock `name`. Errors: LOCK_NOT_HELD (that grant
/// is not current: released already, or its session ended), INVALID_ARGUMENT, UNAVAILABLE,
/// TIMEOUT. `name` is borrowed for the call. Blocks until the release is committed. Thread
/// safe.
#[no_mangle]
pub extern "C" fn haven_unlock(
    h: *mut haven_t,
    session: *mut haven_session_t,
    name: *const c_char,
    token: u64,
) -> c_int {
    entry("haven_unlock", || {
        let h = handle(h)?;
        let session = self::session(session)?;
        let name = lock_name(name)?;
        h.client().unlock(name, FencingToken(token), session.id())
    })
}

/// Whether `token` is a current grant of lock `name`, in `*valid` (1 or 0): what a resource
/// outside haven asks before it accepts a fenced request. A linearizable read (blocks for a
/// quorum round trip). Errors: INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT. Thread safe.
#[no_mangle]
pub extern "C" fn haven_check_token(
    h: *mut haven_t,
    name: *const c_char,
    token: u64,
    valid: *mut c_int,
) -> c_int {
    entry("haven_check_token", || {
        let h = handle(h)?;
        let name = lock_name(name)?;
        let valid = args::out("valid", valid)?;
        *valid = c_int::from(h.client().check_token(name, FencingToken(token))?);
        Ok(())
    })
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Exclusive => "exclusive",
        LockMode::Shared => "shared",
    }
}

fn locks_json(locks: &[LockInfo]) -> String {
    let mut out = String::from("[");
    for (i, lock) in locks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        out.push_str(&crate::observe::json_string(&String::from_utf8_lossy(
            &lock.name,
        )));
        out.push_str(",\"holders\":[");
        for (j, holder) in lock.holders.iter().enumerate() {
            let comma = if j > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{comma}{{\"token\":{},\"session\":{},\"mode\":\"{}\",\"client_id\":{}}}",
                holder.token.0,
                holder.session.0,
                mode_name(holder.mode),
                holder.client_id
            );
        }
        out.push_str("],\"waiters\":[");
        for (j, waiter) in lock.waiters.iter().enumerate() {
            let comma = if j > 0 { "," } else { "" };
            let _ = write!(
                out,
                "{comma}{{\"request\":{},\"session\":{},\"mode\":\"{}\"}}",
                waiter.request.0,
                waiter.session.0,
                mode_name(waiter.mode)
            );
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

/// Every lock with holders or waiters, in name order, as one JSON array in `*out` (UTF-8, not
/// NUL-terminated; free with `haven_buf_free`): `[{"name", "holders": [{"token", "session",
/// "mode" ("exclusive" or "shared"), "client_id"}], "waiters": [{"request", "session",
/// "mode"}]}]`. A name that is not UTF-8 is shown with U+FFFD in place of the bad bytes.
/// Fields are only added in later versions.
///
/// Linearizable reads, page by page. Errors: INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT. Thread
/// safe.
#[no_mangle]
pub extern "C" fn haven_locks_json(h: *mut haven_t, out: *mut haven_buf_t) -> c_int {
    entry("haven_locks_json", || {
        let h = handle(h)?;
        let out = args::out("out", out)?;
        let locks = h.client().locks()?;
        *out = haven_buf_t::from_vec(locks_json(&locks).into_bytes());
        Ok(())
    })
}

/// The partition of `key` in partition map `map` (NUL-terminated name) and its owners,
/// primary first: `*epoch` (NULL: not wanted) the epoch of the table that answered,
/// `*partition` (NULL: not wanted) the key's partition, `*owners` the owner ids as records
/// (the layout of `haven_scan`'s buffer: read them with `haven_record_next`; each record's key
/// is one owner id, UTF-8, and it has no value; none while the map has no owner). Free
/// `*owners` with `haven_buf_free`.
///
/// A member handle answers from its own applied copy of the map, without a request; a remote
/// client with one stale read of the member it talks to. Either may be a few changes behind
/// the leader: compare the epoch. `map` and `key` are borrowed for the call. Errors:
/// INVALID_ARGUMENT (also: no such map), UNAVAILABLE, TIMEOUT; outputs are not written on
/// error. Thread safe.
#[no_mangle]
pub extern "C" fn haven_owners(
    h: *mut haven_t,
    map: *const c_char,
    key: *const u8,
    key_len: usize,
    epoch: *mut u64,
    partition: *mut u32,
    owners: *mut haven_buf_t,
) -> c_int {
    entry("haven_owners", || {
        let h = handle(h)?;
        let map = text("map", map)?;
        let key = args::bytes("key", key, key_len, MAX_KEY_BYTES)?;
        let owners = args::out("owners", owners)?;
        let answer = h.client().owners(map, key)?;
        let mut packed = Vec::new();
        for owner in &answer.owners {
            push_record(&mut packed, owner.0.as_bytes(), None);
        }
        if let Some(epoch) = args::optional_out(epoch) {
            *epoch = answer.epoch;
        }
        if let Some(partition) = args::optional_out(partition) {
            *partition = answer.partition;
        }
        *owners = haven_buf_t::from_vec(packed);
        Ok(())
    })
}

/// The epoch of map `map` and the partition of `key` in it, without the owners (served like
/// `haven_owners`). Both outputs are required. Errors, blocking and thread safety as
/// `haven_owners`.
#[no_mangle]
pub extern "C" fn haven_partition_of(
    h: *mut haven_t,
    map: *const c_char,
    key: *const u8,
    key_len: usize,
    epoch: *mut u64,
    partition: *mut u32,
) -> c_int {
    entry("haven_partition_of", || {
        let h = handle(h)?;
        let map = text("map", map)?;
        let key = args::bytes("key", key, key_len, MAX_KEY_BYTES)?;
        let epoch = args::out("epoch", epoch)?;
        let partition = args::out("partition", partition)?;
        let (e, p) = h.client().partition_of(map, key)?;
        *epoch = e;
        *partition = p;
        Ok(())
    })
}

/// Create partition map `map` with `partitions` partitions (fixed) of `replicas` owners each
/// (consistent placement, no load cap). Blocks until committed. Errors: INVALID_ARGUMENT (the
/// name is taken, or a parameter is out of range), UNAVAILABLE, TIMEOUT. Thread safe.
#[no_mangle]
pub extern "C" fn haven_map_create(
    h: *mut haven_t,
    map: *const c_char,
    partitions: u32,
    replicas: u32,
) -> c_int {
    entry("haven_map_create", || {
        let h = handle(h)?;
        let map = text("map", map)?;
        h.client()
            .create_map(
                map,
                partitions,
                replicas,
                Default::default(),
                Default::default(),
            )
            .map(|_| ())
    })
}

/// Owner `owner` joins map `map` with `weight` (its share is proportional to it). Blocks until
/// committed. Errors: INVALID_ARGUMENT (no such map, the owner has joined already, weight 0
/// or over the limit), UNAVAILABLE, TIMEOUT. Thread safe.
#[no_mangle]
pub extern "C" fn haven_map_join(
    h: *mut haven_t,
    map: *const c_char,
    owner: *const c_char,
    weight: u32,
) -> c_int {
    entry("haven_map_join", || {
        let h = handle(h)?;
        let map = text("map", map)?;
        let owner = text("owner", owner)?;
        h.client().join(map, owner, weight).map(|_| ())
    })
}

/// Owner `owner` leaves map `map`; its partitions go to the others. Blocking, errors and
/// thread safety as `haven_map_join`.
#[no_mangle]
pub extern "C" fn haven_map_leave(
    h: *mut haven_t,
    map: *const c_char,
    owner: *const c_char,
) -> c_int {
    entry("haven_map_leave", || {
        let h = handle(h)?;
        let map = text("map", map)?;
        let owner = text("owner", owner)?;
        h.client().leave(map, owner).map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::{LockHolder, SessionId};

    #[test]
    fn locks_json_names_holders_and_waiters() {
        let locks = vec![LockInfo {
            name: b"jobs\"1".to_vec(),
            holders: vec![LockHolder {
                token: FencingToken(7),
                session: SessionId(3),
                mode: LockMode::Shared,
                client_id: 9,
                value: Vec::new(),
            }],
            waiters: Vec::new(),
        }];
        assert_eq!(
            locks_json(&locks),
            "[{\"name\":\"jobs\\\"1\",\"holders\":[{\"token\":7,\"session\":3,\
             \"mode\":\"shared\",\"client_id\":9}],\"waiters\":[]}]"
        );
        assert_eq!(locks_json(&[]), "[]");
    }

    #[test]
    fn null_and_bad_arguments_are_refused_before_anything_happens() {
        let mut token = 5u64;
        assert_eq!(
            haven_lock(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                c"x".as_ptr(),
                0,
                0,
                &mut token
            ),
            super::super::HAVEN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(token, 5);
        let mut id = 0u64;
        assert_eq!(
            haven_session_id(std::ptr::null(), &mut id),
            super::super::HAVEN_ERR_INVALID_ARGUMENT
        );
        haven_session_free(std::ptr::null_mut());
    }
}
