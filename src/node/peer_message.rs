//! What members send each other over the transport (`docs/FORMAT.md`, "Peer messages").

use crate::proto::{ClientResponse, Request};
use crate::raft::Message;
use crate::types::{LogIndex, Term};
use bincode::{Decode, Encode};

/// One message between members. Raft messages and the small snapshot-transfer control messages
/// go on the control lane; snapshot chunks on the bulk lane.
#[derive(Debug, Clone, Encode, Decode)]
pub enum PeerMessage {
    /// A Raft message for the peer's core.
    Raft(Message),
    /// A follower forwards a client request to the leader it knows.
    Forward {
        /// The follower's id for the request (echoed in the reply).
        id: u64,
        /// How long the leader may work on it, in milliseconds.
        timeout_ms: u32,
        /// The request.
        request: Request,
    },
    /// The leader's answer to a [`PeerMessage::Forward`].
    ForwardReply {
        /// The follower's id for the request.
        id: u64,
        /// The answer.
        response: ClientResponse,
    },
    /// A follower asks the leader for the snapshot bytes at `offset` of the snapshot
    /// (`index`, `term`) the leader told it to install.
    SnapshotRequest {
        /// The snapshot's last included index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// Byte offset of the next chunk.
        offset: u64,
    },
    /// The leader's answer to a [`PeerMessage::SnapshotRequest`], on the bulk lane.
    SnapshotChunk(SnapshotChunk),
    /// The leader no longer has that snapshot (a newer one replaced it): give up; the leader
    /// will offer the newer one.
    SnapshotGone {
        /// The snapshot's last included index.
        index: LogIndex,
        /// Its term.
        term: Term,
    },
    /// A follower reports the outcome of a snapshot transfer, so the leader can tell its core
    /// (`Raft::report_snapshot`).
    SnapshotDone {
        /// The snapshot's last included index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// Whether the follower stored and verified it.
        ok: bool,
    },
}

/// One chunk of a snapshot file (defined in `proto`, which a client's backup reads too).
pub use crate::proto::SnapshotChunk;

impl PeerMessage {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            PeerMessage::Raft(m) => m.body.name(),
            PeerMessage::Forward { .. } => "forward",
            PeerMessage::ForwardReply { .. } => "forward_reply",
            PeerMessage::SnapshotRequest { .. } => "snapshot_request",
            PeerMessage::SnapshotChunk(_) => "snapshot_chunk",
            PeerMessage::SnapshotGone { .. } => "snapshot_gone",
            PeerMessage::SnapshotDone { .. } => "snapshot_done",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message as it was declared before `SnapshotChunk` became a struct.
    #[derive(Encode)]
    #[allow(dead_code)]
    enum Before {
        Raft(Message),
        Forward,
        ForwardReply,
        SnapshotRequest,
        SnapshotChunk {
            index: LogIndex,
            term: Term,
            sha256: [u8; 32],
            offset: u64,
            data: Vec<u8>,
            done: bool,
        },
    }

    #[test]
    fn a_snapshot_chunk_encodes_as_the_struct_variant_did() {
        let chunk = SnapshotChunk {
            index: LogIndex(7),
            term: Term(3),
            sha256: [0xab; 32],
            offset: 1 << 20,
            data: vec![1, 2, 3],
            done: true,
        };
        let config = bincode::config::standard();
        let now = bincode::encode_to_vec(PeerMessage::SnapshotChunk(chunk.clone()), config);
        let before = bincode::encode_to_vec(
            Before::SnapshotChunk {
                index: chunk.index,
                term: chunk.term,
                sha256: chunk.sha256,
                offset: chunk.offset,
                data: chunk.data,
                done: chunk.done,
            },
            config,
        );
        assert_eq!(now.unwrap(), before.unwrap());
    }
}
