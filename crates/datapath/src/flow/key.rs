//! [`FlowKey`]: every field a flow can match, in one fixed-size, padding-free struct.
//!
//! The key is plain old data (`bytemuck::Pod`, 128 bytes, 8-byte aligned) so that masking,
//! hashing and comparing work on its sixteen 64-bit words without looking at fields: a new
//! field can never be forgotten by those operations. Code that *interprets* fields
//! (formatting, parsing, offload translation) destructures the struct fully instead.
//!
//! Conventions, close to Open vSwitch's `struct flow`:
//! - integers are in host byte order; addresses are byte arrays in network order;
//! - IPv4 addresses use the first 4 bytes of the 16-byte address fields, the rest zero;
//! - ARP reuses `ip_src`/`ip_dst` for SPA/TPA and `ip_proto` for the opcode;
//! - ICMP/ICMPv6 reuse `tp_src`/`tp_dst` for type/code;
//! - a VLAN TCI has [`vlan::PRESENT`] (the CFI bit) set when the tag exists;
//! - `eth_type` is the innermost ethertype (after any VLAN tags), as in OVS.

use bytemuck::{Pod, Zeroable};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bits of [`FlowKey::tun_flags`].
pub mod tun_flags {
    /// Tunnel metadata is present (the packet was decapsulated).
    pub const PRESENT: u16 = 1 << 0;
    /// The outer header is IPv6 (else IPv4).
    pub const IPV6: u16 = 1 << 1;
    /// The outer UDP checksum is set / requested.
    pub const CSUM: u16 = 1 << 2;
    /// The outer IPv4 header has DF set.
    pub const DONT_FRAGMENT: u16 = 1 << 3;
    /// The VXLAN header carries a valid VNI (the I flag).
    pub const KEY: u16 = 1 << 4;
    /// Every defined bit.
    pub const ALL: u16 = PRESENT | IPV6 | CSUM | DONT_FRAGMENT | KEY;
}

/// Values of [`FlowKey::ip_frag`] (bit flags, as in OVS's `frag(...)`).
pub mod frag {
    /// The packet is a fragment (first or later).
    pub const ANY: u8 = 1 << 0;
    /// The packet is a later fragment (offset != 0): no L4 header.
    pub const LATER: u8 = 1 << 1;
}

/// VLAN TCI helpers.
pub mod vlan {
    /// The CFI/DEI bit, used in the key to mean "a tag is present".
    pub const PRESENT: u16 = 0x1000;
    /// Mask of the VLAN id in a TCI.
    pub const VID_MASK: u16 = 0x0fff;
    /// Mask of the priority code point in a TCI.
    pub const PCP_MASK: u16 = 0xe000;
    /// Shift of the PCP within the TCI.
    pub const PCP_SHIFT: u16 = 13;
}

/// Every field a flow can match. See the module documentation for the conventions.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable, Default)]
pub struct FlowKey {
    /// Outer source IP of a decapsulated packet (IPv4 in the first 4 bytes).
    pub tun_src: [u8; 16],
    /// Outer destination IP of a decapsulated packet.
    pub tun_dst: [u8; 16],
    /// IPv4/IPv6 source address; ARP sender protocol address.
    pub ip_src: [u8; 16],
    /// IPv4/IPv6 destination address; ARP target protocol address.
    pub ip_dst: [u8; 16],
    /// Datapath ingress port.
    pub in_port: u32,
    /// VXLAN network identifier (24 bits).
    pub tun_vni: u32,
    /// Outer UDP destination port.
    pub tun_tp_dst: u16,
    /// Outer TOS.
    pub tun_tos: u8,
    /// Outer TTL.
    pub tun_ttl: u8,
    /// [`tun_flags`] bits.
    pub tun_flags: u16,
    /// Innermost ethertype (0x0800, 0x86dd, 0x0806, ...).
    pub eth_type: u16,
    /// Ethernet source.
    pub eth_src: [u8; 6],
    /// Ethernet destination.
    pub eth_dst: [u8; 6],
    /// Outer and inner VLAN TCI, [`vlan::PRESENT`] set when present.
    pub vlan_tci: [u16; 2],
    /// Outer and inner VLAN TPID (0x8100 or 0x88a8), 0 when absent.
    pub vlan_tpid: [u16; 2],
    /// IP protocol; ARP opcode.
    pub ip_proto: u8,
    /// IP TOS / IPv6 traffic class (DSCP + ECN).
    pub ip_tos: u8,
    /// IP TTL / IPv6 hop limit.
    pub ip_ttl: u8,
    /// [`frag`] bits.
    pub ip_frag: u8,
    /// L4 source port; ICMP type.
    pub tp_src: u16,
    /// L4 destination port; ICMP code.
    pub tp_dst: u16,
    /// TCP flags (low 12 bits).
    pub tcp_flags: u16,
    /// ARP sender hardware address.
    pub arp_sha: [u8; 6],
    /// ARP target hardware address.
    pub arp_tha: [u8; 6],
    /// Always zero; keeps the struct free of implicit padding.
    pub pad: [u8; 6],
}

/// Number of 64-bit words in a [`FlowKey`].
pub const KEY_WORDS: usize = std::mem::size_of::<FlowKey>() / 8;

const _: () = assert!(std::mem::size_of::<FlowKey>() == 128);

impl FlowKey {
    /// The key as 64-bit words (for masking and hashing).
    #[inline]
    pub fn words(&self) -> &[u64; KEY_WORDS] {
        bytemuck::cast_ref(self)
    }

    /// The key as mutable 64-bit words.
    #[inline]
    pub fn words_mut(&mut self) -> &mut [u64; KEY_WORDS] {
        bytemuck::cast_mut(self)
    }

    /// The key as bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }

    /// Whether the key is an IPv4 packet.
    pub fn is_ipv4(&self) -> bool {
        self.eth_type == 0x0800
    }

    /// Whether the key is an IPv6 packet.
    pub fn is_ipv6(&self) -> bool {
        self.eth_type == 0x86dd
    }

    /// Whether the key carries tunnel metadata.
    pub fn has_tunnel(&self) -> bool {
        self.tun_flags & tun_flags::PRESENT != 0
    }

    /// The outer source IP, if the key has tunnel metadata.
    pub fn tunnel_src(&self) -> Option<IpAddr> {
        self.has_tunnel()
            .then(|| addr_from(self.tun_src, self.tun_flags & tun_flags::IPV6 != 0))
    }

    /// The outer destination IP, if the key has tunnel metadata.
    pub fn tunnel_dst(&self) -> Option<IpAddr> {
        self.has_tunnel()
            .then(|| addr_from(self.tun_dst, self.tun_flags & tun_flags::IPV6 != 0))
    }

    /// Inner IP source, for IPv4/IPv6 keys.
    pub fn ip_src_addr(&self) -> Option<IpAddr> {
        self.l3_addr(self.ip_src)
    }

    /// Inner IP destination, for IPv4/IPv6 keys.
    pub fn ip_dst_addr(&self) -> Option<IpAddr> {
        self.l3_addr(self.ip_dst)
    }

    fn l3_addr(&self, a: [u8; 16]) -> Option<IpAddr> {
        match self.eth_type {
            0x0800 => Some(addr_from(a, false)),
            0x86dd => Some(addr_from(a, true)),
            _ => None,
        }
    }

    /// Bitwise AND of the key with a mask.
    #[inline]
    pub fn masked(&self, mask: &FlowMask) -> FlowKey {
        let mut out = *self;
        for (o, m) in out.words_mut().iter_mut().zip(mask.0.words()) {
            *o &= m;
        }
        out
    }
}

/// Packs an IP address into a 16-byte key field (IPv4 in the first 4 bytes).
pub fn addr_to(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Unpacks a 16-byte key field into an IP address.
pub fn addr_from(b: [u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// A wildcard mask of the same shape as [`FlowKey`]: a one bit means "the flow matches
/// this bit of the key", a zero bit means "any value".
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable, Default)]
pub struct FlowMask(pub FlowKey);

impl FlowMask {
    /// The mask that matches nothing (every field wildcarded).
    pub fn wildcard_all() -> Self {
        Self(FlowKey::zeroed())
    }

    /// The mask that matches every bit of every field.
    pub fn exact() -> Self {
        let mut k = FlowKey::zeroed();
        for w in k.words_mut() {
            *w = u64::MAX;
        }
        k.pad = [0; 6];
        Self(k)
    }

    /// Whether every field is wildcarded.
    pub fn is_wildcard_all(&self) -> bool {
        self.0.words().iter().all(|w| *w == 0)
    }

    /// Union of two masks (the bits consulted by either).
    pub fn union(&self, other: &FlowMask) -> FlowMask {
        let mut out = *self;
        for (o, m) in out.0.words_mut().iter_mut().zip(other.0.words()) {
            *o |= m;
        }
        out
    }

    /// Whether every bit of `self` is also set in `other`.
    pub fn is_subset_of(&self, other: &FlowMask) -> bool {
        self.0
            .words()
            .iter()
            .zip(other.0.words())
            .all(|(a, b)| a & !b == 0)
    }
}

impl std::ops::Deref for FlowMask {
    type Target = FlowKey;
    fn deref(&self) -> &FlowKey {
        &self.0
    }
}

impl std::ops::DerefMut for FlowMask {
    fn deref_mut(&mut self) -> &mut FlowKey {
        &mut self.0
    }
}

/// A megaflow: a key already ANDed with its mask, and the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Megaflow {
    /// The masked key (every bit outside `mask` is zero).
    pub key: FlowKey,
    /// Which bits of a packet's key the flow matches.
    pub mask: FlowMask,
}

impl Megaflow {
    /// Builds a megaflow, masking the key.
    pub fn new(key: &FlowKey, mask: &FlowMask) -> Self {
        Self {
            key: key.masked(mask),
            mask: *mask,
        }
    }

    /// Whether a packet's key matches this megaflow.
    #[inline]
    pub fn matches(&self, key: &FlowKey) -> bool {
        key.words()
            .iter()
            .zip(self.mask.0.words())
            .zip(self.key.words())
            .all(|((k, m), v)| k & m == *v)
    }

    /// Whether some key could match both megaflows.
    pub fn overlaps(&self, other: &Megaflow) -> bool {
        let common = self.mask.0.masked(&other.mask);
        self.key.masked(&FlowMask(common)) == other.key.masked(&FlowMask(common))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_words() {
        assert_eq!(KEY_WORDS, 16);
        let k = FlowKey {
            in_port: 7,
            ..FlowKey::default()
        };
        assert_ne!(k.words().iter().copied().fold(0, |a, w| a | w), 0);
    }

    #[test]
    fn exact_mask_keeps_everything_but_padding() {
        let k = FlowKey {
            eth_type: 0x0800,
            ip_src: addr_to("10.0.0.1".parse().unwrap()),
            tp_dst: 4789,
            ..FlowKey::default()
        };
        assert_eq!(k.masked(&FlowMask::exact()), k);
        assert_eq!(k.masked(&FlowMask::wildcard_all()), FlowKey::default());
    }

    #[test]
    fn megaflow_match_and_overlap() {
        let key = FlowKey {
            eth_type: 0x0800,
            ip_dst: addr_to("10.1.2.3".parse().unwrap()),
            ..FlowKey::default()
        };
        let mut mask = FlowMask(FlowKey {
            eth_type: 0xffff,
            ..FlowKey::default()
        });
        mask.ip_dst[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
        let mf = Megaflow::new(&key, &mask);
        let mut other = key;
        other.ip_dst[3] = 99;
        assert!(mf.matches(&other));
        other.ip_dst[2] = 9;
        assert!(!mf.matches(&other));

        let m2 = FlowMask(FlowKey {
            eth_type: 0xffff,
            ..FlowKey::default()
        });
        let wide = Megaflow::new(&key, &m2);
        assert!(mf.overlaps(&wide));
        let mut k3 = key;
        k3.eth_type = 0x86dd;
        assert!(!mf.overlaps(&Megaflow::new(&k3, &m2)));
    }

    #[test]
    fn addresses_round_trip() {
        for s in ["192.0.2.1", "2001:db8::1"] {
            let a: IpAddr = s.parse().unwrap();
            assert_eq!(addr_from(addr_to(a), a.is_ipv6()), a);
        }
    }
}
