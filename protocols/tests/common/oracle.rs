//! An independent oracle for the executors: a plain interpreter of every
//! call over a `BTreeMap`, written for the tests from the calls' documented
//! rules. It shares no code with the executors (no `Context`, no contract
//! module, no slots): a bug in the shared execution path would otherwise
//! pass a check of one executor against the other.

use std::collections::BTreeMap;

use parashard_protocols::model::{
    AccountId, AssetId, Call, Key, Status, Transaction, TxError, Value, MAX_ACCESS_KEYS,
};
use parashard_protocols::{BlockExecutor, State};

use super::{
    counter_key, share_key, sneaky_target, tally_key, World, COUNTER, MOVER, PANICKER, SNEAKY,
    TALLY,
};

/// What the oracle says of one transaction: committed with an output, or
/// failed with an error of this kind (the variant's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, with the call's output.
    Committed(Value),
    /// Not applied.
    Failed(&'static str),
}

/// The kind of `error`: the name of its variant.
pub fn kind(error: &TxError) -> &'static str {
    match error {
        TxError::InsufficientFunds { .. } => "InsufficientFunds",
        TxError::UnknownAccount { .. } => "UnknownAccount",
        TxError::NotFound { .. } => "NotFound",
        TxError::AlreadyExists { .. } => "AlreadyExists",
        TxError::Overflow { .. } => "Overflow",
        TxError::AccessViolation { .. } => "AccessViolation",
        TxError::Unauthorized { .. } => "Unauthorized",
        TxError::SlippageExceeded { .. } => "SlippageExceeded",
        TxError::UnknownContract { .. } => "UnknownContract",
        TxError::ContractPanicked { .. } => "ContractPanicked",
        TxError::InvalidInput { .. } => "InvalidInput",
        TxError::TooLarge { .. } => "TooLarge",
        TxError::OutOfGas { .. } => "OutOfGas",
        _ => "other",
    }
}

/// A failure of the oracle's own calls.
type Fail = &'static str;

/// One call's view of the state: declared keys only, its writes pending
/// until it returns.
struct Call1<'a> {
    state: &'a BTreeMap<Key, Value>,
    tx: &'a Transaction,
    pending: BTreeMap<Key, Value>,
}

impl Call1<'_> {
    fn get(&self, key: Key) -> Result<Option<Value>, Fail> {
        let declared = self.tx.access.reads.contains(&key) || self.tx.access.writes.contains(&key);
        if !declared {
            return Err("AccessViolation");
        }
        Ok(self
            .pending
            .get(&key)
            .or_else(|| self.state.get(&key))
            .copied())
    }

    fn put(&mut self, key: Key, value: Value) -> Result<(), Fail> {
        if !self.tx.access.writes.contains(&key) {
            return Err("AccessViolation");
        }
        self.pending.insert(key, value);
        Ok(())
    }

    fn balance(&self, key: Key) -> Result<Value, Fail> {
        Ok(self.get(key)?.unwrap_or(0))
    }

    fn take(&mut self, key: Key, amount: Value) -> Result<(), Fail> {
        let left = self
            .balance(key)?
            .checked_sub(amount)
            .ok_or("InsufficientFunds")?;
        self.put(key, left)
    }

    fn give(&mut self, key: Key, amount: Value) -> Result<(), Fail> {
        let sum = self.balance(key)?.checked_add(amount).ok_or("Overflow")?;
        self.put(key, sum)
    }
}

fn coin(account: AccountId) -> Key {
    Key::balance(account, AssetId::COIN)
}

/// The registry of assets: field `asset` of this account holds the issuer.
fn issuer_of(asset: AssetId) -> Key {
    Key::field(AccountId(u64::MAX), asset.0)
}

fn pool_field(pool: AccountId, n: u64) -> Key {
    Key::field(pool, n)
}

fn token_ok(asset: AssetId) -> Result<(), Fail> {
    if asset == AssetId::COIN || asset.0 >= AssetId::LP_BASE {
        return Err("InvalidInput");
    }
    Ok(())
}

fn integer_sqrt(n: u128) -> u128 {
    // Largest r with r * r <= n, by bisection.
    let (mut low, mut high) = (0u128, 1u128 << 64);
    while low + 1 < high {
        let mid = (low + high) / 2;
        if mid.checked_mul(mid).is_some_and(|sq| sq <= n) {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

fn pool_of(c: &Call1<'_>, pool: AccountId) -> Result<(AssetId, AssetId, Value), Fail> {
    let a = c.get(pool_field(pool, 0))?.ok_or("NotFound")?;
    let b = c.get(pool_field(pool, 1))?.ok_or("NotFound")?;
    let fee = c.get(pool_field(pool, 2))?.ok_or("NotFound")?;
    Ok((AssetId(a), AssetId(b), fee))
}

fn run(c: &mut Call1<'_>) -> Result<Value, Fail> {
    let tx = c.tx;
    let sender = tx.sender;
    match &tx.call {
        Call::CreateAccount { account, balance } => {
            if sender != *account {
                return Err("Unauthorized");
            }
            if c.get(coin(*account))?.is_some() {
                return Err("AlreadyExists");
            }
            c.put(coin(*account), *balance)?;
            Ok(0)
        }
        Call::Transfer { to, amount } => {
            let have = c.get(coin(sender))?.ok_or("UnknownAccount")?;
            let theirs = c.get(coin(*to))?.ok_or("UnknownAccount")?;
            let left = have.checked_sub(*amount).ok_or("InsufficientFunds")?;
            if sender == *to {
                return Ok(0);
            }
            let sum = theirs.checked_add(*amount).ok_or("Overflow")?;
            c.put(coin(sender), left)?;
            c.put(coin(*to), sum)?;
            Ok(0)
        }
        Call::CreateAsset { asset } => {
            token_ok(*asset)?;
            if c.get(issuer_of(*asset))?.is_some() {
                return Err("AlreadyExists");
            }
            c.put(issuer_of(*asset), sender.0)?;
            Ok(0)
        }
        Call::Mint { asset, to, amount } => {
            token_ok(*asset)?;
            let issuer = c.get(issuer_of(*asset))?.ok_or("NotFound")?;
            if issuer != sender.0 {
                return Err("Unauthorized");
            }
            c.give(Key::balance(*to, *asset), *amount)?;
            Ok(0)
        }
        Call::TokenTransfer { asset, to, amount } => {
            if *asset == AssetId::COIN {
                return Err("InvalidInput");
            }
            c.take(Key::balance(sender, *asset), *amount)?;
            c.give(Key::balance(*to, *asset), *amount)?;
            Ok(0)
        }
        Call::CreatePool {
            pool,
            asset_a,
            asset_b,
            fee_bps,
        } => {
            if asset_a == asset_b || *fee_bps >= 10_000 {
                return Err("InvalidInput");
            }
            if c.get(pool_field(*pool, 0))?.is_some() {
                return Err("AlreadyExists");
            }
            c.put(pool_field(*pool, 0), asset_a.0)?;
            c.put(pool_field(*pool, 1), asset_b.0)?;
            c.put(pool_field(*pool, 2), *fee_bps)?;
            c.put(pool_field(*pool, 3), 0)?;
            Ok(0)
        }
        Call::AddLiquidity {
            pool,
            amount_a,
            amount_b,
        } => {
            let (asset_a, asset_b, _) = pool_of(c, *pool)?;
            if *amount_a == 0 || *amount_b == 0 {
                return Err("InvalidInput");
            }
            let supply = u128::from(c.balance(pool_field(*pool, 3))?);
            let reserve_a = u128::from(c.balance(Key::balance(*pool, asset_a))?);
            let reserve_b = u128::from(c.balance(Key::balance(*pool, asset_b))?);
            let (a, b) = (u128::from(*amount_a), u128::from(*amount_b));
            let shares = if supply == 0 {
                integer_sqrt(a * b)
            } else if reserve_a == 0 || reserve_b == 0 {
                return Err("InvalidInput");
            } else {
                (a * supply / reserve_a).min(b * supply / reserve_b)
            };
            let shares = Value::try_from(shares).map_err(|_| "Overflow")?;
            if shares == 0 {
                return Err("InvalidInput");
            }
            c.take(Key::balance(sender, asset_a), *amount_a)?;
            c.take(Key::balance(sender, asset_b), *amount_b)?;
            c.give(Key::balance(*pool, asset_a), *amount_a)?;
            c.give(Key::balance(*pool, asset_b), *amount_b)?;
            c.give(pool_field(*pool, 3), shares)?;
            c.give(Key::balance(sender, AssetId::lp_shares(*pool)), shares)?;
            Ok(shares)
        }
        Call::Swap {
            pool,
            asset_in,
            asset_out,
            amount_in,
            min_out,
        } => {
            let (asset_a, asset_b, fee) = pool_of(c, *pool)?;
            let pair = [(*asset_in, *asset_out)];
            if pair != [(asset_a, asset_b)] && pair != [(asset_b, asset_a)] {
                return Err("InvalidInput");
            }
            if *amount_in == 0 {
                return Err("InvalidInput");
            }
            let reserve_in = c.balance(Key::balance(*pool, *asset_in))?;
            let reserve_out = c.balance(Key::balance(*pool, *asset_out))?;
            if reserve_in == 0 || reserve_out == 0 {
                return Err("InvalidInput");
            }
            // out = in * (1 - fee) * reserve_out / (reserve_in + in * (1 - fee)),
            // in basis points, rounded down, checked.
            let net_in = u128::from(*amount_in) * (10_000 - u128::from(fee));
            let out = net_in
                .checked_mul(u128::from(reserve_out))
                .and_then(|top| {
                    let bottom = u128::from(reserve_in)
                        .checked_mul(10_000)?
                        .checked_add(net_in)?;
                    Value::try_from(top / bottom).ok()
                })
                .ok_or("Overflow")?;
            if out < *min_out || out == 0 {
                return Err("SlippageExceeded");
            }
            c.take(Key::balance(sender, *asset_in), *amount_in)?;
            c.give(Key::balance(sender, *asset_out), out)?;
            c.give(Key::balance(*pool, *asset_in), *amount_in)?;
            c.take(Key::balance(*pool, *asset_out), out)?;
            Ok(out)
        }
        Call::Custom { contract, args } if *contract == COUNTER => {
            let key = counter_key(sender);
            let next = c.balance(key)?.checked_add(1).ok_or("Overflow")?;
            c.put(key, next)?;
            Ok(next)
        }
        Call::Custom { contract, args } if *contract == MOVER => {
            let [to, amount] = args[..] else {
                return Err("InvalidInput");
            };
            let to = AccountId(to);
            c.get(coin(sender))?.ok_or("UnknownAccount")?;
            c.get(coin(to))?.ok_or("UnknownAccount")?;
            c.take(coin(sender), amount)?;
            c.give(coin(to), amount)?;
            Ok(amount)
        }
        Call::Custom { contract, .. } if *contract == PANICKER => {
            c.give(coin(sender), 1_000_000)?;
            Err("ContractPanicked")
        }
        Call::Custom { contract, args } if *contract == SNEAKY => {
            c.give(coin(sender), 1_000_000)?;
            match args.first().copied().unwrap_or(0) {
                0 => c.get(sneaky_target(sender)).map(|v| v.unwrap_or(0)),
                1 => c.put(counter_key(sender), 5).map(|()| 0),
                _ => c.put(sneaky_target(sender), 5).map(|()| 0),
            }
        }
        Call::Custom { contract, args } if *contract == TALLY => {
            let [op, amount] = args[..] else {
                return Err("InvalidInput");
            };
            let share = share_key(sender);
            let total = tally_key();
            if !tx.access.add_keys().contains(&total) {
                // A write key: every step checked as it happens.
                match op {
                    0 => {
                        c.give(share, amount)?;
                        c.give(total, amount)?;
                    }
                    1 => {
                        c.take(share, amount)?;
                        c.take(total, amount)?;
                    }
                    2 => {
                        c.get(total)?;
                    }
                    4 => {
                        let value = c.get(total)?.unwrap_or(0);
                        c.put(share, value)?;
                    }
                    _ => {
                        c.give(total, amount)?;
                        c.give(total, amount)?;
                        c.take(total, amount)?;
                    }
                }
                return Ok(op);
            }
            // An add key: the total's net change, judged against its value
            // once the call is done.
            let net = match op {
                0 => {
                    c.give(share, amount)?;
                    i128::from(amount)
                }
                1 => {
                    c.take(share, amount)?;
                    -i128::from(amount)
                }
                2 | 4 => return Err("AccessViolation"),
                _ => i128::from(amount),
            };
            let total_now = i128::from(c.state.get(&total).copied().unwrap_or(0)) + net;
            if total_now < 0 {
                return Err("InsufficientFunds");
            }
            c.put(total, Value::try_from(total_now).map_err(|_| "Overflow")?)?;
            Ok(op)
        }
        Call::Custom { .. } => Err("UnknownContract"),
        _ => Err("other"),
    }
}

/// Runs `block` in order on `state` and returns each transaction's outcome.
pub fn run_block(state: &mut BTreeMap<Key, Value>, block: &[Transaction]) -> Vec<Outcome> {
    block
        .iter()
        .map(|tx| {
            let keys: Vec<&Key> = tx.access.reads.iter().chain(&tx.access.writes).collect();
            let repeated = (0..keys.len()).any(|i| keys[..i].contains(&keys[i]));
            let args = match &tx.call {
                Call::Custom { args, .. } => args.len(),
                _ => 0,
            };
            if keys.len() > MAX_ACCESS_KEYS
                || args > parashard_protocols::model::MAX_ARGS
                || tx.gas_limit > parashard_protocols::contracts::gas::MAX_LIMIT
            {
                return Outcome::Failed("TooLarge");
            }
            if repeated {
                return Outcome::Failed("InvalidInput");
            }
            let mut call = Call1 {
                state,
                tx,
                pending: BTreeMap::new(),
            };
            match run(&mut call) {
                Ok(output) => {
                    let writes = call.pending;
                    state.extend(writes);
                    Outcome::Committed(output)
                }
                Err(kind) => Outcome::Failed(kind),
            }
        })
        .collect()
}

/// Runs the blocks of `world` on each of `executors` and on the oracle,
/// and names the first difference: a transaction's outcome kind, a
/// commit's output, or the state after a block.
pub fn compare(world: World, executors: &[(&str, &dyn BlockExecutor)]) -> Result<(), String> {
    let mut model: BTreeMap<_, _> = world.genesis.iter().collect();
    let mut states: Vec<State> = executors.iter().map(|_| world.genesis.clone()).collect();
    for (b, block) in world.blocks.iter().enumerate() {
        let expected = run_block(&mut model, block);
        for ((name, runner), state) in executors.iter().zip(&mut states) {
            let receipts = runner
                .execute_block(state, block)
                .map_err(|e| format!("block {b}, {name}: {e}"))?;
            for ((tx, receipt), want) in block.iter().zip(&receipts).zip(&expected) {
                let got = match &receipt.status {
                    Status::Committed { output } => Outcome::Committed(output.value()),
                    Status::Failed(error) => Outcome::Failed(kind(error)),
                    _ => Outcome::Failed("unknown status"),
                };
                if got != *want {
                    return Err(format!(
                        "block {b}, {name}: {got:?}, the oracle {want:?}, for {tx:?}"
                    ));
                }
            }
            let got: BTreeMap<_, _> = state.iter().collect();
            if got != model {
                let key = model
                    .keys()
                    .chain(got.keys())
                    .find(|k| got.get(k) != model.get(k))
                    .copied();
                return Err(format!(
                    "block {b}, {name}: state differs from the oracle at {key:?}: {:?} against {:?}",
                    key.and_then(|k| got.get(&k)),
                    key.and_then(|k| model.get(&k)),
                ));
            }
        }
    }
    Ok(())
}
