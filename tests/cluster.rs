//! Integration tests of the whole system through the public Cluster API.

mod common;

use std::time::{Duration, Instant};

use parashard::prelude::*;
use parashard::protocols::workload::{Rng, TxIds};

/// Local and cross-shard transfers both commit and move exactly the amounts
/// asked, checked against a model of the balances.
#[test]
fn local_and_cross_shard_transfers_commit() {
    let cluster = common::bank(4, 16, 1_000);
    let placement = cluster.placement().clone();
    let mut model = vec![1_000u64; 16];
    let mut txs = Vec::new();
    let (mut local, mut cross) = (0, 0);
    for a in 0..16u64 {
        let b = (a * 7 + 3) % 16;
        if a == b {
            continue;
        }
        if placement.shard_of_account(AccountId(a)) == placement.shard_of_account(AccountId(b)) {
            local += 1;
        } else {
            cross += 1;
        }
        txs.push(Transaction::transfer(
            TxId::random(),
            AccountId(a),
            AccountId(b),
            10 + a,
        ));
        model[a as usize] -= 10 + a;
        model[b as usize] += 10 + a;
    }
    assert!(
        local > 0 && cross > 0,
        "the batch mixes both paths: {local} local, {cross} cross"
    );
    let receipts = cluster.submit_batch_blocking(txs).unwrap();
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    assert_eq!(common::balances(&cluster, 16), model);
    assert_eq!(cluster.metrics().committed, 16 + receipts.len() as u64);
}

/// A cross-shard transfer without the funds aborts on every shard: both
/// balances stay, and the locks are released (the next transfer commits).
#[test]
fn cross_shard_insufficient_funds_aborts_everywhere() {
    let cluster = common::bank(4, 16, 100);
    let (a, b) = common::cross_pair(&cluster, 16);
    let receipt = cluster
        .submit_blocking(Transaction::transfer(TxId::random(), a, b, 101))
        .unwrap();
    assert!(
        matches!(
            receipt.error(),
            Some(TxError::InsufficientFunds {
                needed: 101,
                available: 100,
                ..
            })
        ),
        "{receipt:?}"
    );
    let keys = [
        Key::balance(a, AssetId::COIN),
        Key::balance(b, AssetId::COIN),
    ];
    assert_eq!(
        cluster.get_many_blocking(&keys).unwrap(),
        vec![Some(100), Some(100)]
    );
    let receipt = cluster
        .submit_blocking(Transaction::transfer(TxId::random(), a, b, 100))
        .unwrap();
    assert!(receipt.is_committed(), "{receipt:?}");
    assert_eq!(
        cluster.get_many_blocking(&keys).unwrap(),
        vec![Some(0), Some(200)]
    );
}

/// Concurrent conflicting transfers over a few hot accounts on several
/// shards, from several client threads, conserve the total and apply
/// exactly the committed ones (checked by replaying the receipts).
#[test]
fn concurrent_conflicting_transfers_conserve_value() {
    let accounts = 6u64;
    let cluster = common::bank(3, accounts, 10_000);
    let seed = 42;
    let mut committed_effect = vec![0i128; accounts as usize];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|client| {
                let cluster = &cluster;
                scope.spawn(move || {
                    let mut rng = Rng::new(seed + client);
                    let mut ids = TxIds::starting_at(u128::from(client) << 64);
                    let mut effect = vec![0i128; accounts as usize];
                    for _ in 0..20 {
                        let txs = parashard::protocols::workload::transfers(
                            &mut rng, &mut ids, accounts, 25, 400,
                        );
                        let receipts = cluster.submit_batch_blocking(txs.clone()).expect("submit");
                        for (tx, receipt) in txs.iter().zip(&receipts) {
                            assert_eq!(tx.id, receipt.tx_id, "seed {seed}");
                            if receipt.is_committed() {
                                let Call::Transfer { to, amount } = tx.call else {
                                    unreachable!()
                                };
                                effect[tx.sender.0 as usize] -= i128::from(amount);
                                effect[to.0 as usize] += i128::from(amount);
                            }
                        }
                    }
                    effect
                })
            })
            .collect();
        for handle in handles {
            for (total, e) in committed_effect.iter_mut().zip(handle.join().unwrap()) {
                *total += e;
            }
        }
    });
    let balances = common::balances(&cluster, accounts);
    assert_eq!(
        balances.iter().sum::<u64>(),
        10_000 * accounts,
        "seed {seed}: total conserved"
    );
    let expected: Vec<u64> = committed_effect
        .iter()
        .map(|e| (10_000 + e) as u64)
        .collect();
    assert_eq!(
        balances, expected,
        "seed {seed}: exactly the committed transfers applied"
    );
}

/// A shard crashed and restarted by its supervisor comes back with every
/// committed transaction (local and cross-shard), and keeps serving.
#[test]
fn crashed_shard_recovers_committed_state() {
    let cluster = common::bank(2, 8, 1_000);
    let mut rng = Rng::new(7);
    let mut ids = TxIds::starting_at(1 << 100);
    let txs = parashard::protocols::workload::transfers(&mut rng, &mut ids, 8, 200, 50);
    let receipts = cluster.submit_batch_blocking(txs).unwrap();
    assert!(receipts.iter().all(Receipt::is_committed));
    let before = common::balances(&cluster, 8);
    for shard in [ShardId(0), ShardId(1)] {
        cluster.crash_shard(shard).unwrap();
    }
    // Reads queue behind the restart in the shard's mailbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match cluster.get_many_blocking(&[Key::balance(AccountId(0), AssetId::COIN)]) {
            Ok(_) => break common::balances(&cluster, 8),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("shard never came back: {e}"),
        }
    };
    assert_eq!(after, before);
    let (a, b) = common::cross_pair(&cluster, 8);
    let receipt = cluster
        .submit_blocking(Transaction::transfer(TxId::random(), a, b, 1))
        .unwrap();
    assert!(receipt.is_committed(), "{receipt:?}");
}

/// Accounts of the snapshotting tests.
const SNAP_ACCOUNTS: u64 = 12;

/// Three shards whose logs (in memory) snapshot every `log_records`
/// records, with accounts `0..SNAP_ACCOUNTS` holding 1,000 each.
fn snapshotting_bank(log_records: u64) -> Cluster {
    let cluster = Cluster::builder()
        .shards(3)
        .workers(1)
        .snapshot_policy(parashard::SnapshotPolicy {
            log_bytes: u64::MAX,
            log_records,
        })
        .start()
        .expect("cluster starts");
    let genesis: Vec<_> = (0..SNAP_ACCOUNTS).map(|a| (AccountId(a), 1_000)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
}

/// Submits a seeded batch of transfers, asserts they all commit and
/// applies them to `model`; returns them with their receipts.
fn committed_transfers(
    cluster: &Cluster,
    workload: &mut (Rng, TxIds),
    model: &mut [Value],
) -> (Vec<Transaction>, Vec<Receipt>) {
    let (rng, ids) = workload;
    let txs = parashard::protocols::workload::transfers(rng, ids, SNAP_ACCOUNTS, 30, 20);
    let receipts = cluster.submit_batch_blocking(txs.clone()).unwrap();
    apply_committed(&txs, &receipts, model);
    (txs, receipts)
}

/// Asserts that every transfer of `txs` committed and applies them to
/// `model`.
fn apply_committed(txs: &[Transaction], receipts: &[Receipt], model: &mut [Value]) {
    for (tx, receipt) in txs.iter().zip(receipts) {
        assert!(receipt.is_committed(), "{receipt:?}");
        let Call::Transfer { to, amount } = tx.call else {
            unreachable!("transfers only")
        };
        model[tx.sender.0 as usize] -= amount;
        model[to.0 as usize] += amount;
    }
}

/// Crashes every shard and the coordinator, then waits until a cross-shard
/// transfer commits again (applied to `model`).
fn crash_everything(cluster: &Cluster, model: &mut [Value]) {
    for shard in 0..cluster.placement().shards() {
        cluster.crash_shard(ShardId(shard)).unwrap();
    }
    cluster.crash_coordinator();
    common::cross_transfer_once_back(cluster, SNAP_ACCOUNTS, model);
}

/// In-memory logs snapshot by the cluster's policy (they would otherwise
/// keep every record for the cluster's life), and shards and the
/// coordinator crashed after many snapshots recover from snapshot plus
/// tail: balances equal a model of every committed transfer, and the
/// cluster goes on committing.
#[test]
fn in_memory_logs_snapshot_and_recover_from_snapshots() {
    let cluster = snapshotting_bank(16);
    let mut model = vec![1_000u64; SNAP_ACCOUNTS as usize];
    let mut workload = (Rng::new(41), TxIds::starting_at(1 << 90));
    for _ in 0..10 {
        committed_transfers(&cluster, &mut workload, &mut model);
    }
    let stats = cluster.storage_stats();
    assert!(stats.shards.snapshots >= 3, "{stats:?}");
    assert!(stats.coordinator.snapshots >= 1, "{stats:?}");
    crash_everything(&cluster, &mut model);
    let balances = common::balances(&cluster, SNAP_ACCOUNTS);
    assert_eq!(balances, model, "after the crashes");
    for _ in 0..3 {
        committed_transfers(&cluster, &mut workload, &mut model);
    }
    let balances = common::balances(&cluster, SNAP_ACCOUNTS);
    assert_eq!(balances, model, "and after more");
}

/// With the default policy an in-memory log is bounded by the memory its
/// records hold, not only by their count: a block record holds the writes
/// of thousands of transactions, so a count of records alone let a shard's
/// log keep every write of the cluster's life. 300,000 local transfers
/// (about 21 MiB of records, against a 16 MiB bound) make the shard
/// snapshot, and a crashed shard recovers from snapshot plus tail.
#[test]
fn in_memory_logs_are_bounded_by_their_records_size() {
    const ACCOUNTS: u64 = 1_000;
    let cluster = common::bank(1, ACCOUNTS, 1 << 40);
    let mut model = vec![1u64 << 40; ACCOUNTS as usize];
    let (mut rng, mut ids) = (Rng::new(7), TxIds::starting_at(1 << 80));
    for _ in 0..30 {
        let txs =
            parashard::protocols::workload::transfers(&mut rng, &mut ids, ACCOUNTS, 10_000, 100);
        let receipts = cluster.submit_batch_blocking(txs.clone()).unwrap();
        apply_committed(&txs, &receipts, &mut model);
    }
    let stats = cluster.storage_stats();
    // Each committed transfer's record holds its id and output and two
    // written balances.
    let per_transfer =
        std::mem::size_of::<(TxId, Value)>() + 2 * std::mem::size_of::<(Key, Value)>();
    let at_least = 300_000 * per_transfer as u64;
    assert!(stats.shards.bytes >= at_least, "{stats:?}");
    assert!(stats.shards.snapshots >= 1, "{stats:?}");
    cluster.crash_shard(ShardId(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let balances = loop {
        let keys: Vec<Key> = (0..ACCOUNTS)
            .map(|a| Key::balance(AccountId(a), AssetId::COIN))
            .collect();
        match cluster.get_many_blocking(&keys) {
            Ok(values) => break values,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => panic!("the shard never came back: {error}"),
        }
    };
    let balances: Vec<Value> = balances.into_iter().map(|v| v.expect("exists")).collect();
    assert_eq!(balances, model, "after the crash");
}

/// A transaction submitted again with the id of a commit (a client's retry
/// after a lost receipt) gets the commit's receipt and runs only once:
/// local and cross-shard alike, before and after every shard and the
/// coordinator crash and recover (from their logs, then from snapshots).
/// A failed transaction is not remembered: its retry runs again.
#[test]
fn resubmitted_commits_run_once() {
    let cluster = snapshotting_bank(40);
    let mut model = vec![1_000u64; SNAP_ACCOUNTS as usize];
    let mut workload = (Rng::new(55), TxIds::starting_at(1 << 80));
    let sent: Vec<_> = (0..6)
        .map(|_| committed_transfers(&cluster, &mut workload, &mut model))
        .collect();
    let resubmit_all = |model: &[Value], when: &str| {
        for (txs, receipts) in &sent {
            let again = cluster.submit_batch_blocking(txs.clone()).unwrap();
            assert_eq!(&again, receipts, "{when}: the same receipts");
        }
        let balances = common::balances(&cluster, SNAP_ACCOUNTS);
        assert_eq!(balances, model, "{when}: ran once");
    };
    resubmit_all(&model, "live");
    let stats = cluster.storage_stats();
    assert!(
        stats.shards.snapshots > 0 && stats.coordinator.snapshots > 0,
        "{stats:?}"
    );
    crash_everything(&cluster, &mut model);
    resubmit_all(&model, "after the crashes");

    let (a, b) = common::cross_pair(&cluster, SNAP_ACCOUNTS);
    let too_much = Transaction::transfer(TxId::random(), a, b, model[a.0 as usize] + 1);
    let failed = cluster.submit_blocking(too_much.clone()).unwrap();
    assert!(!failed.is_committed(), "{failed:?}");
    let top_up = Transaction::transfer(TxId::random(), b, a, 1);
    assert!(cluster.submit_blocking(top_up).unwrap().is_committed());
    let retried = cluster.submit_blocking(too_much).unwrap();
    assert!(
        retried.is_committed(),
        "a failed id runs again: {retried:?}"
    );
}

/// A local batch that mixes new transactions, a retry of a committed one
/// and an id given twice is answered in batch order: the retry gets the
/// commit's receipt without running, the second copy of the doubled id is
/// refused as in flight, and each of the others runs once.
#[test]
fn a_local_batch_answers_retries_and_duplicates_in_order() {
    let mut builder = Cluster::builder().shards(2).workers(1);
    for a in 0..3 {
        builder = builder.place(AccountId(a), ShardId(0));
    }
    let cluster = builder.start().expect("cluster starts");
    let genesis: Vec<_> = (0..3).map(|a| (AccountId(a), 1_000)).collect();
    cluster.create_accounts_blocking(&genesis).expect("genesis");
    let pay = |id: u128, from: u64, to: u64, amount: Value| {
        Transaction::transfer(TxId::from_u128(id), AccountId(from), AccountId(to), amount)
    };
    let first = cluster.submit_blocking(pay(1, 0, 1, 10)).unwrap();
    assert!(first.is_committed(), "{first:?}");
    let batch = vec![
        pay(1, 0, 1, 10),
        pay(2, 1, 2, 20),
        pay(2, 1, 2, 20),
        pay(3, 2, 0, 5),
    ];
    let receipts = cluster.submit_batch_blocking(batch.clone()).unwrap();
    let ids: Vec<TxId> = receipts.iter().map(|r| r.tx_id).collect();
    let expected: Vec<TxId> = batch.iter().map(|tx| tx.id).collect();
    assert_eq!(ids, expected, "receipts in batch order");
    assert_eq!(receipts[0], first, "the retry gets the commit's receipt");
    assert!(receipts[1].is_committed(), "{receipts:?}");
    assert!(
        matches!(receipts[2].error(), Some(e @ TxError::InFlight { tx }) if *tx == batch[2].id && e.is_retryable()),
        "{receipts:?}"
    );
    assert!(receipts[3].is_committed(), "{receipts:?}");
    // 0 paid 10 once and got 5; 1 got 10 and paid 20 once; 2 got 20, paid 5.
    assert_eq!(common::balances(&cluster, 3), vec![995, 990, 1_015]);
}

/// Bad input gets typed errors, never a hang: a duplicate id in flight, an
/// unknown account across shards, an empty access set, a bad placement.
#[test]
fn bad_input_gets_typed_errors() {
    let cluster = common::bank(2, 4, 100);
    let (a, _) = common::cross_pair(&cluster, 4);
    let tx = Transaction::transfer(TxId::random(), a, AccountId(9_999), 5);
    let receipt = cluster.submit_blocking(tx).unwrap();
    assert!(
        matches!(
            receipt.error(),
            Some(TxError::UnknownAccount {
                account: AccountId(9_999)
            })
        ),
        "{receipt:?}"
    );
    let same = Transaction::transfer(TxId::from_u128(77), AccountId(0), AccountId(1), 1);
    let receipts = cluster
        .submit_batch_blocking(vec![same.clone(), same])
        .unwrap();
    assert!(
        receipts
            .iter()
            .any(|r| matches!(r.error(), Some(TxError::InFlight { .. }))),
        "{receipts:?}"
    );
    assert_eq!(
        cluster.submit_batch_blocking(Vec::new()).unwrap(),
        Vec::new()
    );
    let empty = Transaction::new(
        TxId::random(),
        a,
        Call::Transfer { to: a, amount: 1 },
        AccessSet::default(),
    );
    assert!(!cluster.submit_blocking(empty).unwrap().is_committed());
    assert!(matches!(
        Cluster::builder()
            .shards(2)
            .place(AccountId(1), ShardId(5))
            .start(),
        Err(ClusterError::Placement(_))
    ));
    assert!(matches!(
        Cluster::builder().shards(0).start(),
        Err(ClusterError::Placement(_))
    ));
    assert!(matches!(
        Cluster::builder().workers(0).start(),
        Err(ClusterError::Runtime(_))
    ));
    assert!(matches!(
        Cluster::builder()
            .remember_committed(parashard::MAX_REMEMBERED + 1)
            .start(),
        Err(ClusterError::Config(_))
    ));
    // No room for any active transaction would leave every cross-shard
    // one waiting forever.
    assert!(matches!(
        Cluster::builder()
            .coordinator(parashard::protocols::twopc::CoordinatorConfig {
                max_active: 0,
                ..Default::default()
            })
            .start(),
        Err(ClusterError::Config(_))
    ));
}

/// Locks left by a coordinator crash are released: the restarted
/// coordinator has no record of the transactions that were preparing, so
/// it answers their votes and the shards' inquiries with aborts (presumed
/// abort); later transfers on the same accounts commit, and no coin is
/// created or lost. Regression: before votes without a record were
/// answered, each of the crash's queued prepares waited out an inquiry
/// timeout in turn and the accounts stayed locked for minutes.
#[test]
fn coordinator_crash_leaves_no_stale_locks() {
    let cluster = common::bank(2, 8, 1_000);
    let placement = cluster.placement().clone();
    let cross: Vec<(AccountId, AccountId)> = (0..8u64)
        .flat_map(|a| (0..8u64).map(move |b| (AccountId(a), AccountId(b))))
        .filter(|(a, b)| placement.shard_of_account(*a) != placement.shard_of_account(*b))
        .collect();
    assert!(!cross.is_empty());
    std::thread::scope(|scope| {
        let cluster = &cluster;
        let cross = &cross;
        let submitter = scope.spawn(move || {
            let txs = (0..20_000)
                .map(|i| {
                    let (a, b) = cross[i % cross.len()];
                    Transaction::transfer(TxId::random(), a, b, 1)
                })
                .collect();
            // The crash loses some answers; only the balances matter here.
            let _ = cluster.submit_batch_blocking(txs);
        });
        // Crash while the coordinator has the batch in flight.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster
            .pending_blocking()
            .is_ok_and(|p| p.coordinator_in_flight == 0)
        {
            assert!(
                Instant::now() < deadline,
                "the batch never reached the coordinator"
            );
            std::thread::yield_now();
        }
        cluster.crash_coordinator();
        submitter.join().unwrap();
    });
    // Every pair must be able to commit again once the shards have asked
    // about their stale locks (after their inquiry timeout).
    let deadline = Instant::now() + Duration::from_secs(20);
    for (a, b) in cross.iter().take(4) {
        loop {
            let tx = Transaction::transfer(TxId::random(), *a, *b, 1);
            match cluster.submit_blocking(tx) {
                Ok(receipt) if receipt.is_committed() => break,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => panic!("{a} -> {b} never committed again: {other:?}"),
            }
        }
    }
    let total: u64 = common::balances(&cluster, 8).iter().sum();
    assert_eq!(total, 8 * 1_000);
}

/// Without the memory (`remember_committed(0)`) a re-submitted transfer,
/// local or cross-shard, runs again: what the memory changes. (The shards'
/// own memory of finished cross-shard rounds keeps out late messages of the
/// first run, not a new run under the same id.)
#[test]
fn without_the_memory_a_resubmission_runs_again() {
    const ACCOUNTS: u64 = 8;
    let cluster = Cluster::builder()
        .shards(2)
        .workers(1)
        .remember_committed(0)
        .coordinator(parashard::protocols::twopc::CoordinatorConfig {
            timeout_ms: 100,
            ..parashard::protocols::twopc::CoordinatorConfig::default()
        })
        .start()
        .expect("cluster starts");
    let genesis: Vec<_> = (0..ACCOUNTS).map(|a| (AccountId(a), 1_000)).collect();
    cluster.create_accounts_blocking(&genesis).expect("genesis");
    let (a, b) = common::cross_pair(&cluster, ACCOUNTS);
    let placement = cluster.placement().clone();
    let c = (0..ACCOUNTS)
        .map(AccountId)
        .find(|&c| c != a && placement.shard_of_account(c) == placement.shard_of_account(a))
        .expect("two accounts on one shard");
    let cross = Transaction::transfer(TxId::random(), a, b, 10);
    let local = Transaction::transfer(TxId::random(), a, c, 10);
    let first = cluster
        .submit_batch_blocking(vec![cross.clone(), local.clone()])
        .unwrap();
    assert!(first.iter().all(Receipt::is_committed), "{first:?}");
    let again = cluster.submit_batch_blocking(vec![cross, local]).unwrap();
    assert!(again.iter().all(Receipt::is_committed), "{again:?}");
    let balances = common::balances(&cluster, ACCOUNTS);
    let of = |x: AccountId| balances[x.0 as usize];
    assert_eq!((of(a), of(b), of(c)), (960, 1_020, 1_020));
}

/// One admission rule: a batch the cluster admitted waits at the
/// coordinator instead of being refused by a smaller limit of its own.
/// One batch of 120,000 cross-shard transfers (above the coordinator's
/// default of 100,000 in flight) commits whole, and value is conserved.
#[test]
fn an_admitted_batch_is_never_refused_by_the_coordinator() {
    const ACCOUNTS: u64 = 1_000;
    let cluster = common::bank(2, ACCOUNTS, 1_000_000);
    let placement = cluster.placement().clone();
    let (left, right): (Vec<u64>, Vec<u64>) =
        (0..ACCOUNTS).partition(|a| placement.shard_of_account(AccountId(*a)) == ShardId(0));
    let txs: Vec<Transaction> = (0..120_000u64)
        .map(|n| {
            let from = left[(n % left.len() as u64) as usize];
            let to = right[(n / 7 % right.len() as u64) as usize];
            Transaction::transfer(
                TxId::from_u128(u128::from(n) + 1),
                AccountId(from),
                AccountId(to),
                1,
            )
        })
        .collect();
    let receipts = cluster.submit_batch_blocking(txs).unwrap();
    let failed: Vec<_> = receipts.iter().filter_map(Receipt::error).take(3).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let total: u64 = common::balances(&cluster, ACCOUNTS).iter().sum();
    assert_eq!(total, ACCOUNTS * 1_000_000);
}

/// `try_submit_batch` of a batch larger than the cluster admits at once is
/// `BatchTooLarge` naming both sizes, not an overload.
#[test]
fn try_submit_beyond_the_limit_is_batch_too_large() {
    let cluster = Cluster::builder()
        .shards(2)
        .max_in_flight(10)
        .start()
        .unwrap();
    let txs: Vec<Transaction> = (0..11)
        .map(|n| Transaction::create_account(TxId::from_u128(n + 1), AccountId(n as u64), 1))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(cluster.try_submit_batch(txs));
    assert!(
        matches!(
            answer,
            Err(ClusterError::BatchTooLarge { len: 11, max: 10 })
        ),
        "{answer:?}"
    );
}
