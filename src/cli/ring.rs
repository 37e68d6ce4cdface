//! `haven ring create | join | leave | weight | show | owners | moves`: the replicated
//! partition maps, over the remote [`haven::Client`]. (`haven bench ring` measures the
//! placement itself, in `bench/ring.rs`.)
//!
//! Exit codes are [`super::exit`]'s: 1 for a map that does not exist (`show`) or moves that
//! are no longer kept (`moves`), 2 for bad input, including an unknown map or owner in a change.

use super::exit::{fail, Outcome, EXIT_NO};
use super::kv::{from_hex, ClusterArgs};
use haven::sm::placement::{
    LoadCap, Strategy, DEFAULT_PARTITIONS, DEFAULT_REPLICAS, DEFAULT_VNODES_PER_WEIGHT,
};
use haven::sm::{MapChange, MapMoves, PartitionMap};
use haven::{Error, Result};
use std::io::Write;

/// `haven ring ...`.
#[derive(clap::Args, Debug)]
pub struct RingArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RingCommand,
}

/// The `haven ring` commands.
#[derive(clap::Subcommand, Debug)]
pub enum RingCommand {
    /// Create an empty map (prints its epoch, 1).
    Create(CreateArgs),
    /// An owner joins a map (prints the new epoch and what moved).
    Join(OwnerArgs),
    /// An owner leaves a map (prints the new epoch and what moved).
    Leave(LeaveArgs),
    /// Change an owner's weight (prints the new epoch and what moved).
    Weight(OwnerArgs),
    /// The map's parameters and each owner's load: primaries, replicas, share vs fair share
    /// (exit 1 if there is no such map).
    Show(ShowArgs),
    /// The partition of KEY and its owners, primary first.
    Owners(OwnersArgs),
    /// The slots moved after an epoch, one `EPOCH PARTITION SLOT FROM TO` line each (`-`: none);
    /// exit 1 if those epochs are no longer kept.
    Moves(MovesArgs),
}

/// `haven ring create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The map's name.
    pub name: String,
    /// Partitions (fixed for the map's life).
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Owners per partition (the first is the primary).
    #[arg(long, default_value_t = DEFAULT_REPLICAS)]
    pub replicas: u32,
    /// `rendezvous` (weighted highest random weight) or `ring` (virtual nodes).
    #[arg(long, default_value = "rendezvous")]
    pub strategy: String,
    /// Virtual nodes per unit of weight (`ring` only).
    #[arg(long, default_value_t = DEFAULT_VNODES_PER_WEIGHT)]
    pub vnodes: u32,
    /// The load cap c (no owner above ceil(c x its fair share)), e.g. 1.02, or `none`.
    #[arg(long, default_value = "1.02")]
    pub load_cap: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `haven ring join` and `haven ring weight`.
#[derive(clap::Args, Debug)]
pub struct OwnerArgs {
    /// The map.
    pub name: String,
    /// The owner's id.
    pub owner: String,
    /// Its weight (its share is proportional to it).
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `haven ring leave`.
#[derive(clap::Args, Debug)]
pub struct LeaveArgs {
    /// The map.
    pub name: String,
    /// The owner's id.
    pub owner: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `haven ring show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The map.
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `haven ring owners`.
#[derive(clap::Args, Debug)]
pub struct OwnersArgs {
    /// The map.
    pub name: String,
    /// The key.
    pub key: String,
    /// The key is hex.
    #[arg(long)]
    pub hex: bool,
    /// Read through the leader (reflects every acknowledged change) instead of the answering
    /// member's applied copy.
    #[arg(long)]
    pub linearizable: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `haven ring moves`.
#[derive(clap::Args, Debug)]
pub struct MovesArgs {
    /// The map.
    pub name: String,
    /// Print the moves of the epochs after this one.
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Parse `--load-cap`: `none`, or a factor >= 1 with at most three decimals.
pub fn parse_load_cap(text: &str) -> Result<LoadCap> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(LoadCap::Unbounded);
    }
    let bad = || {
        Error::InvalidArgument(format!(
            "--load-cap {text:?}: expected `none` or a factor such as 1.02"
        ))
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let fraction: u32 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
    let per_mille = whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(bad)?;
    Ok(LoadCap::PerMille(per_mille))
}

fn parse_strategy(name: &str, vnodes: u32) -> Result<Strategy> {
    match name {
        "rendezvous" => Ok(Strategy::Rendezvous),
        "ring" => Ok(Strategy::Ring {
            vnodes_per_weight: vnodes,
        }),
        other => Err(Error::InvalidArgument(format!(
            "--strategy {other:?}: expected `rendezvous` or `ring`"
        ))),
    }
}

fn print(text: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| fail(Error::io("writing to stdout", e)))
}

fn print_change(change: MapChange) -> Outcome {
    print(&format!(
        "epoch {} slots_moved {} replica_moves {}\n",
        change.epoch, change.slots_moved, change.replica_moves
    ))
}

/// Run a `haven ring` command.
pub fn run(args: &RingArgs) -> Outcome {
    match &args.command {
        RingCommand::Create(a) => {
            let strategy = parse_strategy(&a.strategy, a.vnodes).map_err(fail)?;
            let load_cap = parse_load_cap(&a.load_cap).map_err(fail)?;
            let client = a.cluster.connect().map_err(fail)?;
            let change = client
                .create_map(&a.name, a.partitions, a.replicas, strategy, load_cap)
                .map_err(fail)?;
            print_change(change)
        }
        RingCommand::Join(a) => {
            let client = a.cluster.connect().map_err(fail)?;
            print_change(client.join(&a.name, &a.owner, a.weight).map_err(fail)?)
        }
        RingCommand::Leave(a) => {
            let client = a.cluster.connect().map_err(fail)?;
            print_change(client.leave(&a.name, &a.owner).map_err(fail)?)
        }
        RingCommand::Weight(a) => {
            let client = a.cluster.connect().map_err(fail)?;
            print_change(
                client
                    .set_weight(&a.name, &a.owner, a.weight)
                    .map_err(fail)?,
            )
        }
        RingCommand::Show(a) => {
            let client = a.cluster.connect().map_err(fail)?;
            match client.map(&a.name).map_err(fail)? {
                Some(map) => print(&show(&a.name, &map)),
                None => Err((EXIT_NO, format!("there is no map named {:?}", a.name))),
            }
        }
        RingCommand::Owners(a) => {
            let key = if a.hex {
                from_hex(&a.key).map_err(fail)?
            } else {
                a.key.as_bytes().to_vec()
            };
            let client = a.cluster.connect().map_err(fail)?;
            let owners = if a.linearizable {
                client.owners_linearizable(&a.name, &key)
            } else {
                client.owners(&a.name, &key)
            }
            .map_err(fail)?;
            let ids: Vec<&str> = owners.owners.iter().map(|o| o.0.as_str()).collect();
            print(&format!(
                "epoch {} partition {} owners {}\n",
                owners.epoch,
                owners.partition,
                ids.join(",")
            ))
        }
        RingCommand::Moves(a) => {
            let client = a.cluster.connect().map_err(fail)?;
            let mut since = a.since;
            let mut text = String::new();
            loop {
                match client.moves(&a.name, since).map_err(fail)? {
                    MapMoves::Compacted {
                        current_epoch,
                        oldest_since,
                    } => {
                        return Err((
                            EXIT_NO,
                            format!(
                                "the moves after epoch {since} are no longer kept (map at epoch \
                                 {current_epoch}; the oldest --since answered is {oldest_since}): \
                                 use `haven ring show`"
                            ),
                        ))
                    }
                    MapMoves::Moves {
                        current_epoch,
                        epochs,
                    } => {
                        for epoch in &epochs {
                            for m in epoch.moves().map_err(fail)? {
                                let name = |o: &Option<haven::sm::placement::OwnerId>| match o {
                                    Some(id) => id.0.clone(),
                                    None => "-".into(),
                                };
                                text.push_str(&format!(
                                    "{} {} {} {} {}\n",
                                    epoch.epoch,
                                    m.partition,
                                    m.slot,
                                    name(&m.from),
                                    name(&m.to)
                                ));
                            }
                        }
                        match epochs.last() {
                            Some(last) if last.epoch < current_epoch => since = last.epoch,
                            _ => break,
                        }
                    }
                }
            }
            print(&text)
        }
    }
}

/// The `show` table: a header with the parameters, then per owner its weight, primaries,
/// replicas, its share of the slots and its weighted fair share (both in percent; the fair
/// share is the owner's part of the total weight, which a capped map meets within its cap
/// unless the owner is so heavy that it would need two slots of one partition).
pub fn show(name: &str, map: &PartitionMap) -> String {
    let params = map.table.params();
    let strategy = match params.strategy {
        Strategy::Rendezvous => "rendezvous".to_string(),
        Strategy::Ring { vnodes_per_weight } => format!("ring ({vnodes_per_weight} vnodes/weight)"),
    };
    let cap = match params.load_cap {
        LoadCap::Unbounded => "none".to_string(),
        LoadCap::PerMille(c) => format!("{}.{:03}", c / 1000, c % 1000),
    };
    let owners = map.table.owners();
    let mut out = format!(
        "map {name} epoch {} partitions {} replicas {} (width {}) strategy {strategy} load_cap {cap} owners {}\n",
        map.epoch,
        params.partitions,
        params.replicas,
        map.table.width(),
        owners.len()
    );
    if owners.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "{:<24} {:>7} {:>10} {:>9} {:>8} {:>8} {:>7}\n",
        "OWNER", "WEIGHT", "PRIMARIES", "REPLICAS", "SHARE%", "FAIR%", "RATIO"
    ));
    let total_weight: u64 = owners.iter().map(|o| u64::from(o.weight)).sum();
    let total_slots = u64::from(params.partitions) * map.table.width() as u64;
    for (owner, load) in owners.iter().zip(map.table.loads()) {
        let share = 100.0 * f64::from(load.replicas) / total_slots.max(1) as f64;
        let fair = 100.0 * f64::from(owner.weight) / total_weight as f64;
        out.push_str(&format!(
            "{:<24} {:>7} {:>10} {:>9} {:>8.2} {:>8.2} {:>7.3}\n",
            owner.id.0,
            owner.weight,
            load.primaries,
            load.replicas,
            share,
            fair,
            share / fair
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven::ErrorCode;

    #[test]
    fn load_caps_parse_exactly_or_are_refused() {
        assert_eq!(parse_load_cap("1.02").unwrap(), LoadCap::PerMille(1020));
        assert_eq!(parse_load_cap("1").unwrap(), LoadCap::PerMille(1000));
        assert_eq!(parse_load_cap("2.5").unwrap(), LoadCap::PerMille(2500));
        assert_eq!(parse_load_cap("none").unwrap(), LoadCap::Unbounded);
        for bad in ["", "1.0205", "x", "-1", ".5", "1e3", "99999999"] {
            assert_eq!(
                parse_load_cap(bad).unwrap_err().code(),
                ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
    }
}
