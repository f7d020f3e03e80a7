//! `parashard bench-recovery`: how long a shard takes to come back from a
//! large on-disk log, and from a snapshot of the same state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parashard::actors::storage::{DiskStorage, ShardRecord, Storage};
use parashard::prelude::*;
use parashard::protocols::workload::{self, Rng, TxIds};
use parashard::{ClusterStorageStats, SnapshotPolicy};

use super::CliError;

#[derive(clap::Args, Clone)]
pub(crate) struct RecoveryArgs {
    /// A new or empty directory for the shard's files.
    #[arg(long)]
    data_dir: PathBuf,
    /// Committed transfers in the log.
    #[arg(long, default_value_t = 1_000_000)]
    txs: usize,
    /// Accounts the transfers pick from.
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Transfers per submitted batch (one block, one append each).
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Executor workers of the shard.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Fails unless `dir` is missing or empty: benchmarks start from nothing.
pub(crate) fn require_empty(dir: &Path) -> Result<(), CliError> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(CliError::Argument(format!(
            "--data-dir {} is not empty",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Prints what the logs did: appends, syncs and records per append.
pub(crate) fn print_storage_stats(stats: &ClusterStorageStats) {
    for (who, log) in [("shards", stats.shards), ("coordinator", stats.coordinator)] {
        if log.appends == 0 {
            continue;
        }
        println!(
            "  {who} log: {} appends, {} syncs ({:.2} per append), {:.1} records per append, {:.1} MiB, {} snapshots",
            log.appends,
            log.syncs,
            log.syncs as f64 / log.appends as f64,
            log.records as f64 / log.appends as f64,
            log.bytes as f64 / f64::from(1 << 20),
            log.snapshots
        );
    }
}

fn one_shard(dir: &Path, workers: usize, policy: SnapshotPolicy) -> Result<Cluster, CliError> {
    Ok(Cluster::builder()
        .shards(1)
        .workers(workers)
        .data_dir(dir)
        .snapshot_policy(policy)
        .start()?)
}

/// Starts a cluster on `dir` and returns it once its shard answers a
/// read, with the time that took (recovery happens before the read).
fn time_recovery(dir: &Path, args: &RecoveryArgs) -> Result<(Cluster, Duration), CliError> {
    let start = Instant::now();
    let cluster = one_shard(dir, args.workers, SnapshotPolicy::NEVER)?;
    cluster.get_many_blocking(&[Key::balance(AccountId(0), AssetId::COIN)])?;
    Ok((cluster, start.elapsed()))
}

fn total(cluster: &Cluster, accounts: u64) -> Result<u128, CliError> {
    let keys: Vec<Key> = (0..accounts)
        .map(|a| Key::balance(AccountId(a), AssetId::COIN))
        .collect();
    Ok(cluster
        .get_many_blocking(&keys)?
        .into_iter()
        .map(|v| u128::from(v.unwrap_or(0)))
        .sum())
}

pub(crate) fn run(args: &RecoveryArgs) -> Result<(), CliError> {
    if args.accounts < 2 || args.batch == 0 || args.txs == 0 {
        return Err(CliError::Argument(
            "need --accounts >= 2, --batch >= 1, --txs >= 1".into(),
        ));
    }
    require_empty(&args.data_dir)?;
    println!(
        "parashard bench-recovery: one shard, {} transfers over {} accounts in batches of {}, seed {}, in {}",
        args.txs,
        args.accounts,
        args.batch,
        args.seed,
        args.data_dir.display()
    );
    let dir = args.data_dir.as_path();
    let balance: Value = 1 << 40;

    // 1. Write the log through the cluster: every batch is one block and
    // one append on the shard. No snapshot, so recovery replays it all.
    let cluster = one_shard(dir, args.workers, SnapshotPolicy::NEVER)?;
    let genesis: Vec<_> = (0..args.accounts)
        .map(|a| (AccountId(a), balance))
        .collect();
    for chunk in genesis.chunks(args.batch) {
        cluster.create_accounts_blocking(chunk)?;
    }
    let mut rng = Rng::new(args.seed);
    let mut ids = TxIds::default();
    let mut committed = 0usize;
    let start = Instant::now();
    let mut left = args.txs;
    while left > 0 {
        let n = left.min(args.batch);
        left -= n;
        let txs = workload::transfers(&mut rng, &mut ids, args.accounts, n, 100);
        committed += cluster
            .submit_batch_blocking(txs)?
            .iter()
            .filter(|r| r.is_committed())
            .count();
    }
    let write_s = start.elapsed().as_secs_f64();
    println!(
        "  wrote {committed} committed transfers in {write_s:.2} s ({:.0} tx/s, on disk)",
        args.txs as f64 / write_s
    );
    print_storage_stats(&cluster.storage_stats());
    let expected = total(&cluster, args.accounts)?;
    cluster.shutdown();

    // 2. The storage alone: read, check and decode the log.
    let shard_dir = dir.join("shard-0");
    let storage = DiskStorage::<ShardRecord>::open(&shard_dir, SnapshotPolicy::NEVER)?;
    let log_bytes = std::fs::metadata(storage.log_path(0))
        .map(|m| m.len())
        .unwrap_or(0);
    let start = Instant::now();
    let recovered = storage.load()?;
    let load_s = start.elapsed().as_secs_f64();
    drop(storage);
    println!(
        "  log: {:.1} MiB, {} records; read + checksum + decode {load_s:.3} s",
        log_bytes as f64 / f64::from(1 << 20),
        recovered.records.len()
    );
    drop(recovered);

    // 3. The shard recovers by replaying the whole log.
    let (cluster, replay) = time_recovery(dir, args)?;
    let replayed = total(&cluster, args.accounts)?;
    println!(
        "  recovery by full log replay: {:.3} s ({:.0} tx/s, reading and applying writes)  total {}",
        replay.as_secs_f64(),
        args.txs as f64 / replay.as_secs_f64(),
        if replayed == expected {
            "conserved"
        } else {
            "WRONG"
        }
    );
    cluster.shutdown();

    // 4. Once recovered, one more transfer with a policy that snapshots at
    // once, then the shard recovers from the snapshot.
    let cluster = one_shard(
        dir,
        args.workers,
        SnapshotPolicy {
            log_bytes: 0,
            log_records: 0,
        },
    )?;
    cluster.get_many_blocking(&[Key::balance(AccountId(0), AssetId::COIN)])?;
    let start = Instant::now();
    let receipt = cluster.submit_blocking(Transaction::transfer(
        ids.next_id(),
        AccountId(0),
        AccountId(1),
        1,
    ))?;
    let snapshot_s = start.elapsed().as_secs_f64();
    let snapshot_bytes = std::fs::metadata(shard_dir.join("snapshot"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "  snapshot of {} accounts: {:.1} MiB; one transfer plus the snapshot took {snapshot_s:.3} s ({})",
        args.accounts,
        snapshot_bytes as f64 / f64::from(1 << 20),
        if receipt.is_committed() { "committed" } else { "failed" }
    );
    cluster.shutdown();
    let (cluster, from_snapshot) = time_recovery(dir, args)?;
    let after = total(&cluster, args.accounts)?;
    println!(
        "  recovery from the snapshot: {:.3} s  ({:.1}x faster than replay)  total {}",
        from_snapshot.as_secs_f64(),
        replay.as_secs_f64() / from_snapshot.as_secs_f64(),
        if after == expected {
            "conserved"
        } else {
            "WRONG"
        }
    );
    cluster.shutdown();
    if replayed != expected || after != expected {
        return Err(CliError::Argument("recovered state differs".into()));
    }
    Ok(())
}
