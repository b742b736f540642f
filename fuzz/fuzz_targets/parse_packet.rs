//! Fuzz target: arbitrary bytes through flow key extraction and VXLAN decapsulation.
//!
//! Invariants checked: nothing panics; a decapsulated inner range lies inside the frame;
//! extraction fills only the padding-free key (pad stays zero); the offsets it reports
//! lie inside the frame.

#![no_main]

use datapath::flow::{TunnelMeta, extract_with_offsets};
use datapath::wire::vxlan::{IANA_PORT, decapsulate};
use datapath::{FlowKey, PortId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, off) = extract_with_offsets(data, PortId(1), None);
    assert_eq!(key.pad, [0; 6]);
    for o in [off.l3, off.l4].into_iter().flatten() {
        assert!(o <= data.len());
    }

    // The first two bytes also pick a VXLAN port, so non-default ports get exercised.
    let port = match data {
        [a, b, ..] if a & 1 == 1 => u16::from_be_bytes([*a, *b]),
        _ => IANA_PORT,
    };
    for p in [IANA_PORT, port] {
        if let Ok(Some(d)) = decapsulate(data, p) {
            assert!(d.inner_range().end <= data.len());
            let inner = d.inner(data);
            assert_eq!(inner.len(), d.inner_len);
            let meta = TunnelMeta::from(&d);
            let k = FlowKey::extract(inner, PortId(2), Some(&meta));
            assert!(k.has_tunnel());
            assert_eq!(k.tun_vni, d.vni);
        }
    }
});
