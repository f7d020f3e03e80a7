//! The deterministic, sans-IO core of parashard.
//!
//! Everything that decides something lives here and runs without an async
//! runtime: the data model ([`model`]), contracts ([`contracts`]), the
//! shard state ([`state`]), the block executors ([`exec`]), two-phase commit
//! ([`twopc`]) and a deterministic simulator that drives it under faults
//! (`sim`).
//!
//! The simulator, the workload generators and the internal maps and lock
//! table (`sim`, `workload`, `fastmap`, `locks`) are public for the
//! command-line tool, the tests and the actors crate, but are not part of
//! the library's stable API, and are left out of these docs.
#![warn(missing_docs)]

pub mod auth;
pub mod committed;
pub mod contracts;
pub mod exec;
#[doc(hidden)]
pub mod fastmap;
#[doc(hidden)]
pub mod locks;
pub mod model;
pub mod placement;
pub mod records;
pub mod recovery;
#[doc(hidden)]
pub mod sim;
pub mod state;
pub mod twopc;
pub mod tx;
#[doc(hidden)]
pub mod workload;

pub use contracts::{Context, Contract, Registry, RegistryError};
pub use exec::{BlockExecutor, ExecutorError, ParallelExecutor, ParallelStats, SequentialExecutor};
pub use model::{
    AbortReason, AccessSet, AccountId, AssetId, Call, ContractId, Key, Limit, Output, Receipt,
    ShardId, Status, Transaction, TxError, TxId, Unanswered, Value,
};
pub use state::State;
