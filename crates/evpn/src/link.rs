//! A network's shadow devices: their names, what the kernel reports of them, and the
//! requests that create, configure and delete them.
//!
//! Per EVPN network (VNI `N`):
//!
//! | device | what | why |
//! |---|---|---|
//! | `evbr-N` | a bridge | zebra maps a VNI to the bridge its vxlan device is a port of, and reads local MACs from that bridge's FDB |
//! | `evvx-N` | a vxlan device: `id N`, `local` = the network's VTEP, `dstport` = the shadow port (never 4789), `nolearning`; bridge port with `learning off` | zebra announces the VNI (type 3) with this VTEP, and installs remote MACs and flood entries on it |
//! | `evad-N` (peer `evpe-N`) | a veth end, bridge port with `learning off` (a dummy device where the kernel has one; this one may not) | flowd's local stations: static FDB entries on this port, which zebra announces (type 2) |
//!
//! All are up, with IPv6 disabled (the host must not speak on them: the shadow vxlan
//! device would carry it to the remote VTEPs). No data traffic ever crosses them: flowd
//! forwards in its own datapath on the standard VXLAN port.

use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth,
    InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use std::net::{IpAddr, Ipv4Addr};
use vocab::IfIndex;

/// The default UDP port of the shadow vxlan devices: outside Linux's ephemeral range
/// (32768-60999), and not VXLAN's 4789, so that they never take data traffic.
pub const DEFAULT_UDP_PORT: u16 = 61_000;

/// What flowd wants for one EVPN network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShadowSpec {
    /// The VNI.
    pub vni: u32,
    /// The local VTEP zebra announces (the network's `local_vtep`).
    pub local: Ipv4Addr,
    /// The shadow vxlan device's UDP port.
    pub udp_port: u16,
}

/// The shadow devices' names for a VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The bridge.
    pub bridge: String,
    /// The vxlan device.
    pub vxlan: String,
    /// The advertise port (a veth end in the bridge).
    pub adv: String,
    /// The advertise port's veth peer (outside the bridge).
    pub peer: String,
}

impl Names {
    /// `evbr-N`, `evvx-N`, `evad-N`, `evpe-N` (at most 13 characters).
    pub fn of(vni: u32) -> Self {
        Self {
            bridge: format!("evbr-{vni}"),
            vxlan: format!("evvx-{vni}"),
            adv: format!("evad-{vni}"),
            peer: format!("evpe-{vni}"),
        }
    }

    /// The VNI whose shadow device `name` is, if it is one.
    pub fn vni_of(name: &str) -> Option<u32> {
        ["evbr-", "evvx-", "evad-", "evpe-"]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .and_then(|n| n.parse().ok())
    }
}

/// A vxlan device's parameters, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanFacts {
    /// The VNI.
    pub id: u32,
    /// The local address.
    pub local: Option<IpAddr>,
    /// The UDP destination port.
    pub port: u16,
    /// Whether it learns remote MACs from traffic.
    pub learning: bool,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    /// Its index.
    pub ifindex: IfIndex,
    /// Its name.
    pub name: String,
    /// `bridge`, `vxlan`, `veth`, ...
    pub kind: Option<String>,
    /// Its bridge, if it is a port.
    pub master: Option<IfIndex>,
    /// Administratively up.
    pub up: bool,
    /// A vxlan device's parameters.
    pub vxlan: Option<VxlanFacts>,
}

/// The facts of a link message (`None` without a name).
pub fn facts(m: &LinkMessage) -> Option<LinkFacts> {
    let mut f = LinkFacts {
        ifindex: IfIndex(m.header.index),
        name: String::new(),
        kind: None,
        master: None,
        up: m.header.flags.contains(LinkFlags::Up),
        vxlan: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => f.name = n.clone(),
            LinkAttribute::Controller(i) => f.master = Some(IfIndex(*i)),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => f.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => f.vxlan = Some(vxlan_facts(v)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (!f.name.is_empty()).then_some(f)
}

fn vxlan_facts(attrs: &[InfoVxlan]) -> VxlanFacts {
    let mut v = VxlanFacts {
        id: 0,
        local: None,
        port: 0,
        learning: true,
    };
    for a in attrs {
        match a {
            InfoVxlan::Id(id) => v.id = *id,
            InfoVxlan::Local(ip) => v.local = Some((*ip).into()),
            InfoVxlan::Local6(ip) => v.local = Some((*ip).into()),
            InfoVxlan::Port(p) => v.port = *p,
            InfoVxlan::Learning(l) => v.learning = *l,
            _ => {}
        }
    }
    v
}

fn named(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

/// A new bridge (down).
pub fn new_bridge(name: &str) -> LinkMessage {
    let mut m = named(name);
    m.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Bridge,
        )]));
    m
}

/// A bridge's settings: no default PVID. A kernel built with VLAN filtering otherwise
/// gives every port VLAN 1, and adds each FDB entry written without a VLAN twice (VLAN 0
/// and 1); a kernel without it refuses the setting (`EOPNOTSUPP`), and needs none.
pub fn bridge_no_default_pvid(bridge: IfIndex) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = bridge.0;
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanDefaultPvid(0)])),
    ]));
    m
}

/// A new vxlan device for `spec` (down), a port of `bridge`.
pub fn new_vxlan(name: &str, spec: &ShadowSpec, bridge: IfIndex) -> LinkMessage {
    let mut m = named(name);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(vec![
            InfoVxlan::Id(spec.vni),
            InfoVxlan::Local(spec.local),
            InfoVxlan::Port(spec.udp_port),
            InfoVxlan::Learning(false),
        ])),
    ]));
    m.attributes.push(LinkAttribute::Controller(bridge.0));
    m
}

/// A new veth pair `name` / `peer` (down), `name` a port of `bridge`.
pub fn new_veth(name: &str, peer: &str, bridge: IfIndex) -> LinkMessage {
    let mut m = named(name);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(named(peer)))),
    ]));
    m.attributes.push(LinkAttribute::Controller(bridge.0));
    m
}

/// A bridge port's settings: `learning off` (flowd and zebra write every entry).
pub fn bridge_port(port: IfIndex) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = port.0;
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Learning(
            false,
        )])),
    ]));
    m
}

/// A link set up.
pub fn set_up(ifindex: IfIndex) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = ifindex.0;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m
}

/// A link to delete.
pub fn delete(ifindex: IfIndex) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = ifindex.0;
    m
}

/// Why an existing device cannot serve as `spec`'s shadow device as it is: `Some(why)`
/// means it must be re-created (a vxlan device with another VNI, VTEP or port), or, for
/// a device of another kind, that it is not flowd's.
pub fn mismatch(f: &LinkFacts, role: Role, spec: &ShadowSpec, bridge: IfIndex) -> Option<String> {
    let want = match role {
        Role::Bridge => "bridge",
        Role::Vxlan => "vxlan",
        Role::Adv => "veth",
    };
    if f.kind.as_deref() != Some(want) {
        return Some(format!(
            "is a {} device, not a {want}",
            f.kind.as_deref().unwrap_or("plain")
        ));
    }
    if role != Role::Bridge && f.master != Some(bridge) {
        return Some("is not a port of its bridge".into());
    }
    if role == Role::Vxlan {
        let v = f.vxlan?;
        let want = (spec.vni, Some(IpAddr::V4(spec.local)), spec.udp_port, false);
        if (v.id, v.local, v.port, v.learning) != want {
            return Some(format!(
                "has id {} local {:?} dstport {} learning {} (want id {} local {} dstport {} nolearning)",
                v.id, v.local, v.port, v.learning, spec.vni, spec.local, spec.udp_port
            ));
        }
    }
    None
}

/// What a shadow device is to its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// The bridge.
    Bridge,
    /// The vxlan device.
    Vxlan,
    /// The advertise port.
    Adv,
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;
    use netlink_packet_core::Parseable;

    fn spec() -> ShadowSpec {
        ShadowSpec {
            vni: 100,
            local: Ipv4Addr::new(192, 168, 0, 1),
            udp_port: DEFAULT_UDP_PORT,
        }
    }

    fn round_trip(m: &LinkMessage) -> LinkFacts {
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        let back = LinkMessage::parse(&buf[..]).expect("parses");
        facts(&back).expect("named")
    }

    #[test]
    fn names_fit_ifnamsiz_and_map_back() {
        let n = Names::of(16_777_215);
        assert!(n.bridge.len() <= 15 && n.peer.len() <= 15);
        assert_eq!(Names::vni_of(&n.vxlan), Some(16_777_215));
        assert_eq!(Names::vni_of("eth0"), None);
        assert_eq!(Names::vni_of("evbr-x"), None);
    }

    #[test]
    fn vxlan_request_carries_the_spec() {
        let m = new_vxlan("evvx-100", &spec(), IfIndex(5));
        let f = round_trip(&m);
        assert_eq!(f.kind.as_deref(), Some("vxlan"));
        assert_eq!(f.master, Some(IfIndex(5)));
        assert_eq!(
            f.vxlan,
            Some(VxlanFacts {
                id: 100,
                local: Some("192.168.0.1".parse().unwrap()),
                port: 61_000,
                learning: false
            })
        );
        assert_eq!(mismatch(&f, Role::Vxlan, &spec(), IfIndex(5)), None);
        let other = ShadowSpec {
            udp_port: 4789,
            ..spec()
        };
        assert!(mismatch(&f, Role::Vxlan, &other, IfIndex(5)).is_some());
        assert!(mismatch(&f, Role::Vxlan, &spec(), IfIndex(6)).is_some());
        assert!(mismatch(&f, Role::Bridge, &spec(), IfIndex(5)).is_some());
    }

    #[test]
    fn bridge_and_veth_requests() {
        let b = round_trip(&new_bridge("evbr-100"));
        assert_eq!(
            (b.name.as_str(), b.kind.as_deref()),
            ("evbr-100", Some("bridge"))
        );
        let v = round_trip(&new_veth("evad-100", "evpe-100", IfIndex(5)));
        assert_eq!(
            (v.kind.as_deref(), v.master),
            (Some("veth"), Some(IfIndex(5)))
        );
        assert_eq!(mismatch(&v, Role::Adv, &spec(), IfIndex(5)), None);
        let up = set_up(IfIndex(9));
        assert!(up.header.flags.contains(LinkFlags::Up));
        assert_eq!(up.header.change_mask, LinkFlags::Up);
    }
}
