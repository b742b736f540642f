//! Hostile VFs through the real daemon (issue 16), in the lab's namespaces:
//! - one VF floods random source MACs while the other opens new flows: every new flow
//!   of the second VF is set up during the flood (the flooder is held to its share of
//!   the MAC table, the flow table and the upcall queue);
//! - a VF sends malformed IPv4 frames: each is dropped and counted under its reason,
//!   none reaches the remote hypervisor.
//!
//! Frames are written with an AF_PACKET socket opened inside the VF's namespace.

mod common;

use common::lab::{flows, wait};
use flowd::control::proto::{Request, ResponseBody, StatsBody};
use flowd::lab::{self, Lab};
use flowd::netns::{Netns, can_netns};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const VF0_MAC: [u8; 6] = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
const VF1_MAC: [u8; 6] = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x11];
const REMOTE16_MAC: [u8; 6] = [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef];

/// An AF_PACKET socket bound to `dev`, opened from the calling thread's namespace.
struct RawSocket(i32);

impl RawSocket {
    fn open(dev: &str) -> Self {
        let name = std::ffi::CString::new(dev).expect("name");
        // SAFETY: plain system calls on a descriptor we own; arguments are valid.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(sll.sll_ifindex > 0, "no device {dev}");
            let r = libc::bind(
                fd,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            Self(fd)
        }
    }

    /// Sends one frame; whether the kernel took it (a full queue says no).
    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: the buffer is valid for its length.
        unsafe { libc::send(self.0, frame.as_ptr().cast(), frame.len(), 0) == frame.len() as isize }
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

/// Runs `f` with a raw socket on `dev` inside `ns` (on a thread of its own).
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    dev: &str,
    f: impl FnOnce(&RawSocket) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let (ns, dev) = (ns.name.clone(), dev.to_string());
    std::thread::spawn(move || {
        common::enter(&Netns::borrowed(&ns));
        let s = RawSocket::open(&dev);
        f(&s)
    })
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn stats(l: &Lab) -> StatsBody {
    match l.request(Request::Stats) {
        Ok(ResponseBody::Stats(s)) => *s,
        other => panic!("stats: {other:?}"),
    }
}

fn port_counter(s: &StatsBody, port: &str, name: &str) -> u64 {
    s.ports
        .get(port)
        .and_then(|c| c.get(name))
        .copied()
        .unwrap_or(0)
}

fn flowctl(l: &Lab, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(l.socket())
        .args(args)
        .output()
        .expect("run flowctl");
    assert!(out.status.success(), "flowctl {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lab with `extra` keys in `[datapath]` and offload off (only the software path
/// is under test), its daemon started.
fn lab_with(prefix: &str, extra: &str) -> Lab {
    let mut l = lab::build(prefix).expect("lab topology");
    let text = common::lab_config(&l, "sim")
        .replace("[datapath]\n", &format!("[datapath]\n{extra}"))
        .replace("policy = \"skip_hw\"", "policy = \"off\"");
    l.start_daemon_config(Path::new(env!("CARGO_BIN_EXE_flowd")), &text, &[])
        .expect("flowd starts");
    l
}

/// VF1's `k`-th new flow: a frame to a station nobody has seen (flooded), a megaflow
/// of its own.
fn new_flow_frame(k: u8) -> Vec<u8> {
    let mut f = eth([0x02, 0, 0, 1, 0, k], VF1_MAC, 0x88b5);
    f.extend_from_slice(&[k; 46]);
    f
}

fn new_flow_installed(rows: &[flowd::control::proto::FlowRow], k: u8) -> bool {
    let dst = format!("dst=02:00:00:01:00:{k:02x}");
    rows.iter()
        .any(|r| r.flow.starts_with("in_port(2),") && r.flow.contains(&dst))
}

#[test]
fn a_mac_flood_on_one_vf_does_not_starve_the_other_vfs_new_flows() {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let l = lab_with(
        "hf",
        "mac_table_size = 256\nupcall_queue = 64\nflow_limit = 2000\n",
    );
    // VF0 floods random source MACs (broadcast, so every one is a miss and a station),
    // until told to stop or 5M frames.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = in_ns(&l.vfs[0], "vf0", {
        let (stop, sent) = (stop.clone(), sent.clone());
        move |s| {
            let mut f = eth([0xff; 6], [0; 6], 0x88b5);
            f.resize(60, 0x5a);
            for i in 0u32..5_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                f[6] = 0x02;
                f[7] = 0xfe;
                f[8..12].copy_from_slice(&i.to_be_bytes());
                if s.send(&f) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    // The flood is on once the slow path refuses misses.
    let flooding = wait(120, || stats(&l).upcall_drops > 1000);
    assert!(
        flooding,
        "the flood never filled the upcall queue\n{}",
        l.log()
    );

    // VF1 opens 40 new flows, 8 at a time (each is a miss); a flow's frame is sent
    // again (as a retransmission would) up to 3 times while it is not set up.
    const FLOWS: u8 = 40;
    let mut first_try = 0;
    let mut set_up = 0;
    let vf1 = l.vfs[1].name.clone();
    for group in (0..FLOWS).collect::<Vec<_>>().chunks(8) {
        for attempt in 0..3 {
            let rows = flows(&l);
            let missing: Vec<u8> = group
                .iter()
                .copied()
                .filter(|k| !new_flow_installed(&rows, *k))
                .collect();
            if missing.is_empty() {
                break;
            }
            let frames: Vec<Vec<u8>> = missing.iter().map(|k| new_flow_frame(*k)).collect();
            in_ns(&Netns::borrowed(&vf1), "vf1", move |s| {
                for f in &frames {
                    assert!(s.send(f));
                }
            })
            .join()
            .expect("vf1 sender");
            let done = wait(3, || {
                let rows = flows(&l);
                group.iter().all(|k| new_flow_installed(&rows, *k))
            });
            if done && attempt == 0 {
                first_try += group.len();
            }
        }
        let rows = flows(&l);
        set_up += group
            .iter()
            .filter(|k| new_flow_installed(&rows, **k))
            .count();
    }
    let during = stats(&l);
    stop.store(true, Ordering::Relaxed);
    flooder.join().expect("flooder");
    eprintln!(
        "flood of {} frames from VF0: VF1 set up {set_up} of {FLOWS} new flows during it \
         ({first_try} at the first packet); VF0 upcall drops {}, MAC quota evictions {}, \
         VF0 learned {} of {} stations (quota {}), VF0 flows {} (quota {}), \
         VF1 upcall drops {}",
        sent.load(Ordering::Relaxed),
        port_counter(&during, "rep0", "upcall_drops"),
        during.mac_quota_evictions,
        port_counter(&during, "rep0", "mac_entries"),
        during.mac_limit,
        during.mac_port_quota,
        port_counter(&during, "rep0", "flows"),
        during.flow_port_quota,
        port_counter(&during, "rep1", "upcall_drops"),
    );
    assert_eq!(set_up, usize::from(FLOWS), "{}", l.log());
    assert_eq!((during.mac_limit, during.mac_port_quota), (256, 64));
    assert!(port_counter(&during, "rep0", "mac_entries") <= 64);
    assert!(port_counter(&during, "rep0", "flows") <= during.flow_port_quota);
    assert!(during.upcall_port_share_drops > 0);
    // The operator sees the table and its limit.
    let fdb = flowctl(&l, &["fdb"]);
    assert!(
        fdb.contains("of 256 stations, at most 64 learned per port"),
        "{fdb}"
    );
    let text = flowctl(&l, &["stats"]);
    assert!(text.contains("mac_quota_evictions"), "{text}");
}

/// The header checksum of an IPv4 header.
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// VF0's IPv4 frame to the remote's VNI 16 station (1.1.1.2 -> 1.1.1.3), protocol
/// `proto`, with `l4` after a 20-byte header.
fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(REMOTE16_MAC, VF0_MAC, 0x0800);
    let total = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 1, 1, 1, 2, 1, 1, 1, 3]);
    let c = ipv4_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&h);
    f.extend_from_slice(l4);
    f
}

/// A well-formed UDP datagram 7777 -> 7777 with 4 bytes of data.
fn good_udp() -> Vec<u8> {
    ipv4(
        17,
        &[0x1e, 0x61, 0x1e, 0x61, 0, 12, 0, 0, b'g', b'o', b'o', b'd'],
    )
}

#[test]
fn malformed_ipv4_frames_are_dropped_and_counted_per_reason() {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let l = lab_with("hm", "");
    // The remote's station is learned and VF0's flow to it installed.
    let (ok, out) = l.vfs[0].try_exec("ping -c 2 -i 0.2 -W 2 1.1.1.3");
    assert!(ok, "ping: {out}\n{}", l.log());

    let set = |mut f: Vec<u8>, at: usize, b: &[u8]| {
        f[at..at + b.len()].copy_from_slice(b);
        f
    };
    let good = good_udp();
    let mut tcp = ipv4(6, &[0; 20]);
    tcp[14 + 20 + 12] = 0x30; // data offset 3
    let mut udp_cut = set(good.clone(), 16, &24u16.to_be_bytes());
    udp_cut.truncate(14 + 24);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ipv4_ihl", set(good.clone(), 14, &[0x44])),
        ("ipv4_version", set(good.clone(), 14, &[0x65])),
        (
            "ipv4_total_len",
            set(good.clone(), 16, &1000u16.to_be_bytes()),
        ),
        (
            "ipv4_total_len",
            set(good.clone(), 16, &16u16.to_be_bytes()),
        ),
        ("ipv4_truncated", good[..14 + 12].to_vec()),
        ("udp_truncated", udp_cut),
        ("tcp_truncated", tcp),
    ];
    const EACH: u64 = 5;
    let before = stats(&l);

    // Whatever VF0 sends as IPv4 reaches the remote's vxlan16: the first three seen
    // must be the good frames sent after the malformed ones.
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", &l.remote.name])
        .args([
            "timeout", "30", "tcpdump", "-i", "vxlan16", "-nn", "-l", "-c", "3",
        ])
        .args(["ether src e4:11:11:11:11:10 and ether proto 0x0800"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let mut err = BufReader::new(tcpdump.stderr.take().expect("stderr"));
    let mut line = String::new();
    while err.read_line(&mut line).expect("tcpdump stderr") > 0 && !line.contains("listening") {
        line.clear();
    }
    assert!(line.contains("listening"), "tcpdump did not start: {line}");

    let frames: Vec<Vec<u8>> = cases
        .iter()
        .flat_map(|(_, f)| std::iter::repeat_n(f.clone(), EACH as usize))
        .chain(std::iter::repeat_n(good.clone(), 3))
        .collect();
    in_ns(&l.vfs[0], "vf0", move |s| {
        for f in &frames {
            assert!(s.send(f));
        }
    })
    .join()
    .expect("sender");

    let out = tcpdump.wait_with_output().expect("tcpdump output");
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 3, "three frames reached the remote: {seen}");
    for line in &lines {
        assert!(
            line.contains("1.1.1.2.7777 > 1.1.1.3.7777: UDP, length 4"),
            "only good frames are forwarded: {seen}"
        );
    }

    let total = EACH * cases.len() as u64;
    let counted = wait(10, || {
        let s = stats(&l);
        port_counter(&s, "rep0", "rx_malformed") - port_counter(&before, "rep0", "rx_malformed")
            >= total
    });
    assert!(counted, "{:?}", stats(&l).malformed);
    let after = stats(&l);
    for (reason, _) in &cases {
        let want = EACH * cases.iter().filter(|(r, _)| r == reason).count() as u64;
        let n = after.malformed.get(*reason).copied().unwrap_or(0)
            - before.malformed.get(*reason).copied().unwrap_or(0);
        assert_eq!(n, want, "{reason}: {:?}", after.malformed);
    }
    let all: u64 = after.malformed.values().sum::<u64>() - before.malformed.values().sum::<u64>();
    assert_eq!(all, total);
    eprintln!("malformed frames dropped by reason: {:?}", after.malformed);
    let text = flowctl(&l, &["stats"]);
    assert!(text.contains("  ipv4_ihl"), "{text}");
}
