//! [`FlowHooks`]: what the daemon does when the slow path installs, changes or deletes a
//! flow: acquire the tunnel lookup keys it uses (fibwatch tracks a key while some flow
//! uses it; the route table has its route before the flow's first packet), offer the
//! flow to the offload worker with those paths, and move `used` forward from tc's
//! counters.
//!
//! A flow's tunnel paths are one per lookup key: each `set(tunnel)` it executes (remote
//! VTEP, fixed source or none, mark), and for a flow from the tunnel port, the way back
//! toward the remote it decapsulates from (its network's mark, its fixed local address
//! if matched). Head-end replication reaches several remotes: several paths.

use super::lock;
use super::routes::RouteTable;
use crate::switch::Clock;
use arc_swap::ArcSwap;
use datapath::FlowId;
use datapath::actions::Action;
use datapath::cache::FlowEntry;
use datapath::fastmap::{FastMap, FastSet};
use datapath::flow::tun_flags;
use datapath::slowpath::{DeleteReason, FlowObserver};
use fibwatch::Watcher;
use offload::FlowRequest;
use offload::worker::OffloadWorker;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vocab::{LookupKey, TunnelPath, TunnelRole};

/// The tunnel paths a flow depends on: the lookup key of each of its `set(tunnel)`
/// actions, and, when it comes from the tunnel port and matches the remote's address,
/// the key toward that remote (with the mark `marks` gives its VNI's network).
pub fn tunnel_paths(
    entry: &FlowEntry,
    tunnel_port: Option<datapath::PortId>,
    marks: &HashMap<u32, u32>,
) -> Vec<TunnelPath> {
    let mut paths: Vec<TunnelPath> = entry
        .actions()
        .as_slice()
        .iter()
        .filter_map(|a| match a {
            Action::SetTunnel(t) => Some(TunnelPath {
                key: t.lookup_key(),
                role: TunnelRole::Encap,
            }),
            _ => None,
        })
        .collect();
    let key = entry.key();
    let from_tunnel =
        tunnel_port.is_some_and(|p| key.in_port == p.0) && key.tun_flags & tun_flags::PRESENT != 0;
    let src_matched = entry.mask().tun_src != [0; 16];
    if from_tunnel
        && src_matched
        && let Some(remote) = key.tunnel_src()
    {
        paths.push(TunnelPath {
            key: LookupKey {
                dst: remote,
                src: key.tunnel_dst().filter(|_| entry.mask().tun_dst != [0; 16]),
                mark: marks.get(&key.tun_vni).copied().unwrap_or(0),
            },
            role: TunnelRole::Decap,
        });
    }
    paths.sort_by_key(|p| (p.key, p.role == TunnelRole::Decap));
    paths.dedup();
    paths
}

/// The lookup keys of a flow's paths, once each (the paths are sorted by key).
fn keys_of(paths: &[TunnelPath]) -> Vec<LookupKey> {
    let mut keys: Vec<LookupKey> = paths.iter().map(|p| p.key).collect();
    keys.dedup();
    keys
}

/// Path lists shared between flows: most flows of a host use one of a few (the same
/// remote VTEP), so each holds an `Arc` of one instead of its own list (issue 15's
/// memory per flow). Lists no flow holds any more leave when the set has doubled since
/// it was last swept.
#[derive(Debug, Default)]
struct PathLists {
    lists: FastSet<Arc<[TunnelPath]>>,
    sweep_at: usize,
}

impl PathLists {
    fn get(&mut self, paths: Vec<TunnelPath>) -> Arc<[TunnelPath]> {
        if let Some(a) = self.lists.get(paths.as_slice()) {
            return a.clone();
        }
        if self.lists.len() >= self.sweep_at {
            self.lists.retain(|a| Arc::strong_count(a) > 1);
            self.sweep_at = (self.lists.len() * 2).max(64);
        }
        let a: Arc<[TunnelPath]> = paths.into();
        self.lists.insert(a.clone());
        a
    }
}

/// What the hooks keep of one flow.
#[derive(Debug, Default, Clone)]
struct Held {
    /// The paths it holds (their keys are what it acquired): the list shared with every
    /// flow of the same paths, and with the offload worker's copy; `None` for none.
    paths: Option<Arc<[TunnelPath]>>,
    /// Its packet count (tc's) at the last refresh.
    packets: u64,
}

/// Counters the daemon reports.
#[derive(Debug, Default)]
pub struct HookCounters {
    /// Flows offered to the offload worker.
    pub offered: AtomicU64,
    /// Lookup keys fibwatch was asked to track.
    pub tracked: AtomicU64,
    /// Tracking failures (fibwatch stopped).
    pub track_errors: AtomicU64,
}

/// The daemon's flow observer.
pub struct FlowHooks {
    /// fibwatch, when running.
    pub watcher: Option<Arc<Watcher>>,
    /// The keys in use and the routes the datapath uses.
    pub routes: Arc<RouteTable>,
    /// The offload worker, unless offload is off.
    pub offload: Option<Arc<OffloadWorker>>,
    /// The tunnel port.
    pub tunnel_port: Option<datapath::PortId>,
    /// Each VNI network's `fwmark` (networks without one are absent); replaced on
    /// reload.
    pub marks: ArcSwap<HashMap<u32, u32>>,
    /// The switch's clock (tc's counters turn into the cache's `used` on it).
    pub clock: Clock,
    /// What the hooks keep per flow, in one map (issue 15: one slot per flow, not one
    /// in a map of paths and another in a map of packet counts). A flow has an entry
    /// from its install (when it holds paths or offload is on) to its deletion.
    held: Mutex<FastMap<FlowId, Held>>,
    /// Path lists in use, interned.
    paths: Mutex<PathLists>,
    /// Counters.
    pub counters: HookCounters,
}

impl FlowHooks {
    /// Hooks over these parts.
    pub fn new(
        watcher: Option<Arc<Watcher>>,
        routes: Arc<RouteTable>,
        offload: Option<Arc<OffloadWorker>>,
        tunnel_port: Option<datapath::PortId>,
        marks: HashMap<u32, u32>,
        clock: Clock,
    ) -> Self {
        Self {
            watcher,
            routes,
            offload,
            tunnel_port,
            marks: ArcSwap::from_pointee(marks),
            clock,
            held: Mutex::new(FastMap::default()),
            paths: Mutex::new(PathLists::default()),
            counters: HookCounters::default(),
        }
    }

    /// The flows holding each lookup key.
    pub fn flows_by_key(&self) -> HashMap<LookupKey, Vec<FlowId>> {
        let mut out: HashMap<LookupKey, Vec<FlowId>> = HashMap::new();
        for (flow, h) in lock(&self.held).iter() {
            for k in h.paths.as_deref().map(keys_of).unwrap_or_default() {
                out.entry(k).or_default().push(*flow);
            }
        }
        out
    }

    /// The tunnel paths of a flow, acquired: a key no flow used before is tracked by
    /// fibwatch first, its facts seeded into the route table, and, with `tell_offload`,
    /// given to the offload worker too (start-up adoption, before fibwatch's event
    /// stream is applied: the worker must judge the kept filters' flows on them).
    fn acquire(&self, entry: &FlowEntry, tell_offload: bool) -> Arc<[TunnelPath]> {
        let paths =
            lock(&self.paths).get(tunnel_paths(entry, self.tunnel_port, &self.marks.load()));
        let keys = keys_of(&paths);
        for key in &keys {
            if !self.routes.acquire(*key) {
                continue;
            }
            let Some(w) = &self.watcher else { continue };
            self.counters.tracked.fetch_add(1, Ordering::Relaxed);
            match w.track(*key) {
                Ok(facts) => {
                    self.routes.seed(*key, facts);
                    if let Some(o) = self.offload.as_ref().filter(|_| tell_offload) {
                        o.path_changed(*key, facts);
                    }
                }
                Err(e) => {
                    self.counters.track_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%key, error = %e, "fibwatch could not track a tunnel key");
                }
            }
        }
        if !keys.is_empty() || self.offload.is_some() {
            let mut held = lock(&self.held);
            let h = held.entry(entry.id()).or_default();
            h.paths = Some(paths.clone()).filter(|_| !keys.is_empty());
        }
        paths
    }

    /// Releases the keys a flow held: the last user of a key stops its tracking.
    fn release(&self, flow: FlowId) {
        let Some(paths) = lock(&self.held).remove(&flow).and_then(|h| h.paths) else {
            return;
        };
        for key in keys_of(&paths) {
            if self.routes.release(&key)
                && let Some(w) = &self.watcher
            {
                let _ = w.untrack(key);
            }
        }
    }

    fn offer_paths(&self, entry: &Arc<FlowEntry>, paths: Arc<[TunnelPath]>, wait: bool) {
        if let Some(o) = &self.offload {
            self.counters.offered.fetch_add(1, Ordering::Relaxed);
            let req = FlowRequest::Put {
                entry: entry.clone(),
                paths,
            };
            if wait {
                o.offer_wait(req);
            } else {
                o.offer(req);
            }
        }
    }

    /// Announces a flow the slow path installed without an upcall (start-up adoption):
    /// its keys acquired like any new flow's, then offered, waiting for room in the
    /// queue.
    pub fn announce(&self, entry: &Arc<FlowEntry>) {
        let paths = self.acquire(entry, true);
        self.offer_paths(entry, paths, true);
    }

    fn withdraw(&self, flow: FlowId) {
        if let Some(o) = &self.offload {
            o.offer(FlowRequest::Remove { flow });
        }
    }
}

impl FlowObserver for FlowHooks {
    fn installed(&self, flow: &Arc<FlowEntry>) {
        let paths = self.acquire(flow, false);
        self.offer_paths(flow, paths, false);
    }

    fn modified(&self, old: &Arc<FlowEntry>, new: &Arc<FlowEntry>) {
        // The new flow's keys first: a key both use stays tracked throughout.
        let paths = self.acquire(new, false);
        self.release(old.id());
        self.withdraw(old.id());
        self.offer_paths(new, paths, false);
    }

    fn deleted(&self, flow: &Arc<FlowEntry>, _reason: DeleteReason) {
        self.release(flow.id());
        self.withdraw(flow.id());
    }

    fn refresh_used(&self, flows: &[Arc<FlowEntry>]) {
        let Some(o) = &self.offload else { return };
        let now = self.clock.now_ms();
        let ids: Vec<FlowId> = flows.iter().map(|f| f.id()).collect();
        let mut held = lock(&self.held);
        o.stats_each(&ids, |i, st| {
            let Some(f) = flows.get(i) else { return };
            // A flow without an entry is being installed or deleted right now: its
            // entry is made at install, forgotten at deletion, never here.
            let Some(h) = held.get_mut(&f.id()) else {
                return;
            };
            // Packets counted since the last refresh: used now (within a stats period),
            // whatever the unit of the kernel's own "last use".
            let before = std::mem::replace(&mut h.packets, st.packets);
            if st.packets > before {
                f.touch(now);
            } else if let Some(ago) = st.last_used_ms_ago {
                f.touch(now.saturating_sub(ago));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn path(last: u8, role: TunnelRole) -> TunnelPath {
        TunnelPath {
            key: LookupKey {
                dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
                src: None,
                mark: 0,
            },
            role,
        }
    }

    #[test]
    fn flows_with_the_same_paths_share_one_list() {
        let mut lists = PathLists::default();
        let a = lists.get(vec![path(1, TunnelRole::Encap)]);
        let b = lists.get(vec![path(1, TunnelRole::Encap)]);
        assert!(Arc::ptr_eq(&a, &b));
        let c = lists.get(vec![path(2, TunnelRole::Encap)]);
        assert!(!Arc::ptr_eq(&a, &c));
        // Lists nobody holds leave; held ones stay shared.
        for i in 0..200u8 {
            lists.get(vec![path(i, TunnelRole::Decap)]);
        }
        assert!(lists.lists.len() <= 128, "{}", lists.lists.len());
        assert!(Arc::ptr_eq(
            &a,
            &lists.get(vec![path(1, TunnelRole::Encap)])
        ));
    }

    fn encap_flow(table: &datapath::cache::FlowTable, dst: u8) -> Arc<FlowEntry> {
        let key = datapath::FlowKey {
            in_port: 1,
            eth_dst: [2, 0, 0, 0, 0, dst],
            ..Default::default()
        };
        let mut mask = datapath::FlowMask::default();
        mask.0.in_port = u32::MAX;
        mask.0.eth_dst = [0xff; 6];
        let remote = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let actions = vec![
            Action::SetTunnel(datapath::actions::TunnelAttrs::vxlan(10, remote)),
            Action::Output(datapath::PortId(9)),
        ];
        table
            .put(&datapath::Megaflow::new(&key, &mask), actions.into(), 0)
            .unwrap()
    }

    #[test]
    fn a_deleted_or_modified_flow_is_forgotten_and_its_keys_released() {
        let routes = Arc::new(RouteTable::new());
        let hooks = FlowHooks::new(
            None,
            routes.clone(),
            None,
            None,
            HashMap::new(),
            Clock::new(),
        );
        let table = datapath::cache::FlowTable::new(16);
        let (a, b) = (encap_flow(&table, 1), encap_flow(&table, 2));
        hooks.installed(&a);
        hooks.installed(&b);
        assert_eq!(lock(&hooks.held).len(), 2);
        assert_eq!(hooks.flows_by_key().values().next().map(Vec::len), Some(2));
        assert_eq!(routes.keys().len(), 1);
        // A modified flow: the new id holds the paths, the old one is gone.
        let c = encap_flow(&table, 3);
        hooks.modified(&a, &c);
        let held: std::collections::HashSet<FlowId> = lock(&hooks.held).keys().copied().collect();
        assert_eq!(held, std::collections::HashSet::from([b.id(), c.id()]));
        hooks.deleted(&b, DeleteReason::Idle);
        hooks.deleted(&c, DeleteReason::Idle);
        assert!(lock(&hooks.held).is_empty(), "every flow forgotten");
        assert!(routes.keys().is_empty(), "the last user released the key");
        // Deleting again is harmless.
        hooks.deleted(&c, DeleteReason::Idle);
        assert!(lock(&hooks.held).is_empty());
    }

    /// Memory (issue 15): what the hooks keep per flow is a shared list and a count.
    #[test]
    fn what_the_hooks_hold_per_flow_stays_small() {
        let n = std::mem::size_of::<Held>();
        assert!(n <= 24, "{n}");
    }

    #[test]
    fn a_flows_keys_are_its_paths_keys_once_each() {
        let both = [path(1, TunnelRole::Encap), path(1, TunnelRole::Decap)];
        assert_eq!(keys_of(&both), vec![both[0].key]);
        assert!(keys_of(&[]).is_empty());
    }
}
