//! Seeds on which the simulator once found a bug, kept forever. Each ran
//! under the `SimConfig` of its day (the defaults, with the overrides the
//! test names); they stay useful as long as those do not change, and cheap
//! either way.

use parashard_protocols::sim::{run, SimConfig};

fn assert_seeds_pass(config: &SimConfig, seeds: &[u64]) {
    for &seed in seeds {
        if let Err(violation) = run(seed, config) {
            panic!("{violation} (replay: parashard simulate --seed {seed})");
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
    assert_seeds_pass(&SimConfig::default(), &[1557]);
    let heavy = SimConfig {
        transactions: 150,
        max_crashes: 15,
        ..SimConfig::default()
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
        ..SimConfig::default()
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
        ..SimConfig::default()
    };
    assert_seeds_pass(&config, &[6495, 23279, 41292]);
}
