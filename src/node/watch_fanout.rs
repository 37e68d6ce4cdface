//! Fan-out of the watch window to many watchers without a copy per watcher.
//!
//! Each revision is decoded once into a [`Revision`], immutable and shared (`Arc`) by the
//! window and by every push that carries it. A push is a list of [`Part`]s: a shared revision
//! and which of its events the watcher's filter selected (usually all of them, and then no
//! list is kept). The hub thread only selects; the copies a user must own are made by the
//! receiving side:
//! - in process, [`materialize`] builds the `WatchEvent`s on the watcher's own thread (its
//!   watch's reader, one revision at a time), so the hub's time per revision does not grow
//!   with the watcher count;
//! - remote, [`EventsFrame`] writes the pushed frame straight from each revision's wire
//!   encoding, made once per delivery round (on first need, [`Encodings`]) and reused for every
//!   remote watcher of the round, so the bytes on the wire are those of a `PushFrame` but no
//!   event is cloned or re-encoded per watcher. The encodings are dropped with the round: the
//!   window never holds a second copy of its events. Watchers that want previous values take
//!   the plain path (clone and encode), since their events differ from everyone else's.

use crate::codec;
use crate::proto::WatchEvent;
use crate::types::LogIndex;
use bincode::enc::write::Writer;
use bincode::enc::Encoder;
use bincode::error::EncodeError;
use bincode::Encode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// One revision in the window: its events (without previous values) and, when they were
/// recorded, the previous values. Immutable once made; shared by the window and the pushes.
pub(crate) struct Revision {
    pub(crate) revision: LogIndex,
    pub(crate) events: Vec<WatchEvent>,
    pub(crate) previous: Option<Vec<Option<Vec<u8>>>>,
    /// Key and value bytes of its events (for the window's byte bound).
    pub(crate) bytes: usize,
}

/// The wire encoding of a revision's events, one after another; event `i` is
/// `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
struct Encoded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Revision {
    pub(crate) fn new(
        revision: LogIndex,
        events: Vec<WatchEvent>,
        previous: Option<Vec<Option<Vec<u8>>>>,
        bytes: usize,
    ) -> Revision {
        Revision {
            revision,
            events,
            previous,
            bytes,
        }
    }

    /// Event `i` as a watcher that asked for previous values gets it.
    fn event_with_previous(&self, i: usize) -> Option<WatchEvent> {
        let mut event = self.events.get(i)?.clone();
        event.prev_value = self
            .previous
            .as_ref()
            .and_then(|p| p.get(i).cloned().flatten());
        Some(event)
    }

    /// The encoding, `None` if an event does not encode (over the frame limit: then the push
    /// fails the same way on the plain path).
    fn encode(&self) -> Option<Encoded> {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(self.events.len());
        for event in &self.events {
            codec::encode_value_into(event, &mut bytes).ok()?;
            ends.push(bytes.len());
        }
        Some(Encoded { bytes, ends })
    }
}

/// The encodings of the revisions one delivery round pushes to remote watchers, made on first
/// need. Lives for one round on the watch thread.
#[derive(Default)]
pub(crate) struct Encodings(RefCell<HashMap<LogIndex, Option<Encoded>>>);

/// Some events of one shared revision, for one watcher.
pub(crate) struct Part {
    revision: Arc<Revision>,
    /// The indexes of the selected events, in order; `None` for all of them.
    only: Option<Vec<u32>>,
}

impl Part {
    /// The events of `revision` that `selects` (the watcher's filter) picks, `None` if none.
    pub(crate) fn select(
        revision: &Arc<Revision>,
        mut selects: impl FnMut(&WatchEvent) -> bool,
    ) -> Option<Part> {
        let events = &revision.events;
        // Bounded by the revision's events (one pass, a second only for a partial match).
        let first_miss = events.iter().position(|e| !selects(e));
        let only = match first_miss {
            None => None,
            Some(miss) => {
                let mut only: Vec<u32> = (0..miss as u32).collect();
                only.extend(
                    (miss + 1..events.len())
                        .filter(|&i| selects(&events[i]))
                        .map(|i| i as u32),
                );
                if only.is_empty() {
                    return None;
                }
                Some(only)
            }
        };
        Some(Part {
            revision: Arc::clone(revision),
            only,
        })
    }

    /// How many events it carries.
    pub(crate) fn len(&self) -> usize {
        self.only
            .as_ref()
            .map_or(self.revision.events.len(), Vec::len)
    }

    /// The indexes of its events in the revision.
    fn indexes(&self) -> impl Iterator<Item = usize> + '_ {
        let (all, only) = match &self.only {
            None => (0..self.revision.events.len(), [].iter()),
            Some(only) => (0..0, only.iter()),
        };
        all.chain(only.map(|&i| i as usize))
    }
}

/// The events of `parts` as the watcher owns them (with previous values if it asked).
pub(crate) fn materialize(parts: &[Part], prev_value: bool) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(parts.iter().map(Part::len).sum());
    for part in parts {
        for i in part.indexes() {
            let event = if prev_value {
                part.revision.event_with_previous(i)
            } else {
                part.revision.events.get(i).cloned()
            };
            out.extend(event);
        }
    }
    out
}

/// A pushed frame of events, encoded as the `PushFrame { version, watch_id,
/// push: WatchPush::Events(events) }` it stands for (pinned by a test below).
pub(crate) struct EventsFrame<'a> {
    pub(crate) watch_id: u64,
    pub(crate) parts: &'a [Part],
    pub(crate) prev_value: bool,
    pub(crate) encodings: &'a Encodings,
}

impl EventsFrame<'_> {
    /// The lowest push frame version that has every event it carries (a key watch's frames stay
    /// version 1, so clients that predate election and map events still read them).
    fn version(&self) -> u32 {
        self.parts
            .iter()
            .flat_map(|part| part.indexes().filter_map(|i| part.revision.events.get(i)))
            .map(|event| event.kind.min_version())
            .max()
            .unwrap_or(1)
    }
}

/// `WatchPush::Events`'s variant index (bincode encodes an enum variant as its index).
const EVENTS_VARIANT: u32 = 0;

impl Encode for EventsFrame<'_> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.version().encode(encoder)?;
        self.watch_id.encode(encoder)?;
        EVENTS_VARIANT.encode(encoder)?;
        // A Vec's length is encoded as a u64.
        (self.parts.iter().map(Part::len).sum::<usize>() as u64).encode(encoder)?;
        let mut encodings = self.encodings.0.borrow_mut();
        for part in self.parts {
            let revision = &part.revision;
            let encoded = if self.prev_value {
                None
            } else {
                encodings
                    .entry(revision.revision)
                    .or_insert_with(|| revision.encode())
                    .as_ref()
            };
            match encoded {
                Some(encoded) if part.only.is_none() => {
                    encoder.writer().write(&encoded.bytes)?;
                }
                Some(encoded) => {
                    for i in part.indexes() {
                        let start = if i == 0 { 0 } else { encoded.ends[i - 1] };
                        encoder
                            .writer()
                            .write(&encoded.bytes[start..encoded.ends[i]])?;
                    }
                }
                None => {
                    for i in part.indexes() {
                        let event = if self.prev_value {
                            revision.event_with_previous(i)
                        } else {
                            revision.events.get(i).cloned()
                        };
                        if let Some(event) = event {
                            event.encode(encoder)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{EventKind, PushFrame, WatchPush};
    use crate::sm::KeyMeta;

    fn event(revision: u64, key: &[u8], value: &[u8]) -> WatchEvent {
        WatchEvent {
            revision: LogIndex(revision),
            kind: if value.is_empty() {
                EventKind::Delete
            } else {
                EventKind::Put
            },
            key: key.to_vec(),
            value: value.to_vec(),
            meta: (!value.is_empty()).then_some(KeyMeta {
                create_revision: LogIndex(revision),
                mod_revision: LogIndex(revision),
                version: 3,
            }),
            prev_value: None,
        }
    }

    fn revisions() -> Vec<Arc<Revision>> {
        vec![
            Arc::new(Revision::new(
                LogIndex(7),
                vec![
                    event(7, b"a/1", b"x"),
                    event(7, b"b/1", b""),
                    event(7, b"a/2", b"yy"),
                ],
                Some(vec![Some(b"old".to_vec()), None, Some(Vec::new())]),
                9,
            )),
            Arc::new(Revision::new(
                LogIndex(300),
                vec![event(300, b"a/3", &[0xff; 200])],
                None,
                203,
            )),
        ]
    }

    /// What the hub pushed before the fan-out: cloned events, with previous values if asked.
    fn plain(revisions: &[Arc<Revision>], prefix: &[u8], prev_value: bool) -> Vec<WatchEvent> {
        let mut out = Vec::new();
        for r in revisions {
            for (i, e) in r.events.iter().enumerate() {
                if e.key.starts_with(prefix) {
                    let mut e = e.clone();
                    if prev_value {
                        e.prev_value = r.previous.as_ref().and_then(|p| p[i].clone());
                    }
                    out.push(e);
                }
            }
        }
        out
    }

    #[test]
    fn shared_parts_deliver_what_a_copy_per_watcher_delivered() {
        let revisions = revisions();
        for prefix in [&b"a/"[..], b"b/", b"", b"c/"] {
            for prev_value in [false, true] {
                let parts: Vec<Part> = revisions
                    .iter()
                    .filter_map(|r| Part::select(r, |e| e.key.starts_with(prefix)))
                    .collect();
                let expected = plain(&revisions, prefix, prev_value);
                assert_eq!(parts.iter().map(Part::len).sum::<usize>(), expected.len());
                // In process.
                assert_eq!(materialize(&parts, prev_value), expected, "{prefix:?}");
                // On the wire: byte for byte the frame the events make.
                let encodings = Encodings::default();
                let frame = EventsFrame {
                    watch_id: 42,
                    parts: &parts,
                    prev_value,
                    encodings: &encodings,
                };
                let bytes = codec::encode_value(&frame).unwrap();
                // Again, from the round's encodings.
                assert_eq!(codec::encode_value(&frame).unwrap(), bytes);
                let reference = PushFrame {
                    // A key watch's events: version 1, what clients before version 2 read.
                    version: 1,
                    watch_id: 42,
                    push: WatchPush::Events(expected),
                };
                assert_eq!(
                    bytes,
                    codec::encode_value(&reference).unwrap(),
                    "{prefix:?}"
                );
                assert_eq!(codec::decode_value::<PushFrame>(&bytes).unwrap(), reference);
            }
        }
    }

    #[test]
    fn a_revision_none_of_whose_events_match_is_not_selected() {
        let revisions = revisions();
        assert!(Part::select(&revisions[1], |e| e.key.starts_with(b"b/")).is_none());
        let part = Part::select(&revisions[0], |e| e.key.starts_with(b"b/")).unwrap();
        assert_eq!(part.only, Some(vec![1]));
        let all = Part::select(&revisions[0], |_| true).unwrap();
        assert_eq!(all.only, None);
    }
}
