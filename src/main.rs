//! The `parashard` command: benchmarks and simulations on the public API.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use parashard::prelude::*;
use parashard::protocols::workload::{self, Rng, TxIds};

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
    /// Executes generated transfer blocks sequentially and in parallel and
    /// prints throughput medians and the speed-up (the default command).
    Bench(BenchArgs),
}

#[derive(clap::Args, Clone)]
struct BenchArgs {
    /// Accounts the transfers pick from (contention falls as this grows).
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u64,
    /// Transactions per block.
    #[arg(long, default_value_t = 10_000)]
    block: usize,
    /// Blocks measured per executor (the median is reported).
    #[arg(long, default_value_t = 30)]
    blocks: usize,
    /// Parallel executor workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl Default for BenchArgs {
    fn default() -> BenchArgs {
        BenchArgs {
            accounts: 1_000_000,
            block: 10_000,
            blocks: 30,
            workers: 2,
            seed: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Executor(#[from] parashard::protocols::ExecutorError),
    #[error("invalid argument: {0}")]
    Argument(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Bench(BenchArgs::default())) {
        Command::Bench(args) => bench(&args),
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

/// Runs `blocks` through `executor` and returns the median transactions per
/// second of one block.
fn measure(
    executor: &dyn BlockExecutor,
    mut state: State,
    blocks: &[Vec<Transaction>],
) -> Result<f64, CliError> {
    let mut tps = Vec::with_capacity(blocks.len());
    for block in blocks {
        let start = Instant::now();
        let receipts = executor.execute_block(&mut state, block)?;
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(receipts.len(), block.len());
        tps.push(block.len() as f64 / seconds);
    }
    Ok(median(&mut tps))
}

fn bench(args: &BenchArgs) -> Result<(), CliError> {
    if args.accounts < 2 || args.block == 0 || args.blocks == 0 {
        return Err(CliError::Argument(
            "need --accounts >= 2, --block >= 1, --blocks >= 1".into(),
        ));
    }
    println!(
        "parashard bench: {} transfers/block over {} accounts, {} blocks, seed {}",
        args.block, args.accounts, args.blocks, args.seed
    );
    let state = workload::bank_state(args.accounts, 1 << 40);
    let mut rng = Rng::new(args.seed);
    let mut ids = TxIds::default();
    let blocks: Vec<_> = (0..args.blocks)
        .map(|_| workload::transfers(&mut rng, &mut ids, args.accounts, args.block, 100))
        .collect();
    let registry = Arc::new(Registry::new());
    let sequential = SequentialExecutor::new(registry.clone());
    let parallel = ParallelExecutor::new(args.workers, registry)?;
    let seq_tps = measure(&sequential, state.clone(), &blocks)?;
    let par_tps = measure(&parallel, state, &blocks)?;
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
        "  parallel blocks {}, sequential fallbacks {}, dependency waits {}",
        stats.parallel_blocks, stats.sequential_blocks, stats.waits
    );
    Ok(())
}
