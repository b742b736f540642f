//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: one view for both, since the first
//! eight bytes share a layout (type, code, checksum, four message-specific bytes). The
//! difference is the checksum: ICMPv6 covers the IPv6 pseudo-header, ICMPv4 does not.
//!
//! `check_len` requires those eight bytes: every ICMP message flowd forwards has them
//! (as Open vSwitch requires them before reading type and code).

use super::{Error, Result, be16, be32, checksum, ip_proto, put16, put32};
use std::net::{IpAddr, Ipv6Addr};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// Length of the common ICMP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// ICMPv4 message types flowd names.
pub mod v4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// ICMPv6 message types flowd names.
pub mod v6_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Neighbor solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// A zero-copy view of an ICMPv4 or ICMPv6 message. The view spans the whole message
/// (the checksum covers all of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking it holds the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures every accessor is in bounds.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The four message-specific header bytes, as a big-endian word.
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// Echo identifier (echo request/reply).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo sequence number (echo request/reply).
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// Everything after the 8-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    /// Whether the ICMPv4 checksum (over the message only) verifies.
    pub fn verify_checksum_v4(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// Whether the ICMPv6 checksum (message + pseudo-header) verifies.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let (s, d) = (IpAddr::V6(*src), IpAddr::V6(*dst));
        checksum::upper_layer(&s, &d, ip_proto::ICMPV6, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the code.
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the stored checksum.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the four message-specific bytes.
    pub fn set_rest_of_header(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::REST, v);
    }

    /// Computes and stores the ICMPv4 checksum over the whole buffer.
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Computes and stores the ICMPv6 checksum over the whole buffer and pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let (s, d) = (IpAddr::V6(*src), IpAddr::V6(*dst));
        let c = checksum::upper_layer(&s, &d, ip_proto::ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The common ICMP header (the body after it is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpRepr {
    /// Message type.
    pub msg_type: u8,
    /// Message code.
    pub code: u8,
    /// The four message-specific bytes (echo: identifier << 16 | sequence).
    pub rest_of_header: u32,
}

impl IcmpRepr {
    fn from_view<T: AsRef<[u8]>>(p: &IcmpPacket<T>) -> Self {
        Self {
            msg_type: p.msg_type(),
            code: p.code(),
            rest_of_header: p.rest_of_header(),
        }
    }

    /// Parses an ICMPv4 message, verifying its checksum.
    pub fn parse_v4<T: AsRef<[u8]>>(p: &IcmpPacket<T>) -> Result<Self> {
        p.check_len()?;
        if !p.verify_checksum_v4() {
            return Err(Error::Checksum);
        }
        Ok(Self::from_view(p))
    }

    /// Parses an ICMPv6 message, verifying its checksum.
    pub fn parse_v6<T: AsRef<[u8]>>(
        p: &IcmpPacket<T>,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
    ) -> Result<Self> {
        p.check_len()?;
        if !p.verify_checksum_v6(src, dst) {
            return Err(Error::Checksum);
        }
        Ok(Self::from_view(p))
    }

    /// Bytes of header written by the emit functions.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    fn write<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut IcmpPacket<T>) {
        p.set_msg_type(self.msg_type);
        p.set_code(self.code);
        p.set_rest_of_header(self.rest_of_header);
    }

    /// Writes the header into a view spanning the whole message (body already in place)
    /// and fills the ICMPv4 checksum.
    pub fn emit_v4<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut IcmpPacket<T>) {
        self.write(p);
        p.fill_checksum_v4();
    }

    /// Writes the header and fills the ICMPv6 checksum.
    pub fn emit_v6<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut IcmpPacket<T>,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
    ) {
        self.write(p);
        p.fill_checksum_v6(src, dst);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::{ICMPV6_RS, INNER_V4, VXLAN_V4_PING, hex};

    #[test]
    fn real_ping() {
        let b = hex(VXLAN_V4_PING);
        let m = &b[INNER_V4 + 34..];
        let p = IcmpPacket::new_checked(m).unwrap();
        assert_eq!((p.msg_type(), p.code()), (v4_type::ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x3fba, 1));
        assert_eq!(p.checksum(), 0xb4a3);
        assert!(p.verify_checksum_v4());
        let r = IcmpRepr::parse_v4(&p).unwrap();
        let mut out = m.to_vec();
        out[2] = 0;
        out[3] = 0;
        r.emit_v4(&mut IcmpPacket::new_unchecked(&mut out[..]));
        assert_eq!(out, m);
    }

    #[test]
    fn real_icmpv6_router_solicitation() {
        let b = hex(ICMPV6_RS);
        let src: Ipv6Addr = "fe80::3c36:93ff:fe1e:6694".parse().unwrap();
        let dst: Ipv6Addr = "ff02::2".parse().unwrap();
        let m = &b[54..];
        let p = IcmpPacket::new_checked(m).unwrap();
        assert_eq!(p.msg_type(), v6_type::ROUTER_SOLICIT);
        assert_eq!(p.checksum(), 0x0f5c);
        assert!(p.verify_checksum_v6(&src, &dst));
        assert!(!p.verify_checksum_v4());
        let r = IcmpRepr::parse_v6(&p, &src, &dst).unwrap();
        let mut out = m.to_vec();
        out[2] = 0xaa;
        r.emit_v6(&mut IcmpPacket::new_unchecked(&mut out[..]), &src, &dst);
        assert_eq!(out, m);
        assert_eq!(IcmpRepr::parse_v6(&p, &src, &src), Err(Error::Checksum));
    }

    #[test]
    fn prefixes() {
        let b = hex(VXLAN_V4_PING);
        let m = &b[INNER_V4 + 34..];
        for n in 0..8 {
            assert_eq!(
                IcmpPacket::new_checked(&m[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        for n in 8..m.len() {
            let p = IcmpPacket::new_checked(&m[..n]).unwrap();
            // Cutting only trailing zero bytes leaves the checksum valid.
            let tail_zero = m[n..].iter().all(|&x| x == 0);
            assert_eq!(IcmpRepr::parse_v4(&p).is_ok(), tail_zero, "len {n}");
        }
    }
}
