//! An NFT market as a user contract: tokens live on their own accounts
//! (and so on their own shards), a sale moves the token to the buyer, the
//! price from the buyer to the seller and a royalty to the creator, all in
//! one atomic cross-shard transaction. Buyers racing for one token: exactly
//! one gets it, the others get typed errors and pay nothing.
//!
//! Run with `cargo run --release --example nft_market`.

use std::sync::Arc;

use parashard::prelude::*;

/// The market contract's id.
pub const MARKET: ContractId = ContractId(7);

// A token's fields, on the token's own account.
pub const OWNER: u64 = 0;
pub const PRICE: u64 = 1;
const CREATOR: u64 = 2;
const ROYALTY_BPS: u64 = 3;

// Operations: the first argument.
const MINT: Value = 0;
const LIST: Value = 1;
const BUY: Value = 2;

fn field(token: AccountId, field: u64) -> Key {
    Key::field(token, field)
}

fn coins(account: AccountId) -> Key {
    Key::balance(account, AssetId::COIN)
}

/// The market: `mint(royalty_bps)`, `list(price)` (0 delists) and
/// `buy(seller, max_price)`, each on one token (the transaction's
/// declared token account).
pub struct Market;

impl Market {
    /// Mints `token` to `creator`, who earns `royalty_bps` of every resale.
    pub fn mint(id: TxId, creator: AccountId, token: AccountId, royalty_bps: Value) -> Transaction {
        let writes = [OWNER, PRICE, CREATOR, ROYALTY_BPS].map(|f| field(token, f));
        Market::call(id, creator, vec![MINT, token.0, royalty_bps], [], writes)
    }

    /// Lists `token` for `price` coins; only its owner may.
    pub fn list(id: TxId, owner: AccountId, token: AccountId, price: Value) -> Transaction {
        let access = ([field(token, OWNER)], [field(token, PRICE)]);
        Market::call(id, owner, vec![LIST, token.0, price], access.0, access.1)
    }

    /// Buys `token` from `seller` (its owner when the buyer looked) for its
    /// listed price, if that is at most `max_price`. The access set names
    /// every account the sale pays: the buyer, the seller, the creator.
    pub fn buy(
        id: TxId,
        buyer: AccountId,
        token: AccountId,
        seller: AccountId,
        creator: AccountId,
        max_price: Value,
    ) -> Transaction {
        let reads = [field(token, CREATOR), field(token, ROYALTY_BPS)];
        let writes = [
            field(token, OWNER),
            field(token, PRICE),
            coins(buyer),
            coins(seller),
            coins(creator),
        ];
        Market::call(
            id,
            buyer,
            vec![BUY, token.0, seller.0, max_price],
            reads,
            writes,
        )
    }

    fn call<const R: usize, const W: usize>(
        id: TxId,
        sender: AccountId,
        args: Vec<Value>,
        reads: [Key; R],
        writes: [Key; W],
    ) -> Transaction {
        Transaction::custom(id, sender, MARKET, args, AccessSet::new(reads, writes))
    }
}

impl Contract for Market {
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError> {
        let invalid = |reason: &str| TxError::InvalidInput {
            reason: reason.into(),
        };
        let (&op, &token) = match args {
            [op, token, ..] => (op, token),
            _ => return Err(invalid("market: need an operation and a token")),
        };
        let token = AccountId(token);
        let sender = ctx.sender();
        match (op, &args[2..]) {
            (MINT, &[royalty_bps]) => {
                if royalty_bps > 10_000 {
                    return Err(invalid("royalty above 100%"));
                }
                if ctx.read(field(token, OWNER))?.is_some() {
                    return Err(TxError::AlreadyExists {
                        key: field(token, OWNER),
                    });
                }
                ctx.write(field(token, OWNER), sender.0)?;
                ctx.write(field(token, PRICE), 0)?;
                ctx.write(field(token, CREATOR), sender.0)?;
                ctx.write(field(token, ROYALTY_BPS), royalty_bps)?;
                Ok(0.into())
            }
            (LIST, &[price]) => {
                let owner = ctx.read(field(token, OWNER))?.ok_or(TxError::NotFound {
                    key: field(token, OWNER),
                })?;
                if owner != sender.0 {
                    return Err(TxError::Unauthorized {
                        sender,
                        action: format!("list {token}, owned by {}", AccountId(owner)),
                    });
                }
                ctx.write(field(token, PRICE), price)?;
                Ok(price.into())
            }
            (BUY, &[seller, max_price]) => {
                let owner = ctx.read(field(token, OWNER))?.ok_or(TxError::NotFound {
                    key: field(token, OWNER),
                })?;
                let price = ctx.balance(field(token, PRICE))?;
                if owner != seller || price == 0 {
                    // Sold (or delisted) since the buyer looked.
                    return Err(TxError::NotFound {
                        key: field(token, PRICE),
                    });
                }
                if price > max_price {
                    let reason = format!("price {price} above the buyer's limit {max_price}");
                    return Err(TxError::InvalidInput { reason });
                }
                let creator = AccountId(ctx.balance(field(token, CREATOR))?);
                let royalty = price
                    .checked_mul(ctx.balance(field(token, ROYALTY_BPS))?)
                    .ok_or(TxError::Overflow {
                        key: field(token, PRICE),
                    })?
                    / 10_000;
                ctx.debit(coins(sender), price)?;
                ctx.credit(coins(AccountId(seller)), price - royalty)?;
                ctx.credit(coins(creator), royalty)?;
                ctx.write(field(token, OWNER), sender.0)?;
                ctx.write(field(token, PRICE), 0)?;
                Ok(price.into())
            }
            _ => Err(invalid("market: unknown operation or wrong arguments")),
        }
    }
}

/// Runs the market on a fresh cluster and checks its invariants: one
/// winner per race, coins conserved, owners as the sales say.
pub fn run() -> Result<(), ClusterError> {
    let creator = AccountId(1);
    let (alice, bob, carol) = (AccountId(2), AccountId(3), AccountId(4));
    let tokens = [AccountId(100), AccountId(101)];
    let cluster = Cluster::builder()
        .shards(4)
        .workers(1)
        .place(creator, ShardId(0))
        .place(alice, ShardId(1))
        .place(bob, ShardId(2))
        .place(carol, ShardId(3))
        .place(tokens[0], ShardId(3))
        .place(tokens[1], ShardId(0))
        .contract(MARKET, "market-1", Arc::new(Market))?
        .start()?;
    let genesis = [(creator, 0), (alice, 5_000), (bob, 5_000), (carol, 5_000)];
    cluster.create_accounts_blocking(&genesis)?;
    let total: Value = genesis.iter().map(|(_, coins)| coins).sum();

    let show = |what: &str, receipts: &[Receipt]| {
        for receipt in receipts {
            println!("{what}: {}", receipt.status);
        }
    };
    // The creator mints two tokens with a 5% royalty and lists the first.
    let minted = cluster.submit_batch_blocking(vec![
        Market::mint(TxId::random(), creator, tokens[0], 500),
        Market::mint(TxId::random(), creator, tokens[1], 500),
        Market::list(TxId::random(), creator, tokens[0], 1_000),
    ])?;
    show("mint, mint, list", &minted);
    assert!(minted.iter().all(Receipt::is_committed), "{minted:?}");

    // Three buyers race for the listed token in one batch: each sale spans
    // the token's shard and the buyer's, seller's and creator's.
    let race: Vec<_> = [alice, bob, carol]
        .map(|buyer| Market::buy(TxId::random(), buyer, tokens[0], creator, creator, 1_500))
        .into();
    let raced = cluster.submit_batch_blocking(race)?;
    show("race for token 100", &raced);
    let winners: Vec<_> = raced.iter().filter(|r| r.is_committed()).collect();
    assert_eq!(winners.len(), 1, "exactly one buyer gets it: {raced:?}");
    let winner = [alice, bob, carol][raced.iter().position(Receipt::is_committed).expect("won")];

    // A non-owner cannot list; the winner relists higher and Carol (or
    // Bob, if Carol won) buys: the creator earns the royalty on the resale.
    let next = if winner == carol { bob } else { carol };
    let resale = cluster.submit_batch_blocking(vec![
        Market::list(TxId::random(), next, tokens[0], 10),
        Market::list(TxId::random(), winner, tokens[0], 2_000),
    ])?;
    show("list by a stranger, relist by the owner", &resale);
    assert!(!resale[0].is_committed() && resale[1].is_committed());
    let bought = cluster.submit_blocking(Market::buy(
        TxId::random(),
        next,
        tokens[0],
        winner,
        creator,
        2_000,
    ))?;
    show("resale", std::slice::from_ref(&bought));
    assert!(bought.is_committed(), "{bought:?}");

    let owner = cluster.get_many_blocking(&[field(tokens[0], OWNER)])?[0];
    println!("token 100 belongs to {}", AccountId(owner.unwrap_or(0)));
    assert_eq!(owner, Some(next.0));
    let mut sum = 0;
    for (account, _) in genesis {
        let coins = cluster
            .balance_blocking(account, AssetId::COIN)?
            .unwrap_or(0);
        println!("{account}: {coins} coins");
        sum += coins;
    }
    let creator_coins = cluster.balance_blocking(creator, AssetId::COIN)?;
    // 1,000 first sale (no royalty split: the creator sold) + 5% of 2,000.
    assert_eq!(creator_coins, Some(1_000 + 100));
    println!("coins total {sum} (genesis {total}): conserved");
    assert_eq!(sum, total, "coins must add up");
    cluster.shutdown();
    Ok(())
}

#[allow(dead_code)] // the integration tests include this file for `run`
fn main() -> Result<(), ClusterError> {
    run()
}
