//! Commit notices: a leader's AppendEntries without entries, which tell a follower only that
//! the commit index moved (or probe where its log matches), held for a short while so that the
//! next AppendEntries with entries, which carries the commit index too, replaces them.
//!
//! The Raft core sends such a notice to every follower as soon as an entry commits, and each
//! follower answers it. Under a steady stream of small writes (a lock hand-off is two: the
//! release, then the releaser's next acquire) the next entry follows within a few hundred
//! microseconds and carries the same news, so the notice and its answer were a quarter of the
//! messages a write cost, each a wake-up of a connection thread and a driver on both sides.
//! Holding a notice for at most [`COMMIT_NOTICE_HOLD`] saves them under load and costs an idle
//! follower that much delay in learning a commit (its applied state, its watches); a follower's
//! linearizable read does not wait for it (the ReadIndex round's heartbeat carries the commit
//! index). Delaying or dropping a Raft message is always safe: the network may do either.

use super::Driver;
use crate::limits::COMMIT_NOTICE_HOLD;
use crate::node::peer_message::PeerMessage;
use crate::raft::{Message, MessageBody, Role};
use crate::types::NodeId;
use std::collections::BTreeMap;
use std::time::Instant;

/// The notices held, at most one per follower (a newer one replaces it, keeping its deadline).
#[derive(Default)]
pub(super) struct CommitNotices {
    held: BTreeMap<NodeId, (Message, Instant)>,
}

impl CommitNotices {
    /// Route an outgoing message of a leader: `Some` to send it now, `None` if it was held.
    /// A message with entries for a follower drops that follower's held notice.
    pub(super) fn route(&mut self, m: Message, now: Instant) -> Option<Message> {
        match &m.body {
            MessageBody::AppendEntries { entries, .. } if entries.is_empty() => {
                let deadline = self
                    .held
                    .get(&m.to)
                    .map_or(now + COMMIT_NOTICE_HOLD, |(_, d)| *d);
                self.held.insert(m.to, (m, deadline));
                None
            }
            MessageBody::AppendEntries { .. } => {
                self.held.remove(&m.to);
                Some(m)
            }
            _ => Some(m),
        }
    }

    /// The notices whose time is up, taken out.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Message> {
        let due: Vec<NodeId> = self
            .held
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(to, _)| *to)
            .collect();
        due.into_iter()
            .filter_map(|to| self.held.remove(&to).map(|(m, _)| m))
            .collect()
    }

    /// Every notice, taken out (the member stopped leading: they go at once).
    pub(super) fn take_all(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.held)
            .into_values()
            .map(|(m, _)| m)
            .collect()
    }

    /// When the next held notice is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|(_, deadline)| *deadline).min()
    }
}

impl Driver {
    /// Send the held notices whose time is up; all of them once this member no longer leads.
    pub(super) fn send_due_notices(&mut self) {
        let due = if self.raft.role() == Role::Leader {
            self.notices.due(self.now())
        } else {
            self.notices.take_all()
        };
        for m in due {
            self.transport.send(m.to, PeerMessage::Raft(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, EntryKind, GroupId, LogIndex, Term};

    fn append(to: u64, entries: usize, commit: u64) -> Message {
        Message {
            group: GroupId(0),
            from: NodeId(1),
            to: NodeId(to),
            term: Term(2),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(5),
                prev_log_term: Term(2),
                entries: (0..entries)
                    .map(|i| Entry {
                        group: GroupId(0),
                        term: Term(2),
                        index: LogIndex(6 + i as u64),
                        kind: EntryKind::Normal,
                        data: Vec::new(),
                    })
                    .collect(),
                leader_commit: LogIndex(commit),
            },
        }
    }

    fn commit_of(m: &Message) -> u64 {
        match &m.body {
            MessageBody::AppendEntries { leader_commit, .. } => leader_commit.0,
            _ => panic!("not an AppendEntries: {m:?}"),
        }
    }

    #[test]
    fn a_notice_waits_its_hold_and_a_newer_one_replaces_it_keeping_the_deadline() {
        let mut notices = CommitNotices::default();
        let t0 = Instant::now();
        assert!(notices.route(append(2, 0, 5), t0).is_none());
        assert_eq!(notices.next_deadline(), Some(t0 + COMMIT_NOTICE_HOLD));
        let later = t0 + COMMIT_NOTICE_HOLD / 2;
        assert!(notices.route(append(2, 0, 6), later).is_none());
        assert_eq!(notices.next_deadline(), Some(t0 + COMMIT_NOTICE_HOLD));
        assert!(notices.due(later).is_empty());
        let due = notices.due(t0 + COMMIT_NOTICE_HOLD);
        assert_eq!(due.iter().map(commit_of).collect::<Vec<_>>(), vec![6]);
        assert_eq!(notices.next_deadline(), None);
    }

    #[test]
    fn entries_for_a_follower_replace_its_notice_and_other_messages_pass() {
        let mut notices = CommitNotices::default();
        let t0 = Instant::now();
        assert!(notices.route(append(2, 0, 5), t0).is_none());
        assert!(notices.route(append(3, 0, 5), t0).is_none());
        let sent = notices.route(append(2, 1, 6), t0).map(|m| commit_of(&m));
        assert_eq!(sent, Some(6));
        let heartbeat = Message {
            group: GroupId(0),
            from: NodeId(1),
            to: NodeId(3),
            term: Term(2),
            body: MessageBody::Heartbeat {
                commit: LogIndex(5),
                round: 1,
            },
        };
        assert!(notices.route(heartbeat, t0).is_some());
        let left = notices.take_all();
        assert_eq!(left.iter().map(|m| m.to.0).collect::<Vec<_>>(), vec![3]);
        assert!(notices.due(t0 + COMMIT_NOTICE_HOLD).is_empty());
    }
}
