//! Inbound connections: the acceptor's handshake, then a reader per connection: peer lanes
//! deliver `(from, message)`, client connections deliver [`ClientEvent`]s and are answered
//! through [`ClientHandle`].

use super::client_handle::{ClientConnInner, ClientEvent, ClientHandle};
use super::config::log_event;
use super::handshake::{self, AcceptorParams, Role};
use super::refusal::{Refusal, RefusalCode};
use super::shared::{lock, InboundConn, Shared};
use super::tls::{self, PeerCertificates, Stream};
use super::wire::{self, kind, FrameReader, Next};
use super::Message;
use crate::codec;
use crate::limits::{
    MAX_CLIENT_INFLIGHT_REQUESTS, MAX_FRAME_PAYLOAD_BYTES, MAX_PENDING_HANDSHAKES,
};
use crate::logging::Level;
use crate::park::{self, ParkedReceiver};
use crate::types::NodeId;
use crossbeam_channel::{SendTimeoutError, Sender, TryRecvError};
use std::cell::Cell;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Admit one accepted connection: register it and start its thread (handshake, then serve).
fn on_accept<M: Message, Req: Message, Resp: Message>(
    shared: &Arc<Shared<M, Req, Resp>>,
    stream: TcpStream,
) {
    let addr = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if shared.pending_handshakes.load(Ordering::SeqCst) >= MAX_PENDING_HANDSHAKES {
        shared
            .counters
            .connections_rejected
            .fetch_add(1, Ordering::Relaxed);
        shared.log(
            Level::Warn,
            &format!(
                "closed connection from {addr} at accept: {MAX_PENDING_HANDSHAKES} \
                 handshakes already in progress"
            ),
        );
        return;
    }
    // The accepting side writes too (responses, pushed frames, a lane's acknowledgements): with
    // Nagle on, a small frame behind an unacknowledged one waits for the other side's delayed
    // ACK, up to 40 ms.
    if let Err(e) = wire::configure_socket(&stream) {
        shared.log(Level::Warn, &format!("connection from {addr}: {e}"));
    }
    let registered = match stream.try_clone() {
        Ok(clone) => clone,
        Err(e) => {
            shared.log(Level::Warn, &format!("connection from {addr}: {e}"));
            return;
        }
    };
    let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = lock(&shared.conns);
        // Checked under the lock that shutdown drains, so no connection slips past it.
        if shared.is_stopping() {
            return;
        }
        conns.insert(
            id,
            InboundConn {
                stream: registered,
                addr,
                role: None,
            },
        );
    }
    shared.pending_handshakes.fetch_add(1, Ordering::SeqCst);
    let conn_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("haven-net-{}-in-{id}", shared.config.node_id))
        .spawn(move || serve(conn_shared, id, stream, addr));
    match spawned {
        Ok(handle) => shared.push_thread(handle),
        Err(e) => {
            shared.pending_handshakes.fetch_sub(1, Ordering::SeqCst);
            shared.unregister(id);
            shared.log(
                Level::Warn,
                &format!("cannot start a thread for {addr}, connection closed: {e}"),
            );
        }
    }
}

/// The accept thread: every connection to the listener goes through here.
pub(super) fn accept_loop<M: Message, Req: Message, Resp: Message>(
    shared: Arc<Shared<M, Req, Resp>>,
    listener: Arc<TcpListener>,
) {
    // Bounded by shutdown: `Transport::shutdown` sets `stopping` and wakes `accept`.
    for incoming in listener.incoming() {
        if shared.is_stopping() {
            break;
        }
        match incoming {
            Ok(stream) => on_accept(&shared, stream),
            Err(e) => {
                shared.log(Level::Warn, &format!("accept failed: {e}"));
                // Out of file descriptors, typically: do not spin while it lasts.
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// How often a reader blocked on a full delivery channel checks for shutdown.
const DELIVERY_POLL: Duration = Duration::from_millis(100);

/// Hand `item` to `tx`, waiting while the channel is full (TCP then pushes back on the other
/// side) but giving up when the transport stops. Returns false if the item was not delivered.
fn deliver<T>(
    tx: &Sender<T>,
    mut item: T,
    stopping: &AtomicBool,
    hook: Option<&super::DeliverHook>,
) -> bool {
    // Bounded by shutdown: each round waits at most DELIVERY_POLL and re-checks `stopping`.
    loop {
        match tx.send_timeout(item, DELIVERY_POLL) {
            Ok(()) => {
                if let Some(hook) = hook {
                    hook();
                }
                return true;
            }
            Err(SendTimeoutError::Disconnected(_)) => return false,
            Err(SendTimeoutError::Timeout(back)) => {
                if stopping.load(Ordering::SeqCst) {
                    return false;
                }
                item = back;
            }
        }
    }
}

/// Decrements the pending-handshake count however the handshake ends.
struct PendingGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The thread of one inbound connection: handshake, then serve it until it closes.
pub(super) fn serve<M: Message, Req: Message, Resp: Message>(
    shared: Arc<Shared<M, Req, Resp>>,
    id: u64,
    tcp: TcpStream,
    addr: SocketAddr,
) {
    let raw = tcp.try_clone();
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let mut pending = Some(PendingGuard(&shared.pending_handshakes));
    // TLS or plaintext, decided by the first byte; a mismatch is refused here, in plaintext.
    let opened = tls::accept_stream(
        tcp,
        shared.config.tls.as_ref(),
        shared.config.node_id,
        addr,
        deadline,
    );
    let (mut stream, certs) = match (opened, raw) {
        (Ok(opened), _) => opened,
        (Err(e), raw) => {
            drop(pending.take());
            shared
                .counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            if !shared.is_stopping() {
                shared.log(Level::Warn, &format!("refused connection from {addr}: {e}"));
            }
            if let Ok(raw) = raw {
                let _ = raw.shutdown(Shutdown::Both);
            }
            shared.unregister(id);
            return;
        }
    };
    let established = {
        let _pending = pending.take();
        // Set when `admit` reserves a client slot, so a later failure can release it.
        let reserved_client_slot = Cell::new(false);
        let admit = |role: &Role| admit(&shared, role, certs, &reserved_client_slot);
        let member_secret = &shared.config.secret;
        let params = AcceptorParams {
            node_id: shared.config.node_id,
            cluster_id: shared.config.cluster_id,
            member_secret,
            client_secret: shared
                .config
                .client_secret
                .as_ref()
                .unwrap_or(member_secret),
            founding: shared.config.founding_digest,
            admit: &admit,
        };
        let outcome = handshake::accept(
            &mut stream,
            addr,
            &params,
            deadline,
            MAX_FRAME_PAYLOAD_BYTES,
        );
        if outcome.is_err() && reserved_client_slot.get() {
            shared
                .counters
                .client_connections
                .fetch_sub(1, Ordering::SeqCst);
        }
        outcome
    };
    match established {
        Err(e) => {
            shared
                .counters
                .handshakes_refused
                .fetch_add(1, Ordering::Relaxed);
            if !shared.is_stopping() {
                shared.log(Level::Warn, &format!("refused connection from {addr}: {e}"));
            }
        }
        Ok(est) => {
            shared
                .counters
                .handshakes_accepted
                .fetch_add(1, Ordering::Relaxed);
            shared.register_role(id, est.role, addr);
            let setup = stream
                .set_read_timeout(Some(shared.config.idle_timeout))
                .and_then(|_| stream.set_write_timeout(Some(shared.config.write_timeout)));
            if let Err(e) = setup {
                shared.log(Level::Warn, &format!("connection from {addr}: {e}"));
            } else if shared.is_stopping() {
                // Shutdown drained the registry while we were in the handshake.
            } else {
                match est.role {
                    Role::Peer { node_id, .. } if !shared.is_peer(node_id) => {
                        // Removed while its handshake ran (`remove_peer` only closes
                        // connections whose role is registered, which ours now is).
                        shared.log(
                            Level::Warn,
                            &format!("closing {} from {addr}: no longer a peer", est.role),
                        );
                    }
                    Role::Peer { node_id, .. } => {
                        shared.log(Level::Info, &format!("accepted {} from {addr}", est.role));
                        serve_peer(&shared, node_id, est.role, &mut stream, est.reader);
                    }
                    Role::Client { client_id } => {
                        let salt = est.salt;
                        serve_client(&shared, id, client_id, addr, &mut stream, salt, est.reader);
                    }
                }
            }
            // The slot `admit` reserved is held for the connection's whole life.
            if let Role::Client { .. } = est.role {
                shared
                    .counters
                    .client_connections
                    .fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    shared.unregister(id);
}

/// Decide, before the proof, whether `role` may connect at all.
fn admit<M: Message, Req: Message, Resp: Message>(
    shared: &Shared<M, Req, Resp>,
    role: &Role,
    certs: PeerCertificates,
    reserved_client_slot: &Cell<bool>,
) -> std::result::Result<(), Refusal> {
    let me = shared.config.node_id;
    if shared.is_stopping() {
        return Err(Refusal::new(
            RefusalCode::ShuttingDown,
            format!("member {me} is shutting down"),
        ));
    }
    match *role {
        Role::Peer { node_id, .. } if node_id == me => Err(Refusal::new(
            RefusalCode::UnknownNode,
            format!("{role} claims this member's own id {me}"),
        )),
        Role::Peer { node_id, .. } if !shared.is_peer(node_id) => {
            let members: Vec<String> = shared.peer_ids().iter().map(|p| p.to_string()).collect();
            Err(Refusal::new(
                RefusalCode::UnknownNode,
                format!(
                    "{node_id} is not a member known to {me} (its peers: [{}])",
                    members.join(", ")
                ),
            ))
        }
        Role::Peer { .. } if certs.tls && !certs.member => Err(Refusal::new(
            RefusalCode::CertificateRequired,
            format!(
                "{role} presented no certificate signed by the member CA of member {me}: a \
                 client certificate cannot open a peer lane"
            ),
        )),
        Role::Peer { .. } => Ok(()),
        Role::Client { .. } if shared.clients.is_none() => Err(Refusal::new(
            RefusalCode::ClientsNotServed,
            format!("member {me} does not serve remote clients"),
        )),
        Role::Client { .. }
            if shared
                .config
                .tls
                .as_ref()
                .is_some_and(|t| t.requires_client_certificates())
                && !(certs.client || certs.member) =>
        {
            Err(Refusal::new(
                RefusalCode::CertificateRequired,
                format!("member {me} requires a client certificate signed by its client CA"),
            ))
        }
        Role::Client { .. } => {
            let max = shared.config.max_client_connections;
            let slots = &shared.counters.client_connections;
            if slots.fetch_add(1, Ordering::SeqCst) >= max {
                slots.fetch_sub(1, Ordering::SeqCst);
                return Err(Refusal::new(
                    RefusalCode::Busy,
                    format!("member {me} already serves {max} client connections"),
                ));
            }
            reserved_client_slot.set(true);
            Ok(())
        }
    }
}

/// What a connection's reader does after one frame.
enum Flow {
    /// Read the next frame.
    Continue,
    /// Stop reading without a word (the transport stops: a delivery was refused).
    Stop,
    /// Close the connection for this reason (logged).
    Close(String),
}

/// The reader loop every inbound connection runs after its handshake: hand each data frame to
/// `on_frame`, skip keepalives, and end on close, failure, idle timeout or shutdown, saying why
/// through `close`. A read error is not worth a line while the transport stops or when
/// `closed_here` says this side closed the connection itself.
fn read_frames<M: Message, Req: Message, Resp: Message>(
    shared: &Shared<M, Req, Resp>,
    stream: &mut Stream,
    reader: &mut FrameReader,
    mut on_frame: impl FnMut(u8, &[u8]) -> Flow,
    close: impl Fn(String),
    closed_here: impl Fn() -> bool,
) {
    // Bounded: ends when the connection closes, fails, idles out, or the transport stops.
    loop {
        match reader.next(stream) {
            Ok(Next::Frame {
                kind: kind::KEEPALIVE,
                ..
            }) => {}
            Ok(Next::Frame { kind, payload }) => match on_frame(kind, payload) {
                Flow::Continue => {}
                Flow::Stop => break,
                Flow::Close(why) => {
                    close(why);
                    break;
                }
            },
            Ok(Next::TimedOut) => {
                close(format!(
                    "nothing received for {:?}",
                    shared.config.idle_timeout
                ));
                break;
            }
            Ok(Next::Closed) => break,
            Err(e) => {
                if !shared.is_stopping() && !closed_here() {
                    close(e.to_string());
                }
                break;
            }
        }
    }
}

/// Read a peer lane until it closes, delivering each message as `(from, message)`.
fn serve_peer<M: Message, Req: Message, Resp: Message>(
    shared: &Shared<M, Req, Resp>,
    from: NodeId,
    role: Role,
    stream: &mut Stream,
    mut reader: FrameReader,
) {
    let on_frame = |frame_kind: u8, payload: &[u8]| match frame_kind {
        kind::PEER_MESSAGE => match codec::decode_value::<M>(payload) {
            Ok(msg) => {
                if !deliver(
                    &shared.inbound,
                    (from, msg),
                    &shared.stopping,
                    shared.config.on_deliver.as_ref(),
                ) {
                    return Flow::Stop;
                }
                shared
                    .counters
                    .messages_received
                    .fetch_add(1, Ordering::Relaxed);
                Flow::Continue
            }
            Err(e) => Flow::Close(format!("undecodable message: {e}")),
        },
        kind::REFUSAL => {
            let reason = handshake::decode_late_refusal(payload);
            Flow::Close(format!("it refused our welcome: {reason}"))
        }
        other => Flow::Close(format!("unexpected frame kind {other}")),
    };
    let close = |why: String| shared.log(Level::Warn, &format!("closing {role}: {why}"));
    read_frames(shared, stream, &mut reader, on_frame, close, || false);
}

/// Serve one client connection: this thread reads requests, a second one writes responses.
fn serve_client<M: Message, Req: Message, Resp: Message>(
    shared: &Shared<M, Req, Resp>,
    connection_id: u64,
    client_id: u64,
    addr: SocketAddr,
    stream: &mut Stream,
    salt: u64,
    mut reader: FrameReader,
) {
    let Some(events) = shared.clients.as_ref() else {
        return;
    };
    let (Ok(write_half), Ok(control)) = (stream.try_clone(), stream.try_clone()) else {
        shared.log(
            Level::Warn,
            &format!("client {client_id} at {addr}: cannot clone socket"),
        );
        return;
    };
    let (responses, queued) = park::bounded(MAX_CLIENT_INFLIGHT_REQUESTS);
    let inner = Arc::new(ClientConnInner {
        connection_id,
        client_id,
        peer_addr: addr,
        responses,
        closed: AtomicBool::new(false),
        salt,
        outlet: Mutex::new(wire::DirectWrites::default()),
        has_leftover: AtomicBool::new(false),
        pushes: Mutex::new(Default::default()),
        has_pushes: AtomicBool::new(false),
        fault: Mutex::new(None),
        stream: control,
    });
    let handle = ClientHandle {
        inner: Arc::clone(&inner),
    };
    let writer_inner = Arc::clone(&inner);
    let writer = thread::Builder::new()
        .name(format!(
            "haven-net-{}-client-{connection_id}-w",
            shared.config.node_id
        ))
        .spawn({
            let node = shared.config.node_id;
            let name = format!("{}: client {client_id} at {addr}", shared.config.node_id);
            move || {
                let warn = |what: String| log_event(Level::Warn, node, &format!("{name}: {what}"));
                client_writer(writer_inner, write_half, salt, queued, warn)
            }
        });
    let writer = match writer {
        Ok(writer) => writer,
        Err(e) => {
            shared.log(Level::Warn, &format!("client {client_id} at {addr}: {e}"));
            return;
        }
    };
    let close = |why: String| {
        shared.log(
            Level::Warn,
            &format!("closing client {client_id} at {addr}: {why}"),
        )
    };
    let on_frame = |frame_kind: u8, payload: &[u8]| match frame_kind {
        kind::CLIENT_REQUEST => match codec::decode_value::<(u64, Req)>(payload) {
            Ok((request_id, request)) => {
                let event = ClientEvent::Request {
                    conn: handle.clone(),
                    request_id,
                    request,
                };
                if !deliver(
                    events,
                    event,
                    &shared.stopping,
                    shared.config.on_deliver.as_ref(),
                ) {
                    return Flow::Stop;
                }
                shared
                    .counters
                    .client_requests_received
                    .fetch_add(1, Ordering::Relaxed);
                Flow::Continue
            }
            // The request id and the protocol version lead every request: a request that does
            // not decode but whose version does goes to the runtime, which can tell a newer
            // client (answered `UnsupportedVersion`) from a broken one.
            Err(e) => match codec::decode_prefix::<(u64, u32)>(payload) {
                Ok((request_id, version)) => {
                    let event = ClientEvent::Unreadable {
                        conn: handle.clone(),
                        request_id,
                        version,
                        error: e.to_string(),
                    };
                    if deliver(
                        events,
                        event,
                        &shared.stopping,
                        shared.config.on_deliver.as_ref(),
                    ) {
                        Flow::Continue
                    } else {
                        Flow::Stop
                    }
                }
                Err(_) => Flow::Close(format!("undecodable request: {e}")),
            },
        },
        other => Flow::Close(format!("unexpected frame kind {other}")),
    };
    read_frames(shared, stream, &mut reader, on_frame, close, || {
        handle.is_closed()
    });
    inner.close();
    let _ = writer.join();
    if let Some(fault) = inner.fault.lock().unwrap_or_else(|e| e.into_inner()).take() {
        close(fault);
    }
    if !shared.is_stopping() {
        deliver(
            events,
            ClientEvent::Closed { conn: handle },
            &shared.stopping,
            shared.config.on_deliver.as_ref(),
        );
    }
}

/// How long a client writer waits in one go (the wait ends earlier on a response or a close;
/// the bound only limits the cost of a lost wake-up, which the parker rules out).
const CLIENT_WRITER_WAIT: Duration = Duration::from_secs(1);

/// Write queued responses, coalescing whatever is queued into one write.
fn client_writer<Resp: Message>(
    inner: Arc<ClientConnInner<Resp>>,
    stream: Stream,
    salt: u64,
    queued: ParkedReceiver<(u64, Resp)>,
    warn: impl Fn(String),
) {
    let mut batch = Vec::new();
    // Bounded: ends when the connection closes (closing wakes the wait) or a write fails.
    loop {
        // Wait without taking anything: a response is taken off the queue only while holding
        // the outlet, so a direct write (which needs an empty queue and the outlet) never
        // overtakes it.
        let woken = queued.wait_until(CLIENT_WRITER_WAIT, || {
            inner.closed.load(Ordering::SeqCst)
                || inner.has_leftover.load(Ordering::SeqCst)
                || inner.has_pushes.load(Ordering::SeqCst)
        });
        if inner.closed.load(Ordering::SeqCst) {
            break;
        }
        if !woken {
            continue;
        }
        let mut out = inner.outlet.lock().unwrap_or_else(|e| e.into_inner());
        batch.clear();
        if !out.leftover.is_empty() {
            batch.append(&mut out.leftover);
            inner.has_leftover.store(false, Ordering::SeqCst);
        }
        if inner.has_pushes.load(Ordering::SeqCst) {
            let mut pushes = inner.pushes.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded by the push queue's byte limit.
            while let Some(frame) = pushes.frames.pop_front() {
                pushes.bytes -= frame.len();
                batch.extend_from_slice(&frame);
            }
            inner.has_pushes.store(false, Ordering::SeqCst);
        }
        let mut count = 0usize;
        // Bounded by the queue's capacity.
        while batch.len() < 256 * 1024 && count < MAX_CLIENT_INFLIGHT_REQUESTS {
            let (request_id, response) = match queued.try_recv() {
                Ok(item) => item,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // Only after `inner` is gone, which this thread holds: not reached.
                    break;
                }
            };
            // An oversize response is dropped; the client's call times out.
            let framed = codec::append_frame(
                &mut batch,
                kind::CLIENT_RESPONSE,
                salt,
                &(request_id, &response),
            );
            if let Err(e) = framed {
                warn(format!("response to request {request_id} dropped: {e}"));
            }
            count += 1;
        }
        if batch.is_empty() {
            continue;
        }
        if inner.closed.load(Ordering::SeqCst) {
            break;
        }
        let written = stream.write_all_bytes(&batch);
        out.last_write = Some(Instant::now());
        drop(out);
        if let Err(e) = written {
            inner.close_for(format!("writing responses failed: {e}"));
            break;
        }
        if batch.capacity() > 4 * 1024 * 1024 {
            batch = Vec::new();
        }
    }
    inner.close();
}
