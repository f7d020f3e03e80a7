//! The deterministic, sans-IO core of parashard.
//!
//! Everything that decides something lives here and runs without an async
//! runtime: the data model ([`model`]), contracts ([`contracts`]), the
//! shard state ([`state`]), the block executors ([`exec`]), two-phase commit
//! ([`twopc`]) and a deterministic simulator that drives it under faults
//! ([`sim`]).
#![warn(missing_docs)]

pub mod committed;
pub mod contracts;
pub mod exec;
pub mod fastmap;
pub mod locks;
pub mod model;
pub mod placement;
pub mod records;
pub mod recovery;
pub mod sim;
pub mod state;
pub mod twopc;
pub mod tx;
pub mod workload;

pub use contracts::{Context, Contract, Registry, RegistryError};
pub use exec::{BlockExecutor, ExecutorError, ParallelExecutor, ParallelStats, SequentialExecutor};
pub use model::{
    AbortReason, AccessSet, AccountId, AssetId, Call, ContractId, Key, Receipt, ShardId, Status,
    Transaction, TxError, TxId, Unanswered, Value,
};
pub use state::State;
