//! The remote backend: requests over one authenticated TCP connection to one member at a time.
//!
//! It keeps one connection (shared by every thread of the client: requests are pipelined). A
//! new connection goes to the leader when a member names one and it can be reached, else to the
//! next member in the list. When a member cannot be reached, stops answering or reports that it
//! failed, the connection is dropped and the next attempt goes to another member.

use super::watch::{receive_from, WatchStream};
use super::{Backend, ClientOptions};
use crate::codec;
use crate::error::{Error, ErrorCode, Result};
use crate::net::resolve_address;
use crate::net::{ClientConnection, ClientTls, ClusterSecret};
use crate::proto::{
    ClientRequest, ClientResponse, PushFrame, Request, Response, Status, WatchPush, WatchSpec,
    CLIENT_PROTOCOL_VERSION, PUSH_FRAME_VERSION,
};
use crate::types::ClusterId;
use crossbeam_channel::{bounded, Sender, TrySendError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Connection = ClientConnection<ClientRequest, ClientResponse>;

/// Time left for the answer to travel back: the member is told to answer this much earlier
/// than the client's own deadline.
const ANSWER_MARGIN: Duration = Duration::from_millis(50);

struct State {
    conn: Option<Arc<Connection>>,
    /// The member to try next (index into `members`).
    next: usize,
}

/// Pushes one watch may have waiting for its pump; beyond, the watch is dropped here and its
/// pump resumes it from its last delivered revision (no gap: the member still has them, or says
/// `Compacted`).
const WATCH_ROUTE_BUFFER: usize = 1024;

/// Routes pushed frames to the watches of this client, by (connection, watch id). A connection's
/// routes are removed when it closes (its push handler is dropped), which ends those watches'
/// streams: their pumps resume them elsewhere.
#[derive(Default)]
struct PushRoutes {
    routes: Mutex<HashMap<(u64, u64), Sender<WatchPush>>>,
}

impl PushRoutes {
    fn route(&self, connection: u64, payload: &[u8]) {
        // A frame that does not decode, or of a newer version, ends nothing by itself; the
        // watch it was for stalls and is resumed when its connection goes.
        let Ok(frame) = codec::decode_value::<PushFrame>(payload) else {
            return;
        };
        if frame.version > PUSH_FRAME_VERSION {
            return;
        }
        let mut routes = lock(&self.routes);
        let key = (connection, frame.watch_id);
        if let Some(tx) = routes.get(&key) {
            match tx.try_send(frame.push) {
                Ok(()) => {}
                // Its pump is behind (or gone): let it resume from where it is.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    routes.remove(&key);
                }
            }
        }
    }

    fn connection_closed(&self, connection: u64) {
        lock(&self.routes).retain(|(c, _), _| *c != connection);
    }
}

/// Removes a connection's routes when the connection drops its push handler.
struct RouteGuard {
    routes: Arc<PushRoutes>,
    connection: u64,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes.connection_closed(self.connection);
    }
}

pub(crate) struct RemoteBackend {
    members: Vec<SocketAddr>,
    cluster_id: ClusterId,
    secret: ClusterSecret,
    connect_timeout: Duration,
    prefer_leader: bool,
    tls: Option<ClientTls>,
    state: Mutex<State>,
    routes: Arc<PushRoutes>,
    next_watch_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn handshake_id() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_le_bytes(bytes) | 1
}

impl RemoteBackend {
    pub(crate) fn connect(
        members: &[&str],
        cluster_id: ClusterId,
        secret: &ClusterSecret,
        options: &ClientOptions,
    ) -> Result<RemoteBackend> {
        if members.is_empty() {
            return Err(Error::InvalidArgument(
                "connect: no member address given".into(),
            ));
        }
        let mut addrs = Vec::with_capacity(members.len());
        for m in members {
            addrs.push(resolve_address(m)?);
        }
        let backend = RemoteBackend {
            members: addrs,
            cluster_id,
            secret: secret.clone(),
            connect_timeout: options.connect_timeout,
            prefer_leader: options.prefer_leader,
            tls: options.tls.clone(),
            state: Mutex::new(State {
                conn: None,
                next: 0,
            }),
            routes: Arc::default(),
            next_watch_id: AtomicU64::new(1),
        };
        // Connect now, so a wrong secret or cluster id is reported at once.
        backend.connection(Instant::now() + options.request_timeout)?;
        Ok(backend)
    }

    fn open(&self, addr: SocketAddr, deadline: Instant) -> Result<Connection> {
        let timeout = self
            .connect_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let conn = Connection::connect_with(
            addr,
            self.cluster_id,
            &self.secret,
            handshake_id(),
            timeout,
            self.tls.as_ref(),
        )?;
        // Every connection routes its pushed frames, so a watch can use any of them.
        let guard = RouteGuard {
            routes: Arc::clone(&self.routes),
            connection: conn.client_id(),
        };
        conn.on_push(move |payload| guard.routes.route(guard.connection, payload));
        Ok(conn)
    }

    /// The current connection, or a new one: to the leader if a member names it and it
    /// answers, else to the first member (from `next` on) that accepts.
    fn connection(&self, deadline: Instant) -> Result<Arc<Connection>> {
        let mut state = lock(&self.state);
        if let Some(conn) = &state.conn {
            if !conn.is_closed() {
                return Ok(Arc::clone(conn));
            }
        }
        state.conn = None;
        let mut last_error = None;
        for attempt in 0..self.members.len() {
            let index = (state.next + attempt) % self.members.len();
            let addr = self.members[index];
            match self.open(addr, deadline) {
                Ok(conn) => {
                    state.next = index;
                    let conn = self.maybe_switch_to_leader(conn, deadline);
                    let conn = Arc::new(conn);
                    state.conn = Some(Arc::clone(&conn));
                    return Ok(conn);
                }
                // A refused secret or cluster id will not get better on another member.
                Err(e) if e.code() == ErrorCode::Auth => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        state.next = (state.next + 1) % self.members.len();
        Err(Error::Unavailable(format!(
            "no member could be reached: {}",
            last_error.map_or_else(|| "none tried".into(), |e| e.to_string())
        )))
    }

    fn maybe_switch_to_leader(&self, conn: Connection, deadline: Instant) -> Connection {
        if !self.prefer_leader {
            return conn;
        }
        let Ok(status) = self.status_of(&conn, deadline) else {
            return conn;
        };
        let Some(leader) = status.leader else {
            return conn;
        };
        if leader == conn.member() {
            return conn;
        }
        let Some(addr) = status
            .address_of(leader)
            .and_then(|a| resolve_address(a).ok())
        else {
            return conn;
        };
        match self.open(addr, deadline) {
            Ok(leader_conn) if leader_conn.member() == leader => {
                conn.close();
                leader_conn
            }
            Ok(other) => {
                other.close();
                conn
            }
            Err(_) => conn,
        }
    }

    fn status_of(&self, conn: &Connection, deadline: Instant) -> Result<Status> {
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        let request = ClientRequest {
            version: Request::Status.protocol_version(),
            timeout_ms: timeout.as_millis() as u32,
            request: Request::Status,
        };
        match conn.call(request, timeout)? {
            Ok(Response::Status(status)) => Ok(*status),
            Ok(_) => Err(Error::Unavailable("unexpected answer to status".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Forget `conn` and try the next member next time.
    fn drop_connection(&self, conn: &Arc<Connection>) {
        let mut state = lock(&self.state);
        if state.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            state.conn = None;
            state.next = (state.next + 1) % self.members.len();
        }
        drop(state);
        conn.close();
    }
}

impl Backend for RemoteBackend {
    fn call(&self, request: Request, deadline: Instant) -> Result<Response> {
        let conn = self.connection(deadline)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let member_timeout = left
            .saturating_sub(ANSWER_MARGIN)
            .max(Duration::from_millis(1));
        // The lowest version that has the request, so older members serve what they know.
        let framed = ClientRequest {
            version: request.protocol_version(),
            timeout_ms: member_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            request,
        };
        match conn.call(framed, left.max(Duration::from_millis(1))) {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(wire)) => {
                let e = Error::from(wire);
                match e.code() {
                    // That member stopped; another one can answer.
                    ErrorCode::Fatal => {
                        self.drop_connection(&conn);
                        Err(Error::Unavailable(format!(
                            "member {} failed: {e}",
                            conn.member()
                        )))
                    }
                    // It may be cut off from the leader: try another member next time.
                    ErrorCode::Unavailable | ErrorCode::Timeout => {
                        self.drop_connection(&conn);
                        Err(e)
                    }
                    _ => Err(e),
                }
            }
            Err(e) => {
                self.drop_connection(&conn);
                Err(e)
            }
        }
    }

    fn watch(&self, spec: &WatchSpec, deadline: Instant) -> Result<WatchStream> {
        let conn = self.connection(deadline)?;
        let watch_id = self.next_watch_id.fetch_add(1, Ordering::Relaxed);
        let key = (conn.client_id(), watch_id);
        let (tx, rx) = bounded(WATCH_ROUTE_BUFFER);
        // Routed before the member can push anything for it.
        lock(&self.routes.routes).insert(key, tx);
        let left = deadline.saturating_duration_since(Instant::now());
        let watch = Request::watch(watch_id, spec);
        let request = ClientRequest {
            // A watch of user keys stays version 3, so older members serve it.
            version: watch.protocol_version(),
            timeout_ms: left
                .saturating_sub(ANSWER_MARGIN)
                .max(Duration::from_millis(1))
                .as_millis()
                .min(u128::from(u32::MAX)) as u32,
            request: watch,
        };
        let failed = |e: Error| {
            lock(&self.routes.routes).remove(&key);
            e
        };
        match conn.call(request, left.max(Duration::from_millis(1))) {
            Ok(Ok(Response::Done)) => {}
            Ok(Ok(_)) => {
                return Err(failed(Error::Fatal("unexpected answer to watch".into())));
            }
            Ok(Err(wire)) => {
                let e = Error::from(wire);
                if matches!(e.code(), ErrorCode::Unavailable | ErrorCode::Fatal) {
                    self.drop_connection(&conn);
                    return Err(failed(Error::Unavailable(e.to_string())));
                }
                return Err(failed(e));
            }
            Err(e) => {
                self.drop_connection(&conn);
                return Err(failed(e));
            }
        }
        let routes = Arc::clone(&self.routes);
        let weak: Weak<Connection> = Arc::downgrade(&conn);
        let cancel = move || {
            lock(&routes.routes).remove(&key);
            let Some(conn) = weak.upgrade() else {
                return;
            };
            if conn.is_closed() {
                return;
            }
            let request = ClientRequest {
                version: CLIENT_PROTOCOL_VERSION,
                timeout_ms: 500,
                request: Request::CancelWatch { watch_id },
            };
            let _ = conn.call(request, Duration::from_secs(1));
        };
        Ok(WatchStream {
            next: receive_from(rx),
            cancel: Box::new(cancel),
        })
    }

    fn describe(&self) -> String {
        let state = lock(&self.state);
        match &state.conn {
            Some(c) => format!("member {} at {}", c.member(), c.peer_addr()),
            None => "no member connected".into(),
        }
    }
}
