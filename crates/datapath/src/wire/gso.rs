//! What a NIC does to a frame its sender left unfinished, done in software: TCP and UDP
//! segmentation of a super-frame (GSO/TSO/USO), and completion of a partial checksum.
//!
//! A host that offloads segmentation hands its driver one *super-frame* of up to 64 KiB:
//! one set of headers, the payload of many segments, and the segment size (the vnet
//! header's `gso_size`, see [`super::vnet`]). [`Segmenter`] cuts it as the kernel's
//! `tcp_gso_segment` / `__udp_gso_segment` do, writing each segment into a caller-owned
//! buffer (e.g. straight into a transmit slot, after room for tunnel headers): no
//! allocation, and the super-frame is only read.
//!
//! Each segment gets the super-frame's Ethernet header and VLAN tags, its IP header and
//! L4 header (TCP options included), and `size` bytes of payload (the last one what is
//! left), with:
//! - IPv4: total length, identification = the super-frame's + segment index (wrapping:
//!   the kernel does the same unless the stack asked for a fixed ID, which a vnet header
//!   cannot say), header checksum;
//! - IPv6: payload length (extension headers kept);
//! - TCP: sequence number advanced by the payload before it; CWR only on the first
//!   segment, FIN and PSH only on the last (every other flag, ECE and URG included, on
//!   all); a full checksum;
//! - UDP: each segment its own datagram: length and a full checksum (0 sent as 0xffff).
//!
//! [`complete_checksum`] finishes a partial checksum in place (what `skb_checksum_help`
//! does): the field at `start + offset` holds the pseudo-header's sum, the bytes from
//! `start` to the end are summed into it. [`prepare_partial`] does the opposite for a
//! super-frame whose checksum is whole or stale (received after GRO): it puts the
//! pseudo-header's sum there, so that the kernel can segment the frame and fill each
//! segment's checksum.
//!
//! Refused (an error, never a panic): headers that do not parse, an IPv4 or IPv6
//! fragment, L4 other than TCP/UDP or not what the GSO kind says, a segment size of 0,
//! an `out` too small for the next segment.

use super::checksum;
use super::ethernet::ethertype;
use super::ipv4::Ipv4Packet;
use super::ipv6::{self, Ipv6Packet, skip_extension_headers};
use super::tcp::{self, TcpPacket};
use super::udp;
use super::vlan::L2Info;
use super::vnet::{GsoKind, PartialCsum};
use super::{Error, Result, ip_proto, put16, put32};

/// Largest frame a super-frame can be: a 64 KiB IP packet behind Ethernet and two VLAN
/// tags.
pub const MAX_FRAME: usize = 65_535 + 14 + 8;

/// Where a frame's layers lie, for segmentation and checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Offset of the IP header.
    pub l3: usize,
    /// The IP header is IPv6.
    pub v6: bool,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Length of the TCP header (options included) or 8 for UDP.
    pub l4_len: usize,
    /// The L4 protocol (TCP or UDP).
    pub proto: u8,
    /// End of the IP packet (Ethernet padding excluded): the payload is
    /// `l4 + l4_len..end`.
    pub end: usize,
}

impl Layout {
    /// Parses the headers of an Ethernet frame (up to two VLAN tags) carrying TCP or UDP
    /// over an unfragmented IPv4 or IPv6 packet.
    pub fn parse(frame: &[u8]) -> Result<Self> {
        let l2 = L2Info::parse(frame)?;
        let l3 = l2.l3_offset;
        let ip = frame.get(l3..).ok_or(Error::Truncated)?;
        let (v6, l4, proto, end) = match l2.ethertype {
            ethertype::IPV4 => {
                let p = Ipv4Packet::new_checked(ip)?;
                if p.version() != 4 {
                    return Err(Error::Malformed);
                }
                if p.is_fragment() {
                    return Err(Error::Unsupported);
                }
                let end = l3 + usize::from(p.total_len());
                (false, l3 + usize::from(p.header_len()), p.protocol(), end)
            }
            ethertype::IPV6 => {
                let p = Ipv6Packet::new_checked(ip)?;
                if p.version() != 6 {
                    return Err(Error::Malformed);
                }
                let ext = skip_extension_headers(p.next_header(), p.payload())?;
                if ext.frag.is_some() {
                    return Err(Error::Unsupported);
                }
                let end = l3 + ipv6::HEADER_LEN + usize::from(p.payload_len());
                (true, l3 + ipv6::HEADER_LEN + ext.offset, ext.protocol, end)
            }
            _ => return Err(Error::Unsupported),
        };
        let seg = frame.get(l4..end).ok_or(Error::Truncated)?;
        let l4_len = match proto {
            ip_proto::TCP => usize::from(TcpPacket::new_checked(seg)?.header_len()),
            ip_proto::UDP if seg.len() >= udp::HEADER_LEN => udp::HEADER_LEN,
            ip_proto::UDP => return Err(Error::Truncated),
            _ => return Err(Error::Unsupported),
        };
        Ok(Self {
            l3,
            v6,
            l4,
            l4_len,
            proto,
            end,
        })
    }

    /// Whether the frame is what a super-frame of `kind` must be.
    pub fn matches(&self, kind: GsoKind) -> bool {
        match kind {
            GsoKind::TcpV4 => self.proto == ip_proto::TCP && !self.v6,
            GsoKind::TcpV6 => self.proto == ip_proto::TCP && self.v6,
            GsoKind::Udp => self.proto == ip_proto::UDP,
        }
    }

    /// Bytes of headers, Ethernet to L4 included.
    pub fn header_len(&self) -> usize {
        self.l4 + self.l4_len
    }

    /// Bytes of L4 payload.
    pub fn payload_len(&self) -> usize {
        self.end.saturating_sub(self.header_len())
    }

    /// The offset of the L4 checksum field from the L4 header.
    pub fn csum_offset(&self) -> usize {
        if self.proto == ip_proto::TCP { 16 } else { 6 }
    }

    /// The partial checksum a sender would leave on this frame.
    pub fn partial_csum(&self) -> PartialCsum {
        PartialCsum {
            start: self.l4 as u16,
            offset: self.csum_offset() as u16,
        }
    }
}

/// Unfolded sum of the pseudo-header's addresses and protocol (without the length).
fn pseudo_addrs(frame: &[u8], lay: &Layout) -> u64 {
    let (src, dst) = if lay.v6 {
        (lay.l3 + 8..lay.l3 + 24, lay.l3 + 24..lay.l3 + 40)
    } else {
        (lay.l3 + 12..lay.l3 + 16, lay.l3 + 16..lay.l3 + 20)
    };
    let acc = checksum::sum(0, frame.get(src).unwrap_or(&[]));
    checksum::sum(acc, frame.get(dst).unwrap_or(&[])) + u64::from(lay.proto)
}

/// The one's complement of a folded sum as a checksum field; 0 is sent as 0xffff (the
/// same value in one's complement, and UDP's "no checksum" otherwise).
fn field(acc: u64) -> u16 {
    match checksum::finish(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// Cuts a TCP or UDP super-frame into segments; see the module documentation.
#[derive(Debug, Clone)]
pub struct Segmenter<'a> {
    frame: &'a [u8],
    lay: Layout,
    size: usize,
    count: usize,
    next: usize,
    addrs: u64,
}

impl<'a> Segmenter<'a> {
    /// A segmenter of `frame`, a super-frame of `kind`, into segments of `size` bytes of
    /// L4 payload. A frame with no more payload than `size` gives one segment (with its
    /// checksum completed).
    pub fn new(frame: &'a [u8], kind: GsoKind, size: usize) -> Result<Self> {
        let lay = Layout::parse(frame)?;
        if !lay.matches(kind) {
            return Err(Error::Unsupported);
        }
        Self::with_layout(frame, lay, size)
    }

    /// As [`Self::new`], with the frame's layout already parsed (any TCP or UDP frame).
    pub fn with_layout(frame: &'a [u8], lay: Layout, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::Malformed);
        }
        if lay.end > frame.len() || lay.header_len() > lay.end {
            return Err(Error::Truncated);
        }
        Ok(Self {
            frame,
            lay,
            size,
            count: lay.payload_len().div_ceil(size).max(1),
            next: 0,
            addrs: pseudo_addrs(frame, &lay),
        })
    }

    /// The frame's layout.
    pub fn layout(&self) -> &Layout {
        &self.lay
    }

    /// Number of segments in all.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Segments not written yet.
    pub fn remaining(&self) -> usize {
        self.count - self.next
    }

    /// Length of the largest segment (the first).
    pub fn max_len(&self) -> usize {
        self.lay.header_len() + self.lay.payload_len().min(self.size)
    }

    /// Writes the next segment into the start of `out` and returns its length; None when
    /// every segment was written. Errors ([`Error::BufferTooSmall`]) leave the segment
    /// to write again.
    pub fn write_next(&mut self, out: &mut [u8]) -> Result<Option<usize>> {
        if self.next >= self.count {
            return Ok(None);
        }
        let lay = self.lay;
        let hdr = lay.header_len();
        let first = hdr + self.next * self.size;
        let last = (first + self.size).min(lay.end);
        let seg_len = hdr + (last - first);
        let out = out.get_mut(..seg_len).ok_or(Error::BufferTooSmall)?;
        let (h, body) = out.split_at_mut(hdr);
        h.copy_from_slice(&self.frame[..hdr]);
        body.copy_from_slice(&self.frame[first..last]);
        let i = self.next;
        let l4_seg = seg_len - lay.l4;
        let l3_len = seg_len - lay.l3;
        if lay.v6 {
            put16(out, lay.l3 + 4, (l3_len - ipv6::HEADER_LEN) as u16);
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut out[lay.l3..lay.l4]);
            ip.set_total_len(l3_len as u16);
            ip.set_ident(ip.ident().wrapping_add(i as u16));
            ip.fill_checksum();
        }
        let l4 = &mut out[lay.l4..];
        if lay.proto == ip_proto::TCP {
            let mut t = TcpPacket::new_unchecked(&mut *l4);
            let seq = t.seq_number().wrapping_add((i * self.size) as u32);
            let mut fl = t.flags();
            if i > 0 {
                fl &= !tcp::flags::CWR;
            }
            if i + 1 < self.count {
                fl &= !(tcp::flags::FIN | tcp::flags::PSH);
            }
            let hlen = t.header_len();
            t.set_header_len_and_flags(hlen, fl);
            put32(l4, 4, seq);
        } else {
            put16(l4, 4, l4_seg as u16);
        }
        let at = lay.csum_offset();
        put16(l4, at, 0);
        let acc = self.addrs + l4_seg as u64;
        let c = field(checksum::sum(acc, l4));
        put16(l4, at, c);
        self.next += 1;
        Ok(Some(seg_len))
    }

    /// Writes every remaining segment, one at a time, into `scratch` and hands each to
    /// `emit`, which returns false to stop. Returns the number of segments handed over.
    pub fn for_each(
        &mut self,
        scratch: &mut [u8],
        emit: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<usize> {
        let mut n = 0;
        while let Some(len) = self.write_next(scratch)? {
            n += 1;
            if !emit(&scratch[..len]) {
                break;
            }
        }
        Ok(n)
    }
}

/// Completes the partial checksum `c` of `frame` in place (see the module docs).
/// Errors: the field or its start lie outside the frame.
pub fn complete_checksum(frame: &mut [u8], c: PartialCsum) -> Result<()> {
    let start = usize::from(c.start);
    let at = start + usize::from(c.offset);
    if at + 2 > frame.len() {
        return Err(Error::Truncated);
    }
    let v = field(checksum::sum(0, &frame[start..]));
    put16(frame, at, v);
    Ok(())
}

/// Makes the checksum of a TCP or UDP frame partial, as its sender would have left it:
/// the pseudo-header's sum (addresses, protocol, the whole L4 length) in the L4 checksum
/// field. Returns the [`PartialCsum`] to hand over with the frame.
pub fn prepare_partial(frame: &mut [u8], lay: &Layout) -> Result<PartialCsum> {
    let at = lay.l4 + lay.csum_offset();
    if at + 2 > frame.len() || lay.end > frame.len() {
        return Err(Error::Truncated);
    }
    let len = (lay.end - lay.l4) as u64;
    let acc = pseudo_addrs(frame, lay) + (len >> 16) + (len & 0xffff);
    put16(frame, at, checksum::fold(acc));
    Ok(lay.partial_csum())
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::UdpPacket;
    use crate::wire::testutil::{ipv6_frame, ipv6_repr, pattern, tcp_frame};
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn tcp_super(v6: bool, tags: &[(u16, u16)], payload: usize, fl: u16) -> Vec<u8> {
        tcp_frame(v6, tags, payload, fl)
    }

    fn addrs(f: &[u8], l4: usize, v6: bool) -> (IpAddr, IpAddr) {
        let lay_l3 = if v6 { l4 - 40 } else { l4 - 20 };
        if v6 {
            let p = Ipv6Packet::new_unchecked(&f[lay_l3..]);
            (p.src_addr().into(), p.dst_addr().into())
        } else {
            let p = Ipv4Packet::new_unchecked(&f[lay_l3..]);
            (p.src_addr().into(), p.dst_addr().into())
        }
    }

    fn segments(f: &[u8], kind: GsoKind, size: usize) -> Vec<Vec<u8>> {
        let mut s = Segmenter::new(f, kind, size).unwrap();
        let mut out = vec![0u8; 70_000];
        let mut v = Vec::new();
        s.for_each(&mut out, &mut |seg| {
            v.push(seg.to_vec());
            true
        })
        .unwrap();
        assert_eq!(v.len(), s.count());
        v
    }

    /// Checks each segment of `f` cut at `size`: lengths, checksums, sequence numbers,
    /// IDs, flags, and that the payloads put together are the super-frame's.
    fn check_tcp(f: &[u8], segs: &[Vec<u8>], size: usize) {
        let lay = Layout::parse(f).unwrap();
        let orig = TcpPacket::new_unchecked(&f[lay.l4..lay.end]);
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let sl = Layout::parse(s).unwrap();
            assert_eq!((sl.l3, sl.l4, sl.l4_len), (lay.l3, lay.l4, lay.l4_len));
            assert_eq!(sl.end, s.len());
            assert_eq!(&s[..lay.l3], &f[..lay.l3], "L2 kept");
            let (src, dst) = addrs(s, sl.l4, sl.v6);
            let t = TcpPacket::new_checked(&s[sl.l4..]).unwrap();
            assert!(t.verify_checksum(&src, &dst), "segment {i} checksum");
            assert_eq!(
                t.seq_number(),
                orig.seq_number().wrapping_add((i * size) as u32)
            );
            assert_eq!(t.options(), orig.options());
            let last = i + 1 == segs.len();
            assert_eq!(t.cwr(), orig.cwr() && i == 0, "CWR on the first only");
            assert_eq!(t.fin(), orig.fin() && last, "FIN on the last only");
            assert_eq!(t.psh(), orig.psh() && last, "PSH on the last only");
            assert_eq!(t.ece(), orig.ece());
            assert!(t.payload().len() <= size);
            if !sl.v6 {
                let ip = Ipv4Packet::new_checked(&s[sl.l3..]).unwrap();
                assert!(ip.verify_checksum());
                let o = Ipv4Packet::new_unchecked(&f[lay.l3..]);
                assert_eq!(ip.ident(), o.ident().wrapping_add(i as u16));
                assert_eq!(ip.dont_frag(), o.dont_frag());
            }
            data.extend_from_slice(t.payload());
        }
        assert_eq!(data, &f[lay.header_len()..lay.end]);
    }

    #[test]
    fn tcp_v4_v6_and_tagged_super_frames() {
        use tcp::flags::*;
        for (v6, tags) in [
            (false, &[][..]),
            (true, &[][..]),
            (false, &[(0x8100, 7)][..]),
            (true, &[(0x88a8, 100), (0x8100, 200)][..]),
        ] {
            let kind = if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
            let f = tcp_super(v6, tags, 10_000, ACK | PSH | FIN | CWR | ECE);
            let segs = segments(&f, kind, 1448);
            assert_eq!(segs.len(), 7);
            check_tcp(&f, &segs, 1448);
            assert_eq!(segs[6].len(), f.len() - 6 * 1448);
        }
    }

    #[test]
    fn a_frame_within_one_segment_is_one_segment() {
        let f = tcp_super(false, &[], 1000, tcp::flags::ACK | tcp::flags::PSH);
        let segs = segments(&f, GsoKind::TcpV4, 1448);
        assert_eq!(segs, vec![f.clone()], "same bytes: the checksum was right");
        let empty = tcp_super(true, &[], 0, tcp::flags::ACK);
        assert_eq!(segments(&empty, GsoKind::TcpV6, 1448), vec![empty.clone()]);
    }

    #[test]
    fn udp_super_frames_become_datagrams() {
        let payload = pattern(3000);
        let mut seg = vec![0u8; 8];
        seg.extend_from_slice(&payload);
        let mut f = ipv6_frame(&[], ipv6_repr(0), &seg);
        let l4 = f.len() - seg.len();
        put16(&mut f, l4, 4444);
        put16(&mut f, l4 + 2, 53);
        put16(&mut f, l4 + 4, seg.len() as u16);
        let segs = segments(&f, GsoKind::Udp, 1200);
        assert_eq!(segs.len(), 3);
        let mut data = Vec::new();
        for s in &segs {
            let ip = Ipv6Packet::new_checked(&s[14..]).unwrap();
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(usize::from(u.len()), ip.payload().len());
            assert!(u.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
            assert_eq!((u.src_port(), u.dst_port()), (4444, 53));
            data.extend_from_slice(u.payload());
        }
        assert_eq!(data, payload);
        assert!(Segmenter::new(&f, GsoKind::TcpV6, 1200).is_err(), "not TCP");
    }

    #[test]
    fn partial_checksums_complete_and_prepare() {
        let f = tcp_super(false, &[(0x8100, 5)], 3000, tcp::flags::ACK);
        let lay = Layout::parse(&f).unwrap();
        let mut p = f.clone();
        let c = prepare_partial(&mut p, &lay).unwrap();
        assert_eq!(
            c,
            PartialCsum {
                start: 38,
                offset: 16
            }
        );
        assert_ne!(p, f);
        complete_checksum(&mut p, c).unwrap();
        assert_eq!(p, f, "prepared then completed: the original checksum");
        let c = PartialCsum {
            start: (f.len() - 1) as u16,
            offset: 0,
        };
        assert_eq!(complete_checksum(&mut p, c), Err(Error::Truncated));
    }

    #[test]
    fn refusals_are_errors() {
        let f = tcp_super(false, &[], 3000, tcp::flags::ACK);
        assert_eq!(
            Segmenter::new(&f, GsoKind::TcpV4, 0).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            Segmenter::new(&f, GsoKind::TcpV6, 100).unwrap_err(),
            Error::Unsupported
        );
        let mut frag = f.clone();
        frag[14 + 6] = 0x20; // MF
        assert_eq!(Layout::parse(&frag).unwrap_err(), Error::Unsupported);
        let mut s = Segmenter::new(&f, GsoKind::TcpV4, 1000).unwrap();
        let mut small = [0u8; 100];
        assert_eq!(s.write_next(&mut small), Err(Error::BufferTooSmall));
        assert_eq!(s.remaining(), 3, "nothing consumed");
        for n in 0..f.len().min(120) {
            assert!(Layout::parse(&f[..n]).is_err(), "prefix {n}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            size in 0usize..100,
            kind in 0u8..3,
        ) {
            let kind = [GsoKind::TcpV4, GsoKind::TcpV6, GsoKind::Udp][usize::from(kind)];
            let mut out = [0u8; 400];
            if let Ok(mut s) = Segmenter::new(&bytes, kind, size) {
                let mut n = 0;
                while let Ok(Some(_)) = s.write_next(&mut out) {
                    n += 1;
                    prop_assert!(n <= 300);
                }
            }
            let mut b = bytes.clone();
            if let Ok(lay) = Layout::parse(&b) {
                let _ = prepare_partial(&mut b, &lay);
            }
            let c = PartialCsum { start: size as u16, offset: u16::from(kind as u8) };
            let _ = complete_checksum(&mut b, c);
        }

        #[test]
        fn segments_are_right_for_any_size_and_flags(
            payload in 0usize..6000,
            size in 1usize..2000,
            fl in 0u16..0x100,
            v6 in any::<bool>(),
            tagged in any::<bool>(),
        ) {
            let tags: &[(u16, u16)] = if tagged { &[(0x8100, 9)] } else { &[] };
            let f = tcp_super(v6, tags, payload, fl | tcp::flags::ACK);
            let kind = if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
            let segs = segments(&f, kind, size);
            prop_assert_eq!(segs.len(), payload.div_ceil(size).max(1));
            check_tcp(&f, &segs, size);
        }
    }
}
