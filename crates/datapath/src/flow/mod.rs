//! Flow keys, masks and megaflows.

mod key;

pub use key::{FlowKey, FlowMask, KEY_WORDS, Megaflow, addr_from, addr_to, frag, tun_flags, vlan};
