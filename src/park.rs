//! Waiting without spinning: a [`Parker`] and a bounded channel whose receiver parks at once.
//!
//! crossbeam-channel's blocking receive (and `Select`) spins and calls `sched_yield` for a while
//! before it parks the thread. Haven's hot threads (the driver, peer lane senders, the WAL writer,
//! client response writers) wait between small hand-offs all the time; on a 2-core machine
//! shared by three members every yield is a context switch taken from a thread with real work.
//! At one writer the yields of the peer senders and the WAL writer showed up in `perf` as a
//! large part of their CPU. Here the consumer polls the channel without blocking and, when it
//! is empty, parks its thread (`thread::park_timeout`): at most one wake-up per hand-off, none
//! while it is busy, nothing while idle.
//!
//! Lives below `net`, `wal` and `node` so that all three can use it.

use crossbeam_channel::{
    RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Wakes one consumer that polls one or more channels: producers call [`Parker::notify`] after
/// sending, the consumer polls every channel and, when all are empty, parks until notified (or a
/// timeout). A notification that comes between the consumer's last poll and its park is kept
/// (the thread's park token), so none is lost; a stale or spurious one costs one more poll.
///
/// Built on the consumer thread's own `park`/`unpark`: a notification to a consumer that is
/// busy (not parked) is one atomic operation, no system call and no lock. An earlier version
/// (mutex + condition variable) issued a futex wake on every send, which at 64 writers cost the
/// busy producers (the apply thread above all) more than the spinning it replaced.
///
/// One consumer thread per parker: the first thread that parks on it is the consumer.
#[derive(Default)]
pub(crate) struct Parker {
    consumer: OnceLock<Thread>,
}

impl Parker {
    pub(crate) fn notify(&self) {
        if let Some(consumer) = self.consumer.get() {
            consumer.unpark();
        }
    }

    /// Wait until notified (returns at once if a notification is pending) or `timeout`; may
    /// also return early for no reason, so the caller polls again.
    pub(crate) fn park_timeout(&self, timeout: Duration) {
        let mut registered_now = false;
        let consumer = self.consumer.get_or_init(|| {
            registered_now = true;
            thread::current()
        });
        if registered_now {
            // A send between the caller's poll and this registration notified nobody: poll
            // again before the first park.
            return;
        }
        if consumer.id() != thread::current().id() {
            // A second consumer thread is a bug (nobody unparks it); degrade to polling rather
            // than sleeping through sends.
            debug_assert!(false, "a parker has one consumer thread");
            thread::sleep(timeout.min(Duration::from_millis(1)));
            return;
        }
        thread::park_timeout(timeout);
    }
}

/// What the two ends of a parked channel share besides the channel.
struct Shared {
    parker: Parker,
    /// Live senders; the receiver sees the channel closed when this reaches zero.
    senders: AtomicUsize,
}

/// The sending side of [`bounded`]. Cloneable; the last one dropped closes the channel.
pub(crate) struct ParkedSender<T> {
    /// `None` only inside `drop`, which drops the channel sender before waking the consumer.
    tx: Option<crossbeam_channel::Sender<T>>,
    shared: Arc<Shared>,
}

/// The receiving side of [`bounded`] (one consumer parks on it).
pub(crate) struct ParkedReceiver<T> {
    rx: crossbeam_channel::Receiver<T>,
    shared: Arc<Shared>,
}

/// A bounded channel (back-pressure and `try_send` exactly as crossbeam's) whose receiver
/// parks instead of spinning when it waits.
pub(crate) fn bounded<T>(capacity: usize) -> (ParkedSender<T>, ParkedReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let shared = Arc::new(Shared {
        parker: Parker::default(),
        senders: AtomicUsize::new(1),
    });
    (
        ParkedSender {
            tx: Some(tx),
            shared: Arc::clone(&shared),
        },
        ParkedReceiver { rx, shared },
    )
}

impl<T> ParkedSender<T> {
    fn tx(&self) -> &crossbeam_channel::Sender<T> {
        match &self.tx {
            Some(tx) => tx,
            None => unreachable!("a parked sender is used after drop"),
        }
    }

    /// Queue `item` without blocking, and wake the consumer.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.tx().try_send(item)?;
        self.shared.parker.notify();
        Ok(())
    }

    /// Queue `item` without blocking and without waking the consumer: for items the consumer
    /// may take at its next wake-up (its own timeout, or a later send that wakes it). The
    /// caller decides, after queueing, whether to [`ParkedSender::wake`] it anyway.
    pub(crate) fn try_send_quiet(&self, item: T) -> Result<(), TrySendError<T>> {
        self.tx().try_send(item)
    }

    /// Queue `item`, blocking until `deadline` while the channel is full, and wake the
    /// consumer.
    pub(crate) fn send_deadline(
        &self,
        item: T,
        deadline: Instant,
    ) -> Result<(), SendTimeoutError<T>> {
        self.tx().send_deadline(item, deadline)?;
        self.shared.parker.notify();
        Ok(())
    }

    /// Queue `item`, blocking while the channel is full (back-pressure), and wake the consumer.
    pub(crate) fn send(&self, item: T) -> Result<(), SendError<T>> {
        self.tx().send(item)?;
        self.shared.parker.notify();
        Ok(())
    }

    /// Wake the consumer without sending (after changing what its `stop` condition reads).
    pub(crate) fn wake(&self) {
        self.shared.parker.notify();
    }

    /// Items queued now.
    pub(crate) fn len(&self) -> usize {
        self.tx().len()
    }
}

impl<T> Clone for ParkedSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        ParkedSender {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for ParkedSender<T> {
    fn drop(&mut self) {
        // Disconnect first, then wake: a consumer woken earlier could poll, still see the
        // channel open, and park again.
        drop(self.tx.take());
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.parker.notify();
        }
    }
}

impl<T> ParkedReceiver<T> {
    /// The channel itself, for draining with `try_recv`.
    pub(crate) fn channel(&self) -> &crossbeam_channel::Receiver<T> {
        &self.rx
    }

    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// Every sender is gone (items may still be queued).
    pub(crate) fn is_disconnected(&self) -> bool {
        self.shared.senders.load(Ordering::SeqCst) == 0
    }

    /// The next item, waiting up to `timeout`.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_timeout_unless(timeout, || false)
    }

    /// The next item, waiting up to `timeout`; `Disconnected` as soon as `stop()` holds. Whoever
    /// makes `stop()` true calls [`ParkedSender::wake`] so that the wait notices.
    pub(crate) fn recv_timeout_unless(
        &self,
        timeout: Duration,
        stop: impl Fn() -> bool,
    ) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut yielded = false;
        // Bounded by the deadline: each round parks until a send, a wake, a disconnect or the
        // deadline.
        loop {
            if stop() {
                return Err(RecvTimeoutError::Disconnected);
            }
            match self.rx.try_recv() {
                Ok(item) => return Ok(item),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            if !yielded {
                yielded = true;
                thread::yield_now();
                continue;
            }
            self.shared.parker.park_timeout(left);
        }
    }

    /// Wait until an item is queued or every sender is gone, without taking anything; false
    /// if `timeout` passed first.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, || false)
    }

    /// Like [`ParkedReceiver::wait_ready`], and also returns (true) as soon as `ready()` holds.
    /// Whoever makes `ready()` true calls [`ParkedSender::wake`] so that the wait notices.
    pub(crate) fn wait_until(&self, timeout: Duration, ready: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut yielded = false;
        // Bounded by the deadline: each round parks until a send, a wake or the deadline.
        loop {
            if !self.rx.is_empty() || self.is_disconnected() || ready() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if !yielded {
                yielded = true;
                thread::yield_now();
                continue;
            }
            self.shared.parker.park_timeout(left);
        }
    }
}

/// A sender on a plain crossbeam channel that wakes the consumer's [`Parker`] after each send:
/// for a consumer that polls several channels under one parker (the node's driver).
pub(crate) struct Waking<T> {
    tx: crossbeam_channel::Sender<T>,
    parker: Arc<Parker>,
}

impl<T> Clone for Waking<T> {
    fn clone(&self) -> Self {
        Waking {
            tx: self.tx.clone(),
            parker: Arc::clone(&self.parker),
        }
    }
}

impl<T> Waking<T> {
    pub(crate) fn new(tx: crossbeam_channel::Sender<T>, parker: Arc<Parker>) -> Waking<T> {
        Waking { tx, parker }
    }

    /// Send and wake the consumer. Never blocks if the channel is unbounded (the node's
    /// internal channel is; see `limits.rs` for why its size is bounded anyway).
    pub(crate) fn send(&self, item: T) {
        if self.tx.send(item).is_ok() {
            self.parker.notify();
        }
    }

    /// Send without waking the consumer: it takes the item at its next iteration, whatever
    /// wakes it (another send, its own timeout). For news that need no prompt answer.
    pub(crate) fn send_quiet(&self, item: T) {
        let _ = self.tx.send(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_and_the_receiver_sees_the_last_sender_go() {
        let (tx, rx) = bounded(4);
        let tx2 = tx.clone();
        // The receiver lives on one thread (a parker has one consumer thread).
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 1000 {
                match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok(i) => got.push(i),
                    Err(e) => panic!("{e:?} after {} items", got.len()),
                }
            }
            assert_eq!(
                rx.recv_timeout(Duration::from_millis(1)),
                Err(RecvTimeoutError::Timeout)
            );
            assert!(!rx.wait_ready(Duration::from_millis(1)));
            // A receiver parked for a long time wakes promptly when the last sender drops.
            let started = Instant::now();
            let result = rx.recv_timeout(Duration::from_secs(30));
            (got, result, started.elapsed())
        });
        for i in 0..1000 {
            tx2.send(i).unwrap();
        }
        drop(tx2);
        std::thread::sleep(Duration::from_millis(50));
        drop(tx);
        let (got, result, waited) = consumer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(result, Err(RecvTimeoutError::Disconnected));
        assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    }

    #[test]
    fn a_wake_ends_a_wait_until_at_once() {
        let (tx, rx) = bounded::<()>(1);
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&flag);
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let ready = rx.wait_until(Duration::from_secs(30), || seen.load(Ordering::SeqCst));
            (ready, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        flag.store(true, Ordering::SeqCst);
        tx.wake();
        let (ready, waited) = waiter.join().unwrap();
        assert!(ready);
        assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
    }

    #[test]
    fn the_channel_stays_bounded() {
        let (tx, _rx) = bounded(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(tx.len(), 2);
    }
}
