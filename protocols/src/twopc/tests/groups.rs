//! Grouped rounds: transactions admitted together that share keys run as
//! one unit of two-phase commit. Each test drives the coordinator through
//! one transition and checks the exact commands it emits.

use super::*;

/// Accounts 1 (shard 0), 2 and 3 (shard 1); account 1 is shared.
fn grouped_setup(max_group: usize) -> (Coordinator, [Key; 3]) {
    grouped_setup_with(CoordinatorConfig {
        max_group,
        ..CoordinatorConfig::default()
    })
}

/// [`grouped_setup`] with a coordinator of `config`.
fn grouped_setup_with(config: CoordinatorConfig) -> (Coordinator, [Key; 3]) {
    let (coordinator, ..) = setup_with(config);
    let key = |a| Key::balance(AccountId(a), AssetId::COIN);
    (coordinator, [key(1), key(2), key(3)])
}

fn transfer(id: u128, from: u64, to: u64, amount: Value) -> Transaction {
    Transaction::transfer(TxId::from_u128(id), AccountId(from), AccountId(to), amount)
}

fn vote(
    tx: TxId,
    attempt: Attempt,
    shard: u32,
    values: Vec<(Key, Option<Value>)>,
) -> ToCoordinator {
    ToCoordinator::Prepared {
        tx,
        attempt,
        shard: ShardId(shard),
        values,
    }
}

fn reply(tx: u128, status: Status) -> Command {
    Command::Reply(Receipt {
        tx_id: TxId::from_u128(tx),
        status,
    })
}

/// Two transfers from account 1 begun together form one group: one
/// prepare per shard for the union of their keys, under a group id; after
/// both votes, one decision with both outputs and the net writes (the
/// second transfer ran on the first one's result), one commit per shard;
/// after both acks, the unit is done and both are answered.
#[test]
fn sharing_transactions_run_as_one_group() {
    let (mut c, [k1, k2, k3]) = grouped_setup(512);
    c.begin(0, transfer(10, 1, 2, 30));
    c.begin(0, transfer(11, 1, 3, 20));
    assert_eq!(c.in_flight(), 2);
    let group = group_id(0);
    assert!(is_group_id(&group));
    assert_eq!(
        c.take_commands(),
        vec![
            send(
                0,
                ToParticipant::Prepare {
                    tx: group,
                    attempt: 0,
                    keys: vec![k1, Key::sequence(AccountId(1))],
                }
            ),
            Command::SetTimer { at_ms: 1_000 },
        ]
    );
    c.handle_message(1, vote(group, 0, 0, vec![(k1, Some(100))]));
    let mut on_one = vec![k2, k3];
    on_one.sort_unstable();
    assert_eq!(
        c.take_commands(),
        vec![send(
            1,
            ToParticipant::Prepare {
                tx: group,
                attempt: 0,
                keys: on_one,
            }
        ),]
    );
    c.handle_message(2, vote(group, 0, 1, vec![(k2, Some(5)), (k3, Some(0))]));
    assert_eq!(
        c.take_commands(),
        vec![
            Command::PersistCommit {
                tx: group,
                committed: std::sync::Arc::new(
                    [
                        (TxId::from_u128(10), 0.into()),
                        (TxId::from_u128(11), 0.into())
                    ]
                    .into()
                ),
                writes: vec![
                    (ShardId(0), [(k1, 50)].into()),
                    (ShardId(1), [(k2, 35), (k3, 20)].into()),
                ],
            },
            and_decided(commit(0, group, vec![(k1, 50)]), 1),
            and_decided(commit(1, group, vec![(k2, 35), (k3, 20)]), 1),
            Command::SetTimer { at_ms: 1_002 },
        ]
    );
    for shard in [0, 1] {
        c.handle_message(
            3,
            ToCoordinator::Committed {
                tx: group,
                shard: ShardId(shard),
            },
        );
    }
    let committed = Status::Committed { output: 0.into() };
    assert_eq!(
        c.take_commands(),
        vec![
            Command::Done { tx: group },
            reply(10, committed.clone()),
            reply(11, committed.clone()),
        ]
    );
    assert_eq!(c.in_flight(), 0);
    let stats = c.stats();
    assert_eq!((stats.group_commits, stats.largest_group), (1, 2));
    // Each member's retry is answered from the commit memory.
    c.begin(4, transfer(11, 1, 3, 20));
    assert_eq!(c.take_commands(), vec![reply(11, committed)]);
}

/// A member that fails on the values its turn sees (the first transfer
/// left too little) fails alone and at once, writing nothing; the other
/// commits. A duplicate of a member in flight is ignored.
#[test]
fn a_failing_member_fails_alone() {
    let (mut c, [k1, k2, k3]) = grouped_setup(512);
    c.begin(0, transfer(10, 1, 2, 30));
    c.begin(0, transfer(11, 1, 3, 50));
    c.take_commands();
    let group = group_id(0);
    c.begin(1, transfer(11, 1, 3, 50));
    assert_eq!(c.take_commands(), vec![], "a duplicate of a member");
    c.handle_message(1, vote(group, 0, 0, vec![(k1, Some(60))]));
    c.take_commands();
    c.handle_message(2, vote(group, 0, 1, vec![(k2, Some(0)), (k3, Some(0))]));
    let commands = c.take_commands();
    assert_eq!(
        commands[0],
        Command::PersistCommit {
            tx: group,
            committed: std::sync::Arc::new([(TxId::from_u128(10), 0.into())].into()),
            writes: vec![
                (ShardId(0), [(k1, 30)].into()),
                (ShardId(1), [(k2, 30)].into()),
            ],
        }
    );
    let failed = reply(
        11,
        Status::Failed(TxError::InsufficientFunds {
            key: k1,
            needed: 50,
            available: 30,
        }),
    );
    assert_eq!(commands.last(), Some(&failed), "{commands:?}");
    assert_eq!(c.in_flight(), 1, "the committed member waits for acks");
}

/// A group whose every member fails aborts on every shard, persists
/// nothing and answers each member with its own error.
#[test]
fn a_group_of_failures_aborts() {
    let (mut c, [k1, k2, k3]) = grouped_setup(512);
    c.begin(0, transfer(10, 1, 2, 30));
    c.begin(0, transfer(11, 1, 3, 50));
    c.take_commands();
    let group = group_id(0);
    c.handle_message(1, vote(group, 0, 0, vec![(k1, Some(10))]));
    c.take_commands();
    c.handle_message(2, vote(group, 0, 1, vec![(k2, Some(0)), (k3, Some(0))]));
    let insufficient = |needed| {
        Status::Failed(TxError::InsufficientFunds {
            key: k1,
            needed,
            available: 10,
        })
    };
    assert_eq!(
        c.take_commands(),
        vec![
            and_decided(abort(0, group, 0), 1),
            and_decided(abort(1, group, 0), 1),
            reply(10, insufficient(30)),
            reply(11, insufficient(50)),
        ]
    );
    assert_eq!(c.in_flight(), 0);
}

/// A group whose vote stays overdue after its prepare was sent again fails
/// as a whole: every member gets the round's reason, and the member ids
/// are free for a retry.
#[test]
fn an_overdue_group_fails_every_member() {
    let (mut c, [k1, ..]) = grouped_setup_with(CoordinatorConfig {
        prepare_resends: 1,
        ..CoordinatorConfig::default()
    });
    c.begin(0, transfer(10, 1, 2, 30));
    c.begin(0, transfer(11, 1, 3, 50));
    c.take_commands();
    c.handle_timeout(1_000);
    assert_eq!(
        c.take_commands(),
        vec![
            send(
                0,
                ToParticipant::Prepare {
                    tx: group_id(0),
                    attempt: 0,
                    keys: vec![k1, Key::sequence(AccountId(1))],
                }
            ),
            Command::SetTimer { at_ms: 2_000 },
        ],
        "the prepare again"
    );
    c.handle_timeout(2_000);
    let commands = c.take_commands();
    let failed: Vec<(TxId, TxError)> = commands
        .iter()
        .filter_map(|command| match command {
            Command::Reply(receipt) => Some((receipt.tx_id, receipt.error()?.clone())),
            _ => None,
        })
        .collect();
    let timeout = TxError::CrossShardAborted {
        reason: AbortReason::VoteTimeout {
            shard: ShardId(0),
            timeout_ms: 1_000,
            asked: 2,
        },
    };
    assert!(timeout.is_retryable());
    assert_eq!(
        failed,
        vec![
            (TxId::from_u128(10), timeout.clone()),
            (TxId::from_u128(11), timeout)
        ]
    );
    assert_eq!(c.in_flight(), 0);
    c.begin(2_000, transfer(11, 1, 3, 50));
    assert_eq!(c.in_flight(), 1, "a retry runs again");
}

/// Groups are bounded: with at most two members, three transactions that
/// share a key form a group of two and a unit of one, prepared in turn on
/// the shared shard.
#[test]
fn groups_are_bounded() {
    let (mut c, [k1, ..]) = grouped_setup(2);
    for id in 10..13 {
        c.begin(0, transfer(id, 1, 2, 1));
    }
    let prepares: Vec<(TxId, Vec<Key>)> = sent(c.take_commands())
        .filter_map(|(_, message)| match message {
            ToParticipant::Prepare { tx, keys, .. } => Some((tx, keys)),
            _ => None,
        })
        .collect();
    // The sender's sequence key too: the coordinator checks that it
    // holds no public key.
    let keys = vec![k1, Key::sequence(AccountId(1))];
    assert_eq!(
        prepares,
        vec![(group_id(0), keys.clone()), (TxId::from_u128(12), keys)]
    );
}

/// A client's transaction may not use a group id: it is refused with a
/// typed error and nothing starts.
#[test]
fn group_ids_are_reserved() {
    let (mut c, _) = grouped_setup(512);
    let mut tx = transfer(10, 1, 2, 1);
    tx.id = group_id(7);
    c.begin(0, tx);
    let commands = c.take_commands();
    assert!(
        matches!(&commands[..], [Command::Reply(r)] if matches!(r.error(), Some(TxError::InvalidInput { .. }))),
        "{commands:?}"
    );
    assert_eq!(c.in_flight(), 0);
}

/// A group's decision recovered from the log re-drives its commits; a
/// member's retry meanwhile waits for them (it is in flight), and once the
/// shards acknowledge, every member is answered with its logged output.
#[test]
fn recovered_group_commit_answers_every_member() {
    let (mut c, [k1, k2, k3]) = grouped_setup(512);
    let group = group_id(3);
    c.recover_commit(
        0,
        group,
        std::sync::Arc::new(
            [
                (TxId::from_u128(10), 4.into()),
                (TxId::from_u128(11), 5.into()),
            ]
            .into(),
        ),
        vec![
            (ShardId(0), [(k1, 50)].into()),
            (ShardId(1), [(k2, 35), (k3, 20)].into()),
        ],
    );
    c.take_commands();
    assert_eq!(c.in_flight(), 2);
    c.begin(1, transfer(11, 1, 3, 20));
    assert_eq!(c.take_commands(), vec![], "in flight");
    for shard in [0, 1] {
        c.handle_message(
            2,
            ToCoordinator::Committed {
                tx: group,
                shard: ShardId(shard),
            },
        );
    }
    assert_eq!(
        c.take_commands(),
        vec![
            Command::Done { tx: group },
            reply(10, Status::Committed { output: 4.into() }),
            reply(11, Status::Committed { output: 5.into() }),
        ]
    );
    assert_eq!(c.in_flight(), 0);
}

/// Each shard in turn has the whole vote timeout: a vote from the first
/// shard just before the round's first deadline moves the deadline on
/// (the timer re-arms when it fires), and only then is the second shard's
/// prepare sent again.
#[test]
fn each_shard_gets_the_whole_timeout() {
    let (mut c, [k1, k2, _]) = grouped_setup(512);
    let tx = transfer(10, 1, 2, 30);
    c.begin(0, tx.clone());
    c.take_commands();
    c.handle_message(900, vote(tx.id, 0, 0, vec![(k1, Some(100))]));
    c.take_commands();
    c.handle_timeout(1_000);
    assert_eq!(c.take_commands(), vec![Command::SetTimer { at_ms: 1_900 }]);
    c.handle_timeout(1_900);
    assert_eq!(
        c.take_commands(),
        vec![
            send(
                1,
                ToParticipant::Prepare {
                    tx: tx.id,
                    attempt: 0,
                    keys: vec![k2],
                }
            ),
            Command::SetTimer { at_ms: 2_900 },
        ]
    );
}

/// Room is counted in units: with one unit active at most, transactions
/// that share a key with the first are admitted with it as one group, and
/// one that shares nothing waits for room.
#[test]
fn a_group_joins_without_room() {
    let (mut c, ..) = setup_with(CoordinatorConfig {
        max_active: 1,
        ..CoordinatorConfig::default()
    });
    for id in 10..13 {
        c.begin(0, transfer(id, 1, 2, 1));
    }
    c.begin(0, transfer(13, 4, 5, 1));
    let prepared: Vec<TxId> = sent(c.take_commands())
        .filter_map(|(_, message)| match message {
            ToParticipant::Prepare { tx, .. } => Some(tx),
            _ => None,
        })
        .collect();
    assert_eq!(prepared, vec![group_id(0)], "one group, the fourth waits");
    assert_eq!(c.in_flight(), 4);
}

/// A round whose prepare is queued behind other locks is never given up
/// for waiting: each `Queued` answer gives the shard a fresh timeout and
/// resets the resends, so the round outlives what would otherwise fail it.
#[test]
fn a_queued_round_waits() {
    let (mut c, [k1, ..]) = grouped_setup(512);
    let tx = transfer(10, 1, 2, 30);
    c.begin(0, tx.clone());
    c.take_commands();
    let queued = ToCoordinator::Queued {
        tx: tx.id,
        attempt: 0,
        shard: ShardId(0),
    };
    let prepare = send(
        0,
        ToParticipant::Prepare {
            tx: tx.id,
            attempt: 0,
            keys: vec![k1, Key::sequence(AccountId(1))],
        },
    );
    c.handle_message(900, queued.clone());
    c.handle_timeout(1_000);
    assert_eq!(c.take_commands(), vec![Command::SetTimer { at_ms: 1_900 }]);
    for round in 0..5 {
        let at = 1_900 + round * 1_000;
        c.handle_timeout(at);
        assert_eq!(
            c.take_commands(),
            vec![prepare.clone(), Command::SetTimer { at_ms: at + 1_000 }],
            "resend {round}"
        );
        // Without this answer the next deadline would fail the round.
        c.handle_message(at, queued.clone());
    }
    assert_eq!(c.in_flight(), 1, "still waiting, not failed");
}

/// A coordinator that runs through the 2^32 rounds of its epoch carries
/// into the next epoch and logs it before any round of it is sent (first
/// among the batch's commands), once; its rounds keep increasing, so
/// shards never see a round number again.
#[test]
fn rounds_carry_into_a_logged_new_epoch() {
    let (c, ..) = setup_with(CoordinatorConfig {
        max_group: 1,
        ..CoordinatorConfig::default()
    });
    let mut c = c.with_epoch(3);
    c.rounds.next = (3 << 32) | 0xFFFF_FFFF;
    c.begin(0, transfer(10, 1, 2, 1));
    c.begin(0, transfer(11, 1, 2, 1));
    let commands = c.take_commands();
    assert_eq!(commands[0], Command::PersistEpoch { epoch: 4 });
    let rounds: Vec<Attempt> = sent(commands)
        .filter_map(|(_, message)| match message {
            ToParticipant::Prepare { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(rounds, vec![(3 << 32) | 0xFFFF_FFFF, 4 << 32]);
    c.begin(1, transfer(12, 1, 2, 1));
    let again = c.take_commands();
    assert!(
        !again
            .iter()
            .any(|c| matches!(c, Command::PersistEpoch { .. })),
        "logged once: {again:?}"
    );
}
