//! Route resolution from the mirror, following the kernel's output lookup: policy rules in
//! priority order (from, to, fwmark/mask, iif (`lo` for locally generated packets), oif,
//! tos, ipproto, ports, uidrange, `not`, goto, nop, suppress_prefixlength, terminal
//! actions), then longest prefix match in the rule's table (lowest metric first, skipping
//! routes whose next hops are all dead, `throw` continuing the rule walk,
//! unreachable/blackhole/prohibit ending it), then the source address (the route's
//! `src`, else the kernel's choice on the egress device), the next hops with their
//! neighbour entries, and the path MTU (route `mtu`, else the egress link's MTU).

use crate::mirror::Mirror;
use crate::model::{Address, Family, Mac, Route, RouteKind, Rule, RuleAction, scope};
use datapath::IfIndex;
use ipnet::IpNet;
use std::cmp::Reverse;
use std::net::IpAddr;

pub use vocab::LookupKey;

/// Why no usable route exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoRoute {
    /// No rule led to a matching route.
    NotFound,
    /// A rule or route refused (unreachable, blackhole, prohibit).
    Refused,
    /// The destination is local, broadcast, multicast or anycast.
    NotUnicast,
}

/// One usable next hop toward an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Egress interface.
    pub ifindex: IfIndex,
    /// Gateway, or `None` for a directly connected destination.
    pub gateway: Option<IpAddr>,
    /// The address whose link-layer address is needed: the gateway or the endpoint.
    pub neighbour: IpAddr,
    /// Outer source address (None if the kernel would find none).
    pub src: Option<IpAddr>,
    /// ECMP weight.
    pub weight: u32,
    /// Path MTU: route MTU, else the egress link's MTU.
    pub mtu: u32,
    /// The next hop's MAC, if its neighbour entry is valid.
    pub mac: Option<Mac>,
    /// The egress link's own MAC.
    pub uplink_mac: Option<Mac>,
}

impl From<NoRoute> for vocab::PathProblem {
    fn from(n: NoRoute) -> Self {
        match n {
            NoRoute::NotFound => vocab::PathProblem::NoRoute,
            NoRoute::Refused => vocab::PathProblem::Refused,
            NoRoute::NotUnicast => vocab::PathProblem::NotUnicast,
        }
    }
}

/// The result of resolving one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Paths {
    /// No usable route.
    None(NoRoute),
    /// A route with one or more next hops (several for ECMP).
    Via {
        /// The table it was found in.
        table: u32,
        /// The route's prefix.
        prefix: IpNet,
        /// Usable next hops, in kernel order.
        hops: Vec<Hop>,
    },
}

impl Mirror {
    /// The route the kernel would use for `key`, and the table it is in.
    pub fn lookup(&self, key: &LookupKey) -> Result<(u32, &Route), NoRoute> {
        let family = Family::of(&key.dst);
        let rules: Vec<&Rule> = self.rules().filter(|r| r.family == family).collect();
        let mut i = 0;
        while i < rules.len() {
            let rule = rules[i];
            i += 1;
            if !rule_matches(rule, key) {
                continue;
            }
            match rule.action {
                RuleAction::ToTable => match self.table_lookup(family, rule.table, key) {
                    Some(route) if route.kind == RouteKind::Throw => continue,
                    Some(route) if suppressed(rule, route) => continue,
                    Some(route) => match route.kind {
                        RouteKind::Blackhole | RouteKind::Unreachable | RouteKind::Prohibit => {
                            return Err(NoRoute::Refused);
                        }
                        _ => return Ok((rule.table, route)),
                    },
                    None => continue,
                },
                RuleAction::Goto => {
                    let Some(target) = rule.goto else { continue };
                    let from = i;
                    i = rules[from..]
                        .iter()
                        .position(|r| r.priority >= target)
                        .map_or(rules.len(), |p| from + p);
                }
                RuleAction::Blackhole | RuleAction::Unreachable | RuleAction::Prohibit => {
                    return Err(NoRoute::Refused);
                }
                RuleAction::Nop | RuleAction::Other(_) => {}
            }
        }
        Err(NoRoute::NotFound)
    }

    /// Longest prefix match in one table.
    fn table_lookup(&self, family: Family, table: u32, key: &LookupKey) -> Option<&Route> {
        let t = self.tables.get(&(family, table))?;
        for (Reverse(len), by_net) in &t.by_len {
            let Ok(net) = IpNet::new(key.dst, *len) else {
                continue;
            };
            let Some(slot) = by_net.get(&net.network()) else {
                continue;
            };
            let usable = slot.iter().map(|(r, _)| r).find(|r| {
                r.key.tos == 0
                    && r.src_prefix
                        .is_none_or(|p| key.src.is_some_and(|s| p.contains(&s)))
                    && (r.kind != RouteKind::Unicast || r.nexthops.iter().any(|n| !n.dead))
            });
            if usable.is_some() {
                return usable;
            }
        }
        None
    }

    /// Resolves `key` to its usable next hops (see the module docs).
    pub fn resolve_paths(&self, key: &LookupKey) -> Paths {
        let (table, route) = match self.lookup(key) {
            Ok(found) => found,
            Err(why) => return Paths::None(why),
        };
        if route.kind != RouteKind::Unicast {
            return Paths::None(NoRoute::NotUnicast);
        }
        let hops: Vec<Hop> = route
            .nexthops
            .iter()
            .filter(|n| !n.dead)
            .filter_map(|n| {
                let ifindex = n.ifindex?;
                let link = self.link(ifindex);
                let neighbour = n.gateway.unwrap_or(key.dst);
                let src = key.src.or(route.prefsrc).or_else(|| {
                    self.select_source(ifindex, n.gateway.or(Some(key.dst)), n.gateway, route)
                });
                Some(Hop {
                    ifindex,
                    gateway: n.gateway,
                    neighbour,
                    src,
                    weight: n.weight.max(1),
                    mtu: route
                        .mtu
                        .filter(|m| *m > 0)
                        .or(link.map(|l| l.mtu))
                        .unwrap_or(0),
                    mac: self
                        .neighbour(ifindex, neighbour)
                        .and_then(|x| x.usable_mac()),
                    uplink_mac: link.and_then(|l| l.mac),
                })
            })
            .collect();
        if hops.is_empty() {
            return Paths::None(NoRoute::NotFound);
        }
        Paths::Via {
            table,
            prefix: route.key.dst,
            hops,
        }
    }

    /// The source address the kernel picks for a route without `src`.
    fn select_source(
        &self,
        ifindex: IfIndex,
        dst: Option<IpAddr>,
        gateway: Option<IpAddr>,
        route: &Route,
    ) -> Option<IpAddr> {
        match dst? {
            IpAddr::V4(_) => self.select_source_v4(ifindex, gateway, route.scope),
            dst @ IpAddr::V6(_) => self.select_source_v6(ifindex, dst),
        }
    }

    /// `inet_select_addr`: the first primary address of the device with a scope at least
    /// as wide as the route's, preferring one on the gateway's subnet; failing that, the
    /// first suitable global address of another device (by ifindex).
    fn select_source_v4(&self, ifindex: IfIndex, gw: Option<IpAddr>, rscope: u8) -> Option<IpAddr> {
        let eligible =
            |a: &&Address| a.addr.is_ipv4() && !a.secondary && !a.tentative && a.scope <= rscope;
        let mut on_dev: Vec<&Address> = self
            .addresses()
            .filter(|a| a.ifindex == ifindex)
            .filter(eligible)
            .collect();
        on_dev.sort_by_key(|a| a.scope);
        if let Some(a) = on_dev.iter().find(|a| gw.is_none_or(|g| a.covers(&g))) {
            return Some(a.addr);
        }
        if let Some(a) = on_dev.first() {
            return Some(a.addr);
        }
        if rscope >= scope::LINK {
            return None;
        }
        let mut others: Vec<&Address> = self
            .addresses()
            .filter(|a| a.ifindex != ifindex && a.scope != scope::LINK)
            .filter(eligible)
            .collect();
        others.sort_by_key(|a| (a.ifindex, a.scope));
        others.first().map(|a| a.addr)
    }

    /// A simplified RFC 6724 choice: same address, then an adequate (smallest sufficient)
    /// scope, then not deprecated, then on the outgoing interface, then the longest
    /// matching prefix.
    fn select_source_v6(&self, ifindex: IfIndex, dst: IpAddr) -> Option<IpAddr> {
        let dst_scope = v6_scope(&dst);
        self.addresses()
            .filter(|a| a.addr.is_ipv6() && !a.tentative)
            .filter(|a| a.ifindex == ifindex || v6_scope(&a.addr) == scope::UNIVERSE)
            .filter(|a| a.scope != scope::HOST || a.addr == dst)
            .max_by_key(|a| {
                let s = v6_scope(&a.addr);
                (
                    a.addr == dst,
                    s <= dst_scope,
                    Reverse(dst_scope.saturating_sub(s)),
                    !a.deprecated,
                    a.ifindex == ifindex,
                    common_prefix(&a.addr, &dst),
                )
            })
            .map(|a| a.addr)
    }
}

/// Scope of an IPv6 address in `RT_SCOPE_*` terms (smaller is wider).
fn v6_scope(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V6(v6) if v6.is_loopback() => scope::HOST,
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => scope::LINK,
        _ => scope::UNIVERSE,
    }
}

fn common_prefix(a: &IpAddr, b: &IpAddr) -> u32 {
    match (a, b) {
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits() ^ b.to_bits()).leading_zeros(),
        (IpAddr::V4(a), IpAddr::V4(b)) => (a.to_bits() ^ b.to_bits()).leading_zeros(),
        _ => 0,
    }
}

fn suppressed(rule: &Rule, route: &Route) -> bool {
    rule.suppress_prefixlen
        .is_some_and(|s| u32::from(route.key.dst.prefix_len()) <= s)
}

/// `fib_rule_match` for an output lookup of a UDP tunnel packet sent by this host.
fn rule_matches(rule: &Rule, key: &LookupKey) -> bool {
    if rule.unsupported {
        return false;
    }
    // Locally generated packets have iif = loopback and no oif.
    let selectors = rule.iif.as_deref().is_none_or(|i| i == "lo")
        && rule.oif.is_none()
        && (rule.fwmark ^ key.mark) & rule.fwmask == 0
        && rule.uid_range.is_none_or(|(lo, hi)| lo == 0 && hi >= lo)
        && rule.ip_proto.is_none_or(|p| p == 17)
        && rule.sport.is_none()
        && rule.dport.is_none()
        && rule.tos == 0;
    let addrs = rule.dst.is_none_or(|d| d.contains(&key.dst))
        && rule.src.is_none_or(|s| match key.src {
            Some(src) => s.contains(&src),
            None => s.prefix_len() == 0,
        });
    (selectors && addrs) != rule.invert
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::Dirty;
    use crate::model::{Change, Link, NextHop, RouteKey};

    fn link(i: u32, mtu: u32) -> Change {
        Change::LinkUp(Link {
            index: IfIndex(i),
            name: format!("eth{i}"),
            mtu,
            admin_up: true,
            oper_up: true,
            mac: Some([2, 0, 0, 0, 0, i as u8]),
            switch_id: None,
        })
    }

    fn rule(priority: u32, table: u32) -> Rule {
        Rule::to_table(Family::V4, priority, table)
    }

    fn route(table: u32, dst: &str, kind: RouteKind, hops: &[(u32, &str)]) -> Change {
        Change::RouteUp(Route {
            key: RouteKey {
                table,
                dst: dst.parse().unwrap(),
                tos: 0,
                metric: 0,
            },
            kind,
            scope: scope::UNIVERSE,
            src_prefix: None,
            prefsrc: Some("10.9.9.9".parse().unwrap()),
            mtu: None,
            nexthops: hops
                .iter()
                .map(|(i, gw)| NextHop {
                    ifindex: Some(IfIndex(*i)),
                    gateway: Some(gw.parse().unwrap()),
                    weight: 1,
                    dead: false,
                })
                .collect(),
        })
    }

    fn mirror(changes: Vec<Change>) -> Mirror {
        let mut m = Mirror::new();
        let mut d = Dirty::default();
        for c in changes {
            m.apply(c, &mut d);
        }
        m
    }

    fn gw(m: &Mirror, key: &LookupKey) -> Option<String> {
        match m.resolve_paths(key) {
            Paths::Via { hops, .. } => Some(hops[0].gateway.unwrap().to_string()),
            Paths::None(_) => None,
        }
    }

    #[test]
    fn rules_tables_throw_and_fwmark() {
        let mut marked = rule(100, 10);
        marked.fwmark = 7;
        marked.fwmask = 0xff;
        let m = mirror(vec![
            link(2, 1500),
            link(3, 9000),
            Change::RuleUp(rule(32766, 254)),
            Change::RuleUp(marked),
            route(254, "0.0.0.0/0", RouteKind::Unicast, &[(2, "10.0.0.1")]),
            route(254, "192.0.2.0/24", RouteKind::Unicast, &[(2, "10.0.0.2")]),
            route(10, "192.0.2.0/25", RouteKind::Unicast, &[(3, "10.1.0.1")]),
            route(10, "192.0.2.128/25", RouteKind::Throw, &[]),
        ]);
        let ep: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(gw(&m, &LookupKey::to(ep)).as_deref(), Some("10.0.0.2"));
        let k = LookupKey {
            dst: ep,
            src: None,
            mark: 0x107,
        };
        assert_eq!(
            gw(&m, &k).as_deref(),
            Some("10.1.0.1"),
            "mark matches under mask"
        );
        let thrown = LookupKey {
            dst: "192.0.2.200".parse().unwrap(),
            src: None,
            mark: 7,
        };
        assert_eq!(
            gw(&m, &thrown).as_deref(),
            Some("10.0.0.2"),
            "throw goes on to main"
        );
        let far = LookupKey::to("198.51.100.1".parse().unwrap());
        assert_eq!(gw(&m, &far).as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn refusals_and_missing_routes() {
        let m = mirror(vec![
            link(2, 1500),
            Change::RuleUp(rule(32766, 254)),
            route(254, "192.0.2.0/24", RouteKind::Unreachable, &[]),
        ]);
        let p = m.resolve_paths(&LookupKey::to("192.0.2.1".parse().unwrap()));
        assert_eq!(p, Paths::None(NoRoute::Refused));
        let p = m.resolve_paths(&LookupKey::to("198.51.100.1".parse().unwrap()));
        assert_eq!(p, Paths::None(NoRoute::NotFound));
    }
}
