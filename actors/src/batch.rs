//! Replies to batches whose transactions finish at different times.

use std::time::Instant;

use tokio::sync::oneshot;

use parashard_protocols::fastmap::{FastMap, IdMap, PREFETCH_AHEAD};
use parashard_protocols::model::{Receipt, Status, TxError, TxId};

/// The sender a client waits on for a batch's receipts, in batch order.
pub type BatchReply = oneshot::Sender<Answer>;

/// A batch's receipts, in batch order, with when each transaction finished
/// (for per-transaction latency).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// One receipt per entry.
    pub receipts: Vec<Receipt>,
    /// When the entries finished.
    pub finished: Finished,
}

/// When a batch's entries finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// All of them together (a block that ran as a whole).
    Together(Instant),
    /// Each at its own time, by position.
    Each(Vec<Instant>),
}

impl Answer {
    /// Receipts that all finished now.
    pub fn now(receipts: Vec<Receipt>) -> Answer {
        Answer {
            receipts,
            finished: Finished::Together(Instant::now()),
        }
    }

    /// When entry `index` finished.
    pub fn finished_at(&self, index: usize) -> Option<Instant> {
        match &self.finished {
            Finished::Together(at) => (index < self.receipts.len()).then_some(*at),
            Finished::Each(times) => times.get(index).copied(),
        }
    }
}

struct Batch {
    receipts: Vec<Option<Receipt>>,
    finished: Vec<Option<Instant>>,
    remaining: usize,
    reply: BatchReply,
}

/// Tracks open batches and sends each one's receipts once all are in.
#[derive(Default)]
pub struct Batches {
    next: u64,
    open: FastMap<u64, Batch>,
    /// Every awaited transaction's batch and position: looked up once per
    /// finished transaction, at random among all those waiting, so callers
    /// with many to finish fetch a few ahead ([`Batches::prefetch`]).
    waiting: IdMap<(u64, usize)>,
}

impl Batches {
    /// Opens a batch of `ids`. Returns the batch number and which entries
    /// may proceed: an id already in flight is answered at once with an
    /// error rather than left waiting forever.
    pub fn open(&mut self, ids: &[TxId], reply: BatchReply) -> (u64, Vec<bool>) {
        let len = ids.len();
        let batch = self.start(len, reply);
        let now = Instant::now();
        let mut proceed = Vec::with_capacity(len);
        for (index, &id) in ids.iter().enumerate() {
            if let Some(ahead) = ids.get(index + PREFETCH_AHEAD) {
                self.waiting.prefetch(ahead);
            }
            if self.waiting.contains_key(&id) {
                proceed.push(false);
                self.finish_entry(batch, index, in_flight(id), now);
            } else {
                self.waiting.insert(id, (batch, index));
                proceed.push(true);
            }
        }
        (batch, proceed)
    }

    /// Opens a batch of `len` entries and returns its number; an empty
    /// one is answered at once.
    fn start(&mut self, len: usize, reply: BatchReply) -> u64 {
        let batch = self.next;
        self.next += 1;
        if len == 0 {
            let _ = reply.send(Answer::now(Vec::new()));
        } else {
            self.open.insert(
                batch,
                Batch {
                    receipts: vec![None; len],
                    finished: vec![None; len],
                    remaining: len,
                    reply,
                },
            );
        }
        batch
    }

    /// Opens a batch of `len` entries that a caller has sorted out:
    /// `answered` are answered already (by position), and `running` (ids
    /// with their positions, none of them in flight) wait for
    /// [`Batches::complete`].
    pub fn track(
        &mut self,
        len: usize,
        answered: Vec<(usize, Receipt)>,
        running: impl Iterator<Item = (usize, TxId)>,
        reply: BatchReply,
    ) {
        let batch = self.start(len, reply);
        for (index, id) in running {
            debug_assert!(!self.waiting.contains_key(&id), "{id} is in flight");
            self.waiting.insert(id, (batch, index));
        }
        let now = Instant::now();
        for (index, receipt) in answered {
            self.finish_entry(batch, index, receipt, now);
        }
    }

    /// Starts loading what [`Batches::complete`] of `id` will touch: callers
    /// with a list of receipts call it a few ahead.
    pub fn prefetch(&self, id: &TxId) {
        self.waiting.prefetch(id);
    }

    /// Whether `id` is in an open batch, waiting for its receipt.
    pub fn is_waiting(&self, id: &TxId) -> bool {
        !self.waiting.is_empty() && self.waiting.contains_key(id)
    }

    /// Records `receipt` for its transaction, finished at `now`, if it is
    /// awaited. (Callers finishing many at once read the clock once.)
    pub fn complete(&mut self, receipt: Receipt, now: Instant) {
        if let Some((batch, index)) = self.waiting.remove(&receipt.tx_id) {
            self.finish_entry(batch, index, receipt, now);
        }
    }

    fn finish_entry(&mut self, batch: u64, index: usize, receipt: Receipt, now: Instant) {
        let Some(open) = self.open.get_mut(&batch) else {
            return;
        };
        if let Some(slot) = open.receipts.get_mut(index) {
            debug_assert!(slot.is_none());
            *slot = Some(receipt);
            open.finished[index] = Some(now);
            open.remaining -= 1;
        }
        if open.remaining == 0 {
            let done = self.open.remove(&batch).expect("present");
            let receipts = done
                .receipts
                .into_iter()
                .map(|r| r.expect("all complete"))
                .collect();
            let finished = done
                .finished
                .into_iter()
                .map(|at| at.expect("all complete"))
                .collect();
            // The client may have given up; that is its business.
            let _ = done.reply.send(Answer {
                receipts,
                finished: Finished::Each(finished),
            });
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
        status: Status::Failed(TxError::InFlight { tx: id }),
    }
}

/// The receipts of a batch of `len` entries answered at once: `answered`
/// by position, the others from `ran`, in order.
pub fn assemble(len: usize, answered: Vec<(usize, Receipt)>, ran: Vec<Receipt>) -> Vec<Receipt> {
    if answered.is_empty() {
        // The common case: every entry ran, in order. (Rebuilding the list
        // anyway was a sixth of a shard's time on local batches.)
        debug_assert_eq!(ran.len(), len, "one receipt per entry");
        return ran;
    }
    let mut ran = ran.into_iter();
    let mut answered = answered.into_iter().peekable();
    (0..len)
        .map(|at| match answered.next_if(|(i, _)| *i == at) {
            Some((_, receipt)) => receipt,
            None => ran.next().expect("one receipt per entry not answered"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(n: u128) -> Receipt {
        Receipt {
            tx_id: TxId::from_u128(n),
            status: Status::Committed {
                output: (n as u64).into(),
            },
        }
    }

    /// A tracked batch is answered once its last entry completes, in
    /// position order, with the entries answered up front in place; an
    /// empty one is answered at once.
    #[test]
    fn tracked_batches_answer_in_order() {
        let mut batches = Batches::default();
        let (reply, mut answer) = oneshot::channel();
        let running = [(0, TxId::from_u128(0)), (2, TxId::from_u128(2))];
        batches.track(3, vec![(1, committed(1))], running.into_iter(), reply);
        assert!(batches.is_waiting(&TxId::from_u128(2)));
        let start = Instant::now();
        let (first, second) = (
            start + std::time::Duration::from_millis(1),
            start + std::time::Duration::from_millis(2),
        );
        batches.complete(committed(2), first);
        assert!(answer.try_recv().is_err(), "one entry still open");
        batches.complete(committed(0), second);
        let answer = answer.try_recv().unwrap();
        assert_eq!(
            answer.receipts,
            vec![committed(0), committed(1), committed(2)]
        );
        // Each entry keeps its own finishing time.
        assert_eq!(answer.finished_at(0), Some(second));
        assert!(answer.finished_at(1).is_some_and(|at| at <= first));
        assert_eq!(answer.finished_at(2), Some(first));
        assert_eq!(answer.finished_at(3), None);
        assert_eq!(batches.pending(), 0);

        let (reply, mut answer) = oneshot::channel();
        batches.track(0, Vec::new(), std::iter::empty(), reply);
        assert_eq!(answer.try_recv().unwrap().receipts, Vec::new());
        let (reply, mut answer) = oneshot::channel();
        batches.open(&[], reply);
        assert_eq!(answer.try_recv().unwrap().receipts, Vec::new());
    }

    /// Receipts of a batch answered at once go back in position order.
    #[test]
    fn assemble_interleaves_answered_and_ran() {
        let ran = vec![committed(0), committed(3)];
        let answered = vec![(1, committed(1)), (2, in_flight(TxId::from_u128(2)))];
        let receipts = assemble(4, answered, ran);
        let ids: Vec<TxId> = receipts.iter().map(|r| r.tx_id).collect();
        assert_eq!(ids, (0..4).map(TxId::from_u128).collect::<Vec<_>>());
        assert!(receipts[2].error().is_some());
        let all_ran = vec![committed(0), committed(1)];
        assert_eq!(assemble(2, Vec::new(), all_ran.clone()), all_ran);
    }
}
