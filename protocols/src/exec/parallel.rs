//! The parallel executor: a dependency order from declared access sets,
//! found and executed by a fixed set of workers in one pass.
//!
//! The calling thread is worker 0; the others come from the executor's own
//! thread pool. Workers claim chunks of consecutive transactions in block
//! order, and each chunk goes through three steps on the worker that took
//! it:
//!
//! 1. *Resolve* (in parallel with everything else): hash every declared key
//!    of the chunk and start loading its slot, a few transactions ahead of
//!    step 2 or, while the chunk waits for its turn, all of them, finding
//!    the slots too.
//! 2. *Claim* (in block order: the chunk waits until the previous chunk is
//!    claimed, which takes a few hundred nanoseconds): for each declared
//!    key, swap the key's stamp for this transaction's. The stamp it
//!    replaces names the key's previous declarer in this block, if any: the
//!    transaction's dependency through that key. A key missing from the
//!    state is inserted without a value (it reads as absent) so that it has
//!    a stamp; only claimers insert, one at a time.
//! 3. *Execute*: wait until each dependency has finished, run the contract
//!    against the resolved slots, write the receipt in place and publish the
//!    transaction's completion.
//!
//! Why this gives exactly the sequential result: claims happen in block
//! order, so the stamp a transaction replaces is that of the previous
//! declarer of the key, and two transactions that share a key are ordered
//! by the chain of dependencies through it: each key sees its reads and
//! writes in block order, and a transaction reads precisely what it would
//! read sequentially. Transactions without a shared key commute.
//! Dependencies point backwards and chunks are claimed in order, so the
//! lowest unfinished transaction can always run: no deadlock.
//!
//! A stamp holds the round's epoch (eight bits, cycling) and the declarer's
//! index. A stamp from an earlier round whose epoch happens to match names
//! an arbitrary index: an index not below the claimer's is ignored, one
//! below it only adds a needless wait, never drops a needed one.
//!
//! Tables must not grow while workers hold slot references, so each
//! partition's free room is counted down as claimers insert. A claimer that
//! finds a partition full cuts the round there: the claimed prefix runs to
//! the end, the leader grows the table, and the rest of the block runs as
//! the next round.
//!
//! Conflicts are judged on declared keys, reads included: a read-read pair
//! is ordered although it need not be. Natively almost every declared key is
//! written, and the simple rule keeps one dependency per declared key.
//!
//! When a sample of the block shows dense conflicts (a few hot accounts),
//! workers would mostly wait on each other, so the block runs sequentially
//! instead. An adaptive executor (the default) also runs blocks in order
//! while that measures faster on this machine (see [`super::adaptive`]).
//! See `docs/ARCHITECTURE.md` and `docs/PERFORMANCE.md` for the design and its measurements.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::adaptive::{Chooser, Way};
use super::sequential::execute_in_order;
use smallvec::SmallVec;

use super::{
    check_block_size, prefetch_transaction, run_and_store, BlockExecutor, ExecutorError, Screen,
};
use crate::contracts::{Pending, Registry};
use crate::fastmap::FastMap;
use crate::model::{Key, Output, Receipt, Status, Transaction, TxError, Value, MAX_ACCESS_KEYS};
use crate::state::{hash, partition_of, Slot, State, PARTITIONS};

/// Transactions a worker claims at once: large enough to amortise the
/// shared counters and to overlap the chunk's cache misses, small enough
/// to balance the load.
const CHUNK: usize = 64;
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
/// How many transactions ahead of its claims a worker hashes keys and
/// fetches their slots.
const CLAIM_AHEAD: usize = 8;
/// Transactions a worker prefetches ahead while resolving a chunk.
const PREFETCH_TXS: usize = 4;
/// How long pool threads stay awake for the next block: longer than a
/// block of 10,000 transactions takes sequentially, so that a parallel block
/// that follows other work still finds them awake.
const KEEP_WARM: std::time::Duration = std::time::Duration::from_millis(2);
/// Spins before a waiting worker yields its core.
const SPINS_BEFORE_YIELD: u32 = 128;
/// A stamp's low bits hold a transaction's index in its round: every index
/// fits, since a block holds at most [`super::MAX_BLOCK_TXS`] transactions.
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
/// Round epochs cycle through `1..EPOCHS` (0 is a fresh slot's).
const EPOCHS: u32 = 1 << (32 - INDEX_BITS);
/// Keys one transaction has scheduled: an oversize set fails validation,
/// and its surplus keys are neither resolved nor claimed.
const SCHEDULED_KEYS: usize = MAX_ACCESS_KEYS + 1;

const _: () = assert!(super::MAX_BLOCK_TXS <= 1 << INDEX_BITS);
// A chunk's refused signatures are the bits of a `u64`.
const _: () = assert!(CHUNK <= 64);
const _: () = assert!(CHUNK * SCHEDULED_KEYS < u16::MAX as usize);

/// Counters of what the parallel executor did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParallelStats {
    /// Blocks executed in parallel.
    pub parallel_blocks: u64,
    /// Blocks executed sequentially because they were small or contended.
    pub sequential_blocks: u64,
    /// Blocks an adaptive executor ran sequentially because that measured
    /// faster on recent blocks, or to check whether it still does.
    pub chosen_in_order: u64,
    /// Transactions that had to wait for a dependency held by another worker.
    pub waits: u64,
    /// Extra rounds: a block's claims filled a state partition, which had to
    /// grow before the rest of the block could run.
    pub extra_rounds: u64,
}

/// Executes blocks with `workers` threads; results equal
/// [`super::SequentialExecutor`]'s.
pub struct ParallelExecutor {
    registry: Arc<Registry>,
    workers: usize,
    /// `workers - 1` threads: the caller of `execute_block` is worker 0.
    pool: Option<rayon::ThreadPool>,
    /// The epoch of the last round. Locked for a whole block: blocks on one
    /// executor run one at a time.
    epoch: Mutex<u32>,
    /// Which way blocks run, for an adaptive executor.
    chooser: Option<Mutex<Chooser>>,
    parallel_blocks: AtomicU64,
    sequential_blocks: AtomicU64,
    chosen_in_order: AtomicU64,
    waits: AtomicU64,
    extra_rounds: AtomicU64,
}

/// Bumped whenever any executor of the process hands work to its pool; see
/// [`ParallelExecutor::keep_warm`].
static HANDOFFS: AtomicU64 = AtomicU64::new(0);

impl Drop for ParallelExecutor {
    /// Ends the pool threads' keep-warm spin: they would otherwise go on
    /// holding a core for up to `KEEP_WARM` after the executor is gone,
    /// and the threads of an executor created next start on the other.
    fn drop(&mut self) {
        self.handoff();
    }
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
    /// An adaptive executor with `workers` threads (at least 1, at most
    /// [`PARTITIONS`]) that can call the contracts in `registry`; see
    /// [`Self::adaptive`].
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
            epoch: Mutex::new(0),
            chooser: Some(Mutex::new(Chooser::default())),
            parallel_blocks: AtomicU64::new(0),
            sequential_blocks: AtomicU64::new(0),
            chosen_in_order: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            extra_rounds: AtomicU64::new(0),
        })
    }

    /// Whether blocks that could run in parallel also run in order while
    /// that measures faster (on by default). Which is faster depends on the
    /// machine as much as on the block: on a virtual machine whose cores
    /// are far apart, or with the cores busy with other work, parallel
    /// execution can be slower than in order. An adaptive executor measures
    /// both ways as it goes (each block costs what it costs; now and then a
    /// block runs the way not taken, to see whether that changed) and runs
    /// the faster. Results are the same either way. Turn it off to measure
    /// or test the parallel path itself.
    pub fn adaptive(mut self, on: bool) -> ParallelExecutor {
        self.chooser = on.then(|| Mutex::new(Chooser::default()));
        self
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
            chosen_in_order: self.chosen_in_order.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            extra_rounds: self.extra_rounds.load(Ordering::Relaxed),
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
        let Some(chooser) = &self.chooser else {
            let receipts = self.execute_parallel(pool, state, block);
            self.keep_warm(pool);
            return Ok(receipts);
        };
        let choice = lock(chooser).choose();
        let started = std::time::Instant::now();
        let receipts = match choice.way {
            Way::Parallel => self.execute_parallel(pool, state, block),
            Way::InOrder => {
                self.chosen_in_order.fetch_add(1, Ordering::Relaxed);
                execute_in_order(state, block, &self.registry)
            }
        };
        let mut chooser = lock(chooser);
        chooser.record(choice, block.len(), started.elapsed());
        if chooser.parallel_next() {
            // Blocks follow each other closely: keep the workers awake for
            // the next, or it measures (and pays for) their waking.
            self.keep_warm(pool);
        }
        Ok(receipts)
    }
}

impl ParallelExecutor {
    /// Runs `block` on all workers.
    fn execute_parallel(
        &self,
        pool: &rayon::ThreadPool,
        state: &mut State,
        block: &[Transaction],
    ) -> Vec<Receipt> {
        self.parallel_blocks.fetch_add(1, Ordering::Relaxed);
        let mut epoch = lock(&self.epoch);
        let mut receipts: Vec<Receipt> = Vec::with_capacity(block.len());
        // Judged by each chunk's claimer in turn, in block order.
        let screen = Judge::default();
        let mut done = 0;
        while done < block.len() {
            if done > 0 {
                self.extra_rounds.fetch_add(1, Ordering::Relaxed);
            }
            // Room for at least one more transaction's keys everywhere. A
            // block that filled a partition is creating keys: every table
            // nearly as full grows too, or each would cut a round of its own.
            for partition in state.partitions_mut() {
                let wanted = if done > 0 {
                    partition.capacity() / 4
                } else {
                    0
                };
                partition.make_room(wanted.max(SCHEDULED_KEYS));
            }
            *epoch = *epoch % (EPOCHS - 1) + 1;
            // The receipts so far are initialised: the spare capacity
            // starts at `done`.
            let out = &mut receipts.spare_capacity_mut()[..block.len() - done];
            let ran = self.run_round(pool, state, &block[done..], &screen, out, *epoch);
            // SAFETY: `run_round` initialised exactly the first `ran`
            // elements of `out`, the spare capacity just past `done`.
            unsafe { receipts.set_len(done + ran) };
            done += ran;
        }
        lock(&screen.screen).note_keys(state, block, &receipts);
        receipts
    }
}

/// A value on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// The counters a round's workers share, each on cache lines of its own
/// and away from any thread's stack: a spinning reader next to data another
/// core writes in its inner loop would slow that loop down.
#[derive(Default)]
struct RoundSync {
    /// The next chunk to hand out.
    next_chunk: Padded<AtomicUsize>,
    /// Chunks claimed so far, in order: the claim chain.
    claimed: Padded<AtomicUsize>,
    /// Where the round ends: the block's length, or the first transaction
    /// a claimer could not fit into the state.
    cut: Padded<AtomicUsize>,
    /// Receipts written so far.
    written: Padded<AtomicUsize>,
    /// Free room per state partition, counted down by claimers (one at a
    /// time, so relaxed loads and stores suffice).
    room: Padded<Vec<AtomicUsize>>,
    /// Per worker, a chunk number such that every chunk the worker has
    /// taken or will take from here on is at least that: so every chunk
    /// below the least of them is done. A worker updates its own once per
    /// chunk; the others read it only when a dependency is too recent for
    /// what they last read, instead of a progress line per dependency.
    floors: Vec<Padded<AtomicUsize>>,
}

/// How far a chunk's worker has come: transactions `chunk * CHUNK + n` for
/// `n < progress` are done. One cache line each, written by one core.
#[repr(align(64))]
struct Progress(AtomicU32);

/// What a worker knows of the chunk it works on, reused from chunk to
/// chunk. Key `j` of the chunk's transaction `n` sits at `first[n] + j`.
struct ChunkKeys<'s> {
    first: [u16; CHUNK + 1],
    hashes: Vec<u64>,
    slots: Vec<Option<&'s Slot>>,
    /// The previous declarer in this round plus one, or 0.
    dependencies: Vec<u32>,
}

impl<'s> ChunkKeys<'s> {
    fn new() -> ChunkKeys<'s> {
        let keys = CHUNK * 4;
        ChunkKeys {
            first: [0; CHUNK + 1],
            hashes: Vec::with_capacity(keys),
            slots: Vec::with_capacity(keys),
            dependencies: Vec::with_capacity(keys),
        }
    }

    fn range(&self, n: usize) -> std::ops::Range<usize> {
        usize::from(self.first[n])..usize::from(self.first[n + 1])
    }

    fn clear(&mut self) {
        self.first[0] = 0;
        self.hashes.clear();
        self.slots.clear();
        self.dependencies.clear();
    }

    /// Step 1a for transaction `n` of `txs`: hashes its scheduled keys and
    /// starts loading their slots for writing (a line another core wrote
    /// last then comes over only once). Transactions are hashed in order.
    #[inline]
    fn hash(&mut self, state: &State, txs: &[Transaction], n: usize) {
        if let Some(ahead) = txs.get(n + PREFETCH_TXS) {
            prefetch_transaction(ahead);
        }
        for key in scheduled(&txs[n]) {
            let h = hash(key);
            state.prefetch_hashed_for_write(h);
            self.hashes.push(h);
        }
        self.first[n + 1] = self.hashes.len() as u16;
    }

    /// Step 1b, for a chunk that has to wait for its turn to claim: finds
    /// the slots of the hashed keys while it waits. Claimers may insert
    /// keys meanwhile: a key found stays found (keys are never removed
    /// during a round), a key not found is looked up again when claimed.
    fn find(&mut self, state: &'s State, txs: &[Transaction]) {
        for (n, tx) in txs.iter().enumerate() {
            let hashes = &self.hashes[self.range(n)];
            for (key, &h) in scheduled(tx).zip(hashes) {
                self.slots.push(state.slot_hashed(key, h));
            }
        }
    }

    /// Step 2 for transaction `n` of the chunk, at index `index` of the
    /// round, on the chunk's turn: stamps each of its keys, finding the
    /// slots [`Self::find`] did not (or, without it, all) and inserting
    /// missing keys. False if a partition ran out of room: the round ends
    /// before this transaction.
    #[inline]
    fn claim(
        &mut self,
        state: &'s State,
        tx: &Transaction,
        n: usize,
        index: usize,
        epoch: u32,
        room: &[AtomicUsize],
    ) -> bool {
        let stamp = (epoch << INDEX_BITS) | index as u32;
        for (j, key) in self.range(n).zip(scheduled(tx)) {
            let found = self.slots.get(j).copied().flatten();
            let slot = match found {
                Some(slot) => slot,
                None => {
                    let h = self.hashes[j];
                    let slot = match state.slot_hashed(key, h) {
                        Some(slot) => slot,
                        None => {
                            let room = &room[partition_of(h)];
                            let left = room.load(Ordering::Relaxed);
                            if left == 0 {
                                // Claims of this transaction's earlier keys
                                // are harmless: nobody claims after it in
                                // this round.
                                return false;
                            }
                            room.store(left - 1, Ordering::Relaxed);
                            state.insert_shared(key, h)
                        }
                    };
                    match self.slots.get_mut(j) {
                        Some(known) => *known = Some(slot),
                        None => self.slots.push(Some(slot)),
                    }
                    slot
                }
            };
            let before = slot.restamp(stamp);
            let declarer = before & INDEX_MASK;
            let current = before >> INDEX_BITS == epoch && (declarer as usize) < index;
            self.dependencies
                .push(if current { declarer + 1 } else { 0 });
        }
        true
    }
}

/// The [`Screen`] of a parallel round, which the chunks' claimers consult
/// in turn (the claim chain orders them). Until a `SetPublicKey` shows up,
/// a judgement needs only the state's index of keyed accounts, and the
/// screen's lock (a cache line the claimers would pass between cores each
/// chunk) is left alone.
#[derive(Default)]
struct Judge {
    screen: Mutex<Screen>,
    /// Whether a `SetPublicKey` has been judged: from then on every
    /// judgement goes through the screen. Claimers write it in claim order,
    /// so relaxed accesses suffice (the claim chain orders them).
    setting: std::sync::atomic::AtomicBool,
}

impl Judge {
    /// [`Screen::judge`].
    #[inline]
    fn judge(&self, state: &State, tx: &Transaction) -> bool {
        if tx.auth.is_some() {
            return false;
        }
        let sets_key = matches!(tx.call, crate::model::Call::SetPublicKey { .. });
        if !sets_key && !self.setting.load(Ordering::Relaxed) {
            return state.holds_public_key(tx.sender);
        }
        self.setting.store(true, Ordering::Relaxed);
        lock(&self.screen).judge(state, tx)
    }
}

/// Waits for dependencies on earlier chunks, reading the other workers'
/// floors only when a dependency is too recent for what it last read.
struct Waiter<'r> {
    floors: &'r [Padded<AtomicUsize>],
    progress: &'r [Progress],
    /// Chunks below this are done, as last read from the floors.
    done_below: usize,
    /// Dependencies that had to be waited for.
    waits: u64,
}

impl Waiter<'_> {
    /// Returns once transaction `d` (of an earlier chunk) is done.
    #[inline]
    fn wait(&mut self, d: usize) {
        if d / CHUNK < self.done_below {
            return;
        }
        self.done_below = self
            .floors
            .iter()
            .map(|f| f.0.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        if d / CHUNK >= self.done_below {
            self.waits += u64::from(wait_for(self.progress, d));
        }
    }
}

/// A call that ran and waits to be resolved against its add keys.
struct Deferred {
    /// Its place in the chunk.
    n: usize,
    ran: Result<(Output, Pending), TxError>,
}

/// The chunk a worker executes: which of its calls wait to be resolved,
/// and how far it is done. Calls with add keys run as soon as their other
/// dependencies are done and are resolved at the end of the chunk, in
/// order (or earlier, when a later call of the chunk depends on one): so
/// calls adding to one key run in parallel on all workers, and only their
/// short resolving goes in order. Progress is published up to the first
/// call not yet resolved, so a call is published only once every call it
/// depends on is: a reader of a key waits for its last declarer alone,
/// which stands for the whole chain before it.
struct ChunkRun<'a> {
    progress: &'a Progress,
    /// The chunk's first index in the round.
    start: usize,
    /// The calls not yet resolved, in order.
    deferred: &'a mut Vec<Deferred>,
}

impl ChunkRun<'_> {
    /// Whether transaction `d` of this chunk waits to be resolved.
    fn is_deferred(&self, d: usize) -> bool {
        let n = d - self.start;
        self.deferred.binary_search_by_key(&n, |e| e.n).is_ok()
    }

    /// Call `n` is done: published at once unless an earlier one still
    /// waits to be resolved.
    #[inline]
    fn done(&self, n: usize) {
        if self.deferred.is_empty() {
            self.progress.0.store(n as u32 + 1, Ordering::Release);
        }
    }

    fn defer(&mut self, n: usize, ran: Result<(Output, Pending), TxError>) {
        self.deferred.push(Deferred { n, ran });
    }

    /// Resolves every deferred call in order, each once the calls before
    /// it through its add keys are done, and publishes progress up to
    /// `upto`, the first call of the chunk not yet run. The add keys'
    /// running values stay in `overlay` until the last call is resolved:
    /// a hot counter's cache line is then read and written once per
    /// chunk, not once per call while the next chunk's claimer stamps it.
    fn resolve(
        &mut self,
        waiter: &mut Waiter<'_>,
        keys: &ChunkKeys<'_>,
        txs: &[Transaction],
        out: &mut [MaybeUninit<Receipt>],
        upto: usize,
    ) {
        let mut overlay: SmallVec<[(&Slot, Value); 4]> = SmallVec::new();
        for Deferred { n, ran } in self.deferred.drain(..) {
            let (tx, range) = (&txs[n], keys.range(n));
            let ordered = range.len().saturating_sub(usize::from(tx.access.adds));
            for &dependency in &keys.dependencies[range.start + ordered..range.end] {
                // A dependency inside the chunk is done or resolved
                // before this one.
                match dependency.checked_sub(1) {
                    Some(d) if (d as usize) < self.start => waiter.wait(d as usize),
                    _ => {}
                }
            }
            let slots = &keys.slots[range];
            let slot_at = |position: usize| {
                slots[position].expect("every scheduled key was given a slot when claimed")
            };
            let value_of = |overlay: &[(&Slot, Value)], slot: &Slot| {
                overlay
                    .iter()
                    .find(|(s, _)| std::ptr::eq(*s, slot))
                    .map_or_else(|| slot.load().unwrap_or(0), |(_, value)| *value)
            };
            let outcome = ran.and_then(|(output, pending)| {
                let writes = pending.resolve_against(tx, |position| {
                    value_of(&overlay, slot_at(usize::from(position)))
                })?;
                Ok((output, writes))
            });
            let status = match outcome {
                Ok((output, writes)) => {
                    for (position, value) in writes {
                        let position = usize::from(position);
                        let slot = slot_at(position);
                        match overlay.iter_mut().find(|(s, _)| std::ptr::eq(*s, slot)) {
                            Some(entry) => entry.1 = value,
                            None if tx.access.is_add(position) => overlay.push((slot, value)),
                            None => slot.store(value),
                        }
                    }
                    Status::Committed { output }
                }
                Err(error) => Status::Failed(error),
            };
            out[n].write(Receipt {
                tx_id: tx.id,
                status,
            });
        }
        for (slot, value) in overlay {
            slot.store(value);
        }
        self.progress.0.store(upto as u32, Ordering::Release);
    }
}

/// Where a parallel round would create a key: never, since every scheduled
/// key was given a slot when claimed.
fn never_create(_: usize, _: &Key, _: crate::model::Value) {
    unreachable!("every scheduled key was given a slot when claimed")
}

/// The keys of `tx` the executor schedules: every declared key, reads
/// first, up to one more than an access set may hold.
#[inline]
fn scheduled(tx: &Transaction) -> impl Iterator<Item = &Key> + '_ {
    let (reads, writes) = (tx.access.reads.iter(), tx.access.writes.iter());
    reads.chain(writes).take(SCHEDULED_KEYS)
}

impl ParallelExecutor {
    /// Runs one round over `block` (the rest of a block): workers claim
    /// chunks in order until the block ends or a claimer cuts it. Returns
    /// how many transactions ran; their receipts are in `out`.
    fn run_round(
        &self,
        pool: &rayon::ThreadPool,
        state: &State,
        block: &[Transaction],
        screen: &Judge,
        out: &mut [MaybeUninit<Receipt>],
        epoch: u32,
    ) -> usize {
        let sync = Box::new(RoundSync {
            room: Padded(
                state
                    .partitions()
                    .iter()
                    .map(|p| AtomicUsize::new(p.room()))
                    .collect(),
            ),
            floors: (0..self.workers).map(|_| Padded::default()).collect(),
            ..RoundSync::default()
        });
        sync.cut.0.store(block.len(), Ordering::Relaxed);
        let chunks = block.len().div_ceil(CHUNK);
        let progress: Vec<Progress> = (0..chunks).map(|_| Progress(AtomicU32::new(0))).collect();
        // Each chunk's receipts are written in place by whichever worker
        // claims the chunk; the mutex is taken once per chunk, uncontended.
        let outputs: Vec<Mutex<Option<&mut [MaybeUninit<Receipt>]>>> = out[..block.len()]
            .chunks_mut(CHUNK)
            .map(|out| Mutex::new(Some(out)))
            .collect();
        let work = |worker: usize| {
            let (next_chunk, claimed, cut) = (&sync.next_chunk.0, &sync.claimed.0, &sync.cut.0);
            let floor = &sync.floors[worker].0;
            // No chunk taken from here on is below the next one to hand out.
            floor.store(next_chunk.load(Ordering::Relaxed), Ordering::Release);
            let mut waiter = Waiter {
                floors: &sync.floors,
                progress: &progress,
                done_below: 0,
                waits: 0,
            };
            let mut keys = ChunkKeys::new();
            let mut deferred = Vec::new();
            let mut done = 0usize;
            loop {
                let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
                // This worker's earlier chunks are done (release: with
                // their writes).
                floor.store(chunk, Ordering::Release);
                let start = chunk * CHUNK;
                if start >= cut.load(Ordering::Acquire) {
                    break;
                }
                let txs = &block[start..(start + CHUNK).min(block.len())];
                let out = lock(&outputs[chunk])
                    .take()
                    .expect("each chunk is taken once");
                // The receipts' lines were last touched by another thread
                // (the block before's reader): fetch them for writing now,
                // not one store at a time.
                for line in out
                    .iter()
                    .step_by(64 / std::mem::size_of::<Receipt>().max(1))
                {
                    crate::state::prefetch_for_write(line);
                }
                keys.clear();
                let turn = || {
                    claimed.load(Ordering::Acquire) == chunk || cut.load(Ordering::Acquire) <= start
                };
                // Hash (and fetch slots) until the previous chunk is
                // claimed; if the whole chunk is hashed first, find its
                // slots, then wait.
                let mut hashed = 0;
                while hashed < txs.len() && !turn() {
                    keys.hash(state, txs, hashed);
                    hashed += 1;
                }
                if hashed == txs.len() && !turn() {
                    keys.find(state, txs);
                    spin_until(turn);
                }
                if cut.load(Ordering::Acquire) <= start {
                    break;
                }
                // Claim, hashing the rest a few transactions ahead, and
                // judge the signatures in the same order.
                let mut taken = txs.len();
                let mut refused = 0u64;
                for (n, tx) in txs.iter().enumerate() {
                    while hashed < txs.len().min(n + CLAIM_AHEAD + 1) {
                        keys.hash(state, txs, hashed);
                        hashed += 1;
                    }
                    if !keys.claim(state, tx, n, start + n, epoch, &sync.room.0) {
                        taken = n;
                        break;
                    }
                    refused |= u64::from(screen.judge(state, tx)) << n;
                }
                if taken < txs.len() {
                    cut.store(start + taken, Ordering::Release);
                }
                claimed.store(chunk + 1, Ordering::Release);
                let mut chunk_run = ChunkRun {
                    progress: &progress[chunk],
                    start,
                    deferred: &mut deferred,
                };
                for (n, tx) in txs[..taken].iter().enumerate() {
                    let range = keys.range(n);
                    // An add key's dependency is waited for only when the
                    // call is resolved: the call cannot read the key.
                    let adds = usize::from(tx.access.adds);
                    let ordered = range.len().saturating_sub(adds);
                    for &dependency in &keys.dependencies[range.start..range.start + ordered] {
                        let Some(d) = dependency.checked_sub(1) else {
                            continue;
                        };
                        let d = d as usize;
                        if d >= start {
                            // Earlier in this chunk: done, unless its
                            // resolving is deferred.
                            if chunk_run.is_deferred(d) {
                                chunk_run.resolve(&mut waiter, &keys, txs, out, n);
                            }
                            continue;
                        }
                        waiter.wait(d);
                    }
                    let slots = &keys.slots[range];
                    let refuse = refused >> n & 1 == 1;
                    if adds == 0 {
                        run_and_store(tx, slots, &self.registry, refuse, never_create, &mut out[n]);
                        chunk_run.done(n);
                        continue;
                    }
                    // A call that failed is deferred too: it may not be
                    // published before the calls it depends on, or a later
                    // reader of its add keys would wait for it alone.
                    let ran = match refuse {
                        true => Err(TxError::SignatureMissing { account: tx.sender }),
                        false => crate::contracts::run_unresolved(tx, slots, &self.registry),
                    };
                    chunk_run.defer(n, ran);
                }
                chunk_run.resolve(&mut waiter, &keys, txs, out, taken);
                done += taken;
            }
            floor.store(usize::MAX, Ordering::Release);
            self.waits.fetch_add(waiter.waits, Ordering::Relaxed);
            sync.written.0.fetch_add(done, Ordering::Release);
        };
        self.handoff();
        pool.in_place_scope(|scope| {
            for worker in 1..self.workers {
                scope.spawn(move |_| work(worker));
            }
            work(0);
            // Leave the region only once every claimed chunk is written:
            // waiting in the region's own latch would put this thread to
            // sleep. The cut only moves before the chunks past it are done.
            spin_until(|| {
                sync.written.0.load(Ordering::Acquire) == sync.cut.0.load(Ordering::Acquire)
            });
        });
        drop(outputs);
        let ran = sync.cut.0.load(Ordering::Acquire);
        // Every chunk before the cut was claimed exactly once (the counter
        // hands out each number once) and written up to the cut.
        assert_eq!(
            sync.written.0.load(Ordering::Acquire),
            ran,
            "every transaction has a receipt"
        );
        ran
    }
}

impl ParallelExecutor {
    /// Keeps the pool threads spinning for a while instead of going to
    /// sleep. A sleeping thread's core halts, and on a virtual machine
    /// waking it again can take a tenth of a block's time; blocks follow
    /// each other closely, so a short spin keeps the workers ready. The spin
    /// ends at the next hand-off of any executor or after [`KEEP_WARM`], and yields the core
    /// between rounds of spinning: a thread with real work gets it at once,
    /// while this one stays runnable rather than asleep.
    fn keep_warm(&self, pool: &rayon::ThreadPool) {
        let seen = HANDOFFS.load(Ordering::Relaxed);
        for _ in 1..self.workers {
            pool.spawn(move || {
                let deadline = std::time::Instant::now() + KEEP_WARM;
                while HANDOFFS.load(Ordering::Relaxed) == seen
                    && std::time::Instant::now() < deadline
                {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                    std::thread::yield_now();
                }
            });
        }
    }

    /// Ends the spin of [`Self::keep_warm`] in every executor of the
    /// process: work for this one's pool follows, and the others' spinning
    /// threads would take cores from it (several shards' executors share
    /// the machine's cores).
    fn handoff(&self) {
        HANDOFFS.fetch_add(1, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

/// Whether the block's head shows so many near conflicts that workers would
/// mostly wait for each other.
fn looks_contended(block: &[Transaction]) -> bool {
    let sample = &block[..block.len().min(SAMPLE)];
    // Each key's last declarer, and whether it only added to the key: two
    // calls that only add to a key run in parallel, so they do not conflict.
    let mut last_seen: FastMap<&Key, (usize, bool)> =
        FastMap::with_capacity_and_hasher(sample.len() * 2, Default::default());
    let mut conflicting = 0;
    for (i, tx) in sample.iter().enumerate() {
        let mut conflict = false;
        for (j, key) in tx.access.keys().enumerate() {
            let adds = tx.access.is_add(j);
            if let Some((previous, added)) = last_seen.insert(key, (i, adds)) {
                conflict |= previous != i && i - previous <= CONFLICT_WINDOW && !(added && adds);
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
    /// exactly the sequential result: each block creates 12,000 accounts and
    /// pays into them later in the same block, and the state ends up with
    /// every new account.
    #[test]
    fn keys_created_in_parallel_match_sequential() {
        const ACCOUNTS: u64 = 20_000;
        const NEW: u64 = 12_000;
        let registry = Arc::new(Registry::new());
        let parallel = Arc::new(
            ParallelExecutor::new(2, registry.clone())
                .expect("2 workers")
                .adaptive(false),
        );
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
        let stats = parallel.stats();
        assert_eq!(stats.parallel_blocks, 5);
        assert!(
            stats.extra_rounds > 0,
            "creating keys filled partitions: {stats:?}"
        );
    }

    /// Proves that stamps left by earlier blocks never break a later one:
    /// 600 blocks on one state, so that the eight-bit round epoch
    /// wraps around twice and old stamps with the current epoch are met,
    /// each block equal to the sequential executor's.
    #[test]
    fn stale_stamps_after_epoch_wraparound_are_harmless() {
        const ACCOUNTS: u64 = 5_000;
        let registry = Arc::new(Registry::new());
        let parallel = ParallelExecutor::new(2, registry.clone())
            .expect("2 workers")
            .adaptive(false);
        let sequential = SequentialExecutor::new(registry);
        let mut rng = Rng::new(77);
        let mut ids = TxIds::default();
        let mut reference = workload::bank_state(ACCOUNTS, 1_000);
        let mut state = reference.clone();
        for block in 0..600 {
            let txs = workload::transfers(&mut rng, &mut ids, ACCOUNTS, MIN_PARALLEL_BLOCK, 300);
            let expected = sequential.execute_block(&mut reference, &txs);
            let receipts = parallel.execute_block(&mut state, &txs);
            assert_eq!(receipts, expected, "block {block}");
        }
        assert!(state == reference, "final states differ");
        // A few blocks may look contended and run sequentially; the rest
        // must wrap the epoch around at least twice.
        let rounds = parallel.stats().parallel_blocks;
        assert!(rounds > 2 * u64::from(EPOCHS), "{rounds} parallel blocks");
    }
}
