//! Tunnel route resolution: what the software datapath needs to build outer headers.
//!
//! The datapath asks a [`TunnelResolver`] per encapsulated packet, with the tunnel's
//! [`LookupKey`] (remote VTEP, fixed source or none, mark), so implementations must
//! answer without allocating or blocking (e.g. from an atomically swapped snapshot).
//! The daemon's route table, fed by fibwatch, is the production implementation;
//! [`StaticResolver`] serves tests and benchmarks.

use crate::PortId;
use std::collections::HashMap;
use std::net::IpAddr;
pub use vocab::LookupKey;

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

/// Why a tunnel packet has no route: each one is its own drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unroutable {
    /// Routing has no usable path to the remote VTEP.
    NoRoute,
    /// The next hop's MAC is not resolved yet (a probe is under way).
    NextHopUnresolved,
    /// The path leaves by an interface that is not one of flowd's uplinks, or has no
    /// source address.
    NotManaged,
}

/// Resolves a tunnel's lookup key to a route.
pub trait TunnelResolver: Send + Sync {
    /// The route for `key`, or why there is none.
    fn resolve(&self, key: &LookupKey) -> Result<TunnelRoute, Unroutable>;
}

/// A fixed table of tunnel routes: by exact lookup key, else by remote VTEP alone.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    routes: HashMap<LookupKey, TunnelRoute>,
    by_remote: HashMap<IpAddr, TunnelRoute>,
}

impl StaticResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the route to `remote`, whatever the key's source and mark.
    pub fn insert(&mut self, remote: IpAddr, route: TunnelRoute) {
        self.by_remote.insert(remote, route);
    }

    /// Adds or replaces the route for `key`.
    pub fn insert_key(&mut self, key: LookupKey, route: TunnelRoute) {
        self.routes.insert(key, route);
    }
}

impl TunnelResolver for StaticResolver {
    fn resolve(&self, key: &LookupKey) -> Result<TunnelRoute, Unroutable> {
        self.routes
            .get(key)
            .or_else(|| self.by_remote.get(&key.dst))
            .copied()
            .ok_or(Unroutable::NoRoute)
    }
}
