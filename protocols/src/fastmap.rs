//! Hash maps for the per-transaction bookkeeping of 2PC and batching.
//!
//! Transaction ids and keys are hashed on every message; the standard
//! library's SipHash costs more than the rest of such a lookup. foldhash is
//! several times faster and, seeded per process, still keeps
//! client-chosen ids from being aimed at one bucket.

/// A `HashMap` with foldhash's per-process random seed.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with foldhash's per-process random seed.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
