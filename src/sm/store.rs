//! The sled key layout of the state, the records stored under it, and the write overlay that
//! lets one batch of entries see its own writes before they reach sled in one atomic batch.
//!
//! Everything lives in ONE sled tree (a `sled::Batch` is atomic only within one tree). Keys start
//! with a one-byte prefix; `docs/FORMAT.md` ("State-machine sled layout") is the reference.

use super::result::{CommandResult, VersionedValue};
use crate::codec::{decode_value, encode_value};
use crate::error::{Error, Result};
use crate::types::{LogIndex, Term};
use bincode::{Decode, Encode};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Prefix of user keys: `k` ‖ key -> [`VersionedValue`].
pub(crate) const PREFIX_KV: u8 = b'k';
/// Prefix of the client table: `c` ‖ client id (u64 BE) -> [`ClientRecord`].
pub(crate) const PREFIX_CLIENT: u8 = b'c';
/// Prefix of the eviction order: `l` ‖ last applied index (u64 BE) ‖ client id (u64 BE) -> empty.
pub(crate) const PREFIX_CLIENT_ORDER: u8 = b'l';
/// Prefix of machine metadata: `m` ‖ name.
pub(crate) const PREFIX_META: u8 = b'm';

/// `m applied` -> [`AppliedRecord`].
pub(crate) const KEY_APPLIED: &[u8] = b"mapplied";
/// `m membership` -> the raw bytes of the last applied membership entry.
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"mmembership";
/// `m layout` -> u32 layout version.
pub(crate) const KEY_LAYOUT: &[u8] = b"mlayout";

/// Version of this key layout and its records. Snapshots record it too.
pub(crate) const LAYOUT_VERSION: u32 = 1;

/// The applied position, stored in the same batch as the state it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(crate) struct AppliedRecord {
    pub(crate) index: LogIndex,
    pub(crate) term: Term,
}

/// What the machine remembers per registered client.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) struct ClientRecord {
    /// Seq of the last applied command (0 right after registration).
    pub(crate) last_seq: u64,
    /// Log index of the last applied command (or of the registration).
    pub(crate) last_index: LogIndex,
    /// Its result, as retained (see `retain` in `apply.rs`).
    pub(crate) result: CommandResult,
}

pub(crate) fn kv_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(PREFIX_KV);
    k.extend_from_slice(key);
    k
}

pub(crate) fn client_key(client_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(PREFIX_CLIENT);
    k.extend_from_slice(&client_id.to_be_bytes());
    k
}

pub(crate) fn client_order_key(last_index: LogIndex, client_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(PREFIX_CLIENT_ORDER);
    k.extend_from_slice(&last_index.0.to_be_bytes());
    k.extend_from_slice(&client_id.to_be_bytes());
    k
}

/// The client id in a `c` or `l` key, if the key is well formed.
pub(crate) fn client_id_of(key: &[u8]) -> Option<u64> {
    let id: [u8; 8] = match key.first() {
        Some(&PREFIX_CLIENT) if key.len() == 9 => key[1..9].try_into().ok()?,
        Some(&PREFIX_CLIENT_ORDER) if key.len() == 17 => key[9..17].try_into().ok()?,
        _ => return None,
    };
    Some(u64::from_be_bytes(id))
}

/// Decode a stored record, naming the key's kind in the error.
pub(crate) fn decode_record<T: Decode<()>>(what: &str, bytes: &[u8]) -> Result<T> {
    decode_value(bytes).map_err(|e| match e {
        Error::Corrupt {
            file,
            offset,
            reason,
        } => Error::Corrupt {
            file,
            offset,
            reason: format!("state {what} record: {reason}"),
        },
        other => other,
    })
}

/// Map a sled error to ours, with what we were doing.
pub(crate) fn sled_error(context: &str, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(source) => Error::io(context, source),
        sled::Error::Corruption { .. } => {
            Error::corrupt(0, format!("sled reports corruption while {context}"))
        }
        other => Error::Fatal(format!("sled failed while {context}: {other}")),
    }
}

/// Check one raw (key, value) pair of the state tree: a known prefix, a well-formed key and a
/// decodable record. Used on every record of a snapshot before it may become the state.
pub(crate) fn check_pair(key: &[u8], value: &[u8]) -> Result<()> {
    match key.first() {
        Some(&PREFIX_KV) if key.len() > 1 => decode_record::<VersionedValue>("kv", value).map(drop),
        Some(&PREFIX_CLIENT) if client_id_of(key).is_some() => {
            decode_record::<ClientRecord>("client", value).map(drop)
        }
        Some(&PREFIX_CLIENT_ORDER) if client_id_of(key).is_some() && value.is_empty() => Ok(()),
        Some(&PREFIX_META) if key == KEY_APPLIED => {
            decode_record::<AppliedRecord>("applied", value).map(drop)
        }
        Some(&PREFIX_META) if key == KEY_LAYOUT => decode_record::<u32>("layout", value).map(drop),
        Some(&PREFIX_META) if key == KEY_MEMBERSHIP => Ok(()),
        _ => Err(Error::corrupt(0, "unknown key in state records")),
    }
}

/// Raw (key, value) pairs of the state tree, in key order.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A view of the tree plus writes not yet in sled. Reads see the writes; `into_batch` turns them
/// into one atomic sled batch. With no writes it is simply a read view of the tree.
pub(crate) struct Overlay<'t> {
    tree: &'t sled::Tree,
    /// `None` marks a removal.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'t> Overlay<'t> {
    pub(crate) fn new(tree: &'t sled::Tree) -> Overlay<'t> {
        Overlay {
            tree,
            writes: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(pending) = self.writes.get(key) {
            return Ok(pending.clone());
        }
        let stored = self
            .tree
            .get(key)
            .map_err(|e| sled_error("reading the state", e))?;
        Ok(stored.map(|v| v.to_vec()))
    }

    pub(crate) fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub(crate) fn remove(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Up to `limit` (key, value) pairs with `start <= key < end` (`end` `None`: no upper
    /// bound), in key order, merging the tree with the pending writes; plus whether more remain.
    pub(crate) fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Pairs, bool)> {
        let upper = match end {
            // An empty range (BTreeMap::range would panic on an inverted one).
            Some(end) if end <= start => return Ok((Vec::new(), false)),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let range = (Bound::Included(start), upper);
        let mut stored = self.tree.range::<&[u8], _>(range).peekable();
        let mut pending = self.writes.range::<[u8], _>(range).peekable();
        let mut out = Vec::new();
        loop {
            // Pick the smaller of the two heads; on a tie the pending write wins.
            let stored_key = match stored.peek() {
                Some(Ok((k, _))) => Some(k.to_vec()),
                Some(Err(_)) => {
                    return match stored.next() {
                        Some(Err(e)) => Err(sled_error("scanning the state", e)),
                        _ => Err(Error::Fatal("sled iterator changed under a scan".into())),
                    }
                }
                None => None,
            };
            let take_pending = match (&stored_key, pending.peek()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(sk), Some((pk, _))) => pk.as_slice() <= sk.as_slice(),
            };
            let item = if take_pending {
                let Some((pk, pv)) = pending.next() else {
                    break;
                };
                if stored_key.as_deref() == Some(pk.as_slice()) {
                    stored.next();
                }
                pv.as_ref().map(|v| (pk.clone(), v.clone()))
            } else {
                match stored.next() {
                    Some(Ok((k, v))) => Some((k.to_vec(), v.to_vec())),
                    Some(Err(e)) => return Err(sled_error("scanning the state", e)),
                    None => break,
                }
            };
            if let Some(item) = item {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(item);
            }
        }
        Ok((out, false))
    }

    pub(crate) fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

/// The typed helpers every reader and the applier share.
impl Overlay<'_> {
    pub(crate) fn get_value(&self, key: &[u8]) -> Result<Option<VersionedValue>> {
        match self.get(&kv_key(key))? {
            Some(bytes) => decode_record("kv", &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn get_client(&self, client_id: u64) -> Result<Option<ClientRecord>> {
        match self.get(&client_key(client_id))? {
            Some(bytes) => decode_record("client", &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn put_encoded<T: Encode>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        let bytes = encode_value(value)?;
        self.insert(key, bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_tree() -> (tempfile::TempDir, sled::Db, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .unwrap();
        let tree = db.open_tree("t").unwrap();
        (dir, db, tree)
    }

    #[test]
    fn scan_merges_pending_writes_over_the_tree() {
        let (_dir, _db, tree) = temp_tree();
        for k in [b"a", b"c", b"e", b"g"] {
            tree.insert(k, b"old").unwrap();
        }
        let mut overlay = Overlay::new(&tree);
        overlay.insert(b"b".to_vec(), b"new".to_vec());
        overlay.insert(b"c".to_vec(), b"new".to_vec());
        overlay.remove(b"e".to_vec());
        overlay.remove(b"z".to_vec());
        let (items, more) = overlay.scan(b"", None, 100).unwrap();
        let got: Vec<(&[u8], &[u8])> = items
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"a"[..], &b"old"[..]),
                (b"b", b"new"),
                (b"c", b"new"),
                (b"g", b"old")
            ]
        );
        assert!(!more);
        let (items, more) = overlay.scan(b"b", Some(b"g"), 1).unwrap();
        assert_eq!(items, vec![(b"b".to_vec(), b"new".to_vec())]);
        assert!(more);
        // Exactly `limit` items left: no more.
        let (items, more) = overlay.scan(b"c", Some(b"h"), 2).unwrap();
        assert_eq!(items.len(), 2);
        assert!(!more);
    }

    #[test]
    fn batch_applies_pending_writes() {
        let (_dir, _db, tree) = temp_tree();
        tree.insert(b"gone", b"x").unwrap();
        let mut overlay = Overlay::new(&tree);
        overlay.insert(b"new".to_vec(), b"y".to_vec());
        overlay.remove(b"gone".to_vec());
        assert_eq!(overlay.get(b"gone").unwrap(), None);
        assert_eq!(tree.get(b"gone").unwrap().as_deref(), Some(&b"x"[..]));
        tree.apply_batch(overlay.into_batch()).unwrap();
        assert_eq!(tree.get(b"gone").unwrap(), None);
        assert_eq!(tree.get(b"new").unwrap().as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn client_keys_sort_by_id_and_by_last_index() {
        assert!(client_key(1) < client_key(256));
        assert!(client_order_key(LogIndex(2), 9) < client_order_key(LogIndex(10), 1));
        assert_eq!(client_id_of(&client_key(77)), Some(77));
        assert_eq!(client_id_of(&client_order_key(LogIndex(5), 78)), Some(78));
        assert_eq!(client_id_of(b"c123"), None);
    }
}
