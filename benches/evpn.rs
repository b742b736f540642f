//! BGP EVPN convergence: 1,000 MACs announced by one hypervisor, and the time until flowd
//! on another has all of them as remote stations, beside the time until zebra installed
//! them in that hypervisor's kernel (`bridge fdb` counts); the cost per MAC in flowd
//! (CPU, resident memory) on the receiving side; then the withdrawal of all of them.
//!
//! Runs `flowd lab --evpn`'s topology (root, FRR). Two announcers:
//! - **kernel**: hv3, a plain Linux VTEP: 1,000 static entries on its bridge port
//!   (`bridge -batch`), which its zebra announces; flowd on hv1 and hv2 receive them;
//! - **flowd**: hv1's VM sends one frame from each of 1,000 MACs; flowd learns them and
//!   writes them on its advertise port, zebra announces them, flowd on hv2 receives them.
//!
//! `cargo bench --bench evpn` (or `scripts/bench.sh`). `EVPN_BENCH_MACS` changes the
//! count.

use ::evpn as evpn_crate;
use flowd::control::proto::{Request, ResponseBody};
use flowd::lab::evpn::{self, EvpnLab, vtep};
use flowd::netns::{Netns, can_netns};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

fn macs() -> usize {
    std::env::var("EVPN_BENCH_MACS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// The `i`-th benchmark MAC of announcer `a` (`02:bb:0a:00:HI:LO`).
fn mac(a: u8, i: usize) -> [u8; 6] {
    [0x02, 0xbb, a, 0, (i >> 8) as u8, i as u8]
}

fn mac_str(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// flowd's CPU time (user + system) and resident memory.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu: Duration,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    // Nanoseconds on a CPU, summed over the threads alive now (`schedstat`'s first field).
    let ns: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    Usage {
        cpu: Duration::from_nanos(ns),
        rss_kib,
    }
}

/// How many of announcer `a`'s MACs flowd on `h` has as evpn stations behind `at`.
fn flowd_count(lab: &EvpnLab, h: usize, a: u8, at: &str) -> usize {
    let prefix = format!("02:bb:{a:02x}:");
    let loc = format!("vtep {at}");
    match lab.request(
        h,
        Request::Fdb {
            network: Some("tenant-a".into()),
        },
    ) {
        Ok(ResponseBody::Fdb(rows)) => rows
            .iter()
            .flat_map(|n| &n.stations)
            .filter(|s| s.mac.starts_with(&prefix) && s.origin == "evpn" && s.location == loc)
            .count(),
        _ => 0,
    }
}

/// Counts, from inside `ns`, announcer `a`'s MACs that zebra installed on a shadow vxlan
/// device (`bridge fdb show dev evvx-100 | grep 'dst .* self extern_learn'`, by netlink:
/// a dump takes a millisecond where spawning `bridge` takes tens).
fn kernel_counter(ns: &str, a: u8) -> impl FnMut() -> usize {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
    // SAFETY: a valid namespace descriptor; the calling thread only (a measuring thread).
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    let mut req = evpn_crate::netlink::Requester::open().expect("netlink");
    move || {
        evpn_crate::netlink::dump_fdb(&mut req)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.mac[..3] == [0x02, 0xbb, a] && e.dst.is_some() && e.is_ext_learned())
            .count()
    }
}

/// Polls `f` every 20 ms until it is true (`None` after `within`): the elapsed time.
fn time_until(t0: Instant, within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    while t0.elapsed() < within {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One measurement on the receiving hypervisor `h`.
struct Row {
    what: String,
    zebra: Option<Duration>,
    flowd: Option<Duration>,
    cpu: Duration,
    rss_kib: i64,
}

/// Runs `announce` and measures, on each receiving hypervisor, the times until the
/// kernel (zebra) and flowd have `want` of announcer `a`'s MACs (0: all withdrawn).
fn measure(
    lab: &EvpnLab,
    what: &str,
    a: u8,
    at: &str,
    receivers: &[usize],
    want: usize,
    announce: impl FnOnce(),
) -> Vec<Row> {
    let pids: Vec<u32> = receivers
        .iter()
        .map(|h| lab.flowd[h - 1].as_ref().map_or(0, std::process::Child::id))
        .collect();
    let before: Vec<Usage> = pids.iter().map(|p| usage(*p)).collect();
    let within = Duration::from_secs(120);
    let t0 = Instant::now();
    announce();
    let times: Vec<(Option<Duration>, Option<Duration>)> = std::thread::scope(|s| {
        let handles: Vec<_> = receivers
            .iter()
            .map(|&h| {
                let ns = lab.hvs[h - 1].name.clone();
                let z = s.spawn(move || {
                    let mut count = kernel_counter(&ns, a);
                    time_until(t0, within, || count() == want)
                });
                let f =
                    s.spawn(move || time_until(t0, within, || flowd_count(lab, h, a, at) == want));
                (z, f)
            })
            .collect();
        handles
            .into_iter()
            .map(|(z, f)| (z.join().ok().flatten(), f.join().ok().flatten()))
            .collect()
    });
    // Let the daemons settle (the revalidator's sweep) before reading their usage.
    std::thread::sleep(Duration::from_millis(600));
    receivers
        .iter()
        .zip(times)
        .zip(pids.iter().zip(before))
        .map(|((h, (zebra, flowd)), (pid, b))| {
            let u = usage(*pid);
            Row {
                what: format!("{what} -> flowd hv{h}"),
                zebra,
                flowd,
                cpu: u.cpu.saturating_sub(b.cpu),
                rss_kib: u.rss_kib as i64 - b.rss_kib as i64,
            }
        })
        .collect()
}

/// Sends one broadcast frame from each MAC out of `dev` in namespace `ns` (a VM).
fn send_from(ns: &Netns, dev: &str, macs: &[[u8; 6]]) {
    let ns = ns.name.clone();
    let dev = dev.to_string();
    let macs = macs.to_vec();
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
        // SAFETY: a valid namespace descriptor; this thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let name = std::ffi::CString::new(dev).expect("name");
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "no such device");
        // SAFETY: plain socket calls with valid arguments; the fd is closed below.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            for m in &macs {
                let mut frame = vec![0xffu8; 6];
                frame.extend_from_slice(m);
                frame.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
                frame.resize(60, 0);
                let sent = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(sent, 60, "send: {}", std::io::Error::last_os_error());
                // Paced: the upcall queue is bounded (4096) and a 2-core machine is busy.
                if m[5] == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            libc::close(fd);
        }
    })
    .join()
    .expect("sender");
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("(timeout)".into(), |d| {
        format!("{:.0}", d.as_secs_f64() * 1e3)
    })
}

/// The kernel VTEP (hv3) announces `n` MACs (static entries on its VM's bridge port),
/// then withdraws them.
fn kernel_announces(lab: &EvpnLab, n: usize) -> Vec<Row> {
    let batch = |verb: &str| -> String {
        (0..n)
            .map(|i| format!("fdb {verb} {} dev h3p0 master static\n", mac_str(mac(3, i))))
            .collect()
    };
    let file = lab.dir.join("macs.batch");
    let hv3 = lab.hvs[2].name.clone();
    let run_batch = |file: &Path| {
        let (ok, out) =
            Netns::borrowed(&hv3).try_exec(&format!("bridge -batch {}", file.display()));
        assert!(ok, "{out}");
    };
    let mut rows = Vec::new();
    std::fs::write(&file, batch("add")).expect("batch");
    rows.extend(measure(
        lab,
        "hv3 (kernel) announces",
        3,
        &vtep(3),
        &[1, 2],
        n,
        || run_batch(&file),
    ));
    std::fs::write(&file, batch("del")).expect("batch");
    rows.extend(measure(
        lab,
        "hv3 (kernel) withdraws",
        3,
        &vtep(3),
        &[1, 2],
        0,
        || run_batch(&file),
    ));
    rows
}

fn print(n: usize, load: &str, rows: &[Row]) {
    println!(
        "\nBGP EVPN convergence, {n} MACs (load average at start: {})",
        load.trim()
    );
    println!(
        "{:<48} {:>12} {:>12} {:>12} {:>14}",
        "announcer -> receiver", "zebra ms", "flowd ms", "flowd CPU us", "flowd RSS B"
    );
    println!(
        "{:<48} {:>12} {:>12} {:>12} {:>14}",
        "", "(bridge fdb)", "(stations)", "per MAC", "per MAC"
    );
    for r in rows {
        println!(
            "{:<48} {:>12} {:>12} {:>12.1} {:>14.0}",
            r.what,
            ms(r.zebra),
            ms(r.flowd),
            r.cpu.as_secs_f64() * 1e6 / n as f64,
            r.rss_kib as f64 * 1024.0 / n as f64
        );
    }
}

fn main() {
    if !can_netns() || !evpn::frr_available() {
        println!("evpn bench: skipped (needs root, iproute2 and FRR: apt-get install frr)");
        return;
    }
    let n = macs();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut lab = evpn::build("eb").expect("EVPN lab");
    let exe = Path::new(env!("CARGO_BIN_EXE_flowd"));
    let backend = if flowd::daemon::kernel_has_flower() {
        "tc"
    } else {
        "sim"
    };
    for h in 1..=2 {
        lab.start_flowd(h, exe, backend, 300_000, &[])
            .expect("flowd starts");
    }
    lab.wait_fabric(Duration::from_secs(90)).expect("fabric");
    let mut rows = kernel_announces(&lab, n);
    // flowd on hv1 learns N MACs from its VM and announces them.
    let sender = lab.flowd[0].as_ref().map_or(0, std::process::Child::id);
    let before = usage(sender);
    let list: Vec<[u8; 6]> = (0..n).map(|i| mac(1, i)).collect();
    rows.extend(measure(
        &lab,
        "hv1 (flowd) learns and announces",
        1,
        &vtep(1),
        &[2],
        n,
        || send_from(lab.vm(1, 0), "vf0", &list),
    ));
    let sent = usage(sender);
    let advertised = lab.advertised(1, 100).len();
    print(n, &load, &rows);
    println!(
        "sender flowd hv1: {advertised} static entries on evad-100; CPU {:.1} us per MAC learned and advertised, RSS {:+.0} B per MAC",
        sent.cpu.saturating_sub(before.cpu).as_secs_f64() * 1e6 / n as f64,
        (sent.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n as f64
    );
    println!(
        "(zebra ms: until the receiving hypervisor's kernel holds all of them on its shadow vxlan \
         device, as `bridge fdb show` counts; flowd ms: until `flowctl fdb` lists all of them \
         as evpn stations; CPU and RSS: the receiving flowd's, whole process)"
    );
    drop(lab);
}
