//! [`LogStore`] over the WAL: what the Raft core reads as its durable log.
//!
//! The WAL holds the entries and the hard state; the snapshot metadata (index, term and the
//! membership at that index) is kept here, because the WAL only knows the compaction point's
//! index and term. The driver updates it when it compacts behind a snapshot of its own (at
//! submit time: the snapshot file is already fsynced, and the entries it covers are never
//! needed again) and when a snapshot received from the leader becomes durable.

use crate::raft::{LogStore, SnapshotMeta, StorageError};
use crate::types::{Entry, HardState, LogIndex, Term};
use crate::wal::Wal;
use std::sync::Arc;

/// The Raft core's view of the WAL plus the latest snapshot's metadata.
pub(crate) struct WalStore {
    wal: Arc<Wal>,
    snapshot: SnapshotMeta,
}

impl WalStore {
    pub(crate) fn new(wal: Arc<Wal>, snapshot: SnapshotMeta) -> WalStore {
        WalStore { wal, snapshot }
    }

    /// Record a newer snapshot (taken locally, or installed from the leader).
    pub(crate) fn set_snapshot(&mut self, snapshot: SnapshotMeta) {
        if snapshot.index >= self.snapshot.index {
            self.snapshot = snapshot;
        }
    }

    pub(crate) fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }
}

impl LogStore for WalStore {
    fn hard_state(&self) -> Result<HardState, StorageError> {
        Ok(self.wal.hard_state())
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.wal.last_index().max(self.snapshot.index)
    }

    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        if index < self.snapshot.index {
            return Err(StorageError::Compacted);
        }
        if index == self.snapshot.index {
            return Ok(Some(self.snapshot.term));
        }
        match self.wal.term(index).map_err(StorageError::Io)? {
            Some(term) => Ok(Some(term)),
            // The WAL was compacted further than the snapshot recorded here (an install whose
            // write is in flight): those entries are gone.
            None if index < self.wal.first_index() => Err(StorageError::Compacted),
            None => Ok(None),
        }
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.snapshot.index || lo < self.wal.first_index() {
            return Err(StorageError::Compacted);
        }
        let hi = hi.min(self.wal.last_index().next());
        if lo >= hi {
            return Ok(Vec::new());
        }
        self.wal
            .entries(lo, hi, max_bytes as u64)
            .map_err(StorageError::Io)
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.clone())
    }
}
