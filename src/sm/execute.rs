//! Running the commands of one batch: the dispatch from each [`Op`] to the feature that applies
//! it (`kv.rs`, `clients.rs`), behind the at-most-once check of the client table.
//!
//! Everything here is a pure function of the current state (read through the overlay) and the
//! command with its log index, so every member computes the same writes and results.

use super::clients::{Admission, ClientOrder, ClientTable};
use super::command::{Command, Op, UNTRACKED_CLIENT};
use super::kv;
use super::overlay::{Overlay, Writes};
use super::placement::{Change, Owner, OwnerId};
use super::result::CommandResult;
use super::ring::{self, BatchMaps, MapReader, PartitionMap};
use crate::error::Result;
use crate::types::LogIndex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs the commands of one batch against the batch's overlay and keeps the client table's
/// eviction order in step (with an undo log, see [`Executor::roll_back`]).
pub(crate) struct Executor<'t, 'o> {
    pub(crate) overlay: Overlay<'t>,
    clients: ClientTable<'o>,
    maps: BatchMaps<'o>,
}

impl<'t, 'o> Executor<'t, 'o> {
    pub(crate) fn new(
        overlay: Overlay<'t>,
        clients: &'o mut ClientOrder,
        maps: &'o MapReader,
    ) -> Executor<'t, 'o> {
        Executor {
            overlay,
            clients: ClientTable::new(clients),
            maps: BatchMaps::new(maps),
        }
    }

    /// The batch's writes and the partition maps it changed (to publish); its changes of the
    /// client order stay.
    pub(crate) fn into_writes(self) -> (Writes, BTreeMap<String, Arc<PartitionMap>>) {
        (self.overlay.into_writes(), self.maps.into_changed())
    }

    /// Undo the batch's changes of the client order (its writes are dropped with the overlay).
    pub(crate) fn roll_back(self) {
        self.clients.roll_back();
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
            return self.clients.register(&mut self.overlay, index);
        }
        if cmd.client_id == UNTRACKED_CLIENT {
            return self.execute(&cmd.op, index);
        }
        let before = match self.clients.admit(&self.overlay, cmd.client_id, cmd.seq)? {
            Admission::Answer(result) => return Ok(result),
            Admission::Apply(before) => before,
        };
        let result = self.execute(&cmd.op, index)?;
        self.clients.record(
            &mut self.overlay,
            cmd.client_id,
            cmd.seq,
            &before,
            index,
            result,
        )
    }

    /// Run an operation (already validated) at revision `index`: one arm per [`Op`] variant,
    /// each handing the work to its feature.
    fn execute(&mut self, op: &Op, index: LogIndex) -> Result<CommandResult> {
        let overlay = &mut self.overlay;
        Ok(match op {
            Op::RegisterClient => self.clients.register(overlay, index)?,
            Op::Put { key, value } => CommandResult::Put(kv::put(overlay, key, value, index)?),
            Op::Delete { key } => CommandResult::Delete(kv::delete(overlay, key, index)?),
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
            } => CommandResult::Cas(kv::compare_and_swap(
                overlay,
                key,
                expected.as_deref(),
                new_value,
                index,
            )?),
            Op::DeleteRange { start, end, limit } => CommandResult::DeleteRange(kv::delete_range(
                overlay,
                start,
                end.as_deref(),
                *limit,
                index,
            )?),
            Op::Txn(txn) => CommandResult::Txn(kv::txn(overlay, txn, index)?),
            Op::CreateMap { name, .. } => {
                // Some: this arm is a CreateMap.
                let params = op.map_params().unwrap_or_default();
                ring::create_map(overlay, &mut self.maps, name, params)?
            }
            Op::JoinMap {
                name,
                owner,
                weight,
            } => {
                let change = Change::Join(Owner::new(owner.as_str(), *weight));
                ring::change_map(overlay, &mut self.maps, name, &change)?
            }
            Op::LeaveMap { name, owner } => {
                let change = Change::Leave(OwnerId(owner.clone()));
                ring::change_map(overlay, &mut self.maps, name, &change)?
            }
            Op::SetOwnerWeight {
                name,
                owner,
                weight,
            } => {
                let change = Change::SetWeight(OwnerId(owner.clone()), *weight);
                ring::change_map(overlay, &mut self.maps, name, &change)?
            }
        })
    }
}
