//! The whole software switch (datapath thread, upcall handlers, revalidator, NORMAL
//! learning per VNI) against real kernel objects, with no static flows: everything is
//! learned. Topology, in network namespaces:
//!
//! ```text
//! vf1 (1.1.1.2) --rep1-\                      /- remote: eth0 192.168.203.56
//! vf2 (1.1.1.5) --rep2--[hv: flowd switch]--up0    vxlan16 (VNI 16) 1.1.1.3
//! vf3 (1.1.1.4) --rep3-/  VNI 16: rep1, rep2, tunnel -> 192.168.203.56
//!                         VNI 17: rep3
//! ```

mod common;

use common::{Netns, can_netns};
use datapath::PortId;
use datapath::dpif::{DpConfig, PortRole};
use datapath::port::{AfPacketPort, Port};
use datapath::slowpath::{
    Attachment, MacConfig, Network, NetworkId, NoObserver, SlowPath, VxlanSegment,
};
use datapath::tunnel::{StaticResolver, TunnelRoute};
use flowd::switch::{Switch, SwitchConfig, SwitchPort};
use std::net::IpAddr;
use std::sync::Arc;

const UPLINK: PortId = PortId(10);
const TUNNEL: PortId = PortId(11);

struct Lab {
    hv: Netns,
    vfs: Vec<Netns>,
    remote: Netns,
}

fn build_lab() -> Lab {
    let hv = Netns::new("fshv");
    let remote = Netns::new("fsrm");
    let mut vfs = Vec::new();
    for (i, ip) in [(1, "1.1.1.2"), (2, "1.1.1.5"), (3, "1.1.1.4")] {
        let vf = Netns::new("fsvf");
        vf.exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1");
        hv.ip(&format!(
            "link add rep{i} type veth peer name vf0 netns {}",
            vf.name
        ));
        hv.exec(&format!("sysctl -qw net.ipv6.conf.rep{i}.disable_ipv6=1"));
        vf.ip(&format!("addr add {ip}/24 dev vf0"));
        vf.ip(&format!(
            "link set vf0 address e4:11:11:11:11:1{i} mtu 1450 up"
        ));
        hv.ip(&format!("link set rep{i} mtu 1450 up"));
        vfs.push(vf);
    }
    common::seed_underlay(&hv, &remote);
    Lab { hv, vfs, remote }
}

/// Opens the hypervisor's ports from inside its namespace.
fn open_ports(hv: &Netns) -> (Vec<SwitchPort>, [u8; 6], u32) {
    let name = hv.name.clone();
    std::thread::spawn(move || {
        common::enter(&Netns::borrowed(&name));
        let mut ports = Vec::new();
        for i in 1..=3u32 {
            let p = AfPacketPort::open(&format!("rep{i}"), 32).expect("open rep");
            ports.push(SwitchPort {
                id: PortId(i),
                role: PortRole::Representor,
                io: vec![Box::new(p)],
            });
        }
        let up = AfPacketPort::open("up0", 32).expect("open up0");
        let (mac, mtu) = (up.mac(), up.mtu());
        ports.push(SwitchPort {
            id: UPLINK,
            role: PortRole::Uplink,
            io: vec![Box::new(up)],
        });
        ports.push(SwitchPort {
            id: TUNNEL,
            role: PortRole::Tunnel,
            io: Vec::new(),
        });
        (ports, mac, mtu)
    })
    .join()
    .expect("port thread")
}

fn slowpath(local: IpAddr, remote: IpAddr) -> SlowPath {
    let mut sp = SlowPath::with_normal(MacConfig::default());
    let vni16 = Network {
        members: vec![
            Attachment::untagged(PortId(1)),
            Attachment::untagged(PortId(2)),
        ],
        vxlan: Some(VxlanSegment::new(16, TUNNEL, Some(local), vec![remote])),
    };
    let vni17 = Network {
        members: vec![Attachment::untagged(PortId(3))],
        vxlan: Some(VxlanSegment::new(17, TUNNEL, Some(local), vec![])),
    };
    sp.add_network(NetworkId(16), vni16).expect("VNI 16");
    sp.add_network(NetworkId(17), vni17).expect("VNI 17");
    sp
}

fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    ns.exec(&format!("cat /sys/class/net/{dev}/statistics/rx_packets"))
        .trim()
        .parse()
        .expect("counter")
}

#[test]
fn learned_switching_remote_vtep_and_vni_isolation() {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let lab = build_lab();
    let (ports, up_mac, up_mtu) = open_ports(&lab.hv);
    let local: IpAddr = "192.168.203.51".parse().unwrap();
    let remote: IpAddr = "192.168.203.56".parse().unwrap();
    let mut resolver = StaticResolver::new();
    resolver.insert(
        remote,
        TunnelRoute {
            egress: UPLINK,
            src_ip: local,
            src_mac: up_mac,
            dst_mac: lab.remote.mac("eth0"),
            mtu: up_mtu as u16,
            via: datapath::tunnel::Via::Uplink,
        },
    );
    let cfg = SwitchConfig {
        datapath: DpConfig {
            local_vteps: vec![local],
            ..DpConfig::default()
        },
        ..SwitchConfig::default()
    };
    let table = Arc::new(datapath::cache::FlowTable::new(cfg.engine.flow_limit));
    let switch = Switch::start(
        cfg,
        table,
        slowpath(local, remote),
        ports,
        Arc::new(resolver),
        Arc::new(NoObserver),
    )
    .expect("start switch");
    let vf3_rx_before = rx_packets(&lab.vfs[2], "vf0");

    // Two VFs on VNI 16 on this host: learned local switching.
    let (ok, out) = lab.vfs[0].try_exec("ping -c 3 -i 0.2 -W 2 1.1.1.5");
    assert!(ok, "vf1 -> vf2: {out}\n{:?}", switch.datapath_stats());
    // A VF to a host behind the remote kernel vxlan (VNI 16).
    let (ok, out) = lab.vfs[0].try_exec("ping -c 3 -i 0.2 -W 2 1.1.1.3");
    assert!(ok, "vf1 -> remote: {out}\n{:?}", switch.datapath_stats());
    // VNI 17 is another network: vf3 is unreachable from VNI 16, and VNI 16's
    // broadcasts (ARP for 1.1.1.4) never reach it.
    let (ok, _) = lab.vfs[0].try_exec("ping -c 2 -i 0.2 -W 1 1.1.1.4");
    assert!(!ok, "VNI 16 reached a VNI 17 VF");
    assert_eq!(
        rx_packets(&lab.vfs[2], "vf0"),
        vf3_rx_before,
        "vf3 (VNI 17) received VNI 16 traffic"
    );

    let engine = switch.engine();
    let flows = engine.table().len();
    let upcalls = engine.counters().snapshot();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let st = switch.datapath_stats();
    assert!(flows >= 4, "megaflows installed by the slow path: {flows}");
    assert!(upcalls.installed >= 4, "{upcalls:?}");
    // After the first packets, the cache (not the slow path) forwards.
    assert!(st.hits > st.misses, "{st:?}");
    assert!(
        st.decap >= 3,
        "replies from the remote VTEP were decapsulated: {st:?}"
    );
    // The remote kernel learned vf1 behind our VTEP from our encapsulated packets.
    let fdb = lab.remote.exec("bridge fdb show dev vxlan16");
    assert!(
        fdb.contains("e4:11:11:11:11:11 dst 192.168.203.51"),
        "{fdb}"
    );
    switch.stop();
}
