//! Watches: `haven_watch` hands every change under a prefix to a C callback, on a thread of
//! its own, until `haven_watch_cancel`.
//!
//! Each watch has two threads: the Rust [`Watch`]'s pump (it keeps the watch alive across the
//! loss of a member) and a *delivery* thread made here, which receives the pump's notices and
//! calls the host's callback, one event per call, holding no lock of haven's while it does.
//! Cancel tells the delivery thread to stop (a channel, so it never waits on a poll), then
//! joins it; from inside the callback it cannot join its own thread, so it only tells it to
//! stop and lets it end by itself right after the callback returns.
//!
//! [`Watch`]: crate::client::Watch

use super::args::{self, handle};
use super::{entry, haven_t};
use crate::client::{EventKind, Watch, WatchEvent, WatchNotice};
use crate::error::{Error, ErrorCode};
use crate::limits::MAX_KEY_BYTES;
use crate::LogIndex;
use crossbeam_channel::{bounded, select, Receiver, Sender};
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};

/// `haven_watch_event_t::kind`: `key` was set to `value`.
pub const HAVEN_WATCH_PUT: c_int = 0;
/// `key` was deleted.
pub const HAVEN_WATCH_DELETE: c_int = 1;
/// Nothing more under the prefix up to and including `revision` (no key).
pub const HAVEN_WATCH_PROGRESS: c_int = 2;
/// The watch ended; the last call. `code` says why: `HAVEN_ERR_COMPACTED` (it needs revisions
/// the member no longer keeps, `revision` is the oldest it has; or it fell further behind than
/// the member buffers for it, `revision` 0): re-read the keys and watch again from the read's
/// revision + 1. Any other code: it could not go on (`HAVEN_ERR_UNAVAILABLE`: no member
/// reachable to resume on within 30 s); `message` says why.
pub const HAVEN_WATCH_END: c_int = 3;

/// One call of a watch callback. Every pointer in it is valid only during the call: copy what
/// you keep.
#[repr(C)]
pub struct haven_watch_event_t {
    /// `HAVEN_WATCH_PUT`, `HAVEN_WATCH_DELETE`, `HAVEN_WATCH_PROGRESS` or `HAVEN_WATCH_END`.
    pub kind: c_int,
    /// The revision (log index) of the change; of `PROGRESS`: everything up to it was
    /// delivered. The events of one revision come in consecutive calls, in the order the
    /// entry made them.
    pub revision: u64,
    /// The key (`PUT`, `DELETE`; NULL otherwise).
    pub key: *const u8,
    /// Its length.
    pub key_len: usize,
    /// The new value (`PUT`; NULL when empty).
    pub value: *const u8,
    /// Its length.
    pub value_len: usize,
    /// `HAVEN_OK`, or for `HAVEN_WATCH_END` the code that ended the watch.
    pub code: c_int,
    /// For `HAVEN_WATCH_END`: why, NUL-terminated (never NULL then); NULL otherwise.
    pub message: *const c_char,
}

/// A watch callback: `user_data` as given to `haven_watch`, `event` valid only during the
/// call.
pub type haven_watch_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const haven_watch_event_t)>;

/// A running watch (opaque): stop it and free it with `haven_watch_cancel`.
pub struct haven_watch_t {
    delivery: CallbackThread,
}

/// The thread that calls a host's callback (a watch's, an observer's), and how to stop it.
pub(super) struct CallbackThread {
    stop: Option<Sender<()>>,
    stopped: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl CallbackThread {
    /// Start thread `name` running `deliver(stop, stopped)`: `stop` disconnects and `stopped`
    /// turns true when [`CallbackThread::stop`] is called. A callback that unwinds anyway ends
    /// the delivery here, not the process.
    pub(super) fn spawn(
        name: &str,
        deliver: impl FnOnce(Receiver<()>, Arc<AtomicBool>) + Send + 'static,
    ) -> crate::error::Result<CallbackThread> {
        let (stop_tx, stop_rx) = bounded(1);
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    deliver(stop_rx, flag)
                }));
            })
            .map_err(|e| Error::io(format!("starting thread {name}"), e))?;
        let thread_id = thread.thread().id();
        Ok(CallbackThread {
            stop: Some(stop_tx),
            stopped,
            thread: Some(thread),
            thread_id,
        })
    }

    /// Stop it: no callback starts after this returns. Joins the thread, unless called from
    /// inside the callback (on the thread itself), which then ends right after it returns.
    pub(super) fn stop(mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if std::thread::current().id() != self.thread_id {
                let _ = thread.join();
            }
        }
    }
}

/// The host's callback and pointer, moved to the delivery thread.
struct Target {
    function: unsafe extern "C" fn(*mut c_void, *const haven_watch_event_t),
    user_data: *mut c_void,
}

// SAFETY: the header makes the host promise that `user_data` may be used from the watch's
// thread; haven never dereferences it.
unsafe impl Send for Target {}

impl Target {
    fn call(&self, event: &haven_watch_event_t) {
        // SAFETY: the host's function, called as its contract says; `event` outlives the call.
        // A callback must not unwind; if it does anyway, this thread's catch_unwind stops it.
        unsafe { (self.function)(self.user_data, event) }
    }

    fn change(&self, e: &WatchEvent) {
        let (kind, value): (c_int, &[u8]) = match e.kind {
            EventKind::Put => (HAVEN_WATCH_PUT, &e.value),
            EventKind::Delete => (HAVEN_WATCH_DELETE, &[]),
            // A watch of keys (the only kind this ABI opens) never carries these.
            EventKind::Leader { .. } | EventKind::NoLeader | EventKind::MapEpoch { .. } => return,
        };
        self.call(&haven_watch_event_t {
            kind,
            revision: e.revision.0,
            key: e.key.as_ptr(),
            key_len: e.key.len(),
            value: if value.is_empty() {
                std::ptr::null()
            } else {
                value.as_ptr()
            },
            value_len: value.len(),
            code: super::HAVEN_OK,
            message: std::ptr::null(),
        });
    }

    fn progress(&self, revision: LogIndex) {
        self.call(&empty(
            HAVEN_WATCH_PROGRESS,
            revision.0,
            super::HAVEN_OK,
            None,
        ));
    }

    fn end(&self, revision: u64, code: ErrorCode, message: &str) {
        let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
        self.call(&empty(
            HAVEN_WATCH_END,
            revision,
            code as c_int,
            Some(&text),
        ));
    }
}

fn empty(
    kind: c_int,
    revision: u64,
    code: c_int,
    message: Option<&CString>,
) -> haven_watch_event_t {
    haven_watch_event_t {
        kind,
        revision,
        key: std::ptr::null(),
        key_len: 0,
        value: std::ptr::null(),
        value_len: 0,
        code,
        message: message.map_or(std::ptr::null(), |m| m.as_ptr()),
    }
}

/// The delivery thread: notices to callbacks until the watch ends or is cancelled. Checks
/// `stopped` before every call, so no callback starts after a cancel was asked.
fn deliver(watch: Watch, target: Target, stop: Receiver<()>, stopped: Arc<AtomicBool>) {
    let receiver = watch.receiver().clone();
    let go_on = || !stopped.load(Ordering::SeqCst);
    loop {
        let notice = select! {
            recv(stop) -> _ => break,
            recv(receiver) -> notice => notice,
        };
        if !go_on() {
            break;
        }
        match notice {
            Ok(Ok(WatchNotice::Events { events, .. })) => {
                for e in &events {
                    if !go_on() {
                        break;
                    }
                    target.change(e);
                }
            }
            Ok(Ok(WatchNotice::Progress { revision })) => target.progress(revision),
            Ok(Ok(WatchNotice::Compacted { oldest })) => {
                target.end(
                    oldest.0,
                    ErrorCode::Compacted,
                    &format!(
                        "compacted: the member keeps revisions from {oldest} on; re-read and \
                         watch again from the read's revision + 1"
                    ),
                );
                break;
            }
            Ok(Ok(WatchNotice::Overflow)) => {
                target.end(
                    0,
                    ErrorCode::Compacted,
                    "overflow: the watch fell further behind than the member buffers for it; \
                     re-read and watch again from the read's revision + 1",
                );
                break;
            }
            Ok(Err(e)) => {
                target.end(0, e.code(), &e.to_string());
                break;
            }
            // The pump ended without a last notice (it only does so when cancelled).
            Err(_) => {
                target.end(0, ErrorCode::Closed, "the watch ended");
                break;
            }
        }
    }
    // Dropping the watch cancels it and joins its pump.
    drop(watch);
}

/// Watch every key starting with `prefix` (may be empty: every key) from revision
/// `from_revision` (0: from now on), calling `callback(user_data, event)` for each change, in
/// revision order, with no gap and no duplicate (the watch resumes on another member when its
/// member goes away). Puts the watch in `*out`; stop it with `haven_watch_cancel`.
///
/// **Threads.** Every call of `callback` for this watch is made on one thread that haven
/// starts for the watch (never on the caller's thread, never while haven holds an internal
/// lock), one call at a time. A slow callback holds up only this watch (a member buffers a
/// few thousand events, then ends the watch with `HAVEN_WATCH_END` / `HAVEN_ERR_COMPACTED`).
/// `user_data` is passed back untouched and must be usable from that thread. The callback
/// must not unwind or longjmp out; it may call any haven function, `haven_watch_cancel` of
/// this watch included.
///
/// **End.** `HAVEN_WATCH_END` is the last call (see it for the codes); the watch must still
/// be freed with `haven_watch_cancel`. After `haven_watch_cancel` no call starts.
///
/// `prefix` is borrowed for the call. Blocks until a member opened the watch. Errors:
/// INVALID_ARGUMENT (NULL callback, oversize prefix), UNAVAILABLE, TIMEOUT, COMPACTED is not
/// returned here (it comes as the END event). On error `*out` is not written and the callback
/// is never called. Thread safe. Cancel every watch of `h` before closing `h`.
#[no_mangle]
pub extern "C" fn haven_watch(
    h: *mut haven_t,
    prefix: *const u8,
    prefix_len: usize,
    from_revision: u64,
    callback: haven_watch_fn,
    user_data: *mut c_void,
    out: *mut *mut haven_watch_t,
) -> c_int {
    entry("haven_watch", || {
        let h = handle(h)?;
        let prefix = args::bytes("prefix", prefix, prefix_len, MAX_KEY_BYTES)?;
        let function = callback.ok_or_else(|| Error::InvalidArgument("callback is NULL".into()))?;
        let out = args::out("out", out)?;
        let watch = h.client().watch_prefix(prefix, LogIndex(from_revision))?;
        let target = Target {
            function,
            user_data,
        };
        let delivery = CallbackThread::spawn("haven-watch-callback", move |stop, stopped| {
            deliver(watch, target, stop, stopped)
        })?;
        *out = Box::into_raw(Box::new(haven_watch_t { delivery }));
        Ok(())
    })
}

/// Stop watch `w` and free it (NULL is ignored). When it returns, no callback of `w` runs and
/// none will start. Blocks until the watch's thread has ended (at most one callback's
/// duration, plus a few milliseconds), except when called from inside `w`'s own callback: it
/// then returns at once, no further callback starts, and the thread ends by itself right
/// after the callback returns. May be called from any thread; not twice for one watch.
#[no_mangle]
pub extern "C" fn haven_watch_cancel(w: *mut haven_watch_t) {
    let _ = entry("haven_watch_cancel", || {
        if w.is_null() {
            return Ok(());
        }
        // SAFETY: `w` came from haven_watch and this is its last use (the header's contract).
        unsafe { Box::from_raw(w) }.delivery.stop();
        Ok(())
    });
}
