//! The log's frame and record decoder on hostile bytes: whatever a log
//! file holds, reading it never panics, and it never yields records that
//! were not written: the records it gives are always a prefix of what was
//! appended, with a torn tail or a typed corruption error for the rest.
//! (The fuzz target `log_frames` runs the same decoder for longer; see the
//! README.)

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use parashard_actors::storage::disk::{read_frames, write_frame, Frames};
use parashard_protocols::model::{AccountId, Key, TxId};
use parashard_protocols::records::ShardRecord;

fn record() -> impl Strategy<Value = ShardRecord> {
    let key = (any::<u64>(), any::<u64>()).prop_map(|(a, s)| Key::field(AccountId(a), s));
    let id = any::<u128>().prop_map(TxId::from_u128);
    prop_oneof![
        (id.clone(), any::<u64>(), vec(key.clone(), 0..4))
            .prop_map(|(tx, attempt, keys)| ShardRecord::Prepared { tx, attempt, keys }),
        (id.clone(), vec((key, any::<u64>()), 0..4)).prop_map(|(tx, writes)| {
            ShardRecord::Committed {
                tx,
                writes: writes.as_slice().into(),
            }
        }),
        (id, any::<u64>()).prop_map(|(tx, attempt)| ShardRecord::Aborted { tx, attempt }),
    ]
}

/// Batches of records, as appends write them, and the log bytes.
fn log() -> impl Strategy<Value = (Vec<Vec<ShardRecord>>, Vec<u8>)> {
    vec(vec(record(), 1..4), 1..5).prop_map(|batches| {
        let mut bytes = Vec::new();
        for batch in &batches {
            write_frame(batch, &mut bytes).expect("encodes");
        }
        (batches, bytes)
    })
}

/// Whether `records` is what the first few of `batches` hold.
fn is_batch_prefix(records: &[ShardRecord], batches: &[Vec<ShardRecord>]) -> bool {
    let mut at = 0;
    for batch in batches {
        if at == records.len() {
            return true;
        }
        if records.get(at..at + batch.len()) != Some(batch.as_slice()) {
            return false;
        }
        at += batch.len();
    }
    at == records.len()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Integration tests have no lib.rs for proptest's default
        // persistence to find: keep failures next to this file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes: no panic, and what reads ends inside the bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(frames) = read_frames::<ShardRecord>(&bytes, 0) {
            prop_assert!(frames.end <= bytes.len());
            prop_assert_eq!(frames.torn.is_some(), frames.end < bytes.len());
        }
    }

    /// What was appended reads back exactly, with nothing torn.
    #[test]
    fn appended_batches_read_back((batches, bytes) in log()) {
        let frames = read_frames::<ShardRecord>(&bytes, 0).expect("a clean log reads");
        let all: Vec<ShardRecord> = batches.concat();
        prop_assert_eq!(frames, Frames { records: all, end: bytes.len(), torn: None });
    }

    /// A log cut anywhere (a crash mid-append) reads as a prefix of its
    /// batches with the rest torn.
    #[test]
    fn a_cut_log_reads_a_prefix((batches, bytes) in log(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(bytes.len() + 1);
        let frames = read_frames::<ShardRecord>(&bytes[..cut], 0).expect("a torn tail is no error");
        prop_assert!(is_batch_prefix(&frames.records, &batches), "{:?}", frames);
        prop_assert_eq!(frames.end <= cut, true);
    }

    /// A byte changed anywhere: never other records than were written.
    /// The reader gives a prefix of the batches (the change tore the last
    /// frame, or the rest) or a corruption error; the checksum catches
    /// every change of one byte.
    #[test]
    fn a_changed_byte_never_forges_records(
        (batches, mut bytes) in log(),
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        match read_frames::<ShardRecord>(&bytes, 0) {
            Ok(frames) => {
                prop_assert!(is_batch_prefix(&frames.records, &batches), "{:?}", frames);
                prop_assert!(frames.records.len() < batches.concat().len(), "the change went unseen");
            }
            Err((offset, reason)) => prop_assert!(offset <= at, "{offset}: {reason}"),
        }
    }
}
