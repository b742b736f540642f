//! [`RouteTable`]: the tunnel routes the software datapath and offload validation use,
//! kept by fibwatch's decisions.
//!
//! The datapath asks per encapsulated packet, so reads are lock-free: the table is an
//! immutable map behind an atomically swapped pointer (`arc-swap`); a change copies the
//! map (endpoints number in the thousands, changes are rare) and swaps it in. An endpoint
//! without a usable path (no route, uplink down, next hop unresolved) is absent, with the
//! reason kept for operators (`flowctl tunnels`).

use arc_swap::ArcSwap;
use datapath::tunnel::{TunnelResolver, TunnelRoute};
use datapath::{IfIndex, PortId};
use fibwatch::Resolution;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// One endpoint's state, as `flowctl tunnels` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    /// The resolution fibwatch last reported, if any.
    pub resolution: Option<Resolution>,
    /// The route the datapath uses (a resolution with a known uplink port and MACs).
    pub route: Option<TunnelRoute>,
    /// Why the endpoint has no route or cannot be offloaded, if so.
    pub problem: Option<String>,
}

/// Tunnel routes by remote endpoint.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: ArcSwap<HashMap<IpAddr, TunnelRoute>>,
    state: std::sync::Mutex<HashMap<IpAddr, EndpointState>>,
    ports: ArcSwap<HashMap<IfIndex, PortId>>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets which datapath port each uplink ifindex is.
    pub fn set_uplinks(&self, map: HashMap<IfIndex, PortId>) {
        self.ports.store(Arc::new(map));
    }

    /// The datapath route a resolution gives, if it is complete (known uplink port,
    /// source address, both MACs).
    pub fn route_of(&self, res: &Resolution) -> Option<TunnelRoute> {
        let egress = *self.ports.load().get(&res.ifindex)?;
        Some(TunnelRoute {
            egress,
            src_ip: res.src?,
            src_mac: res.uplink_mac?,
            dst_mac: res.next_hop_mac?,
            mtu: res.mtu.min(u32::from(u16::MAX)) as u16,
        })
    }

    /// Records an endpoint's resolution (or its absence) and the reason it is not
    /// usable for offload, if any.
    pub fn update(&self, endpoint: IpAddr, res: Option<Resolution>, problem: Option<String>) {
        let route = res.as_ref().and_then(|r| self.route_of(r));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let new = EndpointState {
            resolution: res,
            route,
            problem,
        };
        if state.get(&endpoint) == Some(&new) {
            return;
        }
        state.insert(endpoint, new);
        let current = self.routes.load();
        if current.get(&endpoint) != route.as_ref() {
            let mut next = HashMap::clone(&current);
            match route {
                Some(r) => next.insert(endpoint, r),
                None => next.remove(&endpoint),
            };
            self.routes.store(Arc::new(next));
        }
    }

    /// Every endpoint's state.
    pub fn endpoints(&self) -> Vec<(IpAddr, EndpointState)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = state.iter().map(|(k, v)| (*k, v.clone())).collect();
        v.sort_by_key(|(ip, _)| *ip);
        v
    }
}

impl TunnelResolver for RouteTable {
    fn resolve(&self, remote: IpAddr) -> Option<TunnelRoute> {
        self.routes.load().get(&remote).copied()
    }

    fn unresolved_reason(&self, remote: IpAddr) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = state.get(&remote)?;
        match (&st.problem, &st.resolution) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(_)) => Some("uplink not managed by flowd".into()),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(ifindex: u32, mac: Option<[u8; 6]>) -> Resolution {
        Resolution {
            ifindex: IfIndex(ifindex),
            src: Some("192.168.1.1".parse().unwrap()),
            gateway: Some("192.168.1.2".parse().unwrap()),
            next_hop_mac: mac,
            uplink_mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            table: 254,
        }
    }

    #[test]
    fn complete_resolutions_become_routes() {
        let t = RouteTable::new();
        t.set_uplinks(HashMap::from([(IfIndex(7), PortId(10))]));
        let ep: IpAddr = "10.0.0.2".parse().unwrap();
        t.update(ep, Some(res(7, Some([2, 0, 0, 0, 0, 2]))), None);
        let r = t.resolve(ep).expect("route");
        assert_eq!(
            (r.egress, r.dst_mac, r.mtu),
            (PortId(10), [2, 0, 0, 0, 0, 2], 1500)
        );
        // Unresolved next hop: no route for the datapath, the reason kept.
        t.update(ep, Some(res(7, None)), Some("next hop unresolved".into()));
        assert_eq!(t.resolve(ep), None);
        assert_eq!(
            t.endpoints()[0].1.problem.as_deref(),
            Some("next hop unresolved")
        );
        // An uplink flowd does not manage gives no route either.
        t.update(ep, Some(res(99, Some([2, 0, 0, 0, 0, 2]))), None);
        assert_eq!(t.resolve(ep), None);
    }
}
