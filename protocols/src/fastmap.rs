//! Hash maps for the per-transaction bookkeeping of 2PC and batching.
//!
//! Transaction ids and keys are hashed on every message; the standard
//! library's SipHash costs more than the rest of such a lookup. foldhash is
//! several times faster and, seeded per process, still keeps
//! client-chosen ids from being aimed at one bucket.

use std::hash::BuildHasher;

use crate::model::TxId;

/// How many ids ahead callers fetch what they will look up at random in a
/// large id table (an [`IdMap`], the commit memory, the coordinator's
/// in-flight records): enough to cover a memory access, few enough to stay
/// in the L1 cache.
pub const PREFETCH_AHEAD: usize = 8;

/// A `HashMap` with foldhash's per-process random seed.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with foldhash's per-process random seed.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A map from transaction ids to small values whose lookups can be fetched
/// ahead: for maps of many ids (every transaction waiting in a batch or a
/// queue) touched at random, one cache miss each. A caller that knows the
/// next ids it will look up calls [`IdMap::prefetch`] a few ids ahead, and
/// the misses overlap instead of stalling one after another; the standard
/// map has no such call.
///
/// Open addressing with linear probing, at most half full, backward-shift
/// deletion (no tombstones); grows by doubling and never shrinks, like the
/// standard map.
#[derive(Clone)]
pub struct IdMap<V> {
    buckets: Vec<Option<(TxId, V)>>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl<V> Default for IdMap<V> {
    fn default() -> IdMap<V> {
        IdMap {
            buckets: Vec::new(),
            len: 0,
            hasher: Default::default(),
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for IdMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.buckets.iter().flatten().map(|(id, v)| (id, v)))
            .finish()
    }
}

impl<V> IdMap<V> {
    /// The number of ids in the map.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, id: &TxId) -> usize {
        self.hasher.hash_one(id) as usize & (self.buckets.len() - 1)
    }

    /// The bucket holding `id`, if present.
    fn find(&self, id: &TxId) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut at = self.home(id);
        loop {
            match &self.buckets[at] {
                None => return None,
                Some((held, _)) if held == id => return Some(at),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    /// Starts loading the bucket where a lookup of `id` begins.
    #[inline]
    pub fn prefetch(&self, id: &TxId) {
        if !self.buckets.is_empty() {
            crate::state::prefetch(&self.buckets[self.home(id)]);
        }
    }

    /// Whether `id` is in the map.
    pub fn contains_key(&self, id: &TxId) -> bool {
        self.find(id).is_some()
    }

    /// The value of `id`, if present.
    pub fn get(&self, id: &TxId) -> Option<&V> {
        let at = self.find(id)?;
        self.buckets[at].as_ref().map(|(_, value)| value)
    }

    /// Sets the value of `id`; returns the one it replaces, if any.
    pub fn insert(&mut self, id: TxId, value: V) -> Option<V> {
        if let Some(at) = self.find(&id) {
            let (_, held) = self.buckets[at].as_mut().expect("found");
            return Some(std::mem::replace(held, value));
        }
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        self.place(id, value);
        self.len += 1;
        None
    }

    /// Removes `id`; returns its value, if it was present.
    pub fn remove(&mut self, id: &TxId) -> Option<V> {
        let mut hole = self.find(id)?;
        let (_, value) = self.buckets[hole].take().expect("found");
        self.len -= 1;
        // Shift back the entries after the hole that may fill it, so that
        // every probe still reaches its key before an empty bucket.
        let mask = self.buckets.len() - 1;
        let mut next = (hole + 1) & mask;
        while let Some((held, _)) = &self.buckets[next] {
            if !stays_after_removal(hole, self.home(held), next) {
                self.buckets[hole] = self.buckets[next].take();
                hole = next;
            }
            next = (next + 1) & mask;
        }
        Some(value)
    }

    /// Puts `id`, known to be absent, in the first free bucket from its
    /// home on.
    fn place(&mut self, id: TxId, value: V) {
        let mask = self.buckets.len() - 1;
        let mut at = self.home(&id);
        while self.buckets[at].is_some() {
            at = (at + 1) & mask;
        }
        self.buckets[at] = Some((id, value));
    }

    fn grow(&mut self) {
        let size = (self.buckets.len() * 2).max(16);
        let old = std::mem::replace(&mut self.buckets, (0..size).map(|_| None).collect());
        for (id, value) in old.into_iter().flatten() {
            self.place(id, value);
        }
    }
}

/// For backward-shift deletion from a linear-probing table: whether the
/// entry at `next`, whose home bucket is `home`, stays where it is when the
/// bucket `hole` (before `next` on the probe path, cyclically) empties. It
/// stays if its home lies cyclically in `(hole, next]`: moved into the hole
/// it would sit before its home, where no probe for it starts.
pub(crate) fn stays_after_removal(hole: usize, home: usize, next: usize) -> bool {
    if hole < next {
        hole < home && home <= next
    } else {
        hole < home || home <= next
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::workload::Rng;

    /// Proves the map agrees with the standard one through long random
    /// runs over few ids (so that probes collide, wrap around the table's
    /// end and shift back on removal) and through growth. The seed is in
    /// the failure.
    #[test]
    fn matches_the_standard_map_under_random_churn() {
        for seed in 0..200u64 {
            let mut rng = Rng::new(seed);
            let ids = if seed % 4 == 0 {
                2_000
            } else {
                1 + rng.below(60)
            };
            let mut map: IdMap<u64> = IdMap::default();
            let mut model: HashMap<TxId, u64> = HashMap::new();
            for step in 0..3_000 {
                let id = TxId::from_u128(u128::from(rng.below(ids)));
                match rng.below(4) {
                    0 | 1 => {
                        let value = rng.below(1_000);
                        assert_eq!(
                            map.insert(id, value),
                            model.insert(id, value),
                            "seed {seed} step {step}"
                        );
                    }
                    2 => assert_eq!(
                        map.remove(&id),
                        model.remove(&id),
                        "seed {seed} step {step}"
                    ),
                    _ => {
                        map.prefetch(&id);
                        assert_eq!(map.get(&id), model.get(&id), "seed {seed} step {step}");
                        assert_eq!(map.contains_key(&id), model.contains_key(&id));
                    }
                }
                assert_eq!(map.len(), model.len(), "seed {seed} step {step}");
            }
            let mut held: Vec<_> = map.buckets.iter().flatten().copied().collect();
            let mut expected: Vec<_> = model.into_iter().collect();
            held.sort();
            expected.sort();
            assert_eq!(held, expected, "seed {seed}: final contents");
        }
    }
}
