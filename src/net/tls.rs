//! TLS under the handshake: the member's and the client's settings, the byte stream every
//! connection is read and written through, and the choice between TLS and plaintext at accept.
//!
//! rustls (TLS 1.3 only, the `ring` provider), driven synchronously: no async runtime.
//!
//! **One connection, several threads.** A haven connection is read by one thread and written by
//! others (a lane's sender, a client's callers, a member's response writer), and a plaintext
//! socket is shared between them with `try_clone`. A rustls connection is one state machine
//! for both directions, so a TLS [`Stream`] is an `Arc` around the socket and a mutex around
//! the rustls state; its clones share both. The lock is never held while a thread *waits for
//! bytes*: the reader reads raw bytes from the socket without it (with the socket's read
//! timeout, exactly as in plaintext), then takes it to decrypt. A writer holds it while it
//! encrypts and writes (a blocking write, bounded by the socket's write timeout), so records of
//! two writers never interleave and a reader that has bytes waits at most one write.
//!
//! **No direct writes.** Plaintext connections let a caller's thread write a frame without
//! blocking (`wire::send_nonblocking`) when the connection is idle. Under TLS the ciphertext
//! that a full socket does not take would stay inside rustls, where no writer thread would
//! know to flush it, so TLS connections always go through their writer thread (one thread
//! hop per idle write; `haven bench cluster --tls` measures the cost).
//!
//! **Mixed configurations** are told apart by the first byte an acceptor receives: a TLS
//! ClientHello starts with 0x16 (a handshake record), a haven frame with `H`. A member with
//! TLS answers a plaintext initiator with a plaintext refusal frame, and a member without TLS
//! answers a TLS initiator with one too; a TLS initiator recognises such a frame in place of a
//! ServerHello. Both sides report `Auth` with the reason, within the handshake timeout.
//!
//! **Who is who.** Peer lanes use mutual TLS: both sides present a certificate signed by the
//! member CA (`--tls-ca`), and an initiator checks that the acceptor's certificate is valid for
//! the IP address it dialled. Client connections use TLS too; with a client CA
//! (`--client-ca`) every client must present a certificate signed by it (or by the member CA).
//! The acceptor learns the role only from the haven `Hello` inside TLS, so it accepts a
//! certificate from either CA at the TLS layer and checks afterwards which CA signed it
//! ([`PeerCertificates`]): a `Peer` role without a member certificate is refused.

use super::refusal::{Refusal, RefusalCode};
use super::wire::{kind, FrameReader, Next};
use crate::codec;
use crate::error::{Error, Result};
use crate::limits::MAX_HANDSHAKE_FRAME_BYTES;
use crate::types::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first byte of a TLS handshake record (a ClientHello): how an acceptor tells TLS from a
/// haven frame (which starts with `H`).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Bytes read from the socket in one go (a TLS record is at most 16 KiB plus overhead).
const READ_CHUNK_BYTES: usize = 32 * 1024;

/// The exporter label of the channel binding the haven handshake MACs (RFC 8446 section 7.5).
const EXPORTER_LABEL: &[u8] = b"EXPORTER-haven-handshake-v2";

/// How long an acceptor that refused a TLS handshake keeps reading before it closes, so that
/// its alert is not destroyed by a reset (closing with unread bytes sends RST).
const LINGER: Duration = Duration::from_millis(200);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: &str, e: impl fmt::Display) -> Error {
    Error::InvalidArgument(format!("{what}: {e}"))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {what} {}", path.display()), e))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| invalid(what, e))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what}: no PEM certificate found"
        )));
    }
    Ok(certs)
}

fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| invalid(what, e))
}

fn roots(pem: &[u8], what: &str) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in certificates(pem, what)? {
        store.add(cert).map_err(|e| invalid(what, e))?;
    }
    Ok(store)
}

fn client_verifier(
    roots: RootCertStore,
    optional: bool,
    what: &str,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|e| invalid(what, e))
}

fn client_config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid("TLS", e))?
        .with_root_certificates(roots);
    match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid("--tls-cert/--tls-key", e)),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A member's TLS settings: its certificate and key, the member CA that signs every member's
/// certificate, and optionally a client CA. Cheap to clone.
#[derive(Clone)]
pub struct MemberTls {
    server: Arc<ServerConfig>,
    /// For dialling peers: presents this member's certificate, trusts the member CA.
    dialer: Arc<ClientConfig>,
    /// Checks that a certificate was signed by the member CA.
    member_ca: Arc<dyn ClientCertVerifier>,
    /// Checks that a certificate was signed by the client CA (when one is configured).
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberTls")
            .field("client_certificates_required", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

impl MemberTls {
    /// From PEM bytes: this member's certificate chain (leaf first) and private key, the member
    /// CA, and the client CA (`None`: clients need no certificate). The member certificate
    /// must be valid for the IP addresses peers dial, for both server and client use.
    pub fn from_pem(
        cert_chain: &[u8],
        key: &[u8],
        member_ca: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<MemberTls> {
        let chain = certificates(cert_chain, "--tls-cert")?;
        let key = private_key(key, "--tls-key")?;
        let member_roots = roots(member_ca, "--tls-ca")?;
        let client_roots = client_ca.map(|pem| roots(pem, "--client-ca")).transpose()?;
        // At the TLS layer a certificate from either CA is accepted (the role is not known
        // yet); without a client CA a certificate is optional (clients need none).
        let mut either = member_roots.clone();
        if let Some(client_roots) = &client_roots {
            for anchor in client_roots.roots.iter() {
                either.roots.push(anchor.clone());
            }
        }
        let tls_layer = client_verifier(either, client_roots.is_none(), "--tls-ca")?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| invalid("TLS", e))?
            .with_client_cert_verifier(tls_layer)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid("--tls-cert/--tls-key", e))?;
        // No session tickets: an acceptor writes nothing after the handshake on a peer lane,
        // and the initiator takes any byte there as "this connection is dead".
        server.send_tls13_tickets = 0;
        let dialer = client_config(member_roots.clone(), Some((chain, key)))?;
        Ok(MemberTls {
            server: Arc::new(server),
            dialer: Arc::new(dialer),
            member_ca: client_verifier(member_roots, false, "--tls-ca")?,
            client_ca: client_roots
                .map(|r| client_verifier(r, false, "--client-ca"))
                .transpose()?,
        })
    }

    /// [`MemberTls::from_pem`] from files (`--tls-cert`, `--tls-key`, `--tls-ca`,
    /// `--client-ca`).
    pub fn from_files(
        cert_chain: &Path,
        key: &Path,
        member_ca: &Path,
        client_ca: Option<&Path>,
    ) -> Result<MemberTls> {
        let client_ca = client_ca
            .map(|p| read_file(p, "the client CA"))
            .transpose()?;
        MemberTls::from_pem(
            &read_file(cert_chain, "the certificate")?,
            &read_file(key, "the private key")?,
            &read_file(member_ca, "the member CA")?,
            client_ca.as_deref(),
        )
    }

    /// Whether clients must present a certificate signed by the client CA.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    pub(crate) fn dialer(&self) -> &Arc<ClientConfig> {
        &self.dialer
    }
}

/// A remote client's TLS settings: the member CA it trusts and, when members require one, its
/// own certificate and key. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    has_identity: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("client_certificate", &self.has_identity)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// From PEM bytes: the CA that signed the members' certificates, and optionally this
    /// client's certificate chain and key.
    pub fn from_pem(member_ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<ClientTls> {
        let roots = roots(member_ca, "--tls-ca")?;
        let identity = identity
            .map(|(chain, key)| {
                Ok::<_, Error>((
                    certificates(chain, "--tls-cert")?,
                    private_key(key, "--tls-key")?,
                ))
            })
            .transpose()?;
        let has_identity = identity.is_some();
        Ok(ClientTls {
            config: Arc::new(client_config(roots, identity)?),
            has_identity,
        })
    }

    /// [`ClientTls::from_pem`] from files (`--tls-ca`, `--tls-cert`, `--tls-key`); a
    /// certificate needs its key and the reverse.
    pub fn from_files(
        member_ca: &Path,
        cert_chain: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ClientTls> {
        let identity = match (cert_chain, key) {
            (Some(cert), Some(key)) => Some((
                read_file(cert, "the certificate")?,
                read_file(key, "the private key")?,
            )),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidArgument(
                    "--tls-cert and --tls-key go together".into(),
                ))
            }
        };
        let ca = read_file(member_ca, "the member CA")?;
        ClientTls::from_pem(
            &ca,
            identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
    }

    pub(crate) fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

/// Which CAs signed the certificate an initiator presented (both false in plaintext or
/// without a certificate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeerCertificates {
    /// TLS is in use on this connection.
    pub(crate) tls: bool,
    /// Signed by the member CA: may open a peer lane.
    pub(crate) member: bool,
    /// Signed by the client CA.
    pub(crate) client: bool,
}

/// The rustls side of a TLS stream.
struct TlsState {
    conn: rustls::Connection,
    /// Bytes read from the socket that rustls has not taken yet.
    inbox: Vec<u8>,
    /// The TLS error that ended the connection, for the handshake's error message.
    failure: Option<String>,
}

/// A TLS connection shared by the clones of a [`Stream`].
pub(crate) struct TlsIo {
    tcp: TcpStream,
    state: Mutex<TlsState>,
}

impl TlsIo {
    fn lock(&self) -> MutexGuard<'_, TlsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write whatever rustls has to send (records, alerts), blocking up to the socket's write
    /// timeout. Called with the lock held.
    fn flush(&self, state: &mut TlsState) -> std::io::Result<()> {
        // Bounded: each round writes some bytes or fails.
        while state.conn.wants_write() {
            state.conn.write_tls(&mut &self.tcp)?;
        }
        Ok(())
    }

    /// Hand rustls the bytes in the inbox (one read_tls) and process them.
    fn ingest(&self, state: &mut TlsState) -> std::io::Result<()> {
        let used = {
            let mut bytes = state.inbox.as_slice();
            state.conn.read_tls(&mut bytes)?
        };
        state.inbox.drain(..used);
        if let Err(e) = state.conn.process_new_packets() {
            state.failure = Some(e.to_string());
            // Best effort: tell the other side why (the alert rustls queued).
            let _ = self.flush(state);
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("TLS: {e}"),
            ));
        }
        // Post-handshake messages (a key update) may need an answer.
        self.flush(state)
    }

    fn read(&self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        // Bounded: each round returns, or ingests buffered bytes, or reads the socket (which
        // returns data, end of stream or an error, timeouts included).
        loop {
            {
                let mut state = self.lock();
                match state.conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // Closed without close_notify: haven's framing tells a clean close between
                    // frames from a truncated frame, so this is an ordinary end of stream.
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if !state.inbox.is_empty() {
                    self.ingest(&mut state)?;
                    continue;
                }
            }
            let n = (&self.tcp).read(&mut chunk)?;
            let mut state = self.lock();
            if n == 0 {
                // Tell rustls about the end of the stream.
                state.conn.read_tls(&mut &[][..])?;
                continue;
            }
            state.inbox.extend_from_slice(&chunk[..n]);
        }
    }

    fn write_all(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        let mut state = self.lock();
        // Bounded: each round either encrypts some bytes or flushes (or fails).
        loop {
            self.flush(&mut state)?;
            if bytes.is_empty() {
                return Ok(());
            }
            let taken = state.conn.writer().write(bytes)?;
            if taken == 0 && !state.conn.wants_write() {
                return Err(std::io::Error::new(
                    ErrorKind::WriteZero,
                    "TLS connection takes no more data",
                ));
            }
            bytes = &bytes[taken..];
        }
    }

    /// Run the TLS handshake to its end within `deadline`.
    fn handshake(&self, addr: SocketAddr, deadline: Instant, initiator: bool) -> Result<()> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        let mut first_read = true;
        // Bounded by the deadline: every socket operation has a timeout of the time left.
        loop {
            {
                let mut state = self.lock();
                self.tcp
                    .set_write_timeout(Some(remaining(deadline)?))
                    .map_err(|e| Error::io("setting a write timeout", e))?;
                self.flush(&mut state)
                    .map_err(|e| io_failure(addr, "TLS handshake", e))?;
                if !state.conn.is_handshaking() {
                    return Ok(());
                }
            }
            self.tcp
                .set_read_timeout(Some(remaining(deadline)?))
                .map_err(|e| Error::io("setting a read timeout", e))?;
            let n = match (&self.tcp).read(&mut chunk) {
                Ok(0) => {
                    return Err(Error::Unavailable(format!(
                        "{addr} closed the connection during the TLS handshake"
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_failure(addr, "TLS handshake", e)),
            };
            if initiator && first_read && chunk.first() == Some(&b'H') {
                // A plaintext haven frame instead of a ServerHello: a member without TLS.
                return Err(plaintext_answer(&self.tcp, &chunk[..n], addr, deadline));
            }
            first_read = false;
            let mut state = self.lock();
            state.inbox.extend_from_slice(&chunk[..n]);
            // Bounded: every round takes bytes from the inbox or fails.
            while !state.inbox.is_empty() {
                if let Err(e) = self.ingest(&mut state) {
                    let why = state.failure.clone().unwrap_or_else(|| e.to_string());
                    return Err(Error::Auth(format!(
                        "TLS handshake with {addr} failed: {why}"
                    )));
                }
            }
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(
            "handshake not finished in time (TLS)".into(),
        ));
    }
    Ok(left)
}

fn io_failure(addr: SocketAddr, what: &str, e: std::io::Error) -> Error {
    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        Error::Timeout(format!("{what} with {addr} not finished in time"))
    } else {
        Error::io(format!("{what} with {addr}"), e)
    }
}

/// A TLS initiator received `head` (starting with `H`): read the plaintext haven frame it
/// begins and report it (a refusal, normally) as `Auth`.
fn plaintext_answer(tcp: &TcpStream, head: &[u8], addr: SocketAddr, deadline: Instant) -> Error {
    let fallback = || {
        Error::Auth(format!(
            "{addr} answered the TLS handshake in plaintext: that member does not use TLS \
             (configure TLS on every member, or connect without --tls-ca)"
        ))
    };
    let mut reader = FrameReader::new(MAX_HANDSHAKE_FRAME_BYTES, 0);
    let mut source = std::io::Cursor::new(head.to_vec()).chain(tcp);
    // Bounded by the deadline (each timed-out read re-checks it).
    loop {
        let Ok(left) = remaining(deadline) else {
            return fallback();
        };
        if tcp.set_read_timeout(Some(left)).is_err() {
            return fallback();
        }
        match reader.next(&mut source) {
            Ok(Next::Frame {
                kind: kind::REFUSAL,
                payload,
            }) => {
                return match codec::decode_value::<Refusal>(payload) {
                    Ok(refusal) => {
                        Error::Auth(format!("{addr} refused the connection: {}", refusal.reason))
                    }
                    Err(_) => fallback(),
                }
            }
            Ok(Next::TimedOut) => {}
            _ => return fallback(),
        }
    }
}

/// The byte stream of one connection: a TCP socket, or TLS over one. Clones share the socket
/// (and the TLS state); `Read` is used by one thread, writes by any, under the TLS lock.
pub(crate) enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS; see the module doc for how threads share it.
    Tls(Arc<TlsIo>),
}

impl Stream {
    /// The socket under the stream (timeouts, shutdown, peeking).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(io) => &io.tcp,
        }
    }

    /// Another handle on the same connection.
    pub(crate) fn try_clone(&self) -> std::io::Result<Stream> {
        match self {
            Stream::Plain(tcp) => Ok(Stream::Plain(tcp.try_clone()?)),
            Stream::Tls(io) => Ok(Stream::Tls(Arc::clone(io))),
        }
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        self.tcp().shutdown(how)
    }

    /// Write all of `bytes` (blocking up to the write timeout).
    pub(crate) fn write_all_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(tcp) => (&*tcp).write_all(bytes),
            Stream::Tls(io) => io.write_all(bytes),
        }
    }

    /// The TLS error that broke this connection, if one did.
    pub(crate) fn tls_failure(&self) -> Option<String> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(io) => io.lock().failure.clone(),
        }
    }

    /// 32 bytes both ends of this TLS session compute alike and nobody else can (RFC 5705
    /// exporter); zeros in plaintext. The haven handshake MACs them, binding its proof to
    /// this TLS session.
    pub(crate) fn channel_binding(&self) -> Result<[u8; 32]> {
        match self {
            Stream::Plain(_) => Ok([0; 32]),
            Stream::Tls(io) => io
                .lock()
                .conn
                .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
                .map_err(|e| Error::Auth(format!("TLS exporter: {e}"))),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(out),
            Stream::Tls(io) => io.read(out),
        }
    }
}

/// Open the initiator's side: TLS when `tls` is given (checking that the acceptor's
/// certificate is valid for `addr`'s IP address), else plaintext.
pub(crate) fn connect_stream(
    tcp: TcpStream,
    tls: Option<&Arc<ClientConfig>>,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<Stream> {
    let Some(config) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let name = ServerName::IpAddress(addr.ip().into());
    let conn =
        rustls::ClientConnection::new(Arc::clone(config), name).map_err(|e| invalid("TLS", e))?;
    let io = Arc::new(TlsIo {
        tcp,
        state: Mutex::new(TlsState {
            conn: conn.into(),
            inbox: Vec::new(),
            failure: None,
        }),
    });
    io.handshake(addr, deadline, true)?;
    Ok(Stream::Tls(io))
}

/// Open the acceptor's side: look at the first byte, refuse a mismatch with a plaintext
/// refusal frame (`Auth`), else run the TLS handshake (when `tls` is given) and say which CA
/// signed the initiator's certificate.
pub(crate) fn accept_stream(
    tcp: TcpStream,
    tls: Option<&MemberTls>,
    me: NodeId,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<(Stream, PeerCertificates)> {
    let first = peek_first_byte(&tcp, addr, deadline)?;
    let is_tls = first == TLS_HANDSHAKE_RECORD;
    let Some(tls) = tls else {
        if is_tls {
            let reason = format!(
                "member {me} does not use TLS: connect without --tls-ca, or give every member \
                 --tls-cert, --tls-key and --tls-ca"
            );
            return Err(refuse_plain(
                tcp,
                RefusalCode::TlsNotServed,
                reason,
                deadline,
            ));
        }
        return Ok((Stream::Plain(tcp), PeerCertificates::default()));
    };
    if !is_tls {
        let reason = format!(
            "member {me} requires TLS: give --tls-ca (and --tls-cert/--tls-key if it requires \
             client certificates)"
        );
        return Err(refuse_plain(
            tcp,
            RefusalCode::TlsRequired,
            reason,
            deadline,
        ));
    }
    let conn =
        rustls::ServerConnection::new(Arc::clone(&tls.server)).map_err(|e| invalid("TLS", e))?;
    let io = Arc::new(TlsIo {
        tcp,
        state: Mutex::new(TlsState {
            conn: conn.into(),
            inbox: Vec::new(),
            failure: None,
        }),
    });
    if let Err(e) = io.handshake(addr, deadline, false) {
        linger_close(&io.tcp);
        return Err(e);
    }
    let certs = {
        let state = io.lock();
        let presented = state.conn.peer_certificates().unwrap_or(&[]);
        let signed_by = |verifier: &Arc<dyn ClientCertVerifier>| match presented.split_first() {
            Some((leaf, intermediates)) => verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .is_ok(),
            None => false,
        };
        PeerCertificates {
            tls: true,
            member: signed_by(&tls.member_ca),
            client: tls.client_ca.as_ref().is_some_and(signed_by),
        }
    };
    Ok((Stream::Tls(io), certs))
}

fn peek_first_byte(tcp: &TcpStream, addr: SocketAddr, deadline: Instant) -> Result<u8> {
    let mut byte = [0u8; 1];
    // Bounded by the deadline.
    loop {
        tcp.set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| Error::io("setting a read timeout", e))?;
        match tcp.peek(&mut byte) {
            Ok(0) => {
                return Err(Error::Unavailable(format!(
                    "{addr} closed the connection before the handshake"
                )))
            }
            Ok(_) => return Ok(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure(addr, "handshake", e)),
        }
    }
}

/// Send a plaintext refusal frame, close gently, and return the error this side reports.
fn refuse_plain(tcp: TcpStream, code: RefusalCode, reason: String, deadline: Instant) -> Error {
    let refusal = Refusal::new(code, reason.clone());
    let mut frame = Vec::new();
    if codec::append_frame(&mut frame, kind::REFUSAL, 0, &refusal).is_ok() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let _ = tcp.set_write_timeout(Some(left));
        let _ = (&tcp).write_all(&frame);
    }
    linger_close(&tcp);
    Error::Auth(reason)
}

/// Stop writing, then read and discard for at most [`LINGER`], so that what was just written
/// (a refusal, an alert) reaches the other side before the socket closes.
fn linger_close(tcp: &TcpStream) {
    let _ = tcp.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    // Bounded by LINGER.
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || tcp.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*tcp).read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
