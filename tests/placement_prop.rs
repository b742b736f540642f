//! The placement invariant, as a property: after any sequence of port MTU and state
//! changes, route, rule and neighbour changes, IPsec policies and SAs coming and going,
//! and flow arrivals, every flow's placement
//! equals the judge applied to facts dumped fresh at that moment.
//!
//! The pieces are the daemon's own, run in one thread without a kernel: fibwatch's
//! mirror and key index (incremental: only the keys a change can reach are re-resolved),
//! the daemon's live port table (link changes become port updates), and the offloader
//! over a simulated eswitch (re-judging only the flows a changed fact concerns). The
//! oracle resolves every flow's keys from scratch, builds the port table from scratch,
//! and judges each flow's rule on those.

use datapath::{Action, Actions, FlowKey, FlowMask, Megaflow, PortId, TunnelAttrs};
use fibwatch::xfrm::{Policy, Selector, State, Template, Xfrm};
use fibwatch::{
    Change, Dirty, Family, IfIndex, KeyIndex, Link, LookupKey, Mirror, Neighbour, NextHop,
    NudState, Route, RouteKey, RouteKind, Rule,
};
use flowd::config::Config;
use flowd::daemon::ports::LivePorts;
use offload::judge::{Facts, judge};
use offload::sim::{SimCaps, SimFabric, SimRep, SimSwitchSpec};
use offload::worker::PortChange;
use offload::{FlowRequest, Offloader, Placement, PortTable};
use proptest::prelude::*;
use std::net::IpAddr;
use std::time::Duration;
use vocab::{FlowId, TunnelPath, TunnelRole};

const UP1: u32 = 2;
const UP2: u32 = 3;
const REP0: u32 = 10;
const REP1: u32 = 11;
const VXLAN: u32 = 20;
const REMOTES: [&str; 3] = ["10.0.0.2", "10.0.0.3", "10.0.1.2"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const CONFIG: &str = r#"
[[port]]
name = "rep0"
role = "representor"
vf = 0
switch_id = "0x00aa"
[[port]]
name = "rep1"
role = "representor"
vf = 1
switch_id = "0x00aa"
[[port]]
name = "up1"
role = "uplink"
id = 11
switch_id = "0x00aa"
[[port]]
name = "up2"
role = "uplink"
id = 12
switch_id = "0x00aa"
[[port]]
name = "vxlan_sys"
role = "tunnel"
id = 100
"#;

fn link(index: u32, name: &str, mtu: u32, up: bool) -> Link {
    Link {
        index: IfIndex(index),
        name: name.into(),
        mtu,
        admin_up: true,
        oper_up: up,
        mac: Some([2, 0, 0, 0, 0, index as u8]),
        switch_id: None,
    }
}

fn route(dst: &str, table: u32, dev: u32, mtu: Option<u32>) -> Route {
    Route {
        key: RouteKey {
            table,
            dst: format!("{dst}/32").parse().unwrap(),
            tos: 0,
            metric: 0,
        },
        kind: RouteKind::Unicast,
        scope: 0,
        src_prefix: None,
        prefsrc: Some(ip(&format!("192.168.{dev}.1"))),
        mtu,
        nexthops: vec![NextHop {
            ifindex: Some(IfIndex(dev)),
            gateway: Some(ip(&format!("192.168.{dev}.2"))),
            weight: 1,
            dead: false,
        }],
    }
}

fn neigh(dev: u32, valid: bool) -> Change {
    Change::NeighUp(Neighbour {
        ifindex: IfIndex(dev),
        ip: ip(&format!("192.168.{dev}.2")),
        state: if valid {
            NudState::REACHABLE
        } else {
            NudState::FAILED
        },
        mac: valid.then_some([4, 0, 0, 0, 0, dev as u8]),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sec {
    None,
    NoSa,
    Sa(Option<u32>),
    Block,
}

/// The kernel's IPsec databases for these per-remote settings: an outbound transport
/// ESP policy from anywhere to the remote, and its SA (AES-GCM, 37 bytes).
fn xfrm_of(sec: &[Sec; 3]) -> Xfrm {
    let any = ip("0.0.0.0");
    let mut x = Xfrm::default();
    for (i, s) in sec.iter().enumerate() {
        let dst = ip(REMOTES[i]);
        if *s == Sec::None {
            continue;
        }
        x.policies.push(Policy {
            sel: Selector {
                daddr: dst,
                prefixlen_d: 32,
                saddr: any,
                prefixlen_s: 0,
                dport: (0, 0),
                sport: (0, 0),
                proto: 17,
                ifindex: 0,
            },
            priority: 10,
            index: i as u32 + 1,
            dir: 1,
            action: u8::from(*s == Sec::Block),
            kind: 0,
            mark: (0, 0),
            templates: vec![Template {
                daddr: dst,
                saddr: any,
                proto: 50,
                mode: 0,
                reqid: 0,
                optional: false,
            }],
        });
        if let Sec::Sa(offload) = s {
            for dev in [UP1, UP2] {
                x.states.push(State {
                    daddr: dst,
                    saddr: ip(&format!("192.168.{dev}.1")),
                    spi: 0x100 + i as u32,
                    proto: 50,
                    mode: 0,
                    reqid: 1,
                    overhead: Some(37),
                    packet_offload: offload.map(IfIndex),
                });
            }
        }
    }
    x
}

/// One step of the world.
#[derive(Debug, Clone)]
enum Op {
    Mtu(u32, u32),
    LinkState(u32, bool),
    Route {
        remote: usize,
        table: u32,
        dev: u32,
        mtu: Option<u32>,
    },
    RouteDel {
        remote: usize,
        table: u32,
    },
    MarkRule(bool),
    Neigh(u32, bool),
    /// The IPsec policy toward a remote: none, no SA, an SA (packet-offloaded on an
    /// uplink or not), or block.
    Ipsec(usize, Sec),
    Flow {
        rep: u32,
        remote: usize,
        mark: bool,
        vni: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dev = prop_oneof![Just(UP1), Just(UP2)];
    let any_link = prop_oneof![Just(UP1), Just(UP2), Just(REP0), Just(REP1)];
    prop_oneof![
        (
            any_link.clone(),
            prop_oneof![Just(1400u32), Just(1450), Just(1500), Just(9000)]
        )
            .prop_map(|(l, m)| Op::Mtu(l, m)),
        (any_link, any::<bool>()).prop_map(|(l, up)| Op::LinkState(l, up)),
        (
            0..REMOTES.len(),
            prop_oneof![Just(254u32), Just(100)],
            dev.clone(),
            proptest::option::of(prop_oneof![Just(1400u32), Just(1500)])
        )
            .prop_map(|(remote, table, dev, mtu)| Op::Route {
                remote,
                table,
                dev,
                mtu
            }),
        (0..REMOTES.len(), prop_oneof![Just(254u32), Just(100)])
            .prop_map(|(remote, table)| Op::RouteDel { remote, table }),
        any::<bool>().prop_map(Op::MarkRule),
        (dev.clone(), any::<bool>()).prop_map(|(d, v)| Op::Neigh(d, v)),
        (
            0..REMOTES.len(),
            prop_oneof![
                Just(Sec::None),
                Just(Sec::NoSa),
                Just(Sec::Block),
                Just(Sec::Sa(None)),
                dev.prop_map(|d| Sec::Sa(Some(d))),
            ]
        )
            .prop_map(|(r, s)| Op::Ipsec(r, s)),
        (
            prop_oneof![Just(REP0), Just(REP1)],
            0..REMOTES.len(),
            any::<bool>(),
            1u32..4
        )
            .prop_map(|(rep, remote, mark, vni)| Op::Flow {
                rep,
                remote,
                mark,
                vni
            }),
    ]
}

struct World {
    mirror: Mirror,
    index: KeyIndex,
    ports: LivePorts,
    off: Offloader,
    flows: Vec<(FlowId, Megaflow, Actions, Vec<TunnelPath>)>,
    next: u64,
    sec: [Sec; 3],
}

fn port_id(rep: u32) -> PortId {
    PortId(if rep == REP0 { 1 } else { 2 })
}

impl World {
    fn new() -> Self {
        let cfg: Config = CONFIG.parse().expect("config");
        let mut mirror = Mirror::new();
        let mut d = Dirty::default();
        let links = [
            link(UP1, "up1", 1500, true),
            link(UP2, "up2", 1500, true),
            link(REP0, "rep0", 1450, true),
            link(REP1, "rep1", 1450, true),
            link(VXLAN, "vxlan_sys", 1500, true),
        ];
        for l in &links {
            mirror.apply(Change::LinkUp(l.clone()), &mut d);
        }
        mirror.apply(
            Change::RuleUp(Rule::to_table(Family::V4, 32766, 254)),
            &mut d,
        );
        for r in REMOTES {
            mirror.apply(Change::RouteUp(route(r, 254, UP1, None)), &mut d);
        }
        mirror.apply(neigh(UP1, true), &mut d);
        mirror.apply(neigh(UP2, true), &mut d);
        let ports = LivePorts::new(&cfg.ports, &links).expect("ports");
        let table = (*ports.table()).clone();
        let sw = vec![0, 0xaa];
        let fabric = SimFabric::new(vec![SimSwitchSpec {
            switch_id: sw,
            uplinks: vec![IfIndex(UP1), IfIndex(UP2)],
            tunnels: vec![IfIndex(VXLAN)],
            reps: vec![
                SimRep {
                    vf: 0,
                    rep: IfIndex(REP0),
                    vf_port: IfIndex(110),
                },
                SimRep {
                    vf: 1,
                    rep: IfIndex(REP1),
                    vf_port: IfIndex(111),
                },
            ],
            capacity: 100_000,
            caps: SimCaps::default(),
        }]);
        World {
            mirror,
            index: KeyIndex::new(),
            ports,
            off: Offloader::new(Box::new(fabric), table, Duration::from_secs(60)),
            flows: Vec::new(),
            next: 0,
            sec: [Sec::None; 3],
        }
    }

    /// Applies kernel changes as the daemon sees them: the links that changed become
    /// port updates first, then the keys whose facts changed become path updates.
    fn kernel(&mut self, changes: Vec<Change>) {
        self.kernel_with(changes, Dirty::default());
    }

    fn kernel_with(&mut self, changes: Vec<Change>, mut dirty: Dirty) {
        for c in changes {
            self.mirror.apply(c, &mut dirty);
        }
        for i in dirty.links.clone() {
            let update = match self.mirror.link(i) {
                Some(l) => self.ports.link_changed(l),
                None => self.ports.link_gone(i),
            };
            if let Some(u) = update {
                self.off.change_ports(PortChange {
                    plugged: vec![u.now],
                    unplugged: Vec::new(),
                });
            }
        }
        for u in self.index.apply(&self.mirror, &dirty) {
            self.off.path_changed(u.key, u.facts);
        }
    }

    fn step(&mut self, op: &Op) {
        let changes = match op {
            Op::Mtu(l, mtu) => {
                let mut k = self.mirror.link(IfIndex(*l)).cloned().expect("link");
                k.mtu = *mtu;
                vec![Change::LinkUp(k)]
            }
            Op::LinkState(l, up) => {
                let mut k = self.mirror.link(IfIndex(*l)).cloned().expect("link");
                k.oper_up = *up;
                vec![Change::LinkUp(k)]
            }
            Op::Route {
                remote,
                table,
                dev,
                mtu,
            } => vec![Change::RouteUp(route(REMOTES[*remote], *table, *dev, *mtu))],
            Op::RouteDel { remote, table } => {
                vec![Change::RouteGone(
                    route(REMOTES[*remote], *table, UP1, None).key,
                )]
            }
            Op::MarkRule(add) => {
                let mut r = Rule::to_table(Family::V4, 100, 100);
                r.fwmark = 0x10;
                r.fwmask = u32::MAX;
                vec![if *add {
                    Change::RuleUp(r)
                } else {
                    Change::RuleGone(r)
                }]
            }
            Op::Neigh(dev, valid) => vec![neigh(*dev, *valid)],
            Op::Ipsec(remote, sec) => {
                // As the watcher does: a fresh dump, everything dirty if it differs.
                self.sec[*remote] = *sec;
                let dirty = Dirty {
                    all: self.mirror.set_xfrm(xfrm_of(&self.sec)),
                    ..Dirty::default()
                };
                self.kernel_with(Vec::new(), dirty);
                return;
            }
            Op::Flow {
                rep,
                remote,
                mark,
                vni,
            } => {
                self.flow(*rep, *remote, *mark, *vni);
                return;
            }
        };
        self.kernel(changes);
    }

    /// A new flow, as the daemon's hooks announce it: its key tracked (the first facts
    /// go to the offloader), then offered.
    fn flow(&mut self, rep: u32, remote: usize, mark: bool, vni: u32) {
        self.next += 1;
        let id = FlowId(self.next);
        let mut k = FlowKey::default();
        let mut m = FlowMask::default();
        k.in_port = port_id(rep).0;
        m.in_port = u32::MAX;
        k.eth_type = 0x0800;
        m.eth_type = 0xffff;
        k.eth_dst = [2, 0, 0, 0, (self.next >> 8) as u8, self.next as u8];
        m.eth_dst = [0xff; 6];
        let mut t = TunnelAttrs::vxlan(vni, ip(REMOTES[remote]));
        if mark {
            t.mark = 0x10;
        }
        let key = t.lookup_key();
        let new = self.index.facts(&key).is_none();
        let facts = self.index.track(&self.mirror, key);
        if new {
            self.off.path_changed(key, facts);
        }
        let mf = Megaflow::new(&k, &m);
        let actions = Actions::new(vec![Action::SetTunnel(t), Action::Output(PortId(100))]);
        let paths = vec![TunnelPath {
            key,
            role: TunnelRole::Encap,
        }];
        self.off.process(vec![FlowRequest::put(
            id,
            mf,
            actions.clone(),
            paths.clone(),
        )]);
        self.flows.push((id, mf, actions, paths));
    }

    /// Every flow's placement against the judge on freshly dumped facts.
    fn check(&self, step: usize, ops: &[Op]) {
        let ports: PortTable = {
            let cfg: Config = CONFIG.parse().expect("config");
            let links: Vec<Link> = self.mirror.links().cloned().collect();
            (*LivePorts::new(&cfg.ports, &links).expect("ports").table()).clone()
        };
        for (id, mf, actions, paths) in &self.flows {
            let fresh: datapath::fastmap::FastMap<LookupKey, vocab::PathFacts> = paths
                .iter()
                .map(|p| {
                    (
                        p.key,
                        self.mirror
                            .facts(&self.mirror.resolve_paths(&p.key), &p.key),
                    )
                })
                .collect();
            let mut rule = offload::translate::translate(mf, actions, &ports).expect("translates");
            let want = judge(
                &mut rule,
                &[],
                &Facts {
                    ports: &ports,
                    paths: &fresh,
                    hardware: true,
                },
            );
            let got = self.off.placement(*id).expect("placed");
            match (&want, got) {
                (Ok(()), Placement::Offloaded { .. }) => {}
                (Err(w), Placement::Software { reason }) if w == reason => {}
                _ => panic!(
                    "step {step}: flow {id}: placed {got}, the judge on fresh facts says \
                     {want:?}\nops: {ops:#?}"
                ),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn placements_equal_the_judge_on_fresh_facts(ops in proptest::collection::vec(op(), 1..40)) {
        let mut w = World::new();
        for (i, op) in ops.iter().enumerate() {
            w.step(op);
            w.check(i, &ops[..=i]);
        }
    }
}
