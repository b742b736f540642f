//! Zero-copy packet views and representations (see each submodule).
//!
//! Every format follows the same two-type design (after smoltcp's `wire`):
//!
//! - a **view** `Foo<T: AsRef<[u8]>>` wraps a buffer without copying it. Its byte offsets
//!   live in a private `mod field`. Getters read from the buffer; setters exist only when
//!   `T: AsMut<[u8]>`.
//! - a **`FooRepr`** holds only valid states, with `parse` (view -> repr), `buffer_len`
//!   (bytes `emit` writes) and `emit` (repr -> view).
//!
//! # The contract
//!
//! - `Foo::new_unchecked(buf)` wraps anything; its accessors may panic if the buffer is too
//!   short. Use it only on buffers you sized yourself (for `emit`).
//! - `Foo::new_checked(buf)` = `new_unchecked` + `check_len`. **Once `check_len` returned
//!   `Ok`, no getter panics**, whatever the bytes say: every length field a getter relies
//!   on (IPv4 IHL and total length, TCP data offset, UDP length, ARP address lengths,
//!   IPv6 payload length) is validated by `check_len`. Setters that change such a length
//!   field can invalidate the check; re-run `check_len` before reading again.
//! - Untrusted input goes through `new_checked`. Every truncated, malformed or hostile
//!   input yields a typed [`Error`], never a panic and never a read past the buffer.
//! - `Repr::emit` expects a view over a buffer of at least `buffer_len()` bytes (it may
//!   panic otherwise, like smoltcp); the higher-level helpers ([`vxlan::encapsulate`])
//!   check sizes themselves and return [`Error::BufferTooSmall`].
//!
//! Nothing here allocates, and the module contains no `unsafe` code.

#![deny(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gso;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod pmtu;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vnet;
pub mod vxlan;

pub use arp::{ArpPacket, ArpRepr};
pub use ethernet::{EthernetFrame, EthernetRepr, ethertype};
pub use icmp::{IcmpPacket, IcmpRepr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6ExtInfo, Ipv6FragInfo, Ipv6Packet, Ipv6Repr};
pub use pmtu::{TooBig, fragment_ipv4, too_big_action, too_big_reply};
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::{L2Info, VlanRepr, VlanTag};
pub use vnet::{Gso, GsoKind, Offload, PartialCsum, TunnelGso, VnetHeader};
pub use vxlan::{
    Decap, OuterHeaders, VXLAN_OVERHEAD_V4, VXLAN_OVERHEAD_V6, VxlanHeader, VxlanRepr, decapsulate,
    encapsulate,
};

/// A wire-format error. Small and `Copy`: it is returned on the per-packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the header (or a length field inside it) requires.
    #[error("truncated packet")]
    Truncated,
    /// A field holds a value the format does not allow (bad version, length field too
    /// small, reserved flag required to be set is clear, ...).
    #[error("malformed packet")]
    Malformed,
    /// A checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// A valid packet of a kind this module does not handle (e.g. ARP for another
    /// hardware type).
    #[error("unsupported packet")]
    Unsupported,
    /// The output buffer given to an emit helper is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The result would exceed a length field's range (e.g. IPv4 total length > 65535).
    #[error("packet too large")]
    TooLarge,
}

/// Result of wire operations.
pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`).
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// IPsec authentication header.
    pub const AH: u8 = 51;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// Reads a big-endian u16 at a fixed position. Callers guarantee the range (check_len).
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at a fixed position. Callers guarantee the range (check_len).
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes a big-endian u16.
#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32.
#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Copies a fixed-size array out of a slice known to be long enough.
#[inline]
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// Shared helpers for the unit tests of the submodules.
#[cfg(test)]
pub(crate) mod testutil {
    /// Parses a hex string (whitespace ignored) into bytes.
    pub fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|c| c.is_ascii_hexdigit())
            .map(|c| (c as char).to_digit(16).unwrap() as u8)
            .collect();
        assert!(digits.len().is_multiple_of(2), "odd hex length");
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    /// Real VXLAN frame captured on a veth, sent by the Linux kernel's vxlan driver
    /// (`ip link add vx16 type vxlan id 16 local 192.168.203.56 remote 192.168.203.51
    /// dstport 4789 noudpcsum`, then `ping -c1 -s 16 10.0.0.2`): outer 192.168.203.56 ->
    /// 192.168.203.51, UDP 48592 -> 4789 (no checksum), VNI 16; inner ICMP echo request
    /// 10.0.0.1 -> 10.0.0.2, id 0x3fba, seq 1.
    pub const VXLAN_V4_PING: &str = "
        86b0 c413 3975 e21a ffcc d028 0800 4500
        005e 591e 0000 4011 09b4 c0a8 cb38 c0a8
        cb33 bdd0 12b5 004a 0000 0800 0000 0000
        1000 7e02 bd12 a8de 3e36 931e 6694 0800
        4500 002c a627 4000 4001 80a7 0a00 0001
        0a00 0002 0800 b4a3 3fba 0001 4eb3 036b
        0000 0000 a882 0900 0000 0000";

    /// Same tunnel, inner ARP request who-has 10.0.0.2 tell 10.0.0.1 (kernel capture).
    pub const VXLAN_V4_ARP: &str = "
        86b0 c413 3975 e21a ffcc d028 0800 4500
        004e 591d 0000 4011 09c5 c0a8 cb38 c0a8
        cb33 c257 12b5 003a 0000 0800 0000 0000
        1000 ffff ffff ffff 3e36 931e 6694 0806
        0001 0800 0604 0001 3e36 931e 6694 0a00
        0001 0000 0000 0000 0a00 0002";

    /// Kernel VXLAN over IPv6 (`local fd00::56 remote fd00::51 id 16 udpcsum`), outer
    /// UDP checksum 0xbeef (verified by tcpdump); inner UDP 10.0.6.1:51927 ->
    /// 10.0.6.2:5353 carrying "flowd", inner UDP checksum 0xc62c.
    pub const VXLAN_V6_UDP: &str = "
        86b0 c413 3975 e21a ffcc d028 86dd 6000
        0000 003f 1140 fd00 0000 0000 0000 0000
        0000 0000 0056 fd00 0000 0000 0000 0000
        0000 0000 0051 cb8d 12b5 003f beef 0800
        0000 0000 1000 ae1a adb0 2a97 96ca aa3e
        a04a 0800 4500 0021 ec3b 4000 4011 2e8e
        0a00 0601 0a00 0602 cad7 14e9 000d c62c
        666c 6f77 64";

    /// Same IPv6 tunnel, inner TCP SYN 10.0.6.1:44748 -> 10.0.6.2:80 with options
    /// (mss, sackOK, TS, wscale), TCP checksum 0x2f76, outer UDP checksum 0xf1dc.
    pub const VXLAN_V6_TCP_SYN: &str = "
        86b0 c413 3975 e21a ffcc d028 86dd 6000
        0000 005a 1140 fd00 0000 0000 0000 0000
        0000 0000 0056 fd00 0000 0000 0000 0000
        0000 0000 0051 987a 12b5 005a f1dc 0800
        0000 0000 1000 ae1a adb0 2a97 96ca aa3e
        a04a 0800 4500 003c 20d7 4000 4006 f9e2
        0a00 0601 0a00 0602 aecc 0050 e846 0ebb
        0000 0000 a002 ff32 2f76 0000 0204 056e
        0402 080a d4e2 7e96 0000 0000 0103 030a";

    /// Kernel-generated ICMPv6 router solicitation (inner frame of a VXLAN capture):
    /// fe80::3c36:93ff:fe1e:6694 -> ff02::2, checksum 0x0f5c.
    pub const ICMPV6_RS: &str = "
        3333 0000 0002 3e36 931e 6694 86dd
        6000 0000 0010 3aff fe80 0000 0000 0000
        3c36 93ff fe1e 6694 ff02 0000 0000 0000
        0000 0000 0000 0002 8500 0f5c 0000 0000
        0101 3e36 931e 6694";

    /// Offset of the inner frame in the VXLAN-over-IPv4 captures (14 + 20 + 8 + 8).
    pub const INNER_V4: usize = 50;
    /// Offset of the inner frame in the VXLAN-over-IPv6 captures (14 + 40 + 8 + 8).
    pub const INNER_V6: usize = 70;

    /// Source MAC of the frames the builders below make.
    pub const SRC_MAC: [u8; 6] = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
    /// Destination MAC of the frames the builders below make.
    pub const DST_MAC: [u8; 6] = [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef];

    /// An Ethernet header SRC_MAC -> DST_MAC with `tags` (`(tpid, tci)`, outer first)
    /// and then `ethertype`.
    pub fn l2_header(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        for &(tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// An IPv4 header for `len` payload bytes 10.0.0.1 -> 10.0.0.2, UDP, TTL 64.
    pub fn ipv4_repr(len: usize, dont_frag: bool) -> super::Ipv4Repr {
        super::Ipv4Repr {
            src_addr: [10, 0, 0, 1].into(),
            dst_addr: [10, 0, 0, 2].into(),
            protocol: super::ip_proto::UDP,
            payload_len: u16::try_from(len).unwrap(),
            ttl: 64,
            tos: 0x10,
            ident: 0x1234,
            dont_frag,
            more_frags: false,
            frag_offset: 0,
        }
    }

    /// An IPv6 header for `len` payload bytes fd00::1 -> fd00::2, UDP, hop limit 64.
    pub fn ipv6_repr(len: usize) -> super::Ipv6Repr {
        super::Ipv6Repr {
            src_addr: "fd00::1".parse().unwrap(),
            dst_addr: "fd00::2".parse().unwrap(),
            next_header: super::ip_proto::UDP,
            payload_len: u16::try_from(len).unwrap(),
            hop_limit: 64,
            traffic_class: 0x20,
            flow_label: 0x12345,
        }
    }

    /// A frame with `tags` carrying IPv4 `ip` (its `payload_len` is set from `payload`).
    pub fn ipv4_frame(tags: &[(u16, u16)], ip: super::Ipv4Repr, payload: &[u8]) -> Vec<u8> {
        let mut f = l2_header(tags, super::ethertype::IPV4);
        let at = f.len();
        f.resize(at + super::ipv4::HEADER_LEN, 0);
        let ip = super::Ipv4Repr {
            payload_len: u16::try_from(payload.len()).unwrap(),
            ..ip
        };
        ip.emit(&mut super::Ipv4Packet::new_unchecked(&mut f[at..]))
            .unwrap();
        f.extend_from_slice(payload);
        f
    }

    /// A frame with `tags` carrying IPv6 `ip` (its `payload_len` is set from `payload`).
    pub fn ipv6_frame(tags: &[(u16, u16)], ip: super::Ipv6Repr, payload: &[u8]) -> Vec<u8> {
        let mut f = l2_header(tags, super::ethertype::IPV6);
        let at = f.len();
        f.resize(at + super::ipv6::HEADER_LEN, 0);
        let ip = super::Ipv6Repr {
            payload_len: u16::try_from(payload.len()).unwrap(),
            ..ip
        };
        ip.emit(&mut super::Ipv6Packet::new_unchecked(&mut f[at..]));
        f.extend_from_slice(payload);
        f
    }

    /// `n` bytes of a recognisable pattern.
    pub fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A TCP frame (a super-frame when `payload` exceeds a segment) 10.0.0.1:40000 ->
    /// 10.0.0.2:5201 over IPv4 (ID 0xfffe, DF) or fd00::1 -> fd00::2 over IPv6, with
    /// `tags`, flags `fl`, a 32-byte header (timestamps), `payload` bytes of
    /// [`pattern`] and a correct checksum.
    pub fn tcp_frame(v6: bool, tags: &[(u16, u16)], payload: usize, fl: u16) -> Vec<u8> {
        use super::tcp::{TcpPacket, TcpRepr};
        let mut seg = vec![0u8; 32];
        seg.extend_from_slice(&pattern(payload));
        let r = TcpRepr {
            src_port: 40000,
            dst_port: 5201,
            seq_number: 0xffff_f000,
            ack_number: 77,
            flags: fl,
            window_len: 500,
            urgent_at: 0,
        };
        let (mut f, s, d): (Vec<u8>, std::net::IpAddr, std::net::IpAddr) = if v6 {
            let ip = super::Ipv6Repr {
                next_header: super::ip_proto::TCP,
                ..ipv6_repr(0)
            };
            let f = ipv6_frame(tags, ip, &seg);
            (f, ip.src_addr.into(), ip.dst_addr.into())
        } else {
            let ip = super::Ipv4Repr {
                protocol: super::ip_proto::TCP,
                ident: 0xfffe,
                ..ipv4_repr(0, true)
            };
            let f = ipv4_frame(tags, ip, &seg);
            (f, ip.src_addr.into(), ip.dst_addr.into())
        };
        let l4 = f.len() - seg.len();
        r.emit(&mut TcpPacket::new_unchecked(&mut f[l4..]), &s, &d);
        // A 32-byte header: NOP NOP timestamps.
        f[l4 + 12] = 0x80 | (f[l4 + 12] & 0x0f);
        f[l4 + 20..l4 + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        TcpPacket::new_unchecked(&mut f[l4..]).fill_checksum(&s, &d);
        f
    }
}
