//! `haven status`: one row per member of the cluster, each from that member's own answer,
//! completed with the leader's view (replication lag, last contact).
//!
//! Every listed address is asked at once (one connection each, pinned to that member); the
//! configuration one of them reports (the leader's when it answered) names the members, and
//! members it names that were not listed are asked too. A member that cannot be reached gets a
//! row saying so, with what the leader knows of it.

use super::kv::ClusterArgs;
use haven::client::{MemberStatus, NodeRole, Status};
use haven::net::ClusterSecret;
use haven::{Client, ClientOptions, ClusterId, Error, ErrorCode, NodeId, Result};
use std::fmt::Write as _;
use std::time::Duration;

/// `haven status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print the same as one JSON object.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print Prometheus text-format metrics of every reachable member.
    #[arg(long)]
    pub prometheus: bool,
}

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

/// The whole cluster as `haven status` shows it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// Rows in member id order (unknown ids last).
    pub rows: Vec<MemberRow>,
    /// The leader's own answer, if the leader answered.
    pub leader: Option<Status>,
}

impl ClusterView {
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
}

/// Ask one member for its status over a connection pinned to it.
fn ask(
    address: &str,
    cluster_id: ClusterId,
    secret: &ClusterSecret,
    base: &ClientOptions,
) -> Result<Status> {
    let timeout = base.request_timeout;
    let options = ClientOptions {
        request_timeout: timeout,
        connect_timeout: timeout.min(Duration::from_secs(1)),
        prefer_leader: false,
        ..base.clone()
    };
    Client::connect(&[address], cluster_id, secret, options)?.status()
}

/// Ask every address at once; answers in the same order.
fn ask_all(
    addresses: &[String],
    cluster_id: ClusterId,
    secret: &ClusterSecret,
    options: &ClientOptions,
) -> Vec<Result<Status>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = addresses
            .iter()
            .map(|a| scope.spawn(move || ask(a, cluster_id, secret, options)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Fatal("status thread panicked".into())))
            })
            .collect()
    })
}

fn same_address(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (haven::net::resolve_address(a), haven::net::resolve_address(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Gather every member's status. Fails only when no member answered (with the error of the
/// first address, so a wrong secret reads as `Auth`, a dead cluster as `Unavailable`).
pub fn gather(
    addresses: &[String],
    cluster_id: ClusterId,
    secret: &ClusterSecret,
    timeout: Duration,
) -> Result<ClusterView> {
    let options = ClientOptions {
        request_timeout: timeout,
        ..ClientOptions::default()
    };
    gather_with(addresses, cluster_id, secret, &options)
}

/// [`gather`] with the client's options (TLS, and `request_timeout` as each member's deadline).
pub fn gather_with(
    addresses: &[String],
    cluster_id: ClusterId,
    secret: &ClusterSecret,
    options: &ClientOptions,
) -> Result<ClusterView> {
    let mut asked: Vec<(String, Result<Status>)> = addresses
        .iter()
        .cloned()
        .zip(ask_all(addresses, cluster_id, secret, options))
        .collect();
    // The configuration: the leader's, else that of the answer with the highest term.
    let config_source = |asked: &[(String, Result<Status>)]| -> Option<Status> {
        let answers = asked.iter().filter_map(|(_, r)| r.as_ref().ok());
        answers
            .clone()
            .find(|s| s.role == NodeRole::Leader)
            .or_else(|| answers.max_by_key(|s| s.term))
            .cloned()
    };
    if let Some(config) = config_source(&asked) {
        let missing: Vec<String> = config
            .members
            .iter()
            .filter(|m| {
                !asked.iter().any(|(a, r)| {
                    r.as_ref().is_ok_and(|s| s.id == m.id) || same_address(a, &m.address)
                })
            })
            .map(|m| m.address.clone())
            .collect();
        let more = ask_all(&missing, cluster_id, secret, options);
        asked.extend(missing.into_iter().zip(more));
    }
    if asked.iter().all(|(_, r)| r.is_err()) {
        // Prefer the most telling error: a refused secret over an unreachable member.
        let mut errors: Vec<Error> = asked.into_iter().filter_map(|(_, r)| r.err()).collect();
        let index = errors
            .iter()
            .position(|e| e.code() == ErrorCode::Auth)
            .unwrap_or(0);
        return Err(errors.swap_remove(index));
    }
    let config = config_source(&asked);
    let leader = asked
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|s| s.role == NodeRole::Leader)
        .max_by_key(|s| s.term)
        .cloned();
    let mut rows = Vec::new();
    let members: Vec<MemberStatus> = config.map(|c| c.members).unwrap_or_default();
    for m in &members {
        let own = asked
            .iter()
            .find_map(|(_, r)| r.as_ref().ok().filter(|s| s.id == m.id).cloned())
            .ok_or_else(|| {
                asked
                    .iter()
                    .find(|(a, _)| same_address(a, &m.address))
                    .and_then(|(_, r)| r.as_ref().err().map(ToString::to_string))
                    .unwrap_or_else(|| "not asked".into())
            });
        rows.push(MemberRow {
            id: Some(m.id),
            address: m.address.clone(),
            voter: m.voter,
            own,
            seen_by_leader: leader
                .as_ref()
                .and_then(|l| l.members.iter().find(|x| x.id == m.id).cloned()),
        });
    }
    // Listed addresses the configuration does not name (another cluster's member, a typo).
    for (address, result) in &asked {
        let named = members.iter().any(|m| {
            same_address(address, &m.address) || result.as_ref().is_ok_and(|s| s.id == m.id)
        });
        if !named {
            rows.push(MemberRow {
                id: result.as_ref().ok().map(|s| s.id),
                address: address.clone(),
                voter: false,
                own: result.as_ref().cloned().map_err(ToString::to_string),
                seen_by_leader: None,
            });
        }
    }
    rows.sort_by_key(|r| r.id.map_or(u64::MAX, |id| id.0));
    Ok(ClusterView { rows, leader })
}

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

/// The view as one JSON object (the table's columns, plus the raw fields behind them).
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
        json_opt(view.leader.as_ref().map(|l| l.id.0)),
        json_opt(view.leader.as_ref().map(|l| l.term.0)),
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

/// Run `haven status`; prints the table (or JSON, or metrics).
pub fn run(args: &StatusArgs) -> Result<()> {
    let addresses = args.cluster.addresses()?;
    let secret = args.cluster.secret()?;
    let options = args.cluster.options()?;
    let view = gather_with(
        &addresses,
        ClusterId(args.cluster.cluster_id),
        &secret,
        &options,
    )?;
    let text = if args.json {
        json(&view) + "\n"
    } else if args.prometheus {
        prometheus(&view)
    } else {
        table(&view)
    };
    print!("{text}");
    Ok(())
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
}
