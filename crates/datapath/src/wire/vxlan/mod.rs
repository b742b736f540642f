//! VXLAN (RFC 7348): the 8-byte header, and encapsulation/decapsulation of whole frames.
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`encapsulate`] writes outer Ethernet + IPv4/IPv6 + UDP + VXLAN in front of an inner
//! frame into a caller-owned buffer; [`decapsulate`] recognises such a frame and returns
//! the outer metadata and where the inner frame lies, without copying. Neither
//! allocates.

use super::checksum;
use super::ethernet::{self, EthernetFrame, EthernetRepr, ethertype};
use super::ipv4::{self, Ipv4Packet, Ipv4Repr};
use super::ipv6::{self, Ipv6Packet, Ipv6Repr, skip_extension_headers};
use super::udp::{self, UdpPacket, UdpRepr};
use super::vnet::PartialCsum;
use super::{Error, Result, be32, ip_proto, put32};
use std::net::IpAddr;

mod field {
    pub const FLAGS: usize = 0;
    pub const VNI: usize = 4;
    pub const PAYLOAD: usize = 8;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// The I flag: the VNI is valid. Must be set (RFC 7348 section 5).
pub const FLAG_I: u8 = 0x08;

/// The IANA-assigned VXLAN UDP port.
pub const IANA_PORT: u16 = 4789;

/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// Bytes VXLAN over IPv4 adds: 14 Ethernet + 20 IPv4 + 8 UDP + 8 VXLAN.
pub const VXLAN_OVERHEAD_V4: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + UDP_VXLAN;
/// Bytes VXLAN over IPv6 adds: 14 Ethernet + 40 IPv6 + 8 UDP + 8 VXLAN.
pub const VXLAN_OVERHEAD_V6: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + UDP_VXLAN;

const UDP_VXLAN: usize = udp::HEADER_LEN + HEADER_LEN;

const _: () = assert!(VXLAN_OVERHEAD_V4 == 50 && VXLAN_OVERHEAD_V6 == 70);

/// A zero-copy view of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking it holds the 8-byte header.
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

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag (valid VNI) is set.
    pub fn i_flag(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VNI) >> 8
    }

    /// The inner frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    /// Sets the flags byte and zeroes the 24 reserved bits after it.
    pub fn set_flags(&mut self, v: u8) {
        put32(self.buffer.as_mut(), field::FLAGS, u32::from(v) << 24);
    }

    /// Sets the VNI (low 24 bits of `vni`) and zeroes the reserved byte after it.
    pub fn set_vni(&mut self, vni: u32) {
        put32(self.buffer.as_mut(), field::VNI, (vni & MAX_VNI) << 8);
    }
}

/// A VXLAN header with the I flag set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VxlanRepr {
    /// The VNI (24 bits).
    pub vni: u32,
}

impl VxlanRepr {
    /// Parses a header; a clear I flag is [`Error::Malformed`]. Reserved bits are ignored
    /// on receipt, as RFC 7348 requires.
    pub fn parse<T: AsRef<[u8]>>(h: &VxlanHeader<T>) -> Result<Self> {
        h.check_len()?;
        if !h.i_flag() {
            return Err(Error::Malformed);
        }
        Ok(Self { vni: h.vni() })
    }

    /// Bytes written by [`emit`](Self::emit).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (I flag, VNI, reserved bits zero).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut VxlanHeader<T>) {
        h.set_flags(FLAG_I);
        h.set_vni(self.vni);
    }
}

/// Outer headers for [`encapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OuterHeaders {
    /// Outer Ethernet source (the uplink's MAC).
    pub src_mac: [u8; 6],
    /// Outer Ethernet destination (the next hop's MAC).
    pub dst_mac: [u8; 6],
    /// Outer source IP (local VTEP). Same family as `dst_ip`.
    pub src_ip: IpAddr,
    /// Outer destination IP (remote VTEP).
    pub dst_ip: IpAddr,
    /// Outer TOS / traffic class.
    pub tos: u8,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Set DF on the outer IPv4 header (ignored for IPv6, which never fragments en route).
    pub df: bool,
    /// The outer IPv4 identification (ignored for IPv6). RFC 6864: a datagram without
    /// DF may be fragmented on the way, so its ID must not repeat while fragments of an
    /// earlier one with the same addresses and protocol may still be in flight: the
    /// caller counts (the executor keeps a counter); with DF (an atomic datagram) any
    /// value is fine.
    pub ident: u16,
    /// Outer UDP source port (see [`source_port`]).
    pub udp_src: u16,
    /// Outer UDP destination port (usually [`IANA_PORT`]).
    pub udp_dst: u16,
    /// VNI (24 bits).
    pub vni: u32,
    /// Compute the outer UDP checksum over IPv4 (always computed over IPv6).
    pub udp_csum: bool,
}

/// The outer UDP source port for an inner flow hash: RFC 7348 section 5 recommends a
/// hash of the inner headers, in the dynamic range 49152..=65535, so that ECMP and RSS
/// spread flows while each flow keeps one path. The high bits of `hash` choose the port
/// (Linux's `udp_flow_src_port` does the same); any well-mixed 32-bit hash works, e.g.
/// `FlowKey::flow_hash`.
pub const fn source_port(hash: u32) -> u16 {
    const MIN: u32 = 49152;
    const SPAN: u64 = 65536 - MIN as u64;
    (MIN + ((hash as u64 * SPAN) >> 32) as u32) as u16
}

/// Writes `outer` headers followed by `inner_frame` into `out`, returning the number of
/// bytes written (`VXLAN_OVERHEAD_V4/V6 + inner_frame.len()`).
///
/// The IPv4 header checksum is always filled; the UDP checksum when `outer.udp_csum`, and
/// always over IPv6 (a zero UDP checksum over IPv6 needs the RFC 6935/6936 exceptions on
/// the receiver; computing it is always safe). The IPv4 identification is
/// `outer.ident`.
///
/// Errors: [`Error::BufferTooSmall`] if `out` is too short, [`Error::TooLarge`] if the
/// lengths overflow their 16-bit fields, [`Error::Malformed`] if the IPs are of
/// different families or the VNI exceeds 24 bits.
pub fn encapsulate(inner_frame: &[u8], outer: &OuterHeaders, out: &mut [u8]) -> Result<usize> {
    encapsulate_completing(inner_frame, None, outer, out)
}

/// As [`encapsulate`], completing the inner frame's partial checksum `inner_csum` (see
/// [`super::gso::complete_checksum`]) in the copy, before the outer UDP checksum covers
/// it.
pub fn encapsulate_completing(
    inner_frame: &[u8],
    inner_csum: Option<PartialCsum>,
    outer: &OuterHeaders,
    out: &mut [u8],
) -> Result<usize> {
    let overhead = overhead(outer)?;
    let inner_out = out
        .get_mut(overhead..overhead + inner_frame.len())
        .ok_or(Error::BufferTooSmall)?;
    inner_out.copy_from_slice(inner_frame);
    if let Some(c) = inner_csum {
        super::gso::complete_checksum(inner_out, c)?;
    }
    encapsulate_in_place(out, inner_frame.len(), outer)
}

/// The outer headers' length for `outer` (50 over IPv4, 70 over IPv6). Errors as
/// [`encapsulate`]'s for mixed families or a VNI too large.
pub fn overhead(outer: &OuterHeaders) -> Result<usize> {
    if outer.vni > MAX_VNI {
        return Err(Error::Malformed);
    }
    match (outer.src_ip, outer.dst_ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Ok(VXLAN_OVERHEAD_V4),
        (IpAddr::V6(_), IpAddr::V6(_)) => Ok(VXLAN_OVERHEAD_V6),
        _ => Err(Error::Malformed),
    }
}

/// Writes `outer` headers in front of an inner frame of `inner_len` bytes already in
/// place at `out[overhead(outer)..]` (e.g. a segment written there by
/// [`super::gso::Segmenter`]), returning the whole frame's length. Errors as
/// [`encapsulate`]'s.
pub fn encapsulate_in_place(
    out: &mut [u8],
    inner_len: usize,
    outer: &OuterHeaders,
) -> Result<usize> {
    let csum = if outer_udp_csum(outer) {
        OuterCsum::Full
    } else {
        OuterCsum::Zero
    };
    write_outer(out, inner_len, outer, csum)
}

/// Writes `outer` headers for a datagram the kernel (or the NIC) will cut into VXLAN
/// packets (UDP segmentation, `VIRTIO_NET_HDR_GSO_UDP_L4`): `out[overhead(outer)..]`
/// already holds `inner_len` bytes, an inner frame followed by whole units of VXLAN
/// header + inner frame, each unit (the first counting this function's VXLAN header)
/// the segment size but the last. The lengths cover the whole datagram; the UDP
/// checksum field holds the pseudo-header's sum (partial: each segment's is completed
/// after the cut, so an outer checksum is always sent, whatever `outer.udp_csum` says).
/// Returns the frame's length and the partial checksum to hand over with it. Errors as
/// [`encapsulate`]'s.
pub fn encapsulate_for_segmentation(
    out: &mut [u8],
    inner_len: usize,
    outer: &OuterHeaders,
) -> Result<(usize, PartialCsum)> {
    let n = write_outer(out, inner_len, outer, OuterCsum::Partial)?;
    let start = (overhead(outer)? - UDP_VXLAN) as u16;
    Ok((n, PartialCsum { start, offset: 6 }))
}

/// Writes the outer headers of `outer` into `headers` (at least [`overhead`] bytes; the
/// inner super-frame of `inner_len` bytes follows them, there or in a buffer of its own)
/// for the kernel's UDP-tunnel segmentation to cut (see [`super::vnet::TunnelGso`]): the
/// lengths cover the whole frame (each segment's are set after the cut), and the outer
/// UDP checksum is the pseudo-header's sum where one is to be computed per segment
/// ([`outer_udp_csum`]), else 0. Returns the headers' length. Errors as
/// [`encapsulate`]'s.
pub fn tunnel_segmentation_headers(
    headers: &mut [u8],
    inner_len: usize,
    outer: &OuterHeaders,
) -> Result<usize> {
    let overhead = overhead(outer)?;
    let h = headers.get_mut(..overhead).ok_or(Error::BufferTooSmall)?;
    let (udp_start, udp_len) = emit_outer(h, inner_len, outer)?;
    if outer_udp_csum(outer) {
        set_outer_csum(&mut h[udp_start..], udp_len, outer, OuterCsum::Partial);
    }
    Ok(overhead)
}

/// Whether packets on `outer`'s path carry an outer UDP checksum: where `outer.udp_csum`
/// asks for one, and always over IPv6.
pub fn outer_udp_csum(outer: &OuterHeaders) -> bool {
    outer.udp_csum || matches!(outer.dst_ip, IpAddr::V6(_))
}

/// Writes a VXLAN header for `vni` at the start of `out` (a unit of a datagram built
/// for [`encapsulate_for_segmentation`]). Errors: `out` shorter than a header, a VNI
/// of more than 24 bits.
pub fn emit_header(out: &mut [u8], vni: u32) -> Result<()> {
    if vni > MAX_VNI {
        return Err(Error::Malformed);
    }
    let h = out.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
    VxlanRepr { vni }.emit(&mut VxlanHeader::new_unchecked(h));
    Ok(())
}

/// What the outer UDP checksum field gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OuterCsum {
    Full,
    Zero,
    /// The pseudo-header's sum, for whoever completes it.
    Partial,
}

/// Writes the outer Ethernet, IP, UDP and VXLAN headers of `outer` into `out` before
/// `inner_len` bytes of inner frame, the outer UDP checksum as `csum` says; the total.
fn write_outer(
    out: &mut [u8],
    inner_len: usize,
    outer: &OuterHeaders,
    csum: OuterCsum,
) -> Result<usize> {
    let overhead = overhead(outer)?;
    let total = overhead + inner_len;
    let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    let (udp_start, udp_len) = emit_outer(&mut out[..overhead], inner_len, outer)?;
    set_outer_csum(&mut out[udp_start..], udp_len, outer, csum);
    Ok(total)
}

/// Writes the outer headers of `outer` for `inner_len` bytes of inner frame into
/// `headers` (exactly [`overhead`] bytes), the UDP checksum 0; where the UDP header
/// starts and the UDP length.
fn emit_outer(
    headers: &mut [u8],
    inner_len: usize,
    outer: &OuterHeaders,
) -> Result<(usize, usize)> {
    let overhead = headers.len();
    let v6 = overhead == VXLAN_OVERHEAD_V6;
    let l3_len = overhead - ethernet::HEADER_LEN;
    let udp_len = inner_len + UDP_VXLAN;
    // The IPv4 total length covers the IP header too; IPv6's payload length does not.
    let limit = if v6 { udp_len } else { l3_len + inner_len };
    let ip_len = u16::try_from(limit).map_err(|_| Error::TooLarge)?;

    let (eth_buf, l3_buf) = headers.split_at_mut(ethernet::HEADER_LEN);
    EthernetRepr {
        src_addr: outer.src_mac,
        dst_addr: outer.dst_mac,
        ethertype: if v6 { ethertype::IPV6 } else { ethertype::IPV4 },
    }
    .emit(&mut EthernetFrame::new_unchecked(eth_buf));

    let ip_hdr_len = if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    let (ip_buf, udp_vx_buf) = l3_buf.split_at_mut(ip_hdr_len);
    emit_outer_ip(ip_buf, outer, ip_len)?;

    let (udp_buf, vx_buf) = udp_vx_buf.split_at_mut(udp::HEADER_LEN);
    VxlanRepr { vni: outer.vni }.emit(&mut VxlanHeader::new_unchecked(vx_buf));
    UdpRepr {
        src_port: outer.udp_src,
        dst_port: outer.udp_dst,
    }
    .emit(
        &mut UdpPacket::new_unchecked(udp_buf),
        udp_len - udp::HEADER_LEN,
        None,
    )?;
    Ok((ethernet::HEADER_LEN + ip_hdr_len, udp_len))
}

/// Writes the outer IPv4 or IPv6 header of `outer` into `ip_buf` (exactly the header),
/// with `ip_len` as its total (IPv4) or payload (IPv6) length.
#[inline]
fn emit_outer_ip(ip_buf: &mut [u8], outer: &OuterHeaders, ip_len: u16) -> Result<()> {
    match (outer.src_ip, outer.dst_ip) {
        (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
            let repr = Ipv4Repr {
                src_addr,
                dst_addr,
                protocol: ip_proto::UDP,
                payload_len: ip_len - ipv4::HEADER_LEN as u16,
                ttl: outer.ttl,
                tos: outer.tos,
                ident: outer.ident,
                dont_frag: outer.df,
                more_frags: false,
                frag_offset: 0,
            };
            // The view covers only the header: emit reads nothing past it.
            repr.emit(&mut Ipv4Packet::new_unchecked(ip_buf))?;
        }
        (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => Ipv6Repr {
            src_addr,
            dst_addr,
            next_header: ip_proto::UDP,
            payload_len: ip_len,
            hop_limit: outer.ttl,
            traffic_class: outer.tos,
            flow_label: 0,
        }
        .emit(&mut Ipv6Packet::new_unchecked(ip_buf)),
        _ => return Err(Error::Malformed),
    }
    Ok(())
}

/// Fills the outer UDP checksum of the datagram `udp` (`udp_len` bytes from its header
/// on) as `csum` says.
#[inline]
fn set_outer_csum(udp: &mut [u8], udp_len: usize, outer: &OuterHeaders, csum: OuterCsum) {
    match csum {
        OuterCsum::Zero => {}
        OuterCsum::Full => {
            UdpPacket::new_unchecked(udp).fill_checksum(&outer.src_ip, &outer.dst_ip);
        }
        OuterCsum::Partial => {
            let acc = checksum::pseudo_header(
                &outer.src_ip,
                &outer.dst_ip,
                ip_proto::UDP,
                udp_len as u32,
            );
            let sum = checksum::fold(acc);
            UdpPacket::new_unchecked(udp).set_checksum(sum);
        }
    }
}

/// What [`decapsulate`] found in a VXLAN frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decap {
    /// Outer source IP (remote VTEP).
    pub src: IpAddr,
    /// Outer destination IP (local VTEP).
    pub dst: IpAddr,
    /// Outer TOS / traffic class.
    pub tos: u8,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Outer IPv4 DF flag (false over IPv6).
    pub df: bool,
    /// Outer UDP source port.
    pub udp_src: u16,
    /// Outer UDP destination port.
    pub udp_dst: u16,
    /// Whether the outer UDP checksum was non-zero.
    pub udp_csum: bool,
    /// The VNI.
    pub vni: u32,
    /// Offset of the inner Ethernet frame in the outer frame.
    pub inner_offset: usize,
    /// Length of the inner Ethernet frame.
    pub inner_len: usize,
}

impl Decap {
    /// The inner frame's byte range in the outer frame.
    pub fn inner_range(&self) -> core::ops::Range<usize> {
        self.inner_offset..self.inner_offset.saturating_add(self.inner_len)
    }

    /// The inner frame, sliced from the outer `frame` this was decapsulated from (empty if
    /// given another, shorter frame).
    pub fn inner<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame.get(self.inner_range()).unwrap_or(&[])
    }
}

/// Recognises a VXLAN frame: plain Ethernet (no VLAN tag: uplink tags are stripped
/// before flowd sees the frame), IPv4 (options allowed, header checksum verified) or
/// IPv6 (extension headers skipped), not fragmented, UDP to `vxlan_port`, VXLAN with the
/// I flag.
///
/// Returns `Ok(None)` for a well-formed frame that is not VXLAN (other ethertype or
/// protocol, other port, a fragment). Returns an error when the headers on the way are
/// truncated or malformed, the IPv4 header checksum fails, the VXLAN I flag is clear, or
/// the inner frame is shorter than an Ethernet header. The outer UDP checksum is not
/// verified (the NIC does it with RX checksum offload; [`UdpPacket::verify_checksum`]
/// is there for callers that need it).
pub fn decapsulate(frame: &[u8], vxlan_port: u16) -> Result<Option<Decap>> {
    let eth = EthernetFrame::new_checked(frame)?;
    let outer = match eth.ethertype() {
        ethertype::IPV4 => outer_ipv4(eth.payload())?,
        ethertype::IPV6 => outer_ipv6(eth.payload())?,
        _ => None,
    };
    let Some((mut d, l4_range)) = outer else {
        return Ok(None);
    };
    let udp_offset = l4_range.start;
    let l4 = eth.payload().get(l4_range).ok_or(Error::Truncated)?;
    let udp = UdpPacket::new_checked(l4)?;
    if udp.dst_port() != vxlan_port {
        return Ok(None);
    }
    let vx = VxlanRepr::parse(&VxlanHeader::new_checked(udp.payload())?)?;
    let inner_len = usize::from(udp.len()) - UDP_VXLAN.min(usize::from(udp.len()));
    if inner_len < ethernet::HEADER_LEN {
        return Err(Error::Truncated);
    }
    d.udp_src = udp.src_port();
    d.udp_dst = udp.dst_port();
    d.udp_csum = udp.checksum() != 0;
    d.vni = vx.vni;
    d.inner_offset = ethernet::HEADER_LEN + udp_offset + UDP_VXLAN;
    d.inner_len = inner_len;
    Ok(Some(d))
}

fn blank(src: IpAddr, dst: IpAddr, tos: u8, ttl: u8, df: bool) -> Decap {
    Decap {
        src,
        dst,
        tos,
        ttl,
        df,
        udp_src: 0,
        udp_dst: 0,
        udp_csum: false,
        vni: 0,
        inner_offset: 0,
        inner_len: 0,
    }
}

/// The outer IP header's metadata and the range of its payload (the UDP datagram) in
/// the L3 buffer, or `None` if not a non-fragmented UDP packet.
type Outer = Option<(Decap, core::ops::Range<usize>)>;

fn outer_ipv4(l3: &[u8]) -> Result<Outer> {
    let ip = Ipv4Packet::new_checked(l3)?;
    if ip.version() != 4 {
        return Err(Error::Malformed);
    }
    if ip.protocol() != ip_proto::UDP || ip.is_fragment() {
        return Ok(None);
    }
    if !ip.verify_checksum() {
        return Err(Error::Checksum);
    }
    let d = blank(
        IpAddr::V4(ip.src_addr()),
        IpAddr::V4(ip.dst_addr()),
        ip.tos(),
        ip.ttl(),
        ip.dont_frag(),
    );
    // UDP is bounded by the IPv4 total length (Ethernet padding excluded).
    let range = usize::from(ip.header_len())..usize::from(ip.total_len());
    Ok(Some((d, range)))
}

fn outer_ipv6(l3: &[u8]) -> Result<Outer> {
    let ip = Ipv6Packet::new_checked(l3)?;
    if ip.version() != 6 {
        return Err(Error::Malformed);
    }
    let ext = skip_extension_headers(ip.next_header(), ip.payload())?;
    if ext.protocol != ip_proto::UDP || ext.frag.is_some() {
        return Ok(None);
    }
    let d = blank(
        IpAddr::V6(ip.src_addr()),
        IpAddr::V6(ip.dst_addr()),
        ip.traffic_class(),
        ip.hop_limit(),
        false,
    );
    let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    Ok(Some((d, ipv6::HEADER_LEN + ext.offset..end)))
}

#[cfg(test)]
mod test;
