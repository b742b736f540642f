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
mod test;
