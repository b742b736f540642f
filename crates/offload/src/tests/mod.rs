//! Unit tests of the offload layer, by subject: [`translate`] (megaflows into flower
//! rules, failing closed), [`judge`] (placement facts: MTU, eswitch, neighbours,
//! IPsec); the netlink encoding and decoding tests (golden captures of iproute2's
//! requests, flowd's own pinned bytes, hostile input, echoes) sit beside the message
//! modules, in `netlink/tests.rs`. Here: the fixtures they share (ports, paths, the
//! seed's flows).

use crate::judge::{Facts, judge};
use crate::netlink::{self, RequestKind};
use crate::ports::{PortInfo, PortKind, PortTable};
use crate::rule::{FlowerAction, FlowerRule, TcPolicy};
use crate::translate::translate;
use crate::{OffloadError, Placement, SoftwareReason, Unsupported};
use datapath::fastmap::FastMap;
use datapath::flow::{addr_to, frag, tun_flags, vlan};
use datapath::{
    Action, Actions, FlowId, FlowKey, FlowMask, IfIndex, Megaflow, PortId, TunnelAttrs,
};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use std::net::IpAddr;
use vocab::{Ipsec, IpsecSa, LookupKey, Path, PathFacts, PathProblem, SwitchId};

mod judge;
mod translate;

pub(crate) const REP0: PortId = PortId(1);
pub(crate) const UP0: PortId = PortId(2);
pub(crate) const VXLAN: PortId = PortId(3);
pub(crate) const REP1: PortId = PortId(4);
pub(crate) const SW: [u8; 6] = [0x04, 0x3f, 0x72, 0xad, 0x05, 0x12];

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn ports(rep_mtu: u32, uplink_mtu: u32) -> PortTable {
    let p = |id, name: &str, ifindex, kind, mtu, sw: bool| PortInfo {
        id,
        name: name.into(),
        ifindex: IfIndex(ifindex),
        kind,
        mtu,
        up: true,
        switch_id: sw.then(|| SwitchId(SW.to_vec())),
    };
    [
        p(
            REP0,
            "rep0",
            3,
            PortKind::Representor { vf: 0 },
            rep_mtu,
            true,
        ),
        p(UP0, "up0", 10, PortKind::Uplink, uplink_mtu, true),
        p(VXLAN, "vxlan_sys", 5, PortKind::Tunnel, 1500, false),
        p(REP1, "rep1", 4, PortKind::Representor { vf: 1 }, 1500, true),
    ]
    .into_iter()
    .collect()
}

/// A path out of up0 (ifindex 10) with a resolved next hop and MTU 1500.
pub(crate) fn path_via_up0(src: &str) -> Path {
    Path {
        uplink: IfIndex(10),
        src: Some(ip(src)),
        gateway: None,
        neighbour: ip("192.168.203.1"),
        next_hop_mac: Some([4; 6]),
        uplink_mac: Some([2; 6]),
        mtu: 1500,
        table: 254,
        ipsec: None,
    }
}

/// Path facts: the seed's remote VTEP (IPv4, also with the seed's fixed source, and
/// IPv6) via up0; 192.168.203.99 via up0 with its next hop unresolved.
pub(crate) fn paths() -> FastMap<LookupKey, PathFacts> {
    let v4 = path_via_up0("192.168.203.51");
    let fixed = LookupKey {
        src: Some(ip("192.168.203.51")),
        ..LookupKey::to(ip("192.168.203.56"))
    };
    FastMap::from_iter([
        (LookupKey::to(ip("192.168.203.56")), Ok(v4)),
        (fixed, Ok(v4)),
        (
            LookupKey::to(ip("2001:db8::56")),
            Ok(Path {
                src: Some(ip("2001:db8::51")),
                ..v4
            }),
        ),
        (
            LookupKey::to(ip("192.168.203.99")),
            Ok(Path {
                next_hop_mac: None,
                ..v4
            }),
        ),
    ])
}

/// The seed's encap flow: from rep0, src_mac (+ dst_mac), eth_type.
pub(crate) fn seed_encap(eth_type: u16, dst_mac: [u8; 6]) -> (Megaflow, Actions) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = REP0.0;
    m.in_port = u32::MAX;
    k.eth_type = eth_type;
    m.eth_type = 0xffff;
    k.eth_src = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
    m.eth_src = [0xff; 6];
    k.eth_dst = dst_mac;
    m.eth_dst = [0xff; 6];
    let mut t = TunnelAttrs::vxlan(16, ip("192.168.203.56"));
    t.src = Some(ip("192.168.203.51"));
    t.ttl = 0;
    t.csum = true;
    // The seed's filter sets no `nofrag`.
    t.df = false;
    (
        Megaflow::new(&k, &m),
        Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]),
    )
}

/// The seed's decap flow: on vxlan_sys, enc keys, macs, eth_type.
pub(crate) fn seed_decap(eth_type: u16, dst_mac: [u8; 6]) -> (Megaflow, Actions) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = VXLAN.0;
    m.in_port = u32::MAX;
    k.tun_flags = tun_flags::PRESENT | tun_flags::KEY;
    m.tun_flags = tun_flags::PRESENT | tun_flags::IPV6;
    k.tun_src = addr_to(ip("192.168.203.56"));
    m.tun_src = addr_to(ip("255.255.255.255"));
    k.tun_dst = addr_to(ip("192.168.203.51"));
    m.tun_dst = addr_to(ip("255.255.255.255"));
    k.tun_tp_dst = 4789;
    m.tun_tp_dst = 0xffff;
    k.tun_vni = 16;
    m.tun_vni = u32::MAX;
    k.eth_type = eth_type;
    m.eth_type = 0xffff;
    k.eth_src = [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef];
    m.eth_src = [0xff; 6];
    k.eth_dst = dst_mac;
    m.eth_dst = [0xff; 6];
    (
        Megaflow::new(&k, &m),
        Actions::new(vec![Action::Output(REP0)]),
    )
}

/// Encodes a rule as a full RTM_NEWTFILTER message, parses the bytes back and decodes.
pub(crate) fn round_trip(rule: &FlowerRule, policy: TcPolicy) -> FlowerRule {
    let h = crate::RuleHandle {
        device: rule.ingress,
        prio: 0x4000,
        protocol: rule.matches.protocol,
        handle: 7,
    };
    let mut buf = Vec::new();
    netlink::push_request(
        &mut buf,
        RequestKind::Create,
        42,
        netlink::new_filter(
            &h,
            rule,
            policy,
            Some(netlink::cookie(9, FlowId(77))),
            netlink::ACT_FLAGS_NO_PERCPU_STATS,
        ),
    );
    let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).expect("parse own bytes");
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(msg)) = nl.payload
    else {
        panic!("not a filter")
    };
    let entry = netlink::decode_filter_msg(&msg);
    assert_eq!(entry.handle, h);
    let f = entry.filter.expect("options").expect("decodes");
    assert_eq!(f.policy, policy);
    assert_eq!(
        f.cookie.as_deref().and_then(netlink::parse_cookie),
        Some((9, FlowId(77)))
    );
    f.rule
}

pub(crate) fn tr(mf: &Megaflow, a: &Actions) -> Result<FlowerRule, OffloadError> {
    translate(mf, a, &ports(1450, 1500))
}

/// The key adoption derives from a filter lies in the megaflow the filter came from.
pub(crate) fn assert_representative(rule: &FlowerRule, mf: &Megaflow) {
    let k = crate::adopt::representative_key(rule, &ports(1450, 1500)).expect("known ingress");
    assert_eq!(
        Megaflow::new(&k, &mf.mask),
        *mf,
        "representative key of {rule:?}"
    );
}

pub(crate) fn decode_capture(bytes: &[u8]) -> FlowerRule {
    let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).expect("tc capture parses");
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(msg)) = nl.payload
    else {
        panic!()
    };
    let f = netlink::decode_filter_msg(&msg).filter.unwrap().unwrap();
    assert_eq!(f.policy, TcPolicy::SkipHw);
    f.rule
}

pub(crate) fn base_key(eth_type: u16) -> (FlowKey, FlowMask) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = REP0.0;
    m.in_port = u32::MAX;
    k.eth_type = eth_type;
    m.eth_type = 0xffff;
    (k, m)
}

pub(crate) fn out(p: PortId) -> Actions {
    Actions::new(vec![Action::Output(p)])
}

pub(crate) trait KeyMask {
    fn key_mask(&self) -> (FlowKey, FlowMask);
}
impl KeyMask for Megaflow {
    fn key_mask(&self) -> (FlowKey, FlowMask) {
        (self.key, self.mask)
    }
}

pub(crate) fn judged_with(
    ports: &PortTable,
    paths: &FastMap<LookupKey, PathFacts>,
    mf: &Megaflow,
    a: &Actions,
    decap: &[LookupKey],
) -> Result<FlowerRule, SoftwareReason> {
    judged_on(ports, paths, mf, a, decap, true)
}

pub(crate) fn judged_on(
    ports: &PortTable,
    paths: &FastMap<LookupKey, PathFacts>,
    mf: &Megaflow,
    a: &Actions,
    decap: &[LookupKey],
    hardware: bool,
) -> Result<FlowerRule, SoftwareReason> {
    let mut rule = translate(mf, a, ports).unwrap();
    let facts = Facts {
        ports,
        paths,
        hardware,
    };
    judge(&mut rule, decap, &facts)?;
    Ok(rule)
}

pub(crate) fn validated(
    rep_mtu: u32,
    up_mtu: u32,
    mf: &Megaflow,
    a: &Actions,
) -> Result<FlowerRule, SoftwareReason> {
    // The path MTU follows the uplink's, as fibwatch reports it.
    let mut p = paths();
    for path in p.values_mut().flatten() {
        path.mtu = up_mtu;
    }
    judged_with(&ports(rep_mtu, up_mtu), &p, mf, a, &[])
}
