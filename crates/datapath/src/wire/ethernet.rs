//! Ethernet II frames (without FCS).

use super::{Error, Result, array, be16, put16};

/// Ethertypes flowd handles.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// RARP (same packet format as ARP).
    pub const RARP: u16 = 0x8035;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// Values below this are 802.3 lengths, not ethertypes.
    pub const MIN: u16 = 0x0600;
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// Length of an Ethernet header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A zero-copy view of an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking it holds a complete header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Ensures every accessor is in bounds.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    pub fn dst_addr(&self) -> [u8; 6] {
        array(self.buffer.as_ref(), field::DST.start)
    }

    /// Source MAC.
    pub fn src_addr(&self) -> [u8; 6] {
        array(self.buffer.as_ref(), field::SRC.start)
    }

    /// Ethertype (or TPID of the first VLAN tag, or an 802.3 length).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the 14-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    pub fn set_dst_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    /// Sets the source MAC.
    pub fn set_src_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    /// Sets the ethertype.
    pub fn set_ethertype(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, v);
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A parsed Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Source MAC.
    pub src_addr: [u8; 6],
    /// Destination MAC.
    pub dst_addr: [u8; 6],
    /// Ethertype.
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Parses a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self> {
        frame.check_len()?;
        Ok(Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Bytes written by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::{VXLAN_V4_PING, hex};

    #[test]
    fn parse_real_frame() {
        let b = hex(VXLAN_V4_PING);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        let r = EthernetRepr::parse(&f).unwrap();
        assert_eq!(r.dst_addr, [0x86, 0xb0, 0xc4, 0x13, 0x39, 0x75]);
        assert_eq!(r.src_addr, [0xe2, 0x1a, 0xff, 0xcc, 0xd0, 0x28]);
        assert_eq!(r.ethertype, ethertype::IPV4);
        assert_eq!(f.payload().len(), b.len() - 14);
    }

    #[test]
    fn prefixes() {
        let b = hex(VXLAN_V4_PING);
        for n in 0..b.len() {
            let r = EthernetFrame::new_checked(&b[..n]);
            assert_eq!(r.is_ok(), n >= 14, "len {n}");
        }
        assert_eq!(
            EthernetFrame::new_checked(&b[..13]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn round_trip() {
        let r = EthernetRepr {
            src_addr: [2, 0, 0, 0, 0, 1],
            dst_addr: [0xff; 6],
            ethertype: ethertype::ARP,
        };
        let mut buf = [0u8; 14];
        r.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[12..], &[0x08, 0x06]);
        let back = EthernetRepr::parse(&EthernetFrame::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
