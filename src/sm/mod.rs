//! The replicated state machine: a key-value store with revisions, etcd-style transactions and
//! a client table for at-most-once writes, applied deterministically from committed Raft
//! entries.
//!
//! The node runtime owns one [`StateMachine`] and hands it batches of committed entries
//! ([`StateMachine::apply`]). Applying is a pure function of the current state and the entries:
//! no clock, no randomness, no threads. The state lives in sled; each batch of entries becomes
//! ONE atomic sled batch that also records the applied index and term (DESIGN.md durability rule
//! 2), so after a crash the runtime replays the log from [`StateMachine::applied`] and entries
//! at or below it are skipped.
//!
//! Revisions: the revision of a write is the log index of its entry. Each value carries its
//! create revision, mod revision and version (writes since creation); a delete forgets them.
//!
//! At-most-once (Raft dissertation, section 6.3): a client registers ([`Op::RegisterClient`]);
//! its id is the log index of that entry, so ids are never reused. The machine remembers per
//! client the last applied seq and its result. A command with that seq gets the remembered
//! result again, an older seq gets [`CommandResult::Stale`], neither is applied again. The table
//! holds at most [`crate::limits::MAX_CLIENTS`] clients; registering one more evicts the client
//! whose last applied command is oldest, and that client's commands get
//! [`CommandResult::UnknownClient`] from then on (never a second application).
//!
//! ```
//! use haven::sm::{Command, CommandResult, Op, StateMachine};
//! use haven::{Entry, EntryKind, GroupId, LogIndex, Term};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut sm = StateMachine::open(dir.path().join("state"), 8 << 20).unwrap();
//! let put = Command { client_id: 0, seq: 0, op: Op::Put { key: b"k".to_vec(), value: b"v".to_vec() } };
//! let entry = Entry {
//!     group: GroupId(0), term: Term(1), index: LogIndex(1),
//!     kind: EntryKind::Normal, data: put.encode().unwrap(),
//! };
//! sm.apply(&[entry]).unwrap();
//! let stored = sm.get(b"k").unwrap().unwrap();
//! assert_eq!(stored.value, b"v");
//! assert_eq!(stored.meta.mod_revision, LogIndex(1));
//! assert_eq!(sm.applied(), (LogIndex(1), Term(1)));
//! ```

mod cache;
mod changes;
mod clients;
mod command;
mod elect;
mod execute;
mod kv;
mod layout;
mod locks;
mod map_record;
mod overlay;
pub mod placement;
mod record;
mod result;
mod ring;
mod session_end;
mod sessions;
mod snapshot;

pub use changes::{ChangeCapture, ChangeTarget, KvChange};
pub use command::{
    Command, Op, COMMAND_VERSION, PARTITION_MAP_COMMAND_VERSION, PLACEMENT_VERSION_COMMAND_VERSION,
    UNTRACKED_CLIENT,
};
pub use kv::{Compare, CompareOp, Txn, TxnOp};
pub use layout::prefix_end;
pub use result::{
    ApplyOutcome, CancelResult, CasResult, CommandResult, DeleteRangeResult, DeleteResult,
    ElectionLeader, EntryResult, FencingToken, KeyMeta, KeyValue, LockHolder, LockInfo, LockMode,
    LockResult, LockWaitEnded, LockWaitResult, LockWaiter, MapChange, PutResult, RangePage,
    SessionId, SessionInfo, TxnOpResult, TxnResult, VersionedValue,
};
pub use ring::{
    oldest_moves_since, EpochMoves, MapMoves, MapReader, MapRecord, Owners, PartitionMap, SlotMove,
    FIRST_EPOCH,
};
pub(crate) use ring::{
    validate_key_read as validate_map_key_read, validate_name as validate_map_name,
};
pub(crate) use snapshot::{verify_snapshot, SnapshotSummary};
pub use snapshot::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_SALT};

use cache::RecordCache;
use clients::ClientOrder;
use execute::Executor;
use layout::{
    decode_record, parse_state_tree_name, sled_error, state_tree_name, AppliedRecord, LockSpace,
    ACTIVE_TREE_KEY, KEY_APPLIED, KEY_LAYOUT, KEY_MEMBERSHIP, LAYOUT_VERSION,
    OLDEST_LAYOUT_VERSION, PREFIX_CLIENT, PREFIX_CLIENT_ORDER, PREFIX_ELECTION, PREFIX_KV,
    PREFIX_LOCK, PREFIX_META, PREFIX_RING, PREFIX_SESSION,
};
use overlay::{batch_of, merge_writes, merged, Overlay, Writes};

use crate::codec::encode_value;
use crate::error::{Error, ErrorCode, Result};
use crate::types::{Entry, EntryKind, LogIndex, Term};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

/// sled refuses a second open of a database with an `Io` error whose message says it could not
/// acquire the lock. That is `DataDir`: another process has the directory, or (sled issues
/// #1234, #1289) a handle of this process was dropped moments ago and sled's background threads
/// have not released the lock yet. sled gives no way to wait for that, and this module has no
/// clock, so the caller retries for a bounded time.
fn open_error(path: &Path, e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
            Error::DataDir(format!(
                "state database {} is locked (by another process, or by a handle of this \
                 process that sled is still closing: retry shortly): {io}",
                path.display()
            ))
        }
        other => sled_error("opening the state database", other),
    }
}

/// The membership payload stored in the snapshot stream `input` (the payload of the last
/// membership entry the snapshot covers), `None` if the snapshot covers none. Reads and verifies
/// the whole stream. The runtime needs it on restart to tell the Raft core the configuration at
/// its compaction point when the state machine has already applied beyond that point.
pub(crate) fn snapshot_membership(input: impl Read) -> Result<Option<Vec<u8>>> {
    let mut membership = None;
    snapshot::read_snapshot(input, |pairs| {
        for (key, value) in pairs {
            if key == KEY_MEMBERSHIP {
                membership = Some(value);
            }
        }
        Ok(())
    })?;
    Ok(membership)
}

/// What is kept in memory about the state tree (all of it stored in the tree or, for the
/// client order, derived from it).
struct Cached {
    applied: (LogIndex, Term),
    membership: Option<Vec<u8>>,
    clients: ClientOrder,
    /// How many sessions exist (`s r` records), for `MAX_SESSIONS`: counted at open and after a
    /// restore (at most `MAX_SESSIONS` keys), kept in step by apply.
    sessions: usize,
}

fn load_cached(tree: &sled::Tree) -> Result<Cached> {
    let read = |key: &[u8]| {
        tree.get(key)
            .map_err(|e| sled_error("opening the state", e))
    };
    let applied = match read(KEY_APPLIED)? {
        Some(bytes) => {
            let record: AppliedRecord = decode_record("applied", &bytes)?;
            (record.index, record.term)
        }
        None => (LogIndex(0), Term(0)),
    };
    let membership = read(KEY_MEMBERSHIP)?.map(|bytes| bytes.to_vec());
    Ok(Cached {
        applied,
        membership,
        clients: ClientOrder::load(tree)?,
        sessions: sessions::count(tree)?,
    })
}

/// Convert a layout-1 state tree to layout 2 in one sled batch: remove the stored client
/// eviction order (`l` keys; layout 2 derives it from the client records) and record the new
/// layout.
fn upgrade_layout(tree: &sled::Tree) -> Result<()> {
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix([PREFIX_CLIENT_ORDER]) {
        let (key, _) = item.map_err(|e| sled_error("upgrading the state layout", e))?;
        batch.remove(key);
    }
    batch.insert(KEY_LAYOUT, encode_value(&LAYOUT_VERSION)?);
    tree.apply_batch(batch)
        .map_err(|e| sled_error("upgrading the state layout", e))
}

/// The replicated key-value state machine over one sled database.
///
/// Owned by one thread (the node's driver); reads take `&self`, apply and restore `&mut self`.
pub struct StateMachine {
    db: sled::Db,
    tree: sled::Tree,
    generation: u64,
    cached: Cached,
    /// Applied writes not yet in sled (see [`StateMachine::apply_deferred`]); reads see them.
    pending: Writes,
    /// Key and value bytes added to `pending` since the last flush (an upper bound: rewrites
    /// of a pending key count again).
    pending_bytes: usize,
    /// Records of the tree kept in memory (see `store::RecordCache`).
    cache: RefCell<RecordCache>,
    /// The partition maps, decoded (`ring.rs`); shared with the member's readers.
    maps: MapReader,
    /// Which changes of user keys applying records (for watches).
    capture: ChangeCapture,
    /// Set after a storage failure: the in-memory view may no longer match the disk, so the
    /// machine refuses to apply or snapshot (DESIGN.md: after a storage IO error the node stops
    /// taking writes).
    failed: Option<String>,
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("applied", &self.cached.applied)
            .field("generation", &self.generation)
            .field("clients", &self.cached.clients.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl StateMachine {
    /// Open (or create) the state database at `path` (a directory, usually `DATA_DIR/state`)
    /// with a sled page cache of at most `cache_bytes`. A state tree left over by a restore that
    /// was interrupted before it took effect is dropped here.
    ///
    /// `DataDir` if the database is locked. sled releases its lock lazily after the last handle
    /// is dropped, so reopening in the same process (a restart in the simulator, a test) must
    /// retry on `DataDir` for a bounded time (tens of milliseconds in practice).
    pub fn open(path: impl AsRef<Path>, cache_bytes: u64) -> Result<StateMachine> {
        Self::open_with_record_cache(path, cache_bytes, 0)
    }

    /// [`StateMachine::open`] with, besides sled's page cache of `cache_bytes`, a cache of up
    /// to `record_cache_bytes` of recently read and written records in front of sled (0: none).
    /// A sled read costs microseconds; a cached record a hash lookup, which is what makes
    /// applying a write (that reads the key's current version) cheap.
    pub fn open_with_record_cache(
        path: impl AsRef<Path>,
        cache_bytes: u64,
        record_cache_bytes: usize,
    ) -> Result<StateMachine> {
        if cache_bytes == 0 {
            return Err(Error::InvalidArgument(
                "state machine cache must be at least 1 byte".into(),
            ));
        }
        let db = sled::Config::new()
            .path(path.as_ref())
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| open_error(path.as_ref(), e))?;
        let active = match db
            .get(ACTIVE_TREE_KEY)
            .map_err(|e| sled_error("opening the state database", e))?
        {
            Some(name) => name.to_vec(),
            None => {
                let name = state_tree_name(1);
                db.insert(ACTIVE_TREE_KEY, name.clone())
                    .map_err(|e| sled_error("creating the state database", e))?;
                db.flush()
                    .map_err(|e| sled_error("creating the state database", e))?;
                name
            }
        };
        let Some(generation) = parse_state_tree_name(&active) else {
            return Err(
                Error::corrupt(0, "state database names no valid state tree")
                    .in_file(path.as_ref(), 0),
            );
        };
        for name in db.tree_names() {
            if parse_state_tree_name(&name).is_some() && name.as_ref() != active.as_slice() {
                db.drop_tree(&name)
                    .map_err(|e| sled_error("dropping an unfinished restore", e))?;
            }
        }
        let tree = db
            .open_tree(&active)
            .map_err(|e| sled_error("opening the state tree", e))?;
        match tree
            .get(KEY_LAYOUT)
            .map_err(|e| sled_error("opening the state tree", e))?
        {
            Some(bytes) => {
                let layout: u32 = decode_record("layout", &bytes)?;
                if !(OLDEST_LAYOUT_VERSION..=LAYOUT_VERSION).contains(&layout) {
                    return Err(Error::UnsupportedVersion {
                        what: "state layout",
                        found: layout,
                        supported: LAYOUT_VERSION,
                    });
                }
                if layout < LAYOUT_VERSION {
                    upgrade_layout(&tree)?;
                }
            }
            None if tree.is_empty() => {
                tree.insert(KEY_LAYOUT, encode_value(&LAYOUT_VERSION)?)
                    .map_err(|e| sled_error("creating the state tree", e))?;
            }
            None => {
                return Err(
                    Error::corrupt(0, "state tree has data but no layout version")
                        .in_file(path.as_ref(), 0),
                )
            }
        }
        let cached = load_cached(&tree)?;
        let mut cache = RecordCache::new(record_cache_bytes);
        cache.load_metas(&tree)?;
        let maps = MapReader::default();
        maps.load(&tree)?;
        Ok(StateMachine {
            maps,
            db,
            tree,
            generation,
            cached,
            pending: Writes::new(),
            pending_bytes: 0,
            cache: RefCell::new(cache),
            capture: ChangeCapture::Off,
            failed: None,
        })
    }

    /// The index and term of the last applied entry ((0, 0) before any).
    pub fn applied(&self) -> (LogIndex, Term) {
        self.cached.applied
    }

    /// Record, from the next apply on, the changes of user keys each entry makes in
    /// [`ApplyOutcome::changes`] (`changes.rs`; off by default, and then free).
    pub fn set_change_capture(&mut self, capture: ChangeCapture) {
        self.capture = capture;
    }

    /// The payload of the last applied membership entry, opaque to the state machine.
    pub fn membership(&self) -> Option<Vec<u8>> {
        self.cached.membership.clone()
    }

    /// How many clients the client table holds (at most [`crate::limits::MAX_CLIENTS`]).
    pub fn client_count(&self) -> usize {
        self.cached.clients.len()
    }

    /// `Fatal` once the machine stopped after a storage failure (see `note_failure`).
    pub(crate) fn check_usable(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(Error::Fatal(format!(
                "state machine stopped after a storage failure: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Remember a storage failure (IO, sled, corrupt stored bytes) so nothing more is applied.
    fn note_failure(&mut self, e: Error) -> Error {
        if matches!(
            e.code(),
            ErrorCode::Io | ErrorCode::Corrupt | ErrorCode::Fatal
        ) {
            self.failed = Some(e.to_string());
        }
        e
    }

    /// Apply a batch of committed entries in log order, as ONE atomic sled batch that also
    /// records the new applied index and term (and the membership payload, if the batch has a
    /// membership entry). Entries at or below the applied index are skipped and get no outcome
    /// (replay after a crash is idempotent); the rest must follow on without a gap and with
    /// non-decreasing terms (`InvalidArgument` otherwise, nothing applied).
    ///
    /// Per entry: `Noop` only advances the applied index; `Membership` stores its payload;
    /// `Normal` decodes and applies a [`Command`] (a payload that is not a command is
    /// [`EntryResult::Malformed`] and changes nothing). A command of a newer version than this
    /// build understands fails the whole batch with `UnsupportedVersion` and nothing is applied:
    /// skipping it would make this member diverge, so it must be upgraded first. After a storage
    /// error every later call fails with `Fatal`.
    ///
    /// Same as [`StateMachine::apply_deferred`] followed by [`StateMachine::flush_pending`].
    pub fn apply(&mut self, entries: &[Entry]) -> Result<Vec<ApplyOutcome>> {
        let outcomes = self.apply_deferred(entries)?;
        self.flush_pending()?;
        Ok(outcomes)
    }

    /// [`StateMachine::apply`], except that the writes (and the new applied index) are kept in
    /// memory, on top of sled, until [`StateMachine::flush_pending`] writes everything pending
    /// as ONE sled batch. Reads, snapshots and the state hash see the pending writes at once.
    ///
    /// Why: each sled batch costs tens of microseconds on its own (sled seals and writes its
    /// log buffer per batch), so a runtime applying many small batches under load flushes
    /// them together, every few milliseconds or thousand writes. Durability is unchanged:
    /// sled was never the durable copy (DESIGN.md rule 2). The applied index still travels in
    /// the same sled batch as the writes it covers, so after a crash sled holds some earlier
    /// applied index with exactly its state, and the runtime replays the log from there.
    pub fn apply_deferred(&mut self, entries: &[Entry]) -> Result<Vec<ApplyOutcome>> {
        self.check_usable()?;
        let (mut applied_index, mut applied_term) = self.cached.applied;
        let mut membership = None;
        // The order is changed in place; a batch that fails rolls it back (`roll_back`).
        let mut applier = Executor::new(
            Overlay::with_pending(&self.tree, &self.pending, &self.cache),
            &mut self.cached.clients,
            &self.maps,
            &mut self.cached.sessions,
        );
        applier.overlay.set_capture(self.capture);
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut failure = None;
        for entry in entries {
            if entry.index <= applied_index {
                continue;
            }
            if entry.index != applied_index.next() {
                failure = Some(Error::InvalidArgument(format!(
                    "entry {} does not follow the applied index {applied_index}",
                    entry.index
                )));
                break;
            }
            if entry.term < applied_term {
                failure = Some(Error::InvalidArgument(format!(
                    "entry {} has term {}, below the applied term {applied_term}",
                    entry.index, entry.term
                )));
                break;
            }
            let result = match entry.kind {
                EntryKind::Noop => EntryResult::Noop,
                EntryKind::Membership => {
                    applier
                        .overlay
                        .insert(KEY_MEMBERSHIP.to_vec(), entry.data.clone());
                    membership = Some(entry.data.clone());
                    EntryResult::Membership
                }
                EntryKind::Normal => match Command::decode(&entry.data) {
                    Ok(cmd) => match applier.apply_command(&cmd, entry.index) {
                        Ok(result) => EntryResult::Command {
                            client_id: cmd.client_id,
                            seq: cmd.seq,
                            result,
                        },
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    },
                    // Not ours to judge: a newer member wrote it (see the doc above).
                    Err(e @ Error::UnsupportedVersion { .. }) => {
                        failure = Some(e);
                        break;
                    }
                    Err(e) => EntryResult::Malformed {
                        reason: e.to_string(),
                    },
                },
            };
            let changes = if self.capture == ChangeCapture::Off {
                Vec::new()
            } else {
                match applier.overlay.take_changes() {
                    Ok(changes) => changes,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            };
            applied_index = entry.index;
            applied_term = entry.term;
            outcomes.push(ApplyOutcome {
                index: entry.index,
                term: entry.term,
                result,
                changes,
                lock_waits: std::mem::take(&mut applier.lock_waits),
            });
        }
        if failure.is_none() && !outcomes.is_empty() {
            let applied = AppliedRecord {
                index: applied_index,
                term: applied_term,
            };
            failure = applier
                .overlay
                .put_encoded(KEY_APPLIED.to_vec(), &applied)
                .err();
        }
        if let Some(e) = failure {
            // Nothing of the batch is applied: its writes are dropped with the overlay.
            applier.roll_back();
            return Err(self.note_failure(e));
        }
        if outcomes.is_empty() {
            return Ok(outcomes);
        }
        let (writes, maps) = applier.into_writes();
        self.pending_bytes += merge_writes(&mut self.pending, writes);
        self.maps.publish(maps);
        self.cached.applied = (applied_index, applied_term);
        if membership.is_some() {
            self.cached.membership = membership;
        }
        Ok(outcomes)
    }

    /// Write every pending write (see [`StateMachine::apply_deferred`]) to sled as one batch.
    pub fn flush_pending(&mut self) -> Result<()> {
        self.check_usable()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        // The cache learns the new records now; should the batch fail, the machine stops.
        let batch = batch_of(std::mem::take(&mut self.pending), Some(&self.cache));
        if let Err(e) = self.tree.apply_batch(batch) {
            let e = sled_error("applying entries", e);
            return Err(self.note_failure(e));
        }
        self.pending_bytes = 0;
        Ok(())
    }

    /// How many writes are pending (not yet in sled).
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// About how many key and value bytes are pending (an upper bound).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// The value and metadata of `key`, `None` if absent. `InvalidArgument` for an empty or
    /// oversize key.
    pub fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>> {
        kv::get(&self.view(), key)
    }

    /// Up to `limit` keys in `[start, end)` (`end` `None`: to the last key) in key order, and
    /// whether more remain. `limit` must be in 1..=`MAX_SCAN_LIMIT`; `start` may be empty.
    pub fn range(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<RangePage> {
        kv::range(&self.view(), start, end, limit)
    }

    /// Up to `limit` keys starting with `prefix` (empty: every key), in key order.
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<RangePage> {
        self.range(prefix, prefix_end(prefix).as_deref(), limit)
    }

    /// Evaluate transaction compares against the current state without writing: `true` if all
    /// hold. Lets the runtime answer a read-only transaction locally after a ReadIndex.
    pub fn evaluate_compares(&self, compares: &[Compare]) -> Result<bool> {
        kv::evaluate_compares(&self.view(), compares)
    }

    /// The partition maps as this machine has applied them, shared: a reader keeps seeing every
    /// later change (and the maps of a restored snapshot).
    pub fn map_reader(&self) -> MapReader {
        self.maps.clone()
    }

    /// Partition map `name` as applied here, `None` if there is no such map.
    pub fn partition_map(&self, name: &str) -> Option<Arc<PartitionMap>> {
        self.maps.get(name)
    }

    /// The owners of `key` in map `name` (`InvalidArgument` if there is no such map).
    pub fn map_owners(&self, name: &str, key: &[u8]) -> Result<Owners> {
        ring::validate_key_read(name, key)?;
        let map = self.maps.get(name).ok_or_else(|| ring::no_such_map(name))?;
        Ok(map.owners(key))
    }

    /// The moves of map `name` after `since_epoch` (see [`MapMoves`]; `InvalidArgument` if
    /// there is no such map).
    pub fn map_moves(&self, name: &str, since_epoch: u64) -> Result<MapMoves> {
        ring::validate_name(name)?;
        let map = self.maps.get(name).ok_or_else(|| ring::no_such_map(name))?;
        ring::read_moves(&self.view(), name, map.epoch, since_epoch)
    }

    /// Whether `token` is a current grant of lock `name` (the answer to `check_token`: a
    /// resource outside haven asks before it accepts a fenced request).
    pub fn check_token(&self, name: &[u8], token: FencingToken) -> Result<bool> {
        locks::validate_name("check token", name)?;
        locks::is_held(&self.view(), LockSpace::Locks, name, token)
    }

    /// Lock `name`'s holders and waiters, `None` if it has neither.
    pub fn lock(&self, name: &[u8]) -> Result<Option<LockInfo>> {
        locks::validate_name("lock", name)?;
        locks::info(&self.view(), LockSpace::Locks, name)
    }

    /// Up to `limit` (1..=`MAX_SCAN_LIMIT`) locks that have holders or waiters, in name order,
    /// after `after` (empty: from the first); and whether more remain.
    pub fn locks(&self, after: &[u8], limit: usize) -> Result<(Vec<LockInfo>, bool)> {
        kv::check_range("locks", b"", None, limit)?;
        locks::list(&self.view(), after, limit)
    }

    /// Who leads election `name` (`None`: nobody campaigns in it).
    pub fn leader(&self, name: &[u8]) -> Result<Option<ElectionLeader>> {
        elect::validate_name("leader", name)?;
        elect::leader(&self.view(), name)
    }

    /// Election `name`'s leader and campaigners (in the order they will lead), as a lock's
    /// holders and waiters; `None` if nobody campaigns in it.
    pub fn election(&self, name: &[u8]) -> Result<Option<LockInfo>> {
        elect::validate_name("election", name)?;
        locks::info(&self.view(), LockSpace::Elections, name)
    }

    /// What the state knows of `session` (`None`: it does not exist).
    pub fn session(&self, session: SessionId) -> Result<Option<SessionInfo>> {
        sessions::info(&self.view(), session)
    }

    /// Every session (at most `MAX_SESSIONS`), in id order: what a new leader's lease keeper
    /// re-arms.
    pub fn sessions(&self) -> Result<Vec<SessionInfo>> {
        sessions::all(&self.view())
    }

    /// Every lock in its lock-delay, in name order, with its delay in ms: what a new leader's
    /// keeper arms (from the full delay) before it proposes `Op::LockDelayEnd`.
    pub fn lock_delays(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        locks::delays(&self.view())
    }

    /// How many sessions exist.
    pub fn session_count(&self) -> usize {
        self.cached.sessions
    }

    /// The state as reads see it: the tree, through the cache, with the pending writes on top.
    fn view(&self) -> Overlay<'_> {
        Overlay::with_pending(&self.tree, &self.pending, &self.cache)
    }

    /// A sha256 over the logical state: applied index and term, membership payload, every key
    /// with its value and metadata, and the client table (ids, last seqs and indexes, retained
    /// results). Identical on every member that has applied the same index, whether it got
    /// there by applying entries or by restoring a snapshot. Reads the whole state.
    /// `docs/FORMAT.md` ("State hash") defines the bytes hashed.
    pub fn state_hash(&self) -> Result<[u8; 32]> {
        let mut hasher = Sha256::new();
        let put_bytes = |hasher: &mut Sha256, bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        hasher.update(b"haven state hash v1");
        hasher.update(self.cached.applied.0 .0.to_le_bytes());
        hasher.update(self.cached.applied.1 .0.to_le_bytes());
        match &self.cached.membership {
            Some(m) => {
                hasher.update([1]);
                put_bytes(&mut hasher, m);
            }
            None => hasher.update([0]),
        }
        let empty = Writes::new();
        for item in merged(&self.tree, Some(&self.pending), &empty, &[], None) {
            let (key, value) = item?;
            match key.first() {
                Some(&PREFIX_KV) => {
                    let stored: VersionedValue = decode_record("kv", &value)?;
                    hasher.update([PREFIX_KV]);
                    put_bytes(&mut hasher, &key[1..]);
                    put_bytes(&mut hasher, &stored.value);
                    hasher.update(stored.meta.create_revision.0.to_le_bytes());
                    hasher.update(stored.meta.mod_revision.0.to_le_bytes());
                    hasher.update(stored.meta.version.to_le_bytes());
                }
                // The records' bincode bytes are canonical (one encoding per value).
                Some(
                    &prefix @ (PREFIX_CLIENT | PREFIX_SESSION | PREFIX_LOCK | PREFIX_ELECTION),
                ) => {
                    hasher.update([prefix]);
                    put_bytes(&mut hasher, &key[1..]);
                    put_bytes(&mut hasher, &value);
                }
                Some(&PREFIX_RING) => {
                    // The records' bytes are canonical (a version byte, then bincode).
                    hasher.update([PREFIX_RING]);
                    put_bytes(&mut hasher, &key[1..]);
                    put_bytes(&mut hasher, &value);
                }
                // Already hashed above.
                Some(&PREFIX_META) => {}
                _ => return Err(Error::corrupt(0, "unknown key in the state tree")),
            }
        }
        Ok(hasher.finalize().into())
    }

    /// Write the whole state (KV, client table, membership, applied index and term) as a
    /// snapshot stream to `out` (`src/snapshots.rs` makes it a durable file). The snapshot covers
    /// exactly [`StateMachine::applied`]. Apply is blocked meanwhile (it needs `&mut self`).
    pub(crate) fn write_snapshot_to(&self, out: impl Write) -> Result<SnapshotSummary> {
        self.check_usable()?;
        let (index, term) = self.cached.applied;
        let empty = Writes::new();
        let pairs = merged(&self.tree, Some(&self.pending), &empty, &[], None);
        snapshot::write_snapshot(pairs, index, term, LAYOUT_VERSION, out)
    }

    /// Replace the whole state with the snapshot that `open` reads, which the caller has
    /// verified completely (`verified`: [`verify_snapshot`] of the same bytes).
    ///
    /// A snapshot older than the applied index is refused (`InvalidArgument`): the state never
    /// moves backwards. The records are then copied into a fresh sled tree (the stream is read
    /// again, and must hash as `verified` did), which is flushed and then made the state by ONE
    /// write of the active-tree pointer, then flushed again. A crash before that write leaves
    /// the old state (the half-filled tree is dropped at the next open); a crash after it leaves
    /// the new state. Either way the runtime sees a consistent state and replays the log from
    /// [`StateMachine::applied`]. `open` is called once, when the scratch tree is ready; its
    /// failure is a storage failure like any other of the restore.
    pub(crate) fn restore_verified<R: Read>(
        &mut self,
        verified: &SnapshotSummary,
        open: impl FnOnce() -> Result<R>,
    ) -> Result<()> {
        self.check_usable()?;
        if verified.index < self.cached.applied.0 {
            return Err(Error::InvalidArgument(format!(
                "snapshot at {} is older than the applied index {}",
                verified.index, self.cached.applied.0
            )));
        }
        let next_generation = self.generation + 1;
        let next_name = state_tree_name(next_generation);
        match self.fill_tree(&next_name, open, verified) {
            Ok(tree) => {
                if let Err(e) = self.switch_to(tree, next_generation, next_name) {
                    return Err(self.note_failure(e));
                }
                Ok(())
            }
            Err(e) => {
                // Nothing refers to the scratch tree; dropping it is tidiness (open drops it too).
                let _ = self.db.drop_tree(&next_name);
                match e.code() {
                    // The stream changed or broke between the two reads: the state is untouched.
                    ErrorCode::Corrupt | ErrorCode::UnsupportedVersion => Err(e),
                    _ => Err(self.note_failure(e)),
                }
            }
        }
    }

    /// Copy the verified snapshot into a new tree named `name` (not yet the state).
    fn fill_tree<R: Read>(
        &self,
        name: &[u8],
        open: impl FnOnce() -> Result<R>,
        verified: &SnapshotSummary,
    ) -> Result<sled::Tree> {
        self.db
            .drop_tree(name)
            .map_err(|e| sled_error("clearing a scratch state tree", e))?;
        let tree = self
            .db
            .open_tree(name)
            .map_err(|e| sled_error("creating a scratch state tree", e))?;
        let copied = snapshot::read_snapshot(open()?, |pairs| {
            let mut batch = sled::Batch::default();
            for (key, value) in pairs {
                // A layout-1 snapshot (verified as such) becomes a layout-2 tree: its stored
                // client order is left out (rebuilt from the client records at the switch).
                if key.first() == Some(&PREFIX_CLIENT_ORDER) {
                    continue;
                }
                if key == KEY_LAYOUT {
                    batch.insert(key, encode_value(&LAYOUT_VERSION)?);
                    continue;
                }
                batch.insert(key, value);
            }
            tree.apply_batch(batch)
                .map_err(|e| sled_error("restoring a snapshot", e))
        })?;
        if copied.sha256 != verified.sha256 {
            return Err(Error::corrupt(
                0,
                "snapshot changed while it was being restored",
            ));
        }
        self.db
            .flush()
            .map_err(|e| sled_error("flushing a restored snapshot", e))?;
        Ok(tree)
    }

    /// Make `tree` the state: one pointer write, flushed; then drop the old tree.
    fn switch_to(&mut self, tree: sled::Tree, generation: u64, name: Vec<u8>) -> Result<()> {
        let cached = load_cached(&tree)?;
        self.db
            .insert(ACTIVE_TREE_KEY, name)
            .map_err(|e| sled_error("switching to the restored state", e))?;
        self.db
            .flush()
            .map_err(|e| sled_error("switching to the restored state", e))?;
        let old_name = state_tree_name(self.generation);
        self.tree = tree;
        self.generation = generation;
        // The restored state replaces whatever was pending over the old one.
        self.pending.clear();
        self.pending_bytes = 0;
        // Learns the new tree's keys (or, if that fails, holds nothing: never the old tree's).
        if let Err(e) = self.cache.borrow_mut().load_metas(&self.tree) {
            self.cache.borrow_mut().clear();
            self.maps.clear();
            return Err(e);
        }
        if let Err(e) = self.maps.load(&self.tree) {
            self.maps.clear();
            return Err(e);
        }
        self.cached = cached;
        // The old tree is no longer the state; if dropping it fails, open drops it next time.
        let _ = self.db.drop_tree(old_name);
        Ok(())
    }

    /// Write the pending writes to sled, then ask sled to write everything to disk (sled's
    /// flush; see DESIGN.md on why the runtime must not rely on it for durability). Useful
    /// before a clean shutdown.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_pending()?;
        self.db
            .flush()
            .map(drop)
            .map_err(|e| sled_error("flushing the state", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::GroupId;
    use layout::check_pair;

    fn entry(index: u64, cmd: &Command) -> Entry {
        Entry {
            group: GroupId(0),
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: cmd.encode().unwrap(),
        }
    }

    fn register() -> Command {
        Command {
            client_id: 0,
            seq: 0,
            op: Op::RegisterClient,
        }
    }

    fn put(client_id: u64, seq: u64) -> Command {
        Command {
            client_id,
            seq,
            op: Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        }
    }

    #[test]
    fn a_batch_that_fails_part_way_leaves_the_client_order_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path().join("state"), 1 << 20).unwrap();
        sm.apply(&[entry(1, &register()), entry(2, &register())])
            .unwrap();
        let before = sm.cached.clients.clone();
        // Client 1's put would move it to index 3, then a gap fails the batch.
        let err = sm
            .apply(&[entry(3, &put(1, 1)), entry(5, &put(2, 1))])
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(sm.cached.clients, before);
        assert_eq!(sm.applied().0, LogIndex(2));
        sm.apply(&[entry(3, &put(1, 1))]).unwrap();
        assert_eq!(sm.cached.clients.oldest(), Some((LogIndex(2), 2)));
        assert_eq!(sm.cached.clients, ClientOrder::load(&sm.tree).unwrap());
    }

    #[test]
    fn a_layout_1_tree_loses_its_stored_client_order_and_keeps_the_same_one_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path().join("state"), 1 << 20).unwrap();
        sm.apply(&[
            entry(1, &register()),
            entry(2, &register()),
            entry(3, &put(1, 1)),
        ])
        .unwrap();
        // What layout 1 stored besides the records: one `l` key per client.
        for (last_index, client_id) in [(3u64, 1u64), (2, 2)] {
            let mut key = vec![PREFIX_CLIENT_ORDER];
            key.extend_from_slice(&last_index.to_be_bytes());
            key.extend_from_slice(&client_id.to_be_bytes());
            sm.tree.insert(key, Vec::<u8>::new()).unwrap();
        }
        sm.tree
            .insert(KEY_LAYOUT, encode_value(&1u32).unwrap())
            .unwrap();
        let hash = sm.state_hash();
        assert!(hash.is_err(), "layout 2 has no `l` keys");
        let expected = sm.cached.clients.clone();
        sm.flush().unwrap();
        drop(sm);
        // Open converts it (sled releases its lock lazily: retry, as the runtime does).
        let mut attempts = 0;
        let sm = loop {
            match StateMachine::open(dir.path().join("state"), 1 << 20) {
                Err(e) if e.code() == ErrorCode::DataDir && attempts < 250 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(sm.cached.clients, expected);
        assert_eq!(sm.tree.scan_prefix([PREFIX_CLIENT_ORDER]).count(), 0);
        let layout: u32 =
            decode_record("layout", &sm.tree.get(KEY_LAYOUT).unwrap().unwrap()).unwrap();
        assert_eq!(layout, LAYOUT_VERSION);
        let order = ClientOrder::load(&sm.tree).unwrap();
        assert_eq!(order, sm.cached.clients);
        assert_eq!(order.oldest(), Some((LogIndex(2), 2)));
    }

    #[test]
    fn a_layout_1_snapshot_restores_without_its_stored_client_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = StateMachine::open(dir.path().join("a"), 1 << 20).unwrap();
        source
            .apply(&[
                entry(1, &register()),
                entry(2, &register()),
                entry(3, &put(1, 1)),
            ])
            .unwrap();
        // The same state as layout 1 stored it: `l` keys and `mlayout` = 1.
        let empty = Writes::new();
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = merged(&source.tree, None, &empty, &[], None)
            .map(|p| p.unwrap())
            .map(|(k, v)| {
                if k == KEY_LAYOUT {
                    (k, encode_value(&1u32).unwrap())
                } else {
                    (k, v)
                }
            })
            .collect();
        for (last_index, client_id) in [(3u64, 1u64), (2, 2)] {
            let mut key = vec![PREFIX_CLIENT_ORDER];
            key.extend_from_slice(&last_index.to_be_bytes());
            key.extend_from_slice(&client_id.to_be_bytes());
            pairs.push((key, Vec::new()));
        }
        pairs.sort();
        let mut file = Vec::new();
        snapshot::write_snapshot(
            pairs.into_iter().map(Ok),
            LogIndex(3),
            Term(1),
            1,
            &mut file,
        )
        .unwrap();
        // Layout 2 refuses `l` keys in a snapshot that says it is layout 2.
        assert!(check_pair(&[PREFIX_CLIENT_ORDER; 17], b"", LAYOUT_VERSION).is_err());
        let mut restored = StateMachine::open(dir.path().join("b"), 1 << 20).unwrap();
        let verified = verify_snapshot(&file[..]).unwrap();
        restored
            .restore_verified(&verified, || Ok(&file[..]))
            .unwrap();
        assert_eq!(restored.state_hash().unwrap(), source.state_hash().unwrap());
        assert_eq!(restored.tree.scan_prefix([PREFIX_CLIENT_ORDER]).count(), 0);
        let layout: u32 =
            decode_record("layout", &restored.tree.get(KEY_LAYOUT).unwrap().unwrap()).unwrap();
        assert_eq!(layout, LAYOUT_VERSION);
        assert_eq!(restored.cached.clients, source.cached.clients);
        // A snapshot of the restored state is layout 2 and has the same content hash-wise.
        let again = restored.write_snapshot_to(Vec::new()).unwrap();
        assert_eq!(again.index, LogIndex(3));
    }
}
