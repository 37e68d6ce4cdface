//! Watches, client side: [`Client::watch`] returns a [`Watch`], an iterator and a channel
//! receiver of [`WatchNotice`]s.
//!
//! A watch is served by the member the client talks to. Its events arrive as pushes (in
//! process: a channel from the member's watch thread; remote: pushed frames on the client's
//! connection, routed by watch id in `remote.rs`). A [`Reader`] turns pushes into notices and
//! keeps the watch alive across the loss of that member: when the pushes stop (the connection
//! broke, the member shut down or refused), it opens the watch again, on another member if
//! need be, from the last revision it delivered + 1. Revisions at or below the last delivered
//! one are dropped there, so the user sees no gap and no duplicate. It gives up after
//! [`WATCH_RESUME_TIMEOUT`] without a member (an `Unavailable` item, then the end).
//!
//! Who runs the reader: a *pump* thread per watch that hands each notice to the user's
//! channel, for remote clients (so that a resume never holds up the user's `next_timeout`)
//! and for any watch whose [`Watch::receiver`] was asked for. An in-process watch read with
//! the iterator or [`Watch::next_timeout`] has no pump: the user's thread reads the member's
//! pushes itself, one hand-off per push (a delivery round's revisions together) instead of
//! one per push to the pump and then one per revision to the user; with 100 watchers at
//! 10,000 revisions/s the pumps' million hand-offs a second were most of a watch's cost.

use super::{Client, Response};
use crate::error::{Error, ErrorCode, Result};
use crate::proto::{ReadMode, ReadOp, WatchEnd, WatchEvent, WatchPush, WatchSpec};
use crate::sm::RangePage;
use crate::types::LogIndex;
use crossbeam_channel::{
    bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a watch keeps trying to resume on some member before it ends with `Unavailable`.
pub const WATCH_RESUME_TIMEOUT: Duration = Duration::from_secs(30);

/// Notices a [`Watch`] holds for its user before its pump waits (its member then buffers).
const NOTICE_BUFFER: usize = 4096;

/// How often the pump looks at its cancel flag while waiting.
const PUMP_POLL: Duration = Duration::from_millis(20);

/// What a watch delivers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchNotice {
    /// Every event of one revision in the watched range, in the order the entry made them.
    Events {
        /// The revision (log index).
        revision: LogIndex,
        /// The events (at least one).
        events: Vec<WatchEvent>,
    },
    /// Nothing more in the range up to and including `revision`.
    Progress {
        /// Everything up to here was delivered.
        revision: LogIndex,
    },
    /// The watch needs revisions the member no longer has (it started too far back, or a
    /// member it resumed on lacked them): re-read, then watch from the read's revision + 1.
    /// The last notice.
    Compacted {
        /// The oldest revision that member could deliver from.
        oldest: LogIndex,
    },
    /// The watch fell further behind than the member's buffer for it allows: re-read and
    /// watch again. The last notice.
    Overflow,
}

/// One member's pushes for one watch, as a backend opens it.
pub(crate) struct WatchStream {
    /// The pushes; disconnected when that member or connection is gone.
    pub(crate) next: Box<dyn FnMut(Duration) -> std::result::Result<WatchPush, bool> + Send>,
    /// Close the watch on the member (best effort).
    pub(crate) cancel: Box<dyn FnOnce() + Send>,
}

/// A watch: iterate it (blocking), or receive from [`Watch::receiver`]. Items are
/// `Ok(notice)`, or one last `Err` when it cannot go on (no member within
/// [`WATCH_RESUME_TIMEOUT`], or refused). Dropping it cancels it.
pub struct Watch {
    /// The reader while the user's thread runs it (no pump); `None` once a pump has it or the
    /// watch was cancelled.
    direct: Mutex<Option<Reader>>,
    /// The notices a pump hands over, once there is one (see the module doc).
    notices: OnceLock<Receiver<Result<WatchNotice>>>,
    cancelled: Arc<AtomicBool>,
    pump: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = match self.notices.get() {
            Some(notices) => notices.len(),
            None => self
                .direct
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map_or(0, |r| r.pending.len()),
        };
        f.debug_struct("Watch").field("queued", &queued).finish()
    }
}

impl Watch {
    fn new(reader: Reader, cancelled: Arc<AtomicBool>) -> Watch {
        Watch {
            direct: Mutex::new(Some(reader)),
            notices: OnceLock::new(),
            cancelled,
            pump: Mutex::new(None),
        }
    }

    /// The channel the notices arrive on (for `select!` with other channels). It disconnects
    /// after the last notice. Asking for it gives the watch a pump thread (see the module
    /// doc); the iterator and [`Watch::next_timeout`] then read from it too.
    pub fn receiver(&self) -> &Receiver<Result<WatchNotice>> {
        self.notices.get_or_init(|| self.start_pump())
    }

    /// Hand the reader to a pump thread; the receiver of its notices.
    fn start_pump(&self) -> Receiver<Result<WatchNotice>> {
        let (tx, rx) = bounded(NOTICE_BUFFER);
        let reader = self
            .direct
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Cancelled already: the channel is disconnected from the start.
        let Some(reader) = reader else {
            return rx;
        };
        let cancelled = Arc::clone(&self.cancelled);
        // If the thread cannot start, the pump runs nowhere and its channel says so.
        let spawned = std::thread::Builder::new()
            .name("haven-watch-pump".into())
            .spawn({
                let tx = tx.clone();
                move || pump(reader, &tx, &cancelled)
            });
        match spawned {
            Ok(handle) => {
                *self.pump.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
            }
            Err(e) => {
                let _ = tx.try_send(Err(Error::io("spawning a watch thread", e)));
            }
        }
        rx
    }

    /// The next notice within `timeout`: `None` both at the end and on timeout (tell them
    /// apart with [`Watch::receiver`]).
    pub fn next_timeout(&self, timeout: Duration) -> Option<Result<WatchNotice>> {
        if let Some(notices) = self.notices.get() {
            return notices.recv_timeout(timeout).ok();
        }
        // Taken at the first wait; `Some(None)`: no deadline (a timeout beyond the clock's).
        let mut deadline: Option<Option<Instant>> = None;
        let mut polled = false;
        loop {
            let mut direct = self.direct.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(reader) = direct.as_mut() else {
                // A pump took the reader (or the watch was cancelled) meanwhile.
                drop(direct);
                let left = match deadline {
                    Some(Some(deadline)) => deadline.saturating_duration_since(Instant::now()),
                    _ => timeout,
                };
                return self.receiver().recv_timeout(left).ok();
            };
            if let Some(notice) = reader.pending.pop_front() {
                return Some(notice);
            }
            if reader.done {
                return None;
            }
            if deadline.is_none() && !polled {
                // What is there already (an in-process watch's next revision, mostly) is taken
                // without reading the clock.
                polled = true;
                reader.step(Duration::ZERO);
                continue;
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert_with(|| now.checked_add(timeout));
            let left = match deadline {
                Some(deadline) if deadline <= now => return None,
                Some(deadline) => deadline - now,
                None => timeout,
            };
            // In slices, so that a `receiver()` on another thread waits at most one.
            reader.step(left.min(PUMP_POLL));
        }
    }

    /// Cancel the watch now (also done on drop).
    pub fn cancel(&mut self) {
        self.cancelled.store(true, Ordering::SeqCst);
        // Dropping the reader closes its stream.
        drop(
            self.direct
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let pump = self
            .pump
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(pump) = pump {
            let _ = pump.join();
        }
    }
}

impl Iterator for Watch {
    type Item = Result<WatchNotice>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(notices) = self.notices.get() {
            return notices.recv().ok();
        }
        let direct = self
            .direct
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(reader) = direct.as_mut() else {
            return self.receiver().recv().ok();
        };
        loop {
            if let Some(notice) = reader.pending.pop_front() {
                return Some(notice);
            }
            if reader.done {
                return None;
            }
            reader.step(PUMP_POLL);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Client {
    /// Watch `spec` (see [`WatchSpec::prefix`], [`WatchSpec::range`]): every change at or
    /// after `spec.from_revision` (0: from now on), in order, a revision's events together.
    /// To start from a consistent read, use [`Client::range_at`] and watch from its
    /// revision plus one. Fails at once with `InvalidArgument` for a bad range, or when no
    /// member can open it within the request timeout.
    pub fn watch(&self, spec: WatchSpec) -> Result<Watch> {
        spec.validate()?;
        let deadline = self.deadline();
        let stream = self.open_watch_stream(&spec, deadline)?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            client: self.clone(),
            spec,
            next: None,
            stream: Some(stream),
            resuming: None,
            pending: VecDeque::new(),
            done: false,
        };
        let watch = Watch::new(reader, cancelled);
        if !self.inner.backend.in_process() {
            watch.receiver();
        }
        Ok(watch)
    }

    /// Watch partition map `name`'s changes from `from_revision` (0: from now on): one
    /// [`crate::proto::EventKind::MapEpoch`] event per change of the map (a join, a leave, a
    /// weight), each with the new epoch and the slots it moved
    /// ([`WatchEvent::map_moves`]), in order, with no gap across the loss of a member (as
    /// [`Client::watch`]). To start from a known epoch, read the map's revision with a
    /// linearizable read first (any read's revision will do, e.g. [`Client::range_at`]).
    pub fn watch_map(&self, name: &str, from_revision: LogIndex) -> Result<Watch> {
        self.watch(WatchSpec::map(name, from_revision))
    }

    /// Watch every key starting with `prefix` from `from_revision` (0: from now on).
    pub fn watch_prefix(&self, prefix: &[u8], from_revision: LogIndex) -> Result<Watch> {
        self.watch(WatchSpec::prefix(prefix, from_revision))
    }

    /// [`Client::range`], with the revision the page reflects: the state after every entry up
    /// to it, so "read, then watch from revision + 1" sees every later change exactly once.
    pub fn range_at(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<(RangePage, LogIndex)> {
        let op = ReadOp::RangeAt {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
        };
        let mode: ReadMode = self.inner.options.read_mode;
        match self.read(op, mode)? {
            Response::RangeAt { page, revision } => Ok((page, revision)),
            other => Err(super::unexpected(&other)),
        }
    }

    /// [`Client::scan_prefix`] with the revision it reflects (see [`Client::range_at`]).
    pub fn scan_prefix_at(&self, prefix: &[u8], limit: u32) -> Result<(RangePage, LogIndex)> {
        let end = crate::sm::prefix_end(prefix);
        self.range_at(prefix, end.as_deref(), limit)
    }

    /// Open the watch on some member, retrying (another member) until `deadline`.
    fn open_watch_stream(&self, spec: &WatchSpec, deadline: Instant) -> Result<WatchStream> {
        let mut backoff = Duration::from_millis(2);
        loop {
            let error = match self.inner.backend.watch(spec, deadline) {
                Ok(stream) => return Ok(stream),
                Err(e) => e,
            };
            if !matches!(error.code(), ErrorCode::Unavailable | ErrorCode::Timeout)
                || Instant::now() + backoff >= deadline
            {
                return Err(error);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(super::MAX_BACKOFF);
        }
    }
}

/// Runs a watch's reader on its own thread, handing each notice to the user's channel (see
/// the module doc).
fn pump(mut reader: Reader, tx: &Sender<Result<WatchNotice>>, cancelled: &AtomicBool) {
    loop {
        while let Some(notice) = reader.pending.pop_front() {
            if !deliver(tx, notice, cancelled) {
                return;
            }
        }
        if reader.done || cancelled.load(Ordering::SeqCst) {
            return;
        }
        reader.step(PUMP_POLL);
    }
}

/// Hand a notice to the user, waiting while their buffer is full; false if the watch was
/// dropped meanwhile.
fn deliver(
    tx: &Sender<Result<WatchNotice>>,
    notice: Result<WatchNotice>,
    cancelled: &AtomicBool,
) -> bool {
    // Most notices find room: no deadline (a clock read) for those.
    let mut notice = match tx.try_send(notice) {
        Ok(()) => return true,
        Err(TrySendError::Full(back)) => back,
        Err(TrySendError::Disconnected(_)) => return false,
    };
    loop {
        match tx.send_timeout(notice, PUMP_POLL) {
            Ok(()) => return true,
            Err(SendTimeoutError::Timeout(back)) => {
                if cancelled.load(Ordering::SeqCst) {
                    return false;
                }
                notice = back;
            }
            Err(SendTimeoutError::Disconnected(_)) => return false,
        }
    }
}

/// Where a watch without a member is in opening it again.
struct Resuming {
    /// When it stops trying ([`WATCH_RESUME_TIMEOUT`] after the loss).
    give_up: Instant,
    /// The next attempt's earliest time.
    retry_at: Instant,
    backoff: Duration,
}

/// Turns one watch's pushes into notices, resuming it on another member when its member is
/// lost (see the module doc).
struct Reader {
    client: Client,
    spec: WatchSpec,
    /// The next revision to deliver (`None` until the first push says where "now" is).
    next: Option<LogIndex>,
    /// The member's pushes; `None` while resuming or once done.
    stream: Option<WatchStream>,
    resuming: Option<Resuming>,
    /// Notices made and not yet taken, in order.
    pending: VecDeque<Result<WatchNotice>>,
    /// No notice will follow those pending.
    done: bool,
}

/// What the reader does after a push.
enum Then {
    Continue,
    Resume,
    Stop,
}

impl Reader {
    /// Wait up to about `timeout` for the next push (or resume attempt) and queue what it
    /// makes in `pending`.
    fn step(&mut self, timeout: Duration) {
        if self.done {
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            self.try_resume(timeout);
            return;
        };
        let then = match (stream.next)(timeout) {
            Ok(push) => self.handle(push),
            Err(false) => Then::Continue,
            Err(true) => Then::Resume,
        };
        match then {
            Then::Continue => {}
            Then::Resume => {
                self.close();
                let now = Instant::now();
                self.resuming = Some(Resuming {
                    give_up: now + WATCH_RESUME_TIMEOUT,
                    retry_at: now,
                    backoff: Duration::from_millis(10),
                });
            }
            Then::Stop => {
                self.close();
                self.done = true;
            }
        }
    }

    /// Close the watch on its member, if it has one.
    fn close(&mut self) {
        if let Some(stream) = self.stream.take() {
            (stream.cancel)();
        }
    }

    /// One attempt to open the watch again from the next revision, on whichever member
    /// answers, once its backoff (waited here up to `timeout`) has passed.
    fn try_resume(&mut self, timeout: Duration) {
        let now = Instant::now();
        let Some(resuming) = self.resuming.as_mut() else {
            self.done = true;
            return;
        };
        if now < resuming.retry_at {
            std::thread::sleep((resuming.retry_at - now).min(timeout));
            return;
        }
        let mut spec = self.spec.clone();
        spec.from_revision = self.next.unwrap_or(self.spec.from_revision);
        let deadline = (now + self.client.inner.options.request_timeout).min(resuming.give_up);
        let error = match self.client.inner.backend.watch(&spec, deadline) {
            Ok(stream) => {
                self.stream = Some(stream);
                self.resuming = None;
                return;
            }
            Err(e) => e,
        };
        let retry = matches!(error.code(), ErrorCode::Unavailable | ErrorCode::Timeout);
        let now = Instant::now();
        if !retry || now + resuming.backoff >= resuming.give_up {
            self.pending.push_back(Err(Error::Unavailable(format!(
                "the watch could not be resumed from revision {}: {error}",
                spec.from_revision
            ))));
            self.resuming = None;
            self.done = true;
            return;
        }
        resuming.retry_at = now + resuming.backoff;
        resuming.backoff = (resuming.backoff * 2).min(Duration::from_millis(200));
    }

    fn handle(&mut self, push: WatchPush) -> Then {
        match push {
            WatchPush::Events(events) => {
                // One revision's events (what an in-process watch hands on): its notice takes
                // the vector as it is.
                let single = events
                    .first()
                    .map(|first| first.revision)
                    .filter(|&revision| events.iter().all(|e| e.revision == revision));
                if let Some(revision) = single {
                    // A resumed watch may repeat what was delivered already: drop it.
                    if !self.next.is_some_and(|next| revision < next) {
                        self.next = Some(revision.next());
                        self.pending
                            .push_back(Ok(WatchNotice::Events { revision, events }));
                    }
                    return Then::Continue;
                }
                let mut events = events.into_iter().peekable();
                // Bounded by the push's events.
                while let Some(first) = events.next() {
                    let revision = first.revision;
                    let mut group = vec![first];
                    while let Some(e) = events.next_if(|e| e.revision == revision) {
                        group.push(e);
                    }
                    // A resumed watch may repeat what was delivered already: drop it.
                    if self.next.is_some_and(|next| revision < next) {
                        continue;
                    }
                    self.next = Some(revision.next());
                    self.pending.push_back(Ok(WatchNotice::Events {
                        revision,
                        events: group,
                    }));
                }
                Then::Continue
            }
            WatchPush::Progress { revision } => {
                if self.next.is_some_and(|next| revision.next() < next) {
                    return Then::Continue;
                }
                self.next = Some(revision.next());
                self.pending
                    .push_back(Ok(WatchNotice::Progress { revision }));
                Then::Continue
            }
            WatchPush::Ended(WatchEnd::Compacted { oldest }) => {
                self.pending
                    .push_back(Ok(WatchNotice::Compacted { oldest }));
                Then::Stop
            }
            WatchPush::Ended(WatchEnd::Overflow) => {
                self.pending.push_back(Ok(WatchNotice::Overflow));
                Then::Stop
            }
            WatchPush::Ended(WatchEnd::Closed { code, message }) => {
                // A member shutting down (or too busy): go on elsewhere.
                if code == ErrorCode::Unavailable as i32 {
                    return Then::Resume;
                }
                let e = Error::from(crate::proto::WireError { code, message });
                self.pending.push_back(Err(e));
                Then::Stop
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.close();
    }
}

/// Wrap a crossbeam receiver of pushes as a stream's `next`.
pub(crate) fn receive_from(
    rx: Receiver<WatchPush>,
) -> Box<dyn FnMut(Duration) -> std::result::Result<WatchPush, bool> + Send> {
    Box::new(move |timeout| match rx.recv_timeout(timeout) {
        Ok(push) => Ok(push),
        Err(RecvTimeoutError::Timeout) => Err(false),
        Err(RecvTimeoutError::Disconnected) => Err(true),
    })
}
