//! The records shards and the coordinator log, durably, before they act:
//! what recovery replays. Shared by the actors' storage and the simulator,
//! which log the same records.

use serde::{Deserialize, Serialize};

use crate::model::{Key, ShardId, Transaction, TxId, Value};
use crate::twopc::Attempt;

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
