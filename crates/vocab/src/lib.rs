//! flowd's shared vocabulary: the few words every crate speaks.
//!
//! - ids: [`PortId`] (a datapath port number), [`IfIndex`] (a kernel interface index),
//!   [`FlowId`] (a flow's identity);
//! - [`Mac`], [`SwitchId`] (an eswitch's `phys_switch_id`), [`PortRole`];
//! - tunnels: [`LookupKey`] (what a tunnel's outer packet is routed by: remote VTEP,
//!   fixed source or none, mark), [`TunnelRole`], [`vxlan_overhead`];
//! - path facts: what routing says about one lookup key *now*: a [`Path`] (uplink,
//!   source, next hop and its MAC, path MTU) or a [`PathProblem`].
//!
//! The FIB watcher produces path facts, the offload layer judges placement on them (with
//! the ports' live facts), the daemon's route table serves them to the software
//! datapath: each reads the same types from here, and none depends on another for them.
//! This crate depends on nothing.

#![deny(unsafe_code)]

use std::fmt;
use std::net::IpAddr;

/// A datapath port number (`in_port(N)` in the flow syntax). Ports are numbered by flowd,
/// not by the kernel: a port's netdev ifindex is a property of the port, not its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortId(pub u32);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Linux network interface index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfIndex(pub u32);

impl fmt::Display for IfIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A flow's identity, stable for its life in the cache, shared with offload and fibwatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u64);

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A MAC address.
pub type Mac = [u8; 6];

/// An eswitch identity (the kernel's `phys_switch_id`; labs declare one for veths).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwitchId(pub Vec<u8>);

impl fmt::Display for SwitchId {
    /// Lowercase hex, as `ip -d link` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What a port is to flowd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortRole {
    /// A VF representor: traffic from and to a VM.
    Representor,
    /// A physical uplink (VXLAN underlay).
    Uplink,
    /// The VXLAN tunnel device: outputs to it encapsulate, decapsulated packets arrive
    /// from it.
    Tunnel,
}

impl fmt::Display for PortRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortRole::Representor => "representor",
            PortRole::Uplink => "uplink",
            PortRole::Tunnel => "tunnel",
        })
    }
}

/// The IANA VXLAN port, flowd's tunnels' UDP destination.
pub const VXLAN_PORT: u16 = 4789;

/// VXLAN encapsulation overhead toward `remote`: 14 Ethernet + 20 IPv4 (40 IPv6) + 8 UDP
/// + 8 VXLAN = 50 (70) bytes. The MTU rule: representor MTU + this <= path MTU.
pub fn vxlan_overhead(remote: &IpAddr) -> u32 {
    match remote {
        IpAddr::V4(_) => 50,
        IpAddr::V6(_) => 70,
    }
}

/// What a tunnel's outer packet is routed by, like the kernel's output lookup: the
/// remote VTEP, the fixed local source if the network has one (`ip rule from`), and the
/// packet mark (`ip rule fwmark`). Every flow with the same key takes the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupKey {
    /// The remote tunnel endpoint (outer destination).
    pub dst: IpAddr,
    /// The fixed outer source, or `None` when the source follows the route.
    pub src: Option<IpAddr>,
    /// The outer packet's mark (0: none).
    pub mark: u32,
}

impl LookupKey {
    /// A lookup for `dst` with no fixed source and no mark.
    pub fn to(dst: IpAddr) -> Self {
        Self {
            dst,
            src: None,
            mark: 0,
        }
    }
}

impl fmt::Display for LookupKey {
    /// `10.0.0.2`, `10.0.0.2 from 192.168.1.1`, `10.0.0.2 mark 0x5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(s) = self.src {
            write!(f, " from {s}")?;
        }
        if self.mark != 0 {
            write!(f, " mark {:#x}", self.mark)?;
        }
        Ok(())
    }
}

/// What a flow does with a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelRole {
    /// Encapsulates toward the key's remote VTEP.
    Encap,
    /// Decapsulates packets from the key's remote VTEP.
    Decap,
}

/// A tunnel path a flow depends on: its lookup key and what the flow does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelPath {
    /// The lookup key.
    pub key: LookupKey,
    /// Encap or decap.
    pub role: TunnelRole,
}

/// Where one lookup key's outer packets go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    /// The egress interface.
    pub uplink: IfIndex,
    /// The outer source address (`None`: the kernel would find none).
    pub src: Option<IpAddr>,
    /// The gateway (`None`: the remote is directly connected).
    pub gateway: Option<IpAddr>,
    /// The neighbour whose MAC is needed: the gateway, or the remote itself.
    pub neighbour: IpAddr,
    /// The next hop's MAC, `None` while the neighbour is unresolved.
    pub next_hop_mac: Option<Mac>,
    /// The egress interface's MAC (outer Ethernet source).
    pub uplink_mac: Option<Mac>,
    /// The path MTU: the route's `mtu`, else the egress interface's MTU.
    pub mtu: u32,
    /// The routing table the route came from.
    pub table: u32,
    /// What the host's IPsec policy does to the path's outer packets (`None`: nothing).
    pub ipsec: Option<Ipsec>,
}

impl Path {
    /// The bytes encapsulation adds toward `remote` on this path: VXLAN's, and the
    /// IPsec transform's when an SA protects it.
    pub fn overhead(&self, remote: &IpAddr) -> u32 {
        vxlan_overhead(remote) + self.ipsec.and_then(|i| i.sa).map_or(0, |sa| sa.overhead)
    }
}

/// An outbound IPsec policy that selects a tunnel path (`ip xfrm policy ... dir out`):
/// the kernel encrypts, or drops, every outer packet of the path that goes through its
/// IP output; none may leave any other way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipsec {
    /// The policy's index (`ip xfrm policy` prints it as `index`).
    pub policy: u32,
    /// A `block` policy: the kernel drops the path's packets.
    pub blocks: bool,
    /// The template's protocol (50 ESP, 51 AH; 0 for a block policy).
    pub proto: u8,
    /// The template's mode (0 transport, 1 tunnel).
    pub mode: u8,
    /// The template's request id (0: any).
    pub reqid: u32,
    /// The SA the kernel would use, `None` while there is none (the kernel holds the
    /// path's packets and asks a key manager).
    pub sa: Option<IpsecSa>,
}

/// The SA protecting a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpsecSa {
    /// Its SPI.
    pub spi: u32,
    /// The most bytes its transform adds to a packet (ESP header, IV, padding, trailer,
    /// ICV; the outer header in tunnel mode).
    pub overhead: u32,
    /// The device holding it with packet offload, if any: only there may a NIC emit the
    /// path's packets itself.
    pub packet_offload: Option<IfIndex>,
}

impl fmt::Display for Ipsec {
    /// `policy 12 esp transport spi 0x3`, `policy 12 esp transport (no SA)`, `policy
    /// 4 block`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}", self.policy)?;
        if self.blocks {
            return f.write_str(" block");
        }
        let proto = match self.proto {
            50 => "esp",
            51 => "ah",
            108 => "comp",
            _ => "ipsec",
        };
        let mode = if self.mode == 1 {
            "tunnel"
        } else {
            "transport"
        };
        write!(f, " {proto} {mode}")?;
        match self.sa {
            Some(sa) => {
                write!(f, " spi {:#x}", sa.spi)?;
                if let Some(dev) = sa.packet_offload {
                    write!(f, " offload packet dev {dev}")?;
                }
                Ok(())
            }
            None => f.write_str(" (no SA)"),
        }
    }
}

/// Why a lookup key has no path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathProblem {
    /// No rule led to a matching route.
    NoRoute,
    /// A rule or route refuses (unreachable, blackhole, prohibit).
    Refused,
    /// The destination is local, broadcast, multicast or anycast.
    NotUnicast,
    /// Not resolved yet (the key is not tracked).
    Unknown,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::NoRoute => "no route",
            PathProblem::Refused => "route refuses (unreachable, blackhole or prohibit)",
            PathProblem::NotUnicast => "not a unicast destination",
            PathProblem::Unknown => "path not resolved yet",
        })
    }
}

/// What routing says about one lookup key now.
pub type PathFacts = Result<Path, PathProblem>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids_print_for_operators() {
        let k = LookupKey {
            dst: "10.0.0.2".parse().unwrap(),
            src: Some("192.168.1.1".parse().unwrap()),
            mark: 0x5,
        };
        assert_eq!(k.to_string(), "10.0.0.2 from 192.168.1.1 mark 0x5");
        assert_eq!(LookupKey::to(k.dst).to_string(), "10.0.0.2");
        assert_eq!(SwitchId(vec![0, 0xaa, 0x0b]).to_string(), "00aa0b");
        assert_eq!(FlowId(255).to_string(), "0xff");
        assert_eq!(vxlan_overhead(&"::1".parse().unwrap()), 70);
        assert_eq!(vxlan_overhead(&k.dst), 50);
    }
}
