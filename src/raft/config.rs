//! Configuration of one Raft node.

use crate::error::Error;
use crate::limits::{
    MAX_APPEND_BYTES, MAX_APPEND_ENTRIES, MAX_INFLIGHT_BYTES, MAX_INFLIGHT_MSGS,
    MAX_PENDING_PROPOSALS,
};
use crate::types::{GroupId, NodeId};

/// Settings of one Raft node. [`Config::new`] gives the defaults; [`Config::validate`] is called
/// by [`Raft::new`](super::Raft::new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id (never 0).
    pub id: NodeId,
    /// The Raft group (always 0 today).
    pub group: GroupId,
    /// Minimum election timeout in ticks; each timeout is drawn from
    /// `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: u32,
    /// A leader sends heartbeats every this many ticks (must be below `election_ticks`).
    pub heartbeat_ticks: u32,
    /// Pre-vote (dissertation section 9.6): a node only increments its term after learning it
    /// could win, so a partitioned node cannot disrupt the cluster when it returns.
    pub pre_vote: bool,
    /// CheckQuorum (dissertation 6.2): a leader that has not heard from a quorum within an
    /// election timeout steps down, and a follower that heard from a leader within the
    /// minimum election timeout refuses (pre-)votes. Lease reads rely on it.
    pub check_quorum: bool,
    /// Lease reads, opt-in: a leader serves reads without a round trip while its lease holds,
    /// `lease_read_ticks` ticks after the start of the last heartbeat round that a quorum
    /// answered. Safe only if no follower's ticks run faster than the leader's by more than
    /// the factor `(election_ticks - 1) / lease_read_ticks` (bounded clock drift), and if the
    /// runtime gives the core every tick its clock owes before each input; must be below
    /// `election_ticks`. Requires `check_quorum`. A restarted member then refuses votes for
    /// `election_ticks` after its start.
    pub lease_read_ticks: Option<u32>,
    /// Soft cap on entry bytes per AppendEntries.
    pub max_append_bytes: usize,
    /// Most entries per AppendEntries.
    pub max_append_entries: usize,
    /// Most AppendEntries in flight per follower.
    pub max_inflight_msgs: usize,
    /// Most entry bytes in flight per follower.
    pub max_inflight_bytes: usize,
    /// Soft cap on the bytes of committed entries handed out in one `Ready`.
    pub max_apply_bytes: usize,
    /// Most ReadIndex requests queued at a leader.
    pub max_pending_reads: usize,
    /// Seed of the node's random number generator (election timeouts).
    pub seed: u64,
    /// Test-only: break one Raft rule on purpose, to show the simulator catches it.
    #[doc(hidden)]
    pub injected_bug: Option<InjectedBug>,
}

/// A Raft rule the core can be told to break (tests only).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedBug {
    /// Commit an entry of a previous term once it is on a majority (violates 5.4.2), and skip
    /// the new leader's no-op entry (which would otherwise hide the violation).
    CommitPreviousTermByCount,
    /// Grant votes without checking that the candidate's log is up to date (violates 5.4.1).
    VoteWithoutLogCheck,
    /// Answer ReadIndex at once, without a quorum confirming the leadership (violates 6.4:
    /// a deposed leader serves stale reads).
    ReadWithoutQuorumCheck,
    /// With lease reads: grant votes right after a start, although this node may have
    /// answered a leader whose lease still runs (violates 6.4.1: a new leader is elected
    /// inside the old one's lease, which serves stale reads).
    LeaseVoteRightAfterRestart,
    /// A *runtime* bug, acted on by the simulator's runtime (the core cannot see it): after a
    /// pause, step the queued messages into the core before the ticks that elapsed meanwhile,
    /// as the node driver did, so a lease read is judged on a clock that lags (violates 6.4.1).
    LeaseReadOnLaggingClock,
}

impl Config {
    /// The defaults for node `id`: election after 10 ticks, heartbeat every tick, PreVote and
    /// CheckQuorum on, lease reads off, flow-control limits from `limits.rs`.
    pub fn new(id: NodeId, seed: u64) -> Config {
        Config {
            id,
            group: GroupId(0),
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            lease_read_ticks: None,
            max_append_bytes: MAX_APPEND_BYTES,
            max_append_entries: MAX_APPEND_ENTRIES,
            max_inflight_msgs: MAX_INFLIGHT_MSGS,
            max_inflight_bytes: MAX_INFLIGHT_BYTES,
            max_apply_bytes: MAX_APPEND_BYTES * 4,
            max_pending_reads: MAX_PENDING_PROPOSALS,
            seed,
            injected_bug: None,
        }
    }

    /// Reject nonsense once, at open.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.id.0 == 0 {
            return bad("node id 0 is not valid".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return bad(format!(
                "need 0 < heartbeat_ticks ({}) < election_ticks ({})",
                self.heartbeat_ticks, self.election_ticks
            ));
        }
        if let Some(lease) = self.lease_read_ticks {
            if !self.check_quorum || lease == 0 || lease >= self.election_ticks {
                return bad(format!(
                    "lease_read_ticks ({lease}) needs check_quorum and 0 < lease < election_ticks ({})",
                    self.election_ticks
                ));
            }
        }
        if self.max_append_bytes == 0 || self.max_append_bytes > MAX_APPEND_BYTES {
            return bad(format!(
                "max_append_bytes must be in 1..={MAX_APPEND_BYTES}"
            ));
        }
        if self.max_append_entries == 0 || self.max_append_entries > MAX_APPEND_ENTRIES {
            return bad(format!(
                "max_append_entries must be in 1..={MAX_APPEND_ENTRIES}"
            ));
        }
        if self.max_inflight_msgs == 0 || self.max_inflight_msgs > MAX_INFLIGHT_MSGS {
            return bad(format!(
                "max_inflight_msgs must be in 1..={MAX_INFLIGHT_MSGS}"
            ));
        }
        if self.max_inflight_bytes < self.max_append_bytes
            || self.max_inflight_bytes > MAX_INFLIGHT_BYTES
        {
            return bad(format!(
                "max_inflight_bytes must be in max_append_bytes..={MAX_INFLIGHT_BYTES}"
            ));
        }
        if self.max_apply_bytes == 0 || self.max_pending_reads == 0 {
            return bad("max_apply_bytes and max_pending_reads must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_nonsense() {
        assert!(Config::new(NodeId(1), 0).validate().is_ok());
        assert!(Config::new(NodeId(0), 0).validate().is_err());
        let mut c = Config::new(NodeId(1), 0);
        c.heartbeat_ticks = 10;
        assert!(c.validate().is_err());
        let mut c = Config::new(NodeId(1), 0);
        c.lease_read_ticks = Some(10);
        assert!(c.validate().is_err());
        c.lease_read_ticks = Some(8);
        assert!(c.validate().is_ok());
        c.check_quorum = false;
        assert!(c.validate().is_err());
        let mut c = Config::new(NodeId(1), 0);
        c.max_inflight_msgs = 0;
        assert!(c.validate().is_err());
    }
}
