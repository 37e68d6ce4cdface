//! The envelope every stored state record shares: decoding with the record's kind named in the
//! error. Below `layout.rs` (which knows every key) and the feature records kept apart from it
//! (`map_record.rs`).

use crate::codec::decode_value;
use crate::error::{Error, Result};
use bincode::Decode;

/// Decode a stored record, naming the key's kind in the error.
pub(crate) fn decode_record<T: Decode<()>>(what: &str, bytes: &[u8]) -> Result<T> {
    decode_value(bytes).map_err(|e| with_context(what, e))
}

/// Name the kind of record in a decoding error.
pub(crate) fn with_context(what: &str, e: Error) -> Error {
    match e {
        Error::Corrupt {
            file,
            offset,
            reason,
        } => Error::Corrupt {
            file,
            offset,
            reason: format!("state {what} record: {reason}"),
        },
        other => other,
    }
}
