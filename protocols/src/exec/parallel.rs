//! The parallel executor: a dependency order from declared access sets,
//! executed by a fixed set of workers.
//!
//! A block runs in two phases. The calling thread is worker 0; the others
//! come from the executor's own thread pool.
//!
//! 1. Analysis. The block is cut into one segment per worker. Each worker
//!    hashes the declared keys of its segment, counts them per state
//!    partition, and finds each key's previous declarer inside the segment
//!    with a small private table keyed by the key's hash. The state is not
//!    touched, so this phase costs no cache misses however large the state.
//! 2. Execution. The executor reserves room in the state for every declared
//!    key (so tables do not grow), then workers claim chunks of consecutive
//!    transactions in block order. For each declared key a worker takes the
//!    dependency found in phase 1 or, for a key first declared in this
//!    segment, the last declarer in the nearest earlier segment; waits until
//!    that transaction has finished; finds the slot with the stored hash
//!    (prefetched a few transactions ahead); runs the contract; and writes
//!    the receipt straight into the block's receipt vector. New keys are
//!    inserted concurrently (see [`crate::state`]).
//!
//! Why this gives exactly the sequential result: two transactions that share
//! a key are ordered by the chain of dependencies through that key, so each
//! key sees its writes in block order, and a transaction reads precisely
//! what it would read sequentially. Transactions without a shared key
//! commute. Dependencies point backwards and chunks are claimed in order,
//! so the lowest unfinished transaction can always run: no deadlock. The
//! private tables identify a key by its 64-bit hash; two keys with one hash
//! would only add a needless dependency, never drop one.
//!
//! Conflicts are judged on declared keys, reads included: a read-read pair
//! is ordered although it need not be. Natively almost every declared key is
//! written, and the simple rule keeps one dependency per declared key.
//!
//! When a sample of the block shows dense conflicts (a few hot accounts),
//! workers would mostly wait on each other, so the block runs sequentially
//! instead. See the README for the measurements behind this design.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::sequential::execute_in_order;
use super::{
    check_block_size, prefetch_transaction, run_and_store, with_slots, BlockExecutor, ExecutorError,
};
use crate::contracts::Registry;
use crate::fastmap::FastMap;
use crate::model::{Key, Receipt, Transaction, MAX_ACCESS_KEYS};
use crate::state::{hash, partition_of, Slot, State, PARTITIONS};

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
/// Keys a linking worker prefetches ahead in another worker's table.
const LINK_PREFETCH: usize = 8;
/// Transactions a worker prefetches ahead during execution.
const PREFETCH_TXS: usize = 4;
/// How long pool threads stay awake for the next phase or block.
const KEEP_WARM: std::time::Duration = std::time::Duration::from_micros(500);
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
    /// `workers - 1` threads: the caller of `execute_block` is worker 0.
    pool: Option<rayon::ThreadPool>,
    /// The block plan, whose buffers every block reuses.
    plan: Mutex<Plan>,
    parallel_blocks: AtomicU64,
    sequential_blocks: AtomicU64,
    waits: AtomicU64,
    /// Bumped whenever work is handed to the pool; see [`Self::keep_warm`].
    handoffs: Arc<AtomicU64>,
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
        let pool = if workers > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers - 1)
                .thread_name(|i| format!("parashard-exec-{}", i + 1))
                .build()
                .map_err(|e| ExecutorError::ThreadPool(e.to_string()))?;
            Some(pool)
        } else {
            None
        };
        Ok(ParallelExecutor {
            registry,
            workers,
            pool,
            plan: Mutex::new(Plan::new(workers)),
            parallel_blocks: AtomicU64::new(0),
            sequential_blocks: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            handoffs: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The number of worker threads, the caller's included.
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
        let pool = match &self.pool {
            Some(pool) if block.len() >= MIN_PARALLEL_BLOCK && !looks_contended(block) => pool,
            _ => {
                self.sequential_blocks.fetch_add(1, Ordering::Relaxed);
                return Ok(execute_in_order(state, block, &self.registry));
            }
        };
        self.parallel_blocks.fetch_add(1, Ordering::Relaxed);
        // Reuse the buffers of an earlier block: fresh ones would cost page
        // faults on every block. Blocks on one executor run one at a time.
        let plan = lock(&self.plan);
        Ok(self.run_parallel(pool, state, block, &plan))
    }
}

/// Phase 1's output, reused from block to block: one segment per worker.
struct Plan {
    /// Written by the worker that claims it in phase 1, read by all in
    /// phase 2 (the locks are never contended: phases do not overlap).
    segments: Vec<RwLock<Segment>>,
}

impl Plan {
    fn new(workers: usize) -> Plan {
        Plan {
            segments: (0..workers).map(|_| RwLock::default()).collect(),
        }
    }
}

/// One segment of the block as phase 1 found it. Declared keys are
/// numbered through the segment: `first[i]..first[i + 1]` are the numbers
/// of its transaction `i`'s keys, reads then writes.
///
/// Each segment is written by one worker through phase 1, on cache lines of
/// its own: vector lengths updated on every key would otherwise bounce
/// between cores.
#[derive(Default)]
#[repr(align(128))]
struct Segment {
    /// The block index of its first transaction.
    start: usize,
    first: Vec<u32>,
    keys: Vec<DeclaredKey>,
    /// The last declarer in this segment of each key hash.
    last: LastDeclarer,
    /// Distinct declared keys per state partition: room to reserve.
    counts: Vec<u32>,
}

/// What phase 1 found about one declared key.
struct DeclaredKey {
    hash: u64,
    /// The previous declarer of the key, as a block index plus one; 0 if it
    /// has none. Phase 1 finds those inside the segment; linking (between
    /// the phases, through shared references, hence the atomic) adds those
    /// in earlier segments.
    previous: AtomicU32,
}

impl Segment {
    /// Phase 1 for the transactions `range` of `block`.
    fn analyse(&mut self, block: &[Transaction], range: std::ops::Range<usize>) {
        self.start = range.start;
        self.first.clear();
        self.first.push(0);
        self.keys.clear();
        self.counts.clear();
        self.counts.resize(PARTITIONS, 0);
        let declared: usize = block[range.clone()].iter().map(|tx| tx.access.len()).sum();
        self.last.reset(declared);
        for (tx, index) in block[range.clone()].iter().zip(range.clone()) {
            // A block that was not just received is no longer in cache, and
            // this loop does too little per transaction to hide a miss: load
            // the declared keys of transactions a few places ahead.
            if let Some(ahead) = block[..range.end].get(index + PREFETCH_TXS) {
                prefetch_transaction(ahead);
            }
            let index = index as u32;
            // An oversize set fails validation; its surplus keys are not
            // scheduled, and this bound keeps the count far below u32::MAX.
            for key in tx.access.keys().take(MAX_ACCESS_KEYS + 1) {
                let hash = hash(key);
                let previous = self.last.replace(hash, index);
                if previous.is_none() {
                    // Each distinct key of the segment may be a new one.
                    self.counts[partition_of(hash)] += 1;
                }
                // A key declared twice by one transaction is no dependency
                // (the transaction is rejected as invalid anyway).
                let previous = previous.filter(|p| *p != index);
                self.keys.push(DeclaredKey {
                    hash,
                    previous: AtomicU32::new(previous.map_or(0, |p| p + 1)),
                });
            }
            self.first.push(self.keys.len() as u32);
        }
    }
}

/// An open-addressing map from key hash to the last transaction that
/// declared it. An entry packs the hash's top 32 bits with the transaction
/// plus one (0: empty) into a word: two keys whose hashes agree on those
/// bits and on the bits that place them in the table share an entry, which
/// costs at most a needless dependency. Eight bytes an entry keep the table
/// in the worker's cache, and clearing it per block is one streaming write.
#[derive(Default)]
struct LastDeclarer {
    entries: Vec<u64>,
}

impl LastDeclarer {
    /// Empties the table and sizes it for `keys` keys (load at most 1/2).
    fn reset(&mut self, keys: usize) {
        let capacity = (2 * keys).next_power_of_two().max(16);
        self.entries.clear();
        self.entries.resize(capacity, 0);
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        h as usize & (self.entries.len() - 1)
    }

    /// Records `tx` as the last declarer of `h`; returns the one before.
    #[inline]
    fn replace(&mut self, h: u64, tx: u32) -> Option<u32> {
        let tag = h & !u64::from(u32::MAX);
        let mask = self.entries.len() - 1;
        let mut i = self.home(h);
        loop {
            let entry = &mut self.entries[i];
            if *entry == 0 {
                *entry = tag | u64::from(tx + 1);
                return None;
            }
            if *entry & !u64::from(u32::MAX) == tag {
                let previous = *entry as u32 - 1;
                *entry = tag | u64::from(tx + 1);
                return Some(previous);
            }
            i = (i + 1) & mask;
        }
    }

    /// Starts loading the entry where a lookup of `h` begins.
    #[inline]
    fn prefetch(&self, h: u64) {
        crate::state::prefetch(&self.entries[self.home(h)]);
    }

    /// The last declarer of `h`, if any.
    #[inline]
    fn get(&self, h: u64) -> Option<u32> {
        let tag = h & !u64::from(u32::MAX);
        let mask = self.entries.len() - 1;
        let mut i = self.home(h);
        loop {
            let entry = self.entries[i];
            if entry == 0 {
                return None;
            }
            if entry & !u64::from(u32::MAX) == tag {
                return Some(entry as u32 - 1);
            }
            i = (i + 1) & mask;
        }
    }
}

/// A value on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// The counters of one parallel block; see [`ParallelExecutor::run_parallel`].
#[derive(Default)]
struct BlockSync {
    next_segment: Padded<AtomicUsize>,
    analysed: Padded<AtomicUsize>,
    reserved: Padded<AtomicBool>,
    next_link: Padded<AtomicUsize>,
    next_chunk: Padded<AtomicUsize>,
    written: Padded<AtomicUsize>,
}

/// How far a chunk's worker has come: transactions `chunk * CHUNK + n` for
/// `n < progress` are done. One cache line each, written by one core.
#[repr(align(64))]
struct Progress(AtomicU32);

impl ParallelExecutor {
    /// Runs both phases in one parallel region. The calling thread leads:
    /// it analyses segments like any worker, then, once every segment is
    /// done, makes room in the state and lets phase 2 begin. Hand-offs are
    /// spins on atomics, never sleeps (see [`Self::keep_warm`]), and a
    /// worker that starts late finds less to do rather than holding anyone
    /// up: segments and chunks are claimed by whoever comes first.
    fn run_parallel(
        &self,
        pool: &rayon::ThreadPool,
        state: &mut State,
        block: &[Transaction],
        plan: &Plan,
    ) -> Vec<Receipt> {
        let workers = self.workers;
        // Segments are whole chunks, so a chunk lies in one segment.
        let segment_len = block.len().div_ceil(workers).next_multiple_of(CHUNK);
        // The counters workers share, each on a cache line of its own and
        // away from any thread's stack: a spinning reader next to data
        // another core writes in its inner loop would slow that loop down.
        let sync = Box::new(BlockSync::default());
        let (next_segment, analysed, reserved) =
            (&sync.next_segment.0, &sync.analysed.0, &sync.reserved.0);
        // Exclusive to the leader between the phases, shared in phase 2.
        let state = RwLock::new(state);
        let chunks = block.len().div_ceil(CHUNK);
        let progress: Vec<Progress> = (0..chunks).map(|_| Progress(AtomicU32::new(0))).collect();
        let mut receipts: Vec<Receipt> = Vec::with_capacity(block.len());
        // Each chunk's receipts are written in place by whichever worker
        // claims the chunk; the mutex is taken once per chunk, uncontended.
        let outputs: Vec<Mutex<Option<&mut [MaybeUninit<Receipt>]>>> = receipts
            .spare_capacity_mut()[..block.len()]
            .chunks_mut(CHUNK)
            .map(|out| Mutex::new(Some(out)))
            .collect();
        let (next_chunk, written) = (&sync.next_chunk.0, &sync.written.0);
        let analyse = || loop {
            let s = next_segment.fetch_add(1, Ordering::Relaxed);
            if s >= workers {
                break;
            }
            let range =
                (s * segment_len).min(block.len())..((s + 1) * segment_len).min(block.len());
            write(&plan.segments[s]).analyse(block, range);
            analysed.fetch_add(1, Ordering::Release);
        };
        let make_room = || {
            spin_until(|| analysed.load(Ordering::Acquire) == workers);
            let segments: Vec<_> = plan.segments.iter().map(read).collect();
            let mut state = write(&state);
            // Room for every distinct declared key, so that no table grows
            // while workers hold slot references.
            for (p, partition) in state.partitions_mut().iter_mut().enumerate() {
                let declared = segments.iter().map(|s| s.counts[p] as usize).sum();
                partition.reserve_shared(declared);
            }
            drop(state);
            reserved.store(true, Ordering::Release);
        };
        // Keys first declared in a later segment depend on the last declarer
        // in an earlier one. Finding it means reading another worker's
        // table: done here in a tight, prefetched loop rather than one cache
        // miss at a time on the execution path. Segment 0 has nothing to
        // link; a chunk of segment `s` waits until `s` is linked.
        let linked: Vec<Padded<AtomicBool>> = (0..workers)
            .map(|s| Padded(AtomicBool::new(s == 0)))
            .collect();
        let next_link = &sync.next_link.0;
        next_link.store(1, Ordering::Relaxed);
        let link = || loop {
            let s = next_link.fetch_add(1, Ordering::Relaxed);
            if s >= workers {
                break;
            }
            let segments: Vec<_> = plan.segments.iter().map(read).collect();
            let (earlier, rest) = segments.split_at(s);
            let nearest = &earlier[s - 1].last;
            let keys = &rest[0].keys;
            for (n, declared) in keys.iter().enumerate() {
                if let Some(ahead) = keys.get(n + LINK_PREFETCH) {
                    nearest.prefetch(ahead.hash);
                }
                if declared.previous.load(Ordering::Relaxed) == 0 {
                    let last = earlier.iter().rev().find_map(|e| e.last.get(declared.hash));
                    if let Some(last) = last {
                        declared.previous.store(last + 1, Ordering::Relaxed);
                    }
                }
            }
            linked[s].0.store(true, Ordering::Release);
        };
        let execute = || {
            spin_until(|| reserved.load(Ordering::Acquire));
            link();
            let state_guard = read(&state);
            let state: &State = &state_guard;
            let segments: Vec<_> = plan.segments.iter().map(read).collect();
            let mut waits = 0u64;
            let mut done = 0usize;
            loop {
                let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
                let start = chunk * CHUNK;
                if start >= block.len() {
                    break;
                }
                let end = (start + CHUNK).min(block.len());
                let out = lock(&outputs[chunk])
                    .take()
                    .expect("each chunk is claimed once");
                let s = start / segment_len;
                spin_until(|| linked[s].0.load(Ordering::Acquire));
                let segment = &*segments[s];
                let first = &segment.first[start - segment.start..=end - segment.start];
                // Start loading slots a few transactions ahead: the chunk's
                // head at once, then each transaction as the loop nears it.
                let prefetch = |offset: usize| {
                    if let Some(tx) = block[..end].get(start + offset) {
                        prefetch_transaction(tx);
                    }
                    if let Some(range) = first.get(offset..=offset + 1) {
                        for key in &segment.keys[range[0] as usize..range[1] as usize] {
                            state.prefetch_hashed(key.hash);
                        }
                    }
                };
                (0..PREFETCH_TXS).for_each(prefetch);
                for (offset, tx) in block[start..end].iter().enumerate() {
                    prefetch(offset + PREFETCH_TXS);
                    let keys = &segment.keys[first[offset] as usize..first[offset + 1] as usize];
                    let (reads, writes) = (tx.access.reads.as_slice(), tx.access.writes.as_slice());
                    let slot_of = |j: usize| {
                        let declared = &keys[j];
                        let dependency = declared.previous.load(Ordering::Relaxed).checked_sub(1);
                        if let Some(d) = dependency {
                            waits += u64::from(wait_for(&progress, d as usize));
                        }
                        let key = reads.get(j).unwrap_or_else(|| &writes[j - reads.len()]);
                        state.slot_hashed(key, declared.hash)
                    };
                    let receipt = with_slots(keys.len(), slot_of, |slots| {
                        run_resolved(tx, slots, keys, state, &self.registry)
                    });
                    out[offset].write(receipt);
                    progress[chunk]
                        .0
                        .store(offset as u32 + 1, Ordering::Release);
                }
                done += end - start;
            }
            self.waits.fetch_add(waits, Ordering::Relaxed);
            written.fetch_add(done, Ordering::Release);
        };
        self.handoff();
        pool.in_place_scope(|scope| {
            for _ in 1..workers {
                scope.spawn(|_| {
                    analyse();
                    execute();
                });
            }
            analyse();
            make_room();
            execute();
            // Leave the region only once every chunk is written: waiting in
            // the region's own latch would put this thread to sleep.
            spin_until(|| written.load(Ordering::Acquire) == block.len());
        });
        self.keep_warm(pool);
        drop(outputs);
        // Every chunk was claimed exactly once (the claim counter hands out
        // each number once) and filled completely.
        assert_eq!(
            written.load(Ordering::Acquire),
            block.len(),
            "every transaction has a receipt"
        );
        // SAFETY: the first `block.len()` elements of the spare capacity were
        // initialised: the chunks cover them without overlap, each chunk was
        // taken by exactly one worker, and the count just checked says every
        // taken chunk was written through to its end.
        unsafe { receipts.set_len(block.len()) };
        receipts
    }
}

impl ParallelExecutor {
    /// Keeps the pool threads spinning for a while instead of going to
    /// sleep. A sleeping thread's core halts, and on a virtual machine
    /// waking it again can take longer than a whole block; blocks and
    /// phases follow each other closely, so a short spin keeps the workers
    /// ready. The spin ends at the next hand-off or after [`KEEP_WARM`].
    fn keep_warm(&self, pool: &rayon::ThreadPool) {
        let seen = self.handoffs.load(Ordering::Relaxed);
        for _ in 1..self.workers {
            let handoffs = Arc::clone(&self.handoffs);
            pool.spawn(move || {
                let deadline = std::time::Instant::now() + KEEP_WARM;
                while handoffs.load(Ordering::Relaxed) == seen
                    && std::time::Instant::now() < deadline
                {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            });
        }
    }

    /// Ends the spin of [`Self::keep_warm`]: work for the pool follows.
    fn handoff(&self) {
        self.handoffs.fetch_add(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Spins until `done` holds, yielding the core now and then but never
/// sleeping: the other side is working and will be there shortly.
#[inline]
fn spin_until(done: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < SPINS_BEFORE_YIELD {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
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
    spin_until(done);
    true
}

/// Runs a transaction against its keys' slots (`None`: missing) and
/// publishes its writes, inserting the keys it creates.
#[inline]
fn run_resolved(
    tx: &Transaction,
    slots: &[Option<&Slot>],
    keys: &[DeclaredKey],
    state: &State,
    registry: &Registry,
) -> Receipt {
    let status = run_and_store(tx, slots, registry, |position, key, value| {
        state.insert_shared(key, keys[position].hash).store(value)
    });
    Receipt {
        tx_id: tx.id,
        status,
    }
}

/// Whether the block's head shows so many near conflicts that workers would
/// mostly wait for each other.
fn looks_contended(block: &[Transaction]) -> bool {
    let sample = &block[..block.len().min(SAMPLE)];
    let mut last_seen: FastMap<&Key, usize> =
        FastMap::with_capacity_and_hasher(sample.len() * 2, Default::default());
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
    use crate::model::AccountId;
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

    /// Proves that keys created during a parallel block (inserted by
    /// workers concurrently, into tables that had to make room first) give
    /// exactly the sequential result: each block creates 3,000 accounts and
    /// pays into them later in the same block, and the state ends up with
    /// every new account.
    #[test]
    fn keys_created_in_parallel_match_sequential() {
        const ACCOUNTS: u64 = 20_000;
        const NEW: u64 = 3_000;
        let registry = Arc::new(Registry::new());
        let parallel = Arc::new(ParallelExecutor::new(2, registry.clone()).expect("2 workers"));
        let sequential = SequentialExecutor::new(registry);
        let mut rng = Rng::new(12);
        let mut ids = TxIds::default();
        let mut reference = workload::bank_state(ACCOUNTS, 1 << 30);
        let mut state = reference.clone();
        for block in 0..5u64 {
            let base = 1_000_000 * (block + 1);
            let mut txs: Vec<Transaction> = (0..NEW)
                .map(|k| Transaction::create_account(ids.next_id(), AccountId(base + k), 7))
                .collect();
            txs.extend((0..NEW).map(|_| {
                let from = AccountId(rng.below(ACCOUNTS));
                let to = AccountId(base + rng.below(NEW));
                Transaction::transfer(ids.next_id(), from, to, 1 + rng.below(50))
            }));
            let expected = sequential.execute_block(&mut reference, &txs);
            let (after, receipts) = execute_or_fail(&parallel, state, txs);
            state = after;
            assert_eq!(receipts, expected, "block {block}");
            assert!(state == reference, "block {block}: states differ");
            assert_eq!(state.len() as u64, ACCOUNTS + NEW * (block + 1));
        }
        assert_eq!(parallel.stats().parallel_blocks, 5);
    }
}
