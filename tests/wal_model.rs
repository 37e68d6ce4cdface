//! Model-based test: random sequences of appends, truncations, compactions (inside and beyond
//! the log, with matching and conflicting terms), hard-state updates and restarts, checked
//! after every step against a plain in-memory model of the Raft log. Small segments and a tiny
//! cache make most reads go to disk across segment boundaries.

mod wal_common;

use haven::wal::{Wal, WalOptions, WriteBatch};
use haven::{HardState, LogIndex, Term};
use std::path::Path;
use wal_common::*;

/// The log as Raft sees it.
#[derive(Debug, Clone)]
struct Model {
    compacted: (u64, u64),
    /// Terms of entries compacted.0 + 1 ..
    terms: Vec<u64>,
    lens: Vec<usize>,
    hard_state: HardState,
}

impl Model {
    fn last(&self) -> u64 {
        self.compacted.0 + self.terms.len() as u64
    }

    fn last_term(&self) -> u64 {
        self.terms.last().copied().unwrap_or(self.compacted.1)
    }

    fn term(&self, i: u64) -> Option<u64> {
        if i == self.compacted.0 {
            return Some(self.compacted.1);
        }
        if i < self.compacted.0 || i > self.last() {
            return None;
        }
        Some(self.terms[(i - self.compacted.0 - 1) as usize])
    }

    fn compact(&mut self, index: u64, term: u64) {
        if index <= self.compacted.0 {
            return;
        }
        if self.term(index) == Some(term) {
            let drop = (index - self.compacted.0) as usize;
            self.terms.drain(..drop);
            self.lens.drain(..drop);
        } else {
            self.terms.clear();
            self.lens.clear();
        }
        self.compacted = (index, term);
    }
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 64 * 1024,
        cache_bytes: 2048,
        ..WalOptions::default()
    }
}

fn check(wal: &Wal, model: &Model, step: &str) {
    assert_eq!(
        wal.compacted(),
        (LogIndex(model.compacted.0), Term(model.compacted.1)),
        "{step}"
    );
    assert_eq!(wal.last_index(), LogIndex(model.last()), "{step}");
    assert_eq!(wal.hard_state(), model.hard_state, "{step}");
    for i in model.compacted.0.saturating_sub(2)..=model.last() + 2 {
        assert_eq!(
            wal.term(LogIndex(i)).unwrap(),
            model.term(i).map(Term),
            "{step}: term of {i}"
        );
    }
    let all = read_all(wal);
    for (k, e) in all.iter().enumerate() {
        assert_eq!(e.term.0, model.terms[k], "{step}: entry {}", e.index);
        assert_eq!(e.data.len(), model.lens[k], "{step}: entry {}", e.index);
    }
}

fn run(seed: u64, dir: &Path) {
    let mut rng = Rng(seed);
    let mut model = Model {
        compacted: (0, 0),
        terms: Vec::new(),
        lens: Vec::new(),
        hard_state: HardState::default(),
    };
    let (mut wal, _) = Wal::open(dir, options()).unwrap();
    let mut term = 1u64;
    for step in 0..140 {
        let mut batch = WriteBatch::default();
        let what = rng.below(100);
        if what < 8 {
            drop(wal);
            wal = Wal::open(dir, options()).unwrap().0;
            check(&wal, &model, &format!("seed {seed} step {step}: restart"));
            continue;
        }
        if what < 16 && model.last() > model.compacted.0 {
            // Compact inside the log, at or below the commit index, with the right term.
            let hi = model.hard_state.commit.0.min(model.last());
            if hi > model.compacted.0 {
                let at = model.compacted.0 + 1 + rng.below(hi - model.compacted.0);
                batch.compact_to = Some((LogIndex(at), Term(model.term(at).unwrap())));
            }
        } else if what < 20 {
            // Install a snapshot beyond (or conflicting with) the log.
            term += 1;
            let at = model.last() + rng.below(50);
            batch.compact_to = Some((LogIndex(at.max(model.compacted.0 + 1)), Term(term)));
            model.hard_state.term = Term(term);
            model.hard_state.commit = LogIndex(at.max(model.compacted.0 + 1));
            batch.hard_state = Some(model.hard_state);
        }
        if let Some((i, t)) = batch.compact_to {
            model.compact(i.0, t.0);
        }
        if what >= 20 || rng.below(2) == 0 {
            // Append, sometimes replacing an uncommitted tail under a new term.
            let mut lo = model.last() + 1;
            let floor = model.hard_state.commit.0.max(model.compacted.0) + 1;
            if rng.below(4) == 0 && model.last() >= floor {
                lo = floor + rng.below(model.last() - floor + 1);
                term += 1;
            }
            let most = if rng.below(10) == 0 { 300 } else { 12 };
            let count = 1 + rng.below(most);
            let len = if rng.below(30) == 0 {
                70_000 + rng.below(60_000) as usize
            } else {
                rng.below(600) as usize
            };
            let keep = (lo - model.compacted.0 - 1) as usize;
            model.terms.truncate(keep);
            model.lens.truncate(keep);
            let t = term.max(model.last_term());
            term = t;
            for _ in 0..count {
                model.terms.push(t);
                model.lens.push(len.max(format!("i{lo}t{t}:").len() + 20));
            }
            let lens = model.lens[keep..].to_vec();
            batch.entries = (0..count)
                .map(|k| entry(lo + k, t, lens[k as usize]))
                .collect();
        }
        if rng.below(3) == 0 {
            let commit = model.hard_state.commit.0.max(rng.below(model.last() + 1));
            model.hard_state = hard_state(term.max(model.hard_state.term.0), commit);
            batch.hard_state = Some(model.hard_state);
        }
        wal.write(batch.clone())
            .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e} for {batch:?}"));
        check(&wal, &model, &format!("seed {seed} step {step}"));
    }
    drop(wal);
    let (wal, _) = Wal::open(dir, options()).unwrap();
    check(&wal, &model, &format!("seed {seed}: final restart"));
}

#[test]
fn random_operations_match_the_model_across_restarts() {
    for seed in 1..=8u64 {
        let dir = tempfile::tempdir().unwrap();
        run(seed * 0x9E37_79B9, dir.path());
    }
}
