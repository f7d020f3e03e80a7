//! A multi-hop swap: USD -> ETH -> BTC through two pools on two shards,
//! for a trader on a third, committed atomically by one cross-shard
//! transaction. The route is a user contract calling the native AMM for
//! each hop; it declares its own access set from its arguments, so a call
//! and the keys it may touch cannot drift apart. A route whose final guard
//! fails changes nothing anywhere: the first hop is undone with it.
//!
//! Run with `cargo run --release --example multi_hop_swap` (add a number of
//! routes, e.g. `-- 2000`, for a larger run).

use std::sync::Arc;

use parashard::prelude::*;
use parashard::protocols::contracts::amm;

const USD: AssetId = AssetId(1);
const ETH: AssetId = AssetId(2);
const BTC: AssetId = AssetId(3);
const ROUTER: ContractId = ContractId(9);

const ISSUER: AccountId = AccountId(100);
const USD_ETH: AccountId = AccountId(200);
const ETH_BTC: AccountId = AccountId(300);

/// Swaps along a route of two pools: `route(pool_1, pool_2, asset_in,
/// asset_mid, asset_out, amount_in, min_out)`. Only the final output is
/// guarded: what the first hop pays is what the second sells. It returns
/// both hops' outputs: `(amount_mid, amount_out)`.
struct Router;

/// The route's arguments, by name.
struct Route {
    pools: [AccountId; 2],
    assets: [AssetId; 3],
    amount_in: Value,
    min_out: Value,
}

impl Route {
    fn parse(args: &[Value]) -> Result<Route, TxError> {
        let &[pool_1, pool_2, a, b, c, amount_in, min_out] = args else {
            return Err(TxError::InvalidInput {
                reason: format!(
                    "route takes 7 arguments (pool_1, pool_2, asset_in, asset_mid, asset_out, amount_in, min_out), not {}",
                    args.len()
                ),
            });
        };
        Ok(Route {
            pools: [AccountId(pool_1), AccountId(pool_2)],
            assets: [AssetId(a), AssetId(b), AssetId(c)],
            amount_in,
            min_out,
        })
    }

    fn args(&self) -> Vec<Value> {
        let [p1, p2] = self.pools;
        let [a, b, c] = self.assets;
        vec![p1.0, p2.0, a.0, b.0, c.0, self.amount_in, self.min_out]
    }
}

impl Contract for Router {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let route = Route::parse(args)?;
        let [a, b, c] = route.assets;
        let [first, second] = route.pools;
        let middle = amm::swap(ctx, first, a, b, route.amount_in, 1)?;
        let out = amm::swap(ctx, second, b, c, middle, route.min_out)?;
        Ok(Output::of((middle, out)))
    }

    fn access(&self, trader: AccountId, args: &[Value]) -> Result<AccessSet, TxError> {
        let route = Route::parse(args)?;
        let [a, b, c] = route.assets;
        let mut reads = Vec::new();
        let mut writes = vec![
            Key::balance(trader, a),
            Key::balance(trader, b),
            Key::balance(trader, c),
        ];
        for (pool, (sold, bought)) in route.pools.into_iter().zip([(a, b), (b, c)]) {
            let [asset_a, asset_b, fee, _supply] = amm::fields(pool);
            reads.extend([asset_a, asset_b, fee]);
            writes.extend([Key::balance(pool, sold), Key::balance(pool, bought)]);
        }
        Ok(AccessSet::new(reads, writes))
    }
}

/// Runs the example; `routes` traders each route $100 to BTC.
pub fn run(routes: u64) -> Result<(), Box<dyn std::error::Error>> {
    let traders: Vec<AccountId> = (1..=routes).map(AccountId).collect();
    let cluster = Cluster::builder()
        .shards(3)
        .place_all([
            (ISSUER, ShardId(0)),
            (USD_ETH, ShardId(1)),
            (ETH_BTC, ShardId(2)),
        ])
        .place_all(traders.iter().map(|t| (*t, ShardId(0))))
        .contract(ROUTER, "router-1", Arc::new(Router))?
        .start()?;
    let mut accounts = vec![(ISSUER, 0), (USD_ETH, 0), (ETH_BTC, 0)];
    accounts.extend(traders.iter().map(|t| (*t, 0)));
    cluster.create_accounts_blocking(&accounts)?;
    // Two pools: $3M against 1,000 ETH, and 1,000 ETH against 50 BTC (in
    // cents and millionths).
    let depth = |asset: AssetId| match asset {
        USD => 300_000_000,
        ETH => 1_000_000_000,
        _ => 50_000_000,
    };
    let mut setup: Vec<Transaction> = Vec::new();
    for asset in [USD, ETH, BTC] {
        setup.push(
            CreateAsset {
                issuer: ISSUER,
                asset,
            }
            .into(),
        );
        let amount = 2 * depth(asset) + 10_000 * routes;
        setup.push(
            Mint {
                issuer: ISSUER,
                asset,
                to: ISSUER,
                amount,
            }
            .into(),
        );
    }
    for (pool, asset_a, asset_b) in [(USD_ETH, USD, ETH), (ETH_BTC, ETH, BTC)] {
        let creator = ISSUER;
        setup.push(
            CreatePool {
                creator,
                pool,
                asset_a,
                asset_b,
                fee_bps: 30,
            }
            .into(),
        );
        let (amount_a, amount_b) = (depth(asset_a), depth(asset_b));
        let provider = ISSUER;
        setup.push(
            AddLiquidity {
                provider,
                pool,
                asset_a,
                asset_b,
                amount_a,
                amount_b,
            }
            .into(),
        );
    }
    for trader in &traders {
        let to = *trader;
        setup.push(
            Mint {
                issuer: ISSUER,
                asset: USD,
                to,
                amount: 10_000,
            }
            .into(),
        );
    }
    // One at a time: each step needs the one before it.
    for tx in setup {
        let receipt = cluster.submit_blocking(tx)?;
        if !receipt.is_committed() {
            return Err(format!("set-up failed: {}", receipt.status).into());
        }
    }
    let holders: Vec<AccountId> = [ISSUER, USD_ETH, ETH_BTC]
        .into_iter()
        .chain(traders.iter().copied())
        .collect();
    let before = totals(&cluster, &holders)?;
    let k_before = [
        product(&cluster, USD_ETH, USD, ETH)?,
        product(&cluster, ETH_BTC, ETH, BTC)?,
    ];

    // Every trader routes $100 to BTC with no guard worth the name; the
    // first trader also asks for a route that cannot pay what it demands.
    let route = |min_out| Route {
        pools: [USD_ETH, ETH_BTC],
        assets: [USD, ETH, BTC],
        amount_in: 10_000,
        min_out,
    };
    let mut calls = Vec::new();
    for trader in &traders {
        calls.push(cluster.call(*trader, ROUTER, route(1).args())?);
    }
    let greedy = cluster.call(traders[0], ROUTER, route(Value::MAX).args())?;
    let greedy_before = balances(&cluster, traders[0])?;
    let receipt = cluster.submit_blocking(greedy)?;
    if !matches!(receipt.error(), Some(TxError::SlippageExceeded { .. })) {
        return Err(format!("the greedy route must fail its guard: {}", receipt.status).into());
    }
    if balances(&cluster, traders[0])? != greedy_before {
        return Err("a failed route changed the trader's balances".into());
    }

    let eth_in_second_pool = cluster.balance_blocking(ETH_BTC, ETH)?.unwrap_or(0);
    let receipts = cluster.submit_batch_blocking(calls)?;
    let (mut bought, mut middle_total) = (0, 0);
    for (trader, receipt) in traders.iter().zip(&receipts) {
        let Status::Committed { output } = &receipt.status else {
            return Err(format!("{trader}'s route: {}", receipt.status).into());
        };
        let (middle, output): (Value, Value) = output.decode()?;
        middle_total += middle;
        let [usd, eth, btc] = balances(&cluster, *trader)?;
        // Atomic: all $100 left, nothing stuck in the middle asset, and
        // exactly the route's output arrived.
        if (usd, eth, btc) != (0, 0, output) {
            return Err(
                format!("{trader}: {usd} USD, {eth} ETH, {btc} BTC after buying {output}").into(),
            );
        }
        bought += output;
    }
    // The first hops' outputs, as the router returned them, are exactly
    // what the second pool was sold.
    let eth_sold = cluster.balance_blocking(ETH_BTC, ETH)?.unwrap_or(0) - eth_in_second_pool;
    if eth_sold != middle_total {
        return Err(format!(
            "the routes report {middle_total} ETH sold on, the pool got {eth_sold}"
        )
        .into());
    }
    let after = totals(&cluster, &holders)?;
    let k_after = [
        product(&cluster, USD_ETH, USD, ETH)?,
        product(&cluster, ETH_BTC, ETH, BTC)?,
    ];
    println!(
        "{routes} routes of $100 -> ETH -> BTC committed across shards 0, 1 and 2: {bought} BTC millionths bought"
    );
    println!(
        "totals before {before:?}, after {after:?}; pool products {k_before:?} -> {k_after:?}"
    );
    cluster.shutdown();
    if before != after {
        return Err("an asset was created or destroyed".into());
    }
    if k_after[0] < k_before[0] || k_after[1] < k_before[1] {
        return Err("a pool's product of reserves fell".into());
    }
    println!("conserved, and both pools' products of reserves held");
    Ok(())
}

/// `account`'s USD, ETH and BTC.
fn balances(cluster: &Cluster, account: AccountId) -> Result<[Value; 3], ClusterError> {
    let keys = [USD, ETH, BTC].map(|asset| Key::balance(account, asset));
    let values = cluster.get_many_blocking(&keys)?;
    Ok([0, 1, 2].map(|i| values[i].unwrap_or(0)))
}

/// Every asset's total over `holders`.
fn totals(cluster: &Cluster, holders: &[AccountId]) -> Result<[u128; 3], ClusterError> {
    let mut sums = [0u128; 3];
    for holder in holders {
        for (sum, value) in sums.iter_mut().zip(balances(cluster, *holder)?) {
            *sum += u128::from(value);
        }
    }
    Ok(sums)
}

/// The product of a pool's reserves.
fn product(
    cluster: &Cluster,
    pool: AccountId,
    a: AssetId,
    b: AssetId,
) -> Result<u128, ClusterError> {
    let x = cluster.balance_blocking(pool, a)?.unwrap_or(0);
    let y = cluster.balance_blocking(pool, b)?.unwrap_or(0);
    Ok(u128::from(x) * u128::from(y))
}

#[allow(dead_code)] // the tests call `run` directly
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let routes = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("{n:?}: give the number of routes"))?,
        None => 20,
    };
    run(routes)
}
