//! `parashard bench`: the whole system on a chosen workload, each phase
//! beside the executor alone on the same transactions, with per-transaction
//! latency, failure reasons, per-shard load, JSON output and sweeps.
//!
//! The JSON schema is documented in `docs/BENCH_JSON.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

use parashard::prelude::*;
use parashard::protocols::placement::Placement;
use parashard::protocols::workload::{Rng, TxIds};

use crate::bench_recovery;
use crate::CliError;

/// The NFT market of `examples/nft_market.rs`, so that the dApp mix runs
/// the contract readers read (its `main` and `run` go unused here).
#[allow(dead_code)]
#[path = "../../examples/nft_market.rs"]
mod nft_market;

use nft_market::{Market, MARKET};

/// The workloads `bench` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Local and cross-shard transfers, then swaps on one hot pool and fees
    /// to one hot counter beside as many spread cross-shard transfers.
    All,
    /// Coin transfers (`--cross-percent`, `--skew` over accounts).
    Transfer,
    /// Swaps of traders on every shard against `--pools` pools (`--skew`
    /// over pools: a high skew makes one pool hot).
    Swap,
    /// A dApp mix: 50% transfers, 20% swaps, 10% fee payments through a
    /// user contract, 20% NFT sales through the `nft_market` example's
    /// contract (each sale buys a token minted and listed in the set-up).
    Mixed,
}

/// A parameter `--sweep` varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepParam {
    /// `--cross-percent`.
    CrossPercent,
    /// `--shards`.
    Shards,
    /// `--skew`.
    Skew,
    /// `--batch`.
    Batch,
    /// `--pools`.
    Pools,
}

/// `--sweep NAME=V1,V2,...`.
#[derive(Clone, Debug)]
pub struct Sweep {
    param: SweepParam,
    values: Vec<f64>,
}

impl std::str::FromStr for Sweep {
    type Err = String;

    fn from_str(text: &str) -> Result<Sweep, String> {
        let (name, values) = text
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=V1,V2,... in {text:?}"))?;
        let param = match name {
            "cross-percent" => SweepParam::CrossPercent,
            "shards" => SweepParam::Shards,
            "skew" => SweepParam::Skew,
            "batch" => SweepParam::Batch,
            "pools" => SweepParam::Pools,
            other => {
                return Err(format!(
                    "cannot sweep {other:?}: one of cross-percent, shards, skew, batch, pools"
                ))
            }
        };
        let values = values
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{v:?} is not a number"))
            })
            .collect::<Result<Vec<f64>, String>>()?;
        if values.len() < 2 {
            return Err("a sweep needs at least two values".into());
        }
        Ok(Sweep { param, values })
    }
}

/// `parashard bench` arguments.
#[derive(clap::Args, Clone, Debug)]
pub struct SystemArgs {
    /// What to run.
    #[arg(long, value_enum, default_value_t = Workload::All)]
    workload: Workload,
    /// Shards.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Executor workers per shard.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Accounts (spread over the shards by hash).
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Transactions per phase (`all`: per transfer phase).
    #[arg(long, default_value_t = 1_000_000)]
    txs: usize,
    /// Transactions per submitted batch.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Client threads submitting concurrently.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Percent of transfers whose payee is on another shard than the payer
    /// (default: payees drawn from all accounts).
    #[arg(long)]
    cross_percent: Option<u64>,
    /// Zipf exponent of popularity: of accounts (payers and payees of
    /// transfers) and of pools (swaps). 0 is uniform.
    #[arg(long, default_value_t = 0.0)]
    skew: f64,
    /// Pools of the `swap` and `mixed` workloads, spread over the shards.
    #[arg(long, default_value_t = 16)]
    pools: u64,
    /// `all`: cross-shard swaps against one hot pool, fees to one hot
    /// counter and spread cross-shard transfers, as many of each (0 skips
    /// them).
    #[arg(long, default_value_t = 30_000)]
    swaps: usize,
    /// `all`: local transfers signed with ed25519 by accounts that hold
    /// keys, beside the unsigned local transfers (0 skips them).
    #[arg(long, default_value_t = 100_000)]
    signed: usize,
    /// `all`: traders of the hot pool, all on other shards than the pool.
    #[arg(long, default_value_t = 3_000)]
    traders: u64,
    /// The shard of the first (in `all`: the hot) pool.
    #[arg(long, default_value_t = 0)]
    pool_shard: u32,
    /// Keep shard and coordinator logs on disk in this (new or empty)
    /// directory instead of in memory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The most cross-shard units in two-phase commit at once (default:
    /// the cluster's; see `CoordinatorConfig::max_active`).
    #[arg(long)]
    max_active: Option<usize>,
    /// The most transactions the coordinator runs as one group; 1 turns
    /// grouping off (default: the coordinator's).
    #[arg(long)]
    max_group: Option<usize>,
    /// Percent of message batches between the coordinator and the shards
    /// lost during the hot-key phases of `all` (fault injection).
    #[arg(long, default_value_t = 0.0)]
    drop_percent: f64,
    /// Write every figure as JSON to this file (schema:
    /// docs/BENCH_JSON.md).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run once per value of a parameter and plot committed tx/s and p99
    /// latency against it: NAME=V1,V2,... with NAME one of
    /// cross-percent, shards, skew, batch, pools.
    #[arg(long)]
    sweep: Option<Sweep>,
    /// Where `--sweep` writes its plot.
    #[arg(long, default_value = "bench-sweep.svg")]
    plot: PathBuf,
}

impl SystemArgs {
    fn validate(&self) -> Result<(), CliError> {
        let bad = |what: &str| Err(CliError::Argument(what.into()));
        if self.shards < 2 || self.accounts < 2 * u64::from(self.shards) {
            return bad("need --shards >= 2 and --accounts >= 2 x shards");
        }
        if self.batch == 0 || self.clients == 0 || self.txs == 0 {
            return bad("need --batch >= 1, --clients >= 1, --txs >= 1");
        }
        if self.pool_shard >= self.shards || self.max_group == Some(0) {
            return bad("need --pool-shard < --shards and --max-group >= 1");
        }
        if !(0.0..=100.0).contains(&self.drop_percent) {
            return bad("need --drop-percent in 0..=100");
        }
        if self.cross_percent.is_some_and(|p| p > 100) {
            return bad("need --cross-percent in 0..=100");
        }
        if !(0.0..=10.0).contains(&self.skew) || self.skew.is_nan() {
            return bad("need --skew in 0..=10");
        }
        if self.pools == 0 || self.pools > self.accounts {
            return bad("need --pools in 1..=accounts");
        }
        Ok(())
    }

    /// These arguments with the swept parameter set to `value`.
    fn at(&self, param: SweepParam, value: f64) -> Result<SystemArgs, CliError> {
        let whole = |name: &str| {
            if value >= 0.0 && value.fract() == 0.0 {
                Ok(value as u64)
            } else {
                Err(CliError::Argument(format!(
                    "--sweep {name}: {value} is not a whole number"
                )))
            }
        };
        let mut args = self.clone();
        match param {
            SweepParam::CrossPercent => args.cross_percent = Some(whole("cross-percent")?),
            SweepParam::Shards => {
                args.shards = u32::try_from(whole("shards")?)
                    .map_err(|_| CliError::Argument("--sweep shards: too many".into()))?
            }
            SweepParam::Skew => args.skew = value,
            SweepParam::Batch => args.batch = whole("batch")? as usize,
            SweepParam::Pools => args.pools = whole("pools")?,
        }
        args.validate()?;
        Ok(args)
    }
}

/// The hot pool of `all` (the first pool of the others) and the account
/// that seeds every pool.
const POOL_BASE: u64 = u64::MAX - 1_000_000;
const ISSUER: AccountId = AccountId(u64::MAX - 2);
/// The token every pool trades against the coin.
const TOKEN: AssetId = AssetId(1);
/// The fee collector of the fee payments, on the first pool's shard, and
/// the contract that pays it.
const FEE_COLLECTOR: AccountId = AccountId(u64::MAX - 3);
const FEE_CONTRACT: ContractId = ContractId(1);
/// Coins (and tokens) every account and the issuer start with.
const GENESIS: Value = 1 << 40;

fn pool(i: u64) -> AccountId {
    AccountId(POOL_BASE + i)
}

/// NFT token accounts of the `mixed` workload, one per sale, start here
/// (far above the traders, below the pools).
const NFT_BASE: u64 = 1 << 48;
/// A token's listing price and its creator's royalty.
const NFT_PRICE: Value = 1_000;
const NFT_ROYALTY_BPS: Value = 250;

fn nft(i: u64) -> AccountId {
    AccountId(NFT_BASE + i)
}

/// What transaction number `i` of the `mixed` workload is: a fixed cycle
/// of ten, so that the set-up knows how many tokens the sales need.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MixedKind {
    Transfer,
    Swap,
    Fee,
    NftSale,
}

fn mixed_kind(i: u64) -> MixedKind {
    match i % 10 {
        0..=4 => MixedKind::Transfer,
        5 | 6 => MixedKind::Swap,
        7 => MixedKind::Fee,
        _ => MixedKind::NftSale,
    }
}

/// How many NFT sales a `mixed` phase of `txs` transactions holds.
fn nft_sales(txs: u64) -> u64 {
    (0..txs)
        .filter(|&i| mixed_kind(i) == MixedKind::NftSale)
        .count() as u64
}

/// Pays `args[0]` coins from the sender to [`FEE_COLLECTOR`] and counts
/// the payment in the collector's field 0: a fee collector every
/// transaction of every shard adds to.
struct PayFee;

impl Contract for PayFee {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let fee = args.first().copied().unwrap_or(1);
        ctx.debit(Key::balance(ctx.sender(), AssetId::COIN), fee)?;
        // Add keys: the payment adds to the collector without reading it.
        ctx.add(Key::balance(FEE_COLLECTOR, AssetId::COIN), fee)?;
        ctx.add(Key::field(FEE_COLLECTOR, 0), 1)?;
        Ok(fee.into())
    }
}

/// A fee payment of `sender` through [`PayFee`].
fn pay_fee(id: TxId, sender: AccountId, fee: Value) -> Transaction {
    let access = AccessSet::with_adds(
        [],
        [Key::balance(sender, AssetId::COIN)],
        [
            Key::balance(FEE_COLLECTOR, AssetId::COIN),
            Key::field(FEE_COLLECTOR, 0),
        ],
    );
    ContractCall {
        sender,
        contract: FEE_CONTRACT,
        args: vec![fee],
        access,
    }
    .with_id(id)
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(FEE_CONTRACT, "pay-fee-1", Arc::new(PayFee))
        .expect("one registration");
    registry
        .register(MARKET, "nft-market-1", Arc::new(Market))
        .expect("one registration");
    registry
}

/// Where the generated transactions come from: accounts by shard, and the
/// seeded generators.
struct Generator {
    placement: Placement,
    by_shard: Vec<Vec<u64>>,
    accounts: u64,
    rng: Rng,
    zipf_rng: StdRng,
    ids: TxIds,
    skew: f64,
}

impl Generator {
    fn new(placement: Placement, args: &SystemArgs) -> Generator {
        let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); placement.shards() as usize];
        for a in 0..args.accounts {
            by_shard[placement.shard_of_account(AccountId(a)).0 as usize].push(a);
        }
        Generator {
            placement,
            by_shard,
            accounts: args.accounts,
            rng: Rng::new(args.seed),
            zipf_rng: StdRng::seed_from_u64(args.seed ^ 0x5eed),
            ids: TxIds::default(),
            skew: args.skew,
        }
    }

    /// An index in `0..n`: uniform, or Zipf-distributed under `--skew`
    /// (index 0 the most popular).
    fn pick(&mut self, n: u64) -> u64 {
        if self.skew == 0.0 || n == 1 {
            return self.rng.below(n);
        }
        let zipf = Zipf::new(n, self.skew).expect("n >= 1 and skew >= 0, validated");
        zipf.sample(&mut self.zipf_rng) as u64 - 1
    }

    /// A transfer: the payer by popularity; the payee on another shard with
    /// probability `cross_percent` (else on the payer's), or from all
    /// accounts when `None`.
    fn transfer(&mut self, cross_percent: Option<u64>) -> Transaction {
        loop {
            let from = self.pick(self.accounts);
            let home = self.placement.shard_of_account(AccountId(from)).0 as usize;
            let to = match cross_percent {
                None => self.pick(self.accounts),
                Some(percent) => {
                    let shards = self.by_shard.len();
                    let shard = if self.rng.chance(percent) {
                        (home + 1 + self.rng.below(shards as u64 - 1) as usize) % shards
                    } else {
                        home
                    };
                    let bucket = &self.by_shard[shard];
                    bucket[self.rng.below(bucket.len() as u64) as usize]
                }
            };
            if to != from {
                let amount = 1 + self.rng.below(100);
                return Transfer {
                    from: AccountId(from),
                    to: AccountId(to),
                    amount,
                }
                .with_id(self.ids.next_id());
            }
        }
    }

    fn swap(&mut self, trader: AccountId, pools: u64) -> Transaction {
        Swap {
            trader,
            pool: pool(self.pick(pools)),
            asset_in: AssetId::COIN,
            asset_out: TOKEN,
            amount_in: 1 + self.rng.below(1_000),
            min_out: 1,
        }
        .with_id(self.ids.next_id())
    }

    fn any_account(&mut self) -> AccountId {
        AccountId(self.rng.below(self.accounts))
    }

    /// The creator of NFT token `i`: spread over the accounts, so that
    /// royalties do not all go to one key.
    fn nft_creator(&self, i: u64) -> AccountId {
        AccountId(i.wrapping_mul(0x9E37_79B9) % self.accounts)
    }
}

/// One timed phase: its transactions and what its ratio line compares.
struct Phase {
    name: &'static str,
    /// What runs, untimed, just before the phase (on the cluster and the
    /// reference executor), each step a batch that must commit whole.
    setup: Vec<Vec<Transaction>>,
    txs: Vec<Transaction>,
    /// Makes `txs` just before the phase, if they are costly to hold
    /// through the phases before (signed transactions).
    make: Option<fn(&SystemArgs, &mut Generator) -> Vec<Transaction>>,
    /// Another phase this one's throughput is compared with.
    beside: Option<&'static str>,
    /// Fault injection during the phase.
    drop_percent: f64,
}

/// Figures of one phase.
#[derive(Serialize, Debug)]
struct PhaseReport {
    name: String,
    transactions: usize,
    seconds: f64,
    committed: u64,
    failed: u64,
    unknown: u64,
    committed_per_s: f64,
    failed_per_s: f64,
    latency_us: LatencyReport,
    executor_alone_per_s: f64,
    ratio_to_executor: f64,
    beside: Option<Beside>,
    kinds: BTreeMap<String, KindReport>,
    failures: BTreeMap<String, u64>,
    shard_load: Vec<f64>,
}

#[derive(Serialize, Debug)]
struct LatencyReport {
    p50: u64,
    p99: u64,
    p999: u64,
}

#[derive(Serialize, Debug)]
struct Beside {
    phase: String,
    ratio: f64,
}

#[derive(Serialize, Debug, Default)]
struct KindReport {
    committed: u64,
    failed: u64,
}

/// Figures of one run (one point of a sweep).
#[derive(Serialize, Debug)]
struct RunReport {
    workload: Workload,
    shards: u32,
    workers: usize,
    accounts: u64,
    batch: usize,
    clients: usize,
    seed: u64,
    cross_percent: Option<u64>,
    skew: f64,
    pools: u64,
    storage: String,
    phases: Vec<PhaseReport>,
    checks: BTreeMap<String, String>,
    logs: BTreeMap<String, LogReport>,
}

/// What a log did over the run.
#[derive(Serialize, Debug)]
struct LogReport {
    appends: u64,
    syncs: u64,
    records: u64,
    bytes: u64,
    snapshots: u64,
}

#[derive(Serialize, Debug)]
struct SweepReport {
    parameter: SweepParam,
    values: Vec<f64>,
    plot: PathBuf,
    runs: Vec<RunReport>,
}

/// `parashard bench`.
pub fn run(args: &SystemArgs) -> Result<(), CliError> {
    args.validate()?;
    let Some(sweep) = &args.sweep else {
        let report = run_once(args)?;
        print_report(&report);
        if let Some(path) = &args.json {
            write_json(path, &report)?;
        }
        return Ok(());
    };
    if args.workload == Workload::All {
        return Err(CliError::Argument(
            "--sweep needs one workload: --workload transfer, swap or mixed".into(),
        ));
    }
    if args.data_dir.is_some() {
        return Err(CliError::Argument(
            "--sweep runs in memory (a data directory is for one run)".into(),
        ));
    }
    let mut runs = Vec::new();
    for &value in &sweep.values {
        let point = args.at(sweep.param, value)?;
        let report = run_once(&point)?;
        print_report(&report);
        runs.push(report);
    }
    plot(&args.plot, sweep, &runs)?;
    println!("plot: {}", args.plot.display());
    let report = SweepReport {
        parameter: sweep.param,
        values: sweep.values.clone(),
        plot: args.plot.clone(),
        runs,
    };
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn write_json(path: &Path, report: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(report).expect("reports serialise");
    std::fs::write(path, text + "\n")
        .map_err(|e| CliError::Argument(format!("--json {}: {e}", path.display())))?;
    println!("json: {}", path.display());
    Ok(())
}

fn start_cluster(args: &SystemArgs) -> Result<Cluster, CliError> {
    let first_pool_shard = |i: u64| ShardId((args.pool_shard + i as u32) % args.shards);
    let pools = (0..args.pools).map(|i| (pool(i), first_pool_shard(i)));
    let mut builder = Cluster::builder()
        .shards(args.shards)
        .workers(args.workers)
        .max_in_flight(args.batch * args.clients)
        .place_all(pools)
        .place(ISSUER, ShardId(args.pool_shard))
        .place(FEE_COLLECTOR, ShardId(args.pool_shard))
        .contract(FEE_CONTRACT, "pay-fee-1", Arc::new(PayFee))?
        .contract(MARKET, "nft-market-1", Arc::new(Market))?;
    if let Some(dir) = &args.data_dir {
        bench_recovery::require_empty(dir)?;
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
    Ok(builder.start()?)
}

/// Genesis and set-up: every account, the issuer, the token, the pools
/// with liquidity, the fee collector. Returns the set-up transactions, to
/// build the executor's reference state the same way.
fn set_up(
    cluster: &Cluster,
    args: &SystemArgs,
    gen: &mut Generator,
) -> Result<Vec<Transaction>, CliError> {
    let mut genesis: Vec<Transaction> = (0..args.accounts)
        .map(|a| CreateAccount {
            account: AccountId(a),
            balance: GENESIS,
        })
        .chain([
            CreateAccount {
                account: ISSUER,
                balance: GENESIS,
            },
            CreateAccount {
                account: FEE_COLLECTOR,
                balance: 0,
            },
        ])
        .map(|part| part.with_id(gen.ids.next_id()))
        .collect();
    let mut setup = vec![
        CreateAsset {
            issuer: ISSUER,
            asset: TOKEN,
        }
        .with_id(gen.ids.next_id()),
        Mint {
            issuer: ISSUER,
            asset: TOKEN,
            to: ISSUER,
            amount: GENESIS,
        }
        .with_id(gen.ids.next_id()),
    ];
    let depth = GENESIS / (2 * args.pools);
    for i in 0..args.pools {
        setup.push(
            CreatePool {
                creator: ISSUER,
                pool: pool(i),
                asset_a: AssetId::COIN,
                asset_b: TOKEN,
                fee_bps: 30,
            }
            .with_id(gen.ids.next_id()),
        );
        setup.push(
            AddLiquidity {
                provider: ISSUER,
                pool: pool(i),
                asset_a: AssetId::COIN,
                asset_b: TOKEN,
                amount_a: depth,
                amount_b: depth,
            }
            .with_id(gen.ids.next_id()),
        );
    }
    for chunk in genesis.chunks(args.batch) {
        expect_all_committed("genesis", cluster.submit_batch_blocking(chunk.to_vec())?)?;
    }
    // In order: each step needs the one before.
    for tx in &setup {
        expect_all_committed("set-up", vec![cluster.submit_blocking(tx.clone())?])?;
    }
    genesis.extend(setup);
    if args.workload == Workload::Mixed {
        // Every sale buys a token of its own, minted and listed here by its
        // creator: mints first, then listings, each step a batch.
        let tokens = nft_sales(args.txs as u64);
        let mints: Vec<_> = (0..tokens)
            .map(|i| {
                Market::mint(
                    gen.ids.next_id(),
                    gen.nft_creator(i),
                    nft(i),
                    NFT_ROYALTY_BPS,
                )
            })
            .collect();
        let listings: Vec<_> = (0..tokens)
            .map(|i| Market::list(gen.ids.next_id(), gen.nft_creator(i), nft(i), NFT_PRICE))
            .collect();
        for (step, txs) in [("NFT mints", mints), ("NFT listings", listings)] {
            for chunk in txs.chunks(args.batch) {
                expect_all_committed(step, cluster.submit_batch_blocking(chunk.to_vec())?)?;
            }
            genesis.extend(txs);
        }
    }
    Ok(genesis)
}

fn expect_all_committed(what: &str, receipts: Vec<Receipt>) -> Result<(), CliError> {
    match receipts.iter().find(|r| !r.is_committed()) {
        None => Ok(()),
        Some(receipt) => Err(CliError::Argument(format!(
            "{what} failed: {}",
            receipt.status
        ))),
    }
}

/// Accounts of the signed phase, each holding a key.
const SIGNERS: u64 = 10_000;
/// The first of them.
const SIGNER_BASE: u64 = 1 << 40;

fn signer_account(i: u64) -> AccountId {
    AccountId(SIGNER_BASE + i)
}

/// Signer `i`'s secret key, derived from `i` (a benchmark's, not secret).
fn signing_key(i: u64) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    seed[8] = 0x5e;
    SigningKey::from_bytes(&seed)
}

/// `args.signed` local transfers, each signed by its sender. Each batch
/// has senders of its own, so that one sender's transfers, in sequence
/// order, run in one block in order whatever the clients' interleaving.
fn signed_transfers(args: &SystemArgs, gen: &mut Generator) -> Vec<Transaction> {
    use rayon::prelude::*;
    let batches = args.signed.div_ceil(args.batch).max(1) as u64;
    let per_batch = (SIGNERS / batches).max(1);
    let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); gen.placement.shards() as usize];
    for i in 0..SIGNERS {
        by_shard[gen.placement.shard_of_account(signer_account(i)).0 as usize].push(i);
    }
    let mut sequences = vec![0u64; SIGNERS as usize];
    let unsigned: Vec<(Transaction, u64, u64)> = (0..args.signed)
        .map(|n| {
            let batch = (n / args.batch) as u64 % batches;
            let from = (batch * per_batch + gen.rng.below(per_batch)) % SIGNERS;
            let shard = &by_shard[gen.placement.shard_of_account(signer_account(from)).0 as usize];
            let to = shard[gen.rng.below(shard.len() as u64) as usize];
            let tx = Transaction::transfer(
                gen.ids.next_id(),
                signer_account(from),
                signer_account(to),
                1,
            );
            let sequence = sequences[from as usize];
            sequences[from as usize] += 1;
            (tx, from, sequence)
        })
        .collect();
    // Signing is the client's work, done before the phase is timed.
    unsigned
        .into_par_iter()
        .map(|(tx, from, sequence)| tx.sign(0, sequence, &signing_key(from)))
        .collect()
}

/// The phases of `args.workload`.
fn phases(args: &SystemArgs, gen: &mut Generator) -> Result<Vec<Phase>, CliError> {
    let phase = |name, txs| Phase {
        name,
        setup: Vec::new(),
        make: None,
        txs,
        beside: None,
        drop_percent: 0.0,
    };
    let phases = match args.workload {
        Workload::All => {
            let local = (0..args.txs).map(|_| gen.transfer(Some(0))).collect();
            let cross = (0..args.txs).map(|_| gen.transfer(Some(100))).collect();
            let mut phases = vec![
                phase("local transfers", local),
                phase("cross-shard transfers", cross),
            ];
            if args.swaps > 0 {
                let pool_shard = ShardId(args.pool_shard);
                let placement = gen.placement.clone();
                let traders: Vec<AccountId> = (0..args.accounts)
                    .map(AccountId)
                    .filter(|a| placement.shard_of_account(*a) != pool_shard)
                    .take(args.traders as usize)
                    .collect();
                if traders.is_empty() {
                    return Err(CliError::Argument("no trader off the pool's shard".into()));
                }
                let trader =
                    |gen: &mut Generator| traders[gen.rng.below(traders.len() as u64) as usize];
                let spread = (0..args.swaps).map(|_| gen.transfer(Some(100))).collect();
                let swaps = (0..args.swaps)
                    .map(|_| {
                        let who = trader(gen);
                        gen.swap(who, 1)
                    })
                    .collect();
                let fees = (0..args.swaps)
                    .map(|_| {
                        let who = trader(gen);
                        pay_fee(gen.ids.next_id(), who, 1)
                    })
                    .collect();
                let hot = |name, txs| Phase {
                    name,
                    setup: Vec::new(),
                    make: None,
                    txs,
                    beside: Some("spread cross-shard transfers"),
                    drop_percent: args.drop_percent,
                };
                phases.push(Phase {
                    drop_percent: args.drop_percent,
                    ..phase("spread cross-shard transfers", spread)
                });
                phases.push(hot("swaps, one hot pool", swaps));
                phases.push(hot("fees, one hot counter", fees));
            }
            if args.signed > 0 {
                // The signers and their keys come just before their
                // phase, so that the phases before run as without them.
                let accounts = (0..SIGNERS)
                    .map(|i| {
                        CreateAccount {
                            account: signer_account(i),
                            balance: GENESIS,
                        }
                        .with_id(gen.ids.next_id())
                    })
                    .collect();
                let keys = (0..SIGNERS)
                    .map(|i| {
                        let key = PublicKey::of(&signing_key(i));
                        Transaction::set_public_key(gen.ids.next_id(), signer_account(i), key)
                    })
                    .collect();
                phases.push(Phase {
                    setup: vec![accounts, keys],
                    make: Some(signed_transfers),
                    beside: Some("local transfers"),
                    ..phase("signed local transfers", Vec::new())
                });
            }
            phases
        }
        Workload::Transfer => {
            let txs = (0..args.txs)
                .map(|_| gen.transfer(args.cross_percent))
                .collect();
            vec![phase("transfers", txs)]
        }
        Workload::Swap => {
            let txs = (0..args.txs)
                .map(|_| {
                    let trader = gen.any_account();
                    gen.swap(trader, args.pools)
                })
                .collect();
            vec![phase("swaps", txs)]
        }
        Workload::Mixed => {
            let mut sold = 0;
            let txs = (0..args.txs as u64)
                .map(|i| match mixed_kind(i) {
                    MixedKind::Transfer => gen.transfer(args.cross_percent),
                    MixedKind::Swap => {
                        let trader = gen.any_account();
                        gen.swap(trader, args.pools)
                    }
                    MixedKind::Fee => {
                        let payer = gen.any_account();
                        pay_fee(gen.ids.next_id(), payer, 1)
                    }
                    MixedKind::NftSale => {
                        let (token, creator) = (nft(sold), gen.nft_creator(sold));
                        sold += 1;
                        let buyer = gen.any_account();
                        let id = gen.ids.next_id();
                        Market::buy(id, buyer, token, creator, creator, NFT_PRICE)
                    }
                })
                .collect();
            vec![phase("dApp mix", txs)]
        }
    };
    Ok(phases)
}

fn run_once(args: &SystemArgs) -> Result<RunReport, CliError> {
    let cluster = start_cluster(args)?;
    let mut gen = Generator::new(cluster.placement().clone(), args);
    let setup = set_up(&cluster, args, &mut gen)?;
    let phases = phases(args, &mut gen)?;

    // The reference: the parallel executor alone on one state holding
    // everything, the same set-up and then each phase's transactions in
    // blocks of the batch size, in the same order as the cluster.
    let executor =
        ParallelExecutor::new(args.workers.max(2), Arc::new(registry()))?.adaptive(false);
    let mut state = State::with_capacity(args.accounts as usize + 1_024);
    for block in setup.chunks(args.batch) {
        executor.execute_block(&mut state, block)?;
    }

    let mut reports: Vec<PhaseReport> = Vec::new();
    for mut phase in phases {
        if let Some(make) = phase.make {
            phase.txs = make(args, &mut gen);
        }
        for step in std::mem::take(&mut phase.setup) {
            for block in step.chunks(args.batch) {
                executor.execute_block(&mut state, block)?;
                expect_all_committed(phase.name, cluster.submit_batch_blocking(block.to_vec())?)?;
            }
        }
        let start = Instant::now();
        for block in phase.txs.chunks(args.batch) {
            executor.execute_block(&mut state, block)?;
        }
        let executor_alone = phase.txs.len() as f64 / start.elapsed().as_secs_f64();
        let load = shard_load(&gen.placement, &phase.txs);
        let beside = phase.beside;
        let mut report = run_phase(&cluster, args, phase)?;
        report.executor_alone_per_s = executor_alone;
        report.ratio_to_executor = report.committed_per_s / executor_alone;
        report.shard_load = load;
        if let Some(other) = beside {
            if let Some(base) = reports.iter().find(|r| r.name == other) {
                report.beside = Some(Beside {
                    phase: other.to_string(),
                    ratio: report.committed_per_s / base.committed_per_s,
                });
            }
        }
        reports.push(report);
    }
    let mut checks = BTreeMap::new();
    let committed_of = |kind: &str| {
        reports
            .iter()
            .filter_map(|r| r.kinds.get(kind))
            .map(|k| k.committed)
            .sum::<u64>()
    };
    let paid = committed_of("fee");
    if paid > 0 {
        let counted = cluster.get_many_blocking(&[Key::field(FEE_COLLECTOR, 0)])?[0].unwrap_or(0);
        record_check(
            &mut checks,
            "fee counter",
            counted == paid,
            format!("reads {counted}, {paid} fees committed"),
        )?;
    }
    if args.workload == Workload::Mixed {
        // A sold token is delisted (price 0); the others keep their price.
        let sales = committed_of("nft sale");
        let prices: Vec<Key> = (0..nft_sales(args.txs as u64))
            .map(|i| Key::field(nft(i), nft_market::PRICE))
            .collect();
        let delisted = cluster
            .get_many_blocking(&prices)?
            .into_iter()
            .filter(|price| *price == Some(0))
            .count() as u64;
        record_check(
            &mut checks,
            "nft sales",
            delisted == sales,
            format!("{delisted} tokens sold, {sales} sales committed"),
        )?;
    }
    let storage = match &args.data_dir {
        Some(dir) => format!("disk: {}", dir.display()),
        None => "memory".to_string(),
    };
    let stats = cluster.storage_stats();
    let logs = [("shards", stats.shards), ("coordinator", stats.coordinator)]
        .into_iter()
        .map(|(who, log)| {
            let report = LogReport {
                appends: log.appends,
                syncs: log.syncs,
                records: log.records,
                bytes: log.bytes,
                snapshots: log.snapshots,
            };
            (who.to_string(), report)
        })
        .collect();
    cluster.shutdown();
    Ok(RunReport {
        workload: args.workload,
        shards: args.shards,
        workers: args.workers,
        accounts: args.accounts,
        batch: args.batch,
        clients: args.clients,
        seed: args.seed,
        cross_percent: args.cross_percent,
        skew: args.skew,
        pools: args.pools,
        storage,
        phases: reports,
        checks,
        logs,
    })
}

/// Records consistency check `name` as `ok: detail`; a check that does
/// not hold ends the run with an error naming it.
fn record_check(
    checks: &mut BTreeMap<String, String>,
    name: &str,
    holds: bool,
    detail: String,
) -> Result<(), CliError> {
    if !holds {
        return Err(CliError::Argument(format!("check {name} failed: {detail}")));
    }
    checks.insert(name.to_string(), format!("ok: {detail}"));
    Ok(())
}

/// The share of a phase's transactions that touch each shard.
fn shard_load(placement: &Placement, txs: &[Transaction]) -> Vec<f64> {
    let mut touched = vec![0u64; placement.shards() as usize];
    let mut seen = Vec::new();
    for tx in txs {
        seen.clear();
        for key in tx.access.keys() {
            let shard = placement.shard_of(key).0 as usize;
            if !seen.contains(&shard) {
                seen.push(shard);
                touched[shard] += 1;
            }
        }
    }
    let n = txs.len().max(1) as f64;
    touched.into_iter().map(|t| t as f64 / n).collect()
}

fn kind_of(tx: &Transaction) -> &'static str {
    match tx.call {
        Call::Transfer { .. } => "transfer",
        Call::Swap { .. } => "swap",
        Call::Custom { contract, .. } if contract == FEE_CONTRACT => "fee",
        Call::Custom { contract, .. } if contract == MARKET => "nft sale",
        _ => "other",
    }
}

/// The kind of an error without its figures ("insufficient funds: ...").
fn reason_of(error: &TxError) -> String {
    let text: String = error
        .to_string()
        .chars()
        .take_while(|c| !c.is_ascii_digit())
        .collect();
    text.trim_end().trim_end_matches(':').to_string()
}

/// Submits a phase's transactions in batches from `--clients` threads.
fn run_phase(cluster: &Cluster, args: &SystemArgs, phase: Phase) -> Result<PhaseReport, CliError> {
    if phase.drop_percent > 0.0 {
        cluster
            .faults()
            .set_link_faults(parashard::LinkFaults {
                drop: phase.drop_percent / 100.0,
                ..parashard::LinkFaults::default()
            })
            .map_err(parashard::ClusterError::from)?;
    }
    let kinds: Vec<&'static str> = phase.txs.iter().map(kind_of).collect();
    let total = phase.txs.len();
    // Each batch is handed over whole (a client submits what it owns): the
    // timed part copies no transaction on the client side.
    let mut batches = Vec::with_capacity(total.div_ceil(args.batch));
    let mut rest = phase.txs;
    // From the back, so that each split moves only the batch it takes.
    while !rest.is_empty() {
        let last = (rest.len() - 1) / args.batch * args.batch;
        let batch = rest.split_off(last);
        batches.push((last, batch));
    }
    batches.reverse();
    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template("  {msg:<30} {wide_bar} {pos}/{len} {per_sec}")
            .expect("a valid template"),
    );
    progress.set_message(phase.name);
    let queue = Mutex::new(batches.into_iter());
    let outcome = Mutex::new(Outcome::default());
    let failure = Mutex::new(None);
    let submitted = AtomicUsize::new(0);
    cluster.reset_metrics();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.clients {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some((offset, batch)) = next else { break };
                if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    break;
                }
                let len = batch.len();
                match cluster.submit_batch_blocking(batch) {
                    Ok(receipts) => {
                        let mut outcome = outcome.lock().unwrap_or_else(|e| e.into_inner());
                        outcome.add(&receipts, &kinds[offset..offset + len]);
                        submitted.fetch_add(len, Ordering::Relaxed);
                        progress.inc(len as u64);
                    }
                    Err(error) => {
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                        break;
                    }
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    cluster.heal();
    if let Some(error) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(error.into());
    }
    let metrics = cluster.metrics();
    let outcome = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(PhaseReport {
        name: phase.name.to_string(),
        transactions: total,
        seconds,
        committed: outcome.committed,
        failed: outcome.failed,
        unknown: outcome.unknown,
        committed_per_s: outcome.committed as f64 / seconds,
        failed_per_s: outcome.failed as f64 / seconds,
        latency_us: LatencyReport {
            p50: metrics.latency_us_p50,
            p99: metrics.latency_us_p99,
            p999: metrics.latency_us_p999,
        },
        executor_alone_per_s: 0.0,
        ratio_to_executor: 0.0,
        beside: None,
        kinds: outcome.kinds,
        failures: outcome.failures,
        shard_load: Vec::new(),
    })
}

#[derive(Default)]
struct Outcome {
    committed: u64,
    failed: u64,
    unknown: u64,
    kinds: BTreeMap<String, KindReport>,
    failures: BTreeMap<String, u64>,
}

impl Outcome {
    fn add(&mut self, receipts: &[Receipt], kinds: &[&'static str]) {
        for (receipt, kind) in receipts.iter().zip(kinds) {
            let entry = self.kinds.entry(kind.to_string()).or_default();
            match &receipt.status {
                Status::Committed { .. } => {
                    self.committed += 1;
                    entry.committed += 1;
                }
                Status::Failed(error) => {
                    self.failed += 1;
                    entry.failed += 1;
                    *self.failures.entry(reason_of(error)).or_default() += 1;
                }
                _ => self.unknown += 1,
            }
        }
    }
}

fn si(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn print_report(report: &RunReport) {
    println!(
        "parashard bench: workload {}, {} shards x {} workers, {} accounts, batches of {}, {} clients, seed {}, {}{}{}",
        serde_json::to_value(report.workload)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        report.shards,
        report.workers,
        report.accounts,
        report.batch,
        report.clients,
        report.seed,
        report.storage,
        report
            .cross_percent
            .map(|p| format!(", {p}% cross-shard"))
            .unwrap_or_default(),
        if report.skew > 0.0 {
            format!(", skew {}", report.skew)
        } else {
            String::new()
        },
    );
    println!(
        "  {:<30} {:>8} {:>11} {:>9} {:>8} {:>8} {:>8} {:>14} {:>7}",
        "phase",
        "txs",
        "committed/s",
        "failed/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "executor alone",
        "ratio"
    );
    for phase in &report.phases {
        let ms = |us: u64| us as f64 / 1_000.0;
        println!(
            "  {:<30} {:>8} {:>11} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>14} {:>6.3}x{}",
            phase.name,
            phase.transactions,
            si(phase.committed_per_s),
            si(phase.failed_per_s),
            ms(phase.latency_us.p50),
            ms(phase.latency_us.p99),
            ms(phase.latency_us.p999),
            si(phase.executor_alone_per_s),
            phase.ratio_to_executor,
            phase
                .beside
                .as_ref()
                .map(|b| format!("  ({:.3}x {})", b.ratio, b.phase))
                .unwrap_or_default(),
        );
    }
    for phase in &report.phases {
        if phase.kinds.len() > 1 {
            let kinds: Vec<String> = phase
                .kinds
                .iter()
                .map(|(kind, k)| format!("{kind} {} committed, {} failed", k.committed, k.failed))
                .collect();
            println!("  {}: {}", phase.name, kinds.join("; "));
        }
        for (reason, count) in &phase.failures {
            println!("  {}: failed {count} x {reason}", phase.name);
        }
        if phase.unknown > 0 {
            println!("  {}: {} outcomes unknown", phase.name, phase.unknown);
        }
    }
    let loads: Vec<String> = report
        .phases
        .iter()
        .map(|phase| {
            let shares: Vec<String> = phase
                .shard_load
                .iter()
                .map(|share| format!("{:.0}%", share * 100.0))
                .collect();
            format!("{} {}", phase.name, shares.join("/"))
        })
        .collect();
    println!(
        "  share of transactions touching each shard: {}",
        loads.join("; ")
    );
    for (who, log) in &report.logs {
        if log.appends > 0 {
            println!(
                "  {who} log: {} appends, {:.2} syncs per append, {:.1} records per append, {:.1} MiB, {} snapshots",
                log.appends,
                log.syncs as f64 / log.appends as f64,
                log.records as f64 / log.appends as f64,
                log.bytes as f64 / f64::from(1 << 20),
                log.snapshots
            );
        }
    }
    for (check, verdict) in &report.checks {
        println!("  check, {check}: {verdict}");
    }
}

/// A figure of a phase that a plot shows.
type Metric = fn(&PhaseReport) -> f64;

/// An SVG of committed tx/s (top) and p99 latency (bottom) against the
/// swept parameter, one line per phase.
fn plot(path: &Path, sweep: &Sweep, runs: &[RunReport]) -> Result<(), CliError> {
    use plotters::prelude::*;
    let plot_error = |e: String| CliError::Argument(format!("plot {}: {e}", path.display()));
    let name = match sweep.param {
        SweepParam::CrossPercent => "cross-shard percent",
        SweepParam::Shards => "shards",
        SweepParam::Skew => "skew (Zipf exponent)",
        SweepParam::Batch => "batch size",
        SweepParam::Pools => "pools",
    };
    let (lo, hi) = sweep
        .values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let pad = ((hi - lo) * 0.05).max(0.5);
    let phases: Vec<&str> = runs[0].phases.iter().map(|p| p.name.as_str()).collect();
    let series = |value: Metric, phase: &str| -> Vec<(f64, f64)> {
        sweep
            .values
            .iter()
            .zip(runs)
            .filter_map(|(x, run)| {
                let report = run.phases.iter().find(|p| p.name == phase)?;
                Some((*x, value(report)))
            })
            .collect()
    };
    let root = SVGBackend::new(path, (900, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
    let panels = root.split_evenly((2, 1));
    let charts: [(&str, Metric); 2] = [
        ("committed tx/s", |p| p.committed_per_s),
        ("p99 latency, ms", |p| p.latency_us.p99 as f64 / 1_000.0),
    ];
    for (panel, (label, value)) in panels.iter().zip(charts) {
        let top = runs
            .iter()
            .flat_map(|run| run.phases.iter().map(value))
            .fold(0.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("parashard bench: {label} against {name}"),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(lo - pad..hi + pad, 0.0..top.max(1.0))
            .map_err(|e| plot_error(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(name)
            .y_desc(label)
            .draw()
            .map_err(|e| plot_error(e.to_string()))?;
        for (i, phase) in phases.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points = series(value, phase);
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| plot_error(e.to_string()))?
                .label(*phase)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )
                .map_err(|e| plot_error(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(e.to_string()))?;
    }
    root.present().map_err(|e| plot_error(e.to_string()))?;
    Ok(())
}
