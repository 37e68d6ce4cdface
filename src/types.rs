//! Identifiers and log records shared by every layer (the WAL stores them, the Raft core
//! produces and consumes them, the transport carries them).
//!
//! They sit at the bottom of the layer stack, beside `codec`, so that `wal` and `raft` can both
//! use them without either depending on the other.

use bincode::{Decode, Encode};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode,
        )]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                $name(v)
            }
        }
    };
}

id_newtype!(
    /// A member of the cluster. Ids are chosen by the operator; 0 is never a valid id.
    NodeId(u64),
    "n"
);
id_newtype!(
    /// A Raft term (Raft paper section 5.1). Term 0 is before any election.
    Term(u64),
    "t"
);
id_newtype!(
    /// A position in the Raft log. Index 0 is the empty-log sentinel; real entries start at 1.
    LogIndex(u64),
    "i"
);
id_newtype!(
    /// A Raft group. Always 0 today; carried in every entry and message so partitions can later
    /// become Raft groups of their own without a format change.
    GroupId(u32),
    "g"
);

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one (saturating at 0).
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// What a log entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EntryKind {
    /// A state-machine command (opaque to Raft and the WAL).
    Normal,
    /// The empty entry a new leader appends at the start of its term (Raft section 8).
    Noop,
    /// A membership change (encoded by the Raft core).
    Membership,
}

/// One Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Entry {
    /// The Raft group this entry belongs to (always 0 today).
    pub group: GroupId,
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
    /// What the payload means.
    pub kind: EntryKind,
    /// The payload: an encoded command, an encoded membership change, or empty.
    pub data: Vec<u8>,
}

impl Entry {
    /// Approximate in-memory and on-wire size, used for byte limits and caches.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 32
    }
}

/// The state Raft must persist before answering any message (Raft paper figure 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest log index known to be committed.
    pub commit: LogIndex,
}

id_newtype!(
    /// Identifies a cluster. Every member's data directory and every handshake carries it, so a
    /// member of one cluster can never join or open the data of another.
    ClusterId(u64),
    "c"
);
