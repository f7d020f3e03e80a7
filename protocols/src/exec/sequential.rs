//! The reference executor: one transaction after another.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{
    check_block_size, prefetch_transaction, run_and_store, with_slots, BlockExecutor,
    ExecutorError, Screen,
};
use crate::contracts::Registry;
use crate::model::{Key, Receipt, Transaction, Value};
use crate::state::{hash, State};

/// Executes transactions one at a time, in block order: the definition of
/// a block's result.
#[derive(Debug, Clone, Default)]
pub struct SequentialExecutor {
    registry: Arc<Registry>,
}

impl SequentialExecutor {
    /// An executor that can call the user contracts in `registry`.
    pub fn new(registry: Arc<Registry>) -> SequentialExecutor {
        SequentialExecutor { registry }
    }
}

impl BlockExecutor for SequentialExecutor {
    fn execute_block(
        &self,
        state: &mut State,
        block: &[Transaction],
    ) -> Result<Vec<Receipt>, ExecutorError> {
        check_block_size(block)?;
        Ok(execute_in_order(state, block, &self.registry))
    }
}

/// How many transactions ahead the executor prefetches state: enough to
/// cover a memory access, few enough to stay in the L1 cache.
pub(crate) const PREFETCH_DISTANCE: usize = 6;
/// Hashes of prefetched transactions are kept for their execution: a ring
/// of this many transactions (more than the prefetch distance) ...
const HASH_RING: usize = 8;
/// ... of at most this many keys each; further keys are hashed again.
const HASHED_KEYS: usize = 4;

/// Executes `block` in order: shared by the sequential executor and the
/// parallel executor's fallback for contended blocks.
pub(crate) fn execute_in_order(
    state: &mut State,
    block: &[Transaction],
    registry: &Registry,
) -> Vec<Receipt> {
    let mut screen = Screen::default();
    let receipts = run_in_order(
        state,
        |state| state,
        State::set,
        block,
        registry,
        &mut screen,
    );
    screen.note_keys(state, block, &receipts);
    receipts
}

/// Runs every transaction of `block` in turn against one [`State`] shared
/// with other threads doing the same, and returns their receipts. **For
/// measurement only**: nothing orders these transactions against the other
/// threads', so neither the receipts nor the state are those of any order
/// (concurrent writes to one key overwrite each other), and a write that
/// would create a key is dropped. It does what the sequential executor does
/// per transaction, on state whose cache lines move between cores as a
/// parallel executor's do, without finding dependencies: how fast threads
/// sharing one state can run the block on this machine, the ceiling of any
/// executor whose workers share the state.
pub fn execute_unordered_share(
    state: &State,
    block: &[Transaction],
    registry: &Registry,
) -> Result<Vec<Receipt>, ExecutorError> {
    check_block_size(block)?;
    let mut screen = Screen::default();
    let mut shared = state;
    Ok(run_in_order(
        &mut shared,
        |s| s,
        |_, _, _| {},
        block,
        registry,
        &mut screen,
    ))
}

/// The sequential loop over `target`, whose state `state_of` gives and to
/// which `create` applies the writes that create keys, after each
/// transaction.
#[inline]
fn run_in_order<T>(
    target: &mut T,
    state_of: impl Fn(&T) -> &State,
    mut create: impl FnMut(&mut T, Key, Value),
    block: &[Transaction],
    registry: &Registry,
    screen: &mut Screen,
) -> Vec<Receipt> {
    let mut receipts = Vec::with_capacity(block.len());
    let mut hashes = [[0u64; HASHED_KEYS]; HASH_RING];
    // Hashes and prefetches transaction `i`'s keys, keeping the hashes.
    let prefetch = |state: &State, hashes: &mut [[u64; HASHED_KEYS]; HASH_RING], i: usize| {
        if let Some(ahead) = block.get(i + PREFETCH_DISTANCE) {
            prefetch_transaction(ahead);
        }
        if let Some(tx) = block.get(i) {
            let ring = &mut hashes[i % HASH_RING];
            for (slot, key) in ring.iter_mut().zip(tx.access.keys()) {
                *slot = hash(key);
                state.prefetch_hashed(*slot);
            }
        }
    };
    for tx in block.iter().take(PREFETCH_DISTANCE) {
        prefetch_transaction(tx);
    }
    for i in 0..PREFETCH_DISTANCE {
        prefetch(state_of(target), &mut hashes, i);
    }
    let out = &mut receipts.spare_capacity_mut()[..block.len()];
    for ((i, tx), receipt) in block.iter().enumerate().zip(out) {
        let state = state_of(target);
        prefetch(state, &mut hashes, i + PREFETCH_DISTANCE);
        let known = hashes[i % HASH_RING];
        let refuse = screen.judge(state, tx);
        let created = execute_one(state, tx, &known, registry, refuse, receipt);
        for (key, value) in created {
            create(target, key, value);
        }
    }
    // SAFETY: `execute_one` wrote each of the first `block.len()` elements
    // of the spare capacity (contract panics are caught inside it).
    unsafe { receipts.set_len(block.len()) };
    receipts
}

/// Runs one transaction, applies its writes to existing keys, writes its
/// receipt and returns the writes that create keys (they need `&mut State`).
#[inline]
fn execute_one(
    state: &State,
    tx: &Transaction,
    known: &[u64; HASHED_KEYS],
    registry: &Registry,
    refuse: bool,
    receipt: &mut std::mem::MaybeUninit<Receipt>,
) -> SmallVec<[(Key, Value); 2]> {
    let slot_of = |j: usize| {
        let key = tx.access.key(j).expect("j < len");
        match known.get(j) {
            Some(h) => state.slot_hashed(key, *h),
            None => state.slot(key),
        }
    };
    with_slots(tx.access.len(), slot_of, |slots| {
        let mut created = SmallVec::new();
        let create = |_, key: &Key, value| created.push((*key, value));
        run_and_store(tx, slots, registry, refuse, create, receipt);
        created
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{self, Rng, TxIds};

    /// Proves the unordered share does the sequential executor's work: run
    /// by one thread alone (nothing to race with), its receipts and state
    /// equal the sequential executor's on blocks of transfers with failures
    /// (amounts up to twice the balances).
    #[test]
    fn unordered_share_alone_is_in_order() {
        let registry = Registry::new();
        let mut rng = Rng::new(5);
        let mut ids = TxIds::default();
        let mut reference = workload::bank_state(300, 100);
        let shared = reference.clone();
        for block in 0..5 {
            let txs = workload::transfers(&mut rng, &mut ids, 300, 1_000, 200);
            let expected = execute_in_order(&mut reference, &txs, &registry);
            let receipts =
                execute_unordered_share(&shared, &txs, &registry).expect("block within limits");
            assert_eq!(receipts, expected, "block {block}");
            assert!(
                expected.iter().any(|r| !r.is_committed()),
                "block {block} has failures"
            );
        }
        assert!(shared == reference, "states differ");
    }
}
