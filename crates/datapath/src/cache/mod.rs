//! Flow cache: exact-match cache and megaflow classifier.
//!
//! A packet's [`FlowKey`](crate::FlowKey) meets three tiers, as in Open vSwitch's
//! userspace datapath:
//! 1. the **exact-match cache** ([`ExactMatchCache`], module `emc`): a fixed array indexed
//!    by the hash of the whole key, holding the key and its megaflow entry;
//! 2. the **megaflow classifier** ([`Classifier`], module `classifier`): tuple-space
//!    search, one hash table per distinct mask, visited in order of recent hits;
//! 3. the **upcall**: a miss in both, which the caller queues to the slow path.
//!
//! Tiers 1 and 2 form a [`FlowCache`], owned by one datapath thread and changed only by
//! the [`FlowOp`]s it drains between batches. The control plane's [`FlowTable`] holds
//! every installed megaflow ([`FlowEntry`], shared as `Arc`), allocates ids, enforces the
//! flow limit and the no-overlap invariant, and sends the ops. Each module's docs have a
//! "Thread-safety" section; in short: datapath threads own their cache (`&mut self`, no
//! lock, no allocation per packet), writers serialize on the table's mutex and reach the
//! datapath through bounded queues, and entries share only relaxed atomic statistics
//! and a `dead` flag that makes a deletion effective at once in every tier.
//!
//! Memory per megaflow, with one datapath thread (measured by `cargo bench --bench
//! cache` at 1M flows: 247 bytes): the entry (208 bytes with its `Arc` header, of which
//! 128 are the masked key), one bucket of the datapath subtable (9 bytes, at 44–87 %
//! load), the table's slab slot and mask-group bucket (8 + 5 bytes), and a share of the
//! fixed EMC array. Masks are shared per subtable; action lists are shared `Arc`s, so a
//! flow with its own list adds that list's allocation. Each further datapath thread adds
//! one subtable bucket per flow.

mod classifier;
mod emc;
mod entry;
mod flow_cache;
mod hash;
mod table;

pub use classifier::{Classifier, RESORT_INTERVAL, SubtableInfo};
pub use emc::ExactMatchCache;
pub use entry::{FlowEntry, FlowStats};
pub use flow_cache::{CacheConfig, CacheCounters, FlowCache, FlowOp};
pub use hash::key_hash;
pub use table::{FlowTable, PortFlowStats, SNAPSHOT_CHUNK, Subscription};

use crate::FlowId;

/// Why the [`FlowTable`] refused a megaflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The table holds its limit of flows.
    #[error("flow limit reached ({limit} flows)")]
    FlowLimit {
        /// The limit in force.
        limit: usize,
    },
    /// The flow's ingress port owns its share of the table.
    #[error("port {port} owns its share of the flow table ({limit} flows)")]
    PortFlowLimit {
        /// The port.
        port: crate::PortId,
        /// Its quota.
        limit: usize,
    },
    /// Some packet would match both the new megaflow and an installed one whose actions
    /// differ.
    #[error("megaflow overlaps flow {existing}, which has different actions")]
    Overlap {
        /// The installed flow.
        existing: FlowId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FlowKey, FlowMask, Megaflow};
    use crate::{Action, Actions, PortId};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn out(port: u32) -> Actions {
        Actions::new(vec![Action::Output(PortId(port))])
    }

    fn port_flow(port: u32) -> Megaflow {
        let key = FlowKey {
            in_port: port,
            ..FlowKey::default()
        };
        let mask = FlowMask(FlowKey {
            in_port: u32::MAX,
            ..FlowKey::default()
        });
        Megaflow::new(&key, &mask)
    }

    /// in_port and eth_type, then ip_dst /prefix bytes.
    fn ip_flow(port: u32, dst: [u8; 4], prefix_bytes: usize) -> Megaflow {
        let mut key = FlowKey {
            in_port: port,
            eth_type: 0x0800,
            ..FlowKey::default()
        };
        key.ip_dst[..4].copy_from_slice(&dst);
        let mut mask = FlowMask(FlowKey {
            in_port: u32::MAX,
            eth_type: 0xffff,
            ..FlowKey::default()
        });
        mask.ip_dst[..prefix_bytes].fill(0xff);
        Megaflow::new(&key, &mask)
    }

    fn pkt(port: u32, dst: [u8; 4]) -> FlowKey {
        let mut key = FlowKey {
            in_port: port,
            eth_type: 0x0800,
            ..FlowKey::default()
        };
        key.ip_dst[..4].copy_from_slice(&dst);
        key.tp_dst = 443;
        key
    }

    #[test]
    fn a_port_owns_at_most_its_share_of_the_table() {
        let t = FlowTable::new(8);
        assert_eq!(t.port_quota(), 2);
        let flood = |i: u8| ip_flow(1, [10, 0, 0, i], 4);
        let a = t.put_for(&flood(1), out(9), 0, PortId(1)).unwrap();
        t.put_for(&flood(2), out(9), 0, PortId(1)).unwrap();
        assert_eq!(
            t.put_for(&flood(3), out(9), 0, PortId(1)).unwrap_err(),
            CacheError::PortFlowLimit {
                port: PortId(1),
                limit: 2
            }
        );
        // The same flow again is no new flow; another port still has room.
        assert!(t.put_for(&flood(2), out(9), 0, PortId(1)).is_ok());
        t.put_for(&ip_flow(2, [10, 0, 0, 1], 4), out(9), 0, PortId(2))
            .unwrap();
        assert_eq!(t.owner(a.id()), Some(PortId(1)));
        // A deleted flow gives its port room again.
        t.remove(a.id());
        t.put_for(&flood(3), out(9), 0, PortId(1)).unwrap();
        let st = t.port_stats();
        assert_eq!(
            st,
            vec![
                (
                    PortId(1),
                    PortFlowStats {
                        flows: 2,
                        refused: 1
                    }
                ),
                (
                    PortId(2),
                    PortFlowStats {
                        flows: 1,
                        refused: 0
                    }
                ),
            ]
        );
        t.flush();
        assert!(t.port_stats().iter().all(|(_, s)| s.flows == 0));
    }

    #[test]
    fn flow_limit_is_a_typed_error() {
        let t = FlowTable::new(2);
        t.put(&port_flow(1), out(9), 0).unwrap();
        t.put(&port_flow(2), out(9), 0).unwrap();
        assert_eq!(
            t.put(&port_flow(3), out(9), 0).unwrap_err(),
            CacheError::FlowLimit { limit: 2 }
        );
        // A duplicate of an installed flow is not a new flow.
        assert!(t.put(&port_flow(2), out(9), 0).is_ok());
        t.set_limit(3);
        assert_eq!(t.limit(), 3);
        t.put(&port_flow(3), out(9), 0).unwrap();
        assert_eq!(t.len(), 3);
        t.set_limit(1);
        assert!(t.put(&port_flow(4), out(9), 0).is_err());
        assert_eq!(t.len(), 3, "lowering the limit evicts nothing");
    }

    #[test]
    fn overlap_refusal() {
        let t = FlowTable::new(100);
        let a = t.put(&ip_flow(1, [10, 0, 0, 0], 3), out(2), 0).unwrap();
        // Same megaflow, same actions: the installed entry.
        let again = t.put(&ip_flow(1, [10, 0, 0, 9], 3), out(2), 0).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        // Same megaflow, other actions.
        assert_eq!(
            t.put(&ip_flow(1, [10, 0, 0, 0], 3), out(3), 0).unwrap_err(),
            CacheError::Overlap { existing: a.id() }
        );
        // Finer (new mask is a superset): found by a probe.
        assert_eq!(
            t.put(&ip_flow(1, [10, 0, 0, 5], 4), out(3), 0).unwrap_err(),
            CacheError::Overlap { existing: a.id() }
        );
        // Coarser (scan): in_port=1 covers the /24.
        assert_eq!(
            t.put(&port_flow(1), out(3), 0).unwrap_err(),
            CacheError::Overlap { existing: a.id() }
        );
        // Overlap with the same actions is allowed, disjoint flows too.
        t.put(&ip_flow(1, [10, 0, 0, 5], 4), out(2), 0).unwrap();
        t.put(&ip_flow(1, [10, 0, 1, 0], 3), out(3), 0).unwrap();
        t.put(&port_flow(2), out(3), 0).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.masks(), 3);
    }

    #[test]
    fn table_feeds_datapath_caches() {
        let t = FlowTable::new(100);
        let early = t.put(&port_flow(7), out(1), 5).unwrap();
        let sub = t.subscribe(16);
        assert_eq!(sub.initial.len(), 1);
        let mut cache = FlowCache::default();
        for e in sub.initial {
            cache.insert(e);
        }
        let a = t.put(&ip_flow(1, [10, 0, 0, 0], 3), out(2), 5).unwrap();
        assert!(
            cache.lookup(&pkt(1, [10, 0, 0, 1])).is_none(),
            "not drained yet"
        );
        assert_eq!(cache.drain(&sub.ops, 64), 1);
        let hit = cache.lookup(&pkt(1, [10, 0, 0, 1])).map(Arc::clone);
        assert_eq!(hit.map(|e| e.id()), Some(a.id()));
        // Now in the EMC; a removal is effective before the datapath drains it.
        assert_eq!(t.remove(a.id()).map(|e| e.id()), Some(a.id()));
        assert!(t.remove(a.id()).is_none());
        assert!(cache.lookup(&pkt(1, [10, 0, 0, 1])).is_none());
        assert_eq!(cache.drain(&sub.ops, 64), 1);
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.lookup(&pkt(7, [1, 2, 3, 4])).map(|e| e.id()),
            Some(early.id())
        );
        t.flush();
        assert!(t.is_empty());
        assert!(
            cache.lookup(&pkt(7, [1, 2, 3, 4])).is_none(),
            "dead at once"
        );
        assert_eq!(cache.drain(&sub.ops, 64), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn dropped_subscriber_is_forgotten() {
        let t = FlowTable::new(10);
        drop(t.subscribe(1));
        t.put(&port_flow(1), out(1), 0).unwrap();
        t.put(&port_flow(2), out(1), 0).unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ids_lookup_snapshot_and_lru() {
        let t = FlowTable::new(100);
        let a = t.put(&port_flow(1), out(1), 30).unwrap();
        let b = t.put(&port_flow(2), out(1), 10).unwrap();
        let c = t.put(&port_flow(3), out(1), 20).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(t.get(b.id()).map(|e| e.id()), Some(b.id()));
        assert_eq!(t.lookup(&pkt(3, [0; 4])).map(|e| e.id()), Some(c.id()));
        assert!(t.lookup(&pkt(4, [0; 4])).is_none());
        assert_eq!(t.snapshot().len(), 3);
        a.record(1, 64, 0, 5); // `used` never moves backwards
        c.record(1, 64, 0, 40);
        let lru: Vec<_> = t.lru_candidates(2).iter().map(|e| e.id()).collect();
        assert_eq!(lru, vec![b.id(), a.id()]);
        assert_eq!(t.lru_candidates(10).len(), 3);
        // A slot is reused under a new id; the old id stays dead.
        t.remove(b.id()).unwrap();
        let d = t.put(&port_flow(4), out(1), 0).unwrap();
        assert_eq!(d.id().0 as u32, b.id().0 as u32);
        assert_ne!(d.id(), b.id());
        assert!(t.get(b.id()).is_none());
        assert!(t.remove(b.id()).is_none());
        assert_eq!(t.get(d.id()).map(|e| e.id()), Some(d.id()));
    }

    #[test]
    fn a_snapshot_of_several_chunks_has_every_flow_once() {
        let n = 2 * table::SNAPSHOT_CHUNK as u32 + 7;
        let t = FlowTable::new(n as usize);
        let flows: Vec<_> = (0..n)
            .map(|i| t.put(&port_flow(i), out(1), 0).unwrap())
            .collect();
        // Holes across the chunks' edges.
        for f in flows.iter().step_by(3) {
            t.remove(f.id()).unwrap();
        }
        let mut got: Vec<_> = t.snapshot().iter().map(|e| e.id()).collect();
        got.sort_unstable();
        let mut want: Vec<_> = flows
            .iter()
            .map(|f| f.id())
            .filter(|id| t.get(*id).is_some())
            .collect();
        want.sort_unstable();
        assert_eq!(got.len(), t.len());
        assert_eq!(got, want);
    }

    /// A chunked walk sees every flow installed for the whole walk once, whatever the
    /// chunk size and the changes between two chunks.
    #[test]
    fn chunked_walk_sees_every_stable_flow_once() {
        let t = FlowTable::new(1000);
        let stable: Vec<_> = (0..50)
            .map(|p| t.put(&port_flow(p), out(1), 0).unwrap())
            .collect();
        let mut churn: Vec<_> = (100..120)
            .map(|p| t.put(&port_flow(p), out(1), 0).unwrap())
            .collect();
        for max in [0, 1, 3, 7, 64, 10_000] {
            let (mut seen, mut from, mut n) = (Vec::new(), Some(0), 0u32);
            while let Some(f) = from {
                from = t.snapshot_chunk(f, max, &mut seen);
                // Between two chunks: a churning flow goes, another comes.
                if let Some(e) = churn.pop() {
                    t.remove(e.id()).unwrap();
                    churn.insert(0, t.put(&port_flow(200 + n), out(1), 0).unwrap());
                    n += 1;
                }
            }
            let mut ids: Vec<_> = seen.iter().map(|e| e.id()).collect();
            ids.sort_unstable();
            let before = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), before, "max {max}: a flow seen twice");
            for e in &stable {
                assert!(ids.contains(&e.id()), "max {max}: {:?} missed", e.id());
            }
        }
        let (mut all, mut from) = (Vec::new(), Some(0));
        while let Some(f) = from {
            from = t.snapshot_chunk(f, 16, &mut all);
        }
        assert_eq!(all.len(), t.snapshot().len());
        t.flush();
        assert_eq!(t.snapshot_chunk(5, 16, &mut all), None);
    }

    /// A small universe of megaflows: in_port always matched (as flowd's slow path
    /// does), plus random subsets of eth_type, ip_dst bytes and tp_dst.
    fn arb_megaflow() -> impl Strategy<Value = Megaflow> {
        (0u32..2, any::<bool>(), 0usize..3, any::<bool>(), arb_key()).prop_map(
            |(port, ty, dst, tp, mut key)| {
                key.in_port = port;
                let mut m = FlowMask(FlowKey {
                    in_port: u32::MAX,
                    ..FlowKey::default()
                });
                if ty {
                    m.eth_type = 0xffff;
                }
                m.ip_dst[..dst].fill(0xff);
                if tp {
                    m.tp_dst = 0xffff;
                }
                Megaflow::new(&key, &m)
            },
        )
    }

    fn arb_key() -> impl Strategy<Value = FlowKey> {
        (0u32..2, any::<bool>(), 0u8..2, 0u8..2, 0u16..2).prop_map(|(p, v6, d0, d1, tp)| {
            let mut k = FlowKey {
                in_port: p,
                eth_type: if v6 { 0x86dd } else { 0x0800 },
                ..FlowKey::default()
            };
            k.ip_dst[0] = d0;
            k.ip_dst[1] = d1;
            k.tp_dst = tp;
            k
        })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(Megaflow, u32),
        Remove(usize),
        Lookup(FlowKey),
        Drain,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (arb_megaflow(), 0u32..3).prop_map(|(m, a)| Op::Put(m, a)),
            1 => any::<usize>().prop_map(Op::Remove),
            4 => arb_key().prop_map(Op::Lookup),
            1 => Just(Op::Drain),
        ]
    }

    proptest! {
        /// FlowTable + FlowCache (EMC included) against a linear list: the table refuses
        /// exactly the conflicting overlaps, and once drained the cache returns a flow
        /// with the actions of the linear scan's match.
        #[test]
        fn table_and_cache_match_linear_oracle(ops in prop::collection::vec(arb_op(), 1..150)) {
            let table = FlowTable::new(1000);
            let sub = table.subscribe(1024);
            let mut cache = FlowCache::new(CacheConfig::with_emc_entries(16));
            let mut oracle: Vec<(Megaflow, Actions, FlowId)> = Vec::new();
            for op in ops {
                match op {
                    Op::Put(mf, a) => {
                        let actions = out(a);
                        let conflict = oracle
                            .iter()
                            .find(|(o, act, _)| o.overlaps(&mf) && *act != actions)
                            .map(|(_, _, id)| *id);
                        let same = oracle.iter().find(|(o, _, _)| *o == mf).map(|(_, _, id)| *id);
                        match table.put(&mf, actions.clone(), 0) {
                            Ok(e) => {
                                prop_assert!(conflict.is_none());
                                match same {
                                    Some(id) => prop_assert_eq!(e.id(), id),
                                    None => oracle.push((mf, actions, e.id())),
                                }
                            }
                            Err(CacheError::Overlap { existing }) => {
                                prop_assert!(conflict.is_some());
                                let (o, act, _) = oracle
                                    .iter()
                                    .find(|(_, _, id)| *id == existing)
                                    .unwrap();
                                prop_assert!(o.overlaps(&mf) && *act != actions);
                            }
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    Op::Remove(i) => {
                        if oracle.is_empty() { continue; }
                        let (_, _, id) = oracle.remove(i % oracle.len());
                        prop_assert!(table.remove(id).is_some());
                    }
                    Op::Drain => {
                        cache.drain(&sub.ops, usize::MAX);
                        prop_assert_eq!(cache.len(), oracle.len());
                    }
                    Op::Lookup(k) => {
                        cache.drain(&sub.ops, usize::MAX);
                        let want = oracle.iter().find(|(mf, _, _)| mf.matches(&k)).map(|(_, a, _)| a.clone());
                        let got = cache.lookup(&k).map(|e| e.actions().clone());
                        prop_assert_eq!(got, want);
                        let got = table.lookup(&k).map(|e| e.actions().clone());
                        let want = oracle.iter().find(|(mf, _, _)| mf.matches(&k)).map(|(_, a, _)| a.clone());
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(table.len(), oracle.len());
            }
        }
    }
}
