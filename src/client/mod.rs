//! The client API: one [`Client`] over two backends.
//!
//! - **In process**: [`Node::client`](crate::node::Node::client) talks to that member directly.
//! - **Remote**: [`Client::connect`] talks to a cluster over TCP (an authenticated
//!   `net::ClientConnection`). It connects to the leader when it can find it (any member
//!   forwards otherwise), fails over to another member when one stops answering, and retries.
//!
//! Both backends send the same [`proto::Request`](crate::proto::Request)s and get the same [`proto::Response`](crate::proto::Response)s.
//!
//! **Errors.** Expected outcomes (a compare-and-swap that lost, an absent key) are values. The
//! failures are one [`Error`]: `InvalidArgument` (nothing written), `Unavailable` (NOT applied:
//! no leader, no quorum, member shut down; safe to retry), `Timeout` (MAY have been applied),
//! `Auth`, `Fatal`.
//!
//! **At most once.** Every write carries a session (a client id registered in the replicated
//! state, see `sm`) and a sequence number. When a write fails with `Unavailable` or `Timeout`
//! (a leader change, a member that died) the client retries it with the *same* id and sequence
//! number until its deadline, so a retried write is applied at most once: the state machine
//! answers a repeat with the remembered result. One session serves one write at a time; a
//! `Client` used from many threads keeps a pool of sessions, one per concurrent write.
//!
//! The API is shaped for a C ABI later: byte slices in, owned values out, no generics, no
//! callbacks, `Clone + Send + Sync` handles.

mod backup;
mod coord;
mod elect;
mod local;
mod owners;
mod remote;
mod watch;

pub use self::watch::{Watch, WatchNotice, WATCH_RESUME_TIMEOUT};
pub use crate::proto::{EventKind, WatchEvent, WatchSpec, WatchTarget};

pub use crate::sm::ElectionLeader;
pub use coord::{LockGuard, LockOptions, LockWait, Session, SessionState};
pub use elect::{ElectionObserver, LeaderChange, Leadership};
pub use owners::KeyOwners;

pub use crate::proto::{
    AdminOp, Counters, Histogram, MemberStatus, NodeRole, ReadMode, ReadOp, Request, Response,
    SnapshotChunk, SnapshotInfo, Status,
};

use crate::error::{Error, ErrorCode, Result};
use crate::net::{ClientTls, ClusterSecret};
use crate::sm::placement::{LoadCap, PlacementVersion, Strategy};
use crate::sm::{
    CasResult, Command, CommandResult, DeleteRangeResult, DeleteResult, MapChange, MapMoves,
    MapReader, Op, Owners, PartitionMap, PutResult, RangePage, Txn, TxnResult, VersionedValue,
    UNTRACKED_CLIENT,
};
use crate::types::{ClusterId, LogIndex, NodeId};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of each operation, retries included.
    pub request_timeout: Duration,
    /// How long one TCP connect + handshake may take (remote backend).
    pub connect_timeout: Duration,
    /// How `get`, `range` and `scan_prefix` read.
    pub read_mode: ReadMode,
    /// Remote backend: connect to the leader when a member names it (saves the forwarding hop);
    /// `false` keeps the first member that answers.
    pub prefer_leader: bool,
    /// Remote backend: TLS settings (the member CA, and a client certificate when members
    /// require one). `None`: plaintext.
    pub tls: Option<ClientTls>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            read_mode: ReadMode::Linearizable,
            prefer_leader: true,
            tls: None,
        }
    }
}

/// Where a client's requests go: one attempt per call, retries are the client's.
pub(crate) trait Backend: Send + Sync {
    /// One attempt. `Unavailable`: not applied; `Timeout`: maybe applied.
    fn call(&self, request: Request, deadline: Instant) -> Result<Response>;
    /// Open a watch on one member (see `watch.rs`). `Unavailable`/`Timeout`: try again.
    fn watch(&self, spec: &WatchSpec, deadline: Instant) -> Result<self::watch::WatchStream>;
    /// For error messages.
    fn describe(&self) -> String;
    /// The partition maps as the member in this process applied them, if the backend is in
    /// process (reads of them need no request at all).
    fn maps(&self) -> Option<&MapReader> {
        None
    }
    /// The member runs in this process: a watch's pushes can be read on the watcher's own
    /// thread (see `watch.rs`).
    fn in_process(&self) -> bool {
        false
    }
}

/// A registered client id and the next sequence number to use with it.
#[derive(Debug)]
struct WriteSession {
    client_id: u64,
    next_seq: u64,
}

struct Inner {
    backend: Arc<dyn Backend>,
    options: ClientOptions,
    sessions: Mutex<Vec<WriteSession>>,
    /// The sessions (leases) this client keeps alive (`coord.rs`).
    keeper: Mutex<coord::Keeper>,
}

/// A handle to a haven cluster. Cheap to clone; usable from many threads at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.inner.backend.describe())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Longest pause between two attempts of one operation.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

impl Client {
    /// Connect to a cluster through any of `members` (`host:port`), authenticating with the
    /// cluster id and secret. Fails with `Auth` if a member refuses the secret or cluster id,
    /// `Unavailable` if none can be reached, `InvalidArgument` for an address that does not
    /// parse.
    pub fn connect(
        members: &[&str],
        cluster_id: ClusterId,
        secret: &ClusterSecret,
        options: ClientOptions,
    ) -> Result<Client> {
        let backend = remote::RemoteBackend::connect(members, cluster_id, secret, &options)?;
        Ok(Client::with_backend(Arc::new(backend), options))
    }

    pub(crate) fn with_backend(backend: Arc<dyn Backend>, options: ClientOptions) -> Client {
        Client {
            inner: Arc::new(Inner {
                backend,
                options,
                sessions: Mutex::new(Vec::new()),
                keeper: Mutex::new(coord::Keeper::default()),
            }),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    // ----- writes -----

    /// Store `value` under `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<PutResult> {
        match self.write(Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        })? {
            CommandResult::Put(r) => Ok(r),
            other => Err(unexpected_result(other)),
        }
    }

    /// Delete `key` (absent is not an error: see [`DeleteResult::existed`]).
    pub fn delete(&self, key: &[u8]) -> Result<DeleteResult> {
        match self.write(Op::Delete { key: key.to_vec() })? {
            CommandResult::Delete(r) => Ok(r),
            other => Err(unexpected_result(other)),
        }
    }

    /// Store `new_value` under `key` if its current value is `expected` (`None`: if the key is
    /// absent). A failed comparison is [`CasResult::Failed`] with the current value.
    pub fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new_value: &[u8],
    ) -> Result<CasResult> {
        match self.write(Op::CompareAndSwap {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new_value: new_value.to_vec(),
        })? {
            CommandResult::Cas(r) => Ok(r),
            other => Err(unexpected_result(other)),
        }
    }

    /// Delete up to `limit` keys in `[start, end)` (`end` `None`: to the last key).
    pub fn delete_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
    ) -> Result<DeleteRangeResult> {
        match self.write(Op::DeleteRange {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
        })? {
            CommandResult::DeleteRange(r) => Ok(r),
            other => Err(unexpected_result(other)),
        }
    }

    /// A transaction: if every compare holds, the success ops run, else the failure ops; all
    /// at one revision.
    pub fn txn(&self, txn: &Txn) -> Result<TxnResult> {
        match self.write(Op::Txn(txn.clone()))? {
            CommandResult::Txn(r) => Ok(r),
            other => Err(unexpected_result(other)),
        }
    }

    // ----- reads -----

    /// The value of `key` (`None` if absent), read as [`ClientOptions::read_mode`] says.
    pub fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>> {
        self.get_with(key, self.inner.options.read_mode)
    }

    /// The value of `key`, read with `mode`.
    pub fn get_with(&self, key: &[u8], mode: ReadMode) -> Result<Option<VersionedValue>> {
        let op = ReadOp::Get { key: key.to_vec() };
        match self.read(op, mode)? {
            Response::Value(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Up to `limit` keys in `[start, end)` in key order (`end` `None`: to the last key).
    pub fn range(&self, start: &[u8], end: Option<&[u8]>, limit: u32) -> Result<RangePage> {
        self.range_with(start, end, limit, self.inner.options.read_mode)
    }

    /// [`Client::range`] read with `mode`.
    pub fn range_with(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        mode: ReadMode,
    ) -> Result<RangePage> {
        let op = ReadOp::Range {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
        };
        match self.read(op, mode)? {
            Response::Range(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Up to `limit` keys starting with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8], limit: u32) -> Result<RangePage> {
        let end = crate::sm::prefix_end(prefix);
        self.range(prefix, end.as_deref(), limit)
    }

    // ----- partition maps -----

    /// Create partition map `name` (no owners yet, epoch 1): `partitions` partitions (fixed), each
    /// with `replicas` owners once there are that many. `InvalidArgument` if the name is taken
    /// or a parameter is out of range (see `sm::placement::MapParams`).
    pub fn create_map(
        &self,
        name: &str,
        partitions: u32,
        replicas: u32,
        strategy: Strategy,
        load_cap: LoadCap,
    ) -> Result<MapChange> {
        self.map_write(Op::CreateMapVersioned {
            name: name.to_string(),
            partitions,
            replicas,
            strategy,
            load_cap,
            placement: PlacementVersion::CURRENT,
        })
    }

    /// Owner `owner` joins map `name` with `weight` (its share is proportional to it). The
    /// result has the new epoch and how much moved. `InvalidArgument` (nothing changed) for an
    /// unknown map, an owner that has joined already, a weight of 0 or over the limit.
    pub fn join(&self, name: &str, owner: &str, weight: u32) -> Result<MapChange> {
        self.map_write(Op::JoinMap {
            name: name.to_string(),
            owner: owner.to_string(),
            weight,
        })
    }

    /// Owner `owner` leaves map `name`; its partitions go to the others.
    pub fn leave(&self, name: &str, owner: &str) -> Result<MapChange> {
        self.map_write(Op::LeaveMap {
            name: name.to_string(),
            owner: owner.to_string(),
        })
    }

    /// Owner `owner` of map `name` gets weight `weight`.
    pub fn set_weight(&self, name: &str, owner: &str, weight: u32) -> Result<MapChange> {
        self.map_write(Op::SetOwnerWeight {
            name: name.to_string(),
            owner: owner.to_string(),
            weight,
        })
    }

    /// The partition of `key` in map `name` and its owners (primary first), with the epoch of
    /// the table that answered. In process: from the member's applied copy, with no request at
    /// all; remote: one stale read of the member this client talks to. Either may be behind the
    /// leader by a few changes: compare the epoch, or use [`Client::owners_linearizable`].
    /// `InvalidArgument` if there is no such map.
    pub fn owners(&self, name: &str, key: &[u8]) -> Result<Owners> {
        if let Some(maps) = self.inner.backend.maps() {
            crate::sm::validate_map_key_read(name, key)?;
            let map = maps.get(name).ok_or_else(|| no_such_map(name))?;
            return Ok(map.owners(key));
        }
        self.owners_with(name, key, ReadMode::Stale)
    }

    /// [`Client::owners`] without copying: in process, the applied table itself (an `Arc`)
    /// and the key's partition, so the answer allocates nothing and its owner ids are borrowed
    /// from the table ([`KeyOwners::iter`]); remote, the stale read's answer. Measured by
    /// `haven bench ring` (`client_key_owners_ns`, next to `client_owners_ns`).
    pub fn key_owners(&self, name: &str, key: &[u8]) -> Result<KeyOwners> {
        if let Some(maps) = self.inner.backend.maps() {
            crate::sm::validate_map_key_read(name, key)?;
            let map = maps.get(name).ok_or_else(|| no_such_map(name))?;
            return Ok(KeyOwners::applied(map, key));
        }
        self.owners_with(name, key, ReadMode::Stale)
            .map(KeyOwners::copied)
    }

    /// In process only: this member's applied copy of map `name`, to hold for many lookups
    /// (`map.table.lookup(key)` is a hash, a remainder and a slice: ~10 ns, where
    /// [`Client::key_owners`] also finds the map under a read lock). The copy does not change;
    /// take it again to see later epochs. `None` for a remote client or an unknown map.
    pub fn applied_map(&self, name: &str) -> Option<Arc<PartitionMap>> {
        self.inner.backend.maps()?.get(name)
    }

    /// [`Client::owners`], linearizable: reflects every change acknowledged before the call.
    pub fn owners_linearizable(&self, name: &str, key: &[u8]) -> Result<Owners> {
        self.owners_with(name, key, ReadMode::Linearizable)
    }

    fn owners_with(&self, name: &str, key: &[u8], mode: ReadMode) -> Result<Owners> {
        let op = ReadOp::MapOwners {
            name: name.to_string(),
            key: key.to_vec(),
        };
        match self.read(op, mode)? {
            Response::MapOwners(owners) => Ok(owners),
            other => Err(unexpected(&other)),
        }
    }

    /// The epoch of map `name` and the partition of `key` in it (served like
    /// [`Client::owners`]).
    pub fn partition_of(&self, name: &str, key: &[u8]) -> Result<(u64, u32)> {
        if let Some(maps) = self.inner.backend.maps() {
            crate::sm::validate_map_key_read(name, key)?;
            let map = maps.get(name).ok_or_else(|| no_such_map(name))?;
            let (partition, _) = map.table.lookup(key);
            return Ok((map.epoch, partition));
        }
        let op = ReadOp::MapPartition {
            name: name.to_string(),
            key: key.to_vec(),
        };
        match self.read(op, ReadMode::Stale)? {
            Response::MapPartition { epoch, partition } => Ok((epoch, partition)),
            other => Err(unexpected(&other)),
        }
    }

    /// The whole of map `name` (epoch and table), `None` if there is no such map; read as
    /// [`ClientOptions::read_mode`] says.
    pub fn map(&self, name: &str) -> Result<Option<PartitionMap>> {
        let op = ReadOp::Map {
            name: name.to_string(),
        };
        match self.read(op, self.inner.options.read_mode)? {
            Response::Map(None) => Ok(None),
            Response::Map(Some(record)) => record.to_map().map(Some).map_err(|e| {
                Error::Fatal(format!(
                    "the member sent a partition map that is not valid: {e}"
                ))
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// The slots map `name` moved in the epochs after `since_epoch` (or
    /// [`MapMoves::Compacted`] when those are no longer kept); read as
    /// [`ClientOptions::read_mode`] says. `InvalidArgument` if there is no such map.
    pub fn moves(&self, name: &str, since_epoch: u64) -> Result<MapMoves> {
        let op = ReadOp::MapMoves {
            name: name.to_string(),
            since_epoch,
        };
        match self.read(op, self.inner.options.read_mode)? {
            Response::MapMoves(moves) => Ok(moves),
            other => Err(unexpected(&other)),
        }
    }

    fn map_write(&self, op: Op) -> Result<MapChange> {
        match self.write(op)? {
            CommandResult::MapChanged(change) => Ok(change),
            other => Err(unexpected_result(other)),
        }
    }

    // ----- cluster -----

    /// The view of the member this client talks to.
    pub fn status(&self) -> Result<Status> {
        match self.retry(Request::Status, false)? {
            Response::Status(s) => Ok(*s),
            other => Err(unexpected(&other)),
        }
    }

    /// The applied index and state hash of the member this client talks to.
    pub fn state_hash(&self) -> Result<(LogIndex, [u8; 32])> {
        match self.retry(Request::StateHash, false)? {
            Response::StateHash { applied, hash } => Ok((applied, hash)),
            other => Err(unexpected(&other)),
        }
    }

    /// Add a learner; returns once the change is committed.
    pub fn add_learner(&self, id: NodeId, address: &str) -> Result<()> {
        self.admin(AdminOp::AddLearner {
            id,
            address: address.to_string(),
        })
    }

    /// Promote a learner to voter; returns once the change is committed.
    pub fn promote_learner(&self, id: NodeId) -> Result<()> {
        self.admin(AdminOp::PromoteLearner { id })
    }

    /// Remove a member; returns once the change is committed.
    pub fn remove_member(&self, id: NodeId) -> Result<()> {
        self.admin(AdminOp::RemoveMember { id })
    }

    /// Hand leadership to voter `to`; returns once it leads.
    pub fn transfer_leadership(&self, to: NodeId) -> Result<()> {
        self.admin(AdminOp::TransferLeadership { to })
    }

    /// Run a membership or leadership operation (each is idempotent, so it is retried like a
    /// read).
    pub fn admin(&self, op: AdminOp) -> Result<()> {
        match self.retry(Request::Admin(op), true)? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    // ----- machinery -----

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.options.request_timeout
    }

    fn read(&self, op: ReadOp, mode: ReadMode) -> Result<Response> {
        self.retry(Request::Read { op, mode }, false)
    }

    /// Send an idempotent request until it gets an answer or the deadline passes.
    /// `maybe_effect`: a `Timeout` means it may have taken effect (admin ops), so the final
    /// error is `Timeout` rather than `Unavailable`.
    fn retry(&self, request: Request, maybe_effect: bool) -> Result<Response> {
        let deadline = self.deadline();
        let mut backoff = Duration::from_millis(2);
        let mut timed_out = false;
        loop {
            let error = match self.inner.backend.call(request.clone(), deadline) {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            match error.code() {
                ErrorCode::Unavailable => {}
                ErrorCode::Timeout => timed_out = true,
                _ => return Err(error),
            }
            let now = Instant::now();
            if now + backoff >= deadline {
                return Err(if timed_out && maybe_effect {
                    Error::Timeout(format!("{} (retried until the deadline)", message(&error)))
                } else if timed_out {
                    Error::Timeout(message(&error))
                } else {
                    Error::Unavailable(message(&error))
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Apply a command at most once, retrying it with the same session and sequence number.
    fn write(&self, op: Op) -> Result<CommandResult> {
        // Check the limits here: a bad argument never costs a round trip.
        Command {
            client_id: 1,
            seq: 1,
            op: op.clone(),
        }
        .validate()?;
        let deadline = self.deadline();
        // An evicted session (UnknownClient) on the first attempt: register again once.
        for _ in 0..2 {
            let mut session = self.take_session(deadline)?;
            let command = Command {
                client_id: session.client_id,
                seq: session.next_seq,
                op: op.clone(),
            };
            session.next_seq += 1;
            let (result, maybe_applied) = self.send_write(command, deadline);
            match result {
                Ok(CommandResult::UnknownClient) => {
                    // The session was evicted from the replicated client table: drop it.
                    if maybe_applied {
                        return Err(Error::Timeout(
                            "the session expired while the write was retried; it may have been \
                             applied"
                                .into(),
                        ));
                    }
                    continue;
                }
                Ok(CommandResult::Stale { last_seq }) => {
                    self.put_session(session);
                    return Err(Error::Timeout(format!(
                        "the member reports a newer command of this session (seq {last_seq}); \
                         the outcome of this one is unknown"
                    )));
                }
                Ok(CommandResult::Rejected { reason }) => {
                    self.put_session(session);
                    return Err(Error::InvalidArgument(reason));
                }
                Ok(CommandResult::NotRetained { revision }) => {
                    self.put_session(session);
                    return Err(Error::Timeout(format!(
                        "the write was applied at revision {revision} but its result was too \
                         large to remember for a retry; read the keys to learn it"
                    )));
                }
                Ok(result) => {
                    self.put_session(session);
                    return Ok(result);
                }
                Err(e) => {
                    // The sequence number is used up either way; the session stays valid.
                    self.put_session(session);
                    return Err(e);
                }
            }
        }
        Err(Error::Unavailable(
            "the cluster kept forgetting this client's session".into(),
        ))
    }

    /// Send one command until a definite answer or the deadline. Also says whether an
    /// earlier attempt may have been applied.
    fn send_write(&self, command: Command, deadline: Instant) -> (Result<CommandResult>, bool) {
        let mut backoff = Duration::from_millis(2);
        let mut maybe_applied = false;
        loop {
            let error = match self
                .inner
                .backend
                .call(Request::Write(command.clone()), deadline)
            {
                Ok(Response::Write(result)) => return (Ok(result), maybe_applied),
                Ok(other) => return (Err(unexpected(&other)), maybe_applied),
                Err(e) => e,
            };
            match error.code() {
                ErrorCode::Unavailable => {}
                ErrorCode::Timeout => maybe_applied = true,
                _ => return (Err(error), maybe_applied),
            }
            let now = Instant::now();
            if now + backoff >= deadline {
                let e = if maybe_applied {
                    Error::Timeout(message(&error))
                } else {
                    Error::Unavailable(message(&error))
                };
                return (Err(e), maybe_applied);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn take_session(&self, deadline: Instant) -> Result<WriteSession> {
        if let Some(session) = lock(&self.inner.sessions).pop() {
            return Ok(session);
        }
        let register = Command {
            client_id: UNTRACKED_CLIENT,
            seq: 0,
            op: Op::RegisterClient,
        };
        // Registering twice (a retry after a timeout) only wastes a slot of the client table.
        match self.send_write(register, deadline).0? {
            CommandResult::Registered { client_id } => Ok(WriteSession {
                client_id,
                next_seq: 1,
            }),
            other => Err(unexpected_result(other)),
        }
    }

    fn put_session(&self, session: WriteSession) {
        lock(&self.inner.sessions).push(session);
    }
}

/// The message of an error without its variant prefix.
fn message(e: &Error) -> String {
    match e {
        Error::Unavailable(m) | Error::Timeout(m) => m.clone(),
        other => other.to_string(),
    }
}

fn no_such_map(name: &str) -> Error {
    Error::InvalidArgument(format!("partition map: there is no map named {name:?}"))
}

fn unexpected(response: &Response) -> Error {
    Error::Fatal(format!("unexpected response from the member: {response:?}"))
}

fn unexpected_result(result: CommandResult) -> Error {
    Error::Fatal(format!("unexpected command result: {result:?}"))
}
