//! 802.1Q and 802.1ad VLAN tags.
//!
//! On the wire a tag is the TPID (in the place of the Ethernet ethertype, or of the
//! previous tag's inner ethertype) followed by 4 bytes: the TCI and the next ethertype.
//! [`VlanTag`] views those 4 bytes; [`L2Info::parse`] walks an Ethernet header and up to
//! [`MAX_TAGS`] tags.

use super::ethernet::{self, EthernetFrame, ethertype};
use super::{Error, Result, be16, put16};

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
    pub const PAYLOAD: usize = 4;
}

/// Length of a tag after its TPID.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// The most tags flowd parses (outer S-tag and inner C-tag).
pub const MAX_TAGS: usize = 2;

/// Whether an ethertype is a VLAN TPID flowd parses (0x8100 or 0x88a8).
pub const fn is_tpid(t: u16) -> bool {
    t == ethertype::VLAN || t == ethertype::QINQ
}

/// A zero-copy view of a VLAN tag's TCI and inner ethertype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking it holds a complete tag.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// Ensures every accessor is in bounds.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The tag control information.
    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TCI)
    }

    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator (formerly CFI).
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN id (12 bits).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// The ethertype following the tag.
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the TCI.
    pub fn set_tci(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::TCI, v);
    }

    /// Sets the inner ethertype.
    pub fn set_ethertype(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, v);
    }
}

/// A parsed VLAN tag (the TPID belongs to the enclosing header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanRepr {
    /// Tag control information (PCP, DEI, VID).
    pub tci: u16,
    /// The ethertype following the tag.
    pub ethertype: u16,
}

impl VlanRepr {
    /// Parses a tag.
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Result<Self> {
        tag.check_len()?;
        Ok(Self {
            tci: tag.tci(),
            ethertype: tag.ethertype(),
        })
    }

    /// Bytes written by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the tag.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        tag.set_tci(self.tci);
        tag.set_ethertype(self.ethertype);
    }
}

/// The layer-2 header of a frame: Ethernet plus up to two VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct L2Info {
    /// Destination MAC.
    pub dst_addr: [u8; 6],
    /// Source MAC.
    pub src_addr: [u8; 6],
    /// `(tpid, tci)` of the outer then inner tag; only the first `n_tags` are meaningful.
    pub tags: [(u16, u16); MAX_TAGS],
    /// Number of tags parsed (0..=2).
    pub n_tags: u8,
    /// The ethertype after the tags (a TPID if a third tag follows).
    pub ethertype: u16,
    /// Offset of the L3 header in the frame.
    pub l3_offset: usize,
}

impl L2Info {
    /// Parses the Ethernet header and up to two tags. A truncated tag is an error.
    pub fn parse(frame: &[u8]) -> Result<Self> {
        let eth = EthernetFrame::new_checked(frame)?;
        let mut info = Self {
            dst_addr: eth.dst_addr(),
            src_addr: eth.src_addr(),
            ethertype: eth.ethertype(),
            l3_offset: ethernet::HEADER_LEN,
            ..Self::default()
        };
        while is_tpid(info.ethertype) && usize::from(info.n_tags) < MAX_TAGS {
            let rest = frame.get(info.l3_offset..).ok_or(Error::Truncated)?;
            let tag = VlanTag::new_checked(rest)?;
            if let Some(slot) = info.tags.get_mut(usize::from(info.n_tags)) {
                *slot = (info.ethertype, tag.tci());
            }
            info.n_tags += 1;
            info.ethertype = tag.ethertype();
            info.l3_offset += HEADER_LEN;
        }
        Ok(info)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::hex;

    // A QinQ frame: S-tag 0x88a8 vid 100 pcp 5, C-tag 0x8100 vid 200, IPv4 follows.
    const QINQ: &str = "
        ffff ffff ffff 0200 0000 0001 88a8 a064
        8100 00c8 0800 4500 0014 0000 0000 4011
        0000 0a00 0001 0a00 0002";

    #[test]
    fn parse_qinq() {
        let b = hex(QINQ);
        let l2 = L2Info::parse(&b).unwrap();
        assert_eq!(l2.n_tags, 2);
        assert_eq!(l2.tags[0], (0x88a8, 0xa064));
        assert_eq!(l2.tags[1], (0x8100, 0x00c8));
        assert_eq!(l2.ethertype, ethertype::IPV4);
        assert_eq!(l2.l3_offset, 22);
        let tag = VlanTag::new_checked(&b[14..]).unwrap();
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (5, false, 100));
    }

    #[test]
    fn prefixes_never_panic() {
        let b = hex(QINQ);
        for n in 0..b.len() {
            let r = L2Info::parse(&b[..n]);
            match n {
                0..14 => assert_eq!(r, Err(Error::Truncated)),
                14..22 => assert_eq!(r, Err(Error::Truncated), "len {n}"),
                _ => assert!(r.is_ok()),
            }
        }
    }

    #[test]
    fn third_tag_is_left_alone() {
        let b = hex("ffff ffff ffff 0200 0000 0001 8100 0001 8100 0002 8100 0003 0800");
        let l2 = L2Info::parse(&b).unwrap();
        assert_eq!(l2.n_tags, 2);
        assert_eq!(l2.ethertype, 0x8100);
    }

    #[test]
    fn round_trip() {
        let r = VlanRepr {
            tci: 0x2abc,
            ethertype: ethertype::IPV6,
        };
        let mut buf = [0u8; 4];
        r.emit(&mut VlanTag::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x2a, 0xbc, 0x86, 0xdd]);
        assert_eq!(
            VlanRepr::parse(&VlanTag::new_checked(&buf[..]).unwrap()),
            Ok(r)
        );
    }
}
