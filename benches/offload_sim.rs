//! Simulated eswitch throughput (host): rule operations per second, straight into the
//! fabric (backend) and through the offloader (translate + judge + backend).
//! Target: at least 1,000,000 rule operations per second.

use datapath::{Action, Actions, FlowId, FlowKey, FlowMask, IfIndex, Megaflow, PortId};
use offload::sim::{SimCaps, SimFabric, SimRep, SimSwitchSpec};
use offload::{FlowRequest, OffloadBackend, Offloader, PortInfo, PortKind, PortTable, RuleHandle};
use std::hint::black_box;
use std::time::{Duration, Instant};

const N: u32 = 100_000;
const ROUNDS: u32 = 10;
const BATCH: usize = 256;

fn fabric() -> SimFabric {
    SimFabric::new(vec![SimSwitchSpec {
        switch_id: vec![1; 8],
        uplinks: vec![IfIndex(10)],
        tunnels: vec![],
        reps: vec![
            SimRep {
                vf: 0,
                rep: IfIndex(11),
                vf_port: IfIndex(111),
            },
            SimRep {
                vf: 1,
                rep: IfIndex(12),
                vf_port: IfIndex(112),
            },
        ],
        capacity: N as usize,
        caps: SimCaps::default(),
    }])
}

fn ports() -> PortTable {
    let p = |id, ifx, vf| PortInfo {
        id: PortId(id),
        name: format!("pf0vf{vf}"),
        ifindex: IfIndex(ifx),
        kind: PortKind::Representor { vf },
        mtu: 1500,
        up: true,
        switch_id: Some(vocab::SwitchId(vec![1; 8])),
    };
    [p(1, 11, 0), p(2, 12, 1)].into_iter().collect()
}

fn flow(i: u32) -> (Megaflow, Actions) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = 1;
    m.in_port = u32::MAX;
    k.eth_type = 0x0800;
    m.eth_type = 0xffff;
    k.eth_dst = [
        2,
        0,
        (i >> 24) as u8,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ];
    m.eth_dst = [0xff; 6];
    (
        Megaflow::new(&k, &m),
        Actions::new(vec![Action::Output(PortId(2))]),
    )
}

fn row(name: &str, ops: u64, d: Duration) {
    println!(
        "{:<34} {:>10} {:>9.3} {:>14.0}",
        name,
        ops,
        d.as_secs_f64(),
        ops as f64 / d.as_secs_f64()
    );
}

fn main() {
    println!(
        "{:<34} {:>10} {:>9} {:>14}",
        "simulated eswitch", "rule ops", "seconds", "ops/s"
    );
    // Backend level: pre-translated rules, install + remove in batches.
    let off = Offloader::new(Box::new(fabric()), ports(), Duration::from_secs(60));
    let rules: Vec<_> = (0..N)
        .map(|i| {
            let (m, a) = flow(i);
            off.prepare(&m, &a, &[]).unwrap()
        })
        .collect();
    drop(off);
    let mut sim = fabric();
    let t0 = Instant::now();
    let mut ops = 0u64;
    for _ in 0..ROUNDS {
        let mut handles: Vec<RuleHandle> = Vec::with_capacity(N as usize);
        for (c, chunk) in rules.chunks(BATCH).enumerate() {
            let batch: Vec<(FlowId, &_)> = chunk
                .iter()
                .enumerate()
                .map(|(j, r)| (FlowId((c * BATCH + j) as u64), r))
                .collect();
            for r in sim.install(&batch) {
                handles.push(r.unwrap().handle);
            }
        }
        for chunk in handles.chunks(BATCH) {
            black_box(sim.remove(chunk));
        }
        ops += 2 * u64::from(N);
    }
    row("backend install+remove", ops, t0.elapsed());

    // Full pipeline: translate + judge + install, then remove.
    let mut off = Offloader::new(Box::new(fabric()), ports(), Duration::from_secs(60));
    let flows: Vec<_> = (0..N).map(flow).collect();
    let t0 = Instant::now();
    let mut ops = 0u64;
    for _ in 0..ROUNDS / 2 {
        let puts: Vec<FlowRequest> = flows
            .iter()
            .enumerate()
            .map(|(i, (m, a))| FlowRequest::put(FlowId(i as u64), *m, a.clone(), Vec::new()))
            .collect();
        for chunk in puts.chunks(BATCH) {
            black_box(off.process(chunk.to_vec()));
        }
        let rems: Vec<FlowRequest> = (0..N)
            .map(|i| FlowRequest::Remove {
                flow: FlowId(u64::from(i)),
            })
            .collect();
        for chunk in rems.chunks(BATCH) {
            black_box(off.process(chunk.to_vec()));
        }
        ops += 2 * u64::from(N);
    }
    row("offloader put+remove (translate)", ops, t0.elapsed());
}
