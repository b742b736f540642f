//! Flower's match: [`FlowerMatch`] (key and mask paired) to and from
//! netlink-packet-route's [`TcFilterFlowerOption`]s, with the policy and hardware flags
//! (`TCA_FLOWER_FLAGS`, `in_hw_count`) and the action list handed to [`super::actions`].
//!
//! Decoding fails closed: a key flowd never installs, or an unknown attribute, makes
//! the filter undecodable ([`DecodeError`]), never misread, never a panic.

use super::actions::{decode_actions, encode_actions};
use crate::backend::{HwState, RuleStats};
use crate::rule::{FlowerMatch, FlowerRule, Masked, TcPolicy, TunnelMatch, VlanMatch};
use datapath::IfIndex;
use datapath::flow::frag;
use netlink_packet_core::{DecodeError, Nla};
use netlink_packet_route::tc::TcFilterFlowerOption;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Flower's `TCA_CLS_FLAGS_*`.
pub mod cls_flags {
    /// skip_hw.
    pub const SKIP_HW: u32 = 1 << 0;
    /// skip_sw.
    pub const SKIP_SW: u32 = 1 << 1;
    /// in_hw (reported by the kernel).
    pub const IN_HW: u32 = 1 << 2;
    /// not_in_hw (reported by the kernel).
    pub const NOT_IN_HW: u32 = 1 << 3;
}

/// Flower's `TCA_FLOWER_KEY_FLAGS_*`.
mod key_flags {
    pub const IS_FRAGMENT: u32 = 1 << 0;
    pub const FRAG_IS_FIRST: u32 = 1 << 1;
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;
/// `ETH_P_ALL`: a filter of every protocol.
pub(super) const ETH_P_ALL: u16 = 0x0003;

fn policy_flags(p: TcPolicy) -> u32 {
    match p {
        TcPolicy::None => 0,
        TcPolicy::SkipSw => cls_flags::SKIP_SW,
        TcPolicy::SkipHw => cls_flags::SKIP_HW,
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

pub(super) fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

pub(super) fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The flower options (keys, flags, actions) of a rule.
pub fn encode_flower(
    rule: &FlowerRule,
    policy: TcPolicy,
    cookie: Option<[u8; 16]>,
    act_flags: u32,
) -> Vec<TcFilterFlowerOption> {
    use TcFilterFlowerOption as O;
    let m = &rule.matches;
    let mut o = Vec::with_capacity(24);
    if m.protocol != ETH_P_ALL {
        o.push(O::EthType(m.protocol));
    }
    if let Some(x) = m.eth_dst {
        o.extend([O::EthDst(x.value), O::EthDstMask(x.mask)]);
    }
    if let Some(x) = m.eth_src {
        o.extend([O::EthSrc(x.value), O::EthSrcMask(x.mask)]);
    }
    if let Some(v) = m.vlan {
        o.extend(v.id.map(O::VlanId));
        o.extend(v.prio.map(O::VlanPrio));
        o.extend(v.eth_type.map(O::VlanEthType));
    }
    if let Some(v) = m.cvlan {
        o.extend(v.id.map(O::CvlanId));
        o.extend(v.prio.map(O::CvlanPrio));
        o.extend(v.eth_type.map(O::CvlanEthType));
    }
    o.extend(m.ip_proto.map(O::IpProto));
    for (x, is_src) in [(m.ip_src, true), (m.ip_dst, false)] {
        let Some(x) = x else { continue };
        o.extend(match (x.value, is_src) {
            (IpAddr::V4(_), true) => [O::Ipv4Src(v4(x.value)), O::Ipv4SrcMask(v4(x.mask))],
            (IpAddr::V4(_), false) => [O::Ipv4Dst(v4(x.value)), O::Ipv4DstMask(v4(x.mask))],
            (IpAddr::V6(_), true) => [O::Ipv6Src(v6(x.value)), O::Ipv6SrcMask(v6(x.mask))],
            (IpAddr::V6(_), false) => [O::Ipv6Dst(v6(x.value)), O::Ipv6DstMask(v6(x.mask))],
        });
    }
    if let Some(x) = m.ip_tos {
        o.extend([O::IpTos(x.value), O::IpTosMask(x.mask)]);
    }
    if let Some(x) = m.ip_ttl {
        o.extend([O::IpTtl(x.value), O::IpTtlMask(x.mask)]);
    }
    if let Some(x) = m.ip_frag {
        let (f, fm) = frag_to_flags(x);
        o.extend([O::KeyFlags(f), O::KeyFlagsMask(fm)]);
    }
    encode_l4(m, &mut o);
    if let Some(x) = m.arp_op {
        o.extend([O::ArpOp(x.value), O::ArpOpMask(x.mask)]);
    }
    if let Some(x) = m.arp_sip {
        o.extend([O::ArpSip(v4(x.value)), O::ArpSipMask(v4(x.mask))]);
    }
    if let Some(x) = m.arp_tip {
        o.extend([O::ArpTip(v4(x.value)), O::ArpTipMask(v4(x.mask))]);
    }
    if let Some(x) = m.arp_sha {
        o.extend([O::ArpSha(x.value), O::ArpShaMask(x.mask)]);
    }
    if let Some(x) = m.arp_tha {
        o.extend([O::ArpTha(x.value), O::ArpThaMask(x.mask)]);
    }
    encode_tunnel(&m.tunnel, &mut o);
    o.push(O::Flags(policy_flags(policy)));
    o.push(O::Actions(encode_actions(&rule.actions, cookie, act_flags)));
    o
}

fn encode_l4(m: &FlowerMatch, o: &mut Vec<TcFilterFlowerOption>) {
    use TcFilterFlowerOption as O;
    let ports = |src: fn(u16) -> O,
                 srcm: fn(u16) -> O,
                 dst: fn(u16) -> O,
                 dstm: fn(u16) -> O,
                 o: &mut Vec<O>| {
        if let Some(x) = m.l4_src {
            o.extend([src(x.value), srcm(x.mask)]);
        }
        if let Some(x) = m.l4_dst {
            o.extend([dst(x.value), dstm(x.mask)]);
        }
    };
    match m.ip_proto {
        Some(IPPROTO_TCP) => {
            ports(O::TcpSrc, O::TcpSrcMask, O::TcpDst, O::TcpDstMask, o);
            if let Some(x) = m.tcp_flags {
                o.extend([O::TcpFlags(x.value), O::TcpFlagsMask(x.mask)]);
            }
        }
        Some(IPPROTO_UDP) => ports(O::UdpSrc, O::UdpSrcMask, O::UdpDst, O::UdpDstMask, o),
        Some(IPPROTO_SCTP) => ports(O::SctpSrc, O::SctpSrcMask, O::SctpDst, O::SctpDstMask, o),
        Some(IPPROTO_ICMP) => {
            if let Some(x) = m.icmp_type {
                o.extend([O::Icmpv4Type(x.value), O::Icmpv4TypeMask(x.mask)]);
            }
            if let Some(x) = m.icmp_code {
                o.extend([O::Icmpv4Code(x.value), O::Icmpv4CodeMask(x.mask)]);
            }
        }
        Some(IPPROTO_ICMPV6) => {
            if let Some(x) = m.icmp_type {
                o.extend([O::Icmpv6Type(x.value), O::Icmpv6TypeMask(x.mask)]);
            }
            if let Some(x) = m.icmp_code {
                o.extend([O::Icmpv6Code(x.value), O::Icmpv6CodeMask(x.mask)]);
            }
        }
        _ => {}
    }
}

fn encode_tunnel(t: &TunnelMatch, o: &mut Vec<TcFilterFlowerOption>) {
    use TcFilterFlowerOption as O;
    o.extend(t.key_id.map(O::EncKeyId));
    for (x, is_src) in [(t.src, true), (t.dst, false)] {
        let Some(x) = x else { continue };
        o.extend(match (x.value, is_src) {
            (IpAddr::V4(_), true) => [
                O::EncKeyIpv4Src(v4(x.value)),
                O::EncKeyIpv4SrcMask(v4(x.mask)),
            ],
            (IpAddr::V4(_), false) => [
                O::EncKeyIpv4Dst(v4(x.value)),
                O::EncKeyIpv4DstMask(v4(x.mask)),
            ],
            (IpAddr::V6(_), true) => [
                O::EncKeyIpv6Src(v6(x.value)),
                O::EncKeyIpv6SrcMask(v6(x.mask)),
            ],
            (IpAddr::V6(_), false) => [
                O::EncKeyIpv6Dst(v6(x.value)),
                O::EncKeyIpv6DstMask(v6(x.mask)),
            ],
        });
    }
    if let Some(x) = t.dst_port {
        o.extend([
            O::EncKeyUdpDstPort(x.value),
            O::EncKeyUdpDstPortMask(x.mask),
        ]);
    }
    if let Some(x) = t.tos {
        o.extend([O::EncKeyIpTos(x.value), O::EncKeyIpTosMask(x.mask)]);
    }
    if let Some(x) = t.ttl {
        o.extend([O::EncKeyIpTtl(x.value), O::EncKeyIpTtlMask(x.mask)]);
    }
}

fn frag_to_flags(x: Masked<u8>) -> (u32, u32) {
    let (mut f, mut m) = (0, 0);
    if x.mask & frag::ANY != 0 {
        m |= key_flags::IS_FRAGMENT;
        if x.value & frag::ANY != 0 {
            f |= key_flags::IS_FRAGMENT;
        }
    }
    if x.mask & frag::LATER != 0 {
        m |= key_flags::FRAG_IS_FIRST;
        if x.value & frag::ANY != 0 && x.value & frag::LATER == 0 {
            f |= key_flags::FRAG_IS_FIRST;
        }
    }
    (f, m)
}

fn flags_to_frag(f: u32, m: u32) -> Masked<u8> {
    let (mut v, mut mask) = (0, 0);
    if m & key_flags::IS_FRAGMENT != 0 {
        mask |= frag::ANY;
        if f & key_flags::IS_FRAGMENT != 0 {
            v |= frag::ANY;
        }
    }
    if m & key_flags::FRAG_IS_FIRST != 0 {
        mask |= frag::LATER;
        if f & key_flags::IS_FRAGMENT != 0 && f & key_flags::FRAG_IS_FIRST == 0 {
            v |= frag::LATER;
        }
    }
    Masked::new(v, mask)
}

/// A flower filter as decoded from the kernel (or from flowd's own encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFilter {
    /// The rule.
    pub rule: FlowerRule,
    /// The policy flags.
    pub policy: TcPolicy,
    /// Hardware state from the flags and `in_hw_count`.
    pub hw: HwState,
    /// The first action's cookie.
    pub cookie: Option<Vec<u8>>,
    /// Counters (from the actions).
    pub stats: RuleStats,
}

fn ip_of(a: impl Into<IpAddr>) -> IpAddr {
    a.into()
}

/// Decodes flower options. `protocol` is the filter's protocol from `tcm_info` (the
/// kernel echoes the inner ethertype as `eth_type` for VLAN filters).
pub fn decode_flower(
    ingress: IfIndex,
    protocol: u16,
    opts: &[TcFilterFlowerOption],
) -> Result<DecodedFilter, DecodeError> {
    use TcFilterFlowerOption as O;
    let mut m = FlowerMatch {
        protocol,
        ..FlowerMatch::default()
    };
    let mut d = MaskAcc::default();
    let (mut flags, mut in_hw_count, mut actions_raw) = (0u32, None, None);
    for o in opts {
        match o {
            O::Flags(f) => flags = *f,
            O::InHwCount(c) => in_hw_count = Some(*c),
            O::Actions(a) => actions_raw = Some(a),
            o if d.take_l2(&mut m, o) || d.take_l3(o) || d.take_l4(o) => {}
            o if d.take_tunnel(&mut m, o) => {}
            O::InDev(_) => return Err(DecodeError::from("indev match is not flowd's")),
            // Keys flowd never installs, or unknown attributes: a rule flowd did not
            // write (it is reported undecodable, never misread).
            O::Other(nla) if nla.kind() == 1 => {} // TCA_FLOWER_CLASSID
            other => {
                return Err(DecodeError::from(format!(
                    "flower key not handled: {other:?}"
                )));
            }
        }
    }
    d.apply(&mut m)?;
    let (actions, cookie, stats) = match actions_raw {
        Some(a) => decode_actions(a)?,
        None => (Vec::new(), None, RuleStats::default()),
    };
    let policy = policy_of(flags);
    let hw = hw_of(flags, in_hw_count);
    Ok(DecodedFilter {
        rule: FlowerRule {
            ingress,
            matches: m,
            actions,
        },
        policy,
        hw,
        cookie,
        stats,
    })
}

/// The policy of `TCA_FLOWER_FLAGS`.
fn policy_of(flags: u32) -> TcPolicy {
    if flags & cls_flags::SKIP_HW != 0 {
        TcPolicy::SkipHw
    } else if flags & cls_flags::SKIP_SW != 0 {
        TcPolicy::SkipSw
    } else {
        TcPolicy::None
    }
}

/// The hardware state of `TCA_FLOWER_FLAGS` and `TCA_FLOWER_IN_HW_COUNT`.
fn hw_of(flags: u32, in_hw_count: Option<u32>) -> HwState {
    if flags & cls_flags::IN_HW != 0 {
        HwState::InHw {
            count: in_hw_count.unwrap_or(1),
        }
    } else if flags & cls_flags::NOT_IN_HW != 0 {
        HwState::NotInHw
    } else {
        HwState::Unknown
    }
}

type Pair<T> = (Option<T>, Option<T>);

/// Values and masks collected from attributes, paired at the end.
#[derive(Default)]
struct MaskAcc {
    eth_dst: Pair<[u8; 6]>,
    eth_src: Pair<[u8; 6]>,
    ip_src: Pair<IpAddr>,
    ip_dst: Pair<IpAddr>,
    ip_tos: Pair<u8>,
    ip_ttl: Pair<u8>,
    key_flags: Pair<u32>,
    l4_src: Pair<u16>,
    l4_dst: Pair<u16>,
    tcp_flags: Pair<u16>,
    icmp_type: Pair<u8>,
    icmp_code: Pair<u8>,
    arp_op: Pair<u8>,
    arp_sip: Pair<IpAddr>,
    arp_tip: Pair<IpAddr>,
    arp_sha: Pair<[u8; 6]>,
    arp_tha: Pair<[u8; 6]>,
    enc_src: Pair<IpAddr>,
    enc_dst: Pair<IpAddr>,
    enc_port: Pair<u16>,
    enc_tos: Pair<u8>,
    enc_ttl: Pair<u8>,
}

/// Each `take_*` consumes one attribute of its layer (true) or leaves it (false).
impl MaskAcc {
    /// Ethernet, VLANs and the IP protocol.
    fn take_l2(&mut self, m: &mut FlowerMatch, o: &TcFilterFlowerOption) -> bool {
        use TcFilterFlowerOption as O;
        let d = self;
        match o {
            O::EthType(t) if m.protocol == ETH_P_ALL => m.protocol = *t,
            O::EthType(_) => {}
            O::EthDst(v) => d.eth_dst.0 = Some(*v),
            O::EthDstMask(v) => d.eth_dst.1 = Some(*v),
            O::EthSrc(v) => d.eth_src.0 = Some(*v),
            O::EthSrcMask(v) => d.eth_src.1 = Some(*v),
            O::VlanId(v) => m.vlan.get_or_insert_with(VlanMatch::default).id = Some(*v),
            O::VlanPrio(v) => m.vlan.get_or_insert_with(VlanMatch::default).prio = Some(*v),
            O::VlanEthType(v) => m.vlan.get_or_insert_with(VlanMatch::default).eth_type = Some(*v),
            O::CvlanId(v) => m.cvlan.get_or_insert_with(VlanMatch::default).id = Some(*v),
            O::CvlanPrio(v) => m.cvlan.get_or_insert_with(VlanMatch::default).prio = Some(*v),
            O::CvlanEthType(v) => {
                m.cvlan.get_or_insert_with(VlanMatch::default).eth_type = Some(*v)
            }
            O::IpProto(v) => m.ip_proto = Some(*v),
            _ => return false,
        }
        true
    }

    /// IP addresses, TOS, TTL and fragment flags.
    fn take_l3(&mut self, o: &TcFilterFlowerOption) -> bool {
        use TcFilterFlowerOption as O;
        let d = self;
        match o {
            O::Ipv4Src(v) => d.ip_src.0 = Some(ip_of(*v)),
            O::Ipv4SrcMask(v) => d.ip_src.1 = Some(ip_of(*v)),
            O::Ipv4Dst(v) => d.ip_dst.0 = Some(ip_of(*v)),
            O::Ipv4DstMask(v) => d.ip_dst.1 = Some(ip_of(*v)),
            O::Ipv6Src(v) => d.ip_src.0 = Some(ip_of(*v)),
            O::Ipv6SrcMask(v) => d.ip_src.1 = Some(ip_of(*v)),
            O::Ipv6Dst(v) => d.ip_dst.0 = Some(ip_of(*v)),
            O::Ipv6DstMask(v) => d.ip_dst.1 = Some(ip_of(*v)),
            O::IpTos(v) => d.ip_tos.0 = Some(*v),
            O::IpTosMask(v) => d.ip_tos.1 = Some(*v),
            O::IpTtl(v) => d.ip_ttl.0 = Some(*v),
            O::IpTtlMask(v) => d.ip_ttl.1 = Some(*v),
            O::KeyFlags(v) => d.key_flags.0 = Some(*v),
            O::KeyFlagsMask(v) => d.key_flags.1 = Some(*v),
            _ => return false,
        }
        true
    }

    /// Ports, TCP flags, ICMP and ARP.
    fn take_l4(&mut self, o: &TcFilterFlowerOption) -> bool {
        use TcFilterFlowerOption as O;
        let d = self;
        match o {
            O::TcpSrc(v) | O::UdpSrc(v) | O::SctpSrc(v) => d.l4_src.0 = Some(*v),
            O::TcpSrcMask(v) | O::UdpSrcMask(v) | O::SctpSrcMask(v) => d.l4_src.1 = Some(*v),
            O::TcpDst(v) | O::UdpDst(v) | O::SctpDst(v) => d.l4_dst.0 = Some(*v),
            O::TcpDstMask(v) | O::UdpDstMask(v) | O::SctpDstMask(v) => d.l4_dst.1 = Some(*v),
            O::TcpFlags(v) => d.tcp_flags.0 = Some(*v),
            O::TcpFlagsMask(v) => d.tcp_flags.1 = Some(*v),
            O::Icmpv4Type(v) | O::Icmpv6Type(v) => d.icmp_type.0 = Some(*v),
            O::Icmpv4TypeMask(v) | O::Icmpv6TypeMask(v) => d.icmp_type.1 = Some(*v),
            O::Icmpv4Code(v) | O::Icmpv6Code(v) => d.icmp_code.0 = Some(*v),
            O::Icmpv4CodeMask(v) | O::Icmpv6CodeMask(v) => d.icmp_code.1 = Some(*v),
            O::ArpOp(v) => d.arp_op.0 = Some(*v),
            O::ArpOpMask(v) => d.arp_op.1 = Some(*v),
            O::ArpSip(v) => d.arp_sip.0 = Some(ip_of(*v)),
            O::ArpSipMask(v) => d.arp_sip.1 = Some(ip_of(*v)),
            O::ArpTip(v) => d.arp_tip.0 = Some(ip_of(*v)),
            O::ArpTipMask(v) => d.arp_tip.1 = Some(ip_of(*v)),
            O::ArpSha(v) => d.arp_sha.0 = Some(*v),
            O::ArpShaMask(v) => d.arp_sha.1 = Some(*v),
            O::ArpTha(v) => d.arp_tha.0 = Some(*v),
            O::ArpThaMask(v) => d.arp_tha.1 = Some(*v),
            _ => return false,
        }
        true
    }

    /// The tunnel (`enc_*`) keys.
    fn take_tunnel(&mut self, m: &mut FlowerMatch, o: &TcFilterFlowerOption) -> bool {
        use TcFilterFlowerOption as O;
        let d = self;
        match o {
            O::EncKeyId(v) => m.tunnel.key_id = Some(*v),
            O::EncKeyIpv4Src(v) => d.enc_src.0 = Some(ip_of(*v)),
            O::EncKeyIpv4SrcMask(v) => d.enc_src.1 = Some(ip_of(*v)),
            O::EncKeyIpv4Dst(v) => d.enc_dst.0 = Some(ip_of(*v)),
            O::EncKeyIpv4DstMask(v) => d.enc_dst.1 = Some(ip_of(*v)),
            O::EncKeyIpv6Src(v) => d.enc_src.0 = Some(ip_of(*v)),
            O::EncKeyIpv6SrcMask(v) => d.enc_src.1 = Some(ip_of(*v)),
            O::EncKeyIpv6Dst(v) => d.enc_dst.0 = Some(ip_of(*v)),
            O::EncKeyIpv6DstMask(v) => d.enc_dst.1 = Some(ip_of(*v)),
            O::EncKeyUdpDstPort(v) => d.enc_port.0 = Some(*v),
            O::EncKeyUdpDstPortMask(v) => d.enc_port.1 = Some(*v),
            O::EncKeyIpTos(v) => d.enc_tos.0 = Some(*v),
            O::EncKeyIpTosMask(v) => d.enc_tos.1 = Some(*v),
            O::EncKeyIpTtl(v) => d.enc_ttl.0 = Some(*v),
            O::EncKeyIpTtlMask(v) => d.enc_ttl.1 = Some(*v),
            _ => return false,
        }
        true
    }
}

/// Pairs a value with its mask; a value without a mask is an exact match (the kernel's
/// rule), a mask without a value matches zero.
trait Full: Sized + Copy {
    fn full_like(&self) -> Self;
    fn zero_like(m: &Self) -> Self;
}
impl Full for u8 {
    fn full_like(&self) -> Self {
        u8::MAX
    }
    fn zero_like(_: &Self) -> Self {
        0
    }
}
impl Full for u16 {
    fn full_like(&self) -> Self {
        u16::MAX
    }
    fn zero_like(_: &Self) -> Self {
        0
    }
}
impl Full for [u8; 6] {
    fn full_like(&self) -> Self {
        [0xff; 6]
    }
    fn zero_like(_: &Self) -> Self {
        [0; 6]
    }
}
impl Full for IpAddr {
    fn full_like(&self) -> Self {
        match self {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from([0xff; 16])),
        }
    }
    fn zero_like(m: &Self) -> Self {
        crate::translate::unspecified_like(*m)
    }
}

fn pair<T: Full>(p: Pair<T>) -> Option<Masked<T>> {
    match p {
        (Some(v), Some(m)) => Some(Masked::new(v, m)),
        (Some(v), None) => Some(Masked::new(v, v.full_like())),
        (None, Some(m)) => Some(Masked::new(T::zero_like(&m), m)),
        (None, None) => None,
    }
}

fn pair_ip(p: Pair<IpAddr>) -> Result<Option<Masked<IpAddr>>, DecodeError> {
    if let (Some(IpAddr::V4(_)), Some(IpAddr::V6(_))) | (Some(IpAddr::V6(_)), Some(IpAddr::V4(_))) =
        p
    {
        return Err(DecodeError::from("address and mask of different families"));
    }
    Ok(pair(p))
}

impl MaskAcc {
    fn apply(self, m: &mut FlowerMatch) -> Result<(), DecodeError> {
        m.eth_dst = pair(self.eth_dst);
        m.eth_src = pair(self.eth_src);
        m.ip_src = pair_ip(self.ip_src)?;
        m.ip_dst = pair_ip(self.ip_dst)?;
        m.ip_tos = pair(self.ip_tos);
        m.ip_ttl = pair(self.ip_ttl);
        m.ip_frag = match self.key_flags {
            (None, None) => None,
            (f, fm) => Some(flags_to_frag(f.unwrap_or(0), fm.unwrap_or(u32::MAX))),
        };
        m.l4_src = pair(self.l4_src);
        m.l4_dst = pair(self.l4_dst);
        m.tcp_flags = pair(self.tcp_flags);
        m.icmp_type = pair(self.icmp_type);
        m.icmp_code = pair(self.icmp_code);
        m.arp_op = pair(self.arp_op);
        m.arp_sip = pair_ip(self.arp_sip)?;
        m.arp_tip = pair_ip(self.arp_tip)?;
        m.arp_sha = pair(self.arp_sha);
        m.arp_tha = pair(self.arp_tha);
        m.tunnel.src = pair_ip(self.enc_src)?;
        m.tunnel.dst = pair_ip(self.enc_dst)?;
        m.tunnel.dst_port = pair(self.enc_port);
        m.tunnel.tos = pair(self.enc_tos);
        m.tunnel.ttl = pair(self.enc_ttl);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(items: &[TcFilterFlowerOption]) -> Vec<u8> {
        super::super::emitted(items)
    }

    fn parse(bytes: &[u8]) -> Result<Vec<TcFilterFlowerOption>, DecodeError> {
        super::super::parsed(bytes)
    }

    /// `protocol ip flower skip_hw ip_proto tcp dst_port 80` on if5, without actions.
    fn tcp_80() -> FlowerRule {
        FlowerRule {
            ingress: IfIndex(5),
            matches: FlowerMatch {
                protocol: 0x0800,
                ip_proto: Some(IPPROTO_TCP),
                l4_dst: Some(Masked::new(80, 0xffff)),
                ..FlowerMatch::default()
            },
            actions: Vec::new(),
        }
    }

    /// The options of [`tcp_80`]: KEY_ETH_TYPE (8, big endian), KEY_IP_PROTO (9),
    /// KEY_TCP_DST (19) and KEY_TCP_DST_MASK (36), both big endian, FLAGS (22)
    /// TCA_CLS_FLAGS_SKIP_HW, and an empty ACT (3; a nest, sent without NLA_F_NESTED).
    #[rustfmt::skip]
    const TCP_80: [u8; 44] = [
        6, 0, 8, 0,  0x08, 0x00, 0, 0,
        5, 0, 9, 0,  6, 0, 0, 0,
        6, 0, 19, 0,  0, 80, 0, 0,
        6, 0, 36, 0,  0xff, 0xff, 0, 0,
        8, 0, 22, 0,  1, 0, 0, 0,
        4, 0, 3, 0,
    ];

    #[test]
    fn a_known_match_is_byte_exact_and_decodes_back() {
        let rule = tcp_80();
        let bytes = emit(&encode_flower(&rule, TcPolicy::SkipHw, None, 0));
        assert_eq!(bytes, TCP_80);
        let d = decode_flower(IfIndex(5), 0x0800, &parse(&bytes).unwrap()).unwrap();
        assert_eq!(d.rule, rule);
        assert_eq!(d.policy, TcPolicy::SkipHw);
        assert_eq!(d.hw, HwState::Unknown);
    }

    #[test]
    fn a_value_without_a_mask_is_exact_and_a_mask_alone_matches_zero() {
        use TcFilterFlowerOption as O;
        let d = decode_flower(
            IfIndex(1),
            0x0800,
            &[O::IpTtl(64), O::Ipv4DstMask(Ipv4Addr::new(255, 0, 0, 0))],
        )
        .unwrap();
        assert_eq!(d.rule.matches.ip_ttl, Some(Masked::new(64, 0xff)));
        assert_eq!(
            d.rule.matches.ip_dst,
            Some(Masked::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::new(255, 0, 0, 0))
            ))
        );
    }

    #[test]
    fn keys_flowd_never_installs_are_decode_errors() {
        use TcFilterFlowerOption as O;
        for bad in [
            vec![O::InDev("eth0".into())],
            vec![
                O::Ipv4Src(Ipv4Addr::LOCALHOST),
                O::Ipv6SrcMask(Ipv6Addr::LOCALHOST),
            ],
        ] {
            assert!(decode_flower(IfIndex(1), 0x0800, &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn in_hw_flags_give_the_hardware_state() {
        use TcFilterFlowerOption as O;
        let hw = |opts: &[O]| decode_flower(IfIndex(1), 3, opts).unwrap().hw;
        assert_eq!(
            hw(&[O::Flags(cls_flags::IN_HW), O::InHwCount(2)]),
            HwState::InHw { count: 2 }
        );
        assert_eq!(hw(&[O::Flags(cls_flags::NOT_IN_HW)]), HwState::NotInHw);
        assert_eq!(hw(&[]), HwState::Unknown);
    }

    #[test]
    fn truncated_or_flipped_options_never_panic() {
        let bytes = emit(&encode_flower(&tcp_80(), TcPolicy::None, None, 0));
        for cut in 0..bytes.len() {
            if let Ok(o) = parse(&bytes[..cut]) {
                let _ = decode_flower(IfIndex(5), 0x0800, &o);
            }
        }
        let mut x: u32 = 3;
        for _ in 0..3000 {
            let mut b = bytes.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = (x as usize) % b.len();
            b[i] = (x >> 8) as u8;
            if let Ok(o) = parse(&b) {
                let _ = decode_flower(IfIndex(5), 0x0800, &o);
            }
        }
    }
}
