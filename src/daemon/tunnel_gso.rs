//! UDP-tunnel segmentation for uplinks: each uplink gets a tap
//! ([`TunnelInjector`]) whose ingress tc redirects to the uplink's egress, so that VXLAN
//! output hands the kernel each TCP super-frame whole (see `datapath::port`'s
//! `TunnelInjector` and `docs/architecture.md`). Where the kernel has no UDP-tunnel
//! segmentation for tun (before Linux 6.17), or the redirect cannot be set up, the
//! uplink goes without and VXLAN output segments in flowd, as before.
//!
//! `FLOWD_TUNNEL_GSO=off` in the environment turns it off (to compare, or to rule it out).

use datapath::IfIndex;
use datapath::port::{AfPacketPort, Port, TunnelInjector};

/// Whether the environment turned UDP-tunnel segmentation off.
fn disabled() -> bool {
    std::env::var_os("FLOWD_TUNNEL_GSO").is_some_and(|v| v == "off")
}

/// Gives the sockets of uplink `name` (one per datapath thread) a tap whose frames go
/// out of the uplink, if the kernel can cut them; logs what it did and why not.
pub fn attach(name: &str, sockets: &mut [AfPacketPort]) {
    let Some(uplink) = sockets.first().and_then(|s| s.ifindex()) else {
        return;
    };
    if disabled() {
        tracing::info!(port = %name, "UDP-tunnel segmentation off (FLOWD_TUNNEL_GSO=off)");
        return;
    }
    let inj = match TunnelInjector::open() {
        Ok(i) => i,
        Err(e) if TunnelInjector::is_unsupported(&e) => {
            tracing::info!(
                port = %name, error = %e,
                "no UDP-tunnel segmentation in this kernel (tun, Linux 6.17): VXLAN super-frames are segmented by flowd"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(port = %name, error = %e, "no UDP-tunnel tap: VXLAN super-frames are segmented by flowd");
            return;
        }
    };
    if let Err(e) = offload::netlink::redirect_ingress(IfIndex(inj.ifindex()), uplink) {
        tracing::warn!(
            port = %name, tap = %inj.name(), error = %e,
            "cannot redirect the UDP-tunnel tap to the uplink (sch_ingress, cls_u32, act_mirred): VXLAN super-frames are segmented by flowd"
        );
        return;
    }
    for s in sockets.iter_mut() {
        match inj.try_clone() {
            Ok(c) => s.set_tunnel_injector(c),
            Err(e) => {
                tracing::warn!(port = %name, error = %e, "UDP-tunnel tap: dup");
                return;
            }
        }
    }
    tracing::info!(
        port = %name, tap = %inj.name(),
        "VXLAN super-frames leave whole, cut by the kernel (UDP-tunnel segmentation)"
    );
}
