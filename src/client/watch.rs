//! Watches, client side: [`Client::watch`] returns a [`Watch`], an iterator and a channel
//! receiver of [`WatchNotice`]s.
//!
//! A watch is served by the member the client talks to. Its events arrive as pushes (in
//! process: a channel from the member's watch thread; remote: pushed frames on the client's
//! connection, routed by watch id in `remote.rs`). A *pump* thread per watch turns pushes into
//! notices and keeps the watch alive across the loss of that member: when the pushes stop (the
//! connection broke, the member shut down or refused), it opens the watch again, on another
//! member if need be, from the last revision it delivered + 1. Revisions at or below the last
//! delivered one are dropped there, so the user sees no gap and no duplicate. It gives up after
//! [`WATCH_RESUME_TIMEOUT`] without a member (an `Unavailable` item, then the end).

use super::{Client, Response};
use crate::error::{Error, ErrorCode, Result};
use crate::proto::{ReadMode, ReadOp, WatchEnd, WatchEvent, WatchPush, WatchSpec};
use crate::sm::RangePage;
use crate::types::LogIndex;
use crossbeam_channel::{
    bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    notices: Receiver<Result<WatchNotice>>,
    cancelled: Arc<AtomicBool>,
    pump: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("queued", &self.notices.len())
            .finish()
    }
}

impl Watch {
    /// The channel the notices arrive on (for `select!` with other channels). It disconnects
    /// after the last notice.
    pub fn receiver(&self) -> &Receiver<Result<WatchNotice>> {
        &self.notices
    }

    /// The next notice within `timeout`: `None` both at the end and on timeout (tell them
    /// apart with [`Watch::receiver`]).
    pub fn next_timeout(&self, timeout: Duration) -> Option<Result<WatchNotice>> {
        self.notices.recv_timeout(timeout).ok()
    }

    /// Cancel the watch now (also done on drop).
    pub fn cancel(&mut self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(pump) = self.pump.take() {
            let _ = pump.join();
        }
    }
}

impl Iterator for Watch {
    type Item = Result<WatchNotice>;

    fn next(&mut self) -> Option<Self::Item> {
        self.notices.recv().ok()
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
        let (tx, rx) = bounded(NOTICE_BUFFER);
        let cancelled = Arc::new(AtomicBool::new(false));
        let pump = Pump {
            client: self.clone(),
            spec,
            next: None,
            tx,
            cancelled: Arc::clone(&cancelled),
        };
        let handle = std::thread::Builder::new()
            .name("haven-watch-pump".into())
            .spawn(move || pump.run(stream))
            .map_err(|e| Error::io("spawning a watch thread", e))?;
        Ok(Watch {
            notices: rx,
            cancelled,
            pump: Some(handle),
        })
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

/// The per-watch thread (see the module doc).
struct Pump {
    client: Client,
    spec: WatchSpec,
    /// The next revision to deliver (`None` until the first push says where "now" is).
    next: Option<LogIndex>,
    tx: Sender<Result<WatchNotice>>,
    cancelled: Arc<AtomicBool>,
}

/// What the pump does after a push.
enum Then {
    Continue,
    Resume,
    Stop,
}

impl Pump {
    fn run(mut self, mut stream: WatchStream) {
        loop {
            let then = loop {
                if self.cancelled.load(Ordering::SeqCst) {
                    break Then::Stop;
                }
                match (stream.next)(PUMP_POLL) {
                    Ok(push) => match self.handle(push) {
                        Then::Continue => {}
                        other => break other,
                    },
                    Err(false) => {}
                    Err(true) => break Then::Resume,
                }
            };
            (stream.cancel)();
            match then {
                Then::Stop => return,
                Then::Continue | Then::Resume => {}
            }
            stream = match self.resume() {
                Some(stream) => stream,
                None => return,
            };
        }
    }

    /// Open the watch again from the next revision, on whichever member answers.
    fn resume(&mut self) -> Option<WatchStream> {
        let mut spec = self.spec.clone();
        spec.from_revision = self.next.unwrap_or(self.spec.from_revision);
        let give_up = Instant::now() + WATCH_RESUME_TIMEOUT;
        let mut backoff = Duration::from_millis(10);
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                return None;
            }
            let deadline =
                (Instant::now() + self.client.inner.options.request_timeout).min(give_up);
            let error = match self.client.inner.backend.watch(&spec, deadline) {
                Ok(stream) => return Some(stream),
                Err(e) => e,
            };
            let retry = matches!(error.code(), ErrorCode::Unavailable | ErrorCode::Timeout);
            if !retry || Instant::now() + backoff >= give_up {
                self.deliver(Err(Error::Unavailable(format!(
                    "the watch could not be resumed from revision {}: {error}",
                    spec.from_revision
                ))));
                return None;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    fn handle(&mut self, push: WatchPush) -> Then {
        match push {
            WatchPush::Events(events) => {
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
                    let notice = WatchNotice::Events {
                        revision,
                        events: group,
                    };
                    if !self.deliver(Ok(notice)) {
                        return Then::Stop;
                    }
                }
                Then::Continue
            }
            WatchPush::Progress { revision } => {
                if self.next.is_some_and(|next| revision.next() < next) {
                    return Then::Continue;
                }
                self.next = Some(revision.next());
                if self.deliver(Ok(WatchNotice::Progress { revision })) {
                    Then::Continue
                } else {
                    Then::Stop
                }
            }
            WatchPush::Ended(WatchEnd::Compacted { oldest }) => {
                self.deliver(Ok(WatchNotice::Compacted { oldest }));
                Then::Stop
            }
            WatchPush::Ended(WatchEnd::Overflow) => {
                self.deliver(Ok(WatchNotice::Overflow));
                Then::Stop
            }
            WatchPush::Ended(WatchEnd::Closed { code, message }) => {
                // A member shutting down (or too busy): go on elsewhere.
                if code == ErrorCode::Unavailable as i32 {
                    return Then::Resume;
                }
                let e = Error::from(crate::proto::WireError { code, message });
                self.deliver(Err(e));
                Then::Stop
            }
        }
    }

    /// Hand a notice to the user, waiting while their buffer is full; false if the watch was
    /// dropped meanwhile.
    fn deliver(&self, notice: Result<WatchNotice>) -> bool {
        // Most notices find room: no deadline (a clock read) for those.
        let mut notice = match self.tx.try_send(notice) {
            Ok(()) => return true,
            Err(TrySendError::Full(back)) => back,
            Err(TrySendError::Disconnected(_)) => return false,
        };
        loop {
            match self.tx.send_timeout(notice, PUMP_POLL) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(back)) => {
                    if self.cancelled.load(Ordering::SeqCst) {
                        return false;
                    }
                    notice = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
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
