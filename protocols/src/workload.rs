//! Seeded workload generators shared by tests, benchmarks and the CLI.
//!
//! Everything is derived from a `u64` seed with [`Rng`], so a failing
//! property or simulation replays exactly from the seed it prints.

use crate::model::{AccountId, AssetId, Key, Transaction, TxId, Value};
use crate::state::State;

/// A small, fast, seeded generator (SplitMix64). Not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Hands out deterministic transaction ids.
#[derive(Debug, Clone, Default)]
pub struct TxIds(u128);

impl TxIds {
    /// Ids counting up from `start`.
    pub fn starting_at(start: u128) -> TxIds {
        TxIds(start)
    }

    /// The next id.
    pub fn next_id(&mut self) -> TxId {
        self.0 += 1;
        TxId::from_u128(self.0)
    }
}

/// A state in which accounts `0..accounts` exist with `balance` coins each.
pub fn bank_state(accounts: u64, balance: Value) -> State {
    let mut state = State::with_capacity(accounts as usize);
    for a in 0..accounts {
        state.set(Key::balance(AccountId(a), AssetId::COIN), balance);
    }
    state
}

/// `n` coin transfers between distinct random accounts of `0..accounts`
/// (`accounts >= 2`), each of 1..=`max_amount` coins.
pub fn transfers(
    rng: &mut Rng,
    ids: &mut TxIds,
    accounts: u64,
    n: usize,
    max_amount: Value,
) -> Vec<Transaction> {
    assert!(accounts >= 2, "transfers need two accounts");
    (0..n)
        .map(|_| {
            let from = rng.below(accounts);
            let to = (from + 1 + rng.below(accounts - 1)) % accounts;
            let amount = 1 + rng.below(max_amount.max(1));
            Transaction::transfer(ids.next_id(), AccountId(from), AccountId(to), amount)
        })
        .collect()
}

/// A DeFi world: accounts holding coins and two tokens, and a pool per
/// token pair, for mixed blocks of transfers, token calls and swaps.
#[derive(Debug, Clone)]
pub struct DefiWorld {
    /// User accounts are `0..accounts`.
    pub accounts: u64,
    /// The tokens.
    pub tokens: [AssetId; 2],
    /// The pools: coin/token0 and token0/token1.
    pub pools: [(AccountId, AssetId, AssetId); 2],
    /// The token issuer.
    pub issuer: AccountId,
}

impl DefiWorld {
    /// A world with `accounts` user accounts (at least 2).
    pub fn new(accounts: u64) -> DefiWorld {
        let base = 1 << 40;
        let tokens = [AssetId(1), AssetId(2)];
        DefiWorld {
            accounts: accounts.max(2),
            tokens,
            pools: [
                (AccountId(base + 1), AssetId::COIN, tokens[0]),
                (AccountId(base + 2), tokens[0], tokens[1]),
            ],
            issuer: AccountId(base),
        }
    }

    /// The genesis transactions: accounts, assets, mints, pools, liquidity.
    pub fn genesis(&self, ids: &mut TxIds, balance: Value) -> Vec<Transaction> {
        let mut txs = Vec::new();
        txs.push(Transaction::create_account(
            ids.next_id(),
            self.issuer,
            balance,
        ));
        for a in 0..self.accounts {
            txs.push(Transaction::create_account(
                ids.next_id(),
                AccountId(a),
                balance,
            ));
        }
        for token in self.tokens {
            txs.push(Transaction::create_asset(ids.next_id(), self.issuer, token));
            txs.push(Transaction::mint(
                ids.next_id(),
                self.issuer,
                token,
                self.issuer,
                balance,
            ));
            for a in 0..self.accounts {
                txs.push(Transaction::mint(
                    ids.next_id(),
                    self.issuer,
                    token,
                    AccountId(a),
                    balance,
                ));
            }
        }
        for (pool, a, b) in self.pools {
            txs.push(Transaction::create_pool(
                ids.next_id(),
                self.issuer,
                pool,
                a,
                b,
                30,
            ));
            txs.push(Transaction::add_liquidity(
                ids.next_id(),
                self.issuer,
                pool,
                a,
                b,
                balance / 2,
                balance / 2,
            ));
        }
        txs
    }

    /// A random account; with `hot` set, one of the first two only.
    fn account(&self, rng: &mut Rng, hot: bool) -> AccountId {
        AccountId(rng.below(if hot { 2 } else { self.accounts }))
    }

    /// A random block of `n` calls; `failure_percent` of them are built to
    /// fail (overdrafts, unknown accounts, wrong signers, slippage).
    pub fn block(
        &self,
        rng: &mut Rng,
        ids: &mut TxIds,
        n: usize,
        max_amount: Value,
        failure_percent: u64,
    ) -> Vec<Transaction> {
        (0..n)
            .map(|_| {
                let hot = rng.chance(10);
                let from = self.account(rng, hot);
                let to = self.account(rng, false);
                let fail = rng.chance(failure_percent);
                let amount = if fail && rng.chance(50) {
                    Value::MAX - rng.below(10)
                } else {
                    1 + rng.below(max_amount.max(1))
                };
                let id = ids.next_id();
                match rng.below(if fail { 6 } else { 4 }) {
                    0 => Transaction::transfer(id, from, to, amount),
                    1 => {
                        let token = self.tokens[rng.below(2) as usize];
                        Transaction::token_transfer(id, from, token, to, amount)
                    }
                    2 | 3 => {
                        let (pool, a, b) = self.pools[rng.below(2) as usize];
                        let (asset_in, asset_out) = if rng.chance(50) { (a, b) } else { (b, a) };
                        let min_out = if fail { Value::MAX } else { 0 };
                        Transaction::swap(id, from, pool, asset_in, asset_out, amount, min_out)
                    }
                    4 => Transaction::transfer(id, from, AccountId(self.accounts + 7), amount),
                    _ => Transaction::mint(id, from, self.tokens[0], to, amount),
                }
            })
            .collect()
    }
}
