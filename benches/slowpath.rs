//! Slow-path benchmark: flow setups per second and revalidation time.
//!
//! `cargo bench --bench slowpath` prints one row per measurement with its target.
//! - Flow setup: a miss queued on the upcall queue (frame copied), taken by the handler
//!   in batches of 64, translated (rules, NORMAL with the MAC table), installed in the
//!   `FlowTable`, and the packet returned with its actions; one thread, in memory.
//!   Stations are learned beforehand; every setup is a distinct (port, src, dst) flow.
//! - Upkeep: one sweep of the revalidator when nothing changed (idle flows, station
//!   ages), per flow.
//! - Revalidation: one sweep of the revalidator over 200,000 installed flows after a
//!   rule change that reaches all of them (an ACL above NORMAL), re-translating each:
//!   once when every flow stays valid, once when every flow's actions change.

use datapath::cache::FlowTable;
use datapath::slowpath::upcall::{UpcallConfig, UpcallCounters, upcall_queues};
use datapath::slowpath::{
    Attachment, Change, Engine, EngineConfig, MacConfig, Network, NetworkId, NoObserver, Rule,
    RuleAction, RuleId, SlowPath, VxlanSegment,
};
use datapath::{FlowKey, FlowMask, PortId};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FLOWS: usize = 200_000;
const PORTS: u32 = 8;
const STATIONS: usize = 1_000;
const TUNNEL: PortId = PortId(100);

fn station(i: usize) -> [u8; 6] {
    let b = (i as u32).to_be_bytes();
    [0x02, 0, b[0], b[1], b[2], b[3]]
}

fn port_of(i: usize) -> u32 {
    1 + (i as u32 % PORTS)
}

fn key(src: usize, dst: usize) -> FlowKey {
    FlowKey {
        in_port: port_of(src),
        eth_src: station(src),
        eth_dst: station(dst),
        eth_type: 0x0800,
        ip_proto: 6,
        tp_dst: 443,
        ..FlowKey::default()
    }
}

/// The `n`-th distinct flow between two stations on different ports.
fn flow_key(n: usize) -> FlowKey {
    let (src, k) = (n % STATIONS, n / STATIONS);
    // The k-th offset that is not a multiple of PORTS: another port, distinct per k.
    let offset = k + 1 + k / (PORTS as usize - 1);
    key(src, (src + offset) % STATIONS)
}

fn acl(in_port: u32, action: RuleAction) -> Rule {
    let k = FlowKey {
        in_port,
        ..FlowKey::default()
    };
    let m = FlowMask(FlowKey {
        in_port: u32::MAX,
        ..FlowKey::default()
    });
    Rule::new(100, &k, &m, vec![action])
}

fn slow_path() -> (SlowPath, RuleId) {
    let mut sp = SlowPath::with_normal(MacConfig::default());
    let ip = |s: &str| s.parse().unwrap();
    let net = Network {
        members: (1..=PORTS)
            .map(|p| Attachment::untagged(PortId(p)))
            .collect(),
        vxlan: Some(VxlanSegment::new(
            16,
            TUNNEL,
            Some(ip("10.0.0.1")),
            vec![ip("10.0.0.2"), ip("10.0.0.3")],
        )),
    };
    sp.add_network(NetworkId(16), net).expect("network");
    let (id, _) = sp.add_rule(acl(999, RuleAction::Drop)).expect("rule");
    (sp, id)
}

fn engine() -> (Arc<Engine>, RuleId) {
    let (sp, acl) = slow_path();
    let cfg = EngineConfig {
        flow_limit: 262_144,
        max_idle: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let table = Arc::new(FlowTable::new(cfg.flow_limit));
    let counters = Arc::new(UpcallCounters::default());
    let e = Engine::new(sp, table, Arc::new(NoObserver), cfg, counters);
    (Arc::new(e), acl)
}

fn row(what: &str, value: String, target: &str) {
    println!("{what:<58} {value:>16}   {target}");
}

/// Learns every station, then sets up `FLOWS` flows; returns setups per second.
fn setups(e: &Engine) -> f64 {
    let cfg = UpcallConfig {
        capacity: 64,
        ..UpcallConfig::default()
    };
    let (tx, rx) = upcall_queues(cfg, e.counters().clone());
    let rx = &rx[0];
    let frame = [0u8; 64];
    let now = Duration::from_secs(1);
    for s in 0..STATIONS {
        let mut k = key(s, 0);
        k.eth_dst = [0xff; 6];
        e.handle(
            vec![datapath::slowpath::upcall::Upcall {
                key: k,
                in_port: PortId(k.in_port),
                packet: frame.to_vec(),
                origin: 0,
            }],
            now,
        );
    }
    e.sweep(now);
    let before = e.table().len();
    let start = Instant::now();
    let mut forwarded = 0usize;
    for chunk in (0..FLOWS).collect::<Vec<_>>().chunks(64) {
        for n in chunk {
            let _ = tx.send(&flow_key(*n), &frame);
        }
        let batch: Vec<_> = rx.try_iter().collect();
        forwarded += e
            .handle(batch, now)
            .iter()
            .filter(|v| !v.actions.is_drop())
            .count();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(forwarded, FLOWS, "every first packet forwarded");
    assert_eq!(e.table().len() - before, FLOWS, "every flow installed");
    FLOWS as f64 / secs
}

fn sweep_after(e: &Engine, change: impl FnOnce(&mut SlowPath) -> Change) -> (f64, String) {
    e.configure(|sp| ((), vec![change(sp)]));
    let start = Instant::now();
    let r = e.sweep(Duration::from_secs(2));
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let what = format!(
        "revalidated {}, modified {}, deleted {}",
        r.revalidated, r.modified, r.stale
    );
    (ms, what)
}

fn main() {
    let (e, acl_id) = engine();
    println!("slow path (one thread, in memory)\n");
    let cold = setups(&e);
    row(
        "flow setups/s, cold (fresh process: page faults included)",
        format!("{cold:.0}"),
        "",
    );
    // Steady state: the allocator reuses the memory of flows that came and went.
    e.table().flush();
    e.sweep(Duration::from_secs(1));
    let warm = setups(&e);
    row(
        "flow setups/s, warm (queue -> xlate -> install -> verdict)",
        format!("{warm:.0}"),
        "target >= 500000",
    );
    // Upkeep: what the revalidator's periodic sweep costs when nothing changed (idle
    // flows, station ages); it paces itself by this (`datapath::slowpath::Pace`).
    let flows = e.table().len();
    let start = Instant::now();
    e.sweep(Duration::from_secs(2));
    let took = start.elapsed();
    row(
        &format!("sweep without a change over {flows} flows (upkeep)"),
        format!(
            "{:.1} ms ({:.0} ns/flow)",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e9 / flows.max(1) as f64
        ),
        "",
    );
    let (ms, what) = sweep_after(&e, |sp| {
        sp.modify_rule(acl_id, acl(998, RuleAction::Drop))
            .expect("modify")
    });
    row(
        &format!("sweep after a rule change, all kept ({what})"),
        format!("{ms:.1} ms"),
        "target < 100 ms",
    );
    let normal = e
        .read()
        .rules()
        .entries()
        .last()
        .map(|r| r.id)
        .expect("normal");
    let (ms, what) = sweep_after(&e, |sp| {
        let out = Rule::catch_all(0, vec![RuleAction::Output(TUNNEL)]);
        sp.modify_rule(normal, out).expect("modify")
    });
    row(
        &format!("sweep after a rule change, all deleted ({what})"),
        format!("{ms:.1} ms"),
        "",
    );
}
