//! ARP (RFC 826). The view handles any hardware/protocol address lengths; the
//! [`ArpRepr`] only Ethernet/IPv4, the one flowd switches.

use super::{Error, Result, be16, put16};
use std::net::Ipv4Addr;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
}

/// Length of the fixed part of an ARP packet.
pub const FIXED_LEN: usize = field::SHA;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ETH_IPV4_LEN: usize = 28;

/// ARP hardware type: Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// ARP opcodes.
pub mod op {
    /// Request.
    pub const REQUEST: u16 = 1;
    /// Reply.
    pub const REPLY: u16 = 2;
}

/// A zero-copy view of an ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking it holds the addresses its length fields announce.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures every accessor is in bounds (including the four address fields).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < FIXED_LEN || len < self.tpa_range().end {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Hardware type.
    pub fn htype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (an ethertype).
    pub fn ptype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length.
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    fn sha_range(&self) -> core::ops::Range<usize> {
        field::SHA..field::SHA + usize::from(self.hlen())
    }

    fn spa_range(&self) -> core::ops::Range<usize> {
        let s = self.sha_range().end;
        s..s + usize::from(self.plen())
    }

    fn tha_range(&self) -> core::ops::Range<usize> {
        let s = self.spa_range().end;
        s..s + usize::from(self.hlen())
    }

    fn tpa_range(&self) -> core::ops::Range<usize> {
        let s = self.tha_range().end;
        s..s + usize::from(self.plen())
    }

    /// Sender hardware address.
    pub fn sha(&self) -> &[u8] {
        &self.buffer.as_ref()[self.sha_range()]
    }

    /// Sender protocol address.
    pub fn spa(&self) -> &[u8] {
        &self.buffer.as_ref()[self.spa_range()]
    }

    /// Target hardware address.
    pub fn tha(&self) -> &[u8] {
        &self.buffer.as_ref()[self.tha_range()]
    }

    /// Target protocol address.
    pub fn tpa(&self) -> &[u8] {
        &self.buffer.as_ref()[self.tpa_range()]
    }

    /// Whether this is Ethernet/IPv4 ARP.
    pub fn is_eth_ipv4(&self) -> bool {
        self.htype() == HTYPE_ETHERNET
            && self.ptype() == super::ethertype::IPV4
            && self.hlen() == 6
            && self.plen() == 4
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware type.
    pub fn set_htype(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::HTYPE, v);
    }

    /// Sets the protocol type.
    pub fn set_ptype(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::PTYPE, v);
    }

    /// Sets the hardware address length.
    pub fn set_hlen(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    /// Sets the protocol address length.
    pub fn set_plen(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::OPER, v);
    }

    /// Sets the sender hardware address (length `hlen`).
    pub fn set_sha(&mut self, a: &[u8]) {
        let r = self.sha_range();
        self.buffer.as_mut()[r].copy_from_slice(a);
    }

    /// Sets the sender protocol address (length `plen`).
    pub fn set_spa(&mut self, a: &[u8]) {
        let r = self.spa_range();
        self.buffer.as_mut()[r].copy_from_slice(a);
    }

    /// Sets the target hardware address (length `hlen`).
    pub fn set_tha(&mut self, a: &[u8]) {
        let r = self.tha_range();
        self.buffer.as_mut()[r].copy_from_slice(a);
    }

    /// Sets the target protocol address (length `plen`).
    pub fn set_tpa(&mut self, a: &[u8]) {
        let r = self.tpa_range();
        self.buffer.as_mut()[r].copy_from_slice(a);
    }
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Operation ([`op`]).
    pub operation: u16,
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: [u8; 6],
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

fn to6(s: &[u8]) -> Result<[u8; 6]> {
    s.try_into().map_err(|_| Error::Malformed)
}

fn to_v4(s: &[u8]) -> Result<Ipv4Addr> {
    let a: [u8; 4] = s.try_into().map_err(|_| Error::Malformed)?;
    Ok(Ipv4Addr::from(a))
}

impl ArpRepr {
    /// Parses a packet; other hardware/protocol types give [`Error::Unsupported`].
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Result<Self> {
        p.check_len()?;
        if !p.is_eth_ipv4() {
            return Err(Error::Unsupported);
        }
        Ok(Self {
            operation: p.operation(),
            sha: to6(p.sha())?,
            spa: to_v4(p.spa())?,
            tha: to6(p.tha())?,
            tpa: to_v4(p.tpa())?,
        })
    }

    /// Bytes written by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        ETH_IPV4_LEN
    }

    /// Writes the packet.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut ArpPacket<T>) {
        p.set_htype(HTYPE_ETHERNET);
        p.set_ptype(super::ethertype::IPV4);
        p.set_hlen(6);
        p.set_plen(4);
        p.set_operation(self.operation);
        p.set_sha(&self.sha);
        p.set_spa(&self.spa.octets());
        p.set_tha(&self.tha);
        p.set_tpa(&self.tpa.octets());
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::{INNER_V4, VXLAN_V4_ARP, hex};

    fn real_arp() -> Vec<u8> {
        hex(VXLAN_V4_ARP)[INNER_V4 + 14..].to_vec()
    }

    #[test]
    fn parse_real_request() {
        let b = real_arp();
        let r = ArpRepr::parse(&ArpPacket::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(r.operation, op::REQUEST);
        assert_eq!(r.sha, [0x3e, 0x36, 0x93, 0x1e, 0x66, 0x94]);
        assert_eq!(r.spa, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(r.tha, [0; 6]);
        assert_eq!(r.tpa, Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn prefixes_and_hostile_lengths() {
        let b = real_arp();
        for n in 0..b.len() {
            assert_eq!(
                ArpPacket::new_checked(&b[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        let mut big = b.clone();
        big[4] = 255; // hlen
        big[5] = 255; // plen
        assert_eq!(
            ArpPacket::new_checked(&big[..]).unwrap_err(),
            Error::Truncated
        );
        let mut other = b.clone();
        other[4] = 4;
        let p = ArpPacket::new_checked(&other[..]).unwrap();
        assert_eq!(p.sha().len(), 4);
        assert_eq!(ArpRepr::parse(&p), Err(Error::Unsupported));
    }

    #[test]
    fn round_trip() {
        let b = real_arp();
        let r = ArpRepr::parse(&ArpPacket::new_checked(&b[..]).unwrap()).unwrap();
        let mut out = [0u8; ETH_IPV4_LEN];
        r.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
        assert_eq!(&out[..], &b[..]);
    }
}
