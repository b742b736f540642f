//! tc backend throughput: install and remove N VXLAN encap filters (skip_hw) through
//! flowd's offloader (translate, validate, batched netlink with echo verification),
//! next to `tc -batch` with the same filters, in the same kernel. Needs cls_flower: run
//! it in the VM (`FLOWD_VM_BENCH=1 tests/vm/run-all.sh`), or directly:
//!   offload_tc-<hash> 10000 50000
//! Prints a table of rules/s.

use datapath::{
    Action, Actions, FlowId, FlowKey, FlowMask, IfIndex, Megaflow, PortId, TunnelAttrs,
};
use flowd::netns::{Netns, sh};
use offload::tc::{TcBackend, TcConfig};
use offload::{FlowRequest, Offloader, PortInfo, PortKind, PortTable, TcPolicy};
use std::io::Write;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use vocab::{LookupKey, Path, SwitchId};

fn ifindex(dev: &str) -> IfIndex {
    let out = sh(&format!("ip -o link show {dev}"));
    IfIndex(out.split(':').next().unwrap().trim().parse().unwrap())
}

fn mac(i: u32) -> [u8; 6] {
    [
        0x02,
        0x42,
        (i >> 24) as u8,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn flow(i: u32) -> (Megaflow, Actions) {
    let mut k = FlowKey::default();
    let mut m = FlowMask::default();
    k.in_port = 1;
    m.in_port = u32::MAX;
    k.eth_type = 0x0800;
    m.eth_type = 0xffff;
    k.eth_src = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
    m.eth_src = [0xff; 6];
    k.eth_dst = mac(i);
    m.eth_dst = [0xff; 6];
    let mut t = TunnelAttrs::vxlan(16, "192.168.203.56".parse().unwrap());
    t.src = Some("192.168.203.51".parse().unwrap());
    t.ttl = 0;
    t.csum = true;
    (
        Megaflow::new(&k, &m),
        Actions::new(vec![Action::SetTunnel(t), Action::Output(PortId(3))]),
    )
}

fn offloader(cfg: TcConfig) -> Offloader {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let sw = Some(SwitchId(b"bench".to_vec()));
    let ports: PortTable = [
        PortInfo {
            id: PortId(1),
            name: "rep0".into(),
            ifindex: ifindex("rep0"),
            kind: PortKind::Representor { vf: 0 },
            mtu: 1450,
            up: true,
            switch_id: sw.clone(),
        },
        PortInfo {
            id: PortId(2),
            name: "up0".into(),
            ifindex: ifindex("up0"),
            kind: PortKind::Uplink,
            mtu: 1500,
            up: true,
            switch_id: sw,
        },
        PortInfo {
            id: PortId(3),
            name: "vxlan_sys".into(),
            ifindex: ifindex("vxlan_sys"),
            kind: PortKind::Tunnel,
            mtu: 1500,
            up: true,
            switch_id: None,
        },
    ]
    .into_iter()
    .collect();
    let tc = TcBackend::new(cfg, &[ifindex("rep0")]).expect("tc backend");
    let up0 = ifindex("up0");
    let mut off = Offloader::new(Box::new(tc), ports, Duration::from_secs(600));
    off.path_changed(
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
    off
}

fn count_filters() -> usize {
    sh("tc filter show dev rep0 ingress")
        .lines()
        .filter(|l| l.contains("handle"))
        .count()
}

/// Runs `tc -batch` over the lines: its wall time and CPU (user, system).
fn tc_batch(lines: impl Iterator<Item = String>) -> Option<(Duration, f64, f64)> {
    let path = std::env::temp_dir().join(format!("flowd-bench-{}.tc", std::process::id()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let t0 = Instant::now();
    let (ok, user, sys) = with_cpu(libc::RUSAGE_CHILDREN, || {
        Command::new("tc")
            .arg("-batch")
            .arg(&path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    let d = t0.elapsed();
    let _ = std::fs::remove_file(path);
    if !ok {
        let _ = Command::new("sh")
            .arg("-c")
            .arg("tc filter del dev rep0 ingress")
            .output();
    }
    ok.then_some((d, user, sys))
}

/// CPU seconds (user, system) of this process (`who` = RUSAGE_SELF) or of its waited-for
/// children (RUSAGE_CHILDREN).
fn cpu(who: i32) -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

/// CPU spent by `who` while `f` ran: (result, user s, system s).
fn with_cpu<T>(who: i32, f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (u0, s0) = cpu(who);
    let r = f();
    let (u1, s1) = cpu(who);
    (r, u1 - u0, s1 - s0)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// A variant measured: its name, and flowd's configuration or tc -batch's action flag.
type Variant = (&'static str, Result<TcConfig, &'static str>);

/// flowd's default and tc -batch; on the first size (`detail`), where the time goes too.
fn variants(base: TcConfig, detail: bool) -> Vec<Variant> {
    let mut v: Vec<Variant> = vec![("flowd (echo, default)", Ok(base)), ("tc -batch", Err(""))];
    if !detail {
        return v;
    }
    v.push((
        "flowd echo 1 socket",
        Ok(TcConfig {
            channels: 1,
            ..base
        }),
    ));
    v.push((
        "flowd echo percpu stats",
        Ok(TcConfig {
            no_percpu_stats: false,
            ..base
        }),
    ));
    for (name, batch) in [
        ("flowd echo batch 16", 16),
        ("flowd echo batch 32", 32),
        ("flowd echo batch 128", 128),
        ("flowd echo batch 256", 256),
    ] {
        v.push((name, Ok(TcConfig { batch, ..base })));
    }
    v.push((
        "flowd echo 3 sockets",
        Ok(TcConfig {
            channels: 3,
            ..base
        }),
    ));
    v.push((
        "flowd no echo",
        Ok(TcConfig {
            echo: false,
            ..base
        }),
    ));
    v.push(("tc -batch no_percpu", Err(" no_percpu")));
    v
}

/// The best of two rounds of each variant with `n` rules, in alternating order, after a
/// warm-up (the first filters a kernel sees cost more: slab, per-CPU chunks, hash table
/// growth).
fn measure(n: u32, base: TcConfig, variants: &[Variant]) -> Vec<Option<Run>> {
    let _ = run_flowd(n, base);
    let mut best: Vec<Option<Run>> = vec![None; variants.len()];
    for round in 0..2 {
        let order: Vec<usize> = if round == 0 {
            (0..variants.len()).collect()
        } else {
            (0..variants.len()).rev().collect()
        };
        for i in order {
            let r = match variants[i].1 {
                Ok(cfg) => Some(run_flowd(n, cfg)),
                Err(flag) => run_tc(n, flag),
            };
            if let Some(r) = r {
                let b = best[i].get_or_insert(r);
                if r.ins < b.ins {
                    (b.ins, b.user, b.sys) = (r.ins, r.user, r.sys);
                }
                b.rem = b.rem.min(r.rem);
            }
        }
    }
    best
}

fn print_size(n: u32, variants: &[Variant], best: &[Option<Run>]) {
    for ((name, _), r) in variants.iter().zip(best) {
        match r {
            Some(Run {
                ins,
                rem,
                user,
                sys,
            }) => println!(
                "{:<26} {:>7} {:>10.3} {:>12.0} {:>10.3} {:>12.0} {:>7.2}/{:<6.2}",
                name,
                n,
                ins.as_secs_f64(),
                rate(n as usize, *ins),
                rem.as_secs_f64(),
                rate(n as usize, *rem),
                user,
                sys
            ),
            None => println!("{name:<26} {n:>7} (not supported by this tc)"),
        }
    }
    if let (Some(f), Some(t)) = (best[0], best[1]) {
        println!(
            "{:<26} {:>7} {:>10} {:>12.2} {:>10} {:>12.2}",
            "flowd / tc -batch",
            n,
            "",
            t.ins.as_secs_f64() / f.ins.as_secs_f64(),
            "",
            t.rem.as_secs_f64() / f.rem.as_secs_f64()
        );
    }
}

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 50_000]
    } else {
        sizes
    };
    let ns = Netns::new("flbench");
    // Before any other thread exists: commands and sockets from here on live in it.
    ns.enter().expect("enter the bench namespace");
    sh(
        "ip link set lo up; ip link add rep0 type veth peer name vf0; ip link set rep0 mtu 1450 up; \
        ip link add up0 type veth peer name up0p; ip link set up0 up; \
        ip link add vxlan_sys type vxlan dstport 4789 external; ip link set vxlan_sys up",
    );
    println!(
        "cpus: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<26} {:>7} {:>10} {:>12} {:>10} {:>12} {:>14}",
        "backend", "rules", "install s", "install/s", "remove s", "remove/s", "inst. cpu u/s"
    );
    let base = TcConfig {
        policy: TcPolicy::SkipHw,
        owner_tag: 0xbe4c,
        ..TcConfig::default()
    };
    for (k, &n) in sizes.iter().enumerate() {
        let variants = variants(base, k == 0);
        let best = measure(n, base, &variants);
        print_size(n, &variants, &best);
    }
}

/// One measured round: install and remove times, and the CPU the install took (the
/// bench process's own for flowd, tc's for tc -batch; system time is mostly the
/// kernel inserting filters and building echoes).
#[derive(Debug, Clone, Copy)]
struct Run {
    ins: Duration,
    rem: Duration,
    user: f64,
    sys: f64,
}

fn run_flowd(n: u32, cfg: TcConfig) -> Run {
    let mut off = offloader(cfg);
    let puts: Vec<FlowRequest> = (0..n)
        .map(|i| {
            let (megaflow, actions) = flow(i);
            FlowRequest::put(FlowId(u64::from(i)), megaflow, actions, Vec::new())
        })
        .collect();
    let t0 = Instant::now();
    let (placed, user, sys) = with_cpu(libc::RUSAGE_SELF, || off.process(puts));
    let ins = t0.elapsed();
    let ok = placed.iter().filter(|(_, p)| p.is_offloaded()).count();
    assert_eq!(
        ok,
        n as usize,
        "offloaded {ok} of {n}: {:?}",
        placed.iter().find(|(_, p)| !p.is_offloaded())
    );
    assert_eq!(count_filters(), n as usize);
    let t0 = Instant::now();
    off.process(
        (0..n)
            .map(|i| FlowRequest::Remove {
                flow: FlowId(u64::from(i)),
            })
            .collect(),
    );
    let rem = t0.elapsed();
    assert_eq!(count_filters(), 0);
    Run {
        ins,
        rem,
        user,
        sys,
    }
}

fn run_tc(n: u32, flag: &str) -> Option<Run> {
    let add = (0..n).map(|i| {
        format!(
            "filter add dev rep0 protocol ip parent ffff: prio 1 handle {} flower skip_hw dst_mac {} src_mac e4:11:11:11:11:10 \
             action tunnel_key set src_ip 192.168.203.51 dst_ip 192.168.203.56 dst_port 4789 id 16{flag} \
             action mirred egress redirect dev vxlan_sys{flag}",
            i + 1,
            mac_str(mac(i))
        )
    });
    let (ins, user, sys) = tc_batch(add)?;
    assert_eq!(count_filters(), n as usize);
    let del = (0..n).map(|i| {
        format!(
            "filter del dev rep0 protocol ip parent ffff: prio 1 handle {} flower",
            i + 1
        )
    });
    let (rem, _, _) = tc_batch(del)?;
    assert_eq!(count_filters(), 0);
    let _ = Command::new("sh")
        .arg("-c")
        .arg("tc filter del dev rep0 ingress")
        .output();
    Some(Run {
        ins,
        rem,
        user,
        sys,
    })
}
