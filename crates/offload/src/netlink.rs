//! The netlink edge: [`FlowerRule`] to and from netlink-packet-route's tc types,
//! request framing, answer decoding (ACKs with extack, echoes, dumps).
//!
//! netlink-packet-route 0.34 has flower, `tunnel_key` and `mirred`; the `gact` (drop),
//! `vlan` and `skbedit` (mark) actions it lacks are built here, in [`ext`], as
//! [`DefaultNla`]s.
//! Decoding never panics: unknown or malformed attributes become [`DecodeError`]s.

use crate::backend::{HwState, KernelErrno, RuleHandle, RuleStats};
use crate::rule::{
    FlowerAction, FlowerMatch, FlowerRule, Masked, TcPolicy, TunnelKeySet, TunnelMatch, VlanMatch,
};
use datapath::flow::frag;
use datapath::{FlowId, IfIndex};
use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL,
    NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionTunnelKeyOption, TcActionType, TcAttribute, TcFilterFlowerOption, TcHandle, TcHeader,
    TcMessage, TcMirror, TcMirrorActionType, TcOption, TcStats2, TcTunnelKey, Tcf,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
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

const TC_ACT_PIPE: i32 = 3;
const TCA_TUNNEL_KEY_ACT_SET: i32 = 1;
const TCA_TUNNEL_KEY_ACT_RELEASE: i32 = 2;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;
const ETH_P_ALL: u16 = 0x0003;

/// The `nlmsgerr` extended-ACK attribute carrying the message.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Outer flags of an NLMSG_ERROR: the request payload was not copied back.
const NLM_F_CAPPED: u16 = 0x100;
/// Outer flags of an NLMSG_ERROR: extack TLVs follow.
const NLM_F_ACK_TLVS: u16 = 0x200;

/// The action cookie that marks a filter as flowd's: `"flwd"`, the owner tag of the
/// flowd instance, and the flow id, big endian (16 bytes, the kernel's maximum).
pub const COOKIE_MAGIC: [u8; 4] = *b"flwd";

/// Builds the cookie of a flow's filter.
pub fn cookie(owner_tag: u32, flow: FlowId) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..4].copy_from_slice(&COOKIE_MAGIC);
    c[4..8].copy_from_slice(&owner_tag.to_be_bytes());
    c[8..].copy_from_slice(&flow.0.to_be_bytes());
    c
}

/// Reads a cookie: the owner tag and the flow id, if it is flowd's.
pub fn parse_cookie(c: &[u8]) -> Option<(u32, FlowId)> {
    if c.len() != 16 || c[..4] != COOKIE_MAGIC {
        return None;
    }
    let tag = u32::from_be_bytes(c[4..8].try_into().ok()?);
    let flow = u64::from_be_bytes(c[8..16].try_into().ok()?);
    Some((tag, FlowId(flow)))
}

/// The tc actions netlink-packet-route 0.34 does not model, as raw attributes.
pub mod ext {
    use super::*;

    /// `gact` kind.
    pub const GACT: &str = "gact";
    /// `vlan` kind.
    pub const VLAN: &str = "vlan";
    /// `skbedit` kind.
    pub const SKBEDIT: &str = "skbedit";
    /// `tunnel_key`'s `nofrag` flag (DF on the outer header; a kernel without it, such as 6.1, ignores it).
    pub const TCA_TUNNEL_KEY_NO_FRAG: u16 = 14;
    const TCA_SKBEDIT_PARMS: u16 = 2;
    const TCA_SKBEDIT_MARK: u16 = 5;
    const TCA_GACT_PARMS: u16 = 2;
    const TCA_VLAN_PARMS: u16 = 2;
    const TCA_VLAN_PUSH_VLAN_ID: u16 = 3;
    const TCA_VLAN_PUSH_VLAN_PROTOCOL: u16 = 4;
    const TCA_VLAN_PUSH_VLAN_PRIORITY: u16 = 6;
    /// `TCA_VLAN_ACT_POP`.
    pub const VLAN_ACT_POP: i32 = 1;
    /// `TCA_VLAN_ACT_PUSH`.
    pub const VLAN_ACT_PUSH: i32 = 2;
    /// `sizeof(struct tc_gen)`.
    const TC_GEN_LEN: usize = 20;

    fn tc_gen(action: i32) -> Vec<u8> {
        let mut g = TcActionGeneric::default();
        g.action = TcActionType::from(action);
        let mut b = vec![0u8; TC_GEN_LEN];
        g.emit(&mut b);
        b
    }

    /// The options of `gact drop`.
    pub fn gact_drop() -> Vec<TcActionOption> {
        vec![TcActionOption::Other(DefaultNla::new(
            TCA_GACT_PARMS,
            tc_gen(2),
        ))]
    }

    /// The options of `vlan pop` / `vlan push`.
    pub fn vlan(push: Option<(u16, u16, u8)>) -> Vec<TcActionOption> {
        let mut parms = tc_gen(TC_ACT_PIPE);
        let v_action = if push.is_some() {
            VLAN_ACT_PUSH
        } else {
            VLAN_ACT_POP
        };
        parms.extend_from_slice(&v_action.to_ne_bytes());
        let mut out = vec![TcActionOption::Other(DefaultNla::new(
            TCA_VLAN_PARMS,
            parms,
        ))];
        if let Some((tpid, vid, prio)) = push {
            out.push(TcActionOption::Other(DefaultNla::new(
                TCA_VLAN_PUSH_VLAN_ID,
                vid.to_ne_bytes().to_vec(),
            )));
            out.push(TcActionOption::Other(DefaultNla::new(
                TCA_VLAN_PUSH_VLAN_PROTOCOL,
                tpid.to_be_bytes().to_vec(),
            )));
            out.push(TcActionOption::Other(DefaultNla::new(
                TCA_VLAN_PUSH_VLAN_PRIORITY,
                vec![prio],
            )));
        }
        out
    }

    /// The options of `skbedit mark MARK` (the whole mark: no mask).
    pub fn skbedit_mark(mark: u32) -> Vec<TcActionOption> {
        vec![
            TcActionOption::Other(DefaultNla::new(TCA_SKBEDIT_PARMS, tc_gen(TC_ACT_PIPE))),
            TcActionOption::Other(DefaultNla::new(
                TCA_SKBEDIT_MARK,
                mark.to_ne_bytes().to_vec(),
            )),
        ]
    }

    /// Decodes `skbedit` options: only `mark` (without a mask) is flowd's.
    pub fn decode_skbedit(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
        let mut mark = None;
        for o in opts {
            let TcActionOption::Other(nla) = o else {
                continue;
            };
            let v = nla_value(nla);
            match nla.kind() {
                TCA_SKBEDIT_MARK => mark = i32_at(&v, 0).map(|m| m as u32),
                // A mask, a priority, a queue mapping: not flowd's.
                3 | 4 | 7 | 8 => {
                    return Err(DecodeError::from(format!(
                        "skbedit attribute {} is not flowd's",
                        nla.kind()
                    )));
                }
                _ => {}
            }
        }
        mark.map(FlowerAction::SetMark)
            .ok_or_else(|| DecodeError::from("skbedit without a mark"))
    }

    /// The value bytes of a raw attribute.
    pub fn nla_value(nla: &DefaultNla) -> Vec<u8> {
        let mut v = vec![0u8; nla.value_len()];
        nla.emit_value(&mut v);
        v
    }

    fn i32_at(b: &[u8], off: usize) -> Option<i32> {
        Some(i32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
    }

    /// Decodes `gact` options: only `drop` is flowd's.
    pub fn decode_gact(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
        for o in opts {
            if let TcActionOption::Other(nla) = o
                && nla.kind() == TCA_GACT_PARMS
            {
                let v = nla_value(nla);
                return match i32_at(&v, 8) {
                    Some(2) => Ok(FlowerAction::Drop),
                    Some(a) => Err(DecodeError::from(format!("gact action {a} is not drop"))),
                    None => Err(DecodeError::from("short TCA_GACT_PARMS")),
                };
            }
        }
        Err(DecodeError::from("gact without TCA_GACT_PARMS"))
    }

    /// Decodes `vlan` options.
    pub fn decode_vlan(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
        let (mut v_action, mut vid, mut tpid, mut prio) = (None, 0u16, 0x8100u16, 0u8);
        for o in opts {
            let TcActionOption::Other(nla) = o else {
                continue;
            };
            let v = nla_value(nla);
            match nla.kind() {
                TCA_VLAN_PARMS => v_action = i32_at(&v, TC_GEN_LEN),
                TCA_VLAN_PUSH_VLAN_ID if v.len() >= 2 => vid = u16::from_ne_bytes([v[0], v[1]]),
                TCA_VLAN_PUSH_VLAN_PROTOCOL if v.len() >= 2 => {
                    tpid = u16::from_be_bytes([v[0], v[1]])
                }
                TCA_VLAN_PUSH_VLAN_PRIORITY if !v.is_empty() => prio = v[0],
                _ => {}
            }
        }
        match v_action {
            Some(VLAN_ACT_POP) => Ok(FlowerAction::VlanPop),
            Some(VLAN_ACT_PUSH) => Ok(FlowerAction::VlanPush { tpid, vid, prio }),
            Some(a) => Err(DecodeError::from(format!("vlan action {a} not handled"))),
            None => Err(DecodeError::from("vlan without TCA_VLAN_PARMS")),
        }
    }
}

fn policy_flags(p: TcPolicy) -> u32 {
    match p {
        TcPolicy::None => 0,
        TcPolicy::SkipSw => cls_flags::SKIP_SW,
        TcPolicy::SkipHw => cls_flags::SKIP_HW,
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
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

/// `TCA_ACT_FLAGS`: an `nla_bitfield32` of `TCA_ACT_FLAGS_*`.
const TCA_ACT_FLAGS: u16 = 7;
/// `TCA_ACT_FLAGS_NO_PERCPU_STATS`: plain counters instead of per-CPU ones (far cheaper
/// to create and delete; the per-CPU allocator dominates filter setup at scale).
pub const ACT_FLAGS_NO_PERCPU_STATS: u32 = 1 << 0;

/// The tc actions of a rule; the cookie goes on the first one; `act_flags` are
/// `TCA_ACT_FLAGS_*` set on every action.
pub fn encode_actions(
    actions: &[FlowerAction],
    cookie: Option<[u8; 16]>,
    act_flags: u32,
) -> Vec<TcAction> {
    let mut out = Vec::with_capacity(actions.len());
    for (i, a) in actions.iter().enumerate() {
        let (kind, options) = encode_action(a);
        let mut act = TcAction::default();
        act.tab = (i + 1) as u16;
        act.attributes
            .push(TcActionAttribute::Kind(kind.to_string()));
        act.attributes.push(TcActionAttribute::Options(options));
        if let (0, Some(c)) = (i, cookie) {
            act.attributes.push(TcActionAttribute::Cookie(c.to_vec()));
        }
        if act_flags != 0 {
            let mut bf = act_flags.to_ne_bytes().to_vec();
            bf.extend(act_flags.to_ne_bytes());
            act.attributes
                .push(TcActionAttribute::Other(DefaultNla::new(TCA_ACT_FLAGS, bf)));
        }
        out.push(act);
    }
    out
}

fn generic(action: TcActionType) -> TcActionGeneric {
    let mut g = TcActionGeneric::default();
    g.action = action;
    g
}

fn mirred(
    ifindex: IfIndex,
    eaction: TcMirrorActionType,
    action: TcActionType,
) -> Vec<TcActionOption> {
    let mut m = TcMirror::default();
    m.generic = generic(action);
    m.eaction = eaction;
    m.ifindex = ifindex.0;
    vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(m))]
}

fn encode_action(a: &FlowerAction) -> (&'static str, Vec<TcActionOption>) {
    use TcActionTunnelKeyOption as T;
    match *a {
        FlowerAction::TunnelSet(t) => {
            let parms = TcTunnelKey {
                generic: generic(TcActionType::Pipe),
                t_action: TCA_TUNNEL_KEY_ACT_SET,
            };
            let mut o = vec![T::Parms(parms)];
            match (t.src, t.dst) {
                (IpAddr::V6(_), _) | (_, IpAddr::V6(_)) => {
                    o.extend([T::EncIpv6Src(v6(t.src)), T::EncIpv6Dst(v6(t.dst))]);
                }
                _ => o.extend([T::EncIpv4Src(v4(t.src)), T::EncIpv4Dst(v4(t.dst))]),
            }
            o.push(T::EncKeyId(t.id));
            if t.dst_port != 0 {
                o.push(T::EncDstPort(t.dst_port));
            }
            o.push(T::NoCsum(!t.csum));
            if t.df {
                // A flag: no value.
                o.push(T::Other(DefaultNla::new(
                    ext::TCA_TUNNEL_KEY_NO_FRAG,
                    Vec::new(),
                )));
            }
            if t.tos != 0 {
                o.push(T::EncTos(t.tos));
            }
            if t.ttl != 0 {
                o.push(T::EncTtl(t.ttl));
            }
            (
                "tunnel_key",
                o.into_iter().map(TcActionOption::TunnelKey).collect(),
            )
        }
        FlowerAction::TunnelUnset => {
            let parms = TcTunnelKey {
                generic: generic(TcActionType::Pipe),
                t_action: TCA_TUNNEL_KEY_ACT_RELEASE,
            };
            (
                "tunnel_key",
                vec![TcActionOption::TunnelKey(T::Parms(parms))],
            )
        }
        FlowerAction::Redirect(dev) => (
            "mirred",
            mirred(dev, TcMirrorActionType::EgressRedir, TcActionType::Stolen),
        ),
        FlowerAction::Mirror(dev) => (
            "mirred",
            mirred(dev, TcMirrorActionType::EgressMirror, TcActionType::Pipe),
        ),
        FlowerAction::VlanPush { tpid, vid, prio } => {
            (ext::VLAN, ext::vlan(Some((tpid, vid, prio))))
        }
        FlowerAction::VlanPop => (ext::VLAN, ext::vlan(None)),
        FlowerAction::Drop => (ext::GACT, ext::gact_drop()),
        FlowerAction::SetMark(m) => (ext::SKBEDIT, ext::skbedit_mark(m)),
    }
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
            O::Flags(f) => flags = *f,
            O::InHwCount(c) => in_hw_count = Some(*c),
            O::Actions(a) => actions_raw = Some(a),
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
    let policy = if flags & cls_flags::SKIP_HW != 0 {
        TcPolicy::SkipHw
    } else if flags & cls_flags::SKIP_SW != 0 {
        TcPolicy::SkipSw
    } else {
        TcPolicy::None
    };
    let hw = if flags & cls_flags::IN_HW != 0 {
        HwState::InHw {
            count: in_hw_count.unwrap_or(1),
        }
    } else if flags & cls_flags::NOT_IN_HW != 0 {
        HwState::NotInHw
    } else {
        HwState::Unknown
    };
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

fn tcf_last_used(tm: &Tcf) -> Option<u64> {
    // tcf_t is dumped relative to now in USER_HZ (1/100 s) ticks; firstuse 0 = never.
    (tm.firstuse != 0 || tm.lastuse < tm.install).then_some(tm.lastuse * 10)
}

type DecodedActions = (Vec<FlowerAction>, Option<Vec<u8>>, RuleStats);

/// Decodes a filter's actions, their cookie and counters.
pub fn decode_actions(acts: &[TcAction]) -> Result<DecodedActions, DecodeError> {
    let mut out = Vec::with_capacity(acts.len());
    let mut cookie = None;
    let mut stats = RuleStats::default();
    let mut acts: Vec<&TcAction> = acts.iter().collect();
    acts.sort_by_key(|a| a.tab);
    for a in acts {
        let mut kind = None;
        let mut opts: &[TcActionOption] = &[];
        for attr in &a.attributes {
            match attr {
                TcActionAttribute::Kind(k) => kind = Some(k.as_str()),
                TcActionAttribute::Options(o) => opts = o,
                TcActionAttribute::Cookie(c) if cookie.is_none() => cookie = Some(c.clone()),
                TcActionAttribute::Stats(s) => {
                    for st in s {
                        match st {
                            TcStats2::Basic(b) => {
                                stats.packets = stats.packets.max(u64::from(b.packets));
                                stats.bytes = stats.bytes.max(b.bytes);
                            }
                            TcStats2::BasicHw(b) => {
                                stats.hw_packets = stats.hw_packets.max(u64::from(b.packets));
                                stats.hw_bytes = stats.hw_bytes.max(b.bytes);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let action = match kind {
            Some("tunnel_key") => decode_tunnel_key(opts)?,
            Some("mirred") => decode_mirred(opts)?,
            Some(ext::GACT) => ext::decode_gact(opts)?,
            Some(ext::VLAN) => ext::decode_vlan(opts)?,
            Some(ext::SKBEDIT) => ext::decode_skbedit(opts)?,
            Some(k) => return Err(DecodeError::from(format!("action kind {k} is not flowd's"))),
            None => return Err(DecodeError::from("action without kind")),
        };
        for o in opts {
            let tm = match o {
                TcActionOption::TunnelKey(TcActionTunnelKeyOption::Tm(tm)) => Some(tm),
                TcActionOption::Mirror(TcActionMirrorOption::Tm(tm)) => Some(tm),
                _ => None,
            };
            if let Some(used) = tm.and_then(tcf_last_used) {
                stats.last_used_ms_ago = Some(stats.last_used_ms_ago.map_or(used, |u| u.min(used)));
            }
        }
        out.push(action);
    }
    Ok((out, cookie, stats))
}

fn decode_tunnel_key(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
    use TcActionTunnelKeyOption as T;
    let mut t_action = None;
    let mut t = TunnelKeySet {
        id: 0,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst_port: 0,
        tos: 0,
        ttl: 0,
        csum: true,
        df: false,
    };
    for o in opts {
        let TcActionOption::TunnelKey(o) = o else {
            continue;
        };
        if let T::Other(nla) = o
            && nla.kind() == ext::TCA_TUNNEL_KEY_NO_FRAG
        {
            t.df = true;
            continue;
        }
        match o {
            T::Parms(p) => t_action = Some(p.t_action),
            T::EncIpv4Src(a) => t.src = (*a).into(),
            T::EncIpv4Dst(a) => t.dst = (*a).into(),
            T::EncIpv6Src(a) => t.src = (*a).into(),
            T::EncIpv6Dst(a) => t.dst = (*a).into(),
            T::EncKeyId(k) => t.id = *k,
            T::EncDstPort(p) => t.dst_port = *p,
            T::EncTos(x) => t.tos = *x,
            T::EncTtl(x) => t.ttl = *x,
            T::NoCsum(n) => t.csum = !*n,
            _ => {}
        }
    }
    match t_action {
        Some(TCA_TUNNEL_KEY_ACT_SET) => Ok(FlowerAction::TunnelSet(t)),
        Some(TCA_TUNNEL_KEY_ACT_RELEASE) => Ok(FlowerAction::TunnelUnset),
        Some(a) => Err(DecodeError::from(format!(
            "tunnel_key action {a} not handled"
        ))),
        None => Err(DecodeError::from("tunnel_key without parms")),
    }
}

fn decode_mirred(opts: &[TcActionOption]) -> Result<FlowerAction, DecodeError> {
    for o in opts {
        if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = o {
            return match p.eaction {
                TcMirrorActionType::EgressRedir => Ok(FlowerAction::Redirect(IfIndex(p.ifindex))),
                TcMirrorActionType::EgressMirror => Ok(FlowerAction::Mirror(IfIndex(p.ifindex))),
                other => Err(DecodeError::from(format!("mirred {other:?} not handled"))),
            };
        }
    }
    Err(DecodeError::from("mirred without parms"))
}

/// The filter's position: tc's `tcm_info` packs the priority and the protocol.
pub fn tcm_info(prio: u16, protocol: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(protocol.to_be())
}

/// Unpacks `tcm_info` into priority and protocol.
pub fn split_tcm_info(info: u32) -> (u16, u16) {
    ((info >> 16) as u16, u16::from_be(info as u16))
}

fn filter_header(h: &RuleHandle) -> TcHeader {
    TcHeader {
        family: AddressFamily::Unspec,
        index: h.device.0 as i32,
        handle: TcHandle::from(h.handle),
        parent: TcHandle::INGRESS,
        info: tcm_info(h.prio, h.protocol),
    }
}

/// An `RTM_NEWTFILTER` message for a rule at a handle.
pub fn new_filter(
    h: &RuleHandle,
    rule: &FlowerRule,
    policy: TcPolicy,
    cookie: Option<[u8; 16]>,
    act_flags: u32,
) -> TcMessage {
    let opts: Vec<TcOption> = encode_flower(rule, policy, cookie, act_flags)
        .into_iter()
        .map(|o| match o {
            // Bottom-up: the deepest part first.
            TcFilterFlowerOption::Actions(acts) => TcOption::Flower(TcFilterFlowerOption::Other(
                DefaultNla::new(TCA_FLOWER_ACT, emitted(&acts)),
            )),
            o => TcOption::Flower(o),
        })
        .collect();
    TcMessage::from_parts(
        filter_header(h),
        vec![TcAttribute::Kind("flower".into()), preserialized(&opts)],
    )
}

/// `TCA_OPTIONS`.
const TCA_OPTIONS: u16 = 2;
/// `TCA_FLOWER_ACT`.
const TCA_FLOWER_ACT: u16 = 3;

/// The filter's options as one opaque attribute of the same type and bytes:
/// netlink-packet-route recomputes a nested attribute's length at every level it is
/// emitted from, which made serializing a 308-byte encap filter cost 6 µs (measured,
/// almost all of it in the action list, the deepest part). Emitted level by level,
/// bottom-up, each once: about 1.5 µs with building the attributes.
pub fn preserialized(opts: &[TcOption]) -> TcAttribute {
    TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, emitted(opts)))
}

/// Attributes emitted once, as bytes.
fn emitted<T: Nla>(attrs: &[T]) -> Vec<u8> {
    let mut bytes = vec![0; attrs.buffer_len()];
    attrs.emit(&mut bytes);
    bytes
}

/// An `RTM_DELTFILTER` message for a handle.
pub fn del_filter(h: &RuleHandle) -> TcMessage {
    TcMessage::from_parts(filter_header(h), vec![TcAttribute::Kind("flower".into())])
}

/// An `RTM_GETTFILTER` dump request for a device's ingress filters.
pub fn dump_filters(device: IfIndex) -> TcMessage {
    let mut h = filter_header(&RuleHandle {
        device,
        prio: 0,
        protocol: 0,
        handle: 0,
    });
    h.info = 0;
    TcMessage::from_parts(h, Vec::new())
}

/// An `RTM_NEWQDISC` message adding the ingress qdisc to a device.
pub fn new_ingress_qdisc(device: IfIndex) -> TcMessage {
    TcMessage::from_parts(
        TcHeader {
            family: AddressFamily::Unspec,
            index: device.0 as i32,
            handle: TcHandle {
                major: 0xffff,
                minor: 0,
            },
            parent: TcHandle::INGRESS,
            info: 0,
        },
        vec![TcAttribute::Kind("ingress".into())],
    )
}

/// What a request is, for its netlink flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// New filter, fail if it exists, echo it back.
    Create,
    /// Change an existing filter in place, echo it back.
    Replace,
    /// Create without echo (verification off).
    CreateQuiet,
    /// Replace without echo (verification off).
    ReplaceQuiet,
    /// Delete.
    Delete,
    /// Dump.
    Dump,
    /// New qdisc.
    Qdisc,
}

/// Appends one framed request to `buf`.
pub fn push_request(buf: &mut Vec<u8>, kind: RequestKind, seq: u32, msg: TcMessage) {
    let (inner, flags) = match kind {
        RequestKind::Create => (
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
        ),
        RequestKind::Replace => (
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO,
        ),
        RequestKind::CreateQuiet => (
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ),
        RequestKind::ReplaceQuiet => (
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        ),
        RequestKind::Delete => (
            RouteNetlinkMessage::DelTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        ),
        RequestKind::Dump => (
            RouteNetlinkMessage::GetTrafficFilter(msg),
            NLM_F_REQUEST | NLM_F_DUMP,
        ),
        RequestKind::Qdisc => (
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ),
    };
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
    nl.finalize();
    let start = buf.len();
    buf.resize(start + nl.buffer_len(), 0);
    nl.serialize(&mut buf[start..]);
}

/// One message of a netlink answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// An ACK (errno 0) or a NACK, with the kernel's extack message.
    Ack {
        /// The request's sequence number.
        seq: u32,
        /// `None` for success.
        error: Option<(KernelErrno, Option<String>)>,
    },
    /// A filter (an echo or a dump entry).
    Filter {
        /// The sequence number.
        seq: u32,
        /// The tc message.
        msg: Box<TcMessage>,
    },
    /// End of a dump.
    Done {
        /// The sequence number.
        seq: u32,
    },
    /// Anything else (qdisc notifications, ...).
    Other {
        /// The sequence number.
        seq: u32,
    },
}

/// Splits a received buffer into answers. A malformed message yields an error for
/// itself and ends the walk (its length cannot be trusted).
pub fn parse_answers(mut buf: &[u8]) -> Vec<Result<Answer, DecodeError>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let nb = match NetlinkBuffer::new_checked(buf) {
            Ok(b) => b,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        };
        let len = nb.length() as usize;
        if len < 16 || len > buf.len() {
            out.push(Err(DecodeError::from("netlink length out of range")));
            break;
        }
        let (msg, rest) = buf.split_at(len);
        out.push(parse_one(
            msg,
            nb.message_type(),
            nb.flags(),
            nb.sequence_number(),
        ));
        buf = rest.get(len.next_multiple_of(4) - len..).unwrap_or(&[]);
    }
    out
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn parse_one(msg: &[u8], ty: u16, flags: u16, seq: u32) -> Result<Answer, DecodeError> {
    match ty {
        NLMSG_ERROR => {
            let payload = &msg[16..];
            let code = payload
                .get(..4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| DecodeError::from("short NLMSG_ERROR"))?;
            let error =
                (code != 0).then(|| (KernelErrno::from_errno(-code), extack(payload, flags)));
            Ok(Answer::Ack { seq, error })
        }
        NLMSG_DONE => Ok(Answer::Done { seq }),
        _ => {
            let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg)?;
            Ok(match nl.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(m)) => {
                    Answer::Filter {
                        seq,
                        msg: Box::new(m),
                    }
                }
                _ => Answer::Other { seq },
            })
        }
    }
}

/// The extack message of an NLMSG_ERROR payload (code + original header [+ request]
/// + TLVs).
fn extack(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let inner = payload.get(4..20)?;
    let inner_len = u32::from_ne_bytes(inner[..4].try_into().ok()?) as usize;
    let skip = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        inner_len.next_multiple_of(4)
    };
    let mut tlvs = payload.get(4 + skip..)?;
    while tlvs.len() >= 4 {
        let l = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let t = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if l < 4 || l > tlvs.len() {
            return None;
        }
        if t == NLMSGERR_ATTR_MSG {
            let s = &tlvs[4..l];
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        tlvs = tlvs.get(l.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

/// A decoded flower filter message: where it is and what it is.
#[derive(Debug)]
pub struct FilterEntry {
    /// Device, priority, protocol, handle.
    pub handle: RuleHandle,
    /// The filter (None for the per-priority header messages without options).
    pub filter: Option<Result<DecodedFilter, DecodeError>>,
}

/// Decodes a `RTM_NEWTFILTER` message.
pub fn decode_filter_msg(msg: &TcMessage) -> FilterEntry {
    let (prio, protocol) = split_tcm_info(msg.header.info);
    let handle = RuleHandle {
        device: IfIndex(msg.header.index as u32),
        prio,
        protocol,
        handle: u32::from(msg.header.handle.major) << 16 | u32::from(msg.header.handle.minor),
    };
    let mut kind = None;
    let mut opts = None;
    for a in &msg.attributes {
        match a {
            TcAttribute::Kind(k) => kind = Some(k.as_str()),
            TcAttribute::Options(o) => opts = Some(o),
            _ => {}
        }
    }
    let filter = match (kind, opts) {
        (Some("flower"), Some(o)) => {
            let flower: Vec<TcFilterFlowerOption> = o
                .iter()
                .filter_map(|x| match x {
                    TcOption::Flower(f) => Some(f.clone()),
                    _ => None,
                })
                .collect();
            Some(decode_flower(handle.device, protocol, &flower))
        }
        (Some("flower"), None) => None,
        (Some(k), _) => Some(Err(DecodeError::from(format!(
            "classifier {k} is not flowd's"
        )))),
        (None, _) => None,
    };
    FilterEntry { handle, filter }
}
