//! Adoption of filters a previous flowd run left installed (`flowd --keep-offloads`, or
//! a crash): the way back from a [`FlowerRule`] to a packet key.
//!
//! After a restart the software flow table is empty while the kept filters still carry
//! the traffic, so no packet of those flows reaches flowd. Instead of sweeping the
//! filters (and losing traffic until the flows are learned again), the daemon derives
//! one [`representative_key`] per kept filter, runs the slow path on it (learning,
//! rules, tunnels), and installs the resulting megaflow; when the offloader is offered
//! that flow and the rule it would install has the kept filter's ingress and match, it
//! takes the kept filter over (no netlink request when the actions agree, an in-place
//! replace when they do not). Kept filters no flow claims are swept afterwards.
//!
//! The key only has to lie inside the filter's match: the decision that counts is the
//! slow path's, and the offloader compares the *resulting* rule with the kept one, so
//! an imprecise key costs an adoption, never correctness.

use crate::ports::{PortKind, PortTable};
use crate::rule::{FlowerRule, Masked, VlanMatch};
use crate::translate::ETH_P_ALL;
use datapath::FlowKey;
use datapath::flow::{addr_to, tun_flags, vlan};
use std::net::IpAddr;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

fn val<T: Copy + Default>(m: Option<Masked<T>>) -> T {
    m.map(|m| m.value).unwrap_or_default()
}

fn ip(m: Option<Masked<IpAddr>>) -> [u8; 16] {
    m.map(|m| addr_to(m.value)).unwrap_or_default()
}

fn tci(v: &VlanMatch) -> u16 {
    vlan::PRESENT
        | v.id.unwrap_or(0)
        | (u16::from(v.prio.unwrap_or(0)) << vlan::PCP_SHIFT) & vlan::PCP_MASK
}

/// A packet key inside `rule`'s match, or `None` when the rule's ingress is not one of
/// `ports` (the port is gone: the filter cannot be adopted).
pub fn representative_key(rule: &FlowerRule, ports: &PortTable) -> Option<FlowKey> {
    let port = ports.by_ifindex(rule.ingress)?;
    let m = &rule.matches;
    let mut k = FlowKey {
        in_port: port.id.0,
        eth_dst: val(m.eth_dst),
        eth_src: val(m.eth_src),
        ..FlowKey::default()
    };
    let t = &m.tunnel;
    if port.kind == PortKind::Tunnel || !t.is_empty() {
        let v6 = [t.src, t.dst].iter().flatten().any(|a| a.value.is_ipv6());
        k.tun_flags = tun_flags::PRESENT
            | if v6 { tun_flags::IPV6 } else { 0 }
            | if t.key_id.is_some() {
                tun_flags::KEY
            } else {
                0
            };
        k.tun_vni = t.key_id.unwrap_or(0);
        k.tun_src = ip(t.src);
        k.tun_dst = ip(t.dst);
        k.tun_tp_dst = val(t.dst_port);
        k.tun_tos = val(t.tos);
        k.tun_ttl = val(t.ttl);
    }
    let eth_type = match (m.vlan, m.cvlan) {
        (Some(outer), inner) => {
            k.vlan_tci[0] = tci(&outer);
            k.vlan_tpid[0] = m.protocol;
            if let Some(inner) = inner {
                k.vlan_tci[1] = tci(&inner);
                k.vlan_tpid[1] = outer.eth_type.unwrap_or(0x8100);
                inner.eth_type
            } else {
                outer.eth_type
            }
        }
        (None, _) => (m.protocol != ETH_P_ALL).then_some(m.protocol),
    };
    k.eth_type = eth_type.unwrap_or(0);
    match k.eth_type {
        ETH_P_IP | ETH_P_IPV6 => {
            k.ip_src = ip(m.ip_src);
            k.ip_dst = ip(m.ip_dst);
            k.ip_proto = m.ip_proto.unwrap_or(0);
            k.ip_tos = val(m.ip_tos);
            k.ip_ttl = val(m.ip_ttl);
            k.ip_frag = val(m.ip_frag);
            if matches!(k.ip_proto, IPPROTO_ICMP | IPPROTO_ICMPV6) {
                k.tp_src = u16::from(val(m.icmp_type));
                k.tp_dst = u16::from(val(m.icmp_code));
            } else {
                k.tp_src = val(m.l4_src);
                k.tp_dst = val(m.l4_dst);
                k.tcp_flags = val(m.tcp_flags);
            }
        }
        ETH_P_ARP => {
            k.ip_proto = val(m.arp_op);
            k.ip_src = ip(m.arp_sip);
            k.ip_dst = ip(m.arp_tip);
            k.arp_sha = val(m.arp_sha);
            k.arp_tha = val(m.arp_tha);
        }
        _ => {}
    }
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{REP0, VXLAN, ports};
    use crate::translate::translate;
    use datapath::flow::frag;
    use datapath::{Action, Actions, FlowMask, Megaflow, PortId};
    use proptest::prelude::*;

    /// A megaflow with random values and each field either wildcarded or matched with
    /// a random mask, on a representor or on the tunnel device.
    fn megaflow(decap: bool, sel: u32, v: &[u8; 64], msk: &[u8; 64]) -> Megaflow {
        let mut k = FlowKey::default();
        let mut m = FlowMask::default();
        let on = |bit: u32| sel & (1 << bit) != 0;
        let b16 = |i: usize| u16::from_ne_bytes([v[i], v[i + 1]]);
        let m16 = |i: usize| u16::from_ne_bytes([msk[i], msk[i + 1]]);
        k.in_port = if decap { VXLAN.0 } else { REP0.0 };
        m.in_port = u32::MAX;
        k.eth_type = [0x0800, 0x86dd, 0x0806, 0x88cc][usize::from(v[0] % 4)];
        m.eth_type = 0xffff;
        let v6 = k.eth_type == 0x86dd;
        if on(0) {
            k.eth_src.copy_from_slice(&v[1..7]);
            m.eth_src.copy_from_slice(&msk[1..7]);
        }
        if on(1) {
            k.eth_dst.copy_from_slice(&v[7..13]);
            m.eth_dst = [0xff; 6];
        }
        if on(2) {
            // One tag (id and priority exact), or none.
            m.vlan_tci[0] = 0xffff;
            m.vlan_tpid[0] = 0xffff;
            if on(3) {
                k.vlan_tci[0] = vlan::PRESENT | (b16(13) & !vlan::PRESENT);
                k.vlan_tpid[0] = 0x8100;
            }
        }
        let n = if v6 { 16 } else { 4 };
        if on(4) {
            k.ip_src[..n].copy_from_slice(&v[15..15 + n]);
            m.ip_src[..n].copy_from_slice(&msk[15..15 + n]);
        }
        if on(5) {
            k.ip_dst[..n].copy_from_slice(&v[31..31 + n]);
            m.ip_dst[..n].fill(0xff);
        }
        if on(6) {
            k.ip_proto = [1, 6, 17, 58][usize::from(v[47] % 4)];
            m.ip_proto = 0xff;
            if on(7) {
                k.tp_src = b16(48);
                m.tp_src = m16(48);
            }
            if on(8) {
                k.tp_dst = b16(50);
                m.tp_dst = 0xffff;
            }
        }
        if on(9) {
            k.ip_ttl = v[52];
            m.ip_ttl = 0xff;
            k.ip_tos = v[53];
            m.ip_tos = msk[53];
        }
        if on(10) {
            k.ip_frag = v[54] & frag::ANY;
            m.ip_frag = frag::ANY;
        }
        if decap {
            k.tun_flags = tun_flags::PRESENT | tun_flags::KEY;
            m.tun_flags = tun_flags::PRESENT | tun_flags::IPV6;
            k.tun_vni = u32::from(v[55]);
            m.tun_vni = if on(11) { u32::MAX } else { 0 };
            k.tun_src[..4].copy_from_slice(&v[56..60]);
            m.tun_src[..4].fill(0xff);
            if on(12) {
                k.tun_dst[..4].copy_from_slice(&v[60..64]);
                m.tun_dst[..4].fill(0xff);
            }
        }
        Megaflow::new(&k, &m)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// For every megaflow flower can express, the key adoption derives from its
        /// filter lies in that megaflow (so the slow path sees the same class).
        #[test]
        fn representative_key_lies_in_its_megaflow(
            decap in any::<bool>(),
            sel in any::<u32>(),
            v in any::<[u8; 64]>(),
            msk in any::<[u8; 64]>(),
        ) {
            let mf = megaflow(decap, sel, &v, &msk);
            let out = if decap { crate::tests::REP1 } else { PortId(2) };
            let table = ports(1450, 1500);
            if let Ok(rule) = translate(&mf, &Actions::new(vec![Action::Output(out)]), &table) {
                let k = representative_key(&rule, &table).expect("known ingress");
                prop_assert_eq!(Megaflow::new(&k, &mf.mask), mf);
            }
        }
    }

    #[test]
    fn a_filter_on_an_unknown_device_has_no_key() {
        let rule = FlowerRule {
            ingress: datapath::IfIndex(999),
            matches: crate::FlowerMatch::default(),
            actions: vec![],
        };
        assert_eq!(representative_key(&rule, &ports(1450, 1500)), None);
    }
}
