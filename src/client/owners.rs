//! [`KeyOwners`]: who owns a key, as [`Client::key_owners`](super::Client::key_owners) answers
//! it. In process it holds the member's applied table (an `Arc`) and the key's partition, so
//! the answer costs one read lock, a hash and a slice, and no allocation; the owner ids are
//! borrowed from the table, which never changes (a later epoch is a new table).

use crate::sm::placement::OwnerId;
use crate::sm::{Owners, PartitionMap};
use std::sync::Arc;

/// The partition of a key and its owners, primary first, with the epoch of the table that
/// answered. Cheap to clone (an `Arc` in process).
#[derive(Debug, Clone)]
pub struct KeyOwners {
    partition: u32,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// The member's applied copy (in process): the ids are the table's.
    Applied(Arc<PartitionMap>),
    /// A remote member's answer, copied.
    Copied(Owners),
}

impl KeyOwners {
    pub(super) fn applied(map: Arc<PartitionMap>, key: &[u8]) -> KeyOwners {
        let (partition, _) = map.table.lookup(key);
        KeyOwners {
            partition,
            source: Source::Applied(map),
        }
    }

    pub(super) fn copied(owners: Owners) -> KeyOwners {
        KeyOwners {
            partition: owners.partition,
            source: Source::Copied(owners),
        }
    }

    /// The epoch of the table that answered.
    pub fn epoch(&self) -> u64 {
        match &self.source {
            Source::Applied(map) => map.epoch,
            Source::Copied(owners) => owners.epoch,
        }
    }

    /// The key's partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The owners, primary first (`min(R, owners)` of them; none while the map has no owner).
    pub fn iter(&self) -> impl Iterator<Item = &OwnerId> + '_ {
        let (applied, copied) = match &self.source {
            Source::Applied(map) => {
                let owners = map.table.owners();
                let row = map.table.row(self.partition);
                (Some(row.iter().map(move |&o| &owners[o as usize].id)), None)
            }
            Source::Copied(answer) => (None, Some(answer.owners.iter())),
        };
        applied
            .into_iter()
            .flatten()
            .chain(copied.into_iter().flatten())
    }

    /// How many owners the partition has.
    pub fn len(&self) -> usize {
        match &self.source {
            Source::Applied(map) => map.table.row(self.partition).len(),
            Source::Copied(owners) => owners.owners.len(),
        }
    }

    /// Whether the partition has no owner (the map has none).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The primary owner, if there is one.
    pub fn primary(&self) -> Option<&OwnerId> {
        self.iter().next()
    }

    /// The owned form ([`Client::owners`](super::Client::owners)' answer).
    pub fn to_owners(&self) -> Owners {
        match &self.source {
            Source::Applied(_) => Owners {
                epoch: self.epoch(),
                partition: self.partition,
                owners: self.iter().cloned().collect(),
            },
            Source::Copied(owners) => owners.clone(),
        }
    }
}
