//! A link as rtnetlink describes it, decoded once for every crate that lists links
//! (fibwatch's mirror, offload's discovery of representors).

use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};

/// A link's facts from one `RTM_NEWLINK`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkFacts {
    /// The interface index (never 0).
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Carrier (`IFF_LOWER_UP`).
    pub oper_up: bool,
    /// The hardware address, when it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// `IFLA_PHYS_SWITCH_ID`: the eswitch the port belongs to.
    pub switch_id: Option<Vec<u8>>,
    /// `IFLA_PHYS_PORT_NAME` (`p0`, `pf0vf1`).
    pub port_name: Option<String>,
    /// The link kind (`vxlan`, `veth`, ...), lower case.
    pub kind: Option<String>,
}

impl LinkFacts {
    /// The facts of a link message; None for a message that is not about a link
    /// (another family, or index 0).
    pub fn decode(m: &LinkMessage) -> Option<Self> {
        if m.header.interface_family != AddressFamily::Unspec || m.header.index == 0 {
            return None;
        }
        let mut l = LinkFacts {
            index: m.header.index,
            admin_up: m.header.flags.contains(LinkFlags::Up),
            oper_up: m.header.flags.contains(LinkFlags::LowerUp),
            ..LinkFacts::default()
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::Address(b) => l.mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
                LinkAttribute::PhysSwitchId(id) => {
                    l.switch_id = id.id.get(..id.len).map(<[u8]>::to_vec);
                }
                LinkAttribute::PhysPortName(n) => l.port_name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => l.kind = kind(infos).or(l.kind),
                _ => {}
            }
        }
        Some(l)
    }
}

fn kind(infos: &[LinkInfo]) -> Option<String> {
    infos.iter().find_map(|i| match i {
        LinkInfo::Kind(InfoKind::Vxlan) => Some("vxlan".to_string()),
        LinkInfo::Kind(InfoKind::Veth) => Some("veth".to_string()),
        LinkInfo::Kind(other) => Some(format!("{other:?}").to_lowercase()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_message_decodes_to_its_facts() {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.attributes = vec![
            LinkAttribute::IfName("rep0".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 7]),
            LinkAttribute::PhysPortName("pf0vf1".into()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let l = LinkFacts::decode(&m).expect("a link");
        assert_eq!(
            l,
            LinkFacts {
                index: 7,
                name: "rep0".into(),
                mtu: 1450,
                admin_up: true,
                oper_up: true,
                mac: Some([2, 0, 0, 0, 0, 7]),
                switch_id: None,
                port_name: Some("pf0vf1".into()),
                kind: Some("veth".into()),
            }
        );
        // Not a link: index 0, or another family.
        m.header.index = 0;
        assert_eq!(LinkFacts::decode(&m), None);
        m.header.index = 7;
        m.header.interface_family = AddressFamily::Inet;
        assert_eq!(LinkFacts::decode(&m), None);
        // A hardware address that is not Ethernet's is no MAC.
        let mut m = LinkMessage::default();
        m.header.index = 3;
        m.attributes = vec![LinkAttribute::Address(vec![1, 2, 3, 4])];
        assert_eq!(LinkFacts::decode(&m).and_then(|l| l.mac), None);
    }
}
