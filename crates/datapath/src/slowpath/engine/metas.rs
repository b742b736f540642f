//! [`Metas`]: the slow path's [`FlowMeta`] of every installed flow (what revalidation
//! reads), in 8 bytes a flow.
//!
//! Flows share their metadata: every flow NORMAL decided for one source station under
//! one rule carries the same [`FlowMeta`] (the rule, the learned station with its
//! location, the flood network). So each distinct value is kept once, counted by the
//! flows that refer to it ([`Interned`]), and a flow holds its index. A flow's slot is
//! found by its position in the flow table's slab, the low 32 bits of its [`FlowId`]
//! (see [`FlowTable`](crate::cache::FlowTable): the table reuses positions as flows come
//! and go, so the list is as long as the most flows held at once), and holds the id's
//! serial (its high 32 bits) and that index: no hash map slot per flow. The map this
//! replaces (issue 15) held an 8-byte id and the 72-byte value per slot, at a million
//! flows half of its slots empty after a doubling: about 170 bytes a flow.
//!
//! Deleting a flow releases its reference; the last reference frees the value's slot,
//! which the next new value takes.
//!
//! # Thread-safety
//! Plain data; the [`Engine`](super::Engine) keeps it behind a mutex held briefly.

use super::FlowMeta;
use crate::FlowId;
use crate::fastmap::FastHash;
use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash};

/// Values kept once each, with how many holders refer to them, by a `u32` index that
/// stays valid until its last holder releases it.
pub(super) struct Interned<T> {
    slots: Vec<Shared<T>>,
    /// Indices of slots no holder refers to (`refs == 0`).
    free: Vec<u32>,
    /// The live slots' indices, by their values' hashes (4 bytes a bucket).
    index: HashTable<u32>,
    hasher: FastHash,
}

struct Shared<T> {
    value: T,
    /// Holders; 0 for a free slot.
    refs: u32,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: FastHash::default(),
        }
    }
}

impl<T: Copy + Eq + Hash> Interned<T> {
    /// The index of `value`, kept if it was not, with one more holder. `None` only
    /// when `u32::MAX` values are kept already.
    pub fn acquire(&mut self, value: &T) -> Option<u32> {
        let hash = self.hasher.hash_one(value);
        let Self {
            slots,
            free,
            index,
            hasher,
        } = self;
        let live = |i: &u32| slots.get(*i as usize).filter(|s| s.refs > 0);
        if let Some(&i) = index.find(hash, |i| live(i).is_some_and(|s| s.value == *value)) {
            if let Some(s) = slots.get_mut(i as usize) {
                s.refs = s.refs.saturating_add(1);
            }
            return Some(i);
        }
        let shared = Shared {
            value: *value,
            refs: 1,
        };
        let i = match free.pop() {
            Some(i) => {
                *slots.get_mut(i as usize)? = shared;
                i
            }
            None => {
                let i = u32::try_from(slots.len()).ok().filter(|i| *i < u32::MAX)?;
                slots.push(shared);
                i
            }
        };
        index.insert_unique(hash, i, |j| {
            slots
                .get(*j as usize)
                .map_or(0, |s| hasher.hash_one(s.value))
        });
        Some(i)
    }

    /// Drops one holder of `i`; the last one frees its slot.
    pub fn release(&mut self, i: u32) {
        let Some(s) = self.slots.get_mut(i as usize).filter(|s| s.refs > 0) else {
            return;
        };
        s.refs -= 1;
        if s.refs > 0 {
            return;
        }
        let hash = self.hasher.hash_one(s.value);
        if let Ok(e) = self.index.find_entry(hash, |j| *j == i) {
            e.remove();
        }
        if self.index.is_empty() {
            // Nothing is held: give back what a burst of distinct values took.
            self.slots = Vec::new();
            self.free = Vec::new();
        } else {
            self.free.push(i);
        }
    }

    /// The value at `i`, while it has holders.
    pub fn get(&self, i: u32) -> Option<&T> {
        let s = self.slots.get(i as usize)?;
        (s.refs > 0).then_some(&s.value)
    }

    /// How many holders `i` has (0 when free).
    #[cfg(test)]
    pub fn refs(&self, i: u32) -> u32 {
        self.slots.get(i as usize).map_or(0, |s| s.refs)
    }

    /// How many distinct values are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }
}

/// One flow's slot: its id's serial and the index of its metadata, [`VACANT`] for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    serial: u32,
    meta: u32,
}

/// [`Slot::meta`] of a slot without a flow (never an index: at most `u32::MAX` values
/// are interned, indices `0..u32::MAX`).
const VACANT: u32 = u32::MAX;

impl Slot {
    const EMPTY: Slot = Slot {
        serial: 0,
        meta: VACANT,
    };

    fn holds(&self, serial: u32) -> bool {
        self.meta != VACANT && self.serial == serial
    }
}

/// A flow's position in the table's slab and its serial.
fn place(id: FlowId) -> (usize, u32) {
    (id.0 as u32 as usize, (id.0 >> 32) as u32)
}

/// The metadata of every installed flow. See the module docs.
#[derive(Default)]
pub(super) struct Metas {
    /// By slab position.
    flows: Vec<Slot>,
    /// Slots not [`VACANT`].
    len: usize,
    values: Interned<FlowMeta>,
}

impl Metas {
    /// Sets a flow's metadata; whether it had none (a slot left by a flow of the same
    /// position, removed behind the engine's back, is replaced). Should interning fail
    /// (`u32::MAX` distinct values, more than the table's flows), the flow is left
    /// without metadata, as one removed.
    pub fn insert(&mut self, id: FlowId, meta: &FlowMeta) -> bool {
        let (at, serial) = place(id);
        // Taken before the old one is released: the same value is not freed and kept
        // again.
        let Some(meta) = self.values.acquire(meta) else {
            self.remove(id);
            return true;
        };
        if self.flows.len() <= at {
            self.flows.resize(at + 1, Slot::EMPTY);
        }
        let Some(slot) = self.flows.get_mut(at) else {
            self.values.release(meta);
            return true;
        };
        let old = std::mem::replace(slot, Slot { serial, meta });
        if old.meta == VACANT {
            self.len += 1;
        } else {
            self.values.release(old.meta);
        }
        !old.holds(serial)
    }

    /// Forgets a flow's metadata; whether it had some.
    pub fn remove(&mut self, id: FlowId) -> bool {
        let (at, serial) = place(id);
        match self.flows.get_mut(at) {
            Some(slot) if slot.holds(serial) => {
                let meta = slot.meta;
                *slot = Slot::EMPTY;
                self.len -= 1;
                self.values.release(meta);
                true
            }
            _ => false,
        }
    }

    /// The index of a flow's metadata ([`Self::value`]), the same for every flow with
    /// the same metadata while one holds it.
    pub fn index_of(&self, id: FlowId) -> Option<u32> {
        let (at, serial) = place(id);
        self.flows
            .get(at)
            .filter(|s| s.holds(serial))
            .map(|s| s.meta)
    }

    /// The metadata at an index of [`Self::index_of`], while a flow holds it.
    pub fn value(&self, index: u32) -> Option<FlowMeta> {
        self.values.get(index).copied()
    }

    /// A flow's metadata.
    pub fn get(&self, id: FlowId) -> Option<FlowMeta> {
        self.value(self.index_of(id)?)
    }

    /// Flows with metadata.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Distinct values the flows share.
    #[cfg(test)]
    pub fn distinct(&self) -> usize {
        self.values.len()
    }

    /// Keeps the metadata of the flows `keep` says, forgets the others' (and the empty
    /// slots past the last flow kept).
    pub fn retain(&mut self, mut keep: impl FnMut(FlowId) -> bool) {
        for (at, slot) in self.flows.iter_mut().enumerate() {
            if slot.meta == VACANT {
                continue;
            }
            let id = FlowId(u64::from(slot.serial) << 32 | at as u64);
            if !keep(id) {
                self.values.release(slot.meta);
                *slot = Slot::EMPTY;
                self.len -= 1;
            }
        }
        let end = self
            .flows
            .iter()
            .rposition(|s| s.meta != VACANT)
            .map_or(0, |last| last + 1);
        self.flows.truncate(end);
        if self.flows.capacity() > 2 * end {
            self.flows.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortId;
    use crate::slowpath::mac::{Location, Mac};
    use crate::slowpath::network::{Attachment, NetworkId};
    use crate::slowpath::rules::RuleId;
    use crate::slowpath::{LearnRef, RuleRef};

    fn meta(station: u8) -> FlowMeta {
        FlowMeta {
            rule: Some(RuleRef {
                id: RuleId(1),
                priority: 0,
            }),
            learn: Some(LearnRef {
                network: NetworkId(10),
                mac: Mac([2, 0, 0, 0, 0, station]),
                location: Location::Local(Attachment {
                    port: PortId(1),
                    vlan: None,
                }),
            }),
            normal: true,
            flood: Some(NetworkId(10)),
        }
    }

    fn id(serial: u32, at: u32) -> FlowId {
        FlowId(u64::from(serial) << 32 | u64::from(at))
    }

    #[test]
    fn per_flow_state_stays_small() {
        // 8 bytes a flow, against an 80-byte map slot (most of a second one empty).
        assert_eq!(std::mem::size_of::<Slot>(), 8);
        let mut m = Metas::default();
        for at in 0..1000 {
            m.insert(id(at + 1, at), &meta((at % 2) as u8));
        }
        assert_eq!((m.len(), m.distinct()), (1000, 2));
        assert_eq!(m.flows.len(), 1000, "one slot a slab position");
    }

    #[test]
    fn flows_share_a_value_which_the_last_deletion_frees() {
        let mut m = Metas::default();
        let (a, b, c) = (id(1, 0), id(2, 1), id(3, 2));
        assert!(m.insert(a, &meta(1)));
        assert!(m.insert(b, &meta(1)));
        assert!(m.insert(c, &meta(2)));
        let shared = m.index_of(a).unwrap();
        assert_eq!(m.index_of(b), Some(shared));
        assert_eq!(m.values.refs(shared), 2);
        assert_eq!((m.len(), m.distinct()), (3, 2));
        assert_eq!(m.get(b), Some(meta(1)));

        assert!(m.remove(a));
        assert!(!m.remove(a), "already gone");
        assert_eq!(m.values.refs(shared), 1);
        assert_eq!(m.get(a), None);
        assert_eq!(m.get(b), Some(meta(1)));
        assert!(m.remove(b));
        assert_eq!(m.values.refs(shared), 0, "the last holder freed it");
        assert_eq!(m.value(shared), None);
        assert_eq!((m.len(), m.distinct()), (1, 1));

        // The freed slot is taken by the next new value.
        assert!(m.insert(a, &meta(3)));
        assert_eq!(m.index_of(a), Some(shared));
        assert_eq!(m.get(a), Some(meta(3)));

        assert!(m.remove(a) && m.remove(c));
        assert_eq!((m.len(), m.distinct()), (0, 0));
        assert!(m.values.slots.is_empty(), "nothing held, nothing kept");
    }

    #[test]
    fn a_new_flow_at_a_reused_position_replaces_the_old_ones_metadata() {
        let mut m = Metas::default();
        let (old, new) = (id(1, 5), id(9, 5));
        assert!(m.insert(old, &meta(1)));
        assert!(!m.insert(old, &meta(2)), "the same flow: updated, not new");
        assert_eq!(m.get(old), Some(meta(2)));
        assert_eq!(m.distinct(), 1, "meta(1) released");
        // The old flow was removed behind the engine's back; its position is reused.
        assert!(m.insert(new, &meta(3)));
        assert_eq!((m.get(old), m.get(new)), (None, Some(meta(3))));
        assert!(!m.remove(old), "a stale id finds nothing");
        assert_eq!((m.len(), m.distinct()), (1, 1));
    }

    #[test]
    fn retain_forgets_what_is_not_kept_and_the_slots_past_the_last() {
        let mut m = Metas::default();
        for at in 0..100 {
            m.insert(id(7, at), &meta((at % 3) as u8));
        }
        m.retain(|f| (f.0 as u32) < 10 && (f.0 as u32).is_multiple_of(2));
        assert_eq!((m.len(), m.distinct()), (5, 3));
        assert_eq!(m.flows.len(), 9);
        assert_eq!(m.get(id(7, 8)), Some(meta(2)));
        assert_eq!(m.get(id(7, 9)), None);
        m.retain(|_| false);
        assert_eq!((m.len(), m.distinct(), m.flows.len()), (0, 0, 0));
    }

    #[test]
    fn interned_values_come_back_equal_for_any_mix() {
        // A small model check: many holders of few values, released in another order.
        let mut t: Interned<u16> = Interned::default();
        let held: Vec<(u16, u32)> = (0..500u16)
            .map(|k| {
                let v = k.wrapping_mul(37) % 23;
                (v, t.acquire(&v).unwrap())
            })
            .collect();
        assert_eq!(t.len(), 23);
        for (v, i) in &held {
            assert_eq!(t.get(*i), Some(v));
        }
        for (_, i) in held.iter().rev().step_by(2) {
            t.release(*i);
        }
        for (v, i) in held.iter().step_by(2) {
            assert_eq!(t.get(*i), Some(v));
        }
        for (_, i) in held.iter().rev().skip(1).step_by(2) {
            t.release(*i);
        }
        assert_eq!(t.len(), 0);
        assert!(t.get(held[0].1).is_none());
    }
}
