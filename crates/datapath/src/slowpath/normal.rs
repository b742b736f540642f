//! NORMAL: an L2 learning switch per network.
//!
//! 1. Ingress: a member port's frame belongs to the network of its (port, outer VLAN)
//!    attachment; a tunnel port's frame to the network of its VNI (tagged inner frames
//!    are dropped, RFC 7348 §6.1). No network: drop. VNIs never mix (isolation).
//! 2. Learning: the source MAC is a station at the ingress location (a local attachment,
//!    or the remote VTEP the frame was decapsulated from). Learning itself is the
//!    upcall's side effect; translation only reports whether it would change the table.
//! 3. Forwarding: a group destination, or an unknown one, is flooded to every local
//!    member but the ingress and, for frames not from the tunnel, replicated head-end to
//!    every remote VTEP of the segment (the configured ones, then those of the network's
//!    control-plane flood list); a known destination goes to its attachment or is
//!    encapsulated to its VTEP. Frames are never sent back where they came from, nor from
//!    a VTEP to a VTEP (split horizon). ARP is forwarded like any frame.
//!
//! Bits consulted: `in_port`; the outer VLAN tag (members) or `tun_flags`, `tun_vni`,
//! `tun_src` (tunnel); the whole `eth_src`; the group bit of `eth_dst`, and the whole
//! `eth_dst` only for unicast destinations.

use super::mac::{Location, is_group};
use super::network::{Attachment, Network, NetworkId, PortRole, VxlanSegment};
use super::trace::TraceStep;
use super::xlate::{Ctx, LearnRef, Tracer};
use crate::PortId;
use crate::actions::{Action, TunnelAttrs};
use crate::flow::tun_flags;
use std::net::IpAddr;

/// Where a frame entered its network.
#[derive(Debug, Clone, Copy)]
struct Ingress {
    network: NetworkId,
    from: Location,
}

impl Ingress {
    fn is_from_tunnel(&self) -> bool {
        matches!(self.from, Location::Remote(_))
    }
}

/// A copy to send.
#[derive(Debug, Clone, Copy)]
enum Target {
    Local(Attachment),
    Remote(IpAddr),
}

impl Target {
    fn vlan(&self) -> Option<u16> {
        match self {
            Target::Local(a) => a.vlan,
            Target::Remote(_) => None,
        }
    }
}

impl<T: Tracer> Ctx<'_, T> {
    /// Runs NORMAL on the packet as the actions so far left it.
    pub(crate) fn normal(&mut self) {
        self.meta.normal = true;
        let Some(ing) = self.ingress() else { return };
        let Some(net) = self.env.networks.get(ing.network) else {
            return;
        };
        self.trace.step(|| TraceStep::Ingress {
            network: ing.network,
            from: ing.from,
        });
        let src = self.eth_src();
        if is_group(src) {
            self.trace.step(|| TraceStep::GroupSource { mac: src });
            return;
        }
        let change = self
            .env
            .macs
            .would_change(ing.network, src, ing.from, self.now);
        self.needs_learning |= change;
        self.meta.learn = Some(LearnRef {
            network: ing.network,
            mac: src,
            location: ing.from,
        });
        self.trace.step(|| TraceStep::Learn {
            network: ing.network,
            mac: src,
            location: ing.from,
            change,
        });
        self.forward(&ing, net);
    }

    fn ingress(&mut self) -> Option<Ingress> {
        self.wc.in_port = u32::MAX;
        let port = PortId(self.key.in_port);
        match self.env.networks.role(port) {
            PortRole::None => {
                self.trace
                    .step(|| TraceStep::NoNetwork { port, vlan: None });
                None
            }
            PortRole::Member(list) => {
                let vlan = self.vlan.outer(self.key, &mut self.wc);
                let found = list.iter().find(|(v, _)| *v == vlan).map(|(_, n)| *n);
                if found.is_none() {
                    self.trace.step(|| TraceStep::NoNetwork { port, vlan });
                }
                Some(Ingress {
                    network: found?,
                    from: Location::Local(Attachment { port, vlan }),
                })
            }
            PortRole::Tunnel(map) => self.tunnel_ingress(port, map),
        }
    }

    fn tunnel_ingress(
        &mut self,
        port: PortId,
        map: &crate::fastmap::FastMap<u32, NetworkId>,
    ) -> Option<Ingress> {
        self.wc.tun_flags |= tun_flags::PRESENT | tun_flags::IPV6;
        self.wc.tun_vni = u32::MAX;
        let vni = self.key.tun_vni;
        let (Some(src), Some(network)) = (self.key.tunnel_src(), map.get(&vni).copied()) else {
            self.trace.step(|| TraceStep::UnknownVni { port, vni });
            return None;
        };
        if self.vlan.outer(self.key, &mut self.wc).is_some() {
            self.trace.step(|| TraceStep::TaggedFromTunnel { vni });
            return None;
        }
        self.wc.tun_src = [0xff; 16];
        Some(Ingress {
            network,
            from: Location::Remote(src),
        })
    }

    fn forward(&mut self, ing: &Ingress, net: &Network) {
        if self.dst_is_group() {
            let mac = crate::flow::Mac(self.key.eth_dst);
            self.trace.step(|| TraceStep::GroupDestination { mac });
            return self.flood(ing, net);
        }
        let dst = self.eth_dst();
        let Some(entry) = self.env.macs.lookup(ing.network, dst, self.now) else {
            self.trace.step(|| TraceStep::Unknown { mac: dst });
            return self.flood(ing, net);
        };
        let location = entry.location();
        self.trace.step(|| TraceStep::Known { mac: dst, location });
        if location == ing.from {
            self.trace.step(|| TraceStep::Hairpin { mac: dst });
            return;
        }
        match location {
            Location::Local(a) => self.output_local(a),
            Location::Remote(vtep) => match &net.vxlan {
                Some(seg) if !ing.is_from_tunnel() => self.encap(seg, vtep),
                _ => self
                    .trace
                    .step(|| TraceStep::SplitHorizon { mac: dst, vtep }),
            },
        }
    }

    fn flood(&mut self, ing: &Ingress, net: &Network) {
        let mut targets: Vec<Target> = net
            .members
            .iter()
            .filter(|a| Location::Local(**a) != ing.from)
            .map(|a| Target::Local(*a))
            .collect();
        let seg = net.vxlan.as_ref().filter(|_| !ing.is_from_tunnel());
        if let Some(seg) = seg {
            // The configured remotes, then the control plane's that are not among them.
            self.meta.flood = Some(ing.network);
            targets.extend(seg.remotes.iter().map(|ip| Target::Remote(*ip)));
            let control = self
                .env
                .flood
                .get(&ing.network)
                .map_or(&[][..], Vec::as_slice);
            targets.extend(
                control
                    .iter()
                    .filter(|ip| !seg.remotes.contains(ip))
                    .map(|ip| Target::Remote(*ip)),
            );
        }
        // Fewest tag rewrites: the current tag first, then untagged, then by VLAN id.
        let cur = self.vlan.outer(self.key, &mut self.wc);
        targets.sort_by_key(|t| (t.vlan() != cur, t.vlan()));
        self.trace.step(|| TraceStep::Flood {
            network: ing.network,
            local: targets
                .iter()
                .filter_map(|t| match t {
                    Target::Local(a) => Some(*a),
                    Target::Remote(_) => None,
                })
                .collect(),
            remote: targets
                .iter()
                .filter_map(|t| match t {
                    Target::Remote(ip) => Some(*ip),
                    Target::Local(_) => None,
                })
                .collect(),
        });
        for t in targets {
            match (t, seg) {
                (Target::Local(a), _) => self.output_local(a),
                (Target::Remote(ip), Some(seg)) => self.encap(seg, ip),
                (Target::Remote(_), None) => {}
            }
        }
    }

    fn encap(&mut self, seg: &VxlanSegment, vtep: IpAddr) {
        self.set_vlan(None);
        let attrs = TunnelAttrs {
            src: seg.local_ip,
            tp_dst: seg.udp_port,
            mark: seg.mark,
            df: seg.df,
            csum: seg.udp_csum.unwrap_or(vtep.is_ipv6()),
            ..TunnelAttrs::vxlan(seg.vni, vtep)
        };
        self.out.push(Action::SetTunnel(attrs));
        self.out.push(Action::Output(seg.port));
    }
}
