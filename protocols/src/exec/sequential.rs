//! The reference executor: one transaction after another.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{
    check_block_size, prefetch_transaction, run_and_store, with_slots, BlockExecutor, ExecutorError,
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
        prefetch(state, &mut hashes, i);
    }
    let out = &mut receipts.spare_capacity_mut()[..block.len()];
    for ((i, tx), receipt) in block.iter().enumerate().zip(out) {
        prefetch(state, &mut hashes, i + PREFETCH_DISTANCE);
        let known = hashes[i % HASH_RING];
        let created = execute_one(state, tx, &known, registry, receipt);
        for (key, value) in created {
            state.set(key, value);
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
        run_and_store(tx, slots, registry, create, receipt);
        created
    })
}
