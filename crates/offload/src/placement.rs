//! Where a flow runs: [`Placement`], shown as `offloaded:yes dp:tc in_hw` or
//! `offloaded:no (mtu: 1500 + 50 > 1500)`, and the one reason type, [`SoftwareReason`],
//! that every report of it uses: dump-flows prints it, `flowctl stats` and the metrics
//! count flows by its stable [`category`](SoftwareReason::category). Nothing parses a
//! reason back from its text.

use crate::backend::HwState;
use std::fmt;
use std::net::IpAddr;
use vocab::{IfIndex, LookupKey, PathProblem};

/// Why a flow runs in software.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SoftwareReason {
    /// Queued for offload (or waiting for room in the queue); software forwards
    /// meanwhile.
    Pending,
    /// The offload policy is `off`: every flow runs in flowd's software datapath.
    Off,
    /// Flower cannot express the match or an action.
    Unsupported(crate::error::Unsupported),
    /// Ingress and egress are not on the same eswitch.
    SwitchId {
        /// Which ports, in words.
        detail: String,
    },
    /// Representor MTU + encapsulation overhead exceeds the path MTU.
    Mtu {
        /// The representor's MTU.
        port_mtu: u32,
        /// 50 (VXLAN over IPv4) or 70 (over IPv6), plus the IPsec SA's transform on a
        /// protected path.
        overhead: u32,
        /// The path MTU toward the remote VTEP.
        uplink_mtu: u32,
    },
    /// Routing has no usable path for the tunnel's lookup key.
    Path {
        /// The lookup key.
        key: LookupKey,
        /// Why.
        problem: PathProblem,
    },
    /// The next hop's MAC is not resolved yet (fibwatch is probing it).
    NextHopUnresolved {
        /// The lookup key.
        key: LookupKey,
        /// The neighbour being resolved.
        neighbour: IpAddr,
    },
    /// The path leaves by an interface that is not one of flowd's uplinks.
    UplinkNotManaged {
        /// The lookup key.
        key: LookupKey,
        /// The interface.
        ifindex: IfIndex,
    },
    /// The host's IPsec policy protects the path and a filter's packets would not stay
    /// encrypted (or the policy blocks, or has no SA yet): the flow stays in software,
    /// which sends through the kernel's IP output.
    Ipsec {
        /// The lookup key.
        key: LookupKey,
        /// Why, in words.
        detail: String,
    },
    /// A port the flow uses (ingress, output or uplink) is down.
    LinkDown {
        /// The port's name.
        port: String,
    },
    /// A drop on an uplink's ingress: never a tc filter, which would also drop the
    /// host's own traffic on the uplink.
    UplinkDrop,
    /// The port table does not know a port the flow uses.
    UnknownPort(datapath::PortId),
    /// The backend refused (the kernel's errno and extack message); not retried until
    /// a fact about the flow changes.
    Backend(String),
    /// The backend is full (ENOSPC): retried when capacity frees, and on a schedule.
    Capacity(String),
    /// A transient backend failure (or a late answer): retried on a schedule.
    Retrying {
        /// What failed.
        error: String,
        /// Attempts so far.
        attempts: u32,
    },
}

impl SoftwareReason {
    /// A stable, machine-readable name for the kind of reason: the label metrics and
    /// `flowctl stats` count flows by, and what `dump-flows --reason` selects.
    pub fn category(&self) -> &'static str {
        match self {
            SoftwareReason::Pending => "pending",
            SoftwareReason::Off => "off",
            SoftwareReason::Unsupported(_) => "unsupported",
            SoftwareReason::SwitchId { .. } => "switch_id",
            SoftwareReason::Mtu { .. } => "mtu",
            SoftwareReason::Path { .. } => "no_route",
            SoftwareReason::NextHopUnresolved { .. } => "neighbour",
            SoftwareReason::UplinkNotManaged { .. } => "unmanaged_uplink",
            SoftwareReason::Ipsec { .. } => "ipsec",
            SoftwareReason::LinkDown { .. } => "link_down",
            SoftwareReason::UplinkDrop => "uplink_drop",
            SoftwareReason::UnknownPort(_) => "unknown_port",
            SoftwareReason::Backend(_) => "backend",
            SoftwareReason::Capacity(_) => "capacity",
            SoftwareReason::Retrying { .. } => "retrying",
        }
    }

    /// Every category, for operators and tests.
    pub const CATEGORIES: [&'static str; 15] = [
        "pending",
        "off",
        "unsupported",
        "switch_id",
        "mtu",
        "no_route",
        "neighbour",
        "unmanaged_uplink",
        "ipsec",
        "link_down",
        "uplink_drop",
        "unknown_port",
        "backend",
        "capacity",
        "retrying",
    ];
}

impl fmt::Display for SoftwareReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoftwareReason::Pending => f.write_str("pending"),
            SoftwareReason::Off => f.write_str("offload off"),
            SoftwareReason::Unsupported(u) => write!(f, "{u}"),
            SoftwareReason::SwitchId { detail } => write!(f, "switch id: {detail}"),
            SoftwareReason::Mtu {
                port_mtu,
                overhead,
                uplink_mtu,
            } => {
                write!(f, "mtu: {port_mtu} + {overhead} > {uplink_mtu}")
            }
            SoftwareReason::Path { key, problem } => write!(f, "{problem} (toward {key})"),
            SoftwareReason::NextHopUnresolved { key, neighbour } => {
                write!(f, "neighbour: next hop {neighbour} toward {key} unresolved")
            }
            SoftwareReason::UplinkNotManaged { key, ifindex } => write!(
                f,
                "unmanaged uplink: the path toward {key} leaves by if{ifindex}, not a flowd uplink"
            ),
            SoftwareReason::Ipsec { key, detail } => write!(f, "ipsec: {detail} (toward {key})"),
            SoftwareReason::LinkDown { port } => write!(f, "link down: {port}"),
            SoftwareReason::UplinkDrop => {
                f.write_str("uplink drop: kept in software, a filter would drop the host's traffic")
            }
            SoftwareReason::UnknownPort(p) => write!(f, "unknown port {p}"),
            SoftwareReason::Backend(e) => write!(f, "backend: {e}"),
            SoftwareReason::Capacity(e) => {
                write!(f, "capacity: {e} (retried when filters are removed)")
            }
            SoftwareReason::Retrying { error, attempts } => {
                write!(f, "retrying: {error} (attempt {attempts})")
            }
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

    /// The software reason, if the flow runs in software.
    pub fn reason(&self) -> Option<&SoftwareReason> {
        match self {
            Placement::Software { reason } => Some(reason),
            Placement::Offloaded { .. } => None,
        }
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

/// Placements shared between flows: a million offloaded flows have a handful of
/// distinct placements (`offloaded:yes dp:sim in_hw dev:rep0`, `pending`, ...), so each
/// flow holds an `Arc` of one (8 bytes) instead of its own copy (72 bytes and the
/// device's name on the heap). A small list of the placements handed out lately,
/// searched linearly; placements no flow holds any more leave it when it is full.
#[derive(Debug, Default)]
pub(crate) struct PlacementCache {
    recent: Vec<std::sync::Arc<Placement>>,
}

impl PlacementCache {
    /// At most this many placements are remembered.
    const MAX: usize = 64;

    /// The shared copy of `p`.
    pub(crate) fn get(&mut self, p: Placement) -> std::sync::Arc<Placement> {
        if let Some(a) = self.recent.iter().find(|a| ***a == p) {
            return a.clone();
        }
        if self.recent.len() >= Self::MAX {
            self.recent.retain(|a| std::sync::Arc::strong_count(a) > 1);
            if self.recent.len() >= Self::MAX {
                self.recent.remove(0);
            }
        }
        let a = std::sync::Arc::new(p);
        self.recent.push(a.clone());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_placements_are_one_shared_copy() {
        let mut c = PlacementCache::default();
        let on = |dev: &str| Placement::Offloaded {
            backend: "sim",
            device: dev.into(),
            in_hw: HwState::InHw { count: 1 },
        };
        let a = c.get(on("rep0"));
        let b = c.get(on("rep0"));
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        let other = c.get(on("rep1"));
        assert!(!std::sync::Arc::ptr_eq(&a, &other));
        assert_eq!(*other, on("rep1"));
        // Full: placements nobody holds make room; held ones stay shared.
        for i in 0..200 {
            let p = Placement::software(SoftwareReason::Retrying {
                error: format!("e{i}"),
                attempts: i,
            });
            assert_eq!(*c.get(p.clone()), p);
        }
        assert!(c.recent.len() <= PlacementCache::MAX);
        assert!(std::sync::Arc::ptr_eq(&a, &c.get(on("rep0"))));
    }
}
