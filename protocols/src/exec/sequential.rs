//! The reference executor: one transaction after another.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{check_block_size, BlockExecutor, ExecutorError};
use crate::contracts::{self, Registry};
use crate::model::{Key, Receipt, Status, Transaction, Value};
use crate::state::{Slot, State};

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

/// Executes `block` in order: shared by the sequential executor and the
/// parallel executor's fallback for contended blocks.
pub(crate) fn execute_in_order(
    state: &mut State,
    block: &[Transaction],
    registry: &Registry,
) -> Vec<Receipt> {
    let mut receipts = Vec::with_capacity(block.len());
    for (i, tx) in block.iter().enumerate() {
        if let Some(ahead) = block.get(i + PREFETCH_DISTANCE) {
            ahead.access.keys().for_each(|key| state.prefetch(key));
        }
        let (status, created) = execute_one(state, tx, registry);
        for (key, value) in created {
            state.set(key, value);
        }
        receipts.push(Receipt {
            tx_id: tx.id,
            status,
        });
    }
    receipts
}

/// Runs one transaction, applies its writes to existing keys and returns
/// the writes that create keys (they need `&mut State`).
#[inline]
fn execute_one(
    state: &State,
    tx: &Transaction,
    registry: &Registry,
) -> (Status, SmallVec<[(Key, Value); 2]>) {
    let slots: SmallVec<[Option<&Slot>; 8]> = tx.access.keys().map(|k| state.slot(k)).collect();
    let mut created = SmallVec::new();
    let status = match contracts::run(tx, &slots, registry) {
        Ok((output, writes)) => {
            for (position, value) in writes {
                let position = usize::from(position);
                match slots[position] {
                    Some(slot) => slot.store(value),
                    None => {
                        created.push((*tx.access.keys().nth(position).expect("declared"), value))
                    }
                }
            }
            Status::Committed { output }
        }
        Err(error) => Status::Failed(error),
    };
    (status, created)
}
