//! Messages no correct peer could have sent: why one is dropped, and the per-peer count.
//!
//! Whoever can open a peer lane can send any [`Message`]. Raft does not defend against a lying
//! member (it is not Byzantine fault tolerant), but a message that *no* correct member could
//! send in our state must never crash this member nor corrupt its state: the core drops it,
//! counts it per sender and reports it in [`Ready::rejected`](super::Ready::rejected) for the
//! runtime to log. Checks that need only the message live here ([`check_shape`]); checks
//! against the core's state (two leaders in one term, an acknowledgement beyond our log, an
//! unsent heartbeat round) live where the message is
//! handled. Internal invariants (our own state) stay asserts: breaking one is a bug here.

use super::membership::Membership;
use super::message::{Message, MessageBody, SnapshotMeta};
use crate::limits::{MAX_ENTRY_BYTES, MAX_MEMBERS};
use crate::types::{GroupId, LogIndex, NodeId, Term};
use std::collections::BTreeMap;
use std::fmt;

/// The largest term or log index a correct member can reach: at a million elections or
/// entries a second it takes 146,000 years. Anything above it is nonsense, and refusing it
/// keeps every `+ 1` on terms and indices free of overflow.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

/// Most distinct senders counted separately; further ones share the count of `NodeId(0)`
/// (the core must stay bounded whatever ids a peer lane claims).
const MAX_COUNTED_PEERS: usize = 4 * MAX_MEMBERS;

/// Most rejections reported in one [`Ready`](super::Ready); the rest are only counted.
pub(crate) const MAX_REJECTIONS_PER_READY: usize = 64;

/// Why a peer message was dropped as one no correct member could have sent.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Addressed to another node or group, or claiming to come from this node.
    Misaddressed,
    /// A term or log index beyond [`MAX_TERM_OR_INDEX`].
    Overflow,
    /// A leader's message (AppendEntries, Heartbeat, Snapshot, TimeoutNow) in a term whose leader is another node, possibly this one (election safety, 5.2).
    SecondLeader,
    /// AppendEntries whose entries do not follow `prev_log_index` one by one (so that one
    /// could replace a committed entry: that used to panic), belong to another group, carry a term above the message's or below their predecessor's, or are
    /// larger than any proposal can be.
    MalformedEntries,
    /// A membership entry (or a snapshot's membership) that does not decode or has no voter.
    BadMembership,
    /// An AppendEntries answer for an index beyond the leader's log, or a rejection whose
    /// hint lies beyond the index it rejects.
    AckBeyondLog,
    /// A heartbeat answer for a round the leader never started.
    RoundNotSent,
    /// Snapshot metadata no leader could hold (index 0, term 0, term above the message's).
    BadSnapshot,
    /// A vote request whose last log term is above the term it campaigns in.
    BadVoteRequest,
}

impl RejectReason {
    /// A stable name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::Misaddressed => "misaddressed",
            RejectReason::Overflow => "overflow",
            RejectReason::SecondLeader => "second_leader",
            RejectReason::MalformedEntries => "malformed_entries",
            RejectReason::BadMembership => "bad_membership",
            RejectReason::AckBeyondLog => "ack_beyond_log",
            RejectReason::RoundNotSent => "round_not_sent",
            RejectReason::BadSnapshot => "bad_snapshot",
            RejectReason::BadVoteRequest => "bad_vote_request",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dropped message, for the runtime's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The member the message claims to come from (the runtime checked it against the lane).
    pub from: NodeId,
    /// The message's term.
    pub term: Term,
    /// The kind of message ([`MessageBody::name`]).
    pub message: &'static str,
    /// Why it was dropped.
    pub reason: RejectReason,
}

/// Rejections counted per sender, plus those not yet handed out in a `Ready`.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    counts: BTreeMap<NodeId, u64>,
    pending: Vec<Rejection>,
}

impl Rejections {
    pub(crate) fn record(&mut self, rejection: Rejection) {
        let from = rejection.from;
        let key = if self.counts.contains_key(&from) || self.counts.len() < MAX_COUNTED_PEERS {
            from
        } else {
            NodeId(0)
        };
        *self.counts.entry(key).or_insert(0) += 1;
        if self.pending.len() < MAX_REJECTIONS_PER_READY {
            self.pending.push(rejection);
        }
    }

    pub(crate) fn counts(&self) -> &BTreeMap<NodeId, u64> {
        &self.counts
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(crate) fn take_pending(&mut self) -> Vec<Rejection> {
        std::mem::take(&mut self.pending)
    }
}

/// Checks that need only the message (and who we are). `Ok` does not make a message
/// trustworthy: state-dependent checks follow where it is handled.
pub(crate) fn check_shape(m: &Message, us: NodeId, group: GroupId) -> Result<(), RejectReason> {
    if m.group != group || m.to != us || m.from == us {
        return Err(RejectReason::Misaddressed);
    }
    if m.term.0 > MAX_TERM_OR_INDEX {
        return Err(RejectReason::Overflow);
    }
    match &m.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } => {
            if last_log_index.0 > MAX_TERM_OR_INDEX {
                return Err(RejectReason::Overflow);
            }
            // A candidate's log holds no entry of a term above the one it campaigns in (a
            // pre-vote names the term it would campaign in).
            if *last_log_term > m.term {
                return Err(RejectReason::BadVoteRequest);
            }
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => check_entries(m, *prev_log_index, *prev_log_term, entries, *leader_commit)?,
        MessageBody::AppendEntriesResponse {
            success,
            index,
            hint_index,
            ..
        } => {
            if index.0 > MAX_TERM_OR_INDEX {
                return Err(RejectReason::Overflow);
            }
            // A follower's hint never lies beyond the index it rejects.
            if !success && hint_index > index {
                return Err(RejectReason::AckBeyondLog);
            }
        }
        MessageBody::Snapshot { meta } => check_snapshot(m, meta)?,
        MessageBody::Heartbeat { commit, .. } => {
            if commit.0 > MAX_TERM_OR_INDEX {
                return Err(RejectReason::Overflow);
            }
        }
        MessageBody::ReadIndexResponse {
            index: Some(index), ..
        } => {
            if index.0 > MAX_TERM_OR_INDEX {
                return Err(RejectReason::Overflow);
            }
        }
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. }
        | MessageBody::ReadIndexResponse { index: None, .. } => {}
    }
    Ok(())
}

fn check_entries(
    m: &Message,
    prev_log_index: LogIndex,
    prev_log_term: Term,
    entries: &[crate::types::Entry],
    leader_commit: LogIndex,
) -> Result<(), RejectReason> {
    let last = prev_log_index
        .0
        .checked_add(entries.len() as u64)
        .filter(|&l| l <= MAX_TERM_OR_INDEX);
    if last.is_none() || leader_commit.0 > MAX_TERM_OR_INDEX {
        return Err(RejectReason::Overflow);
    }
    // A leader's log holds no entry of a term above its own, and terms never decrease
    // along a log.
    if prev_log_term > m.term {
        return Err(RejectReason::MalformedEntries);
    }
    let mut term_before = prev_log_term;
    for (k, e) in entries.iter().enumerate() {
        let in_place = e.index.0 == prev_log_index.0 + 1 + k as u64;
        let term_ok = e.term.0 > 0 && e.term >= term_before && e.term <= m.term;
        if !in_place || !term_ok || e.group != m.group || e.data.len() > MAX_ENTRY_BYTES {
            return Err(RejectReason::MalformedEntries);
        }
        term_before = e.term;
        match Membership::from_entry(e) {
            Ok(Some(membership)) => check_membership(&membership)?,
            Ok(None) => {}
            Err(_) => return Err(RejectReason::BadMembership),
        }
    }
    Ok(())
}

fn check_snapshot(m: &Message, meta: &SnapshotMeta) -> Result<(), RejectReason> {
    if meta.index.0 > MAX_TERM_OR_INDEX {
        return Err(RejectReason::Overflow);
    }
    // A leader only sends a snapshot of entries it compacted: index and term at least 1,
    // and no term above its own.
    if meta.index.0 == 0 || meta.term.0 == 0 || meta.term > m.term {
        return Err(RejectReason::BadSnapshot);
    }
    check_membership(&meta.membership)
}

/// A configuration a correct leader can hold: at least one voter, within the member limit,
/// nobody both voter and learner, no id 0 (what `Membership::apply` and `decode` guarantee).
fn check_membership(m: &Membership) -> Result<(), RejectReason> {
    let overlap = m.voters.keys().any(|id| m.learners.contains_key(id));
    let zero = m.members().any(|id| id.0 == 0);
    if m.voters.is_empty() || m.voters.len() + m.learners.len() > MAX_MEMBERS || overlap || zero {
        return Err(RejectReason::BadMembership);
    }
    Ok(())
}
