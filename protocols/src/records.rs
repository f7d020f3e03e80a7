//! The records shards and the coordinator log, durably, before they act:
//! what recovery replays. Shared by the actors' storage and the simulator,
//! which log the same records.

use serde::{Deserialize, Serialize};

use crate::model::{Key, ShardId, Transaction, TxId, Value};
use crate::twopc::{Attempt, Finished};

/// A shard's log record. Recovery replays them in order: blocks are
/// re-executed (execution is deterministic), cross-shard commits applied,
/// prepared locks re-taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardRecord {
    /// A block of local transactions, executed in this order.
    Block(Vec<Transaction>),
    /// A cross-shard transaction prepared here: its keys are locked.
    Prepared {
        /// The transaction.
        tx: TxId,
        /// The prepare round the lock belongs to.
        attempt: Attempt,
        /// Its keys on this shard.
        keys: Vec<Key>,
    },
    /// A prepared transaction committed with these writes.
    Committed {
        /// The transaction.
        tx: TxId,
        /// Its writes on this shard.
        writes: Vec<(Key, Value)>,
    },
    /// A transaction's rounds up to `attempt` aborted.
    Aborted {
        /// The transaction.
        tx: TxId,
        /// The latest round aborted.
        attempt: Attempt,
    },
}

/// A coordinator's log record (presumed abort: commits only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorRecord {
    /// The decision to commit `tx` with these writes per shard.
    Commit {
        /// The transaction.
        tx: Box<Transaction>,
        /// Its writes, by shard.
        writes: Vec<(ShardId, Vec<(Key, Value)>)>,
        /// Its output, for its receipt.
        output: Value,
    },
    /// Every shard applied the commit of `tx`.
    Done {
        /// The transaction.
        tx: TxId,
    },
    /// A coordinator incarnation starts: its rounds carry this epoch, which
    /// is greater than every earlier incarnation's.
    Epoch {
        /// The epoch.
        epoch: u32,
    },
}

/// A shard's snapshot: its whole state and the locks of its prepared
/// cross-shard transactions, as of the last record appended before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    /// Every live key with its value.
    pub state: Vec<(Key, Value)>,
    /// Prepared transactions, the prepare round that locked them, and the
    /// keys they lock on this shard.
    pub prepared: Vec<(TxId, Attempt, Vec<Key>)>,
    /// The finished transactions the shard remembers, oldest first, so
    /// that after a restart it still ignores late prepares of them.
    pub finished: Vec<(TxId, Finished)>,
    /// Local commits remembered to answer re-submissions, oldest first
    /// (see [`crate::committed`]).
    pub committed: Vec<(TxId, Value)>,
}

/// A coordinator's snapshot: the commit decisions not yet done, as
/// [`CoordinatorRecord::Commit`] records. Done transactions are dropped,
/// which is what compacts the decision log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorSnapshot {
    /// The open commit decisions.
    pub commits: Vec<CoordinatorRecord>,
    /// Finished commits remembered to answer re-submissions, oldest first
    /// (see [`crate::committed`]).
    pub committed: Vec<(TxId, Value)>,
    /// The epoch of the incarnation that wrote the snapshot.
    pub epoch: u32,
}
