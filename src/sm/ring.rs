//! The replicated partition map (issue 10): named maps whose tables (`placement.rs`'s [`Table`])
//! live in the replicated state under the prefix `r`, changed by commands through the log.
//!
//! - [`Op::CreateMapVersioned`](super::Op::CreateMapVersioned) makes an empty map at epoch 1
//!   with its placement version (the algorithm of every later change; an old-format
//!   [`Op::CreateMap`](super::Op::CreateMap) makes a map of version 1, see `PlacementVersion`);
//!   [`Op::JoinMap`](super::Op::JoinMap), [`Op::LeaveMap`](super::Op::LeaveMap) and
//!   [`Op::SetOwnerWeight`](super::Op::SetOwnerWeight) each change it by one
//!   [`Change`], computed once, here, at apply ([`Table::apply`]: deterministic, integer only), so
//!   every member stores the byte-identical table. Each change bumps the epoch by one and stores
//!   the slots it moved ([`EpochMoves`]) for the last `MAX_MAP_MOVES_EPOCHS` epochs.
//! - A change the map refuses (an unknown map or owner, an owner that joined already, a weight
//!   out of range) is [`CommandResult::Rejected`], identical everywhere; nothing changes.
//! - Decoded tables are kept in memory ([`MapReader`]), shared with the member's readers, so
//!   `owners(name, key)` is a hash, a remainder and a slice of a table this member has applied,
//!   with no round trip and no decoding. The stored records are the truth: the cache is loaded
//!   from them at open and after a snapshot restore, and replaced by every applied change.

use super::layout::{
    decode_map_record, encode_map_record, map_key, map_moves_key, parse_map_key, sled_error,
    PREFIX_RING,
};
use super::map_record::{decode_map, encode_map};
pub use super::map_record::{EpochMoves, MapRecord, Owners, PartitionMap, SlotMove, FIRST_EPOCH};
use super::overlay::Overlay;
use super::placement::{diff, replica_moves, Change, MapParams, PlacementVersion};
use super::result::{CommandResult, MapChange};
use crate::error::{Error, Result};
use crate::limits::{
    MAX_KEY_BYTES, MAX_MAPS, MAX_MAP_MOVES_EPOCHS, MAX_MAP_NAME_BYTES, MAX_MAP_SLOTS,
    MAX_MOVES_PER_READ, MAX_OWNER_ID_BYTES, MAX_OWNER_WEIGHT,
};
use bincode::{Decode, Encode};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The answer to `moves(name, since_epoch)`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum MapMoves {
    /// The moves of the epochs after `since_epoch`, oldest first. May stop before
    /// `current_epoch` when there are many (`MAX_MOVES_PER_READ`): ask again from the last.
    Moves {
        /// The map's epoch now.
        current_epoch: u64,
        /// One entry per epoch.
        epochs: Vec<EpochMoves>,
    },
    /// The moves after `since_epoch` are no longer kept (only the last `MAX_MAP_MOVES_EPOCHS`
    /// epochs are): read the whole map instead.
    Compacted {
        /// The map's epoch now.
        current_epoch: u64,
        /// The oldest `since_epoch` still answered.
        oldest_since: u64,
    },
}

/// The maps a member has applied, decoded, shared between the state machine (which replaces a
/// map after each change) and the member's readers (the in-process client answers
/// `owners(name, key)` from it without a round trip).
#[derive(Debug, Clone, Default)]
pub struct MapReader {
    maps: Arc<RwLock<BTreeMap<String, Arc<PartitionMap>>>>,
}

impl MapReader {
    /// Map `name` as this member last applied it.
    pub fn get(&self, name: &str) -> Option<Arc<PartitionMap>> {
        self.read().get(name).cloned()
    }

    /// How many maps there are.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<PartitionMap>>> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<PartitionMap>>> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Install the maps a batch changed.
    pub(crate) fn publish(&self, changed: BTreeMap<String, Arc<PartitionMap>>) {
        if changed.is_empty() {
            return;
        }
        self.write().extend(changed);
    }

    /// Replace every map by those stored in `tree` (at open, after a restore).
    pub(crate) fn load(&self, tree: &sled::Tree) -> Result<()> {
        let mut maps = BTreeMap::new();
        for item in tree.scan_prefix([PREFIX_RING]) {
            let (key, value) = item.map_err(|e| sled_error("loading the partition maps", e))?;
            match parse_map_key(&key) {
                Some((name, None)) => {
                    let map = decode_map(&value).map_err(|e| match e {
                        Error::Corrupt { .. } => {
                            Error::corrupt(0, format!("state partition map {name:?}: {e}"))
                        }
                        e => e,
                    })?;
                    maps.insert(name.to_string(), Arc::new(map));
                }
                Some((_, Some(_))) => {}
                None => {
                    return Err(Error::corrupt(
                        0,
                        "malformed partition map key in the state",
                    ))
                }
            }
        }
        *self.write() = maps;
        Ok(())
    }

    /// Forget every map (after a failed reload: never serve the old state's maps).
    pub(crate) fn clear(&self) {
        self.write().clear();
    }
}

/// The maps as one apply batch sees them: the ones it changed, over the applied ones.
pub(crate) struct BatchMaps<'m> {
    applied: &'m MapReader,
    changed: BTreeMap<String, Arc<PartitionMap>>,
}

impl<'m> BatchMaps<'m> {
    pub(crate) fn new(applied: &'m MapReader) -> BatchMaps<'m> {
        BatchMaps {
            applied,
            changed: BTreeMap::new(),
        }
    }

    fn get(&self, name: &str) -> Option<Arc<PartitionMap>> {
        match self.changed.get(name) {
            Some(map) => Some(Arc::clone(map)),
            None => self.applied.get(name),
        }
    }

    fn count(&self) -> usize {
        let new = self
            .changed
            .keys()
            .filter(|name| self.applied.get(name).is_none())
            .count();
        self.applied.len() + new
    }

    /// The maps the batch changed, to publish once the batch is applied.
    pub(crate) fn into_changed(self) -> BTreeMap<String, Arc<PartitionMap>> {
        self.changed
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(format!("partition map: {message}"))
}

fn rejected(e: Error) -> CommandResult {
    CommandResult::Rejected {
        reason: e.to_string(),
    }
}

/// A map name: 1..=`MAX_MAP_NAME_BYTES` bytes of UTF-8.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_MAP_NAME_BYTES {
        return Err(invalid(format!(
            "a map name is 1..={MAX_MAP_NAME_BYTES} bytes, not {}",
            name.len()
        )));
    }
    Ok(())
}

fn validate_owner(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.len() > MAX_OWNER_ID_BYTES {
        return Err(invalid(format!(
            "an owner id is 1..={MAX_OWNER_ID_BYTES} bytes, not {}",
            owner.len()
        )));
    }
    Ok(())
}

fn validate_weight(weight: u32) -> Result<()> {
    if weight == 0 || weight > MAX_OWNER_WEIGHT {
        return Err(invalid(format!(
            "an owner's weight is 1..={MAX_OWNER_WEIGHT}, not {weight}"
        )));
    }
    Ok(())
}

/// The limits of [`Op::CreateMap`](super::Op::CreateMap).
pub(crate) fn validate_create(name: &str, params: &MapParams) -> Result<()> {
    validate_name(name)?;
    params.validate()?;
    let slots = u64::from(params.partitions) * u64::from(params.replicas);
    if slots > MAX_MAP_SLOTS {
        return Err(invalid(format!(
            "partitions x replicas is {slots}, over the limit of {MAX_MAP_SLOTS}"
        )));
    }
    Ok(())
}

/// The limits of a join or a weight change.
pub(crate) fn validate_owner_weight(name: &str, owner: &str, weight: u32) -> Result<()> {
    validate_name(name)?;
    validate_owner(owner)?;
    validate_weight(weight)
}

/// The limits of a leave.
pub(crate) fn validate_leave(name: &str, owner: &str) -> Result<()> {
    validate_name(name)?;
    validate_owner(owner)
}

/// The limits of a read naming a map and a key.
pub(crate) fn validate_key_read(name: &str, key: &[u8]) -> Result<()> {
    validate_name(name)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid(format!(
            "a key is at most {MAX_KEY_BYTES} bytes, not {}",
            key.len()
        )));
    }
    Ok(())
}

/// Apply [`Op::CreateMap`](super::Op::CreateMap) (`placement` 1) or
/// [`Op::CreateMapVersioned`](super::Op::CreateMapVersioned): an empty map at [`FIRST_EPOCH`],
/// whose tables placement algorithm `placement` computes from then on. Rejected if the name is
/// taken or `MAX_MAPS` maps exist.
pub(crate) fn create_map(
    overlay: &mut Overlay<'_>,
    maps: &mut BatchMaps<'_>,
    name: &str,
    params: MapParams,
    placement: PlacementVersion,
) -> Result<CommandResult> {
    if maps.get(name).is_some() {
        return Ok(rejected(invalid(format!("map {name:?} exists already"))));
    }
    if maps.count() >= MAX_MAPS {
        return Ok(rejected(invalid(format!(
            "there are {MAX_MAPS} maps already, the most there may be"
        ))));
    }
    let table = match super::placement::compute_at(&[], &params, placement) {
        Ok(table) => table,
        Err(e) => return Ok(rejected(e)),
    };
    let map = PartitionMap {
        epoch: FIRST_EPOCH,
        table,
    };
    overlay.insert(map_key(name), encode_map(&map)?);
    maps.changed.insert(name.to_string(), Arc::new(map));
    Ok(CommandResult::MapChanged(MapChange {
        epoch: FIRST_EPOCH,
        slots_moved: 0,
        replica_moves: 0,
    }))
}

/// Apply one change to map `name`: the new table ([`Table::apply`]), its epoch, its moves; the
/// moves of the epoch `MAX_MAP_MOVES_EPOCHS` back are dropped. Rejected (nothing changed) for an
/// unknown map and for any change the table refuses.
pub(crate) fn change_map(
    overlay: &mut Overlay<'_>,
    maps: &mut BatchMaps<'_>,
    name: &str,
    change: &Change,
) -> Result<CommandResult> {
    let Some(map) = maps.get(name) else {
        return Ok(rejected(invalid(format!("there is no map named {name:?}"))));
    };
    let table = match map.table.apply(change) {
        Ok(table) => table,
        Err(e) => return Ok(rejected(e)),
    };
    let moves = diff(&map.table, &table)?;
    let replica_moves = replica_moves(&map.table, &table)?;
    let epoch = map.epoch + 1;
    let map = PartitionMap { epoch, table };
    overlay.insert(map_key(name), encode_map(&map)?);
    overlay.insert(
        map_moves_key(name, epoch),
        encode_map_record(&EpochMoves::from_moves(epoch, &moves))?,
    );
    if let Some(dropped) = epoch.checked_sub(MAX_MAP_MOVES_EPOCHS) {
        if dropped > FIRST_EPOCH {
            overlay.remove(map_moves_key(name, dropped));
        }
    }
    maps.changed.insert(name.to_string(), Arc::new(map));
    Ok(CommandResult::MapChanged(MapChange {
        epoch,
        slots_moved: moves.len() as u64,
        replica_moves,
    }))
}

/// The oldest `since_epoch` a map at `epoch` still answers moves for.
pub fn oldest_moves_since(epoch: u64) -> u64 {
    epoch.saturating_sub(MAX_MAP_MOVES_EPOCHS)
}

/// The moves of map `name` (now at `epoch`) after `since_epoch`, read through `view`.
pub(crate) fn read_moves(
    view: &Overlay<'_>,
    name: &str,
    epoch: u64,
    since_epoch: u64,
) -> Result<MapMoves> {
    let oldest_since = oldest_moves_since(epoch);
    if since_epoch < oldest_since {
        return Ok(MapMoves::Compacted {
            current_epoch: epoch,
            oldest_since,
        });
    }
    let mut epochs = Vec::new();
    let mut count = 0u64;
    // Epoch 1 (the creation) moved nothing and has no record.
    for e in since_epoch.max(FIRST_EPOCH) + 1..=epoch {
        if count >= MAX_MOVES_PER_READ {
            break;
        }
        let Some(bytes) = view.get(&map_moves_key(name, e))? else {
            return Err(Error::corrupt(
                0,
                format!("partition map {name:?}: the moves of epoch {e} are missing"),
            ));
        };
        let moves: EpochMoves = decode_map_record("partition map moves", &bytes)?;
        count += moves.moves.len() as u64;
        epochs.push(moves);
    }
    Ok(MapMoves::Moves {
        current_epoch: epoch,
        epochs,
    })
}

/// The unknown-map error of reads.
pub(crate) fn no_such_map(name: &str) -> Error {
    invalid(format!("there is no map named {name:?}"))
}
