//! The actix runtime of parashard: shard actors, the 2PC coordinator, the
//! supervisor and storage. The actors are thin shells around the
//! deterministic state machines of `parashard-protocols`.
#![warn(missing_docs)]

pub mod batch;
pub mod coordinator;
pub mod faults;
pub mod runtime;
pub mod shard;
pub mod storage;
pub mod workers;

pub use parashard_protocols as protocols;
