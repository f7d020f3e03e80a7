//! The actix runtime of parashard: shard actors, the 2PC coordinator and
//! the supervisor. Built on the deterministic core in `parashard-protocols`.
#![warn(missing_docs)]

pub use parashard_protocols as protocols;
