//! Unit tests: translation, netlink encoding and decoding (round trips and golden
//! captures of iproute2's requests), validation, the simulated eswitch.

use crate::judge::{Facts, judge};
use crate::netlink::{self, Answer, RequestKind};
use crate::ports::{PortInfo, PortKind, PortTable};
use crate::rule::{FlowerAction, FlowerRule, TcPolicy};
use crate::translate::translate;
use crate::{OffloadError, Placement, SoftwareReason, Unsupported};
use datapath::flow::{addr_to, frag, tun_flags, vlan};
use datapath::{
    Action, Actions, FlowId, FlowKey, FlowMask, IfIndex, Megaflow, PortId, TunnelAttrs,
};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use std::collections::HashMap;
use std::net::IpAddr;
use vocab::{Ipsec, IpsecSa, LookupKey, Path, PathFacts, PathProblem, SwitchId};

pub(crate) const REP0: PortId = PortId(1);
pub(crate) const UP0: PortId = PortId(2);
pub(crate) const VXLAN: PortId = PortId(3);
pub(crate) const REP1: PortId = PortId(4);
const SW: [u8; 6] = [0x04, 0x3f, 0x72, 0xad, 0x05, 0x12];

fn ip(s: &str) -> IpAddr {
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
pub(crate) fn paths() -> HashMap<LookupKey, PathFacts> {
    let v4 = path_via_up0("192.168.203.51");
    let fixed = LookupKey {
        src: Some(ip("192.168.203.51")),
        ..LookupKey::to(ip("192.168.203.56"))
    };
    HashMap::from([
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
fn round_trip(rule: &FlowerRule, policy: TcPolicy) -> FlowerRule {
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

fn tr(mf: &Megaflow, a: &Actions) -> Result<FlowerRule, OffloadError> {
    translate(mf, a, &ports(1450, 1500))
}

#[test]
fn seed_six_filters_translate_and_round_trip() {
    let bcast = [0xff; 6];
    let vm = [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef];
    let vf = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
    let flows = [
        seed_encap(0x0800, vm),
        seed_encap(0x0806, vm),
        seed_encap(0x0806, bcast),
        seed_decap(0x0800, vf),
        seed_decap(0x0806, vf),
        seed_decap(0x0806, bcast),
    ];
    for (i, (mf, a)) in flows.iter().enumerate() {
        let rule = tr(mf, a).unwrap();
        if i < 3 {
            assert_eq!(rule.ingress, IfIndex(3));
            assert!(matches!(
                rule.actions[..],
                [
                    FlowerAction::TunnelSet(_),
                    FlowerAction::Redirect(IfIndex(5))
                ]
            ));
        } else {
            assert_eq!(rule.ingress, IfIndex(5));
            assert_eq!(rule.matches.tunnel.key_id, Some(16));
            assert_eq!(
                rule.actions,
                vec![
                    FlowerAction::TunnelUnset,
                    FlowerAction::Redirect(IfIndex(3))
                ]
            );
        }
        for p in [TcPolicy::None, TcPolicy::SkipHw, TcPolicy::SkipSw] {
            assert_eq!(round_trip(&rule, p), rule);
        }
        assert_representative(&rule, mf);
    }
}

/// The key adoption derives from a filter lies in the megaflow the filter came from.
fn assert_representative(rule: &FlowerRule, mf: &Megaflow) {
    let k = crate::adopt::representative_key(rule, &ports(1450, 1500)).expect("known ingress");
    assert_eq!(
        Megaflow::new(&k, &mf.mask),
        *mf,
        "representative key of {rule:?}"
    );
}

fn decode_capture(bytes: &[u8]) -> FlowerRule {
    let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).expect("tc capture parses");
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(msg)) = nl.payload
    else {
        panic!()
    };
    let f = netlink::decode_filter_msg(&msg).filter.unwrap().unwrap();
    assert_eq!(f.policy, TcPolicy::SkipHw);
    f.rule
}

/// iproute2's request, captured with strace (tc 6.1, rep0 = if3, vxlan_sys = if5):
/// `tc filter add dev rep0 protocol ip parent ffff: prio 1 flower skip_hw
///  dst_mac 82:8a:29:ad:4e:ef src_mac e4:11:11:11:11:10 action tunnel_key set
///  src_ip 192.168.203.51 dst_ip 192.168.203.56 dst_port 4789 id 16
///  action mirred egress redirect dev vxlan_sys`
#[test]
fn golden_tc_encap_capture_decodes_to_our_translation() {
    let got = decode_capture(include_bytes!("../testdata/tc_encap.bin"));
    let (mf, a) = seed_encap(0x0800, [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
    assert_eq!(got, tr(&mf, &a).unwrap());
}

/// `tc filter add dev vxlan_sys protocol arp parent ffff: prio 3 flower skip_hw
///  dst_mac ff:ff:ff:ff:ff:ff src_mac 82:8a:29:ad:4e:ef enc_src_ip 192.168.203.56
///  enc_dst_ip 192.168.203.51 enc_dst_port 4789 enc_key_id 16
///  action tunnel_key unset action mirred egress redirect dev rep0`
#[test]
fn golden_tc_decap_capture_decodes_to_our_translation() {
    let got = decode_capture(include_bytes!("../testdata/tc_decap.bin"));
    let (mf, a) = seed_decap(0x0806, [0xff; 6]);
    assert_eq!(got, tr(&mf, &a).unwrap());
}

/// flowd's own bytes for the seed's first encap filter, pinned (regressions in the
/// encoding show up here); they must also decode to the same rule.
#[test]
fn golden_own_encap_bytes() {
    let (mf, a) = seed_encap(0x0800, [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
    let rule = tr(&mf, &a).unwrap();
    let h = crate::RuleHandle {
        device: IfIndex(3),
        prio: 0x4000,
        protocol: 0x0800,
        handle: 1,
    };
    let mut buf = Vec::new();
    netlink::push_request(
        &mut buf,
        RequestKind::Create,
        1,
        netlink::new_filter(
            &h,
            &rule,
            TcPolicy::SkipHw,
            Some(netlink::cookie(0, FlowId(1))),
            0,
        ),
    );
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    let golden = include_str!("../testdata/own_encap.hex").trim();
    assert_eq!(hex, golden);
}

fn base_key(eth_type: u16) -> (FlowKey, FlowMask) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = REP0.0;
    m.in_port = u32::MAX;
    k.eth_type = eth_type;
    m.eth_type = 0xffff;
    (k, m)
}

fn out(p: PortId) -> Actions {
    Actions::new(vec![Action::Output(p)])
}

#[test]
fn every_match_translates_and_round_trips() {
    let mut cases: Vec<(FlowKey, FlowMask)> = Vec::new();
    // IPv4 TCP with prefixes, ports, flags, tos, ttl, fragments.
    let (mut k, mut m) = base_key(0x0800);
    k.ip_src = addr_to(ip("10.1.0.0"));
    m.ip_src = addr_to(ip("255.255.0.0"));
    k.ip_dst = addr_to(ip("10.2.3.4"));
    m.ip_dst = addr_to(ip("255.255.255.255"));
    k.ip_proto = 6;
    m.ip_proto = 0xff;
    k.tp_src = 1000;
    m.tp_src = 0xff00 & 1000 | 0xff00;
    k.tp_src &= m.tp_src;
    k.tp_dst = 80;
    m.tp_dst = 0xffff;
    k.tcp_flags = 0x002;
    m.tcp_flags = 0x0ff;
    k.ip_tos = 0x10;
    m.ip_tos = 0xfc;
    k.ip_ttl = 64;
    m.ip_ttl = 0xff;
    k.ip_frag = 0;
    m.ip_frag = frag::ANY | frag::LATER;
    cases.push((k, m));
    // UDP, SCTP.
    for proto in [17u8, 132] {
        let (mut k, mut m) = base_key(0x0800);
        k.ip_proto = proto;
        m.ip_proto = 0xff;
        k.tp_dst = 4789;
        m.tp_dst = 0xffff;
        cases.push((k, m));
    }
    // ICMP and ICMPv6 type/code; IPv6 addresses; later fragments.
    let (mut k, mut m) = base_key(0x0800);
    k.ip_proto = 1;
    m.ip_proto = 0xff;
    k.tp_src = 8;
    m.tp_src = 0xffff;
    k.tp_dst = 0;
    m.tp_dst = 0xffff;
    k.ip_frag = frag::ANY | frag::LATER;
    m.ip_frag = frag::ANY | frag::LATER;
    cases.push((k, m));
    let (mut k, mut m) = base_key(0x86dd);
    k.ip_src = addr_to(ip("2001:db8::1"));
    m.ip_src = addr_to(ip("ffff:ffff:ffff:ffff::"));
    k.ip_src[8..].fill(0);
    k.ip_dst = addr_to(ip("2001:db8::2"));
    m.ip_dst = [0xff; 16];
    k.ip_proto = 58;
    m.ip_proto = 0xff;
    k.tp_src = 135;
    m.tp_src = 0xff;
    cases.push((k, m));
    // ARP: op, spa, tpa, sha, tha.
    let (mut k, mut m) = base_key(0x0806);
    k.ip_proto = 1;
    m.ip_proto = 0xff;
    k.ip_src = addr_to(ip("1.1.1.2"));
    m.ip_src = addr_to(ip("255.255.255.255"));
    k.ip_dst = addr_to(ip("1.1.1.0"));
    m.ip_dst = addr_to(ip("255.255.255.0"));
    k.arp_sha = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
    m.arp_sha = [0xff; 6];
    k.arp_tha = [0; 6];
    m.arp_tha = [0xff; 6];
    cases.push((k, m));
    // VLAN: id + prio; QinQ.
    let (mut k, mut m) = base_key(0x0800);
    k.vlan_tci[0] = vlan::PRESENT | (3 << vlan::PCP_SHIFT) | 100;
    m.vlan_tci[0] = 0xffff;
    k.vlan_tpid[0] = 0x8100;
    m.vlan_tpid[0] = 0xffff;
    cases.push((k, m));
    let (mut k, mut m) = base_key(0x0800);
    k.vlan_tci = [vlan::PRESENT | 200, vlan::PRESENT | 300];
    m.vlan_tci = [
        vlan::PRESENT | vlan::VID_MASK,
        vlan::PRESENT | vlan::VID_MASK,
    ];
    k.vlan_tpid = [0x88a8, 0x8100];
    m.vlan_tpid = [0xffff, 0xffff];
    cases.push((k, m));
    // Exact mask of an untagged IPv4 UDP packet (every field consulted).
    let (mut k, _) = base_key(0x0800);
    k.ip_proto = 17;
    k.tp_src = 5;
    k.tp_dst = 6;
    k.ip_ttl = 64;
    k.eth_dst = [2, 0, 0, 0, 0, 1];
    cases.push((k, FlowMask::exact()));
    for (k, m) in cases {
        let mf = Megaflow::new(&k, &m);
        let rule = tr(&mf, &out(REP1)).unwrap_or_else(|e| panic!("{e} for {k:?}"));
        assert_eq!(round_trip(&rule, TcPolicy::None), rule);
        assert_representative(&rule, &mf);
        assert!(
            crate::sim::matches_key(&rule.matches, &k),
            "{rule:?} must match its own key"
        );
    }
}

#[test]
fn decap_ipv6_tunnel_with_tos_ttl_round_trips() {
    let (mut mf, a) = seed_decap(0x0800, [1; 6]);
    mf.key.tun_flags |= tun_flags::IPV6;
    mf.key.tun_src = addr_to(ip("2001:db8::56"));
    mf.mask.tun_src = [0xff; 16];
    mf.key.tun_dst = addr_to(ip("2001:db8::51"));
    mf.mask.tun_dst = [0xff; 16];
    mf.key.tun_tos = 0x20;
    mf.mask.tun_tos = 0xff;
    mf.key.tun_ttl = 10;
    mf.mask.tun_ttl = 0xff;
    let rule = tr(&mf, &a).unwrap();
    assert_eq!(rule.matches.tunnel.src.unwrap().value, ip("2001:db8::56"));
    assert_eq!(round_trip(&rule, TcPolicy::SkipHw), rule);
    assert_representative(&rule, &mf);
}

#[test]
fn every_action_translates_and_round_trips() {
    let (mf, _) = seed_encap(0x0800, [1; 6]);
    let mut t6 = TunnelAttrs::vxlan(0xabcdef, ip("2001:db8::56"));
    t6.tos = 0x10;
    t6.ttl = 32;
    let lists = vec![
        vec![],
        vec![
            Action::PushVlan {
                tpid: 0x8100,
                tci: (5 << 13) | 42,
            },
            Action::Output(UP0),
        ],
        vec![Action::PopVlan, Action::Output(REP1)],
        vec![Action::Output(REP1), Action::Output(UP0)],
        vec![Action::SetTunnel(t6), Action::Output(VXLAN)],
        vec![
            Action::Output(REP1),
            Action::SetTunnel(TunnelAttrs::vxlan(7, ip("192.168.203.56"))),
            Action::Output(VXLAN),
        ],
    ];
    for l in lists {
        let rule = tr(&mf, &Actions::new(l.clone())).unwrap();
        assert_eq!(round_trip(&rule, TcPolicy::None), rule, "{l:?}");
    }
    let rule = tr(&mf, &Actions::drop()).unwrap();
    assert_eq!(rule.actions, vec![FlowerAction::Drop]);
    let rule = tr(
        &mf,
        &Actions::new(vec![Action::Output(REP1), Action::Output(UP0)]),
    )
    .unwrap();
    assert_eq!(
        rule.actions,
        vec![
            FlowerAction::Mirror(IfIndex(4)),
            FlowerAction::Redirect(IfIndex(10))
        ]
    );
}

fn unsupported(mf: &Megaflow, a: &Actions) -> String {
    tr(mf, a).unwrap_err().to_string()
}

#[test]
fn unsupported_matches_and_actions_fail_closed() {
    let (k, m) = base_key(0x0800);
    let mut m2 = m;
    m2.eth_type = 0xff00;
    assert_eq!(
        unsupported(&Megaflow::new(&k, &m2), &out(REP1)),
        "unsupported match: eth_type"
    );
    let mut m2 = m;
    m2.in_port = 0;
    assert_eq!(
        unsupported(&Megaflow::new(&k, &m2), &out(REP1)),
        "unsupported match: in_port"
    );
    let (mut k2, mut m2) = (k, m);
    k2.ip_proto = 47;
    m2.ip_proto = 0xff;
    k2.tp_src = 1;
    m2.tp_src = 0xffff;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: tp_src"
    );
    let (mut k2, mut m2) = (k, m);
    k2.vlan_tci[0] = vlan::PRESENT | 5;
    m2.vlan_tci[0] = vlan::PRESENT | 0x00f;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: vlan_tci"
    );
    // "Untagged" with any ethertype: flower's `protocol all` would also take 802.1Q
    // frames, so it is refused; with an exact ethertype it is offloaded.
    let mut m2 = FlowMask(FlowKey {
        in_port: u32::MAX,
        ..FlowKey::default()
    });
    m2.vlan_tci[0] = vlan::PRESENT | vlan::VID_MASK;
    assert_eq!(
        unsupported(&Megaflow::new(&k, &m2), &out(REP1)),
        "unsupported match: vlan_tci"
    );
    m2.eth_type = 0xffff;
    let rule = tr(&Megaflow::new(&k, &m2), &out(REP1)).expect("untagged IPv4 offloads");
    assert_eq!(rule.matches.protocol, 0x0800);
    let (mut k2, mut m2) = (k, m);
    m2.ip_frag = frag::LATER;
    k2.ip_frag = frag::LATER;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: ip_frag"
    );
    let (mut k2, mut m2) = seed_decap(0x0800, [1; 6]).0.key_mask();
    m2.tun_flags |= tun_flags::CSUM;
    k2.tun_flags |= tun_flags::CSUM;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP0)),
        "unsupported match: tun_flags"
    );
    let (mut k2, mut m2) = (k, m);
    k2.tun_vni = 5;
    m2.tun_vni = u32::MAX;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: tun_flags"
    );
    let (mut k2, mut m2) = (k, m);
    k2.eth_type = 0x8847;
    k2.ip_src = addr_to(ip("1.2.3.4"));
    m2.ip_src = addr_to(ip("255.255.255.255"));
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: ip_src"
    );
    let mf = Megaflow::new(&k, &m);
    assert_eq!(
        unsupported(&mf, &Actions::new(vec![Action::Userspace])),
        "unsupported action: userspace"
    );
    let mut t = TunnelAttrs::vxlan(1 << 24, ip("192.168.203.56"));
    t.vni = 1 << 24;
    assert_eq!(
        unsupported(
            &mf,
            &Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)])
        ),
        "unsupported action: set_tunnel(vni > 24 bits)"
    );
    assert!(matches!(
        tr(&mf, &out(PortId(99))),
        Err(OffloadError::UnknownPort(PortId(99)))
    ));
    let e = tr(&mf, &Actions::new(vec![Action::Userspace])).unwrap_err();
    assert!(matches!(
        e,
        OffloadError::Unsupported(Unsupported::Action { .. })
    ));
}

trait KeyMask {
    fn key_mask(&self) -> (FlowKey, FlowMask);
}
impl KeyMask for Megaflow {
    fn key_mask(&self) -> (FlowKey, FlowMask) {
        (self.key, self.mask)
    }
}

fn judged_with(
    ports: &PortTable,
    paths: &HashMap<LookupKey, PathFacts>,
    mf: &Megaflow,
    a: &Actions,
    decap: &[LookupKey],
) -> Result<FlowerRule, SoftwareReason> {
    judged_on(ports, paths, mf, a, decap, true)
}

fn judged_on(
    ports: &PortTable,
    paths: &HashMap<LookupKey, PathFacts>,
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

fn validated(
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

#[test]
fn judge_mtu_switch_id_neighbour() {
    let (mf, a) = seed_encap(0x0800, [1; 6]);
    assert!(validated(1450, 1500, &mf, &a).is_ok());
    let e = validated(1500, 1500, &mf, &a).unwrap_err();
    assert_eq!(e.to_string(), "mtu: 1500 + 50 > 1500");
    assert_eq!(
        Placement::software(e).to_string(),
        "offloaded:no (mtu: 1500 + 50 > 1500)"
    );
    // IPv6 underlay: 70 bytes.
    let t = TunnelAttrs::vxlan(16, ip("2001:db8::56"));
    let a6 = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    assert_eq!(
        validated(1450, 1500, &mf, &a6).unwrap_err().to_string(),
        "mtu: 1450 + 70 > 1500"
    );
    // The source comes from the route when the flow leaves it open.
    let t = TunnelAttrs::vxlan(16, ip("192.168.203.56"));
    let a4 = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    let r = validated(1450, 1500, &mf, &a4).unwrap();
    let FlowerAction::TunnelSet(ts) = r.actions[0] else {
        panic!()
    };
    assert_eq!(ts.src, ip("192.168.203.51"));
    // Unresolved next hop.
    let t = TunnelAttrs::vxlan(16, ip("192.168.203.99"));
    let a9 = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    let e = validated(1450, 1500, &mf, &a9).unwrap_err();
    assert_eq!(e.category(), "neighbour");
    assert_eq!(
        e.to_string(),
        "neighbour: next hop 192.168.203.1 toward 192.168.203.99 unresolved"
    );
    // A key whose facts are not known yet.
    let t = TunnelAttrs::vxlan(16, ip("192.168.203.77"));
    let a7 = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    let e = validated(1450, 1500, &mf, &a7).unwrap_err();
    assert_eq!(e.category(), "no_route");
    // Different eswitches.
    let mut ports = ports(1450, 1500);
    let mut rep1 = ports.get(REP1).unwrap().clone();
    rep1.switch_id = Some(SwitchId(vec![9, 9]));
    ports.insert(rep1);
    let e = judged_with(&ports, &paths(), &mf, &out(REP1), &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "switch id: rep0 and rep1 are on different eswitches"
    );
}

#[test]
fn judge_reads_live_port_state_and_path_problems() {
    let (mf, a) = seed_encap(0x0800, [1; 6]);
    let p = paths();
    let mut ports = ports(1450, 1500);
    assert!(judged_with(&ports, &p, &mf, &a, &[]).is_ok());
    // The uplink goes down: software, with the uplink named.
    let mut up0 = ports.get(UP0).unwrap().clone();
    up0.up = false;
    ports.insert(up0.clone());
    let e = judged_with(&ports, &p, &mf, &a, &[]).unwrap_err();
    assert_eq!(
        (e.category(), e.to_string()),
        ("link_down", "link down: up0".into())
    );
    // The representor itself down.
    up0.up = true;
    ports.insert(up0);
    let mut rep0 = ports.get(REP0).unwrap().clone();
    rep0.up = false;
    ports.insert(rep0);
    let e = judged_with(&ports, &p, &mf, &a, &[]).unwrap_err();
    assert_eq!(e.to_string(), "link down: rep0");
    // No route, and a path out of an interface flowd does not manage.
    let ports = self::ports(1450, 1500);
    let mut p = paths();
    let key = LookupKey {
        src: Some(ip("192.168.203.51")),
        ..LookupKey::to(ip("192.168.203.56"))
    };
    p.insert(key, Err(PathProblem::NoRoute));
    let e = judged_with(&ports, &p, &mf, &a, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no route (toward 192.168.203.56 from 192.168.203.51)"
    );
    p.insert(
        key,
        Ok(Path {
            uplink: IfIndex(77),
            ..path_via_up0("192.168.203.51")
        }),
    );
    let e = judged_with(&ports, &p, &mf, &a, &[]).unwrap_err();
    assert_eq!(e.category(), "unmanaged_uplink");
}

#[test]
fn a_marked_tunnel_is_judged_on_its_own_key_and_marks_the_packet() {
    let (mf, _) = seed_encap(0x0800, [1; 6]);
    let mut t = TunnelAttrs::vxlan(16, ip("192.168.203.56"));
    t.mark = 0x5;
    let a = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    let ports = ports(1450, 1500);
    // The unmarked key has a path; the marked one has none yet.
    let e = judged_with(&ports, &paths(), &mf, &a, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "path not resolved yet (toward 192.168.203.56 mark 0x5)"
    );
    let mut p = paths();
    p.insert(t.lookup_key(), Ok(path_via_up0("192.168.203.77")));
    let r = judged_with(&ports, &p, &mf, &a, &[]).unwrap();
    assert_eq!(r.actions[0], FlowerAction::SetMark(0x5));
    let FlowerAction::TunnelSet(ts) = r.actions[1] else {
        panic!("{:?}", r.actions)
    };
    assert_eq!(ts.src, ip("192.168.203.77"), "the marked key's own source");
    assert_eq!(round_trip(&r, TcPolicy::SkipHw), r, "skbedit round-trips");
}

#[test]
fn df_and_the_udp_checksum_translate_to_tunnel_key() {
    let (mf, _) = seed_encap(0x0800, [1; 6]);
    // Room for IPv6's 70 bytes of overhead.
    let ports = ports(1400, 1500);
    for (dst, df, csum) in [
        ("192.168.203.56", true, false),
        ("192.168.203.56", false, true),
        ("2001:db8::56", true, true),
    ] {
        let mut t = TunnelAttrs::vxlan(16, ip(dst));
        assert_eq!(t.csum, ip(dst).is_ipv6(), "the checksum is on over IPv6");
        assert!(t.df, "DF is set by default");
        (t.df, t.csum) = (df, csum);
        let a = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
        let r = judged_with(&ports, &paths(), &mf, &a, &[]).unwrap();
        let FlowerAction::TunnelSet(ts) = r.actions[0] else {
            panic!("{:?}", r.actions)
        };
        assert_eq!((ts.df, ts.csum), (df, csum));
        assert_eq!(
            round_trip(&r, TcPolicy::SkipHw),
            r,
            "nofrag and csum round-trip"
        );
    }
}

#[test]
fn a_decap_flow_needs_its_path_on_the_representors_eswitch() {
    let (mf, a) = seed_decap(0x0800, [1; 6]);
    let key = LookupKey {
        src: Some(ip("192.168.203.51")),
        ..LookupKey::to(ip("192.168.203.56"))
    };
    let mut p = paths();
    p.remove(&key);
    let mut ports = ports(1450, 1500);
    assert!(matches!(
        judged_with(&ports, &p, &mf, &a, &[key]),
        Err(SoftwareReason::Path { .. })
    ));
    p.insert(key, Ok(path_via_up0("192.168.203.51")));
    assert!(judged_with(&ports, &p, &mf, &a, &[key]).is_ok());
    let mut up0 = ports.get(UP0).unwrap().clone();
    up0.switch_id = Some(SwitchId(vec![7]));
    ports.insert(up0);
    let e = judged_with(&ports, &p, &mf, &a, &[key]).unwrap_err();
    assert_eq!(e.category(), "switch_id");
}

#[test]
fn drops_on_an_uplink_stay_in_software() {
    // in_port = the uplink, no output: a tc filter would drop the host's traffic too.
    let (mut k, m) = base_key(0x0800);
    k.in_port = UP0.0;
    let e = validated(1450, 1500, &Megaflow::new(&k, &m), &Actions::drop()).expect_err("refused");
    assert_eq!(
        Placement::software(e).to_string(),
        "offloaded:no (uplink drop: kept in software, a filter would drop the host's traffic)"
    );
    // Forwarding from the uplink (a VLAN network's uplink -> representor) is offloaded.
    assert!(validated(1450, 1500, &Megaflow::new(&k, &m), &out(REP0)).is_ok());
}

#[test]
fn placement_display() {
    let p = Placement::Offloaded {
        backend: "tc",
        device: "rep0".into(),
        in_hw: crate::HwState::InHw { count: 1 },
    };
    assert_eq!(p.to_string(), "offloaded:yes dp:tc in_hw dev:rep0");
    let p = Placement::Offloaded {
        backend: "tc",
        device: "rep0".into(),
        in_hw: crate::HwState::NotInHw,
    };
    assert_eq!(p.to_string(), "offloaded:yes dp:tc not_in_hw dev:rep0");
    let p = Placement::software(SoftwareReason::Unsupported(Unsupported::Match {
        field: "tun_flags",
    }));
    assert_eq!(p.to_string(), "offloaded:no (unsupported match: tun_flags)");
}

#[test]
fn ack_with_extack_is_decoded() {
    // NLMSG_ERROR, flags CAPPED|ACK_TLVS, seq 5, errno -ENOENT, the request header,
    // then NLMSGERR_ATTR_MSG "TC classifier not found".
    let msg = b"TC classifier not found\0";
    let mut b = Vec::new();
    let tlv_len = 4 + msg.len();
    let total = 16 + 4 + 16 + tlv_len.next_multiple_of(4);
    b.extend((total as u32).to_ne_bytes());
    b.extend(2u16.to_ne_bytes());
    b.extend(0x300u16.to_ne_bytes());
    b.extend(5u32.to_ne_bytes());
    b.extend(0u32.to_ne_bytes());
    b.extend((-libc::ENOENT).to_ne_bytes());
    b.extend([0u8; 16]);
    b.extend((tlv_len as u16).to_ne_bytes());
    b.extend(1u16.to_ne_bytes());
    b.extend(msg);
    b.resize(total, 0);
    let a = netlink::parse_answers(&b);
    let Ok(Answer::Ack {
        seq: 5,
        error: Some((e, Some(m))),
    }) = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(*e, crate::KernelErrno::NotFound);
    assert_eq!(m, "TC classifier not found");
}

#[test]
fn hostile_netlink_input_never_panics() {
    let (mf, a) = seed_decap(0x0806, [0xff; 6]);
    let rule = tr(&mf, &a).unwrap();
    let h = crate::RuleHandle {
        device: IfIndex(5),
        prio: 1,
        protocol: 0x0806,
        handle: 1,
    };
    let mut buf = Vec::new();
    netlink::push_request(
        &mut buf,
        RequestKind::Create,
        1,
        netlink::new_filter(&h, &rule, TcPolicy::None, None, 0),
    );
    // Every truncation and many byte flips: decoding may fail, never panic.
    for cut in 0..buf.len() {
        for a in netlink::parse_answers(&buf[..cut]) {
            if let Ok(Answer::Filter { msg, .. }) = a {
                let _ = netlink::decode_filter_msg(&msg);
            }
        }
    }
    let mut x: u32 = 12345;
    for _ in 0..5000 {
        let mut b = buf.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = (x as usize) % b.len();
            b[i] = (x >> 8) as u8;
        }
        for a in netlink::parse_answers(&b) {
            if let Ok(Answer::Filter { msg, .. }) = a {
                let _ = netlink::decode_filter_msg(&msg);
            }
        }
    }
}

#[test]
fn tcm_info_packs_prio_and_protocol() {
    let info = netlink::tcm_info(1, 0x0800);
    assert_eq!(info, 65544); // what tc sends for `protocol ip prio 1`
    assert_eq!(netlink::split_tcm_info(info), (1, 0x0800));
}

fn filter_bytes(rule: &FlowerRule, extra_flags: u32, kernel_extras: bool) -> Vec<u8> {
    use netlink_packet_route::tc::{
        TcActionAttribute, TcAttribute, TcFilterFlowerOption as O, TcOption,
    };
    let h = crate::RuleHandle {
        device: rule.ingress,
        prio: 0x4000,
        protocol: rule.matches.protocol,
        handle: 3,
    };
    // The options in object form (new_filter sends them pre-serialized), to edit.
    let opts = netlink::encode_flower(
        rule,
        TcPolicy::SkipHw,
        Some(netlink::cookie(1, FlowId(2))),
        0,
    )
    .into_iter()
    .map(TcOption::Flower)
    .collect();
    let mut msg = netlink::new_filter(&h, rule, TcPolicy::SkipHw, None, 0);
    msg.attributes = vec![
        TcAttribute::Kind("flower".into()),
        TcAttribute::Options(opts),
    ];
    for a in &mut msg.attributes {
        if let TcAttribute::Options(opts) = a {
            for o in opts.iter_mut() {
                match o {
                    TcOption::Flower(O::Flags(f)) => *f |= extra_flags,
                    TcOption::Flower(O::Actions(acts)) if kernel_extras => {
                        for act in acts.iter_mut() {
                            act.attributes.push(TcActionAttribute::Index(42));
                        }
                    }
                    _ => {}
                }
            }
            if kernel_extras {
                opts.reverse(); // the kernel's attribute order is its own
            }
        }
    }
    let mut buf = Vec::new();
    netlink::push_request(&mut buf, RequestKind::Create, 1, msg);
    buf
}

#[test]
fn echo_verification_on_bytes() {
    let (mf, a) = seed_encap(0x0806, [0xff; 6]);
    let rule = tr(&mf, &a).unwrap();
    let request = filter_bytes(&rule, 0, false);
    let echo = filter_bytes(&rule, crate::netlink::cls_flags::NOT_IN_HW, true);
    assert_eq!(
        crate::echo::verify(&request, &echo),
        Ok(crate::HwState::NotInHw)
    );
    let mut other = rule.clone();
    other.matches.eth_dst.as_mut().unwrap().value[0] = 0xfe;
    assert!(crate::echo::verify(&request, &filter_bytes(&other, 0, true)).is_err());
    let mut other = rule.clone();
    other.actions[1] = FlowerAction::Redirect(IfIndex(99));
    assert!(crate::echo::verify(&request, &filter_bytes(&other, 0, true)).is_err());
    for cut in 0..echo.len() {
        let _ = crate::echo::verify(&request, &echo[..cut]);
    }
    // DF asked for, and an echo without `nofrag` (a kernel without it, 6.1 for one, ignores it): told
    // apart from any other difference, so the backend can stop asking.
    let mut df = rule.clone();
    let Some(FlowerAction::TunnelSet(t)) = df
        .actions
        .iter_mut()
        .find(|a| matches!(a, FlowerAction::TunnelSet(_)))
    else {
        panic!("{:?}", df.actions)
    };
    t.df = true;
    assert!(df.sets_df());
    let request = filter_bytes(&df, 0, false);
    assert_eq!(
        crate::echo::verify(&request, &filter_bytes(&rule, 0, true)),
        Err(crate::echo::Mismatch::NoFragIgnored)
    );
    assert!(crate::echo::verify(&request, &filter_bytes(&df, 0, true)).is_ok());
    let mut cleared = df.clone();
    cleared.clear_df();
    assert_eq!(cleared, rule);
}

/// The seed's setup: representor 9000 under a 9216 uplink, AES-GCM transport ESP (37
/// bytes at most) on the path. Offloaded only where packets stay encrypted: `skip_hw`
/// (tc's software path goes through the kernel's xfrm), or hardware with the SA packet-
/// offloaded on the flow's uplink; never while the policy blocks or has no SA. The MTU
/// rule counts ESP: 9000 + 50 + 37 fits 9216, 9150 + 87 does not.
#[test]
fn an_ipsec_protected_path_is_offloaded_only_where_it_stays_encrypted() {
    let (mf, a) = seed_encap(0x0800, [1; 6]);
    let (dmf, da) = seed_decap(0x0800, [1; 6]);
    let key = LookupKey {
        src: Some(ip("192.168.203.51")),
        ..LookupKey::to(ip("192.168.203.56"))
    };
    let ports = ports(9000, 9216);
    let sa = IpsecSa {
        spi: 3,
        overhead: 37,
        packet_offload: None,
    };
    let ipsec = Ipsec {
        policy: 12,
        blocks: false,
        proto: 50,
        mode: 0,
        reqid: 3,
        sa: Some(sa),
    };
    let with = |ipsec: Option<Ipsec>, mtu: u32| {
        let mut p = paths();
        for path in p.values_mut().flatten() {
            (path.ipsec, path.mtu) = (ipsec, mtu);
        }
        p
    };
    let judged = |p: &HashMap<LookupKey, PathFacts>, hw: bool| {
        let enc = judged_on(&ports, p, &mf, &a, &[], hw);
        let dec = judged_on(&ports, p, &dmf, &da, &[key], hw);
        (enc.map(|_| ()), dec.map(|_| ()))
    };
    // skip_hw: offloaded, and the MTU rule counts the ESP overhead.
    let p = with(Some(ipsec), 9216);
    assert_eq!(judged(&p, false), (Ok(()), Ok(())));
    let tight = self::ports(9150, 9216);
    let e = judged_on(&tight, &p, &mf, &a, &[], false).unwrap_err();
    assert_eq!(e.to_string(), "mtu: 9150 + 87 > 9216");
    // Hardware without a packet-offload SA: software, encap and decap alike.
    let (e, d) = judged(&p, true);
    let e = e.unwrap_err();
    assert_eq!(e.category(), "ipsec");
    assert_eq!(
        e.to_string(),
        "ipsec: SA 0x3 is not packet-offloaded on the uplink (if10): hardware would bypass it \
         (toward 192.168.203.56 from 192.168.203.51)"
    );
    assert_eq!(d.unwrap_err().category(), "ipsec");
    // The SA packet-offloaded on the path's uplink: hardware is fine; on another
    // device it is not.
    let on = |dev: u32| {
        let sa = IpsecSa {
            packet_offload: Some(IfIndex(dev)),
            ..sa
        };
        with(
            Some(Ipsec {
                sa: Some(sa),
                ..ipsec
            }),
            9216,
        )
    };
    assert_eq!(judged(&on(10), true), (Ok(()), Ok(())));
    assert_eq!(judged(&on(99), true).0.unwrap_err().category(), "ipsec");
    // No SA yet, or a block policy: software even with skip_hw.
    let p = with(Some(Ipsec { sa: None, ..ipsec }), 9216);
    let e = judged(&p, false).0.unwrap_err();
    assert_eq!(
        e.to_string(),
        "ipsec: policy 12 has no SA yet (toward 192.168.203.56 from 192.168.203.51)"
    );
    let p = with(
        Some(Ipsec {
            blocks: true,
            sa: None,
            ..ipsec
        }),
        9216,
    );
    assert!(
        judged(&p, false)
            .0
            .unwrap_err()
            .to_string()
            .contains("policy 12 blocks")
    );
    // Unprotected: as before, hardware or not.
    let p = with(None, 9216);
    assert_eq!(judged(&p, true), (Ok(()), Ok(())));
}
