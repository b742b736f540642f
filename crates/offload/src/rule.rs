//! [`FlowerRule`]: flowd's own, netlink-free picture of one tc flower filter.
//!
//! Every match field pairs its value and mask ([`Masked`]); `None` means "not matched".
//! Values are stored already masked, as the kernel echoes them back, so a rule decoded
//! from a dump compares equal to the rule that was installed.

use datapath::IfIndex;
use std::fmt;
use std::net::IpAddr;

/// A value and its mask (a one bit is matched). The value has no bit outside the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Masked<T> {
    /// The value (already masked).
    pub value: T,
    /// The mask.
    pub mask: T,
}

impl<T> Masked<T> {
    /// Pairs a value and a mask (the caller masks the value).
    pub const fn new(value: T, mask: T) -> Self {
        Self { value, mask }
    }
}

/// A VLAN tag match (flower matches id and priority exactly or not at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanMatch {
    /// The VLAN id, when matched.
    pub id: Option<u16>,
    /// The priority code point, when matched.
    pub prio: Option<u8>,
    /// The ethertype after this tag (the next TPID or the payload's ethertype).
    pub eth_type: Option<u16>,
}

/// The outer (tunnel) header match of a decapsulated packet (flower's `enc_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TunnelMatch {
    /// VXLAN VNI (`enc_key_id`), exact.
    pub key_id: Option<u32>,
    /// Outer source IP (`enc_src_ip`).
    pub src: Option<Masked<IpAddr>>,
    /// Outer destination IP (`enc_dst_ip`).
    pub dst: Option<Masked<IpAddr>>,
    /// Outer UDP destination port (`enc_dst_port`).
    pub dst_port: Option<Masked<u16>>,
    /// Outer TOS (`enc_tos`).
    pub tos: Option<Masked<u8>>,
    /// Outer TTL (`enc_ttl`).
    pub ttl: Option<Masked<u8>>,
}

impl TunnelMatch {
    /// Whether no outer field is matched.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Everything a flower filter matches besides its ingress device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowerMatch {
    /// The filter's protocol: the outermost ethertype (802.1Q when a tag is matched).
    pub protocol: u16,
    /// Ethernet destination.
    pub eth_dst: Option<Masked<[u8; 6]>>,
    /// Ethernet source.
    pub eth_src: Option<Masked<[u8; 6]>>,
    /// Outer VLAN tag.
    pub vlan: Option<VlanMatch>,
    /// Inner VLAN tag (QinQ).
    pub cvlan: Option<VlanMatch>,
    /// IP protocol, exact.
    pub ip_proto: Option<u8>,
    /// IPv4/IPv6 source.
    pub ip_src: Option<Masked<IpAddr>>,
    /// IPv4/IPv6 destination.
    pub ip_dst: Option<Masked<IpAddr>>,
    /// IP TOS / traffic class.
    pub ip_tos: Option<Masked<u8>>,
    /// IP TTL / hop limit.
    pub ip_ttl: Option<Masked<u8>>,
    /// Fragment bits in flowd's terms ([`datapath::flow::frag`]).
    pub ip_frag: Option<Masked<u8>>,
    /// TCP/UDP/SCTP source port.
    pub l4_src: Option<Masked<u16>>,
    /// TCP/UDP/SCTP destination port.
    pub l4_dst: Option<Masked<u16>>,
    /// TCP flags.
    pub tcp_flags: Option<Masked<u16>>,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Option<Masked<u8>>,
    /// ICMP/ICMPv6 code.
    pub icmp_code: Option<Masked<u8>>,
    /// ARP opcode.
    pub arp_op: Option<Masked<u8>>,
    /// ARP sender protocol address.
    pub arp_sip: Option<Masked<IpAddr>>,
    /// ARP target protocol address.
    pub arp_tip: Option<Masked<IpAddr>>,
    /// ARP sender hardware address.
    pub arp_sha: Option<Masked<[u8; 6]>>,
    /// ARP target hardware address.
    pub arp_tha: Option<Masked<[u8; 6]>>,
    /// Outer header of a decapsulated packet.
    pub tunnel: TunnelMatch,
}

/// `tunnel_key set` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelKeySet {
    /// VNI.
    pub id: u32,
    /// Outer source IP (resolved before offload).
    pub src: IpAddr,
    /// Outer destination IP.
    pub dst: IpAddr,
    /// Outer UDP destination port.
    pub dst_port: u16,
    /// Outer TOS (0: inherit the default).
    pub tos: u8,
    /// Outer TTL (0: the kernel's default).
    pub ttl: u8,
    /// Whether the outer UDP checksum is computed.
    pub csum: bool,
    /// Whether DF is set on the outer IPv4 header (`nofrag`).
    pub df: bool,
}

/// One tc action of a flower filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlowerAction {
    /// `tunnel_key set ...`.
    TunnelSet(TunnelKeySet),
    /// `tunnel_key unset`.
    TunnelUnset,
    /// `mirred egress redirect dev DEV` (the last output).
    Redirect(IfIndex),
    /// `mirred egress mirror dev DEV` (an output followed by more actions).
    Mirror(IfIndex),
    /// `vlan push id ID priority PRIO protocol TPID`.
    VlanPush {
        /// 0x8100 or 0x88a8.
        tpid: u16,
        /// VLAN id.
        vid: u16,
        /// PCP.
        prio: u8,
    },
    /// `vlan pop`.
    VlanPop,
    /// `gact drop`.
    Drop,
    /// `skbedit mark MARK`: the packet's mark, which the tunnel device's route lookup
    /// (`ip rule fwmark`) uses after a following `tunnel_key set` and redirect.
    SetMark(u32),
}

/// Where tc should run a filter (OVS's `tc-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TcPolicy {
    /// No flag: the kernel tries hardware, falls back to software.
    #[default]
    None,
    /// `skip_sw`: hardware only.
    SkipSw,
    /// `skip_hw`: tc software path only.
    SkipHw,
}

impl fmt::Display for TcPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcPolicy::None => "none",
            TcPolicy::SkipSw => "skip_sw",
            TcPolicy::SkipHw => "skip_hw",
        })
    }
}

/// A complete flower filter: ingress device, match, actions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowerRule {
    /// The device the filter sits on (ingress qdisc).
    pub ingress: IfIndex,
    /// What it matches.
    pub matches: FlowerMatch,
    /// What it does, in order.
    pub actions: Vec<FlowerAction>,
}

impl FlowerRule {
    /// Whether an encapsulation asks for DF.
    pub fn sets_df(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, FlowerAction::TunnelSet(t) if t.df))
    }

    /// Clears DF on every encapsulation.
    pub fn clear_df(&mut self) {
        for a in &mut self.actions {
            if let FlowerAction::TunnelSet(t) = a {
                t.df = false;
            }
        }
    }

    /// Whether the rule decapsulates (matches outer tunnel fields).
    pub fn is_decap(&self) -> bool {
        !self.matches.tunnel.is_empty()
    }

    /// A signature of what the rule masks (not the values): tc needs one priority per
    /// protocol and mask shape for hardware, as OVS does.
    pub fn mask_signature(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let m = &self.matches;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        m.protocol.hash(&mut h);
        fn mk<T: Hash>(x: &Option<Masked<T>>, h: &mut impl Hasher) {
            x.as_ref().map(|x| &x.mask).hash(h);
        }
        mk(&m.eth_dst, &mut h);
        mk(&m.eth_src, &mut h);
        m.vlan
            .map(|v| (v.id.is_some(), v.prio.is_some(), v.eth_type))
            .hash(&mut h);
        m.cvlan
            .map(|v| (v.id.is_some(), v.prio.is_some(), v.eth_type))
            .hash(&mut h);
        m.ip_proto.hash(&mut h);
        mk(&m.ip_src, &mut h);
        mk(&m.ip_dst, &mut h);
        mk(&m.ip_tos, &mut h);
        mk(&m.ip_ttl, &mut h);
        mk(&m.ip_frag, &mut h);
        mk(&m.l4_src, &mut h);
        mk(&m.l4_dst, &mut h);
        mk(&m.tcp_flags, &mut h);
        mk(&m.icmp_type, &mut h);
        mk(&m.icmp_code, &mut h);
        mk(&m.arp_op, &mut h);
        mk(&m.arp_sip, &mut h);
        mk(&m.arp_tip, &mut h);
        mk(&m.arp_sha, &mut h);
        mk(&m.arp_tha, &mut h);
        let t = &m.tunnel;
        t.key_id.is_some().hash(&mut h);
        mk(&t.src, &mut h);
        mk(&t.dst, &mut h);
        mk(&t.dst_port, &mut h);
        mk(&t.tos, &mut h);
        mk(&t.ttl, &mut h);
        h.finish()
    }
}
