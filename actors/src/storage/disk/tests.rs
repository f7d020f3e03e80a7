use super::*;
use crate::storage::{ShardRecord, ShardSnapshot};
use parashard_protocols::model::{AccountId, AssetId, Key, TxId};
use parashard_protocols::twopc::Finished;

type Disk = DiskStorage<ShardRecord>;

fn open(dir: &Path) -> Disk {
    DiskStorage::open(dir, SnapshotPolicy::NEVER).expect("open")
}

/// Closes `storage` and opens its directory again, as a restarted process
/// would: the lock of the first open is released first.
fn reopen(storage: Disk) -> Disk {
    let dir = storage.dir().to_path_buf();
    drop(storage);
    open(&dir)
}

fn key(account: u64) -> Key {
    Key::balance(AccountId(account), AssetId::COIN)
}

/// A batch of `n` records, distinct per `seed`.
fn batch(seed: u64, n: u64) -> Vec<ShardRecord> {
    (0..n)
        .map(|i| match (seed + i) % 3 {
            0 => ShardRecord::Block {
                committed: [(TxId::from_u128(u128::from(seed * 1_000 + i)), i.into())]
                    .into_iter()
                    .collect(),
                writes: vec![(key(seed), seed + i), (key(i), i)],
            },
            1 => ShardRecord::Prepared {
                tx: TxId::from_u128(u128::from(seed * 1_000 + i)),
                attempt: 0,
                keys: vec![key(seed), key(i)],
            },
            _ => ShardRecord::Committed {
                tx: TxId::from_u128(u128::from(seed * 1_000 + i)),
                writes: vec![(key(seed), i)].into(),
            },
        })
        .collect()
}

fn snapshot(n: u64) -> ShardSnapshot {
    ShardSnapshot {
        state: (0..n).map(|a| (key(a), a * 10)).collect(),
        prepared: vec![(TxId::from_u128(7), 0, vec![key(n)])],
        finished: vec![(TxId::from_u128(8), Finished::Aborted(2), 2)],
        decided_below: 1,
        committed: [(TxId::from_u128(9), n.into())].into(),
    }
}

fn file_len(path: &Path) -> usize {
    fs::metadata(path).expect("stat").len() as usize
}

/// Writes batches 0..3 and returns the log bytes and the offsets where
/// each frame starts (plus the end).
fn three_batches(dir: &Path) -> (Vec<u8>, Vec<usize>) {
    let storage = open(dir);
    storage.load().expect("load");
    let mut offsets = vec![file_len(&storage.log_path(0))];
    for seed in 0..3 {
        storage.append(batch(seed, 4)).expect("append");
        offsets.push(file_len(&storage.log_path(0)));
    }
    (fs::read(storage.log_path(0)).expect("read"), offsets)
}

fn all(seeds: std::ops::Range<u64>) -> Vec<ShardRecord> {
    seeds.flat_map(|s| batch(s, 4)).collect()
}

/// Records appended in batches come back in order from a fresh open of the
/// same directory, and each batch cost exactly one write and one sync.
#[test]
fn round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    assert_eq!(storage.load().unwrap().records, vec![]);
    for seed in 0..5 {
        storage.append(batch(seed, 3 + seed)).unwrap();
    }
    storage.append(Vec::new()).unwrap();
    let stats = storage.stats();
    assert_eq!(stats.appends, 5, "the empty append writes nothing");
    assert_eq!(stats.syncs, 5, "one sync per batch");
    assert_eq!(stats.records, (0..5).map(|s| 3 + s).sum::<u64>());
    drop(storage);
    let expected: Vec<_> = (0..5).flat_map(|s| batch(s, 3 + s)).collect();
    let recovered = open(dir.path()).load().unwrap();
    assert_eq!(recovered.snapshot, None);
    assert_eq!(recovered.records, expected);
}

/// Appending before any load checks the tail first, so a record is never
/// written behind a torn frame.
#[test]
fn append_before_load_checks_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, offsets) = three_batches(dir.path());
    let path = open(dir.path()).log_path(0);
    fs::write(&path, &bytes[..offsets[3] - 3]).unwrap();
    let storage = open(dir.path());
    storage.append(batch(9, 2)).unwrap();
    let mut expected = all(0..2);
    expected.extend(batch(9, 2));
    assert_eq!(reopen(storage).load().unwrap().records, expected);
}

/// A log cut at every byte offset inside its last frame (a crash during the
/// append) loads the earlier records, is truncated to them, and takes new
/// appends that survive the next load.
#[test]
fn torn_tail_at_every_offset_is_truncated() {
    let template = tempfile::tempdir().unwrap();
    let (bytes, offsets) = three_batches(template.path());
    let (start, end) = (offsets[2], offsets[3]);
    assert!(end - start > FRAME_HEADER_LEN, "a frame with a payload");
    for cut in start..end {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        fs::write(storage.log_path(0), &bytes[..cut]).unwrap();
        let recovered = storage.load().unwrap();
        assert_eq!(recovered.records, all(0..2), "cut at {cut}");
        assert_eq!(file_len(&storage.log_path(0)), start, "cut at {cut}");
        storage.append(batch(7, 1)).unwrap();
        let mut expected = all(0..2);
        expected.extend(batch(7, 1));
        assert_eq!(
            reopen(storage).load().unwrap().records,
            expected,
            "cut at {cut}"
        );
    }
}

/// Garbage after the last frame (zeros from a file extended but never
/// written, or random bytes) is a torn tail too.
#[test]
fn garbage_tail_is_truncated() {
    for garbage in [vec![0u8; 4096], vec![0xAB; 13], (0..=255u8).collect()] {
        let dir = tempfile::tempdir().unwrap();
        let (mut bytes, offsets) = three_batches(dir.path());
        bytes.extend(&garbage);
        let storage = open(dir.path());
        fs::write(storage.log_path(0), &bytes).unwrap();
        assert_eq!(storage.load().unwrap().records, all(0..3));
        assert_eq!(file_len(&storage.log_path(0)), offsets[3]);
    }
}

/// A flipped bit anywhere in a frame that has valid frames after it is a
/// typed `Corrupt` error naming the file and the frame's offset; nothing is
/// truncated, and appends are refused too.
#[test]
fn flipped_bit_in_the_middle_is_corrupt() {
    let template = tempfile::tempdir().unwrap();
    let (bytes, offsets) = three_batches(template.path());
    let (start, end) = (offsets[1], offsets[2]);
    for at in start..end {
        for bit in [0u8, 3, 7] {
            let dir = tempfile::tempdir().unwrap();
            let storage = open(dir.path());
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            fs::write(storage.log_path(0), &damaged).unwrap();
            match storage.load() {
                Err(StorageError::Corrupt { path, offset, .. }) => {
                    assert_eq!(path, storage.log_path(0));
                    assert_eq!(offset, start as u64, "byte {at} bit {bit}");
                }
                other => panic!("byte {at} bit {bit}: {other:?}"),
            }
            assert_eq!(file_len(&storage.log_path(0)), bytes.len(), "nothing cut");
            assert!(matches!(
                storage.append(batch(9, 1)),
                Err(StorageError::Corrupt { .. })
            ));
        }
    }
}

/// A damaged log header is corruption, not an empty log.
#[test]
fn bad_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, _) = three_batches(dir.path());
    bytes[0] ^= 1;
    let storage = open(dir.path());
    fs::write(storage.log_path(0), &bytes).unwrap();
    assert!(matches!(
        storage.load(),
        Err(StorageError::Corrupt { offset: 0, .. })
    ));
}

/// After a snapshot, load returns the snapshot and only the records
/// appended after it; the old log is gone.
#[test]
fn snapshot_then_tail() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    storage.load().unwrap();
    storage.append(batch(0, 5)).unwrap();
    storage.snapshot(snapshot(3)).unwrap();
    storage.append(batch(1, 2)).unwrap();
    storage.append(batch(2, 2)).unwrap();
    assert!(!storage.log_path(0).exists());
    assert_eq!(storage.stats().snapshots, 1);
    let storage = reopen(storage);
    let recovered = storage.load().unwrap();
    assert_eq!(recovered.snapshot, Some(snapshot(3)));
    let mut tail = batch(1, 2);
    tail.extend(batch(2, 2));
    assert_eq!(recovered.records, tail);
    // A second snapshot replaces the first.
    storage.snapshot(snapshot(8)).unwrap();
    let recovered = reopen(storage).load().unwrap();
    assert_eq!(recovered.snapshot, Some(snapshot(8)));
    assert_eq!(recovered.records, vec![]);
}

/// The policy asks for a snapshot once the log since the last one reaches
/// its record or byte limit.
#[test]
fn policy_decides_when_a_snapshot_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let policy = SnapshotPolicy {
        log_bytes: u64::MAX,
        log_records: 10,
    };
    let storage = Disk::open(dir.path(), policy).unwrap();
    storage.load().unwrap();
    storage.append(batch(0, 9)).unwrap();
    assert!(!storage.snapshot_due());
    storage.append(batch(1, 1)).unwrap();
    assert!(storage.snapshot_due());
    storage.snapshot(snapshot(1)).unwrap();
    assert!(!storage.snapshot_due());
    let by_bytes = tempfile::tempdir().unwrap();
    let storage = Disk::open(
        by_bytes.path(),
        SnapshotPolicy {
            log_bytes: 100,
            log_records: u64::MAX,
        },
    )
    .unwrap();
    storage.load().unwrap();
    storage.append(batch(0, 1)).unwrap();
    assert!(!storage.snapshot_due());
    storage.append(batch(1, 20)).unwrap();
    assert!(storage.snapshot_due());
}

/// Each crash point of a snapshot leaves a directory that loads to the
/// same records: a leftover temporary file is ignored, a stale old log is
/// deleted, an empty newer log is deleted.
#[test]
fn interrupted_snapshot_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    storage.load().unwrap();
    storage.append(batch(0, 3)).unwrap();
    // Crash after writing the temporary file, before the rename.
    fs::write(dir.path().join(SNAPSHOT_TMP_FILE), b"half a snapshot").unwrap();
    // Crash after creating the next log, before the rename took effect.
    fs::write(storage.log_path(1), log_header(1)).unwrap();
    let storage = reopen(storage);
    let recovered = storage.load().unwrap();
    assert_eq!((recovered.snapshot, recovered.records), (None, batch(0, 3)));
    assert!(!dir.path().join(SNAPSHOT_TMP_FILE).exists());
    assert!(!storage.log_path(1).exists());
    // Crash after the rename, before the old log was deleted.
    let old = fs::read(storage.log_path(0)).unwrap();
    storage.snapshot(snapshot(2)).unwrap();
    fs::write(storage.log_path(0), old).unwrap();
    let storage = reopen(storage);
    let recovered = storage.load().unwrap();
    assert_eq!(
        (recovered.snapshot, recovered.records),
        (Some(snapshot(2)), vec![])
    );
    assert!(!storage.log_path(0).exists());
}

/// A damaged snapshot, or a snapshot that does not match the log that
/// holds records, is a typed error rather than a silent restart from
/// nothing.
#[test]
fn bad_snapshot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    storage.load().unwrap();
    storage.snapshot(snapshot(4)).unwrap();
    storage.append(batch(1, 2)).unwrap();
    let path = storage.snapshot_path();
    let log_1 = storage.log_path(1);
    drop(storage);
    let good = fs::read(&path).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x10;
    fs::write(&path, &bad).unwrap();
    assert!(matches!(
        open(dir.path()).load(),
        Err(StorageError::Corrupt { .. })
    ));
    // The snapshot deleted: generation 1's log has records nobody continues.
    fs::remove_file(&path).unwrap();
    match open(dir.path()).load() {
        Err(StorageError::Corrupt { path, .. }) => assert_eq!(path, log_1),
        other => panic!("{other:?}"),
    }
    fs::write(&path, &good).unwrap();
    assert_eq!(open(dir.path()).load().unwrap().records, batch(1, 2));
}

/// Frames are what the format says: length, CRC-32 of length and payload,
/// postcard payload.
#[test]
fn frame_layout() {
    let records = batch(1, 2);
    let mut frame = Vec::new();
    encode_frame(&records, &mut frame).unwrap();
    let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - FRAME_HEADER_LEN);
    let crc = u32::from_le_bytes(frame[4..8].try_into().unwrap());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[..4]);
    hasher.update(&frame[8..]);
    assert_eq!(crc, hasher.finalize());
    assert_eq!(postcard::to_allocvec(&records).unwrap(), frame[8..]);
    check_frame(&frame, &records).unwrap();
}

/// A directory is open in one storage at a time: a second open, here or
/// in another process, gets a typed `Locked` error (two writers would
/// interleave their appends), and the directory opens again once the
/// first storage is gone.
#[test]
fn second_open_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    storage.load().unwrap();
    storage.append(batch(0, 2)).unwrap();
    match Disk::open(dir.path(), SnapshotPolicy::NEVER) {
        Err(StorageError::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("{:?}", other.map(|_| "opened twice")),
    }
    assert_eq!(reopen(storage).load().unwrap().records, batch(0, 2));
}

/// A file of the right kind written in another format version is refused
/// as such, naming both versions, rather than reported as damage or read
/// wrongly; a file of another kind is still corrupt.
#[test]
fn other_format_versions_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    storage.load().unwrap();
    storage.snapshot(snapshot(2)).unwrap();
    storage.append(batch(1, 2)).unwrap();
    let (snapshot_path, log_path) = (storage.snapshot_path(), storage.log_path(1));
    drop(storage);
    for (path, magic) in [(&snapshot_path, SNAPSHOT_MAGIC), (&log_path, LOG_MAGIC)] {
        let good = fs::read(path).unwrap();
        let mut newer = good.clone();
        newer[6..8].copy_from_slice(b"99");
        fs::write(path, &newer).unwrap();
        match open(dir.path()).load() {
            Err(StorageError::UnsupportedFormat {
                path: named,
                found,
                supported,
            }) => {
                assert_eq!(&named, path);
                assert_eq!(found, "99");
                assert_eq!(supported.as_bytes(), &magic[6..]);
            }
            other => panic!("{}: {other:?}", path.display()),
        }
        let mut alien = good.clone();
        alien[..4].copy_from_slice(b"ELF!");
        fs::write(path, &alien).unwrap();
        assert!(
            matches!(open(dir.path()).load(), Err(StorageError::Corrupt { .. })),
            "{}",
            path.display()
        );
        fs::write(path, &good).unwrap();
    }
    assert_eq!(open(dir.path()).load().unwrap().records, batch(1, 2));
}
