//! The sled key layout of the state, the records stored under it, and the write overlay that
//! lets one batch of entries see its own writes before they reach sled in one atomic batch.
//!
//! Everything lives in ONE sled tree (a `sled::Batch` is atomic only within one tree). Keys start
//! with a one-byte prefix; `docs/FORMAT.md` ("State-machine sled layout") is the reference.

use super::result::{CommandResult, KeyMeta, VersionedValue};
use crate::codec::{decode_borrowed, decode_value, encode_value};
use crate::error::{Error, Result};
use crate::types::{LogIndex, Term};
use bincode::{BorrowDecode, Decode, Encode};
use std::cell::RefCell;
use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

/// Prefix of user keys: `k` ‖ key -> [`VersionedValue`].
pub(crate) const PREFIX_KV: u8 = b'k';
/// Prefix of the client table: `c` ‖ client id (u64 BE) -> [`ClientRecord`].
pub(crate) const PREFIX_CLIENT: u8 = b'c';
/// Prefix of the eviction order of layout 1: `l` ‖ last applied index (u64 BE) ‖ client id
/// (u64 BE) -> empty. Layout 2 keeps that order in memory only ([`ClientOrder`]); the keys are
/// removed when a layout-1 tree is opened and skipped when a layout-1 snapshot is restored.
pub(crate) const PREFIX_CLIENT_ORDER: u8 = b'l';
/// Prefix of machine metadata: `m` ‖ name.
pub(crate) const PREFIX_META: u8 = b'm';

/// `m applied` -> [`AppliedRecord`].
pub(crate) const KEY_APPLIED: &[u8] = b"mapplied";
/// `m membership` -> the raw bytes of the last applied membership entry.
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"mmembership";
/// `m layout` -> u32 layout version.
pub(crate) const KEY_LAYOUT: &[u8] = b"mlayout";

/// Version of this key layout and its records. Snapshots record it too. Layout 1 also stored
/// the client eviction order (`l` keys); layout 2 derives it from the client records.
pub(crate) const LAYOUT_VERSION: u32 = 2;

/// The oldest layout this build still opens and restores (converting it to [`LAYOUT_VERSION`]).
pub(crate) const OLDEST_LAYOUT_VERSION: u32 = 1;

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

/// The client eviction order: (last applied index, client id) of every client in the table,
/// so the first is the least recently applied client. Derived from the client records (each
/// carries its `last_index`), so it is kept in memory only and rebuilt from the tree at open
/// and after a restore: the table holds at most `MAX_CLIENTS` clients. Before layout 2 it was
/// stored as `l` keys, two sled writes per applied command.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ClientOrder {
    by_last_index: BTreeSet<(LogIndex, u64)>,
}

impl ClientOrder {
    /// The order of every client record in `tree`.
    pub(crate) fn load(tree: &sled::Tree) -> Result<ClientOrder> {
        let mut order = ClientOrder::default();
        for item in tree.scan_prefix([PREFIX_CLIENT]) {
            let (key, value) = item.map_err(|e| sled_error("loading the client table", e))?;
            let Some(client_id) = client_id_of(&key) else {
                return Err(Error::corrupt(0, "malformed client key in the state"));
            };
            let record: ClientRecord = decode_record("client", &value)?;
            order.insert(record.last_index, client_id);
        }
        Ok(order)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_last_index.len()
    }

    /// The least recently applied client.
    pub(crate) fn oldest(&self) -> Option<(LogIndex, u64)> {
        self.by_last_index.first().copied()
    }

    pub(crate) fn insert(&mut self, last_index: LogIndex, client_id: u64) {
        self.by_last_index.insert((last_index, client_id));
    }

    /// Whether the client was there.
    pub(crate) fn remove(&mut self, last_index: LogIndex, client_id: u64) -> bool {
        self.by_last_index.remove(&(last_index, client_id))
    }
}

/// The client id in a `c` key (or a layout-1 `l` key), if the key is well formed.
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
    decode_value(bytes).map_err(|e| with_context(what, e))
}

/// Name the kind of record in a decoding error.
fn with_context(what: &str, e: Error) -> Error {
    match e {
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
    }
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

/// Check one raw (key, value) pair of a state tree of layout `layout`: a known prefix, a
/// well-formed key and a decodable record. Used on every record of a snapshot before it may
/// become the state.
pub(crate) fn check_pair(key: &[u8], value: &[u8], layout: u32) -> Result<()> {
    match key.first() {
        Some(&PREFIX_KV) if key.len() > 1 => decode_record::<VersionedValue>("kv", value).map(drop),
        Some(&PREFIX_CLIENT) if client_id_of(key).is_some() => {
            decode_record::<ClientRecord>("client", value).map(drop)
        }
        Some(&PREFIX_CLIENT_ORDER)
            if layout == 1 && client_id_of(key).is_some() && value.is_empty() =>
        {
            Ok(())
        }
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

/// A map from tree keys to what the tree holds for them, bounded by bytes; when full, an
/// arbitrary tenth of it is dropped.
#[derive(Debug)]
struct Bounded<V> {
    map: HashMap<Vec<u8>, V>,
    bytes: usize,
    limit: usize,
    /// Bytes charged for one entry.
    cost: fn(&[u8], &V) -> usize,
}

impl<V> Bounded<V> {
    fn new(limit: usize, cost: fn(&[u8], &V) -> usize) -> Bounded<V> {
        Bounded {
            map: HashMap::new(),
            bytes: 0,
            limit,
            cost,
        }
    }

    fn get(&self, key: &[u8]) -> Option<&V> {
        self.map.get(key)
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// Store `value` for `key`. Returns false if anything was lost doing so: the entry was
    /// not stored, or others were evicted to make room.
    fn insert(&mut self, key: Vec<u8>, value: V) -> bool {
        if self.limit == 0 {
            return false;
        }
        let cost = (self.cost)(&key, &value);
        if cost > self.limit / 16 {
            // A huge record would evict many small ones; forget the key instead.
            self.remove(&key);
            return false;
        }
        let mut kept_all = true;
        if self.bytes + cost > self.limit {
            self.evict();
            kept_all = false;
        }
        // Look up first: replacing an entry must not allocate a second copy of its key.
        if let Some(slot) = self.map.get_mut(&key) {
            let old = std::mem::replace(slot, value);
            self.bytes -= (self.cost)(&key, &old);
        } else {
            self.map.insert(key, value);
        }
        self.bytes += cost;
        kept_all
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= (self.cost)(key, &old);
        }
    }

    /// Drop about a tenth of the map (whatever it yields first: arbitrary, cheap).
    fn evict(&mut self) {
        let target = self.limit - self.limit / 10;
        let mut doomed = Vec::new();
        let mut freed = 0;
        for (key, value) in &self.map {
            if self.bytes - freed <= target {
                break;
            }
            freed += (self.cost)(key, value);
            doomed.push(key.clone());
        }
        for key in doomed {
            self.map.remove(&key);
        }
        self.bytes -= freed;
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

/// Bytes charged per cached entry on top of its key and value (map slot, allocations).
const CACHE_OVERHEAD_BYTES: usize = 64;

/// What the tree holds for recently used keys, in memory: a sled read costs microseconds (a
/// tree walk, epoch pinning, page materialization), a hash lookup a fraction of that. Both
/// maps hold what the *tree* holds for a key (`None`: known absent); pending writes are looked
/// up before them, and a flush updates them with what it writes, so they never disagree with
/// the tree.
///
/// - `records`: whole records, for reads and the client table.
/// - `metas`: only the [`KeyMeta`] of user keys, which is all a put or delete needs to know
///   about the key's current version. About 80 bytes per key instead of the whole record, so
///   it holds four times as many keys for the same memory, and a flush fills it from the bytes
///   it writes without copying any value. (Under `haven bench cluster`, 100,000 keys of 256
///   bytes did not fit a record cache of 32 MiB, and the misses were sled tree walks and page
///   reads on every member's apply thread.)
///
/// When `metas` holds *every* user key of the tree (`metas_complete`: loaded in full at open or
/// restore, and nothing evicted since), a key it lacks is absent from the tree: creating a key
/// then needs no sled read either.
#[derive(Debug)]
pub(crate) struct RecordCache {
    records: Bounded<Option<Vec<u8>>>,
    metas: Bounded<Option<KeyMeta>>,
    metas_complete: bool,
}

impl Default for RecordCache {
    fn default() -> Self {
        RecordCache::new(0)
    }
}

impl RecordCache {
    /// A cache of about `limit` bytes: half for records, half for user keys' metadata.
    pub(crate) fn new(limit: usize) -> RecordCache {
        RecordCache {
            records: Bounded::new(limit / 2, |key, value: &Option<Vec<u8>>| {
                key.len() + value.as_ref().map_or(0, Vec::len) + CACHE_OVERHEAD_BYTES
            }),
            metas: Bounded::new(limit - limit / 2, |key, _: &Option<KeyMeta>| {
                key.len() + std::mem::size_of::<Option<KeyMeta>>() + CACHE_OVERHEAD_BYTES
            }),
            metas_complete: false,
        }
    }

    /// Load the metadata of every user key of `tree`, if it fits: then `metas` is complete
    /// (see the type's docs). Replaces whatever the cache held. Reads at most the cache's
    /// budget of keys before it gives up.
    pub(crate) fn load_metas(&mut self, tree: &sled::Tree) -> Result<()> {
        self.clear();
        if self.metas.limit == 0 {
            return Ok(());
        }
        for item in tree.scan_prefix([PREFIX_KV]) {
            let (key, value) = item.map_err(|e| sled_error("loading key metadata", e))?;
            let meta = decode_meta(&value)?;
            let cost = (self.metas.cost)(&key, &Some(meta));
            if self.metas.bytes + cost > self.metas.limit {
                self.metas.clear();
                return Ok(());
            }
            if !self.metas.insert(key.to_vec(), Some(meta)) {
                self.metas.clear();
                return Ok(());
            }
        }
        self.metas_complete = true;
        Ok(())
    }

    /// What the tree holds for user key `key` as far as the metadata map knows: `Some(None)`
    /// is absent (cached as such, or not in a complete map).
    fn meta(&self, key: &[u8]) -> Option<Option<KeyMeta>> {
        match self.metas.get(key) {
            Some(meta) => Some(*meta),
            None if self.metas_complete => Some(None),
            None => None,
        }
    }

    fn insert_meta(&mut self, key: Vec<u8>, meta: Option<KeyMeta>) {
        if meta.is_none() && self.metas_complete {
            // Absence is implied: keep the map to the keys that exist.
            self.metas.remove(&key);
            return;
        }
        if !self.metas.insert(key, meta) {
            self.metas_complete = false;
        }
    }

    /// What the tree holds for `key`, if cached.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.records.get(key).cloned()
    }

    /// Record that the tree holds `value` for `key`.
    pub(crate) fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let _ = self.records.insert(key, value);
    }

    /// Learn what a flush writes to the tree for `key` (`None`: removed).
    fn written(&mut self, key: &[u8], value: Option<&Vec<u8>>) {
        match key.first() {
            Some(&PREFIX_KV) => {
                match value.map(|v| decode_meta(v)).transpose() {
                    Ok(meta) => self.insert_meta(key.to_vec(), meta),
                    Err(_) => {
                        self.metas.remove(key);
                        self.metas_complete = false;
                    }
                }
                // Whole values are kept only for keys already cached (read lately): copying
                // every written value in would churn the cache under a write load.
                if self.records.contains(key) {
                    let _ = self.records.insert(key.to_vec(), value.cloned());
                }
            }
            _ => {
                let _ = self.records.insert(key.to_vec(), value.cloned());
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.metas.clear();
        self.metas_complete = false;
    }
}

/// A stored user-key record, borrowed: encodes exactly as [`VersionedValue`] (a byte slice and
/// a `Vec<u8>` have the same bincode encoding), so a put encodes its value without copying it
/// first, and reading only the metadata copies no value.
#[derive(Encode, BorrowDecode)]
pub(crate) struct StoredValueRef<'a> {
    pub(crate) value: &'a [u8],
    pub(crate) meta: KeyMeta,
}

/// The metadata of a stored user-key record, without copying its value.
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<KeyMeta> {
    decode_borrowed::<StoredValueRef<'_>>(bytes)
        .map(|stored| stored.meta)
        .map_err(|e| with_context("kv", e))
}

/// A view of the tree plus writes not yet in sled: optionally a base of pending writes (the
/// machine's, borrowed) and the overlay's own newer writes. Reads see both; `into_writes`
/// hands the own writes back (to merge into the pending ones, or to make a batch).
pub(crate) struct Overlay<'t> {
    tree: &'t sled::Tree,
    base: Option<&'t Writes>,
    cache: Option<&'t RefCell<RecordCache>>,
    writes: Writes,
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
        self.writes.insert(key, Write::Put(value));
    }

    pub(crate) fn remove(&mut self, key: Vec<u8>) {
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
            if let Some(record) = cache.records.get(&key) {
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

    #[test]
    fn a_borrowed_stored_value_encodes_as_the_owned_one() {
        let meta = KeyMeta {
            create_revision: LogIndex(3),
            mod_revision: LogIndex(70_000),
            version: 300,
        };
        for len in [0usize, 1, 250, 251, 70_000] {
            let value = vec![7u8; len];
            let owned = encode_value(&VersionedValue {
                value: value.clone(),
                meta,
            })
            .unwrap();
            let borrowed = encode_value(&StoredValueRef {
                value: &value,
                meta,
            })
            .unwrap();
            assert_eq!(owned, borrowed, "value of {len} bytes");
            assert_eq!(decode_meta(&owned).unwrap(), meta);
        }
        assert!(decode_meta(b"\x05ab").is_err());
    }

    #[test]
    fn the_cache_learns_metadata_of_written_user_keys_without_their_values() {
        let mut cache = RecordCache::new(1 << 20);
        let meta = KeyMeta {
            create_revision: LogIndex(1),
            mod_revision: LogIndex(2),
            version: 2,
        };
        let record = encode_value(&StoredValueRef { value: b"v", meta }).unwrap();
        cache.written(&kv_key(b"a"), Some(&record));
        assert_eq!(cache.metas.get(&kv_key(b"a")), Some(&Some(meta)));
        assert!(!cache.records.contains(&kv_key(b"a")));
        // A record already cached (read lately) is kept current.
        cache.insert(kv_key(b"b"), None);
        cache.written(&kv_key(b"b"), Some(&record));
        assert_eq!(cache.get(&kv_key(b"b")), Some(Some(record.clone())));
        cache.written(&kv_key(b"b"), None);
        assert_eq!(cache.get(&kv_key(b"b")), Some(None));
        assert_eq!(cache.metas.get(&kv_key(b"b")), Some(&None));
    }

    #[test]
    fn a_complete_metadata_map_answers_absent_keys_and_stops_being_complete_once_it_evicts() {
        let (_dir, _db, tree) = temp_tree();
        let meta = KeyMeta {
            create_revision: LogIndex(1),
            mod_revision: LogIndex(1),
            version: 1,
        };
        for i in 0..100u32 {
            let record = encode_value(&StoredValueRef { value: b"v", meta }).unwrap();
            tree.insert(kv_key(format!("key{i:03}").as_bytes()), record)
                .unwrap();
        }
        let mut cache = RecordCache::new(1 << 20);
        cache.load_metas(&tree).unwrap();
        assert!(cache.metas_complete);
        assert_eq!(cache.meta(&kv_key(b"key007")), Some(Some(meta)));
        assert_eq!(cache.meta(&kv_key(b"nope")), Some(None));
        // Too small to hold every key: nothing is known, absence included.
        let mut small = RecordCache::new(2 * 50 * 100);
        small.load_metas(&tree).unwrap();
        assert!(!small.metas_complete);
        assert_eq!(small.meta(&kv_key(b"nope")), None);
        // A complete map that has to evict is complete no longer.
        let mut filling = RecordCache::new(2 * 110 * 120);
        filling.load_metas(&tree).unwrap();
        assert!(filling.metas_complete);
        for i in 0..100u32 {
            filling.insert_meta(kv_key(format!("new{i:03}").as_bytes()), Some(meta));
        }
        assert!(!filling.metas_complete);
        assert_eq!(filling.meta(&kv_key(b"nope")), None);
    }

    #[test]
    fn client_keys_sort_by_id_and_the_order_by_last_index() {
        assert!(client_key(1) < client_key(256));
        assert_eq!(client_id_of(&client_key(77)), Some(77));
        assert_eq!(client_id_of(b"c123"), None);
        let mut order = ClientOrder::default();
        order.insert(LogIndex(10), 1);
        order.insert(LogIndex(2), 9);
        order.insert(LogIndex(2), 3);
        assert_eq!(order.oldest(), Some((LogIndex(2), 3)));
        assert!(order.remove(LogIndex(2), 3));
        assert!(!order.remove(LogIndex(2), 3));
        assert_eq!(order.oldest(), Some((LogIndex(2), 9)));
        assert_eq!(order.len(), 2);
    }
}
