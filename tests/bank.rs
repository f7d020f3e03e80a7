//! The bank test: seeded random transfers from several clients while
//! shards and the coordinator crash and the links drop, delay, duplicate
//! and reorder messages; once faults stop and the cluster is quiet, clients
//! retry every transfer they never heard back about (same id: exactly
//! once), and every balance must equal genesis plus exactly the committed
//! transfers.
//!
//! Replay one seed with `BANK_SEED=<seed> cargo test --release --test bank`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Outcome, Submitted};
use parashard::prelude::*;
use parashard::protocols::twopc::CoordinatorConfig;
use parashard::protocols::workload::Rng;
use parashard::{CrashPoint, LinkFaults};

const SHARDS: u32 = 4;
const ACCOUNTS: u64 = 256;
/// Accounts `0..PLACED` are placed explicitly, round robin over shards.
const PLACED: u64 = 16;
/// Large enough that no transfer ever lacks funds: an account pays at most
/// `CLIENTS * MAX_BATCHES * BATCH` transfers of at most `MAX_AMOUNT`.
const GENESIS: Value = 1 << 50;
/// Wide random amounts make each subset of unknown transfers add up to a
/// different sum, which is what lets the check resolve them.
const MAX_AMOUNT: Value = 1 << 30;
const CLIENTS: u64 = 2;
/// Clients submit batches until the fault phase ends, at most this many,
/// pausing `CLIENT_PAUSE_MS` between them so that the workload spans the
/// fault phase.
const MAX_BATCHES: usize = 200;
const CLIENT_PAUSE_MS: u64 = 10;
const BATCH: usize = 20;
/// Fault actions per run, 20 to 80 ms apart.
const FAULT_ACTIONS: usize = 50;

fn start(seed: u64, dir: Option<&std::path::Path>) -> Cluster {
    let mut builder = Cluster::builder()
        .shards(SHARDS)
        .fault_seed(seed)
        .coordinator(CoordinatorConfig {
            timeout_ms: 250,
            // Few active transactions, so that some always wait for room
            // (and are lost with a coordinator crash like active ones).
            max_active: 4 + (seed % 8) as usize,
            ..CoordinatorConfig::default()
        });
    for a in 0..PLACED {
        builder = builder.place(AccountId(a), ShardId((a % u64::from(SHARDS)) as u32));
    }
    // Frequent snapshots, so that restarts also recover from them.
    builder = builder.snapshot_policy(parashard::SnapshotPolicy {
        log_bytes: u64::MAX,
        log_records: 64,
    });
    if let Some(dir) = dir {
        builder = builder.data_dir(dir);
    }
    let cluster = builder.start().expect("cluster starts");
    let genesis: Vec<_> = (0..ACCOUNTS).map(|a| (AccountId(a), GENESIS)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
}

/// A seeded batch: about half local transfers, half cross-shard.
fn batch(rng: &mut Rng, by_shard: &[Vec<AccountId>], next_id: &mut u128) -> Vec<Transaction> {
    (0..BATCH)
        .map(|_| {
            let from_shard = rng.below(by_shard.len() as u64) as usize;
            let to_shard = if rng.chance(50) {
                from_shard
            } else {
                (from_shard + 1 + rng.below(by_shard.len() as u64 - 1) as usize) % by_shard.len()
            };
            let pick = |rng: &mut Rng, shard: usize| {
                by_shard[shard][rng.below(by_shard[shard].len() as u64) as usize]
            };
            let from = pick(rng, from_shard);
            let mut to = pick(rng, to_shard);
            // Bounded: every shard holds several accounts.
            for _ in 0..64 {
                if to != from {
                    break;
                }
                to = pick(rng, to_shard);
            }
            assert_ne!(from, to, "shards hold more than one account");
            *next_id += 1;
            let amount = 1 + rng.below(MAX_AMOUNT);
            Transaction::transfer(TxId::from_u128(*next_id), from, to, amount)
        })
        .collect()
}

/// One random fault action drawn from `rng`; returns what it did.
fn inject(cluster: &Cluster, rng: &mut Rng) -> String {
    let faults = cluster.faults();
    let shard = ShardId(rng.below(u64::from(SHARDS)) as u32);
    // Crashes lose the receipts of every batch in flight, so they are rarer
    // than link faults.
    match rng.below(12) {
        0 if rng.chance(50) => {
            cluster.crash_shard(shard).unwrap();
            format!("crash {shard} now")
        }
        0 => {
            cluster.crash_coordinator();
            "crash coordinator now".into()
        }
        1 if rng.chance(50) => {
            let point = CrashPoint::SHARD[rng.below(4) as usize];
            faults.crash_shard_at(shard, point).unwrap();
            format!("arm {point} on {shard}")
        }
        1 => {
            let point = CrashPoint::COORDINATOR[rng.below(3) as usize];
            faults.crash_coordinator_at(point).unwrap();
            format!("arm coordinator {point}")
        }
        2..=5 => {
            let percent = |rng: &mut Rng, max: u64| rng.below(max + 1) as f64 / 100.0;
            let links = LinkFaults {
                drop: percent(rng, 5),
                delay: percent(rng, 30),
                delay_ms: 1..=(1 + rng.below(30)),
                duplicate: percent(rng, 10),
                reorder: percent(rng, 10),
                shards: rng.chance(50).then(|| vec![shard]),
            };
            let what = format!("links {links:?}");
            faults.set_link_faults(links).unwrap();
            what
        }
        6 | 7 => {
            let ms = 50 + rng.below(300);
            faults
                .partition(shard, Some(Duration::from_millis(ms)))
                .unwrap();
            format!("partition {shard} for {ms} ms")
        }
        8 | 9 => {
            let ms = 5 + rng.below(30);
            faults.slow(shard, ms).unwrap();
            format!("slow {shard} by {ms} ms")
        }
        10 => {
            faults.set_link_faults(LinkFaults::default()).unwrap();
            "links clear".into()
        }
        _ => {
            faults.heal_shard(shard).unwrap();
            format!("heal {shard}")
        }
    }
}

/// Runs the bank with `seed`; panics with the seed and the fault schedule
/// on any violation.
fn run(seed: u64, dir: Option<&std::path::Path>) {
    let cluster = start(seed, dir);
    let placement = cluster.placement().clone();
    let mut by_shard: Vec<Vec<AccountId>> = vec![Vec::new(); SHARDS as usize];
    for a in 0..ACCOUNTS {
        by_shard[placement.shard_of_account(AccountId(a)).0 as usize].push(AccountId(a));
    }
    assert!(
        by_shard.iter().all(|s| s.len() >= 2),
        "seed {seed}: every shard holds accounts"
    );
    let done = AtomicBool::new(false);
    let mut schedule = Vec::new();
    let mut log: Vec<Submitted> = Vec::new();
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (cluster, by_shard, done) = (&cluster, &by_shard, &done);
                scope.spawn(move || {
                    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(client));
                    let mut next_id = u128::from(client) << 64;
                    let mut log = Vec::new();
                    for _ in 0..MAX_BATCHES {
                        if done.load(Ordering::Acquire) {
                            break;
                        }
                        let txs = batch(&mut rng, by_shard, &mut next_id);
                        let answer = cluster.submit_batch_blocking(txs.clone());
                        common::record_batch(&txs, answer, &mut log);
                        std::thread::sleep(Duration::from_millis(CLIENT_PAUSE_MS));
                    }
                    log
                })
            })
            .collect();
        let mut rng = Rng::new(seed ^ 0xFA17);
        // Links misbehave from the start, so that no run is fault-free.
        let links = LinkFaults {
            drop: 0.02,
            delay: 0.2,
            delay_ms: 1..=20,
            duplicate: 0.05,
            reorder: 0.05,
            shards: None,
        };
        schedule.push(format!("links {links:?}"));
        cluster.faults().set_link_faults(links).unwrap();
        // And every run partitions one shard for a while and slows another.
        let partitioned = ShardId(rng.below(u64::from(SHARDS)) as u32);
        let slowed = ShardId((partitioned.0 + 1) % SHARDS);
        let partition_ms = 100 + rng.below(200);
        cluster
            .faults()
            .partition(partitioned, Some(Duration::from_millis(partition_ms)))
            .unwrap();
        cluster.faults().slow(slowed, 10).unwrap();
        schedule.push(format!("partition {partitioned} for {partition_ms} ms"));
        schedule.push(format!("slow {slowed} by 10 ms"));
        for _ in 0..FAULT_ACTIONS {
            if clients.iter().all(|c| c.is_finished()) {
                break;
            }
            schedule.push(inject(&cluster, &mut rng));
            std::thread::sleep(Duration::from_millis(20 + rng.below(60)));
        }
        done.store(true, Ordering::Release);
        for client in clients {
            log.extend(client.join().expect("client thread"));
        }
    });
    let context = || format!("seed {seed}, disk {}, faults {schedule:#?}", dir.is_some());
    cluster.heal();
    if let Err(last) = common::wait_quiet(&cluster, Duration::from_secs(30)) {
        panic!("never quiet: {last:?}; {}", context());
    }
    // Liveness: with faults gone and nothing in flight, a transfer between
    // every pair of shards commits (retried while a late abort or a slow
    // disk makes one time out, up to a deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut next_id = u128::MAX - 1_000;
    for (from_shard, from_accounts) in by_shard.iter().enumerate() {
        for (to_shard, to_accounts) in by_shard.iter().enumerate() {
            if from_shard == to_shard {
                continue;
            }
            loop {
                next_id += 1;
                let tx = Transaction::transfer(
                    TxId::from_u128(next_id),
                    from_accounts[0],
                    to_accounts[1],
                    1,
                );
                let answer = cluster.submit_batch_blocking(vec![tx.clone()]);
                let committed = matches!(&answer, Ok(r) if r[0].is_committed());
                common::record_batch(&[tx], answer, &mut log);
                if committed {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "shard {from_shard} -> {to_shard} never commits after heal; {}",
                    context()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // Exactly once: a client that never heard back submits the same
    // transfer (same id) again. One that had committed is answered from
    // the commit memory without running again; one that had not runs now.
    // Afterwards every transfer has a receipt, and the balances must be
    // explained by the committed ones alone.
    let unknown_before = log.iter().filter(|s| s.outcome == Outcome::Unknown).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for entry in log.iter_mut().filter(|s| s.outcome == Outcome::Unknown) {
        let tx = Transaction::transfer(entry.id, entry.from, entry.to, entry.amount);
        entry.outcome = loop {
            match cluster.submit_blocking(tx.clone()) {
                Ok(receipt) if receipt.is_committed() => break Outcome::Committed,
                Ok(receipt) if !receipt.is_unknown() => break Outcome::Failed,
                Ok(_) | Err(ClusterError::Unavailable(_))
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(receipt) => panic!(
                    "retry of {} never answered: {}; {}",
                    tx.id,
                    receipt.status,
                    context()
                ),
                Err(e) => panic!("retry of {} never answered: {e}; {}", tx.id, context()),
            }
        };
    }
    let balances = common::balances(&cluster, ACCOUNTS);
    let total: u128 = balances.iter().map(|b| u128::from(*b)).sum();
    assert_eq!(
        total,
        u128::from(GENESIS) * u128::from(ACCOUNTS),
        "total not conserved; {}",
        context()
    );
    let genesis = vec![GENESIS; ACCOUNTS as usize];
    let unknown_applied = common::explain_balances(&genesis, &balances, &log)
        .unwrap_or_else(|e| panic!("{e}; {}", context()));
    assert_eq!(unknown_applied, 0, "every outcome is known; {}", context());
    let count = |o| log.iter().filter(|s| s.outcome == o).count();
    let stats = cluster.faults().stats();
    eprintln!(
        "seed {seed} disk {}: {} committed, {} failed ({unknown_before} learnt by retrying); \
         {} fault actions; {stats:?}; {} shard snapshots",
        dir.is_some(),
        count(Outcome::Committed),
        count(Outcome::Failed),
        schedule.len(),
        cluster.storage_stats().shards.snapshots,
    );
    if dir.is_some() {
        assert!(
            cluster.storage_stats().shards.snapshots > 0,
            "restarts on disk also recover from snapshots; {}",
            context()
        );
    }
}

/// Seeds from `BANK_SEED` if set, else `defaults`.
fn seeds(defaults: &[u64]) -> Vec<u64> {
    match std::env::var("BANK_SEED") {
        Ok(seed) => vec![seed.parse().expect("BANK_SEED is a u64")],
        Err(_) => defaults.to_vec(),
    }
}

/// Under random crashes and link faults, on in-memory storage, value is
/// conserved and exactly the committed transfers are applied, once.
#[test]
fn bank_in_memory_under_faults() {
    for seed in seeds(&[1, 2, 3, 4]) {
        run(seed, None);
    }
}

/// The same bank on on-disk storage, where restarts replay the logs.
#[test]
fn bank_on_disk_under_faults() {
    for seed in seeds(&[101, 102, 103]) {
        let dir = tempfile::tempdir().unwrap();
        run(seed, Some(dir.path()));
    }
}

/// The balance check itself rejects a transfer applied twice, a failed one
/// applied, and a committed one missing, so the bank test can fail.
#[test]
fn balance_check_catches_violations() {
    let t = |id, from, to, amount, outcome| Submitted {
        id: TxId::from_u128(id),
        from: AccountId(from),
        to: AccountId(to),
        amount,
        outcome,
    };
    let genesis = vec![1_000, 1_000, 1_000];
    let log = vec![
        t(1, 0, 1, 17, Outcome::Committed),
        t(2, 1, 2, 40, Outcome::Failed),
        t(3, 2, 0, 300, Outcome::Unknown),
        t(4, 0, 2, 5, Outcome::Unknown),
    ];
    // 1 committed, 3 applied, 4 not: consistent.
    assert_eq!(
        common::explain_balances(&genesis, &[1_283, 1_017, 700], &log),
        Ok(1)
    );
    // 1 applied twice.
    assert!(common::explain_balances(&genesis, &[1_266, 1_034, 700], &log).is_err());
    // 2 applied although it failed.
    assert!(common::explain_balances(&genesis, &[1_283, 977, 740], &log).is_err());
    // 1 missing although it committed.
    assert!(common::explain_balances(&genesis, &[1_300, 1_000, 700], &log).is_err());
    // 3 applied twice (an unknown transfer, too, applies at most once).
    assert!(common::explain_balances(&genesis, &[1_583, 1_017, 400], &log).is_err());
}
