//! The native multi-asset token. Every asset has one issuer, the only
//! account that may mint it; balances of assets other than the coin start
//! at zero for every account (ERC-20 style).

use super::Context;
use crate::model::{AccountId, AssetId, Key, TxError, Value};

/// The registry account that holds asset metadata.
pub const ASSET_REGISTRY: AccountId = AccountId(u64::MAX);

/// The key that holds `asset`'s issuer.
pub fn issuer_key(asset: AssetId) -> Key {
    Key::field(ASSET_REGISTRY, asset.0)
}

fn check_token(asset: AssetId) -> Result<(), TxError> {
    if asset == AssetId::COIN {
        return Err(TxError::InvalidInput {
            reason: "the coin is not a token: use Transfer".into(),
        });
    }
    if asset.0 >= AssetId::LP_BASE {
        return Err(TxError::InvalidInput {
            reason: format!("asset {} is a pool share, issued only by its pool", asset.0),
        });
    }
    Ok(())
}

/// Registers `asset` with the sender as issuer.
pub fn create_asset(ctx: &mut Context<'_>, asset: AssetId) -> Result<Value, TxError> {
    check_token(asset)?;
    let key = issuer_key(asset);
    if ctx.read(key)?.is_some() {
        return Err(TxError::AlreadyExists { key });
    }
    ctx.write(key, ctx.sender().0)?;
    Ok(0)
}

/// Mints `amount` of `asset` to `to`; only the issuer may.
pub fn mint(
    ctx: &mut Context<'_>,
    asset: AssetId,
    to: AccountId,
    amount: Value,
) -> Result<Value, TxError> {
    check_token(asset)?;
    let key = issuer_key(asset);
    let issuer = ctx.read(key)?.ok_or(TxError::NotFound { key })?;
    if issuer != ctx.sender().0 {
        return Err(TxError::Unauthorized {
            sender: ctx.sender(),
            action: format!("mint asset {}", asset.0),
        });
    }
    ctx.credit(Key::balance(to, asset), amount)?;
    Ok(0)
}

/// Moves `amount` of `asset` from the sender to `to`. Pool shares are
/// transferable like any token.
pub fn transfer(
    ctx: &mut Context<'_>,
    asset: AssetId,
    to: AccountId,
    amount: Value,
) -> Result<Value, TxError> {
    if asset == AssetId::COIN {
        return Err(TxError::InvalidInput {
            reason: "the coin is not a token: use Transfer".into(),
        });
    }
    ctx.debit(Key::balance(ctx.sender(), asset), amount)?;
    ctx.credit(Key::balance(to, asset), amount)?;
    Ok(0)
}
