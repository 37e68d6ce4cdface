//! Throughput of the Raft core alone: a 3-node cluster in memory (no IO; messages handed
//! directly from one core to another; "persisting" is appending to an in-memory store) commits
//! batches of proposals. Reports entries committed per second of CPU time of the benchmark
//! thread (the whole cluster runs on it).
//!
//! `cargo bench --bench raft`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haven::raft::{Config, MemLogStore, Membership, Message, Raft, Role, SnapshotMeta};
use haven::{LogIndex, NodeId};
use std::collections::VecDeque;
use std::time::Duration;

/// CPU time consumed by this thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Cluster {
    nodes: Vec<Raft<MemLogStore>>,
    queue: VecDeque<Message>,
    batches: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let members = Membership::with_voters((1..=3).map(|i| (NodeId(i), format!("n{i}"))));
        let nodes = (1..=3)
            .map(|i| {
                let store = MemLogStore::new(members.clone());
                Raft::new(Config::new(NodeId(i), i), store, LogIndex(0)).unwrap()
            })
            .collect();
        let mut c = Cluster {
            nodes,
            queue: VecDeque::new(),
            batches: 0,
        };
        while c.nodes[0].role() != Role::Leader {
            c.nodes[0].tick().unwrap();
            c.run();
        }
        c
    }

    /// Handle node `i`'s Ready: persist, acknowledge, send, apply.
    fn process(&mut self, i: usize) {
        let raft = &mut self.nodes[i];
        while raft.has_ready() {
            let rd = raft.ready().unwrap();
            self.queue.extend(rd.messages);
            if let Some(hs) = rd.hard_state {
                raft.store_mut().set_hard_state(hs);
            }
            raft.store_mut().append(&rd.entries);
            raft.advance_persisted(rd.number).unwrap();
            self.queue.extend(rd.persisted_messages);
            if let Some(last) = rd.committed_entries.last() {
                raft.advance_applied(last.index);
            }
        }
    }

    fn run(&mut self) {
        for i in 0..self.nodes.len() {
            self.process(i);
        }
        while let Some(m) = self.queue.pop_front() {
            let to = m.to.0 as usize - 1;
            self.nodes[to].step(m).unwrap();
            self.process(to);
        }
    }

    /// Propose one batch on the leader and run until it is committed there.
    fn commit_batch(&mut self, batch: &[Vec<u8>]) {
        let p = self.nodes[0].propose(batch.iter().cloned()).unwrap();
        self.run();
        assert!(self.nodes[0].commit_index() >= p.last);
        self.batches += 1;
        if self.batches % 1024 == 0 {
            // Keep memory flat: compact every node's log up to what it applied.
            for raft in &mut self.nodes {
                let index = raft.applied_index();
                let meta = SnapshotMeta {
                    index,
                    term: raft.log_term(index).unwrap().unwrap(),
                    membership: raft.committed_membership().clone(),
                };
                raft.store_mut().compact(meta);
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_3_nodes_in_memory");
    for batch_size in [1usize, 64, 256] {
        let batch: Vec<Vec<u8>> = (0..batch_size).map(|i| vec![i as u8; 16]).collect();
        group.throughput(Throughput::Elements(batch_size as u64));
        group.bench_function(format!("commit_batch_of_{batch_size}"), |b| {
            let mut cluster = Cluster::new();
            // Criterion sees CPU time, so its "elements/s" are entries per CPU-second.
            b.iter_custom(|iters| {
                let start = thread_cpu_time();
                for _ in 0..iters {
                    cluster.commit_batch(&batch);
                }
                thread_cpu_time() - start
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
