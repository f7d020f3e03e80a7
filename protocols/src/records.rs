//! The records shards and the coordinator log, durably, before they act:
//! what recovery replays. Shared by the actors' storage and the simulator,
//! which log the same records.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::model::{Key, Output, Receipt, ShardId, Status, Transaction, TxId, Value};
use crate::state::State;

use crate::twopc::{Attempt, Committed, Finished, Writes};

/// A shard's log record. Recovery replays them in order: a block's writes
/// and a cross-shard commit's writes are applied, prepared locks re-taken.
/// Replay runs no contract code, so it cannot diverge from what committed
/// when contracts change or go missing between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardRecord {
    /// What a block of local transactions did (a redo record): its writes
    /// and its commits. Built by [`ShardRecord::block`] from the state the
    /// block left.
    Block {
        /// Each transaction the block committed, in block order, with its
        /// output (what the shard's commit memory answers a retry with).
        committed: Commits,
        /// The value the block left in each key its committed transactions
        /// declared for writing, in block order; a key may appear more than
        /// once, always with the same (final) value.
        writes: Vec<(Key, Value)>,
    },
    /// A cross-shard transaction prepared here: its keys are locked.
    Prepared {
        /// The transaction.
        tx: TxId,
        /// The prepare round the lock belongs to.
        attempt: Attempt,
        /// Its keys on this shard.
        keys: Vec<Key>,
    },
    /// A prepared transaction committed with these writes.
    Committed {
        /// The transaction.
        tx: TxId,
        /// Its writes on this shard.
        writes: Writes,
    },
    /// A transaction's rounds up to `attempt` aborted.
    Aborted {
        /// The transaction.
        tx: TxId,
        /// The latest round aborted.
        attempt: Attempt,
    },
}

/// Transactions a block committed, in block order, with their outputs:
/// one word inline each (what native calls and most contracts return), so
/// that a block's record costs 24 bytes a commit; outputs of another
/// length wait beside, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commits {
    /// Each commit with its output's word (0 for a wide one); a lone
    /// commit (a cross-shard decision's usual list) stays inline.
    words: SmallVec<[(TxId, Value); 1]>,
    /// The outputs that are not one word, by index in `words`, ascending.
    #[serde(default)]
    wide: Vec<(u32, Output)>,
}

impl Commits {
    /// Room for `capacity` commits.
    pub fn with_capacity(capacity: usize) -> Commits {
        Commits {
            words: SmallVec::with_capacity(capacity),
            wide: Vec::new(),
        }
    }

    /// Adds the commit of `id` with `output`.
    pub fn push(&mut self, id: TxId, output: &Output) {
        match output.words() {
            [word] => self.words.push((id, *word)),
            _ => {
                let index = u32::try_from(self.words.len()).expect("a block is bounded");
                self.wide.push((index, output.clone()));
                self.words.push((id, 0));
            }
        }
    }

    /// The commits in order, with their outputs.
    pub fn iter(&self) -> impl Iterator<Item = (TxId, Output)> + '_ {
        let mut wide = self.wide.iter().peekable();
        self.words
            .iter()
            .enumerate()
            .map(
                move |(index, &(id, word))| match wide.next_if(|(at, _)| *at as usize == index) {
                    Some((_, output)) => (id, output.clone()),
                    None => (id, Output::from(word)),
                },
            )
    }

    /// The ids committed, in order.
    pub fn ids(&self) -> impl Iterator<Item = TxId> + '_ {
        self.words.iter().map(|(id, _)| *id)
    }

    /// How many commits.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Roughly the bytes it owns on the heap.
    fn footprint(&self) -> usize {
        std::mem::size_of_val(self.words.as_slice()) + std::mem::size_of_val(self.wide.as_slice())
    }
}

impl<const N: usize> From<[(TxId, Output); N]> for Commits {
    fn from(commits: [(TxId, Output); N]) -> Commits {
        commits.into_iter().collect()
    }
}

impl FromIterator<(TxId, Output)> for Commits {
    fn from_iter<I: IntoIterator<Item = (TxId, Output)>>(commits: I) -> Commits {
        let mut all = Commits::default();
        for (id, output) in commits {
            all.push(id, &output);
        }
        all
    }
}

/// A coordinator's log record (presumed abort: commits only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorRecord {
    /// The decision to commit unit `tx` (a transaction, or a group of
    /// them) with these writes per shard.
    Commit {
        /// The unit: a transaction's id, or its group's.
        tx: TxId,
        /// The transactions it commits with their outputs, for their
        /// receipts and the commit memory.
        committed: Committed,
        /// Its writes, by shard.
        writes: Vec<(ShardId, Writes)>,
    },
    /// Every shard applied the commit of unit `tx`.
    Done {
        /// The unit.
        tx: TxId,
    },
    /// A coordinator incarnation starts: its rounds carry this epoch, which
    /// is greater than every earlier incarnation's.
    Epoch {
        /// The epoch.
        epoch: u32,
    },
}

/// A shard's snapshot: its whole state and the locks of its prepared
/// cross-shard transactions, as of the last record appended before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSnapshot {
    /// Every live key with its value.
    pub state: Vec<(Key, Value)>,
    /// Prepared transactions, the prepare round that locked them, and the
    /// keys they lock on this shard.
    pub prepared: Vec<(TxId, Attempt, Vec<Key>)>,
    /// The finished transactions the shard remembers, oldest first, each
    /// with the round it is remembered for, so that after a restart it
    /// still ignores late prepares of them.
    pub finished: Vec<(TxId, Finished, Attempt)>,
    /// Every round below this was decided (the coordinator's last word):
    /// prepares of those rounds are ignored.
    pub decided_below: Attempt,
    /// Local commits remembered to answer re-submissions, oldest first
    /// (see [`crate::committed`]).
    pub committed: Commits,
}

/// A coordinator's snapshot: the commit decisions not yet done, as
/// [`CoordinatorRecord::Commit`] records. Done transactions are dropped,
/// which is what compacts the decision log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorSnapshot {
    /// The open commit decisions.
    pub commits: Vec<CoordinatorRecord>,
    /// Finished commits remembered to answer re-submissions, oldest first
    /// (see [`crate::committed`]).
    pub committed: Commits,
    /// The epoch of the incarnation that wrote the snapshot.
    pub epoch: u32,
}

impl ShardRecord {
    /// The redo record of `block`, which has just executed on `state` with
    /// `receipts`: the final value of every key a committed transaction
    /// declared for writing. A declared key the transaction did not write
    /// holds a value it already held, so applying the record to the state
    /// before the block gives exactly the state after it. Keys are never
    /// deleted, so a declared key still missing was not written.
    pub fn block(state: &State, block: &[Transaction], receipts: &[Receipt]) -> ShardRecord {
        assert_eq!(block.len(), receipts.len(), "one receipt per transaction");
        let mut committed = Commits::with_capacity(block.len());
        let mut writes = Vec::with_capacity(block.len() * 2);
        for (tx, receipt) in block.iter().zip(receipts) {
            debug_assert_eq!(tx.id, receipt.tx_id);
            let Status::Committed { output } = &receipt.status else {
                continue;
            };
            committed.push(tx.id, output);
            for key in &tx.access.writes {
                if let Some(value) = state.get(key) {
                    writes.push((*key, value));
                }
            }
        }
        ShardRecord::Block { committed, writes }
    }

    /// Roughly how many bytes the record holds in memory (itself and what
    /// it owns on the heap): what an in-memory log counts towards its
    /// snapshot threshold, so that a log kept in memory stays bounded.
    pub fn footprint(&self) -> u64 {
        use std::mem::size_of_val;
        let owned = match self {
            ShardRecord::Block { committed, writes } => {
                committed.footprint() + size_of_val(writes.as_slice())
            }
            ShardRecord::Prepared { keys, .. } => size_of_val(keys.as_slice()),
            ShardRecord::Committed { writes, .. } => size_of_val(&writes[..]),
            ShardRecord::Aborted { .. } => 0,
        };
        (std::mem::size_of::<Self>() + owned) as u64
    }
}

impl CoordinatorRecord {
    /// Roughly how many bytes the record holds in memory; see
    /// [`ShardRecord::footprint`].
    pub fn footprint(&self) -> u64 {
        use std::mem::size_of_val;
        let owned = match self {
            CoordinatorRecord::Commit {
                committed, writes, ..
            } => {
                committed.footprint()
                    + size_of_val(&writes[..])
                    + writes
                        .iter()
                        .map(|(_, writes)| size_of_val(&writes[..]))
                        .sum::<usize>()
            }
            CoordinatorRecord::Done { .. } | CoordinatorRecord::Epoch { .. } => 0,
        };
        (std::mem::size_of::<Self>() + owned) as u64
    }
}

impl ShardSnapshot {
    /// Roughly how many bytes the snapshot holds in memory; see
    /// [`ShardRecord::footprint`].
    pub fn footprint(&self) -> u64 {
        use std::mem::size_of_val;
        let locks: usize = self
            .prepared
            .iter()
            .map(|(_, _, keys)| size_of_val(keys.as_slice()))
            .sum();
        (std::mem::size_of::<Self>()
            + size_of_val(self.state.as_slice())
            + size_of_val(self.prepared.as_slice())
            + locks
            + size_of_val(self.finished.as_slice())
            + self.committed.footprint()) as u64
    }
}

impl CoordinatorSnapshot {
    /// Roughly how many bytes the snapshot holds in memory; see
    /// [`ShardRecord::footprint`].
    pub fn footprint(&self) -> u64 {
        let commits: u64 = self.commits.iter().map(CoordinatorRecord::footprint).sum();
        std::mem::size_of::<Self>() as u64 + commits + self.committed.footprint() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits give back exactly what was pushed, in order, whatever mix
    /// of one-word, empty and several-word outputs; the same holds through
    /// serialisation.
    #[test]
    fn commits_keep_every_output_in_order() {
        let mut rng = crate::workload::Rng::new(11);
        for case in 0..200 {
            let expected: Vec<(TxId, Output)> = (0..rng.below(20))
                .map(|n| {
                    let words = match rng.below(4) {
                        0 => 0,
                        1 => 3,
                        _ => 1,
                    };
                    let output = Output::from_words((0..words).map(|_| rng.below(1_000)));
                    (TxId::from_u128(u128::from(n)), output)
                })
                .collect();
            let commits: Commits = expected.iter().cloned().collect();
            assert_eq!(commits.len(), expected.len(), "case {case}");
            assert_eq!(commits.iter().collect::<Vec<_>>(), expected, "case {case}");
            let text = serde_json::to_string(&commits).unwrap();
            let decoded: Commits = serde_json::from_str(&text).unwrap();
            assert_eq!(decoded, commits, "case {case}");
        }
    }
}
