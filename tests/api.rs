//! The calls a user meets: timeouts, partial batches, shutdown, placement
//! from an iterator, per-transaction latency.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use parashard::prelude::*;

/// Four accounts: 0 and 1 on shard 0, 2 on shard 1, 3 on shard 2, each with
/// 1,000 coins. The coordinator waits long for votes, so that a partitioned
/// shard holds a cross-shard transaction up for the whole test.
fn cluster(vote_timeout_ms: u64) -> Cluster {
    let placements = [(0, 0), (1, 0), (2, 1), (3, 2)].map(|(a, s)| (AccountId(a), ShardId(s)));
    let cluster = Cluster::builder()
        .shards(3)
        .place_all(placements)
        .coordinator(CoordinatorConfig {
            timeout_ms: vote_timeout_ms,
            ..CoordinatorConfig::default()
        })
        .fault_seed(7)
        .start()
        .unwrap();
    let genesis: Vec<_> = (0..4).map(|a| (AccountId(a), 1_000)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).unwrap();
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
}

fn transfer(id: u128, from: u64, to: u64, amount: Value) -> Transaction {
    Transaction::transfer(TxId::from_u128(id), AccountId(from), AccountId(to), amount)
}

/// `place_all` puts every account where it says.
#[test]
fn place_all_places_every_account() {
    let cluster = cluster(1_000);
    let placement = cluster.placement();
    for (account, shard) in [(0, 0), (1, 0), (2, 1), (3, 2)] {
        assert_eq!(
            placement.shard_of_account(AccountId(account)),
            ShardId(shard)
        );
    }
}

/// `place_by` puts every account it names where its rule says, and a
/// rule naming a shard that does not exist is refused at start.
#[test]
fn place_by_applies_a_rule_to_every_account() {
    let by_range = |account: AccountId| ShardId((account.0 / 100) as u32);
    let cluster = Cluster::builder()
        .shards(3)
        .place_by((0..300).map(AccountId), by_range)
        .start()
        .unwrap();
    for account in (0..300).map(AccountId) {
        assert_eq!(
            cluster.placement().shard_of_account(account),
            by_range(account)
        );
    }
    let refused = Cluster::builder()
        .shards(3)
        .place_by((0..400).map(AccountId), by_range)
        .start();
    assert!(refused.is_err(), "account 300 placed on shard 3 of 3");
}

/// A user contract that holds its shard's thread until the test opens the
/// gate: while it runs, that shard answers nothing, for certain.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

const GATE: ContractId = ContractId(40);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    fn call(id: u128, account: u64) -> Transaction {
        let key = Key::field(AccountId(account), 0);
        Transaction::custom(
            TxId::from_u128(id),
            AccountId(account),
            GATE,
            vec![],
            AccessSet::new([], [key]),
        )
    }
}

impl Contract for Gate {
    fn execute(&self, ctx: &mut Context<'_>, _args: &[Value]) -> Result<Output, TxError> {
        let (open, opened) = &*self.0;
        let mut guard = open.lock().unwrap();
        while !*guard {
            guard = opened.wait(guard).unwrap();
        }
        ctx.write(Key::field(ctx.sender(), 0), 1)?;
        Ok(1.into())
    }
}

fn gated_cluster(gate: &Gate) -> Cluster {
    let placements = [(0, 0), (1, 0), (3, 2)].map(|(a, s)| (AccountId(a), ShardId(s)));
    let cluster = Cluster::builder()
        .shards(3)
        .place_all(placements)
        .contract(GATE, "gate-1", Arc::new(gate.clone()))
        .unwrap()
        .start()
        .unwrap();
    let genesis: Vec<_> = [0, 1, 3].map(|a| (AccountId(a), 1_000)).to_vec();
    let receipts = cluster.create_accounts_blocking(&genesis).unwrap();
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
}

/// A batch part of which cannot be answered in time (its shard is held by
/// a running contract) returns, at the call's timeout, the receipts it has
/// and `Unknown` for the rest; submitted again with the same id, the held
/// transaction is answered from the commit, which applied once.
#[test]
fn a_partly_answered_batch_returns_what_it_has() {
    let gate = Gate::default();
    let cluster = gated_cluster(&gate);
    let held = Gate::call(11, 3);
    let receipts = cluster
        .within(Duration::from_secs(2))
        .submit_batch_blocking(vec![transfer(10, 0, 1, 100), held.clone()])
        .unwrap();
    assert!(receipts[0].is_committed(), "{receipts:?}");
    assert_eq!(
        receipts[1].status,
        Status::Unknown(Unanswered::TimedOut { after_ms: 2_000 }),
        "{receipts:?}"
    );
    assert!(receipts[1].is_unknown() && receipts[1].error().is_none());
    assert_eq!(cluster.metrics().unknown, 1);

    // A read of the held shard cannot be answered either: a typed timeout.
    let field = Key::field(AccountId(3), 0);
    let read = cluster
        .within(Duration::from_millis(100))
        .get_many_blocking(&[field]);
    assert!(
        matches!(read, Err(ClusterError::Timeout { after }) if after == Duration::from_millis(100)),
        "{read:?}"
    );

    gate.open();
    let again = cluster.submit_blocking(held).unwrap();
    assert_eq!(again.status, Status::Committed { output: 1.into() });
    assert_eq!(cluster.get_many_blocking(&[field]).unwrap(), vec![Some(1)]);
    let balances: Vec<_> = [0, 1]
        .map(|a| {
            cluster
                .balance_blocking(AccountId(a), AssetId::COIN)
                .unwrap()
        })
        .to_vec();
    assert_eq!(balances, [Some(900), Some(1_100)]);
}

/// A zero timeout is refused at start.
#[test]
fn a_zero_call_timeout_is_refused() {
    let zero = Cluster::builder().call_timeout(Duration::ZERO).start();
    assert!(matches!(zero, Err(ClusterError::Config(_))));
}

/// `shutdown` takes `&self`: a shared cluster can be shut down, later calls
/// get `ShutDown`, and shutting down twice is harmless.
#[test]
fn shutdown_through_a_shared_reference() {
    let cluster = Arc::new(cluster(1_000));
    let other = cluster.clone();
    other.shutdown();
    let answer = cluster.submit_blocking(transfer(20, 0, 1, 1));
    assert!(matches!(answer, Err(ClusterError::ShutDown)), "{answer:?}");
    assert!(matches!(
        cluster.get_many_blocking(&[Key::balance(AccountId(0), AssetId::COIN)]),
        Err(ClusterError::ShutDown)
    ));
    cluster.shutdown();
}

/// Dropping a cluster on a data directory shuts it down and unlocks the
/// directory: a new cluster opens it at once and finds what committed.
#[test]
fn drop_releases_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cluster = Cluster::builder()
            .shards(2)
            .data_dir(dir.path())
            .start()
            .unwrap();
        cluster
            .create_accounts_blocking(&[(AccountId(1), 77)])
            .unwrap();
    }
    let cluster = Cluster::builder()
        .shards(2)
        .data_dir(dir.path())
        .start()
        .unwrap();
    assert_eq!(
        cluster
            .balance_blocking(AccountId(1), AssetId::COIN)
            .unwrap(),
        Some(77)
    );
}

/// Latency is measured per transaction, not per batch: in one batch, local
/// transfers answered at once and a cross-shard transfer held up by a
/// partition get different latencies.
#[test]
fn latency_is_per_transaction() {
    let cluster = cluster(200);
    let before = cluster.metrics();
    // Cut shard 1 off for a while: the prepare is lost and re-sent after
    // the vote timeout, once the partition has healed by itself.
    cluster
        .faults()
        .partition(ShardId(1), Some(Duration::from_millis(300)))
        .unwrap();
    let mut batch: Vec<Transaction> = (0..50).map(|i| transfer(100 + i, 0, 1, 1)).collect();
    batch.push(transfer(200, 0, 2, 1));
    let start = Instant::now();
    let receipts = cluster.submit_batch_blocking(batch).unwrap();
    let took = start.elapsed();
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    let metrics = cluster.metrics();
    assert_eq!(metrics.committed - before.committed, 51);
    // The cross-shard transfer waited out the partition.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(metrics.latency_us_p99 >= 300_000, "{metrics:?}");
    assert!(
        metrics.latency_us_p50 < metrics.latency_us_p99,
        "the local transfers finished before the cross-shard one: {metrics:?}"
    );
    assert!(metrics.latency_us_p99 <= metrics.latency_us_p999);
}

/// `Cluster::call` builds a call with the access set its contract declares
/// for the arguments; a contract that declares none, or an unknown one, is
/// a typed error.
#[test]
fn calls_take_their_access_set_from_the_contract() {
    struct Counter;
    impl Contract for Counter {
        fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
            let (account, by): (AccountId, Value) = Args::decode(args)?;
            ctx.credit(Key::field(account, 1), by)?;
            ctx.balance(Key::field(account, 1)).map(Output::from)
        }

        fn access(&self, _sender: AccountId, args: &[Value]) -> Result<AccessSet, TxError> {
            let (account, _): (AccountId, Value) = Args::decode(args)?;
            Ok(AccessSet::new([], [Key::field(account, 1)]))
        }
    }
    const COUNTER: ContractId = ContractId(41);
    let gate = Gate::default();
    gate.open();
    let cluster = Cluster::builder()
        .shards(2)
        .contract(COUNTER, "counter-1", Arc::new(Counter))
        .unwrap()
        .contract(GATE, "gate-1", Arc::new(gate))
        .unwrap()
        .start()
        .unwrap();
    let call = cluster
        .call(AccountId(1), COUNTER, (AccountId(5), 3 as Value).encode())
        .unwrap();
    assert_eq!(
        call.access,
        AccessSet::new([], [Key::field(AccountId(5), 1)])
    );
    let receipt = cluster.submit_blocking(call).unwrap();
    assert_eq!(receipt.status, Status::Committed { output: 3.into() });
    assert!(matches!(
        cluster.call(AccountId(1), COUNTER, vec![5]),
        Err(TxError::InvalidInput { .. })
    ));
    assert!(matches!(
        cluster.call(AccountId(1), GATE, vec![]),
        Err(TxError::InvalidInput { reason }) if reason.contains("does not declare")
    ));
    assert_eq!(
        cluster
            .call(AccountId(1), ContractId(99), vec![])
            .unwrap_err(),
        TxError::UnknownContract {
            contract: ContractId(99)
        }
    );
}

/// A contract that returns `args[0]` words: the sender's balance, then
/// 1, 2, 3, ... It moves one coin from the sender to account `args[1]`,
/// so that the call is local or cross-shard as the test places it.
struct Words;

const WORDS: ContractId = ContractId(41);

impl Contract for Words {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let (count, to): (Value, AccountId) = Args::decode(args)?;
        let from = Key::balance(ctx.sender(), AssetId::COIN);
        ctx.debit(from, 1)?;
        ctx.credit(Key::balance(to, AssetId::COIN), 1)?;
        let balance = ctx.balance(from)?;
        Ok(Output::from_words(std::iter::once(balance).chain(1..count)))
    }

    fn access(&self, sender: AccountId, args: &[Value]) -> Result<AccessSet, TxError> {
        let (_, to): (Value, AccountId) = Args::decode(args)?;
        let coin = |account| Key::balance(account, AssetId::COIN);
        Ok(AccessSet::new([], [coin(sender), coin(to)]))
    }
}

/// A contract's several output words reach the receipt whole, locally and
/// through 2PC, and a retry with the same id is answered with the same
/// words from the commit memory without running again; more words than
/// `MAX_OUTPUT_WORDS` fail the call with a typed error and write nothing.
#[test]
fn outputs_of_several_words_reach_the_receipt_and_its_retry() {
    let placements = [(0, 0), (1, 0), (2, 1)].map(|(a, s)| (AccountId(a), ShardId(s)));
    let cluster = Cluster::builder()
        .shards(2)
        .place_all(placements)
        .contract(WORDS, "words-1", Arc::new(Words))
        .unwrap()
        .start()
        .unwrap();
    let genesis: Vec<_> = (0..3).map(|a| (AccountId(a), 1_000)).collect();
    cluster.create_accounts_blocking(&genesis).unwrap();
    let local = cluster
        .call(AccountId(0), WORDS, (3u64, AccountId(1)).encode())
        .unwrap();
    let cross = cluster
        .call(AccountId(0), WORDS, (2u64, AccountId(2)).encode())
        .unwrap();
    let receipts = cluster
        .submit_batch_blocking(vec![local.clone(), cross.clone()])
        .unwrap();
    let words = |receipt: &Receipt| match &receipt.status {
        Status::Committed { output } => output.words().to_vec(),
        other => panic!("not committed: {other}"),
    };
    let (first, second) = (words(&receipts[0]), words(&receipts[1]));
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 2);
    assert_eq!(first[1..], [1, 2]);
    assert_eq!(second[1..], [1]);
    // One of them saw the other's debit: balances 999 and 998, in some order.
    let mut seen = [first[0], second[0]];
    seen.sort();
    assert_eq!(seen, [998, 999]);
    let (amount_left, one): (Value, Value) = match &receipts[1].status {
        Status::Committed { output } => output.decode().unwrap(),
        other => panic!("not committed: {other}"),
    };
    assert_eq!((amount_left, one), (second[0], 1));

    let retried = cluster.submit_batch_blocking(vec![local, cross]).unwrap();
    assert_eq!(retried, receipts);
    assert_eq!(
        cluster
            .balance_blocking(AccountId(0), AssetId::COIN)
            .unwrap(),
        Some(998),
        "a retry ran again"
    );

    let too_many = (model_max_words() as u64 + 1, AccountId(1)).encode();
    let receipt = cluster
        .submit_blocking(cluster.call(AccountId(0), WORDS, too_many).unwrap())
        .unwrap();
    assert!(
        matches!(
            receipt.error(),
            Some(TxError::TooLarge {
                size: 9,
                max: 8,
                ..
            })
        ),
        "{receipt:?}"
    );
    assert_eq!(
        cluster
            .balance_blocking(AccountId(0), AssetId::COIN)
            .unwrap(),
        Some(998),
        "a refused output wrote"
    );
}

fn model_max_words() -> usize {
    parashard::protocols::model::MAX_OUTPUT_WORDS
}
