//! A slow user contract holds up only what waits for its keys: a
//! cross-shard round that runs one does not stall the coordinator.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use parashard::prelude::*;

mod common;

/// A user contract that, once it runs, tells the test so and then waits
/// until the test opens the gate; then it writes 1 to each key it was
/// given.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Default)]
struct GateState {
    entered: bool,
    open: bool,
}

const GATE: ContractId = ContractId(41);

/// How long a scenario may take to reach the state it waits for before
/// the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

impl Gate {
    fn open(&self) {
        self.0 .0.lock().unwrap().open = true;
        self.0 .1.notify_all();
    }

    /// Waits until a call has entered the contract.
    fn wait_entered(&self) {
        let (state, changed) = &*self.0;
        let (guard, timeout) = changed
            .wait_timeout_while(state.lock().unwrap(), DEADLINE, |s| !s.entered)
            .unwrap();
        assert!(
            !timeout.timed_out() && guard.entered,
            "the gated call never ran"
        );
    }

    /// A call from `sender` writing the first field of each of `accounts`.
    fn call(id: u128, sender: u64, accounts: &[u64]) -> Transaction {
        let keys = accounts.iter().map(|&a| Key::field(AccountId(a), 0));
        Transaction::custom(
            TxId::from_u128(id),
            AccountId(sender),
            GATE,
            accounts.to_vec(),
            AccessSet::new([], keys),
        )
    }
}

impl Contract for Gate {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let (state, changed) = &*self.0;
        let mut guard = state.lock().unwrap();
        guard.entered = true;
        changed.notify_all();
        while !guard.open {
            guard = changed.wait(guard).unwrap();
        }
        for &account in args {
            ctx.write(Key::field(AccountId(account), 0), 1)?;
        }
        Ok(1.into())
    }
}

/// Accounts 0-3 on shard 0, 4-7 on shard 1, 8-11 on shard 2, each with
/// 1,000 coins; the gate registered.
fn cluster(gate: &Gate) -> Cluster {
    let cluster = Cluster::builder()
        .shards(3)
        .place_by((0..12).map(AccountId), |a| ShardId((a.0 / 4) as u32))
        .contract(GATE, "gate-1", Arc::new(gate.clone()))
        .unwrap()
        .start()
        .unwrap();
    common::fund(&cluster, 12, 1_000);
    cluster
}

fn transfer(id: u128, from: u64, to: u64, amount: Value) -> Transaction {
    Transaction::transfer(TxId::from_u128(id), AccountId(from), AccountId(to), amount)
}

/// While a cross-shard round's user contract is stuck in its call, other
/// cross-shard transactions, on every shard the stuck one touches, still
/// commit; the stuck one commits once it returns.
#[test]
fn a_slow_cross_shard_contract_does_not_stall_other_rounds() {
    let gate = Gate::default();
    let cluster = Arc::new(cluster(&gate));
    // Fields of account 0 (shard 0) and account 4 (shard 1).
    let stuck = Gate::call(1, 0, &[0, 4]);
    let submitter = {
        let cluster = cluster.clone();
        std::thread::spawn(move || cluster.within(DEADLINE).submit_blocking(stuck))
    };
    gate.wait_entered();

    // Transfers between shards 0, 1 and 2, none touching the gated keys.
    let others: Vec<_> = (0..60u64)
        .map(|n| {
            let from = 1 + n % 3; // on shard 0
            let to = [5, 9][n as usize % 2]; // on shard 1 or 2
            transfer(100 + u128::from(n), from, to, 1)
        })
        .collect();
    let receipts = cluster
        .within(DEADLINE)
        .submit_batch_blocking(others)
        .unwrap();
    assert!(
        receipts.iter().all(Receipt::is_committed),
        "{:?}",
        receipts.iter().find(|r| !r.is_committed())
    );
    // Reads of the gated keys see their committed (absent) values.
    let fields = [Key::field(AccountId(0), 0), Key::field(AccountId(4), 0)];
    assert_eq!(cluster.get_many_blocking(&fields).unwrap(), [None, None]);

    gate.open();
    let receipt = submitter.join().unwrap().unwrap();
    assert_eq!(receipt.status, Status::Committed { output: 1.into() });
    assert_eq!(
        cluster.get_many_blocking(&fields).unwrap(),
        [Some(1), Some(1)]
    );
    let total: Value = (0..12)
        .map(|a| {
            cluster
                .balance_blocking(AccountId(a), AssetId::COIN)
                .unwrap()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 12_000, "coins are conserved");
}

/// A user contract that burns all the gas it may use, one unit a time.
struct Burn;

const BURN: ContractId = ContractId(42);

impl Contract for Burn {
    fn execute(&self, ctx: &mut Context<'_>, _args: &[Value]) -> Result<Output, TxError> {
        loop {
            ctx.charge(1)?;
        }
    }
}

/// A cross-shard call that runs out of gas fails with `OutOfGas`, writes
/// nothing, and releases its keys: the next transaction on them commits.
#[test]
fn a_cross_shard_call_out_of_gas_fails_alone() {
    let cluster = Cluster::builder()
        .shards(2)
        .place_by((0..4).map(AccountId), |a| ShardId((a.0 / 2) as u32))
        .contract(BURN, "burn-1", Arc::new(Burn))
        .unwrap()
        .start()
        .unwrap();
    common::fund(&cluster, 4, 1_000);
    let keys = [
        Key::balance(AccountId(0), AssetId::COIN),
        Key::balance(AccountId(2), AssetId::COIN),
    ];
    let burn = Transaction::custom(
        TxId::from_u128(1),
        AccountId(0),
        BURN,
        vec![],
        AccessSet::new([], keys),
    )
    .with_gas_limit(5_000);
    let receipts = cluster
        .within(DEADLINE)
        .submit_batch_blocking(vec![burn, transfer(2, 0, 2, 10)])
        .unwrap();
    assert_eq!(
        receipts[0].status,
        Status::Failed(TxError::OutOfGas { limit: 5_000 })
    );
    assert!(receipts[1].is_committed(), "{receipts:?}");
    assert_eq!(
        cluster.get_many_blocking(&keys).unwrap(),
        [Some(990), Some(1_010)]
    );
}
