//! The `Ready` durability order: the part of the driver a reviewer must trust.
//!
//! For each `Ready` the core hands out ([`Driver::on_ready`]), in this order:
//!
//! 1. **Persist (a)**: new entries, a snapshot to install, and a changed term or vote go to the
//!    WAL as one [`WriteBatch`]. A changed commit index alone is not written on its own (Raft
//!    recomputes it after a restart); it rides along with the next write. A leader, or a
//!    follower with a write already in flight, *submits* the batch to the WAL writer
//!    ([`Driver::submit`]) and goes on: the leader writes its own log while the followers write
//!    theirs. A follower with nothing in flight writes on this thread (it has nothing to do
//!    until the write is durable, and the hand-off would be most of its latency).
//! 2. **Send (b)** `messages` at once: they do not depend on (a) (a leader's AppendEntries may go
//!    out before its own copy is durable; the leader counts itself only once it is).
//! 3. **Hold (c)** `persisted_messages` (votes, append acknowledgements) until the WAL has
//!    acknowledged this `Ready`'s write *and every earlier one* ([`Driver::on_persisted`] frees
//!    them in `Ready` order). Sending one earlier would promise a vote or an entry a crash could
//!    forget. When no `Ready` write is in flight they go at once.
//! 4. **Apply (d)** committed entries: handed to the apply thread with the proposers waiting for
//!    them. The core only reports entries committed *and durable here*, so nothing is
//!    acknowledged before fdatasync.
//! 5. Read states go to the routing code, which hands the reads to the apply thread.
//!
//! WAL acknowledgements come back in submission order (the WAL writer is one FIFO); each frees
//! the held messages of every `Ready` older than the oldest write still in flight, then tells
//! the core with `advance_persisted`. A write that fails stops the member: the WAL refuses
//! every later write, and the core's idea of what is durable would be wrong.
//!
//! Snapshots: an installed snapshot (from the leader) is restored on the apply thread only once
//! the WAL records it as the log's start; a compaction after a local snapshot is a WAL write
//! too (number 0: no message waits for it and the core is not told of it; its
//! acknowledgement still frees the held messages of older `Ready`s, in order).

use super::{storage, Driver, InFlightWrite, Outgoing};
use crate::error::{Error, Result};
use crate::logging::Level;
use crate::node::apply_thread::{ApplyTask, Waiter};
use crate::node::peer_message::PeerMessage;
use crate::node::transfer::TransferTask;
use crate::node::Internal;
use crate::raft::{Message, MessageBody, Ready, Role, SnapshotMeta};
use crate::types::{Entry, HardState, LogIndex};
use crate::wal::WriteBatch;

impl Driver {
    /// Carry out one `Ready` in the order of the module doc.
    pub(super) fn on_ready(&mut self, ready: Ready) -> Result<()> {
        let Ready {
            number,
            soft_state,
            hard_state,
            entries,
            snapshot,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            rejected,
        } = ready;
        for r in rejected {
            dlog!(
                self,
                Level::Warn,
                "peer_message_rejected",
                peer = r.from.0,
                message = r.message,
                message_term = r.term.0,
                reason = r.reason
            );
        }
        if let Some(soft) = soft_state {
            self.on_soft_state(soft);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        // A change of term or vote must be durable before any message that depends on it; a
        // change of the commit index alone need not be (Raft recomputes it), so it rides along
        // with the next write instead of costing an fdatasync of its own.
        let vote_changed = self.hard_state.term != self.written_hard_state.term
            || self.hard_state.vote != self.written_hard_state.vote;
        let log_changed = !entries.is_empty() || snapshot.is_some();
        if log_changed || vote_changed {
            let batch = WriteBatch {
                entries,
                hard_state: self.take_hard_state(),
                compact_to: snapshot.as_ref().map(|s| (s.index, s.term)),
            };
            if self.raft.role() == Role::Leader || !self.in_flight.is_empty() {
                // The leader writes its own log while the followers write theirs.
                self.submit(number, batch, snapshot, None);
            } else {
                // A follower has nothing to do until its write is durable (its answer waits
                // for it), so it writes on this thread: no hand-off to the WAL's writer and
                // back, which is most of a follower's share of a write's latency. Messages
                // that arrive meanwhile queue up and share the next write.
                let started = self.now();
                self.wal.write(batch).map_err(wal_failure)?;
                self.stats.wal_writes += 1;
                self.stats
                    .wal_write_latency
                    .record(self.now().saturating_duration_since(started).as_micros() as u64);
                if let Some(meta) = snapshot {
                    self.on_install_durable(meta);
                }
                self.raft.advance_persisted(number).map_err(storage)?;
            }
        }
        for m in messages {
            self.send_raft(m);
        }
        if !persisted_messages.is_empty() {
            if self.in_flight.iter().all(|w| w.number == 0) {
                for m in persisted_messages {
                    self.send_raft(m);
                }
            } else {
                self.held.push_back((number, persisted_messages));
            }
        }
        if !committed_entries.is_empty() {
            self.hand_to_apply(committed_entries);
        }
        for state in read_states {
            self.on_read_state(state);
        }
        if log_changed {
            self.sync_peers();
        }
        Ok(())
    }

    pub(super) fn take_hard_state(&mut self) -> Option<HardState> {
        if self.hard_state == self.written_hard_state {
            return None;
        }
        self.written_hard_state = self.hard_state;
        Some(self.hard_state)
    }

    pub(super) fn submit(
        &mut self,
        number: u64,
        batch: WriteBatch,
        install: Option<SnapshotMeta>,
        compaction: Option<LogIndex>,
    ) {
        self.in_flight.push_back(InFlightWrite {
            number,
            submitted: self.now(),
            install,
            compaction,
        });
        let tx = self.ch.internal_tx.clone();
        self.wal.submit(
            batch,
            Box::new(move |result| {
                tx.send(Internal::Persisted { number, result });
            }),
        );
    }

    pub(super) fn on_persisted(&mut self, number: u64, result: Result<()>) -> Result<()> {
        result.map_err(wal_failure)?;
        let Some(write) = self.in_flight.pop_front() else {
            panic!(
                "node {} term {}: WAL acknowledged write {number} with none in flight, index {}",
                self.id,
                self.raft.term(),
                self.raft.last_index()
            );
        };
        assert_eq!(
            write.number,
            number,
            "node {} term {}: WAL acknowledgements out of order, index {}",
            self.id,
            self.raft.term(),
            self.raft.last_index()
        );
        self.stats.wal_writes += 1;
        self.stats.wal_write_latency.record(
            self.now()
                .saturating_duration_since(write.submitted)
                .as_micros() as u64,
        );
        if let Some(meta) = write.install {
            self.on_install_durable(meta);
        }
        if let Some(keep_from) = write.compaction {
            self.to_transfer(TransferTask::Prune { keep_from });
        }
        if number > 0 {
            self.raft.advance_persisted(number).map_err(storage)?;
        }
        // Messages of a Ready may go once no write of that Ready or an earlier one is pending.
        let oldest_pending = self
            .in_flight
            .iter()
            .find(|w| w.number > 0)
            .map_or(u64::MAX, |w| w.number);
        while self.held.front().is_some_and(|(n, _)| *n < oldest_pending) {
            if let Some((_, messages)) = self.held.pop_front() {
                for m in messages {
                    self.send_raft(m);
                }
            }
        }
        Ok(())
    }

    /// A snapshot from the leader is now the start of our log: restore the state from it
    /// (before any entry after it is handed out, which happens once the core hears the write
    /// is durable).
    pub(super) fn on_install_durable(&mut self, meta: SnapshotMeta) {
        let Some(path) = self.install_paths.remove(&(meta.index, meta.term)) else {
            panic!(
                "node {} term {}: installing snapshot at index {} term {} whose data was never \
                 fetched",
                self.id,
                self.raft.term(),
                meta.index,
                meta.term
            );
        };
        self.install_paths.retain(|(i, _), _| *i > meta.index);
        self.raft.store_mut().set_snapshot(meta.clone());
        let later = self.proposals.split_off(&meta.index.next());
        let orphans = std::mem::replace(&mut self.proposals, later)
            .into_iter()
            .map(|(index, (term, reply, _))| Waiter { index, term, reply })
            .collect();
        self.stats.snapshots_installed += 1;
        dlog!(
            self,
            Level::Info,
            "snapshot_installed",
            index = meta.index.0,
            snapshot_term = meta.term.0
        );
        self.snapshots = vec![meta.clone()];
        self.to_apply(ApplyTask::Restore {
            meta: meta.clone(),
            path,
            orphans,
        });
        self.to_transfer(TransferTask::Prune {
            keep_from: meta.index,
        });
    }

    pub(super) fn hand_to_apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        let mut waiters = Vec::new();
        while let Some(first) = self.proposals.first_entry() {
            if *first.key() > last {
                break;
            }
            let (index, (term, reply, _)) = first.remove_entry();
            waiters.push(Waiter { index, term, reply });
        }
        self.to_apply(ApplyTask::Apply { entries, waiters });
    }

    pub(super) fn send_raft(&mut self, m: Message) {
        if let MessageBody::Snapshot { meta } = &m.body {
            dlog!(
                self,
                Level::Info,
                "snapshot_send_started",
                to = m.to.0,
                index = meta.index.0
            );
            self.outgoing.insert(
                m.to,
                Outgoing {
                    index: meta.index,
                    term: meta.term,
                    last_activity: self.now(),
                },
            );
        }
        let m = if self.raft.role() == Role::Leader {
            match self.notices.route(m, self.now()) {
                Some(m) => m,
                None => return,
            }
        } else {
            m
        };
        let to = m.to;
        self.transport.send(to, PeerMessage::Raft(m));
    }

    /// Compact the log behind the newest snapshot that leaves `snapshot_trailing_entries`
    /// entries after it (never past a snapshot file already fsynced: the apply thread reports
    /// a snapshot only after it is).
    pub(super) fn on_snapshot_taken(&mut self, meta: SnapshotMeta) {
        self.snapshots.push(meta.clone());
        let current = self.raft.store().snapshot().index;
        let limit = meta
            .index
            .0
            .saturating_sub(self.config.snapshot_trailing_entries);
        let target = self
            .snapshots
            .iter()
            .filter(|s| s.index.0 <= limit && s.index > current)
            .max_by_key(|s| s.index)
            .cloned();
        let Some(target) = target else {
            return;
        };
        dlog!(
            self,
            Level::Info,
            "log_compacted",
            index = target.index.0,
            newest_snapshot = meta.index.0
        );
        self.raft.store_mut().set_snapshot(target.clone());
        self.snapshots.retain(|s| s.index >= target.index);
        let batch = WriteBatch {
            entries: Vec::new(),
            hard_state: self.take_hard_state(),
            compact_to: Some((target.index, target.term)),
        };
        self.submit(0, batch, None, Some(target.index));
    }
}

/// A failed WAL write stops the member (the WAL refuses every later write anyway).
pub(super) fn wal_failure(e: Error) -> Error {
    match e {
        Error::Fatal(m) => Error::Fatal(format!("WAL write failed: {m}")),
        other => Error::Fatal(format!("WAL write failed: {other}")),
    }
}
