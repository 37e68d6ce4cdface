//! Placement for the replicated partition map (issue 10): which owners hold each partition.
//!
//! Pure: no IO, clock, threads or randomness, and no floating point anywhere a decision is made,
//! so every member computes the byte-identical [`Table`] from the same inputs.
//!
//! - A key belongs to partition [`partition_of`]`(key, P) = `[`key_hash`]`(key) % P` (XXH64, seed
//!   0; test vectors in docs/FORMAT.md, "Partition map: key hash and placement").
//! - Each partition has `min(R, owners)` distinct owners, the first being the primary. Each
//!   partition ranks all owners by its [`Strategy`]: weighted rendezvous (the default) or a
//!   consistent-hash ring with virtual nodes (see `score.rs` for both, exactly).
//!
//! Without a load cap ([`LoadCap::Unbounded`]) a partition's owners are simply its top-ranked
//! owners: the textbook algorithms, a pure function of the owner set, where a join or leave moves
//! only the partitions the changed owner gains or loses. Their balance is statistical: a
//! rendezvous owner's load is roughly Poisson, about +-15% at 41 partitions per owner.
//!
//! With a load cap `c` (default 1.02) every owner's primaries and its replicas each stay within
//! `[lo, hi]` around its weighted fair share `s`, `hi = max(ceil(s), floor(c s))` (never more
//! than the `ceil(c s)` of Mirrokni et al.), `lo = min(floor(s), ceil((2 - c) s))` (`lo = hi =
//! P` for an owner owed more than one replica per partition, held at every one), and the
//! table aims at exact integer targets (`floor(s)` or `ceil(s)`, largest remainder). Exact
//! balance for every owner set together with "a join moves only what the newcomer takes" cannot
//! hold for a table that is a function of the owner set alone: if every single-owner removal
//! moved only the removed owner's slots, each partition would follow one fixed ranking (take the
//! whole owner universe and remove owners one at a time), which is the uncapped strategy, whose
//! balance is only statistical. So a capped map is built from its previous table:
//! [`Table::apply`] moves the fewest slots it can (a joiner takes its target from the owners most
//! over theirs, choosing the partitions that rank it highest; a leaver's slots go, partition by
//! partition in ascending order, to the highest-ranked owner still under its target; where that
//! corners an owner already holding most rows, the vacancies are re-chosen along chains of
//! owners, moving nothing more, and only what still misses a bound moves between others). The
//! table is a deterministic function of the create parameters, the map's [`PlacementVersion`]
//! and the sequence of changes, which is what a replicated state machine replays; [`compute`] builds one from scratch (at creation, or
//! to compare) and is independent of the order owners are listed in. Two maps that saw the same
//! owners join in a different order may differ, and both are balanced.
//!
//! Primaries follow the same rule. When it cannot be met by choosing who fills a slot, an owner is
//! promoted to primary within a partition it already holds: a role change that moves no data but
//! appears in [`diff`] as two slot changes. [`replica_moves`] counts what must be copied.

mod balance;
mod hash;
mod score;
#[cfg(test)]
mod tests;

pub use hash::{key_hash, partition_of, xxh64};

use crate::error::{Error, Result};
use crate::limits::{
    MAX_MAP_OWNERS, MAX_MAP_PARTITIONS, MAX_MAP_REPLICAS, MAX_OWNER_ID_BYTES, MAX_OWNER_WEIGHT,
    MAX_RING_VNODES,
};
use bincode::{Decode, Encode};
use std::fmt;

/// Default number of partitions of a map.
pub const DEFAULT_PARTITIONS: u32 = 4096;
/// Default number of replicas per partition (the first is the primary).
pub const DEFAULT_REPLICAS: u32 = 3;
/// Default virtual nodes per unit of weight on a ring.
pub const DEFAULT_VNODES_PER_WEIGHT: u32 = 160;
/// Default load cap: 1.02, in per mille.
pub const DEFAULT_LOAD_CAP_PER_MILLE: u32 = 1020;
/// Largest load cap accepted (100x); beyond that, ask for [`LoadCap::Unbounded`].
pub const MAX_LOAD_CAP_PER_MILLE: u32 = 100_000;

/// An owner's id: any non-empty UTF-8 string up to [`MAX_OWNER_ID_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct OwnerId(pub String);

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for OwnerId {
    fn from(id: &str) -> OwnerId {
        OwnerId(id.to_string())
    }
}

/// An owner and its weight (1 ..= [`MAX_OWNER_WEIGHT`]); its fair share is proportional to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Who.
    pub id: OwnerId,
    /// How much, relative to the other owners.
    pub weight: u32,
}

impl Owner {
    /// An owner of `weight`.
    pub fn new(id: impl Into<String>, weight: u32) -> Owner {
        Owner {
            id: OwnerId(id.into()),
            weight,
        }
    }
}

/// How a partition ranks owners. Encoded in commands and the stored map (bincode: tag 0 `Ring`
/// with its u32, tag 1 `Rendezvous`), so variants are only ever appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub enum Strategy {
    /// Consistent-hash ring: `weight x vnodes_per_weight` virtual nodes per owner, clockwise.
    Ring {
        /// Virtual nodes per unit of weight (default [`DEFAULT_VNODES_PER_WEIGHT`]).
        vnodes_per_weight: u32,
    },
    /// Weighted rendezvous (highest random weight) hashing.
    #[default]
    Rendezvous,
}

impl Strategy {
    /// The name used in reports: `ring` or `rendezvous`.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Ring { .. } => "ring",
            Strategy::Rendezvous => "rendezvous",
        }
    }
}

/// The bound on an owner's load relative to its weighted fair share. Encoded like
/// [`Strategy`] (tag 0 `Unbounded`, tag 1 `PerMille` with its u32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum LoadCap {
    /// No bound: each partition takes its top-ranked owners.
    Unbounded,
    /// At most `max(ceil(s), floor(c s))` of share `s`, with `c` in per mille (>= 1000).
    PerMille(u32),
}

impl Default for LoadCap {
    fn default() -> LoadCap {
        LoadCap::PerMille(DEFAULT_LOAD_CAP_PER_MILLE)
    }
}

/// Which version of the capped placement algorithm computes a map's tables. Fixed when the map is
/// created and kept with it (in the create command and the stored record), so that the same
/// changes give the same table on every binary: a member that replays a map's log entries (after
/// a restart from an older snapshot, or during an upgrade next to members of the previous
/// release) computes exactly what the members that applied them first computed. A new algorithm
/// is a new version; the old ones stay, unchanged, for the maps that use them.
///
/// - 1: fill the vacancies, settle the primaries, repair (the algorithm before the vacancy chains
///   and the lift). Maps whose command and record carry no version are version 1.
/// - 2: the same, with the vacancy chains after the fill, the lift to the lower bounds after
///   the primaries, and augmenting chains over every slot before the repair, each run only when
///   an owner is out of its bounds (the last guarantees the replica bounds).
/// - 3: the same, except that a chain may pass a primary slot from an owner at its primary
///   lower bound when that owner can take the primary role back in another row it holds (from
///   a holder above its own lower bound), which it does at once. Version 2's chains stopped
///   there, and what a heavy owner should have taken moved between staying owners on a leave
///   (up to 5.6% over the minimum; version 3 at most 3.5%, seeds 0..4500). Maps created now.
///
/// Uncapped maps are the pure strategy in every version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct PlacementVersion(pub u32);

impl PlacementVersion {
    /// The algorithm before the vacancy chains and the lift.
    pub const V1: PlacementVersion = PlacementVersion(1);
    /// With the vacancy chains and the lift.
    pub const V2: PlacementVersion = PlacementVersion(2);
    /// With chains that pass a primary slot from an owner at its primary lower bound that can
    /// take a role back.
    pub const V3: PlacementVersion = PlacementVersion(3);
    /// The version new maps are created with, and the newest this build knows.
    pub const CURRENT: PlacementVersion = PlacementVersion::V3;

    /// `UnsupportedVersion` for a version newer than [`PlacementVersion::CURRENT`],
    /// `InvalidArgument` for 0.
    pub fn check(self) -> Result<()> {
        if self.0 == 0 {
            return Err(invalid("placement version 0 does not exist".into()));
        }
        if self > PlacementVersion::CURRENT {
            return Err(Error::UnsupportedVersion {
                what: "partition map placement",
                found: self.0,
                supported: PlacementVersion::CURRENT.0,
            });
        }
        Ok(())
    }
}

impl Default for PlacementVersion {
    fn default() -> PlacementVersion {
        PlacementVersion::CURRENT
    }
}

impl fmt::Display for PlacementVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A map's fixed parameters, chosen at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapParams {
    /// Partitions, 1 ..= [`MAX_MAP_PARTITIONS`].
    pub partitions: u32,
    /// Replicas per partition, 1 ..= [`MAX_MAP_REPLICAS`] (fewer while there are fewer owners).
    pub replicas: u32,
    /// How partitions rank owners.
    pub strategy: Strategy,
    /// The load bound.
    pub load_cap: LoadCap,
}

impl Default for MapParams {
    fn default() -> MapParams {
        MapParams {
            partitions: DEFAULT_PARTITIONS,
            replicas: DEFAULT_REPLICAS,
            strategy: Strategy::default(),
            load_cap: LoadCap::default(),
        }
    }
}

impl MapParams {
    /// Check the parameters against the limits.
    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > MAX_MAP_PARTITIONS {
            return Err(invalid(format!(
                "partitions must be 1..={MAX_MAP_PARTITIONS}, not {}",
                self.partitions
            )));
        }
        if self.replicas == 0 || self.replicas > MAX_MAP_REPLICAS {
            return Err(invalid(format!(
                "replicas must be 1..={MAX_MAP_REPLICAS}, not {}",
                self.replicas
            )));
        }
        if let Strategy::Ring { vnodes_per_weight } = self.strategy {
            if vnodes_per_weight == 0 || u64::from(vnodes_per_weight) > MAX_RING_VNODES {
                return Err(invalid(format!(
                    "vnodes per weight must be 1..={MAX_RING_VNODES}, not {vnodes_per_weight}"
                )));
            }
        }
        if let LoadCap::PerMille(c) = self.load_cap {
            if !(1000..=MAX_LOAD_CAP_PER_MILLE).contains(&c) {
                return Err(invalid(format!(
                    "load cap must be 1000..={MAX_LOAD_CAP_PER_MILLE} per mille, not {c}"
                )));
            }
        }
        Ok(())
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(format!("partition map: {message}"))
}

/// Check an owner list and return it sorted by id (the order owner indices refer to).
fn sorted_owners(owners: &[Owner], params: &MapParams) -> Result<Vec<Owner>> {
    if owners.len() > MAX_MAP_OWNERS {
        return Err(invalid(format!(
            "at most {MAX_MAP_OWNERS} owners, not {}",
            owners.len()
        )));
    }
    let mut total_weight: u64 = 0;
    for owner in owners {
        check_owner_id(&owner.id)?;
        check_weight(owner.weight)?;
        total_weight += u64::from(owner.weight);
    }
    if let Strategy::Ring { vnodes_per_weight } = params.strategy {
        let vnodes = total_weight * u64::from(vnodes_per_weight);
        if vnodes > MAX_RING_VNODES {
            return Err(invalid(format!(
                "the ring would have {vnodes} virtual nodes, more than {MAX_RING_VNODES}"
            )));
        }
    }
    let mut sorted = owners.to_vec();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].id == pair[1].id) {
        return Err(invalid(format!("owner {} is listed twice", pair[0].id)));
    }
    Ok(sorted)
}

fn check_owner_id(id: &OwnerId) -> Result<()> {
    if id.0.is_empty() || id.0.len() > MAX_OWNER_ID_BYTES {
        return Err(invalid(format!(
            "an owner id is 1..={MAX_OWNER_ID_BYTES} bytes, not {}",
            id.0.len()
        )));
    }
    Ok(())
}

fn check_weight(weight: u32) -> Result<()> {
    if weight == 0 || weight > MAX_OWNER_WEIGHT {
        return Err(invalid(format!(
            "an owner's weight is 1..={MAX_OWNER_WEIGHT}, not {weight}"
        )));
    }
    Ok(())
}

/// One change to a map's owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new owner arrives.
    Join(Owner),
    /// An owner departs.
    Leave(OwnerId),
    /// An owner's weight changes.
    SetWeight(OwnerId, u32),
}

/// An owner's load in a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerLoad {
    /// Partitions where it is the primary.
    pub primaries: u32,
    /// Partitions it holds in any slot (primaries included).
    pub replicas: u32,
}

/// The placement of every partition: `partitions x width` owner indices, `width = min(R,
/// owners)`, row `p` listing partition p's owners, primary first, all distinct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    params: MapParams,
    /// The algorithm [`Table::apply`] recomputes with.
    version: PlacementVersion,
    /// Sorted by id; the slots hold indices into this.
    owners: Vec<Owner>,
    width: usize,
    slots: Vec<u32>,
}

/// Build a map's table from scratch for `owners` (in any order: the result does not depend on
/// it). For a capped map this is where a map starts; later changes go through [`Table::apply`].
/// [`PlacementVersion::CURRENT`]: see [`compute_at`].
pub fn compute(owners: &[Owner], params: &MapParams) -> Result<Table> {
    compute_at(owners, params, PlacementVersion::CURRENT)
}

/// [`compute`] with placement algorithm `version` (`UnsupportedVersion` if this build does not
/// know it); the table's later changes use the same version.
pub fn compute_at(
    owners: &[Owner],
    params: &MapParams,
    version: PlacementVersion,
) -> Result<Table> {
    version.check()?;
    params.validate()?;
    let owners = sorted_owners(owners, params)?;
    Ok(balance::build(*params, owners, version))
}

impl Table {
    /// The parameters the table was built with.
    pub fn params(&self) -> &MapParams {
        &self.params
    }

    /// The placement algorithm the table is computed with (see [`PlacementVersion`]).
    pub fn version(&self) -> PlacementVersion {
        self.version
    }

    /// The owners, sorted by id; [`Table::row`] and [`Table::lookup`] return indices into this.
    pub fn owners(&self) -> &[Owner] {
        &self.owners
    }

    /// Owners per partition: `min(R, owners)`.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The index of the owner `id`, if it is one.
    pub fn owner_index(&self, id: &OwnerId) -> Option<usize> {
        self.owners.binary_search_by(|o| o.id.cmp(id)).ok()
    }

    /// Partition `partition`'s owners (indices into [`Table::owners`]), primary first. Empty for
    /// a partition number out of range or a map without owners.
    #[inline]
    pub fn row(&self, partition: u32) -> &[u32] {
        let start = partition as usize * self.width;
        self.slots.get(start..start + self.width).unwrap_or(&[])
    }

    /// The partition of `key` and its owners: a hash, a remainder and a slice, no allocation.
    #[inline]
    pub fn lookup(&self, key: &[u8]) -> (u32, &[u32]) {
        let partition = partition_of(key, self.params.partitions);
        (partition, self.row(partition))
    }

    /// Every owner's load, by owner index.
    pub fn loads(&self) -> Vec<OwnerLoad> {
        let mut loads = vec![OwnerLoad::default(); self.owners.len()];
        for row in self.slots.chunks_exact(self.width.max(1)) {
            for (slot, &owner) in row.iter().enumerate() {
                let load = &mut loads[owner as usize];
                load.replicas += 1;
                if slot == 0 {
                    load.primaries += 1;
                }
            }
        }
        loads
    }

    /// The table after one change. Unbounded maps recompute from scratch (the pure strategy);
    /// capped maps move as little as the bounds allow (see the module doc).
    pub fn apply(&self, change: &Change) -> Result<Table> {
        let mut owners = self.owners.clone();
        match change {
            Change::Join(owner) => {
                if self.owner_index(&owner.id).is_some() {
                    return Err(invalid(format!("owner {} has already joined", owner.id)));
                }
                owners.push(owner.clone());
            }
            Change::Leave(id) => {
                let index = self.known(id)?;
                owners.remove(index);
            }
            Change::SetWeight(id, weight) => {
                let index = self.known(id)?;
                check_weight(*weight)?;
                owners[index].weight = *weight;
            }
        }
        let owners = sorted_owners(&owners, &self.params)?;
        Ok(match self.params.load_cap {
            LoadCap::Unbounded => balance::build(self.params, owners, self.version),
            LoadCap::PerMille(_) => balance::rebalance(self, owners, change),
        })
    }

    /// Every slot, row after row (`partitions x width` owner indices).
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Rebuild a table from its parts (a stored or received copy), checking everything a table
    /// promises: valid parameters, owners valid, sorted by id and distinct, `width = min(R,
    /// owners)`, `partitions x width` slots, each an owner index, distinct within a row.
    /// `InvalidArgument` naming the first defect otherwise; never panics.
    /// The table uses [`PlacementVersion::CURRENT`]; see [`Table::from_parts_at`].
    pub fn from_parts(params: MapParams, owners: Vec<Owner>, slots: Vec<u32>) -> Result<Table> {
        Table::from_parts_at(params, PlacementVersion::CURRENT, owners, slots)
    }

    /// [`Table::from_parts`] for a table of placement algorithm `version` (`UnsupportedVersion`
    /// if this build does not know it).
    pub fn from_parts_at(
        params: MapParams,
        version: PlacementVersion,
        owners: Vec<Owner>,
        slots: Vec<u32>,
    ) -> Result<Table> {
        version.check()?;
        params.validate()?;
        let sorted = sorted_owners(&owners, &params)?;
        if sorted != owners {
            return Err(invalid("owners are not sorted by id".into()));
        }
        let width = (params.replicas as usize).min(owners.len());
        if slots.len() as u64 != u64::from(params.partitions) * width as u64 {
            return Err(invalid(format!(
                "{} slots for {} partitions of {width} owners",
                slots.len(),
                params.partitions
            )));
        }
        for (partition, row) in slots.chunks(width.max(1)).enumerate() {
            for (i, &owner) in row.iter().enumerate() {
                if owner as usize >= owners.len() || row[..i].contains(&owner) {
                    return Err(invalid(format!(
                        "partition {partition}: slot {i} holds owner index {owner}, not a \
                         distinct owner of {}",
                        owners.len()
                    )));
                }
            }
        }
        Ok(Table {
            params,
            version,
            owners,
            width,
            slots,
        })
    }

    fn known(&self, id: &OwnerId) -> Result<usize> {
        self.owner_index(id)
            .ok_or_else(|| invalid(format!("{id} is not an owner")))
    }

    /// The canonical bytes of the table, for comparing tables across members and runs: the
    /// partitions, the width, then each owner (id length u16 LE, id, weight u32 LE), then each
    /// slot as u32 LE. Not a stored format (that is part of the state layout, later).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.slots.len() * 4);
        out.extend_from_slice(&self.params.partitions.to_le_bytes());
        out.extend_from_slice(&(self.width as u32).to_le_bytes());
        for owner in &self.owners {
            out.extend_from_slice(&(owner.id.0.len() as u16).to_le_bytes());
            out.extend_from_slice(owner.id.0.as_bytes());
            out.extend_from_slice(&owner.weight.to_le_bytes());
        }
        for slot in &self.slots {
            out.extend_from_slice(&slot.to_le_bytes());
        }
        out
    }
}

/// One slot whose owner changed between two tables.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Move {
    /// The partition.
    pub partition: u32,
    /// The slot (0 is the primary).
    pub slot: u32,
    /// Who held the slot before (`None`: the slot is new, the map had fewer owners than R).
    pub from: Option<OwnerId>,
    /// Who holds it now (`None`: the slot is gone, the map has fewer owners than R now).
    pub to: Option<OwnerId>,
}

fn check_same_partitions(old: &Table, new: &Table) -> Result<()> {
    if old.params.partitions != new.params.partitions {
        return Err(invalid(format!(
            "cannot compare a map of {} partitions with one of {}",
            old.params.partitions, new.params.partitions
        )));
    }
    Ok(())
}

/// Every slot whose owner differs between `old` and `new`, by partition then slot. Epochs are
/// the caller's.
pub fn diff(old: &Table, new: &Table) -> Result<Vec<Move>> {
    check_same_partitions(old, new)?;
    let id = |table: &Table, row: &[u32], slot: usize| {
        row.get(slot)
            .map(|&owner| table.owners[owner as usize].id.clone())
    };
    let mut moves = Vec::new();
    for partition in 0..old.params.partitions {
        let (old_row, new_row) = (old.row(partition), new.row(partition));
        for slot in 0..old.width.max(new.width) {
            let (from, to) = (id(old, old_row, slot), id(new, new_row, slot));
            if from != to {
                moves.push(Move {
                    partition,
                    slot: slot as u32,
                    from,
                    to,
                });
            }
        }
    }
    Ok(moves)
}

/// Partition-replica moves from `old` to `new`: per partition, the larger of the owners it
/// gained and the owners it lost. This is what must be copied; a primary handed to another
/// owner of the same partition counts nothing.
pub fn replica_moves(old: &Table, new: &Table) -> Result<u64> {
    check_same_partitions(old, new)?;
    let mut moved = 0;
    for partition in 0..old.params.partitions {
        let old_ids: Vec<&OwnerId> = old
            .row(partition)
            .iter()
            .map(|&o| &old.owners[o as usize].id)
            .collect();
        let new_ids: Vec<&OwnerId> = new
            .row(partition)
            .iter()
            .map(|&o| &new.owners[o as usize].id)
            .collect();
        let gained = new_ids.iter().filter(|id| !old_ids.contains(id)).count();
        let lost = old_ids.iter().filter(|id| !new_ids.contains(id)).count();
        moved += gained.max(lost) as u64;
    }
    Ok(moved)
}
