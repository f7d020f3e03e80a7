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
    let from_key = Key::balance(from, AssetId::COIN);
    let to_key = Key::balance(to, AssetId::COIN);
    // One read per account: existence and balance at once.
    let available = ctx
        .read(from_key)?
        .ok_or(TxError::UnknownAccount { account: from })?;
    let to_balance = ctx
        .read(to_key)?
        .ok_or(TxError::UnknownAccount { account: to })?;
    let from_left = available
        .checked_sub(amount)
        .ok_or(TxError::InsufficientFunds {
            key: from_key,
            needed: amount,
            available,
        })?;
    if from == to {
        return Ok(0);
    }
    let to_sum = to_balance
        .checked_add(amount)
        .ok_or(TxError::Overflow { key: to_key })?;
    ctx.write(from_key, from_left)?;
    ctx.write(to_key, to_sum)?;
    Ok(0)
}
