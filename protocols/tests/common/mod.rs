//! Shared helpers for the executor tests: test contracts, a seeded world of
//! accounts, tokens and pools, a seeded block generator, and comparisons
//! that name the first difference instead of dumping whole blocks.
#![allow(dead_code)]

pub mod oracle;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Once};

use parashard_protocols::contracts::{amm, token};
use parashard_protocols::model::MAX_ACCESS_KEYS;
use parashard_protocols::workload::{Rng, TxIds};
use parashard_protocols::{
    AccessSet, AccountId, AssetId, BlockExecutor, Call, Context, Contract, ContractId, Key, Output,
    Receipt, Registry, SequentialExecutor, State, Status, Transaction, TxError, Value,
};

/// Accounts at or above this id are special (issuer, whale, pools, fresh
/// accounts); random accounts are drawn below it.
pub const SPECIAL_BASE: u64 = 1 << 40;
/// Issues tokens 1 and 2 and provides the pools' first liquidity.
pub const ISSUER: AccountId = AccountId(SPECIAL_BASE);
/// Holds coin and token balances near `u64::MAX`: credits to it overflow.
pub const WHALE: AccountId = AccountId(SPECIAL_BASE + 1);
/// Never created: every call naming it as an account fails.
pub const GHOST: AccountId = AccountId(SPECIAL_BASE + 2);
/// Accounts `FRESH_BASE..FRESH_BASE + FRESH_COUNT` do not exist at genesis;
/// blocks create them and later pay into them.
pub const FRESH_BASE: u64 = SPECIAL_BASE + 1_000;
/// How many fresh account ids blocks draw from.
pub const FRESH_COUNT: u64 = 256;
/// How far below `u64::MAX` the whale's balances start.
pub const WHALE_HEADROOM: Value = 1_000;

/// Token 1, issued by [`ISSUER`].
pub const T1: AssetId = AssetId(1);
/// Token 2, issued by [`ISSUER`].
pub const T2: AssetId = AssetId(2);
/// Assets blocks may create (`CreateAsset`) with a random issuer.
pub const NEW_ASSETS: std::ops::RangeInclusive<u64> = 3..=6;
/// An asset nobody creates.
pub const UNKNOWN_ASSET: AssetId = AssetId(7);

/// Pool coin/T1, funded at genesis.
pub const POOL_1: AccountId = AccountId(SPECIAL_BASE + 16);
/// Pool T1/T2, funded at genesis.
pub const POOL_2: AccountId = AccountId(SPECIAL_BASE + 17);
/// Pool ids blocks may create.
pub const NEW_POOLS: std::ops::RangeInclusive<u64> = SPECIAL_BASE + 18..=SPECIAL_BASE + 21;
/// The genesis pools with their pairs.
pub const POOLS: [(AccountId, AssetId, AssetId); 2] =
    [(POOL_1, AssetId::COIN, T1), (POOL_2, T1, T2)];
/// Genesis reserves of each side of each pool.
pub const POOL_RESERVE: Value = 1_000_000_000;
/// Fee of the genesis pools.
pub const POOL_FEE_BPS: Value = 30;

/// [`Counter`]'s id.
pub const COUNTER: ContractId = ContractId(1);
/// [`Mover`]'s id.
pub const MOVER: ContractId = ContractId(2);
/// [`Panicker`]'s id.
pub const PANICKER: ContractId = ContractId(3);
/// [`Sneaky`]'s id.
pub const SNEAKY: ContractId = ContractId(4);
/// [`Tally`]'s id.
pub const TALLY: ContractId = ContractId(5);
/// [`Spinner`].
pub const SPINNER: ContractId = ContractId(6);
/// [`Burner`].
pub const BURNER: ContractId = ContractId(7);
/// The account that holds [`Tally`]'s shared total.
pub const TALLY_ACCOUNT: AccountId = AccountId(SPECIAL_BASE + 40);
/// An id no contract is registered under.
pub const UNREGISTERED: ContractId = ContractId(99);

/// The message every [`Panicker`] panic starts with; the quiet panic hook
/// hides exactly these.
pub const PANIC_MARK: &str = "test contract panic";

/// Adds one to field 0 of the sender and returns the new count.
pub struct Counter;

/// The field [`Counter`] counts in.
pub fn counter_key(account: AccountId) -> Key {
    Key::field(account, 0)
}

impl Contract for Counter {
    fn execute(&self, ctx: &mut Context<'_>, _args: &[Value]) -> Result<Output, TxError> {
        let key = counter_key(ctx.sender());
        let next = ctx
            .read(key)?
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(TxError::Overflow { key })?;
        ctx.write(key, next)?;
        Ok(next.into())
    }
}

/// Reads the sender's [`counter_key`] until it runs out of gas, then
/// swallows the error, writes the count of reads and returns `Ok`: a call
/// that only its gas limit stops.
pub struct Spinner;

impl Contract for Spinner {
    fn execute(&self, ctx: &mut Context<'_>, _args: &[Value]) -> Result<Output, TxError> {
        let key = counter_key(ctx.sender());
        let mut reads: Value = 0;
        while ctx.read(key).is_ok() {
            reads += 1;
        }
        let _ = ctx.write(key, reads);
        Ok(reads.into())
    }
}

/// [`Counter`] after charging `args[0]` units of gas for its own work.
pub struct Burner;

impl Contract for Burner {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        ctx.charge(args.first().copied().unwrap_or(0))?;
        Counter.execute(ctx, args)
    }
}

/// A coin transfer written as user code: `args = [to, amount]`.
pub struct Mover;

impl Contract for Mover {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let [to, amount] = args else {
            return Err(TxError::InvalidInput {
                reason: format!("mover takes 2 arguments, {} given", args.len()),
            });
        };
        let (from, to) = (ctx.sender(), AccountId(*to));
        ctx.require_account(from)?;
        ctx.require_account(to)?;
        ctx.debit(Key::balance(from, AssetId::COIN), *amount)?;
        ctx.credit(Key::balance(to, AssetId::COIN), *amount)?;
        Ok((*amount).into())
    }
}

/// Credits the sender a million coins, then panics: with a `&str` payload
/// if `args[0]` is 0, with a `String` otherwise.
pub struct Panicker;

impl Contract for Panicker {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        ctx.credit(Key::balance(ctx.sender(), AssetId::COIN), 1_000_000)?;
        if args.first() == Some(&0) {
            panic!("test contract panic");
        }
        panic!("{PANIC_MARK} {}", ctx.tx_id());
    }
}

/// Credits the sender a million coins, then breaks its access set, by
/// `args[0]`: 0 reads an undeclared key, 1 writes a declared read-only key,
/// 2 writes an undeclared key.
pub struct Sneaky;

/// The key [`Sneaky`] touches without declaring it.
pub fn sneaky_target(sender: AccountId) -> Key {
    Key::field(sender, 77)
}

impl Contract for Sneaky {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let sender = ctx.sender();
        ctx.credit(Key::balance(sender, AssetId::COIN), 1_000_000)?;
        match args.first().copied().unwrap_or(0) {
            0 => ctx.read(sneaky_target(sender)).map(|v| v.unwrap_or(0)),
            1 => ctx.write(counter_key(sender), 5).map(|()| 0),
            _ => ctx.write(sneaky_target(sender), 5).map(|()| 0),
        }
        .map(Output::from)
    }
}

/// A shared total every call adds to without reading it (an add key),
/// and the sender's own share (a write key): `args = [op, amount]`.
/// Op 0 adds `amount` to both; op 1 subtracts it from both (the share
/// first, so a short share fails before the total is judged); op 2 reads
/// the total, which an add key refuses; op 3 adds `amount` twice to the
/// total and subtracts it once (net `+amount`: only the net is judged);
/// op 4 reads the total and sets the share to it. Declared as a write
/// key instead of an add key, the total is added to step by step (each
/// addition checked) and may be read.
pub struct Tally;

/// The shared total [`Tally`] adds to.
pub fn tally_key() -> Key {
    Key::field(TALLY_ACCOUNT, 0)
}

/// A sender's share in [`Tally`].
pub fn share_key(account: AccountId) -> Key {
    Key::field(account, 9)
}

impl Contract for Tally {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let [op, amount] = args else {
            return Err(TxError::InvalidInput {
                reason: format!("tally takes 2 arguments, {} given", args.len()),
            });
        };
        let share = share_key(ctx.sender());
        match op {
            0 => {
                ctx.credit(share, *amount)?;
                ctx.add(tally_key(), *amount)?;
            }
            1 => {
                ctx.debit(share, *amount)?;
                ctx.subtract(tally_key(), *amount)?;
            }
            2 => {
                ctx.read(tally_key())?;
            }
            4 => {
                let total = ctx.read(tally_key())?.unwrap_or(0);
                ctx.write(share, total)?;
            }
            _ => {
                ctx.add(tally_key(), *amount)?;
                ctx.add(tally_key(), *amount)?;
                ctx.subtract(tally_key(), *amount)?;
            }
        }
        Ok(Output::from(*op))
    }
}

/// The access set of a [`Tally`] call: the share written, the total added to.
pub fn tally_access(sender: AccountId) -> AccessSet {
    AccessSet::with_adds([], [share_key(sender)], [tally_key()])
}

/// The access set of a [`Tally`] call that declares the total as a write
/// key: ordered like any write, and readable.
pub fn tally_write_access(sender: AccountId) -> AccessSet {
    AccessSet::new([], [share_key(sender), tally_key()])
}

/// The registry every test uses: the five test contracts.
pub fn registry() -> Arc<Registry> {
    let mut registry = Registry::new();
    let contracts: [(ContractId, Arc<dyn Contract>); 7] = [
        (COUNTER, Arc::new(Counter)),
        (MOVER, Arc::new(Mover)),
        (PANICKER, Arc::new(Panicker)),
        (SNEAKY, Arc::new(Sneaky)),
        (TALLY, Arc::new(Tally)),
        (SPINNER, Arc::new(Spinner)),
        (BURNER, Arc::new(Burner)),
    ];
    for (id, contract) in contracts {
        registry
            .register(id, "1", contract)
            .expect("ids are distinct");
    }
    Arc::new(registry)
}

/// Hides the expected panics of [`Panicker`] (thousands per property run)
/// while keeping every other panic's message.
pub fn quiet_test_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !message.is_some_and(|m| m.starts_with(PANIC_MARK)) {
                default(info);
            }
        }));
    });
}

/// The access set of a [`Counter`] call.
pub fn counter_access(sender: AccountId) -> AccessSet {
    AccessSet::new([], [counter_key(sender)])
}

/// The access set of a [`Mover`] call.
pub fn mover_access(from: AccountId, to: AccountId) -> AccessSet {
    AccessSet::new(
        [],
        [
            Key::balance(from, AssetId::COIN),
            Key::balance(to, AssetId::COIN),
        ],
    )
}

/// The access set of a [`Sneaky`] call: the sender's coin balance
/// (write) and counter field (read only).
pub fn sneaky_access(sender: AccountId) -> AccessSet {
    AccessSet::new([counter_key(sender)], [Key::balance(sender, AssetId::COIN)])
}

/// A 64-bit mix of `seed` and `n`, for properties of accounts that must not
/// depend on the order in which they are drawn.
fn mix(seed: u64, n: u64) -> u64 {
    Rng::new(seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// Whether random account `a` exists at genesis in the world of `seed`:
/// the two hot accounts always, about 15 in 16 of the others.
pub fn exists_at_genesis(seed: u64, a: u64) -> bool {
    a < 2 || !mix(seed, a).is_multiple_of(16)
}

/// The genesis coin and token balance of existing random account `a`.
pub fn genesis_balance(seed: u64, a: u64) -> Value {
    1_000_000 + mix(seed ^ 0x5EED, a) % 1_000_000_000
}

/// What kinds of calls a block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Coin transfers only.
    Transfers,
    /// Mostly transfers, with a few of every other call: few conflicts, so
    /// large blocks over many accounts take the parallel path.
    Light,
    /// Every call, pools and mints often: dense conflicts.
    Heavy,
    /// Mostly calls adding to one shared total (an add key), among
    /// transfers, with a few that read or write the total: long chains of
    /// adds that the parallel executor runs unordered.
    Counters,
}

/// The shape of one random block.
#[derive(Clone, Debug)]
pub struct BlockSpec {
    /// Transactions in the block.
    pub len: usize,
    /// Random accounts are drawn from `0..accounts`.
    pub accounts: u64,
    /// Percent of senders that are one of the two hot accounts 0 and 1.
    pub hot_percent: u64,
    /// What calls the block holds.
    pub mix: Mix,
    /// Percent of calls built to fail.
    pub failure_percent: u64,
    /// Whether every sender after the first [`CONTENTION_SAMPLE`] calls is
    /// a hot account: the executor judges contention on the block's head,
    /// so such a block takes the parallel path with long dependency chains.
    pub hot_tail: bool,
}

/// How many leading calls the parallel executor samples for contention.
pub const CONTENTION_SAMPLE: usize = 256;

/// One randomised test case: a seed and the blocks it runs, in order, on
/// one state. Everything random is derived from `seed`.
#[derive(Clone, Debug)]
pub struct Case {
    /// The seed of the whole case.
    pub seed: u64,
    /// The blocks' shapes.
    pub blocks: Vec<BlockSpec>,
}

/// A generated case: the genesis state and the blocks.
pub struct World {
    /// The state before the first block.
    pub genesis: State,
    /// The blocks, to run in order.
    pub blocks: Vec<Vec<Transaction>>,
}

impl Case {
    /// Generates the blocks, then a genesis holding every random account
    /// they name (some left out on purpose: unknown accounts).
    pub fn build(&self) -> World {
        let mut generator = Generator {
            rng: Rng::new(self.seed),
            ids: TxIds::default(),
            referenced: BTreeSet::new(),
            spec: self.blocks[0].clone(),
        };
        let blocks = self
            .blocks
            .iter()
            .map(|spec| {
                generator.spec = spec.clone();
                (0..spec.len)
                    .map(|i| {
                        if spec.hot_tail && i == CONTENTION_SAMPLE {
                            generator.spec.hot_percent = 100;
                        }
                        generator.transaction()
                    })
                    .collect()
            })
            .collect();
        World {
            genesis: genesis(self.seed, &generator.referenced),
            blocks,
        }
    }
}

/// The genesis state of `seed` holding the random accounts `referenced`.
pub fn genesis(seed: u64, referenced: &BTreeSet<u64>) -> State {
    let mut state = State::with_capacity(referenced.len() * 3 + 64);
    for &a in referenced {
        if exists_at_genesis(seed, a) {
            let balance = genesis_balance(seed, a);
            for asset in [AssetId::COIN, T1, T2] {
                state.set(Key::balance(AccountId(a), asset), balance);
            }
        }
    }
    for asset in [AssetId::COIN, T1, T2] {
        state.set(Key::balance(ISSUER, asset), 1 << 50);
        state.set(Key::balance(WHALE, asset), Value::MAX - WHALE_HEADROOM);
    }
    for asset in [T1, T2] {
        state.set(token::issuer_key(asset), ISSUER.0);
    }
    let mut ids = TxIds::starting_at(u128::MAX / 2);
    let mut setup = Vec::new();
    for (pool, a, b) in POOLS {
        setup.push(Transaction::create_pool(
            ids.next_id(),
            ISSUER,
            pool,
            a,
            b,
            POOL_FEE_BPS,
        ));
        setup.push(Transaction::add_liquidity(
            ids.next_id(),
            ISSUER,
            pool,
            a,
            b,
            POOL_RESERVE,
            POOL_RESERVE,
        ));
    }
    let receipts = SequentialExecutor::new(registry())
        .execute_block(&mut state, &setup)
        .expect("small block");
    assert!(
        receipts.iter().all(Receipt::is_committed),
        "genesis pools: {receipts:?}"
    );
    state
}

/// The kinds of calls the generator draws.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Transfer,
    TokenTransfer,
    CreateAccount,
    CreateAsset,
    Mint,
    CreatePool,
    AddLiquidity,
    Swap,
    Custom,
    Tally,
    BadAccessSet,
}

fn weights(mix: Mix) -> &'static [(Kind, u64)] {
    use Kind::*;
    match mix {
        Mix::Transfers => &[(Transfer, 1)],
        Mix::Light => &[
            (Transfer, 140),
            (TokenTransfer, 30),
            (Custom, 16),
            (CreateAccount, 4),
            (Swap, 3),
            (Mint, 3),
            (AddLiquidity, 1),
            (CreateAsset, 1),
            (CreatePool, 1),
            (BadAccessSet, 1),
        ],
        Mix::Heavy => &[
            (Transfer, 20),
            (TokenTransfer, 15),
            (Custom, 12),
            (CreateAccount, 5),
            (Swap, 20),
            (Mint, 8),
            (AddLiquidity, 8),
            (CreateAsset, 3),
            (CreatePool, 3),
            (BadAccessSet, 3),
        ],
        Mix::Counters => &[(Tally, 12), (Transfer, 6), (Custom, 1), (TokenTransfer, 1)],
    }
}

struct Generator {
    rng: Rng,
    ids: TxIds,
    /// Random accounts (below [`SPECIAL_BASE`]) the blocks name.
    referenced: BTreeSet<u64>,
    spec: BlockSpec,
}

impl Generator {
    /// A random account, recorded for genesis.
    fn account(&mut self) -> AccountId {
        let a = self.rng.below(self.spec.accounts);
        self.referenced.insert(a);
        AccountId(a)
    }

    /// A sender: one of the two hot accounts with `hot_percent` odds.
    fn sender(&mut self) -> AccountId {
        if self.rng.chance(self.spec.hot_percent) {
            AccountId(self.rng.below(2))
        } else {
            self.account()
        }
    }

    /// A recipient: mostly a random account, sometimes a fresh one.
    fn recipient(&mut self) -> AccountId {
        if self.rng.chance(2) {
            self.fresh()
        } else {
            self.account()
        }
    }

    fn fresh(&mut self) -> AccountId {
        AccountId(FRESH_BASE + self.rng.below(FRESH_COUNT))
    }

    fn amount(&mut self) -> Value {
        1 + self.rng.below(1_000)
    }

    /// An amount no ordinary account holds, often close to `u64::MAX`.
    fn huge(&mut self) -> Value {
        if self.rng.chance(50) {
            Value::MAX - self.rng.below(10)
        } else {
            1 << (40 + self.rng.below(20))
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len() as u64) as usize]
    }

    fn kind(&mut self) -> Kind {
        let table = weights(self.spec.mix);
        let total: u64 = table.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total);
        for (kind, weight) in table {
            if roll < *weight {
                return *kind;
            }
            roll -= weight;
        }
        unreachable!("roll below the total weight")
    }

    fn transaction(&mut self) -> Transaction {
        let fail = self.rng.chance(self.spec.failure_percent);
        let id = self.ids.next_id();
        let kind = self.kind();
        let from = self.sender();
        match kind {
            Kind::Transfer => {
                let (to, amount) = match (fail, self.rng.below(4)) {
                    (false, _) => (self.recipient(), self.amount()),
                    (true, 0) => (self.recipient(), self.huge()),
                    (true, 1) => (GHOST, self.amount()),
                    (true, 2) => (WHALE, WHALE_HEADROOM + 1 + self.rng.below(1_000)),
                    (true, _) => {
                        let to = self.recipient();
                        return Transaction::transfer(id, GHOST, to, self.amount());
                    }
                };
                Transaction::transfer(id, from, to, amount)
            }
            Kind::TokenTransfer => {
                let asset = if fail {
                    self.pick(&[AssetId::COIN, UNKNOWN_ASSET, T1, T2])
                } else {
                    self.pick(&[T1, T2, AssetId::lp_shares(POOL_1)])
                };
                let (to, amount) = match (fail, self.rng.below(2)) {
                    (false, _) => (self.recipient(), self.amount()),
                    (true, 0) => (WHALE, WHALE_HEADROOM + 1),
                    (true, _) => (self.recipient(), self.huge()),
                };
                Transaction::token_transfer(id, from, asset, to, amount)
            }
            Kind::CreateAccount => {
                let account = if fail { self.account() } else { self.fresh() };
                let sender = if fail && self.rng.chance(50) {
                    from
                } else {
                    account
                };
                let balance = self.rng.below(1 << 30);
                let mut tx = Transaction::create_account(id, account, balance);
                tx.sender = sender;
                tx
            }
            Kind::CreateAsset => {
                let asset = if fail {
                    self.pick(&[T1, AssetId::COIN, AssetId::lp_shares(POOL_2)])
                } else {
                    AssetId(NEW_ASSETS.start() + self.rng.below(4))
                };
                Transaction::create_asset(id, from, asset)
            }
            Kind::Mint => {
                let to = self.recipient();
                let asset = self.pick(&[T1, T2, AssetId(*NEW_ASSETS.start())]);
                match (fail, self.rng.below(4)) {
                    (false, _) => Transaction::mint(id, ISSUER, asset, to, self.amount()),
                    (true, 0) => Transaction::mint(id, from, T1, to, self.amount()),
                    (true, 1) => Transaction::mint(id, ISSUER, UNKNOWN_ASSET, to, 1),
                    (true, 2) => Transaction::mint(id, ISSUER, T2, WHALE, self.huge()),
                    (true, _) => Transaction::mint(id, ISSUER, AssetId::COIN, to, 1),
                }
            }
            Kind::CreatePool => {
                let pool = if fail && self.rng.chance(50) {
                    POOL_1
                } else {
                    AccountId(NEW_POOLS.start() + self.rng.below(4))
                };
                let a = self.pick(&[AssetId::COIN, T1, T2]);
                let b = if fail && self.rng.chance(50) {
                    a
                } else {
                    self.pick(&[T2, AssetId(*NEW_ASSETS.start())])
                };
                let fee = if fail && self.rng.chance(30) {
                    10_000 + self.rng.below(5)
                } else {
                    self.rng.below(100)
                };
                Transaction::create_pool(id, from, pool, a, b, fee)
            }
            Kind::AddLiquidity => {
                let (pool, a, b) = if self.rng.chance(80) {
                    self.pick(&POOLS)
                } else {
                    // A pool blocks may have created, with a guessed pair:
                    // a wrong guess fails on an undeclared read.
                    let pool = AccountId(NEW_POOLS.start() + self.rng.below(4));
                    (pool, AssetId::COIN, T2)
                };
                let (amount_a, amount_b) = match (fail, self.rng.below(3)) {
                    (false, _) => (self.amount() * 100, self.amount() * 100),
                    (true, 0) => (0, self.amount()),
                    (true, _) => (self.huge(), self.huge()),
                };
                Transaction::add_liquidity(id, from, pool, a, b, amount_a, amount_b)
            }
            Kind::Swap => {
                let (pool, a, b) = self.pick(&POOLS);
                let (asset_in, asset_out) = if self.rng.chance(50) { (a, b) } else { (b, a) };
                let amount_in = if fail && self.rng.chance(30) {
                    self.huge()
                } else {
                    self.amount() * 10
                };
                let quoted =
                    amm::quote(amount_in, POOL_RESERVE, POOL_RESERVE, POOL_FEE_BPS).unwrap_or(0);
                // The guard around the genesis quote: a block's earlier swaps
                // move the price, so some guards hold and some trip.
                let min_out = match (fail, self.rng.below(4)) {
                    (false, 0) => 0,
                    (false, _) => quoted * (90 + self.rng.below(20)) / 100,
                    (true, 0) => Value::MAX,
                    (true, _) => quoted + 1 + self.rng.below(100),
                };
                if fail && self.rng.chance(20) {
                    // Not the pool's pair.
                    return Transaction::swap(id, from, POOL_2, AssetId::COIN, T2, 10, 0);
                }
                Transaction::swap(id, from, pool, asset_in, asset_out, amount_in, min_out)
            }
            Kind::Custom => match (fail, self.rng.below(5)) {
                (false, 4) => {
                    let op = self.rng.below(2);
                    let amount = self.amount();
                    Transaction::custom(id, from, TALLY, vec![op, amount], tally_access(from))
                }
                (true, 4) => {
                    // Huge net additions push the total towards the top
                    // (later ones overflow); large subtractions go below zero.
                    let (op, amount) = match self.rng.below(3) {
                        0 => (3, self.huge()),
                        1 => (1, self.huge()),
                        _ => (2, 1),
                    };
                    Transaction::custom(id, from, TALLY, vec![op, amount], tally_access(from))
                }
                (false, 0 | 1) => {
                    Transaction::custom(id, from, COUNTER, vec![], counter_access(from))
                }
                (false, _) => {
                    let to = self.recipient();
                    let amount = self.amount();
                    Transaction::custom(id, from, MOVER, vec![to.0, amount], mover_access(from, to))
                }
                (true, 0) => {
                    let how = self.rng.below(2);
                    Transaction::custom(id, from, PANICKER, vec![how], sneaky_access(from))
                }
                (true, 1) => {
                    let how = self.rng.below(3);
                    Transaction::custom(id, from, SNEAKY, vec![how], sneaky_access(from))
                }
                (true, 2) => {
                    Transaction::custom(id, from, UNREGISTERED, vec![], counter_access(from))
                }
                (true, _) => {
                    let to = self.recipient();
                    let amount = self.huge();
                    Transaction::custom(id, from, MOVER, vec![to.0, amount], mover_access(from, to))
                }
            },
            Kind::Tally => {
                let (op, amount, access) = match (fail, self.rng.below(20)) {
                    (false, 0..=13) => (0, self.amount(), tally_access(from)),
                    (false, 14..=16) => (1, self.amount(), tally_access(from)),
                    (false, 17) => (3, self.amount(), tally_access(from)),
                    // The total as a write key: ordered after the adds
                    // before it, and every add after it waits for it.
                    (false, 18) => (self.rng.below(4), self.amount(), tally_write_access(from)),
                    (false, _) => (4, 0, tally_write_access(from)),
                    // Huge amounts push the total towards the top (later
                    // additions overflow) and subtractions below zero.
                    (true, 0..=7) => (self.pick(&[0, 3]), self.huge(), tally_access(from)),
                    (true, 8..=15) => (1, self.huge(), tally_access(from)),
                    (true, 16..=18) => (2, 1, tally_access(from)),
                    (true, _) => (3, self.huge(), tally_write_access(from)),
                };
                Transaction::custom(id, from, TALLY, vec![op, amount], access)
            }
            Kind::BadAccessSet => {
                let to = self.recipient();
                let mut tx = Transaction::transfer(id, from, to, self.amount());
                if self.rng.chance(50) {
                    // The sender's balance declared as read and as write.
                    tx.access.reads.push(Key::balance(from, AssetId::COIN));
                } else {
                    let extra = MAX_ACCESS_KEYS + 1 - tx.access.len() + self.rng.below(3) as usize;
                    for _ in 0..extra {
                        let key = Key::balance(self.account(), AssetId::COIN);
                        tx.access.writes.push(key);
                    }
                }
                tx
            }
        }
    }
}

/// Every live key of `state` with its value, sorted by key: cheaper to
/// build and compare than [`State::to_map`], which matters at thousands of
/// comparisons per property.
pub fn sorted(state: &State) -> Vec<(Key, Value)> {
    let mut entries: Vec<(Key, Value)> = state.iter().collect();
    entries.sort_unstable_by_key(|(key, _)| *key);
    entries
}

/// Where two runs of a block differ, if they do: the first receipt that
/// differs (with its transaction), or the first key whose value differs.
/// `expected` is [`sorted`] of the reference state.
pub fn first_difference(
    block: &[Transaction],
    (expected_receipts, expected): (&[Receipt], &[(Key, Value)]),
    (receipts, state): (&[Receipt], &State),
) -> Option<String> {
    if receipts.len() != expected_receipts.len() {
        return Some(format!(
            "{} receipts, {} expected",
            receipts.len(),
            expected_receipts.len()
        ));
    }
    if let Some(i) = (0..receipts.len()).find(|&i| receipts[i] != expected_receipts[i]) {
        return Some(format!(
            "receipt {i} differs: {:?}, expected {:?}; transaction: {:?}",
            receipts[i], expected_receipts[i], block[i]
        ));
    }
    let got = sorted(state);
    if got == expected {
        return None;
    }
    let (got, expected): (BTreeMap<Key, Value>, BTreeMap<Key, Value>) = (
        got.into_iter().collect(),
        expected.iter().copied().collect(),
    );
    let keys: BTreeSet<&Key> = got.keys().chain(expected.keys()).collect();
    let difference = keys
        .into_iter()
        .find(|key| got.get(key) != expected.get(key))
        .map(|key| {
            format!(
                "{key} is {:?}, expected {:?}",
                got.get(key),
                expected.get(key)
            )
        });
    Some(difference.unwrap_or_else(|| "states differ".into()))
}

/// The assets that have at least one balance in `state`, with their totals
/// computed by [`State::total`].
pub fn totals(state: &State, also: &BTreeSet<AssetId>) -> BTreeMap<AssetId, u128> {
    let mut assets: BTreeSet<AssetId> = state.iter().filter_map(|(key, _)| key.asset()).collect();
    assets.extend(also);
    assets
        .into_iter()
        .map(|asset| (asset, state.total(asset)))
        .collect()
}

/// The value a block's committed calls create, per asset: only
/// `CreateAccount` (coins), `Mint` (tokens) and `AddLiquidity` (pool
/// shares, which its receipt reports) create anything.
pub fn created_value(block: &[Transaction], receipts: &[Receipt]) -> BTreeMap<AssetId, u128> {
    let mut created = BTreeMap::new();
    for (tx, receipt) in block.iter().zip(receipts) {
        let Status::Committed { output } = &receipt.status else {
            continue;
        };
        let (asset, amount) = match tx.call {
            Call::CreateAccount { balance, .. } => (AssetId::COIN, balance),
            Call::Mint { asset, amount, .. } => (asset, amount),
            Call::AddLiquidity { pool, .. } => (AssetId::lp_shares(pool), output.value()),
            _ => continue,
        };
        *created.entry(asset).or_insert(0u128) += u128::from(amount);
    }
    created
}
