//! Rounds of user contracts: once every shard has voted, the coordinator
//! hands the members to its runtime ([`Command::Execute`]) instead of
//! running them on its own loop, and decides when the result comes back.

use super::*;
use crate::contracts::{Context, Contract};
use crate::model::{Call, ContractId};

/// A user contract moving `args[1]` coins from the sender to `args[0]`.
struct Move;

const MOVE: ContractId = ContractId(3);

impl Contract for Move {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        crate::contracts::coin::transfer(ctx, AccountId(args[0]), args[1]).map(Output::from)
    }
}

/// Accounts 1 (shard 0) and 2 (shard 1), a coordinator of `epoch` that
/// knows [`Move`], and a call of it moving 30 coins from 1 to 2.
fn setup(epoch: u32) -> (Coordinator, Arc<Registry>, Transaction, [Key; 2]) {
    let (plain, ..) = super::setup();
    let mut registry = Registry::new();
    registry.register(MOVE, "1", Arc::new(Move)).unwrap();
    let registry = Arc::new(registry);
    let coordinator = Coordinator::new(
        CoordinatorConfig::default(),
        plain.placement.clone(),
        registry.clone(),
    )
    .with_epoch(epoch);
    let mut tx = Transaction::transfer(TxId::from_u128(9), AccountId(1), AccountId(2), 30);
    tx.call = Call::Custom {
        contract: MOVE,
        args: vec![2, 30],
    };
    let key = |a| Key::balance(AccountId(a), AssetId::COIN);
    (coordinator, registry, tx, [key(1), key(2)])
}

/// Drives `tx` through both votes (balances 100 and 5) and returns the
/// execution the coordinator then asks for.
fn execution_of(c: &mut Coordinator, tx: &Transaction, [from, to]: [Key; 2]) -> Execution {
    c.begin(0, tx.clone());
    let commands = c.take_commands();
    let attempt = match &commands[0] {
        Command::Send { messages, .. } => match messages[0] {
            ToParticipant::Prepare { attempt, .. } => attempt,
            ref other => panic!("not a prepare: {other:?}"),
        },
        other => panic!("not a send: {other:?}"),
    };
    let vote = |shard, values| ToCoordinator::Prepared {
        tx: tx.id,
        attempt,
        shard: ShardId(shard),
        values,
    };
    c.handle_message(1, vote(0, vec![(from, Some(100))]));
    c.take_commands();
    c.handle_message(2, vote(1, vec![(to, Some(5))]));
    let mut commands = c.take_commands();
    assert_eq!(commands.len(), 1, "{commands:?}");
    let Some(Command::Execute(execution)) = commands.pop() else {
        panic!("no execution asked for");
    };
    assert_eq!((execution.tx, execution.attempt), (tx.id, attempt));
    execution
}

/// After the last vote the round waits for its execution: nothing is
/// decided, an inquiry gets no answer, its deadline passing aborts
/// nothing. The result commits the round as an inline run would.
#[test]
fn user_code_runs_off_the_loop_then_commits() {
    let (mut c, registry, tx, keys @ [from, to]) = setup(0);
    let execution = execution_of(&mut c, &tx, keys);
    assert_eq!(c.stats().executions, 1);
    c.handle_message(
        3,
        ToCoordinator::Inquire {
            tx: tx.id,
            attempt: 0,
            shard: ShardId(0),
        },
    );
    assert_eq!(c.take_commands(), vec![]);
    c.handle_timeout(60_000);
    assert_eq!(c.take_commands(), vec![]);
    assert_eq!(c.in_flight(), 1);

    c.executed(60_001, execution.run(&registry));
    let writes: Vec<(ShardId, Writes)> = vec![
        (ShardId(0), [(from, 70)].into()),
        (ShardId(1), [(to, 35)].into()),
    ];
    assert_eq!(
        c.take_commands(),
        vec![
            Command::PersistCommit {
                tx: tx.id,
                committed: Arc::new([(tx.id, 0.into())].into()),
                writes,
            },
            and_decided(commit(0, tx.id, vec![(from, 70)]), 1),
            and_decided(commit(1, tx.id, vec![(to, 35)]), 1),
            Command::SetTimer { at_ms: 61_001 },
        ]
    );
}

/// A result the coordinator no longer waits for changes nothing: one of
/// an earlier incarnation's round, even while the same transaction's new
/// round waits for its own, and one that comes twice.
#[test]
fn a_stale_or_repeated_execution_changes_nothing() {
    let (mut lost, registry, tx, keys) = setup(0);
    let stale = execution_of(&mut lost, &tx, keys).run(&registry);
    let (mut restarted, _, _, _) = setup(1);
    let current = execution_of(&mut restarted, &tx, keys);
    assert_eq!(current.attempt, 1 << 32);
    restarted.executed(3, stale);
    assert_eq!(restarted.take_commands(), vec![]);
    assert_eq!(restarted.stats().commits, 0);

    restarted.executed(4, current.run(&registry));
    assert!(matches!(
        restarted.take_commands()[0],
        Command::PersistCommit { .. }
    ));
    restarted.executed(5, current.run(&registry));
    assert_eq!(restarted.take_commands(), vec![]);
    assert_eq!(restarted.stats().commits, 1);
}

/// A member that fails in its execution fails alone, as inline: the round
/// aborts everywhere and the client hears the contract's error.
#[test]
fn a_failed_execution_aborts_everywhere() {
    let (mut c, registry, mut tx, keys) = setup(0);
    tx.call = Call::Custom {
        contract: MOVE,
        args: vec![2, 1_000],
    };
    let execution = execution_of(&mut c, &tx, keys);
    c.executed(3, execution.run(&registry));
    let commands = c.take_commands();
    let aborts = commands
        .iter()
        .filter(|c| matches!(c, Command::Send { messages, .. } if matches!(messages[0], ToParticipant::Abort { .. })))
        .count();
    assert_eq!(aborts, 2, "{commands:?}");
    assert!(commands.iter().any(|c| matches!(
        c,
        Command::Reply(Receipt {
            status: Status::Failed(TxError::InsufficientFunds { .. }),
            ..
        })
    )));
    assert_eq!(c.in_flight(), 0);
}
