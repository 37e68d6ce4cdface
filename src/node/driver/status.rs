//! The member's status, a graceful shutdown, and failing every waiting request when the member
//! stops (gracefully or after a storage failure).

use super::{Driver, Stopping};
use crate::error::Error;
use crate::logging::Level;
use crate::node::apply_thread::ApplyTask;
use crate::node::node_role;
use crate::node::transfer::TransferTask;
use crate::proto::{MemberStatus, Status};
use crate::raft::Role;
use crate::types::{LogIndex, NodeId};
use std::sync::atomic::Ordering;

impl Driver {
    pub(super) fn status(&self) -> Status {
        let membership = self.raft.membership();
        let leading = self.raft.role() == Role::Leader;
        let now = self.now();
        let member = |id: NodeId, address: &String, voter: bool| MemberStatus {
            id,
            address: address.clone(),
            voter,
            match_index: if !leading {
                None
            } else if id == self.id {
                Some(self.raft.persisted_index())
            } else {
                self.raft.progress(id).map(|(m, _, _)| m)
            },
            last_contact_ms: if id == self.id {
                None
            } else {
                self.last_contact
                    .get(&id)
                    .map(|t| now.duration_since(*t).as_millis() as u64)
            },
            rejected_messages: self.raft.rejected_messages().get(&id).copied().unwrap_or(0),
        };
        let mut members: Vec<MemberStatus> = membership
            .voters
            .iter()
            .map(|(id, a)| member(*id, a, true))
            .chain(
                membership
                    .learners
                    .iter()
                    .map(|(id, a)| member(*id, a, false)),
            )
            .collect();
        members.sort_by_key(|m| m.id);
        let mut counters = self.stats.clone();
        counters.entries_applied = self.counters.entries_applied.load(Ordering::Relaxed);
        counters.snapshots_taken = self.counters.snapshots_taken.load(Ordering::Relaxed);
        let (fsync_latency, fsync_sum) = self.wal.sync_latency().snapshot();
        counters.fsync_latency = fsync_latency;
        counters.fsync_latency_sum_micros = fsync_sum;
        counters.peer_messages_rejected = self.raft.rejected_messages().values().sum();
        counters.transport_drops = self
            .transport
            .peers()
            .iter()
            .filter_map(|(id, _)| self.transport.peer_stats(*id))
            .map(|s| s.control.dropped() + s.bulk.dropped())
            .sum();
        Status {
            id: self.id,
            role: node_role(self.raft.role()),
            term: self.raft.term(),
            leader: self.raft.leader(),
            commit_index: self.raft.commit_index(),
            applied_index: LogIndex(self.counters.applied.load(Ordering::Relaxed)),
            first_index: self.raft.first_index(),
            last_index: self.raft.last_index(),
            members,
            counters,
            failure: None,
        }
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        dlog!(self, Level::Info, "shutdown_started");
        self.stopping = Some(Stopping { since: self.now() });
        let id = self.id;
        self.fail_not_started(|| Error::Unavailable(format!("member {id} is shutting down")));
        // Hand leadership to the most up-to-date voter so the cluster does not wait for an
        // election timeout.
        if self.raft.role() == Role::Leader {
            let successor = self
                .raft
                .membership()
                .voters
                .keys()
                .filter(|&&v| v != self.id)
                .filter_map(|&v| self.raft.progress(v).map(|(m, _, _)| (m, v)))
                .max();
            if let Some((_, to)) = successor {
                if self.raft.transfer_leadership(to).is_ok() {
                    dlog!(self, Level::Info, "leadership_handed_over", to = to.0);
                }
            }
        }
    }

    /// Whether a graceful shutdown may finish: leadership handed over (or an election timeout
    /// spent trying), and every WAL write acknowledged.
    pub(super) fn stop_complete(&self) -> bool {
        let Some(stopping) = &self.stopping else {
            return false;
        };
        let elapsed = self.now().saturating_duration_since(stopping.since);
        let handed_over =
            self.raft.role() != Role::Leader || elapsed >= self.config.max_election_timeout();
        let drained = self.in_flight.is_empty() && !self.raft.has_ready();
        (handed_over && drained) || elapsed >= self.config.max_election_timeout() * 4
    }

    /// After a graceful stop: requests still waiting end with `Timeout` (their entries may
    /// still commit), the apply and transfer threads finish their queues and stop.
    pub(super) fn finish(&mut self) {
        if !self.in_flight.is_empty() {
            dlog!(
                self,
                Level::Warn,
                "shutdown_with_writes_in_flight",
                writes = self.in_flight.len()
            );
        }
        let unknown = || Error::Timeout("the member shut down before the outcome was known".into());
        self.fail_waiting(unknown, unknown);
        self.to_apply(ApplyTask::Stop);
        self.to_transfer(TransferTask::Stop);
        dlog!(self, Level::Info, "driver_stopped");
    }

    /// Answer every request still waiting: `unknown` for those that may have taken effect
    /// (proposed, forwarded, transfers), `error` for the rest.
    pub(super) fn fail_waiting(&mut self, unknown: impl Fn() -> Error, error: impl Fn() -> Error) {
        for (_, (_, reply, _)) in std::mem::take(&mut self.proposals) {
            reply.fail(unknown());
        }
        for (_, (reply, _)) in self.forwarded.drain() {
            reply.fail(unknown());
        }
        for (_, reply, _) in std::mem::take(&mut self.transfers) {
            reply.fail(unknown());
        }
        self.fail_not_started(error);
    }

    /// Answer `error` to every request that has not taken effect: writes queued or waiting for
    /// a leader, reads queued or waiting for their ReadIndex.
    pub(super) fn fail_not_started(&mut self, error: impl Fn() -> Error) {
        for p in std::mem::take(&mut self.queued_writes) {
            p.reply.fail(error());
        }
        for w in std::mem::take(&mut self.waiting_leader) {
            w.pending.reply.fail(error());
        }
        for r in std::mem::take(&mut self.queued_reads) {
            r.reply.fail(error());
        }
        for (_, batch) in self.read_batches.drain() {
            for r in batch.reads {
                r.reply.fail(error());
            }
        }
    }

    /// A storage failure (WAL, state machine, corrupt entry): the core can no longer be
    /// trusted. Stop taking part: fail everything, stop the other threads and the transport.
    pub(super) fn fail(&mut self, error: Error) {
        let why = error.to_string();
        dlog!(self, Level::Error, "node_failed", error = why);
        self.shared.set_failure(&why);
        self.fail_waiting(
            || {
                Error::Timeout(format!(
                    "the member stopped after a storage failure ({why}); the outcome is unknown"
                ))
            },
            || Error::Fatal(why.clone()),
        );
        self.to_apply(ApplyTask::Stop);
        self.to_transfer(TransferTask::Stop);
        self.transport.shutdown();
    }
}
