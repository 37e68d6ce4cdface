//! The stored records of the partition maps (`ring.rs`) and their decoded forms: the plumbing
//! below both `layout.rs` (which checks every record of a snapshot) and `ring.rs` (which writes
//! them), kept apart from `layout.rs` only for its size. Byte layout: `docs/FORMAT.md`,
//! "Partition map records".

use super::placement::{
    LoadCap, MapParams, Move, Owner, OwnerId, PlacementVersion, Strategy, Table,
};
use super::record::decode_record;
use crate::error::{Error, Result};
use bincode::{Decode, Encode};

fn invalid(message: String) -> Error {
    Error::InvalidArgument(format!("partition map: {message}"))
}

/// The epoch of a freshly created map (no owners yet).
pub const FIRST_EPOCH: u64 = 1;

/// A stored map: its epoch, parameters, owners and table, exactly as `r` ‖ len ‖ name holds it
/// (after the record's version byte; `docs/FORMAT.md`, "Partition map records"). Also the
/// answer to a `map` read.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MapRecord {
    /// Bumped by every change; [`FIRST_EPOCH`] at creation.
    pub epoch: u64,
    /// Partitions.
    pub partitions: u32,
    /// Replicas per partition.
    pub replicas: u32,
    /// The placement strategy.
    pub strategy: Strategy,
    /// The load cap.
    pub load_cap: LoadCap,
    /// Owners sorted by id, with their weights.
    pub owners: Vec<(OwnerId, u32)>,
    /// `partitions x min(replicas, owners)` owner indices, row after row, primary first.
    pub slots: Vec<u32>,
}

impl MapRecord {
    /// The map it describes, checked (`InvalidArgument` naming the defect), as a table of
    /// [`PlacementVersion::CURRENT`]: for a copy that is only read (a `map` answer does not carry
    /// the placement version, and only the state machine recomputes tables).
    pub fn to_map(&self) -> Result<PartitionMap> {
        self.to_map_at(PlacementVersion::CURRENT)
    }

    /// The map it describes, recomputed on later changes by placement algorithm `placement`
    /// (`UnsupportedVersion` if this build does not know it, `InvalidArgument` naming any other
    /// defect).
    pub fn to_map_at(&self, placement: PlacementVersion) -> Result<PartitionMap> {
        let params = MapParams {
            partitions: self.partitions,
            replicas: self.replicas,
            strategy: self.strategy,
            load_cap: self.load_cap,
        };
        let owners = self
            .owners
            .iter()
            .map(|(id, weight)| Owner {
                id: id.clone(),
                weight: *weight,
            })
            .collect();
        let table = Table::from_parts_at(params, placement, owners, self.slots.clone())?;
        if self.epoch < FIRST_EPOCH {
            return Err(invalid("a map's epoch starts at 1".into()));
        }
        Ok(PartitionMap {
            epoch: self.epoch,
            table,
        })
    }
}

/// Version byte of the `r` records (`MapRecord`, `EpochMoves`): each is this byte, then its
/// bincode encoding. A newer version is `UnsupportedVersion`, except that a map of placement
/// version 2 or later is stored under version 2 (`map_record::encode_map`).
pub(crate) const MAP_RECORD_VERSION: u8 = 1;

/// Encode an `r` record: the version byte, then bincode.
pub(crate) fn encode_map_record<T: Encode>(record: &T) -> Result<Vec<u8>> {
    let mut out = vec![MAP_RECORD_VERSION];
    crate::codec::encode_value_into(record, &mut out)?;
    Ok(out)
}

/// Decode an `r` record (see [`encode_map_record`]).
pub(crate) fn decode_map_record<T: Decode<()>>(what: &str, bytes: &[u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&MAP_RECORD_VERSION, body)) => decode_record(what, body),
        Some((&version, _)) if version > MAP_RECORD_VERSION => Err(Error::UnsupportedVersion {
            what: "partition map record",
            found: u32::from(version),
            supported: u32::from(MAP_RECORD_VERSION),
        }),
        _ => Err(Error::corrupt(
            0,
            format!("state {what} record: bad version byte"),
        )),
    }
}

/// Version byte of the stored record of a map of placement version 2 or later: the
/// [`MapRecord`], then the placement version (bincode u32). A map of placement version 1 is
/// stored as before, under [`MAP_RECORD_VERSION`] (1) without the field, byte for byte what a
/// build from before placement versions wrote and reads.
pub(crate) const MAP_RECORD_PLACEMENT_VERSION: u8 = 2;

/// The body of a [`MAP_RECORD_PLACEMENT_VERSION`] record.
#[derive(Encode, Decode)]
struct PlacedMapRecord {
    record: MapRecord,
    placement: PlacementVersion,
}

/// The stored record of `map` (`docs/FORMAT.md`, "Partition map records").
pub(crate) fn encode_map(map: &PartitionMap) -> Result<Vec<u8>> {
    let record = map.to_record();
    let placement = map.table.version();
    if placement == PlacementVersion::V1 {
        return encode_map_record(&record);
    }
    let mut out = vec![MAP_RECORD_PLACEMENT_VERSION];
    crate::codec::encode_value_into(&PlacedMapRecord { record, placement }, &mut out)?;
    Ok(out)
}

/// Decode a stored map record into the map, checked: `UnsupportedVersion` for a record version
/// or placement version this build does not know, `Corrupt` for any other defect.
pub(crate) fn decode_map(bytes: &[u8]) -> Result<PartitionMap> {
    let corrupt = |why: String| Error::corrupt(0, format!("state partition map record: {why}"));
    let (record, placement) = match bytes.split_first() {
        Some((&MAP_RECORD_VERSION, body)) => (
            decode_record::<MapRecord>("partition map", body)?,
            PlacementVersion::V1,
        ),
        Some((&MAP_RECORD_PLACEMENT_VERSION, body)) => {
            let placed: PlacedMapRecord = decode_record("partition map", body)?;
            if placed.placement <= PlacementVersion::V1 {
                // Version 1 has its own record version: one encoding per map.
                return Err(corrupt(format!(
                    "placement version {} in a record of version {MAP_RECORD_PLACEMENT_VERSION}",
                    placed.placement
                )));
            }
            placed.placement.check()?;
            (placed.record, placed.placement)
        }
        Some((&version, _)) if version > MAP_RECORD_PLACEMENT_VERSION => {
            return Err(Error::UnsupportedVersion {
                what: "partition map record",
                found: u32::from(version),
                supported: u32::from(MAP_RECORD_PLACEMENT_VERSION),
            })
        }
        _ => return Err(corrupt("bad version byte".into())),
    };
    record
        .to_map_at(placement)
        .map_err(|e| corrupt(e.to_string()))
}

/// A map as a member has applied it: its epoch and table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMap {
    /// The epoch of this table.
    pub epoch: u64,
    /// The table.
    pub table: Table,
}

impl PartitionMap {
    /// The partition of `key` and its owners, primary first.
    pub fn owners(&self, key: &[u8]) -> Owners {
        let (partition, row) = self.table.lookup(key);
        let owners = self.table.owners();
        Owners {
            epoch: self.epoch,
            partition,
            owners: row.iter().map(|&o| owners[o as usize].id.clone()).collect(),
        }
    }

    /// The stored form.
    pub fn to_record(&self) -> MapRecord {
        let params = self.table.params();
        MapRecord {
            epoch: self.epoch,
            partitions: params.partitions,
            replicas: params.replicas,
            strategy: params.strategy,
            load_cap: params.load_cap,
            owners: self
                .table
                .owners()
                .iter()
                .map(|o| (o.id.clone(), o.weight))
                .collect(),
            slots: self.table.slots().to_vec(),
        }
    }
}

/// Who owns a key: the answer of `owners(name, key)`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Owners {
    /// The epoch of the table that answered (compare to know the answer is recent enough).
    pub epoch: u64,
    /// The key's partition.
    pub partition: u32,
    /// Its owners, primary first (`min(R, owners)` of them; none while the map has no owner).
    pub owners: Vec<OwnerId>,
}

/// One moved slot, with owners as indices into [`EpochMoves::owners`] plus one (0: none), so
/// that an epoch that moves many slots names each owner once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct SlotMove {
    /// The partition.
    pub partition: u32,
    /// The slot (0 is the primary).
    pub slot: u32,
    /// Who held it: index into `owners` plus one; 0 for a slot that is new.
    pub from: u32,
    /// Who holds it now: index into `owners` plus one; 0 for a slot that is gone.
    pub to: u32,
}

/// The slots one change moved (`placement::diff` of the tables before and after), by partition
/// then slot. Stored under `r` ‖ len ‖ name ‖ epoch and returned by `moves` reads.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EpochMoves {
    /// The epoch the change made.
    pub epoch: u64,
    /// Every owner a move names, sorted by id.
    pub owners: Vec<OwnerId>,
    /// The moved slots.
    pub moves: Vec<SlotMove>,
}

impl EpochMoves {
    pub(crate) fn from_moves(epoch: u64, moves: &[Move]) -> EpochMoves {
        let mut owners: Vec<OwnerId> = moves
            .iter()
            .flat_map(|m| m.from.iter().chain(m.to.iter()))
            .cloned()
            .collect();
        owners.sort();
        owners.dedup();
        let index = |id: &Option<OwnerId>| match id {
            // Found: every id of `moves` is in `owners`.
            Some(id) => owners.binary_search(id).map_or(0, |i| i as u32 + 1),
            None => 0,
        };
        let moves = moves
            .iter()
            .map(|m| SlotMove {
                partition: m.partition,
                slot: m.slot,
                from: index(&m.from),
                to: index(&m.to),
            })
            .collect();
        EpochMoves {
            epoch,
            owners,
            moves,
        }
    }

    fn owner(&self, index: u32) -> Result<Option<OwnerId>> {
        match index {
            0 => Ok(None),
            i => self
                .owners
                .get(i as usize - 1)
                .cloned()
                .map(Some)
                .ok_or_else(|| invalid(format!("move names owner {i} of {}", self.owners.len()))),
        }
    }

    /// The moves with owner ids (`InvalidArgument` for an index out of range).
    pub fn moves(&self) -> Result<Vec<Move>> {
        self.moves
            .iter()
            .map(|m| {
                Ok(Move {
                    partition: m.partition,
                    slot: m.slot,
                    from: self.owner(m.from)?,
                    to: self.owner(m.to)?,
                })
            })
            .collect()
    }

    /// Check a stored record of epoch `epoch` (`Corrupt` if it is not valid).
    pub(crate) fn check(&self, epoch: u64) -> Result<()> {
        let bad = |why: String| Error::corrupt(0, format!("state partition map moves: {why}"));
        if self.epoch != epoch || epoch <= FIRST_EPOCH {
            return Err(bad(format!(
                "epoch {} under the key of {epoch}",
                self.epoch
            )));
        }
        if self.owners.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("owners are not sorted and distinct".into()));
        }
        self.moves().map(drop).map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::sm::placement::{compute_at, Change};

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// tests/sm_ring.rs, `PINNED_RECORD_HEX`: a record as the previous release stored it
    /// (record version 1, no placement version).
    const OLD_RECORD_HEX: &str =
        "010408020101fbfc03030161010162010163021002000102000202000102020102010002";

    fn map_of(placement: PlacementVersion) -> PartitionMap {
        let params = MapParams {
            partitions: 8,
            replicas: 2,
            ..MapParams::default()
        };
        let mut table = compute_at(&[], &params, placement).unwrap();
        for (id, weight) in [("a", 1), ("b", 1), ("c", 2)] {
            table = table.apply(&Change::Join(Owner::new(id, weight))).unwrap();
        }
        PartitionMap { epoch: 4, table }
    }

    #[test]
    fn an_old_record_decodes_as_version_1_and_encodes_to_the_same_bytes() {
        let bytes = unhex(OLD_RECORD_HEX);
        let map = decode_map(&bytes).unwrap();
        assert_eq!(map.table.version(), PlacementVersion::V1);
        assert_eq!(map.epoch, 4);
        assert_eq!(encode_map(&map).unwrap(), bytes);
        assert_eq!(map, map_of(PlacementVersion::V1));
    }

    #[test]
    fn a_version_2_map_is_stored_under_record_version_2_and_round_trips() {
        let map = map_of(PlacementVersion::V2);
        let bytes = encode_map(&map).unwrap();
        assert_eq!(bytes[0], MAP_RECORD_PLACEMENT_VERSION);
        // The old record's body, then the placement version (bincode varint 2).
        let old = unhex(OLD_RECORD_HEX);
        assert_eq!(&bytes[1..bytes.len() - 1], &old[1..]);
        assert_eq!(bytes[bytes.len() - 1], 2);
        assert_eq!(decode_map(&bytes).unwrap(), map);
    }

    #[test]
    fn an_unknown_version_is_refused_and_a_second_encoding_is_corrupt() {
        let mut bytes = encode_map(&map_of(PlacementVersion::V2)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = (PlacementVersion::CURRENT.0 + 1) as u8;
        let err = decode_map(&bytes).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnsupportedVersion, "{err}");
        // Version 1 in a record of version 2: a second encoding of the same map.
        bytes[last] = 1;
        assert_eq!(decode_map(&bytes).unwrap_err().code(), ErrorCode::Corrupt);
        bytes[last] = 0;
        assert_eq!(decode_map(&bytes).unwrap_err().code(), ErrorCode::Corrupt);
        // A newer record version.
        let mut newer = unhex(OLD_RECORD_HEX);
        newer[0] = MAP_RECORD_PLACEMENT_VERSION + 1;
        let err = decode_map(&newer).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnsupportedVersion, "{err}");
        // Truncated and empty records are corrupt, not a panic.
        let old = unhex(OLD_RECORD_HEX);
        assert_eq!(
            decode_map(&old[..old.len() - 3]).unwrap_err().code(),
            ErrorCode::Corrupt
        );
        assert_eq!(decode_map(&[]).unwrap_err().code(), ErrorCode::Corrupt);
    }
}
