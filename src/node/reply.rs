//! Where the answer to a request goes: an in-process caller, a remote client's connection, or
//! the follower that forwarded the request. Whichever thread learns the outcome (the driver, the
//! apply thread) answers through a [`Reply`], without knowing which kind it is.

use super::peer_message::PeerMessage;
use super::NodeTransport;
use crate::error::{Error, Result};
use crate::net::ClientHandle;
use crate::proto::{ClientResponse, Response, WireError};
use crate::types::NodeId;
use crossbeam_channel::Sender;
use std::sync::Arc;

/// The destination of one answer. Answering consumes it, so a request is answered once.
pub(crate) enum Reply {
    /// A caller in this process waiting on a channel.
    Local(Sender<Result<Response>>),
    /// A remote client's request on one of its connections.
    Remote {
        conn: ClientHandle<ClientResponse>,
        request_id: u64,
    },
    /// A follower's forwarded request: the answer goes back as a peer message.
    Forwarded {
        transport: Arc<NodeTransport>,
        to: NodeId,
        id: u64,
    },
    /// A command the runtime proposed itself (the lease keeper's expiries and checkpoints):
    /// nobody waits for the answer.
    Discard,
}

impl Reply {
    /// Deliver the outcome. Never blocks: a caller that gave up, a closed connection or an
    /// unreachable follower simply does not get it (they time out on their side).
    pub(crate) fn send(self, result: Result<Response>) {
        match self {
            Reply::Local(tx) => {
                let _ = tx.try_send(result);
            }
            Reply::Remote { conn, request_id } => {
                let response: ClientResponse = result.map_err(|e| WireError::from(&e));
                conn.respond(request_id, response);
            }
            Reply::Forwarded { transport, to, id } => {
                let response: ClientResponse = result.map_err(|e| WireError::from(&e));
                transport.send(to, PeerMessage::ForwardReply { id, response });
            }
            Reply::Discard => {}
        }
    }

    /// Answer with an error.
    pub(crate) fn fail(self, error: Error) {
        self.send(Err(error));
    }

    /// Whether this answer goes to a follower (a request forwarded once is never forwarded
    /// again, so a stale leader hint cannot make requests circle).
    pub(crate) fn is_forwarded(&self) -> bool {
        matches!(self, Reply::Forwarded { .. })
    }
}
