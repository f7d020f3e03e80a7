//! Shared helpers for the integration tests.
#![allow(dead_code)]

use parashard::prelude::*;

/// A cluster of `shards` shards with accounts `0..accounts` each holding
/// `balance` coins.
pub fn bank(shards: u32, accounts: u64, balance: Value) -> Cluster {
    let cluster = Cluster::builder()
        .shards(shards)
        .workers(1)
        .start()
        .expect("cluster starts");
    fund(&cluster, accounts, balance);
    cluster
}

/// Creates accounts `0..accounts` with `balance` coins each, and checks
/// that every creation committed.
pub fn fund(cluster: &Cluster, accounts: u64, balance: Value) {
    let genesis: Vec<_> = (0..accounts).map(|a| (AccountId(a), balance)).collect();
    let receipts = cluster.create_accounts_blocking(&genesis).expect("genesis");
    assert!(receipts.iter().all(Receipt::is_committed), "{receipts:?}");
}

/// The coin balances of accounts `0..accounts`.
pub fn balances(cluster: &Cluster, accounts: u64) -> Vec<Value> {
    let keys: Vec<Key> = (0..accounts)
        .map(|a| Key::balance(AccountId(a), AssetId::COIN))
        .collect();
    cluster
        .get_many_blocking(&keys)
        .expect("read")
        .into_iter()
        .map(|v| v.expect("account exists"))
        .collect()
}

/// Two accounts of `0..accounts` on different shards.
pub fn cross_pair(cluster: &Cluster, accounts: u64) -> (AccountId, AccountId) {
    let placement = cluster.placement();
    for a in 0..accounts {
        for b in 0..accounts {
            if placement.shard_of_account(AccountId(a)) != placement.shard_of_account(AccountId(b))
            {
                return (AccountId(a), AccountId(b));
            }
        }
    }
    panic!("all accounts on one shard");
}

/// Polls until nothing is in flight, locked or queued anywhere in the
/// cluster, for at most `limit`. Returns the last reading if the cluster
/// never went quiet.
pub fn wait_quiet(
    cluster: &Cluster,
    limit: std::time::Duration,
) -> Result<(), Option<parashard::Pending>> {
    let deadline = std::time::Instant::now() + limit;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        // A restarting actor answers once it is back; an error here only
        // means "not yet".
        if let Ok(pending) = cluster.pending_blocking() {
            if pending.is_quiet() {
                return Ok(());
            }
            last = Some(pending);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(last)
}

/// Commits one cross-shard transfer of 1 coin between two of accounts
/// `0..accounts`, retrying for up to 10 s while restarted actors come back,
/// and applies it to `model`.
pub fn cross_transfer_once_back(cluster: &Cluster, accounts: u64, model: &mut [Value]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (a, b) = cross_pair(cluster, accounts);
    loop {
        match cluster.submit_blocking(Transaction::transfer(TxId::random(), a, b, 1)) {
            Ok(receipt) if receipt.is_committed() => break,
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => panic!("the cluster never came back: {other:?}"),
        }
    }
    model[a.0 as usize] -= 1;
    model[b.0 as usize] += 1;
}

/// What a client learnt about a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The receipt said committed.
    Committed,
    /// The receipt said failed.
    Failed,
    /// No receipt: the shard or coordinator that held it crashed.
    Unknown,
}

/// A transfer a client submitted, and what it heard back.
#[derive(Debug, Clone, Copy)]
pub struct Submitted {
    /// The transaction's id.
    pub id: TxId,
    /// Payer.
    pub from: AccountId,
    /// Payee.
    pub to: AccountId,
    /// Amount.
    pub amount: Value,
    /// The client's knowledge of its outcome.
    pub outcome: Outcome,
}

/// Records a batch's transfers with the receipts (or the error) it got.
pub fn record_batch(
    txs: &[Transaction],
    answer: Result<Vec<Receipt>, ClusterError>,
    log: &mut Vec<Submitted>,
) {
    let outcomes: Vec<Outcome> = match answer {
        Ok(receipts) => {
            assert_eq!(receipts.len(), txs.len(), "one receipt per transaction");
            txs.iter()
                .zip(&receipts)
                .map(|(tx, receipt)| {
                    assert_eq!(tx.id, receipt.tx_id, "receipts in batch order");
                    if receipt.is_committed() {
                        Outcome::Committed
                    } else if receipt.is_unknown() {
                        Outcome::Unknown
                    } else {
                        Outcome::Failed
                    }
                })
                .collect()
        }
        Err(ClusterError::Unavailable(_)) => vec![Outcome::Unknown; txs.len()],
        Err(other) => panic!("unexpected submit error: {other}"),
    };
    for (tx, outcome) in txs.iter().zip(outcomes) {
        let Call::Transfer { to, amount } = tx.call else {
            panic!("only transfers are recorded: {tx:?}")
        };
        log.push(Submitted {
            id: tx.id,
            from: tx.sender,
            to,
            amount,
            outcome,
        });
    }
}

/// The most unresolved transfers of one account whose subsets
/// [`explain_balances`] enumerates.
const MAX_SUBSET_BITS: usize = 16;

/// Checks that `balances` (by account index) equal `genesis` plus the
/// effect of exactly the committed transfers, plus some subset of the
/// transfers whose outcome is unknown, each applied once or not at all.
/// Returns how many unknown transfers were applied, or a description of
/// the mismatch. The unknown transfers are resolved account by account:
/// amounts are wide random numbers, so exactly one subset of an account's
/// unknown transfers explains its balance, and that fixes them for the
/// other accounts too.
pub fn explain_balances(
    genesis: &[Value],
    balances: &[Value],
    log: &[Submitted],
) -> Result<usize, String> {
    assert_eq!(genesis.len(), balances.len());
    let mut diff: Vec<i128> = balances
        .iter()
        .zip(genesis)
        .map(|(b, g)| i128::from(*b) - i128::from(*g))
        .collect();
    let unknown: Vec<&Submitted> = log
        .iter()
        .filter(|s| s.outcome == Outcome::Unknown)
        .collect();
    for s in log.iter().filter(|s| s.outcome == Outcome::Committed) {
        diff[s.from.0 as usize] += i128::from(s.amount);
        diff[s.to.0 as usize] -= i128::from(s.amount);
    }
    // Per account, the unknown transfers touching it with their signed
    // effect on it.
    let mut touching: Vec<Vec<(usize, i128)>> = vec![Vec::new(); genesis.len()];
    for (u, s) in unknown.iter().enumerate() {
        touching[s.from.0 as usize].push((u, -i128::from(s.amount)));
        touching[s.to.0 as usize].push((u, i128::from(s.amount)));
    }
    let mut applied: Vec<Option<bool>> = vec![None; unknown.len()];
    // Each round fixes at least one transfer or stops: bounded by their
    // number.
    for _ in 0..=unknown.len() {
        let mut progress = false;
        for (account, effects) in touching.iter().enumerate() {
            let mut rest = diff[account];
            let mut open = Vec::new();
            for &(u, effect) in effects {
                match applied[u] {
                    Some(true) => rest -= effect,
                    Some(false) => {}
                    None => open.push((u, effect)),
                }
            }
            if open.is_empty() {
                if rest != 0 {
                    return Err(format!(
                        "account {account}: balance off by {rest} from genesis plus committed transfers"
                    ));
                }
                continue;
            }
            if open.len() > MAX_SUBSET_BITS {
                continue;
            }
            let (mut always, mut never) = (u32::MAX, u32::MAX);
            let mut solutions = 0;
            for mask in 0u32..(1 << open.len()) {
                let sum: i128 = open
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, (_, e))| e)
                    .sum();
                if sum == rest {
                    solutions += 1;
                    always &= mask;
                    never &= !mask;
                }
            }
            if solutions == 0 {
                return Err(format!(
                    "account {account}: no subset of its {} unknown transfers explains a difference of {rest}",
                    open.len()
                ));
            }
            for (i, (u, _)) in open.iter().enumerate() {
                if always & (1 << i) != 0 {
                    applied[*u] = Some(true);
                    progress = true;
                } else if never & (1 << i) != 0 {
                    applied[*u] = Some(false);
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
    if let Some(u) = applied.iter().position(Option::is_none) {
        return Err(format!("outcome of {:?} stays ambiguous", unknown[u]));
    }
    // Recheck the whole solution independently of how it was found.
    let mut expected: Vec<i128> = genesis.iter().map(|g| i128::from(*g)).collect();
    for (s, apply) in log
        .iter()
        .map(|s| (s, s.outcome == Outcome::Committed))
        .chain(
            unknown
                .iter()
                .zip(&applied)
                .map(|(s, a)| (*s, a.expect("resolved above"))),
        )
    {
        if apply {
            expected[s.from.0 as usize] -= i128::from(s.amount);
            expected[s.to.0 as usize] += i128::from(s.amount);
        }
    }
    for (account, (e, b)) in expected.iter().zip(balances).enumerate() {
        if *e != i128::from(*b) {
            return Err(format!("account {account}: expected {e}, found {b}"));
        }
    }
    Ok(applied.iter().filter(|a| **a == Some(true)).count())
}
