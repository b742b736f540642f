//! fibwatch: cost of a route change with 100,000 tunneled flows over 1,000 endpoints.
//!
//! Synthetic events fed to the mirror and the tunnel index (no kernel, no netlink
//! parsing): time from the change being read to decisions for all affected flows, and
//! the count of decisions for unaffected flows (must be 0).

use fibwatch::{
    Change, Dirty, Family, FlowId, FlowInfo, IfIndex, Link, Mirror, Neighbour, NextHop, NudState,
    Role, Route, RouteKey, RouteKind, Rule, StaticSwitchIds, SwitchId, TunnelIndex,
};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const ENDPOINTS: u32 = 1_000;
const FLOWS_PER_ENDPOINT: u64 = 100;
const PREFIXES: u32 = 10; // one /24 per 100 endpoints: one route = 10% of endpoints

fn link(i: u32, name: &str) -> Change {
    Change::LinkUp(Link {
        index: IfIndex(i),
        name: name.into(),
        mtu: 1500,
        admin_up: true,
        oper_up: true,
        mac: Some([2, 0, 0, 0, 0, i as u8]),
        switch_id: Some(SwitchId(vec![1])),
    })
}

fn route(prefix: u32, dev: u32) -> Change {
    Change::RouteUp(Route {
        key: RouteKey {
            table: 254,
            dst: format!("10.100.{prefix}.0/24").parse().unwrap(),
            tos: 0,
            metric: 0,
        },
        kind: RouteKind::Unicast,
        scope: 0,
        src_prefix: None,
        prefsrc: Some(IpAddr::V4(Ipv4Addr::new(10, dev as u8, 0, 1))),
        mtu: None,
        nexthops: vec![NextHop {
            ifindex: Some(IfIndex(dev)),
            gateway: Some(IpAddr::V4(Ipv4Addr::new(10, dev as u8, 0, 2))),
            weight: 1,
            dead: false,
        }],
    })
}

fn endpoint(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 100, (i / 100) as u8, (i % 100 + 1) as u8))
}

fn main() {
    let mut mirror = Mirror::new();
    let mut d = Dirty::default();
    let mut setup = vec![link(2, "up1"), link(3, "up2")];
    setup.push(Change::RuleUp(Rule::to_table(Family::V4, 32766, 254)));
    for dev in [2u32, 3] {
        setup.push(Change::NeighUp(Neighbour {
            ifindex: IfIndex(dev),
            ip: IpAddr::V4(Ipv4Addr::new(10, dev as u8, 0, 2)),
            state: NudState::REACHABLE,
            mac: Some([4, 0, 0, 0, 0, dev as u8]),
        }));
    }
    for p in 0..PREFIXES {
        setup.push(route(p, 2));
    }
    for c in setup {
        mirror.apply(c, &mut d);
    }
    let ids = StaticSwitchIds(HashMap::new());
    let mut index = TunnelIndex::new(Box::new(ids));
    let t = Instant::now();
    let mut id = 0u64;
    for e in 0..ENDPOINTS {
        for k in 0..FLOWS_PER_ENDPOINT {
            let info = FlowInfo {
                id: FlowId(id),
                endpoint: endpoint(e),
                role: if k % 4 == 3 { Role::Decap } else { Role::Encap },
                vni: k as u32,
                local: None,
                mark: 0,
                rep_mtu: 1450,
                switch_id: Some(SwitchId(vec![1])),
            };
            index.register(&mirror, info);
            id += 1;
        }
    }
    let register_time = t.elapsed();

    let rounds = 21;
    let mut times = Vec::with_capacity(rounds);
    let mut unaffected_decisions = 0usize;
    let mut affected_decisions = 0usize;
    let mut affected_flows = 0usize;
    let mut endpoints_touched = 0usize;
    for r in 0..rounds {
        let prefix = (r as u32 * 3) % PREFIXES;
        let dev = if r % 2 == 0 { 3 } else { 2 };
        // Make sure the route is on the other uplink before the timed change.
        let mut d = Dirty::default();
        mirror.apply(route(prefix, 5 - dev), &mut d);
        index.apply(&mirror, &d);

        let change = route(prefix, dev);
        let t = Instant::now();
        let mut dirty = Dirty::default();
        mirror.apply(change, &mut dirty);
        let decisions = index.apply(&mirror, &dirty);
        times.push(t.elapsed());

        let in_prefix: HashSet<IpAddr> = (prefix * 100..prefix * 100 + 100).map(endpoint).collect();
        let (inside, outside): (Vec<_>, Vec<_>) = decisions
            .iter()
            .partition(|d| in_prefix.contains(&d.endpoint));
        unaffected_decisions += outside.len();
        affected_decisions = inside.len();
        affected_flows = in_prefix.len() * FLOWS_PER_ENDPOINT as usize;
        endpoints_touched = index.last_stats().endpoints;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = times[times.len() / 2];
    let max = *times.last().unwrap();

    println!(
        "fibwatch route-change bench (synthetic events fed to Mirror + TunnelIndex; no kernel)"
    );
    println!("{:<48} {:>14}", "metric", "value");
    println!("{:<48} {:>14}", "flows", index.flow_count());
    println!("{:<48} {:>14}", "endpoints", index.endpoint_count());
    println!(
        "{:<48} {:>14.1}",
        "register all flows (ms)",
        ms(register_time)
    );
    println!(
        "{:<48} {:>14}",
        "endpoints re-resolved per change", endpoints_touched
    );
    println!("{:<48} {:>14}", "affected flows per change", affected_flows);
    println!(
        "{:<48} {:>14}",
        "decisions per change (affected flows)", affected_decisions
    );
    println!(
        "{:<48} {:>14.3}",
        "event read -> all decisions, median (ms)",
        ms(median)
    );
    println!(
        "{:<48} {:>14.3}",
        "event read -> all decisions, max (ms)",
        ms(max)
    );
    println!(
        "{:<48} {:>14}",
        "decisions for unaffected flows (all rounds)", unaffected_decisions
    );
    println!(
        "{:<48} {:>14}",
        "target < 10 ms",
        if max < Duration::from_millis(10) {
            "met"
        } else {
            "MISSED"
        }
    );
    assert_eq!(
        unaffected_decisions, 0,
        "a route change touched unaffected flows"
    );
}
