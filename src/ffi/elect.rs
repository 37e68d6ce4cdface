//! Elections: campaign (blocking, with a wait bound), proclaim, resign, read the leader, and
//! observe every change of leader through a C callback on a thread of its own.
//!
//! A leadership taken through `haven_campaign` is not tied to a C object (like a lock): it
//! lasts until `haven_resign` with its token or the end of its session. A bounded wait runs the
//! Rust campaign (which blocks until it leads) on a scoped thread; when the wait passes, the
//! campaign is withdrawn by committed cancels until that call ends, so it never leads later
//! unnoticed. Observers follow the watch module's threading: one delivery thread per observer,
//! stopped through a channel, joined on cancel except from inside its own callback.

use super::args::{self, handle, text};
use super::coord::haven_session_t;
use super::watch::CallbackThread;
use super::{entry, haven_buf_t, haven_t};
use crate::client::{ElectionObserver, LeaderChange};
use crate::error::{Error, ErrorCode, Result};
use crate::limits::{MAX_ELECTION_VALUE_BYTES, MAX_LOCK_NAME_BYTES};
use crate::sm::{ElectionLeader, FencingToken};
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError};
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a timed-out campaign waits for its call to end before it withdraws again (the
/// first withdrawal can commit before the campaign itself does).
const WITHDRAW_RETRY: Duration = Duration::from_millis(100);

fn election_name<'a>(name: *const c_char) -> Result<&'a [u8]> {
    let name = text("name", name)?.as_bytes();
    if name.is_empty() || name.len() > MAX_LOCK_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "name: an election name is 1 to {MAX_LOCK_NAME_BYTES} bytes, not {}",
            name.len()
        )));
    }
    Ok(name)
}

fn election_value<'a>(value: *const u8, value_len: usize) -> Result<&'a [u8]> {
    args::bytes("value", value, value_len, MAX_ELECTION_VALUE_BYTES)
}

fn session<'a>(s: *const haven_session_t) -> Result<&'a crate::client::Session> {
    // SAFETY: NULL or a session from haven_session_grant not yet freed (the header's contract).
    unsafe { s.as_ref() }
        .map(|s| s.session())
        .ok_or_else(|| Error::InvalidArgument("the session is NULL".into()))
}

/// What a campaign thread that ended without an answer returns (its join re-raises the panic).
fn panicked() -> Error {
    Error::Unavailable("the campaign thread ended without an answer".into())
}

/// Campaign in election `name` (NUL-terminated, 1 to 1024 bytes) through `session`, publishing
/// `value` (at most 4096 bytes; NULL with `value_len` 0 is empty) while leading; when the
/// caller leads, put the leadership's fencing token (> 0; strictly increasing per election)
/// in `*token`. Campaigners lead in the order their campaigns were committed.
///
/// `wait_ms`: -1 = wait until leading (or the session ends); >= 0 = wait at most that long.
/// Not leading when the wait passed -> `HAVEN_ERR_TIMEOUT`, and the campaign is withdrawn by
/// a committed cancel, so it never leads afterwards. (While no quorum is reachable the
/// withdrawal cannot commit: the call then returns once it has, or the session ended. Should
/// the caller come to lead just as the wait passes, the call returns `HAVEN_OK` with the
/// token: it leads.)
///
/// The leadership stays after this call returns, until `haven_resign` with the token or the
/// end of the session (expired or revoked); the next campaigner then leads. Fence writes with
/// the token (compare it, or check `haven_leader`).
///
/// `name` and `value` are borrowed for the call. Blocks as `wait_ms` says (and for the
/// commits). Errors: INVALID_ARGUMENT (also: this session already leads or campaigns in the
/// election), SESSION_EXPIRED (the session is gone), LOCK_NOT_HELD (another thread withdrew
/// the campaign), TIMEOUT, UNAVAILABLE. On error `*token` is not written. Thread safe.
#[no_mangle]
pub extern "C" fn haven_campaign(
    h: *mut haven_t,
    session: *mut haven_session_t,
    name: *const c_char,
    value: *const u8,
    value_len: usize,
    wait_ms: i64,
    token: *mut u64,
) -> c_int {
    entry("haven_campaign", || {
        let h = handle(h)?;
        let session = self::session(session)?;
        let name = election_name(name)?;
        let value = election_value(value, value_len)?;
        let wait = match wait_ms {
            -1 => None,
            ms if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "wait_ms: {other} (-1: forever, >= 0: milliseconds)"
                )))
            }
        };
        let token = args::out("token", token)?;
        let client = h.client();
        let Some(wait) = wait else {
            *token = client.campaign(name, value, session)?.into_token().0;
            return Ok(());
        };
        let led = std::thread::scope(|scope| -> Result<FencingToken> {
            let (tx, rx) = bounded(1);
            let campaigner = std::thread::Builder::new()
                .name("haven-campaign".into())
                .spawn_scoped(scope, move || {
                    // A panic drops `tx` (the wait below ends) and is re-raised by the join,
                    // for `entry` to turn into HAVEN_ERR_INTERNAL.
                    let _ = tx.send(
                        client
                            .campaign(name, value, session)
                            .map(|l| l.into_token()),
                    );
                })
                .map_err(|e| Error::io("starting a campaign thread", e))?;
            let outcome = match rx.recv_timeout(wait) {
                Ok(result) => Some(result),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Err(panicked())),
            };
            let result = match outcome {
                Some(result) => result,
                // The wait passed: withdraw until the campaign call ends (it fails with
                // LockNotHeld once withdrawn, or returns the leadership if it led first).
                None => loop {
                    let _ = client.withdraw(name, session.id());
                    match rx.recv_timeout(WITHDRAW_RETRY) {
                        Ok(Err(e)) if e.code() == ErrorCode::LockNotHeld => {
                            break Err(Error::Timeout(format!(
                                "not leading within {wait_ms} ms; the campaign was withdrawn"
                            )))
                        }
                        Ok(result) => break result,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break Err(panicked()),
                    }
                },
            };
            if let Err(panic) = campaigner.join() {
                std::panic::resume_unwind(panic);
            }
            result
        })?;
        *token = led.0;
        Ok(())
    })
}

/// Publish `value` (at most 4096 bytes) as the leader's value of election `name`, if `token`
/// leads it. Errors: LOCK_NOT_HELD (`token` does not lead: resigned, or its session ended),
/// INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT. Inputs are borrowed for the call. Blocks until
/// committed. Thread safe.
#[no_mangle]
pub extern "C" fn haven_proclaim(
    h: *mut haven_t,
    name: *const c_char,
    token: u64,
    value: *const u8,
    value_len: usize,
) -> c_int {
    entry("haven_proclaim", || {
        let h = handle(h)?;
        let name = election_name(name)?;
        let value = election_value(value, value_len)?;
        h.client().proclaim(name, FencingToken(token), value)
    })
}

/// The leader with `token` steps down from election `name`; the next campaigner leads.
/// Errors: LOCK_NOT_HELD (`token` does not lead it), INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT.
/// `name` is borrowed for the call. Blocks until committed. Thread safe.
#[no_mangle]
pub extern "C" fn haven_resign(h: *mut haven_t, name: *const c_char, token: u64) -> c_int {
    entry("haven_resign", || {
        let h = handle(h)?;
        let name = election_name(name)?;
        h.client().resign(name, FencingToken(token))
    })
}

/// Who leads election `name`, read linearizably: `*found` 1 and the leader's value in `*value`
/// (free with `haven_buf_free`), its token in `*token` and its session's id in `*session`;
/// or `*found` 0 (nobody campaigns in it) and `*value` empty, `*token` and `*session` 0.
/// `value`, `token` and `session` may be NULL when not wanted; `found` may not. Errors:
/// INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT; outputs are not written on error. Blocks for a
/// quorum round trip. Thread safe.
#[no_mangle]
pub extern "C" fn haven_leader(
    h: *mut haven_t,
    name: *const c_char,
    value: *mut haven_buf_t,
    token: *mut u64,
    session: *mut u64,
    found: *mut c_int,
) -> c_int {
    entry("haven_leader", || {
        let h = handle(h)?;
        let name = election_name(name)?;
        let found = args::out("found", found)?;
        let leader = h.client().leader(name)?;
        *found = c_int::from(leader.is_some());
        let ElectionLeader {
            value: v,
            token: t,
            session: s,
        } = leader.unwrap_or(ElectionLeader {
            value: Vec::new(),
            token: FencingToken(0),
            session: crate::sm::SessionId(0),
        });
        if let Some(out) = args::optional_out(token) {
            *out = t.0;
        }
        if let Some(out) = args::optional_out(session) {
            *out = s.0;
        }
        if let Some(out) = args::optional_out(value) {
            *out = haven_buf_t::from_vec(v);
        }
        Ok(())
    })
}

/// `haven_leader_change_t::kind`: `value`, `token`, `session` lead from `revision` on.
pub const HAVEN_OBSERVE_LEADER: c_int = 0;
/// Nobody leads from `revision` on.
pub const HAVEN_OBSERVE_NO_LEADER: c_int = 1;
/// The observer ended; the last call. `code` and `message` say why (`HAVEN_ERR_UNAVAILABLE`:
/// no member reachable to resume on).
pub const HAVEN_OBSERVE_END: c_int = 2;

/// One call of an observe callback. Every pointer in it is valid only during the call: copy
/// what you keep.
#[repr(C)]
pub struct haven_leader_change_t {
    /// `HAVEN_OBSERVE_LEADER`, `HAVEN_OBSERVE_NO_LEADER` or `HAVEN_OBSERVE_END`.
    pub kind: c_int,
    /// The revision (log index) of the change; of the first call, of the read it came from.
    pub revision: u64,
    /// The leader's value (`LEADER`; NULL when empty).
    pub value: *const u8,
    /// Its length.
    pub value_len: usize,
    /// The leadership's fencing token (`LEADER`; 0 otherwise).
    pub token: u64,
    /// The leader's session id (`LEADER`; 0 otherwise).
    pub session: u64,
    /// 1: changes between the previous call and this one may be missing (the observer had to
    /// read the leader again); 0 otherwise, always on the first call.
    pub after_gap: c_int,
    /// `HAVEN_OK`, or for `HAVEN_OBSERVE_END` the code that ended it.
    pub code: c_int,
    /// For `HAVEN_OBSERVE_END`: why, NUL-terminated (never NULL then); NULL otherwise.
    pub message: *const c_char,
}

/// An observe callback: `user_data` as given to `haven_observe`, `change` valid only during
/// the call.
pub type haven_observe_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, change: *const haven_leader_change_t)>;

/// A running observer (opaque): stop it and free it with `haven_observe_cancel`.
pub struct haven_observe_t {
    delivery: CallbackThread,
}

/// The host's callback and pointer, moved to the delivery thread.
struct Target {
    function: unsafe extern "C" fn(*mut c_void, *const haven_leader_change_t),
    user_data: *mut c_void,
}

// SAFETY: the header makes the host promise that `user_data` may be used from the observer's
// thread; haven never dereferences it.
unsafe impl Send for Target {}

impl Target {
    fn call(&self, change: &haven_leader_change_t) {
        // SAFETY: the host's function, called as its contract says; `change` outlives the
        // call.
        unsafe { (self.function)(self.user_data, change) }
    }

    fn change(&self, c: &LeaderChange) {
        let empty: &[u8] = &[];
        let (kind, value, token, session) = match &c.leader {
            Some(l) => (HAVEN_OBSERVE_LEADER, &l.value[..], l.token.0, l.session.0),
            None => (HAVEN_OBSERVE_NO_LEADER, empty, 0, 0),
        };
        self.call(&haven_leader_change_t {
            kind,
            revision: c.revision.0,
            value: if value.is_empty() {
                std::ptr::null()
            } else {
                value.as_ptr()
            },
            value_len: value.len(),
            token,
            session,
            after_gap: c_int::from(c.after_gap),
            code: super::HAVEN_OK,
            message: std::ptr::null(),
        });
    }

    fn end(&self, code: ErrorCode, message: &str) {
        let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
        self.call(&haven_leader_change_t {
            kind: HAVEN_OBSERVE_END,
            revision: 0,
            value: std::ptr::null(),
            value_len: 0,
            token: 0,
            session: 0,
            after_gap: 0,
            code: code as c_int,
            message: text.as_ptr(),
        });
    }
}

/// The delivery thread: changes to callbacks until the observer ends or is cancelled. Checks
/// `stopped` before every call, so no callback starts after a cancel was asked.
fn deliver(
    observer: ElectionObserver,
    target: Target,
    stop: Receiver<()>,
    stopped: Arc<AtomicBool>,
) {
    let changes = observer.receiver().clone();
    loop {
        let change = select! {
            recv(stop) -> _ => break,
            recv(changes) -> change => change,
        };
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        match change {
            Ok(Ok(c)) => target.change(&c),
            Ok(Err(e)) => {
                target.end(e.code(), &e.to_string());
                break;
            }
            Err(_) => {
                target.end(ErrorCode::Closed, "the observer ended");
                break;
            }
        }
    }
    // Dropping the observer stops and joins its thread.
    drop(observer);
}

/// Observe election `name`: `callback(user_data, change)` is called with the leader now (the
/// first call), then with every change of leader (a new leader, a proclaim, nobody), in
/// order, each with its revision. Puts the observer in `*out`; stop it with
/// `haven_observe_cancel`.
///
/// **Threads.** As `haven_watch`: every call of `callback` for this observer is made on one
/// thread that haven starts for it (never on the caller's thread, never while haven holds an
/// internal lock), one call at a time. `user_data` is passed back untouched and must be
/// usable from that thread. The callback must not unwind or longjmp out; it may call any
/// haven function, `haven_observe_cancel` of this observer included.
///
/// **End.** `HAVEN_OBSERVE_END` is the last call; the observer must still be freed with
/// `haven_observe_cancel`. After `haven_observe_cancel` no call starts.
///
/// `name` is borrowed for the call. Blocks until the leader was read and the watch opened.
/// Errors: INVALID_ARGUMENT (NULL callback, bad name), UNAVAILABLE, TIMEOUT. On error `*out`
/// is not written and the callback is never called. Thread safe. Cancel every observer of
/// `h` before closing `h`.
#[no_mangle]
pub extern "C" fn haven_observe(
    h: *mut haven_t,
    name: *const c_char,
    callback: haven_observe_fn,
    user_data: *mut c_void,
    out: *mut *mut haven_observe_t,
) -> c_int {
    entry("haven_observe", || {
        let h = handle(h)?;
        let name = election_name(name)?;
        let function = callback.ok_or_else(|| Error::InvalidArgument("callback is NULL".into()))?;
        let out = args::out("out", out)?;
        let observer = h.client().observe(name)?;
        let target = Target {
            function,
            user_data,
        };
        let delivery = CallbackThread::spawn("haven-observe-callback", move |stop, stopped| {
            deliver(observer, target, stop, stopped)
        })?;
        *out = Box::into_raw(Box::new(haven_observe_t { delivery }));
        Ok(())
    })
}

/// Stop observer `o` and free it (NULL is ignored). When it returns, no callback of `o` runs
/// and none will start. Blocks until the observer's thread has ended (at most one callback's
/// duration, plus a few milliseconds), except when called from inside `o`'s own callback: it
/// then returns at once, no further callback starts, and the thread ends by itself right
/// after the callback returns. May be called from any thread; not twice for one observer.
#[no_mangle]
pub extern "C" fn haven_observe_cancel(o: *mut haven_observe_t) {
    let _ = entry("haven_observe_cancel", || {
        if o.is_null() {
            return Ok(());
        }
        // SAFETY: `o` came from haven_observe and this is its last use (the header's contract).
        unsafe { Box::from_raw(o) }.delivery.stop();
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::HAVEN_ERR_INVALID_ARGUMENT;

    #[test]
    fn null_and_bad_arguments_are_refused_before_anything_happens() {
        let mut token = 5u64;
        assert_eq!(
            haven_campaign(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                c"x".as_ptr(),
                std::ptr::null(),
                0,
                -1,
                &mut token
            ),
            HAVEN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(token, 5);
        let mut found = 7;
        assert_eq!(
            haven_leader(
                std::ptr::null_mut(),
                c"x".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut found
            ),
            HAVEN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(found, 7);
        assert_eq!(
            haven_resign(std::ptr::null_mut(), c"x".as_ptr(), 1),
            HAVEN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            haven_proclaim(std::ptr::null_mut(), c"x".as_ptr(), 1, std::ptr::null(), 0),
            HAVEN_ERR_INVALID_ARGUMENT
        );
        let mut out: *mut haven_observe_t = std::ptr::null_mut();
        assert_eq!(
            haven_observe(
                std::ptr::null_mut(),
                c"x".as_ptr(),
                None,
                std::ptr::null_mut(),
                &mut out
            ),
            HAVEN_ERR_INVALID_ARGUMENT
        );
        assert!(out.is_null());
        haven_observe_cancel(std::ptr::null_mut());
    }

    #[test]
    fn names_and_values_are_bounded() {
        assert!(election_name(c"".as_ptr()).is_err());
        assert!(election_name(std::ptr::null()).is_err());
        let long = CString::new(vec![b'a'; MAX_LOCK_NAME_BYTES + 1]).unwrap();
        assert!(election_name(long.as_ptr()).is_err());
        assert!(election_value(std::ptr::null(), 1).is_err());
        let big = vec![0u8; MAX_ELECTION_VALUE_BYTES + 1];
        assert!(election_value(big.as_ptr(), big.len()).is_err());
        assert_eq!(election_value(std::ptr::null(), 0).unwrap(), b"");
    }
}
