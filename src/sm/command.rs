//! State-machine commands: what a `Normal` log entry carries and how it is encoded. [`Op`] is
//! the one enum of every command; each variant's field types, limits and apply logic belong to
//! its feature's file (`kv.rs`, `clients.rs`), and `execute.rs` dispatches to them.
//!
//! Encoding (see `docs/FORMAT.md`, "State-machine command"): one version byte, then the bincode
//! encoding of [`Command`]. The version byte is the *lowest* command version that knows every
//! variant the command uses: 1 for the key-value and client ops, 2 for the partition-map ops
//! ([`PARTITION_MAP_COMMAND_VERSION`]), 6 for a create that names its placement version
//! ([`PLACEMENT_VERSION_COMMAND_VERSION`]). When a variant is added (sessions, locks, elections),
//! it is appended to its enum and commands that use it are
//! stamped with the next version, so an older member reports `UnsupportedVersion` for exactly
//! those commands instead of mistaking them for garbage. Enum variants are only ever appended:
//! their position is their tag on disk.

use super::elect;
use super::kv::{self, Txn};
use super::locks;
use super::placement::{LoadCap, MapParams, PlacementVersion, Strategy};
use super::result::{FencingToken, LockMode, SessionId};
use super::ring;
use super::sessions;
use crate::codec::{decode_value, encode_value_into};
use crate::error::{Error, Result};
use crate::limits::MAX_COMMAND_BYTES;
use bincode::{Decode, Encode};

/// The newest command version this build writes and reads.
pub const COMMAND_VERSION: u8 = PLACEMENT_VERSION_COMMAND_VERSION;

/// The command version that added the partition-map commands ([`Op::CreateMap`] to
/// [`Op::SetOwnerWeight`]).
pub const PARTITION_MAP_COMMAND_VERSION: u8 = 2;
/// The command version that introduced sessions, locks and ephemeral puts (the variants from
/// [`Op::SessionGrant`] on).
const SESSIONS_COMMAND_VERSION: u8 = 3;
/// The command version that introduced lock-delay ([`Op::LockAcquireWithDelay`],
/// [`Op::LockDelayEnd`]). An acquire without a delay stays [`Op::LockAcquire`] (version 3), so
/// members of the previous version keep applying every command that does not use the delay.
const LOCK_DELAY_COMMAND_VERSION: u8 = 4;
/// The command version that introduced elections (the variants from
/// [`Op::ElectionCampaign`] on).
const ELECTIONS_COMMAND_VERSION: u8 = 5;
/// The command version that introduced [`Op::CreateMapVersioned`] (placement versions). A
/// member of version 5 answers it `UnsupportedVersion` rather than create a map it would compute
/// with another algorithm.
pub const PLACEMENT_VERSION_COMMAND_VERSION: u8 = 6;

pub use super::clients::UNTRACKED_CLIENT;

/// One state-machine command: who sent it, its position in that client's sequence, and the
/// operation.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Command {
    /// The id the machine handed out at registration ([`Op::RegisterClient`]), or
    /// [`UNTRACKED_CLIENT`].
    pub client_id: u64,
    /// The client's sequence number for this command, starting at 1 after registration. A client
    /// has at most one write outstanding and retries it with the same number.
    pub seq: u64,
    /// What to do.
    pub op: Op,
}

/// A state-machine operation. Variants are only ever appended (the position is the tag on disk).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Op {
    /// Register a new client for at-most-once writes. The client id is the log index of this
    /// command. The command's own `client_id` and `seq` are ignored.
    RegisterClient,
    /// Set `key` to `value`.
    Put {
        /// The key (non-empty, at most `MAX_KEY_BYTES`).
        key: Vec<u8>,
        /// The value (at most `MAX_VALUE_BYTES`).
        value: Vec<u8>,
    },
    /// Remove `key` (no effect, but still a success, when it is absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Set `key` to `new_value` if its current value is `expected` (`None`: the key must be
    /// absent).
    CompareAndSwap {
        /// The key.
        key: Vec<u8>,
        /// The value the key must have, or `None` if it must be absent.
        expected: Option<Vec<u8>>,
        /// The value to store when the comparison holds.
        new_value: Vec<u8>,
    },
    /// Remove at most `limit` keys in `[start, end)`, in key order. The result says whether keys
    /// remain in the range, so a client deletes a large range in several bounded commands.
    DeleteRange {
        /// First key of the range (inclusive; may be empty for "from the first key").
        start: Vec<u8>,
        /// End of the range (exclusive); `None` for "to the last key".
        end: Option<Vec<u8>>,
        /// Most keys to delete (1..=`MAX_SCAN_LIMIT`).
        limit: u32,
    },
    /// A transaction: if every compare holds, run `success`, otherwise `failure`.
    Txn(Txn),
    /// Create an empty partition map (version 2; `ring.rs`).
    CreateMap {
        /// Its name (1..=`MAX_MAP_NAME_BYTES` bytes).
        name: String,
        /// Partitions (fixed for the map's life).
        partitions: u32,
        /// Owners per partition, the first the primary.
        replicas: u32,
        /// How partitions rank owners.
        strategy: Strategy,
        /// The bound on an owner's load.
        load_cap: LoadCap,
    },
    /// An owner joins a partition map (version 2).
    JoinMap {
        /// The map.
        name: String,
        /// The owner's id (1..=`MAX_OWNER_ID_BYTES` bytes).
        owner: String,
        /// Its weight (1..=`MAX_OWNER_WEIGHT`).
        weight: u32,
    },
    /// An owner leaves a partition map (version 2).
    LeaveMap {
        /// The map.
        name: String,
        /// The owner's id.
        owner: String,
    },
    /// An owner's weight changes (version 2).
    SetOwnerWeight {
        /// The map.
        name: String,
        /// The owner's id.
        owner: String,
        /// Its new weight.
        weight: u32,
    },
    // ----- sessions and locks (command version 2) -----
    /// Grant a session (lease) of `ttl_ms`; its id is the log index of this command.
    SessionGrant {
        /// Time to live without a keepalive (`MIN_SESSION_TTL_MS..=MAX_SESSION_TTL_MS`).
        ttl_ms: u64,
    },
    /// End a session now: its locks are released, its waits failed, its ephemeral keys deleted.
    SessionRevoke {
        /// The session.
        session: SessionId,
    },
    /// The leader's lease keeper records each session's remaining TTL, so a later leader
    /// re-arms the session from here rather than from the full TTL.
    SessionCheckpoint {
        /// (session, remaining TTL in ms), at most `MAX_SESSION_CHECKPOINT_BATCH`.
        remaining: Vec<(SessionId, u64)>,
    },
    /// The leader's lease keeper ends sessions whose TTL ran out (as [`Op::SessionRevoke`]).
    SessionExpire {
        /// The sessions, at most `MAX_SESSION_EXPIRE_BATCH`.
        sessions: Vec<SessionId>,
    },
    /// Take lock `name` through `session`: granted now, queued (`wait`), or busy.
    LockAcquire {
        /// The lock (non-empty, at most `MAX_LOCK_NAME_BYTES`).
        name: Vec<u8>,
        /// Exclusive or shared.
        mode: LockMode,
        /// The session the grant lives and dies with.
        session: SessionId,
        /// Queue behind earlier requests (`true`) or answer `Busy` at once (`false`).
        wait: bool,
    },
    /// Release the grant `token` that `session` holds on `name` (shared holders granted by one
    /// entry share a token, so the session says whose grant it is).
    LockRelease {
        /// The lock.
        name: Vec<u8>,
        /// The grant's fencing token.
        token: FencingToken,
        /// The session holding it.
        session: SessionId,
    },
    /// Cancel the calling client's pending wait on `name`: after this entry it can never be
    /// granted. Needs a registered client id.
    LockCancel {
        /// The lock.
        name: Vec<u8>,
    },
    /// Set `key` to `value` and attach the key to `session`: the session's end deletes it.
    PutEphemeral {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The session.
        session: SessionId,
    },
    // ----- lock-delay (command version 4) -----
    /// [`Op::LockAcquire`] with a lock-delay: if `session` *expires* while holding the grant,
    /// the lock is granted to no one for `lock_delay_ms` (ended by [`Op::LockDelayEnd`]).
    LockAcquireWithDelay {
        /// The lock (non-empty, at most `MAX_LOCK_NAME_BYTES`).
        name: Vec<u8>,
        /// Exclusive or shared.
        mode: LockMode,
        /// The session the grant lives and dies with.
        session: SessionId,
        /// Queue behind earlier requests (`true`) or answer `Busy` at once (`false`).
        wait: bool,
        /// The lock-delay (0..=`MAX_LOCK_DELAY_MS`; 0 is the same as [`Op::LockAcquire`]).
        lock_delay_ms: u64,
    },
    /// The leader's keeper ends the lock-delay of these locks (its clock says it passed): each
    /// grants its next waiters in this entry.
    LockDelayEnd {
        /// The locks, 1..=`MAX_LOCK_DELAY_END_BATCH`.
        names: Vec<Vec<u8>>,
    },
    // ----- elections (command version 5) -----
    /// Campaign in election `name` through `session` with `value`: leads now, or queues behind
    /// the leader and earlier campaigners until it leads (or its session ends, or it withdraws
    /// with [`Op::ElectionCancel`]). Answered like a waiting exclusive [`Op::LockAcquire`].
    ElectionCampaign {
        /// The election (non-empty, at most `MAX_LOCK_NAME_BYTES`).
        name: Vec<u8>,
        /// What the campaigner publishes while it leads (at most `MAX_ELECTION_VALUE_BYTES`).
        value: Vec<u8>,
        /// The session the leadership lives and dies with.
        session: SessionId,
    },
    /// Replace the leader's value, if `token` still leads `name`.
    ElectionProclaim {
        /// The election.
        name: Vec<u8>,
        /// The leadership's fencing token.
        token: FencingToken,
        /// The new value (at most `MAX_ELECTION_VALUE_BYTES`).
        value: Vec<u8>,
    },
    /// The leader with grant `token` steps down; the next campaigner leads.
    ElectionResign {
        /// The election.
        name: Vec<u8>,
        /// The leadership's fencing token.
        token: FencingToken,
    },
    /// Withdraw `session`'s pending campaign in `name`: after this entry it can never lead.
    /// Answered `LockCancel(AlreadyGranted {token})` if it leads already. By session rather
    /// than by client id (unlike [`Op::LockCancel`]), so a client whose id was evicted from the
    /// client table while it campaigned can still withdraw it.
    ElectionCancel {
        /// The election.
        name: Vec<u8>,
        /// The campaigning session.
        session: SessionId,
    },
    // ----- placement versions (command version 6) -----
    /// [`Op::CreateMap`] with the placement algorithm the map's tables are computed with, kept
    /// with the map (`ring.rs`). What clients send now, with [`PlacementVersion::CURRENT`]. A
    /// plain [`Op::CreateMap`] (every entry written before placement versions) makes a map of
    /// [`PlacementVersion::V1`], so replaying it computes what it computed then.
    CreateMapVersioned {
        /// Its name (1..=`MAX_MAP_NAME_BYTES` bytes).
        name: String,
        /// Partitions (fixed for the map's life).
        partitions: u32,
        /// Owners per partition, the first the primary.
        replicas: u32,
        /// How partitions rank owners.
        strategy: Strategy,
        /// The bound on an owner's load.
        load_cap: LoadCap,
        /// The placement algorithm (1..=[`PlacementVersion::CURRENT`]).
        placement: PlacementVersion,
    },
}

impl Op {
    /// A [`Op::CreateMap`]'s or [`Op::CreateMapVersioned`]'s parameters, `None` for any other
    /// op.
    pub fn map_params(&self) -> Option<MapParams> {
        match self {
            Op::CreateMap {
                partitions,
                replicas,
                strategy,
                load_cap,
                ..
            }
            | Op::CreateMapVersioned {
                partitions,
                replicas,
                strategy,
                load_cap,
                ..
            } => Some(MapParams {
                partitions: *partitions,
                replicas: *replicas,
                strategy: *strategy,
                load_cap: *load_cap,
            }),
            _ => None,
        }
    }

    /// The placement version of the map a create op makes: [`PlacementVersion::V1`] for
    /// [`Op::CreateMap`] (it predates versions), the op's own for [`Op::CreateMapVersioned`];
    /// `None` for any other op.
    pub fn map_placement(&self) -> Option<PlacementVersion> {
        match self {
            Op::CreateMap { .. } => Some(PlacementVersion::V1),
            Op::CreateMapVersioned { placement, .. } => Some(*placement),
            _ => None,
        }
    }
}

impl Command {
    /// Check every limit. The runtime calls this before proposing; the machine calls it again at
    /// apply time and answers a failing command with [`super::CommandResult::Rejected`] without
    /// changing anything, identically on every member.
    pub fn validate(&self) -> Result<()> {
        if self.client_id != UNTRACKED_CLIENT
            && self.seq == 0
            && !matches!(self.op, Op::RegisterClient)
        {
            return Err(Error::InvalidArgument(
                "seq 0 is reserved: a registered client numbers its commands from 1".into(),
            ));
        }
        match &self.op {
            Op::RegisterClient => Ok(()),
            Op::Put { key, value } => kv::validate_put(key, value),
            Op::Delete { key } => kv::validate_delete(key),
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
            } => kv::validate_cas(key, expected.as_deref(), new_value),
            Op::DeleteRange { start, end, limit } => {
                kv::validate_delete_range(start, end.as_deref(), *limit)
            }
            Op::Txn(txn) => txn.validate(),
            Op::CreateMap { name, .. } => {
                // Some: this arm is a CreateMap.
                let params = self.op.map_params().unwrap_or_default();
                ring::validate_create(name, &params)
            }
            Op::CreateMapVersioned {
                name, placement, ..
            } => {
                placement.check()?;
                // Some: this arm is a create.
                let params = self.op.map_params().unwrap_or_default();
                ring::validate_create(name, &params)
            }
            Op::JoinMap {
                name,
                owner,
                weight,
            }
            | Op::SetOwnerWeight {
                name,
                owner,
                weight,
            } => ring::validate_owner_weight(name, owner, *weight),
            Op::LeaveMap { name, owner } => ring::validate_leave(name, owner),
            Op::SessionGrant { ttl_ms } => sessions::validate_grant(*ttl_ms),
            Op::SessionRevoke { .. } => Ok(()),
            Op::SessionCheckpoint { remaining } => sessions::validate_checkpoint(remaining),
            Op::SessionExpire { sessions: ids } => sessions::validate_expire(ids),
            Op::LockAcquire { name, .. } => locks::validate_name("lock acquire", name),
            Op::LockRelease { name, .. } => locks::validate_name("lock release", name),
            Op::LockCancel { name } => {
                locks::validate_name("lock cancel", name)?;
                if self.client_id == UNTRACKED_CLIENT {
                    return Err(Error::InvalidArgument(
                        "lock cancel: needs the registered client id of the waiting request".into(),
                    ));
                }
                Ok(())
            }
            Op::PutEphemeral { key, value, .. } => kv::validate_put(key, value),
            Op::LockAcquireWithDelay {
                name,
                lock_delay_ms,
                ..
            } => {
                locks::validate_name("lock acquire", name)?;
                locks::validate_lock_delay(*lock_delay_ms)
            }
            Op::LockDelayEnd { names } => locks::validate_delay_end(names),
            Op::ElectionCampaign { name, value, .. } => {
                elect::validate_value("campaign", name, value)
            }
            Op::ElectionProclaim { name, value, .. } => {
                elect::validate_value("proclaim", name, value)
            }
            Op::ElectionResign { name, .. } => elect::validate_name("resign", name),
            Op::ElectionCancel { name, .. } => elect::validate_name("campaign cancel", name),
        }
    }

    /// The lowest command version that knows every variant this command uses (see the module
    /// docs): 1 for the key-value and client commands, 2 for the partition maps, 3 for sessions
    /// and locks, 4 for lock-delay, 5 for elections, 6 for a create with a placement version.
    pub fn min_version(&self) -> u8 {
        match &self.op {
            Op::RegisterClient
            | Op::Put { .. }
            | Op::Delete { .. }
            | Op::CompareAndSwap { .. }
            | Op::DeleteRange { .. } => 1,
            Op::Txn(txn) if !txn.uses_locks() => 1,
            Op::Txn(_) => SESSIONS_COMMAND_VERSION,
            Op::CreateMap { .. }
            | Op::JoinMap { .. }
            | Op::LeaveMap { .. }
            | Op::SetOwnerWeight { .. } => PARTITION_MAP_COMMAND_VERSION,
            Op::SessionGrant { .. }
            | Op::SessionRevoke { .. }
            | Op::SessionCheckpoint { .. }
            | Op::SessionExpire { .. }
            | Op::LockAcquire { .. }
            | Op::LockRelease { .. }
            | Op::LockCancel { .. }
            | Op::PutEphemeral { .. } => SESSIONS_COMMAND_VERSION,
            Op::LockAcquireWithDelay { .. } | Op::LockDelayEnd { .. } => LOCK_DELAY_COMMAND_VERSION,
            Op::ElectionCampaign { .. }
            | Op::ElectionProclaim { .. }
            | Op::ElectionResign { .. }
            | Op::ElectionCancel { .. } => ELECTIONS_COMMAND_VERSION,
            Op::CreateMapVersioned { .. } => PLACEMENT_VERSION_COMMAND_VERSION,
        }
    }

    /// Encode for a log entry: the version byte, then the bincode value. Fails with
    /// `InvalidArgument` if the encoding is over `MAX_COMMAND_BYTES`. Does not call
    /// [`Command::validate`] (so tests can build invalid commands); the runtime calls both.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![self.min_version()];
        encode_value_into(self, &mut out)?;
        if out.len() > MAX_COMMAND_BYTES {
            return Err(Error::InvalidArgument(format!(
                "encoded command is {} bytes, over the limit of {MAX_COMMAND_BYTES}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// Decode a log entry payload. A version byte newer than [`COMMAND_VERSION`] gives
    /// `UnsupportedVersion`; any other defect (empty, version 0, bad bincode, trailing bytes,
    /// over `MAX_COMMAND_BYTES`) gives `Corrupt`. Never panics. Does not validate limits.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(Error::corrupt(
                0,
                format!(
                    "command is {} bytes, over the limit of {MAX_COMMAND_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let Some((&version, body)) = bytes.split_first() else {
            return Err(Error::corrupt(0, "empty command"));
        };
        if version == 0 {
            return Err(Error::corrupt(0, "command version 0"));
        }
        if version > COMMAND_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "command",
                found: u32::from(version),
                supported: u32::from(COMMAND_VERSION),
            });
        }
        // The body starts after the version byte.
        let command: Command = decode_value(body).map_err(|e| {
            e.map_corrupt(|offset, reason| (offset + 1, format!("command: {reason}")))
        })?;
        if let Some(placement) = command.op.map_placement() {
            if placement > PlacementVersion::CURRENT {
                // A map this build would compute with another algorithm: refuse, like a newer
                // command version.
                placement.check()?;
            }
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_KEY_BYTES, MAX_SCAN_LIMIT, MAX_VALUE_BYTES};
    use crate::sm::kv::TxnOp;

    fn put(key: &[u8], value: &[u8]) -> Command {
        Command {
            client_id: 7,
            seq: 1,
            op: Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
        }
    }

    #[test]
    fn command_round_trips_with_version_byte() {
        let cmd = put(b"k", b"v");
        let bytes = cmd.encode().unwrap();
        assert_eq!(bytes[0], 1, "key-value commands stay version 1");
        assert_eq!(Command::decode(&bytes).unwrap(), cmd);
    }

    #[test]
    fn newer_version_is_unsupported_and_zero_version_is_corrupt() {
        let mut bytes = put(b"k", b"v").encode().unwrap();
        bytes[0] = COMMAND_VERSION + 1;
        assert!(matches!(
            Command::decode(&bytes),
            Err(Error::UnsupportedVersion { found, .. }) if found == u32::from(COMMAND_VERSION) + 1
        ));
        bytes[0] = 0;
        assert!(matches!(
            Command::decode(&bytes),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(Command::decode(&[]), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn lock_delay_commands_are_version_4_and_a_plain_acquire_stays_3() {
        let acquire = |lock_delay_ms: Option<u64>| Command {
            client_id: 7,
            seq: 1,
            op: match lock_delay_ms {
                None => Op::LockAcquire {
                    name: b"l".to_vec(),
                    mode: LockMode::Exclusive,
                    session: SessionId(3),
                    wait: true,
                },
                Some(lock_delay_ms) => Op::LockAcquireWithDelay {
                    name: b"l".to_vec(),
                    mode: LockMode::Exclusive,
                    session: SessionId(3),
                    wait: true,
                    lock_delay_ms,
                },
            },
        };
        assert_eq!(acquire(None).encode().unwrap()[0], 3);
        let delayed = acquire(Some(500));
        let bytes = delayed.encode().unwrap();
        assert_eq!(bytes[0], 4);
        assert_eq!(Command::decode(&bytes).unwrap(), delayed);
        assert!(acquire(Some(crate::limits::MAX_LOCK_DELAY_MS))
            .validate()
            .is_ok());
        let err = acquire(Some(crate::limits::MAX_LOCK_DELAY_MS + 1))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("lock_delay_ms"), "{err}");
        let end = |names: Vec<Vec<u8>>| Command {
            client_id: UNTRACKED_CLIENT,
            seq: 0,
            op: Op::LockDelayEnd { names },
        };
        assert!(end(vec![]).validate().is_err());
        assert!(end(vec![Vec::new()]).validate().is_err());
        assert!(end(vec![b"l".to_vec()]).validate().is_ok());
        assert_eq!(end(vec![b"l".to_vec()]).encode().unwrap()[0], 4);
    }

    #[test]
    fn unknown_op_tag_is_corrupt_not_panic() {
        // client_id 1, seq 1, op tag 200 (no such variant).
        let bytes = [COMMAND_VERSION, 1, 1, 200];
        assert!(matches!(
            Command::decode(&bytes),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn validate_names_what_was_wrong() {
        let err = put(b"", b"v").validate().unwrap_err().to_string();
        assert!(err.contains("put: key is empty"), "{err}");
        let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
        let err = put(&long_key, b"v").validate().unwrap_err().to_string();
        assert!(err.contains("key is 4097 bytes"), "{err}");
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        let err = put(b"k", &big).validate().unwrap_err().to_string();
        assert!(err.contains("value is"), "{err}");
        let mut zero_seq = put(b"k", b"v");
        zero_seq.seq = 0;
        assert!(zero_seq.validate().is_err());
        zero_seq.client_id = UNTRACKED_CLIENT;
        assert!(zero_seq.validate().is_ok());
    }

    #[test]
    fn validate_refuses_txn_writing_a_key_twice_but_allows_reads() {
        let txn = |success: Vec<TxnOp>| Command {
            client_id: 1,
            seq: 1,
            op: Op::Txn(Txn {
                compares: vec![],
                success,
                failure: vec![],
            }),
        };
        let k = b"k".to_vec();
        let ok = txn(vec![
            TxnOp::Put {
                key: k.clone(),
                value: vec![],
            },
            TxnOp::Get { key: k.clone() },
        ]);
        assert!(ok.validate().is_ok());
        let twice = txn(vec![
            TxnOp::Put {
                key: k.clone(),
                value: vec![],
            },
            TxnOp::Delete { key: k },
        ]);
        let err = twice.validate().unwrap_err().to_string();
        assert!(
            err.contains("txn success op 1 writes the same key as txn success op 0"),
            "{err}"
        );
    }

    #[test]
    fn validate_checks_ranges() {
        let range = |start: &[u8], end: Option<&[u8]>, limit: u32| Command {
            client_id: 1,
            seq: 1,
            op: Op::DeleteRange {
                start: start.to_vec(),
                end: end.map(<[u8]>::to_vec),
                limit,
            },
        };
        assert!(range(b"", None, 1).validate().is_ok());
        assert!(range(b"a", Some(b"b"), 10).validate().is_ok());
        assert!(range(b"b", Some(b"a"), 10).validate().is_err());
        assert!(range(b"a", Some(b"a"), 10).validate().is_err());
        assert!(range(b"a", None, 0).validate().is_err());
        assert!(range(b"a", None, MAX_SCAN_LIMIT as u32 + 1)
            .validate()
            .is_err());
    }
}
