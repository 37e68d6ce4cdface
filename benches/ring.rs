//! Partition-map placement (issue 10): key lookup on a prebuilt table, a from-scratch build,
//! and the incremental rebuild after one join, per strategy, 100 equal owners, P = 4096, R = 3,
//! default load cap. Run: `cargo bench --bench ring`. `haven bench ring --json` reports the same
//! speeds with the balance and movement figures.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use haven::sm::placement::{compute, Change, MapParams, Owner, Strategy};
use std::hint::black_box;

fn strategies() -> [Strategy; 2] {
    [
        Strategy::Rendezvous,
        Strategy::Ring {
            vnodes_per_weight: 160,
        },
    ]
}

fn owners() -> Vec<Owner> {
    (0..100)
        .map(|i| Owner::new(format!("node-{i}"), 1))
        .collect()
}

fn placement(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..4096)
        .map(|i| format!("user:{i}").into_bytes())
        .collect();
    let join = Change::Join(Owner::new("node-joining", 1));
    for strategy in strategies() {
        let params = MapParams {
            strategy,
            ..MapParams::default()
        };
        let table = compute(&owners(), &params).expect("valid map");
        let name = strategy.name();
        let mut next = 0;
        c.bench_function(&format!("ring/lookup/{name}"), |b| {
            b.iter(|| {
                next = (next + 1) % keys.len();
                black_box(table.lookup(black_box(&keys[next])));
            })
        });
        c.bench_with_input(
            BenchmarkId::new("ring/build", name),
            &params,
            |b, params| b.iter(|| compute(black_box(&owners()), params).expect("valid map")),
        );
        c.bench_function(&format!("ring/apply_join/{name}"), |b| {
            b.iter(|| table.apply(black_box(&join)).expect("valid change"))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = placement
}
criterion_main!(benches);
