//! The JSON transaction decoder on arbitrary bytes: parsing never panics,
//! and a transaction that parses is checked against its limits and run on
//! a small state by the sequential executor without panicking either.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use parashard_protocols::model::{AccountId, AssetId, Key};
use parashard_protocols::tx::TxLine;
use parashard_protocols::{BlockExecutor, Registry, SequentialExecutor, State};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tx) = TxLine::parse(text) else {
        return;
    };
    if tx.check_limits().is_err() {
        return;
    }
    // Accounts 0 to 3 with coins and token 1, so that calls get past the
    // existence checks.
    let mut state = State::new();
    for account in 0..4 {
        for asset in [AssetId::COIN, AssetId(1)] {
            state.set(Key::balance(AccountId(account), asset), 1_000);
        }
    }
    let executor = SequentialExecutor::new(Arc::new(Registry::new()));
    let receipts = executor
        .execute_block(&mut state, &[tx])
        .expect("one transaction");
    assert_eq!(receipts.len(), 1);
});
