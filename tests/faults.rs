//! The fault-injection API through the public Cluster API: a crash armed
//! at each named 2PC point, on in-memory and on-disk storage.

mod common;

use std::time::{Duration, Instant};

use parashard::prelude::*;
use parashard::protocols::twopc::CoordinatorConfig;
use parashard::{failed, CrashPoint, FaultError};

const BALANCE: Value = 1_000;
const AMOUNT: Value = 10;

/// A two-shard cluster with account 0 on shard 0 and account 1 on shard
/// 1, both funded; on disk under `dir` if given.
fn two_shards(dir: Option<&std::path::Path>) -> Cluster {
    let mut builder = Cluster::builder()
        .shards(2)
        .place(AccountId(0), ShardId(0))
        .place(AccountId(1), ShardId(1))
        .fault_seed(7)
        .coordinator(CoordinatorConfig {
            timeout_ms: 300,
            ..CoordinatorConfig::default()
        });
    if let Some(dir) = dir {
        builder = builder.data_dir(dir);
    }
    let cluster = builder.start().expect("cluster starts");
    let receipts = cluster
        .create_accounts_blocking(&[(AccountId(0), BALANCE), (AccountId(1), BALANCE)])
        .expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
}

/// What the cluster should end with after a crash at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Applied,
    NotApplied,
}

/// The outcome each crash point leads to, given the protocol: a decision
/// that was logged is carried out; one that was not is presumed aborted.
fn expected(point: CrashPoint) -> Expect {
    match point {
        // The vote never leaves, but the lock is in the log: at its vote
        // deadline the coordinator sends the prepare again, and the
        // restarted shard votes from the lock it recovered.
        CrashPoint::BeforeVote => Expect::Applied,
        // The lock survives in the log; the commit arrives after restart.
        CrashPoint::AfterVote => Expect::Applied,
        // The coordinator re-sends the unacknowledged commit.
        CrashPoint::BeforeCommitApplied | CrashPoint::AfterCommitApplied => Expect::Applied,
        // No decision in the log: presumed abort.
        CrashPoint::BeforeDecisionLogged => Expect::NotApplied,
        // The restarted coordinator re-drives its logged decision.
        CrashPoint::AfterDecisionLogged | CrashPoint::AfterCommitsSent => Expect::Applied,
        other => panic!("no expectation for {other}"),
    }
}

/// Arms a crash at `point` (on `shard`, or the coordinator), submits one
/// cross-shard transfer, heals, waits for quiet and checks that the
/// transfer is applied on both shards or on neither, as the receipt says
/// and as the point implies; then that the accounts still take transfers.
fn crash_at(point: CrashPoint, shard: Option<ShardId>, dir: Option<&std::path::Path>) {
    let cluster = two_shards(dir);
    let what = format!(
        "{point} on {shard:?} (disk: {}, seed {})",
        dir.is_some(),
        cluster.faults().seed()
    );
    match shard {
        Some(shard) => cluster.faults().crash_shard_at(shard, point).unwrap(),
        None => cluster.faults().crash_coordinator_at(point).unwrap(),
    }
    let answer = cluster.submit_blocking(Transaction::transfer(
        TxId::from_u128(1),
        AccountId(0),
        AccountId(1),
        AMOUNT,
    ));
    assert_eq!(
        cluster.faults().stats().crashes,
        1,
        "{what}: the crash fired"
    );
    cluster.heal();
    common::wait_quiet(&cluster, Duration::from_secs(20))
        .unwrap_or_else(|last| panic!("{what}: never quiet: {last:?}"));
    let balances = common::balances(&cluster, 2);
    let outcome = if balances == [BALANCE - AMOUNT, BALANCE + AMOUNT] {
        Expect::Applied
    } else if balances == [BALANCE, BALANCE] {
        Expect::NotApplied
    } else {
        panic!("{what}: half applied or worse: {balances:?}");
    };
    match &answer {
        // The shard or coordinator went away before answering.
        Ok(receipt) if receipt.is_unknown() => {}
        Ok(receipt) if receipt.is_committed() => {
            assert_eq!(
                outcome,
                Expect::Applied,
                "{what}: committed receipt, {balances:?}"
            )
        }
        Ok(receipt) => assert_eq!(
            outcome,
            Expect::NotApplied,
            "{what}: failed receipt {receipt:?}, {balances:?}"
        ),
        Err(ClusterError::Unavailable(_)) => {}
        Err(other) => panic!("{what}: unexpected error {other}"),
    }
    assert_eq!(outcome, expected(point), "{what}: {answer:?}");
    // No stale lock: the accounts take the next transfer at once.
    let receipt = cluster
        .submit_blocking(Transaction::transfer(
            TxId::from_u128(2),
            AccountId(1),
            AccountId(0),
            1,
        ))
        .unwrap();
    assert!(receipt.is_committed(), "{what}: {receipt:?}");
    let total: Value = common::balances(&cluster, 2).iter().sum();
    assert_eq!(total, 2 * BALANCE, "{what}: conserved");
}

/// Runs [`crash_at`] for `point` on every shard it applies to (or the
/// coordinator), in memory and on disk.
fn crash_at_everywhere(point: CrashPoint) {
    let targets: Vec<Option<ShardId>> = if point.is_shard_point() {
        vec![Some(ShardId(0)), Some(ShardId(1))]
    } else {
        vec![None]
    };
    for target in targets {
        crash_at(point, target, None);
        let dir = tempfile::tempdir().unwrap();
        crash_at(point, target, Some(dir.path()));
    }
}

/// A shard that crashes with its locks logged but its vote unsent makes
/// the transfer abort everywhere.
#[test]
fn crash_before_vote() {
    crash_at_everywhere(CrashPoint::BeforeVote);
}

/// A shard that crashes right after voting commits after its restart.
#[test]
fn crash_after_vote() {
    crash_at_everywhere(CrashPoint::AfterVote);
}

/// A shard that crashes on receiving the commit gets it again.
#[test]
fn crash_before_commit_applied() {
    crash_at_everywhere(CrashPoint::BeforeCommitApplied);
}

/// A shard that crashes after applying a commit, before acknowledging it,
/// applies it exactly once although the commit is re-sent.
#[test]
fn crash_after_commit_applied() {
    crash_at_everywhere(CrashPoint::AfterCommitApplied);
}

/// A coordinator that crashes before logging its decision leaves the
/// transfer aborted everywhere (presumed abort).
#[test]
fn crash_before_decision_logged() {
    crash_at_everywhere(CrashPoint::BeforeDecisionLogged);
}

/// A coordinator that crashes after logging its decision carries it out
/// after its restart.
#[test]
fn crash_after_decision_logged() {
    crash_at_everywhere(CrashPoint::AfterDecisionLogged);
}

/// A coordinator that crashes after sending its commits, before replying,
/// leaves the transfer applied exactly once.
#[test]
fn crash_after_commits_sent() {
    crash_at_everywhere(CrashPoint::AfterCommitsSent);
}

/// Bad fault input through the cluster handle gets typed errors.
#[test]
fn fault_api_rejects_bad_input() {
    let cluster = two_shards(None);
    assert!(matches!(
        cluster
            .faults()
            .crash_shard_at(ShardId(5), CrashPoint::AfterVote),
        Err(FaultError::UnknownShard { .. })
    ));
    assert!(matches!(
        cluster
            .faults()
            .crash_coordinator_at(CrashPoint::BeforeVote),
        Err(FaultError::WrongTarget { .. })
    ));
    assert!(matches!(
        cluster.faults().slow(ShardId(2), 5),
        Err(FaultError::UnknownShard { .. })
    ));
    assert!(matches!(
        cluster.crash_shard(ShardId(2)),
        Err(ClusterError::Fault(FaultError::UnknownShard { .. }))
    ));
    assert!(cluster.faults().armed_crashes().is_empty());
}

/// A partitioned shard makes cross-shard transfers through it abort (not
/// half-apply), and after heal they commit again.
#[test]
fn partition_aborts_then_heals() {
    let cluster = two_shards(None);
    cluster.faults().partition(ShardId(1), None).unwrap();
    let receipt = cluster
        .submit_blocking(Transaction::transfer(
            TxId::from_u128(1),
            AccountId(0),
            AccountId(1),
            AMOUNT,
        ))
        .unwrap();
    assert!(failed(&receipt), "{receipt:?}");
    assert!(cluster.faults().stats().dropped > 0);
    cluster.heal();
    common::wait_quiet(&cluster, Duration::from_secs(20)).expect("quiet");
    assert_eq!(common::balances(&cluster, 2), vec![BALANCE, BALANCE]);
    let receipt = cluster
        .submit_blocking(Transaction::transfer(
            TxId::from_u128(2),
            AccountId(0),
            AccountId(1),
            AMOUNT,
        ))
        .unwrap();
    assert!(receipt.is_committed(), "{receipt:?}");
    assert_eq!(
        common::balances(&cluster, 2),
        vec![BALANCE - AMOUNT, BALANCE + AMOUNT]
    );
}

/// With every message batch duplicated and many delayed and reordered
/// (none lost), each transfer is still applied exactly once if its
/// receipt says committed and not at all if it says failed.
#[test]
fn duplicated_and_reordered_messages_apply_once() {
    let cluster = Cluster::builder()
        .shards(3)
        .fault_seed(11)
        .start()
        .expect("cluster starts");
    let accounts = 12u64;
    let genesis: Vec<_> = (0..accounts).map(|a| (AccountId(a), BALANCE)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
        .faults()
        .set_link_faults(parashard::LinkFaults {
            duplicate: 1.0,
            delay: 0.5,
            delay_ms: 1..=15,
            reorder: 0.5,
            ..Default::default()
        })
        .unwrap();
    let mut log = Vec::new();
    let mut rng = parashard::protocols::workload::Rng::new(11);
    for batch in 0..10u128 {
        let txs: Vec<Transaction> = (0..20u128)
            .map(|i| {
                let from = rng.below(accounts);
                let to = (from + 1 + rng.below(accounts - 1)) % accounts;
                Transaction::transfer(
                    TxId::from_u128(batch * 100 + i),
                    AccountId(from),
                    AccountId(to),
                    1 + rng.below(7),
                )
            })
            .collect();
        let answer = cluster.submit_batch_blocking(txs.clone());
        common::record_batch(&txs, answer, &mut log);
    }
    let stats = cluster.faults().stats();
    assert!(stats.duplicated > 0 && stats.reordered > 0, "{stats:?}");
    cluster.heal();
    common::wait_quiet(&cluster, Duration::from_secs(20)).expect("quiet");
    assert!(
        log.iter().all(|s| s.outcome != common::Outcome::Unknown),
        "no crash, so every receipt arrives"
    );
    let balances = common::balances(&cluster, accounts);
    common::explain_balances(&vec![BALANCE; accounts as usize], &balances, &log)
        .unwrap_or_else(|e| panic!("seed 11: {e}"));
    assert!(log.iter().any(|s| s.outcome == common::Outcome::Committed));
}

/// Regression: a shard restarted from a snapshot forgot which transactions
/// it had finished, so a late duplicate of a committed transaction's
/// prepare locked it again and the duplicate commit behind it re-applied
/// its (absolute) writes over a later local transfer, creating coins.
/// Here every batch to and from shard 1 is duplicated 800 ms late, shard 1
/// crashes after applying the commit (with a snapshot after every
/// record), and a local transfer on shard 1 runs before the duplicates
/// arrive; the total must stay conserved.
#[test]
fn late_duplicate_prepare_after_snapshot_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::builder()
        .shards(2)
        .place(AccountId(0), ShardId(0))
        .place(AccountId(1), ShardId(1))
        .place(AccountId(2), ShardId(1))
        .fault_seed(5)
        .data_dir(dir.path())
        .snapshot_policy(parashard::SnapshotPolicy {
            log_bytes: u64::MAX,
            log_records: 1,
        })
        .start()
        .expect("cluster starts");
    let genesis = [
        (AccountId(0), BALANCE),
        (AccountId(1), BALANCE),
        (AccountId(2), BALANCE),
    ];
    let receipts = cluster.create_accounts_blocking(&genesis).expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
        .faults()
        .set_link_faults(parashard::LinkFaults {
            duplicate: 1.0,
            delay_ms: 800..=800,
            shards: Some(vec![ShardId(1)]),
            ..Default::default()
        })
        .unwrap();
    cluster
        .faults()
        .crash_shard_at(ShardId(1), CrashPoint::AfterCommitApplied)
        .unwrap();
    let mut log = Vec::new();
    std::thread::scope(|scope| {
        let cluster = &cluster;
        let cross = scope.spawn(move || {
            let tx = Transaction::transfer(TxId::from_u128(1), AccountId(0), AccountId(1), AMOUNT);
            (tx.clone(), cluster.submit_batch_blocking(vec![tx]))
        });
        // After the commit and the restart, before the late duplicates:
        // the crash fired, shard 1 answers again, and the duplicates are
        // still held back.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.faults().stats().crashes == 0
            || cluster
                .get_many_blocking(&[Key::balance(AccountId(1), AssetId::COIN)])
                .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "shard 1 never crashed and came back"
            );
            std::thread::yield_now();
        }
        assert!(
            cluster.faults().in_transit() > 0,
            "the late duplicates are still to come"
        );
        let local = Transaction::transfer(TxId::from_u128(2), AccountId(1), AccountId(2), 50);
        let answer = cluster.submit_batch_blocking(vec![local.clone()]);
        common::record_batch(&[local], answer, &mut log);
        let (tx, answer) = cross.join().unwrap();
        common::record_batch(&[tx], answer, &mut log);
    });
    assert_eq!(cluster.faults().stats().crashes, 1, "the crash fired");
    // Let the late duplicates arrive before healing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.faults().in_transit() > 0 {
        assert!(Instant::now() < deadline, "late duplicates never arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    cluster.heal();
    common::wait_quiet(&cluster, Duration::from_secs(20)).expect("quiet");
    let balances = common::balances(&cluster, 3);
    assert_eq!(
        balances.iter().sum::<Value>(),
        3 * BALANCE,
        "conserved: {balances:?} {log:?}"
    );
    common::explain_balances(&[BALANCE; 3], &balances, &log)
        .unwrap_or_else(|e| panic!("{e}: {balances:?} {log:?}"));
}
