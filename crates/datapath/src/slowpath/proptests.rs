//! Property test: a megaflow cache fed by the slow path agrees with the slow path.
//!
//! Random rule tables over a small universe of fields (so rules overlap and packets
//! collide), the lab networks of the unit tests, and random sequences of packets, rule
//! changes, static MACs, a control plane's remote stations (announced, moved, withdrawn) and
//! flood lists, and time steps. A simple list of megaflows plays the cache: a
//! packet that matches one must get from it exactly what the slow path decides directly
//! (and the same mask); a miss is an upcall (learn, translate, install) that must not
//! overlap any installed megaflow. Every change is followed by revalidation of the flows
//! [`Change::affects`] selects, after which *every* installed flow must still equal its
//! re-translation: the scoping of revalidation is tested, not just its mechanics.
//!
//! CI runs 10,000 cases (about 30 s in debug). For a longer run:
//! `PROPTEST_CASES=200000 cargo test --release -p datapath --lib slowpath::proptests`.

use super::tests::{NET16, TUN, frame, from_vtep, ip, lab};
use super::*;
use crate::PortId;
use crate::actions::TunnelAttrs;
use crate::flow::{FlowMask, addr_to, vlan};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

const MACS: [u8; 4] = [0xa, 0xb, 0xc, 0xd];
const ADDRS: [&str; 4] = ["10.0.0.1", "10.0.1.1", "10.128.0.1", "192.168.0.1"];
const PORTS: [u16; 4] = [22, 80, 443, 8080];

fn arb_mac() -> impl Strategy<Value = Mac> {
    prop_oneof![
        4 => prop::sample::select(&MACS[..]).prop_map(|m| Mac([0x02, 0, 0, 0, 0, m])),
        1 => Just(mac::BROADCAST),
    ]
}

fn arb_addr() -> impl Strategy<Value = [u8; 16]> {
    prop::sample::select(&ADDRS[..]).prop_map(|a| addr_to(ip(a)))
}

fn arb_key() -> impl Strategy<Value = FlowKey> {
    let tunnel = (prop::sample::select(&[16u32, 17, 99][..]), any::<bool>());
    let vlan = prop::sample::select(&[0u16, 20, 21][..]);
    (
        prop::sample::select(&[1u32, 2, 3, 4, 5, 42, 100][..]),
        tunnel,
        vlan,
        (arb_mac(), arb_mac()),
        any::<bool>(),
        (arb_addr(), arb_addr()),
        prop::sample::select(&PORTS[..]),
    )
        .prop_map(|(port, (vni, vtep2), vid, (src, dst), arp, (s, d), tp)| {
            let mut k = if port == TUN.0 {
                let vtep = if vtep2 { "10.0.0.2" } else { "10.0.0.3" };
                from_vtep(vni, vtep, src, dst)
            } else {
                frame(port, src, dst)
            };
            if vid != 0 {
                k.vlan_tci[0] = vlan::PRESENT | vid;
                k.vlan_tpid[0] = 0x8100;
            }
            if arp {
                k.eth_type = 0x0806;
                k.ip_proto = 1;
                (k.tp_src, k.tp_dst) = (0, 0);
            }
            k.ip_src = s;
            k.ip_dst = d;
            if !arp {
                k.tp_dst = tp;
            }
            k
        })
}

/// A constraint on one field.
#[derive(Debug, Clone)]
enum Cond {
    InPort(u32),
    EthType(u16),
    IpDst([u8; 16], usize),
    IpSrc([u8; 16], usize),
    TpDst(u16, u16),
    EthDst(Mac),
    Vni(u32),
}

fn arb_cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        prop::sample::select(&[1u32, 2, 4, 100][..]).prop_map(Cond::InPort),
        prop::sample::select(&[0x0800u16, 0x0806][..]).prop_map(Cond::EthType),
        (arb_addr(), 0usize..=32).prop_map(|(a, l)| Cond::IpDst(a, l)),
        (arb_addr(), 0usize..=32).prop_map(|(a, l)| Cond::IpSrc(a, l)),
        (
            prop::sample::select(&PORTS[..]),
            prop::sample::select(&[0xffffu16, 0xff00, 0xfff0][..])
        )
            .prop_map(|(p, m)| Cond::TpDst(p, m)),
        arb_mac().prop_map(Cond::EthDst),
        prop::sample::select(&[16u32, 17][..]).prop_map(Cond::Vni),
    ]
}

fn prefix(len: usize) -> [u8; 16] {
    let mut m = [0u8; 16];
    for (i, b) in m.iter_mut().enumerate().take(4) {
        let bits = len.saturating_sub(i * 8).min(8);
        *b = (0xffu16 << (8 - bits)) as u8;
    }
    m
}

fn apply(c: &Cond, k: &mut FlowKey, m: &mut FlowMask) {
    match *c {
        Cond::InPort(p) => (k.in_port, m.in_port) = (p, u32::MAX),
        Cond::EthType(t) => (k.eth_type, m.eth_type) = (t, 0xffff),
        Cond::IpDst(a, l) => (k.ip_dst, m.ip_dst) = (a, prefix(l)),
        Cond::IpSrc(a, l) => (k.ip_src, m.ip_src) = (a, prefix(l)),
        Cond::TpDst(p, mask) => (k.tp_dst, m.tp_dst) = (p, mask),
        Cond::EthDst(mac) => (k.eth_dst, m.eth_dst) = (mac.0, [0xff; 6]),
        Cond::Vni(v) => (k.tun_vni, m.tun_vni) = (v, u32::MAX),
    }
}

fn arb_action() -> impl Strategy<Value = RuleAction> {
    prop_oneof![
        3 => Just(RuleAction::Normal),
        2 => prop::sample::select(&[1u32, 2, 5][..]).prop_map(|p| RuleAction::Output(PortId(p))),
        1 => Just(RuleAction::Drop),
        1 => Just(RuleAction::PushVlan { tpid: 0x8100, tci: 20 }),
        1 => Just(RuleAction::PopVlan),
        1 => Just(RuleAction::Tunnel {
            port: TUN,
            attrs: TunnelAttrs::vxlan(16, ip("10.0.0.3")),
        }),
    ]
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        0u16..4,
        prop::collection::vec(arb_cond(), 0..4),
        prop::collection::vec(arb_action(), 0..3),
    )
        .prop_map(|(priority, conds, actions)| {
            let (mut k, mut m) = (FlowKey::default(), FlowMask::default());
            conds.iter().for_each(|c| apply(c, &mut k, &mut m));
            Rule::new(priority, &k, &m, actions)
        })
}

#[derive(Debug, Clone)]
enum Op {
    Packet(FlowKey),
    Add(Rule),
    Modify(usize, Rule),
    Delete(usize),
    StaticMac(Mac, bool),
    /// A control plane announces (`true`) or withdraws a station behind VTEP `.2` or `.9`.
    Remote(Mac, bool, bool),
    /// A control plane's flood list for VNI 16 (a subset of three VTEPs).
    Flood(u8),
    Advance(u64),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => arb_key().prop_map(Op::Packet),
        1 => arb_rule().prop_map(Op::Add),
        1 => (any::<usize>(), arb_rule()).prop_map(|(i, r)| Op::Modify(i, r)),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => (arb_mac(), any::<bool>()).prop_map(|(m, r)| Op::StaticMac(m, r)),
        2 => (arb_mac(), any::<bool>(), any::<bool>()).prop_map(|(m, v, a)| Op::Remote(m, v, a)),
        1 => (0u8..8).prop_map(Op::Flood),
        1 => (0u64..400).prop_map(Op::Advance),
    ]
}

/// One cached megaflow.
struct Flow {
    mf: Megaflow,
    actions: Actions,
    meta: FlowMeta,
    used: Duration,
}

/// The slow path plus a list of megaflows standing in for the cache.
struct Sim {
    sp: SlowPath,
    flows: Vec<Flow>,
    rules: Vec<RuleId>,
    now: Duration,
}

impl Sim {
    fn packet(&mut self, k: &FlowKey) -> Result<(), TestCaseError> {
        let hits: Vec<usize> = (0..self.flows.len())
            .filter(|i| self.flows[*i].mf.matches(k))
            .collect();
        prop_assert!(hits.len() <= 1, "overlapping megaflows");
        if let Some(&i) = hits.first() {
            let direct = self.sp.xlate(k, self.now);
            let f = &mut self.flows[i];
            prop_assert_eq!(&f.actions, &direct.actions, "cached {} for {}", f.mf, k);
            prop_assert_eq!(f.mf.mask, direct.mask);
            prop_assert!(!direct.needs_learning);
            f.used = self.now;
            return Ok(());
        }
        let (x, changes) = self.sp.upcall(k, self.now);
        prop_assert!(!x.needs_learning);
        let mf = x.megaflow(k);
        for f in &self.flows {
            prop_assert!(!f.mf.overlaps(&mf), "{} overlaps {}", mf, f.mf);
        }
        self.flows.push(Flow {
            mf,
            actions: x.actions,
            meta: x.meta,
            used: self.now,
        });
        self.revalidate(&changes)
    }

    fn revalidate(&mut self, changes: &[Change]) -> Result<(), TestCaseError> {
        let (sp, now) = (&self.sp, self.now);
        self.flows.retain_mut(|f| {
            if !changes.iter().any(|c| c.affects(&f.mf, &f.meta)) {
                return true;
            }
            match sp.revalidate(&f.mf, &f.actions, &f.meta, now) {
                Revalidation::Keep => true,
                Revalidation::Modify(x) => {
                    (f.actions, f.meta) = (x.actions.clone(), x.meta);
                    true
                }
                _ => false,
            }
        });
        self.check_all()
    }

    /// Every installed flow equals its re-translation.
    fn check_all(&self) -> Result<(), TestCaseError> {
        for f in &self.flows {
            let x = self.sp.xlate(&f.mf.key, self.now);
            prop_assert_eq!(&x.actions, &f.actions, "stale {}", f.mf);
            prop_assert_eq!(x.mask, f.mf.mask, "stale mask {}", f.mf);
            prop_assert!(!x.needs_learning, "unlearned {}", f.mf);
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let change = match op {
            Op::Packet(k) => return self.packet(&k),
            Op::Add(r) => self.sp.add_rule(r).ok().map(|(id, c)| {
                self.rules.push(id);
                c
            }),
            Op::Modify(i, r) if !self.rules.is_empty() => {
                let id = self.rules[i % self.rules.len()];
                self.sp.modify_rule(id, r).ok()
            }
            Op::Delete(i) if !self.rules.is_empty() => {
                let id = self.rules.remove(i % self.rules.len());
                self.sp.delete_rule(id).ok()
            }
            Op::StaticMac(m, remote) => {
                let loc = if remote {
                    Location::Remote(ip("10.0.0.2"))
                } else {
                    Location::Local(Attachment::untagged(PortId(2)))
                };
                self.sp.set_static_mac(NET16, m, loc).ok()
            }
            Op::Remote(mac, nine, announce) => {
                let (network, vtep) = (NET16, ip(if nine { "10.0.0.9" } else { "10.0.0.2" }));
                let u = if announce {
                    RemoteUpdate::Station { network, mac, vtep }
                } else {
                    RemoteUpdate::StationGone { network, mac, vtep }
                };
                self.sp.apply_remote(&u).ok().flatten()
            }
            Op::Flood(bits) => {
                let all = ["10.0.0.2", "10.0.0.8", "10.0.0.9"];
                let vteps = (0..3)
                    .filter(|i| bits & (1 << i) != 0)
                    .map(|i| ip(all[i]))
                    .collect();
                let u = RemoteUpdate::FloodList {
                    network: NET16,
                    vteps,
                };
                self.sp.apply_remote(&u).ok().flatten()
            }
            Op::Advance(s) => return self.advance(s),
            _ => None,
        };
        self.revalidate(&change.into_iter().collect::<Vec<_>>())
    }

    fn advance(&mut self, s: u64) -> Result<(), TestCaseError> {
        self.now += Duration::from_secs(s);
        for f in &self.flows {
            self.sp.refresh(&f.meta, f.used);
        }
        let changes = self.sp.expire(self.now);
        self.revalidate(&changes)
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn cache_agrees_with_slow_path(
        rules in prop::collection::vec(arb_rule(), 0..6),
        normal in any::<bool>(),
        ops in prop::collection::vec(arb_op(), 1..40),
    ) {
        let mut sp = lab();
        if !normal {
            // Drop the lab's catch-all NORMAL: a table with only random rules.
            let id = sp.rules().entries()[0].id;
            sp.delete_rule(id).unwrap();
        }
        let mut sim = Sim { sp, flows: Vec::new(), rules: Vec::new(), now: Duration::ZERO };
        for r in rules {
            if let Ok((id, _)) = sim.sp.add_rule(r) {
                sim.rules.push(id);
            }
        }
        for op in ops {
            sim.step(op)?;
        }
    }
}
