//! Watches in the client protocol: what a watch asks for, the events it delivers, and the frame a
//! member pushes to a remote client (`docs/FORMAT.md`, "Pushed frames").

use crate::error::{Error, Result};
use crate::limits::{MAX_KEY_BYTES, MAX_LOCK_NAME_BYTES};
use crate::sm::{prefix_end, FencingToken, KeyMeta, SessionId};
use crate::types::LogIndex;
use bincode::{Decode, Encode};

/// The newest version of [`PushFrame`] this build sends and reads. A frame is stamped with the
/// lowest version that knows everything in it ([`WatchPush::min_version`]): 1 for the pushes of
/// a watch of user keys, 2 for the events of an election or a partition map
/// ([`EventKind::Leader`] and after). So a client of version 1, which only ever opens watches
/// of user keys, still gets version-1 frames. A client ignores a frame of a higher version.
pub const PUSH_FRAME_VERSION: u32 = 2;

/// What a watch covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Encode, Decode)]
pub enum WatchTarget {
    /// User keys in `[start, end)` of the [`WatchSpec`]: [`EventKind::Put`] and
    /// [`EventKind::Delete`] events.
    #[default]
    Keys,
    /// The election of this name: an [`EventKind::Leader`] or [`EventKind::NoLeader`] event
    /// whenever its record changes (a change of leader, a proclaim, but also a campaigner
    /// joining or leaving: the leader is then repeated). Protocol version 4.
    Election(Vec<u8>),
    /// The partition map of this name: an [`EventKind::MapEpoch`] event per change of the map
    /// (its creation has none). Protocol version 4.
    Map(String),
}

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
    /// Deliver each change's previous value too (user keys only).
    pub prev_value: bool,
    /// What the watch covers: user keys in `[start, end)` (the only target of protocol
    /// version 3), an election or a partition map.
    pub target: WatchTarget,
}

/// The form of a [`WatchSpec`] that [`super::Request::Watch`] carries (protocol version 3): a
/// watch of user keys, without a target.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct KeyWatchSpec {
    /// First key (inclusive); may be empty.
    pub start: Vec<u8>,
    /// End key (exclusive); `None` for no upper bound.
    pub end: Option<Vec<u8>>,
    /// See [`WatchSpec::from_revision`].
    pub from_revision: LogIndex,
    /// See [`WatchSpec::prev_value`].
    pub prev_value: bool,
}

impl From<KeyWatchSpec> for WatchSpec {
    fn from(k: KeyWatchSpec) -> WatchSpec {
        WatchSpec {
            start: k.start,
            end: k.end,
            from_revision: k.from_revision,
            prev_value: k.prev_value,
            target: WatchTarget::Keys,
        }
    }
}

impl WatchSpec {
    /// Every key starting with `prefix` (empty: every key).
    pub fn prefix(prefix: &[u8], from_revision: LogIndex) -> WatchSpec {
        WatchSpec {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
            from_revision,
            prev_value: false,
            target: WatchTarget::Keys,
        }
    }

    /// The leader of election `name` from `from_revision` (0: from now on).
    pub fn election(name: &[u8], from_revision: LogIndex) -> WatchSpec {
        WatchSpec {
            start: Vec::new(),
            end: None,
            from_revision,
            prev_value: false,
            target: WatchTarget::Election(name.to_vec()),
        }
    }

    /// The epochs of partition map `name` from `from_revision` (0: from now on).
    pub fn map(name: &str, from_revision: LogIndex) -> WatchSpec {
        WatchSpec {
            start: Vec::new(),
            end: None,
            from_revision,
            prev_value: false,
            target: WatchTarget::Map(name.to_string()),
        }
    }

    /// The version-3 form of a watch of user keys, `None` for another target.
    pub fn as_key_watch(&self) -> Option<KeyWatchSpec> {
        (self.target == WatchTarget::Keys).then(|| KeyWatchSpec {
            start: self.start.clone(),
            end: self.end.clone(),
            from_revision: self.from_revision,
            prev_value: self.prev_value,
        })
    }

    /// Whether the watch covers `event`: a user key's event in its range, or an event of its
    /// election or map.
    pub fn covers_event(&self, event: &WatchEvent) -> bool {
        match (&self.target, event.kind) {
            (WatchTarget::Keys, EventKind::Put | EventKind::Delete) => self.covers(&event.key),
            (WatchTarget::Election(name), EventKind::Leader { .. } | EventKind::NoLeader) => {
                event.key == *name
            }
            (WatchTarget::Map(name), EventKind::MapEpoch { .. }) => event.key == name.as_bytes(),
            _ => false,
        }
    }

    /// Keys in `[start, end)` (`end` `None`: to the last key).
    pub fn range(start: &[u8], end: Option<&[u8]>, from_revision: LogIndex) -> WatchSpec {
        WatchSpec {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            from_revision,
            prev_value: false,
            target: WatchTarget::Keys,
        }
    }

    /// Whether `key` is in the watched range.
    pub fn covers(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().map_or(true, |end| key < end)
    }

    /// `InvalidArgument` for bounds over the key limit or an empty range, a bad election or
    /// map name, or previous values asked of a target that has none.
    pub fn validate(&self) -> Result<()> {
        match &self.target {
            WatchTarget::Keys => {}
            WatchTarget::Election(name) => {
                if name.is_empty() || name.len() > MAX_LOCK_NAME_BYTES {
                    return Err(Error::InvalidArgument(format!(
                        "watch: election name of {} bytes is not in 1..={MAX_LOCK_NAME_BYTES}",
                        name.len()
                    )));
                }
            }
            WatchTarget::Map(name) => crate::sm::validate_map_name(name)?,
        }
        if self.target != WatchTarget::Keys && self.prev_value {
            return Err(Error::InvalidArgument(
                "watch: previous values exist only for user keys".into(),
            ));
        }
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

/// What happened to a key (or to an election, or a partition map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EventKind {
    /// It was set (created or overwritten).
    Put,
    /// It was removed.
    Delete,
    /// Election `key` is led by `session` with `token`, its value is the event's `value`
    /// (push frame version 2).
    Leader {
        /// The leadership's fencing token.
        token: FencingToken,
        /// The leader's session.
        session: SessionId,
    },
    /// Election `key` has no leader (push frame version 2).
    NoLeader,
    /// Partition map `key` changed to `epoch`; the event's `value` is the change's
    /// `EpochMoves` (bincode, without the stored record's version byte) (push frame version 2).
    MapEpoch {
        /// The map's new epoch.
        epoch: u64,
    },
}

impl EventKind {
    /// The lowest push frame version that has this kind.
    pub fn min_version(self) -> u32 {
        match self {
            EventKind::Put | EventKind::Delete => 1,
            EventKind::Leader { .. } | EventKind::NoLeader | EventKind::MapEpoch { .. } => 2,
        }
    }
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

impl WatchEvent {
    /// The epoch and the moved slots of an [`EventKind::MapEpoch`] event (`None` for another
    /// kind); `Corrupt` if its value does not decode.
    pub fn map_moves(&self) -> Option<Result<crate::sm::EpochMoves>> {
        match self.kind {
            EventKind::MapEpoch { .. } => Some(crate::codec::decode_value(&self.value)),
            _ => None,
        }
    }
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

impl WatchPush {
    /// The lowest push frame version that knows everything in this push.
    pub fn min_version(&self) -> u32 {
        match self {
            WatchPush::Events(events) => events
                .iter()
                .map(|e| e.kind.min_version())
                .max()
                .unwrap_or(1),
            WatchPush::Progress { .. } | WatchPush::Ended(_) => 1,
        }
    }
}

/// The event a change of an election or a partition map makes (`None` for a change of a user
/// key, which the watch thread decodes itself, with its previous value).
pub(crate) fn target_event(
    revision: LogIndex,
    change: &crate::sm::KvChange,
) -> Option<Result<WatchEvent>> {
    use crate::sm::ChangeTarget;
    let event = |kind, value| WatchEvent {
        revision,
        kind,
        key: change.key.clone(),
        value,
        meta: None,
        prev_value: None,
    };
    match change.target {
        ChangeTarget::Key => None,
        ChangeTarget::Election => Some(change.leader().map(|leader| match leader {
            Some(l) => event(
                EventKind::Leader {
                    token: l.token,
                    session: l.session,
                },
                l.value,
            ),
            None => event(EventKind::NoLeader, Vec::new()),
        })),
        ChangeTarget::MapEpoch => Some(change.map_moves().and_then(|moves| {
            let value = crate::codec::encode_value(&moves)?;
            Ok(event(EventKind::MapEpoch { epoch: moves.epoch }, value))
        })),
    }
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
        // A key watch's frames are version 1 (the version a frame is stamped with is the
        // lowest that has its contents).
        let frame = PushFrame {
            version: 1,
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
    fn election_events_are_push_frame_version_2_and_key_pushes_stay_version_1() {
        // docs/FORMAT.md, "Pushed frames": watch 2, election `e` led by session 5 with token
        // 300 and value `v`, at revision 301.
        let push = WatchPush::Events(vec![WatchEvent {
            revision: LogIndex(301),
            kind: EventKind::Leader {
                token: FencingToken(300),
                session: SessionId(5),
            },
            key: b"e".to_vec(),
            value: b"v".to_vec(),
            meta: None,
            prev_value: None,
        }]);
        assert_eq!(push.min_version(), 2);
        let frame = PushFrame {
            version: push.min_version(),
            watch_id: 2,
            push,
        };
        let bytes = encode_value(&frame).unwrap();
        assert_eq!(
            bytes,
            [
                0x02, 0x02, 0x00, 0x01, 0xfb, 0x2d, 0x01, 0x02, 0xfb, 0x2c, 0x01, 0x05, 0x01, 0x65,
                0x01, 0x76, 0x00, 0x00
            ]
        );
        assert_eq!(decode_value::<PushFrame>(&bytes).unwrap(), frame);
        let no_leader = WatchPush::Events(vec![WatchEvent {
            kind: EventKind::NoLeader,
            value: Vec::new(),
            ..match &frame.push {
                WatchPush::Events(e) => e[0].clone(),
                _ => unreachable!(),
            }
        }]);
        assert_eq!(no_leader.min_version(), 2);
        // Pushes of a key watch are what a version-1 client reads.
        let put = WatchPush::Events(vec![WatchEvent {
            revision: LogIndex(1),
            kind: EventKind::Put,
            key: b"k".to_vec(),
            value: Vec::new(),
            meta: None,
            prev_value: None,
        }]);
        assert_eq!(put.min_version(), 1);
        assert_eq!(
            WatchPush::Progress {
                revision: LogIndex(9)
            }
            .min_version(),
            1
        );
        assert_eq!(WatchPush::Ended(WatchEnd::Overflow).min_version(), 1);
    }

    #[test]
    fn a_key_watch_request_keeps_its_version_3_bytes_and_other_targets_are_version_4() {
        use crate::proto::Request;
        let spec = WatchSpec::prefix(b"k", LogIndex(5));
        let request = Request::watch(7, &spec);
        assert_eq!(request.protocol_version(), 3);
        // Request tag 6 (`Watch`), watch 7, start "k", end Some("l"), from 5, prev false: the
        // bytes a version-3 client sends.
        assert_eq!(
            encode_value(&request).unwrap(),
            [0x06, 0x07, 0x01, 0x6b, 0x01, 0x01, 0x6c, 0x05, 0x00]
        );
        let election = Request::watch(7, &WatchSpec::election(b"e", LogIndex(5)));
        assert_eq!(election.protocol_version(), 4);
        assert!(matches!(election, Request::OpenWatch { .. }));
        let bytes = encode_value(&election).unwrap();
        assert_eq!(decode_value::<Request>(&bytes).unwrap(), election);
    }

    #[test]
    fn targets_cover_only_their_own_events() {
        let event = |kind, key: &[u8]| WatchEvent {
            revision: LogIndex(1),
            kind,
            key: key.to_vec(),
            value: Vec::new(),
            meta: None,
            prev_value: None,
        };
        let keys = WatchSpec::prefix(b"", LogIndex(0));
        let election = WatchSpec::election(b"e", LogIndex(0));
        let map = WatchSpec::map("e", LogIndex(0));
        assert!(keys.covers_event(&event(EventKind::Put, b"e")));
        assert!(!keys.covers_event(&event(EventKind::NoLeader, b"e")));
        assert!(!keys.covers_event(&event(EventKind::MapEpoch { epoch: 2 }, b"e")));
        assert!(election.covers_event(&event(EventKind::NoLeader, b"e")));
        assert!(!election.covers_event(&event(EventKind::NoLeader, b"f")));
        assert!(!election.covers_event(&event(EventKind::Put, b"e")));
        assert!(!election.covers_event(&event(EventKind::MapEpoch { epoch: 2 }, b"e")));
        assert!(map.covers_event(&event(EventKind::MapEpoch { epoch: 2 }, b"e")));
        assert!(!map.covers_event(&event(EventKind::NoLeader, b"e")));
        let mut with_prev = WatchSpec::election(b"e", LogIndex(0));
        with_prev.prev_value = true;
        assert!(with_prev.validate().is_err());
        assert!(WatchSpec::election(b"", LogIndex(0)).validate().is_err());
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
