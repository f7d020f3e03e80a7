//! parashard: sharded smart-contract execution.
#![warn(missing_docs)]

pub use parashard_actors as actors;
pub use parashard_protocols as protocols;

mod admission;
mod cluster;
pub mod manifest;
pub use cluster::{
    failed, Cluster, ClusterBuilder, ClusterError, ClusterStorageStats, MetricsSnapshot, Pending,
    Within, DEFAULT_CALL_TIMEOUT, MAX_REMEMBERED, ON_DISK_MAX_ACTIVE,
};
pub use manifest::DataDirMismatch;
pub use parashard_actors::faults::{
    CrashPoint, FaultError, FaultStats, Faults, LinkFaults, Target as FaultTarget,
};
pub use parashard_actors::shard::ShardPending;
pub use parashard_actors::storage::{SnapshotPolicy, StorageError, StorageStats};

/// Everything a typical user needs.
pub mod prelude {
    pub use crate::{
        Cluster, ClusterError, CrashPoint, FaultError, LinkFaults, MetricsSnapshot, SnapshotPolicy,
        Within,
    };
    pub use parashard_protocols::auth::{PublicKey, SigningKey};
    pub use parashard_protocols::contracts::args::{Arg, Args};
    pub use parashard_protocols::model::ShardId;
    pub use parashard_protocols::placement::Placement;
    pub use parashard_protocols::twopc::CoordinatorConfig;
    pub use parashard_protocols::tx::{
        AddLiquidity, ContractCall, CreateAccount, CreateAsset, CreatePool, Mint, Swap,
        TokenTransfer, Transfer, WithId,
    };
    pub use parashard_protocols::{
        AbortReason, AccessSet, AccountId, AssetId, BlockExecutor, Call, Context, Contract,
        ContractId, Key, Limit, Output, ParallelExecutor, Receipt, Registry, SequentialExecutor,
        State, Status, Transaction, TxError, TxId, Unanswered, Value,
    };
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
