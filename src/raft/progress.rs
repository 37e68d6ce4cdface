//! The leader's view of one follower's log (Raft figure 2's `nextIndex`/`matchIndex`, plus the
//! flow-control state machine of etcd's and raft-rs's design, written afresh).

use crate::types::LogIndex;
use std::collections::VecDeque;

/// How the leader is currently replicating to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationState {
    /// The leader does not know where the logs match: one AppendEntries at a time, waiting
    /// for its answer (or a heartbeat answer) before sending the next.
    Probe,
    /// The logs match up to `match_index`: AppendEntries are pipelined, bounded by the
    /// in-flight window.
    Replicate,
    /// The follower needs a snapshot; nothing else is sent until the transfer is reported.
    Snapshot {
        /// The index of the snapshot being sent.
        index: LogIndex,
    },
}

/// AppendEntries sent but not yet acknowledged, bounded in count and bytes.
#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    /// (last index carried, bytes carried) per message, oldest first.
    messages: VecDeque<(LogIndex, usize)>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Inflights {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Inflights {
        Inflights {
            messages: VecDeque::new(),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.messages.len() >= self.max_messages || self.bytes >= self.max_bytes
    }

    pub(crate) fn add(&mut self, last: LogIndex, bytes: usize) {
        self.messages.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Forget every message whose entries are all acknowledged by `index`.
    pub(crate) fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.messages.front() {
            if last > index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Forget the oldest message (it may have been lost).
    pub(crate) fn free_first(&mut self) {
        if let Some((_, bytes)) = self.messages.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub(crate) fn reset(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }
}

/// Replication progress of one member, kept by the leader.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// In `Probe`: an AppendEntries is outstanding, wait before sending another.
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// Heard from since the last CheckQuorum round.
    pub(crate) recent_active: bool,
    /// The highest leadership-confirmation round this member answered.
    pub(crate) acked_round: u64,
    /// Send an AppendEntries at the next chance even if it carries no entries (a heartbeat
    /// answer showed the follower lagging).
    pub(crate) send_empty: bool,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex, max_messages: usize, max_bytes: usize) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_messages, max_bytes),
            recent_active: false,
            acked_round: 0,
            send_empty: false,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot the follower holds at least the snapshot: resume right after it.
        let next = match self.state {
            ReplicationState::Snapshot { index } => index.max(self.match_index).next(),
            _ => self.match_index.next(),
        };
        self.state = ReplicationState::Probe;
        self.next_index = next;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ReplicationState::Snapshot { index };
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// A success acknowledgement up to `index`. Returns whether it told anything new.
    pub(crate) fn update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.next());
        self.inflights.free_to(index);
        updated
    }

    /// Whether the leader should hold back AppendEntries to this member for now.
    pub(crate) fn paused(&self) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflights.full(),
            ReplicationState::Snapshot { .. } => true,
        }
    }

    /// Account for an AppendEntries just sent carrying entries up to `last` (`count` of them).
    pub(crate) fn sent_entries(&mut self, last: LogIndex, count: usize, bytes: usize) {
        match self.state {
            ReplicationState::Replicate => {
                if count > 0 {
                    self.next_index = last.next();
                    self.inflights.add(last, bytes);
                }
            }
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot { .. } => {
                unreachable!("no AppendEntries while a snapshot is in transfer")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_window_bounds_count_and_bytes() {
        let mut w = Inflights::new(3, 100);
        w.add(LogIndex(1), 10);
        w.add(LogIndex(2), 10);
        assert!(!w.full());
        w.add(LogIndex(5), 10);
        assert!(w.full(), "count limit");
        w.free_to(LogIndex(2));
        assert_eq!(w.len(), 1);
        assert!(!w.full());
        w.add(LogIndex(9), 95);
        assert!(w.full(), "byte limit");
        w.free_to(LogIndex(9));
        assert_eq!(w.len(), 0);
        assert!(!w.full());
    }
}
