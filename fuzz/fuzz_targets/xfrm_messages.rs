//! Fuzz target: arbitrary bytes as the kernel's XFRM netlink payloads (a policy and an SA,
//! split at the first byte), through `fibwatch::xfrm::decode_policy` and `decode_state`,
//! then what flowd concludes from them.
//!
//! Invariants checked: nothing panics; a decoded SA's overhead is bounded (no algorithm
//! flowd knows adds more than a few hundred bytes); the protection a decoded policy gives
//! a path is consistent with it (a block policy blocks and has no SA; the SA found
//! matches a decoded state's SPI).

#![no_main]

use fibwatch::xfrm::{Xfrm, decode_policy, decode_state};
use libfuzzer_sys::fuzz_target;
use vocab::{IfIndex, LookupKey, Path};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (p, s) = rest.split_at(at);
    let policy = decode_policy(p).or_else(|| decode_policy(rest));
    let state = decode_state(s).or_else(|| decode_state(rest));
    if let Some(st) = &state {
        assert!(st.overhead.is_none_or(|o| o < 1024), "{st:?}");
    }
    let (Some(policy), Some(state)) = (policy, state) else {
        return;
    };
    let x = Xfrm {
        policies: vec![policy],
        states: vec![state.clone()],
    };
    let sel = x.policies[0].sel;
    let path = Path {
        uplink: IfIndex(1),
        src: Some(sel.saddr),
        gateway: None,
        neighbour: sel.daddr,
        next_hop_mac: None,
        uplink_mac: None,
        mtu: 1500,
        table: 254,
        ipsec: None,
    };
    let key = LookupKey::to(sel.daddr);
    if let Some(p) = x.protection(&key, &path, 4789) {
        if p.blocks {
            assert!(p.sa.is_none());
        }
        if let Some(sa) = p.sa {
            assert_eq!(sa.spi, state.spi);
        }
    }
    let _ = x.inbound().protects(sel.saddr, sel.daddr, 4789, 0);
});
