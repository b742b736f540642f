//! Fuzz target: arbitrary bytes as a datagram read from an rtnetlink socket, through
//! `rtnl::split` (what fibwatch's and evpn's event sockets and every request's answer go
//! through) and `rtnl::split_raw`.
//!
//! Invariants checked: nothing panics; `split` never yields more messages than
//! `split_raw` finds frames, and decodes plus counted failures account for every frame
//! (a truncated tail is counted once on top); each raw frame lies inside the datagram and
//! declares its own length.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = rtnl::split_raw(data);
    for f in &raw {
        assert!(f.len() >= 16 && f.len() <= data.len());
        let declared = u32::from_ne_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(declared, f.len());
    }
    let mut undecodable = 0u64;
    let msgs = rtnl::split(data, &mut undecodable);
    assert!(msgs.len() <= raw.len());
    assert!(msgs.len() as u64 + undecodable >= raw.len() as u64);
    assert!(msgs.len() as u64 + undecodable <= raw.len() as u64 + 1);
    for m in msgs {
        // What a decoded message says it holds re-serializes without a panic.
        let mut m = m;
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
    }
});
