//! Criterion benchmark of the block executors: coin transfers over 2, 100,
//! 10k and 1M accounts, blocks of 10k transactions, the sequential
//! reference against the parallel executor with 1 and 2 workers (its
//! parallel path: the adaptive choice off) and the adaptive executor with 2.
//!
//! Run with `cargo bench --bench executor`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parashard::prelude::*;
use parashard::protocols::workload::{self, Rng, TxIds};

const BLOCK: usize = 10_000;

fn executors(c: &mut Criterion) {
    let registry = Arc::new(Registry::new());
    let executors: Vec<(&str, Box<dyn BlockExecutor>)> = vec![
        (
            "sequential",
            Box::new(SequentialExecutor::new(registry.clone())),
        ),
        (
            "parallel-1",
            Box::new(
                ParallelExecutor::new(1, registry.clone())
                    .expect("1 worker")
                    .adaptive(false),
            ),
        ),
        (
            "parallel-2",
            Box::new(
                ParallelExecutor::new(2, registry.clone())
                    .expect("2 workers")
                    .adaptive(false),
            ),
        ),
        (
            "adaptive-2",
            Box::new(ParallelExecutor::new(2, registry).expect("2 workers")),
        ),
    ];
    let mut group = c.benchmark_group("transfers");
    group
        .throughput(Throughput::Elements(BLOCK as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for accounts in [2u64, 100, 10_000, 1_000_000] {
        let mut rng = Rng::new(accounts);
        let mut ids = TxIds::default();
        let blocks: Vec<_> = (0..8)
            .map(|_| workload::transfers(&mut rng, &mut ids, accounts, BLOCK, 100))
            .collect();
        let genesis = workload::bank_state(accounts, 1 << 40);
        for (name, executor) in &executors {
            let mut state = genesis.clone();
            let mut next = 0;
            group.bench_with_input(BenchmarkId::new(*name, accounts), &accounts, |b, _| {
                b.iter(|| {
                    next = (next + 1) % blocks.len();
                    executor
                        .execute_block(&mut state, &blocks[next])
                        .expect("block within limits")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, executors);
criterion_main!(benches);
