//! The authenticated handshake that opens every haven connection.
//!
//! Four frames (salt 0, payload at most [`MAX_HANDSHAKE_FRAME_BYTES`]), then application frames:
//!
//! ```text
//! initiator                                   acceptor
//!   Hello { version, cluster, role, expected acceptor, nonce_i }  ->
//!                          <-  Challenge { acceptor id, nonce_a }   (or Refusal)
//!   Proof { HMAC(key, "initiator" ‖ transcript) }                 ->
//!                          <-  Welcome { HMAC(key, "acceptor" ‖ transcript) }   (or Refusal)
//! ```
//!
//! The transcript binds the protocol version, the cluster id, the initiator's role and id, the
//! lane, the acceptor's id, both fresh 32-byte nonces and the TLS channel binding (zeros in
//! plaintext), so a proof is valid for exactly one connection, one TLS session and one
//! direction.
//!
//! **The key depends on the role.** A `Peer` proves knowledge of the member secret; a `Client`
//! of the client secret (the member secret when none is configured). The acceptor picks the
//! key by the role claimed in `Hello`, and the role is in the transcript, so a client that
//! claims a member's id cannot produce a proof that verifies: holding the client secret never
//! opens a peer lane. The initiator proves first: the acceptor never hands a MAC to
//! somebody who has not shown the secret. Tags are compared in constant time
//! (`hmac::Mac::verify_slice`). Either side may answer with a `Refusal` frame carrying a reason;
//! the receiver turns it into [`Error::Auth`]. `docs/FORMAT.md` gives the byte layout.

use super::refusal::{Refusal, RefusalCode};
use super::tls::Stream;
use super::wire::{kind, FrameReader, Next};
use super::{ClusterSecret, Lane};
use crate::codec;
use crate::error::{Error, Result};
use crate::limits::MAX_HANDSHAKE_FRAME_BYTES;
use crate::types::{ClusterId, NodeId};
use bincode::{Decode, Encode};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The handshake protocol version this build speaks.
/// Version 2 added the TLS channel binding to the transcript and keys a client's proof with
/// the client secret.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// Length of a nonce and of a MAC tag, in bytes.
const NONCE_BYTES: usize = 32;
const TAG_BYTES: usize = 32;

const LABEL_INITIATOR: &[u8] = b"haven/handshake/v2/initiator";
const LABEL_ACCEPTOR: &[u8] = b"haven/handshake/v2/acceptor";
const LABEL_SALT: &[u8] = b"haven/handshake/v2/frame-salt";

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(crate) enum Role {
    /// Another member, sending on one of its lanes.
    Peer {
        /// The member's id.
        node_id: NodeId,
        /// Which of its lanes this connection is.
        lane: Lane,
    },
    /// A remote client (not a member).
    Client {
        /// The id the client chose for itself (its writes are deduplicated by it).
        client_id: u64,
    },
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Peer { node_id, lane } => write!(f, "peer {node_id} ({lane} lane)"),
            Role::Client { client_id } => write!(f, "client {client_id}"),
        }
    }
}

/// The version-independent outer layer of `Hello`: an acceptor of any version can read the
/// version and refuse cleanly before it tries to understand the body.
#[derive(Debug, Encode, Decode)]
struct HelloEnvelope {
    version: u32,
    body: Vec<u8>,
}

#[derive(Debug, Encode, Decode)]
struct HelloV1 {
    cluster_id: ClusterId,
    role: Role,
    /// The member the initiator thinks it is dialling (None for remote clients).
    expected_acceptor: Option<NodeId>,
    nonce: [u8; NONCE_BYTES],
    /// Digest of the membership this member was founded with (None for clients and for members
    /// that joined a running cluster). Two founding members with different digests were given
    /// different peer lists and must never replicate to each other.
    founding: Option<[u8; 32]>,
}

#[derive(Debug, Encode, Decode)]
struct Challenge {
    acceptor: NodeId,
    nonce: [u8; NONCE_BYTES],
}

#[derive(Debug, Encode, Decode)]
struct Tag {
    mac: [u8; TAG_BYTES],
}

/// What the initiator knows before it dials.
pub(crate) struct InitiatorParams<'a> {
    pub(crate) cluster_id: ClusterId,
    pub(crate) secret: &'a ClusterSecret,
    pub(crate) role: Role,
    pub(crate) expected_acceptor: Option<NodeId>,
    /// This member's founding digest (`TransportConfig::founding_digest`); None for clients.
    pub(crate) founding: Option<[u8; 32]>,
}

/// What the acceptor checks an initiator against.
pub(crate) struct AcceptorParams<'a> {
    pub(crate) node_id: NodeId,
    pub(crate) cluster_id: ClusterId,
    /// The key of `Peer` proofs.
    pub(crate) member_secret: &'a ClusterSecret,
    /// The key of `Client` proofs (the member secret when no client secret is configured).
    pub(crate) client_secret: &'a ClusterSecret,
    /// This member's founding digest; an initiator with a different one is refused.
    pub(crate) founding: Option<[u8; 32]>,
    /// Decides whether this role may connect at all (membership, client slots); runs before
    /// the proof is checked, so it must not reveal anything secret.
    pub(crate) admit: &'a dyn Fn(&Role) -> std::result::Result<(), Refusal>,
}

/// An open, authenticated connection.
pub(crate) struct Established {
    /// The other side's id: the acceptor's node id (initiator side) or the initiator's role
    /// (acceptor side).
    pub(crate) acceptor: NodeId,
    pub(crate) role: Role,
    /// Salt for every application frame on this connection (both directions).
    pub(crate) salt: u64,
    /// The reader, already switched to the application frame limit and salt.
    pub(crate) reader: FrameReader,
}

/// Fresh random bytes for a nonce.
fn nonce() -> Result<[u8; NONCE_BYTES]> {
    let mut out = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut out).map_err(|e| {
        Error::io(
            "drawing a handshake nonce",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(out)
}

/// The bytes both MACs and the frame salt are computed over (layout in `docs/FORMAT.md`).
fn transcript(
    cluster_id: ClusterId,
    role: &Role,
    acceptor: NodeId,
    nonce_initiator: &[u8; NONCE_BYTES],
    nonce_acceptor: &[u8; NONCE_BYTES],
    channel_binding: &[u8; 32],
) -> Vec<u8> {
    let (role_tag, id, lane) = match role {
        Role::Peer { node_id, lane } => (1u8, node_id.0, lane.wire_tag()),
        Role::Client { client_id } => (2u8, *client_id, 0u8),
    };
    let mut out = Vec::with_capacity(4 + 8 + 1 + 8 + 1 + 8 + 2 * NONCE_BYTES + 32);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&cluster_id.0.to_le_bytes());
    out.push(role_tag);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(lane);
    out.extend_from_slice(&acceptor.0.to_le_bytes());
    out.extend_from_slice(nonce_initiator);
    out.extend_from_slice(nonce_acceptor);
    out.extend_from_slice(channel_binding);
    out
}

fn keyed(secret: &ClusterSecret, label: &[u8], transcript: &[u8]) -> Result<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| Error::InvalidArgument("cluster secret cannot key HMAC-SHA256".into()))?;
    // The label's length goes first so that no label is a prefix of another's input.
    mac.update(&[label.len() as u8]);
    mac.update(label);
    mac.update(transcript);
    Ok(mac)
}

fn tag(secret: &ClusterSecret, label: &[u8], transcript: &[u8]) -> Result<[u8; TAG_BYTES]> {
    Ok(keyed(secret, label, transcript)?
        .finalize()
        .into_bytes()
        .into())
}

/// Constant-time check of a received tag.
fn verify(secret: &ClusterSecret, label: &[u8], transcript: &[u8], received: &[u8]) -> bool {
    match keyed(secret, label, transcript) {
        Ok(mac) => mac.verify_slice(received).is_ok(),
        Err(_) => false,
    }
}

fn frame_salt(secret: &ClusterSecret, transcript: &[u8]) -> Result<u64> {
    let bytes = tag(secret, LABEL_SALT, transcript)?;
    let mut salt = [0u8; 8];
    salt.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
    Ok(u64::from_le_bytes(salt))
}

fn remaining(deadline: Instant, what: &str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(format!(
            "handshake not finished in time ({what})"
        )));
    }
    Ok(left)
}

pub(crate) fn write_frame<T: Encode>(
    stream: &mut Stream,
    kind: u8,
    value: &T,
    deadline: Instant,
) -> Result<()> {
    let mut buf = Vec::new();
    codec::append_frame(&mut buf, kind, 0, value)?;
    stream
        .set_write_timeout(Some(remaining(deadline, "writing")?))
        .map_err(|e| Error::io("setting a write timeout", e))?;
    stream
        .write_all_bytes(&buf)
        .map_err(|e| match stream.tls_failure() {
            Some(tls) => Error::Auth(format!("TLS: {tls}")),
            None => Error::io("writing a handshake frame", e),
        })
}

/// Best effort: tell the other side why, then give up. A failed write changes nothing.
fn refuse(stream: &mut Stream, refusal: Refusal, deadline: Instant) -> Error {
    let deadline = deadline.max(Instant::now() + Duration::from_millis(100));
    let _ = write_frame(stream, kind::REFUSAL, &refusal, deadline);
    refusal.into_sent_error()
}

/// Read the next handshake frame and return its kind and payload. A refusal from the other side
/// becomes an error here.
fn read_frame(
    stream: &mut Stream,
    reader: &mut FrameReader,
    addr: SocketAddr,
    deadline: Instant,
    what: &str,
) -> Result<(u8, Vec<u8>)> {
    // Bounded by the deadline: every timed-out read re-checks it.
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline, what)?))
            .map_err(|e| Error::io("setting a read timeout", e))?;
        let next = reader
            .next(stream)
            .map_err(|e| match stream.tls_failure() {
                // A certificate the other side rejected arrives as a TLS alert after our side of
                // the TLS handshake completed (TLS 1.3): it is a refusal, not an IO failure.
                Some(tls) => Error::Auth(format!("{addr}: TLS: {tls}")),
                None => e,
            })?;
        match next {
            Next::Frame {
                kind: kind::REFUSAL,
                payload,
            } => {
                let refusal: Refusal = codec::decode_value(payload)?;
                return Err(refusal.into_received_error(addr));
            }
            Next::Frame { kind, payload } => return Ok((kind, payload.to_vec())),
            Next::TimedOut => {}
            Next::Closed => {
                return Err(Error::Unavailable(format!(
                    "{addr} closed the connection during the handshake ({what})"
                )))
            }
        }
    }
}

fn expect_kind(found: u8, wanted: u8, what: &str) -> Result<()> {
    if found == wanted {
        Ok(())
    } else {
        Err(Error::corrupt(
            0,
            format!("expected a {what} frame (kind {wanted}), got kind {found}"),
        ))
    }
}

/// Run the initiator's side on a connected stream. `addr` is only used in messages.
pub(crate) fn initiate(
    stream: &mut Stream,
    addr: SocketAddr,
    params: &InitiatorParams<'_>,
    deadline: Instant,
    max_payload: usize,
) -> Result<Established> {
    let nonce_initiator = nonce()?;
    let hello = HelloV1 {
        cluster_id: params.cluster_id,
        role: params.role,
        expected_acceptor: params.expected_acceptor,
        nonce: nonce_initiator,
        founding: params.founding,
    };
    let envelope = HelloEnvelope {
        version: PROTOCOL_VERSION,
        body: codec::encode_value(&hello)?,
    };
    write_frame(stream, kind::HELLO, &envelope, deadline)?;

    let mut reader = FrameReader::new(MAX_HANDSHAKE_FRAME_BYTES, 0);
    let (found, payload) = read_frame(stream, &mut reader, addr, deadline, "challenge")?;
    expect_kind(found, kind::CHALLENGE, "challenge")?;
    let challenge: Challenge = codec::decode_value(&payload)?;
    if let Some(expected) = params.expected_acceptor {
        if challenge.acceptor != expected {
            let refusal = Refusal::new(
                RefusalCode::WrongAcceptor,
                format!(
                    "{addr} is member {}, not {expected} as configured",
                    challenge.acceptor
                ),
            );
            return Err(refuse(stream, refusal, deadline));
        }
    }
    let transcript = transcript(
        params.cluster_id,
        &params.role,
        challenge.acceptor,
        &nonce_initiator,
        &challenge.nonce,
        &stream.channel_binding()?,
    );
    let proof = Tag {
        mac: tag(params.secret, LABEL_INITIATOR, &transcript)?,
    };
    write_frame(stream, kind::PROOF, &proof, deadline)?;

    let (found, payload) = read_frame(stream, &mut reader, addr, deadline, "welcome")?;
    expect_kind(found, kind::WELCOME, "welcome")?;
    let welcome: Tag = codec::decode_value(&payload)?;
    if !verify(params.secret, LABEL_ACCEPTOR, &transcript, &welcome.mac) {
        let refusal = Refusal::new(
            RefusalCode::BadProof,
            format!(
                "{addr} ({}) did not prove knowledge of the cluster secret: the secrets differ",
                challenge.acceptor
            ),
        );
        return Err(refuse(stream, refusal, deadline));
    }
    let salt = frame_salt(params.secret, &transcript)?;
    reader.set_limits(max_payload, salt);
    Ok(Established {
        acceptor: challenge.acceptor,
        role: params.role,
        salt,
        reader,
    })
}

/// Run the acceptor's side on an accepted stream. Every refusal has already been sent to the
/// initiator (best effort) when this returns an error; the caller logs it with `addr`.
pub(crate) fn accept(
    stream: &mut Stream,
    addr: SocketAddr,
    params: &AcceptorParams<'_>,
    deadline: Instant,
    max_payload: usize,
) -> Result<Established> {
    let mut reader = FrameReader::new(MAX_HANDSHAKE_FRAME_BYTES, 0);
    let (found, payload) = read_frame(stream, &mut reader, addr, deadline, "hello")?;
    expect_kind(found, kind::HELLO, "hello")?;
    let malformed = |e: Error| Refusal::new(RefusalCode::Malformed, format!("bad hello: {e}"));
    let envelope: HelloEnvelope = match codec::decode_value(&payload) {
        Ok(envelope) => envelope,
        Err(e) => return Err(refuse(stream, malformed(e), deadline)),
    };
    if envelope.version != PROTOCOL_VERSION {
        let refusal = Refusal::new(
            RefusalCode::UnsupportedVersion {
                supported: PROTOCOL_VERSION,
            },
            format!(
                "handshake protocol version {} is not supported (member {} speaks version {})",
                envelope.version, params.node_id, PROTOCOL_VERSION
            ),
        );
        return Err(refuse(stream, refusal, deadline));
    }
    let hello: HelloV1 = match codec::decode_value(&envelope.body) {
        Ok(hello) => hello,
        Err(e) => return Err(refuse(stream, malformed(e), deadline)),
    };
    if hello.cluster_id != params.cluster_id {
        let refusal = Refusal::new(
            RefusalCode::WrongCluster,
            format!(
                "{} belongs to cluster {}, but member {} belongs to cluster {}",
                hello.role, hello.cluster_id, params.node_id, params.cluster_id
            ),
        );
        return Err(refuse(stream, refusal, deadline));
    }
    if let Some(expected) = hello.expected_acceptor {
        if expected != params.node_id {
            let refusal = Refusal::new(
                RefusalCode::WrongAcceptor,
                format!(
                    "{} dialled {expected} but reached member {}: check the peer addresses",
                    hello.role, params.node_id
                ),
            );
            return Err(refuse(stream, refusal, deadline));
        }
    }
    if let Err(refusal) = (params.admit)(&hello.role) {
        return Err(refuse(stream, refusal, deadline));
    }

    let nonce_acceptor = nonce()?;
    let challenge = Challenge {
        acceptor: params.node_id,
        nonce: nonce_acceptor,
    };
    write_frame(stream, kind::CHALLENGE, &challenge, deadline)?;
    let transcript = transcript(
        params.cluster_id,
        &hello.role,
        params.node_id,
        &hello.nonce,
        &nonce_acceptor,
        &stream.channel_binding()?,
    );
    // The key is chosen by the claimed role: a client secret never verifies a peer's proof.
    let (secret, key_name) = match hello.role {
        Role::Peer { .. } => (params.member_secret, "member secret"),
        Role::Client { .. } => (params.client_secret, "client secret"),
    };

    let (found, payload) = read_frame(stream, &mut reader, addr, deadline, "proof")?;
    expect_kind(found, kind::PROOF, "proof")?;
    let proof: Tag = match codec::decode_value(&payload) {
        Ok(proof) => proof,
        Err(e) => return Err(refuse(stream, malformed(e), deadline)),
    };
    if !verify(secret, LABEL_INITIATOR, &transcript, &proof.mac) {
        let refusal = Refusal::new(
            RefusalCode::BadProof,
            format!(
                "the proof of {} does not verify with the {key_name} of member {}: the cluster \
                 secrets differ",
                hello.role, params.node_id
            ),
        );
        return Err(refuse(stream, refusal, deadline));
    }
    // Checked only once the initiator proved it knows the secret, so a wrong secret is reported
    // as such and the digest comparison is between authenticated members.
    if let (Some(theirs), Some(ours)) = (hello.founding, params.founding) {
        if theirs != ours {
            let refusal = Refusal::new(
                RefusalCode::FoundingMismatch,
                format!(
                    "{} and member {} were founded with different member lists: every \
                     founding member must be started with the same peers",
                    hello.role, params.node_id
                ),
            );
            return Err(refuse(stream, refusal, deadline));
        }
    }
    let welcome = Tag {
        mac: tag(secret, LABEL_ACCEPTOR, &transcript)?,
    };
    write_frame(stream, kind::WELCOME, &welcome, deadline)?;
    let salt = frame_salt(secret, &transcript)?;
    reader.set_limits(max_payload, salt);
    Ok(Established {
        acceptor: params.node_id,
        role: hello.role,
        salt,
        reader,
    })
}

/// Decode a refusal that arrives after the handshake (the initiator rejected our welcome).
pub(crate) fn decode_late_refusal(payload: &[u8]) -> String {
    match codec::decode_value::<Refusal>(payload) {
        Ok(refusal) => refusal.reason,
        Err(e) => format!("undecodable refusal: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    fn secret(s: &[u8]) -> ClusterSecret {
        ClusterSecret::new(s.to_vec()).unwrap()
    }

    fn pair() -> (Stream, Stream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Stream::Plain(client), Stream::Plain(server), addr)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn peer(n: u64) -> Role {
        Role::Peer {
            node_id: NodeId(n),
            lane: Lane::Control,
        }
    }

    /// Run a real acceptor on one thread and the initiator on this one.
    fn run(
        initiator_secret: &[u8],
        acceptor_secret: &[u8],
        role: Role,
    ) -> (Result<Established>, Result<Established>) {
        run_founded(initiator_secret, acceptor_secret, role, None, None)
    }

    /// [`run`] with founding digests on each side.
    fn run_founded(
        initiator_secret: &[u8],
        acceptor_secret: &[u8],
        role: Role,
        initiator_founding: Option<[u8; 32]>,
        acceptor_founding: Option<[u8; 32]>,
    ) -> (Result<Established>, Result<Established>) {
        let (mut client, mut server, addr) = pair();
        let acceptor_secret = secret(acceptor_secret);
        let acceptor = thread::spawn(move || {
            let admit = |_: &Role| Ok(());
            let params = AcceptorParams {
                node_id: NodeId(1),
                cluster_id: ClusterId(7),
                member_secret: &acceptor_secret,
                client_secret: &acceptor_secret,
                founding: acceptor_founding,
                admit: &admit,
            };
            accept(&mut server, addr, &params, deadline(), 1024)
        });
        let initiator_secret = secret(initiator_secret);
        let params = InitiatorParams {
            cluster_id: ClusterId(7),
            secret: &initiator_secret,
            role,
            expected_acceptor: Some(NodeId(1)),
            founding: initiator_founding,
        };
        let initiated = initiate(&mut client, addr, &params, deadline(), 1024);
        (initiated, acceptor.join().unwrap())
    }

    #[test]
    fn both_sides_agree_on_ids_and_a_fresh_salt() {
        let (a, b) = run(b"0123456789abcdef", b"0123456789abcdef", peer(2));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.acceptor, NodeId(1));
        assert_eq!(b.role, peer(2));
        assert_eq!(a.salt, b.salt);
        // Fresh nonces: a second connection gets another salt.
        let (c, _) = run(b"0123456789abcdef", b"0123456789abcdef", peer(2));
        assert_ne!(c.unwrap().salt, a.salt);
    }

    #[test]
    fn founding_members_with_different_member_lists_are_refused() {
        let key = b"0123456789abcdef";
        let (a, b) = run_founded(key, key, peer(2), Some([1; 32]), Some([2; 32]));
        for side in [a, b] {
            match side {
                Err(Error::Auth(m)) => assert!(m.contains("different member lists"), "{m}"),
                Err(other) => panic!("expected Auth, got {other:?}"),
                Ok(_) => panic!("expected Auth, got a connection"),
            }
        }
        // Same digest, or a side that joined later (no digest): accepted.
        let (a, b) = run_founded(key, key, peer(2), Some([1; 32]), Some([1; 32]));
        assert!(a.is_ok() && b.is_ok());
        let (a, b) = run_founded(key, key, peer(2), None, Some([1; 32]));
        assert!(a.is_ok() && b.is_ok());
    }

    #[test]
    fn wrong_secret_is_refused_by_the_acceptor_with_a_reason() {
        let (a, b) = run(b"0123456789abcdef", b"fedcba9876543210", peer(2));
        match a {
            Err(Error::Auth(m)) => assert!(m.contains("secrets differ"), "{m}"),
            Err(other) => panic!("expected Auth, got {other:?}"),
            Ok(_) => panic!("expected Auth, got a connection"),
        }
        match b {
            Err(Error::Auth(m)) => assert!(m.contains("peer n2"), "{m}"),
            Err(other) => panic!("expected Auth, got {other:?}"),
            Ok(_) => panic!("expected Auth, got a connection"),
        }
    }

    #[test]
    fn impostor_acceptor_without_the_secret_is_detected_by_the_initiator() {
        // The impostor skips the proof check and signs its welcome with a guessed secret.
        let (mut client, mut server, addr) = pair();
        let impostor = thread::spawn(move || {
            let mut reader = FrameReader::new(MAX_HANDSHAKE_FRAME_BYTES, 0);
            read_frame(&mut server, &mut reader, addr, deadline(), "hello").unwrap();
            let challenge = Challenge {
                acceptor: NodeId(1),
                nonce: [3; NONCE_BYTES],
            };
            write_frame(&mut server, kind::CHALLENGE, &challenge, deadline()).unwrap();
            read_frame(&mut server, &mut reader, addr, deadline(), "proof").unwrap();
            let welcome = Tag {
                mac: [0x55; TAG_BYTES],
            };
            write_frame(&mut server, kind::WELCOME, &welcome, deadline()).unwrap();
            // The initiator answers with a refusal frame naming the reason.
            read_frame(&mut server, &mut reader, addr, deadline(), "refusal").err()
        });
        let s = secret(b"0123456789abcdef");
        let params = InitiatorParams {
            cluster_id: ClusterId(7),
            secret: &s,
            role: peer(2),
            expected_acceptor: Some(NodeId(1)),
            founding: None,
        };
        match initiate(&mut client, addr, &params, deadline(), 1024) {
            Err(Error::Auth(m)) => assert!(m.contains("did not prove"), "{m}"),
            Err(other) => panic!("expected Auth, got {other:?}"),
            Ok(_) => panic!("expected Auth, got a connection"),
        }
        match impostor.join().unwrap() {
            Some(Error::Auth(m)) => assert!(m.contains("did not prove"), "{m}"),
            other => panic!("impostor should have received a refusal, got {other:?}"),
        }
    }

    #[test]
    fn unsupported_version_is_refused_with_the_supported_version() {
        let (mut client, mut server, addr) = pair();
        let acceptor = thread::spawn(move || {
            let s = secret(b"0123456789abcdef");
            let admit = |_: &Role| Ok(());
            let params = AcceptorParams {
                node_id: NodeId(1),
                cluster_id: ClusterId(7),
                member_secret: &s,
                client_secret: &s,
                founding: None,
                admit: &admit,
            };
            accept(&mut server, addr, &params, deadline(), 1024).err()
        });
        // A future initiator: version 99, a body this build cannot read.
        let envelope = HelloEnvelope {
            version: 99,
            body: vec![0xEE; 40],
        };
        write_frame(&mut client, kind::HELLO, &envelope, deadline()).unwrap();
        let mut reader = FrameReader::new(MAX_HANDSHAKE_FRAME_BYTES, 0);
        match read_frame(&mut client, &mut reader, addr, deadline(), "challenge") {
            Err(Error::Auth(m)) => {
                assert!(m.contains("version 99 is not supported"), "{m}");
                assert!(m.contains("speaks version 2"), "{m}");
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        assert!(matches!(acceptor.join().unwrap(), Some(Error::Auth(_))));
    }

    #[test]
    fn a_version_1_initiator_is_refused_with_a_clear_reason() {
        // What a member or client built before version 2 sends: its Hello body still decodes,
        // but its proof would be keyed and bound differently, so it is refused up front.
        let (mut client, mut server, addr) = pair();
        let acceptor = thread::spawn(move || {
            let s = secret(b"0123456789abcdef");
            let admit = |_: &Role| Ok(());
            let params = AcceptorParams {
                node_id: NodeId(1),
                cluster_id: ClusterId(7),
                member_secret: &s,
                client_secret: &s,
                founding: None,
                admit: &admit,
            };
            accept(&mut server, addr, &params, deadline(), 1024).err()
        });
        let hello = HelloV1 {
            cluster_id: ClusterId(7),
            role: peer(2),
            expected_acceptor: Some(NodeId(1)),
            nonce: [1; NONCE_BYTES],
            founding: None,
        };
        let envelope = HelloEnvelope {
            version: 1,
            body: codec::encode_value(&hello).unwrap(),
        };
        write_frame(&mut client, kind::HELLO, &envelope, deadline()).unwrap();
        let mut reader = FrameReader::new(MAX_HANDSHAKE_FRAME_BYTES, 0);
        match read_frame(&mut client, &mut reader, addr, deadline(), "challenge") {
            Err(Error::Auth(m)) => {
                assert!(m.contains("version 1 is not supported"), "{m}");
                assert!(m.contains("speaks version 2"), "{m}");
            }
            other => panic!("expected Auth, got {other:?}"),
        }
        assert!(matches!(acceptor.join().unwrap(), Some(Error::Auth(_))));
    }

    #[test]
    fn transcript_binds_every_field() {
        let n1 = [1u8; NONCE_BYTES];
        let n2 = [2u8; NONCE_BYTES];
        let base = transcript(ClusterId(1), &peer(2), NodeId(3), &n1, &n2, &[0; 32]);
        let variants = [
            transcript(ClusterId(9), &peer(2), NodeId(3), &n1, &n2, &[0; 32]),
            transcript(ClusterId(1), &peer(4), NodeId(3), &n1, &n2, &[0; 32]),
            transcript(
                ClusterId(1),
                &Role::Peer {
                    node_id: NodeId(2),
                    lane: Lane::Bulk,
                },
                NodeId(3),
                &n1,
                &n2,
                &[0; 32],
            ),
            transcript(
                ClusterId(1),
                &Role::Client { client_id: 2 },
                NodeId(3),
                &n1,
                &n2,
                &[0; 32],
            ),
            transcript(ClusterId(1), &peer(2), NodeId(5), &n1, &n2, &[0; 32]),
            transcript(ClusterId(1), &peer(2), NodeId(3), &n2, &n1, &[0; 32]),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        let s = secret(b"0123456789abcdef");
        let t = tag(&s, LABEL_INITIATOR, &base).unwrap();
        assert!(verify(&s, LABEL_INITIATOR, &base, &t));
        // A tag is only valid in its own direction.
        assert!(!verify(&s, LABEL_ACCEPTOR, &base, &t));
        assert!(!verify(&s, LABEL_INITIATOR, &base, &t[..31]));
    }

    #[test]
    fn wire_layout_matches_format_md() {
        // Known answers computed independently (Python `hmac`/`struct`) from the layout in
        // docs/FORMAT.md; a change here is a protocol change.
        let s = secret(b"0123456789abcdef");
        let t = transcript(
            ClusterId(7),
            &peer(2),
            NodeId(1),
            &[1; NONCE_BYTES],
            &[2; NONCE_BYTES],
            &[3; 32],
        );
        assert_eq!(t.len(), 126);
        let expected = "804526d6a7595f282baf349543e9a7864597149bf53da32fdbb745c366b924aa";
        let got: String = tag(&s, LABEL_INITIATOR, &t)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(frame_salt(&s, &t).unwrap(), 16887568300605228331);

        // Message payloads: varint ids, raw 32-byte arrays, enum variants as varints.
        let challenge = Challenge {
            acceptor: NodeId(2),
            nonce: [7; NONCE_BYTES],
        };
        let mut expected = vec![2u8];
        expected.extend_from_slice(&[7; NONCE_BYTES]);
        assert_eq!(codec::encode_value(&challenge).unwrap(), expected);
        let refusal = Refusal::new(RefusalCode::UnsupportedVersion { supported: 1 }, "x");
        assert_eq!(codec::encode_value(&refusal).unwrap(), vec![0, 1, 1, b'x']);
        let hello = HelloV1 {
            cluster_id: ClusterId(42),
            role: Role::Client { client_id: 300 },
            expected_acceptor: None,
            nonce: [9; NONCE_BYTES],
            founding: Some([5; 32]),
        };
        let mut expected = vec![42u8, 1, 251, 0x2c, 0x01, 0];
        expected.extend_from_slice(&[9; NONCE_BYTES]);
        expected.push(1);
        expected.extend_from_slice(&[5; 32]);
        let body = codec::encode_value(&hello).unwrap();
        assert_eq!(body, expected);
        let envelope = HelloEnvelope {
            version: PROTOCOL_VERSION,
            body: body.clone(),
        };
        let mut expected = vec![2u8, body.len() as u8];
        expected.extend_from_slice(&body);
        assert_eq!(codec::encode_value(&envelope).unwrap(), expected);
    }

    #[test]
    fn refusal_reason_is_truncated_to_fit_a_handshake_frame() {
        let refusal = Refusal::new(RefusalCode::Malformed, "é".repeat(1000));
        let mut buf = Vec::new();
        codec::append_frame(&mut buf, kind::REFUSAL, 0, &refusal).unwrap();
        assert!(buf.len() <= codec::frame_len(MAX_HANDSHAKE_FRAME_BYTES));
    }
}
