//! Tier 2: the megaflow classifier, by tuple-space search.
//!
//! One *subtable* per distinct mask. A subtable owns its mask (`Arc<FlowMask>`, shared
//! with its entries), the list of the mask's non-zero words, and a SwissTable
//! (`hashbrown::HashTable<Arc<FlowEntry>>`, 8 bytes a bucket plus one control byte) of
//! the entries, hashed over those words of their masked key. A lookup visits the
//! subtables in order; in each it masks and hashes only the non-zero words of the packet
//! key, probes, and compares those words. Megaflows do not overlap (the
//! [`FlowTable`](super::FlowTable) enforces it), so the first match is the match.
//!
//! Order: each subtable counts its hits; every [`RESORT_INTERVAL`] lookups (or on
//! [`Classifier::resort`]) the subtables are sorted by hits, most first, and the counts
//! halved so the order follows the recent traffic. The sort is in place
//! (`sort_unstable_by_key`), so it does not allocate either. New subtables start last.
//!
//! # Thread-safety
//! A classifier is owned by one datapath thread (inside a [`FlowCache`](super::FlowCache))
//! and every method takes `&self` or `&mut self`: no locks, no atomics except the
//! entries' own. Its content changes only when its owner applies a
//! [`FlowOp`](super::FlowOp) between batches; other threads see its entries through
//! their `Arc`s. Lookups skip entries marked dead, so a deletion is visible before the
//! owner drains it.

use super::FlowEntry;
use super::hash::MaskWords;
use crate::flow::{FlowKey, FlowMask, KEY_WORDS};
use hashbrown::HashTable;
use std::sync::Arc;

/// Lookups between two automatic re-sorts of the subtables.
pub const RESORT_INTERVAL: u32 = 1 << 16;

struct Subtable {
    words: MaskWords,
    mask: Arc<FlowMask>,
    table: HashTable<Arc<FlowEntry>>,
    hits: u64,
}

impl Subtable {
    fn new(mask: Arc<FlowMask>) -> Self {
        Self {
            words: MaskWords::new(&mask),
            mask,
            table: HashTable::new(),
            hits: 0,
        }
    }

    fn has_mask(&self, mask: &Arc<FlowMask>) -> bool {
        Arc::ptr_eq(&self.mask, mask) || *self.mask == **mask
    }
}

/// Information about one subtable, for statistics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubtableInfo<'a> {
    /// The subtable's mask.
    pub mask: &'a FlowMask,
    /// Number of flows.
    pub flows: usize,
    /// Hits since the last re-sort (halved at each re-sort).
    pub hits: u64,
}

/// The megaflow classifier.
pub struct Classifier {
    subtables: Vec<Subtable>,
    flows: usize,
    until_resort: u32,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("subtables", &self.subtables.len())
            .field("flows", &self.flows)
            .finish()
    }
}

impl Classifier {
    /// An empty classifier.
    pub fn new() -> Self {
        Self {
            subtables: Vec::new(),
            flows: 0,
            until_resort: RESORT_INTERVAL,
        }
    }

    /// The live flow matching a packet's key, if any.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> Option<&Arc<FlowEntry>> {
        self.until_resort = self.until_resort.saturating_sub(1);
        if self.until_resort == 0 {
            self.resort();
        }
        let mut masked = [0u64; KEY_WORDS];
        for st in self.subtables.iter_mut() {
            let hash = st.words.hash_masked(key, &mut masked);
            let words = &st.words;
            let found = st
                .table
                .find(hash, |e| words.matches(&masked, e.key()) && !e.is_dead());
            if let Some(e) = found {
                st.hits += 1;
                return Some(e);
            }
        }
        None
    }

    /// Sorts the subtables by hits (most first) and halves the hit counts.
    pub fn resort(&mut self) {
        self.until_resort = RESORT_INTERVAL;
        self.subtables
            .sort_unstable_by_key(|s| std::cmp::Reverse(s.hits));
        for st in &mut self.subtables {
            st.hits /= 2;
        }
    }

    /// Inserts an entry, in the subtable of its mask. An entry with the same masked key
    /// and mask is replaced, and returned.
    pub fn insert(&mut self, entry: Arc<FlowEntry>) -> Option<Arc<FlowEntry>> {
        let pos = match self.subtables.iter().position(|s| s.has_mask(entry.mask())) {
            Some(pos) => pos,
            None => {
                self.subtables.push(Subtable::new(Arc::clone(entry.mask())));
                self.subtables.len() - 1
            }
        };
        let st = self.subtables.get_mut(pos)?;
        let words = &st.words;
        let mut masked = [0u64; KEY_WORDS];
        let hash = words.hash_masked(entry.key(), &mut masked);
        let old = match st.table.find_mut(hash, |e| words.matches(&masked, e.key())) {
            Some(slot) => Some(std::mem::replace(slot, entry)),
            None => {
                st.table
                    .insert_unique(hash, entry, |e| words.hash_key(e.key()));
                None
            }
        };
        if old.is_none() {
            self.flows += 1;
        }
        old
    }

    /// Removes the entry with `entry`'s id (found through its mask and key). Returns it,
    /// or `None` when the classifier does not hold it (e.g. it was replaced).
    pub fn remove(&mut self, entry: &FlowEntry) -> Option<Arc<FlowEntry>> {
        let pos = self
            .subtables
            .iter()
            .position(|s| s.has_mask(entry.mask()))?;
        let st = self.subtables.get_mut(pos)?;
        let hash = st.words.hash_key(entry.key());
        let id = entry.id();
        let (removed, _) = st.table.find_entry(hash, |e| e.id() == id).ok()?.remove();
        self.flows -= 1;
        if st.table.is_empty() {
            // `remove`, not `swap_remove`: keep the others' order.
            self.subtables.remove(pos);
        }
        Some(removed)
    }

    /// Removes every entry and subtable.
    pub fn clear(&mut self) {
        self.subtables.clear();
        self.flows = 0;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.flows
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.flows == 0
    }

    /// Every entry, subtable by subtable in lookup order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<FlowEntry>> + '_ {
        self.subtables.iter().flat_map(|s| s.table.iter())
    }

    /// The subtables, in lookup order.
    pub fn subtables(&self) -> impl Iterator<Item = SubtableInfo<'_>> + '_ {
        self.subtables.iter().map(|s| SubtableInfo {
            mask: &s.mask,
            flows: s.table.len(),
            hits: s.hits,
        })
    }

    /// Bytes of heap the classifier itself holds (subtable vector and hash tables, not
    /// the entries, which are shared).
    pub fn heap_bytes(&self) -> usize {
        self.subtables.capacity() * std::mem::size_of::<Subtable>()
            + self
                .subtables
                .iter()
                .map(|s| s.table.allocation_size())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Megaflow;
    use crate::{Action, Actions, FlowId, PortId};
    use proptest::prelude::*;

    fn entry(id: u64, key: &FlowKey, mask: &Arc<FlowMask>) -> Arc<FlowEntry> {
        let actions = Actions::new(vec![Action::Output(PortId(id as u32))]);
        Arc::new(FlowEntry::new(
            FlowId(id),
            key,
            Arc::clone(mask),
            actions,
            0,
        ))
    }

    fn port_mask() -> Arc<FlowMask> {
        let m = FlowMask(FlowKey {
            in_port: u32::MAX,
            ..FlowKey::default()
        });
        Arc::new(m)
    }

    fn dst_mask() -> Arc<FlowMask> {
        let m = FlowMask(FlowKey {
            eth_type: 0xffff,
            ip_dst: [0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..FlowKey::default()
        });
        Arc::new(m)
    }

    #[test]
    fn insert_lookup_remove() {
        let mut c = Classifier::new();
        let (pm, dm) = (port_mask(), dst_mask());
        let k = FlowKey {
            in_port: 4,
            ..FlowKey::default()
        };
        let a = entry(1, &k, &pm);
        let k2 = FlowKey {
            eth_type: 0x0800,
            ip_dst: [10, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..FlowKey::default()
        };
        let b = entry(2, &k2, &dm);
        assert!(c.insert(Arc::clone(&a)).is_none());
        assert!(c.insert(Arc::clone(&b)).is_none());
        assert_eq!(c.len(), 2);
        assert_eq!(c.subtables().count(), 2);

        let mut pkt = FlowKey {
            in_port: 4,
            tp_dst: 22,
            ..FlowKey::default()
        };
        assert_eq!(c.lookup(&pkt).map(|e| e.id()), Some(FlowId(1)));
        pkt.in_port = 5;
        assert!(c.lookup(&pkt).is_none());
        pkt.eth_type = 0x0800;
        pkt.ip_dst = [10, 0, 1, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(c.lookup(&pkt).map(|e| e.id()), Some(FlowId(2)));

        // Replacing an entry with the same megaflow keeps one flow.
        let b2 = entry(3, &k2, &dm);
        assert_eq!(c.insert(b2).map(|e| e.id()), Some(FlowId(2)));
        assert_eq!(c.len(), 2);
        // Removing the replaced id is a no-op; the replacement stays.
        assert!(c.remove(&b).is_none());
        assert_eq!(c.lookup(&pkt).map(|e| e.id()), Some(FlowId(3)));

        assert_eq!(c.remove(&a).map(|e| e.id()), Some(FlowId(1)));
        assert_eq!(c.subtables().count(), 1, "empty subtable dropped");
        assert_eq!(c.iter().count(), 1);
        c.clear();
        assert!(c.is_empty());
        assert!(c.lookup(&pkt).is_none());
    }

    #[test]
    fn dead_entries_do_not_match() {
        let mut c = Classifier::new();
        let pm = port_mask();
        let k = FlowKey {
            in_port: 1,
            ..FlowKey::default()
        };
        let a = entry(1, &k, &pm);
        c.insert(Arc::clone(&a));
        assert!(c.lookup(&k).is_some());
        a.kill();
        assert!(c.lookup(&k).is_none());
    }

    #[test]
    fn subtables_sorted_by_hits() {
        let mut c = Classifier::new();
        let (pm, dm) = (port_mask(), dst_mask());
        let k = FlowKey {
            in_port: 1,
            ..FlowKey::default()
        };
        c.insert(entry(1, &k, &pm));
        let mut k2 = FlowKey {
            eth_type: 0x0800,
            ..FlowKey::default()
        };
        k2.in_port = 99; // matches no port flow
        c.insert(entry(2, &k2, &dm));
        let first = |c: &Classifier| c.subtables().next().map(|s| *s.mask);
        assert_eq!(first(&c), Some(*pm));
        for _ in 0..10 {
            assert_eq!(c.lookup(&k2).map(|e| e.id()), Some(FlowId(2)));
        }
        c.lookup(&k);
        c.resort();
        assert_eq!(first(&c), Some(*dm));
        let hits: Vec<u64> = c.subtables().map(|s| s.hits).collect();
        assert_eq!(hits, vec![5, 0]);

        // The automatic re-sort happens every RESORT_INTERVAL lookups.
        for _ in 0..RESORT_INTERVAL {
            c.lookup(&k);
        }
        assert_eq!(first(&c), Some(*pm));
    }

    /// A small universe so that random keys often match random megaflows.
    fn arb_mask() -> impl Strategy<Value = FlowMask> {
        (any::<bool>(), 0u8..3, any::<bool>(), any::<bool>()).prop_map(|(port, dst, ty, tp)| {
            let mut m = FlowMask::default();
            if port {
                m.in_port = u32::MAX;
            }
            let n = usize::from(dst) * 2;
            m.ip_dst[..n].fill(0xff);
            if ty {
                m.eth_type = 0xffff;
            }
            if tp {
                m.tp_dst = 0x00ff;
            }
            m
        })
    }

    fn arb_key() -> impl Strategy<Value = FlowKey> {
        (0u32..3, 0u8..3, 0u8..2, any::<bool>(), 0u16..3).prop_map(|(p, d0, d3, v6, tp)| {
            let mut k = FlowKey {
                in_port: p,
                ..FlowKey::default()
            };
            k.ip_dst[0] = d0;
            k.ip_dst[3] = d3;
            k.eth_type = if v6 { 0x86dd } else { 0x0800 };
            k.tp_dst = tp | 0x100;
            k
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(FlowKey, FlowMask),
        Delete(usize),
        Lookup(FlowKey),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (arb_key(), arb_mask()).prop_map(|(k, m)| Op::Insert(k, m)),
            1 => any::<usize>().prop_map(Op::Delete),
            4 => arb_key().prop_map(Op::Lookup),
        ]
    }

    proptest! {
        /// The classifier agrees with a linear scan over non-overlapping megaflows.
        #[test]
        fn classifier_matches_linear_oracle(ops in prop::collection::vec(arb_op(), 1..200)) {
            let mut cls = Classifier::new();
            let mut oracle: Vec<(Megaflow, Arc<FlowEntry>)> = Vec::new();
            let mut masks: Vec<Arc<FlowMask>> = Vec::new();
            let mut next_id = 0;
            for op in ops {
                match op {
                    Op::Insert(k, m) => {
                        let mf = Megaflow::new(&k, &m);
                        if oracle.iter().any(|(o, _)| o.overlaps(&mf)) {
                            continue;
                        }
                        let mask = match masks.iter().find(|x| ***x == m) {
                            Some(x) => Arc::clone(x),
                            None => { masks.push(Arc::new(m)); Arc::new(m) }
                        };
                        next_id += 1;
                        let e = entry(next_id, &k, &mask);
                        prop_assert!(cls.insert(Arc::clone(&e)).is_none());
                        oracle.push((mf, e));
                    }
                    Op::Delete(i) => {
                        if oracle.is_empty() { continue; }
                        let (_, e) = oracle.remove(i % oracle.len());
                        prop_assert_eq!(cls.remove(&e).map(|x| x.id()), Some(e.id()));
                    }
                    Op::Lookup(k) => {
                        let want = oracle.iter().find(|(mf, _)| mf.matches(&k)).map(|(_, e)| e.id());
                        prop_assert_eq!(cls.lookup(&k).map(|e| e.id()), want);
                    }
                }
                prop_assert_eq!(cls.len(), oracle.len());
                prop_assert_eq!(cls.iter().count(), oracle.len());
                prop_assert!(cls.subtables().all(|s| s.flows > 0));
            }
            for (mf, e) in &oracle {
                prop_assert_eq!(cls.lookup(&mf.key).map(|x| x.id()), Some(e.id()));
            }
        }
    }
}
