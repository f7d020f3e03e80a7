//! The JSON transaction decoder (`parashard run --txs`, docs/JSONL.md) on
//! hostile text: whatever a line holds, parsing it never panics, and a
//! line that parses builds a transaction whose limits can be checked
//! without panicking either. Lines the library writes parse back to the
//! same transaction. (The fuzz target `tx_line` runs the same decoder for
//! longer; see the README.)

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Value as Json};

use parashard_protocols::model::{AccountId, AssetId, ContractId, TxId};
use parashard_protocols::tx::{CallRequest, KeyRef, Request, Swap, Transfer, TxLine};

/// JSON values shaped like transaction lines: the right field names with
/// values of any type, nested a little, so that parsing gets past the
/// first character.
fn json_like() -> impl Strategy<Value = Json> {
    let names = prop::sample::select(vec![
        "type",
        "id",
        "from",
        "to",
        "amount",
        "account",
        "balance",
        "sender",
        "contract",
        "args",
        "reads",
        "writes",
        "adds",
        "asset",
        "field",
        "gas_limit",
        "auth",
        "sequence",
        "public_key",
        "signature",
        "trader",
        "pool",
        "asset_in",
        "asset_out",
        "amount_in",
        "min_out",
        "key",
    ]);
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(Json::from),
        prop::sample::select(vec![
            "transfer",
            "call",
            "swap",
            "set_public_key",
            "create_account",
            "mint",
            "",
            "00000000-0000-0000-0000-000000000001",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ])
        .prop_map(Json::from),
        ".{0,8}".prop_map(Json::from),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Json::Array),
            vec((names.clone(), inner), 0..8).prop_map(|fields| Json::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect()
            )),
        ]
    })
}

/// Requests the library writes, of a few kinds.
fn request() -> impl Strategy<Value = Request> {
    let account = any::<u64>().prop_map(AccountId);
    let key = (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(account, n, balance)| {
        let account = AccountId(account);
        if balance {
            KeyRef::Balance {
                account,
                asset: AssetId(n),
            }
        } else {
            KeyRef::Field { account, field: n }
        }
    });
    prop_oneof![
        (account.clone(), account.clone(), any::<u64>())
            .prop_map(|(from, to, amount)| Request::Transfer(Transfer { from, to, amount })),
        (
            account.clone(),
            account,
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(trader, pool, a, b, amount_in, min_out)| {
                Request::Swap(Swap {
                    trader,
                    pool,
                    asset_in: AssetId(a),
                    asset_out: AssetId(b),
                    amount_in,
                    min_out,
                })
            }),
        (
            any::<u64>(),
            any::<u64>(),
            vec(any::<u64>(), 0..8),
            vec(key.clone(), 0..3),
            vec(key, 0..3)
        )
            .prop_map(|(sender, contract, args, reads, writes)| {
                Request::Call(CallRequest {
                    sender: AccountId(sender),
                    contract: ContractId(contract),
                    args,
                    reads,
                    writes,
                    adds: Vec::new(),
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_048,
        // Integration tests have no lib.rs for proptest's default
        // persistence to find: keep failures next to this file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    /// Any text: no panic.
    #[test]
    fn any_text_never_panics(line in ".{0,200}") {
        if let Ok(tx) = TxLine::parse(&line) {
            let _ = tx.check_limits();
        }
    }

    /// Objects with the fields of transaction lines and values of any
    /// type: no panic; what parses passes or fails its limits typed.
    #[test]
    fn line_shaped_json_never_panics(object in json_like()) {
        if let Ok(tx) = TxLine::parse(&object.to_string()) {
            let _ = tx.check_limits();
        }
    }

    /// A line the library writes parses back to the same transaction.
    #[test]
    fn written_lines_parse_back(request in request(), id in any::<u128>(), gas in any::<Option<u64>>()) {
        let line = TxLine { id: Some(TxId::from_u128(id)), auth: None, gas_limit: gas, request };
        let text = serde_json::to_string(&line).expect("encodes");
        let parsed = TxLine::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, line.into_transaction());
    }
}

/// The documented examples parse, and a field of the wrong type, an
/// unknown field or a missing one is an error naming it.
#[test]
fn documented_lines_parse_and_bad_ones_say_why() {
    for line in [
        json!({"type": "create_account", "account": 1, "balance": 1000}),
        json!({"id": "8d8a1d1c-2f5e-4e0b-9a53-1c0f3e6a7b21", "type": "transfer", "from": 1, "to": 2, "amount": 25, "gas_limit": 16}),
        json!({"type": "swap", "trader": 1, "pool": 100, "asset_in": 0, "asset_out": 7, "amount_in": 50, "min_out": 45}),
    ] {
        TxLine::parse(&line.to_string()).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    for (line, says) in [
        (
            json!({"type": "transfer", "from": 1, "to": 2, "amount": -5}),
            "invalid value",
        ),
        (
            json!({"type": "transfer", "from": 1, "to": 2}),
            "missing field `amount`",
        ),
        (
            json!({"type": "transfer", "from": 1, "to": 2, "amount": 5, "fee": 1}),
            "unknown field `fee`",
        ),
        (
            json!({"type": "teleport", "from": 1}),
            "unknown variant `teleport`",
        ),
    ] {
        let error = TxLine::parse(&line.to_string())
            .expect_err("refused")
            .to_string();
        assert!(error.contains(says), "{line}: {error}");
    }
}
