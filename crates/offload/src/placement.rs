//! Where a flow runs: [`Placement`], shown as `offloaded:yes dp:tc in_hw` or
//! `offloaded:no (mtu: 1500 + 50 > 1500)`.

use crate::backend::HwState;
use std::fmt;
use std::net::IpAddr;

/// Why a flow runs in software.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SoftwareReason {
    /// Queued for offload; software forwards meanwhile.
    Pending,
    /// Flower cannot express the match or an action.
    Unsupported(crate::error::Unsupported),
    /// Ingress and egress are not on the same eswitch.
    SwitchId {
        /// Which ports, in words.
        detail: String,
    },
    /// Representor MTU + encapsulation overhead exceeds the uplink MTU.
    Mtu {
        /// The representor's MTU.
        port_mtu: u32,
        /// 50 (VXLAN over IPv4) or 70 (over IPv6).
        overhead: u32,
        /// The uplink's MTU.
        uplink_mtu: u32,
    },
    /// The tunnel endpoint's route or next-hop MAC is not resolved yet.
    Neighbour {
        /// The remote tunnel endpoint.
        remote: IpAddr,
    },
    /// The path to the tunnel endpoint is unusable, as the resolver (fibwatch) says:
    /// no route, uplink down, next hop unresolved.
    Path {
        /// The remote tunnel endpoint.
        remote: IpAddr,
        /// Why, in the resolver's words.
        why: String,
    },
    /// A drop on an uplink's ingress: never a tc filter, which would also drop the
    /// host's own traffic on the uplink.
    UplinkDrop,
    /// The port table does not know a port the flow uses.
    UnknownPort(datapath::PortId),
    /// The backend refused or failed (the kernel's errno and extack message).
    Backend(String),
    /// The backend answered too late; the rule was withdrawn.
    Timeout {
        /// How long the answer took, in milliseconds.
        elapsed_ms: u64,
    },
    /// The offload queue was full; the request was dropped.
    QueueFull,
}

impl fmt::Display for SoftwareReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoftwareReason::Pending => f.write_str("pending"),
            SoftwareReason::Unsupported(u) => write!(f, "{u}"),
            SoftwareReason::SwitchId { detail } => write!(f, "switch id: {detail}"),
            SoftwareReason::Mtu {
                port_mtu,
                overhead,
                uplink_mtu,
            } => {
                write!(f, "mtu: {port_mtu} + {overhead} > {uplink_mtu}")
            }
            SoftwareReason::Neighbour { remote } => {
                write!(f, "neighbour: next hop toward {remote} unresolved")
            }
            SoftwareReason::Path { remote, why } => write!(f, "{why} (toward {remote})"),
            SoftwareReason::UplinkDrop => {
                f.write_str("uplink drop: kept in software, a filter would drop the host's traffic")
            }
            SoftwareReason::UnknownPort(p) => write!(f, "unknown port {p}"),
            SoftwareReason::Backend(e) => write!(f, "backend: {e}"),
            SoftwareReason::Timeout { elapsed_ms } => {
                write!(f, "timeout: backend answered after {elapsed_ms} ms")
            }
            SoftwareReason::QueueFull => f.write_str("offload queue full"),
        }
    }
}

/// Where a flow runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// A filter for the flow is installed.
    Offloaded {
        /// The backend (`tc`, `sim`).
        backend: &'static str,
        /// The ingress device's name.
        device: String,
        /// What the kernel/hardware reported.
        in_hw: HwState,
    },
    /// The flow runs in flowd's software datapath.
    Software {
        /// Why.
        reason: SoftwareReason,
    },
}

impl Placement {
    /// Whether the flow has a filter installed.
    pub fn is_offloaded(&self) -> bool {
        matches!(self, Placement::Offloaded { .. })
    }

    /// Software placement with a reason.
    pub fn software(reason: SoftwareReason) -> Self {
        Placement::Software { reason }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Offloaded {
                backend,
                device,
                in_hw,
            } => {
                write!(f, "offloaded:yes dp:{backend} {in_hw} dev:{device}")
            }
            Placement::Software { reason } => write!(f, "offloaded:no ({reason})"),
        }
    }
}
