//! Block executors: a sequential reference and a parallel executor whose
//! state and receipts equal the reference's for every block.

mod adaptive;
mod parallel;
mod sequential;

pub use parallel::{ParallelExecutor, ParallelStats};
pub use sequential::{execute_unordered_share, SequentialExecutor};

use smallvec::SmallVec;

use crate::model::{Receipt, Transaction};
use crate::state::State;

/// The most transactions one block may hold. Indices into a block fit in
/// `u32` with room to spare, and a block's bookkeeping stays bounded.
pub const MAX_BLOCK_TXS: usize = 1 << 24;

/// Error executing a block. A failing transaction is not an error (it gets
/// a failed receipt); these errors reject the whole block before anything
/// is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The block holds more than [`MAX_BLOCK_TXS`] transactions.
    #[error("block of {len} transactions exceeds the maximum of {max}")]
    BlockTooLarge {
        /// The block's size.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A parallel executor needs at least one worker.
    #[error("an executor needs at least one worker, {workers} given")]
    NoWorkers {
        /// The number given.
        workers: usize,
    },
    /// The worker threads could not be started.
    #[error("could not start executor workers: {0}")]
    ThreadPool(String),
}

/// Executes blocks of transactions against a [`State`].
pub trait BlockExecutor: Send + Sync {
    /// Executes `block` in order against `state` and returns one receipt
    /// per transaction, in block order.
    fn execute_block(
        &self,
        state: &mut State,
        block: &[Transaction],
    ) -> Result<Vec<Receipt>, ExecutorError>;
}

/// Transactions with at most this many declared keys resolve their slots
/// into a buffer on the stack.
const INLINE_KEYS: usize = 8;

/// Calls `f` with the slots of a transaction's `len` declared keys, as
/// `slot_of(j)` gives them for key `j` (reads, then writes). The usual few
/// keys stay on the stack: this runs once per transaction.
#[inline]
pub(crate) fn with_slots<'s, R>(
    len: usize,
    mut slot_of: impl FnMut(usize) -> Option<&'s crate::state::Slot>,
    f: impl FnOnce(&[Option<&'s crate::state::Slot>]) -> R,
) -> R {
    if len <= INLINE_KEYS {
        let mut slots = [None; INLINE_KEYS];
        for (j, slot) in slots[..len].iter_mut().enumerate() {
            *slot = slot_of(j);
        }
        f(&slots[..len])
    } else {
        let slots: Vec<_> = (0..len).map(slot_of).collect();
        f(&slots)
    }
}

/// Asks the CPU to start loading what executing `tx` reads of it: its call
/// and its declared keys. Blocks that were not just received are out of
/// cache, and a transaction is a few cache lines.
#[inline]
pub(crate) fn prefetch_transaction(tx: &Transaction) {
    use crate::state::prefetch;
    prefetch(&tx.call);
    tx.access.reads.first().map(prefetch);
    tx.access.writes.first().map(prefetch);
    tx.access.writes.last().map(prefetch);
}

/// Runs `tx` against the slots of its declared keys (`None`: missing),
/// stores its writes if it commits, and writes its receipt into `receipt`;
/// a write to a missing key goes to `create` with the key's position and
/// the key. Shared by both executors, which differ only in how they create
/// keys. The receipt is written in place, each field once: a receipt built
/// elsewhere and copied in costs a stall on every transaction.
#[inline]
pub(crate) fn run_and_store(
    tx: &Transaction,
    slots: &[Option<&crate::state::Slot>],
    registry: &crate::contracts::Registry,
    screen: &Screen,
    mut create: impl FnMut(usize, &crate::model::Key, crate::model::Value),
    receipt: &mut std::mem::MaybeUninit<Receipt>,
) {
    use crate::model::Status;
    if let Some(error) = screen.refuses(tx) {
        receipt.write(Receipt {
            tx_id: tx.id,
            status: Status::Failed(error),
        });
        return;
    }
    let status = match crate::contracts::coin::transfer_fast(tx, slots) {
        // The common coin transfer, stored here rather than through a list
        // of writes: it is most of what executors run.
        Some(Ok(balances)) => {
            for (slot, value) in balances {
                slot.store(value);
            }
            Status::Committed { output: 0.into() }
        }
        Some(Err(error)) => Status::Failed(error),
        None => store(
            tx,
            slots,
            crate::contracts::run(tx, slots, registry),
            &mut create,
        ),
    };
    receipt.write(Receipt {
        tx_id: tx.id,
        status,
    });
}

/// Stores the writes of a call's `outcome` if it committed, creating
/// missing keys through `create`, and returns the receipt's status.
#[inline]
pub(crate) fn store(
    tx: &Transaction,
    slots: &[Option<&crate::state::Slot>],
    outcome: Result<(crate::model::Output, crate::contracts::Writes), crate::model::TxError>,
    create: &mut impl FnMut(usize, &crate::model::Key, crate::model::Value),
) -> crate::model::Status {
    use crate::model::Status;
    match outcome {
        Ok((output, writes)) => {
            for (position, value) in writes {
                let position = usize::from(position);
                match slots[position] {
                    Some(slot) => slot.store(value),
                    None => create(position, tx.access.key(position).expect("declared"), value),
                }
            }
            Status::Committed { output }
        }
        Err(error) => Status::Failed(error),
    }
}

/// The senders whose unsigned transactions a block refuses with
/// [`TxError::SignatureMissing`](crate::model::TxError::SignatureMissing):
/// those holding a public key when the block starts, and those given their
/// first in the block (see [`crate::auth`]). Judged once per block on the
/// state before it, the same way by both executors.
#[derive(Debug, Default)]
pub(crate) struct Screen {
    refused: crate::fastmap::FastMap<crate::model::AccountId, ()>,
}

impl Screen {
    /// The screen of `block` on `state`. A state that never held a public
    /// key, with a block that gives none, costs one pass over the calls.
    pub(crate) fn of(state: &State, block: &[Transaction]) -> Screen {
        use crate::model::{Call, Key};
        let mut screen = Screen::default();
        let sets_key = |tx: &Transaction| matches!(tx.call, Call::SetPublicKey { .. });
        if !state.may_hold_public_keys() && !block.iter().any(sets_key) {
            return screen;
        }
        for tx in block {
            let refused = sets_key(tx)
                || (tx.auth.is_none()
                    && state
                        .get(&Key::sequence(tx.sender))
                        .is_some_and(|sequence| sequence & crate::auth::HAS_KEY != 0));
            if refused {
                screen.refused.insert(tx.sender, ());
            }
        }
        screen
    }

    /// The error `tx` fails with before it runs, if the screen refuses it.
    #[inline]
    pub(crate) fn refuses(&self, tx: &Transaction) -> Option<crate::model::TxError> {
        if self.refused.is_empty()
            || tx.auth.is_some()
            || matches!(tx.call, crate::model::Call::SetPublicKey { .. })
            || !self.refused.contains_key(&tx.sender)
        {
            return None;
        }
        Some(crate::model::TxError::SignatureMissing { account: tx.sender })
    }
}

fn check_block_size(block: &[Transaction]) -> Result<(), ExecutorError> {
    check_block_len(block.len())
}

/// The size check on a length alone: a block over the limit would take
/// gigabytes to build in a test.
fn check_block_len(len: usize) -> Result<(), ExecutorError> {
    if len > MAX_BLOCK_TXS {
        return Err(ExecutorError::BlockTooLarge {
            len,
            max: MAX_BLOCK_TXS,
        });
    }
    Ok(())
}

/// Executes one transaction against explicitly given values of its declared
/// keys (`None`: the key does not exist) instead of a shard's state, and
/// returns its output and the writes it makes. This is how a cross-shard
/// transaction runs once every shard has locked and sent its keys.
pub fn execute_with_values(
    tx: &Transaction,
    values: &[(crate::model::Key, Option<crate::model::Value>)],
    registry: &crate::contracts::Registry,
) -> Result<
    (
        crate::model::Output,
        Vec<(crate::model::Key, crate::model::Value)>,
    ),
    crate::model::TxError,
> {
    // One free-standing slot per declared key: no table for a single
    // transaction (this runs once per cross-shard transaction), and for the
    // usual few keys nothing on the heap.
    let owned: SmallVec<[crate::state::Slot; INLINE_KEYS]> = tx
        .access
        .keys()
        .map(|key| {
            let value = values.iter().find(|(k, _)| k == key).and_then(|(_, v)| *v);
            crate::state::Slot::detached(value)
        })
        .collect();
    let slots: SmallVec<[Option<&crate::state::Slot>; INLINE_KEYS]> =
        owned.iter().map(Some).collect();
    let (output, writes) = crate::contracts::run(tx, &slots, registry)?;
    Ok((
        output,
        writes
            .into_iter()
            .map(|(position, value)| {
                let key = tx.access.key(usize::from(position)).expect("declared");
                (*key, value)
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the block size limit is inclusive and its error names both
    /// sizes, by checking lengths at and around the limit (a real block of
    /// 2^24 transactions would need over 3 GB).
    #[test]
    fn block_size_limit_is_inclusive() {
        assert_eq!(check_block_len(0), Ok(()));
        assert_eq!(check_block_len(MAX_BLOCK_TXS), Ok(()));
        assert_eq!(
            check_block_len(MAX_BLOCK_TXS + 1),
            Err(ExecutorError::BlockTooLarge {
                len: MAX_BLOCK_TXS + 1,
                max: MAX_BLOCK_TXS,
            })
        );
        assert_eq!(
            check_block_len(usize::MAX),
            Err(ExecutorError::BlockTooLarge {
                len: usize::MAX,
                max: MAX_BLOCK_TXS,
            })
        );
    }
}
