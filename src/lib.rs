//! haven: an embeddable, replicated, fault-tolerant storage engine.
//!
//! A process links haven and becomes a member of a 3-, 5- or 7-member cluster. Members keep one
//! replicated state by Raft over TCP. See `docs/ARCHITECTURE.md` for the layers and
//! `docs/FORMAT.md` for every byte haven writes.
//!
//! A single-member cluster in a temporary directory, written to and read through the client
//! API (the same [`Client`] talks to a remote cluster with [`Client::connect`]):
//!
//! ```
//! use haven::net::ClusterSecret;
//! use haven::{ClusterId, Config, Node, NodeId};
//!
//! # fn main() -> haven::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let listen = "127.0.0.1:0".parse().unwrap();
//! let members = [(NodeId(1), "127.0.0.1:1".to_string())].into();
//! let secret = ClusterSecret::new(*b"sixteen or more bytes")?;
//! let node = Node::open(Config::new(NodeId(1), ClusterId(1), dir.path(), listen, members, secret))?;
//!
//! let client = node.client();
//! let put = client.put(b"config/mode", b"fast")?;
//! let got = client.get(b"config/mode")?.expect("just written");
//! assert_eq!(got.value, b"fast");
//! assert_eq!(got.meta.mod_revision, put.revision);
//! // Expected outcomes are values: a compare-and-swap that loses tells what it found.
//! let lost = client.compare_and_swap(b"config/mode", Some(b"slow"), b"safe")?;
//! assert!(matches!(lost, haven::sm::CasResult::Failed { .. }));
//! node.shutdown()?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod client;
pub mod codec;
pub mod datadir;
pub mod error;
pub mod ffi;
mod fs;
pub mod histogram;
pub mod limits;
pub mod logging;
pub mod net;
pub mod node;
pub mod observe;
mod park;
pub mod proto;
pub mod raft;
pub mod rng;
pub mod sm;
pub mod snapshots;
pub mod types;
pub mod wal;

pub use client::{Client, ClientOptions, ReadMode};
pub use error::{Error, ErrorCode, Result};
pub use node::{Config, Node};
pub use types::{ClusterId, Entry, EntryKind, GroupId, HardState, LogIndex, NodeId, Term};

/// README.md's Rust example, compiled and run by `cargo test --doc` so the user's guide cannot
/// drift from the API (its shell and text blocks are not Rust and are not run).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
