//! A shard fails under load: traders on shards 1 to 3 swap against a pool
//! on shard 0 in batches while shard 0 crashes, twice, in the middle of
//! two-phase commit. Its supervisor restarts it
//! and it recovers every committed transaction from its log. Clients
//! re-submit, under the same ids, whatever they did not hear back about and
//! whatever failed for a reason that was not the swap's own, and nothing
//! runs twice. At the end every swap has one outcome, each asset's total is
//! what it was, the pool's product of reserves did not fall, and every
//! trader holds exactly what its committed swaps bought.
//!
//! Run with `cargo run --release --example shard_failure` (add a number of
//! swaps, e.g. `-- 20000`, for a larger run).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parashard::prelude::*;

const USD: AssetId = AssetId(1);
const ETH: AssetId = AssetId(2);
const ISSUER: AccountId = AccountId(1_000_000);
const POOL: AccountId = AccountId(1_000_001);
const TRADERS: u64 = 300;
const BATCH: usize = 200;
/// How long re-submissions may take, at most, once the shard is back.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs the example with `swaps` swaps.
pub fn run(swaps: usize) -> Result<(), Box<dyn std::error::Error>> {
    let traders: Vec<AccountId> = (0..TRADERS).map(AccountId).collect();
    let cluster = Cluster::builder()
        .shards(4)
        .place_all([(ISSUER, ShardId(0)), (POOL, ShardId(0))])
        .place_all(traders.iter().map(|t| (*t, ShardId(1 + (t.0 % 3) as u32))))
        .fault_seed(11)
        .start()?;
    let mut accounts = vec![(ISSUER, 0), (POOL, 0)];
    accounts.extend(traders.iter().map(|t| (*t, 0)));
    cluster.create_accounts_blocking(&accounts)?;
    let mut setup: Vec<Transaction> = vec![
        CreateAsset {
            issuer: ISSUER,
            asset: USD,
        }
        .into(),
        CreateAsset {
            issuer: ISSUER,
            asset: ETH,
        }
        .into(),
        Mint {
            issuer: ISSUER,
            asset: USD,
            to: ISSUER,
            amount: 1 << 40,
        }
        .into(),
        Mint {
            issuer: ISSUER,
            asset: ETH,
            to: ISSUER,
            amount: 1 << 40,
        }
        .into(),
        CreatePool {
            creator: ISSUER,
            pool: POOL,
            asset_a: USD,
            asset_b: ETH,
            fee_bps: 30,
        }
        .into(),
        AddLiquidity {
            provider: ISSUER,
            pool: POOL,
            asset_a: USD,
            asset_b: ETH,
            amount_a: 1 << 40,
            amount_b: 1 << 40,
        }
        .into(),
    ];
    setup.extend(traders.iter().map(|t| -> Transaction {
        Mint {
            issuer: ISSUER,
            asset: USD,
            to: *t,
            amount: 1 << 30,
        }
        .into()
    }));
    for tx in setup {
        let receipt = cluster.submit_blocking(tx)?;
        if !receipt.is_committed() {
            return Err(format!("set-up failed: {}", receipt.status).into());
        }
    }
    let holders: Vec<AccountId> = traders.iter().copied().chain([ISSUER, POOL]).collect();
    let before = totals(&cluster, &holders)?;
    let k_before = product(&cluster)?;

    let all: Vec<Transaction> = (0..swaps)
        .map(|i| {
            let trader = traders[i % traders.len()];
            let amount_in = 1_000 + (i as u64 * 7_919) % 100_000;
            let swap = Swap {
                trader,
                pool: POOL,
                asset_in: USD,
                asset_out: ETH,
                amount_in,
                min_out: 1,
            };
            swap.with_id(TxId::from_u128(i as u128 + 1))
        })
        .collect();

    // The load: batches one after another; shard 0 crashes once the first
    // batch is answered, with the rest still to come and in flight.
    let mut outcomes: HashMap<TxId, Status> = HashMap::new();
    let mut unresolved: Vec<Transaction> = Vec::new();
    for (n, batch) in all.chunks(BATCH).enumerate() {
        // Shard 0 crashes in the middle of the run, twice, at two points of
        // two-phase commit: before it applies a batch of commits (with
        // other rounds' locks held), and just after it has voted.
        if n == 1 {
            cluster
                .faults()
                .crash_shard_at(ShardId(0), CrashPoint::BeforeCommitApplied)?;
        }
        if n == 3 {
            cluster
                .faults()
                .crash_shard_at(ShardId(0), CrashPoint::AfterVote)?;
        }
        let receipts = cluster.submit_batch_blocking(batch.to_vec())?;
        sort(batch, receipts, &mut outcomes, &mut unresolved);
    }
    // Re-submit, under the same ids, until every swap has its outcome.
    let deadline = Instant::now() + PATIENCE;
    let (mut rounds, mut resubmitted) = (0, 0);
    while !unresolved.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("{} swaps never resolved", unresolved.len()).into());
        }
        rounds += 1;
        // Pacing: a swap still in flight answers `InFlight` until it ends.
        std::thread::sleep(Duration::from_millis(10));
        let again = std::mem::take(&mut unresolved);
        resubmitted += again.len();
        let receipts = cluster.submit_batch_blocking(again.clone())?;
        sort(&again, receipts, &mut outcomes, &mut unresolved);
    }
    let committed = outcomes
        .values()
        .filter(|s| matches!(s, Status::Committed { .. }))
        .count();
    let crashes = cluster.faults().stats().crashes;
    println!(
        "{swaps} swaps, shard 0 crashed {crashes} times: {committed} committed, {} failed on their own terms; {resubmitted} re-submitted in {rounds} rounds",
        swaps - committed
    );
    if crashes < 2 {
        return Err(format!("shard 0 crashed {crashes} times, not twice").into());
    }

    // Every trader holds exactly what its committed swaps bought, once.
    let mut bought: HashMap<AccountId, Value> = HashMap::new();
    for tx in &all {
        if let Some(Status::Committed { output }) = outcomes.get(&tx.id) {
            *bought.entry(tx.sender).or_default() += output.value();
        }
    }
    for trader in &traders {
        let eth = cluster.balance_blocking(*trader, ETH)?.unwrap_or(0);
        let expected = bought.get(trader).copied().unwrap_or(0);
        if eth != expected {
            return Err(
                format!("{trader} holds {eth} ETH, its committed swaps bought {expected}").into(),
            );
        }
    }
    let after = totals(&cluster, &holders)?;
    let k_after = product(&cluster)?;
    cluster.shutdown();
    if before != after {
        return Err(format!("totals moved: {before:?} -> {after:?}").into());
    }
    if k_after < k_before {
        return Err("the pool's product of reserves fell".into());
    }
    println!("totals {after:?} conserved; the pool's product of reserves rose from {k_before} to {k_after}");
    Ok(())
}

/// Files each receipt: a final outcome, or (unknown, or failed for a
/// reason not the swap's own) to submit again.
fn sort(
    batch: &[Transaction],
    receipts: Vec<Receipt>,
    outcomes: &mut HashMap<TxId, Status>,
    unresolved: &mut Vec<Transaction>,
) {
    for (tx, receipt) in batch.iter().zip(receipts) {
        let again = receipt.is_unknown() || receipt.error().is_some_and(TxError::is_retryable);
        if again {
            unresolved.push(tx.clone());
        } else {
            outcomes.insert(tx.id, receipt.status);
        }
    }
}

/// Each asset's total over `holders`.
fn totals(cluster: &Cluster, holders: &[AccountId]) -> Result<(u128, u128), ClusterError> {
    let mut sums = (0u128, 0u128);
    for holder in holders {
        sums.0 += u128::from(cluster.balance_blocking(*holder, USD)?.unwrap_or(0));
        sums.1 += u128::from(cluster.balance_blocking(*holder, ETH)?.unwrap_or(0));
    }
    Ok(sums)
}

/// The product of the pool's reserves.
fn product(cluster: &Cluster) -> Result<u128, ClusterError> {
    let usd = cluster.balance_blocking(POOL, USD)?.unwrap_or(0);
    let eth = cluster.balance_blocking(POOL, ETH)?.unwrap_or(0);
    Ok(u128::from(usd) * u128::from(eth))
}

#[allow(dead_code)] // the tests call `run` directly
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let swaps = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("{n:?}: give the number of swaps"))?,
        None => 2_000,
    };
    run(swaps)
}
