//! [`FlowEntry`]: one installed megaflow, shared by every tier as `Arc<FlowEntry>`.
//!
//! # Thread-safety
//! The identity of an entry (id, masked key, mask, actions) is immutable after creation,
//! so any thread may read it through its `Arc` without synchronisation. The mutable part
//! is a handful of atomics updated with `Relaxed` ordering: packet and byte counters
//! (`fetch_add`), the TCP flags seen (`fetch_or`), the `used` time (`fetch_max`, so a late
//! or stale update never moves it backwards) and the `dead` flag. Relaxed is enough
//! because no other memory is published through them: a reader gets each counter
//! exactly, but a [`FlowStats`] snapshot is not atomic across counters (packets and bytes
//! may be from slightly different instants), as with OVS's per-thread flow stats.
//!
//! Time is never read here: callers pass `now` in whatever monotonic unit their clock
//! uses (flowd passes milliseconds); the cache only compares values.

use crate::flow::{FlowKey, FlowMask, Megaflow};
use crate::{Actions, FlowId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};

/// A snapshot of a flow's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Packets matched.
    pub packets: u64,
    /// Bytes matched.
    pub bytes: u64,
    /// When the flow last matched a packet (caller's clock); its creation time before.
    pub used: u64,
    /// TCP flags seen, OR'ed together.
    pub tcp_flags: u16,
}

/// One megaflow with its actions and statistics.
///
/// Memory: 192 bytes (plus 16 for the `Arc` counts), of which 128 are the masked key.
/// The mask is shared with every other flow of the same mask; the actions are shared
/// with whoever else holds the same [`Actions`].
#[derive(Debug)]
pub struct FlowEntry {
    id: FlowId,
    key: FlowKey,
    mask: Arc<FlowMask>,
    actions: Actions,
    packets: AtomicU64,
    bytes: AtomicU64,
    used: AtomicU64,
    tcp_flags: AtomicU16,
    dead: AtomicBool,
    in_tc: AtomicBool,
}

impl FlowEntry {
    /// A new entry; `key` is masked with `mask` here. `now` becomes its `used` time, so
    /// that a flow that never matches ages from its creation.
    pub fn new(id: FlowId, key: &FlowKey, mask: Arc<FlowMask>, actions: Actions, now: u64) -> Self {
        Self {
            id,
            key: key.masked(&mask),
            mask,
            actions,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            used: AtomicU64::new(now),
            tcp_flags: AtomicU16::new(0),
            dead: AtomicBool::new(false),
            in_tc: AtomicBool::new(false),
        }
    }

    /// The flow's id.
    #[inline]
    pub fn id(&self) -> FlowId {
        self.id
    }

    /// The masked key (every bit outside [`Self::mask`] is zero).
    #[inline]
    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// The mask, shared with every flow of the same subtable.
    #[inline]
    pub fn mask(&self) -> &Arc<FlowMask> {
        &self.mask
    }

    /// The flow as a [`Megaflow`] (a copy of key and mask).
    pub fn megaflow(&self) -> Megaflow {
        Megaflow {
            key: self.key,
            mask: *self.mask,
        }
    }

    /// The actions.
    #[inline]
    pub fn actions(&self) -> &Actions {
        &self.actions
    }

    /// Whether a packet's key matches this flow.
    #[inline]
    pub fn matches(&self, key: &FlowKey) -> bool {
        key.words()
            .iter()
            .zip(self.mask.0.words())
            .zip(self.key.words())
            .all(|((k, m), v)| k & m == *v)
    }

    /// Accounts `packets` packets of `bytes` bytes in total, with `tcp_flags` OR'ed over
    /// them, matched at `now`.
    #[inline]
    pub fn record(&self, packets: u64, bytes: u64, tcp_flags: u16, now: u64) {
        self.packets.fetch_add(packets, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        if tcp_flags != 0 {
            self.tcp_flags.fetch_or(tcp_flags, Relaxed);
        }
        self.touch(now);
    }

    /// Moves `used` forward to `now` (never backwards), e.g. when offloaded counters
    /// show the flow is still active.
    #[inline]
    pub fn touch(&self, now: u64) {
        if self.used.load(Relaxed) < now {
            self.used.fetch_max(now, Relaxed);
        }
    }

    /// When the flow last matched (its creation time if it never did).
    #[inline]
    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> FlowStats {
        FlowStats {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            used: self.used.load(Relaxed),
            tcp_flags: self.tcp_flags.load(Relaxed),
        }
    }

    /// Whether the flow was deleted. Lookups skip dead entries, so a deletion takes
    /// effect at once, even before the datapath threads drain their [`FlowOp::Del`].
    ///
    /// [`FlowOp::Del`]: super::FlowOp::Del
    #[inline]
    pub fn is_dead(&self) -> bool {
        self.dead.load(Relaxed)
    }

    /// Marks the flow deleted (irreversible).
    pub(crate) fn kill(&self) {
        self.dead.store(true, Relaxed);
    }

    /// Whether a tc filter on the ingress device carries this flow. AF_PACKET taps see a
    /// packet before tc ingress does, so the datapath must not forward (again) what tc
    /// already forwards: it only counts such hits. Set by the offload layer once the
    /// kernel acknowledged the filter, cleared when the filter goes.
    #[inline]
    pub fn in_tc(&self) -> bool {
        self.in_tc.load(Relaxed)
    }

    /// Records whether a tc filter carries this flow (see [`Self::in_tc`]).
    pub fn set_in_tc(&self, carried: bool) {
        self.in_tc.store(carried, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_compact() {
        assert!(std::mem::size_of::<FlowEntry>() <= 192);
    }

    #[test]
    fn stats_accumulate_and_used_only_moves_forward() {
        let key = FlowKey {
            in_port: 1,
            tp_src: 5,
            ..FlowKey::default()
        };
        let mask = FlowMask(FlowKey {
            in_port: u32::MAX,
            ..FlowKey::default()
        });
        let e = FlowEntry::new(FlowId(1), &key, Arc::new(mask), Actions::drop(), 10);
        assert_eq!(e.key().tp_src, 0, "key is masked");
        assert!(e.matches(&key));
        assert_eq!(e.used(), 10);
        e.record(2, 128, 0x02, 20);
        e.record(1, 64, 0x10, 15);
        e.touch(12);
        let s = e.stats();
        assert_eq!(
            s,
            FlowStats {
                packets: 3,
                bytes: 192,
                used: 20,
                tcp_flags: 0x12
            }
        );
        e.touch(30);
        assert_eq!(e.used(), 30);
        assert!(!e.is_dead());
        e.kill();
        assert!(e.is_dead());
    }
}
