//! The leader's lease keeper: decides, with the driver's clock, when sessions lapse, and turns
//! that into log entries. The state machine holds no clock (`sm/sessions.rs`); this is where
//! time enters.
//!
//! - Keepalives are not log entries: a `SessionKeepAlive` request reaches the leader (followers
//!   forward it) and resets each session's deadline to now + its TTL, in memory only.
//! - Every `SESSION_CHECKPOINT_INTERVAL_MS` the leader proposes `SessionCheckpoint` entries with
//!   each session's remaining TTL. A new leader arms each session from its last checkpointed
//!   remaining TTL, never from the full TTL, so a silent session dies within TTL + one
//!   checkpoint interval + the election, however many elections happen (etcd #9888).
//! - A new leader arms only once it has applied its own term's first entry (then every
//!   checkpoint and grant committed before its term is in the mirror it arms from), and
//!   checkpoints one election timeout after arming, then every interval: a leader that keeps
//!   leadership for longer than an election timeout records the time that passed under it.
//! - Expiries are batched (`MAX_SESSION_EXPIRE_BATCH` per entry) and rate-limited (one entry
//!   per `SESSION_EXPIRE_MIN_INTERVAL_MS`), so sessions that lapse together do not make a storm.
//! - A leader whose loop saw a gap longer than an election timeout (the process was paused, etcd
//!   #12528) first shifts every deadline by the gap, then expires: time it did not observe is
//!   not held against the sessions.
//!
//! - Lock-delay: a lock whose holder's session expired with a lock-delay stays ungranted until a
//!   `LockDelayEnd` entry (`sm/locks.rs`). The keeper arms each delayed lock when it learns of it
//!   (now + its delay) and proposes the end once that passed. A new leader arms every delayed
//!   lock from its full delay: it cannot know how much of it passed under the old leader, and
//!   waiting too long only errs on the safe side (no checkpoints for so short a wait). A pause
//!   shifts these deadlines like the sessions'.
//!
//! The keeper only decides; the driver proposes what [`LeaseKeeper::step`] returns and feeds it
//! the state machine's sessions after each apply that changed them ([`LeaseKeeper::sync`]).

use crate::limits::{
    MAX_LOCK_DELAY_END_BATCH, MAX_SESSION_CHECKPOINT_BATCH, MAX_SESSION_EXPIRE_BATCH,
    SESSION_CHECKPOINT_INTERVAL_MS, SESSION_EXPIRE_MIN_INTERVAL_MS,
};
use crate::sm::{Command, Op, SessionId, SessionInfo, UNTRACKED_CLIENT};
use crate::types::LogIndex;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// An expiry proposed but not yet applied is proposed again after this long.
const EXPIRE_RETRY: Duration = Duration::from_millis(1_000);

/// The lease keeper of one member (armed only while it leads).
pub(crate) struct LeaseKeeper {
    /// The sessions as the state machine last reported them: TTL and checkpointed remaining.
    known: BTreeMap<SessionId, SessionInfo>,
    /// The applied index `known` reflects: a session granted after it is not known yet.
    known_through: LogIndex,
    /// While leading: arm once the applied index reaches this (the term's first entry).
    arm_at: Option<LogIndex>,
    /// Armed: each session's deadline on this member's clock.
    deadlines: Option<HashMap<SessionId, Instant>>,
    /// Sessions whose expiry was proposed, and when.
    expiring: HashMap<SessionId, Instant>,
    /// The locks in their lock-delay as the state machine last reported them, with the delay.
    known_delays: BTreeMap<Vec<u8>, u64>,
    /// Armed (with `deadlines`): when each delayed lock's delay ends on this member's clock.
    delay_ends: HashMap<Vec<u8>, Instant>,
    /// Delayed locks whose end was proposed, and when.
    ending_delays: HashMap<Vec<u8>, Instant>,
    last_checkpoint: Option<Instant>,
    last_expire: Option<Instant>,
    /// The previous `step`: a gap longer than `pause_threshold` is a pause.
    last_step: Option<Instant>,
    pause_threshold: Duration,
}

impl LeaseKeeper {
    pub(crate) fn new(pause_threshold: Duration) -> LeaseKeeper {
        LeaseKeeper {
            known: BTreeMap::new(),
            known_through: LogIndex(0),
            arm_at: None,
            deadlines: None,
            expiring: HashMap::new(),
            known_delays: BTreeMap::new(),
            delay_ends: HashMap::new(),
            ending_delays: HashMap::new(),
            last_checkpoint: None,
            last_expire: None,
            last_step: None,
            pause_threshold,
        }
    }

    /// This member now leads; its term's first entry is `first_index`.
    pub(crate) fn on_leader(&mut self, first_index: LogIndex) {
        self.arm_at = Some(first_index);
        self.deadlines = None;
        self.expiring.clear();
        self.delay_ends.clear();
        self.ending_delays.clear();
    }

    /// This member no longer leads: forget every deadline.
    pub(crate) fn on_follower(&mut self) {
        self.arm_at = None;
        self.deadlines = None;
        self.expiring.clear();
        self.delay_ends.clear();
        self.ending_delays.clear();
        self.last_step = None;
    }

    /// The state machine applied up to `applied`: arm if this member leads and has applied its
    /// term's first entry.
    pub(crate) fn on_applied(&mut self, applied: LogIndex, now: Instant) {
        if self.deadlines.is_none() && self.arm_at.is_some_and(|at| applied >= at) {
            let deadlines = self
                .known
                .values()
                .map(|s| {
                    let remaining = s.checkpointed_remaining_ms.min(s.ttl_ms);
                    (s.session, now + Duration::from_millis(remaining))
                })
                .collect();
            self.deadlines = Some(deadlines);
            self.delay_ends = self
                .known_delays
                .iter()
                .map(|(name, ms)| (name.clone(), now + Duration::from_millis(*ms)))
                .collect();
            // The first checkpoint comes one pause threshold (an election timeout) after arming,
            // not a whole interval: under leaders that change faster than the interval, each
            // one still records the time that passed under it, so the remaining TTL keeps
            // shrinking however often leadership moves.
            self.last_checkpoint = Some(
                now.checked_sub(Duration::from_millis(SESSION_CHECKPOINT_INTERVAL_MS))
                    .map_or(now, |t| t + self.pause_threshold),
            );
            self.last_step = Some(now);
        }
    }

    /// The state machine's sessions after an apply that changed them. Sessions new to an
    /// armed keeper were just granted: deadline now + TTL. Ended ones are forgotten.
    pub(crate) fn sync(&mut self, sessions: Vec<SessionInfo>, applied: LogIndex, now: Instant) {
        self.known = sessions.into_iter().map(|s| (s.session, s)).collect();
        self.known_through = self.known_through.max(applied);
        if let Some(deadlines) = &mut self.deadlines {
            deadlines.retain(|id, _| self.known.contains_key(id));
            for s in self.known.values() {
                deadlines
                    .entry(s.session)
                    .or_insert(now + Duration::from_millis(s.ttl_ms));
            }
        }
        self.expiring.retain(|id, _| self.known.contains_key(id));
    }

    /// The locks in their lock-delay after an apply that may have changed them. New ones are
    /// armed (if this keeper is) from now + their delay; ended ones are forgotten.
    pub(crate) fn sync_lock_delays(&mut self, delays: Vec<(Vec<u8>, u64)>, now: Instant) {
        self.known_delays = delays.into_iter().collect();
        self.delay_ends
            .retain(|name, _| self.known_delays.contains_key(name));
        self.ending_delays
            .retain(|name, _| self.known_delays.contains_key(name));
        if self.deadlines.is_some() {
            for (name, ms) in &self.known_delays {
                self.delay_ends
                    .entry(name.clone())
                    .or_insert(now + Duration::from_millis(*ms));
            }
        }
    }

    /// Whether keepalives can be answered (this member leads and is armed).
    #[cfg(test)]
    pub(crate) fn armed(&self) -> bool {
        self.deadlines.is_some()
    }

    /// Reset the deadlines of `sessions`; per session its TTL, or `None` if it does not exist
    /// (or its expiry is already proposed: it is as good as gone). `None` overall when not armed.
    pub(crate) fn keepalive(
        &mut self,
        sessions: &[SessionId],
        now: Instant,
    ) -> Option<Vec<(SessionId, Option<u64>)>> {
        // A session granted after the sessions this keeper last heard of is not lost, only not
        // known yet (its client can be faster than the apply thread's report): no answer, so
        // the client asks again rather than declaring it lost.
        if sessions
            .iter()
            .any(|id| id.0 > self.known_through.0 && !self.known.contains_key(id))
        {
            return None;
        }
        let deadlines = self.deadlines.as_mut()?;
        Some(
            sessions
                .iter()
                .map(|&id| match self.known.get(&id) {
                    Some(s) if !self.expiring.contains_key(&id) => {
                        deadlines.insert(id, now + Duration::from_millis(s.ttl_ms));
                        (id, Some(s.ttl_ms))
                    }
                    _ => (id, None),
                })
                .collect(),
        )
    }

    /// Called every driver iteration while leading: the commands to propose now (expiries,
    /// checkpoints).
    pub(crate) fn step(&mut self, now: Instant) -> Vec<Command> {
        let Some(deadlines) = self.deadlines.as_mut() else {
            return Vec::new();
        };
        if let Some(last) = self.last_step {
            let gap = now.saturating_duration_since(last);
            if gap > self.pause_threshold {
                // Paused: re-arm (shift every deadline by the time not observed) before
                // anything is revoked.
                for deadline in deadlines.values_mut().chain(self.delay_ends.values_mut()) {
                    *deadline += gap;
                }
                crate::event!(crate::logging::Level::Warn, node: None, term: None,
                    "lease_keeper_rearmed_after_pause", gap_ms = gap.as_millis());
            }
        }
        self.last_step = Some(now);
        let mut out = Vec::new();
        let may_expire = self.last_expire.map_or(true, |t| {
            now.saturating_duration_since(t)
                >= Duration::from_millis(SESSION_EXPIRE_MIN_INTERVAL_MS)
        });
        if may_expire {
            let mut lapsed: Vec<(Instant, SessionId)> = deadlines
                .iter()
                .filter(|(id, d)| {
                    **d <= now
                        && self
                            .expiring
                            .get(id)
                            .map_or(true, |t| now.saturating_duration_since(*t) >= EXPIRE_RETRY)
                })
                .map(|(id, d)| (*d, *id))
                .collect();
            if !lapsed.is_empty() {
                lapsed.sort();
                lapsed.truncate(MAX_SESSION_EXPIRE_BATCH);
                let sessions: Vec<SessionId> = lapsed.iter().map(|(_, id)| *id).collect();
                for id in &sessions {
                    self.expiring.insert(*id, now);
                }
                self.last_expire = Some(now);
                out.push(runtime_command(Op::SessionExpire { sessions }));
            }
        }
        let mut ended: Vec<Vec<u8>> = self
            .delay_ends
            .iter()
            .filter(|(name, end)| {
                **end <= now
                    && self
                        .ending_delays
                        .get(*name)
                        .map_or(true, |t| now.saturating_duration_since(*t) >= EXPIRE_RETRY)
            })
            .map(|(name, _)| name.clone())
            .collect();
        ended.sort();
        for chunk in ended.chunks(MAX_LOCK_DELAY_END_BATCH) {
            for name in chunk {
                self.ending_delays.insert(name.clone(), now);
            }
            out.push(runtime_command(Op::LockDelayEnd {
                names: chunk.to_vec(),
            }));
        }
        let checkpoint_due = self.last_checkpoint.map_or(true, |t| {
            now.saturating_duration_since(t)
                >= Duration::from_millis(SESSION_CHECKPOINT_INTERVAL_MS)
        });
        if checkpoint_due {
            self.last_checkpoint = Some(now);
            let mut remaining: Vec<(SessionId, u64)> = deadlines
                .iter()
                .map(|(id, d)| {
                    let ms = d.saturating_duration_since(now).as_millis();
                    (*id, u64::try_from(ms).unwrap_or(u64::MAX))
                })
                .collect();
            remaining.sort();
            for chunk in remaining.chunks(MAX_SESSION_CHECKPOINT_BATCH) {
                out.push(runtime_command(Op::SessionCheckpoint {
                    remaining: chunk.to_vec(),
                }));
            }
        }
        out
    }
}

/// A command the runtime issues itself: untracked (each commit applies; both expiry and
/// checkpoint are idempotent).
fn runtime_command(op: Op) -> Command {
    Command {
        client_id: UNTRACKED_CLIENT,
        seq: 0,
        op,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, ttl_ms: u64, remaining_ms: u64) -> SessionInfo {
        SessionInfo {
            session: SessionId(id),
            ttl_ms,
            checkpointed_remaining_ms: remaining_ms,
        }
    }

    fn expired(cmds: &[Command]) -> Vec<SessionId> {
        cmds.iter()
            .filter_map(|c| match &c.op {
                Op::SessionExpire { sessions } => Some(sessions.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn a_new_leader_arms_from_the_checkpoint_not_the_full_ttl() {
        let t0 = Instant::now();
        let mut k = LeaseKeeper::new(Duration::from_millis(300));
        k.sync(vec![info(5, 10_000, 1_500)], LogIndex(1_000_000), t0);
        k.on_leader(LogIndex(9));
        k.on_applied(LogIndex(8), t0);
        assert!(!k.armed(), "armed before its term's first entry applied");
        k.on_applied(LogIndex(9), t0);
        assert!(k.armed());
        let mut now = t0;
        let mut ended = Vec::new();
        while ended.is_empty() {
            now += Duration::from_millis(100);
            ended = expired(&k.step(now));
        }
        assert_eq!(ended, vec![SessionId(5)]);
        let lived = now - t0;
        assert!(lived >= Duration::from_millis(1_500) && lived < Duration::from_millis(1_700));
    }

    #[test]
    fn a_session_granted_after_the_last_report_is_not_yet_known_not_lost() {
        // Regression: a client's first keepalive can overtake the apply thread's report of the
        // grant; the keeper answered "does not exist" and the client declared the session lost.
        let t0 = Instant::now();
        let mut k = LeaseKeeper::new(Duration::from_millis(300));
        k.on_leader(LogIndex(1));
        k.on_applied(LogIndex(1), t0);
        k.sync(vec![info(5, 10_000, 10_000)], LogIndex(10), t0);
        assert_eq!(
            k.keepalive(&[SessionId(12)], t0),
            None,
            "granted after index 10"
        );
        assert_eq!(
            k.keepalive(&[SessionId(7)], t0),
            Some(vec![(SessionId(7), None)]),
            "granted at or before index 10 and not there: gone"
        );
        k.sync(
            vec![info(5, 10_000, 10_000), info(12, 2_000, 2_000)],
            LogIndex(12),
            t0,
        );
        assert_eq!(
            k.keepalive(&[SessionId(12)], t0),
            Some(vec![(SessionId(12), Some(2_000))])
        );
    }

    #[test]
    fn keepalives_postpone_and_a_pause_shifts_deadlines_before_expiring() {
        let t0 = Instant::now();
        let mut k = LeaseKeeper::new(Duration::from_millis(300));
        k.on_leader(LogIndex(1));
        k.on_applied(LogIndex(1), t0);
        k.sync(vec![info(2, 1_000, 1_000)], LogIndex(1_000_000), t0);
        let mut now = t0;
        for _ in 0..20 {
            now += Duration::from_millis(100);
            assert!(expired(&k.step(now)).is_empty());
            if now - t0 < Duration::from_millis(1_500) {
                assert_eq!(
                    k.keepalive(&[SessionId(2), SessionId(3)], now),
                    Some(vec![(SessionId(2), Some(1_000)), (SessionId(3), None)])
                );
            }
        }
        // 2.0 s: last keepalive at 1.4 s, deadline 2.4 s. A 5 s pause: nothing expires at once.
        now += Duration::from_secs(5);
        assert!(
            expired(&k.step(now)).is_empty(),
            "revoked right after a pause"
        );
        let resumed = now;
        while expired(&k.step(now)).is_empty() {
            now += Duration::from_millis(50);
        }
        assert!(now - resumed >= Duration::from_millis(350));
    }

    fn delays_ended(cmds: &[Command]) -> Vec<Vec<u8>> {
        cmds.iter()
            .filter_map(|c| match &c.op {
                Op::LockDelayEnd { names } => Some(names.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn a_lock_delay_ends_after_its_delay_and_a_new_leader_waits_the_full_delay_again() {
        // Steps every 100 ms (under the pause threshold); the first step that ends it.
        fn ends_at(k: &mut LeaseKeeper, from: Instant) -> Duration {
            let mut now = from;
            loop {
                now += Duration::from_millis(100);
                if delays_ended(&k.step(now)) == vec![b"l".to_vec()] {
                    return now - from;
                }
                assert!(now - from < Duration::from_secs(10), "never ended");
            }
        }
        let t0 = Instant::now();
        let mut k = LeaseKeeper::new(Duration::from_millis(300));
        k.on_leader(LogIndex(1));
        k.on_applied(LogIndex(1), t0);
        k.sync_lock_delays(vec![(b"l".to_vec(), 1_000)], t0);
        assert_eq!(ends_at(&mut k, t0), Duration::from_millis(1_000));
        // Proposed once; not again before a retry interval.
        let at = t0 + Duration::from_millis(1_000);
        assert!(delays_ended(&k.step(at + Duration::from_millis(100))).is_empty());
        // A new leader (the end was not applied) arms it from the full delay.
        let t1 = at + Duration::from_millis(150);
        k.on_follower();
        k.on_leader(LogIndex(20));
        k.on_applied(LogIndex(20), t1);
        assert_eq!(ends_at(&mut k, t1), Duration::from_millis(1_000));
        // Applied: the report no longer names it, nothing more is proposed.
        let t2 = t1 + Duration::from_millis(1_000);
        k.sync_lock_delays(Vec::new(), t2);
        for i in 1..30 {
            assert!(delays_ended(&k.step(t2 + Duration::from_millis(100 * i))).is_empty());
        }
    }

    #[test]
    fn a_follower_never_ends_a_lock_delay() {
        let t0 = Instant::now();
        let mut k = LeaseKeeper::new(Duration::from_millis(300));
        k.sync_lock_delays(vec![(b"l".to_vec(), 100)], t0);
        assert!(delays_ended(&k.step(t0 + Duration::from_secs(5))).is_empty());
    }

    #[test]
    fn expiries_are_batched_and_rate_limited() {
        let t0 = Instant::now();
        let mut k = LeaseKeeper::new(Duration::from_secs(10));
        k.on_leader(LogIndex(1));
        k.on_applied(LogIndex(1), t0);
        let many: Vec<SessionInfo> = (1..=200).map(|i| info(i, 1_000, 1_000)).collect();
        k.sync(many, LogIndex(1_000_000), t0);
        let now = t0 + Duration::from_millis(1_001);
        let first = expired(&k.step(now));
        assert_eq!(first.len(), MAX_SESSION_EXPIRE_BATCH);
        assert!(expired(&k.step(now + Duration::from_millis(1))).is_empty());
        let second = expired(&k.step(now + Duration::from_millis(SESSION_EXPIRE_MIN_INTERVAL_MS)));
        assert_eq!(second.len(), MAX_SESSION_EXPIRE_BATCH);
        assert!(second.iter().all(|s| !first.contains(s)));
    }
}
