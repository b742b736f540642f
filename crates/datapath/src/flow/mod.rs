//! Flow keys, masks and megaflows, and their text syntax.

mod extract;
mod format;
mod key;

pub use extract::{
    ETH_TYPE_NONE, Malformed, Offsets, TunnelMeta, extract_checked, extract_with_offsets,
};
pub use format::{Mac, ParseError};
pub use key::{FlowKey, FlowMask, KEY_WORDS, Megaflow, addr_from, addr_to, frag, tun_flags, vlan};
