//! Tier 1: the exact-match cache (EMC).
//!
//! A fixed, power-of-two array of slots indexed by the low bits of [`key_hash`] of the
//! packet's *whole* key. A slot holds the hash, the full key and the megaflow entry that
//! key matched; a lookup is one hash compare, one 128-byte key compare and one check of
//! the entry's `dead` flag. Direct-mapped: a colliding insert simply replaces the slot.
//! The array is allocated once at construction; lookups and inserts never allocate.
//!
//! Invalidation: a slot holds an `Arc<FlowEntry>`, and a deleted flow is marked dead
//! ([`FlowEntry::is_dead`]) by whoever deletes it, so a lookup that lands on a dead entry
//! misses (and clears the slot). This costs nothing on delete (no EMC scan), at the price
//! of a deleted entry's memory living until its last slot is overwritten; replacing such
//! a slot may free the entry on the packet path (a free, never an allocation).
//!
//! # Thread-safety
//! The EMC is owned by one datapath thread inside a [`FlowCache`](super::FlowCache)
//! (`&mut self` everywhere): there is no lock and no shared mutable state besides the
//! entries' own atomics. Other threads only influence it through the `dead` flag of
//! entries and the [`FlowOp`](super::FlowOp)s its owner applies.
//!
//! [`key_hash`]: super::key_hash

use super::FlowEntry;
use crate::flow::FlowKey;
use std::sync::Arc;

#[derive(Default)]
struct Slot {
    entry: Option<Arc<FlowEntry>>,
    hash: u64,
    key: FlowKey,
}

/// The exact-match cache.
pub struct ExactMatchCache {
    slots: Box<[Slot]>,
    index_mask: usize,
}

impl std::fmt::Debug for ExactMatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactMatchCache")
            .field("capacity", &self.capacity())
            .field("occupied", &self.occupied())
            .finish()
    }
}

impl ExactMatchCache {
    /// An EMC with `capacity` slots, rounded up to a power of two (at least 1). A
    /// capacity of 0 gives a one-slot cache; use [`CacheConfig::emc_entries`] = 0 to
    /// disable the tier instead.
    ///
    /// [`CacheConfig::emc_entries`]: super::CacheConfig::emc_entries
    pub fn new(capacity: usize) -> Self {
        let n = capacity
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(1 << 20);
        let slots: Box<[Slot]> = (0..n).map(|_| Slot::default()).collect();
        Self {
            index_mask: n - 1,
            slots,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of slots holding a live entry (a scan: for statistics, not per packet).
    pub fn occupied(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.entry.as_ref().is_some_and(|e| !e.is_dead()))
            .count()
    }

    /// The entry cached for exactly `key`, whose [`key_hash`](super::key_hash) is `hash`.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, hash: u64) -> Option<&Arc<FlowEntry>> {
        let slot = self.find(key, hash)?;
        self.get(slot)
    }

    /// The slot caching a live entry for exactly `key`, if any. A slot found holding a
    /// dead entry is emptied.
    #[inline]
    pub(crate) fn find(&mut self, key: &FlowKey, hash: u64) -> Option<usize> {
        let index = hash as usize & self.index_mask;
        let slot = self.slots.get_mut(index)?;
        let entry = slot.entry.as_ref()?;
        if entry.is_dead() {
            slot.entry = None;
            return None;
        }
        (slot.hash == hash && slot.key.words() == key.words()).then_some(index)
    }

    /// The entry in a slot returned by [`Self::find`].
    #[inline]
    pub(crate) fn get(&self, slot: usize) -> Option<&Arc<FlowEntry>> {
        self.slots.get(slot)?.entry.as_ref()
    }

    /// Caches `entry` for exactly `key`, replacing whatever the slot held.
    #[inline]
    pub fn insert(&mut self, key: &FlowKey, hash: u64, entry: &Arc<FlowEntry>) {
        if let Some(slot) = self.slots.get_mut(hash as usize & self.index_mask) {
            slot.hash = hash;
            slot.key = *key;
            slot.entry = Some(Arc::clone(entry));
        }
    }

    /// Empties every slot.
    pub fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            s.entry = None;
        }
    }

    /// Bytes of heap this cache holds (its slot array).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key_hash;
    use crate::flow::FlowMask;
    use crate::{Actions, FlowId};

    fn entry(port: u32) -> Arc<FlowEntry> {
        let key = FlowKey {
            in_port: port,
            ..FlowKey::default()
        };
        let mask = FlowMask(FlowKey {
            in_port: u32::MAX,
            ..FlowKey::default()
        });
        Arc::new(FlowEntry::new(
            FlowId(u64::from(port)),
            &key,
            Arc::new(mask),
            Actions::drop(),
            0,
        ))
    }

    #[test]
    fn hit_miss_and_dead_invalidation() {
        let mut emc = ExactMatchCache::new(100);
        assert_eq!(emc.capacity(), 128);
        let e = entry(1);
        let key = FlowKey {
            in_port: 1,
            tp_src: 7,
            ..FlowKey::default()
        };
        let h = key_hash(&key);
        assert!(emc.lookup(&key, h).is_none());
        emc.insert(&key, h, &e);
        assert_eq!(emc.lookup(&key, h).map(|e| e.id()), Some(FlowId(1)));
        assert_eq!(emc.occupied(), 1);

        let mut other = key;
        other.tp_src = 8;
        assert!(emc.lookup(&other, key_hash(&other)).is_none());
        // Same slot, same hash, different key: the key compare catches it.
        assert!(emc.lookup(&other, h).is_none());

        e.kill();
        assert!(emc.lookup(&key, h).is_none());
        assert_eq!(emc.occupied(), 0);
        assert_eq!(
            Arc::strong_count(&e),
            1,
            "the dead slot released its reference"
        );
    }

    #[test]
    fn colliding_insert_replaces() {
        let mut emc = ExactMatchCache::new(1);
        let (a, b) = (entry(1), entry(2));
        let (mut ka, mut kb) = (FlowKey::default(), FlowKey::default());
        ka.in_port = 1;
        kb.in_port = 2;
        emc.insert(&ka, key_hash(&ka), &a);
        emc.insert(&kb, key_hash(&kb), &b);
        assert!(emc.lookup(&ka, key_hash(&ka)).is_none());
        assert!(emc.lookup(&kb, key_hash(&kb)).is_some());
        emc.clear();
        assert!(emc.lookup(&kb, key_hash(&kb)).is_none());
    }
}
