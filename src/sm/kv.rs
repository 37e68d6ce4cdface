//! The key-value feature: user keys with revisions (put, get, delete, compare-and-swap, range,
//! delete-range) and etcd-style transactions — their command types, their limits, how they apply
//! and how they are read. User keys live under the `k` prefix (`layout.rs`).
//!
//! Applying is a pure function of the state seen through the overlay and the entry's index (the
//! revision of every write), so every member computes the same writes and results.

use super::layout::{decode_record, kv_key, LockSpace, StoredValueRef, PREFIX_KV};
use super::locks;
use super::overlay::Overlay;
use super::result::{
    CasResult, DeleteRangeResult, DeleteResult, FencingToken, KeyMeta, KeyValue, PutResult,
    RangePage, TxnOpResult, TxnResult, VersionedValue,
};
use crate::error::{Error, Result};
use crate::limits::{MAX_KEY_BYTES, MAX_SCAN_LIMIT, MAX_TXN_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES};
use crate::types::LogIndex;
use bincode::{Decode, Encode};

// ----- commands -----

/// A multi-key transaction in the style of etcd's Txn: compares, then one of two op lists,
/// applied atomically at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Txn {
    /// Conditions that must all hold for `success` to run (an empty list holds).
    pub compares: Vec<Compare>,
    /// Ops run, in order, when every compare holds.
    pub success: Vec<TxnOp>,
    /// Ops run, in order, otherwise.
    pub failure: Vec<TxnOp>,
}

/// How a compare relates the stored field to the given one (`stored OP given`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum CompareOp {
    /// stored == given
    Equal,
    /// stored != given
    NotEqual,
    /// stored < given
    Less,
    /// stored > given
    Greater,
}

impl CompareOp {
    /// Whether `stored OP given` holds.
    pub fn holds<T: Ord + ?Sized>(self, stored: &T, given: &T) -> bool {
        match self {
            CompareOp::Equal => stored == given,
            CompareOp::NotEqual => stored != given,
            CompareOp::Less => stored < given,
            CompareOp::Greater => stored > given,
        }
    }
}

/// One transaction condition. For an absent key, version, create revision and mod revision are
/// 0 and a value compare never holds (as in etcd). Variants are only ever appended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Compare {
    /// Compare the value (bytewise, lexicographic).
    Value {
        /// The key.
        key: Vec<u8>,
        /// The relation.
        op: CompareOp,
        /// The value to compare with.
        value: Vec<u8>,
    },
    /// Compare the version (writes since creation; 0 when absent).
    Version {
        /// The key.
        key: Vec<u8>,
        /// The relation.
        op: CompareOp,
        /// The version to compare with.
        version: u64,
    },
    /// Compare the create revision (0 when absent).
    CreateRevision {
        /// The key.
        key: Vec<u8>,
        /// The relation.
        op: CompareOp,
        /// The revision to compare with.
        revision: LogIndex,
    },
    /// Compare the mod revision (0 when absent).
    ModRevision {
        /// The key.
        key: Vec<u8>,
        /// The relation.
        op: CompareOp,
        /// The revision to compare with.
        revision: LogIndex,
    },
    /// Holds when the key's presence equals `exists`.
    Exists {
        /// The key.
        key: Vec<u8>,
        /// `true`: the key must be present; `false`: it must be absent.
        exists: bool,
    },
    /// A fenced write: holds while `token` is a current grant of lock `name` (command version
    /// 2). A holder that lost its lock (its session expired while it was paused) has its write
    /// refused here, where the data lives.
    LockHeld {
        /// The lock.
        name: Vec<u8>,
        /// The fencing token the writer was granted.
        token: FencingToken,
    },
}

impl Compare {
    /// The key this compare reads (for [`Compare::LockHeld`], the lock's name).
    pub fn key(&self) -> &[u8] {
        match self {
            Compare::Value { key, .. }
            | Compare::Version { key, .. }
            | Compare::CreateRevision { key, .. }
            | Compare::ModRevision { key, .. }
            | Compare::Exists { key, .. } => key,
            Compare::LockHeld { name, .. } => name,
        }
    }

    /// Check the key (or lock name) this compare reads.
    fn check(&self, what: &str) -> Result<()> {
        match self {
            Compare::LockHeld { name, .. } => locks::validate_name(what, name),
            other => check_key(what, other.key()),
        }
    }
}

/// One operation inside a transaction branch. Variants are only ever appended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum TxnOp {
    /// Set a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Read a key (seeing the writes of earlier ops in the same branch).
    Get {
        /// The key.
        key: Vec<u8>,
    },
}

impl TxnOp {
    /// The key this op touches.
    pub fn key(&self) -> &[u8] {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }
}

/// Check a key: non-empty and at most `MAX_KEY_BYTES`. `what` names it in the error.
pub(crate) fn check_key(what: &str, key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!("{what}: key is empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what}: key is {} bytes, over the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(what: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what}: value is {} bytes, over the limit of {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// Check a scan or delete range: bounds at most `MAX_KEY_BYTES`, `end` after `start`, limit in
/// 1..=`MAX_SCAN_LIMIT`.
pub(crate) fn check_range(
    what: &str,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<()> {
    if start.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what}: range start is {} bytes, over the limit of {MAX_KEY_BYTES}",
            start.len()
        )));
    }
    if let Some(end) = end {
        if end.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidArgument(format!(
                "{what}: range end is {} bytes, over the limit of {MAX_KEY_BYTES}",
                end.len()
            )));
        }
        if end <= start {
            return Err(Error::InvalidArgument(format!(
                "{what}: range end is not after range start"
            )));
        }
    }
    if limit == 0 || limit > MAX_SCAN_LIMIT {
        return Err(Error::InvalidArgument(format!(
            "{what}: limit {limit} is not in 1..={MAX_SCAN_LIMIT}"
        )));
    }
    Ok(())
}

/// Check a put: the key, then the value.
pub(crate) fn validate_put(key: &[u8], value: &[u8]) -> Result<()> {
    check_key("put", key)?;
    check_value("put", value)
}

/// Check a delete.
pub(crate) fn validate_delete(key: &[u8]) -> Result<()> {
    check_key("delete", key)
}

/// Check a compare-and-swap: the key, the expected value, the new value.
pub(crate) fn validate_cas(key: &[u8], expected: Option<&[u8]>, new_value: &[u8]) -> Result<()> {
    check_key("compare-and-swap", key)?;
    if let Some(expected) = expected {
        check_value("compare-and-swap expected", expected)?;
    }
    check_value("compare-and-swap new", new_value)
}

/// Check a delete-range.
pub(crate) fn validate_delete_range(start: &[u8], end: Option<&[u8]>, limit: u32) -> Result<()> {
    check_range("delete-range", start, end, limit as usize)
}

impl Txn {
    /// Whether a compare needs the lock table (command version 2).
    pub(crate) fn uses_locks(&self) -> bool {
        self.compares
            .iter()
            .any(|c| matches!(c, Compare::LockHeld { .. }))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ops = self.compares.len() + self.success.len() + self.failure.len();
        if ops > MAX_TXN_OPS {
            return Err(Error::InvalidArgument(format!(
                "txn has {ops} compares and ops, over the limit of {MAX_TXN_OPS}"
            )));
        }
        let mut bytes = 0usize;
        for (i, compare) in self.compares.iter().enumerate() {
            let what = format!("txn compare {i}");
            compare.check(&what)?;
            bytes += compare.key().len();
            if let Compare::Value { value, .. } = compare {
                check_value(&what, value)?;
                bytes += value.len();
            }
        }
        for (branch, ops) in [("success", &self.success), ("failure", &self.failure)] {
            for (i, op) in ops.iter().enumerate() {
                let what = format!("txn {branch} op {i}");
                check_key(&what, op.key())?;
                bytes += op.key().len();
                if let TxnOp::Put { value, .. } = op {
                    check_value(&what, value)?;
                    bytes += value.len();
                }
                // Two writes of one key in one branch would need two versions at one revision;
                // refuse them (as etcd does) rather than define an order-dependent meaning.
                let writes = |op: &TxnOp| matches!(op, TxnOp::Put { .. } | TxnOp::Delete { .. });
                if writes(op) {
                    if let Some(first) = ops[..i]
                        .iter()
                        .position(|earlier| writes(earlier) && earlier.key() == op.key())
                    {
                        return Err(Error::InvalidArgument(format!(
                            "{what} writes the same key as txn {branch} op {first}"
                        )));
                    }
                }
            }
        }
        if bytes > MAX_TXN_BYTES {
            return Err(Error::InvalidArgument(format!(
                "txn carries {bytes} key and value bytes, over the limit of {MAX_TXN_BYTES}"
            )));
        }
        Ok(())
    }
}

// ----- apply -----

/// Whether `compare` holds against the state seen through `view`.
pub(crate) fn compare_holds(view: &Overlay<'_>, compare: &Compare) -> Result<bool> {
    let meta = |key: &[u8]| -> Result<Option<KeyMeta>> { Ok(view.get_value(key)?.map(|v| v.meta)) };
    Ok(match compare {
        Compare::Value { key, op, value } => view
            .get_value(key)?
            .is_some_and(|v| op.holds(v.value.as_slice(), value.as_slice())),
        Compare::Version { key, op, version } => {
            op.holds(&meta(key)?.map_or(0, |m| m.version), version)
        }
        Compare::CreateRevision { key, op, revision } => op.holds(
            &meta(key)?.map_or(LogIndex(0), |m| m.create_revision),
            revision,
        ),
        Compare::ModRevision { key, op, revision } => op.holds(
            &meta(key)?.map_or(LogIndex(0), |m| m.mod_revision),
            revision,
        ),
        Compare::Exists { key, exists } => view.get_value(key)?.is_some() == *exists,
        Compare::LockHeld { name, token } => locks::is_held(view, LockSpace::Locks, name, *token)?,
    })
}

/// Set `key` to `value` at revision `index`: a new version of the key (version 1 and create
/// revision `index` if it was absent).
pub(crate) fn put(
    overlay: &mut Overlay<'_>,
    key: &[u8],
    value: &[u8],
    index: LogIndex,
) -> Result<PutResult> {
    let previous = overlay.get_meta(key)?;
    let meta = match previous {
        Some(prev) => KeyMeta {
            create_revision: prev.create_revision,
            mod_revision: index,
            version: prev.version + 1,
        },
        None => KeyMeta {
            create_revision: index,
            mod_revision: index,
            version: 1,
        },
    };
    let stored = StoredValueRef { value, meta };
    overlay.put_encoded(kv_key(key), &stored)?;
    Ok(PutResult {
        revision: index,
        previous,
    })
}

/// Remove `key` (a success also when absent) at revision `index`.
pub(crate) fn delete(
    overlay: &mut Overlay<'_>,
    key: &[u8],
    index: LogIndex,
) -> Result<DeleteResult> {
    let previous = overlay.get_meta(key)?;
    if previous.is_some() {
        overlay.remove(kv_key(key));
    }
    Ok(DeleteResult {
        revision: index,
        previous,
    })
}

/// Set `key` to `new_value` if its value is `expected` (`None`: absent).
pub(crate) fn compare_and_swap(
    overlay: &mut Overlay<'_>,
    key: &[u8],
    expected: Option<&[u8]>,
    new_value: &[u8],
    index: LogIndex,
) -> Result<CasResult> {
    let current = overlay.get_value(key)?;
    let holds = match (expected, &current) {
        (None, None) => true,
        (Some(expected), Some(current)) => expected == current.value.as_slice(),
        _ => false,
    };
    if holds {
        let put = put(overlay, key, new_value, index)?;
        Ok(CasResult::Swapped {
            revision: put.revision,
            previous: put.previous,
        })
    } else {
        Ok(CasResult::Failed { current })
    }
}

/// Remove at most `limit` keys in `[start, end)` in key order.
pub(crate) fn delete_range(
    overlay: &mut Overlay<'_>,
    start: &[u8],
    end: Option<&[u8]>,
    limit: u32,
    index: LogIndex,
) -> Result<DeleteRangeResult> {
    let (from, to) = tree_range(start, end);
    let (doomed, more) = overlay.scan(&from, Some(&to), limit as usize)?;
    let deleted = doomed.len() as u64;
    for (key, _) in doomed {
        overlay.remove(key);
    }
    Ok(DeleteRangeResult {
        revision: index,
        deleted,
        more,
    })
}

/// Run a transaction at revision `index`: the compares, then one branch's ops in order.
pub(crate) fn txn(overlay: &mut Overlay<'_>, txn: &Txn, index: LogIndex) -> Result<TxnResult> {
    let mut succeeded = true;
    for compare in &txn.compares {
        if !compare_holds(overlay, compare)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            TxnOp::Put { key, value } => TxnOpResult::Put(put(overlay, key, value, index)?),
            TxnOp::Delete { key } => TxnOpResult::Delete(delete(overlay, key, index)?),
            TxnOp::Get { key } => TxnOpResult::Get(overlay.get_value(key)?),
        });
    }
    Ok(TxnResult {
        revision: index,
        succeeded,
        results,
    })
}

/// The tree keys of the user-key range `[start, end)` (`end` `None`: to the last user key).
fn tree_range(start: &[u8], end: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    let to = match end {
        Some(end) => kv_key(end),
        None => vec![PREFIX_KV + 1],
    };
    (kv_key(start), to)
}

// ----- reads (`StateMachine::get`, `range`, `evaluate_compares`) -----

/// The value and metadata of `key`, `None` if absent.
pub(crate) fn get(view: &Overlay<'_>, key: &[u8]) -> Result<Option<VersionedValue>> {
    check_key("get", key)?;
    view.get_value(key)
}

/// Up to `limit` keys in `[start, end)` in key order, and whether more remain.
pub(crate) fn range(
    view: &Overlay<'_>,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<RangePage> {
    check_range("range", start, end, limit)?;
    let (from, to) = tree_range(start, end);
    let (pairs, more) = view.scan(&from, Some(&to), limit)?;
    let mut entries = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let stored: VersionedValue = decode_record("kv", &value)?;
        entries.push(KeyValue {
            key: key[1..].to_vec(),
            value: stored.value,
            meta: stored.meta,
        });
    }
    Ok(RangePage { entries, more })
}

/// Whether every compare holds, without writing.
pub(crate) fn evaluate_compares(view: &Overlay<'_>, compares: &[Compare]) -> Result<bool> {
    if compares.len() > MAX_TXN_OPS {
        return Err(Error::InvalidArgument(format!(
            "{} compares, over the limit of {MAX_TXN_OPS}",
            compares.len()
        )));
    }
    for (i, compare) in compares.iter().enumerate() {
        compare.check(&format!("compare {i}"))?;
        if !compare_holds(view, compare)? {
            return Ok(false);
        }
    }
    Ok(true)
}
