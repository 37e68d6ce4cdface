//! Watches in the client protocol: what a watch asks for, the events it delivers, and the frame a
//! member pushes to a remote client (`docs/FORMAT.md`, "Pushed frames").

use crate::error::{Error, Result};
use crate::limits::MAX_KEY_BYTES;
use crate::sm::{prefix_end, KeyMeta};
use crate::types::LogIndex;
use bincode::{Decode, Encode};

/// Version of [`PushFrame`]; a client refuses a higher one (it closes the watch with
/// `UnsupportedVersion` and resumes nowhere).
pub const PUSH_FRAME_VERSION: u32 = 1;

/// What a watch covers and where it starts.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WatchSpec {
    /// First key (inclusive); may be empty.
    pub start: Vec<u8>,
    /// End key (exclusive); `None` for no upper bound.
    pub end: Option<Vec<u8>>,
    /// Deliver the changes at this revision and after (a revision is a log index). A revision
    /// the member no longer keeps ends the watch with [`WatchEnd::Compacted`]; the gapless way
    /// to start is "read ([`super::ReadOp::RangeAt`]), then watch from its revision + 1".
    pub from_revision: LogIndex,
    /// Deliver each change's previous value too.
    pub prev_value: bool,
}

impl WatchSpec {
    /// Every key starting with `prefix` (empty: every key).
    pub fn prefix(prefix: &[u8], from_revision: LogIndex) -> WatchSpec {
        WatchSpec {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
            from_revision,
            prev_value: false,
        }
    }

    /// Keys in `[start, end)` (`end` `None`: to the last key).
    pub fn range(start: &[u8], end: Option<&[u8]>, from_revision: LogIndex) -> WatchSpec {
        WatchSpec {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            from_revision,
            prev_value: false,
        }
    }

    /// Whether `key` is in the watched range.
    pub fn covers(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().map_or(true, |end| key < end)
    }

    /// `InvalidArgument` for bounds over the key limit or an empty range.
    pub fn validate(&self) -> Result<()> {
        if self.start.len() > MAX_KEY_BYTES
            || self.end.as_ref().is_some_and(|e| e.len() > MAX_KEY_BYTES)
        {
            return Err(Error::InvalidArgument(format!(
                "watch: a bound is over the key limit of {MAX_KEY_BYTES} bytes"
            )));
        }
        if self.end.as_ref().is_some_and(|e| e <= &self.start) {
            return Err(Error::InvalidArgument(
                "watch: range end must be greater than start".into(),
            ));
        }
        Ok(())
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EventKind {
    /// It was set (created or overwritten).
    Put,
    /// It was removed.
    Delete,
}

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct WatchEvent {
    /// The revision (log index) of the entry that made it.
    pub revision: LogIndex,
    /// Put or delete.
    pub kind: EventKind,
    /// The key.
    pub key: Vec<u8>,
    /// The new value (empty for a delete).
    pub value: Vec<u8>,
    /// The new metadata (`None` for a delete).
    pub meta: Option<KeyMeta>,
    /// The value before the change, when the watch asked for it (`None` also when the key was
    /// absent).
    pub prev_value: Option<Vec<u8>>,
}

/// Why a watch ended on the member's side. After any of these nothing more comes for it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WatchEnd {
    /// The watch started (or needs to resume) before the oldest revision the member still has:
    /// re-read the keys and watch again from the read's revision + 1.
    Compacted {
        /// The oldest revision the member can deliver from.
        oldest: LogIndex,
    },
    /// The watcher fell further behind than its buffer allows: re-read and watch again.
    Overflow,
    /// The member refused or closed the watch (shutting down, too many watches, bad range).
    Closed {
        /// The stable [`crate::ErrorCode`] of the reason.
        code: i32,
        /// Why.
        message: String,
    },
}

/// What a member pushes for one watch.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WatchPush {
    /// Events of one or more whole revisions, in revision order (a revision is never split
    /// across pushes).
    Events(Vec<WatchEvent>),
    /// Nothing changed in the watched range up to and including `revision`: every event up to
    /// it has been pushed. Sent on idle watches.
    Progress {
        /// The member's applied revision.
        revision: LogIndex,
    },
    /// The watch is over.
    Ended(WatchEnd),
}

/// The payload of a pushed frame (frame kind 34, `ClientPush`): a member sends it on a remote
/// client's connection, for a watch the client opened on that connection.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PushFrame {
    /// [`PUSH_FRAME_VERSION`].
    pub version: u32,
    /// The client's id for the watch (from [`super::Request::Watch`]).
    pub watch_id: u64,
    /// What happened.
    pub push: WatchPush,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_value, encode_value};

    #[test]
    fn push_frame_layout_is_stable() {
        // docs/FORMAT.md, "Pushed frames".
        let frame = PushFrame {
            version: PUSH_FRAME_VERSION,
            watch_id: 7,
            push: WatchPush::Events(vec![WatchEvent {
                revision: LogIndex(300),
                kind: EventKind::Delete,
                key: b"k".to_vec(),
                value: Vec::new(),
                meta: None,
                prev_value: None,
            }]),
        };
        let bytes = encode_value(&frame).unwrap();
        assert_eq!(
            bytes,
            [0x01, 0x07, 0x00, 0x01, 0xfb, 0x2c, 0x01, 0x01, 0x01, 0x6b, 0x00, 0x00, 0x00]
        );
        assert_eq!(decode_value::<PushFrame>(&bytes).unwrap(), frame);
        let progress = PushFrame {
            version: 1,
            watch_id: 1,
            push: WatchPush::Progress {
                revision: LogIndex(5),
            },
        };
        assert_eq!(encode_value(&progress).unwrap(), [0x01, 0x01, 0x01, 0x05]);
    }

    #[test]
    fn prefix_spec_covers_exactly_the_prefix() {
        let spec = WatchSpec::prefix(b"ab", LogIndex(1));
        assert!(spec.covers(b"ab"));
        assert!(spec.covers(b"ab\xff"));
        assert!(!spec.covers(b"ac"));
        assert!(!spec.covers(b"aa"));
        assert!(WatchSpec::prefix(b"", LogIndex(1)).covers(b"anything"));
        assert!(WatchSpec::range(b"b", Some(b"a"), LogIndex(1))
            .validate()
            .is_err());
    }
}
