//! Contracts: the [`Contract`] trait user code implements, the execution
//! [`Context`] that confines a call to its declared access set, and the
//! native contracts (coin, multi-asset token, constant-product AMM).

pub mod amm;
pub mod args;
pub mod coin;
pub mod gas;
pub mod token;

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::model::{
    AccessSet, AccountId, Call, ContractId, Key, Limit, Output, Transaction, TxError, TxId, Value,
    MAX_OUTPUT_WORDS,
};
use crate::state::Slot;

/// User contract code. `execute` runs against a [`Context`] that allows
/// reads and writes only inside the transaction's declared access set; its
/// writes apply only if it returns `Ok`. A panic is caught and becomes
/// [`TxError::ContractPanicked`]; nothing it wrote applies.
///
/// Contracts must be deterministic: the parallel executor relies on a call
/// giving the same result for the same state and arguments.
pub trait Contract: Send + Sync {
    /// Executes one call and returns its output: one word
    /// (`Ok(value.into())`) or several (`Ok(Output::of((a, b)))`), at
    /// most [`crate::model::MAX_OUTPUT_WORDS`].
    fn execute(&self, ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, TxError>;

    /// The keys a call from `sender` with `args` may touch, worked out
    /// from the arguments by the contract itself, so that a call and its
    /// access set cannot drift apart: [`Registry::call`] (and
    /// `Cluster::call` in the facade) build transactions with it. The
    /// default declares nothing: callers then give the access set with the
    /// call ([`Transaction::custom`]).
    fn access(&self, sender: AccountId, args: &[Value]) -> Result<AccessSet, TxError> {
        let _ = (sender, args);
        Err(TxError::InvalidInput {
            reason: "this contract does not declare its access set: give it with the call".into(),
        })
    }
}

/// Error registering a contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The id is taken.
    #[error("contract id {} is already registered", .0 .0)]
    DuplicateContract(ContractId),
}

/// The user contracts an executor can call, by id, each with the version
/// its registration gave.
#[derive(Clone, Default)]
pub struct Registry {
    contracts: HashMap<ContractId, Registered>,
}

#[derive(Clone)]
struct Registered {
    version: String,
    code: Arc<dyn Contract>,
}

impl Registry {
    /// An empty registry: native contracts only.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `contract` under `id`. `version` names the code (a
    /// release number or a hash of the source, as the user prefers): a
    /// data directory records it, and refuses to start with other code
    /// under the same id (see `ClusterBuilder::data_dir` in the facade).
    pub fn register(
        &mut self,
        id: ContractId,
        version: impl Into<String>,
        contract: Arc<dyn Contract>,
    ) -> Result<(), RegistryError> {
        if self.contracts.contains_key(&id) {
            return Err(RegistryError::DuplicateContract(id));
        }
        let version = version.into();
        self.contracts.insert(
            id,
            Registered {
                version,
                code: contract,
            },
        );
        Ok(())
    }

    /// Every registered contract's id and version, by id.
    pub fn versions(&self) -> std::collections::BTreeMap<ContractId, String> {
        self.contracts
            .iter()
            .map(|(id, registered)| (*id, registered.version.clone()))
            .collect()
    }

    /// A call of contract `id` from `sender` with `args`, with the access
    /// set the contract declares for them ([`Contract::access`]) and a
    /// fresh id.
    pub fn call(
        &self,
        sender: AccountId,
        id: ContractId,
        args: Vec<Value>,
    ) -> Result<Transaction, TxError> {
        let contract = self
            .get(id)
            .ok_or(TxError::UnknownContract { contract: id })?;
        let access = contract.access(sender, &args)?;
        access.validate()?;
        Ok(Transaction::custom(
            TxId::random(),
            sender,
            id,
            args,
            access,
        ))
    }

    fn get(&self, id: ContractId) -> Option<&Arc<dyn Contract>> {
        self.contracts.get(&id).map(|registered| &registered.code)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.contracts.iter().map(|(id, r)| (id.0, &r.version)))
            .finish()
    }
}

/// Writes a call made, by position in the access set, applied only if the
/// call succeeds.
pub(crate) type Writes = SmallVec<[(u8, Value); 4]>;

/// A call's net additions to its add keys, by position: what it added
/// minus what it subtracted, resolved against the key's value when the
/// call ends.
type Deltas = SmallVec<[(u8, i128); 1]>;

/// What a call sees: its transaction and the state of its declared keys.
/// Every access is charged gas ([`gas`]) against the transaction's limit.
pub struct Context<'a> {
    tx: &'a Transaction,
    /// One entry per declared key (reads, then writes): its slot, or `None`
    /// if the key does not exist yet.
    slots: &'a [Option<&'a Slot>],
    writes: Writes,
    deltas: Deltas,
    /// Gas the call may still use; `None` once it asked for more than was
    /// left, and then every further access fails.
    gas_left: Cell<Option<u64>>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(tx: &'a Transaction, slots: &'a [Option<&'a Slot>]) -> Context<'a> {
        debug_assert_eq!(slots.len(), tx.access.len());
        Context {
            tx,
            slots,
            writes: Writes::new(),
            deltas: Deltas::new(),
            gas_left: Cell::new(Some(tx.gas_limit)),
        }
    }

    /// Charges `units` of gas for work the contract does besides its
    /// accesses (see [`gas`]). Past the transaction's limit it fails with
    /// [`TxError::OutOfGas`], and so does every later access: the call
    /// fails with that error whatever it returns, and writes nothing.
    #[inline]
    pub fn charge(&self, units: u64) -> Result<(), TxError> {
        let left = self.gas_left.get().and_then(|left| left.checked_sub(units));
        self.gas_left.set(left);
        match left {
            Some(_) => Ok(()),
            None => Err(TxError::OutOfGas {
                limit: self.tx.gas_limit,
            }),
        }
    }

    /// Gas left before the call runs out.
    pub fn gas_left(&self) -> u64 {
        self.gas_left.get().unwrap_or(0)
    }

    /// The transaction's id.
    pub fn tx_id(&self) -> TxId {
        self.tx.id
    }

    /// The account that sent the transaction.
    pub fn sender(&self) -> AccountId {
        self.tx.sender
    }

    #[inline]
    fn position(&self, key: &Key) -> Option<usize> {
        self.tx.access.keys().position(|k| k == key)
    }

    /// The value of `key`, or `None` if it does not exist. Sees this call's
    /// own earlier writes. An add key cannot be read
    /// ([`TxError::AccessViolation`]).
    #[inline]
    pub fn read(&self, key: Key) -> Result<Option<Value>, TxError> {
        self.charge(gas::READ)?;
        let position = self
            .position(&key)
            .filter(|p| !self.tx.access.is_add(*p))
            .ok_or(TxError::AccessViolation { key, write: false })?;
        if let Some((_, value)) = self
            .writes
            .iter()
            .find(|(p, _)| usize::from(*p) == position)
        {
            return Ok(Some(*value));
        }
        Ok(self.slots[position].and_then(Slot::load))
    }

    /// Sets `key` to `value`, creating it if needed. An add key cannot be
    /// set, only added to ([`Context::add`]), and an account's
    /// authentication keys ([`Key::is_auth`]) not at all.
    #[inline]
    pub fn write(&mut self, key: Key, value: Value) -> Result<(), TxError> {
        if key.is_auth() {
            return Err(TxError::AccessViolation { key, write: true });
        }
        self.write_any(key, value)
    }

    /// [`Context::write`] of any declared write key, authentication keys
    /// included: for the native authentication calls alone.
    #[inline]
    fn write_any(&mut self, key: Key, value: Value) -> Result<(), TxError> {
        self.charge(gas::WRITE)?;
        let position = self
            .position(&key)
            .filter(|p| *p >= self.tx.access.reads.len() && !self.tx.access.is_add(*p))
            .ok_or(TxError::AccessViolation { key, write: true })?;
        // The access set holds at most MAX_ACCESS_KEYS (< 256) keys.
        let position = position as u8;
        match self.writes.iter_mut().find(|(p, _)| *p == position) {
            Some(entry) => entry.1 = value,
            None => self.writes.push((position, value)),
        }
        Ok(())
    }

    /// A balance: a missing key reads as zero.
    #[inline]
    pub fn balance(&self, key: Key) -> Result<Value, TxError> {
        Ok(self.read(key)?.unwrap_or(0))
    }

    /// Subtracts `amount` from the balance at `key`.
    #[inline]
    pub fn debit(&mut self, key: Key, amount: Value) -> Result<(), TxError> {
        let available = self.balance(key)?;
        let left = available
            .checked_sub(amount)
            .ok_or(TxError::InsufficientFunds {
                key,
                needed: amount,
                available,
            })?;
        self.write(key, left)
    }

    /// Adds `amount` to the balance at `key`.
    #[inline]
    pub fn credit(&mut self, key: Key, amount: Value) -> Result<(), TxError> {
        let sum = self
            .balance(key)?
            .checked_add(amount)
            .ok_or(TxError::Overflow { key })?;
        self.write(key, sum)
    }

    /// Adds `amount` to `key`. On an add key (see [`AccessSet`]) the call
    /// does not read the key: its additions and subtractions are summed,
    /// and when the call ends the key moves by the net amount, which must
    /// keep it within `0..=Value::MAX` or the call fails
    /// ([`TxError::Overflow`], [`TxError::InsufficientFunds`]) and writes
    /// nothing. A missing key counts as 0. On a write key it is
    /// [`Context::credit`].
    #[inline]
    pub fn add(&mut self, key: Key, amount: Value) -> Result<(), TxError> {
        match self.add_position(key)? {
            Some(position) => self.add_delta(position, i128::from(amount)),
            None => self.credit(key, amount)?,
        }
        Ok(())
    }

    /// Subtracts `amount` from `key`: the opposite of [`Context::add`]; on
    /// a write key it is [`Context::debit`].
    #[inline]
    pub fn subtract(&mut self, key: Key, amount: Value) -> Result<(), TxError> {
        match self.add_position(key)? {
            Some(position) => self.add_delta(position, -i128::from(amount)),
            None => self.debit(key, amount)?,
        }
        Ok(())
    }

    /// The position of `key` if it is an add key, `None` if it is a write
    /// key; an error if the call may not change it.
    fn add_position(&self, key: Key) -> Result<Option<u8>, TxError> {
        self.charge(gas::WRITE)?;
        if key.is_auth() {
            return Err(TxError::AccessViolation { key, write: true });
        }
        let position = self
            .position(&key)
            .filter(|p| *p >= self.tx.access.reads.len())
            .ok_or(TxError::AccessViolation { key, write: true })?;
        // The access set holds at most MAX_ACCESS_KEYS (< 256) keys.
        Ok(self.tx.access.is_add(position).then_some(position as u8))
    }

    /// Adds `delta` to the net change of the add key at `position`. A net
    /// change that saturates i128 is far out of bounds either way, so it
    /// fails as it should.
    fn add_delta(&mut self, position: u8, delta: i128) {
        match self.deltas.iter_mut().find(|(p, _)| *p == position) {
            Some(entry) => entry.1 = entry.1.saturating_add(delta),
            None => self.deltas.push((position, delta)),
        }
    }

    /// Fails with [`TxError::UnknownAccount`] unless `account` exists (holds
    /// a coin balance).
    pub fn require_account(&self, account: AccountId) -> Result<(), TxError> {
        let key = Key::balance(account, crate::model::AssetId::COIN);
        match self.read(key)? {
            Some(_) => Ok(()),
            None => Err(TxError::UnknownAccount { account }),
        }
    }

    /// Checks a signed transaction's key and sequence number against the
    /// sender's state and counts it (see [`crate::auth`]).
    fn authenticate(&mut self, auth: &crate::auth::Auth) -> Result<(), TxError> {
        let sender = self.tx.sender;
        let sequence = self.read(Key::sequence(sender))?.unwrap_or(0);
        let mut words = [0; 4];
        for (word, value) in words.iter_mut().enumerate() {
            *value = self
                .read(Key::public_key_word(sender, word as u64))?
                .unwrap_or(0);
        }
        let next = crate::auth::check(sender, auth, sequence, words)?;
        self.write_any(Key::sequence(sender), next)
    }

    /// [`Call::SetPublicKey`]: stores `key` as the sender's, keeping its
    /// count of signed transactions. Unsigned, only if the sender holds no
    /// key yet; signed, [`Context::authenticate`] has checked the current
    /// key.
    fn set_public_key(&mut self, key: &crate::auth::PublicKey) -> Result<Output, TxError> {
        if ed25519_dalek::VerifyingKey::from_bytes(&key.0).is_err() {
            return Err(TxError::InvalidInput {
                reason: "the public key is not a valid ed25519 point".into(),
            });
        }
        let sender = self.tx.sender;
        let sequence = self.read(Key::sequence(sender))?.unwrap_or(0);
        if sequence & crate::auth::HAS_KEY != 0 && self.tx.auth.is_none() {
            return Err(TxError::SignatureMissing { account: sender });
        }
        self.write_any(Key::sequence(sender), sequence | crate::auth::HAS_KEY)?;
        for (word, value) in key.words().into_iter().enumerate() {
            self.write_any(Key::public_key_word(sender, word as u64), value)?;
        }
        Ok(0.into())
    }

    /// The call's writes and its net changes to its add keys, not yet
    /// resolved.
    fn into_pending(self) -> Pending {
        Pending {
            writes: self.writes,
            deltas: self.deltas,
        }
    }
}

/// What a call that returned `Ok` leaves: its writes, and its net change
/// to each add key, which [`Pending::resolve`] judges against the key's
/// value at the call's place in the order. The parallel executor runs
/// calls that add to a key in parallel and resolves them one after
/// another: a call cannot read its add keys, so only the resolving waits
/// for the calls before it.
pub(crate) struct Pending {
    writes: Writes,
    deltas: Deltas,
}

impl Pending {
    /// The writes, with each add key's net delta resolved against the
    /// key's value in `slots` now: the executors call this in the
    /// transaction's place in the order, so the bound is exact. Above
    /// `u64::MAX` fails with [`TxError::Overflow`], below zero with
    /// [`TxError::InsufficientFunds`]; either way the call writes nothing.
    pub(crate) fn resolve(
        self,
        tx: &Transaction,
        slots: &[Option<&Slot>],
    ) -> Result<Writes, TxError> {
        self.resolve_against(tx, |position| {
            slots[usize::from(position)]
                .and_then(Slot::load)
                .unwrap_or(0)
        })
    }

    /// [`Pending::resolve`] against the values `value_of` gives for the
    /// add keys at their positions (0 for a missing key).
    pub(crate) fn resolve_against(
        self,
        tx: &Transaction,
        mut value_of: impl FnMut(u8) -> Value,
    ) -> Result<Writes, TxError> {
        let mut writes = self.writes;
        for (position, delta) in self.deltas {
            let key = *tx.access.key(usize::from(position)).expect("declared");
            let current = value_of(position);
            let sum = i128::from(current) + delta;
            if sum < 0 {
                return Err(TxError::InsufficientFunds {
                    key,
                    needed: u64::try_from(-delta).unwrap_or(Value::MAX),
                    available: current,
                });
            }
            let value = Value::try_from(sum).map_err(|_| TxError::Overflow { key })?;
            writes.push((position, value));
        }
        Ok(writes)
    }
}

/// Runs `tx` against its resolved slots and returns its output and writes.
/// Contract panics are caught here, so no panic leaves an executor worker.
pub(crate) fn run(
    tx: &Transaction,
    slots: &[Option<&Slot>],
    registry: &Registry,
) -> Result<(Output, Writes), TxError> {
    let (output, pending) = run_unresolved(tx, slots, registry)?;
    Ok((output, pending.resolve(tx, slots)?))
}

/// Runs `tx` against its resolved slots up to its add keys: [`run`]
/// without the final [`Pending::resolve`], which reads the add keys'
/// slots. Contract panics are caught here, so no panic leaves an executor
/// worker.
pub(crate) fn run_unresolved(
    tx: &Transaction,
    slots: &[Option<&Slot>],
    registry: &Registry,
) -> Result<(Output, Pending), TxError> {
    if let Some(result) = coin::transfer_fast(tx, slots) {
        return result.map(|[(_, from_left), (_, to_sum)]| {
            let writes = [(0, from_left), (1, to_sum)].into_iter().collect();
            let deltas = Deltas::new();
            (0.into(), Pending { writes, deltas })
        });
    }
    tx.check_limits()?;
    let mut ctx = Context::new(tx, slots);
    ctx.charge(gas::BASE)?;
    if let Some(auth) = &tx.auth {
        ctx.authenticate(auth)?;
    }
    let output = match &tx.call {
        Call::SetPublicKey { key } => ctx.set_public_key(key),
        Call::CreateAccount { account, balance } => {
            coin::create_account(&mut ctx, *account, *balance).map(Output::from)
        }
        Call::Transfer { to, amount } => coin::transfer(&mut ctx, *to, *amount).map(Output::from),
        Call::CreateAsset { asset } => token::create_asset(&mut ctx, *asset).map(Output::from),
        Call::Mint { asset, to, amount } => {
            token::mint(&mut ctx, *asset, *to, *amount).map(Output::from)
        }
        Call::TokenTransfer { asset, to, amount } => {
            token::transfer(&mut ctx, *asset, *to, *amount).map(Output::from)
        }
        Call::CreatePool {
            pool,
            asset_a,
            asset_b,
            fee_bps,
        } => amm::create_pool(&mut ctx, *pool, *asset_a, *asset_b, *fee_bps).map(Output::from),
        Call::AddLiquidity {
            pool,
            amount_a,
            amount_b,
        } => amm::add_liquidity(&mut ctx, *pool, *amount_a, *amount_b).map(Output::from),
        Call::Swap {
            pool,
            asset_in,
            asset_out,
            amount_in,
            min_out,
        } => amm::swap(&mut ctx, *pool, *asset_in, *asset_out, *amount_in, *min_out)
            .map(Output::from),
        Call::Custom { contract, args } => {
            let code = registry.get(*contract).ok_or(TxError::UnknownContract {
                contract: *contract,
            })?;
            catch_unwind(AssertUnwindSafe(|| code.execute(&mut ctx, args))).unwrap_or_else(
                |payload| {
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".to_string());
                    Err(TxError::ContractPanicked { message })
                },
            )
        }
    };
    // A call that ran out fails so whatever it made of the error.
    if ctx.gas_left.get().is_none() {
        return Err(TxError::OutOfGas {
            limit: tx.gas_limit,
        });
    }
    let output = output?;
    if output.len() > MAX_OUTPUT_WORDS {
        return Err(TxError::TooLarge {
            what: Limit::OutputWords,
            size: output.len() as u64,
            max: MAX_OUTPUT_WORDS as u64,
        });
    }
    Ok((output, ctx.into_pending()))
}
