//! Helpers shared by the `sm_*` integration tests: a state machine in a temp dir and entry
//! builders.
#![allow(dead_code)]

use haven::sm::{ApplyOutcome, Command, CommandResult, EntryResult, Op, StateMachine};
use haven::{Entry, EntryKind, ErrorCode, GroupId, LogIndex, Term};
use std::path::{Path, PathBuf};

/// Page cache for test machines: small, so tests also exercise eviction from sled's cache.
pub const CACHE_BYTES: u64 = 4 << 20;

pub fn entry(index: u64, term: u64, kind: EntryKind, data: Vec<u8>) -> Entry {
    Entry {
        group: GroupId(0),
        term: Term(term),
        index: LogIndex(index),
        kind,
        data,
    }
}

pub fn command_entry(index: u64, term: u64, cmd: &Command) -> Entry {
    entry(index, term, EntryKind::Normal, cmd.encode().unwrap())
}

pub fn untracked(op: Op) -> Command {
    Command {
        client_id: haven::sm::UNTRACKED_CLIENT,
        seq: 0,
        op,
    }
}

pub fn put(key: &[u8], value: &[u8]) -> Op {
    Op::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

pub fn delete(key: &[u8]) -> Op {
    Op::Delete { key: key.to_vec() }
}

/// The command result of an outcome (panics, failing the test, on any other entry result).
pub fn command_result(outcome: &ApplyOutcome) -> CommandResult {
    match &outcome.result {
        EntryResult::Command { result, .. } => result.clone(),
        other => panic!(
            "expected a command result at {}, got {other:?}",
            outcome.index
        ),
    }
}

/// A state machine in its own temp dir, fed entries with consecutive indexes.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sm: StateMachine,
    pub term: u64,
    /// Every entry given to the machine, for replaying after a simulated crash.
    pub log: Vec<Entry>,
    /// Bytes of the record cache the machine is opened with (0: none).
    pub record_cache_bytes: usize,
}

/// Open a machine, retrying while sled still holds the lock of a handle this process just
/// dropped (sled releases it lazily; `StateMachine::open` reports it as `DataDir`).
pub fn open_retrying(path: &Path) -> StateMachine {
    open_retrying_with(path, 0)
}

/// [`open_retrying`] with a record cache of `record_cache_bytes`.
pub fn open_retrying_with(path: &Path, record_cache_bytes: usize) -> StateMachine {
    for _ in 0..500 {
        match StateMachine::open_with_record_cache(path, CACHE_BYTES, record_cache_bytes) {
            Ok(sm) => return sm,
            Err(e) if e.code() == ErrorCode::DataDir => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
    panic!("{} still locked after 5 s", path.display());
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_record_cache(0)
    }

    /// A machine with a record cache of `bytes` (small ones force evictions).
    pub fn with_record_cache(bytes: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sm = open_retrying_with(&dir.path().join("state"), bytes);
        Harness {
            dir,
            sm,
            term: 1,
            log: Vec::new(),
            record_cache_bytes: bytes,
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn snap_dir(&self) -> PathBuf {
        self.dir.path().join("snap")
    }

    /// Close and reopen the machine (sled flushes on drop).
    pub fn reopen(self) -> Harness {
        let Harness {
            dir,
            sm,
            term,
            log,
            record_cache_bytes,
        } = self;
        drop(sm);
        let sm = open_retrying_with(&dir.path().join("state"), record_cache_bytes);
        Harness {
            dir,
            sm,
            term,
            log,
            record_cache_bytes,
        }
    }

    /// Drop the machine without flushing its pending writes (as a crash loses them), reopen
    /// it, and replay the logged entries after the applied index it came back with, as the
    /// runtime does on start.
    pub fn crash_and_replay(self) -> Harness {
        let mut h = self.reopen();
        let applied = h.sm.applied().0 .0;
        let replay: Vec<Entry> = h
            .log
            .iter()
            .filter(|e| e.index.0 > applied)
            .cloned()
            .collect();
        h.sm.apply(&replay).unwrap();
        h
    }

    pub fn next_index(&self) -> u64 {
        self.sm.applied().0 .0 + 1
    }

    /// Apply `cmds` as one batch of consecutive entries; one result per command.
    pub fn apply_batch(&mut self, cmds: &[Command]) -> Vec<CommandResult> {
        self.apply_batch_with(cmds, false)
    }

    /// Apply `cmds` as one batch; `deferred`: with `apply_deferred` (nothing reaches sled until
    /// a flush).
    pub fn apply_batch_with(&mut self, cmds: &[Command], deferred: bool) -> Vec<CommandResult> {
        let first = self.next_index();
        let entries: Vec<Entry> = cmds
            .iter()
            .enumerate()
            .map(|(i, cmd)| command_entry(first + i as u64, self.term, cmd))
            .collect();
        self.log.extend(entries.iter().cloned());
        let outcomes = if deferred {
            self.sm.apply_deferred(&entries).unwrap()
        } else {
            self.sm.apply(&entries).unwrap()
        };
        assert_eq!(outcomes.len(), cmds.len());
        outcomes.iter().map(command_result).collect()
    }

    pub fn apply(&mut self, cmd: Command) -> CommandResult {
        self.apply_batch(&[cmd]).remove(0)
    }

    pub fn apply_op(&mut self, op: Op) -> CommandResult {
        self.apply(untracked(op))
    }

    /// Register a client; returns its id.
    pub fn register(&mut self) -> u64 {
        match self.apply_op(Op::RegisterClient) {
            CommandResult::Registered { client_id } => client_id,
            other => panic!("expected Registered, got {other:?}"),
        }
    }
}
