//! Watch support: the changes of user keys that applying an entry made, recorded by the
//! overlay (every write of a `k` key goes through it, whichever feature makes it: a put, a
//! transaction, a delete-range, a session's ephemeral keys), so no feature has to report them.
//!
//! Recording is off unless the runtime asks for it ([`ChangeCapture`]): when it is off, a write
//! pays one comparison. When it is on, a put copies its key and its encoded record; the record
//! is decoded later, by whoever reads the change (the node's watch thread), not on the apply
//! path. The previous value costs a lookup per write (often a cache hit, sometimes a sled read),
//! so it is captured only when asked for separately.
//!
//! Two other kinds of state are recorded the same way, for watches of them: an election's
//! record (`e l` ‖ name: who leads, who campaigns) and a partition map's moves record (`r` ‖
//! name ‖ epoch: written once by each change of the map). A [`KvChange`] says which
//! ([`ChangeTarget`]); the previous value is never kept for them.

use super::layout::{
    decode_map_record, decode_record, election_of, parse_map_key, LockRecord, PREFIX_KV,
};
use super::map_record::EpochMoves;
use super::result::ElectionLeader;
use super::result::VersionedValue;
use crate::error::Result;

/// Which changes of user keys [`super::StateMachine::apply_deferred`] records in each
/// [`super::ApplyOutcome::changes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum ChangeCapture {
    /// Record nothing (the default).
    #[default]
    Off,
    /// Record each changed key and its new value.
    Changes,
    /// Also the value each change replaced.
    ChangesWithPrevious,
}

/// What a [`KvChange`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeTarget {
    /// A user key ([`KvChange::key`]).
    Key,
    /// The election named [`KvChange::key`]: its leader or its campaigners.
    Election,
    /// The partition map named [`KvChange::key`] moved to a new epoch.
    MapEpoch,
}

/// One change of a user key (or an election, or a partition map's epoch) made by one entry, in
/// the order the entry made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvChange {
    /// The user key (the election's name, the map's name).
    pub key: Vec<u8>,
    /// What changed.
    pub target: ChangeTarget,
    /// The stored record after a put (encoded `VersionedValue`); `None` for a delete.
    stored: Option<Vec<u8>>,
    /// The record it replaced: `None` if not captured, `Some(None)` if the key was absent.
    previous: Option<Option<Vec<u8>>>,
}

impl KvChange {
    /// A change of tree key `tree_key` (with its prefix), if it is a user key, an election's
    /// record or a new epoch's moves record of a partition map.
    pub(crate) fn of(
        tree_key: &[u8],
        stored: Option<&[u8]>,
        previous: Option<Option<Vec<u8>>>,
    ) -> Option<KvChange> {
        let (target, key, previous) = match tree_key.split_first() {
            Some((&PREFIX_KV, key)) => (ChangeTarget::Key, key, previous),
            _ => match (election_of(tree_key), parse_map_key(tree_key)) {
                (Some(name), _) => (ChangeTarget::Election, name, None),
                // A moves record is written once, by the change to its epoch (its removal, when
                // it falls out of the kept history, changes no epoch).
                (None, Some((name, Some(_)))) if stored.is_some() => {
                    (ChangeTarget::MapEpoch, name.as_bytes(), None)
                }
                _ => return None,
            },
        };
        Some(KvChange {
            key: key.to_vec(),
            target,
            stored: stored.map(<[u8]>::to_vec),
            previous,
        })
    }

    /// After an election's change ([`ChangeTarget::Election`]): who leads it now (`None`:
    /// nobody). `InvalidArgument` for a change of another target.
    pub fn leader(&self) -> Result<Option<ElectionLeader>> {
        self.expect(ChangeTarget::Election)?;
        match self.stored.as_deref() {
            None => Ok(None),
            Some(bytes) => {
                let record: LockRecord = decode_record("election", bytes)?;
                Ok(record.leader())
            }
        }
    }

    /// After a partition map's change ([`ChangeTarget::MapEpoch`]): the new epoch and the slots
    /// it moved. `InvalidArgument` for a change of another target.
    pub fn map_moves(&self) -> Result<EpochMoves> {
        self.expect(ChangeTarget::MapEpoch)?;
        let bytes = self.stored.as_deref().unwrap_or_default();
        decode_map_record("partition map moves", bytes)
    }

    fn expect(&self, target: ChangeTarget) -> Result<()> {
        if self.target == target {
            Ok(())
        } else {
            Err(crate::error::Error::InvalidArgument(format!(
                "a change of {:?} read as one of {target:?}",
                self.target
            )))
        }
    }

    /// Whether this change removed the key.
    pub fn is_delete(&self) -> bool {
        self.stored.is_none()
    }

    /// The value and metadata after a put, `None` for a delete. `Corrupt` if the record does not
    /// decode (it was just encoded by this build, so that is a bug); `InvalidArgument` for a
    /// change that is not of a user key.
    pub fn value(&self) -> Result<Option<VersionedValue>> {
        self.expect(ChangeTarget::Key)?;
        self.stored
            .as_deref()
            .map(|bytes| decode_record("kv", bytes))
            .transpose()
    }

    /// The value this change replaced: `None` if it was not captured
    /// ([`ChangeCapture::ChangesWithPrevious`] was off), `Some(None)` if the key was absent.
    pub fn previous(&self) -> Result<Option<Option<VersionedValue>>> {
        match &self.previous {
            None => Ok(None),
            Some(None) => Ok(Some(None)),
            Some(Some(bytes)) => decode_record("kv", bytes).map(|v| Some(Some(v))),
        }
    }
}
