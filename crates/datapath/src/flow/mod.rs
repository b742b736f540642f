//! Flow keys, masks and megaflows.

mod key;

pub use key::{FlowKey, FlowMask, Megaflow, frag, tun_flags, vlan};
