//! A shard actor driven directly with coordinator messages: snapshots keep
//! prepared transactions' locks, and a failed log append leaves nothing
//! observable.

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use tokio::sync::oneshot;

use parashard_actors::batch::Answer;
use parashard_actors::protocols::contracts::Registry;
use parashard_actors::protocols::exec::ParallelExecutor;
use parashard_actors::protocols::model::{
    AccountId, AssetId, Key, Receipt, ShardId, Transaction, TxId, Value,
};
use parashard_actors::protocols::twopc::{ToCoordinator, ToParticipant};
use parashard_actors::shard::{
    CountPending, Crash, FromCoordinator, FromShard, Read, ShardActor, SubmitLocal,
};
use parashard_actors::storage::{
    DiskStorage, Recovered, ShardRecord, ShardSnapshot, SnapshotPolicy, Storage, StorageError,
};

/// Stands in for the coordinator: keeps what the shard sends it.
struct Inbox(Arc<Mutex<Vec<ToCoordinator>>>);

impl Actor for Inbox {
    type Context = Context<Self>;
}

impl Handler<FromShard> for Inbox {
    type Result = ();

    fn handle(&mut self, msg: FromShard, _ctx: &mut Context<Self>) {
        self.0.lock().unwrap().extend(msg.0);
    }
}

async fn submit(shard: &Addr<ShardActor>, txs: Vec<Transaction>) -> oneshot::Receiver<Answer> {
    let (reply, receiver) = oneshot::channel();
    shard.send(SubmitLocal { txs, reply }).await.unwrap();
    receiver
}

/// What the shard answers to a read of `keys`.
async fn try_read(
    shard: &Addr<ShardActor>,
    keys: &[Key],
) -> Result<Vec<Option<Value>>, StorageError> {
    let (reply, receiver) = oneshot::channel();
    shard
        .send(Read {
            keys: keys.to_vec(),
            reply,
        })
        .await
        .unwrap();
    receiver.await.unwrap()
}

async fn read(shard: &Addr<ShardActor>, keys: &[Key]) -> Vec<Option<Value>> {
    try_read(shard, keys)
        .await
        .expect("a healthy shard answers reads")
}

/// A supervised shard 0 on `storage` whose messages for the coordinator go
/// to `inbox`, with accounts 1 and 2 created holding 100 coins each;
/// returns it and the two accounts' balance keys.
async fn shard_with_two_accounts(
    storage: Arc<dyn Storage<ShardRecord>>,
    inbox: Arc<Mutex<Vec<ToCoordinator>>>,
) -> (Addr<ShardActor>, [Key; 2]) {
    let coordinator = Inbox(inbox).start().recipient();
    let executor = Arc::new(ParallelExecutor::new(1, Arc::new(Registry::new())).unwrap());
    let shard = actix::Supervisor::start(move |_| {
        let faults = Arc::new(parashard_actors::faults::Faults::new(0, 1));
        ShardActor::new(ShardId(0), executor, storage, coordinator, faults)
    });
    let (a, b) = (AccountId(1), AccountId(2));
    let genesis = vec![
        Transaction::create_account(TxId::from_u128(1), a, 100),
        Transaction::create_account(TxId::from_u128(2), b, 100),
    ];
    let receipts = submit(&shard, genesis).await.await.unwrap().receipts;
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    (
        shard,
        [
            Key::balance(a, AssetId::COIN),
            Key::balance(b, AssetId::COIN),
        ],
    )
}

/// A prepared transaction's lock is in the shard's snapshot: after a crash
/// the shard, rebuilt from that snapshot alone (no log records), still
/// holds back a local transfer on the locked key until the commit comes,
/// and then runs it on the committed value.
#[actix::test]
async fn prepared_lock_survives_snapshot_and_crash() {
    let dir = tempfile::tempdir().unwrap();
    let every_record = SnapshotPolicy {
        log_bytes: u64::MAX,
        log_records: 1,
    };
    let storage = Arc::new(DiskStorage::<ShardRecord>::open(dir.path(), every_record).unwrap());
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let (shard, [ka, kb]) = shard_with_two_accounts(storage.clone(), inbox.clone()).await;
    let (a, b) = (AccountId(1), AccountId(2));

    let cross = TxId::from_u128(10);
    shard
        .send(FromCoordinator(vec![ToParticipant::Prepare {
            tx: cross,
            attempt: 0,
            keys: vec![ka],
        }]))
        .await
        .unwrap();
    // Read back from the files (the directory is locked by `storage`, so
    // through it: `load` reads the disk, as a restart would).
    let on_disk = storage.load().unwrap();
    let snapshot = on_disk.snapshot.expect("a snapshot after the prepare");
    assert_eq!(snapshot.prepared, vec![(cross, 0, vec![ka])]);
    assert_eq!(on_disk.records, vec![], "the snapshot replaced the log");
    assert!(storage.stats().snapshots >= 2, "{:?}", storage.stats());

    shard.send(Crash).await.unwrap();
    let mut local = submit(
        &shard,
        vec![Transaction::transfer(TxId::from_u128(3), a, b, 10)],
    )
    .await;
    assert_eq!(read(&shard, &[ka, kb]).await, vec![Some(100), Some(100)]);
    // The shard handles its mailbox in order: by the time it counts, it
    // has taken the transfer, which must wait for the restored lock.
    let pending = shard.send(CountPending).await.unwrap();
    assert_eq!(pending.deferred, 1, "{pending:?}");
    assert_eq!(pending.locked, 1, "{pending:?}");
    assert!(
        local.try_recv().is_err(),
        "the local transfer waits for the restored lock"
    );

    shard
        .send(FromCoordinator(vec![ToParticipant::Commit {
            tx: cross,
            writes: vec![(ka, 90)].into(),
        }]))
        .await
        .unwrap();
    let receipts = local.await.unwrap().receipts;
    assert!(receipts[0].is_committed(), "{receipts:?}");
    assert_eq!(read(&shard, &[ka, kb]).await, vec![Some(80), Some(110)]);
    let sent = inbox.lock().unwrap().clone();
    assert!(
        sent.iter()
            .any(|m| matches!(m, ToCoordinator::Prepared { tx, .. } if *tx == cross)),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|m| matches!(m, ToCoordinator::Committed { tx, .. } if *tx == cross)),
        "{sent:?}"
    );
}

/// Memory storage whose next append fails once when armed.
struct FailNextAppend {
    inner: parashard_actors::storage::MemoryStorage<ShardRecord>,
    armed: std::sync::atomic::AtomicBool,
}

impl Storage<ShardRecord> for FailNextAppend {
    fn append(&self, records: Vec<ShardRecord>) -> Result<(), StorageError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StorageError::Io("injected append failure".into()));
        }
        self.inner.append(records)
    }

    fn load(&self) -> Result<Recovered<ShardRecord>, StorageError> {
        self.inner.load()
    }

    fn snapshot_due(&self) -> bool {
        self.inner.snapshot_due()
    }

    fn snapshot(&self, snapshot: ShardSnapshot) -> Result<(), StorageError> {
        self.inner.snapshot(snapshot)
    }
}

/// A block whose log append fails is never observable: its transactions
/// get failed receipts, the shard refuses reads rather than answer from a
/// state the log does not hold, and after a restart the state is exactly
/// the logged blocks' (the failed block is gone, later blocks commit).
#[actix::test]
async fn failed_append_leaves_nothing_observable() {
    let storage = Arc::new(FailNextAppend {
        inner: Default::default(),
        armed: Default::default(),
    });
    let (shard, keys) = shard_with_two_accounts(storage.clone(), Default::default()).await;
    let (a, b) = (AccountId(1), AccountId(2));

    storage
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let lost = Transaction::transfer(TxId::from_u128(3), a, b, 30);
    let receipts = submit(&shard, vec![lost.clone()])
        .await
        .await
        .unwrap()
        .receipts;
    assert!(!receipts[0].is_committed(), "{receipts:?}");
    assert!(
        try_read(&shard, &keys).await.is_err(),
        "a failed shard refuses reads"
    );

    shard.send(Crash).await.unwrap();
    assert_eq!(read(&shard, &keys).await, vec![Some(100), Some(100)]);
    let receipts = submit(&shard, vec![lost]).await.await.unwrap().receipts;
    assert!(receipts[0].is_committed(), "the retry runs: {receipts:?}");
    assert_eq!(read(&shard, &keys).await, vec![Some(70), Some(130)]);
}
