//! flowd's software datapath against the Linux kernel's VXLAN: the seed lab's topology in
//! network namespaces. A VF namespace pings a host behind a remote kernel vxlan device
//! (VNI 16) through a veth representor; flowd's datapath (static flows: the slow path is
//! not involved) encapsulates toward the remote VTEP over an uplink veth and
//! decapsulates the replies. The kernel must accept our packets and the ping must pass.

mod common;

use common::{Netns, can_netns};
use datapath::cache::FlowEntry;
use datapath::dpif::{Datapath, DpConfig, DropMisses, PortRole};
use datapath::port::{AfPacketPort, Port};
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
    hv.ip(&format!(
        "link add rep0 type veth peer name vf0 netns {}",
        vf.name
    ));
    vf.ip("addr add 1.1.1.2/24 dev vf0");
    vf.ip("link set vf0 address e4:11:11:11:11:10 mtu 1450 up");
    // VMs' checksum offload leaves UDP/TCP checksums partial on a veth; ping computes
    // its own, but keep the VF honest for any traffic.
    vf.exec("ethtool -K vf0 tx off");
    hv.ip("link set rep0 mtu 1450 up");
    common::seed_underlay(&hv, &remote);
    Lab { hv, vf, remote }
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
    let (hv_name, stop2) = (lab.hv.name.clone(), stop.clone());
    let hv = Netns::borrowed(&hv_name.clone());
    let worker = std::thread::spawn(move || {
        common::enter(&hv);
        let rep = AfPacketPort::open("rep0", 32).expect("open rep0");
        let up = AfPacketPort::open("up0", 32).expect("open up0");
        let mut resolver = StaticResolver::new();
        resolver.insert(
            "192.168.203.56".parse().unwrap(),
            TunnelRoute {
                egress: UPLINK,
                src_ip: "192.168.203.51".parse().unwrap(),
                src_mac: up.mac(),
                dst_mac: remote_mac,
                mtu: up.mtu() as u16,
                via: datapath::tunnel::Via::Uplink,
            },
        );
        let cfg = DpConfig {
            local_vteps: vec!["192.168.203.51".parse().unwrap()],
            ..DpConfig::default()
        };
        let mut dp = Datapath::new(cfg, Arc::new(resolver), Box::new(DropMisses));
        dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
        dp.add_port(UPLINK, PortRole::Uplink, Some(Box::new(up)));
        dp.add_port(TUNNEL, PortRole::Tunnel, None);
        install(
            &mut dp,
            1,
            "in_port(1)",
            "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),3",
        );
        install(
            &mut dp,
            2,
            "tunnel(tun_id=0x10,src=192.168.203.56,dst=192.168.203.51),in_port(3)",
            "1",
        );
        let start = Instant::now();
        while !stop2.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
            let now = start.elapsed().as_millis() as u64;
            dp.run_once(20, now).expect("datapath loop");
        }
        dp.stats()
    });
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
