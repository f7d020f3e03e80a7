//! A DAO treasury as a user contract: members with fixed voting weights
//! propose payments from a shared treasury, vote on them, and a proposal
//! that reaches the quorum pays out exactly once. The treasury, the
//! proposals, the members and the payee live on different shards, so every
//! vote and every payout is an atomic cross-shard transaction.
//!
//! Run with `cargo run --release --example dao_treasury`.

use std::sync::Arc;

use parashard::prelude::*;

/// The DAO contract's id.
pub const DAO: ContractId = ContractId(8);

// Fields of the DAO's account (which also holds the treasury's coins).
const QUORUM: u64 = 0;
const WEIGHT: u64 = 1 << 32;

// Fields of a proposal's account.
const RECIPIENT: u64 = 0;
const AMOUNT: u64 = 1;
const YES: u64 = 2;
const NO: u64 = 3;
const EXECUTED: u64 = 4;
const VOTED: u64 = 1 << 32;

// Operations: the first argument.
const SETUP: Value = 0;
const PROPOSE: Value = 1;
const VOTE: Value = 2;
const EXECUTE: Value = 3;

fn coins(account: AccountId) -> Key {
    Key::balance(account, AssetId::COIN)
}

/// The DAO: `setup(quorum, member, weight, ...)` once, by the DAO's own
/// account; then `propose(proposal, recipient, amount)`, `vote(proposal,
/// yes)` and `execute(proposal)`. Weights are fixed at setup, so a vote
/// cannot be counted twice by moving voting power around.
pub struct Dao;

impl Dao {
    /// Sets the DAO `dao` up with `quorum` and its members' weights.
    pub fn setup(
        id: TxId,
        dao: AccountId,
        quorum: Value,
        members: &[(AccountId, Value)],
    ) -> Transaction {
        let mut args = vec![SETUP, quorum];
        let mut writes = vec![Key::field(dao, QUORUM)];
        for &(member, weight) in members {
            args.extend([member.0, weight]);
            writes.push(Key::field(dao, WEIGHT + member.0));
        }
        Transaction::custom(id, dao, DAO, args, AccessSet::new([], writes))
    }

    /// `member` proposes that the treasury of `dao` pay `amount` coins to
    /// `recipient`, as the new proposal `proposal`.
    pub fn propose(
        id: TxId,
        member: AccountId,
        dao: AccountId,
        proposal: AccountId,
        recipient: AccountId,
        amount: Value,
    ) -> Transaction {
        let reads = [Key::field(dao, WEIGHT + member.0)];
        let writes = [RECIPIENT, AMOUNT, YES, NO, EXECUTED].map(|f| Key::field(proposal, f));
        let args = vec![PROPOSE, dao.0, proposal.0, recipient.0, amount];
        Dao::call(id, member, args, reads.to_vec(), writes.to_vec())
    }

    /// `member` votes for (`yes`) or against `proposal`.
    pub fn vote(
        id: TxId,
        member: AccountId,
        dao: AccountId,
        proposal: AccountId,
        yes: bool,
    ) -> Transaction {
        let reads = vec![Key::field(dao, WEIGHT + member.0)];
        let tally = Key::field(proposal, if yes { YES } else { NO });
        let writes = vec![tally, Key::field(proposal, VOTED + member.0)];
        let args = vec![VOTE, dao.0, proposal.0, Value::from(yes)];
        Dao::call(id, member, args, reads, writes)
    }

    /// Anyone may execute `proposal` once it has reached the quorum: the
    /// treasury pays its recipient.
    pub fn execute(
        id: TxId,
        sender: AccountId,
        dao: AccountId,
        proposal: AccountId,
        recipient: AccountId,
    ) -> Transaction {
        let mut reads = vec![Key::field(dao, QUORUM)];
        reads.extend([RECIPIENT, AMOUNT, YES, NO].map(|f| Key::field(proposal, f)));
        let writes = vec![Key::field(proposal, EXECUTED), coins(dao), coins(recipient)];
        Dao::call(id, sender, vec![EXECUTE, dao.0, proposal.0], reads, writes)
    }

    fn call(
        id: TxId,
        sender: AccountId,
        args: Vec<Value>,
        reads: Vec<Key>,
        writes: Vec<Key>,
    ) -> Transaction {
        Transaction::custom(id, sender, DAO, args, AccessSet::new(reads, writes))
    }
}

impl Contract for Dao {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let invalid = |reason: String| TxError::InvalidInput { reason };
        let sender = ctx.sender();
        // A member's weight, or an error if the sender is none.
        let weight = |ctx: &Context<'_>, dao: AccountId, action: &str| match ctx
            .read(Key::field(dao, WEIGHT + sender.0))?
        {
            Some(weight) if weight > 0 => Ok(weight),
            _ => Err(TxError::Unauthorized {
                sender,
                action: format!("{action}: not a member of {dao}"),
            }),
        };
        match args {
            [SETUP, quorum, members @ ..] if members.len() % 2 == 0 => {
                let dao = sender;
                if ctx.read(Key::field(dao, QUORUM))?.is_some() {
                    return Err(TxError::AlreadyExists {
                        key: Key::field(dao, QUORUM),
                    });
                }
                let total = members
                    .chunks(2)
                    .try_fold(0u64, |total, m| total.checked_add(m[1]));
                let total = total.ok_or(TxError::Overflow {
                    key: Key::field(dao, QUORUM),
                })?;
                if *quorum == 0 || *quorum > total {
                    return Err(invalid(format!("quorum {quorum} outside 1..={total}")));
                }
                ctx.write(Key::field(dao, QUORUM), *quorum)?;
                for member in members.chunks(2) {
                    ctx.write(Key::field(dao, WEIGHT + member[0]), member[1])?;
                }
                Ok(total.into())
            }
            &[PROPOSE, dao, proposal, recipient, amount] => {
                let (dao, proposal) = (AccountId(dao), AccountId(proposal));
                weight(ctx, dao, "propose")?;
                if ctx.read(Key::field(proposal, AMOUNT))?.is_some() {
                    return Err(TxError::AlreadyExists {
                        key: Key::field(proposal, AMOUNT),
                    });
                }
                ctx.write(Key::field(proposal, RECIPIENT), recipient)?;
                ctx.write(Key::field(proposal, AMOUNT), amount)?;
                for tally in [YES, NO, EXECUTED] {
                    ctx.write(Key::field(proposal, tally), 0)?;
                }
                Ok(amount.into())
            }
            &[VOTE, dao, proposal, yes] if yes <= 1 => {
                let (dao, proposal) = (AccountId(dao), AccountId(proposal));
                let weight = weight(ctx, dao, "vote")?;
                let voted = Key::field(proposal, VOTED + sender.0);
                if ctx.read(voted)?.is_some() {
                    return Err(TxError::AlreadyExists { key: voted });
                }
                let tally = Key::field(proposal, if yes == 1 { YES } else { NO });
                // Missing tally: the proposal does not exist.
                let before = ctx.read(tally)?.ok_or(TxError::NotFound { key: tally })?;
                let after = before
                    .checked_add(weight)
                    .ok_or(TxError::Overflow { key: tally })?;
                ctx.write(tally, after)?;
                ctx.write(voted, 1)?;
                Ok(after.into())
            }
            &[EXECUTE, dao, proposal] => {
                let (dao, proposal) = (AccountId(dao), AccountId(proposal));
                let executed = Key::field(proposal, EXECUTED);
                match ctx.read(executed)? {
                    None => return Err(TxError::NotFound { key: executed }),
                    Some(0) => {}
                    Some(_) => return Err(invalid(format!("{proposal} was executed already"))),
                }
                let quorum = ctx.balance(Key::field(dao, QUORUM))?;
                let (yes, no) = (
                    ctx.balance(Key::field(proposal, YES))?,
                    ctx.balance(Key::field(proposal, NO))?,
                );
                if yes < quorum || yes <= no {
                    return Err(invalid(format!(
                        "{proposal} has {yes} yes and {no} no, needs {quorum} yes and a majority"
                    )));
                }
                let recipient = AccountId(ctx.balance(Key::field(proposal, RECIPIENT))?);
                let amount = ctx.balance(Key::field(proposal, AMOUNT))?;
                ctx.debit(coins(dao), amount)?;
                ctx.credit(coins(recipient), amount)?;
                ctx.write(executed, 1)?;
                Ok(amount.into())
            }
            _ => Err(invalid("dao: unknown operation or wrong arguments".into())),
        }
    }
}

/// Runs the DAO on a fresh cluster and checks its invariants: a proposal
/// pays once and only with a quorum, a member votes once, non-members
/// cannot vote, and coins are conserved.
pub fn run() -> Result<(), ClusterError> {
    let dao = AccountId(10);
    let (alice, bob, carol, dave) = (AccountId(1), AccountId(2), AccountId(3), AccountId(4));
    let (grant, too_big) = (AccountId(20), AccountId(21));
    let cluster = Cluster::builder()
        .shards(4)
        .workers(1)
        .place(dao, ShardId(0))
        .place(alice, ShardId(1))
        .place(bob, ShardId(2))
        .place(carol, ShardId(3))
        .place(dave, ShardId(3))
        .place(grant, ShardId(2))
        .place(too_big, ShardId(1))
        .contract(DAO, "dao-1", Arc::new(Dao))?
        .start()?;
    let genesis = [
        (dao, 10_000),
        (alice, 100),
        (bob, 100),
        (carol, 100),
        (dave, 0),
    ];
    cluster.create_accounts_blocking(&genesis)?;
    let total: Value = genesis.iter().map(|(_, coins)| coins).sum();
    let id = TxId::random;

    let show = |what: &str, receipts: &[Receipt]| {
        for receipt in receipts {
            println!("{what}: {}", receipt.status);
        }
    };
    let expect = |what: &str, receipts: &[Receipt], committed: &[bool]| {
        show(what, receipts);
        let got: Vec<bool> = receipts.iter().map(Receipt::is_committed).collect();
        assert_eq!(got, committed, "{what}: {receipts:?}");
    };

    // Three members with weights 40, 35 and 25; a payout needs 50 yes.
    let members = [(alice, 40), (bob, 35), (carol, 25)];
    let setup = cluster.submit_blocking(Dao::setup(id(), dao, 50, &members))?;
    expect("setup", &[setup], &[true]);

    // Alice proposes a grant of 3,000 coins to Dave, and one of 50,000
    // (more than the treasury holds). Dave, no member, cannot propose.
    let proposed = cluster.submit_batch_blocking(vec![
        Dao::propose(id(), alice, dao, grant, dave, 3_000),
        Dao::propose(id(), alice, dao, too_big, dave, 50_000),
        Dao::propose(id(), dave, dao, AccountId(22), dave, 1),
    ])?;
    expect(
        "propose, propose, propose by a non-member",
        &proposed,
        &[true, true, false],
    );

    // Alice votes yes: 40 is short of the quorum, so execution fails.
    let voted = cluster.submit_blocking(Dao::vote(id(), alice, dao, grant, true))?;
    let early = cluster.submit_blocking(Dao::execute(id(), dave, dao, grant, dave))?;
    expect("alice votes yes, execute", &[voted, early], &[true, false]);

    // Alice votes again, Dave tries to vote, Bob votes yes, Carol no.
    let votes = cluster.submit_batch_blocking(vec![
        Dao::vote(id(), alice, dao, grant, true),
        Dao::vote(id(), dave, dao, grant, true),
        Dao::vote(id(), bob, dao, grant, true),
        Dao::vote(id(), carol, dao, grant, false),
    ])?;
    expect(
        "alice again, dave, bob yes, carol no",
        &votes,
        &[false, false, true, true],
    );

    // Two executions race in one batch: exactly one pays.
    let race = cluster.submit_batch_blocking(vec![
        Dao::execute(id(), dave, dao, grant, dave),
        Dao::execute(id(), carol, dao, grant, dave),
    ])?;
    show("two executions race", &race);
    assert_eq!(
        race.iter().filter(|r| r.is_committed()).count(),
        1,
        "{race:?}"
    );

    // The oversized grant passes the vote but the treasury cannot pay it:
    // the execution fails whole, and the proposal stays open.
    let votes = cluster.submit_batch_blocking(vec![
        Dao::vote(id(), alice, dao, too_big, true),
        Dao::vote(id(), bob, dao, too_big, true),
    ])?;
    let unpaid = cluster.submit_blocking(Dao::execute(id(), dave, dao, too_big, dave))?;
    expect("votes for the oversized grant", &votes, &[true, true]);
    expect(
        "execute the oversized grant",
        std::slice::from_ref(&unpaid),
        &[false],
    );
    assert!(
        matches!(unpaid.error(), Some(TxError::InsufficientFunds { .. })),
        "{unpaid:?}"
    );

    let tally_keys = [YES, NO, EXECUTED].map(|f| Key::field(grant, f));
    let tally = cluster.get_many_blocking(&tally_keys)?;
    println!(
        "grant: yes {:?}, no {:?}, executed {:?}",
        tally[0], tally[1], tally[2]
    );
    assert_eq!(tally, vec![Some(75), Some(25), Some(1)]);
    // Everyone's coins in one read: the treasury paid the grant once.
    let accounts = [dao, alice, bob, carol, dave];
    let balances = cluster.get_many_blocking(&accounts.map(coins))?;
    println!("coins of dao, alice, bob, carol, dave: {balances:?}");
    assert_eq!((balances[0], balances[4]), (Some(7_000), Some(3_000)));
    let sum: Value = balances.iter().flatten().sum();
    println!("coins total {sum} (genesis {total}): conserved");
    assert_eq!(sum, total, "coins must add up");
    cluster.shutdown();
    Ok(())
}

#[allow(dead_code)] // the integration tests include this file for `run`
fn main() -> Result<(), ClusterError> {
    run()
}
