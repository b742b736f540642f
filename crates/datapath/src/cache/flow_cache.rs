//! [`FlowCache`]: one datapath thread's cache, the EMC in front of the classifier.
//!
//! # Thread-safety
//! A `FlowCache` belongs to exactly one datapath thread, which calls [`FlowCache::lookup`]
//! per packet and [`FlowCache::drain`] (or [`FlowCache::apply`]) between batches; all
//! methods take `&mut self`, so the per-packet path takes no lock and makes no
//! allocation (the EMC is a fixed array; the classifier only allocates when an op adds a
//! flow). Writers never touch a `FlowCache`: the slow-path handlers and the revalidator
//! go through the [`FlowTable`](super::FlowTable), which sends [`FlowOp`]s into each
//! datapath thread's bounded queue. Between a deletion in the table and its `Del` being
//! drained, the entry is already marked dead, so neither tier returns it.

use super::{Classifier, ExactMatchCache, FlowEntry, key_hash};
use crate::flow::FlowKey;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

/// A change to a datapath thread's cache, sent by the [`FlowTable`](super::FlowTable).
///
/// `Del` carries the entry rather than its [`FlowId`](crate::FlowId): the datapath finds
/// it through its mask and key, so it needs no id index (which would cost another
/// 10–20 bytes per flow and per thread).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FlowOp {
    /// Install (or replace the entry with the same megaflow).
    Put(Arc<FlowEntry>),
    /// Remove this entry (a no-op if the cache does not hold it).
    Del(Arc<FlowEntry>),
    /// Remove everything.
    Flush,
}

/// Sizing of a [`FlowCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// EMC slots (rounded up to a power of two); 0 disables the EMC.
    pub emc_entries: usize,
    /// Insert into the EMC on one megaflow hit in this many (at least 1). Above 1, a
    /// short flow rarely enters the EMC, so many flows do not thrash it (OVS's
    /// `emc-insert-inv-prob`, applied by a counter rather than a random draw).
    pub emc_insert_every: u32,
}

impl Default for CacheConfig {
    /// 8192 EMC slots, as in Open vSwitch (about 1.2 MB).
    fn default() -> Self {
        Self {
            emc_entries: 8192,
            emc_insert_every: 1,
        }
    }
}

impl CacheConfig {
    /// A configuration with `emc_entries` EMC slots.
    pub fn with_emc_entries(emc_entries: usize) -> Self {
        Self {
            emc_entries,
            ..Self::default()
        }
    }

    /// This configuration, inserting into the EMC on one megaflow hit in `n`.
    pub fn emc_insert_every(self, n: u32) -> Self {
        Self {
            emc_insert_every: n.max(1),
            ..self
        }
    }
}

/// Lookup counters of a [`FlowCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheCounters {
    /// Hits in the exact-match cache.
    pub emc_hits: u64,
    /// Misses in the EMC that hit a megaflow.
    pub megaflow_hits: u64,
    /// Misses in both tiers (upcalls).
    pub misses: u64,
}

/// One datapath thread's flow cache: exact-match cache, then megaflow classifier.
#[derive(Debug)]
pub struct FlowCache {
    emc: Option<ExactMatchCache>,
    classifier: Classifier,
    counters: CacheCounters,
    emc_insert_every: u32,
    emc_insert_countdown: u32,
}

impl Default for FlowCache {
    fn default() -> Self {
        Self::new(CacheConfig::default())
    }
}

impl FlowCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        Self {
            emc: (config.emc_entries > 0).then(|| ExactMatchCache::new(config.emc_entries)),
            classifier: Classifier::new(),
            counters: CacheCounters::default(),
            emc_insert_every: config.emc_insert_every.max(1),
            emc_insert_countdown: 1,
        }
    }

    /// The flow matching a packet's key: EMC first, then the megaflow subtables (and on
    /// a megaflow hit the EMC learns the key). `None` is a miss: upcall.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> Option<&Arc<FlowEntry>> {
        let hash = if self.emc.is_some() { key_hash(key) } else { 0 };
        self.lookup_hashed(key, hash)
    }

    /// [`Self::lookup`] with the key's [`key_hash`] computed by the caller (e.g. for a
    /// whole batch first).
    #[inline]
    pub fn lookup_hashed(&mut self, key: &FlowKey, hash: u64) -> Option<&Arc<FlowEntry>> {
        if let Some(emc) = &mut self.emc
            && let Some(slot) = emc.find(key, hash)
        {
            self.counters.emc_hits += 1;
            return self.emc.as_ref().and_then(|emc| emc.get(slot));
        }
        match self.classifier.lookup(key) {
            Some(entry) => {
                self.counters.megaflow_hits += 1;
                self.emc_insert_countdown = self.emc_insert_countdown.saturating_sub(1);
                if self.emc_insert_countdown == 0 {
                    self.emc_insert_countdown = self.emc_insert_every;
                    if let Some(emc) = &mut self.emc {
                        emc.insert(key, hash, entry);
                    }
                }
                Some(entry)
            }
            None => {
                self.counters.misses += 1;
                None
            }
        }
    }

    /// Applies one change.
    pub fn apply(&mut self, op: FlowOp) {
        match op {
            FlowOp::Put(entry) => {
                self.insert(entry);
            }
            FlowOp::Del(entry) => {
                self.remove(&entry);
            }
            FlowOp::Flush => self.clear(),
        }
    }

    /// Applies up to `max` pending ops from `queue` without blocking; returns how many.
    /// Call it between batches.
    pub fn drain(&mut self, queue: &Receiver<FlowOp>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match queue.try_recv() {
                Ok(op) => {
                    self.apply(op);
                    n += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        n
    }

    /// Installs an entry (replacing one with the same megaflow, which is returned).
    pub fn insert(&mut self, entry: Arc<FlowEntry>) -> Option<Arc<FlowEntry>> {
        let new = Arc::as_ptr(&entry);
        let old = self.classifier.insert(entry);
        if let Some(old) = &old
            && !std::ptr::eq(Arc::as_ptr(old), new)
        {
            // The EMC may still point at the replaced entry: retire it.
            old.kill();
        }
        old
    }

    /// Removes an entry and marks it dead (so the EMC drops it on its next visit).
    pub fn remove(&mut self, entry: &FlowEntry) -> Option<Arc<FlowEntry>> {
        entry.kill();
        self.classifier.remove(entry)
    }

    /// Removes everything, EMC included.
    pub fn clear(&mut self) {
        self.classifier.clear();
        if let Some(emc) = &mut self.emc {
            emc.clear();
        }
    }

    /// Number of megaflows.
    pub fn len(&self) -> usize {
        self.classifier.len()
    }

    /// Whether there is no megaflow.
    pub fn is_empty(&self) -> bool {
        self.classifier.is_empty()
    }

    /// Every megaflow.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<FlowEntry>> + '_ {
        self.classifier.iter()
    }

    /// The megaflow tier (subtable order and sizes, heap use).
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The megaflow tier, mutably (e.g. to [`Classifier::resort`] on a timer).
    pub fn classifier_mut(&mut self) -> &mut Classifier {
        &mut self.classifier
    }

    /// The exact-match tier, if enabled.
    pub fn emc(&self) -> Option<&ExactMatchCache> {
        self.emc.as_ref()
    }

    /// Lookup counters since creation.
    pub fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// Bytes of heap held by this cache's own structures (EMC array, subtables), not
    /// counting the shared entries.
    pub fn heap_bytes(&self) -> usize {
        self.emc.as_ref().map_or(0, ExactMatchCache::heap_bytes) + self.classifier.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowMask;
    use crate::{Actions, FlowId};

    fn port_entry(id: u64, port: u32) -> Arc<FlowEntry> {
        let key = FlowKey {
            in_port: port,
            ..FlowKey::default()
        };
        let mask = FlowMask(FlowKey {
            in_port: u32::MAX,
            ..FlowKey::default()
        });
        Arc::new(FlowEntry::new(
            FlowId(id),
            &key,
            Arc::new(mask),
            Actions::drop(),
            0,
        ))
    }

    fn pkt(port: u32, sport: u16) -> FlowKey {
        FlowKey {
            in_port: port,
            tp_src: sport,
            ..FlowKey::default()
        }
    }

    #[test]
    fn emc_learns_from_megaflow_hits() {
        let mut c = FlowCache::default();
        c.apply(FlowOp::Put(port_entry(1, 3)));
        assert!(c.lookup(&pkt(3, 1)).is_some());
        assert!(c.lookup(&pkt(3, 1)).is_some());
        assert!(c.lookup(&pkt(3, 2)).is_some());
        assert!(c.lookup(&pkt(4, 1)).is_none());
        assert_eq!(
            c.counters(),
            CacheCounters {
                emc_hits: 1,
                megaflow_hits: 2,
                misses: 1
            }
        );
        assert_eq!(c.emc().map(|e| e.occupied()), Some(2));
    }

    #[test]
    fn emc_insertion_can_be_sparse() {
        let mut c = FlowCache::new(CacheConfig::default().emc_insert_every(4));
        c.apply(FlowOp::Put(port_entry(1, 3)));
        for sport in 0..8 {
            assert!(c.lookup(&pkt(3, sport)).is_some());
        }
        assert_eq!(c.emc().map(|e| e.occupied()), Some(2));
    }

    #[test]
    fn delete_invalidates_emc() {
        let mut c = FlowCache::default();
        let e = port_entry(1, 3);
        c.apply(FlowOp::Put(Arc::clone(&e)));
        assert!(c.lookup(&pkt(3, 1)).is_some());
        c.apply(FlowOp::Del(Arc::clone(&e)));
        assert!(c.lookup(&pkt(3, 1)).is_none());
        assert_eq!(c.counters().emc_hits, 0);
        assert!(c.is_empty());
    }

    #[test]
    fn replace_invalidates_emc() {
        let mut c = FlowCache::default();
        c.apply(FlowOp::Put(port_entry(1, 3)));
        assert_eq!(c.lookup(&pkt(3, 1)).map(|e| e.id()), Some(FlowId(1)));
        c.apply(FlowOp::Put(port_entry(2, 3)));
        assert_eq!(c.lookup(&pkt(3, 1)).map(|e| e.id()), Some(FlowId(2)));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn flush_and_disabled_emc() {
        let mut c = FlowCache::new(CacheConfig::with_emc_entries(0));
        assert!(c.emc().is_none());
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(FlowOp::Put(port_entry(1, 3))).unwrap();
        tx.send(FlowOp::Put(port_entry(2, 4))).unwrap();
        assert_eq!(c.drain(&rx, 8), 2);
        assert!(c.lookup(&pkt(3, 1)).is_some());
        assert_eq!(c.iter().count(), 2);
        tx.send(FlowOp::Flush).unwrap();
        drop(tx);
        assert_eq!(c.drain(&rx, 8), 1);
        assert!(c.lookup(&pkt(3, 1)).is_none());
        assert_eq!(c.counters().emc_hits, 0);
    }
}
