//! Watch support: the changes of user keys that applying an entry made, recorded by the
//! overlay (every write of a `k` key goes through it, whichever feature makes it: a put, a
//! transaction, a delete-range, a session's ephemeral keys), so no feature has to report them.
//!
//! Recording is off unless the runtime asks for it ([`ChangeCapture`]): when it is off, a write
//! pays one comparison. When it is on, a put copies its key and its encoded record; the record
//! is decoded later, by whoever reads the change (the node's watch thread), not on the apply
//! path. The previous value costs a lookup per write (often a cache hit, sometimes a sled read),
//! so it is captured only when asked for separately.

use super::layout::{decode_record, PREFIX_KV};
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

/// One change of a user key made by one entry, in the order the entry made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvChange {
    /// The user key.
    pub key: Vec<u8>,
    /// The stored record after a put (encoded `VersionedValue`); `None` for a delete.
    stored: Option<Vec<u8>>,
    /// The record it replaced: `None` if not captured, `Some(None)` if the key was absent.
    previous: Option<Option<Vec<u8>>>,
}

impl KvChange {
    /// A change of tree key `tree_key` (with its `k` prefix), if it is a user key.
    pub(crate) fn of(
        tree_key: &[u8],
        stored: Option<&[u8]>,
        previous: Option<Option<Vec<u8>>>,
    ) -> Option<KvChange> {
        match tree_key.split_first() {
            Some((&PREFIX_KV, key)) => Some(KvChange {
                key: key.to_vec(),
                stored: stored.map(<[u8]>::to_vec),
                previous,
            }),
            _ => None,
        }
    }

    /// Whether this change removed the key.
    pub fn is_delete(&self) -> bool {
        self.stored.is_none()
    }

    /// The value and metadata after a put, `None` for a delete. `Corrupt` if the record does not
    /// decode (it was just encoded by this build, so that is a bug).
    pub fn value(&self) -> Result<Option<VersionedValue>> {
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
