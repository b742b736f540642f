//! Checks before offload: same eswitch, MTU with encapsulation overhead, resolved next
//! hop. Each refusal is a [`SoftwareReason`].

use crate::placement::SoftwareReason;
use crate::ports::{PortInfo, PortKind, PortTable};
use crate::rule::{FlowerAction, FlowerRule};
use datapath::IfIndex;
use datapath::tunnel::TunnelResolver;
use std::net::IpAddr;

/// VXLAN over IPv4: 14 Ethernet + 20 IPv4 + 8 UDP + 8 VXLAN.
pub const VXLAN_V4_OVERHEAD: u32 = 50;
/// VXLAN over IPv6: 14 + 40 + 8 + 8.
pub const VXLAN_V6_OVERHEAD: u32 = 70;

/// What validation needs.
pub struct ValidateCtx<'a> {
    /// The ports.
    pub ports: &'a PortTable,
    /// Tunnel routes (fibwatch in production).
    pub resolver: &'a dyn TunnelResolver,
}

fn port(ports: &PortTable, ifindex: IfIndex) -> Result<&PortInfo, SoftwareReason> {
    ports
        .by_ifindex(ifindex)
        .ok_or_else(|| SoftwareReason::SwitchId {
            detail: format!("device if{ifindex} is not a managed port"),
        })
}

fn same_switch(a: &PortInfo, b: &PortInfo) -> Result<(), SoftwareReason> {
    match (&a.switch_id, &b.switch_id) {
        (Some(x), Some(y)) if x == y => Ok(()),
        (None, _) => Err(SoftwareReason::SwitchId {
            detail: format!("{} is on no eswitch", a.name),
        }),
        (_, None) => Err(SoftwareReason::SwitchId {
            detail: format!("{} is on no eswitch", b.name),
        }),
        _ => Err(SoftwareReason::SwitchId {
            detail: format!("{} and {} are on different eswitches", a.name, b.name),
        }),
    }
}

/// Validates a translated rule, filling unresolved tunnel sources from the resolver.
pub fn validate(rule: &mut FlowerRule, ctx: &ValidateCtx<'_>) -> Result<(), SoftwareReason> {
    let ingress = port(ctx.ports, rule.ingress)?.clone();
    // The host's own stack shares the uplink (its addresses, ARP, the kernel's VXLAN
    // socket): a filter there that forwards nowhere would black-hole all of that. flowd
    // only drops its own tap copy of such packets, in software.
    let forwards = rule
        .actions
        .iter()
        .any(|a| matches!(a, FlowerAction::Redirect(_) | FlowerAction::Mirror(_)));
    if ingress.kind == PortKind::Uplink && !forwards {
        return Err(SoftwareReason::UplinkDrop);
    }
    for a in &mut rule.actions {
        match a {
            FlowerAction::TunnelSet(t) => {
                let route = ctx.resolver.resolve(t.dst).ok_or_else(|| {
                    match ctx.resolver.unresolved_reason(t.dst) {
                        Some(why) => SoftwareReason::Path { remote: t.dst, why },
                        None => SoftwareReason::Neighbour { remote: t.dst },
                    }
                })?;
                let uplink = ctx
                    .ports
                    .get(route.egress)
                    .ok_or(SoftwareReason::UnknownPort(route.egress))?;
                if ingress.kind != PortKind::Tunnel {
                    same_switch(&ingress, uplink)?;
                }
                let overhead = match t.dst {
                    IpAddr::V4(_) => VXLAN_V4_OVERHEAD,
                    IpAddr::V6(_) => VXLAN_V6_OVERHEAD,
                };
                // The path MTU the resolver reports is live (route MTU, else the
                // uplink's current MTU); the port table's is the start-up value.
                let path_mtu = u32::from(route.mtu);
                if ingress.mtu + overhead > path_mtu {
                    return Err(SoftwareReason::Mtu {
                        port_mtu: ingress.mtu,
                        overhead,
                        uplink_mtu: path_mtu,
                    });
                }
                if t.src.is_unspecified() {
                    t.src = route.src_ip;
                }
            }
            FlowerAction::Redirect(dev) | FlowerAction::Mirror(dev) => {
                let out = port(ctx.ports, *dev)?;
                if out.kind != PortKind::Tunnel && ingress.kind != PortKind::Tunnel {
                    same_switch(&ingress, out)?;
                }
                if out.kind != PortKind::Tunnel
                    && ingress.kind == PortKind::Tunnel
                    && out.switch_id.is_none()
                {
                    return Err(SoftwareReason::SwitchId {
                        detail: format!("{} is on no eswitch", out.name),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}
