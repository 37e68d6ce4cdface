//! Properties of partition-map placement (`haven::sm::placement`, issue 10): determinism,
//! balance, minimal movement and weights, over random join / leave / weight sequences.
//!
//! `HAVEN_RING_SEEDS` (count, default 40) and `HAVEN_RING_SEED_START` (first seed, default 0)
//! choose the random cases; a failure names its seed, and `HAVEN_RING_SEEDS=1
//! HAVEN_RING_SEED_START=<seed>` replays it. `cargo test --release --test placement -- --nocapture`
//! also prints the ring's measured spread.

use haven::sm::placement::{
    compute, compute_at, diff, replica_moves, xxh64, Change, LoadCap, MapParams, Owner, OwnerId,
    PlacementVersion, Strategy, Table,
};
use std::collections::BTreeSet;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seeds to run: `HAVEN_RING_SEEDS` of them from `HAVEN_RING_SEED_START`.
fn seeds() -> std::ops::Range<u64> {
    let start = env_u64("HAVEN_RING_SEED_START", 0);
    start..start + env_u64("HAVEN_RING_SEEDS", 40)
}

/// Run `case` for every seed, collecting failures with their seed.
fn for_seeds(name: &str, case: impl Fn(u64) -> Result<(), String>) {
    let mut failures = Vec::new();
    let seeds = seeds();
    let count = seeds.end - seeds.start;
    for seed in seeds {
        if let Err(why) = case(seed) {
            eprintln!("{name}: seed {seed} failed: {why}");
            failures.push(format!("seed {seed}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {count} seeds failed (replay: HAVEN_RING_SEEDS=1 HAVEN_RING_SEED_START=<seed>):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// splitmix64: the tests' own deterministic random source.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn equal_owners(count: usize) -> Vec<Owner> {
    (0..count)
        .map(|i| Owner::new(format!("node-{i}"), 1))
        .collect()
}

fn params(replicas: u32, strategy: Strategy, load_cap: LoadCap) -> MapParams {
    MapParams {
        partitions: 4096,
        replicas,
        strategy,
        load_cap,
    }
}

/// An owner's fair share of `total` units, as the exact fraction `total x w / W`.
struct Share {
    numerator: u128,
    denominator: u128,
    /// Owed more than one replica per partition by weight, so held at one per partition.
    saturated: bool,
}

impl Share {
    /// Water filling: an owner owed more than one replica per partition holds one per
    /// partition, and the others share the rest by weight.
    fn of(table: &Table, owner: usize, total: u64) -> Share {
        let most = u128::from(table.params().partitions);
        let owners = table.owners();
        let mut full = vec![false; owners.len()];
        loop {
            let count = full.iter().filter(|&&f| f).count() as u128;
            let left = u128::from(total) - most * count;
            let weight: u128 = (0..owners.len())
                .filter(|&o| !full[o])
                .map(|o| u128::from(owners[o].weight))
                .sum();
            let newly: Vec<usize> = (0..owners.len())
                .filter(|&o| !full[o] && left * u128::from(owners[o].weight) > most * weight)
                .collect();
            if newly.is_empty() {
                return if full[owner] {
                    Share {
                        numerator: most,
                        denominator: 1,
                        saturated: true,
                    }
                } else {
                    Share {
                        numerator: left * u128::from(owners[owner].weight),
                        denominator: weight,
                        saturated: false,
                    }
                };
            }
            for o in newly {
                full[o] = true;
            }
        }
    }

    fn as_f64(&self) -> f64 {
        self.numerator as f64 / self.denominator as f64
    }

    /// `max(ceil(s), floor(c s))`, the most an owner may hold under cap `c` (per mille).
    fn cap(&self, cap_per_mille: u32, most: u64) -> u64 {
        let ceil = self.numerator.div_ceil(self.denominator);
        let capped = self.numerator * u128::from(cap_per_mille) / (1000 * self.denominator);
        ceil.max(capped.min(u128::from(most))) as u64
    }

    /// `min(floor(s), ceil((2 - c) s))`, the least an owner may hold under cap `c`; P for a
    /// saturated owner, which the map holds in every partition (`bounds` in
    /// placement/balance.rs): below P it would push its replicas onto the others, over their
    /// targets, and a later join would have to move them as well as the newcomer's share.
    fn floor_bound(&self, cap_per_mille: u32) -> u64 {
        if self.saturated {
            return self.numerator as u64;
        }
        let floor = self.numerator / self.denominator;
        let low = 2000u128.saturating_sub(u128::from(cap_per_mille));
        let capped = (self.numerator * low).div_ceil(1000 * self.denominator);
        floor.min(capped) as u64
    }
}

/// Rows are `width` distinct owners each, width = min(R, owners).
fn check_shape(table: &Table) -> Result<(), String> {
    let width = (table.params().replicas as usize).min(table.owners().len());
    if table.width() != width {
        return Err(format!("width {} instead of {width}", table.width()));
    }
    for p in 0..table.params().partitions {
        let row = table.row(p);
        let distinct: BTreeSet<_> = row.iter().collect();
        if row.len() != width || distinct.len() != width {
            return Err(format!("partition {p} has owners {row:?}"));
        }
        if row.iter().any(|&o| o as usize >= table.owners().len()) {
            return Err(format!("partition {p} names an unknown owner: {row:?}"));
        }
    }
    Ok(())
}

/// Every owner's primaries and replicas within its bounds for the table's cap.
fn check_bounds(table: &Table) -> Result<(), String> {
    let LoadCap::PerMille(cap) = table.params().load_cap else {
        return Ok(());
    };
    let partitions = u64::from(table.params().partitions);
    let slots = partitions * table.width() as u64;
    for (owner, load) in table.loads().iter().enumerate() {
        for (what, held, total) in [
            ("primaries", load.primaries, partitions),
            ("replicas", load.replicas, slots),
        ] {
            let share = Share::of(table, owner, total);
            let (lo, hi) = (share.floor_bound(cap), share.cap(cap, partitions));
            if u64::from(held) > hi || u64::from(held) < lo {
                return Err(format!(
                    "owner {} holds {held} {what}, share {:.2}, bounds [{lo}, {hi}]",
                    table.owners()[owner].id,
                    share.as_f64()
                ));
            }
        }
    }
    Ok(())
}

/// Highest load over mean load, for primaries and for replicas (equal owners).
fn max_over_mean(table: &Table) -> (f64, f64) {
    let loads = table.loads();
    let n = loads.len() as f64;
    let ratio = |f: fn(&haven::sm::placement::OwnerLoad) -> u32| {
        let total: u64 = loads.iter().map(|l| u64::from(f(l))).sum();
        let max = loads.iter().map(f).max().unwrap_or(0);
        f64::from(max) / (total as f64 / n)
    };
    (ratio(|l| l.primaries), ratio(|l| l.replicas))
}

/// The id a change is about.
fn changed_id(change: &Change) -> &OwnerId {
    match change {
        Change::Join(owner) => &owner.id,
        Change::Leave(id) | Change::SetWeight(id, _) => id,
    }
}

fn ids(table: &Table, partition: u32) -> BTreeSet<OwnerId> {
    table
        .row(partition)
        .iter()
        .map(|&o| table.owners()[o as usize].id.clone())
        .collect()
}

/// Partition-replica moves between two owners that both stayed: per partition, the gained and
/// lost owners other than the changed one, paired.
fn moves_between_others(old: &Table, new: &Table, change: &Change) -> u64 {
    let changed = changed_id(change);
    (0..old.params().partitions)
        .map(|p| {
            let (before, after) = (ids(old, p), ids(new, p));
            let gained = after
                .difference(&before)
                .filter(|id| *id != changed)
                .count();
            let lost = before
                .difference(&after)
                .filter(|id| *id != changed)
                .count();
            gained.min(lost) as u64
        })
        .sum()
}

/// No partition moves between two owners that both stayed: in every partition, either every
/// owner it gained or every owner it lost is the changed owner.
fn check_no_moves_between_others(old: &Table, new: &Table, change: &Change) -> Result<(), String> {
    let changed = changed_id(change);
    for p in 0..old.params().partitions {
        let (before, after) = (ids(old, p), ids(new, p));
        let gained: Vec<_> = after
            .difference(&before)
            .filter(|id| *id != changed)
            .collect();
        let lost: Vec<_> = before
            .difference(&after)
            .filter(|id| *id != changed)
            .collect();
        if !gained.is_empty() && !lost.is_empty() {
            return Err(format!(
                "{change:?}: partition {p} moved from {lost:?} to {gained:?}, both stayed"
            ));
        }
    }
    Ok(())
}

/// The minimum slots a join or leave must move: the arriving owner's fair share in the new
/// table; the departing owner's in the old one, or what it held if that was more (a cap above
/// 1.05 lets it hold more, and all of it moves). A capped leave can be forced to move more
/// ([`forced_excess`]).
fn minimum_moves(old: &Table, new: &Table, change: &Change) -> Option<f64> {
    let (table, id) = match change {
        Change::Join(owner) => (new, &owner.id),
        Change::Leave(id) => (old, id),
        Change::SetWeight(..) => return None,
    };
    let owner = table.owner_index(id)?;
    if let Change::Leave(_) = change {
        let slots = u64::from(table.params().partitions) * table.width() as u64;
        let share = Share::of(table, owner, slots).as_f64();
        return Some(share.max(f64::from(table.loads()[owner].replicas)));
    }
    let slots = u64::from(table.params().partitions) * table.width() as u64;
    Some(Share::of(table, owner, slots).as_f64())
}

/// [`forced_excess`] of a leave, 0 for other changes.
fn leave_excess(old: &Table, new: &Table, change: &Change) -> f64 {
    match change {
        Change::Leave(id) => old
            .owner_index(id)
            .map_or(0.0, |leaver| forced_excess(old, new, leaver) as f64),
        _ => 0.0,
    }
}

/// The moves between staying owners that a capped leave cannot avoid (0 without a cap, or when
/// the rows narrow, fewer owners than R). The leaver's slots are vacancies; a staying owner can
/// fill only those in rows it is not in already, and every owner must end within its bounds
/// `[lo, hi]`. An owner `o` holding `c` replicas that fills `v` vacancies is short of its lower
/// bound by `(lo - c - v)+` and over its cap by `(c + v - hi)+`; each such unit needs one slot
/// moved between two staying owners, a transfer. So the forced excess is
/// `min over v of max(sum (lo - c - v)+, sum (c + v - hi)+)`, `v` ranging over the
/// assignments of the vacancies to owners absent from their rows: the cheapest flow from the
/// vacancies and the staying owners' replicas to the owners' final counts, where a vacancy
/// reaches an owner absent from its row for free and a unit passes between two owners for one
/// move. Any leave's result is such a flow (in each row, pair every owner gained with the
/// leaver or an owner lost), so this is a lower bound on what any table within the bounds moves
/// beyond the leaver's replicas. The previous bound counted each owner's shortfall alone
/// (`(lo - c - open)+`, `open` its vacancy rows); the flow also counts vacancies that no owner
/// with room can take, and vacancy rows two owners both need.
fn forced_excess(old: &Table, new: &Table, leaver: usize) -> u64 {
    let LoadCap::PerMille(cap) = new.params().load_cap else {
        return 0;
    };
    if old.width() != new.width() {
        return 0;
    }
    let partitions = new.params().partitions;
    let slots = u64::from(partitions) * new.width() as u64;
    let count = new.owners().len();
    // Staying owner: new index -> old index.
    let before: Vec<usize> = new
        .owners()
        .iter()
        .map(|o| {
            old.owner_index(&o.id)
                .expect("a staying owner was in the old table")
        })
        .collect();
    let renumber = |old_index: u32| before.iter().position(|&b| b == old_index as usize);
    // The leaver's rows, grouped by the staying owners they hold.
    let mut kinds: std::collections::BTreeMap<Vec<usize>, i64> = Default::default();
    for p in 0..partitions {
        let row = old.row(p);
        if row.contains(&(leaver as u32)) {
            let mut held: Vec<usize> = row.iter().filter_map(|&o| renumber(o)).collect();
            held.sort_unstable();
            *kinds.entry(held).or_default() += 1;
        }
    }
    // Nodes: source, sink, the owners, the kinds of rows.
    let (source, sink) = (0, 1);
    let owner_node = |o: usize| 2 + o;
    let mut flow = MinCostFlow::new(2 + count + kinds.len());
    // Worth more than every transfer together: lower bounds are met first.
    const BIG: i64 = 1 << 40;
    let old_loads = old.loads();
    let mut lower_total = 0;
    for o in 0..count {
        let share = Share::of(new, o, slots);
        let (lo, hi) = (
            share.floor_bound(cap) as i64,
            share.cap(cap, u64::from(partitions)) as i64,
        );
        let held = i64::from(old_loads[before[o]].replicas);
        flow.edge(source, owner_node(o), held, 0);
        flow.edge(owner_node(o), sink, lo, -BIG);
        flow.edge(owner_node(o), sink, hi - lo, 0);
        lower_total += lo;
        for other in 0..count {
            if other != o {
                flow.edge(owner_node(o), owner_node(other), i64::MAX / 4, 1);
            }
        }
    }
    for (k, (held, rows)) in kinds.iter().enumerate() {
        let node = 2 + count + k;
        flow.edge(source, node, *rows, 0);
        for o in (0..count).filter(|o| !held.contains(o)) {
            flow.edge(node, owner_node(o), *rows, 0);
        }
    }
    let cost = flow.run(source, sink);
    let transfers = cost + BIG * lower_total;
    assert!(
        (0..BIG).contains(&transfers),
        "no table within the bounds exists for this leave (cost {cost})"
    );
    transfers as u64
}

/// Successive shortest paths (Bellman-Ford on the residual graph): small graphs only.
struct MinCostFlow {
    to: Vec<usize>,
    cap: Vec<i64>,
    cost: Vec<i64>,
    out: Vec<Vec<usize>>,
}

impl MinCostFlow {
    fn new(nodes: usize) -> MinCostFlow {
        MinCostFlow {
            to: Vec::new(),
            cap: Vec::new(),
            cost: Vec::new(),
            out: vec![Vec::new(); nodes],
        }
    }

    fn edge(&mut self, from: usize, to: usize, cap: i64, cost: i64) {
        for (a, b, c, k) in [(from, to, cap, cost), (to, from, 0, -cost)] {
            self.out[a].push(self.to.len());
            self.to.push(b);
            self.cap.push(c);
            self.cost.push(k);
        }
    }

    /// The cost of a cheapest maximum flow from `source` to `sink`.
    fn run(&mut self, source: usize, sink: usize) -> i64 {
        let nodes = self.out.len();
        let mut total = 0;
        loop {
            let mut dist = vec![i64::MAX; nodes];
            let mut via = vec![usize::MAX; nodes];
            let mut queued = vec![false; nodes];
            dist[source] = 0;
            let mut queue = std::collections::VecDeque::from([source]);
            while let Some(node) = queue.pop_front() {
                queued[node] = false;
                for &e in &self.out[node] {
                    let next = self.to[e];
                    if self.cap[e] > 0 && dist[node] + self.cost[e] < dist[next] {
                        dist[next] = dist[node] + self.cost[e];
                        via[next] = e;
                        if !queued[next] {
                            queued[next] = true;
                            queue.push_back(next);
                        }
                    }
                }
            }
            if dist[sink] == i64::MAX {
                return total;
            }
            let mut push = i64::MAX;
            let mut node = sink;
            while node != source {
                let e = via[node];
                push = push.min(self.cap[e]);
                node = self.to[e ^ 1];
            }
            node = sink;
            while node != source {
                let e = via[node];
                self.cap[e] -= push;
                self.cap[e ^ 1] += push;
                node = self.to[e ^ 1];
            }
            total += push * dist[sink];
        }
    }
}

/// Apply `change` and check every property of one step; the new table. `strict`: no move
/// between two owners that both stayed (else counted in `between_others`).
fn step(
    old: &Table,
    change: &Change,
    slack_slots: f64,
    strict: bool,
    between_others: &mut u64,
) -> Result<Table, String> {
    step_checking(old, change, slack_slots, strict, between_others, true)
}

/// [`step`], with the movement bound of capped leaves checked only if `capped_leaves`.
fn step_checking(
    old: &Table,
    change: &Change,
    slack_slots: f64,
    strict: bool,
    between_others: &mut u64,
    capped_leaves: bool,
) -> Result<Table, String> {
    let new = old.apply(change).map_err(|e| format!("{change:?}: {e}"))?;
    let again = old.apply(change).map_err(|e| e.to_string())?;
    if new.canonical_bytes() != again.canonical_bytes() {
        return Err(format!("{change:?}: two applications differ"));
    }
    check_shape(&new).map_err(|e| format!("after {change:?}: {e}"))?;
    check_bounds(&new).map_err(|e| format!("after {change:?}: {e}"))?;
    if strict {
        check_no_moves_between_others(old, &new, change)?;
    } else {
        *between_others += moves_between_others(old, &new, change);
    }
    if let Some(minimum) = minimum_moves(old, &new, change) {
        let moved = replica_moves(old, &new).map_err(|e| e.to_string())?;
        if new.params().load_cap == LoadCap::Unbounded {
            // The pure strategy moves exactly the changed owner's partitions.
            let held = |table: &Table| {
                table
                    .owner_index(changed_id(change))
                    .map_or(0, |o| u64::from(table.loads()[o].replicas))
            };
            if moved != held(old).max(held(&new)) {
                return Err(format!(
                    "{change:?} moved {moved} slots, not the {} the owner held",
                    held(old).max(held(&new))
                ));
            }
        } else if capped_leaves || !matches!(change, Change::Leave(_)) {
            // The flow of `forced_excess` is computed only where the plain minimum is exceeded.
            let over = |minimum: f64| moved as f64 > 1.05 * minimum + slack_slots;
            if over(minimum) {
                let excess = leave_excess(old, &new, change);
                // A lower bound, or the test would excuse what it should catch: this table
                // is within the bounds, so it moved at least the excess beyond the leaver's.
                if let Change::Leave(id) = change {
                    let leaver = old.owner_index(id).map_or(0, |o| old.loads()[o].replicas);
                    if (moved as f64) < f64::from(leaver) + excess {
                        return Err(format!(
                            "{change:?} moved {moved} slots, fewer than the leaver's {leaver} \
                             plus a forced excess of {excess}: not a lower bound"
                        ));
                    }
                }
                let minimum = minimum + excess;
                if over(minimum) {
                    return Err(format!(
                        "{change:?} moved {moved} slots, minimum {minimum:.2} (+{slack_slots} \
                         allowed)"
                    ));
                }
            }
        }
    }
    Ok(new)
}

#[test]
fn determinism_same_owners_in_any_order_give_the_same_table() {
    for_seeds("determinism", |seed| {
        let mut rng = Rng(seed);
        let mut owners: Vec<Owner> = (0..3 + rng.below(40))
            .map(|i| {
                Owner::new(
                    format!("o{}-{i}", rng.next() % 1000),
                    1 + rng.below(4) as u32,
                )
            })
            .collect();
        let strategy = if rng.below(2) == 0 {
            Strategy::Rendezvous
        } else {
            Strategy::Ring {
                vnodes_per_weight: 1 + rng.below(200) as u32,
            }
        };
        let cap = [
            LoadCap::Unbounded,
            LoadCap::PerMille(1020),
            LoadCap::PerMille(1250),
        ][rng.below(3) as usize];
        let p = MapParams {
            partitions: 1 + rng.below(3000) as u32,
            replicas: 1 + rng.below(4) as u32,
            strategy,
            load_cap: cap,
        };
        let first = compute(&owners, &p).map_err(|e| e.to_string())?;
        check_shape(&first)?;
        check_bounds(&first)?;
        for _ in 0..3 {
            // Fisher-Yates with the test's own rng.
            for i in (1..owners.len()).rev() {
                owners.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let again = compute(&owners, &p).map_err(|e| e.to_string())?;
            if again.canonical_bytes() != first.canonical_bytes() {
                return Err(format!("{p:?}: a reordered owner list gave another table"));
            }
        }
        Ok(())
    });
}

#[test]
fn balance_rendezvous_with_the_default_cap_is_within_two_percent() {
    for owners in [10, 100] {
        for replicas in 1..=3 {
            let p = params(replicas, Strategy::Rendezvous, LoadCap::default());
            let table = compute(&equal_owners(owners), &p).unwrap();
            check_shape(&table).unwrap();
            check_bounds(&table).unwrap();
            let (primaries, all) = max_over_mean(&table);
            eprintln!("rendezvous cap 1.02, {owners} owners, R={replicas}: max/mean primaries {primaries:.4}, replicas {all:.4}");
            assert!(
                primaries <= 1.02,
                "{owners} owners R={replicas}: primaries {primaries}"
            );
            assert!(all <= 1.02, "{owners} owners R={replicas}: replicas {all}");
        }
    }
}

#[test]
fn movement_one_join_or_leave_moves_at_most_five_percent_over_the_minimum() {
    for_seeds("movement", |seed| {
        let mut rng = Rng(seed);
        let count = [10, 100][rng.below(2) as usize];
        let strategy = if rng.below(2) == 0 {
            Strategy::Rendezvous
        } else {
            Strategy::Ring {
                vnodes_per_weight: 160,
            }
        };
        let cap = [LoadCap::default(), LoadCap::Unbounded][rng.below(2) as usize];
        let p = params(1 + rng.below(3) as u32, strategy, cap);
        let table = compute(&equal_owners(count), &p).map_err(|e| e.to_string())?;
        let join = Change::Join(Owner::new(format!("new-{seed}"), 1));
        let mut unused = 0;
        let joined =
            step(&table, &join, 0.0, true, &mut unused).map_err(|e| format!("{p:?}: {e}"))?;
        let leaver = OwnerId(format!("node-{}", rng.below(count as u64)));
        step(&joined, &Change::Leave(leaver), 0.0, true, &mut unused)
            .map_err(|e| format!("{p:?}: {e}"))?;
        Ok(())
    });
}

/// Fewest owners in the random sequences: 4, so that one owner can be a large share (a replica
/// in most partitions), where the greedy moves used to stop one or a few replicas over a cap
/// (seeds 38, 87, 208, 425 of the first 500; `Work::augment_to_bounds` in
/// placement/balance.rs closes that in placement version 2). Seed 559 (of 0..1500) once kept its
/// bounds but moved 7% over the newcomer's share on a join (1096 for 1024): the newcomer took
/// its slots from owners within their new caps, and chains then moved the excess of the owner
/// left over its cap between staying owners; version 2's steal takes from the owners over
/// their caps first (`Work::steal_over_caps`), and seeds 0..1500 pass.
const MIN_OWNERS: u64 = 4;

/// Fewest owners in the capped-leaves movement test: the same as [`MIN_OWNERS`]. With 4 to 7
/// owners a capped leave can move up to ~31% over the leaver's replicas (seeds 30, 58, 168, 208
/// of the first 500): the leaver's rows have only one or two candidates, so the leaver's replicas
/// are not a reachable minimum, and the test counts the forced excess ([`forced_excess`]). Its
/// first form counted only each owner's own shortfall; against it seeds 29, 30, 38, 65, 97, 361
/// and 457 of the first 500 moved 5.7% to 13.6% over. The rest was forced too: vacancies no owner
/// with room could take (seed 30: the three light owners could take 120 of the 300 vacancies and
/// the two heavy ones 94, so 86 had to pass between staying owners, not 66), vacancy rows two
/// heavy owners both needed (seed 38), and a saturated owner's lower bound of P (seeds 29, 97).
/// Against the flow's minimum placement version 2 moved at most 4.7% over on seeds 0..1500, but
/// 5.6% and 5.3% on seeds 2959 and 3389 (its chains could not pass a primary slot from an owner
/// at its primary lower bound); version 3 at most 2.1% on 0..1500 and 3.5% on 1500..4500.
const MIN_OWNERS_CAPPED_LEAVES: u64 = 4;

#[test]
fn random_sequences_keep_every_property() {
    for_seeds("sequences", |seed| sequence(seed, false, MIN_OWNERS));
}

/// Capped leaves too move at most 5% (plus one slot) over the minimum, the leaver's replicas plus
/// the forced excess. Seeds 30, 38, 58 and 117 of the first 200 once moved up to ~15% over it (a
/// heavy owner's vacancies had gone to others first; see `Work::even_out_fills` and
/// `Work::lift_to_lower_bounds` in placement/balance.rs).
#[test]
fn random_sequences_capped_leaves_move_at_most_five_percent_over_the_minimum() {
    for_seeds("sequences with leaves", |seed| {
        sequence(seed, true, MIN_OWNERS_CAPPED_LEAVES)
    });
}

fn sequence(seed: u64, capped_leaves: bool, min_owners: u64) -> Result<(), String> {
    {
        let mut rng = Rng(seed);
        let strategy = if rng.below(2) == 0 {
            Strategy::Rendezvous
        } else {
            Strategy::Ring {
                vnodes_per_weight: [40, 160][rng.below(2) as usize],
            }
        };
        let cap = [
            LoadCap::default(),
            LoadCap::PerMille(1100),
            LoadCap::Unbounded,
        ][rng.below(3) as usize];
        let p = MapParams {
            partitions: [1000, 4096][rng.below(2) as usize],
            replicas: 1 + rng.below(3) as u32,
            strategy,
            load_cap: cap,
        };
        let mut owners: Vec<Owner> = (0..min_owners + rng.below(12))
            .map(|i| Owner::new(format!("s{seed}-{i}"), 1 + rng.below(4) as u32))
            .collect();
        let mut table = compute(&owners, &p).map_err(|e| format!("{p:?}: {e}"))?;
        check_bounds(&table).map_err(|e| format!("{p:?}: {e}"))?;
        let mut next_id = owners.len();
        let mut history = Vec::new();
        let (mut between_others, mut steps, mut steps_with_others) = (0u64, 0u64, 0u64);
        for _ in 0..25 {
            let change = match rng.below(3) {
                0 => {
                    next_id += 1;
                    Change::Join(Owner::new(
                        format!("s{seed}-{next_id}"),
                        1 + rng.below(4) as u32,
                    ))
                }
                1 if owners.len() > min_owners as usize => {
                    let gone = owners.remove(rng.below(owners.len() as u64) as usize);
                    Change::Leave(gone.id)
                }
                _ => {
                    let at = rng.below(owners.len() as u64) as usize;
                    owners[at].weight = 1 + rng.below(4) as u32;
                    Change::SetWeight(owners[at].id.clone(), owners[at].weight)
                }
            };
            if let Change::Join(owner) = &change {
                owners.push(owner.clone());
            }
            history.push(change.clone());
            // Rounding: with small shares one slot is more than 5%. Moves between staying
            // owners: never without a cap; with one, counted (see the module doc).
            let strict = cap == LoadCap::Unbounded;
            let before = between_others;
            table = step_checking(
                &table,
                &change,
                1.0,
                strict,
                &mut between_others,
                capped_leaves,
            )
            .map_err(|e| format!("{p:?} after {} changes: {e}", history.len()))?;
            if between_others > before {
                steps_with_others += 1;
            }
            steps += 1;
        }
        if steps_with_others > 0 {
            eprintln!(
                "sequences: seed {seed} {p:?}: {steps_with_others} of {steps} steps moved \
                 {between_others} replicas between staying owners"
            );
        }
        // Uncapped tables are the pure strategy: the same as a fresh computation.
        if cap == LoadCap::Unbounded {
            let fresh = compute(&owners, &p).map_err(|e| e.to_string())?;
            if fresh.canonical_bytes() != table.canonical_bytes() {
                return Err(format!("{p:?}: unbounded table differs from a fresh build"));
            }
        }
        Ok(())
    }
}

/// Weights: with the default cap and at least [`MIN_OWNERS`] owners, every owner holds its
/// weighted share within 2% (or one slot, where 2% of the share is less than one). With 4 to 7
/// owners a heavy owner (3/4 of the rows) once ended over its cap (seeds 33, 182, 281 of the
/// first 500), before placement version 2's augmenting chains.
#[test]
fn weights_are_respected_within_two_percent() {
    for_seeds("weights", |seed| {
        let mut rng = Rng(seed);
        let strategy = if rng.below(2) == 0 {
            Strategy::Rendezvous
        } else {
            Strategy::Ring {
                vnodes_per_weight: 160,
            }
        };
        let p = params(1 + rng.below(3) as u32, strategy, LoadCap::default());
        let owners: Vec<Owner> = (0..MIN_OWNERS + rng.below(16))
            .map(|i| Owner::new(format!("w{i}"), 1 + rng.below(5) as u32))
            .collect();
        let mut table = compute(&owners, &p).map_err(|e| e.to_string())?;
        for round in 0..10 {
            let at = rng.below(owners.len() as u64) as usize;
            let change = Change::SetWeight(owners[at].id.clone(), 1 + rng.below(5) as u32);
            table = table.apply(&change).map_err(|e| e.to_string())?;
            let slots = 4096 * table.width() as u64;
            for (owner, load) in table.loads().iter().enumerate() {
                let share = Share::of(&table, owner, slots).as_f64();
                let off = (f64::from(load.replicas) - share).abs();
                if off > (0.02 * share).max(1.0) {
                    return Err(format!(
                        "round {round}: {} holds {} replicas for a share of {share:.1}",
                        table.owners()[owner].id,
                        load.replicas
                    ));
                }
            }
        }
        Ok(())
    });
}

/// Not an assertion on the ring's quality: the measured spread, for the record (issue 10).
#[test]
fn ring_spread_report() {
    for vnodes in [40, 160, 1000] {
        for cap in [LoadCap::Unbounded, LoadCap::default()] {
            for owners in [10, 100] {
                let p = params(
                    3,
                    Strategy::Ring {
                        vnodes_per_weight: vnodes,
                    },
                    cap,
                );
                let table = compute(&equal_owners(owners), &p).unwrap();
                check_shape(&table).unwrap();
                check_bounds(&table).unwrap();
                let loads: Vec<f64> = table
                    .loads()
                    .iter()
                    .map(|l| f64::from(l.primaries))
                    .collect();
                let mean = loads.iter().sum::<f64>() / loads.len() as f64;
                let sd = (loads.iter().map(|l| (l - mean).powi(2)).sum::<f64>()
                    / loads.len() as f64)
                    .sqrt();
                let max = loads.iter().cloned().fold(0.0, f64::max);
                eprintln!(
                    "ring {vnodes} vnodes, {cap:?}, {owners} owners: primaries sd/mean {:.3}, max/mean {:.3}; replicas max/mean {:.3}",
                    sd / mean,
                    max / mean,
                    max_over_mean(&table).1
                );
            }
        }
    }
}

#[test]
fn diff_lists_exactly_the_changed_slots() {
    let p = params(3, Strategy::Rendezvous, LoadCap::default());
    let old = compute(&equal_owners(10), &p).unwrap();
    let new = old.apply(&Change::Join(Owner::new("node-new", 1))).unwrap();
    let moves = diff(&old, &new).unwrap();
    assert!(!moves.is_empty());
    for m in &moves {
        let from = m.from.as_ref().and_then(|id| old.owner_index(id));
        let to = m.to.as_ref().and_then(|id| new.owner_index(id));
        assert_eq!(
            from.map(|o| o as u32),
            old.row(m.partition).get(m.slot as usize).copied()
        );
        assert_eq!(
            to.map(|o| o as u32),
            new.row(m.partition).get(m.slot as usize).copied()
        );
        assert_ne!(m.from, m.to);
    }
    let changed: usize = (0..4096)
        .map(|p| {
            (0..3)
                .filter(|&s| ids_at(&old, p, s) != ids_at(&new, p, s))
                .count()
        })
        .sum();
    assert_eq!(moves.len(), changed);
}

fn ids_at(table: &Table, partition: u32, slot: usize) -> Option<OwnerId> {
    table
        .row(partition)
        .get(slot)
        .map(|&o| table.owners()[o as usize].id.clone())
}

// ----- placement versions -----

/// The capped map both placement-version sequences start from: 128 partitions, 3 replicas,
/// rendezvous, the default load cap.
fn capped_map_params() -> MapParams {
    MapParams {
        partitions: 128,
        replicas: 3,
        strategy: Strategy::Rendezvous,
        load_cap: LoadCap::default(),
    }
}

/// A weighted capped map whose last change (a leave) makes the vacancy chains and the lift run:
/// the sequence of the placement-version vectors (docs/FORMAT.md, "Placement versions").
fn versioned_sequence() -> (MapParams, Vec<Change>) {
    let params = capped_map_params();
    let joins = [
        ("o0", 2),
        ("o1", 2),
        ("o2", 3),
        ("o3", 4),
        ("o4", 2),
        ("o5", 1),
    ];
    (params, joins_then_leave(&joins, "o3"))
}

/// The owners (id, weight) joining in order, then `leaver` leaving.
fn joins_then_leave(joins: &[(&str, u32)], leaver: &str) -> Vec<Change> {
    joins
        .iter()
        .map(|&(id, weight)| Change::Join(Owner::new(id, weight)))
        .chain([Change::Leave(OwnerId::from(leaver))])
        .collect()
}

/// xxh64 (seed 0) of `Table::canonical_bytes` after each change of [`versioned_sequence`], as
/// computed by the placement of 0284cfb^ (before the vacancy chains and the lift), by a test
/// built from that commit's tree.
/// Its leave moved 122 replicas, the leaver's 110 plus 12 between owners that both stayed.
const OLD_PLACEMENT_HASHES: [u64; 7] = [
    0xdd6f_01ef_36fd_5da4,
    0xb26c_9b24_4968_98a3,
    0xfa10_fbdb_ed7e_cc7a,
    0x9f04_7306_b78a_8154,
    0x57cf_937b_36df_7647,
    0x93ab_f7fd_b246_ec24,
    0x023a_3d89_f3b9_a859,
];

fn tables_of(version: PlacementVersion) -> Vec<Table> {
    let (params, changes) = versioned_sequence();
    tables_after(version, &params, &changes)
}

/// The table after each of `changes`, from an empty map of placement `version`.
fn tables_after(version: PlacementVersion, params: &MapParams, changes: &[Change]) -> Vec<Table> {
    let mut table = compute_at(&[], params, version).unwrap();
    let mut out = Vec::new();
    for change in changes {
        table = table.apply(change).unwrap();
        assert_eq!(table.version(), version);
        out.push(table.clone());
    }
    out
}

#[test]
fn a_version_1_map_recomputes_exactly_what_the_old_placement_computed() {
    let hashes: Vec<u64> = tables_of(PlacementVersion::V1)
        .iter()
        .map(|t| xxh64(&t.canonical_bytes(), 0))
        .collect();
    assert_eq!(hashes, OLD_PLACEMENT_HASHES);
}

#[test]
fn a_version_2_map_of_the_same_changes_differs_and_keeps_the_movement_bound() {
    let v1 = tables_of(PlacementVersion::V1);
    let v2 = tables_of(PlacementVersion::V2);
    // The joins compute the same; the leave is where the new steps run.
    let last = v1.len() - 1;
    for i in 0..last {
        assert_eq!(
            v1[i].canonical_bytes(),
            v2[i].canonical_bytes(),
            "change {i}"
        );
    }
    assert_ne!(v1[last].canonical_bytes(), v2[last].canonical_bytes());
    // The leave moves at most 5% (plus one slot) over the minimum, the leaver's replicas;
    // version 1 moved more (the gap the new steps close).
    let (_, changes) = versioned_sequence();
    let leaver = v2[last - 1].owner_index(&OwnerId::from("o3")).unwrap();
    let minimum = u64::from(v2[last - 1].loads()[leaver].replicas);
    let moved = replica_moves(&v2[last - 1], &v2[last]).unwrap();
    let moved_v1 = replica_moves(&v1[last - 1], &v1[last]).unwrap();
    assert_eq!((minimum, moved_v1), (110, 122));
    assert!(
        moved as f64 <= minimum as f64 * 1.05 + 1.0,
        "{:?}: version 2 moved {moved}, minimum {minimum}",
        changes[last]
    );
    check_bounds(&v2[last]).unwrap();
}

/// A capped map whose leave (`o2`, the heaviest) makes version 3's chains pass the leaver's
/// primary slots that version 2's could not (docs/FORMAT.md, "Placement versions").
fn primary_chain_sequence() -> (MapParams, Vec<Change>) {
    let params = capped_map_params();
    let joins = [("o0", 1), ("o1", 2), ("o2", 3), ("o3", 1), ("o4", 2)];
    (params, joins_then_leave(&joins, "o2"))
}

/// xxh64 (seed 0) of `Table::canonical_bytes` after each change of [`primary_chain_sequence`] in
/// placement version 2, as this tree's version 2 computes them (version 3's first build).
const V2_PRIMARY_CHAIN_HASHES: [u64; 6] = [
    0x34a8_cb33_848b_186e,
    0xeab3_2ec8_b885_17dc,
    0xb458_358f_4d8f_56bf,
    0x71b1_245d_60f6_66d0,
    0xd573_2bf8_b1bf_2b84,
    0x2f4c_f51f_18dc_f4b4,
];

/// The same in placement version 3: the joins compute what version 2 computes, the leave not.
const V3_PRIMARY_CHAIN_HASHES: [u64; 6] = [
    0x34a8_cb33_848b_186e,
    0xeab3_2ec8_b885_17dc,
    0xb458_358f_4d8f_56bf,
    0x71b1_245d_60f6_66d0,
    0xd573_2bf8_b1bf_2b84,
    0x1824_1077_9730_bdaf,
];

#[test]
fn a_version_3_map_passes_the_leavers_primary_slots_along_chains() {
    assert_eq!(PlacementVersion::CURRENT, PlacementVersion::V3);
    assert_eq!(
        compute(&[], &versioned_sequence().0).unwrap().version(),
        PlacementVersion::V3
    );
    let (params, changes) = primary_chain_sequence();
    let v2 = tables_after(PlacementVersion::V2, &params, &changes);
    let v3 = tables_after(PlacementVersion::V3, &params, &changes);
    let hashes = |tables: &[Table]| -> Vec<u64> {
        tables
            .iter()
            .map(|t| xxh64(&t.canonical_bytes(), 0))
            .collect()
    };
    assert_eq!(hashes(&v2), V2_PRIMARY_CHAIN_HASHES);
    assert_eq!(hashes(&v3), V3_PRIMARY_CHAIN_HASHES);
    // Version 2's light owners filled the leaver's primary slots down to their primary lower
    // bounds, so no chain could pass those slots on to the heavy owner short of its lower
    // bound, and 3 slots moved between staying owners; version 3 passes them (the givers take
    // the primary role back in another row) and moves only the leaver's replicas.
    let last = changes.len() - 1;
    let leaver = v3[last - 1].owner_index(&OwnerId::from("o2")).unwrap();
    let minimum = u64::from(v3[last - 1].loads()[leaver].replicas);
    let moved_v2 = replica_moves(&v2[last - 1], &v2[last]).unwrap();
    let moved_v3 = replica_moves(&v3[last - 1], &v3[last]).unwrap();
    assert_eq!((minimum, moved_v2, moved_v3), (128, 131, 128));
    assert_eq!(
        moves_between_others(&v3[last - 1], &v3[last], &changes[last]),
        0
    );
    check_shape(&v3[last]).unwrap();
    check_bounds(&v3[last]).unwrap();
}

/// The same changes on small maps: versions 2 and 3 keep every owner within its bounds after
/// every change, with both caps. (One replica over a cap was reported for 64 partitions; this tree
/// computes 64 within bounds in both versions. The over-cap cases that do reproduce are the
/// random sequences with 4 to 7 owners, `random_sequences_keep_every_property`.)
#[test]
fn small_version_2_maps_stay_within_their_bounds() {
    let (base, changes) = versioned_sequence();
    for partitions in [16, 32, 64, 100, 128, 256] {
        for load_cap in [LoadCap::default(), LoadCap::PerMille(1100)] {
            let params = MapParams {
                partitions,
                load_cap,
                ..base
            };
            for version in [PlacementVersion::V2, PlacementVersion::V3] {
                let mut table = compute_at(&[], &params, version).unwrap();
                for change in &changes {
                    table = table.apply(change).unwrap();
                    check_shape(&table).unwrap();
                    check_bounds(&table).unwrap_or_else(|e| {
                        panic!("version {version} {params:?} after {change:?}: {e}")
                    });
                }
            }
        }
    }
}

#[test]
fn an_unknown_placement_version_is_refused() {
    let (params, _) = versioned_sequence();
    let newer = PlacementVersion(PlacementVersion::CURRENT.0 + 1);
    assert_eq!(
        compute_at(&[], &params, newer).unwrap_err().code(),
        haven::ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        compute_at(&[], &params, PlacementVersion(0))
            .unwrap_err()
            .code(),
        haven::ErrorCode::InvalidArgument
    );
    let table = compute(&[], &params).unwrap();
    assert_eq!(
        Table::from_parts_at(params, newer, Vec::new(), Vec::new())
            .unwrap_err()
            .code(),
        haven::ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        Table::from_parts_at(params, PlacementVersion::V1, Vec::new(), Vec::new())
            .unwrap()
            .version(),
        PlacementVersion::V1
    );
    assert_eq!(table.version(), PlacementVersion::CURRENT);
}
