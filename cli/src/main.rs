//! The `parashard` command: benchmarks and simulations on the public API.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use parashard::prelude::*;
use parashard::protocols::twopc::CoordinatorConfig;
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
    Bench(ClusterArgs),
    /// The executor alone: generated transfer blocks executed sequentially
    /// and in parallel, throughput medians and the speed-up, with reference
    /// lines for what two cores give.
    BenchExecutor(BenchArgs),
    /// Writes a one-shard on-disk log of committed transfers, then times
    /// how long the shard takes to recover from it (log replay, then from
    /// a snapshot).
    BenchRecovery(bench_recovery::RecoveryArgs),
    /// Runs the deterministic fault simulator over many seeds and checks
    /// the design's invariants; exits non-zero on the first violation.
    Simulate(SimulateArgs),
}

#[derive(clap::Args, Clone)]
struct ClusterArgs {
    /// Shards.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Executor workers per shard.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Accounts (spread over the shards by hash).
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Transfers per run (one local run, one cross-shard run).
    #[arg(long, default_value_t = 1_000_000)]
    txs: usize,
    /// Transfers per submitted batch.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Client threads submitting concurrently.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep shard and coordinator logs on disk in this (new or empty)
    /// directory instead of in memory.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// The most cross-shard transactions in two-phase commit at once
    /// (default: the cluster's; see `CoordinatorConfig::max_active`).
    #[arg(long)]
    max_active: Option<usize>,
    /// Cross-shard swaps against one hot pool, timed beside as many spread
    /// cross-shard transfers (0 skips both).
    #[arg(long, default_value_t = 30_000)]
    swaps: usize,
    /// Traders of the hot pool, all on other shards than the pool.
    #[arg(long, default_value_t = 3_000)]
    traders: u64,
    /// The shard of the hot pool.
    #[arg(long, default_value_t = 0)]
    pool_shard: u32,
    /// The most transactions the coordinator runs as one group; 1 turns
    /// grouping off (default: the coordinator's).
    #[arg(long)]
    max_group: Option<usize>,
    /// Percent of message batches between the coordinator and the shards
    /// lost during the hot-pool and spread runs (fault injection).
    #[arg(long, default_value_t = 0.0)]
    drop_percent: f64,
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
        Command::Bench(args) => bench_system(&args),
        Command::BenchExecutor(args) => bench_executor(&args),
        Command::BenchRecovery(args) => bench_recovery::run(&args),
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

/// Transfers whose two accounts are on the same shard (`cross` false) or on
/// different shards (`cross` true).
fn placed_transfers(
    placement: &parashard::protocols::placement::Placement,
    rng: &mut Rng,
    ids: &mut TxIds,
    accounts: u64,
    n: usize,
    cross: bool,
) -> Vec<Transaction> {
    let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); placement.shards() as usize];
    for a in 0..accounts {
        by_shard[placement.shard_of_account(AccountId(a)).0 as usize].push(a);
    }
    (0..n)
        .map(|_| loop {
            let from = rng.below(accounts);
            let home = placement.shard_of_account(AccountId(from)).0 as usize;
            let to = if cross {
                let shard =
                    (home + 1 + rng.below(by_shard.len() as u64 - 1) as usize) % by_shard.len();
                let bucket = &by_shard[shard];
                bucket[rng.below(bucket.len() as u64) as usize]
            } else {
                let bucket = &by_shard[home];
                bucket[rng.below(bucket.len() as u64) as usize]
            };
            if to != from {
                break Transaction::transfer(
                    ids.next_id(),
                    AccountId(from),
                    AccountId(to),
                    1 + rng.below(100),
                );
            }
        })
        .collect()
}

/// The hot pool of `bench` and the account that seeds it.
const HOT_POOL: AccountId = AccountId(u64::MAX - 1);
const HOT_ISSUER: AccountId = AccountId(u64::MAX - 2);
/// The token the hot pool trades against the coin.
const HOT_TOKEN: AssetId = AssetId(1);
/// The fee collector of `bench`'s hot-counter line, on the pool's
/// shard, and the contract that pays it.
const FEE_COLLECTOR: AccountId = AccountId(u64::MAX - 3);
const FEE_CONTRACT: ContractId = ContractId(1);

/// Pays `args[0]` coins from the sender to [`FEE_COLLECTOR`] and counts
/// the payment in the collector's field 0: a fee collector every
/// transaction of every shard updates.
struct PayFee;

impl Contract for PayFee {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Value, TxError> {
        let fee = args.first().copied().unwrap_or(1);
        ctx.debit(Key::balance(ctx.sender(), AssetId::COIN), fee)?;
        ctx.credit(Key::balance(FEE_COLLECTOR, AssetId::COIN), fee)?;
        let count = Key::field(FEE_COLLECTOR, 0);
        ctx.credit(count, 1)?;
        ctx.balance(count)
    }
}

/// A fee payment of `sender` through [`PayFee`].
fn pay_fee(id: TxId, sender: AccountId, fee: Value) -> Transaction {
    let access = AccessSet::new(
        [],
        [
            Key::balance(sender, AssetId::COIN),
            Key::balance(FEE_COLLECTOR, AssetId::COIN),
            Key::field(FEE_COLLECTOR, 0),
        ],
    );
    Transaction::custom(id, sender, FEE_CONTRACT, vec![fee], access)
}

/// Submits `txs` in batches of `--batch` from `--clients` threads and
/// returns the throughput and how many committed; prints how many failed
/// for each kind of reason.
fn run_batches(
    cluster: &Cluster,
    txs: Vec<Transaction>,
    args: &ClusterArgs,
) -> Result<(f64, usize), CliError> {
    let reasons = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    // Each batch is handed over whole (a client submits what it owns):
    // the timed part copies no transaction on the client side.
    let total = txs.len();
    let mut batches = Vec::with_capacity(total.div_ceil(args.batch));
    let mut rest = txs;
    // From the back, so that each split moves only the batch it takes.
    while !rest.is_empty() {
        let last = (rest.len() - 1) / args.batch * args.batch;
        batches.push(rest.split_off(last));
    }
    batches.reverse();
    let queue = std::sync::Mutex::new(batches.into_iter());
    let committed = std::sync::atomic::AtomicUsize::new(0);
    let failure = std::sync::Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.clients {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some(batch) = next else { break };
                if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    break;
                }
                match cluster.submit_batch_blocking(batch) {
                    Ok(receipts) => {
                        let ok = receipts.iter().filter(|r| r.is_committed()).count();
                        committed.fetch_add(ok, std::sync::atomic::Ordering::Relaxed);
                        if ok < receipts.len() {
                            let mut reasons = reasons.lock().unwrap_or_else(|e| e.into_inner());
                            for error in receipts.iter().filter_map(Receipt::error) {
                                // The kind of error, without its figures.
                                let kind: String = error
                                    .to_string()
                                    .chars()
                                    .take_while(|c| !c.is_ascii_digit())
                                    .collect();
                                *reasons.entry(kind.trim_end().to_string()).or_default() += 1;
                            }
                        }
                    }
                    Err(error) => {
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                        break;
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(error.into());
    }
    let tps = total as f64 / start.elapsed().as_secs_f64();
    for (reason, count) in reasons.into_inner().unwrap_or_else(|e| e.into_inner()) {
        println!("    failed: {count} x {reason}");
    }
    Ok((tps, committed.into_inner()))
}

/// Cross-shard swaps of traders on every other shard against one pool,
/// beside as many spread cross-shard transfers in the same run.
fn hot_pool(
    cluster: &Cluster,
    args: &ClusterArgs,
    rng: &mut Rng,
    ids: &mut TxIds,
) -> Result<(), CliError> {
    let reserve: Value = 1 << 50;
    cluster.create_accounts_blocking(&[(HOT_ISSUER, reserve), (HOT_POOL, 0)])?;
    let setup = [
        Transaction::create_asset(ids.next_id(), HOT_ISSUER, HOT_TOKEN),
        Transaction::mint(ids.next_id(), HOT_ISSUER, HOT_TOKEN, HOT_ISSUER, reserve),
        Transaction::create_pool(
            ids.next_id(),
            HOT_ISSUER,
            HOT_POOL,
            AssetId::COIN,
            HOT_TOKEN,
            30,
        ),
        Transaction::add_liquidity(
            ids.next_id(),
            HOT_ISSUER,
            HOT_POOL,
            AssetId::COIN,
            HOT_TOKEN,
            reserve / 2,
            reserve / 2,
        ),
    ];
    for tx in setup {
        let receipt = cluster.submit_blocking(tx)?;
        if let Some(error) = receipt.error() {
            return Err(CliError::Argument(format!(
                "hot pool set-up failed: {error}"
            )));
        }
    }
    let placement = cluster.placement().clone();
    let pool_shard = ShardId(args.pool_shard);
    let traders: Vec<AccountId> = (0..args.accounts)
        .map(AccountId)
        .filter(|a| placement.shard_of_account(*a) != pool_shard)
        .take(args.traders as usize)
        .collect();
    if traders.is_empty() {
        return Err(CliError::Argument("no trader off the pool's shard".into()));
    }
    let swaps: Vec<Transaction> = (0..args.swaps)
        .map(|_| {
            let trader = traders[rng.below(traders.len() as u64) as usize];
            Transaction::swap(
                ids.next_id(),
                trader,
                HOT_POOL,
                AssetId::COIN,
                HOT_TOKEN,
                1 + rng.below(1_000),
                1,
            )
        })
        .collect();
    let spread = placed_transfers(&placement, rng, ids, args.accounts, args.swaps, true);
    cluster.create_accounts_blocking(&[(FEE_COLLECTOR, 0)])?;
    let fees: Vec<Transaction> = (0..args.swaps)
        .map(|_| {
            let payer = traders[rng.below(traders.len() as u64) as usize];
            pay_fee(ids.next_id(), payer, 1)
        })
        .collect();
    if args.drop_percent > 0.0 {
        println!(
            "  fault injection: {}% of message batches lost in the next two runs",
            args.drop_percent
        );
        cluster
            .faults()
            .set_link_faults(parashard::LinkFaults {
                drop: args.drop_percent / 100.0,
                ..parashard::LinkFaults::default()
            })
            .map_err(parashard::ClusterError::from)?;
    }
    let (spread_tps, spread_ok) = run_batches(cluster, spread, args)?;
    let (hot_tps, hot_ok) = run_batches(cluster, swaps, args)?;
    let (fee_tps, fee_ok) = run_batches(cluster, fees, args)?;
    cluster.heal();
    println!(
        "  cluster, cross-shard transfers, spread   {spread_tps:>11.0} tx/s  ({spread_ok} of {} committed)",
        args.swaps
    );
    println!(
        "  cluster, cross-shard swaps, one hot pool {hot_tps:>11.0} tx/s  {:.3}x spread  ({hot_ok} of {} committed; pool on {pool_shard}, {} traders on the other shards)",
        hot_tps / spread_tps,
        args.swaps,
        traders.len()
    );
    let counted = cluster.get_many_blocking(&[Key::field(FEE_COLLECTOR, 0)])?[0].unwrap_or(0);
    println!(
        "  cluster, cross-shard fees, one hot counter {fee_tps:>9.0} tx/s  {:.3}x spread  ({fee_ok} of {} committed; the counter reads {counted})",
        fee_tps / spread_tps,
        args.swaps,
    );
    Ok(())
}

fn bench_system(args: &ClusterArgs) -> Result<(), CliError> {
    if args.shards < 2
        || args.accounts < 2 * u64::from(args.shards)
        || args.batch == 0
        || args.clients == 0
        || args.txs == 0
    {
        return Err(CliError::Argument(
            "need --shards >= 2, --accounts >= 2 x shards, --batch >= 1, --clients >= 1, --txs >= 1"
                .into(),
        ));
    }
    if args.pool_shard >= args.shards
        || args.max_group == Some(0)
        || !(0.0..=100.0).contains(&args.drop_percent)
    {
        return Err(CliError::Argument(
            "need --pool-shard < --shards, --max-group >= 1 and --drop-percent in 0..=100".into(),
        ));
    }
    println!(
        "parashard bench: {} shards x {} workers, {} accounts, {} transfers per run, batches of {}, {} clients, seed {}",
        args.shards, args.workers, args.accounts, args.txs, args.batch, args.clients, args.seed
    );
    let mut builder = Cluster::builder()
        .shards(args.shards)
        .workers(args.workers)
        .max_in_flight(args.batch * args.clients)
        .place(HOT_POOL, ShardId(args.pool_shard))
        .place(HOT_ISSUER, ShardId(args.pool_shard))
        .place(FEE_COLLECTOR, ShardId(args.pool_shard))
        .contract(FEE_CONTRACT, "pay-fee-1", Arc::new(PayFee))?;
    if let Some(dir) = &args.data_dir {
        bench_recovery::require_empty(dir)?;
        println!("  storage: on disk in {}", dir.display());
        builder = builder.data_dir(dir);
    }
    if args.max_active.is_some() || args.max_group.is_some() {
        let default = CoordinatorConfig::default();
        builder = builder.coordinator(CoordinatorConfig {
            max_active: args.max_active.unwrap_or(default.max_active),
            max_group: args.max_group.unwrap_or(default.max_group),
            ..default
        });
    }
    let cluster = builder.start()?;
    let genesis: Vec<_> = (0..args.accounts)
        .map(|a| (AccountId(a), 1u64 << 40))
        .collect();
    for chunk in genesis.chunks(args.batch) {
        cluster.create_accounts_blocking(chunk)?;
    }
    let mut rng = Rng::new(args.seed);
    let mut ids = TxIds::default();
    let placement = cluster.placement().clone();

    // Baseline in the same run: the parallel executor alone on one state
    // holding every account, blocks of the batch size.
    let blocks: Vec<_> = (0..args.txs.div_ceil(args.batch))
        .map(|_| workload::transfers(&mut rng, &mut ids, args.accounts, args.batch, 100))
        .collect();
    let executor =
        ParallelExecutor::new(args.workers.max(2), Arc::new(Registry::new()))?.adaptive(false);
    let mut state = workload::bank_state(args.accounts, 1 << 40);
    let start = Instant::now();
    for block in &blocks {
        executor.execute_block(&mut state, block)?;
    }
    let baseline = (blocks.len() * args.batch) as f64 / start.elapsed().as_secs_f64();
    println!(
        "  parallel executor alone ({} workers)  {:>11.0} tx/s",
        args.workers.max(2),
        baseline
    );

    for cross in [false, true] {
        let txs = placed_transfers(
            &placement,
            &mut rng,
            &mut ids,
            args.accounts,
            args.txs,
            cross,
        );
        let total = txs.len();
        let (tps, committed) = run_batches(&cluster, txs, args)?;
        println!(
            "  cluster, {:<11} transfers          {:>11.0} tx/s  {:.3}x executor alone  ({} of {} committed)",
            if cross { "cross-shard" } else { "local" },
            tps,
            tps / baseline,
            committed,
            total
        );
    }
    if args.swaps > 0 {
        hot_pool(&cluster, args, &mut rng, &mut ids)?;
    }
    let metrics = cluster.metrics();
    println!(
        "  batch latency p50 {} us, p99 {} us",
        metrics.latency_us_p50, metrics.latency_us_p99
    );
    bench_recovery::print_storage_stats(&cluster.storage_stats());
    cluster.shutdown();
    Ok(())
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
        "groups: {} group commits of {} transactions, the largest {}",
        total.group_commits, total.grouped_transactions, total.largest_group
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
