//! Apply throughput of the state machine: batches of Put commands (16-byte keys, 100-byte
//! values, untracked and tracked clients) into a sled database in a temp dir.
//!
//! Run: `cargo bench --bench sm_apply`. Numbers include sled's work but no fsync (sled flushes in
//! the background; durability comes from the WAL, DESIGN.md rule 2).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use haven::sm::{Command, Op, StateMachine};
use haven::{Entry, EntryKind, GroupId, LogIndex, Term};
use std::time::{Duration, Instant};

fn batch(sm: &StateMachine, size: usize, client_id: u64, seq: &mut u64) -> Vec<Entry> {
    let first = sm.applied().0 .0 + 1;
    (0..size as u64)
        .map(|i| {
            *seq += 1;
            let index = first + i;
            let cmd = Command {
                client_id,
                seq: *seq,
                op: Op::Put {
                    // Spread over 100k keys: a mix of inserts and overwrites.
                    key: format!("key-{:011}", (index * 7919) % 100_000).into_bytes(),
                    value: vec![(index % 251) as u8; 100],
                },
            };
            Entry {
                group: GroupId(0),
                term: Term(1),
                index: LogIndex(index),
                kind: EntryKind::Normal,
                data: cmd.encode().expect("encodable"),
            }
        })
        .collect()
}

fn apply_puts(c: &mut Criterion) {
    let mut group = c.benchmark_group("sm_apply_put");
    group.measurement_time(Duration::from_secs(5));
    for &(size, tracked) in &[(1usize, false), (100, false), (1000, false), (1000, true)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sm = StateMachine::open(dir.path().join("state"), 64 << 20).expect("open");
        let client_id = if tracked {
            let register = Command {
                client_id: 0,
                seq: 0,
                op: Op::RegisterClient,
            };
            let entry = Entry {
                group: GroupId(0),
                term: Term(1),
                index: LogIndex(1),
                kind: EntryKind::Normal,
                data: register.encode().expect("encodable"),
            };
            sm.apply(&[entry]).expect("register");
            1
        } else {
            0
        };
        let mut seq = 0;
        group.throughput(Throughput::Elements(size as u64));
        let label = if tracked { "tracked" } else { "untracked" };
        group.bench_with_input(BenchmarkId::new(label, size), &size, |b, &size| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let entries = batch(&sm, size, client_id, &mut seq);
                    let start = Instant::now();
                    sm.apply(&entries).expect("apply");
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, apply_puts);
criterion_main!(benches);
