//! Quickstart: four shards, accounts placed on different shards, local and
//! cross-shard transfers, receipts and balances that add up.
//!
//! Run with `cargo run --release --example quickstart`.

use parashard::prelude::*;

/// Runs the example.
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (alice, bob, carol, dave) = (AccountId(1), AccountId(2), AccountId(3), AccountId(4));
    let cluster = Cluster::builder()
        .shards(4)
        .workers(1)
        .place(alice, ShardId(0))
        .place(bob, ShardId(0))
        .place(carol, ShardId(1))
        .place(dave, ShardId(2))
        .start()?;

    let genesis = [(alice, 1_000), (bob, 500), (carol, 250), (dave, 0)];
    cluster.create_accounts_blocking(&genesis)?;
    let total: Value = genesis.iter().map(|(_, balance)| balance).sum();

    let transfers: Vec<Transaction> = vec![
        // Alice and Bob share shard 0: a local transfer, no 2PC.
        Transfer {
            from: alice,
            to: bob,
            amount: 100,
        }
        .into(),
        // Alice -> Carol crosses shards 0 and 1: two-phase commit.
        Transfer {
            from: alice,
            to: carol,
            amount: 300,
        }
        .into(),
        // Carol -> Dave crosses shards 1 and 2.
        Transfer {
            from: carol,
            to: dave,
            amount: 50,
        }
        .into(),
        // Dave cannot pay this: it aborts on every shard.
        Transfer {
            from: dave,
            to: alice,
            amount: 1_000_000,
        }
        .into(),
    ];
    for receipt in cluster.submit_batch_blocking(transfers)? {
        match &receipt.status {
            Status::Committed { .. } => println!("{}: committed", receipt.tx_id),
            Status::Failed(error) => println!("{}: failed: {error}", receipt.tx_id),
            other => println!("{}: {other:?}", receipt.tx_id),
        }
    }

    let mut sum = 0;
    for (account, _) in genesis {
        let balance = cluster
            .balance_blocking(account, AssetId::COIN)?
            .unwrap_or(0);
        println!(
            "{account} on {}: {balance}",
            cluster.placement().shard_of_account(account)
        );
        sum += balance;
    }
    println!(
        "total {sum} (genesis {total}): {}",
        if sum == total {
            "conserved"
        } else {
            "NOT CONSERVED"
        }
    );
    let metrics = cluster.metrics();
    println!(
        "committed {}, failed {}, latency p50 {} us, p99 {} us",
        metrics.committed, metrics.failed, metrics.latency_us_p50, metrics.latency_us_p99
    );
    cluster.shutdown();
    if sum != total {
        return Err(format!("balances add up to {sum}, not {total}").into());
    }
    Ok(())
}

#[allow(dead_code)] // the tests call `run` directly
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}
