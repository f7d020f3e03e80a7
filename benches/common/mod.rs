//! What the benches share: a fee payment into one collector, the hot
//! counter of the `fees` benchmarks.

use std::sync::Arc;

use parashard::prelude::*;

/// [`PayFee`]'s id.
pub const FEE_CONTRACT: ContractId = ContractId(1);
/// The account every fee goes to.
pub const COLLECTOR: AccountId = AccountId(u64::MAX);

/// Moves `args[0]` coins from the sender to [`COLLECTOR`] and counts the
/// payment in the collector's field 0.
pub struct PayFee;

impl Contract for PayFee {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let fee = args.first().copied().unwrap_or(1);
        ctx.debit(Key::balance(ctx.sender(), AssetId::COIN), fee)?;
        ctx.add(Key::balance(COLLECTOR, AssetId::COIN), fee)?;
        ctx.add(Key::field(COLLECTOR, 0), 1)?;
        Ok(fee.into())
    }
}

/// A registry with [`PayFee`].
pub fn fee_registry() -> Arc<Registry> {
    let mut registry = Registry::new();
    registry
        .register(FEE_CONTRACT, "pay-fee-1", Arc::new(PayFee))
        .expect("one registration");
    Arc::new(registry)
}

/// A fee of 1 from `sender`, the collector's keys declared as add keys
/// if `adds`, else as ordinary writes.
pub fn pay_fee(id: TxId, sender: AccountId, adds: bool) -> Transaction {
    let payer = [Key::balance(sender, AssetId::COIN)];
    let collector = [
        Key::balance(COLLECTOR, AssetId::COIN),
        Key::field(COLLECTOR, 0),
    ];
    let access = if adds {
        AccessSet::with_adds([], payer, collector)
    } else {
        AccessSet::new([], payer.into_iter().chain(collector))
    };
    ContractCall {
        sender,
        contract: FEE_CONTRACT,
        args: vec![1],
        access,
    }
    .with_id(id)
}
