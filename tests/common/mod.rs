//! Shared helpers for the integration tests.
#![allow(dead_code)]

use parashard::prelude::*;

/// A cluster of `shards` shards with accounts `0..accounts` each holding
/// `balance` coins.
pub fn bank(shards: u32, accounts: u64, balance: Value) -> Cluster {
    let cluster = Cluster::builder()
        .shards(shards)
        .workers(1)
        .start()
        .expect("cluster starts");
    let genesis: Vec<_> = (0..accounts).map(|a| (AccountId(a), balance)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    cluster
}

/// The coin balances of accounts `0..accounts`.
pub fn balances(cluster: &Cluster, accounts: u64) -> Vec<Value> {
    let keys: Vec<Key> = (0..accounts)
        .map(|a| Key::balance(AccountId(a), AssetId::COIN))
        .collect();
    cluster
        .get_many_blocking(&keys)
        .expect("read")
        .into_iter()
        .map(|v| v.expect("account exists"))
        .collect()
}

/// Two accounts of `0..accounts` on different shards.
pub fn cross_pair(cluster: &Cluster, accounts: u64) -> (AccountId, AccountId) {
    let placement = cluster.placement();
    for a in 0..accounts {
        for b in 0..accounts {
            if placement.shard_of_account(AccountId(a)) != placement.shard_of_account(AccountId(b))
            {
                return (AccountId(a), AccountId(b));
            }
        }
    }
    panic!("all accounts on one shard");
}
