//! Why a connection was refused: the refusal frame both the handshake (`handshake.rs`) and the
//! TLS front door (`tls.rs`) send, below both of them (`docs/FORMAT.md`, "Refusal").

use crate::error::Error;
use bincode::{Decode, Encode};
use std::net::SocketAddr;

/// Longest reason text put in a refusal, so that the refusal always fits one handshake frame.
const MAX_REASON_BYTES: usize = 512;

/// Why a connection was refused (on the wire; the receiver turns it into an error).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) enum RefusalCode {
    /// The initiator speaks a protocol version the acceptor does not.
    UnsupportedVersion {
        /// The version the acceptor speaks.
        supported: u32,
    },
    /// The cluster ids differ.
    WrongCluster,
    /// The initiating member is not in the acceptor's membership.
    UnknownNode,
    /// The acceptor is not the member the initiator meant to dial.
    WrongAcceptor,
    /// A MAC did not verify: the cluster secrets differ.
    BadProof,
    /// The acceptor does not serve remote clients.
    ClientsNotServed,
    /// Too many connections; try later or elsewhere.
    Busy,
    /// A handshake frame could not be decoded.
    Malformed,
    /// The acceptor is shutting down.
    ShuttingDown,
    /// Both sides are founding members but were founded with different memberships.
    FoundingMismatch,
    /// The acceptor uses TLS and the initiator spoke plaintext (sent in plaintext).
    TlsRequired,
    /// The acceptor does not use TLS and the initiator sent a TLS ClientHello (sent in
    /// plaintext).
    TlsNotServed,
    /// The role needs a certificate signed by a CA the initiator's certificate is not from.
    CertificateRequired,
}

/// A refusal frame's payload.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) struct Refusal {
    /// Machine-readable cause.
    pub(crate) code: RefusalCode,
    /// Human-readable explanation.
    pub(crate) reason: String,
}

impl Refusal {
    pub(crate) fn new(code: RefusalCode, reason: impl Into<String>) -> Refusal {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Refusal { code, reason }
    }

    /// The error the side that *received* this refusal reports.
    pub(crate) fn into_received_error(self, addr: SocketAddr) -> Error {
        let message = format!("{addr} refused the connection: {}", self.reason);
        match self.code {
            RefusalCode::Busy | RefusalCode::ShuttingDown => Error::Unavailable(message),
            _ => Error::Auth(message),
        }
    }

    /// The error the side that *sent* this refusal reports (and logs).
    pub(crate) fn into_sent_error(self) -> Error {
        match self.code {
            RefusalCode::Busy | RefusalCode::ShuttingDown => Error::Unavailable(self.reason),
            _ => Error::Auth(self.reason),
        }
    }
}
