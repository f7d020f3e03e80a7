//! Contended cross-shard traffic: swaps from traders on every shard against
//! one pool run as grouped rounds, and give exactly what executing the
//! same batch in order on one state gives.

use parashard::prelude::*;
use parashard::protocols::workload::Rng;

const TOKEN: AssetId = AssetId(1);
const ISSUER: AccountId = AccountId(10_000);
const POOL: AccountId = AccountId(10_001);
const TRADERS: u64 = 60;
const RESERVE: Value = 1_000_000;

/// Genesis: traders with coins and tokens, a pool with deep reserves.
fn genesis(ids: &mut u128) -> Vec<Transaction> {
    let mut next = || {
        *ids += 1;
        TxId::from_u128(*ids)
    };
    let mut txs = vec![
        Transaction::create_account(next(), ISSUER, 10 * RESERVE),
        Transaction::create_account(next(), POOL, 0),
    ];
    txs.extend((0..TRADERS).map(|t| Transaction::create_account(next(), AccountId(t), 10_000)));
    txs.push(Transaction::create_asset(next(), ISSUER, TOKEN));
    txs.push(Transaction::mint(
        next(),
        ISSUER,
        TOKEN,
        ISSUER,
        10 * RESERVE,
    ));
    txs.push(Transaction::create_pool(
        next(),
        ISSUER,
        POOL,
        AssetId::COIN,
        TOKEN,
        30,
    ));
    txs.push(Transaction::add_liquidity(
        next(),
        ISSUER,
        POOL,
        AssetId::COIN,
        TOKEN,
        RESERVE,
        RESERVE,
    ));
    txs.extend(
        (0..TRADERS).map(|t| Transaction::mint(next(), ISSUER, TOKEN, AccountId(t), 10_000)),
    );
    txs
}

/// Swaps in both directions; about one in ten demands more than any swap
/// of its size can pay and fails on slippage, and some sell more than the
/// trader holds.
fn swaps(seed: u64, n: usize, ids: &mut u128) -> Vec<Transaction> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            *ids += 1;
            let trader = AccountId(rng.below(TRADERS));
            let (sell, buy) = if rng.chance(50) {
                (AssetId::COIN, TOKEN)
            } else {
                (TOKEN, AssetId::COIN)
            };
            let amount = 1 + rng.below(4_000);
            let min_out = if rng.chance(10) { amount * 2 } else { 1 };
            Transaction::swap(
                TxId::from_u128(*ids),
                trader,
                POOL,
                sell,
                buy,
                amount,
                min_out,
            )
        })
        .collect()
}

/// The keys the checks read: every balance of the traders and the pool.
fn keys() -> Vec<Key> {
    (0..TRADERS)
        .map(AccountId)
        .chain([POOL])
        .flat_map(|a| [Key::balance(a, AssetId::COIN), Key::balance(a, TOKEN)])
        .collect()
}

/// Proves grouped rounds are serialisable in batch order: a batch of 300
/// cross-shard swaps against one pool on shard 0, from traders on shards 1
/// to 3, gives the same receipt for every swap (outputs and failures) and
/// the same balances as the sequential executor running the batch in
/// order on one state; coins and tokens are conserved.
#[test]
fn hot_pool_swaps_match_sequential_execution() {
    let mut builder = Cluster::builder()
        .shards(4)
        .place(ISSUER, ShardId(0))
        .place(POOL, ShardId(0));
    for t in 0..TRADERS {
        builder = builder.place(AccountId(t), ShardId(1 + (t % 3) as u32));
    }
    let cluster = builder.start().expect("cluster starts");
    let mut ids = 0;
    let setup = genesis(&mut ids);
    let batch = swaps(7, 300, &mut ids);

    let mut reference = State::new();
    let executor = SequentialExecutor::default();
    let setup_receipts = executor.execute_block(&mut reference, &setup).unwrap();
    assert!(
        setup_receipts.iter().all(Receipt::is_committed),
        "{setup_receipts:?}"
    );
    let expected = executor.execute_block(&mut reference, &batch).unwrap();
    let failures = expected.iter().filter(|r| !r.is_committed()).count();
    assert!(failures > 0 && failures < 150, "{failures} swaps fail");

    for tx in setup {
        // One at a time: each step needs the one before it.
        let receipt = cluster.submit_blocking(tx).expect("submit");
        assert!(receipt.is_committed(), "{receipt:?}");
    }
    let receipts = cluster
        .submit_batch_blocking(batch.clone())
        .expect("submit");
    for ((tx, got), want) in batch.iter().zip(&receipts).zip(&expected) {
        assert_eq!(got, want, "{tx:?}");
    }
    let keys = keys();
    let values = cluster.get_many_blocking(&keys).expect("read");
    let want: Vec<Option<Value>> = keys.iter().map(|k| reference.get(k)).collect();
    assert_eq!(values, want);
    let total = |asset: AssetId| -> Value {
        keys.iter()
            .zip(&values)
            .filter(|(k, _)| k.asset() == Some(asset))
            .map(|(_, v)| v.unwrap_or(0))
            .sum()
    };
    assert_eq!(total(AssetId::COIN), TRADERS * 10_000 + RESERVE);
    assert_eq!(total(TOKEN), TRADERS * 10_000 + RESERVE);
    cluster.shutdown();
}
