//! The coordinator actor: a thin shell that runs the 2PC coordinator state
//! machine, logs its commit decisions and delivers its messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{debug_span, warn};

use parashard_protocols::contracts::Registry;
use parashard_protocols::model::{ShardId, Transaction, TxId};
use parashard_protocols::placement::Placement;
use parashard_protocols::twopc::{Command, Coordinator, CoordinatorConfig};

use crate::batch::{BatchReply, Batches};
use crate::shard::{Crash, FromCoordinator, FromShard, ShardActor};
use crate::storage::{CoordinatorRecord, Storage, StorageError};

/// Cross-shard transactions, answered in batch order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubmitCross {
    /// The transactions.
    pub txs: Vec<Transaction>,
    /// Where the receipts go.
    pub reply: BatchReply,
}

/// Tells the coordinator where the shards are.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect(pub Vec<Addr<ShardActor>>);

/// See the module docs.
pub struct CoordinatorActor {
    config: CoordinatorConfig,
    placement: Placement,
    registry: Arc<Registry>,
    storage: Arc<dyn Storage<CoordinatorRecord>>,
    shards: Vec<Addr<ShardActor>>,
    machine: Coordinator,
    batches: Batches,
    /// Transactions by id, for their commit records.
    txs: HashMap<TxId, Transaction>,
    epoch: Instant,
    /// The 2PC epoch of the current incarnation (see `next_epoch`).
    epoch_used: u32,
    failed: Option<StorageError>,
}

impl CoordinatorActor {
    /// A coordinator; it recovers its decisions from `storage` on start.
    pub fn new(
        config: CoordinatorConfig,
        placement: Placement,
        registry: Arc<Registry>,
        storage: Arc<dyn Storage<CoordinatorRecord>>,
    ) -> CoordinatorActor {
        let machine = Coordinator::new(config.clone(), placement.clone(), registry.clone());
        CoordinatorActor {
            config,
            placement,
            registry,
            storage,
            shards: Vec::new(),
            machine,
            batches: Batches::default(),
            txs: HashMap::new(),
            epoch: Instant::now(),
            epoch_used: 0,
            failed: None,
        }
    }

    /// An epoch greater than every earlier incarnation's: the wall clock's
    /// seconds, or one more than the last epoch if restarts came faster.
    /// (The actor value, and so `epoch_used`, survives a supervised
    /// restart; across process restarts the clock alone orders them. A
    /// durable epoch record would remove that assumption.)
    fn next_epoch(&mut self) -> u32 {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let epoch = u32::try_from(seconds)
            .unwrap_or(u32::MAX)
            .max(self.epoch_used.saturating_add(1));
        self.epoch_used = epoch;
        epoch
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Throws away in-memory state and re-drives every logged commit that
    /// was not finished; everything else is presumed aborted (shards that
    /// hold its locks ask, and are told to abort).
    fn recover(&mut self) {
        self.machine = Coordinator::new(
            self.config.clone(),
            self.placement.clone(),
            self.registry.clone(),
        )
        .with_epoch(self.next_epoch());
        self.batches = Batches::default();
        self.txs.clear();
        let records = match self.storage.read_all() {
            Ok(records) => records,
            Err(error) => {
                warn!(%error, "coordinator recovery failed");
                self.failed = Some(error);
                return;
            }
        };
        let mut open: HashMap<TxId, (Transaction, Vec<_>)> = HashMap::new();
        let mut order = Vec::new();
        for record in records {
            match record {
                CoordinatorRecord::Commit { tx, writes } => {
                    order.push(tx.id);
                    open.insert(tx.id, (*tx, writes));
                }
                CoordinatorRecord::Done { tx } => {
                    open.remove(&tx);
                }
            }
        }
        let now = self.now_ms();
        for id in order {
            if let Some((tx, writes)) = open.remove(&id) {
                self.txs.insert(id, tx.clone());
                self.machine.recover_commit(now, tx, writes);
            }
        }
    }

    fn run_commands(&mut self, ctx: &mut Context<Self>) {
        for command in self.machine.take_commands() {
            match command {
                Command::PersistCommit { tx, writes } => {
                    let Some(transaction) = self.txs.get(&tx).cloned() else {
                        continue;
                    };
                    let record = CoordinatorRecord::Commit {
                        tx: Box::new(transaction),
                        writes,
                    };
                    if let Err(error) = self.storage.append(vec![record]) {
                        warn!(%error, "decision log failed; coordinator stops");
                        self.failed = Some(error);
                        ctx.stop();
                        return;
                    }
                }
                Command::Send { to, messages } => {
                    if let Some(shard) = self.shards.get(to.0 as usize) {
                        shard.do_send(FromCoordinator(messages));
                    }
                }
                Command::Reply(receipt) => {
                    if self.txs.remove(&receipt.tx_id).is_some() && receipt.is_committed() {
                        let _ = self
                            .storage
                            .append(vec![CoordinatorRecord::Done { tx: receipt.tx_id }]);
                    }
                    self.batches.complete(receipt);
                }
                Command::SetTimer { at_ms } => {
                    let delay = Duration::from_millis(at_ms.saturating_sub(self.now_ms()));
                    ctx.run_later(delay, |actor, ctx| {
                        let now = actor.now_ms();
                        actor.machine.handle_timeout(now);
                        actor.run_commands(ctx);
                    });
                }
            }
        }
    }
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        self.recover();
        self.run_commands(ctx);
    }
}

impl actix::Supervised for CoordinatorActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        warn!("coordinator restarting");
    }
}

impl Handler<Connect> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: Connect, ctx: &mut Context<Self>) {
        self.shards = msg.0;
        self.run_commands(ctx);
    }
}

impl Handler<SubmitCross> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: SubmitCross, ctx: &mut Context<Self>) {
        let _span = debug_span!("submit_cross", txs = msg.txs.len()).entered();
        let (_, proceed) = self.batches.open(msg.txs.iter().map(|tx| tx.id), msg.reply);
        let now = self.now_ms();
        for (tx, ok) in msg.txs.into_iter().zip(proceed) {
            if !ok {
                continue;
            }
            self.txs.insert(tx.id, tx.clone());
            self.machine.begin(now, tx);
        }
        self.run_commands(ctx);
    }
}

impl Handler<FromShard> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: FromShard, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        for message in msg.0 {
            self.machine.handle_message(now, message);
        }
        self.run_commands(ctx);
    }
}

impl Handler<Crash> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _msg: Crash, ctx: &mut Context<Self>) {
        warn!("coordinator crash injected");
        ctx.stop();
    }
}

/// The shard a transaction's keys live on, if they all live on one.
pub fn single_shard(placement: &Placement, tx: &Transaction) -> Option<ShardId> {
    let mut keys = tx.access.keys();
    let first = placement.shard_of(keys.next()?);
    keys.all(|k| placement.shard_of(k) == first)
        .then_some(first)
}
