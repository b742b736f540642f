//! UDP (RFC 768) datagrams, with the checksum over the IPv4 or IPv6 pseudo-header.
//!
//! A zero checksum means "none" over IPv4; over IPv6 it is only legal for tunnels
//! (RFC 6935/6936), and [`UdpPacket::fill_checksum`] never produces it (0 becomes 0xffff).

use super::{Error, Result, be16, checksum, ip_proto, put16};
use std::net::IpAddr;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// Length of a UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A zero-copy view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking the header and the length field.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures every accessor is in bounds: 8 <= length field <= buffer length.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            Err(Error::Malformed)
        } else if len < field_len {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header + payload).
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the datagram carries no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum as stored (0 = none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.len())]
    }

    /// Whether the checksum verifies. A zero checksum verifies (it means "none"; over
    /// IPv6 that is legal only for tunnels, which is what flowd receives).
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let data = &self.buffer.as_ref()[..usize::from(self.len())];
        checksum::upper_layer(src, dst, ip_proto::UDP, data) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the stored checksum.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes the checksum over header and payload (up to the length field) and the
    /// pseudo-header, and stores it; a computed 0 is sent as 0xffff.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let c = checksum::upper_layer(src, dst, ip_proto::UDP, &self.buffer.as_ref()[..len]);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..len]
    }
}

/// A UDP header. The length and checksum are derived on emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses a datagram, verifying a non-zero checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>, src: &IpAddr, dst: &IpAddr) -> Result<Self> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        Ok(Self {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
        })
    }

    /// Bytes of header written by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header for `payload_len` bytes of payload (already in place after the
    /// header, or written before calling `fill_checksum`). With `checksum`, the checksum
    /// is computed now over the payload in the buffer; without, it is zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut UdpPacket<T>,
        payload_len: usize,
        addrs: Option<(&IpAddr, &IpAddr)>,
    ) -> Result<()> {
        let len = u16::try_from(HEADER_LEN + payload_len).map_err(|_| Error::TooLarge)?;
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        p.set_checksum(0);
        if let Some((s, d)) = addrs {
            p.fill_checksum(s, d);
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::{INNER_V6, VXLAN_V6_UDP, hex};

    #[test]
    fn real_outer_v6_checksum() {
        let b = hex(VXLAN_V6_UDP);
        let (s, d): (IpAddr, IpAddr) = ("fd00::56".parse().unwrap(), "fd00::51".parse().unwrap());
        let p = UdpPacket::new_checked(&b[54..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (52109, 4789, 0x3f));
        assert_eq!(p.checksum(), 0xbeef);
        assert!(p.verify_checksum(&s, &d));
        assert_eq!(UdpRepr::parse(&p, &s, &d).unwrap().dst_port, 4789);
        // Recompute into a copy: same value.
        let mut copy = b[54..].to_vec();
        UdpPacket::new_unchecked(&mut copy[..]).fill_checksum(&s, &d);
        assert_eq!(copy, b[54..]);
    }

    #[test]
    fn real_inner_v4_checksum() {
        let b = hex(VXLAN_V6_UDP);
        let (s, d): (IpAddr, IpAddr) = ("10.0.6.1".parse().unwrap(), "10.0.6.2".parse().unwrap());
        let p = UdpPacket::new_checked(&b[INNER_V6 + 34..]).unwrap();
        assert_eq!(p.checksum(), 0xc62c);
        assert_eq!(p.payload(), b"flowd");
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&d, &d));
        assert_eq!(UdpRepr::parse(&p, &d, &d), Err(Error::Checksum));
    }

    #[test]
    fn prefixes_and_bad_lengths() {
        let b = hex(VXLAN_V6_UDP);
        let u = &b[INNER_V6 + 34..];
        for n in 0..u.len() {
            assert_eq!(
                UdpPacket::new_checked(&u[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        let mut bad = u.to_vec();
        bad[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn round_trip_v4_v6() {
        for (s, d) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
            let (s, d): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let r = UdpRepr {
                src_port: 53,
                dst_port: 40000,
            };
            let mut buf = [0u8; 11];
            buf[8..].copy_from_slice(b"abc");
            r.emit(
                &mut UdpPacket::new_unchecked(&mut buf[..]),
                3,
                Some((&s, &d)),
            )
            .unwrap();
            let p = UdpPacket::new_checked(&buf[..]).unwrap();
            assert_ne!(p.checksum(), 0);
            assert_eq!(UdpRepr::parse(&p, &s, &d), Ok(r));
        }
        let mut buf = [0u8; 8];
        let r = UdpRepr {
            src_port: 1,
            dst_port: 2,
        };
        assert_eq!(
            r.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), 70000, None),
            Err(Error::TooLarge)
        );
    }
}
