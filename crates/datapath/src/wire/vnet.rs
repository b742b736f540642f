//! The kernel's offload metadata of a frame: `struct virtio_net_hdr`, as an AF_PACKET
//! socket with `PACKET_VNET_HDR` puts it before every frame it receives and expects it
//! before every frame it sends.
//!
//! ```text
//!  0        1          2           4            6             8              10
//! +--------+----------+-----------+------------+-------------+--------------+
//! | flags  | gso_type | hdr_len   | gso_size   | csum_start  | csum_offset  |
//! +--------+----------+-----------+------------+-------------+--------------+
//! ```
//!
//! The 16-bit fields are in the host's byte order (AF_PACKET speaks legacy virtio, whose
//! byte order is the host's). What they mean, for a frame handed over with them:
//!
//! - `flags & NEEDS_CSUM`: the checksum of the bytes from `csum_start` to the end of
//!   the frame is still to be computed, and stored at `csum_start + csum_offset`; that
//!   field already holds the pseudo-header's sum (the sender's stack left it partial, the
//!   NIC would finish it). `flags & DATA_VALID`: the kernel verified the checksums.
//! - `gso_type` != NONE: the frame is a *super-frame* (up to 64 KiB) still to be cut into
//!   segments of `gso_size` bytes of L4 payload each (TSO/USO); `ECN` says the TCP
//!   header has CWR set. `hdr_len` is a hint: the bytes of headers.
//!
//! [`Offload`] is the checked form flowd carries next to each frame. Parsing refuses what
//! flowd cannot finish itself: GSO types other than TCPv4, TCPv6 and UDP (USO), a GSO
//! frame with a zero segment size. Offsets are relative to the first byte of the frame
//! (the Ethernet destination), so code that inserts or removes bytes before them must
//! move them ([`Offload::shifted`]).

use super::{Error, Result};

mod field {
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: usize = 2;
    pub const GSO_SIZE: usize = 4;
    pub const CSUM_START: usize = 6;
    pub const CSUM_OFFSET: usize = 8;
    /// In the 24-byte tunnel header: after `num_buffers` and the hash report.
    pub const OUTER_L4: usize = 20;
    pub const INNER_L3: usize = 22;
}

/// Length of `struct virtio_net_hdr`.
pub const HEADER_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM`: the outer UDP checksum is to be computed per
/// segment.
pub const F_UDP_TUNNEL_CSUM: u8 = 8;

/// Length of `struct virtio_net_hdr_v1_hash_tunnel`, the header a tun device takes for
/// UDP-tunnel segmentation (`TUNSETVNETHDRSZ`; Linux 6.17).
pub const TUNNEL_HEADER_LEN: usize = 24;

/// `VIRTIO_NET_HDR_GSO_*` values.
pub mod gso_type {
    /// Not a GSO frame.
    pub const NONE: u8 = 0;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 1;
    /// UDP fragmentation offload (legacy UFO).
    pub const UDP: u8 = 3;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 4;
    /// UDP segmentation offload (USO), IPv4 or IPv6.
    pub const UDP_L4: u8 = 5;
    /// The segments are inside a UDP tunnel over IPv4 (a flag on top of the type).
    pub const UDP_TUNNEL_IPV4: u8 = 0x20;
    /// The segments are inside a UDP tunnel over IPv6.
    pub const UDP_TUNNEL_IPV6: u8 = 0x40;
    /// The TCP header has CWR set (a flag on top of the type).
    pub const ECN: u8 = 0x80;
}

/// A zero-copy view of a `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VnetHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking it holds the 10-byte header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Ensures every accessor is in bounds.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    fn ne16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The GSO type byte ([`gso_type`]).
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }

    /// Bytes of headers (a hint).
    pub fn hdr_len(&self) -> u16 {
        self.ne16(field::HDR_LEN)
    }

    /// L4 payload bytes per segment.
    pub fn gso_size(&self) -> u16 {
        self.ne16(field::GSO_SIZE)
    }

    /// Where the partial checksum's coverage starts.
    pub fn csum_start(&self) -> u16 {
        self.ne16(field::CSUM_START)
    }

    /// Where the checksum field lies, from `csum_start`.
    pub fn csum_offset(&self) -> u16 {
        self.ne16(field::CSUM_OFFSET)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VnetHeader<T> {
    fn put_ne16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_ne_bytes());
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the GSO type byte.
    pub fn set_gso_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::GSO_TYPE] = v;
    }

    /// Sets the header length hint.
    pub fn set_hdr_len(&mut self, v: u16) {
        self.put_ne16(field::HDR_LEN, v);
    }

    /// Sets the segment size.
    pub fn set_gso_size(&mut self, v: u16) {
        self.put_ne16(field::GSO_SIZE, v);
    }

    /// Sets the checksum start.
    pub fn set_csum_start(&mut self, v: u16) {
        self.put_ne16(field::CSUM_START, v);
    }

    /// Sets the checksum field's offset from the start.
    pub fn set_csum_offset(&mut self, v: u16) {
        self.put_ne16(field::CSUM_OFFSET, v);
    }
}

/// A checksum the sender left partial: the bytes from `start` to the end of the frame
/// are to be summed, the result stored at `start + offset` (which holds the
/// pseudo-header's sum meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartialCsum {
    /// First byte covered (from the start of the frame): the L4 header.
    pub start: u16,
    /// Offset of the checksum field from `start` (16 for TCP, 6 for UDP).
    pub offset: u16,
}

/// What a super-frame's segments are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GsoKind {
    /// TCP over IPv4 (TSO).
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP datagrams over IPv4 or IPv6 (USO): each segment its own datagram.
    Udp,
}

/// Segmentation a super-frame still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gso {
    /// What to cut.
    pub kind: GsoKind,
    /// L4 payload bytes per segment (the last one may be shorter); never 0.
    pub size: u16,
    /// The TCP header has CWR set (`VIRTIO_NET_HDR_GSO_ECN`).
    pub ecn: bool,
    /// The segments are inside a UDP tunnel (VXLAN): the frame is the outer headers and
    /// an inner super-frame, cut by the kernel's UDP-tunnel segmentation. Only flowd's
    /// own VXLAN output makes such a frame, for a port that takes it
    /// ([`crate::port::Port::tunnel_segmentation`]); the kernel never reports one
    /// through AF_PACKET, and a 10-byte header cannot carry it ([`Offload::emit`]
    /// writes the inner type alone).
    pub tunnel: Option<TunnelGso>,
}

/// Where a UDP tunnel's headers lie in a frame whose inner super-frame is to be cut
/// (`VIRTIO_NET_HDR_GSO_UDP_TUNNEL_*`, Linux 6.17's tun): each segment gets the outer
/// headers again, the outer IPv4 identification and UDP length set per segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelGso {
    /// Offset of the outer UDP header.
    pub outer_l4: u16,
    /// Offset of the inner IP header.
    pub inner_l3: u16,
    /// The outer IP header is IPv6.
    pub outer_v6: bool,
    /// Each segment's outer UDP checksum is computed (the frame's holds the
    /// pseudo-header's sum); else it is left 0.
    pub outer_csum: bool,
}

/// A frame's offload metadata, checked: what is left to do before it is a frame a wire
/// would carry. The default is nothing (a complete frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Offload {
    /// A checksum to complete.
    pub csum: Option<PartialCsum>,
    /// The kernel verified the frame's checksums (only meaningful without `csum`).
    pub csum_valid: bool,
    /// Segmentation to do.
    pub gso: Option<Gso>,
    /// Bytes of headers, a hint for the kernel (0: none given).
    pub hdr_len: u16,
}

impl Offload {
    /// A complete frame: nothing to do.
    pub const NONE: Offload = Offload {
        csum: None,
        csum_valid: false,
        gso: None,
        hdr_len: 0,
    };

    /// Parses a header. Errors: [`Error::Unsupported`] for a GSO type flowd cannot
    /// segment (UFO, anything unknown), [`Error::Malformed`] for a GSO frame with a zero
    /// segment size or unknown flag bits.
    pub fn parse<T: AsRef<[u8]>>(h: &VnetHeader<T>) -> Result<Self> {
        h.check_len()?;
        let flags = h.flags();
        if flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
            return Err(Error::Malformed);
        }
        let csum = (flags & F_NEEDS_CSUM != 0).then(|| PartialCsum {
            start: h.csum_start(),
            offset: h.csum_offset(),
        });
        let t = h.gso_type();
        let kind = match t & !gso_type::ECN {
            gso_type::NONE => None,
            gso_type::TCPV4 => Some(GsoKind::TcpV4),
            gso_type::TCPV6 => Some(GsoKind::TcpV6),
            gso_type::UDP_L4 => Some(GsoKind::Udp),
            _ => return Err(Error::Unsupported),
        };
        let gso = match kind {
            None if t & gso_type::ECN != 0 => return Err(Error::Malformed),
            None => None,
            Some(_) if h.gso_size() == 0 => return Err(Error::Malformed),
            Some(kind) => Some(Gso {
                kind,
                size: h.gso_size(),
                ecn: t & gso_type::ECN != 0,
                tunnel: None,
            }),
        };
        // Normalized: "valid" only says something without a checksum to complete, and
        // the header length hint only for a super-frame.
        Ok(Self {
            csum_valid: csum.is_none() && flags & F_DATA_VALID != 0,
            hdr_len: if gso.is_some() { h.hdr_len() } else { 0 },
            csum,
            gso,
        })
    }

    /// Bytes written by [`Self::emit`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (all 10 bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut VnetHeader<T>) {
        let mut flags = 0;
        if self.csum.is_some() {
            flags |= F_NEEDS_CSUM;
        } else if self.csum_valid {
            flags |= F_DATA_VALID;
        }
        h.set_flags(flags);
        let (t, size) = match self.gso {
            None => (gso_type::NONE, 0),
            Some(g) => {
                let t = match g.kind {
                    GsoKind::TcpV4 => gso_type::TCPV4,
                    GsoKind::TcpV6 => gso_type::TCPV6,
                    GsoKind::Udp => gso_type::UDP_L4,
                };
                (if g.ecn { t | gso_type::ECN } else { t }, g.size)
            }
        };
        h.set_gso_type(t);
        h.set_gso_size(size);
        h.set_hdr_len(if self.gso.is_some() { self.hdr_len } else { 0 });
        let c = self.csum.unwrap_or(PartialCsum {
            start: 0,
            offset: 0,
        });
        h.set_csum_start(c.start);
        h.set_csum_offset(c.offset);
    }

    /// The header's 10 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut VnetHeader::new_unchecked(&mut b[..]));
        b
    }

    /// The 24-byte header a tun device with `TUNSETVNETHDRSZ` 24 takes
    /// (`struct virtio_net_hdr_v1_hash_tunnel`, little-endian: the tunnel fields are
    /// little-endian whatever the device's byte order, the rest follows
    /// `TUNSETVNETLE`): the 10-byte header's fields, with a [`TunnelGso`]'s type bits,
    /// flag and offsets where the segmentation is in a tunnel.
    pub fn to_tunnel_bytes(&self) -> [u8; TUNNEL_HEADER_LEN] {
        let mut b = [0u8; TUNNEL_HEADER_LEN];
        let base = self.to_bytes();
        b[0] = base[field::FLAGS];
        b[1] = base[field::GSO_TYPE];
        let le = |v: u16| v.to_le_bytes();
        let ne = |at: usize| u16::from_ne_bytes([base[at], base[at + 1]]);
        for at in [
            field::HDR_LEN,
            field::GSO_SIZE,
            field::CSUM_START,
            field::CSUM_OFFSET,
        ] {
            b[at..at + 2].copy_from_slice(&le(ne(at)));
        }
        if let Some(t) = self.gso.and_then(|g| g.tunnel) {
            b[1] |= if t.outer_v6 {
                gso_type::UDP_TUNNEL_IPV6
            } else {
                gso_type::UDP_TUNNEL_IPV4
            };
            if t.outer_csum {
                b[0] |= F_UDP_TUNNEL_CSUM;
            }
            b[field::OUTER_L4..field::OUTER_L4 + 2].copy_from_slice(&le(t.outer_l4));
            b[field::INNER_L3..field::INNER_L3 + 2].copy_from_slice(&le(t.inner_l3));
        }
        b
    }

    /// Whether nothing is left to do: no checksum to complete, no segmentation.
    pub fn is_complete(&self) -> bool {
        self.csum.is_none() && self.gso.is_none()
    }

    /// The metadata of the same frame after `delta` bytes were inserted (positive) or
    /// removed (negative) at byte `at`: offsets past `at` move. None if a removal would
    /// take bytes the offsets point into (the metadata no longer describes the frame).
    pub fn shifted(&self, at: usize, delta: isize) -> Option<Offload> {
        let mv = |v: u16| -> Option<u16> {
            if usize::from(v) < at {
                return Some(v);
            }
            let n = usize::from(v).checked_add_signed(delta)?;
            if delta < 0 && n < at {
                return None;
            }
            u16::try_from(n).ok()
        };
        let csum = match self.csum {
            Some(c) => Some(PartialCsum {
                start: mv(c.start)?,
                offset: c.offset,
            }),
            None => None,
        };
        let gso = match self.gso {
            Some(g) => Some(Gso {
                tunnel: match g.tunnel {
                    Some(t) => Some(TunnelGso {
                        outer_l4: mv(t.outer_l4)?,
                        inner_l3: mv(t.inner_l3)?,
                        ..t
                    }),
                    None => None,
                },
                ..g
            }),
            None => None,
        };
        Some(Offload {
            csum,
            gso,
            hdr_len: if self.hdr_len == 0 {
                0
            } else {
                mv(self.hdr_len).unwrap_or(0)
            },
            ..*self
        })
    }

    /// How many wire packets the frame of `len` bytes stands for: its segments for a
    /// super-frame (estimated from the header length hint), else 1.
    pub fn packets(&self, len: usize) -> u64 {
        match self.gso {
            Some(g) => {
                let payload = len.saturating_sub(usize::from(self.hdr_len));
                payload.div_ceil(usize::from(g.size)).max(1) as u64
            }
            None => 1,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn hdr(flags: u8, t: u8, hdr_len: u16, size: u16, start: u16, off: u16) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[0] = flags;
        b[1] = t;
        b[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&size.to_ne_bytes());
        b[6..8].copy_from_slice(&start.to_ne_bytes());
        b[8..10].copy_from_slice(&off.to_ne_bytes());
        b
    }

    #[test]
    fn parse_what_the_kernel_hands_over() {
        // A TSO super-frame from a veth (Linux 6.18): NEEDS_CSUM, TCPV4, hdr_len 66,
        // gso_size 1448, csum_start 34, csum_offset 16.
        let b = hdr(1, 1, 66, 1448, 34, 16);
        let o = Offload::parse(&VnetHeader::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(
            o,
            Offload {
                csum: Some(PartialCsum {
                    start: 34,
                    offset: 16
                }),
                csum_valid: false,
                gso: Some(Gso {
                    kind: GsoKind::TcpV4,
                    size: 1448,
                    ecn: false,
                    tunnel: None,
                }),
                hdr_len: 66,
            }
        );
        assert_eq!(o.to_bytes(), b);
        assert_eq!(o.packets(66 + 1448 * 3 + 1), 4);
        // A plain frame, a verified one, a partial checksum alone.
        let none = Offload::parse(&VnetHeader::new_checked(&[0u8; 10][..]).unwrap()).unwrap();
        assert_eq!(none, Offload::NONE);
        assert!(none.is_complete());
        assert_eq!(none.packets(60), 1);
        let valid = Offload::parse(&VnetHeader::new_unchecked(&hdr(2, 0, 0, 0, 0, 0)[..]));
        assert!(valid.unwrap().csum_valid);
        let part = hdr(1, 0, 0, 0, 34, 6);
        let p = Offload::parse(&VnetHeader::new_unchecked(&part[..])).unwrap();
        assert!(!p.is_complete() && p.gso.is_none());
        assert_eq!(p.to_bytes(), part);
    }

    /// The 24-byte tun header: the 10-byte fields little-endian at their places, then
    /// `num_buffers` and the hash report zero, the tunnel's offsets at 20 and 22, its
    /// type bits on top of the inner type and its checksum flag beside NEEDS_CSUM.
    #[test]
    fn the_tunnel_header_is_laid_out_as_tun_reads_it() {
        let inner = Offload {
            csum: Some(PartialCsum {
                start: 84,
                offset: 16,
            }),
            csum_valid: false,
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                size: 1398,
                ecn: true,
                tunnel: None,
            }),
            hdr_len: 116,
        };
        let plain = inner.to_tunnel_bytes();
        assert_eq!(
            &plain[..2],
            &[F_NEEDS_CSUM, gso_type::TCPV4 | gso_type::ECN]
        );
        assert_eq!(plain[2..4], 116u16.to_le_bytes());
        assert_eq!(plain[4..6], 1398u16.to_le_bytes());
        assert_eq!(plain[6..8], 84u16.to_le_bytes());
        assert_eq!(plain[8..10], 16u16.to_le_bytes());
        assert_eq!(plain[10..], [0u8; 14]);
        for (v6, csum) in [(false, false), (true, true)] {
            let t = TunnelGso {
                outer_l4: 34,
                inner_l3: 64,
                outer_v6: v6,
                outer_csum: csum,
            };
            let mut o = inner;
            o.gso = o.gso.map(|g| Gso {
                tunnel: Some(t),
                ..g
            });
            let b = o.to_tunnel_bytes();
            let bits = if v6 {
                gso_type::UDP_TUNNEL_IPV6
            } else {
                gso_type::UDP_TUNNEL_IPV4
            };
            assert_eq!(b[1], gso_type::TCPV4 | gso_type::ECN | bits);
            assert_eq!(b[0] & F_UDP_TUNNEL_CSUM != 0, csum);
            assert_eq!(b[20..22], 34u16.to_le_bytes());
            assert_eq!(b[22..24], 64u16.to_le_bytes());
            assert_eq!(b[2..20], plain[2..20]);
            // The 10-byte header cannot say "tunnel": the inner type alone.
            assert_eq!(o.to_bytes(), inner.to_bytes());
            // Offsets move with bytes inserted before them.
            let moved = o.shifted(0, 4).unwrap().gso.unwrap().tunnel.unwrap();
            assert_eq!((moved.outer_l4, moved.inner_l3), (38, 68));
        }
    }

    #[test]
    fn refusals() {
        let parse = |b: [u8; 10]| Offload::parse(&VnetHeader::new_unchecked(&b[..]));
        assert_eq!(
            parse(hdr(0, 3, 0, 1400, 0, 0)),
            Err(Error::Unsupported),
            "UFO"
        );
        assert_eq!(parse(hdr(0, 0x21, 0, 1400, 0, 0)), Err(Error::Unsupported));
        assert_eq!(
            parse(hdr(0, 1, 0, 0, 0, 0)),
            Err(Error::Malformed),
            "size 0"
        );
        assert_eq!(parse(hdr(0, 0x80, 0, 0, 0, 0)), Err(Error::Malformed));
        assert_eq!(parse(hdr(8, 0, 0, 0, 0, 0)), Err(Error::Malformed));
        assert_eq!(
            VnetHeader::new_checked(&[0u8; 9][..]).unwrap_err(),
            Error::Truncated
        );
        let ecn = parse(hdr(1, 0x84, 74, 1428, 54, 16)).unwrap();
        assert_eq!(
            ecn.gso,
            Some(Gso {
                kind: GsoKind::TcpV6,
                size: 1428,
                ecn: true,
                tunnel: None,
            })
        );
    }

    #[test]
    fn shifting_follows_inserted_and_removed_bytes() {
        let o = Offload {
            csum: Some(PartialCsum {
                start: 34,
                offset: 16,
            }),
            hdr_len: 66,
            ..Offload::NONE
        };
        // A VLAN tag inserted at 12, then removed.
        let tagged = o.shifted(12, 4).unwrap();
        assert_eq!(tagged.csum.unwrap().start, 38);
        assert_eq!(tagged.hdr_len, 70);
        assert_eq!(tagged.shifted(12, -4), Some(o));
        // Decapsulation: 50 bytes of outer headers go.
        let outer = o.shifted(0, 50).unwrap();
        assert_eq!(outer.shifted(0, -50), Some(o));
        // Removing bytes the checksum starts in: the metadata is lost.
        assert_eq!(o.shifted(0, -40), None);
        assert_eq!(Offload::NONE.shifted(0, -50), Some(Offload::NONE));
    }

    proptest! {
        #[test]
        fn random_headers_never_panic_and_round_trip(b in proptest::array::uniform10(any::<u8>())) {
            if let Ok(o) = Offload::parse(&VnetHeader::new_unchecked(&b[..])) {
                let again = Offload::parse(&VnetHeader::new_unchecked(&o.to_bytes()[..]));
                prop_assert_eq!(again, Ok(o));
                let _ = o.shifted(usize::from(b[0]), isize::from(b[1] as i8));
                let _ = o.packets(usize::from(b[2]) * 300);
            }
        }
    }
}
