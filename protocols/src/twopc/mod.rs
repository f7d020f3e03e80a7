//! Two-phase commit for cross-shard transactions, as sans-IO state machines.
//!
//! A cross-shard transaction declares keys on several shards. The
//! coordinator asks each shard to *prepare*: lock its keys and send their
//! values. Once every shard has voted, the coordinator executes the
//! transaction on those values (any contract, not only transfers: an AMM
//! swap's output simply flows from the pool's keys to the trader's) and
//! decides: commit, with each shard's writes, or abort. Native calls run
//! inline; a round whose members call user code hands them to the runtime
//! instead ([`Command::Execute`]), which runs them on a worker and gives
//! the result back ([`Coordinator::executed`]), so that a slow contract
//! delays only its own round, never the coordinator's loop. Locked keys make the
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
//! Grouped rounds: transactions admitted together (see
//! [`CoordinatorConfig::max_active`]) that share a key run as one *unit*
//! under a group id ([`group_id`]): one prepare per shard for the union of
//! their keys, one vote per shard, then the members executed one after
//! another in admission order on the collected values, each seeing the
//! writes of those before it. A member that fails on its own (slippage,
//! insufficient funds) fails alone and writes nothing; the others commit in
//! one logged decision ([`Command::PersistCommit`] names every committed
//! member with its output) and one commit per shard with the unit's net
//! writes. To shards a unit is simply a transaction with more keys, so
//! everything below holds for groups unchanged: atomicity (one decision),
//! isolation (the unit holds all its keys until its commit is applied,
//! and members run in a serial order), deadlock freedom (the same shard
//! order), recovery and idempotency (keyed by the unit's id and round). On
//! a hot key this turns one lock hand-off per transaction into one per
//! group. Groups are bounded ([`CoordinatorConfig::max_group`],
//! [`CoordinatorConfig::max_group_keys`]).
//!
//! A lost message delays a round instead of aborting it: a prepare queued
//! behind other locks is answered with [`ToCoordinator::Queued`], and the
//! coordinator waits on (lock waits end: the shard order rules out
//! deadlock and every holder is decided in time); a prepare that draws no
//! answer in time is sent again ([`CoordinatorConfig::prepare_resends`])
//! before the unit fails.
//!
//! Presumed abort: only commit decisions are persisted, before any shard
//! hears of them. A transaction with no persisted decision is aborted.
//! After a restart the coordinator re-sends every logged commit that not
//! all shards acknowledged ([`Coordinator::recover_commit`]) and knows
//! nothing else, so it answers every other question with an abort.
//!
//! Recovery on the shard side: a shard logs each lock it grants before it
//! votes, so prepared locks survive its restart. A shard that holds a lock
//! and hears no decision asks the coordinator ([`ToCoordinator::Inquire`],
//! driven by [`Participant::handle_timeout`]) and keeps asking. The answer
//! is the commit with that shard's writes, an abort if the coordinator has
//! no record (presumed abort) or has given up that round, and nothing while
//! the round still collects votes: the coordinator's own vote deadline
//! decides those, and the shard asks again.
//!
//! Every message may be lost, duplicated, delayed or reordered:
//! - a refused transaction is retried under the same id, and a client may
//!   re-submit an id to a restarted coordinator, so prepares, aborts and
//!   votes carry the round ([`Attempt`]), never reused across retries or
//!   restarts; an abort releases only locks of its round or earlier, a vote
//!   counts only for the current round, and the coordinator aborts only
//!   rounds it has heard of;
//! - a late prepare must not lock a finished transaction again: were it to
//!   lock a committed one, a re-sent commit would apply its writes twice.
//!   Rounds are numbered in the order they begin, and the coordinator tells
//!   each shard it writes to the lowest round it has not decided
//!   ([`ToParticipant::Decided`]). A shard ignores prepares of rounds below
//!   that floor, and remembers the transactions it saw finish only until
//!   the floor passes their round. So no bound on how long a message can
//!   stay in the network is assumed, and the memory holds about the rounds
//!   in flight, whatever the throughput. The floor and the memory survive
//!   restarts: log replay rebuilds the memory, and a shard snapshot carries
//!   both ([`Participant::finished`], [`Participant::restore_finished`]);
//! - commits, aborts and inquiries are idempotent on both sides.
//!
//! Neither machine does I/O or reads a clock: the caller passes `now_ms`
//! and executes the [`Command`]s they return.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use smallvec::SmallVec;

use serde::{Deserialize, Serialize};

use crate::committed::CommittedMemory;
use crate::contracts::Registry;
use crate::exec::execute_with_values;
use crate::fastmap::{FastMap, FastSet, IdMap, PREFETCH_AHEAD};
use crate::locks::{Granted, LockTable};
use crate::model::{
    AbortReason, Key, Output, Receipt, ShardId, Status, Transaction, TxError, TxId, Value,
};
use crate::placement::Placement;
use crate::records::ShardRecord;

/// The number of a cross-shard transaction's prepare round. The
/// coordinator retries a refused transaction under the same id, and a
/// client may re-submit a transaction id; numbering the rounds lets a
/// shard tell a late or duplicated message of an earlier round from the
/// current one. Rounds are never reused: the high 32 bits are the
/// coordinator's epoch ([`Coordinator::with_epoch`]), which grows with
/// every restart, and the low 32 bits count the rounds it began.
pub type Attempt = u64;

/// An abort that covers every round of a transaction. The coordinator
/// itself aborts only rounds it has heard of, even when it has no record
/// of the transaction (presumed abort): a delayed abort of every round
/// could release the lock of a later round of a re-submitted transaction.
pub const EVERY_ATTEMPT: Attempt = Attempt::MAX;

/// A committed transaction's writes on one shard. Decided once and then
/// only read: the decision's log record, the commit messages (and their
/// re-sends) and the in-flight record share one allocation, as do a shard's
/// log record and the writes it applies.
pub type Writes = Arc<[(Key, Value)]>;

/// The transactions a commit decision commits, with their outputs, in the
/// order they ran. Shared like [`Writes`].
pub type Committed = Arc<crate::records::Commits>;

/// The high 64 bits of every group id ([`group_id`]): "parash" in ASCII,
/// then the version nibble of a custom (version 8) UUID. Random (version
/// 4) ids never have them, nor do small numbers; a client's transaction
/// whose id has them is refused.
pub const GROUP_ID_HIGH: u64 = 0x7061_7261_7368_8000;

/// The id of a group whose first round is `round`: rounds are never
/// reused, so neither are group ids.
pub fn group_id(round: Attempt) -> TxId {
    TxId::from_u128((u128::from(GROUP_ID_HIGH) << 64) | u128::from(round))
}

/// Whether `id` names a group rather than a client's transaction.
pub fn is_group_id(id: &TxId) -> bool {
    (id.0.as_u128() >> 64) as u64 == GROUP_ID_HIGH
}

/// A message from the coordinator to a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToParticipant {
    /// Lock `keys` for `tx` and report their values.
    Prepare {
        /// The transaction.
        tx: TxId,
        /// The prepare round.
        attempt: Attempt,
        /// This shard's keys of it.
        keys: Vec<Key>,
    },
    /// Apply `writes` and release `tx`'s locks.
    Commit {
        /// The transaction.
        tx: TxId,
        /// This shard's writes.
        writes: Writes,
    },
    /// Release `tx`'s locks of every round up to `attempt` without applying
    /// anything.
    Abort {
        /// The transaction.
        tx: TxId,
        /// The latest round aborted ([`EVERY_ATTEMPT`]: all of them).
        attempt: Attempt,
    },
    /// Every round below `below` is decided: a prepare of one of them is
    /// late (or duplicated) and must take no lock, and the shard need not
    /// remember transactions that finished in them.
    Decided {
        /// The coordinator's lowest undecided round.
        below: Attempt,
    },
}

/// A message from a shard to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// The shard locked its keys of `tx`; these are their values.
    Prepared {
        /// The transaction.
        tx: TxId,
        /// The prepare round the lock belongs to.
        attempt: Attempt,
        /// The shard.
        shard: ShardId,
        /// The values (`None`: the key does not exist).
        values: Vec<(Key, Option<Value>)>,
    },
    /// The shard could not lock `key`: `holder` holds it.
    Refused {
        /// The transaction.
        tx: TxId,
        /// The prepare round refused.
        attempt: Attempt,
        /// The shard.
        shard: ShardId,
        /// The contended key.
        key: Key,
        /// The transaction holding it.
        holder: TxId,
    },
    /// The shard queued `tx`'s prepare behind locks other transactions
    /// hold: its vote comes when they are released. Sent again for every
    /// prepare of the round while it waits, so that the coordinator, which
    /// then knows the shard is alive and the round is only waiting, does
    /// not give it up.
    Queued {
        /// The transaction.
        tx: TxId,
        /// The prepare round queued.
        attempt: Attempt,
        /// The shard.
        shard: ShardId,
    },
    /// The shard applied the commit of `tx`.
    Committed {
        /// The transaction.
        tx: TxId,
        /// The shard.
        shard: ShardId,
    },
    /// The shard has held `tx`'s locks for a while without hearing the
    /// decision and asks for it (sent again after every timeout).
    Inquire {
        /// The transaction.
        tx: TxId,
        /// The prepare round the lock belongs to.
        attempt: Attempt,
        /// The shard.
        shard: ShardId,
    },
}

impl ToCoordinator {
    /// The transaction the message is about.
    pub fn tx(&self) -> TxId {
        match self {
            ToCoordinator::Prepared { tx, .. }
            | ToCoordinator::Refused { tx, .. }
            | ToCoordinator::Queued { tx, .. }
            | ToCoordinator::Committed { tx, .. }
            | ToCoordinator::Inquire { tx, .. } => *tx,
        }
    }
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
    /// Durably record the commit decision of round unit `tx` before
    /// anything else of this batch is sent.
    PersistCommit {
        /// The unit: a transaction's id, or its group's ([`group_id`]).
        tx: TxId,
        /// The transactions it commits with their outputs: the transaction
        /// alone, or the group's members that succeeded.
        committed: Committed,
        /// Every shard's writes.
        writes: Vec<(ShardId, Writes)>,
    },
    /// Durably record that rounds of `epoch` are in use, before anything
    /// else of this batch is sent: the coordinator ran through the 2^32
    /// rounds of its epoch, and the next incarnation must start above this
    /// one. Comes with the commit decisions of the batch, first.
    PersistEpoch {
        /// The epoch now in use.
        epoch: u32,
    },
    /// Every shard applied the commit of unit `tx`: a record of it may be
    /// logged whenever convenient (it only saves re-driving the commit
    /// after a restart).
    Done {
        /// The unit.
        tx: TxId,
    },
    /// Hand the transaction's receipt to its client.
    Reply(Receipt),
    /// Call [`Coordinator::handle_timeout`] at `at_ms`.
    SetTimer {
        /// When.
        at_ms: u64,
    },
    /// Run the unit's user contracts off the coordinator's message loop
    /// ([`Execution::run`], on a worker) and hand back what it gave
    /// ([`Coordinator::executed`]). Native calls run inline; user code may
    /// take as long as its gas allows, and other rounds must not wait for
    /// it.
    Execute(Execution),
}

/// A unit whose every shard has voted and whose members call user code:
/// see [`Command::Execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The unit: a transaction's id, or its group's ([`group_id`]).
    pub tx: TxId,
    /// The round the votes belong to.
    pub attempt: Attempt,
    members: SmallVec<[Arc<Transaction>; 1]>,
    values: Vec<(Key, Option<Value>)>,
}

impl Execution {
    /// Runs the unit's members one after another on the values its shards
    /// sent, as the coordinator would inline. Deterministic; may run on any
    /// thread, for as long as the contracts take.
    pub fn run(&self, registry: &Registry) -> Executed {
        Executed {
            tx: self.tx,
            attempt: self.attempt,
            ran: run_members(&self.members, &self.values, registry),
        }
    }
}

/// What running an [`Execution`] gave, for [`Coordinator::executed`].
#[derive(Debug)]
pub struct Executed {
    tx: TxId,
    attempt: Attempt,
    ran: Ran,
}

/// Coordinator tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// How long a shard may take to vote (each shard in turn) or to
    /// acknowledge a commit.
    pub timeout_ms: u64,
    /// How many new rounds a unit gets after shards refused it for lock
    /// conflicts (their queues were full) before its transactions fail.
    pub max_retries: u32,
    /// Back-off before the first retry; doubles with every retry.
    pub retry_backoff_ms: u64,
    /// The most cross-shard transactions in flight, waiting ones included;
    /// more are refused.
    pub max_in_flight: usize,
    /// The most units (transactions, or groups of them) in two-phase
    /// commit at once; more wait, in arrival order, and start together
    /// once a quarter of the room is free (so that their prepares travel in
    /// batches, and transactions that share keys form groups). A
    /// transaction that joins a group takes no room of its own. Every active
    /// transaction holds locks and records on its shards and here, and
    /// with fewer of them those stay in the caches: on 2 cores, four
    /// clients' batches of 10,000 transfers over 100k accounts commit 1.7x
    /// as fast with 2,048 active as with all 40,000 (`parashard bench`).
    /// 0 counts as 1 (nothing could ever start).
    pub max_active: usize,
    /// How many of its latest commits the coordinator remembers, to answer
    /// a re-submitted transaction id with its receipt instead of running it
    /// again (see [`crate::committed`]).
    pub remember_committed: usize,
    /// The most transactions one group may hold. Transactions admitted
    /// together that share a key run as one group: one round of prepares,
    /// votes, decision and commits for all of them, executed one after
    /// another in admission order on the values the shards sent (see the
    /// module docs). 1 turns grouping off.
    pub max_group: usize,
    /// The most distinct keys one group may lock.
    pub max_group_keys: usize,
    /// How often a prepare that draws no vote within `timeout_ms` is sent
    /// again before its round is given up: a lost message delays a round
    /// rather than aborting it (prepares are idempotent).
    pub prepare_resends: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> CoordinatorConfig {
        CoordinatorConfig {
            timeout_ms: 1_000,
            max_retries: 16,
            retry_backoff_ms: 1,
            max_in_flight: 100_000,
            max_active: 2_048,
            remember_committed: crate::committed::DEFAULT_REMEMBERED,
            max_group: 512,
            max_group_keys: 2_048,
            prepare_resends: 3,
        }
    }
}

/// A few values by shard, in shard order. A transaction spans a few
/// shards, and its entries stay inline in its in-flight record rather than
/// in tree nodes of their own (the coordinator's time went to fetching
/// those nodes from memory).
#[derive(Debug, Clone)]
struct PerShard<V>(SmallVec<[(ShardId, V); 2]>);

impl<V> Default for PerShard<V> {
    fn default() -> Self {
        PerShard(SmallVec::new())
    }
}

impl<V> PerShard<V> {
    fn position(&self, shard: &ShardId) -> Result<usize, usize> {
        self.0.binary_search_by_key(shard, |(s, _)| *s)
    }

    fn get(&self, shard: &ShardId) -> Option<&V> {
        self.position(shard).ok().map(|i| &self.0[i].1)
    }

    fn contains_key(&self, shard: &ShardId) -> bool {
        self.position(shard).is_ok()
    }

    fn insert(&mut self, shard: ShardId, value: V) {
        match self.position(&shard) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (shard, value)),
        }
    }

    fn remove(&mut self, shard: &ShardId) -> Option<V> {
        self.position(shard).ok().map(|i| self.0.remove(i).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (&ShardId, &V)> + '_ {
        self.0.iter().map(|(s, v)| (s, v))
    }

    fn keys(&self) -> impl Iterator<Item = &ShardId> + '_ {
        self.0.iter().map(|(s, _)| s)
    }

    fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<V> FromIterator<(ShardId, V)> for PerShard<V> {
    fn from_iter<I: IntoIterator<Item = (ShardId, V)>>(iter: I) -> Self {
        let mut map = PerShard::default();
        for (shard, value) in iter {
            map.insert(shard, value);
        }
        map
    }
}

impl<V> IntoIterator for PerShard<V> {
    type Item = (ShardId, V);
    type IntoIter = smallvec::IntoIter<[(ShardId, V); 2]>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting for votes; `values` holds the shards that voted yes.
    Preparing {
        values: PerShard<Vec<(Key, Option<Value>)>>,
    },
    /// Refused; waiting to retry at `at_ms`.
    Backoff { at_ms: u64 },
    /// Every shard voted; the members' user contracts run off the loop
    /// ([`Command::Execute`]). The round holds its locks until
    /// [`Coordinator::executed`] decides it; no timer runs meanwhile (gas
    /// bounds the run), and inquiries wait.
    Executing,
    /// Decided commit; waiting for the shards that have not applied it.
    Committing {
        /// The writes of the shards that have not applied it yet.
        writes: PerShard<Writes>,
        committed: Committed,
    },
}

/// Messages for the shards, batched per shard until the runtime takes them.
#[derive(Debug, Default)]
struct Outbox {
    batches: BTreeMap<ShardId, Vec<ToParticipant>>,
    /// The longest batch last taken, up to [`Outbox::MAX_RESERVED`]: new
    /// batches start with room for as many, rather than growing (and
    /// copying) their way there each time.
    capacity: usize,
}

impl Outbox {
    /// The most messages a new batch reserves room for: a burst should not
    /// make every later batch large.
    const MAX_RESERVED: usize = 1024;

    fn post(&mut self, to: ShardId, message: ToParticipant) {
        let capacity = self.capacity;
        self.batches
            .entry(to)
            .or_insert_with(|| Vec::with_capacity(capacity))
            .push(message);
    }

    fn len(&self) -> usize {
        self.batches.len()
    }

    fn take(&mut self) -> BTreeMap<ShardId, Vec<ToParticipant>> {
        let batches = std::mem::take(&mut self.batches);
        // One more for the floor a batch may carry.
        self.capacity = batches
            .values()
            .map(|b| b.len() + 1)
            .max()
            .unwrap_or(0)
            .min(Self::MAX_RESERVED);
        batches
    }
}

/// The in-flight records by transaction id: a small index into a slab of
/// records. Every message looks its transaction's record up, at a random
/// place among tens of megabytes of them; the index stays small enough
/// for the caches, and the record's address is known early enough to fetch
/// it ahead ([`Flights::prefetch`]).
#[derive(Debug, Default)]
struct Flights {
    index: FastMap<TxId, u32>,
    slab: Vec<Option<InFlight>>,
    /// Free places in `slab`.
    free: Vec<u32>,
}

impl Flights {
    /// The number of units in flight.
    fn len(&self) -> usize {
        self.index.len()
    }

    fn contains_key(&self, id: &TxId) -> bool {
        self.index.contains_key(id)
    }

    fn get(&self, id: &TxId) -> Option<&InFlight> {
        let &at = self.index.get(id)?;
        self.slab[at as usize].as_ref()
    }

    fn get_mut(&mut self, id: &TxId) -> Option<&mut InFlight> {
        let &at = self.index.get(id)?;
        self.slab[at as usize].as_mut()
    }

    /// Inserts `flight` under `id`, replacing any record of it.
    fn insert(&mut self, id: TxId, flight: InFlight) {
        if let Some(&at) = self.index.get(&id) {
            self.slab[at as usize] = Some(flight);
            return;
        }
        let at = match self.free.pop() {
            Some(at) => {
                self.slab[at as usize] = Some(flight);
                at
            }
            None => {
                self.slab.push(Some(flight));
                u32::try_from(self.slab.len() - 1).expect("in-flight records fit u32")
            }
        };
        self.index.insert(id, at);
    }

    fn remove(&mut self, id: &TxId) -> Option<InFlight> {
        let at = self.index.remove(id)?;
        self.free.push(at);
        self.slab[at as usize].take()
    }

    fn values(&self) -> impl Iterator<Item = &InFlight> + '_ {
        self.slab.iter().flatten()
    }

    /// Starts loading `id`'s record into the cache.
    fn prefetch(&self, id: &TxId) {
        if let Some(&at) = self.index.get(id) {
            let record = &self.slab[at as usize];
            crate::state::prefetch_bytes(record, std::mem::size_of_val(record));
        }
    }
}

/// The keys `members` declare on `shard`: what a prepare asks that shard
/// to lock. A lone transaction's come in declaration order; a group's are
/// sorted, each once. Worked out per prepare rather than kept: most units
/// prepare each shard once.
fn keys_on(placement: &Placement, members: &[Arc<Transaction>], shard: ShardId) -> Vec<Key> {
    let mut keys: Vec<Key> = members
        .iter()
        .flat_map(|tx| {
            tx.access
                .keys()
                .copied()
                .chain(crate::auth::implicit_key(tx))
        })
        .filter(|key| placement.shard_of(key) == shard)
        .collect();
    if members.len() > 1 {
        keys.sort_unstable();
        keys.dedup();
    }
    keys
}

/// A unit of two-phase commit: one transaction, or a group of them that
/// share keys, with its rounds.
#[derive(Debug)]
struct InFlight {
    /// The unit's id: its transaction's, or its group's ([`group_id`]).
    id: TxId,
    /// What its rounds run: one transaction, or a group's members in the
    /// order they run. Empty for a commit recovered from the log, which
    /// runs nothing more.
    members: SmallVec<[Arc<Transaction>; 1]>,
    /// The shards its members declare keys on (its keys there:
    /// [`keys_on`]).
    shards: PerShard<()>,
    phase: Phase,
    deadline_ms: u64,
    attempt: Attempt,
    /// New rounds so far.
    retries: u32,
    /// Prepares re-sent in the current round.
    resends: u32,
}

/// Transactions being admitted together, grouped by the keys they share
/// before their first round begins.
#[derive(Debug, Default)]
struct Forming {
    groups: Vec<FormingGroup>,
    /// The latest forming group that holds each key.
    by_key: FastMap<Key, usize>,
}

#[derive(Debug, Default)]
struct FormingGroup {
    members: SmallVec<[Arc<Transaction>; 1]>,
    /// The members' declared keys, counted with repeats: a bound on the
    /// distinct keys the group locks.
    keys: usize,
}

/// What running a unit's members on the values its shards sent gave.
#[derive(Debug)]
struct Ran {
    /// The members that succeeded, with their outputs, in the order they
    /// ran. Inline for a lone transaction: the decision's shared copy is
    /// then its one allocation.
    committed: crate::records::Commits,
    /// The members that failed, each for its own reason; they write
    /// nothing.
    failed: Vec<(TxId, TxError)>,
    /// The unit's net writes: each key's value after the last member that
    /// wrote it, in the order keys were first written.
    writes: Vec<(Key, Value)>,
}

/// Runs `members` one after another on `values` (what the shards sent for
/// the unit's keys), each seeing the writes of those before it. A member
/// that fails writes nothing and does not stop the others.
fn run_members(
    members: &[Arc<Transaction>],
    values: &[(Key, Option<Value>)],
    registry: &Registry,
) -> Ran {
    // An unsigned member whose sender holds a public key fails before it
    // runs, judged on the sender's sequence key where the member stands.
    let refused = |tx: &Transaction, value_of: &dyn Fn(&Key) -> Option<Value>| {
        crate::auth::implicit_key(tx)
            .and_then(|key| crate::auth::refuse_unsigned(tx, value_of(&key)))
    };
    if let [tx] = members {
        let value_of = |key: &Key| values.iter().find(|(k, _)| k == key).and_then(|(_, v)| *v);
        let outcome = match refused(tx, &value_of) {
            Some(error) => Err(error),
            None => execute_with_values(tx, values, registry),
        };
        return match outcome {
            Ok((output, writes)) => Ran {
                committed: [(tx.id, output)].into_iter().collect(),
                failed: Vec::new(),
                writes,
            },
            Err(error) => Ran {
                committed: Default::default(),
                failed: vec![(tx.id, error)],
                writes: Vec::new(),
            },
        };
    }
    // Each key's current value, and whether a member wrote it.
    let mut current: FastMap<Key, (Option<Value>, bool)> = values
        .iter()
        .map(|&(key, value)| (key, (value, false)))
        .collect();
    let mut written: Vec<Key> = Vec::new();
    let mut ran = Ran {
        committed: crate::records::Commits::with_capacity(members.len()),
        failed: Vec::new(),
        writes: Vec::new(),
    };
    for tx in members {
        let own: SmallVec<[(Key, Option<Value>); 8]> = tx
            .access
            .keys()
            .map(|key| (*key, current.get(key).and_then(|(value, _)| *value)))
            .collect();
        let value_of = |key: &Key| current.get(key).and_then(|(value, _)| *value);
        let outcome = match refused(tx, &value_of) {
            Some(error) => Err(error),
            None => execute_with_values(tx, &own, registry),
        };
        match outcome {
            Ok((output, writes)) => {
                for (key, value) in writes {
                    let entry = current.entry(key).or_insert((None, false));
                    if !entry.1 {
                        written.push(key);
                    }
                    *entry = (Some(value), true);
                }
                ran.committed.push(tx.id, &output);
            }
            Err(error) => ran.failed.push((tx.id, error)),
        }
    }
    ran.writes = written
        .into_iter()
        .map(|key| (key, current[&key].0.expect("written")))
        .collect();
    ran
}

/// The coordinator's round numbers.
#[derive(Debug, Default)]
struct Rounds {
    /// The next round to begin; see [`Attempt`].
    next: Attempt,
    /// Rounds given out, in order, with their transactions: the front is
    /// the lowest that may be undecided (entries of decided rounds are
    /// dropped when they reach the front).
    begun: VecDeque<(Attempt, TxId)>,
}

impl Rounds {
    /// A round of `id` numbered as never before by this incarnation.
    fn begin(&mut self, id: TxId) -> Attempt {
        let attempt = self.next;
        self.next += 1;
        // Past 2^32 rounds the count carries into the epoch: the
        // coordinator logs the new epoch before any of its rounds is sent
        // (see `Coordinator::take_commands`).
        self.begun.push_back((attempt, id));
        attempt
    }
}

/// The coordinator state machine.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    placement: Placement,
    registry: std::sync::Arc<Registry>,
    in_flight: Flights,
    /// The members of multi-transaction units in flight, with their unit's
    /// id (a lone transaction's unit has its own id).
    grouped: FastMap<TxId, TxId>,
    /// Transactions in flight and not yet answered (units count their
    /// members): what [`CoordinatorConfig::max_active`] bounds.
    active: usize,
    /// Transactions waiting for room among the active ones
    /// ([`CoordinatorConfig::max_active`]), in arrival order.
    waiting: VecDeque<Transaction>,
    /// The ids in `waiting`.
    waiting_ids: IdMap<()>,
    /// Timers set, by time (one bucket per millisecond: a batch's
    /// transactions share one): what [`Coordinator::handle_timeout`]
    /// visits. An entry may be stale (its unit answered or re-timed); the
    /// visit checks.
    due: BTreeMap<u64, Vec<TxId>>,
    outbox: Outbox,
    commands: Vec<Command>,
    rounds: Rounds,
    /// The floor last sent to each shard ([`ToParticipant::Decided`]).
    floor_sent: BTreeMap<ShardId, Attempt>,
    /// The latest commits, to answer re-submissions.
    committed: CommittedMemory,
    /// The latest time a caller passed in: when waiting transactions
    /// admitted by [`Coordinator::take_commands`] start.
    now_ms: u64,
    /// Counts of units and groups, for reports.
    stats: CoordinatorStats,
    /// The greatest epoch known to be in the log: this incarnation's, or
    /// one its rounds carried into ([`Command::PersistEpoch`]).
    epoch_logged: u32,
}

/// What a coordinator has decided so far, counted by unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoordinatorStats {
    /// Commit decisions.
    pub commits: u64,
    /// Commit decisions of groups (units of more than one transaction).
    pub group_commits: u64,
    /// Transactions committed in groups.
    pub grouped_transactions: u64,
    /// The most transactions one unit held.
    pub largest_group: u64,
    /// Rounds whose user contracts ran off the loop ([`Command::Execute`]).
    pub executions: u64,
}

impl Coordinator {
    /// A coordinator for shards laid out by `placement`.
    pub fn new(
        config: CoordinatorConfig,
        placement: Placement,
        registry: std::sync::Arc<Registry>,
    ) -> Coordinator {
        Coordinator {
            committed: CommittedMemory::new(config.remember_committed),
            config: CoordinatorConfig {
                max_active: config.max_active.max(1),
                max_group: config.max_group.max(1),
                ..config
            },
            placement,
            registry,
            in_flight: Flights::default(),
            grouped: FastMap::default(),
            active: 0,
            waiting: VecDeque::new(),
            waiting_ids: IdMap::default(),
            due: BTreeMap::new(),
            outbox: Outbox::default(),
            commands: Vec::new(),
            rounds: Rounds::default(),
            floor_sent: BTreeMap::new(),
            now_ms: 0,
            stats: CoordinatorStats::default(),
            epoch_logged: 0,
        }
    }

    /// Sets this incarnation's epoch, which must be greater than every
    /// earlier incarnation's: rounds it begins then cannot be confused with
    /// an earlier incarnation's rounds of the same transaction id, whose
    /// messages may still be in flight.
    pub fn with_epoch(mut self, epoch: u32) -> Coordinator {
        self.rounds.next = Attempt::from(epoch) << 32;
        self.epoch_logged = epoch;
        self
    }

    /// The lowest round that may be undecided: one collecting votes or
    /// waiting to (after a refusal its next round is numbered at once, and
    /// prepared later). Every earlier round, an earlier incarnation's
    /// included, is committed or aborted (presumed abort).
    pub fn decided_below(&mut self) -> Attempt {
        while let Some(&(attempt, id)) = self.rounds.begun.front() {
            let open = self.in_flight.get(&id).is_some_and(|flight| {
                flight.attempt == attempt && !matches!(flight.phase, Phase::Committing { .. })
            });
            if open {
                return attempt;
            }
            self.rounds.begun.pop_front();
        }
        self.rounds.next
    }

    /// The number of transactions not yet answered, waiting ones included.
    pub fn in_flight(&self) -> usize {
        self.active + self.waiting.len()
    }

    /// Counts of what the coordinator decided.
    pub fn stats(&self) -> CoordinatorStats {
        self.stats
    }

    /// Starts loading what [`Coordinator::begin`] of `id` will look up at
    /// random (the waiting ids, the commit memory): callers with many
    /// transactions to begin call it a few ahead.
    pub fn prefetch_begin(&self, id: &TxId) {
        self.waiting_ids.prefetch(id);
        self.committed.prefetch(id);
    }

    /// Takes a cross-shard transaction: it waits for room among the active
    /// ones ([`CoordinatorConfig::max_active`]) and starts when
    /// [`Coordinator::take_commands`] next admits, grouped with the
    /// transactions admitted with it that share its keys. A transaction
    /// that committed already (a client's retry) is answered at once.
    pub fn begin(&mut self, now_ms: u64, tx: Transaction) {
        self.now_ms = now_ms;
        if is_group_id(&tx.id) {
            let reason = format!("{} is in the range reserved for groups", tx.id);
            self.reply(tx.id, TxError::InvalidInput { reason });
            return;
        }
        if self.answered_already(&tx) {
            return;
        }
        if self.in_flight() >= self.config.max_in_flight {
            let reason = AbortReason::CoordinatorOverloaded {
                in_flight: self.in_flight(),
                max: self.config.max_in_flight,
            };
            self.reply(tx.id, TxError::CrossShardAborted { reason });
            return;
        }
        if let Err(error) = tx.check_limits() {
            self.reply(tx.id, error);
            return;
        }
        self.waiting_ids.insert(tx.id, ());
        self.waiting.push_back(tx);
    }

    /// Whether `tx` needs no new round: it is active or waiting (a
    /// duplicate submission; the first will be answered), or it committed
    /// already (a client's retry), which is answered now.
    fn answered_already(&mut self, tx: &Transaction) -> bool {
        if self.in_flight.contains_key(&tx.id)
            || self.grouped.contains_key(&tx.id)
            || self.waiting_ids.contains_key(&tx.id)
        {
            return true;
        }
        if let Some(receipt) = self.committed.receipt(&tx.id) {
            self.commands.push(Command::Reply(receipt));
            return true;
        }
        false
    }

    /// Starts waiting transactions while there is room among the active,
    /// once a quarter of it is free: they start together, grouped by the
    /// keys they share, and their prepares travel in batches.
    fn admit(&mut self, now_ms: u64) {
        let units = self.in_flight.len();
        if self.waiting.is_empty() || units + self.config.max_active / 4 > self.config.max_active {
            return;
        }
        let mut forming = Forming::default();
        while let Some(tx) = self.waiting.front() {
            // A transaction that joins a forming group takes no room of its
            // own: a burst on a hot key is admitted as a few groups.
            let joins = self.group_to_join(&forming, tx);
            if joins.is_none() && units + forming.groups.len() >= self.config.max_active {
                break;
            }
            let tx = self.waiting.pop_front().expect("looked at");
            // The waiting ids are many and each is removed at random: fetch
            // a few ahead.
            if let Some(ahead) = self.waiting.get(PREFETCH_AHEAD) {
                self.waiting_ids.prefetch(&ahead.id);
            }
            self.waiting_ids.remove(&tx.id);
            let grouping = self.config.max_group > 1;
            Self::form(&mut forming, grouping, joins, Arc::new(tx));
        }
        for group in forming.groups {
            self.start(now_ms, group.members);
        }
    }

    /// The forming group `tx` would join: the first that shares a key with
    /// it and has room for it.
    fn group_to_join(&self, forming: &Forming, tx: &Transaction) -> Option<usize> {
        if self.config.max_group == 1 {
            return None;
        }
        let keys = tx.access.len();
        tx.access
            .keys()
            .filter_map(|key| forming.by_key.get(key).copied())
            .find(|&g| {
                let group = &forming.groups[g];
                group.members.len() < self.config.max_group
                    && group.keys + keys <= self.config.max_group_keys
            })
    }

    /// Puts `tx` into forming group `joins`, or into a group of its own;
    /// with `grouping` its keys are indexed for later transactions to join.
    fn form(forming: &mut Forming, grouping: bool, joins: Option<usize>, tx: Arc<Transaction>) {
        let keys = tx.access.len();
        let g = joins.unwrap_or_else(|| {
            forming.groups.push(FormingGroup::default());
            forming.groups.len() - 1
        });
        if grouping {
            for key in tx.access.keys() {
                forming.by_key.insert(*key, g);
            }
        }
        let group = &mut forming.groups[g];
        group.keys += keys;
        group.members.push(tx);
    }

    /// Begins the first round of a unit of validated transactions.
    fn start(&mut self, now_ms: u64, members: SmallVec<[Arc<Transaction>; 1]>) {
        let mut shards = PerShard::default();
        for tx in &members {
            // The sender's shard too: it holds the sender's sequence key.
            shards.insert(self.placement.shard_of_account(tx.sender), ());
            for key in tx.access.keys() {
                shards.insert(self.placement.shard_of(key), ());
            }
        }
        let id = match members.as_slice() {
            [tx] => tx.id,
            _ => group_id(self.rounds.next),
        };
        let attempt = self.rounds.begin(id);
        if members.len() > 1 {
            for tx in &members {
                self.grouped.insert(tx.id, id);
            }
        }
        self.active += members.len();
        self.in_flight.insert(
            id,
            InFlight {
                id,
                members,
                shards,
                phase: Phase::Backoff { at_ms: now_ms },
                deadline_ms: now_ms,
                attempt,
                retries: 0,
                resends: 0,
            },
        );
        self.prepare(now_ms, id);
    }

    fn prepare(&mut self, now_ms: u64, id: TxId) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        flight.phase = Phase::Preparing {
            values: PerShard::default(),
        };
        flight.resends = 0;
        flight.deadline_ms = now_ms + self.config.timeout_ms;
        // Shards in ascending order, one at a time: see the module docs.
        let shard = *flight.shards.keys().next().expect("a transaction has keys");
        self.outbox.post(
            shard,
            ToParticipant::Prepare {
                tx: id,
                attempt: flight.attempt,
                keys: keys_on(&self.placement, &flight.members, shard),
            },
        );
        self.commands.push(Command::SetTimer {
            at_ms: flight.deadline_ms,
        });
        self.due.entry(flight.deadline_ms).or_default().push(id);
    }

    /// Handles a batch of shards' messages, in order: as
    /// [`Coordinator::handle_message`] for each, with the record of each
    /// message's transaction fetched from memory a few messages ahead.
    pub fn handle_messages(&mut self, now_ms: u64, messages: Vec<ToCoordinator>) {
        let ids: Vec<TxId> = messages.iter().map(ToCoordinator::tx).collect();
        for id in ids.iter().take(PREFETCH_AHEAD) {
            self.in_flight.prefetch(id);
        }
        for (n, message) in messages.into_iter().enumerate() {
            if let Some(id) = ids.get(n + PREFETCH_AHEAD) {
                self.in_flight.prefetch(id);
            }
            self.handle_message(now_ms, message);
        }
    }

    /// Handles a shard's message.
    pub fn handle_message(&mut self, now_ms: u64, message: ToCoordinator) {
        self.now_ms = now_ms;
        match message {
            ToCoordinator::Prepared {
                tx,
                attempt,
                shard,
                values,
            } => self.on_prepared(now_ms, tx, attempt, shard, values),
            ToCoordinator::Refused {
                tx,
                attempt,
                shard,
                key,
                holder,
            } => self.on_refused(now_ms, tx, attempt, shard, key, holder),
            ToCoordinator::Queued { tx, attempt, shard } => {
                self.on_queued(now_ms, tx, attempt, shard)
            }
            ToCoordinator::Committed { tx, shard } => self.on_committed(tx, shard),
            ToCoordinator::Inquire { tx, attempt, shard } => self.on_inquire(tx, attempt, shard),
        }
    }

    fn on_prepared(
        &mut self,
        now_ms: u64,
        id: TxId,
        attempt: Attempt,
        shard: ShardId,
        shard_values: Vec<(Key, Option<Value>)>,
    ) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            // A vote for a transaction with no record: answered, or lost
            // in a restart. Any lock behind it is stray (presumed abort),
            // and releasing it now rather than at the shard's inquiry
            // matters: after a restart, prepares queued behind each other
            // would otherwise each wait out an inquiry timeout in turn.
            self.outbox
                .post(shard, ToParticipant::Abort { tx: id, attempt });
            return;
        };
        if matches!(flight.phase, Phase::Committing { .. }) {
            // Decided: a late vote changes nothing. It must not draw an
            // abort either, even of an earlier round: a commit recovered
            // after a restart carries the new epoch's round, not the
            // committed round whose lock the shard may still hold.
            return;
        }
        if attempt < flight.attempt {
            // A vote of an aborted round: its lock may have been released
            // since, so its values may be stale; if not, release it.
            self.outbox
                .post(shard, ToParticipant::Abort { tx: id, attempt });
            return;
        }
        if attempt != flight.attempt {
            return;
        }
        let Phase::Preparing { values } = &mut flight.phase else {
            return;
        };
        if !flight.shards.contains_key(&shard) {
            return;
        }
        values.insert(shard, shard_values);
        if let Some(&next) = flight.shards.keys().find(|s| !values.contains_key(s)) {
            self.outbox.post(
                next,
                ToParticipant::Prepare {
                    tx: id,
                    attempt,
                    keys: keys_on(&self.placement, &flight.members, next),
                },
            );
            // Each shard in turn has the whole timeout to vote. The timer
            // set for the round's first deadline re-arms itself for this
            // one when it fires (see `handle_timeout`): no timer per step.
            flight.resends = 0;
            flight.deadline_ms = now_ms + self.config.timeout_ms;
            return;
        }
        if flight.members.iter().any(|tx| tx.call.is_user_code()) {
            let values = values.values().flatten().copied().collect();
            let members = flight.members.clone();
            flight.phase = Phase::Executing;
            self.stats.executions += 1;
            self.commands.push(Command::Execute(Execution {
                tx: id,
                attempt,
                members,
                values,
            }));
            return;
        }
        let all: SmallVec<[(Key, Option<Value>); 4]> = values.values().flatten().copied().collect();
        let ran = run_members(&flight.members, &all, &self.registry);
        self.decide(now_ms, id, attempt, ran);
    }

    /// Hands back an [`Execution`] the runtime ran: the round commits what
    /// its members gave, as if they had run inline. An execution of a
    /// round given up since (or of a coordinator incarnation before a
    /// restart) changes nothing.
    pub fn executed(&mut self, now_ms: u64, executed: Executed) {
        self.now_ms = now_ms;
        let Executed { tx, attempt, ran } = executed;
        let current = self
            .in_flight
            .get(&tx)
            .is_some_and(|f| f.attempt == attempt && matches!(f.phase, Phase::Executing));
        if current {
            self.decide(now_ms, tx, attempt, ran);
        }
    }

    /// Decides round `attempt` of unit `id` on what its members gave:
    /// commit the writes of those that succeeded, or abort if none did.
    fn decide(&mut self, now_ms: u64, id: TxId, attempt: Attempt, ran: Ran) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        if ran.committed.is_empty() {
            self.abort_everywhere(id, attempt);
            self.in_flight.remove(&id);
            for (member, error) in ran.failed {
                self.answer(member, Status::Failed(error));
            }
            return;
        }
        let write_shards: SmallVec<[ShardId; 4]> = ran
            .writes
            .iter()
            .map(|(key, _)| self.placement.shard_of(key))
            .collect();
        assert!(
            write_shards.iter().all(|s| flight.shards.contains_key(s)),
            "writes stay inside the declared keys"
        );
        // One allocation per shard, shared from here on.
        let by_shard: PerShard<Writes> = flight
            .shards
            .keys()
            .map(|shard| {
                let on_shard: SmallVec<[(Key, Value); 4]> = ran
                    .writes
                    .iter()
                    .zip(&write_shards)
                    .filter(|(_, s)| *s == shard)
                    .map(|(write, _)| *write)
                    .collect();
                (*shard, Writes::from(on_shard.as_slice()))
            })
            .collect();
        let committed = Committed::new(ran.committed);
        self.commands.push(Command::PersistCommit {
            tx: id,
            committed: committed.clone(),
            writes: by_shard.iter().map(|(s, w)| (*s, w.clone())).collect(),
        });
        for (shard, writes) in by_shard.iter() {
            self.outbox.post(
                *shard,
                ToParticipant::Commit {
                    tx: id,
                    writes: writes.clone(),
                },
            );
        }
        self.stats.commits += 1;
        let size = (committed.len() + ran.failed.len()) as u64;
        self.stats.largest_group = self.stats.largest_group.max(size);
        if size > 1 {
            self.stats.group_commits += 1;
            self.stats.grouped_transactions += committed.len() as u64;
        }
        flight.deadline_ms = now_ms + self.config.timeout_ms;
        flight.phase = Phase::Committing {
            writes: by_shard,
            committed,
        };
        self.commands.push(Command::SetTimer {
            at_ms: flight.deadline_ms,
        });
        self.due.entry(flight.deadline_ms).or_default().push(id);
        // A member that failed on its own fails alone, now: it wrote
        // nothing.
        for (member, error) in ran.failed {
            self.answer(member, Status::Failed(error));
        }
    }

    fn on_refused(
        &mut self,
        now_ms: u64,
        id: TxId,
        refused: Attempt,
        shard: ShardId,
        key: Key,
        holder: TxId,
    ) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        if refused != flight.attempt || !matches!(flight.phase, Phase::Preparing { .. }) {
            return;
        }
        self.retry(now_ms, id, refused, |rounds| AbortReason::LockContention {
            key,
            shard,
            holder,
            rounds,
        });
    }

    /// Gives up round `given_up` of unit `id` for a reason not its own and
    /// begins a new round after a back-off, or, once the unit has had
    /// [`CoordinatorConfig::max_retries`] new rounds, fails its
    /// transactions with `why` of the rounds tried.
    fn retry(
        &mut self,
        now_ms: u64,
        id: TxId,
        given_up: Attempt,
        why: impl FnOnce(u32) -> AbortReason,
    ) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        flight.attempt = self.rounds.begin(id);
        flight.retries += 1;
        let retries = flight.retries;
        self.abort_everywhere(id, given_up);
        if retries > self.config.max_retries {
            let reason = why(retries);
            self.fail(id, TxError::CrossShardAborted { reason });
            return;
        }
        let backoff = self.config.retry_backoff_ms * u64::from(retries.min(8));
        let at_ms = now_ms + backoff;
        if let Some(flight) = self.in_flight.get_mut(&id) {
            flight.phase = Phase::Backoff { at_ms };
        }
        self.commands.push(Command::SetTimer { at_ms });
        self.due.entry(at_ms).or_default().push(id);
    }

    /// The shard the current round of `id` waits for has queued its
    /// prepare behind other locks: the round waits on, with a fresh
    /// deadline and its resends counted from zero. Lock waits end (the
    /// shard order rules out deadlock, and every holder is decided in
    /// time), so a queued round is never given up for waiting.
    fn on_queued(&mut self, now_ms: u64, id: TxId, attempt: Attempt, shard: ShardId) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        let Phase::Preparing { values } = &flight.phase else {
            return;
        };
        let awaited = flight.shards.keys().find(|s| !values.contains_key(s));
        if attempt != flight.attempt || awaited != Some(&shard) {
            return;
        }
        flight.resends = 0;
        flight.deadline_ms = now_ms + self.config.timeout_ms;
    }

    /// A prepared shard asks what became of `id`. Answers are idempotent:
    /// the decision if there is one, an abort of the rounds the coordinator
    /// has itself given up, and nothing while the current round is still
    /// collecting votes (its deadline decides, and the shard asks again).
    fn on_inquire(&mut self, id: TxId, attempt: Attempt, shard: ShardId) {
        let answer = match self.in_flight.get(&id) {
            // Presumed abort: no record means no commit decision was ever
            // logged, or it was logged and every shard has applied it (so
            // the lock the shard holds comes from a stray prepare).
            // Only the round asked about: see [`EVERY_ATTEMPT`].
            None => ToParticipant::Abort { tx: id, attempt },
            Some(flight) => match &flight.phase {
                Phase::Committing { writes, .. } => ToParticipant::Commit {
                    tx: id,
                    // A shard that acknowledged already holds a stray
                    // lock; an empty commit releases it.
                    writes: writes.get(&shard).cloned().unwrap_or_default(),
                },
                _ if attempt < flight.attempt => ToParticipant::Abort { tx: id, attempt },
                _ => return,
            },
        };
        self.outbox.post(shard, answer);
    }

    fn on_committed(&mut self, id: TxId, shard: ShardId) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        let Phase::Committing { writes, committed } = &mut flight.phase else {
            return;
        };
        writes.remove(&shard);
        if !writes.is_empty() {
            return;
        }
        let committed = committed.clone();
        self.in_flight.remove(&id);
        self.commands.push(Command::Done { tx: id });
        for (member, output) in committed.iter() {
            self.committed.remember(member, output.clone());
            self.answer(member, Status::Committed { output });
        }
    }

    /// Handles the passing of time: retries after back-off, aborts
    /// transactions whose votes are overdue and re-sends unacknowledged
    /// commits.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let mut retry = Vec::new();
        let mut overdue = Vec::new();
        let mut resend = Vec::new();
        let mut rearm = Vec::new();
        let mut visit = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if *entry.key() > now_ms {
                break;
            }
            visit.extend(entry.remove());
        }
        visit.sort_unstable();
        visit.dedup();
        for id in visit {
            let Some(flight) = self.in_flight.get(&id) else {
                continue;
            };
            match &flight.phase {
                Phase::Backoff { at_ms } if *at_ms <= now_ms => retry.push(id),
                Phase::Preparing { .. } if flight.deadline_ms <= now_ms => {
                    overdue.push((id, flight.attempt))
                }
                // A later shard's turn moved the deadline on.
                Phase::Preparing { .. } => rearm.push((id, flight.deadline_ms)),
                Phase::Committing { writes, .. } if flight.deadline_ms <= now_ms => {
                    resend.push((id, writes.clone()))
                }
                _ => {}
            }
        }
        // Sorted, so that the commands do not depend on hash order.
        retry.sort_unstable();
        overdue.sort_unstable();
        resend.sort_unstable_by_key(|(id, _)| *id);
        rearm.sort_unstable();
        for (id, at_ms) in rearm {
            self.commands.push(Command::SetTimer { at_ms });
            self.due.entry(at_ms).or_default().push(id);
        }
        for id in retry {
            self.prepare(now_ms, id);
        }
        for (id, attempt) in overdue {
            self.overdue(now_ms, id, attempt);
        }
        for (id, writes) in resend {
            for (shard, writes) in writes {
                self.outbox
                    .post(shard, ToParticipant::Commit { tx: id, writes });
            }
            if let Some(flight) = self.in_flight.get_mut(&id) {
                flight.deadline_ms = now_ms + self.config.timeout_ms;
                self.commands.push(Command::SetTimer {
                    at_ms: flight.deadline_ms,
                });
                self.due.entry(flight.deadline_ms).or_default().push(id);
            }
        }
    }

    /// A shard has not voted on round `attempt` of `id` in time: the
    /// prepare is sent again (the message or the vote may be lost, the
    /// shard restarting, or the prepare queued behind a lock), and after
    /// [`CoordinatorConfig::prepare_resends`] of those the unit fails. A new
    /// round would not help here: it could only wait for the same shard,
    /// behind the same locks, and each round costs the client a timeout.
    fn overdue(&mut self, now_ms: u64, id: TxId, attempt: Attempt) {
        let Some(flight) = self.in_flight.get_mut(&id) else {
            return;
        };
        let Phase::Preparing { values } = &flight.phase else {
            return;
        };
        let shard = *flight
            .shards
            .keys()
            .find(|s| !values.contains_key(s))
            .expect("a round collecting votes waits for a shard");
        if flight.resends >= self.config.prepare_resends {
            let reason = AbortReason::VoteTimeout {
                shard,
                timeout_ms: self.config.timeout_ms,
                asked: flight.resends + 1,
            };
            self.abort_everywhere(id, attempt);
            self.fail(id, TxError::CrossShardAborted { reason });
            return;
        }
        flight.resends += 1;
        flight.deadline_ms = now_ms + self.config.timeout_ms;
        self.outbox.post(
            shard,
            ToParticipant::Prepare {
                tx: id,
                attempt,
                keys: keys_on(&self.placement, &flight.members, shard),
            },
        );
        self.commands.push(Command::SetTimer {
            at_ms: flight.deadline_ms,
        });
        self.due.entry(flight.deadline_ms).or_default().push(id);
    }

    /// When [`Coordinator::handle_timeout`] next has something to do, if
    /// ever: the earliest timer set and not yet visited.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.due.keys().next().copied()
    }

    /// Re-drives a commit decision found in the coordinator's log after a
    /// restart: the shards that have not applied it will, and the receipts
    /// of the transactions it commits carry their logged outputs.
    pub fn recover_commit(
        &mut self,
        now_ms: u64,
        id: TxId,
        committed: Committed,
        writes: Vec<(ShardId, Writes)>,
    ) {
        let shards = writes.iter().map(|(s, _)| (*s, ())).collect();
        let writes: PerShard<_> = writes.into_iter().collect();
        for (shard, w) in writes.iter() {
            self.outbox.post(
                *shard,
                ToParticipant::Commit {
                    tx: id,
                    writes: w.clone(),
                },
            );
        }
        if is_group_id(&id) {
            for member in committed.ids() {
                self.grouped.insert(member, id);
            }
        }
        self.active += committed.len();
        let deadline_ms = now_ms + self.config.timeout_ms;
        self.in_flight.insert(
            id,
            InFlight {
                id,
                members: SmallVec::new(),
                shards,
                phase: Phase::Committing { writes, committed },
                deadline_ms,
                attempt: self.rounds.next,
                retries: 0,
                resends: 0,
            },
        );
        // Without a timer a lost re-sent commit would wait for the shard's
        // inquiry; with it the coordinator keeps re-sending on its own.
        self.commands.push(Command::SetTimer { at_ms: deadline_ms });
        self.due.entry(deadline_ms).or_default().push(id);
    }

    /// Remembers, after a restart, that `id` committed (and every shard
    /// applied it) with `output`: a re-submission of it is answered from
    /// memory. Give them oldest first.
    pub fn restore_committed(&mut self, id: TxId, output: Output) {
        self.committed.remember(id, output);
    }

    /// Every commit decided and not yet applied by all its shards, as the
    /// records that log it (with the writes of the shards yet to apply it),
    /// by id: what a snapshot of the decision log keeps.
    pub fn open_commits(&self) -> Vec<crate::records::CoordinatorRecord> {
        let mut open: Vec<_> = self
            .in_flight
            .values()
            .filter_map(|flight| match &flight.phase {
                Phase::Committing { writes, committed } => Some((flight.id, writes, committed)),
                _ => None,
            })
            .collect();
        open.sort_unstable_by_key(|(id, _, _)| *id);
        open.into_iter()
            .map(
                |(id, writes, committed)| crate::records::CoordinatorRecord::Commit {
                    tx: id,
                    committed: committed.clone(),
                    writes: writes.iter().map(|(s, w)| (*s, w.clone())).collect(),
                },
            )
            .collect()
    }

    /// The commits remembered, oldest first (for snapshots).
    pub fn committed(&self) -> impl Iterator<Item = (TxId, Output)> + '_ {
        self.committed.iter()
    }

    /// Sends every shard of `id` an abort of the rounds up to `attempt`.
    fn abort_everywhere(&mut self, id: TxId, attempt: Attempt) {
        if let Some(flight) = self.in_flight.get(&id) {
            for shard in flight.shards.keys() {
                self.outbox
                    .post(*shard, ToParticipant::Abort { tx: id, attempt });
            }
        }
    }

    /// Gives up unit `id`: every member fails with `error`.
    fn fail(&mut self, id: TxId, error: TxError) {
        let Some(flight) = self.in_flight.remove(&id) else {
            return;
        };
        for tx in &flight.members {
            self.answer(tx.id, Status::Failed(error.clone()));
        }
    }

    /// Answers a member of a unit in flight: it is no longer active.
    fn answer(&mut self, tx_id: TxId, status: Status) {
        self.grouped.remove(&tx_id);
        self.active -= 1;
        self.commands
            .push(Command::Reply(Receipt { tx_id, status }));
    }

    /// Answers a transaction that never started.
    fn reply(&mut self, tx_id: TxId, error: TxError) {
        self.commands.push(Command::Reply(Receipt {
            tx_id,
            status: Status::Failed(error),
        }));
    }

    /// Admits what has room (as of the latest time passed in), then drains
    /// what the runtime must do, in order: persist commit decisions, then
    /// send one batch per shard, then reply, mark units done and set
    /// timers.
    pub fn take_commands(&mut self) -> Vec<Command> {
        self.admit(self.now_ms);
        let mut persist = Vec::new();
        // The epoch of the latest round given out, logged before any round
        // of it travels.
        let epoch = (self.rounds.next.saturating_sub(1) >> 32) as u32;
        if epoch > self.epoch_logged {
            self.epoch_logged = epoch;
            persist.push(Command::PersistEpoch { epoch });
        }
        let mut rest = Vec::new();
        for command in self.commands.drain(..) {
            match command {
                Command::PersistCommit { .. } => persist.push(command),
                other => rest.push(other),
            }
        }
        // Each batch tells its shard the current floor, if it rose since
        // that shard last heard it.
        let floor = self.decided_below();
        let mut sends = Vec::with_capacity(self.outbox.len());
        for (to, mut messages) in self.outbox.take() {
            let sent = self.floor_sent.entry(to).or_default();
            if *sent < floor {
                *sent = floor;
                messages.push(ToParticipant::Decided { below: floor });
            }
            sends.push(Command::Send { to, messages });
        }
        persist.into_iter().chain(sends).chain(rest).collect()
    }
}

/// The most prepares a shard queues behind held locks; more are refused.
pub const MAX_QUEUED_PREPARES: usize = 100_000;

/// Participant tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantConfig {
    /// How long a prepared transaction waits for its decision before the
    /// shard asks the coordinator (and again after every such wait). Longer
    /// than the coordinator's own timeout, so that normally the coordinator
    /// resolves first and inquiries only follow lost messages and crashes.
    pub inquire_after_ms: u64,
    /// The most finished transactions remembered (those of rounds the
    /// coordinator has not yet reported decided). While the memory is full,
    /// prepares of new transactions are refused (the coordinator retries
    /// them in a new round) rather than anything being forgotten early.
    pub remember_finished: usize,
    /// The most prepares queued behind held locks; more are refused (and
    /// the coordinator retries them in a new round).
    pub max_queued_prepares: usize,
}

impl Default for ParticipantConfig {
    fn default() -> ParticipantConfig {
        ParticipantConfig {
            inquire_after_ms: 2_000,
            remember_finished: 1 << 20,
            max_queued_prepares: MAX_QUEUED_PREPARES,
        }
    }
}

/// A prepare granted by a [`Participant`]: the shard logs it, reads the
/// keys' values and votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The transaction.
    pub tx: TxId,
    /// The prepare round the lock belongs to.
    pub attempt: Attempt,
    /// Its keys on this shard, now locked.
    pub keys: Vec<Key>,
}

impl Grant {
    /// The shard's vote for the granted round, with each key's value as
    /// `value_of` reads it (`None`: the key does not exist). Read after the
    /// commits the shard applied in the same batch: they may have released
    /// these keys.
    pub fn vote(&self, shard: ShardId, value_of: impl Fn(&Key) -> Option<Value>) -> ToCoordinator {
        ToCoordinator::Prepared {
            tx: self.tx,
            attempt: self.attempt,
            shard,
            values: self.keys.iter().map(|k| (*k, value_of(k))).collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Lock {
    attempt: Attempt,
    /// Inline: a transaction has a key or two per shard, and a lock read
    /// on release should not cost a second cache miss.
    keys: SmallVec<[Key; 2]>,
    /// When to ask the coordinator; `None` until the next
    /// [`Participant::handle_timeout`] arms it.
    inquire_at_ms: Option<u64>,
}

/// How a transaction a participant remembers ended on its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finished {
    /// Committed.
    Committed,
    /// Aborted, every round up to this one.
    Aborted(Attempt),
}

/// The participant state machine of one shard: the locks of prepared
/// cross-shard transactions, the prepares waiting for them, and a bounded
/// memory of finished transactions.
#[derive(Debug, Default, Clone)]
pub struct Participant {
    shard: ShardId,
    config: ParticipantConfig,
    /// Held locks, and prepares waiting for them with their rounds.
    locks: LockTable<Attempt>,
    prepared: FastMap<TxId, Lock>,
    /// Prepares granted since the last [`Participant::take_granted`].
    granted: Vec<Grant>,
    /// Finished transactions, each with the round it is remembered for
    /// (the latest round it finished in here).
    finished: FastMap<TxId, (Finished, Attempt)>,
    /// Each finish's round, in the order they happened, to forget them as
    /// the floor passes: rounds finish roughly in the order they began.
    finished_order: VecDeque<(Attempt, TxId)>,
    /// Every round below this is decided (as the coordinator last said).
    decided_below: Attempt,
    /// Locks granted since the last [`Participant::handle_timeout`], whose
    /// inquiry timers it arms.
    unarmed: Vec<TxId>,
    /// Armed inquiry timers, by when they expire.
    inquiries: Timers,
}

/// What a shard does for one message ([`Participant::receive`]), once it
/// has logged the message's records.
#[derive(Debug, Default)]
pub struct Received {
    /// Writes to apply (a commit's, the first time it comes).
    pub apply: Option<Writes>,
    /// Whether a commit released a prepared transaction here: what
    /// "applied exactly once" counts (the message's record is the first
    /// appended).
    pub applied: bool,
    /// The answer for the coordinator, if any.
    pub reply: Option<ToCoordinator>,
    /// Prepares granted: vote on each, with its keys' values read after
    /// `apply`. Inline: a message lets through a prepare or two.
    pub granted: SmallVec<[Grant; 1]>,
}

/// What a shard does with a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The writes to apply; empty for a duplicate commit.
    pub apply: Writes,
    /// Whether this commit released a prepared transaction here (false for
    /// a duplicate): what "applied exactly once" counts.
    pub applied: bool,
    /// The acknowledgement for the coordinator.
    pub reply: ToCoordinator,
}

impl Participant {
    /// The participant of `shard`, holding no locks, with default tunables.
    pub fn new(shard: ShardId) -> Participant {
        Participant::with_config(shard, ParticipantConfig::default())
    }

    /// The participant of `shard`, holding no locks.
    pub fn with_config(shard: ShardId, config: ParticipantConfig) -> Participant {
        Participant {
            shard,
            config,
            ..Participant::default()
        }
    }

    /// Whether a prepared transaction holds `key`.
    #[inline]
    pub fn is_locked(&self, key: &Key) -> bool {
        self.locks.holder(key).is_some()
    }

    /// Takes from `queue` the local transactions that no lock holds back,
    /// in order, to run as one block; the rest stay queued. A transaction
    /// that shares a key with a held-back one is held back too, so each key
    /// still sees transactions in arrival order.
    pub fn take_unblocked(&self, queue: &mut VecDeque<Transaction>) -> Vec<Transaction> {
        let mut blocked: FastSet<Key> = FastSet::default();
        let mut ready = Vec::new();
        let mut waiting = VecDeque::new();
        for tx in queue.drain(..) {
            let held = tx
                .access
                .keys()
                .any(|k| self.is_locked(k) || blocked.contains(k));
            if held {
                blocked.extend(tx.access.keys().copied());
                waiting.push_back(tx);
            } else {
                ready.push(tx);
            }
        }
        *queue = waiting;
        ready
    }

    /// Whether any lock is held.
    pub fn has_locks(&self) -> bool {
        self.locks.has_locks()
    }

    /// The number of prepares waiting for locks.
    pub fn queued(&self) -> usize {
        self.locks.waiting()
    }

    /// Prepared transactions with their rounds and keys, in no order.
    pub fn prepared(&self) -> impl Iterator<Item = (&TxId, Attempt, &[Key])> {
        self.prepared
            .iter()
            .map(|(tx, l)| (tx, l.attempt, l.keys.as_slice()))
    }

    /// Asks to lock `keys` for round `attempt` of `tx`. Granted at once if
    /// they are free (and no earlier waiter wants them), queued otherwise;
    /// either way the grant shows up in [`Participant::take_granted`].
    /// Returns a refusal when the queue is full, and
    /// [`ToCoordinator::Queued`] when the prepare waits in it (again for
    /// every prepare of a waiting round). Preparing twice is harmless; a prepare of a transaction remembered as finished (a late
    /// or duplicated message) is ignored.
    pub fn prepare(&mut self, tx: TxId, attempt: Attempt, keys: Vec<Key>) -> Option<ToCoordinator> {
        if attempt < self.decided_below {
            // A decided round: a commit would have needed this shard's vote
            // for it, which it gave (and then holds the lock or has applied
            // the commit); otherwise the round was aborted.
            return None;
        }
        match self.finished.get(&tx) {
            Some((Finished::Committed, _)) => return None,
            Some((Finished::Aborted(through), _)) if attempt <= *through => return None,
            _ => {}
        }
        if let Some(lock) = self.prepared.get_mut(&tx) {
            // The lock has been held since an earlier round, so the values
            // it guards are still current: vote again for this round.
            if attempt >= lock.attempt {
                lock.attempt = attempt;
                self.granted.push(Grant {
                    tx,
                    attempt,
                    keys: lock.keys.to_vec(),
                });
            }
            return None;
        }
        if let Some(waiting) = self.locks.waiter_mut(&tx) {
            *waiting = (*waiting).max(attempt);
            return Some(ToCoordinator::Queued {
                tx,
                attempt,
                shard: self.shard,
            });
        }
        if self.finished.len() >= self.config.remember_finished {
            // Taking on another transaction could overflow the memory that
            // keeps stray prepares out; refuse until old entries expire.
            let key = *keys.first().expect("a prepare names keys");
            return Some(ToCoordinator::Refused {
                tx,
                attempt,
                shard: self.shard,
                key,
                holder: tx,
            });
        }
        match self.locks.blocker(&keys) {
            None => self.grant(Grant { tx, attempt, keys }),
            Some(key) if self.locks.waiting() >= self.config.max_queued_prepares => {
                let holder = self.locks.holder(key).unwrap_or(tx);
                return Some(ToCoordinator::Refused {
                    tx,
                    attempt,
                    shard: self.shard,
                    key: *key,
                    holder,
                });
            }
            Some(_) => {
                self.locks.enqueue(tx, keys, attempt);
                return Some(ToCoordinator::Queued {
                    tx,
                    attempt,
                    shard: self.shard,
                });
            }
        }
        None
    }

    /// Re-takes a lock found in the shard's log during recovery. Unlike
    /// [`Participant::prepare`] it neither consults the memory of finished
    /// transactions (which replay cannot age as the live shard did) nor
    /// refuses: the log says the lock was granted, so replay grants it.
    pub fn restore(&mut self, tx: TxId, attempt: Attempt, keys: Vec<Key>) {
        if let Some(lock) = self.prepared.get_mut(&tx) {
            lock.attempt = lock.attempt.max(attempt);
            return;
        }
        self.grant(Grant { tx, attempt, keys });
        self.granted.clear();
    }

    fn grant(&mut self, grant: Grant) {
        self.locks.lock(grant.tx, &grant.keys);
        self.hold(grant);
    }

    /// Records a granted prepare whose keys the lock table gave it.
    fn hold(&mut self, grant: Grant) {
        let lock = Lock {
            attempt: grant.attempt,
            keys: SmallVec::from_slice(&grant.keys),
            inquire_at_ms: None,
        };
        if let Some(at_ms) = self
            .prepared
            .insert(grant.tx, lock)
            .and_then(|l| l.inquire_at_ms)
        {
            self.inquiries.disarm(at_ms);
        }
        self.unarmed.push(grant.tx);
        self.granted.push(grant);
    }

    /// Holds the prepares that a release or a withdrawal let through.
    fn hold_all(&mut self, granted: Vec<Granted<Attempt>>) {
        for Granted { tx, keys, data } in granted {
            self.hold(Grant {
                tx,
                attempt: data,
                keys,
            });
        }
    }

    /// The prepares granted since the last call: the shard logs them, reads
    /// their keys' values (after applying the writes it was given) and votes.
    pub fn take_granted(&mut self) -> Vec<Grant> {
        std::mem::take(&mut self.granted)
    }

    fn release(&mut self, tx: TxId) -> Option<Lock> {
        let lock = self.prepared.remove(&tx)?;
        if let Some(at_ms) = lock.inquire_at_ms {
            self.inquiries.disarm(at_ms);
        }
        let granted = self.locks.unlock(tx, &lock.keys);
        self.hold_all(granted);
        Some(lock)
    }

    /// The finished transactions remembered, oldest first, each with the
    /// round it is remembered for. A shard keeps them in its snapshot, with
    /// [`Participant::decided_below`]: a shard restarted from a snapshot
    /// without them would lock a committed transaction again on a late
    /// prepare, and a re-sent commit would then apply its writes twice.
    pub fn finished(&self) -> impl Iterator<Item = (TxId, Finished, Attempt)> + '_ {
        self.finished_order.iter().filter_map(|(round, tx)| {
            self.finished
                .get(tx)
                .filter(|(_, latest)| latest == round)
                .map(|(outcome, _)| (*tx, *outcome, *round))
        })
    }

    /// Remembers a finished transaction found in a snapshot, with the round
    /// [`Participant::finished`] gave.
    pub fn restore_finished(&mut self, tx: TxId, outcome: Finished, round: Attempt) {
        self.remember(tx, outcome, round);
    }

    /// Remembers that `tx` finished with `outcome` in `round`. An entry
    /// that exists already keeps "committed" and the later round.
    fn remember(&mut self, tx: TxId, outcome: Finished, round: Attempt) {
        if round < self.decided_below {
            // Prepares of that round are ignored anyway.
            return;
        }
        let entry = match self.finished.get(&tx) {
            Some(&(before, before_round)) => {
                let merged = match (before, outcome) {
                    (Finished::Committed, _) | (_, Finished::Committed) => Finished::Committed,
                    (Finished::Aborted(a), Finished::Aborted(b)) => Finished::Aborted(a.max(b)),
                };
                (merged, before_round.max(round))
            }
            None => (outcome, round),
        };
        let known = self.finished.insert(tx, entry);
        if known.is_none_or(|(_, before_round)| before_round != entry.1) {
            self.finished_order.push_back((entry.1, tx));
        }
    }

    /// The lowest round that may still be undecided, as far as this shard
    /// knows: prepares of earlier rounds are ignored.
    pub fn decided_below(&self) -> Attempt {
        self.decided_below
    }

    /// Learns that every round below `below` is decided (a stale floor is
    /// ignored) and forgets the finished transactions of those rounds.
    pub fn decided(&mut self, below: Attempt) {
        if below <= self.decided_below {
            return;
        }
        self.decided_below = below;
        while let Some(&(round, tx)) = self.finished_order.front() {
            if round >= below {
                break;
            }
            self.finished_order.pop_front();
            if self.finished.get(&tx).is_some_and(|(_, r)| *r == round) {
                self.finished.remove(&tx);
            }
        }
    }

    /// The number of finished transactions remembered.
    pub fn remembered(&self) -> usize {
        self.finished.len()
    }

    /// Releases `tx`'s locks and returns the writes to apply. A commit for
    /// a transaction not prepared here (a duplicate) applies nothing but is
    /// still acknowledged.
    pub fn commit(&mut self, tx: TxId, writes: impl Into<Writes>) -> CommitOutcome {
        let writes = writes.into();
        let (apply, applied) = match self.release(tx) {
            Some(lock) => {
                debug_assert!(writes.iter().all(|(k, _)| lock.keys.contains(k)));
                self.remember(tx, Finished::Committed, lock.attempt);
                (writes, true)
            }
            None => {
                // A duplicate: the first commit released the lock. If the
                // transaction is still remembered, it is as committed; if
                // not, its round is below the floor, which keeps its late
                // prepares out.
                if let Some(&(_, round)) = self.finished.get(&tx) {
                    self.remember(tx, Finished::Committed, round);
                }
                (Writes::default(), false)
            }
        };
        // A correct coordinator commits only after this shard's vote, so
        // no prepare of `tx` can still be waiting; drop one defensively.
        let granted = self.locks.withdraw(tx, |_| true);
        self.hold_all(granted);
        CommitOutcome {
            apply,
            applied,
            reply: ToCoordinator::Committed {
                tx,
                shard: self.shard,
            },
        }
    }

    /// Releases `tx`'s locks, or drops its queued prepare, if they belong
    /// to a round up to `attempt`. A later round's lock stays: the abort is
    /// a late message of an earlier round. After a commit of `tx` a lock of
    /// it can only come from a stray prepare, so it is released all the
    /// same; the decision stays "committed". That the abort does not depend
    /// on the memory of finished transactions also keeps recovery exact.
    pub fn abort(&mut self, tx: TxId, attempt: Attempt) {
        if self.prepared.get(&tx).is_some_and(|l| l.attempt <= attempt) {
            self.release(tx);
        }
        let granted = self.locks.withdraw(tx, |round| *round <= attempt);
        self.hold_all(granted);
        self.granted
            .retain(|g| !(g.tx == tx && g.attempt <= attempt));
        self.remember(tx, Finished::Aborted(attempt), attempt);
    }

    /// Handles one message from the coordinator as a shard does, for the
    /// shard actor, the simulator and benchmarks alike: appends to `log`
    /// what the shard must log for it before anything leaves (the
    /// message's own record, then a `Prepared` record per lock it granted,
    /// in the order they happened, so that replay re-takes the same locks)
    /// and returns the writes to apply, the reply and the grants to vote on.
    /// The floor of decided rounds is not logged: a restarted shard goes by
    /// its snapshot's floor and the finishes logged after it, which keep
    /// out at least what the live shard kept out.
    pub fn receive(&mut self, message: ToParticipant, log: &mut Vec<ShardRecord>) -> Received {
        let mut received = Received::default();
        match message {
            ToParticipant::Prepare { tx, attempt, keys } => {
                received.reply = self.prepare(tx, attempt, keys);
            }
            ToParticipant::Commit { tx, writes } => {
                let outcome = self.commit(tx, writes);
                log.push(ShardRecord::Committed {
                    tx,
                    writes: outcome.apply.clone(),
                });
                received.apply = outcome.applied.then_some(outcome.apply);
                received.applied = outcome.applied;
                received.reply = Some(outcome.reply);
            }
            ToParticipant::Abort { tx, attempt } => {
                self.abort(tx, attempt);
                log.push(ShardRecord::Aborted { tx, attempt });
            }
            ToParticipant::Decided { below } => self.decided(below),
        }
        // Drained, not taken: the list keeps its room for the next message.
        received.granted = self.granted.drain(..).collect();
        log.extend(received.granted.iter().map(|grant| ShardRecord::Prepared {
            tx: grant.tx,
            attempt: grant.attempt,
            keys: grant.keys.clone(),
        }));
        received
    }

    /// Handles the passing of time: arms the inquiry timer of transactions
    /// prepared since the last call and returns an inquiry for each
    /// prepared one whose decision is overdue, in transaction order. Call
    /// it after every batch of messages and whenever
    /// [`Participant::poll_timeout`] comes.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<ToCoordinator> {
        let next_ms = now_ms + self.config.inquire_after_ms;
        for tx in std::mem::take(&mut self.unarmed) {
            if let Some(lock) = self.prepared.get_mut(&tx) {
                if lock.inquire_at_ms.is_none() {
                    lock.inquire_at_ms = Some(next_ms);
                    self.inquiries.arm(next_ms, tx);
                }
            }
        }
        let mut due = Vec::new();
        while let Some((at_ms, txs)) = self.inquiries.pop_due(now_ms) {
            // Entries of released (or re-armed) locks are stale: skipped.
            due.extend(txs.into_iter().filter(|tx| {
                self.prepared
                    .get(tx)
                    .is_some_and(|lock| lock.inquire_at_ms == Some(at_ms))
            }));
        }
        // In transaction order, so that the output does not depend on
        // when each timer was armed within one call.
        due.sort_unstable();
        due.dedup();
        due.into_iter()
            .map(|tx| {
                let lock = self.prepared.get_mut(&tx).expect("armed locks are held");
                lock.inquire_at_ms = Some(next_ms);
                self.inquiries.arm(next_ms, tx);
                ToCoordinator::Inquire {
                    tx,
                    attempt: lock.attempt,
                    shard: self.shard,
                }
            })
            .collect()
    }

    /// When [`Participant::handle_timeout`] next has something to do, if
    /// ever: the earliest armed inquiry.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.inquiries.first()
    }
}

/// Timers by when they expire, one bucket per millisecond (a batch's
/// prepares share one). Disarming a timer costs a lookup among the few
/// buckets rather than among every lock's timer: it only counts the
/// bucket's live timers down, and a bucket none are left in goes.
#[derive(Debug, Default, Clone)]
struct Timers(BTreeMap<u64, Bucket>);

#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Every transaction armed here; some may have been disarmed since.
    txs: Vec<TxId>,
    /// How many are still armed here.
    live: usize,
}

impl Timers {
    fn arm(&mut self, at_ms: u64, tx: TxId) {
        let bucket = self.0.entry(at_ms).or_default();
        bucket.txs.push(tx);
        bucket.live += 1;
    }

    /// Counts down a timer armed at `at_ms`.
    fn disarm(&mut self, at_ms: u64) {
        if let Some(bucket) = self.0.get_mut(&at_ms) {
            bucket.live -= 1;
            if bucket.live == 0 {
                self.0.remove(&at_ms);
            }
        }
    }

    /// When the earliest live timer expires.
    fn first(&self) -> Option<u64> {
        self.0.keys().next().copied()
    }

    /// Takes the earliest bucket if it is due at `now_ms`: its time and
    /// the transactions armed there (stale ones included).
    fn pop_due(&mut self, now_ms: u64) -> Option<(u64, Vec<TxId>)> {
        let entry = self.0.first_entry().filter(|e| *e.key() <= now_ms)?;
        let (at_ms, bucket) = entry.remove_entry();
        Some((at_ms, bucket.txs))
    }
}

#[cfg(test)]
mod tests {
    mod execute;
    mod groups;

    use super::*;
    use crate::model::{AccountId, AssetId};
    use std::sync::Arc;

    /// The command that sends `message` to shard `shard`.
    fn send(shard: u32, message: ToParticipant) -> Command {
        Command::Send {
            to: ShardId(shard),
            messages: vec![message],
        }
    }

    /// The command that aborts round `attempt` of `tx` on shard `shard`.
    fn abort(shard: u32, tx: TxId, attempt: Attempt) -> Command {
        send(shard, ToParticipant::Abort { tx, attempt })
    }

    /// Every message `commands` send, with its shard, in order.
    fn sent(commands: Vec<Command>) -> impl Iterator<Item = (ShardId, ToParticipant)> {
        commands.into_iter().flat_map(|command| match command {
            Command::Send { to, messages } => messages.into_iter().map(|m| (to, m)).collect(),
            _ => Vec::new(),
        })
    }

    /// `command`, a send, with the news that every round below `below` is
    /// decided appended.
    fn and_decided(command: Command, below: Attempt) -> Command {
        let Command::Send { to, mut messages } = command else {
            panic!("not a send: {command:?}");
        };
        messages.push(ToParticipant::Decided { below });
        Command::Send { to, messages }
    }

    /// The command that commits `tx` on shard `shard` with `writes`.
    fn commit(shard: u32, tx: TxId, writes: Vec<(Key, Value)>) -> Command {
        send(
            shard,
            ToParticipant::Commit {
                tx,
                writes: writes.into(),
            },
        )
    }

    /// Proves the in-flight slab hands out, finds, replaces and frees
    /// records by id, reusing freed places, and that prefetching any id
    /// (present or not) is harmless.
    #[test]
    fn flights_slab_keeps_records_by_id() {
        let (_, tx, _, _) = setup();
        let flight = |retries| InFlight {
            id: tx.id,
            members: smallvec::smallvec![Arc::new(tx.clone())],
            shards: PerShard::default(),
            phase: Phase::Backoff { at_ms: 0 },
            deadline_ms: 0,
            attempt: 0,
            retries,
            resends: 0,
        };
        let id = |n| TxId::from_u128(n);
        let mut flights = Flights::default();
        for n in 0..4 {
            flights.insert(id(n), flight(n as u32));
        }
        flights.insert(id(1), flight(10));
        assert_eq!(flights.index.len(), 4);
        assert_eq!(flights.get(&id(1)).map(|f| f.retries), Some(10));
        assert_eq!(flights.remove(&id(2)).map(|f| f.retries), Some(2));
        assert!(flights.remove(&id(2)).is_none());
        assert!(!flights.contains_key(&id(2)));
        flights.insert(id(9), flight(9));
        assert_eq!(flights.slab.len(), 4, "the freed place is reused");
        flights.get_mut(&id(9)).expect("present").retries = 99;
        let mut retries: Vec<u32> = flights.values().map(|f| f.retries).collect();
        retries.sort_unstable();
        assert_eq!(retries, vec![0, 3, 10, 99]);
        flights.prefetch(&id(9));
        flights.prefetch(&id(12345));
    }

    fn setup() -> (Coordinator, Transaction, Key, Key) {
        setup_with(CoordinatorConfig::default())
    }

    /// [`setup`] with a coordinator of `config`.
    fn setup_with(config: CoordinatorConfig) -> (Coordinator, Transaction, Key, Key) {
        let mut placement = Placement::hashed(2).unwrap();
        placement.place(AccountId(1), ShardId(0)).unwrap();
        placement.place(AccountId(2), ShardId(1)).unwrap();
        placement.place(AccountId(3), ShardId(1)).unwrap();
        let coordinator = Coordinator::new(config, placement, Arc::new(Registry::new()));
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
        let prepare = |keys| {
            vec![ToParticipant::Prepare {
                tx: tx.id,
                attempt: 0,
                keys,
            }]
        };
        assert_eq!(
            c.take_commands(),
            vec![
                Command::Send {
                    to: ShardId(0),
                    messages: prepare(vec![from, Key::sequence(AccountId(1))])
                },
                Command::SetTimer { at_ms: 1_100 },
            ]
        );
        let vote = ToCoordinator::Prepared {
            tx: tx.id,
            attempt: 0,
            shard: ShardId(0),
            values: vec![(from, Some(1))],
        };
        c.handle_message(101, vote);
        assert_eq!(
            c.take_commands(),
            vec![Command::Send {
                to: ShardId(1),
                messages: prepare(vec![to])
            },]
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
                attempt: 0,
                shard: ShardId(0),
                values: vec![(from, Some(100))],
            },
        );
        assert_eq!(
            c.take_commands(),
            vec![send(
                1,
                ToParticipant::Prepare {
                    tx: tx.id,
                    attempt: 0,
                    keys: vec![to]
                }
            ),]
        );
        c.handle_message(
            2,
            ToCoordinator::Prepared {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(1),
                values: vec![(to, Some(5))],
            },
        );
        let writes: Vec<(ShardId, Writes)> = vec![
            (ShardId(0), [(from, 70)].into()),
            (ShardId(1), [(to, 35)].into()),
        ];
        assert_eq!(
            c.take_commands(),
            vec![
                Command::PersistCommit {
                    tx: tx.id,
                    committed: std::sync::Arc::new([(tx.id, 0.into())].into()),
                    writes,
                },
                and_decided(commit(0, tx.id, vec![(from, 70)]), 1),
                and_decided(commit(1, tx.id, vec![(to, 35)]), 1),
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
        let receipt = Receipt {
            tx_id: tx.id,
            status: Status::Committed { output: 0.into() },
        };
        assert_eq!(
            c.take_commands(),
            vec![Command::Done { tx: tx.id }, Command::Reply(receipt.clone())]
        );
        assert_eq!(c.in_flight(), 0);
        // A client's retry of the committed id is answered from memory:
        // nothing is prepared again.
        c.begin(5, tx.clone());
        assert_eq!(c.take_commands(), vec![Command::Reply(receipt)]);
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
                attempt: 0,
                shard: ShardId(0),
                values: vec![(from, Some(10))],
            },
        );
        c.take_commands();
        c.handle_message(
            2,
            ToCoordinator::Prepared {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(1),
                values: vec![(to, Some(0))],
            },
        );
        assert_eq!(
            c.take_commands(),
            vec![
                and_decided(abort(0, tx.id, 0), 1),
                and_decided(abort(1, tx.id, 0), 1),
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
                attempt: 0,
                shard: ShardId(0),
                key: from,
                holder,
            },
        );
        assert_eq!(
            c.take_commands(),
            vec![
                and_decided(abort(0, tx.id, 0), 1),
                and_decided(abort(1, tx.id, 0), 1),
                Command::SetTimer { at_ms: 2 },
            ]
        );
        c.handle_timeout(1);
        assert_eq!(c.take_commands(), vec![]);
        c.handle_timeout(2);
        assert_eq!(
            c.take_commands(),
            vec![
                send(
                    0,
                    ToParticipant::Prepare {
                        tx: tx.id,
                        attempt: 1,
                        keys: vec![from, Key::sequence(AccountId(1))]
                    }
                ),
                Command::SetTimer { at_ms: 1_002 },
            ]
        );
    }

    /// The floor each shard hears is the lowest round not yet decided: a
    /// refused transaction's next round, numbered at once but prepared
    /// only after its back-off, holds it down while later rounds commit.
    /// A shard hears a floor only when it rose since it last heard one.
    #[test]
    fn floor_stays_below_every_undecided_round() {
        // Two units, not one group.
        let (mut c, a, from, to) = setup_with(CoordinatorConfig {
            max_group: 1,
            ..CoordinatorConfig::default()
        });
        let b = Transaction::transfer(TxId::from_u128(10), AccountId(1), AccountId(2), 5);
        let floors = |commands: Vec<Command>| -> Vec<(ShardId, Attempt)> {
            sent(commands)
                .filter_map(|(to, m)| match m {
                    ToParticipant::Decided { below } => Some((to, below)),
                    _ => None,
                })
                .collect()
        };
        c.begin(0, a.clone());
        c.begin(0, b.clone());
        assert_eq!(floors(c.take_commands()), vec![], "rounds 0 and 1 open");
        assert_eq!(c.decided_below(), 0);
        c.handle_message(
            1,
            ToCoordinator::Refused {
                tx: a.id,
                attempt: 0,
                shard: ShardId(0),
                key: from,
                holder: b.id,
            },
        );
        // a's round 0 is aborted and round 2 waits; b's round 1 is open.
        assert_eq!(
            floors(c.take_commands()),
            vec![(ShardId(0), 1), (ShardId(1), 1)]
        );
        let vote = |tx: TxId, shard: u32, values| ToCoordinator::Prepared {
            tx,
            attempt: 1,
            shard: ShardId(shard),
            values,
        };
        c.handle_message(2, vote(b.id, 0, vec![(from, Some(100))]));
        c.handle_message(3, vote(b.id, 1, vec![(to, Some(0))]));
        let commands = c.take_commands();
        assert!(commands
            .iter()
            .any(|c| matches!(c, Command::PersistCommit { .. })));
        assert_eq!(
            floors(commands),
            vec![(ShardId(0), 2), (ShardId(1), 2)],
            "b is decided; a's round 2 is not"
        );
        c.handle_timeout(1_000);
        let commands = c.take_commands();
        assert!(commands.contains(&send(
            0,
            ToParticipant::Prepare {
                tx: a.id,
                attempt: 2,
                keys: vec![from, Key::sequence(AccountId(1))]
            }
        )));
        assert_eq!(floors(commands), vec![], "the floor did not rise");
        assert_eq!(c.decided_below(), 2);
    }

    /// Beyond `max_active` transactions wait, in arrival order, and count
    /// as in flight; they start when there is room. A duplicate of a
    /// waiting transaction is ignored like one of an active transaction
    /// (the first is answered), not refused nor run again.
    #[test]
    fn transactions_beyond_max_active_wait_their_turn() {
        let (_, a, from, to) = setup();
        let mut placement = Placement::hashed(2).unwrap();
        placement.place(AccountId(1), ShardId(0)).unwrap();
        placement.place(AccountId(2), ShardId(1)).unwrap();
        placement.place(AccountId(3), ShardId(1)).unwrap();
        // Ungrouped: transactions that join a group take no room (see
        // `groups::a_group_joins_without_room`).
        let config = CoordinatorConfig {
            max_active: 1,
            max_in_flight: 2,
            max_group: 1,
            ..CoordinatorConfig::default()
        };
        let mut c = Coordinator::new(config, placement, Arc::new(Registry::new()));
        let b = Transaction::transfer(TxId::from_u128(10), AccountId(1), AccountId(2), 5);
        let late = Transaction::transfer(TxId::from_u128(11), AccountId(1), AccountId(2), 5);
        let prepared = |commands: Vec<Command>| -> Vec<(TxId, Attempt)> {
            sent(commands)
                .filter_map(|(_, m)| match m {
                    ToParticipant::Prepare { tx, attempt, .. } => Some((tx, attempt)),
                    _ => None,
                })
                .collect()
        };
        c.begin(0, a.clone());
        c.begin(0, b.clone());
        c.begin(0, b.clone());
        assert_eq!(prepared(c.take_commands()), vec![(a.id, 0)]);
        assert_eq!(c.in_flight(), 2, "one active, one waiting");
        c.begin(0, late.clone());
        assert!(matches!(
            c.take_commands().as_slice(),
            [Command::Reply(Receipt {
                status: Status::Failed(TxError::CrossShardAborted {
                    reason: AbortReason::CoordinatorOverloaded {
                        in_flight: 2,
                        max: 2
                    }
                }),
                ..
            })]
        ));
        let commit_everywhere = |c: &mut Coordinator, tx: TxId, attempt: Attempt| {
            let values = [vec![(from, Some(100))], vec![(to, Some(0))]];
            for (shard, values) in values.into_iter().enumerate() {
                let shard = ShardId(shard as u32);
                c.handle_message(
                    1,
                    ToCoordinator::Prepared {
                        tx,
                        attempt,
                        shard,
                        values,
                    },
                );
            }
            c.take_commands();
            for shard in [ShardId(0), ShardId(1)] {
                c.handle_message(2, ToCoordinator::Committed { tx, shard });
            }
            c.take_commands()
        };
        let commands = commit_everywhere(&mut c, a.id, 0);
        assert_eq!(
            prepared(commands),
            vec![(b.id, 1)],
            "b starts once a is done"
        );
        assert_eq!(c.in_flight(), 1);
        let commands = commit_everywhere(&mut c, b.id, 1);
        assert_eq!(
            prepared(commands.clone()),
            vec![],
            "b's duplicate does not run"
        );
        let replies: Vec<_> = commands
            .iter()
            .filter_map(|command| match command {
                Command::Reply(receipt) => Some(receipt.clone()),
                _ => None,
            })
            .collect();
        let committed = Receipt {
            tx_id: b.id,
            status: Status::Committed { output: 0.into() },
        };
        assert_eq!(replies, vec![committed]);
        assert_eq!(c.in_flight(), 0);
    }

    /// A `max_active` of 0 counts as 1: the transaction starts rather than
    /// waiting forever.
    #[test]
    fn zero_max_active_still_starts_transactions() {
        let (c, tx, from, _) = setup();
        let config = CoordinatorConfig {
            max_active: 0,
            ..CoordinatorConfig::default()
        };
        let mut c = Coordinator::new(config, c.placement.clone(), c.registry.clone());
        c.begin(0, tx.clone());
        assert_eq!(
            c.take_commands()[0],
            send(
                0,
                ToParticipant::Prepare {
                    tx: tx.id,
                    attempt: 0,
                    keys: vec![from, Key::sequence(AccountId(1))]
                }
            )
        );
    }

    /// A missing vote draws the prepare again at the deadline, and an
    /// abort at the next; missing commit acks re-send.
    #[test]
    fn timeouts_abort_preparing_and_resend_commits() {
        let (mut c, tx, from, to) = setup_with(CoordinatorConfig {
            prepare_resends: 1,
            ..CoordinatorConfig::default()
        });
        c.begin(0, tx.clone());
        c.take_commands();
        c.handle_timeout(999);
        assert_eq!(c.take_commands(), vec![]);
        c.handle_timeout(1_000);
        assert_eq!(
            c.take_commands(),
            vec![
                send(
                    0,
                    ToParticipant::Prepare {
                        tx: tx.id,
                        attempt: 0,
                        keys: vec![from, Key::sequence(AccountId(1))]
                    }
                ),
                Command::SetTimer { at_ms: 2_000 },
            ]
        );
        c.handle_timeout(2_000);
        let commands = c.take_commands();
        assert_eq!(commands.len(), 3, "{commands:?}");
        assert!(
            matches!(&commands[2], Command::Reply(r) if matches!(r.error(), Some(TxError::CrossShardAborted { .. })))
        );

        let (mut c, tx, ..) = setup();
        c.begin(0, tx.clone());
        c.take_commands();
        c.handle_message(
            1,
            ToCoordinator::Prepared {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(0),
                values: vec![(from, Some(100))],
            },
        );
        c.handle_message(
            1,
            ToCoordinator::Prepared {
                tx: tx.id,
                attempt: 0,
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
                commit(1, tx.id, vec![(to, 30)]),
                Command::SetTimer { at_ms: 2_001 },
            ]
        );
    }

    fn grant(tx: TxId, attempt: Attempt, keys: Vec<Key>) -> Grant {
        Grant { tx, attempt, keys }
    }

    /// A participant queues a prepare behind held keys, says so (again for
    /// a repeated prepare), and grants it when the holder commits; aborts
    /// drop queued prepares; duplicates are harmless.
    #[test]
    fn participant_queues_and_grants_in_order() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let other = Key::balance(AccountId(2), AssetId::COIN);
        let (a, b, c) = (TxId::from_u128(1), TxId::from_u128(2), TxId::from_u128(3));
        let queued = |tx| {
            Some(ToCoordinator::Queued {
                tx,
                attempt: 0,
                shard: ShardId(0),
            })
        };
        let mut p = Participant::new(ShardId(0));
        assert_eq!(p.prepare(a, 0, vec![key]), None);
        assert_eq!(p.take_granted(), vec![grant(a, 0, vec![key])]);
        assert!(p.is_locked(&key));
        assert_eq!(p.prepare(b, 0, vec![key, other]), queued(b));
        assert_eq!(p.prepare(b, 0, vec![key, other]), queued(b), "resent");
        // c wants only `other`, which is free, but b waits for it first.
        assert_eq!(p.prepare(c, 0, vec![other]), queued(c));
        assert_eq!(p.take_granted(), vec![]);
        let outcome = p.commit(a, vec![(key, 9)]);
        assert_eq!(outcome.apply[..], [(key, 9)]);
        assert!(outcome.applied);
        assert_eq!(
            outcome.reply,
            ToCoordinator::Committed {
                tx: a,
                shard: ShardId(0)
            }
        );
        assert_eq!(p.take_granted(), vec![grant(b, 0, vec![key, other])]);
        let again = p.commit(a, vec![(key, 9)]);
        assert!(again.apply.is_empty(), "duplicate commit applies nothing");
        assert!(!again.applied);
        p.abort(b, 0);
        assert_eq!(p.take_granted(), vec![grant(c, 0, vec![other])]);
        p.abort(c, 0);
        assert!(!p.has_locks());
    }

    fn inquiry_setup() -> (Coordinator, Transaction, Key, Key) {
        let (mut c, tx, from, to) = setup();
        c.begin(0, tx.clone());
        c.take_commands();
        (c, tx, from, to)
    }

    /// An inquiry about a transaction the coordinator has no record of is
    /// answered with an abort (presumed abort) of the round asked about
    /// only, so that a delayed answer cannot release a later round.
    #[test]
    fn inquiry_without_record_aborts_that_round() {
        let (mut c, ..) = setup();
        let tx = TxId::from_u128(77);
        c.handle_message(
            5,
            ToCoordinator::Inquire {
                tx,
                attempt: 3,
                shard: ShardId(1),
            },
        );
        assert_eq!(c.take_commands(), vec![abort(1, tx, 3)]);
    }

    /// An inquiry about a committing transaction is answered with the
    /// inquiring shard's writes, as often as it is asked; a shard that
    /// already acknowledged gets an empty commit that frees a stray lock.
    #[test]
    fn inquiry_while_committing_resends_that_shards_writes() {
        let (mut c, tx, from, to) = inquiry_setup();
        for (shard, key, value) in [(0, from, 100), (1, to, 0)] {
            c.handle_message(
                1,
                ToCoordinator::Prepared {
                    tx: tx.id,
                    attempt: 0,
                    shard: ShardId(shard),
                    values: vec![(key, Some(value))],
                },
            );
        }
        c.take_commands();
        let inquire = |shard| ToCoordinator::Inquire {
            tx: tx.id,
            attempt: 0,
            shard: ShardId(shard),
        };
        for _ in 0..2 {
            c.handle_message(2, inquire(1));
            assert_eq!(c.take_commands(), vec![commit(1, tx.id, vec![(to, 30)])]);
        }
        c.handle_message(
            3,
            ToCoordinator::Committed {
                tx: tx.id,
                shard: ShardId(0),
            },
        );
        c.handle_message(4, inquire(0));
        assert_eq!(c.take_commands(), vec![commit(0, tx.id, vec![])]);
    }

    /// While the current round still collects votes an inquiry gets no
    /// answer (the vote deadline decides); an inquiry about an earlier,
    /// refused round gets an abort of just that round.
    #[test]
    fn inquiry_while_preparing_waits_and_stale_round_aborts() {
        let (mut c, tx, from, _) = inquiry_setup();
        c.handle_message(
            1,
            ToCoordinator::Inquire {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(0),
            },
        );
        assert_eq!(c.take_commands(), vec![]);
        c.handle_message(
            2,
            ToCoordinator::Refused {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(0),
                key: from,
                holder: TxId::from_u128(1),
            },
        );
        c.take_commands();
        c.handle_message(
            3,
            ToCoordinator::Inquire {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(0),
            },
        );
        assert_eq!(c.take_commands(), vec![abort(0, tx.id, 0)]);
    }

    /// A vote for a transaction the coordinator has no record of (after
    /// its restart, or after it answered) is answered with an abort of its
    /// round, so its stray lock goes at once.
    #[test]
    fn vote_without_record_aborts_that_round() {
        let (mut c, tx, from, _) = setup();
        c.handle_message(
            1,
            ToCoordinator::Prepared {
                tx: tx.id,
                attempt: 2,
                shard: ShardId(0),
                values: vec![(from, Some(1))],
            },
        );
        assert_eq!(c.take_commands(), vec![abort(0, tx.id, 2)]);
    }

    /// Votes of an earlier round are answered with an abort of that round
    /// and count for nothing; refusals of an earlier round are ignored.
    #[test]
    fn stale_round_votes_abort_and_refusals_are_ignored() {
        let (mut c, tx, from, _) = inquiry_setup();
        c.handle_message(
            1,
            ToCoordinator::Refused {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(0),
                key: from,
                holder: TxId::from_u128(1),
            },
        );
        c.handle_timeout(2);
        c.take_commands();
        c.handle_message(
            3,
            ToCoordinator::Prepared {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(0),
                values: vec![(from, Some(100))],
            },
        );
        assert_eq!(c.take_commands(), vec![abort(0, tx.id, 0)]);
        c.handle_message(
            3,
            ToCoordinator::Refused {
                tx: tx.id,
                attempt: 0,
                shard: ShardId(0),
                key: from,
                holder: TxId::from_u128(1),
            },
        );
        assert_eq!(c.take_commands(), vec![]);
    }

    /// A decision recovered from the log is re-sent and arms the resend
    /// timer, so a lost re-send is retried without waiting for inquiries;
    /// once applied, its receipt carries the logged output.
    #[test]
    fn recovered_commit_resends_and_sets_timer() {
        let (mut c, tx, from, to) = setup();
        c.recover_commit(
            50,
            tx.id,
            std::sync::Arc::new([(tx.id, 7.into())].into()),
            vec![
                (ShardId(0), [(from, 70)].into()),
                (ShardId(1), [(to, 35)].into()),
            ],
        );
        assert_eq!(
            c.take_commands(),
            vec![
                commit(0, tx.id, vec![(from, 70)]),
                commit(1, tx.id, vec![(to, 35)]),
                Command::SetTimer { at_ms: 1_050 },
            ]
        );
        for shard in [ShardId(0), ShardId(1)] {
            c.handle_message(60, ToCoordinator::Committed { tx: tx.id, shard });
        }
        assert_eq!(
            c.take_commands(),
            vec![
                Command::Done { tx: tx.id },
                Command::Reply(Receipt {
                    tx_id: tx.id,
                    status: Status::Committed { output: 7.into() }
                })
            ]
        );
    }

    /// Commits restored after a restart answer re-submissions, and a
    /// coordinator configured to remember nothing runs them again.
    #[test]
    fn restored_commits_answer_resubmissions() {
        let (mut c, tx, _, _) = setup();
        c.restore_committed(tx.id, 9.into());
        assert_eq!(c.committed().collect::<Vec<_>>(), vec![(tx.id, 9.into())]);
        c.begin(0, tx.clone());
        assert_eq!(
            c.take_commands(),
            vec![Command::Reply(Receipt {
                tx_id: tx.id,
                status: Status::Committed { output: 9.into() }
            })]
        );
        let (fresh, tx, _, _) = setup();
        let mut forgetful = Coordinator::new(
            CoordinatorConfig {
                remember_committed: 0,
                ..CoordinatorConfig::default()
            },
            fresh.placement.clone(),
            fresh.registry.clone(),
        );
        forgetful.restore_committed(tx.id, 9.into());
        forgetful.begin(0, tx.clone());
        assert_eq!(forgetful.in_flight(), 1, "runs again");
    }

    fn config(inquire_after_ms: u64) -> ParticipantConfig {
        ParticipantConfig {
            inquire_after_ms,
            remember_finished: 4,
            max_queued_prepares: MAX_QUEUED_PREPARES,
        }
    }

    /// A prepared transaction's timer is armed by the first timeout call
    /// after its grant; when it expires the participant inquires, and again
    /// after every further wait, until the decision comes.
    #[test]
    fn participant_inquires_after_timeout_and_repeats() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let a = TxId::from_u128(1);
        let mut p = Participant::with_config(ShardId(2), config(100));
        p.prepare(a, 4, vec![key]);
        p.take_granted();
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.handle_timeout(10), vec![]);
        assert_eq!(p.poll_timeout(), Some(110));
        assert_eq!(p.handle_timeout(109), vec![]);
        let inquiry = ToCoordinator::Inquire {
            tx: a,
            attempt: 4,
            shard: ShardId(2),
        };
        assert_eq!(p.handle_timeout(110), vec![inquiry.clone()]);
        assert_eq!(p.poll_timeout(), Some(210));
        assert_eq!(p.handle_timeout(215), vec![inquiry]);
        p.abort(a, EVERY_ATTEMPT);
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.handle_timeout(1_000), vec![]);
    }

    /// A late prepare of a finished transaction takes no lock: while the
    /// transaction is remembered, and once the coordinator's floor has
    /// passed its round (the memory then forgets it). A later round of an
    /// aborted transaction, above the floor, locks as usual; a stale floor
    /// changes nothing.
    #[test]
    fn late_prepare_after_finish_takes_no_lock() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let (a, b, c) = (TxId::from_u128(1), TxId::from_u128(2), TxId::from_u128(3));
        let mut p = Participant::with_config(ShardId(0), config(100));
        p.abort(a, 0);
        assert_eq!(p.prepare(a, 0, vec![key]), None);
        assert_eq!(p.take_granted(), vec![], "aborted round stays aborted");
        assert!(!p.has_locks());
        p.prepare(b, 1, vec![key]);
        p.commit(b, vec![(key, 1)]);
        p.take_granted();
        p.abort(c, 3);
        assert_eq!(p.prepare(b, 1, vec![key]), None);
        assert_eq!(p.take_granted(), vec![], "committed stays committed");
        assert_eq!(p.remembered(), 3);
        p.decided(2);
        assert_eq!(p.decided_below(), 2);
        assert_eq!(p.remembered(), 1, "rounds 0 and 1 are forgotten, 3 kept");
        p.decided(1);
        assert_eq!(p.decided_below(), 2, "a stale floor is ignored");
        for (tx, round) in [(a, 0), (b, 1), (c, 3)] {
            p.prepare(tx, round, vec![key]);
            assert_eq!(p.take_granted(), vec![], "round {round} stays finished");
        }
        p.prepare(a, 4, vec![key]);
        assert_eq!(p.take_granted(), vec![grant(a, 4, vec![key])]);
    }

    /// Regression (found by the simulator, seed 137): a duplicated prepare
    /// arriving after its transaction committed took a fresh lock once the
    /// shard had forgotten the commit, and the coordinator's re-sent commit
    /// then applied the same writes a second time. The prepare takes no
    /// lock, neither while the commit is remembered nor after the floor
    /// has passed its round, so the re-sent commit applies nothing.
    #[test]
    fn stray_prepare_after_commit_cannot_apply_twice() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let a = TxId::from_u128(1);
        let mut p = Participant::with_config(ShardId(0), config(100));
        p.prepare(a, 0, vec![key]);
        p.take_granted();
        assert!(p.commit(a, vec![(key, 7)]).applied);
        for floor in [0, 1] {
            p.decided(floor);
            p.prepare(a, 0, vec![key]);
            assert_eq!(p.take_granted(), vec![], "floor {floor}");
            let resent = p.commit(a, vec![(key, 7)]);
            assert!(resent.apply.is_empty(), "floor {floor}");
            assert!(!resent.applied, "floor {floor}");
        }
        assert_eq!(p.remembered(), 0);
    }

    /// While the memory of finished transactions is full, prepares of new
    /// transactions are refused; prepares of locked ones still re-vote.
    #[test]
    fn full_memory_refuses_new_prepares() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let mut p = Participant::with_config(ShardId(3), config(100));
        for n in 10..14 {
            p.abort(TxId::from_u128(n), 0);
        }
        let a = TxId::from_u128(1);
        assert_eq!(
            p.prepare(a, 2, vec![key]),
            Some(ToCoordinator::Refused {
                tx: a,
                attempt: 2,
                shard: ShardId(3),
                key,
                holder: a
            })
        );
        p.decided(1);
        assert_eq!(p.remembered(), 0);
        assert_eq!(p.prepare(a, 3, vec![key]), None);
        assert_eq!(p.take_granted(), vec![grant(a, 3, vec![key])]);
    }

    /// Recovery re-takes a logged lock even if the transaction is
    /// remembered as aborted (the live shard had forgotten it), and a
    /// later round's record raises the lock's round.
    #[test]
    fn restore_retakes_logged_locks() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let a = TxId::from_u128(1);
        let mut p = Participant::new(ShardId(0));
        p.abort(a, 0);
        p.restore(a, 0, vec![key]);
        p.restore(a, 1, vec![key]);
        assert_eq!(p.take_granted(), vec![]);
        assert!(p.is_locked(&key));
        p.abort(a, 0);
        assert!(p.is_locked(&key), "the lock is round 1's");
        assert_eq!(
            p.prepared().map(|(t, r, _)| (*t, r)).collect::<Vec<_>>(),
            vec![(a, 1)]
        );
    }

    /// Locks re-taken from the log after a restart wait for their decision
    /// like fresh ones: the first timeout call arms them, and when the
    /// decision does not come the participant asks, in transaction order.
    #[test]
    fn restored_locks_are_inquired_about() {
        let (k1, k2) = (
            Key::balance(AccountId(1), AssetId::COIN),
            Key::balance(AccountId(2), AssetId::COIN),
        );
        let (a, b) = (TxId::from_u128(1), TxId::from_u128(2));
        let mut p = Participant::with_config(ShardId(1), config(100));
        p.restore(b, 3, vec![k2]);
        p.restore(a, 0, vec![k1]);
        assert_eq!(p.take_granted(), vec![], "replay sends no votes");
        assert_eq!(p.handle_timeout(7), vec![]);
        assert_eq!(p.poll_timeout(), Some(107));
        assert_eq!(
            p.handle_timeout(107),
            vec![
                ToCoordinator::Inquire {
                    tx: a,
                    attempt: 0,
                    shard: ShardId(1)
                },
                ToCoordinator::Inquire {
                    tx: b,
                    attempt: 3,
                    shard: ShardId(1)
                },
            ]
        );
    }

    /// Regression (found by the bank fault tests): a shard restarted from
    /// a snapshot forgot its finished transactions, so a late duplicate
    /// prepare of a committed one locked its keys again, and the
    /// duplicate commit behind it re-applied old writes over newer values.
    /// The memory exported for the snapshot and restored must refuse it.
    #[test]
    fn restored_finished_memory_refuses_late_prepare() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let (a, b) = (TxId::from_u128(1), TxId::from_u128(2));
        let mut live = Participant::new(ShardId(0));
        assert_eq!(live.prepare(a, 0, vec![key]), None);
        live.take_granted();
        live.commit(a, vec![(key, 5)]);
        live.abort(b, 3);
        let remembered: Vec<_> = live.finished().collect();
        assert_eq!(
            remembered,
            vec![(a, Finished::Committed, 0), (b, Finished::Aborted(3), 3)]
        );
        let mut restarted = Participant::new(ShardId(0));
        for (tx, outcome, round) in remembered {
            restarted.restore_finished(tx, outcome, round);
        }
        assert_eq!(restarted.prepare(a, 0, vec![key]), None);
        assert_eq!(
            restarted.take_granted(),
            vec![],
            "no lock for a committed tx"
        );
        assert!(!restarted.is_locked(&key));
        let outcome = restarted.commit(a, vec![(key, 5)]);
        assert!(
            outcome.apply.is_empty(),
            "a duplicate commit applies nothing"
        );
        assert_eq!(restarted.prepare(b, 2, vec![key]), None);
        assert_eq!(
            restarted.take_granted(),
            vec![],
            "aborted round stays aborted"
        );
        // A later round of an aborted transaction may still lock.
        assert_eq!(restarted.prepare(b, 4, vec![key]), None);
        assert_eq!(restarted.take_granted().len(), 1);
    }

    /// Regression (found by the simulator): replaying a log in which a
    /// stray lock of a committed transaction was aborted kept that lock,
    /// because the abort deferred to the memory of finished transactions,
    /// which replay cannot age as the live shard did; the next logged grant
    /// of the key then found it held. Replay must end where the live shard
    /// did: the key held by the later transaction only.
    #[test]
    fn replay_releases_aborted_stray_lock_of_committed_tx() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let (a, b) = (TxId::from_u128(1), TxId::from_u128(2));
        let mut p = Participant::new(ShardId(0));
        // The log: a prepared and committed; after the live shard forgot
        // a, a duplicated prepare of it locked the key again; an inquiry
        // aborted that; then b was granted the key.
        p.restore(a, 0, vec![key]);
        p.commit(a, vec![(key, 5)]);
        p.restore(a, 0, vec![key]);
        p.abort(a, EVERY_ATTEMPT);
        p.restore(b, 0, vec![key]);
        assert_eq!(
            p.prepared().map(|(t, r, _)| (*t, r)).collect::<Vec<_>>(),
            vec![(b, 0)]
        );
    }

    /// An abort of an earlier round leaves a later round's lock alone; a
    /// prepare of a later round re-votes on the lock already held, and one
    /// of an aborted round is ignored.
    #[test]
    fn abort_of_earlier_round_keeps_later_lock() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let a = TxId::from_u128(1);
        let mut p = Participant::new(ShardId(0));
        p.prepare(a, 1, vec![key]);
        assert_eq!(p.take_granted(), vec![grant(a, 1, vec![key])]);
        p.abort(a, 0);
        assert!(p.is_locked(&key), "a late abort of round 0 keeps round 1");
        p.prepare(a, 0, vec![key]);
        assert_eq!(p.take_granted(), vec![], "round 0 was aborted");
        p.prepare(a, 2, vec![key]);
        assert_eq!(p.take_granted(), vec![grant(a, 2, vec![key])]);
        p.abort(a, 1);
        assert!(p.is_locked(&key));
        p.abort(a, 2);
        assert!(!p.has_locks());
    }

    /// An abort after a commit of the same transaction releases only a
    /// stray lock and leaves the decision "committed": later prepares of it
    /// take no lock, and a commit is acknowledged however often it comes.
    #[test]
    fn abort_after_commit_keeps_the_decision() {
        let key = Key::balance(AccountId(1), AssetId::COIN);
        let (a, b) = (TxId::from_u128(1), TxId::from_u128(2));
        let mut p = Participant::new(ShardId(0));
        p.prepare(a, 0, vec![key]);
        assert_eq!(p.take_granted(), vec![grant(a, 0, vec![key])]);
        p.commit(a, vec![(key, 5)]);
        p.abort(a, EVERY_ATTEMPT);
        p.prepare(a, 1, vec![key]);
        assert_eq!(p.take_granted(), vec![], "a stays committed");
        p.prepare(b, 0, vec![key]);
        assert_eq!(p.take_granted(), vec![grant(b, 0, vec![key])]);
        assert!(!p.commit(a, Writes::default()).applied);
        p.abort(a, EVERY_ATTEMPT);
        assert!(p.is_locked(&key), "b still holds the key");
    }
}
