//! The write overlay: writes not yet in sled, and views of the tree with them on top, so that
//! one batch of entries sees its own writes (and those of earlier batches still pending) before
//! they reach sled in one atomic batch.

use super::cache::RecordCache;
use super::changes::{ChangeCapture, KvChange};
use super::layout::{
    client_key, decode_meta, decode_record, kv_key, sled_error, ClientRecord, Pairs,
};
use super::result::{KeyMeta, VersionedValue};
use crate::codec::encode_value;
use crate::error::{Error, Result};
use bincode::Encode;
use std::cell::RefCell;
use std::collections::{btree_map, BTreeMap};
use std::ops::Bound;

/// A write not yet in sled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    /// The key now holds this value.
    Put(Vec<u8>),
    /// The key is removed (sled may hold it).
    Remove,
}

impl Write {
    fn value(&self) -> Option<&Vec<u8>> {
        match self {
            Write::Put(v) => Some(v),
            Write::Remove => None,
        }
    }
}

/// Writes not yet in sled, by key.
pub(crate) type Writes = BTreeMap<Vec<u8>, Write>;

/// Add `writes` (newer) to `pending` (older); returns the key and value bytes added.
pub(crate) fn merge_writes(pending: &mut Writes, writes: Writes) -> usize {
    let mut bytes = 0;
    for (key, write) in writes {
        bytes += key.len() + write.value().map_or(0, Vec::len);
        pending.insert(key, write);
    }
    bytes
}

/// A view of the tree plus writes not yet in sled: optionally a base of pending writes (the
/// machine's, borrowed) and the overlay's own newer writes. Reads see both; `into_writes`
/// hands the own writes back (to merge into the pending ones, or to make a batch).
pub(crate) struct Overlay<'t> {
    tree: &'t sled::Tree,
    base: Option<&'t Writes>,
    cache: Option<&'t RefCell<RecordCache>>,
    writes: Writes,
    /// What to record of writes of user keys (for watches); `Off` costs one comparison.
    capture: ChangeCapture,
    /// The changes recorded since the last `take_changes`.
    changes: Vec<KvChange>,
    /// A failed lookup of a previous value: the batch must fail rather than report a change
    /// without it.
    capture_error: Option<Error>,
}

impl<'t> Overlay<'t> {
    /// A view of the tree alone.
    #[cfg(test)]
    pub(crate) fn new(tree: &'t sled::Tree) -> Overlay<'t> {
        Overlay {
            tree,
            base: None,
            cache: None,
            writes: BTreeMap::new(),
            capture: ChangeCapture::Off,
            changes: Vec::new(),
            capture_error: None,
        }
    }

    /// A view of the tree (through `cache`) with `pending` on top; own writes go above both.
    pub(crate) fn with_pending(
        tree: &'t sled::Tree,
        pending: &'t Writes,
        cache: &'t RefCell<RecordCache>,
    ) -> Overlay<'t> {
        Overlay {
            tree,
            base: Some(pending),
            cache: Some(cache),
            writes: BTreeMap::new(),
            capture: ChangeCapture::Off,
            changes: Vec::new(),
            capture_error: None,
        }
    }

    /// Record changes of user keys from now on (see `changes.rs`).
    pub(crate) fn set_capture(&mut self, capture: ChangeCapture) {
        self.capture = capture;
    }

    /// The changes of user keys recorded since the last call, in the order they were made;
    /// the error of a failed lookup of a previous value, if any.
    pub(crate) fn take_changes(&mut self) -> Result<Vec<KvChange>> {
        if let Some(e) = self.capture_error.take() {
            return Err(e);
        }
        Ok(std::mem::take(&mut self.changes))
    }

    /// Record a write of `key` (`value` `None`: a removal) if it is a user key and capture is on.
    fn capture_write(&mut self, key: &[u8], value: Option<&[u8]>) {
        let previous = match self.capture {
            ChangeCapture::Off => return,
            ChangeCapture::Changes => None,
            ChangeCapture::ChangesWithPrevious => match self.get(key) {
                Ok(previous) => Some(previous),
                Err(e) => {
                    self.capture_error.get_or_insert(e);
                    None
                }
            },
        };
        if let Some(change) = KvChange::of(key, value, previous) {
            self.changes.push(change);
        }
    }

    /// The overlay's own writes.
    pub(crate) fn into_writes(self) -> Writes {
        self.writes
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(write) = self.writes.get(key) {
            return Ok(write.value().cloned());
        }
        if let Some(write) = self.base.and_then(|b| b.get(key)) {
            return Ok(write.value().cloned());
        }
        if let Some(cached) = self.cache.and_then(|c| c.borrow().get(key)) {
            return Ok(cached);
        }
        let stored = self
            .tree
            .get(key)
            .map_err(|e| sled_error("reading the state", e))?
            .map(|v| v.to_vec());
        if let Some(cache) = self.cache {
            cache.borrow_mut().insert(key.to_vec(), stored.clone());
        }
        Ok(stored)
    }

    pub(crate) fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if self.capture != ChangeCapture::Off {
            self.capture_write(&key, Some(&value));
        }
        self.writes.insert(key, Write::Put(value));
    }

    pub(crate) fn remove(&mut self, key: Vec<u8>) {
        if self.capture != ChangeCapture::Off {
            self.capture_write(&key, None);
        }
        self.writes.insert(key, Write::Remove);
    }

    /// Every (key, value) pair with `start <= key < end` (`end` `None`: no upper bound), in key
    /// order, merging the tree with the pending writes.
    pub(crate) fn iter(&self, start: &[u8], end: Option<&[u8]>) -> Merged<'_> {
        merged(self.tree, self.base, &self.writes, start, end)
    }

    /// Up to `limit` (key, value) pairs with `start <= key < end` (`end` `None`: no upper
    /// bound), in key order, merging the tree with the pending writes; plus whether more remain.
    pub(crate) fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Pairs, bool)> {
        let mut out = Vec::new();
        for item in self.iter(start, end) {
            let item = item?;
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(item);
        }
        Ok((out, false))
    }

    /// One sled batch of the own writes (the base is not included).
    #[cfg(test)]
    pub(crate) fn into_batch(self) -> sled::Batch {
        batch_of(self.writes, None)
    }
}

/// One sled batch holding `writes`; with a cache, it learns what the tree will hold.
pub(crate) fn batch_of(writes: Writes, cache: Option<&RefCell<RecordCache>>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    let mut cache = cache.map(RefCell::borrow_mut);
    for (key, write) in writes {
        match write {
            Write::Put(value) => {
                if let Some(cache) = cache.as_mut() {
                    cache.written(&key, Some(&value));
                }
                batch.insert(key, value);
            }
            Write::Remove => {
                if let Some(cache) = cache.as_mut() {
                    cache.written(&key, None);
                }
                batch.remove(key);
            }
        }
    }
    batch
}

type WriteRange<'a> = std::iter::Peekable<btree_map::Range<'a, Vec<u8>, Write>>;

/// The tree's pairs in `[start, end)` merged with the pending writes `base` and the newer
/// `writes` (a newer write wins; a removal hides the older pair).
pub(crate) fn merged<'a>(
    tree: &sled::Tree,
    base: Option<&'a Writes>,
    writes: &'a Writes,
    start: &[u8],
    end: Option<&[u8]>,
) -> Merged<'a> {
    if end.is_some_and(|end| end <= start) {
        return Merged { sources: None };
    }
    let upper = match end {
        Some(end) => Bound::Excluded(end.to_vec()),
        None => Bound::Unbounded,
    };
    let range = (Bound::Included(start.to_vec()), upper);
    let base = base.map(|b| b.range::<Vec<u8>, _>(range.clone()).peekable());
    let newer = writes.range::<Vec<u8>, _>(range.clone()).peekable();
    Merged {
        sources: Some((tree.range::<Vec<u8>, _>(range).peekable(), base, newer)),
    }
}

/// See [`merged`].
pub(crate) struct Merged<'a> {
    #[allow(clippy::type_complexity)]
    sources: Option<(
        std::iter::Peekable<sled::Iter>,
        Option<WriteRange<'a>>,
        WriteRange<'a>,
    )>,
}

/// The next pending write in key order from `base` and `newer` (newer wins on equal keys).
fn next_write<'a>(
    base: &mut Option<WriteRange<'a>>,
    newer: &mut WriteRange<'a>,
) -> Option<(&'a Vec<u8>, &'a Write)> {
    let base_key = base.as_mut().and_then(|b| b.peek().map(|(k, _)| *k));
    let newer_key = newer.peek().map(|(k, _)| *k);
    match (base_key, newer_key) {
        (None, None) => None,
        (Some(_), None) => base.as_mut()?.next(),
        (None, Some(_)) => newer.next(),
        (Some(b), Some(n)) => {
            if b < n {
                base.as_mut()?.next()
            } else {
                if b == n {
                    base.as_mut()?.next();
                }
                newer.next()
            }
        }
    }
}

fn peek_write_key<'a>(
    base: &mut Option<WriteRange<'a>>,
    newer: &mut WriteRange<'a>,
) -> Option<&'a Vec<u8>> {
    let base_key = base.as_mut().and_then(|b| b.peek().map(|(k, _)| *k));
    let newer_key = newer.peek().map(|(k, _)| *k);
    match (base_key, newer_key) {
        (Some(b), Some(n)) => Some(b.min(n)),
        (b, n) => b.or(n),
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (stored, base, newer) = self.sources.as_mut()?;
        loop {
            let stored_key = match stored.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => {
                    return match stored.next() {
                        Some(Err(e)) => Some(Err(sled_error("scanning the state", e))),
                        _ => Some(Err(Error::Fatal(
                            "sled iterator changed under a scan".into(),
                        ))),
                    }
                }
                None => None,
            };
            let take_pending = match (&stored_key, peek_write_key(base, newer)) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(sk), Some(pk)) => pk.as_slice() <= sk.as_ref(),
            };
            if take_pending {
                let (pk, write) = next_write(base, newer)?;
                if stored_key.as_deref() == Some(pk.as_slice()) {
                    stored.next();
                }
                match write.value() {
                    Some(v) => return Some(Ok((pk.clone(), v.clone()))),
                    None => continue,
                }
            }
            return match stored.next()? {
                Ok((k, v)) => Some(Ok((k.to_vec(), v.to_vec()))),
                Err(e) => Some(Err(sled_error("scanning the state", e))),
            };
        }
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

    /// The metadata of user key `key`, `None` if absent: what a put or delete needs, found
    /// without copying the value (and, through the cache's metadata map, mostly without a
    /// sled read).
    pub(crate) fn get_meta(&self, key: &[u8]) -> Result<Option<KeyMeta>> {
        let key = kv_key(key);
        let write = self
            .writes
            .get(&key)
            .or_else(|| self.base.and_then(|b| b.get(&key)));
        if let Some(write) = write {
            return write.value().map(|v| decode_meta(v)).transpose();
        }
        if let Some(cache) = self.cache {
            let cache = cache.borrow();
            if let Some(meta) = cache.meta(&key) {
                return Ok(meta);
            }
            if let Some(record) = cache.record(&key) {
                return record.as_deref().map(decode_meta).transpose();
            }
        }
        let stored = self
            .tree
            .get(&key)
            .map_err(|e| sled_error("reading the state", e))?;
        let meta = stored.as_deref().map(decode_meta).transpose()?;
        if let Some(cache) = self.cache {
            cache.borrow_mut().insert_meta(key, meta);
        }
        Ok(meta)
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
}
