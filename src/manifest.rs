//! A data directory's manifest: what the meaning of its logs depends on.
//!
//! Logs store keys and values, and which shard owns a key follows from
//! the shard count and the explicit placements; what a later transaction
//! does with a stored value follows from the contract code registered under
//! its id. A cluster started on a directory with another shard count,
//! other placements, or other code under a recorded contract id would
//! serve keys from the wrong shard or run code that did not write the
//! state, so it is refused with a [`DataDirMismatch`] that says what
//! differs. Contracts registered for the first time are added to the
//! manifest.
//!
//! The manifest is `manifest.json` (see [`Manifest`]), replaced atomically
//! (write, sync, rename, sync the directory).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use parashard_actors::storage::disk::sync_dir;
use parashard_actors::storage::StorageError;
use parashard_protocols::contracts::Registry;
use parashard_protocols::model::{AccountId, ContractId, ShardId};
use parashard_protocols::placement::Placement;

/// The manifest's file name in a data directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The file that earlier formats kept instead of a manifest (the shard
/// count alone); a directory holding it is format 0.
const LEGACY_META_FILE: &str = "parashard.meta";
/// The data-directory format this build reads and writes. It changes when
/// the manifest or the log records change meaning.
pub const DATA_DIR_FORMAT: u32 = 1;

/// What a data directory records of the cluster that writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The data-directory format ([`DATA_DIR_FORMAT`]).
    pub format: u32,
    /// The shard count: hash placement depends on it.
    pub shards: u32,
    /// Explicit placements, account id to shard id.
    pub placements: BTreeMap<u64, u32>,
    /// Registered user contracts, contract id to the version given at
    /// registration.
    pub contracts: BTreeMap<u64, String>,
}

impl Manifest {
    /// The manifest of a cluster with `placement` and `registry`.
    pub fn of(placement: &Placement, registry: &Registry) -> Manifest {
        Manifest {
            format: DATA_DIR_FORMAT,
            shards: placement.shards(),
            placements: placement
                .explicit()
                .map(|(account, shard)| (account.0, shard.0))
                .collect(),
            contracts: registry
                .versions()
                .into_iter()
                .map(|(id, version)| (id.0, version))
                .collect(),
        }
    }

    /// Checks that a cluster described by `given` may run on a directory
    /// that recorded `self`: same format, shard count and placements, and
    /// every recorded contract registered with its recorded version.
    /// Contracts only `given` registers are fine (they are new). The first
    /// difference found is returned.
    pub fn admits(&self, given: &Manifest) -> Result<(), DataDirMismatch> {
        if self.format != given.format {
            return Err(DataDirMismatch::Format {
                found: self.format,
                supported: given.format,
            });
        }
        if self.shards != given.shards {
            return Err(DataDirMismatch::Shards {
                recorded: self.shards,
                given: given.shards,
            });
        }
        let accounts = self.placements.keys().chain(given.placements.keys());
        for &account in accounts {
            let recorded = self.placements.get(&account).copied().map(ShardId);
            let now = given.placements.get(&account).copied().map(ShardId);
            if recorded != now {
                return Err(DataDirMismatch::Placement {
                    account: AccountId(account),
                    recorded,
                    given: now,
                });
            }
        }
        for (&id, version) in &self.contracts {
            match given.contracts.get(&id) {
                None => {
                    return Err(DataDirMismatch::ContractMissing {
                        contract: ContractId(id),
                        version: version.clone(),
                    })
                }
                Some(now) if now != version => {
                    return Err(DataDirMismatch::ContractVersion {
                        contract: ContractId(id),
                        recorded: version.clone(),
                        given: now.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// How a data directory's manifest differs from the cluster started on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirMismatch {
    /// The directory was written in another format (0: by a version that
    /// kept no manifest).
    #[error(
        "the directory is in data-directory format {found}; this build reads format {supported}"
    )]
    Format {
        /// The directory's format.
        found: u32,
        /// The format this build reads.
        supported: u32,
    },
    /// Another shard count.
    #[error("the directory was written by a cluster of {recorded} shards, not {given}")]
    Shards {
        /// The directory's shard count.
        recorded: u32,
        /// The cluster's.
        given: u32,
    },
    /// An account placed differently.
    #[error("{account} was placed {} when the directory was written, and is placed {} now", PlacedOn(*.recorded), PlacedOn(*.given))]
    Placement {
        /// The account.
        account: AccountId,
        /// Its explicit shard in the directory (`None`: by hash).
        recorded: Option<ShardId>,
        /// Its explicit shard in the cluster (`None`: by hash).
        given: Option<ShardId>,
    },
    /// A recorded contract is not registered.
    #[error("contract {} (version {version:?}) ran on the directory and is not registered", .contract.0)]
    ContractMissing {
        /// The contract.
        contract: ContractId,
        /// Its recorded version.
        version: String,
    },
    /// A recorded contract is registered with another version.
    #[error("contract {} is version {recorded:?} in the directory and {given:?} now", .contract.0)]
    ContractVersion {
        /// The contract.
        contract: ContractId,
        /// The directory's version.
        recorded: String,
        /// The registered version.
        given: String,
    },
}

/// Says where an account is placed: on a shard, or by hash.
struct PlacedOn(Option<ShardId>);

impl fmt::Display for PlacedOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(shard) => write!(f, "on {shard}"),
            None => f.write_str("by hash"),
        }
    }
}

/// What reading a directory's manifest found.
pub(crate) enum Found {
    /// A manifest.
    Manifest(Manifest),
    /// No manifest and no trace of an earlier format: a new directory.
    Nothing,
}

/// Reads the manifest of `dir`. A directory of an earlier format is a
/// [`DataDirMismatch::Format`]; an unreadable or malformed manifest is a
/// [`StorageError`].
pub(crate) fn read(dir: &Path) -> Result<Result<Found, DataDirMismatch>, StorageError> {
    let path = dir.join(MANIFEST_FILE);
    let io = |e: std::io::Error| StorageError::Io(format!("{}: {e}", path.display()));
    match std::fs::read(&path) {
        Ok(bytes) => {
            let manifest = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!("not a manifest: {e}"),
            })?;
            Ok(Ok(Found::Manifest(manifest)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join(LEGACY_META_FILE).exists() {
                return Ok(Err(DataDirMismatch::Format {
                    found: 0,
                    supported: DATA_DIR_FORMAT,
                }));
            }
            Ok(Ok(Found::Nothing))
        }
        Err(e) => Err(io(e)),
    }
}

/// Replaces the manifest of `dir` with `manifest`, atomically and durably.
pub(crate) fn write(dir: &Path, manifest: &Manifest) -> Result<(), StorageError> {
    let path = dir.join(MANIFEST_FILE);
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let io = |e: std::io::Error| StorageError::Io(format!("{}: {e}", tmp.display()));
    let mut text = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    text.push(b'\n');
    std::fs::File::create(&tmp)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, &text)?;
            file.sync_all()
        })
        .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(shards: u32, placements: &[(u64, u32)], contracts: &[(u64, &str)]) -> Manifest {
        Manifest {
            format: DATA_DIR_FORMAT,
            shards,
            placements: placements.iter().copied().collect(),
            contracts: contracts
                .iter()
                .map(|(id, version)| (*id, version.to_string()))
                .collect(),
        }
    }

    /// Proves each difference that changes a directory's meaning is found
    /// and named, and that a new contract alone is admitted, by checking
    /// one recorded manifest against variations of it.
    #[test]
    fn admits_only_what_keeps_the_meaning() {
        let recorded = manifest(4, &[(7, 2)], &[(1, "escrow-1")]);
        assert_eq!(recorded.admits(&recorded), Ok(()));
        let more = manifest(4, &[(7, 2)], &[(1, "escrow-1"), (2, "router-1")]);
        assert_eq!(recorded.admits(&more), Ok(()), "a new contract is fine");
        assert_eq!(
            recorded.admits(&manifest(3, &[(7, 2)], &[(1, "escrow-1")])),
            Err(DataDirMismatch::Shards {
                recorded: 4,
                given: 3
            })
        );
        let moved = recorded.admits(&manifest(4, &[(7, 1)], &[(1, "escrow-1")]));
        assert_eq!(
            moved,
            Err(DataDirMismatch::Placement {
                account: AccountId(7),
                recorded: Some(ShardId(2)),
                given: Some(ShardId(1)),
            })
        );
        let text = moved.unwrap_err().to_string();
        assert!(
            text.contains("on shard 2") && text.contains("on shard 1"),
            "{text}"
        );
        let hashed = recorded.admits(&manifest(4, &[], &[(1, "escrow-1")]));
        assert!(
            hashed.unwrap_err().to_string().contains("by hash now"),
            "an override dropped"
        );
        assert_eq!(
            recorded.admits(&manifest(4, &[(7, 2), (8, 0)], &[(1, "escrow-1")])),
            Err(DataDirMismatch::Placement {
                account: AccountId(8),
                recorded: None,
                given: Some(ShardId(0)),
            }),
            "an override added"
        );
        assert_eq!(
            recorded.admits(&manifest(4, &[(7, 2)], &[])),
            Err(DataDirMismatch::ContractMissing {
                contract: ContractId(1),
                version: "escrow-1".into(),
            })
        );
        assert_eq!(
            recorded.admits(&manifest(4, &[(7, 2)], &[(1, "escrow-2")])),
            Err(DataDirMismatch::ContractVersion {
                contract: ContractId(1),
                recorded: "escrow-1".into(),
                given: "escrow-2".into(),
            })
        );
        let mut old = recorded.clone();
        old.format = 0;
        assert_eq!(
            old.admits(&recorded),
            Err(DataDirMismatch::Format {
                found: 0,
                supported: DATA_DIR_FORMAT
            })
        );
    }

    /// Proves a manifest survives the round trip through its file, and a
    /// directory of the earlier format is recognised, by writing and
    /// reading in a temporary directory.
    #[test]
    fn file_round_trip_and_legacy_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()), Ok(Ok(Found::Nothing))));
        let recorded = manifest(2, &[(3, 1)], &[(9, "v1")]);
        write(dir.path(), &recorded).unwrap();
        match read(dir.path()) {
            Ok(Ok(Found::Manifest(found))) => assert_eq!(found, recorded),
            _ => panic!("the manifest reads back"),
        }
        let legacy = tempfile::tempdir().unwrap();
        std::fs::write(legacy.path().join(LEGACY_META_FILE), "shards 4\n").unwrap();
        assert!(matches!(
            read(legacy.path()),
            Ok(Err(DataDirMismatch::Format { found: 0, .. }))
        ));
        std::fs::write(dir.path().join(MANIFEST_FILE), "{ not json").unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
