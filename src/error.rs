//! The one error type of haven.
//!
//! Expected outcomes (a compare-and-swap that lost, a key that is absent, a lock that is busy)
//! are ordinary return values, not errors. [`Error`] is for failures, and it is deliberately
//! small so that it maps onto the C ABI: every variant has a stable numeric [`ErrorCode`].
//!
//! The distinction that matters most to callers: [`Error::Unavailable`] means the operation was
//! NOT applied (no leader, no quorum, node closed), so it is always safe to retry;
//! [`Error::Timeout`] means it MAY have been applied.

use std::fmt;
use std::path::PathBuf;

/// Result alias used across haven.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable numeric codes, one per [`Error`] variant. These values are part of the C ABI and never
/// change; new codes are only ever appended.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Success (used only by the C ABI).
    Ok = 0,
    /// Bad input: oversize key or value, empty name, malformed request, null pointer.
    InvalidArgument = 1,
    /// Not applied: no leader, no quorum, or the node is shutting down. Safe to retry.
    Unavailable = 2,
    /// May or may not have been applied.
    Timeout = 3,
    /// Bytes on disk or on the wire failed verification.
    Corrupt = 4,
    /// A format version this build does not understand.
    UnsupportedVersion = 5,
    /// An operating-system IO error.
    Io = 6,
    /// A peer or client failed the authenticated handshake (wrong secret, cluster or node id).
    Auth = 7,
    /// The data directory is locked by another process or belongs to another node or cluster.
    DataDir = 8,
    /// A storage failure (for example a failed fdatasync) stopped this node; it takes no writes.
    Fatal = 9,
    /// A lock operation named a lock the caller does not hold (or a stale fencing token).
    LockNotHeld = 10,
    /// The session (lease) the operation relies on has expired or was revoked.
    SessionExpired = 11,
    /// The revision asked for is older than the window the member still keeps.
    Compacted = 12,
    /// The handle (or the member behind it) is closed.
    Closed = 13,
    /// A bug inside haven (for example a panic caught at the C boundary).
    Internal = 14,
}

/// A failure. Marked `#[non_exhaustive]`: match on [`Error::code`] for stable handling.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// Bad input; nothing was changed.
    InvalidArgument(String),
    /// The operation was not applied; it is safe to retry.
    Unavailable(String),
    /// The operation may have been applied.
    Timeout(String),
    /// Stored or received bytes failed verification.
    Corrupt {
        /// The file the bytes came from, when they came from a file.
        file: Option<PathBuf>,
        /// Byte offset of the bad record within the file or stream.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A format version this build does not understand.
    UnsupportedVersion {
        /// Which format (for example "wal frame" or "meta").
        what: &'static str,
        /// The version found.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// An IO error, with what haven was doing at the time.
    Io {
        /// What haven was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The authenticated handshake failed.
    Auth(String),
    /// The data directory cannot be used by this node.
    DataDir(String),
    /// A storage failure stopped this node.
    Fatal(String),
    /// The caller does not hold the lock (or its fencing token is stale).
    LockNotHeld(String),
    /// The session (lease) has expired or was revoked.
    SessionExpired(String),
}

impl Error {
    /// The stable code of this error (the value the C ABI returns).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Corrupt { .. } => ErrorCode::Corrupt,
            Error::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Error::Io { .. } => ErrorCode::Io,
            Error::Auth(_) => ErrorCode::Auth,
            Error::DataDir(_) => ErrorCode::DataDir,
            Error::Fatal(_) => ErrorCode::Fatal,
            Error::LockNotHeld(_) => ErrorCode::LockNotHeld,
            Error::SessionExpired(_) => ErrorCode::SessionExpired,
        }
    }

    /// Wrap an IO error with what haven was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A `Corrupt` error not tied to a file (a network stream or an in-memory buffer).
    pub fn corrupt(offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            file: None,
            offset,
            reason: reason.into(),
        }
    }

    /// Rewrite a `Corrupt` error's offset and reason (other variants pass through unchanged):
    /// an inner decoder reports positions and reasons relative to its own input, and the
    /// layer around it knows where that input starts and what it was.
    pub fn map_corrupt(self, rewrite: impl FnOnce(u64, String) -> (u64, String)) -> Error {
        match self {
            Error::Corrupt {
                file,
                offset,
                reason,
            } => {
                let (offset, reason) = rewrite(offset, reason);
                Error::Corrupt {
                    file,
                    offset,
                    reason,
                }
            }
            other => other,
        }
    }

    /// Attach a file and a base offset to a `Corrupt` error (no effect on other variants).
    pub fn in_file(self, path: impl Into<PathBuf>, base_offset: u64) -> Error {
        match self {
            Error::Corrupt {
                file: None,
                offset,
                reason,
            } => Error::Corrupt {
                file: Some(path.into()),
                offset: base_offset + offset,
                reason,
            },
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Unavailable(m) => write!(f, "unavailable (not applied): {m}"),
            Error::Timeout(m) => write!(f, "timeout (may have been applied): {m}"),
            Error::Corrupt {
                file: Some(file),
                offset,
                reason,
            } => write!(
                f,
                "corrupt data in {} at offset {offset}: {reason}",
                file.display()
            ),
            Error::Corrupt {
                file: None,
                offset,
                reason,
            } => write!(f, "corrupt data at offset {offset}: {reason}"),
            Error::UnsupportedVersion {
                what,
                found,
                supported,
            } => write!(
                f,
                "unsupported {what} version {found} (this build understands up to {supported})"
            ),
            Error::Io { context, source } => write!(f, "io error while {context}: {source}"),
            Error::Auth(m) => write!(f, "authentication failed: {m}"),
            Error::DataDir(m) => write!(f, "data directory refused: {m}"),
            Error::Fatal(m) => write!(f, "fatal storage error, node stopped: {m}"),
            Error::LockNotHeld(m) => write!(f, "lock not held: {m}"),
            Error::SessionExpired(m) => write!(f, "session expired: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        // These numbers are part of the C ABI: changing one is a breaking change.
        assert_eq!(ErrorCode::Ok as i32, 0);
        assert_eq!(Error::InvalidArgument(String::new()).code() as i32, 1);
        assert_eq!(Error::Unavailable(String::new()).code() as i32, 2);
        assert_eq!(Error::Timeout(String::new()).code() as i32, 3);
        assert_eq!(Error::corrupt(0, "x").code() as i32, 4);
        let unsupported = Error::UnsupportedVersion {
            what: "x",
            found: 2,
            supported: 1,
        };
        assert_eq!(unsupported.code() as i32, 5);
        assert_eq!(Error::io("x", std::io::Error::other("y")).code() as i32, 6);
        assert_eq!(Error::Auth(String::new()).code() as i32, 7);
        assert_eq!(Error::DataDir(String::new()).code() as i32, 8);
        assert_eq!(Error::Fatal(String::new()).code() as i32, 9);
        // Codes the C ABI and the coordination services use before any variant does.
        assert_eq!(ErrorCode::LockNotHeld as i32, 10);
        assert_eq!(ErrorCode::SessionExpired as i32, 11);
        assert_eq!(ErrorCode::Compacted as i32, 12);
        assert_eq!(ErrorCode::Closed as i32, 13);
        assert_eq!(ErrorCode::Internal as i32, 14);
    }

    #[test]
    fn in_file_names_file_and_absolute_offset() {
        let e = Error::corrupt(8, "bad crc").in_file("/d/wal/0001.seg", 4096);
        match e {
            Error::Corrupt { file, offset, .. } => {
                assert_eq!(file.unwrap().to_str(), Some("/d/wal/0001.seg"));
                assert_eq!(offset, 4104);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn map_corrupt_rewrites_offset_and_reason_and_keeps_the_file() {
        let e = Error::corrupt(3, "bad varint")
            .in_file("/d/snap/x.snap", 0)
            .map_corrupt(|offset, reason| (offset + 1, format!("command: {reason}")));
        match e {
            Error::Corrupt {
                file,
                offset,
                reason,
            } => {
                assert_eq!(file.unwrap().to_str(), Some("/d/snap/x.snap"));
                assert_eq!(offset, 4);
                assert_eq!(reason, "command: bad varint");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let untouched = Error::Auth("no".into()).map_corrupt(|_, _| panic!("not Corrupt"));
        assert!(matches!(untouched, Error::Auth(_)));
    }
}
