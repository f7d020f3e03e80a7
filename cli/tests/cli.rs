//! The `parashard` command as a user runs it: its main job's report, and
//! clear errors for bad arguments.

use std::process::{Command, Output};

fn parashard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parashard"))
        .args(args)
        .output()
        .expect("the parashard binary runs")
}

/// The throughput and the ratio to sequential printed on the line that
/// starts with `label`.
fn figures(report: &str, label: &str) -> (f64, Option<f64>) {
    let line = report
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in:\n{report}"));
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|word| word.trim_end_matches('x').parse().ok())
        .collect();
    let tps = *numbers
        .iter()
        .find(|&&n| n >= 1000.0)
        .unwrap_or_else(|| panic!("no throughput in {line:?}"));
    let ratio = line
        .split_whitespace()
        .find_map(|word| word.strip_suffix('x')?.parse().ok());
    (tps, ratio)
}

#[test]
fn bench_reports_every_executor_against_sequential() {
    let out = parashard(&[
        "bench-executor",
        "--accounts",
        "5000",
        "--block",
        "1000",
        "--blocks",
        "3",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sequential, _) = figures(&report, "sequential executor");
    assert!(sequential > 0.0);
    // The reference line needs a core per thread; with fewer it says so.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut labels = vec!["parallel executor", "adaptive executor"];
    if cores >= 2 {
        labels.push("reference: 2 threads, nothing shared");
        labels.push("reference: 2 threads, one state, unordered");
    } else {
        assert!(report.contains("reference: skipped"), "{report}");
    }
    for label in labels {
        let (tps, ratio) = figures(&report, label);
        let ratio = ratio.unwrap_or_else(|| panic!("{label}: no ratio in:\n{report}"));
        assert!(tps > 0.0 && ratio > 0.0, "{label}: {tps} tx/s, {ratio}x");
    }
}

#[test]
fn commands_refuse_bad_arguments_with_a_message() {
    for (args, says) in [
        (
            &["bench-executor", "--accounts", "1"][..],
            "--accounts >= 2",
        ),
        (&["bench-executor", "--blocks", "0"][..], "--blocks >= 1"),
        (
            &["bench-executor", "--workers", "0", "--accounts", "2"][..],
            "at least one worker",
        ),
        (&["bench", "--txs", "0"][..], "--txs >= 1"),
        (&["bench", "--shards", "1"][..], "--shards >= 2"),
        (
            &[
                "bench",
                "--max-active",
                "0",
                "--txs",
                "10",
                "--accounts",
                "100",
            ][..],
            "max_active 0",
        ),
        (&["simulate", "--seeds", "0"][..], "--seeds >= 1"),
    ] {
        let out = parashard(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `parashard bench` prints the hot-pool and hot-counter lines beside the
/// spread line of the same size, every valid transaction commits, and the
/// hot counter counts exactly the fees that committed.
#[test]
fn bench_cluster_reports_hot_keys_beside_spread_traffic() {
    let out = parashard(&[
        "bench",
        "--accounts",
        "2000",
        "--txs",
        "2000",
        "--batch",
        "500",
        "--swaps",
        "2000",
        "--traders",
        "100",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |label: &str| {
        report
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no line {label:?} in:\n{report}"))
            .to_string()
    };
    assert!(line("cluster, cross-shard transfers, spread").contains("(2000 of 2000 committed)"));
    assert!(line("cluster, cross-shard swaps, one hot pool").contains("x spread"));
    let fees = line("cluster, cross-shard fees, one hot counter");
    assert!(
        fees.contains("(2000 of 2000 committed; the counter reads 2000)"),
        "{fees}"
    );
}
