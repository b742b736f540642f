//! UDP-tunnel segmentation for uplinks: each uplink gets a tap
//! ([`TunnelInjector`]) whose ingress tc redirects to the uplink's egress, so that VXLAN
//! output hands the kernel each TCP super-frame whole (see `datapath::port`'s
//! `TunnelInjector` and `docs/architecture.md`). Where the kernel has no UDP-tunnel
//! segmentation for tun (before Linux 6.17), or the redirect cannot be set up, the
//! uplink goes without and VXLAN output segments in flowd, as before.
//!
//! The tap's receive runs in a kernel thread of its own ([`TapMode::Threaded`]).
//! `FLOWD_TUNNEL_GSO` in the environment: `off` leaves the taps out, `inline` has
//! each write carry its frame to the uplink in flowd's own thread (to compare, or to
//! rule either out).

use datapath::IfIndex;
use datapath::port::{AfPacketPort, Port, TapMode, TunnelInjector};

/// What the environment asked for: no tap (None), or the tap's mode.
fn wanted() -> Option<TapMode> {
    match std::env::var_os("FLOWD_TUNNEL_GSO") {
        Some(v) if v == "off" => None,
        Some(v) if v == "inline" => Some(TapMode::Inline),
        _ => Some(TapMode::Threaded),
    }
}

/// Gives the sockets of uplink `name` (one per datapath thread) a tap whose frames go
/// out of the uplink, if the kernel can cut them; logs what it did and why not.
pub fn attach(name: &str, sockets: &mut [AfPacketPort]) {
    let Some(uplink) = sockets.first().and_then(|s| s.ifindex()) else {
        return;
    };
    let Some(mode) = wanted() else {
        tracing::info!(port = %name, "UDP-tunnel segmentation off (FLOWD_TUNNEL_GSO=off)");
        return;
    };
    let inj = match TunnelInjector::open(mode) {
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
    if mode != inj.mode() {
        tracing::info!(
            port = %name, tap = %inj.name(),
            "the tap's receive cannot run in a thread of its own (/sys/class/net/<tap>/threaded, Linux 5.12): frames go through it inline"
        );
    }
    tracing::info!(
        port = %name, tap = %inj.name(), mode = ?inj.mode(),
        "VXLAN super-frames leave whole, cut by the kernel (UDP-tunnel segmentation)"
    );
}
