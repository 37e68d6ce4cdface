//! What applying an entry produces, and what reads return.
//!
//! Expected outcomes (a compare-and-swap that lost, an absent key, a stale retry) are values
//! here, never errors. Results are encoded (the client table keeps the last one per client), so
//! variants are only ever appended.

use crate::types::{LogIndex, Term};
use bincode::{Decode, Encode};

/// The revision metadata of a stored value. The revision of a write is the log index of the
/// entry that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct KeyMeta {
    /// Revision of the write that created the key (after its last delete).
    pub create_revision: LogIndex,
    /// Revision of the latest write of the key.
    pub mod_revision: LogIndex,
    /// Number of writes since creation: 1 after the creating write.
    pub version: u64,
}

/// A value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct VersionedValue {
    /// The value bytes.
    pub value: Vec<u8>,
    /// Its revisions and version.
    pub meta: KeyMeta,
}

/// One key of a range scan.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Its revisions and version.
    pub meta: KeyMeta,
}

/// One page of a range scan.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct RangePage {
    /// Keys in order, at most the limit asked for.
    pub entries: Vec<KeyValue>,
    /// Whether more keys remain in the range after the last one returned.
    pub more: bool,
}

/// Result of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct PutResult {
    /// The revision of this write (the entry's log index).
    pub revision: LogIndex,
    /// Metadata of the value it replaced, `None` if the key was absent.
    pub previous: Option<KeyMeta>,
}

/// Result of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct DeleteResult {
    /// The revision of this command (the entry's log index).
    pub revision: LogIndex,
    /// Metadata of the value it removed, `None` if the key was absent.
    pub previous: Option<KeyMeta>,
}

impl DeleteResult {
    /// Whether the key existed (and so was removed).
    pub fn existed(&self) -> bool {
        self.previous.is_some()
    }
}

/// Result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum CasResult {
    /// The comparison held and the new value was stored.
    Swapped {
        /// The revision of this write.
        revision: LogIndex,
        /// Metadata of the value it replaced, `None` if the key was absent.
        previous: Option<KeyMeta>,
    },
    /// The comparison failed; nothing was written.
    Failed {
        /// The key's value at that point, `None` if absent.
        current: Option<VersionedValue>,
    },
}

/// Result of a delete-range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct DeleteRangeResult {
    /// The revision of this command.
    pub revision: LogIndex,
    /// How many keys were removed.
    pub deleted: u64,
    /// Whether keys remain in the range (the limit was reached).
    pub more: bool,
}

/// Result of one transaction op.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum TxnOpResult {
    /// A put.
    Put(PutResult),
    /// A delete.
    Delete(DeleteResult),
    /// A get: the value at that point of the branch, `None` if absent.
    Get(Option<VersionedValue>),
}

/// Result of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TxnResult {
    /// The revision of this command.
    pub revision: LogIndex,
    /// `true` if every compare held and the success branch ran; `false` for the failure branch.
    pub succeeded: bool,
    /// One result per op of the branch that ran, in order.
    pub results: Vec<TxnOpResult>,
}

/// Result of a partition-map command: the epoch it made and what moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct MapChange {
    /// The map's epoch after the command (1 for a creation).
    pub epoch: u64,
    /// Slots whose owner changed (`placement::diff`), promotions within a partition included.
    pub slots_moved: u64,
    /// Partition replicas that must be copied (`placement::replica_moves`).
    pub replica_moves: u64,
}

/// What a command did. Variants are only ever appended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum CommandResult {
    /// A client was registered; use `client_id` (the log index of the registration) from now on.
    Registered {
        /// The new client's id.
        client_id: u64,
    },
    /// A put.
    Put(PutResult),
    /// A delete.
    Delete(DeleteResult),
    /// A compare-and-swap.
    Cas(CasResult),
    /// A delete-range.
    DeleteRange(DeleteRangeResult),
    /// A transaction.
    Txn(TxnResult),
    /// The command failed validation at apply time (see `Command::validate`); nothing changed,
    /// and the client table does not record it.
    Rejected {
        /// The validation message.
        reason: String,
    },
    /// The command's seq is below the client's last applied seq: it was NOT applied now. Whether
    /// it was applied earlier is no longer known (only the last result is remembered).
    Stale {
        /// The client's last applied seq.
        last_seq: u64,
    },
    /// The client id is not in the client table: it was never registered, or it was evicted
    /// (the table keeps the `MAX_CLIENTS` clients whose last apply is newest). The command was
    /// NOT applied now; the outcome of a command the client had outstanding is unknown. The
    /// client must register again.
    UnknownClient,
    /// The answer to a retried command whose result was too large to remember
    /// (`MAX_RETAINED_RESULT_BYTES`): it was applied at `revision`; read the keys again to learn
    /// the outcome.
    NotRetained {
        /// The revision the command was applied at.
        revision: LogIndex,
    },
    /// A partition map was created or changed (command version 2).
    MapChanged(MapChange),
    /// A session was granted (`Op::SessionGrant`).
    SessionGranted {
        /// The new session's id (the log index of the grant).
        session: SessionId,
        /// Its time to live.
        ttl_ms: u64,
    },
    /// The session named by the command does not exist (never granted, expired or revoked):
    /// nothing changed.
    SessionNotFound,
    /// A session was revoked (`Op::SessionRevoke`): its locks are released, its waits failed and
    /// its ephemeral keys deleted.
    SessionRevoked,
    /// `Op::SessionCheckpoint` or `Op::SessionExpire` ran; `sessions` of the named sessions
    /// still existed and were checkpointed or ended.
    SessionsUpdated {
        /// How many of the named sessions existed.
        sessions: u32,
    },
    /// The answer to `Op::LockAcquire`.
    Lock(LockResult),
    /// The answer to `Op::LockRelease`: `false` if the caller's session held no such grant
    /// (released already, or by its session's end).
    LockReleased {
        /// Whether a grant was released.
        released: bool,
    },
    /// The answer to `Op::LockCancel`.
    LockCancel(CancelResult),
    /// A limit of the replicated state was reached (`MAX_SESSIONS`, `MAX_SESSION_KEYS`,
    /// `MAX_SESSION_LOCKS`, `MAX_LOCK_WAITERS`): nothing changed.
    LimitReached {
        /// Which limit.
        what: String,
    },
    /// `Op::LockDelayEnd` ran (command version 4): `locks` of the named locks were still in
    /// their lock-delay and now grant again (their next waiters are promoted by this entry).
    LockDelaysEnded {
        /// How many of the named locks were delayed.
        locks: u32,
    },
    /// The answer to `Op::ElectionProclaim`: `false` if the token does not lead the election
    /// (it resigned, its session ended, or it never led); nothing changed then.
    Proclaimed {
        /// Whether the leader's value was replaced.
        proclaimed: bool,
    },
}

/// Who leads an election (`StateMachine::leader`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ElectionLeader {
    /// The value the leader published (with its campaign, or its latest proclaim).
    pub value: Vec<u8>,
    /// The fencing token of its leadership: the log index of the entry that made it leader.
    pub token: FencingToken,
    /// The session its leadership lives and dies with.
    pub session: SessionId,
}

/// A session as the state machine knows it (`StateMachine::session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct SessionInfo {
    /// The session.
    pub session: SessionId,
    /// The TTL it was granted with.
    pub ttl_ms: u64,
    /// Its remaining TTL at the leader's last checkpoint (the full TTL before the first): the
    /// live deadline is known only to the leader.
    pub checkpointed_remaining_ms: u64,
}

/// A session (lease) id: the log index of the entry that granted it, so ids are unique and never
/// reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A fencing token: the log index of the entry that granted a lock. Strictly increasing per lock
/// across grants (log indexes only grow, across failovers and restarts); shared holders granted
/// by the same entry share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct FencingToken(pub u64);

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum LockMode {
    /// One holder at a time (a writer).
    Exclusive,
    /// Any number of holders at once, none exclusive (readers).
    Shared,
}

/// The answer to a lock acquire.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum LockResult {
    /// Granted by this entry.
    Granted {
        /// The fencing token (this entry's index).
        token: FencingToken,
    },
    /// Queued behind earlier requests; the grant (or failure) comes with a later entry's
    /// [`LockWaitEnded`]. A retry of the same command answers `Queued` while it waits and
    /// `Granted` once granted.
    Queued,
    /// Not grantable now and the request did not want to wait: nothing changed.
    Busy,
    /// The session does not exist (expired, revoked or never granted): nothing changed.
    SessionNotFound,
    /// The session already holds this lock (or waits for it): a session takes a lock once.
    /// Nothing changed.
    AlreadyHeld {
        /// Its token (`None` while it still waits).
        token: Option<FencingToken>,
    },
}

/// The answer to a lock cancel.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum CancelResult {
    /// The caller has no pending wait on the lock any more (this entry removed it, or there was
    /// none): it will never be granted by a later entry.
    Cancelled,
    /// The wait had already been granted: the caller holds the lock with this token.
    AlreadyGranted {
        /// The token of that grant.
        token: FencingToken,
    },
}

/// A holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LockHolder {
    /// The token of its grant.
    pub token: FencingToken,
    /// The session it holds through.
    pub session: SessionId,
    /// How it holds.
    pub mode: LockMode,
    /// The client that asked.
    pub client_id: u64,
    /// A value the holder publishes with its grant (empty for a plain lock; an election's
    /// candidate value).
    pub value: Vec<u8>,
}

/// A queued request for a lock.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LockWaiter {
    /// The log index of the request: waiters are served in this order.
    pub request: LogIndex,
    /// The session it would hold through.
    pub session: SessionId,
    /// The mode asked for.
    pub mode: LockMode,
    /// The client that asked and the seq of its request (the runtime answers that request when
    /// the wait ends).
    pub client_id: u64,
    /// See `client_id`.
    pub seq: u64,
    /// The value it will publish once granted.
    pub value: Vec<u8>,
}

/// One lock, as [`super::StateMachine::locks`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LockInfo {
    /// The lock's name.
    pub name: Vec<u8>,
    /// Who holds it (one exclusive holder, or shared holders).
    pub holders: Vec<LockHolder>,
    /// Who waits, in the order they will be served.
    pub waiters: Vec<LockWaiter>,
}

/// How a queued lock request ended.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum LockWaitResult {
    /// Granted by the entry that reports it.
    Granted {
        /// Its token.
        token: FencingToken,
    },
    /// The waiter's session ended (expired or revoked) before the grant.
    SessionEnded,
    /// The waiter cancelled it (`Op::LockCancel`).
    Cancelled,
}

/// A queued lock request that an entry granted or failed: the runtime answers the held request
/// (`client_id`, `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockWaitEnded {
    /// The requesting client.
    pub client_id: u64,
    /// The seq of its acquire.
    pub seq: u64,
    /// The lock.
    pub name: Vec<u8>,
    /// How it ended.
    pub result: LockWaitResult,
}

/// What applying one entry produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    /// A leader's no-op entry.
    Noop,
    /// A membership entry; its payload is now [`super::StateMachine::membership`].
    Membership,
    /// A command.
    Command {
        /// The command's client id.
        client_id: u64,
        /// The command's seq.
        seq: u64,
        /// What it did.
        result: CommandResult,
    },
    /// The payload was not a command (`Corrupt` bytes). Nothing changed but the applied index;
    /// every member reaches the same verdict.
    Malformed {
        /// Why it could not be decoded.
        reason: String,
    },
}

/// The outcome of one applied entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The entry's index.
    pub index: LogIndex,
    /// The entry's term.
    pub term: Term,
    /// What it did.
    pub result: EntryResult,
    /// The changes of user keys it made, in order, all at revision `index`; recorded only when
    /// [`super::StateMachine::set_change_capture`] asked for them (empty otherwise).
    pub changes: Vec<super::KvChange>,
    /// Queued lock requests this entry granted or failed (a release, a session's end, a
    /// cancel), in the order it decided them.
    pub lock_waits: Vec<LockWaitEnded>,
}
