//! The native constant-product pool (x * y = k, fee on input).
//!
//! A pool is an account: its balances of the pair's two assets are the
//! reserves, so conservation of every asset holds across swaps by
//! construction. Its fields hold the pair, the fee and the share supply.

use super::Context;
use crate::model::{AccountId, AssetId, Key, TxError, Value};

/// Field holding the pool's first asset.
pub const ASSET_A: u64 = 0;
/// Field holding the pool's second asset.
pub const ASSET_B: u64 = 1;
/// Field holding the fee in basis points.
pub const FEE_BPS: u64 = 2;
/// Field holding the total of pool shares issued.
pub const LP_SUPPLY: u64 = 3;

const BPS: u128 = 10_000;

/// The pool's fields: asset a, asset b, fee, share supply.
pub fn fields(pool: AccountId) -> [Key; 4] {
    [ASSET_A, ASSET_B, FEE_BPS, LP_SUPPLY].map(|f| Key::field(pool, f))
}

struct Pool {
    asset_a: AssetId,
    asset_b: AssetId,
    fee_bps: Value,
}

fn load(ctx: &Context<'_>, pool: AccountId) -> Result<Pool, TxError> {
    let [a, b, fee, _] = fields(pool);
    let asset_a = ctx.read(a)?.ok_or(TxError::NotFound { key: a })?;
    Ok(Pool {
        asset_a: AssetId(asset_a),
        asset_b: AssetId(ctx.read(b)?.ok_or(TxError::NotFound { key: b })?),
        fee_bps: ctx.read(fee)?.ok_or(TxError::NotFound { key: fee })?,
    })
}

/// Creates `pool` for (`asset_a`, `asset_b`) with a fee of `fee_bps`.
pub fn create_pool(
    ctx: &mut Context<'_>,
    pool: AccountId,
    asset_a: AssetId,
    asset_b: AssetId,
    fee_bps: Value,
) -> Result<Value, TxError> {
    if asset_a == asset_b {
        return Err(TxError::InvalidInput {
            reason: format!("pool pair names asset {} twice", asset_a.0),
        });
    }
    if u128::from(fee_bps) >= BPS {
        return Err(TxError::InvalidInput {
            reason: format!("fee of {fee_bps} bps must be below {BPS}"),
        });
    }
    let [a, b, fee, supply] = fields(pool);
    if ctx.read(a)?.is_some() {
        return Err(TxError::AlreadyExists { key: a });
    }
    ctx.write(a, asset_a.0)?;
    ctx.write(b, asset_b.0)?;
    ctx.write(fee, fee_bps)?;
    ctx.write(supply, 0)?;
    Ok(0)
}

fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    // Newton's iteration from an over-estimate decreases monotonically.
    let mut x = 1u128 << (n.ilog2() / 2 + 1);
    loop {
        let y = (x + n / x) / 2;
        if y >= x {
            return x;
        }
        x = y;
    }
}

/// Deposits both assets and mints shares to the sender; returns the shares.
pub fn add_liquidity(
    ctx: &mut Context<'_>,
    pool: AccountId,
    amount_a: Value,
    amount_b: Value,
) -> Result<Value, TxError> {
    let p = load(ctx, pool)?;
    if amount_a == 0 || amount_b == 0 {
        return Err(TxError::InvalidInput {
            reason: "liquidity needs both assets".into(),
        });
    }
    let supply_key = Key::field(pool, LP_SUPPLY);
    let supply = u128::from(ctx.balance(supply_key)?);
    let reserve_a = u128::from(ctx.balance(Key::balance(pool, p.asset_a))?);
    let reserve_b = u128::from(ctx.balance(Key::balance(pool, p.asset_b))?);
    let (a, b) = (u128::from(amount_a), u128::from(amount_b));
    let shares = if supply == 0 {
        isqrt(a * b)
    } else if reserve_a == 0 || reserve_b == 0 {
        return Err(TxError::InvalidInput {
            reason: format!("{pool} has shares but an empty reserve"),
        });
    } else {
        (a * supply / reserve_a).min(b * supply / reserve_b)
    };
    let shares = Value::try_from(shares).map_err(|_| TxError::Overflow { key: supply_key })?;
    if shares == 0 {
        return Err(TxError::InvalidInput {
            reason: "deposit too small to mint a share".into(),
        });
    }
    let provider = ctx.sender();
    ctx.debit(Key::balance(provider, p.asset_a), amount_a)?;
    ctx.debit(Key::balance(provider, p.asset_b), amount_b)?;
    ctx.credit(Key::balance(pool, p.asset_a), amount_a)?;
    ctx.credit(Key::balance(pool, p.asset_b), amount_b)?;
    ctx.credit(supply_key, shares)?;
    ctx.credit(Key::balance(provider, AssetId::lp_shares(pool)), shares)?;
    Ok(shares)
}

/// The output of a swap of `amount_in` against reserves (`reserve_in`,
/// `reserve_out`) with a fee of `fee_bps`, or `None` on overflow.
pub fn quote(
    amount_in: Value,
    reserve_in: Value,
    reserve_out: Value,
    fee_bps: Value,
) -> Option<Value> {
    let in_after_fee = u128::from(amount_in).checked_mul(BPS.checked_sub(u128::from(fee_bps))?)?;
    let numerator = in_after_fee.checked_mul(u128::from(reserve_out))?;
    let denominator = u128::from(reserve_in)
        .checked_mul(BPS)?
        .checked_add(in_after_fee)?;
    Value::try_from(numerator.checked_div(denominator)?).ok()
}

/// Swaps `amount_in` of `asset_in` for `asset_out`; returns the amount out.
pub fn swap(
    ctx: &mut Context<'_>,
    pool: AccountId,
    asset_in: AssetId,
    asset_out: AssetId,
    amount_in: Value,
    min_out: Value,
) -> Result<Value, TxError> {
    let p = load(ctx, pool)?;
    let pair_matches = (asset_in, asset_out) == (p.asset_a, p.asset_b)
        || (asset_in, asset_out) == (p.asset_b, p.asset_a);
    if !pair_matches {
        return Err(TxError::InvalidInput {
            reason: format!(
                "{pool} trades assets {} and {}, not {} for {}",
                p.asset_a.0, p.asset_b.0, asset_in.0, asset_out.0
            ),
        });
    }
    if amount_in == 0 {
        return Err(TxError::InvalidInput {
            reason: "swap of zero".into(),
        });
    }
    let pool_in = Key::balance(pool, asset_in);
    let pool_out = Key::balance(pool, asset_out);
    let reserve_in = ctx.balance(pool_in)?;
    let reserve_out = ctx.balance(pool_out)?;
    if reserve_in == 0 || reserve_out == 0 {
        return Err(TxError::InvalidInput {
            reason: format!("{pool} has no liquidity"),
        });
    }
    let amount_out = quote(amount_in, reserve_in, reserve_out, p.fee_bps)
        .ok_or(TxError::Overflow { key: pool_out })?;
    if amount_out < min_out || amount_out == 0 {
        return Err(TxError::SlippageExceeded {
            min_out,
            amount_out,
        });
    }
    let trader = ctx.sender();
    ctx.debit(Key::balance(trader, asset_in), amount_in)?;
    ctx.credit(pool_in, amount_in)?;
    ctx.debit(pool_out, amount_out)?;
    ctx.credit(Key::balance(trader, asset_out), amount_out)?;
    Ok(amount_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// isqrt is the floor square root, checked against float sqrt on a
    /// range and on extremes.
    #[test]
    fn isqrt_is_floor_sqrt() {
        for n in 0..10_000u128 {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "n={n} r={r}");
        }
        let max = u128::from(u64::MAX) * u128::from(u64::MAX);
        assert_eq!(isqrt(max), u128::from(u64::MAX));
    }

    /// The quote keeps the product of reserves from decreasing.
    #[test]
    fn quote_never_decreases_k() {
        for (amount, r_in, r_out, fee) in [
            (1, 1000, 1000, 30),
            (500, 1000, 1000, 0),
            (10, 7, 1_000_000, 30),
        ] {
            let out = quote(amount, r_in, r_out, fee).unwrap();
            let k_before = u128::from(r_in) * u128::from(r_out);
            let k_after = u128::from(r_in + amount) * u128::from(r_out - out);
            assert!(k_after >= k_before, "{amount} {r_in} {r_out} {fee}");
        }
        assert_eq!(quote(u64::MAX, u64::MAX, u64::MAX, 0), None);
    }
}
