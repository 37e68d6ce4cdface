//! Ticks and the deadline sweep: the core's logical clock advances from the driver's
//! [`Clock`](super::Clock), and every request that waits (for a leader, a proposal's apply, a
//! forwarded answer, a ReadIndex, a leadership transfer, a snapshot being sent) is given up here
//! when its time is up.

use super::{storage, Driver, Pending};
use crate::error::{Error, Result};
use crate::logging::Level;
use crate::node::reply::Reply;
use crate::proto::Request;
use crate::raft::Role;
use crate::types::NodeId;
use std::cmp::Reverse;
use std::time::{Duration, Instant};

impl Driver {
    /// Give the core every tick the monotonic clock owes it, before each input and not only
    /// between batches: the core judges lease reads by the ticks it has seen, so after a
    /// pause (SIGSTOP, a stall) the up to `MAX_DRIVER_INPUTS_PER_ITERATION` inputs queued
    /// meanwhile would otherwise meet a clock that lags real time, and a ReadIndex could be
    /// answered from a lease that already expired. One clock read per input.
    pub(super) fn tick_to_now(&mut self) -> Result<()> {
        let now = self.now();
        if now >= self.next_tick {
            self.catch_up_ticks(now)?;
        }
        Ok(())
    }

    pub(super) fn on_clock(&mut self) -> Result<()> {
        let now = self.now();
        if now < self.next_tick {
            return Ok(());
        }
        self.catch_up_ticks(now)?;
        self.expire(now);
        if self.role == Role::Leader && self.stopping.is_none() {
            let deadline = now + Duration::from_millis(self.config.request_timeout_ms);
            for command in self.leases.step(now) {
                self.queued_writes.push(Pending {
                    request: Request::Write(command),
                    reply: Reply::Discard,
                    deadline,
                });
            }
        }
        if self.leader_usable() && !self.waiting_leader.is_empty() {
            self.drain_waiting();
        }
        Ok(())
    }

    fn catch_up_ticks(&mut self, now: Instant) -> Result<()> {
        let mut ticks = 0;
        while now >= self.next_tick && ticks < self.max_catch_up_ticks {
            self.raft.tick().map_err(storage)?;
            self.next_tick += self.tick;
            ticks += 1;
        }
        if now >= self.next_tick {
            // A long pause: the core saw enough ticks to time out (and for any lease, which
            // is shorter than an election timeout, to expire); skip the rest.
            self.next_tick = now + self.tick;
        }
        Ok(())
    }

    pub(super) fn expire(&mut self, now: Instant) {
        if !self.waiting_leader.is_empty() {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_leader)
                .into_iter()
                .partition(|w| w.give_up <= now);
            self.waiting_leader = kept;
            for w in expired {
                w.pending.reply.fail(Error::Unavailable(format!(
                    "no leader known to member {} within {:?}",
                    self.id, self.no_leader_wait
                )));
            }
        }
        while let Some(Reverse((deadline, index, term))) = self.proposal_deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.proposal_deadlines.pop();
            if self
                .proposals
                .get(&index)
                .is_some_and(|(t, _, d)| *t == term && *d == deadline)
            {
                if let Some((_, reply, _)) = self.proposals.remove(&index) {
                    reply.fail(Error::Timeout(format!(
                        "entry {index} was proposed but not applied before the deadline; it \
                         may still be"
                    )));
                }
            }
        }
        if !self.forwarded.is_empty() {
            let expired: Vec<u64> = self
                .forwarded
                .iter()
                .filter(|(_, (_, d))| *d <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                if let Some((reply, _)) = self.forwarded.remove(&id) {
                    reply.fail(Error::Timeout(
                        "the leader did not answer the forwarded request in time; it may have \
                         been applied"
                            .into(),
                    ));
                }
            }
        }
        if !self.read_batches.is_empty() {
            // A ReadIndex request (or its answer) may be lost, and the core does not fail
            // requests forwarded to a leader that went away: ask again.
            let retry_after = self.config.max_election_timeout();
            let stale: Vec<u64> = self
                .read_batches
                .iter()
                .filter(|(_, b)| now.duration_since(b.issued) >= retry_after)
                .map(|(ctx, _)| *ctx)
                .collect();
            for ctx in stale {
                if let Some(batch) = self.read_batches.remove(&ctx) {
                    self.requeue_reads(batch.reads, now);
                }
            }
        }
        if !self.transfers.is_empty() {
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers)
                .into_iter()
                .partition(|(_, _, d)| *d <= now);
            self.transfers = kept;
            for (to, reply, _) in expired {
                reply.fail(Error::Timeout(format!(
                    "{to} did not become leader in time; it still may"
                )));
            }
        }
        if !self.outgoing.is_empty() {
            let timeout = Duration::from_millis(self.config.snapshot_transfer_timeout_ms);
            let stalled: Vec<NodeId> = self
                .outgoing
                .iter()
                .filter(|(_, o)| now.duration_since(o.last_activity) >= timeout)
                .map(|(id, _)| *id)
                .collect();
            for to in stalled {
                if let Some(o) = self.outgoing.remove(&to) {
                    dlog!(
                        self,
                        Level::Warn,
                        "snapshot_send_timed_out",
                        to = to.0,
                        index = o.index.0
                    );
                    self.raft.report_snapshot(to, false);
                }
            }
        }
    }
}
