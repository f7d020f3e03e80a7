//! Storage: where shards and the coordinator log what they must not lose.
//!
//! One trait, [`Storage`], and two implementations: [`MemoryStorage`]
//! (survives an actor's crash inside the process; the default) and
//! [`DiskStorage`] (an append-only file log with checksums, group commit
//! and snapshots; see the [`disk`] module for the format).
//!
//! A log is a snapshot plus the records appended after it. Recovery is
//! [`Storage::load`]: the owner restores the snapshot, then replays the
//! records in order.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod disk;

pub use disk::DiskStorage;
pub use parashard_protocols::records::{
    CoordinatorRecord, CoordinatorSnapshot, ShardRecord, ShardSnapshot,
};

/// A type of log record, and the snapshot that replaces a prefix of them.
pub trait Record:
    Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static
{
    /// What a snapshot of the log's owner holds.
    type Snapshot: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static;

    /// Roughly how many bytes the record holds in memory: what a
    /// [`MemoryStorage`] counts towards [`SnapshotPolicy::log_bytes`].
    fn footprint(&self) -> u64;

    /// Roughly how many bytes `snapshot` holds in memory.
    fn snapshot_footprint(snapshot: &Self::Snapshot) -> u64;
}

impl Record for ShardRecord {
    type Snapshot = ShardSnapshot;

    fn footprint(&self) -> u64 {
        ShardRecord::footprint(self)
    }

    fn snapshot_footprint(snapshot: &ShardSnapshot) -> u64 {
        snapshot.footprint()
    }
}

impl Record for CoordinatorRecord {
    type Snapshot = CoordinatorSnapshot;

    fn footprint(&self) -> u64 {
        CoordinatorRecord::footprint(self)
    }

    fn snapshot_footprint(snapshot: &CoordinatorSnapshot) -> u64 {
        snapshot.footprint()
    }
}

/// What [`Storage::load`] finds: the last snapshot, if any, and every
/// record appended after it, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered<R: Record> {
    /// The last snapshot.
    pub snapshot: Option<R::Snapshot>,
    /// The records after it.
    pub records: Vec<R>,
}

/// When an owner should write a snapshot: as soon as the log since the last
/// one holds `log_bytes` bytes or `log_records` records, whichever comes
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Log bytes (frames included) since the last snapshot.
    pub log_bytes: u64,
    /// Records since the last snapshot.
    pub log_records: u64,
}

impl SnapshotPolicy {
    /// Never snapshot: the log grows forever.
    pub const NEVER: SnapshotPolicy = SnapshotPolicy {
        log_bytes: u64::MAX,
        log_records: u64::MAX,
    };

    /// What a cluster's logs kept in memory use unless told otherwise:
    /// 16 MiB of records (as [`Record::footprint`] estimates them) or 1M
    /// records. An in-memory log holds every record since its snapshot, so
    /// this bounds its memory; 16 MiB of transfers is about 70,000
    /// transactions. (A [`MemoryStorage`] also lets its log grow to twice
    /// the last snapshot first; see [`MemoryStorage::with_policy`].)
    pub const IN_MEMORY: SnapshotPolicy = SnapshotPolicy {
        log_bytes: 16 << 20,
        log_records: 1 << 20,
    };

    /// Whether a log of `bytes` bytes and `records` records is due.
    pub fn is_due(&self, bytes: u64, records: u64) -> bool {
        bytes >= self.log_bytes || records >= self.log_records
    }
}

impl Default for SnapshotPolicy {
    /// 64 MiB or 1M records: a snapshot costs one pass over the state, so
    /// it should be rare next to appends, and replaying 64 MiB of log after
    /// a crash takes well under a few seconds.
    fn default() -> SnapshotPolicy {
        SnapshotPolicy {
            log_bytes: 64 << 20,
            log_records: 1 << 20,
        }
    }
}

/// Counters of a storage since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// [`Storage::append`] calls that wrote something.
    pub appends: u64,
    /// Records appended.
    pub records: u64,
    /// Bytes written to the log (frames included); for a
    /// [`MemoryStorage`], the records' estimated size in memory.
    pub bytes: u64,
    /// Durability barriers (`fsync`/`fdatasync`) of the log.
    pub syncs: u64,
    /// Snapshots written.
    pub snapshots: u64,
}

impl std::ops::AddAssign for StorageStats {
    fn add_assign(&mut self, other: StorageStats) {
        self.appends += other.appends;
        self.records += other.records;
        self.bytes += other.bytes;
        self.syncs += other.syncs;
        self.snapshots += other.snapshots;
    }
}

/// Error from storage. Fatal: the owner stops taking work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The storage could not be read or written.
    #[error("storage failed: {0}")]
    Io(String),
    /// A file holds bytes that are not what was written: a record whose
    /// checksum fails with valid records after it, a bad header, or a
    /// snapshot that does not decode. Recovery stops rather than guess.
    #[error("{} corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad bytes start.
        offset: u64,
        /// What is wrong with them.
        reason: String,
    },
    /// Records could not be encoded.
    #[error("cannot encode records: {0}")]
    Encode(String),
    /// A file was written in a format version this build does not read
    /// (by another version of parashard).
    #[error("{} is in format version {found}; this build reads version {supported}", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The version it was written in.
        found: String,
        /// The version this build reads and writes.
        supported: String,
    },
    /// The storage directory is open already, in this process or another:
    /// two writers would corrupt it.
    #[error("{} is in use by another open storage (this process or another)", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
}

/// An append-only log of records of type `R`, with snapshots.
pub trait Storage<R: Record>: Send + Sync + 'static {
    /// Appends `records` durably, in order: once it returns `Ok`, they
    /// survive a crash. One call is one durability barrier (group commit),
    /// so callers append a whole batch at once. Appending nothing is free.
    fn append(&self, records: Vec<R>) -> Result<(), StorageError>;

    /// The last snapshot and every record appended after it.
    fn load(&self) -> Result<Recovered<R>, StorageError>;

    /// Whether the log since the last snapshot is long enough that the
    /// owner should call [`Storage::snapshot`].
    fn snapshot_due(&self) -> bool;

    /// Atomically replaces the log with `snapshot`, which must reflect every
    /// record appended so far. Afterwards [`Storage::load`] returns it and
    /// only the records appended after this call.
    fn snapshot(&self, snapshot: R::Snapshot) -> Result<(), StorageError>;

    /// Counters since the storage was opened.
    fn stats(&self) -> StorageStats {
        StorageStats::default()
    }
}

#[derive(Debug)]
struct MemoryLog<R: Record> {
    snapshot: Option<R::Snapshot>,
    records: Vec<R>,
    /// The records' footprint since the snapshot.
    bytes: u64,
    /// The snapshot's footprint.
    snapshot_bytes: u64,
    stats: StorageStats,
}

/// In-memory storage: it lives outside the actor, so it survives the
/// actor's crash and restart inside the process.
#[derive(Debug)]
pub struct MemoryStorage<R: Record> {
    log: Arc<Mutex<MemoryLog<R>>>,
    policy: SnapshotPolicy,
}

impl<R: Record> Default for MemoryStorage<R> {
    /// A log that is never snapshotted (what simulations want: every
    /// record stays inspectable).
    fn default() -> Self {
        MemoryStorage::with_policy(SnapshotPolicy::NEVER)
    }
}

impl<R: Record> MemoryStorage<R> {
    /// An empty log that asks for snapshots by `policy`. Nothing is
    /// encoded: bytes are the records' estimated size in memory
    /// ([`Record::footprint`]), so the policy bounds the memory the log
    /// holds. The log also grows to twice the last snapshot's size before
    /// it asks for the next: a snapshot copies the owner's whole state
    /// (and the commits it remembers), and a log at least that large keeps
    /// the copying to a small share of the work.
    pub fn with_policy(policy: SnapshotPolicy) -> Self {
        MemoryStorage {
            log: Arc::new(Mutex::new(MemoryLog {
                snapshot: None,
                records: Vec::new(),
                bytes: 0,
                snapshot_bytes: 0,
                stats: StorageStats::default(),
            })),
            policy,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryLog<R>>, StorageError> {
        self.log
            .lock()
            .map_err(|_| StorageError::Io("in-memory log poisoned".into()))
    }
}

impl<R: Record> Clone for MemoryStorage<R> {
    fn clone(&self) -> Self {
        MemoryStorage {
            log: Arc::clone(&self.log),
            policy: self.policy,
        }
    }
}

impl<R: Record> Storage<R> for MemoryStorage<R> {
    fn append(&self, records: Vec<R>) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes: u64 = records.iter().map(Record::footprint).sum();
        let mut log = self.lock()?;
        log.stats.appends += 1;
        log.stats.records += records.len() as u64;
        log.stats.bytes += bytes;
        log.bytes += bytes;
        log.records.extend(records);
        Ok(())
    }

    fn load(&self) -> Result<Recovered<R>, StorageError> {
        let log = self.lock()?;
        Ok(Recovered {
            snapshot: log.snapshot.clone(),
            records: log.records.clone(),
        })
    }

    fn snapshot_due(&self) -> bool {
        self.lock()
            .map(|log| {
                let (bytes, records) = (log.bytes, log.records.len() as u64);
                self.policy.is_due(bytes, records)
                    && (bytes >= 2 * log.snapshot_bytes || records >= self.policy.log_records)
            })
            .unwrap_or(false)
    }

    fn snapshot(&self, snapshot: R::Snapshot) -> Result<(), StorageError> {
        let snapshot_bytes = R::snapshot_footprint(&snapshot);
        let mut log = self.lock()?;
        log.snapshot = Some(snapshot);
        log.records.clear();
        log.bytes = 0;
        log.snapshot_bytes = snapshot_bytes;
        log.stats.snapshots += 1;
        Ok(())
    }

    fn stats(&self) -> StorageStats {
        self.lock().map(|log| log.stats).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use parashard_protocols::model::{AccountId, AssetId, Key, TxId, Value};
    use parashard_protocols::workload::TxIds;

    use super::*;

    /// The record of a block of `txs` committed transfers.
    fn block(txs: u64) -> ShardRecord {
        let mut ids = TxIds::default();
        let key = |a| Key::balance(AccountId(a), AssetId::COIN);
        ShardRecord::Block {
            committed: (0..txs).map(|_| (ids.next_id(), 0.into())).collect(),
            writes: (0..txs)
                .flat_map(|i| [(key(i), 1), (key(i + 1), 2)])
                .collect(),
        }
    }

    /// An in-memory log is due for a snapshot by the memory its records
    /// hold: one record of many transactions counts as much as many small
    /// records, and a snapshot starts the count again.
    #[test]
    fn memory_log_counts_what_records_hold() {
        let record = block(1_000);
        let footprint = record.footprint();
        let per_tx = std::mem::size_of::<(TxId, Value)>() + 2 * std::mem::size_of::<(Key, Value)>();
        assert!(footprint >= 1_000 * per_tx as u64);
        let policy = SnapshotPolicy {
            log_bytes: 3 * footprint,
            log_records: 1_000,
        };
        let storage = MemoryStorage::with_policy(policy);
        storage
            .append(vec![record.clone(), record.clone()])
            .unwrap();
        assert!(!storage.snapshot_due(), "two of three blocks' worth");
        storage.append(vec![record.clone()]).unwrap();
        assert!(storage.snapshot_due(), "three blocks' worth");
        assert_eq!(storage.stats().bytes, 3 * footprint);
        storage.snapshot(snapshot(0)).unwrap();
        assert!(!storage.snapshot_due(), "counted again from the snapshot");
        storage.append(vec![record.clone()]).unwrap();
        assert!(!storage.snapshot_due());
        assert_eq!(storage.load().unwrap().records.len(), 1);

        // A snapshot larger than the policy's bytes: the log grows to twice
        // its size first.
        let big = snapshot(5 * footprint / 24);
        let big_bytes = big.footprint();
        assert!(big_bytes > 4 * footprint);
        storage.snapshot(big).unwrap();
        for blocks in 1..=12 {
            storage.append(vec![record.clone()]).unwrap();
            let due = blocks * footprint >= 2 * big_bytes;
            assert_eq!(storage.snapshot_due(), due, "{blocks} blocks");
        }
        assert!(
            storage.snapshot_due(),
            "twelve blocks are over twice the snapshot"
        );
    }

    /// A shard snapshot holding `keys` keys.
    fn snapshot(keys: u64) -> ShardSnapshot {
        ShardSnapshot {
            state: (0..keys)
                .map(|a| (parashard_protocols::model::Key::field(AccountId(a), 0), 1))
                .collect(),
            prepared: Vec::new(),
            finished: Vec::new(),
            decided_below: 0,
            committed: Default::default(),
        }
    }
}
