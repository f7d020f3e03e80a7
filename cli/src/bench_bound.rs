//! `parashard bench`'s reference lines: what the machine's cores give a
//! block when nothing is scheduled.
//!
//! Each of `workers` threads runs its own contiguous share of every block
//! in order, with nothing ordering its transactions against the other
//! threads'. Two ways:
//!
//! - [`Sharing::Nothing`]: each thread on a state of its own
//!   ([`SequentialExecutor`]). No cache line moves between cores. It is not
//!   a strict bound on large states: each thread's copy is a whole state,
//!   and the copies compete for the shared cache.
//! - [`Sharing::OneState`]: all threads on one state
//!   ([`execute_unordered_share`]; wrong results, measurement only). The
//!   accounts' cache lines move between cores as under a parallel
//!   executor. An executor that gives the sequential result does this work
//!   plus finding the block's dependencies, so this is the ceiling of any
//!   executor whose workers share the state.
//!
//! When a reference itself is near 1x, the cores (or the virtual machine's
//! placement of them) leave no room for parallel execution of transactions
//! this cheap, whatever the scheduler.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use parashard::prelude::*;
use parashard::protocols::exec::execute_unordered_share;

use crate::{median, CliError, WARM_UP_BLOCKS};

/// What the threads of a reference share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Each thread has a copy of the state.
    Nothing,
    /// All threads run on one state.
    OneState,
}

impl Sharing {
    /// How the report names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Sharing::Nothing => "nothing shared",
            Sharing::OneState => "one state, unordered",
        }
    }
}

/// One reference thread's share of the work: its own state, or the one
/// all share.
enum Share<'s> {
    Own(&'s mut State),
    Shared(&'s State),
}

impl Share<'_> {
    /// Runs `txs` with `executor` on an own state, or unordered with its
    /// registry on the shared one.
    fn run(
        &mut self,
        executor: &SequentialExecutor,
        registry: &Registry,
        txs: &[Transaction],
    ) -> Result<(), CliError> {
        match self {
            Share::Own(state) => {
                executor.execute_block(state, txs)?;
            }
            Share::Shared(state) => {
                execute_unordered_share(state, txs, registry)?;
            }
        }
        Ok(())
    }
}

/// The median of `(sequential, bound)` transactions per second over
/// `blocks`, both measured on every block (alternating which goes first).
pub(crate) fn shares(
    workers: usize,
    sharing: Sharing,
    state: &State,
    blocks: impl Iterator<Item = Vec<Transaction>>,
) -> Result<(f64, f64), CliError> {
    let registry = Arc::new(Registry::new());
    let sequential = SequentialExecutor::new(registry.clone());
    let mut reference = state.clone();
    let copies = match sharing {
        Sharing::Nothing => workers,
        Sharing::OneState => 1,
    };
    let mut states: Vec<State> = (0..copies).map(|_| state.clone()).collect();
    let mut threads: Vec<Share<'_>> = match &mut states[..] {
        [one] if sharing == Sharing::OneState => (0..workers).map(|_| Share::Shared(one)).collect(),
        all => all.iter_mut().map(Share::Own).collect(),
    };
    let (own, helpers) = threads.split_first_mut().expect("at least one worker");
    let posted = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let current: Mutex<Arc<Vec<Transaction>>> = Mutex::new(Arc::new(Vec::new()));
    // Worker `w`'s share of a block of `len` transactions.
    let share = |len: usize, worker: usize| {
        let size = len.div_ceil(workers);
        let start = (worker * size).min(len);
        start..(start + size).min(len)
    };
    let (mut seq_tps, mut bound_tps) = (Vec::new(), Vec::new());
    std::thread::scope(|scope| -> Result<(), CliError> {
        for (i, thread) in helpers.iter_mut().enumerate() {
            let (posted, finished, current, registry) = (&posted, &finished, &current, &registry);
            let executor = SequentialExecutor::new(registry.clone());
            scope.spawn(move || {
                let mut seen = 0;
                loop {
                    // Spin (yielding) rather than sleep: waking a sleeping
                    // thread would be measured as part of the block.
                    let next = posted.load(Ordering::Acquire);
                    if next == seen {
                        std::thread::yield_now();
                        continue;
                    }
                    if next == usize::MAX {
                        return;
                    }
                    seen = next;
                    let block = Arc::clone(&current.lock().unwrap_or_else(|e| e.into_inner()));
                    let mine = &block[share(block.len(), i + 1)];
                    // Blocks within limits: a failure here would be a bug
                    // of the sequential executor, which the main thread's
                    // share reports too.
                    let _ = thread.run(&executor, registry, mine);
                    finished.fetch_add(1, Ordering::AcqRel);
                }
            });
        }
        let result = (|| {
            for (n, block) in blocks.enumerate() {
                let block = Arc::new(block);
                let mine = &block[share(block.len(), 0)];
                for turn in 0..2 {
                    let start = Instant::now();
                    if (n + turn) % 2 == 0 {
                        sequential.execute_block(&mut reference, &block)?;
                        if n >= WARM_UP_BLOCKS {
                            seq_tps.push(block.len() as f64 / start.elapsed().as_secs_f64());
                        }
                    } else {
                        let done = finished.load(Ordering::Acquire);
                        *current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&block);
                        posted.store(n + 1, Ordering::Release);
                        own.run(&sequential, &registry, mine)?;
                        while finished.load(Ordering::Acquire) < done + (workers - 1) {
                            std::hint::spin_loop();
                        }
                        if n >= WARM_UP_BLOCKS {
                            bound_tps.push(block.len() as f64 / start.elapsed().as_secs_f64());
                        }
                    }
                }
            }
            Ok(())
        })();
        posted.store(usize::MAX, Ordering::Release);
        result
    })?;
    Ok((median(&mut seq_tps), median(&mut bound_tps)))
}
