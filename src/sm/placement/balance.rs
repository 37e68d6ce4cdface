//! Building and changing a table: the uncapped strategies, and the bounded-load moves of a
//! capped map (module doc of `placement` for the rules; this file is how).
//!
//! Order matters for determinism, so every loop here runs in a fixed order: partitions ascending,
//! slots ascending, owners by index (sorted id), candidates by score then lower index.

use super::hash::key_hash;
use super::score::Scorer;
use super::{Change, LoadCap, MapParams, Owner, PlacementVersion, Table};
use std::cmp::Reverse;

/// A slot whose owner is being chosen.
const VACANT: u32 = u32::MAX;

/// One owner's bounds on one measure (primaries or replicas).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Bound {
    /// Its integer share: `floor(s)` or `ceil(s)`, the targets summing to the total.
    pub target: u32,
    /// Never fewer than this.
    pub lo: u32,
    /// Never more than this.
    pub hi: u32,
}

/// The bounds of every owner for a measure with `total` units, load cap `cap_per_mille`, when
/// one owner can hold at most `most` units (one replica per partition).
///
/// Shares are exact rationals `total x w / W`, except that an owner whose share would exceed
/// `most` is held at `most` and the rest is shared among the others the same way (water
/// filling; with R replicas an owner of more than 1/R of the weight would otherwise be owed more
/// than one replica per partition). Targets add the leftover units, one each, to the owners with
/// the largest remainders, ties to the smaller `key_hash(id)` (then the smaller index) so that the
/// tie order of two owners never depends on who else is in the map.
pub(super) fn bounds(total: u64, most: u64, owners: &[Owner], cap_per_mille: u32) -> Vec<Bound> {
    let mut saturated = vec![false; owners.len()];
    let (share_total, share_weight) = loop {
        let count = saturated.iter().filter(|&&s| s).count() as u64;
        let left = u128::from(total.saturating_sub(most * count));
        let weight: u128 = owners
            .iter()
            .zip(&saturated)
            .filter(|(_, &s)| !s)
            .map(|(o, _)| u128::from(o.weight))
            .sum();
        let mut changed = false;
        for (owner, full) in owners.iter().zip(saturated.iter_mut()) {
            if !*full && left * u128::from(owner.weight) > u128::from(most) * weight {
                *full = true;
                changed = true;
            }
        }
        if !changed {
            break (left, weight.max(1));
        }
    };
    let cap = u128::from(cap_per_mille);
    let most = most as u32;
    let mut out = Vec::with_capacity(owners.len());
    let mut remainders = Vec::with_capacity(owners.len());
    let mut handed_out = 0u128;
    for (index, owner) in owners.iter().enumerate() {
        if saturated[index] {
            out.push(Bound {
                target: most,
                lo: most,
                hi: most,
            });
            continue;
        }
        let units = share_total * u128::from(owner.weight);
        let floor = (units / share_weight) as u32;
        let remainder = units % share_weight;
        let ceil = floor + u32::from(remainder > 0);
        let capped = (units * cap / (1000 * share_weight)).min(u128::from(most)) as u32;
        let low_cap = 2000u128.saturating_sub(cap);
        let capped_low = (units * low_cap).div_ceil(1000 * share_weight) as u32;
        out.push(Bound {
            target: floor,
            lo: floor.min(capped_low),
            hi: ceil.max(capped),
        });
        handed_out += u128::from(floor);
        remainders.push((Reverse(remainder), key_hash(owner.id.0.as_bytes()), index));
    }
    remainders.sort_unstable();
    let left = (share_total - handed_out) as usize;
    for &(_, _, index) in remainders.iter().take(left) {
        out[index].target += 1;
    }
    out
}

/// A table from scratch: the top-ranked owners per partition (uncapped), or a bounded fill of
/// every slot in partition order (capped).
pub(super) fn build(params: MapParams, owners: Vec<Owner>, version: PlacementVersion) -> Table {
    let width = (params.replicas as usize).min(owners.len());
    let scorer = Scorer::new(&owners, params.strategy, params.partitions);
    let slot_count = params.partitions as usize * width;
    match params.load_cap {
        LoadCap::Unbounded => {
            let mut slots = Vec::with_capacity(slot_count);
            let mut scores = vec![0u128; owners.len()];
            for partition in 0..params.partitions {
                let seed = scorer.partition_seed(partition);
                for (owner, score) in scores.iter_mut().enumerate() {
                    *score = scorer.score(seed, owner);
                }
                let row_start = slots.len();
                for _ in 0..width {
                    let best = (0..owners.len())
                        .filter(|&o| !slots[row_start..].contains(&(o as u32)))
                        .max_by_key(|&o| (scores[o], Reverse(o)))
                        .expect("width <= owners, so an owner is left");
                    slots.push(best as u32);
                }
            }
            Table {
                params,
                version,
                owners,
                width,
                slots,
            }
        }
        LoadCap::PerMille(_) => {
            let work = Work::new(
                params,
                owners,
                scorer,
                width,
                vec![VACANT; slot_count],
                version,
            );
            work.complete(version)
        }
    }
}

/// The capped table after `change`, from `old` (same parameters) and the new sorted owners.
pub(super) fn rebalance(old: &Table, owners: Vec<Owner>, change: &Change) -> Table {
    let params = old.params;
    let width = (params.replicas as usize).min(owners.len());
    // Old owner index -> new owner index (VACANT for the one who left).
    let renumber: Vec<u32> = old
        .owners
        .iter()
        .map(|o| {
            owners
                .binary_search_by(|n| n.id.cmp(&o.id))
                .map_or(VACANT, |i| i as u32)
        })
        .collect();
    let mut slots = Vec::with_capacity(params.partitions as usize * width);
    for partition in 0..params.partitions {
        let row_start = slots.len();
        slots.extend(old.row(partition).iter().map(|&o| renumber[o as usize]));
        if width < old.width {
            // Fewer owners than R: everyone was in every row, the leaver's slot closes up.
            let mut slot = row_start;
            while slot < slots.len() {
                if slots[slot] == VACANT {
                    slots.remove(slot);
                } else {
                    slot += 1;
                }
            }
        }
        if width > old.width {
            // Still at most R owners: the newcomer is in every row.
            if let Change::Join(newcomer) = change {
                let index = owners
                    .binary_search_by(|n| n.id.cmp(&newcomer.id))
                    .expect("the newcomer is among the owners");
                slots.push(index as u32);
            }
        }
        slots.resize(row_start + width, VACANT);
    }
    let scorer = Scorer::new(&owners, params.strategy, params.partitions);
    let changed = match change {
        Change::Join(owner) => Some(&owner.id),
        Change::SetWeight(id, _) => Some(id),
        Change::Leave(_) => None,
    }
    .and_then(|id| owners.binary_search_by(|n| n.id.cmp(id)).ok());
    let mut work = Work::new(params, owners, scorer, width, slots, old.version);
    if let Some(owner) = changed {
        if old.version == PlacementVersion::V1 {
            work.steal(owner, false);
        } else {
            // The ordinary steal, unless it leaves an owner over its replica cap: then again
            // from the start, taking from the owners over their caps first. Where the ordinary
            // steal already reaches every cap the table stays what version 1 computes.
            let start = (
                work.slots.clone(),
                work.primaries.clone(),
                work.replicas.clone(),
            );
            work.steal(owner, false);
            if (0..work.owners.len()).any(|o| work.replicas[o] > work.replica_bounds[o].hi) {
                (work.slots, work.primaries, work.replicas) = start;
                work.steal(owner, true);
            }
        }
        work.shed(owner);
    }
    work.complete(old.version)
}

/// A table being built: slots (some [`VACANT`]), loads and bounds.
struct Work {
    params: MapParams,
    version: PlacementVersion,
    /// Version 3: see [`Work::refresh_regain`]; empty before.
    regain: Vec<bool>,
    owners: Vec<Owner>,
    scorer: Scorer,
    width: usize,
    slots: Vec<u32>,
    primaries: Vec<u32>,
    replicas: Vec<u32>,
    primary_bounds: Vec<Bound>,
    replica_bounds: Vec<Bound>,
}

/// How far a candidate may go when it is handed a slot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Target,
    Cap,
}

impl Work {
    fn new(
        params: MapParams,
        owners: Vec<Owner>,
        scorer: Scorer,
        width: usize,
        slots: Vec<u32>,
        version: PlacementVersion,
    ) -> Work {
        let cap = match params.load_cap {
            LoadCap::PerMille(c) => c,
            LoadCap::Unbounded => u32::MAX,
        };
        let partitions = u64::from(params.partitions);
        let mut primaries = vec![0; owners.len()];
        let mut replicas = vec![0; owners.len()];
        for row in slots.chunks_exact(width.max(1)) {
            for (slot, &owner) in row.iter().enumerate() {
                if owner != VACANT {
                    replicas[owner as usize] += 1;
                    if slot == 0 {
                        primaries[owner as usize] += 1;
                    }
                }
            }
        }
        let primary_bounds = if width == 0 {
            Vec::new()
        } else {
            bounds(partitions, partitions, &owners, cap)
        };
        let replica_bounds = bounds(partitions * width as u64, partitions, &owners, cap);
        Work {
            params,
            version,
            regain: Vec::new(),
            owners,
            scorer,
            width,
            slots,
            primaries,
            replicas,
            primary_bounds,
            replica_bounds,
        }
    }

    /// Fill the vacancies, settle the primaries and repair the bounds, by the steps of placement
    /// algorithm `version` (see [`PlacementVersion`]): version 1 is exactly the algorithm before
    /// the vacancy chains and the lift, kept so that maps created with it recompute the same
    /// tables on every binary.
    fn complete(mut self, version: PlacementVersion) -> Table {
        if version == PlacementVersion::V1 {
            self.fill_vacancies();
            self.settle_primaries();
        } else {
            self.fill_and_even_out();
            self.settle_primaries();
            self.lift_to_lower_bounds();
            self.augment_to_bounds();
        }
        self.repair();
        self.finish(version)
    }

    fn finish(self, version: PlacementVersion) -> Table {
        debug_assert!(!self.slots.contains(&VACANT), "every slot is filled");
        Table {
            params: self.params,
            version,
            owners: self.owners,
            width: self.width,
            slots: self.slots,
        }
    }

    fn row(&self, partition: u32) -> &[u32] {
        let start = partition as usize * self.width;
        &self.slots[start..start + self.width]
    }

    fn in_row(&self, partition: u32, owner: usize) -> bool {
        self.row(partition).contains(&(owner as u32))
    }

    /// Put `owner` into a slot, keeping the loads.
    fn set(&mut self, partition: u32, slot: usize, owner: u32) {
        let at = partition as usize * self.width + slot;
        let old = self.slots[at];
        if old != VACANT {
            self.replicas[old as usize] -= 1;
            if slot == 0 {
                self.primaries[old as usize] -= 1;
            }
        }
        if owner != VACANT {
            self.replicas[owner as usize] += 1;
            if slot == 0 {
                self.primaries[owner as usize] += 1;
            }
        }
        self.slots[at] = owner;
    }

    fn limit(bound: Bound, level: Level) -> u32 {
        match level {
            Level::Target => bound.target,
            Level::Cap => bound.hi,
        }
    }

    fn replica_room(&self, owner: usize, level: Level) -> bool {
        self.replicas[owner] < Self::limit(self.replica_bounds[owner], level)
    }

    fn primary_room(&self, owner: usize, level: Level) -> bool {
        self.primaries[owner] < Self::limit(self.primary_bounds[owner], level)
    }

    /// Partitions ordered by how much they prefer `owner`, most first.
    fn partitions_by_preference(&self, owner: usize) -> Vec<u32> {
        let mut order: Vec<(Reverse<u128>, u32)> = (0..self.params.partitions)
            .map(|p| {
                let seed = self.scorer.partition_seed(p);
                (Reverse(self.scorer.score(seed, owner)), p)
            })
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, p)| p).collect()
    }

    /// Fill every vacant slot: all primary slots first (the scarcer measure, chosen while
    /// replica room is still plentiful), then the others, each in ascending partition order. The
    /// fixed order makes the result deterministic; its cost is that when few owners have room
    /// left, the last partitions in the order take lower-ranked owners than the first.
    fn fill_vacancies(&mut self) {
        let mut scores = vec![0u128; self.owners.len()];
        for primary in [true, false] {
            for partition in 0..self.params.partitions {
                let vacant = |w: &Work, slot: usize| {
                    (slot == 0) == primary && w.row(partition)[slot] == VACANT
                };
                if !(0..self.width).any(|slot| vacant(self, slot)) {
                    continue;
                }
                let seed = self.scorer.partition_seed(partition);
                for (owner, score) in scores.iter_mut().enumerate() {
                    *score = self.scorer.score(seed, owner);
                }
                for slot in 0..self.width {
                    if vacant(self, slot) {
                        self.fill(partition, slot, &scores);
                    }
                }
            }
        }
    }

    /// [`Work::fill_vacancies`], then, if an owner ended outside its replica bounds, hand the
    /// slots just filled along chains of owners until it is within them
    /// ([`Work::even_out_fills`]).
    fn fill_and_even_out(&mut self) {
        let before = self.slots.clone();
        self.fill_vacancies();
        if (0..self.owners.len()).any(|o| !self.replica_within_bounds(o)) {
            self.even_out_fills(&before);
        }
    }

    fn replica_within_bounds(&self, owner: usize) -> bool {
        let bound = self.replica_bounds[owner];
        (bound.lo..=bound.hi).contains(&self.replicas[owner])
    }

    /// The greedy fill goes in partition order, so an owner already holding most partitions
    /// (a heavy one, with few owners) can find that the vacancies it could take, the ones in
    /// rows it does not hold, went to others first, and it ends under its lower bound while
    /// they reach their caps. The fill chose who takes each vacancy, so it may choose again:
    /// a slot filled in this round (it was vacant in `before`, a non-primary slot) can pass to
    /// any owner outside its row without moving anything between two owners that both
    /// stayed. An owner under its lower bound takes such a slot from an owner over its target,
    /// or from an owner who takes one in turn (a shortest chain, found breadth first: an
    /// augmenting path of the bipartite assignment of vacancies to owners); an owner over its
    /// cap gives one the same way. Each chain moves one unit and changes no other owner's
    /// load, so the number of moved replicas stays what it was.
    fn even_out_fills(&mut self, before: &[u32]) {
        if self.width < 2 {
            // One slot per row: every owner can take every vacancy, the fill cannot corner one.
            return;
        }
        let width = self.width;
        let fresh: Vec<usize> = (0..self.slots.len())
            .filter(|&at| {
                let partition = at / width;
                let old_row = &before[partition * width..(partition + 1) * width];
                self.slots[at] != VACANT
                    && old_row.contains(&VACANT)
                    && !old_row.contains(&self.slots[at])
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        for owner in 0..self.owners.len() {
            let bound = self.replica_bounds[owner];
            if self.replicas[owner] < bound.lo {
                while self.replicas[owner] < bound.target
                    && self.pass_one(&fresh, owner, true, Level::Target)
                {}
                while self.replicas[owner] < bound.lo
                    && self.pass_one(&fresh, owner, true, Level::Cap)
                {}
            } else if self.replicas[owner] > bound.hi {
                while self.replicas[owner] > bound.target
                    && self.pass_one(&fresh, owner, false, Level::Target)
                {}
                while self.replicas[owner] > bound.hi
                    && self.pass_one(&fresh, owner, false, Level::Cap)
                {}
            }
        }
    }

    /// Move one fresh slot's worth of load to `owner` (`take`) or away from it, through the
    /// shortest chain of owners that ends at one with load to spare (over its target) or room
    /// (under it). False if there is none.
    fn pass_one(&mut self, fresh: &[usize], owner: usize, take: bool, level: Level) -> bool {
        self.refresh_regain();
        let width = self.width;
        let count = self.owners.len();
        let mut held: Vec<Vec<usize>> = vec![Vec::new(); count];
        for &at in fresh {
            held[self.slots[at] as usize].push(at);
        }
        // `taker` could take a fresh slot of `giver`.
        let can_take = |w: &Work, taker: usize, giver: usize| {
            held[giver].iter().any(|&at| w.passable(at, taker, giver))
        };
        let mut parent = vec![usize::MAX; count];
        parent[owner] = owner;
        let mut queue = std::collections::VecDeque::from([owner]);
        let mut end = None;
        'search: while let Some(node) = queue.pop_front() {
            let unseen: Vec<usize> = (0..count).filter(|&o| parent[o] == usize::MAX).collect();
            for next in unseen {
                let edge = if take {
                    can_take(self, node, next)
                } else {
                    can_take(self, next, node)
                };
                if !edge {
                    continue;
                }
                parent[next] = node;
                let bound = self.replica_bounds[next];
                let done = match (take, level) {
                    (true, Level::Target) => self.replicas[next] > bound.target,
                    (true, Level::Cap) => self.replicas[next] > bound.lo,
                    (false, Level::Target) => self.replicas[next] < bound.target,
                    (false, Level::Cap) => self.replicas[next] < bound.hi,
                };
                if done {
                    end = Some(next);
                    break 'search;
                }
                queue.push_back(next);
            }
        }
        let Some(end) = end else {
            return false;
        };
        // Apply from the far end, so that every step finds the slot the search saw (an
        // earlier step only ever adds slots to the owner the next step takes from).
        let mut node = end;
        while node != owner {
            let previous = parent[node];
            let (taker, giver) = if take {
                (previous, node)
            } else {
                (node, previous)
            };
            let slot = fresh
                .iter()
                .copied()
                .filter(|&at| self.passable(at, taker, giver))
                .max_by_key(|&at| {
                    let seed = self.scorer.partition_seed((at / width) as u32);
                    (at % width != 0, self.scorer.score(seed, taker), Reverse(at))
                });
            let Some(at) = slot else {
                // Not reached (see above); the loads are still consistent, repair follows.
                return false;
            };
            self.pass_slot(at, taker);
            node = previous;
        }
        true
    }

    /// Whether `taker` may take the slot at `at` (an index into the slots) from `giver`: it is
    /// `giver`'s, `taker` is not in the row, and a primary slot keeps the primaries within
    /// their bounds: `giver` above its lower bound (from version 3, or able to take the role
    /// back in another row, [`Work::refresh_regain`]), and `taker` under its cap or another
    /// holder of the row under its own to hand the role to ([`Work::pass_slot`]). Beyond the
    /// bounds no later role change inside a row might bring them back.
    fn passable(&self, at: usize, taker: usize, giver: usize) -> bool {
        let partition = (at / self.width) as u32;
        if self.slots[at] as usize != giver || self.in_row(partition, taker) {
            return false;
        }
        if at % self.width != 0 {
            return true;
        }
        let room = |o: usize| self.primaries[o] < self.primary_bounds[o].hi;
        (self.primaries[giver] > self.primary_bounds[giver].lo
            || self.regain.get(giver).copied().unwrap_or(false))
            && (room(taker) || self.row(partition)[1..].iter().any(|&o| room(o as usize)))
    }

    /// `taker` takes the slot at `at` (see [`Work::passable`]). A primary slot's role goes to
    /// the holder of the row furthest under its primary target if `taker` would be over its
    /// own target (a role change inside the row, nothing moves); from version 3 a giver left
    /// under its primary lower bound takes a role back ([`Work::regain_primary`]).
    fn pass_slot(&mut self, at: usize, taker: usize) {
        let (partition, slot) = ((at / self.width) as u32, at % self.width);
        let giver = self.slots[at] as usize;
        self.set(partition, slot, taker as u32);
        if slot != 0 {
            return;
        }
        if self.version >= PlacementVersion::V3
            && self.primaries[giver] < self.primary_bounds[giver].lo
        {
            self.regain_primary(giver);
        }
        if self.primaries[taker] <= self.primary_bounds[taker].target {
            return;
        }
        let under = |w: &Work, o: u32, level: Level| {
            w.primaries[o as usize] < Work::limit(w.primary_bounds[o as usize], level)
        };
        for level in [Level::Target, Level::Cap] {
            let heir = (1..self.width)
                .filter(|&s| under(self, self.row(partition)[s], level))
                .min_by_key(|&s| {
                    let holder = self.row(partition)[s] as usize;
                    (
                        i64::from(self.primaries[holder])
                            - i64::from(self.primary_bounds[holder].target),
                        s,
                    )
                });
            if let Some(heir) = heir {
                self.swap_primary(partition, heir);
                return;
            }
        }
    }

    /// Version 3: which owners at their primary lower bound may still give a primary slot along
    /// a chain ([`Work::passable`]), because they hold another row whose primary holder is above
    /// its own lower bound, so a role change there gives them a primary back
    /// ([`Work::regain_primary`]). Without it, an owner that filled the leaver's primary slots
    /// down to its primary lower bound blocks every chain through them, and the load they
    /// should pass to a heavy owner moves between staying owners instead.
    /// Computed once per chain search: a flag can be stale by the time a chain is applied (a
    /// row's primary holder handed a role to another giver first); then the giver stays under
    /// its bound until the primaries are settled, like any other shortfall.
    fn refresh_regain(&mut self) {
        self.regain.clear();
        if self.version < PlacementVersion::V3
            || self.width < 2
            || !(0..self.owners.len()).any(|o| self.primaries[o] <= self.primary_bounds[o].lo)
        {
            return;
        }
        let mut regain = vec![false; self.owners.len()];
        for partition in 0..self.params.partitions {
            let row = self.row(partition);
            let primary = row[0] as usize;
            if row[0] != VACANT && self.primaries[primary] > self.primary_bounds[primary].lo {
                for &holder in &row[1..] {
                    if holder != VACANT {
                        regain[holder as usize] = true;
                    }
                }
            }
        }
        self.regain = regain;
    }

    /// Version 3: `owner`, under its primary lower bound after giving a primary slot, takes the
    /// primary role in a row it holds from a holder over its primary target (then above its
    /// lower bound), in ascending partition order. A role change: no replica moves.
    fn regain_primary(&mut self, owner: usize) {
        for over_target in [true, false] {
            for partition in 0..self.params.partitions {
                let row = self.row(partition);
                let primary = row[0];
                if primary == VACANT {
                    continue;
                }
                let bound = self.primary_bounds[primary as usize];
                let limit = if over_target { bound.target } else { bound.lo };
                if self.primaries[primary as usize] <= limit {
                    continue;
                }
                if let Some(slot) = row[1..].iter().position(|&o| o as usize == owner) {
                    self.swap_primary(partition, slot + 1);
                    return;
                }
            }
        }
    }

    /// The best-ranked owner outside the row that `accepts`.
    fn best(
        &self,
        partition: u32,
        scores: &[u128],
        accepts: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        (0..self.owners.len())
            .filter(|&o| !self.in_row(partition, o) && accepts(o))
            .max_by_key(|&o| (scores[o], Reverse(o)))
    }

    /// Fill one vacant slot: the best-ranked owner with room under its target, then under its
    /// cap. For the primary slot, if the best owner with replica room has no primary room, a
    /// holder of the partition with primary room is promoted and the newcomer takes its slot.
    fn fill(&mut self, partition: u32, slot: usize, scores: &[u128]) {
        for level in [Level::Target, Level::Cap] {
            let direct = self.best(partition, scores, |o| {
                self.replica_room(o, level) && (slot != 0 || self.primary_room(o, level))
            });
            if let Some(owner) = direct {
                self.set(partition, slot, owner as u32);
                return;
            }
            if slot == 0 {
                let promoted = (1..self.width).find(|&s| {
                    let holder = self.row(partition)[s];
                    holder != VACANT && self.primary_room(holder as usize, level)
                });
                let newcomer = self.best(partition, scores, |o| self.replica_room(o, level));
                if let (Some(from_slot), Some(newcomer)) = (promoted, newcomer) {
                    let holder = self.row(partition)[from_slot];
                    self.set(partition, from_slot, VACANT);
                    self.set(partition, 0, holder);
                    self.set(partition, from_slot, newcomer as u32);
                    return;
                }
            }
        }
        // Every owner with room already holds this partition (possible only with very few
        // owners): the best-ranked one that does not, over its bound, rather than no replica.
        let owner = self
            .best(partition, scores, |_| true)
            .expect("fewer slots per partition than owners");
        self.set(partition, slot, owner as u32);
    }

    /// `taker` (a newcomer or a grown weight) takes slots up to its targets from the owners most
    /// over theirs, in the partitions that rank it highest. Every move is from a donor to the
    /// taker, never between two others. `over_caps_first` (version 2, when the plain steal
    /// would leave an owner over its replica cap, see [`rebalance`]): the primaries come first
    /// from rows holding such an owner ([`Work::steal_primaries_over_caps`]), and after the
    /// primaries the other slots first from those owners ([`Work::steal_over_caps`]).
    fn steal(&mut self, taker: usize, over_caps_first: bool) {
        let wants = |w: &Work| {
            w.primaries[taker] < w.primary_bounds[taker].target
                || w.replicas[taker] < w.replica_bounds[taker].target
        };
        if self.width == 0 || !wants(self) {
            return;
        }
        let order = self.partitions_by_preference(taker);
        if over_caps_first {
            self.steal_primaries_over_caps(taker, &order);
        }
        // Primaries first, from owners over both targets, then over the primary target only.
        for strict in [true, false] {
            for &partition in &order {
                if self.primaries[taker] >= self.primary_bounds[taker].target
                    || self.replicas[taker] >= self.replica_bounds[taker].target
                {
                    break;
                }
                let holder = self.row(partition)[0] as usize;
                if self.in_row(partition, taker) || holder == VACANT as usize {
                    continue;
                }
                let primary_over = self.primaries[holder] > self.primary_bounds[holder].target;
                let replica_ok = if strict {
                    self.replicas[holder] > self.replica_bounds[holder].target
                } else {
                    self.replicas[holder] > self.replica_bounds[holder].lo
                };
                if primary_over && replica_ok {
                    self.set(partition, 0, taker as u32);
                }
            }
        }
        if over_caps_first {
            self.steal_over_caps(taker, &order);
        }
        // Then other slots, from the owner most over its replica target (the later slot on a
        // tie), then from any owner above its lower bound.
        for strict in [true, false] {
            for &partition in &order {
                if self.replicas[taker] >= self.replica_bounds[taker].target {
                    break;
                }
                if self.in_row(partition, taker) {
                    continue;
                }
                let donor = (1..self.width)
                    .filter(|&s| {
                        let holder = self.row(partition)[s];
                        if holder == VACANT {
                            return false;
                        }
                        let (load, bound) = (
                            self.replicas[holder as usize],
                            self.replica_bounds[holder as usize],
                        );
                        if strict {
                            load > bound.target
                        } else {
                            load > bound.lo
                        }
                    })
                    .max_by_key(|&s| {
                        let holder = self.row(partition)[s] as usize;
                        (
                            i64::from(self.replicas[holder])
                                - i64::from(self.replica_bounds[holder].target),
                            s,
                        )
                    });
                if let Some(slot) = donor {
                    self.set(partition, slot, taker as u32);
                }
            }
        }
    }

    /// Version 2's first step of a steal: `taker` takes primaries, up to its targets, in rows
    /// where the primary holder is over its primary target and a holder of the row is over its
    /// replica cap: `taker` takes the slot of the holder most over its cap and the primary role
    /// (from the same holder, or by a role change with the primary holder, who keeps its
    /// replica). An owner held at every row (its share saturated) otherwise gives up replicas
    /// with the primaries it must hand over, and gets them back later from staying owners.
    fn steal_primaries_over_caps(&mut self, taker: usize, order: &[u32]) {
        let over = |w: &Work, o: u32| {
            o != VACANT && w.replicas[o as usize] > w.replica_bounds[o as usize].hi
        };
        if !(0..self.owners.len()).any(|o| over(self, o as u32)) {
            return;
        }
        for &partition in order {
            if self.primaries[taker] >= self.primary_bounds[taker].target
                || self.replicas[taker] >= self.replica_bounds[taker].target
            {
                break;
            }
            let primary = self.row(partition)[0];
            if self.in_row(partition, taker)
                || primary == VACANT
                || self.primaries[primary as usize] <= self.primary_bounds[primary as usize].target
            {
                continue;
            }
            let donor = (0..self.width)
                .filter(|&s| over(self, self.row(partition)[s]))
                .max_by_key(|&s| {
                    let holder = self.row(partition)[s] as usize;
                    (self.replicas[holder] - self.replica_bounds[holder].hi, s)
                });
            if let Some(slot) = donor {
                self.set(partition, slot, taker as u32);
                if slot != 0 {
                    self.swap_primary(partition, slot);
                }
            }
        }
    }

    /// Version 2's step of a steal between the primaries and the other slots: `taker` takes,
    /// up to its replica target, non-primary slots of the owners whose smaller new share leaves
    /// them over their caps, the most over first, in the partitions of `order` (those ranking
    /// `taker` highest first). Those owners must give that many slots away in any case; when the
    /// ordinary steal took its slots from others instead, the chains of
    /// [`Work::augment_to_bounds`] later moved the rest between two staying owners (a join
    /// moving 7% over the newcomer's share).
    fn steal_over_caps(&mut self, taker: usize, order: &[u32]) {
        let over = |w: &Work, o: u32| {
            o != VACANT && w.replicas[o as usize] > w.replica_bounds[o as usize].hi
        };
        if !(0..self.owners.len()).any(|o| over(self, o as u32)) {
            return;
        }
        for &partition in order {
            if self.replicas[taker] >= self.replica_bounds[taker].target {
                break;
            }
            if self.in_row(partition, taker) {
                continue;
            }
            let donor = (1..self.width)
                .filter(|&s| over(self, self.row(partition)[s]))
                .max_by_key(|&s| {
                    let holder = self.row(partition)[s] as usize;
                    (self.replicas[holder] - self.replica_bounds[holder].hi, s)
                });
            if let Some(slot) = donor {
                self.set(partition, slot, taker as u32);
            }
        }
    }

    /// `giver` (a shrunk weight) gives up the slots over its targets, in the partitions that rank
    /// it lowest; [`Work::fill_vacancies`] hands them to owners under theirs.
    fn shed(&mut self, giver: usize) {
        let over = |w: &Work| {
            w.primaries[giver] > w.primary_bounds[giver].target
                || w.replicas[giver] > w.replica_bounds[giver].target
        };
        if self.width == 0 || !over(self) {
            return;
        }
        let mut order = self.partitions_by_preference(giver);
        order.reverse();
        for &partition in &order {
            if self.primaries[giver] <= self.primary_bounds[giver].target {
                break;
            }
            if self.row(partition)[0] as usize == giver {
                self.set(partition, 0, VACANT);
            }
        }
        for &partition in &order {
            if self.replicas[giver] <= self.replica_bounds[giver].target {
                break;
            }
            if let Some(slot) = (1..self.width).find(|&s| self.row(partition)[s] as usize == giver)
            {
                self.set(partition, slot, VACANT);
            }
        }
    }

    /// Hand primaries from owners over their primary target to holders of the same partition
    /// under theirs, where an owner is outside its primary bounds. A role change inside a row:
    /// no replica moves.
    fn settle_primaries(&mut self) {
        for owner in 0..self.owners.len() {
            if self.width < 2 {
                return;
            }
            let bound = self.primary_bounds[owner];
            if self.primaries[owner] < bound.lo {
                for partition in self.partitions_by_preference(owner) {
                    if self.primaries[owner] >= bound.target {
                        break;
                    }
                    let row = self.row(partition);
                    let holder = row[0] as usize;
                    let Some(slot) = row.iter().position(|&o| o as usize == owner) else {
                        continue;
                    };
                    if slot > 0 && self.primaries[holder] > self.primary_bounds[holder].target {
                        self.swap_primary(partition, slot);
                    }
                }
            }
            if self.primaries[owner] > bound.hi {
                let mut order = self.partitions_by_preference(owner);
                order.reverse();
                for partition in order {
                    if self.primaries[owner] <= bound.target {
                        break;
                    }
                    if self.row(partition)[0] as usize != owner {
                        continue;
                    }
                    let under = (1..self.width).find(|&s| {
                        let holder = self.row(partition)[s] as usize;
                        self.primaries[holder] < self.primary_bounds[holder].target
                    });
                    if let Some(slot) = under {
                        self.swap_primary(partition, slot);
                    }
                }
            }
        }
    }

    fn within_bounds(&self, owner: usize) -> bool {
        let (p, r) = (self.primary_bounds[owner], self.replica_bounds[owner]);
        (p.lo..=p.hi).contains(&self.primaries[owner])
            && (r.lo..=r.hi).contains(&self.replicas[owner])
    }

    /// Where the vacancies could not bring an owner up to its lower bound of replicas (a heavy
    /// owner already in most rows, the leaver's rows mostly among them), it takes the missing
    /// slots, and no more, from the owners most over their targets (then from any owner above
    /// its lower bound), in the partitions that rank it highest, never a primary slot. These
    /// are moves between two owners that both stayed, the fewest that reach the bound.
    fn lift_to_lower_bounds(&mut self) {
        if self.width < 2 {
            return;
        }
        for owner in 0..self.owners.len() {
            let lo = self.replica_bounds[owner].lo;
            if self.replicas[owner] >= lo {
                continue;
            }
            let order = self.partitions_by_preference(owner);
            for strict in [true, false] {
                for &partition in &order {
                    if self.replicas[owner] >= lo {
                        break;
                    }
                    if self.in_row(partition, owner) {
                        continue;
                    }
                    let donor = (1..self.width)
                        .filter(|&s| {
                            let holder = self.row(partition)[s] as usize;
                            let bound = self.replica_bounds[holder];
                            let limit = if strict { bound.target } else { bound.lo };
                            self.replicas[holder] > limit
                        })
                        .max_by_key(|&s| {
                            let holder = self.row(partition)[s] as usize;
                            (
                                i64::from(self.replicas[holder])
                                    - i64::from(self.replica_bounds[holder].target),
                                s,
                            )
                        });
                    if let Some(slot) = donor {
                        self.set(partition, slot, owner as u32);
                    }
                }
            }
        }
    }

    /// The last resort, when the moves above left an owner outside its bounds (it happens with
    /// few owners, where distinct replicas leave a vacancy only one or two candidates): owners
    /// under their lower bound take from owners over target, owners over their cap give slots
    /// away. These are the only moves between two owners that both stayed.
    fn repair(&mut self) {
        const MAX_ROUNDS: usize = 4;
        for _ in 0..MAX_ROUNDS {
            if (0..self.owners.len()).all(|o| self.within_bounds(o)) {
                return;
            }
            for owner in 0..self.owners.len() {
                if self.replicas[owner] < self.replica_bounds[owner].lo
                    || self.primaries[owner] < self.primary_bounds[owner].lo
                {
                    self.steal(owner, false);
                }
            }
            for owner in 0..self.owners.len() {
                if self.replicas[owner] > self.replica_bounds[owner].hi
                    || self.primaries[owner] > self.primary_bounds[owner].hi
                {
                    self.shed(owner);
                }
            }
            self.fill_vacancies();
            self.settle_primaries();
        }
    }

    /// Version 2's guarantee of the replica bounds. The moves above are greedy and can stop at
    /// a local optimum with an owner one or a few replicas outside its bounds (few owners, a
    /// heavy one in most rows), although a table within every bound always exists: the
    /// bounds satisfy `lo <= hi <= P` with `sum(lo) <= R x P <= sum(hi)`, and any such
    /// counts are the column sums of some 0/1 table with R ones per row. Seen as a flow
    /// (partitions to owners, one unit per pair), an owner outside its bounds then has an
    /// augmenting path: a chain of owners, each taking a slot of the next in a row it does not
    /// hold, ending at an owner with load to spare or room. [`Work::pass_one`] over every slot
    /// finds the shortest such chain; each moves one unit and changes no other owner's load.
    /// Then the primaries are settled again, since a chain may pass a primary slot.
    fn augment_to_bounds(&mut self) {
        if self.width < 2 || (0..self.owners.len()).all(|o| self.replica_within_bounds(o)) {
            return;
        }
        let every: Vec<usize> = (0..self.slots.len()).collect();
        for owner in 0..self.owners.len() {
            let bound = self.replica_bounds[owner];
            while self.replicas[owner] < bound.lo && self.pass_one(&every, owner, true, Level::Cap)
            {
            }
            while self.replicas[owner] > bound.hi && self.pass_one(&every, owner, false, Level::Cap)
            {
            }
        }
        self.settle_primaries();
    }

    fn swap_primary(&mut self, partition: u32, slot: usize) {
        let row = self.row(partition);
        let (primary, other) = (row[0], row[slot]);
        self.set(partition, 0, VACANT);
        self.set(partition, slot, primary);
        self.set(partition, 0, other);
    }
}
