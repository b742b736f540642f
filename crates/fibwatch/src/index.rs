//! The tunnel path index: each tracked [`LookupKey`] (remote VTEP, fixed source or none,
//! mark) -> its current [`PathFacts`], and the updates a change produces.
//!
//! fibwatch knows nothing of flows. Whoever uses a key tracks it ([`KeyIndex::track`]);
//! every flow with the same key takes the same path, so the path is resolved once per
//! key, and a change is reported once per key whose facts changed ([`PathUpdate`]). The
//! judge that places flows lives in the offload layer; it reads these facts.
//!
//! Keys sit in a `BTreeMap` by remote address (all IPv4 before all IPv6), so the keys a
//! route prefix covers are one range scan. Reverse maps from next hop (interface,
//! neighbour address) and from egress link serve neighbour and link changes.
//! [`KeyIndex::apply`] re-resolves only the keys a [`Dirty`] set can reach and reports
//! only those whose facts differ from the last ones reported: a route that flaps within
//! one coalescing window, or a change that leaves a path intact, costs nothing
//! downstream.
//!
//! # ECMP
//! A key keeps one next hop: FNV-1a over the key (remote, fixed source, mark), modulo
//! the total weight of the route's live next hops in kernel order ([`ecmp_pick`]). The
//! hash does not depend on the route or on the kernel's random multipath seed, so a key
//! stays on its next hop across restarts and across changes that keep the next-hop set.

use crate::fib::{Hop, LookupKey, Paths};
use crate::mirror::{Dirty, Mirror};
use datapath::IfIndex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use vocab::{Path, PathFacts};

/// A tracked key whose facts changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathUpdate {
    /// The key.
    pub key: LookupKey,
    /// Its facts now.
    pub facts: PathFacts,
}

#[derive(Debug)]
struct Tracked {
    /// Every usable next hop (for the reverse maps).
    paths: Paths,
    /// The facts last reported.
    facts: PathFacts,
    /// What it is indexed under in the reverse maps.
    links: Vec<IfIndex>,
    next_hops: Vec<(IfIndex, IpAddr)>,
}

/// Counters of the last [`KeyIndex::apply`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Keys re-resolved.
    pub keys: usize,
    /// Updates produced (keys whose facts changed).
    pub updates: usize,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct KeyIndex {
    keys: BTreeMap<IpAddr, HashMap<LookupKey, Tracked>>,
    by_link: HashMap<IfIndex, HashSet<LookupKey>>,
    by_next_hop: HashMap<(IfIndex, IpAddr), HashSet<LookupKey>>,
    count: usize,
    last: ApplyStats,
}

impl KeyIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Counters of the last [`apply`](Self::apply).
    pub fn last_stats(&self) -> ApplyStats {
        self.last
    }

    /// Starts tracking `key` (nothing changes if it is tracked already) and returns its
    /// current facts.
    pub fn track(&mut self, fib: &Mirror, key: LookupKey) -> PathFacts {
        if let Some(t) = self.get(&key) {
            return t.facts;
        }
        let paths = fib.resolve_paths(&key);
        let facts = fib.facts(&paths, &key);
        self.keys.entry(key.dst).or_default().insert(
            key,
            Tracked {
                paths,
                facts,
                links: Vec::new(),
                next_hops: Vec::new(),
            },
        );
        self.count += 1;
        self.reindex(&key);
        facts
    }

    /// Stops tracking `key`. Returns true if it was tracked.
    pub fn untrack(&mut self, key: &LookupKey) -> bool {
        self.unindex(key);
        let Some(by_key) = self.keys.get_mut(&key.dst) else {
            return false;
        };
        let was = by_key.remove(key).is_some();
        if by_key.is_empty() {
            self.keys.remove(&key.dst);
        }
        if was {
            self.count -= 1;
        }
        was
    }

    /// A tracked key's facts.
    pub fn facts(&self, key: &LookupKey) -> Option<PathFacts> {
        self.get(key).map(|t| t.facts)
    }

    /// Every tracked key and its facts.
    pub fn iter(&self) -> impl Iterator<Item = (&LookupKey, &PathFacts)> {
        self.keys
            .values()
            .flat_map(|m| m.iter().map(|(k, t)| (k, &t.facts)))
    }

    fn get(&self, key: &LookupKey) -> Option<&Tracked> {
        self.keys.get(&key.dst)?.get(key)
    }

    /// Next hops a tracked key waits for (its path has no next-hop MAC): probe these.
    /// Whatever a flow's placement, its path must be resolved: the software datapath
    /// needs the MAC as much as the hardware does.
    pub fn unresolved_next_hops(&self) -> Vec<(IfIndex, IpAddr)> {
        let mut out: HashSet<(IfIndex, IpAddr)> = HashSet::new();
        for (_, facts) in self.iter() {
            if let Ok(p) = facts
                && p.next_hop_mac.is_none()
            {
                out.insert((p.uplink, p.neighbour));
            }
        }
        out.into_iter().collect()
    }

    /// Re-resolves the keys `dirty` can reach and returns an update for each whose facts
    /// changed.
    pub fn apply(&mut self, fib: &Mirror, dirty: &Dirty) -> Vec<PathUpdate> {
        let affected = self.affected(dirty);
        let mut updates = Vec::new();
        for key in &affected {
            let Some(t) = self.keys.get_mut(&key.dst).and_then(|m| m.get_mut(key)) else {
                continue;
            };
            t.paths = fib.resolve_paths(key);
            let facts = fib.facts(&t.paths, key);
            if facts != t.facts {
                t.facts = facts;
                updates.push(PathUpdate { key: *key, facts });
            }
            self.reindex(key);
        }
        self.last = ApplyStats {
            keys: affected.len(),
            updates: updates.len(),
        };
        updates
    }

    /// The keys a dirty set can affect.
    fn affected(&self, dirty: &Dirty) -> Vec<LookupKey> {
        if dirty.all {
            return self.iter().map(|(k, _)| *k).collect();
        }
        let mut set: HashSet<LookupKey> = HashSet::new();
        for p in &dirty.prefixes {
            for (_, m) in self.keys.range(p.network()..=p.broadcast()) {
                set.extend(m.keys().copied());
            }
        }
        for nh in &dirty.next_hops {
            if let Some(keys) = self.by_next_hop.get(nh) {
                set.extend(keys.iter().copied());
            }
        }
        for l in &dirty.links {
            if let Some(keys) = self.by_link.get(l) {
                set.extend(keys.iter().copied());
            }
        }
        set.into_iter().collect()
    }

    /// Updates the reverse maps for a key from its current paths.
    fn reindex(&mut self, key: &LookupKey) {
        self.unindex(key);
        let Some(t) = self.keys.get_mut(&key.dst).and_then(|m| m.get_mut(key)) else {
            return;
        };
        let mut links = Vec::new();
        let mut nhs = Vec::new();
        if let Paths::Via { hops, .. } = &t.paths {
            for h in hops {
                links.push(h.ifindex);
                nhs.push((h.ifindex, h.neighbour));
            }
        }
        links.sort();
        links.dedup();
        nhs.sort();
        nhs.dedup();
        for l in &links {
            self.by_link.entry(*l).or_default().insert(*key);
        }
        for nh in &nhs {
            self.by_next_hop.entry(*nh).or_default().insert(*key);
        }
        t.links = links;
        t.next_hops = nhs;
    }

    fn unindex(&mut self, key: &LookupKey) {
        let Some(t) = self.keys.get_mut(&key.dst).and_then(|m| m.get_mut(key)) else {
            return;
        };
        for l in t.links.drain(..) {
            if let Some(s) = self.by_link.get_mut(&l) {
                s.remove(key);
                if s.is_empty() {
                    self.by_link.remove(&l);
                }
            }
        }
        for nh in t.next_hops.drain(..) {
            if let Some(s) = self.by_next_hop.get_mut(&nh) {
                s.remove(key);
                if s.is_empty() {
                    self.by_next_hop.remove(&nh);
                }
            }
        }
    }
}

/// The facts of a key given its resolved paths: the hop [`ecmp_pick`] chooses (routing
/// only: [`Mirror::facts`] adds what IPsec does to it).
pub fn facts_of(paths: &Paths, key: &LookupKey) -> PathFacts {
    let (table, hops) = match paths {
        Paths::Via { table, hops, .. } => (*table, hops),
        Paths::None(why) => return Err((*why).into()),
    };
    let hop = ecmp_pick(hops, key).ok_or(vocab::PathProblem::NoRoute)?;
    Ok(Path {
        uplink: hop.ifindex,
        src: hop.src,
        gateway: hop.gateway,
        neighbour: hop.neighbour,
        next_hop_mac: hop.mac,
        uplink_mac: hop.uplink_mac,
        mtu: hop.mtu,
        table,
        ipsec: None,
    })
}

/// The ECMP rule: a key hashes with FNV-1a ([`key_hash`]); the hash modulo the total
/// weight of the usable next hops, walked in kernel order, picks one. The hash does not
/// depend on the route, so a key keeps its next hop as long as the next-hop set and
/// weights are unchanged.
pub fn ecmp_pick<'a>(hops: &'a [Hop], key: &LookupKey) -> Option<&'a Hop> {
    if hops.len() <= 1 {
        return hops.first();
    }
    let total: u64 = hops.iter().map(|h| u64::from(h.weight.max(1))).sum();
    let mut point = u64::from(key_hash(key)) % total.max(1);
    for h in hops {
        let w = u64::from(h.weight.max(1));
        if point < w {
            return Some(h);
        }
        point -= w;
    }
    hops.last()
}

/// FNV-1a over a key's remote address, fixed source (a zero byte for none) and mark.
pub fn key_hash(key: &LookupKey) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    match key.dst {
        IpAddr::V4(a) => eat(&a.octets()),
        IpAddr::V6(a) => eat(&a.octets()),
    }
    match key.src {
        Some(IpAddr::V4(a)) => eat(&a.octets()),
        Some(IpAddr::V6(a)) => eat(&a.octets()),
        None => eat(&[0]),
    }
    eat(&key.mark.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Change, Family, Link, Neighbour, NextHop, NudState, Route, RouteKey, RouteKind, Rule,
    };
    use vocab::PathProblem;

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

    fn key(dst: &str) -> LookupKey {
        LookupKey::to(dst.parse().unwrap())
    }

    fn setup() -> (Mirror, KeyIndex) {
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
                switch_id: None,
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
        let mut idx = KeyIndex::new();
        for ep in ["192.0.2.1", "192.0.2.130", "198.51.100.1"] {
            let _ = idx.track(&m, key(ep));
        }
        (m, idx)
    }

    #[test]
    fn a_more_specific_route_touches_only_keys_inside_it() {
        let (mut m, mut idx) = setup();
        let mut d = Dirty::default();
        m.apply(route("192.0.2.128/25", 3), &mut d);
        let out = idx.apply(&m, &d);
        assert_eq!(idx.last_stats().keys, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, key("192.0.2.130"));
        assert_eq!(out[0].facts.map(|p| p.uplink), Ok(IfIndex(3)));
        assert_eq!(
            idx.facts(&key("198.51.100.1")),
            Some(Err(PathProblem::NoRoute))
        );
    }

    #[test]
    fn a_flap_within_one_window_produces_nothing() {
        let (mut m, mut idx) = setup();
        let mut d = Dirty::default();
        m.apply(route("192.0.2.0/24", 3), &mut d);
        m.apply(route("192.0.2.0/24", 2), &mut d);
        assert!(idx.apply(&m, &d).is_empty());
        assert_eq!(
            idx.last_stats().keys,
            2,
            "both keys inside were re-resolved"
        );
    }

    #[test]
    fn keys_of_one_remote_are_resolved_apart() {
        let (mut m, mut idx) = setup();
        // A second key toward the same remote, with a fixed source that a policy rule
        // sends through up3.
        let mut d = Dirty::default();
        let mut r = Rule::to_table(Family::V4, 100, 10);
        r.src = Some("10.3.0.1/32".parse().unwrap());
        m.apply(Change::RuleUp(r), &mut d);
        let Change::RouteUp(mut t10) = route("0.0.0.0/0", 3) else {
            unreachable!()
        };
        t10.key.table = 10;
        m.apply(Change::RouteUp(t10), &mut d);
        idx.apply(&m, &d);
        let sourced = LookupKey {
            src: Some("10.3.0.1".parse().unwrap()),
            ..key("192.0.2.1")
        };
        let facts = idx.track(&m, sourced).expect("path");
        assert_eq!(facts.uplink, IfIndex(3));
        assert_eq!(
            idx.facts(&key("192.0.2.1")).map(|f| f.map(|p| p.uplink)),
            Some(Ok(IfIndex(2))),
            "the main-table key keeps its own path"
        );
        assert!(idx.untrack(&sourced));
        assert!(!idx.untrack(&sourced));
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn unresolved_next_hops_are_listed_whatever_else_is_wrong() {
        let (mut m, mut idx) = setup();
        let mut d = Dirty::default();
        m.apply(
            Change::NeighGone {
                ifindex: IfIndex(2),
                ip: "10.2.0.2".parse().unwrap(),
            },
            &mut d,
        );
        let ups = idx.apply(&m, &d);
        assert_eq!(ups.len(), 2, "both keys via 10.2.0.2");
        assert!(
            ups.iter()
                .all(|u| u.facts.is_ok_and(|p| p.next_hop_mac.is_none()))
        );
        assert_eq!(
            idx.unresolved_next_hops(),
            vec![(IfIndex(2), "10.2.0.2".parse().unwrap())]
        );
    }
}
