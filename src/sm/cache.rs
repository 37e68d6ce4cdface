//! The record cache: what the state tree holds for recently used keys, in memory, in front of
//! sled (see [`RecordCache`]).

use super::layout::{decode_meta, sled_error, PREFIX_KV};
use super::result::KeyMeta;
use crate::error::Result;
use std::collections::HashMap;

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
    pub(super) fn meta(&self, key: &[u8]) -> Option<Option<KeyMeta>> {
        match self.metas.get(key) {
            Some(meta) => Some(*meta),
            None if self.metas_complete => Some(None),
            None => None,
        }
    }

    pub(super) fn insert_meta(&mut self, key: Vec<u8>, meta: Option<KeyMeta>) {
        if meta.is_none() && self.metas_complete {
            // Absence is implied: keep the map to the keys that exist.
            self.metas.remove(&key);
            return;
        }
        if !self.metas.insert(key, meta) {
            self.metas_complete = false;
        }
    }

    /// The cached record of `key` (`Some(None)`: known absent), without copying it.
    pub(super) fn record(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.records.get(key)
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
    pub(super) fn written(&mut self, key: &[u8], value: Option<&Vec<u8>>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_value;
    use crate::sm::layout::{kv_key, StoredValueRef};
    use crate::types::LogIndex;

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
}
