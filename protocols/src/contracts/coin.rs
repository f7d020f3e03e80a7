//! The native coin: accounts exist once created, and coins move between
//! existing accounts only.

use super::Context;
use crate::model::{AccountId, AssetId, Key, TxError, Value};

/// Creates `account` with `balance` coins. The sender must be the account.
pub fn create_account(
    ctx: &mut Context<'_>,
    account: AccountId,
    balance: Value,
) -> Result<Value, TxError> {
    if ctx.sender() != account {
        return Err(TxError::Unauthorized {
            sender: ctx.sender(),
            action: format!("create {account}"),
        });
    }
    let key = Key::balance(account, AssetId::COIN);
    if ctx.read(key)?.is_some() {
        return Err(TxError::AlreadyExists { key });
    }
    ctx.write(key, balance)?;
    Ok(0)
}

/// Moves `amount` coins from the sender to `to`.
#[inline]
pub fn transfer(ctx: &mut Context<'_>, to: AccountId, amount: Value) -> Result<Value, TxError> {
    let from = ctx.sender();
    ctx.require_account(from)?;
    ctx.require_account(to)?;
    ctx.debit(Key::balance(from, AssetId::COIN), amount)?;
    ctx.credit(Key::balance(to, AssetId::COIN), amount)?;
    Ok(0)
}
