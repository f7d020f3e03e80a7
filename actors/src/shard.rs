//! The shard actor: owns one shard's state, executes local blocks with the
//! parallel executor, and is the 2PC participant of its shard.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug_span, warn};

use parashard_protocols::committed::{CommittedMemory, DEFAULT_REMEMBERED};
use parashard_protocols::exec::ParallelExecutor;
use parashard_protocols::fastmap::FastSet;
use parashard_protocols::model::{
    Key, Receipt, ShardId, Status, Transaction, TxError, TxId, Value,
};
use parashard_protocols::recovery::ShardMemory;
use parashard_protocols::twopc::{ParticipantConfig, ToCoordinator, ToParticipant};

use crate::batch::{self, Answer, BatchReply, Batches};
use crate::faults::{self, CrashPoint, Faults, Target};
use crate::storage::{Recovered, ShardRecord, Storage, StorageError};

/// Local transactions for this shard, answered in batch order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubmitLocal {
    /// The transactions; every key lives on this shard.
    pub txs: Vec<Transaction>,
    /// Where the receipts go.
    pub reply: BatchReply,
}

/// A batch of 2PC messages from the coordinator.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromCoordinator(pub Vec<ToParticipant>);

/// A batch of 2PC messages for the coordinator.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromShard(pub Vec<ToCoordinator>);

/// Reads keys; a key locked by a prepared transaction reads its last
/// committed value.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Read {
    /// The keys.
    pub keys: Vec<Key>,
    /// Where the values go; a shard whose storage failed refuses to
    /// answer from a state it could not rebuild.
    pub reply: oneshot::Sender<Result<Vec<Option<Value>>, StorageError>>,
}

/// What a shard holds of unfinished 2PC and queued local work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardPending {
    /// Transactions holding locks (prepared, decision not yet applied).
    pub locked: usize,
    /// Prepares queued behind held locks.
    pub queued_prepares: usize,
    /// Local transactions waiting for locks.
    pub deferred: usize,
}

/// Asks a shard for its [`ShardPending`].
#[derive(Message)]
#[rtype(result = "ShardPending")]
pub struct CountPending;

/// Fault injection: the shard fails now, losing everything not in storage.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// See the module docs.
pub struct ShardActor {
    shard: ShardId,
    executor: Arc<ParallelExecutor>,
    storage: Arc<dyn Storage<ShardRecord>>,
    coordinator: Recipient<FromShard>,
    /// State, 2PC participant and commit memory: what recovery rebuilds.
    memory: ShardMemory,
    batches: Batches,
    /// Local transactions waiting for locks, in arrival order.
    deferred: VecDeque<Transaction>,
    /// A storage failure is sticky: the shard refuses work after it.
    failed: Option<StorageError>,
    /// The origin of the participant's clock.
    epoch: Instant,
    /// When the participant's inquiry timer is set to fire, if it is.
    inquiry_timer_ms: Option<u64>,
    /// Injected faults, consulted at crash points and on every send.
    faults: Arc<Faults>,
}

impl ShardActor {
    /// A shard actor; its state is recovered from `storage` when it starts.
    pub fn new(
        shard: ShardId,
        executor: Arc<ParallelExecutor>,
        storage: Arc<dyn Storage<ShardRecord>>,
        coordinator: Recipient<FromShard>,
        faults: Arc<Faults>,
    ) -> ShardActor {
        ShardActor {
            shard,
            executor,
            storage,
            coordinator,
            memory: ShardMemory::new(shard, ParticipantConfig::default(), DEFAULT_REMEMBERED),
            batches: Batches::default(),
            deferred: VecDeque::new(),
            failed: None,
            epoch: Instant::now(),
            inquiry_timer_ms: None,
            faults,
        }
    }

    /// Remembers the latest `capacity` local commits (default
    /// [`DEFAULT_REMEMBERED`]) to answer a re-submitted transaction id with
    /// its receipt instead of running it again; 0 turns that off.
    pub fn remember_committed(mut self, capacity: usize) -> ShardActor {
        self.memory.committed = CommittedMemory::new(capacity);
        self
    }

    /// Whether an armed crash at `point` fires now; if so the actor stops
    /// (its supervisor restarts it from its log).
    fn crash_at(&self, point: CrashPoint, ctx: &mut Context<Self>) -> bool {
        if !self.faults.should_crash(Target::Shard(self.shard), point) {
            return false;
        }
        warn!(shard = self.shard.0, %point, "crash injected");
        ctx.stop();
        true
    }

    /// Sends `messages` to the coordinator through the fault layer.
    fn send(&self, messages: Vec<ToCoordinator>) {
        if !self.faults.active() {
            self.coordinator.do_send(FromShard(messages));
            return;
        }
        let fate = self.faults.fate(self.shard, false, messages.len());
        let coordinator = self.coordinator.clone();
        faults::deliver(&self.faults, fate, messages, FromShard, move |m| {
            coordinator.do_send(m)
        });
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Gives the participant the time: it arms the inquiry timers of new
    /// prepared transactions and asks the coordinator about overdue ones.
    /// Then makes sure the actor wakes when the next one is due.
    fn drive_inquiries(&mut self, ctx: &mut Context<Self>) {
        if self.failed.is_some() {
            return;
        }
        let now = self.now_ms();
        let inquiries = self.memory.participant.handle_timeout(now);
        if !inquiries.is_empty() {
            self.send(inquiries);
        }
        let Some(at_ms) = self.memory.participant.poll_timeout() else {
            return;
        };
        if self.inquiry_timer_ms.is_some_and(|set| set <= at_ms) {
            return;
        }
        self.inquiry_timer_ms = Some(at_ms);
        let delay = Duration::from_millis(at_ms.saturating_sub(now));
        ctx.run_later(delay, move |actor, ctx| {
            if actor.inquiry_timer_ms == Some(at_ms) {
                actor.inquiry_timer_ms = None;
            }
            actor.drive_inquiries(ctx);
        });
    }

    /// Drops all in-memory state and rebuilds it from storage.
    fn recover(&mut self) {
        let _span = debug_span!("recover", shard = self.shard.0).entered();
        let remember = self.memory.committed.capacity();
        self.memory = ShardMemory::new(self.shard, ParticipantConfig::default(), remember);
        self.batches = Batches::default();
        self.deferred.clear();
        self.failed = None;
        let Recovered { snapshot, records } = match self.storage.load() {
            Ok(recovered) => recovered,
            Err(error) => {
                warn!(shard = self.shard.0, %error, "recovery failed; shard refuses work");
                self.failed = Some(error);
                return;
            }
        };
        self.memory = ShardMemory::recover(
            self.shard,
            ParticipantConfig::default(),
            remember,
            snapshot,
            records,
        );
    }

    /// Writes a snapshot when the storage asks for one. Called right after
    /// an append's effects are applied, so the snapshot reflects every
    /// logged record.
    fn snapshot_if_due(&mut self) {
        if self.failed.is_some() || !self.storage.snapshot_due() {
            return;
        }
        let _span = debug_span!("snapshot", shard = self.shard.0).entered();
        let snapshot = self.memory.snapshot();
        if let Err(error) = self.storage.snapshot(snapshot) {
            warn!(shard = self.shard.0, %error, "snapshot failed; shard refuses work");
            self.failed = Some(error);
        }
    }

    /// The receipt of a transaction the shard cannot run: its log failed.
    fn failed_receipt(&self, tx_id: TxId, error: &StorageError) -> Receipt {
        Receipt {
            tx_id,
            status: Status::Failed(TxError::ShardFailed {
                shard: self.shard,
                error: error.to_string(),
            }),
        }
    }

    /// Executes whatever queued transactions no lock holds back, as one
    /// block (see [`parashard_protocols::twopc::Participant::take_unblocked`]).
    fn run_ready(&mut self) {
        let ready = self.memory.participant.take_unblocked(&mut self.deferred);
        let receipts = self.run_block(ready);
        let now = std::time::Instant::now();
        for receipt in receipts {
            self.batches.complete(receipt, now);
        }
    }

    /// Executes `ready` (transactions no lock holds back) as one block and
    /// logs it; returns their receipts, in order.
    fn run_block(&mut self, ready: Vec<Transaction>) -> Vec<Receipt> {
        if ready.is_empty() {
            return Vec::new();
        }
        if let Some(error) = self.failed.clone() {
            return ready
                .iter()
                .map(|tx| self.failed_receipt(tx.id, &error))
                .collect();
        }
        let _span = debug_span!("execute_block", shard = self.shard.0, txs = ready.len()).entered();
        let (receipts, record) = match self.memory.execute_block(self.executor.as_ref(), &ready) {
            Ok(done) => done,
            Err(error) => {
                // Rejected whole, before anything was applied: nothing to log.
                let reason = error.to_string();
                let status = Status::Failed(TxError::InvalidInput { reason });
                return ready
                    .iter()
                    .map(|tx| Receipt {
                        tx_id: tx.id,
                        status: status.clone(),
                    })
                    .collect();
            }
        };
        // Log before any receipt leaves: a receipt is only sent for a block
        // that is durable. (Executing first gives the log the block's
        // writes. Nothing can observe the state in between: this actor is
        // the only one to touch it, and if the append fails the shard
        // refuses all work, reads included, until it recovers from its
        // log.)
        if let Err(error) = self.storage.append(vec![record]) {
            self.failed = Some(error.clone());
            return receipts
                .iter()
                .map(|r| self.failed_receipt(r.tx_id, &error))
                .collect();
        }
        self.memory.remember(&receipts);
        self.snapshot_if_due();
        receipts
    }

    /// Sorts out a submitted batch: an id given twice or already in flight
    /// is refused (the second copy), a retry of a remembered commit gets
    /// the commit's receipt, and the rest are to run, in order. Returns the
    /// answered entries by position, and the transactions to run with
    /// their positions.
    fn sort_out(
        &self,
        txs: Vec<Transaction>,
    ) -> (Vec<(usize, Receipt)>, Vec<Transaction>, Vec<usize>) {
        let mut answered = Vec::new();
        let mut positions = Vec::with_capacity(txs.len());
        let mut known = self.memory.committed.receipts(&txs).into_iter();
        // The next remembered one, by position (most batches have none).
        let mut next_known = known.next();
        let mut seen: FastSet<TxId> =
            FastSet::with_capacity_and_hasher(txs.len(), Default::default());
        let mut run = txs;
        let mut at = 0;
        run.retain(|tx| {
            let retry = match next_known {
                Some((i, _)) if i == at => {
                    std::mem::replace(&mut next_known, known.next()).map(|(_, receipt)| receipt)
                }
                _ => None,
            };
            let keep = if !seen.insert(tx.id) || self.batches.is_waiting(&tx.id) {
                answered.push((at, batch::in_flight(tx.id)));
                false
            } else if let Some(receipt) = retry {
                answered.push((at, receipt));
                false
            } else {
                positions.push(at);
                true
            };
            at += 1;
            keep
        });
        (answered, run, positions)
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Bounded mailbox: senders wait when the shard is saturated.
        ctx.set_mailbox_capacity(1024);
        self.recover();
        // Recovered locks wait for their decision like fresh ones: if none
        // comes, the shard asks.
        self.inquiry_timer_ms = None;
        self.drive_inquiries(ctx);
    }
}

impl actix::Supervised for ShardActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        warn!(shard = self.shard.0, "shard restarting");
    }
}

impl Handler<SubmitLocal> for ShardActor {
    type Result = ();

    fn handle(&mut self, SubmitLocal { txs, reply }: SubmitLocal, _ctx: &mut Context<Self>) {
        let _span = debug_span!("submit", shard = self.shard.0, txs = txs.len()).entered();
        let len = txs.len();
        let (answered, run, positions) = self.sort_out(txs);
        if self.deferred.is_empty() && !self.memory.participant.has_locks() {
            // Nothing is held back: the batch is the block, answered as
            // soon as it ran, and never tracked as open.
            let ran = self.run_block(run);
            // The client may have given up; that is its business.
            let _ = reply.send(Answer::now(batch::assemble(len, answered, ran)));
            return;
        }
        let running = positions.into_iter().zip(run.iter().map(|tx| tx.id));
        self.batches.track(len, answered, running, reply);
        self.deferred.extend(run);
        self.run_ready();
    }
}

impl Handler<FromCoordinator> for ShardActor {
    type Result = ();

    fn handle(&mut self, msg: FromCoordinator, ctx: &mut Context<Self>) {
        if self.failed.is_some() {
            // Silence: the coordinator times out and aborts.
            return;
        }
        // Only looked for when a fault is armed: one atomic load otherwise.
        let has_commit = self.faults.active()
            && msg
                .0
                .iter()
                .any(|m| matches!(m, ToParticipant::Commit { .. }));
        if has_commit && self.crash_at(CrashPoint::BeforeCommitApplied, ctx) {
            return;
        }
        let mut records = Vec::new();
        let mut replies = Vec::new();
        let mut writes = Vec::new();
        let mut granted = Vec::new();
        for message in msg.0 {
            let received = self.memory.participant.receive(message, &mut records);
            writes.extend(received.apply);
            replies.extend(received.reply);
            granted.extend(received.granted);
        }
        // One log append for the whole batch, before any vote or ack leaves.
        if let Err(error) = self.storage.append(records) {
            warn!(shard = self.shard.0, %error, "log append failed; shard refuses work");
            self.failed = Some(error);
            return;
        }
        for &(key, value) in writes.iter().flat_map(|w| w.iter()) {
            self.memory.state.set(key, value);
        }
        self.snapshot_if_due();
        if has_commit && self.crash_at(CrashPoint::AfterCommitApplied, ctx) {
            return;
        }
        if !granted.is_empty() && self.crash_at(CrashPoint::BeforeVote, ctx) {
            return;
        }
        // Votes read values after the batch's commits are applied: a granted
        // transaction's keys were released by those commits.
        let voted = !granted.is_empty();
        let state = &self.memory.state;
        replies.extend(granted.iter().map(|g| g.vote(self.shard, |k| state.get(k))));
        if !replies.is_empty() {
            self.send(replies);
        }
        if voted && self.crash_at(CrashPoint::AfterVote, ctx) {
            return;
        }
        self.drive_inquiries(ctx);
        self.run_ready();
    }
}

impl Handler<Read> for ShardActor {
    type Result = ();

    fn handle(&mut self, msg: Read, _ctx: &mut Context<Self>) {
        let answer = match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(msg.keys.iter().map(|k| self.memory.state.get(k)).collect()),
        };
        let _ = msg.reply.send(answer);
    }
}

impl Handler<CountPending> for ShardActor {
    type Result = MessageResult<CountPending>;

    fn handle(&mut self, _msg: CountPending, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(ShardPending {
            locked: self.memory.participant.prepared().count(),
            queued_prepares: self.memory.participant.queued(),
            deferred: self.deferred.len(),
        })
    }
}

impl Handler<Crash> for ShardActor {
    type Result = ();

    fn handle(&mut self, _msg: Crash, ctx: &mut Context<Self>) {
        warn!(shard = self.shard.0, "crash injected");
        ctx.stop();
    }
}
