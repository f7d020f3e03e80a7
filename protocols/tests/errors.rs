//! Every `TxError` a block can produce, with its exact fields, and the
//! executor errors. Each block runs on the sequential executor and on a
//! 2-worker parallel executor (padded with independent transfers so it
//! takes the parallel path), and a failing transaction must change nothing:
//! the block gives the same state and other receipts as the block without
//! it. (`CrossShardAborted` comes from two-phase commit, tested there.)

mod common;

use common::{
    counter_access, mover_access, sneaky_access, sneaky_target, BURNER, COUNTER, MOVER, PANICKER,
    PANIC_MARK, SNEAKY, SPINNER, UNREGISTERED,
};
use parashard_protocols::contracts::amm::ASSET_A;
use parashard_protocols::contracts::gas;
use parashard_protocols::contracts::token::issuer_key;
use parashard_protocols::model::{Limit, MAX_ACCESS_KEYS, MAX_ARGS};
use parashard_protocols::state::PARTITIONS;
use parashard_protocols::workload::TxIds;
use parashard_protocols::{
    AccessSet, AccountId, AssetId, BlockExecutor, Call, ContractId, ExecutorError, Key,
    ParallelExecutor, Receipt, SequentialExecutor, State, Status, Transaction, TxError, TxId,
    Value,
};

const ALICE: AccountId = AccountId(1);
const BOB: AccountId = AccountId(2);
const CAROL: AccountId = AccountId(3);
/// Holds `u64::MAX - 10` coins and tokens.
const WHALE: AccountId = AccountId(4);
const ISSUER: AccountId = AccountId(5);
/// Does not exist.
const NOBODY: AccountId = AccountId(6);
/// Does not exist either.
const NOONE: AccountId = AccountId(7);
/// A coin/T1 pool holding 1 000 000 of each.
const POOL: AccountId = AccountId(100);
/// Not a pool.
const NO_POOL: AccountId = AccountId(101);
const T1: AssetId = AssetId(1);
const UNKNOWN_ASSET: AssetId = AssetId(9);

/// Independent transfers appended to every block: enough to reach the
/// parallel executor's minimum block size, without conflicts.
const PAD_TXS: u64 = 600;
const PAD_BASE: u64 = 1 << 45;

fn coins(account: AccountId) -> Key {
    Key::balance(account, AssetId::COIN)
}

fn t1(account: AccountId) -> Key {
    Key::balance(account, T1)
}

/// The state every test starts from.
fn genesis() -> State {
    let mut state = State::new();
    for (account, balance) in [
        (ALICE, 1_000),
        (BOB, 2_000),
        (CAROL, 3_000),
        (WHALE, Value::MAX - 10),
        (ISSUER, 1 << 40),
    ] {
        state.set(coins(account), balance);
    }
    state.set(issuer_key(T1), ISSUER.0);
    state.set(t1(ALICE), 500);
    state.set(t1(WHALE), Value::MAX - 10);
    state.set(t1(ISSUER), 1 << 40);
    for a in 0..2 * PAD_TXS {
        state.set(coins(AccountId(PAD_BASE + a)), 100);
    }
    let mut ids = TxIds::starting_at(1 << 100);
    let setup = [
        Transaction::create_pool(ids.next_id(), ISSUER, POOL, AssetId::COIN, T1, 30),
        Transaction::add_liquidity(
            ids.next_id(),
            ISSUER,
            POOL,
            AssetId::COIN,
            T1,
            1_000_000,
            1_000_000,
        ),
    ];
    let receipts = SequentialExecutor::new(common::registry())
        .execute_block(&mut state, &setup)
        .expect("small block");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
    state
}

fn padding() -> Vec<Transaction> {
    let mut ids = TxIds::starting_at(1 << 101);
    (0..PAD_TXS)
        .map(|k| {
            let from = AccountId(PAD_BASE + 2 * k);
            let to = AccountId(PAD_BASE + 2 * k + 1);
            Transaction::transfer(ids.next_id(), from, to, 1)
        })
        .collect()
}

/// Runs `block` plus padding on genesis, on both executors, and checks that
/// exactly the transactions `failures` names fail, with exactly the errors
/// given; that every other one commits; and that the state and the other
/// receipts equal those of the block without the failing transactions.
/// Returns the receipts of `block` and the final state.
fn assert_only_these_fail(
    block: &[Transaction],
    failures: &[(usize, TxError)],
) -> (Vec<Receipt>, State) {
    common::quiet_test_panics();
    let registry = common::registry();
    let sequential = SequentialExecutor::new(registry.clone());
    let parallel = ParallelExecutor::new(2, registry)
        .expect("2 workers")
        .adaptive(false);
    let full: Vec<Transaction> = block.iter().cloned().chain(padding()).collect();
    let failing = |i: usize| failures.iter().any(|(f, _)| *f == i);
    let without: Vec<Transaction> = full
        .iter()
        .enumerate()
        .filter(|(i, _)| !failing(*i))
        .map(|(_, tx)| tx.clone())
        .collect();
    let mut results = Vec::new();
    for (name, executor) in [
        ("sequential", &sequential as &dyn BlockExecutor),
        ("parallel", &parallel),
    ] {
        let mut state = genesis();
        let receipts = executor.execute_block(&mut state, &full).expect("valid");
        assert_eq!(receipts.len(), full.len(), "{name}");
        for (i, error) in failures {
            let expected = Receipt {
                tx_id: full[*i].id,
                status: Status::Failed(error.clone()),
            };
            assert_eq!(receipts[*i], expected, "{name}: transaction {i}");
        }
        let others: Vec<Receipt> = receipts
            .iter()
            .enumerate()
            .filter(|(i, _)| !failing(*i))
            .map(|(_, receipt)| receipt.clone())
            .collect();
        if let Some(receipt) = others.iter().find(|r| !r.is_committed()) {
            panic!("{name}: an innocent transaction failed: {receipt:?}");
        }
        let mut clean = genesis();
        let clean_receipts = executor.execute_block(&mut clean, &without).expect("valid");
        assert_eq!(others, clean_receipts, "{name}: other receipts changed");
        assert_eq!(state, clean, "{name}: failing transactions changed state");
        results.push((receipts, state));
    }
    let (parallel_receipts, parallel_state) = results.pop().expect("two runs");
    let (sequential_receipts, sequential_state) = results.pop().expect("two runs");
    assert_eq!(parallel_receipts, sequential_receipts);
    assert_eq!(parallel_state, sequential_state);
    let stats = parallel.stats();
    assert_eq!(
        (stats.parallel_blocks, stats.sequential_blocks),
        (2, 0),
        "both blocks took the parallel path"
    );
    let mut receipts = parallel_receipts;
    receipts.truncate(block.len());
    (receipts, parallel_state)
}

/// Deterministic ids for a test's own transactions.
fn ids() -> TxIds {
    TxIds::default()
}

fn output(receipt: &Receipt) -> Value {
    match &receipt.status {
        Status::Committed { output } => output.value(),
        _ => panic!("not committed: {receipt:?}"),
    }
}

/// Proves a debit beyond the balance fails with the debited key, the amount
/// needed and the balance available at that point of the block, for coins
/// and tokens, while transfers around it commit.
#[test]
fn insufficient_funds_names_key_needed_and_available() {
    let mut ids = ids();
    let block = [
        Transaction::transfer(ids.next_id(), ALICE, BOB, 100),
        Transaction::transfer(ids.next_id(), ALICE, BOB, 901),
        Transaction::transfer(ids.next_id(), ALICE, BOB, 900),
        Transaction::token_transfer(ids.next_id(), ALICE, T1, BOB, 501),
        Transaction::token_transfer(ids.next_id(), ALICE, T1, BOB, 500),
    ];
    let (_, state) = assert_only_these_fail(
        &block,
        &[
            (
                1,
                TxError::InsufficientFunds {
                    key: coins(ALICE),
                    needed: 901,
                    available: 900,
                },
            ),
            (
                3,
                TxError::InsufficientFunds {
                    key: t1(ALICE),
                    needed: 501,
                    available: 500,
                },
            ),
        ],
    );
    assert_eq!(state.get(&coins(ALICE)), Some(0));
    assert_eq!(state.get(&coins(BOB)), Some(3_000));
    assert_eq!(state.get(&t1(BOB)), Some(500));
}

/// Proves calls naming an account that does not exist fail with that
/// account, whether it sends or receives, natively or in user code, and
/// that no key of it is created.
#[test]
fn unknown_account_names_the_missing_account() {
    let mut ids = ids();
    let block = [
        Transaction::transfer(ids.next_id(), ALICE, BOB, 1),
        Transaction::transfer(ids.next_id(), NOBODY, ALICE, 1),
        Transaction::transfer(ids.next_id(), ALICE, NOONE, 1),
        Transaction::custom(
            ids.next_id(),
            BOB,
            MOVER,
            vec![NOBODY.0, 1],
            mover_access(BOB, NOBODY),
        ),
    ];
    let (_, state) = assert_only_these_fail(
        &block,
        &[
            (1, TxError::UnknownAccount { account: NOBODY }),
            (2, TxError::UnknownAccount { account: NOONE }),
            (3, TxError::UnknownAccount { account: NOBODY }),
        ],
    );
    assert_eq!(state.get(&coins(NOBODY)), None);
    assert_eq!(state.get(&coins(NOONE)), None);
}

/// Proves calls on an asset or a pool that does not exist fail with
/// NotFound naming the missing key.
#[test]
fn not_found_names_the_missing_asset_or_pool() {
    let mut ids = ids();
    let block = [
        Transaction::mint(ids.next_id(), ISSUER, T1, ALICE, 5),
        Transaction::mint(ids.next_id(), ISSUER, UNKNOWN_ASSET, ALICE, 5),
        Transaction::swap(ids.next_id(), ALICE, NO_POOL, AssetId::COIN, T1, 10, 0),
        Transaction::add_liquidity(ids.next_id(), ALICE, NO_POOL, AssetId::COIN, T1, 10, 10),
    ];
    let missing_pool = TxError::NotFound {
        key: Key::field(NO_POOL, ASSET_A),
    };
    assert_only_these_fail(
        &block,
        &[
            (
                1,
                TxError::NotFound {
                    key: issuer_key(UNKNOWN_ASSET),
                },
            ),
            (2, missing_pool.clone()),
            (3, missing_pool),
        ],
    );
}

/// Proves creating an account, asset or pool that exists fails with
/// AlreadyExists naming the key, including an account created earlier in
/// the same block (a key that did not exist when the block started).
#[test]
fn already_exists_names_the_existing_key() {
    let mut ids = ids();
    let newbie = AccountId(42);
    let block = [
        Transaction::create_account(ids.next_id(), newbie, 7),
        Transaction::create_account(ids.next_id(), newbie, 9),
        Transaction::create_account(ids.next_id(), ALICE, 1),
        Transaction::create_asset(ids.next_id(), CAROL, T1),
        Transaction::create_pool(ids.next_id(), CAROL, POOL, T1, AssetId::COIN, 5),
        Transaction::transfer(ids.next_id(), newbie, ALICE, 7),
    ];
    let (_, state) = assert_only_these_fail(
        &block,
        &[
            (1, TxError::AlreadyExists { key: coins(newbie) }),
            (2, TxError::AlreadyExists { key: coins(ALICE) }),
            (
                3,
                TxError::AlreadyExists {
                    key: issuer_key(T1),
                },
            ),
            (
                4,
                TxError::AlreadyExists {
                    key: Key::field(POOL, ASSET_A),
                },
            ),
        ],
    );
    assert_eq!(state.get(&coins(newbie)), Some(0));
    assert_eq!(state.get(&coins(ALICE)), Some(1_007));
    assert_eq!(state.get(&issuer_key(T1)), Some(ISSUER.0));
}

/// Proves a credit past u64::MAX fails with Overflow naming the credited
/// key, for transfers, token transfers and mints, right after a credit that
/// reaches u64::MAX exactly commits.
#[test]
fn overflow_names_the_credited_key() {
    let mut ids = ids();
    let block = [
        Transaction::transfer(ids.next_id(), ALICE, WHALE, 10),
        Transaction::transfer(ids.next_id(), BOB, WHALE, 1),
        Transaction::mint(ids.next_id(), ISSUER, T1, WHALE, 11),
        Transaction::token_transfer(ids.next_id(), ALICE, T1, WHALE, 10),
        Transaction::token_transfer(ids.next_id(), ALICE, T1, WHALE, 1),
    ];
    let (_, state) = assert_only_these_fail(
        &block,
        &[
            (1, TxError::Overflow { key: coins(WHALE) }),
            (2, TxError::Overflow { key: t1(WHALE) }),
            (4, TxError::Overflow { key: t1(WHALE) }),
        ],
    );
    assert_eq!(state.get(&coins(WHALE)), Some(Value::MAX));
    assert_eq!(state.get(&t1(WHALE)), Some(Value::MAX));
    assert_eq!(state.get(&coins(BOB)), Some(2_000));
}

/// Proves reading a key outside the declared access set fails with
/// AccessViolation { write: false } naming the key, in user code and in a
/// native transfer whose access set leaves out the recipient.
#[test]
fn access_violation_on_undeclared_read() {
    let mut ids = ids();
    let stripped = Transaction::new(
        ids.next_id(),
        ALICE,
        Call::Transfer { to: BOB, amount: 1 },
        AccessSet::new([], [coins(ALICE)]),
    );
    let block = [
        Transaction::custom(ids.next_id(), ALICE, SNEAKY, vec![0], sneaky_access(ALICE)),
        stripped,
        Transaction::transfer(ids.next_id(), ALICE, BOB, 1),
    ];
    assert_only_these_fail(
        &block,
        &[
            (
                0,
                TxError::AccessViolation {
                    key: sneaky_target(ALICE),
                    write: false,
                },
            ),
            (
                1,
                TxError::AccessViolation {
                    key: coins(BOB),
                    write: false,
                },
            ),
        ],
    );
}

/// Proves writing a key declared read-only, or not declared at all, fails
/// with AccessViolation { write: true } naming the key, in user code and in
/// a native transfer that declared both balances as reads; the credit each
/// made before the violation is discarded.
#[test]
fn access_violation_on_write_outside_the_write_set() {
    let mut ids = ids();
    let read_only = Transaction::new(
        ids.next_id(),
        ALICE,
        Call::Transfer { to: BOB, amount: 1 },
        AccessSet::new([coins(ALICE), coins(BOB)], []),
    );
    let block = [
        Transaction::custom(ids.next_id(), ALICE, SNEAKY, vec![1], sneaky_access(ALICE)),
        Transaction::custom(ids.next_id(), BOB, SNEAKY, vec![2], sneaky_access(BOB)),
        read_only,
        Transaction::custom(ids.next_id(), ALICE, COUNTER, vec![], counter_access(ALICE)),
    ];
    let (receipts, state) = assert_only_these_fail(
        &block,
        &[
            (
                0,
                TxError::AccessViolation {
                    key: common::counter_key(ALICE),
                    write: true,
                },
            ),
            (
                1,
                TxError::AccessViolation {
                    key: sneaky_target(BOB),
                    write: true,
                },
            ),
            (
                2,
                TxError::AccessViolation {
                    key: coins(ALICE),
                    write: true,
                },
            ),
        ],
    );
    assert_eq!(output(&receipts[3]), 1, "the counter started from zero");
    assert_eq!(state.get(&coins(ALICE)), Some(1_000));
    assert_eq!(state.get(&sneaky_target(BOB)), None);
}

/// Proves an account may not create another account or mint an asset it
/// did not issue: Unauthorized names the sender and the action.
#[test]
fn unauthorized_names_sender_and_action() {
    let mut ids = ids();
    let mut for_someone_else = Transaction::create_account(ids.next_id(), AccountId(42), 1);
    for_someone_else.sender = ALICE;
    let block = [
        for_someone_else,
        Transaction::mint(ids.next_id(), BOB, T1, BOB, 1_000),
        Transaction::mint(ids.next_id(), ISSUER, T1, BOB, 1_000),
    ];
    let (_, state) = assert_only_these_fail(
        &block,
        &[
            (
                0,
                TxError::Unauthorized {
                    sender: ALICE,
                    action: "create account 42".into(),
                },
            ),
            (
                1,
                TxError::Unauthorized {
                    sender: BOB,
                    action: "mint asset 1".into(),
                },
            ),
        ],
    );
    assert_eq!(state.get(&coins(AccountId(42))), None);
    assert_eq!(state.get(&t1(BOB)), Some(1_000));
}

/// Proves a swap paying less than its guard fails with SlippageExceeded
/// giving the guard and the amount it would have paid (computed by hand:
/// 100 in against 1 000 000 / 1 000 000 at 30 bps pays 99), and that a
/// swap paying nothing fails even with a zero guard.
#[test]
fn slippage_exceeded_reports_guard_and_amount_out() {
    let mut ids = ids();
    let swap = |ids: &mut TxIds, amount_in, min_out| {
        Transaction::swap(
            ids.next_id(),
            ALICE,
            POOL,
            AssetId::COIN,
            T1,
            amount_in,
            min_out,
        )
    };
    let block = [
        swap(&mut ids, 100, 100),
        swap(&mut ids, 100, 99),
        swap(&mut ids, 100, 100),
        swap(&mut ids, 1, 0),
    ];
    let (receipts, state) = assert_only_these_fail(
        &block,
        &[
            (
                0,
                TxError::SlippageExceeded {
                    min_out: 100,
                    amount_out: 99,
                },
            ),
            (
                2,
                TxError::SlippageExceeded {
                    min_out: 100,
                    amount_out: 99,
                },
            ),
            (
                3,
                TxError::SlippageExceeded {
                    min_out: 0,
                    amount_out: 0,
                },
            ),
        ],
    );
    assert_eq!(output(&receipts[1]), 99);
    assert_eq!(state.get(&coins(POOL)), Some(1_000_100));
    assert_eq!(state.get(&t1(POOL)), Some(999_901));
    assert_eq!(state.get(&t1(ALICE)), Some(599));
}

/// Proves calling a contract id nobody registered fails with
/// UnknownContract naming the id.
#[test]
fn unknown_contract_names_the_id() {
    let mut ids = ids();
    let block = [
        Transaction::custom(
            ids.next_id(),
            ALICE,
            UNREGISTERED,
            vec![],
            counter_access(ALICE),
        ),
        Transaction::custom(ids.next_id(), ALICE, COUNTER, vec![], counter_access(ALICE)),
    ];
    assert_only_these_fail(
        &block,
        &[(
            0,
            TxError::UnknownContract {
                contract: ContractId(99),
            },
        )],
    );
}

/// Proves a panicking contract gets ContractPanicked with its message, for
/// `&str` and `String` payloads, its credit before the panic is discarded,
/// and the contracts around it run normally.
#[test]
fn contract_panic_becomes_a_receipt() {
    let mut ids = ids();
    let counter = |ids: &mut TxIds| {
        Transaction::custom(ids.next_id(), ALICE, COUNTER, vec![], counter_access(ALICE))
    };
    let block = [
        counter(&mut ids),
        Transaction::custom(
            ids.next_id(),
            ALICE,
            PANICKER,
            vec![0],
            sneaky_access(ALICE),
        ),
        Transaction::custom(ids.next_id(), BOB, PANICKER, vec![1], sneaky_access(BOB)),
        counter(&mut ids),
    ];
    let string_panic = format!("{PANIC_MARK} tx {}", block[2].id.0);
    let (receipts, state) = assert_only_these_fail(
        &block,
        &[
            (
                1,
                TxError::ContractPanicked {
                    message: PANIC_MARK.into(),
                },
            ),
            (
                2,
                TxError::ContractPanicked {
                    message: string_panic,
                },
            ),
        ],
    );
    assert_eq!(output(&receipts[0]), 1);
    assert_eq!(output(&receipts[3]), 2);
    assert_eq!(state.get(&coins(ALICE)), Some(1_000));
    assert_eq!(state.get(&coins(BOB)), Some(2_000));
}

/// A counter call declaring `extra` more keys than it needs.
fn counter_with_keys(id: TxId, extra: u64) -> Transaction {
    let mut access = counter_access(ALICE);
    access
        .reads
        .extend((0..extra).map(|k| coins(AccountId(1_000 + k))));
    Transaction::custom(id, ALICE, COUNTER, vec![], access)
}

/// Proves gas bounds are exact and a call out of gas writes nothing: a
/// call that spins until its gas runs out (and then swallows the error and
/// returns `Ok`) fails with OutOfGas; a counter, a counter that charges
/// for its own work, a native transfer and a transfer written as user
/// code each commit with exactly the gas they need and fail with one unit
/// less; a limit above `gas::MAX_LIMIT` is refused before the call runs;
/// and the transactions around them are untouched.
#[test]
fn out_of_gas_is_exact_and_writes_nothing() {
    let mut ids = ids();
    let counter = |id, contract, args: Vec<Value>, sender, limit| {
        Transaction::custom(id, sender, contract, args, counter_access(sender))
            .with_gas_limit(limit)
    };
    let counter_gas = gas::BASE + gas::READ + gas::WRITE;
    // Mover checks both accounts, then debits and credits.
    let mover_gas = gas::BASE + 4 * gas::READ + 2 * gas::WRITE;
    let mover = |id, limit| {
        Transaction::custom(id, CAROL, MOVER, vec![BOB.0, 5], mover_access(CAROL, BOB))
            .with_gas_limit(limit)
    };
    let block = [
        Transaction::custom(ids.next_id(), CAROL, SPINNER, vec![], counter_access(CAROL)),
        counter(ids.next_id(), COUNTER, vec![], ALICE, counter_gas),
        counter(ids.next_id(), COUNTER, vec![], ALICE, counter_gas - 1),
        counter(ids.next_id(), BURNER, vec![500], BOB, counter_gas + 500),
        counter(ids.next_id(), BURNER, vec![500], BOB, counter_gas + 499),
        counter(ids.next_id(), BURNER, vec![u64::MAX], BOB, gas::MAX_LIMIT),
        Transaction::transfer(ids.next_id(), ALICE, BOB, 7).with_gas_limit(gas::TRANSFER),
        Transaction::transfer(ids.next_id(), ALICE, BOB, 7).with_gas_limit(gas::TRANSFER - 1),
        mover(ids.next_id(), mover_gas),
        mover(ids.next_id(), mover_gas - 1),
        Transaction::transfer(ids.next_id(), ALICE, BOB, 7).with_gas_limit(0),
        // Above the highest limit: refused before it runs, fast path or not.
        Transaction::transfer(ids.next_id(), ALICE, BOB, 7).with_gas_limit(gas::MAX_LIMIT + 1),
        counter(ids.next_id(), COUNTER, vec![], ALICE, u64::MAX),
    ];
    let out = |limit| TxError::OutOfGas { limit };
    let over_max = |size| TxError::TooLarge {
        what: Limit::Gas,
        size,
        max: gas::MAX_LIMIT,
    };
    let (receipts, state) = assert_only_these_fail(
        &block,
        &[
            (0, out(gas::DEFAULT_LIMIT)),
            (2, out(counter_gas - 1)),
            (4, out(counter_gas + 499)),
            (5, out(gas::MAX_LIMIT)),
            (7, out(gas::TRANSFER - 1)),
            (9, out(mover_gas - 1)),
            (10, out(0)),
            (11, over_max(gas::MAX_LIMIT + 1)),
            (12, over_max(u64::MAX)),
        ],
    );
    assert_eq!(output(&receipts[1]), 1);
    assert_eq!(output(&receipts[3]), 1);
    assert_eq!(state.get(&common::counter_key(CAROL)), None);
    assert_eq!(state.get(&coins(ALICE)), Some(1_000 - 7));
    assert_eq!(state.get(&coins(CAROL)), Some(3_000 - 5));
}

/// Proves a user call's arguments are bounded: MAX_ARGS words run, one
/// more fails with TooLarge naming the limit.
#[test]
fn too_large_for_too_many_args() {
    let mut ids = ids();
    let call = |id, words: usize| {
        Transaction::custom(id, ALICE, COUNTER, vec![0; words], counter_access(ALICE))
    };
    let block = [
        call(ids.next_id(), MAX_ARGS),
        call(ids.next_id(), MAX_ARGS + 1),
    ];
    let (receipts, _) = assert_only_these_fail(
        &block,
        &[(
            1,
            TxError::TooLarge {
                what: Limit::Args,
                size: MAX_ARGS as u64 + 1,
                max: MAX_ARGS as u64,
            },
        )],
    );
    assert_eq!(output(&receipts[0]), 1);
}

/// Proves the access-set bound is exact: a call declaring 64 keys runs, one
/// declaring 65 fails with TooLarge saying how many it declared.
#[test]
fn too_large_for_too_many_keys() {
    let mut ids = ids();
    let max = MAX_ACCESS_KEYS as u64;
    let block = [
        counter_with_keys(ids.next_id(), max),
        counter_with_keys(ids.next_id(), max - 1),
        counter_with_keys(ids.next_id(), 3 * max),
    ];
    let (receipts, _) = assert_only_these_fail(
        &block,
        &[
            (
                0,
                TxError::TooLarge {
                    what: Limit::AccessKeys,
                    size: 65,
                    max,
                },
            ),
            (
                2,
                TxError::TooLarge {
                    what: Limit::AccessKeys,
                    size: 193,
                    max,
                },
            ),
        ],
    );
    assert_eq!(output(&receipts[1]), 1);
}

/// Proves an access set naming a key twice (as read and write, or twice as
/// write) fails with InvalidInput naming the key.
#[test]
fn invalid_input_for_duplicate_key() {
    let mut ids = ids();
    let mut read_and_write = Transaction::transfer(ids.next_id(), ALICE, BOB, 1);
    read_and_write.access.reads.push(coins(ALICE));
    let mut written_twice = Transaction::transfer(ids.next_id(), CAROL, BOB, 1);
    written_twice.access.writes.push(coins(BOB));
    let block = [
        read_and_write,
        written_twice,
        Transaction::transfer(ids.next_id(), ALICE, BOB, 1),
    ];
    assert_only_these_fail(
        &block,
        &[
            (
                0,
                TxError::InvalidInput {
                    reason: "access set declares coin balance of account 1 twice".into(),
                },
            ),
            (
                1,
                TxError::InvalidInput {
                    reason: "access set declares coin balance of account 2 twice".into(),
                },
            ),
        ],
    );
}

/// Proves malformed native calls (a pool of one asset, a fee of 100%, a
/// swap or deposit of zero, the coin used as a token, minting pool shares)
/// fail with InvalidInput and the reason.
#[test]
fn invalid_input_for_malformed_calls() {
    let mut ids = ids();
    let new_pool = AccountId(102);
    let lp = AssetId::lp_shares(POOL);
    let block = [
        Transaction::create_pool(ids.next_id(), ALICE, new_pool, T1, T1, 30),
        Transaction::create_pool(ids.next_id(), ALICE, new_pool, AssetId::COIN, T1, 10_000),
        Transaction::swap(ids.next_id(), ALICE, POOL, AssetId::COIN, T1, 0, 0),
        Transaction::add_liquidity(ids.next_id(), ALICE, POOL, AssetId::COIN, T1, 0, 10),
        Transaction::token_transfer(ids.next_id(), ALICE, AssetId::COIN, BOB, 1),
        Transaction::mint(ids.next_id(), ISSUER, lp, ALICE, 1),
        Transaction::create_pool(ids.next_id(), ALICE, new_pool, AssetId::COIN, T1, 9_999),
    ];
    let invalid = |reason: &str| TxError::InvalidInput {
        reason: reason.into(),
    };
    assert_only_these_fail(
        &block,
        &[
            (0, invalid("pool pair names asset 1 twice")),
            (1, invalid("fee of 10000 bps must be below 10000")),
            (2, invalid("swap of zero")),
            (3, invalid("liquidity needs both assets")),
            (4, invalid("the coin is not a token: use Transfer")),
            (
                5,
                invalid(&format!(
                    "asset {} is a pool share, issued only by its pool",
                    (1u64 << 62) | 100
                )),
            ),
        ],
    );
}

/// Proves a parallel executor needs between 1 and PARTITIONS workers and
/// says how many it was given otherwise.
#[test]
fn parallel_executor_rejects_bad_worker_counts() {
    let registry = common::registry();
    for workers in [0, PARTITIONS + 1, usize::MAX] {
        let error = ParallelExecutor::new(workers, registry.clone()).map(|e| e.workers());
        assert_eq!(error, Err(ExecutorError::NoWorkers { workers }));
    }
    for workers in [1, PARTITIONS] {
        let executor = ParallelExecutor::new(workers, registry.clone()).expect("valid count");
        assert_eq!(executor.workers(), workers);
    }
}

/// Proves both executors accept an empty block and leave the state alone.
/// (BlockTooLarge itself is checked at the limit by a unit test in
/// `exec/mod.rs`, since a block over it would need gigabytes.)
#[test]
fn empty_block_gives_no_receipts() {
    let registry = common::registry();
    let parallel = ParallelExecutor::new(2, registry.clone()).expect("2 workers");
    let sequential = SequentialExecutor::new(registry);
    for executor in [&sequential as &dyn BlockExecutor, &parallel] {
        let mut state = genesis();
        assert_eq!(executor.execute_block(&mut state, &[]), Ok(vec![]));
        assert_eq!(state, genesis());
    }
}
