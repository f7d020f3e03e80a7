//! The native coin: accounts exist once created, and coins move between
//! existing accounts only.

use super::Context;
use crate::model::{AccountId, AssetId, Call, Key, Transaction, TxError, Value};
use crate::state::Slot;

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

/// [`transfer`] without the [`Context`], for the overwhelmingly common shape
/// of a coin transfer: the access set is exactly the sender's and the
/// receiver's coin balances, in that order, and they differ, and the gas
/// limit covers [`gas::TRANSFER`](super::gas::TRANSFER) (and stays within
/// [`gas::MAX_LIMIT`](super::gas::MAX_LIMIT)). Returns `None`
/// for any other transaction, which then takes the general path; otherwise
/// the two balances' slots with their new values, for the caller to store.
/// Same checks in the same order, hence the same receipt (the tests hold
/// both paths to that). Small and inlined: executors run it per transfer.
#[inline(always)]
pub(crate) fn transfer_fast<'s>(
    tx: &Transaction,
    slots: &[Option<&'s Slot>],
) -> Option<Result<[(&'s Slot, Value); 2], TxError>> {
    let Call::Transfer { to, amount } = tx.call else {
        return None;
    };
    let from = tx.sender;
    let from_key = Key::balance(from, AssetId::COIN);
    let to_key = Key::balance(to, AssetId::COIN);
    // A signed transfer declares its sender's authentication keys, so it
    // never has this shape; the check makes sure it never skips them.
    let canonical = tx.access.reads.is_empty()
        && tx.auth.is_none()
        && (super::gas::TRANSFER..=super::gas::MAX_LIMIT).contains(&tx.gas_limit)
        && tx.access.adds == 0
        && tx.access.writes.len() == 2
        && from != to
        && tx.access.writes[0] == from_key
        && tx.access.writes[1] == to_key;
    if !canonical {
        return None;
    }
    let from_slot = slots[0];
    let Some((from_slot, available)) = from_slot.and_then(|s| Some((s, s.load()?))) else {
        return Some(Err(TxError::UnknownAccount { account: from }));
    };
    let to_slot = slots[1];
    let Some((to_slot, to_balance)) = to_slot.and_then(|s| Some((s, s.load()?))) else {
        return Some(Err(TxError::UnknownAccount { account: to }));
    };
    let Some(from_left) = available.checked_sub(amount) else {
        return Some(Err(TxError::InsufficientFunds {
            key: from_key,
            needed: amount,
            available,
        }));
    };
    let Some(to_sum) = to_balance.checked_add(amount) else {
        return Some(Err(TxError::Overflow { key: to_key }));
    };
    Some(Ok([(from_slot, from_left), (to_slot, to_sum)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::Writes;
    use crate::model::TxId;
    use crate::state::State;
    use crate::workload::Rng;

    /// The transfer fast path returns exactly what the general path through
    /// the Context returns, on random balances (missing accounts and values
    /// near the overflow edge included) and amounts; seeded, the seed is in
    /// every failure message.
    #[test]
    fn fast_path_matches_general_path() {
        let seed = 0x5EED_0001;
        let mut rng = Rng::new(seed);
        let edge = |rng: &mut Rng| match rng.below(4) {
            0 => rng.below(100),
            1 => u64::MAX - rng.below(100),
            2 => rng.next_u64(),
            _ => 1 << 40,
        };
        for case in 0..20_000 {
            let (from, to) = (AccountId(1), AccountId(2));
            let mut state = State::new();
            for account in [from, to] {
                if !rng.chance(10) {
                    state.set(Key::balance(account, AssetId::COIN), edge(&mut rng));
                }
            }
            let tx = Transaction::transfer(TxId::from_u128(case), from, to, edge(&mut rng));
            let slots: Vec<Option<&Slot>> = tx.access.keys().map(|k| state.slot(k)).collect();
            let fast = transfer_fast(&tx, &slots).expect("canonical transfer").map(
                |[(_, from_left), (_, to_sum)]| {
                    let writes: Writes = [(0, from_left), (1, to_sum)].into_iter().collect();
                    (0, writes)
                },
            );
            let mut ctx = Context::new(&tx, &slots);
            let general = transfer(
                &mut ctx,
                to,
                match tx.call {
                    Call::Transfer { amount, .. } => amount,
                    _ => unreachable!(),
                },
            )
            .and_then(|output| Ok((output, ctx.into_pending().resolve(&tx, &slots)?)));
            assert_eq!(fast, general, "seed {seed:#x}, case {case}");
        }
    }

    /// Transfers that are not in the canonical shape (to oneself, extra or
    /// reordered keys) are left to the general path.
    #[test]
    fn fast_path_declines_other_shapes() {
        let (a, b) = (AccountId(1), AccountId(2));
        let state = State::new();
        let mut to_self = Transaction::transfer(TxId::from_u128(1), a, a, 5);
        let mut reordered = Transaction::transfer(TxId::from_u128(2), a, b, 5);
        reordered.access.writes.swap(0, 1);
        let mut extra = Transaction::transfer(TxId::from_u128(3), a, b, 5);
        extra
            .access
            .reads
            .push(Key::balance(AccountId(3), AssetId::COIN));
        for tx in [&mut to_self, &mut reordered, &mut extra] {
            let slots: Vec<Option<&Slot>> = tx.access.keys().map(|k| state.slot(k)).collect();
            assert!(transfer_fast(tx, &slots).is_none(), "{:?}", tx.access);
        }
    }
}
