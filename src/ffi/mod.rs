//! The stable C ABI: `include/haven.h` is generated from this module by cbindgen
//! (`cbindgen.toml`; `tests/ffi_header.rs` fails when the committed header is stale).
//!
//! The shape follows sqlite3.h, rocksdb's c.h and dqlite.h:
//! - **Opaque handles.** `haven_t` is a member opened in this process (`haven_open`) or a remote
//!   client (`haven_connect`); every data function works on both. `haven_config_t` collects a
//!   member's settings as text.
//! - **Status codes.** Every function returns `int`: `HAVEN_OK` (0) or a positive
//!   `HAVEN_ERR_*` code, the numbering of [`ErrorCode`] (fixed forever; codes are only added).
//!   `haven_last_error()` gives the calling thread's message for its last failure.
//! - **Nothing unwinds into the host.** Every entry point runs inside [`entry`], which catches a
//!   panic and returns `HAVEN_ERR_INTERNAL`. Bad arguments (NULL pointers, impossible lengths,
//!   invalid UTF-8 where text is needed) return `HAVEN_ERR_INVALID_ARGUMENT` before anything is
//!   changed, output parameters included.
//! - **One way to free.** Inputs are borrowed for the duration of the call only. Every byte the
//!   library hands out comes in a [`haven_buf_t`] released with `haven_buf_free`.
//! - **Versioning.** `HAVEN_VERSION_*` macros and `haven_version()` name the release;
//!   `HAVEN_ABI_VERSION` / `haven_abi_version()` the ABI, which the bindings check at load. The
//!   shared library's SONAME is `libhaven.so.<major>` (build.rs); within a major version
//!   symbols are only added, never changed or removed.
//!
//! This layer holds no logic of its own: it checks arguments, converts them, calls the public
//! [`Client`] / [`Node`] API and converts the result back.

#![allow(non_camel_case_types)]
// The exported functions take raw pointers from C: each checks them (see `args`) before use, and
// the header documents the contract; marking them `unsafe` would not change what C can pass.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod args;
mod cluster;
mod config;
mod coord;
mod elect;
mod json;
mod kv;
mod log;
mod watch;

pub use cluster::*;
pub use config::*;
pub use coord::*;
pub use elect::*;
pub use kv::*;
pub use log::*;
pub use watch::*;

use crate::error::{Error, ErrorCode, Result};
use crate::{Client, Node};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Major version of this release (`HAVEN_VERSION_MAJOR`).
pub const HAVEN_VERSION_MAJOR: u32 = 0;
/// Minor version of this release.
pub const HAVEN_VERSION_MINOR: u32 = 1;
/// Patch version of this release.
pub const HAVEN_VERSION_PATCH: u32 = 0;
/// The ABI version: bumped when a released function or type changes incompatibly (which
/// within one major version never happens: symbols are only added). Bindings compare it with
/// `haven_abi_version()` at load.
pub const HAVEN_ABI_VERSION: u32 = 1;

/// Success.
pub const HAVEN_OK: c_int = 0;
/// Bad input (NULL pointer, impossible length, invalid UTF-8, oversize key or value, unknown
/// configuration key); nothing was changed.
pub const HAVEN_ERR_INVALID_ARGUMENT: c_int = 1;
/// Not applied (no leader, no quorum, member shutting down): always safe to retry.
pub const HAVEN_ERR_UNAVAILABLE: c_int = 2;
/// The deadline passed: the operation MAY have been applied.
pub const HAVEN_ERR_TIMEOUT: c_int = 3;
/// Bytes on disk or on the wire failed verification.
pub const HAVEN_ERR_CORRUPT: c_int = 4;
/// A format version this build does not understand.
pub const HAVEN_ERR_UNSUPPORTED_VERSION: c_int = 5;
/// An operating-system IO error.
pub const HAVEN_ERR_IO: c_int = 6;
/// The authenticated handshake failed (wrong secret or cluster id).
pub const HAVEN_ERR_AUTH: c_int = 7;
/// The data directory is locked or belongs to another node or cluster.
pub const HAVEN_ERR_DATA_DIR: c_int = 8;
/// A storage failure stopped the member; it takes no writes.
pub const HAVEN_ERR_FATAL: c_int = 9;
/// A lock operation named a lock the caller does not hold.
pub const HAVEN_ERR_LOCK_NOT_HELD: c_int = 10;
/// The session the operation relies on has expired.
pub const HAVEN_ERR_SESSION_EXPIRED: c_int = 11;
/// The revision asked for is older than the member keeps.
pub const HAVEN_ERR_COMPACTED: c_int = 12;
/// The handle or the member behind it is closed.
pub const HAVEN_ERR_CLOSED: c_int = 13;
/// A bug inside haven (a panic caught at the boundary); the message says where.
pub const HAVEN_ERR_INTERNAL: c_int = 14;

// The C codes are ErrorCode's numbers, checked at compile time.
const _: () = {
    assert!(HAVEN_OK == ErrorCode::Ok as c_int);
    assert!(HAVEN_ERR_INVALID_ARGUMENT == ErrorCode::InvalidArgument as c_int);
    assert!(HAVEN_ERR_UNAVAILABLE == ErrorCode::Unavailable as c_int);
    assert!(HAVEN_ERR_TIMEOUT == ErrorCode::Timeout as c_int);
    assert!(HAVEN_ERR_CORRUPT == ErrorCode::Corrupt as c_int);
    assert!(HAVEN_ERR_UNSUPPORTED_VERSION == ErrorCode::UnsupportedVersion as c_int);
    assert!(HAVEN_ERR_IO == ErrorCode::Io as c_int);
    assert!(HAVEN_ERR_AUTH == ErrorCode::Auth as c_int);
    assert!(HAVEN_ERR_DATA_DIR == ErrorCode::DataDir as c_int);
    assert!(HAVEN_ERR_FATAL == ErrorCode::Fatal as c_int);
    assert!(HAVEN_ERR_LOCK_NOT_HELD == ErrorCode::LockNotHeld as c_int);
    assert!(HAVEN_ERR_SESSION_EXPIRED == ErrorCode::SessionExpired as c_int);
    assert!(HAVEN_ERR_COMPACTED == ErrorCode::Compacted as c_int);
    assert!(HAVEN_ERR_CLOSED == ErrorCode::Closed as c_int);
    assert!(HAVEN_ERR_INTERNAL == ErrorCode::Internal as c_int);
};

/// A handle to a cluster: a member running in this process, or a remote client.
///
/// Opaque to C. One handle may be used from many threads at once; `haven_close` must be the
/// last call on it.
pub struct haven_t {
    client: Client,
    /// The member, when the handle is one (`haven_open`); `None` for a remote client.
    node: Option<Node>,
}

impl haven_t {
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
}

/// Bytes the library allocated and the caller owns: release with `haven_buf_free`.
///
/// `data` is NULL when `len` is 0. A zeroed `haven_buf_t` is a valid empty buffer.
#[repr(C)]
pub struct haven_buf_t {
    /// The bytes (NULL when empty).
    pub data: *mut u8,
    /// How many bytes `data` holds.
    pub len: usize,
}

impl haven_buf_t {
    /// Hand `bytes` to the caller.
    pub(crate) fn from_vec(bytes: Vec<u8>) -> haven_buf_t {
        if bytes.is_empty() {
            return haven_buf_t {
                data: std::ptr::null_mut(),
                len: 0,
            };
        }
        let boxed = bytes.into_boxed_slice();
        let len = boxed.len();
        haven_buf_t {
            data: Box::into_raw(boxed).cast::<u8>(),
            len,
        }
    }
}

/// Release the bytes of `buf` and reset it to `{NULL, 0}`.
///
/// Safe on NULL, on a zeroed buffer and on a buffer already freed (it is reset on free). Only
/// for buffers filled by this library. Never fails, never blocks; thread safe for distinct
/// buffers.
#[no_mangle]
pub extern "C" fn haven_buf_free(buf: *mut haven_buf_t) {
    let _ = catch_unwind(|| {
        // SAFETY: the caller passes NULL or a valid, exclusive haven_buf_t.
        let Some(buf) = (unsafe { buf.as_mut() }) else {
            return;
        };
        if !buf.data.is_null() && buf.len > 0 {
            let slice = std::ptr::slice_from_raw_parts_mut(buf.data, buf.len);
            // SAFETY: `data`/`len` came from `from_vec` (a leaked Box<[u8]> of exactly `len`
            // bytes) and are reset below, so a second free sees NULL.
            drop(unsafe { Box::from_raw(slice) });
        }
        buf.data = std::ptr::null_mut();
        buf.len = 0;
    });
}

/// The release, as `"MAJOR.MINOR.PATCH"`. Static storage: never free it. Thread safe.
#[no_mangle]
pub extern "C" fn haven_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// `HAVEN_ABI_VERSION` of the loaded library: compare it with the header's macro (the C++ and
/// Python bindings do so at load). Thread safe.
#[no_mangle]
pub extern "C" fn haven_abi_version() -> u32 {
    HAVEN_ABI_VERSION
}

/// The name of a status code (`"HAVEN_ERR_TIMEOUT"`), or `"HAVEN_ERR_UNKNOWN"`. Static storage:
/// never free it. Thread safe.
#[no_mangle]
pub extern "C" fn haven_code_name(code: c_int) -> *const c_char {
    let name: &'static CStr = match code {
        HAVEN_OK => c"HAVEN_OK",
        HAVEN_ERR_INVALID_ARGUMENT => c"HAVEN_ERR_INVALID_ARGUMENT",
        HAVEN_ERR_UNAVAILABLE => c"HAVEN_ERR_UNAVAILABLE",
        HAVEN_ERR_TIMEOUT => c"HAVEN_ERR_TIMEOUT",
        HAVEN_ERR_CORRUPT => c"HAVEN_ERR_CORRUPT",
        HAVEN_ERR_UNSUPPORTED_VERSION => c"HAVEN_ERR_UNSUPPORTED_VERSION",
        HAVEN_ERR_IO => c"HAVEN_ERR_IO",
        HAVEN_ERR_AUTH => c"HAVEN_ERR_AUTH",
        HAVEN_ERR_DATA_DIR => c"HAVEN_ERR_DATA_DIR",
        HAVEN_ERR_FATAL => c"HAVEN_ERR_FATAL",
        HAVEN_ERR_LOCK_NOT_HELD => c"HAVEN_ERR_LOCK_NOT_HELD",
        HAVEN_ERR_SESSION_EXPIRED => c"HAVEN_ERR_SESSION_EXPIRED",
        HAVEN_ERR_COMPACTED => c"HAVEN_ERR_COMPACTED",
        HAVEN_ERR_CLOSED => c"HAVEN_ERR_CLOSED",
        HAVEN_ERR_INTERNAL => c"HAVEN_ERR_INTERNAL",
        _ => c"HAVEN_ERR_UNKNOWN",
    };
    name.as_ptr()
}

thread_local! {
    /// The calling thread's message for its last failure.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// The calling thread's message for its last failed haven call: never NULL (an empty string
/// before any failure). Owned by the library: valid until this thread's next haven call; copy
/// it to keep it. Thread safe (each thread has its own).
#[no_mangle]
pub extern "C" fn haven_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|m| m.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

fn set_last_error(message: &str) {
    // A message with an interior NUL (from a key in it, say) is cut at the NUL, not lost.
    let bytes = message.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = CString::new(&bytes[..end]).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|m| *m.borrow_mut() = text);
}

/// Run the body of an entry point: its error becomes a status code and the thread's message,
/// and a panic becomes `HAVEN_ERR_INTERNAL` instead of unwinding into C.
pub(crate) fn entry(name: &str, body: impl FnOnce() -> Result<()>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => HAVEN_OK,
        Ok(Err(e)) => fail(&e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error in {name}: {what}"));
            HAVEN_ERR_INTERNAL
        }
    }
}

/// Record `e` as the thread's last error and return its code.
pub(crate) fn fail(e: &Error) -> c_int {
    set_last_error(&e.to_string());
    e.code() as c_int
}

/// Test seam: an entry point that panics, to prove the panic stays on this side.
#[doc(hidden)]
#[no_mangle]
pub extern "C" fn haven_test_panic() -> c_int {
    entry("haven_test_panic", || {
        panic!("deliberate panic for the boundary test")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_macros_match_the_crate() {
        assert_eq!(
            format!("{HAVEN_VERSION_MAJOR}.{HAVEN_VERSION_MINOR}.{HAVEN_VERSION_PATCH}"),
            env!("CARGO_PKG_VERSION")
        );
        // SAFETY: haven_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(haven_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn a_panic_becomes_internal_with_a_message() {
        assert_eq!(haven_test_panic(), HAVEN_ERR_INTERNAL);
        // SAFETY: haven_last_error never returns NULL.
        let m = unsafe { CStr::from_ptr(haven_last_error()) };
        assert!(m.to_str().unwrap().contains("deliberate panic"), "{m:?}");
    }

    #[test]
    fn buf_free_is_idempotent_and_accepts_zeroed_and_null() {
        let mut buf = haven_buf_t::from_vec(b"abc".to_vec());
        assert_eq!(buf.len, 3);
        haven_buf_free(&mut buf);
        assert!(buf.data.is_null() && buf.len == 0);
        haven_buf_free(&mut buf);
        let mut zeroed = haven_buf_t {
            data: std::ptr::null_mut(),
            len: 0,
        };
        haven_buf_free(&mut zeroed);
        haven_buf_free(std::ptr::null_mut());
    }

    #[test]
    fn every_code_has_a_name() {
        for code in 0..=HAVEN_ERR_INTERNAL {
            // SAFETY: static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(haven_code_name(code)) };
            assert_ne!(name.to_str().unwrap(), "HAVEN_ERR_UNKNOWN", "code {code}");
        }
    }
}
