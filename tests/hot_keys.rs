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

/// A pot every call adds to without reading it: `args = [op, amount]`.
/// Op 0 adds `amount` to the pot (an add key) and to the sender's share;
/// op 1 subtracts it from the pot and adds it to the sender's takings.
struct Pot;

const POT: ContractId = ContractId(20);
const POT_ACCOUNT: AccountId = AccountId(20_000);

fn pot_key() -> Key {
    Key::field(POT_ACCOUNT, 0)
}

fn share_key(account: AccountId) -> Key {
    Key::field(account, 1)
}

fn takings_key(account: AccountId) -> Key {
    Key::field(account, 2)
}

impl Contract for Pot {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let (op, amount): (Value, Value) = Args::decode(args)?;
        let sender = ctx.sender();
        if op == 0 {
            ctx.add(pot_key(), amount)?;
            ctx.credit(share_key(sender), amount)?;
        } else {
            ctx.subtract(pot_key(), amount)?;
            ctx.credit(takings_key(sender), amount)?;
        }
        Ok(0.into())
    }

    fn access(&self, sender: AccountId, args: &[Value]) -> Result<AccessSet, TxError> {
        let (op, _): (Value, Value) = Args::decode(args)?;
        let own = if op == 0 {
            share_key(sender)
        } else {
            takings_key(sender)
        };
        Ok(AccessSet::with_adds([], [own], [pot_key()]))
    }
}

/// Adds to one key from every shard, local and cross-shard, are bounded
/// exactly: with room for 100 adds of 10 below `u64::MAX`, exactly 100 of
/// 300 commit and the rest fail with `Overflow`, writing nothing; then
/// with 1,000 in the pot, exactly 100 of 150 subtractions of 10 commit
/// and the rest fail with `InsufficientFunds`. The pot moves by exactly
/// what committed, and reading the pot inside a call that declared it as
/// an add key is refused.
#[test]
fn adds_to_one_key_from_every_shard_keep_their_bounds_exactly() {
    let senders: Vec<AccountId> = (0..30).map(AccountId).collect();
    let cluster = Cluster::builder()
        .shards(3)
        .place(POT_ACCOUNT, ShardId(0))
        .place_by(senders.iter().copied(), |a| ShardId((a.0 % 3) as u32))
        .contract(POT, "pot-1", std::sync::Arc::new(Pot))
        .unwrap()
        .start()
        .unwrap();
    let call = |sender: AccountId, op: Value, amount: Value| {
        cluster.call(sender, POT, (op, amount).encode()).unwrap()
    };
    let commit = |tx: Transaction| {
        let receipt = cluster.submit_blocking(tx).unwrap();
        assert!(receipt.is_committed(), "{receipt:?}");
    };
    // Submits `txs` at once: exactly `winners` commit, and every other
    // one fails as `lost` says.
    let race = |txs: Vec<Transaction>, winners: usize, lost: fn(&TxError) -> bool| {
        let receipts = cluster.submit_batch_blocking(txs).unwrap();
        let committed = receipts.iter().filter(|r| r.is_committed()).count();
        assert_eq!(committed, winners, "{:?}", &receipts[..5]);
        for receipt in receipts.iter().filter(|r| !r.is_committed()) {
            assert!(receipt.error().is_some_and(lost), "{receipt:?}");
        }
    };
    commit(call(senders[0], 0, Value::MAX - 1_000));

    let adds: Vec<Transaction> = (0..300).map(|i| call(senders[i % 30], 0, 10)).collect();
    race(
        adds,
        100,
        |error| matches!(error, TxError::Overflow { key } if *key == pot_key()),
    );
    let pot = || cluster.get_many_blocking(&[pot_key()]).unwrap()[0];
    assert_eq!(pot(), Some(Value::MAX));
    let shares: Vec<Key> = senders.iter().map(|&s| share_key(s)).collect();
    let total_shares: u128 = cluster
        .get_many_blocking(&shares)
        .unwrap()
        .into_iter()
        .map(|v| u128::from(v.unwrap_or(0)))
        .sum();
    assert_eq!(
        total_shares,
        u128::from(Value::MAX - 1_000) + 1_000,
        "a failed add wrote its share"
    );

    // Empty the pot down to 1,000, then race 150 takers for it.
    commit(call(senders[1], 1, Value::MAX - 1_000));
    let takes: Vec<Transaction> = (0..150).map(|i| call(senders[i % 30], 1, 10)).collect();
    race(
        takes,
        100,
        |error| matches!(error, TxError::InsufficientFunds { key, .. } if *key == pot_key()),
    );
    assert_eq!(pot(), Some(0));

    // Reading an add key is refused, and the call writes nothing.
    struct Peek;
    impl Contract for Peek {
        fn execute(&self, ctx: &mut Context<'_>, _: &[Value]) -> Result<Output, TxError> {
            ctx.credit(share_key(ctx.sender()), 1)?;
            ctx.read(pot_key()).map(|v| v.unwrap_or(0).into())
        }
    }
    let cluster = Cluster::builder()
        .shards(2)
        .place(POT_ACCOUNT, ShardId(0))
        .place(AccountId(1), ShardId(1))
        .contract(ContractId(21), "peek-1", std::sync::Arc::new(Peek))
        .unwrap()
        .start()
        .unwrap();
    let access = AccessSet::with_adds([], [share_key(AccountId(1))], [pot_key()]);
    let peek = ContractCall {
        sender: AccountId(1),
        contract: ContractId(21),
        args: vec![],
        access,
    };
    let receipt = cluster.submit_blocking(peek.into()).unwrap();
    assert!(
        matches!(receipt.error(), Some(TxError::AccessViolation { key, write: false }) if *key == pot_key()),
        "{receipt:?}"
    );
    assert_eq!(
        cluster
            .get_many_blocking(&[share_key(AccountId(1))])
            .unwrap()[0],
        None
    );
}
