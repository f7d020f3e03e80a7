//! A shard's state: a map from [`Key`] to [`Value`] built for the executors.
//!
//! The map is split into [`PARTITIONS`] open-addressing tables with linear
//! probing. Each slot holds its key, its value and a `meta` word in 32 bytes,
//! so a lookup usually costs one cache line. The layout serves the parallel
//! executor:
//! - partitions let workers insert keys into disjoint tables at once, each
//!   holding `&mut` to its own partitions (no locks, no `unsafe`);
//! - a slot's value is an atomic word, so once the tables stop changing
//!   workers share them read-only and still update values. The executor's
//!   dependency order (release/acquire on per-transaction flags) makes every
//!   such update happen-before the next access to the same key; the atomics
//!   themselves are relaxed and cost plain loads and stores;
//! - the meta word carries, besides occupancy and liveness, the index of the
//!   last transaction of the current block that declared the key. That turns
//!   dependency analysis into one lookup per key, in the very table the
//!   transaction will later read.
//!
//! Keys are never removed from a table: a key that was looked up for a block
//! but never written stays as a dead slot and reads as absent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::model::{AssetId, Key, Value};

/// How many partitions the state is split into (a power of two).
pub const PARTITIONS: usize = 64;
const PARTITION_SHIFT: u32 = 64 - PARTITIONS.trailing_zeros();

const OCCUPIED: u64 = 1 << 63;
const LIVE: u64 = 1 << 62;
const EPOCH_SHIFT: u32 = 32;
/// Epochs use 30 bits; tags are cleared when the counter wraps.
pub(crate) const EPOCH_MAX: u32 = (1 << 30) - 1;
const EPOCH_MASK: u64 = EPOCH_MAX as u64;
const INDEX_MASK: u64 = u32::MAX as u64;

const MIN_CAPACITY: usize = 16;

/// The hash of a key: a splitmix64 finaliser over both words. The top bits
/// choose the partition, the low bits the slot.
#[inline]
pub(crate) fn hash(key: &Key) -> u64 {
    let mut x = key.account.0 ^ key.slot.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The partition that holds a key with hash `h`.
#[inline]
pub(crate) fn partition_of(h: u64) -> usize {
    (h >> PARTITION_SHIFT) as usize
}

/// One key's slot.
#[repr(C, align(32))]
pub(crate) struct Slot {
    account: u64,
    slot: u64,
    value: AtomicU64,
    meta: AtomicU64,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            account: 0,
            slot: 0,
            value: AtomicU64::new(0),
            meta: AtomicU64::new(0),
        }
    }

    #[inline]
    fn is(&self, key: &Key) -> bool {
        self.account == key.account.0 && self.slot == key.slot
    }

    fn key(&self) -> Key {
        Key {
            account: crate::model::AccountId(self.account),
            slot: self.slot,
        }
    }

    /// The value, if the key is live.
    #[inline]
    pub(crate) fn load(&self) -> Option<Value> {
        if self.meta.load(Relaxed) & LIVE != 0 {
            Some(self.value.load(Relaxed))
        } else {
            None
        }
    }

    /// Sets the value and makes the key live. The caller has exclusive
    /// access to this key (see the module docs), so a load and a store of
    /// the meta word suffice.
    #[inline]
    pub(crate) fn store(&self, value: Value) {
        self.value.store(value, Relaxed);
        let meta = self.meta.load(Relaxed);
        if meta & LIVE == 0 {
            self.meta.store(meta | LIVE, Relaxed);
        }
    }

    /// Records that transaction `index` of block `epoch` declared this key,
    /// and returns the previous declarer in the same block, if any.
    #[inline]
    fn tag(&mut self, epoch: u32, index: u32) -> Option<u32> {
        let meta = self.meta.get_mut();
        let previous = ((*meta >> EPOCH_SHIFT) & EPOCH_MASK == u64::from(epoch))
            .then_some((*meta & INDEX_MASK) as u32);
        *meta = (*meta & (OCCUPIED | LIVE)) | (u64::from(epoch) << EPOCH_SHIFT) | u64::from(index);
        previous
    }
}

/// One open-addressing table.
pub(crate) struct Partition {
    slots: Box<[Slot]>,
    occupied: usize,
}

impl Partition {
    fn with_capacity(capacity: usize) -> Partition {
        let capacity = capacity.max(MIN_CAPACITY).next_power_of_two();
        Partition {
            slots: (0..capacity).map(|_| Slot::empty()).collect(),
            occupied: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The index of `key`'s slot, if the table holds it.
    #[inline]
    pub(crate) fn find(&self, key: &Key, h: u64) -> Option<usize> {
        let mask = self.mask();
        let mut i = h as usize & mask;
        // The load factor stays below 3/4, so an empty slot ends every probe.
        loop {
            let slot = &self.slots[i];
            if slot.meta.load(Relaxed) & OCCUPIED == 0 {
                return None;
            }
            if slot.is(key) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The index of `key`'s slot, inserting a dead slot if it is missing.
    pub(crate) fn find_or_insert(&mut self, key: &Key, h: u64) -> usize {
        if let Some(i) = self.find(key, h) {
            return i;
        }
        self.reserve(1);
        let mask = self.mask();
        let mut i = h as usize & mask;
        while self.slots[i].meta.load(Relaxed) & OCCUPIED != 0 {
            i = (i + 1) & mask;
        }
        let slot = &mut self.slots[i];
        slot.account = key.account.0;
        slot.slot = key.slot;
        *slot.value.get_mut() = 0;
        *slot.meta.get_mut() = OCCUPIED;
        self.occupied += 1;
        i
    }

    /// Grows the table so that `additional` more keys fit without another
    /// resize: slot indices handed out afterwards stay valid until then.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let needed = self.occupied + additional;
        if needed * 4 <= self.slots.len() * 3 {
            return;
        }
        let mut grown = Partition::with_capacity((needed * 4).div_ceil(3) * 2);
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.meta.load(Relaxed) & OCCUPIED != 0)
        {
            let key = slot.key();
            let mask = grown.mask();
            let mut i = hash(&key) as usize & mask;
            while *grown.slots[i].meta.get_mut() & OCCUPIED != 0 {
                i = (i + 1) & mask;
            }
            grown.slots[i] = Slot {
                account: slot.account,
                slot: slot.slot,
                value: AtomicU64::new(*slot.value.get_mut()),
                meta: AtomicU64::new(*slot.meta.get_mut()),
            };
        }
        grown.occupied = self.occupied;
        *self = grown;
    }

    /// Asks the CPU to start loading the line where a probe for a key with
    /// hash `h` begins. Lookups in a large state are cache misses; issuing
    /// them a few transactions ahead lets them overlap.
    #[inline]
    pub(crate) fn prefetch(&self, h: u64) {
        self.prefetch_slot(h as usize & self.mask());
    }

    /// Asks the CPU to start loading slot `index`.
    #[inline]
    pub(crate) fn prefetch_slot(&self, index: usize) {
        let slot: *const Slot = &self.slots[index];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint that never dereferences its operand
        // (no fault even for a bad address), and SSE is part of the x86_64
        // baseline.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(slot.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    #[inline]
    pub(crate) fn slot(&self, index: usize) -> &Slot {
        &self.slots[index]
    }

    /// Tags slot `index` for transaction `tx` of block `epoch`; see [`Slot`].
    #[inline]
    pub(crate) fn tag(&mut self, index: usize, epoch: u32, tx: u32) -> Option<u32> {
        self.slots[index].tag(epoch, tx)
    }

    fn clear_tags(&mut self) {
        for slot in self.slots.iter_mut() {
            let meta = slot.meta.get_mut();
            *meta &= OCCUPIED | LIVE;
        }
    }

    fn live(&self) -> impl Iterator<Item = (Key, Value)> + '_ {
        self.slots
            .iter()
            .filter_map(|slot| slot.load().map(|value| (slot.key(), value)))
    }
}

/// A shard's state. See the module documentation for its layout.
pub struct State {
    partitions: Box<[Partition]>,
    epoch: u32,
}

impl Default for State {
    fn default() -> State {
        State::new()
    }
}

impl State {
    /// An empty state.
    pub fn new() -> State {
        State::with_capacity(0)
    }

    /// An empty state sized for about `keys` keys.
    pub fn with_capacity(keys: usize) -> State {
        let per_partition = keys.div_ceil(PARTITIONS);
        State {
            partitions: (0..PARTITIONS)
                .map(|_| Partition::with_capacity((per_partition * 4).div_ceil(3)))
                .collect(),
            epoch: 0,
        }
    }

    /// The value of `key`, if it is live.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.slot(key).and_then(Slot::load)
    }

    /// Sets `key` to `value` directly, outside any transaction (genesis,
    /// recovery, tests).
    pub fn set(&mut self, key: Key, value: Value) {
        let h = hash(&key);
        let partition = &mut self.partitions[partition_of(h)];
        let index = partition.find_or_insert(&key, h);
        partition.slot(index).store(value);
    }

    /// Every live key with its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Key, Value)> + '_ {
        self.partitions.iter().flat_map(Partition::live)
    }

    /// The number of live keys.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Every live key with its value, ordered: for comparisons and snapshots.
    pub fn to_map(&self) -> BTreeMap<Key, Value> {
        self.iter().collect()
    }

    /// The sum of every balance of `asset`: what conservation checks.
    pub fn total(&self, asset: AssetId) -> u128 {
        self.iter()
            .filter(|(key, _)| key.asset() == Some(asset))
            .map(|(_, value)| u128::from(value))
            .sum()
    }

    /// Starts loading `key`'s slot into cache; see [`Partition::prefetch`].
    #[inline]
    pub(crate) fn prefetch(&self, key: &Key) {
        let h = hash(key);
        self.partitions[partition_of(h)].prefetch(h);
    }

    #[inline]
    pub(crate) fn slot(&self, key: &Key) -> Option<&Slot> {
        let h = hash(key);
        let partition = &self.partitions[partition_of(h)];
        partition.find(key, h).map(|i| partition.slot(i))
    }

    pub(crate) fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    pub(crate) fn partitions_mut(&mut self) -> &mut [Partition] {
        &mut self.partitions
    }

    /// The epoch of the last block tagged.
    #[cfg(test)]
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Moves the epoch counter, so that tests reach the wrap of the 30-bit
    /// epoch without running a billion blocks.
    #[cfg(test)]
    pub(crate) fn set_epoch(&mut self, epoch: u32) {
        assert!(epoch <= EPOCH_MAX, "epoch {epoch} over {EPOCH_MAX}");
        self.epoch = epoch;
    }

    /// Starts a new block for dependency tagging and returns its epoch.
    pub(crate) fn next_epoch(&mut self) -> u32 {
        if self.epoch == EPOCH_MAX {
            self.partitions.iter_mut().for_each(Partition::clear_tags);
            self.epoch = 0;
        }
        self.epoch += 1;
        self.epoch
    }
}

impl Clone for State {
    fn clone(&self) -> State {
        let mut copy = State::with_capacity(self.len());
        for (key, value) in self.iter() {
            copy.set(key, value);
        }
        copy
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.to_map()).finish()
    }
}

impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        self.to_map() == other.to_map()
    }
}

impl Eq for State {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;

    fn key(account: u64, slot: u64) -> Key {
        Key {
            account: AccountId(account),
            slot,
        }
    }

    /// The table agrees with a BTreeMap model through inserts, overwrites
    /// and many resizes.
    #[test]
    fn matches_btreemap_model() {
        let mut state = State::new();
        let mut model = BTreeMap::new();
        for i in 0..50_000u64 {
            let k = key(i % 7_919, i % 3);
            state.set(k, i);
            model.insert(k, i);
        }
        assert_eq!(state.to_map(), model);
        for (k, v) in &model {
            assert_eq!(state.get(k), Some(*v), "{k}");
        }
        assert_eq!(state.get(&key(1_000_000, 0)), None);
    }

    /// A key inserted for dependency tracking but never written reads as
    /// absent and is not listed.
    #[test]
    fn dead_slots_read_as_absent() {
        let mut state = State::new();
        let k = key(5, 0);
        let h = hash(&k);
        let p = partition_of(h);
        let i = state.partitions_mut()[p].find_or_insert(&k, h);
        assert_eq!(state.get(&k), None);
        assert!(state.is_empty());
        state.partitions()[p].slot(i).store(9);
        assert_eq!(state.get(&k), Some(9));
    }

    /// Tags name the previous declarer within one epoch only.
    #[test]
    fn tags_track_previous_declarer_per_epoch() {
        let mut state = State::new();
        let k = key(1, 0);
        let h = hash(&k);
        let p = partition_of(h);
        let e1 = state.next_epoch();
        let part = &mut state.partitions_mut()[p];
        let i = part.find_or_insert(&k, h);
        assert_eq!(part.tag(i, e1, 0), None);
        assert_eq!(part.tag(i, e1, 7), Some(0));
        let e2 = state.next_epoch();
        assert_eq!(state.partitions_mut()[p].tag(i, e2, 3), None);
    }

    /// Clones are deep and equal.
    #[test]
    fn clone_is_deep() {
        let mut a = State::new();
        a.set(key(1, 0), 10);
        let b = a.clone();
        a.set(key(1, 0), 11);
        assert_eq!(b.get(&key(1, 0)), Some(10));
        assert_ne!(a, b);
    }
}
