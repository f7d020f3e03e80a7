//! Cross-shard DeFi swaps: a constant-product pool lives on shard 0, its
//! traders on shards 1 to 3. Every swap is a cross-shard transaction: the
//! trader's shard and the pool's shard lock their keys, the coordinator runs
//! the swap on their values (the amount out flows from the pool's reserves
//! to the trader's balance), and both shards commit or neither does. A swap
//! whose slippage guard fails aborts on every shard.
//!
//! Run with `cargo run --release --example defi_swap`.

use parashard::prelude::*;
use parashard::protocols::contracts::amm;

/// Dollars in cents.
const USD: AssetId = AssetId(1);
/// Ether in millionths.
const ETH: AssetId = AssetId(2);
const FEE_BPS: Value = 30;

const RESERVE_USD: Value = 300_000_000;
const RESERVE_ETH: Value = 1_000_000_000;

/// Runs the example.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (issuer, pool) = (AccountId(100), AccountId(200));
    let traders: Vec<AccountId> = (1..=6).map(AccountId).collect();
    let mut builder = Cluster::builder()
        .shards(4)
        .place(issuer, ShardId(0))
        .place(pool, ShardId(0));
    for (i, trader) in traders.iter().enumerate() {
        builder = builder.place(*trader, ShardId(1 + i as u32 % 3));
    }
    let cluster = builder.start()?;

    // Genesis: accounts, two tokens, a pool seeded with $3M and 1,000 ETH,
    // and $10,000 for every trader.
    let mut accounts = vec![(issuer, 0), (pool, 0)];
    accounts.extend(traders.iter().map(|t| (*t, 0)));
    cluster.create_accounts_blocking(&accounts)?;
    let mut setup = vec![
        Transaction::create_asset(TxId::random(), issuer, USD),
        Transaction::create_asset(TxId::random(), issuer, ETH),
        Transaction::mint(TxId::random(), issuer, USD, issuer, RESERVE_USD),
        Transaction::mint(TxId::random(), issuer, ETH, issuer, RESERVE_ETH),
        Transaction::create_pool(TxId::random(), issuer, pool, USD, ETH, FEE_BPS),
        Transaction::add_liquidity(
            TxId::random(),
            issuer,
            pool,
            USD,
            ETH,
            RESERVE_USD,
            RESERVE_ETH,
        ),
    ];
    setup.extend(
        traders
            .iter()
            .map(|t| Transaction::mint(TxId::random(), issuer, USD, *t, 1_000_000)),
    );
    // One at a time: each step needs the one before it.
    for tx in setup {
        let receipt = cluster.submit_blocking(tx)?;
        if let Some(error) = receipt.error() {
            return Err(format!("setup failed: {error}").into());
        }
    }
    let totals_before = totals(&cluster, &traders, issuer, pool)?;
    print_reserves(&cluster, pool, "before")?;

    // Every trader sells $9,000 for ETH with a 1% slippage guard on the
    // price quoted before the batch: swaps that run after others get a
    // worse price, and the guard decides whether that is still acceptable.
    // The last trader demands twice the quoted amount and must abort on
    // every shard.
    let sell = 900_000;
    let quoted = amm::quote(sell, RESERVE_USD, RESERVE_ETH, FEE_BPS).expect("no overflow");
    println!("quoted: ${} buys {quoted} ETH millionths", sell / 100);
    let guard = quoted * 99 / 100;
    let swap = |trader, min_out| -> Transaction {
        Swap {
            trader,
            pool,
            asset_in: USD,
            asset_out: ETH,
            amount_in: sell,
            min_out,
        }
        .into()
    };
    let mut swaps: Vec<Transaction> = traders.iter().map(|t| swap(*t, guard)).collect();
    swaps.push(swap(traders[traders.len() - 1], 2 * quoted));
    let receipts = cluster.submit_batch_blocking(swaps.clone())?;
    for (swap, receipt) in swaps.iter().zip(&receipts) {
        let shard = cluster.placement().shard_of_account(swap.sender);
        match &receipt.status {
            Status::Committed { output } => {
                println!("{} on {shard}: bought {output} ETH millionths", swap.sender)
            }
            Status::Failed(error) => println!("{} on {shard}: failed: {error}", swap.sender),
            other => println!("{} on {shard}: {other:?}", swap.sender),
        }
    }
    print_reserves(&cluster, pool, "after")?;

    let totals_after = totals(&cluster, &traders, issuer, pool)?;
    println!(
        "USD total {} -> {}, ETH total {} -> {}: {}",
        totals_before.0,
        totals_after.0,
        totals_before.1,
        totals_after.1,
        if totals_before == totals_after {
            "conserved"
        } else {
            "NOT CONSERVED"
        }
    );
    cluster.shutdown();
    if totals_before != totals_after {
        return Err("swaps must move value, never create it".into());
    }
    if !receipts
        .last()
        .is_some_and(|r| matches!(r.error(), Some(TxError::SlippageExceeded { .. })))
    {
        return Err("the greedy swap must fail its guard".into());
    }
    Ok(())
}

#[allow(dead_code)] // the tests call `run` directly
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}

/// The USD and ETH held by everyone in the example.
fn totals(
    cluster: &Cluster,
    traders: &[AccountId],
    issuer: AccountId,
    pool: AccountId,
) -> Result<(Value, Value), ClusterError> {
    let holders: Vec<AccountId> = traders.iter().copied().chain([issuer, pool]).collect();
    let mut sums = (0, 0);
    for holder in holders {
        sums.0 += cluster.balance_blocking(holder, USD)?.unwrap_or(0);
        sums.1 += cluster.balance_blocking(holder, ETH)?.unwrap_or(0);
    }
    Ok(sums)
}

fn print_reserves(cluster: &Cluster, pool: AccountId, when: &str) -> Result<(), ClusterError> {
    let usd = cluster.balance_blocking(pool, USD)?.unwrap_or(0);
    let eth = cluster.balance_blocking(pool, ETH)?.unwrap_or(0);
    println!(
        "pool reserves {when}: {usd} USD, {eth} ETH (k = {})",
        u128::from(usd) * u128::from(eth)
    );
    Ok(())
}
