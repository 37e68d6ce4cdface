//! What an operator sees of a member: the status table, its JSON, Prometheus metrics, a health
//! verdict, and the read-only HTTP endpoint that serves them (`http`).
//!
//! One rendering for every way in: `haven status` gathers the members' [`Status`] answers into
//! a [`ClusterView`] over the remote client; a member's own HTTP endpoint builds a view of just
//! itself ([`ClusterView::of_member`]). Both print through the same functions ([`table`],
//! [`json`], [`prometheus`]), so the scraped metrics and the command's output cannot drift.
//!
//! This module depends on `proto` (the status types) and `net` (transport counters) only; the
//! runtime starts the HTTP endpoint, the CLI renders what it gathered.

pub mod http;
mod render;

pub use render::{json, json_string, prometheus, role_name, table, transport_metrics};

use crate::proto::{MemberStatus, NodeRole, Status};
use crate::types::NodeId;

/// One member's row.
#[derive(Debug, Clone)]
pub struct MemberRow {
    /// Its id (`None`: an address given on the command line that did not answer and that no
    /// configuration names).
    pub id: Option<NodeId>,
    /// Where it was asked.
    pub address: String,
    /// Voter (`true`) or learner, as the configuration says.
    pub voter: bool,
    /// Its own answer, or why there was none.
    pub own: std::result::Result<Status, String>,
    /// The leader's view of it (match index, last contact), when the leader answered.
    pub seen_by_leader: Option<MemberStatus>,
}

/// The cluster as one or more members answered for it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// Rows in member id order (unknown ids last).
    pub rows: Vec<MemberRow>,
    /// The leader's own answer, if the leader answered.
    pub leader: Option<Status>,
}

impl ClusterView {
    /// The view of one member from its own status alone (what its HTTP endpoint shows): one
    /// row, itself; the leader's answer only if it leads. Other members are not asked: each
    /// member is scraped on its own.
    pub fn of_member(status: &Status) -> ClusterView {
        let in_config = status.members.iter().find(|m| m.id == status.id);
        let leads = status.role == NodeRole::Leader;
        ClusterView {
            rows: vec![MemberRow {
                id: Some(status.id),
                address: in_config.map(|m| m.address.clone()).unwrap_or_default(),
                voter: in_config.is_some_and(|m| m.voter),
                own: Ok(status.clone()),
                seen_by_leader: if leads { in_config.cloned() } else { None },
            }],
            leader: leads.then(|| status.clone()),
        }
    }

    /// Members that answered.
    pub fn reachable(&self) -> usize {
        self.rows.iter().filter(|r| r.own.is_ok()).count()
    }

    /// Entries the member is behind the leader's log (leader's last index minus the member's
    /// match index in the leader's view).
    pub fn lag(&self, row: &MemberRow) -> Option<u64> {
        let leader = self.leader.as_ref()?;
        let matched = row.seen_by_leader.as_ref()?.match_index?;
        Some(leader.last_index.0.saturating_sub(matched.0))
    }

    /// The leader and its term: the leader's own answer, else the leader named by the answer
    /// with the highest term (a follower's view, when the leader itself was not asked or did
    /// not answer).
    pub fn leader_and_term(&self) -> Option<(NodeId, u64)> {
        if let Some(l) = &self.leader {
            return Some((l.id, l.term.0));
        }
        self.rows
            .iter()
            .filter_map(|r| r.own.as_ref().ok())
            .max_by_key(|s| s.term)
            .and_then(|s| Some((s.leader?, s.term.0)))
    }
}

/// Whether a member is fit to serve: `Ok(summary)` when it knows a leader and its applied index
/// is within `max_lag_entries` of its commit index, else `Err(reason)` (one line).
pub fn health(status: &Status, max_lag_entries: u64) -> std::result::Result<String, String> {
    if let Some(why) = &status.failure {
        return Err(format!("member {} stopped: {why}", status.id.0));
    }
    if status.role == NodeRole::Stopped {
        return Err(format!("member {} is stopped", status.id.0));
    }
    let Some(leader) = status.leader else {
        return Err(format!(
            "member {} knows no leader (term {}, role {})",
            status.id.0,
            status.term.0,
            role_name(status.role)
        ));
    };
    let lag = status.commit_index.0.saturating_sub(status.applied_index.0);
    if lag > max_lag_entries {
        return Err(format!(
            "member {} applied {} of {} committed entries: {lag} behind, over the limit of \
             {max_lag_entries}",
            status.id.0, status.applied_index.0, status.commit_index.0
        ));
    }
    Ok(format!(
        "ok: member {}, leader {}, term {}, applied {} of {}",
        status.id.0, leader.0, status.term.0, status.applied_index.0, status.commit_index.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogIndex, Term};

    fn status(leader: Option<u64>, commit: u64, applied: u64) -> Status {
        Status {
            id: NodeId(2),
            role: NodeRole::Follower,
            term: Term(3),
            leader: leader.map(NodeId),
            commit_index: LogIndex(commit),
            applied_index: LogIndex(applied),
            first_index: LogIndex(1),
            last_index: LogIndex(commit),
            members: vec![MemberStatus {
                id: NodeId(2),
                address: "127.0.0.1:7002".into(),
                voter: true,
                match_index: None,
                last_contact_ms: None,
                rejected_messages: 0,
            }],
            counters: Default::default(),
            failure: None,
        }
    }

    #[test]
    fn health_needs_a_leader_and_a_bounded_apply_lag() {
        assert!(health(&status(Some(1), 100, 100), 0).is_ok());
        assert!(health(&status(Some(1), 100, 90), 10).is_ok());
        let lagging = health(&status(Some(1), 100, 89), 10).unwrap_err();
        assert!(lagging.contains("11 behind"), "{lagging}");
        let leaderless = health(&status(None, 100, 100), 10).unwrap_err();
        assert!(leaderless.contains("knows no leader"), "{leaderless}");
        let mut stopped = status(Some(1), 1, 1);
        stopped.role = NodeRole::Stopped;
        stopped.failure = Some("fsync failed".into());
        assert!(health(&stopped, 10).unwrap_err().contains("fsync failed"));
    }

    #[test]
    fn a_followers_own_view_names_the_leader_it_follows() {
        let view = ClusterView::of_member(&status(Some(1), 5, 5));
        assert_eq!(view.rows.len(), 1);
        assert!(view.leader.is_none());
        assert_eq!(view.leader_and_term(), Some((NodeId(1), 3)));
        assert!(json(&view).starts_with("{\"leader\":1,\"term\":3,\"reachable\":1,"));
    }
}
