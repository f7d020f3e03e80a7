//! What a cluster checks before a transaction goes anywhere: the limits a
//! transaction is held to ([`Transaction::check_limits`]), its signature
//! ([`auth::verify`]), and, when the cluster bounds it, how many of its
//! sender's transactions are in flight.

use dashmap::DashMap;

use parashard_protocols::auth;
use parashard_protocols::model::{AccountId, Limit, Transaction, TxError};

/// Counts each sender's transactions in flight, up to a bound
/// ([`crate::ClusterBuilder::max_in_flight_per_sender`]).
#[derive(Debug)]
pub(crate) struct SenderLimit {
    max: usize,
    counts: DashMap<AccountId, usize>,
}

impl SenderLimit {
    pub(crate) fn new(max: usize) -> SenderLimit {
        SenderLimit {
            max,
            counts: DashMap::new(),
        }
    }

    /// Counts one more transaction of `sender`, unless it has `max` in
    /// flight already.
    fn take(&self, sender: AccountId) -> Result<(), TxError> {
        let mut count = self.counts.entry(sender).or_insert(0);
        if *count >= self.max {
            return Err(TxError::TooLarge {
                what: Limit::SenderInFlight,
                size: *count as u64 + 1,
                max: self.max as u64,
            });
        }
        *count += 1;
        Ok(())
    }

    fn give_back(&self, sender: AccountId) {
        if let Some(mut count) = self.counts.get_mut(&sender) {
            *count -= 1;
        }
        self.counts.remove_if(&sender, |_, count| *count == 0);
    }
}

/// The senders a batch counted against their limit; counted until the
/// guard drops, when the batch's call returns (or is cancelled).
pub(crate) struct Counted<'a> {
    limit: Option<&'a SenderLimit>,
    senders: Vec<AccountId>,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if let Some(limit) = self.limit {
            for &sender in &self.senders {
                limit.give_back(sender);
            }
        }
    }
}

/// Why each of `txs` is refused before it goes anywhere, by position:
/// empty if none is, otherwise one entry per transaction (`None`:
/// admitted). The first failed check is the answer: limits, then the
/// signature, then the sender's transactions in flight, which only
/// admitted transactions count.
pub(crate) fn admit<'a>(
    chain_id: u64,
    txs: &[Transaction],
    limit: Option<&'a SenderLimit>,
) -> (Vec<Option<TxError>>, Counted<'a>) {
    let mut refused: Vec<Option<TxError>> = Vec::new();
    let refuse = |refused: &mut Vec<Option<TxError>>, position: usize, error| {
        refused.resize(txs.len(), None);
        refused[position].get_or_insert(error);
    };
    for (position, tx) in txs.iter().enumerate() {
        if let Err(error) = tx.check_limits() {
            refuse(&mut refused, position, error);
        }
    }
    for (position, error) in auth::verify(chain_id, txs) {
        refuse(&mut refused, position, error);
    }
    let mut counted = Counted {
        limit,
        senders: Vec::new(),
    };
    if let Some(limit) = limit {
        for (position, tx) in txs.iter().enumerate() {
            if refused.get(position).is_some_and(Option::is_some) {
                continue;
            }
            match limit.take(tx.sender) {
                Ok(()) => counted.senders.push(tx.sender),
                Err(error) => refuse(&mut refused, position, error),
            }
        }
    }
    (refused, counted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parashard_protocols::model::TxId;

    fn transfer(id: u128, from: u64) -> Transaction {
        Transaction::transfer(TxId::from_u128(id), AccountId(from), AccountId(99), 1)
    }

    /// A sender's transactions beyond the bound are refused, naming it;
    /// other senders are not held back, and the count is given back when
    /// the batch's guard drops.
    #[test]
    fn senders_are_counted_until_their_batch_returns() {
        let limit = SenderLimit::new(2);
        let batch = [
            transfer(1, 1),
            transfer(2, 1),
            transfer(3, 1),
            transfer(4, 2),
        ];
        let (refused, counted) = admit(0, &batch, Some(&limit));
        let expected = TxError::TooLarge {
            what: Limit::SenderInFlight,
            size: 3,
            max: 2,
        };
        assert_eq!(refused, vec![None, None, Some(expected.clone()), None]);
        let (again, second) = admit(0, &[transfer(5, 1)], Some(&limit));
        assert_eq!(again, vec![Some(expected)]);
        drop((counted, second));
        assert!(limit.counts.is_empty(), "{:?}", limit.counts);
        let (after, _counted) = admit(0, &[transfer(6, 1)], Some(&limit));
        assert!(after.is_empty(), "{after:?}");
    }

    /// A transaction over a static limit is refused before it is counted.
    #[test]
    fn limits_come_before_counting() {
        let limit = SenderLimit::new(1);
        let greedy = transfer(1, 1).with_gas_limit(u64::MAX);
        let (refused, _counted) = admit(0, &[greedy, transfer(2, 1)], Some(&limit));
        assert!(
            matches!(
                refused[0],
                Some(TxError::TooLarge {
                    what: Limit::Gas,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(refused[1], None);
    }
}
