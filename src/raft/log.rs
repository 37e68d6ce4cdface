//! The core's view of the log: durable entries read through [`LogStore`], plus the *unstable*
//! suffix held in memory until the runtime acknowledges it as durable.
//!
//! Positions: `unstable` holds entries `offset ..`; everything below `offset` is durable in the
//! store (or covered by a snapshot). An unstable suffix may *replace* stored entries at and
//! above `offset` (a follower truncating a conflicting suffix): the store's copies there are
//! stale and never read, and the runtime's next write replaces them.

use super::message::SnapshotMeta;
use super::storage::{LogStore, StorageError};
use crate::types::{Entry, LogIndex, NodeId, Term};
use std::collections::VecDeque;

pub(crate) struct RaftLog<S> {
    /// This node (for invariant-violation messages).
    id: NodeId,
    pub(crate) store: S,
    /// Index of `unstable[0]`.
    offset: u64,
    unstable: VecDeque<Entry>,
    /// A snapshot stepped into the core whose installation is not yet durable.
    pending_snapshot: Option<SnapshotMeta>,
    /// Whether `pending_snapshot` was already handed to the runtime.
    snapshot_handed_out: bool,
    /// Unstable entries with an index up to here were handed out for persisting.
    handed_out: u64,
    pub(crate) commit: LogIndex,
    /// Committed entries up to here were handed out for applying.
    pub(crate) applying: LogIndex,
    /// The runtime applied entries up to here.
    pub(crate) applied: LogIndex,
}

type Res<T> = Result<T, StorageError>;

impl<S: LogStore> RaftLog<S> {
    pub(crate) fn new(id: NodeId, store: S, commit: LogIndex, applied: LogIndex) -> RaftLog<S> {
        let last = store.last_index().0;
        RaftLog {
            id,
            store,
            offset: last + 1,
            unstable: VecDeque::new(),
            pending_snapshot: None,
            snapshot_handed_out: false,
            handed_out: last,
            commit,
            applying: applied,
            applied,
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.offset + self.unstable.len() as u64 - 1)
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        match &self.pending_snapshot {
            Some(s) => s.index.next(),
            None => self.store.first_index(),
        }
    }

    /// The index of the snapshot the log starts after.
    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.first_index().prev()
    }

    /// Entries up to here are durable and belong to the current log.
    pub(crate) fn persisted_index(&self) -> LogIndex {
        match &self.pending_snapshot {
            // Nothing past the old log is durable, and the old log is gone: report the index
            // just below the snapshot (only the leader uses this, and a leader has no pending
            // snapshot).
            Some(s) => s.index.prev(),
            None => LogIndex(self.offset - 1),
        }
    }

    /// Term of the entry at `index`: `None` past the end, `Compacted` before the snapshot.
    pub(crate) fn term(&self, index: LogIndex) -> Res<Option<Term>> {
        let i = index.0;
        if i >= self.offset {
            return Ok(self
                .unstable
                .get((i - self.offset) as usize)
                .map(|e| e.term));
        }
        if let Some(s) = &self.pending_snapshot {
            return match i.cmp(&s.index.0) {
                std::cmp::Ordering::Equal => Ok(Some(s.term)),
                std::cmp::Ordering::Less => Err(StorageError::Compacted),
                std::cmp::Ordering::Greater => unreachable!("offset is snapshot index + 1"),
            };
        }
        if i == 0 && self.store.first_index().0 == 1 {
            return Ok(Some(Term(0)));
        }
        self.store.term(index)
    }

    pub(crate) fn last_term(&self) -> Res<Term> {
        Ok(self.term(self.last_index())?.unwrap_or(Term(0)))
    }

    /// Term at `index` where the log is known to hold `index` (internal invariant).
    pub(crate) fn term_present(&self, index: LogIndex) -> Res<Term> {
        match self.term(index)? {
            Some(t) => Ok(t),
            None => panic!(
                "node {}: log has no entry at index {index} (last index {}, commit {}), yet it \
                 must",
                self.id,
                self.last_index(),
                self.commit
            ),
        }
    }

    pub(crate) fn match_term(&self, index: LogIndex, term: Term) -> Res<bool> {
        match self.term(index) {
            Ok(t) => Ok(t == Some(term)),
            Err(StorageError::Compacted) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Raft section 5.4.1: is a log ending at (`last_index`, `last_term`) at least as
    /// up-to-date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> Res<bool> {
        let our_term = self.last_term()?;
        Ok(last_term > our_term || (last_term == our_term && last_index >= self.last_index()))
    }

    /// Entries `[lo, hi)`, at most `max_bytes` (but at least one) and `max_entries`.
    pub(crate) fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: usize,
        max_entries: usize,
    ) -> Res<Vec<Entry>> {
        let hi = LogIndex(hi.0.min(lo.0.saturating_add(max_entries as u64)));
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        if lo.0 < self.offset {
            let stored_hi = LogIndex(hi.0.min(self.offset));
            out = self.store.entries(lo, stored_hi, max_bytes)?;
            bytes = out.iter().map(Entry::size_bytes).sum();
            if (out.len() as u64) < stored_hi.0 - lo.0 || stored_hi == hi {
                return Ok(out);
            }
        }
        let start = lo.0.max(self.offset);
        for i in start..hi.0 {
            let e = &self.unstable[(i - self.offset) as usize];
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    /// The first entry of `entries` (consecutive, starting at or below `last_index + 1`) that
    /// is not already in the log, or `None` if all are.
    pub(crate) fn find_conflict(&self, entries: &[Entry]) -> Res<Option<usize>> {
        for (k, e) in entries.iter().enumerate() {
            if !self.match_term(e.index, e.term)? {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Append consecutive `entries`, replacing any suffix from the first one's index. Panics if
    /// that would remove a committed entry (Raft's state machine safety).
    pub(crate) fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else {
            return;
        };
        let after = first.index.0;
        assert!(
            after > self.commit.0,
            "node {}: appending index {} term {} would truncate a committed entry (commit {})",
            self.id,
            first.index,
            first.term,
            self.commit
        );
        assert!(
            after <= self.last_index().0 + 1,
            "node {}: appending index {} term {} leaves a gap after index {}",
            self.id,
            first.index,
            first.term,
            self.last_index()
        );
        if after == self.offset + self.unstable.len() as u64 {
            // Plain append.
        } else if after <= self.offset {
            // Replace stored entries from `after` on: they become stale in the store.
            self.unstable.clear();
            self.offset = after;
        } else {
            self.unstable.truncate((after - self.offset) as usize);
        }
        self.handed_out = self.handed_out.min(after - 1);
        self.unstable.extend(entries);
    }

    /// Append one entry built in place (the leader's proposals).
    pub(crate) fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index.0, self.last_index().0 + 1);
        self.unstable.push_back(entry);
    }

    /// Entries not yet handed out for persisting; marks them handed out.
    pub(crate) fn take_unpersisted(&mut self) -> Vec<Entry> {
        let last = self.last_index().0;
        if self.handed_out >= last {
            return Vec::new();
        }
        let from = (self.handed_out + 1).max(self.offset);
        let out: Vec<Entry> = self
            .unstable
            .range((from - self.offset) as usize..)
            .cloned()
            .collect();
        self.handed_out = last;
        out
    }

    pub(crate) fn has_unpersisted(&self) -> bool {
        self.handed_out < self.last_index().0
            || (self.pending_snapshot.is_some() && !self.snapshot_handed_out)
    }

    pub(crate) fn take_pending_snapshot(&mut self) -> Option<SnapshotMeta> {
        if self.snapshot_handed_out {
            return None;
        }
        self.snapshot_handed_out = true;
        self.pending_snapshot.clone()
    }

    /// The runtime made entries up to (`index`, `term`) durable. Ignored if that entry has
    /// since been replaced (a later write will be acknowledged for the new one).
    pub(crate) fn stable_to(&mut self, index: LogIndex, term: Term) {
        let i = index.0;
        if i < self.offset || i >= self.offset + self.unstable.len() as u64 {
            return;
        }
        if self.unstable[(i - self.offset) as usize].term != term {
            return;
        }
        self.unstable.drain(..(i - self.offset + 1) as usize);
        self.offset = i + 1;
    }

    /// The runtime made the pending snapshot at `index` durable.
    pub(crate) fn stable_snapshot(&mut self, index: LogIndex) {
        if self.pending_snapshot.as_ref().map(|s| s.index) == Some(index) {
            self.pending_snapshot = None;
            self.snapshot_handed_out = false;
        }
    }

    /// Replace the whole log by a snapshot (its install becomes durable later).
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) {
        self.commit = meta.index;
        self.applying = meta.index;
        self.applied = meta.index;
        self.offset = meta.index.0 + 1;
        self.unstable.clear();
        self.handed_out = meta.index.0;
        self.pending_snapshot = Some(meta);
        self.snapshot_handed_out = false;
    }

    /// Committed, locally durable entries not yet handed out for applying.
    pub(crate) fn has_committed_to_apply(&self) -> bool {
        self.applying < self.commit.min(self.persisted_index())
    }

    pub(crate) fn take_committed(&mut self, max_bytes: usize) -> Res<Vec<Entry>> {
        let hi = self.commit.min(self.persisted_index());
        if self.applying >= hi || self.pending_snapshot.is_some() {
            return Ok(Vec::new());
        }
        let out = self.entries(self.applying.next(), hi.next(), max_bytes, usize::MAX)?;
        if let Some(last) = out.last() {
            self.applying = last.index;
        }
        Ok(out)
    }

    /// Fast backtracking: the largest index `<= index` whose term is `<= term`, with its term.
    /// Stops at the snapshot (whose term is then returned).
    pub(crate) fn find_conflict_by_term(
        &self,
        index: LogIndex,
        term: Term,
    ) -> Res<(LogIndex, Term)> {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(Some(t)) if t <= term || i.0 == 0 => return Ok((i, t)),
                Ok(Some(_)) => i = i.prev(),
                Ok(None) => unreachable!("index {i} within the log has a term"),
                Err(StorageError::Compacted) => {
                    let s = self.snapshot_index();
                    return Ok((s, self.term(s)?.unwrap_or(Term(0))));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
