//! IPv6 (RFC 8200) and the walk over its extension headers.
//!
//! `check_len` validates the payload length against the buffer; `payload()` stops at
//! it. [`skip_extension_headers`] skips hop-by-hop, routing, destination options,
//! fragment and AH headers, recording the fragment state, and reports where the
//! upper-layer header starts.

use super::{Error, Result, array, be16, be32, ip_proto, put16, put32};
use std::net::Ipv6Addr;

mod field {
    pub const VER_TC_FL: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const PAYLOAD: usize = 40;
}

/// Length of the IPv6 fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Length of a fragment extension header.
pub const FRAG_HEADER_LEN: usize = 8;

/// At most this many extension headers are skipped; more is [`Error::Malformed`].
pub const MAX_EXT_HEADERS: usize = 16;

/// A zero-copy view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking the header and the payload length.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures every accessor is in bounds: 40 + payload length <= buffer length.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (6 for a valid packet; checked by [`Ipv6Repr::parse`]).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FL] >> 4
    }

    /// Traffic class (DSCP + ECN).
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), field::VER_TC_FL) >> 4) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FL) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header (first extension header or upper-layer protocol).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::DST))
    }

    /// The payload (extension headers included), up to the payload length.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[field::PAYLOAD..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, tc: u8, flow_label: u32) {
        let v = 6u32 << 28 | u32::from(tc) << 20 | (flow_label & 0x000f_ffff);
        put32(self.buffer.as_mut(), field::VER_TC_FL, v);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a.octets());
    }
}

/// The fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses a packet; the version must be 6.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Self> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Self {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Bytes written by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv6Packet<T>) {
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
    }
}

/// Fragment state from an IPv6 fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6FragInfo {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the upper layer starts after the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6ExtInfo {
    /// The upper-layer protocol. For a later fragment (offset != 0) this is the next
    /// header named by the fragment header, and no upper-layer header is present.
    pub protocol: u8,
    /// Offset of the upper-layer header within the IPv6 payload.
    pub offset: usize,
    /// The fragment header's state, if there was one.
    pub frag: Option<Ipv6FragInfo>,
}

impl Ipv6ExtInfo {
    /// Whether the upper-layer header is absent because this is a later fragment.
    pub fn is_later_fragment(&self) -> bool {
        self.frag.is_some_and(|f| f.offset != 0)
    }
}

/// Skips the extension headers at the start of `payload` (an IPv6 payload), starting
/// with next header `first`. Stops at the first header that is not hop-by-hop, routing,
/// fragment, destination options or AH, or after a non-first fragment header.
pub fn skip_extension_headers(first: u8, payload: &[u8]) -> Result<Ipv6ExtInfo> {
    let mut nh = first;
    let mut off = 0usize;
    let mut frag = None;
    for _ in 0..MAX_EXT_HEADERS {
        match nh {
            ip_proto::HOPOPTS | ip_proto::ROUTING | ip_proto::DSTOPTS | ip_proto::AH => {
                let h = payload.get(off..off + 2).ok_or(Error::Truncated)?;
                let (next, len_field) = (h[0], usize::from(h[1]));
                let len = if nh == ip_proto::AH {
                    (len_field + 2) * 4
                } else {
                    (len_field + 1) * 8
                };
                if payload.len() < off + len {
                    return Err(Error::Truncated);
                }
                nh = next;
                off += len;
            }
            ip_proto::FRAGMENT => {
                let h = payload
                    .get(off..off + FRAG_HEADER_LEN)
                    .ok_or(Error::Truncated)?;
                let off_flags = be16(h, 2);
                let info = Ipv6FragInfo {
                    offset: off_flags & 0xfff8,
                    more_frags: off_flags & 1 != 0,
                    ident: be32(h, 4),
                };
                frag = Some(info);
                nh = h[0];
                off += FRAG_HEADER_LEN;
                if info.offset != 0 {
                    break;
                }
            }
            _ => {
                return Ok(Ipv6ExtInfo {
                    protocol: nh,
                    offset: off,
                    frag,
                });
            }
        }
    }
    if frag.is_some_and(|f| f.offset != 0) {
        Ok(Ipv6ExtInfo {
            protocol: nh,
            offset: off,
            frag,
        })
    } else {
        Err(Error::Malformed)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::{ICMPV6_RS, VXLAN_V6_UDP, hex};

    #[test]
    fn parse_real_outer() {
        let b = hex(VXLAN_V6_UDP);
        let p = Ipv6Packet::new_checked(&b[14..]).unwrap();
        let r = Ipv6Repr::parse(&p).unwrap();
        assert_eq!(r.src_addr, "fd00::56".parse::<Ipv6Addr>().unwrap());
        assert_eq!(r.dst_addr, "fd00::51".parse::<Ipv6Addr>().unwrap());
        assert_eq!((r.next_header, r.payload_len, r.hop_limit), (17, 0x3f, 64));
        assert_eq!((r.traffic_class, r.flow_label), (0, 0));
        assert_eq!(p.payload().len(), 0x3f);
        let x = skip_extension_headers(r.next_header, p.payload()).unwrap();
        assert_eq!((x.protocol, x.offset, x.frag), (17, 0, None));
    }

    #[test]
    fn prefixes_never_panic() {
        let b = hex(ICMPV6_RS);
        let ip = &b[14..];
        for n in 0..ip.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&ip[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        assert!(Ipv6Packet::new_checked(ip).is_ok());
    }

    #[test]
    fn extension_headers() {
        // hop-by-hop (8 bytes, PadN) -> dest opts (16 bytes) -> fragment (first, MF)
        // -> TCP
        let pl = hex("3c00 0104 0000 0000
             2c01 0106 0000 0000 0000 0000 0000 0000
             0600 0001 dead beef
             aaaa bbbb");
        let x = skip_extension_headers(ip_proto::HOPOPTS, &pl).unwrap();
        assert_eq!(x.protocol, ip_proto::TCP);
        assert_eq!(x.offset, 32);
        assert_eq!(
            x.frag,
            Some(Ipv6FragInfo {
                offset: 0,
                more_frags: true,
                ident: 0xdeadbeef
            })
        );
        assert!(!x.is_later_fragment());
        for n in 0..32 {
            assert_eq!(
                skip_extension_headers(ip_proto::HOPOPTS, &pl[..n]),
                Err(Error::Truncated),
                "len {n}"
            );
        }
        // A later fragment stops the walk.
        let later = hex("1100 05a8 0000 0001 ffff");
        let x = skip_extension_headers(ip_proto::FRAGMENT, &later).unwrap();
        assert_eq!((x.protocol, x.offset), (17, 8));
        assert!(x.is_later_fragment());
        assert_eq!(
            x.frag.map(|f| (f.offset, f.more_frags)),
            Some((0x5a8, false))
        );
        // Routing header, then "no next header".
        let rh = hex("3b00 0000 0000 0000");
        let x = skip_extension_headers(ip_proto::ROUTING, &rh).unwrap();
        assert_eq!((x.protocol, x.offset), (ip_proto::NONE, 8));
    }

    #[test]
    fn endless_chain_is_malformed() {
        // 17 empty destination-options headers, each naming another.
        let mut pl = Vec::new();
        for _ in 0..(MAX_EXT_HEADERS + 1) {
            pl.extend_from_slice(&[ip_proto::DSTOPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(
            skip_extension_headers(ip_proto::DSTOPTS, &pl),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn round_trip() {
        let r = Ipv6Repr {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8::2".parse().unwrap(),
            next_header: 58,
            payload_len: 0,
            hop_limit: 255,
            traffic_class: 0xb9,
            flow_label: 0xabcde,
        };
        let mut buf = [0u8; 40];
        r.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf[0], 0x6b);
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_checked(&buf[..]).unwrap()),
            Ok(r)
        );
        buf[0] = 0x4b;
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_checked(&buf[..]).unwrap()),
            Err(Error::Malformed)
        );
    }
}
