//! `haven member list | add | promote | remove` and `haven leader transfer`: membership and
//! leadership over the remote client. Each change returns once it is committed (a transfer:
//! once the new leader leads); each is idempotent, so a retry after a timeout is safe.

use super::exit::{fail, Outcome, EXIT_USAGE};
use super::kv::ClusterArgs;
use haven::client::NodeRole;
use haven::observe::json_string;
use haven::{Client, NodeId};

/// `haven member list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print one JSON object: `{"leader": ID|null, "members": [{"id", "address", "voter"}]}`.
    #[arg(long)]
    pub json: bool,
}

/// `haven member add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// The new member's id (not 0, not in use).
    pub id: u64,
    /// Where the other members reach it (HOST:PORT: its `haven serve --listen`).
    pub address: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// A command naming one member.
#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The member's id.
    pub id: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What `haven member` does.
#[derive(clap::Subcommand, Debug)]
pub enum MemberCommand {
    /// One line per member of the configuration in force: id, address, voter or learner.
    List(ListArgs),
    /// Add a learner (it receives the log but does not vote). Start it first with
    /// `haven serve --join`; promote it once `haven status` shows it caught up.
    Add(AddArgs),
    /// Make a learner a voter.
    Promote(IdArgs),
    /// Remove a member (voter or learner); stop its process afterwards.
    Remove(IdArgs),
}

/// What `haven leader` does.
#[derive(clap::Subcommand, Debug)]
pub enum LeaderCommand {
    /// Hand leadership to a voter; returns once it leads.
    Transfer(IdArgs),
}

fn member_id(id: u64) -> Result<NodeId, (i32, String)> {
    if id == 0 {
        return Err((EXIT_USAGE, "member id 0 is not a valid id".into()));
    }
    Ok(NodeId(id))
}

fn connect(cluster: &ClusterArgs) -> Result<Client, (i32, String)> {
    cluster.connect().map_err(fail)
}

/// Run `haven member ...`.
pub fn run(command: &MemberCommand) -> Outcome {
    match command {
        MemberCommand::List(args) => list(args),
        MemberCommand::Add(args) => {
            let id = member_id(args.id)?;
            connect(&args.cluster)?
                .add_learner(id, &args.address)
                .map_err(fail)?;
            println!("member {} added as a learner at {}", id.0, args.address);
            Ok(())
        }
        MemberCommand::Promote(args) => {
            let id = member_id(args.id)?;
            connect(&args.cluster)?.promote_learner(id).map_err(fail)?;
            println!("member {} is a voter", id.0);
            Ok(())
        }
        MemberCommand::Remove(args) => {
            let id = member_id(args.id)?;
            connect(&args.cluster)?.remove_member(id).map_err(fail)?;
            println!("member {} removed", id.0);
            Ok(())
        }
    }
}

/// Run `haven leader ...`.
pub fn run_leader(command: &LeaderCommand) -> Outcome {
    match command {
        LeaderCommand::Transfer(args) => {
            let id = member_id(args.id)?;
            connect(&args.cluster)?
                .transfer_leadership(id)
                .map_err(fail)?;
            println!("member {} leads", id.0);
            Ok(())
        }
    }
}

fn list(args: &ListArgs) -> Outcome {
    // The client connects to the leader when one is known, so this is the configuration the
    // leader has in force (a follower's may lag by a change).
    let status = connect(&args.cluster)?.status().map_err(fail)?;
    let leader = status
        .leader
        .filter(|_| status.role != NodeRole::Stopped)
        .map(|l| l.0);
    if args.json {
        let members: Vec<String> = status
            .members
            .iter()
            .map(|m| {
                format!(
                    "{{\"id\":{},\"address\":{},\"voter\":{}}}",
                    m.id.0,
                    json_string(&m.address),
                    m.voter
                )
            })
            .collect();
        println!(
            "{{\"leader\":{},\"members\":[{}]}}",
            leader.map_or_else(|| "null".into(), |l| l.to_string()),
            members.join(",")
        );
        return Ok(());
    }
    let width = status
        .members
        .iter()
        .map(|m| m.address.len())
        .max()
        .unwrap_or(0)
        .max("ADDRESS".len());
    println!("{:>4}  {:<width$}  KIND", "ID", "ADDRESS");
    for m in &status.members {
        let kind = if m.voter { "voter" } else { "learner" };
        let mark = if Some(m.id.0) == leader {
            " (leader)"
        } else {
            ""
        };
        println!("{:>4}  {:<width$}  {kind}{mark}", m.id.0, m.address);
    }
    Ok(())
}
