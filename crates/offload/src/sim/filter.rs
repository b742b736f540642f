//! The simulated eswitch's copy of a filter, kept compact: a million filters are a
//! million of these in flowd's own memory (on a real host the kernel holds them).
//!
//! A [`FlowerRule`] by value is about 400 bytes, most of them fields no filter matches.
//! [`SimFilter`] keeps the ingress, the protocol and only the matched fields, and its
//! actions in a list shared with every filter that does the same (interned by the
//! fabric: flows toward one VTEP all encapsulate and redirect alike). It gives the rule
//! back whole ([`SimFilter::rule`]) for the match on an injected packet and for dumps.

use crate::rule::{FlowerAction, FlowerMatch, FlowerRule, Masked, TunnelMatch, VlanMatch};
use datapath::IfIndex;
use datapath::fastmap::FastSet;
use std::net::IpAddr;
use std::sync::Arc;

/// One matched field of a flower match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    EthDst(Masked<[u8; 6]>),
    EthSrc(Masked<[u8; 6]>),
    Vlan(VlanMatch),
    Cvlan(VlanMatch),
    IpProto(u8),
    IpSrc(Masked<IpAddr>),
    IpDst(Masked<IpAddr>),
    IpTos(Masked<u8>),
    IpTtl(Masked<u8>),
    IpFrag(Masked<u8>),
    L4Src(Masked<u16>),
    L4Dst(Masked<u16>),
    TcpFlags(Masked<u16>),
    IcmpType(Masked<u8>),
    IcmpCode(Masked<u8>),
    ArpOp(Masked<u8>),
    ArpSip(Masked<IpAddr>),
    ArpTip(Masked<IpAddr>),
    ArpSha(Masked<[u8; 6]>),
    ArpTha(Masked<[u8; 6]>),
    TunKeyId(u32),
    TunSrc(Masked<IpAddr>),
    TunDst(Masked<IpAddr>),
    TunDstPort(Masked<u16>),
    TunTos(Masked<u8>),
    TunTtl(Masked<u8>),
}

/// A filter as the simulated eswitch holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SimFilter {
    /// The device the filter sits on.
    pub(super) ingress: IfIndex,
    /// The filter's protocol.
    pub(super) protocol: u16,
    fields: Box<[Field]>,
    actions: Arc<[FlowerAction]>,
}

/// The fields a match matches (destructured whole: a new field of [`FlowerMatch`]
/// breaks the build here until it is kept).
fn fields(m: &FlowerMatch) -> Box<[Field]> {
    let FlowerMatch {
        protocol: _,
        eth_dst,
        eth_src,
        vlan,
        cvlan,
        ip_proto,
        ip_src,
        ip_dst,
        ip_tos,
        ip_ttl,
        ip_frag,
        l4_src,
        l4_dst,
        tcp_flags,
        icmp_type,
        icmp_code,
        arp_op,
        arp_sip,
        arp_tip,
        arp_sha,
        arp_tha,
        tunnel,
    } = *m;
    let TunnelMatch {
        key_id,
        src,
        dst,
        dst_port,
        tos,
        ttl,
    } = tunnel;
    [
        eth_dst.map(Field::EthDst),
        eth_src.map(Field::EthSrc),
        vlan.map(Field::Vlan),
        cvlan.map(Field::Cvlan),
        ip_proto.map(Field::IpProto),
        ip_src.map(Field::IpSrc),
        ip_dst.map(Field::IpDst),
        ip_tos.map(Field::IpTos),
        ip_ttl.map(Field::IpTtl),
        ip_frag.map(Field::IpFrag),
        l4_src.map(Field::L4Src),
        l4_dst.map(Field::L4Dst),
        tcp_flags.map(Field::TcpFlags),
        icmp_type.map(Field::IcmpType),
        icmp_code.map(Field::IcmpCode),
        arp_op.map(Field::ArpOp),
        arp_sip.map(Field::ArpSip),
        arp_tip.map(Field::ArpTip),
        arp_sha.map(Field::ArpSha),
        arp_tha.map(Field::ArpTha),
        key_id.map(Field::TunKeyId),
        src.map(Field::TunSrc),
        dst.map(Field::TunDst),
        dst_port.map(Field::TunDstPort),
        tos.map(Field::TunTos),
        ttl.map(Field::TunTtl),
    ]
    .into_iter()
    .flatten()
    .collect()
}

impl SimFilter {
    /// The compact copy of `rule`, its actions taken from (or added to) `actions`.
    pub(super) fn new(rule: &FlowerRule, actions: &mut ActionLists) -> Self {
        Self {
            ingress: rule.ingress,
            protocol: rule.matches.protocol,
            fields: fields(&rule.matches),
            actions: actions.get(&rule.actions),
        }
    }

    /// The match, whole.
    pub(super) fn matches(&self) -> FlowerMatch {
        let mut m = FlowerMatch {
            protocol: self.protocol,
            ..FlowerMatch::default()
        };
        for f in self.fields.iter().copied() {
            match f {
                Field::EthDst(x) => m.eth_dst = Some(x),
                Field::EthSrc(x) => m.eth_src = Some(x),
                Field::Vlan(x) => m.vlan = Some(x),
                Field::Cvlan(x) => m.cvlan = Some(x),
                Field::IpProto(x) => m.ip_proto = Some(x),
                Field::IpSrc(x) => m.ip_src = Some(x),
                Field::IpDst(x) => m.ip_dst = Some(x),
                Field::IpTos(x) => m.ip_tos = Some(x),
                Field::IpTtl(x) => m.ip_ttl = Some(x),
                Field::IpFrag(x) => m.ip_frag = Some(x),
                Field::L4Src(x) => m.l4_src = Some(x),
                Field::L4Dst(x) => m.l4_dst = Some(x),
                Field::TcpFlags(x) => m.tcp_flags = Some(x),
                Field::IcmpType(x) => m.icmp_type = Some(x),
                Field::IcmpCode(x) => m.icmp_code = Some(x),
                Field::ArpOp(x) => m.arp_op = Some(x),
                Field::ArpSip(x) => m.arp_sip = Some(x),
                Field::ArpTip(x) => m.arp_tip = Some(x),
                Field::ArpSha(x) => m.arp_sha = Some(x),
                Field::ArpTha(x) => m.arp_tha = Some(x),
                Field::TunKeyId(x) => m.tunnel.key_id = Some(x),
                Field::TunSrc(x) => m.tunnel.src = Some(x),
                Field::TunDst(x) => m.tunnel.dst = Some(x),
                Field::TunDstPort(x) => m.tunnel.dst_port = Some(x),
                Field::TunTos(x) => m.tunnel.tos = Some(x),
                Field::TunTtl(x) => m.tunnel.ttl = Some(x),
            }
        }
        m
    }

    /// The actions.
    pub(super) fn actions(&self) -> &[FlowerAction] {
        &self.actions
    }

    /// The rule, whole.
    pub(super) fn rule(&self) -> FlowerRule {
        FlowerRule {
            ingress: self.ingress,
            matches: self.matches(),
            actions: self.actions.to_vec(),
        }
    }
}

/// Action lists shared between filters. Lists no filter holds any more leave when the
/// set has doubled since it was last swept.
#[derive(Debug, Default)]
pub(super) struct ActionLists {
    lists: FastSet<Arc<[FlowerAction]>>,
    sweep_at: usize,
}

impl ActionLists {
    fn get(&mut self, actions: &[FlowerAction]) -> Arc<[FlowerAction]> {
        if let Some(a) = self.lists.get(actions) {
            return a.clone();
        }
        if self.lists.len() >= self.sweep_at {
            self.lists.retain(|a| Arc::strong_count(a) > 1);
            self.sweep_at = (self.lists.len() * 2).max(64);
        }
        let a: Arc<[FlowerAction]> = actions.into();
        self.lists.insert(a.clone());
        a
    }

    /// How many lists are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lists.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::TunnelKeySet;
    use std::net::Ipv4Addr;

    fn ip(a: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, a))
    }

    fn full_rule() -> FlowerRule {
        let mac = |b: u8| Some(Masked::new([b; 6], [0xff; 6]));
        let ipm = |b: u8| Some(Masked::new(ip(b), ip(255)));
        let vlan = VlanMatch {
            id: Some(10),
            prio: Some(3),
            eth_type: Some(0x8100),
        };
        FlowerRule {
            ingress: IfIndex(7),
            matches: FlowerMatch {
                protocol: 0x88a8,
                eth_dst: mac(1),
                eth_src: mac(2),
                vlan: Some(vlan),
                cvlan: Some(VlanMatch::default()),
                ip_proto: Some(6),
                ip_src: ipm(3),
                ip_dst: ipm(4),
                ip_tos: Some(Masked::new(4, 0xfc)),
                ip_ttl: Some(Masked::new(5, 0xff)),
                ip_frag: Some(Masked::new(1, 3)),
                l4_src: Some(Masked::new(6, 0xffff)),
                l4_dst: Some(Masked::new(7, 0xff00)),
                tcp_flags: Some(Masked::new(2, 0x12)),
                icmp_type: Some(Masked::new(8, 0xff)),
                icmp_code: Some(Masked::new(9, 0xff)),
                arp_op: Some(Masked::new(1, 0xff)),
                arp_sip: ipm(10),
                arp_tip: ipm(11),
                arp_sha: mac(12),
                arp_tha: mac(13),
                tunnel: TunnelMatch {
                    key_id: Some(42),
                    src: ipm(14),
                    dst: ipm(15),
                    dst_port: Some(Masked::new(4789, 0xffff)),
                    tos: Some(Masked::new(1, 0xff)),
                    ttl: Some(Masked::new(64, 0xff)),
                },
            },
            actions: vec![
                FlowerAction::TunnelSet(TunnelKeySet {
                    id: 42,
                    src: ip(1),
                    dst: ip(2),
                    dst_port: 4789,
                    tos: 0,
                    ttl: 64,
                    csum: false,
                    df: true,
                }),
                FlowerAction::Redirect(IfIndex(3)),
            ],
        }
    }

    #[test]
    fn a_filter_gives_back_the_rule_it_was_made_of() {
        let mut lists = ActionLists::default();
        let full = full_rule();
        assert_eq!(SimFilter::new(&full, &mut lists).rule(), full);
        let mut bare = full_rule();
        bare.matches = FlowerMatch {
            protocol: 0x0800,
            ..FlowerMatch::default()
        };
        bare.actions.clear();
        assert_eq!(SimFilter::new(&bare, &mut lists).rule(), bare);
        // Only the cvlan's presence: kept as present.
        let mut tagged = bare.clone();
        tagged.matches.cvlan = Some(VlanMatch::default());
        assert_eq!(SimFilter::new(&tagged, &mut lists).rule(), tagged);
    }

    #[test]
    fn filters_that_act_alike_share_one_action_list() {
        let mut lists = ActionLists::default();
        let a = SimFilter::new(&full_rule(), &mut lists);
        let mut other = full_rule();
        other.matches.eth_dst = Some(Masked::new([9; 6], [0xff; 6]));
        let b = SimFilter::new(&other, &mut lists);
        assert!(Arc::ptr_eq(&a.actions, &b.actions));
        assert_eq!(lists.len(), 1);
    }

    /// Memory (issue 15): a filter of the scale bench's shape (a NORMAL + VXLAN
    /// megaflow: ingress, destination MAC, protocol) holds its fields and a shared
    /// action list; by value a `FlowerRule` was about 400 bytes. The bound is the
    /// struct's size (deterministic); the fields add 36 bytes each on the heap.
    #[test]
    fn a_filter_is_small() {
        assert!(std::mem::size_of::<SimFilter>() <= 40);
        assert!(std::mem::size_of::<Field>() <= 36);
        assert!(
            std::mem::size_of::<FlowerRule>() >= 300,
            "the saving is real"
        );
    }
}
