//! Storage: where shards and the coordinator log what they must not lose.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use parashard_protocols::model::{Key, ShardId, Transaction, TxId, Value};
use parashard_protocols::twopc::Attempt;

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
    },
    /// Every shard applied the commit of `tx`.
    Done {
        /// The transaction.
        tx: TxId,
    },
}

/// Error from storage. Fatal: the owner stops taking work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The storage could not be read or written.
    #[error("storage failed: {0}")]
    Io(String),
}

/// An append-only log of records of type `R`.
pub trait Storage<R>: Send + Sync + 'static {
    /// Appends `records` durably, in order.
    fn append(&self, records: Vec<R>) -> Result<(), StorageError>;
    /// Every record appended so far, in order.
    fn read_all(&self) -> Result<Vec<R>, StorageError>;
}

/// In-memory storage: it lives outside the actor, so it survives the
/// actor's crash and restart inside the process.
#[derive(Debug)]
pub struct MemoryStorage<R> {
    records: Arc<Mutex<Vec<R>>>,
}

impl<R> Default for MemoryStorage<R> {
    fn default() -> Self {
        MemoryStorage {
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<R> Clone for MemoryStorage<R> {
    fn clone(&self) -> Self {
        MemoryStorage {
            records: Arc::clone(&self.records),
        }
    }
}

impl<R: Clone + Send + 'static> Storage<R> for MemoryStorage<R> {
    fn append(&self, records: Vec<R>) -> Result<(), StorageError> {
        self.records
            .lock()
            .map_err(|_| StorageError::Io("in-memory log poisoned".into()))?
            .extend(records);
        Ok(())
    }

    fn read_all(&self) -> Result<Vec<R>, StorageError> {
        Ok(self
            .records
            .lock()
            .map_err(|_| StorageError::Io("in-memory log poisoned".into()))?
            .clone())
    }
}
