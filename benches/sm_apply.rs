//! Apply throughput of the state machine: batches of Put commands (16-byte keys, 100-byte
//! values, untracked and tracked clients) into a sled database in a temp dir.
//!
//! Run: `cargo bench --bench sm_apply`. Numbers include sled's work but no fsync (sled flushes in
//! the background; durability comes from the WAL, DESIGN.md rule 2).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use haven::sm::{ChangeCapture, Command, Op, StateMachine};
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

/// The cluster benchmark's shape: many sessions, each with one write in flight, so a batch of
/// N entries carries one put from each of N different clients (keys spread over 100k).
fn apply_many_clients(c: &mut Criterion) {
    let mut group = c.benchmark_group("sm_apply_put_many_clients");
    group.measurement_time(Duration::from_secs(5));
    for &clients in &[1usize, 64, 256] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sm = StateMachine::open(dir.path().join("state"), 64 << 20).expect("open");
        let registrations: Vec<Entry> = (1..=clients as u64)
            .map(|index| Entry {
                group: GroupId(0),
                term: Term(1),
                index: LogIndex(index),
                kind: EntryKind::Normal,
                data: Command {
                    client_id: 0,
                    seq: 0,
                    op: Op::RegisterClient,
                }
                .encode()
                .expect("encodable"),
            })
            .collect();
        sm.apply(&registrations).expect("register");
        let mut seq = 0u64;
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_with_input(
            BenchmarkId::new("batch_of_one_per_client", clients),
            &clients,
            |b, &clients| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        seq += 1;
                        let first = sm.applied().0 .0 + 1;
                        let entries: Vec<Entry> = (0..clients as u64)
                            .map(|i| {
                                let index = first + i;
                                let cmd = Command {
                                    client_id: i + 1,
                                    seq,
                                    op: Op::Put {
                                        key: format!("key-{:08}", (index * 7919) % 100_000)
                                            .into_bytes(),
                                        value: vec![b'v'; 100],
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
                            .collect();
                        let start = Instant::now();
                        sm.apply(&entries).expect("apply");
                        total += start.elapsed();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

/// What the node's apply thread does under load: `apply_deferred` batches of 64 puts (one per
/// client, 256 clients), flushed to sled every 32 batches, with a 32 MiB record cache, on a
/// state whose 100k keys already exist (steady state: updates, not inserts). Once with change
/// capture off (the runtime when nobody watches and the watch window is 0), once recording
/// changes (its default: the window keeps recent events), once with previous values too (a
/// watch asked for them).
fn apply_deferred_steady_state(c: &mut Criterion) {
    let mut group = c.benchmark_group("sm_apply_deferred");
    group.measurement_time(Duration::from_secs(5));
    for (name, capture) in [
        ("64x32_then_flush", ChangeCapture::Off),
        ("64x32_then_flush_capturing_changes", ChangeCapture::Changes),
        (
            "64x32_then_flush_capturing_previous",
            ChangeCapture::ChangesWithPrevious,
        ),
    ] {
        steady_state(&mut group, name, capture);
    }
    group.finish();
}

fn steady_state(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    capture: ChangeCapture,
) {
    let clients = 256u64;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sm = StateMachine::open_with_record_cache(dir.path().join("state"), 32 << 20, 32 << 20)
        .expect("open");
    let register: Vec<Entry> = (1..=clients)
        .map(|index| Entry {
            group: GroupId(0),
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Command {
                client_id: 0,
                seq: 0,
                op: Op::RegisterClient,
            }
            .encode()
            .expect("encodable"),
        })
        .collect();
    sm.apply(&register).expect("register");
    let mut seq = 0u64;
    let mut next_key = 0u64;
    let mut next_index = clients + 1;
    let mut make_batch = |size: u64| -> Vec<Entry> {
        seq += 1;
        let first = next_index;
        next_index += size;
        (0..size)
            .map(|i| {
                next_key = (next_key + 7919) % 100_000;
                let cmd = Command {
                    client_id: 1 + (first + i) % clients,
                    seq: seq * 1000 + i,
                    op: Op::Put {
                        key: format!("key-{next_key:08}").into_bytes(),
                        value: vec![b'v'; 100],
                    },
                };
                Entry {
                    group: GroupId(0),
                    term: Term(1),
                    index: LogIndex(first + i),
                    kind: EntryKind::Normal,
                    data: cmd.encode().expect("encodable"),
                }
            })
            .collect()
    };
    // Create every key once.
    for _ in 0..(100_000 / 1000) {
        let batch = make_batch(1000);
        sm.apply(&batch).expect("apply");
    }
    sm.set_change_capture(capture);
    group.throughput(Throughput::Elements(64 * 32));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batches: Vec<Vec<Entry>> = (0..32).map(|_| make_batch(64)).collect();
                let start = Instant::now();
                for batch in &batches {
                    let applied = sm.apply_deferred(batch).expect("apply");
                    assert_eq!(applied.len(), batch.len(), "every entry applied");
                }
                sm.flush_pending().expect("flush");
                total += start.elapsed();
            }
            total
        })
    });
}

criterion_group!(
    benches,
    apply_puts,
    apply_many_clients,
    apply_deferred_steady_state
);
criterion_main!(benches);
