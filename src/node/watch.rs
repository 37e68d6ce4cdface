//! Watches on one member: the watch thread (`haven-{id}-watch`), its window of recent events,
//! and the watchers it pushes to.
//!
//! The apply thread hands it, per applied batch, the changes of user keys each entry made (the
//! state machine records them, `sm/changes.rs`) through a bounded queue that it never waits
//! for ([`WatchFeed`]). Everything else happens here, off the apply path: decoding the records,
//! keeping the window, matching each watcher's range and pushing.
//!
//! Fan-out: a revision is decoded once and shared (`Arc`) by the window and every push that
//! carries it; a push names the shared revisions and which of their events the watcher's filter
//! took (`watch_fanout.rs`). The watcher's own copies are made on its side (in process, on its
//! client's thread) or its frame is written from the revision's encoding, made once (remote).
//! Under load, deliveries are gathered to one round per interval that grows with the number of
//! watchers ([`DELIVERY_INTERVAL_PER_WATCHER`]), which bounds how often each watcher is woken.
//!
//! Promises, and how they are kept:
//! - *Every change, in order, a revision's events together.* One thread sees the batches in
//!   apply order and pushes each watcher's events of a revision in one push (several revisions
//!   may share a push; one is never split).
//! - *Never a silent gap.* `complete_from` is the oldest revision from which the window holds
//!   every event. It moves up when the window drops its oldest revision, when a batch was lost
//!   (the feed's queue was full: the next batch carries `gap_through`), when a snapshot replaced
//!   the state (its events were never seen here), and while nothing is recorded (capture off).
//!   A watch that needs a revision below it is ended with `Compacted { oldest }`, at
//!   registration or (for a lost batch) while it runs. Previous values have their own
//!   `prev_complete_from`, since they are recorded only while a watch asks for them.
//! - *Bounded.* The window by `Config::watch_window_events` and `WATCH_WINDOW_BYTES`; each
//!   watcher's queue by `Config::watch_buffer_events` (in process: queued events, a push without
//!   events counting one) or the connection's push queue (remote); a watcher that would exceed
//!   it is ended with `Overflow`.
//! - *Progress.* An idle watcher gets `Progress { revision }` (everything up to the member's
//!   applied revision was pushed) every `Config::watch_progress_interval_ms`, and once at
//!   registration when nothing was pushed then, so the client always knows where to resume.

use super::reply::Reply;
use super::watch_fanout::{materialize, Encodings, EventsFrame, Part, Revision};
use crate::error::{Error, Result};
use crate::event;
use crate::limits::{MAX_WATCHES, MAX_WATCH_PUSH_EVENTS, WATCH_HUB_QUEUE, WATCH_WINDOW_BYTES};
use crate::logging::Level;
use crate::net::{ClientHandle, PushOutcome};
use crate::park::{bounded, ParkedReceiver, ParkedSender};
use crate::proto::{
    ClientResponse, EventKind, PushFrame, Response, WatchEnd, WatchEvent, WatchPush, WatchSpec,
};
use crate::sm::{ApplyOutcome, ChangeCapture, KvChange};
use crate::types::{LogIndex, NodeId};
use crossbeam_channel::{RecvTimeoutError, TrySendError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The changes of one applied batch, from the apply thread.
pub(crate) struct AppliedBatch {
    /// Events of revisions up to and including this one were lost (a dropped batch, a restored
    /// snapshot): the window cannot be complete below it.
    gap_through: Option<LogIndex>,
    /// The applied index after the batch.
    through: LogIndex,
    /// What the state machine recorded while applying it.
    capture: ChangeCapture,
    /// Per entry with changes: its revision and changes, in order.
    revisions: Vec<(LogIndex, Vec<KvChange>)>,
}

/// What the hub hands a watcher's sink: events as shared revisions (`watch_fanout.rs`), made
/// into the watcher's own copies or frame by the sink, or any other push as it is.
pub(crate) enum Push {
    Events(Vec<Part>),
    Notice(WatchPush),
}

/// Who receives a watcher's pushes.
pub(crate) enum Sink {
    /// An in-process client: its queue, bounded by the count of queued events (a push without
    /// events counts as one).
    Local(LocalSender),
    /// A remote client's connection.
    Remote {
        conn: ClientHandle<ClientResponse>,
        watch_id: u64,
        /// Its events carry their previous values.
        prev_value: bool,
    },
}

/// Which watcher: in-process ones by the hub's id, remote ones by connection and their id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WatchKey {
    Local(u64),
    Remote { connection: u64, watch_id: u64 },
}

enum HubInput {
    Applied(AppliedBatch),
    Register {
        spec: WatchSpec,
        sink: Sink,
        key: WatchKey,
        /// Answered `Done` once registered (remote watches), or with the refusal.
        reply: Option<Reply>,
    },
    Cancel(WatchKey),
    ConnectionClosed(u64),
}

/// An in-process watcher's queue of pushes: the hub appends, the watcher's reader takes.
///
/// Not a crossbeam channel: its blocking receive spins, then calls `sched_yield` several times
/// before it parks (see `park.rs`); with 100 watchers each woken once a delivery round, those
/// spins and yields were about a fifth of `haven bench watch`'s CPU on 2 cores. Not a
/// `park::Parker` either: a watch's reader may move from thread to thread (the user's, then a
/// pump's). A mutex and a condition variable, the hub signalling only a reader that waits: at
/// most one wake-up per delivery round, none while the reader is busy.
struct LocalQueue {
    state: Mutex<LocalState>,
    ready: Condvar,
}

#[derive(Default)]
struct LocalState {
    /// Each push with the events it counts for (a push without events counts one).
    pushes: VecDeque<(Push, usize)>,
    /// Events queued: what the watcher's buffer bounds.
    queued: usize,
    /// The reader waits on `ready` (cleared by whoever wakes it).
    waiting: bool,
    /// The hub dropped its end: nothing follows what is queued.
    closed: bool,
    /// The reader dropped its end: pushes go nowhere.
    abandoned: bool,
}

impl LocalQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wake the reader if it waits; called with the state changed and its lock released.
    fn wake(&self, waiting: bool) {
        if waiting {
            self.ready.notify_one();
        }
    }
}

/// The hub's end of an in-process watcher's queue; dropping it closes the queue.
pub(crate) struct LocalSender {
    queue: Arc<LocalQueue>,
    /// The watcher's buffer (`Config::watch_buffer_events`); the push that ends the watch goes
    /// in even when it is full.
    capacity: usize,
}

impl LocalSender {
    fn push(&self, push: Push, last: bool) -> std::result::Result<(), PushFailed> {
        let count = match &push {
            Push::Events(parts) => parts.iter().map(Part::len).sum::<usize>().max(1),
            Push::Notice(_) => 1,
        };
        let mut state = self.queue.lock();
        if state.abandoned {
            return Err(PushFailed::Gone);
        }
        if !last && state.queued + count > self.capacity {
            return Err(PushFailed::Full);
        }
        state.queued += count;
        state.pushes.push_back((push, count));
        let waiting = std::mem::take(&mut state.waiting);
        drop(state);
        self.queue.wake(waiting);
        Ok(())
    }
}

impl Drop for LocalSender {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.closed = true;
        let waiting = std::mem::take(&mut state.waiting);
        drop(state);
        self.queue.wake(waiting);
    }
}

/// What an in-process watcher reads: the pushes for its watch. Taking one frees its events'
/// room in the watcher's buffer.
pub(crate) struct LocalWatch {
    pub(crate) id: u64,
    queue: Arc<LocalQueue>,
    /// Its events carry their previous values.
    prev_value: bool,
    /// The revisions of the last push taken that were not handed on yet.
    taken: VecDeque<Part>,
}

impl LocalWatch {
    /// The next push, `Err(true)` when the member ended the stream (shut down), `Err(false)`
    /// when nothing came within `timeout`. A push of events is handed on one revision at a
    /// time: each revision's events are then made (on the watcher's thread, not the hub's)
    /// straight into the vector its notice carries, with no larger vector to split.
    pub(crate) fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<WatchPush, bool> {
        if let Some(part) = self.taken.pop_front() {
            return Ok(self.events(&part));
        }
        match self.take(timeout)? {
            Push::Events(parts) => {
                self.taken = parts.into();
                match self.taken.pop_front() {
                    Some(part) => Ok(self.events(&part)),
                    // Not pushed by the hub (a push has a part); harmless.
                    None => Ok(WatchPush::Events(Vec::new())),
                }
            }
            Push::Notice(push) => Ok(push),
        }
    }

    fn events(&self, part: &Part) -> WatchPush {
        WatchPush::Events(materialize(std::slice::from_ref(part), self.prev_value))
    }

    /// The next push off the queue, waiting up to `timeout`.
    fn take(&self, timeout: Duration) -> std::result::Result<Push, bool> {
        let mut state = self.queue.lock();
        // Taken at the first wait only: a push that is there costs no clock read.
        let mut deadline = None;
        // Bounded by the deadline: each wait ends at a push, the queue's close or the deadline
        // (or spuriously, and then the deadline still holds).
        loop {
            if let Some((push, count)) = state.pushes.pop_front() {
                state.queued -= count;
                return Ok(push);
            }
            if state.closed {
                return Err(true);
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert_with(|| now.checked_add(timeout));
            let left = match deadline {
                Some(deadline) if deadline <= now => return Err(false),
                Some(deadline) => deadline - now,
                None => timeout,
            };
            state.waiting = true;
            state = self
                .queue
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting = false;
        }
    }
}

impl Drop for LocalWatch {
    fn drop(&mut self) {
        self.queue.lock().abandoned = true;
    }
}

/// The apply thread's end: hands batches over without ever waiting.
pub(crate) struct WatchFeed {
    tx: ParkedSender<HubInput>,
    capture: Arc<AtomicU8>,
    /// Some watch is open (set by the watch thread): batches wake it at once.
    watching: Arc<AtomicBool>,
    /// A batch was dropped (queue full) or the state was replaced: the next batch says so.
    gap_through: Option<LogIndex>,
}

fn capture_from(level: u8) -> ChangeCapture {
    match level {
        0 => ChangeCapture::Off,
        1 => ChangeCapture::Changes,
        _ => ChangeCapture::ChangesWithPrevious,
    }
}

fn capture_level(capture: ChangeCapture) -> u8 {
    match capture {
        ChangeCapture::Off => 0,
        ChangeCapture::Changes => 1,
        ChangeCapture::ChangesWithPrevious => 2,
    }
}

impl WatchFeed {
    /// What the state machine should record for the next batch.
    pub(crate) fn capture(&self) -> ChangeCapture {
        capture_from(self.capture.load(Ordering::Relaxed))
    }

    /// Hand over the changes of an applied batch (taken out of `outcomes`), recorded with
    /// `capture`; `through` is the applied index after it.
    pub(crate) fn publish(
        &mut self,
        outcomes: &mut [ApplyOutcome],
        through: LogIndex,
        capture: ChangeCapture,
    ) {
        let revisions = outcomes
            .iter_mut()
            .filter(|o| !o.changes.is_empty())
            .map(|o| (o.index, std::mem::take(&mut o.changes)))
            .collect();
        self.send(AppliedBatch {
            gap_through: self.gap_through,
            through,
            capture,
            revisions,
        });
    }

    /// The state was replaced by a snapshot at `index`: the events up to it were never seen.
    pub(crate) fn restored(&mut self, index: LogIndex) {
        self.gap_through = Some(self.gap_through.map_or(index, |g| g.max(index)));
        self.send(AppliedBatch {
            gap_through: self.gap_through,
            through: index,
            capture: ChangeCapture::Off,
            revisions: Vec::new(),
        });
    }

    /// Queue a batch; wake the watch thread only if a watch waits for it or the queue is
    /// filling up. With no watch open a batch only goes into the window, which can wait for
    /// the thread's next wake-up: waking it for every batch cost each member a context switch
    /// per applied entry (a fifth of the members' wake-ups in `haven bench lock`).
    fn send(&mut self, batch: AppliedBatch) {
        let through = batch.through;
        match self.tx.try_send_quiet(HubInput::Applied(batch)) {
            Ok(()) => {
                self.gap_through = None;
                // Pairs with the fence in `HubThread::update_capture`: either this load sees
                // the watch the thread just registered, or the thread's next poll (after its
                // fence) sees this batch. No batch waits for a tick while a watch is open.
                fence(Ordering::SeqCst);
                if self.watching.load(Ordering::Relaxed) || self.tx.len() >= WATCH_QUIET_BATCHES {
                    self.tx.wake();
                }
            }
            Err(TrySendError::Full(_)) => {
                self.gap_through = Some(self.gap_through.map_or(through, |g| g.max(through)));
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The handle every part of the member uses to open and close watches.
pub(crate) struct WatchHub {
    tx: ParkedSender<HubInput>,
    /// Set by [`WatchHub::stop`]; the thread ends at its next poll.
    stopping: Arc<AtomicBool>,
    next_local_id: AtomicU64,
    buffer_events: usize,
}

/// Settings of the watch thread (from `Config`).
pub(crate) struct WatchSettings {
    pub(crate) window_events: usize,
    pub(crate) buffer_events: usize,
    pub(crate) progress_interval: Duration,
}

/// Create the hub, the apply thread's feed and the thread's loop (to run on its own thread).
/// `applied` is the state's applied index at open: events before it were never seen here.
pub(crate) fn start(
    id: NodeId,
    applied: LogIndex,
    settings: WatchSettings,
) -> (WatchHub, WatchFeed, impl FnOnce() + Send) {
    let (tx, rx) = bounded(WATCH_HUB_QUEUE);
    let capture = Arc::new(AtomicU8::new(0));
    let watching = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let thread = HubThread {
        id,
        inputs: rx,
        stopping: Arc::clone(&stopping),
        capture: Arc::clone(&capture),
        watching: Arc::clone(&watching),
        window: VecDeque::new(),
        window_events: 0,
        window_bytes: 0,
        complete_from: applied.next(),
        prev_complete_from: applied.next(),
        applied,
        watchers: HashMap::new(),
        settings,
    };
    thread.update_capture();
    let hub = WatchHub {
        tx: tx.clone(),
        stopping,
        next_local_id: AtomicU64::new(1),
        buffer_events: thread.settings.buffer_events,
    };
    let feed = WatchFeed {
        tx,
        capture,
        watching,
        gap_through: None,
    };
    (hub, feed, move || thread.run())
}

impl WatchHub {
    /// Open an in-process watch.
    pub(crate) fn watch_local(&self, spec: WatchSpec, deadline: Instant) -> Result<LocalWatch> {
        spec.validate()?;
        let id = self.next_local_id.fetch_add(1, Ordering::Relaxed);
        let prev_value = spec.prev_value;
        // Its memory grows with what is queued (the count of queued events bounds it), not
        // with the buffer size.
        let queue = Arc::new(LocalQueue {
            state: Mutex::new(LocalState::default()),
            ready: Condvar::new(),
        });
        let sink = Sink::Local(LocalSender {
            queue: Arc::clone(&queue),
            capacity: self.buffer_events,
        });
        self.send(
            HubInput::Register {
                spec,
                sink,
                key: WatchKey::Local(id),
                reply: None,
            },
            deadline,
        )?;
        Ok(LocalWatch {
            id,
            queue,
            prev_value,
            taken: VecDeque::new(),
        })
    }

    /// Open a watch for a remote client; `reply` is answered once it is registered.
    pub(crate) fn watch_remote(
        &self,
        conn: ClientHandle<ClientResponse>,
        watch_id: u64,
        spec: WatchSpec,
        reply: Reply,
        deadline: Instant,
    ) {
        if let Err(e) = spec.validate() {
            reply.fail(e);
            return;
        }
        let key = WatchKey::Remote {
            connection: conn.connection_id(),
            watch_id,
        };
        let prev_value = spec.prev_value;
        let input = HubInput::Register {
            spec,
            sink: Sink::Remote {
                conn,
                watch_id,
                prev_value,
            },
            key,
            reply: Some(reply),
        };
        match self.tx.send_deadline(input, deadline) {
            Ok(()) => {}
            Err(e) => {
                if let HubInput::Register {
                    reply: Some(reply), ..
                } = e.into_inner()
                {
                    reply.fail(Error::Unavailable(
                        "the member's watch thread is busy or stopped".into(),
                    ));
                }
            }
        }
    }

    /// Close an in-process watch.
    pub(crate) fn cancel_local(&self, id: u64) {
        let _ = self.tx.try_send(HubInput::Cancel(WatchKey::Local(id)));
    }

    /// Close a remote client's watch.
    pub(crate) fn cancel_remote(&self, connection: u64, watch_id: u64, deadline: Instant) {
        let key = WatchKey::Remote {
            connection,
            watch_id,
        };
        let _ = self.tx.send_deadline(HubInput::Cancel(key), deadline);
    }

    /// A remote client's connection closed: close its watches.
    pub(crate) fn connection_closed(&self, connection: u64) {
        let _ = self.tx.try_send(HubInput::ConnectionClosed(connection));
    }

    /// Stop the thread (it ends every watch first). A flag, not a queued input: it reaches
    /// the thread however full its queue is.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.tx.wake();
    }

    fn send(&self, input: HubInput, deadline: Instant) -> Result<()> {
        self.tx
            .send_deadline(input, deadline)
            .map_err(|_| Error::Unavailable("the member's watch thread is busy or stopped".into()))
    }
}

struct Watcher {
    spec: WatchSpec,
    /// The next revision it needs: everything before was pushed (or was not its business).
    next: LogIndex,
    sink: Sink,
    last_push: Instant,
}

/// Why a push did not go through.
#[derive(Debug)]
enum PushFailed {
    /// The watcher's buffer is full: end it with `Overflow`.
    Full,
    /// Nobody listens any more: drop it.
    Gone,
}

impl Sink {
    /// Push anything but events.
    fn notify(&self, push: WatchPush, last: bool) -> std::result::Result<(), PushFailed> {
        self.push(Push::Notice(push), last, &Encodings::default())
    }

    /// Push; `encodings` are the round's (shared by the remote watchers it pushes to).
    fn push(
        &self,
        push: Push,
        last: bool,
        encodings: &Encodings,
    ) -> std::result::Result<(), PushFailed> {
        match self {
            Sink::Local(sender) => sender.push(push, last),
            Sink::Remote {
                conn,
                watch_id,
                prev_value,
            } => {
                let outcome = match push {
                    Push::Events(parts) => conn.push(
                        &EventsFrame {
                            watch_id: *watch_id,
                            parts: &parts,
                            prev_value: *prev_value,
                            encodings,
                        },
                        last,
                    ),
                    Push::Notice(push) => conn.push(
                        &PushFrame {
                            version: push.min_version(),
                            watch_id: *watch_id,
                            push,
                        },
                        last,
                    ),
                };
                match outcome {
                    PushOutcome::Queued => Ok(()),
                    PushOutcome::Full => Err(PushFailed::Full),
                    PushOutcome::Closed => Err(PushFailed::Gone),
                }
            }
        }
    }
}

/// With no watch open, the apply thread queues its batches without waking the watch thread
/// until this many are queued (a quarter of the queue), or the thread's own tick comes.
const WATCH_QUIET_BATCHES: usize = WATCH_HUB_QUEUE / 4;

/// Under load the hub delivers at most once per interval, gathering the batches applied
/// meanwhile: a watcher then gets one push (one wake-up of its reader, and of the reader's
/// reader) per interval rather than one per applied batch. The interval grows with the number of
/// watchers, since a round's cost does (10 µs a watcher: 1 ms from 100 on), so that a few
/// watchers get their events at once and many do not wake a few cores a million times a
/// second. When rounds are further apart than the interval, a batch goes out as it arrives.
const DELIVERY_INTERVAL_PER_WATCHER: Duration = Duration::from_micros(10);
const MAX_DELIVERY_INTERVAL: Duration = Duration::from_millis(1);

struct HubThread {
    id: NodeId,
    inputs: ParkedReceiver<HubInput>,
    stopping: Arc<AtomicBool>,
    capture: Arc<AtomicU8>,
    watching: Arc<AtomicBool>,
    window: VecDeque<Arc<Revision>>,
    window_events: usize,
    window_bytes: usize,
    /// Every event at this revision or later is in the window (or still to come).
    complete_from: LogIndex,
    /// Every event at this revision or later carries its previous value.
    prev_complete_from: LogIndex,
    /// Applied index of the last batch seen.
    applied: LogIndex,
    watchers: HashMap<WatchKey, Watcher>,
    settings: WatchSettings,
}

impl HubThread {
    fn run(mut self) {
        let tick = (self.settings.progress_interval / 2).max(Duration::from_millis(5));
        let mut next_progress = Instant::now() + tick;
        let mut last_delivery = Instant::now();
        let stopping = Arc::clone(&self.stopping);
        let stop = || stopping.load(Ordering::SeqCst);
        loop {
            let wait = next_progress.saturating_duration_since(Instant::now());
            match self.inputs.recv_timeout_unless(wait, stop) {
                Ok(HubInput::Applied(batch)) => {
                    let mut batches = vec![batch];
                    // Take what queued up behind it, and what comes until a delivery interval
                    // has passed since the last one: one push per watcher for all of it.
                    let hold_until = last_delivery + self.delivery_interval();
                    while batches.len() < 256 {
                        let input = match self.inputs.try_recv() {
                            Ok(input) => input,
                            Err(_) => {
                                let left = hold_until.saturating_duration_since(Instant::now());
                                if left.is_zero() {
                                    break;
                                }
                                match self.inputs.recv_timeout_unless(left, stop) {
                                    Ok(input) => input,
                                    Err(_) => break,
                                }
                            }
                        };
                        match input {
                            HubInput::Applied(more) => batches.push(more),
                            other => {
                                self.ingest_and_deliver(std::mem::take(&mut batches));
                                self.handle(other);
                            }
                        }
                    }
                    self.ingest_and_deliver(batches);
                    last_delivery = Instant::now();
                }
                Ok(other) => self.handle(other),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.stop(),
            }
            if Instant::now() >= next_progress {
                self.progress();
                next_progress = Instant::now() + tick;
            }
        }
    }

    /// How long to gather batches under load (see [`DELIVERY_INTERVAL_PER_WATCHER`]).
    fn delivery_interval(&self) -> Duration {
        let watchers = u32::try_from(self.watchers.len()).unwrap_or(u32::MAX);
        DELIVERY_INTERVAL_PER_WATCHER
            .saturating_mul(watchers)
            .min(MAX_DELIVERY_INTERVAL)
    }

    /// Handle a non-batch input.
    fn handle(&mut self, input: HubInput) {
        match input {
            HubInput::Applied(batch) => self.ingest_and_deliver(vec![batch]),
            HubInput::Register {
                spec,
                sink,
                key,
                reply,
            } => self.register(spec, sink, key, reply),
            HubInput::Cancel(key) => {
                self.watchers.remove(&key);
                self.update_capture();
            }
            HubInput::ConnectionClosed(connection) => {
                self.watchers.retain(|key, _| {
                    !matches!(key, WatchKey::Remote { connection: c, .. } if *c == connection)
                });
                self.update_capture();
            }
        }
    }

    fn stop(mut self) {
        let closed = || {
            WatchPush::Ended(WatchEnd::Closed {
                code: crate::error::ErrorCode::Unavailable as i32,
                message: format!("member {} is shutting down", self.id),
            })
        };
        for (_, w) in self.watchers.drain() {
            let _ = w.sink.notify(closed(), true);
        }
        // Registrations still queued (the stop flag does not wait behind them) are refused
        // the same way, so no caller waits for an answer that never comes. At most a queue's
        // worth: what arrives later is dropped with the queue.
        for _ in 0..WATCH_HUB_QUEUE {
            let Ok(input) = self.inputs.try_recv() else {
                break;
            };
            if let HubInput::Register { sink, reply, .. } = input {
                match reply {
                    Some(reply) => reply.fail(Error::Unavailable(format!(
                        "member {} is shutting down",
                        self.id
                    ))),
                    None => {
                        let _ = sink.notify(closed(), true);
                    }
                }
            }
        }
        self.capture.store(0, Ordering::Relaxed);
    }

    /// Tell the apply thread what to record: changes while the window keeps any or a watch is
    /// open, previous values only while a watch asks for them.
    fn update_capture(&self) {
        let capture = if self.watchers.values().any(|w| w.spec.prev_value) {
            ChangeCapture::ChangesWithPrevious
        } else if self.settings.window_events > 0 || !self.watchers.is_empty() {
            ChangeCapture::Changes
        } else {
            ChangeCapture::Off
        };
        self.capture
            .store(capture_level(capture), Ordering::Relaxed);
        self.watching
            .store(!self.watchers.is_empty(), Ordering::Relaxed);
        // Pairs with the fence in `WatchFeed::send` (after this, the thread polls its queue).
        fence(Ordering::SeqCst);
    }

    fn register(&mut self, spec: WatchSpec, sink: Sink, key: WatchKey, reply: Option<Reply>) {
        let refuse = |reply: Option<Reply>, sink: &Sink, e: Error| match reply {
            Some(reply) => reply.fail(e),
            None => {
                let _ = sink.notify(
                    WatchPush::Ended(WatchEnd::Closed {
                        code: e.code() as i32,
                        message: e.to_string(),
                    }),
                    true,
                );
            }
        };
        if self.watchers.len() >= MAX_WATCHES && !self.watchers.contains_key(&key) {
            let e = Error::Unavailable(format!(
                "member {} has {MAX_WATCHES} watches open already",
                self.id
            ));
            return refuse(reply, &sink, e);
        }
        // 0: from now on.
        let from = if spec.from_revision.0 == 0 {
            self.applied.next()
        } else {
            spec.from_revision
        };
        if let Some(reply) = reply {
            reply.send(Ok(Response::Done));
        }
        let oldest = if spec.prev_value {
            self.complete_from.max(self.prev_complete_from)
        } else {
            self.complete_from
        };
        if from < oldest && from <= self.applied {
            let _ = sink.notify(WatchPush::Ended(WatchEnd::Compacted { oldest }), true);
            return;
        }
        let mut watcher = Watcher {
            spec,
            next: from,
            sink,
            last_push: Instant::now(),
        };
        // Catch up from the window, then it is live.
        let through = self.applied;
        let start = self.window.partition_point(|r| r.revision < from);
        let caught_up = deliver(
            &mut watcher,
            self.window.range(start..),
            through,
            &Encodings::default(),
        );
        match caught_up {
            Ok(pushed) => {
                if !pushed {
                    let _ = watcher.sink.notify(
                        WatchPush::Progress {
                            revision: through.max(from.prev()),
                        },
                        false,
                    );
                }
                self.watchers.insert(key, watcher);
            }
            Err(PushFailed::Full) => {
                let _ = watcher
                    .sink
                    .notify(WatchPush::Ended(WatchEnd::Overflow), true);
            }
            Err(PushFailed::Gone) => {}
        }
        self.update_capture();
    }

    /// Take the batches into the window, then push each watcher what it has not seen.
    fn ingest_and_deliver(&mut self, batches: Vec<AppliedBatch>) {
        if batches.is_empty() {
            return;
        }
        let first_new = self.window.len();
        let mut gap = None;
        for batch in batches {
            if let Some(g) = batch.gap_through {
                gap = Some(gap.map_or(g, |x: LogIndex| x.max(g)));
                if g >= self.complete_from {
                    // The window no longer connects to what follows: start it afresh.
                    self.window.clear();
                    self.window_events = 0;
                    self.window_bytes = 0;
                    self.complete_from = g.next();
                }
            }
            if batch.capture == ChangeCapture::Off {
                self.complete_from = self.complete_from.max(batch.through.next());
            }
            if batch.capture != ChangeCapture::ChangesWithPrevious {
                self.prev_complete_from = self.prev_complete_from.max(batch.through.next());
            }
            for (revision, changes) in batch.revisions {
                if let Some(r) = self.decode(revision, changes) {
                    self.window_events += r.events.len();
                    self.window_bytes += r.bytes;
                    self.window.push_back(Arc::new(r));
                }
            }
            self.applied = self.applied.max(batch.through);
        }
        // Watchers that needed a lost revision: ended, never a silent gap.
        if let Some(gap) = gap {
            let oldest = gap.next();
            let lost: Vec<WatchKey> = self
                .watchers
                .iter()
                .filter(|(_, w)| w.next <= gap)
                .map(|(k, _)| *k)
                .collect();
            for key in lost {
                if let Some(w) = self.watchers.remove(&key) {
                    let _ = w
                        .sink
                        .notify(WatchPush::Ended(WatchEnd::Compacted { oldest }), true);
                }
            }
        }
        let through = self.applied;
        let new = self.window.range(first_new.min(self.window.len())..);
        let mut ended = Vec::new();
        let encodings = Encodings::default();
        for (key, watcher) in self.watchers.iter_mut() {
            match deliver(watcher, new.clone(), through, &encodings) {
                Ok(_) => {}
                Err(PushFailed::Full) => {
                    let _ = watcher
                        .sink
                        .notify(WatchPush::Ended(WatchEnd::Overflow), true);
                    ended.push(*key);
                }
                Err(PushFailed::Gone) => ended.push(*key),
            }
        }
        for key in &ended {
            self.watchers.remove(key);
        }
        if !ended.is_empty() {
            self.update_capture();
        }
        self.trim_window();
    }

    fn trim_window(&mut self) {
        // Bounded by the window's length.
        while self.window_events > self.settings.window_events
            || self.window_bytes > WATCH_WINDOW_BYTES
        {
            let Some(oldest) = self.window.pop_front() else {
                break;
            };
            self.window_events -= oldest.events.len();
            self.window_bytes -= oldest.bytes;
            self.complete_from = self.complete_from.max(oldest.revision.next());
        }
    }

    fn decode(&self, revision: LogIndex, changes: Vec<KvChange>) -> Option<Revision> {
        let mut events = Vec::with_capacity(changes.len());
        let mut previous = Vec::with_capacity(changes.len());
        let mut with_previous = true;
        let mut bytes = 0;
        for change in changes {
            // An election's or a partition map's change (no previous value is kept for them).
            if let Some(event) = crate::proto::target_event(revision, &change) {
                match event {
                    Ok(event) => {
                        bytes += event.key.len() + event.value.len();
                        events.push(event);
                        previous.push(None);
                    }
                    Err(e) => event!(Level::Error, node: Some(self.id.0), term: None,
                        "watch_event_undecodable", revision = revision.0, error = e),
                }
                continue;
            }
            let value = match change.value() {
                Ok(value) => value,
                Err(e) => {
                    // Just encoded by this build: a bug, but not worth stopping the member for.
                    event!(Level::Error, node: Some(self.id.0), term: None,
                        "watch_event_undecodable", revision = revision.0, error = e);
                    continue;
                }
            };
            match change.previous() {
                Ok(Some(prev)) => previous.push(prev.map(|v| v.value)),
                _ => with_previous = false,
            }
            let (kind, value, meta) = match value {
                Some(v) => (EventKind::Put, v.value, Some(v.meta)),
                None => (EventKind::Delete, Vec::new(), None),
            };
            bytes += change.key.len() + value.len();
            events.push(WatchEvent {
                revision,
                kind,
                key: change.key,
                value,
                meta,
                prev_value: None,
            });
        }
        if events.is_empty() {
            return None;
        }
        Some(Revision::new(
            revision,
            events,
            with_previous.then_some(previous),
            bytes,
        ))
    }

    /// Progress to idle watchers; drop those whose client is gone.
    fn progress(&mut self) {
        let interval = self.settings.progress_interval;
        let revision = self.applied;
        let mut gone = Vec::new();
        for (key, w) in self.watchers.iter_mut() {
            if w.last_push.elapsed() < interval {
                continue;
            }
            if let Sink::Remote { conn, .. } = &w.sink {
                if conn.is_closed() {
                    gone.push(*key);
                    continue;
                }
            }
            w.last_push = Instant::now();
            let progress = WatchPush::Progress {
                revision: revision.max(w.next.prev()),
            };
            match w.sink.notify(progress, false) {
                Ok(()) => {}
                // A full buffer is not an overflow yet: no event was lost.
                Err(PushFailed::Full) => {}
                Err(PushFailed::Gone) => gone.push(*key),
            }
        }
        for key in &gone {
            self.watchers.remove(key);
        }
        if !gone.is_empty() {
            self.update_capture();
        }
    }
}

/// Push `watcher` its events of `revisions` (at or after its next revision), whole revisions
/// at most `MAX_WATCH_PUSH_EVENTS` to a push (a larger revision goes alone), then move it past
/// `through`. Returns whether anything was pushed.
fn deliver<'a>(
    watcher: &mut Watcher,
    revisions: impl Iterator<Item = &'a Arc<Revision>>,
    through: LogIndex,
    encodings: &Encodings,
) -> std::result::Result<bool, PushFailed> {
    let mut parts: Vec<Part> = Vec::new();
    let mut events = 0;
    let mut pushed = false;
    for r in revisions {
        if r.revision < watcher.next {
            continue;
        }
        let Some(part) = Part::select(r, |event| watcher.spec.covers_event(event)) else {
            continue;
        };
        if events > 0 && events + part.len() > MAX_WATCH_PUSH_EVENTS {
            watcher
                .sink
                .push(Push::Events(std::mem::take(&mut parts)), false, encodings)?;
            pushed = true;
            events = 0;
        }
        events += part.len();
        parts.push(part);
    }
    if !parts.is_empty() {
        watcher.sink.push(Push::Events(parts), false, encodings)?;
        pushed = true;
    }
    if pushed {
        watcher.last_push = Instant::now();
    }
    watcher.next = watcher.next.max(through.next());
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::KeyMeta;

    fn revision(revision: u64, keys: &[&[u8]]) -> Arc<Revision> {
        let events: Vec<WatchEvent> = keys
            .iter()
            .map(|key| WatchEvent {
                revision: LogIndex(revision),
                kind: EventKind::Put,
                key: key.to_vec(),
                value: b"v".to_vec(),
                meta: Some(KeyMeta {
                    create_revision: LogIndex(revision),
                    mod_revision: LogIndex(revision),
                    version: 1,
                }),
                prev_value: None,
            })
            .collect();
        Arc::new(Revision::new(LogIndex(revision), events, None, 0))
    }

    fn events_of(revisions: &[Arc<Revision>]) -> Push {
        Push::Events(
            revisions
                .iter()
                .filter_map(|r| Part::select(r, |_| true))
                .collect(),
        )
    }

    /// An in-process watcher's two ends, with a buffer of `capacity` events.
    fn local(capacity: usize) -> (LocalSender, LocalWatch) {
        let queue = Arc::new(LocalQueue {
            state: Mutex::new(LocalState::default()),
            ready: Condvar::new(),
        });
        let sender = LocalSender {
            queue: Arc::clone(&queue),
            capacity,
        };
        let watch = LocalWatch {
            id: 1,
            queue,
            prev_value: false,
            taken: VecDeque::new(),
        };
        (sender, watch)
    }

    fn revisions_of(push: WatchPush) -> Vec<u64> {
        match push {
            WatchPush::Events(events) => events.iter().map(|e| e.revision.0).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn a_push_is_handed_on_one_revision_at_a_time_in_order() {
        let (sender, mut watch) = local(100);
        let first = [revision(3, &[b"a", b"b"]), revision(4, &[b"c"])];
        sender.push(events_of(&first), false).unwrap();
        sender
            .push(
                Push::Notice(WatchPush::Progress {
                    revision: LogIndex(5),
                }),
                false,
            )
            .unwrap();
        sender
            .push(events_of(&[revision(6, &[b"d"])]), false)
            .unwrap();
        assert_eq!(revisions_of(watch.recv_timeout(LONG).unwrap()), vec![3, 3]);
        assert_eq!(revisions_of(watch.recv_timeout(LONG).unwrap()), vec![4]);
        assert!(matches!(
            watch.recv_timeout(LONG),
            Ok(WatchPush::Progress {
                revision: LogIndex(5)
            })
        ));
        assert_eq!(revisions_of(watch.recv_timeout(LONG).unwrap()), vec![6]);
        assert_eq!(watch.recv_timeout(Duration::ZERO), Err(false));
    }

    #[test]
    fn the_buffer_counts_queued_events_and_the_last_push_always_fits() {
        let (sender, mut watch) = local(3);
        sender
            .push(events_of(&[revision(1, &[b"a", b"b"])]), false)
            .unwrap();
        // 2 queued + 2 > 3.
        assert!(matches!(
            sender.push(events_of(&[revision(2, &[b"c", b"d"])]), false),
            Err(PushFailed::Full)
        ));
        // A push without events counts one: 2 + 1 fits.
        sender
            .push(
                Push::Notice(WatchPush::Progress {
                    revision: LogIndex(1),
                }),
                false,
            )
            .unwrap();
        assert!(matches!(
            sender.push(
                Push::Notice(WatchPush::Progress {
                    revision: LogIndex(1)
                }),
                false
            ),
            Err(PushFailed::Full)
        ));
        sender
            .push(Push::Notice(WatchPush::Ended(WatchEnd::Overflow)), true)
            .unwrap();
        // Taking a push frees its room.
        assert_eq!(revisions_of(watch.recv_timeout(LONG).unwrap()), vec![1, 1]);
        assert_eq!(watch.queue.lock().queued, 2);
    }

    #[test]
    fn a_closed_queue_still_hands_on_what_it_holds_then_ends() {
        let (sender, mut watch) = local(100);
        sender
            .push(events_of(&[revision(1, &[b"a"])]), false)
            .unwrap();
        drop(sender);
        assert_eq!(revisions_of(watch.recv_timeout(LONG).unwrap()), vec![1]);
        assert_eq!(watch.recv_timeout(LONG), Err(true));
    }

    #[test]
    fn a_push_to_a_dropped_watch_is_gone() {
        let (sender, watch) = local(100);
        drop(watch);
        assert!(matches!(
            sender.push(events_of(&[revision(1, &[b"a"])]), false),
            Err(PushFailed::Gone)
        ));
    }

    #[test]
    fn a_waiting_reader_is_woken_by_a_push_and_by_the_close() {
        let (sender, mut watch) = local(100);
        let reader = std::thread::spawn(move || {
            let first = watch.recv_timeout(LONG);
            let second = watch.recv_timeout(LONG);
            (first.map(revisions_of), second.map(revisions_of))
        });
        // Whether the reader waits already or not, it gets the push, then the close.
        sender
            .push(events_of(&[revision(7, &[b"a"])]), false)
            .unwrap();
        drop(sender);
        let (first, second) = reader.join().unwrap();
        assert_eq!(first, Ok(vec![7]));
        assert_eq!(second, Err(true));
    }

    #[test]
    fn a_stopped_hub_ends_its_watches_and_refuses_queued_registrations() {
        let settings = WatchSettings {
            window_events: 100,
            buffer_events: 100,
            progress_interval: Duration::from_secs(60),
        };
        let (hub, mut feed, run) = start(NodeId(1), LogIndex(0), settings);
        let spec = WatchSpec::from(crate::proto::KeyWatchSpec {
            start: Vec::new(),
            end: None,
            from_revision: LogIndex(0),
            prev_value: false,
        });
        let deadline = Instant::now() + LONG;
        let mut watch = hub.watch_local(spec, deadline).unwrap();
        // A full queue behind the registration: the stop must not wait behind it.
        for i in 1..=WATCH_HUB_QUEUE as u64 {
            feed.publish(&mut [], LogIndex(i), ChangeCapture::Changes);
        }
        hub.stop();
        // The thread's loop, on this thread: it sees the flag before anything queued.
        run();
        match watch.recv_timeout(LONG) {
            Ok(WatchPush::Ended(WatchEnd::Closed { message, .. })) => {
                assert!(message.contains("shutting down"), "{message}");
            }
            other => panic!("expected the watch closed, got {other:?}"),
        }
    }
}
