//! The coordinator actor: a thin shell that runs the 2PC coordinator state
//! machine, logs its commit decisions and delivers its messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{debug_span, warn};

use parashard_protocols::contracts::Registry;
use parashard_protocols::fastmap::PREFETCH_AHEAD;
use parashard_protocols::model::{
    AbortReason, Receipt, ShardId, Status, Transaction, TxError, TxId,
};
use parashard_protocols::placement::Placement;
use parashard_protocols::recovery::{last_coordinator_epoch, recover_coordinator};
use parashard_protocols::twopc::{
    Command, Coordinator, CoordinatorConfig, Execution, ToParticipant,
};

use crate::batch::{BatchReply, Batches};
use crate::faults::{self, CrashPoint, Faults, Target};
use crate::shard::{Crash, FromCoordinator, FromShard, ShardActor};
use crate::storage::{CoordinatorRecord, CoordinatorSnapshot, Recovered, Storage, StorageError};
use crate::workers::{self, ContractWorker, Ran, Run};

/// Cross-shard transactions, answered in batch order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubmitCross {
    /// The transactions.
    pub txs: Vec<Transaction>,
    /// Where the receipts go.
    pub reply: BatchReply,
}

/// Asks the coordinator how many cross-shard transactions it has not yet
/// finished (answered and, for commits, acknowledged by every shard).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountInFlight;

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
    /// The origin of the machine's clock.
    clock: Instant,
    /// The 2PC epoch of the current incarnation (see `recover`).
    epoch: u32,
    failed: Option<StorageError>,
    /// `Done` records not yet logged. They only save re-driving a finished
    /// commit after a restart, so they ride along with the next append
    /// instead of costing a sync of their own.
    pending_done: Vec<CoordinatorRecord>,
    /// When the one scheduled timer fires, if one is scheduled. The machine
    /// asks for a timer per transaction; one actor timer at the earliest
    /// time serves them all, and [`Coordinator::poll_timeout`] says when
    /// the next is due.
    timer_at_ms: Option<u64>,
    /// Injected faults, consulted at crash points and on every send.
    faults: Arc<Faults>,
    /// The threads that run user contracts of cross-shard rounds, started
    /// at the first such round. They outlive restarts: a result of an
    /// earlier incarnation's round is ignored by the machine.
    workers: Option<Addr<ContractWorker>>,
}

/// The most `Done` records held back before they get an append of their
/// own.
const MAX_PENDING_DONE: usize = 4096;

impl CoordinatorActor {
    /// A coordinator; it recovers its decisions from `storage` on start.
    pub fn new(
        config: CoordinatorConfig,
        placement: Placement,
        registry: Arc<Registry>,
        storage: Arc<dyn Storage<CoordinatorRecord>>,
        faults: Arc<Faults>,
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
            clock: Instant::now(),
            epoch: 0,
            failed: None,
            pending_done: Vec::new(),
            timer_at_ms: None,
            faults,
            workers: None,
        }
    }

    /// Whether an armed crash at `point` fires now; if so the actor stops
    /// (its supervisor restarts it from the log).
    fn crash_at(&self, point: CrashPoint, ctx: &mut Context<Self>) -> bool {
        if !self.faults.should_crash(Target::Coordinator, point) {
            return false;
        }
        warn!(%point, "coordinator crash injected");
        ctx.stop();
        true
    }

    /// Sends `messages` to `to` through the fault layer.
    fn send(&self, to: ShardId, messages: Vec<ToParticipant>) {
        let Some(shard) = self.shards.get(to.0 as usize) else {
            return;
        };
        if !self.faults.active() {
            shard.do_send(FromCoordinator(messages));
            return;
        }
        let fate = self.faults.fate(to, true, messages.len());
        let shard = shard.clone();
        faults::deliver(&self.faults, fate, messages, FromCoordinator, move |m| {
            shard.do_send(m)
        });
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Throws away in-memory state and re-drives every logged commit that
    /// was not finished; everything else is presumed aborted (shards that
    /// hold its locks ask, and are told to abort). Finished commits are
    /// remembered, to answer re-submissions.
    ///
    /// Each incarnation runs under an epoch greater than every earlier
    /// one's (so that its rounds cannot be confused with theirs, whose
    /// messages may still be in flight): one more than the greatest logged,
    /// logged durably before any round begins.
    fn recover(&mut self) {
        self.batches = Batches::default();
        self.failed = None;
        self.pending_done.clear();
        // Timers of the old incarnation are dropped with it.
        self.timer_at_ms = None;
        let recovered = self
            .storage
            .load()
            .and_then(|Recovered { snapshot, records }| {
                let last = last_coordinator_epoch(snapshot.as_ref(), &records);
                let epoch = last.checked_add(1).ok_or_else(|| {
                    StorageError::Io("coordinator restarted 2^32 times: epochs exhausted".into())
                })?;
                self.storage
                    .append(vec![CoordinatorRecord::Epoch { epoch }])?;
                Ok((snapshot, records, epoch))
            });
        let (snapshot, records, epoch) = match recovered {
            Ok(recovered) => recovered,
            Err(error) => {
                warn!(%error, "coordinator recovery failed");
                self.failed = Some(error);
                return;
            }
        };
        self.epoch = epoch;
        self.machine = recover_coordinator(
            self.config.clone(),
            self.placement.clone(),
            self.registry.clone(),
            epoch,
            self.now_ms(),
            snapshot,
            records,
        );
    }

    /// Appends `records` as one batch (one sync), then snapshots if due.
    /// A failure stops the coordinator: its supervisor restarts it from
    /// the log.
    fn persist(&mut self, records: Vec<CoordinatorRecord>, ctx: &mut Context<Self>) -> bool {
        if let Err(error) = self.storage.append(records) {
            warn!(%error, "decision log failed; coordinator stops");
            self.failed = Some(error);
            ctx.stop();
            return false;
        }
        if self.storage.snapshot_due() {
            let snapshot = CoordinatorSnapshot {
                commits: self.machine.open_commits(),
                committed: self.machine.committed().collect(),
                epoch: self.epoch,
            };
            if let Err(error) = self.storage.snapshot(snapshot) {
                warn!(%error, "decision log snapshot failed; coordinator stops");
                self.failed = Some(error);
                ctx.stop();
                return false;
            }
            // The snapshot holds only undone commits: the held-back Done
            // records name commits it already dropped.
            self.pending_done.clear();
        }
        true
    }

    fn run_commands(&mut self, ctx: &mut Context<Self>) {
        let commands = self.machine.take_commands();
        // Group commit: every decision of this drain, with the Done records
        // held back so far, in one append before any message leaves.
        let mut decisions = Vec::new();
        let mut rest = Vec::with_capacity(commands.len());
        for command in commands {
            match command {
                Command::PersistCommit {
                    tx,
                    committed,
                    writes,
                } => {
                    decisions.push(CoordinatorRecord::Commit {
                        tx,
                        committed,
                        writes,
                    });
                }
                Command::PersistEpoch { epoch } => {
                    // Snapshots carry it from now on, too.
                    self.epoch = self.epoch.max(epoch);
                    decisions.push(CoordinatorRecord::Epoch { epoch });
                }
                other => rest.push(other),
            }
        }
        if !decisions.is_empty() {
            if self.crash_at(CrashPoint::BeforeDecisionLogged, ctx) {
                return;
            }
            let mut records = std::mem::take(&mut self.pending_done);
            records.extend(decisions);
            if !self.persist(records, ctx) {
                return;
            }
            if self.crash_at(CrashPoint::AfterDecisionLogged, ctx) {
                return;
            }
        }
        // Sends come first, then the rest. Replies finish batch entries,
        // found at random among all those waiting: fetched a few ahead.
        let replies: Vec<TxId> = rest
            .iter()
            .filter_map(|command| match command {
                Command::Reply(receipt) => Some(receipt.tx_id),
                _ => None,
            })
            .collect();
        for id in replies.iter().take(PREFETCH_AHEAD) {
            self.batches.prefetch(id);
        }
        let mut replied = 0;
        let mut commits_sent = false;
        let now = std::time::Instant::now();
        for command in rest {
            if commits_sent
                && !matches!(command, Command::Send { .. })
                && self.crash_at(CrashPoint::AfterCommitsSent, ctx)
            {
                return;
            }
            match command {
                Command::PersistCommit { .. } | Command::PersistEpoch { .. } => {
                    unreachable!("persisted above")
                }
                Command::Send { to, messages } => {
                    // Only looked for when a fault is armed.
                    commits_sent |= self.faults.active()
                        && messages
                            .iter()
                            .any(|m| matches!(m, ToParticipant::Commit { .. }));
                    self.send(to, messages);
                }
                Command::Done { tx } => self.pending_done.push(CoordinatorRecord::Done { tx }),
                Command::Reply(receipt) => {
                    if let Some(id) = replies.get(replied + PREFETCH_AHEAD) {
                        self.batches.prefetch(id);
                    }
                    replied += 1;
                    self.batches.complete(receipt, now);
                }
                Command::SetTimer { at_ms } => self.schedule_timer(at_ms, ctx),
                Command::Execute(execution) => self.execute(execution, ctx),
            }
        }
        if commits_sent && self.crash_at(CrashPoint::AfterCommitsSent, ctx) {
            return;
        }
        if self.pending_done.len() >= MAX_PENDING_DONE {
            let done = std::mem::take(&mut self.pending_done);
            self.persist(done, ctx);
        }
    }
}

impl CoordinatorActor {
    /// Hands a round's user contracts to the worker pool; the result comes
    /// back as [`Ran`].
    fn execute(&mut self, execution: Execution, ctx: &mut Context<Self>) {
        let registry = &self.registry;
        let workers = self
            .workers
            .get_or_insert_with(|| workers::start(workers::default_workers(), registry.clone()));
        workers.do_send(Run {
            execution,
            back: ctx.address().recipient(),
        });
    }

    /// Makes sure the actor's timer fires by `at_ms`.
    fn schedule_timer(&mut self, at_ms: u64, ctx: &mut Context<Self>) {
        if self.timer_at_ms.is_some_and(|scheduled| scheduled <= at_ms) {
            return;
        }
        self.timer_at_ms = Some(at_ms);
        let delay = Duration::from_millis(at_ms.saturating_sub(self.now_ms()));
        ctx.run_later(delay, move |actor, ctx| {
            if actor.timer_at_ms != Some(at_ms) {
                // An earlier timer took over and rescheduled.
                return;
            }
            actor.timer_at_ms = None;
            let now = actor.now_ms();
            actor.machine.handle_timeout(now);
            actor.run_commands(ctx);
            if let Some(next) = actor.machine.poll_timeout() {
                actor.schedule_timer(next, ctx);
            }
        });
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
        let ids: Vec<TxId> = msg.txs.iter().map(|tx| tx.id).collect();
        let (_, proceed) = self.batches.open(&ids, msg.reply);
        let now = self.now_ms();
        for (n, (tx, ok)) in msg.txs.into_iter().zip(proceed).enumerate() {
            if let Some(id) = ids.get(n + PREFETCH_AHEAD) {
                self.machine.prefetch_begin(id);
            }
            if !ok {
                continue;
            }
            if let Some(error) = &self.failed {
                // Without a decision log no commit can be made durable:
                // refuse before any shard takes a lock.
                let reason = AbortReason::CoordinatorStorage {
                    error: error.to_string(),
                };
                let receipt = Receipt {
                    tx_id: tx.id,
                    status: Status::Failed(TxError::CrossShardAborted { reason }),
                };
                self.batches.complete(receipt, std::time::Instant::now());
                continue;
            }
            self.machine.begin(now, tx);
        }
        self.run_commands(ctx);
    }
}

impl Handler<FromShard> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: FromShard, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.machine.handle_messages(now, msg.0);
        self.run_commands(ctx);
    }
}

impl Handler<Ran> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, Ran(executed): Ran, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.machine.executed(now, executed);
        self.run_commands(ctx);
    }
}

impl Handler<CountInFlight> for CoordinatorActor {
    type Result = usize;

    fn handle(&mut self, _msg: CountInFlight, _ctx: &mut Context<Self>) -> usize {
        self.machine.in_flight()
    }
}

impl Handler<Crash> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _msg: Crash, ctx: &mut Context<Self>) {
        warn!("coordinator crash injected");
        ctx.stop();
    }
}

/// The shard a transaction's keys live on, if they all live on its
/// sender's shard: a transaction always involves its sender's shard, which
/// holds the sender's sequence key (see `parashard_protocols::auth`).
pub fn single_shard(placement: &Placement, tx: &Transaction) -> Option<ShardId> {
    let home = placement.shard_of_account(tx.sender);
    tx.access
        .keys()
        .all(|k| placement.shard_of(k) == home)
        .then_some(home)
}
