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

use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::fastmap::PREFETCH_AHEAD;
use crate::model::{Output, Receipt, Status, Transaction, TxId, Value};

/// Commits remembered by default: at a million transactions per second,
/// about a second of history per shard; about 40 MB when full.
pub const DEFAULT_REMEMBERED: usize = 1 << 20;

/// The largest capacity: ring positions must fit the table's 32 bits.
pub const MAX_CAPACITY: usize = (1 << 31) - 1;

/// The ids and outputs of the most recent commits; see the module docs.
///
/// Every transaction a shard receives is looked up here and every commit
/// added (and the oldest dropped), at random places among megabytes: so
/// the layout is built for few cache misses and for fetching ahead. The
/// commits sit in a ring in arrival order; an open-addressing table of
/// 8-byte entries (32 hash bits, which also give the home bucket, and the
/// ring position) finds them. A lookup of an id not remembered, the common
/// case, touches one table line and no ring entry.
///
/// The ring keeps one output word inline (24 bytes an entry): outputs of
/// another length, which only user contracts return, wait in a side map
/// by ring position, which is empty, and costs nothing, while none does.
#[derive(Debug, Clone)]
pub struct CommittedMemory {
    capacity: usize,
    /// `(id, output word)` in arrival order, starting at `oldest` once
    /// full.
    ring: Vec<(TxId, Value)>,
    /// The outputs that are not one word, by ring position.
    wide: HashMap<usize, Output, foldhash::fast::RandomState>,
    oldest: usize,
    /// `hash << 32 | ring position + 1`, or 0 for an empty bucket; at most
    /// half full, linear probing; grows with the ring.
    table: Vec<u64>,
    hasher: foldhash::fast::RandomState,
}

impl CommittedMemory {
    /// A memory of the last `capacity` commits (0: remember nothing). At
    /// most [`MAX_CAPACITY`] are remembered: a larger capacity is that.
    pub fn new(capacity: usize) -> CommittedMemory {
        CommittedMemory {
            capacity: capacity.min(MAX_CAPACITY),
            ring: Vec::new(),
            wide: HashMap::default(),
            oldest: 0,
            table: Vec::new(),
            hasher: Default::default(),
        }
    }

    fn hash(&self, id: &TxId) -> u32 {
        (self.hasher.hash_one(id) >> 32) as u32
    }

    fn home(&self, hash: u32) -> usize {
        hash as usize & (self.table.len() - 1)
    }

    /// The bucket holding `id`, if remembered.
    fn find(&self, id: &TxId) -> Option<usize> {
        self.find_hashed(id, self.hash(id))
    }

    fn find_hashed(&self, id: &TxId, hash: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut at = self.home(hash);
        loop {
            let entry = self.table[at];
            if entry == 0 {
                return None;
            }
            if (entry >> 32) as u32 == hash {
                let position = (entry as u32 - 1) as usize;
                if self.ring[position].0 == *id {
                    return Some(at);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Starts loading what looking up (or remembering) `id` will touch:
    /// callers with many ids to go through call it a few ids ahead.
    #[inline]
    pub fn prefetch(&self, id: &TxId) {
        if !self.table.is_empty() {
            crate::state::prefetch(&self.table[self.home(self.hash(id))]);
        }
    }

    /// The receipt of `id`, if it committed recently enough to be
    /// remembered.
    pub fn receipt(&self, id: &TxId) -> Option<Receipt> {
        let at = self.find(id)?;
        let position = (self.table[at] as u32 - 1) as usize;
        Some(Receipt {
            tx_id: *id,
            status: Status::Committed {
                output: self.output_at(position),
            },
        })
    }

    /// The receipts of those of `txs` remembered, with their positions in
    /// `txs`, in order. Looked up a few ahead: most are ids never seen, at
    /// random places.
    pub fn receipts(&self, txs: &[Transaction]) -> Vec<(usize, Receipt)> {
        for tx in txs.iter().take(PREFETCH_AHEAD) {
            self.prefetch(&tx.id);
        }
        txs.iter()
            .enumerate()
            .filter_map(|(n, tx)| {
                if let Some(ahead) = txs.get(n + PREFETCH_AHEAD) {
                    self.prefetch(&ahead.id);
                }
                Some((n, self.receipt(&tx.id)?))
            })
            .collect()
    }

    fn output_at(&self, position: usize) -> Output {
        match self.wide.get(&position) {
            Some(output) => output.clone(),
            None => Output::from(self.ring[position].1),
        }
    }

    /// Remembers that `id` committed with `output`, forgetting the oldest
    /// commit if the memory is full. An id remembered already keeps its
    /// first output (an id commits once).
    pub fn remember(&mut self, id: TxId, output: Output) {
        self.remember_ref(id, &output);
    }

    /// [`CommittedMemory::remember`] of a borrowed output: a one-word
    /// output, the usual, is copied, not cloned.
    fn remember_ref(&mut self, id: TxId, output: &Output) {
        let hash = self.hash(&id);
        if self.capacity == 0 || self.find_hashed(&id, hash).is_some() {
            return;
        }
        if (self.ring.len() + 1) * 2 > self.table.len() {
            self.grow();
        }
        let (word, wide) = match output.words() {
            [word] => (*word, None),
            _ => (0, Some(output.clone())),
        };
        let position = if self.ring.len() < self.capacity {
            self.ring.push((id, word));
            self.ring.len() - 1
        } else {
            let position = self.oldest;
            let forgotten = self.ring[position].0;
            self.unlink(&forgotten, position);
            if !self.wide.is_empty() {
                self.wide.remove(&position);
            }
            self.ring[position] = (id, word);
            self.oldest = if position + 1 == self.capacity {
                0
            } else {
                position + 1
            };
            position
        };
        if let Some(output) = wide {
            self.wide.insert(position, output);
        }
        self.place(u64::from(hash) << 32 | (position as u64 + 1));
    }

    /// Puts `entry` (hash and ring position) in the first free bucket from
    /// its home on.
    fn place(&mut self, entry: u64) {
        let mask = self.table.len() - 1;
        let mut at = self.home((entry >> 32) as u32);
        while self.table[at] != 0 {
            at = (at + 1) & mask;
        }
        self.table[at] = entry;
    }

    /// Doubles the table (it starts empty: a memory costs what it holds)
    /// and puts every entry back in. Entries carry their hash, so they are
    /// moved in table order: the entries of bucket `i` land near `i` or
    /// `i` + the old length, two nearly sequential streams. (Placing them
    /// in ring order, hashing each id again, wrote the new table at random:
    /// with a growing memory of a million commits that was a third of the
    /// time spent remembering.)
    fn grow(&mut self) {
        let bigger = vec![0; (self.table.len() * 2).max(16)];
        let old = std::mem::replace(&mut self.table, bigger);
        for entry in old {
            if entry != 0 {
                self.place(entry);
            }
        }
    }

    /// Removes the table entry of `id` (at ring `position`), shifting the
    /// entries after it back so that every probe still ends at its key.
    fn unlink(&mut self, id: &TxId, position: usize) {
        let mask = self.table.len() - 1;
        let mut hole = self.home(self.hash(id));
        while self.table[hole] as u32 as usize != position + 1 {
            hole = (hole + 1) & mask;
        }
        let mut next = (hole + 1) & mask;
        while self.table[next] != 0 {
            let home = self.home((self.table[next] >> 32) as u32);
            if !crate::fastmap::stays_after_removal(hole, home, next) {
                self.table[hole] = self.table[next];
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.table[hole] = 0;
    }

    /// Remembers the committed ones of `receipts`, in order.
    pub fn remember_receipts(&mut self, receipts: &[Receipt]) {
        for (n, receipt) in receipts.iter().enumerate() {
            if let Some(ahead) = receipts.get(n + PREFETCH_AHEAD) {
                self.prefetch(&ahead.tx_id);
                // The bucket of the commit that one will push out.
                if self.ring.len() == self.capacity && self.capacity > 0 {
                    let position = self.oldest + PREFETCH_AHEAD;
                    let position = if position < self.capacity {
                        position
                    } else {
                        position % self.capacity
                    };
                    let evicted = self.ring[position].0;
                    self.prefetch(&evicted);
                }
            }
            if let Status::Committed { output } = &receipt.status {
                self.remember_ref(receipt.tx_id, output);
            }
        }
    }

    /// Every remembered commit, oldest first: what a snapshot keeps, and
    /// what [`CommittedMemory::remember`] takes back in the same order.
    pub fn iter(&self) -> impl Iterator<Item = (TxId, Output)> + '_ {
        let positions = (self.oldest..self.ring.len()).chain(0..self.oldest);
        positions.map(|position| (self.ring[position].0, self.output_at(position)))
    }

    /// The most commits remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many commits are remembered.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TxError, Value};

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
            memory.remember(id(n), (n as Value * 10).into());
        }
        memory.remember(id(3), 999.into());
        assert_eq!(memory.len(), 3);
        assert_eq!(memory.receipt(&id(1)), None, "the oldest is forgotten");
        assert_eq!(
            memory.receipt(&id(3)),
            Some(Receipt {
                tx_id: id(3),
                status: Status::Committed { output: 30.into() },
            })
        );
        let batch: Vec<Transaction> = [5, 3, 1, 4]
            .map(|n| {
                let (from, to) = (crate::model::AccountId(1), crate::model::AccountId(2));
                Transaction::transfer(id(n), from, to, 1)
            })
            .into();
        let known: Vec<_> = memory
            .receipts(&batch)
            .into_iter()
            .map(|(n, r)| (n, r.tx_id))
            .collect();
        assert_eq!(
            known,
            vec![(1, id(3)), (3, id(4))],
            "positions of the remembered ones"
        );
        let saved: Vec<_> = memory.iter().collect();
        assert_eq!(
            saved,
            vec![(id(2), 20.into()), (id(3), 30.into()), (id(4), 40.into())]
        );
        let mut restored = CommittedMemory::new(3);
        for (tx, output) in saved {
            restored.remember(tx, output);
        }
        assert_eq!(
            restored.iter().collect::<Vec<_>>(),
            memory.iter().collect::<Vec<_>>()
        );
    }

    /// Proves the table agrees with a plain model (a queue of the last
    /// `capacity` distinct commits) through long random runs that force
    /// collisions, evictions and backward shifts in small tables: every
    /// lookup and the oldest-first order. The seed is in the failure.
    #[test]
    fn matches_a_model_under_random_churn() {
        use std::collections::VecDeque;
        for seed in 0..300u64 {
            let mut rng = crate::workload::Rng::new(seed);
            // Mostly tiny memories (every step evicts and shifts); one seed
            // in ten large enough to grow its table several times.
            let (capacity, ids) = if seed % 10 == 0 {
                (100 + rng.below(200) as usize, 600)
            } else {
                (1 + rng.below(9) as usize, 40)
            };
            let mut memory = CommittedMemory::new(capacity);
            let mut model: VecDeque<(TxId, Output)> = VecDeque::new();
            for step in 0..2_000 {
                let tx = id(u128::from(rng.below(ids)));
                if rng.chance(60) {
                    // Outputs of zero to two words: none of them is special.
                    let words = rng.below(3);
                    let output = Output::from_words((0..words).map(|_| rng.below(1_000)));
                    memory.remember(tx, output.clone());
                    if !model.iter().any(|(t, _)| *t == tx) {
                        if model.len() == capacity {
                            model.pop_front();
                        }
                        model.push_back((tx, output));
                    }
                } else {
                    let expected =
                        model
                            .iter()
                            .find(|(t, _)| *t == tx)
                            .map(|(_, output)| Receipt {
                                tx_id: tx,
                                status: Status::Committed {
                                    output: output.clone(),
                                },
                            });
                    assert_eq!(memory.receipt(&tx), expected, "seed {seed} step {step}");
                }
                assert_eq!(
                    memory.iter().collect::<Vec<_>>(),
                    model.iter().cloned().collect::<Vec<_>>(),
                    "seed {seed} step {step}"
                );
            }
        }
    }

    /// Proves only commits are remembered from receipts, and that a memory
    /// of capacity 0 remembers nothing.
    #[test]
    fn remembers_commits_only() {
        let receipts = [
            Receipt {
                tx_id: id(1),
                status: Status::Committed { output: 5.into() },
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
