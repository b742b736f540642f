//! Flow key extraction: a frame (plus ingress port and tunnel metadata) -> [`FlowKey`].
//!
//! Extraction reads [`crate::wire`] views only, never allocates and never panics. It
//! fills the key layer by layer and stops at the first layer that is truncated or
//! malformed, leaving that layer's fields and everything after zero: a frame whose TCP
//! header is cut short gives a key with Ethernet and IP fields set and ports/flags zero.
//! This is what Open vSwitch's `flow_extract` does, and what the slow path and the
//! offload translation expect.
//!
//! Conventions (those of [`FlowKey`], plus):
//! - up to two VLAN tags (TPID 0x8100 or 0x88a8) fill `vlan_tci[0..2]` (outer first)
//!   with [`vlan::PRESENT`] set, and `vlan_tpid`; a truncated tag stops extraction with
//!   `eth_type` = that tag's TPID; a third tag is not parsed (`eth_type` = its TPID);
//! - an 802.3 frame (length < 0x600 in the ethertype position) gets `eth_type` =
//!   [`ETH_TYPE_NONE`] (0x05ff), as OVS's `FLOW_DL_TYPE_NONE`; nothing further is parsed;
//! - IPv4: a header that fails `check_len` (truncated, IHL < 5, total length beyond the
//!   frame) or a version other than 4 leaves every L3 field zero; the header checksum is
//!   not verified (the datapath forwards, it does not judge);
//! - IPv6: hop-by-hop, routing, destination-options, AH and fragment headers are
//!   skipped; `ip_proto` is the upper-layer protocol; if the extension chain is cut
//!   short, `ip_proto` stays 0 (addresses, TOS and hop limit are kept);
//! - fragments set [`frag::ANY`]; non-first fragments also [`frag::LATER`] and carry no
//!   L4 fields;
//! - ARP/RARP (Ethernet/IPv4 only): opcode in `ip_proto` when it fits 8 bits, SPA/TPA in
//!   the first 4 bytes of `ip_src`/`ip_dst`, SHA/THA in `arp_sha`/`arp_tha`;
//! - TCP needs a full header (data offset valid and within the packet); UDP 8 bytes;
//!   SCTP 12 bytes (ports only); ICMP/ICMPv6 8 bytes (type in `tp_src`, code in
//!   `tp_dst`); `tcp_flags` holds the low 12 bits of the flags word.

#![deny(unsafe_code)]

use super::key::{FlowKey, addr_to, frag, tun_flags, vlan};
use crate::PortId;
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{self, EthernetFrame, ethertype};
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{self, Ipv6Packet, skip_extension_headers};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::vlan::{self as vlan_wire, VlanTag, is_tpid};
use crate::wire::{Decap, ip_proto};
use std::net::IpAddr;

/// `eth_type` of an 802.3 (length-field) frame, as Open vSwitch's `FLOW_DL_TYPE_NONE`.
pub const ETH_TYPE_NONE: u16 = 0x05ff;

/// Why a frame is malformed: what a NIC would drop it for. Each reason has its own
/// counter ([`Malformed::name`] is its stable name in `flowctl stats` and the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// Shorter than an Ethernet header (14 bytes).
    EthTruncated,
    /// A VLAN tag cut short.
    VlanTruncated,
    /// Ethertype IPv4, fewer than 20 bytes of IP header.
    Ipv4Truncated,
    /// Ethertype IPv4, version field not 4.
    Ipv4Version,
    /// IHL below 5 (a header shorter than 20 bytes).
    Ipv4Ihl,
    /// Total length below the header length or beyond the frame.
    Ipv4TotalLen,
    /// Ethertype IPv6, fewer than 40 bytes of IP header.
    Ipv6Truncated,
    /// Ethertype IPv6, version field not 6.
    Ipv6Version,
    /// Payload length beyond the frame.
    Ipv6PayloadLen,
    /// The extension header chain runs past the payload.
    Ipv6ExtHeaders,
    /// A TCP header cut short, or its data offset below 5 or beyond the payload.
    TcpTruncated,
    /// A UDP header cut short (fewer than 8 bytes).
    UdpTruncated,
}

impl Malformed {
    /// The number of reasons.
    pub const COUNT: usize = 12;

    /// Every reason, in counter order.
    pub const ALL: [Malformed; Self::COUNT] = [
        Malformed::EthTruncated,
        Malformed::VlanTruncated,
        Malformed::Ipv4Truncated,
        Malformed::Ipv4Version,
        Malformed::Ipv4Ihl,
        Malformed::Ipv4TotalLen,
        Malformed::Ipv6Truncated,
        Malformed::Ipv6Version,
        Malformed::Ipv6PayloadLen,
        Malformed::Ipv6ExtHeaders,
        Malformed::TcpTruncated,
        Malformed::UdpTruncated,
    ];

    /// The reason's stable name (`ipv4_ihl`, `tcp_truncated`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Malformed::EthTruncated => "eth_truncated",
            Malformed::VlanTruncated => "vlan_truncated",
            Malformed::Ipv4Truncated => "ipv4_truncated",
            Malformed::Ipv4Version => "ipv4_version",
            Malformed::Ipv4Ihl => "ipv4_ihl",
            Malformed::Ipv4TotalLen => "ipv4_total_len",
            Malformed::Ipv6Truncated => "ipv6_truncated",
            Malformed::Ipv6Version => "ipv6_version",
            Malformed::Ipv6PayloadLen => "ipv6_payload_len",
            Malformed::Ipv6ExtHeaders => "ipv6_ext_headers",
            Malformed::TcpTruncated => "tcp_truncated",
            Malformed::UdpTruncated => "udp_truncated",
        }
    }

    /// Its index in [`Malformed::ALL`] (for a counter array).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|m| *m == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Tunnel metadata of a decapsulated packet, copied into the key's `tun_*` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelMeta {
    /// Outer source IP (remote VTEP).
    pub src: IpAddr,
    /// Outer destination IP (local VTEP).
    pub dst: IpAddr,
    /// VNI (24 bits).
    pub vni: u32,
    /// Outer TOS.
    pub tos: u8,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer UDP destination port.
    pub tp_dst: u16,
    /// [`tun_flags`] bits. `PRESENT` is always set in the key, and `IPV6` follows the
    /// family of `src`, whatever this field says.
    pub flags: u16,
}

impl From<&Decap> for TunnelMeta {
    fn from(d: &Decap) -> Self {
        let mut flags = tun_flags::PRESENT | tun_flags::KEY;
        if d.src.is_ipv6() {
            flags |= tun_flags::IPV6;
        }
        if d.udp_csum {
            flags |= tun_flags::CSUM;
        }
        if d.df {
            flags |= tun_flags::DONT_FRAGMENT;
        }
        Self {
            src: d.src,
            dst: d.dst,
            vni: d.vni,
            tos: d.tos,
            ttl: d.ttl,
            tp_dst: d.udp_dst,
            flags,
        }
    }
}

impl From<Decap> for TunnelMeta {
    fn from(d: Decap) -> Self {
        Self::from(&d)
    }
}

/// Where the layers of a frame start, as found by [`extract_with_offsets`] (for actions
/// that edit headers in place: VLAN push/pop, TTL, checksums).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Offsets {
    /// Number of VLAN tags parsed (0..=2); they occupy bytes `12..12 + 4 * vlans` with
    /// the ethertype after them.
    pub vlans: u8,
    /// Start of the L3 header (end of the L2 header), once Ethernet and the tags parsed.
    pub l3: Option<usize>,
    /// Start of the L4 header, once the IP header (and IPv6 extension headers) parsed
    /// and the packet is not a later fragment. The L4 header itself may be truncated.
    pub l4: Option<usize>,
}

impl FlowKey {
    /// Extracts the flow key of `frame`, received on `in_port`, decapsulated from
    /// `tunnel` if given. Never panics, never allocates; see the module documentation.
    pub fn extract(frame: &[u8], in_port: PortId, tunnel: Option<&TunnelMeta>) -> FlowKey {
        extract_with_offsets(frame, in_port, tunnel).0
    }

    /// A 32-bit hash of the inner flow's *connection*: for IP, its addresses, protocol
    /// and L4 ports only (ports left out for fragments, which carry none after the
    /// first: every fragment of a datagram hashes alike); for anything else, its
    /// Ethernet addresses and type. Not the TCP flags, TTL, TOS, VLAN tags, ingress port
    /// nor tunnel metadata, so every packet of a connection gets the same value and
    /// connections spread. Stable across runs. Feed it to
    /// [`crate::wire::vxlan::source_port`] for the outer UDP source port (RFC 7348:
    /// underlay ECMP then keeps a connection on one path, in order).
    pub fn flow_hash(&self) -> u32 {
        let mut h: u64 = 0x243f_6a88_85a3_08d3;
        let mut mix = |w: u64| {
            h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
        };
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        if self.is_ipv4() || self.is_ipv6() {
            mix(word(&self.ip_src[..8]));
            mix(word(&self.ip_src[8..]));
            mix(word(&self.ip_dst[..8]));
            mix(word(&self.ip_dst[8..]));
            let ports = if self.ip_frag & frag::ANY != 0 {
                0
            } else {
                (u64::from(self.tp_src) << 16) | u64::from(self.tp_dst)
            };
            mix((u64::from(self.eth_type) << 48) | (u64::from(self.ip_proto) << 32) | ports);
        } else {
            mix(word(&self.eth_src));
            mix(word(&self.eth_dst));
            mix(u64::from(self.eth_type));
        }
        h ^= h >> 32;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        (h >> 32) as u32 ^ h as u32
    }
}

/// [`FlowKey::extract`], also returning where each layer starts.
pub fn extract_with_offsets(
    frame: &[u8],
    in_port: PortId,
    tunnel: Option<&TunnelMeta>,
) -> (FlowKey, Offsets) {
    let (key, off, _) = extract_checked(frame, in_port, tunnel);
    (key, off)
}

/// [`extract_with_offsets`], also saying why the frame is one a NIC would drop (see the
/// module documentation); the key and offsets are the same either way.
pub fn extract_checked(
    frame: &[u8],
    in_port: PortId,
    tunnel: Option<&TunnelMeta>,
) -> (FlowKey, Offsets, Option<Malformed>) {
    let mut key = FlowKey {
        in_port: in_port.0,
        ..FlowKey::default()
    };
    if let Some(t) = tunnel {
        set_tunnel(&mut key, t);
    }
    let mut off = Offsets::default();
    let bad = extract_l2(&mut key, &mut off, frame).err();
    (key, off, bad)
}

fn set_tunnel(key: &mut FlowKey, t: &TunnelMeta) {
    key.tun_src = addr_to(t.src);
    key.tun_dst = addr_to(t.dst);
    key.tun_vni = t.vni & crate::wire::vxlan::MAX_VNI;
    key.tun_tos = t.tos;
    key.tun_ttl = t.ttl;
    key.tun_tp_dst = t.tp_dst;
    let family = if t.src.is_ipv6() { tun_flags::IPV6 } else { 0 };
    key.tun_flags = (t.flags & !tun_flags::IPV6) | tun_flags::PRESENT | family;
}

/// What each layer's extraction returns: `Err` for a frame a NIC would drop (the key
/// is filled as far as it goes either way).
type Checked = Result<(), Malformed>;

fn extract_l2(key: &mut FlowKey, off: &mut Offsets, frame: &[u8]) -> Checked {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Err(Malformed::EthTruncated);
    };
    key.eth_dst = eth.dst_addr();
    key.eth_src = eth.src_addr();
    let mut etype = eth.ethertype();
    let mut at = ethernet::HEADER_LEN;
    for (tci, tpid) in key.vlan_tci.iter_mut().zip(key.vlan_tpid.iter_mut()) {
        if !is_tpid(etype) {
            break;
        }
        let Some(tag) = frame.get(at..).and_then(|b| VlanTag::new_checked(b).ok()) else {
            break;
        };
        *tci = tag.tci() | vlan::PRESENT;
        *tpid = etype;
        etype = tag.ethertype();
        at += vlan_wire::HEADER_LEN;
        off.vlans += 1;
    }
    if etype < ethertype::MIN {
        key.eth_type = ETH_TYPE_NONE;
        return Ok(());
    }
    key.eth_type = etype;
    if is_tpid(etype) && frame.len() < at + vlan_wire::HEADER_LEN {
        // A truncated tag: no L2 end.
        return Err(Malformed::VlanTruncated);
    }
    off.l3 = Some(at);
    let Some(l3) = frame.get(at..) else {
        return Ok(());
    };
    match etype {
        ethertype::IPV4 => extract_ipv4(key, off, l3, at),
        ethertype::IPV6 => extract_ipv6(key, off, l3, at),
        ethertype::ARP | ethertype::RARP => {
            extract_arp(key, l3);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Why an IPv4 header fails [`Ipv4Packet::check_len`] (or its version), if it does.
fn ipv4_error(l3: &[u8]) -> Option<Malformed> {
    let ip = Ipv4Packet::new_unchecked(l3);
    if l3.len() < crate::wire::ipv4::HEADER_LEN {
        return Some(Malformed::Ipv4Truncated);
    }
    if ip.version() != 4 {
        return Some(Malformed::Ipv4Version);
    }
    let (hlen, total) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
    if hlen < crate::wire::ipv4::HEADER_LEN {
        Some(Malformed::Ipv4Ihl)
    } else if total < hlen || total > l3.len() {
        Some(Malformed::Ipv4TotalLen)
    } else {
        None
    }
}

fn extract_ipv4(key: &mut FlowKey, off: &mut Offsets, l3: &[u8], base: usize) -> Checked {
    if let Some(e) = ipv4_error(l3) {
        return Err(e);
    }
    let Ok(ip) = Ipv4Packet::new_checked(l3) else {
        return Err(Malformed::Ipv4TotalLen);
    };
    key.ip_src = addr_to(IpAddr::V4(ip.src_addr()));
    key.ip_dst = addr_to(IpAddr::V4(ip.dst_addr()));
    key.ip_proto = ip.protocol();
    key.ip_tos = ip.tos();
    key.ip_ttl = ip.ttl();
    if ip.is_fragment() {
        key.ip_frag |= frag::ANY;
        if ip.frag_offset() != 0 {
            key.ip_frag |= frag::LATER;
            return Ok(());
        }
    }
    off.l4 = Some(base + usize::from(ip.header_len()));
    extract_l4(key, ip.protocol(), ip.payload(), false)
}

fn extract_ipv6(key: &mut FlowKey, off: &mut Offsets, l3: &[u8], base: usize) -> Checked {
    if l3.len() < ipv6::HEADER_LEN {
        return Err(Malformed::Ipv6Truncated);
    }
    if Ipv6Packet::new_unchecked(l3).version() != 6 {
        return Err(Malformed::Ipv6Version);
    }
    let Ok(ip) = Ipv6Packet::new_checked(l3) else {
        return Err(Malformed::Ipv6PayloadLen);
    };
    key.ip_src = ip.src_addr().octets();
    key.ip_dst = ip.dst_addr().octets();
    key.ip_tos = ip.traffic_class();
    key.ip_ttl = ip.hop_limit();
    let ext = match skip_extension_headers(ip.next_header(), ip.payload()) {
        Ok(ext) => ext,
        Err(crate::wire::Error::Truncated) => return Err(Malformed::Ipv6ExtHeaders),
        // A chain longer than we follow: a NIC passes it.
        Err(_) => return Ok(()),
    };
    key.ip_proto = ext.protocol;
    if let Some(f) = ext.frag {
        key.ip_frag |= frag::ANY;
        if f.offset != 0 {
            key.ip_frag |= frag::LATER;
            return Ok(());
        }
    }
    let Some(l4) = ip.payload().get(ext.offset..) else {
        return Err(Malformed::Ipv6ExtHeaders);
    };
    off.l4 = Some(base + ipv6::HEADER_LEN + ext.offset);
    extract_l4(key, ext.protocol, l4, true)
}

fn extract_arp(key: &mut FlowKey, l3: &[u8]) {
    let Ok(p) = ArpPacket::new_checked(l3) else {
        return;
    };
    if !p.is_eth_ipv4() {
        return;
    }
    if let Ok(op) = u8::try_from(p.operation()) {
        key.ip_proto = op;
    }
    if let (Ok(spa), Ok(tpa)) = (<[u8; 4]>::try_from(p.spa()), <[u8; 4]>::try_from(p.tpa())) {
        key.ip_src = addr_to(IpAddr::from(spa));
        key.ip_dst = addr_to(IpAddr::from(tpa));
    }
    if let (Ok(sha), Ok(tha)) = (<[u8; 6]>::try_from(p.sha()), <[u8; 6]>::try_from(p.tha())) {
        key.arp_sha = sha;
        key.arp_tha = tha;
    }
}

/// Source and destination ports of a header of at least `min` bytes.
fn ports(l4: &[u8], min: usize) -> Option<(u16, u16)> {
    if l4.len() < min {
        return None;
    }
    match l4.get(..4)? {
        [a, b, c, d] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

fn extract_l4(key: &mut FlowKey, proto: u8, l4: &[u8], v6: bool) -> Checked {
    match proto {
        ip_proto::TCP => {
            let Ok(t) = TcpPacket::new_checked(l4) else {
                return Err(Malformed::TcpTruncated);
            };
            key.tp_src = t.src_port();
            key.tp_dst = t.dst_port();
            key.tcp_flags = t.flags() & tcp::flags::MASK;
        }
        ip_proto::UDP | ip_proto::SCTP => {
            let min = if proto == ip_proto::UDP { 8 } else { 12 };
            match ports(l4, min) {
                Some((s, d)) => {
                    key.tp_src = s;
                    key.tp_dst = d;
                }
                None if proto == ip_proto::UDP => return Err(Malformed::UdpTruncated),
                None => {}
            }
        }
        ip_proto::ICMP if !v6 => icmp(key, l4),
        ip_proto::ICMPV6 if v6 => icmp(key, l4),
        _ => {}
    }
    Ok(())
}

fn icmp(key: &mut FlowKey, l4: &[u8]) {
    if let Ok(m) = IcmpPacket::new_checked(l4) {
        key.tp_src = u16::from(m.msg_type());
        key.tp_dst = u16::from(m.code());
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::*;
    use crate::wire::vxlan::{IANA_PORT, OuterHeaders, decapsulate, encapsulate};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn v4(a: &str) -> [u8; 16] {
        addr_to(a.parse().unwrap())
    }

    fn inner(cap: &str) -> Vec<u8> {
        let b = hex(cap);
        let d = decapsulate(&b, IANA_PORT).unwrap().unwrap();
        d.inner(&b).to_vec()
    }

    #[test]
    fn real_ping() {
        let f = inner(VXLAN_V4_PING);
        let (k, off) = extract_with_offsets(&f, PortId(3), None);
        assert_eq!(k.in_port, 3);
        assert_eq!(k.eth_src, [0x3e, 0x36, 0x93, 0x1e, 0x66, 0x94]);
        assert_eq!(k.eth_dst, [0x7e, 0x02, 0xbd, 0x12, 0xa8, 0xde]);
        assert_eq!(k.eth_type, 0x0800);
        assert_eq!(k.ip_src, v4("10.0.0.1"));
        assert_eq!(k.ip_dst, v4("10.0.0.2"));
        assert_eq!((k.ip_proto, k.ip_ttl, k.ip_tos, k.ip_frag), (1, 64, 0, 0));
        assert_eq!((k.tp_src, k.tp_dst, k.tcp_flags), (8, 0, 0));
        assert_eq!(k.vlan_tci, [0, 0]);
        assert!(!k.has_tunnel());
        assert_eq!(
            off,
            Offsets {
                vlans: 0,
                l3: Some(14),
                l4: Some(34)
            }
        );
        assert_eq!(k.pad, [0; 6]);
    }

    #[test]
    fn real_arp() {
        let f = inner(VXLAN_V4_ARP);
        let k = FlowKey::extract(&f, PortId(1), None);
        assert_eq!(k.eth_type, 0x0806);
        assert_eq!(k.ip_proto, 1);
        assert_eq!(k.ip_src, v4("10.0.0.1"));
        assert_eq!(k.ip_dst, v4("10.0.0.2"));
        assert_eq!(k.arp_sha, [0x3e, 0x36, 0x93, 0x1e, 0x66, 0x94]);
        assert_eq!(k.arp_tha, [0; 6]);
        assert_eq!(k.eth_dst, [0xff; 6]);
    }

    #[test]
    fn real_tcp_syn_and_udp() {
        let k = FlowKey::extract(&inner(VXLAN_V6_TCP_SYN), PortId(1), None);
        assert_eq!((k.ip_proto, k.tp_src, k.tp_dst), (6, 44748, 80));
        assert_eq!(k.tcp_flags, tcp::flags::SYN);
        assert_eq!(k.ip_frag, 0);
        let k = FlowKey::extract(&inner(VXLAN_V6_UDP), PortId(1), None);
        assert_eq!((k.ip_proto, k.tp_src, k.tp_dst), (17, 51927, 5353));
        assert_eq!(k.ip_src, v4("10.0.6.1"));
    }

    #[test]
    fn real_icmpv6() {
        let f = hex(ICMPV6_RS);
        let k = FlowKey::extract(&f, PortId(1), None);
        assert_eq!(k.eth_type, 0x86dd);
        assert_eq!(
            k.ip_src_addr(),
            Some("fe80::3c36:93ff:fe1e:6694".parse().unwrap())
        );
        assert_eq!(k.ip_dst_addr(), Some("ff02::2".parse().unwrap()));
        assert_eq!(
            (k.ip_proto, k.ip_ttl, k.tp_src, k.tp_dst),
            (58, 255, 133, 0)
        );
    }

    #[test]
    fn outer_frame_and_tunnel_meta() {
        let b = hex(VXLAN_V4_PING);
        let outer = FlowKey::extract(&b, PortId(9), None);
        assert_eq!(
            (outer.ip_proto, outer.tp_src, outer.tp_dst),
            (17, 48592, 4789)
        );
        let d = decapsulate(&b, IANA_PORT).unwrap().unwrap();
        let meta = TunnelMeta::from(&d);
        let k = FlowKey::extract(d.inner(&b), PortId(9), Some(&meta));
        assert!(k.has_tunnel());
        assert_eq!(k.tunnel_src(), Some("192.168.203.56".parse().unwrap()));
        assert_eq!(k.tunnel_dst(), Some("192.168.203.51".parse().unwrap()));
        assert_eq!(
            (k.tun_vni, k.tun_ttl, k.tun_tos, k.tun_tp_dst),
            (16, 64, 0, 4789)
        );
        assert_eq!(k.tun_flags, tun_flags::PRESENT | tun_flags::KEY);
        let b6 = hex(VXLAN_V6_UDP);
        let d6 = decapsulate(&b6, IANA_PORT).unwrap().unwrap();
        let k6 = FlowKey::extract(d6.inner(&b6), PortId(9), Some(&d6.into()));
        assert_eq!(
            k6.tun_flags,
            tun_flags::PRESENT | tun_flags::KEY | tun_flags::IPV6 | tun_flags::CSUM
        );
        assert_eq!(k6.tunnel_src(), Some("fd00::56".parse().unwrap()));
        // Same inner flow, same hash, whatever the port or tunnel.
        let plain = FlowKey::extract(d.inner(&b), PortId(1), None);
        assert_eq!(plain.flow_hash(), k.flow_hash());
        assert_ne!(plain.flow_hash(), outer.flow_hash());
    }

    #[test]
    fn qinq_and_offsets() {
        let f = hex("ffff ffff ffff 0200 0000 0001 88a8 a064 8100 00c8 0800
             4500 001c 0000 0000 4011 0000 0a00 0001 0a00 0002 0035 0035 0008 0000");
        let (k, off) = extract_with_offsets(&f, PortId(1), None);
        assert_eq!(k.vlan_tpid, [0x88a8, 0x8100]);
        assert_eq!(k.vlan_tci, [0xa064 | vlan::PRESENT, 0x00c8 | vlan::PRESENT]);
        assert_eq!(k.eth_type, 0x0800);
        assert_eq!((k.tp_src, k.tp_dst), (53, 53));
        assert_eq!(
            off,
            Offsets {
                vlans: 2,
                l3: Some(22),
                l4: Some(42)
            }
        );
        // Truncated second tag: eth_type is its TPID, nothing after.
        let (k, off) = extract_with_offsets(&f[..20], PortId(1), None);
        assert_eq!(k.vlan_tci, [0xa064 | vlan::PRESENT, 0]);
        assert_eq!(k.eth_type, 0x8100);
        assert_eq!(
            off,
            Offsets {
                vlans: 1,
                l3: None,
                l4: None
            }
        );
        // 802.3 length field.
        let mut llc = f.clone();
        llc[12] = 0x00;
        llc[13] = 0x40;
        assert_eq!(
            FlowKey::extract(&llc, PortId(1), None).eth_type,
            ETH_TYPE_NONE
        );
    }

    #[test]
    fn truncated_tcp_keeps_l3() {
        let f = inner(VXLAN_V6_TCP_SYN);
        // Cut inside the TCP header, keeping the IPv4 total length consistent.
        let mut cut = f[..14 + 20 + 30].to_vec();
        let mut ip = Ipv4Packet::new_unchecked(&mut cut[14..34]);
        ip.set_total_len(50);
        let k = FlowKey::extract(&cut, PortId(1), None);
        assert_eq!(k.ip_src, v4("10.0.6.1"));
        assert_eq!(k.ip_proto, 6);
        assert_eq!((k.tp_src, k.tp_dst, k.tcp_flags), (0, 0, 0));
        // Cut without fixing the total length: the IPv4 header is not trusted at all.
        let k = FlowKey::extract(&f[..14 + 20 + 30], PortId(1), None);
        assert_eq!((k.eth_type, k.ip_proto, k.ip_src), (0x0800, 0, [0; 16]));
    }

    #[test]
    fn fragments() {
        let mut f = inner(VXLAN_V4_PING);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
        ip.set_frag(false, true, 0);
        let k = FlowKey::extract(&f, PortId(1), None);
        assert_eq!(k.ip_frag, frag::ANY);
        assert_eq!(k.tp_src, 8);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
        ip.set_frag(false, false, 1480);
        let (k, off) = extract_with_offsets(&f, PortId(1), None);
        assert_eq!(k.ip_frag, frag::ANY | frag::LATER);
        assert_eq!((k.ip_proto, k.tp_src, off.l4), (1, 0, None));

        // IPv6 UDP behind hop-by-hop and a first fragment.
        let f6 = hex("3333 0000 0001 0200 0000 0001 86dd
             6000 0000 0018 0040 fe80 0000 0000 0000 0000 0000 0000 0001
             ff02 0000 0000 0000 0000 0000 0000 0001
             2c00 0104 0000 0000 1100 0001 0000 0007 1234 0035 0008 0000");
        let (k, off) = extract_with_offsets(&f6, PortId(1), None);
        assert_eq!((k.ip_proto, k.ip_frag, k.ip_ttl), (17, frag::ANY, 64));
        assert_eq!((k.tp_src, k.tp_dst), (0x1234, 53));
        assert_eq!(off.l4, Some(14 + 40 + 16));
    }

    #[test]
    fn every_prefix_of_every_capture_is_safe() {
        for cap in [
            VXLAN_V4_PING,
            VXLAN_V4_ARP,
            VXLAN_V6_UDP,
            VXLAN_V6_TCP_SYN,
            ICMPV6_RS,
        ] {
            let b = hex(cap);
            let full = FlowKey::extract(&b, PortId(1), None);
            for n in 0..b.len() {
                let k = FlowKey::extract(&b[..n], PortId(1), None);
                // A prefix never invents information: each non-zero field equals the
                // full frame's.
                if k.eth_type != 0 && is_tpid(k.eth_type) {
                    continue;
                }
                for (a, f) in k.as_bytes().iter().zip(full.as_bytes()) {
                    assert!(*a == 0 || a == f, "len {n}");
                }
            }
        }
    }

    #[test]
    fn flow_hash_follows_the_connection_not_its_flags() {
        use crate::wire::tcp::flags::{ACK, FIN, PSH, SYN};
        let key = |fl: u16, ttl: u8, tos: u8, sport: u16| {
            let mut f = tcp_frame(false, &[], 10, fl);
            f[14 + 1] = tos;
            f[14 + 8] = ttl;
            f[34..36].copy_from_slice(&sport.to_be_bytes());
            FlowKey::extract(&f, PortId(1), None)
        };
        // One 5-tuple sent S, A, PA, PA, FA with other TTLs and TOS: one hash.
        let one: Vec<u32> = [
            (SYN, 64, 0),
            (ACK, 63, 0x10),
            (PSH | ACK, 1, 0xb8),
            (FIN | ACK, 64, 2),
        ]
        .iter()
        .map(|&(fl, ttl, tos)| key(fl, ttl, tos, 40000).flow_hash())
        .collect();
        assert!(one.iter().all(|&h| h == one[0]), "{one:x?}");
        // Connections spread: 1000 source ports, many distinct outer ports.
        let ports: std::collections::HashSet<u16> = (0..1000)
            .map(|p| crate::wire::vxlan::source_port(key(ACK, 64, 0, 30000 + p).flow_hash()))
            .collect();
        assert!(ports.len() > 950, "{} distinct ports", ports.len());
        // A VLAN tag or another ingress does not change it either.
        let tagged = tcp_frame(false, &[(0x8100, 9)], 10, ACK);
        let plain = tcp_frame(false, &[], 10, ACK);
        assert_eq!(
            FlowKey::extract(&tagged, PortId(2), None).flow_hash(),
            FlowKey::extract(&plain, PortId(1), None).flow_hash()
        );
        // Every fragment of a datagram hashes alike (no ports after the first).
        let mut frag = plain.clone();
        frag[14 + 6] = 0x20; // MF, offset 0: the first fragment, with its ports
        let mut later = plain;
        later[14 + 6] = 0x00;
        later[14 + 7] = 0x10; // offset 128
        let (a, b) = (
            FlowKey::extract(&frag, PortId(1), None),
            FlowKey::extract(&later, PortId(1), None),
        );
        assert_eq!(a.flow_hash(), b.flow_hash());
    }

    #[test]
    fn encapsulated_key_hash_gives_source_port() {
        let f = inner(VXLAN_V4_PING);
        let k = FlowKey::extract(&f, PortId(1), None);
        let port = crate::wire::vxlan::source_port(k.flow_hash());
        assert!(port >= 49152);
        let outer = OuterHeaders {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            dst_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            tos: 0,
            ttl: 64,
            df: true,
            ident: 1,
            udp_src: port,
            udp_dst: IANA_PORT,
            vni: 42,
            udp_csum: true,
        };
        let mut out = [0u8; 256];
        let n = encapsulate(&f, &outer, &mut out).unwrap();
        let d = decapsulate(&out[..n], IANA_PORT).unwrap().unwrap();
        let k2 = FlowKey::extract(d.inner(&out[..n]), PortId(1), Some(&d.into()));
        assert_eq!(k2.flow_hash(), k.flow_hash());
        assert_eq!(
            k2.tun_flags,
            tun_flags::PRESENT | tun_flags::KEY | tun_flags::CSUM | tun_flags::DONT_FRAGMENT
        );
    }

    /// The verdict on a frame: None when a NIC would pass it.
    fn bad(f: &[u8]) -> Option<Malformed> {
        extract_checked(f, PortId(1), None).2
    }

    /// A minimal IPv4 UDP frame (10.0.0.1:53 -> 10.0.0.2:53, 4 bytes of data).
    fn udp4() -> Vec<u8> {
        hex("0200 0000 0002 0200 0000 0001 0800
             4500 0020 0000 0000 4011 0000 0a00 0001 0a00 0002
             0035 0035 000c 0000 6162 6364")
    }

    /// A minimal IPv6 UDP frame (fd00::1 -> fd00::2, ports 53, no data).
    fn udp6() -> Vec<u8> {
        hex("0200 0000 0002 0200 0000 0001 86dd
             6000 0000 0008 1140 fd00 0000 0000 0000 0000 0000 0000 0001
             fd00 0000 0000 0000 0000 0000 0000 0002 0035 0035 0008 0000")
    }

    #[test]
    fn well_formed_frames_pass_padding_included() {
        for f in [
            udp4(),
            udp6(),
            tcp_frame(false, &[], 10, tcp::flags::ACK),
            tcp_frame(true, &[(0x8100, 7)], 10, tcp::flags::ACK),
            inner(VXLAN_V4_ARP),
            inner(VXLAN_V4_PING),
            hex(ICMPV6_RS),
        ] {
            assert_eq!(bad(&f), None);
            let mut padded = f.clone();
            padded.resize(f.len() + 20, 0);
            assert_eq!(bad(&padded), None, "Ethernet padding is no error");
        }
        // An 802.3 frame and an unknown ethertype are not parsed, not judged.
        let mut llc = udp4();
        llc[12..14].copy_from_slice(&[0x00, 0x40]);
        assert_eq!(bad(&llc), None);
    }

    #[test]
    fn each_reason_is_found() {
        let v4 = udp4();
        let set = |f: &[u8], at: usize, b: u8| {
            let mut f = f.to_vec();
            f[at] = b;
            f
        };
        let cases: Vec<(Vec<u8>, Malformed)> = vec![
            (v4[..13].to_vec(), Malformed::EthTruncated),
            (
                hex("ffff ffff ffff 0200 0000 0001 8100 00"),
                Malformed::VlanTruncated,
            ),
            (v4[..14 + 19].to_vec(), Malformed::Ipv4Truncated),
            (set(&v4, 14, 0x65), Malformed::Ipv4Version),
            (set(&v4, 14, 0x44), Malformed::Ipv4Ihl),
            (set(&v4, 17, 0x10), Malformed::Ipv4TotalLen), // 16 < 20
            (set(&v4, 16, 0x01), Malformed::Ipv4TotalLen), // 288 > frame
            (udp6()[..14 + 39].to_vec(), Malformed::Ipv6Truncated),
            (set(&udp6(), 14, 0x40), Malformed::Ipv6Version),
            (set(&udp6(), 19, 0x09), Malformed::Ipv6PayloadLen),
            // Hop-by-hop header claiming 16 bytes in an 8-byte payload.
            (
                {
                    let mut f = set(&set(&udp6(), 20, 0), 55, 1);
                    f[54] = 17;
                    f
                },
                Malformed::Ipv6ExtHeaders,
            ),
            // UDP with 4 bytes of header: total length 24.
            (set(&v4[..38], 17, 24), Malformed::UdpTruncated),
            (set(&udp6()[..58], 19, 4), Malformed::UdpTruncated),
        ];
        for (f, want) in &cases {
            assert_eq!(bad(f), Some(*want), "{want}");
            // The key is the same partial key as before.
            assert_eq!(
                extract_checked(f, PortId(1), None).0,
                FlowKey::extract(f, PortId(1), None)
            );
        }
        // TCP: cut short, data offset < 5, data offset beyond the segment.
        let t = tcp_frame(false, &[], 0, tcp::flags::SYN);
        let mut cut = t[..14 + 20 + 12].to_vec();
        Ipv4Packet::new_unchecked(&mut cut[14..34]).set_total_len(32);
        assert_eq!(bad(&cut), Some(Malformed::TcpTruncated));
        let mut doff = t.clone();
        doff[14 + 20 + 12] = 0x40;
        assert_eq!(bad(&doff), Some(Malformed::TcpTruncated));
        doff[14 + 20 + 12] = 0xf0;
        assert_eq!(bad(&doff), Some(Malformed::TcpTruncated));
        let t6 = tcp_frame(true, &[], 0, tcp::flags::SYN);
        let mut cut6 = t6[..14 + 40 + 10].to_vec();
        cut6[18..20].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(bad(&cut6), Some(Malformed::TcpTruncated));
        // Every name is distinct and every reason was exercised.
        let names: std::collections::HashSet<_> = Malformed::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Malformed::ALL.len());
        for m in Malformed::ALL {
            assert_eq!(Malformed::ALL[m.index()], m);
            let seen = cases.iter().any(|(_, w)| *w == m) || m == Malformed::TcpTruncated;
            assert!(seen, "{m} has a case");
        }
    }

    #[test]
    fn later_fragments_carry_no_l4_header_to_judge() {
        // A later fragment with 4 bytes of payload: not a truncated UDP header.
        let mut f = udp4();
        f.truncate(38);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
        ip.set_total_len(24);
        ip.set_frag(false, false, 1480);
        assert_eq!(bad(&f), None);
        // The first fragment of the same: judged.
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
        ip.set_frag(false, true, 0);
        assert_eq!(bad(&f), Some(Malformed::UdpTruncated));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let k = FlowKey::extract(&b, PortId(1), None);
            prop_assert_eq!(k.pad, [0; 6]);
            if let Ok(Some(d)) = decapsulate(&b, IANA_PORT) {
                let _ = FlowKey::extract(d.inner(&b), PortId(1), Some(&d.into()));
            }
        }

        #[test]
        fn random_ip_payloads_never_panic(
            etype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100), Just(0x88a8)],
            body in proptest::collection::vec(any::<u8>(), 0..120),
            ver in any::<bool>(),
        ) {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&etype.to_be_bytes());
            f.extend_from_slice(&body);
            if let Some(b) = f.get_mut(14) {
                // Make a plausible version nibble likely.
                let v = match (etype, ver) { (0x0800, true) => 0x45, (0x86dd, true) => 0x60, _ => *b };
                *b = v;
            }
            let (k, off) = extract_with_offsets(&f, PortId(1), None);
            if let Some(l4) = off.l4 { prop_assert!(l4 <= f.len()); }
            if let Some(l3) = off.l3 { prop_assert!(l3 <= f.len()); }
            let _ = k.flow_hash();
            let _ = decapsulate(&f, IANA_PORT);
        }
    }
}
