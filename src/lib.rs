//! haven: an embeddable, replicated, fault-tolerant storage engine.
//!
//! A process links haven and becomes a member of a 3-, 5- or 7-member cluster. Members keep one
//! replicated state by Raft over TCP. See `docs/ARCHITECTURE.md` for the layers and
//! `docs/FORMAT.md` for every byte haven writes.
#![deny(missing_docs)]

pub mod client;
pub mod codec;
pub mod datadir;
pub mod error;
pub mod limits;
pub mod log;
pub mod net;
pub mod node;
pub mod raft;
pub mod sm;
pub mod types;
pub mod wal;

pub use client::{Client, ClientOptions, ReadMode};
pub use error::{Error, ErrorCode, Result};
pub use node::{Config, Node};
pub use types::{ClusterId, Entry, EntryKind, GroupId, HardState, LogIndex, NodeId, Term};
