//! Helpers for integration tests that build network namespaces: the library's own
//! [`flowd::netns`], plus what only tests need.
#![allow(dead_code, unused_imports)]

pub use flowd::netns::{Netns, can_netns, sh};

/// The daemon binary the tests start (`FLOWD_EXE`, or the one cargo built).
pub fn exe() -> std::path::PathBuf {
    flowd::lab::Lab::flowd_exe(env!("CARGO_BIN_EXE_flowd"))
}

/// True (the test is skipped, and says so) without root and iproute2.
pub fn skip_without_netns() -> bool {
    if can_netns() {
        return false;
    }
    eprintln!("skipped: needs root and iproute2");
    true
}

/// True (the test is skipped, and says it needs `needs`) without root or cls_flower; in
/// the VM suite (`FLOWD_VM` set) their absence fails the test instead.
pub fn skip_without_flower(needs: &str) -> bool {
    if can_netns() && flowd::daemon::kernel_has_flower() {
        return false;
    }
    assert!(
        std::env::var_os("FLOWD_VM").is_none(),
        "the VM must have cls_flower and root"
    );
    eprintln!("skipped: needs {needs} (run in the VM suite)");
    true
}

/// The lab with the daemon started on the simulated eswitch; None (the test is
/// skipped, and says so) without root and iproute2.
pub fn lab_with_sim_daemon(prefix: &str) -> Option<flowd::lab::Lab> {
    if skip_without_netns() {
        return None;
    }
    let mut l = flowd::lab::build(prefix).expect("lab topology");
    l.start_daemon_exe(&exe(), "sim").expect("flowd starts");
    Some(l)
}

/// One of the daemon's counters (`flowctl stats`), 0 if it has none of that name.
pub fn stat(l: &flowd::lab::Lab, name: &str) -> u64 {
    use flowd::control::proto::{Request, ResponseBody};
    match l.request(Request::Stats) {
        Ok(ResponseBody::Stats(s)) => s.other.get(name).copied().unwrap_or(0),
        other => panic!("stats: {other:?}"),
    }
}

/// The daemon's tunnel paths (`flowctl tunnels`).
pub fn tunnels(l: &flowd::lab::Lab) -> Vec<flowd::control::proto::TunnelRow> {
    use flowd::control::proto::{Request, ResponseBody};
    match l.request(Request::Tunnels) {
        Ok(ResponseBody::Tunnels(rows)) => rows,
        other => panic!("tunnels: {other:?}"),
    }
}

/// Enters `ns` from the calling thread (tests: panics on failure).
pub fn enter(ns: &Netns) {
    ns.enter().unwrap_or_else(|e| panic!("{e}"));
}

/// The seed lab's underlay: the hypervisor's uplink `up0` (192.168.203.51) toward the
/// remote's `eth0` (192.168.203.56), a kernel vxlan device on the remote (VNI 16,
/// 1.1.1.3, MAC 82:8a:29:ad:4e:ef) and, on the hypervisor, an external-mode `vxlan_sys`
/// that owns UDP 4789 (as with OVS or tc) so that the kernel does not answer flowd's
/// VXLAN with port-unreachable; flowd reads the uplink with AF_PACKET.
pub fn seed_underlay(hv: &Netns, remote: &Netns) {
    hv.ip(&format!(
        "link add up0 type veth peer name eth0 netns {}",
        remote.name
    ));
    hv.ip("addr add 192.168.203.51/24 dev up0");
    hv.ip("link set up0 up");
    remote.ip("addr add 192.168.203.56/24 dev eth0");
    remote.ip("link set eth0 up");
    remote.ip("link add vxlan16 type vxlan id 16 dev eth0 remote 192.168.203.51 dstport 4789");
    remote.ip("addr add 1.1.1.3/24 dev vxlan16");
    remote.ip("link set vxlan16 address 82:8a:29:ad:4e:ef up");
    hv.ip("link add vxlan_sys type vxlan dstport 4789 external");
    hv.ip("link set vxlan_sys up");
}

pub mod tcp;

/// Helpers for tests that drive the daemon in the lab (`flowd::lab`).
pub mod lab {
    use flowd::control::proto::{FlowFilter, FlowRow, Request, ResponseBody};
    use flowd::lab::Lab;
    use flowd::netns::Netns;
    use std::time::{Duration, Instant};

    /// `[[port]]` of a third VM's representor, rep2 (VF 2), for a reload to plug.
    pub const REP2: &str = r#"
[[port]]
name = "rep2"
role = "representor"
vf = 2
switch_id = "0x00aabbccddee"
"#;

    /// A third VM's VF in namespace `vf2`: vf2 1.1.1.4 (on tenant-a, VNI 16, like vf0),
    /// MTU 1450, its representor rep2 in the hypervisor's namespace; both up.
    pub fn add_vf2(l: &Lab, vf2: &Netns) {
        l.hv.ip(&format!(
            "link add rep2 type veth peer name vf2 netns {}",
            vf2.name
        ));
        vf2.ip("addr add 1.1.1.4/24 dev vf2");
        vf2.ip("link set vf2 address e4:11:11:11:11:12 mtu 1450 up");
        l.hv.ip("link set rep2 mtu 1450 up");
    }

    /// The lab's configuration `base` with rep2 plugged: a port ([`REP2`]) and a member
    /// of tenant-a beside rep0.
    pub fn with_rep2(base: &str) -> String {
        base.replace("members = [\"rep0\"]", "members = [\"rep0\", \"rep2\"]") + REP2
    }

    /// Every flow, as `flowctl dump-flows` lists it.
    pub fn flows(l: &Lab) -> Vec<FlowRow> {
        match l.request(Request::dump_flows(FlowFilter::All)) {
            Ok(ResponseBody::Flows(rows)) => rows,
            other => panic!("dump-flows: {other:?}"),
        }
    }

    /// VF `vf`'s IPv4 encapsulation flows (from its representor, port `vf + 1`).
    pub fn encap_flows(l: &Lab, vf: u32) -> Vec<FlowRow> {
        flows(l)
            .into_iter()
            .filter(|f| {
                f.flow.starts_with(&format!("in_port({})", vf + 1))
                    && f.flow.contains("eth_type(0x0800)")
                    && f.actions.contains("set(tunnel(")
            })
            .collect()
    }

    /// Waits (at most `secs`) until `f` holds; whether it did.
    pub fn wait(secs: u64, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if f() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Three pings from `ns`.
    pub fn ping(ns: &Netns, dst: &str) -> (bool, String) {
        ns.try_exec(&format!("ping -c 3 -i 0.2 -W 2 {dst}"))
    }

    /// The VXLAN packets toward the lab's remote VTEP seen on the remote's `dev` (eth1 or
    /// eth2) while `f` runs, as (outer source, VNI).
    pub fn capture(l: &Lab, dev: &str, f: impl FnOnce()) -> Vec<(String, u32)> {
        let remote = l.remote.name.clone();
        let dev = dev.to_string();
        let t = std::thread::spawn(move || {
            Netns::borrowed(&remote).try_exec(&format!(
                "timeout 6 tcpdump -i {dev} -nn -l -c 40 \
                 'udp dst port 4789 and dst host 10.0.0.2' 2>/dev/null"
            ))
        });
        // tcpdump is listening well before the traffic (a slow machine included).
        std::thread::sleep(Duration::from_millis(1500));
        f();
        let (_, out) = t.join().expect("tcpdump thread");
        out.lines()
            .filter_map(|line| {
                let src = line.split(" IP ").nth(1)?.split(' ').next()?;
                let src = src.rsplit_once('.')?.0.to_string();
                let vni = line.split("vni ").nth(1)?.split_whitespace().next()?;
                Some((src, vni.parse().ok()?))
            })
            .collect()
    }
}

/// What crossed an underlay link while something ran: cleartext VXLAN frames and ESP
/// frames, both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    /// UDP to or from port 4789 (VXLAN in clear).
    pub vxlan: usize,
    /// ESP.
    pub esp: usize,
}

/// Counts, on `ns`'s `dev`, the cleartext VXLAN and the ESP frames seen while `f` runs
/// (tcpdump listens before `f` starts and for at most 8 s).
pub fn wire(ns: &Netns, dev: &str, f: impl FnOnce()) -> Wire {
    let name = ns.name.clone();
    let dev = dev.to_string();
    // tcpdump says on stderr when it listens: `f` runs only then (a loaded VM can take
    // seconds to start it; a fixed sleep missed the first packets).
    let ready = std::env::temp_dir().join(format!("flowd-wire-{}-{dev}.err", ns.name));
    let _ = std::fs::remove_file(&ready);
    let err = ready.display().to_string();
    let t = std::thread::spawn(move || {
        Netns::borrowed(&name).try_exec(&format!(
            "timeout 15 tcpdump -i {dev} -nn -l -c 200 'udp port 4789 or esp' 2>{err}"
        ))
    });
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&ready).is_ok_and(|e| e.contains("listening on"))
        && t0.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f();
    let (_, out) = t.join().expect("tcpdump thread");
    let _ = std::fs::remove_file(&ready);
    let mut w = Wire::default();
    for line in out.lines() {
        if line.contains("ESP(") {
            w.esp += 1;
        } else if line.contains(".4789") {
            w.vxlan += 1;
        }
    }
    w
}

/// The lab's configuration with flows kept until the test is over: a test reads its
/// flows when it is ready, and a slow machine must not idle them out first.
pub fn lab_config(l: &flowd::lab::Lab, backend: &str) -> String {
    let text = flowd::lab::config_text(backend, &l.socket());
    assert!(text.contains("max_idle_ms = 10000"));
    text.replace("max_idle_ms = 10000", "max_idle_ms = 3600000")
}
