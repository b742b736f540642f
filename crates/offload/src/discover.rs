//! Port discovery: representors, uplinks and switch ids from rtnetlink
//! (IFLA_PHYS_SWITCH_ID, IFLA_PHYS_PORT_NAME, a link dump through [`rtnl`]) with sysfs
//! as fallback. The eswitch mode comes from devlink ([`crate::devlink`]).
//!
//! Veths have no switch id: a lab declares them members of a software-only eswitch by
//! giving their [`PortInfo`](crate::PortInfo) a made-up id.

use crate::ports::PortKind;
use datapath::IfIndex;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkMessage;

/// One netdev as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    /// ifindex.
    pub ifindex: IfIndex,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Administratively and operationally up (IFF_UP and IFF_LOWER_UP).
    pub up: bool,
    /// IFLA_PHYS_SWITCH_ID.
    pub switch_id: Option<Vec<u8>>,
    /// IFLA_PHYS_PORT_NAME (`p0`, `pf0vf1`).
    pub port_name: Option<String>,
    /// IFLA_INFO_KIND (`vxlan`, `veth`).
    pub kind: Option<String>,
}

impl LinkFacts {
    /// What the port is, from its port name or link kind.
    pub fn port_kind(&self) -> Option<PortKind> {
        if self.kind.as_deref() == Some("vxlan") {
            return Some(PortKind::Tunnel);
        }
        port_kind_from_name(self.port_name.as_deref()?)
    }
}

impl LinkFacts {
    /// The offload layer's view of this link as datapath port `id`. `lab_switch_id`
    /// declares a link without a switch id (a veth) a member of a software-only
    /// eswitch, and `lab_kind` gives its role. `None` when the link is neither on an
    /// eswitch nor declared.
    pub fn to_port(
        &self,
        id: datapath::PortId,
        lab_switch_id: Option<Vec<u8>>,
        lab_kind: Option<PortKind>,
    ) -> Option<crate::PortInfo> {
        let kind = self.port_kind().or(lab_kind)?;
        let switch_id = self.switch_id.clone().or(lab_switch_id);
        if switch_id.is_none() && kind != PortKind::Tunnel {
            return None;
        }
        Some(crate::PortInfo {
            id,
            name: self.name.clone(),
            ifindex: self.ifindex,
            kind,
            mtu: self.mtu,
            up: self.up,
            switch_id: switch_id.map(crate::ports::SwitchId),
        })
    }
}

/// Classifies an IFLA_PHYS_PORT_NAME: `pfNvfM` is VF M's representor, `pN` an uplink.
pub fn port_kind_from_name(n: &str) -> Option<PortKind> {
    if let Some(rest) = n.strip_prefix("pf") {
        let (_, vf) = rest.split_once("vf")?;
        return vf.parse().ok().map(|vf| PortKind::Representor { vf });
    }
    let num = n.strip_prefix('p')?;
    (!num.is_empty() && num.chars().all(|c| c.is_ascii_digit())).then_some(PortKind::Uplink)
}

pub(crate) fn sysfs(name: &str, attr: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}")).ok()?;
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Dumps the links of the current network namespace (a [`rtnl::Requester::dump`],
/// retried when interrupted; its error is the I/O error's inner error).
pub fn links() -> std::io::Result<Vec<LinkFacts>> {
    let dump = || -> rtnl::Result<Vec<RouteNetlinkMessage>> {
        rtnl::Requester::open()?.dump(
            "links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )
    };
    Ok(dump()
        .map_err(std::io::Error::other)?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => facts(l),
            _ => None,
        })
        .collect())
}

fn facts(l: &LinkMessage) -> Option<LinkFacts> {
    let d = rtnl::LinkFacts::decode(l)?;
    let mut f = LinkFacts {
        ifindex: IfIndex(d.index),
        name: d.name,
        mtu: d.mtu,
        up: d.admin_up && d.oper_up,
        switch_id: d.switch_id,
        port_name: d.port_name,
        kind: d.kind,
    };
    if f.switch_id.is_none() {
        f.switch_id = sysfs(&f.name, "phys_switch_id").and_then(|s| hex_bytes(&s));
    }
    if f.port_name.is_none() {
        f.port_name = sysfs(&f.name, "phys_port_name");
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        assert_eq!(
            port_kind_from_name("pf0vf3"),
            Some(PortKind::Representor { vf: 3 })
        );
        assert_eq!(port_kind_from_name("p1"), Some(PortKind::Uplink));
        assert_eq!(port_kind_from_name("pf0"), None);
        assert_eq!(port_kind_from_name("eth0"), None);
        assert_eq!(
            hex_bytes("043f72ad0512"),
            Some(vec![0x04, 0x3f, 0x72, 0xad, 0x05, 0x12])
        );
    }

    #[test]
    fn loopback_is_discovered_and_is_no_port() {
        let Ok(links) = links() else { return };
        let lo = links.iter().find(|l| l.name == "lo").expect("lo");
        assert_eq!(lo.mtu, 65536);
        assert!(lo.switch_id.is_none());
        assert_eq!(lo.to_port(datapath::PortId(1), None, None), None);
        let p = lo
            .to_port(datapath::PortId(1), Some(vec![1]), Some(PortKind::Uplink))
            .unwrap();
        assert_eq!((p.name.as_str(), p.kind), ("lo", PortKind::Uplink));
    }
}
