//! The renderings of a [`ClusterView`]: the table, JSON, Prometheus text format; and the
//! transport's own counters as Prometheus families.

use super::{ClusterView, MemberRow};
use crate::net::{PeerStats, TransportStats};
use crate::proto::{NodeRole, Status};
use crate::types::NodeId;
use std::fmt::Write as _;

/// The role's name in every output.
pub fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Follower => "follower",
        NodeRole::PreCandidate => "pre-candidate",
        NodeRole::Candidate => "candidate",
        NodeRole::Leader => "leader",
        NodeRole::Stopped => "stopped",
    }
}

fn row_role(row: &MemberRow) -> String {
    match &row.own {
        Ok(s) if !row.voter && s.role == NodeRole::Follower => "learner".into(),
        Ok(s) => role_name(s.role).into(),
        Err(_) => "unreachable".into(),
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn contact(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{ms} ms ago"),
        Some(ms) => format!("{} s ago", ms / 1000),
    }
}

/// The table: a summary line, then one row per member.
pub fn table(view: &ClusterView) -> String {
    let mut out = String::new();
    match &view.leader {
        Some(l) => {
            let _ = writeln!(
                out,
                "leader: member {} (term {}), {} of {} members reachable",
                l.id.0,
                l.term.0,
                view.reachable(),
                view.rows.len()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "leader: none reachable, {} of {} members reachable",
                view.reachable(),
                view.rows.len()
            );
        }
    }
    let header = [
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "COMMIT",
        "APPLIED",
        "LAG",
        "LAST CONTACT",
    ];
    let mut cells: Vec<[String; 8]> = vec![header.map(str::to_string)];
    for row in &view.rows {
        let own = row.own.as_ref().ok();
        let is_leader = own.is_some_and(|s| s.role == NodeRole::Leader);
        cells.push([
            or_dash(row.id.map(|i| i.0)),
            row.address.clone(),
            row_role(row),
            or_dash(own.map(|s| s.term.0)),
            or_dash(own.map(|s| s.commit_index.0)),
            or_dash(own.map(|s| s.applied_index.0)),
            or_dash(view.lag(row)),
            if is_leader {
                "(leader)".into()
            } else {
                contact(row.seen_by_leader.as_ref().and_then(|m| m.last_contact_ms))
            },
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| cells.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in &cells {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                // Numbers right-aligned, text left-aligned.
                if (3..=6).contains(&c) || c == 0 {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for row in &view.rows {
        if let Err(e) = &row.own {
            let _ = writeln!(
                out,
                "member {} at {}: {e}",
                or_dash(row.id.map(|i| i.0)),
                row.address
            );
        } else if let Ok(Status {
            failure: Some(why), ..
        }) = &row.own
        {
            let _ = writeln!(
                out,
                "member {} stopped: {why}",
                or_dash(row.id.map(|i| i.0))
            );
        }
    }
    out
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

/// The view as one JSON object (the table's columns, plus the raw fields behind them). `leader`
/// and `term` are the leader's, or, when it did not answer, those the answering members name.
pub fn json(view: &ClusterView) -> String {
    let rows: Vec<String> = view
        .rows
        .iter()
        .map(|row| {
            let own = row.own.as_ref().ok();
            let seen = row.seen_by_leader.as_ref();
            format!(
                concat!(
                    "{{\"id\":{},\"address\":{},\"voter\":{},\"reachable\":{},\"role\":{},",
                    "\"term\":{},\"commit_index\":{},\"applied_index\":{},\"last_index\":{},",
                    "\"match_index\":{},\"lag\":{},\"last_contact_ms\":{},\"error\":{}}}"
                ),
                json_opt(row.id.map(|i| i.0)),
                json_string(&row.address),
                row.voter,
                own.is_some(),
                json_string(&row_role(row)),
                json_opt(own.map(|s| s.term.0)),
                json_opt(own.map(|s| s.commit_index.0)),
                json_opt(own.map(|s| s.applied_index.0)),
                json_opt(own.map(|s| s.last_index.0)),
                json_opt(seen.and_then(|m| m.match_index).map(|i| i.0)),
                json_opt(view.lag(row)),
                json_opt(seen.and_then(|m| m.last_contact_ms)),
                match &row.own {
                    Err(e) => json_string(e),
                    Ok(s) => s
                        .failure
                        .as_deref()
                        .map_or_else(|| "null".into(), json_string),
                },
            )
        })
        .collect();
    format!(
        "{{\"leader\":{},\"term\":{},\"reachable\":{},\"members\":[{}]}}",
        json_opt(view.leader_and_term().map(|(id, _)| id.0)),
        json_opt(view.leader_and_term().map(|(_, term)| term)),
        view.reachable(),
        rows.join(",")
    )
}

/// A Prometheus label value (backslash, double quote and newline escaped).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text-format metrics (version 0.0.4) of every member that answered, each series
/// labelled with `member` (and `peer` for the per-peer ones).
pub fn prometheus(view: &ClusterView) -> String {
    let mut out = String::new();
    let answered: Vec<&Status> = view
        .rows
        .iter()
        .filter_map(|r| r.own.as_ref().ok())
        .collect();
    let mut family = |name: &str, kind: &str, help: &str, lines: Vec<String>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for l in lines {
            let _ = writeln!(out, "{name}{l}");
        }
    };
    family(
        "haven_up",
        "gauge",
        "Whether the member answered the status request.",
        view.rows
            .iter()
            .map(|r| {
                format!(
                    "{{member=\"{}\",address=\"{}\"}} {}",
                    or_dash(r.id.map(|i| i.0)),
                    label(&r.address),
                    u8::from(r.own.is_ok())
                )
            })
            .collect(),
    );
    let roles = [
        NodeRole::Follower,
        NodeRole::PreCandidate,
        NodeRole::Candidate,
        NodeRole::Leader,
        NodeRole::Stopped,
    ];
    family(
        "haven_role",
        "gauge",
        "The member's Raft role (1 for the current one).",
        answered
            .iter()
            .flat_map(|s| {
                roles.iter().map(move |r| {
                    format!(
                        "{{member=\"{}\",role=\"{}\"}} {}",
                        s.id.0,
                        role_name(*r),
                        u8::from(s.role == *r)
                    )
                })
            })
            .collect(),
    );
    let gauge = |f: fn(&Status) -> u64| -> Vec<String> {
        answered
            .iter()
            .map(|s| format!("{{member=\"{}\"}} {}", s.id.0, f(s)))
            .collect()
    };
    family(
        "haven_term",
        "gauge",
        "The member's current term.",
        gauge(|s| s.term.0),
    );
    family(
        "haven_commit_index",
        "gauge",
        "Highest log index the member knows committed.",
        gauge(|s| s.commit_index.0),
    );
    family(
        "haven_applied_index",
        "gauge",
        "Highest log index the member's state machine applied.",
        gauge(|s| s.applied_index.0),
    );
    family(
        "haven_last_index",
        "gauge",
        "Last index in the member's log.",
        gauge(|s| s.last_index.0),
    );
    // Per-peer figures, from each leader's view (only a leader tracks match indexes).
    let mut lag = Vec::new();
    let mut contact_lines = Vec::new();
    let mut rejected_lines = Vec::new();
    for s in &answered {
        for m in s.members.iter().filter(|m| m.id != s.id) {
            rejected_lines.push(format!(
                "{{member=\"{}\",peer=\"{}\"}} {}",
                s.id.0, m.id.0, m.rejected_messages
            ));
            if let Some(matched) = m.match_index {
                lag.push(format!(
                    "{{member=\"{}\",peer=\"{}\"}} {}",
                    s.id.0,
                    m.id.0,
                    s.last_index.0.saturating_sub(matched.0)
                ));
            }
            if let Some(ms) = m.last_contact_ms {
                contact_lines.push(format!(
                    "{{member=\"{}\",peer=\"{}\"}} {:.3}",
                    s.id.0,
                    m.id.0,
                    ms as f64 / 1000.0
                ));
            }
        }
    }
    family(
        "haven_peer_lag_entries",
        "gauge",
        "Entries a peer is behind the leader's log (leader's last index minus the peer's match index), reported by the leader.",
        lag,
    );
    family(
        "haven_peer_last_contact_seconds",
        "gauge",
        "Seconds since the member last heard from the peer.",
        contact_lines,
    );
    family(
        "haven_peer_messages_rejected_total",
        "counter",
        "Messages from the peer that the member dropped because no correct peer could have sent them.",
        rejected_lines,
    );
    let counter = |f: fn(&Status) -> u64| -> Vec<String> {
        answered
            .iter()
            .map(|s| format!("{{member=\"{}\"}} {}", s.id.0, f(s)))
            .collect()
    };
    family(
        "haven_proposals_total",
        "counter",
        "Write commands the member proposed while it led.",
        counter(|s| s.counters.proposals),
    );
    family(
        "haven_forwarded_total",
        "counter",
        "Requests the member forwarded to its leader.",
        counter(|s| s.counters.forwarded),
    );
    family(
        "haven_reads_total",
        "counter",
        "Linearizable reads the member served.",
        counter(|s| s.counters.reads),
    );
    family(
        "haven_entries_applied_total",
        "counter",
        "Log entries the member applied to its state machine.",
        counter(|s| s.counters.entries_applied),
    );
    family(
        "haven_wal_writes_total",
        "counter",
        "WAL batches written (group commits).",
        counter(|s| s.counters.wal_writes),
    );
    family(
        "haven_elections_started_total",
        "counter",
        "Elections the member started.",
        counter(|s| s.counters.elections_started),
    );
    family(
        "haven_transport_drops_total",
        "counter",
        "Peer messages the member's transport dropped.",
        counter(|s| s.counters.transport_drops),
    );
    family(
        "haven_snapshots_taken_total",
        "counter",
        "Snapshots the member wrote of its own state.",
        counter(|s| s.counters.snapshots_taken),
    );
    family(
        "haven_snapshots_sent_total",
        "counter",
        "Snapshot transfers to followers that completed.",
        counter(|s| s.counters.snapshots_sent),
    );
    family(
        "haven_snapshots_received_total",
        "counter",
        "Snapshots received in full from a leader.",
        counter(|s| s.counters.snapshots_received),
    );
    family(
        "haven_snapshots_installed_total",
        "counter",
        "Snapshots from a leader that replaced the member's state.",
        counter(|s| s.counters.snapshots_installed),
    );
    // The fsync histogram: bucket i counts calls below 2^i µs, so its upper bound is 2^i µs.
    let mut fsync = Vec::new();
    for s in &answered {
        let counts = &s.counters.fsync_latency.counts;
        let mut cumulative = 0u64;
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            let le = if i + 1 == counts.len() {
                "+Inf".to_string()
            } else {
                format!("{}", (1u64 << i) as f64 / 1e6)
            };
            fsync.push(format!(
                "_bucket{{member=\"{}\",le=\"{le}\"}} {cumulative}",
                s.id.0
            ));
        }
        if counts.is_empty() {
            fsync.push(format!("_bucket{{member=\"{}\",le=\"+Inf\"}} 0", s.id.0));
        }
        fsync.push(format!(
            "_sum{{member=\"{}\"}} {}",
            s.id.0,
            s.counters.fsync_latency_sum_micros as f64 / 1e6
        ));
        fsync.push(format!("_count{{member=\"{}\"}} {cumulative}", s.id.0));
    }
    family(
        "haven_wal_fsync_seconds",
        "histogram",
        "Duration of the WAL's fdatasync calls.",
        fsync,
    );
    out
}

/// Prometheus families of one member's transport counters: peer messages dropped, by peer,
/// lane and reason, and inbound connections refused, by reason. (`haven status --prometheus`
/// has only the total of the drops, from the status answer; these need the member itself.)
pub fn transport_metrics(
    member: NodeId,
    inbound: &TransportStats,
    peers: &[(NodeId, PeerStats)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP haven_peer_messages_dropped_total Peer messages the member's transport dropped, by peer, lane and reason."
    );
    let _ = writeln!(out, "# TYPE haven_peer_messages_dropped_total counter");
    for (peer, stats) in peers {
        for (lane, s) in [("control", &stats.control), ("bulk", &stats.bulk)] {
            for (reason, n) in [
                ("queue_full", s.dropped_queue_full),
                ("unreachable", s.dropped_unreachable),
                ("write_failed", s.dropped_write_failed),
                ("too_large", s.dropped_too_large),
            ] {
                let _ = writeln!(
                    out,
                    "haven_peer_messages_dropped_total{{member=\"{}\",peer=\"{}\",lane=\"{lane}\",reason=\"{reason}\"}} {n}",
                    member.0, peer.0
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP haven_connections_refused_total Inbound connections the member refused, by reason: a failed handshake (wrong secret or cluster id, timeout, garbage) or too many handshakes at once."
    );
    let _ = writeln!(out, "# TYPE haven_connections_refused_total counter");
    for (reason, n) in [
        ("handshake_failed", inbound.handshakes_refused),
        ("too_many_handshakes", inbound.connections_rejected),
    ] {
        let _ = writeln!(
            out,
            "haven_connections_refused_total{{member=\"{}\",reason=\"{reason}\"}} {n}",
            member.0
        );
    }
    for (name, help, n) in [
        (
            "haven_peer_connections",
            "Inbound peer connections open now.",
            inbound.peer_connections,
        ),
        (
            "haven_client_connections",
            "Remote-client connections open now.",
            inbound.client_connections,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name}{{member=\"{}\"}} {n}", member.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn prometheus_labels_escape() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn transport_families_label_every_drop_reason_and_refusal() {
        let lane = crate::net::LaneStats {
            dropped_queue_full: 3,
            dropped_unreachable: 5,
            ..Default::default()
        };
        let peers = [(
            NodeId(2),
            PeerStats {
                addr: "127.0.0.1:1".parse().unwrap(),
                control: lane,
                bulk: Default::default(),
            },
        )];
        let inbound = TransportStats {
            handshakes_refused: 7,
            ..Default::default()
        };
        let text = transport_metrics(NodeId(1), &inbound, &peers);
        assert!(text.contains(
            "haven_peer_messages_dropped_total{member=\"1\",peer=\"2\",lane=\"control\",reason=\"queue_full\"} 3\n"
        ));
        assert!(text.contains(
            "haven_peer_messages_dropped_total{member=\"1\",peer=\"2\",lane=\"control\",reason=\"unreachable\"} 5\n"
        ));
        assert!(text.contains(
            "haven_connections_refused_total{member=\"1\",reason=\"handshake_failed\"} 7\n"
        ));
        assert!(text.contains("# TYPE haven_connections_refused_total counter\n"));
    }
}
