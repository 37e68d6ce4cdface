//! The state's layout in sled, byte for byte as `docs/FORMAT.md` ("State-machine sled layout")
//! gives it: the tree names, the one-byte key prefixes (taken and reserved), the key encodings,
//! and the records stored under each prefix, with the helpers that decode them.
//!
//! Everything lives in ONE sled tree (a `sled::Batch` is atomic only within one tree). Keys start
//! with a one-byte prefix, one per feature; a new feature takes a reserved prefix here (and in
//! FORMAT.md) before it writes a key. The records live here rather than beside their feature's
//! logic because the shared plumbing below the features reads them: the record cache reads a
//! user key's metadata, and snapshot verification checks every record ([`check_pair`]).

use super::map_record::{decode_map, EpochMoves};
pub(crate) use super::map_record::{decode_map_record, encode_map_record};
pub(crate) use super::record::{decode_record, with_context};
use super::result::{
    CommandResult, ElectionLeader, KeyMeta, LockHolder, LockWaiter, SessionId, VersionedValue,
};
use crate::codec::decode_borrowed;
use crate::error::{Error, Result};
use crate::types::{LogIndex, Term};
use bincode::{BorrowDecode, Decode, Encode};

/// Key in sled's default tree naming the tree that holds the current state.
pub(crate) const ACTIVE_TREE_KEY: &[u8] = b"haven.sm.active_tree";
/// State trees are named this prefix followed by a decimal generation number; a restore fills
/// generation n+1 and then switches [`ACTIVE_TREE_KEY`] to it in one write.
const STATE_TREE_PREFIX: &str = "haven.sm.state.";

pub(crate) fn state_tree_name(generation: u64) -> Vec<u8> {
    format!("{STATE_TREE_PREFIX}{generation}").into_bytes()
}

pub(crate) fn parse_state_tree_name(name: &[u8]) -> Option<u64> {
    std::str::from_utf8(name)
        .ok()?
        .strip_prefix(STATE_TREE_PREFIX)?
        .parse()
        .ok()
}

/// Prefix of user keys: `k` ‖ key -> [`VersionedValue`].
pub(crate) const PREFIX_KV: u8 = b'k';
/// Prefix of the client table: `c` ‖ client id (u64 BE) -> [`ClientRecord`].
pub(crate) const PREFIX_CLIENT: u8 = b'c';
/// Prefix of the eviction order of layout 1: `l` ‖ last applied index (u64 BE) ‖ client id
/// (u64 BE) -> empty. Layout 2 keeps that order in memory only (`clients::ClientOrder`); the keys are
/// removed when a layout-1 tree is opened and skipped when a layout-1 snapshot is restored.
pub(crate) const PREFIX_CLIENT_ORDER: u8 = b'l';
/// Prefix of machine metadata: `m` ‖ name.
pub(crate) const PREFIX_META: u8 = b'm';

/// Sessions (leases): `s` ‖ `r` ‖ session id (u64 BE) -> [`SessionRecord`]; `s` ‖ `k` ‖
/// session id (u64 BE) ‖ user key -> create revision (the key's incarnation it is attached to);
/// `s` ‖ `o` ‖ user key -> [`SessionId`] (the session the key was last attached to).
pub(crate) const PREFIX_SESSION: u8 = b's';
/// Locks: `x` ‖ `l` ‖ name -> [`LockRecord`]; `x` ‖ `s` ‖ session id (u64 BE) ‖ name -> empty,
/// or the request's lock-delay in ms (a nonzero u64) (the locks a session holds or waits for);
/// `x` ‖ `d` ‖ name -> [`LockDelayRecord`] (a lock in its lock-delay: granted to no one).
pub(crate) const PREFIX_LOCK: u8 = b'x';
/// Elections (`elect.rs`), a second lock table with its own names: `e` ‖ `l` ‖ name ->
/// [`LockRecord`] (the leader is the holder, campaigners the waiters, each with its value);
/// `e` ‖ `s` ‖ session id (u64 BE) ‖ name -> empty (the elections a session leads or
/// campaigns in).
pub(crate) const PREFIX_ELECTION: u8 = b'e';
/// Prefix of the partition maps (`ring.rs`): `r` ‖ name length (u8) ‖ name -> the map's
/// [`MapRecord`](super::map_record::MapRecord) (its table; a map of placement version 2 or later
/// under record version 2, with the version), and `r` ‖ name length (u8) ‖ name ‖ epoch
/// (u64 BE) -> [`EpochMoves`] (the slots that change made move), for the last `MAX_MAP_MOVES_EPOCHS` epochs.
pub(crate) const PREFIX_RING: u8 = b'r';

/// Every prefix, taken or reserved: no two features may share one.
const PREFIXES: [u8; 8] = [
    PREFIX_KV,
    PREFIX_CLIENT,
    PREFIX_CLIENT_ORDER,
    PREFIX_META,
    PREFIX_SESSION,
    PREFIX_LOCK,
    PREFIX_ELECTION,
    PREFIX_RING,
];
const _: () = {
    let mut i = 0;
    while i < PREFIXES.len() {
        let mut j = i + 1;
        while j < PREFIXES.len() {
            assert!(
                PREFIXES[i] != PREFIXES[j],
                "two features share a key prefix"
            );
            j += 1;
        }
        i += 1;
    }
};

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
    /// Its result, as retained (see `encode_client_record` in `clients.rs`).
    pub(crate) result: CommandResult,
}

/// A session, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) struct SessionRecord {
    /// The TTL it was granted with.
    pub(crate) ttl_ms: u64,
    /// Its remaining TTL at the last checkpoint (the TTL itself until the first one): what a new
    /// leader re-arms it with.
    pub(crate) remaining_ms: u64,
    /// How many keys are attached to it (`s k` keys).
    pub(crate) keys: u32,
    /// How many locks it holds or waits for (`x s` keys).
    pub(crate) locks: u32,
}

/// A lock, as stored: its holders and its waiters in request order. A lock with neither is not
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub(crate) struct LockRecord {
    pub(crate) holders: Vec<LockHolder>,
    pub(crate) waiters: Vec<LockWaiter>,
}

impl LockRecord {
    /// The leader an election's record names: its holder (an election has one at most).
    pub(crate) fn leader(&self) -> Option<ElectionLeader> {
        self.holders.first().map(|h| ElectionLeader {
            value: h.value.clone(),
            token: h.token,
            session: h.session,
        })
    }
}

/// A lock in its lock-delay: its holder's session expired while holding it with a nonzero
/// lock-delay, so the lock is granted to no one until the leader's `LockDelayEnd` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(crate) struct LockDelayRecord {
    /// The delay asked for (the longest, if several holders expired): what a leader arms.
    pub(crate) delay_ms: u64,
    /// The index of the expiry that began it.
    pub(crate) since: LogIndex,
}

/// Second byte of the session record keys.
const SESSION_RECORD: u8 = b'r';
/// Second byte of a session's attached-key keys.
const SESSION_KEY: u8 = b'k';
/// Second byte of a key's owner keys.
const SESSION_OWNER: u8 = b'o';
/// Second byte of lock record keys.
const LOCK_RECORD: u8 = b'l';
/// Second byte of a session's lock keys.
const LOCK_SESSION: u8 = b's';
/// Second byte of a delayed lock's keys.
const LOCK_DELAY: u8 = b'd';

fn prefixed(prefix: u8, kind: u8, id: Option<u64>, tail: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + 8 + tail.len());
    k.push(prefix);
    k.push(kind);
    if let Some(id) = id {
        k.extend_from_slice(&id.to_be_bytes());
    }
    k.extend_from_slice(tail);
    k
}

/// `s r id`.
pub(crate) fn session_key(session: SessionId) -> Vec<u8> {
    prefixed(PREFIX_SESSION, SESSION_RECORD, Some(session.0), &[])
}

/// Every session record key starts with this.
pub(crate) fn session_records_prefix() -> Vec<u8> {
    prefixed(PREFIX_SESSION, SESSION_RECORD, None, &[])
}

/// `s k id key`.
pub(crate) fn session_attached_key(session: SessionId, key: &[u8]) -> Vec<u8> {
    prefixed(PREFIX_SESSION, SESSION_KEY, Some(session.0), key)
}

/// Every `s k` key of `session` starts with this.
pub(crate) fn session_attached_prefix(session: SessionId) -> Vec<u8> {
    prefixed(PREFIX_SESSION, SESSION_KEY, Some(session.0), &[])
}

/// `s o key`.
pub(crate) fn key_owner_key(key: &[u8]) -> Vec<u8> {
    prefixed(PREFIX_SESSION, SESSION_OWNER, None, key)
}

/// Which lock table a lock lives in: the users' locks (`x`) or the elections (`e`). Both have
/// the same records and rules; the prefix keeps their names apart, so no lock name can ever
/// reach an election (or the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockSpace {
    /// `x`: `Op::LockAcquire` and friends.
    Locks,
    /// `e`: `Op::ElectionCampaign` and friends.
    Elections,
}

impl LockSpace {
    const fn prefix(self) -> u8 {
        match self {
            LockSpace::Locks => PREFIX_LOCK,
            LockSpace::Elections => PREFIX_ELECTION,
        }
    }
}

/// `x d name`.
pub(crate) fn lock_delay_key(name: &[u8]) -> Vec<u8> {
    prefixed(PREFIX_LOCK, LOCK_DELAY, None, name)
}

/// Every `x d` key starts with this.
pub(crate) fn lock_delays_prefix() -> Vec<u8> {
    prefixed(PREFIX_LOCK, LOCK_DELAY, None, &[])
}

/// `x l name` (or `e l name`).
pub(crate) fn lock_key(space: LockSpace, name: &[u8]) -> Vec<u8> {
    prefixed(space.prefix(), LOCK_RECORD, None, name)
}

/// Every lock record key of `space` starts with this.
pub(crate) fn lock_records_prefix(space: LockSpace) -> Vec<u8> {
    prefixed(space.prefix(), LOCK_RECORD, None, &[])
}

/// `x s id name` (or `e s id name`).
pub(crate) fn session_lock_key(space: LockSpace, session: SessionId, name: &[u8]) -> Vec<u8> {
    prefixed(space.prefix(), LOCK_SESSION, Some(session.0), name)
}

/// Every `x s` (or `e s`) key of `session` starts with this.
pub(crate) fn session_locks_prefix(space: LockSpace, session: SessionId) -> Vec<u8> {
    prefixed(space.prefix(), LOCK_SESSION, Some(session.0), &[])
}

/// The election name of an `e l` key.
pub(crate) fn election_of(key: &[u8]) -> Option<&[u8]> {
    match key {
        [PREFIX_ELECTION, LOCK_RECORD, name @ ..] if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// The session id of an `s r`, `s k`, `x s` or `e s` key, and the rest of the key after it.
pub(crate) fn session_of(key: &[u8]) -> Option<(SessionId, &[u8])> {
    match key {
        [PREFIX_SESSION, SESSION_RECORD | SESSION_KEY, rest @ ..]
        | [PREFIX_LOCK | PREFIX_ELECTION, LOCK_SESSION, rest @ ..]
            if rest.len() >= 8 =>
        {
            let (id, tail) = rest.split_at(8);
            Some((SessionId(u64::from_be_bytes(id.try_into().ok()?)), tail))
        }
        _ => None,
    }
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

/// The client id in a `c` key (or a layout-1 `l` key), if the key is well formed.
pub(crate) fn client_id_of(key: &[u8]) -> Option<u64> {
    let id: [u8; 8] = match key.first() {
        Some(&PREFIX_CLIENT) if key.len() == 9 => key[1..9].try_into().ok()?,
        Some(&PREFIX_CLIENT_ORDER) if key.len() == 17 => key[9..17].try_into().ok()?,
        _ => return None,
    };
    Some(u64::from_be_bytes(id))
}

/// The key of map `name`'s table: `r` ‖ name length (u8) ‖ name. The name's length is checked
/// (at most `MAX_MAP_NAME_BYTES` < 256) before any key is made.
pub(crate) fn map_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + name.len());
    k.push(PREFIX_RING);
    k.push(name.len() as u8);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The key of the moves map `name` made at `epoch`: its table key ‖ epoch (u64 BE).
pub(crate) fn map_moves_key(name: &str, epoch: u64) -> Vec<u8> {
    let mut k = map_key(name);
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// What an `r` key names: a map's table (`None`) or its moves at an epoch.
pub(crate) fn parse_map_key(key: &[u8]) -> Option<(&str, Option<u64>)> {
    let (&prefix, rest) = key.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if prefix != PREFIX_RING || len == 0 || rest.len() < len as usize {
        return None;
    }
    let (name, tail) = rest.split_at(len as usize);
    let name = std::str::from_utf8(name).ok()?;
    match tail.len() {
        0 => Some((name, None)),
        8 => Some((name, Some(u64::from_be_bytes(tail.try_into().ok()?)))),
        _ => None,
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
        Some(&PREFIX_RING) => match parse_map_key(key) {
            Some((_, None)) => decode_map(value).map(drop),
            Some((_, Some(epoch))) => {
                let moves: EpochMoves = decode_map_record("partition map moves", value)?;
                moves.check(epoch)
            }
            None => Err(Error::corrupt(
                0,
                "malformed partition map key in state records",
            )),
        },
        Some(&PREFIX_SESSION) if layout >= 2 => check_session_pair(key, value),
        Some(&PREFIX_LOCK) if layout >= 2 => check_lock_pair(key, value),
        // An election has no lock-delay: only its record and empty session keys.
        Some(&PREFIX_ELECTION)
            if layout >= 2
                && key.get(1) != Some(&LOCK_DELAY)
                && (key.get(1) != Some(&LOCK_SESSION) || value.is_empty()) =>
        {
            check_lock_pair(key, value)
        }
        _ => Err(Error::corrupt(0, "unknown key in state records")),
    }
}

fn check_session_pair(key: &[u8], value: &[u8]) -> Result<()> {
    let bad = || Err(Error::corrupt(0, "malformed session key in state records"));
    match (key.get(1), session_of(key)) {
        (Some(&SESSION_RECORD), Some((_, []))) => {
            decode_record::<SessionRecord>("session", value).map(drop)
        }
        (Some(&SESSION_KEY), Some((_, tail))) if !tail.is_empty() => {
            decode_record::<LogIndex>("session key", value).map(drop)
        }
        (Some(&SESSION_OWNER), _) if key.len() > 2 => {
            decode_record::<SessionId>("key owner", value).map(drop)
        }
        _ => bad(),
    }
}

fn check_lock_pair(key: &[u8], value: &[u8]) -> Result<()> {
    match (key.get(1), session_of(key)) {
        (Some(&LOCK_RECORD), _) if key.len() > 2 => {
            decode_record::<LockRecord>("lock", value).map(drop)
        }
        (Some(&LOCK_SESSION), Some((_, tail))) if !tail.is_empty() => {
            if value.is_empty() {
                Ok(())
            } else {
                decode_record::<u64>("session lock delay", value).map(drop)
            }
        }
        (Some(&LOCK_DELAY), _) if key.len() > 2 => {
            decode_record::<LockDelayRecord>("lock delay", value).map(drop)
        }
        _ => Err(Error::corrupt(0, "malformed lock key in state records")),
    }
}

/// Raw (key, value) pairs of the state tree, in key order.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

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

/// The end key of the range holding exactly the keys that start with `prefix`: `prefix` with its
/// last byte below 0xFF incremented and the rest cut off. `None` when there is no such key (the
/// prefix is empty or all 0xFF): the range then runs to the last key.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

#[cfg(test)]
mod tests {

    #[test]
    fn prefix_end_increments_last_non_ff_byte() {
        assert_eq!(super::prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(super::prefix_end(&[1, 0xFF, 0xFF]), Some(vec![2]));
        assert_eq!(super::prefix_end(&[0xFF]), None);
        assert_eq!(super::prefix_end(b""), None);
    }

    use super::*;
    use crate::codec::encode_value;

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
}
