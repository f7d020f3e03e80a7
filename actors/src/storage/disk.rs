//! On-disk storage: per owner (a shard or the coordinator) a directory with
//! an append-only log, checksummed frames, group commit and atomic
//! snapshots.
//!
//! # Files
//! - `log-<generation>` (20 decimal digits): a 16-byte header
//!   ([`LOG_MAGIC`], then the generation as a little-endian `u64`), then
//!   frames. Generation 0 starts from nothing, generation `g > 0` from the
//!   snapshot that named it.
//! - `snapshot`: [`SNAPSHOT_MAGIC`], then exactly one frame holding the
//!   owner's snapshot and the generation of the log that continues it.
//! - `snapshot.tmp`: a snapshot being written; recovery deletes it.
//!
//! # Frames
//! `[len: u32 LE][crc: u32 LE][payload: len bytes]`, where `crc` is the
//! CRC-32 (IEEE) of the four `len` bytes followed by the payload, so a
//! damaged length is caught as surely as a damaged payload. The payload is
//! the [postcard] encoding of the `Vec<R>` of one [`Storage::append`] call:
//! one call is one frame, one `write` and one `fdatasync`. A crash during an
//! append can therefore only damage the last frame, never tear a batch in a
//! way that leaves a valid frame after a damaged one.
//!
//! # Recovery
//! [`Storage::load`] reads the snapshot (which must decode whole: it is
//! written atomically), then the frames of its log. At the first frame that
//! does not check out it looks for any valid frame further on: if there is
//! one, the damage is in the middle of the log and load fails with
//! [`StorageError::Corrupt`]; if there is none, it is a torn tail from a
//! crash during an append that was never acknowledged, and it is truncated
//! with a warning.
//!
//! # Snapshots
//! [`Storage::snapshot`] writes `snapshot.tmp`, syncs it, renames it over
//! `snapshot`, creates the next generation's log, syncs the directory and
//! only then deletes the old log. A crash at any point leaves either the old
//! snapshot with its complete log, or the new snapshot (whose old log, if
//! still there, recovery deletes).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Record, Recovered, SnapshotPolicy, Storage, StorageError, StorageStats};

/// The first bytes of every log file: the kind of file, then the format
/// version (two digits), bumped whenever the encoding of what the file
/// holds changes. A file in another version is refused with
/// [`StorageError::UnsupportedFormat`].
pub const LOG_MAGIC: [u8; 8] = *b"PSHLOG05";
/// The first bytes of every snapshot file (kind, then version, as in
/// [`LOG_MAGIC`]).
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"PSHSNP05";
/// Where the version digits start in a magic.
const FORMAT_VERSION_AT: usize = 6;
/// A log file's header: the magic and the generation.
pub const LOG_HEADER_LEN: usize = 16;
/// A frame's header: length and checksum.
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest payload of one frame. A length above it is damage.
pub const MAX_FRAME_LEN: usize = 1 << 30;

const SNAPSHOT_FILE: &str = "snapshot";
/// Held locked (an advisory `flock`) while a [`DiskStorage`] has the
/// directory open.
const LOCK_FILE: &str = "lock";
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
const LOG_PREFIX: &str = "log-";

/// What the snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile<S> {
    /// The generation of the log that continues this snapshot.
    next_generation: u64,
    snapshot: S,
}

/// On-disk storage; see the module documentation.
pub struct DiskStorage<R: Record> {
    dir: PathBuf,
    policy: SnapshotPolicy,
    log: Mutex<DiskLog>,
    /// The locked lock file: released when the storage is dropped (or its
    /// process ends, however it ends).
    _lock: File,
    _records: PhantomData<fn(R) -> R>,
}

struct DiskLog {
    /// The current log, open for appending at its end. `None` until
    /// [`DiskStorage::load_locked`] has checked its tail (and after a failed
    /// write), so that nothing is ever appended behind a damaged frame.
    file: Option<File>,
    generation: u64,
    /// Frame bytes in the current log (header excluded).
    log_bytes: u64,
    /// Records in the current log.
    log_records: u64,
    /// A failed `fsync`: the kernel may have dropped the dirty pages, so
    /// nothing written since the last good one can be trusted. Sticky
    /// until the process reopens the storage.
    poisoned: Option<StorageError>,
    /// Reused encoding buffer.
    buffer: Vec<u8>,
    stats: StorageStats,
}

impl<R: Record> std::fmt::Debug for DiskStorage<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStorage")
            .field("dir", &self.dir)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<R: Record> DiskStorage<R> {
    /// Storage in `dir` (created if missing), asking for snapshots by
    /// `policy`. Nothing is read until [`Storage::load`].
    ///
    /// The directory is locked while the storage is open: opening it again,
    /// from this process or another, fails with [`StorageError::Locked`]
    /// instead of two writers interleaving their appends.
    pub fn open(dir: impl Into<PathBuf>, policy: SnapshotPolicy) -> Result<Self, StorageError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "create directory", e))?;
        // A synced log in a directory whose own entry is lost is lost too.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, "open", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked { path: dir });
            }
            // A file system without advisory locks (some network ones):
            // work on, unguarded, rather than not at all.
            Err(fs::TryLockError::Error(e)) if e.kind() == ErrorKind::Unsupported => {
                warn!(path = %lock_path.display(), "file locks unsupported; directory not guarded");
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(&lock_path, "lock", e)),
        }
        Ok(DiskStorage {
            dir,
            policy,
            _lock: lock,
            log: Mutex::new(DiskLog {
                file: None,
                generation: 0,
                log_bytes: 0,
                log_records: 0,
                poisoned: None,
                buffer: Vec::new(),
                stats: StorageStats::default(),
            }),
            _records: PhantomData,
        })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of generation `generation`'s log.
    pub fn log_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("{LOG_PREFIX}{generation:020}"))
    }

    /// The path of the snapshot.
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    fn lock(&self) -> Result<MutexGuard<'_, DiskLog>, StorageError> {
        self.log
            .lock()
            .map_err(|_| StorageError::Io(format!("{}: lock poisoned", self.dir.display())))
    }

    /// The log, locked and open for writing: refused once poisoned, and
    /// loaded first if nothing has loaded it yet.
    fn writable(&self) -> Result<MutexGuard<'_, DiskLog>, StorageError> {
        let mut log = self.lock()?;
        if let Some(error) = &log.poisoned {
            return Err(error.clone());
        }
        if log.file.is_none() {
            self.load_locked(&mut log)?;
        }
        Ok(log)
    }

    fn load_locked(&self, log: &mut DiskLog) -> Result<Recovered<R>, StorageError> {
        if let Some(error) = &log.poisoned {
            return Err(error.clone());
        }
        log.file = None;
        let tmp = self.dir.join(SNAPSHOT_TMP_FILE);
        match fs::remove_file(&tmp) {
            Ok(()) => warn!(path = %tmp.display(), "removed an unfinished snapshot"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&tmp, "remove", e)),
        }
        let (snapshot, generation) = match self.read_snapshot()? {
            Some(file) => (Some(file.snapshot), file.next_generation),
            None => (None, 0),
        };
        self.remove_other_logs(generation)?;
        let (file, records, log_bytes) = self.open_log(generation)?;
        log.file = Some(file);
        log.generation = generation;
        log.log_bytes = log_bytes;
        log.log_records = records.len() as u64;
        Ok(Recovered { snapshot, records })
    }

    fn read_snapshot(&self) -> Result<Option<SnapshotFile<R::Snapshot>>, StorageError> {
        let path = self.snapshot_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, "read", e)),
        };
        check_magic(&path, &bytes, &SNAPSHOT_MAGIC, "snapshot")?;
        let at = SNAPSHOT_MAGIC.len();
        let (payload, used) =
            read_frame(&bytes[at..]).map_err(|reason| corrupt(&path, at, reason))?;
        if at + used != bytes.len() {
            return Err(corrupt(
                &path,
                at + used,
                format!("{} bytes after the snapshot", bytes.len() - at - used),
            ));
        }
        decode(payload)
            .map(Some)
            .map_err(|reason| corrupt(&path, at, reason))
    }

    /// Deletes logs that a completed snapshot replaced, and empty logs that
    /// an unfinished one created. A non-empty log newer than the snapshot
    /// means the snapshot is not the one that log continues: corruption.
    fn remove_other_logs(&self, generation: u64) -> Result<(), StorageError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, "list", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.dir, "list", e))?;
            let name = entry.file_name();
            let Some(other) = name
                .to_str()
                .and_then(|n| n.strip_prefix(LOG_PREFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if other > generation {
                let len = entry
                    .metadata()
                    .map_err(|e| io_error(&path, "stat", e))?
                    .len();
                if len > LOG_HEADER_LEN as u64 {
                    return Err(corrupt(
                        &path,
                        LOG_HEADER_LEN,
                        format!("log generation {other} holds records but the snapshot continues with generation {generation}"),
                    ));
                }
            }
            if other != generation {
                fs::remove_file(&path).map_err(|e| io_error(&path, "remove", e))?;
            }
        }
        Ok(())
    }

    /// Opens generation `generation`'s log (creating it if missing), reads
    /// its records and truncates a torn tail. Returns the file, positioned
    /// at its end, the records and the frame bytes.
    fn open_log(&self, generation: u64) -> Result<(File, Vec<R>, u64), StorageError> {
        let path = self.log_path(generation);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_error(&path, "open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(&path, "read", e))?;
        if bytes.len() < LOG_HEADER_LEN {
            // A new log, or one whose creation a crash cut short: nothing
            // was ever appended to it.
            if !bytes.is_empty() {
                warn!(path = %path.display(), len = bytes.len(), "torn log header; rewriting it");
            }
            file.set_len(0)
                .map_err(|e| io_error(&path, "truncate", e))?;
            file.write_all(&log_header(generation))
                .map_err(|e| io_error(&path, "write", e))?;
            file.sync_data().map_err(|e| io_error(&path, "sync", e))?;
            sync_dir(&self.dir)?;
            return Ok((file, Vec::new(), 0));
        }
        check_magic(&path, &bytes, &LOG_MAGIC, "log")?;
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&bytes[LOG_MAGIC.len()..LOG_HEADER_LEN]);
        let stored = u64::from_le_bytes(stored);
        if stored != generation {
            return Err(corrupt(
                &path,
                LOG_MAGIC.len(),
                format!("header says generation {stored}, the file name {generation}"),
            ));
        }
        let Frames { records, end, torn } = read_frames(&bytes, LOG_HEADER_LEN)
            .map_err(|(at, reason)| corrupt(&path, at, reason))?;
        if let Some(reason) = torn {
            warn!(
                path = %path.display(),
                offset = end,
                dropped_bytes = bytes.len() - end,
                %reason,
                "torn log tail (an append a crash cut short); truncating it"
            );
            file.set_len(end as u64)
                .map_err(|e| io_error(&path, "truncate", e))?;
            file.sync_data().map_err(|e| io_error(&path, "sync", e))?;
        }
        Ok((file, records, (end - LOG_HEADER_LEN) as u64))
    }
}

impl<R: Record> Storage<R> for DiskStorage<R> {
    fn append(&self, records: Vec<R>) -> Result<(), StorageError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut guard = self.writable()?;
        let log = &mut *guard;
        let path = self.log_path(log.generation);
        log.buffer.clear();
        encode_frame(&records, &mut log.buffer)?;
        check_frame(&log.buffer, &records).map_err(|reason| corrupt(&path, 0, reason))?;
        let Some(file) = log.file.as_mut() else {
            return Err(StorageError::Io(format!(
                "{}: log not open",
                path.display()
            )));
        };
        if let Err(e) = file.write_all(&log.buffer) {
            // Part of the frame may be on disk: check the tail again before
            // the next append.
            log.file = None;
            return Err(io_error(&path, "append to", e));
        }
        log.stats.syncs += 1;
        if let Err(e) = file.sync_data() {
            let error = io_error(&path, "sync", e);
            log.poisoned = Some(error.clone());
            log.file = None;
            return Err(error);
        }
        let bytes = log.buffer.len() as u64;
        log.log_bytes += bytes;
        log.log_records += records.len() as u64;
        log.stats.appends += 1;
        log.stats.records += records.len() as u64;
        log.stats.bytes += bytes;
        // Keep the buffer for the next batch unless one huge batch grew it.
        if log.buffer.capacity() > 64 << 20 {
            log.buffer = Vec::new();
        }
        Ok(())
    }

    fn load(&self) -> Result<Recovered<R>, StorageError> {
        let mut log = self.lock()?;
        self.load_locked(&mut log)
    }

    fn snapshot_due(&self) -> bool {
        self.lock()
            .map(|log| self.policy.is_due(log.log_bytes, log.log_records))
            .unwrap_or(false)
    }

    fn snapshot(&self, snapshot: R::Snapshot) -> Result<(), StorageError> {
        let mut guard = self.writable()?;
        let log = &mut *guard;
        let old_generation = log.generation;
        let next_generation = old_generation + 1;
        let file = SnapshotFile {
            next_generation,
            snapshot: &snapshot,
        };
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        encode_frame(&file, &mut bytes)?;
        let tmp = self.dir.join(SNAPSHOT_TMP_FILE);
        if cfg!(debug_assertions) {
            let (payload, _) = read_frame(&bytes[SNAPSHOT_MAGIC.len()..])
                .map_err(|reason| corrupt(&tmp, SNAPSHOT_MAGIC.len(), reason))?;
            let back: SnapshotFile<R::Snapshot> =
                decode(payload).map_err(|reason| corrupt(&tmp, SNAPSHOT_MAGIC.len(), reason))?;
            assert_eq!(back.snapshot, snapshot, "snapshot encoding round-trips");
            assert_eq!(back.next_generation, next_generation);
        }
        let mut out = File::create(&tmp).map_err(|e| io_error(&tmp, "create", e))?;
        out.write_all(&bytes)
            .map_err(|e| io_error(&tmp, "write", e))?;
        log.stats.syncs += 1;
        out.sync_data().map_err(|e| io_error(&tmp, "sync", e))?;
        drop(out);
        // From the rename on, a failure leaves the files between two states
        // that only a fresh load sorts out: poison instead of going on.
        let poison = |log: &mut DiskLog, error: StorageError| {
            log.poisoned = Some(error.clone());
            log.file = None;
            error
        };
        let path = self.snapshot_path();
        if let Err(e) = fs::rename(&tmp, &path) {
            return Err(poison(log, io_error(&path, "rename snapshot to", e)));
        }
        let new_path = self.log_path(next_generation);
        let new_log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&new_path)
            .and_then(|mut f| {
                f.write_all(&log_header(next_generation))?;
                f.sync_data()?;
                Ok(f)
            });
        log.stats.syncs += 2;
        let new_log = match new_log.map_err(|e| io_error(&new_path, "create", e)) {
            Ok(file) => file,
            Err(error) => return Err(poison(log, error)),
        };
        if let Err(error) = sync_dir(&self.dir) {
            return Err(poison(log, error));
        }
        let old_path = self.log_path(old_generation);
        if let Err(e) = fs::remove_file(&old_path) {
            // Harmless: the next load deletes it.
            warn!(path = %old_path.display(), error = %e, "could not delete a log replaced by a snapshot");
        }
        log.file = Some(new_log);
        log.generation = next_generation;
        log.log_bytes = 0;
        log.log_records = 0;
        log.stats.snapshots += 1;
        Ok(())
    }

    fn stats(&self) -> StorageStats {
        self.lock().map(|log| log.stats).unwrap_or_default()
    }
}

fn io_error(path: &Path, op: &str, error: std::io::Error) -> StorageError {
    StorageError::Io(format!("{op} {}: {error}", path.display()))
}

/// Checks that `bytes` start with `magic`: its first six bytes name the kind
/// of file, its last two the format version. A file of the right kind in
/// another version is refused as such, not reported as damage.
fn check_magic(path: &Path, bytes: &[u8], magic: &[u8; 8], kind: &str) -> Result<(), StorageError> {
    let Some(found) = bytes.get(..magic.len()) else {
        return Err(corrupt(
            path,
            0,
            format!("too short for a parashard {kind}"),
        ));
    };
    if found == magic {
        return Ok(());
    }
    let (name, version) = magic.split_at(FORMAT_VERSION_AT);
    if found.starts_with(name) {
        return Err(StorageError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(&found[FORMAT_VERSION_AT..]).into_owned(),
            supported: String::from_utf8_lossy(version).into_owned(),
        });
    }
    Err(corrupt(
        path,
        0,
        format!("not a parashard {kind} (bad magic)"),
    ))
}

fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

fn log_header(generation: u64) -> [u8; LOG_HEADER_LEN] {
    let mut header = [0u8; LOG_HEADER_LEN];
    header[..LOG_MAGIC.len()].copy_from_slice(&LOG_MAGIC);
    header[LOG_MAGIC.len()..].copy_from_slice(&generation.to_le_bytes());
    header
}

/// Makes the entries of directory `dir` (created, renamed or deleted
/// files) durable.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "sync directory", e))
}

/// Makes the entries of directory `dir` durable: a no-op off Unix.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> Result<(), StorageError> {
    // Only Unix lets a directory be opened and synced; elsewhere renames
    // are as durable as the file system makes them.
    Ok(())
}

fn frame_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one frame holding `value` to `out`.
fn encode_frame<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), StorageError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    if let Err(e) = postcard::to_io(value, &mut *out) {
        out.truncate(start);
        return Err(StorageError::Encode(e.to_string()));
    }
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    let len = match u32::try_from(payload_len) {
        Ok(len) if payload_len <= MAX_FRAME_LEN => len.to_le_bytes(),
        _ => {
            out.truncate(start);
            return Err(StorageError::Encode(format!(
                "a batch of {payload_len} bytes exceeds the frame limit of {MAX_FRAME_LEN}"
            )));
        }
    };
    let crc = frame_crc(len, &out[start + FRAME_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Checks a frame about to be written: its checksum always (cheap next to
/// the `fsync`), and in debug builds that it decodes back to `records`.
fn check_frame<R: Record>(frame: &[u8], records: &[R]) -> Result<(), String> {
    let (payload, used) = read_frame(frame)?;
    if used != frame.len() {
        return Err(format!(
            "frame of {used} bytes in a buffer of {}",
            frame.len()
        ));
    }
    if cfg!(debug_assertions) {
        let back: Vec<R> = decode(payload)?;
        assert_eq!(back, records, "record encoding round-trips");
    }
    Ok(())
}

/// Reads the frame at the start of `bytes`: its payload and its length
/// (header included), or why it is not a valid frame.
fn read_frame(bytes: &[u8]) -> Result<(&[u8], usize), String> {
    let Some(header) = bytes.get(..FRAME_HEADER_LEN) else {
        return Err(format!(
            "frame header cut off after {} of {FRAME_HEADER_LEN} bytes",
            bytes.len()
        ));
    };
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 {
        return Err("frame of length 0".into());
    }
    if len > MAX_FRAME_LEN {
        return Err(format!(
            "frame length {len} exceeds the limit of {MAX_FRAME_LEN}"
        ));
    }
    let Some(payload) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Err(format!(
            "frame of {len} bytes cut off after {}",
            bytes.len() - FRAME_HEADER_LEN
        ));
    };
    let actual = frame_crc(len_bytes, payload);
    if actual != stored {
        return Err(format!(
            "checksum {actual:#010x} does not match the stored {stored:#010x}"
        ));
    }
    Ok((payload, FRAME_HEADER_LEN + len))
}

/// The records of a log's frames ([`read_frames`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames<R> {
    /// Every record of the frames that read, in order.
    pub records: Vec<R>,
    /// Where the frames that read end.
    pub end: usize,
    /// Why the bytes from `end` on do not read, if there are any: a torn
    /// tail, which recovery truncates.
    pub torn: Option<String>,
}

/// Reads the frames of a log from offset `at` of `bytes` on (after the
/// file's header): each a length, a checksum and a batch of records. A
/// frame that does not read is the torn tail of an append a crash cut
/// short if no valid frame follows it; if one does, or if a frame's
/// checksum matches but its records do not decode, the log is corrupt:
/// the error gives the offset and the reason. Never panics, whatever the
/// bytes (the fuzz target `log_frames` holds it to that).
pub fn read_frames<R: DeserializeOwned>(
    bytes: &[u8],
    mut at: usize,
) -> Result<Frames<R>, (usize, String)> {
    let mut records = Vec::new();
    while at < bytes.len() {
        match read_frame(&bytes[at..]) {
            Ok((payload, used)) => {
                let batch: Vec<R> = decode(payload)
                    .map_err(|reason| (at, format!("checksum matches but {reason}")))?;
                records.extend(batch);
                at += used;
            }
            Err(reason) => {
                if let Some(next) = next_valid_frame(bytes, at) {
                    return Err((
                        at,
                        format!("{reason}; a valid record follows at byte {next}"),
                    ));
                }
                return Ok(Frames {
                    records,
                    end: at,
                    torn: Some(reason),
                });
            }
        }
    }
    Ok(Frames {
        records,
        end: at,
        torn: None,
    })
}

/// Appends the frame of `records` to `out`, as an append writes it.
pub fn write_frame<R: Serialize>(records: &[R], out: &mut Vec<u8>) -> Result<(), StorageError> {
    encode_frame(records, out)
}

/// The offset of the first valid frame that starts after `from`, if any.
fn next_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    let last = bytes.len().checked_sub(FRAME_HEADER_LEN + 1)?;
    (from + 1..=last).find(|&at| read_frame(&bytes[at..]).is_ok())
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} bytes left after the records", rest.len())),
        Err(e) => Err(format!("records do not decode: {e}")),
    }
}

#[cfg(test)]
mod tests;
