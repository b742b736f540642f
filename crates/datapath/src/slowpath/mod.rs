//! The slow path: what decides a flow on its first packet.
//!
//! # What
//! A miss in the flow cache becomes an upcall. The slow path translates the packet's
//! [`FlowKey`] through an OpenFlow-like [rule table](rules) whose actions include
//! [NORMAL](normal), an L2 learning switch per [network](network) (VLAN or VXLAN VNI,
//! with a [MAC table](mac) and head-end replication to remote VTEPs). Translation
//! ([`SlowPath::xlate`]) returns datapath [`Actions`] and the wildcard mask of every
//! key bit it consulted: the megaflow `(key & mask, actions)` the cache installs.
//!
//! # Un-wildcarding
//! Translation reads the key only through bits it first adds to the mask, and which bits
//! it adds depends only on bits already added. Every key agreeing with the translated one
//! on the mask therefore takes the same path and gets the same actions *and the same
//! mask*: megaflows are equivalence classes, correct for all their packets and pairwise
//! disjoint. To keep masks small, rules are examined in priority order and a rule that
//! does not match is proved so by its first differing field in staged order (metadata,
//! L2, L3, L4; fields before it matched and are un-wildcarded), and for IP addresses and
//! L4 ports only up to the first differing bit (prefix tracking). NORMAL consults in_port,
//! the outer VLAN or the tunnel's VNI and source, the source MAC, and the destination
//! MAC's group bit (all of it only for unicast).
//!
//! # Learning and revalidation
//! MAC learning is a side effect of the upcall ([`SlowPath::upcall`]), never of a
//! translation. A control plane (BGP EVPN, through the daemon) adds remote stations and
//! flood lists through the [`remote`] module's [`RemoteStations`] trait, and hears of the
//! local stations learned and forgotten through [`StationObserver`]; the slow path knows
//! nothing of the protocol behind them. Every change to rules, networks or the MAC table
//! is reported as a [`Change`]; [`Change::affects`] tells which installed flows it may
//! affect, and [`SlowPath::revalidate`] re-translates one (from its masked key, which is
//! in its own class) and says whether to keep, modify or delete it. Time is passed in as
//! a monotonic [`Duration`] since an arbitrary epoch; nothing here reads a clock.
//!
//! # Thread-safety
//! [`SlowPath`] is plain data: translation, traces and revalidation take `&self`, so
//! handler and revalidator threads share it behind an `RwLock` and take the write lock
//! only to change configuration or to learn a new or moved station (refreshing a known
//! station's age is atomic and needs only the read lock).

mod engine;
pub mod error;
mod fields;
pub mod mac;
pub mod network;
mod normal;
pub mod remote;
pub mod rules;
pub mod trace;
pub mod upcall;
mod xlate;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use engine::{
    DeleteReason, Engine, EngineConfig, FlowObserver, NoObserver, Pace, RevalStats, SweepReport,
};
pub use error::SlowPathError;
pub use mac::{
    LearnOutcome, Location, Mac, MacConfig, MacEntry, MacKey, MacKind, MacStats, MacTable,
};
pub use network::{Attachment, Network, NetworkId, Networks, VxlanSegment};
pub use remote::{RemoteReport, RemoteStations, RemoteUpdate, StationObserver};
pub use rules::{Rule, RuleAction, RuleChange, RuleEntry, RuleId, RuleTable};
pub use trace::{Trace, TraceStep};
pub use xlate::{FlowMeta, LearnRef, RuleRef, Xlation};

use crate::actions::Actions;
use crate::fastmap::FastMap;
use crate::flow::{FlowKey, Megaflow};
use std::net::IpAddr;
use std::time::Duration;
use xlate::{Env, NoTrace};

/// A change that may make installed flows stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A rule was added, modified or deleted.
    Rules(RuleChange),
    /// A network was added, changed or removed: every flow may be affected.
    Networks,
    /// A station's MAC table entry appeared, moved, aged out or was configured.
    Mac(MacKey),
    /// A network's control-plane flood list changed.
    Flood(NetworkId),
}

impl Change {
    /// Whether the change may affect an installed flow, from its megaflow and the
    /// [`FlowMeta`] of its translation.
    ///
    /// A rule change of priority `p` cannot affect flows decided by a rule of higher
    /// priority (translation never reached the changed rule); a MAC change can only
    /// affect flows that ran NORMAL with that MAC as source or (unicast) destination; a
    /// flood list change only flows that replicated to the network's remote VTEPs.
    pub fn affects(&self, flow: &Megaflow, meta: &FlowMeta) -> bool {
        match self {
            Change::Rules(c) => meta.rule.is_none_or(|r| r.priority <= c.priority),
            Change::Networks => true,
            Change::Flood(n) => meta.normal && meta.flood == Some(*n),
            Change::Mac((_, mac)) => {
                let full = [0xff; 6];
                meta.normal
                    && ((flow.mask.eth_src == full && flow.key.eth_src == mac.0)
                        || (flow.mask.eth_dst == full && flow.key.eth_dst == mac.0))
            }
        }
    }
}

/// Many changes at once, as the revalidator sees them: which flows they may affect, in
/// constant time per flow (a MAC set instead of one check per change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    all: bool,
    rule_priority: Option<u16>,
    macs: std::collections::HashSet<[u8; 6]>,
    floods: std::collections::HashSet<NetworkId>,
}

impl ChangeSet {
    /// Collects changes.
    pub fn new(changes: &[Change]) -> Self {
        let mut set = Self::default();
        for c in changes {
            match c {
                Change::Rules(r) => {
                    set.rule_priority = set.rule_priority.max(Some(r.priority));
                }
                Change::Networks => set.all = true,
                Change::Mac((_, mac)) => {
                    set.macs.insert(mac.0);
                }
                Change::Flood(n) => {
                    set.floods.insert(*n);
                }
            }
        }
        set
    }

    /// Whether there is no change.
    pub fn is_empty(&self) -> bool {
        !self.all && self.rule_priority.is_none() && self.macs.is_empty() && self.floods.is_empty()
    }

    /// Whether some change may affect the flow (see [`Change::affects`]).
    pub fn affects(&self, flow: &Megaflow, meta: &FlowMeta) -> bool {
        if self.all {
            return true;
        }
        if let Some(p) = self.rule_priority
            && meta.rule.is_none_or(|r| r.priority <= p)
        {
            return true;
        }
        if meta.normal && meta.flood.is_some_and(|n| self.floods.contains(&n)) {
            return true;
        }
        let full = [0xff; 6];
        meta.normal
            && !self.macs.is_empty()
            && ((flow.mask.eth_src == full && self.macs.contains(&flow.key.eth_src))
                || (flow.mask.eth_dst == full && self.macs.contains(&flow.key.eth_dst)))
    }
}

/// What revalidation decided for a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revalidation {
    /// Still correct.
    Keep,
    /// Same megaflow, new actions or metadata: modify it in place.
    Modify(Box<Xlation>),
    /// Delete it: its mask changed, or its next packet must come up to be learned.
    Delete,
}

/// Rules, networks and the MAC table, and the translations they make.
#[derive(Debug, Default)]
pub struct SlowPath {
    rules: RuleTable,
    networks: Networks,
    macs: MacTable,
    /// Control-plane flood lists, per network (sorted, no duplicates, never empty).
    flood: FastMap<NetworkId, Vec<IpAddr>>,
    /// Ports unplugged ([`SlowPath::forget_port`]) and not plugged again: no flow
    /// entering by them is installed (an upcall still queued when its port left).
    unplugged: FastMap<crate::PortId, ()>,
}

impl SlowPath {
    /// No rules (every packet dropped), no networks.
    pub fn new(mac: MacConfig) -> Self {
        Self {
            rules: RuleTable::new(),
            networks: Networks::new(),
            macs: MacTable::new(mac),
            flood: FastMap::default(),
            unplugged: FastMap::default(),
        }
    }

    /// A slow path whose only rule sends everything to NORMAL (priority 0).
    pub fn with_normal(mac: MacConfig) -> Self {
        let mut sp = Self::new(mac);
        // A catch-all NORMAL rule always validates.
        let _ = sp.add_rule(Rule::catch_all(0, vec![RuleAction::Normal]));
        sp
    }

    /// The rule table.
    pub fn rules(&self) -> &RuleTable {
        &self.rules
    }

    /// The networks.
    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    /// The MAC table.
    pub fn macs(&self) -> &MacTable {
        &self.macs
    }

    /// Adds a rule.
    pub fn add_rule(&mut self, rule: Rule) -> Result<(RuleId, Change), SlowPathError> {
        let (id, c) = self.rules.add(rule)?;
        Ok((id, Change::Rules(c)))
    }

    /// Replaces a rule.
    pub fn modify_rule(&mut self, id: RuleId, rule: Rule) -> Result<Change, SlowPathError> {
        self.rules.modify(id, rule).map(Change::Rules)
    }

    /// Deletes a rule.
    pub fn delete_rule(&mut self, id: RuleId) -> Result<Change, SlowPathError> {
        self.rules.delete(id).map(Change::Rules)
    }

    /// Adds a network.
    pub fn add_network(&mut self, id: NetworkId, net: Network) -> Result<Change, SlowPathError> {
        self.networks.add(id, net)?;
        Ok(Change::Networks)
    }

    /// Replaces a network's configuration (e.g. its remote VTEPs).
    pub fn replace_network(
        &mut self,
        id: NetworkId,
        net: Network,
    ) -> Result<Change, SlowPathError> {
        self.networks.replace(id, net)?;
        Ok(Change::Networks)
    }

    /// Removes a network and its MAC entries.
    pub fn remove_network(&mut self, id: NetworkId) -> Result<Change, SlowPathError> {
        self.networks.remove(id)?;
        self.macs.remove_where(|(n, _), _| *n == id);
        self.flood.remove(&id);
        Ok(Change::Networks)
    }

    /// Configures a static station: a local attachment of the network, or a remote VTEP
    /// of its segment (so that frames to it are not flooded).
    pub fn set_static_mac(
        &mut self,
        network: NetworkId,
        mac: Mac,
        location: Location,
    ) -> Result<Change, SlowPathError> {
        let net = self
            .networks
            .get(network)
            .ok_or(SlowPathError::UnknownNetwork(network))?;
        if mac::is_group(mac) {
            return Err(SlowPathError::GroupMac(mac));
        }
        let ok = match location {
            Location::Local(a) => net.members.contains(&a),
            Location::Remote(_) => net.vxlan.is_some(),
        };
        if !ok {
            return Err(SlowPathError::ForeignLocation { mac, network });
        }
        Ok(Change::Mac(self.macs.set_static(network, mac, location)))
    }

    /// Removes a station (static or learned).
    pub fn remove_mac(&mut self, network: NetworkId, mac: Mac) -> Option<Change> {
        self.macs.remove(network, mac).map(Change::Mac)
    }

    /// Forgets every station located behind `port` (an unplugged port): one change per
    /// station, so flows toward it are translated again (and flood until it is learned
    /// elsewhere).
    /// Until [`SlowPath::plug_port`], no flow entering by the port is installed
    /// ([`SlowPath::is_unplugged`]): upcalls of its last packets may still be queued.
    pub fn forget_port(&mut self, port: crate::PortId) -> Vec<Change> {
        self.unplugged.insert(port, ());
        self.macs
            .remove_where(|_, e| matches!(e.location(), Location::Local(a) if a.port == port))
            .into_iter()
            .map(Change::Mac)
            .collect()
    }

    /// A port (plugged again) whose flows may be installed again.
    pub fn plug_port(&mut self, port: crate::PortId) {
        self.unplugged.remove(&port);
    }

    /// Whether the port was unplugged and not plugged again.
    pub fn is_unplugged(&self, port: crate::PortId) -> bool {
        self.unplugged.contains_key(&port)
    }

    /// A network's control-plane flood list (empty when it has none).
    pub fn flood_list(&self, network: NetworkId) -> &[IpAddr] {
        self.flood.get(&network).map_or(&[], Vec::as_slice)
    }

    /// Applies a control plane's update (see [`remote`]): the change it made, if any.
    pub fn apply_remote(&mut self, u: &RemoteUpdate) -> Result<Option<Change>, SlowPathError> {
        let network = u.network();
        let net = self
            .networks
            .get(network)
            .ok_or(SlowPathError::UnknownNetwork(network))?;
        if net.vxlan.is_none() {
            return Err(SlowPathError::NotVxlan(network));
        }
        Ok(match u {
            RemoteUpdate::Station { mac, vtep, .. } => {
                if mac::is_group(*mac) {
                    return Err(SlowPathError::GroupMac(*mac));
                }
                self.macs.set_control(network, *mac, *vtep).map(Change::Mac)
            }
            RemoteUpdate::StationGone { mac, vtep, .. } => self
                .macs
                .remove_control(network, *mac, *vtep)
                .map(Change::Mac),
            RemoteUpdate::FloodList { vteps, .. } => {
                let mut list = vteps.clone();
                list.sort_unstable();
                list.dedup();
                if list.as_slice() == self.flood_list(network) {
                    None
                } else {
                    if list.is_empty() {
                        self.flood.remove(&network);
                    } else {
                        self.flood.insert(network, list);
                    }
                    Some(Change::Flood(network))
                }
            }
        })
    }

    fn env(&self) -> Env<'_> {
        Env {
            rules: &self.rules,
            networks: &self.networks,
            macs: &self.macs,
            flood: &self.flood,
        }
    }

    /// Translates a key, without side effects.
    pub fn xlate(&self, key: &FlowKey, now: Duration) -> Xlation {
        xlate::xlate(self.env(), key, now, &mut NoTrace)
    }

    /// Translates a key, explaining each step.
    pub fn trace(&self, key: &FlowKey, now: Duration) -> Trace {
        let mut steps = Vec::new();
        let xlation = xlate::xlate(self.env(), key, now, &mut steps);
        Trace {
            key: *key,
            steps,
            xlation,
        }
    }

    /// Handles an upcall's translation: learns the packet's source if that changes the
    /// MAC table (then translates again), else refreshes it. Returns the translation to
    /// install and execute, and the changes learning made (to revalidate).
    pub fn upcall(&mut self, key: &FlowKey, now: Duration) -> (Xlation, Vec<Change>) {
        let x = self.xlate(key, now);
        if !x.needs_learning {
            self.refresh(&x.meta, now);
            return (x, Vec::new());
        }
        let changes = self.learn(&x.meta, now);
        (self.xlate(key, now), changes)
    }

    /// Learns the station a translation reported.
    pub fn learn(&mut self, meta: &FlowMeta, now: Duration) -> Vec<Change> {
        let Some(l) = meta.learn else {
            return Vec::new();
        };
        let (_, changed) = self.macs.learn(l.network, l.mac, l.location, now);
        changed.into_iter().map(Change::Mac).collect()
    }

    /// Refreshes the age of the station a flow's packets show (the revalidator calls it
    /// with the flow's `used` time, so stations behind cached flows do not age out).
    pub fn refresh(&self, meta: &FlowMeta, used: Duration) {
        if let Some(l) = meta.learn {
            self.macs.refresh(l.network, l.mac, l.location, used);
        }
    }

    /// Ages out stations not seen for the aging time.
    pub fn expire(&mut self, now: Duration) -> Vec<Change> {
        self.macs.expire(now).into_iter().map(Change::Mac).collect()
    }

    /// Re-translates an installed flow (its masked key, which lies in its own class) and
    /// says what to do with it.
    pub fn revalidate(
        &self,
        flow: &Megaflow,
        actions: &Actions,
        meta: &FlowMeta,
        now: Duration,
    ) -> Revalidation {
        let x = self.xlate(&flow.key, now);
        if x.needs_learning || x.mask != flow.mask {
            Revalidation::Delete
        } else if x.actions != *actions || x.meta != *meta {
            Revalidation::Modify(Box::new(x))
        } else {
            Revalidation::Keep
        }
    }
}
