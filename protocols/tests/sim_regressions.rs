//! Seeds on which the simulator once found a bug, kept forever. Each runs
//! under the configuration of its day, written out here in full
//! ([`of_the_day`]), so that a changed default cannot empty it of meaning;
//! and under today's defaults too, which must pass every seed as well.

use parashard_protocols::sim::{run, SimConfig};
use parashard_protocols::twopc::{CoordinatorConfig, ParticipantConfig};

/// The simulator's configuration when these seeds were found: no bursts,
/// no groups, no re-sent prepares, no user contracts (none of them
/// existed yet).
fn of_the_day() -> SimConfig {
    SimConfig {
        max_shards: 4,
        accounts_per_shard: 3,
        initial_balance: 100,
        max_amount: 60,
        transactions: 40,
        cross_shard_percent: 60,
        swap_percent: 20,
        fault_ms: 2_000,
        quiet_bound_ms: 5_000,
        max_drop_percent: 20,
        max_duplicate_percent: 20,
        max_delay_ms: 40,
        max_crashes: 6,
        max_down_ms: 800,
        max_events: 1_000_000,
        max_pending_events: 100_000,
        burst_percent: 0,
        user_code_percent: 0,
        coordinator: CoordinatorConfig {
            timeout_ms: 200,
            max_retries: 6,
            retry_backoff_ms: 10,
            max_in_flight: 1_000,
            max_active: 2_048,
            remember_committed: 1 << 20,
            max_group: 1,
            max_group_keys: 2_048,
            prepare_resends: 0,
        },
        participant: ParticipantConfig {
            inquire_after_ms: 400,
            remember_finished: 16,
            max_queued_prepares: 32,
        },
        shards_remember_finished: true,
        resubmit_after_ms: None,
    }
}

/// Runs `seeds` under `frozen` (a configuration of the day) and under the
/// same overrides on today's defaults.
fn assert_seeds_pass(frozen: &SimConfig, seeds: &[u64]) {
    let today = SimConfig {
        transactions: frozen.transactions,
        max_crashes: frozen.max_crashes,
        resubmit_after_ms: frozen.resubmit_after_ms,
        ..SimConfig::default()
    };
    for config in [frozen, &today] {
        for &seed in seeds {
            if let Err(violation) = run(seed, config) {
                panic!("{violation} (config {config:?})");
            }
        }
    }
}

/// Stale prepares queued behind each other after a coordinator crash were
/// granted one at a time, and each held its lock for a whole inquiry
/// timeout before the restarted coordinator told it to abort, so locks
/// outlived the liveness bound (seed 1557; seed 10 with 150 transactions
/// and up to 15 crashes). The coordinator now answers a vote it has no
/// record of with an abort at once.
#[test]
fn stale_queued_prepares_after_coordinator_crash_settle() {
    assert_seeds_pass(&of_the_day(), &[1557]);
    let heavy = SimConfig {
        transactions: 150,
        max_crashes: 15,
        ..of_the_day()
    };
    assert_seeds_pass(&heavy, &[10]);
}

/// Clients re-submitting unanswered transactions to a restarted
/// coordinator broke atomicity twice over: the presumed-abort answer
/// aborted every round, so a delayed one released the lock of the
/// re-submission's round (seed 74), and the restarted coordinator began
/// rounds at zero again, so a late abort of the lost incarnation's round
/// released the new one (seed 1323). Answers now abort only the round
/// asked about, and rounds carry the coordinator's epoch.
#[test]
fn resubmission_to_restarted_coordinator_stays_atomic() {
    let config = SimConfig {
        resubmit_after_ms: Some(300),
        ..of_the_day()
    };
    assert_seeds_pass(&config, &[74, 1323]);
}

/// With transactions waiting for room among the active ones, a client's
/// re-submission of a waiting transaction was not recognised as a
/// duplicate: refused while the coordinator was full, it drew a failed
/// receipt while the original later committed (seed 8 while the simulator
/// drew 1 to 40 active; 6495, 23279 and 41292 with 8 to 39). Duplicates of
/// waiting transactions are now ignored like those of active ones.
#[test]
fn resubmission_of_a_waiting_transaction_has_one_outcome() {
    let config = SimConfig {
        resubmit_after_ms: Some(300),
        ..of_the_day()
    };
    assert_seeds_pass(&config, &[6495, 23279, 41292]);
}
