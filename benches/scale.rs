//! Scale through the real daemon (issue 15): flow setup rate for a burst of new flows,
//! memory per megaflow, and `dump-flows` at that size, on `flowd lab`'s topology
//! (namespaces `sc-*`; backend `sim`, policy `skip_hw`: every flow is also offloaded to
//! the simulated eswitch, sized for it with `[offload] sim_capacity`).
//!
//! Each new flow is a NORMAL + VXLAN encapsulation megaflow: vf0 sends frames to
//! distinct unknown unicast MACs (02:f0:..), which NORMAL floods to the network's remote
//! VTEP, one megaflow per destination (the mask covers the whole destination MAC). The
//! frames are written straight onto vf0 with AF_PACKET, as fast as the socket takes them.
//!
//! - **setup**: `FLOWD_SCALE_BURST` (default 100,000) new flows offered in one pass; the
//!   time from the first frame to 90% and 100% of them installed (polling `flowctl
//!   stats`), and how many upcalls were dropped (a dropped one waits for its flow's next
//!   packet). Goal: 100% installed from the one pass, at >= 100,000 flows/s. Beside
//!   it, the daemon's CPU per new flow over the same time (by thread): the wall-clock
//!   rate swings with whatever else this 2-core machine runs, the CPU cost much less.
//! - **memory**: then up to `FLOWD_SCALE_FLOWS` (default 1,000,000) flows, offered in
//!   passes of 2,000, each waiting until the count settles; RSS growth
//!   of the daemon divided by the flows it holds, once the simulated eswitch carries
//!   them. Goal: <= 1 KiB per flow.
//! - **ring and queue**: `FLOWD_SCALE_RING_KIB` (default 2048) and
//!   `FLOWD_SCALE_UPCALL_QUEUE` (default 4096), flowd's defaults, are rep0's
//!   `[[port]] ring_kib` and `[datapath] upcall_queue`: what rep0's receive ring, then the slow
//!   path's queue (a port may fill a quarter of it), hold of a burst while the datapath
//!   and the handler work through it.
//! - **upkeep**: the daemon's CPU over 10 s while it holds the filled table and no
//!   packet is offered (revalidator sweeps, counters pulled from the eswitch), with its
//!   busiest threads.
//! - **dump-flows** ([`dump`]): the time to answer `--summary` and `--limit 1000`; the
//!   whole table streamed through `flowctl` (text and `--json`): time, bytes, the
//!   daemon's RSS growth over the dump and flowctl's peak RSS (constant memory: the
//!   same as for `--limit 1000`); the old one-line answer up to 200,000 flows, beside.
//!
//! Needs root and iproute2. Bounded: every wait has a deadline; the namespaces and the
//! daemon go away on every exit path. Runs only under `cargo bench` (`--bench`).

use flowd::control::proto::{Request, ResponseBody, StatsBody};
use flowd::lab::{self, Lab};
use flowd::netns::can_netns;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "scale/dump.rs"]
mod dump;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Err once SIGINT or SIGTERM arrived: every loop stops and the lab is torn down.
fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

const GOAL_RATE: f64 = 100_000.0;
const GOAL_BYTES_PER_FLOW: f64 = 1024.0;
/// Flows offered per pass while filling the table: few enough that the receive ring and
/// the upcall queue take them (the fill measures memory, not bursts).
const PASS: u64 = 2_000;
/// Seconds the daemon's upkeep is measured for, with its table full and no traffic.
const IDLE_SECS: u64 = 10;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

fn stats(l: &Lab) -> StatsBody {
    match l.request(Request::Stats) {
        Ok(ResponseBody::Stats(s)) => *s,
        other => panic!("stats: {other:?}"),
    }
}

/// The daemon's resident set, in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (clock ticks, user + system) of each of the daemon's threads, summed by
/// thread name.
fn cpu_ticks(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by;
    };
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The name is in parentheses and may hold spaces: fields count from the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |x| x.1).to_string();
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state.
        let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        *by.entry(name).or_default() += ticks;
    }
    by
}

/// The daemon's CPU while it only holds its flows (no packet offered): upkeep that
/// grows with the table (revalidator sweeps, counters pulled from the eswitch). Share
/// of one core over `secs`, in all and for the busiest threads.
fn idle_cpu(pid: u32, secs: u64) -> (f64, Vec<(String, f64)>) {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let (all, threads) = cpu_spent(&before, &cpu_ticks(pid));
    let share = |t: f64| t / secs as f64;
    (
        share(all),
        threads.into_iter().map(|(n, t)| (n, share(t))).collect(),
    )
}

/// CPU-seconds spent between two [`cpu_ticks`] readings: in all, and by the three
/// busiest threads.
fn cpu_spent(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> (f64, Vec<(String, f64)>) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut threads: Vec<(String, f64)> = after
        .iter()
        .map(|(n, t)| {
            let spent = t.saturating_sub(*before.get(n).unwrap_or(&0));
            (n.clone(), spent as f64 / hz)
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let all = threads.iter().map(|x| x.1).sum();
    threads.truncate(3);
    (all, threads)
}

/// Threads and their shares, for a table row.
fn busiest(threads: &[(String, f64)], unit: impl Fn(f64) -> String) -> String {
    let parts: Vec<String> = threads
        .iter()
        .map(|(n, s)| format!("{n} {}", unit(*s)))
        .collect();
    parts.join(", ")
}

/// Sends frames `range` once from vf0 (inside namespace `ns`); the time it took.
fn offer(ns: &str, range: std::ops::Range<u64>) -> Result<Duration, String> {
    lab::burst::offer(ns, "vf0", 0xf0, range)
}

/// Waits until the daemon holds `want` flows (at most `secs`); the flow count and the
/// time of each sample.
fn wait_flows(l: &Lab, want: u64, secs: u64, t0: Instant) -> Vec<(Duration, u64)> {
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = (0, Instant::now());
    loop {
        let n = stats(l).flows;
        samples.push((t0.elapsed(), n));
        if n >= want || Instant::now() >= deadline || interrupted().is_err() {
            return samples;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            return samples; // no progress for 5 s
        }
        // `stats` walks every flow's placement: polling it much faster would itself
        // load the daemon at a million flows.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the flow count stops growing (300 ms without a new flow; at most 30 s).
fn settle(l: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = stats(l).flows;
    let mut still = 0;
    while still < 3 && Instant::now() < deadline && interrupted().is_ok() {
        std::thread::sleep(Duration::from_millis(100));
        let n = stats(l).flows;
        still = if n == last { still + 1 } else { 0 };
        last = n;
    }
}

/// When the count first reached `n`.
fn reached(samples: &[(Duration, u64)], n: u64) -> Option<Duration> {
    samples.iter().find(|(_, c)| *c >= n).map(|(t, _)| *t)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// What one new-flow burst did.
struct Burst {
    size: u64,
    offered_in: Duration,
    installed: u64,
    t90: Option<Duration>,
    t100: Option<Duration>,
    upcall_drops: u64,
    ring_drops: u64,
    /// The daemon's CPU-seconds from the first frame to 100% installed, in all and by
    /// its busiest threads: the cost of a new flow, whatever else the machine runs.
    cpu: (f64, Vec<(String, f64)>),
}

/// What the table held once filled, and what it cost.
struct Filled {
    end: StatsBody,
    resent: bool,
    rss: (u64, u64),
    per_flow: f64,
}

/// Starts the daemon with a flow table, an offload queue and a simulated eswitch sized
/// for `flows`; returns its pid.
fn start(l: &mut Lab, flows: u64, (ring_kib, upcall_queue): (u64, u64)) -> Result<u32, String> {
    let exe = Lab::flowd_exe(env!("CARGO_BIN_EXE_flowd"));
    let cap = flows + 1000;
    let cfg = lab::config_text("sim", &l.socket())
        .replace(
            "max_idle_ms = 10000",
            &format!(
                "max_idle_ms = 3600000\nflow_limit = {}\nupcall_queue = {upcall_queue}\n\
                 # one port may hold a quarter of the table\n",
                (4 * cap).min(16_777_216)
            ),
        )
        .replace(
            "backend = \"sim\"",
            &format!("backend = \"sim\"\nsim_capacity = {}", 2 * cap),
        )
        // The burst arrives on rep0: its ring only.
        .replace(
            "name = \"rep0\"",
            &format!("name = \"rep0\"\nring_kib = {ring_kib}"),
        );
    l.start_daemon_config(&exe, &cfg, &[])?;
    let pid = l.daemon.as_ref().map(|d| d.id()).ok_or("no daemon")?;
    let (ok, out) = l.vfs[0].try_exec("ping -c 3 -i 0.2 -W 2 1.1.1.3");
    if !ok {
        return Err(format!("vf0 cannot reach 1.1.1.3: {out}"));
    }
    Ok(pid)
}

/// Setup: one pass of `size` new flows, and how they were installed.
fn burst(l: &mut Lab, pid: u32, base: &StatsBody, size: u64) -> Result<Burst, String> {
    let ticks = cpu_ticks(pid);
    let t0 = Instant::now();
    let offered_in = offer(&l.vfs[0].name, 0..size)?;
    let samples = wait_flows(l, base.flows + size, 60, t0);
    let cpu = cpu_spent(&ticks, &cpu_ticks(pid));
    let after = stats(l);
    let rep0 = |s: &StatsBody, k: &str| {
        s.ports
            .get("rep0")
            .and_then(|p| p.get(k))
            .copied()
            .unwrap_or(0)
    };
    Ok(Burst {
        size,
        offered_in,
        installed: after.flows - base.flows,
        t90: reached(&samples, base.flows + size * 9 / 10),
        t100: reached(&samples, base.flows + size),
        upcall_drops: after.upcall_drops - base.upcall_drops,
        ring_drops: rep0(&after, "kernel_drops") - rep0(base, "kernel_drops"),
        cpu,
    })
}

/// Offers flows `0..flows`, a pass at a time, each pass waiting until the count
/// settles (no flow added for 300 ms).
fn offer_all(l: &mut Lab, flows: u64) -> Result<(), String> {
    let mut next = 0;
    while next < flows {
        interrupted()?;
        let end = (next + PASS).min(flows);
        offer(&l.vfs[0].name, next..end)?;
        settle(l);
        next = end;
    }
    Ok(())
}

/// Memory: fills the table up to `flows` (the burst's missing flows get their second
/// packet, then the rest), waits until the simulated eswitch holds them, and measures
/// RSS growth per flow.
fn fill(l: &mut Lab, pid: u32, base: &StatsBody, rss0: u64, flows: u64) -> Result<Filled, String> {
    offer_all(l, flows)?;
    // Whatever is still missing (an upcall or a ring frame dropped) gets one more packet.
    let resent = stats(l).flows < base.flows + flows;
    if resent {
        offer_all(l, flows)?;
    }
    let held = stats(l).flows;
    // Offloaded too: the simulated eswitch carries them (its state is the daemon's).
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats(l).flows_offloaded + 1000 < held && Instant::now() < deadline {
        interrupted()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let end = stats(l);
    let rss1 = rss(pid);
    let grown = end.flows.saturating_sub(base.flows).max(1);
    Ok(Filled {
        per_flow: rss1.saturating_sub(rss0) as f64 / grown as f64,
        end,
        resent,
        rss: (rss0, rss1),
    })
}

/// One row of the table: the figure, what was measured, the goal and, where there is a
/// goal, whether it was met.
fn row(figure: &str, measured: impl std::fmt::Display, goal: &str, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "  met",
        Some(false) => "  NOT met",
        None => "",
    };
    println!(
        "{figure:<44} {:>14} {goal:>14}{verdict}",
        measured.to_string()
    );
}

fn secs(t: Duration) -> String {
    format!("{:.3} s", t.as_secs_f64())
}

fn print_burst(b: &Burst) {
    let rate = b.t100.map(|t| b.size as f64 / t.as_secs_f64());
    row(
        &format!("burst of {}: offered in", b.size),
        secs(b.offered_in),
        "-",
        None,
    );
    row(
        "burst: installed from one pass",
        format!("{} of {}", b.installed, b.size),
        "100%",
        Some(b.installed >= b.size),
    );
    row(
        "burst: 90% installed after",
        b.t90.map_or("-".into(), secs),
        "-",
        None,
    );
    row(
        "burst: 100% installed after (flows/s)",
        match (b.t100, rate) {
            (Some(t), Some(r)) => format!("{} ({r:.0}/s)", secs(t)),
            _ => "never".into(),
        },
        &format!(">= {GOAL_RATE:.0}/s"),
        Some(rate.is_some_and(|r| r >= GOAL_RATE)),
    );
    row(
        "burst: upcalls dropped",
        b.upcall_drops,
        "0",
        Some(b.upcall_drops == 0),
    );
    row(
        "burst: dropped at rep0's receive ring",
        b.ring_drops,
        "0",
        Some(b.ring_drops == 0),
    );
    let per_flow = b.cpu.0 / b.installed.max(1) as f64;
    row(
        "burst: daemon CPU per new flow (flows/CPU-s)",
        format!(
            "{:.1} us ({:.0}/s)",
            per_flow * 1e6,
            1.0 / per_flow.max(1e-9)
        ),
        "-",
        None,
    );
    println!(
        "  busiest threads: {}",
        busiest(&b.cpu.1, |s| format!("{s:.2} s"))
    );
}

fn print_filled(f: &Filled, flows: u64) {
    row(
        "flows held (offloaded to the sim eswitch)",
        format!("{} ({})", f.end.flows, f.end.flows_offloaded),
        &flows.to_string(),
        None,
    );
    row(
        "flows needing a second round of packets",
        if f.resent { "some" } else { "none" },
        "none",
        None,
    );
    row(
        "RSS before / after",
        format!("{:.0}/{:.0} MiB", mib(f.rss.0), mib(f.rss.1)),
        "-",
        None,
    );
    row(
        "RSS growth per flow",
        format!("{:.0} B", f.per_flow),
        &format!("<= {GOAL_BYTES_PER_FLOW:.0} B"),
        Some(f.per_flow <= GOAL_BYTES_PER_FLOW),
    );
}

fn run(l: &mut Lab, flows: u64, size: u64, sizes: (u64, u64)) -> Result<(), String> {
    let pid = start(l, flows, sizes)?;
    let base = stats(l);
    let rss0 = rss(pid);
    println!(
        "baseline: {} flows, RSS {:.1} MiB; offering {size} new flows in one pass",
        base.flows,
        mib(rss0)
    );
    let b = burst(l, pid, &base, size)?;
    let f = fill(l, pid, &base, rss0, flows)?;
    let idle = idle_cpu(pid, IDLE_SECS);
    let d = dump::dumps(l, pid, f.end.flows)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nscale: flowd through the daemon, NORMAL + VXLAN encap, backend sim (skip_hw)");
    println!("load average at end: {}", load.trim());
    println!(
        "{:<44} {:>14} {:>14}  verdict",
        "figure", "measured", "goal"
    );
    print_burst(&b);
    print_filled(&f, flows);
    row(
        &format!("CPU holding {} flows, no traffic", f.end.flows),
        format!("{:.0}% of a core", idle.0 * 100.0),
        "-",
        None,
    );
    println!(
        "  busiest threads: {}",
        busiest(&idle.1, |c| format!("{:.0}%", c * 100.0))
    );
    dump::print(&d, row);
    Ok(())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: runs under `cargo bench --bench scale` only (netns, minutes)");
        return;
    }
    if !can_netns() {
        println!("scale: skipped (needs root and iproute2)");
        return;
    }
    // SAFETY: installing an async-signal-safe handler that only stores an atomic.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    let flows = env_u64("FLOWD_SCALE_FLOWS", 1_000_000).min(4_000_000);
    let burst = env_u64("FLOWD_SCALE_BURST", 100_000).min(flows);
    let ring_kib = env_u64("FLOWD_SCALE_RING_KIB", 2048).clamp(128, 256 << 10);
    let upcall_queue = env_u64("FLOWD_SCALE_UPCALL_QUEUE", 4096).clamp(1, 1 << 20);
    println!(
        "scale: {flows} flows (FLOWD_SCALE_FLOWS), burst {burst} (FLOWD_SCALE_BURST), \
         ring_kib {ring_kib} (FLOWD_SCALE_RING_KIB), upcall_queue {upcall_queue} \
         (FLOWD_SCALE_UPCALL_QUEUE); load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut l = match lab::build("sc") {
        Ok(l) => l,
        Err(e) => {
            println!("scale: cannot build the lab: {e}");
            std::process::exit(1);
        }
    };
    let r = run(&mut l, flows, burst, (ring_kib, upcall_queue));
    drop(l);
    if let Err(e) = r {
        println!("scale: {e}");
        std::process::exit(1);
    }
}
