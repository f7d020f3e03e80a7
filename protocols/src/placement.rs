//! Key-to-shard placement: by account hash, with explicit overrides.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{AccountId, Key, ShardId};

/// Error building a placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// A cluster needs at least one shard.
    #[error("a cluster needs at least one shard")]
    NoShards,
    /// An explicit placement names a shard that does not exist.
    #[error("{account} placed on {shard}, but there are only {shards} shards")]
    NoSuchShard {
        /// The account.
        account: AccountId,
        /// The shard named.
        shard: ShardId,
        /// The number of shards.
        shards: u32,
    },
}

/// Decides which shard owns each account (and so each key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    shards: u32,
    explicit: HashMap<AccountId, ShardId>,
}

impl Placement {
    /// Hash placement over `shards` shards.
    pub fn hashed(shards: u32) -> Result<Placement, PlacementError> {
        if shards == 0 {
            return Err(PlacementError::NoShards);
        }
        Ok(Placement {
            shards,
            explicit: HashMap::new(),
        })
    }

    /// Places `account` on `shard`, overriding the hash.
    pub fn place(&mut self, account: AccountId, shard: ShardId) -> Result<(), PlacementError> {
        if shard.0 >= self.shards {
            return Err(PlacementError::NoSuchShard {
                account,
                shard,
                shards: self.shards,
            });
        }
        self.explicit.insert(account, shard);
        Ok(())
    }

    /// The explicit placements (overrides of the hash), in no set order.
    pub fn explicit(&self) -> impl Iterator<Item = (AccountId, ShardId)> + '_ {
        self.explicit
            .iter()
            .map(|(account, shard)| (*account, *shard))
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard that owns `account`.
    #[inline]
    pub fn shard_of_account(&self, account: AccountId) -> ShardId {
        if let Some(shard) = self.explicit.get(&account) {
            return *shard;
        }
        let mut x = account.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 32;
        ShardId(((u128::from(x) * u128::from(self.shards)) >> 64) as u32)
    }

    /// The shard that owns `key`.
    #[inline]
    pub fn shard_of(&self, key: &Key) -> ShardId {
        self.shard_of_account(key.account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hash placement spreads accounts over every shard, and explicit
    /// placement overrides it and is checked.
    #[test]
    fn hashed_spreads_and_explicit_overrides() {
        let mut placement = Placement::hashed(4).unwrap();
        let mut counts = [0; 4];
        for a in 0..4000 {
            counts[placement.shard_of_account(AccountId(a)).0 as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        placement.place(AccountId(7), ShardId(3)).unwrap();
        assert_eq!(placement.shard_of_account(AccountId(7)), ShardId(3));
        assert!(matches!(
            placement.place(AccountId(7), ShardId(4)),
            Err(PlacementError::NoSuchShard { .. })
        ));
        assert_eq!(Placement::hashed(0), Err(PlacementError::NoShards));
    }
}
