//! The Raft consensus core: pure (no IO, no clock, no threads, injected randomness).
//!
//! [`Raft`] is a deterministic state machine. Its inputs are [`Raft::step`] (a message from a
//! peer), [`Raft::tick`] (one unit of logical time), [`Raft::propose`],
//! [`Raft::read_index`], [`Raft::transfer_leadership`], [`Raft::change_membership`] and
//! [`Raft::report_snapshot`]; its output is a [`Ready`]. Given the same inputs and the same
//! [`Config::seed`], it produces the same outputs: this is what lets the simulator
//! (`tests/sim`) replay any failure from its seed. Nothing here imports
//! `std::{fs, net, thread, time}`.
//!
//! # The Ready / advance contract
//!
//! The runtime loops: feed inputs, then, while [`Raft::has_ready`], take [`Raft::ready`] and
//! act on it. A `Ready` separates what may happen at once from what must wait for the disk:
//!
//! - **(a) persist**: `hard_state`, `entries`, `snapshot`. Writes are issued in `Ready` order.
//!   A batch of entries whose first index is at or below the last stored index replaces the
//!   stored suffix from there. A `snapshot` replaces the whole log.
//! - **(b) `messages`**: send now, in parallel with (a). This is how the leader replicates
//!   while its own write is in flight; the leader counts itself toward a commit quorum only
//!   once its own write is acknowledged. Heartbeats never wait for the disk.
//! - **(c) `persisted_messages`**: send only after (a) of this `Ready` and of every earlier one
//!   is durable: vote grants, vote requests, append responses — anything that promises
//!   persisted state.
//! - **(d) `committed_entries`**: apply in order. Only locally durable entries are handed out,
//!   so they may be applied at once, even before this `Ready`'s (a) completes.
//! - **(e) `read_states`**: ReadIndex results; serve each read once the state machine has
//!   applied its index.
//! - **(f) `soft_state`**: role/leader changes, for routing client requests.
//! - **(g) `rejected`**: peer messages dropped because no correct member could have sent
//!   them (see [`RejectReason`]); log them. [`Raft::rejected_messages`] counts them per peer.
//!
//! Time: before each input, the runtime calls [`Raft::tick`] for every tick its monotonic
//! clock owes the core. Lease reads are judged by the ticks the core has seen; a runtime that
//! handles a backlog (after a pause) before the missed ticks serves reads from an expired lease.
//!
//! Acknowledgements:
//! - [`Raft::advance_persisted`]`(ready.number)` once (a) of that `Ready` — and of every
//!   earlier one — is durable. The runtime may take further `Ready`s while writes are in
//!   flight (pipelining, group commit: one fdatasync may cover many `Ready`s, then one ack
//!   with the highest number). Acks for entries overwritten in the meantime are recognised by
//!   (index, term) and ignored. A `Ready` with nothing to persist may be acknowledged as soon
//!   as everything before it is.
//! - [`Raft::advance_applied`]`(index)` once the state machine applied up to `index`.
//!
//! After a method returns [`RaftError::Storage`] the core's state is not trustworthy: the
//! runtime must stop the node.
//!
//! # Storage
//!
//! The core reads durable entries through [`LogStore`] (the runtime implements it over the
//! WAL) and keeps unpersisted ones in memory. It never writes storage itself. Snapshots: the
//! runtime takes them (at an applied index), records their metadata in the store and compacts
//! the log up to them; a follower that needs compacted entries gets a [`MessageBody::Snapshot`]
//! carrying only [`SnapshotMeta`]. The runtime intercepts that message, streams the data
//! itself, reports the outcome to the leader with [`Raft::report_snapshot`], and on the
//! follower steps the message into the core once the data is durable there. The core then
//! returns it in [`Ready::snapshot`] — unless the follower's log already covers it (then the
//! data is not needed and `Ready::snapshot` stays `None`).
//!
//! # Safety rules implemented here (Raft paper / Ongaro's dissertation)
//!
//! Elections with randomized timeouts in `[election_ticks, 2 * election_ticks)`, PreVote and
//! CheckQuorum (on by default); the up-to-date check on votes (5.4.1); a no-op at the start of
//! each term and commit only by counting replicas of current-term entries (5.4.2); log
//! matching with fast backtracking (5.3); ReadIndex reads after the term's no-op commits, with
//! opt-in lease reads ([`Config::lease_read_ticks`]); leadership transfer; learners;
//! single-server membership changes, one at a time, effective when appended, and refused until
//! the previous one and the leader's no-op are committed.
//!
//! # Example
//!
//! A single-node cluster elects itself and commits a proposal:
//!
//! ```
//! use haven::raft::{Config, MemLogStore, Membership, Raft, Role, LogStore};
//! use haven::{LogIndex, NodeId};
//!
//! let store = MemLogStore::new(Membership::with_voters([(NodeId(1), "127.0.0.1:7001")]));
//! let mut raft = Raft::new(Config::new(NodeId(1), 42), store, LogIndex(0)).unwrap();
//! while raft.role() != Role::Leader {
//!     raft.tick().unwrap();
//! }
//! let proposed = raft.propose(vec![b"hello".to_vec()]).unwrap();
//! let mut applied = Vec::new();
//! while raft.has_ready() {
//!     let ready = raft.ready().unwrap();
//!     // (a) persist, then acknowledge.
//!     if let Some(hs) = ready.hard_state {
//!         raft.store_mut().set_hard_state(hs);
//!     }
//!     raft.store_mut().append(&ready.entries);
//!     raft.advance_persisted(ready.number).unwrap();
//!     // (d) apply.
//!     for e in &ready.committed_entries {
//!         applied.push(e.data.clone());
//!         raft.advance_applied(e.index);
//!     }
//! }
//! assert_eq!(raft.commit_index(), proposed.last);
//! assert_eq!(applied.last().unwrap(), b"hello");
//! assert_eq!(raft.store().last_index(), proposed.last);
//! ```

mod config;
mod core;
mod log;
mod membership;
mod message;
mod progress;
mod reject;
pub mod rng;
mod storage;

pub use self::config::{Config, InjectedBug};
pub use self::core::{Proposed, Raft, RaftError, ReadState, Ready, Role, SoftState};
pub use self::membership::{Membership, MembershipChange, MEMBERSHIP_FORMAT_VERSION};
pub use self::message::{Message, MessageBody, SnapshotMeta};
pub use self::progress::ReplicationState;
pub use self::reject::{RejectReason, Rejection, MAX_TERM_OR_INDEX};
pub use self::storage::{LogStore, MemLogStore, StorageError};
