//! [`FlowTable`]: the control plane's registry of every installed megaflow.
//!
//! The table allocates [`FlowId`]s, enforces the flow limit and each ingress port's
//! share of it ([`FlowTable::put_for`]: a port may own at most a quarter of the limit,
//! so that one port's flood of new flows cannot take the table from the others), refuses a megaflow that
//! overlaps an installed one with different actions, and feeds every datapath thread's
//! [`FlowCache`](super::FlowCache) through a bounded queue of [`FlowOp`]s. It is also what
//! the slow path reads: dump ([`FlowTable::snapshot`]), revalidation, LRU eviction
//! candidates, lookup by id.
//!
//! Layout (about 20 bytes a flow on top of the shared `Arc<FlowEntry>`):
//! - a slab `Vec<Option<Arc<FlowEntry>>>` indexed by the low 32 bits of the FlowId (the
//!   high 32 bits are a serial number, so an id is not reused for a long time);
//! - per distinct mask, a group with a `hashbrown::HashTable<u32>` of slab indices, keyed
//!   by the masked key's hash (4 bytes a bucket): exact duplicates and overlaps with
//!   coarser megaflows are found with one probe per group.
//!
//! Overlap check, for a new megaflow `(k, m)` and a group of mask `g`: with
//! `c = m & g`, they overlap when some flow `k'` of the group has `k' & c == k & c`. When
//! `c == g` (the new mask is at least as fine) that is one probe for `k & g`; otherwise
//! the group is scanned (comparing only the words where `c` is non-zero). The scan is
//! the costly case, O(flows of the group), and happens for groups whose mask has bits the
//! new one lacks; slow paths whose megaflows always match the same base fields (in_port,
//! eth_type) with finer masks for finer rules keep it rare.
//!
//! # Thread-safety
//! All state sits behind one `Mutex`, taken by writers (slow-path handlers, revalidator,
//! control socket) and never by datapath threads. Each datapath thread owns a
//! [`Subscription`]: the receiving end of a `sync_channel` of the given capacity, plus the
//! flows installed when it subscribed. Ops are sent while the mutex is held, so every
//! queue sees the table's changes in the table's order. **When a queue is full the writer
//! blocks** (holding the mutex) until that datapath thread drains it between two batches:
//! back-pressure on the slow path, never on packets, and no op is ever lost; a datapath
//! thread must therefore never take this table's lock itself, nor wait for a writer. A
//! queue whose receiver was dropped (its thread exited) is discarded.

use super::hash::MaskWords;
use super::{CacheError, FlowEntry, FlowOp};
use crate::fastmap::FastMap;
use crate::flow::{FlowKey, FlowMask, KEY_WORDS, Megaflow};
use crate::{Actions, FlowId, PortId};
use hashbrown::HashTable;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What a datapath thread gets from [`FlowTable::subscribe`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Subscription {
    /// The ops to apply, in order, after the initial flows.
    pub ops: Receiver<FlowOp>,
    /// The flows installed at the time of subscription.
    pub initial: Vec<Arc<FlowEntry>>,
}

/// The control plane's set of installed megaflows. See the module documentation.
#[derive(Debug)]
pub struct FlowTable {
    inner: Mutex<Inner>,
}

struct Group {
    mask: Arc<FlowMask>,
    words: MaskWords,
    /// Slab indices of the group's flows, hashed by `words` over their keys.
    members: HashTable<u32>,
}

/// A port's share of the flow table: [`FlowTable::port_quota`] is the limit divided by
/// this.
pub const PORT_SHARE_DIVISOR: usize = 4;

/// No owner (a flow put with [`FlowTable::put`]).
const NO_OWNER: u32 = u32::MAX;

/// The flows one ingress port owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortFlowStats {
    /// Flows it owns now.
    pub flows: usize,
    /// Installs refused because it owned its quota.
    pub refused: u64,
}

#[derive(Default)]
struct Inner {
    slab: Vec<Option<Arc<FlowEntry>>>,
    /// The owning port of each slab slot ([`NO_OWNER`] for none).
    owners: Vec<u32>,
    ports: FastMap<u32, PortFlowStats>,
    free: Vec<u32>,
    len: usize,
    limit: usize,
    serial: u32,
    groups: Vec<Group>,
    queues: Vec<SyncSender<FlowOp>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.len)
            .field("limit", &self.limit)
            .field("masks", &self.groups.len())
            .field("queues", &self.queues.len())
            .finish()
    }
}

/// Flows [`FlowTable::snapshot`] copies per hold of the table's lock (a few hundred
/// microseconds).
pub const SNAPSHOT_CHUNK: usize = 4096;

fn slab_entry(slab: &[Option<Arc<FlowEntry>>], index: u32) -> Option<&Arc<FlowEntry>> {
    slab.get(index as usize)?.as_ref()
}

impl FlowTable {
    /// An empty table that holds at most `limit` flows.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                limit,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A writer that panicked cannot leave the table half-updated in a way that
        // matters more than stopping the daemon would: carry on.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a datapath thread: returns its queue (`capacity` ops, at least 1) and
    /// the flows already installed, which it inserts into its cache before draining.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = sync_channel(capacity.max(1));
        let mut inner = self.lock();
        inner.queues.push(tx);
        Subscription {
            ops: rx,
            initial: inner.slab.iter().flatten().cloned().collect(),
        }
    }

    /// Installs a megaflow (its key is masked here) and queues it to every datapath
    /// thread. Installing a megaflow identical to an installed one with the same actions
    /// returns the installed entry (two upcalls raced).
    ///
    /// Errors: [`CacheError::FlowLimit`] when the table is full;
    /// [`CacheError::Overlap`] when some packet would match both this megaflow and an
    /// installed one whose actions differ.
    pub fn put(
        &self,
        megaflow: &Megaflow,
        actions: Actions,
        now: u64,
    ) -> Result<Arc<FlowEntry>, CacheError> {
        self.put_owned(megaflow, actions, now, None)
    }

    /// [`Self::put`] for a flow owned by ingress port `port`, which may own at most
    /// [`Self::port_quota`] flows: beyond it, [`CacheError::PortFlowLimit`] (counted
    /// per port).
    pub fn put_for(
        &self,
        megaflow: &Megaflow,
        actions: Actions,
        now: u64,
        port: PortId,
    ) -> Result<Arc<FlowEntry>, CacheError> {
        self.put_owned(megaflow, actions, now, Some(port))
    }

    fn put_owned(
        &self,
        megaflow: &Megaflow,
        actions: Actions,
        now: u64,
        port: Option<PortId>,
    ) -> Result<Arc<FlowEntry>, CacheError> {
        let mut inner = self.lock();
        let key = megaflow.key.masked(&megaflow.mask);
        if let Some(existing) = inner.check_overlap(&key, &megaflow.mask, &actions)? {
            return Ok(existing);
        }
        if inner.len >= inner.limit {
            return Err(CacheError::FlowLimit { limit: inner.limit });
        }
        let quota = inner.port_quota();
        if let Some(p) = port {
            let st = inner.ports.entry(p.0).or_default();
            if st.flows >= quota {
                st.refused += 1;
                return Err(CacheError::PortFlowLimit {
                    port: p,
                    limit: quota,
                });
            }
        }
        let entry = inner.insert(&key, &megaflow.mask, actions, now)?;
        if let Some(p) = port {
            let index = entry.id().0 as u32 as usize;
            if inner.owners.len() <= index {
                inner.owners.resize(index + 1, NO_OWNER);
            }
            inner.owners[index] = p.0;
            inner.ports.entry(p.0).or_default().flows += 1;
        }
        inner.broadcast(&FlowOp::Put(Arc::clone(&entry)));
        Ok(entry)
    }

    /// The most flows one ingress port may own: a quarter of the limit (at least 1).
    pub fn port_quota(&self) -> usize {
        self.lock().port_quota()
    }

    /// The ingress port that owns a flow, if it was put for one.
    pub fn owner(&self, id: FlowId) -> Option<PortId> {
        let inner = self.lock();
        slab_entry(&inner.slab, id.0 as u32).filter(|e| e.id() == id)?;
        match inner.owners.get(id.0 as u32 as usize) {
            Some(&p) if p != NO_OWNER => Some(PortId(p)),
            _ => None,
        }
    }

    /// Each ingress port's flows and refused installs (ports that had any), by id.
    pub fn port_stats(&self) -> Vec<(PortId, PortFlowStats)> {
        let mut v: Vec<_> = self
            .lock()
            .ports
            .iter()
            .map(|(p, s)| (PortId(*p), *s))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// Deletes a flow: marks it dead, forgets it and queues its deletion to every
    /// datapath thread. Returns it (with its final statistics), or `None` if unknown.
    pub fn remove(&self, id: FlowId) -> Option<Arc<FlowEntry>> {
        let mut inner = self.lock();
        let entry = inner.take(id)?;
        entry.kill();
        inner.broadcast(&FlowOp::Del(Arc::clone(&entry)));
        Some(entry)
    }

    /// Deletes every flow.
    pub fn flush(&self) {
        let mut inner = self.lock();
        for e in inner.slab.iter().flatten() {
            e.kill();
        }
        inner.slab = Vec::new();
        inner.owners = Vec::new();
        inner.free = Vec::new();
        inner.groups = Vec::new();
        inner.len = 0;
        for st in inner.ports.values_mut() {
            st.flows = 0;
        }
        inner.broadcast(&FlowOp::Flush);
    }

    /// The flow with this id.
    pub fn get(&self, id: FlowId) -> Option<Arc<FlowEntry>> {
        let inner = self.lock();
        slab_entry(&inner.slab, id.0 as u32)
            .filter(|e| e.id() == id)
            .cloned()
    }

    /// The flow a packet's key matches (a probe per mask; for the slow path, e.g. to
    /// find that a racing handler already installed the megaflow).
    pub fn lookup(&self, key: &FlowKey) -> Option<Arc<FlowEntry>> {
        let inner = self.lock();
        inner.groups.iter().find_map(|g| {
            let mut masked = [0; KEY_WORDS];
            let hash = g.words.hash_masked(key, &mut masked);
            g.members
                .find(hash, |i| {
                    slab_entry(&inner.slab, *i).is_some_and(|e| g.words.matches(&masked, e.key()))
                })
                .and_then(|i| slab_entry(&inner.slab, *i).cloned())
        })
    }

    /// Every installed flow (for dumps and revalidation), in no particular order. The
    /// table is walked [`SNAPSHOT_CHUNK`] slots per hold of its lock, so that handlers
    /// installing flows meanwhile wait for one chunk, not for a walk of a million flows:
    /// every flow installed for the whole walk is in it once; one installed or deleted
    /// during the walk may or may not be.
    pub fn snapshot(&self) -> Vec<Arc<FlowEntry>> {
        let mut out = Vec::with_capacity(self.len());
        let mut from = Some(0);
        while let Some(f) = from {
            from = self.snapshot_chunk(f, SNAPSHOT_CHUNK, &mut out);
        }
        out
    }

    /// A walk over the table a chunk at a time, without holding its lock between two
    /// chunks (a dump that streams): appends to `out` at most `max` (at least 1) flows
    /// found from slab position `from` on, and returns the position to continue from,
    /// `None` once the walk is over. A flow installed for the whole walk is visited
    /// exactly once (its slab position never moves); one installed or removed meanwhile
    /// may or may not be. Start at 0. The lock is held for one chunk only.
    pub fn snapshot_chunk(
        &self,
        from: usize,
        max: usize,
        out: &mut Vec<Arc<FlowEntry>>,
    ) -> Option<usize> {
        let inner = self.lock();
        let mut taken = 0;
        for (i, slot) in inner.slab.iter().enumerate().skip(from) {
            if taken == max.max(1) {
                return Some(i);
            }
            if let Some(e) = slot {
                out.push(Arc::clone(e));
                taken += 1;
            }
        }
        None
    }

    /// The `n` least recently used flows, oldest first: eviction candidates.
    pub fn lru_candidates(&self, n: usize) -> Vec<Arc<FlowEntry>> {
        let mut all: Vec<(u64, Arc<FlowEntry>)> =
            self.snapshot().into_iter().map(|e| (e.used(), e)).collect();
        if n < all.len() {
            all.select_nth_unstable_by_key(n, |(used, _)| *used);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|(used, e)| (*used, e.id()));
        all.into_iter().map(|(_, e)| e).collect()
    }

    /// Number of installed flows.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether no flow is installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The flow limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Changes the flow limit. Lowering it below [`Self::len`] evicts nothing: new puts
    /// fail until the revalidator removes flows (see [`Self::lru_candidates`]).
    pub fn set_limit(&self, limit: usize) {
        self.lock().limit = limit;
    }

    /// Number of distinct masks among the installed flows.
    pub fn masks(&self) -> usize {
        self.lock().groups.len()
    }

    /// Heap bytes of the table's own index (slab, free list, groups), not counting the
    /// shared entries.
    pub fn heap_bytes(&self) -> usize {
        let inner = self.lock();
        inner.slab.capacity() * std::mem::size_of::<Option<Arc<FlowEntry>>>()
            + inner.free.capacity() * 4
            + inner.groups.capacity() * std::mem::size_of::<Group>()
            + inner
                .groups
                .iter()
                .map(|g| g.members.allocation_size())
                .sum::<usize>()
    }
}

impl Inner {
    fn port_quota(&self) -> usize {
        (self.limit / PORT_SHARE_DIVISOR).max(1)
    }

    /// `Ok(Some(e))`: the same megaflow with the same actions is installed as `e`.
    /// `Ok(None)`: no conflicting flow.
    fn check_overlap(
        &self,
        key: &FlowKey,
        mask: &FlowMask,
        actions: &Actions,
    ) -> Result<Option<Arc<FlowEntry>>, CacheError> {
        let mut found = None;
        for g in &self.groups {
            let common = FlowMask(mask.masked(&g.mask));
            let conflict = |e: &Arc<FlowEntry>| e.actions() != actions;
            if common == *g.mask {
                // Probe: the only possible overlapping flow of this group is `key & g`.
                if let Some(e) = self.probe(g, key) {
                    if conflict(e) {
                        return Err(CacheError::Overlap { existing: e.id() });
                    }
                    if *g.mask == *mask {
                        found = Some(Arc::clone(e));
                    }
                }
            } else {
                let words = MaskWords::new(&common);
                let mut masked = [0; KEY_WORDS];
                words.hash_masked(key, &mut masked);
                let hit = g.members.iter().find_map(|i| {
                    slab_entry(&self.slab, *i)
                        .filter(|e| words.matches(&masked, e.key()) && conflict(e))
                });
                if let Some(e) = hit {
                    return Err(CacheError::Overlap { existing: e.id() });
                }
            }
        }
        Ok(found)
    }

    fn probe<'a>(&'a self, g: &Group, key: &FlowKey) -> Option<&'a Arc<FlowEntry>> {
        let mut masked = [0; KEY_WORDS];
        let hash = g.words.hash_masked(key, &mut masked);
        g.members
            .find(hash, |i| {
                slab_entry(&self.slab, *i).is_some_and(|e| g.words.matches(&masked, e.key()))
            })
            .and_then(|i| slab_entry(&self.slab, *i))
    }

    fn insert(
        &mut self,
        key: &FlowKey,
        mask: &FlowMask,
        actions: Actions,
        now: u64,
    ) -> Result<Arc<FlowEntry>, CacheError> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slab.len())
                    .map_err(|_| CacheError::FlowLimit { limit: self.limit })?;
                self.slab.push(None);
                i
            }
        };
        self.serial = self.serial.wrapping_add(1);
        let id = FlowId(u64::from(self.serial) << 32 | u64::from(index));
        let Inner { slab, groups, .. } = self;
        let group = match groups.iter().position(|g| *g.mask == *mask) {
            Some(gi) => groups.get_mut(gi),
            None => {
                groups.push(Group {
                    mask: Arc::new(*mask),
                    words: MaskWords::new(mask),
                    members: HashTable::new(),
                });
                groups.last_mut()
            }
        };
        let Some(group) = group else {
            // Unreachable: the group was found or just pushed. Give the slot back.
            self.free.push(index);
            return Err(CacheError::FlowLimit { limit: self.limit });
        };
        let entry = Arc::new(FlowEntry::new(
            id,
            key,
            Arc::clone(&group.mask),
            actions,
            now,
        ));
        let hash = group.words.hash_key(key);
        if let Some(slot) = slab.get_mut(index as usize) {
            *slot = Some(Arc::clone(&entry));
        }
        let words = &group.words;
        group.members.insert_unique(hash, index, |i| {
            slab_entry(slab, *i).map_or(0, |e| words.hash_key(e.key()))
        });
        self.len += 1;
        Ok(entry)
    }

    fn take(&mut self, id: FlowId) -> Option<Arc<FlowEntry>> {
        let index = id.0 as u32;
        let slot = self.slab.get_mut(index as usize)?;
        if slot.as_ref().is_none_or(|e| e.id() != id) {
            return None;
        }
        let entry = slot.take()?;
        self.free.push(index);
        self.len -= 1;
        if let Some(owner) = self.owners.get_mut(index as usize) {
            let port = std::mem::replace(owner, NO_OWNER);
            if let Some(st) = self.ports.get_mut(&port) {
                st.flows = st.flows.saturating_sub(1);
            }
        }
        if let Some(gi) = self
            .groups
            .iter()
            .position(|g| Arc::ptr_eq(&g.mask, entry.mask()) || *g.mask == **entry.mask())
            && let Some(g) = self.groups.get_mut(gi)
        {
            let hash = g.words.hash_key(entry.key());
            if let Ok(found) = g.members.find_entry(hash, |i| *i == index) {
                found.remove();
            }
            if g.members.is_empty() {
                self.groups.remove(gi);
            }
        }
        if self.len == 0 {
            // Give the memory back after a mass deletion.
            self.slab = Vec::new();
            self.owners = Vec::new();
            self.free = Vec::new();
        }
        Some(entry)
    }

    /// Sends an op to every datapath queue, blocking while one is full; drops queues
    /// whose thread is gone.
    fn broadcast(&mut self, op: &FlowOp) {
        self.queues.retain(|q| q.send(op.clone()).is_ok());
    }
}
