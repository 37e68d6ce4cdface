//! An unbounded single-consumer work queue that parks its consumer at once.
//!
//! Used between the driver and the apply thread. A crossbeam channel spins and yields
//! (`sched_yield`) for a while before parking a waiting receiver; the apply thread waits between
//! small batches all the time, and on a 2-core machine shared by three members that spinning
//! showed up as 7% of the leader's apply thread. A mutex, a condition variable and a flag that
//! says whether the consumer sleeps cost one futex wake per hand-off and nothing while idle.

pub(crate) use crate::park::Parker;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct State<T> {
    items: VecDeque<T>,
    /// The consumer is waiting on the condition variable.
    sleeping: bool,
    /// Every sender is gone.
    closed: bool,
    senders: usize,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The producing side (cloneable).
pub(crate) struct WorkSender<T> {
    inner: Arc<Inner<T>>,
}

/// The consuming side.
pub(crate) struct WorkReceiver<T> {
    inner: Arc<Inner<T>>,
}

/// What [`WorkReceiver::recv_timeout`] got.
pub(crate) enum Received<T> {
    Item(T),
    Timeout,
    Closed,
}

/// A new queue.
pub(crate) fn work_queue<T>() -> (WorkSender<T>, WorkReceiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sleeping: false,
            closed: false,
            senders: 1,
        }),
        ready: Condvar::new(),
    });
    (
        WorkSender {
            inner: Arc::clone(&inner),
        },
        WorkReceiver { inner },
    )
}

impl<T> WorkSender<T> {
    /// Queue `item`; never blocks on the consumer.
    pub(crate) fn send(&self, item: T) {
        let mut state = self.inner.lock();
        state.items.push_back(item);
        let wake = state.sleeping;
        drop(state);
        if wake {
            self.inner.ready.notify_one();
        }
    }
}

impl<T> Clone for WorkSender<T> {
    fn clone(&self) -> Self {
        self.inner.lock().senders += 1;
        WorkSender {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Drop for WorkSender<T> {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.senders -= 1;
        if state.senders == 0 {
            state.closed = true;
            drop(state);
            self.inner.ready.notify_one();
        }
    }
}

impl<T> WorkReceiver<T> {
    /// The next item, waiting up to `timeout`.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Received<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.inner.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Received::Item(item);
            }
            if state.closed {
                return Received::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Received::Timeout;
            }
            state.sleeping = true;
            state = self
                .inner
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.sleeping = false;
        }
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&self) -> Option<T> {
        self.inner.lock().items.pop_front()
    }
}

/// A channel sender that wakes the consumer's [`Parker`] after each send.
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

    /// Send (never blocks: the channel is unbounded) and wake the consumer.
    pub(crate) fn send(&self, item: T) {
        if self.tx.send(item).is_ok() {
            self.parker.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_and_the_queue_closes_with_its_senders() {
        let (tx, rx) = work_queue();
        let tx2 = tx.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..1000 {
                tx2.send(i);
            }
        });
        let mut got = Vec::new();
        while got.len() < 1000 {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Received::Item(i) => got.push(i),
                Received::Timeout => panic!("timed out after {} items", got.len()),
                Received::Closed => panic!("closed early"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(1)),
            Received::Timeout
        ));
        drop(tx);
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(1)),
            Received::Closed
        ));
    }
}
