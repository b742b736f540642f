//! What a flow does: the action list of a megaflow.
//!
//! An empty list drops the packet. Actions run in order on the packet; `Output` sends a
//! copy of the packet as it is at that point.

use crate::PortId;
use std::net::IpAddr;
use std::sync::Arc;
use vocab::LookupKey;

/// Outer header parameters of a VXLAN encapsulation (`set(tunnel(...))`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelAttrs {
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Outer source IP; `None` lets the tunnel resolver pick the route's source.
    pub src: Option<IpAddr>,
    /// Outer destination IP (the remote VTEP).
    pub dst: IpAddr,
    /// Outer TOS.
    pub tos: u8,
    /// Outer TTL (0 means the datapath default, 64).
    pub ttl: u8,
    /// Outer UDP destination port (4789 by default).
    pub tp_dst: u16,
    /// Whether to compute the outer UDP checksum (on by default over IPv6: a zero UDP
    /// checksum over IPv6 is dropped by a standard receiver, RFC 6935/6936).
    pub csum: bool,
    /// Whether to set DF on the outer IPv4 header (on by default: the outer packet is
    /// never fragmented on the way; with DF clear its IPv4 ID varies, RFC 6864).
    pub df: bool,
    /// The outer packet's mark (`skb->mark`), which policy routing (`ip rule fwmark`)
    /// may use to choose its path; 0: none. Part of the tunnel's [`LookupKey`].
    pub mark: u32,
}

impl TunnelAttrs {
    /// Encapsulation with the defaults for a VNI and remote VTEP: TTL 64, UDP port 4789,
    /// DF set, the outer UDP checksum over IPv6 only (as the kernel's vxlan devices do).
    pub fn vxlan(vni: u32, dst: IpAddr) -> Self {
        Self {
            vni,
            src: None,
            dst,
            tos: 0,
            ttl: 64,
            tp_dst: 4789,
            csum: dst.is_ipv6(),
            df: true,
            mark: 0,
        }
    }

    /// What the outer packet is routed by: the remote VTEP, the fixed source if any, and
    /// the mark. The software datapath, fibwatch and offload all use this one key.
    pub fn lookup_key(&self) -> LookupKey {
        LookupKey {
            dst: self.dst,
            src: self.src,
            mark: self.mark,
        }
    }
}

/// One datapath action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Send the packet out of a port. Out of a tunnel port, it is encapsulated with the
    /// tunnel attributes set by a preceding [`Action::SetTunnel`].
    Output(PortId),
    /// Push an 802.1Q/802.1ad tag.
    PushVlan {
        /// 0x8100 or 0x88a8.
        tpid: u16,
        /// The tag control information (PCP, DEI, VID).
        tci: u16,
    },
    /// Remove the outermost VLAN tag.
    PopVlan,
    /// Set the tunnel metadata used by the next output to a tunnel port.
    SetTunnel(TunnelAttrs),
    /// Send the packet to the slow path.
    Userspace,
}

/// An immutable, cheaply cloned action list. Empty means drop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Actions(Arc<[Action]>);

impl Actions {
    /// The drop action list.
    pub fn drop() -> Self {
        Self(Arc::from(Vec::new()))
    }

    /// Builds an action list.
    pub fn new(list: Vec<Action>) -> Self {
        Self(Arc::from(list))
    }

    /// The actions, in order.
    pub fn as_slice(&self) -> &[Action] {
        &self.0
    }

    /// Whether the list drops the packet.
    pub fn is_drop(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<Action>> for Actions {
    fn from(v: Vec<Action>) -> Self {
        Self::new(v)
    }
}

/// Action lists shared between flows: the flows a port opens toward one network
/// mostly do the same (flood to the same ports, encapsulate toward the same VTEP), so
/// the slow path installs them with one list rather than a copy each (about 110 bytes
/// per flow at issue 15's million flows). Lists no flow holds any more leave when the
/// set has doubled since it was last swept.
#[derive(Debug, Default)]
pub(crate) struct SharedActions {
    lists: crate::fastmap::FastSet<Actions>,
    sweep_at: usize,
}

impl SharedActions {
    /// The shared copy of `actions`.
    pub(crate) fn get(&mut self, actions: &Actions) -> Actions {
        if let Some(a) = self.lists.get(actions) {
            return a.clone();
        }
        if self.lists.len() >= self.sweep_at {
            self.lists.retain(|a| Arc::strong_count(&a.0) > 1);
            self.sweep_at = (self.lists.len() * 2).max(64);
        }
        self.lists.insert(actions.clone());
        actions.clone()
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn equal_action_lists_are_one_shared_list() {
        let mut s = SharedActions::default();
        let a = s.get(&Actions::new(vec![Action::Output(PortId(1))]));
        let b = s.get(&Actions::new(vec![Action::Output(PortId(1))]));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let c = s.get(&Actions::new(vec![Action::Output(PortId(2))]));
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert_eq!(c.as_slice(), &[Action::Output(PortId(2))]);
        // Lists nobody holds leave; held ones stay shared.
        for i in 0..500u32 {
            s.get(&Actions::new(vec![Action::Output(PortId(i + 10))]));
        }
        assert!(s.lists.len() <= 128, "{}", s.lists.len());
        let again = s.get(&Actions::new(vec![Action::Output(PortId(1))]));
        assert!(Arc::ptr_eq(&a.0, &again.0));
    }
}
