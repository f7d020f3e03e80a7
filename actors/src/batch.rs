//! Replies to batches whose transactions finish at different times.

use std::collections::HashMap;

use tokio::sync::oneshot;

use parashard_protocols::fastmap::FastMap;
use parashard_protocols::model::{Receipt, Status, TxError, TxId};

/// The sender a client waits on for a batch's receipts, in batch order.
pub type BatchReply = oneshot::Sender<Vec<Receipt>>;

struct Batch {
    receipts: Vec<Option<Receipt>>,
    remaining: usize,
    reply: BatchReply,
}

/// Tracks open batches and sends each one's receipts once all are in.
#[derive(Default)]
pub struct Batches {
    next: u64,
    open: HashMap<u64, Batch>,
    waiting: FastMap<TxId, (u64, usize)>,
}

impl Batches {
    /// Opens a batch of `ids`. Returns the batch number and which entries
    /// may proceed: an id already in flight is answered at once with an
    /// error rather than left waiting forever.
    pub fn open(
        &mut self,
        ids: impl ExactSizeIterator<Item = TxId>,
        reply: BatchReply,
    ) -> (u64, Vec<bool>) {
        let batch = self.next;
        self.next += 1;
        let len = ids.len();
        self.open.insert(
            batch,
            Batch {
                receipts: vec![None; len],
                remaining: len,
                reply,
            },
        );
        let mut proceed = Vec::with_capacity(len);
        for (index, id) in ids.enumerate() {
            #[allow(clippy::map_entry)] // the duplicate branch needs `self` whole
            if self.waiting.contains_key(&id) {
                proceed.push(false);
                self.finish_entry(batch, index, in_flight(id));
            } else {
                self.waiting.insert(id, (batch, index));
                proceed.push(true);
            }
        }
        if len == 0 {
            self.finish_entry(
                batch,
                usize::MAX,
                Receipt {
                    tx_id: TxId::from_u128(0),
                    status: Status::Committed { output: 0 },
                },
            );
        }
        (batch, proceed)
    }

    /// Whether `id` is in an open batch, waiting for its receipt.
    pub fn is_waiting(&self, id: &TxId) -> bool {
        !self.waiting.is_empty() && self.waiting.contains_key(id)
    }

    /// Records `receipt` for its transaction, if it is awaited.
    pub fn complete(&mut self, receipt: Receipt) {
        if let Some((batch, index)) = self.waiting.remove(&receipt.tx_id) {
            self.finish_entry(batch, index, receipt);
        }
    }

    fn finish_entry(&mut self, batch: u64, index: usize, receipt: Receipt) {
        let Some(open) = self.open.get_mut(&batch) else {
            return;
        };
        if let Some(slot) = open.receipts.get_mut(index) {
            debug_assert!(slot.is_none());
            *slot = Some(receipt);
            open.remaining -= 1;
        }
        if open.remaining == 0 {
            let done = self.open.remove(&batch).expect("present");
            let receipts = done
                .receipts
                .into_iter()
                .map(|r| r.expect("all complete"))
                .collect();
            // The client may have given up; that is its business.
            let _ = done.reply.send(receipts);
        }
    }

    /// Transactions awaited.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }
}

/// The receipt of a transaction submitted while the same id is in flight:
/// it is refused rather than left waiting forever (or run twice).
pub fn in_flight(id: TxId) -> Receipt {
    Receipt {
        tx_id: id,
        status: Status::Failed(TxError::InvalidInput {
            reason: format!("{id} is already in flight"),
        }),
    }
}
