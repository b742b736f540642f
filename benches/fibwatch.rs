//! fibwatch + the judge: cost of a route change with 100,000 tunneled flows over 1,000
//! remote VTEPs.
//!
//! Synthetic events fed to the mirror and the key index (no kernel, no netlink parsing);
//! the path updates go to an offloader over a simulated eswitch, which re-judges the
//! flows of each updated key and rewrites their rules. Measured: from the change being
//! read to every affected flow judged again and every affected encapsulation's rule
//! rewritten (decapsulations do not depend on the way out: their rules stay), the keys
//! re-resolved, and the updates for unaffected keys (must be 0).

use datapath::{Action, Actions, FlowKey, FlowMask, Megaflow, PortId, TunnelAttrs};
use fibwatch::{
    Change, Dirty, Family, FlowId, IfIndex, KeyIndex, Link, LookupKey, Mirror, Neighbour, NextHop,
    NudState, Route, RouteKey, RouteKind, Rule,
};
use offload::sim::{SimCaps, SimFabric, SimRep, SimSwitchSpec};
use offload::{FlowRequest, Offloader, PortInfo, PortKind, PortTable};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use vocab::{SwitchId, TunnelPath, TunnelRole};

const ENDPOINTS: u32 = 1_000;
const FLOWS_PER_ENDPOINT: u64 = 100;
const PREFIXES: u32 = 10; // one /24 per 100 endpoints: one route = 10% of endpoints
const REP: PortId = PortId(1);
const TUN: PortId = PortId(100);

fn link(i: u32, name: &str) -> Change {
    Change::LinkUp(Link {
        index: IfIndex(i),
        name: name.into(),
        mtu: 1500,
        admin_up: true,
        oper_up: true,
        mac: Some([2, 0, 0, 0, 0, i as u8]),
        switch_id: None,
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

fn offloader() -> Offloader {
    let sw = SwitchId(vec![1]);
    let p = |id: u32, name: &str, ifx: u32, kind| PortInfo {
        id: PortId(id),
        name: name.into(),
        ifindex: IfIndex(ifx),
        kind,
        mtu: if kind == PortKind::Uplink { 1500 } else { 1450 },
        up: true,
        switch_id: (kind != PortKind::Tunnel).then(|| sw.clone()),
    };
    let ports: PortTable = [
        p(REP.0, "rep0", 11, PortKind::Representor { vf: 0 }),
        p(2, "up1", 2, PortKind::Uplink),
        p(3, "up2", 3, PortKind::Uplink),
        p(TUN.0, "vxlan_sys", 30, PortKind::Tunnel),
    ]
    .into_iter()
    .collect();
    let fabric = SimFabric::new(vec![SimSwitchSpec {
        switch_id: sw.0,
        uplinks: vec![IfIndex(2), IfIndex(3)],
        tunnels: vec![IfIndex(30)],
        reps: vec![SimRep {
            vf: 0,
            rep: IfIndex(11),
            vf_port: IfIndex(111),
        }],
        capacity: 200_000,
        caps: SimCaps::default(),
    }]);
    Offloader::new(Box::new(fabric), ports, Duration::from_secs(60))
}

/// Flow `k` toward endpoint `e`: an encapsulation from the representor, or (one in four)
/// a decapsulation from the remote.
fn flow(e: u32, k: u64) -> (Megaflow, Actions, Vec<TunnelPath>) {
    let mut key = FlowKey::default();
    let mut mask = FlowMask::default();
    key.eth_type = 0x0800;
    mask.eth_type = 0xffff;
    key.eth_dst = [2, 0, (e >> 8) as u8, e as u8, 0, k as u8];
    mask.eth_dst = [0xff; 6];
    let remote = endpoint(e);
    if k % 4 == 3 {
        key.in_port = TUN.0;
        mask.in_port = u32::MAX;
        key.tun_flags = datapath::flow::tun_flags::PRESENT;
        mask.tun_flags = datapath::flow::tun_flags::PRESENT | datapath::flow::tun_flags::IPV6;
        key.tun_src = datapath::flow::addr_to(remote);
        mask.tun_src = datapath::flow::addr_to("255.255.255.255".parse().unwrap());
        let paths = vec![TunnelPath {
            key: LookupKey::to(remote),
            role: TunnelRole::Decap,
        }];
        (
            Megaflow::new(&key, &mask),
            Actions::new(vec![Action::Output(REP)]),
            paths,
        )
    } else {
        key.in_port = REP.0;
        mask.in_port = u32::MAX;
        let t = TunnelAttrs::vxlan(k as u32, remote);
        let paths = vec![TunnelPath {
            key: t.lookup_key(),
            role: TunnelRole::Encap,
        }];
        (
            Megaflow::new(&key, &mask),
            Actions::new(vec![Action::SetTunnel(t), Action::Output(TUN)]),
            paths,
        )
    }
}

/// The mirror with two uplinks, a neighbour on each, the main table's rule and
/// [`PREFIXES`] routes through the first uplink.
fn mirror() -> Mirror {
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
    mirror
}

/// Tracks every endpoint's key and offers its flows; how long that took.
fn offload_all(mirror: &Mirror, index: &mut KeyIndex, off: &mut Offloader) -> Duration {
    let t = Instant::now();
    let mut id = 0u64;
    for e in 0..ENDPOINTS {
        let key = LookupKey::to(endpoint(e));
        let facts = index.track(mirror, key);
        off.path_changed(key, facts);
        let puts: Vec<FlowRequest> = (0..FLOWS_PER_ENDPOINT)
            .map(|k| {
                let (megaflow, actions, paths) = flow(e, k);
                id += 1;
                FlowRequest::put(FlowId(id), megaflow, actions, paths)
            })
            .collect();
        off.process(puts);
    }
    t.elapsed()
}

/// What the timed route changes did.
#[derive(Default)]
struct Rounds {
    times: Vec<Duration>,
    unaffected_updates: usize,
    affected_updates: usize,
    moved_per_change: u64,
    rejudged_per_change: u64,
    keys_touched: usize,
}

/// Moves one prefix's route to the other uplink, 21 times, timing each change from the
/// event to every rule moved.
fn route_changes(mirror: &mut Mirror, index: &mut KeyIndex, off: &mut Offloader) -> Rounds {
    let mut out = Rounds::default();
    for r in 0..21u32 {
        let prefix = (r * 3) % PREFIXES;
        let dev = if r % 2 == 0 { 3 } else { 2 };
        // Make sure the route is on the other uplink before the timed change.
        let mut d = Dirty::default();
        mirror.apply(route(prefix, 5 - dev), &mut d);
        for u in index.apply(mirror, &d) {
            off.path_changed(u.key, u.facts);
        }
        let before = off.counters();
        let t = Instant::now();
        let mut dirty = Dirty::default();
        mirror.apply(route(prefix, dev), &mut dirty);
        let updates = index.apply(mirror, &dirty);
        for u in &updates {
            off.path_changed(u.key, u.facts);
        }
        out.times.push(t.elapsed());
        out.moved_per_change = off.counters().moved - before.moved;
        out.rejudged_per_change = off.counters().rejudged - before.rejudged;
        let in_prefix: HashSet<IpAddr> = (prefix * 100..prefix * 100 + 100).map(endpoint).collect();
        let inside = updates
            .iter()
            .filter(|u| in_prefix.contains(&u.key.dst))
            .count();
        out.unaffected_updates += updates.len() - inside;
        out.affected_updates = inside;
        out.keys_touched = index.last_stats().keys;
    }
    out.times.sort();
    out
}

fn main() {
    let mut mirror = mirror();
    let mut index = KeyIndex::new();
    let mut off = offloader();
    let setup_time = offload_all(&mirror, &mut index, &mut off);
    let offloaded = off.placements().filter(|(_, p)| p.is_offloaded()).count();
    assert_eq!(offloaded as u64, u64::from(ENDPOINTS) * FLOWS_PER_ENDPOINT);
    let r = route_changes(&mut mirror, &mut index, &mut off);
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
    let median = r.times[r.times.len() / 2];
    let max = *r.times.last().unwrap();
    let affected_flows = 100 * FLOWS_PER_ENDPOINT;
    // Decapsulations do not depend on the way out: judged again, their rule unchanged.
    let encap_flows = 100 * (FLOWS_PER_ENDPOINT - FLOWS_PER_ENDPOINT / 4);
    println!(
        "fibwatch + judge route-change bench (synthetic events: Mirror + KeyIndex -> \
         Offloader over a simulated eswitch; no kernel)"
    );
    let target = if max < Duration::from_millis(100) {
        "met"
    } else {
        "MISSED"
    };
    for (metric, value) in [
        ("metric", "value".to_string()),
        ("flows (all offloaded)", offloaded.to_string()),
        ("lookup keys", index.len().to_string()),
        ("track keys + offload all flows (ms)", ms(setup_time)),
        ("keys re-resolved per change", r.keys_touched.to_string()),
        ("path updates per change", r.affected_updates.to_string()),
        ("affected flows per change", affected_flows.to_string()),
        (
            "flows judged again per change",
            r.rejudged_per_change.to_string(),
        ),
        (
            "rules rewritten per change (encapsulations)",
            r.moved_per_change.to_string(),
        ),
        ("event read -> all rules moved, median (ms)", ms(median)),
        ("event read -> all rules moved, max (ms)", ms(max)),
        (
            "updates for unaffected keys (all rounds)",
            r.unaffected_updates.to_string(),
        ),
        ("target < 100 ms for 10,000 flows", target.to_string()),
    ] {
        println!("{metric:<48} {value:>14}");
    }
    assert_eq!(
        r.unaffected_updates, 0,
        "a route change touched unaffected keys"
    );
    assert_eq!(
        r.rejudged_per_change, affected_flows,
        "every affected flow judged"
    );
    assert_eq!(
        r.moved_per_change, encap_flows,
        "every affected encapsulation moved"
    );
}
