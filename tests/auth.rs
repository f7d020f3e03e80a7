//! Authenticated senders through a whole cluster: every way a signed or
//! unsigned transaction is refused, locally and across shards, and that
//! after each refusal the cluster keeps serving and the state is what the
//! valid transactions alone made it.

use parashard::prelude::*;

const CHAIN: u64 = 77;

/// Accounts 0 and 1 on shard 0, 2 on shard 1, 3 on shard 2, 1,000 coins
/// each; account 0 holds the key of `signer(1)`.
fn cluster() -> Cluster {
    let placements = [(0, 0), (1, 0), (2, 1), (3, 2)].map(|(a, s)| (AccountId(a), ShardId(s)));
    let cluster = Cluster::builder()
        .shards(3)
        .place_all(placements)
        .chain_id(CHAIN)
        .start()
        .unwrap();
    let genesis: Vec<_> = (0..4).map(|a| (AccountId(a), 1_000)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).unwrap();
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    let set = Transaction::set_public_key(id(900), AccountId(0), PublicKey::of(&signer(1)));
    committed(&cluster, set);
    cluster
}

fn signer(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn id(n: u128) -> TxId {
    TxId::from_u128(n)
}

fn transfer(n: u128, from: u64, to: u64, amount: Value) -> Transaction {
    Transaction::transfer(id(n), AccountId(from), AccountId(to), amount)
}

fn submit(cluster: &Cluster, tx: Transaction) -> Status {
    cluster.submit_blocking(tx).unwrap().status
}

fn committed(cluster: &Cluster, tx: Transaction) -> Output {
    match submit(cluster, tx) {
        Status::Committed { output } => output,
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn balances(cluster: &Cluster) -> Vec<Value> {
    (0..4)
        .map(|a| {
            cluster
                .balance_blocking(AccountId(a), AssetId::COIN)
                .unwrap()
                .unwrap_or(0)
        })
        .collect()
}

/// Proves each refusal of a transaction from an account with a key, local
/// (0 -> 1) and cross-shard (0 -> 2): unsigned, signed with another key,
/// tampered with after signing, signed for another chain, a replayed and a
/// skipped sequence number. Each is refused with its typed error and moves
/// nothing, and the valid signed transfers in between commit, in order.
#[test]
fn every_refusal_leaves_the_state_of_the_valid_transactions() {
    let cluster = cluster();
    let key = signer(1);
    let mut sequence = 0;
    let mut next_id = 0u128;
    let mut fresh = || {
        next_id += 1;
        next_id
    };
    for to in [1, 2] {
        let missing = submit(&cluster, transfer(fresh(), 0, to, 5));
        assert!(
            matches!(missing, Status::Failed(TxError::SignatureMissing { account }) if account == AccountId(0)),
            "unsigned to {to}: {missing:?}"
        );
        let wrong = submit(
            &cluster,
            transfer(fresh(), 0, to, 5).sign(CHAIN, sequence, &signer(2)),
        );
        assert!(
            matches!(wrong, Status::Failed(TxError::WrongKey { .. })),
            "another key to {to}: {wrong:?}"
        );
        let mut tampered = transfer(fresh(), 0, to, 5).sign(CHAIN, sequence, &key);
        tampered.call = Call::Transfer {
            to: AccountId(to),
            amount: 500,
        };
        let tampered = submit(&cluster, tampered);
        assert!(
            matches!(tampered, Status::Failed(TxError::BadSignature { .. })),
            "tampered to {to}: {tampered:?}"
        );
        let elsewhere = submit(
            &cluster,
            transfer(fresh(), 0, to, 5).sign(CHAIN + 1, sequence, &key),
        );
        assert!(
            matches!(elsewhere, Status::Failed(TxError::BadSignature { .. })),
            "another chain to {to}: {elsewhere:?}"
        );
        // The valid one.
        committed(
            &cluster,
            transfer(fresh(), 0, to, 7).sign(CHAIN, sequence, &key),
        );
        let replayed = submit(
            &cluster,
            transfer(fresh(), 0, to, 7).sign(CHAIN, sequence, &key),
        );
        assert!(
            matches!(replayed, Status::Failed(TxError::BadSequence { expected, got, .. }) if expected == sequence + 1 && got == sequence),
            "replayed to {to}: {replayed:?}"
        );
        sequence += 1;
        let skipped = submit(
            &cluster,
            transfer(fresh(), 0, to, 7).sign(CHAIN, sequence + 1, &key),
        );
        assert!(
            matches!(skipped, Status::Failed(TxError::BadSequence { .. })),
            "skipped to {to}: {skipped:?}"
        );
    }
    // Only the two valid transfers of 7 moved anything; accounts without a
    // key still send unsigned transactions.
    assert_eq!(balances(&cluster), vec![986, 1_007, 1_007, 1_000]);
    committed(&cluster, transfer(fresh(), 3, 1, 10));
    assert_eq!(balances(&cluster), vec![986, 1_017, 1_007, 990]);
}

/// Proves a signed transaction commits once: submitted again with the
/// same id it gets its first receipt without running (the sequence number
/// does not move), and with a new id it is a replay.
#[test]
fn a_retry_with_the_same_id_runs_once() {
    let cluster = cluster();
    let tx = transfer(1, 0, 2, 10).sign(CHAIN, 0, &signer(1));
    let first = committed(&cluster, tx.clone());
    assert_eq!(committed(&cluster, tx), first);
    assert_eq!(balances(&cluster), vec![990, 1_000, 1_010, 1_000]);
    let next = transfer(2, 0, 1, 1).sign(CHAIN, 1, &signer(1));
    committed(&cluster, next);
    assert_eq!(balances(&cluster), vec![989, 1_001, 1_010, 1_000]);
}

/// Proves key rotation: a signed `SetPublicKey` replaces the key, after
/// which the old key is refused and the new one signs, the sequence
/// continuing; an unsigned `SetPublicKey` on an account with a key is
/// refused.
#[test]
fn a_signed_rotation_replaces_the_key() {
    let cluster = cluster();
    let stolen = Transaction::set_public_key(id(1), AccountId(0), PublicKey::of(&signer(9)));
    let refused = submit(&cluster, stolen);
    assert!(
        matches!(refused, Status::Failed(TxError::SignatureMissing { .. })),
        "{refused:?}"
    );
    let rotate = Transaction::set_public_key(id(2), AccountId(0), PublicKey::of(&signer(2))).sign(
        CHAIN,
        0,
        &signer(1),
    );
    committed(&cluster, rotate);
    let old = submit(&cluster, transfer(3, 0, 1, 1).sign(CHAIN, 1, &signer(1)));
    assert!(
        matches!(old, Status::Failed(TxError::WrongKey { .. })),
        "{old:?}"
    );
    committed(&cluster, transfer(4, 0, 1, 1).sign(CHAIN, 1, &signer(2)));
    assert_eq!(balances(&cluster), vec![999, 1_001, 1_000, 1_000]);
}

/// Proves a contract cannot forge a sender's authentication: a user
/// contract that writes the sender's sequence key fails with an access
/// violation even though it declares the key.
#[test]
fn contracts_cannot_write_authentication_keys() {
    struct Forger;
    impl Contract for Forger {
        fn execute(&self, ctx: &mut Context<'_>, _: &[Value]) -> Result<Output, TxError> {
            ctx.write(Key::sequence(AccountId(0)), 0)?;
            Ok(0.into())
        }
    }
    let cluster = Cluster::builder()
        .shards(1)
        .contract(ContractId(1), "1", std::sync::Arc::new(Forger))
        .unwrap()
        .start()
        .unwrap();
    let forge = Transaction::custom(
        id(1),
        AccountId(5),
        ContractId(1),
        vec![],
        AccessSet::new([], [Key::sequence(AccountId(0))]),
    );
    let status = submit(&cluster, forge);
    assert!(
        matches!(
            status,
            Status::Failed(TxError::AccessViolation { write: true, .. })
        ),
        "{status:?}"
    );
}

/// Proves sequence numbers survive a restart: on a data directory, a
/// signed transfer commits, the cluster stops and starts again, and the
/// same signed transaction under a new id is a replay.
#[test]
fn sequence_numbers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Cluster::builder()
            .shards(2)
            .chain_id(CHAIN)
            .data_dir(dir.path())
            .start()
            .unwrap()
    };
    let cluster = start();
    cluster
        .create_accounts_blocking(&[(AccountId(0), 100), (AccountId(1), 100)])
        .unwrap();
    committed(
        &cluster,
        Transaction::set_public_key(id(50), AccountId(0), PublicKey::of(&signer(1))),
    );
    committed(&cluster, transfer(51, 0, 1, 10).sign(CHAIN, 0, &signer(1)));
    cluster.shutdown();
    drop(cluster);
    let cluster = start();
    let replay = submit(&cluster, transfer(52, 0, 1, 10).sign(CHAIN, 0, &signer(1)));
    assert!(
        matches!(
            replay,
            Status::Failed(TxError::BadSequence {
                expected: 1,
                got: 0,
                ..
            })
        ),
        "{replay:?}"
    );
    committed(&cluster, transfer(53, 0, 1, 10).sign(CHAIN, 1, &signer(1)));
    let balance = |a| {
        cluster
            .balance_blocking(AccountId(a), AssetId::COIN)
            .unwrap()
    };
    assert_eq!((balance(0), balance(1)), (Some(80), Some(120)));
}
