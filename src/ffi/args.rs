//! Checking what C passes in, before anything is done with it.
//!
//! Every helper turns a bad pointer or length into `InvalidArgument` naming the parameter, so
//! an entry point that checks all its arguments first changes nothing when one is bad.

use super::haven_t;
use crate::error::{Error, Result};
use crate::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use std::ffi::{c_char, CStr};

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// The handle behind `h`.
pub(crate) fn handle<'a>(h: *const haven_t) -> Result<&'a haven_t> {
    // SAFETY: the caller passes NULL or a handle from haven_open/haven_connect that is not
    // closed yet (the header's contract); NULL is refused here.
    unsafe { h.as_ref() }.ok_or_else(|| invalid("the handle is NULL".into()))
}

/// Borrow `len` bytes at `ptr` (NULL is accepted only with `len` 0). `max` bounds `len` so an
/// impossible length never reaches an allocation.
pub(crate) fn bytes<'a>(name: &str, ptr: *const u8, len: usize, max: usize) -> Result<&'a [u8]> {
    if len > max {
        return Err(invalid(format!(
            "{name}: {len} bytes, over the limit of {max}"
        )));
    }
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(invalid(format!("{name} is NULL with a length of {len}")));
    }
    // SAFETY: the caller guarantees `ptr` points to `len` readable bytes for the call; `len` is
    // at most `max` (far below isize::MAX).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A key: at most `MAX_KEY_BYTES` (emptiness is the state machine's to refuse).
pub(crate) fn key<'a>(name: &str, ptr: *const u8, len: usize) -> Result<&'a [u8]> {
    bytes(name, ptr, len, MAX_KEY_BYTES)
}

/// A value: at most `MAX_VALUE_BYTES`.
pub(crate) fn value<'a>(name: &str, ptr: *const u8, len: usize) -> Result<&'a [u8]> {
    bytes(name, ptr, len, MAX_VALUE_BYTES)
}

/// NUL-terminated UTF-8 text.
pub(crate) fn text<'a>(name: &str, ptr: *const c_char) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(invalid(format!("{name} is NULL")));
    }
    // SAFETY: the caller guarantees a NUL-terminated string valid for the call.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map_err(|e| invalid(format!("{name} is not valid UTF-8: {e}")))
}

/// An output pointer that must not be NULL.
pub(crate) fn out<'a, T>(name: &str, ptr: *mut T) -> Result<&'a mut T> {
    // SAFETY: the caller guarantees NULL or a valid, writable, exclusive pointer for the call.
    unsafe { ptr.as_mut() }.ok_or_else(|| invalid(format!("{name} (an output) is NULL")))
}

/// An optional output pointer (NULL: the caller does not want it).
pub(crate) fn optional_out<'a, T>(ptr: *mut T) -> Option<&'a mut T> {
    // SAFETY: as for `out`.
    unsafe { ptr.as_mut() }
}

/// Borrow an array of `count` `T` (NULL only with `count` 0), at most `max` long.
pub(crate) fn array<'a, T>(name: &str, ptr: *const T, count: usize, max: usize) -> Result<&'a [T]> {
    if count > max {
        return Err(invalid(format!(
            "{name}: {count} items, over the limit of {max}"
        )));
    }
    if count == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(invalid(format!("{name} is NULL with a count of {count}")));
    }
    // SAFETY: the caller guarantees `count` valid, initialised `T`s at `ptr` for the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}
