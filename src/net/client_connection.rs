//! The remote-client side: one authenticated connection to one member, shared by many threads.

use super::config::CLIENT_KEEPALIVE_INTERVAL;
use super::handshake::{self, InitiatorParams, Role};
use super::tls::{self, Stream};
use super::wire::{self, kind, FrameReader, Next};
use super::{ClientTls, ClusterSecret, Message};
use crate::codec;
use crate::error::{Error, Result};
use crate::limits::{MAX_CLIENT_INFLIGHT_REQUESTS, MAX_FRAME_PAYLOAD_BYTES};
use crate::types::{ClusterId, NodeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where one call's response lands. A mutex and a condition variable rather than a channel:
/// with hundreds of threads waiting on one connection, a channel's spin-then-yield before
/// parking costs more CPU than the call itself; this parks at once.
struct Slot<Resp> {
    state: Mutex<SlotState<Resp>>,
    ready: Condvar,
}

enum SlotState<Resp> {
    Waiting,
    Answered(Resp),
    /// The connection closed (or the reader gave up on the call): no answer will come.
    Abandoned,
}

impl<Resp> Slot<Resp> {
    fn new() -> Arc<Slot<Resp>> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting),
            ready: Condvar::new(),
        })
    }

    fn finish(&self, outcome: SlotState<Resp>) {
        let mut state = lock(&self.state);
        if matches!(*state, SlotState::Waiting) {
            *state = outcome;
            self.ready.notify_one();
        }
    }

    /// The response, `Err(true)` if the slot was abandoned, `Err(false)` at the deadline.
    fn wait(&self, deadline: Instant) -> std::result::Result<Resp, bool> {
        let mut state = lock(&self.state);
        loop {
            match std::mem::replace(&mut *state, SlotState::Waiting) {
                SlotState::Answered(r) => return Ok(r),
                SlotState::Abandoned => return Err(true),
                SlotState::Waiting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(false);
            }
            state = self
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Calls waiting for their response, by request id. `closed` lives under the same lock so that
/// a call can never register after the reader has failed every waiter.
struct Pending<Resp> {
    waiters: HashMap<u64, Arc<Slot<Resp>>>,
    closed: Option<String>,
}

/// The write half and the write timeout it has now (a `setsockopt` per call was one of the
/// three syscalls of a call; it is set again only when the call's time left is not within
/// [timeout, 2 * timeout]: a write then gives up at the earliest after half of the time left,
/// at the latest when it is spent, and the request counts as not sent).
struct Writer {
    stream: Stream,
    timeout: Option<Duration>,
    /// When the last frame was written: a connection that only receives (a watch's pushes)
    /// must still write a keepalive now and then, or the member closes it as idle.
    last_write: Instant,
}

impl Writer {
    /// Let a blocked write give up within `left` (and not before `left / 2`).
    fn limit_to(&mut self, left: Duration) -> std::io::Result<()> {
        let fits = self
            .timeout
            .is_some_and(|t| t <= left && left <= t.saturating_mul(2));
        if !fits {
            let timeout = (left * 3 / 4).max(Duration::from_millis(1)).min(left);
            self.stream.set_write_timeout(Some(timeout))?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }
}

/// Where pushed frames go (see [`ClientConnection::on_push`]).
type PushHandler = Box<dyn FnMut(&[u8]) + Send>;

struct Inner<Resp> {
    addr: SocketAddr,
    member: NodeId,
    client_id: u64,
    salt: u64,
    writer: Mutex<Writer>,
    /// A clone used only to shut the socket down.
    control: TcpStream,
    pending: Mutex<Pending<Resp>>,
    closed: AtomicBool,
    next_request_id: AtomicU64,
    /// The subscriber of pushed frames; dropped when the connection closes, which is how the
    /// subscriber learns of it.
    push_handler: Mutex<Option<PushHandler>>,
}

impl<Resp> Inner<Resp> {
    /// Close the connection and fail every waiting call (their senders drop, so they report
    /// `Timeout`: their requests were sent).
    fn close(&self, why: &str) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.control.shutdown(Shutdown::Both);
        let mut pending = lock(&self.pending);
        if pending.closed.is_none() {
            pending.closed = Some(why.to_string());
        }
        for (_, slot) in pending.waiters.drain() {
            slot.finish(SlotState::Abandoned);
        }
        drop(pending);
        drop(lock(&self.push_handler).take());
    }

    fn close_reason(&self) -> String {
        lock(&self.pending)
            .closed
            .clone()
            .unwrap_or_else(|| "closed".into())
    }
}

/// A remote client's connection to one member. `call` may be used from many threads at once;
/// requests are pipelined on the one connection and a reader thread routes each response to
/// its caller by request id.
///
/// There is no automatic reconnect: once the connection is down every call returns
/// `Unavailable`, and the caller (the client library) connects again, possibly to another
/// member.
pub struct ClientConnection<Req, Resp> {
    inner: Arc<Inner<Resp>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    _request: PhantomData<fn(Req)>,
}

impl<Req, Resp> fmt::Debug for ClientConnection<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConnection")
            .field("addr", &self.inner.addr)
            .field("member", &self.inner.member)
            .field("client_id", &self.inner.client_id)
            .field("closed", &self.inner.closed.load(Ordering::SeqCst))
            .finish()
    }
}

impl<Req: Message, Resp: Message> ClientConnection<Req, Resp> {
    /// Connect to the member at `addr` and run the handshake as client `client_id`, all within
    /// `timeout`. A refused handshake (wrong secret or cluster) is `Auth`; a member that cannot
    /// be reached, is busy or shutting down is `Unavailable`.
    pub fn connect(
        addr: SocketAddr,
        cluster_id: ClusterId,
        secret: &ClusterSecret,
        client_id: u64,
        timeout: Duration,
    ) -> Result<ClientConnection<Req, Resp>> {
        Self::connect_with(addr, cluster_id, secret, client_id, timeout, None)
    }

    /// [`ClientConnection::connect`], over TLS when `tls` is given. The member's certificate
    /// must be signed by the CA in `tls` and valid for `addr`'s IP address. A TLS client
    /// against a plaintext member, and the reverse, fail with `Auth` saying so.
    pub fn connect_with(
        addr: SocketAddr,
        cluster_id: ClusterId,
        secret: &ClusterSecret,
        client_id: u64,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<ClientConnection<Req, Resp>> {
        let deadline = Instant::now() + timeout;
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| Error::Unavailable(format!("cannot connect to {addr}: {e}")))?;
        wire::configure_socket(&tcp)?;
        let control = tcp
            .try_clone()
            .map_err(|e| Error::io("cloning a socket", e))?;
        let unavailable = |e: Error| match e {
            Error::Timeout(_) | Error::Io { .. } => {
                Error::Unavailable(format!("handshake with {addr} failed: {e}"))
            }
            other => other,
        };
        let mut stream = tls::connect_stream(tcp, tls.map(|t| t.config()), addr, deadline)
            .map_err(unavailable)?;
        let params = InitiatorParams {
            cluster_id,
            secret,
            role: Role::Client { client_id },
            expected_acceptor: None,
            founding: None,
        };
        let established = handshake::initiate(
            &mut stream,
            addr,
            &params,
            deadline,
            MAX_FRAME_PAYLOAD_BYTES,
        )
        .map_err(unavailable)?;
        stream
            .set_read_timeout(Some(CLIENT_KEEPALIVE_INTERVAL))
            .map_err(|e| Error::io("setting a read timeout", e))?;
        let clone = |s: &Stream| s.try_clone().map_err(|e| Error::io("cloning a socket", e));
        let inner = Arc::new(Inner {
            addr,
            member: established.acceptor,
            client_id,
            salt: established.salt,
            writer: Mutex::new(Writer {
                stream: clone(&stream)?,
                timeout: None,
                last_write: Instant::now(),
            }),
            control,
            pending: Mutex::new(Pending {
                waiters: HashMap::new(),
                closed: None,
            }),
            closed: AtomicBool::new(false),
            next_request_id: AtomicU64::new(1),
            push_handler: Mutex::new(None),
        });
        let reader_inner = Arc::clone(&inner);
        let reader = established.reader;
        let thread = thread::Builder::new()
            .name(format!("haven-client-{client_id}-reader"))
            .spawn(move || read_responses::<Resp>(reader_inner, stream, reader))
            .map_err(|e| Error::io("spawning the client reader thread", e))?;
        Ok(ClientConnection {
            inner,
            reader: Mutex::new(Some(thread)),
            _request: PhantomData,
        })
    }

    /// Send `request` and wait up to `timeout` for its response.
    ///
    /// `Unavailable`: the request was not sent (the connection was down, or broke before the
    /// whole request was written), so it was certainly not applied. `Timeout`: it was sent and
    /// no response came (in time, or before the connection broke): it may have been applied.
    /// `InvalidArgument`: the request does not fit in a frame.
    pub fn call(&self, request: Req, timeout: Duration) -> Result<Resp> {
        let deadline = Instant::now() + timeout;
        let inner = &self.inner;
        let addr = inner.addr;
        let request_id = inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        codec::append_frame(
            &mut frame,
            kind::CLIENT_REQUEST,
            inner.salt,
            &(request_id, &request),
        )?;
        let slot = Slot::new();
        {
            let mut pending = lock(&inner.pending);
            if let Some(why) = &pending.closed {
                return Err(Error::Unavailable(format!(
                    "connection to {addr} is closed ({why}); request not sent"
                )));
            }
            if pending.waiters.len() >= MAX_CLIENT_INFLIGHT_REQUESTS {
                return Err(Error::Unavailable(format!(
                    "{MAX_CLIENT_INFLIGHT_REQUESTS} requests already in flight to {addr}; \
                     request not sent"
                )));
            }
            pending.waiters.insert(request_id, Arc::clone(&slot));
        }
        let not_sent = |why: String| {
            lock(&inner.pending).waiters.remove(&request_id);
            Error::Unavailable(format!("request to {addr} not sent: {why}"))
        };
        {
            let mut writer = lock(&inner.writer);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(not_sent("timed out waiting to write".into()));
            }
            if let Err(e) = writer.limit_to(left) {
                return Err(not_sent(e.to_string()));
            }
            writer.last_write = Instant::now();
            if let Err(e) = writer.stream.write_all_bytes(&frame) {
                // A partial frame is never processed, and the connection is closed so no later
                // bytes can complete it: the request was not applied.
                drop(writer);
                inner.close(&format!("write failed: {e}"));
                return Err(not_sent(e.to_string()));
            }
        }
        match slot.wait(deadline) {
            Ok(response) => Ok(response),
            Err(false) => {
                lock(&inner.pending).waiters.remove(&request_id);
                Err(Error::Timeout(format!(
                    "no response from {addr} within {timeout:?}; the request was sent and may \
                     have been applied"
                )))
            }
            Err(true) => Err(Error::Timeout(format!(
                "connection to {addr} lost after the request was sent ({}); it may have been \
                 applied",
                inner.close_reason()
            ))),
        }
    }

    /// Hand every pushed frame's payload (frame kind 34, `ClientPush`) to `handler`, on the
    /// reader thread (so it must not block), in the order they arrive. It replaces an earlier
    /// handler and is dropped when the connection closes (or at once if it is closed already),
    /// which tells its owner that nothing more will come. Without a handler pushed frames are
    /// dropped.
    pub fn on_push(&self, handler: impl FnMut(&[u8]) + Send + 'static) {
        let mut slot = lock(&self.inner.push_handler);
        if self.inner.closed.load(Ordering::SeqCst) {
            return;
        }
        *slot = Some(Box::new(handler));
        drop(slot);
        // Closed meanwhile: `close` may have looked before the handler was in place.
        if self.inner.closed.load(Ordering::SeqCst) {
            drop(lock(&self.inner.push_handler).take());
        }
    }

    /// The member that accepted this connection.
    pub fn member(&self) -> NodeId {
        self.inner.member
    }

    /// The client id given at connect.
    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    /// The member's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Whether the connection is down (every call would return `Unavailable`).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Calls waiting for a response right now.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.pending).waiters.len()
    }

    /// Close the connection and join its reader thread. Calls in flight end with `Timeout`.
    pub fn close(&self) {
        self.inner.close("closed by the client");
        if let Some(handle) = lock(&self.reader).take() {
            let _ = handle.join();
        }
    }
}

impl<Req, Resp> Drop for ClientConnection<Req, Resp> {
    fn drop(&mut self) {
        self.inner.close("closed by the client");
        if let Some(handle) = lock(&self.reader).take() {
            let _ = handle.join();
        }
    }
}

/// The reader thread: route responses to their callers; write a keepalive whenever nothing has
/// arrived for a keepalive interval.
fn read_responses<Resp: Message>(
    inner: Arc<Inner<Resp>>,
    mut stream: Stream,
    mut reader: FrameReader,
) {
    let mut keepalive = Vec::new();
    if codec::append_raw_frame(&mut keepalive, kind::KEEPALIVE, inner.salt, &[]).is_err() {
        keepalive.clear();
    }
    // Bounded: ends when the connection closes or fails (closing it shuts the socket down).
    let why = loop {
        if inner.closed.load(Ordering::SeqCst) {
            break "closed by the client".to_string();
        }
        match reader.next(&mut stream) {
            Ok(Next::Frame {
                kind: kind::CLIENT_RESPONSE,
                payload,
            }) => match codec::decode_value::<(u64, Resp)>(payload) {
                Ok((request_id, response)) => {
                    // No waiter: the call timed out already; the late response is dropped.
                    let waiter = lock(&inner.pending).waiters.remove(&request_id);
                    if let Some(slot) = waiter {
                        slot.finish(SlotState::Answered(response));
                    }
                }
                Err(e) => break format!("undecodable response: {e}"),
            },
            Ok(Next::Frame {
                kind: kind::CLIENT_PUSH,
                payload,
            }) => {
                if let Some(handler) = lock(&inner.push_handler).as_mut() {
                    handler(payload);
                }
                // Pushes keep the read side busy, so the timeout below may never fire.
                if let Ok(mut writer) = inner.writer.try_lock() {
                    if writer.last_write.elapsed() >= CLIENT_KEEPALIVE_INTERVAL {
                        writer.last_write = Instant::now();
                        let sent = writer
                            .limit_to(CLIENT_KEEPALIVE_INTERVAL)
                            .and_then(|_| writer.stream.write_all_bytes(&keepalive));
                        if let Err(e) = sent {
                            break format!("keepalive failed: {e}");
                        }
                    }
                }
            }
            Ok(Next::Frame {
                kind: kind::KEEPALIVE,
                ..
            }) => {}
            Ok(Next::Frame { kind, .. }) => break format!("unexpected frame kind {kind}"),
            Ok(Next::TimedOut) => {
                // A writer busy with a request proves liveness well enough; skip the keepalive.
                if let Ok(mut writer) = inner.writer.try_lock() {
                    writer.last_write = Instant::now();
                    let sent = writer
                        .limit_to(CLIENT_KEEPALIVE_INTERVAL)
                        .and_then(|_| writer.stream.write_all_bytes(&keepalive));
                    if let Err(e) = sent {
                        break format!("keepalive failed: {e}");
                    }
                }
            }
            Ok(Next::Closed) => break "the member closed the connection".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    inner.close(&why);
}
