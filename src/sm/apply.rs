//! Applying one command to the overlay: the KV semantics, transactions and the client table.
//!
//! Everything here is a pure function of the current state (read through the overlay) and the
//! command with its log index, so every member computes the same writes and results.

use super::command::{Command, Compare, Op, Txn, TxnOp, UNTRACKED_CLIENT};
use super::result::{
    CasResult, CommandResult, DeleteRangeResult, DeleteResult, KeyMeta, PutResult, TxnOpResult,
    TxnResult,
};
use super::store::{
    client_key, kv_key, ClientOrder, ClientRecord, Overlay, StoredValueRef, PREFIX_KV,
};
use crate::codec::encode_value;
use crate::error::{Error, Result};
use crate::limits::{MAX_CLIENTS, MAX_RETAINED_RESULT_BYTES};
use crate::types::LogIndex;

/// Whether `compare` holds against the state seen through `view`.
pub(crate) fn compare_holds(view: &Overlay<'_>, compare: &Compare) -> Result<bool> {
    let current = view.get_value(compare.key())?;
    let meta = current.as_ref().map(|v| v.meta);
    Ok(match compare {
        Compare::Value { op, value, .. } => current
            .as_ref()
            .is_some_and(|v| op.holds(v.value.as_slice(), value.as_slice())),
        Compare::Version { op, version, .. } => op.holds(&meta.map_or(0, |m| m.version), version),
        Compare::CreateRevision { op, revision, .. } => {
            op.holds(&meta.map_or(LogIndex(0), |m| m.create_revision), revision)
        }
        Compare::ModRevision { op, revision, .. } => {
            op.holds(&meta.map_or(LogIndex(0), |m| m.mod_revision), revision)
        }
        Compare::Exists { exists, .. } => current.is_some() == *exists,
    })
}

/// A change of the client eviction order made by the batch being applied, kept so that a
/// batch that fails part-way leaves the order as it was (its overlay is dropped too).
enum OrderChange {
    Added(LogIndex, u64),
    Removed(LogIndex, u64),
}

/// Applies commands of one batch to an overlay and keeps the client eviction order in step.
pub(crate) struct Applier<'t, 'o> {
    pub(crate) overlay: Overlay<'t>,
    clients: &'o mut ClientOrder,
    undo: Vec<OrderChange>,
}

impl<'t, 'o> Applier<'t, 'o> {
    pub(crate) fn new(overlay: Overlay<'t>, clients: &'o mut ClientOrder) -> Applier<'t, 'o> {
        Applier {
            overlay,
            clients,
            undo: Vec::new(),
        }
    }

    /// The batch's writes; its changes of the client order stay.
    pub(crate) fn into_writes(self) -> super::store::Writes {
        self.overlay.into_writes()
    }

    /// Undo the batch's changes of the client order (the caller drops the overlay).
    pub(crate) fn roll_back(mut self) {
        for change in self.undo.drain(..).rev() {
            match change {
                OrderChange::Added(index, id) => {
                    self.clients.remove(index, id);
                }
                OrderChange::Removed(index, id) => self.clients.insert(index, id),
            }
        }
    }

    fn order_add(&mut self, index: LogIndex, client_id: u64) {
        self.clients.insert(index, client_id);
        self.undo.push(OrderChange::Added(index, client_id));
    }

    fn order_remove(&mut self, index: LogIndex, client_id: u64) -> Result<()> {
        if !self.clients.remove(index, client_id) {
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

    /// Apply one decoded command at `index`.
    pub(crate) fn apply_command(
        &mut self,
        cmd: &Command,
        index: LogIndex,
    ) -> Result<CommandResult> {
        // Re-validate: a command proposed by a buggy or older runtime must still apply the same
        // way everywhere. It changes nothing and is not recorded in the client table, so a retry
        // gets the same rejection.
        if let Err(e) = cmd.validate() {
            return Ok(CommandResult::Rejected {
                reason: e.to_string(),
            });
        }
        if matches!(cmd.op, Op::RegisterClient) {
            return self.register(index);
        }
        if cmd.client_id == UNTRACKED_CLIENT {
            return self.execute(&cmd.op, index);
        }
        let Some(record) = self.overlay.get_client(cmd.client_id)? else {
            return Ok(CommandResult::UnknownClient);
        };
        if cmd.seq == record.last_seq {
            return Ok(record.result);
        }
        if cmd.seq < record.last_seq {
            return Ok(CommandResult::Stale {
                last_seq: record.last_seq,
            });
        }
        let result = self.execute(&cmd.op, index)?;
        self.order_remove(record.last_index, cmd.client_id)?;
        self.order_add(index, cmd.client_id);
        let record = encode_client_record(cmd.seq, index, result)?;
        self.overlay.insert(client_key(cmd.client_id), record.bytes);
        Ok(record.result)
    }

    /// Register a client whose id is `index`, evicting the least recently applied client when
    /// the table is full.
    fn register(&mut self, index: LogIndex) -> Result<CommandResult> {
        if self.clients.len() >= MAX_CLIENTS {
            let Some((last_index, evicted)) = self.clients.oldest() else {
                return Err(Error::Fatal("MAX_CLIENTS is 0".into()));
            };
            self.order_remove(last_index, evicted)?;
            self.overlay.remove(client_key(evicted));
        }
        let client_id = index.0;
        let result = CommandResult::Registered { client_id };
        let record = ClientRecord {
            last_seq: 0,
            last_index: index,
            result: result.clone(),
        };
        self.overlay.put_encoded(client_key(client_id), &record)?;
        self.order_add(index, client_id);
        Ok(result)
    }

    /// Run an operation (already validated) at revision `index`.
    fn execute(&mut self, op: &Op, index: LogIndex) -> Result<CommandResult> {
        Ok(match op {
            Op::RegisterClient => self.register(index)?,
            Op::Put { key, value } => CommandResult::Put(self.put(key, value, index)?),
            Op::Delete { key } => CommandResult::Delete(self.delete(key, index)?),
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
            } => {
                let current = self.overlay.get_value(key)?;
                let holds = match (expected, &current) {
                    (None, None) => true,
                    (Some(expected), Some(current)) => *expected == current.value,
                    _ => false,
                };
                if holds {
                    let put = self.put(key, new_value, index)?;
                    CommandResult::Cas(CasResult::Swapped {
                        revision: put.revision,
                        previous: put.previous,
                    })
                } else {
                    CommandResult::Cas(CasResult::Failed { current })
                }
            }
            Op::DeleteRange { start, end, limit } => {
                let from = kv_key(start);
                let to = match end {
                    Some(end) => kv_key(end),
                    None => vec![PREFIX_KV + 1],
                };
                let (doomed, more) = self.overlay.scan(&from, Some(&to), *limit as usize)?;
                let deleted = doomed.len() as u64;
                for (key, _) in doomed {
                    self.overlay.remove(key);
                }
                CommandResult::DeleteRange(DeleteRangeResult {
                    revision: index,
                    deleted,
                    more,
                })
            }
            Op::Txn(txn) => CommandResult::Txn(self.txn(txn, index)?),
        })
    }

    fn put(&mut self, key: &[u8], value: &[u8], index: LogIndex) -> Result<PutResult> {
        let previous = self.overlay.get_meta(key)?;
        let meta = match previous {
            Some(prev) => KeyMeta {
                create_revision: prev.create_revision,
                mod_revision: index,
                version: prev.version + 1,
            },
            None => KeyMeta {
                create_revision: index,
                mod_revision: index,
                version: 1,
            },
        };
        let stored = StoredValueRef { value, meta };
        self.overlay.put_encoded(kv_key(key), &stored)?;
        Ok(PutResult {
            revision: index,
            previous,
        })
    }

    fn delete(&mut self, key: &[u8], index: LogIndex) -> Result<DeleteResult> {
        let previous = self.overlay.get_meta(key)?;
        if previous.is_some() {
            self.overlay.remove(kv_key(key));
        }
        Ok(DeleteResult {
            revision: index,
            previous,
        })
    }

    fn txn(&mut self, txn: &Txn, index: LogIndex) -> Result<TxnResult> {
        let mut succeeded = true;
        for compare in &txn.compares {
            if !compare_holds(&self.overlay, compare)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                TxnOp::Put { key, value } => TxnOpResult::Put(self.put(key, value, index)?),
                TxnOp::Delete { key } => TxnOpResult::Delete(self.delete(key, index)?),
                TxnOp::Get { key } => TxnOpResult::Get(self.overlay.get_value(key)?),
            });
        }
        Ok(TxnResult {
            revision: index,
            succeeded,
            results,
        })
    }
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
}
