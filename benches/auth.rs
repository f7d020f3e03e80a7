//! Criterion benchmark of signature verification alone: 10,000 signed
//! transfers through `auth::verify` (batches of 64 spread over rayon's
//! threads), the bound of the signed lines of `parashard bench`.
//!
//! Run with `cargo bench --bench auth`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parashard::prelude::*;
use parashard::protocols::auth;

const TXS: usize = 10_000;

fn verify(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[3; 32]);
    let txs: Vec<Transaction> = (0..TXS as u64)
        .map(|i| {
            Transaction::transfer(TxId::from_u128(i.into()), AccountId(1), AccountId(2), 1)
                .sign(0, i, &key)
        })
        .collect();
    let mut group = c.benchmark_group("auth");
    group
        .throughput(Throughput::Elements(TXS as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("verify-10k", |b| {
        b.iter(|| {
            assert!(auth::verify(0, &txs).is_empty(), "every signature verifies");
        })
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
