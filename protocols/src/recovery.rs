//! Recovery: a shard's or the coordinator's memory rebuilt from its log (a
//! snapshot, then the records appended after it). One implementation,
//! used by the actors and by the simulator, so that simulated crashes
//! exercise the very code that real restarts run.

use std::collections::HashMap;
use std::sync::Arc;

use crate::committed::CommittedMemory;
use crate::contracts::Registry;
use crate::exec::{BlockExecutor, ExecutorError};
use crate::model::{Receipt, ShardId, Transaction, TxId};
use crate::placement::Placement;
use crate::records::{Commits, CoordinatorRecord, CoordinatorSnapshot, ShardRecord, ShardSnapshot};
use crate::state::State;
use crate::twopc::{
    Committed, Coordinator, CoordinatorConfig, Participant, ParticipantConfig, Writes,
};

/// What a shard keeps in memory and rebuilds from its log.
#[derive(Debug)]
pub struct ShardMemory {
    /// Every key's value.
    pub state: State,
    /// The 2PC participant: locks, queued prepares, finished transactions.
    pub participant: Participant,
    /// The latest local commits, to answer re-submissions.
    pub committed: CommittedMemory,
}

impl ShardMemory {
    /// A shard with nothing logged yet.
    pub fn new(shard: ShardId, config: ParticipantConfig, remember: usize) -> ShardMemory {
        ShardMemory {
            state: State::new(),
            participant: Participant::with_config(shard, config),
            committed: CommittedMemory::new(remember),
        }
    }

    /// Rebuilds a shard from `snapshot` and the `records` logged after it:
    /// writes of blocks and commits applied, aborts applied, locks re-taken,
    /// in log order. No contract code runs: the log says what committed.
    pub fn recover(
        shard: ShardId,
        config: ParticipantConfig,
        remember: usize,
        snapshot: Option<ShardSnapshot>,
        records: impl IntoIterator<Item = ShardRecord>,
    ) -> ShardMemory {
        let mut memory = ShardMemory::new(shard, config, remember);
        if let Some(snapshot) = snapshot {
            memory.state = State::with_capacity(snapshot.state.len());
            for (key, value) in snapshot.state {
                memory.state.set(key, value);
            }
            memory.participant.decided(snapshot.decided_below);
            for (tx, outcome, round) in snapshot.finished {
                memory.participant.restore_finished(tx, outcome, round);
            }
            for (tx, attempt, keys) in snapshot.prepared {
                memory.participant.restore(tx, attempt, keys);
            }
            for (tx, output) in snapshot.committed.iter() {
                memory.committed.remember(tx, output);
            }
            memory.participant.take_granted();
        }
        for record in records {
            memory.replay(record);
        }
        memory
    }

    /// Executes `block` (local transactions that no lock holds back) on the
    /// state and returns its receipts and the record that makes it durable.
    /// The caller appends the record, and only then answers with the
    /// receipts and calls [`ShardMemory::remember`]. An error rejects the
    /// whole block before anything is applied.
    pub fn execute_block(
        &mut self,
        executor: &dyn BlockExecutor,
        block: &[Transaction],
    ) -> Result<(Vec<Receipt>, ShardRecord), ExecutorError> {
        let receipts = executor.execute_block(&mut self.state, block)?;
        let record = ShardRecord::block(&self.state, block, &receipts);
        Ok((receipts, record))
    }

    /// Remembers a durable block's commits, to answer re-submissions.
    pub fn remember(&mut self, receipts: &[Receipt]) {
        self.committed.remember_receipts(receipts);
    }

    /// Applies one logged record as recovery does.
    fn replay(&mut self, record: ShardRecord) {
        match record {
            ShardRecord::Block { committed, writes } => {
                for (key, value) in writes {
                    self.state.set(key, value);
                }
                for (tx, output) in committed.iter() {
                    self.committed.remember(tx, output);
                }
            }
            ShardRecord::Prepared { tx, attempt, keys } => {
                self.participant.restore(tx, attempt, keys);
            }
            ShardRecord::Committed { tx, writes } => {
                for &(key, value) in self.participant.commit(tx, writes).apply.iter() {
                    self.state.set(key, value);
                }
            }
            ShardRecord::Aborted { tx, attempt } => self.participant.abort(tx, attempt),
        }
        // Replay re-grants exactly what was logged; nobody is waiting.
        self.participant.take_granted();
    }

    /// The snapshot that replaces the log so far.
    pub fn snapshot(&self) -> ShardSnapshot {
        ShardSnapshot {
            state: self.state.iter().collect(),
            prepared: self
                .participant
                .prepared()
                .map(|(tx, attempt, keys)| (*tx, attempt, keys.to_vec()))
                .collect(),
            finished: self.participant.finished().collect(),
            decided_below: self.participant.decided_below(),
            committed: self.committed.iter().collect(),
        }
    }
}

/// The greatest coordinator epoch a log names: the next incarnation runs
/// under a greater one.
pub fn last_coordinator_epoch(
    snapshot: Option<&CoordinatorSnapshot>,
    records: &[CoordinatorRecord],
) -> u32 {
    records
        .iter()
        .filter_map(|record| match record {
            CoordinatorRecord::Epoch { epoch } => Some(*epoch),
            _ => None,
        })
        .fold(snapshot.map_or(0, |s| s.epoch), u32::max)
}

/// A coordinator incarnation with `epoch` rebuilt from its log: commits
/// every shard applied are remembered (to answer re-submissions), commits
/// not yet applied everywhere are re-driven in log order, and everything
/// else is presumed aborted (shards holding its locks ask, and are told to
/// abort).
pub fn recover_coordinator(
    config: CoordinatorConfig,
    placement: Placement,
    registry: Arc<Registry>,
    epoch: u32,
    now_ms: u64,
    snapshot: Option<CoordinatorSnapshot>,
    records: Vec<CoordinatorRecord>,
) -> Coordinator {
    let mut machine = Coordinator::new(config, placement, registry).with_epoch(epoch);
    let (commits, committed) = match snapshot {
        Some(snapshot) => (snapshot.commits, snapshot.committed),
        None => (Vec::new(), Commits::default()),
    };
    for (tx, output) in committed.iter() {
        machine.restore_committed(tx, output);
    }
    type Open = (Committed, Vec<(ShardId, Writes)>);
    let mut open: HashMap<TxId, Open> = HashMap::new();
    let mut order = Vec::new();
    for record in commits.into_iter().chain(records) {
        match record {
            CoordinatorRecord::Commit {
                tx,
                committed,
                writes,
            } => {
                order.push(tx);
                open.insert(tx, (committed, writes));
            }
            // A mark of a commit not open here changes nothing.
            CoordinatorRecord::Done { tx } => {
                if let Some((committed, _)) = open.remove(&tx) {
                    for (member, output) in committed.iter() {
                        machine.restore_committed(member, output);
                    }
                }
            }
            CoordinatorRecord::Epoch { .. } => {}
        }
    }
    for id in order {
        if let Some((committed, writes)) = open.remove(&id) {
            machine.recover_commit(now_ms, id, committed, writes);
        }
    }
    machine
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Key, Receipt, Status, Value};
    use crate::twopc::{Command, ToParticipant};

    fn commit(id: u128, from: u64, to: u64, output: Value) -> CoordinatorRecord {
        CoordinatorRecord::Commit {
            tx: TxId::from_u128(id),
            committed: std::sync::Arc::new([(TxId::from_u128(id), output.into())].into()),
            writes: vec![
                (
                    ShardId(0),
                    [(
                        Key::balance(AccountId(from), crate::model::AssetId::COIN),
                        9,
                    )]
                    .into(),
                ),
                (
                    ShardId(1),
                    [(Key::balance(AccountId(to), crate::model::AssetId::COIN), 11)].into(),
                ),
            ],
        }
    }

    /// A shard recovered from its snapshot and the records after it keeps
    /// out late prepares as the live shard did: rounds below the snapshot's
    /// floor, and finished transactions it remembered or logged since,
    /// while a new round of an aborted transaction still locks.
    #[test]
    fn recovered_shard_keeps_its_floor_and_finished_memory() {
        use crate::twopc::Finished;
        let key = |a| Key::balance(AccountId(a), crate::model::AssetId::COIN);
        let (old, kept, logged) = (TxId::from_u128(1), TxId::from_u128(2), TxId::from_u128(3));
        let mut live = ShardMemory::new(ShardId(0), ParticipantConfig::default(), 0);
        let p = &mut live.participant;
        for (tx, round) in [(old, 3), (kept, 7)] {
            assert_eq!(p.prepare(tx, round, vec![key(round)]), None);
            p.commit(tx, vec![(key(round), 1)]);
        }
        p.decided(5);
        let snapshot = live.snapshot();
        assert_eq!(snapshot.decided_below, 5);
        assert_eq!(snapshot.finished, vec![(kept, Finished::Committed, 7)]);
        let after = vec![ShardRecord::Aborted {
            tx: logged,
            attempt: 8,
        }];
        let mut recovered = ShardMemory::recover(
            ShardId(0),
            ParticipantConfig::default(),
            0,
            Some(snapshot),
            after,
        );
        let p = &mut recovered.participant;
        assert_eq!(p.decided_below(), 5);
        for (tx, round) in [(old, 3), (kept, 7), (logged, 8)] {
            assert_eq!(p.prepare(tx, round, vec![key(round)]), None);
            assert_eq!(p.take_granted(), vec![], "{tx} round {round}");
        }
        assert_eq!(p.prepare(logged, 9, vec![key(9)]), None);
        assert_eq!(p.take_granted().len(), 1, "a later round locks");
    }

    /// Proves a coordinator log recovers as documented: the greatest
    /// logged epoch (snapshot or records) is found; a commit marked done is
    /// remembered (its re-submission is answered at once, with its output)
    /// and not re-driven; an open commit is re-sent to its shards.
    #[test]
    fn coordinator_log_recovers_done_and_open_commits() {
        let snapshot = CoordinatorSnapshot {
            commits: vec![commit(1, 0, 1, 5)],
            committed: [(TxId::from_u128(7), 70.into())].into(),
            epoch: 4,
        };
        let records = vec![
            commit(2, 2, 3, 6),
            CoordinatorRecord::Epoch { epoch: 6 },
            CoordinatorRecord::Done {
                tx: TxId::from_u128(1),
            },
            CoordinatorRecord::Done {
                tx: TxId::from_u128(99),
            },
        ];
        assert_eq!(last_coordinator_epoch(Some(&snapshot), &records), 6);
        assert_eq!(last_coordinator_epoch(Some(&snapshot), &[]), 4);
        assert_eq!(last_coordinator_epoch(None, &[]), 0);
        let placement = Placement::hashed(2).expect("two shards");
        let mut machine = recover_coordinator(
            CoordinatorConfig::default(),
            placement,
            Arc::new(Registry::new()),
            7,
            0,
            Some(snapshot),
            records,
        );
        assert_eq!(machine.in_flight(), 1, "only the open commit");
        let commands = machine.take_commands();
        let resent: Vec<TxId> = commands
            .iter()
            .flat_map(|c| match c {
                Command::Send { messages, .. } => messages.clone(),
                _ => Vec::new(),
            })
            .filter_map(|m| match m {
                ToParticipant::Commit { tx, .. } => Some(tx),
                // Every earlier incarnation's round is decided.
                ToParticipant::Decided { below } => {
                    assert_eq!(below, 7 << 32);
                    None
                }
                other => panic!("only commits are re-sent: {other:?}"),
            })
            .collect();
        assert_eq!(resent, vec![TxId::from_u128(2); 2]);
        let mut remembered: Vec<_> = machine.committed().collect();
        remembered.sort_unstable();
        assert_eq!(
            remembered,
            vec![
                (TxId::from_u128(1), 5.into()),
                (TxId::from_u128(7), 70.into())
            ]
        );
        let retry = Transaction::transfer(TxId::from_u128(1), AccountId(0), AccountId(1), 1);
        machine.begin(0, retry);
        assert_eq!(
            machine.take_commands(),
            vec![Command::Reply(Receipt {
                tx_id: TxId::from_u128(1),
                status: Status::Committed { output: 5.into() },
            })]
        );
    }
}
