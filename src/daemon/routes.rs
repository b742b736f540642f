//! [`RouteTable`]: the tunnel paths in use, per lookup key (remote VTEP, fixed source or
//! none, mark), as fibwatch reports them, and the routes the software datapath builds
//! outer headers from.
//!
//! The keys in use are counted here: the flow hooks acquire a key for each flow that
//! uses it and release it when the flow goes; the first user starts fibwatch tracking
//! it, the last one stops. Path facts arrive from fibwatch's event stream in order; a
//! key's first facts are also seeded by the hook that acquired it, so that the flow's
//! first packet finds its route.
//!
//! The datapath asks per encapsulated packet, so reads are lock-free: the routes are an
//! immutable map behind an atomically swapped pointer (`arc-swap`); a change copies the
//! map (keys number in the thousands at most, changes are rare) and swaps it in. A key
//! without a usable route has its reason instead ([`Unroutable`]), so the datapath counts
//! each drop by what is missing.

use arc_swap::ArcSwap;
use datapath::tunnel::{LookupKey, TunnelResolver, TunnelRoute, Unroutable};
use datapath::{IfIndex, PortId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use vocab::PathFacts;

/// One key in use, as `flowctl tunnels` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The path facts fibwatch last reported (`None`: not yet).
    pub facts: Option<PathFacts>,
    /// The route the datapath uses, or why there is none.
    pub route: Result<TunnelRoute, Unroutable>,
    /// Flows using the key.
    pub users: usize,
}

type Routes = HashMap<LookupKey, Result<TunnelRoute, Unroutable>>;

/// Tunnel paths and routes by lookup key.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: ArcSwap<Routes>,
    keys: Mutex<HashMap<LookupKey, KeyState>>,
    uplinks: ArcSwap<HashMap<IfIndex, PortId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets which datapath port each uplink ifindex is (at start, and when an uplink's
    /// netdev is re-created under a new index): every route is rebuilt.
    pub fn set_uplinks(&self, map: HashMap<IfIndex, PortId>) {
        self.uplinks.store(Arc::new(map));
        let mut keys = lock(&self.keys);
        for st in keys.values_mut() {
            st.route = self.route_of(st.facts.as_ref());
        }
        self.publish(&keys);
    }

    /// The datapath route path facts give, or what is missing.
    fn route_of(&self, facts: Option<&PathFacts>) -> Result<TunnelRoute, Unroutable> {
        let path = match facts {
            Some(Ok(p)) => p,
            _ => return Err(Unroutable::NoRoute),
        };
        let egress = *self
            .uplinks
            .load()
            .get(&path.uplink)
            .ok_or(Unroutable::NotManaged)?;
        Ok(TunnelRoute {
            egress,
            src_ip: path.src.ok_or(Unroutable::NoRoute)?,
            src_mac: path.uplink_mac.ok_or(Unroutable::NotManaged)?,
            dst_mac: path.next_hop_mac.ok_or(Unroutable::NextHopUnresolved)?,
            mtu: path.mtu.min(u32::from(u16::MAX)) as u16,
        })
    }

    fn publish(&self, keys: &HashMap<LookupKey, KeyState>) {
        let routes: Routes = keys.iter().map(|(k, st)| (*k, st.route)).collect();
        self.routes.store(Arc::new(routes));
    }

    /// A flow starts using `key`; true if it is the first (the caller starts tracking
    /// it).
    pub fn acquire(&self, key: LookupKey) -> bool {
        let mut keys = lock(&self.keys);
        let st = keys.entry(key).or_insert_with(|| KeyState {
            facts: None,
            route: Err(Unroutable::NoRoute),
            users: 0,
        });
        st.users += 1;
        st.users == 1
    }

    /// A flow stops using `key`; true if it was the last (the caller stops tracking it;
    /// the key and its route go).
    pub fn release(&self, key: &LookupKey) -> bool {
        let mut keys = lock(&self.keys);
        let Some(st) = keys.get_mut(key) else {
            return false;
        };
        st.users = st.users.saturating_sub(1);
        if st.users > 0 {
            return false;
        }
        keys.remove(key);
        self.publish(&keys);
        true
    }

    /// A key's first facts, from the call that started tracking it: recorded unless
    /// fibwatch's event stream already brought some (those are as new or newer).
    pub fn seed(&self, key: LookupKey, facts: PathFacts) {
        let mut keys = lock(&self.keys);
        if let Some(st) = keys.get_mut(&key)
            && st.facts.is_none()
        {
            st.facts = Some(facts);
            st.route = self.route_of(st.facts.as_ref());
            self.publish(&keys);
        }
    }

    /// fibwatch's facts for a key in use (ignored for keys no flow uses any more).
    pub fn update(&self, key: LookupKey, facts: PathFacts) {
        let mut keys = lock(&self.keys);
        let Some(st) = keys.get_mut(&key) else {
            return;
        };
        let route = self.route_of(Some(&facts));
        if st.facts == Some(facts) && st.route == route {
            return;
        }
        st.facts = Some(facts);
        st.route = route;
        self.publish(&keys);
    }

    /// Every key in use and its state, sorted by key.
    pub fn keys(&self) -> Vec<(LookupKey, KeyState)> {
        let keys = lock(&self.keys);
        let mut v: Vec<_> = keys.iter().map(|(k, st)| (*k, st.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

impl TunnelResolver for RouteTable {
    fn resolve(&self, key: &LookupKey) -> Result<TunnelRoute, Unroutable> {
        self.routes
            .load()
            .get(key)
            .copied()
            .unwrap_or(Err(Unroutable::NoRoute))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use vocab::{Path, PathProblem};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn path(ifindex: u32, mac: Option<[u8; 6]>) -> PathFacts {
        Ok(Path {
            uplink: IfIndex(ifindex),
            src: Some(ip("192.168.1.1")),
            gateway: Some(ip("192.168.1.2")),
            neighbour: ip("192.168.1.2"),
            next_hop_mac: mac,
            uplink_mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            table: 254,
            ipsec: None,
        })
    }

    #[test]
    fn complete_paths_become_routes_per_key() {
        let t = RouteTable::new();
        t.set_uplinks(HashMap::from([(IfIndex(7), PortId(10))]));
        let key = LookupKey::to(ip("10.0.0.2"));
        let marked = LookupKey { mark: 5, ..key };
        assert!(t.acquire(key));
        assert!(!t.acquire(key), "a second user");
        assert!(t.acquire(marked));
        t.seed(key, path(7, Some([2, 0, 0, 0, 0, 2])));
        let r = t.resolve(&key).expect("route");
        assert_eq!(
            (r.egress, r.dst_mac, r.mtu),
            (PortId(10), [2, 0, 0, 0, 0, 2], 1500)
        );
        assert_eq!(t.resolve(&marked), Err(Unroutable::NoRoute), "its own key");
        // An unresolved next hop, an uplink flowd does not manage, no route: each its
        // own reason.
        t.update(key, path(7, None));
        assert_eq!(t.resolve(&key), Err(Unroutable::NextHopUnresolved));
        t.update(key, path(99, Some([2; 6])));
        assert_eq!(t.resolve(&key), Err(Unroutable::NotManaged));
        t.update(key, Err(PathProblem::NoRoute));
        assert_eq!(t.resolve(&key), Err(Unroutable::NoRoute));
        // A seed after an event does not overwrite it.
        t.seed(key, path(7, Some([2; 6])));
        assert_eq!(t.resolve(&key), Err(Unroutable::NoRoute));
        // The uplink re-created under a new index: routes follow.
        t.update(marked, path(8, Some([2; 6])));
        assert_eq!(t.resolve(&marked), Err(Unroutable::NotManaged));
        t.set_uplinks(HashMap::from([(IfIndex(8), PortId(10))]));
        assert_eq!(t.resolve(&marked).map(|r| r.egress), Ok(PortId(10)));
        // Users go: the key goes with the last one.
        assert!(!t.release(&key));
        assert!(t.release(&key));
        assert_eq!(t.keys().len(), 1);
        t.update(key, path(8, Some([2; 6])));
        assert_eq!(t.keys().len(), 1, "facts of a released key are ignored");
    }
}
