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
//!
//! A path the host's IPsec policy protects goes through the kernel ([`Via::Kernel`]):
//! its MTU is the path's less the SA's transform, it needs no next-hop MAC (the kernel
//! resolves it), and a `block` policy makes it [`Unroutable::IpsecBlocked`]. The table
//! also answers the datapath's inbound question from fibwatch's compiled inbound
//! policies, and switches the kernel path's receive sockets on and off with them.

use super::lock;
use arc_swap::ArcSwap;
use datapath::fastmap::FastMap;
use datapath::port::RxControl;
use datapath::tunnel::{LookupKey, TunnelResolver, TunnelRoute, Unroutable, Via};
use datapath::{IfIndex, PortId};
use fibwatch::Inbound;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

type Routes = FastMap<LookupKey, Result<TunnelRoute, Unroutable>>;

/// Tunnel paths and routes by lookup key.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: ArcSwap<Routes>,
    keys: Mutex<FastMap<LookupKey, KeyState>>,
    uplinks: ArcSwap<HashMap<IfIndex, PortId>>,
    inbound: ArcSwap<Inbound>,
    /// The kernel path's receive sockets (when the tunnel port has one).
    rx: Mutex<Option<RxControl>>,
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
        let src_ip = path.src.ok_or(Unroutable::NoRoute)?;
        if let Some(ipsec) = path.ipsec {
            if ipsec.blocks {
                return Err(Unroutable::IpsecBlocked);
            }
            // The kernel builds the outer headers and resolves the next hop.
            let overhead = ipsec.sa.map_or(0, |sa| sa.overhead);
            return Ok(TunnelRoute {
                egress,
                src_ip,
                src_mac: path.uplink_mac.unwrap_or_default(),
                dst_mac: path.next_hop_mac.unwrap_or_default(),
                mtu: path.mtu.saturating_sub(overhead).min(u32::from(u16::MAX)) as u16,
                via: Via::Kernel {
                    sa: ipsec.sa.is_some(),
                },
            });
        }
        Ok(TunnelRoute {
            egress,
            src_ip,
            src_mac: path.uplink_mac.ok_or(Unroutable::NotManaged)?,
            dst_mac: path.next_hop_mac.ok_or(Unroutable::NextHopUnresolved)?,
            mtu: path.mtu.min(u32::from(u16::MAX)) as u16,
            via: Via::Uplink,
        })
    }

    /// The kernel path's receive control, switched with the inbound policies.
    pub fn set_rx_control(&self, rx: RxControl) {
        let mut slot = lock(&self.rx);
        let (v4, v6) = self.inbound.load().families();
        if let Err(e) = rx.set(v4, v6) {
            tracing::warn!(error = %e, "kernel tunnel receive filter");
        }
        *slot = Some(rx);
    }

    /// fibwatch's inbound IPsec policies: which remotes' VXLAN counts only as the kernel
    /// delivers it; the kernel path receives a family only while a policy may cover it.
    pub fn set_inbound(&self, inbound: Inbound) {
        let (v4, v6) = inbound.families();
        self.inbound.store(Arc::new(inbound));
        if let Some(rx) = lock(&self.rx).as_ref()
            && let Err(e) = rx.set(v4, v6)
        {
            tracing::warn!(error = %e, "kernel tunnel receive filter");
        }
    }

    fn publish(&self, keys: &FastMap<LookupKey, KeyState>) {
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

    fn inbound_protected(&self, remote: IpAddr, local: IpAddr) -> bool {
        let inbound = self.inbound.load();
        !inbound.is_empty() && inbound.protects(remote, local, vocab::VXLAN_PORT, 0)
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

    /// A protected path goes through the kernel: its MTU less the SA's overhead, no MAC
    /// needed; a block policy is its own reason; no SA yet still goes to the kernel
    /// (which drops it and asks for one), never to the uplink.
    #[test]
    fn protected_paths_route_through_the_kernel() {
        use vocab::{Ipsec, IpsecSa};
        let t = RouteTable::new();
        t.set_uplinks(HashMap::from([(IfIndex(7), PortId(10))]));
        let key = LookupKey::to(ip("10.0.0.2"));
        t.acquire(key);
        let sa = IpsecSa {
            spi: 3,
            overhead: 37,
            packet_offload: None,
        };
        let ipsec = Ipsec {
            policy: 12,
            blocks: false,
            proto: 50,
            mode: 0,
            reqid: 3,
            sa: Some(sa),
        };
        let protected = |ipsec: Ipsec, mac: Option<[u8; 6]>| {
            path(7, mac).map(|p| Path {
                ipsec: Some(ipsec),
                ..p
            })
        };
        t.update(key, protected(ipsec, None));
        let r = t.resolve(&key).expect("a route");
        assert_eq!((r.via, r.mtu), (Via::Kernel { sa: true }, 1500 - 37));
        t.update(key, protected(Ipsec { sa: None, ..ipsec }, Some([2; 6])));
        assert_eq!(
            t.resolve(&key).map(|r| r.via),
            Ok(Via::Kernel { sa: false })
        );
        t.update(
            key,
            protected(
                Ipsec {
                    blocks: true,
                    ..ipsec
                },
                Some([2; 6]),
            ),
        );
        assert_eq!(t.resolve(&key), Err(Unroutable::IpsecBlocked));
        // Inbound: nothing is protected until fibwatch says so.
        assert!(!t.inbound_protected(ip("10.0.0.2"), ip("192.168.1.1")));
    }
}
