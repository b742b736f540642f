//! Fuzz target: arbitrary bytes as the kernel's answers on flowd's tc socket (ACKs with
//! extack, echoed filters, dumps), through the offload layer's netlink decoder.
//!
//! Invariants checked: nothing panics; a filter that decodes into a flower rule encodes
//! back into options that decode to the same rule (flowd never misreads its own
//! filters, the `skbedit`, `vlan` and `gact` actions it builds by hand included).

#![no_main]

use libfuzzer_sys::fuzz_target;
use offload::TcPolicy;
use offload::netlink::{Answer, decode_filter_msg, decode_flower, encode_flower, parse_answers};

fuzz_target!(|data: &[u8]| {
    for answer in parse_answers(data) {
        let Ok(Answer::Filter { msg, .. }) = answer else {
            continue;
        };
        let entry = decode_filter_msg(&msg);
        let Some(Ok(f)) = entry.filter else {
            continue;
        };
        let opts = encode_flower(&f.rule, TcPolicy::None, None, 0);
        let again = decode_flower(f.rule.ingress, f.rule.matches.protocol, &opts)
            .expect("flowd decodes what it encodes");
        assert_eq!(again.rule, f.rule);
    }
});
