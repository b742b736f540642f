//! Fuzz target: arbitrary bytes as a frame with its offload metadata, as an AF_PACKET
//! port hands them over (a 10-byte `virtio_net_hdr`, then the frame), through
//! `wire::vnet::Offload::parse`, `Offload::shifted` and `packets`, and the software
//! segmentation and checksum paths of `wire::gso` (`Layout::parse`, `prepare_partial`,
//! `complete_checksum`, `Segmenter`).
//!
//! Invariants checked: nothing panics; metadata shifted by an insertion and back by the
//! same removal is unchanged; a super-frame stands for at least one packet; every
//! segment fits `max_len`, starts with the super-frame's link-layer header, and the
//! segments carry exactly the super-frame's payload, in order.

#![no_main]

use datapath::wire::gso::{self, Layout, Segmenter};
use datapath::wire::vnet::{HEADER_LEN, Offload, VnetHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER_LEN + 2 {
        return;
    }
    let (hdr, rest) = data.split_at(HEADER_LEN);
    // Two bytes choose where the shift check inserts and how much.
    let (sel, frame) = rest.split_at(2);
    let frame = &frame[..frame.len().min(gso::MAX_FRAME)];
    let Ok(h) = VnetHeader::new_checked(hdr) else {
        return;
    };
    let Ok(off) = Offload::parse(&h) else {
        return;
    };
    assert!(off.packets(frame.len()) >= 1);
    let (at, delta) = (usize::from(sel[0]), isize::from(sel[1] % 32));
    // (A header length pushed past 65,535 is dropped, not kept: leave that case out.)
    if let Some(moved) = off.shifted(at, delta).filter(|_| off.hdr_len < u16::MAX - 32) {
        assert_eq!(moved.shifted(at, -delta), Some(off));
    }
    if let Some(c) = off.csum {
        let mut copy = frame.to_vec();
        let _ = gso::complete_checksum(&mut copy, c);
        assert_eq!(copy.len(), frame.len());
    }
    let Ok(lay) = Layout::parse(frame) else {
        return;
    };
    let mut copy = frame.to_vec();
    let _ = gso::prepare_partial(&mut copy, &lay);
    let Some(g) = off.gso else {
        return;
    };
    let Ok(mut seg) = Segmenter::new(frame, g.kind, usize::from(g.size)) else {
        return;
    };
    let lay = *seg.layout();
    let hdr_len = lay.header_len();
    let mut scratch = vec![0u8; seg.max_len()];
    let mut payload = Vec::with_capacity(lay.payload_len());
    let mut n = 0;
    while let Ok(Some(len)) = seg.write_next(&mut scratch) {
        assert!(len <= seg.max_len() && len >= hdr_len);
        assert_eq!(scratch[..lay.l3], frame[..lay.l3]);
        payload.extend_from_slice(&scratch[hdr_len..len]);
        n += 1;
    }
    assert_eq!(n, seg.count());
    assert_eq!(payload[..], frame[hdr_len..lay.end]);
});
