//! VXLAN output of super-frames. Where the uplink takes UDP-tunnel super-frames
//! ([`PacketSink::tunnel_segmentation`]), a TCP super-frame goes out whole behind one set
//! of outer headers, for the kernel (or the NIC) to cut, as the kernel's own VXLAN device
//! hands it over. Otherwise the inner TCP (or UDP) super-frame is segmented in software
//! (AF_PACKET has no UDP-tunnel GSO), each segment written behind room for the outer
//! headers and encapsulated in place, or, where the uplink takes UDP super-frames (USO),
//! written one after the other as one UDP datagram the kernel cuts.

use super::tunnel::{Packets, Path, reply_too_big};
use super::{ExecEnv, ExecStats, PacketSink, Sent};
use crate::wire::gso::{self, Layout, Segmenter};
use crate::wire::pmtu::{self, TooBig};
use crate::wire::vxlan::{self, OuterHeaders};
use crate::wire::{Gso, Offload, PartialCsum, TunnelGso};
use std::net::IpAddr;

/// Segments a super-frame and encapsulates each segment, or answers it as too big.
/// Returns what became of the output (None: already counted, as too big).
pub(super) fn encap_super(
    pkts: Packets<'_>,
    o: Offload,
    path: &Path,
    env: &ExecEnv<'_>,
    sink: &mut dyn PacketSink,
    ip_id: &mut u16,
    stats: &mut ExecStats,
) -> Option<Sent> {
    let g = o.gso?;
    let lay = match Layout::parse(pkts.inner) {
        Ok(l) if l.matches(g.kind) && o.csum.is_none_or(|c| c == l.partial_csum()) => l,
        _ => {
            stats.offload_invalid += 1;
            return Some(Sent::Invalid);
        }
    };
    // The largest inner frame the path takes, and the payload per segment that fits.
    let room = (usize::from(path.route.mtu) + 14).saturating_sub(path.overhead);
    let fits = room.saturating_sub(lay.header_len());
    let mut size = usize::from(g.size);
    if lay.header_len() + size.min(lay.payload_len()) > room {
        stats.encap_too_big += 1;
        let tcp_no_df = lay.proto == crate::wire::ip_proto::TCP
            && pmtu::too_big_action(pkts.inner) == TooBig::Fragment;
        if !tcp_no_df || fits == 0 {
            // As a packet of the segment size would be: answered, or dropped.
            reply_too_big(pkts, path, env, sink, stats);
            return None;
        }
        size = fits;
    }
    if size == usize::from(g.size)
        && lay.proto == crate::wire::ip_proto::TCP
        && sink.tunnel_segmentation(path.route.egress)
        && let Some(sent) = encap_as_tunnel_super(pkts.inner, o, g, &lay, path, sink, ip_id)
    {
        if sent == Sent::Yes {
            stats.tunnel_super_frames += 1;
        }
        return Some(sent);
    }
    let mut seg = match Segmenter::with_layout(pkts.inner, lay, size) {
        Ok(s) => s,
        Err(_) => {
            stats.offload_invalid += 1;
            return Some(Sent::Invalid);
        }
    };
    stats.gso_segmented += 1;
    if sink.udp_segmentation(path.route.egress)
        && let Some(sent) = encap_as_udp_super(&mut seg, path, sink, ip_id, stats)
    {
        return Some(sent);
    }
    let overhead = path.overhead;
    let len = overhead + seg.max_len();
    while seg.remaining() > 0 {
        *ip_id = ip_id.wrapping_add(1);
        let outer = OuterHeaders {
            ident: *ip_id,
            ..path.outer
        };
        let mut failed = false;
        let fill = &mut |slot: &mut [u8]| {
            let n = match slot.get_mut(overhead..).map(|s| seg.write_next(s)) {
                Some(Ok(Some(n))) => n,
                _ => {
                    failed = true;
                    return 0;
                }
            };
            vxlan::encapsulate_in_place(slot, n, &outer).unwrap_or_else(|_| {
                failed = true;
                0
            })
        };
        if !sink.send_with(path.route.egress, len, Offload::NONE, fill) {
            return Some(if failed { Sent::Invalid } else { Sent::Refused });
        }
        stats.gso_segments += 1;
    }
    Some(Sent::Yes)
}

/// Hands the TCP super-frame `inner` (its metadata `o`, segmentation `g`, headers `lay`)
/// to the uplink whole behind one set of outer headers, for the kernel's UDP-tunnel
/// segmentation to cut (see [`TunnelGso`]): no per-segment work here, and no copy (sent
/// from where it lies, [`PacketSink::send_direct`]) but for a super-frame without a
/// partial checksum (GRO's), which gets one in a copy. The outer IPv4
/// identification counts one per segment, as the kernel numbers them. None, with nothing
/// written, where the outer IP packet would exceed 64 KiB (then it is segmented here).
#[allow(clippy::too_many_arguments)]
fn encap_as_tunnel_super(
    inner: &[u8],
    o: Offload,
    g: Gso,
    lay: &Layout,
    path: &Path,
    sink: &mut dyn PacketSink,
    ip_id: &mut u16,
) -> Option<Sent> {
    let overhead = path.overhead;
    let eth = crate::wire::ethernet::HEADER_LEN;
    if inner.len() + overhead - eth > 65_535 {
        return None;
    }
    let outer = OuterHeaders {
        ident: ip_id.wrapping_add(1),
        ..path.outer
    };
    let at = |v: usize| (overhead + v) as u16;
    let c = lay.partial_csum();
    let offload = Offload {
        csum: Some(PartialCsum {
            start: at(lay.l4),
            offset: c.offset,
        }),
        csum_valid: false,
        gso: Some(Gso {
            tunnel: Some(TunnelGso {
                outer_l4: (overhead - vxlan::HEADER_LEN - crate::wire::udp::HEADER_LEN) as u16,
                inner_l3: at(lay.l3),
                outer_v6: matches!(outer.dst_ip, IpAddr::V6(_)),
                outer_csum: vxlan::outer_udp_csum(&outer),
            }),
            ..g
        }),
        hdr_len: at(lay.header_len()),
    };
    let segments = lay.payload_len().div_ceil(usize::from(g.size)).max(1);
    if o.csum.is_some() {
        // Sent from where it lies: no copy here.
        let mut hdr = [0u8; vxlan::VXLAN_OVERHEAD_V6];
        let Ok(n) = vxlan::tunnel_segmentation_headers(&mut hdr, inner.len(), &outer) else {
            return Some(Sent::Invalid);
        };
        if !sink.send_direct(path.route.egress, &[&hdr[..n], inner], offload) {
            return Some(Sent::Refused);
        }
        *ip_id = ip_id.wrapping_add(segments as u16);
        return Some(Sent::Yes);
    }
    let mut failed = false;
    let fill = &mut |slot: &mut [u8]| {
        let Some(dst) = slot.get_mut(overhead..overhead + inner.len()) else {
            failed = true;
            return 0;
        };
        dst.copy_from_slice(inner);
        if o.csum.is_none() && gso::prepare_partial(dst, lay).is_err() {
            failed = true;
            return 0;
        }
        match vxlan::tunnel_segmentation_headers(slot, inner.len(), &outer) {
            Ok(n) => n + inner.len(),
            Err(_) => {
                failed = true;
                0
            }
        }
    };
    if !sink.send_with(path.route.egress, overhead + inner.len(), offload, fill) {
        return Some(if failed { Sent::Invalid } else { Sent::Refused });
    }
    *ip_id = ip_id.wrapping_add(segments as u16);
    Some(Sent::Yes)
}

/// Most VXLAN packets one UDP super-frame carries: the kernel's `UDP_MAX_SEGMENTS` (64;
/// 128 since Linux 6.9).
const UDP_MAX_SEGMENTS: usize = 64;

/// Writes the segments of `seg`, each behind a VXLAN header, into UDP super-frames for
/// the egress to cut at the unit size (USO; see [`crate::port::Port::udp_segmentation`]):
/// one frame, one skb and one trip through the kernel's stack for up to 64 VXLAN packets
/// instead of one each. Every unit but the last of a frame is exactly the unit size, as
/// UDP segmentation requires: the segmenter's segments all have the first one's length
/// but the last. The outer UDP checksum is left partial for the cut to complete (the
/// kernel requires it: segments leave with a checksum even where `udp_csum` is off), and
/// the outer IPv4 identification counts one per segment, as the kernel numbers them.
/// None, with nothing written, where two units would not fit one datagram.
fn encap_as_udp_super(
    seg: &mut Segmenter<'_>,
    path: &Path,
    sink: &mut dyn PacketSink,
    ip_id: &mut u16,
    stats: &mut ExecStats,
) -> Option<Sent> {
    let plan = UdpPlan::new(seg.max_len(), path)?;
    let UdpPlan {
        first,
        unit,
        per_frame,
        offload,
    } = plan;
    let (overhead, vni) = (path.overhead, path.outer.vni);
    while seg.remaining() > 0 {
        let k = seg.remaining().min(per_frame);
        let outer = OuterHeaders {
            ident: ip_id.wrapping_add(1),
            ..path.outer
        };
        let mut failed = false;
        let fill = &mut |slot: &mut [u8]| {
            let written = write_units(slot, first, k, vni, seg).and_then(|at| {
                vxlan::encapsulate_for_segmentation(slot, at - overhead, &outer).ok()
            });
            match written {
                Some((n, _)) => n,
                None => {
                    failed = true;
                    0
                }
            }
        };
        if !sink.send_with(path.route.egress, first + k * unit, offload, fill) {
            return Some(if failed { Sent::Invalid } else { Sent::Refused });
        }
        *ip_id = ip_id.wrapping_add(k as u16);
        stats.gso_segments += k as u64;
        stats.udp_super_frames += 1;
    }
    Some(Sent::Yes)
}

/// How the VXLAN packets of one super-frame are packed into UDP super-frames on a path.
#[derive(Clone, Copy)]
struct UdpPlan {
    /// Where the first unit starts: after the outer Ethernet, IP and UDP headers.
    first: usize,
    /// A unit: a VXLAN header and a segment of the largest size.
    unit: usize,
    /// Units per UDP super-frame.
    per_frame: usize,
    /// The metadata each UDP super-frame goes out with.
    offload: Offload,
}

impl UdpPlan {
    /// The plan for segments of at most `seg_max` bytes over `path`; None where two units
    /// would not fit one datagram.
    fn new(seg_max: usize, path: &Path) -> Option<Self> {
        let first = path.overhead - vxlan::HEADER_LEN;
        let udp_at = first - crate::wire::udp::HEADER_LEN;
        let unit = vxlan::HEADER_LEN + seg_max;
        // The outer IP packet within 64 KiB: IPv4's total length counts its header,
        // IPv6's payload length does not.
        let v6 = matches!(path.outer.dst_ip, IpAddr::V6(_));
        let ip_header = if v6 {
            0
        } else {
            udp_at - crate::wire::ethernet::HEADER_LEN
        };
        let room = 65_535 - ip_header - crate::wire::udp::HEADER_LEN;
        let per_frame = (room / unit).min(UDP_MAX_SEGMENTS);
        if per_frame < 2 {
            return None;
        }
        let offload = Offload {
            csum: Some(crate::wire::PartialCsum {
                start: udp_at as u16,
                offset: 6,
            }),
            csum_valid: false,
            gso: Some(crate::wire::Gso {
                kind: crate::wire::GsoKind::Udp,
                size: unit as u16,
                ecn: false,
                tunnel: None,
            }),
            hdr_len: first as u16,
        };
        Some(Self {
            first,
            unit,
            per_frame,
            offload,
        })
    }
}

/// Writes `k` units (a VXLAN header of `vni`, then the next segment of `seg`) into
/// `slot` from `first` on; where the last one ends, None if one did not fit or the
/// segmenter failed.
#[inline]
fn write_units(
    slot: &mut [u8],
    first: usize,
    k: usize,
    vni: u32,
    seg: &mut Segmenter<'_>,
) -> Option<usize> {
    let mut at = first;
    for _ in 0..k {
        let u = slot.get_mut(at..)?;
        vxlan::emit_header(u, vni).ok()?;
        let body = u.get_mut(vxlan::HEADER_LEN..)?;
        let n = seg.write_next(body).ok().flatten()?;
        at += vxlan::HEADER_LEN + n;
    }
    Some(at)
}
