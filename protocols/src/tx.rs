//! Transactions built from named parts.
//!
//! Each call has a small struct whose fields say what each value is, so
//! that two amounts cannot be swapped unnoticed. `.into()` makes the
//! transaction with a fresh random id; `.with_id(id)` with an id of the
//! caller's (to retry it later under the same id, see [`crate::committed`]).
//! The access set is derived from the parts, as the positional constructors
//! on [`Transaction`] derive it.
//!
//! ```
//! use parashard_protocols::tx::{Swap, Transfer, WithId};
//! use parashard_protocols::{AccountId, AssetId, Transaction, TxId};
//!
//! let (alice, bob, pool) = (AccountId(1), AccountId(2), AccountId(100));
//! let pay: Transaction = Transfer { from: alice, to: bob, amount: 25 }.into();
//! let swap = Swap {
//!     trader: alice,
//!     pool,
//!     asset_in: AssetId(1),
//!     asset_out: AssetId(2),
//!     amount_in: 1_000,
//!     min_out: 990,
//! }
//! .with_id(TxId::from_u128(7));
//! assert_eq!(swap.id, TxId::from_u128(7));
//! assert_ne!(pay.id, swap.id);
//! ```

use serde::{Deserialize, Serialize};

use crate::model::{AccessSet, AccountId, AssetId, ContractId, Key, Transaction, TxId, Value};

/// Creates `account` holding `balance` coins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// The new account.
    pub account: AccountId,
    /// Its coins.
    pub balance: Value,
}

/// Moves `amount` coins from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The payer (the sender).
    pub from: AccountId,
    /// The payee.
    pub to: AccountId,
    /// Coins moved.
    pub amount: Value,
}

/// Registers `asset` with `issuer` as its only minter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAsset {
    /// The minter (the sender).
    pub issuer: AccountId,
    /// The new asset.
    pub asset: AssetId,
}

/// Mints `amount` of `asset` to `to`; only the asset's issuer may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mint {
    /// The asset's issuer (the sender).
    pub issuer: AccountId,
    /// The asset.
    pub asset: AssetId,
    /// Who receives it.
    pub to: AccountId,
    /// How much.
    pub amount: Value,
}

/// Moves `amount` of `asset` from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTransfer {
    /// The payer (the sender).
    pub from: AccountId,
    /// The asset.
    pub asset: AssetId,
    /// The payee.
    pub to: AccountId,
    /// How much.
    pub amount: Value,
}

/// Creates the constant-product pool `pool` for a pair of assets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePool {
    /// Who creates it (the sender).
    pub creator: AccountId,
    /// The pool's account.
    pub pool: AccountId,
    /// One asset of the pair.
    pub asset_a: AssetId,
    /// The other.
    pub asset_b: AssetId,
    /// The swap fee, in basis points.
    pub fee_bps: Value,
}

/// Deposits both assets of `pool`'s pair for pool shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLiquidity {
    /// Who deposits (the sender).
    pub provider: AccountId,
    /// The pool.
    pub pool: AccountId,
    /// The pool's first asset.
    pub asset_a: AssetId,
    /// The pool's second asset.
    pub asset_b: AssetId,
    /// How much of `asset_a`.
    pub amount_a: Value,
    /// How much of `asset_b`.
    pub amount_b: Value,
}

/// Sells `amount_in` of `asset_in` to `pool` for at least `min_out` of
/// `asset_out`; fails with [`crate::TxError::SlippageExceeded`] below that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swap {
    /// Who swaps (the sender).
    pub trader: AccountId,
    /// The pool.
    pub pool: AccountId,
    /// The asset sold.
    pub asset_in: AssetId,
    /// The asset bought.
    pub asset_out: AssetId,
    /// How much is sold.
    pub amount_in: Value,
    /// The least the trader accepts.
    pub min_out: Value,
}

/// Calls a user contract with `args`, allowed to touch `access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractCall {
    /// The sender.
    pub sender: AccountId,
    /// The contract.
    pub contract: ContractId,
    /// Its arguments.
    pub args: Vec<Value>,
    /// Every key the call may read or write.
    pub access: AccessSet,
}

/// A key as a request names it: a balance (`{"account": 1, "asset": 0}`)
/// or a contract field (`{"account": 1, "field": 3}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum KeyRef {
    /// The balance of `asset` held by `account`.
    Balance {
        /// The account.
        account: AccountId,
        /// The asset (0: the coin).
        asset: AssetId,
    },
    /// Contract field `field` of `account`.
    Field {
        /// The account.
        account: AccountId,
        /// The field number.
        field: u64,
    },
}

impl KeyRef {
    /// The key it names.
    pub fn key(self) -> Key {
        match self {
            KeyRef::Balance { account, asset } => Key::balance(account, asset),
            KeyRef::Field { account, field } => Key::field(account, field),
        }
    }
}

/// A user contract call as a request spells it: the keys it may only read
/// and those it may write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The sender.
    pub sender: AccountId,
    /// The contract.
    pub contract: ContractId,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keys it may only read.
    #[serde(default)]
    pub reads: Vec<KeyRef>,
    /// Keys it may read and write.
    #[serde(default)]
    pub writes: Vec<KeyRef>,
    /// Keys it may only add to (see [`AccessSet`]).
    #[serde(default)]
    pub adds: Vec<KeyRef>,
}

/// Any call, as data: the JSON form of a transaction (`docs/JSONL.md`),
/// tagged by `type`. Turn it into a transaction with [`WithId::with_id`]
/// or `into`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// [`CreateAccount`].
    CreateAccount(CreateAccount),
    /// [`Transfer`].
    Transfer(Transfer),
    /// [`CreateAsset`].
    CreateAsset(CreateAsset),
    /// [`Mint`].
    Mint(Mint),
    /// [`TokenTransfer`].
    TokenTransfer(TokenTransfer),
    /// [`CreatePool`].
    CreatePool(CreatePool),
    /// [`AddLiquidity`].
    AddLiquidity(AddLiquidity),
    /// [`Swap`].
    Swap(Swap),
    /// A user contract call.
    Call(CallRequest),
    /// [`SetPublicKey`].
    SetPublicKey(SetPublicKey),
}

/// Gives `account` the ed25519 public key `key` (hex in JSON); see
/// [`crate::model::Call::SetPublicKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPublicKey {
    /// The account (the sender).
    pub account: AccountId,
    /// Its key.
    pub key: crate::auth::PublicKey,
}

impl WithId for Request {
    fn with_id(self, id: TxId) -> Transaction {
        match self {
            Request::CreateAccount(part) => part.with_id(id),
            Request::Transfer(part) => part.with_id(id),
            Request::CreateAsset(part) => part.with_id(id),
            Request::Mint(part) => part.with_id(id),
            Request::TokenTransfer(part) => part.with_id(id),
            Request::CreatePool(part) => part.with_id(id),
            Request::AddLiquidity(part) => part.with_id(id),
            Request::Swap(part) => part.with_id(id),
            Request::SetPublicKey(part) => part.with_id(id),
            Request::Call(call) => {
                let keys =
                    |refs: Vec<KeyRef>| refs.into_iter().map(KeyRef::key).collect::<Vec<_>>();
                let access =
                    AccessSet::with_adds(keys(call.reads), keys(call.writes), keys(call.adds));
                Transaction::custom(id, call.sender, call.contract, call.args, access)
            }
        }
    }
}

/// One line of a transactions file (`parashard run --txs`, see
/// `docs/JSONL.md`): a [`Request`] (its `type` and fields), with an
/// optional `id` (a UUID; a fresh one if absent) and, for a sender that
/// holds a public key, its `auth` (sequence number, key and signature over
/// the transaction the request builds, see [`crate::auth`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLine {
    /// The transaction's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<TxId>,
    /// The sender's signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::auth::Auth>,
    /// The transaction's gas limit ([`crate::contracts::gas`]), the
    /// default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas_limit: Option<u64>,
    /// The call.
    #[serde(flatten)]
    pub request: Request,
}

impl TxLine {
    /// Parses one line of a transactions file into its transaction (see
    /// [`TxLine::into_transaction`]). Never panics, whatever the text (the
    /// fuzz target `tx_line` holds it to that); the error says what is
    /// wrong and where in the line.
    pub fn parse(line: &str) -> Result<Transaction, serde_json::Error> {
        serde_json::from_str::<TxLine>(line).map(TxLine::into_transaction)
    }

    /// The line's transaction: its request with its id (or a fresh one)
    /// and, if signed, its signature, with the sender's authentication
    /// keys declared as [`Transaction::sign`] declares them.
    pub fn into_transaction(self) -> Transaction {
        let mut tx = self.request.with_id(self.id.unwrap_or_else(TxId::random));
        if let Some(limit) = self.gas_limit {
            tx.gas_limit = limit;
        }
        match self.auth {
            Some(auth) => tx.with_auth(auth),
            None => tx,
        }
    }
}

/// Builds the transaction of a call's parts with a given id.
pub trait WithId {
    /// The transaction, with id `id`.
    fn with_id(self, id: TxId) -> Transaction;
}

macro_rules! with_id {
    ($($name:ident => |$part:ident, $id:ident| $build:expr;)*) => {$(
        impl WithId for $name {
            fn with_id(self, $id: TxId) -> Transaction {
                let $part = self;
                $build
            }
        }

        impl From<$name> for Transaction {
            /// The transaction, with a fresh random id.
            fn from(part: $name) -> Transaction {
                part.with_id(TxId::random())
            }
        }
    )*};
}

with_id! {
    CreateAccount => |p, id| Transaction::create_account(id, p.account, p.balance);
    Transfer => |p, id| Transaction::transfer(id, p.from, p.to, p.amount);
    CreateAsset => |p, id| Transaction::create_asset(id, p.issuer, p.asset);
    Mint => |p, id| Transaction::mint(id, p.issuer, p.asset, p.to, p.amount);
    TokenTransfer => |p, id| Transaction::token_transfer(id, p.from, p.asset, p.to, p.amount);
    CreatePool => |p, id| {
        Transaction::create_pool(id, p.creator, p.pool, p.asset_a, p.asset_b, p.fee_bps)
    };
    AddLiquidity => |p, id| Transaction::add_liquidity(
        id, p.provider, p.pool, p.asset_a, p.asset_b, p.amount_a, p.amount_b,
    );
    Swap => |p, id| Transaction::swap(
        id, p.trader, p.pool, p.asset_in, p.asset_out, p.amount_in, p.min_out,
    );
    ContractCall => |p, id| Transaction::custom(id, p.sender, p.contract, p.args, p.access);
    SetPublicKey => |p, id| Transaction::set_public_key(id, p.account, p.key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Call;

    /// Each named form builds exactly the transaction of its positional
    /// constructor, and `into` gives every transaction an id of its own.
    #[test]
    fn named_parts_match_the_positional_constructors() {
        let (a, b, pool, id) = (AccountId(1), AccountId(2), AccountId(9), TxId::from_u128(5));
        let (x, y) = (AssetId(3), AssetId(4));
        let swap = Swap {
            trader: a,
            pool,
            asset_in: x,
            asset_out: y,
            amount_in: 100,
            min_out: 90,
        };
        assert_eq!(
            swap.with_id(id),
            Transaction::swap(id, a, pool, x, y, 100, 90)
        );
        let mut liquidity = AddLiquidity {
            provider: a,
            pool,
            asset_a: x,
            asset_b: y,
            amount_a: 7,
            amount_b: 0,
        };
        liquidity.amount_b = 8;
        let expected = Transaction::add_liquidity(id, a, pool, x, y, 7, 8);
        assert_eq!(liquidity.with_id(id), expected);
        let pay = Transfer {
            from: a,
            to: b,
            amount: 3,
        };
        assert_eq!(pay.with_id(id), Transaction::transfer(id, a, b, 3));
        let first: Transaction = pay.into();
        let second: Transaction = pay.into();
        assert_ne!(first.id, second.id, "fresh ids");
        assert_eq!(first.call, Call::Transfer { to: b, amount: 3 });
        let mint = Mint {
            issuer: a,
            asset: x,
            to: b,
            amount: 4,
        };
        assert_eq!(mint.with_id(id), Transaction::mint(id, a, x, b, 4));
        let tokens = TokenTransfer {
            from: a,
            asset: x,
            to: b,
            amount: 6,
        };
        assert_eq!(
            tokens.with_id(id),
            Transaction::token_transfer(id, a, x, b, 6)
        );
    }

    /// Requests decode from their JSON form, tagged by `type`, into the
    /// transactions their named parts build; unknown fields and types are
    /// refused.
    #[test]
    fn requests_decode_from_json() {
        let id = TxId::from_u128(1);
        let decode = |text: &str| serde_json::from_str::<Request>(text);
        let transfer = decode(r#"{"type":"transfer","from":1,"to":2,"amount":5}"#).unwrap();
        assert_eq!(
            transfer.with_id(id),
            Transaction::transfer(id, AccountId(1), AccountId(2), 5)
        );
        let call = decode(
            r#"{"type":"call","sender":1,"contract":7,"args":[3],
                "reads":[{"account":1,"field":2}],"writes":[{"account":4,"asset":0}],
                "adds":[{"account":5,"field":0}]}"#,
        )
        .unwrap();
        let access = AccessSet::with_adds(
            [Key::field(AccountId(1), 2)],
            [Key::balance(AccountId(4), AssetId::COIN)],
            [Key::field(AccountId(5), 0)],
        );
        assert_eq!(
            call.with_id(id),
            Transaction::custom(id, AccountId(1), ContractId(7), vec![3], access)
        );
        for bad in [
            r#"{"type":"transfer","from":1,"to":2}"#,
            r#"{"type":"transfer","from":1,"to":2,"amount":5,"memo":1}"#,
            r#"{"type":"teleport","from":1}"#,
            r#"{"type":"transfer","from":-1,"to":2,"amount":5}"#,
            r#"{"type":"call","sender":1,"contract":7,"writes":[{"account":4}]}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad} decoded");
        }
    }

    /// Proves a signed transaction travels as a JSON line: the line of a
    /// signed transfer (id, auth and the request's fields side by side)
    /// reads back as the very transaction that was signed, and its
    /// signature verifies; a line with an unknown field or a bad key is
    /// refused.
    #[test]
    fn signed_lines_read_back_as_the_signed_transaction() {
        let key = crate::auth::SigningKey::from_bytes(&[4; 32]);
        let part = Transfer {
            from: AccountId(1),
            to: AccountId(2),
            amount: 9,
        };
        let id = TxId::from_u128(77);
        let signed = part.with_id(id).sign(5, 3, &key);
        let line = TxLine {
            id: Some(id),
            auth: signed.auth.as_deref().cloned(),
            gas_limit: None,
            request: Request::Transfer(part),
        };
        let text = serde_json::to_string(&line).expect("encodes");
        assert!(text.starts_with(r#"{"id":"#), "{text}");
        let read: TxLine = serde_json::from_str(&text).expect("decodes");
        let tx = read.into_transaction();
        assert_eq!(tx, signed);
        assert!(crate::auth::verify(5, std::slice::from_ref(&tx)).is_empty());
        let unsigned: TxLine =
            serde_json::from_str(r#"{"type":"transfer","from":1,"to":2,"amount":3}"#)
                .expect("decodes");
        assert_eq!(unsigned.id, None);
        assert!(unsigned.into_transaction().auth.is_none());
        for bad in [
            r#"{"type":"transfer","from":1,"to":2,"amount":3,"extra":1}"#,
            r#"{"type":"set_public_key","account":1,"key":"00"}"#,
        ] {
            assert!(
                serde_json::from_str::<TxLine>(bad).is_err(),
                "{bad} decoded"
            );
        }
    }
}
