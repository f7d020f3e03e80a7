//! Memory of committed transactions: a transaction id submitted again
//! after it committed is answered with its receipt instead of running a
//! second time.
//!
//! A client that loses a receipt (a timeout, a dropped reply, a crash on
//! either side) cannot tell whether its transaction ran; the safe retry is
//! to submit the same transaction, with the same id, again. Shards and the
//! coordinator each remember the ids they committed, recover the memory
//! from their logs and snapshots, and answer such a retry from it. Only
//! commits are remembered: a failed or aborted transaction changed nothing,
//! so running it again is what a retry asks for.
//!
//! The memory holds the most recent `capacity` commits (oldest forgotten
//! first), so a retry is safe within that many later commits of the same
//! shard (or, for cross-shard transactions, of the coordinator).

use std::collections::VecDeque;

use crate::fastmap::FastMap;
use crate::model::{Receipt, Status, TxId, Value};

/// Commits remembered by default: at a million transactions per second,
/// about a second of history per shard; about 40 MB when full.
pub const DEFAULT_REMEMBERED: usize = 1 << 20;

/// The ids and outputs of the most recent commits; see the module docs.
#[derive(Debug, Clone)]
pub struct CommittedMemory {
    capacity: usize,
    outputs: FastMap<TxId, Value>,
    /// Remembered ids, oldest first.
    order: VecDeque<TxId>,
}

impl CommittedMemory {
    /// A memory of the last `capacity` commits (0: remember nothing).
    pub fn new(capacity: usize) -> CommittedMemory {
        CommittedMemory {
            capacity,
            outputs: FastMap::default(),
            order: VecDeque::new(),
        }
    }

    /// The receipt of `id`, if it committed recently enough to be
    /// remembered.
    pub fn receipt(&self, id: &TxId) -> Option<Receipt> {
        self.outputs.get(id).map(|&output| Receipt {
            tx_id: *id,
            status: Status::Committed { output },
        })
    }

    /// Remembers that `id` committed with `output`, forgetting the oldest
    /// commit if the memory is full. An id remembered already keeps its
    /// first output (an id commits once).
    pub fn remember(&mut self, id: TxId, output: Value) {
        if self.capacity == 0 || self.outputs.contains_key(&id) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.outputs.remove(&oldest);
            }
        }
        self.outputs.insert(id, output);
        self.order.push_back(id);
    }

    /// Remembers the committed ones of `receipts`, in order.
    pub fn remember_receipts<'r>(&mut self, receipts: impl IntoIterator<Item = &'r Receipt>) {
        for receipt in receipts {
            if let Status::Committed { output } = receipt.status {
                self.remember(receipt.tx_id, output);
            }
        }
    }

    /// Every remembered commit, oldest first: what a snapshot keeps, and
    /// what [`CommittedMemory::remember`] takes back in the same order.
    pub fn iter(&self) -> impl Iterator<Item = (TxId, Value)> + '_ {
        self.order.iter().map(|id| (*id, self.outputs[id]))
    }

    /// The most commits remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many commits are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TxError;

    fn id(n: u128) -> TxId {
        TxId::from_u128(n)
    }

    /// Proves the memory answers remembered commits with their output,
    /// forgets the oldest first once full, keeps an id's first output, and
    /// that a snapshot of it (`iter`) restores to the same memory.
    #[test]
    fn remembers_the_latest_commits() {
        let mut memory = CommittedMemory::new(3);
        for n in 1..=4 {
            memory.remember(id(n), n as Value * 10);
        }
        memory.remember(id(3), 999);
        assert_eq!(memory.len(), 3);
        assert_eq!(memory.receipt(&id(1)), None, "the oldest is forgotten");
        assert_eq!(
            memory.receipt(&id(3)),
            Some(Receipt {
                tx_id: id(3),
                status: Status::Committed { output: 30 },
            })
        );
        let saved: Vec<_> = memory.iter().collect();
        assert_eq!(saved, vec![(id(2), 20), (id(3), 30), (id(4), 40)]);
        let mut restored = CommittedMemory::new(3);
        for (tx, output) in saved {
            restored.remember(tx, output);
        }
        assert_eq!(
            restored.iter().collect::<Vec<_>>(),
            memory.iter().collect::<Vec<_>>()
        );
    }

    /// Proves only commits are remembered from receipts, and that a memory
    /// of capacity 0 remembers nothing.
    #[test]
    fn remembers_commits_only() {
        let receipts = [
            Receipt {
                tx_id: id(1),
                status: Status::Committed { output: 5 },
            },
            Receipt {
                tx_id: id(2),
                status: Status::Failed(TxError::InsufficientFunds {
                    key: crate::model::Key::balance(
                        crate::model::AccountId(1),
                        crate::model::AssetId::COIN,
                    ),
                    needed: 2,
                    available: 1,
                }),
            },
        ];
        let mut memory = CommittedMemory::new(10);
        memory.remember_receipts(&receipts);
        assert!(memory.receipt(&id(1)).is_some());
        assert_eq!(memory.receipt(&id(2)), None);
        let mut none = CommittedMemory::new(0);
        none.remember_receipts(&receipts);
        assert!(none.is_empty());
    }
}
