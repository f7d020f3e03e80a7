//! The parallel executor: a dependency order from declared access sets,
//! executed by a fixed set of workers.
//!
//! A block runs in two phases.
//!
//! 1. Analysis. Worker `w` owns the state partitions `p` with
//!    `p % workers == w`. It walks the whole block and, for each declared key
//!    in its partitions, finds or inserts the key's slot, records the slot
//!    for phase 2 and swaps the key's tag (see [`crate::state`]) to learn the
//!    previous transaction of the block that declared the key: that is the
//!    transaction's dependency through this key. Every key is hashed and
//!    looked up exactly once per block, by one worker, without locks.
//! 2. Execution. Workers claim chunks of consecutive transactions in block
//!    order. Before running a transaction a worker waits until each of its
//!    dependencies has finished; then it runs the contract against the slots
//!    found in phase 1 (no hashing) and publishes its writes.
//!
//! Why this gives exactly the sequential result: two transactions that share
//! a key are ordered by the chain of dependencies through that key, so each
//! key sees its writes in block order, and a transaction reads precisely
//! what it would read sequentially. Transactions without a shared key
//! commute. Dependencies point backwards and chunks are claimed in order,
//! so the lowest unfinished transaction can always run: no deadlock.
//!
//! Conflicts are judged on declared keys, reads included: a read-read pair
//! is ordered although it need not be. Natively almost every declared key is
//! written, and the simple rule keeps one dependency per declared key.
//!
//! When a sample of the block shows dense conflicts (a few hot accounts),
//! workers would mostly wait on each other, so the block runs sequentially
//! instead. See the README for the measurements behind this design.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use smallvec::SmallVec;

use super::sequential::execute_in_order;
use super::{check_block_size, BlockExecutor, ExecutorError};
use crate::contracts::{self, Registry};
use crate::model::{Key, Receipt, Status, Transaction};
use crate::state::{hash, partition_of, Partition, Slot, State, PARTITIONS};

/// Transactions a worker claims at once: large enough to amortise the
/// shared counter, small enough to balance the load.
const CHUNK: usize = 32;
/// Blocks smaller than this run sequentially: waking workers costs more.
const MIN_PARALLEL_BLOCK: usize = 512;
/// How many leading transactions the contention check samples.
const SAMPLE: usize = 256;
/// A sampled transaction counts as conflicting if it shares a key with one
/// of this many predecessors (about what two workers have in flight).
const CONFLICT_WINDOW: usize = 4 * CHUNK;
/// The block runs sequentially if more than 1/`CONTENDED_DIVISOR` of the
/// sample conflicts.
const CONTENDED_DIVISOR: usize = 5;
/// Keys a worker prefetches ahead during analysis.
const PREFETCH_KEYS: usize = 8;
/// Transactions a worker prefetches ahead during execution.
const PREFETCH_TXS: usize = 4;
/// Spins before a waiting worker yields its core.
const SPINS_BEFORE_YIELD: u32 = 128;

/// Counters of what the parallel executor did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParallelStats {
    /// Blocks executed in parallel.
    pub parallel_blocks: u64,
    /// Blocks executed sequentially because they were small or contended.
    pub sequential_blocks: u64,
    /// Transactions that had to wait for a dependency held by another worker.
    pub waits: u64,
}

/// Executes blocks with `workers` threads; results equal
/// [`super::SequentialExecutor`]'s.
pub struct ParallelExecutor {
    registry: Arc<Registry>,
    workers: usize,
    pool: rayon::ThreadPool,
    /// The block plan, whose buffers every block reuses.
    plan: Mutex<Plan>,
    parallel_blocks: AtomicU64,
    sequential_blocks: AtomicU64,
    waits: AtomicU64,
}

impl std::fmt::Debug for ParallelExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelExecutor")
            .field("workers", &self.workers)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ParallelExecutor {
    /// An executor with `workers` threads (at least 1, at most
    /// [`PARTITIONS`]) that can call the contracts in `registry`.
    pub fn new(workers: usize, registry: Arc<Registry>) -> Result<ParallelExecutor, ExecutorError> {
        if workers == 0 || workers > PARTITIONS {
            return Err(ExecutorError::NoWorkers { workers });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("parashard-exec-{i}"))
            .build()
            .map_err(|e| ExecutorError::ThreadPool(e.to_string()))?;
        Ok(ParallelExecutor {
            registry,
            workers,
            pool,
            plan: Mutex::new(Plan::new(workers)),
            parallel_blocks: AtomicU64::new(0),
            sequential_blocks: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        })
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// What the executor has done so far.
    pub fn stats(&self) -> ParallelStats {
        ParallelStats {
            parallel_blocks: self.parallel_blocks.load(Ordering::Relaxed),
            sequential_blocks: self.sequential_blocks.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
        }
    }
}

impl BlockExecutor for ParallelExecutor {
    fn execute_block(
        &self,
        state: &mut State,
        block: &[Transaction],
    ) -> Result<Vec<Receipt>, ExecutorError> {
        check_block_size(block)?;
        if self.workers == 1 || block.len() < MIN_PARALLEL_BLOCK || looks_contended(block) {
            self.sequential_blocks.fetch_add(1, Ordering::Relaxed);
            return Ok(execute_in_order(state, block, &self.registry));
        }
        self.parallel_blocks.fetch_add(1, Ordering::Relaxed);
        // Reuse the buffers of an earlier block: fresh ones would cost page
        // faults on every block.
        // Holding the plan serialises parallel blocks: phase 1 waits on a
        // barrier, which two interleaved broadcasts could deadlock.
        let mut plan = lock(&self.plan);
        self.analyse(state, block, &mut plan);
        let receipts = self.execute(state, block, &plan);
        Ok(receipts)
    }
}

/// Phase 1's output. Declared keys are numbered through the block:
/// `first[i]..first[i + 1]` are transaction `i`'s keys, reads then writes.
struct Plan {
    first: Vec<u32>,
    /// One per worker, each written only by its worker: no cache line is
    /// written by two cores during phase 1.
    workers: Vec<WorkerPlan>,
    /// `outboxes[from][to]`: keys worker `from` routes to worker `to`.
    outboxes: Vec<Vec<Mutex<Vec<Routed>>>>,
}

/// What one worker found for the keys in its partitions; zero for keys in
/// other workers' partitions.
struct WorkerPlan {
    /// `(partition << 32 | slot index) + 1`.
    slots: Vec<u64>,
    /// The previous transaction that declared the key, plus one.
    dependencies: Vec<u32>,
}

impl Plan {
    fn new(workers: usize) -> Plan {
        Plan {
            first: Vec::new(),
            workers: (0..workers)
                .map(|_| WorkerPlan {
                    slots: Vec::new(),
                    dependencies: Vec::new(),
                })
                .collect(),
            outboxes: (0..workers)
                .map(|_| (0..workers).map(|_| Mutex::new(Vec::new())).collect())
                .collect(),
        }
    }

    /// The slot and the dependency (if any) of declared key `k`.
    #[inline]
    fn key(&self, k: usize) -> (usize, usize, Option<usize>) {
        let (packed, dependency) = self
            .workers
            .iter()
            .find_map(|w| (w.slots[k] != 0).then(|| (w.slots[k] - 1, w.dependencies[k])))
            .expect("phase 1 resolved every declared key");
        let dependency = dependency.checked_sub(1).map(|d| d as usize);
        ((packed >> 32) as usize, packed as u32 as usize, dependency)
    }
}

/// How far a chunk's worker has come: transactions `chunk * CHUNK + n` for
/// `n < progress` are done. One cache line each, written by one core.
#[repr(align(64))]
struct Progress(AtomicU32);

impl ParallelExecutor {
    fn analyse(&self, state: &mut State, block: &[Transaction], plan: &mut Plan) {
        plan.first.clear();
        plan.first.push(0);
        let mut total = 0u32;
        for tx in block {
            // An oversize set fails validation; its surplus keys are not
            // scheduled, and this bound keeps the count far below u32::MAX.
            total += tx.access.len().min(crate::model::MAX_ACCESS_KEYS + 1) as u32;
            plan.first.push(total);
        }
        let epoch = state.next_epoch();
        let workers = self.workers;
        let mut groups: Vec<Vec<(usize, &mut Partition)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for (p, partition) in state.partitions_mut().iter_mut().enumerate() {
            groups[p % workers].push((p, partition));
        }
        // Each worker thread takes the same plan every block (broadcast
        // indices are thread indices), so its buffers stay in its cache.
        let jobs: Vec<Mutex<AnalysisJob<'_>>> = groups
            .into_iter()
            .zip(plan.workers.iter_mut())
            .map(Mutex::new)
            .collect();
        let (first, outboxes) = (&plan.first, &plan.outboxes);
        let barrier = Barrier::new(workers);
        self.pool.broadcast(|ctx| {
            let w = ctx.index();
            route_keys(w, workers, block, first, &outboxes[w]);
            barrier.wait();
            let mut job = lock(&jobs[w]);
            let (group, worker_plan) = &mut *job;
            let inboxes: Vec<_> = outboxes.iter().map(|from| lock(&from[w])).collect();
            analyse_partitions(group, worker_plan, &inboxes, epoch, total as usize);
        });
    }

    fn execute(&self, state: &State, block: &[Transaction], plan: &Plan) -> Vec<Receipt> {
        let progress: Vec<Progress> = (0..block.len().div_ceil(CHUNK))
            .map(|_| Progress(AtomicU32::new(0)))
            .collect();
        let next_chunk = AtomicUsize::new(0);
        let chunks: Mutex<Vec<(usize, Vec<Receipt>)>> =
            Mutex::new(Vec::with_capacity(block.len() / CHUNK + 1));
        let worker = || {
            let mut mine = Vec::new();
            let mut waits = 0u64;
            loop {
                let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
                let start = chunk * CHUNK;
                if start >= block.len() {
                    break;
                }
                let end = (start + CHUNK).min(block.len());
                let mut receipts = Vec::with_capacity(end - start);
                #[allow(clippy::needless_range_loop)] // `i` indexes the plan too
                for i in start..end {
                    // Slots were last touched by phase 1, often on the other
                    // core: start moving them here a few transactions ahead.
                    if i + PREFETCH_TXS < end {
                        let ahead = i + PREFETCH_TXS;
                        for k in plan.first[ahead] as usize..plan.first[ahead + 1] as usize {
                            let (partition, index, _) = plan.key(k);
                            state.partitions()[partition].prefetch_slot(index);
                        }
                    }
                    let keys = plan.first[i] as usize..plan.first[i + 1] as usize;
                    let mut slots: SmallVec<[Option<&Slot>; 8]> = SmallVec::new();
                    for k in keys {
                        let (partition, index, dependency) = plan.key(k);
                        if let Some(d) = dependency {
                            waits += u64::from(wait_for(&progress, d));
                        }
                        slots.push(Some(state.partitions()[partition].slot(index)));
                    }
                    receipts.push(run_resolved(&block[i], &slots, &self.registry));
                    progress[chunk]
                        .0
                        .store((i + 1 - start) as u32, Ordering::Release);
                }
                mine.push((start, receipts));
            }
            self.waits.fetch_add(waits, Ordering::Relaxed);
            chunks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(mine);
        };
        self.pool.scope(|scope| {
            for _ in 0..self.workers {
                scope.spawn(|_| worker());
            }
        });
        let mut chunks = chunks.into_inner().unwrap_or_else(|e| e.into_inner());
        chunks.sort_unstable_by_key(|(start, _)| *start);
        let mut receipts = Vec::with_capacity(block.len());
        for (start, part) in chunks {
            debug_assert_eq!(start, receipts.len());
            receipts.extend(part);
        }
        assert_eq!(
            receipts.len(),
            block.len(),
            "every transaction has a receipt"
        );
        receipts
    }
}

/// One worker's phase-1 job: its partitions (with their numbers) and its plan.
type AnalysisJob<'a> = (Vec<(usize, &'a mut Partition)>, &'a mut WorkerPlan);

/// A declared key on its way to the worker that owns its partition.
struct Routed {
    tx: u32,
    /// The key's number in the block (see [`Plan`]).
    number: u32,
    hash: u64,
    key: Key,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Phase 1a: worker `w` hashes the keys of its share of the block and sorts
/// them into one outbox per owning worker, keeping block order.
fn route_keys(
    w: usize,
    workers: usize,
    block: &[Transaction],
    first: &[u32],
    outboxes: &[Mutex<Vec<Routed>>],
) {
    let mut outboxes: Vec<_> = outboxes.iter().map(lock).collect();
    outboxes.iter_mut().for_each(|outbox| outbox.clear());
    let share = block.len().div_ceil(workers);
    let range = (w * share).min(block.len())..((w + 1) * share).min(block.len());
    for i in range {
        let base = first[i];
        let len = (first[i + 1] - base) as usize;
        for (offset, key) in block[i].access.keys().take(len).enumerate() {
            let hash = hash(key);
            outboxes[partition_of(hash) % workers].push(Routed {
                tx: i as u32,
                number: base + offset as u32,
                hash,
                key: *key,
            });
        }
    }
}

/// Phase 1b for one worker's partitions; see the module docs. `inboxes`
/// come from workers in block order.
fn analyse_partitions(
    group: &mut [(usize, &mut Partition)],
    plan: &mut WorkerPlan,
    inboxes: &[std::sync::MutexGuard<'_, Vec<Routed>>],
    epoch: u32,
    total: usize,
) {
    plan.slots.clear();
    plan.slots.resize(total, 0);
    plan.dependencies.clear();
    plan.dependencies.resize(total, 0);
    // Which group entry holds partition p, if this worker owns it.
    let mut owned = [usize::MAX; PARTITIONS];
    for (position, (p, _)) in group.iter().enumerate() {
        owned[*p] = position;
    }
    // Grow each table at most once, before any slot index is handed out.
    let mut counts = [0usize; PARTITIONS];
    for routed in inboxes.iter().flat_map(|inbox| inbox.iter()) {
        counts[partition_of(routed.hash)] += 1;
    }
    for (p, partition) in group.iter_mut() {
        partition.reserve(counts[*p]);
    }
    let mut ahead = inboxes
        .iter()
        .flat_map(|inbox| inbox.iter())
        .skip(PREFETCH_KEYS);
    for routed in inboxes.iter().flat_map(|inbox| inbox.iter()) {
        if let Some(next) = ahead.next() {
            group[owned[partition_of(next.hash)]].1.prefetch(next.hash);
        }
        let p = partition_of(routed.hash);
        debug_assert_ne!(owned[p], usize::MAX, "routed to its owner");
        let partition = &mut group[owned[p]].1;
        let index = partition.find_or_insert(&routed.key, routed.hash);
        let number = routed.number as usize;
        if let Some(previous) = partition.tag(index, epoch, routed.tx) {
            // A key declared twice by one transaction is no dependency (the
            // transaction is rejected as invalid anyway).
            if previous != routed.tx {
                plan.dependencies[number] = previous + 1;
            }
        }
        plan.slots[number] = (((p as u64) << 32) | index as u64) + 1;
    }
}

/// Waits until transaction `tx` is done; returns whether it had to wait.
#[inline]
fn wait_for(progress: &[Progress], tx: usize) -> bool {
    let (chunk, n) = (tx / CHUNK, (tx % CHUNK) as u32);
    let done = || progress[chunk].0.load(Ordering::Acquire) > n;
    if done() {
        return false;
    }
    let mut spins = 0u32;
    while !done() {
        if spins < SPINS_BEFORE_YIELD {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
    true
}

/// Runs a transaction whose keys all have slots and publishes its writes.
#[inline]
fn run_resolved(tx: &Transaction, slots: &[Option<&Slot>], registry: &Registry) -> Receipt {
    let status = match contracts::run(tx, slots, registry) {
        Ok((output, writes)) => {
            for (position, value) in writes {
                slots[usize::from(position)]
                    .expect("phase 1 resolved every declared key")
                    .store(value);
            }
            Status::Committed { output }
        }
        Err(error) => Status::Failed(error),
    };
    Receipt {
        tx_id: tx.id,
        status,
    }
}

/// A hasher for the small contention sample: keys are already well spread.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Whether the block's head shows so many near conflicts that workers would
/// mostly wait for each other.
fn looks_contended(block: &[Transaction]) -> bool {
    let sample = &block[..block.len().min(SAMPLE)];
    let mut last_seen: HashMap<&Key, usize, BuildHasherDefault<KeyHasher>> =
        HashMap::with_capacity_and_hasher(sample.len() * 2, Default::default());
    let mut conflicting = 0;
    for (i, tx) in sample.iter().enumerate() {
        let mut conflict = false;
        for key in tx.access.keys() {
            if let Some(previous) = last_seen.insert(key, i) {
                conflict |= previous != i && i - previous <= CONFLICT_WINDOW;
            }
        }
        conflicting += usize::from(conflict);
    }
    conflicting * CONTENDED_DIVISOR > sample.len()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::exec::SequentialExecutor;
    use crate::state::EPOCH_MAX;
    use crate::workload::{self, Rng, TxIds};

    type Run = (State, Result<Vec<Receipt>, ExecutorError>);

    /// Executes `block` on another thread and fails if it takes a minute: a
    /// stale dependency on a later transaction deadlocks the workers.
    fn execute_or_fail(
        executor: &Arc<ParallelExecutor>,
        mut state: State,
        block: Vec<Transaction>,
    ) -> Run {
        let (done, result) = mpsc::channel();
        let executor = Arc::clone(executor);
        std::thread::spawn(move || {
            let receipts = executor.execute_block(&mut state, &block);
            let _ = done.send((state, receipts));
        });
        result
            .recv_timeout(Duration::from_secs(60))
            .expect("the block finishes within a minute (no deadlock)")
    }

    /// Proves dependency tags survive the wrap of the 30-bit block epoch: a
    /// state tags keys in blocks of epochs 1 and 2, jumps to the last epoch
    /// and runs blocks across the wrap, where stale tags of epochs 1 and 2
    /// would name transactions of old blocks (a deadlock or a wrong order);
    /// every block must still run in parallel and equal the sequential
    /// result.
    #[test]
    fn epoch_wrap_keeps_parallel_equal_to_sequential() {
        const ACCOUNTS: u64 = 20_000;
        let registry = Arc::new(Registry::new());
        let parallel = Arc::new(ParallelExecutor::new(2, registry.clone()).expect("2 workers"));
        let sequential = SequentialExecutor::new(registry);
        let mut rng = Rng::new(11);
        let mut ids = TxIds::default();
        let mut reference = workload::bank_state(ACCOUNTS, 1 << 30);
        let mut state = reference.clone();
        for block in 0..6 {
            if block == 2 {
                assert_eq!(state.epoch(), 2);
                state.set_epoch(EPOCH_MAX - 1);
            }
            let txs = workload::transfers(&mut rng, &mut ids, ACCOUNTS, 2_000, 100);
            let expected = sequential.execute_block(&mut reference, &txs);
            let (after, receipts) = execute_or_fail(&parallel, state, txs);
            state = after;
            assert_eq!(receipts, expected, "block {block}");
            assert!(state == reference, "block {block}: states differ");
        }
        assert_eq!(state.epoch(), 3, "epochs ran MAX, 1, 2, 3 after the jump");
        assert_eq!(parallel.stats().parallel_blocks, 6);
    }
}
