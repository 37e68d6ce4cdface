//! The in-memory view of the log: where every entry record lives on disk, the term of every
//! index (as runs, one per term change), and a bounded cache of the newest entries.
//!
//! Memory use is proportional to the number of *records* in the live part of the log (one
//! `RecordPos` per entries record, about 40 bytes) and the number of term changes, plus the
//! cache, which is bounded in bytes. Entry payloads outside the cache are read back from disk.

use crate::types::{Entry, HardState, LogIndex, Term};
use std::collections::VecDeque;

/// Where one entries record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordPos {
    /// Index of the record's first entry.
    pub first: LogIndex,
    /// Entries of this record still in the log (a truncation can shorten it).
    pub count: u32,
    /// Segment number.
    pub segment: u64,
    /// Byte offset of the frame in the segment.
    pub offset: u64,
    /// Frame length in bytes.
    pub len: u32,
}

impl RecordPos {
    /// Index one past the last live entry of the record.
    pub fn end(&self) -> LogIndex {
        LogIndex(self.first.0 + u64::from(self.count))
    }
}

/// The log's indexes and cache. Entries live in `(compacted.0, last]`.
#[derive(Debug)]
pub(crate) struct LogState {
    compacted: (LogIndex, Term),
    last: LogIndex,
    hard_state: HardState,
    /// Positions of the records holding the live entries, in index order. The front record may
    /// start at or below the compaction point (its older entries are simply never read).
    records: VecDeque<RecordPos>,
    /// `(first index, term)` of each run of equal terms among the live entries, in index order.
    terms: VecDeque<(LogIndex, Term)>,
    /// The newest entries, contiguous and ending at `last` (or empty).
    cache: VecDeque<Entry>,
    cache_bytes: usize,
    cache_limit: usize,
}

impl LogState {
    /// An empty log whose compaction point is `compacted`.
    pub fn new(compacted: (LogIndex, Term), hard_state: HardState, cache_limit: usize) -> Self {
        LogState {
            compacted,
            last: compacted.0,
            hard_state,
            records: VecDeque::new(),
            terms: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_limit,
        }
    }

    pub fn compacted(&self) -> (LogIndex, Term) {
        self.compacted
    }

    pub fn first_index(&self) -> LogIndex {
        self.compacted.0.next()
    }

    pub fn last_index(&self) -> LogIndex {
        self.last
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Set the term of the compaction point (recovery: once the real compaction point is known).
    pub fn set_compacted_term(&mut self, term: Term) {
        self.compacted.1 = term;
    }

    /// Term of `index`: known for the compaction point and every live entry.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.compacted.0 {
            return Some(self.compacted.1);
        }
        if index < self.compacted.0 || index > self.last {
            return None;
        }
        let run = self.terms.partition_point(|&(start, _)| start <= index);
        match run.checked_sub(1).and_then(|i| self.terms.get(i)) {
            Some(&(_, term)) => Some(term),
            None => panic!(
                "wal: no term run covers live index {index} (compacted {}, last {})",
                self.compacted.0, self.last
            ),
        }
    }

    /// Term of the last entry (the compaction term when the log is empty).
    pub fn last_term(&self) -> Term {
        match self.terms.back() {
            Some(&(_, term)) => term,
            None => self.compacted.1,
        }
    }

    /// Append entries that start at `last + 1`, stored in the records `positions`.
    pub fn append(&mut self, entries: Vec<Entry>, positions: &[RecordPos]) {
        let mut evicted = Vec::new();
        self.append_evicting(entries, positions, &mut evicted);
    }

    /// [`LogState::append`], moving the entries the cache lets go of into `evicted`, so the
    /// caller can free them after releasing its locks and acknowledging its callers.
    pub fn append_evicting(
        &mut self,
        entries: Vec<Entry>,
        positions: &[RecordPos],
        evicted: &mut Vec<Entry>,
    ) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        assert!(
            first.index == self.last.next()
                && last.index.0 == first.index.0 + entries.len() as u64 - 1,
            "wal: append of entries {}..={} (term {}) is not contiguous with last index {}",
            first.index,
            last.index,
            first.term,
            self.last
        );
        let covered: u64 = positions.iter().map(|p| u64::from(p.count)).sum();
        assert!(
            covered == entries.len() as u64
                && positions.first().map(|p| p.first) == Some(first.index),
            "wal: record positions cover {covered} entries from {:?}, append has {} from {}",
            positions.first().map(|p| p.first),
            entries.len(),
            first.index
        );
        self.records.extend(positions.iter().copied());
        for e in &entries {
            if self.terms.back().map(|&(_, t)| t) != Some(e.term) {
                self.terms.push_back((e.index, e.term));
            }
        }
        self.last = last.index;
        if self.cache_limit > 0 {
            for e in entries {
                self.cache_bytes += e.size_bytes();
                self.cache.push_back(e);
            }
            while self.cache_bytes > self.cache_limit {
                match self.cache.pop_front() {
                    Some(e) => {
                        self.cache_bytes -= e.size_bytes();
                        evicted.push(e);
                    }
                    None => break,
                }
            }
        }
    }

    /// Discard every entry with index >= `from` (`compacted < from <= last + 1`).
    pub fn truncate(&mut self, from: LogIndex) {
        assert!(
            from > self.compacted.0 && from <= self.last.next(),
            "wal: truncate from {from} outside (compacted {}, last {} + 1]",
            self.compacted.0,
            self.last
        );
        while let Some(back) = self.records.back_mut() {
            if back.first >= from {
                self.records.pop_back();
            } else {
                if back.end() > from {
                    back.count = (from.0 - back.first.0) as u32;
                }
                break;
            }
        }
        while self.terms.back().is_some_and(|&(start, _)| start >= from) {
            self.terms.pop_back();
        }
        while self.cache.back().is_some_and(|e| e.index >= from) {
            if let Some(e) = self.cache.pop_back() {
                self.cache_bytes -= e.size_bytes();
            }
        }
        self.last = from.prev();
    }

    /// Everything <= `(index, term)` is covered by a snapshot. If the log holds `index` with
    /// `term`, the entries after it are kept; otherwise (beyond the log, or a conflicting term)
    /// the log is reset to empty at `index` (Raft section 7). A point at or below the current
    /// compaction point changes nothing.
    pub fn compact(&mut self, index: LogIndex, term: Term) {
        if index <= self.compacted.0 {
            return;
        }
        if index <= self.last && self.term(index) == Some(term) {
            while self
                .records
                .front()
                .is_some_and(|r| r.end() <= index.next())
            {
                self.records.pop_front();
            }
            // Drop the runs that end at or before `index`; the survivor starts after it.
            while self
                .terms
                .get(1)
                .is_some_and(|&(start, _)| start <= index.next())
            {
                self.terms.pop_front();
            }
            if let Some(front) = self.terms.front_mut() {
                if front.0 <= index {
                    front.0 = index.next();
                }
            }
            if index == self.last {
                self.terms.clear();
            }
            while self.cache.front().is_some_and(|e| e.index <= index) {
                if let Some(e) = self.cache.pop_front() {
                    self.cache_bytes -= e.size_bytes();
                }
            }
            self.compacted = (index, term);
        } else {
            self.records.clear();
            self.terms.clear();
            self.cache.clear();
            self.cache_bytes = 0;
            self.compacted = (index, term);
            self.last = index;
        }
    }

    /// Index of the first cached entry, if any.
    pub fn cache_first(&self) -> Option<LogIndex> {
        self.cache.front().map(|e| e.index)
    }

    /// Cached entries in `[lo, hi)`; `lo` must be >= `cache_first()`.
    pub fn cached(&self, lo: LogIndex, hi: LogIndex) -> impl Iterator<Item = &Entry> {
        let skip = self
            .cache_first()
            .map_or(0, |first| lo.0.saturating_sub(first.0) as usize);
        self.cache
            .iter()
            .skip(skip)
            .take_while(move |e| e.index < hi)
    }

    /// Positions of the records holding entries in `[lo, hi)`, in order.
    pub fn positions(&self, lo: LogIndex, hi: LogIndex) -> Vec<RecordPos> {
        let start = self.records.partition_point(|r| r.end() <= lo);
        self.records
            .iter()
            .skip(start)
            .take_while(|r| r.first < hi)
            .copied()
            .collect()
    }

    /// Check every internal invariant; panics with the first one broken. Used by tests and by
    /// recovery (once, after replay).
    pub fn check_invariants(&self) {
        assert!(
            self.last >= self.compacted.0,
            "wal: last index {} below compaction point {}",
            self.last,
            self.compacted.0
        );
        let live = self.last.0 - self.compacted.0 .0;
        if live == 0 {
            assert!(self.terms.is_empty(), "wal: term runs in an empty log");
        } else {
            let first = self.terms.front().map(|r| r.0);
            assert_eq!(
                first,
                Some(self.compacted.0.next()),
                "wal: first term run does not start at the first index"
            );
            let mut expect = self.compacted.0.next();
            for r in &self.records {
                if r.end() <= expect {
                    continue;
                }
                assert!(
                    r.first <= expect,
                    "wal: no record holds index {expect} (next record starts at {})",
                    r.first
                );
                expect = r.end();
            }
            assert_eq!(
                expect,
                self.last.next(),
                "wal: records do not reach last index"
            );
        }
        for pair in self.terms.iter().collect::<Vec<_>>().windows(2) {
            assert!(
                pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1,
                "wal: term runs out of order: {:?}",
                pair
            );
        }
        if let (Some(f), Some(b)) = (self.cache.front(), self.cache.back()) {
            assert_eq!(b.index, self.last, "wal: cache does not end at last index");
            assert_eq!(
                b.index.0 - f.index.0 + 1,
                self.cache.len() as u64,
                "wal: cache not contiguous"
            );
            assert!(
                f.index > self.compacted.0,
                "wal: cache holds compacted entries"
            );
        }
        let bytes: usize = self.cache.iter().map(Entry::size_bytes).sum();
        assert_eq!(bytes, self.cache_bytes, "wal: cache byte count drifted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryKind, GroupId};

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            group: GroupId(0),
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: vec![0; 8],
        }
    }

    fn append(state: &mut LogState, lo: u64, hi: u64, term: u64) {
        let entries: Vec<Entry> = (lo..=hi).map(|i| entry(i, term)).collect();
        let pos = RecordPos {
            first: LogIndex(lo),
            count: (hi - lo + 1) as u32,
            segment: 1,
            offset: lo * 100,
            len: 100,
        };
        state.append(entries, &[pos]);
        state.check_invariants();
    }

    #[test]
    fn terms_follow_appends_truncations_and_compactions() {
        let mut s = LogState::new((LogIndex(0), Term(0)), HardState::default(), 1 << 20);
        assert_eq!(s.term(LogIndex(0)), Some(Term(0)));
        append(&mut s, 1, 5, 1);
        append(&mut s, 6, 9, 2);
        assert_eq!(s.term(LogIndex(5)), Some(Term(1)));
        assert_eq!(s.term(LogIndex(6)), Some(Term(2)));
        assert_eq!(s.term(LogIndex(10)), None);
        s.truncate(LogIndex(4));
        s.check_invariants();
        assert_eq!(s.last_index(), LogIndex(3));
        assert_eq!(s.last_term(), Term(1));
        append(&mut s, 4, 6, 3);
        assert_eq!(s.positions(LogIndex(1), LogIndex(7)).len(), 2);
        s.compact(LogIndex(2), Term(1));
        s.check_invariants();
        assert_eq!(s.term(LogIndex(2)), Some(Term(1)));
        assert_eq!(s.term(LogIndex(1)), None);
        assert_eq!(s.term(LogIndex(3)), Some(Term(1)));
        s.compact(LogIndex(4), Term(3));
        s.check_invariants();
        assert_eq!(s.term(LogIndex(5)), Some(Term(3)));
        assert_eq!(s.first_index(), LogIndex(5));
        assert_eq!(s.cache_first(), Some(LogIndex(5)));
        // Compaction with a conflicting term resets the log (Raft section 7).
        s.compact(LogIndex(6), Term(9));
        s.check_invariants();
        assert_eq!(s.last_index(), LogIndex(6));
        assert_eq!(s.first_index(), LogIndex(7));
        assert_eq!(s.term(LogIndex(6)), Some(Term(9)));
        // Beyond the log: reset.
        s.compact(LogIndex(100), Term(10));
        s.check_invariants();
        assert_eq!(s.last_index(), LogIndex(100));
        append(&mut s, 101, 101, 10);
        // Backwards: no effect.
        s.compact(LogIndex(50), Term(1));
        assert_eq!(s.compacted(), (LogIndex(100), Term(10)));
    }

    #[test]
    fn compaction_to_last_index_empties_the_log() {
        let mut s = LogState::new((LogIndex(0), Term(0)), HardState::default(), 1 << 20);
        append(&mut s, 1, 5, 1);
        s.compact(LogIndex(5), Term(1));
        s.check_invariants();
        assert_eq!(s.last_index(), LogIndex(5));
        assert_eq!(s.last_term(), Term(1));
        append(&mut s, 6, 6, 2);
    }

    #[test]
    fn cache_is_bounded_and_contiguous() {
        let limit = 10 * entry(1, 1).size_bytes();
        let mut s = LogState::new((LogIndex(0), Term(0)), HardState::default(), limit);
        for i in 1..=100 {
            append(&mut s, i, i, 1);
        }
        assert_eq!(s.cache_first(), Some(LogIndex(91)));
        let got: Vec<u64> = s
            .cached(LogIndex(95), LogIndex(98))
            .map(|e| e.index.0)
            .collect();
        assert_eq!(got, vec![95, 96, 97]);
        s.truncate(LogIndex(96));
        s.check_invariants();
        assert_eq!(s.cached(LogIndex(91), LogIndex(200)).count(), 5);
    }

    #[test]
    #[should_panic(expected = "not contiguous")]
    fn gap_in_append_is_an_invariant_violation() {
        let mut s = LogState::new((LogIndex(0), Term(0)), HardState::default(), 0);
        append(&mut s, 2, 3, 1);
    }
}
