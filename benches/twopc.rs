//! Criterion benchmark of the two-phase commit state machines alone: a
//! coordinator and four participants in one thread, messages handed over
//! directly (no actors, no logs), 10,000 cross-shard transfers over 100k
//! accounts per iteration, by how many may be active at once
//! (`CoordinatorConfig::max_active`); and 10,000 fee payments from
//! accounts on the other shards into one collector's counters (add keys),
//! which the coordinator runs in groups. What the protocol itself costs per
//! transaction, apart from the runtime around it: with every state machine
//! on one thread, the ceiling of one coordinator on this machine.
//!
//! Run with `cargo bench --bench twopc`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parashard::prelude::*;
use parashard::protocols::fastmap::FastMap;
use parashard::protocols::placement::Placement;
use parashard::protocols::twopc::{
    Command, Coordinator, CoordinatorConfig, Participant, ToCoordinator, ToParticipant,
};
use parashard::protocols::workload::{Rng, TxIds};

mod common;

/// The allocator the `parashard` binary uses (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SHARDS: u32 = 4;
const ACCOUNTS: u64 = 100_000;
const TRANSFERS: usize = 10_000;
const BALANCE: Value = 1 << 40;

/// A participant with the values of its shard's keys.
struct Shard {
    participant: Participant,
    values: FastMap<Key, Value>,
}

/// Transfers whose two accounts are on different shards.
fn cross_transfers(placement: &Placement, rng: &mut Rng, ids: &mut TxIds) -> Vec<Transaction> {
    (0..TRANSFERS)
        .map(|_| loop {
            let (from, to) = (
                AccountId(rng.below(ACCOUNTS)),
                AccountId(rng.below(ACCOUNTS)),
            );
            if placement.shard_of_account(from) != placement.shard_of_account(to) {
                break Transaction::transfer(ids.next_id(), from, to, 1 + rng.below(100));
            }
        })
        .collect()
}

/// Delivers `messages` to `shard` as a shard actor would (the log
/// dropped: apply commits, then vote with the values of what was granted)
/// and returns its replies.
fn deliver(
    shard_id: ShardId,
    shard: &mut Shard,
    messages: Vec<ToParticipant>,
) -> Vec<ToCoordinator> {
    let mut replies = Vec::new();
    let mut log = Vec::new();
    for message in messages {
        let received = shard.participant.receive(message, &mut log);
        log.clear();
        shard.values.extend(
            received
                .apply
                .iter()
                .flat_map(|writes| writes.iter().copied()),
        );
        replies.extend(received.reply);
        let values = &shard.values;
        replies.extend(
            received
                .granted
                .iter()
                .map(|g| g.vote(shard_id, |k| values.get(k).copied())),
        );
    }
    replies
}

/// Runs `txs` through a fresh coordinator incarnation, `epoch`, and the
/// shards until every one is answered; returns how many committed. Each
/// run needs a greater epoch than the last, as a restarted coordinator
/// does: the shards keep the floor of decided rounds the last one sent.
fn run(
    config: &CoordinatorConfig,
    registry: &Arc<Registry>,
    epoch: u32,
    placement: &Placement,
    shards: &mut [Shard],
    txs: &[Transaction],
) -> usize {
    let mut coordinator =
        Coordinator::new(config.clone(), placement.clone(), registry.clone()).with_epoch(epoch);
    for tx in txs {
        coordinator.begin(0, tx.clone());
    }
    let (mut answered, mut committed) = (0, 0);
    while answered < txs.len() {
        let mut replies = Vec::new();
        for command in coordinator.take_commands() {
            match command {
                Command::Send { to, messages } => {
                    replies.extend(deliver(to, &mut shards[to.0 as usize], messages))
                }
                Command::Reply(receipt) => {
                    answered += 1;
                    committed += usize::from(receipt.is_committed());
                }
                _ => {}
            }
        }
        coordinator.handle_messages(0, replies);
    }
    committed
}

fn twopc(c: &mut Criterion) {
    let placement = Placement::hashed(SHARDS).expect("four shards");
    let mut shards: Vec<Shard> = (0..SHARDS)
        .map(|s| Shard {
            participant: Participant::new(ShardId(s)),
            values: FastMap::default(),
        })
        .collect();
    for a in 0..ACCOUNTS {
        let account = AccountId(a);
        let shard = placement.shard_of_account(account).0 as usize;
        shards[shard]
            .values
            .insert(Key::balance(account, AssetId::COIN), BALANCE);
    }
    let mut rng = Rng::new(7);
    let mut ids = TxIds::default();
    let mut epoch = 0;
    let registry = common::fee_registry();
    let collector_shard = placement.shard_of_account(common::COLLECTOR);
    let payers: Vec<AccountId> = (0..ACCOUNTS)
        .map(AccountId)
        .filter(|a| placement.shard_of_account(*a) != collector_shard)
        .collect();
    let mut group = c.benchmark_group("twopc");
    group
        .throughput(Throughput::Elements(TRANSFERS as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for max_active in [256, 2_048, TRANSFERS] {
        let config = CoordinatorConfig {
            max_active,
            ..CoordinatorConfig::default()
        };
        group.bench_with_input(
            BenchmarkId::new("cross-transfers", max_active),
            &max_active,
            |b, _| {
                b.iter_batched(
                    || cross_transfers(&placement, &mut rng, &mut ids),
                    |txs| {
                        epoch += 1;
                        let committed =
                            run(&config, &registry, epoch, &placement, &mut shards, &txs);
                        assert_eq!(committed, txs.len(), "every transfer commits");
                    },
                    criterion::BatchSize::LargeInput,
                )
            },
        );
    }
    let config = CoordinatorConfig::default();
    group.bench_function("hot-counter-fees", |b| {
        b.iter_batched(
            || {
                (0..TRANSFERS)
                    .map(|_| {
                        let payer = payers[rng.below(payers.len() as u64) as usize];
                        common::pay_fee(ids.next_id(), payer, true)
                    })
                    .collect::<Vec<_>>()
            },
            |txs| {
                epoch += 1;
                let committed = run(&config, &registry, epoch, &placement, &mut shards, &txs);
                assert_eq!(committed, txs.len(), "every fee commits");
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, twopc);
criterion_main!(benches);
