//! `haven_set_log_callback`: haven's log events go to the host.
//!
//! The callback is a [`::log::Log`] implementation installed as the process's `log` facade
//! logger, so it receives every event haven emits through the facade (`crate::logging`), as
//! one logfmt line each; records of other crates (sled logs through the same facade) are not
//! passed on.

use super::entry;
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::{Mutex, Once};

/// Logging off.
pub const HAVEN_LOG_OFF: c_int = 0;
/// Failures that need an operator.
pub const HAVEN_LOG_ERROR: c_int = 1;
/// Unexpected events haven handled.
pub const HAVEN_LOG_WARN: c_int = 2;
/// Normal, noteworthy events (elections, membership changes, snapshots).
pub const HAVEN_LOG_INFO: c_int = 3;
/// Detail for diagnosis.
pub const HAVEN_LOG_DEBUG: c_int = 4;
/// Everything.
pub const HAVEN_LOG_TRACE: c_int = 5;

/// A log callback: `level` is a `HAVEN_LOG_*` value, `message` one event in logfmt
/// (`level=info node=1 term=3 event=became_leader voters=3`), NUL-terminated and valid only
/// during the call.
pub type haven_log_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: c_int, message: *const c_char)>;

#[derive(Clone, Copy)]
struct Callback {
    function: unsafe extern "C" fn(*mut c_void, c_int, *const c_char),
    /// The host's pointer, passed back untouched (as an integer: it is never dereferenced
    /// here, and the host promises it may be used from any thread).
    user_data: usize,
}

static CALLBACK: Mutex<Option<Callback>> = Mutex::new(None);
static INSTALL: Once = Once::new();
static HOST_LOGGER: HostLogger = HostLogger;

struct HostLogger;

fn current() -> Option<Callback> {
    *CALLBACK.lock().unwrap_or_else(|e| e.into_inner())
}

fn host_level(level: ::log::Level) -> c_int {
    match level {
        ::log::Level::Error => HAVEN_LOG_ERROR,
        ::log::Level::Warn => HAVEN_LOG_WARN,
        ::log::Level::Info => HAVEN_LOG_INFO,
        ::log::Level::Debug => HAVEN_LOG_DEBUG,
        ::log::Level::Trace => HAVEN_LOG_TRACE,
    }
}

impl ::log::Log for HostLogger {
    fn enabled(&self, metadata: &::log::Metadata) -> bool {
        metadata.level() <= ::log::max_level()
            && crate::logging::is_haven(metadata.target())
            && current().is_some()
    }

    fn log(&self, record: &::log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Copied out of the lock: the callback never runs while haven holds a lock, so it may
        // call back into haven (even haven_set_log_callback).
        let Some(callback) = current() else { return };
        let text = crate::logging::Event::from_record(record)
            .to_logfmt()
            .replace('\0', " ");
        let message = CString::new(text).unwrap_or_default();
        // SAFETY: the host registered `function` for exactly this signature; `message` lives
        // until after the call.
        unsafe {
            (callback.function)(
                callback.user_data as *mut c_void,
                host_level(record.level()),
                message.as_ptr(),
            )
        };
    }

    fn flush(&self) {}
}

fn level_filter(level: c_int) -> Result<::log::LevelFilter> {
    use ::log::LevelFilter;
    Ok(match level {
        HAVEN_LOG_OFF => LevelFilter::Off,
        HAVEN_LOG_ERROR => LevelFilter::Error,
        HAVEN_LOG_WARN => LevelFilter::Warn,
        HAVEN_LOG_INFO => LevelFilter::Info,
        HAVEN_LOG_DEBUG => LevelFilter::Debug,
        HAVEN_LOG_TRACE => LevelFilter::Trace,
        other => {
            return Err(Error::InvalidArgument(format!(
                "level: {other} is not a HAVEN_LOG_* level (0 to 5)"
            )))
        }
    })
}

/// Send haven's log events at `level` and more important (`HAVEN_LOG_*`) to `callback`, for
/// the whole process (haven writes nothing to standard error by itself). `callback` NULL:
/// stop delivering events. Replaces any earlier callback.
///
/// The callback runs on haven's own threads (any of them, several at once), never while haven
/// holds an internal lock; it must be thread safe, must not unwind or longjmp into haven, and
/// should return quickly (a slow callback slows the member). `user_data` is passed back as
/// is: it must stay valid for as long as the callback may run, which includes events already
/// in flight when a later call replaces it. Errors: INVALID_ARGUMENT (bad level, or a
/// different `log` facade logger is already installed in this process). Does not block.
#[no_mangle]
pub extern "C" fn haven_set_log_callback(
    callback: haven_log_fn,
    user_data: *mut c_void,
    level: c_int,
) -> c_int {
    entry("haven_set_log_callback", || {
        let filter = level_filter(level)?;
        let mut installed = Ok(());
        INSTALL.call_once(|| installed = ::log::set_logger(&HOST_LOGGER));
        installed.map_err(|_| {
            Error::InvalidArgument(
                "another `log` facade logger is installed in this process".into(),
            )
        })?;
        let new = callback.map(|function| Callback {
            function,
            user_data: user_data as usize,
        });
        *CALLBACK.lock().unwrap_or_else(|e| e.into_inner()) = new;
        ::log::set_max_level(if new.is_some() {
            filter
        } else {
            ::log::LevelFilter::Off
        });
        Ok(())
    })
}
