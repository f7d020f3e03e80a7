//! The log's frame and record decoder on arbitrary bytes, for both record
//! kinds: reading never panics, and what reads ends inside the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parashard_actors::storage::disk::read_frames;
use parashard_protocols::records::{CoordinatorRecord, ShardRecord};

fuzz_target!(|data: &[u8]| {
    if let Ok(frames) = read_frames::<ShardRecord>(data, 0) {
        assert!(frames.end <= data.len());
        assert_eq!(frames.torn.is_some(), frames.end < data.len());
    }
    if let Ok(frames) = read_frames::<CoordinatorRecord>(data, 0) {
        assert!(frames.end <= data.len());
    }
});
