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
    /// Path MTU toward the endpoint (less the IPsec transform's overhead on a protected
    /// path).
    pub mtu: u16,
    /// How the encapsulated packet leaves.
    pub via: Via,
}

/// How an encapsulated packet leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Via {
    /// Written onto the egress uplink directly (AF_PACKET): the fast path.
    #[default]
    Uplink,
    /// Handed to the kernel's IP output through the tunnel port
    /// ([`KernelTunnel`](crate::port::KernelTunnel)): the host's IPsec policy protects
    /// the path, and only the kernel may apply it. `sa`: whether the policy has an SA
    /// (without one the kernel drops the packet and asks its key manager for one).
    Kernel {
        /// An SA exists.
        sa: bool,
    },
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
    /// The host's IPsec policy blocks the path.
    IpsecBlocked,
}

/// Resolves a tunnel's lookup key to a route.
pub trait TunnelResolver: Send + Sync {
    /// The route for `key`, or why there is none.
    fn resolve(&self, key: &LookupKey) -> Result<TunnelRoute, Unroutable>;

    /// Whether the host's inbound IPsec policy may cover VXLAN from `remote` to `local`:
    /// then only what the kernel delivered (decrypted, checked against the policy)
    /// counts, never a frame read off an uplink. Asked per received VXLAN frame: answer
    /// without allocating or blocking.
    fn inbound_protected(&self, _remote: IpAddr, _local: IpAddr) -> bool {
        false
    }
}

/// A fixed table of tunnel routes: by exact lookup key, else by remote VTEP alone.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    routes: HashMap<LookupKey, TunnelRoute>,
    by_remote: HashMap<IpAddr, TunnelRoute>,
    inbound: Vec<IpAddr>,
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

    /// VXLAN from `remote` counts only as the kernel delivers it (an inbound IPsec
    /// policy covers it).
    pub fn protect_inbound(&mut self, remote: IpAddr) {
        self.inbound.push(remote);
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

    fn inbound_protected(&self, remote: IpAddr, _local: IpAddr) -> bool {
        self.inbound.contains(&remote)
    }
}
