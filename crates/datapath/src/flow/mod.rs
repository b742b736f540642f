//! Flow keys, masks and megaflows, and their text syntax.

mod format;
mod key;

pub use format::{Mac, ParseError};
pub use key::{FlowKey, FlowMask, KEY_WORDS, Megaflow, addr_from, addr_to, frag, tun_flags, vlan};
