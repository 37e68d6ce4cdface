//! Frames on a TCP stream: the frame kinds of the wire protocol and a reader that survives read
//! timeouts in the middle of a frame.
//!
//! Every byte on a haven connection is a codec frame (`src/codec`, `docs/FORMAT.md`). The reader
//! checks a frame's declared length against its current limit *before* it grows its buffer, so a
//! stranger can make it allocate at most one handshake frame, and an authenticated peer at most
//! one maximal frame.

use crate::codec::{self, FrameHeader, FRAME_HEADER_BYTES};
use crate::error::{Error, Result};
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Frame kinds on a haven connection (the frame header's `kind` byte).
pub(crate) mod kind {
    /// Handshake, initiator to acceptor: version, cluster, role, nonce.
    pub const HELLO: u8 = 1;
    /// Handshake, acceptor to initiator: acceptor id and nonce.
    pub const CHALLENGE: u8 = 2;
    /// Handshake, initiator to acceptor: the initiator's MAC.
    pub const PROOF: u8 = 3;
    /// Handshake, acceptor to initiator: the acceptor's MAC; the connection is open.
    pub const WELCOME: u8 = 4;
    /// Either direction, during or right after the handshake: why the connection is refused.
    pub const REFUSAL: u8 = 5;
    /// Peer lane: one application message.
    pub const PEER_MESSAGE: u8 = 16;
    /// Peer lane or client connection: nothing to say, still alive (empty payload).
    pub const KEEPALIVE: u8 = 17;
    /// Client to member: `(request_id, request)`.
    pub const CLIENT_REQUEST: u8 = 32;
    /// Member to client: `(request_id, response)`.
    pub const CLIENT_RESPONSE: u8 = 33;
    /// A member's pushed frame to a remote client (a watch's events), not an answer to a request.
    pub const CLIENT_PUSH: u8 = 34;
}

/// Initial size of a reader's buffer; it grows to the largest frame seen and shrinks back once
/// it is empty and larger than [`SHRINK_ABOVE_BYTES`].
const DEFAULT_BUFFER_BYTES: usize = 64 * 1024;
const SHRINK_ABOVE_BYTES: usize = 1024 * 1024;

/// What [`FrameReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<'a> {
    /// A complete, verified frame.
    Frame {
        /// The frame's kind byte.
        kind: u8,
        /// The verified payload (borrowed from the reader's buffer).
        payload: &'a [u8],
    },
    /// The stream's read timeout expired; any partial frame is kept for the next call.
    TimedOut,
    /// The other side closed the connection cleanly, between frames.
    Closed,
}

/// The state of the frame at the front of the buffer.
enum Parsed {
    /// Complete and verified: its kind, where its payload is, its length with padding.
    Complete {
        kind: u8,
        payload: std::ops::Range<usize>,
        total: usize,
    },
    /// Incomplete: the bytes needed from the frame's start.
    Needs(usize),
}

/// Reads frames from a byte stream with a limit and a salt that can change after the handshake.
pub(crate) struct FrameReader {
    /// Bytes `start..filled` are received and not yet consumed; the rest is spare room.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    max_payload: usize,
    salt: u64,
    /// Stream offset of `buf[start]`, for error messages.
    offset: u64,
}

impl FrameReader {
    /// A reader accepting frames of at most `max_payload` bytes checksummed with `salt`.
    pub(crate) fn new(max_payload: usize, salt: u64) -> FrameReader {
        FrameReader {
            buf: vec![0; Self::initial_len(max_payload)],
            start: 0,
            filled: 0,
            max_payload,
            salt,
            offset: 0,
        }
    }

    fn initial_len(max_payload: usize) -> usize {
        codec::frame_len(max_payload).min(DEFAULT_BUFFER_BYTES)
    }

    /// Change the limit and the salt (after the handshake). Buffered bytes are kept.
    pub(crate) fn set_limits(&mut self, max_payload: usize, salt: u64) {
        self.max_payload = max_payload;
        self.salt = salt;
    }

    /// Bytes of buffer this reader holds (for tests: proves a huge declared length allocated
    /// nothing).
    #[cfg(test)]
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Parse the frame at `start`: complete and verified, or how many bytes from `start` it
    /// needs (the header's length is checked against the limit first).
    fn parse(&self) -> Result<Parsed> {
        let available = self.filled - self.start;
        let Some(head) = self
            .buf
            .get(self.start..self.start + FRAME_HEADER_BYTES)
            .filter(|_| available >= FRAME_HEADER_BYTES)
        else {
            return Ok(Parsed::Needs(FRAME_HEADER_BYTES));
        };
        let mut head_bytes = [0u8; FRAME_HEADER_BYTES];
        head_bytes.copy_from_slice(head);
        let header = FrameHeader::parse(&head_bytes, self.max_payload)
            .map_err(|defect| defect.into_error(self.offset))?;
        let total = header.frame_len();
        if available < total {
            return Ok(Parsed::Needs(total));
        }
        let payload_start = self.start + FRAME_HEADER_BYTES;
        let range = payload_start..payload_start + header.payload_len as usize;
        let payload = self
            .buf
            .get(range.clone())
            .ok_or_else(|| Error::corrupt(self.offset, "frame outside the read buffer"))?;
        codec::verify_frame(&header, self.salt, payload)
            .map_err(|e| e.map_corrupt(|_, reason| (self.offset, reason)))?;
        Ok(Parsed::Complete {
            kind: header.kind,
            payload: range,
            total,
        })
    }

    /// Read until one whole frame is buffered, then return it. Reads as much as the stream
    /// offers (up to the buffer's size) per system call, so coalesced frames cost one read.
    pub(crate) fn next<R: Read>(&mut self, stream: &mut R) -> Result<Next<'_>> {
        // Bounded: every iteration either returns or reads at least one byte of a frame whose
        // length is capped by `max_payload`, except for `Interrupted`, which is retried.
        loop {
            let needed = match self.parse()? {
                Parsed::Complete {
                    kind,
                    payload,
                    total,
                } => {
                    self.start += total;
                    self.offset += total as u64;
                    let payload = self.buf.get(payload).unwrap_or(&[]);
                    return Ok(Next::Frame { kind, payload });
                }
                Parsed::Needs(needed) => needed,
            };
            let available = self.filled - self.start;
            if available == 0 {
                self.start = 0;
                self.filled = 0;
                if self.buf.len() > SHRINK_ABOVE_BYTES {
                    self.buf = vec![0; Self::initial_len(self.max_payload)];
                }
            }
            if self.start + needed > self.buf.len() {
                // Move the partial frame to the front, then grow to the (already validated)
                // frame length if it still does not fit.
                self.buf.copy_within(self.start..self.filled, 0);
                self.filled = available;
                self.start = 0;
                if needed > self.buf.len() {
                    self.buf.resize(needed, 0);
                }
            }
            let spare = self.buf.get_mut(self.filled..).unwrap_or(&mut []);
            match stream.read(spare) {
                Ok(0) if available == 0 => return Ok(Next::Closed),
                Ok(0) => {
                    return Err(Error::corrupt(
                        self.offset,
                        format!("connection closed after {available} bytes of a frame"),
                    ))
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(Next::TimedOut)
                }
                Err(e) => return Err(Error::io("reading a frame", e)),
            }
        }
    }
}

/// Turn off Nagle's algorithm: haven writes whole batches itself, and a heartbeat that waits
/// 40 ms for an ACK would defeat the point of sending it.
pub(crate) fn configure_socket(stream: &TcpStream) -> Result<()> {
    stream
        .set_nodelay(true)
        .map_err(|e| Error::io("setting TCP_NODELAY", e))
}

/// Whether the other side has closed (or reset) this connection, without blocking and without
/// consuming anything. A sender checks this before writing so that a restarted peer's first
/// message is not written into a dead socket and lost.
#[cfg(unix)]
pub(crate) fn peer_has_closed(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: the fd is open for the lifetime of `stream`, and the buffer is one valid byte.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == 0 {
        return true;
    }
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return !matches!(
            err.kind(),
            ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::TimedOut
        );
    }
    // The acceptor never writes after the handshake, except a refusal: treat any unexpected
    // byte as "this connection is not usable any more".
    true
}

/// Without `recv(MSG_PEEK)` a dead connection is found by the next failing write instead.
#[cfg(not(unix))]
pub(crate) fn peer_has_closed(_stream: &TcpStream) -> bool {
    false
}

/// A connection is written directly by the thread that has a frame for it (instead of waking
/// its writer thread) only when nothing was written to it for this long; busier connections
/// go through the writer thread, which coalesces what queues up into one write (at 64 writers
/// a connection carries a frame every few tens of microseconds; at one writer, one every few
/// hundred).
pub(crate) const DIRECT_WRITE_IDLE: Duration = Duration::from_micros(50);
/// A write buffer that grew past this (one huge frame) is released after the write.
pub(crate) const KEEP_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The direct-write state of one connection (a peer lane or a client connection), kept under
/// the lock that makes its holder the only writer of the connection. The writer thread takes
/// `leftover` before anything else and stamps `last_write` after its own writes.
#[derive(Default)]
pub(crate) struct DirectWrites {
    /// The tail of a direct write that the socket did not take at once (its send buffer was
    /// full).
    pub(crate) leftover: Vec<u8>,
    /// Encoding buffer of direct writes, kept between them.
    buf: Vec<u8>,
    /// When the last write (direct or by the writer thread) ended.
    pub(crate) last_write: Option<Instant>,
}

/// What [`DirectWrites::write`] did.
pub(crate) enum Direct {
    /// The value does not frame (too large): nothing written; the writer thread reports it.
    Unframed,
    /// The frame is out, all of it or (`partial`) its head, the rest in `leftover`.
    Sent { bytes: usize, partial: bool },
    /// The socket failed; nothing more should be written to it.
    Failed(std::io::Error),
}

impl DirectWrites {
    /// No leftover to write first, and quiet for [`DIRECT_WRITE_IDLE`].
    pub(crate) fn ready(&self) -> bool {
        self.leftover.is_empty()
            && self
                .last_write
                .map_or(true, |at| at.elapsed() >= DIRECT_WRITE_IDLE)
    }

    /// Frame `value` and write it to `stream` without blocking; what the socket does not take
    /// at once goes to `leftover`.
    pub(crate) fn write<T: bincode::Encode>(
        &mut self,
        stream: &TcpStream,
        kind: u8,
        salt: u64,
        value: &T,
    ) -> Direct {
        self.buf.clear();
        if codec::append_frame(&mut self.buf, kind, salt, value).is_err() {
            return Direct::Unframed;
        }
        let sent = send_nonblocking(stream, &self.buf);
        self.last_write = Some(Instant::now());
        let result = match sent {
            Ok(written) => {
                let partial = written < self.buf.len();
                if partial {
                    self.leftover.extend_from_slice(&self.buf[written..]);
                }
                Direct::Sent {
                    bytes: written,
                    partial,
                }
            }
            Err(e) => Direct::Failed(e),
        };
        if self.buf.capacity() > KEEP_WRITE_BUFFER_BYTES {
            self.buf = Vec::new();
        }
        result
    }
}

/// Write as much of `bytes` as the socket takes now, without blocking (and without SIGPIPE):
/// the number of bytes written, 0 if the send buffer is full.
#[cfg(unix)]
pub(crate) fn send_nonblocking(stream: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // Bounded: retried only when a signal interrupted the call.
    loop {
        // SAFETY: the fd is open for the lifetime of `stream`, and `bytes` is a valid buffer
        // of `bytes.len()` bytes.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            ErrorKind::WouldBlock => return Ok(0),
            ErrorKind::Interrupted => continue,
            _ => return Err(err),
        }
    }
}

/// Without a non-blocking send, nothing is written directly (the caller queues instead).
#[cfg(not(unix))]
pub(crate) fn send_nonblocking(_stream: &TcpStream, _bytes: &[u8]) -> std::io::Result<usize> {
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_FRAME_PAYLOAD_BYTES;
    use std::io::Cursor;

    /// A stream that hands out its bytes a few at a time and times out in between.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
        timeout_next: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.timeout_next {
                self.timeout_next = false;
                return Err(std::io::Error::from(ErrorKind::WouldBlock));
            }
            self.timeout_next = true;
            let n = self.step.min(out.len()).min(self.bytes.len() - self.at);
            out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn frames(salt: u64, values: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            codec::append_frame(&mut out, kind::PEER_MESSAGE, salt, v).unwrap();
        }
        out
    }

    #[test]
    fn sockets_have_nodelay_and_see_the_peer_close() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        configure_socket(&client).unwrap();
        assert!(client.nodelay().unwrap());
        assert!(!peer_has_closed(&client));
        drop(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !peer_has_closed(&client) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        #[cfg(unix)]
        assert!(peer_has_closed(&client));
    }

    #[test]
    fn partial_frames_survive_timeouts() {
        let values: Vec<u64> = (0..50).map(|i| i * 1_000_003).collect();
        let mut stream = Trickle {
            bytes: frames(9, &values),
            at: 0,
            step: 3,
            timeout_next: false,
        };
        let mut reader = FrameReader::new(1024, 9);
        let mut got = Vec::new();
        for _ in 0..10_000 {
            match reader.next(&mut stream).unwrap() {
                Next::Frame { kind, payload } => {
                    assert_eq!(kind, kind::PEER_MESSAGE);
                    got.push(codec::decode_value::<u64>(payload).unwrap());
                }
                Next::TimedOut => {}
                Next::Closed => break,
            }
        }
        assert_eq!(got, values);
    }

    #[test]
    fn huge_declared_length_is_refused_before_allocating() {
        // A header that announces 4 GiB, as a stranger might send it.
        let mut bytes = Vec::new();
        codec::append_raw_frame(&mut bytes, kind::HELLO, 0, &[0u8; 8]).unwrap();
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut reader = FrameReader::new(1024, 0);
        let before = reader.buffer_bytes();
        match reader.next(&mut Cursor::new(bytes)) {
            Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("over the limit")),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(reader.buffer_bytes(), before);
        assert!(before <= codec::frame_len(1024));

        // The same after the handshake, against the (larger) application limit.
        let mut bytes = Vec::new();
        codec::append_raw_frame(&mut bytes, kind::PEER_MESSAGE, 0, &[0u8; 8]).unwrap();
        bytes[4..8].copy_from_slice(&((MAX_FRAME_PAYLOAD_BYTES as u32) + 1).to_le_bytes());
        let mut reader = FrameReader::new(MAX_FRAME_PAYLOAD_BYTES, 0);
        assert!(matches!(
            reader.next(&mut Cursor::new(bytes)),
            Err(Error::Corrupt { .. })
        ));
        assert!(reader.buffer_bytes() <= DEFAULT_BUFFER_BYTES);
    }

    #[test]
    fn wrong_salt_and_garbage_are_corrupt() {
        let bytes = frames(1, &[5]);
        let mut reader = FrameReader::new(1024, 2);
        assert!(matches!(
            reader.next(&mut Cursor::new(bytes)),
            Err(Error::Corrupt { .. })
        ));
        let mut reader = FrameReader::new(1024, 0);
        let garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        match reader.next(&mut Cursor::new(garbage)) {
            Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("magic"), "{reason}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn close_mid_frame_is_corrupt_and_between_frames_is_closed() {
        let bytes = frames(0, &[1, 2]);
        let cut = bytes.len() - 3;
        let mut reader = FrameReader::new(1024, 0);
        let mut stream = Cursor::new(bytes[..cut].to_vec());
        assert!(matches!(
            reader.next(&mut stream).unwrap(),
            Next::Frame { .. }
        ));
        assert!(matches!(
            reader.next(&mut stream),
            Err(Error::Corrupt { .. })
        ));
        let mut reader = FrameReader::new(1024, 0);
        let mut stream = Cursor::new(frames(0, &[1]));
        assert!(matches!(
            reader.next(&mut stream).unwrap(),
            Next::Frame { .. }
        ));
        assert_eq!(reader.next(&mut stream).unwrap(), Next::Closed);
    }

    #[test]
    fn buffer_grows_for_a_large_frame_and_shrinks_afterwards() {
        let big = vec![7u8; 3 * 1024 * 1024];
        let mut bytes = Vec::new();
        codec::append_frame(&mut bytes, kind::PEER_MESSAGE, 0, &big).unwrap();
        codec::append_frame(&mut bytes, kind::PEER_MESSAGE, 0, &1u64).unwrap();
        let mut stream = Cursor::new(bytes);
        let mut reader = FrameReader::new(MAX_FRAME_PAYLOAD_BYTES, 0);
        match reader.next(&mut stream).unwrap() {
            Next::Frame { payload, .. } => {
                assert_eq!(codec::decode_value::<Vec<u8>>(payload).unwrap(), big)
            }
            other => panic!("expected a frame, got {other:?}"),
        }
        assert!(reader.buffer_bytes() >= big.len());
        assert!(matches!(
            reader.next(&mut stream).unwrap(),
            Next::Frame { .. }
        ));
        assert_eq!(reader.next(&mut stream).unwrap(), Next::Closed);
        assert!(reader.buffer_bytes() <= DEFAULT_BUFFER_BYTES);
    }
}
