//! A shard's state: a map from [`Key`] to [`Value`] built for the executors.
//!
//! The map is split into [`PARTITIONS`] open-addressing tables with linear
//! probing. Each slot holds its key, its value, a `flags` word and the
//! parallel executor's `stamp` in 32 bytes, so a lookup usually costs one
//! cache line. The layout serves the parallel executor, whose workers share
//! the state during a block:
//! - every word of a slot is atomic, so workers read and update values
//!   through `&State`. The executor's dependency order (release/acquire on
//!   per-transaction progress) makes every update of a key happen-before the
//!   next access to it; the atomics themselves are relaxed and cost plain
//!   loads and stores;
//! - keys are inserted while other threads read the table
//!   (`Partition::insert_shared`): an inserter claims an empty slot by
//!   compare-and-swap on its flags word (`PENDING`), writes the key, then
//!   publishes it (`OCCUPIED`, release). Readers skip pending slots. Tables
//!   do not grow during a round of the executor: inserters count down the
//!   room a partition has left, and the executor grows a table between
//!   rounds;
//! - the executor inserts every key a block declares, whether or not it
//!   gets a value: a key held without one reads as absent, and the next
//!   growth of its table drops it.
//!
//! Within a round keys are never removed, so a probe that reaches an empty
//! slot proves the key absent, even while other keys are being inserted.

use std::collections::BTreeMap;
use std::sync::atomic::{
    AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::model::{AccountId, AssetId, Key, Value};

/// How many partitions the state is split into (a power of two).
pub const PARTITIONS: usize = 64;
const PARTITION_SHIFT: u32 = 64 - PARTITIONS.trailing_zeros();

/// The slot holds a key.
const OCCUPIED: u32 = 1 << 31;
/// The key has a value (a key can be held without one: it reads as absent).
const LIVE: u32 = 1 << 30;
/// An inserter has claimed the slot and is writing the key.
const PENDING: u32 = 1 << 29;

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

/// Asks the CPU to start loading the cache line that holds `*value`.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    let address: *const T = value;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never dereferences its operand (no
    // fault even for a bad address), and SSE is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Asks the CPU to start loading the `len` bytes from `*value` on, one
/// cache line at a time.
#[inline]
pub(crate) fn prefetch_bytes<T>(value: &T, len: usize) {
    let start: *const u8 = (value as *const T).cast();
    for offset in (0..len).step_by(64) {
        // SAFETY: `start + offset` stays inside the `len` bytes of `*value`
        // (the callers pass its size), so the pointer arithmetic is in
        // bounds; the prefetch itself never dereferences.
        prefetch(unsafe { &*start.add(offset) });
    }
}

/// Asks the CPU to start loading the cache line that holds `*value` for
/// writing: a line another core wrote last comes over exclusively, so the
/// write that follows does not have to claim it again.
#[inline]
pub(crate) fn prefetch_for_write<T>(value: &T) {
    let address: *const T = value;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint that never faults; processors without it
    // execute it as a no-op.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) address, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The partition that holds a key with hash `h`.
#[inline]
pub(crate) fn partition_of(h: u64) -> usize {
    (h >> PARTITION_SHIFT) as usize
}

/// One key's slot.
#[repr(C, align(32))]
pub(crate) struct Slot {
    account: AtomicU64,
    slot: AtomicU64,
    value: AtomicU64,
    flags: AtomicU32,
    /// The parallel executor's note of the last transaction that declared
    /// the key (see [`Slot::restamp`]); meaningless to anyone else.
    stamp: AtomicU32,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            account: AtomicU64::new(0),
            slot: AtomicU64::new(0),
            value: AtomicU64::new(0),
            flags: AtomicU32::new(0),
            stamp: AtomicU32::new(0),
        }
    }

    /// A slot outside any table, holding `value` (`None`: absent), for
    /// running one transaction against values given to it.
    pub(crate) fn detached(value: Option<Value>) -> Slot {
        let slot = Slot::empty();
        if let Some(value) = value {
            slot.store(value);
        }
        slot
    }

    /// Whether the slot holds `key`. Call only on a published slot (its
    /// flags loaded with acquire and `OCCUPIED`).
    #[inline]
    fn is(&self, key: &Key) -> bool {
        self.account.load(Relaxed) == key.account.0 && self.slot.load(Relaxed) == key.slot
    }

    fn key(&self) -> Key {
        Key {
            account: AccountId(self.account.load(Relaxed)),
            slot: self.slot.load(Relaxed),
        }
    }

    /// The value, if the key is live.
    #[inline]
    pub(crate) fn load(&self) -> Option<Value> {
        if self.flags.load(Relaxed) & LIVE != 0 {
            Some(self.value.load(Relaxed))
        } else {
            None
        }
    }

    /// Sets the value and makes the key live. The caller has exclusive
    /// access to this key (see the module docs), and nobody else writes the
    /// flags of a published slot, so a load and a store suffice.
    #[inline]
    pub(crate) fn store(&self, value: Value) {
        self.value.store(value, Relaxed);
        let flags = self.flags.load(Relaxed);
        if flags & LIVE == 0 {
            self.flags.store(flags | LIVE, Relaxed);
        }
    }

    /// Replaces the stamp and returns the one before. Only the parallel
    /// executor's claim chain calls this, one claimer at a time (the chain
    /// orders them), so a load and a store suffice. The stamp is a word of
    /// its own: a transaction that sets `LIVE` meanwhile is not disturbed.
    #[inline]
    pub(crate) fn restamp(&self, stamp: u32) -> u32 {
        let before = self.stamp.load(Relaxed);
        self.stamp.store(stamp, Relaxed);
        before
    }
}

/// One open-addressing table.
pub(crate) struct Partition {
    slots: Box<[Slot]>,
    /// Slots holding a key (pending ones included).
    occupied: AtomicUsize,
}

impl Partition {
    fn with_capacity(capacity: usize) -> Partition {
        let capacity = capacity.max(MIN_CAPACITY).next_power_of_two();
        Partition {
            slots: (0..capacity).map(|_| Slot::empty()).collect(),
            occupied: AtomicUsize::new(0),
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
            let flags = slot.flags.load(Acquire);
            if flags == 0 {
                return None;
            }
            if flags & OCCUPIED != 0 && slot.is(key) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The index of `key`'s slot, inserting it (without a value) if it is
    /// missing. May grow the table.
    pub(crate) fn find_or_insert(&mut self, key: &Key, h: u64) -> usize {
        if let Some(i) = self.find(key, h) {
            return i;
        }
        self.reserve(1);
        let mask = self.mask();
        let mut i = h as usize & mask;
        while *self.slots[i].flags.get_mut() != 0 {
            i = (i + 1) & mask;
        }
        let slot = &mut self.slots[i];
        *slot.account.get_mut() = key.account.0;
        *slot.slot.get_mut() = key.slot;
        *slot.value.get_mut() = 0;
        *slot.flags.get_mut() = OCCUPIED;
        *self.occupied.get_mut() += 1;
        i
    }

    /// Inserts `key` (known to be missing) without a value, while other
    /// threads read the table and insert other keys; see the module docs.
    /// The caller has reserved room, so the table does not grow.
    pub(crate) fn insert_shared(&self, key: &Key, h: u64) -> usize {
        let mask = self.mask();
        let mut i = h as usize & mask;
        for _ in 0..self.slots.len() {
            let slot = &self.slots[i];
            let claimed = slot
                .flags
                .compare_exchange(0, PENDING, Relaxed, Relaxed)
                .is_ok();
            if claimed {
                slot.account.store(key.account.0, Relaxed);
                slot.slot.store(key.slot, Relaxed);
                slot.value.store(0, Relaxed);
                slot.flags.store(OCCUPIED, Release);
                let occupied = self.occupied.fetch_add(1, Relaxed) + 1;
                debug_assert!(occupied * 8 <= self.slots.len() * 7, "room was reserved");
                return i;
            }
            debug_assert!(
                !(slot.flags.load(Acquire) & OCCUPIED != 0 && slot.is(key)),
                "insert_shared of a present key"
            );
            i = (i + 1) & mask;
        }
        panic!("partition full: the executor reserves room before a block");
    }

    /// Grows the table so that `additional` more keys fit without another
    /// resize: slot indices handed out afterwards stay valid until then.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let occupied = *self.occupied.get_mut();
        let needed = occupied + additional;
        if needed * 4 <= self.slots.len() * 3 {
            return;
        }
        self.grow_to((needed * 4).div_ceil(3) * 2);
    }

    /// Moves every live key into a table of at least `capacity` slots.
    /// Keys held without a value (the parallel executor inserts the keys a
    /// block declares before it knows whether they get one) are dropped
    /// here, so they cost memory only until the table next grows.
    fn grow_to(&mut self, capacity: usize) {
        let mut occupied = 0;
        let mut grown = Partition::with_capacity(capacity);
        for slot in self.slots.iter_mut() {
            let flags = *slot.flags.get_mut();
            if flags & LIVE == 0 {
                continue;
            }
            occupied += 1;
            let key = slot.key();
            let mask = grown.mask();
            let mut i = hash(&key) as usize & mask;
            while *grown.slots[i].flags.get_mut() != 0 {
                i = (i + 1) & mask;
            }
            grown.slots[i] = Slot {
                account: AtomicU64::new(key.account.0),
                slot: AtomicU64::new(key.slot),
                value: AtomicU64::new(*slot.value.get_mut()),
                flags: AtomicU32::new(flags),
                stamp: AtomicU32::new(0),
            };
        }
        *grown.occupied.get_mut() = occupied;
        *self = grown;
    }

    /// How many more keys [`Partition::insert_shared`] may insert. A round
    /// of the parallel executor may fill the table up to 7/8 (probes still
    /// end at an empty slot); the next `reserve` restores the usual load.
    pub(crate) fn room(&self) -> usize {
        (self.slots.len() / 8 * 7).saturating_sub(self.occupied.load(Relaxed))
    }

    /// Grows the table, if need be, so that [`Partition::room`] is at least
    /// `additional`. It at least doubles when it grows, so that a block
    /// that creates many keys needs few rounds; growing only when needed
    /// keeps small states in cache.
    pub(crate) fn make_room(&mut self, additional: usize) {
        if self.room() < additional {
            let needed = *self.occupied.get_mut() + additional;
            self.grow_to((needed * 8).div_ceil(7).max(2 * self.slots.len()));
        }
    }

    /// The number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Asks the CPU to start loading the line where a probe for a key with
    /// hash `h` begins. Lookups in a large state are cache misses; issuing
    /// them a few transactions ahead lets them overlap.
    #[inline]
    pub(crate) fn prefetch(&self, h: u64) {
        prefetch(&self.slots[h as usize & self.mask()]);
    }

    /// [`Partition::prefetch`] for a slot about to be written.
    #[inline]
    pub(crate) fn prefetch_for_write(&self, h: u64) {
        prefetch_for_write(&self.slots[h as usize & self.mask()]);
    }

    #[inline]
    pub(crate) fn slot(&self, index: usize) -> &Slot {
        &self.slots[index]
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
    /// The accounts here that hold a public key ([`crate::auth`]): a small
    /// index beside the tables, so that a block's unsigned senders are
    /// checked against it in cache rather than with a look-up each in the
    /// tables. Keys are never removed, so it only grows.
    keyed: Keyed,
}

/// The accounts that hold a public key, with a one-hash filter in front:
/// most senders of most blocks hold none, and the filter, a few bits per
/// account that does, answers them from the L1 or L2 cache.
#[derive(Default)]
struct Keyed {
    accounts: crate::fastmap::FastMap<AccountId, ()>,
    /// Bit `hash(account) % len` is set for every keyed account; at
    /// least [`Keyed::BITS_PER_ACCOUNT`] bits per account.
    filter: Vec<u64>,
}

impl Keyed {
    const BITS_PER_ACCOUNT: usize = 32;

    fn bit(&self, account: AccountId) -> (usize, u64) {
        let h = account.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
        // The filter's length is a power of two.
        let i = h & (self.filter.len() as u64 * 64 - 1);
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn insert(&mut self, account: AccountId) {
        if self.accounts.insert(account, ()).is_some() {
            return;
        }
        if self.filter.len() * 64 < self.accounts.len() * Self::BITS_PER_ACCOUNT {
            let words = (self.accounts.len() * Self::BITS_PER_ACCOUNT * 2).div_ceil(64);
            self.filter = vec![0; words.next_power_of_two()];
            let accounts: Vec<AccountId> = self.accounts.keys().copied().collect();
            for account in accounts {
                let (word, mask) = self.bit(account);
                self.filter[word] |= mask;
            }
        } else {
            let (word, mask) = self.bit(account);
            self.filter[word] |= mask;
        }
    }

    #[inline]
    fn contains(&self, account: AccountId) -> bool {
        if self.filter.is_empty() {
            return false;
        }
        let (word, mask) = self.bit(account);
        self.filter[word] & mask != 0 && self.accounts.contains_key(&account)
    }
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
            keyed: Default::default(),
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
        if key == Key::sequence(key.account) && value & crate::auth::HAS_KEY != 0 {
            self.keyed.insert(key.account);
        }
        let h = hash(&key);
        let partition = &mut self.partitions[partition_of(h)];
        let index = partition.find_or_insert(&key, h);
        partition.slot(index).store(value);
    }

    /// Whether `account` holds a public key.
    #[inline]
    pub fn holds_public_key(&self, account: AccountId) -> bool {
        self.keyed.contains(account)
    }

    /// Whether any account here holds a public key.
    #[inline]
    pub fn any_public_keys(&self) -> bool {
        !self.keyed.accounts.is_empty()
    }

    /// Records that `account` now holds a public key: the executors call
    /// this for each committed `SetPublicKey`, whose writes they store in
    /// place rather than through [`State::set`].
    pub(crate) fn note_public_key(&mut self, account: AccountId) {
        self.keyed.insert(account);
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

    #[inline]
    pub(crate) fn slot(&self, key: &Key) -> Option<&Slot> {
        self.slot_hashed(key, hash(key))
    }

    /// [`State::slot`] for a key whose hash `h` is already known.
    #[inline]
    pub(crate) fn slot_hashed(&self, key: &Key, h: u64) -> Option<&Slot> {
        debug_assert_eq!(h, hash(key));
        let partition = &self.partitions[partition_of(h)];
        partition.find(key, h).map(|i| partition.slot(i))
    }

    /// Inserts `key`, known to be missing, while other threads share the
    /// state; see [`Partition::insert_shared`].
    pub(crate) fn insert_shared(&self, key: &Key, h: u64) -> &Slot {
        debug_assert_eq!(h, hash(key));
        let partition = &self.partitions[partition_of(h)];
        partition.slot(partition.insert_shared(key, h))
    }

    /// Starts loading the slot of a key with hash `h` into cache; see
    /// [`Partition::prefetch`].
    #[inline]
    pub(crate) fn prefetch_hashed(&self, h: u64) {
        self.partitions[partition_of(h)].prefetch(h);
    }

    /// [`State::prefetch_hashed`] for a key about to be written.
    #[inline]
    pub(crate) fn prefetch_hashed_for_write(&self, h: u64) {
        self.partitions[partition_of(h)].prefetch_for_write(h);
    }

    pub(crate) fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    pub(crate) fn partitions_mut(&mut self) -> &mut [Partition] {
        &mut self.partitions
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

    /// Keys inserted through `insert_shared` by several threads at once,
    /// while those threads also look up keys, all end up findable with the
    /// values written through their slots, and no slot is handed out twice.
    #[test]
    fn shared_inserts_from_several_threads() {
        let mut state = State::new();
        let per_thread = 5_000u64;
        for p in state.partitions_mut() {
            p.reserve(2 * per_thread as usize);
        }
        let state = &state;
        std::thread::scope(|scope| {
            for t in 0..2u64 {
                scope.spawn(move || {
                    for i in 0..per_thread {
                        let k = key(t * 1_000_000 + i, 0);
                        let h = hash(&k);
                        let partition = &state.partitions()[partition_of(h)];
                        assert_eq!(partition.find(&k, h), None, "{k} not inserted yet");
                        let index = partition.insert_shared(&k, h);
                        partition.slot(index).store(t * 10 + i);
                        assert_eq!(partition.find(&k, h), Some(index), "{k} findable");
                    }
                });
            }
        });
        assert_eq!(state.len(), 2 * per_thread as usize);
        for t in 0..2u64 {
            for i in 0..per_thread {
                assert_eq!(state.get(&key(t * 1_000_000 + i, 0)), Some(t * 10 + i));
            }
        }
    }

    /// Keys inserted without a value (as the parallel executor does for
    /// every declared key it does not find) take room only until the table
    /// grows: growth drops them and keeps every live key.
    #[test]
    fn growth_drops_keys_without_values() {
        let mut state = State::new();
        let live = key(1, 0);
        state.set(live, 10);
        let h = hash(&live);
        let p = partition_of(h);
        let partition = &mut state.partitions_mut()[p];
        let room = partition.room();
        let dead: Vec<Key> = (2..)
            .map(|a| key(a, 0))
            .filter(|k| partition_of(hash(k)) == p)
            .take(room)
            .collect();
        for k in &dead {
            partition.insert_shared(k, hash(k));
        }
        assert_eq!(partition.room(), 0);
        partition.make_room(1);
        assert!(partition.room() >= 1);
        for k in &dead {
            assert_eq!(partition.find(k, hash(k)), None, "{k} dropped");
        }
        assert_eq!(state.get(&live), Some(10));
        assert_eq!(state.len(), 1);
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
