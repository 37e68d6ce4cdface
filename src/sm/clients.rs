//! The client table: at-most-once application of client commands (Raft dissertation, section
//! 6.3). A client registers ([`ClientTable::register`]; its id is the log index of the
//! registration, so ids are never reused); the table remembers per client the last applied seq
//! and its result (`c` records, see `layout.rs`), holds at most `MAX_CLIENTS` clients and, when
//! full, evicts the client whose last applied command is oldest ([`ClientOrder`]).

use super::layout::{
    client_id_of, client_key, decode_record, sled_error, ClientRecord, PREFIX_CLIENT,
};
use super::overlay::Overlay;
use super::result::CommandResult;
use crate::codec::encode_value;
use crate::error::{Error, Result};
use crate::limits::{MAX_CLIENTS, MAX_RETAINED_RESULT_BYTES};
use crate::types::LogIndex;
use std::collections::BTreeSet;

/// The client id of commands that are not tracked for at-most-once application: they apply each
/// time they are committed. Meant for commands that are idempotent or that the runtime issues
/// itself; a client library always registers and uses its own id.
pub const UNTRACKED_CLIENT: u64 = 0;

/// The client eviction order: (last applied index, client id) of every client in the table,
/// so the first is the least recently applied client. Derived from the client records (each
/// carries its `last_index`), so it is kept in memory only and rebuilt from the tree at open
/// and after a restore: the table holds at most `MAX_CLIENTS` clients. Before layout 2 it was
/// stored as `l` keys, two sled writes per applied command.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ClientOrder {
    by_last_index: BTreeSet<(LogIndex, u64)>,
}

impl ClientOrder {
    /// The order of every client record in `tree`.
    pub(crate) fn load(tree: &sled::Tree) -> Result<ClientOrder> {
        let mut order = ClientOrder::default();
        for item in tree.scan_prefix([PREFIX_CLIENT]) {
            let (key, value) = item.map_err(|e| sled_error("loading the client table", e))?;
            let Some(client_id) = client_id_of(&key) else {
                return Err(Error::corrupt(0, "malformed client key in the state"));
            };
            let record: ClientRecord = decode_record("client", &value)?;
            order.insert(record.last_index, client_id);
        }
        Ok(order)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_last_index.len()
    }

    /// The least recently applied client.
    pub(crate) fn oldest(&self) -> Option<(LogIndex, u64)> {
        self.by_last_index.first().copied()
    }

    pub(crate) fn insert(&mut self, last_index: LogIndex, client_id: u64) {
        self.by_last_index.insert((last_index, client_id));
    }

    /// Whether the client was there.
    pub(crate) fn remove(&mut self, last_index: LogIndex, client_id: u64) -> bool {
        self.by_last_index.remove(&(last_index, client_id))
    }
}

/// A change of the client eviction order made by the batch being applied, kept so that a
/// batch that fails part-way leaves the order as it was (its overlay is dropped too).
enum OrderChange {
    Added(LogIndex, u64),
    Removed(LogIndex, u64),
}

/// What the table says about a tracked command before it runs.
pub(crate) enum Admission {
    /// Not to be applied now: answer with this (the remembered result of a retry, `Stale`,
    /// `UnknownClient`).
    Answer(CommandResult),
    /// Apply it; afterwards [`ClientTable::record`] the result. Carries the client's record
    /// before the command.
    Apply(ClientRecord),
}

/// The client table as one batch changes it: the records go through the batch's overlay, the
/// in-memory eviction order is changed in place with an undo log.
pub(crate) struct ClientTable<'o> {
    order: &'o mut ClientOrder,
    undo: Vec<OrderChange>,
}

impl<'o> ClientTable<'o> {
    pub(crate) fn new(order: &'o mut ClientOrder) -> ClientTable<'o> {
        ClientTable {
            order,
            undo: Vec::new(),
        }
    }

    /// Undo the batch's changes of the order (the caller drops the overlay).
    pub(crate) fn roll_back(mut self) {
        for change in self.undo.drain(..).rev() {
            match change {
                OrderChange::Added(index, id) => {
                    self.order.remove(index, id);
                }
                OrderChange::Removed(index, id) => self.order.insert(index, id),
            }
        }
    }

    fn order_add(&mut self, index: LogIndex, client_id: u64) {
        self.order.insert(index, client_id);
        self.undo.push(OrderChange::Added(index, client_id));
    }

    fn order_remove(&mut self, index: LogIndex, client_id: u64) -> Result<()> {
        if !self.order.remove(index, client_id) {
            return Err(Error::corrupt(
                0,
                format!(
                    "client {client_id} (last applied at {index}) is missing from the eviction order"
                ),
            ));
        }
        self.undo.push(OrderChange::Removed(index, client_id));
        Ok(())
    }

    /// Whether command `seq` of `client_id` is applied now: seq == last: the remembered
    /// result; seq < last: `Stale`; an unknown client: `UnknownClient`; otherwise apply.
    pub(crate) fn admit(
        &self,
        overlay: &Overlay<'_>,
        client_id: u64,
        seq: u64,
    ) -> Result<Admission> {
        let Some(record) = overlay.get_client(client_id)? else {
            return Ok(Admission::Answer(CommandResult::UnknownClient));
        };
        if seq == record.last_seq {
            return Ok(Admission::Answer(record.result));
        }
        if seq < record.last_seq {
            return Ok(Admission::Answer(CommandResult::Stale {
                last_seq: record.last_seq,
            }));
        }
        Ok(Admission::Apply(record))
    }

    /// Remember `result` as the outcome of command `seq` of `client_id`, applied at `index`
    /// (`before`: its record from [`ClientTable::admit`]); hands the result back.
    pub(crate) fn record(
        &mut self,
        overlay: &mut Overlay<'_>,
        client_id: u64,
        seq: u64,
        before: &ClientRecord,
        index: LogIndex,
        result: CommandResult,
    ) -> Result<CommandResult> {
        self.order_remove(before.last_index, client_id)?;
        self.order_add(index, client_id);
        let record = encode_client_record(seq, index, result)?;
        overlay.insert(client_key(client_id), record.bytes);
        Ok(record.result)
    }

    /// Register a client whose id is `index`, evicting the least recently applied client when
    /// the table is full.
    pub(crate) fn register(
        &mut self,
        overlay: &mut Overlay<'_>,
        index: LogIndex,
    ) -> Result<CommandResult> {
        if self.order.len() >= MAX_CLIENTS {
            let Some((last_index, evicted)) = self.order.oldest() else {
                return Err(Error::Fatal("MAX_CLIENTS is 0".into()));
            };
            self.order_remove(last_index, evicted)?;
            overlay.remove(client_key(evicted));
        }
        let client_id = index.0;
        let result = CommandResult::Registered { client_id };
        let record = ClientRecord {
            last_seq: 0,
            last_index: index,
            result: result.clone(),
        };
        overlay.put_encoded(client_key(client_id), &record)?;
        self.order_add(index, client_id);
        Ok(result)
    }
}

/// Replace the remembered result of `client_id` with `result` if its last applied command is
/// still `seq` (a lock wait that a later entry ended: a retry of the acquire must get the grant,
/// not the `Queued` it got first). The record's last index, and so the eviction order, stay.
pub(crate) fn amend(
    overlay: &mut Overlay<'_>,
    client_id: u64,
    seq: u64,
    result: CommandResult,
) -> Result<()> {
    if client_id == UNTRACKED_CLIENT {
        return Ok(());
    }
    let Some(record) = overlay.get_client(client_id)? else {
        return Ok(());
    };
    if record.last_seq != seq {
        return Ok(());
    }
    let amended = encode_client_record(seq, record.last_index, result)?;
    overlay.insert(client_key(client_id), amended.bytes);
    Ok(())
}

/// A client record, encoded, and the command's result (handed back to avoid a clone).
struct EncodedRecord {
    bytes: Vec<u8>,
    result: CommandResult,
}

/// Bytes of a bincode varint (see docs/FORMAT.md, "Values").
fn varint_len(v: u64) -> usize {
    match v {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Encode the client record after a command, encoding the result once: the record keeps the
/// result itself or, when the result's encoding is over `MAX_RETAINED_RESULT_BYTES`, only the
/// revision it was applied at (exactly as if the result had been measured on its own: the
/// record is `last_seq ‖ last_index ‖ result`, so the result's length is the record's minus the
/// two varints).
fn encode_client_record(
    last_seq: u64,
    index: LogIndex,
    result: CommandResult,
) -> Result<EncodedRecord> {
    let record = ClientRecord {
        last_seq,
        last_index: index,
        result,
    };
    let header = varint_len(last_seq) + varint_len(index.0);
    if let Ok(bytes) = encode_value(&record) {
        if bytes.len() - header <= MAX_RETAINED_RESULT_BYTES {
            return Ok(EncodedRecord {
                bytes,
                result: record.result,
            });
        }
    }
    // Too large to keep, or even to encode: remember only where it applied.
    let kept = ClientRecord {
        last_seq,
        last_index: index,
        result: CommandResult::NotRetained { revision: index },
    };
    Ok(EncodedRecord {
        bytes: encode_value(&kept)?,
        result: record.result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_the_codec() {
        for v in [
            0u64,
            250,
            251,
            65_535,
            65_536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
        ] {
            assert_eq!(varint_len(v), encode_value(&v).unwrap().len(), "{v}");
        }
    }

    #[test]
    fn a_result_over_the_limit_is_kept_as_its_revision_only() {
        let small = CommandResult::Rejected {
            reason: "x".repeat(100),
        };
        let record = encode_client_record(3, LogIndex(70_000), small.clone()).unwrap();
        assert_eq!(record.result, small);
        let decoded: ClientRecord = crate::codec::decode_value(&record.bytes).unwrap();
        assert_eq!(decoded.result, small);
        // The boundary is the result's own length, as before records were encoded once.
        for extra in [0usize, 1] {
            let reason_len = MAX_RETAINED_RESULT_BYTES - 3 - 1 + extra; // tag + 3-byte length
            let result = CommandResult::Rejected {
                reason: "y".repeat(reason_len),
            };
            let result_len = encode_value(&result).unwrap().len();
            let record = encode_client_record(1, LogIndex(5), result.clone()).unwrap();
            let decoded: ClientRecord = crate::codec::decode_value(&record.bytes).unwrap();
            if result_len <= MAX_RETAINED_RESULT_BYTES {
                assert_eq!(decoded.result, result);
            } else {
                assert_eq!(
                    decoded.result,
                    CommandResult::NotRetained {
                        revision: LogIndex(5)
                    }
                );
            }
        }
    }

    #[test]
    fn client_keys_sort_by_id_and_the_order_by_last_index() {
        assert!(client_key(1) < client_key(256));
        assert_eq!(client_id_of(&client_key(77)), Some(77));
        assert_eq!(client_id_of(b"c123"), None);
        let mut order = ClientOrder::default();
        order.insert(LogIndex(10), 1);
        order.insert(LogIndex(2), 9);
        order.insert(LogIndex(2), 3);
        assert_eq!(order.oldest(), Some((LogIndex(2), 3)));
        assert!(order.remove(LogIndex(2), 3));
        assert!(!order.remove(LogIndex(2), 3));
        assert_eq!(order.oldest(), Some((LogIndex(2), 9)));
        assert_eq!(order.len(), 2);
    }
}
