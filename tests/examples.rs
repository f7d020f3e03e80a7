//! The examples readers start from, run as tests: each checks its own
//! invariants (coins conserved, one winner per race, owners as sold, a
//! proposal paid once and only with a quorum, routes atomic, nothing lost
//! or doubled through a shard's crashes) and fails with an error if one
//! does not hold.

#[path = "../examples/dao_treasury.rs"]
mod dao_treasury;
#[path = "../examples/defi_swap.rs"]
mod defi_swap;
#[path = "../examples/multi_hop_swap.rs"]
mod multi_hop_swap;
#[path = "../examples/nft_market.rs"]
mod nft_market;
#[path = "../examples/quickstart.rs"]
mod quickstart;
#[path = "../examples/shard_failure.rs"]
mod shard_failure;

/// The quickstart: local and cross-shard transfers add up.
#[test]
fn quickstart_example_conserves_coins() {
    quickstart::run().expect("the example runs");
}

/// Cross-shard swaps against one pool: value conserved, the greedy swap
/// fails its guard.
#[test]
fn defi_swap_example_holds_its_invariants() {
    defi_swap::run().expect("the example runs");
}

/// Routes across two pools on two shards commit atomically.
#[test]
fn multi_hop_swap_example_holds_its_invariants() {
    multi_hop_swap::run(50).expect("the example runs");
}

/// Swaps through two crashes of the pool's shard: every swap resolved once.
#[test]
fn shard_failure_example_holds_its_invariants() {
    shard_failure::run(2_000).expect("the example runs");
}

/// The NFT market example: a user contract whose sales span four shards.
#[test]
fn nft_market_example_holds_its_invariants() {
    nft_market::run().expect("the example runs");
}

/// The DAO treasury example: votes and payouts span four shards.
#[test]
fn dao_treasury_example_holds_its_invariants() {
    dao_treasury::run().expect("the example runs");
}
