//! The key-value functions: put, get, delete, compare-and-swap, prefix scan, transactions.
//!
//! Scans and transactions return their entries as *records* packed in one `haven_buf_t`, read
//! back with `haven_record_next` (or by hand: the layout is fixed):
//!
//! ```text
//! record := key_len: u32 LE | value_len: u32 LE (0xFFFFFFFF: no value) | key | value
//! ```
//!
//! Records follow each other without padding; the buffer ends after the last one.

use super::args::{self, handle};
use super::config::read_mode;
use super::{entry, haven_buf_t};
use crate::error::{Error, Result};
use crate::limits::{MAX_KEY_BYTES, MAX_TXN_OPS};
use crate::sm::{CasResult, Compare, CompareOp, KeyValue, Txn, TxnOp, TxnOpResult};
use crate::LogIndex;
use std::ffi::c_int;

/// Store `value` under `key` (replacing any value).
///
/// `key` (1 to 4096 bytes) and `value` (at most 1 MiB) are borrowed for the call. Blocks until
/// the write is committed and applied, or the handle's request timeout. Errors:
/// INVALID_ARGUMENT (nothing written), UNAVAILABLE (not written; retry), TIMEOUT (may have
/// been written), FATAL. Thread safe.
#[no_mangle]
pub extern "C" fn haven_put(
    h: *mut super::haven_t,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> c_int {
    entry("haven_put", || {
        let h = handle(h)?;
        let k = args::key("key", key, key_len)?;
        let v = args::value("value", value, value_len)?;
        h.client().put(k, v).map(|_| ())
    })
}

/// Read `key` as the handle's read mode says (linearizable unless configured otherwise).
///
/// On success `*found` is 1 and `*value` holds a copy of the value (free it with
/// `haven_buf_free`), or `*found` is 0 and `*value` is `{NULL, 0}`. `*value` is overwritten
/// without being freed: pass a zeroed or freed buffer. `key` is borrowed for the call. Blocks
/// for a linearizable read (a quorum round trip), not for a stale one. Errors:
/// INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT; outputs are not written on error. Thread safe.
#[no_mangle]
pub extern "C" fn haven_get(
    h: *mut super::haven_t,
    key: *const u8,
    key_len: usize,
    value: *mut haven_buf_t,
    found: *mut c_int,
) -> c_int {
    entry("haven_get", || {
        let h = handle(h)?;
        let mode = h.client().options().read_mode;
        get(h, key, key_len, mode, value, found)
    })
}

/// `haven_get` with an explicit read mode: `HAVEN_READ_LINEARIZABLE` or `HAVEN_READ_STALE`
/// (served from the local state of the member at once; may miss recent writes). Same
/// contract as `haven_get`.
#[no_mangle]
pub extern "C" fn haven_get_with(
    h: *mut super::haven_t,
    mode: c_int,
    key: *const u8,
    key_len: usize,
    value: *mut haven_buf_t,
    found: *mut c_int,
) -> c_int {
    entry("haven_get_with", || {
        let h = handle(h)?;
        let mode = read_mode("mode", mode)?;
        get(h, key, key_len, mode, value, found)
    })
}

fn get(
    h: &super::haven_t,
    key_ptr: *const u8,
    key_len: usize,
    mode: crate::ReadMode,
    value_out: *mut haven_buf_t,
    found: *mut c_int,
) -> Result<()> {
    let k = args::key("key", key_ptr, key_len)?;
    let value_out = args::out("value", value_out)?;
    let found = args::out("found", found)?;
    let got = h.client().get_with(k, mode)?;
    *found = c_int::from(got.is_some());
    *value_out = haven_buf_t::from_vec(got.map(|v| v.value).unwrap_or_default());
    Ok(())
}

/// Delete `key`. `*existed` (NULL: not wanted) is 1 if the key was present and so removed.
///
/// Same blocking, errors and thread safety as `haven_put`. Deleting an absent key succeeds.
#[no_mangle]
pub extern "C" fn haven_delete(
    h: *mut super::haven_t,
    key: *const u8,
    key_len: usize,
    existed: *mut c_int,
) -> c_int {
    entry("haven_delete", || {
        let h = handle(h)?;
        let k = args::key("key", key, key_len)?;
        let existed = args::optional_out(existed);
        let result = h.client().delete(k)?;
        if let Some(existed) = existed {
            *existed = c_int::from(result.existed());
        }
        Ok(())
    })
}

/// Compare-and-swap: store `new_value` under `key` if its current value is `expected`
/// (`expect_absent` non-zero: if the key is absent; `expected` is then ignored). `*swapped` is
/// 1 if the value was stored, 0 if the comparison failed (an expected outcome, not an error).
///
/// Inputs are borrowed for the call. Same blocking, errors and thread safety as `haven_put`.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn haven_cas(
    h: *mut super::haven_t,
    key: *const u8,
    key_len: usize,
    expected: *const u8,
    expected_len: usize,
    expect_absent: c_int,
    new_value: *const u8,
    new_len: usize,
    swapped: *mut c_int,
) -> c_int {
    entry("haven_cas", || {
        let h = handle(h)?;
        let k = args::key("key", key, key_len)?;
        let expected = if expect_absent != 0 {
            None
        } else {
            Some(args::value("expected", expected, expected_len)?)
        };
        let new_value = args::value("new_value", new_value, new_len)?;
        let swapped = args::out("swapped", swapped)?;
        let result = h.client().compare_and_swap(k, expected, new_value)?;
        *swapped = c_int::from(matches!(result, CasResult::Swapped { .. }));
        Ok(())
    })
}

/// Value of `haven_record_t::value_len` / the layout's `value_len` for "no value".
pub const HAVEN_NO_VALUE: u32 = u32::MAX;

pub(crate) fn push_record(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    // Keys and values are bounded far below 4 GiB (limits.rs), so the u32 lengths hold.
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(
        &value
            .map_or(HAVEN_NO_VALUE, |v| v.len() as u32)
            .to_le_bytes(),
    );
    out.extend_from_slice(key);
    if let Some(value) = value {
        out.extend_from_slice(value);
    }
}

fn records(entries: &[KeyValue]) -> Vec<u8> {
    let size = entries
        .iter()
        .map(|e| 8 + e.key.len() + e.value.len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for e in entries {
        push_record(&mut out, &e.key, Some(&e.value));
    }
    out
}

/// Up to `limit` (1 to 10000) keys starting with `prefix` (may be empty: every key), in key
/// order, read as the handle's read mode says. `*entries` gets their records (see
/// `haven_record_next`; free with `haven_buf_free`), `*count` (NULL: not wanted) how many,
/// `*more` (NULL: not wanted) 1 if more keys with the prefix follow the last one (scan again
/// from after it with `haven_range`).
///
/// `prefix` is borrowed for the call. Blocking, errors and thread safety as `haven_get`.
#[no_mangle]
pub extern "C" fn haven_scan(
    h: *mut super::haven_t,
    prefix: *const u8,
    prefix_len: usize,
    limit: u32,
    entries: *mut haven_buf_t,
    count: *mut usize,
    more: *mut c_int,
) -> c_int {
    entry("haven_scan", || {
        let h = handle(h)?;
        let prefix = args::bytes("prefix", prefix, prefix_len, MAX_KEY_BYTES)?;
        let entries = args::out("entries", entries)?;
        let page = h.client().scan_prefix(prefix, limit)?;
        if let Some(count) = args::optional_out(count) {
            *count = page.entries.len();
        }
        if let Some(more) = args::optional_out(more) {
            *more = c_int::from(page.more);
        }
        *entries = haven_buf_t::from_vec(records(&page.entries));
        Ok(())
    })
}

/// Up to `limit` keys in `[start, end)` in key order (`end` NULL: to the last key; an empty
/// `start` begins at the first key). Outputs, blocking, errors and thread safety as
/// `haven_scan`.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn haven_range(
    h: *mut super::haven_t,
    start: *const u8,
    start_len: usize,
    end: *const u8,
    end_len: usize,
    limit: u32,
    entries: *mut haven_buf_t,
    count: *mut usize,
    more: *mut c_int,
) -> c_int {
    entry("haven_range", || {
        let h = handle(h)?;
        let start = args::bytes("start", start, start_len, MAX_KEY_BYTES)?;
        let end = if end.is_null() {
            None
        } else {
            Some(args::bytes("end", end, end_len, MAX_KEY_BYTES)?)
        };
        let entries = args::out("entries", entries)?;
        let page = h.client().range(start, end, limit)?;
        if let Some(count) = args::optional_out(count) {
            *count = page.entries.len();
        }
        if let Some(more) = args::optional_out(more) {
            *more = c_int::from(page.more);
        }
        *entries = haven_buf_t::from_vec(records(&page.entries));
        Ok(())
    })
}

/// One record of a buffer filled by `haven_scan`, `haven_range` or `haven_txn`. The pointers
/// point into that buffer: valid until it is freed.
#[repr(C)]
pub struct haven_record_t {
    /// The key.
    pub key: *const u8,
    /// Its length.
    pub key_len: usize,
    /// The value (NULL when `has_value` is 0 or the value is empty).
    pub value: *const u8,
    /// Its length (0 when there is no value).
    pub value_len: usize,
    /// 1 if the record carries a value (a scanned key, a transaction get that found one).
    pub has_value: c_int,
}

/// Read the record at `*offset` of `buf` into `*record` and advance `*offset` past it. Start
/// with `*offset = 0` and stop when `*offset == buf->len`.
///
/// Errors: INVALID_ARGUMENT (NULL, or `*offset` at or past the end), CORRUPT (the bytes are
/// not records; nothing written). Does not block or allocate; thread safe.
#[no_mangle]
pub extern "C" fn haven_record_next(
    buf: *const haven_buf_t,
    offset: *mut usize,
    record: *mut haven_record_t,
) -> c_int {
    entry("haven_record_next", || {
        // SAFETY: NULL or a valid buffer for the call.
        let buf =
            unsafe { buf.as_ref() }.ok_or_else(|| Error::InvalidArgument("buf is NULL".into()))?;
        let offset = args::out("offset", offset)?;
        let record = args::out("record", record)?;
        let bytes = args::bytes("buf", buf.data, buf.len, isize::MAX as usize)?;
        let at = *offset;
        if at >= bytes.len() {
            return Err(Error::InvalidArgument(format!(
                "offset {at} is at or past the end of the buffer ({} bytes)",
                bytes.len()
            )));
        }
        let corrupt = |what: &str| Error::corrupt(at as u64, format!("record {what}"));
        let header = bytes
            .get(at..at + 8)
            .ok_or_else(|| corrupt("header cut short"))?;
        let key_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let value_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let has_value = value_len != HAVEN_NO_VALUE;
        let value_len = if has_value { value_len as usize } else { 0 };
        let key_start = at + 8;
        let value_start = key_start + key_len;
        let end = value_start + value_len;
        let key_bytes = bytes
            .get(key_start..value_start)
            .ok_or_else(|| corrupt("key cut short"))?;
        let value_bytes = bytes
            .get(value_start..end)
            .ok_or_else(|| corrupt("value cut short"))?;
        *record = haven_record_t {
            key: key_bytes.as_ptr(),
            key_len,
            value: if value_len == 0 {
                std::ptr::null()
            } else {
                value_bytes.as_ptr()
            },
            value_len,
            has_value: c_int::from(has_value),
        };
        *offset = end;
        Ok(())
    })
}

/// `haven_compare_t::target`: compare the value (bytes, lexicographic) with `value`.
pub const HAVEN_CMP_VALUE: c_int = 0;
/// Compare the version (writes since creation; 0 when absent) with `number`.
pub const HAVEN_CMP_VERSION: c_int = 1;
/// Compare the create revision (0 when absent) with `number`.
pub const HAVEN_CMP_CREATE_REVISION: c_int = 2;
/// Compare the mod revision (0 when absent) with `number`.
pub const HAVEN_CMP_MOD_REVISION: c_int = 3;
/// Holds when the key's presence is `number` (1: present, 0: absent); `op` is ignored.
pub const HAVEN_CMP_EXISTS: c_int = 4;
/// A fenced write: holds while `number` is a current fencing token of the lock named by
/// `key` (see `haven_lock`); `op` is ignored. A holder whose grant ended has its write refused
/// where the data lives.
pub const HAVEN_CMP_LOCK_HELD: c_int = 5;

/// `haven_compare_t::op`: stored == given.
pub const HAVEN_CMP_EQUAL: c_int = 0;
/// stored != given.
pub const HAVEN_CMP_NOT_EQUAL: c_int = 1;
/// stored < given.
pub const HAVEN_CMP_LESS: c_int = 2;
/// stored > given.
pub const HAVEN_CMP_GREATER: c_int = 3;

/// One condition of a transaction (`stored OP given`). For an absent key, version and
/// revisions are 0 and a value compare never holds.
#[repr(C)]
pub struct haven_compare_t {
    /// `HAVEN_CMP_VALUE`, `_VERSION`, `_CREATE_REVISION`, `_MOD_REVISION`, `_EXISTS` or
    /// `_LOCK_HELD`.
    pub target: c_int,
    /// `HAVEN_CMP_EQUAL`, `_NOT_EQUAL`, `_LESS` or `_GREATER`.
    pub op: c_int,
    /// The key.
    pub key: *const u8,
    /// Its length.
    pub key_len: usize,
    /// The value to compare with (`HAVEN_CMP_VALUE`).
    pub value: *const u8,
    /// Its length.
    pub value_len: usize,
    /// The version, revision or presence to compare with (the other targets).
    pub number: u64,
}

/// `haven_txn_op_t::kind`: store `value` under `key`.
pub const HAVEN_OP_PUT: c_int = 0;
/// Remove `key`.
pub const HAVEN_OP_DELETE: c_int = 1;
/// Read `key` (seeing the writes of earlier ops of the same branch).
pub const HAVEN_OP_GET: c_int = 2;

/// One operation of a transaction branch.
#[repr(C)]
pub struct haven_txn_op_t {
    /// `HAVEN_OP_PUT`, `HAVEN_OP_DELETE` or `HAVEN_OP_GET`.
    pub kind: c_int,
    /// The key.
    pub key: *const u8,
    /// Its length.
    pub key_len: usize,
    /// The value (`HAVEN_OP_PUT`).
    pub value: *const u8,
    /// Its length.
    pub value_len: usize,
}

fn compare(i: usize, c: &haven_compare_t) -> Result<Compare> {
    let name = format!("compares[{i}]");
    let key = args::key(&format!("{name}.key"), c.key, c.key_len)?.to_vec();
    let op = match c.op {
        HAVEN_CMP_EQUAL => CompareOp::Equal,
        HAVEN_CMP_NOT_EQUAL => CompareOp::NotEqual,
        HAVEN_CMP_LESS => CompareOp::Less,
        HAVEN_CMP_GREATER => CompareOp::Greater,
        other if c.target != HAVEN_CMP_EXISTS && c.target != HAVEN_CMP_LOCK_HELD => {
            return Err(Error::InvalidArgument(format!(
                "{name}.op: {other} is not a HAVEN_CMP_* relation"
            )))
        }
        _ => CompareOp::Equal,
    };
    Ok(match c.target {
        HAVEN_CMP_VALUE => Compare::Value {
            key,
            op,
            value: args::value(&format!("{name}.value"), c.value, c.value_len)?.to_vec(),
        },
        HAVEN_CMP_VERSION => Compare::Version {
            key,
            op,
            version: c.number,
        },
        HAVEN_CMP_CREATE_REVISION => Compare::CreateRevision {
            key,
            op,
            revision: LogIndex(c.number),
        },
        HAVEN_CMP_MOD_REVISION => Compare::ModRevision {
            key,
            op,
            revision: LogIndex(c.number),
        },
        HAVEN_CMP_EXISTS => Compare::Exists {
            key,
            exists: c.number != 0,
        },
        HAVEN_CMP_LOCK_HELD => Compare::LockHeld {
            name: key,
            token: crate::sm::FencingToken(c.number),
        },
        other => {
            return Err(Error::InvalidArgument(format!(
                "{name}.target: {other} is not a HAVEN_CMP_* target"
            )))
        }
    })
}

fn txn_op(branch: &str, i: usize, op: &haven_txn_op_t) -> Result<TxnOp> {
    let name = format!("{branch}[{i}]");
    let key = args::key(&format!("{name}.key"), op.key, op.key_len)?.to_vec();
    Ok(match op.kind {
        HAVEN_OP_PUT => TxnOp::Put {
            key,
            value: args::value(&format!("{name}.value"), op.value, op.value_len)?.to_vec(),
        },
        HAVEN_OP_DELETE => TxnOp::Delete { key },
        HAVEN_OP_GET => TxnOp::Get { key },
        other => {
            return Err(Error::InvalidArgument(format!(
                "{name}.kind: {other} is not a HAVEN_OP_* kind"
            )))
        }
    })
}

/// A transaction in the style of etcd's Txn: if every compare holds, the `success` ops run,
/// else the `failure` ops; all at one revision, atomically. `*succeeded` is 1 when the success
/// branch ran. `*results` (NULL: not wanted; free with `haven_buf_free`) gets one record per op
/// of the branch that ran, in order: the op's key, with the value a `HAVEN_OP_GET` found
/// (no value for puts, deletes and absent keys).
///
/// The arrays (at most 128 ops per branch) and everything they point to are borrowed for the
/// call. Blocking, errors and thread safety as `haven_put`.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn haven_txn(
    h: *mut super::haven_t,
    compares: *const haven_compare_t,
    compare_count: usize,
    success: *const haven_txn_op_t,
    success_count: usize,
    failure: *const haven_txn_op_t,
    failure_count: usize,
    succeeded: *mut c_int,
    results: *mut haven_buf_t,
) -> c_int {
    entry("haven_txn", || {
        let h = handle(h)?;
        let compares = args::array("compares", compares, compare_count, MAX_TXN_OPS)?;
        let success = args::array("success", success, success_count, MAX_TXN_OPS)?;
        let failure = args::array("failure", failure, failure_count, MAX_TXN_OPS)?;
        let succeeded = args::out("succeeded", succeeded)?;
        let results = args::optional_out(results);
        let txn = Txn {
            compares: compares
                .iter()
                .enumerate()
                .map(|(i, c)| compare(i, c))
                .collect::<Result<_>>()?,
            success: success
                .iter()
                .enumerate()
                .map(|(i, op)| txn_op("success", i, op))
                .collect::<Result<_>>()?,
            failure: failure
                .iter()
                .enumerate()
                .map(|(i, op)| txn_op("failure", i, op))
                .collect::<Result<_>>()?,
        };
        let result = h.client().txn(&txn)?;
        let branch = if result.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut packed = Vec::new();
        for (op, outcome) in branch.iter().zip(&result.results) {
            let found = match outcome {
                TxnOpResult::Get(Some(v)) => Some(v.value.as_slice()),
                _ => None,
            };
            push_record(&mut packed, op.key(), found);
        }
        *succeeded = c_int::from(result.succeeded);
        if let Some(results) = results {
            *results = haven_buf_t::from_vec(packed);
        }
        Ok(())
    })
}
