//! Criterion benchmark of the block executors: coin transfers over 2, 100,
//! 10k and 1M accounts, blocks of 10k transactions, the sequential
//! reference against the parallel executor with 1 and 2 workers (its
//! parallel path: the adaptive choice off) and the adaptive executor with 2;
//! and fee payments from 100k accounts into one collector, its two counters
//! declared as add keys (which the parallel executor runs unordered) or as
//! ordinary writes (which order every payment after the one before).
//!
//! Run with `cargo bench --bench executor`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parashard::prelude::*;
use parashard::protocols::workload::{self, Rng, TxIds};

mod common;

const BLOCK: usize = 10_000;

/// The executors compared, on `registry`.
fn executors_on(registry: Arc<Registry>) -> Vec<(&'static str, Box<dyn BlockExecutor>)> {
    vec![
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
    ]
}

fn executors(c: &mut Criterion) {
    let executors = executors_on(Arc::new(Registry::new()));
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
        measure(&mut group, &executors, accounts, accounts, &blocks);
    }
    group.finish();
}

/// Benchmarks each executor on `blocks`, cycling through them on one state
/// that starts with `accounts` funded accounts.
fn measure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    executors: &[(&'static str, Box<dyn BlockExecutor>)],
    parameter: impl std::fmt::Display,
    accounts: u64,
    blocks: &[Vec<Transaction>],
) {
    let genesis = workload::bank_state(accounts, 1 << 40);
    for (name, executor) in executors {
        let mut state = genesis.clone();
        let mut next = 0;
        group.bench_function(BenchmarkId::new(*name, &parameter), |b| {
            b.iter(|| {
                next = (next + 1) % blocks.len();
                executor
                    .execute_block(&mut state, &blocks[next])
                    .expect("block within limits")
            })
        });
    }
}

fn fees(c: &mut Criterion) {
    const ACCOUNTS: u64 = 100_000;
    let executors = executors_on(common::fee_registry());
    let mut group = c.benchmark_group("fees");
    group
        .throughput(Throughput::Elements(BLOCK as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (declared, adds) in [("adds", true), ("writes", false)] {
        let mut rng = Rng::new(7);
        let mut ids = TxIds::default();
        let blocks: Vec<Vec<Transaction>> = (0..8)
            .map(|_| {
                (0..BLOCK)
                    .map(|_| common::pay_fee(ids.next_id(), AccountId(rng.below(ACCOUNTS)), adds))
                    .collect()
            })
            .collect();
        measure(&mut group, &executors, declared, ACCOUNTS, &blocks);
    }
    group.finish();
}

criterion_group!(benches, executors, fees);
criterion_main!(benches);
