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
pub use haven::observe::{json, prometheus, table, ClusterView, MemberRow};
use haven::{Client, ClientOptions, ClusterId, Error, ErrorCode, Result};
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
