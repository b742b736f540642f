//! The mirror of the kernel's links, addresses, routes, rules and neighbours, and of its
//! IPsec policies and states ([`Xfrm`]).
//!
//! Every entry carries the generation under which it was last seen. A resync bumps the
//! generation, re-dumps, upserts everything the dump returns, then sweeps the entries of
//! the dumped kinds whose generation is older: what is left equals the dump.
//!
//! Applying a [`Change`] records in a [`Dirty`] set what it may affect (a route prefix, a
//! next hop, a link, or everything for a rule change); the tunnel index re-resolves only
//! the endpoints those can reach.

use crate::fib::{LookupKey, Paths};
use crate::index::facts_of;
use crate::model::{Address, Change, Family, Link, Neighbour, Route, RouteKey, Rule};
use crate::xfrm::Xfrm;
use datapath::IfIndex;
use ipnet::IpNet;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use vocab::{Path, PathFacts, VXLAN_PORT};

/// What a batch of changes may affect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Route prefixes added, removed or replaced.
    pub prefixes: Vec<IpNet>,
    /// Neighbours (interface, address) that changed.
    pub next_hops: HashSet<(IfIndex, IpAddr)>,
    /// Links whose state, MTU, MAC or addresses changed.
    pub links: HashSet<IfIndex>,
    /// Everything may be affected (rule change, resync).
    pub all: bool,
}

impl Dirty {
    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        !self.all && self.prefixes.is_empty() && self.next_hops.is_empty() && self.links.is_empty()
    }

    /// Adds `other` to this set.
    pub fn merge(&mut self, other: Dirty) {
        self.prefixes.extend(other.prefixes);
        self.next_hops.extend(other.next_hops);
        self.links.extend(other.links);
        self.all |= other.all;
    }
}

/// Which kinds of objects a dump covers (and a sweep may remove).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds {
    /// Links.
    pub links: bool,
    /// Addresses.
    pub addrs: bool,
    /// Routes.
    pub routes: bool,
    /// Rules.
    pub rules: bool,
    /// Neighbours.
    pub neighs: bool,
}

impl Kinds {
    /// Every kind.
    pub const ALL: Kinds = Kinds {
        links: true,
        addrs: true,
        routes: true,
        rules: true,
        neighs: true,
    };
    /// Links only.
    pub const LINKS: Kinds = Kinds {
        links: true,
        addrs: false,
        routes: false,
        rules: false,
        neighs: false,
    };
    /// Routes only.
    pub const ROUTES: Kinds = Kinds {
        links: false,
        addrs: false,
        routes: true,
        rules: false,
        neighs: false,
    };
}

/// Routes sharing one prefix, lowest metric first, with the generation they were seen in.
pub(crate) type Slot = Vec<(Route, u64)>;

/// Routes of one table and family, by prefix length (longest first) then network.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub(crate) by_len: BTreeMap<Reverse<u8>, HashMap<IpAddr, Slot>>,
}

/// The mirror. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    generation: u64,
    pub(crate) links: HashMap<IfIndex, (Link, u64)>,
    pub(crate) addrs: Vec<(Address, u64)>,
    pub(crate) tables: HashMap<(Family, u32), Table>,
    /// Sorted by priority; equal priorities keep arrival order.
    pub(crate) rules: Vec<(Rule, u64)>,
    pub(crate) neighs: HashMap<(IfIndex, IpAddr), (Neighbour, u64)>,
    route_count: usize,
    /// The IPsec policies and states, as last dumped.
    xfrm: Xfrm,
}

/// What applying one change requires beyond the dirty set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The kernel changes routes without notifying (IPv4 routes flushed when a link goes
    /// down or an address goes away, next hops marked dead): re-dump the routes.
    pub resync_routes: bool,
}

impl Mirror {
    /// An empty mirror.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Starts a new generation (before a re-dump); returns it.
    pub fn bump_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The IPsec policies and states.
    pub fn xfrm(&self) -> &Xfrm {
        &self.xfrm
    }

    /// Replaces the IPsec databases with a fresh dump; whether anything changed. A
    /// change may affect any key (a policy selects by prefixes, marks, ports): the caller
    /// marks everything dirty, and only keys whose protection changed are reported.
    pub fn set_xfrm(&mut self, xfrm: Xfrm) -> bool {
        if self.xfrm == xfrm {
            return false;
        }
        self.xfrm = xfrm;
        true
    }

    /// A key's facts given its resolved paths: the hop [`ecmp_pick`](crate::ecmp_pick)
    /// chooses, with what the IPsec policy does to it.
    pub fn facts(&self, paths: &Paths, key: &LookupKey) -> PathFacts {
        facts_of(paths, key).map(|p| Path {
            ipsec: self.xfrm.protection(key, &p, VXLAN_PORT),
            ..p
        })
    }

    /// The number of routes, all tables.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// A link by index.
    pub fn link(&self, index: IfIndex) -> Option<&Link> {
        self.links.get(&index).map(|(l, _)| l)
    }

    /// All links.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values().map(|(l, _)| l)
    }

    /// A link by name.
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links().find(|l| l.name == name)
    }

    /// A neighbour entry.
    pub fn neighbour(&self, ifindex: IfIndex, ip: IpAddr) -> Option<&Neighbour> {
        self.neighs.get(&(ifindex, ip)).map(|(n, _)| n)
    }

    /// All addresses, in kernel order per interface.
    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.addrs.iter().map(|(a, _)| a)
    }

    /// Rules in evaluation order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// All routes, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.tables
            .values()
            .flat_map(|t| t.by_len.values())
            .flat_map(|m| m.values())
            .flat_map(|v| v.iter().map(|(r, _)| r))
    }

    /// Applies one change under the current generation, recording what it may affect.
    pub fn apply(&mut self, change: Change, dirty: &mut Dirty) -> Applied {
        let g = self.generation;
        let resync_routes = match change {
            Change::LinkUp(link) => self.link_up(link, g, dirty),
            Change::LinkGone(index) => {
                let gone = self.links.remove(&index).is_some();
                if gone {
                    dirty.links.insert(index);
                }
                gone
            }
            Change::AddrUp(addr) => {
                dirty.links.insert(addr.ifindex);
                match self.addrs.iter_mut().find(|(a, _)| same_addr(a, &addr)) {
                    Some(slot) => *slot = (addr, g),
                    None => self.addrs.push((addr, g)),
                }
                false
            }
            Change::AddrGone(addr) => {
                let before = self.addrs.len();
                self.addrs.retain(|(a, _)| !same_addr(a, &addr));
                let gone = self.addrs.len() != before;
                if gone {
                    dirty.links.insert(addr.ifindex);
                }
                gone && addr.addr.is_ipv4()
            }
            Change::RouteUp(route) => {
                if self.upsert_route(route.clone(), g) {
                    dirty.prefixes.push(route.key.dst);
                }
                false
            }
            Change::RouteGone(key) => {
                if self.remove_route(&key) {
                    dirty.prefixes.push(key.dst);
                }
                false
            }
            Change::RuleUp(rule) => {
                dirty.all |= self.rule_up(rule, g);
                false
            }
            Change::RuleGone(rule) => {
                if let Some(at) = self.rules.iter().position(|(r, _)| *r == rule) {
                    self.rules.remove(at);
                    dirty.all = true;
                }
                false
            }
            Change::NeighUp(n) => {
                let key = (n.ifindex, n.ip);
                match self.neighs.insert(key, (n.clone(), g)) {
                    Some((old, _)) if old == n => {}
                    _ => {
                        dirty.next_hops.insert(key);
                    }
                }
                false
            }
            Change::NeighGone { ifindex, ip } => {
                if self.neighs.remove(&(ifindex, ip)).is_some() {
                    dirty.next_hops.insert((ifindex, ip));
                }
                false
            }
        };
        Applied { resync_routes }
    }

    /// A link's facts; true when its admin or operational state changed (its routes
    /// are then dumped again).
    fn link_up(&mut self, link: Link, g: u64, dirty: &mut Dirty) -> bool {
        let index = link.index;
        match self.links.insert(index, (link.clone(), g)) {
            Some((old, _)) if old == link => false,
            Some((old, _)) => {
                dirty.links.insert(index);
                old.admin_up != link.admin_up || old.oper_up != link.oper_up
            }
            None => {
                dirty.links.insert(index);
                false
            }
        }
    }

    /// A policy rule, kept in priority order; true if it is new.
    fn rule_up(&mut self, rule: Rule, g: u64) -> bool {
        if let Some(slot) = self.rules.iter_mut().find(|(r, _)| *r == rule) {
            slot.1 = g;
            return false;
        }
        let at = self
            .rules
            .partition_point(|(r, _)| r.priority <= rule.priority);
        self.rules.insert(at, (rule, g));
        true
    }

    /// Inserts or replaces a route; true if the mirror changed.
    fn upsert_route(&mut self, route: Route, g: u64) -> bool {
        let key = route.key;
        let table = self
            .tables
            .entry((Family::of(&key.dst.addr()), key.table))
            .or_default();
        let slot = table
            .by_len
            .entry(Reverse(key.dst.prefix_len()))
            .or_default()
            .entry(key.dst.network())
            .or_default();
        match slot.iter_mut().find(|(r, _)| r.key == key) {
            Some(existing) => {
                let changed = existing.0 != route;
                *existing = (route, g);
                changed
            }
            None => {
                let at = slot.partition_point(|(r, _)| r.key.metric <= key.metric);
                slot.insert(at, (route, g));
                self.route_count += 1;
                true
            }
        }
    }

    /// Removes a route; true if it was there.
    fn remove_route(&mut self, key: &RouteKey) -> bool {
        let Some(table) = self
            .tables
            .get_mut(&(Family::of(&key.dst.addr()), key.table))
        else {
            return false;
        };
        let Some(by_net) = table.by_len.get_mut(&Reverse(key.dst.prefix_len())) else {
            return false;
        };
        let Some(slot) = by_net.get_mut(&key.dst.network()) else {
            return false;
        };
        let before = slot.len();
        slot.retain(|(r, _)| r.key != *key);
        let removed = slot.len() != before;
        if slot.is_empty() {
            by_net.remove(&key.dst.network());
        }
        if removed {
            self.route_count -= 1;
        }
        removed
    }

    /// Removes the entries of `kinds` older than the current generation (after a re-dump),
    /// recording them as dirty.
    pub fn sweep(&mut self, kinds: Kinds, dirty: &mut Dirty) {
        let g = self.generation;
        if kinds.links {
            self.links.retain(|i, (_, lg)| {
                let keep = *lg >= g;
                if !keep {
                    dirty.links.insert(*i);
                }
                keep
            });
        }
        if kinds.addrs {
            self.addrs.retain(|(a, ag)| {
                if *ag < g {
                    dirty.links.insert(a.ifindex);
                }
                *ag >= g
            });
        }
        if kinds.routes {
            let mut removed = 0;
            for table in self.tables.values_mut() {
                for by_net in table.by_len.values_mut() {
                    by_net.retain(|_, slot| {
                        slot.retain(|(r, rg)| {
                            if *rg < g {
                                dirty.prefixes.push(r.key.dst);
                                removed += 1;
                            }
                            *rg >= g
                        });
                        !slot.is_empty()
                    });
                }
            }
            self.route_count -= removed;
        }
        if kinds.rules {
            let before = self.rules.len();
            self.rules.retain(|(_, rg)| *rg >= g);
            dirty.all |= before != self.rules.len();
        }
        if kinds.neighs {
            self.neighs.retain(|k, (_, ng)| {
                if *ng < g {
                    dirty.next_hops.insert(*k);
                }
                *ng >= g
            });
        }
    }

    /// Compares the state (not generations) with `other`: links, addresses, routes and
    /// rules exactly, neighbours by what they resolve to; lists up to `max` differences.
    pub fn differences(&self, other: &Mirror, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let a = Canonical::of(self);
        let b = Canonical::of(other);
        diff_sorted("link", &a.links, &b.links, &mut out, max);
        diff_sorted("address", &a.addrs, &b.addrs, &mut out, max);
        diff_sorted("route", &a.routes, &b.routes, &mut out, max);
        diff_sorted("rule", &a.rules, &b.rules, &mut out, max);
        diff_sorted("neighbour", &a.neighs, &b.neighs, &mut out, max);
        out
    }
}

fn same_addr(a: &Address, b: &Address) -> bool {
    a.ifindex == b.ifindex && a.addr == b.addr && a.prefix_len == b.prefix_len
}

/// A sorted, printable form of the mirror for comparisons.
struct Canonical {
    links: Vec<String>,
    addrs: Vec<String>,
    routes: Vec<String>,
    rules: Vec<String>,
    neighs: Vec<String>,
}

impl Canonical {
    fn of(m: &Mirror) -> Self {
        fn sorted<T: std::fmt::Debug>(it: impl Iterator<Item = T>) -> Vec<String> {
            let mut v: Vec<String> = it.map(|x| format!("{x:?}")).collect();
            v.sort();
            v
        }
        Canonical {
            links: sorted(m.links()),
            addrs: sorted(m.addresses()),
            routes: sorted(m.routes()),
            rules: sorted(m.rules()),
            // A neighbour as flowd uses it: its usable MAC, or none. The kernel does
            // not notify every NUD transition (a FAILED entry probed again turns
            // INCOMPLETE silently; REACHABLE ages to STALE on a timer), so a mirror
            // cannot hold the exact state a dump shows at any instant; it holds
            // whether, and to what, the neighbour resolves.
            neighs: sorted(
                m.neighs
                    .values()
                    .map(|(n, _)| (n.ifindex, n.ip, n.usable_mac())),
            ),
        }
    }
}

fn diff_sorted(what: &str, a: &[String], b: &[String], out: &mut Vec<String>, max: usize) {
    let sa: HashSet<&String> = a.iter().collect();
    let sb: HashSet<&String> = b.iter().collect();
    for x in a.iter().filter(|x| !sb.contains(x)) {
        if out.len() >= max {
            return;
        }
        out.push(format!("only in mirror: {what} {x}"));
    }
    for x in b.iter().filter(|x| !sa.contains(x)) {
        if out.len() >= max {
            return;
        }
        out.push(format!("only in dump: {what} {x}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NextHop, RouteKind, scope};

    fn route(dst: &str, metric: u32, via: &str) -> Route {
        Route {
            key: RouteKey {
                table: 254,
                dst: dst.parse().unwrap(),
                tos: 0,
                metric,
            },
            kind: RouteKind::Unicast,
            scope: scope::UNIVERSE,
            src_prefix: None,
            prefsrc: None,
            mtu: None,
            nexthops: vec![NextHop {
                ifindex: Some(IfIndex(2)),
                gateway: Some(via.parse().unwrap()),
                weight: 1,
                dead: false,
            }],
        }
    }

    #[test]
    fn resync_sweeps_what_the_dump_lacks() {
        let mut m = Mirror::new();
        let mut d = Dirty::default();
        m.apply(Change::RouteUp(route("10.0.0.0/8", 0, "1.1.1.1")), &mut d);
        m.apply(Change::RouteUp(route("10.1.0.0/16", 0, "1.1.1.1")), &mut d);
        assert_eq!(m.route_count(), 2);
        m.bump_generation();
        let mut d = Dirty::default();
        m.apply(Change::RouteUp(route("10.0.0.0/8", 0, "1.1.1.1")), &mut d);
        assert!(d.is_empty(), "an unchanged route is not dirty");
        m.sweep(Kinds::ROUTES, &mut d);
        assert_eq!(m.route_count(), 1);
        assert_eq!(d.prefixes, vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn replace_and_delete_are_keyed_by_table_prefix_tos_metric() {
        let mut m = Mirror::new();
        let mut d = Dirty::default();
        m.apply(Change::RouteUp(route("10.0.0.0/8", 0, "1.1.1.1")), &mut d);
        m.apply(Change::RouteUp(route("10.0.0.0/8", 0, "2.2.2.2")), &mut d);
        m.apply(Change::RouteUp(route("10.0.0.0/8", 10, "3.3.3.3")), &mut d);
        assert_eq!(m.route_count(), 2);
        m.apply(
            Change::RouteGone(route("10.0.0.0/8", 0, "9.9.9.9").key),
            &mut d,
        );
        assert_eq!(m.route_count(), 1);
        assert_eq!(m.routes().next().unwrap().key.metric, 10);
    }
}
