//! The examples readers start from, run as tests: each checks its own
//! invariants (one winner per race, coins conserved, owners as sold, a
//! proposal paid once and only with a quorum).

#[path = "../examples/dao_treasury.rs"]
mod dao_treasury;
#[path = "../examples/nft_market.rs"]
mod nft_market;

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
