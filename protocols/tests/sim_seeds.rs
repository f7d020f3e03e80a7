//! The deterministic simulator over many seeds: the invariants of the
//! design hold under message loss, duplication, reordering and crashes.

use parashard_protocols::sim::{run, RunSummary, SimConfig};

/// A thousand seeded runs with random faults break no invariant; a failure
/// names its seed, and `parashard simulate --seed S` replays it.
#[test]
fn thousand_seeds_keep_every_invariant() {
    let config = SimConfig::default();
    let mut total = RunSummary::default();
    let first = std::env::var("SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0u64);
    for seed in first..first + 1_000 {
        match run(seed, &config) {
            Ok(summary) => total.accumulate(&summary),
            Err(violation) => panic!("{violation} (replay: parashard simulate --seed {seed})"),
        }
    }
    eprintln!("{total:?}");
    // The runs must actually exercise what they claim to survive.
    assert!(total.cross_committed > 1_000, "{total:?}");
    assert!(total.swaps_committed > 500, "{total:?}");
    assert!(total.dropped > 1_000, "{total:?}");
    assert!(total.duplicated > 1_000, "{total:?}");
    assert!(total.shard_crashes > 500, "{total:?}");
    assert!(total.coordinator_crashes > 100, "{total:?}");
    assert!(total.inquiries > 100, "{total:?}");
    // Bursts of submissions run transactions that share keys as groups.
    assert!(total.group_commits > 100, "{total:?}");
    assert!(total.largest_group > 4, "{total:?}");
    // Rounds of user contracts run off the coordinator's loop.
    assert!(total.executions > 1_000, "{total:?}");
}

/// Clients that re-submit unanswered cross-shard transactions under the
/// same id break no invariant either: a restarted coordinator's rounds
/// carry a higher epoch than the lost incarnation's, aborts name the
/// round they abort, and a worker's result for a lost incarnation's round
/// is ignored even when the re-submission's round of the same transaction
/// is waiting for its own (without that check, seed 377 creates coins).
#[test]
fn thousand_seeds_with_resubmission_keep_every_invariant() {
    let config = SimConfig {
        resubmit_after_ms: Some(300),
        ..SimConfig::default()
    };
    for seed in 0..1_000 {
        if let Err(violation) = run(seed, &config) {
            panic!(
                "{violation} (replay: parashard simulate --resubmit-after-ms 300 --seed {seed})"
            );
        }
    }
}
