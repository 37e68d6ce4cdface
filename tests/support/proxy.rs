//! A fault-injecting TCP proxy for loopback cluster tests.
//!
//! One [`Proxy`] is one *directed link*: it listens on `127.0.0.1:0` and forwards every
//! connection to its target. Give node `i` the address of proxy(i->j) as the address of peer
//! `j` (haven's peer connections are one-directional, so proxy(i->j) carries exactly what `i`
//! sends to `j`), and [`Links`] builds symmetric, asymmetric and bridge partitions from those.
//!
//! Modes, switchable at any time:
//! - [`Mode::Pass`]: forward bytes as they come.
//! - [`Mode::Delay`]: forward every chunk after a fixed delay (order kept).
//! - [`Mode::Blackhole`]: keep connections open but move no byte in either direction; bytes
//!   already read are held and delivered once the mode goes back to pass or delay (like a
//!   partition that heals before TCP gives up). New connections are accepted and held too.
//! - [`Mode::Cut`]: close every existing connection and close new ones right after accept.
//!
//! Threads are bounded (one accept thread plus two per connection, at most
//! [`MAX_CONNECTIONS`] connections) and all of them stop and are joined on drop.
//!
//! Include it from a test with `#[path = "support/proxy.rs"] mod proxy;`.
#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Most connections one proxy forwards at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 32;

/// How often an idle or held pump re-checks the mode.
const POLL: Duration = Duration::from_millis(5);

/// What a link does to the bytes crossing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward immediately.
    Pass,
    /// Keep connections, move nothing; held bytes are delivered after the link heals.
    Blackhole,
    /// Close existing connections and refuse new ones.
    Cut,
    /// Forward each chunk after this delay.
    Delay(Duration),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    target: Mutex<Option<SocketAddr>>,
    mode: Mutex<Mode>,
    stop: AtomicBool,
    /// Every socket of every live connection, so that `Cut` and drop can close them.
    sockets: Mutex<HashMap<u64, Vec<TcpStream>>>,
    handlers: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    active: AtomicUsize,
    bytes_forwarded: AtomicU64,
}

impl Shared {
    fn mode(&self) -> Mode {
        *lock(&self.mode)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn close_all(&self) {
        for (_, sockets) in lock(&self.sockets).drain() {
            for s in sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    fn register(&self, id: u64, socket: &TcpStream) {
        if let Ok(clone) = socket.try_clone() {
            lock(&self.sockets).entry(id).or_default().push(clone);
        }
    }
}

/// One directed link. Stops all its threads on drop.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy forwarding to `target`, in `Pass` mode.
    pub fn start(target: SocketAddr) -> Proxy {
        Proxy::new(Some(target))
    }

    /// A proxy whose target is not known yet (the node behind it has not started): connections
    /// are held until [`Proxy::set_target`] is called.
    pub fn start_pending() -> Proxy {
        Proxy::new(None)
    }

    fn new(target: Option<SocketAddr>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy: local address");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            mode: Mutex::new(Mode::Pass),
            stop: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            handlers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            bytes_forwarded: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(accept_shared, listener))
            .expect("proxy: spawn accept thread");
        Proxy {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// The address to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switch the mode. `Cut` closes every existing connection at once.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
        if mode == Mode::Cut {
            self.shared.close_all();
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Forward new connections to `target` from now on (a restarted node on a new port).
    pub fn set_target(&self, target: SocketAddr) {
        *lock(&self.shared.target) = Some(target);
    }

    /// Connections accepted so far (including those closed at once).
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections being forwarded (or held) now.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Bytes delivered to either side so far.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.bytes_forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread; it sees `stop` and exits.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
        self.shared.close_all();
        let handlers: Vec<JoinHandle<()>> = lock(&self.shared.handlers).drain(..).collect();
        for handle in handlers {
            let _ = handle.join();
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    // Bounded: ends when the proxy is dropped (drop sets `stop` and connects to wake us).
    for incoming in listener.incoming() {
        if shared.stopped() {
            break;
        }
        let Ok(client) = incoming else {
            thread::sleep(POLL);
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.mode() == Mode::Cut || shared.active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        shared.register(id, &client);
        shared.active.fetch_add(1, Ordering::SeqCst);
        let handler_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("proxy-conn-{id}"))
            .spawn(move || {
                handle_connection(&handler_shared, id, client);
                lock(&handler_shared.sockets).remove(&id);
                handler_shared.active.fetch_sub(1, Ordering::SeqCst);
            });
        let mut handlers = lock(&shared.handlers);
        handlers.retain(|h| !h.is_finished());
        match spawned {
            Ok(handle) => handlers.push(handle),
            Err(_) => {
                shared.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn handle_connection(shared: &Arc<Shared>, id: u64, client: TcpStream) {
    // Hold the connection while the link is blackholed or the target unknown, like a SYN
    // that gets no answer.
    let target = loop {
        if shared.stopped() || shared.mode() == Mode::Cut {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let target = *lock(&shared.target);
        match (shared.mode(), target) {
            (Mode::Blackhole, _) | (_, None) => thread::sleep(POLL),
            (_, Some(target)) => break target,
        }
    };
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    shared.register(id, &server);
    let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let back_shared = Arc::clone(shared);
    let back = thread::Builder::new()
        .name(format!("proxy-conn-{id}-back"))
        .spawn(move || pump(&back_shared, server_reader, client));
    pump(shared, client_reader, server);
    if let Ok(back) = back {
        let _ = back.join();
    }
}

/// Move bytes from `src` to `dst` according to the mode, until either side closes, the link is
/// cut or the proxy stops.
fn pump(shared: &Shared, mut src: TcpStream, mut dst: TcpStream) {
    let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut src_closed = false;
    // Bounded: ends on close, error, cut or stop; every idle round sleeps or waits POLL.
    'outer: loop {
        if shared.stopped() {
            break;
        }
        match shared.mode() {
            Mode::Cut => break,
            Mode::Blackhole => {
                thread::sleep(POLL);
                continue;
            }
            Mode::Pass | Mode::Delay(_) => {}
        }
        // Deliver what is due, in order.
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, chunk)) = held.pop_front() {
                // Counted before the write, so that a reader who got the bytes sees the count.
                shared
                    .bytes_forwarded
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                if dst.write_all(&chunk).is_err() {
                    break 'outer;
                }
            }
        }
        let wait = held
            .front()
            .map(|(due, _)| due.saturating_duration_since(now))
            .unwrap_or(POLL)
            .clamp(Duration::from_millis(1), POLL);
        if src_closed {
            if held.is_empty() {
                // Pass the close on, so the other side sees EOF too.
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            thread::sleep(wait);
            continue;
        }
        let _ = src.set_read_timeout(Some(wait));
        match src.read(&mut buf) {
            Ok(0) => src_closed = true,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or(&[]);
                // The mode may have changed while we waited in `read`: bytes written after
                // `set_mode` returned must obey the new mode.
                let delay = match shared.mode() {
                    Mode::Cut => break,
                    Mode::Blackhole => {
                        held.push_back((Instant::now(), chunk.to_vec()));
                        continue;
                    }
                    Mode::Pass => Duration::ZERO,
                    Mode::Delay(d) => d,
                };
                if delay.is_zero() && held.is_empty() {
                    shared.bytes_forwarded.fetch_add(n as u64, Ordering::SeqCst);
                    if dst.write_all(chunk).is_err() {
                        break;
                    }
                } else {
                    held.push_back((Instant::now() + delay, chunk.to_vec()));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

/// A full mesh of directed links between `n` nodes: proxy(i->j) for every i != j.
pub struct Links {
    n: usize,
    proxies: HashMap<(usize, usize), Proxy>,
}

impl Links {
    /// `n * (n - 1)` proxies whose targets are not known yet; call [`Links::set_targets`] once
    /// the nodes listen.
    pub fn new(n: usize) -> Links {
        let mut proxies = HashMap::new();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    proxies.insert((i, j), Proxy::start_pending());
                }
            }
        }
        Links { n, proxies }
    }

    /// `targets[j]` is where node j listens: proxy(i->j) forwards there for every i.
    pub fn set_targets(&self, targets: &[SocketAddr]) {
        for ((_, j), proxy) in &self.proxies {
            if let Some(target) = targets.get(*j) {
                proxy.set_target(*target);
            }
        }
    }

    /// The address node `from` must use for peer `to`.
    pub fn addr(&self, from: usize, to: usize) -> SocketAddr {
        self.link(from, to).addr()
    }

    /// The proxy carrying what `from` sends to `to`.
    pub fn link(&self, from: usize, to: usize) -> &Proxy {
        self.proxies
            .get(&(from, to))
            .unwrap_or_else(|| panic!("no link {from}->{to} among {} nodes", self.n))
    }

    /// Set one directed link (an asymmetric partition when used on one direction only).
    pub fn set(&self, from: usize, to: usize, mode: Mode) {
        self.link(from, to).set_mode(mode);
    }

    /// Set both directions between `a` and `b`.
    pub fn set_both(&self, a: usize, b: usize, mode: Mode) {
        self.set(a, b, mode);
        self.set(b, a, mode);
    }

    /// Symmetric partition: links inside a group pass, links between groups are cut. Nodes in
    /// no group are cut off from everyone. A bridge partition is two calls of
    /// [`Links::set_both`] on top of this, or groups that share the bridge node.
    pub fn partition(&self, groups: &[&[usize]]) {
        for ((i, j), proxy) in &self.proxies {
            let together = groups.iter().any(|g| g.contains(i) && g.contains(j));
            proxy.set_mode(if together { Mode::Pass } else { Mode::Cut });
        }
    }

    /// Every link back to pass.
    pub fn heal(&self) {
        for proxy in self.proxies.values() {
            proxy.set_mode(Mode::Pass);
        }
    }
}
