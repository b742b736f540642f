//! Two datapath threads against real kernel objects (`[datapath] threads = 2`): each
//! representor's two AF_PACKET sockets in one fanout group, one per thread.
//!
//! ```text
//! vf1 (ns) vf0 --- rep1 -\                        /- rep2 --- vf0 vf2 (ns)
//!                         [hv: switch, 2 threads]
//! vf3 (ns) vf0 --- rep3 -/  rules: in_port(1) -> 2, in_port(3) -> 2
//! ```
//!
//! Many flows (distinct UDP source ports) from vf1 reach vf2 each frame exactly once
//! (no duplicate from the port's second socket, none lost), both threads take a share,
//! and the switch's per-port counters are its threads' summed. Then rep3 is plugged
//! while the switch runs (a socket per thread), forwards, and is unplugged: both its
//! sockets are closed.
//!
//! Then the daemon itself with `[datapath] threads = 2` on the lab's topology: VXLAN
//! to the remote without loss or duplicates, rings per port doubled in `flowctl stats`,
//! and a representor plugged and unplugged by a reload on both threads.

mod common;

use common::lab::{add_vf2, with_rep2};
use common::{Netns, can_netns};
use datapath::dpif::{DpConfig, DpStats, PortRole};
use datapath::port::{AfPacketPort, PacketBatch, Port, PortOptions};
use datapath::slowpath::{MacConfig, NoObserver, Rule, RuleAction, SlowPath};
use datapath::tunnel::StaticResolver;
use datapath::{Megaflow, PortId};
use flowd::switch::{Switch, SwitchConfig, SwitchPort};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const THREADS: usize = 2;
const VF1: [u8; 6] = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x01];
const VF2: [u8; 6] = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x02];
const VF3: [u8; 6] = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x03];

struct Lab {
    hv: Netns,
    vfs: Vec<Netns>,
}

fn build_lab() -> Lab {
    let hv = Netns::new("fthv");
    let mut vfs = Vec::new();
    for (i, mac) in [(1, VF1), (2, VF2), (3, VF3)] {
        let vf = Netns::new("ftvf");
        vf.exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1");
        hv.exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1");
        hv.ip(&format!(
            "link add rep{i} type veth peer name vf0 netns {}",
            vf.name
        ));
        let m: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        vf.ip(&format!("link set vf0 address {} up", m.join(":")));
        hv.ip(&format!("link set rep{i} up"));
        vfs.push(vf);
    }
    Lab { hv, vfs }
}

/// Runs `f` on a thread inside `ns`.
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = Netns::borrowed(&ns.name);
    std::thread::spawn(move || {
        common::enter(&ns);
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A port's sockets, one per datapath thread, opened in the hypervisor's namespace.
fn open(hv: &Netns, name: &str) -> Vec<Box<dyn Port>> {
    let name = name.to_string();
    in_ns(hv, move || {
        AfPacketPort::open_fanout(&name, PortOptions::default(), THREADS)
            .expect("open the fanout group")
            .into_iter()
            .map(|p| Box::new(p) as Box<dyn Port>)
            .collect()
    })
}

fn slowpath() -> SlowPath {
    let mut sp = SlowPath::new(MacConfig::default());
    for (prio, m) in [(100, "in_port(1)"), (90, "in_port(3)")] {
        let mf: Megaflow = m.parse().expect("match");
        sp.add_rule(Rule::new(
            prio,
            &mf.key,
            &mf.mask,
            vec![RuleAction::Output(PortId(2))],
        ))
        .expect("rule");
    }
    sp
}

/// Frame `seq` from `src` to vf2, of flow `seq % flows` (its UDP source port).
fn frame(src: [u8; 6], seq: u32, flows: u32) -> Vec<u8> {
    let mut f = VF2.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&32u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 2, 0, src[5]]);
    ip[16..20].copy_from_slice(&[10, 2, 0, 2]);
    let sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!((folded + (folded >> 16)) as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(10_000 + (seq % flows) as u16).to_be_bytes());
    f.extend_from_slice(&5001u16.to_be_bytes());
    f.extend_from_slice(&12u16.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(64, 0);
    f
}

/// Sends `count` frames of `flows` flows from `vf`'s vf0 (a batch of 32 every 2 ms,
/// within what a debug-built datapath keeps up with) while vf2 captures; the sequence
/// numbers vf2 received from `src`, duplicates included.
fn send_and_capture(lab: &Lab, src: [u8; 6], vf: usize, count: u32, flows: u32) -> Vec<u32> {
    let capture = {
        let ns = Netns::borrowed(&lab.vfs[1].name);
        std::thread::spawn(move || {
            common::enter(&ns);
            let mut port = AfPacketPort::open("vf0", 64).expect("capture socket");
            let mut batch = PacketBatch::new(64, 2048);
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut quiet_since = Instant::now();
            while Instant::now() < deadline {
                batch.clear();
                port.recv(&mut batch).expect("capture");
                let before = got.len();
                got.extend(
                    batch
                        .iter()
                        .filter(|f| f.get(6..12) == Some(&src[..]))
                        .filter_map(|f| f.get(42..46))
                        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
                );
                if got.len() > before {
                    quiet_since = Instant::now();
                }
                // Everything arrived, and nothing more for 300 ms (a duplicate would).
                if got.len() >= count as usize && quiet_since.elapsed() > Duration::from_millis(300)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            got
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    in_ns(&lab.vfs[vf], move || {
        let mut port = AfPacketPort::open("vf0", 32).expect("sender socket");
        let mut batch = PacketBatch::new(32, 2048);
        for chunk in (0..count).collect::<Vec<_>>().chunks(32) {
            batch.clear();
            for &seq in chunk {
                assert!(batch.push(&frame(src, seq, flows)));
            }
            let sent = port.send(&batch).expect("send");
            assert_eq!(sent, chunk.len());
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    capture.join().expect("capture thread")
}

/// Checks that `got` holds each of `0..count` exactly once.
fn exactly_once(got: &[u32], count: u32) {
    let mut seen = HashSet::new();
    for s in got {
        assert!(seen.insert(*s), "frame {s} delivered twice");
    }
    let missing: Vec<u32> = (0..count).filter(|s| !seen.contains(s)).take(10).collect();
    assert!(missing.is_empty(), "frames lost, first: {missing:?}");
    assert_eq!(got.len(), count as usize);
}

/// Waits (5 s at most) until the published counters satisfy `f`.
fn wait_stats(switch: &Switch, f: impl Fn(&DpStats) -> bool) -> DpStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = switch.datapath_stats();
        if f(&st) || Instant::now() > deadline {
            return st;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The packet sockets bound to interface `ifindex` in `hv` (`/proc/net/packet`).
/// The receiving AF_PACKET sockets on device `ifindex` (`/proc/net/packet`: protocol not
/// 0; a port's transmit-ring socket is bound with protocol 0 and receives nothing).
fn sockets_on(hv: &Netns, ifindex: &str) -> usize {
    packet_sockets(hv, ifindex, true)
}

/// Every AF_PACKET socket on device `ifindex` (receiving or only sending), or only the
/// receiving ones.
fn packet_sockets(hv: &Netns, ifindex: &str, receiving: bool) -> usize {
    hv.exec("cat /proc/net/packet")
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(4) == Some(&ifindex))
        .filter(|f| !receiving || f.get(3).is_some_and(|p| *p != "0000" && *p != "0"))
        .count()
}

#[test]
fn two_threads_deliver_each_frame_once_sum_their_counters_and_hot_plug() {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let lab = build_lab();
    let ports = vec![
        SwitchPort {
            id: PortId(1),
            role: PortRole::Representor,
            io: open(&lab.hv, "rep1"),
        },
        SwitchPort {
            id: PortId(2),
            role: PortRole::Representor,
            io: open(&lab.hv, "rep2"),
        },
    ];
    let cfg = SwitchConfig {
        datapath: DpConfig::default(),
        threads: THREADS,
        ..SwitchConfig::default()
    };
    let table = Arc::new(datapath::cache::FlowTable::new(cfg.engine.flow_limit));
    let switch = Switch::start(
        cfg,
        table,
        slowpath(),
        ports,
        Arc::new(StaticResolver::new()),
        Arc::new(NoObserver),
    )
    .expect("start the switch");

    // 4,000 frames of 500 flows: each reaches vf2 once.
    let (count, flows) = (4000u32, 500u32);
    let got = send_and_capture(&lab, VF1, 0, count, flows);
    exactly_once(&got, count);
    let n = u64::from(count);
    let st = wait_stats(&switch, |s| s.rx >= n && s.exec.outputs >= n);
    assert_eq!((st.rx, st.exec.outputs), (n, n), "{st:?}");
    let per_thread = switch.datapath_thread_stats();
    assert_eq!(per_thread.len(), THREADS);
    assert!(
        per_thread.iter().all(|t| t.rx > n / 10),
        "both threads take a share: {:?}",
        per_thread.iter().map(|t| t.rx).collect::<Vec<_>>()
    );
    // The port's counters are its sockets' summed: two rings, no kernel drop.
    let rep1 = st.port(PortId(1)).expect("rep1").to_owned();
    let rings: Vec<u32> = per_thread
        .iter()
        .map(|t| t.port(PortId(1)).expect("rep1 in each thread").ring_frames)
        .collect();
    assert_eq!(rep1.ring_frames, rings.iter().sum::<u32>());
    assert_eq!(rings, [1024, 1024]);
    assert_eq!((rep1.kernel_drops, rep1.down), (0, false), "{rep1:?}");
    assert_eq!(st.hits + st.misses, n, "{st:?}");

    // Hot-plug: rep3 joins every thread, forwards, and leaves with both its sockets.
    let rep3_index = lab
        .hv
        .exec("cat /sys/class/net/rep3/ifindex")
        .trim()
        .to_string();
    switch.plug(SwitchPort {
        id: PortId(3),
        role: PortRole::Representor,
        io: open(&lab.hv, "rep3"),
    });
    assert_eq!(sockets_on(&lab.hv, &rep3_index), THREADS);
    assert_eq!(
        packet_sockets(&lab.hv, &rep3_index, false),
        2 * THREADS,
        "and a transmit-ring socket per thread"
    );
    // Each thread publishes on its own clock: wait for both.
    let st = wait_stats(&switch, |s| {
        s.port(PortId(3)).map(|p| p.ring_frames) == Some(2048)
    });
    assert_eq!(st.port(PortId(3)).map(|p| p.ring_frames), Some(2048));
    let got = send_and_capture(&lab, VF3, 2, 1000, 100);
    exactly_once(&got, 1000);
    switch.unplug(PortId(3));
    let left = |s: &DpStats| s.port(PortId(3)).is_none();
    wait_stats(&switch, left);
    let threads = switch.datapath_thread_stats();
    assert!(threads.iter().all(left), "rep3 left every thread");
    let deadline = Instant::now() + Duration::from_secs(5);
    while packet_sockets(&lab.hv, &rep3_index, false) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        packet_sockets(&lab.hv, &rep3_index, false),
        0,
        "rep3's sockets closed"
    );
    switch.stop();
}

/// The packet sockets on `dev` in `hv`.
fn sockets_on_dev(hv: &Netns, dev: &str) -> usize {
    let index = hv.exec(&format!("cat /sys/class/net/{dev}/ifindex"));
    sockets_on(hv, index.trim())
}

/// Every AF_PACKET socket on device `dev`, sending-only ones included.
fn all_sockets_on_dev(hv: &Netns, dev: &str) -> usize {
    let index = hv.exec(&format!("cat /sys/class/net/{dev}/ifindex"));
    packet_sockets(hv, index.trim(), false)
}

fn reload(l: &flowd::lab::Lab) -> String {
    use flowd::control::proto::{Request, ResponseBody};
    match l.request(Request::Reload { allow_empty: false }) {
        Ok(ResponseBody::Done(d)) => d.message,
        other => panic!("reload: {other:?}\n{}", l.log()),
    }
}

/// A port's `ring_frames` in `flowctl stats`, once every thread published it.
fn ring_frames(l: &flowd::lab::Lab, port: &str, want: u64) -> Option<u64> {
    use flowd::control::proto::{Request, ResponseBody};
    let read = || match l.request(Request::Stats) {
        Ok(ResponseBody::Stats(s)) => s
            .ports
            .get(port)
            .and_then(|p| p.get("ring_frames"))
            .copied(),
        other => panic!("stats: {other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while read() != Some(want) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    read()
}

#[test]
fn the_daemon_with_two_datapath_threads() {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let mut l = flowd::lab::build("ftd").expect("lab topology");
    let vf2 = Netns::new("ftd-vf2");
    add_vf2(&l, &vf2);
    let config = flowd::lab::config_text("sim", &l.socket())
        .replace("max_idle_ms = 10000", "max_idle_ms = 3600000\nthreads = 2");
    let exe = flowd::lab::Lab::flowd_exe(env!("CARGO_BIN_EXE_flowd"));
    l.start_daemon_config(&exe, &config, &[])
        .expect("flowd starts");
    assert_eq!(sockets_on_dev(&l.hv, "rep0"), 2, "one socket per thread");

    let out = l.vfs[0].try_exec("ping -c 30 -i 0.05 -W 2 1.1.1.3").1;
    assert_eq!(
        flowd::lab::ping_counts(&out),
        Some((30, 30)),
        "{out}\n{}",
        l.log()
    );
    assert_eq!(flowd::lab::ping_duplicates(&out), 0, "{out}");
    assert_eq!(
        ring_frames(&l, "rep0", 2048),
        Some(2048),
        "two rings of 1024"
    );

    // Plugged by a reload: a socket per thread, forwarding.
    let cfg_path = l.dir.join("flowd.toml");
    let base = std::fs::read_to_string(&cfg_path).expect("config");
    let plugged = with_rep2(&base);
    std::fs::write(&cfg_path, &plugged).expect("write config");
    let msg = reload(&l);
    assert!(msg.contains("representors plugged: rep2"), "{msg}");
    assert_eq!(sockets_on_dev(&l.hv, "rep2"), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !vf2.try_exec("ping -c 2 -i 0.2 -W 1 1.1.1.3").0 {
        assert!(Instant::now() < deadline, "vf2 over VXLAN:\n{}", l.log());
    }
    let out = vf2.try_exec("ping -c 20 -i 0.05 -W 2 1.1.1.2").1;
    assert_eq!(flowd::lab::ping_counts(&out), Some((20, 20)), "{out}");
    assert_eq!(flowd::lab::ping_duplicates(&out), 0, "{out}");
    assert_eq!(ring_frames(&l, "rep2", 2048), Some(2048));

    // Unplugged: both sockets closed.
    std::fs::write(&cfg_path, &base).expect("write config");
    let msg = reload(&l);
    assert!(msg.contains("representors unplugged: rep2"), "{msg}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while all_sockets_on_dev(&l.hv, "rep2") > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        all_sockets_on_dev(&l.hv, "rep2"),
        0,
        "rep2's sockets closed"
    );
    l.stop_daemon().expect("flowd stops");
}
