//! Criterion benchmark of synced WAL appends (256-byte entries, batches of 1, 16 and 256)
//! against the raw floor: write + fdatasync of as many bytes to a plain, zero-filled file.
//! `haven bench wal` measures the same with percentiles; this one is for criterion's
//! change detection. Runs in a directory under the current one (not a tmpfs /tmp).
//!
//! `cargo bench --bench wal`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use haven::codec::{encode_value, frame_len};
use haven::wal::{Wal, WalOptions, WriteBatch};
use haven::{Entry, EntryKind, GroupId, LogIndex, Term};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;

const ENTRY_BYTES: usize = 256;
const FLOOR_FILE_BYTES: u64 = 64 << 20;

fn batch(first: u64, count: usize) -> Vec<Entry> {
    (0..count as u64)
        .map(|k| Entry {
            group: GroupId(0),
            term: Term(1),
            index: LogIndex(first + k),
            kind: EntryKind::Normal,
            data: vec![(k % 251) as u8; ENTRY_BYTES],
        })
        .collect()
}

fn bench_wal(c: &mut Criterion) {
    let root = tempfile::Builder::new()
        .prefix(".haven-criterion-")
        .tempdir_in(".")
        .expect("a temp dir under the current directory");
    let mut group = c.benchmark_group("wal_synced_append");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for count in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(count as u64));
        let dir = root.path().join(format!("wal-{count}"));
        let (wal, _) = Wal::open(&dir, WalOptions::default()).expect("open wal");
        let mut next = 1u64;
        group.bench_with_input(BenchmarkId::new("wal", count), &count, |b, &count| {
            b.iter(|| {
                let entries = batch(next, count);
                next += count as u64;
                wal.write(WriteBatch {
                    entries,
                    ..WriteBatch::default()
                })
                .expect("write");
            })
        });
        drop(wal);

        let bytes = frame_len(encode_value(&batch(1, count)).expect("encode").len());
        let path = root.path().join(format!("floor-{count}"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("floor file");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..FLOOR_FILE_BYTES >> 20 {
            file.write_all(&zeros).expect("zero-fill");
        }
        file.sync_all().expect("sync");
        let buf = vec![0x5Au8; bytes];
        let mut offset = 0u64;
        group.bench_with_input(BenchmarkId::new("floor", count), &count, |b, _| {
            b.iter(|| {
                if offset + bytes as u64 > FLOOR_FILE_BYTES {
                    offset = 0;
                }
                file.write_all_at(&buf, offset).expect("write");
                file.sync_data().expect("fdatasync");
                offset += bytes as u64;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_wal);
criterion_main!(benches);
