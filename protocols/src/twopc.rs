//! Two-phase commit for cross-shard transactions, as sans-IO state machines.
//!
//! A cross-shard transaction declares keys on several shards. The
//! coordinator asks each shard to *prepare*: lock its keys and send their
//! values. Once every shard has voted, the coordinator executes the
//! transaction on those values (any contract, not only transfers: an AMM
//! swap's output simply flows from the pool's keys to the trader's) and
//! decides: commit, with each shard's writes, or abort. Locked keys make the
//! transaction isolated: no other transaction sees a partial effect, and
//! local transactions on a locked key wait.
//!
//! Conflicting cross-shard transactions queue for locks instead of failing.
//! To rule out deadlock the coordinator prepares a transaction's shards one
//! at a time in ascending shard order, and a shard grants a transaction all
//! its keys at once: a transaction waits only for holders of a shard it has
//! not reached, and they wait only for higher shards, so waits never form a
//! cycle (resource ordering). A shard refuses only when its queue is full;
//! the coordinator then retries after a back-off.
//!
//! Presumed abort: only commit decisions are persisted, before any shard
//! hears of them. A transaction with no persisted decision is aborted.
//!
//! Neither machine does I/O or reads a clock: the caller passes `now_ms`
//! and executes the [`Command`]s they return.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::contracts::Registry;
use crate::exec::execute_with_values;
use crate::model::{Key, Receipt, ShardId, Status, Transaction, TxError, TxId, Value};
use crate::placement::Placement;

/// A message from the coordinator to a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToParticipant {
    /// Lock `keys` for `tx` and report their values.
    Prepare {
        /// The transaction.
        tx: TxId,
        /// This shard's keys of it.
        keys: Vec<Key>,
    },
    /// Apply `writes` and release `tx`'s locks.
    Commit {
        /// The transaction.
        tx: TxId,
        /// This shard's writes.
        writes: Vec<(Key, Value)>,
    },
    /// Release `tx`'s locks without applying anything.
    Abort {
        /// The transaction.
        tx: TxId,
    },
}

/// A message from a shard to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// The shard locked its keys of `tx`; these are their values.
    Prepared {
        /// The transaction.
        tx: TxId,
        /// The shard.
        shard: ShardId,
        /// The values (`None`: the key does not exist).
        values: Vec<(Key, Option<Value>)>,
    },
    /// The shard could not lock `key`: `holder` holds it.
    Refused {
        /// The transaction.
        tx: TxId,
        /// The shard.
        shard: ShardId,
        /// The contended key.
        key: Key,
        /// The transaction holding it.
        holder: TxId,
    },
    /// The shard applied the commit of `tx`.
    Committed {
        /// The transaction.
        tx: TxId,
        /// The shard.
        shard: ShardId,
    },
}

/// What a state machine asks its runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send `messages`, in order, to shard `to`.
    Send {
        /// The shard.
        to: ShardId,
        /// The batch.
        messages: Vec<ToParticipant>,
    },
    /// Durably record the commit decision of `tx` before anything else of
    /// this batch is sent.
    PersistCommit {
        /// The transaction.
        tx: TxId,
        /// Every shard's writes.
        writes: Vec<(ShardId, Vec<(Key, Value)>)>,
    },
    /// Hand the transaction's receipt to its client.
    Reply(Receipt),
    /// Call [`Coordinator::handle_timeout`] at `at_ms`.
    SetTimer {
        /// When.
        at_ms: u64,
    },
}

/// Coordinator tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// How long a shard may take to vote or to acknowledge a commit.
    pub timeout_ms: u64,
    /// How often a transaction refused for a lock conflict is retried.
    pub max_retries: u32,
    /// Back-off before the first retry; doubles with every retry.
    pub retry_backoff_ms: u64,
    /// The most cross-shard transactions in flight; more are refused.
    pub max_in_flight: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> CoordinatorConfig {
        CoordinatorConfig {
            timeout_ms: 1_000,
            max_retries: 16,
            retry_backoff_ms: 1,
            max_in_flight: 100_000,
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting for votes; `values` holds the shards that voted yes.
    Preparing {
        values: BTreeMap<ShardId, Vec<(Key, Option<Value>)>>,
    },
    /// Refused; waiting to retry at `at_ms`.
    Backoff { at_ms: u64 },
    /// Decided commit; waiting for the shards that have not applied it.
    Committing {
        writes: BTreeMap<ShardId, Vec<(Key, Value)>>,
        output: Value,
    },
}

#[derive(Debug)]
struct InFlight {
    tx: Transaction,
    /// Each involved shard's declared keys.
    keys: BTreeMap<ShardId, Vec<Key>>,
    phase: Phase,
    deadline_ms: u64,
    attempt: u32,
}

/// The coordinator state machine.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    placement: Placement,
    registry: std::sync::Arc<Registry>,
    in_flight: HashMap<TxId, InFlight>,
    outbox: BTreeMap<ShardId, Vec<ToParticipant>>,
    commands: Vec<Command>,
}

impl Coordinator {
    /// A coordinator for shards laid out by `placement`.
    pub fn new(
        config: CoordinatorConfig,
        placement: Placement,
        registry: std::sync::Arc<Registry>,
    ) -> Coordinator {
        Coordinator {
            config,
            placement,
            registry,
            in_flight: HashMap::new(),
            outbox: BTreeMap::new(),
            commands: Vec::new(),
        }
    }

    /// The number of transactions not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Starts a cross-shard transaction.
    pub fn begin(&mut self, now_ms: u64, tx: Transaction) {
        if self.in_flight.contains_key(&tx.id) {
            // A duplicate submission: the first one will be answered.
            return;
        }
        if self.in_flight.len() >= self.config.max_in_flight {
            let reason = format!(
                "coordinator has {} transactions in flight",
                self.in_flight.len()
            );
            self.reply_failed(tx.id, TxError::CrossShardAborted { reason });
            return;
        }
        if let Err(error) = tx.access.validate() {
            self.reply_failed(tx.id, error);
            return;
        }
        let mut keys: BTreeMap<ShardId, Vec<Key>> = BTreeMap::new();
        for key in tx.access.keys() {
            keys.entry(self.placement.shard_of(key))
                .or_default()
                .push(*key);
        }
        let id = tx.id;
        self.in_flight.insert(
            id,
            InFlight {
                tx,
                keys,
                phase: Phase::Backoff { at_ms: now_ms },
                deadline_ms: now_ms,
                attempt: 0,
            },
        );
        self.prepare(now_ms, id);
    }

    fn prepare(&mut self, now_ms: u64, id: TxId) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        flight.phase = Phase::Preparing {
            values: BTreeMap::new(),
        };
        flight.deadline_ms = now_ms + self.config.timeout_ms;
        // Shards in ascending order, one at a time: see the module docs.
        let (shard, keys) = flight.keys.iter().next().expect("a transaction has keys");
        self.outbox
            .entry(*shard)
            .or_default()
            .push(ToParticipant::Prepare {
                tx: id,
                keys: keys.clone(),
            });
        self.commands.push(Command::SetTimer {
            at_ms: flight.deadline_ms,
        });
    }

    /// Handles a shard's message.
    pub fn handle_message(&mut self, now_ms: u64, message: ToCoordinator) {
        match message {
            ToCoordinator::Prepared { tx, shard, values } => {
                self.on_prepared(now_ms, tx, shard, values)
            }
            ToCoordinator::Refused {
                tx,
                shard,
                key,
                holder,
            } => self.on_refused(now_ms, tx, shard, key, holder),
            ToCoordinator::Committed { tx, shard } => self.on_committed(tx, shard),
        }
    }

    fn on_prepared(
        &mut self,
        now_ms: u64,
        id: TxId,
        shard: ShardId,
        shard_values: Vec<(Key, Option<Value>)>,
    ) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            // Late vote of an answered transaction: its locks were released
            // by the abort or commit already sent.
            return;
        };
        let Phase::Preparing { values } = &mut flight.phase else {
            return;
        };
        if !flight.keys.contains_key(&shard) {
            return;
        }
        values.insert(shard, shard_values);
        if let Some((next, keys)) = flight.keys.iter().find(|(s, _)| !values.contains_key(s)) {
            self.outbox
                .entry(*next)
                .or_default()
                .push(ToParticipant::Prepare {
                    tx: id,
                    keys: keys.clone(),
                });
            return;
        }
        let all: Vec<(Key, Option<Value>)> = values.values().flatten().copied().collect();
        match execute_with_values(&flight.tx, &all, &self.registry) {
            Ok((output, writes)) => {
                let mut by_shard: BTreeMap<ShardId, Vec<(Key, Value)>> =
                    flight.keys.keys().map(|s| (*s, Vec::new())).collect();
                for (key, value) in writes {
                    by_shard
                        .get_mut(&self.placement.shard_of(&key))
                        .expect("writes stay inside the declared keys")
                        .push((key, value));
                }
                self.commands.push(Command::PersistCommit {
                    tx: id,
                    writes: by_shard.iter().map(|(s, w)| (*s, w.clone())).collect(),
                });
                for (shard, writes) in &by_shard {
                    self.outbox
                        .entry(*shard)
                        .or_default()
                        .push(ToParticipant::Commit {
                            tx: id,
                            writes: writes.clone(),
                        });
                }
                flight.deadline_ms = now_ms + self.config.timeout_ms;
                flight.phase = Phase::Committing {
                    writes: by_shard,
                    output,
                };
                self.commands.push(Command::SetTimer {
                    at_ms: flight.deadline_ms,
                });
            }
            Err(error) => {
                self.abort_everywhere(id);
                self.reply_failed(id, error);
            }
        }
    }

    fn on_refused(&mut self, now_ms: u64, id: TxId, shard: ShardId, key: Key, holder: TxId) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        if !matches!(flight.phase, Phase::Preparing { .. }) {
            return;
        }
        flight.attempt += 1;
        let attempt = flight.attempt;
        self.abort_everywhere(id);
        if attempt > self.config.max_retries {
            let reason =
                format!("{key} on {shard} stayed locked by {holder} through {attempt} attempts");
            self.reply_failed(id, TxError::CrossShardAborted { reason });
            return;
        }
        let backoff = self.config.retry_backoff_ms * u64::from(attempt.min(8));
        let at_ms = now_ms + backoff;
        if let Some(flight) = self.in_flight.get_mut(&id) {
            flight.phase = Phase::Backoff { at_ms };
        }
        self.commands.push(Command::SetTimer { at_ms });
    }

    fn on_committed(&mut self, id: TxId, shard: ShardId) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        let Phase::Committing { writes, output } = &mut flight.phase else {
            return;
        };
        writes.remove(&shard);
        if writes.is_empty() {
            let output = *output;
            self.in_flight.remove(&id);
            self.commands.push(Command::Reply(Receipt {
                tx_id: id,
                status: Status::Committed { output },
            }));
        }
    }

    /// Handles the passing of time: retries after back-off, aborts
    /// transactions whose votes are overdue and re-sends unacknowledged
    /// commits.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let mut retry = Vec::new();
        let mut overdue = Vec::new();
        let mut resend = Vec::new();
        for (id, flight) in &self.in_flight {
            match &flight.phase {
                Phase::Backoff { at_ms } if *at_ms <= now_ms => retry.push(*id),
                Phase::Preparing { .. } if flight.deadline_ms <= now_ms => overdue.push(*id),
                Phase::Committing { writes, .. } if flight.deadline_ms <= now_ms => {
                    resend.push((*id, writes.clone()))
                }
                _ => {}
            }
        }
        // Sorted, so that the commands do not depend on hash order.
        retry.sort_unstable();
        overdue.sort_unstable();
        resend.sort_unstable_by_key(|(id, _)| *id);
        for id in retry {
            self.prepare(now_ms, id);
        }
        for id in overdue {
            self.abort_everywhere(id);
            let reason = "a shard did not vote in time".to_string();
            self.reply_failed(id, TxError::CrossShardAborted { reason });
        }
        for (id, writes) in resend {
            for (shard, writes) in writes {
                self.outbox
                    .entry(shard)
                    .or_default()
                    .push(ToParticipant::Commit { tx: id, writes });
            }
            if let Some(flight) = self.in_flight.get_mut(&id) {
                flight.deadline_ms = now_ms + self.config.timeout_ms;
                self.commands.push(Command::SetTimer {
                    at_ms: flight.deadline_ms,
                });
            }
        }
    }

    /// Re-drives a commit decision found in the coordinator's log after a
    /// restart: the shards that have not applied it will.
    pub fn recover_commit(
        &mut self,
        now_ms: u64,
        tx: Transaction,
        writes: Vec<(ShardId, Vec<(Key, Value)>)>,
    ) {
        let id = tx.id;
        let keys = writes.iter().map(|(s, _)| (*s, Vec::new())).collect();
        let writes: BTreeMap<_, _> = writes.into_iter().collect();
        for (shard, w) in &writes {
            self.outbox
                .entry(*shard)
                .or_default()
                .push(ToParticipant::Commit {
                    tx: id,
                    writes: w.clone(),
                });
        }
        self.in_flight.insert(
            id,
            InFlight {
                tx,
                keys,
                phase: Phase::Committing { writes, output: 0 },
                deadline_ms: now_ms + self.config.timeout_ms,
                attempt: 0,
            },
        );
    }

    fn abort_everywhere(&mut self, id: TxId) {
        if let Some(flight) = self.in_flight.get(&id) {
            for shard in flight.keys.keys() {
                self.outbox
                    .entry(*shard)
                    .or_default()
                    .push(ToParticipant::Abort { tx: id });
            }
        }
    }

    fn reply_failed(&mut self, id: TxId, error: TxError) {
        self.in_flight.remove(&id);
        self.commands.push(Command::Reply(Receipt {
            tx_id: id,
            status: Status::Failed(error),
        }));
    }

    /// Drains what the runtime must do, in order: persist commit decisions,
    /// then send one batch per shard, then reply and set timers.
    pub fn take_commands(&mut self) -> Vec<Command> {
        let mut persist = Vec::new();
        let mut rest = Vec::new();
        for command in self.commands.drain(..) {
            match command {
                Command::PersistCommit { .. } => persist.push(command),
                other => rest.push(other),
            }
        }
        let sends = std::mem::take(&mut self.outbox)
            .into_iter()
            .map(|(to, messages)| Command::Send { to, messages });
        persist.into_iter().chain(sends).chain(rest).collect()
    }
}

/// The most prepares a shard queues behind held locks; more are refused.
pub const MAX_QUEUED_PREPARES: usize = 100_000;

/// The participant state machine of one shard: the locks of prepared
/// cross-shard transactions and the prepares waiting for them.
#[derive(Debug, Default, Clone)]
pub struct Participant {
    shard: ShardId,
    locks: HashMap<Key, TxId>,
    prepared: HashMap<TxId, Vec<Key>>,
    /// Prepares waiting for locks, in arrival order.
    queue: std::collections::VecDeque<(TxId, Vec<Key>)>,
    /// Prepares granted since the last [`Participant::take_granted`].
    granted: Vec<(TxId, Vec<Key>)>,
}

/// What a shard does with a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The writes to apply; empty for a duplicate commit.
    pub apply: Vec<(Key, Value)>,
    /// The acknowledgement for the coordinator.
    pub reply: ToCoordinator,
}

impl Participant {
    /// The participant of `shard`, holding no locks.
    pub fn new(shard: ShardId) -> Participant {
        Participant {
            shard,
            ..Participant::default()
        }
    }

    /// Whether a prepared transaction holds `key`.
    #[inline]
    pub fn is_locked(&self, key: &Key) -> bool {
        self.locks.contains_key(key)
    }

    /// Whether any lock is held.
    pub fn has_locks(&self) -> bool {
        !self.locks.is_empty()
    }

    /// Prepared transactions and their keys, for logging and recovery.
    pub fn prepared(&self) -> impl Iterator<Item = (&TxId, &Vec<Key>)> {
        self.prepared.iter()
    }

    /// Asks to lock `keys` for `tx`. Granted at once if they are free (and
    /// no earlier waiter wants them), queued otherwise; either way the grant
    /// shows up in [`Participant::take_granted`]. Returns a refusal only
    /// when the queue is full. Preparing twice is harmless.
    pub fn prepare(&mut self, tx: TxId, keys: Vec<Key>) -> Option<ToCoordinator> {
        if self.prepared.contains_key(&tx) {
            self.granted.push((tx, keys));
            return None;
        }
        if self.queue.iter().any(|(t, _)| *t == tx) {
            return None;
        }
        let queued_keys = |k: &Key| self.queue.iter().any(|(_, ks)| ks.contains(k));
        let blocker = keys
            .iter()
            .find(|k| self.locks.contains_key(*k) || queued_keys(k));
        match blocker {
            None => self.grant(tx, keys),
            Some(key) if self.queue.len() >= MAX_QUEUED_PREPARES => {
                let holder = self.locks.get(key).copied().unwrap_or(tx);
                return Some(ToCoordinator::Refused {
                    tx,
                    shard: self.shard,
                    key: *key,
                    holder,
                });
            }
            Some(_) => self.queue.push_back((tx, keys)),
        }
        None
    }

    fn grant(&mut self, tx: TxId, keys: Vec<Key>) {
        for key in &keys {
            debug_assert!(!self.locks.contains_key(key), "granted a held lock");
            self.locks.insert(*key, tx);
        }
        self.prepared.insert(tx, keys.clone());
        self.granted.push((tx, keys));
    }

    /// Grants queued prepares whose keys are free, in queue order; a waiter
    /// still blocked keeps later waiters off its keys.
    fn grant_waiting(&mut self) {
        let mut blocked: Vec<Key> = Vec::new();
        let mut still = std::collections::VecDeque::new();
        while let Some((tx, keys)) = self.queue.pop_front() {
            if keys
                .iter()
                .any(|k| self.locks.contains_key(k) || blocked.contains(k))
            {
                blocked.extend(keys.iter().copied());
                still.push_back((tx, keys));
            } else {
                self.grant(tx, keys);
            }
        }
        self.queue = still;
    }

    /// The prepares granted since the last call: the shard reads their
    /// keys' values (after applying the writes it was given) and votes.
    pub fn take_granted(&mut self) -> Vec<(TxId, Vec<Key>)> {
        std::mem::take(&mut self.granted)
    }

    /// Releases `tx`'s locks and returns the writes to apply. A commit for
    /// a transaction not prepared here (a duplicate) applies nothing but is
    /// still acknowledged.
    pub fn commit(&mut self, tx: TxId, writes: Vec<(Key, Value)>) -> CommitOutcome {
        let apply = match self.prepared.remove(&tx) {
            Some(keys) => {
                for key in &keys {
                    self.locks.remove(key);
                }
                debug_assert!(writes.iter().all(|(k, _)| keys.contains(k)));
                self.grant_waiting();
                writes
            }
            None => Vec::new(),
        };
        CommitOutcome {
            apply,
            reply: ToCoordinator::Committed {
                tx,
                shard: self.shard,
            },
        }
    }

    /// Releases `tx`'s locks or drops its queued prepare.
    pub fn abort(&mut self, tx: TxId) {
        if let Some(keys) = self.prepared.remove(&tx) {
            for key in &keys {
                self.locks.remove(key);
            }
        }
        self.queue.retain(|(t, _)| *t != tx);
        self.granted.retain(|(t, _)| *t != tx);
        self.grant_waiting();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, AssetId};
    use std::sync::Arc;

    fn setup() -> (Coordinator, Transaction, Key, Key) {
        let mut placement = Placement::hashed(2).unwrap();
        placement.place(AccountId(1), ShardId(0)).unwrap();
        placement.place(AccountId(2), ShardId(1)).unwrap();
        let coordinator = Coordinator::new(
            CoordinatorConfig::default(),
            placement,
            Arc::new(Registry::new()),
        );
        let tx = Transaction::transfer(TxId::from_u128(9), AccountId(1), AccountId(2), 30);
        let from = Key::balance(AccountId(1), AssetId::COIN);
        let to = Key::balance(AccountId(2), AssetId::COIN);
        (coordinator, tx, from, to)
    }

    /// Begin prepares the lowest shard only, then each vote prepares the
    /// next shard in order (the deadlock-free lock order).
    #[test]
    fn prepares_shards_in_ascending_order() {
        let (mut c, tx, from, to) = setup();
        c.begin(100, tx.clone());
        let prepare = |keys| vec![ToParticipant::Prepare { tx: tx.id, keys }];
        assert_eq!(
            c.take_commands(),
            vec![
                Command::Send {
                    to: ShardId(0),
                    messages: prepare(vec![from])
                },
                Command::SetTimer { at_ms: 1_100 },
            ]
        );
        let vote = ToCoordinator::Prepared {
            tx: tx.id,
            shard: ShardId(0),
            values: vec![(from, Some(1))],
        };
        c.handle_message(101, vote);
        assert_eq!(
            c.take_commands(),
            vec![Command::Send {
                to: ShardId(1),
                messages: prepare(vec![to])
            }]
        );
    }

    /// All yes votes: the decision is persisted before the commits are
    /// sent, and the client hears only after every shard applied it.
    #[test]
    fn yes_votes_persist_then_commit_then_reply() {
        let (mut c, tx, from, to) = setup();
        c.begin(0, tx.clone());
        c.take_commands();
        c.handle_message(
            1,
            ToCoordinator::Prepared {
                tx: tx.id,
                shard: ShardId(0),
                values: vec![(from, Some(100))],
            },
        );
        assert_eq!(
            c.take_commands(),
            vec![Command::Send {
                to: ShardId(1),
                messages: vec![ToParticipant::Prepare {
                    tx: tx.id,
                    keys: vec![to]
                }]
            }]
        );
        c.handle_message(
            2,
            ToCoordinator::Prepared {
                tx: tx.id,
                shard: ShardId(1),
                values: vec![(to, Some(5))],
            },
        );
        let writes = vec![(ShardId(0), vec![(from, 70)]), (ShardId(1), vec![(to, 35)])];
        assert_eq!(
            c.take_commands(),
            vec![
                Command::PersistCommit { tx: tx.id, writes },
                Command::Send {
                    to: ShardId(0),
                    messages: vec![ToParticipant::Commit {
                        tx: tx.id,
                        writes: vec![(from, 70)]
                    }]
                },
                Command::Send {
                    to: ShardId(1),
                    messages: vec![ToParticipant::Commit {
                        tx: tx.id,
                        writes: vec![(to, 35)]
                    }]
                },
                Command::SetTimer { at_ms: 1_002 },
            ]
        );
        c.handle_message(
            3,
            ToCoordinator::Committed {
                tx: tx.id,
                shard: ShardId(0),
            },
        );
        assert_eq!(c.take_commands(), vec![]);
        c.handle_message(
            4,
            ToCoordinator::Committed {
                tx: tx.id,
                shard: ShardId(1),
            },
        );
        assert_eq!(
            c.take_commands(),
            vec![Command::Reply(Receipt {
                tx_id: tx.id,
                status: Status::Committed { output: 0 }
            })]
        );
        assert_eq!(c.in_flight(), 0);
    }

    /// A transaction that fails on the locked values aborts on every shard
    /// with the contract's error and persists nothing.
    #[test]
    fn failing_execution_aborts_everywhere() {
        let (mut c, tx, from, to) = setup();
        c.begin(0, tx.clone());
        c.take_commands();
        c.handle_message(
            1,
            ToCoordinator::Prepared {
                tx: tx.id,
                shard: ShardId(0),
                values: vec![(from, Some(10))],
            },
        );
        c.take_commands();
        c.handle_message(
            2,
            ToCoordinator::Prepared {
                tx: tx.id,
                shard: ShardId(1),
                values: vec![(to, Some(0))],
            },
        );
        assert_eq!(
            c.take_commands(),
            vec![
                Command::Send {
                    to: ShardId(0),
                    messages: vec![ToParticipant::Abort { tx: tx.id }]
                },
                Command::Send {
                    to: ShardId(1),
                    messages: vec![ToParticipant::Abort { tx: tx.id }]
                },
                Command::Reply(Receipt {
                    tx_id: tx.id,
                    status: Status::Failed(TxError::InsufficientFunds {
                        key: from,
                        needed: 30,
                        available: 10
                    }),
                }),
            ]
        );
    }

    /// A refusal aborts, backs off, and retries with fresh prepares.
    #[test]
    fn refusal_backs_off_and_retries() {
        let (mut c, tx, from, _) = setup();
        c.begin(0, tx.clone());
        c.take_commands();
        let holder = TxId::from_u128(1);
        c.handle_message(
            1,
            ToCoordinator::Refused {
                tx: tx.id,
                shard: ShardId(0),
                key: from,
                holder,
            },
        );
        assert_eq!(
            c.take_commands(),
            vec![
                Command::Send {
                    to: ShardId(0),
                    messages: vec![ToParticipant::Abort { tx: tx.id }]
                },
                Command::Send {
                    to: ShardId(1),
                    messages: vec![ToParticipant::Abort { tx: tx.id }]
                },
                Command::SetTimer { at_ms: 2 },
            ]
        );
        c.handle_timeout(1);
        assert_eq!(c.take_commands(), vec![]);
        c.handle_timeout(2);
        assert_eq!(
            c.take_commands(),
            vec![
                Command::Send {
                    to: ShardId(0),
                    messages: vec![ToParticipant::Prepare {
                        tx: tx.id,
                        keys: vec![from]
                    }]
                },
                Command::SetTimer { at_ms: 1_002 },
            ]
        );
    }

    /// Missing votes abort at the deadline; missing commit acks re-send.
    #[test]
    fn timeouts_abort_preparing_and_resend_commits() {
        let (mut c, tx, from, to) = setup();
        c.begin(0, tx.clone());
        c.take_commands();
        c.handle_timeout(999);
        assert_eq!(c.take_commands(), vec![]);
        c.handle_timeout(1_000);
        let commands = c.take_commands();
        assert_eq!(commands.len(), 3, "{commands:?}");
        assert!(
            matches!(&commands[2], Command::Reply(r) if matches!(r.error(), Some(TxError::CrossShardAborted { .. })))
        );

        let (mut c, tx, ..) = setup();
        c.begin(0, tx.clone());
        c.handle_message(
            1,
            ToCoordinator::Prepared {
                tx: tx.id,
                shard: ShardId(0),
                values: vec![(from, Some(100))],
            },
        );
        c.handle_message(
            1,
            ToCoordinator::Prepared {
                tx: tx.id,
                shard: ShardId(1),
                values: vec![(to, Some(0))],
            },
        );
        c.handle_message(
            2,
            ToCoordinator::Committed {
                tx: tx.id,
                shard: ShardId(0),
            },
        );
        c.take_commands();
        c.handle_timeout(1_001);
        assert_eq!(
            c.take_commands(),
            vec![
                Command::Send {
                    to: ShardId(1),
                    messages: vec![ToParticipant::Commit {
                        tx: tx.id,
                        writes: vec![(to, 30)]
                    }]
                },
                Command::SetTimer { at_ms: 2_001 },
            ]
        );
    }

    /// A participant queues a prepare behind held keys and grants it when
    /// the holder commits; aborts drop queued prepares; duplicates are
    /// harmless.
    #[test]
    fn participant_queues_and_grants_in_order() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let other = Key::balance(AccountId(2), AssetId::COIN);
        let (a, b, c) = (TxId::from_u128(1), TxId::from_u128(2), TxId::from_u128(3));
        let mut p = Participant::new(ShardId(0));
        assert_eq!(p.prepare(a, vec![key]), None);
        assert_eq!(p.take_granted(), vec![(a, vec![key])]);
        assert!(p.is_locked(&key));
        assert_eq!(p.prepare(b, vec![key, other]), None);
        // c wants only `other`, which is free, but b waits for it first.
        assert_eq!(p.prepare(c, vec![other]), None);
        assert_eq!(p.take_granted(), vec![]);
        let outcome = p.commit(a, vec![(key, 9)]);
        assert_eq!(outcome.apply, vec![(key, 9)]);
        assert_eq!(
            outcome.reply,
            ToCoordinator::Committed {
                tx: a,
                shard: ShardId(0)
            }
        );
        assert_eq!(p.take_granted(), vec![(b, vec![key, other])]);
        assert_eq!(
            p.commit(a, vec![(key, 9)]).apply,
            vec![],
            "duplicate commit applies nothing"
        );
        p.abort(b);
        assert_eq!(p.take_granted(), vec![(c, vec![other])]);
        p.abort(c);
        assert!(!p.has_locks());
    }
}
