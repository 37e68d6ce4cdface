//! The one place bytes are encoded and decoded.
//!
//! Two layers:
//! - **Values** are encoded with bincode 2 under one fixed configuration (little endian,
//!   variable-length integers) and a decode limit, so untrusted input can never make the
//!   decoder allocate more than [`MAX_FRAME_PAYLOAD_BYTES`].
//! - **Frames** wrap a value for storage and transmission: a 16-byte header (magic, version,
//!   kind, length, CRC32) followed by the payload, zero-padded to a multiple of 8 bytes. The
//!   checksum is *salted* by the caller (the WAL uses the segment number) so bytes that were
//!   valid in another context never verify in this one. `docs/FORMAT.md` gives the layout.
//!
//! Decoding never panics: bad length, bad magic, bad checksum or trailing bytes give
//! [`Error::Corrupt`]; a version this build does not know gives [`Error::UnsupportedVersion`].

use crate::error::{Error, Result};
use crate::limits::MAX_FRAME_PAYLOAD_BYTES;
use bincode::{BorrowDecode, Decode, Encode};

/// First two bytes of every frame: ASCII "HV".
pub const FRAME_MAGIC: [u8; 2] = *b"HV";
/// The frame format version this build writes and the newest it reads.
pub const FRAME_VERSION: u8 = 1;
/// Size of the frame header in bytes.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Frames start and end on multiples of this many bytes.
pub const FRAME_ALIGN: usize = 8;

/// The bincode configuration used for every value haven encodes. Changing it is a format change.
fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_FRAME_PAYLOAD_BYTES>()
}

/// Encode a value, appending its bytes to `out`. Fails with `InvalidArgument` if the encoding
/// would exceed [`MAX_FRAME_PAYLOAD_BYTES`] (nothing is appended then).
pub fn encode_value_into<T: Encode>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    match bincode::encode_into_std_write(value, out, config()) {
        Ok(_) if out.len() - start <= MAX_FRAME_PAYLOAD_BYTES => Ok(()),
        Ok(_) => {
            let len = out.len() - start;
            out.truncate(start);
            Err(Error::InvalidArgument(format!(
                "encoded value is {len} bytes, over the limit of {MAX_FRAME_PAYLOAD_BYTES}"
            )))
        }
        Err(e) => {
            out.truncate(start);
            Err(Error::InvalidArgument(format!("cannot encode value: {e}")))
        }
    }
}

/// Encode a value into a new buffer.
pub fn encode_value<T: Encode>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_value_into(value, &mut out)?;
    Ok(out)
}

/// Decode a value that must occupy all of `bytes`. Never panics, never allocates more than
/// [`MAX_FRAME_PAYLOAD_BYTES`]; any defect is `Corrupt` (offset 0: the caller knows where the
/// buffer came from and can add context with [`Error::in_file`]).
pub fn decode_value<T: Decode<()>>(bytes: &[u8]) -> Result<T> {
    match bincode::decode_from_slice::<T, _>(bytes, config()) {
        Ok((value, read)) if read == bytes.len() => Ok(value),
        Ok((_, read)) => Err(Error::corrupt(
            read as u64,
            format!("{} trailing bytes after value", bytes.len() - read),
        )),
        Err(e) => Err(Error::corrupt(0, format!("cannot decode value: {e}"))),
    }
}

/// Decode a value at the start of `bytes`, ignoring whatever follows it: for reading the
/// leading fields of a value whose rest this build may not understand (a request of a newer
/// protocol version). Same limits as [`decode_value`]; any defect is `Corrupt`.
pub fn decode_prefix<T: Decode<()>>(bytes: &[u8]) -> Result<T> {
    bincode::decode_from_slice::<T, _>(bytes, config())
        .map(|(value, _)| value)
        .map_err(|e| Error::corrupt(0, format!("cannot decode value: {e}")))
}

/// [`decode_value`] for a type that borrows from `bytes` (byte slices are not copied). Same
/// checks: all of `bytes` must be one value, any defect is `Corrupt`.
pub fn decode_borrowed<'a, T: BorrowDecode<'a, ()>>(bytes: &'a [u8]) -> Result<T> {
    match bincode::borrow_decode_from_slice::<T, _>(bytes, config()) {
        Ok((value, read)) if read == bytes.len() => Ok(value),
        Ok((_, read)) => Err(Error::corrupt(
            read as u64,
            format!("{} trailing bytes after value", bytes.len() - read),
        )),
        Err(e) => Err(Error::corrupt(0, format!("cannot decode value: {e}"))),
    }
}

/// A parsed, not yet verified, frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame format version.
    pub version: u8,
    /// What the payload is; the meaning belongs to the stream (WAL record type, message type).
    pub kind: u8,
    /// Payload length in bytes (excluding header and padding).
    pub payload_len: u32,
    /// CRC32 over salt, header (without the CRC field) and payload.
    pub crc: u32,
}

/// Why a header could not be parsed. The WAL needs to tell an all-zero header (preallocated,
/// never written) from garbage, so this is richer than a plain `Corrupt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderDefect {
    /// Every byte of the header is zero: nothing was ever written here.
    Zeroed,
    /// The magic is wrong.
    BadMagic,
    /// The reserved bytes are not zero.
    BadReserved,
    /// The length is over the limit the caller allows.
    TooLong(u32),
}

impl HeaderDefect {
    /// This defect as a `Corrupt` error at `offset`.
    pub fn into_error(self, offset: u64) -> Error {
        let reason = match self {
            HeaderDefect::Zeroed => "zero-filled frame header".to_string(),
            HeaderDefect::BadMagic => "bad frame magic".to_string(),
            HeaderDefect::BadReserved => "non-zero reserved bytes in frame header".to_string(),
            HeaderDefect::TooLong(len) => format!("frame length {len} over the limit"),
        };
        Error::corrupt(offset, reason)
    }
}

impl FrameHeader {
    /// Parse a header, checking magic and length (against `max_payload`, before the caller
    /// allocates anything). The version is checked later, in [`verify_frame`], after the checksum
    /// proves the header bytes are the ones that were written.
    pub fn parse(
        bytes: &[u8; FRAME_HEADER_BYTES],
        max_payload: usize,
    ) -> std::result::Result<FrameHeader, HeaderDefect> {
        if bytes.iter().all(|&b| b == 0) {
            return Err(HeaderDefect::Zeroed);
        }
        if bytes[0..2] != FRAME_MAGIC {
            return Err(HeaderDefect::BadMagic);
        }
        if bytes[12..16] != [0, 0, 0, 0] {
            return Err(HeaderDefect::BadReserved);
        }
        let payload_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if payload_len as usize > max_payload.min(MAX_FRAME_PAYLOAD_BYTES) {
            return Err(HeaderDefect::TooLong(payload_len));
        }
        Ok(FrameHeader {
            version: bytes[2],
            kind: bytes[3],
            payload_len,
            crc: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        })
    }

    /// Total bytes of the frame on disk or wire: header + payload + padding.
    pub fn frame_len(&self) -> usize {
        frame_len(self.payload_len as usize)
    }
}

/// Total bytes of a frame with a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

fn checksum(salt: u64, header_without_crc: &[u8; 8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(header_without_crc);
    hasher.update(payload);
    hasher.finalize()
}

/// Append a frame carrying `payload` to `out`; returns the frame's length in bytes.
pub fn append_raw_frame(out: &mut Vec<u8>, kind: u8, salt: u64, payload: &[u8]) -> Result<usize> {
    if payload.len() > MAX_FRAME_PAYLOAD_BYTES {
        return Err(Error::InvalidArgument(format!(
            "frame payload of {} bytes over the limit of {MAX_FRAME_PAYLOAD_BYTES}",
            payload.len()
        )));
    }
    let mut head = [0u8; 8];
    head[0..2].copy_from_slice(&FRAME_MAGIC);
    head[2] = FRAME_VERSION;
    head[3] = kind;
    head[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = checksum(salt, &head, payload);
    let total = frame_len(payload.len());
    out.reserve(total);
    out.extend_from_slice(&head);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(payload);
    out.resize(out.len() + total - FRAME_HEADER_BYTES - payload.len(), 0);
    Ok(total)
}

/// Encode `value` and append it to `out` as one frame; returns the frame's length in bytes.
/// Encodes in place (no intermediate buffer): the header is patched once the payload length is
/// known.
pub fn append_frame<T: Encode>(out: &mut Vec<u8>, kind: u8, salt: u64, value: &T) -> Result<usize> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    if let Err(e) = encode_value_into(value, out) {
        out.truncate(start);
        return Err(e);
    }
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    let mut head = [0u8; 8];
    head[0..2].copy_from_slice(&FRAME_MAGIC);
    head[2] = FRAME_VERSION;
    head[3] = kind;
    head[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    let crc = checksum(salt, &head, &out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 8].copy_from_slice(&head);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    let total = frame_len(payload_len);
    out.resize(start + total, 0);
    Ok(total)
}

/// Verify a frame's checksum (with `salt`) and then its version.
pub fn verify_frame(header: &FrameHeader, salt: u64, payload: &[u8]) -> Result<()> {
    if payload.len() != header.payload_len as usize {
        return Err(Error::corrupt(
            FRAME_HEADER_BYTES as u64,
            format!(
                "frame payload is {} bytes, header says {}",
                payload.len(),
                header.payload_len
            ),
        ));
    }
    let mut head = [0u8; 8];
    head[0..2].copy_from_slice(&FRAME_MAGIC);
    head[2] = header.version;
    head[3] = header.kind;
    head[4..8].copy_from_slice(&header.payload_len.to_le_bytes());
    if checksum(salt, &head, payload) != header.crc {
        return Err(Error::corrupt(0, "frame checksum mismatch"));
    }
    if header.version != FRAME_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "frame",
            found: u32::from(header.version),
            supported: u32::from(FRAME_VERSION),
        });
    }
    Ok(())
}

/// A frame read whole from a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The frame's kind byte.
    pub kind: u8,
    /// The verified payload.
    pub payload: &'a [u8],
    /// Bytes the frame occupies, including header and padding.
    pub len: usize,
}

/// Read and verify one frame at the start of `buf`. Returns `Ok(None)` if `buf` is too short to
/// hold the frame its header announces (a stream needs more bytes; a file has a torn tail).
/// Offsets in errors are relative to the start of `buf`.
pub fn read_frame(buf: &[u8], salt: u64, max_payload: usize) -> Result<Option<Frame<'_>>> {
    let Some(head) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let mut head_bytes = [0u8; FRAME_HEADER_BYTES];
    head_bytes.copy_from_slice(head);
    let header = FrameHeader::parse(&head_bytes, max_payload).map_err(|d| d.into_error(0))?;
    let Some(payload) =
        buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.payload_len as usize)
    else {
        return Ok(None);
    };
    verify_frame(&header, salt, payload)?;
    let len = header.frame_len().min(buf.len());
    Ok(Some(Frame {
        kind: header.kind,
        payload,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, EntryKind, GroupId, LogIndex, Term};
    use proptest::prelude::*;

    fn entry(index: u64, data: Vec<u8>) -> Entry {
        Entry {
            group: GroupId(0),
            term: Term(3),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data,
        }
    }

    #[test]
    fn frame_round_trip_is_aligned_and_salted() {
        let mut buf = Vec::new();
        let len = append_frame(&mut buf, 7, 42, &entry(1, b"hello".to_vec())).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(len % FRAME_ALIGN, 0);
        let frame = read_frame(&buf, 42, MAX_FRAME_PAYLOAD_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(frame.kind, 7);
        assert_eq!(frame.len, len);
        let back: Entry = decode_value(frame.payload).unwrap();
        assert_eq!(back, entry(1, b"hello".to_vec()));
        // The same bytes under another salt (another segment) must not verify.
        assert!(matches!(
            read_frame(&buf, 43, MAX_FRAME_PAYLOAD_BYTES),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn raw_and_typed_frames_agree() {
        let value = entry(9, vec![1, 2, 3]);
        let mut typed = Vec::new();
        append_frame(&mut typed, 1, 5, &value).unwrap();
        let mut raw = Vec::new();
        append_raw_frame(&mut raw, 1, 5, &encode_value(&value).unwrap()).unwrap();
        assert_eq!(typed, raw);
    }

    #[test]
    fn unknown_version_is_unsupported_not_corrupt() {
        let mut head = [0u8; 8];
        head[0..2].copy_from_slice(&FRAME_MAGIC);
        head[2] = FRAME_VERSION + 1;
        head[3] = 1;
        head[4..8].copy_from_slice(&3u32.to_le_bytes());
        let payload = [1u8, 2, 3];
        let crc = checksum(0, &head, &payload);
        let mut buf = head.to_vec();
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&payload);
        match read_frame(&buf, 0, 1024) {
            Err(Error::UnsupportedVersion { found, .. }) => assert_eq!(found, 2),
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }

    #[test]
    fn oversized_length_is_refused_before_reading_payload() {
        let mut buf = Vec::new();
        append_raw_frame(&mut buf, 1, 0, &[0u8; 100]).unwrap();
        // The header announces 100 bytes; a reader allowing 64 refuses it from the header alone.
        match read_frame(&buf[..FRAME_HEADER_BYTES], 0, 64) {
            Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("over the limit")),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn zeroed_header_is_reported_as_zeroed() {
        assert_eq!(
            FrameHeader::parse(&[0u8; FRAME_HEADER_BYTES], 1024),
            Err(HeaderDefect::Zeroed)
        );
    }

    #[test]
    fn short_buffer_is_incomplete_not_error() {
        let mut buf = Vec::new();
        append_raw_frame(&mut buf, 1, 0, &[9u8; 40]).unwrap();
        for cut in 0..FRAME_HEADER_BYTES + 40 {
            assert_eq!(
                read_frame(&buf[..cut], 0, 1024).unwrap(),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_corrupt() {
        let mut bytes = encode_value(&7u64).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode_value::<u64>(&bytes),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn huge_declared_vector_length_does_not_allocate() {
        // A varint length prefix claiming u64::MAX elements must fail on the limit, not OOM.
        let mut bytes = vec![0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_value::<Vec<u8>>(&bytes),
            Err(Error::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn prop_entry_round_trips(index in 0u64.., term in 0u64.., data in proptest::collection::vec(any::<u8>(), 0..512), salt in any::<u64>()) {
            let e = Entry { group: GroupId(0), term: Term(term), index: LogIndex(index), kind: EntryKind::Normal, data };
            let mut buf = Vec::new();
            append_frame(&mut buf, 1, salt, &e).unwrap();
            let frame = read_frame(&buf, salt, MAX_FRAME_PAYLOAD_BYTES).unwrap().unwrap();
            prop_assert_eq!(decode_value::<Entry>(frame.payload).unwrap(), e);
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), salt in any::<u64>()) {
            let _ = read_frame(&bytes, salt, MAX_FRAME_PAYLOAD_BYTES);
            let _ = decode_value::<Entry>(&bytes);
            let _ = decode_value::<Vec<Entry>>(&bytes);
        }

        #[test]
        fn prop_mutated_frame_is_never_accepted_silently(data in proptest::collection::vec(any::<u8>(), 1..128), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let e = Entry { group: GroupId(0), term: Term(1), index: LogIndex(1), kind: EntryKind::Normal, data };
            let mut buf = Vec::new();
            let len = append_frame(&mut buf, 1, 0, &e).unwrap();
            let payload_end = FRAME_HEADER_BYTES + (buf[4] as usize | (buf[5] as usize) << 8);
            // Flip one bit in the header or payload (padding is not covered by the checksum).
            let at = pos.index(payload_end);
            buf[at] ^= 1 << bit;
            let accepted = read_frame(&buf[..len], 0, MAX_FRAME_PAYLOAD_BYTES);
            prop_assert!(!matches!(accepted, Ok(Some(_))), "mutated frame accepted: {:?}", accepted);
        }
    }
}
