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

// ----- queues and batches of the runtime (`src/node`, `src/net`) -----
//
// Every channel between haven's threads is bounded by one of these, or is proven bounded by
// them below. The driver's channels: inputs and remote-client requests
// ([`DRIVER_INPUT_QUEUE`]), peer messages ([`DRIVER_PEER_QUEUE`]), the apply thread's tasks
// ([`APPLY_QUEUE`]), the snapshot-transfer thread's tasks ([`TRANSFER_QUEUE`]).
//
// The one unbounded channel is the driver's internal queue (WAL completions, the apply and
// transfer threads' reports). It cannot take back-pressure: the WAL writer's completion
// callback posts to it, and the driver may be waiting in `Wal::submit` for that writer (a
// cycle). Its size is bounded anyway, because every message on it answers a task the driver
// handed out, at most two per task: a WAL completion per submitted write (at most
// [`WAL_SUBMIT_QUEUE`] queued plus [`MAX_WAL_DRAIN_BATCHES`] being written, since
// `Wal::submit` waits beyond that), an `Applied` and perhaps a `SnapshotTaken` per apply task
// (at most [`APPLY_QUEUE`] queued plus [`MAX_APPLY_MERGED_TASKS`] being applied), a fetch
// outcome per transfer task (at most [`TRANSFER_QUEUE`]), and one `Fatal` per thread. The
// driver takes internal messages before any other input, so the queue holds at most the
// answers to tasks outstanding: [`MAX_DRIVER_INTERNAL_QUEUE`] (below; asserted, not enforced).

/// Requests queued for the driver (local handles, and remote-client requests from the
/// transport) before callers feel back-pressure.
pub const DRIVER_INPUT_QUEUE: usize = 16_384;

/// Peer messages queued for the driver before the transport's readers wait.
pub const DRIVER_PEER_QUEUE: usize = 16_384;

/// Longest a leader holds a commit notice (an AppendEntries without entries) for a follower,
/// waiting for entries that would carry the news instead (`node/driver/commit_notices.rs`):
/// what an idle follower may learn of a commit late.
pub const COMMIT_NOTICE_HOLD: std::time::Duration = std::time::Duration::from_micros(1000);

/// Most inputs the driver handles before it proposes, reads and takes a `Ready` (keeps the
/// batch and the latency of one iteration bounded).
pub const MAX_DRIVER_INPUTS_PER_ITERATION: usize = 4096;

/// Tasks queued for the apply thread (committed entries, reads, restores) before the driver
/// waits for it. The apply thread never waits for the driver, so the wait always ends; a driver
/// that waits here is one whose apply thread is this far behind, and stopping it from running
/// further ahead is what bounds the memory of the committed-but-unapplied backlog.
pub const APPLY_QUEUE: usize = 16_384;

/// Tasks queued for the snapshot-transfer thread. The driver never waits for it: a task that
/// finds the queue full is dropped, and every transfer task is retried by its sender (a chunk
/// or a request is asked for again after the transfer timeout, a snapshot offer comes again
/// with the leader's next attempt, the next compaction prunes what a dropped prune left).
pub const TRANSFER_QUEUE: usize = 256;

/// Bound on the driver's internal (unbounded) queue, from the argument above.
pub const MAX_DRIVER_INTERNAL_QUEUE: usize = WAL_SUBMIT_QUEUE
    + MAX_WAL_DRAIN_BATCHES
    + 2 * (APPLY_QUEUE + MAX_APPLY_MERGED_TASKS)
    + TRANSFER_QUEUE
    + 8;

/// The apply thread flushes the state machine's pending writes to sled once this many keys are
/// pending...
pub const APPLY_FLUSH_PENDING_WRITES: usize = 16_384;

/// ... or this many key and value bytes...
pub const APPLY_FLUSH_PENDING_BYTES: usize = 8 << 20;

/// ... or once the oldest has waited this long (milliseconds). Measured on the development
/// VM: one sled batch has a fixed cost of tens of microseconds, and inserts get slower as a
/// batch grows (at 5 s / 85k keys a flush took 2 s and members grew to 650 MiB), so windows
/// stay short. After a crash the entries of the lost window are replayed from the log, which
/// always holds them (it is never compacted past a snapshot, and snapshots include the
/// pending writes).
pub const APPLY_FLUSH_PENDING_AFTER_MS: u64 = 100;

/// Most apply tasks merged into one state-machine batch.
pub const MAX_APPLY_MERGED_TASKS: usize = 64;

/// Most entry bytes merged into one state-machine batch (a larger single task is still
/// applied alone).
pub const MAX_APPLY_MERGED_BYTES: usize = 16 << 20;

/// Threads of a member's HTTP endpoint that answer requests (one more accepts connections).
/// Scrapes are small and rare; two keep one slow client from blocking a scrape.
pub const HTTP_WORKERS: usize = 2;

/// Accepted HTTP connections waiting for a worker; past this the endpoint answers 503 at once.
pub const HTTP_QUEUE: usize = 16;

/// Longest request head (request line and headers) the HTTP endpoint reads.
pub const MAX_HTTP_REQUEST_HEAD_BYTES: usize = 8 * 1024;

/// How long the HTTP endpoint waits for a request's bytes, or to write its answer
/// (milliseconds): a slow client holds a worker at most this long per read or write.
pub const HTTP_IO_TIMEOUT_MS: u64 = 2_000;

/// A peer lane's sender stops adding queued messages to one socket write once it holds this
/// many bytes...
pub const MAX_PEER_BATCH_BYTES: usize = 256 * 1024;

/// ... or this many messages.
pub const MAX_PEER_BATCH_MESSAGES: usize = 1024;

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
// One driver iteration takes no more inputs than a queue holds, and its stale reads (one apply
// task each) never fill the apply queue on their own.
const _: () = assert!(MAX_DRIVER_INPUTS_PER_ITERATION <= DRIVER_INPUT_QUEUE);
const _: () = assert!(MAX_DRIVER_INPUTS_PER_ITERATION <= DRIVER_PEER_QUEUE);
const _: () = assert!(MAX_DRIVER_INPUTS_PER_ITERATION <= APPLY_QUEUE);
// A merged apply batch takes at least one maximal entry, and no more tasks than can be queued.
const _: () = assert!(MAX_ENTRY_BYTES <= MAX_APPLY_MERGED_BYTES);
const _: () = assert!(MAX_APPLY_MERGED_TASKS <= APPLY_QUEUE);
// The internal queue's bound stays small next to the memory it guards (a few MiB of slots).
const _: () = assert!(MAX_DRIVER_INTERNAL_QUEUE <= 64 * 1024);
// A peer write batch takes no more than one lane can queue, and is small next to a frame.
const _: () = assert!(MAX_PEER_BATCH_MESSAGES <= PEER_SEND_QUEUE);
const _: () = assert!(MAX_PEER_BATCH_BYTES <= MAX_FRAME_PAYLOAD_BYTES);

/// Most partitions in one partition map (`src/sm/placement`).
pub const MAX_MAP_PARTITIONS: u32 = 1 << 20;

/// Most replicas per partition in one partition map.
pub const MAX_MAP_REPLICAS: u32 = 8;

/// Most owners in one partition map.
pub const MAX_MAP_OWNERS: usize = 4096;

/// Largest weight of one partition-map owner.
pub const MAX_OWNER_WEIGHT: u32 = 65_535;

/// Longest owner id of a partition map, in bytes.
pub const MAX_OWNER_ID_BYTES: usize = 256;

/// Most virtual nodes on one ring (all owners' weights times virtual nodes per unit weight).
pub const MAX_RING_VNODES: u64 = 1 << 22;

// A map's table (partitions x replicas owner indices of 4 bytes) stays within 32 MiB.
const _: () = assert!(MAX_MAP_PARTITIONS as usize * MAX_MAP_REPLICAS as usize * 4 <= 32 << 20);
// Owner indices fit the table's u32 slots with room for the vacancy marker.
const _: () = assert!(MAX_MAP_OWNERS < u32::MAX as usize);
// The endpoint has a worker, a queue, and room for an ordinary request head (a few hundred bytes).
const _: () = assert!(MAX_HTTP_REQUEST_HEAD_BYTES >= 1024 && HTTP_WORKERS >= 1 && HTTP_QUEUE >= 1);

/// Most partition maps in the replicated state.
pub const MAX_MAPS: usize = 256;

/// Longest partition-map name, in bytes (its key in the state is `r` ‖ length byte ‖ name).
pub const MAX_MAP_NAME_BYTES: usize = 128;

/// Most slots (partitions x replicas) of a replicated partition map. Bounds its stored table and
/// the moves of one change (at most one per slot), so that each is one state record that fits
/// a snapshot frame next to a chunk, and a read of them fits a client frame.
pub const MAX_MAP_SLOTS: u64 = 1 << 18;

/// How many epochs of moves a replicated map keeps: `moves(since)` reaches back this far;
/// older gets a `Compacted` answer.
pub const MAX_MAP_MOVES_EPOCHS: u64 = 32;

/// Most slot moves one `moves` read returns (it stops after the epoch that reaches this, and
/// the caller asks again from there); always at least one epoch.
pub const MAX_MOVES_PER_READ: u64 = MAX_MAP_SLOTS;

// The map name's length fits its one length byte in the key.
const _: () = assert!(MAX_MAP_NAME_BYTES <= u8::MAX as usize);
// A stored table (<= 3 bytes per slot varint, <= 4 + 256 bytes per owner) and one epoch's moves
// (<= 5 + 1 + 3 + 3 bytes per slot, plus an owner dictionary) each fit a snapshot frame beside a
// full chunk; a moves read (two epochs at most) and a table read fit a client frame.
const _: () = assert!(
    (MAX_MAP_SLOTS as usize) * 12 + MAX_MAP_OWNERS * (MAX_OWNER_ID_BYTES + 8) + 64 * 1024
        <= (MAX_FRAME_PAYLOAD_BYTES - SNAPSHOT_CHUNK_BYTES) / 2
);
const _: () = assert!(MAX_MOVES_PER_READ <= MAX_MAP_SLOTS);

/// Default number of recent events (changes of user keys) a member keeps for watches that start
/// in the past (`Config::watch_window_events`). A watch from before the window is ended with
/// `Compacted`.
pub const DEFAULT_WATCH_WINDOW_EVENTS: usize = 100_000;

/// Most events a member may be configured to keep for watches.
pub const MAX_WATCH_WINDOW_EVENTS: usize = 10_000_000;

/// Key and value bytes of the recent events a member keeps at most, whatever the event count
/// (the oldest revisions go first).
pub const WATCH_WINDOW_BYTES: usize = 256 << 20;

/// Default number of events one watcher may have queued, not yet taken by its client
/// (`Config::watch_buffer_events`); a watcher that falls further behind is ended with
/// `Overflow`.
pub const DEFAULT_WATCH_BUFFER_EVENTS: usize = 65_536;

/// Most events one watcher's buffer may be configured to hold.
pub const MAX_WATCH_BUFFER_EVENTS: usize = 1 << 20;

/// Most watches open at once on one member (all clients together).
pub const MAX_WATCHES: usize = 4096;

/// Batches of applied entries queued from the apply thread to the watch thread. The apply
/// thread never waits for it: a batch that finds it full is dropped, and the watch thread ends
/// the watches that needed it with `Compacted` (never a silent gap).
pub const WATCH_HUB_QUEUE: usize = 4096;

/// Default interval of progress notifications on an idle watch
/// (`Config::watch_progress_interval_ms`).
pub const DEFAULT_WATCH_PROGRESS_INTERVAL_MS: u64 = 1000;

/// Most events the member puts in one pushed frame (several revisions of one watch travel in one
/// frame when they are ready together; a revision is never split).
pub const MAX_WATCH_PUSH_EVENTS: usize = 1024;

/// Bytes of pushed frames one client connection may have queued; a watch whose push finds it
/// full is ended with `Overflow`.
pub const MAX_CLIENT_PUSH_QUEUE_BYTES: usize = 32 << 20;

const _: () = assert!(DEFAULT_WATCH_WINDOW_EVENTS <= MAX_WATCH_WINDOW_EVENTS);
const _: () = assert!(DEFAULT_WATCH_BUFFER_EVENTS <= MAX_WATCH_BUFFER_EVENTS);
// A pushed frame of MAX_WATCH_PUSH_EVENTS events fits a frame only with small events; a frame
// is cut earlier by bytes (the push queue holds at least one maximal frame).
const _: () = assert!(MAX_FRAME_PAYLOAD_BYTES <= MAX_CLIENT_PUSH_QUEUE_BYTES);

// ----- sessions and locks (`src/sm/sessions.rs`, `src/sm/locks.rs`, `src/node/sessions.rs`) -----
//
// Part of the replicated state (every member must apply the same command the same way), so
// they are constants, not settings.

/// Shortest session TTL a grant may ask for. At least 1.5x the longest election timeout a
/// configuration may have (`Config::validate` checks it: 2 x `election_timeout_ms` x 1.5), so a
/// session survives one election without a keepalive reaching the new leader.
pub const MIN_SESSION_TTL_MS: u64 = 1_000;

/// Longest session TTL a grant may ask for (one day).
pub const MAX_SESSION_TTL_MS: u64 = 24 * 60 * 60 * 1_000;

/// Most sessions at once; a grant beyond it is refused (`Rejected`).
pub const MAX_SESSIONS: usize = 16_384;

/// The leader checkpoints every session's remaining TTL into the log once per this interval
/// (milliseconds), so a new leader re-arms a session from at most this long ago. A silent
/// session dies within TTL + this + an election, however many elections happen.
pub const SESSION_CHECKPOINT_INTERVAL_MS: u64 = 1_000;

/// Most sessions named in one `SessionCheckpoint` entry (more take several entries).
pub const MAX_SESSION_CHECKPOINT_BATCH: usize = 4_096;

/// Most sessions ended by one `SessionExpire` entry (each end may delete keys and release
/// locks: the entry's work is bounded by this times the per-session limits below).
pub const MAX_SESSION_EXPIRE_BATCH: usize = 64;

/// The leader proposes at most one `SessionExpire` entry per this interval (milliseconds), so
/// sessions that lapse together (renewed together, or after a partition healed) end in a
/// steady trickle rather than a storm of entries.
pub const SESSION_EXPIRE_MIN_INTERVAL_MS: u64 = 50;

/// Most ephemeral keys attached to one session.
pub const MAX_SESSION_KEYS: usize = 4_096;

/// Most locks one session holds or waits for at once.
pub const MAX_SESSION_LOCKS: usize = 1_024;

/// A queued lock acquire's answer is held on the member that proposed it until the wait ends,
/// or at most this long (milliseconds); then it is answered `Queued` and the client asks again
/// (the same command: the state machine answers a retry without queueing it twice).
pub const LOCK_WAIT_HOLD_MS: u64 = 5_000;

/// Most lock acquires whose answer one member holds; beyond it an acquire is answered `Queued`
/// at once (the client asks again).
pub const MAX_HELD_LOCK_WAITS: usize = 65_536;

/// Longest lock name, in bytes (an empty name is invalid).
pub const MAX_LOCK_NAME_BYTES: usize = 1_024;

/// Most holders plus waiters of one lock.
pub const MAX_LOCK_WAITERS: usize = 1_024;

/// Longest lock-delay an acquire may ask for (milliseconds): after the holder's session
/// *expires*, the lock is granted to no one for that long (Chubby's lock-delay; Chubby caps it
/// at a minute too). The default is 0 (no delay).
pub const MAX_LOCK_DELAY_MS: u64 = 60_000;

/// Most locks whose delay one `LockDelayEnd` entry ends (each end may promote waiters: the
/// entry's work is bounded by this times `MAX_LOCK_WAITERS`).
pub const MAX_LOCK_DELAY_END_BATCH: usize = 64;

/// Longest value a campaigner publishes in an election (elections share the lock table's
/// limits: name length, campaigners per election, elections per session).
pub const MAX_ELECTION_VALUE_BYTES: usize = 4_096;

// An election's record (every campaigner's value) fits comfortably in one frame.
const _: () = assert!(MAX_LOCK_WAITERS * (MAX_ELECTION_VALUE_BYTES + 64) <= 8 * 1024 * 1024);

// A checkpoint entry (about 18 bytes per session at most) fits one command.
const _: () = assert!(MAX_SESSION_CHECKPOINT_BATCH * 18 + 64 <= MAX_COMMAND_BYTES);
const _: () = assert!(MIN_SESSION_TTL_MS <= MAX_SESSION_TTL_MS);
const _: () = assert!(SESSION_EXPIRE_MIN_INTERVAL_MS < MIN_SESSION_TTL_MS);
const _: () = assert!(SESSION_CHECKPOINT_INTERVAL_MS <= MIN_SESSION_TTL_MS);
// One expiry entry's deletes stay within what one apply batch handles comfortably.
const _: () = assert!(MAX_SESSION_EXPIRE_BATCH * MAX_SESSION_KEYS <= 1 << 18);
// A lock-delay never outlives what a keeper re-arms within a sane bound, and a delay-end
// entry naming the longest names fits one command.
const _: () = assert!(MAX_LOCK_DELAY_MS <= MAX_SESSION_TTL_MS);
const _: () =
    assert!(MAX_LOCK_DELAY_END_BATCH * (MAX_LOCK_NAME_BYTES + 10) + 64 <= MAX_COMMAND_BYTES);
