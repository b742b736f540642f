//! Networks: the L2 domains NORMAL switches in.
//!
//! A network has member *attachments* (a port, untagged or with a VLAN id: a VLAN network
//! is one whose members are tagged) and optionally a VXLAN segment (a VNI on a tunnel port,
//! a local VTEP IP and the remote VTEPs that get head-end replicated copies of flooded
//! frames). An attachment belongs to at most one network, a (tunnel port, VNI) pair too,
//! and a port is either a tunnel port or a member port.

use super::error::SlowPathError;
use crate::PortId;
use crate::fastmap::FastMap;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A network's identity, chosen by the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NetworkId(pub u32);

impl std::fmt::Display for NetworkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A port's membership in a network: untagged, or carrying one VLAN id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attachment {
    /// The port.
    pub port: PortId,
    /// The VLAN id frames carry on this port, `None` for untagged.
    pub vlan: Option<u16>,
}

impl Attachment {
    /// An untagged (access) attachment.
    pub fn untagged(port: PortId) -> Self {
        Self { port, vlan: None }
    }

    /// A tagged attachment.
    pub fn tagged(port: PortId, vid: u16) -> Self {
        Self {
            port,
            vlan: Some(vid),
        }
    }
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.vlan {
            Some(v) => write!(f, "port {} vlan {v}", self.port),
            None => write!(f, "port {}", self.port),
        }
    }
}

/// A network's VXLAN segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSegment {
    /// The VNI (24 bits).
    pub vni: u32,
    /// The datapath tunnel port that encapsulates and decapsulates.
    pub port: PortId,
    /// The local VTEP IP (outer source). `None`: the source follows the route to each
    /// remote VTEP (the tunnel resolver's preferred source), as when every uplink has
    /// its own VTEP address.
    pub local_ip: Option<IpAddr>,
    /// Remote VTEPs, each sent a copy of flooded frames (head-end replication).
    pub remotes: Vec<IpAddr>,
    /// Outer UDP destination port (4789).
    pub udp_port: u16,
    /// The mark of the outer packets (the network's `fwmark`; 0: none), used by their
    /// route lookup like `ip rule fwmark`.
    pub mark: u32,
    /// DF on the outer IPv4 header (the network's `df`; default set).
    pub df: bool,
    /// The outer UDP checksum (the network's `udp_csum`); `None`: the default, on over
    /// IPv6 only.
    pub udp_csum: Option<bool>,
}

impl VxlanSegment {
    /// A segment with the standard UDP port.
    pub fn new(vni: u32, port: PortId, local_ip: Option<IpAddr>, remotes: Vec<IpAddr>) -> Self {
        Self {
            vni,
            port,
            local_ip,
            remotes,
            udp_port: 4789,
            mark: 0,
            df: true,
            udp_csum: None,
        }
    }
}

/// One L2 domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    /// Local member attachments, in flooding order.
    pub members: Vec<Attachment>,
    /// The VXLAN segment, if the network spans hosts.
    pub vxlan: Option<VxlanSegment>,
}

/// What a port is to NORMAL.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PortRole<'a> {
    /// Not in any network.
    None,
    /// A member port: its attachments.
    Member(&'a [(Option<u16>, NetworkId)]),
    /// A tunnel port: VNI -> network.
    Tunnel(&'a FastMap<u32, NetworkId>),
}

/// Every network, indexed by attachment and by (tunnel port, VNI).
#[derive(Debug, Clone, Default)]
pub struct Networks {
    nets: BTreeMap<NetworkId, Network>,
    members: FastMap<PortId, Vec<(Option<u16>, NetworkId)>>,
    tunnels: FastMap<PortId, FastMap<u32, NetworkId>>,
}

impl Networks {
    /// No networks.
    pub fn new() -> Self {
        Self::default()
    }

    /// A network by id.
    pub fn get(&self, id: NetworkId) -> Option<&Network> {
        self.nets.get(&id)
    }

    /// Every network.
    pub fn iter(&self) -> impl Iterator<Item = (&NetworkId, &Network)> {
        self.nets.iter()
    }

    pub(crate) fn role(&self, port: PortId) -> PortRole<'_> {
        if let Some(m) = self.members.get(&port) {
            PortRole::Member(m)
        } else if let Some(t) = self.tunnels.get(&port) {
            PortRole::Tunnel(t)
        } else {
            PortRole::None
        }
    }

    /// Adds a network.
    pub fn add(&mut self, id: NetworkId, net: Network) -> Result<(), SlowPathError> {
        if self.nets.contains_key(&id) {
            return Err(SlowPathError::DuplicateNetwork(id));
        }
        self.check(id, &net)?;
        self.index(id, &net);
        self.nets.insert(id, net);
        Ok(())
    }

    /// Replaces a network's configuration (members, segment, remote VTEPs).
    pub fn replace(&mut self, id: NetworkId, net: Network) -> Result<(), SlowPathError> {
        let old = self.remove(id)?;
        if let Err(e) = self.check(id, &net) {
            self.index(id, &old);
            self.nets.insert(id, old);
            return Err(e);
        }
        self.index(id, &net);
        self.nets.insert(id, net);
        Ok(())
    }

    /// Removes a network.
    pub fn remove(&mut self, id: NetworkId) -> Result<Network, SlowPathError> {
        let net = self
            .nets
            .remove(&id)
            .ok_or(SlowPathError::UnknownNetwork(id))?;
        for m in &net.members {
            if let Some(list) = self.members.get_mut(&m.port) {
                list.retain(|(_, n)| *n != id);
                if list.is_empty() {
                    self.members.remove(&m.port);
                }
            }
        }
        if let Some(seg) = &net.vxlan
            && let Some(map) = self.tunnels.get_mut(&seg.port)
        {
            map.remove(&seg.vni);
            if map.is_empty() {
                self.tunnels.remove(&seg.port);
            }
        }
        Ok(net)
    }

    fn check(&self, id: NetworkId, net: &Network) -> Result<(), SlowPathError> {
        for (i, m) in net.members.iter().enumerate() {
            self.check_member(id, m)?;
            if net.members[..i].contains(m) {
                return Err(SlowPathError::AttachmentInUse {
                    port: m.port,
                    vlan: m.vlan,
                    network: id,
                });
            }
            if net.vxlan.as_ref().is_some_and(|s| s.port == m.port) {
                return Err(SlowPathError::PortRoleConflict(m.port));
            }
        }
        net.vxlan.as_ref().map_or(Ok(()), |s| self.check_segment(s))
    }

    fn check_member(&self, _id: NetworkId, m: &Attachment) -> Result<(), SlowPathError> {
        if let Some(v) = m.vlan
            && !(1..=4094).contains(&v)
        {
            return Err(SlowPathError::InvalidVid(v));
        }
        if self.tunnels.contains_key(&m.port) {
            return Err(SlowPathError::PortRoleConflict(m.port));
        }
        let taken = self
            .members
            .get(&m.port)
            .and_then(|l| l.iter().find(|(v, _)| *v == m.vlan).map(|(_, n)| *n));
        match taken {
            Some(network) => Err(SlowPathError::AttachmentInUse {
                port: m.port,
                vlan: m.vlan,
                network,
            }),
            None => Ok(()),
        }
    }

    fn check_segment(&self, s: &VxlanSegment) -> Result<(), SlowPathError> {
        if s.vni >= 1 << 24 {
            return Err(SlowPathError::InvalidVni(s.vni));
        }
        if self.members.contains_key(&s.port) {
            return Err(SlowPathError::PortRoleConflict(s.port));
        }
        match self.tunnels.get(&s.port).and_then(|m| m.get(&s.vni)) {
            Some(network) => Err(SlowPathError::VniInUse {
                port: s.port,
                vni: s.vni,
                network: *network,
            }),
            None => Ok(()),
        }
    }

    fn index(&mut self, id: NetworkId, net: &Network) {
        for m in &net.members {
            self.members.entry(m.port).or_default().push((m.vlan, id));
        }
        if let Some(s) = &net.vxlan {
            self.tunnels.entry(s.port).or_default().insert(s.vni, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(vni: u32) -> VxlanSegment {
        VxlanSegment::new(vni, PortId(100), Some("10.0.0.1".parse().unwrap()), vec![])
    }

    #[test]
    fn conflicts_are_refused() {
        let mut n = Networks::new();
        let a = Network {
            members: vec![Attachment::untagged(PortId(1))],
            vxlan: Some(seg(16)),
        };
        n.add(NetworkId(1), a.clone()).unwrap();
        assert_eq!(
            n.add(NetworkId(1), a.clone()),
            Err(SlowPathError::DuplicateNetwork(NetworkId(1)))
        );
        let b = Network {
            members: vec![Attachment::untagged(PortId(1))],
            vxlan: None,
        };
        assert!(matches!(
            n.add(NetworkId(2), b),
            Err(SlowPathError::AttachmentInUse { .. })
        ));
        let c = Network {
            members: vec![Attachment::tagged(PortId(1), 20)],
            vxlan: Some(seg(16)),
        };
        assert!(matches!(
            n.add(NetworkId(3), c),
            Err(SlowPathError::VniInUse { .. })
        ));
        let d = Network {
            members: vec![Attachment::untagged(PortId(100))],
            vxlan: None,
        };
        assert_eq!(
            n.add(NetworkId(4), d),
            Err(SlowPathError::PortRoleConflict(PortId(100)))
        );
        let e = Network {
            members: vec![Attachment::tagged(PortId(2), 4095)],
            vxlan: None,
        };
        assert_eq!(n.add(NetworkId(5), e), Err(SlowPathError::InvalidVid(4095)));
    }

    #[test]
    fn replace_and_remove_reindex() {
        let mut n = Networks::new();
        let a = Network {
            members: vec![Attachment::untagged(PortId(1))],
            vxlan: Some(seg(16)),
        };
        n.add(NetworkId(1), a).unwrap();
        let b = Network {
            members: vec![Attachment::untagged(PortId(2))],
            vxlan: Some(seg(17)),
        };
        n.replace(NetworkId(1), b).unwrap();
        assert!(matches!(n.role(PortId(1)), PortRole::None));
        assert!(matches!(n.role(PortId(2)), PortRole::Member(_)));
        n.remove(NetworkId(1)).unwrap();
        assert!(matches!(n.role(PortId(100)), PortRole::None));
    }
}
