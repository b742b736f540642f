//! Tunnel route resolution: what the software datapath needs to build outer headers.
//!
//! The datapath asks a [`TunnelResolver`] per encapsulated packet, so implementations
//! must answer without allocating or blocking (e.g. from an atomically swapped snapshot).
//! fibwatch provides the production implementation; [`StaticResolver`] serves tests and
//! labs.

use crate::PortId;
use std::collections::HashMap;
use std::net::IpAddr;

/// Where and how to send packets to a remote tunnel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelRoute {
    /// The uplink port the outer packet leaves by.
    pub egress: PortId,
    /// The local source IP for the outer header.
    pub src_ip: IpAddr,
    /// The uplink's MAC (outer Ethernet source).
    pub src_mac: [u8; 6],
    /// The next hop's MAC (outer Ethernet destination).
    pub dst_mac: [u8; 6],
    /// Path MTU toward the endpoint.
    pub mtu: u16,
}

/// Resolves a remote tunnel endpoint to a route.
pub trait TunnelResolver: Send + Sync {
    /// The route to `remote`, or `None` if it is unreachable or its next hop unresolved.
    fn resolve(&self, remote: IpAddr) -> Option<TunnelRoute>;

    /// Why `remote` has no route, in words an operator reads (`no route`, `uplink
    /// down`, ...), if the resolver knows. Not called per packet.
    fn unresolved_reason(&self, _remote: IpAddr) -> Option<String> {
        None
    }
}

/// A fixed table of tunnel routes.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    routes: HashMap<IpAddr, TunnelRoute>,
}

impl StaticResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the route to `remote`.
    pub fn insert(&mut self, remote: IpAddr, route: TunnelRoute) {
        self.routes.insert(remote, route);
    }
}

impl TunnelResolver for StaticResolver {
    fn resolve(&self, remote: IpAddr) -> Option<TunnelRoute> {
        self.routes.get(&remote).copied()
    }
}
