//! End-to-end benchmark over AF_PACKET: trafgen (netsniff-ng) sends 64-byte UDP frames
//! from a VF namespace into the representor veth; flowd's datapath (static flow, one
//! thread pinned to CPU 1) encapsulates them in VXLAN and sends them out of the uplink
//! veth; the remote namespace's kernel vxlan device decapsulates them. The figure is the
//! rate of VXLAN packets arriving in the remote namespace, with 1 and with 10,000
//! distinct flows (UDP source ports).
//!
//! `FLOWD_BENCH_RX=recvmmsg` receives without the ring; `FLOWD_TX=sendmmsg` or `ring`
//! chooses how the ports send; `FLOWD_BENCH_SINK=1` gives the
//! remote namespace a UDP socket for the inner packets (no ICMP port-unreachable work).
//! `FLOWD_BENCH_THREADS=1,2` runs each row with 1 and with 2 datapath threads (default
//! 1), as `[datapath] threads` does: each thread its own `Datapath` and its own socket
//! on each port, a port's sockets in one `PACKET_FANOUT_HASH` group; thread `i` is
//! pinned to CPU `(1 + i) % cores` (thread 1 shares CPU 0 with trafgen on a 2-core
//! host). The figures per CPU-second sum the threads' CPU time.
//!
//! Needs root, iproute2 and trafgen (`apt-get install netsniff-ng`; scripts/bench.sh
//! installs it). Bounded: each run sends for 6 s. Prints a table; it is a benchmark, not
//! a test.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Netns, can_netns};
use datapath::cache::FlowEntry;
use datapath::dpif::{Datapath, DpConfig, DropMisses, PortRole};
use datapath::port::{AfPacketPort, Port, PortOptions, RxMode, TxMode};
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
    /// Packets the datapath threads forwarded per second of their CPU time, summed.
    per_cpu_second: f64,
}

/// The datapath under test: `threads` datapath threads (thread `i` pinned to CPU
/// `(1 + i) % cores`), each with its own socket on rep0 and up0 (a port's sockets in
/// one fanout group when there are several): rep0 -> VXLAN encapsulation -> up0 toward
/// the remote, one cached flow, until `stop` (or 20 s); each thread's stats and CPU time.
fn datapath_threads(
    lab: &Lab,
    stop: Arc<AtomicBool>,
    threads: usize,
) -> Vec<std::thread::JoinHandle<(datapath::dpif::DpStats, u64)>> {
    let remote_mac = lab.remote.mac("eth0");
    let hv = Netns::borrowed(&lab.hv.name.clone());
    // FLOWD_BENCH_RX=recvmmsg compares with the receive path without a ring.
    let rx = match std::env::var("FLOWD_BENCH_RX").as_deref() {
        Ok("recvmmsg") => RxMode::Recvmmsg,
        _ => RxMode::Ring,
    };
    let opts = PortOptions {
        batch: 64,
        rx,
        // FLOWD_TX=sendmmsg / ring (the default) compares the two ways of sending.
        tx: TxMode::from_env(PortOptions::default().tx),
        ..PortOptions::default()
    };
    let (reps, ups) = std::thread::spawn(move || {
        common::enter(&hv);
        (
            AfPacketPort::open_fanout("rep0", opts, threads).expect("open rep0"),
            AfPacketPort::open_fanout("up0", opts, threads).expect("open up0"),
        )
    })
    .join()
    .expect("open thread");
    println!("  receive: {:?}, {threads} thread(s)", reps[0].rx_mode());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    reps.into_iter()
        .zip(ups)
        .enumerate()
        .map(|(i, (rep, up))| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin_to_cpu((1 + i) % cores);
                datapath_loop(rep, up, remote_mac, &stop)
            })
        })
        .collect()
}

/// One datapath thread's loop over its sockets; its stats and CPU time.
fn datapath_loop(
    rep: AfPacketPort,
    up: AfPacketPort,
    remote_mac: [u8; 6],
    stop: &AtomicBool,
) -> (datapath::dpif::DpStats, u64) {
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

fn run(lab: &Lab, flows: u16, threads: usize) -> Run {
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
    let workers = datapath_threads(lab, stop.clone(), threads);
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
    let mut r = Run {
        pps: (counter(&lab.remote, "eth0", "rx_packets") - eth0) as f64 / secs,
        vxlan_rx_pps: (counter(&lab.remote, "vxlan16", "rx_packets") - vx) as f64 / secs,
        offered_pps: (counter(&lab.hv, "rep0", "rx_packets") - offered) as f64 / secs,
        per_cpu_second: 0.0,
    };
    let _ = tg.wait();
    stop.store(true, Ordering::Relaxed);
    let (mut outputs, mut cpu_total) = (0u64, 0u64);
    for (i, w) in workers.into_iter().enumerate() {
        let Ok((st, cpu_ns)) = w.join() else { continue };
        println!(
            "  datapath thread {i}: rx {} hits {} outputs {} tx_dropped {} sink_drops {} kernel_drops {}",
            st.rx,
            st.hits,
            st.exec.outputs,
            st.tx_dropped,
            st.exec.sink_drops,
            st.ports.iter().map(|(_, p)| p.kernel_drops).sum::<u64>()
        );
        // The thread's CPU time includes the softirq work its sends trigger (the remote
        // namespace's receive path): the cost per packet on its CPU, whatever else runs
        // there.
        let per_pkt = cpu_ns as f64 / st.rx.max(1) as f64;
        println!(
            "  datapath thread {i}: {:.2} s CPU, {per_pkt:.0} ns/packet (=> {:.0} pps with a CPU to itself)",
            cpu_ns as f64 / 1e9,
            1e9 / per_pkt
        );
        outputs += st.exec.outputs;
        cpu_total += cpu_ns;
    }
    r.per_cpu_second = outputs as f64 / (cpu_total.max(1) as f64 / 1e9);
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
    let threads: Vec<usize> = std::env::var("FLOWD_BENCH_THREADS")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .filter(|&t| t >= 1)
        .collect();
    println!(
        "afpacket end to end: trafgen -> rep0 -> flowd datapath (VXLAN encap, {threads:?} thread(s)) -> up0 -> kernel vxlan"
    );
    let header = format!(
        "{:<8} {:<10} {:>14} {:>16} {:>16} {:>18} {:>16} {:>6}",
        "threads",
        "flows",
        "offered pps",
        "arrived pps",
        "vxlan rx pps",
        "pkts/CPU-second",
        "target",
        "result"
    );
    let mut rows = Vec::new();
    for &n in &threads {
        for flows in [1u16, 10_000] {
            let lab = build_lab();
            let r = run(&lab, flows, n);
            rows.push(format!(
                "{n:<8} {flows:<10} {:>14.0} {:>16.0} {:>16.0} {:>18.0} {:>16} {:>6}",
                r.offered_pps,
                r.pps,
                r.vxlan_rx_pps,
                r.per_cpu_second,
                format!(">= {TARGET_PPS:.0}"),
                if r.pps >= TARGET_PPS { "PASS" } else { "MISS" }
            ));
            drop(lab);
        }
    }
    println!("{header}");
    for row in rows {
        println!("{row}");
    }
}
