//! A deterministic simulation of a whole haven Raft cluster.
//!
//! Everything (network, disks, clocks, clients, faults) is driven from one seeded PRNG, so a
//! seed replays exactly. Per run:
//!
//! - **Network**: messages are delayed (which reorders them), dropped and duplicated; links can
//!   be cut symmetrically (two sides), asymmetrically (one direction) or as a bridge (two sides
//!   that only one node connects).
//! - **Disks**: each `Ready`'s write completes after a random delay, in order; only then is it
//!   applied to the node's store and acknowledged. A crash loses every write still in flight.
//! - **Nodes**: crash and restart from what was durable; pause (the process freezes while its
//!   clock keeps running: the missed ticks are delivered on resume).
//! - **Operator**: leadership transfers, membership changes (add learner, promote, remove),
//!   local snapshots with log compaction, snapshot transfers that may fail.
//! - **Clients**: get / put / compare-and-swap with unique values against a key-value model;
//!   every result is recorded and the history is checked for linearizability per key.
//! - **Lease episodes** (seeds with lease reads): a fault schedule that opens the window of
//!   dissertation 6.4.1 on purpose (see `LeaseEpisode`).
//!
//! After every `Ready` the simulator checks: at most one leader per term; log matching (an
//! (index, term) pair always names the same entry with the same predecessor term); leader
//! completeness (a new leader holds every entry committed in an earlier term); no committed
//! entry is ever replaced; every node applies the same entry at the same index. After the fault
//! phase a heal phase must elect a leader that commits within a bounded number of ticks.

use crate::kv::{Command, Kv, Outcome, Request};
use crate::lincheck::{self, Completion, Op, OpResult, Operation};
use haven::raft::rng::SplitMix64;
use haven::raft::{
    Config, InjectedBug, LogStore, MemLogStore, Membership, MembershipChange, Message, MessageBody,
    Raft, RaftError, Ready, Role, SnapshotMeta, StorageError, MAX_TERM_OR_INDEX,
};
use haven::{Entry, EntryKind, GroupId, HardState, LogIndex, NodeId, Term};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// One simulation run's parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Nodes in the simulated universe (3 or 5); all start as voters.
    pub nodes: usize,
    /// Total ticks, heal phase included.
    pub ticks: u64,
    /// Ticks of the final fault-free phase.
    pub heal_ticks: u64,
    /// After the heal starts, a leader must commit within this many ticks.
    pub liveness_ticks: u64,
    /// Break one Raft rule (to show that the simulator notices).
    pub bug: Option<InjectedBug>,
    /// Search budget of the linearizability checker, per key.
    pub lin_budget: u64,
    /// Print every event to stderr.
    pub verbose: bool,
    /// Runtime bug: serve reads from the local state machine without ReadIndex (stale reads
    /// on followers and deposed leaders); the linearizability check must notice.
    pub local_reads: bool,
    /// Force a fault profile (0 calm, 1 storm, 2-3 mixed) instead of deriving it from the seed.
    pub profile: Option<u64>,
    /// Force lease reads on or off instead of deriving it from the seed.
    pub lease: Option<bool>,
    /// Per mille of ticks at which a forged or replayed peer message is stepped into a
    /// member (see `Sim::inject`).
    pub inject_per_mille: u64,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: if seed % 2 == 0 { 3 } else { 5 },
            ticks: 4_000,
            heal_ticks: 400,
            liveness_ticks: 250,
            bug: None,
            lin_budget: 2_000_000,
            verbose: false,
            profile: None,
            local_reads: false,
            lease: None,
            inject_per_mille: 0,
        }
    }
}

/// What a run did (for statistics and the replay check).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub trace_hash: u64,
    pub elections: u64,
    pub max_commit: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub reads_ok: u64,
    pub transfers_completed: u64,
    pub membership_changes: u64,
    pub crashes: u64,
    /// Forged messages the receiving core dropped as impossible (all of them must be).
    pub rejected: u64,
    /// Earlier messages delivered again, long after the fact.
    pub replayed: u64,
    /// Ticks of pauses whose backlog met a clock that had caught up (lease seeds).
    pub paused_ticks: u64,
    /// Lease episodes that reached their restart (see `LeaseEpisode`).
    pub lease_episodes: u64,
}

/// Disk write of one `Ready`, completing at `done_at`.
struct Write {
    done_at: u64,
    number: u64,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    snapshot: Option<(SnapshotMeta, Kv)>,
    after: Vec<Message>,
}

struct Node {
    id: NodeId,
    raft: Option<Raft<MemLogStore>>,
    /// The durable store while the node is down.
    stopped: Option<MemLogStore>,
    /// Durable snapshot data matching the store's snapshot metadata.
    snap_data: Kv,
    /// Snapshot data received from a leader, stored, not yet installed.
    incoming: Option<(SnapshotMeta, Kv)>,
    writes: VecDeque<Write>,
    kv: Kv,
    applied: LogIndex,
    applied_membership: Membership,
    down_until: Option<u64>,
    paused_until: Option<u64>,
    paused_at: u64,
    /// The pause also stopped the node's clock (no missed ticks on resume).
    clock_frozen: bool,
    /// The node's clock rate in ticks per 1000 simulator ticks (bounded drift).
    rate_per_mille: u64,
    /// Clock time the node's core has not been told yet, in thousandths of a tick. A runtime
    /// gives the core the whole ticks of it before every input (as `node/driver.rs` does).
    clock_owed: u64,
    incarnation: u64,
    /// Proposals: index -> (op, term).
    proposals: BTreeMap<LogIndex, (usize, Term)>,
    /// ReadIndex requests in flight: context -> op.
    reads: BTreeMap<u64, usize>,
    /// Reads waiting for the state machine to reach an index.
    reads_waiting_apply: Vec<(LogIndex, usize)>,
    /// Client requests (ops) that reached the node while its process was paused; it handles
    /// them when it resumes.
    queued_ops: Vec<usize>,
}

struct Packet {
    msg: Message,
    snapshot: Option<Kv>,
}

struct ClientState {
    id: u64,
    seq: u64,
    busy: Option<usize>,
    next_at: u64,
    leader_hint: Option<NodeId>,
}

struct OpRecord {
    client: u64,
    key: u64,
    op: Op,
    invoked: u64,
    completed: u64,
    completion: Option<Completion>,
    /// The client's sequence number of this request (writes).
    seq: u64,
    node: usize,
    deadline: u64,
    /// The highest index known committed anywhere when the request was made: a read must
    /// be answered with a read index at least this high (dissertation 6.4).
    commit_floor: u64,
}

/// A fault schedule for seeds with lease reads: it opens the window that the restart guard
/// of dissertation 6.4.1 closes, so that a core without the guard
/// (`InjectedBug::LeaseVoteRightAfterRestart`) serves a stale read, and a correct one must not.
///
/// 0. Once due (at random), the episode waits for a quiet moment (no new fault meanwhile):
///    a leader whose voters all run, no partition.
/// 1. *Settle*: clients only read (nothing new is appended) until the leader L, the voter G
///    and the candidates C hold the same durable log, so G's log check cannot refuse C.
/// 2. *Cut*: C (a minority, one node of three or two of five) loses both ways every link to
///    L and to the rest of L's side, except to G: L keeps its quorum (G) and its lease, while
///    C stops hearing a leader and campaigns. The (pre-)vote requests to G of the first of C
///    to campaign are held back (a slow link) until G has just answered a heartbeat of L,
///    which renews L's lease; those of the rest of C are lost (no split vote).
/// 3. *Fire*: right then G is killed and restarted at once from its durable state (it has
///    no leader knowledge), L -> G goes down (so G never hears L again and L never learns of
///    a newer term), and the held request reaches the fresh G. With the bug G votes for C at
///    once, C wins and commits its no-op while clients still read at L inside its lease: a
///    read index below that commit fails the read-freshness check. With the guard G ignores
///    C for an election timeout, longer than L's lease.
///
/// Meanwhile the network is fast and lossless and disks are instant (the adversary picks
/// the timing that makes the window widest), no other fault is injected and clients only read,
/// mostly at L.
struct LeaseEpisode {
    phase: EpisodePhase,
    /// The phase ends (the episode is abandoned, or ends after firing) at this tick.
    until: u64,
    leader: usize,
    term: Term,
    /// G: answers L, then restarts.
    voter: usize,
    /// C: cut off from L; one of them campaigns.
    candidates: Vec<usize>,
    /// L's side besides L and G: cut off from C.
    others: Vec<usize>,
    /// The first of C to ask G for a (pre-)vote, and its requests held back until the restart.
    campaigner: Option<NodeId>,
    held: Vec<Packet>,
    /// The fault intensities of the seed, restored when the episode ends.
    saved: (u64, u64, u64, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpisodePhase {
    Settle,
    Cut,
    Fired,
}

/// Per-tick odds that a lease episode is due (lease seeds, fault phase, none running).
const EPISODE_ODDS: u64 = 250;
/// A due episode that found no quiet moment in this many ticks is dropped.
const EPISODE_WAIT_TICKS: u64 = 200;
const EPISODE_SETTLE_TICKS: u64 = 30;
/// Long enough for the candidates' election timeouts (at most two of `ELECTION_TICKS` each).
const EPISODE_CUT_TICKS: u64 = 60;
/// After the restart: the new leader's election and commit, and L's lease running out.
const EPISODE_AFTER_TICKS: u64 = 30;
const EPISODE_TICKS: u64 = EPISODE_SETTLE_TICKS + EPISODE_CUT_TICKS + EPISODE_AFTER_TICKS;

/// Per-seed fault intensities.
struct Chaos {
    drop_per_mille: u64,
    dup_per_mille: u64,
    max_delay: u64,
    max_disk_delay: u64,
    partition_odds: u64,
    crash_odds: u64,
    down_max_ticks: u64,
    /// Chance that a new leader is killed a few ticks into its term (before it can replicate
    /// much): the schedule of the Raft paper's figure 8.
    leader_kill_per_mille: u64,
    partition_max_ticks: u64,
    pause_odds: u64,
    transfer_odds: u64,
    change_odds: u64,
    snapshot_fail_per_mille: u64,
    snapshot_interval: u64,
}

pub struct Sim {
    cfg: SimConfig,
    rng: SplitMix64,
    now: u64,
    healed: bool,
    chaos: Chaos,
    nodes: Vec<Node>,
    net: BTreeMap<(u64, u64), Packet>,
    packet_seq: u64,
    /// Directed links that are cut: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    partition_until: u64,
    /// (tick, node) crashes scheduled for new leaders.
    leader_kills: Vec<(u64, usize)>,
    /// The target of the last leadership transfer requested.
    transfer_target: Option<NodeId>,
    clients: Vec<ClientState>,
    history: Vec<OpRecord>,
    event_clock: u64,
    next_value: u64,
    // Global checks.
    leaders: HashMap<Term, NodeId>,
    /// index -> (entry term, term in which the commit was first observed).
    committed: Vec<Option<(Term, Term)>>,
    applied_at: Vec<Option<u64>>,
    registry: HashMap<(LogIndex, Term), (u64, Option<Term>)>,
    /// Every client request applied anywhere, with its outcome: the ground truth that
    /// resolves unknown outcomes at the end of a run.
    applied_requests: HashMap<(u64, u64), Outcome>,
    heal_commit_base: LogIndex,
    /// Messages delivered lately, for `inject` to replay or mutate (only when injecting).
    seen: VecDeque<Message>,
    /// A forged message is being stepped: its rejection is expected (any other is a false
    /// positive of the core's checks, and fails the run).
    expect_rejection: bool,
    /// The lease episode under way, if any (lease seeds).
    episode: Option<LeaseEpisode>,
    /// A lease episode is due and waits for a quiet moment until this tick.
    episode_due_until: Option<u64>,
    live: bool,
    trace: u64,
    report: Report,
}

const KEYS: u64 = 3;
/// Seed counts that make any test of `tests/sim.rs` run just the failing seed.
const REPLAY_COUNTS: &str =
    "HAVEN_SIM_SEEDS=1 HAVEN_SIM_LEASE_SEEDS=1 HAVEN_SIM_LEASE_BUG_SEEDS=1 HAVEN_SIM_INJECT_SEEDS=1";
const OP_TIMEOUT_TICKS: u64 = 80;
const ELECTION_TICKS: u32 = 10;

fn mix(h: u64, v: u64) -> u64 {
    (h ^ v)
        .wrapping_mul(0x100_0000_01b3)
        .rotate_left(23)
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
}

fn entry_hash(e: &Entry) -> u64 {
    let kind = match e.kind {
        EntryKind::Normal => 1,
        EntryKind::Noop => 2,
        EntryKind::Membership => 3,
    };
    let mut h = mix(kind, e.term.0);
    for chunk in e.data.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(w));
    }
    mix(h, e.data.len() as u64)
}

type SimResult<T> = Result<T, String>;

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = SplitMix64::new(cfg.seed.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x5EED);
        // Profiles: a quarter of the seeds are calm (no drops, partitions or crashes), a
        // quarter are storms (frequent short crashes and partitions: elections in quick
        // succession, which is what exposes commit-rule bugs), the rest in between.
        let (calm, storm) = (profile(&cfg) == 0, profile(&cfg) == 1);
        let chaos = Chaos {
            drop_per_mille: if calm { 0 } else { rng.below(80) },
            dup_per_mille: rng.below(40),
            max_delay: 1 + rng.below(4),
            max_disk_delay: rng.below(4),
            partition_odds: match (calm, storm) {
                (true, _) => 1_000_000,
                (_, true) => 15 + rng.below(40),
                _ => 80 + rng.below(200),
            },
            partition_max_ticks: if storm { 40 } else { 200 },
            crash_odds: match (calm, storm) {
                (true, _) => 1_000_000,
                (_, true) => 10 + rng.below(40),
                _ => 150 + rng.below(300),
            },
            down_max_ticks: if storm { 40 } else { 150 },
            leader_kill_per_mille: match (calm, storm) {
                (true, _) => 0,
                (_, true) => 300 + rng.below(400),
                _ => rng.below(100),
            },
            pause_odds: 200 + rng.below(400),
            transfer_odds: 100 + rng.below(300),
            change_odds: 80 + rng.below(200),
            snapshot_fail_per_mille: rng.below(300),
            snapshot_interval: [0, 10, 25, 60][rng.below(4) as usize],
        };
        let membership = Membership::with_voters(
            (1..=cfg.nodes as u64).map(|i| (NodeId(i), format!("n{i}:7000"))),
        );
        let lease = lease_on(&cfg);
        let mut nodes = Vec::new();
        for i in 0..cfg.nodes {
            let id = NodeId(i as u64 + 1);
            let store = MemLogStore::new(membership.clone());
            let mut node = Node {
                id,
                raft: None,
                stopped: Some(store),
                snap_data: Kv::default(),
                incoming: None,
                writes: VecDeque::new(),
                kv: Kv::default(),
                applied: LogIndex(0),
                applied_membership: membership.clone(),
                down_until: None,
                paused_until: None,
                paused_at: 0,
                clock_frozen: false,
                rate_per_mille: 1000,
                clock_owed: 0,
                incarnation: 0,
                proposals: BTreeMap::new(),
                reads: BTreeMap::new(),
                reads_waiting_apply: Vec::new(),
                queued_ops: Vec::new(),
            };
            node.raft = Some(Self::boot(&cfg, &mut node, lease));
            nodes.push(node);
        }
        // Bounded clock drift: every node's clock runs at its own rate, within 4% of the
        // simulator's. A lease is safe while no follower's clock runs faster than the
        // leader's by more than (election_ticks - 1) / lease_read_ticks = 9/8 here (one tick
        // of the follower's count may pass just after it heard the leader); 1.04 / 0.96 is
        // 1.083.
        for node in &mut nodes {
            node.rate_per_mille = 960 + rng.below(81);
        }
        let clients = (0..4)
            .map(|c| ClientState {
                id: c + 1,
                seq: 0,
                busy: None,
                next_at: 0,
                leader_hint: None,
            })
            .collect();
        Sim {
            rng,
            now: 0,
            healed: false,
            chaos,
            nodes,
            net: BTreeMap::new(),
            packet_seq: 0,
            blocked: BTreeSet::new(),
            partition_until: 0,
            leader_kills: Vec::new(),
            transfer_target: None,
            clients,
            history: Vec::new(),
            event_clock: 0,
            next_value: 1,
            leaders: HashMap::new(),
            committed: Vec::new(),
            applied_at: Vec::new(),
            registry: HashMap::new(),
            applied_requests: HashMap::new(),
            heal_commit_base: LogIndex(0),
            seen: VecDeque::new(),
            expect_rejection: false,
            episode: None,
            episode_due_until: None,
            live: false,
            trace: cfg.seed,
            report: Report::default(),
            cfg,
        }
    }

    fn raft_config(cfg: &SimConfig, id: NodeId, incarnation: u64, lease: bool) -> Config {
        let mut c = Config::new(id, mix(cfg.seed, mix(id.0, incarnation)));
        c.election_ticks = ELECTION_TICKS;
        c.heartbeat_ticks = 2;
        // PreVote and CheckQuorum are on by default; turning them off in some seeds covers
        // those configurations and makes elections more disruptive.
        c.pre_vote = mix(cfg.seed, 0x93E) % 4 != 0;
        c.check_quorum = lease || mix(cfg.seed, 0xC0) % 4 != 0;
        c.lease_read_ticks = lease.then_some(ELECTION_TICKS - 2);
        // Small windows and messages so flow control is exercised; tiny ones in some seeds
        // (replication then advances a few entries at a time).
        // Storms replicate one entry at a time: a new leader's older entries then travel
        // apart from its own, which is the window the 5.4.2 rule guards.
        let flow = if profile(cfg) == 1 {
            mix(cfg.seed, 0xF10) % 2
        } else {
            mix(cfg.seed, 0xF10) % 4
        };
        c.max_append_entries = [1, 2, 8, 8][flow as usize];
        c.max_inflight_msgs = [1, 2, 4, 4][flow as usize];
        c.max_append_bytes = 4096;
        c.max_inflight_bytes = 16384;
        c.injected_bug = cfg.bug;
        c
    }

    /// Start a node from its durable store (first boot or restart).
    fn boot(cfg: &SimConfig, node: &mut Node, lease: bool) -> Raft<MemLogStore> {
        let store = node.stopped.take().expect("booting a node that runs");
        let meta = store.snapshot_meta().expect("mem store");
        node.kv = node.snap_data.clone();
        node.applied = meta.index;
        node.applied_membership = meta.membership.clone();
        node.incarnation += 1;
        let config = Self::raft_config(cfg, node.id, node.incarnation, lease);
        Raft::new(config, store, meta.index).expect("restart from a consistent store")
    }

    fn log(&self, f: impl FnOnce() -> String) {
        if self.cfg.verbose {
            eprintln!("[{:5}] {}", self.now, f());
        }
    }

    fn fail<T>(&self, what: String) -> SimResult<T> {
        Err(format!(
            "seed {} tick {}: {what} (replay: HAVEN_SIM_SEED_START={} {REPLAY_COUNTS} \
             HAVEN_SIM_VERBOSE=1 cargo test --release --test sim <this test>)",
            self.cfg.seed, self.now, self.cfg.seed
        ))
    }

    fn raft_err<T>(&self, node: usize, e: RaftError) -> SimResult<T> {
        self.fail(format!("node {} core error: {e}", self.nodes[node].id))
    }

    // ----- main loop -----

    pub fn run(mut self) -> SimResult<Report> {
        let heal_at = self.cfg.ticks - self.cfg.heal_ticks;
        for tick in 0..self.cfg.ticks {
            self.now = tick;
            if tick == heal_at {
                self.heal()?;
            }
            if tick < heal_at {
                self.inject_faults()?;
            }
            self.advance_clocks();
            self.wake_nodes()?;
            self.deliver_messages()?;
            for i in 0..self.nodes.len() {
                if self.is_running(i) {
                    self.catch_up(i)?;
                }
            }
            if self.cfg.inject_per_mille > 0
                && tick < heal_at
                && self.rng.chance(self.cfg.inject_per_mille, 1000)
            {
                self.inject()?;
            }
            for i in 0..self.nodes.len() {
                if self.is_running(i) {
                    self.complete_writes(i)?;
                }
            }
            self.run_clients()?;
            if tick >= heal_at {
                self.check_liveness(heal_at)?;
            }
        }
        self.finish()
    }

    /// Each node's clock runs on at its own rate, also while its process is paused (unless
    /// the pause froze the clock too); a node that is down has no clock.
    fn advance_clocks(&mut self) {
        for node in &mut self.nodes {
            let frozen = node.paused_until.is_some() && node.clock_frozen;
            if node.raft.is_some() && !frozen {
                node.clock_owed += node.rate_per_mille;
            } else if node.raft.is_none() {
                node.clock_owed = 0;
            }
        }
    }

    /// Tell node `i`'s core every whole tick its clock owes it. The runtime does this before
    /// every input, so the core never judges a lease on a clock that lags.
    fn catch_up(&mut self, i: usize) -> SimResult<()> {
        let ticks = self.nodes[i].clock_owed / 1000;
        self.nodes[i].clock_owed %= 1000;
        for _ in 0..ticks {
            let raft = self.nodes[i].raft.as_mut().expect("running");
            if let Err(e) = raft.tick() {
                return self.raft_err(i, e);
            }
            self.drain(i)?;
        }
        Ok(())
    }

    fn is_running(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.raft.is_some() && n.paused_until.is_none()
    }

    fn heal(&mut self) -> SimResult<()> {
        self.end_episode("the heal begins");
        self.healed = true;
        self.log(|| "heal: all links up, all nodes up, no drops".into());
        self.blocked.clear();
        self.chaos.drop_per_mille = 0;
        self.chaos.dup_per_mille = 0;
        self.chaos.snapshot_fail_per_mille = 0;
        // Raft's timing requirement: a round trip (network + disk at both ends) well below the
        // election timeout spread. The fault phase may violate it; the heal restores it.
        self.chaos.max_delay = self.chaos.max_delay.min(2);
        self.chaos.max_disk_delay = self.chaos.max_disk_delay.min(1);
        for i in 0..self.nodes.len() {
            if self.nodes[i].down_until.is_some() {
                self.nodes[i].down_until = Some(self.now);
            }
            if self.nodes[i].paused_until.is_some() {
                self.nodes[i].paused_until = Some(self.now);
            }
        }
        self.wake_nodes()?;
        self.heal_commit_base = self
            .nodes
            .iter()
            .filter_map(|n| n.raft.as_ref().map(|r| r.commit_index()))
            .max()
            .unwrap_or(LogIndex(0));
        Ok(())
    }

    fn check_liveness(&mut self, heal_at: u64) -> SimResult<()> {
        if self.live {
            return Ok(());
        }
        for n in &self.nodes {
            let Some(r) = n.raft.as_ref() else { continue };
            if r.role() == Role::Leader
                && r.commit_index() > self.heal_commit_base
                && r.log_term(r.commit_index()).ok().flatten() == Some(r.term())
            {
                self.live = true;
                self.log(|| format!("live: {} leads term {} and commits", n.id, r.term()));
                return Ok(());
            }
        }
        if self.now >= heal_at + self.cfg.liveness_ticks {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.raft {
                    Some(r) => {
                        let progress: Vec<_> = self
                            .nodes
                            .iter()
                            .filter_map(|p| r.progress(p.id).map(|pr| (p.id, pr)))
                            .collect();
                        format!(
                            "{r:?} first {} members {:?} progress {progress:?}",
                            r.first_index(),
                            r.membership()
                        )
                    }
                    None => "down".into(),
                })
                .collect();
            return self.fail(format!(
                "liveness: no leader committed within {} ticks of the heal: {states:?}",
                self.cfg.liveness_ticks
            ));
        }
        Ok(())
    }

    // ----- forged and replayed peer messages -----

    /// Step into a running member, as if a member sent it over an authenticated lane, either
    /// an earlier message again (the network may deliver any message again, any time later:
    /// it must be accepted) or one no correct member could send in the receiver's state (it
    /// must be dropped and counted exactly once). The safety checks run on throughout.
    fn inject(&mut self) -> SimResult<()> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if !self.seen.is_empty() && self.rng.chance(1, 2) {
            let m = self.seen[self.rng.below(self.seen.len() as u64) as usize].clone();
            let to = m.to.0 as usize - 1;
            if !self.is_running(to) {
                return Ok(());
            }
            self.log(|| {
                format!(
                    "replay {} -> {} t{} {}",
                    m.from,
                    m.to,
                    m.term.0,
                    short(&m.body)
                )
            });
            self.report.replayed += 1;
            self.catch_up(to)?;
            let raft = self.nodes[to].raft.as_mut().expect("running");
            if let Err(e) = raft.step(m) {
                return self.raft_err(to, e);
            }
            return self.drain(to);
        }
        let i = running[self.rng.below(running.len() as u64) as usize];
        self.catch_up(i)?;
        let Some(m) = self.forge(i) else {
            return Ok(());
        };
        self.log(|| format!("forge {} -> {} t{} {:?}", m.from, m.to, m.term.0, m.body));
        let raft = self.nodes[i].raft.as_mut().expect("running");
        let before: u64 = raft.rejected_messages().values().sum();
        let shown = format!("{m:?}");
        self.expect_rejection = true;
        let stepped = raft.step(m);
        let drained = stepped
            .map_err(|e| e.to_string())
            .and_then(|()| self.drain(i));
        self.expect_rejection = false;
        drained?;
        let raft = self.nodes[i].raft.as_ref().expect("running");
        let after: u64 = raft.rejected_messages().values().sum();
        if after != before + 1 {
            return self.fail(format!(
                "{} took a message no correct member sends ({} rejections counted): {shown}",
                raft.id(),
                after - before
            ));
        }
        self.report.rejected += 1;
        Ok(())
    }

    /// A message no correct member could send to node `i` in its current state, built from
    /// scratch or by mutating a message seen earlier.
    fn forge(&mut self, i: usize) -> Option<Message> {
        let n = self.nodes.len() as u64;
        let raft = self.nodes[i].raft.as_ref().expect("running");
        let (me, term, leader) = (raft.id(), raft.term(), raft.leader());
        let (commit, last) = (raft.commit_index(), raft.last_index());
        let commit_term = raft.log_term(commit).ok().flatten().unwrap_or(Term(0));
        let other = |rng: &mut SplitMix64| loop {
            let id = NodeId(1 + rng.below(n));
            if id != me {
                return id;
            }
        };
        let from = other(&mut self.rng);
        let big = |rng: &mut SplitMix64| match rng.below(3) {
            0 => u64::MAX,
            1 => u64::MAX / 2,
            _ => MAX_TERM_OR_INDEX + 1 + rng.below(1000),
        };
        let mut m = Message {
            group: GroupId(0),
            from,
            to: me,
            term,
            body: MessageBody::TimeoutNow,
        };
        let entry = |index: u64, term: Term, kind: EntryKind, data: Vec<u8>| Entry {
            group: GroupId(0),
            term,
            index: LogIndex(index),
            kind,
            data,
        };
        let append = |entries: Vec<Entry>| MessageBody::AppendEntries {
            prev_log_index: commit,
            prev_log_term: commit_term,
            entries,
            leader_commit: commit,
        };
        let k = self.rng.below(4);
        match self.rng.below(11) {
            // The leader's own term, claimed by someone else.
            0 => {
                let l = leader?;
                m.from = if l == me { from } else { other(&mut self.rng) };
                if m.from == l {
                    return None;
                }
                m.body = match k {
                    0 => MessageBody::Heartbeat {
                        commit,
                        round: self.rng.below(100),
                    },
                    1 => append(Vec::new()),
                    _ => MessageBody::TimeoutNow,
                };
            }
            // An ack beyond the leader's log.
            1 => {
                if raft.role() != Role::Leader {
                    return None;
                }
                let index = if k == 0 {
                    big(&mut self.rng)
                } else {
                    last.0 + 1 + self.rng.below(1000)
                };
                m.body = MessageBody::AppendEntriesResponse {
                    success: true,
                    index: LogIndex(index),
                    hint_index: LogIndex(0),
                    hint_term: Term(0),
                };
            }
            // A heartbeat round never started.
            2 => {
                if raft.role() != Role::Leader {
                    return None;
                }
                m.body = MessageBody::HeartbeatResponse {
                    round: u64::MAX - self.rng.below(1000),
                };
            }
            // A rejection whose hint lies beyond what it rejects.
            3 => {
                let index = self.rng.below(last.0 + 2);
                m.body = MessageBody::AppendEntriesResponse {
                    success: false,
                    index: LogIndex(index),
                    hint_index: LogIndex(index + 1 + self.rng.below(10)),
                    hint_term: Term(self.rng.below(term.0 + 1)),
                };
            }
            // Entries not placed right after prev (one at index 1 conflicting below commit,
            // as in issue 14 (d)), or of a term above the message's, or a corrupt or empty
            // membership.
            4 => {
                m.from = leader.filter(|&l| l != me).unwrap_or(from);
                let t = Term(term.0.max(1));
                m.body = append(match k {
                    0 => vec![entry(
                        commit.0 + 2 + self.rng.below(5),
                        t,
                        EntryKind::Normal,
                        vec![],
                    )],
                    1 if commit.0 > 0 => vec![entry(1, t, EntryKind::Normal, b"forged".to_vec())],
                    1 => vec![entry(
                        commit.0 + 1,
                        Term(t.0 + 1),
                        EntryKind::Normal,
                        vec![],
                    )],
                    2 => vec![entry(
                        commit.0 + 1,
                        t,
                        EntryKind::Membership,
                        vec![1, 0xff, 0x07],
                    )],
                    _ => vec![entry(
                        commit.0 + 1,
                        t,
                        EntryKind::Membership,
                        Membership::default().encode(),
                    )],
                });
            }
            // Snapshot metadata nonsense.
            5 => {
                m.from = leader.filter(|&l| l != me).unwrap_or(from);
                let membership = raft.membership().clone();
                let (index, t, membership) = match k {
                    0 => (commit.0 + 1, Term(0), membership),
                    1 => (0, term, membership),
                    2 => (commit.0 + 1, Term(term.0 + 1), membership),
                    _ => (commit.0 + 1, term, Membership::default()),
                };
                m.body = MessageBody::Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(index),
                        term: t,
                        membership,
                    },
                };
            }
            // A vote request claiming a log term above its campaign's.
            6 => {
                m.term = Term(term.0 + 1);
                m.body = MessageBody::RequestVote {
                    pre_vote: k == 0,
                    last_log_index: last,
                    last_log_term: Term(term.0 + 2 + self.rng.below(5)),
                    transfer: k == 1,
                };
            }
            // A message seen earlier, mutated: a term or an index that would overflow.
            7..=8 => {
                let mut seen = self
                    .seen
                    .get(self.rng.below(self.seen.len().max(1) as u64) as usize)?
                    .clone();
                seen.to = me;
                seen.from = from;
                match &mut seen.body {
                    MessageBody::AppendEntries { prev_log_index, .. } if k == 0 => {
                        prev_log_index.0 = big(&mut self.rng)
                    }
                    MessageBody::Heartbeat { commit, .. } if k == 0 => {
                        commit.0 = big(&mut self.rng)
                    }
                    MessageBody::RequestVote { last_log_index, .. } if k == 0 => {
                        last_log_index.0 = big(&mut self.rng)
                    }
                    _ => seen.term = Term(big(&mut self.rng)),
                }
                m = seen;
            }
            // A message seen earlier, misaddressed: another group, or "from" the receiver.
            _ => {
                let mut seen = self
                    .seen
                    .get(self.rng.below(self.seen.len().max(1) as u64) as usize)?
                    .clone();
                seen.to = me;
                if k < 2 {
                    seen.group = GroupId(1 + self.rng.below(5) as u32);
                } else {
                    seen.from = me;
                }
                m = seen;
            }
        }
        Some(m)
    }

    // ----- faults -----

    fn inject_faults(&mut self) -> SimResult<()> {
        let n = self.nodes.len() as u64;
        if self.episode.is_some() {
            return self.step_episode();
        }
        if !self.blocked.is_empty() && self.now >= self.partition_until {
            self.blocked.clear();
            self.log(|| "partition healed".into());
        }
        let heal_at = self.cfg.ticks - self.cfg.heal_ticks;
        if self.episode_due_until.is_none()
            && lease_on(&self.cfg)
            && self.now + EPISODE_WAIT_TICKS + EPISODE_TICKS < heal_at
            && self.rng.chance(1, EPISODE_ODDS)
        {
            self.episode_due_until = Some(self.now + EPISODE_WAIT_TICKS);
        }
        if let Some(until) = self.episode_due_until {
            if self.start_episode() || self.now >= until || !self.episode_possible() {
                self.episode_due_until = None;
            }
            // No new fault while an episode waits for a quiet moment.
            let now = self.now;
            self.leader_kills.retain(|(at, _)| *at > now);
            return Ok(());
        }
        if self.blocked.is_empty() && self.rng.chance(1, self.chaos.partition_odds) {
            self.partition();
        }
        let due: Vec<usize> = self
            .leader_kills
            .iter()
            .filter(|(at, _)| *at <= self.now)
            .map(|&(_, i)| i)
            .collect();
        self.leader_kills.retain(|(at, _)| *at > self.now);
        for i in due {
            if self.nodes[i].raft.is_some() {
                let down = 3 + self.rng.below(30);
                self.crash(i, down);
            }
        }
        if self.rng.chance(1, self.chaos.crash_odds) {
            let i = self.rng.below(n) as usize;
            if self.nodes[i].raft.is_some() {
                let down = 5 + self.rng.below(self.chaos.down_max_ticks);
                self.crash(i, down);
            }
        }
        if lease_on(&self.cfg) && self.rng.chance(1, 40) {
            // A supervisor restarts a process at once: the member may be back well within
            // the lease of the leader it answered just before.
            let i = self.rng.below(n) as usize;
            if self.nodes[i].raft.is_some() {
                let down = 1 + self.rng.below(4);
                self.crash(i, down);
            }
        }
        // Lease seeds pause more, and the leader in half of the pauses: a leader that
        // resumes after its lease ran out in real time is what the lease rules are about.
        let lease = lease_on(&self.cfg);
        let pause_odds = if lease {
            self.chaos.pause_odds / 4
        } else {
            self.chaos.pause_odds
        };
        if self.rng.chance(1, pause_odds) {
            let leader = self
                .leader_index()
                .filter(|_| lease && self.rng.chance(1, 2));
            let i = leader.unwrap_or_else(|| self.rng.below(n) as usize);
            if self.is_running(i) {
                // Without lease reads nothing depends on clocks: then half of the pauses also
                // freeze the node's clock (it resumes believing no time passed, as after a
                // long GC pause), which leaves deposed leaders that still think they lead.
                let frozen = !lease_on(&self.cfg) && self.rng.chance(1, 2);
                let until = self.now + 3 + self.rng.below(if frozen { 80 } else { 40 });
                self.log(|| {
                    format!(
                        "pause {} until {until} (clock frozen: {frozen})",
                        self.nodes[i].id
                    )
                });
                self.nodes[i].paused_until = Some(until);
                self.nodes[i].paused_at = self.now;
                self.nodes[i].clock_frozen = frozen;
            }
        }
        if self.rng.chance(1, self.chaos.transfer_odds) {
            if let Some(l) = self.leader_index() {
                let target = NodeId(1 + self.rng.below(n));
                let raft = self.nodes[l].raft.as_mut().expect("leader runs");
                let r = raft.transfer_leadership(target);
                if r.is_ok() {
                    self.transfer_target = Some(target);
                }
                self.log(|| format!("transfer {} -> {target}: {r:?}", self.nodes[l].id));
                self.drain(l)?;
            }
        }
        if self.rng.chance(1, self.chaos.change_odds) {
            self.change_membership()?;
        }
        Ok(())
    }

    fn partition(&mut self) {
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let mut side_a = Vec::new();
        let mut side_b = Vec::new();
        for &id in &ids {
            if self.rng.chance(1, 2) {
                side_a.push(id)
            } else {
                side_b.push(id)
            }
        }
        let kind = self.rng.below(3);
        match kind {
            0 => {
                // Symmetric.
                for &a in &side_a {
                    for &b in &side_b {
                        self.blocked.insert((a, b));
                        self.blocked.insert((b, a));
                    }
                }
            }
            1 => {
                // Asymmetric: a -> b cut, b -> a works.
                for &a in &side_a {
                    for &b in &side_b {
                        self.blocked.insert((a, b));
                    }
                }
            }
            _ => {
                // Bridge: one node talks to both sides, the sides not to each other.
                let bridge = ids[self.rng.below(ids.len() as u64) as usize];
                for &a in side_a.iter().filter(|&&x| x != bridge) {
                    for &b in side_b.iter().filter(|&&x| x != bridge) {
                        self.blocked.insert((a, b));
                        self.blocked.insert((b, a));
                    }
                }
            }
        }
        self.partition_until = self.now + 10 + self.rng.below(self.chaos.partition_max_ticks);
        self.log(|| {
            format!(
                "partition kind {kind} {side_a:?} | {side_b:?} until {}",
                self.partition_until
            )
        });
    }

    fn crash(&mut self, i: usize, down_ticks: u64) {
        self.report.crashes += 1;
        let node = &mut self.nodes[i];
        let raft = node.raft.take().expect("crashing a running node");
        node.stopped = Some(raft.into_store());
        node.writes.clear(); // in flight: lost
        node.incoming = None;
        node.paused_until = None;
        node.down_until = Some(self.now + down_ticks);
        node.proposals.clear();
        node.reads.clear();
        node.reads_waiting_apply.clear();
        node.queued_ops.clear();
        let id = node.id;
        self.log(|| format!("crash {id} for {down_ticks} ticks"));
        // Requests in flight at the crashed node have an unknown outcome.
        for op in 0..self.history.len() {
            if self.history[op].node == i && self.history[op].completion.is_none() {
                self.complete(op, Completion::Info);
            }
        }
    }

    fn wake_nodes(&mut self) -> SimResult<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].down_until.is_some_and(|t| t <= self.now) {
                self.restart(i)?;
            }
            if self.nodes[i].paused_until.is_some_and(|t| t <= self.now) {
                self.nodes[i].paused_until = None;
                let owed = self.nodes[i].clock_owed / 1000;
                self.log(|| format!("resume {} owing {owed} ticks", self.nodes[i].id));
                self.report.paused_ticks += self.now - self.nodes[i].paused_at;
                let lagging = self.cfg.bug == Some(InjectedBug::LeaseReadOnLaggingClock);
                if lagging {
                    // The old driver: the backlog queued during the pause first (here the
                    // client requests, then the peer messages), on the clock of before the
                    // pause; the missed ticks only after it.
                    self.submit_queued_ops(i, false)?;
                    self.deliver_messages_to(i)?;
                }
                // The clock ran on while the process was frozen: the missed ticks (a runtime
                // derives ticks from a monotonic clock), then the backlog.
                self.catch_up(i)?;
                self.complete_writes(i)?;
                if !lagging {
                    self.submit_queued_ops(i, true)?;
                }
            }
        }
        Ok(())
    }

    /// Start node `i` again from its durable state.
    fn restart(&mut self, i: usize) -> SimResult<()> {
        self.nodes[i].down_until = None;
        // A down node has no clock (`advance_clocks`); a restart in the tick of the crash
        // starts from zero too.
        self.nodes[i].clock_owed = 0;
        let lease = lease_on(&self.cfg);
        let raft = Self::boot(&self.cfg, &mut self.nodes[i], lease);
        self.log(|| format!("restart {} at {:?}", self.nodes[i].id, raft));
        self.nodes[i].raft = Some(raft);
        self.drain(i)
    }

    fn leader_index(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .filter(|&i| self.nodes[i].raft.as_ref().unwrap().role() == Role::Leader)
            .max_by_key(|&i| self.nodes[i].raft.as_ref().unwrap().term())
    }

    fn change_membership(&mut self) -> SimResult<()> {
        let Some(l) = self.leader_index() else {
            return Ok(());
        };
        let raft = self.nodes[l].raft.as_ref().expect("leader runs");
        let m = raft.membership().clone();
        let last = raft.last_index();
        let outsiders: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&id| !m.contains(id))
            .collect();
        let learners: Vec<NodeId> = m.learners.keys().copied().collect();
        let members: Vec<NodeId> = m.members().collect();
        let change = match self.rng.below(3) {
            0 if !outsiders.is_empty() => {
                let id = outsiders[self.rng.below(outsiders.len() as u64) as usize];
                MembershipChange::AddLearner {
                    id,
                    address: format!("{id}:7000"),
                }
            }
            1 if !learners.is_empty() => {
                let id = learners[self.rng.below(learners.len() as u64) as usize];
                // Promote only a learner that caught up (availability, not safety).
                match raft.progress(id) {
                    Some((matched, _, _)) if matched.0 + 5 >= last.0 => {
                        MembershipChange::PromoteLearner { id }
                    }
                    _ => return Ok(()),
                }
            }
            2 if m.voters.len() > 2 || !learners.is_empty() => {
                let id = members[self.rng.below(members.len() as u64) as usize];
                if m.is_voter(id) && m.voters.len() <= 2 {
                    return Ok(());
                }
                MembershipChange::Remove { id }
            }
            _ => return Ok(()),
        };
        let raft = self.nodes[l].raft.as_mut().expect("leader runs");
        let r = raft.change_membership(change.clone());
        if r.is_ok() {
            self.report.membership_changes += 1;
        }
        self.log(|| {
            format!(
                "membership change {change:?} at {}: {r:?}",
                self.nodes[l].id
            )
        });
        self.drain(l)
    }

    // ----- lease episodes -----

    /// Begin a lease episode if the cluster is in a state to have one: a leader whose voters
    /// (an odd number) all run, no partition, no transfer or membership change under way.
    fn start_episode(&mut self) -> bool {
        let heal_at = self.cfg.ticks - self.cfg.heal_ticks;
        if !self.blocked.is_empty() || self.now + EPISODE_TICKS >= heal_at {
            return false;
        }
        let Some(l) = self.leader_index() else {
            return false;
        };
        let raft = self.nodes[l].raft.as_ref().expect("leader runs");
        let voters: Vec<usize> = raft
            .membership()
            .voters
            .keys()
            .map(|id| id.0 as usize - 1)
            .collect();
        if voters.len() % 2 == 0
            || !voters.contains(&l)
            || raft.transfer_target().is_some()
            || raft.membership() != raft.committed_membership()
            || voters.iter().any(|&v| !self.is_running(v))
        {
            return false;
        }
        let term = raft.term();
        let mut followers: Vec<usize> = voters.into_iter().filter(|&v| v != l).collect();
        for k in (1..followers.len()).rev() {
            let j = self.rng.below(k as u64 + 1) as usize;
            followers.swap(k, j);
        }
        // C and L's side (G among it) are both one short of a quorum: C needs G's vote, L
        // needs G's acknowledgements.
        let voter_count = followers.len() + 1;
        let quorum = voter_count / 2 + 1;
        let c = &self.chaos;
        let saved = (
            c.drop_per_mille,
            c.dup_per_mille,
            c.max_delay,
            c.max_disk_delay,
        );
        self.chaos.drop_per_mille = 0;
        self.chaos.dup_per_mille = 0;
        self.chaos.max_delay = 1;
        self.chaos.max_disk_delay = 0;
        let episode = LeaseEpisode {
            phase: EpisodePhase::Settle,
            until: self.now + EPISODE_SETTLE_TICKS,
            leader: l,
            term,
            voter: followers[0],
            candidates: followers[1..quorum].to_vec(),
            others: followers[quorum..].to_vec(),
            campaigner: None,
            held: Vec::new(),
            saved,
        };
        self.log(|| {
            let id = |i: &usize| self.nodes[*i].id;
            format!(
                "lease episode: leader {} voter {} candidates {:?} others {:?}",
                id(&episode.leader),
                id(&episode.voter),
                episode.candidates.iter().map(id).collect::<Vec<_>>(),
                episode.others.iter().map(id).collect::<Vec<_>>()
            )
        });
        self.episode = Some(episode);
        true
    }

    /// False once the leader's configuration has an even number of voters (no episode then:
    /// C and L's side cannot both be one short of a quorum with one G). Nothing changes the
    /// configuration while an episode is due.
    fn episode_possible(&self) -> bool {
        self.leader_index().map_or(true, |l| {
            let raft = self.nodes[l].raft.as_ref().expect("leader runs");
            raft.membership() != raft.committed_membership()
                || raft.membership().voters.len() % 2 == 1
        })
    }

    /// The episode's share of a tick of the fault phase (no other fault meanwhile).
    fn step_episode(&mut self) -> SimResult<()> {
        let now = self.now;
        // Kills of leaders elected meanwhile are skipped, not postponed.
        self.leader_kills.retain(|(at, _)| *at > now);
        let ep = self.episode.as_ref().expect("episode under way");
        let leads = self.nodes[ep.leader]
            .raft
            .as_ref()
            .is_some_and(|r| r.role() == Role::Leader && r.term() == ep.term);
        match ep.phase {
            EpisodePhase::Settle if !leads => self.end_episode("the leader changed"),
            EpisodePhase::Settle if now >= ep.until => self.end_episode("the logs never settled"),
            EpisodePhase::Settle => {
                if self.episode_settled() {
                    let ep = self.episode.as_mut().expect("episode under way");
                    ep.phase = EpisodePhase::Cut;
                    ep.until = now + EPISODE_CUT_TICKS;
                    let ids = |v: &[usize]| -> Vec<NodeId> {
                        v.iter().map(|&i| NodeId(i as u64 + 1)).collect()
                    };
                    let far = ids(&[&[ep.leader][..], &ep.others].concat());
                    let cut = ids(&ep.candidates);
                    for &a in &far {
                        for &b in &cut {
                            self.blocked.insert((a, b));
                            self.blocked.insert((b, a));
                        }
                    }
                    self.log(|| format!("lease episode: cut {cut:?} from {far:?}"));
                }
            }
            EpisodePhase::Cut if now >= ep.until || !leads => {
                self.end_episode("no campaign met a renewed lease")
            }
            EpisodePhase::Cut => {}
            EpisodePhase::Fired if now >= ep.until => self.end_episode("done"),
            EpisodePhase::Fired => {}
        }
        Ok(())
    }

    /// L, G and C hold the same durable log, and L committed all of it.
    fn episode_settled(&self) -> bool {
        let ep = self.episode.as_ref().expect("episode under way");
        let leader = self.nodes[ep.leader].raft.as_ref().expect("leader runs");
        let last = leader.last_index();
        let last_term = leader.log_term(last).ok().flatten();
        leader.commit_index() == last
            && leader.persisted_index() == last
            && std::iter::once(ep.voter)
                .chain(ep.candidates.iter().copied())
                .all(|i| {
                    self.nodes[i].raft.as_ref().is_some_and(|r| {
                        r.last_index() == last
                            && r.persisted_index() == last
                            && r.log_term(last).ok().flatten() == last_term
                    })
                })
    }

    /// Whether `send` holds this message back (or loses it): a (pre-)vote request of C to G
    /// while the episode waits to fire.
    fn holds(&self, m: &Message) -> bool {
        self.episode.as_ref().is_some_and(|ep| {
            ep.phase == EpisodePhase::Cut
                && m.to == self.nodes[ep.voter].id
                && ep.candidates.iter().any(|&c| self.nodes[c].id == m.from)
                && matches!(m.body, MessageBody::RequestVote { .. })
        })
    }

    /// Whether delivering `m` makes G renew L's lease while a held request waits: the
    /// moment to fire (G's answer is already on its way to L).
    fn renews_lease(&self, m: &Message) -> bool {
        self.episode.as_ref().is_some_and(|ep| {
            ep.phase == EpisodePhase::Cut
                && !ep.held.is_empty()
                && m.from == self.nodes[ep.leader].id
                && m.to == self.nodes[ep.voter].id
                && m.term == ep.term
                && matches!(m.body, MessageBody::Heartbeat { .. })
        })
    }

    /// Kill and restart G at once, take L -> G down and let the held requests reach G.
    fn fire_episode(&mut self) -> SimResult<()> {
        let ep = self.episode.as_mut().expect("episode under way");
        ep.phase = EpisodePhase::Fired;
        ep.until = self.now + EPISODE_AFTER_TICKS;
        let (leader, voter) = (ep.leader, ep.voter);
        let held = std::mem::take(&mut ep.held);
        self.report.lease_episodes += 1;
        self.log(|| "lease episode: restart the voter as a vote request reaches it".into());
        self.crash(voter, 0);
        self.restart(voter)?;
        self.blocked
            .insert((self.nodes[leader].id, self.nodes[voter].id));
        for packet in held {
            // Delivered later in this tick's pass over the network.
            self.packet_seq += 1;
            self.net.insert((self.now, self.packet_seq), packet);
        }
        Ok(())
    }

    /// End the episode (if any): links up, the seed's fault intensities back.
    fn end_episode(&mut self, why: &str) {
        let Some(ep) = self.episode.take() else {
            return;
        };
        self.log(|| format!("lease episode ends ({:?}): {why}", ep.phase));
        self.blocked.clear();
        let c = &mut self.chaos;
        (
            c.drop_per_mille,
            c.dup_per_mille,
            c.max_delay,
            c.max_disk_delay,
        ) = ep.saved;
    }

    // ----- network -----

    fn send(&mut self, from: usize, msg: Message) {
        let snapshot = match &msg.body {
            MessageBody::Snapshot { meta } => {
                let node = &self.nodes[from];
                let stored = node
                    .raft
                    .as_ref()
                    .map(|r| r.store().snapshot_meta().expect("mem store").index);
                assert_eq!(
                    stored,
                    Some(meta.index),
                    "snapshot message matches the store"
                );
                self.report.snapshots_sent += 1;
                Some(node.snap_data.clone())
            }
            _ => None,
        };
        if self.holds(&msg) {
            let episode = self.episode.as_mut().expect("holds");
            let first = *episode.campaigner.get_or_insert(msg.from) == msg.from;
            let what = if first { "hold" } else { "lose" };
            self.log(|| {
                format!(
                    "{what} {} -> {} t{} {:?}",
                    msg.from, msg.to, msg.term.0, msg.body
                )
            });
            if first {
                let episode = self.episode.as_mut().expect("holds");
                episode.held.push(Packet { msg, snapshot });
            }
            return;
        }
        if self.blocked.contains(&(msg.from, msg.to))
            || self.rng.chance(self.chaos.drop_per_mille, 1000)
        {
            if snapshot.is_some() {
                // The runtime's stream failed: it reports so.
                if let Some(r) = self.nodes[from].raft.as_mut() {
                    r.report_snapshot(msg.to, false);
                }
            }
            return;
        }
        let copies = if self.rng.chance(self.chaos.dup_per_mille, 1000) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + 1 + self.rng.below(self.chaos.max_delay);
            self.packet_seq += 1;
            self.net.insert(
                (at, self.packet_seq),
                Packet {
                    msg: msg.clone(),
                    snapshot: snapshot.clone(),
                },
            );
        }
    }

    fn submit_queued_ops(&mut self, i: usize, tell_time: bool) -> SimResult<()> {
        for op in std::mem::take(&mut self.nodes[i].queued_ops) {
            if self.history[op].completion.is_none() {
                self.submit_op(op, tell_time)?;
            }
        }
        Ok(())
    }

    /// Step every packet due for node `i` into it at once, without telling it the time
    /// first (the runtime bug `InjectedBug::LeaseReadOnLaggingClock`).
    fn deliver_messages_to(&mut self, i: usize) -> SimResult<()> {
        let due: Vec<(u64, u64)> = self
            .net
            .iter()
            .filter(|(k, p)| k.0 <= self.now && p.msg.to == self.nodes[i].id)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let packet = self.net.remove(&key).expect("listed");
            self.deliver_packet(packet, false, &mut Vec::new())?;
        }
        Ok(())
    }

    fn deliver_messages(&mut self) -> SimResult<()> {
        let mut deferred = Vec::new();
        while let Some(entry) = self.net.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let packet = entry.remove();
            self.deliver_packet(packet, true, &mut deferred)?;
        }
        for (until, packet) in deferred {
            self.packet_seq += 1;
            self.net
                .insert((until.max(self.now + 1), self.packet_seq), packet);
        }
        Ok(())
    }

    /// Deliver one packet (deferred if its receiver is paused); with `tell_time`, the
    /// receiver's core first gets the ticks its clock owes.
    fn deliver_packet(
        &mut self,
        packet: Packet,
        tell_time: bool,
        deferred: &mut Vec<(u64, Packet)>,
    ) -> SimResult<()> {
        {
            let to = packet.msg.to.0 as usize - 1;
            let from = packet.msg.from.0 as usize - 1;
            if self.blocked.contains(&(packet.msg.from, packet.msg.to))
                || self.nodes[to].raft.is_none()
            {
                if packet.snapshot.is_some() {
                    if let Some(r) = self.nodes[from].raft.as_mut() {
                        r.report_snapshot(packet.msg.to, false);
                    }
                }
                return Ok(());
            }
            if let Some(until) = self.nodes[to].paused_until {
                deferred.push((until, packet));
                return Ok(());
            }
            if tell_time {
                self.catch_up(to)?;
            }
            self.trace_message(&packet.msg);
            if self.cfg.inject_per_mille > 0 && packet.snapshot.is_none() {
                if self.seen.len() >= 512 {
                    self.seen.pop_front();
                }
                self.seen.push_back(packet.msg.clone());
            }
            if let Some(data) = packet.snapshot {
                // The runtime streamed the data; some transfers fail.
                let ok = !self.rng.chance(self.chaos.snapshot_fail_per_mille, 1000);
                if let Some(r) = self.nodes[from].raft.as_mut() {
                    r.report_snapshot(packet.msg.to, ok);
                }
                if !ok {
                    return Ok(());
                }
                let MessageBody::Snapshot { meta } = &packet.msg.body else {
                    unreachable!("snapshot data travels only with Snapshot messages")
                };
                self.nodes[to].incoming = Some((meta.clone(), data));
            }
            let renews_lease = self.renews_lease(&packet.msg);
            let raft = self.nodes[to].raft.as_mut().expect("checked");
            if let Err(e) = raft.step(packet.msg) {
                return self.raft_err(to, e);
            }
            self.drain(to)?;
            if self.is_running(from) {
                self.drain(from)?;
            }
            if renews_lease {
                self.fire_episode()?;
            }
        }
        Ok(())
    }

    fn trace_message(&mut self, m: &Message) {
        let mut h = mix(self.trace, m.from.0);
        h = mix(h, m.to.0);
        h = mix(h, m.term.0);
        h = mix(h, m.body.name().len() as u64);
        if let MessageBody::AppendEntries {
            prev_log_index,
            entries,
            leader_commit,
            ..
        } = &m.body
        {
            h = mix(h, prev_log_index.0);
            h = mix(h, entries.len() as u64);
            h = mix(h, leader_commit.0);
        }
        self.trace = h;
        if self.cfg.verbose {
            self.log(|| {
                format!(
                    "deliver {} -> {} t{} {:?}",
                    m.from,
                    m.to,
                    m.term.0,
                    short(&m.body)
                )
            });
        }
    }

    // ----- node runtime -----

    /// Take and handle every `Ready` the node has.
    fn drain(&mut self, i: usize) -> SimResult<()> {
        loop {
            let raft = self.nodes[i]
                .raft
                .as_mut()
                .expect("draining a running node");
            if !raft.has_ready() {
                return Ok(());
            }
            let ready = match raft.ready() {
                Ok(r) => r,
                Err(e) => return self.raft_err(i, e),
            };
            self.handle_ready(i, ready)?;
            self.complete_writes(i)?;
        }
    }

    fn handle_ready(&mut self, i: usize, rd: Ready) -> SimResult<()> {
        let id = self.nodes[i].id;
        self.trace = mix(mix(self.trace, id.0), rd.number);
        if !rd.rejected.is_empty() && !self.expect_rejection {
            return self.fail(format!(
                "{id} rejected a message a correct member sent: {:?}",
                rd.rejected
            ));
        }
        if let Some(ss) = rd.soft_state {
            self.log(|| format!("{id} soft state {ss:?}"));
            if ss.role == Role::Leader {
                self.check_new_leader(i)?;
                if self.transfer_target.take() == Some(id) {
                    self.report.transfers_completed += 1;
                }
                if !self.healed && self.rng.chance(self.chaos.leader_kill_per_mille, 1000) {
                    let at = self.now + 1 + self.rng.below(6);
                    self.leader_kills.push((at, i));
                }
            }
        }
        if let Some(hs) = rd.hard_state {
            self.record_commit(i, hs.commit)?;
        }
        self.check_entries(i, &rd.entries)?;
        let snapshot = match rd.snapshot {
            Some(meta) => {
                let Some((incoming, data)) = self.nodes[i].incoming.take() else {
                    return self.fail(format!("{id}: snapshot install without data"));
                };
                if incoming != meta {
                    return self.fail(format!(
                        "{id}: installing {meta:?}, data is for {incoming:?}"
                    ));
                }
                self.log(|| format!("{id} installs snapshot at {}", meta.index));
                self.report.snapshots_installed += 1;
                let node = &mut self.nodes[i];
                node.kv = data.clone();
                node.applied = meta.index;
                node.applied_membership = meta.membership.clone();
                Some((meta, data))
            }
            None => None,
        };
        for m in rd.messages {
            self.send(i, m);
        }
        if rd.hard_state.is_some()
            || !rd.entries.is_empty()
            || snapshot.is_some()
            || !rd.persisted_messages.is_empty()
        {
            let node = &self.nodes[i];
            let earliest = node.writes.back().map_or(0, |w| w.done_at);
            let delay = self.rng.below(self.chaos.max_disk_delay + 1);
            let done_at = earliest.max(self.now + delay);
            self.nodes[i].writes.push_back(Write {
                done_at,
                number: rd.number,
                hard_state: rd.hard_state,
                entries: rd.entries,
                snapshot,
                after: rd.persisted_messages,
            });
        }
        for e in &rd.committed_entries {
            self.apply(i, e)?;
        }
        for rs in rd.read_states {
            let ctx = u64::from_le_bytes(rs.context[..8].try_into().expect("8-byte context"));
            if let Some(op) = self.nodes[i].reads.remove(&ctx) {
                match rs.index {
                    Some(index) => {
                        // Read freshness, checked directly (the history check needs a write
                        // to the same key to notice): the read index covers every entry
                        // committed before the read was asked.
                        let floor = self.history[op].commit_floor;
                        if index.0 < floor && self.history[op].completion.is_none() {
                            return self.fail(format!(
                                "stale read index: {id} answers read {op} with index {index}, \
                                 but {floor} was committed before it was asked"
                            ));
                        }
                        self.nodes[i].reads_waiting_apply.push((index, op))
                    }
                    None => self.complete(op, Completion::Fail),
                }
            }
        }
        self.serve_reads(i);
        self.maybe_snapshot(i)
    }

    fn complete_writes(&mut self, i: usize) -> SimResult<()> {
        while self.nodes[i]
            .writes
            .front()
            .is_some_and(|w| w.done_at <= self.now)
        {
            let w = self.nodes[i].writes.pop_front().expect("checked");
            let node = &mut self.nodes[i];
            let raft = node.raft.as_mut().expect("running");
            if let Some((meta, data)) = w.snapshot {
                raft.store_mut().install_snapshot(meta);
                node.snap_data = data;
            }
            if let Some(hs) = w.hard_state {
                raft.store_mut().set_hard_state(hs);
            }
            raft.store_mut().append(&w.entries);
            if let Err(e) = raft.advance_persisted(w.number) {
                return self.raft_err(i, e);
            }
            for m in w.after {
                self.send(i, m);
            }
        }
        Ok(())
    }

    fn apply(&mut self, i: usize, e: &Entry) -> SimResult<()> {
        let id = self.nodes[i].id;
        if e.index != self.nodes[i].applied.next() {
            return self.fail(format!(
                "{id} applies {} after {}",
                e.index, self.nodes[i].applied
            ));
        }
        // Every node applies the same entry at the same index.
        let h = entry_hash(e);
        let slot = e.index.0 as usize;
        if self.applied_at.len() <= slot {
            self.applied_at.resize(slot + 1, None);
        }
        match self.applied_at[slot] {
            Some(prev) if prev != h => {
                return self.fail(format!(
                    "state machine safety: {id} applies a different entry at {} (term {})",
                    e.index, e.term
                ))
            }
            _ => self.applied_at[slot] = Some(h),
        }
        self.note_committed(i, e.index, e.term)?;
        self.trace = mix(self.trace, h);
        let node = &mut self.nodes[i];
        node.applied = e.index;
        let outcome = match e.kind {
            EntryKind::Normal => {
                let Some(req) = Request::decode(&e.data) else {
                    return self.fail(format!("{id}: undecodable command at {}", e.index));
                };
                let outcome = node.kv.apply(&req);
                self.applied_requests
                    .entry((req.client, req.seq))
                    .or_insert(outcome);
                Some(outcome)
            }
            EntryKind::Membership => {
                match Membership::from_entry(e) {
                    Ok(Some(m)) => node.applied_membership = m,
                    other => return self.fail(format!("{id}: bad membership entry: {other:?}")),
                }
                None
            }
            EntryKind::Noop => None,
        };
        node.raft
            .as_mut()
            .expect("running")
            .advance_applied(e.index);
        if let Some((op, term)) = node.proposals.remove(&e.index) {
            if term == e.term {
                let result = match outcome {
                    Some(Outcome::Written) => OpResult::Written,
                    Some(Outcome::Cas(b)) => OpResult::Cas(b),
                    None => return self.fail(format!("{id}: proposal became a non-command entry")),
                };
                self.complete(op, Completion::Ok(result));
            } else {
                // Another leader's entry took that index: ours was never applied.
                self.complete(op, Completion::Fail);
            }
        }
        // Entries below this index that were proposed here but never applied here (the log
        // was replaced by a snapshot) have an unknown outcome; they time out.
        Ok(())
    }

    fn serve_reads(&mut self, i: usize) {
        let applied = self.nodes[i].applied;
        let ready: Vec<usize> = self.nodes[i]
            .reads_waiting_apply
            .iter()
            .filter(|(idx, _)| *idx <= applied)
            .map(|&(_, op)| op)
            .collect();
        self.nodes[i]
            .reads_waiting_apply
            .retain(|(idx, _)| *idx > applied);
        for op in ready {
            let value = self.nodes[i].kv.get(self.history[op].key);
            self.complete(op, Completion::Ok(OpResult::Read(value)));
        }
    }

    fn maybe_snapshot(&mut self, i: usize) -> SimResult<()> {
        let interval = self.chaos.snapshot_interval;
        if interval == 0 {
            return Ok(());
        }
        let node = &mut self.nodes[i];
        let raft = node.raft.as_mut().expect("running");
        let snap = raft.store().snapshot_meta().expect("mem store").index;
        if node.applied.0 < snap.0 + interval || node.applied > raft.persisted_index() {
            return Ok(());
        }
        let term = match raft.log_term(node.applied) {
            Ok(Some(t)) => t,
            other => {
                let msg = format!(
                    "{}: no term for applied {}: {other:?}",
                    node.id, node.applied
                );
                return self.fail(msg);
            }
        };
        let meta = SnapshotMeta {
            index: node.applied,
            term,
            membership: node.applied_membership.clone(),
        };
        raft.store_mut().compact(meta);
        node.snap_data = node.kv.clone();
        Ok(())
    }

    // ----- invariants -----

    fn check_new_leader(&mut self, i: usize) -> SimResult<()> {
        let raft = self.nodes[i].raft.as_ref().expect("running");
        let (id, term) = (raft.id(), raft.term());
        self.report.elections += 1;
        if let Some(&other) = self.leaders.get(&term) {
            if other != id {
                return self.fail(format!(
                    "election safety: {other} and {id} both lead term {term}"
                ));
            }
        }
        self.leaders.insert(term, id);
        // Leader completeness: every entry committed in an earlier term is in our log.
        for (idx, c) in self.committed.iter().enumerate() {
            let Some((entry_term, observed)) = *c else {
                continue;
            };
            if observed >= term {
                continue;
            }
            match raft.log_term(LogIndex(idx as u64)) {
                Ok(Some(t)) if t == entry_term => {}
                Err(StorageError::Compacted) => {}
                other => {
                    return self.fail(format!(
                        "leader completeness: new leader {id} of {term} has {other:?} at {idx}, \
                         committed {entry_term} (seen in {observed})"
                    ))
                }
            }
        }
        Ok(())
    }

    fn record_commit(&mut self, i: usize, commit: LogIndex) -> SimResult<()> {
        let raft = self.nodes[i].raft.as_ref().expect("running");
        let first = raft.first_index().0.max(1);
        let start = (self.committed.len() as u64).max(first);
        // Only new indices need a term lookup; earlier ones were checked when first seen and
        // are re-checked whenever entries are written or applied.
        for idx in start..=commit.0 {
            let raft = self.nodes[i].raft.as_ref().expect("running");
            match raft.log_term(LogIndex(idx)) {
                Ok(Some(t)) => self.note_committed(i, LogIndex(idx), t)?,
                other => {
                    let id = raft.id();
                    return self.fail(format!(
                        "{id}: commit {commit} covers {idx} without an entry: {other:?}"
                    ));
                }
            }
        }
        self.report.max_commit = self.report.max_commit.max(commit.0);
        Ok(())
    }

    fn note_committed(&mut self, i: usize, index: LogIndex, term: Term) -> SimResult<()> {
        let observed = self.nodes[i].raft.as_ref().expect("running").term();
        let slot = index.0 as usize;
        if self.committed.len() <= slot {
            self.committed.resize(slot + 1, None);
        }
        match self.committed[slot] {
            Some((t, _)) if t != term => self.fail(format!(
                "committed entry lost: {} holds term {term} at committed index {index}, \
                 committed with term {t}",
                self.nodes[i].id
            )),
            Some((t, seen)) => {
                self.committed[slot] = Some((t, seen.min(observed)));
                Ok(())
            }
            None => {
                self.committed[slot] = Some((term, observed));
                Ok(())
            }
        }
    }

    /// Log matching, checked on every batch a node persists.
    fn check_entries(&mut self, i: usize, entries: &[Entry]) -> SimResult<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let raft = self.nodes[i].raft.as_ref().expect("running");
        let mut prev_term = raft.log_term(first.index.prev()).ok().flatten();
        for e in entries {
            let key = (e.index, e.term);
            let value = (entry_hash(e), prev_term);
            match self.registry.get(&key) {
                Some(&(h, p)) => {
                    let prev_differs = matches!((p, prev_term), (Some(a), Some(b)) if a != b);
                    if h != value.0 || prev_differs {
                        return self.fail(format!(
                            "log matching: {} holds a different entry at ({}, {}) or a different \
                             predecessor",
                            raft.id(),
                            e.index,
                            e.term
                        ));
                    }
                }
                None => {
                    self.registry.insert(key, value);
                }
            }
            // A lagging node may legitimately write a stale entry where others committed
            // another one; it may never write one below its own commit index.
            let committed_here = e.index <= raft.commit_index();
            if let (true, Some(Some((t, _)))) =
                (committed_here, self.committed.get(e.index.0 as usize))
            {
                if *t != e.term {
                    return self.fail(format!(
                        "committed entry lost: {} overwrites committed ({}, {t}) with term {}",
                        raft.id(),
                        e.index,
                        e.term
                    ));
                }
            }
            prev_term = Some(e.term);
        }
        Ok(())
    }

    // ----- clients -----

    fn run_clients(&mut self) -> SimResult<()> {
        for op in 0..self.history.len() {
            if self.history[op].completion.is_none() && self.history[op].deadline <= self.now {
                self.complete(op, Completion::Info);
            }
        }
        for c in 0..self.clients.len() {
            if self.clients[c].busy.is_some() || self.clients[c].next_at > self.now {
                continue;
            }
            self.start_op(c)?;
        }
        Ok(())
    }

    fn start_op(&mut self, c: usize) -> SimResult<()> {
        let n = self.nodes.len() as u64;
        // During a lease episode clients keep asking L, whom they believe to lead.
        let hint = match &self.episode {
            Some(ep) => Some(self.nodes[ep.leader].id),
            None => self.clients[c].leader_hint,
        };
        let target = match hint {
            Some(l) if self.rng.chance(4, 5) => l.0 as usize - 1,
            _ => self.rng.below(n) as usize,
        };
        let paused = self.nodes[target].raft.is_some() && !self.is_running(target);
        let queue = paused && lease_on(&self.cfg) && self.rng.chance(1, 2);
        if !self.is_running(target) && !queue {
            // Connection refused or no answer: try another node next tick.
            self.clients[c].leader_hint = None;
            self.clients[c].next_at = self.now + 1;
            return Ok(());
        }
        let key = self.rng.below(KEYS);
        // During a lease episode nothing new may reach G's log before it fires, and after it
        // a write at the cut-off leader would keep its client waiting instead of reading.
        let op = match self.rng.below(10) {
            _ if self.episode.is_some() => Op::Read,
            0..=3 => Op::Read,
            4..=6 => {
                self.next_value += 1;
                Op::Write(self.next_value)
            }
            _ => {
                self.next_value += 1;
                // Expect a recent value so some swaps succeed.
                let expected = self.next_value.saturating_sub(1 + self.rng.below(4));
                Op::Cas(expected, self.next_value)
            }
        };
        self.event_clock += 1;
        let index = self.history.len();
        self.clients[c].seq += 1;
        self.history.push(OpRecord {
            client: self.clients[c].id,
            key,
            op,
            invoked: self.event_clock,
            completed: 0,
            completion: None,
            seq: self.clients[c].seq,
            node: target,
            deadline: self.now + OP_TIMEOUT_TICKS,
            commit_floor: self.committed.len().saturating_sub(1) as u64,
        });
        self.clients[c].busy = Some(index);
        if queue {
            // The connection is open; the paused process reads the request when it resumes.
            self.nodes[target].queued_ops.push(index);
            return Ok(());
        }
        self.submit_op(index, true)
    }

    /// Hand client request `index` of the history to its node; with `tell_time`, the
    /// node's core first gets the ticks its clock owes (as a correct runtime does).
    fn submit_op(&mut self, index: usize, tell_time: bool) -> SimResult<()> {
        let (target, key, op) = {
            let r = &self.history[index];
            (r.node, r.key, r.op)
        };
        let c = self
            .clients
            .iter()
            .position(|cl| cl.id == self.history[index].client)
            .expect("client exists");
        if op == Op::Read && self.cfg.local_reads {
            let value = self.nodes[target].kv.get(key);
            self.complete(index, Completion::Ok(OpResult::Read(value)));
            return Ok(());
        }
        if tell_time {
            self.catch_up(target)?;
        }
        let raft = self.nodes[target].raft.as_mut().expect("running");
        let result = match op {
            Op::Read => raft
                .read_index((index as u64).to_le_bytes().to_vec())
                .map(|_| None),
            Op::Write(value) | Op::Cas(_, value) => {
                let command = match op {
                    Op::Cas(expected, new) => Command::Cas { key, expected, new },
                    _ => Command::Write { key, value },
                };
                let req = Request {
                    client: self.clients[c].id,
                    seq: self.history[index].seq,
                    command,
                };
                raft.propose(vec![req.encode()]).map(Some)
            }
        };
        match result {
            Ok(None) => {
                self.nodes[target].reads.insert(index as u64, index);
            }
            Ok(Some(p)) => {
                self.nodes[target]
                    .proposals
                    .insert(p.first, (index, p.term));
            }
            Err(RaftError::NotLeader { leader }) => {
                self.clients[c].leader_hint = leader;
                self.complete(index, Completion::Fail);
            }
            Err(RaftError::Storage(e)) => return self.fail(format!("storage error: {e}")),
            Err(_) => self.complete(index, Completion::Fail),
        }
        self.drain(target)
    }

    fn complete(&mut self, op: usize, completion: Completion) {
        if self.history[op].completion.is_some() {
            return; // already timed out or failed
        }
        self.event_clock += 1;
        let rec = &mut self.history[op];
        rec.completion = Some(completion);
        rec.completed = self.event_clock;
        match completion {
            Completion::Ok(r) => {
                self.report.ops_ok += 1;
                if matches!(r, OpResult::Read(_)) {
                    self.report.reads_ok += 1;
                }
                self.trace = mix(self.trace, mix(op as u64, format!("{r:?}").len() as u64));
            }
            Completion::Fail => self.report.ops_failed += 1,
            Completion::Info => self.report.ops_unknown += 1,
        }
        let client = rec.client;
        let c = self
            .clients
            .iter_mut()
            .find(|c| c.id == client)
            .expect("client exists");
        if c.busy == Some(op) {
            c.busy = None;
            c.next_at = self.now + self.rng.below(4);
            if matches!(completion, Completion::Ok(_)) {
                c.leader_hint = Some(NodeId(self.history[op].node as u64 + 1));
            }
        }
        let _ = op;
    }

    fn finish(mut self) -> SimResult<Report> {
        for op in 0..self.history.len() {
            if self.history[op].completion.is_none() {
                self.complete(op, Completion::Info);
            }
        }
        // Unknown outcomes (timeouts, crashes) are resolved from the simulator's ground
        // truth: a write that was applied somewhere took effect, with the outcome it had,
        // at some point after its invocation (its completion moves to the end of the run);
        // one that was never applied did not take effect. Reads only ever observe applied
        // state, so this is exact, and it keeps the search small.
        let end = self.event_clock + 1;
        let history: Vec<Operation> = self
            .history
            .iter()
            .map(|r| {
                let mut completion = r.completion.expect("all completed");
                let mut completed = r.completed;
                if completion == Completion::Info && r.op != Op::Read {
                    completion = match self.applied_requests.get(&(r.client, r.seq)) {
                        Some(Outcome::Written) => Completion::Ok(OpResult::Written),
                        Some(Outcome::Cas(b)) => Completion::Ok(OpResult::Cas(*b)),
                        None => Completion::Fail,
                    };
                    completed = end;
                }
                Operation {
                    process: r.client,
                    key: r.key,
                    op: r.op,
                    invoked: r.invoked,
                    completed,
                    completion,
                }
            })
            .collect();
        if let Err(e) = lincheck::check(&history, self.cfg.lin_budget) {
            return self.fail(format!("linearizability: {e}"));
        }
        if !self.live {
            return self.fail("liveness: the heal phase never committed".into());
        }
        self.report.trace_hash = self.trace;
        Ok(self.report)
    }
}

/// The seed's fault profile: 0 calm, 1 storm, 2 and 3 in between.
fn profile(cfg: &SimConfig) -> u64 {
    cfg.profile.unwrap_or(mix(cfg.seed, 0xC4A05) % 4)
}

/// Lease reads are on for a third of the seeds (decided from the seed alone), unless forced.
fn lease_on(cfg: &SimConfig) -> bool {
    cfg.lease.unwrap_or(mix(cfg.seed, 0x1EA5E) % 3 == 0)
}

fn short(body: &MessageBody) -> String {
    match body {
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => format!(
            "Append prev=({},{}) n={} commit={}",
            prev_log_index.0,
            prev_log_term.0,
            entries.len(),
            leader_commit.0
        ),
        other => format!("{other:?}"),
    }
}

/// Run one seed; a panic inside the core is reported with the seed.
pub fn run_seed(cfg: SimConfig) -> SimResult<Report> {
    let seed = cfg.seed;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(cfg).run())) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!(
                "seed {seed}: panic: {msg} (replay: HAVEN_SIM_SEED_START={seed} {REPLAY_COUNTS} \
                 HAVEN_SIM_VERBOSE=1 cargo test --release --test sim <this test>)"
            ))
        }
    }
}
