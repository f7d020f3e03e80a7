//! Property tests of the executors: the parallel executor gives exactly the
//! sequential executor's state and receipts, and blocks conserve value.
//!
//! Each case is a seed plus the shapes of 1 to 3 blocks; every transaction
//! and the genesis state derive from the seed (see `common::Case::build`),
//! so a failure message names the seed and the case replays exactly. To
//! keep a failure as a regression test, paste the printed minimal `Case`
//! into a test that calls `check_equivalence` or `check_conservation`;
//! proptest also persists it under `proptest-regressions/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BlockSpec, Case, Mix};
use parashard_protocols::{
    AssetId, BlockExecutor, ParallelExecutor, Receipt, SequentialExecutor, Status,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// Cases per property.
const CASES: u32 = 1_000;

fn block_spec() -> impl Strategy<Value = BlockSpec> {
    (
        512usize..2_000,
        prop_oneof![
            1 => Just(2u64),
            1 => 3u64..100,
            1 => 100u64..10_000,
            4 => 10_000u64..=1_000_000,
        ],
        prop_oneof![3 => Just(0u64), 1 => 0u64..=100],
        prop_oneof![
            2 => Just(Mix::Transfers),
            2 => Just(Mix::Light),
            1 => Just(Mix::Heavy),
            1 => Just(Mix::Counters),
        ],
        prop_oneof![1 => Just(0u64), 2 => 0u64..=20],
        prop_oneof![4 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |(len, accounts, hot_percent, mix, failure_percent, hot_tail)| BlockSpec {
                len,
                accounts,
                hot_percent,
                mix,
                failure_percent,
                hot_tail,
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (any::<u64>(), vec(block_spec(), 1..=3)).prop_map(|(seed, blocks)| Case { seed, blocks })
}

/// Runs `property` on [`CASES`] random cases, with failure persistence and
/// shrinking as the `proptest!` macro sets them up.
fn run_property(name: &'static str, property: impl Fn(&Case) -> Result<(), TestCaseError>) {
    let config = Config {
        // Integration tests have no lib.rs for proptest's default
        // persistence to find: keep failures next to this file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        test_name: Some(name),
        ..Config::with_cases(CASES)
    };
    let mut runner = TestRunner::new(config);
    if let Err(error) = runner.run(&case(), |case| property(&case)) {
        panic!("{name}: {error}");
    }
}

/// The executors under test, built once per property: their thread pools
/// and plan buffers are reused across cases, as a shard reuses them.
struct Executors {
    sequential: SequentialExecutor,
    parallel: Vec<ParallelExecutor>,
}

impl Executors {
    /// Parallel executors that always take the parallel path (the one
    /// under test) when a block allows it.
    fn new(workers: &[usize]) -> Executors {
        Executors::with_choice(workers, false)
    }

    /// Parallel executors that, if `adaptive`, also run blocks in order
    /// when that measures faster.
    fn with_choice(workers: &[usize], adaptive: bool) -> Executors {
        let registry = common::registry();
        Executors {
            sequential: SequentialExecutor::new(registry.clone()),
            parallel: workers
                .iter()
                .map(|&w| {
                    ParallelExecutor::new(w, registry.clone())
                        .expect("valid workers")
                        .adaptive(adaptive)
                })
                .collect(),
        }
    }
}

/// The name of a receipt's outcome: "Committed" or the error variant.
fn outcome(receipt: &Receipt) -> String {
    match &receipt.status {
        Status::Committed { .. } => "Committed".into(),
        Status::Failed(error) => format!("{error:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => "unknown status".into(),
    }
}

/// Runs every block of `case` through the sequential executor and each
/// parallel executor, each on its own copy of the genesis state, and fails
/// at the first receipt or key that differs. Returns the reference
/// receipts' outcome counts.
fn check_equivalence(
    case: &Case,
    executors: &Executors,
) -> Result<BTreeMap<String, u64>, TestCaseError> {
    let world = case.build();
    let mut reference = world.genesis.clone();
    let mut states: Vec<_> = executors
        .parallel
        .iter()
        .map(|_| world.genesis.clone())
        .collect();
    let mut outcomes = BTreeMap::new();
    for (b, block) in world.blocks.iter().enumerate() {
        let expected = executors
            .sequential
            .execute_block(&mut reference, block)
            .map_err(|e| TestCaseError::fail(format!("seed {}: {e}", case.seed)))?;
        prop_assert_eq!(expected.len(), block.len());
        for receipt in &expected {
            *outcomes.entry(outcome(receipt)).or_insert(0) += 1;
        }
        let expected_state = common::sorted(&reference);
        for (executor, state) in executors.parallel.iter().zip(&mut states) {
            let receipts = executor
                .execute_block(state, block)
                .map_err(|e| TestCaseError::fail(format!("seed {}: {e}", case.seed)))?;
            if let Some(difference) =
                common::first_difference(block, (&expected, &expected_state), (&receipts, state))
            {
                return Err(TestCaseError::fail(format!(
                    "seed {} ({} blocks): block {b}, {} workers: {difference}",
                    case.seed,
                    world.blocks.len(),
                    executor.workers()
                )));
            }
        }
    }
    Ok(outcomes)
}

/// Proves determinism: for 1000 random cases of 1-3 blocks in a row on one
/// state (512-2000 transactions each, 2 hot accounts up to 1M account ids,
/// some blocks hot only after the executor's contention sample, every
/// native call, user contracts that panic or break their access set, and
/// failures of every kind), parallel executors with 1, 2 and 3 workers
/// give exactly the sequential executor's receipts and state; it also
/// checks from the executors' stats that a large share of blocks took the
/// parallel path, and that the blocks produced every failure kind.
#[test]
fn parallel_executor_matches_sequential() {
    common::quiet_test_panics();
    let started = Instant::now();
    let executors = Executors::new(&[1, 2, 3]);
    let outcomes = Mutex::new(BTreeMap::<String, u64>::new());
    run_property("parallel_executor_matches_sequential", |case| {
        let counts = check_equivalence(case, &executors)?;
        let mut outcomes = outcomes.lock().unwrap_or_else(|e| e.into_inner());
        for (outcome, n) in counts {
            *outcomes.entry(outcome).or_insert(0) += n;
        }
        Ok(())
    });
    let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    for executor in &executors.parallel {
        eprintln!("{} workers: {:?}", executor.workers(), executor.stats());
    }
    eprintln!("outcomes: {outcomes:?}");
    eprintln!("{CASES} cases in {:.2?}", started.elapsed());

    // One worker never runs a block in parallel; two and three must, for a
    // good share of the blocks, or the property proves little.
    for executor in &executors.parallel[1..] {
        let stats = executor.stats();
        let blocks = stats.parallel_blocks + stats.sequential_blocks;
        assert!(
            stats.parallel_blocks * 4 >= blocks,
            "{} workers ran only {} of {blocks} blocks in parallel",
            executor.workers(),
            stats.parallel_blocks
        );
    }
    let expected = [
        "Committed",
        "InsufficientFunds",
        "UnknownAccount",
        "NotFound",
        "AlreadyExists",
        "Overflow",
        "AccessViolation",
        "Unauthorized",
        "SlippageExceeded",
        "UnknownContract",
        "ContractPanicked",
        "InvalidInput",
    ];
    for name in expected {
        assert!(
            outcomes.get(name).copied().unwrap_or(0) > 0,
            "no {name} receipt in {CASES} cases: {outcomes:?}"
        );
    }
}

/// Checks that each asset's total after every block of `case` equals its
/// total before plus exactly what the block's committed `CreateAccount`,
/// `Mint` and `AddLiquidity` calls created, under `executor`.
fn check_conservation(case: &Case, executor: &dyn BlockExecutor) -> Result<(), TestCaseError> {
    let world = case.build();
    let mut state = world.genesis;
    let mut assets: BTreeSet<AssetId> = [AssetId::COIN, common::T1, common::T2].into();
    for (b, block) in world.blocks.iter().enumerate() {
        let before = common::totals(&state, &assets);
        let receipts = executor
            .execute_block(&mut state, block)
            .map_err(|e| TestCaseError::fail(format!("seed {}: {e}", case.seed)))?;
        let created = common::created_value(block, &receipts);
        assets.extend(before.keys());
        assets.extend(created.keys());
        let after = common::totals(&state, &assets);
        for (asset, total) in &after {
            let expected =
                before.get(asset).copied().unwrap_or(0) + created.get(asset).copied().unwrap_or(0);
            prop_assert_eq!(
                *total,
                expected,
                "seed {}: block {}: asset {} totals {} after, {} before, {} created",
                case.seed,
                b,
                asset.0,
                total,
                before.get(asset).copied().unwrap_or(0),
                created.get(asset).copied().unwrap_or(0)
            );
        }
        assets.extend(after.keys());
    }
    Ok(())
}

/// Proves conservation: over 1000 random cases, under the sequential and
/// the 2-worker parallel executor, transfers, token transfers, swaps,
/// liquidity and user contracts (failing, panicking or not) leave every
/// asset's `State::total` unchanged except for exactly the coins of
/// committed `CreateAccount`s, the tokens of committed `Mint`s and the pool
/// shares that committed `AddLiquidity` calls report.
#[test]
fn blocks_conserve_value() {
    common::quiet_test_panics();
    let started = Instant::now();
    let executors = Executors::new(&[2]);
    let cases = std::cell::Cell::new(0u64);
    run_property("blocks_conserve_value", |case| {
        check_conservation(case, &executors.sequential)?;
        check_conservation(case, &executors.parallel[0])?;
        cases.set(cases.get() + 1);
        Ok(())
    });
    eprintln!(
        "{} cases in {:.2?}; 2 workers: {:?}",
        cases.get(),
        started.elapsed(),
        executors.parallel[0].stats()
    );
    assert!(cases.get() >= u64::from(CASES), "only {cases:?} cases ran");
}

/// Proves the harness itself can fail: a block that creates coins outside
/// `CreateAccount` (one coin written into the issuer's balance after the
/// block) fails the conservation check, while the honest executor passes.
#[test]
fn conservation_check_detects_created_value() {
    let case = Case {
        seed: 7,
        blocks: vec![BlockSpec {
            len: 600,
            accounts: 50_000,
            hot_percent: 0,
            mix: Mix::Transfers,
            failure_percent: 0,
            hot_tail: false,
        }],
    };
    /// Executes blocks sequentially, then mints one coin out of thin air.
    struct Leaky(SequentialExecutor);
    impl BlockExecutor for Leaky {
        fn execute_block(
            &self,
            state: &mut parashard_protocols::State,
            block: &[parashard_protocols::Transaction],
        ) -> Result<Vec<Receipt>, parashard_protocols::ExecutorError> {
            let receipts = self.0.execute_block(state, block)?;
            let key = parashard_protocols::Key::balance(common::ISSUER, AssetId::COIN);
            let balance = state.get(&key).expect("issuer exists");
            state.set(key, balance + 1);
            Ok(receipts)
        }
    }
    let leaky = Leaky(SequentialExecutor::new(common::registry()));
    assert!(check_conservation(&case, &leaky).is_err());
    assert!(check_conservation(&case, &SequentialExecutor::new(common::registry())).is_ok());
}

/// Proves a case replays from its printed form: building the same `Case`
/// twice gives the same genesis state and the same blocks, and another
/// seed gives other blocks.
#[test]
fn cases_replay_from_their_seed() {
    let case = Case {
        seed: 0xC0FFEE,
        blocks: vec![
            BlockSpec {
                len: 700,
                accounts: 1_000_000,
                hot_percent: 10,
                mix: Mix::Heavy,
                failure_percent: 20,
                hot_tail: true,
            },
            BlockSpec {
                len: 512,
                accounts: 2,
                hot_percent: 0,
                mix: Mix::Light,
                failure_percent: 5,
                hot_tail: false,
            },
        ],
    };
    let (first, second) = (case.build(), case.build());
    assert_eq!(first.blocks, second.blocks);
    assert_eq!(first.genesis, second.genesis);
    let other = Case {
        seed: case.seed + 1,
        ..case.clone()
    }
    .build();
    assert_ne!(first.blocks, other.blocks);
}

/// Proves the workload module's DeFi blocks (what the CLI and simulations
/// run) give the sequential result on 2 workers and conserve value, over
/// 10 seeds of 3 blocks of 2000 calls each with 10% built to fail, checking
/// receipts, states and per-asset totals after every block.
#[test]
fn defi_workload_matches_sequential_and_conserves() {
    use parashard_protocols::workload::{DefiWorld, Rng, TxIds};
    let registry = common::registry();
    let sequential = SequentialExecutor::new(registry.clone());
    let parallel = ParallelExecutor::new(2, registry).expect("2 workers");
    for seed in 0..10u64 {
        let world = DefiWorld::new(20_000);
        let mut ids = TxIds::default();
        let mut reference = parashard_protocols::State::new();
        let genesis = world.genesis(&mut ids, 1 << 40);
        let receipts = sequential
            .execute_block(&mut reference, &genesis)
            .expect("valid block");
        assert!(receipts.iter().all(Receipt::is_committed), "seed {seed}");
        let mut state = reference.clone();
        let mut rng = Rng::new(seed);
        for b in 0..3 {
            let block = world.block(&mut rng, &mut ids, 2_000, 1_000, 10);
            let before = common::totals(&reference, &BTreeSet::new());
            let expected = sequential
                .execute_block(&mut reference, &block)
                .expect("valid block");
            let receipts = parallel.execute_block(&mut state, &block).expect("valid");
            let difference = common::first_difference(
                &block,
                (&expected, &common::sorted(&reference)),
                (&receipts, &state),
            );
            assert_eq!(difference, None, "seed {seed}, block {b}");
            let created = common::created_value(&block, &expected);
            let after = common::totals(&reference, &before.keys().copied().collect());
            for (asset, total) in after {
                let expected = before.get(&asset).copied().unwrap_or(0)
                    + created.get(&asset).copied().unwrap_or(0);
                assert_eq!(total, expected, "seed {seed}, block {b}, asset {}", asset.0);
            }
        }
    }
    // Half of these calls are swaps on two pools, so the executor judges
    // every block contended and runs it sequentially; the property tests
    // above cover the parallel path.
    eprintln!("DeFi workload on 2 workers: {:?}", parallel.stats());
}

/// Proves one parallel executor shared by two threads (its blocks then
/// queue on the executor's plan) neither deadlocks nor mixes their blocks:
/// each thread's 10 blocks on its own state give the sequential result,
/// within a deadline, and most take the parallel path.
#[test]
fn one_executor_serves_two_threads() {
    common::quiet_test_panics();
    let registry = common::registry();
    let parallel = Arc::new(
        ParallelExecutor::new(2, registry.clone())
            .expect("2 workers")
            .adaptive(false),
    );
    let threads: Vec<_> = (0..2u64)
        .map(|seed| {
            let (parallel, registry) = (Arc::clone(&parallel), registry.clone());
            std::thread::spawn(move || {
                let spec = BlockSpec {
                    len: 1_500,
                    accounts: 500_000,
                    hot_percent: 0,
                    mix: Mix::Light,
                    failure_percent: 10,
                    hot_tail: false,
                };
                let world = Case {
                    seed,
                    blocks: vec![spec; 10],
                }
                .build();
                let sequential = SequentialExecutor::new(registry);
                let mut reference = world.genesis.clone();
                let mut state = world.genesis;
                for (b, block) in world.blocks.iter().enumerate() {
                    let expected = sequential
                        .execute_block(&mut reference, block)
                        .expect("valid block");
                    let receipts = parallel.execute_block(&mut state, block).expect("valid");
                    let difference = common::first_difference(
                        block,
                        (&expected, &common::sorted(&reference)),
                        (&receipts, &state),
                    );
                    assert_eq!(difference, None, "seed {seed}, block {b}");
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for thread in threads {
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "blocks still running: deadlock");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("the thread's blocks matched");
    }
    let stats = parallel.stats();
    assert!(stats.parallel_blocks >= 10, "{stats:?}");
}

/// Proves the parallel path runs blocks whose head is calm but whose tail
/// is one long dependency chain on the two hot accounts (the contention
/// sample sees only the head), and still gives the sequential result.
#[test]
fn hot_tail_runs_in_parallel_and_matches_sequential() {
    common::quiet_test_panics();
    let executors = Executors::new(&[2, 3]);
    for seed in 0..5 {
        let spec = BlockSpec {
            len: 2_000,
            accounts: 1_000_000,
            hot_percent: 0,
            mix: Mix::Light,
            failure_percent: 5,
            hot_tail: true,
        };
        let case = Case {
            seed,
            blocks: vec![spec; 2],
        };
        if let Err(error) = check_equivalence(&case, &executors) {
            panic!("{error}");
        }
    }
    for executor in &executors.parallel {
        let stats = executor.stats();
        assert_eq!(stats.parallel_blocks, 10, "{stats:?}");
    }
}

/// Proves an adaptive executor, which picks per block between its parallel
/// path and in-order execution by measured speed, gives the sequential
/// result whichever it picks and keeps its stats straight: over 3 seeds of
/// 12 light blocks, every block is counted once, and both ways ran (the
/// first 5 blocks run in parallel, the 6th checks in-order execution).
#[test]
fn adaptive_executor_matches_sequential_either_way() {
    common::quiet_test_panics();
    let executors = Executors::with_choice(&[2], true);
    let spec = BlockSpec {
        len: 1_000,
        accounts: 1_000_000,
        hot_percent: 0,
        mix: Mix::Light,
        failure_percent: 5,
        hot_tail: false,
    };
    for seed in 0..3 {
        let case = Case {
            seed,
            blocks: vec![spec.clone(); 12],
        };
        if let Err(error) = check_equivalence(&case, &executors) {
            panic!("{error}");
        }
    }
    let stats = executors.parallel[0].stats();
    assert_eq!(
        stats.parallel_blocks + stats.chosen_in_order + stats.sequential_blocks,
        36,
        "{stats:?}"
    );
    assert!(stats.parallel_blocks >= 5, "{stats:?}");
    assert!(stats.chosen_in_order >= 1, "{stats:?}");
}

/// Checks that the redo records of `case`'s blocks, run by `executor`,
/// rebuild the state through the shards' own recovery with no executor and
/// no contracts: the genesis as the snapshot, then one record per block,
/// gives exactly the executed state after every block, and the commit
/// memory holds exactly the committed transactions with their outputs.
fn check_redo(case: &Case, executor: &dyn BlockExecutor) -> Result<(), TestCaseError> {
    use parashard_protocols::records::{ShardRecord, ShardSnapshot};
    use parashard_protocols::recovery::ShardMemory;
    use parashard_protocols::twopc::ParticipantConfig;
    use parashard_protocols::ShardId;
    let world = case.build();
    let snapshot = ShardSnapshot {
        state: world.genesis.iter().collect(),
        prepared: Vec::new(),
        finished: Vec::new(),
        decided_below: 0,
        committed: Default::default(),
    };
    let mut state = world.genesis;
    let mut records = Vec::new();
    let mut committed = Vec::new();
    for (b, block) in world.blocks.iter().enumerate() {
        let receipts = executor
            .execute_block(&mut state, block)
            .map_err(|e| TestCaseError::fail(format!("seed {}: {e}", case.seed)))?;
        records.push(ShardRecord::block(&state, block, &receipts));
        committed.extend(receipts.iter().filter_map(|r| match &r.status {
            Status::Committed { output } => Some((r.tx_id, output.clone())),
            _ => None,
        }));
        let memory = ShardMemory::recover(
            ShardId(0),
            ParticipantConfig::default(),
            committed.len(),
            Some(snapshot.clone()),
            records.clone(),
        );
        prop_assert!(
            memory.state == state,
            "seed {}: block {}: replaying the redo records differs: {:?}",
            case.seed,
            b,
            common::first_difference(
                block,
                (&receipts, &common::sorted(&state)),
                (&receipts, &memory.state)
            )
        );
        let mut remembered: Vec<_> = memory.committed.iter().collect();
        let mut expected = committed.clone();
        remembered.sort_unstable();
        expected.sort_unstable();
        prop_assert_eq!(remembered, expected, "seed {}: block {}", case.seed, b);
    }
    Ok(())
}

/// Proves recovery cannot diverge from what committed: over random cases
/// of every call kind (user contracts that fail, panic or break their
/// access set included), under the sequential and the 2-worker parallel
/// executor, replaying the blocks' redo records (writes and commits, no
/// contract code) rebuilds the executed state and commit memory exactly.
#[test]
fn redo_records_rebuild_state_exactly() {
    common::quiet_test_panics();
    let executors = Executors::new(&[2]);
    let cases = std::cell::Cell::new(0u64);
    run_property("redo_records_rebuild_state_exactly", |case| {
        check_redo(case, &executors.sequential)?;
        check_redo(case, &executors.parallel[0])?;
        cases.set(cases.get() + 1);
        Ok(())
    });
    assert!(cases.get() >= u64::from(CASES), "only {cases:?} cases ran");
}

/// Checks both executors against the independent oracle
/// (`common::oracle`) on every block of `case`.
fn check_oracle(case: &Case, executors: &Executors) -> Result<(), TestCaseError> {
    let runners: [(&str, &dyn BlockExecutor); 2] = [
        ("sequential", &executors.sequential),
        ("parallel", &executors.parallel[0]),
    ];
    common::oracle::compare(case.build(), &runners)
        .map_err(|difference| TestCaseError::fail(format!("seed {}: {difference}", case.seed)))
}

/// Proves both executors right against a reference that shares none of
/// their code: over random cases of every call kind (user contracts that
/// fail, panic or break their access set included), the sequential and
/// the 2-worker parallel executor give the outcome, output and state that
/// a plain interpreter over a `BTreeMap` gives.
#[test]
fn executors_match_the_independent_oracle() {
    common::quiet_test_panics();
    let executors = Executors::new(&[2]);
    let cases = std::cell::Cell::new(0u64);
    run_property("executors_match_the_independent_oracle", |case| {
        check_oracle(case, &executors)?;
        cases.set(cases.get() + 1);
        Ok(())
    });
    assert!(cases.get() >= u64::from(CASES), "only {cases:?} cases ran");
}

/// Proves that calls adding to one shared key run in parallel and still
/// give the exact sequential result, bounds included: 40 seeds of 3 blocks
/// where most calls add to or subtract from one total (an add key), huge
/// amounts push it to overflow and below zero, and a few calls read or
/// write it as an ordinary key between the adds. Most blocks take the
/// parallel path (blocks of writes to one key would run in order), and
/// both executors match the independent oracle and each other.
#[test]
fn adds_to_one_key_run_in_parallel_and_stay_exact() {
    common::quiet_test_panics();
    let executors = Executors::new(&[2, 3]);
    let mut outcomes = BTreeMap::<String, u64>::new();
    for seed in 0..40u64 {
        let spec = |len, failure_percent| BlockSpec {
            len,
            accounts: 5_000,
            hot_percent: 0,
            mix: Mix::Counters,
            failure_percent,
            hot_tail: false,
        };
        let case = Case {
            seed,
            blocks: vec![spec(2_000, 0), spec(3_000, 15), spec(1_500, 40)],
        };
        check_oracle(&case, &executors).unwrap_or_else(|e| panic!("{e}"));
        for (name, n) in check_equivalence(&case, &executors).unwrap_or_else(|e| panic!("{e}")) {
            *outcomes.entry(name).or_insert(0) += n;
        }
    }
    for executor in &executors.parallel {
        // Blocks with many failures go in order, as any block does whose
        // failing calls crowd on a few accounts; the rest must not.
        let stats = executor.stats();
        let blocks = stats.parallel_blocks + stats.sequential_blocks;
        assert!(
            stats.parallel_blocks * 3 >= blocks * 2,
            "{} workers ran only {} of {blocks} blocks of adds in parallel: {stats:?}",
            executor.workers(),
            stats.parallel_blocks
        );
    }
    eprintln!("outcomes: {outcomes:?}");
    for name in [
        "Committed",
        "Overflow",
        "InsufficientFunds",
        "AccessViolation",
    ] {
        assert!(
            outcomes.get(name).copied().unwrap_or(0) > 0,
            "no {name}: {outcomes:?}"
        );
    }
}

/// Proves the signature checks give the same receipts and state in
/// parallel as in order, on 20 seeds of blocks of 3,000 transfers over
/// 2,000 accounts, a tenth of which hold keys: unsigned transfers from
/// keyed accounts (refused), signed ones with the right, a stale or a
/// future sequence number, and first keys set inside the block (whose
/// senders' unsigned transfers that block refuses). Checks that every
/// outcome occurred.
#[test]
fn signature_checks_match_sequential() {
    use parashard_protocols::auth::{PublicKey, SigningKey, HAS_KEY};
    use parashard_protocols::workload::{bank_state, Rng, TxIds};
    use parashard_protocols::{AccountId, Key, Transaction, TxError};
    const ACCOUNTS: u64 = 2_000;
    let signer = |a: u64| SigningKey::from_bytes(&[(a % 251) as u8 + 1; 32]);
    let keyed = |a: u64| a.is_multiple_of(10);
    let executors = Executors::new(&[2]);
    let mut outcomes = BTreeMap::<String, u64>::new();
    for seed in 0..20u64 {
        let mut rng = Rng::new(seed);
        let mut ids = TxIds::default();
        let mut genesis = bank_state(ACCOUNTS, 1_000);
        let mut sequences = BTreeMap::new();
        for a in (0..ACCOUNTS).filter(|a| keyed(*a)) {
            let words = PublicKey::of(&signer(a)).0;
            genesis.set(Key::sequence(AccountId(a)), HAS_KEY);
            for w in 0..4u64 {
                let word = u64::from_le_bytes(words[w as usize * 8..][..8].try_into().unwrap());
                genesis.set(Key::public_key_word(AccountId(a), w), word);
            }
            sequences.insert(a, 0u64);
        }
        let block: Vec<Transaction> = (0..3_000)
            .map(|_| {
                let (from, to) = (rng.below(ACCOUNTS), rng.below(ACCOUNTS));
                let tx = Transaction::transfer(ids.next_id(), AccountId(from), AccountId(to), 1);
                match (keyed(from), rng.below(4)) {
                    (false, 0) => Transaction::set_public_key(
                        ids.next_id(),
                        AccountId(from),
                        PublicKey::of(&signer(from)),
                    ),
                    (false, _) => tx,
                    (true, 0) => tx,
                    (true, roll) => {
                        let next = sequences.get_mut(&from).expect("keyed");
                        let sequence = match roll {
                            1 => next.saturating_sub(1),
                            2 => *next + 1,
                            _ => {
                                *next += 1;
                                *next - 1
                            }
                        };
                        tx.sign(0, sequence, &signer(from))
                    }
                }
            })
            .collect();
        let case = format!("seed {seed}");
        let mut reference = genesis.clone();
        let expected = executors
            .sequential
            .execute_block(&mut reference, &block)
            .expect(&case);
        let mut state = genesis;
        let receipts = executors.parallel[0]
            .execute_block(&mut state, &block)
            .expect(&case);
        assert_eq!(receipts, expected, "{case}");
        assert!(state == reference, "{case}: states differ");
        for receipt in &expected {
            let name = match &receipt.status {
                Status::Failed(TxError::SignatureMissing { .. }) => "SignatureMissing",
                Status::Failed(TxError::BadSequence { .. }) => "BadSequence",
                Status::Committed { .. } => "Committed",
                _ => "other",
            };
            *outcomes.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    eprintln!(
        "outcomes: {outcomes:?}; {:?}",
        executors.parallel[0].stats()
    );
    for name in ["Committed", "SignatureMissing", "BadSequence"] {
        assert!(
            outcomes.get(name).copied().unwrap_or(0) > 0,
            "no {name}: {outcomes:?}"
        );
    }
    assert!(executors.parallel[0].stats().parallel_blocks > 0);
}
