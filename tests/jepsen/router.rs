//! The front door of one member: the address every member is given for it, which sends each
//! incoming peer connection through the proxy of its directed link.
//!
//! Why: a founding member's `--peers` map becomes the first configuration (log entry 1, part
//! of the state hash), so every member must be given the same map; but a per-link proxy needs
//! member i to dial a different address for member j than member k does. `haven serve` has no
//! flag for `Config::peer_routes`, so the routing happens here instead. The initiator of every
//! haven connection speaks first, with a `Hello` frame that names its role (docs/FORMAT.md,
//! "Handshake"): for `Peer { node_id: i }` the router forwards the connection to proxy(i->j),
//! for a client straight to member j. The router never changes a byte, so the handshake's MACs
//! still verify. A connection it cannot identify goes straight to the member (which refuses
//! what it must) and is counted: the run fails if any peer went unrouted.

use haven::codec;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The frame kind of `Hello` and the limits of a handshake frame (docs/FORMAT.md).
const KIND_HELLO: u8 = 1;
const HANDSHAKE_SALT: u64 = 0;
const MAX_HANDSHAKE_PAYLOAD: usize = 1024;
/// How long a new connection may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

// The handshake's first message, mirrored from docs/FORMAT.md to read who is calling.
#[derive(bincode::Decode)]
struct HelloEnvelope {
    version: u32,
    body: Vec<u8>,
}

#[derive(bincode::Decode)]
#[allow(dead_code)] // fields are decoded to consume the bytes, not all are read
struct HelloV1 {
    cluster_id: u64,
    role: Role,
    expected_acceptor: Option<u64>,
    nonce: [u8; 32],
    founding: Option<[u8; 32]>,
}

#[derive(bincode::Decode)]
#[allow(dead_code)]
enum Role {
    Peer { node_id: u64, lane: Lane },
    Client { client_id: u64 },
}

#[derive(bincode::Decode)]
#[allow(dead_code)]
enum Lane {
    Control,
    Bulk,
}

/// Who opened a connection, from its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Member with this node id.
    Peer(u64),
    /// A remote client.
    Client,
}

/// Identify the caller from the bytes received so far: `Ok(None)` if more are needed.
pub fn identify(buf: &[u8]) -> Result<Option<(Caller, usize)>, String> {
    let frame = match codec::read_frame(buf, HANDSHAKE_SALT, MAX_HANDSHAKE_PAYLOAD) {
        Ok(Some(frame)) => frame,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("first frame: {e}")),
    };
    if frame.kind != KIND_HELLO {
        return Err(format!("first frame is of kind {}, not Hello", frame.kind));
    }
    let envelope: HelloEnvelope =
        codec::decode_value(frame.payload).map_err(|e| format!("Hello envelope: {e}"))?;
    // Versions 1 and 2 carry the same body (2 binds the MAC to the TLS session).
    if envelope.version != 1 && envelope.version != 2 {
        return Err(format!("handshake version {}", envelope.version));
    }
    let hello: HelloV1 =
        codec::decode_value(&envelope.body).map_err(|e| format!("Hello body: {e}"))?;
    let caller = match hello.role {
        Role::Peer { node_id, .. } => Caller::Peer(node_id),
        Role::Client { .. } => Caller::Client,
    };
    Ok(Some((caller, frame.len)))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    /// Node id of the member behind this router.
    member: u64,
    /// The member's own listener.
    direct: SocketAddr,
    /// Node id -> the proxy carrying what that member sends to ours.
    links: HashMap<u64, SocketAddr>,
    stop: AtomicBool,
    sockets: Mutex<HashMap<u64, Vec<TcpStream>>>,
    handlers: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
    routed_peers: AtomicU64,
    clients: AtomicU64,
    unidentified: Mutex<Vec<String>>,
}

impl Shared {
    fn register(&self, id: u64, socket: &TcpStream) {
        if let Ok(clone) = socket.try_clone() {
            lock(&self.sockets).entry(id).or_default().push(clone);
        }
    }

    fn close(&self, id: u64) {
        for s in lock(&self.sockets).remove(&id).unwrap_or_default() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// One member's router. Stops and joins all its threads on drop.
pub struct Router {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Router {
    /// A router for member `member` (node id) listening at `direct`; `links` maps every other
    /// member's node id to the proxy of its link towards this member.
    pub fn start(member: u64, direct: SocketAddr, links: HashMap<u64, SocketAddr>) -> Router {
        let listener = TcpListener::bind("127.0.0.1:0").expect("router: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("router: local address");
        let shared = Arc::new(Shared {
            member,
            direct,
            links,
            stop: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            handlers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            routed_peers: AtomicU64::new(0),
            clients: AtomicU64::new(0),
            unidentified: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name(format!("router-{member}"))
            .spawn(move || accept_loop(&accept_shared, listener))
            .expect("router: spawn");
        Router {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// The address to give every member (and clients) for this member.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Peer connections sent through their link's proxy so far.
    pub fn routed_peers(&self) -> u64 {
        self.shared.routed_peers.load(Ordering::SeqCst)
    }

    /// Connections that were not a recognisable peer or client, with the reason.
    pub fn unidentified(&self) -> Vec<String> {
        lock(&self.shared.unidentified).clone()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let ids: Vec<u64> = lock(&self.shared.sockets).keys().copied().collect();
        for id in ids {
            self.shared.close(id);
        }
        let handlers: Vec<JoinHandle<()>> = lock(&self.shared.handlers).drain(..).collect();
        for h in handlers {
            let _ = h.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    // Bounded: ends when the router is dropped (drop sets `stop` and connects to wake us).
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = incoming else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        shared.register(id, &stream);
        let handler_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("router-{}-conn", shared.member))
            .spawn(move || {
                handle(&handler_shared, id, stream);
                handler_shared.close(id);
            });
        let mut handlers = lock(&shared.handlers);
        handlers.retain(|h| !h.is_finished());
        if let Ok(h) = spawned {
            handlers.push(h);
        }
    }
}

fn handle(shared: &Arc<Shared>, id: u64, mut inbound: TcpStream) {
    // Read the first frame (bounded: at most the handshake frame limit, within HELLO_TIMEOUT).
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let (caller, why) = loop {
        match identify(&buf) {
            Ok(Some((caller, _))) => break (Some(caller), String::new()),
            Ok(None) => {}
            Err(e) => break (None, e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || shared.stop.load(Ordering::SeqCst) {
            break (None, "no Hello in time".to_string());
        }
        let _ = inbound.set_read_timeout(Some(left.min(Duration::from_millis(100))));
        match inbound.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    };
    let target = match caller {
        Some(Caller::Peer(node)) if node != shared.member => match shared.links.get(&node) {
            Some(link) => {
                shared.routed_peers.fetch_add(1, Ordering::SeqCst);
                *link
            }
            None => {
                lock(&shared.unidentified).push(format!("peer {node} is not a member"));
                shared.direct
            }
        },
        Some(Caller::Peer(node)) => {
            lock(&shared.unidentified).push(format!("peer {node} dialled itself"));
            shared.direct
        }
        Some(Caller::Client) => {
            shared.clients.fetch_add(1, Ordering::SeqCst);
            shared.direct
        }
        None => {
            lock(&shared.unidentified).push(why);
            shared.direct
        }
    };
    let Ok(mut outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        return;
    };
    shared.register(id, &outbound);
    let _ = inbound.set_read_timeout(None);
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    if outbound.write_all(&buf).is_err() {
        return;
    }
    let (Ok(mut back_in), Ok(mut back_out)) = (outbound.try_clone(), inbound.try_clone()) else {
        return;
    };
    // Bounded: each copy ends when its source closes; closing the connection (drop, or the
    // other direction ending) closes both sockets.
    let back = thread::Builder::new()
        .name(format!("router-{}-back", shared.member))
        .spawn(move || {
            let _ = std::io::copy(&mut back_in, &mut back_out);
            let _ = back_out.shutdown(Shutdown::Both);
            let _ = back_in.shutdown(Shutdown::Both);
        });
    let _ = std::io::copy(&mut inbound, &mut outbound);
    let _ = outbound.shutdown(Shutdown::Both);
    let _ = inbound.shutdown(Shutdown::Both);
    if let Ok(back) = back {
        let _ = back.join();
    }
}
