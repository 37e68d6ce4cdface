//! `haven bench ring`: placement quality and speed of the partition map (issue 10), on this
//! machine, without a cluster: for each strategy (rendezvous, ring with 160 virtual nodes per
//! weight) and owner count, with the default load cap, P = 4096 and R = 3 unless asked
//! otherwise, one JSON object per line:
//!
//! - `max_over_mean`: the most replicas any owner holds over the mean;
//! - `moved_over_minimum`: partition-replica moves of one join, then one leave, over the minimum
//!   (the arriving or departing owner's fair share); the larger of the two;
//! - `lookup_ns`: `Table::lookup` (hash the key, find its partition's owners) on a prebuilt
//!   table, median per key over batches of 1000, a million keys in all;
//! - `rebuild_ms`: `Table::apply` of one join, median of 5;
//! - `client_owners_ns` and `client_key_owners_ns`: the same map created through a one-member
//!   cluster in this process (a directory under the current one, removed after), then
//!   `Client::owners(name, key)` (which copies the owner ids into an `Owners`) and
//!   `Client::key_owners(name, key)` (which borrows them from the applied table), median per
//!   call over batches of 1000, a million keys each.

use crate::cli::children::{free_addrs, WorkDir};
use haven::net::ClusterSecret;
use haven::node::{Config, Node};
use haven::sm::placement::{
    compute, replica_moves, Change, LoadCap, MapParams, Owner, Strategy, Table, DEFAULT_PARTITIONS,
    DEFAULT_REPLICAS, DEFAULT_VNODES_PER_WEIGHT,
};
use haven::{Client, ClusterId, Error, NodeId, Result};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Options of `haven bench ring`.
#[derive(clap::Args, Debug)]
pub struct RingBenchArgs {
    /// Print JSON (one object per strategy and owner count) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Owner counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    pub owners: Vec<usize>,
    /// Partitions of the map.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Replicas per partition.
    #[arg(long, default_value_t = DEFAULT_REPLICAS)]
    pub replicas: u32,
}

/// Keys looked up per timed batch.
const BATCH_KEYS: usize = 1000;
/// Batches timed (a million keys).
const BATCHES: usize = 1000;
/// Rebuilds timed.
const REBUILDS: usize = 5;

/// One measured configuration.
struct Row {
    strategy: &'static str,
    owners: usize,
    partitions: u32,
    replicas: u32,
    max_over_mean: f64,
    moved_over_minimum: f64,
    lookup_ns: f64,
    rebuild_ms: f64,
    client_owners_ns: f64,
    client_key_owners_ns: f64,
}

impl Row {
    fn json(&self) -> String {
        format!(
            "{{\"strategy\":\"{}\",\"owners\":{},\"partitions\":{},\"replicas\":{},\
             \"max_over_mean\":{:.4},\"moved_over_minimum\":{:.4},\"lookup_ns\":{:.1},\
             \"rebuild_ms\":{:.2},\"client_owners_ns\":{:.1},\"client_key_owners_ns\":{:.1}}}",
            self.strategy,
            self.owners,
            self.partitions,
            self.replicas,
            self.max_over_mean,
            self.moved_over_minimum,
            self.lookup_ns,
            self.rebuild_ms,
            self.client_owners_ns,
            self.client_key_owners_ns
        )
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The most replicas an owner holds over the mean.
fn max_over_mean(table: &Table) -> f64 {
    let loads = table.loads();
    let total: u64 = loads.iter().map(|l| u64::from(l.replicas)).sum();
    let max = loads.iter().map(|l| l.replicas).max().unwrap_or(0);
    f64::from(max) / (total as f64 / loads.len().max(1) as f64)
}

/// An owner's fair share of all replica slots in `table`.
fn fair_share(table: &Table, id: &str) -> f64 {
    let weights: u64 = table.owners().iter().map(|o| u64::from(o.weight)).sum();
    let weight = table
        .owners()
        .iter()
        .find(|o| o.id.0 == id)
        .map_or(0, |o| o.weight);
    let slots = f64::from(table.params().partitions) * table.width() as f64;
    slots * f64::from(weight) / weights.max(1) as f64
}

/// A one-member cluster in this process, for timing the in-process client.
struct Member {
    node: Node,
    _dir: WorkDir,
}

impl Member {
    fn start() -> Result<Member> {
        let dir = WorkDir::create("haven-bench-ring")?;
        let addr = free_addrs(1)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::InvalidArgument("no free port".into()))?;
        let members = BTreeMap::from([(NodeId(1), addr.to_string())]);
        let secret = ClusterSecret::new(b"haven bench ring secret".to_vec())?;
        let config = Config::new(
            NodeId(1),
            ClusterId(1),
            dir.path().join("n1"),
            addr,
            members,
            secret,
        );
        let node = Node::open(config)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !node.status().is_ok_and(|s| s.leader == Some(node.id())) {
            if Instant::now() > deadline {
                return Err(Error::Timeout(
                    "the bench member elected no leader in 20 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Member { node, _dir: dir })
    }
}

/// Median nanoseconds per call of `call` over `keys`, in batches of [`BATCH_KEYS`].
fn per_call_ns(keys: &[Vec<u8>], mut call: impl FnMut(&[u8]) -> Result<()>) -> Result<f64> {
    let mut per_key_ns = Vec::with_capacity(BATCHES);
    for batch in keys.chunks(BATCH_KEYS) {
        let started = Instant::now();
        for key in batch {
            call(black_box(key))?;
        }
        per_key_ns.push(started.elapsed().as_nanos() as f64 / batch.len() as f64);
    }
    Ok(median(per_key_ns))
}

/// `Client::owners` and `Client::key_owners` on the member's applied copy of a map built like
/// `list` under `params`.
fn measure_client(
    client: &Client,
    params: &MapParams,
    list: &[Owner],
    keys: &[Vec<u8>],
) -> Result<(f64, f64)> {
    let name = format!("bench-{}-{}", params.strategy.name(), list.len());
    client.create_map(
        &name,
        params.partitions,
        params.replicas,
        params.strategy,
        params.load_cap,
    )?;
    for owner in list {
        client.join(&name, &owner.id.0, owner.weight)?;
    }
    let owners_ns = per_call_ns(keys, |key| {
        black_box(client.owners(&name, key)?);
        Ok(())
    })?;
    let key_owners_ns = per_call_ns(keys, |key| {
        let answer = client.key_owners(&name, key)?;
        black_box(answer.primary());
        Ok(())
    })?;
    Ok((owners_ns, key_owners_ns))
}

fn measure(
    client: &Client,
    strategy: Strategy,
    owners: usize,
    partitions: u32,
    replicas: u32,
) -> Result<Row> {
    let params = MapParams {
        partitions,
        replicas,
        strategy,
        load_cap: LoadCap::default(),
    };
    let list: Vec<Owner> = (0..owners)
        .map(|i| Owner::new(format!("node-{i}"), 1))
        .collect();
    let table = compute(&list, &params)?;
    let join = Change::Join(Owner::new("node-joining", 1));
    let joined = table.apply(&join)?;
    let join_ratio = replica_moves(&table, &joined)? as f64 / fair_share(&joined, "node-joining");
    let leaver = "node-0";
    let left = joined.apply(&Change::Leave(leaver.into()))?;
    let leave_ratio = replica_moves(&joined, &left)? as f64 / fair_share(&joined, leaver);

    let keys: Vec<Vec<u8>> = (0..BATCH_KEYS * BATCHES)
        .map(|i| format!("user:{i}").into_bytes())
        .collect();
    let lookup_ns = per_call_ns(&keys, |key| {
        black_box(table.lookup(key));
        Ok(())
    })?;
    let rebuilds = (0..REBUILDS)
        .map(|_| {
            let started = Instant::now();
            let rebuilt = table.apply(&join);
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            black_box(rebuilt).map(|_| elapsed)
        })
        .collect::<Result<Vec<f64>>>()?;
    let (client_owners_ns, client_key_owners_ns) = measure_client(client, &params, &list, &keys)?;
    Ok(Row {
        strategy: strategy.name(),
        owners,
        partitions,
        replicas,
        max_over_mean: max_over_mean(&table),
        moved_over_minimum: join_ratio.max(leave_ratio),
        lookup_ns,
        rebuild_ms: median(rebuilds),
        client_owners_ns,
        client_key_owners_ns,
    })
}

/// Measure every strategy at every owner count; one JSON object per line (`json`) or a table.
pub fn bench_report(
    owner_counts: &[usize],
    partitions: u32,
    replicas: u32,
    json: bool,
) -> Result<String> {
    let strategies = [
        Strategy::Rendezvous,
        Strategy::Ring {
            vnodes_per_weight: DEFAULT_VNODES_PER_WEIGHT,
        },
    ];
    let member = Member::start()?;
    let client = member.node.client();
    let mut out = String::new();
    if !json {
        out.push_str("strategy    owners  partitions  replicas  max/mean  moved/min  lookup_ns  rebuild_ms  owners_ns  key_owners_ns\n");
    }
    for strategy in strategies {
        for &owners in owner_counts {
            let row = measure(&client, strategy, owners, partitions, replicas)?;
            if json {
                out.push_str(&row.json());
            } else {
                out.push_str(&format!(
                    "{:<10}  {:>6}  {:>10}  {:>8}  {:>8.4}  {:>9.4}  {:>9.1}  {:>10.2}  {:>9.1}  {:>13.1}",
                    row.strategy,
                    row.owners,
                    row.partitions,
                    row.replicas,
                    row.max_over_mean,
                    row.moved_over_minimum,
                    row.lookup_ns,
                    row.rebuild_ms,
                    row.client_owners_ns,
                    row.client_key_owners_ns
                ));
            }
            out.push('\n');
        }
    }
    let _ = member.node.shutdown();
    Ok(out)
}

/// `haven bench ring`.
pub fn run(args: &RingBenchArgs) -> Result<()> {
    print!(
        "{}",
        bench_report(&args.owners, args.partitions, args.replicas, args.json)?
    );
    Ok(())
}
