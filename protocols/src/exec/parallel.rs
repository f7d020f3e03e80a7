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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
const NO_DEPENDENCY: u32 = u32::MAX;
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
        let plan = self.analyse(state, block);
        Ok(self.execute(state, block, &plan))
    }
}

/// Phase 1's output, indexed by declared key (`first[i]..first[i + 1]` are
/// transaction `i`'s keys, reads then writes).
struct Plan {
    first: Vec<u32>,
    /// The key's slot: partition in the high half, slot index in the low.
    slots: Vec<AtomicU64>,
    /// The previous transaction that declared the key, or `NO_DEPENDENCY`.
    dependencies: Vec<AtomicU32>,
}

impl ParallelExecutor {
    fn analyse(&self, state: &mut State, block: &[Transaction]) -> Plan {
        let mut first = Vec::with_capacity(block.len() + 1);
        let mut total = 0u32;
        first.push(0);
        for tx in block {
            // MAX_BLOCK_TXS * MAX_ACCESS_KEYS keeps this below u32::MAX for
            // valid sets; oversize sets are bounded below.
            total += tx.access.len().min(crate::model::MAX_ACCESS_KEYS + 1) as u32;
            first.push(total);
        }
        let plan = Plan {
            first,
            slots: (0..total).map(|_| AtomicU64::new(0)).collect(),
            dependencies: (0..total).map(|_| AtomicU32::new(NO_DEPENDENCY)).collect(),
        };
        let epoch = state.next_epoch();
        let workers = self.workers;
        let mut groups: Vec<Vec<(usize, &mut Partition)>> =
            (0..workers).map(|_| Vec::new()).collect();
        for (p, partition) in state.partitions_mut().iter_mut().enumerate() {
            groups[p % workers].push((p, partition));
        }
        let plan_ref = &plan;
        self.pool.scope(|scope| {
            for group in groups {
                scope.spawn(move |_| analyse_partitions(group, block, epoch, workers, plan_ref));
            }
        });
        plan
    }

    fn execute(&self, state: &State, block: &[Transaction], plan: &Plan) -> Vec<Receipt> {
        let done: Vec<AtomicBool> = (0..block.len()).map(|_| AtomicBool::new(false)).collect();
        let next_chunk = AtomicUsize::new(0);
        let chunks: Mutex<Vec<(usize, Vec<Receipt>)>> =
            Mutex::new(Vec::with_capacity(block.len() / CHUNK + 1));
        let worker = || {
            let mut mine = Vec::new();
            let mut waits = 0u64;
            loop {
                let start = next_chunk.fetch_add(CHUNK, Ordering::Relaxed);
                if start >= block.len() {
                    break;
                }
                let end = (start + CHUNK).min(block.len());
                let mut receipts = Vec::with_capacity(end - start);
                for i in start..end {
                    let keys = plan.first[i] as usize..plan.first[i + 1] as usize;
                    for k in keys.clone() {
                        let dependency = plan.dependencies[k].load(Ordering::Relaxed);
                        if dependency != NO_DEPENDENCY {
                            waits += u64::from(wait_for(&done[dependency as usize]));
                        }
                    }
                    let slots: SmallVec<[Option<&Slot>; 8]> = keys
                        .map(|k| {
                            let packed = plan.slots[k].load(Ordering::Relaxed);
                            let partition = &state.partitions()[(packed >> 32) as usize];
                            Some(partition.slot(packed as u32 as usize))
                        })
                        .collect();
                    receipts.push(run_resolved(&block[i], &slots, &self.registry));
                    done[i].store(true, Ordering::Release);
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

/// Phase 1 for one worker's partitions; see the module docs.
fn analyse_partitions(
    mut group: Vec<(usize, &mut Partition)>,
    block: &[Transaction],
    epoch: u32,
    workers: usize,
    plan: &Plan,
) {
    // Which group entry holds partition p, if this worker owns it.
    let mut owned = [usize::MAX; PARTITIONS];
    for (position, (p, _)) in group.iter().enumerate() {
        owned[*p] = position;
    }
    // Pass 1: hash every key once, keep ours, and count them per partition
    // so each table grows at most once and slot indices stay valid.
    let mut mine: Vec<(u32, u32, u64)> = Vec::with_capacity(plan.slots.len() / workers + 16);
    let mut counts = [0usize; PARTITIONS];
    for (i, tx) in block.iter().enumerate() {
        let base = plan.first[i];
        let len = plan.first[i + 1] - base;
        for (offset, key) in tx.access.keys().take(len as usize).enumerate() {
            let h = hash(key);
            let p = partition_of(h);
            if owned[p] != usize::MAX {
                mine.push((i as u32, base + offset as u32, h));
                counts[p] += 1;
            }
        }
    }
    for (p, partition) in group.iter_mut() {
        partition.reserve(counts[*p]);
    }
    // Pass 2: find or insert, tag, record.
    for (i, k, h) in mine {
        let p = partition_of(h);
        let partition = &mut group[owned[p]].1;
        let key: &Key = block[i as usize]
            .access
            .keys()
            .nth((k - plan.first[i as usize]) as usize)
            .expect("recorded from this access set");
        let index = partition.find_or_insert(key, h);
        if let Some(previous) = partition.tag(index, epoch, i) {
            // A key declared twice by one transaction is no dependency (the
            // transaction is rejected as invalid anyway).
            if previous != i {
                plan.dependencies[k as usize].store(previous, Ordering::Relaxed);
            }
        }
        plan.slots[k as usize].store(((p as u64) << 32) | index as u64, Ordering::Relaxed);
    }
}

/// Waits until `flag` is set; returns whether it had to wait.
#[inline]
fn wait_for(flag: &AtomicBool) -> bool {
    if flag.load(Ordering::Acquire) {
        return false;
    }
    let mut spins = 0u32;
    while !flag.load(Ordering::Acquire) {
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
