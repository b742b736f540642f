//! tc flower tests that need a kernel with cls_flower, act_tunnel_key and act_mirred:
//! they run in the VM (`tests/vm/run-all.sh`, FLOWD_VM=1). On a host without flower
//! they print "skipped: needs cls_flower" and pass; with FLOWD_VM=1 a missing flower
//! fails.
//!
//! Each test works in its own network namespaces (unique names, removed on drop even
//! when the test fails); traffic stays inside them.
//!
//! The slow path does not drive these flows yet: the test installs the seed lab's
//! megaflows itself through the [`Offloader`] and the tc backend.

use datapath::flow::{addr_to, tun_flags};
use datapath::{
    Action, Actions, FlowId, FlowKey, FlowMask, IfIndex, Megaflow, PortId, TunnelAttrs,
};
use flowd::netns::Netns;
use offload::tc::{TcBackend, TcConfig};
use offload::{FlowRequest, Offloader, PortInfo, PortKind, PortTable, TcPolicy};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vocab::{LookupKey, Path, SwitchId};

const VF_MAC: [u8; 6] = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
const REMOTE_MAC: [u8; 6] = [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef];
const REP0: PortId = PortId(1);
const UP0: PortId = PortId(2);
const VXLAN: PortId = PortId(3);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn must(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "`{cmd}` failed: {out}");
    out
}

/// Whether tc flower works here: probes a flower filter in a scratch namespace.
/// Returns false (skip) on a host without it; panics under FLOWD_VM=1.
fn flower_available() -> bool {
    let ns = Netns::new("flprobe");
    let ok = sh(&format!(
        "modprobe -q cls_flower; modprobe -q act_tunnel_key; modprobe -q act_mirred; modprobe -q act_gact; \
         ip -n {n} link add p0 type veth peer name p1 && ip netns exec {n} tc qdisc add dev p0 ingress && \
         ip netns exec {n} tc filter add dev p0 ingress protocol ip flower skip_hw action drop",
        n = ns.name
    ))
    .0;
    if !ok {
        assert!(
            std::env::var_os("FLOWD_VM").is_none(),
            "FLOWD_VM=1 but tc flower is not available"
        );
        println!("skipped: needs cls_flower");
    }
    ok
}

/// The seed lab: `host` holds rep0, up0 and vxlan_sys; the VF and the remote
/// hypervisor have their own namespaces.
struct Lab {
    host: Netns,
    vf: Netns,
    remote: Netns,
}

impl Lab {
    fn new() -> Self {
        let lab = Self {
            host: Netns::new("flhost"),
            vf: Netns::new("flvf"),
            remote: Netns::new("flrem"),
        };
        let (h, v, r) = (&lab.host.name, &lab.vf.name, &lab.remote.name);
        must(&format!(
            "set -e
            ip -n {h} link add rep0 type veth peer name vf0 netns {v}
            ip -n {v} addr add 1.1.1.2/24 dev vf0
            ip -n {v} link set vf0 address e4:11:11:11:11:10 mtu 1450 up
            ip -n {h} link set rep0 mtu 1450 up
            ip -n {h} link add up0 type veth peer name eth0 netns {r}
            ip -n {h} addr add 192.168.203.51/24 dev up0
            ip -n {h} link set up0 up
            ip -n {r} addr add 192.168.203.56/24 dev eth0
            ip -n {r} link set eth0 up
            ip -n {r} link add vxlan16 type vxlan id 16 dev eth0 remote 192.168.203.51 dstport 4789
            ip -n {r} addr add 1.1.1.3/24 dev vxlan16
            ip -n {r} link set vxlan16 address 82:8a:29:ad:4e:ef up
            ip -n {h} link add vxlan_sys type vxlan dstport 4789 external
            ip -n {h} link set vxlan_sys up"
        ));
        lab
    }

    fn ifindex(&self, dev: &str) -> IfIndex {
        let out = must(&format!("ip -n {} -o link show {dev}", self.host.name));
        IfIndex(out.split(':').next().unwrap().trim().parse().unwrap())
    }

    /// flowd's port table for the lab: the veths declared members of one
    /// software-only eswitch.
    fn ports(&self) -> PortTable {
        let sw = Some(SwitchId(b"flowd-lab".to_vec()));
        let p = |id, name: &str, kind, mtu, switch_id: Option<SwitchId>| PortInfo {
            id,
            name: name.into(),
            ifindex: self.ifindex(name),
            kind,
            mtu,
            up: true,
            switch_id,
        };
        [
            p(
                REP0,
                "rep0",
                PortKind::Representor { vf: 0 },
                1450,
                sw.clone(),
            ),
            p(UP0, "up0", PortKind::Uplink, 1500, sw),
            p(VXLAN, "vxlan_sys", PortKind::Tunnel, 1500, None),
        ]
        .into_iter()
        .collect()
    }

    fn offloader(&self, owner_tag: u32) -> Offloader {
        let ports = self.ports();
        let devs = [
            ports.get(REP0).unwrap().ifindex,
            ports.get(VXLAN).unwrap().ifindex,
        ];
        let cfg = TcConfig {
            policy: TcPolicy::SkipHw,
            owner_tag,
            ..TcConfig::default()
        };
        let tc = TcBackend::new(cfg, &devs).expect("tc backend");
        let up0 = ports.get(UP0).unwrap().ifindex;
        let mut o = Offloader::new(Box::new(tc), ports, Duration::from_secs(10));
        // The seed's path toward the remote VTEP, from its fixed source (encap) and back
        // (decap).
        o.path_changed(
            LookupKey {
                src: Some(ip("192.168.203.51")),
                ..LookupKey::to(ip("192.168.203.56"))
            },
            Ok(Path {
                uplink: up0,
                src: Some(ip("192.168.203.51")),
                gateway: None,
                neighbour: ip("192.168.203.56"),
                next_hop_mac: Some([0; 6]),
                uplink_mac: Some([0; 6]),
                mtu: 1500,
                table: 254,
                ipsec: None,
            }),
        );
        o
    }

    fn filters(&self, dev: &str) -> String {
        must(&format!(
            "ip netns exec {} tc -s filter show dev {dev} ingress",
            self.host.name
        ))
    }
}

fn encap(eth_type: u16, dst_mac: Option<[u8; 6]>) -> (Megaflow, Actions) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = REP0.0;
    m.in_port = u32::MAX;
    k.eth_type = eth_type;
    m.eth_type = 0xffff;
    k.eth_src = VF_MAC;
    m.eth_src = [0xff; 6];
    if let Some(d) = dst_mac {
        k.eth_dst = d;
        m.eth_dst = [0xff; 6];
    }
    let mut t = TunnelAttrs::vxlan(16, ip("192.168.203.56"));
    t.src = Some(ip("192.168.203.51"));
    t.ttl = 0;
    t.csum = true;
    // The seed's filters set no `nofrag`.
    t.df = false;
    (
        Megaflow::new(&k, &m),
        Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]),
    )
}

fn decap(eth_type: u16, macs: Option<([u8; 6], [u8; 6])>) -> (Megaflow, Actions) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = VXLAN.0;
    m.in_port = u32::MAX;
    k.tun_flags = tun_flags::PRESENT;
    m.tun_flags = tun_flags::PRESENT | tun_flags::IPV6;
    k.tun_src = addr_to(ip("192.168.203.56"));
    m.tun_src = addr_to(ip("255.255.255.255"));
    k.tun_dst = addr_to(ip("192.168.203.51"));
    m.tun_dst = addr_to(ip("255.255.255.255"));
    k.tun_tp_dst = 4789;
    m.tun_tp_dst = 0xffff;
    k.tun_vni = 16;
    m.tun_vni = u32::MAX;
    k.eth_type = eth_type;
    m.eth_type = 0xffff;
    if let Some((dst, src)) = macs {
        k.eth_dst = dst;
        m.eth_dst = [0xff; 6];
        k.eth_src = src;
        m.eth_src = [0xff; 6];
    }
    (
        Megaflow::new(&k, &m),
        Actions::new(vec![Action::Output(REP0)]),
    )
}

fn put(flow: u64, f: (Megaflow, Actions)) -> FlowRequest {
    FlowRequest::put(FlowId(flow), f.0, f.1, Vec::new())
}

/// The seed's six filters as megaflows (flow ids 1..=6).
fn seed_six() -> Vec<FlowRequest> {
    let b = [0xff; 6];
    vec![
        put(1, encap(0x0800, Some(REMOTE_MAC))),
        put(2, encap(0x0806, Some(REMOTE_MAC))),
        put(3, encap(0x0806, Some(b))),
        put(4, decap(0x0800, Some((VF_MAC, REMOTE_MAC)))),
        put(5, decap(0x0806, Some((VF_MAC, REMOTE_MAC)))),
        put(6, decap(0x0806, Some((b, REMOTE_MAC)))),
    ]
}

/// The seed's command lines (shared/seeds/tc-flower-vxlan-offload-connectx5.txt), with
/// its devices renamed to the lab's (enp6s0f1_0 -> rep0, vxlan16 -> vxlan_sys).
const SEED_LINES: [&str; 6] = [
    "tc filter add dev rep0 protocol ip parent ffff: prio 1 flower dst_mac 82:8a:29:ad:4e:ef src_mac e4:11:11:11:11:10 action tunnel_key set src_ip 192.168.203.51 dst_ip 192.168.203.56 dst_port 4789 id 16 action mirred egress redirect dev vxlan_sys",
    "tc filter add dev rep0 protocol arp parent ffff: prio 2 flower dst_mac 82:8a:29:ad:4e:ef src_mac e4:11:11:11:11:10 action tunnel_key set src_ip 192.168.203.51 dst_ip 192.168.203.56 dst_port 4789 id 16 action mirred egress redirect dev vxlan_sys",
    "tc filter add dev rep0 protocol arp parent ffff: prio 3 flower dst_mac ff:ff:ff:ff:ff:ff src_mac e4:11:11:11:11:10 action tunnel_key set src_ip 192.168.203.51 dst_ip 192.168.203.56 dst_port 4789 id 16 action mirred egress redirect dev vxlan_sys",
    "tc filter add dev vxlan_sys protocol ip parent ffff: prio 1 flower dst_mac e4:11:11:11:11:10 src_mac 82:8a:29:ad:4e:ef enc_src_ip 192.168.203.56 enc_dst_ip 192.168.203.51 enc_dst_port 4789 enc_key_id 16 action tunnel_key unset action mirred egress redirect dev rep0",
    "tc filter add dev vxlan_sys protocol arp parent ffff: prio 2 flower dst_mac e4:11:11:11:11:10 src_mac 82:8a:29:ad:4e:ef enc_src_ip 192.168.203.56 enc_dst_ip 192.168.203.51 enc_dst_port 4789 enc_key_id 16 action tunnel_key unset action mirred egress redirect dev rep0",
    "tc filter add dev vxlan_sys protocol arp parent ffff: prio 3 flower dst_mac ff:ff:ff:ff:ff:ff src_mac 82:8a:29:ad:4e:ef enc_src_ip 192.168.203.56 enc_dst_ip 192.168.203.51 enc_dst_port 4789 enc_key_id 16 action tunnel_key unset action mirred egress redirect dev rep0",
];

type Fields = BTreeSet<String>;

/// A seed command line as a set of `key=value` fields (device, protocol, keys,
/// actions in order); `csum` is tunnel_key's default when `nocsum` is absent.
fn parse_command(line: &str) -> Fields {
    let t: Vec<&str> = line.split_whitespace().collect();
    let mut f = Fields::new();
    let mut i = 0;
    let mut act = 0;
    while i < t.len() {
        match t[i] {
            "dev" if act == 0 => f.insert(format!("dev={}", t[i + 1])),
            "protocol" => f.insert(format!("protocol={}", t[i + 1])),
            "dst_mac" | "src_mac" | "enc_src_ip" | "enc_dst_ip" | "enc_dst_port" | "enc_key_id"
                if act == 0 =>
            {
                f.insert(format!("{}={}", t[i], t[i + 1]))
            }
            "action" => {
                act += 1;
                match (t[i + 1], t[i + 2]) {
                    ("tunnel_key", "set") => {
                        f.insert(format!("a{act}=tunnel_key set"));
                        f.insert(format!("a{act}.csum"))
                    }
                    ("tunnel_key", "unset") => f.insert(format!("a{act}=tunnel_key unset")),
                    ("mirred", _) => {
                        f.insert(format!("a{act}=mirred egress redirect dev {}", t[i + 5]))
                    }
                    (k, _) => panic!("action {k} not in the seed"),
                }
            }
            "src_ip" | "dst_ip" | "dst_port" if act > 0 => {
                f.insert(format!("a{act}.{}={}", t[i], t[i + 1]))
            }
            "id" if act > 0 => f.insert(format!("a{act}.key_id={}", t[i + 1])),
            _ => false,
        };
        i += 1;
    }
    f
}

/// `tc -s filter show dev DEV ingress` output as one field set per filter.
fn parse_show(dev: &str, out: &str) -> Vec<Fields> {
    let mut filters = Vec::new();
    let mut cur: Option<Fields> = None;
    let mut act = 0;
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.is_empty() {
            continue;
        }
        if t[0] == "filter" {
            if t.contains(&"handle") {
                filters.extend(cur.take());
                let mut f = Fields::new();
                f.insert(format!("dev={dev}"));
                let p = t.iter().position(|x| *x == "protocol").unwrap();
                f.insert(format!("protocol={}", t[p + 1]));
                cur = Some(f);
                act = 0;
            }
            continue;
        }
        let Some(f) = cur.as_mut() else { continue };
        match t[0] {
            "dst_mac" | "src_mac" | "enc_src_ip" | "enc_dst_ip" | "enc_dst_port" | "enc_key_id"
                if act == 0 =>
            {
                f.insert(format!("{}={}", t[0], t[1]));
            }
            "skip_hw" | "skip_sw" | "in_hw" | "not_in_hw" => {
                f.insert(format!("flag:{}", t[0]));
            }
            "action" if t.get(1) == Some(&"order") => {
                act = t[2].trim_end_matches(':').parse().unwrap();
                let rest = t[3..].join(" ");
                if rest.starts_with("tunnel_key set") || rest.starts_with("tunnel_key  set") {
                    f.insert(format!("a{act}=tunnel_key set"));
                } else if rest.starts_with("tunnel_key unset")
                    || rest.starts_with("tunnel_key  unset")
                {
                    f.insert(format!("a{act}=tunnel_key unset"));
                } else if rest.starts_with("mirred (Egress Redirect to device") {
                    let d = rest
                        .split("device ")
                        .nth(1)
                        .unwrap()
                        .split(')')
                        .next()
                        .unwrap();
                    f.insert(format!("a{act}=mirred egress redirect dev {d}"));
                } else {
                    f.insert(format!("a{act}={rest}"));
                }
            }
            "src_ip" | "dst_ip" | "key_id" | "dst_port" if act > 0 => {
                f.insert(format!("a{act}.{}={}", t[0], t[1]));
            }
            "csum" | "nocsum" if act > 0 => {
                f.insert(format!("a{act}.{}", t[0]));
            }
            _ => {}
        }
    }
    filters.extend(cur);
    filters
}

#[test]
fn seed_filters_listed_by_tc_as_in_the_seed() {
    if !flower_available() {
        return;
    }
    let lab = Lab::new();
    lab.host.enter().expect("enter the host namespace");
    let mut off = lab.offloader(0x5eed);
    let placed = off.process(seed_six());
    for (flow, p) in &placed {
        assert!(p.is_offloaded(), "flow {flow}: {p}");
        // skip_hw on veths: honest not_in_hw, never "in_hw".
        assert_eq!(p.to_string().split(' ').nth(2), Some("not_in_hw"), "{p}");
    }
    let mut got: Vec<Fields> = parse_show("rep0", &lab.filters("rep0"));
    got.extend(parse_show("vxlan_sys", &lab.filters("vxlan_sys")));
    for f in &mut got {
        assert!(
            f.remove("flag:skip_hw") && f.remove("flag:not_in_hw"),
            "flags of {f:?}"
        );
    }
    let mut want: Vec<Fields> = SEED_LINES.iter().map(|l| parse_command(l)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    println!("6 seed filters listed by tc with the seed's keys and actions");
    // Removing the flows removes the filters.
    off.process(
        (1..=6)
            .map(|f| FlowRequest::Remove { flow: FlowId(f) })
            .collect(),
    );
    assert!(parse_show("rep0", &lab.filters("rep0")).is_empty());
    assert!(parse_show("vxlan_sys", &lab.filters("vxlan_sys")).is_empty());
}

/// The seed script's four filters: IP and ARP each way, keyed on the VF's MAC / VNI.
fn ping_flows() -> Vec<FlowRequest> {
    let mut e_ip = encap(0x0800, None);
    let mut e_arp = encap(0x0806, None);
    for f in [&mut e_ip, &mut e_arp] {
        f.0.mask.eth_dst = [0; 6];
        f.0.key.eth_dst = [0; 6];
    }
    vec![
        put(11, e_ip),
        put(12, e_arp),
        put(13, decap(0x0800, None)),
        put(14, decap(0x0806, None)),
    ]
}

fn ping_ok(lab: &Lab, count: u32) -> bool {
    lab.vf
        .try_exec(&format!("ping -c {count} -i 0.2 -W 2 1.1.1.3"))
        .0
}

#[test]
fn ping_from_the_vf_crosses_offloaded_flower_rules() {
    if !flower_available() {
        return;
    }
    let lab = Lab::new();
    lab.host.enter().expect("enter the host namespace");
    let mut off = lab.offloader(0x9146);
    for (f, p) in off.process(ping_flows()) {
        assert!(p.is_offloaded(), "flow {f}: {p}");
    }
    // Resolve the underlay neighbour, as the seed script does.
    lab.host.try_exec("ping -c 1 -W 2 192.168.203.56");
    assert!(
        ping_ok(&lab, 3),
        "ping over tc flower failed:\n{}",
        lab.filters("rep0")
    );
    let before = off.sync_stats();
    let pk = |s: &[(FlowId, offload::RuleStats)], f: u64| {
        s.iter()
            .find(|x| x.0 == FlowId(f))
            .map_or(0, |x| x.1.packets)
    };
    assert!(
        pk(&before, 11) >= 3 && pk(&before, 13) >= 3,
        "tc counters: {before:?}"
    );
    assert!(ping_ok(&lab, 3));
    let after = off.sync_stats();
    assert!(
        pk(&after, 11) >= pk(&before, 11) + 3,
        "encap counter did not grow: {after:?}"
    );
    assert!(
        pk(&after, 13) >= pk(&before, 13) + 3,
        "decap counter did not grow: {after:?}"
    );
    let used = after
        .iter()
        .find(|x| x.0 == FlowId(11))
        .unwrap()
        .1
        .last_used_ms_ago;
    assert!(used.is_some_and(|ms| ms < 5_000), "last use {used:?}");
    println!(
        "ping ok; tc counters encap {} -> {}, decap {} -> {}",
        pk(&before, 11),
        pk(&after, 11),
        pk(&before, 13),
        pk(&after, 13)
    );
}

/// The restart helper: when FLOWD_HOLDER_NETNS is set, this "test" is a process that
/// owns offloaded flows: it sweeps orphans, installs the ping flows, reports and waits
/// to be killed. Run normally it does nothing.
#[test]
fn holder_process() {
    let Some(ns) = std::env::var_os("FLOWD_HOLDER_NETNS") else {
        return;
    };
    let ns = ns.to_string_lossy().into_owned();
    let vf = std::env::var("FLOWD_HOLDER_VF").unwrap();
    let remote = std::env::var("FLOWD_HOLDER_REMOTE").unwrap();
    // Adopt the parent's namespaces without deleting them when this process dies.
    let lab = Lab {
        host: Netns::borrowed(&ns),
        vf: Netns::borrowed(&vf),
        remote: Netns::borrowed(&remote),
    };
    lab.host.enter().expect("enter the host namespace");
    let mut off = lab.offloader(0x4e57);
    let swept = off.sweep_orphans().expect("sweep");
    let placed = off.process(ping_flows());
    let ok = placed.iter().filter(|(_, p)| p.is_offloaded()).count();
    println!("HOLDER READY swept={swept} offloaded={ok}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_holder(lab: &Lab, log: &std::path::Path) -> Child {
    let exe = std::env::current_exe().unwrap();
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "holder_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FLOWD_HOLDER_NETNS", &lab.host.name)
        .env("FLOWD_HOLDER_VF", &lab.vf.name)
        .env("FLOWD_HOLDER_REMOTE", &lab.remote.name)
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = Child(child);
    let t0 = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("HOLDER READY")
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "holder never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

fn count_filters(lab: &Lab) -> usize {
    parse_show("rep0", &lab.filters("rep0")).len()
        + parse_show("vxlan_sys", &lab.filters("vxlan_sys")).len()
}

#[test]
fn kill_9_and_restart_leaves_no_orphans() {
    if !flower_available() {
        return;
    }
    let lab = Lab::new();
    let dir =
        std::env::var_os("FLOWD_VM_OUT").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let log1 = dir.join(format!("{}-holder1.log", lab.host.name));
    let log2 = dir.join(format!("{}-holder2.log", lab.host.name));
    let mut holder = spawn_holder(&lab, &log1);
    assert!(
        std::fs::read_to_string(&log1)
            .unwrap()
            .contains("swept=0 offloaded=4")
    );
    lab.host.try_exec("ping -c 1 -W 2 192.168.203.56");
    assert!(ping_ok(&lab, 2));
    // kill -9: the filters stay behind.
    must(&format!("kill -9 {}", holder.0.id()));
    let _ = holder.0.wait();
    assert_eq!(count_filters(&lab), 4);
    let holder2 = spawn_holder(&lab, &log2);
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(log.contains("swept=4 offloaded=4"), "{log}");
    assert_eq!(
        count_filters(&lab),
        4,
        "orphans left:\n{}",
        lab.filters("rep0")
    );
    assert!(ping_ok(&lab, 2), "traffic after restart");
    drop(holder2);
    let _ = std::fs::remove_file(log1);
    let _ = std::fs::remove_file(log2);
    println!("restart: 4 orphans swept, 4 filters reinstalled, ping ok");
}
