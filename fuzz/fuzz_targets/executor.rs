//! Both executors against the independent test oracle
//! (`protocols/tests/common/oracle.rs`) on blocks the input shapes: a seed,
//! then per block its length, accounts, hot share, mix of calls (every
//! native call and the test contracts, which fail, panic and break their
//! access sets) and share of calls built to fail. Any difference in an
//! outcome, an output or the state is a crash with the difference named.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(unused_imports)]
#[path = "../../protocols/tests/common/mod.rs"]
mod common;

use common::{BlockSpec, Case, Mix};
use parashard_protocols::{BlockExecutor, ParallelExecutor, SequentialExecutor};

/// Reads a case from the input: 8 bytes of seed, then 6 bytes per block
/// (up to 3 blocks).
fn case(data: &[u8]) -> Option<Case> {
    let seed = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let blocks: Vec<BlockSpec> = data[8..]
        .chunks_exact(6)
        .take(3)
        .map(|b| BlockSpec {
            len: 1 + usize::from(u16::from_le_bytes([b[0], b[1]])) % 1_500,
            accounts: [2, 10, 1_000, 1_000_000][usize::from(b[2] % 4)],
            hot_percent: u64::from(b[3] % 101),
            mix: [Mix::Transfers, Mix::Light, Mix::Heavy, Mix::Counters][usize::from(b[4] % 4)],
            failure_percent: u64::from(b[5] % 21),
            hot_tail: b[5] & 0x80 != 0,
        })
        .collect();
    (!blocks.is_empty()).then_some(Case { seed, blocks })
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = case(data) else {
        return;
    };
    common::quiet_test_panics();
    thread_local! {
        static EXECUTORS: (SequentialExecutor, ParallelExecutor) = {
            let registry = common::registry();
            (
                SequentialExecutor::new(registry.clone()),
                ParallelExecutor::new(2, registry).expect("2 workers").adaptive(false),
            )
        };
    }
    EXECUTORS.with(|(sequential, parallel)| {
        let runners: [(&str, &dyn BlockExecutor); 2] =
            [("sequential", sequential), ("parallel", parallel)];
        if let Err(difference) = common::oracle::compare(case.build(), &runners) {
            panic!("seed {}: {difference}", case.seed);
        }
    });
});
