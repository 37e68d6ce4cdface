//! The request and response types of the client API: one set, used by the in-process backend,
//! by the remote backend on the wire (`docs/FORMAT.md`, "Client protocol"), and by members
//! forwarding requests to their leader.
//!
//! These types depend on nothing above `sm`, so both `node` (which serves them) and the client
//! library (which sends them) can use them without depending on each other's internals.

use crate::error::{Error, ErrorCode};
pub use crate::histogram::Histogram;
use crate::sm::{
    Command, CommandResult, ElectionLeader, FencingToken, LockInfo, MapMoves, MapRecord, Owners,
    RangePage, SessionId, SessionInfo, VersionedValue,
};
use crate::types::{LogIndex, NodeId, Term};
use bincode::{Decode, Encode};

mod watch;
pub(crate) use watch::target_event;
pub use watch::{
    EventKind, KeyWatchSpec, PushFrame, WatchEnd, WatchEvent, WatchPush, WatchSpec, WatchTarget,
    PUSH_FRAME_VERSION,
};

/// Version of the client protocol carried in every [`ClientRequest`]. A member refuses a
/// request of a newer version with `UnsupportedVersion`.
///
/// Version 2 appended `snapshots_installed`, `fsync_latency` and `fsync_latency_sum_micros`
/// to [`Counters`] (and `snapshots_received` now counts fetched snapshots, installed or not).
/// Version 3 appended `rejected_messages` to [`MemberStatus`] and `peer_messages_rejected` to
/// [`Counters`], and the backup requests: [`ReadOp::Snapshot`], [`Request::SnapshotChunk`]
/// and their answers [`Response::Snapshot`], [`Response::SnapshotChunk`].
///
/// A client sends each request with the lowest version that has it
/// ([`Request::protocol_version`]), so that a member of an older version still serves every
/// request it knows.
/// The partition-map reads ([`ReadOp::MapOwners`] ..), the session and lock reads
/// ([`ReadOp::Lock`] ..) and [`Request::SessionKeepAlive`] are version 3 too,
/// and so are watches: [`Request::Watch`], [`Request::CancelWatch`],
/// [`ReadOp::RangeAt`] with its answer [`Response::RangeAt`], and pushed frames (frame kind 34,
/// [`PushFrame`]). A member pushes only for watches a client opened, so a client of an older
/// version, which never sends these requests, never receives a pushed frame.
///
/// Version 4 added elections: [`ReadOp::Leader`] with its answer [`Response::Leader`], and
/// [`Request::OpenWatch`], which watches any [`WatchTarget`] (an election, a partition map);
/// its pushes are push frame version 2.
pub const CLIENT_PROTOCOL_VERSION: u32 = 4;

/// The oldest client protocol version that may open a watch.
pub const MIN_WATCH_PROTOCOL_VERSION: u32 = 3;

/// The oldest client protocol version whose [`Request::Status`] a member answers: a status
/// encoded by a newer member would not decode in an older client.
pub const MIN_STATUS_PROTOCOL_VERSION: u32 = 3;

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Encode, Decode)]
pub enum ReadMode {
    /// Linearizable: the member confirms with a quorum that the leader is still the leader
    /// (ReadIndex, or the leader's lease when the cluster enables lease reads) and waits until it
    /// has applied everything committed at that point. Sees every write acknowledged before the
    /// read started.
    #[default]
    Linearizable,
    /// Served from the member's local state at once, without contacting anyone: fast, may be
    /// stale (it misses writes the member has not applied yet).
    Stale,
}

/// A read operation.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ReadOp {
    /// The value of one key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Keys in `[start, end)` in key order (`end` `None`: to the last key), at most `limit`.
    Range {
        /// First key (inclusive); may be empty.
        start: Vec<u8>,
        /// End key (exclusive); `None` for no upper bound.
        end: Option<Vec<u8>>,
        /// Most keys returned, in `1..=MAX_SCAN_LIMIT`.
        limit: u32,
    },
    /// Write a snapshot file of the whole state as of this read (protocol version 3) and
    /// answer with [`Response::Snapshot`]; its bytes are then read with
    /// [`Request::SnapshotChunk`]. Read linearizably, the snapshot holds every write
    /// acknowledged before the request was sent.
    Snapshot,
    /// The partition and owners of `key` in partition map `name` (protocol version 3).
    MapOwners {
        /// The map.
        name: String,
        /// The key (at most `MAX_KEY_BYTES`; may be empty).
        key: Vec<u8>,
    },
    /// The partition of `key` in map `name`, with the map's epoch (protocol version 3).
    MapPartition {
        /// The map.
        name: String,
        /// The key.
        key: Vec<u8>,
    },
    /// The whole of map `name` (protocol version 3).
    Map {
        /// The map.
        name: String,
    },
    /// The moves of map `name` after `since_epoch` (protocol version 3).
    MapMoves {
        /// The map.
        name: String,
        /// Moves of the epochs after this one.
        since_epoch: u64,
    },
    /// [`ReadOp::Range`], answered with the revision the page reflects
    /// ([`Response::RangeAt`]): the state after applying every entry up to it, so a watch from
    /// that revision + 1 misses nothing and repeats nothing (protocol version 3).
    RangeAt {
        /// First key (inclusive); may be empty.
        start: Vec<u8>,
        /// End key (exclusive); `None` for no upper bound.
        end: Option<Vec<u8>>,
        /// Most keys returned, in `1..=MAX_SCAN_LIMIT`.
        limit: u32,
    },
    /// One lock's holders and waiters (version 3).
    Lock {
        /// The lock.
        name: Vec<u8>,
    },
    /// Locks with holders or waiters in name order after `after` (empty: from the first), at
    /// most `limit` (version 3).
    Locks {
        /// Start after this name.
        after: Vec<u8>,
        /// Most locks returned, in `1..=MAX_SCAN_LIMIT`.
        limit: u32,
    },
    /// Whether `token` is a current grant of lock `name` (version 3).
    CheckToken {
        /// The lock.
        name: Vec<u8>,
        /// The fencing token.
        token: FencingToken,
    },
    /// What the state knows of a session (version 3).
    Session {
        /// The session.
        session: SessionId,
    },
    /// Who leads election `name`, with the revision the answer reflects (version 4), answered
    /// with [`Response::Leader`].
    Leader {
        /// The election.
        name: Vec<u8>,
    },
    /// Election `name`'s leader and campaigners, as a lock's holders and waiters (version 4),
    /// answered with [`Response::Lock`].
    Election {
        /// The election.
        name: Vec<u8>,
    },
}

/// A membership or leadership operation. Each waits until it took effect (the change is
/// committed, or the new leader is elected).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AdminOp {
    /// Add a non-voting member (it receives the log and catches up; it does not vote).
    AddLearner {
        /// The new member's id.
        id: NodeId,
        /// Where the other members reach it (`host:port`).
        address: String,
    },
    /// Make a learner a voter.
    PromoteLearner {
        /// The learner.
        id: NodeId,
    },
    /// Remove a voter or a learner.
    RemoveMember {
        /// The member.
        id: NodeId,
    },
    /// Hand leadership to another voter.
    TransferLeadership {
        /// The voter to become leader.
        to: NodeId,
    },
}

/// One request to a member.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Request {
    /// A state-machine command (put, delete, compare-and-swap, delete-range, txn, register).
    /// Goes through the leader and the log.
    Write(Command),
    /// A read.
    Read {
        /// What to read.
        op: ReadOp,
        /// How fresh it must be.
        mode: ReadMode,
    },
    /// The answering member's view of the cluster.
    Status,
    /// The answering member's applied index and state hash (reads the whole state).
    StateHash,
    /// A membership or leadership change.
    Admin(AdminOp),
    /// The bytes at `offset` of the answering member's snapshot file (`index`, `term`), as
    /// described by a [`Response::Snapshot`] (protocol version 3). Answered with
    /// [`Response::SnapshotChunk`].
    SnapshotChunk {
        /// The snapshot's last included index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// Byte offset in the file.
        offset: u64,
    },
    /// Open a watch on this connection (protocol version 3): the member answers
    /// [`Response::Done`] once it is registered, then pushes [`PushFrame`]s with this
    /// `watch_id`. Served by the member the client is connected to (never forwarded). Remote
    /// clients only.
    Watch {
        /// The client's id for the watch, unique among its open watches on the connection.
        watch_id: u64,
        /// What to watch, from which revision.
        spec: KeyWatchSpec,
    },
    /// Close a watch opened on this connection (answered [`Response::Done`], also if it had
    /// ended already).
    CancelWatch {
        /// The watch.
        watch_id: u64,
    },
    /// Keep sessions alive (version 3): the leader resets each one's deadline to now + its TTL.
    /// Not a log entry; a follower forwards it to the leader.
    SessionKeepAlive {
        /// The sessions (at most `MAX_SESSION_CHECKPOINT_BATCH`).
        sessions: Vec<SessionId>,
    },
    /// [`Request::Watch`] of any [`WatchTarget`] (protocol version 4): user keys, an
    /// election, a partition map. A client sends a watch of user keys as [`Request::Watch`], so
    /// that members of version 3 serve it.
    OpenWatch {
        /// As in [`Request::Watch`].
        watch_id: u64,
        /// What to watch, from which revision.
        spec: WatchSpec,
    },
}

impl Request {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Write(_) => "write",
            Request::Read { .. } => "read",
            Request::Status => "status",
            Request::StateHash => "state_hash",
            Request::Admin(_) => "admin",
            Request::SnapshotChunk { .. } => "snapshot_chunk",
            Request::Watch { .. } => "watch",
            Request::CancelWatch { .. } => "cancel_watch",
            Request::SessionKeepAlive { .. } => "session_keepalive",
            Request::OpenWatch { .. } => "watch",
        }
    }

    /// The request that opens a watch of `spec` with `watch_id`: [`Request::Watch`] for user
    /// keys (any member of version 3 serves it), [`Request::OpenWatch`] otherwise.
    pub fn watch(watch_id: u64, spec: &WatchSpec) -> Request {
        match spec.as_key_watch() {
            Some(spec) => Request::Watch { watch_id, spec },
            None => Request::OpenWatch {
                watch_id,
                spec: spec.clone(),
            },
        }
    }

    /// The lowest client protocol version that has this request (what a client puts in
    /// [`ClientRequest::version`]).
    pub fn protocol_version(&self) -> u32 {
        match self {
            Request::Read {
                op: ReadOp::Leader { .. } | ReadOp::Election { .. },
                ..
            }
            | Request::OpenWatch { .. } => 4,
            Request::Write(command) if command.min_version() > 3 => 4,
            Request::Read {
                op:
                    ReadOp::Snapshot
                    | ReadOp::MapOwners { .. }
                    | ReadOp::MapPartition { .. }
                    | ReadOp::Map { .. }
                    | ReadOp::MapMoves { .. }
                    | ReadOp::RangeAt { .. },
                ..
            }
            | Request::SnapshotChunk { .. }
            | Request::Watch { .. }
            | Request::CancelWatch { .. }
            // The version-3 status carries the rejected-message counters.
            | Request::Status => 3,
            // A command an older member cannot decode (sent as version 3, it gets a clear
            // `UnsupportedVersion` from a version-2 member instead of a decoding failure).
            Request::Write(command) if command.min_version() > 1 => 3,
            _ => 2,
        }
    }
}

/// A snapshot file a member wrote for a client (the answer to [`ReadOp::Snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotInfo {
    /// The last log index the snapshot includes.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The file's size in bytes.
    pub size: u64,
    /// sha256 over the file's bytes before its trailer (as in its name).
    pub sha256: [u8; 32],
}

/// One chunk of a snapshot file: what a leader sends a follower installing its snapshot, and
/// what a member answers a client's [`Request::SnapshotChunk`] with. (A tuple variant around
/// this struct encodes exactly as a struct-like variant with these fields.)
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotChunk {
    /// The snapshot's last included index.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
    /// sha256 of the snapshot (as in its file name); the receiver checks the file against it
    /// once complete.
    pub sha256: [u8; 32],
    /// Byte offset of `data` in the file.
    pub offset: u64,
    /// At most `SNAPSHOT_CHUNK_BYTES` bytes.
    pub data: Vec<u8>,
    /// This chunk ends the file.
    pub done: bool,
}

/// What a member answers.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Response {
    /// The result of a [`Request::Write`].
    Write(CommandResult),
    /// The result of a [`ReadOp::Get`]: `None` if the key is absent.
    Value(Option<VersionedValue>),
    /// The result of a [`ReadOp::Range`].
    Range(RangePage),
    /// The answer to [`Request::Status`] (boxed: it is by far the largest answer, and the
    /// rarest).
    Status(Box<Status>),
    /// The answer to [`Request::StateHash`].
    StateHash {
        /// The applied index the hash covers.
        applied: LogIndex,
        /// sha256 of the state (`docs/FORMAT.md`, "State hash").
        hash: [u8; 32],
    },
    /// An [`AdminOp`] took effect (also: a watch was opened or cancelled).
    Done,
    /// The answer to [`ReadOp::Snapshot`]: the snapshot file written.
    Snapshot(SnapshotInfo),
    /// The answer to [`Request::SnapshotChunk`]: `None` if the member has no such snapshot
    /// (never had, or replaced and deleted it since) or the offset is past its end.
    SnapshotChunk(Option<SnapshotChunk>),
    /// The answer to [`ReadOp::MapOwners`].
    MapOwners(Owners),
    /// The answer to [`ReadOp::MapPartition`].
    MapPartition {
        /// The map's epoch.
        epoch: u64,
        /// The key's partition.
        partition: u32,
    },
    /// The answer to [`ReadOp::Map`]: `None` if there is no such map.
    Map(Option<MapRecord>),
    /// The answer to [`ReadOp::MapMoves`].
    MapMoves(MapMoves),
    /// The result of a [`ReadOp::RangeAt`].
    RangeAt {
        /// The keys.
        page: RangePage,
        /// The revision the page reflects (the member's applied index when it read).
        revision: LogIndex,
    },
    /// The answer to [`ReadOp::Lock`].
    Lock(Option<LockInfo>),
    /// The answer to [`ReadOp::Locks`].
    Locks {
        /// The locks.
        locks: Vec<LockInfo>,
        /// Whether more remain.
        more: bool,
    },
    /// The answer to [`ReadOp::CheckToken`].
    TokenHeld(bool),
    /// The answer to [`ReadOp::Session`].
    Session(Option<SessionInfo>),
    /// The answer to [`Request::SessionKeepAlive`]: per session, its TTL if the leader knows it
    /// (the deadline was reset), `None` if it does not exist (expired or revoked).
    SessionKeepAlive(Vec<(SessionId, Option<u64>)>),
    /// The answer to [`ReadOp::Leader`] (version 4).
    Leader {
        /// Who leads, `None` if nobody campaigns.
        leader: Option<ElectionLeader>,
        /// The revision the answer reflects (the member's applied index when it read): an
        /// observer watches the election from here + 1.
        revision: LogIndex,
    },
}

/// A failure, as it crosses the wire: the stable [`ErrorCode`] and a message.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WireError {
    /// The [`ErrorCode`] value.
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> WireError {
        WireError {
            code: e.code() as i32,
            message: match e {
                // The variant's own prefix is added again on the other side.
                Error::InvalidArgument(m)
                | Error::Unavailable(m)
                | Error::Timeout(m)
                | Error::Auth(m)
                | Error::DataDir(m)
                | Error::Fatal(m)
                | Error::LockNotHeld(m)
                | Error::SessionExpired(m) => m.clone(),
                other => other.to_string(),
            },
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        let m = e.message;
        match e.code {
            c if c == ErrorCode::InvalidArgument as i32 => Error::InvalidArgument(m),
            c if c == ErrorCode::Unavailable as i32 => Error::Unavailable(m),
            c if c == ErrorCode::Timeout as i32 => Error::Timeout(m),
            c if c == ErrorCode::Auth as i32 => Error::Auth(m),
            c if c == ErrorCode::DataDir as i32 => Error::DataDir(m),
            c if c == ErrorCode::Corrupt as i32 => Error::corrupt(0, m),
            c if c == ErrorCode::Io as i32 => Error::io(m, std::io::Error::other("on the member")),
            c if c == ErrorCode::Fatal as i32 => Error::Fatal(m),
            c if c == ErrorCode::LockNotHeld as i32 => Error::LockNotHeld(m),
            c if c == ErrorCode::SessionExpired as i32 => Error::SessionExpired(m),
            // UnsupportedVersion carries static names that cannot cross the wire; unknown codes
            // (from a newer member) are failures of that member.
            _ => Error::Fatal(format!("member reports error code {}: {m}", e.code)),
        }
    }
}

/// The frame a remote client sends: the protocol version, how long the member may work on the
/// request, and the request.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ClientRequest {
    /// [`CLIENT_PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The member answers within this many milliseconds (`Timeout` or `Unavailable` if it
    /// cannot); capped by the member.
    pub timeout_ms: u32,
    /// The request.
    pub request: Request,
}

/// The frame a member answers with.
pub type ClientResponse = Result<Response, WireError>;

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum NodeRole {
    /// Follows a leader (or waits for one).
    Follower,
    /// Checking whether it could win an election (pre-vote).
    PreCandidate,
    /// Campaigning.
    Candidate,
    /// Leads.
    Leader,
    /// Not serving: shut down or stopped by a storage failure.
    Stopped,
}

/// One member as seen from the answering member.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MemberStatus {
    /// The member's id.
    pub id: NodeId,
    /// Where members reach it.
    pub address: String,
    /// Voter (`true`) or learner.
    pub voter: bool,
    /// The leader's replication progress for it (the highest index known to be on it); `None`
    /// unless the answering member leads (its own entry then shows its durable index).
    pub match_index: Option<LogIndex>,
    /// Milliseconds since the answering member last heard from it (`None`: never, or itself).
    pub last_contact_ms: Option<u64>,
    /// Messages from it that the answering member dropped because no correct peer could have
    /// sent them (an impossible index, a second leader in one term, ...; protocol version 3).
    pub rejected_messages: u64,
}

/// Counters of one member since it started (monotonic), for monitoring.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Counters {
    /// Write commands proposed by this member while it led.
    pub proposals: u64,
    /// Requests forwarded to the leader.
    pub forwarded: u64,
    /// Linearizable reads served.
    pub reads: u64,
    /// Entries applied to the state machine.
    pub entries_applied: u64,
    /// WAL batches written (one fdatasync each, shared by a group commit).
    pub wal_writes: u64,
    /// Latency of WAL writes as the driver sees it (queueing + write + fdatasync).
    pub wal_write_latency: Histogram,
    /// Snapshots this member wrote.
    pub snapshots_taken: u64,
    /// Snapshot transfers to followers that completed.
    pub snapshots_sent: u64,
    /// Snapshots received in full from a leader (their data durable here).
    pub snapshots_received: u64,
    /// Peer messages the transport dropped (queue full, peer unreachable, failed write).
    pub transport_drops: u64,
    /// Elections this member started (real, not pre-vote).
    pub elections_started: u64,
    /// Snapshots from a leader that replaced this member's state (protocol version 2).
    pub snapshots_installed: u64,
    /// Latency of the WAL's fdatasync calls alone, as measured where they are issued
    /// (protocol version 2).
    pub fsync_latency: Histogram,
    /// Sum of all `fsync_latency` observations in microseconds (protocol version 2).
    pub fsync_latency_sum_micros: u64,
    /// Peer messages dropped because no correct peer could have sent them, from all peers
    /// (protocol version 3; per peer in [`MemberStatus::rejected_messages`]).
    pub peer_messages_rejected: u64,
}

/// A member's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Status {
    /// The answering member.
    pub id: NodeId,
    /// Its role.
    pub role: NodeRole,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest index it knows committed.
    pub commit_index: LogIndex,
    /// Highest index its state machine applied.
    pub applied_index: LogIndex,
    /// First index in its log (the one after its latest snapshot).
    pub first_index: LogIndex,
    /// Last index in its log.
    pub last_index: LogIndex,
    /// The configuration in force, with the leader's view of each member when it leads.
    pub members: Vec<MemberStatus>,
    /// Counters.
    pub counters: Counters,
    /// Why the member stopped, if a storage failure stopped it (then `role` is
    /// [`NodeRole::Stopped`]; a running member reports `None`).
    pub failure: Option<String>,
}

impl Status {
    /// The address of member `id` in the configuration, if it is a member.
    pub fn address_of(&self, id: NodeId) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.address.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_value, encode_value};

    #[test]
    fn wire_errors_keep_code_and_message() {
        for e in [
            Error::InvalidArgument("bad key".into()),
            Error::Unavailable("no leader".into()),
            Error::Timeout("late".into()),
            Error::Fatal("disk".into()),
        ] {
            let wire = WireError::from(&e);
            let back = Error::from(wire.clone());
            assert_eq!(back.code(), e.code());
            assert_eq!(back.to_string(), e.to_string());
        }
        let unknown = Error::from(WireError {
            code: 99,
            message: "from the future".into(),
        });
        assert_eq!(unknown.code(), ErrorCode::Fatal);
    }

    #[test]
    fn wire_layout_is_stable() {
        // docs/FORMAT.md, "Client protocol".
        let request = ClientRequest {
            version: 1,
            timeout_ms: 500,
            request: Request::Read {
                op: ReadOp::Get { key: b"k".to_vec() },
                mode: ReadMode::Linearizable,
            },
        };
        assert_eq!(
            encode_value(&request).unwrap(),
            [0x01, 0xfb, 0xf4, 0x01, 0x01, 0x00, 0x01, 0x6b, 0x00]
        );
    }

    #[test]
    fn backup_requests_are_version_3_and_their_layout_is_stable() {
        // docs/FORMAT.md, "Client protocol": the version-3 tags are appended after the old ones.
        let begin = Request::Read {
            op: ReadOp::Snapshot,
            mode: ReadMode::Linearizable,
        };
        assert_eq!(encode_value(&begin).unwrap(), [0x01, 0x02, 0x00]);
        let chunk = Request::SnapshotChunk {
            index: LogIndex(7),
            term: Term(2),
            offset: 300,
        };
        assert_eq!(
            encode_value(&chunk).unwrap(),
            [0x05, 0x07, 0x02, 0xfb, 0x2c, 0x01]
        );
        assert_eq!(begin.protocol_version(), 3);
        assert_eq!(chunk.protocol_version(), 3);
        // Everything else keeps the version that introduced it, so older members serve it;
        // a status request is version 3 because its answer has the version-3 fields.
        assert_eq!(Request::StateHash.protocol_version(), 2);
        assert_eq!(Request::Status.protocol_version(), 3);
        assert_eq!(Response::SnapshotChunk(None), {
            let bytes = encode_value(&Response::SnapshotChunk(None)).unwrap();
            assert_eq!(bytes, [0x07, 0x00]);
            decode_value::<Response>(&bytes).unwrap()
        });
    }

    #[test]
    fn requests_round_trip_through_the_codec() {
        let request = ClientRequest {
            version: CLIENT_PROTOCOL_VERSION,
            timeout_ms: 500,
            request: Request::Read {
                op: ReadOp::Range {
                    start: b"a".to_vec(),
                    end: None,
                    limit: 10,
                },
                mode: ReadMode::Stale,
            },
        };
        let bytes = encode_value(&request).unwrap();
        assert_eq!(decode_value::<ClientRequest>(&bytes).unwrap(), request);
        let response: ClientResponse = Err(WireError {
            code: 2,
            message: "x".into(),
        });
        let bytes = encode_value(&response).unwrap();
        assert_eq!(decode_value::<ClientResponse>(&bytes).unwrap(), response);
    }
}
