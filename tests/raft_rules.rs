//! Rule tests for the Raft core, named after the section of the Raft paper (or Ongaro's
//! dissertation) whose rule they check. A small harness delivers messages by hand so each
//! test can build the exact interleaving it is about.

use haven::raft::{
    Config, InjectedBug, LogStore, MemLogStore, Membership, MembershipChange, Message, MessageBody,
    Raft, RaftError, ReadState, RejectReason, ReplicationState, Role, SnapshotMeta, StorageError,
};
use haven::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A cluster whose messages move only when the test says so.
struct Cluster {
    nodes: BTreeMap<u64, Raft<MemLogStore>>,
    queue: VecDeque<Message>,
    isolated: BTreeSet<u64>,
    applied: BTreeMap<u64, Vec<Entry>>,
    reads: BTreeMap<u64, Vec<ReadState>>,
    /// Messages delivered so far, by kind name.
    delivered: Vec<(u64, u64, &'static str)>,
}

fn config(id: u64) -> Config {
    Config::new(NodeId(id), 1000 + id)
}

fn voters(ids: impl IntoIterator<Item = u64>) -> Membership {
    Membership::with_voters(ids.into_iter().map(|i| (NodeId(i), format!("n{i}"))))
}

impl Cluster {
    fn new(n: u64, configure: impl Fn(&mut Config)) -> Cluster {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let mut c = config(id);
            configure(&mut c);
            let store = MemLogStore::new(voters(1..=n));
            nodes.insert(id, Raft::new(c, store, LogIndex(0)).unwrap());
        }
        Cluster {
            nodes,
            queue: VecDeque::new(),
            isolated: BTreeSet::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            delivered: Vec::new(),
        }
    }

    fn node(&self, id: u64) -> &Raft<MemLogStore> {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: u64) -> &mut Raft<MemLogStore> {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Handle every Ready of `id`: persist at once, acknowledge, queue all messages, apply.
    fn process(&mut self, id: u64) {
        let raft = self.nodes.get_mut(&id).unwrap();
        while raft.has_ready() {
            let rd = raft.ready().unwrap();
            if let Some(meta) = rd.snapshot.clone() {
                raft.store_mut().install_snapshot(meta);
            }
            if let Some(hs) = rd.hard_state {
                raft.store_mut().set_hard_state(hs);
            }
            raft.store_mut().append(&rd.entries);
            raft.advance_persisted(rd.number).unwrap();
            self.queue.extend(rd.messages);
            self.queue.extend(rd.persisted_messages);
            for e in &rd.committed_entries {
                raft.advance_applied(e.index);
            }
            self.applied
                .entry(id)
                .or_default()
                .extend(rd.committed_entries);
            self.reads.entry(id).or_default().extend(rd.read_states);
        }
    }

    /// Deliver the next queued message (dropped if either end is isolated).
    fn deliver_one(&mut self) -> Option<Message> {
        let m = self.queue.pop_front()?;
        let (from, to) = (m.from.0, m.to.0);
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return Some(m);
        }
        let Some(raft) = self.nodes.get_mut(&to) else {
            return Some(m);
        };
        self.delivered.push((from, to, m.body.name()));
        raft.step(m.clone()).unwrap();
        self.process(to);
        Some(m)
    }

    /// Deliver until the network is quiet.
    fn deliver(&mut self) {
        for _ in 0..100_000 {
            if self.deliver_one().is_none() {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    /// Deliver until `done` holds; panics if the network goes quiet first.
    fn deliver_until(&mut self, done: impl Fn(&Cluster) -> bool) {
        while !done(self) {
            assert!(
                self.deliver_one().is_some(),
                "network quiet before the condition held"
            );
        }
    }

    fn tick(&mut self, id: u64) {
        self.node_mut(id).tick().unwrap();
        self.process(id);
    }

    fn tick_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.tick(id);
        }
    }

    /// Tick `id` alone until it starts an election (pre-vote or vote), then deliver.
    fn campaign(&mut self, id: u64) {
        for _ in 0..100 {
            self.tick(id);
            if self.node(id).role() != Role::Follower {
                self.deliver();
                return;
            }
        }
        panic!("n{id} never campaigned");
    }

    /// Tick `id` alone until it starts a new election (its term or role changes), without
    /// delivering anything.
    fn start_campaign(&mut self, id: u64) {
        let (term, role) = (self.node(id).term(), self.node(id).role());
        for _ in 0..100 {
            self.tick(id);
            let r = self.node(id);
            if r.term() != term || (r.role() != role && r.role() != Role::Follower) {
                return;
            }
        }
        panic!("n{id} never campaigned");
    }

    /// Deliver until `done` holds (true) or the network is quiet (false).
    fn deliver_until_or_quiet(&mut self, done: impl Fn(&Cluster) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.deliver_one().is_none() {
                return false;
            }
        }
    }

    /// Crash and restart `id` from its store (everything handed out was persisted).
    fn restart(&mut self, id: u64, configure: impl Fn(&mut Config)) {
        let store = self.nodes.remove(&id).unwrap().into_store();
        let mut cfg = config(id);
        configure(&mut cfg);
        let applied = store.snapshot_meta().unwrap().index;
        self.nodes
            .insert(id, Raft::new(cfg, store, applied).unwrap());
    }

    /// Make `id` the leader.
    fn elect(&mut self, id: u64) {
        for _ in 0..10 {
            self.campaign(id);
            if self.node(id).role() == Role::Leader {
                self.deliver();
                return;
            }
        }
        panic!("n{id} could not be elected: {:?}", self.node(id));
    }

    fn propose(&mut self, id: u64, data: &[u8]) -> LogIndex {
        let p = self.node_mut(id).propose(vec![data.to_vec()]).unwrap();
        self.process(id);
        p.last
    }

    fn log(&self, id: u64) -> Vec<(u64, u64)> {
        let r = self.node(id);
        r.log_entries(r.first_index(), r.last_index().next())
            .unwrap()
            .iter()
            .map(|e| (e.index.0, e.term.0))
            .collect()
    }

    fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied
            .get(&id)
            .map(|es| {
                es.iter()
                    .filter(|e| e.kind == EntryKind::Normal)
                    .map(|e| e.data.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn quiet(c: &mut Config) {
    // Elections only when a test asks for them.
    c.pre_vote = false;
    c.check_quorum = false;
}

// ----- 5.2 leader election -----

#[test]
fn leader_election_5_2() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), Term(1));
    for id in [2, 3] {
        assert_eq!(c.node(id).role(), Role::Follower);
        assert_eq!(c.node(id).leader(), Some(NodeId(1)));
        assert_eq!(c.node(id).vote(), Some(NodeId(1)));
    }
    // The new leader's no-op commits everywhere (section 8).
    assert_eq!(c.node(1).commit_index(), LogIndex(1));
    for id in [2, 3] {
        assert_eq!(c.log(id), vec![(1, 1)]);
    }
}

#[test]
fn election_timeouts_are_randomized_in_range_5_2() {
    let mut seen = BTreeSet::new();
    for seed in 0..40 {
        let mut cfg = Config::new(NodeId(1), seed);
        cfg.election_ticks = 10;
        let store = MemLogStore::new(voters([1, 2, 3]));
        let mut r = Raft::new(cfg, store, LogIndex(0)).unwrap();
        let mut ticks = 0;
        while r.role() == Role::Follower {
            r.tick().unwrap();
            ticks += 1;
        }
        assert!(
            (10..20).contains(&ticks),
            "timeout {ticks} outside [10, 20)"
        );
        seen.insert(ticks);
    }
    assert!(seen.len() >= 5, "timeouts not spread: {seen:?}");
}

#[test]
fn one_vote_per_term_5_2() {
    let mut c = Cluster::new(3, quiet);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    // n2 campaigns in term 2; n3 votes for it; n3 must not also vote for n1 in term 2.
    c.isolated.insert(1);
    c.campaign(2);
    assert_eq!(c.node(2).role(), Role::Leader);
    assert_eq!(c.node(3).vote(), Some(NodeId(2)));
    let term = c.node(3).term();
    c.node_mut(3)
        .step(Message {
            group: Default::default(),
            from: NodeId(1),
            to: NodeId(3),
            term,
            body: MessageBody::RequestVote {
                pre_vote: false,
                last_log_index: LogIndex(10),
                last_log_term: term,
                transfer: false,
            },
        })
        .unwrap();
    let rd = c.node_mut(3).ready().unwrap();
    let grant = rd
        .persisted_messages
        .iter()
        .find(|m| m.to == NodeId(1))
        .expect("an answer");
    assert!(matches!(
        grant.body,
        MessageBody::RequestVoteResponse { granted: false, .. }
    ));
}

// ----- 5.3 log replication -----

#[test]
fn log_matching_5_3() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    c.propose(1, b"a");
    c.deliver();
    // n1 appends entries nobody else gets, then loses leadership.
    c.isolated.insert(1);
    for d in [b"x1", b"x2", b"x3"] {
        c.propose(1, d);
    }
    c.deliver();
    c.elect(2);
    for d in [b"b1", b"b2"] {
        c.propose(2, d);
    }
    c.deliver();
    // n1 comes back: its divergent suffix is replaced by the leader's.
    c.isolated.clear();
    c.tick(2);
    c.tick(2);
    c.deliver();
    let expected = c.log(2);
    assert_eq!(c.log(1), expected);
    assert_eq!(c.log(3), expected);
    assert!(expected.iter().all(|&(_, t)| t <= c.node(2).term().0));
    for id in 1..=3 {
        assert_eq!(
            c.applied_data(id),
            vec![b"a".to_vec(), b"b1".to_vec(), b"b2".to_vec()],
            "n{id}"
        );
    }
}

#[test]
fn fast_backtracking_skips_a_conflicting_term_5_3() {
    let mut c = Cluster::new(3, |cfg| {
        quiet(cfg);
        cfg.max_append_entries = 1;
    });
    c.elect(1);
    c.isolated.insert(3);
    // 40 entries of term 1 that only n1 and n2... then n3 diverges with 40 entries of its own.
    c.isolated.insert(2);
    for i in 0..40u32 {
        c.propose(1, &i.to_le_bytes());
    }
    c.deliver();
    c.isolated.clear();
    c.isolated.insert(1);
    c.elect(2);
    c.propose(2, b"new");
    c.deliver();
    c.isolated.clear();
    let before = c.delivered.len();
    for _ in 0..4 {
        c.tick(2);
    }
    c.deliver();
    let rejections = c.delivered[before..]
        .iter()
        .filter(|(from, _, kind)| *from == 1 && *kind == "AppendEntriesResponse")
        .count();
    assert_eq!(c.log(1), c.log(2));
    // One entry per message: backtracking entry by entry would need 40 round trips.
    assert!(rejections < 10, "{rejections} answers to converge");
}

#[test]
fn proposals_are_batched_into_one_append_per_follower() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    let p = c.node_mut(1).propose((0..64u8).map(|i| vec![i])).unwrap();
    assert_eq!(p.last.0 - p.first.0, 63);
    let rd = c.node_mut(1).ready().unwrap();
    let appends: Vec<_> = rd
        .messages
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::AppendEntries { entries, .. } if entries.len() == 64))
        .collect();
    assert_eq!(appends.len(), 2, "one message of 64 entries per follower");
    assert_eq!(
        rd.entries.len(),
        64,
        "and one write for the leader's own log"
    );
}

#[test]
fn inflight_window_bounds_appends_per_follower() {
    let mut c = Cluster::new(3, |cfg| {
        quiet(cfg);
        cfg.max_append_entries = 1;
        cfg.max_inflight_msgs = 3;
    });
    c.elect(1);
    c.node_mut(1).propose((0..10u8).map(|i| vec![i])).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    let to_2 = rd.messages.iter().filter(|m| m.to == NodeId(2)).count();
    assert_eq!(to_2, 3, "window of three messages");
}

#[test]
fn leader_counts_itself_only_once_its_write_is_durable() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    let index = c.node_mut(1).propose(vec![b"x".to_vec()]).unwrap().last;
    // The leader takes its Ready but its write is still in flight.
    let rd = c.node_mut(1).ready().unwrap();
    assert_eq!(rd.entries.len(), 1);
    // n2 persists and answers: with the leader's own undurable write that is no quorum.
    let to_2 = rd
        .messages
        .iter()
        .find(|m| m.to == NodeId(2))
        .unwrap()
        .clone();
    c.node_mut(2).step(to_2).unwrap();
    let rd2 = c.node_mut(2).ready().unwrap();
    c.node_mut(2).store_mut().append(&rd2.entries);
    c.node_mut(2).advance_persisted(rd2.number).unwrap();
    for m in rd2.persisted_messages {
        c.node_mut(1).step(m).unwrap();
    }
    assert!(
        c.node(1).commit_index() < index,
        "committed before its own write was durable"
    );
    let raft = c.node_mut(1);
    raft.store_mut().append(&rd.entries);
    raft.advance_persisted(rd.number).unwrap();
    assert_eq!(c.node(1).commit_index(), index);
}

// ----- 5.4 safety -----

#[test]
fn election_restriction_5_4_1() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    c.isolated.insert(3);
    c.propose(1, b"only on 1 and 2");
    c.deliver();
    assert_eq!(c.node(1).commit_index(), LogIndex(2));
    // n3 missed a committed entry: it cannot win, however often it tries.
    c.isolated.clear();
    c.isolated.insert(1);
    for _ in 0..5 {
        c.campaign(3);
        assert_ne!(c.node(3).role(), Role::Leader);
    }
    // n2 holds it and can.
    c.elect(2);
    assert_eq!(c.log(2)[1], (2, 1));
}

/// The Raft paper's figure 8, on three nodes: an entry of an earlier term that reaches a
/// majority must not be committed by counting replicas, because a node holding a
/// conflicting entry of a later term can still be elected and overwrite it.
fn figure_8(bug: Option<InjectedBug>) -> (Cluster, LogIndex) {
    let configure = move |cfg: &mut Config| {
        quiet(cfg);
        cfg.max_append_entries = 1;
        cfg.max_inflight_msgs = 1;
        cfg.injected_bug = bug;
    };
    let mut c = Cluster::new(3, configure);
    c.elect(1);
    c.propose(1, b"base");
    c.deliver();
    // (old, t1) exists only on n1.
    c.isolated.insert(1);
    let old = c.propose(1, b"old");
    c.deliver();
    // n2 wins term 2 with n3's vote and appends entries of its own at `old` (its no-op, or
    // with the injected bug, which skips no-ops, a proposal) without replicating them.
    c.start_campaign(2);
    c.deliver_until(|c| c.node(2).role() == Role::Leader);
    c.propose(2, b"n2");
    c.isolated.insert(2);
    c.deliver();
    assert_eq!(c.log(2)[old.0 as usize - 1], (old.0, 2));
    // n1 restarts and wins a later term with n3's vote.
    c.restart(1, configure);
    c.isolated.remove(&1);
    loop {
        c.start_campaign(1);
        if c.deliver_until_or_quiet(|c| c.node(1).role() == Role::Leader) {
            break;
        }
    }
    assert!(c.node(1).term() > Term(2));
    // n1 replicates index 2 (term 1) to n3, one entry per message; stop once n3 holds it.
    c.deliver_until(|c| c.node(1).progress(NodeId(3)).unwrap().0 >= LogIndex(2));
    (c, old)
}

#[test]
fn commit_previous_term_entries_only_by_current_term_5_4_2() {
    let (mut c, old) = figure_8(None);
    assert_eq!(
        c.log(3)[old.0 as usize - 1],
        (old.0, 1),
        "the old entry is on a majority"
    );
    assert!(
        c.node(1).commit_index() < old,
        "an entry of an earlier term was committed by counting replicas"
    );
    // Once the leader's own no-op is on a majority, both commit together.
    c.deliver();
    c.tick(1);
    c.deliver();
    assert!(c.node(1).commit_index() > old);
    assert_eq!(c.log(3), c.log(1));
}

#[test]
fn counting_replicas_of_an_earlier_term_loses_committed_entries_5_4_2() {
    // The same schedule with the rule broken: the old entry is "committed", then lost.
    let (mut c, old) = figure_8(Some(InjectedBug::CommitPreviousTermByCount));
    assert_eq!(c.node(1).commit_index(), old, "the broken rule commits it");
    c.queue.clear();
    c.isolated.clear();
    c.isolated.insert(1);
    // n2 (still leading term 2 in isolation) restarts and campaigns.
    c.restart(2, |cfg| {
        quiet(cfg);
        cfg.max_append_entries = 1;
        cfg.injected_bug = Some(InjectedBug::CommitPreviousTermByCount);
    });
    loop {
        c.start_campaign(2);
        if c.deliver_until_or_quiet(|c| c.node(2).role() == Role::Leader) {
            break;
        }
    }
    c.deliver();
    let at = old.0 as usize - 1;
    assert_eq!(c.log(2)[at], (old.0, 2));
    assert_eq!(
        c.log(3)[at],
        (old.0, 2),
        "the committed entry was overwritten on n3"
    );
}

#[test]
fn follower_never_truncates_below_commit_5_4() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    c.propose(1, b"a");
    c.deliver();
    let commit = c.node(2).commit_index();
    // A stale leader's message of the same term that conflicts below commit is impossible;
    // an older term's message is ignored outright.
    let stale = Message {
        group: Default::default(),
        from: NodeId(3),
        to: NodeId(2),
        term: Term(0),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: vec![Entry {
                group: Default::default(),
                term: Term(0),
                index: LogIndex(1),
                kind: EntryKind::Normal,
                data: vec![],
            }],
            leader_commit: LogIndex(0),
        },
    };
    c.node_mut(2).step(stale).unwrap();
    c.process(2);
    assert_eq!(c.node(2).commit_index(), commit);
    assert_eq!(c.log(2), c.log(1));
}

// ----- 9.6 pre-vote, 6.2 check quorum -----

#[test]
fn prevote_keeps_a_partitioned_node_from_raising_its_term_9_6() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let term = c.node(1).term();
    c.isolated.insert(3);
    for _ in 0..200 {
        c.tick(3);
        c.deliver();
    }
    assert_eq!(c.node(3).term(), term, "pre-vote failed, term unchanged");
    assert_eq!(c.node(3).role(), Role::PreCandidate);
    c.isolated.clear();
    for _ in 0..5 {
        c.tick_all();
        c.deliver();
    }
    assert_eq!(
        c.node(1).role(),
        Role::Leader,
        "the returning node did not disrupt"
    );
    assert_eq!(c.node(1).term(), term);
    assert_eq!(c.node(3).leader(), Some(NodeId(1)));
}

#[test]
fn checkquorum_leader_steps_down_without_a_quorum_6_2() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.isolated.insert(2);
    c.isolated.insert(3);
    for _ in 0..25 {
        c.tick(1);
        c.deliver();
    }
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).leader(), None);
}

#[test]
fn checkquorum_followers_ignore_votes_while_the_leader_is_alive_4_2_3() {
    let mut c = Cluster::new(3, |cfg| cfg.pre_vote = false);
    c.elect(1);
    // n3 is cut off from the leader only: it times out and campaigns, but n2 still hears
    // the leader and ignores it, so the term of the cluster stays.
    let term = c.node(1).term();
    c.tick(3);
    let m = Message {
        group: Default::default(),
        from: NodeId(3),
        to: NodeId(2),
        term: Term(term.0 + 1),
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: c.node(3).last_index(),
            last_log_term: term,
            transfer: false,
        },
    };
    c.node_mut(2).step(m).unwrap();
    assert_eq!(c.node(2).term(), term);
    assert!(!c.node(2).has_ready() || c.node_mut(2).ready().unwrap().persisted_messages.is_empty());
}

// ----- 3.10 leadership transfer -----

#[test]
fn leader_transfer_3_10() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.isolated.insert(3);
    c.propose(1, b"a");
    c.deliver();
    c.isolated.clear();
    // n3 is behind: the leader first catches it up, refusing proposals meanwhile.
    c.node_mut(1).transfer_leadership(NodeId(3)).unwrap();
    assert!(matches!(
        c.node_mut(1).propose(vec![b"no".to_vec()]),
        Err(RaftError::TransferInProgress { to: NodeId(3) })
    ));
    c.process(1);
    c.deliver();
    assert_eq!(c.node(3).role(), Role::Leader);
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).leader(), Some(NodeId(3)));
    c.propose(3, b"b");
    c.deliver();
    assert_eq!(c.applied_data(1), vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn leader_transfer_aborts_after_an_election_timeout_3_10() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.isolated.insert(3);
    c.node_mut(1).transfer_leadership(NodeId(3)).unwrap();
    assert_eq!(c.node(1).transfer_target(), Some(NodeId(3)));
    for _ in 0..10 {
        c.tick(1);
        c.deliver();
    }
    assert_eq!(c.node(1).transfer_target(), None);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(c.node_mut(1).propose(vec![b"ok".to_vec()]).is_ok());
    assert!(
        c.node_mut(1).transfer_leadership(NodeId(9)).is_err(),
        "not a voter"
    );
}

// ----- 4 membership -----

fn add_learner(c: &mut Cluster, leader: u64, id: u64) {
    let cfg = config(id);
    let store = MemLogStore::new(Membership::default());
    c.nodes
        .insert(id, Raft::new(cfg, store, LogIndex(0)).unwrap());
    c.node_mut(leader)
        .change_membership(MembershipChange::AddLearner {
            id: NodeId(id),
            address: format!("n{id}"),
        })
        .unwrap();
    c.process(leader);
    c.deliver();
}

#[test]
fn learner_receives_the_log_but_neither_votes_nor_counts_4_2_1() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    add_learner(&mut c, 1, 4);
    c.propose(1, b"a");
    c.deliver();
    assert_eq!(c.log(4), c.log(1));
    assert!(c.node(4).membership().is_learner(NodeId(4)));
    assert_eq!(c.applied_data(4), vec![b"a".to_vec()]);
    // A learner never campaigns.
    c.isolated.insert(1);
    for _ in 0..100 {
        c.tick(4);
    }
    assert_eq!(c.node(4).role(), Role::Follower);
    assert_eq!(c.node(4).term(), c.node(1).term());
    // Voters 2 and 3 down: the leader and a learner are not a quorum.
    c.isolated.clear();
    c.isolated.extend([2, 3]);
    let index = c.propose(1, b"b");
    c.deliver();
    assert!(c.node(1).commit_index() < index);
    assert_eq!(c.node(4).last_index(), index, "the learner got it anyway");
}

#[test]
fn membership_changes_one_at_a_time_4_1() {
    let mut c = Cluster::new(3, |_| {});
    c.campaign(1);
    // Not even one change before the leader's no-op commits.
    let change = MembershipChange::AddLearner {
        id: NodeId(4),
        address: "n4".into(),
    };
    let mut fresh = Cluster::new(3, |_| {});
    fresh.start_campaign(1);
    fresh.deliver_until(|c| c.node(1).role() == Role::Leader);
    assert!(
        fresh.node(1).commit_index() < fresh.node(1).last_index(),
        "no-op pending"
    );
    assert!(matches!(
        fresh.node_mut(1).change_membership(change.clone()),
        Err(RaftError::ChangeInProgress)
    ));
    c.deliver();
    // The first change is in force on the leader as soon as it is appended.
    let p = c.node_mut(1).change_membership(change).unwrap();
    assert!(c.node(1).membership().is_learner(NodeId(4)));
    assert!(c.node(1).commit_index() < p.last);
    // A second one waits for the first to commit.
    assert!(matches!(
        c.node_mut(1)
            .change_membership(MembershipChange::Remove { id: NodeId(3) }),
        Err(RaftError::ChangeInProgress)
    ));
    c.process(1);
    c.deliver();
    assert!(c.node(1).commit_index() >= p.last);
    assert!(c.node(2).membership().is_learner(NodeId(4)));
    c.node_mut(1)
        .change_membership(MembershipChange::Remove { id: NodeId(3) })
        .unwrap();
    assert!(!c.node(1).membership().contains(NodeId(3)));
    // Invalid changes are refused with a reason.
    assert!(matches!(
        c.node_mut(1)
            .change_membership(MembershipChange::PromoteLearner { id: NodeId(2) }),
        Err(RaftError::ChangeInProgress) | Err(RaftError::InvalidArgument(_))
    ));
}

#[test]
fn promoted_learner_votes_and_counts_4_1() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    add_learner(&mut c, 1, 4);
    c.node_mut(1)
        .change_membership(MembershipChange::PromoteLearner { id: NodeId(4) })
        .unwrap();
    c.process(1);
    c.deliver();
    assert!(c.node(4).membership().is_voter(NodeId(4)));
    assert_eq!(c.node(1).membership().quorum(), 3);
    // With 4 voters, the leader + n4 are not enough; + n2 they are.
    c.isolated.extend([2, 3]);
    let index = c.propose(1, b"x");
    c.deliver();
    assert!(c.node(1).commit_index() < index);
    c.isolated.remove(&2);
    c.tick(1);
    c.deliver();
    assert!(c.node(1).commit_index() >= index);
}

#[test]
fn configuration_reverts_when_its_entry_is_truncated_4_1() {
    let mut c = Cluster::new(5, quiet);
    c.elect(1);
    // Only n2 receives the change: uncommitted, but in force on n2 once appended.
    c.isolated.extend([3, 4, 5]);
    c.node_mut(1)
        .change_membership(MembershipChange::AddLearner {
            id: NodeId(6),
            address: "n6".into(),
        })
        .unwrap();
    c.process(1);
    c.deliver();
    assert!(
        c.node(2).membership().is_learner(NodeId(6)),
        "in force when appended"
    );
    assert!(c.node(1).commit_index() < c.node(1).last_index());
    // n3 leads a later term without that entry; n2's copy is truncated away.
    c.isolated.clear();
    c.isolated.extend([1, 2]);
    c.elect(3);
    c.propose(3, b"x");
    c.deliver();
    c.isolated.remove(&2);
    for _ in 0..3 {
        c.tick(3);
        c.deliver();
    }
    assert_eq!(c.log(2), c.log(3));
    assert!(
        !c.node(2).membership().contains(NodeId(6)),
        "reverted with the truncation"
    );
}

#[test]
fn removed_leader_steps_down_once_the_removal_commits_4_2_2() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let p = c
        .node_mut(1)
        .change_membership(MembershipChange::Remove { id: NodeId(1) })
        .unwrap();
    // Still leading while the removal is uncommitted.
    assert_eq!(c.node(1).role(), Role::Leader);
    c.process(1);
    c.deliver();
    assert!(c.node(2).commit_index() >= p.last || c.node(1).commit_index() >= p.last);
    assert_eq!(c.node(1).role(), Role::Follower);
    // The remaining voters elect a leader among themselves; n1 never campaigns again.
    let mut leader = None;
    for _ in 0..100 {
        c.tick_all();
        c.deliver();
        leader = [2, 3]
            .into_iter()
            .find(|&i| c.node(i).role() == Role::Leader);
        if leader.is_some() {
            break;
        }
    }
    assert_eq!(c.node(1).role(), Role::Follower);
    let leader = leader.expect("n2 or n3 leads");
    assert!(!c.node(leader).membership().contains(NodeId(1)));
    assert_eq!(c.node(leader).membership().voters.len(), 2);
}

// ----- 6.4 reads -----

#[test]
fn read_index_needs_the_terms_noop_and_a_quorum_6_4() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.propose(1, b"a");
    c.deliver();
    c.node_mut(1).read_index(b"r1".to_vec()).unwrap();
    c.process(1);
    assert!(
        c.reads.get(&1).is_none_or(|r| r.is_empty()),
        "no answer before a quorum"
    );
    c.deliver();
    let r = c.reads.get_mut(&1).unwrap().pop().unwrap();
    assert_eq!(r.context, b"r1");
    assert_eq!(r.index, Some(c.node(1).commit_index()));
    // An isolated leader cannot confirm its leadership: no answer.
    c.isolated.extend([2, 3]);
    c.node_mut(1).read_index(b"r2".to_vec()).unwrap();
    c.process(1);
    c.deliver();
    assert!(c.reads[&1].is_empty());
}

#[test]
fn read_index_waits_for_the_new_leaders_noop_6_4() {
    let mut c = Cluster::new(3, |_| {});
    c.campaign(1);
    // Drop everything the new leader sends: its no-op stays uncommitted.
    c.queue.clear();
    assert_eq!(c.node(1).role(), Role::Leader);
    c.node_mut(1).read_index(b"early".to_vec()).unwrap();
    c.process(1);
    c.queue.clear();
    assert!(c.reads.get(&1).is_none_or(|r| r.is_empty()));
    for _ in 0..3 {
        c.tick(1);
        c.deliver();
    }
    let r = c
        .reads
        .get_mut(&1)
        .unwrap()
        .pop()
        .expect("answered once the no-op committed");
    assert!(r.index.unwrap() >= LogIndex(1));
}

#[test]
fn read_index_on_a_follower_goes_through_the_leader_6_4() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    let index = c.propose(1, b"a");
    c.deliver();
    c.node_mut(2).read_index(b"f".to_vec()).unwrap();
    c.process(2);
    c.deliver();
    let r = c.reads.get_mut(&2).unwrap().pop().unwrap();
    assert_eq!(r.index, Some(index));
    assert!(c
        .delivered
        .iter()
        .any(|&(f, t, k)| f == 2 && t == 1 && k == "ReadIndex"));
    // Each request gets a fresh index.
    let index2 = c.propose(1, b"b");
    c.deliver();
    c.node_mut(2).read_index(b"g".to_vec()).unwrap();
    c.process(2);
    c.deliver();
    assert_eq!(
        c.reads.get_mut(&2).unwrap().pop().unwrap().index,
        Some(index2)
    );
    // No leader known: refused with a hint of none.
    let mut lone = Cluster::new(3, |_| {});
    assert!(matches!(
        lone.node_mut(2).read_index(vec![]),
        Err(RaftError::NotLeader { leader: None })
    ));
}

#[test]
fn lease_read_is_answered_locally_while_the_lease_holds_6_4_1() {
    let mut c = Cluster::new(3, |cfg| cfg.lease_read_ticks = Some(8));
    c.elect(1);
    c.tick(1);
    c.deliver();
    c.node_mut(1).read_index(b"l".to_vec()).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    assert_eq!(rd.read_states.len(), 1, "answered without a round trip");
    assert!(rd.messages.is_empty());
    // Once the lease lapses (followers silent), reads need a quorum again.
    c.isolated.extend([2, 3]);
    for _ in 0..9 {
        c.tick(1);
        c.deliver();
    }
    c.node_mut(1).read_index(b"m".to_vec()).unwrap();
    c.process(1);
    assert!(c.reads.get(&1).is_none_or(|r| r.is_empty()));
}

// ----- 5.1 terms, proposals -----

#[test]
fn propose_on_a_follower_returns_the_leader_hint() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    assert!(matches!(
        c.node_mut(2).propose(vec![b"x".to_vec()]),
        Err(RaftError::NotLeader {
            leader: Some(NodeId(1))
        })
    ));
    assert!(matches!(
        c.node_mut(1).propose(Vec::<Vec<u8>>::new()),
        Err(RaftError::InvalidArgument(_))
    ));
    let p = c
        .node_mut(1)
        .propose(vec![b"x".to_vec(), b"y".to_vec()])
        .unwrap();
    assert_eq!(
        (p.first, p.last, p.term),
        (LogIndex(2), LogIndex(3), Term(1))
    );
}

#[test]
fn stale_leader_learns_the_new_term_and_steps_down_5_1() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.isolated.insert(1);
    for _ in 0..30 {
        c.tick(2);
        c.tick(3);
        c.deliver();
        if c.node(2).role() == Role::Leader || c.node(3).role() == Role::Leader {
            break;
        }
    }
    let new_term = c.node(2).term().max(c.node(3).term());
    assert!(new_term > Term(1));
    c.isolated.clear();
    // n1 still thinks it leads (its check-quorum has not fired) and sends a heartbeat; the
    // answer carries the newer term.
    c.tick(1);
    c.deliver();
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).term(), new_term);
}

// ----- 7 log compaction -----

fn compact(c: &mut Cluster, id: u64) -> LogIndex {
    let raft = c.node_mut(id);
    let index = raft.applied_index();
    let meta = SnapshotMeta {
        index,
        term: raft.log_term(index).unwrap().unwrap(),
        membership: raft.committed_membership().clone(),
    };
    raft.store_mut().compact(meta);
    index
}

#[test]
fn follower_behind_a_compaction_gets_a_snapshot_7() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    c.isolated.insert(3);
    for i in 0..10u8 {
        c.propose(1, &[i]);
    }
    c.deliver();
    let snap = compact(&mut c, 1);
    assert_eq!(c.node(1).first_index(), snap.next());
    c.isolated.clear();
    // The leader probes n3, finds the entries compacted and sends a snapshot (metadata only).
    let mut sent = None;
    for _ in 0..10 {
        c.tick(1);
        while let Some(m) = c.queue.pop_front() {
            if let MessageBody::Snapshot { meta } = &m.body {
                sent = Some(meta.clone());
                assert_eq!(
                    c.node(1).progress(NodeId(3)).unwrap().2,
                    ReplicationState::Snapshot { index: snap }
                );
                // The first transfer fails: the leader goes back to probing.
                c.node_mut(1).report_snapshot(NodeId(3), false);
                break;
            }
            c.queue.push_front(m);
            c.deliver_one();
        }
        if sent.is_some() {
            break;
        }
    }
    let meta = sent.expect("a snapshot was sent");
    assert_eq!(meta.index, snap);
    assert!(matches!(
        c.node(1).progress(NodeId(3)).unwrap().2,
        ReplicationState::Probe
    ));
    // The retry succeeds: the runtime stored the data and steps the message in.
    let mut installed = false;
    for _ in 0..10 {
        c.tick(1);
        while let Some(m) = c.queue.pop_front() {
            if matches!(m.body, MessageBody::Snapshot { .. }) {
                c.node_mut(3).step(m).unwrap();
                let rd = c.node_mut(3).ready().unwrap();
                assert_eq!(rd.snapshot.as_ref().map(|s| s.index), Some(snap));
                let raft = c.node_mut(3);
                raft.store_mut()
                    .install_snapshot(rd.snapshot.clone().unwrap());
                if let Some(hs) = rd.hard_state {
                    raft.store_mut().set_hard_state(hs);
                }
                raft.advance_persisted(rd.number).unwrap();
                c.queue.extend(rd.persisted_messages);
                c.node_mut(1).report_snapshot(NodeId(3), true);
                installed = true;
                continue;
            }
            c.queue.push_front(m);
            c.deliver_one();
        }
        if installed {
            break;
        }
    }
    assert!(installed);
    c.deliver();
    let tail = c.propose(1, b"after");
    c.deliver();
    assert_eq!(c.node(3).commit_index(), tail);
    assert_eq!(c.node(3).first_index(), snap.next());
    assert_eq!(c.applied_data(3).last().unwrap(), b"after");
}

#[test]
fn snapshot_install_discards_a_conflicting_log_and_takes_its_membership_7() {
    let store = MemLogStore::new(voters([1, 2, 3]));
    let mut r = Raft::new(config(2), store, LogIndex(0)).unwrap();
    // A conflicting uncommitted suffix from a deposed leader of term 1.
    let entries: Vec<Entry> = (1..=3)
        .map(|i| Entry {
            group: Default::default(),
            term: Term(1),
            index: LogIndex(i),
            kind: EntryKind::Normal,
            data: vec![i as u8],
        })
        .collect();
    let append = |term, body| Message {
        group: Default::default(),
        from: NodeId(1),
        to: NodeId(2),
        term,
        body,
    };
    r.step(append(
        Term(1),
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(0),
        },
    ))
    .unwrap();
    let rd = r.ready().unwrap();
    r.store_mut().append(&rd.entries);
    r.advance_persisted(rd.number).unwrap();
    let members = voters([1, 3, 4]);
    let meta = SnapshotMeta {
        index: LogIndex(10),
        term: Term(3),
        membership: members.clone(),
    };
    r.step(Message {
        from: NodeId(3),
        ..append(Term(3), MessageBody::Snapshot { meta: meta.clone() })
    })
    .unwrap();
    assert_eq!(r.membership(), &members);
    assert_eq!(r.last_index(), LogIndex(10));
    assert_eq!(r.commit_index(), LogIndex(10));
    let rd = r.ready().unwrap();
    assert_eq!(rd.snapshot, Some(meta.clone()));
    assert!(rd.committed_entries.is_empty());
    assert!(matches!(
        r.log_term(LogIndex(3)),
        Err(StorageError::Compacted)
    ));
    r.store_mut().install_snapshot(meta);
    r.advance_persisted(rd.number).unwrap();
    assert_eq!(r.store().last_index(), LogIndex(10));
    assert!(rd.persisted_messages.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendEntriesResponse {
            success: true,
            index: LogIndex(10),
            ..
        }
    )));
}

// ----- the Ready / advance contract -----

#[test]
fn acks_for_overwritten_entries_are_ignored() {
    let store = MemLogStore::new(voters([1, 2, 3]));
    let mut r = Raft::new(config(2), store, LogIndex(0)).unwrap();
    let entry = |i: u64, t: u64| Entry {
        group: Default::default(),
        term: Term(t),
        index: LogIndex(i),
        kind: EntryKind::Normal,
        data: vec![],
    };
    let append = |term: u64, prev: u64, prev_term: u64, entries: Vec<Entry>| Message {
        group: Default::default(),
        from: NodeId(term),
        to: NodeId(2),
        term: Term(term),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev),
            prev_log_term: Term(prev_term),
            entries,
            leader_commit: LogIndex(0),
        },
    };
    r.step(append(1, 0, 0, vec![entry(1, 1), entry(2, 1), entry(3, 1)]))
        .unwrap();
    let first = r.ready().unwrap();
    assert_eq!(first.entries.len(), 3);
    // Before that write is durable, a new leader overwrites from index 2.
    r.step(append(3, 1, 1, vec![entry(2, 3)])).unwrap();
    let second = r.ready().unwrap();
    assert_eq!(second.entries, vec![entry(2, 3)]);
    assert!(first.persisted_messages.iter().all(|m| m.to == NodeId(1)));
    // The first write completes: index 3 (term 1) is gone, nothing beyond 1 may count as
    // durable.
    r.store_mut().append(&first.entries);
    r.advance_persisted(first.number).unwrap();
    assert!(r.persisted_index() <= LogIndex(1));
    r.store_mut().append(&second.entries);
    r.advance_persisted(second.number).unwrap();
    assert_eq!(r.persisted_index(), LogIndex(2));
    assert_eq!(r.log_term(LogIndex(2)).unwrap(), Some(Term(3)));
    assert_eq!(r.last_index(), LogIndex(2));
}

#[test]
fn vote_and_append_answers_wait_for_persistence() {
    let mut c = Cluster::new(3, quiet);
    for _ in 0..30 {
        c.node_mut(1).tick().unwrap();
        if c.node(1).role() == Role::Candidate {
            break;
        }
    }
    let rd = c.node_mut(1).ready().unwrap();
    assert!(rd.hard_state.is_some(), "term and vote to persist");
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.persisted_messages.len(),
        2,
        "vote requests only after the vote is durable"
    );
    c.node_mut(2)
        .step(rd.persisted_messages[0].clone())
        .unwrap();
    let rd2 = c.node_mut(2).ready().unwrap();
    assert_eq!(rd2.hard_state.unwrap().vote, Some(NodeId(1)));
    assert!(rd2.messages.is_empty());
    assert!(matches!(
        rd2.persisted_messages[0].body,
        MessageBody::RequestVoteResponse { granted: true, .. }
    ));
}

#[test]
fn restart_recovers_hard_state_log_and_membership() {
    let mut c = Cluster::new(3, |_| {});
    c.elect(1);
    add_learner(&mut c, 1, 4);
    c.propose(1, b"a");
    c.deliver();
    let before = (c.node(2).term(), c.node(2).vote(), c.log(2));
    let store = c.nodes.remove(&2).unwrap().into_store();
    let r = Raft::new(config(2), store, LogIndex(0)).unwrap();
    assert_eq!((r.term(), r.vote()), (before.0, before.1));
    assert!(r.membership().is_learner(NodeId(4)));
    assert_eq!(r.role(), Role::Follower);
    assert!(r.commit_index() >= LogIndex(3));
    let mut r = r;
    let rd = r.ready().unwrap();
    assert_eq!(
        rd.committed_entries.len() as u64,
        r.commit_index().0,
        "committed entries are handed out again after a restart from applied 0"
    );
}

/// A store that fails on demand.
struct FailingStore {
    inner: MemLogStore,
    fail: bool,
}

impl LogStore for FailingStore {
    fn hard_state(&self) -> Result<HardState, StorageError> {
        self.inner.hard_state()
    }
    fn first_index(&self) -> LogIndex {
        self.inner.first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.inner.last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        if self.fail {
            return Err(StorageError::Io(haven::Error::io(
                "reading the log",
                std::io::Error::other("disk on fire"),
            )));
        }
        self.inner.term(index)
    }
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(lo, hi, max_bytes)
    }
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.inner.snapshot_meta()
    }
}

#[test]
fn storage_errors_propagate_and_corrupt_membership_is_an_error() {
    let mut inner = MemLogStore::new(voters([1, 2, 3]));
    inner.append(&[Entry {
        group: Default::default(),
        term: Term(1),
        index: LogIndex(1),
        kind: EntryKind::Normal,
        data: vec![],
    }]);
    let mut r = Raft::new(
        config(1),
        FailingStore {
            inner: inner.clone(),
            fail: false,
        },
        LogIndex(0),
    )
    .unwrap();
    r.store_mut().fail = true;
    let mut err = None;
    for _ in 0..30 {
        if let Err(e) = r.tick() {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(
        err,
        Some(RaftError::Storage(haven::Error::Io { .. }))
    ));

    inner.append(&[Entry {
        group: Default::default(),
        term: Term(1),
        index: LogIndex(2),
        kind: EntryKind::Membership,
        data: vec![1, 0xff, 0xff],
    }]);
    match Raft::new(config(1), inner, LogIndex(0)) {
        Err(RaftError::Storage(e)) => assert_eq!(e.code(), haven::ErrorCode::Corrupt),
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[test]
fn same_inputs_and_seed_give_the_same_outputs() {
    let run = || {
        let mut c = Cluster::new(3, |_| {});
        for round in 0..200 {
            c.tick_all();
            c.deliver();
            if round % 7 == 0 {
                if let Some(l) = (1..=3).find(|&i| c.node(i).role() == Role::Leader) {
                    c.propose(l, &[round as u8]);
                }
            }
        }
        (
            c.delivered.clone(),
            (1..=3).map(|i| c.log(i)).collect::<Vec<_>>(),
        )
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert!(a.0.len() > 100);
}

// ----- regressions found by the simulator -----

/// Broke: in Replicate, once the in-flight window was full of lost AppendEntries, nothing was
/// ever sent again (the window only drains on acknowledgements).
#[test]
fn regression_full_window_of_lost_appends_recovers() {
    let mut c = Cluster::new(3, |cfg| {
        quiet(cfg);
        cfg.max_append_entries = 1;
        cfg.max_inflight_msgs = 2;
    });
    c.elect(1);
    c.propose(1, b"0");
    c.deliver();
    assert_eq!(
        c.node(1).progress(NodeId(2)).unwrap().2,
        ReplicationState::Replicate
    );
    c.isolated.insert(2);
    for i in 1..6u8 {
        c.propose(1, &[i]);
    }
    c.deliver(); // the window to n2 fills with messages that are lost
    c.isolated.clear();
    for _ in 0..10 {
        c.tick(1);
        c.deliver();
    }
    assert_eq!(c.log(2), c.log(1));
}

/// Broke: a follower that lost the last AppendEntries (window not full, next index past the
/// end of the leader's log) was never sent anything again until a new proposal arrived.
#[test]
fn regression_lost_last_append_is_resent_after_a_heartbeat_answer() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    c.isolated.insert(2);
    let index = c.propose(1, b"lost on the way to n2");
    c.deliver();
    c.isolated.clear();
    c.tick(1);
    c.deliver();
    assert_eq!(c.node(2).last_index(), index);
    assert_eq!(c.node(1).progress(NodeId(2)).unwrap().0, index);
}

/// Broke: a node whose term ran ahead (it kept campaigning for a configuration it alone still
/// believed in) ignored the lower-term vote requests of the candidate everybody needed, which
/// kept campaigning one term below it forever. A refusal now carries the higher term.
#[test]
fn regression_candidate_behind_in_terms_learns_the_term_from_a_refusal_5_1() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    c.isolated.extend([1, 3]);
    for _ in 0..5 {
        c.start_campaign(2);
    }
    c.deliver();
    let high = c.node(2).term();
    assert!(high > c.node(3).term());
    c.isolated.clear();
    c.isolated.insert(1);
    c.start_campaign(3);
    c.deliver();
    assert!(
        c.node(3).term() >= high,
        "n3 learned n2's term from its refusal"
    );
    // And from there the two can elect a leader.
    for _ in 0..10 {
        c.start_campaign(3);
        c.deliver();
        if c.node(3).role() == Role::Leader || c.node(2).role() == Role::Leader {
            return;
        }
    }
    panic!("no leader among n2 and n3");
}

// ----- 6.4.1 lease details -----

/// The lease runs from the *start* of the heartbeat round a quorum confirmed, not from when
/// the answers arrived: followers may have started their election timers at the start.
#[test]
fn lease_runs_from_the_start_of_the_confirmed_round_6_4_1() {
    let mut c = Cluster::new(3, |cfg| cfg.lease_read_ticks = Some(8));
    c.elect(1);
    c.tick(1); // round r starts at tick T
    let held: Vec<Message> = c.queue.drain(..).collect();
    for _ in 0..5 {
        c.tick(1); // later rounds are lost
        c.queue.clear();
    }
    c.queue.extend(held);
    c.deliver(); // round r is confirmed at T + 5: lease until T + 8
    c.node_mut(1).read_index(b"in lease".to_vec()).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    assert_eq!(rd.read_states.len(), 1, "served from the lease at T + 5");
    for _ in 0..3 {
        c.tick(1);
        c.queue.clear();
    }
    c.node_mut(1).read_index(b"expired".to_vec()).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    assert!(rd.read_states.is_empty(), "the lease ended at T + 8");
    assert!(
        rd.messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })),
        "a confirmation round instead"
    );
}

/// Once the leader tells a follower to take over (TimeoutNow), that follower is elected
/// without waiting for the lease: no lease read may be served for the rest of the term.
#[test]
fn no_lease_reads_after_timeout_now_3_10() {
    let mut c = Cluster::new(3, |cfg| cfg.lease_read_ticks = Some(8));
    c.elect(1);
    c.tick(1);
    c.deliver();
    c.node_mut(1).read_index(b"before".to_vec()).unwrap();
    assert_eq!(c.node_mut(1).ready().unwrap().read_states.len(), 1);
    c.node_mut(1).transfer_leadership(NodeId(2)).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    assert!(rd
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::TimeoutNow)));
    // The TimeoutNow is lost; the transfer times out; the term goes on.
    for _ in 0..12 {
        c.tick(1);
        c.deliver();
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).transfer_target(), None);
    c.node_mut(1).read_index(b"after".to_vec()).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    assert!(rd.read_states.is_empty(), "no lease read after TimeoutNow");
    c.queue.extend(rd.messages);
    c.deliver();
    assert_eq!(
        c.reads[&1].last().unwrap().context,
        b"after",
        "served by ReadIndex"
    );
}

// ----- messages no correct peer could send (issue 14, section 4) -----

fn msg(from: u64, to: u64, term: Term, body: MessageBody) -> Message {
    Message {
        group: Default::default(),
        from: NodeId(from),
        to: NodeId(to),
        term,
        body,
    }
}

/// Step a forged message into `to`, which must drop it for `reason` and keep running.
fn expect_rejected(c: &mut Cluster, m: Message, reason: RejectReason) {
    let (from, to) = (m.from, m.to.0);
    let before = c
        .node(to)
        .rejected_messages()
        .get(&from)
        .copied()
        .unwrap_or(0);
    c.node_mut(to).step(m).unwrap();
    assert_eq!(
        c.node(to).rejected_messages().get(&from).copied(),
        Some(before + 1),
        "counted per peer"
    );
    let rd = c.node_mut(to).ready().unwrap();
    assert_eq!(
        rd.rejected
            .iter()
            .map(|r| (r.from, r.reason))
            .collect::<Vec<_>>(),
        vec![(from, reason)],
        "reported once, with the reason"
    );
    assert!(rd.entries.is_empty() && rd.hard_state.is_none() && rd.snapshot.is_none());
    c.queue.extend(rd.messages);
    c.queue.extend(rd.persisted_messages);
}

/// (a) Broke: a Heartbeat in the leader's own term from a follower's id panicked ("two
/// leaders in one term"). It is dropped; so is one to a follower that knows another leader.
#[test]
fn regression_second_leader_in_one_term_is_rejected_5_2() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    let term = c.node(1).term();
    let hb = MessageBody::Heartbeat {
        commit: LogIndex(0),
        round: 1,
    };
    expect_rejected(
        &mut c,
        msg(2, 1, term, hb.clone()),
        RejectReason::SecondLeader,
    );
    expect_rejected(&mut c, msg(3, 2, term, hb), RejectReason::SecondLeader);
    let append = MessageBody::AppendEntries {
        prev_log_index: LogIndex(0),
        prev_log_term: Term(0),
        entries: vec![],
        leader_commit: LogIndex(0),
    };
    expect_rejected(&mut c, msg(2, 1, term, append), RejectReason::SecondLeader);
    expect_rejected(
        &mut c,
        msg(3, 2, term, MessageBody::TimeoutNow),
        RejectReason::SecondLeader,
    );
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(2).leader(), Some(NodeId(1)));
    let index = c.propose(1, b"still leading");
    c.deliver();
    assert_eq!(c.node(2).commit_index(), index);
}

/// (b) and (c) Broke: an AppendEntriesResponse { success, index: u64::MAX / 2 } made the next
/// send panic ("next index beyond last index"), and the same ack from both followers made
/// the commit rule panic in `raft/log.rs` ("log has no entry at index"). Acks beyond the
/// leader's log are dropped.
#[test]
fn regression_ack_beyond_the_leaders_log_is_rejected_5_3() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    let term = c.node(1).term();
    let ack = |index: u64| MessageBody::AppendEntriesResponse {
        success: true,
        index: LogIndex(index),
        hint_index: LogIndex(0),
        hint_term: Term(0),
    };
    let last = c.node(1).last_index().0;
    for from in [2, 3] {
        expect_rejected(
            &mut c,
            msg(from, 1, term, ack(u64::MAX / 2)),
            RejectReason::Overflow,
        );
        expect_rejected(
            &mut c,
            msg(from, 1, term, ack(last + 5)),
            RejectReason::AckBeyondLog,
        );
    }
    let refusal = MessageBody::AppendEntriesResponse {
        success: false,
        index: LogIndex(last),
        hint_index: LogIndex(last + 1),
        hint_term: Term(0),
    };
    expect_rejected(&mut c, msg(2, 1, term, refusal), RejectReason::AckBeyondLog);
    let unsent = MessageBody::HeartbeatResponse { round: u64::MAX };
    expect_rejected(&mut c, msg(3, 1, term, unsent), RejectReason::RoundNotSent);
    // The leader's view of its followers is untouched: it replicates and commits as before.
    let index = c.propose(1, b"after the forged acks");
    assert_eq!(
        c.node(1).commit_index().0,
        last,
        "nothing committed by the forged acks"
    );
    c.deliver();
    assert_eq!(c.node(1).commit_index(), index);
    assert_eq!(c.log(2), c.log(1));
    assert_eq!(c.node(1).progress(NodeId(2)).unwrap().0, index);
}

/// (d) Broke: an AppendEntries from the leader's id whose entry at index 1 carries a higher
/// term panicked ("conflicts with the committed log"): the follower looked up each entry at
/// the index it claims, although entries must follow `prev_log_index`. Such entries are
/// malformed and dropped; the log and commit index stay as they were.
#[test]
fn regression_entries_conflicting_below_commit_are_rejected_5_4() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    c.propose(1, b"a");
    c.deliver();
    c.elect(2); // a later term, so index 1 (committed in the first term) has a lower term
    let term = c.node(2).term();
    let commit = c.node(3).commit_index();
    assert!(commit >= LogIndex(2));
    assert!(c.node(3).log_term(LogIndex(1)).unwrap() < Some(term));
    let log = c.log(3);
    let forged = |prev: LogIndex, prev_term: Term| MessageBody::AppendEntries {
        prev_log_index: prev,
        prev_log_term: prev_term,
        entries: vec![Entry {
            group: Default::default(),
            term,
            index: LogIndex(1),
            kind: EntryKind::Normal,
            data: b"forged".to_vec(),
        }],
        leader_commit: commit,
    };
    let at_commit = forged(commit, c.node(3).log_term(commit).unwrap().unwrap());
    expect_rejected(
        &mut c,
        msg(2, 3, term, at_commit),
        RejectReason::MalformedEntries,
    );
    // In place (after prev 0) it is an old retransmission as far as the follower can tell:
    // below its commit index nothing is replaced, and it only acknowledges its commit index.
    let in_place = forged(LogIndex(0), Term(0));
    c.node_mut(3).step(msg(2, 3, term, in_place)).unwrap();
    c.process(3);
    assert!(c.node(3).rejected_messages().get(&NodeId(2)) == Some(&1));
    assert_eq!(c.log(3), log);
    assert_eq!(c.node(3).commit_index(), commit);
    let index = c.propose(2, b"b");
    c.deliver();
    assert_eq!(c.node(3).commit_index(), index);
}

/// Other messages no correct member sends: entries out of place, a corrupt membership entry
/// (it used to stop the member with a `Storage` error), snapshot metadata nonsense, terms
/// that would overflow, a vote request claiming a log term above its own, misaddressed ones.
#[test]
fn malformed_messages_are_rejected_and_counted_per_peer() {
    let mut c = Cluster::new(3, quiet);
    c.elect(1);
    let term = c.node(1).term();
    let entry = |index: u64, term: Term, kind: EntryKind, data: Vec<u8>| Entry {
        group: Default::default(),
        term,
        index: LogIndex(index),
        kind,
        data,
    };
    let last = c.node(2).last_index().0;
    let lt = c.node(2).log_term(LogIndex(last)).unwrap().unwrap();
    let append = |entries: Vec<Entry>| MessageBody::AppendEntries {
        prev_log_index: LogIndex(last),
        prev_log_term: lt,
        entries,
        leader_commit: LogIndex(0),
    };
    let gap = append(vec![entry(last + 2, term, EntryKind::Normal, vec![])]);
    expect_rejected(&mut c, msg(1, 2, term, gap), RejectReason::MalformedEntries);
    let corrupt = append(vec![entry(
        last + 1,
        term,
        EntryKind::Membership,
        vec![1, 0xff],
    )]);
    expect_rejected(
        &mut c,
        msg(1, 2, term, corrupt),
        RejectReason::BadMembership,
    );
    let no_voter = Membership::default().encode();
    let empty = append(vec![entry(last + 1, term, EntryKind::Membership, no_voter)]);
    expect_rejected(&mut c, msg(1, 2, term, empty), RejectReason::BadMembership);
    let snapshot = |index: u64, t: Term, membership: Membership| MessageBody::Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(index),
            term: t,
            membership,
        },
    };
    let bad = snapshot(u64::MAX, term, voters([1, 2, 3]));
    expect_rejected(&mut c, msg(1, 2, term, bad), RejectReason::Overflow);
    let bad = snapshot(50, Term(term.0 + 1), voters([1, 2, 3]));
    expect_rejected(&mut c, msg(1, 2, term, bad), RejectReason::BadSnapshot);
    let bad = snapshot(50, term, Membership::default());
    expect_rejected(&mut c, msg(1, 2, term, bad), RejectReason::BadMembership);
    let vote = |last_term: u64| MessageBody::RequestVote {
        pre_vote: false,
        last_log_index: LogIndex(1),
        last_log_term: Term(last_term),
        transfer: false,
    };
    expect_rejected(
        &mut c,
        msg(3, 2, Term(u64::MAX), vote(1)),
        RejectReason::Overflow,
    );
    let t = term.0 + 1;
    expect_rejected(
        &mut c,
        msg(3, 2, Term(t), vote(t + 1)),
        RejectReason::BadVoteRequest,
    );
    expect_rejected(&mut c, msg(3, 3, term, vote(1)), RejectReason::Misaddressed);
    assert_eq!(c.node(2).term(), term, "no forged term was adopted");
    assert_eq!(
        c.node(2)
            .rejected_messages()
            .iter()
            .map(|(k, v)| (k.0, *v))
            .collect::<Vec<_>>(),
        vec![(1, 6), (3, 2)]
    );
    assert_eq!(c.node(3).rejected_messages().get(&NodeId(3)), Some(&1));
    let index = c.propose(1, b"unharmed");
    c.deliver();
    assert_eq!(c.node(2).commit_index(), index);
}

/// A leader whose ReadIndex queue is full answers a forwarded read with "retry" instead of
/// failing: it used to return `Overloaded` from `step`, which the runtime treats as fatal.
#[test]
fn forwarded_reads_beyond_the_queue_limit_are_refused_not_fatal_6_4() {
    let mut c = Cluster::new(3, |cfg| {
        quiet(cfg);
        cfg.max_pending_reads = 2;
    });
    c.elect(1);
    let term = c.node(1).term();
    for i in 0..5u8 {
        let read = MessageBody::ReadIndex { context: vec![i] };
        c.node_mut(1).step(msg(2, 1, term, read)).unwrap();
    }
    let rd = c.node_mut(1).ready().unwrap();
    let refused = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::ReadIndexResponse { index: None, .. }))
        .count();
    assert_eq!(refused, 3, "two queued, three told to retry");
    assert!(
        c.node(1).rejected_messages().is_empty(),
        "a correct peer may do this"
    );
}

// ----- 6.4.1 lease reads across restarts (issue 14, section 3) -----

/// n2 answered n1's heartbeats (so n1 holds a lease), then restarted. n3, cut off from n1,
/// asks n2 for its vote at once: n2 must refuse for a full election timeout, or n3 is elected
/// inside n1's lease and n1 serves stale lease reads.
fn vote_right_after_restart(bug: Option<InjectedBug>) -> (Cluster, Term) {
    let lease = move |cfg: &mut Config| {
        cfg.lease_read_ticks = Some(8);
        cfg.injected_bug = bug;
    };
    let mut c = Cluster::new(3, lease);
    c.elect(1);
    c.tick(1);
    c.deliver();
    c.node_mut(1).read_index(b"lease".to_vec()).unwrap();
    assert_eq!(
        c.node_mut(1).ready().unwrap().read_states.len(),
        1,
        "n1 holds a lease"
    );
    c.restart(2, lease);
    c.isolated.insert(1);
    c.campaign(3); // pre-vote, then (if granted) the vote
    let term = c.node(1).term();
    (c, term)
}

#[test]
fn restarted_member_refuses_votes_for_an_election_timeout_6_4_1() {
    let (mut c, term) = vote_right_after_restart(None);
    assert_ne!(
        c.node(3).role(),
        Role::Leader,
        "no leader inside n1's lease"
    );
    assert_eq!(c.node(2).term(), term);
    assert_ne!(c.node(2).vote(), Some(NodeId(3)));
    // Once an election timeout has passed since the restart, n2 votes again.
    for _ in 0..10 {
        c.tick(2);
        c.queue.clear(); // n2's own campaign, if any, goes nowhere
    }
    for _ in 0..100 {
        c.tick(3);
        c.deliver();
        if c.node(3).role() == Role::Leader {
            return;
        }
    }
    panic!(
        "n3 never elected after the restart guard ended: {:?}",
        c.node(2)
    );
}

#[test]
fn voting_right_after_a_restart_elects_a_leader_inside_the_lease_6_4_1() {
    let (c, term) = vote_right_after_restart(Some(InjectedBug::LeaseVoteRightAfterRestart));
    assert_eq!(
        c.node(3).role(),
        Role::Leader,
        "the injected bug is what the guard prevents"
    );
    assert!(c.node(3).term() > term);
    assert_eq!(
        c.node(1).role(),
        Role::Leader,
        "while n1 still leads and holds its lease"
    );
}
