//! Every size limit in haven, in one place.
//!
//! Limits are checked against each other at compile time (see the `const` assertions at the end
//! of this file) so that, for example, the largest legal command always fits in one log entry,
//! and the largest log entry always fits in one frame. `Config::validate()` checks configurable
//! values against these bounds once, at open.

/// Largest key, in bytes. Keys are arbitrary bytes; an empty key is invalid.
pub const MAX_KEY_BYTES: usize = 4 * 1024;

/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Most operations (compares + then-ops + else-ops) in one transaction.
pub const MAX_TXN_OPS: usize = 128;

/// Largest total of key and value bytes in one transaction.
pub const MAX_TXN_BYTES: usize = 4 * 1024 * 1024;

/// Most entries a range/prefix scan may return in one call.
pub const MAX_SCAN_LIMIT: usize = 10_000;

/// Largest encoded state-machine command (a transaction at its limits plus framing overhead).
pub const MAX_COMMAND_BYTES: usize = MAX_TXN_BYTES + 64 * 1024;

/// Largest payload of one Raft log entry.
pub const MAX_ENTRY_BYTES: usize = MAX_COMMAND_BYTES + 1024;

/// Largest payload of one codec frame (on disk and on the wire). Checked before any allocation.
pub const MAX_FRAME_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Default size of one WAL segment file.
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Smallest WAL segment a configuration may ask for.
pub const MIN_WAL_SEGMENT_BYTES: u64 = 64 * 1024;

/// Largest WAL segment a configuration may ask for, and the largest segment file recovery reads
/// (checked before the file is read into memory, whatever its header says).
pub const MAX_WAL_SEGMENT_BYTES: u64 = 1 << 40;

/// Most entries appended to the WAL in one record.
pub const MAX_WAL_BATCH_ENTRIES: usize = 4096;

/// Bytes of recent entries the WAL keeps in memory to serve reads without touching disk.
pub const DEFAULT_WAL_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Batches queued for the WAL writer before `Wal::submit` feels back-pressure.
pub const WAL_SUBMIT_QUEUE: usize = 4096;

/// Most batches the WAL writer takes in one turn (one write, one fdatasync).
pub const MAX_WAL_DRAIN_BATCHES: usize = 1024;

/// Most entry payload bytes the WAL writer takes in one turn (a larger single batch is still
/// taken alone).
pub const MAX_WAL_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// Soft cap on the entry bytes in one AppendEntries message (a single larger entry is still sent
/// alone, so this never blocks progress).
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;

/// Most entries in one AppendEntries message.
pub const MAX_APPEND_ENTRIES: usize = 4096;

/// Most AppendEntries messages in flight to one follower.
pub const MAX_INFLIGHT_MSGS: usize = 256;

/// Most entry bytes in flight to one follower.
pub const MAX_INFLIGHT_BYTES: usize = 32 * 1024 * 1024;

/// Most members (voters + learners) in one cluster.
pub const MAX_MEMBERS: usize = 16;

/// Size of one chunk of a streamed snapshot.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Most registered clients the state machine remembers for at-most-once writes. Registering one
/// more evicts the client whose last applied command is oldest (see `src/sm`). Part of the
/// replicated state: every member must use the same value, so it is a constant, not a setting.
pub const MAX_CLIENTS: usize = 8192;

/// Largest encoded command result the client table keeps for answering a retried command. A
/// larger result (a transaction that read big values) is remembered only as "applied at revision
/// R"; the client reads again to learn the outcome.
pub const MAX_RETAINED_RESULT_BYTES: usize = 16 * 1024;

/// Messages queued for one peer before senders feel back-pressure.
pub const PEER_SEND_QUEUE: usize = 4096;

/// Messages queued for one peer's bulk lane (snapshot chunks of about [`SNAPSHOT_CHUNK_BYTES`]
/// each) before `send_bulk` reports a full queue.
pub const PEER_BULK_SEND_QUEUE: usize = 8;

/// Largest payload of one handshake frame. Handshake frames arrive before the other side is
/// authenticated, so this limit, not [`MAX_FRAME_PAYLOAD_BYTES`], bounds what a stranger can make
/// a member allocate.
pub const MAX_HANDSHAKE_FRAME_BYTES: usize = 1024;

/// Inbound connections that may be in the handshake at once; more are closed at accept.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// Most remote-client connections one member serves at once.
pub const MAX_CLIENT_CONNECTIONS: usize = 1024;

/// Most requests in flight on one remote-client connection.
pub const MAX_CLIENT_INFLIGHT_REQUESTS: usize = 1024;

/// Proposals waiting for the driver before callers feel back-pressure.
pub const MAX_PENDING_PROPOSALS: usize = 65_536;

const _: () = assert!(MAX_KEY_BYTES + MAX_VALUE_BYTES <= MAX_TXN_BYTES);
const _: () = assert!(MAX_TXN_BYTES < MAX_COMMAND_BYTES);
const _: () = assert!(MAX_COMMAND_BYTES < MAX_ENTRY_BYTES);
// One AppendEntries message carrying one maximal entry (or one snapshot chunk) must fit a frame.
const _: () = assert!(MAX_ENTRY_BYTES + 64 * 1024 <= MAX_FRAME_PAYLOAD_BYTES);
const _: () = assert!(MAX_APPEND_BYTES + MAX_ENTRY_BYTES <= MAX_FRAME_PAYLOAD_BYTES);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES + 64 * 1024 <= MAX_FRAME_PAYLOAD_BYTES);
const _: () = assert!(MAX_APPEND_BYTES <= MAX_INFLIGHT_BYTES);
// A WAL segment must hold at least one maximal record.
const _: () = assert!(MAX_FRAME_PAYLOAD_BYTES as u64 + 64 <= DEFAULT_WAL_SEGMENT_BYTES);
// The client table (at most MAX_CLIENTS retained results) stays small next to the data it guards.
const _: () = assert!(MAX_CLIENTS * MAX_RETAINED_RESULT_BYTES <= 128 * 1024 * 1024);
const _: () = assert!(MAX_RETAINED_RESULT_BYTES < MAX_COMMAND_BYTES);
const _: () = assert!(MIN_WAL_SEGMENT_BYTES <= DEFAULT_WAL_SEGMENT_BYTES);
const _: () = assert!(DEFAULT_WAL_SEGMENT_BYTES <= MAX_WAL_SEGMENT_BYTES);
const _: () = assert!(MAX_HANDSHAKE_FRAME_BYTES < MAX_FRAME_PAYLOAD_BYTES);
const _: () = assert!(PEER_BULK_SEND_QUEUE * SNAPSHOT_CHUNK_BYTES <= MAX_INFLIGHT_BYTES);
// A turn never waits for more batches than can be queued, and always fits a maximal entry.
const _: () = assert!(MAX_WAL_DRAIN_BATCHES <= WAL_SUBMIT_QUEUE);
const _: () = assert!(MAX_ENTRY_BYTES <= MAX_WAL_DRAIN_BYTES);
