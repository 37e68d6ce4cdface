//! The member's status as JSON, for `haven_status_json` (haven has no JSON dependency: this
//! is the one writer the C ABI needs).

use crate::client::{MemberStatus, NodeRole, Status};
use std::fmt::Write as _;

/// `s` as a JSON string literal (the one escaper, `observe::json_string`).
fn string(out: &mut String, s: &str) {
    out.push_str(&crate::observe::json_string(s));
}

fn opt(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

fn role(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Follower => "follower",
        NodeRole::PreCandidate => "pre_candidate",
        NodeRole::Candidate => "candidate",
        NodeRole::Leader => "leader",
        NodeRole::Stopped => "stopped",
    }
}

/// The members as a JSON array of `{"id", "address", "voter", "match_index",
/// "last_contact_ms"}`.
pub(crate) fn members(out: &mut String, members: &[MemberStatus]) {
    out.push('[');
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"id\":{},\"address\":", m.id.0);
        string(out, &m.address);
        let _ = write!(out, ",\"voter\":{},\"match_index\":", m.voter);
        opt(out, m.match_index.map(|i| i.0));
        out.push_str(",\"last_contact_ms\":");
        opt(out, m.last_contact_ms);
        out.push('}');
    }
    out.push(']');
}

/// The whole status as one JSON object (the layout is documented on `haven_status_json`).
pub(crate) fn status(s: &Status) -> String {
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "{{\"id\":{},\"role\":\"{}\",\"term\":{},\"leader\":",
        s.id.0,
        role(s.role),
        s.term.0
    );
    opt(&mut out, s.leader.map(|l| l.0));
    let _ = write!(
        out,
        ",\"commit_index\":{},\"applied_index\":{},\"first_index\":{},\"last_index\":{},\"members\":",
        s.commit_index.0, s.applied_index.0, s.first_index.0, s.last_index.0
    );
    members(&mut out, &s.members);
    let c = &s.counters;
    let _ = write!(
        out,
        ",\"counters\":{{\"proposals\":{},\"forwarded\":{},\"reads\":{},\"entries_applied\":{},\
         \"wal_writes\":{},\"snapshots_taken\":{},\"snapshots_sent\":{},\
         \"snapshots_received\":{},\"snapshots_installed\":{},\"transport_drops\":{},\
         \"elections_started\":{}}},\"failure\":",
        c.proposals,
        c.forwarded,
        c.reads,
        c.entries_applied,
        c.wal_writes,
        c.snapshots_taken,
        c.snapshots_sent,
        c.snapshots_received,
        c.snapshots_installed,
        c.transport_drops,
        c.elections_started
    );
    match &s.failure {
        Some(f) => string(&mut out, f),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_quotes_backslashes_and_controls() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
