//! The cluster: a builder and a handle that hide the actor runtime.
//!
//! ```no_run
//! use parashard::prelude::*;
//! let cluster = Cluster::builder().shards(4).workers(2).start()?;
//! cluster.create_accounts_blocking(&[(AccountId(1), 100), (AccountId(2), 0)])?;
//! let receipt = cluster.submit_blocking(Transaction::transfer(TxId::random(), AccountId(1), AccountId(2), 40))?;
//! assert!(receipt.is_committed());
//! # Ok::<(), parashard::ClusterError>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{oneshot, Semaphore};
use tracing::debug_span;

use crate::admission::{self, SenderLimit};
use parashard_actors::batch::{Answer, Finished};
use parashard_actors::coordinator::{single_shard, CountInFlight, SubmitCross};
use parashard_actors::faults::{FaultError, Faults};
use parashard_actors::runtime::{Runtime, RuntimeConfig, RuntimeError};
use parashard_actors::shard::{CountPending, Crash, Read, ShardPending, SubmitLocal};
use parashard_actors::storage::disk::sync_dir;
use parashard_actors::storage::{
    CoordinatorRecord, DiskStorage, MemoryStorage, ShardRecord, SnapshotPolicy, Storage,
    StorageError, StorageStats,
};
use parashard_protocols::contracts::{Contract, Registry, RegistryError};
use parashard_protocols::model::{
    AccountId, AssetId, ContractId, Key, Receipt, ShardId, Status, Transaction, TxError, TxId,
    Unanswered, Value,
};
use parashard_protocols::placement::{Placement, PlacementError};
use parashard_protocols::twopc::CoordinatorConfig;

use crate::manifest::{self, DataDirMismatch, Manifest};

/// Error from the cluster API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Bad placement.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// A contract could not be registered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A builder setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A batch larger than the cluster admits at once.
    #[error("batch of {len} transactions exceeds the in-flight limit of {max}")]
    BatchTooLarge {
        /// The batch's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many transactions in flight (from `try_` calls).
    #[error("cluster overloaded: {in_flight} transactions in flight")]
    Overloaded {
        /// Transactions in flight.
        in_flight: usize,
    },
    /// A shard or the coordinator went away before answering (it crashed
    /// or the cluster shut down); the outcome of the transactions is
    /// unknown until they are read back.
    #[error("{0} did not answer")]
    Unavailable(String),
    /// The data directory could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The data directory was written by a cluster whose shards,
    /// placements or contracts differ from this one's: its logs would mean
    /// something else here. Nothing was started or changed.
    #[error("data dir {}: {mismatch}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What differs.
        mismatch: DataDirMismatch,
    },
    /// A shard's storage failed (for example a corrupt log); it refuses
    /// work, reads included, rather than answer from a state it could not
    /// rebuild.
    #[error("{shard} refuses work: {error}")]
    ShardFailed {
        /// The shard.
        shard: ShardId,
        /// Its storage error.
        error: StorageError,
    },
    /// Bad input to the fault-injection API.
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// A blocking call was made from inside an async runtime.
    #[error("blocking cluster call inside an async runtime: use the async method")]
    BlockingInAsync,
    /// A call got no answer within its timeout. A read changed nothing; a
    /// submission that timed out waiting for room submitted nothing. (A
    /// submission that was sent returns its receipts instead, those not
    /// answered in time as [`Status::Unknown`].)
    #[error("no answer within {} ms", after.as_millis())]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// The cluster was shut down.
    #[error("the cluster was shut down")]
    ShutDown,
}

/// Builds a [`Cluster`].
pub struct ClusterBuilder {
    shards: u32,
    workers: usize,
    placements: Vec<(AccountId, ShardId)>,
    registry: Registry,
    max_in_flight: usize,
    coordinator: Option<CoordinatorConfig>,
    data_dir: Option<PathBuf>,
    snapshot_policy: Option<SnapshotPolicy>,
    fault_seed: Option<u64>,
    remember_committed: usize,
    call_timeout: Duration,
    chain_id: u64,
    max_in_flight_per_sender: Option<usize>,
}

/// How long a call waits for its answer unless told otherwise
/// ([`ClusterBuilder::call_timeout`], [`Cluster::within`]).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for ClusterBuilder {
    fn default() -> ClusterBuilder {
        ClusterBuilder {
            shards: 4,
            workers: 1,
            placements: Vec::new(),
            registry: Registry::new(),
            max_in_flight: 1 << 20,
            coordinator: None,
            data_dir: None,
            snapshot_policy: None,
            fault_seed: None,
            remember_committed: parashard_protocols::committed::DEFAULT_REMEMBERED,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            chain_id: 0,
            max_in_flight_per_sender: None,
        }
    }
}

impl ClusterBuilder {
    /// The number of shards (default 4).
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// Executor workers per shard (default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Places `account` on `shard` instead of by hash.
    pub fn place(mut self, account: AccountId, shard: ShardId) -> Self {
        self.placements.push((account, shard));
        self
    }

    /// Places every `(account, shard)` pair, as [`ClusterBuilder::place`]
    /// does one.
    pub fn place_all(mut self, placements: impl IntoIterator<Item = (AccountId, ShardId)>) -> Self {
        self.placements.extend(placements);
        self
    }

    /// Places each of `accounts` on the shard `shard_of` gives it, as
    /// [`ClusterBuilder::place`] does one: a placement rule (ranges,
    /// modulo, a lookup) applied to the accounts it covers. The results are
    /// recorded like any explicit placement, so a data directory refuses a
    /// later start whose rule moved one of them; accounts not named go by
    /// hash.
    pub fn place_by(
        mut self,
        accounts: impl IntoIterator<Item = AccountId>,
        shard_of: impl Fn(AccountId) -> ShardId,
    ) -> Self {
        self.placements.extend(
            accounts
                .into_iter()
                .map(|account| (account, shard_of(account))),
        );
        self
    }

    /// The cluster's chain id (default 0): every signature covers it, so a
    /// transaction signed for one cluster is refused by another
    /// ([`TxError::BadSignature`]; see `parashard_protocols::auth`).
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = chain_id;
        self
    }

    /// How long every call that waits (submissions, reads, `pending`) may
    /// take before it gives up (default [`DEFAULT_CALL_TIMEOUT`]); a single
    /// call can set its own with [`Cluster::within`].
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Registers a user contract under `id`, with `version` naming its
    /// code (a release number or a hash of its source). A data directory
    /// records both, and a cluster started on it later must register the
    /// same code under the same id and version, or it is refused with
    /// [`ClusterError::DataDir`]: its state was made by that code.
    pub fn contract(
        mut self,
        id: ContractId,
        version: impl Into<String>,
        contract: Arc<dyn Contract>,
    ) -> Result<Self, ClusterError> {
        self.registry.register(id, version, contract)?;
        Ok(self)
    }

    /// The most transactions in flight; submissions beyond it wait (or,
    /// with `try_submit_batch`, fail with [`ClusterError::Overloaded`]).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// The most transactions one sender may have in flight at once
    /// (counted from admission until the call that submitted them
    /// returns); beyond it a transaction fails at once with
    /// [`TxError::TooLarge`] naming [`Limit::SenderInFlight`](parashard_protocols::model::Limit::SenderInFlight). Unbounded
    /// by default: the cluster's own bound ([`ClusterBuilder::max_in_flight`])
    /// caps memory either way, and counting costs a shared map update per
    /// transaction. 0 is refused by [`ClusterBuilder::start`].
    pub fn max_in_flight_per_sender(mut self, max: usize) -> Self {
        self.max_in_flight_per_sender = Some(max);
        self
    }

    /// How many of its latest commits each shard (local transactions) and
    /// the coordinator (cross-shard ones) remember, default
    /// [`parashard_protocols::committed::DEFAULT_REMEMBERED`]. A transaction
    /// submitted again with the id of a remembered commit gets that commit's
    /// receipt instead of running twice: the safe retry for a client that
    /// lost a receipt (a timeout, a crash). The memory survives crashes and
    /// restarts (logs and snapshots keep it). Failed transactions are not
    /// remembered: they changed nothing, and a retry runs them again. 0
    /// turns the memory off; more than [`MAX_REMEMBERED`] is refused by
    /// [`ClusterBuilder::start`]. Overrides `remember_committed` of
    /// [`ClusterBuilder::coordinator`]'s config.
    pub fn remember_committed(mut self, commits: usize) -> Self {
        self.remember_committed = commits;
        self
    }

    /// 2PC tunables (default [`CoordinatorConfig::default`], with
    /// `max_active` raised to [`ON_DISK_MAX_ACTIVE`] on disk).
    pub fn coordinator(mut self, config: CoordinatorConfig) -> Self {
        self.coordinator = Some(config);
        self
    }

    /// Keeps shard and coordinator logs on disk under `path` (one
    /// directory each), so that a cluster started again on the same
    /// directory resumes with everything committed. Without it (the
    /// default) storage is in memory: it survives actor crashes, not the
    /// process.
    ///
    /// The directory's manifest ([`crate::manifest`]) records the shard
    /// count, the explicit placements and the registered contracts with
    /// their versions; a cluster started on it later with any of these
    /// different is refused with [`ClusterError::DataDir`] (a contract
    /// registered for the first time is added). Recovery applies the
    /// logged writes and runs no contract code, so it restores exactly what
    /// committed whatever the contracts do now.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(path.into());
        self
    }

    /// When shards and the coordinator snapshot their state and start a
    /// new log, on disk and in memory alike (default
    /// [`SnapshotPolicy::default`] on disk, [`SnapshotPolicy::IN_MEMORY`]
    /// in memory): without snapshots an in-memory log would keep every
    /// record of the cluster's life. In memory, bytes are the records'
    /// estimated size there.
    pub fn snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshot_policy = Some(policy);
        self
    }

    /// The seed of the fault layer's random choices (see
    /// [`Cluster::faults`]). Without it the seed comes from the clock;
    /// [`Faults::seed`] tells it either way, so a failing run can be
    /// replayed.
    pub fn fault_seed(mut self, seed: u64) -> Self {
        self.fault_seed = Some(seed);
        self
    }

    /// Starts the cluster.
    pub fn start(self) -> Result<Cluster, ClusterError> {
        if self.remember_committed > MAX_REMEMBERED {
            return Err(ClusterError::Config(format!(
                "remember_committed {} above the maximum of {MAX_REMEMBERED}",
                self.remember_committed
            )));
        }
        if self.coordinator.as_ref().is_some_and(|c| c.max_active == 0) {
            return Err(ClusterError::Config(
                "coordinator max_active 0: no cross-shard transaction could start".into(),
            ));
        }
        if self.call_timeout.is_zero() {
            return Err(ClusterError::Config(
                "call_timeout 0: no call could ever be answered".into(),
            ));
        }
        if self.max_in_flight_per_sender == Some(0) {
            return Err(ClusterError::Config(
                "max_in_flight_per_sender 0: no transaction could ever be admitted".into(),
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(ClusterError::Config(format!(
                "max_in_flight {} out of range",
                self.max_in_flight
            )));
        }
        let mut placement = Placement::hashed(self.shards)?;
        for (account, shard) in self.placements {
            placement.place(account, shard)?;
        }
        let (shard_storage, coordinator_storage) = match &self.data_dir {
            Some(dir) => {
                let policy = self.snapshot_policy.unwrap_or_default();
                let given = Manifest::of(&placement, &self.registry);
                open_data_dir(dir, &given, policy)?
            }
            None => {
                let policy = self.snapshot_policy.unwrap_or(SnapshotPolicy::IN_MEMORY);
                (
                    (0..self.shards)
                        .map(|_| {
                            Arc::new(MemoryStorage::with_policy(policy)) as Arc<dyn Storage<_>>
                        })
                        .collect(),
                    Arc::new(MemoryStorage::with_policy(policy)) as Arc<dyn Storage<_>>,
                )
            }
        };
        let coordinator = self.coordinator.unwrap_or_else(|| match self.data_dir {
            Some(_) => CoordinatorConfig {
                max_active: ON_DISK_MAX_ACTIVE,
                ..CoordinatorConfig::default()
            },
            None => CoordinatorConfig::default(),
        });
        let storage = ClusterStorage {
            shards: shard_storage.clone(),
            coordinator: coordinator_storage.clone(),
        };
        let fault_seed = self.fault_seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let faults = Arc::new(Faults::new(fault_seed, self.shards));
        let registry = Arc::new(self.registry);
        let runtime = Runtime::start(RuntimeConfig {
            faults: faults.clone(),
            placement: placement.clone(),
            workers: self.workers,
            registry: registry.clone(),
            coordinator: CoordinatorConfig {
                remember_committed: self.remember_committed,
                // One admission rule: what the cluster admitted (at most
                // `max_in_flight` at once) waits at the coordinator rather
                // than being refused by a smaller limit of its own.
                max_in_flight: coordinator.max_in_flight.max(self.max_in_flight),
                ..coordinator
            },
            shard_remember_committed: self.remember_committed,
            shard_storage,
            coordinator_storage,
        })?;
        let blocking = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Config(format!("blocking runtime: {e}")))?;
        Ok(Cluster {
            runtime,
            placement,
            permits: Arc::new(Semaphore::new(self.max_in_flight)),
            max_in_flight: self.max_in_flight,
            sender_limit: self.max_in_flight_per_sender.map(SenderLimit::new),
            metrics: Metrics::default(),
            storage: Mutex::new(Some(storage)),
            blocking,
            faults,
            timeout: self.call_timeout,
            chain_id: self.chain_id,
            stopped: AtomicBool::new(false),
            registry,
        })
    }
}

type ShardLogs = Vec<Arc<dyn Storage<ShardRecord>>>;
type CoordinatorLog = Arc<dyn Storage<CoordinatorRecord>>;

/// The default [`CoordinatorConfig::max_active`] of a cluster on disk. A
/// transaction there waits for several `fdatasync`s in turn, so more of
/// them must be active to keep the logs' group commits full: on 2 cores,
/// 1M cross-shard transfers ran at 72k-74k tx/s with 8,192 active and 66k
/// with the in-memory default of 2,048 (`bench --data-dir`).
pub const ON_DISK_MAX_ACTIVE: usize = 8_192;

/// The most commits a shard or the coordinator may be asked to remember
/// (each costs about 40 bytes).
pub const MAX_REMEMBERED: usize = 1 << 28;

fn open_data_dir(
    dir: &Path,
    given: &Manifest,
    policy: SnapshotPolicy,
) -> Result<(ShardLogs, CoordinatorLog), ClusterError> {
    let io = |e: std::io::Error| StorageError::Io(format!("data dir {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let mismatch = |mismatch| ClusterError::DataDir {
        path: dir.to_path_buf(),
        mismatch,
    };
    let recorded = match manifest::read(dir)?.map_err(mismatch)? {
        manifest::Found::Manifest(recorded) => {
            recorded.admits(given).map_err(mismatch)?;
            Some(recorded)
        }
        manifest::Found::Nothing => None,
    };
    let shards = given.shards;
    let shard_logs = (0..shards)
        .map(|i| {
            DiskStorage::open(dir.join(format!("shard-{i}")), policy)
                .map(|s| Arc::new(s) as Arc<dyn Storage<ShardRecord>>)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let coordinator_log = Arc::new(DiskStorage::open(dir.join("coordinator"), policy)?);
    // Written only now that this cluster holds the logs' locks, so that a
    // cluster refused for a directory in use never touches its manifest.
    if recorded.as_ref() != Some(given) {
        manifest::write(dir, given)?;
    }
    Ok((shard_logs, coordinator_log))
}

struct ClusterStorage {
    shards: ShardLogs,
    coordinator: CoordinatorLog,
}

/// Storage counters of a cluster since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStorageStats {
    /// Every shard's log, added up.
    pub shards: StorageStats,
    /// The coordinator's log.
    pub coordinator: StorageStats,
}

#[derive(Default)]
struct Metrics {
    committed: AtomicU64,
    failed: AtomicU64,
    unknown: AtomicU64,
    latency_us: Mutex<Option<Histogram<u64>>>,
}

/// A snapshot of the cluster's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Transactions committed.
    pub committed: u64,
    /// Transactions that failed or aborted.
    pub failed: u64,
    /// Median submission-to-receipt latency, per transaction, in
    /// microseconds.
    pub latency_us_p50: u64,
    /// 99th percentile latency.
    pub latency_us_p99: u64,
    /// 99.9th percentile latency.
    pub latency_us_p999: u64,
    /// Transactions whose outcome their client did not learn
    /// ([`Status::Unknown`]).
    pub unknown: u64,
}

/// A running cluster. Usable from sync code (`*_blocking`) and from any
/// async runtime (the async methods).
pub struct Cluster {
    runtime: Runtime,
    placement: Placement,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    metrics: Metrics,
    /// Taken at shutdown: the logs close (and a data directory unlocks)
    /// once the actors and this handle let go of them.
    storage: Mutex<Option<ClusterStorage>>,
    blocking: tokio::runtime::Runtime,
    faults: Arc<Faults>,
    timeout: Duration,
    stopped: AtomicBool,
    registry: Arc<Registry>,
    chain_id: u64,
    /// Each sender's transactions in flight, when bounded.
    sender_limit: Option<SenderLimit>,
}

/// Unfinished work in a cluster: what a test waits to drain before it
/// checks invariants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Cross-shard transactions the coordinator has not finished.
    pub coordinator_in_flight: usize,
    /// Each shard's locks and queues, by shard id.
    pub shards: Vec<ShardPending>,
}

impl Pending {
    /// Whether nothing is in flight, locked or queued anywhere.
    pub fn is_quiet(&self) -> bool {
        self.coordinator_in_flight == 0 && self.shards.iter().all(|s| *s == ShardPending::default())
    }
}

impl Cluster {
    /// A builder with defaults: 4 shards, 1 worker each, hash placement.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Where keys live.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// A call of user contract `contract` from `sender` with `args`, with
    /// the access set the contract declares for them
    /// ([`Contract::access`]) and a fresh id: `cluster.call(trader, ROUTER,
    /// args)?` instead of listing the keys by hand.
    pub fn call(
        &self,
        sender: AccountId,
        contract: ContractId,
        args: Vec<Value>,
    ) -> Result<Transaction, TxError> {
        self.registry.call(sender, contract, args)
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> Result<F::Output, ClusterError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ClusterError::BlockingInAsync);
        }
        Ok(self.blocking.block_on(future))
    }

    /// The chain id every signature must cover
    /// ([`ClusterBuilder::chain_id`]).
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The timeout every call that waits gets unless told otherwise
    /// ([`ClusterBuilder::call_timeout`]).
    pub fn call_timeout(&self) -> Duration {
        self.timeout
    }

    /// The same calls with their own timeout, for one call or a few:
    /// `cluster.within(Duration::from_secs(1)).submit_batch_blocking(txs)`.
    pub fn within(&self, timeout: Duration) -> Within<'_> {
        Within {
            cluster: self,
            timeout,
        }
    }

    fn check_running(&self) -> Result<(), ClusterError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(ClusterError::ShutDown);
        }
        Ok(())
    }

    /// The number of permits a batch of `len` takes, if it fits at all.
    fn permits_for(&self, len: usize) -> Result<u32, ClusterError> {
        u32::try_from(len)
            .ok()
            .filter(|n| (*n as usize) <= self.max_in_flight)
            .ok_or(ClusterError::BatchTooLarge {
                len,
                max: self.max_in_flight,
            })
    }

    /// Submits a batch and waits for every receipt, in batch order. Waits
    /// for room when the cluster is saturated. A part of the batch that
    /// gets no answer within the call's timeout, or whose shard or
    /// coordinator stopped before answering, gets [`Status::Unknown`]
    /// receipts: submit those transactions again with the same ids to learn
    /// their outcome. Timing out while waiting for room is
    /// [`ClusterError::Timeout`] (nothing was submitted).
    pub async fn submit_batch(&self, txs: Vec<Transaction>) -> Result<Vec<Receipt>, ClusterError> {
        self.submit_batch_within(txs, self.timeout).await
    }

    async fn submit_batch_within(
        &self,
        txs: Vec<Transaction>,
        timeout: Duration,
    ) -> Result<Vec<Receipt>, ClusterError> {
        self.check_running()?;
        let deadline = tokio::time::Instant::now() + timeout;
        let n = self.permits_for(txs.len())?;
        let _permit = tokio::time::timeout_at(deadline, self.permits.acquire_many(n))
            .await
            .map_err(|_| ClusterError::Timeout { after: timeout })?
            .map_err(|_| ClusterError::ShutDown)?;
        Ok(self.dispatch(txs, deadline, timeout).await)
    }

    /// Like [`Cluster::submit_batch`] but fails at once with
    /// [`ClusterError::Overloaded`] instead of waiting for room.
    pub async fn try_submit_batch(
        &self,
        txs: Vec<Transaction>,
    ) -> Result<Vec<Receipt>, ClusterError> {
        self.check_running()?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let n = self.permits_for(txs.len())?;
        let _permit = self
            .permits
            .try_acquire_many(n)
            .map_err(|_| ClusterError::Overloaded {
                in_flight: self.max_in_flight - self.permits.available_permits(),
            })?;
        Ok(self.dispatch(txs, deadline, self.timeout).await)
    }

    /// Sends each shard its local part of the batch and the coordinator the
    /// cross-shard part, then gathers the receipts until `deadline`.
    async fn dispatch(
        &self,
        txs: Vec<Transaction>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Vec<Receipt> {
        let span = debug_span!("submit", txs = txs.len());
        let _entered = span.enter();
        let start = Instant::now();
        let ids: Vec<TxId> = txs.iter().map(|tx| tx.id).collect();
        // Limits and signatures first: a transaction refused here is
        // answered here and goes nowhere. Its sender's count (if bounded)
        // is held until this call returns.
        let (mut refused, _counted) =
            admission::admit(self.chain_id, &txs, self.sender_limit.as_ref());
        // Split: one block per shard for local transactions, one batch of
        // cross-shard transactions for the coordinator (the last group).
        // Sized first, so that each transaction moves once.
        let shards = self.placement.shards() as usize;
        let targets: Vec<usize> = txs
            .iter()
            .enumerate()
            .map(|(i, tx)| match refused.get(i) {
                Some(Some(_)) => shards + 1,
                _ => single_shard(&self.placement, tx).map_or(shards, |shard| shard.0 as usize),
            })
            .collect();
        let mut sizes = vec![0; shards + 2];
        for &target in &targets {
            sizes[target] += 1;
        }
        let mut groups: Vec<(Vec<usize>, Vec<Transaction>)> = sizes
            .iter()
            .map(|&size| (Vec::with_capacity(size), Vec::with_capacity(size)))
            .collect();
        for (i, (tx, target)) in txs.into_iter().zip(targets).enumerate() {
            let (positions, group) = &mut groups[target];
            positions.push(i);
            group.push(tx);
        }
        let mut parts = Vec::new();
        let mut receipts: Vec<Option<Receipt>> = vec![None; ids.len()];
        for (target, (positions, group)) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            if target > shards {
                for position in positions {
                    let error = refused[position].take().expect("refused");
                    receipts[position] = Some(Receipt {
                        tx_id: ids[position],
                        status: Status::Failed(error),
                    });
                }
                continue;
            }
            let (reply, receiver) = oneshot::channel();
            let (who, sent) = if target < shards {
                let send = self.runtime.shards[target].send(SubmitLocal { txs: group, reply });
                let sent = tokio::time::timeout_at(deadline, send).await;
                (format!("shard {target}"), sent.map(|r| r.is_ok()))
            } else {
                let send = self
                    .runtime
                    .coordinator
                    .send(SubmitCross { txs: group, reply });
                let sent = tokio::time::timeout_at(deadline, send).await;
                ("coordinator".to_string(), sent.map(|r| r.is_ok()))
            };
            parts.push((positions, receiver, who, sent));
        }
        let mut latencies = Latencies::default();
        for (positions, receiver, who, sent) in parts {
            let answer = match sent {
                Ok(true) => match tokio::time::timeout_at(deadline, receiver).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(_)) => Err(Unanswered::Unavailable { who }),
                    Err(_) => Err(Unanswered::TimedOut {
                        after_ms: timeout.as_millis() as u64,
                    }),
                },
                Ok(false) => Err(Unanswered::Unavailable { who }),
                Err(_) => Err(Unanswered::TimedOut {
                    after_ms: timeout.as_millis() as u64,
                }),
            };
            match answer {
                Ok(answer) => {
                    latencies.add(&answer, start);
                    for (position, receipt) in positions.into_iter().zip(answer.receipts) {
                        receipts[position] = Some(receipt);
                    }
                }
                Err(why) => {
                    for position in positions {
                        receipts[position] = Some(Receipt {
                            tx_id: ids[position],
                            status: Status::Unknown(why.clone()),
                        });
                    }
                }
            }
        }
        let receipts: Vec<Receipt> = receipts
            .into_iter()
            .map(|r| r.expect("every position answered"))
            .collect();
        self.record(&receipts, latencies);
        receipts
    }

    fn record(&self, receipts: &[Receipt], latencies: Latencies) {
        let (mut committed, mut unknown) = (0, 0);
        for receipt in receipts {
            match receipt.status {
                Status::Committed { .. } => committed += 1,
                Status::Unknown(_) => unknown += 1,
                _ => {}
            }
        }
        let metrics = &self.metrics;
        metrics.committed.fetch_add(committed, Ordering::Relaxed);
        metrics.unknown.fetch_add(unknown, Ordering::Relaxed);
        let failed = receipts.len() as u64 - committed - unknown;
        metrics.failed.fetch_add(failed, Ordering::Relaxed);
        let mut histogram = metrics.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        let histogram = histogram
            .get_or_insert_with(|| Histogram::new(3).expect("3 significant figures is valid"));
        for (micros, count) in latencies.0 {
            let _ = histogram.record_n(micros.max(1), count);
        }
    }

    /// Submits one transaction (see [`Cluster::submit_batch`]).
    pub async fn submit(&self, tx: Transaction) -> Result<Receipt, ClusterError> {
        Ok(self.submit_batch(vec![tx]).await?.remove(0))
    }

    /// [`Cluster::submit_batch`] from sync code.
    pub fn submit_batch_blocking(
        &self,
        txs: Vec<Transaction>,
    ) -> Result<Vec<Receipt>, ClusterError> {
        self.block_on(self.submit_batch(txs))?
    }

    /// [`Cluster::submit`] from sync code.
    pub fn submit_blocking(&self, tx: Transaction) -> Result<Receipt, ClusterError> {
        self.block_on(self.submit(tx))?
    }

    /// Reads keys (any shards); `None` for keys that do not exist.
    pub async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Value>>, ClusterError> {
        self.get_many_within(keys, self.timeout).await
    }

    async fn get_many_within(
        &self,
        keys: &[Key],
        timeout: Duration,
    ) -> Result<Vec<Option<Value>>, ClusterError> {
        self.check_running()?;
        tokio::time::timeout(timeout, self.read(keys))
            .await
            .map_err(|_| ClusterError::Timeout { after: timeout })?
    }

    async fn read(&self, keys: &[Key]) -> Result<Vec<Option<Value>>, ClusterError> {
        let mut values = vec![None; keys.len()];
        let shards = self.placement.shards() as usize;
        let mut by_shard: Vec<(Vec<usize>, Vec<Key>)> =
            (0..shards).map(|_| (Vec::new(), Vec::new())).collect();
        for (i, key) in keys.iter().enumerate() {
            let (positions, group) = &mut by_shard[self.placement.shard_of(key).0 as usize];
            positions.push(i);
            group.push(*key);
        }
        for (shard, (positions, group)) in by_shard.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let (reply, receiver) = oneshot::channel();
            let unavailable = || ClusterError::Unavailable(format!("shard {shard}"));
            self.runtime.shards[shard]
                .send(Read { keys: group, reply })
                .await
                .map_err(|_| unavailable())?;
            let answer = receiver.await.map_err(|_| unavailable())?;
            let shard_values = answer.map_err(|error| ClusterError::ShardFailed {
                shard: ShardId(shard as u32),
                error,
            })?;
            for (position, value) in positions.into_iter().zip(shard_values) {
                values[position] = value;
            }
        }
        Ok(values)
    }

    /// The balance of `asset` held by `account`, if the key exists.
    pub async fn balance(
        &self,
        account: AccountId,
        asset: AssetId,
    ) -> Result<Option<Value>, ClusterError> {
        Ok(self.get_many(&[Key::balance(account, asset)]).await?[0])
    }

    /// [`Cluster::get_many`] from sync code.
    pub fn get_many_blocking(&self, keys: &[Key]) -> Result<Vec<Option<Value>>, ClusterError> {
        self.block_on(self.get_many(keys))?
    }

    /// [`Cluster::balance`] from sync code.
    pub fn balance_blocking(
        &self,
        account: AccountId,
        asset: AssetId,
    ) -> Result<Option<Value>, ClusterError> {
        self.block_on(self.balance(account, asset))?
    }

    /// Genesis: creates accounts with coin balances. Returns the receipts.
    pub async fn create_accounts(
        &self,
        accounts: &[(AccountId, Value)],
    ) -> Result<Vec<Receipt>, ClusterError> {
        let txs = accounts
            .iter()
            .map(|(account, balance)| {
                Transaction::create_account(TxId::random(), *account, *balance)
            })
            .collect();
        self.submit_batch(txs).await
    }

    /// [`Cluster::create_accounts`] from sync code.
    pub fn create_accounts_blocking(
        &self,
        accounts: &[(AccountId, Value)],
    ) -> Result<Vec<Receipt>, ClusterError> {
        self.block_on(self.create_accounts(accounts))?
    }

    /// Fault injection: crashes `shard` now. Its supervisor restarts it and
    /// it recovers every committed transaction from its log; transactions
    /// it had queued but not executed are answered with
    /// [`ClusterError::Unavailable`]. An unknown shard is a
    /// [`FaultError::UnknownShard`].
    pub fn crash_shard(&self, shard: ShardId) -> Result<(), ClusterError> {
        let addr = self
            .runtime
            .shards
            .get(shard.0 as usize)
            .ok_or(FaultError::UnknownShard {
                shard,
                shards: self.placement.shards(),
            })?;
        addr.do_send(Crash);
        Ok(())
    }

    /// Fault injection: crashes the coordinator now; it restarts and
    /// re-drives its logged commit decisions.
    pub fn crash_coordinator(&self) {
        self.runtime.coordinator.do_send(Crash);
    }

    /// The fault-injection layer: crashes at named protocol points, link
    /// faults, partitions and slow shards. Its seed is
    /// [`Faults::seed`].
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Clears every injected fault (see [`Faults::heal`]).
    pub fn heal(&self) {
        self.faults.heal();
    }

    /// Unfinished work: the coordinator's cross-shard transactions in
    /// flight, and each shard's locks and queues. A crashed actor that is
    /// restarting answers once it is back.
    pub async fn pending(&self) -> Result<Pending, ClusterError> {
        self.pending_within(self.timeout).await
    }

    async fn pending_within(&self, timeout: Duration) -> Result<Pending, ClusterError> {
        self.check_running()?;
        tokio::time::timeout(timeout, self.count_pending())
            .await
            .map_err(|_| ClusterError::Timeout { after: timeout })?
    }

    async fn count_pending(&self) -> Result<Pending, ClusterError> {
        let coordinator_in_flight = self
            .runtime
            .coordinator
            .send(CountInFlight)
            .await
            .map_err(|_| ClusterError::Unavailable("coordinator".into()))?;
        let mut shards = Vec::with_capacity(self.runtime.shards.len());
        for (i, shard) in self.runtime.shards.iter().enumerate() {
            shards.push(
                shard
                    .send(CountPending)
                    .await
                    .map_err(|_| ClusterError::Unavailable(format!("shard {i}")))?,
            );
        }
        Ok(Pending {
            coordinator_in_flight,
            shards,
        })
    }

    /// [`Cluster::pending`] from sync code.
    pub fn pending_blocking(&self) -> Result<Pending, ClusterError> {
        self.block_on(self.pending())?
    }

    /// Counters and per-transaction latency percentiles so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        let histogram = self
            .metrics
            .latency_us
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let at = |q| histogram.as_ref().map_or(0, |h| h.value_at_quantile(q));
        MetricsSnapshot {
            committed: self.metrics.committed.load(Ordering::Relaxed),
            failed: self.metrics.failed.load(Ordering::Relaxed),
            latency_us_p50: at(0.5),
            latency_us_p99: at(0.99),
            latency_us_p999: at(0.999),
            unknown: self.metrics.unknown.load(Ordering::Relaxed),
        }
    }

    /// Clears the counters and latencies of [`Cluster::metrics`], to
    /// measure from now on (a benchmark's next phase).
    pub fn reset_metrics(&self) {
        let metrics = &self.metrics;
        for counter in [&metrics.committed, &metrics.failed, &metrics.unknown] {
            counter.store(0, Ordering::Relaxed);
        }
        *metrics.latency_us.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Storage counters (appends, syncs, snapshots) since the cluster
    /// started; zero after [`Cluster::shutdown`].
    pub fn storage_stats(&self) -> ClusterStorageStats {
        let storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        let Some(storage) = storage.as_ref() else {
            return ClusterStorageStats::default();
        };
        let mut shards = StorageStats::default();
        for log in &storage.shards {
            shards += log.stats();
        }
        ClusterStorageStats {
            shards,
            coordinator: storage.coordinator.stats(),
        }
    }

    /// Stops every actor and waits until they are gone (their logs closed,
    /// a data directory unlocked). Later calls get
    /// [`ClusterError::ShutDown`]; shutting down twice does nothing more.
    /// Dropping the cluster shuts it down too.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        self.permits.close();
        self.runtime.stop();
        self.storage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A cluster's calls with a timeout of their own (see [`Cluster::within`]).
#[derive(Clone, Copy)]
pub struct Within<'a> {
    cluster: &'a Cluster,
    timeout: Duration,
}

impl Within<'_> {
    /// [`Cluster::submit_batch`] with this timeout.
    pub async fn submit_batch(&self, txs: Vec<Transaction>) -> Result<Vec<Receipt>, ClusterError> {
        self.cluster.submit_batch_within(txs, self.timeout).await
    }

    /// [`Cluster::submit`] with this timeout.
    pub async fn submit(&self, tx: Transaction) -> Result<Receipt, ClusterError> {
        Ok(self.submit_batch(vec![tx]).await?.remove(0))
    }

    /// [`Cluster::get_many`] with this timeout.
    pub async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Value>>, ClusterError> {
        self.cluster.get_many_within(keys, self.timeout).await
    }

    /// [`Cluster::pending`] with this timeout.
    pub async fn pending(&self) -> Result<Pending, ClusterError> {
        self.cluster.pending_within(self.timeout).await
    }

    /// [`Within::submit_batch`] from sync code.
    pub fn submit_batch_blocking(
        &self,
        txs: Vec<Transaction>,
    ) -> Result<Vec<Receipt>, ClusterError> {
        self.cluster.block_on(self.submit_batch(txs))?
    }

    /// [`Within::submit`] from sync code.
    pub fn submit_blocking(&self, tx: Transaction) -> Result<Receipt, ClusterError> {
        self.cluster.block_on(self.submit(tx))?
    }

    /// [`Within::get_many`] from sync code.
    pub fn get_many_blocking(&self, keys: &[Key]) -> Result<Vec<Option<Value>>, ClusterError> {
        self.cluster.block_on(self.get_many(keys))?
    }

    /// [`Within::pending`] from sync code.
    pub fn pending_blocking(&self) -> Result<Pending, ClusterError> {
        self.cluster.block_on(self.pending())?
    }
}

/// Per-transaction latencies of one batch: (microseconds, how many).
#[derive(Default)]
struct Latencies(Vec<(u64, u64)>);

impl Latencies {
    /// Adds the latencies of a part of the batch that started at `start`.
    fn add(&mut self, answer: &Answer, start: Instant) {
        let micros = |at: Instant| at.saturating_duration_since(start).as_micros() as u64;
        match &answer.finished {
            Finished::Together(at) => self.0.push((micros(*at), answer.receipts.len() as u64)),
            Finished::Each(times) => {
                // Entries finishing in the same drain share a time: one
                // histogram update per run of equal times.
                for &at in times {
                    match self.0.last_mut() {
                        Some((last, count)) if *last == micros(at) => *count += 1,
                        _ => self.0.push((micros(at), 1)),
                    }
                }
            }
        }
    }
}

/// Whether `receipt` failed, for quick checks in examples and tests.
pub fn failed(receipt: &Receipt) -> bool {
    matches!(receipt.status, Status::Failed(_))
}
