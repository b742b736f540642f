//! TCP throughput and flood-ping latency, VF -> remote over VXLAN, in the seed's table
//! (issue 13): `iperf3/1500/2`, `iperf3/9000/2`, `iperf3/9000/6` (underlay MTU / parallel
//! streams), each VF -> remote and remote -> VF (`-R`), and `ping -fc 10000`, side by side
//! for three switches on the same topology, `flowd lab`'s (`flowd::lab::build`, namespaces
//! `tb-hv`, `tb-remote`, `tb-vf0`, `tb-vf1`):
//!
//! - **flowd**: the software path (`[offload] policy = "off"`, backend `sim`);
//! - **kernel**: the limit, the kernel's own path: a Linux bridge with `rep0` and a kernel
//!   vxlan device (VNI 16, remote 10.0.0.2, dstport 4789) in the hypervisor namespace;
//! - **OVS**: Open vSwitch's userspace datapath with `userspace-tso-enable=true`, as case C
//!   of `../shared/peers/t6_lib.sh` (`br0` netdev with `rep0` and a vxlan port, `br-phy`
//!   with the uplink and the VTEP address, `tnl/neigh/set`), started by hand with a private
//!   run directory (never the system service). Skipped with a message when
//!   `ovs-vswitchd` is missing (`scripts/bench.sh` installs `openvswitch-switch`);
//! - **flowd tc skip_hw**: flowd with real tc flower (backend `tc`, the lab's
//!   `policy = "skip_hw"`): after each connection's first packets, the kernel's tc
//!   carries it. Only where the kernel has cls_flower, which this development host's
//!   lacks: the VM suite measures it (`FLOWD_VM_BENCH=1`, see tests/vm/run-all.sh), under
//!   qemu's software emulation, so only its ratio to the other columns measured in the
//!   same VM means anything.
//!
//! Every device keeps its default offloads (TSO, GSO, GRO, checksum). The VF's MTU is the
//! underlay's less 50. Each figure is the median of `FLOWD_BENCH_REPS` (default 3) runs of
//! `iperf3 -t 4 -J` (`end.sum_received`). `FLOWD_BENCH_COLUMNS=flowd,kernel,ovs` picks
//! columns. The daemon is the `flowd` cargo builds next to this bench (`FLOWD_EXE`
//! overrides it), with one datapath thread per CPU (`[datapath] threads`, as an operator
//! sizes them to the host; `FLOWD_BENCH_THREADS=N` sets N), and `FLOWD_TUNNEL_GSO`
//! (`off`, `inline`) reaches it as it is.
//!
//! Needs root, iproute2, iperf3 and ping. Bounded: every command runs under `timeout`,
//! every wait has a deadline. Namespaces, daemons and iperf3 servers go away on every exit
//! path (error, panic, Ctrl-C). It runs only under `cargo bench` (the `--bench` argument),
//! never as part of `cargo test`.

use flowd::lab::{self, Lab};
use flowd::netns::{Netns, can_netns};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Namespace prefix (`tb-hv`, ...).
const PREFIX: &str = "tb";
/// The host behind the remote's vxlan16 (VNI 16), and the remote VTEP.
const REMOTE_IP: &str = "1.1.1.3";
const REMOTE_VTEP: &str = "10.0.0.2";
const LOCAL_VTEP: &str = "192.168.1.1";
const IPERF_SECS: u32 = 4;
const PINGS: u32 = 10_000;
/// The iperf rows: underlay MTU and parallel streams.
const ROWS: [(u32, u32); 3] = [(1500, 2), (9000, 2), (9000, 6)];
/// The goal at 9000: flowd >= 2x OVS and >= 70% of the kernel.
const GOAL_VS_OVS: f64 = 2.0;
const GOAL_VS_KERNEL: f64 = 0.7;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Switch {
    Flowd,
    Kernel,
    Ovs,
    /// flowd with real tc flower, `skip_hw` (where the kernel has cls_flower: the VM).
    FlowdTc,
}

impl Switch {
    const ALL: [Switch; 4] = [Switch::Flowd, Switch::Kernel, Switch::Ovs, Switch::FlowdTc];

    fn key(self) -> &'static str {
        match self {
            Switch::Flowd => "flowd",
            Switch::Kernel => "kernel",
            Switch::Ovs => "ovs",
            Switch::FlowdTc => "flowd-tc",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Switch::Flowd => "flowd sw (off)",
            Switch::Kernel => "kernel br+vxlan",
            Switch::Ovs => "OVS netdev+TSO",
            Switch::FlowdTc => "flowd tc skip_hw",
        }
    }
}

/// One column's figures: Gbit/s per row and direction (`[VF -> remote, remote -> VF]`),
/// flood-ping mean and mdev (ms), and what went wrong.
struct Column {
    sw: Switch,
    gbps: [[Option<f64>; 2]; 3],
    ping: Option<(f64, f64)>,
    notes: Vec<String>,
}

fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// A child process killed (and reaped) on drop: an iperf3 server.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` (through `sh -c`) in `ns` under `timeout`; exit success, stdout, stderr.
fn run_in(ns: &Netns, secs: u32, cmd: &str) -> (bool, String, String) {
    match Command::new("ip")
        .args(["netns", "exec", &ns.name, "timeout", &secs.to_string()])
        .args(["sh", "-c", cmd])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

fn must(ns: &Netns, cmd: &str) -> Result<String, String> {
    interrupted()?;
    match run_in(ns, 60, cmd) {
        (true, out, _) => Ok(out),
        (false, out, err) => Err(format!("[{}] `{cmd}` failed: {out}{err}", ns.name)),
    }
}

/// Sets the underlay MTU on the uplinks and the remote's ends, and MTU - 50 on the VFs,
/// representors and the remote's vxlan devices.
fn set_mtu(lab: &Lab, mtu: u32) -> Result<(), String> {
    let inner = mtu - 50;
    for n in [1, 2] {
        must(&lab.hv, &format!("ip link set up{n} mtu {mtu}"))?;
        must(&lab.remote, &format!("ip link set eth{n} mtu {mtu}"))?;
    }
    for (i, vf) in lab.vfs.iter().enumerate() {
        must(vf, &format!("ip link set vf{i} mtu {inner}"))?;
        must(&lab.hv, &format!("ip link set rep{i} mtu {inner}"))?;
    }
    for vni in [16, 17] {
        must(&lab.remote, &format!("ip link set vxlan{vni} mtu {inner}"))?;
    }
    Ok(())
}

/// flowd's software path: the lab's configuration with `policy = "off"`.
/// flowd with real tc flower: the lab's configuration (`policy = "skip_hw"`), backend
/// `tc`.
fn start_flowd_tc(lab: &mut Lab, exe: &std::path::Path) -> Result<(), String> {
    let text = lab::config_text("tc", &lab.socket());
    lab.start_daemon_config(exe, &text, &[])
}

fn start_flowd(lab: &mut Lab, exe: &std::path::Path) -> Result<(), String> {
    let text = lab::config_text("sim", &lab.socket()).replace(
        "policy = \"skip_hw\"",
        "policy = \"off\"\n# the software path only (benches/tcp.rs)",
    );
    let text = text.replace(
        "[datapath]\n",
        &format!("[datapath]\nthreads = {}\n", datapath_threads()),
    );
    if !text.contains("policy = \"off\"") {
        return Err("the lab's configuration has no `policy = \"skip_hw\"` to replace".into());
    }
    lab.start_daemon_config(exe, &text, &[])
}

/// flowd's `[datapath] threads`: one per CPU (at most 64), as an operator sizes them to
/// the host (docs/operations.md, *Threads*), or `FLOWD_BENCH_THREADS`.
fn datapath_threads() -> usize {
    std::env::var("FLOWD_BENCH_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(64)
        })
}

/// The kernel's own path: bridge `brk` with `rep0` and vxlan device `vxk` (VNI 16).
fn start_kernel(lab: &Lab, mtu: u32) -> Result<(), String> {
    let hv = &lab.hv;
    // The external device would take every VXLAN packet on port 4789.
    must(hv, "ip link del vxlan_sys_4789")?;
    must(
        hv,
        &format!(
            "ip link add vxk type vxlan id 16 local {LOCAL_VTEP} remote {REMOTE_VTEP} dstport 4789"
        ),
    )?;
    must(hv, &format!("ip link set vxk mtu {} up", mtu - 50))?;
    must(hv, "ip link add brk type bridge")?;
    must(hv, "ip link set rep0 master brk")?;
    must(hv, "ip link set vxk master brk")?;
    must(hv, "ip link set brk up")?;
    Ok(())
}

/// A hand-started Open vSwitch (ovsdb-server and ovs-vswitchd in the hypervisor
/// namespace, private run directory); stopped on drop.
struct Ovs {
    dir: PathBuf,
    hv: Netns,
}

impl Ovs {
    fn available() -> bool {
        ["ovs-vswitchd", "ovsdb-server", "ovs-vsctl"]
            .iter()
            .all(|b| {
                Command::new(b)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
    }

    /// `cmd` with the private run directory in OVS's environment.
    fn sh(&self, cmd: &str) -> Result<String, String> {
        interrupted()?;
        match self.sh_any(cmd) {
            (true, out, _) => Ok(out),
            (false, out, err) => Err(format!("`{cmd}` failed: {out}{err}")),
        }
    }

    /// [`Self::sh`], also after an interruption (teardown).
    fn sh_any(&self, cmd: &str) -> (bool, String, String) {
        let d = self.dir.display();
        let env = format!("OVS_RUNDIR={d} OVS_LOGDIR={d} OVS_DBDIR={d} OVS_SYSCONFDIR={d}");
        run_in(&self.hv, 60, &format!("export {env}; {cmd}"))
    }

    /// Starts the daemons (as `ovs_start_netdev` in `../shared/peers/t5_lib.sh`), with
    /// `userspace-tso-enable` set before ovs-vswitchd reads its configuration.
    fn start(hv: &Netns) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("tb-ovs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ovs = Ovs {
            dir,
            hv: Netns::borrowed(&hv.name),
        };
        let d = ovs.dir.display().to_string();
        ovs.sh(&format!(
            "ovsdb-tool create {d}/conf.db /usr/share/openvswitch/vswitch.ovsschema"
        ))?;
        ovs.sh(&format!(
            "ovsdb-server {d}/conf.db --remote=punix:{d}/db.sock --pidfile={d}/ovsdb-server.pid \
             --detach --log-file={d}/ovsdb-server.log"
        ))?;
        ovs.sh("ovs-vsctl --timeout=20 --no-wait init")?;
        ovs.sh("ovs-vsctl --timeout=20 --no-wait set Open_vSwitch . \
             other_config:userspace-tso-enable=true")?;
        ovs.sh(&format!(
            "ovs-vswitchd unix:{d}/db.sock --pidfile={d}/ovs-vswitchd.pid --detach \
             --log-file={d}/ovs-vswitchd.log -vconsole:off"
        ))?;
        Ok(ovs)
    }

    /// Case C of `../shared/peers/t6_lib.sh` on the lab: `br0` (netdev) with `rep0` and a
    /// vxlan port (key 16, remote 10.0.0.2), `br-phy` (netdev) with `up1` and the VTEP
    /// address, a route to the remote VTEP through it, the next hop's MAC by
    /// `tnl/neigh/set`.
    fn case_c(&self, lab: &Lab, mtu: u32) -> Result<(), String> {
        let hv = &lab.hv;
        must(hv, "ip link del vxlan_sys_4789")?;
        must(hv, "ip addr flush dev up1")?;
        let v = "ovs-vsctl --timeout=30";
        self.sh(&format!(
            "{v} add-br br0 -- set bridge br0 datapath_type=netdev"
        ))?;
        self.sh(&format!(
            "{v} add-port br0 rep0 -- set interface rep0 ofport_request=1"
        ))?;
        self.sh(&format!(
            "{v} add-br br-phy -- set bridge br-phy datapath_type=netdev"
        ))?;
        self.sh(&format!(
            "{v} add-port br-phy up1 -- set interface up1 ofport_request=2"
        ))?;
        self.sh(&format!("{v} set interface br-phy mtu_request={mtu}"))?;
        must(hv, "ip link set br-phy up")?;
        must(hv, &format!("ip addr add {LOCAL_VTEP}/24 dev br-phy"))?;
        must(
            hv,
            &format!("ip route replace {REMOTE_VTEP}/32 via 192.168.1.2 dev br-phy"),
        )?;
        self.sh(&format!(
            "{v} add-port br0 vxlan0 -- set interface vxlan0 type=vxlan ofport_request=3 \
             options:remote_ip={REMOTE_VTEP} options:local_ip={LOCAL_VTEP} options:key=16"
        ))?;
        let mac = lab.remote.mac("eth1");
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        self.sh(&format!(
            "ovs-appctl tnl/neigh/set br-phy 192.168.1.2 {mac}"
        ))?;
        for flow in [
            "del-flows br0",
            "add-flow br0 priority=10,in_port=1,actions=output:3",
            "add-flow br0 priority=10,in_port=3,actions=output:1",
            "add-flow br0 priority=0,actions=drop",
            "del-flows br-phy",
            "add-flow br-phy priority=10,in_port=LOCAL,actions=output:up1",
            "add-flow br-phy priority=0,actions=NORMAL",
        ] {
            self.sh(&format!("ovs-ofctl {flow}"))?;
        }
        // The remote learned up1's MAC for 192.168.1.1; the VTEP is br-phy's now.
        must(&lab.remote, "ip neigh flush dev eth1")?;
        Ok(())
    }

    /// OVS 3.1's netdev datapath with userspace TSO carries no VXLAN traffic at default
    /// offloads: it drops what it receives from the representor with a partial checksum
    /// (`Tunneling packets with HW offload flags is not supported`) and fails to pop VXLAN
    /// whose outer UDP checksum is partial (`datapath_drop_tunnel_pop_error`). Records
    /// why, then turns transmit checksum offload (hence TSO) off on vf0 and on the
    /// remote's eth1, the least that makes it work; the column then says so.
    fn reduce_offloads(
        &self,
        lab: &Lab,
        mtu: u32,
        why: &str,
        notes: &mut Vec<String>,
    ) -> Result<(), String> {
        let drops = self
            .sh("ovs-appctl coverage/show")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("drop"))
            .filter_map(|l| {
                let total = l.rsplit("total: ").next()?.trim();
                Some(format!("{} {total}", l.split_whitespace().next()?))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let log = std::fs::read_to_string(self.dir.join("ovs-vswitchd.log")).unwrap_or_default();
        let warn = log
            .lines()
            .rev()
            .find(|l| l.contains("|WARN|") && !l.contains("Dropped"))
            .and_then(|l| l.splitn(5, '|').nth(4))
            .map_or(String::new(), |w| format!("; log: {w}"));
        notes.push(format!(
            "mtu {mtu}: at default offloads {why} (OVS drops: {drops}{warn}); \
             measured with `ethtool -K vf0 tx off` (VF) and `ethtool -K eth1 tx off` (remote)"
        ));
        must(&lab.vfs[0], "ethtool -K vf0 tx off")?;
        must(&lab.remote, "ethtool -K eth1 tx off")?;
        Ok(())
    }

    fn pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        let _ = self.sh_any("ovs-appctl --timeout=5 -t ovs-vswitchd exit --cleanup");
        let _ = self.sh_any("ovs-appctl --timeout=5 -t ovsdb-server exit");
        for name in ["ovs-vswitchd", "ovsdb-server"] {
            if let Some(pid) = self.pid(name) {
                let deadline = Instant::now() + Duration::from_secs(3);
                // SAFETY: signal 0 and SIGKILL to the daemons this bench started (their
                // pid files are in its private run directory).
                while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Pings the remote host until it answers (bounded): ARP, learning, flow setup.
fn wait_path(lab: &Lab) -> Result<(), String> {
    for _ in 0..10 {
        interrupted()?;
        if run_in(
            &lab.vfs[0],
            10,
            &format!("ping -c 3 -i 0.2 -W 2 {REMOTE_IP}"),
        )
        .0
        {
            return Ok(());
        }
    }
    Err(format!("vf0 cannot reach {REMOTE_IP}"))
}

/// One `iperf3 -c` run from vf0 (`reverse`: the remote sends): Gbit/s received.
fn iperf(lab: &Lab, streams: u32, reverse: bool) -> Result<f64, String> {
    interrupted()?;
    let server = Command::new("ip")
        .args(["netns", "exec", &lab.remote.name])
        .args(["iperf3", "-s", "-1", "-B", REMOTE_IP])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("iperf3 -s: {e}"))?;
    let _server = KillOnDrop(server);
    std::thread::sleep(Duration::from_millis(300));
    let cmd = format!(
        "iperf3 -c {REMOTE_IP} -t {IPERF_SECS} -P {streams} -J{}",
        if reverse { " -R" } else { "" }
    );
    let (_, out, err) = run_in(&lab.vfs[0], IPERF_SECS + 20, &cmd);
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("`{cmd}`: {e}: {out}{err}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("`{cmd}`: {e}"));
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| format!("`{cmd}`: no end.sum_received.bits_per_second"))
}

/// `ping -fc 10000`: mean and mdev (ms); loss goes to the notes.
fn flood_ping(lab: &Lab, notes: &mut Vec<String>) -> Result<(f64, f64), String> {
    interrupted()?;
    let (_, out, err) = run_in(
        &lab.vfs[0],
        120,
        &format!("ping -q -f -c {PINGS} -W 1 {REMOTE_IP}"),
    );
    let rtt = out
        .lines()
        .find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = "))
        .ok_or_else(|| format!("ping -f: no rtt line: {out}{err}"))?;
    let f: Vec<f64> = rtt
        .trim_end_matches(" ms")
        .split('/')
        .filter_map(|x| x.parse().ok())
        .collect();
    if let Some((sent, received)) = lab::ping_counts(&out)
        && received < sent
    {
        notes.push(format!("ping -f lost {} of {sent}", sent - received));
    }
    match f[..] {
        [_, avg, _, mdev] => Ok((avg, mdev)),
        _ => Err(format!("ping -f: cannot parse `{rtt}`")),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Builds the lab at `mtu`, starts `sw` on it and measures the rows of that MTU (and
/// the flood ping at 1500) into `col`.
fn measure_mtu(
    col: &mut Column,
    mtu: u32,
    exe: &std::path::Path,
    reps: usize,
) -> Result<(), String> {
    interrupted()?;
    let mut lab = lab::build(PREFIX)?;
    set_mtu(&lab, mtu)?;
    // Declared after the lab: dropped (stopped) before its namespaces go.
    let mut _ovs = None;
    match col.sw {
        Switch::Flowd => start_flowd(&mut lab, exe)?,
        Switch::FlowdTc => start_flowd_tc(&mut lab, exe)?,
        Switch::Kernel => start_kernel(&lab, mtu)?,
        Switch::Ovs => {
            let ovs = Ovs::start(&lab.hv)?;
            let ovs = _ovs.insert(ovs);
            ovs.case_c(&lab, mtu)?;
            if let Err(e) = wait_path(&lab) {
                interrupted()?;
                ovs.reduce_offloads(&lab, mtu, &e, &mut col.notes)?;
            }
        }
    }
    wait_path(&lab)?;
    for (row, &(m, streams)) in ROWS.iter().enumerate() {
        if m != mtu {
            continue;
        }
        for (dir, reverse) in [false, true].into_iter().enumerate() {
            let mut runs = Vec::new();
            for _ in 0..reps {
                match iperf(&lab, streams, reverse) {
                    Ok(g) => runs.push(g),
                    Err(e) => {
                        interrupted()?;
                        col.notes.push(e);
                    }
                }
            }
            println!(
                "  {:<6} iperf3/{m}/{streams} {:<12} {}",
                col.sw.key(),
                if reverse {
                    "remote -> VF"
                } else {
                    "VF -> remote"
                },
                runs.iter()
                    .map(|g| format!("{g:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            col.gbps[row][dir] = median(runs);
        }
    }
    if mtu == 1500 {
        match flood_ping(&lab, &mut col.notes) {
            Ok(p) => col.ping = Some(p),
            Err(e) => {
                interrupted()?;
                col.notes.push(e);
            }
        }
    }
    if matches!(col.sw, Switch::Flowd | Switch::FlowdTc) {
        let log = lab.log();
        let bad = log.lines().filter(|l| l.contains("ERROR")).count();
        if bad > 0 {
            col.notes.push(format!("flowd logged {bad} ERROR line(s)"));
        }
    }
    Ok(())
}

fn measure(sw: Switch, exe: &std::path::Path, reps: usize) -> Column {
    let mut col = Column {
        sw,
        gbps: [[None; 2]; 3],
        ping: None,
        notes: Vec::new(),
    };
    if sw == Switch::Ovs && !Ovs::available() {
        col.notes.push(
            "skipped: Open vSwitch is not installed (apt-get install openvswitch-switch; \
             scripts/bench.sh tries)"
                .into(),
        );
        return col;
    }
    if sw == Switch::FlowdTc && !flowd::daemon::kernel_has_flower() {
        col.notes.push(
            "skipped: this kernel has no cls_flower (the VM suite measures this column: \
             FLOWD_VM_BENCH=1 in tests/vm/run-all.sh)"
                .into(),
        );
        return col;
    }
    for mtu in [1500, 9000] {
        if let Err(e) = measure_mtu(&mut col, mtu, exe, reps) {
            col.notes.push(format!("mtu {mtu}: {e}"));
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
    }
    col
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Marks every inherited descriptor close-on-exec, so that no daemon this bench starts
/// (iperf3, ovs-vswitchd) keeps a lock the caller holds (`flock /tmp/flowd-bench.lock`).
fn cloexec_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on a descriptor number; a stale one fails harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

fn cell(g: Option<f64>) -> String {
    g.map_or("-".into(), |g| format!("{g:.2}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn print_table(cols: &[Column], reps: usize, load_start: &str) {
    let get = |sw: Switch| cols.iter().find(|c| c.sw == sw);
    let fig = |sw: Switch, row: usize, dir: usize| get(sw).and_then(|c| c.gbps[row][dir]);
    println!(
        "\ntcp: VF -> remote over VXLAN, default offloads everywhere; iperf3 -t {IPERF_SECS} -J, \
         median of {reps}, Gbit/s; ping -fc {PINGS} in ms"
    );
    println!(
        "flowd: [datapath] threads = {}; load average at start: {load_start}",
        datapath_threads()
    );
    print!("{:<30}", "row");
    for c in cols {
        let star = if c.notes.iter().any(|n| n.contains("tx off")) {
            "*"
        } else {
            ""
        };
        print!(" {:>16}", format!("{}{star}", c.sw.title()));
    }
    println!(" {:>10} {:>12}", "flowd/OVS", "flowd/kernel");
    for (row, &(mtu, streams)) in ROWS.iter().enumerate() {
        for (dir, what) in ["VF -> remote", "remote -> VF"].into_iter().enumerate() {
            print!("{:<30}", format!("iperf3/{mtu}/{streams} {what}"));
            for c in cols {
                print!(" {:>16}", cell(c.gbps[row][dir]));
            }
            if mtu == 9000 {
                let f = fig(Switch::Flowd, row, dir);
                let o = ratio(f, fig(Switch::Ovs, row, dir));
                let k = ratio(f, fig(Switch::Kernel, row, dir));
                print!(
                    " {:>10} {:>12}",
                    o.map_or("-".into(), |r| format!("{r:.2}x")),
                    k.map_or("-".into(), |r| format!("{:.0}%", r * 100.0))
                );
            }
            println!();
        }
    }
    print!("{:<30}", format!("ping -fc {PINGS} mean/mdev"));
    for c in cols {
        let p = c.ping.map_or("-".into(), |(m, d)| format!("{m:.3}/{d:.3}"));
        print!(" {p:>16}");
    }
    println!();
    println!("load average at end: {}", loadavg());
    if cols
        .iter()
        .any(|c| c.notes.iter().any(|n| n.contains("tx off")))
    {
        println!("* not at default offloads (see its notes)");
    }
    for c in cols {
        for n in &c.notes {
            println!("note ({}): {n}", c.sw.key());
        }
    }
    print_goals(cols);
}

/// The goal, on every 9000 row and direction.
fn print_goals(cols: &[Column]) {
    let get = |sw: Switch| cols.iter().find(|c| c.sw == sw);
    let fig = |sw: Switch, row: usize, dir: usize| get(sw).and_then(|c| c.gbps[row][dir]);
    let mut verdicts = Vec::new();
    for (row, &(mtu, streams)) in ROWS.iter().enumerate() {
        if mtu != 9000 {
            continue;
        }
        for (dir, what) in ["VF->remote", "remote->VF"].into_iter().enumerate() {
            let f = fig(Switch::Flowd, row, dir);
            let o = ratio(f, fig(Switch::Ovs, row, dir)).map(|r| r >= GOAL_VS_OVS);
            let k = ratio(f, fig(Switch::Kernel, row, dir)).map(|r| r >= GOAL_VS_KERNEL);
            verdicts.push((format!("{mtu}/{streams} {what}"), o, k));
        }
    }
    let word = |v: Option<bool>| match v {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "n/a",
    };
    println!(
        "goal at 9000 (flowd >= {GOAL_VS_OVS}x OVS userspace, >= {:.0}% of the kernel path):",
        GOAL_VS_KERNEL * 100.0
    );
    for (what, o, k) in verdicts {
        println!("  {what:<22} vs OVS: {:<8} vs kernel: {}", word(o), word(k));
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("tcp: runs under `cargo bench --bench tcp` only (netns, minutes)");
        return;
    }
    if !can_netns()
        || ["iperf3", "ping"].iter().any(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
    {
        println!("tcp: skipped (needs root, iproute2, iperf3 and ping)");
        return;
    }
    cloexec_inherited();
    // SAFETY: installing an async-signal-safe handler that only stores an atomic.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    let exe = Lab::flowd_exe(env!("CARGO_BIN_EXE_flowd"));
    let reps = std::env::var("FLOWD_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    let wanted = std::env::var("FLOWD_BENCH_COLUMNS").unwrap_or_default();
    let load_start = loadavg();
    println!(
        "tcp: {} rows x {} columns, {reps} run(s) each; flowd = {}; load average {load_start}",
        ROWS.len() * 2 + 1,
        Switch::ALL.len(),
        exe.display()
    );
    let mut cols = Vec::new();
    for sw in Switch::ALL {
        if !wanted.is_empty() && !wanted.split(',').any(|w| w.trim() == sw.key()) {
            continue;
        }
        println!("measuring {}", sw.title());
        cols.push(measure(sw, &exe, reps));
        if INTERRUPTED.load(Ordering::Relaxed) {
            println!("tcp: interrupted; everything it started is torn down");
            return;
        }
    }
    print_table(&cols, reps, &load_start);
}
