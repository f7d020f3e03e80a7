//! Restarts never change what committed: a cluster started again on a data
//! directory either serves exactly the committed state or refuses to start
//! with a typed error that says what differs (shard count, placements,
//! contracts). Recovery applies logged writes and runs no contract code, so
//! code changed behind an unchanged version cannot alter committed state.

use std::sync::Arc;

use parashard::prelude::*;
use parashard::{DataDirMismatch, SnapshotPolicy};

const ESCROW: ContractId = ContractId(7);
const ROUTER: ContractId = ContractId(8);
/// The escrow's account, whose fields hold each depositor's coins.
const VAULT: AccountId = AccountId(1_000);
const ACCOUNTS: u64 = 8;
const BALANCE: Value = 100;

fn coin(account: AccountId) -> Key {
    Key::balance(account, AssetId::COIN)
}

/// The coins the vault holds for `depositor`.
fn held(depositor: AccountId) -> Key {
    Key::field(VAULT, depositor.0)
}

/// Moves `args[0]` coins from the sender into the vault, under the sender.
struct Escrow;

impl Contract for Escrow {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let amount = args.first().copied().unwrap_or(0);
        ctx.debit(coin(ctx.sender()), amount)?;
        ctx.credit(held(ctx.sender()), amount)?;
        Ok(amount.into())
    }
}

/// Other code under the escrow's id and version, as a user who edits a
/// contract and forgets its version would register it: it fails every
/// call. Replaying the log through it would drop every deposit.
struct Tampered;

impl Contract for Tampered {
    fn execute(&self, _ctx: &mut Context<'_>, _args: &[Value]) -> Result<Output, TxError> {
        Err(TxError::InvalidInput {
            reason: "tampered".into(),
        })
    }
}

fn deposit(n: u128, depositor: AccountId, amount: Value) -> Transaction {
    let access = AccessSet::new([], [coin(depositor), held(depositor)]);
    Transaction::custom(TxId::from_u128(n), depositor, ESCROW, vec![amount], access)
}

/// How a test configures a cluster on its directory.
#[derive(Clone)]
struct Setup {
    shards: u32,
    vault_on: ShardId,
    escrow: Option<(&'static str, Arc<dyn Contract>)>,
    router: bool,
    policy: SnapshotPolicy,
}

impl Setup {
    fn new(policy: SnapshotPolicy) -> Setup {
        Setup {
            shards: 2,
            vault_on: ShardId(0),
            escrow: Some(("escrow-1", Arc::new(Escrow))),
            router: false,
            policy,
        }
    }

    /// Accounts 0..4 live with the vault on shard 0 (their deposits are
    /// local), 4..8 on shard 1 (theirs are cross-shard).
    fn start(&self, dir: &std::path::Path) -> Result<Cluster, ClusterError> {
        let mut builder = Cluster::builder()
            .shards(self.shards)
            .data_dir(dir)
            .snapshot_policy(self.policy)
            .place(VAULT, self.vault_on);
        for a in 0..ACCOUNTS {
            builder = builder.place(AccountId(a), ShardId(u32::from(a >= ACCOUNTS / 2)));
        }
        if let Some((version, code)) = &self.escrow {
            builder = builder.contract(ESCROW, *version, code.clone())?;
        }
        if self.router {
            builder = builder.contract(ROUTER, "router-1", Arc::new(Escrow))?;
        }
        builder.start()
    }
}

/// Every coin balance and vault field, in a fixed order.
fn read_all(cluster: &Cluster) -> Vec<Option<Value>> {
    let keys: Vec<Key> = (0..ACCOUNTS)
        .flat_map(|a| [coin(AccountId(a)), held(AccountId(a))])
        .collect();
    cluster.get_many_blocking(&keys).expect("read")
}

/// What `read_all` must return for `coins` and `vault`.
fn expected(coins: &[Value], vault: &[Value]) -> Vec<Option<Value>> {
    coins
        .iter()
        .zip(vault)
        .flat_map(|(c, v)| [Some(*c), (*v > 0).then_some(*v)])
        .collect()
}

/// Proves a restart serves exactly the committed state or refuses, with
/// full log replay or snapshot plus tail: deposits through a user contract
/// (local and cross-shard) and transfers commit; starts with the contract
/// missing, at another version, with the vault placed elsewhere or with
/// another shard count are each refused with the error naming the
/// difference; a start with changed code behind the same version serves
/// the committed state unchanged, and a cross-shard transfer then and a
/// final restart keep every coin (the loss this once caused: committed
/// deposits vanished on replay, and the next commit wrote values computed
/// from the wrong state).
fn restarts_keep_committed_state(policy: SnapshotPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(policy);
    let mut coins = vec![BALANCE; ACCOUNTS as usize];
    let mut vault = vec![0; ACCOUNTS as usize];

    let cluster = setup.start(dir.path()).expect("first start");
    let genesis: Vec<_> = (0..ACCOUNTS).map(|a| (AccountId(a), BALANCE)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    let mut n = 1u128;
    for round in 0..3u64 {
        let mut txs = Vec::new();
        for a in 0..ACCOUNTS {
            let amount = 1 + a + round;
            txs.push(deposit(n, AccountId(a), amount));
            n += 1;
            coins[a as usize] -= amount;
            vault[a as usize] += amount;
        }
        // A local and a cross-shard transfer.
        for (from, to) in [(0, 1), (2, 6)] {
            let tx = Transaction::transfer(TxId::from_u128(n), AccountId(from), AccountId(to), 5);
            n += 1;
            txs.push(tx);
            coins[from as usize] -= 5;
            coins[to as usize] += 5;
        }
        let receipts = cluster.submit_batch_blocking(txs).expect("submit");
        assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    }
    assert_eq!(read_all(&cluster), expected(&coins, &vault));
    cluster.shutdown();

    let refusals: [(Setup, DataDirMismatch); 4] = [
        (
            Setup {
                escrow: None,
                ..setup.clone()
            },
            DataDirMismatch::ContractMissing {
                contract: ESCROW,
                version: "escrow-1".into(),
            },
        ),
        (
            Setup {
                escrow: Some(("escrow-2", Arc::new(Escrow))),
                ..setup.clone()
            },
            DataDirMismatch::ContractVersion {
                contract: ESCROW,
                recorded: "escrow-1".into(),
                given: "escrow-2".into(),
            },
        ),
        (
            Setup {
                vault_on: ShardId(1),
                ..setup.clone()
            },
            DataDirMismatch::Placement {
                account: VAULT,
                recorded: Some(ShardId(0)),
                given: Some(ShardId(1)),
            },
        ),
        (
            Setup {
                shards: 3,
                ..setup.clone()
            },
            DataDirMismatch::Shards {
                recorded: 2,
                given: 3,
            },
        ),
    ];
    for (refused, why) in refusals {
        match refused.start(dir.path()) {
            Err(ClusterError::DataDir { path, mismatch }) => {
                assert_eq!(path, dir.path());
                assert_eq!(mismatch, why);
            }
            Err(other) => panic!("wrong error for {why}: {other}"),
            Ok(_) => panic!("started despite: {why}"),
        }
    }

    let tampered = Setup {
        escrow: Some(("escrow-1", Arc::new(Tampered))),
        ..setup.clone()
    };
    let cluster = tampered.start(dir.path()).expect("same id and version");
    assert_eq!(
        read_all(&cluster),
        expected(&coins, &vault),
        "recovery ran no contract code"
    );
    let receipt = cluster
        .submit_blocking(Transaction::transfer(
            TxId::from_u128(n),
            AccountId(1),
            AccountId(5),
            7,
        ))
        .expect("submit");
    assert!(receipt.is_committed(), "{receipt:?}");
    coins[1] -= 7;
    coins[5] += 7;
    cluster.shutdown();

    let cluster = setup.start(dir.path()).expect("the original setup");
    let read = read_all(&cluster);
    assert_eq!(read, expected(&coins, &vault));
    let total: Value = read.iter().flatten().sum();
    assert_eq!(total, ACCOUNTS * BALANCE, "every coin kept");
    cluster.shutdown();
}

#[test]
fn restarts_keep_committed_state_by_log_replay() {
    restarts_keep_committed_state(SnapshotPolicy::NEVER);
}

#[test]
fn restarts_keep_committed_state_from_snapshot_and_tail() {
    restarts_keep_committed_state(SnapshotPolicy {
        log_bytes: u64::MAX,
        log_records: 2,
    });
}

/// Proves a contract registered for the first time on an existing
/// directory is admitted and recorded: a cluster with a second contract
/// starts, and a later start without that contract is refused by name.
#[test]
fn new_contracts_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(SnapshotPolicy::default());
    setup.start(dir.path()).expect("first start").shutdown();
    let with_router = Setup {
        router: true,
        ..setup.clone()
    };
    with_router
        .start(dir.path())
        .expect("a new contract")
        .shutdown();
    match setup.start(dir.path()) {
        Err(ClusterError::DataDir {
            mismatch: DataDirMismatch::ContractMissing { contract, version },
            ..
        }) => {
            assert_eq!(contract, ROUTER);
            assert_eq!(version, "router-1");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("started without a recorded contract"),
    }
    with_router
        .start(dir.path())
        .expect("as recorded")
        .shutdown();
}
