//! `haven snapshot save | verify | restore`: backups. `save` streams a fresh snapshot from a
//! member into a file; `verify` checks a file completely; `restore` prepares the data
//! directory of one member of a NEW cluster from a file (run it once per member).

use super::exit::{fail, Outcome};
use super::kv::{to_hex, ClusterArgs};
use super::serve::parse_peers;
use haven::node::{restore_backup, verify_backup, BackupInfo};
use haven::{ClusterId, NodeId};
use std::path::PathBuf;

/// `haven snapshot save`.
#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    /// Where to write the backup (written to FILE.tmp, fsynced, verified, then renamed).
    pub file: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `haven snapshot verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The backup file.
    pub file: PathBuf,
}

/// `haven snapshot restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The new member's data directory (must be missing or empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new member's id.
    #[arg(long)]
    pub id: u64,
    /// Every member of the NEW cluster as ID=HOST:PORT, comma separated, this one included:
    /// the same list for every member, and for their `haven serve --peers`.
    #[arg(long)]
    pub peers: String,
    /// The new cluster's id. By default one is derived from the backup and --peers (the same
    /// for every member restored from this file into this list, never the old cluster's).
    #[arg(long)]
    pub cluster_id: Option<u64>,
}

/// What `haven snapshot` does.
#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a backup: a fresh snapshot from a member, holding every write acknowledged before
    /// the command started, checksummed, with its index, term and membership.
    Save(SaveArgs),
    /// Check a backup file completely and print what it holds.
    Verify(VerifyArgs),
    /// Prepare the data directory of one member of a NEW cluster from a backup.
    Restore(RestoreArgs),
}

/// `VERB FILE: index I term T, N bytes, sha256 H; members` (what save and verify print).
fn describe(verb: &str, file: &std::path::Path, backup: &BackupInfo) -> String {
    format!(
        "{verb} {}: index {} term {}, {} bytes, sha256 {}; {}",
        file.display(),
        backup.index.0,
        backup.term.0,
        backup.size,
        to_hex(&backup.sha256),
        members(backup)
    )
}

fn members(backup: &BackupInfo) -> String {
    let m = &backup.membership;
    let list = |map: &std::collections::BTreeMap<NodeId, String>| {
        map.iter()
            .map(|(id, a)| format!("{}={a}", id.0))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut text = format!("voters {}", list(&m.voters));
    if !m.learners.is_empty() {
        text.push_str(&format!(", learners {}", list(&m.learners)));
    }
    text
}

/// Run `haven snapshot ...`.
pub fn run(command: &SnapshotCommand) -> Outcome {
    match command {
        SnapshotCommand::Save(args) => {
            let client = args.cluster.connect().map_err(fail)?;
            let backup = client.save_snapshot(&args.file).map_err(fail)?;
            println!("{}", describe("saved", &args.file, &backup));
            Ok(())
        }
        SnapshotCommand::Verify(args) => {
            let backup = verify_backup(&args.file).map_err(fail)?;
            println!("{}", describe("ok", &args.file, &backup));
            Ok(())
        }
        SnapshotCommand::Restore(args) => {
            let peers = parse_peers(&args.peers).map_err(fail)?;
            let restored = restore_backup(
                &args.file,
                &args.data_dir,
                NodeId(args.id),
                args.cluster_id.map(ClusterId),
                &peers,
            )
            .map_err(fail)?;
            println!(
                "member {} of NEW cluster {} prepared in {} from index {} term {}; start it with: \
                 haven serve --id {} --cluster-id {} --data-dir {} --peers {} --listen ... \
                 --secret-file ...",
                args.id,
                restored.cluster_id.0,
                args.data_dir.display(),
                restored.backup.index.0,
                restored.backup.term.0,
                args.id,
                restored.cluster_id.0,
                args.data_dir.display(),
                args.peers
            );
            Ok(())
        }
    }
}
