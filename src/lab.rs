//! `flowd lab`: a whole hypervisor in network namespaces, with flowd running on it.
//!
//! ```text
//!  fl-vf0: vf0 1.1.1.2 (VNI 16) --rep0-\                 /-- eth1 192.168.1.2 --\
//!  fl-vf1: vf1 2.2.2.2 (VNI 17) --rep1--[fl-hv: flowd]--up1 192.168.1.1          fl-remote: lo 10.0.0.2 (VTEP)
//!                                        vxlan_sys_4789 up2 192.168.2.1 -- eth2 192.168.2.2   vxlan16 1.1.1.3, vxlan17 2.2.2.3
//! ```
//! Each uplink has its own subnet (its own VTEP address) and the remote namespace runs
//! strict reverse-path filtering, so a packet that still carries uplink 1's source
//! address after the route moved to uplink 2 is dropped there: only a real migration
//! restores traffic.
//!
//! The lab: builds all that, starts the daemon in `fl-hv`, pings from both VFs, prints
//! `dump-flows` and `tunnels`, then replaces the route to the remote VTEP from uplink 1
//! to uplink 2 under a steady ping and reports the migration and the packets lost, then
//! lowers uplink 2's MTU to show an MTU refusal, and tears everything down (also on
//! Ctrl-C or failure). It uses tc flower where the kernel has it, else the simulated
//! eswitch, and says which; `--vm` runs the same inside a VM with Debian's kernel.

pub mod burst;
pub mod evpn;

use crate::control::client;
use crate::control::format;
use crate::control::proto::{FlowFilter, Request, Response, ResponseBody};
use crate::netns::{Netns, can_netns};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The lab's namespaces and daemon; dropping it tears everything down.
pub struct Lab {
    /// The daemon, once started.
    pub daemon: Option<Child>,
    /// Its files: config, log, control socket.
    pub dir: PathBuf,
    // Field order is drop order: the daemon goes first, then the namespaces.
    /// The VF namespaces (vf0 on VNI 16, vf1 on VNI 17).
    pub vfs: Vec<Netns>,
    /// The remote hypervisor.
    pub remote: Netns,
    /// The hypervisor flowd runs on.
    pub hv: Netns,
}

/// What a route change under a steady ping did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailoverReport {
    /// Echo requests sent.
    pub sent: u64,
    /// Replies received.
    pub received: u64,
    /// Longest gap between two replies (ms).
    pub longest_gap_ms: f64,
    /// From the route change request to the first VXLAN packet arriving over uplink 2
    /// with uplink 2's source address (ms, the kernel's receive timestamp at the remote
    /// end of uplink 2), if one did within the wait.
    pub first_on_up2_ms: Option<f64>,
    /// From the route change request to the first VXLAN packet arriving over uplink 2 at
    /// all (still with uplink 1's source): when the kernel's new route took effect.
    pub rerouted_ms: Option<f64>,
    /// How long the kernel took to acknowledge the route change (ms).
    pub route_ack_ms: f64,
}

impl FailoverReport {
    /// Requests without a reply.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// The failover time: from the new route taking effect (the first packet over
    /// uplink 2, still with uplink 1's source) to the first packet over uplink 2 with its
    /// own source, both stamped by the same kernel at the remote end of uplink 2.
    pub fn failover_ms(&self) -> Option<f64> {
        Some(self.first_on_up2_ms? - self.rerouted_ms?)
    }

    /// One line for an operator or a test log.
    pub fn summary(&self) -> String {
        let ms = |t: Option<f64>| t.map_or("(none)".to_string(), |t| format!("{t:.1} ms"));
        let failover = match self.failover_ms() {
            Some(t) if t <= 0.0 => {
                "before the next packet (none with uplink 1's source crossed uplink 2)".into()
            }
            t => ms(t),
        };
        format!(
            "sent {} received {} lost {}; longest gap between replies {:.1} ms; \
             route change acknowledged after {:.1} ms, in effect (first packet over uplink 2) \
             after {}, first packet with uplink 2's source after {}: failover {}",
            self.sent,
            self.received,
            self.lost(),
            self.longest_gap_ms,
            self.route_ack_ms,
            ms(self.rerouted_ms),
            ms(self.first_on_up2_ms),
            failover,
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.stop_daemon();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn step(title: &str) {
    println!("\n=== {title}");
}

fn check(r: Result<String, String>) -> Result<String, String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    r
}

/// Builds the lab's namespaces, named `<prefix>-hv`, `<prefix>-remote`, `<prefix>-vf0`,
/// `<prefix>-vf1` (a stale lab of the same prefix is replaced).
pub fn build(prefix: &str) -> Result<Lab, String> {
    let dir = std::env::temp_dir().join(format!("flowd-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let hv = Netns::named(&format!("{prefix}-hv"))?;
    let remote = Netns::named(&format!("{prefix}-remote"))?;
    let vfs = vec![
        Netns::named(&format!("{prefix}-vf0"))?,
        Netns::named(&format!("{prefix}-vf1"))?,
    ];
    let lab = Lab {
        daemon: None,
        dir,
        vfs,
        remote,
        hv,
    };
    let (hv, rm) = (&lab.hv, &lab.remote);
    for (i, (vf, ip)) in lab.vfs.iter().zip(["1.1.1.2", "2.2.2.2"]).enumerate() {
        check(hv.try_ip(&format!(
            "link add rep{i} type veth peer name vf{i} netns {}",
            vf.name
        )))?;
        check(vf.try_ip(&format!("addr add {ip}/24 dev vf{i}")))?;
        check(vf.try_ip(&format!(
            "link set vf{i} address e4:11:11:11:11:1{i} mtu 1450 up"
        )))?;
        check(hv.try_ip(&format!("link set rep{i} mtu 1450 up")))?;
        // Every device keeps its default offloads: the VF sends TSO super-frames and
        // partial checksums, as a VM does, and flowd's software path handles them.
    }
    for (n, sub) in [(1, "192.168.1"), (2, "192.168.2")] {
        check(hv.try_ip(&format!(
            "link add up{n} type veth peer name eth{n} netns {}",
            rm.name
        )))?;
        check(hv.try_ip(&format!("addr add {sub}.1/24 dev up{n}")))?;
        check(hv.try_ip(&format!("link set up{n} up")))?;
        check(rm.try_ip(&format!("addr add {sub}.2/24 dev eth{n}")))?;
        check(rm.try_ip(&format!("link set eth{n} up")))?;
    }
    check(rm.try_ip("addr add 10.0.0.2/32 dev lo"))?;
    for s in ["all", "default", "eth1", "eth2"] {
        let _ = rm.try_exec(&format!("sysctl -qw net.ipv4.conf.{s}.rp_filter=1"));
    }
    for (vni, ip, mac) in [
        (16, "1.1.1.3", "82:8a:29:ad:4e:ef"),
        (17, "2.2.2.3", "82:8a:29:ad:4e:f0"),
    ] {
        check(rm.try_ip(&format!(
            "link add vxlan{vni} type vxlan id {vni} local 10.0.0.2 dstport 4789"
        )))?;
        check(rm.try_ip(&format!("addr add {ip}/24 dev vxlan{vni}")))?;
        check(rm.try_ip(&format!("link set vxlan{vni} address {mac} mtu 1450 up")))?;
    }
    check(hv.try_ip("link add vxlan_sys_4789 type vxlan dstport 4789 external"))?;
    check(hv.try_ip("link set vxlan_sys_4789 up"))?;
    check(hv.try_ip("route add 10.0.0.2/32 via 192.168.1.2 dev up1"))?;
    // Resolve the underlay neighbours (the kernel does it for flowd's fibwatch too).
    let _ = hv.try_exec("ping -c 1 -W 1 192.168.1.2");
    let _ = hv.try_exec("ping -c 1 -W 1 192.168.2.2");
    Ok(lab)
}

/// The lab's flowd configuration.
pub fn config_text(backend: &str, socket: &Path) -> String {
    format!(
        r#"# Written by `flowd lab`.
[datapath]
max_idle_ms = 10000

[offload]
policy = "skip_hw"
backend = "{backend}"

[control]
socket = "{}"

[[port]]
name = "rep0"
role = "representor"
vf = 0
switch_id = "0x00aabbccddee"

[[port]]
name = "rep1"
role = "representor"
vf = 1
switch_id = "0x00aabbccddee"

[[port]]
name = "up1"
role = "uplink"
id = 11
switch_id = "0x00aabbccddee"

[[port]]
name = "up2"
role = "uplink"
id = 12
switch_id = "0x00aabbccddee"

[[port]]
name = "vxlan_sys_4789"
role = "tunnel"
id = 100

[[network]]
name = "tenant-a"
vni = 16
members = ["rep0"]
remote_vteps = ["10.0.0.2"]

[[network]]
name = "tenant-b"
vni = 17
members = ["rep1"]
remote_vteps = ["10.0.0.2"]
"#,
        socket.display()
    )
}

impl Lab {
    /// The daemon's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("flowd.sock")
    }

    /// Asks the daemon.
    pub fn request(&self, req: Request) -> Result<ResponseBody, String> {
        match client::request(&self.socket(), &req) {
            Ok(Response::Ok(body)) => Ok(body),
            Ok(Response::Err { message }) => Err(message),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Asks the daemon and prints the answer as flowctl does.
    pub fn show(&self, req: Request) -> Result<(), String> {
        let body = self.request(req)?;
        print!("{}", format::body(&body));
        Ok(())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("flowd.log")).unwrap_or_default()
    }

    /// Starts `flowd` (this executable) in the hypervisor namespace with the lab's
    /// configuration and waits until it answers on its control socket.
    pub fn start_daemon(&mut self, backend: &str) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        self.start_daemon_exe(&exe, backend)
    }

    /// The `flowd` executable tests run: `$FLOWD_EXE` if set (the VM suite points it at
    /// the release build, what operators run and what timings are quoted for), else
    /// `built` (the test's own `CARGO_BIN_EXE_flowd`).
    pub fn flowd_exe(built: &str) -> PathBuf {
        std::env::var_os("FLOWD_EXE").map_or_else(|| PathBuf::from(built), PathBuf::from)
    }

    /// [`Self::start_daemon`] with a given `flowd` executable (tests).
    pub fn start_daemon_exe(&mut self, exe: &Path, backend: &str) -> Result<(), String> {
        self.start_daemon_args(exe, backend, &[])
    }

    /// [`Self::start_daemon_exe`] with more command-line arguments (`--keep-offloads`).
    /// A restarted daemon appends to the same log.
    pub fn start_daemon_args(
        &mut self,
        exe: &Path,
        backend: &str,
        args: &[&str],
    ) -> Result<(), String> {
        let text = config_text(backend, &self.socket());
        self.start_daemon_config(exe, &text, args)
    }

    /// [`Self::start_daemon_args`] with a configuration of the caller's (tests: the lab's
    /// [`config_text`] with changes).
    pub fn start_daemon_config(
        &mut self,
        exe: &Path,
        config: &str,
        args: &[&str],
    ) -> Result<(), String> {
        let child = spawn_flowd(
            &self.hv,
            exe,
            args,
            (&self.dir.join("flowd.toml"), config),
            &self.dir.join("flowd.log"),
        )?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.request(Request::Show).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.daemon.as_mut().map(Child::try_wait) {
                return Err(format!("flowd exited ({st}):\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("flowd did not answer on its control socket within 30 s".into())
    }

    /// How many flows `dump-flows --offloaded` shows in tc (0 when the daemon does not
    /// answer).
    pub fn offloaded_tc_flows(&self) -> usize {
        match self.request(Request::dump_flows(FlowFilter::Offloaded)) {
            Ok(ResponseBody::Flows(rows)) => rows.iter().filter(|r| r.placement.dp == "tc").count(),
            _ => 0,
        }
    }

    /// Waits up to `within` until at least `n` flows are offloaded to tc; whether they
    /// are.
    pub fn wait_offloaded(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.offloaded_tc_flows() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon (SIGTERM: a clean shutdown) and waits for it, SIGKILL after
    /// 10 s; its exit status.
    pub fn stop_daemon(&mut self) -> Result<std::process::ExitStatus, String> {
        let mut d = self.daemon.take().ok_or("no daemon running")?;
        // SAFETY: sending SIGTERM to our own child.
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = d.try_wait() {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = d.kill();
        let _ = d.wait();
        Err("flowd did not stop within 10 s of SIGTERM (killed)".into())
    }

    /// Replaces the route to the remote VTEP from uplink 1 to uplink 2 while VF 0 pings
    /// the host behind it (`count` requests every `interval` seconds), and measures the
    /// loss and the time to the first packet over uplink 2 with its own source address.
    pub fn failover(&self, interval: &str, count: u32) -> Result<FailoverReport, String> {
        let vf = self.vfs[0].name.clone();
        let cmd = format!("ping -D -c {count} -i {interval} -W 1 1.1.1.3");
        let pinger = std::thread::spawn(move || Netns::borrowed(&vf).try_exec(&cmd));
        // VXLAN packets toward the remote VTEP arriving over uplink 2, stamped by the
        // remote's kernel: the first one shows when the route change took effect (it
        // still carries uplink 1's source and rp_filter drops it), the first with uplink
        // 2's own address shows that the migration took effect.
        let remote = self.remote.name.clone();
        let sniffer = std::thread::spawn(move || {
            Netns::borrowed(&remote).try_exec(
                "timeout 8 tcpdump -i eth2 -nn -tt -c 1000 -l \
                 'udp dst port 4789 and dst host 10.0.0.2' 2>/dev/null",
            )
        });
        std::thread::sleep(Duration::from_secs(1));
        let up2 = self.hv.ifindex("up2").ok_or("no up2 in the hypervisor")?;
        let wall = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        // The route is replaced over netlink from this process, between two readings of
        // the clock tcpdump stamps packets with: the change happened in that interval
        // (spawning `ip` under an emulator takes longer than the migration itself).
        let (t0, t1) = fibwatch::in_netns(&self.hv.path(), || {
            let mut nl = fibwatch::netlink::Requester::open()?;
            let t0 = wall();
            nl.replace_route(
                "10.0.0.2/32".parse().expect("prefix"),
                [192, 168, 2, 2].into(),
                up2,
            )?;
            Ok((t0, wall()))
        })
        .map_err(|e| format!("route replace 10.0.0.2/32 via 192.168.2.2 dev up2: {e}"))?;
        let (_, out) = pinger.join().map_err(|_| "ping thread panicked")?;
        let (_, sniffed) = sniffer.join().map_err(|_| "tcpdump thread panicked")?;
        let stamp = |l: &str| l.split_whitespace().next()?.parse::<f64>().ok();
        let rerouted = sniffed.lines().find_map(stamp).map(|t| (t - t0) * 1e3);
        let first = sniffed
            .lines()
            .filter(|l| l.contains(" IP 192.168.2.1."))
            .find_map(stamp)
            .map(|t| (t - t0) * 1e3);
        let (sent, received) = ping_counts(&out).unwrap_or((0, 0));
        Ok(FailoverReport {
            sent,
            received,
            longest_gap_ms: longest_gap_ms(&out).unwrap_or(0.0),
            first_on_up2_ms: first,
            rerouted_ms: rerouted,
            route_ack_ms: (t1 - t0) * 1e3,
        })
    }
}

/// `N packets transmitted, M received` of a ping's output.
pub fn ping_counts(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().ok());
    Some((nums.next()??, nums.next()??))
}

/// The `+N duplicates` of a ping's summary (0 when there were none).
pub fn ping_duplicates(out: &str) -> u64 {
    out.lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with("duplicates")))
        .and_then(|p| {
            p.trim_start_matches('+')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The longest gap between consecutive replies of `ping -D`, in milliseconds.
pub fn longest_gap_ms(out: &str) -> Option<f64> {
    let times: Vec<f64> = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    times
        .windows(2)
        .map(|w| (w[1] - w[0]) * 1000.0)
        .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))))
}

fn ping(vf: &Netns, dst: &str, count: u32) -> Result<(), String> {
    let (ok, out) = vf.try_exec(&format!("ping -c {count} -i 0.2 -W 2 {dst}"));
    let (tx, rx) = ping_counts(&out).unwrap_or((0, 0));
    println!("{} -> {dst}: {rx}/{tx} replies", vf.name);
    if ok {
        Ok(())
    } else {
        Err(format!("ping {dst} from {} failed:\n{out}", vf.name))
    }
}

fn failover(lab: &Lab) -> Result<(), String> {
    step("route change: 10.0.0.2 moves from up1 to up2 under a steady ping (100 packets/s)");
    let r = lab.failover("0.01", 500)?;
    println!("steady ping: {}", r.summary());
    lab.show(Request::Tunnels)?;
    lab.show(Request::dump_flows(FlowFilter::All))?;
    let _ = lab.show(Request::Stats);
    if r.received + 50 < r.sent {
        lab.diagnose();
        return Err("the stream did not recover after the route change".into());
    }
    Ok(())
}

impl Lab {
    /// Prints what an operator looks at when a tunnel stops: the remote VTEP's FDB,
    /// uplink counters, and the tc filters.
    pub fn diagnose(&self) {
        let show = |title: &str, out: (bool, String)| println!("--- {title}\n{}", out.1.trim_end());
        show(
            "remote: bridge fdb show dev vxlan16",
            self.remote.try_exec("bridge fdb show dev vxlan16"),
        );
        show("remote: ip -s link", self.remote.try_exec("ip -s -br link"));
        show("remote: rp_filter", self.remote.try_exec("sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.eth1.rp_filter net.ipv4.conf.eth2.rp_filter"));
        show("hv: ip -s -br link", self.hv.try_exec("ip -s -br link"));
        show("hv: rp_filter", self.hv.try_exec("sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.up1.rp_filter net.ipv4.conf.up2.rp_filter"));
        show(
            "hv: tc -s filter show dev vxlan_sys_4789 ingress",
            self.hv
                .try_exec("tc -s filter show dev vxlan_sys_4789 ingress"),
        );
        show(
            "hv: tc filter show dev rep0 ingress",
            self.hv.try_exec("tc filter show dev rep0 ingress"),
        );
        show(
            "hv: nstat",
            self.hv.try_exec(
                "nstat -az | grep -E 'UdpNoPorts|IPReversePathFilter|UdpInErrors|InNoRoutes'",
            ),
        );
    }
}

fn mtu_refusal(lab: &Lab) -> Result<(), String> {
    step("MTU refusal: up2's MTU drops to 1480 (< representor 1450 + VXLAN 50)");
    check(lab.hv.try_ip("link set up2 mtu 1480"))?;
    std::thread::sleep(Duration::from_millis(300));
    ping(&lab.vfs[0], "1.1.1.3", 3)?;
    std::thread::sleep(Duration::from_millis(300));
    lab.show(Request::dump_flows(FlowFilter::Software))
}

fn run(lab: &mut Lab) -> Result<(), String> {
    let flower = crate::daemon::kernel_has_flower();
    let backend = if flower { "tc" } else { "sim" };
    println!(
        "offload backend: {}",
        if flower {
            "tc flower (this kernel has cls_flower): filters carry the traffic"
        } else {
            "simulated eswitch (this kernel has no cls_flower): flowd's software datapath carries the traffic, the simulated eswitch holds the rules"
        }
    );
    step("starting flowd in fl-hv");
    lab.start_daemon(backend)?;
    lab.show(Request::Show)?;
    step("traffic: each VF pings a host behind the remote VTEP");
    ping(&lab.vfs[0], "1.1.1.3", 5)?;
    ping(&lab.vfs[1], "2.2.2.3", 5)?;
    std::thread::sleep(Duration::from_millis(300));
    step("flowctl dump-flows");
    lab.show(Request::dump_flows(FlowFilter::All))?;
    step("flowctl tunnels");
    lab.show(Request::Tunnels)?;
    failover(lab)?;
    mtu_refusal(lab)?;
    Ok(())
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn vm_run() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("../shared/lab/vm-run")];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().map(|a| a.join("../shared/lab/vm-run")));
    }
    candidates.into_iter().find(|p| p.exists())
}

/// Writes `config` to its file and starts flowd (`exe`, with `args`) in namespace `ns`
/// on it, its log appended to `log`.
pub(crate) fn spawn_flowd(
    ns: &Netns,
    exe: &Path,
    args: &[&str],
    (file, config): (&Path, &str),
    log: &Path,
) -> Result<Child, String> {
    std::fs::write(file, config).map_err(|e| e.to_string())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(exe)
        .args(args)
        .arg("--config")
        .arg(file)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start {}: {e}", exe.display()))
}

/// A lab the driver runs ([`drive`]): built, run, diagnosed on failure, held on
/// request, and torn down when dropped (also on failure or Ctrl-C).
pub(crate) trait Scenario {
    /// After a failure: prints what helps understand it.
    fn diagnose(&self);
    /// While held: how to reach it.
    fn hold_hint(&self) -> String;
}

impl Scenario for Lab {
    fn diagnose(&self) {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("--- last lines of the daemon's log:");
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }

    fn hold_hint(&self) -> String {
        format!("flowctl --socket {} ...", self.socket().display())
    }
}

/// Runs a lab: in the VM (`vm`: the same command, `args`, inside `../shared/lab/vm-run`),
/// or here after the checks (`needs`: what is missing, if anything), with Ctrl-C
/// tearing it down; `hold` keeps it running after success until Ctrl-C.
pub(crate) fn drive<L: Scenario>(
    name: &str,
    args: &str,
    (vm, hold): (bool, bool),
    needs: Option<String>,
    build: impl FnOnce() -> Result<L, String>,
    run: impl FnOnce(&mut L) -> Result<(), String>,
) -> ExitCode {
    if vm {
        let Some(runner) = vm_run() else {
            eprintln!("{name} --vm: ../shared/lab/vm-run not found");
            return ExitCode::from(1);
        };
        let exe = std::env::current_exe().unwrap_or_default();
        println!("booting Debian's kernel in a VM (25-60 s) and running `{name}` there");
        let st = Command::new(runner)
            .arg("--")
            .arg(format!("{} {args}", exe.display()))
            .status();
        return match st {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        };
    }
    let needs = needs.or_else(|| {
        (!can_netns()).then(|| "needs root and iproute2 (it builds network namespaces)".into())
    });
    if let Some(why) = needs {
        eprintln!("{name}: {why}");
        return ExitCode::from(1);
    }
    // SAFETY: installing an async-signal-safe handler that only stores an atomic.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    let mut lab = match build() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(1);
        }
    };
    let res = run(&mut lab);
    if let Err(e) = &res {
        eprintln!("\n{name} failed: {e}");
        lab.diagnose();
    }
    if hold && res.is_ok() {
        println!("\nlab running; {}; Ctrl-C to tear down", lab.hold_hint());
        while !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    step("tearing down");
    drop(lab);
    if res.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `flowd lab [--vm] [--hold]`.
pub fn main(vm: bool, hold: bool) -> ExitCode {
    drive(
        "flowd lab",
        "lab",
        (vm, hold),
        None,
        || {
            step("building the lab: 2 VFs on VNIs 16 and 17, 2 uplinks, a remote hypervisor");
            build("fl")
        },
        run,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_output() {
        let out = "[1700000000.100] 64 bytes from 1.1.1.3: icmp_seq=1\n\
                   [1700000000.110] 64 bytes from 1.1.1.3: icmp_seq=2\n\
                   [1700000000.160] 64 bytes from 1.1.1.3: icmp_seq=7\n\
                   --- 1.1.1.3 ping statistics ---\n\
                   7 packets transmitted, 3 received, 57% packet loss, time 60ms\n";
        assert_eq!(ping_counts(out), Some((7, 3)));
        let gap = longest_gap_ms(out).unwrap();
        assert!((gap - 50.0).abs() < 0.5, "{gap}");
        assert_eq!(ping_counts("nothing"), None);
        assert_eq!(ping_duplicates(out), 0);
        assert_eq!(
            ping_duplicates("10 packets transmitted, 10 received, +3 duplicates, 0% packet loss"),
            3
        );
        assert_eq!(longest_gap_ms(""), None);
    }

    #[test]
    fn lab_config_is_valid() {
        let cfg: crate::config::Config = config_text("sim", Path::new("/tmp/x.sock"))
            .parse()
            .expect("valid");
        assert_eq!(cfg.ports.len(), 5);
        assert_eq!(cfg.networks.len(), 2);
    }
}
