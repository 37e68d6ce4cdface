//! The remote backend: requests over one authenticated TCP connection to one member at a time.
//!
//! It keeps one connection (shared by every thread of the client: requests are pipelined). A
//! new connection goes to the leader when a member names one and it can be reached, else to the
//! next member in the list. When a member cannot be reached, stops answering or reports that it
//! failed, the connection is dropped and the next attempt goes to another member.

use super::{Backend, ClientOptions};
use crate::error::{Error, ErrorCode, Result};
use crate::net::resolve_address;
use crate::net::{ClientConnection, ClientTls, ClusterSecret};
use crate::proto::{ClientRequest, ClientResponse, Request, Response, Status};
use crate::types::ClusterId;
use std::net::SocketAddr;
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

pub(crate) struct RemoteBackend {
    members: Vec<SocketAddr>,
    cluster_id: ClusterId,
    secret: ClusterSecret,
    connect_timeout: Duration,
    prefer_leader: bool,
    tls: Option<ClientTls>,
    state: Mutex<State>,
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
        Connection::connect_with(
            addr,
            self.cluster_id,
            &self.secret,
            handshake_id(),
            timeout,
            self.tls.as_ref(),
        )
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

    fn describe(&self) -> String {
        let state = lock(&self.state);
        match &state.conn {
            Some(c) => format!("member {} at {}", c.member(), c.peer_addr()),
            None => "no member connected".into(),
        }
    }
}
