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
}
