//! End-to-end benchmark over AF_PACKET: trafgen (netsniff-ng) sends 64-byte UDP frames
//! from a VF namespace into the representor veth; flowd's datapath (static flow, one
//! thread pinned to CPU 1) encapsulates them in VXLAN and sends them out of the uplink
//! veth; the remote namespace's kernel vxlan device decapsulates them. The figure is the
//! rate of VXLAN packets arriving in the remote namespace, with 1 and with 10,000
//! distinct flows (UDP source ports).
//!
//! `FLOWD_BENCH_RX=recvmmsg` receives without the ring; `FLOWD_BENCH_SINK=1` gives the
//! remote namespace a UDP socket for the inner packets (no ICMP port-unreachable work).
//!
//! Needs root, iproute2 and trafgen (`apt-get install netsniff-ng`; scripts/bench.sh
//! installs it). Bounded: each run sends for 6 s. Prints a table; it is a benchmark, not
//! a test.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Netns, can_netns};
use datapath::cache::FlowEntry;
use datapath::dpif::{Datapath, DpConfig, DropMisses, PortRole};
use datapath::port::{AfPacketPort, Port, RxMode};
use datapath::tunnel::{StaticResolver, TunnelRoute};
use datapath::{FlowId, Megaflow, PortId};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TARGET_PPS: f64 = 400_000.0;

struct Lab {
    hv: Netns,
    vf: Netns,
    remote: Netns,
}

fn build_lab() -> Lab {
    let (hv, vf, remote) = (Netns::new("fbhv"), Netns::new("fbvf"), Netns::new("fbrm"));
    hv.ip(&format!(
        "link add rep0 type veth peer name vf0 netns {}",
        vf.name
    ));
    vf.ip("link set vf0 address e4:11:11:11:11:10 mtu 1450 up");
    hv.ip("link set rep0 mtu 1450 up");
    common::seed_underlay(&hv, &remote);
    Lab { hv, vf, remote }
}

/// A trafgen configuration of `flows` 64-byte UDP frames 1.1.1.2 -> 1.1.1.3 that differ
/// in their source port.
fn trafgen_conf(flows: u16) -> String {
    let mut conf = String::new();
    for i in 0..flows {
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&50u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[1, 1, 1, 2]);
        ip[16..20].copy_from_slice(&[1, 1, 1, 3]);
        let sum: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        let csum = !(((folded & 0xffff) + (folded >> 16)) as u16);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        let mut frame = vec![
            0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef, 0xe4, 0x11, 0x11, 0x11, 0x11, 0x10, 8, 0,
        ];
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&(10_000 + i).to_be_bytes());
        frame.extend_from_slice(&5001u16.to_be_bytes());
        frame.extend_from_slice(&30u16.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.resize(64, 0);
        conf.push('{');
        for (j, b) in frame.iter().enumerate() {
            let _ = write!(conf, "{}{b:#04x}", if j > 0 { "," } else { "" });
        }
        conf.push_str("}\n");
    }
    conf
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time of the calling thread so far (ns), from schedstat.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn counter(ns: &Netns, dev: &str, stat: &str) -> u64 {
    ns.exec(&format!("cat /sys/class/net/{dev}/statistics/{stat}"))
        .trim()
        .parse()
        .unwrap_or(0)
}

struct Run {
    pps: f64,
    vxlan_rx_pps: f64,
    offered_pps: f64,
}

/// The datapath under test, on its own thread in the hypervisor namespace, pinned to
/// CPU 1: rep0 -> VXLAN encapsulation -> up0 toward the remote, one cached flow, until
/// `stop` (or 20 s); its stats and its thread's CPU time.
fn datapath_thread(
    lab: &Lab,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(datapath::dpif::DpStats, u64)> {
    let remote_mac = lab.remote.mac("eth0");
    let hv = Netns::borrowed(&lab.hv.name.clone());
    std::thread::spawn(move || {
        common::enter(&hv);
        pin_to_cpu(1);
        // FLOWD_BENCH_RX=recvmmsg compares with the receive path without a ring.
        let mode = match std::env::var("FLOWD_BENCH_RX").as_deref() {
            Ok("recvmmsg") => RxMode::Recvmmsg,
            _ => RxMode::Ring,
        };
        let rep = AfPacketPort::open_with("rep0", 64, mode).expect("open rep0");
        let up = AfPacketPort::open_with("up0", 64, mode).expect("open up0");
        println!("  receive: {:?}", rep.rx_mode());
        let mut resolver = StaticResolver::new();
        resolver.insert(
            "192.168.203.56".parse().unwrap(),
            TunnelRoute {
                egress: PortId(2),
                src_ip: "192.168.203.51".parse().unwrap(),
                src_mac: up.mac(),
                dst_mac: remote_mac,
                mtu: up.mtu() as u16,
                via: datapath::tunnel::Via::Uplink,
            },
        );
        let cfg = DpConfig {
            batch: 64,
            local_vteps: vec!["192.168.203.51".parse().unwrap()],
            ..DpConfig::default()
        };
        let mut dp = Datapath::new(cfg, Arc::new(resolver), Box::new(DropMisses));
        dp.add_port(PortId(1), PortRole::Representor, Some(Box::new(rep)));
        dp.add_port(PortId(2), PortRole::Uplink, Some(Box::new(up)));
        dp.add_port(PortId(3), PortRole::Tunnel, None);
        let mf: Megaflow = "in_port(1),eth_type(0x0800)".parse().unwrap();
        let actions = "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),3";
        let e = FlowEntry::new(
            FlowId(1),
            &mf.key,
            Arc::new(mf.mask),
            actions.parse().unwrap(),
            0,
        );
        dp.cache_mut().insert(Arc::new(e));
        let start = Instant::now();
        let cpu0 = thread_cpu_ns();
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(20) {
            let _ = dp.run_once(10, start.elapsed().as_millis() as u64);
        }
        (dp.stats(), thread_cpu_ns() - cpu0)
    })
}

/// trafgen on vf0 for 6 s with the configuration in `conf_path`.
fn trafgen(lab: &Lab, conf_path: &str) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", &lab.vf.name, "timeout", "6", "trafgen"])
        .args(["-P", "1", "-q", "-C", "-o", "vf0", "-i", conf_path])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn trafgen")
}

fn run(lab: &Lab, flows: u16) -> Run {
    let conf_path = format!("/tmp/flowd-trafgen-{}-{flows}.cfg", std::process::id());
    std::fs::write(&conf_path, trafgen_conf(flows)).expect("write trafgen config");
    // FLOWD_BENCH_SINK=1: a UDP socket (never read) takes the inner packets in the remote
    // namespace, which then drops them once its buffer is full instead of answering each
    // with a port-unreachable (recent kernels, 6.18 here, look the ICMP route up for every
    // packet before rate-limiting: ~1/4 of CPU 1, as veth runs the remote's receive there).
    let _sink = (std::env::var("FLOWD_BENCH_SINK").as_deref() == Ok("1")).then(|| {
        let rm = Netns::borrowed(&lab.remote.name.clone());
        std::thread::spawn(move || {
            common::enter(&rm);
            std::net::UdpSocket::bind("1.1.1.3:5001").expect("bind the sink")
        })
        .join()
        .expect("sink thread")
    });
    let stop = Arc::new(AtomicBool::new(false));
    let worker = datapath_thread(lab, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let mut tg = trafgen(lab, &conf_path);
    std::thread::sleep(Duration::from_secs(1));
    let (eth0, vx, offered) = (
        counter(&lab.remote, "eth0", "rx_packets"),
        counter(&lab.remote, "vxlan16", "rx_packets"),
        counter(&lab.hv, "rep0", "rx_packets"),
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let secs = t0.elapsed().as_secs_f64();
    let r = Run {
        pps: (counter(&lab.remote, "eth0", "rx_packets") - eth0) as f64 / secs,
        vxlan_rx_pps: (counter(&lab.remote, "vxlan16", "rx_packets") - vx) as f64 / secs,
        offered_pps: (counter(&lab.hv, "rep0", "rx_packets") - offered) as f64 / secs,
    };
    let _ = tg.wait();
    stop.store(true, Ordering::Relaxed);
    if let Ok((st, cpu_ns)) = worker.join() {
        println!(
            "  datapath: rx {} hits {} outputs {} tx_dropped {} sink_drops {}",
            st.rx, st.hits, st.exec.outputs, st.tx_dropped, st.exec.sink_drops
        );
        // The thread's CPU time includes the softirq work its sends trigger (the remote
        // namespace's receive path): the cost per packet on CPU 1, whatever else runs there.
        let per_pkt = cpu_ns as f64 / st.rx.max(1) as f64;
        println!(
            "  datapath thread: {:.2} s CPU, {per_pkt:.0} ns/packet (=> {:.0} pps with CPU 1 to itself)",
            cpu_ns as f64 / 1e9,
            1e9 / per_pkt
        );
    }
    let _ = std::fs::remove_file(&conf_path);
    r
}

fn main() {
    if !can_netns()
        || std::process::Command::new("trafgen")
            .arg("-v")
            .output()
            .is_err()
    {
        println!("afpacket: skipped (needs root, iproute2 and trafgen from netsniff-ng)");
        return;
    }
    println!(
        "afpacket end to end: trafgen -> rep0 -> flowd datapath (VXLAN encap, 1 thread) -> up0 -> kernel vxlan"
    );
    println!(
        "{:<10} {:>14} {:>16} {:>16} {:>16} {:>6}",
        "flows", "offered pps", "arrived pps", "vxlan rx pps", "target", "result"
    );
    for flows in [1u16, 10_000] {
        let lab = build_lab();
        let r = run(&lab, flows);
        println!(
            "{flows:<10} {:>14.0} {:>16.0} {:>16.0} {:>16} {:>6}",
            r.offered_pps,
            r.pps,
            r.vxlan_rx_pps,
            format!(">= {TARGET_PPS:.0}"),
            if r.pps >= TARGET_PPS { "PASS" } else { "MISS" }
        );
        drop(lab);
    }
}
