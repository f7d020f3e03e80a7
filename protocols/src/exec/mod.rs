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
/// unless `refuse` (see [`Screen`]), stores its writes if it commits, and
/// writes its receipt into `receipt`;
/// a write to a missing key goes to `create` with the key's position and
/// the key. Shared by both executors, which differ only in how they create
/// keys. The receipt is written in place, each field once: a receipt built
/// elsewhere and copied in costs a stall on every transaction.
#[inline]
pub(crate) fn run_and_store(
    tx: &Transaction,
    slots: &[Option<&crate::state::Slot>],
    registry: &crate::contracts::Registry,
    refuse: bool,
    mut create: impl FnMut(usize, &crate::model::Key, crate::model::Value),
    receipt: &mut std::mem::MaybeUninit<Receipt>,
) {
    use crate::model::Status;
    if refuse {
        receipt.write(Receipt {
            tx_id: tx.id,
            status: refused(tx),
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

/// Judges, in block order, which unsigned transactions a block refuses
/// with [`TxError::SignatureMissing`](crate::model::TxError::SignatureMissing):
/// those whose sender holds a public key when the block starts, or was
/// given its first by a `SetPublicKey` earlier in the block (committed or
/// not: the judgement comes before execution, see [`crate::auth`]). Both
/// executors call [`Screen::judge`] once per transaction in block order
/// (the parallel one as it claims), so they refuse the same ones.
#[derive(Debug, Default)]
pub(crate) struct Screen {
    /// Senders of the `SetPublicKey` calls judged so far.
    setting: crate::fastmap::FastMap<crate::model::AccountId, ()>,
}

impl Screen {
    /// Whether `tx`, the next transaction in block order, is refused.
    #[inline]
    pub(crate) fn judge(&mut self, state: &State, tx: &Transaction) -> bool {
        if tx.auth.is_some() {
            return false;
        }
        if matches!(tx.call, crate::model::Call::SetPublicKey { .. }) {
            self.setting.insert(tx.sender, ());
            return false;
        }
        let refused = state.holds_public_key(tx.sender)
            || (!self.setting.is_empty() && self.setting.contains_key(&tx.sender));
        debug_assert!(
            refused
                || state
                    .get(&crate::model::Key::sequence(tx.sender))
                    .is_none_or(|sequence| sequence & crate::auth::HAS_KEY == 0),
            "the index of keyed accounts matches the state"
        );
        refused
    }

    /// After the block: records the senders of its committed
    /// `SetPublicKey` calls as holding keys.
    pub(crate) fn note_keys(&self, state: &mut State, block: &[Transaction], receipts: &[Receipt]) {
        if self.setting.is_empty() {
            return;
        }
        for (tx, receipt) in block.iter().zip(receipts) {
            if matches!(tx.call, crate::model::Call::SetPublicKey { .. }) && receipt.is_committed()
            {
                state.note_public_key(tx.sender);
            }
        }
    }
}

/// The receipt status of an unsigned transaction [`Screen::judge`] refused.
pub(crate) fn refused(tx: &Transaction) -> crate::model::Status {
    crate::model::Status::Failed(crate::model::TxError::SignatureMissing { account: tx.sender })
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
