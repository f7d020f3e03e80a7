//! The `parashard` command: benchmarks and simulations on the public API.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use parashard::prelude::*;
use parashard::protocols::workload::{self, Rng, TxIds};

// glibc returns a freed block of a block's size (receipts, plans) to the
// kernel and takes it back zeroed on the next block, so page faults cost
// the sequential executor a third of its time at 1M accounts; mimalloc
// keeps and reuses such blocks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: the crate names the option just
/// after it but not this one, and the assertion pins its place.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const _: () = assert!(MI_OPTION_PURGE_DELAY + 1 == libmimalloc_sys::mi_option_use_numa_nodes);

/// Never returns freed memory to the kernel (mimalloc's default is after
/// 10 ms). The benchmarks allocate and free block- and batch-sized buffers
/// continuously (workloads, batches, receipts, log records); returned to
/// the kernel, they came back as freshly zeroed transparent huge pages. A
/// delay of 10 ms cost a 300,000-transfer `bench` run 16,271 page
/// faults; 2 s brought that to ~670 in most runs but still to 5,000-7,000
/// in about one run in four (whichever phase the purge fell into ran at a
/// third of its speed: 1.0M instead of 3-4M local transfers/s); never
/// purging keeps it at ~670. The commands are short-lived, so the memory
/// they keep is their peak. `MIMALLOC_PURGE_DELAY` still overrides it.
fn tune_allocator() {
    // SAFETY: sets a plain integer option, read by mimalloc at each purge;
    // any value is valid (negative: never purge).
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, -1) };
}

mod bench_bound;
mod bench_recovery;
mod bench_system;
mod run;

#[derive(Parser)]
#[command(
    name = "parashard",
    version,
    about = "Sharded smart-contract execution: benchmarks and simulations"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The whole system (the default command): local and cross-shard
    /// transfers, swaps on one hot pool and fees to one hot counter through
    /// a cluster (the public API), beside the executor alone on the same
    /// accounts.
    #[command(alias = "bench-cluster")]
    Bench(bench_system::SystemArgs),
    /// The executor alone: generated transfer blocks executed sequentially
    /// and in parallel, throughput medians and the speed-up, with reference
    /// lines for what two cores give.
    BenchExecutor(BenchArgs),
    /// Writes a one-shard on-disk log of committed transfers, then times
    /// how long the shard takes to recover from it (log replay, then from
    /// a snapshot).
    BenchRecovery(bench_recovery::RecoveryArgs),
    /// Applies transactions from JSON lines (a file or standard input) on
    /// a cluster, in memory or on a data directory, and writes a receipt
    /// per line as JSON lines; invalid lines are named by number on
    /// standard error (`docs/JSONL.md`).
    Run(run::RunArgs),
    /// Runs the deterministic fault simulator over many seeds and checks
    /// the design's invariants; exits non-zero on the first violation.
    Simulate(SimulateArgs),
}

#[derive(clap::Args, Clone)]
struct BenchArgs {
    /// Accounts the transfers pick from (contention falls as this grows).
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u64,
    /// Transactions per block.
    #[arg(long, default_value_t = 10_000)]
    block: usize,
    /// Blocks measured per executor (the median is reported), after three
    /// that warm up.
    #[arg(long, default_value_t = 30)]
    blocks: usize,
    /// Parallel executor workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generate every block before the run, so that blocks come from
    /// memory rather than cache (by default each block is generated just
    /// before it runs, as a shard runs a block it has just received).
    #[arg(long)]
    cold: bool,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Cluster(#[from] parashard::ClusterError),
    #[error("{0}")]
    Executor(#[from] parashard::protocols::ExecutorError),
    #[error("invalid argument: {0}")]
    Argument(String),
    #[error("{0}")]
    Storage(#[from] parashard::actors::storage::StorageError),
    #[error("{0}")]
    Simulation(#[from] parashard::protocols::sim::Violation),
}

/// Output piped into `head` and the like ends the process quietly when the
/// reader stops, as for any command-line tool, instead of a panic in
/// `println!` (Rust ignores SIGPIPE by default).
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before any
    // other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    tune_allocator();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| {
        // No subcommand: `bench` with its defaults.
        match Cli::parse_from(["parashard", "bench"]).command {
            Some(command) => command,
            None => unreachable!("`bench` parses as a subcommand"),
        }
    });
    let result = match command {
        Command::Bench(args) => bench_system::run(&args),
        Command::BenchExecutor(args) => bench_executor(&args),
        Command::BenchRecovery(args) => bench_recovery::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Simulate(args) => simulate(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Blocks each pass of `parashard bench` runs before it measures: the first
/// blocks pay for starting the pool's threads and for cold caches.
const WARM_UP_BLOCKS: usize = 3;

/// Runs each block through every executor, in turn so that the machine's
/// ups and downs hit all alike, checks that they agree, and returns the
/// median transactions per second of one block for each, the first
/// [`WARM_UP_BLOCKS`] not counted. Which executor goes first rotates too:
/// the later ones find the block in cache.
fn measure(
    executors: &[&dyn BlockExecutor],
    state: State,
    blocks: impl Iterator<Item = Vec<Transaction>>,
) -> Result<Vec<f64>, CliError> {
    let k = executors.len();
    let mut states = vec![state; k];
    let mut tps = vec![Vec::new(); k];
    for (n, block) in blocks.enumerate() {
        let mut receipts = vec![Vec::new(); k];
        for turn in 0..k {
            let e = (n + turn) % k;
            let start = Instant::now();
            receipts[e] = executors[e].execute_block(&mut states[e], &block)?;
            if n >= WARM_UP_BLOCKS {
                tps[e].push(block.len() as f64 / start.elapsed().as_secs_f64());
            }
        }
        if receipts.windows(2).any(|pair| pair[0] != pair[1]) {
            return Err(CliError::Argument(
                "the executors disagree on a block's receipts (a bug: please report it)".into(),
            ));
        }
    }
    Ok(tps.iter_mut().map(|samples| median(samples)).collect())
}

fn bench_executor(args: &BenchArgs) -> Result<(), CliError> {
    if args.accounts < 2 || args.block == 0 || args.blocks == 0 {
        return Err(CliError::Argument(
            "need --accounts >= 2, --block >= 1, --blocks >= 1".into(),
        ));
    }
    println!(
        "parashard bench-executor: {} transfers/block over {} accounts, {} blocks, seed {}{}",
        args.block,
        args.accounts,
        args.blocks,
        args.seed,
        if args.cold {
            ", blocks out of cache"
        } else {
            ""
        }
    );
    let registry = Arc::new(Registry::new());
    let sequential = SequentialExecutor::new(registry.clone());
    // Two passes over the same blocks, each against the sequential
    // executor: the parallel path itself, then the executor as shards use
    // it (adaptive: each block the way that measures faster). One pool per
    // pass: two pools in one run would take each other's cores.
    let parallel = ParallelExecutor::new(args.workers, registry.clone())?.adaptive(false);
    let state = workload::bank_state(args.accounts, 1 << 40);
    let [seq_tps, par_tps] = run_pass(args, &state, [&sequential, &parallel])?;
    println!(
        "  sequential executor           {:>12.0} tx/s (median block)",
        seq_tps
    );
    println!(
        "  parallel executor, {} workers {:>12.0} tx/s (median block)  {:.2}x sequential",
        args.workers,
        par_tps,
        par_tps / seq_tps
    );
    let stats = parallel.stats();
    println!(
        "    parallel blocks {}, sequential fallbacks {}, extra rounds {}, dependency waits {}",
        stats.parallel_blocks, stats.sequential_blocks, stats.extra_rounds, stats.waits
    );
    drop(parallel);
    let adaptive = ParallelExecutor::new(args.workers, registry)?;
    let [seq_tps, adaptive_tps] = run_pass(args, &state, [&sequential, &adaptive])?;
    let stats = adaptive.stats();
    println!(
        "  adaptive executor, {} workers {:>12.0} tx/s (median block)  {:.2}x sequential ({:.0} tx/s in this pass)",
        args.workers,
        adaptive_tps,
        adaptive_tps / seq_tps,
        seq_tps
    );
    println!(
        "    parallel blocks {}, chosen in order {}, sequential fallbacks {}",
        stats.parallel_blocks, stats.chosen_in_order, stats.sequential_blocks
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.workers > cores {
        // The reference's threads spin between blocks: more of them than
        // cores would take the sequential executor's core as well.
        println!(
            "  reference: skipped ({} threads on {} cores)",
            args.workers, cores
        );
    } else if args.workers > 1 {
        // What the cores give with nothing scheduled: each thread runs its
        // share of every block in order, on its own copy of the state, then
        // all on one state (the ceiling of a shared-state executor).
        for sharing in [
            bench_bound::Sharing::Nothing,
            bench_bound::Sharing::OneState,
        ] {
            let (seq_tps, bound_tps) =
                bench_bound::shares(args.workers, sharing, &state, blocks(args))?;
            println!(
                "  reference: {} threads, {:<20} {:>12.0} tx/s (median block)  {:.2}x sequential ({:.0} tx/s in this pass)",
                args.workers,
                sharing.label(),
                bound_tps,
                bound_tps / seq_tps,
                seq_tps
            );
        }
    }
    Ok(())
}

/// One pass of `parashard bench`: the blocks of `args` (the same ones on
/// every pass) through both `executors`, each from `state`; the median
/// transactions per second of each.
fn run_pass(
    args: &BenchArgs,
    state: &State,
    executors: [&dyn BlockExecutor; 2],
) -> Result<[f64; 2], CliError> {
    let tps = measure(&executors, state.clone(), blocks(args))?;
    Ok([tps[0], tps[1]])
}

/// The blocks of every pass of `parashard bench` (the same ones each time):
/// generated as they are taken, or with `--cold` all before the first.
fn blocks(args: &BenchArgs) -> Box<dyn Iterator<Item = Vec<Transaction>> + '_> {
    let mut rng = Rng::new(args.seed);
    let mut ids = TxIds::default();
    let next_block =
        move |_| workload::transfers(&mut rng, &mut ids, args.accounts, args.block, 100);
    let blocks = (0..WARM_UP_BLOCKS + args.blocks).map(next_block);
    if args.cold {
        Box::new(blocks.collect::<Vec<_>>().into_iter())
    } else {
        Box::new(blocks)
    }
}

#[derive(clap::Args, Clone)]
struct SimulateArgs {
    /// How many seeds to run, from `--first-seed` up.
    #[arg(long, default_value_t = 1_000)]
    seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Runs just this seed (to replay a failure) and prints its summary.
    #[arg(long)]
    seed: Option<u64>,
    /// Transactions per run (default: the simulator's).
    #[arg(long)]
    transactions: Option<usize>,
    /// The most shards per run, at least 2 (default: the simulator's).
    #[arg(long)]
    max_shards: Option<u32>,
    /// The most crashes per run (default: the simulator's).
    #[arg(long)]
    max_crashes: Option<u32>,
    /// The highest message drop rate in percent (default: the simulator's).
    #[arg(long)]
    max_drop_percent: Option<u64>,
    /// The highest duplication rate in percent (default: the simulator's).
    #[arg(long)]
    max_duplicate_percent: Option<u64>,
    /// Clients re-submit unanswered cross-shard transactions after this
    /// many simulated milliseconds (default: they do not).
    #[arg(long)]
    resubmit_after_ms: Option<u64>,
    /// The most transactions the coordinator runs as one group; 1 turns
    /// grouping off (default: the coordinator's).
    #[arg(long)]
    max_group: Option<usize>,
    /// Percent of seeds whose clients submit in bursts (default: the
    /// simulator's).
    #[arg(long)]
    burst_percent: Option<u64>,
}

impl SimulateArgs {
    /// The overrides as command-line flags, for the replay command.
    fn overrides(&self) -> String {
        let mut flags = String::new();
        let mut add = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                flags.push_str(&format!(" --{name} {value}"));
            }
        };
        add("transactions", self.transactions.map(|v| v.to_string()));
        add("max-shards", self.max_shards.map(|v| v.to_string()));
        add("max-crashes", self.max_crashes.map(|v| v.to_string()));
        add(
            "max-drop-percent",
            self.max_drop_percent.map(|v| v.to_string()),
        );
        add(
            "max-duplicate-percent",
            self.max_duplicate_percent.map(|v| v.to_string()),
        );
        add(
            "resubmit-after-ms",
            self.resubmit_after_ms.map(|v| v.to_string()),
        );
        add("max-group", self.max_group.map(|v| v.to_string()));
        add("burst-percent", self.burst_percent.map(|v| v.to_string()));
        flags
    }

    /// The simulator's defaults with this command's overrides. A replay
    /// must pass the same overrides as the run that failed.
    fn config(&self) -> Result<parashard::protocols::sim::SimConfig, CliError> {
        let mut config = parashard::protocols::sim::SimConfig::default();
        if let Some(n) = self.transactions {
            config.transactions = n;
        }
        if let Some(n) = self.max_shards {
            if n < 2 {
                return Err(CliError::Argument("need --max-shards >= 2".into()));
            }
            config.max_shards = n;
        }
        if let Some(n) = self.max_crashes {
            config.max_crashes = n;
        }
        if let Some(p) = self.max_drop_percent {
            config.max_drop_percent = p.min(100);
        }
        if let Some(p) = self.max_duplicate_percent {
            config.max_duplicate_percent = p.min(100);
        }
        config.resubmit_after_ms = self.resubmit_after_ms;
        if let Some(n) = self.max_group {
            if n == 0 {
                return Err(CliError::Argument("need --max-group >= 1".into()));
            }
            config.coordinator.max_group = n;
        }
        if let Some(p) = self.burst_percent {
            config.burst_percent = p.min(100);
        }
        Ok(config)
    }
}

/// Runs the simulator over the requested seeds, printing progress about
/// ten times and a summary; stops at the first violation.
fn simulate(args: &SimulateArgs) -> Result<(), CliError> {
    use parashard::protocols::sim::{run, RunSummary};

    let config = args.config()?;
    if let Some(seed) = args.seed {
        let summary = run(seed, &config)?;
        println!("seed {seed}: ok\n{summary:#?}");
        return Ok(());
    }
    if args.seeds == 0 {
        return Err(CliError::Argument("need --seeds >= 1".into()));
    }
    let last = args
        .first_seed
        .checked_add(args.seeds)
        .ok_or_else(|| CliError::Argument("--first-seed + --seeds overflows".into()))?;
    let start = Instant::now();
    let mut total = RunSummary::default();
    let step = (args.seeds / 10).max(1);
    for (done, seed) in (args.first_seed..last).enumerate() {
        let summary = run(seed, &config).inspect_err(|violation| {
            eprintln!(
                "seed {seed}: {} violated after {done} passing seeds\nreplay: parashard simulate --seed {seed}{}",
                violation.invariant,
                args.overrides()
            )
        })?;
        total.accumulate(&summary);
        let done = done as u64 + 1;
        if done.is_multiple_of(step) || done == args.seeds {
            println!(
                "{done}/{} seeds ok ({:.1} s)",
                args.seeds,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "simulated seeds {}..{last}: 0 violations in {seconds:.2} s ({:.0} seeds/s)",
        args.first_seed,
        args.seeds as f64 / seconds
    );
    println!(
        "transactions: {} submitted, {} committed ({} cross-shard, {} swaps), {} failed, {} unreported",
        total.submitted,
        total.committed,
        total.cross_committed,
        total.swaps_committed,
        total.failed,
        total.unreported
    );
    println!(
        "groups: {} group commits of {} transactions, the largest {}; {} rounds ran user code off the coordinator's loop",
        total.group_commits, total.grouped_transactions, total.largest_group, total.executions
    );
    println!(
        "faults: {} messages, {} dropped, {} duplicated; {} shard and {} coordinator crashes; {} inquiries; {} events",
        total.messages,
        total.dropped,
        total.duplicated,
        total.shard_crashes,
        total.coordinator_crashes,
        total.inquiries,
        total.events
    );
    println!(
        "settling: at most {} ms of simulated time after the last fault",
        total.settle_ms
    );
    Ok(())
}
