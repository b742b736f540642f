//! TCP (RFC 9293) segments: header, flags, options, checksum.

use super::{Error, Result, be16, be32, checksum, ip_proto, put16, put32};
use std::net::IpAddr;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF_FLAGS: usize = 12;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

/// TCP flag bits, as in the low 12 bits of the data-offset/flags word (and in
/// `FlowKey::tcp_flags`).
pub mod flags {
    /// FIN.
    pub const FIN: u16 = 0x001;
    /// SYN.
    pub const SYN: u16 = 0x002;
    /// RST.
    pub const RST: u16 = 0x004;
    /// PSH.
    pub const PSH: u16 = 0x008;
    /// ACK.
    pub const ACK: u16 = 0x010;
    /// URG.
    pub const URG: u16 = 0x020;
    /// ECE.
    pub const ECE: u16 = 0x040;
    /// CWR.
    pub const CWR: u16 = 0x080;
    /// NS (historic, RFC 3540) / AE (accurate ECN).
    pub const NS: u16 = 0x100;
    /// All 12 bits (flags plus the 3 reserved bits).
    pub const MASK: u16 = 0x0fff;
}

/// A zero-copy view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking the header and its data offset.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures every accessor is in bounds: 20 <= header_len <= buffer length.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hlen = usize::from(self.header_len());
        if hlen < HEADER_LEN {
            Err(Error::Malformed)
        } else if len < hlen {
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

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::OFF_FLAGS] >> 4) * 4
    }

    /// The 12 flag bits ([`flags`]).
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OFF_FLAGS) & flags::MASK
    }

    /// FIN set.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// SYN set.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// RST set.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// PSH set.
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// ACK set.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// URG set.
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// ECE set.
    pub fn ece(&self) -> bool {
        self.flags() & flags::ECE != 0
    }

    /// CWR set.
    pub fn cwr(&self) -> bool {
        self.flags() & flags::CWR != 0
    }

    /// Window size.
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum as stored.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options (empty for a 20-byte header).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..usize::from(self.header_len())]
    }

    /// Payload: everything after the header (the view is expected to end where the IP
    /// payload ends).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }

    /// Whether the checksum over the whole buffer and the pseudo-header verifies.
    pub fn verify_checksum(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        checksum::upper_layer(src, dst, ip_proto::TCP, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Sets the header length (bytes, multiple of 4, 20..=60) and the 12 flag bits.
    pub fn set_header_len_and_flags(&mut self, hlen: u8, fl: u16) {
        let v = u16::from(hlen / 4) << 12 | (fl & flags::MASK);
        put16(self.buffer.as_mut(), field::OFF_FLAGS, v);
    }

    /// Sets the window.
    pub fn set_window_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, v);
    }

    /// Sets the stored checksum.
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Computes the checksum over the whole buffer (header + payload) and stores it.
    pub fn fill_checksum(&mut self, src: &IpAddr, dst: &IpAddr) {
        self.set_checksum(0);
        let c = checksum::upper_layer(src, dst, ip_proto::TCP, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = usize::from(self.header_len());
        &mut self.buffer.as_mut()[h..]
    }
}

/// A TCP header without options (parsing skips options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// The 12 flag bits.
    pub flags: u16,
    /// Window.
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
}

impl TcpRepr {
    /// Parses a segment, verifying its checksum against the pseudo-header.
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>, src: &IpAddr, dst: &IpAddr) -> Result<Self> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        Ok(Self {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
            urgent_at: p.urgent_at(),
        })
    }

    /// Bytes of header written by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into a view spanning header + payload (payload already in
    /// place) and fills the checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut TcpPacket<T>,
        src: &IpAddr,
        dst: &IpAddr,
    ) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len_and_flags(HEADER_LEN as u8, self.flags);
        p.set_window_len(self.window_len);
        p.set_urgent_at(self.urgent_at);
        p.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::testutil::{INNER_V6, VXLAN_V6_TCP_SYN, hex};

    fn real_syn() -> Vec<u8> {
        // Inner Ethernet (14) + inner IPv4 (20).
        hex(VXLAN_V6_TCP_SYN)[INNER_V6 + 34..].to_vec()
    }

    fn addrs() -> (IpAddr, IpAddr) {
        ("10.0.6.1".parse().unwrap(), "10.0.6.2".parse().unwrap())
    }

    #[test]
    fn parse_real_syn() {
        let b = real_syn();
        let (s, d) = addrs();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (44748, 80));
        assert_eq!(p.seq_number(), 3896905403);
        assert_eq!(p.flags(), flags::SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst());
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.options()[..4], [0x02, 0x04, 0x05, 0x6e]); // MSS 1390
        assert_eq!(p.window_len(), 65330);
        assert_eq!(p.checksum(), 0x2f76);
        assert!(p.verify_checksum(&s, &d));
        let r = TcpRepr::parse(&p, &s, &d).unwrap();
        assert_eq!(r.flags, flags::SYN);
        assert_eq!(TcpRepr::parse(&p, &d, &d), Err(Error::Checksum));
    }

    #[test]
    fn prefixes_and_bad_offsets() {
        let b = real_syn();
        for n in 0..b.len() {
            let e = TcpPacket::new_checked(&b[..n]).unwrap_err();
            assert_eq!(e, Error::Truncated, "len {n}");
        }
        let mut bad = b.clone();
        bad[12] = 0x40; // data offset 4
        assert_eq!(
            TcpPacket::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
        bad[12] = 0xf0; // 60 bytes > 40
        assert_eq!(
            TcpPacket::new_checked(&bad[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn round_trip_with_payload() {
        let (s, d): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let r = TcpRepr {
            src_port: 1234,
            dst_port: 443,
            seq_number: 1,
            ack_number: 2,
            flags: flags::ACK | flags::PSH | flags::CWR | flags::NS,
            window_len: 512,
            urgent_at: 0,
        };
        let mut buf = [0u8; 25];
        buf[20..].copy_from_slice(b"hello");
        r.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), &s, &d);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), b"hello");
        assert!(p.cwr() && p.psh() && !p.ece() && !p.urg());
        assert_eq!(TcpRepr::parse(&p, &s, &d), Ok(r));
    }
}
