//! flowd's software datapath against the Linux kernel's VXLAN: the seed lab's topology in
//! network namespaces. A VF namespace pings a host behind a remote kernel vxlan device
//! (VNI 16) through a veth representor; flowd's datapath (static flows: the slow path is
//! not involved) encapsulates toward the remote VTEP over an uplink veth and
//! decapsulates the replies. The kernel must accept our packets and the ping must pass.
//! Over an IPv6 underlay, TCP with the VF's default offloads goes through the uplink's
//! UDP-tunnel tap, the kernel cutting and checksumming each super-frame.

mod common;

use common::{Netns, can_netns};
use datapath::cache::FlowEntry;
use datapath::dpif::{Datapath, DpConfig, DropMisses, PortRole};
use datapath::port::{AfPacketPort, Port, TapMode};
use datapath::tunnel::{StaticResolver, TunnelRoute};
use datapath::{FlowId, Megaflow, PortId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const REP: PortId = PortId(1);
const UPLINK: PortId = PortId(2);
const TUNNEL: PortId = PortId(3);

/// The seed lab: `hv` holds the representor and the uplink, `vf` the VF, `remote` the
/// other hypervisor with its kernel vxlan device.
struct Lab {
    hv: Netns,
    vf: Netns,
    remote: Netns,
}

fn build_lab() -> Lab {
    let (hv, vf, remote) = (Netns::new("fdhv"), Netns::new("fdvf"), Netns::new("fdrm"));
    plug_vf(&hv, &vf, 1450);
    // VMs' checksum offload leaves UDP/TCP checksums partial on a veth; ping computes
    // its own, but keep the VF honest for any traffic.
    vf.exec("ethtool -K vf0 tx off");
    common::seed_underlay(&hv, &remote);
    Lab { hv, vf, remote }
}

/// The VF (1.1.1.2 in `vf`) and its representor rep0 (in `hv`), both at `mtu`.
fn plug_vf(hv: &Netns, vf: &Netns, mtu: u32) {
    hv.ip(&format!(
        "link add rep0 type veth peer name vf0 netns {}",
        vf.name
    ));
    vf.ip("addr add 1.1.1.2/24 dev vf0");
    vf.ip(&format!(
        "link set vf0 address e4:11:11:11:11:10 mtu {mtu} up"
    ));
    hv.ip(&format!("link set rep0 mtu {mtu} up"));
}

/// The underlay the datapath encapsulates over: the local and remote VTEP addresses
/// (the uplink up0 owns the local one), and whether up0 gets a UDP-tunnel tap.
struct Underlay {
    local: &'static str,
    remote: &'static str,
    tap: bool,
}

/// Runs flowd's datapath in `hv` on rep0 and up0 with static flows (rep0 into the VXLAN
/// tunnel, VNI 16, to `u.remote`; the tunnel back out of rep0) until `stop` is set or
/// `limit` passes; its statistics at the end.
fn spawn_datapath(
    hv: &Netns,
    u: Underlay,
    remote_mac: [u8; 6],
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> std::thread::JoinHandle<datapath::dpif::DpStats> {
    let hv = Netns::borrowed(&hv.name);
    std::thread::spawn(move || {
        common::enter(&hv);
        let rep = AfPacketPort::open("rep0", 32).expect("open rep0");
        let mut up = AfPacketPort::open("up0", 32).expect("open up0");
        if u.tap {
            let tap = datapath::port::TunnelInjector::open(TapMode::Inline).expect("tap");
            offload::netlink::redirect_ingress(
                datapath::IfIndex(tap.ifindex()),
                up.ifindex().expect("ifindex"),
            )
            .expect("redirect");
            up.set_tunnel_injector(tap);
        }
        let mut resolver = StaticResolver::new();
        resolver.insert(
            u.remote.parse().unwrap(),
            TunnelRoute {
                egress: UPLINK,
                src_ip: u.local.parse().unwrap(),
                src_mac: up.mac(),
                dst_mac: remote_mac,
                mtu: up.mtu() as u16,
                via: datapath::tunnel::Via::Uplink,
            },
        );
        let cfg = DpConfig {
            local_vteps: vec![u.local.parse().unwrap()],
            ..DpConfig::default()
        };
        let mut dp = Datapath::new(cfg, Arc::new(resolver), Box::new(DropMisses));
        dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
        dp.add_port(UPLINK, PortRole::Uplink, Some(Box::new(up)));
        dp.add_port(TUNNEL, PortRole::Tunnel, None);
        let (src, dst) = if u.remote.contains(':') {
            ("ipv6_src", "ipv6_dst")
        } else {
            ("src", "dst")
        };
        let (local, remote) = (u.local, u.remote);
        install(
            &mut dp,
            1,
            "in_port(1)",
            &format!("set(tunnel(tun_id=0x10,{dst}={remote},ttl=64,tp_dst=4789)),3"),
        );
        install(
            &mut dp,
            2,
            &format!("tunnel(tun_id=0x10,{src}={remote},{dst}={local}),in_port(3)"),
            "1",
        );
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
            let now = start.elapsed().as_millis() as u64;
            dp.run_once(20, now).expect("datapath loop");
        }
        dp.stats()
    })
}

fn install(dp: &mut Datapath, id: u64, flow: &str, actions: &str) {
    let mf: Megaflow = flow.parse().expect("flow");
    let entry = FlowEntry::new(
        FlowId(id),
        &mf.key,
        Arc::new(mf.mask),
        actions.parse().expect("actions"),
        0,
    );
    dp.cache_mut().insert(Arc::new(entry));
}

#[test]
fn ping_through_software_vxlan_against_kernel_vxlan() {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let lab = build_lab();
    let remote_mac = lab.remote.mac("eth0");
    let stop = Arc::new(AtomicBool::new(false));
    let v4 = Underlay {
        local: "192.168.203.51",
        remote: "192.168.203.56",
        tap: false,
    };
    let worker = spawn_datapath(
        &lab.hv,
        v4,
        remote_mac,
        stop.clone(),
        Duration::from_secs(30),
    );
    // The underlay neighbour resolves through the kernel (the uplink owns .51).
    let (ok, out) = lab.vf.try_exec("ping -c 3 -i 0.2 -W 2 1.1.1.3");
    stop.store(true, Ordering::Relaxed);
    let stats = worker.join().expect("datapath thread");
    assert!(
        ok,
        "ping over flowd's VXLAN failed:\n{out}\nstats: {stats:?}"
    );
    assert!(out.contains("3 received"), "{out}");
    // ARP request + 3 echo requests went out encapsulated; ARP reply + 3 echo replies
    // came back decapsulated.
    assert!(stats.decap >= 4, "{stats:?}");
    assert!(stats.exec.outputs >= 8, "{stats:?}");
    assert_eq!(
        stats.exec.no_route + stats.exec.encap_too_big,
        0,
        "{stats:?}"
    );
    // The remote kernel learned the VF's MAC behind our VTEP: it accepted our packets.
    let fdb = lab.remote.exec("bridge fdb show dev vxlan16");
    assert!(
        fdb.contains("e4:11:11:11:11:10 dst 192.168.203.51"),
        "remote fdb: {fdb}"
    );
}

/// TCP with the VF's default offloads (TSO super-frames, partial checksums) over an IPv6
/// underlay: flowd's datapath hands each super-frame to the uplink's UDP-tunnel tap whole
/// (Linux 6.17; skipped before), the tap's tc filter sends it out of the uplink, and the
/// kernel cuts it there. The uplink has transmit checksumming off, so the kernel cuts
/// and checksums in software before the wire, as a NIC would: the remote's UDP stack
/// verifies every outer UDP checksum (mandatory over IPv6) and its TCP every inner one.
/// The transfers must arrive byte for byte, both ways, with no checksum error counted.
#[test]
fn tcp_over_an_ipv6_underlay_through_the_uplinks_tunnel_tap() {
    use datapath::port::TunnelInjector;
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    match TunnelInjector::open(TapMode::Inline) {
        Err(e) if TunnelInjector::is_unsupported(&e) => {
            eprintln!("skipped: no UDP-tunnel segmentation for tun here ({e})");
            return;
        }
        r => drop(r.expect("tap")),
    }
    let (hv, vf, remote) = (
        Netns::new("fd6hv"),
        Netns::new("fd6vf"),
        Netns::new("fd6rm"),
    );
    plug_vf(&hv, &vf, 1430);
    hv.ip(&format!(
        "link add up0 type veth peer name eth0 netns {}",
        remote.name
    ));
    hv.ip("addr add fd00:203::51/64 dev up0 nodad");
    hv.ip("link set up0 up");
    hv.exec("ethtool -K up0 tx off");
    remote.ip("addr add fd00:203::56/64 dev eth0 nodad");
    remote.ip("link set eth0 up");
    remote.ip("link add vxlan16 type vxlan id 16 dev eth0 remote fd00:203::51 dstport 4789");
    remote.ip("addr add 1.1.1.3/24 dev vxlan16");
    remote.ip("link set vxlan16 address 82:8a:29:ad:4e:ef mtu 1430 up");
    let remote_mac = remote.mac("eth0");
    let stop = Arc::new(AtomicBool::new(false));
    let v6 = Underlay {
        local: "fd00:203::51",
        remote: "fd00:203::56",
        tap: true,
    };
    let worker = spawn_datapath(&hv, v6, remote_mac, stop.clone(), Duration::from_secs(60));
    let (ok, out) = vf.try_exec("ping -c 2 -i 0.2 -W 2 1.1.1.3");
    let before = remote.exec("nstat -az Udp6InCsumErrors TcpInCsumErrors");
    if ok {
        common::tcp::transfers(&vf, &remote, "1.1.1.3", 5301, 2);
        common::tcp::transfers(&remote, &vf, "1.1.1.2", 5302, 1);
    }
    let after = remote.exec("nstat -az Udp6InCsumErrors TcpInCsumErrors");
    stop.store(true, Ordering::Relaxed);
    let stats = worker.join().expect("datapath thread");
    assert!(ok, "ping over an IPv6 underlay:\n{out}\nstats: {stats:?}");
    assert!(
        stats.exec.tunnel_super_frames > 0,
        "no super-frame went to the tap: {stats:?}"
    );
    assert_eq!(stats.exec.gso_segmented, 0, "{stats:?}");
    let errors = |s: &str| -> u64 {
        s.lines()
            .filter(|l| l.contains("CsumErrors"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(
        errors(&after),
        errors(&before),
        "checksum errors at the remote:\n{before}\n{after}"
    );
}
