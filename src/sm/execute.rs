//! Running the commands of one batch: the dispatch from each [`Op`] to the feature that applies
//! it (`kv.rs`, `clients.rs`), behind the at-most-once check of the client table.
//!
//! Everything here is a pure function of the current state (read through the overlay) and the
//! command with its log index, so every member computes the same writes and results.

use super::clients::{Admission, ClientOrder, ClientTable};
use super::command::{Command, Op, UNTRACKED_CLIENT};
use super::elect;
use super::kv;
use super::layout::LockSpace;
use super::locks::{self, Acquire};
use super::overlay::{Overlay, Writes};
use super::placement::{Change, Owner, OwnerId, PlacementVersion};
use super::result::{CommandResult, LockMode, LockWaitEnded, SessionId};
use super::ring::{self, BatchMaps, MapReader, PartitionMap};
use super::session_end;
use super::sessions;
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
    /// How many sessions exist (kept in memory, like the client order; see `StateMachine`).
    sessions: &'o mut usize,
    sessions_before: usize,
    /// Lock waits ended by the command being applied (taken after each entry).
    pub(crate) lock_waits: Vec<LockWaitEnded>,
}

impl<'t, 'o> Executor<'t, 'o> {
    pub(crate) fn new(
        overlay: Overlay<'t>,
        clients: &'o mut ClientOrder,
        maps: &'o MapReader,
        sessions: &'o mut usize,
    ) -> Executor<'t, 'o> {
        let sessions_before = *sessions;
        Executor {
            overlay,
            clients: ClientTable::new(clients),
            maps: BatchMaps::new(maps),
            sessions,
            sessions_before,
            lock_waits: Vec::new(),
        }
    }

    /// The batch's writes and the partition maps it changed (to publish); its changes of the
    /// client order and session count stay.
    pub(crate) fn into_writes(self) -> (Writes, BTreeMap<String, Arc<PartitionMap>>) {
        (self.overlay.into_writes(), self.maps.into_changed())
    }

    /// Undo the batch's changes of the client order and session count (its writes are dropped
    /// with the overlay).
    pub(crate) fn roll_back(self) {
        *self.sessions = self.sessions_before;
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
            return self.execute(cmd, index);
        }
        let before = match self.clients.admit(&self.overlay, cmd.client_id, cmd.seq)? {
            Admission::Answer(result) => return Ok(result),
            Admission::Apply(before) => before,
        };
        let result = self.execute(cmd, index)?;
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
    fn execute(&mut self, cmd: &Command, index: LogIndex) -> Result<CommandResult> {
        let overlay = &mut self.overlay;
        let sessions = &mut *self.sessions;
        let waits = &mut self.lock_waits;
        Ok(match &cmd.op {
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
            Op::CreateMap { name, .. } | Op::CreateMapVersioned { name, .. } => {
                // Some: this arm is a create.
                let params = cmd.op.map_params().unwrap_or_default();
                let placement = cmd.op.map_placement().unwrap_or(PlacementVersion::V1);
                ring::create_map(overlay, &mut self.maps, name, params, placement)?
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
            Op::SessionGrant { ttl_ms } => sessions::grant(overlay, sessions, *ttl_ms, index)?,
            Op::SessionRevoke { session } => {
                session_end::revoke(overlay, sessions, *session, index, waits)?
            }
            Op::SessionCheckpoint { remaining } => sessions::checkpoint(overlay, remaining)?,
            Op::SessionExpire { sessions: ids } => {
                session_end::expire(overlay, sessions, ids, index, waits)?
            }
            Op::LockAcquire {
                name,
                mode,
                session,
                wait,
            } => locks::acquire(
                overlay,
                &lock_request(cmd, name, *mode, *session, *wait, 0),
                index,
            )?,
            Op::LockAcquireWithDelay {
                name,
                mode,
                session,
                wait,
                lock_delay_ms,
            } => locks::acquire(
                overlay,
                &lock_request(cmd, name, *mode, *session, *wait, *lock_delay_ms),
                index,
            )?,
            Op::LockDelayEnd { names } => locks::end_delays(overlay, names, index, waits)?,
            Op::LockRelease {
                name,
                token,
                session,
            } => locks::release(
                overlay,
                LockSpace::Locks,
                name,
                *token,
                *session,
                index,
                waits,
            )?,
            Op::LockCancel { name } => {
                locks::cancel(overlay, LockSpace::Locks, name, cmd.client_id, index, waits)?
            }
            Op::PutEphemeral {
                key,
                value,
                session,
            } => session_end::put_ephemeral(overlay, key, value, *session, index)?,
            Op::ElectionCampaign {
                name,
                value,
                session,
            } => locks::acquire(
                overlay,
                &Acquire {
                    space: LockSpace::Elections,
                    name,
                    mode: LockMode::Exclusive,
                    session: *session,
                    wait: true,
                    client_id: cmd.client_id,
                    seq: cmd.seq,
                    value,
                    lock_delay_ms: 0,
                },
                index,
            )?,
            Op::ElectionProclaim { name, token, value } => {
                elect::proclaim(overlay, name, *token, value)?
            }
            Op::ElectionResign { name, token } => {
                elect::resign(overlay, name, *token, index, waits)?
            }
            Op::ElectionCancel { name, session } => {
                locks::cancel_session(overlay, LockSpace::Elections, name, *session, index, waits)?
            }
        })
    }
}

/// The lock table's request for a lock (not an election) by `cmd`: both acquire commands, the
/// one with a lock-delay and the one without (delay 0).
fn lock_request<'a>(
    cmd: &Command,
    name: &'a [u8],
    mode: LockMode,
    session: SessionId,
    wait: bool,
    lock_delay_ms: u64,
) -> Acquire<'a> {
    Acquire {
        space: LockSpace::Locks,
        name,
        mode,
        session,
        wait,
        client_id: cmd.client_id,
        seq: cmd.seq,
        value: &[],
        lock_delay_ms,
    }
}
