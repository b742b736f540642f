//! The tunnel endpoint index: remote endpoint -> flows + current resolution, and the
//! migration decisions a change produces.
//!
//! Endpoints sit in a `BTreeMap<IpAddr, _>` (all IPv4 before all IPv6), so the endpoints
//! inside a route prefix are one range scan. Reverse maps from next hop (interface,
//! neighbour address) and from egress link to endpoints serve neighbour and link changes.
//! [`TunnelIndex::apply`] re-resolves only the endpoints a [`Dirty`] set can reach, and
//! compares each of their flows' new placement with the last one it announced: equal
//! placements produce no decision at all, so a route that flaps within one coalescing
//! window, or a change that leaves a flow's path intact, costs no rule operation.

use crate::fib::{Hop, LookupKey, NoRoute, Paths};
use crate::mirror::{Dirty, Mirror};
use crate::model::{Family, Link, Mac, SwitchId};
use datapath::{FlowId, IfIndex};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// What the flow does with the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Encapsulates toward the endpoint (outer destination = endpoint).
    Encap,
    /// Decapsulates packets from the endpoint (outer source = endpoint).
    Decap,
}

/// What fibwatch needs to know about a tunneled flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    /// The flow.
    pub id: FlowId,
    /// The remote tunnel endpoint.
    pub endpoint: IpAddr,
    /// Encap or decap.
    pub role: Role,
    /// The tunnel's VNI (part of the ECMP hash).
    pub vni: u32,
    /// Fixed local tunnel address, if configured (used in the lookup, like `ip rule from`).
    pub local: Option<IpAddr>,
    /// Mark of the outer packets (used in the lookup, like `ip rule fwmark`).
    pub mark: u32,
    /// MTU of the flow's representor (the VF's MTU).
    pub rep_mtu: u32,
    /// Switch id of the flow's representor; `None` if it is not on an eswitch.
    pub switch_id: Option<SwitchId>,
}

impl FlowInfo {
    fn lookup_key(&self) -> LookupKey {
        LookupKey {
            dst: self.endpoint,
            src: self.local,
            mark: self.mark,
        }
    }
}

/// Tells the switch id of an uplink.
pub trait SwitchIds: Send {
    /// The eswitch `link` belongs to, or `None` if it cannot offload.
    fn uplink_switch_id<'a>(&'a self, link: &'a Link) -> Option<&'a SwitchId>;
}

/// Trusts the kernel's `phys_switch_id` (IFLA_PHYS_SWITCH_ID).
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSwitchIds;

impl SwitchIds for KernelSwitchIds {
    fn uplink_switch_id<'a>(&'a self, link: &'a Link) -> Option<&'a SwitchId> {
        link.switch_id.as_ref()
    }
}

/// Switch ids by interface name (labs and tests: veths have none), falling back to the
/// kernel's.
#[derive(Debug, Clone, Default)]
pub struct StaticSwitchIds(pub HashMap<String, SwitchId>);

impl SwitchIds for StaticSwitchIds {
    fn uplink_switch_id<'a>(&'a self, link: &'a Link) -> Option<&'a SwitchId> {
        self.0.get(&link.name).or(link.switch_id.as_ref())
    }
}

/// Where one flow's tunnel packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// Egress uplink.
    pub ifindex: IfIndex,
    /// Outer source address.
    pub src: Option<IpAddr>,
    /// Gateway (None: endpoint directly connected).
    pub gateway: Option<IpAddr>,
    /// Next hop's MAC (None: unresolved).
    pub next_hop_mac: Option<Mac>,
    /// Uplink's MAC (outer Ethernet source).
    pub uplink_mac: Option<Mac>,
    /// Path MTU.
    pub mtu: u32,
    /// Routing table the route came from.
    pub table: u32,
}

impl Resolution {
    /// True if an offloaded rule must be rewritten to go from `self` to `other`.
    fn needs_rewrite(&self, other: &Resolution, role: Role) -> bool {
        match role {
            Role::Encap => {
                self.ifindex != other.ifindex
                    || self.src != other.src
                    || self.next_hop_mac != other.next_hop_mac
                    || self.uplink_mac != other.uplink_mac
            }
            Role::Decap => self.ifindex != other.ifindex || self.src != other.src,
        }
    }
}

/// Why a flow stays in software.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SoftwareReason {
    /// No usable route to the endpoint.
    NoRoute,
    /// The next hop's MAC is not resolved (a probe has been asked for).
    NextHopUnresolved {
        /// The neighbour being resolved.
        neighbour: IpAddr,
    },
    /// The uplink is not on the representor's eswitch.
    SwitchMismatch,
    /// Representor MTU + encap overhead exceeds the path MTU.
    MtuTooSmall {
        /// Representor MTU + overhead.
        needed: u32,
        /// The encapsulation overhead (50 over IPv4, 70 over IPv6).
        overhead: u32,
        /// Path MTU.
        path_mtu: u32,
    },
    /// The uplink is administratively or operationally down.
    UplinkDown,
}

impl std::fmt::Display for SoftwareReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SoftwareReason::NoRoute => f.write_str("no route"),
            SoftwareReason::NextHopUnresolved { neighbour } => {
                write!(f, "neighbour: next hop {neighbour} unresolved")
            }
            SoftwareReason::SwitchMismatch => {
                f.write_str("switch id: uplink not on the representor's eswitch")
            }
            SoftwareReason::MtuTooSmall {
                needed,
                overhead,
                path_mtu,
            } => write!(
                f,
                "mtu: {} + {overhead} > {path_mtu}",
                needed.saturating_sub(*overhead)
            ),
            SoftwareReason::UplinkDown => f.write_str("uplink down"),
        }
    }
}

/// Where a flow is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// Offloadable on the resolution's uplink.
    Offload(Resolution),
    /// In software, with why, and the resolution if any (the software path still uses it).
    Software(SoftwareReason, Option<Resolution>),
}

/// What the offload layer must do for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionKind {
    /// Nothing. Never emitted by [`TunnelIndex`]; consumers ignore it if they see it.
    Unchanged,
    /// First placement of a newly registered flow: offload it.
    Offload {
        /// Where.
        to: Resolution,
    },
    /// Remove from the old device and offload on the new one (or rewrite the rule's
    /// tunnel source / next-hop MAC).
    Move {
        /// Where it was.
        from: Resolution,
        /// Where it goes.
        to: Resolution,
    },
    /// Remove the offloaded rule (if `from` is set) and keep the flow in software. Also
    /// sent when an already-software flow's reason changes (`from` = None): no rule
    /// operation, the recorded reason is updated.
    ToSoftware {
        /// Why.
        reason: SoftwareReason,
        /// Where it was offloaded, if it was.
        from: Option<Resolution>,
        /// The path the software datapath uses meanwhile, if there is one (e.g. an MTU
        /// or switch-id refusal still has a route; no route or an uplink down has none).
        current: Option<Resolution>,
    },
    /// The reason cleared: offload again.
    BackToOffload {
        /// Where.
        to: Resolution,
    },
}

/// A migration decision for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The flow.
    pub flow: FlowId,
    /// Its remote endpoint.
    pub endpoint: IpAddr,
    /// What to do.
    pub kind: DecisionKind,
}

#[derive(Debug)]
struct FlowState {
    info: FlowInfo,
    placement: Placement,
}

#[derive(Debug, Default)]
struct Endpoint {
    flows: HashSet<FlowId>,
    /// Resolutions per lookup key used by its flows (usually one).
    paths: Vec<(LookupKey, Paths)>,
    /// What it was indexed under in the reverse maps.
    links: Vec<IfIndex>,
    next_hops: Vec<(IfIndex, IpAddr)>,
}

/// Counters of the last [`TunnelIndex::apply`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Endpoints re-resolved.
    pub endpoints: usize,
    /// Flows whose placement was recomputed.
    pub flows: usize,
    /// Decisions produced.
    pub decisions: usize,
}

/// See the module docs.
pub struct TunnelIndex {
    flows: HashMap<FlowId, FlowState>,
    endpoints: BTreeMap<IpAddr, Endpoint>,
    by_link: HashMap<IfIndex, HashSet<IpAddr>>,
    by_next_hop: HashMap<(IfIndex, IpAddr), HashSet<IpAddr>>,
    switch_ids: Box<dyn SwitchIds>,
    last: ApplyStats,
}

impl std::fmt::Debug for TunnelIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelIndex")
            .field("flows", &self.flows.len())
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl TunnelIndex {
    /// An empty index using `switch_ids` to learn uplinks' switch ids.
    pub fn new(switch_ids: Box<dyn SwitchIds>) -> Self {
        TunnelIndex {
            flows: HashMap::new(),
            endpoints: BTreeMap::new(),
            by_link: HashMap::new(),
            by_next_hop: HashMap::new(),
            switch_ids,
            last: ApplyStats::default(),
        }
    }

    /// Number of flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Number of endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Counters of the last [`apply`](Self::apply).
    pub fn last_stats(&self) -> ApplyStats {
        self.last
    }

    /// A flow's current placement.
    pub fn placement(&self, flow: FlowId) -> Option<&Placement> {
        self.flows.get(&flow).map(|f| &f.placement)
    }

    /// Adds (or re-registers) a flow and returns its first placement as a decision
    /// ([`DecisionKind::Offload`] or [`DecisionKind::ToSoftware`] with `from: None`).
    pub fn register(&mut self, fib: &Mirror, info: FlowInfo) -> Decision {
        self.unregister(info.id);
        let ep = info.endpoint;
        let key = info.lookup_key();
        let needs_resolve = self
            .endpoints
            .get(&ep)
            .is_none_or(|e| !e.paths.iter().any(|(k, _)| *k == key));
        self.endpoints.entry(ep).or_default().flows.insert(info.id);
        if needs_resolve {
            let paths = fib.resolve_paths(&key);
            self.endpoints
                .entry(ep)
                .or_default()
                .paths
                .push((key.clone(), paths));
            self.reindex(ep);
        }
        let placement = self.place(fib, &info);
        let kind = match &placement {
            Placement::Offload(to) => DecisionKind::Offload { to: *to },
            Placement::Software(reason, current) => DecisionKind::ToSoftware {
                reason: reason.clone(),
                from: None,
                current: *current,
            },
        };
        let decision = Decision {
            flow: info.id,
            endpoint: ep,
            kind,
        };
        self.flows.insert(info.id, FlowState { info, placement });
        decision
    }

    /// Forgets a flow. Returns true if it was known.
    pub fn unregister(&mut self, id: FlowId) -> bool {
        let Some(state) = self.flows.remove(&id) else {
            return false;
        };
        let ep = state.info.endpoint;
        let key = state.info.lookup_key();
        let flows = &self.flows;
        let empty = match self.endpoints.get_mut(&ep) {
            Some(e) => {
                e.flows.remove(&id);
                // Drop the lookup key's resolution when no remaining flow uses it.
                let used = e
                    .flows
                    .iter()
                    .any(|f| flows.get(f).is_some_and(|s| s.info.lookup_key() == key));
                if !used {
                    e.paths.retain(|(k, _)| *k != key);
                }
                e.flows.is_empty()
            }
            None => false,
        };
        if empty {
            self.unindex(ep);
            self.endpoints.remove(&ep);
        }
        true
    }

    /// Next hops that flows wait for (neighbour not valid): probe these.
    pub fn unresolved_next_hops(&self) -> Vec<(IfIndex, IpAddr)> {
        let mut out: HashSet<(IfIndex, IpAddr)> = HashSet::new();
        for f in self.flows.values() {
            if let Placement::Software(SoftwareReason::NextHopUnresolved { neighbour }, Some(r)) =
                &f.placement
            {
                out.insert((r.ifindex, *neighbour));
            }
        }
        out.into_iter().collect()
    }

    /// Re-resolves the endpoints `dirty` can reach and returns the decisions for the flows
    /// whose placement changed.
    pub fn apply(&mut self, fib: &Mirror, dirty: &Dirty) -> Vec<Decision> {
        let affected = self.affected(dirty);
        let mut stats = ApplyStats {
            endpoints: affected.len(),
            ..ApplyStats::default()
        };
        let mut decisions = Vec::new();
        for ep in affected {
            let Some(e) = self.endpoints.get_mut(&ep) else {
                continue;
            };
            for (key, paths) in e.paths.iter_mut() {
                *paths = fib.resolve_paths(key);
            }
            let flows: Vec<FlowId> = e.flows.iter().copied().collect();
            self.reindex(ep);
            stats.flows += flows.len();
            for id in flows {
                if let Some(d) = self.replace(fib, id) {
                    decisions.push(d);
                }
            }
        }
        stats.decisions = decisions.len();
        self.last = stats;
        decisions
    }

    /// The endpoints a dirty set can affect.
    fn affected(&self, dirty: &Dirty) -> Vec<IpAddr> {
        if dirty.all {
            return self.endpoints.keys().copied().collect();
        }
        let mut set: HashSet<IpAddr> = HashSet::new();
        for p in &dirty.prefixes {
            set.extend(
                self.endpoints
                    .range(p.network()..=p.broadcast())
                    .map(|(ip, _)| *ip),
            );
        }
        for nh in &dirty.next_hops {
            if let Some(eps) = self.by_next_hop.get(nh) {
                set.extend(eps.iter().copied());
            }
        }
        for l in &dirty.links {
            if let Some(eps) = self.by_link.get(l) {
                set.extend(eps.iter().copied());
            }
        }
        set.into_iter().collect()
    }

    /// Recomputes one flow's placement; a decision if it changed.
    fn replace(&mut self, fib: &Mirror, id: FlowId) -> Option<Decision> {
        let info = self.flows.get(&id)?.info.clone();
        let new = self.place(fib, &info);
        let state = self.flows.get_mut(&id)?;
        let kind = transition(&state.placement, &new, info.role);
        state.placement = new;
        kind.map(|kind| Decision {
            flow: id,
            endpoint: info.endpoint,
            kind,
        })
    }

    /// Where a flow goes given its endpoint's current paths.
    fn place(&self, fib: &Mirror, info: &FlowInfo) -> Placement {
        let key = info.lookup_key();
        let paths = self
            .endpoints
            .get(&info.endpoint)
            .and_then(|e| e.paths.iter().find(|(k, _)| *k == key))
            .map(|(_, p)| p);
        let hops = match paths {
            Some(Paths::Via { hops, .. }) => hops,
            _ => return Placement::Software(SoftwareReason::NoRoute, None),
        };
        let table = match paths {
            Some(Paths::Via { table, .. }) => *table,
            _ => 0,
        };
        let Some(hop) = ecmp_pick(hops, info) else {
            return Placement::Software(SoftwareReason::NoRoute, None);
        };
        let res = Resolution {
            ifindex: hop.ifindex,
            src: hop.src,
            gateway: hop.gateway,
            next_hop_mac: hop.mac,
            uplink_mac: hop.uplink_mac,
            mtu: hop.mtu,
            table,
        };
        let link = fib.link(hop.ifindex);
        let reason = if !link.is_some_and(Link::is_up) {
            Some(SoftwareReason::UplinkDown)
        } else if info.switch_id.is_none()
            || link.and_then(|l| self.switch_ids.uplink_switch_id(l)) != info.switch_id.as_ref()
        {
            Some(SoftwareReason::SwitchMismatch)
        } else if info.role == Role::Encap
            && info.rep_mtu + Family::of(&info.endpoint).vxlan_overhead() > hop.mtu
        {
            Some(SoftwareReason::MtuTooSmall {
                needed: info.rep_mtu + Family::of(&info.endpoint).vxlan_overhead(),
                overhead: Family::of(&info.endpoint).vxlan_overhead(),
                path_mtu: hop.mtu,
            })
        } else if info.role == Role::Encap && hop.mac.is_none() {
            Some(SoftwareReason::NextHopUnresolved {
                neighbour: hop.neighbour,
            })
        } else {
            None
        };
        match reason {
            Some(r) => Placement::Software(r, Some(res)),
            None => Placement::Offload(res),
        }
    }

    /// Updates the reverse maps for an endpoint from its current paths.
    fn reindex(&mut self, ep: IpAddr) {
        self.unindex(ep);
        let Some(e) = self.endpoints.get_mut(&ep) else {
            return;
        };
        let mut links = Vec::new();
        let mut nhs = Vec::new();
        for (_, p) in &e.paths {
            if let Paths::Via { hops, .. } = p {
                for h in hops {
                    links.push(h.ifindex);
                    nhs.push((h.ifindex, h.neighbour));
                }
            }
        }
        links.sort();
        links.dedup();
        nhs.sort();
        nhs.dedup();
        for l in &links {
            self.by_link.entry(*l).or_default().insert(ep);
        }
        for nh in &nhs {
            self.by_next_hop.entry(*nh).or_default().insert(ep);
        }
        e.links = links;
        e.next_hops = nhs;
    }

    fn unindex(&mut self, ep: IpAddr) {
        let Some(e) = self.endpoints.get_mut(&ep) else {
            return;
        };
        for l in e.links.drain(..) {
            if let Some(s) = self.by_link.get_mut(&l) {
                s.remove(&ep);
                if s.is_empty() {
                    self.by_link.remove(&l);
                }
            }
        }
        for nh in e.next_hops.drain(..) {
            if let Some(s) = self.by_next_hop.get_mut(&nh) {
                s.remove(&ep);
                if s.is_empty() {
                    self.by_next_hop.remove(&nh);
                }
            }
        }
    }
}

/// The decision between two placements, `None` when no rule operation is needed.
fn transition(old: &Placement, new: &Placement, role: Role) -> Option<DecisionKind> {
    match (old, new) {
        (Placement::Offload(a), Placement::Offload(b)) => a
            .needs_rewrite(b, role)
            .then_some(DecisionKind::Move { from: *a, to: *b }),
        (Placement::Offload(a), Placement::Software(r, current)) => {
            Some(DecisionKind::ToSoftware {
                reason: r.clone(),
                from: Some(*a),
                current: *current,
            })
        }
        (Placement::Software(..), Placement::Offload(b)) => {
            Some(DecisionKind::BackToOffload { to: *b })
        }
        (Placement::Software(ra, ca), Placement::Software(rb, cb)) => {
            (ra != rb || ca != cb).then(|| DecisionKind::ToSoftware {
                reason: rb.clone(),
                from: None,
                current: *cb,
            })
        }
    }
}

/// The ECMP rule: a flow hashes its tunnel fields (remote endpoint, fixed local address,
/// VNI) with FNV-1a; the hash modulo the total weight of the usable next hops, walked in
/// kernel order, picks one. The hash does not depend on the route, so a flow keeps its
/// next hop as long as the next-hop set and weights are unchanged.
pub fn ecmp_pick<'a>(hops: &'a [Hop], info: &FlowInfo) -> Option<&'a Hop> {
    if hops.len() <= 1 {
        return hops.first();
    }
    let total: u64 = hops.iter().map(|h| u64::from(h.weight.max(1))).sum();
    let mut point = u64::from(tunnel_hash(info)) % total.max(1);
    for h in hops {
        let w = u64::from(h.weight.max(1));
        if point < w {
            return Some(h);
        }
        point -= w;
    }
    hops.last()
}

/// FNV-1a over the flow's tunnel fields (see [`ecmp_pick`]).
pub fn tunnel_hash(info: &FlowInfo) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    match info.endpoint {
        IpAddr::V4(a) => eat(&a.octets()),
        IpAddr::V6(a) => eat(&a.octets()),
    }
    match info.local {
        Some(IpAddr::V4(a)) => eat(&a.octets()),
        Some(IpAddr::V6(a)) => eat(&a.octets()),
        None => eat(&[0]),
    }
    eat(&info.vni.to_be_bytes());
    h
}

/// Why a lookup failed, as a software reason.
impl From<NoRoute> for SoftwareReason {
    fn from(_: NoRoute) -> Self {
        SoftwareReason::NoRoute
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, Neighbour, NextHop, NudState, Route, RouteKey, RouteKind, Rule};

    fn route(dst: &str, dev: u32) -> Change {
        Change::RouteUp(Route {
            key: RouteKey {
                table: 254,
                dst: dst.parse().unwrap(),
                tos: 0,
                metric: 0,
            },
            kind: RouteKind::Unicast,
            scope: 0,
            src_prefix: None,
            prefsrc: Some(format!("10.{dev}.0.1").parse().unwrap()),
            mtu: None,
            nexthops: vec![NextHop {
                ifindex: Some(IfIndex(dev)),
                gateway: Some(format!("10.{dev}.0.2").parse().unwrap()),
                weight: 1,
                dead: false,
            }],
        })
    }

    fn setup() -> (Mirror, TunnelIndex) {
        let mut m = Mirror::new();
        let mut d = Dirty::default();
        let mut changes = Vec::new();
        for dev in [2u32, 3] {
            changes.push(Change::LinkUp(Link {
                index: IfIndex(dev),
                name: format!("up{dev}"),
                mtu: 1500,
                admin_up: true,
                oper_up: true,
                mac: Some([2, 0, 0, 0, 0, dev as u8]),
                switch_id: Some(SwitchId(vec![1])),
            }));
            changes.push(Change::NeighUp(Neighbour {
                ifindex: IfIndex(dev),
                ip: format!("10.{dev}.0.2").parse().unwrap(),
                state: NudState::REACHABLE,
                mac: Some([4, 0, 0, 0, 0, dev as u8]),
            }));
        }
        changes.push(Change::RuleUp(Rule::to_table(Family::V4, 32766, 254)));
        changes.push(route("192.0.2.0/24", 2));
        for c in changes {
            m.apply(c, &mut d);
        }
        let mut idx = TunnelIndex::new(Box::new(KernelSwitchIds));
        for (i, ep) in ["192.0.2.1", "192.0.2.130", "198.51.100.1"]
            .iter()
            .enumerate()
        {
            idx.register(
                &m,
                FlowInfo {
                    id: FlowId(i as u64),
                    endpoint: ep.parse().unwrap(),
                    role: Role::Encap,
                    vni: 1,
                    local: None,
                    mark: 0,
                    rep_mtu: 1400,
                    switch_id: Some(SwitchId(vec![1])),
                },
            );
        }
        (m, idx)
    }

    #[test]
    fn a_more_specific_route_touches_only_endpoints_inside_it() {
        let (mut m, mut idx) = setup();
        let mut d = Dirty::default();
        m.apply(route("192.0.2.128/25", 3), &mut d);
        let out = idx.apply(&m, &d);
        assert_eq!(idx.last_stats().endpoints, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].flow, FlowId(1));
        assert!(matches!(out[0].kind, DecisionKind::Move { to, .. } if to.ifindex == IfIndex(3)));
    }

    #[test]
    fn a_flap_within_one_window_produces_nothing() {
        let (mut m, mut idx) = setup();
        let mut d = Dirty::default();
        m.apply(route("192.0.2.0/24", 3), &mut d);
        m.apply(route("192.0.2.0/24", 2), &mut d);
        assert!(idx.apply(&m, &d).is_empty());
        assert_eq!(
            idx.last_stats().endpoints,
            2,
            "both endpoints inside were re-resolved"
        );
    }

    #[test]
    fn unregister_drops_empty_endpoints() {
        let (_m, mut idx) = setup();
        assert_eq!(idx.endpoint_count(), 3);
        assert!(idx.unregister(FlowId(0)));
        assert_eq!(idx.endpoint_count(), 2);
        assert!(!idx.unregister(FlowId(0)));
    }
}
