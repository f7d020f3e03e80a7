//! The data model: accounts, state keys, transactions and receipts.
//!
//! Every type here crosses a boundary sooner or later (a client, a shard, a
//! log record), so all of them are `serde`-serialisable.

use std::fmt;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use uuid::Uuid;

/// A state word. Balances, reserves and contract fields are all `u64`
/// words; contracts that need more state use more keys.
pub type Value = u64;

/// An account address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId(pub u64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {}", self.0)
    }
}

/// An asset (coin or token) identifier. [`AssetId::COIN`] is the native coin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AssetId(pub u64);

impl AssetId {
    /// The native coin, which every account holds from its creation on.
    pub const COIN: AssetId = AssetId(0);
    /// Asset ids at or above this value are reserved for pool shares.
    pub const LP_BASE: u64 = 1 << 62;

    /// The asset that represents liquidity shares of `pool`.
    pub fn lp_shares(pool: AccountId) -> AssetId {
        AssetId(Self::LP_BASE | (pool.0 & (Self::LP_BASE - 1)))
    }
}

/// Identifies a user contract registered with an executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContractId(pub u64);

/// Identifies a shard.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// Identifies a transaction for its whole life: receipts, logs and 2PC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxId(pub Uuid);

impl TxId {
    /// A fresh random id.
    pub fn random() -> TxId {
        TxId(Uuid::new_v4())
    }

    /// A deterministic id, for simulations and tests that must replay.
    pub fn from_u128(n: u128) -> TxId {
        TxId(Uuid::from_u128(n))
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx {}", self.0)
    }
}

/// One word of state: a field (`slot`) of an account.
///
/// Slots below [`Key::META_BASE`] are balances (the slot is the asset id);
/// slots at or above it are contract fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The account that owns the word; it decides the shard.
    pub account: AccountId,
    /// Which word of the account.
    pub slot: u64,
}

impl Key {
    /// First slot number of contract fields.
    pub const META_BASE: u64 = 1 << 63;

    /// The balance of `asset` held by `account`.
    pub fn balance(account: AccountId, asset: AssetId) -> Key {
        debug_assert!(asset.0 < Self::META_BASE);
        Key {
            account,
            slot: asset.0,
        }
    }

    /// Contract field number `field` of `account`.
    pub fn field(account: AccountId, field: u64) -> Key {
        Key {
            account,
            slot: Self::META_BASE | field,
        }
    }

    /// The first of the slots kept for an account's authentication: its
    /// sequence key, then the four words of its public key. No contract
    /// may touch them ([`Key::is_auth`]).
    pub const AUTH_BASE: u64 = u64::MAX - 4;

    /// `account`'s sequence key: whether the account holds a public key
    /// (the top bit), and how many signed transactions it has committed
    /// (the rest): the sequence number its next signed transaction must
    /// carry. See [`crate::auth`].
    pub fn sequence(account: AccountId) -> Key {
        Key {
            account,
            slot: Self::AUTH_BASE,
        }
    }

    /// Word `word` (0 to 3) of `account`'s public key.
    pub fn public_key_word(account: AccountId, word: u64) -> Key {
        debug_assert!(word < 4);
        Key {
            account,
            slot: Self::AUTH_BASE + 1 + word,
        }
    }

    /// Whether this is one of an account's authentication keys, which only
    /// the signature checks and [`Call::SetPublicKey`] change.
    pub fn is_auth(&self) -> bool {
        self.slot >= Self::AUTH_BASE
    }

    /// The asset this key is a balance of, if it is a balance.
    pub fn asset(&self) -> Option<AssetId> {
        (self.slot < Self::META_BASE).then_some(AssetId(self.slot))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.asset() {
            Some(AssetId(0)) => write!(f, "coin balance of {}", self.account),
            Some(asset) => write!(f, "asset {} balance of {}", asset.0, self.account),
            None => write!(
                f,
                "field {} of {}",
                self.slot & !Self::META_BASE,
                self.account
            ),
        }
    }
}

/// The most keys one transaction may declare.
pub const MAX_ACCESS_KEYS: usize = 64;

/// The most argument words a user contract call may carry.
pub const MAX_ARGS: usize = 1024;

/// The keys a transaction may touch, declared up front. The executor routes
/// and schedules by it, and the execution context refuses anything outside
/// it.
///
/// The last [`AccessSet::adds`] keys of `writes` are *add* keys: the call
/// may only add to them and subtract from them
/// ([`crate::Context::add`]), never read them, so its outcome does not
/// depend on their values, only on whether the result stays in bounds
/// (a fee collector, a volume counter, a total supply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessSet {
    /// Keys the transaction only reads.
    pub reads: SmallVec<[Key; 3]>,
    /// Keys the transaction may change: read and write, except the last
    /// `adds`, which it may only add to.
    pub writes: SmallVec<[Key; 4]>,
    /// How many of `writes`, at its end, are add keys.
    #[serde(default)]
    pub adds: u8,
}

impl AccessSet {
    /// An access set from read-only and read-write keys. A key named twice
    /// is kept once; a key named as both read and write is a write.
    pub fn new(
        reads: impl IntoIterator<Item = Key>,
        writes: impl IntoIterator<Item = Key>,
    ) -> AccessSet {
        let mut set = AccessSet::default();
        for key in writes {
            if !set.writes.contains(&key) {
                set.writes.push(key);
            }
        }
        for key in reads {
            if !set.writes.contains(&key) && !set.reads.contains(&key) {
                set.reads.push(key);
            }
        }
        set
    }

    /// An access set with add keys besides: keys the call only adds to
    /// (see the type's docs). An add key also named as a read or a write
    /// is a write: the call reads it, so it is ordered like any write.
    pub fn with_adds(
        reads: impl IntoIterator<Item = Key>,
        writes: impl IntoIterator<Item = Key>,
        adds: impl IntoIterator<Item = Key>,
    ) -> AccessSet {
        let reads: SmallVec<[Key; 3]> = reads.into_iter().collect();
        let adds: SmallVec<[Key; 2]> = adds.into_iter().collect();
        let read_adds = adds.iter().copied().filter(|key| reads.contains(key));
        let mut set = AccessSet::new(reads.iter().copied(), writes.into_iter().chain(read_adds));
        let first_add = set.writes.len();
        for key in adds {
            if !set.writes.contains(&key) {
                set.writes.push(key);
            }
        }
        // A set too large for the count fails validation (at most
        // MAX_ACCESS_KEYS keys in all).
        set.adds = u8::try_from(set.writes.len() - first_add).unwrap_or(u8::MAX);
        set
    }

    /// The add keys: the last [`AccessSet::adds`] of `writes`.
    pub fn add_keys(&self) -> &[Key] {
        let adds = usize::from(self.adds).min(self.writes.len());
        &self.writes[self.writes.len() - adds..]
    }

    /// Whether declared key number `j` (reads first, then writes) is an
    /// add key.
    #[inline]
    pub fn is_add(&self, j: usize) -> bool {
        self.adds != 0 && j >= self.len().saturating_sub(usize::from(self.adds)) && j < self.len()
    }

    /// Every declared key: reads first, then writes.
    pub fn keys(&self) -> impl Iterator<Item = &Key> + '_ {
        self.reads.iter().chain(self.writes.iter())
    }

    /// Declared key number `j`, counting reads first, then writes.
    #[inline]
    pub fn key(&self, j: usize) -> Option<&Key> {
        match self.reads.get(j) {
            Some(key) => Some(key),
            None => self.writes.get(j - self.reads.len()),
        }
    }

    /// The number of declared keys.
    pub fn len(&self) -> usize {
        self.reads.len() + self.writes.len()
    }

    /// Whether no key is declared.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that the set is bounded, names each key once, and has no
    /// more add keys than writes.
    pub fn validate(&self) -> Result<(), TxError> {
        if usize::from(self.adds) > self.writes.len() {
            return Err(TxError::InvalidInput {
                reason: format!(
                    "access set declares {} add keys among {} writes",
                    self.adds,
                    self.writes.len()
                ),
            });
        }
        if self.len() > MAX_ACCESS_KEYS {
            return Err(TxError::TooLarge {
                what: Limit::AccessKeys,
                size: self.len() as u64,
                max: MAX_ACCESS_KEYS as u64,
            });
        }
        let key_at = |i: usize| match self.reads.get(i) {
            Some(key) => key,
            None => &self.writes[i - self.reads.len()],
        };
        for i in 1..self.len() {
            let key = key_at(i);
            if (0..i).any(|j| key_at(j) == key) {
                return Err(TxError::InvalidInput {
                    reason: format!("access set declares {key} twice"),
                });
            }
        }
        Ok(())
    }
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Call {
    /// Creates `account` with a coin balance of `balance`. Creates value:
    /// meant for genesis.
    CreateAccount {
        /// The new account.
        account: AccountId,
        /// Its starting coin balance.
        balance: Value,
    },
    /// Moves `amount` coins from the sender to `to`; both accounts must exist.
    Transfer {
        /// The receiving account.
        to: AccountId,
        /// How many coins.
        amount: Value,
    },
    /// Registers `asset` with the sender as its only minter.
    CreateAsset {
        /// The new asset.
        asset: AssetId,
    },
    /// Mints `amount` of `asset` to `to`; only the asset's issuer may mint.
    Mint {
        /// The asset.
        asset: AssetId,
        /// The receiving account.
        to: AccountId,
        /// How much.
        amount: Value,
    },
    /// Moves `amount` of `asset` from the sender to `to`.
    TokenTransfer {
        /// The asset.
        asset: AssetId,
        /// The receiving account.
        to: AccountId,
        /// How much.
        amount: Value,
    },
    /// Creates a constant-product pool account trading `asset_a` for
    /// `asset_b` with a fee of `fee_bps` basis points.
    CreatePool {
        /// The pool's account; its balances are the reserves.
        pool: AccountId,
        /// First asset of the pair.
        asset_a: AssetId,
        /// Second asset of the pair.
        asset_b: AssetId,
        /// Swap fee in basis points (at most 10 000).
        fee_bps: Value,
    },
    /// Deposits `amount_a` and `amount_b` into `pool` and mints pool shares
    /// to the sender.
    AddLiquidity {
        /// The pool.
        pool: AccountId,
        /// Deposit of the pool's first asset.
        amount_a: Value,
        /// Deposit of the pool's second asset.
        amount_b: Value,
    },
    /// Swaps `amount_in` of `asset_in` for at least `min_out` of `asset_out`.
    Swap {
        /// The pool.
        pool: AccountId,
        /// The asset paid in.
        asset_in: AssetId,
        /// The asset received.
        asset_out: AssetId,
        /// How much is paid in.
        amount_in: Value,
        /// The slippage guard: the swap fails if it would pay out less.
        min_out: Value,
    },
    /// Calls a user contract registered with the executor.
    Custom {
        /// Which contract.
        contract: ContractId,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// Gives the sender the ed25519 public key `key`: from then on every
    /// transaction it sends must be signed with the key's secret (see
    /// [`crate::auth`]). Unsigned, it sets the first key of an account that
    /// has none; signed with the current key, it replaces it.
    SetPublicKey {
        /// The key.
        key: crate::auth::PublicKey,
    },
}

impl Call {
    /// The argument words of a user contract call; none for native calls.
    pub fn args(&self) -> &[Value] {
        match self {
            Call::Custom { args, .. } => args,
            _ => &[],
        }
    }

    /// Whether the call runs user code ([`Call::Custom`]) rather than one
    /// of the native contracts, whose cost is known and small.
    pub fn is_user_code(&self) -> bool {
        matches!(self, Call::Custom { .. })
    }
}

/// A transaction: who sends it, what it does, and what it may touch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Its id.
    pub id: TxId,
    /// The sending account, whose authority the call uses.
    pub sender: AccountId,
    /// What it does.
    pub call: Call,
    /// What it may touch.
    pub access: AccessSet,
    /// The sender's signature, required if the sender holds a public key
    /// (see [`crate::auth`]; [`Transaction::sign`] adds it).
    #[serde(default)]
    pub auth: Option<Box<crate::auth::Auth>>,
    /// The most gas its call may use ([`crate::contracts::gas`]): a call
    /// that needs more fails with [`TxError::OutOfGas`] and writes
    /// nothing. [`crate::contracts::gas::DEFAULT_LIMIT`] unless set with
    /// [`Transaction::with_gas_limit`].
    #[serde(default = "crate::contracts::gas::default_limit")]
    pub gas_limit: u64,
}

impl Transaction {
    /// A transaction with an explicitly declared access set (user contracts).
    pub fn new(id: TxId, sender: AccountId, call: Call, access: AccessSet) -> Transaction {
        Transaction {
            id,
            sender,
            call,
            access,
            auth: None,
            gas_limit: crate::contracts::gas::DEFAULT_LIMIT,
        }
    }

    /// Checks the limits a transaction is held to before it runs, each
    /// failing with [`TxError::TooLarge`] that names it: its access set
    /// ([`AccessSet::validate`], which also refuses a key declared twice),
    /// its argument words ([`MAX_ARGS`]) and its gas limit
    /// ([`crate::contracts::gas::MAX_LIMIT`]). A cluster checks them at
    /// admission, and every executor again before it runs the call.
    pub fn check_limits(&self) -> Result<(), TxError> {
        self.access.validate()?;
        let args = self.call.args().len();
        if args > MAX_ARGS {
            return Err(TxError::TooLarge {
                what: Limit::Args,
                size: args as u64,
                max: MAX_ARGS as u64,
            });
        }
        let max_gas = crate::contracts::gas::MAX_LIMIT;
        if self.gas_limit > max_gas {
            return Err(TxError::TooLarge {
                what: Limit::Gas,
                size: self.gas_limit,
                max: max_gas,
            });
        }
        Ok(())
    }

    /// The transaction with gas limit `limit` (sign after setting it: the
    /// signature covers the limit).
    pub fn with_gas_limit(mut self, limit: u64) -> Transaction {
        self.gas_limit = limit;
        self
    }

    /// Gives the sender `key` ([`Call::SetPublicKey`]).
    pub fn set_public_key(id: TxId, sender: AccountId, key: crate::auth::PublicKey) -> Transaction {
        let mut writes = vec![Key::sequence(sender)];
        writes.extend((0..4).map(|word| Key::public_key_word(sender, word)));
        Transaction::new(
            id,
            sender,
            Call::SetPublicKey { key },
            AccessSet::new([], writes),
        )
    }

    /// Creates `account` holding `balance` coins.
    pub fn create_account(id: TxId, account: AccountId, balance: Value) -> Transaction {
        let access = AccessSet::new([], [Key::balance(account, AssetId::COIN)]);
        Transaction::new(
            id,
            account,
            Call::CreateAccount { account, balance },
            access,
        )
    }

    /// Moves `amount` coins from `from` to `to`.
    pub fn transfer(id: TxId, from: AccountId, to: AccountId, amount: Value) -> Transaction {
        let access = AccessSet::new(
            [],
            [
                Key::balance(from, AssetId::COIN),
                Key::balance(to, AssetId::COIN),
            ],
        );
        Transaction::new(id, from, Call::Transfer { to, amount }, access)
    }

    /// Registers `asset` with `issuer` as its minter.
    pub fn create_asset(id: TxId, issuer: AccountId, asset: AssetId) -> Transaction {
        let access = AccessSet::new([], [crate::contracts::token::issuer_key(asset)]);
        Transaction::new(id, issuer, Call::CreateAsset { asset }, access)
    }

    /// Mints `amount` of `asset` to `to`, signed by `issuer`.
    pub fn mint(
        id: TxId,
        issuer: AccountId,
        asset: AssetId,
        to: AccountId,
        amount: Value,
    ) -> Transaction {
        let access = AccessSet::new(
            [crate::contracts::token::issuer_key(asset)],
            [Key::balance(to, asset)],
        );
        Transaction::new(id, issuer, Call::Mint { asset, to, amount }, access)
    }

    /// Moves `amount` of `asset` from `from` to `to`.
    pub fn token_transfer(
        id: TxId,
        from: AccountId,
        asset: AssetId,
        to: AccountId,
        amount: Value,
    ) -> Transaction {
        let access = AccessSet::new([], [Key::balance(from, asset), Key::balance(to, asset)]);
        Transaction::new(id, from, Call::TokenTransfer { asset, to, amount }, access)
    }

    /// Creates pool `pool` for the pair (`asset_a`, `asset_b`).
    pub fn create_pool(
        id: TxId,
        creator: AccountId,
        pool: AccountId,
        asset_a: AssetId,
        asset_b: AssetId,
        fee_bps: Value,
    ) -> Transaction {
        use crate::contracts::amm::fields;
        let access = AccessSet::new([], fields(pool));
        let call = Call::CreatePool {
            pool,
            asset_a,
            asset_b,
            fee_bps,
        };
        Transaction::new(id, creator, call, access)
    }

    /// Deposits liquidity into `pool`, whose pair is (`asset_a`, `asset_b`).
    #[allow(clippy::too_many_arguments)]
    pub fn add_liquidity(
        id: TxId,
        provider: AccountId,
        pool: AccountId,
        asset_a: AssetId,
        asset_b: AssetId,
        amount_a: Value,
        amount_b: Value,
    ) -> Transaction {
        use crate::contracts::amm::fields;
        let [a, b, fee, supply] = fields(pool);
        let access = AccessSet::new(
            [a, b, fee],
            [
                supply,
                Key::balance(pool, asset_a),
                Key::balance(pool, asset_b),
                Key::balance(provider, asset_a),
                Key::balance(provider, asset_b),
                Key::balance(provider, AssetId::lp_shares(pool)),
            ],
        );
        let call = Call::AddLiquidity {
            pool,
            amount_a,
            amount_b,
        };
        Transaction::new(id, provider, call, access)
    }

    /// Swaps `amount_in` of `asset_in` for at least `min_out` of `asset_out`.
    #[allow(clippy::too_many_arguments)]
    pub fn swap(
        id: TxId,
        trader: AccountId,
        pool: AccountId,
        asset_in: AssetId,
        asset_out: AssetId,
        amount_in: Value,
        min_out: Value,
    ) -> Transaction {
        use crate::contracts::amm::fields;
        let [a, b, fee, _] = fields(pool);
        let access = AccessSet::new(
            [a, b, fee],
            [
                Key::balance(pool, asset_in),
                Key::balance(pool, asset_out),
                Key::balance(trader, asset_in),
                Key::balance(trader, asset_out),
            ],
        );
        let call = Call::Swap {
            pool,
            asset_in,
            asset_out,
            amount_in,
            min_out,
        };
        Transaction::new(id, trader, call, access)
    }

    /// Calls user contract `contract`.
    pub fn custom(
        id: TxId,
        sender: AccountId,
        contract: ContractId,
        args: Vec<Value>,
        access: AccessSet,
    ) -> Transaction {
        Transaction::new(id, sender, Call::Custom { contract, args }, access)
    }
}

/// Why a transaction did not commit. Every reason names what it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// A debit larger than the balance.
    #[error("insufficient funds: {key} holds {available}, {needed} needed")]
    InsufficientFunds {
        /// The balance debited.
        key: Key,
        /// What the debit needed.
        needed: Value,
        /// What the balance held.
        available: Value,
    },
    /// An account that does not exist.
    #[error("unknown account: {account}")]
    UnknownAccount {
        /// The account.
        account: AccountId,
    },
    /// Something a call needs does not exist (an asset, a pool).
    #[error("not found: {key}")]
    NotFound {
        /// The missing key.
        key: Key,
    },
    /// Something a call creates already exists.
    #[error("already exists: {key}")]
    AlreadyExists {
        /// The existing key.
        key: Key,
    },
    /// Checked arithmetic overflowed while updating `key`.
    #[error("arithmetic overflow on {key}")]
    Overflow {
        /// The key being updated.
        key: Key,
    },
    /// The call touched a key it did not declare (or wrote a read-only key).
    #[error("access outside the declared set: {} {key}", if *write { "write to" } else { "read of" })]
    AccessViolation {
        /// The key.
        key: Key,
        /// Whether the access was a write.
        write: bool,
    },
    /// The sender may not do this.
    #[error("unauthorised: {sender} may not {action}")]
    Unauthorized {
        /// The sender.
        sender: AccountId,
        /// What it tried.
        action: String,
    },
    /// A swap would pay out less than its guard allows.
    #[error("slippage: swap would pay {amount_out}, guard requires at least {min_out}")]
    SlippageExceeded {
        /// The guard.
        min_out: Value,
        /// What the swap would have paid.
        amount_out: Value,
    },
    /// The called user contract is not registered.
    #[error("unknown contract {}", contract.0)]
    UnknownContract {
        /// The contract id.
        contract: ContractId,
    },
    /// Contract code panicked; its effects were discarded.
    #[error("contract panicked: {message}")]
    ContractPanicked {
        /// The panic message.
        message: String,
    },
    /// Malformed input.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// A cross-shard transaction was aborted for a reason not its own
    /// (its call did not fail): see [`AbortReason::is_retryable`].
    #[error("cross-shard transaction aborted: {reason}")]
    CrossShardAborted {
        /// Why.
        reason: AbortReason,
    },
    /// A transaction with this id is in flight already: the first
    /// submission will be answered; this copy was not run.
    #[error("{tx} is already in flight")]
    InFlight {
        /// The id.
        tx: TxId,
    },
    /// The sender holds a public key and the transaction is not signed.
    #[error("{account} holds a public key: its transactions must be signed")]
    SignatureMissing {
        /// The sender.
        account: AccountId,
    },
    /// The signature does not verify for the transaction's content and
    /// the key it names (or is malformed); nothing ran.
    #[error("bad signature on {tx}: {reason}")]
    BadSignature {
        /// The transaction.
        tx: TxId,
        /// What is wrong.
        reason: String,
    },
    /// The transaction is signed with another key than the sender's (or
    /// the sender holds no key).
    #[error("{account} is not signed for by this key")]
    WrongKey {
        /// The sender.
        account: AccountId,
    },
    /// A signed transaction's sequence number is not the sender's next:
    /// a replay (below it) or out of order (above it).
    #[error("sequence {got} of {account}, expected {expected}")]
    BadSequence {
        /// The sender.
        account: AccountId,
        /// The next sequence number the sender may use.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The call needed more gas than the transaction's limit allows
    /// ([`crate::contracts::gas`]); nothing it wrote applies.
    #[error("out of gas: the call needed more than its limit of {limit}")]
    OutOfGas {
        /// The transaction's gas limit.
        limit: u64,
    },
    /// An input is larger than the limit named allows; nothing ran.
    #[error("{what} is {size}, at most {max} allowed")]
    TooLarge {
        /// What is too large.
        what: Limit,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The shard's storage failed; it refuses work until it recovers from
    /// its log (a restart), and this transaction did not run.
    #[error("{shard} refuses work: its storage failed: {error}")]
    ShardFailed {
        /// The shard.
        shard: ShardId,
        /// The storage error.
        error: String,
    },
}

/// The size limits an input is checked against ([`TxError::TooLarge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Limit {
    /// Keys in an access set: [`MAX_ACCESS_KEYS`].
    #[error("the access set's number of keys")]
    AccessKeys,
    /// Words of a user contract call's arguments: [`MAX_ARGS`].
    #[error("the number of argument words")]
    Args,
    /// Words a call returns: [`MAX_OUTPUT_WORDS`].
    #[error("the number of output words")]
    OutputWords,
    /// A transaction's gas limit:
    /// [`crate::contracts::gas::MAX_LIMIT`].
    #[error("the gas limit")]
    Gas,
    /// Transactions of one sender in flight at once (a cluster's
    /// `max_in_flight_per_sender`).
    #[error("the sender's transactions in flight")]
    SenderInFlight,
}

impl TxError {
    /// Whether submitting the same transaction again (same id) may
    /// succeed: true for aborts that [`AbortReason::is_retryable`] and for
    /// a copy of a transaction in flight (once the first is answered, a
    /// retry gets its receipt or runs); false for the call's own failures
    /// and for a failed shard, which refuses work until it restarts.
    pub fn is_retryable(&self) -> bool {
        match self {
            TxError::CrossShardAborted { reason } => reason.is_retryable(),
            TxError::InFlight { .. } => true,
            _ => false,
        }
    }
}

/// Why a cross-shard transaction was aborted when its own call did not
/// fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum AbortReason {
    /// A shard refused it, its queue of waiting prepares full, round after
    /// round.
    #[error("{key} on {shard} stayed locked by {holder} through {rounds} rounds")]
    LockContention {
        /// The contended key.
        key: Key,
        /// Its shard.
        shard: ShardId,
        /// The transaction (or group) that held it last.
        holder: TxId,
        /// The rounds tried.
        rounds: u32,
    },
    /// A shard answered neither the prepare nor its re-sends in time (it
    /// is down, partitioned or its messages were lost).
    #[error("{shard} did not vote within {timeout_ms} ms, asked {asked} times")]
    VoteTimeout {
        /// The shard.
        shard: ShardId,
        /// The timeout per ask.
        timeout_ms: u64,
        /// How often it was asked.
        asked: u32,
    },
    /// The coordinator holds its maximum of transactions.
    #[error("coordinator has {in_flight} transactions in flight, at most {max}")]
    CoordinatorOverloaded {
        /// Transactions in flight.
        in_flight: usize,
        /// The maximum.
        max: usize,
    },
    /// The coordinator's decision log failed: no commit can be made
    /// durable until it restarts.
    #[error("coordinator storage failed: {error}")]
    CoordinatorStorage {
        /// The storage error.
        error: String,
    },
}

impl AbortReason {
    /// Whether the same transaction may commit if submitted again: lock
    /// contention, a timeout and overload pass; a failed decision log does
    /// not until the coordinator restarts.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, AbortReason::CoordinatorStorage { .. })
    }
}

/// The most words a call may return.
pub const MAX_OUTPUT_WORDS: usize = 8;

/// What a committed call returned: one word for native calls (a swap's
/// amount out, minted pool shares, 0 for the rest), up to
/// [`MAX_OUTPUT_WORDS`] for a user contract. One word stays inline.
///
/// ```
/// use parashard_protocols::model::Output;
/// use parashard_protocols::AccountId;
///
/// let output = Output::of((AccountId(7), 42u64));
/// assert_eq!(output.words(), &[7, 42]);
/// let (winner, amount): (AccountId, u64) = output.decode().unwrap();
/// assert_eq!((winner, amount), (AccountId(7), 42));
/// assert_eq!(Output::from(5).value(), 5);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Output(SmallVec<[Value; 1]>);

impl Output {
    /// The output's words.
    pub fn words(&self) -> &[Value] {
        &self.0
    }

    /// The first word (0 if there is none): the whole output of a native
    /// call.
    pub fn value(&self) -> Value {
        self.0.first().copied().unwrap_or(0)
    }

    /// An output of several words.
    pub fn from_words(words: impl IntoIterator<Item = Value>) -> Output {
        Output(words.into_iter().collect())
    }

    /// The number of words.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no word.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Value> for Output {
    fn from(value: Value) -> Output {
        Output(smallvec::smallvec![value])
    }
}

impl PartialEq<Value> for Output {
    fn eq(&self, other: &Value) -> bool {
        self.0.as_slice() == [*other]
    }
}

impl fmt::Display for Output {
    /// The words, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, word) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{word}")?;
        }
        Ok(())
    }
}

/// The outcome of one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Status {
    /// Applied. `output` is the call's return value (a swap's amount out,
    /// minted pool shares, a user contract's words; 0 otherwise).
    Committed {
        /// The return value.
        output: Output,
    },
    /// Not applied, for the reason given.
    Failed(TxError),
    /// The client stopped waiting before the outcome came back: the
    /// transaction may or may not have committed. Submit it again with the
    /// same id: a commit is remembered and answered with its receipt,
    /// without running twice; otherwise it runs now.
    Unknown(Unanswered),
}

/// Why a transaction's outcome is unknown to its client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Unanswered {
    /// No answer within the call's timeout.
    #[error("no answer within {after_ms} ms")]
    TimedOut {
        /// The timeout, in milliseconds.
        after_ms: u64,
    },
    /// The shard or coordinator it went to stopped before answering (it
    /// crashed and is restarting, or the cluster shut down).
    #[error("{who} stopped before answering")]
    Unavailable {
        /// `shard N` or `coordinator`.
        who: String,
    },
}

impl fmt::Display for Status {
    /// `committed (output)`, `failed: reason` or `unknown: reason`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Committed { output } => write!(f, "committed ({output})"),
            Status::Failed(error) => write!(f, "failed: {error}"),
            Status::Unknown(why) => write!(f, "unknown: {why}; submit again with the same id"),
        }
    }
}

/// What a client gets back for a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction.
    pub tx_id: TxId,
    /// What happened.
    pub status: Status,
}

impl Receipt {
    /// Whether the transaction was applied.
    pub fn is_committed(&self) -> bool {
        matches!(self.status, Status::Committed { .. })
    }

    /// The failure reason, if any.
    pub fn error(&self) -> Option<&TxError> {
        match &self.status {
            Status::Failed(e) => Some(e),
            Status::Committed { .. } | Status::Unknown(_) => None,
        }
    }

    /// Whether the outcome is unknown to the client ([`Status::Unknown`]):
    /// submit the transaction again, with the same id, to learn it.
    pub fn is_unknown(&self) -> bool {
        matches!(self.status, Status::Unknown(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Add keys go last among the writes; an add key also named as a
    /// read or a write becomes a write, named once; a set claiming more
    /// add keys than writes is refused by `validate`.
    #[test]
    fn add_keys_are_the_tail_of_the_writes() {
        let key = |n| Key::field(AccountId(n), 0);
        let set =
            AccessSet::with_adds([key(1), key(2)], [key(3)], [key(4), key(2), key(3), key(4)]);
        assert_eq!(set.reads.as_slice(), [key(1)]);
        assert_eq!(set.writes.as_slice(), [key(3), key(2), key(4)]);
        assert_eq!(set.add_keys(), [key(4)]);
        assert_eq!(set.validate(), Ok(()));
        assert!((0..set.len())
            .map(|j| set.is_add(j))
            .eq([false, false, false, true]));
        let mut forged = AccessSet::new([], [key(1)]);
        forged.adds = 2;
        assert!(matches!(
            forged.validate(),
            Err(TxError::InvalidInput { .. })
        ));
        assert!(forged.add_keys().len() <= forged.writes.len());
        assert!(forged.is_add(0), "no arithmetic overflow on a forged count");
    }

    /// A status prints as a reader would say it: the output of a commit,
    /// the reason of a failure.
    #[test]
    fn status_displays_output_or_reason() {
        assert_eq!(
            Status::Committed { output: 5.into() }.to_string(),
            "committed (5)"
        );
        let pair = Status::Committed {
            output: Output::from_words([5, 6]),
        };
        assert_eq!(pair.to_string(), "committed (5, 6)");
        let failed = Status::Failed(TxError::UnknownAccount {
            account: AccountId(9),
        });
        let text = failed.to_string();
        assert!(
            text.starts_with("failed: ") && text.contains("account 9"),
            "{text}"
        );
    }
}
