//! Gas: what a call may spend. Every transaction carries a limit
//! ([`Transaction::gas_limit`](crate::model::Transaction::gas_limit));
//! its call is charged [`BASE`] to start, [`READ`] for each read and
//! [`WRITE`] for each write, add or subtract through the
//! [`Context`](super::Context), and whatever a contract declares with
//! [`Context::charge`](super::Context::charge) for its own work. Past the
//! limit the call fails with [`TxError::OutOfGas`](crate::model::TxError::OutOfGas)
//! and writes nothing, even if the contract swallowed the error.
//!
//! Gas bounds contract code that uses its `Context`. Native Rust contracts
//! are trusted code: a loop that never touches the `Context` cannot be
//! stopped, and neither can one that allocates without bound. Untrusted
//! code needs a sandboxed runtime (a WebAssembly engine with fuel
//! metering, say), which charges every instruction and caps memory; the
//! charges here would be its host calls.

/// Charged once, when the call starts.
pub const BASE: u64 = 10;

/// Charged per read.
pub const READ: u64 = 1;

/// Charged per write, add or subtract.
pub const WRITE: u64 = 2;

/// The most a coin transfer costs: [`BASE`], two reads and two writes.
pub const TRANSFER: u64 = BASE + 2 * READ + 2 * WRITE;

/// A transaction's gas limit unless it sets its own: a million units,
/// some milliseconds of accesses, far above what the native calls need.
pub const DEFAULT_LIMIT: u64 = 1_000_000;

/// The highest gas limit a transaction may set: a hundred times
/// [`DEFAULT_LIMIT`]. It bounds how long one call can hold its shard (or a
/// coordinator worker) and its locks; above it the transaction is refused
/// before it runs, with [`TxError::TooLarge`](crate::model::TxError::TooLarge).
pub const MAX_LIMIT: u64 = 100 * DEFAULT_LIMIT;

/// [`DEFAULT_LIMIT`], for serde's defaults.
pub(crate) fn default_limit() -> u64 {
    DEFAULT_LIMIT
}
