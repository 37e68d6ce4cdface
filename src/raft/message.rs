//! Raft messages, as the transport frames them (bincode 2; layout in `docs/FORMAT.md`).

use super::membership::Membership;
use crate::types::{Entry, GroupId, LogIndex, NodeId, Term};
use bincode::{Decode, Encode};

/// Where a snapshot sits in the log, and the configuration as of that index. The snapshot
/// *data* never passes through the core: the runtime streams it itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The membership in force at `index`.
    pub membership: Membership,
}

/// One Raft message between two members of a group.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Message {
    /// The Raft group (always 0 today).
    pub group: GroupId,
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term the sender would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of Raft message.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum MessageBody {
    /// A (pre-)vote request (Raft section 5.2, dissertation 9.6 for pre-vote).
    RequestVote {
        /// A pre-vote: asks "would you vote for me?" without anyone changing term.
        pre_vote: bool,
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// Sent because the leader asked this candidate to take over (TimeoutNow): voters
        /// grant it even while they still hear from the old leader.
        transfer: bool,
    },
    /// The answer to a (pre-)vote request.
    RequestVoteResponse {
        /// Answer to a pre-vote.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Log replication (Raft section 5.3).
    AppendEntries {
        /// Index of the entry before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// Entries to append (may be empty: then it only carries `leader_commit`).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// The answer to `AppendEntries` or `Snapshot`.
    AppendEntriesResponse {
        /// Whether the entries were appended.
        success: bool,
        /// On success: the follower's log matches the leader's up to here (and is durable).
        /// On rejection: the `prev_log_index` of the rejected request.
        index: LogIndex,
        /// On rejection: the largest index at which the follower's log may match the leader's
        /// (the fast-backtracking hint, dissertation 5.3 optimisation).
        hint_index: LogIndex,
        /// On rejection: the follower's term at `hint_index`.
        hint_term: Term,
    },
    /// Leader liveness and commit propagation; also confirms leadership for ReadIndex.
    Heartbeat {
        /// The leader's commit index, capped at what the follower is known to hold.
        commit: LogIndex,
        /// Leadership-confirmation round (see [`MessageBody::HeartbeatResponse`]).
        round: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// The round of the heartbeat being answered.
        round: u64,
    },
    /// The follower needs entries the leader compacted: install this snapshot. The runtime
    /// intercepts it, streams the data, and steps it into the follower's core once the data is
    /// durable there.
    Snapshot {
        /// Which snapshot.
        meta: SnapshotMeta,
    },
    /// Leadership transfer: start an election now (dissertation 3.10).
    TimeoutNow,
    /// A follower forwards a ReadIndex request to its leader.
    ReadIndex {
        /// The caller's opaque context, returned with the result.
        context: Vec<u8>,
    },
    /// The leader's answer to a forwarded ReadIndex request.
    ReadIndexResponse {
        /// The context of the request.
        context: Vec<u8>,
        /// The read index, or `None` if the leader could not serve it (retry).
        index: Option<LogIndex>,
    },
}

impl MessageBody {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_value, encode_value};
    use crate::types::EntryKind;

    #[test]
    fn messages_roundtrip_through_the_codec() {
        let m = Message {
            group: GroupId(0),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(4),
                prev_log_term: Term(2),
                entries: vec![Entry {
                    group: GroupId(0),
                    term: Term(3),
                    index: LogIndex(5),
                    kind: EntryKind::Normal,
                    data: b"x".to_vec(),
                }],
                leader_commit: LogIndex(4),
            },
        };
        let bytes = encode_value(&m).unwrap();
        assert_eq!(decode_value::<Message>(&bytes).unwrap(), m);
        assert!(decode_value::<Message>(&bytes[..bytes.len() - 1]).is_err());
    }

    /// The byte layout documented in docs/FORMAT.md ("Raft messages"); a change here is a
    /// wire-format change.
    #[test]
    fn wire_layout_is_stable() {
        let heartbeat = Message {
            group: GroupId(0),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::Heartbeat {
                commit: LogIndex(5),
                round: 300,
            },
        };
        // group, from, to, term, variant 4, commit, round (300 = tag 251 + u16 LE).
        assert_eq!(
            encode_value(&heartbeat).unwrap(),
            vec![0, 1, 2, 3, 4, 5, 251, 0x2c, 0x01]
        );
        let append = Message {
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(4),
                prev_log_term: Term(2),
                entries: vec![Entry {
                    group: GroupId(0),
                    term: Term(3),
                    index: LogIndex(5),
                    kind: EntryKind::Membership,
                    data: vec![0xAA],
                }],
                leader_commit: LogIndex(4),
            },
            ..heartbeat.clone()
        };
        // ... variant 2, prev index, prev term, 1 entry (group, term, index, kind 2, data len 1,
        // data), leader commit.
        assert_eq!(
            encode_value(&append).unwrap(),
            vec![0, 1, 2, 3, 2, 4, 2, 1, 0, 3, 5, 2, 1, 0xAA, 4]
        );
        let vote = Message {
            body: MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: LogIndex(7),
                last_log_term: Term(2),
                transfer: false,
            },
            ..heartbeat
        };
        assert_eq!(
            encode_value(&vote).unwrap(),
            vec![0, 1, 2, 3, 0, 1, 7, 2, 0]
        );
    }
}
