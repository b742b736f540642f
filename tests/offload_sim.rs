//! Fault injection and consistency on the simulated eswitch (runs on the host).
//!
//! - ENOSPC, EOPNOTSUPP and slow answers leave flows in software with their reasons;
//!   ENOSPC and slow answers are retried (capacity: as soon as a rule is removed);
//! - after 10,000 random put/remove/replace operations with random faults, what the
//!   eswitches hold equals exactly the flows marked offloaded;
//! - a packet injected on a VF port hits an offloaded rule (counted, pulled into the
//!   flow's stats) or misses to its representor;
//! - the worker never blocks and loses nothing: a full queue defers to a backlog.

use datapath::flow::addr_to;
use datapath::{
    Action, Actions, FlowId, FlowKey, FlowMask, IfIndex, Megaflow, PortId, TunnelAttrs,
};
use offload::sim::{SharedSim, SimCaps, SimFabric, SimRep, SimSwitchSpec, SimVerdict, keys};
use offload::worker::{OffloadWorker, WorkerConfig};
use offload::{
    FlowRequest, KernelErrno, Offloader, Placement, PortInfo, PortKind, PortTable, SoftwareReason,
};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vocab::{LookupKey, Path, SwitchId};

const REP0: PortId = PortId(1);
const REP1: PortId = PortId(2);
const UP_A: PortId = PortId(3);
const VXLAN: PortId = PortId(4);
const REP_B: PortId = PortId(5);
const UP_B: PortId = PortId(6);
const REP_BIG: PortId = PortId(7);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ports() -> PortTable {
    let p = |id, name: &str, ifx, kind, mtu, sw: Option<u8>| PortInfo {
        id,
        name: name.into(),
        ifindex: IfIndex(ifx),
        kind,
        mtu,
        up: true,
        switch_id: sw.map(|s| SwitchId(vec![s; 8])),
    };
    [
        p(
            REP0,
            "pf0vf0",
            11,
            PortKind::Representor { vf: 0 },
            1450,
            Some(1),
        ),
        p(
            REP1,
            "pf0vf1",
            12,
            PortKind::Representor { vf: 1 },
            1450,
            Some(1),
        ),
        p(UP_A, "p0", 10, PortKind::Uplink, 1500, Some(1)),
        p(VXLAN, "vxlan_sys_4789", 30, PortKind::Tunnel, 1500, None),
        p(
            REP_B,
            "pf1vf0",
            21,
            PortKind::Representor { vf: 0 },
            1450,
            Some(2),
        ),
        p(UP_B, "p1", 20, PortKind::Uplink, 1500, Some(2)),
        p(
            REP_BIG,
            "pf0vf2",
            13,
            PortKind::Representor { vf: 2 },
            1500,
            Some(1),
        ),
    ]
    .into_iter()
    .collect()
}

fn fabric(capacity: usize, caps: SimCaps) -> SharedSim {
    let rep = |vf, rep, port| SimRep {
        vf,
        rep: IfIndex(rep),
        vf_port: IfIndex(port),
    };
    Arc::new(Mutex::new(SimFabric::new(vec![
        SimSwitchSpec {
            switch_id: vec![1; 8],
            uplinks: vec![IfIndex(10)],
            tunnels: vec![IfIndex(30)],
            reps: vec![rep(0, 11, 111), rep(1, 12, 112), rep(2, 13, 113)],
            capacity,
            caps,
        },
        SimSwitchSpec {
            switch_id: vec![2; 8],
            uplinks: vec![IfIndex(20)],
            tunnels: vec![],
            reps: vec![rep(0, 21, 121)],
            capacity,
            caps: SimCaps::default(),
        },
    ])))
}

/// An offloader that knows the path toward the remote VTEP (via p0, resolved).
fn offloader(sim: &SharedSim, deadline: Duration) -> Offloader {
    let mut o = Offloader::new(Box::new(Arc::clone(sim)), ports(), deadline);
    o.path_changed(
        LookupKey::to(ip("192.168.203.56")),
        Ok(Path {
            uplink: IfIndex(10),
            src: Some(ip("192.168.203.51")),
            gateway: None,
            neighbour: ip("192.168.203.56"),
            next_hop_mac: Some([4; 6]),
            uplink_mac: Some([2; 6]),
            mtu: 1500,
            table: 254,
            ipsec: None,
        }),
    );
    o
}

/// An L2 flow from `port` to `out`, distinguished by `n` in the destination MAC.
fn l2_flow(port: PortId, n: u32, actions: Vec<Action>) -> (Megaflow, Actions) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = port.0;
    m.in_port = u32::MAX;
    k.eth_type = 0x0800;
    m.eth_type = 0xffff;
    k.eth_dst = [2, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8, 1];
    m.eth_dst = [0xff; 6];
    (Megaflow::new(&k, &m), Actions::new(actions))
}

fn encap(n: u32) -> Vec<Action> {
    vec![
        Action::SetTunnel(TunnelAttrs::vxlan(n & 0xffffff, ip("192.168.203.56"))),
        Action::Output(VXLAN),
    ]
}

fn decap_flow(n: u32) -> (Megaflow, Actions) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = VXLAN.0;
    m.in_port = u32::MAX;
    k.tun_flags = datapath::flow::tun_flags::PRESENT;
    m.tun_flags = datapath::flow::tun_flags::PRESENT | datapath::flow::tun_flags::IPV6;
    k.tun_vni = n;
    m.tun_vni = u32::MAX;
    k.tun_src = addr_to(ip("192.168.203.56"));
    m.tun_src = addr_to(ip("255.255.255.255"));
    (
        Megaflow::new(&k, &m),
        Actions::new(vec![Action::Output(REP0)]),
    )
}

fn put(flow: u64, f: (Megaflow, Actions)) -> FlowRequest {
    FlowRequest::put(FlowId(flow), f.0, f.1, Vec::new())
}

fn reason(o: &Offloader, flow: u64) -> String {
    o.placement(FlowId(flow))
        .map(|p| p.to_string())
        .unwrap_or_default()
}

#[test]
fn enospc_leaves_flows_in_software_until_capacity_frees() {
    let sim = fabric(2, SimCaps::default());
    let mut o = offloader(&sim, Duration::from_secs(5));
    o.process(
        (0..3)
            .map(|i| put(i, l2_flow(REP0, i as u32, vec![Action::Output(REP1)])))
            .collect(),
    );
    assert!(o.placement(FlowId(0)).unwrap().is_offloaded());
    assert!(o.placement(FlowId(1)).unwrap().is_offloaded());
    assert_eq!(
        reason(&o, 2),
        "offloaded:no (capacity: ENOSPC: sim: eswitch full (retried when filters are removed))"
    );
    assert_eq!(
        o.placement(FlowId(2))
            .and_then(|p| p.reason())
            .map(|r| r.category()),
        Some("capacity")
    );
    assert_eq!(sim.lock().unwrap().len(), 2);
    assert!(o.next_retry().is_some(), "scheduled, never abandoned");
    // Room again: the flow goes in without anyone offering it again.
    o.process(vec![FlowRequest::Remove { flow: FlowId(0) }]);
    o.retry_due(Instant::now(), 16);
    assert!(
        o.placement(FlowId(2)).unwrap().is_offloaded(),
        "{}",
        reason(&o, 2)
    );
    assert_eq!(o.counters().retries_ok, 1);
    assert_eq!(o.next_retry(), None);
}

#[test]
fn eopnotsupp_from_capabilities_and_injected() {
    let caps = SimCaps {
        keys: keys::ALL & !keys::ENC,
        ..SimCaps::default()
    };
    let sim = fabric(100, caps);
    let mut o = offloader(&sim, Duration::from_secs(5));
    o.process(vec![put(1, decap_flow(16))]);
    let r = reason(&o, 1);
    assert!(
        r.starts_with("offloaded:no (backend: EOPNOTSUPP: sim: unsupported keys"),
        "{r}"
    );
    sim.lock()
        .unwrap()
        .faults
        .fail_next
        .push_back(KernelErrno::NotSupported);
    o.process(vec![put(2, l2_flow(REP0, 2, vec![Action::Output(REP1)]))]);
    assert_eq!(
        reason(&o, 2),
        "offloaded:no (backend: EOPNOTSUPP: sim: injected fault)"
    );
    assert!(sim.lock().unwrap().is_empty());
}

#[test]
fn slow_answers_leave_flows_in_software_and_nothing_behind() {
    let sim = fabric(100, SimCaps::default());
    sim.lock().unwrap().faults.latency = Duration::from_millis(40);
    let mut o = offloader(&sim, Duration::from_millis(5));
    o.process(vec![put(1, l2_flow(REP0, 1, vec![Action::Output(REP1)]))]);
    let r = reason(&o, 1);
    assert!(
        r.starts_with("offloaded:no (retrying: backend answered after"),
        "{r}"
    );
    assert!(r.ends_with("(attempt 1))"), "{r}");
    assert!(sim.lock().unwrap().is_empty());
    // The retry is scheduled; once the backend is quick again, it goes in.
    let due = o.next_retry().expect("a retry");
    sim.lock().unwrap().faults.latency = Duration::ZERO;
    o.retry_due(due, 16);
    assert!(
        o.placement(FlowId(1)).unwrap().is_offloaded(),
        "{}",
        reason(&o, 1)
    );
}

#[test]
fn validation_refusals_are_visible() {
    let sim = fabric(100, SimCaps::default());
    let mut o = offloader(&sim, Duration::from_secs(5));
    o.process(vec![
        put(1, l2_flow(REP0, 1, encap(16))),
        put(2, l2_flow(REP_BIG, 2, encap(16))),
        put(3, l2_flow(REP0, 3, vec![Action::Output(REP_B)])),
        put(4, l2_flow(REP0, 4, vec![Action::Userspace])),
        put(5, decap_flow(16)),
    ]);
    assert_eq!(reason(&o, 1), "offloaded:yes dp:sim in_hw dev:pf0vf0");
    assert_eq!(reason(&o, 2), "offloaded:no (mtu: 1500 + 50 > 1500)");
    assert_eq!(
        reason(&o, 3),
        "offloaded:no (switch id: pf0vf0 and pf1vf0 are on different eswitches)"
    );
    assert_eq!(
        reason(&o, 4),
        "offloaded:no (unsupported action: userspace)"
    );
    assert_eq!(
        reason(&o, 5),
        "offloaded:yes dp:sim in_hw dev:vxlan_sys_4789"
    );
}

#[test]
fn injected_packets_hit_or_miss_and_counters_flow_back() {
    let sim = fabric(100, SimCaps::default());
    let mut o = offloader(&sim, Duration::from_secs(5));
    let (mf, a) = l2_flow(REP0, 7, vec![Action::Output(REP1)]);
    o.process(vec![put(7, (mf, a))]);
    let mut pkt = mf.key;
    pkt.ip_ttl = 64; // fields outside the mask do not matter
    for _ in 0..5 {
        assert!(matches!(
            sim.lock().unwrap().inject(IfIndex(111), &pkt, 100),
            SimVerdict::Hit { .. }
        ));
    }
    let mut other = pkt;
    other.eth_dst[5] = 9;
    assert_eq!(
        sim.lock().unwrap().inject(IfIndex(111), &other, 100),
        SimVerdict::Miss {
            representor: IfIndex(11)
        }
    );
    // A VF on the other switch misses to its own representor.
    assert_eq!(
        sim.lock().unwrap().inject(IfIndex(121), &pkt, 100),
        SimVerdict::Miss {
            representor: IfIndex(21)
        }
    );
    let stats = o.sync_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].1.packets, stats[0].1.bytes), (5, 500));
    assert!(stats[0].1.last_used_ms_ago.is_some());
}

#[test]
fn the_worker_answers_many_flows_counters_by_their_index() {
    let sim = fabric(10_000, SimCaps::default());
    let cfg = WorkerConfig {
        stats_interval: Duration::from_millis(5),
        ..WorkerConfig::default()
    };
    let w = OffloadWorker::spawn(offloader(&sim, Duration::from_secs(5)), cfg);
    // More flows than one hold of the lock covers, and a few that carry traffic.
    let n = offload::worker::STATS_CHUNK as u32 + 10;
    for i in 0..n {
        assert!(w.offer_wait(put(
            u64::from(i),
            l2_flow(REP0, i, vec![Action::Output(REP1)])
        )));
    }
    let hot = [3u32, n - 2];
    let t0 = Instant::now();
    while !(0..n).all(|i| {
        w.placement(FlowId(u64::from(i)))
            .is_some_and(|p| p.is_offloaded())
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never all offloaded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in hot {
        let key = l2_flow(REP0, i, Vec::new()).0.key;
        for _ in 0..=i % 5 {
            assert!(matches!(
                sim.lock().unwrap().inject(IfIndex(111), &key, 100),
                SimVerdict::Hit { .. }
            ));
        }
    }
    let t0 = Instant::now();
    // Until a pull after the last packet (one during the injections saw fewer) has
    // published every flow's counters (a pull publishes a chunk at a time).
    while hot.iter().any(|i| {
        w.stats(FlowId(u64::from(*i)))
            .is_none_or(|s| s.packets != u64::from(i % 5) + 1)
    }) || (0..u64::from(n)).any(|i| w.stats(FlowId(i)).is_none())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "counters never pulled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Asked in any order, with flows the worker does not know in between.
    let mut ids: Vec<FlowId> = (0..u64::from(n)).rev().map(FlowId).collect();
    ids.insert(1, FlowId(999_999));
    let mut seen = 0;
    w.stats_each(&ids, |i, st| {
        seen += 1;
        let want = hot
            .iter()
            .find(|h| FlowId(u64::from(**h)) == ids[i])
            .map_or(0, |h| u64::from(h % 5) + 1);
        assert_eq!(st.packets, want, "flow {}", ids[i]);
    });
    assert_eq!(
        seen, n as usize,
        "every known flow once, the unknown one not"
    );
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_flow(rng: &mut Rng, id: u64) -> (Megaflow, Actions) {
    let n = id as u32;
    match rng.below(8) {
        0 => l2_flow(REP0, n, encap(rng.below(4) as u32 + 1)),
        1 => l2_flow(REP_BIG, n, encap(1)), // MTU refusal
        2 => l2_flow(REP0, n, vec![Action::Output(REP_B)]), // switch id refusal
        3 => decap_flow(n),
        4 => l2_flow(
            REP1,
            n,
            vec![
                Action::PushVlan {
                    tpid: 0x8100,
                    tci: rng.below(4000) as u16,
                },
                Action::Output(UP_A),
            ],
        ),
        5 => l2_flow(REP_B, n, vec![Action::Output(UP_B)]),
        6 => l2_flow(REP0, n, vec![]),
        _ => l2_flow(REP1, n, vec![Action::Output(REP0), Action::Output(UP_A)]),
    }
}

fn check_consistent(o: &mut Offloader, sim: &SharedSim, step: usize) {
    let offloaded: BTreeSet<(FlowId, offload::RuleHandle)> = o.offloaded().collect();
    let held: BTreeSet<(FlowId, offload::RuleHandle)> = o
        .backend()
        .dump()
        .unwrap()
        .into_iter()
        .map(|d| (d.owner.unwrap(), d.handle))
        .collect();
    assert_eq!(
        offloaded, held,
        "step {step}: backend != flows marked offloaded"
    );
    let marked = o.placements().filter(|(_, p)| p.is_offloaded()).count();
    assert_eq!(
        marked,
        offloaded.len(),
        "step {step}: placement vs installed"
    );
    assert_eq!(sim.lock().unwrap().len(), held.len());
}

#[test]
fn ten_thousand_random_ops_keep_backend_equal_to_offloaded_flows() {
    for seed in [1u64, 0xdead_beef, 42] {
        let sim = fabric(120, SimCaps::default());
        let mut o = offloader(&sim, Duration::from_secs(5));
        let mut rng = Rng(seed);
        let mut ops = 0;
        let mut step = 0;
        while ops < 10_000 {
            let n = 1 + rng.below(24) as usize;
            let mut batch = Vec::with_capacity(n);
            for _ in 0..n {
                let id = rng.below(400);
                if rng.below(3) == 0 {
                    batch.push(FlowRequest::Remove { flow: FlowId(id) });
                } else {
                    // A put on a known flow with new actions is a replace.
                    let f = random_flow(&mut rng, id);
                    batch.push(put(id, f));
                }
            }
            if rng.below(10) == 0 {
                let e = [
                    KernelErrno::NoSpace,
                    KernelErrno::NotSupported,
                    KernelErrno::Invalid,
                ][rng.below(3) as usize];
                sim.lock().unwrap().faults.fail_next.push_back(e);
            }
            ops += n;
            step += 1;
            o.process(batch);
            check_consistent(&mut o, &sim, step);
        }
        // Every software flow says why.
        for (_, p) in o.placements() {
            if let Placement::Software { reason } = p {
                assert_ne!(*reason, SoftwareReason::Pending);
            }
        }
        assert_eq!(o.sweep_orphans().unwrap(), 0);
    }
}

#[test]
fn restart_sweeps_orphans() {
    let sim = fabric(100, SimCaps::default());
    let mut o = offloader(&sim, Duration::from_secs(5));
    o.process(
        (0..10)
            .map(|i| put(i, l2_flow(REP0, i as u32, vec![Action::Output(REP1)])))
            .collect(),
    );
    assert_eq!(sim.lock().unwrap().len(), 10);
    drop(o); // "kill -9": the rules stay
    let mut o = offloader(&sim, Duration::from_secs(5));
    assert_eq!(o.sweep_orphans().unwrap(), 10);
    assert!(sim.lock().unwrap().is_empty());
}

/// Handles of the rules the backend holds.
fn held(o: &mut Offloader) -> BTreeSet<offload::RuleHandle> {
    o.backend()
        .dump()
        .unwrap()
        .into_iter()
        .map(|d| d.handle)
        .collect()
}

#[test]
fn restart_adopts_kept_rules_and_sweeps_the_rest() {
    let sim = fabric(100, SimCaps::default());
    let mut o = offloader(&sim, Duration::from_secs(5));
    let l2 = |i: u32| l2_flow(REP0, i, vec![Action::Output(REP1)]);
    let mut puts: Vec<FlowRequest> = (0..10).map(|i| put(u64::from(i), l2(i))).collect();
    puts.push(put(10, l2_flow(REP1, 10, encap(16))));
    puts.push(put(11, decap_flow(16)));
    o.process(puts);
    assert_eq!(o.offloaded().count(), 12);
    // Traffic the rules carried before the restart.
    assert!(matches!(
        sim.lock().unwrap().inject(IfIndex(111), &l2(3).0.key, 100),
        SimVerdict::Hit { .. }
    ));
    let before = held(&mut o);
    drop(o); // kill -9, or shutdown with --keep-offloads: the rules stay

    let mut o = offloader(&sim, Duration::from_secs(5));
    let kept = o.load_kept().unwrap();
    assert_eq!(kept.len(), 12);
    // The start-up sweep spares what the adoption round holds.
    assert_eq!(o.sweep_orphans().unwrap(), 0);
    let w = OffloadWorker::spawn(o, WorkerConfig::default());
    // The new run's flows (new ids): 8 unchanged, one with other actions, flow 9 gone.
    for i in 0..8 {
        assert!(w.offer_wait(put(100 + u64::from(i), l2(i))));
    }
    assert!(w.offer_wait(put(108, l2_flow(REP0, 8, vec![Action::Output(UP_A)]))));
    assert!(w.offer_wait(put(110, l2_flow(REP1, 10, encap(16)))));
    assert!(w.offer_wait(put(111, decap_flow(16))));
    let report = w.end_adoption().expect("worker alive");
    assert_eq!(
        report,
        offload::AdoptionReport {
            kept: 12,
            adopted: 10,
            replaced: 1,
            removed: 1,
        }
    );
    for f in [100, 103, 108, 110, 111] {
        let p = w.placement(FlowId(f)).unwrap();
        assert!(p.is_offloaded(), "flow {f}: {p}");
    }
    let mut o = w.shutdown().expect("offloader back");
    // No new rule: the same handles, minus the one no flow claimed.
    let after = held(&mut o);
    assert_eq!(after.len(), 11);
    assert!(after.is_subset(&before), "{before:?} -> {after:?}");
    // The replaced rule now does what the new run decided.
    let rules: Vec<_> = sim
        .lock()
        .unwrap()
        .rules()
        .map(|(_, r)| r.clone())
        .collect();
    assert!(
        rules
            .iter()
            .any(|r| r.actions == vec![offload::FlowerAction::Redirect(IfIndex(10))])
    );
    // The counters came along.
    assert_eq!(o.stats(FlowId(103)).map(|s| s.packets), Some(1));
    // What the fabric holds is exactly what the offloaded flows own (the cookies still
    // name the previous run's flow ids: ownership is by handle).
    let owned: BTreeSet<offload::RuleHandle> = o.offloaded().map(|x| x.1).collect();
    assert_eq!(owned, after);
    assert_eq!(o.placements().filter(|(_, p)| p.is_offloaded()).count(), 11);
}

#[test]
fn worker_never_blocks_and_loses_nothing() {
    let sim = fabric(1000, SimCaps::default());
    let w = OffloadWorker::spawn(
        offloader(&sim, Duration::from_secs(5)),
        WorkerConfig::default(),
    );
    assert!(w.offer(put(1, l2_flow(REP0, 1, vec![Action::Output(REP1)]))));
    let t0 = Instant::now();
    while !w.placement(FlowId(1)).is_some_and(|p| p.is_offloaded()) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "never offloaded: {:?}",
            w.placement(FlowId(1))
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(w);

    // A slow backend and a one-slot queue: offers never block; what finds the queue
    // full waits in the backlog, pending, and every flow is offloaded in the end.
    sim.lock().unwrap().faults.latency = Duration::from_millis(20);
    let cfg = WorkerConfig {
        queue: 1,
        batch: 1,
        stats_interval: Duration::from_secs(60),
    };
    let w = OffloadWorker::spawn(offloader(&sim, Duration::from_secs(5)), cfg);
    let t0 = Instant::now();
    let accepted = (10..30)
        .filter(|i| {
            w.offer(put(
                *i,
                l2_flow(REP0, *i as u32, vec![Action::Output(REP1)]),
            ))
        })
        .count();
    assert!(t0.elapsed() < Duration::from_millis(20), "offer blocked");
    assert_eq!(accepted, 20);
    assert!(w.deferred() > 0, "the queue overflowed into the backlog");
    let pending = (10..30)
        .filter(|i| w.placement(FlowId(*i)).is_some_and(|p| !p.is_offloaded()))
        .count();
    assert!(pending > 0);
    let t0 = Instant::now();
    while !(10..30).all(|i| w.placement(FlowId(i)).is_some_and(|p| p.is_offloaded())) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not all offloaded: {:?}",
            (10..30).map(|i| w.placement(FlowId(i))).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(w.backlog(), 0);
}

#[test]
fn a_flows_requests_keep_their_order_through_a_full_queue() {
    // A slow backend and a one-slot queue: most puts wait in the backlog, and each
    // even flow's removal is offered right after its put. A removal that overtook its
    // put would leave that flow's filter behind for good.
    let sim = fabric(1000, SimCaps::default());
    sim.lock().unwrap().faults.latency = Duration::from_millis(5);
    let cfg = WorkerConfig {
        queue: 1,
        batch: 1,
        stats_interval: Duration::from_secs(60),
    };
    let w = OffloadWorker::spawn(offloader(&sim, Duration::from_secs(5)), cfg);
    for i in 10..40u64 {
        assert!(w.offer(put(i, l2_flow(REP0, i as u32, vec![Action::Output(REP1)]))));
        if i % 2 == 0 {
            assert!(w.offer(FlowRequest::Remove { flow: FlowId(i) }));
        }
    }
    assert!(w.deferred() > 0, "the queue overflowed into the backlog");
    let odd = |i: &u64| i % 2 == 1;
    let t0 = Instant::now();
    while w.backlog() > 0
        || !(10..40)
            .filter(odd)
            .all(|i| w.placement(FlowId(i)).is_some_and(|p| p.is_offloaded()))
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "never settled");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The worker is idle once its queue and backlog are empty and the last put placed.
    let o = w.shutdown().expect("the worker's offloader");
    let offloaded: BTreeSet<u64> = o
        .placements()
        .filter(|(_, p)| p.is_offloaded())
        .map(|(f, _)| f.0)
        .collect();
    assert_eq!(offloaded, (10..40).filter(odd).collect());
    assert_eq!(sim.lock().unwrap().len(), 15);
}

#[test]
fn worker_tells_its_observer_each_placement() {
    let sim = fabric(1000, SimCaps::default());
    let seen: Arc<Mutex<Vec<(FlowId, bool)>>> = Arc::default();
    let log = seen.clone();
    let w = OffloadWorker::spawn_observed(
        offloader(&sim, Duration::from_secs(5)),
        WorkerConfig::default(),
        Arc::new(move |f: FlowId, p: &offload::Placement| {
            log.lock().unwrap().push((f, p.is_offloaded()));
        }),
    );
    assert!(w.offer(put(1, l2_flow(REP0, 1, vec![Action::Output(REP1)]))));
    // `userspace` has no tc equivalent: the flow stays in software.
    assert!(w.offer(put(2, l2_flow(REP0, 2, vec![Action::Userspace]))));
    let t0 = Instant::now();
    while seen.lock().unwrap().len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5), "observer not called");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec![(FlowId(1), true), (FlowId(2), false)]);
}

#[test]
fn counters_are_pulled_a_chunk_at_a_time_and_every_offloaded_flow_once() {
    let sim = fabric(100, SimCaps::default());
    let mut o = offloader(&sim, Duration::from_secs(5));
    // Ten offloaded flows and one that stays in software (no tc equivalent).
    for i in 0..10 {
        o.process(vec![put(
            i,
            l2_flow(REP0, i as u32, vec![Action::Output(REP1)]),
        )]);
    }
    o.process(vec![put(99, l2_flow(REP0, 99, vec![Action::Userspace]))]);
    let key = l2_flow(REP0, 4, Vec::new()).0.key;
    for _ in 0..3 {
        assert!(matches!(
            sim.lock().unwrap().inject(IfIndex(111), &key, 100),
            SimVerdict::Hit { .. }
        ));
    }
    let mut chunks = Vec::new();
    o.sync_stats_each(3, |c| chunks.push(c.to_vec()));
    assert_eq!(
        chunks.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    let mut seen: Vec<(FlowId, u64)> = chunks
        .concat()
        .iter()
        .map(|(f, s)| (*f, s.packets))
        .collect();
    seen.sort();
    let want: Vec<(FlowId, u64)> = (0..10)
        .map(|i| (FlowId(i), if i == 4 { 3 } else { 0 }))
        .collect();
    assert_eq!(seen, want);
    // The whole list is the same walk.
    let mut all: Vec<FlowId> = o.sync_stats().iter().map(|x| x.0).collect();
    all.sort();
    assert_eq!(all, (0..10).map(FlowId).collect::<Vec<_>>());
    // The counters are read from the backend, not kept a second time.
    assert_eq!(o.stats(FlowId(4)).map(|s| s.packets), Some(3));
    assert_eq!(o.stats(FlowId(99)), None, "in software: no counters");
}

#[test]
fn the_worker_forgets_a_removed_flows_placement_and_counters() {
    let sim = fabric(100, SimCaps::default());
    let cfg = WorkerConfig {
        stats_interval: Duration::from_millis(5),
        ..WorkerConfig::default()
    };
    let w = OffloadWorker::spawn(offloader(&sim, Duration::from_secs(5)), cfg);
    for i in 1..=2 {
        assert!(w.offer_wait(put(i, l2_flow(REP0, i as u32, vec![Action::Output(REP1)]))));
    }
    let t0 = Instant::now();
    while !(1..=2).all(|i| w.placement(FlowId(i)).is_some_and(|p| p.is_offloaded())) {
        assert!(t0.elapsed() < Duration::from_secs(10), "never offloaded");
        std::thread::sleep(Duration::from_millis(2));
    }
    let key = l2_flow(REP0, 1, Vec::new()).0.key;
    assert!(matches!(
        sim.lock().unwrap().inject(IfIndex(111), &key, 100),
        SimVerdict::Hit { .. }
    ));
    let t0 = Instant::now();
    while w.stats(FlowId(1)).is_none_or(|s| s.packets == 0) || w.stats(FlowId(2)).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "counters never pulled"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(w.placement(FlowId(1)).is_some_and(|p| p.is_offloaded()));
    assert!(w.offer_wait(FlowRequest::Remove { flow: FlowId(1) }));
    let t0 = Instant::now();
    while w.placement(FlowId(1)).is_some() || w.stats(FlowId(1)).is_some() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "flow 1 never forgotten"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // The other flow keeps both, and the counts see one offloaded flow.
    assert!(w.placement(FlowId(2)).is_some_and(|p| p.is_offloaded()));
    assert!(w.stats(FlowId(2)).is_some());
    assert_eq!(w.placement_counts().0, 1);
}
