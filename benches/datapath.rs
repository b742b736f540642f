//! Datapath benchmark: the whole per-packet path of one datapath thread, in memory.
//!
//! `cargo bench --bench datapath` builds batches of 32 64-byte frames and runs
//! `Datapath::process` on them: key extraction, cache lookup (EMC), action execution and
//! the transmit batch (to a port that counts and discards). No I/O: the figure is the
//! datapath's own cost per packet on one core. The cache tiers alone are measured by
//! `cargo bench --bench cache`.

use datapath::cache::FlowEntry;
use datapath::dpif::{Datapath, DpConfig, DropMisses, PortRole};
use datapath::port::{NullPort, PacketBatch};
use datapath::tunnel::{StaticResolver, TunnelRoute};
use datapath::wire::vxlan::{self, OuterHeaders};
use datapath::{FlowId, Megaflow, PortId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const REP: PortId = PortId(1);
const UPLINK: PortId = PortId(2);
const TUNNEL: PortId = PortId(3);
const BATCH: usize = 32;

/// A 64-byte Ethernet/IPv4/UDP frame of flow `i`.
fn udp_frame(i: u16) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
    f[6..12].copy_from_slice(&[0xe4, 0x11, 0x11, 0x11, 0x11, 0x10]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[1, 1, 1, 2]);
    ip[16..20].copy_from_slice(&[1, 1, 1, 3]);
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&(10_000 + i).to_be_bytes());
    udp[2..4].copy_from_slice(&5001u16.to_be_bytes());
    udp[4..6].copy_from_slice(&30u16.to_be_bytes());
    f
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

fn datapath() -> (Datapath, Arc<AtomicU64>) {
    let cfg = DpConfig {
        local_vteps: vec!["192.168.203.51".parse().unwrap()],
        ..DpConfig::default()
    };
    let mut dp = Datapath::new(cfg, Arc::new(resolver()), Box::new(DropMisses));
    let sent = Arc::new(AtomicU64::new(0));
    for id in [REP, UPLINK] {
        let role = if id == REP {
            PortRole::Representor
        } else {
            PortRole::Uplink
        };
        let port = NullPort { sent: sent.clone() };
        dp.add_port(id, role, Some(Box::new(port)));
    }
    dp.add_port(TUNNEL, PortRole::Tunnel, None);
    (dp, sent)
}

fn install(dp: &mut Datapath, flow: &str, actions: &str) {
    let mf: Megaflow = flow.parse().unwrap();
    let e = FlowEntry::new(
        FlowId(1),
        &mf.key,
        Arc::new(mf.mask),
        actions.parse().unwrap(),
        0,
    );
    dp.cache_mut().insert(Arc::new(e));
}

/// Runs `process` on `batch` for about `dur`; returns ns per packet.
fn measure(
    dp: &mut Datapath,
    port: PortId,
    role: PortRole,
    batch: &PacketBatch,
    sent: &AtomicU64,
) -> f64 {
    let dur = Duration::from_millis(1500);
    for _ in 0..1000 {
        dp.process(port, role, batch, 0);
    }
    let before = sent.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut packets = 0u64;
    while start.elapsed() < dur {
        for _ in 0..1000 {
            dp.process(port, role, batch, 1);
        }
        packets += 1000 * batch.len() as u64;
    }
    let ns = start.elapsed().as_nanos() as f64 / packets as f64;
    let out = sent.load(Ordering::Relaxed) - before;
    assert_eq!(out, packets, "every packet must be forwarded");
    ns
}

fn row(name: &str, ns: f64, target_mpps: Option<f64>) {
    let mpps = 1e3 / ns;
    let (target, verdict) = match target_mpps {
        Some(t) => (
            format!(">= {t} Mpps"),
            if mpps >= t { "PASS" } else { "MISS" },
        ),
        None => ("(reported)".to_string(), "-"),
    };
    println!("{name:<46} {ns:>8.1} ns/pkt {mpps:>7.2} Mpps  {target:<14} {verdict}");
}

fn main() {
    println!(
        "datapath: extract + lookup + execute + transmit batch, 64-byte frames, batches of {BATCH}, one core"
    );
    let mut batch = PacketBatch::new(BATCH, 2048);
    for i in 0..BATCH {
        batch.push(&udp_frame(i as u16));
    }

    let (mut dp, sent) = datapath();
    install(&mut dp, "in_port(1),eth_type(0x0800)", "2");
    let ns = measure(&mut dp, REP, PortRole::Representor, &batch, &sent);
    row("forward rep -> uplink (32 flows, EMC hit)", ns, None);

    let (mut dp, sent) = datapath();
    install(
        &mut dp,
        "in_port(1),eth_type(0x0800)",
        "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),3",
    );
    let ns = measure(&mut dp, REP, PortRole::Representor, &batch, &sent);
    row("VXLAN encap rep -> uplink (EMC hit)", ns, None);

    let (mut dp, sent) = datapath();
    install(
        &mut dp,
        "tunnel(tun_id=0x10,src=192.168.203.56,dst=192.168.203.51),in_port(3),eth_type(0x0800)",
        "1",
    );
    let mut outer = PacketBatch::new(BATCH, 2048);
    for i in 0..BATCH {
        let inner = udp_frame(i as u16);
        let hdr = OuterHeaders {
            src_mac: [2, 0, 0, 0, 0, 0x56],
            dst_mac: [2, 0, 0, 0, 0, 0x51],
            src_ip: "192.168.203.56".parse().unwrap(),
            dst_ip: "192.168.203.51".parse().unwrap(),
            tos: 0,
            ttl: 64,
            df: false,
            ident: i as u16,
            udp_src: 50_000 + i as u16,
            udp_dst: 4789,
            vni: 0x10,
            udp_csum: false,
        };
        outer.push_with(|slot| vxlan::encapsulate(&inner, &hdr, slot).unwrap_or(0));
    }
    let ns = measure(&mut dp, UPLINK, PortRole::Uplink, &outer, &sent);
    row("VXLAN decap uplink -> rep (EMC hit)", ns, None);
}
