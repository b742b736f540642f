//! The judge: where a flow belongs, decided in one place, from live facts.
//!
//! [`judge`] is a pure function of a translated rule, the tunnel paths the flow depends
//! on, and two kinds of facts:
//! - the ports' live facts ([`PortTable`]): role, MTU, link state and switch id of every
//!   port, kept current from rtnetlink by the daemon;
//! - the path facts of each tunnel lookup key (remote VTEP, fixed source or none, mark),
//!   as fibwatch resolved them: the egress uplink, source, next hop and its MAC, and the
//!   path MTU, or why there is no path.
//!
//! It either accepts the rule (filling each tunnel's source from its path) or names the
//! one [`SoftwareReason`] the flow stays in software for. The checks, in order:
//! 1. the ingress port is known and up; a drop on an uplink's ingress stays in software
//!    (a filter there would drop the host's own traffic);
//! 2. per encapsulation (`tunnel_key set`, after an optional `skbedit mark`): the key has
//!    a path; its uplink is one of flowd's uplinks and is up; it is on the ingress
//!    port's eswitch; if the host's IPsec policy selects the path, the result stays
//!    encrypted (below); representor MTU + encapsulation overhead (50 over IPv4, 70 over
//!    IPv6, plus the SA's transform when IPsec protects the path) fits the path MTU;
//!    the next hop's MAC is resolved (hardware encapsulation needs complete L2
//!    information);
//! 3. per output (`mirred`): the port is known and up, on the ingress port's eswitch
//!    (a tunnel device on either side is exempt: it is the software end of a tunnel);
//! 4. per decapsulation path: the key has a path, whose uplink is one of flowd's, up,
//!    and on the output representor's eswitch; if IPsec protects it, the result stays
//!    encrypted.
//!
//! # IPsec
//! A filter's encapsulated packets leave through the tunnel device, so in tc's software
//! path they pass the kernel's IP output and its IPsec policy; in hardware the NIC sends
//! them itself, in clear unless it holds the path's SA with packet offload. A decap
//! filter in hardware likewise takes the remote's packets off the wire before the
//! kernel could check its inbound policy. So on a protected path ([`vocab::Ipsec`]) a
//! flow is offloaded only if the backend keeps its filters out of hardware
//! ([`Facts::hardware`] false: tc `skip_hw`) or the path's SA is a packet-offload SA on
//! the path's uplink; never while the policy blocks or has no SA yet (the software path
//! holds those, and counts them).
//! The offloader applies the judge whenever a flow is offered and whenever a fact it
//! depends on changes (a path, a port), so a placement is always the judge's verdict
//! on the facts as they are now.

use crate::placement::SoftwareReason;
use crate::ports::{PortInfo, PortKind, PortTable};
use crate::rule::{FlowerAction, FlowerRule, TunnelKeySet};
use datapath::fastmap::FastMap;
use vocab::{IfIndex, LookupKey, Path, PathFacts, PathProblem};

/// The facts a judgement reads.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    /// The ports, with their live MTU, state and switch id.
    pub ports: &'a PortTable,
    /// Path facts per lookup key.
    pub paths: &'a FastMap<LookupKey, PathFacts>,
    /// Whether the backend's filters may run in hardware (tc: any policy but
    /// `skip_hw`).
    pub hardware: bool,
}

impl Facts<'_> {
    fn port(&self, ifindex: IfIndex) -> Result<&PortInfo, SoftwareReason> {
        self.ports
            .by_ifindex(ifindex)
            .ok_or_else(|| SoftwareReason::SwitchId {
                detail: format!("device if{ifindex} is not a managed port"),
            })
    }

    /// The path of `key` and the uplink port it leaves by, which must be up.
    fn path(&self, key: &LookupKey) -> Result<(Path, &PortInfo), SoftwareReason> {
        let path = match self.paths.get(key) {
            Some(Ok(p)) => *p,
            Some(Err(problem)) => {
                return Err(SoftwareReason::Path {
                    key: *key,
                    problem: *problem,
                });
            }
            None => {
                return Err(SoftwareReason::Path {
                    key: *key,
                    problem: PathProblem::Unknown,
                });
            }
        };
        let uplink = match self.ports.by_ifindex(path.uplink) {
            Some(u) if u.kind == PortKind::Uplink => u,
            _ => {
                return Err(SoftwareReason::UplinkNotManaged {
                    key: *key,
                    ifindex: path.uplink,
                });
            }
        };
        up(uplink)?;
        Ok((path, uplink))
    }
}

/// On a path IPsec protects, whether a filter's result stays encrypted (module docs).
fn stays_encrypted(key: &LookupKey, path: &Path, hardware: bool) -> Result<(), SoftwareReason> {
    let Some(ipsec) = path.ipsec else {
        return Ok(());
    };
    let refuse = |why: String| {
        Err(SoftwareReason::Ipsec {
            key: *key,
            detail: why,
        })
    };
    if ipsec.blocks {
        return refuse(format!("policy {} blocks the path", ipsec.policy));
    }
    let Some(sa) = ipsec.sa else {
        return refuse(format!("policy {} has no SA yet", ipsec.policy));
    };
    if hardware && sa.packet_offload != Some(path.uplink) {
        return refuse(format!(
            "SA {:#x} is not packet-offloaded on the uplink (if{}): hardware would bypass it",
            sa.spi, path.uplink
        ));
    }
    Ok(())
}

fn up(p: &PortInfo) -> Result<(), SoftwareReason> {
    if p.up {
        Ok(())
    } else {
        Err(SoftwareReason::LinkDown {
            port: p.name.clone(),
        })
    }
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

/// Judges a translated rule (see the module docs). `decap` are the lookup keys of the
/// tunnels the flow decapsulates from. On success the rule's unresolved tunnel sources
/// are filled from their paths.
pub fn judge(
    rule: &mut FlowerRule,
    decap: &[LookupKey],
    facts: &Facts<'_>,
) -> Result<(), SoftwareReason> {
    let ingress = facts.port(rule.ingress)?;
    up(ingress)?;
    let forwards = rule
        .actions
        .iter()
        .any(|a| matches!(a, FlowerAction::Redirect(_) | FlowerAction::Mirror(_)));
    if ingress.kind == PortKind::Uplink && !forwards {
        return Err(SoftwareReason::UplinkDrop);
    }
    let mut mark = 0;
    let mut first_out: Option<&PortInfo> = None;
    for a in &mut rule.actions {
        match a {
            FlowerAction::SetMark(m) => mark = *m,
            FlowerAction::TunnelSet(t) => encap(ingress, t, mark, facts)?,
            FlowerAction::Redirect(dev) | FlowerAction::Mirror(dev) => {
                let out = facts.port(*dev)?;
                up(out)?;
                if out.kind != PortKind::Tunnel && ingress.kind != PortKind::Tunnel {
                    same_switch(ingress, out)?;
                }
                if out.kind != PortKind::Tunnel
                    && ingress.kind == PortKind::Tunnel
                    && out.switch_id.is_none()
                {
                    return Err(SoftwareReason::SwitchId {
                        detail: format!("{} is on no eswitch", out.name),
                    });
                }
                first_out.get_or_insert(out);
            }
            _ => {}
        }
    }
    for key in decap {
        let (path, uplink) = facts.path(key)?;
        stays_encrypted(key, &path, facts.hardware)?;
        if let Some(rep) = first_out.filter(|p| p.kind != PortKind::Tunnel) {
            same_switch(rep, uplink)?;
        }
    }
    Ok(())
}

/// An encapsulation's path facts: its uplink on the ingress's eswitch, IPsec, the MTU
/// with the tunnel's overhead, a resolved next hop, and a source address (filled in
/// from the route when the flow left it open).
fn encap(
    ingress: &PortInfo,
    t: &mut TunnelKeySet,
    mark: u32,
    facts: &Facts<'_>,
) -> Result<(), SoftwareReason> {
    let key = LookupKey {
        dst: t.dst,
        src: (!t.src.is_unspecified()).then_some(t.src),
        mark,
    };
    let (path, uplink) = facts.path(&key)?;
    if ingress.kind != PortKind::Tunnel {
        same_switch(ingress, uplink)?;
    }
    stays_encrypted(&key, &path, facts.hardware)?;
    let overhead = path.overhead(&t.dst);
    if ingress.mtu + overhead > path.mtu {
        return Err(SoftwareReason::Mtu {
            port_mtu: ingress.mtu,
            overhead,
            uplink_mtu: path.mtu,
        });
    }
    if path.next_hop_mac.is_none() {
        return Err(SoftwareReason::NextHopUnresolved {
            key,
            neighbour: path.neighbour,
        });
    }
    if t.src.is_unspecified() {
        match path.src {
            Some(src) => t.src = src,
            None => {
                return Err(SoftwareReason::Path {
                    key,
                    problem: PathProblem::NoRoute,
                });
            }
        }
    }
    Ok(())
}
