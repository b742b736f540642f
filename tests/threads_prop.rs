//! The property of `[datapath] threads`: two datapath threads make the same forwarding
//! decisions as one. The whole switch (datapath threads, upcall handlers, the slow path's
//! rules, flow installs reaching every thread's cache, packet-outs returning to the
//! thread that upcalled) runs on in-memory ports; each port has one per thread, and the
//! test spreads the frames over them by flow, as the kernel's fanout does. For random
//! traffic (flows from three ports, some repeated, so that first packets go up and later
//! ones hit the caches), the multiset of frames each port sends is the same with one
//! thread and with two, and the summed counters agree.

use datapath::dpif::{DpConfig, PortRole};
use datapath::port::{MemPort, MemPortHandle, Port};
use datapath::slowpath::{MacConfig, NoObserver, Rule, RuleAction, SlowPath};
use datapath::tunnel::{StaticResolver, TunnelRoute};
use datapath::{Megaflow, PortId, TunnelAttrs};
use flowd::switch::{Switch, SwitchConfig, SwitchPort};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const REP1: PortId = PortId(1);
const REP2: PortId = PortId(2);
const UPLINK: PortId = PortId(10);
const TUNNEL: PortId = PortId(11);
const PORTS: [PortId; 3] = [REP1, REP2, UPLINK];

/// rep1 -> 10.0.0.0/25 to rep2, the rest of 10.0.0.0/24 tagged to the uplink; rep2 ->
/// VXLAN to the remote VTEP (out of the uplink); the uplink -> untagged to rep1.
fn slowpath() -> SlowPath {
    let mut sp = SlowPath::new(MacConfig::default());
    let rule = |prio: u16, m: &str, actions: Vec<RuleAction>| {
        let mf: Megaflow = m.parse().expect("match");
        Rule::new(prio, &mf.key, &mf.mask, actions)
    };
    let remote = "192.168.203.56".parse().unwrap();
    for r in [
        rule(
            100,
            "in_port(1),eth_type(0x0800),ipv4(dst=10.0.0.0/25)",
            vec![RuleAction::Output(REP2)],
        ),
        rule(
            90,
            "in_port(1),eth_type(0x0800)",
            vec![
                RuleAction::PushVlan {
                    tpid: 0x8100,
                    tci: 30,
                },
                RuleAction::Output(UPLINK),
            ],
        ),
        rule(
            80,
            "in_port(2)",
            vec![RuleAction::Tunnel {
                port: TUNNEL,
                attrs: TunnelAttrs::vxlan(16, remote),
            }],
        ),
        rule(
            70,
            "in_port(10)",
            vec![RuleAction::PopVlan, RuleAction::Output(REP1)],
        ),
    ] {
        sp.add_rule(r).expect("rule");
    }
    sp
}

fn resolver() -> StaticResolver {
    let mut r = StaticResolver::new();
    r.insert(
        "192.168.203.56".parse().unwrap(),
        TunnelRoute {
            egress: UPLINK,
            src_ip: "192.168.203.51".parse().unwrap(),
            src_mac: [2, 0, 0, 0, 0, 0x51],
            dst_mac: [2, 0, 0, 0, 0, 0x56],
            mtu: 1500,
            via: datapath::tunnel::Via::Uplink,
        },
    );
    r
}

/// One flow of the traffic: its ingress (index in [`PORTS`]) and 5-tuple bits.
#[derive(Debug, Clone, Copy)]
struct Flow {
    port: usize,
    src: u8,
    dst: u8,
    sport: u16,
}

/// Frame `seq` of `flow`: IPv4 UDP, VLAN 30 tagged when it comes from the uplink.
fn frame(flow: Flow, seq: u32) -> Vec<u8> {
    let mut f = vec![
        0x02,
        0,
        0,
        0,
        0,
        0x99,
        0xe4,
        0,
        0,
        0,
        flow.port as u8,
        flow.src,
    ];
    if PORTS[flow.port] == UPLINK {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 30]);
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&32u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 1, 0, flow.src]);
    ip[16..20].copy_from_slice(&[10, 0, 0, flow.dst]);
    let sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!((folded + (folded >> 16)) as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&flow.sport.to_be_bytes());
    f.extend_from_slice(&5001u16.to_be_bytes());
    f.extend_from_slice(&12u16.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(f.len().max(64), 0);
    f
}

/// The thread a flow's frames reach, as a fanout hash would pick it.
fn thread_of(flow: Flow, threads: usize) -> usize {
    let h = u32::from(flow.src) * 31 + u32::from(flow.dst) * 7 + u32::from(flow.sport);
    h as usize % threads
}

/// What every port sent, each port's frames sorted (a multiset), and the datapath
/// counters (received, outputs).
type Outcome = (BTreeMap<u32, Vec<Vec<u8>>>, (u64, u64));

/// Runs `frames` through a switch of `threads` datapath threads; waits until `expect`
/// frames were sent (10 s at most), then a little longer for any extra one.
fn run(threads: usize, frames: &[(Flow, u32)], expect: usize) -> Outcome {
    let mut handles: BTreeMap<(u32, usize), MemPortHandle> = BTreeMap::new();
    let mut ports = Vec::new();
    for id in PORTS {
        let mut io: Vec<Box<dyn Port>> = Vec::new();
        for t in 0..threads {
            let (p, h) = MemPort::new(&format!("p{}t{t}", id.0), 1500);
            io.push(Box::new(p));
            handles.insert((id.0, t), h);
        }
        let role = if id == UPLINK {
            PortRole::Uplink
        } else {
            PortRole::Representor
        };
        ports.push(SwitchPort { id, role, io });
    }
    ports.push(SwitchPort {
        id: TUNNEL,
        role: PortRole::Tunnel,
        io: Vec::new(),
    });
    let cfg = SwitchConfig {
        datapath: DpConfig {
            local_vteps: vec!["192.168.203.51".parse().unwrap()],
            ..DpConfig::default()
        },
        threads,
        ..SwitchConfig::default()
    };
    let table = Arc::new(datapath::cache::FlowTable::new(cfg.engine.flow_limit));
    let switch = Switch::start(
        cfg,
        table,
        slowpath(),
        ports,
        Arc::new(resolver()),
        Arc::new(NoObserver),
    )
    .expect("start");
    assert_eq!(switch.datapath_threads(), threads);
    for &(flow, seq) in frames {
        let h = &handles[&(PORTS[flow.port].0, thread_of(flow, threads))];
        h.inject(&frame(flow, seq));
    }
    let mut sent: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    let collect = |sent: &mut BTreeMap<u32, Vec<Vec<u8>>>| {
        for ((id, _), h) in &handles {
            sent.entry(*id).or_default().extend(h.take_sent());
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent.values().map(Vec::len).sum::<usize>() < expect && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        collect(&mut sent);
    }
    std::thread::sleep(Duration::from_millis(50));
    collect(&mut sent);
    // Counters are published every 100 ms.
    std::thread::sleep(Duration::from_millis(150));
    let st = switch.datapath_stats();
    switch.stop();
    for v in sent.values_mut() {
        v.iter_mut().for_each(|f| outer_id_cleared(f));
        v.sort();
    }
    (sent, (st.rx, st.exec.outputs))
}

/// Zeroes the outer IPv4 ID and header checksum of a VXLAN frame: the ID comes from a
/// counter of each thread's executor (RFC 6864), the one field that may differ.
fn outer_id_cleared(f: &mut [u8]) {
    let vxlan = f.get(12..14) == Some(&[0x08, 0x00][..])
        && f.get(23) == Some(&17)
        && f.get(36..38) == Some(&4789u16.to_be_bytes()[..]);
    if vxlan {
        f[18..20].fill(0);
        f[24..26].fill(0);
    }
}

/// Where two outcomes differ, briefly: per port, the frames only one of them sent.
fn difference(a: &Outcome, b: &Outcome) -> String {
    let mut out = String::new();
    for (port, frames) in &a.0 {
        let other = b.0.get(port).cloned().unwrap_or_default();
        let only_a = frames.iter().filter(|f| !other.contains(f)).count();
        let only_b = other.iter().filter(|f| !frames.contains(f)).count();
        out.push_str(&format!(
            "port {port}: {} vs {} frames, {only_a} only in the first, {only_b} only in the second; ",
            frames.len(),
            other.len()
        ));
    }
    out
}

fn flow() -> impl Strategy<Value = Flow> {
    (0..3usize, 0..8u8, any::<u8>(), 1000..1016u16).prop_map(|(port, src, dst, sport)| Flow {
        port,
        src,
        dst,
        sport,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn two_datapath_threads_forward_as_one_does(
        flows in prop::collection::vec(flow(), 1..24),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..160),
    ) {
        let frames: Vec<(Flow, u32)> = picks
            .iter()
            .enumerate()
            .map(|(seq, i)| (flows[i.index(flows.len())], seq as u32))
            .collect();
        // Every frame of this traffic leaves by exactly one port.
        let n = frames.len();
        let one = run(1, &frames, n);
        let two = run(2, &frames, n);
        let count = |o: &Outcome| o.0.values().map(Vec::len).sum::<usize>();
        prop_assert_eq!(count(&one), n, "one thread sent every frame once");
        prop_assert!(one.0 == two.0, "the same frames out of each port: {}", difference(&one, &two));
        prop_assert_eq!(one.1, (n as u64, n as u64));
        prop_assert_eq!(two.1, one.1, "summed counters");
    }
}
