//! Tests of the slow path: shared fixtures (a lab of networks, keys, actions) here; NORMAL,
//! learning, aging, flooding and isolation in `normal`; rules, traces and network changes
//! in `rules`; control-plane stations in `remote`; the engine in `engine`.
#![allow(clippy::field_reassign_with_default)]

mod engine;
mod normal;
mod remote;
mod rules;

use super::*;
use crate::PortId;
use crate::actions::{Action, TunnelAttrs};
use crate::flow::{FlowMask, addr_to, tun_flags, vlan};
use std::net::IpAddr;

pub(crate) const TUN: PortId = PortId(100);
pub(crate) const NET16: NetworkId = NetworkId(16);
pub(crate) const NET17: NetworkId = NetworkId(17);
pub(crate) const NET20: NetworkId = NetworkId(20);

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn mac(last: u8) -> Mac {
    Mac([0x02, 0, 0, 0, 0, last])
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// VNI 16: ports 1, 2 and VTEPs .2, .3; VNI 17: port 3 and VTEP .2; VLAN 20: port 4
/// tagged 20 and port 5 untagged.
pub(crate) fn lab() -> SlowPath {
    let mut sp = SlowPath::with_normal(MacConfig::default());
    let seg = |vni, remotes: &[&str]| {
        Some(VxlanSegment::new(
            vni,
            TUN,
            Some(ip("10.0.0.1")),
            remotes.iter().map(|r| ip(r)).collect(),
        ))
    };
    let untagged = |p| Attachment::untagged(PortId(p));
    sp.add_network(
        NET16,
        Network {
            members: vec![untagged(1), untagged(2)],
            vxlan: seg(16, &["10.0.0.2", "10.0.0.3"]),
        },
    )
    .unwrap();
    sp.add_network(
        NET17,
        Network {
            members: vec![untagged(3)],
            vxlan: seg(17, &["10.0.0.2"]),
        },
    )
    .unwrap();
    sp.add_network(
        NET20,
        Network {
            members: vec![Attachment::tagged(PortId(4), 20), untagged(5)],
            vxlan: None,
        },
    )
    .unwrap();
    sp
}

pub(crate) fn frame(in_port: u32, src: Mac, dst: Mac) -> FlowKey {
    let mut k = FlowKey::default();
    k.in_port = in_port;
    k.eth_src = src.0;
    k.eth_dst = dst.0;
    k.eth_type = 0x0800;
    k.ip_src = addr_to(ip("192.168.0.1"));
    k.ip_dst = addr_to(ip("192.168.0.2"));
    k.ip_proto = 6;
    k.tp_src = 40000;
    k.tp_dst = 80;
    k
}

pub(crate) fn from_vtep(vni: u32, vtep: &str, src: Mac, dst: Mac) -> FlowKey {
    let mut k = frame(TUN.0, src, dst);
    k.tun_flags = tun_flags::PRESENT | tun_flags::KEY;
    k.tun_vni = vni;
    k.tun_src = addr_to(ip(vtep));
    k.tun_dst = addr_to(ip("10.0.0.1"));
    k.tun_tp_dst = 4789;
    k
}

fn encap(vni: u32, vtep: &str) -> [Action; 2] {
    let attrs = TunnelAttrs {
        src: Some(ip("10.0.0.1")),
        ..TunnelAttrs::vxlan(vni, ip(vtep))
    };
    [Action::SetTunnel(attrs), Action::Output(TUN)]
}

fn out(p: u32) -> Action {
    Action::Output(PortId(p))
}

fn acts(x: &Xlation) -> Vec<Action> {
    x.actions.as_slice().to_vec()
}

fn station(mac: Mac, vtep: &str) -> RemoteUpdate {
    RemoteUpdate::Station {
        network: NET16,
        mac,
        vtep: ip(vtep),
    }
}

fn gone(mac: Mac, vtep: &str) -> RemoteUpdate {
    RemoteUpdate::StationGone {
        network: NET16,
        mac,
        vtep: ip(vtep),
    }
}

fn flood_list(vteps: &[&str]) -> RemoteUpdate {
    RemoteUpdate::FloodList {
        network: NET16,
        vteps: vteps.iter().map(|v| ip(v)).collect(),
    }
}
