//! A remote-client connection as the runtime sees it: the [`ClientEvent`]s it delivers and the
//! [`ClientHandle`] that answers them, from any thread, without blocking on the network.

use super::tls::Stream;
use super::wire::{self, kind};
use super::Message;
use crate::codec;
use crate::limits::{MAX_CLIENT_INFLIGHT_REQUESTS, MAX_CLIENT_PUSH_QUEUE_BYTES};
use crate::park::ParkedSender;
use crossbeam_channel::TrySendError;
use std::collections::VecDeque;
use std::fmt;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a remote-client connection delivers to the runtime.
pub enum ClientEvent<Req, Resp> {
    /// A request. Answer it with `conn.respond(request_id, response)`, from any thread, in any
    /// order.
    Request {
        /// The connection it came on.
        conn: ClientHandle<Resp>,
        /// The client's id for this request (unique per connection while in flight).
        request_id: u64,
        /// The request.
        request: Req,
    },
    /// A request frame whose payload does not decode, but whose leading fields do: the request
    /// id and the sender's protocol version (the first field of every request). A member answers
    /// a newer version than it speaks with `UnsupportedVersion` (the request may use what this
    /// build does not know) and closes the connection otherwise (no correct client of a version
    /// it speaks sends it): see [`ClientHandle::close_for`].
    Unreadable {
        /// The connection it came on.
        conn: ClientHandle<Resp>,
        /// The client's id for this request.
        request_id: u64,
        /// The protocol version the client sent it with.
        version: u32,
        /// Why the request did not decode.
        error: String,
    },
    /// The connection closed; it delivers nothing more and `respond` on it returns false. Sent
    /// after every request of the connection.
    Closed {
        /// The connection that closed.
        conn: ClientHandle<Resp>,
    },
}

impl<Req: fmt::Debug, Resp> fmt::Debug for ClientEvent<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientEvent::Request {
                conn,
                request_id,
                request,
            } => f
                .debug_struct("Request")
                .field("conn", conn)
                .field("request_id", request_id)
                .field("request", request)
                .finish(),
            ClientEvent::Unreadable {
                conn,
                request_id,
                version,
                error,
            } => f
                .debug_struct("Unreadable")
                .field("conn", conn)
                .field("request_id", request_id)
                .field("version", version)
                .field("error", error)
                .finish(),
            ClientEvent::Closed { conn } => f.debug_struct("Closed").field("conn", conn).finish(),
        }
    }
}

pub(super) struct ClientConnInner<Resp> {
    pub(super) connection_id: u64,
    pub(super) client_id: u64,
    pub(super) peer_addr: SocketAddr,
    /// Parked: the writer thread waits without spinning (see `park.rs`); closing wakes it.
    pub(super) responses: ParkedSender<(u64, Resp)>,
    pub(super) closed: AtomicBool,
    /// The frame salt of the connection.
    pub(super) salt: u64,
    /// Direct writes of responses (see [`ClientHandle::respond`]); the writer thread holds it
    /// from taking responses off the queue until they are written.
    pub(super) outlet: Mutex<wire::DirectWrites>,
    /// `outlet.leftover` is not empty (read without the lock by the waiting writer thread).
    pub(super) has_leftover: AtomicBool,
    /// Pushed frames (kind `CLIENT_PUSH`), already framed, waiting for the writer thread; bounded
    /// by [`MAX_CLIENT_PUSH_QUEUE_BYTES`].
    pub(super) pushes: Mutex<PushQueue>,
    /// `pushes` is not empty (read without the lock by the waiting writer thread).
    pub(super) has_pushes: AtomicBool,
    /// Why the connection was closed from this side because of a fault, for the log.
    pub(super) fault: Mutex<Option<String>>,
    /// For direct writes (plaintext only) and for closing.
    pub(super) stream: Stream,
}

/// Framed pushes waiting for the writer thread.
#[derive(Default)]
pub(super) struct PushQueue {
    pub(super) frames: VecDeque<Vec<u8>>,
    pub(super) bytes: usize,
}

/// What became of a [`ClientHandle::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for the connection's writer.
    Queued,
    /// The connection's push queue is full (the client reads too slowly): not queued.
    Full,
    /// The connection is closed, or the value does not fit a frame: not queued.
    Closed,
}

impl<Resp> ClientConnInner<Resp> {
    pub(super) fn close_for(&self, fault: String) {
        self.fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(fault);
        self.close();
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.responses.wake();
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// One remote-client connection, as the runtime sees it: cloneable, cheap, usable from any
/// thread. Responses are queued for the connection's writer thread, so `respond` never blocks
/// on the network.
pub struct ClientHandle<Resp> {
    pub(super) inner: Arc<ClientConnInner<Resp>>,
}

impl<Resp> Clone for ClientHandle<Resp> {
    fn clone(&self) -> Self {
        ClientHandle {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<Resp> fmt::Debug for ClientHandle<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandle")
            .field("connection_id", &self.inner.connection_id)
            .field("client_id", &self.inner.client_id)
            .field("peer_addr", &self.inner.peer_addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<Resp> ClientHandle<Resp> {
    /// Close the connection (the client's calls in flight end with `Timeout`).
    pub fn close(&self) {
        self.inner.close();
    }

    /// Close the connection because of what the client sent; `why` is logged with the client's
    /// id and address.
    pub fn close_for(&self, why: String) {
        self.inner.close_for(why);
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// The id the client gave in its handshake.
    pub fn client_id(&self) -> u64 {
        self.inner.client_id
    }

    /// This member's id for the connection (unique while the transport runs).
    pub fn connection_id(&self) -> u64 {
        self.inner.connection_id
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr
    }

    /// Queue a pushed frame (kind 34, `ClientPush`, payload `value`), which is not the answer to
    /// a request: the client routes it by its content (docs/FORMAT.md, "Pushed frames"). Never
    /// blocks. Pushed frames keep their order among themselves, not with responses.
    ///
    /// `Full` when the connection already has [`MAX_CLIENT_PUSH_QUEUE_BYTES`] of pushes queued,
    /// unless `last` is set: a last push (ending a watch, at most one per watch) is always
    /// queued, so the client learns why a watch ended.
    pub fn push<P: bincode::Encode>(&self, value: &P, last: bool) -> PushOutcome {
        if self.is_closed() {
            return PushOutcome::Closed;
        }
        let mut frame = Vec::new();
        if codec::append_frame(&mut frame, kind::CLIENT_PUSH, self.inner.salt, value).is_err() {
            return PushOutcome::Closed;
        }
        {
            let mut queue = self.inner.pushes.lock().unwrap_or_else(|e| e.into_inner());
            if !last && queue.bytes + frame.len() > MAX_CLIENT_PUSH_QUEUE_BYTES {
                return PushOutcome::Full;
            }
            queue.bytes += frame.len();
            queue.frames.push_back(frame);
            self.inner.has_pushes.store(true, Ordering::SeqCst);
        }
        self.inner.responses.wake();
        PushOutcome::Queued
    }
}

impl<Resp: Message> ClientHandle<Resp> {
    /// Queue the response to `request_id`. Returns false if the connection is closed. A client
    /// that does not read its responses (more than
    /// [`MAX_CLIENT_INFLIGHT_REQUESTS`] queued) is disconnected: its pending calls time out.
    pub fn respond(&self, request_id: u64, response: Resp) -> bool {
        if self.is_closed() {
            return false;
        }
        let Err(response) = self.try_write_direct(request_id, response) else {
            return true;
        };
        match self.inner.responses.try_send((request_id, response)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.inner.close_for(format!(
                    "it does not read its responses ({MAX_CLIENT_INFLIGHT_REQUESTS} queued)"
                ));
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Write the response on the caller's thread when nothing is queued and the connection has
    /// been quiet (the writer thread's wake-up is a hop on the path of every request at low
    /// load); else hand it back. Never blocks: what the socket does not take at once is left
    /// to the writer thread, which writes it before anything else.
    fn try_write_direct(&self, request_id: u64, response: Resp) -> Result<(), Resp> {
        let inner = &*self.inner;
        // TLS: always through the writer thread (see `tls.rs`).
        let Stream::Plain(tcp) = &inner.stream else {
            return Err(response);
        };
        if inner.responses.len() > 0 {
            return Err(response);
        }
        let Ok(mut guard) = inner.outlet.try_lock() else {
            return Err(response);
        };
        let out = &mut *guard;
        // Checked again under the lock: the writer thread takes responses only while holding it.
        if !out.ready() || inner.responses.len() > 0 {
            return Err(response);
        }
        let written = out.write(
            tcp,
            kind::CLIENT_RESPONSE,
            inner.salt,
            &(request_id, &response),
        );
        match written {
            // The writer thread drops it and logs why.
            wire::Direct::Unframed => return Err(response),
            wire::Direct::Sent { partial: true, .. } => {
                inner.has_leftover.store(true, Ordering::SeqCst);
                inner.responses.wake();
            }
            wire::Direct::Sent { .. } => {}
            wire::Direct::Failed(e) => {
                drop(guard);
                inner.close_for(format!("writing responses failed: {e}"));
            }
        }
        Ok(())
    }
}
