//! IPv4 (RFC 791): options, fragments, header checksum.
//!
//! `check_len` validates IHL and total length against the buffer, so `options()` and
//! `payload()` never panic once it passes; `payload()` stops at the total length (any
//! Ethernet padding after it is excluded).

use super::{Error, Result, be16, checksum, put16};
use std::net::Ipv4Addr;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const OPTIONS: usize = 20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking the header and the lengths it announces.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures every accessor is in bounds: the buffer holds the fixed header, IHL is at
    /// least 5, and `header_len <= total_len <= buffer length`.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hlen = usize::from(self.header_len());
        let total = usize::from(self.total_len());
        if hlen < HEADER_LEN || total < hlen {
            Err(Error::Malformed)
        } else if len < total {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4 for a valid packet; checked by [`Ipv4Repr::parse`]).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// TOS byte (DSCP + ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Total length (header + payload).
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// Whether the packet is a fragment (first or later).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(super::array::<4>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(super::array::<4>(self.buffer.as_ref(), field::DST))
    }

    /// The options (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..usize::from(self.header_len())]
    }

    /// The whole header, options included.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.header_len())]
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// The payload, up to the total length.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[usize::from(self.header_len())..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, hlen: u8) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((hlen / 4) & 0x0f);
    }

    /// Sets the TOS byte.
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the flags and fragment offset (offset in bytes, multiple of 8).
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= DF;
        }
        if more_frags {
            v |= MF;
        }
        put16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets the TTL.
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the stored checksum.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Computes and stores the header checksum (over IHL * 4 bytes).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(&self.buffer.as_ref()[..usize::from(self.header_len())]);
        self.set_checksum(sum);
    }

    /// The payload (after the header, up to the total length), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (
            usize::from(self.header_len()),
            usize::from(self.total_len()),
        );
        &mut self.buffer.as_mut()[h..t]
    }
}

/// An IPv4 header without options. Parsing accepts options and skips them; emitting
/// writes none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length (total length - header length).
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// TOS byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't fragment.
    pub dont_frag: bool,
    /// More fragments.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Parses a packet: the version must be 4 and the header checksum must verify.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self> {
        p.check_len()?;
        if p.version() != 4 {
            return Err(Error::Malformed);
        }
        if !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        Ok(Self {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.total_len() - u16::from(p.header_len()),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
        })
    }

    /// Bytes of header written by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (total length = 20 + `payload_len`) and its checksum. Returns
    /// [`Error::TooLarge`] if the total length does not fit 16 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv4Packet<T>) -> Result<()> {
        let total = self
            .payload_len
            .checked_add(HEADER_LEN as u16)
            .ok_or(Error::TooLarge)?;
        p.set_version_and_header_len(HEADER_LEN as u8);
        p.set_tos(self.tos);
        p.set_total_len(total);
        p.set_ident(self.ident);
        p.set_frag(self.dont_frag, self.more_frags, self.frag_offset);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::{INNER_V4, VXLAN_V4_PING, hex};

    #[test]
    fn parse_real_outer_and_inner() {
        let b = hex(VXLAN_V4_PING);
        let outer = Ipv4Packet::new_checked(&b[14..]).unwrap();
        assert!(outer.verify_checksum());
        let r = Ipv4Repr::parse(&outer).unwrap();
        assert_eq!(r.src_addr, Ipv4Addr::new(192, 168, 203, 56));
        assert_eq!(r.dst_addr, Ipv4Addr::new(192, 168, 203, 51));
        assert_eq!((r.protocol, r.ttl, r.tos, r.ident), (17, 64, 0, 0x591e));
        assert_eq!(r.payload_len, 0x5e - 20);
        assert!(!r.dont_frag && !r.more_frags && r.frag_offset == 0);
        assert_eq!(outer.checksum(), 0x09b4);

        let inner = Ipv4Packet::new_checked(&b[INNER_V4 + 14..]).unwrap();
        let r = Ipv4Repr::parse(&inner).unwrap();
        assert!(r.dont_frag);
        assert_eq!(r.protocol, 1);
        assert_eq!(inner.checksum(), 0x80a7);
        // The inner frame carries no Ethernet padding; the payload is the ICMP message.
        assert_eq!(inner.payload().len(), 24);
    }

    #[test]
    fn prefixes_never_panic() {
        let b = hex(VXLAN_V4_PING);
        let ip = &b[14..];
        for n in 0..ip.len() {
            let e = Ipv4Packet::new_checked(&ip[..n]).unwrap_err();
            assert_eq!(e, Error::Truncated, "len {n}");
        }
    }

    #[test]
    fn hostile_lengths() {
        let b = hex(VXLAN_V4_PING);
        let mut ip = b[14..].to_vec();
        ip[0] = 0x44; // IHL 4
        assert_eq!(
            Ipv4Packet::new_checked(&ip[..]).unwrap_err(),
            Error::Malformed
        );
        ip[0] = 0x4f; // IHL 15 = 60 bytes, fine (buffer is 94 bytes)
        let p = Ipv4Packet::new_checked(&ip[..]).unwrap();
        assert_eq!(p.options().len(), 40);
        ip[2] = 0; // total length 0x005e -> 0x0000 < header
        ip[3] = 0;
        assert_eq!(
            Ipv4Packet::new_checked(&ip[..]).unwrap_err(),
            Error::Malformed
        );
        ip[2] = 0xff; // total length > buffer
        assert_eq!(
            Ipv4Packet::new_checked(&ip[..]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = b[14..].to_vec();
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_checked(&bad[..]).unwrap()),
            Err(Error::Malformed)
        );
        bad[0] = 0x45;
        bad[8] = 1; // ttl changed, checksum stale
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_checked(&bad[..]).unwrap()),
            Err(Error::Checksum)
        );
    }

    #[test]
    fn options_and_fragments() {
        // IHL 6 with a 4-byte router-alert option, MF set, offset 1480.
        let mut p = hex("4600 001c 1234 20b9 4011 0000 0a00 0001 0a00 0002 9404 0000 dead beef");
        let mut v = Ipv4Packet::new_unchecked(&mut p[..]);
        v.fill_checksum();
        let v = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.options(), &[0x94, 0x04, 0, 0]);
        assert!(v.more_frags() && !v.dont_frag());
        assert_eq!(v.frag_offset(), 0xb9 * 8);
        assert!(v.is_fragment());
        assert_eq!(v.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        let r = Ipv4Repr::parse(&v).unwrap();
        assert_eq!(r.payload_len, 4);
    }

    #[test]
    fn round_trip() {
        let r = Ipv4Repr {
            src_addr: Ipv4Addr::new(192, 0, 2, 1),
            dst_addr: Ipv4Addr::new(198, 51, 100, 7),
            protocol: 6,
            payload_len: 8,
            ttl: 3,
            tos: 0xb8,
            ident: 0xabcd,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let mut buf = [0u8; 28];
        r.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), Ok(r));
        let too_big = Ipv4Repr {
            payload_len: 65530,
            ..r
        };
        assert_eq!(
            too_big.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..])),
            Err(Error::TooLarge)
        );
    }
}
