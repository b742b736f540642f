//! Fuzz target: arbitrary text as a rule's match and actions (what `flowctl rules add`
//! and the configuration's `match`/`actions` keys take), through `Megaflow`'s and
//! `Actions`' `FromStr`, then printed and parsed again.
//!
//! Invariants checked: nothing panics; whatever parses prints to text that parses to the
//! same value, and that text is a fixed point (parse -> print -> parse -> print gives
//! the same text): a match never loses or widens a field when listed back.

#![no_main]

use datapath::actions::Actions;
use datapath::flow::Megaflow;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = s.parse::<Megaflow>() {
        let printed = m.to_string();
        let back: Megaflow = printed
            .parse()
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(back, m, "{s:?} -> {printed:?}");
        assert_eq!(back.to_string(), printed);
    }
    if let Ok(a) = s.parse::<Actions>() {
        let printed = a.to_string();
        let back: Actions = printed
            .parse()
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(back.to_string(), printed, "{s:?}");
    }
});
