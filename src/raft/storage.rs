//! The storage seam: how the core reads the durable (stable) part of the log.
//!
//! The core never writes storage. It hands the runtime what to persist in a
//! [`Ready`](super::Ready); the runtime writes it (in order) and acknowledges durability with
//! [`Raft::advance_persisted`](super::Raft::advance_persisted). Until then the entries stay in
//! the core's memory (the *unstable* log), and the core reads them from there.
//!
//! The node runtime implements [`LogStore`] over the WAL; [`MemLogStore`] is an in-memory twin
//! for the simulator, tests and benchmarks.

use super::membership::Membership;
use super::message::SnapshotMeta;
use crate::types::{Entry, HardState, LogIndex, Term};
use std::fmt;

/// Why storage could not answer.
#[derive(Debug)]
pub enum StorageError {
    /// The entry is behind the last snapshot: the log no longer holds it. The leader answers
    /// by sending that follower a snapshot instead.
    Compacted,
    /// Storage failed (IO error, corruption). The core returns it from whatever method hit it;
    /// the runtime must then stop the node (the core's state is no longer trustworthy).
    Io(crate::Error),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Compacted => write!(f, "log entry compacted behind a snapshot"),
            StorageError::Io(e) => write!(f, "log storage failed: {e}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// Read access to the durable Raft log and the latest snapshot's metadata.
///
/// Indices: the store holds entries `first_index() ..= last_index()`; the snapshot covers
/// everything up to `snapshot_meta().index == first_index() - 1`. An empty store has
/// `first_index() == 1`, `last_index() == 0` and a snapshot at index 0, term 0, whose
/// membership is the *initial* configuration of a founding member (empty on a node that
/// waits to be added to an existing cluster).
pub trait LogStore {
    /// The persisted hard state (term, vote, commit).
    fn hard_state(&self) -> Result<HardState, StorageError>;
    /// Index of the first entry held (snapshot index + 1).
    fn first_index(&self) -> LogIndex;
    /// Index of the last entry held (the snapshot index when no entry is held).
    fn last_index(&self) -> LogIndex;
    /// The term of the entry at `index`: `Ok(None)` past the end, `Err(Compacted)` before the
    /// snapshot index (the snapshot index itself answers with the snapshot's term).
    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError>;
    /// Entries in `[lo, hi)`, stopping early once `max_bytes` (by [`Entry::size_bytes`]) is
    /// reached, but always at least one entry when `lo < hi`. `Err(Compacted)` if
    /// `lo < first_index()`; `hi` must not exceed `last_index() + 1`.
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError>;
    /// The latest snapshot's metadata (index 0 when no snapshot was ever taken).
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError>;
}

/// An in-memory [`LogStore`] with the write operations a runtime performs for a `Ready`.
#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Entries `snapshot.index + 1 ..`.
    entries: Vec<Entry>,
}

impl MemLogStore {
    /// An empty store whose initial configuration is `membership` (empty for a node that will
    /// be added to an existing cluster).
    pub fn new(membership: Membership) -> MemLogStore {
        MemLogStore {
            hard_state: HardState::default(),
            snapshot: SnapshotMeta {
                index: LogIndex(0),
                term: Term(0),
                membership,
            },
            entries: Vec::new(),
        }
    }

    /// Persist a hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Append `entries` (consecutive); a batch starting at or below the last stored index
    /// replaces the stored suffix from its first index on.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let start = first.index.0;
        assert!(
            start > self.snapshot.index.0 && start <= self.last_index().0 + 1,
            "MemLogStore::append at {} outside ({}, {}]",
            first.index,
            self.snapshot.index,
            self.last_index().next()
        );
        self.entries
            .truncate((start - self.snapshot.index.0 - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Replace the whole log by a snapshot received from the leader.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        self.entries.clear();
        self.snapshot = meta;
    }

    /// Record a snapshot taken locally at `meta.index` (which must be a stored index) and drop
    /// the entries it covers.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        if meta.index <= self.snapshot.index {
            return;
        }
        assert!(
            meta.index <= self.last_index()
                && self.term(meta.index).ok().flatten() == Some(meta.term),
            "MemLogStore::compact at {} {} does not match the log",
            meta.index,
            meta.term
        );
        let drop = (meta.index.0 - self.snapshot.index.0) as usize;
        self.entries.drain(..drop);
        self.snapshot = meta;
    }

    /// Every entry held (for checks in tests).
    pub fn stored_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl LogStore for MemLogStore {
    fn hard_state(&self) -> Result<HardState, StorageError> {
        Ok(self.hard_state)
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.index.next()
    }

    fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot.index.0 + self.entries.len() as u64)
    }

    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        if index < self.snapshot.index {
            return Err(StorageError::Compacted);
        }
        if index == self.snapshot.index {
            return Ok(Some(self.snapshot.term));
        }
        let offset = (index.0 - self.snapshot.index.0 - 1) as usize;
        Ok(self.entries.get(offset).map(|e| e.term))
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.snapshot.index {
            return Err(StorageError::Compacted);
        }
        assert!(
            hi <= self.last_index().next(),
            "MemLogStore::entries up to {hi} past the end {}",
            self.last_index()
        );
        let base = self.snapshot.index.0 + 1;
        let slice = &self.entries[(lo.0 - base) as usize..(hi.0.max(lo.0) - base) as usize];
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in slice {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.clone())
    }
}
