//! Integration tests of on-disk storage through the public Cluster API:
//! restarts on the same data directory, crashes, snapshots, damaged logs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use parashard::prelude::*;
use parashard::protocols::workload::{Rng, TxIds};
use parashard::{SnapshotPolicy, StorageError};

const ACCOUNTS: u64 = 24;
const BALANCE: Value = 1_000_000;

fn start(dir: &Path, shards: u32, policy: SnapshotPolicy) -> Cluster {
    Cluster::builder()
        .shards(shards)
        .workers(1)
        .data_dir(dir)
        .snapshot_policy(policy)
        .start()
        .expect("cluster starts")
}

/// A cluster on `dir` whose accounts `0..ACCOUNTS` hold `BALANCE` each.
fn bank_on(dir: &Path, shards: u32, policy: SnapshotPolicy) -> Cluster {
    let cluster = start(dir, shards, policy);
    let genesis: Vec<_> = (0..ACCOUNTS).map(|a| (AccountId(a), BALANCE)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
}

/// Submits `batches` seeded batches of transfers (local and cross-shard),
/// asserts every one commits and returns the balances they must leave.
fn transfer_batches(cluster: &Cluster, seed: u64, batches: usize, model: &mut [Value]) {
    let mut rng = Rng::new(seed);
    let mut ids = TxIds::starting_at(u128::from(seed) << 64);
    let placement = cluster.placement().clone();
    let (mut local, mut cross) = (0, 0);
    for _ in 0..batches {
        let txs = parashard::protocols::workload::transfers(&mut rng, &mut ids, ACCOUNTS, 40, 50);
        for tx in &txs {
            let Call::Transfer { to, amount } = tx.call else {
                unreachable!()
            };
            model[tx.sender.0 as usize] -= amount;
            model[to.0 as usize] += amount;
            if placement.shard_of_account(tx.sender) == placement.shard_of_account(to) {
                local += 1;
            } else {
                cross += 1;
            }
        }
        let receipts = cluster.submit_batch_blocking(txs).expect("submit");
        assert!(
            receipts.iter().all(Receipt::is_committed),
            "seed {seed}: {receipts:?}"
        );
    }
    assert!(
        local > 0 && cross > 0,
        "seed {seed}: {local} local, {cross} cross"
    );
}

/// Reads balances until the shards answer (they may be restarting).
fn balances_eventually(cluster: &Cluster) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cluster.get_many_blocking(&[Key::balance(AccountId(0), AssetId::COIN)]) {
            Ok(_) => return common::balances(cluster, ACCOUNTS),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("shards never came back: {e}"),
        }
    }
}

/// A whole cluster shut down and started again on the same data directory
/// keeps the balances of every committed local and cross-shard transfer,
/// and goes on committing (checked against a model, twice over).
#[test]
fn restarted_cluster_keeps_committed_balances() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 3, SnapshotPolicy::default());
    transfer_batches(&cluster, 1, 5, &mut model);
    assert_eq!(common::balances(&cluster, ACCOUNTS), model);
    let stats = cluster.storage_stats();
    assert!(
        stats.shards.syncs > 0 && stats.coordinator.syncs > 0,
        "{stats:?}"
    );
    cluster.shutdown();

    let cluster = start(dir.path(), 3, SnapshotPolicy::default());
    assert_eq!(
        balances_eventually(&cluster),
        model,
        "after the first restart"
    );
    transfer_batches(&cluster, 2, 3, &mut model);
    cluster.shutdown();

    let cluster = start(dir.path(), 3, SnapshotPolicy::default());
    assert_eq!(
        balances_eventually(&cluster),
        model,
        "after the second restart"
    );
    assert_eq!(
        cluster.storage_stats().shards.appends,
        0,
        "reads append nothing"
    );
}

/// Every append is one sync: a cluster's shard and coordinator logs sync
/// once per batch they log, never once per transaction.
#[test]
fn one_sync_per_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 2, SnapshotPolicy::NEVER);
    transfer_batches(&cluster, 3, 4, &mut model);
    let stats = cluster.storage_stats();
    for log in [stats.shards, stats.coordinator] {
        assert_eq!(log.syncs, log.appends, "{stats:?}");
        assert!(log.records > log.appends, "{stats:?}: batches of records");
    }
}

/// Shards crashed and restarted by their supervisors recover every
/// committed transaction from disk and keep serving.
#[test]
fn crashed_shard_recovers_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 2, SnapshotPolicy::default());
    transfer_batches(&cluster, 4, 3, &mut model);
    for shard in [ShardId(0), ShardId(1)] {
        cluster.crash_shard(shard).unwrap();
    }
    assert_eq!(balances_eventually(&cluster), model);
    transfer_batches(&cluster, 5, 2, &mut model);
    assert_eq!(common::balances(&cluster, ACCOUNTS), model);
}

/// The coordinator crashed after many logged (and snapshotted) decisions
/// comes back from disk and goes on committing cross-shard transfers, with
/// every balance as the model says.
#[test]
fn crashed_coordinator_recovers_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let often = SnapshotPolicy {
        log_bytes: u64::MAX,
        log_records: 5,
    };
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 3, often);
    transfer_batches(&cluster, 12, 3, &mut model);
    assert!(cluster.storage_stats().coordinator.snapshots > 0);
    cluster.crash_coordinator();
    common::cross_transfer_once_back(&cluster, ACCOUNTS, &mut model);
    transfer_batches(&cluster, 13, 2, &mut model);
    assert_eq!(common::balances(&cluster, ACCOUNTS), model);
}

/// Recovery from a snapshot plus the log after it gives the same state as
/// replaying the whole log: two clusters run the same transfers, one
/// snapshotting every few records, and agree after restarts.
#[test]
fn snapshot_plus_tail_equals_full_replay() {
    let often = SnapshotPolicy {
        log_bytes: u64::MAX,
        log_records: 7,
    };
    let mut results = Vec::new();
    for policy in [often, SnapshotPolicy::NEVER] {
        let dir = tempfile::tempdir().unwrap();
        let mut model = vec![BALANCE; ACCOUNTS as usize];
        let cluster = bank_on(dir.path(), 3, policy);
        transfer_batches(&cluster, 6, 6, &mut model);
        let stats = cluster.storage_stats();
        if policy == often {
            assert!(stats.shards.snapshots >= 3, "{stats:?}");
            assert!(stats.coordinator.snapshots >= 1, "{stats:?}");
        } else {
            assert_eq!(stats.shards.snapshots, 0);
        }
        cluster.crash_shard(ShardId(1)).unwrap();
        assert_eq!(balances_eventually(&cluster), model, "{policy:?}: crash");
        transfer_batches(&cluster, 7, 2, &mut model);
        cluster.shutdown();
        let cluster = start(dir.path(), 3, policy);
        let balances = balances_eventually(&cluster);
        assert_eq!(balances, model, "{policy:?}: restart");
        results.push(balances);
        cluster.shutdown();
    }
    assert_eq!(results[0], results[1]);
}

fn shard_log(dir: &Path, shard: u32) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir.join(format!("shard-{shard}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs.remove(0)
}

/// Bytes appended to a shard's log by a crash mid-append are cut off on
/// restart, and everything committed before them is there.
#[test]
fn torn_tail_is_cut_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 2, SnapshotPolicy::default());
    transfer_batches(&cluster, 8, 2, &mut model);
    cluster.shutdown();
    let log = shard_log(dir.path(), 0);
    let len = std::fs::metadata(&log).unwrap().len();
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend([200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]);
    std::fs::write(&log, bytes).unwrap();
    let cluster = start(dir.path(), 2, SnapshotPolicy::default());
    assert_eq!(balances_eventually(&cluster), model);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), len);
    transfer_batches(&cluster, 9, 1, &mut model);
    assert_eq!(common::balances(&cluster, ACCOUNTS), model);
}

/// A flipped bit in the middle of a shard's log makes that shard refuse
/// work with an error naming the corruption, while the other shard goes
/// on; the damaged file is left as it was.
#[test]
fn corrupt_shard_log_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 2, SnapshotPolicy::default());
    transfer_batches(&cluster, 10, 3, &mut model);
    let placement = cluster.placement().clone();
    cluster.shutdown();
    let log = shard_log(dir.path(), 0);
    let mut bytes = std::fs::read(&log).unwrap();
    // Byte 40 lies inside the first frame (the genesis block), which has
    // more frames after it.
    bytes[40] ^= 0x04;
    std::fs::write(&log, &bytes).unwrap();
    let cluster = start(dir.path(), 2, SnapshotPolicy::default());
    let on = |shard: u32| {
        (0..ACCOUNTS)
            .map(AccountId)
            .filter(|a| placement.shard_of_account(*a) == ShardId(shard))
            .collect::<Vec<_>>()
    };
    let (zero, one) = (on(0), on(1));
    let refused = cluster
        .submit_blocking(Transaction::transfer(TxId::random(), zero[0], zero[1], 1))
        .unwrap();
    let reason = format!("{:?}", refused.error());
    assert!(reason.contains("corrupt"), "{refused:?}");
    // Reads are refused too: the shard could not rebuild its state, so an
    // answer from it would be a guess.
    let read = cluster.balance_blocking(zero[0], AssetId::COIN);
    assert!(
        matches!(
            read,
            Err(ClusterError::ShardFailed {
                shard: ShardId(0),
                ..
            })
        ),
        "{read:?}"
    );
    let served = cluster
        .submit_blocking(Transaction::transfer(TxId::random(), one[0], one[1], 1))
        .unwrap();
    assert!(served.is_committed(), "{served:?}");
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
}

/// A flipped bit in the middle of the coordinator's decision log makes it
/// refuse cross-shard transactions with an error naming the corruption,
/// before any shard is asked to lock; local transfers go on.
#[test]
fn corrupt_coordinator_log_refuses_cross_shard_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 2, SnapshotPolicy::default());
    transfer_batches(&cluster, 11, 3, &mut model);
    cluster.shutdown();
    let log = dir.path().join("coordinator/log-00000000000000000000");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[30] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    let cluster = start(dir.path(), 2, SnapshotPolicy::default());
    let (a, b) = common::cross_pair(&cluster, ACCOUNTS);
    let refused = cluster
        .submit_blocking(Transaction::transfer(TxId::random(), a, b, 1))
        .unwrap();
    let reason = format!("{:?}", refused.error());
    assert!(reason.contains("corrupt"), "{refused:?}");
    assert_eq!(common::balances(&cluster, ACCOUNTS), model, "no lock left");
    let placement = cluster.placement().clone();
    let c = (0..ACCOUNTS)
        .map(AccountId)
        .find(|c| *c != a && placement.shard_of_account(*c) == placement.shard_of_account(a))
        .unwrap();
    let local = cluster
        .submit_blocking(Transaction::transfer(TxId::random(), a, c, 1))
        .unwrap();
    assert!(local.is_committed(), "{local:?}");
}

/// A data directory written with one shard count is refused with another,
/// with an error naming both counts: placement depends on it.
#[test]
fn data_dir_remembers_its_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    start(dir.path(), 2, SnapshotPolicy::default()).shutdown();
    assert!(matches!(
        Cluster::builder().shards(3).data_dir(dir.path()).start(),
        Err(ClusterError::DataDir {
            mismatch: parashard::DataDirMismatch::Shards {
                recorded: 2,
                given: 3
            },
            ..
        })
    ));
}

/// A data directory serves one cluster at a time: a second cluster on it
/// gets a typed error naming the directory in use (two clusters would
/// interleave their appends), and once the first shuts down the directory
/// opens again with every committed balance.
#[test]
fn data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 2, SnapshotPolicy::default());
    transfer_batches(&cluster, 21, 2, &mut model);
    let second = Cluster::builder().shards(2).data_dir(dir.path()).start();
    match second {
        Err(ClusterError::Storage(StorageError::Locked { path })) => {
            assert!(path.starts_with(dir.path()), "{}", path.display());
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a second cluster opened a data directory in use"),
    }
    assert_eq!(
        common::balances(&cluster, ACCOUNTS),
        model,
        "first unharmed"
    );
    cluster.shutdown();
    let cluster = start(dir.path(), 2, SnapshotPolicy::default());
    assert_eq!(balances_eventually(&cluster), model);
}

/// Every coordinator incarnation logs its epoch, one more than the
/// greatest logged before, before any round begins: restarts of the
/// process (not only of the actor) cannot reuse an epoch, whatever the
/// wall clock says.
#[test]
fn coordinator_epochs_are_durable_and_increase() {
    use parashard::actors::storage::{CoordinatorRecord, DiskStorage, Storage};
    let dir = tempfile::tempdir().unwrap();
    let mut model = vec![BALANCE; ACCOUNTS as usize];
    let cluster = bank_on(dir.path(), 2, SnapshotPolicy::NEVER);
    transfer_batches(&cluster, 31, 1, &mut model);
    cluster.crash_coordinator();
    transfer_batches(&cluster, 32, 1, &mut model);
    cluster.shutdown();
    let cluster = start(dir.path(), 2, SnapshotPolicy::NEVER);
    transfer_batches(&cluster, 33, 1, &mut model);
    assert_eq!(balances_eventually(&cluster), model);
    cluster.shutdown();
    let log = DiskStorage::<CoordinatorRecord>::open(
        dir.path().join("coordinator"),
        SnapshotPolicy::NEVER,
    )
    .unwrap()
    .load()
    .unwrap();
    let epochs: Vec<u32> = log
        .records
        .iter()
        .filter_map(|r| match r {
            CoordinatorRecord::Epoch { epoch } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(
        epochs,
        vec![1, 2, 3],
        "one per incarnation: start, crash, restart"
    );
}
