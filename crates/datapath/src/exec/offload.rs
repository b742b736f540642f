//! Output of a frame that still needs work (a super-frame to segment, a partial checksum
//! to complete) to a port other than the tunnel: handed over with its metadata to a port
//! that does the work, or finished in software for one that does not.

use super::{ExecStats, PacketSink, Sent};
use crate::PortId;
use crate::wire::Offload;
use crate::wire::gso::{self, Layout, Segmenter};

/// Hands a frame that still needs work to a port that does it (an AF_PACKET port with a
/// vnet header), after checking that the metadata describes the frame; a super-frame
/// whose checksum is not partial gets one.
pub(super) fn pass_through(
    pkt: &[u8],
    o: Offload,
    port: PortId,
    sink: &mut dyn PacketSink,
    stats: &mut ExecStats,
) -> Sent {
    let Some(g) = o.gso else {
        // A partial checksum alone: the kernel completes it.
        return if sink.send(port, pkt, o) {
            Sent::Yes
        } else {
            Sent::Refused
        };
    };
    let lay = match Layout::parse(pkt) {
        Ok(l) if l.matches(g.kind) && o.csum.is_none_or(|c| c == l.partial_csum()) => l,
        _ => {
            stats.offload_invalid += 1;
            return Sent::Invalid;
        }
    };
    let hdr_len = lay.header_len() as u16;
    let sent = if o.csum.is_some() {
        // Sent from where it lies where the port can: no copy of up to 64 KiB.
        sink.send_direct(port, &[pkt], Offload { hdr_len, ..o })
    } else {
        // GRO's super-frame: its checksum is whole (or stale); the kernel wants the
        // pseudo-header's sum there, as TSO's sender leaves it.
        let mut c = None;
        let fill = &mut |slot: &mut [u8]| {
            let Some(dst) = slot.get_mut(..pkt.len()) else {
                return 0;
            };
            dst.copy_from_slice(pkt);
            c = gso::prepare_partial(dst, &lay).ok();
            if c.is_some() { pkt.len() } else { 0 }
        };
        let o = Offload {
            csum: Some(lay.partial_csum()),
            csum_valid: false,
            hdr_len,
            ..o
        };
        sink.send_with(port, pkt.len(), o, fill)
    };
    if sent {
        stats.gso_passed += 1;
        Sent::Yes
    } else {
        Sent::Refused
    }
}

/// Segments a super-frame and completes a partial checksum in software, into the
/// transmit batch of a port that cannot do it.
pub(super) fn finish_in_software(
    pkt: &[u8],
    o: Offload,
    port: PortId,
    sink: &mut dyn PacketSink,
    stats: &mut ExecStats,
) -> Sent {
    let Some(g) = o.gso else {
        let Some(c) = o.csum else {
            return Sent::Invalid;
        };
        let mut ok = true;
        let fill = &mut |slot: &mut [u8]| {
            let Some(dst) = slot.get_mut(..pkt.len()) else {
                return 0;
            };
            dst.copy_from_slice(pkt);
            ok = gso::complete_checksum(dst, c).is_ok();
            if ok { pkt.len() } else { 0 }
        };
        return match (sink.send_with(port, pkt.len(), Offload::NONE, fill), ok) {
            (true, _) => {
                stats.csum_completed += 1;
                Sent::Yes
            }
            (false, false) => {
                stats.offload_invalid += 1;
                Sent::Invalid
            }
            (false, true) => Sent::Refused,
        };
    };
    let mut seg = match Segmenter::new(pkt, g.kind, usize::from(g.size)) {
        Ok(s) => s,
        Err(_) => {
            stats.offload_invalid += 1;
            return Sent::Invalid;
        }
    };
    stats.gso_segmented += 1;
    let max = seg.max_len();
    let mut outcome = Sent::Yes;
    while seg.remaining() > 0 {
        let fill = &mut |slot: &mut [u8]| seg.write_next(slot).ok().flatten().unwrap_or(0);
        if !sink.send_with(port, max, Offload::NONE, fill) {
            outcome = Sent::Refused;
            break;
        }
        stats.gso_segments += 1;
    }
    outcome
}
