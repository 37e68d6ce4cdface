//! Outbound lanes: one sender thread per (peer, lane) with a bounded queue, coalescing writes,
//! reconnecting with capped exponential backoff and jitter.

use super::config::log_event;
use super::handshake::{self, InitiatorParams, Role};
use super::tls::{self, Stream};
use super::wire::{self, kind};
use super::{ClusterSecret, Lane, LaneStats, Message, SendOutcome};
use crate::codec;
use crate::error::{Error, Result};
use crate::limits::{MAX_FRAME_PAYLOAD_BYTES, MAX_PEER_BATCH_BYTES, MAX_PEER_BATCH_MESSAGES};
use crate::logging::Level;
use crate::park::{self, ParkedReceiver, ParkedSender};
use crate::types::{ClusterId, NodeId};
use crossbeam_channel::{RecvTimeoutError, TryRecvError, TrySendError};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What every sender thread of one transport shares.
pub(crate) struct SenderContext {
    pub(crate) node_id: NodeId,
    pub(crate) cluster_id: ClusterId,
    pub(crate) secret: ClusterSecret,
    pub(crate) founding_digest: Option<[u8; 32]>,
    /// Mutual TLS on every lane (this member's certificate, the member CA); None: plaintext.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    /// Set once, when the transport shuts down.
    pub(crate) stopping: Arc<AtomicBool>,
}

/// Monotonic counters of one lane. They outlive the lane's thread, so an address change (which
/// restarts the thread) does not reset them.
#[derive(Default)]
pub(crate) struct LaneCounters {
    connected: AtomicBool,
    messages_sent: AtomicU64,
    write_batches: AtomicU64,
    bytes_sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unreachable: AtomicU64,
    dropped_write_failed: AtomicU64,
    dropped_too_large: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The lane's connection as the senders of messages may write to it directly (see
/// [`LaneHandle::try_send`]). Whoever holds it is the only one writing to the connection, and
/// the lane thread holds it from taking messages off the queue until they are written, so frames
/// are never interleaved and a direct write never overtakes a queued message.
#[derive(Default)]
struct Outlet {
    /// The connection (a clone) and its frame salt; `None` while the lane is not connected.
    stream: Option<(TcpStream, u64)>,
    /// Direct writes (see [`wire::DirectWrites`]).
    direct: wire::DirectWrites,
}

/// State shared between a lane's handle and its thread.
struct LaneControl {
    /// The connection in use (a clone), so that closing the lane can interrupt a blocked write.
    stream: Mutex<Option<TcpStream>>,
    /// Set when the lane is removed.
    closed: AtomicBool,
    outlet: Mutex<Outlet>,
    /// `outlet.leftover` is not empty (read without the lock by the waiting lane thread).
    has_leftover: AtomicBool,
}

impl LaneControl {
    fn set_stream(&self, stream: Option<TcpStream>) {
        let mut slot = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            let _ = old.shutdown(Shutdown::Both);
        }
        *slot = stream;
    }

    fn lock_outlet(&self) -> MutexGuard<'_, Outlet> {
        self.outlet.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Outlet {
    /// Forget the connection and any partial frame of it.
    fn detach(&mut self, control: &LaneControl) {
        self.stream = None;
        self.direct.leftover.clear();
        control.has_leftover.store(false, Ordering::SeqCst);
    }
}

/// The caller's side of one lane.
pub(crate) struct LaneHandle<M> {
    /// Parked: the lane's thread waits for messages without spinning (see `park.rs`).
    tx: ParkedSender<M>,
    counters: Arc<LaneCounters>,
    control: Arc<LaneControl>,
    thread: Option<JoinHandle<()>>,
}

impl<M: Message> LaneHandle<M> {
    /// Start the lane's sender thread. It connects lazily, when the first message arrives.
    pub(crate) fn spawn(
        ctx: Arc<SenderContext>,
        peer: NodeId,
        addr: SocketAddr,
        lane: Lane,
        capacity: usize,
        counters: Arc<LaneCounters>,
    ) -> Result<LaneHandle<M>> {
        let (tx, rx) = park::bounded(capacity);
        let control = Arc::new(LaneControl {
            stream: Mutex::new(None),
            closed: AtomicBool::new(false),
            outlet: Mutex::new(Outlet::default()),
            has_leftover: AtomicBool::new(false),
        });
        let sender = LaneSender {
            ctx: Arc::clone(&ctx),
            peer,
            addr,
            lane,
            rx,
            counters: Arc::clone(&counters),
            control: Arc::clone(&control),
            name: format!("{} -> {peer} at {addr} ({lane} lane)", ctx.node_id),
        };
        let thread = thread::Builder::new()
            .name(format!("haven-net-{}-{peer}-{lane}", ctx.node_id))
            .spawn(move || sender.run())
            .map_err(|e| Error::io("spawning a peer sender thread", e))?;
        Ok(LaneHandle {
            tx,
            counters,
            control,
            thread: Some(thread),
        })
    }

    /// Send a message without blocking: written on the caller's thread when the lane is
    /// connected and idle, else queued for the lane's thread.
    pub(crate) fn try_send(&self, msg: M) -> SendOutcome {
        let Err(msg) = self.try_write_direct(msg) else {
            return SendOutcome::Queued;
        };
        match self.tx.try_send(msg) {
            Ok(()) => SendOutcome::Queued,
            Err(TrySendError::Full(_)) => {
                bump(&self.counters.dropped_queue_full, 1);
                SendOutcome::QueueFull
            }
            Err(TrySendError::Disconnected(_)) => SendOutcome::ShutDown,
        }
    }

    /// Write `msg` to the connection on this thread if the lane is connected, nothing is queued
    /// and nobody else is writing; else hand it back. Saves the lane thread's wake-up, which
    /// at one writer is a hop on the path of every write (leader -> follower and back).
    /// Never blocks: the socket is written without waiting, and what it does not take at once
    /// is left for the lane thread, which writes it before anything else.
    fn try_write_direct(&self, msg: M) -> std::result::Result<(), M> {
        if self.tx.len() > 0 {
            return Err(msg);
        }
        let Ok(mut guard) = self.control.outlet.try_lock() else {
            return Err(msg);
        };
        let out = &mut *guard;
        // Checked again under the lock: the lane thread takes messages only while holding it.
        if !out.direct.ready() || self.tx.len() > 0 {
            return Err(msg);
        }
        let Some((stream, salt)) = out.stream.as_ref() else {
            return Err(msg);
        };
        match out.direct.write(stream, kind::PEER_MESSAGE, *salt, &msg) {
            // The lane thread drops it, counts it and logs why.
            wire::Direct::Unframed => return Err(msg),
            wire::Direct::Sent { bytes, partial } => {
                bump(&self.counters.bytes_sent, bytes as u64);
                bump(&self.counters.messages_sent, 1);
                bump(&self.counters.write_batches, 1);
                if partial {
                    self.control.has_leftover.store(true, Ordering::SeqCst);
                    self.tx.wake();
                }
            }
            wire::Direct::Failed(_) => {
                // Lost like a message in a failed write. Shutting the socket down makes the
                // lane thread see the connection closed and reconnect for the next message.
                let _ = stream.shutdown(Shutdown::Both);
                out.detach(&self.control);
                bump(&self.counters.dropped_write_failed, 1);
                self.tx.wake();
            }
        }
        Ok(())
    }

    /// A snapshot of the lane's counters.
    pub(crate) fn stats(&self) -> LaneStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LaneStats {
            connected: c.connected.load(Ordering::Relaxed),
            queued: self.tx.len(),
            messages_sent: get(&c.messages_sent),
            write_batches: get(&c.write_batches),
            bytes_sent: get(&c.bytes_sent),
            dropped_queue_full: get(&c.dropped_queue_full),
            dropped_unreachable: get(&c.dropped_unreachable),
            dropped_write_failed: get(&c.dropped_write_failed),
            dropped_too_large: get(&c.dropped_too_large),
            connects: get(&c.connects),
            connect_failures: get(&c.connect_failures),
        }
    }

    /// The counters, to carry over to a replacement lane.
    pub(crate) fn counters(&self) -> Arc<LaneCounters> {
        Arc::clone(&self.counters)
    }

    /// Stop the lane without waiting: queued messages are discarded, a blocked write is
    /// interrupted. Returns the thread for the caller to join when it may block.
    pub(crate) fn close(mut self) -> Option<JoinHandle<()>> {
        self.control.closed.store(true, Ordering::SeqCst);
        self.control.set_stream(None);
        self.counters.connected.store(false, Ordering::Relaxed);
        // Dropping `self.tx` (with `self`) wakes the thread if it waits for a message.
        self.thread.take()
    }
}

/// Capped exponential backoff with "equal jitter": each delay is half the current step plus a
/// random part of the other half, so retries from many members spread out but never come
/// sooner than half the step.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            step: min,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt; the step doubles up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        // xorshift64: the jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = self.step / 2;
        let half_nanos = half.as_nanos().min(u128::from(u64::MAX)) as u64;
        let jitter = Duration::from_nanos(self.rng % half_nanos.saturating_add(1));
        let delay = half + jitter;
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Back to the shortest step (after a successful connect).
    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }
}

/// A seed for the backoff jitter: random if the OS gives us randomness, else the clock.
fn jitter_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
}

/// An authenticated outbound connection.
struct Connection {
    stream: Stream,
    salt: u64,
}

/// The sender thread of one lane.
struct LaneSender<M> {
    ctx: Arc<SenderContext>,
    peer: NodeId,
    addr: SocketAddr,
    lane: Lane,
    rx: ParkedReceiver<M>,
    counters: Arc<LaneCounters>,
    control: Arc<LaneControl>,
    name: String,
}

impl<M: Message> LaneSender<M> {
    fn log(&self, level: Level, what: &str) {
        log_event(level, self.ctx.node_id, &format!("{}: {what}", self.name));
    }

    fn stopped(&self) -> bool {
        self.control.closed.load(Ordering::SeqCst) || self.ctx.stopping.load(Ordering::SeqCst)
    }

    fn connect(&self) -> Result<Connection> {
        let tcp = TcpStream::connect_timeout(&self.addr, self.ctx.connect_timeout)
            .map_err(|e| Error::Unavailable(format!("cannot connect: {e}")))?;
        wire::configure_socket(&tcp)?;
        // Registered before the handshake, so that closing the lane interrupts it.
        self.control.set_stream(tcp.try_clone().ok());
        if self.stopped() {
            return Err(Error::Unavailable("lane closed".into()));
        }
        let deadline = Instant::now() + self.ctx.handshake_timeout;
        let mut stream = tls::connect_stream(tcp, self.ctx.tls.as_ref(), self.addr, deadline)?;
        let params = InitiatorParams {
            cluster_id: self.ctx.cluster_id,
            secret: &self.ctx.secret,
            role: Role::Peer {
                node_id: self.ctx.node_id,
                lane: self.lane,
            },
            expected_acceptor: Some(self.peer),
            founding: self.ctx.founding_digest,
        };
        let established = handshake::initiate(
            &mut stream,
            self.addr,
            &params,
            deadline,
            MAX_FRAME_PAYLOAD_BYTES,
        )?;
        stream
            .set_write_timeout(Some(self.ctx.write_timeout))
            .map_err(|e| Error::io("setting a write timeout", e))?;
        Ok(Connection {
            stream,
            salt: established.salt,
        })
    }

    fn disconnect(&self, conn: &mut Option<Connection>) {
        self.control.lock_outlet().detach(&self.control);
        self.disconnect_locked(conn);
    }

    /// [`LaneSender::disconnect`] for a caller that holds the outlet (and detaches it).
    fn disconnect_locked(&self, conn: &mut Option<Connection>) {
        if let Some(old) = conn.take() {
            let _ = old.stream.shutdown(Shutdown::Both);
        }
        self.control.set_stream(None);
        self.counters.connected.store(false, Ordering::Relaxed);
    }

    /// Discard `first` and everything queued now, counting them as unreachable.
    fn discard_queued(&self, first: Option<M>) {
        let discarded = u64::from(first.is_some()) + self.rx.channel().try_iter().count() as u64;
        bump(&self.counters.dropped_unreachable, discarded);
    }

    /// Append one message to the batch; a message too large to frame is dropped and counted.
    fn encode(&self, batch: &mut Vec<u8>, salt: u64, msg: &M) -> bool {
        match codec::append_frame(batch, kind::PEER_MESSAGE, salt, msg) {
            Ok(_) => true,
            Err(e) => {
                bump(&self.counters.dropped_too_large, 1);
                self.log(Level::Warn, &format!("message dropped: {e}"));
                false
            }
        }
    }

    fn run(self) {
        let mut conn: Option<Connection> = None;
        let mut backoff = Backoff::new(self.ctx.backoff_min, self.ctx.backoff_max, jitter_seed());
        let mut retry_at: Option<Instant> = None;
        // The last connect error logged, so that a peer that stays down is reported once, not
        // on every attempt.
        let mut last_error: Option<String> = None;
        let mut batch: Vec<u8> = Vec::new();
        // Bounded: the loop ends when the lane is closed (its queue disconnects) or the
        // transport stops; every iteration waits for a message or a keepalive tick.
        loop {
            if self.stopped() {
                break;
            }
            if conn.is_some() {
                // Wait without taking anything: a message is taken off the queue only while
                // holding the outlet, so a direct write (which needs an empty queue and the
                // outlet) never overtakes it.
                let has_leftover = &self.control.has_leftover;
                let woken = self.rx.wait_until(self.ctx.keepalive_interval, || {
                    has_leftover.load(Ordering::SeqCst)
                });
                if self.stopped() {
                    break;
                }
                // A peer that restarted closed our old connection: notice it before writing
                // into it, so that the queued messages go to the new process instead of being
                // lost (the next round reconnects).
                if conn
                    .as_ref()
                    .is_some_and(|c| wire::peer_has_closed(c.stream.tcp()))
                {
                    self.disconnect(&mut conn);
                    self.log(Level::Info, "peer closed the connection; reconnecting");
                    continue;
                }
                let mut out = self.control.lock_outlet();
                let first = match self.rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => None,
                };
                if first.is_none() && woken && out.direct.leftover.is_empty() {
                    // A stale wake-up, or a direct write that failed and detached the outlet
                    // (the connection is shut down: the next message reconnects).
                    continue;
                }
                let keepalive = !woken;
                if let Err(message) =
                    self.write_batch(&mut batch, &mut conn, &mut out, first, keepalive)
                {
                    last_error = Some(message);
                }
                continue;
            }
            // Connect lazily: an idle lane to a dead peer costs nothing (a wake-up per
            // keepalive interval at most).
            let first = match self.rx.recv_timeout(self.ctx.keepalive_interval) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if self.stopped() {
                break;
            }
            if retry_at.is_some_and(|at| Instant::now() < at) {
                self.discard_queued(Some(first));
                continue;
            }
            match self.connect() {
                Ok(c) => {
                    conn = Some(c);
                    retry_at = None;
                    backoff.reset();
                    bump(&self.counters.connects, 1);
                    self.counters.connected.store(true, Ordering::Relaxed);
                    if last_error.take().is_some() {
                        self.log(Level::Info, "reconnected");
                    }
                }
                Err(e) => {
                    self.disconnect(&mut conn);
                    bump(&self.counters.connect_failures, 1);
                    let delay = backoff.next_delay();
                    let message = e.to_string();
                    if last_error.as_deref() != Some(message.as_str()) {
                        self.log(
                            Level::Warn,
                            &format!(
                                "{message}; retrying with backoff (messages are dropped \
                                 until connected)"
                            ),
                        );
                    }
                    last_error = Some(message);
                    retry_at = Some(Instant::now() + delay);
                    self.discard_queued(Some(first));
                    continue;
                }
            }
            let mut out = self.control.lock_outlet();
            // Attached before writing: `first` and what is queued go out first (under the
            // outlet), direct writes after them.
            // TLS lanes take no direct writes (see `tls.rs`): the outlet stays detached.
            out.stream = conn.as_ref().and_then(|c| match &c.stream {
                Stream::Plain(tcp) => Some((tcp.try_clone().ok()?, c.salt)),
                Stream::Tls(_) => None,
            });
            if let Err(message) =
                self.write_batch(&mut batch, &mut conn, &mut out, Some(first), false)
            {
                last_error = Some(message);
            }
        }
        self.disconnect(&mut conn);
    }

    /// Write, under the outlet: its leftover bytes, then `first` (or a keepalive frame when
    /// `keepalive` and nothing else goes out), then whatever else is queued (bounded). A failed
    /// write disconnects and returns what to log.
    fn write_batch(
        &self,
        batch: &mut Vec<u8>,
        conn: &mut Option<Connection>,
        out: &mut Outlet,
        first: Option<M>,
        keepalive: bool,
    ) -> std::result::Result<(), String> {
        let Some(c) = conn.as_mut() else {
            return Ok(());
        };
        batch.clear();
        if !out.direct.leftover.is_empty() {
            batch.append(&mut out.direct.leftover);
            self.control.has_leftover.store(false, Ordering::SeqCst);
        }
        let mut count = 0u64;
        match &first {
            Some(msg) => count += u64::from(self.encode(batch, c.salt, msg)),
            None if keepalive && batch.is_empty() => {
                // Nothing sent for a keepalive interval: tell the peer we are alive.
                if let Err(e) = codec::append_raw_frame(batch, kind::KEEPALIVE, c.salt, &[]) {
                    self.log(Level::Warn, &format!("cannot frame a keepalive: {e}"));
                }
            }
            None => {}
        }
        drop(first);
        // Coalesce: whatever else is queued rides in the same write.
        let mut taken = 0usize;
        while batch.len() < MAX_PEER_BATCH_BYTES && taken < MAX_PEER_BATCH_MESSAGES {
            let Ok(msg) = self.rx.try_recv() else { break };
            taken += 1;
            count += u64::from(self.encode(batch, c.salt, &msg));
        }
        let mut result = Ok(());
        if !batch.is_empty() {
            let written = c.stream.write_all_bytes(batch);
            out.direct.last_write = Some(Instant::now());
            match written {
                Ok(()) => {
                    bump(&self.counters.bytes_sent, batch.len() as u64);
                    if count > 0 {
                        bump(&self.counters.messages_sent, count);
                        bump(&self.counters.write_batches, 1);
                    }
                }
                Err(e) => {
                    bump(&self.counters.dropped_write_failed, count);
                    let message = format!("write failed, {count} messages lost: {e}");
                    self.log(Level::Warn, &message);
                    out.detach(&self.control);
                    self.disconnect_locked(conn);
                    result = Err(message);
                }
            }
        }
        if batch.capacity() > wire::KEEP_WRITE_BUFFER_BYTES {
            *batch = Vec::new();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_range() {
        let min = Duration::from_millis(20);
        let max = Duration::from_millis(1000);
        let mut backoff = Backoff::new(min, max, 12345);
        let mut step = min;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(max);
        }
        // Capped: never more than max.
        assert!(backoff.next_delay() <= max);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn backoff_jitter_spreads_retries() {
        let max = Duration::from_secs(1);
        let mut a = Backoff::new(max, max, 1);
        let mut b = Backoff::new(max, max, 2);
        let differing = (0..10).filter(|_| a.next_delay() != b.next_delay()).count();
        assert!(differing >= 9);
    }
}
