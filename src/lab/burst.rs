//! New flows in bulk, for the scale benchmark and the tests that need many megaflows:
//! frames from a VF to distinct unknown unicast MACs, which NORMAL floods to the
//! network's remote VTEP, one megaflow per destination (the mask covers the whole
//! destination MAC).

use crate::netns::Netns;
use datapath::port::{AfPacketPort, PacketBatch, Port};
use datapath::wire::checksum::checksum;
use std::ops::Range;
use std::time::{Duration, Instant};

/// Frame `i` of a burst: UDP from `src` (1.1.1.2) to 1.1.1.200, to the destination
/// MAC `02:<tag>:<i as 4 bytes>` (`tag` keeps one test's flows apart from another's).
pub fn unknown_unicast(src: [u8; 6], tag: u8, i: u64, out: &mut [u8; 60]) {
    *out = [0; 60];
    let b = (i as u32).to_be_bytes();
    out[..6].copy_from_slice(&[0x02, tag, b[0], b[1], b[2], b[3]]);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut out[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[1, 1, 1, 2]);
    ip[16..20].copy_from_slice(&[1, 1, 1, 200]);
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    out[34..36].copy_from_slice(&40000u16.to_be_bytes());
    out[36..38].copy_from_slice(&9u16.to_be_bytes());
    out[38..40].copy_from_slice(&26u16.to_be_bytes());
}

/// Sends frames `range` of [`unknown_unicast`] once from `dev` inside namespace `ns`,
/// 64 per `sendmmsg`, as fast as the socket takes them; the time it took. What the
/// device could not take is dropped (and shows as flows never offered).
pub fn offer(ns: &str, dev: &str, tag: u8, range: Range<u64>) -> Result<Duration, String> {
    let (ns, dev) = (ns.to_string(), dev.to_string());
    std::thread::spawn(move || {
        Netns::borrowed(&ns).enter().map_err(|e| e.to_string())?;
        let mut port = AfPacketPort::open(&dev, 64).map_err(|e| e.to_string())?;
        let src = port.mac();
        let mut batch = PacketBatch::new(64, 128);
        let mut f = [0u8; 60];
        let t0 = Instant::now();
        let mut i = range.start;
        while i < range.end {
            batch.clear();
            while i < range.end && batch.len() < 64 {
                unknown_unicast(src, tag, i, &mut f);
                batch.push(&f);
                i += 1;
            }
            port.send(&batch).map_err(|e| e.to_string())?;
        }
        Ok(t0.elapsed())
    })
    .join()
    .map_err(|_| "the sender panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::wire::ipv4::{Ipv4Packet, Ipv4Repr};

    #[test]
    fn frames_are_distinct_and_their_ip_header_checks() {
        let mut a = [0u8; 60];
        let mut b = [0u8; 60];
        unknown_unicast([2, 0, 0, 0, 0, 1], 0xf0, 7, &mut a);
        unknown_unicast([2, 0, 0, 0, 0, 1], 0xf0, 8, &mut b);
        assert_ne!(a[..6], b[..6]);
        assert_eq!(a[6..], b[6..]);
        assert_eq!(&a[..6], &[0x02, 0xf0, 0, 0, 0, 7]);
        assert_eq!(
            checksum(&a[14..34]),
            0,
            "the header sums to zero with its checksum"
        );
        let ip = Ipv4Packet::new_checked(&a[14..]).expect("an IPv4 header");
        assert!(Ipv4Repr::parse(&ip).is_ok());
    }
}
