//! Every way a transaction is refused or fails that is not about its
//! signature (tests/auth.rs has those): a duplicated id, an overflow,
//! oversized input, undeclared access, a panicking contract, an out-of-gas
//! contract, a sender over its bound. Each is tried locally and across
//! shards, in batches with valid transfers; each gets its typed error and
//! changes nothing, the valid transfers commit, and the cluster keeps
//! serving: the state is what the valid transactions alone made it.

use std::sync::Arc;

use parashard::prelude::*;

mod common;
use parashard_protocols::contracts::gas;
use parashard_protocols::model::{MAX_ACCESS_KEYS, MAX_ARGS};

/// Writes 1 to each field it declares, then does what its first argument
/// says: 0 nothing more, 1 panic, 2 burn gas forever, 3 write the sender's
/// second field, which no call declares.
struct Hostile;

const HOSTILE: ContractId = ContractId(50);

impl Contract for Hostile {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        for &account in &args[1..] {
            ctx.write(Key::field(AccountId(account), 0), 1)?;
        }
        match args[0] {
            1 => panic!("hostile contract panics"),
            2 => loop {
                ctx.charge(1)?;
            },
            3 => ctx.write(Key::field(ctx.sender(), 1), 1)?,
            _ => {}
        }
        Ok(0.into())
    }
}

/// A call of [`Hostile`] from account 0 doing `what`, declaring the first
/// field of each of `accounts` (account 0 lives on shard 0, 2 on shard 1).
fn hostile(id: u128, what: Value, accounts: &[u64]) -> Transaction {
    let keys = accounts.iter().map(|&a| Key::field(AccountId(a), 0));
    let mut args = vec![what];
    args.extend(accounts);
    Transaction::custom(
        TxId::from_u128(id),
        AccountId(0),
        HOSTILE,
        args,
        AccessSet::new([], keys),
    )
}

fn transfer(id: u128, from: u64, to: u64, amount: Value) -> Transaction {
    Transaction::transfer(TxId::from_u128(id), AccountId(from), AccountId(to), amount)
}

/// Accounts 0 and 1 on shard 0, 2 and 3 on shard 1, 1,000 coins each; at
/// most 64 transactions of one sender in flight.
fn cluster() -> Cluster {
    let cluster = Cluster::builder()
        .shards(2)
        .place_by((0..4).map(AccountId), |a| ShardId((a.0 / 2) as u32))
        .contract(HOSTILE, "hostile-1", Arc::new(Hostile))
        .unwrap()
        .max_in_flight_per_sender(64)
        .start()
        .unwrap();
    common::fund(&cluster, 4, 1_000);
    cluster
}

/// The state a test checks: every coin balance and the fields the hostile
/// calls could write.
fn state(cluster: &Cluster) -> Vec<Option<Value>> {
    let keys: Vec<Key> = (0..4)
        .flat_map(|a| {
            let account = AccountId(a);
            [
                Key::balance(account, AssetId::COIN),
                Key::field(account, 0),
                Key::field(account, 1),
            ]
        })
        .collect();
    cluster.get_many_blocking(&keys).unwrap()
}

/// Runs `bad` between two valid transfers (one local, one cross-shard)
/// and checks that `bad` failed with what `expected` accepts and that only
/// the transfers changed the state.
fn refused_alone(
    cluster: &Cluster,
    n: u128,
    bad: Transaction,
    expected: impl Fn(&TxError) -> bool,
) {
    let before = state(cluster);
    let batch = vec![transfer(n, 1, 0, 5), bad, transfer(n + 1, 3, 1, 7)];
    let receipts = cluster.submit_batch_blocking(batch).unwrap();
    let error = receipts[1]
        .error()
        .unwrap_or_else(|| panic!("{receipts:?}"));
    assert!(expected(error), "unexpected: {error:?}");
    assert!(
        receipts[0].is_committed() && receipts[2].is_committed(),
        "{receipts:?}"
    );
    let mut after = before;
    // The transfers alone: 1 -> 0 moves 5, 3 -> 1 moves 7.
    let coins = |account: usize| 3 * account;
    after[coins(1)] = after[coins(1)].map(|v| v - 5 + 7);
    after[coins(0)] = after[coins(0)].map(|v| v + 5);
    after[coins(3)] = after[coins(3)].map(|v| v - 7);
    assert_eq!(state(cluster), after, "after refusing {receipts:?}");
}

fn too_large(what: Limit) -> impl Fn(&TxError) -> bool {
    move |e| matches!(e, TxError::TooLarge { what: w, .. } if *w == what)
}

#[test]
fn every_rejection_leaves_the_state_of_the_valid_transactions() {
    let cluster = cluster();
    let shapes: [&[u64]; 2] = [&[0], &[0, 2]]; // local, cross-shard
    let mut n = 1_000;
    for accounts in shapes {
        let mut next = || {
            n += 10;
            n
        };
        refused_alone(&cluster, next(), hostile(next(), 1, accounts), |e| {
            matches!(e, TxError::ContractPanicked { .. })
        });
        refused_alone(
            &cluster,
            next(),
            hostile(next(), 2, accounts).with_gas_limit(10_000),
            |e| *e == TxError::OutOfGas { limit: 10_000 },
        );
        refused_alone(&cluster, next(), hostile(next(), 3, accounts), |e| {
            matches!(e, TxError::AccessViolation { .. })
        });
        let mut many_args = hostile(next(), 0, accounts);
        if let Call::Custom { args, .. } = &mut many_args.call {
            args.resize(MAX_ARGS + 1, 0);
        }
        refused_alone(&cluster, next(), many_args, too_large(Limit::Args));
        let greedy = hostile(next(), 0, accounts).with_gas_limit(gas::MAX_LIMIT + 1);
        refused_alone(&cluster, next(), greedy, too_large(Limit::Gas));
        let mut wide = hostile(next(), 0, accounts);
        wide.access = AccessSet::new(
            [],
            (0..=MAX_ACCESS_KEYS as u64).map(|slot| Key::field(AccountId(0), slot)),
        );
        refused_alone(&cluster, next(), wide, too_large(Limit::AccessKeys));
        let mut twice = hostile(next(), 0, accounts);
        // As a JSON line can carry it: the constructors would merge them.
        twice.access.reads.push(Key::field(AccountId(0), 0));
        refused_alone(&cluster, next(), twice, |e| {
            matches!(e, TxError::InvalidInput { .. })
        });
        // Coins beyond a balance; and a balance pushed past the maximum is
        // the Overflow path, which only a minted asset reaches: see below.
        let to = *accounts.last().unwrap();
        refused_alone(
            &cluster,
            next(),
            transfer(next(), 0, to.max(1), 5_000),
            |e| matches!(e, TxError::InsufficientFunds { .. }),
        );
    }
    // The calls that could run committed nothing; the cluster still serves.
    assert!(cluster
        .submit_blocking(hostile(9_999, 0, &[0, 2]))
        .unwrap()
        .is_committed());
    assert_eq!(
        cluster
            .get_many_blocking(&[Key::field(AccountId(0), 0), Key::field(AccountId(0), 1)])
            .unwrap(),
        [Some(1), None]
    );
}

/// An id given twice in one batch: the second copy is refused as in
/// flight, the first runs once; locally and across shards.
#[test]
fn a_duplicated_id_runs_once() {
    let cluster = cluster();
    for (n, to) in [(1, 1), (2, 2)] {
        let tx = transfer(n, 0, to, 10);
        let receipts = cluster.submit_batch_blocking(vec![tx.clone(), tx]).unwrap();
        assert!(receipts[0].is_committed(), "{receipts:?}");
        assert_eq!(
            receipts[1].error(),
            Some(&TxError::InFlight {
                tx: TxId::from_u128(n)
            })
        );
    }
    let coins = |a| Key::balance(AccountId(a), AssetId::COIN);
    assert_eq!(
        cluster
            .get_many_blocking(&[coins(0), coins(1), coins(2)])
            .unwrap(),
        [Some(980), Some(1_010), Some(1_010)]
    );
}

/// A token balance pushed past the largest value fails with Overflow and
/// moves nothing, locally and across shards.
#[test]
fn an_overflow_moves_nothing() {
    let cluster = cluster();
    let asset = AssetId(7);
    let setup = vec![
        Transaction::create_asset(TxId::from_u128(1), AccountId(0), asset),
        Transaction::mint(
            TxId::from_u128(2),
            AccountId(0),
            asset,
            AccountId(0),
            Value::MAX,
        ),
        Transaction::mint(TxId::from_u128(3), AccountId(0), asset, AccountId(1), 1),
        Transaction::mint(TxId::from_u128(4), AccountId(0), asset, AccountId(2), 1),
    ];
    for tx in setup {
        let receipt = cluster.submit_blocking(tx).unwrap();
        assert!(receipt.is_committed(), "{receipt:?}");
    }
    for (n, from) in [(10, 1), (11, 2)] {
        let push = Transaction::token_transfer(
            TxId::from_u128(n),
            AccountId(from),
            asset,
            AccountId(0),
            1,
        );
        let receipt = cluster.submit_blocking(push).unwrap();
        assert!(
            matches!(receipt.error(), Some(TxError::Overflow { .. })),
            "{receipt:?}"
        );
    }
    let holdings = [0, 1, 2].map(|a| Key::balance(AccountId(a), asset));
    assert_eq!(
        cluster.get_many_blocking(&holdings).unwrap(),
        [Some(Value::MAX), Some(1), Some(1)]
    );
}

/// A sender over its bound of transactions in flight: the excess of one
/// batch is refused with the bound named, the rest commit, and once the
/// batch returns the sender may send again.
#[test]
fn a_sender_over_its_bound_is_refused_the_excess() {
    let cluster = cluster();
    let batch: Vec<_> = (0..70).map(|n| transfer(100 + n, 0, 1, 1)).collect();
    let receipts = cluster.submit_batch_blocking(batch).unwrap();
    let committed = receipts.iter().filter(|r| r.is_committed()).count();
    assert_eq!(committed, 64);
    for receipt in &receipts[64..] {
        assert_eq!(
            receipt.error(),
            Some(&TxError::TooLarge {
                what: Limit::SenderInFlight,
                size: 65,
                max: 64
            })
        );
    }
    assert!(cluster
        .submit_blocking(transfer(999, 0, 2, 1))
        .unwrap()
        .is_committed());
    let coins = |a| Key::balance(AccountId(a), AssetId::COIN);
    assert_eq!(
        cluster
            .get_many_blocking(&[coins(0), coins(1), coins(2)])
            .unwrap(),
        [Some(935), Some(1_064), Some(1_001)]
    );
}
