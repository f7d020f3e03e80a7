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

/// A small run: 2,000 accounts, 2,000 transactions, batches of 500.
const SMALL: [&str; 6] = ["--accounts", "2000", "--txs", "2000", "--batch", "500"];

/// Runs `parashard ARGS --json FILE` and returns stdout and the JSON.
fn bench_json(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.json");
    let mut all = args.to_vec();
    all.extend(["--json", path.to_str().unwrap()]);
    let out = parashard(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (stdout, json)
}

fn phase<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name:?} in {run}"))
}

/// `parashard bench` (the default line-up) prints its table and writes
/// every figure the schema (docs/BENCH_JSON.md) names; the hot-pool and
/// hot-counter phases stand beside the spread phase of the same size,
/// every valid transaction commits, and the hot counter counts exactly the
/// fees that committed.
#[test]
fn bench_reports_every_figure_and_hot_keys_beside_spread_traffic() {
    let args = [
        &["bench"][..],
        &SMALL,
        &["--swaps", "2000", "--traders", "100"],
    ]
    .concat();
    let (stdout, run) = bench_json(&args);
    assert!(
        stdout.contains("committed/s") && stdout.contains("p999 ms"),
        "{stdout}"
    );
    for field in [
        "workload", "shards", "workers", "accounts", "batch", "clients", "seed", "skew", "pools",
        "storage", "logs",
    ] {
        assert!(!run[field].is_null(), "{field} missing: {run}");
    }
    let names = [
        "local transfers",
        "cross-shard transfers",
        "spread cross-shard transfers",
        "swaps, one hot pool",
        "fees, one hot counter",
    ];
    for name in names {
        let p = phase(&run, name);
        for field in [
            "transactions",
            "seconds",
            "committed",
            "failed",
            "unknown",
            "committed_per_s",
            "failed_per_s",
            "executor_alone_per_s",
            "ratio_to_executor",
            "kinds",
            "failures",
        ] {
            assert!(!p[field].is_null(), "{name}: {field} missing: {p}");
        }
        let latency = &p["latency_us"];
        let (p50, p99, p999) = (
            latency["p50"].as_u64().unwrap(),
            latency["p99"].as_u64().unwrap(),
            latency["p999"].as_u64().unwrap(),
        );
        assert!(0 < p50 && p50 <= p99 && p99 <= p999, "{name}: {latency}");
        assert_eq!(p["shard_load"].as_array().unwrap().len(), 4, "{name}");
        let sum = p["committed"].as_u64().unwrap()
            + p["failed"].as_u64().unwrap()
            + p["unknown"].as_u64().unwrap();
        assert_eq!(sum, p["transactions"].as_u64().unwrap(), "{name}");
    }
    assert_eq!(
        phase(&run, "spread cross-shard transfers")["committed"],
        2000
    );
    let hot = phase(&run, "swaps, one hot pool");
    assert_eq!(hot["beside"]["phase"], "spread cross-shard transfers");
    assert!(hot["beside"]["ratio"].as_f64().unwrap() > 0.0);
    // Every swap touches the pool's shard.
    assert_eq!(hot["shard_load"][0], 1.0);
    let fees = phase(&run, "fees, one hot counter");
    assert_eq!(fees["committed"], 2000);
    assert_eq!(fees["kinds"]["fee"]["committed"], 2000);
    let check = run["checks"]["fee counter"].as_str().unwrap();
    assert!(check.starts_with("ok: reads 2000"), "{check}");
}

/// The dApp mix runs transfers, swaps, fee payments and NFT sales (the
/// example's market contract) and reports each kind, and its checks (the
/// fee counter, the tokens sold) hold; with Zipf skew the most popular
/// shard carries more of the load.
#[test]
fn bench_mixed_workload_reports_each_kind() {
    let mixed = [
        "bench",
        "--workload",
        "mixed",
        "--skew",
        "1.2",
        "--pools",
        "4",
    ];
    let (_, run) = bench_json(&[&mixed[..], &SMALL].concat());
    let mix = phase(&run, "dApp mix");
    for kind in ["transfer", "swap", "fee", "nft sale"] {
        let k = &mix["kinds"][kind];
        assert!(k["committed"].as_u64().unwrap() > 0, "{kind}: {mix}");
    }
    let sales = mix["kinds"]["nft sale"]["committed"].as_u64().unwrap();
    for check in ["fee counter", "nft sales"] {
        let text = run["checks"][check].as_str().unwrap_or("missing");
        assert!(text.starts_with("ok"), "{check}: {text}");
    }
    let sold = run["checks"]["nft sales"].as_str().unwrap();
    assert!(sold.contains(&format!("{sales} tokens sold")), "{sold}");
}

/// `--sweep` runs every point, and writes the plot and the JSON of each
/// run; the cross-shard share moves the load as it must.
#[test]
fn bench_sweep_writes_a_plot_and_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("sweep.svg");
    let sweep = [
        "--sweep",
        "cross-percent=0,100",
        "--plot",
        plot.to_str().unwrap(),
    ];
    let transfer = ["bench", "--workload", "transfer"];
    let (stdout, sweep) = bench_json(&[&transfer[..], &SMALL, &sweep].concat());
    assert!(stdout.contains("plot: "), "{stdout}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("committed tx/s"),
        "{svg}"
    );
    assert!(svg.contains("p99 latency"));
    assert_eq!(sweep["parameter"], "cross-percent");
    let runs = sweep["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // Local transfers touch one shard each, cross-shard ones two: the
    // shares of transactions touching each shard add up to 1 and to 2.
    for (run, touched) in runs.iter().zip([1.0, 2.0]) {
        let load: f64 = phase(run, "transfers")["shard_load"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((load - touched).abs() < 1e-9, "{load} against {touched}");
    }
    let out = parashard(&["bench", "--sweep", "cross-percent=0,100"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sweep needs one workload"));
    let out = parashard(&["bench", "--workload", "transfer", "--sweep", "color=1,2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot sweep"));
}

/// Proves `parashard run` applies the valid lines of a transactions file
/// and names each invalid one by number: a genesis file creates two
/// accounts and gives one a key; of five lines, a signed transfer and an
/// unsigned transfer from the keyless account commit, an unsigned
/// transfer from the keyed account fails with `SignatureMissing`, and a
/// line that is not JSON, one with an unknown field, one over the line
/// limit and one that is not UTF-8 are reported on standard error with
/// their numbers, with no receipt, and the line after them still runs.
#[test]
fn run_applies_valid_lines_and_names_invalid_ones() {
    use parashard::prelude::*;
    use parashard::protocols::tx::{Request, SetPublicKey, TxLine};
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[8; 32]);
    let line = |tx: &TxLine| serde_json::to_string(tx).unwrap();
    let genesis = [
        r#"{"type":"create_account","account":1,"balance":100}"#.to_string(),
        r#"{"type":"create_account","account":2,"balance":100}"#.to_string(),
        line(&TxLine {
            id: None,
            auth: None,
            gas_limit: None,
            request: Request::SetPublicKey(SetPublicKey {
                account: AccountId(1),
                key: PublicKey::of(&key),
            }),
        }),
    ];
    let part = Transfer {
        from: AccountId(1),
        to: AccountId(2),
        amount: 30,
    };
    let id = TxId::from_u128(1);
    let signed = part.with_id(id).sign(9, 0, &key);
    let signed_line = line(&TxLine {
        id: Some(id),
        auth: signed.auth.as_deref().cloned(),
        gas_limit: None,
        request: Request::Transfer(part),
    });
    let txs = [
        signed_line,
        "{not json".to_string(),
        r#"{"type":"transfer","from":1,"to":2,"amount":5}"#.to_string(),
        r#"{"type":"transfer","from":2,"to":1,"amount":7}"#.to_string(),
        r#"{"type":"transfer","from":2,"to":1,"amount":7,"memo":"x"}"#.to_string(),
        // Longer than any line the reader holds (1 MiB), then bytes that
        // are not UTF-8: both named, neither stops the run.
        format!(
            r#"{{"type":"transfer","from":2,"to":1,"amount":7,"pad":"{}"}}"#,
            "x".repeat(1 << 20)
        ),
        String::from_utf8_lossy(b"{\"type\":\"transfer\"}").into_owned() + "\u{FFFD}",
        r#"{"type":"transfer","from":2,"to":1,"amount":1}"#.to_string(),
    ];
    let (genesis_path, txs_path, receipts_path) = (
        dir.path().join("genesis.jsonl"),
        dir.path().join("txs.jsonl"),
        dir.path().join("receipts.jsonl"),
    );
    std::fs::write(&genesis_path, genesis.join("\n")).unwrap();
    let mut bytes = txs.join("\n").into_bytes();
    // Line 7 ends in a byte that is not UTF-8 (in place of the U+FFFD).
    let bad = "\u{FFFD}".as_bytes();
    let at = bytes.windows(bad.len()).position(|w| w == bad).unwrap();
    bytes.splice(at..at + bad.len(), [0xFF]);
    std::fs::write(&txs_path, bytes).unwrap();
    let out = parashard(&[
        "run",
        "--chain-id",
        "9",
        "--genesis",
        genesis_path.to_str().unwrap(),
        "--txs",
        txs_path.to_str().unwrap(),
        "--receipts",
        receipts_path.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for number in [2, 5, 6, 7] {
        assert!(
            stderr.contains(&format!("txs.jsonl:{number}: invalid")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("txs.jsonl:6: invalid: longer than 1048576 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("txs.jsonl:7: invalid: not UTF-8"),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 committed, 1 failed, 0 unknown, 4 invalid"),
        "{stderr}"
    );
    let receipts: Vec<serde_json::Value> = std::fs::read_to_string(&receipts_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(u64, &str)> = receipts
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "committed"),
            (3, "failed"),
            (4, "committed"),
            (8, "committed")
        ]
    );
    assert!(
        receipts[1]["error"].get("SignatureMissing").is_some(),
        "{}",
        receipts[1]
    );
    assert_eq!(receipts[0]["id"], serde_json::to_value(id).unwrap());
}
