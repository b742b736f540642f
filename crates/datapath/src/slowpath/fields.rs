//! A field-level view of [`FlowKey`] for un-wildcarding: which bytes each field occupies,
//! how its bits are ordered, and whether prefix tracking applies to it.
//!
//! Values are read as `u128` numbers whose most significant bit (of the field's width) is
//! the field's first bit: network-order byte arrays big-endian, host-order integers in
//! native order. The table is checked by a test to tile the key exactly (padding aside),
//! and [`_every_field_is_listed`] destructures the key fully, so a new field breaks the
//! build until it is added here.

use crate::flow::{FlowKey, FlowMask};
use std::mem::offset_of;

/// How a field's bytes map to its numeric value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// A byte array in network order (addresses, MACs).
    Network,
    /// A host-order integer.
    Host,
}

/// One matchable field of the key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub len: usize,
    pub order: Order,
    /// Un-wildcard only up to the first differing bit when proving a mismatch.
    pub prefix: bool,
}

const fn f(name: &'static str, offset: usize, len: usize, order: Order, prefix: bool) -> Field {
    Field {
        name,
        offset,
        len,
        order,
        prefix,
    }
}

use Order::{Host, Network};

/// Every field, in the order rule matching examines them (OVS's staged lookup: metadata,
/// then L2, L3, L4), so that cheap, coarse fields prove mismatches first.
pub(crate) const FIELDS: [Field; 27] = [
    f("in_port", offset_of!(FlowKey, in_port), 4, Host, false),
    f("tun_flags", offset_of!(FlowKey, tun_flags), 2, Host, false),
    f("tun_vni", offset_of!(FlowKey, tun_vni), 4, Host, false),
    f("tun_src", offset_of!(FlowKey, tun_src), 16, Network, true),
    f("tun_dst", offset_of!(FlowKey, tun_dst), 16, Network, true),
    f(
        "tun_tp_dst",
        offset_of!(FlowKey, tun_tp_dst),
        2,
        Host,
        false,
    ),
    f("tun_tos", offset_of!(FlowKey, tun_tos), 1, Host, false),
    f("tun_ttl", offset_of!(FlowKey, tun_ttl), 1, Host, false),
    f("eth_type", offset_of!(FlowKey, eth_type), 2, Host, false),
    f("vlan_tci0", offset_of!(FlowKey, vlan_tci), 2, Host, false),
    f(
        "vlan_tci1",
        offset_of!(FlowKey, vlan_tci) + 2,
        2,
        Host,
        false,
    ),
    f("vlan_tpid0", offset_of!(FlowKey, vlan_tpid), 2, Host, false),
    f(
        "vlan_tpid1",
        offset_of!(FlowKey, vlan_tpid) + 2,
        2,
        Host,
        false,
    ),
    f("eth_src", offset_of!(FlowKey, eth_src), 6, Network, false),
    f("eth_dst", offset_of!(FlowKey, eth_dst), 6, Network, false),
    f("ip_proto", offset_of!(FlowKey, ip_proto), 1, Host, false),
    f("ip_frag", offset_of!(FlowKey, ip_frag), 1, Host, false),
    f("ip_tos", offset_of!(FlowKey, ip_tos), 1, Host, false),
    f("ip_ttl", offset_of!(FlowKey, ip_ttl), 1, Host, false),
    f("ip_src", offset_of!(FlowKey, ip_src), 16, Network, true),
    f("ip_dst", offset_of!(FlowKey, ip_dst), 16, Network, true),
    f("tp_src", offset_of!(FlowKey, tp_src), 2, Host, true),
    f("tp_dst", offset_of!(FlowKey, tp_dst), 2, Host, true),
    f("tcp_flags", offset_of!(FlowKey, tcp_flags), 2, Host, false),
    f("arp_sha", offset_of!(FlowKey, arp_sha), 6, Network, false),
    f("arp_tha", offset_of!(FlowKey, arp_tha), 6, Network, false),
    f("pad", offset_of!(FlowKey, pad), 6, Network, false),
];

/// Index of the padding pseudo-field, which is never matched.
pub(crate) const PAD: usize = FIELDS.len() - 1;

/// Breaks the build when a field is added to [`FlowKey`] without being added to
/// [`FIELDS`] (the tiling test then checks offsets).
pub(crate) fn _every_field_is_listed(k: FlowKey) {
    let FlowKey {
        tun_src: _,
        tun_dst: _,
        ip_src: _,
        ip_dst: _,
        in_port: _,
        tun_vni: _,
        tun_tp_dst: _,
        tun_tos: _,
        tun_ttl: _,
        tun_flags: _,
        eth_type: _,
        eth_src: _,
        eth_dst: _,
        vlan_tci: _,
        vlan_tpid: _,
        ip_proto: _,
        ip_tos: _,
        ip_ttl: _,
        ip_frag: _,
        tp_src: _,
        tp_dst: _,
        tcp_flags: _,
        arp_sha: _,
        arp_tha: _,
        pad: _,
    } = k;
}

impl Field {
    fn width(&self) -> u32 {
        (self.len * 8) as u32
    }

    /// The field's value in `key`.
    #[inline]
    pub(crate) fn get(&self, key: &FlowKey) -> u128 {
        let bytes = &key.as_bytes()[self.offset..self.offset + self.len];
        match self.order {
            Network => bytes
                .iter()
                .fold(0u128, |acc, b| (acc << 8) | u128::from(*b)),
            Host => {
                let mut buf = [0u8; 16];
                buf[..self.len].copy_from_slice(bytes);
                // Native order: the first byte is the least significant on little endian.
                if cfg!(target_endian = "little") {
                    u128::from_le_bytes(buf)
                } else {
                    u128::from_be_bytes(buf) >> (128 - self.width())
                }
            }
        }
    }

    /// ORs `bits` (a value of this field) into the field in `key`.
    #[inline]
    pub(crate) fn or_into(&self, key: &mut FlowKey, bits: u128) {
        if bits == 0 {
            return;
        }
        let cur = self.get(key) | bits;
        let bytes = &mut bytemuck::bytes_of_mut(key)[self.offset..self.offset + self.len];
        match self.order {
            Network => {
                let be = cur.to_be_bytes();
                bytes.copy_from_slice(&be[16 - self.len..]);
            }
            Host => {
                if cfg!(target_endian = "little") {
                    bytes.copy_from_slice(&cur.to_le_bytes()[..self.len]);
                } else {
                    let be = (cur << (128 - self.width())).to_be_bytes();
                    bytes.copy_from_slice(&be[..self.len]);
                }
            }
        }
    }

    /// The bits of `mask` from the field's first bit up to and including the first bit
    /// where `a` and `b` differ (all of `mask` when they do not differ).
    #[inline]
    pub(crate) fn prefix_through_first_diff(&self, mask: u128, a: u128, b: u128) -> u128 {
        let diff = (a ^ b) & mask;
        if diff == 0 {
            return mask;
        }
        // Position (0 = most significant of the u128) of the first differing bit.
        let first = diff.leading_zeros();
        let keep = !0u128 << (127 - first);
        mask & keep
    }
}

/// The names of the fields a mask consults, with their mask values, for traces.
pub(crate) fn describe_mask(mask: &FlowMask) -> Vec<String> {
    FIELDS[..PAD]
        .iter()
        .filter_map(|f| {
            let m = f.get(mask);
            (m != 0).then(|| {
                let full = if f.width() == 128 {
                    u128::MAX
                } else {
                    (1u128 << f.width()) - 1
                };
                if m == full {
                    f.name.to_string()
                } else {
                    format!("{}/{:#x}", f.name, m)
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn fields_tile_the_key() {
        let mut covered = [0u8; std::mem::size_of::<FlowKey>()];
        for f in &FIELDS {
            for c in &mut covered[f.offset..f.offset + f.len] {
                *c += 1;
            }
        }
        assert!(covered.iter().all(|c| *c == 1), "{covered:?}");
    }

    #[test]
    fn get_and_or_round_trip() {
        let mut k = FlowKey::zeroed();
        k.tp_dst = 0x1234;
        k.eth_src = [1, 2, 3, 4, 5, 6];
        k.vlan_tci = [0x1005, 0x2006];
        let by = |n: &str| FIELDS.iter().find(|f| f.name == n).copied().unwrap();
        assert_eq!(by("tp_dst").get(&k), 0x1234);
        assert_eq!(by("eth_src").get(&k), 0x0102_0304_0506);
        assert_eq!(by("vlan_tci1").get(&k), 0x2006);
        let mut m = FlowKey::zeroed();
        by("tp_dst").or_into(&mut m, 0xff00);
        assert_eq!(m.tp_dst, 0xff00);
        by("eth_dst").or_into(&mut m, 0x0100_0000_0000);
        assert_eq!(m.eth_dst, [1, 0, 0, 0, 0, 0]);
        by("vlan_tci0").or_into(&mut m, 0x0fff);
        assert_eq!(m.vlan_tci, [0x0fff, 0]);
    }

    #[test]
    fn prefix_through_first_diff() {
        let f = FIELDS.iter().find(|f| f.name == "tp_dst").copied().unwrap();
        // 0x0050 vs 0x01bb under a full mask first differ at 0x0100.
        assert_eq!(f.prefix_through_first_diff(0xffff, 0x0050, 0x01bb), 0xff00);
        assert_eq!(f.prefix_through_first_diff(0xff00, 0x0050, 0x0050), 0xff00);
        assert_eq!(f.prefix_through_first_diff(0xffff, 0x8000, 0), 0x8000);
    }
}
