//! `flowd lab --evpn`: three hypervisors joined by BGP EVPN through FRR, with no static
//! remote VTEP or MAC anywhere.
//!
//! ```text
//!            fabric: br0 (the underlay, 192.168.0.0/24)
//!         p1 /            p2 |              \ p3
//!  hv1: up0 .1            hv2: up0 .2          hv3: up0 .3
//!   flowd + zebra/bgpd     flowd + zebra/bgpd    zebra/bgpd (route reflector) and a kernel
//!   rep0 -> vm0 VNI 100    rep0 -> vm0 VNI 100   VTEP: br100 + vxlan100 (4789) -> vm0 VNI 100
//!   rep1 -> vm1 VNI 200    rep1 -> vm1 VNI 200
//!   rep2 -> vm2 VNI 100    rep2 -> vm2 VNI 100   (spare VFs, down: where a VM moves to)
//! ```
//! VMs on VNI 100 have 10.100.0.N (N the hypervisor), VMs on VNI 200 10.100.0.1N: the
//! same subnet, so that only VXLAN isolation keeps VNI 200 from reaching VNI 100. flowd
//! runs on hv1 and hv2 (simulated eswitch where the kernel has no cls_flower) with both
//! networks `evpn = true`; FRR on hv3 is also a plain Linux EVPN VTEP, so flowd's
//! hypervisors interoperate with the kernel's.
//!
//! Every FRR daemon runs in its hypervisor's namespace with its own configuration,
//! sockets and pid files in the lab's directory; everything (daemons, namespaces,
//! files) goes away when the [`EvpnLab`] is dropped, also on failure or Ctrl-C.

use super::{INTERRUPTED, check, ping_counts, step};
use crate::control::client;
use crate::control::format;
use crate::control::proto::{FdbNetworkRow, Request, Response, ResponseBody, StationRow};
use crate::netns::{Netns, can_netns};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The directory FRR's daemons are installed in (Debian's `frr` package).
pub const FRR_DIR: &str = "/usr/lib/frr";
/// The networks: VNI 100 (`tenant-a`, on all three hypervisors) and 200 (`tenant-b`,
/// on the two flowd hypervisors).
pub const VNIS: [u32; 2] = [100, 200];

/// Whether FRR (zebra, bgpd, vtysh) is installed.
pub fn frr_available() -> bool {
    Path::new(FRR_DIR).join("zebra").exists()
        && Path::new(FRR_DIR).join("bgpd").exists()
        && Command::new("vtysh").arg("--help").output().is_ok()
}

/// The MAC of VM `k` on hypervisor `h` (`02:00:00:00:0h:0k`).
pub fn vm_mac(h: usize, k: usize) -> String {
    format!("02:00:00:00:{h:02x}:{k:02x}")
}

/// The address of VM `k` on hypervisor `h`: 10.100.0.h (VNI 100), 10.100.0.1h (VNI 200).
pub fn vm_ip(h: usize, k: usize) -> String {
    match k {
        1 => format!("10.100.0.{}", 10 + h),
        _ => format!("10.100.0.{h}"),
    }
}

/// The underlay address (and VTEP) of hypervisor `h`.
pub fn vtep(h: usize) -> String {
    format!("192.168.0.{h}")
}

/// FRR's zebra and bgpd in one namespace, each with its own files in `dir`; killed
/// (SIGTERM, then SIGKILL) when dropped.
pub struct Frr {
    /// The namespace.
    pub ns: String,
    /// Configuration, sockets, pid files and logs.
    pub dir: PathBuf,
    zebra: Option<Child>,
    bgpd: Option<Child>,
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Ok(t0.elapsed());
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if t0.elapsed() >= within {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_child(c: &mut Child, within: Duration) {
    // SAFETY: signalling our own child by its id.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Frr {
    /// Writes the configurations and starts zebra, then bgpd; returns once both answer.
    pub fn start(ns: &Netns, dir: &Path, hostname: &str, bgp: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The daemons run as the `frr` user: their directory must be theirs to write.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write(
            "zebra.conf",
            format!(
                "hostname {hostname}\nlog file {}/zebra.log\n",
                dir.display()
            ),
        )?;
        write(
            "bgpd.conf",
            format!(
                "frr defaults datacenter\nhostname {hostname}\nlog file {}/bgpd.log\n{bgp}",
                dir.display()
            ),
        )?;
        let mut frr = Frr {
            ns: ns.name.clone(),
            dir: dir.to_path_buf(),
            zebra: None,
            bgpd: None,
        };
        frr.zebra = Some(frr.spawn("zebra")?);
        let api = dir.join("zserv.api");
        wait_for("zebra's API socket", Duration::from_secs(20), || {
            api.exists()
        })?;
        frr.start_bgpd()?;
        Ok(frr)
    }

    fn spawn(&self, daemon: &str) -> Result<Child, String> {
        let d = self.dir.display().to_string();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{daemon}.out")))
            .map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(Path::new(FRR_DIR).join(daemon))
            .args(["--vty_socket", &d])
            .args(["-i", &format!("{d}/{daemon}.pid")])
            .args(["-z", &format!("{d}/zserv.api")])
            .args(["-f", &format!("{d}/{daemon}.conf")])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {daemon} in {}: {e}", self.ns))
    }

    /// Starts bgpd (again) and waits until it answers on its vty socket.
    pub fn start_bgpd(&mut self) -> Result<(), String> {
        let vty = self.dir.join("bgpd.vty");
        let _ = std::fs::remove_file(&vty);
        self.bgpd = Some(self.spawn("bgpd")?);
        wait_for("bgpd's vty socket", Duration::from_secs(20), || {
            vty.exists() && self.try_vtysh("show bgp summary").is_ok()
        })?;
        Ok(())
    }

    /// Stops bgpd (SIGTERM: it tells its peers, which withdraw its routes).
    pub fn stop_bgpd(&mut self) {
        if let Some(mut c) = self.bgpd.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }

    /// Runs `vtysh -c CMD` against this namespace's daemons.
    pub fn try_vtysh(&self, cmd: &str) -> Result<String, String> {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-c", cmd])
            .output()
            .map_err(|e| format!("vtysh: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "vtysh -c '{cmd}' in {}: {text}{}",
                self.ns,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `vtysh -c CMD`, or the error as text.
    pub fn vtysh(&self, cmd: &str) -> String {
        self.try_vtysh(cmd).unwrap_or_else(|e| e)
    }

    /// The daemons' logs.
    pub fn logs(&self) -> String {
        ["zebra.log", "bgpd.log", "zebra.out", "bgpd.out"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
                format!("--- {} {f}\n{}", self.ns, tail(&text, 20))
            })
            .collect()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.stop_bgpd();
        if let Some(mut c) = self.zebra.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }
}

/// No IPv6 in a namespace (devices created or moved there later included): the lab
/// speaks IPv4, and the VMs' and bridges' IPv6 chatter would only add flooded frames.
fn quiet_ipv6(ns: &Netns) {
    let _ = ns.try_exec(
        "sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1",
    );
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The route reflector's bgpd configuration (hv3) and its clients'.
fn bgp_config(h: usize) -> String {
    let id = vtep(h);
    if h == 3 {
        format!(
            "router bgp 65000\n bgp router-id {id}\n no bgp default ipv4-unicast\n\
             neighbor fabric peer-group\n neighbor fabric remote-as 65000\n\
             neighbor fabric timers connect 1\n\
             neighbor {} peer-group fabric\n neighbor {} peer-group fabric\n\
             address-family l2vpn evpn\n  neighbor fabric activate\n\
             neighbor fabric route-reflector-client\n  advertise-all-vni\n exit-address-family\n",
            vtep(1),
            vtep(2)
        )
    } else {
        let rr = vtep(3);
        format!(
            "router bgp 65000\n bgp router-id {id}\n no bgp default ipv4-unicast\n\
             neighbor {rr} remote-as 65000\n neighbor {rr} timers connect 1\n\
             address-family l2vpn evpn\n  neighbor {rr} activate\n  advertise-all-vni\n\
             exit-address-family\n"
        )
    }
}

/// The flowd configuration of hypervisor `h` (1 or 2).
pub fn flowd_config(h: usize, backend: &str, socket: &Path, grace_ms: u64) -> String {
    let sw = format!("0x00aabbccdd0{h}");
    let mut text = format!(
        "# Written by `flowd lab --evpn`.\n[offload]\npolicy = \"skip_hw\"\nbackend = \"{backend}\"\n\n\
         [control]\nsocket = \"{}\"\n\n[evpn]\nrestart_grace_ms = {grace_ms}\n\n",
        socket.display()
    );
    for k in 0..3 {
        text.push_str(&format!(
            "[[port]]\nname = \"rep{k}\"\nrole = \"representor\"\nvf = {k}\nswitch_id = \"{sw}\"\n\n"
        ));
    }
    text.push_str(&format!(
        "[[port]]\nname = \"up0\"\nrole = \"uplink\"\nid = 11\nswitch_id = \"{sw}\"\n\n\
         [[port]]\nname = \"vxlan_sys_4789\"\nrole = \"tunnel\"\nid = 100\n\n\
         [[network]]\nname = \"tenant-a\"\nvni = 100\nmembers = [\"rep0\", \"rep2\"]\n\
         local_vtep = \"{v}\"\nevpn = true\n\n\
         [[network]]\nname = \"tenant-b\"\nvni = 200\nmembers = [\"rep1\"]\n\
         local_vtep = \"{v}\"\nevpn = true\n",
        v = vtep(h)
    ));
    text
}

/// The lab. Dropping it stops the daemons and deletes the namespaces and files.
pub struct EvpnLab {
    /// Configurations, sockets and logs.
    pub dir: PathBuf,
    /// flowd on hv1 and hv2.
    pub flowd: [Option<Child>; 2],
    /// FRR on hv1, hv2, hv3 (dropped before the namespaces: field order).
    pub frr: Vec<Frr>,
    /// The VMs: `(hypervisor, index)` and namespace.
    pub vms: Vec<((usize, usize), Netns)>,
    /// hv1, hv2, hv3.
    pub hvs: Vec<Netns>,
    /// The underlay switch.
    pub fabric: Netns,
}

impl Drop for EvpnLab {
    fn drop(&mut self) {
        for c in self.flowd.iter_mut().flatten() {
            stop_child(c, Duration::from_secs(10));
        }
        self.frr.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds the lab (namespaces `<prefix>-fabric`, `-hv1`..`-hv3`, `-hvH-vmK`; a stale lab
/// of the same prefix is replaced) and starts FRR everywhere.
pub fn build(prefix: &str) -> Result<EvpnLab, String> {
    let dir = std::env::temp_dir().join(format!("flowd-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut lab = EvpnLab {
        dir,
        flowd: [None, None],
        frr: Vec::new(),
        vms: Vec::new(),
        hvs: Vec::new(),
        fabric: Netns::named(&format!("{prefix}-fabric"))?,
    };
    check(lab.fabric.try_ip("link add br0 type bridge"))?;
    check(lab.fabric.try_ip("link set br0 up"))?;
    for h in 1..=3 {
        let hv = Netns::named(&format!("{prefix}-hv{h}"))?;
        check(hv.try_ip(&format!(
            "link add up0 type veth peer name p{h} netns {}",
            lab.fabric.name
        )))?;
        check(lab.fabric.try_ip(&format!("link set p{h} master br0 up")))?;
        check(hv.try_ip(&format!("addr add {}/24 dev up0", vtep(h))))?;
        check(hv.try_ip("link set up0 up"))?;
        lab.hvs.push(hv);
    }
    for h in 1..=2 {
        lab.flowd_hypervisor(prefix, h)?;
    }
    lab.kernel_vtep(prefix)?;
    for h in 1..=3 {
        let dir = lab.dir.join(format!("frr-hv{h}"));
        let frr = Frr::start(&lab.hvs[h - 1], &dir, &format!("hv{h}"), &bgp_config(h))?;
        lab.frr.push(frr);
    }
    Ok(lab)
}

impl EvpnLab {
    fn vm_ns(&mut self, prefix: &str, h: usize, k: usize) -> Result<String, String> {
        let ns = Netns::named(&format!("{prefix}-hv{h}-vm{k}"))?;
        quiet_ipv6(&ns);
        let name = ns.name.clone();
        self.vms.push(((h, k), ns));
        Ok(name)
    }

    /// hv1/hv2: representors toward three VMs, the tunnel device flowd decapsulates on.
    fn flowd_hypervisor(&mut self, prefix: &str, h: usize) -> Result<(), String> {
        for k in 0..3 {
            let ns = self.vm_ns(prefix, h, k)?;
            let hv = &self.hvs[h - 1];
            check(hv.try_ip(&format!(
                "link add rep{k} type veth peer name vf{k} netns {ns}"
            )))?;
            check(hv.try_ip(&format!("link set rep{k} mtu 1450 up")))?;
            let vm = self.vm(h, k);
            check(vm.try_ip(&format!("link set vf{k} mtu 1450")))?;
            // A VM's checksum offload leaves partial checksums on a veth.
            let _ = vm.try_exec(&format!("ethtool -K vf{k} tx off"));
            if k < 2 {
                check(vm.try_ip(&format!("link set vf{k} address {}", vm_mac(h, k))))?;
                check(vm.try_ip(&format!("addr add {}/24 dev vf{k}", vm_ip(h, k))))?;
                check(vm.try_ip(&format!("link set vf{k} up")))?;
            }
        }
        let hv = &self.hvs[h - 1];
        check(hv.try_ip("link add vxlan_sys_4789 type vxlan dstport 4789 external"))?;
        check(hv.try_ip("link set vxlan_sys_4789 up"))?;
        Ok(())
    }

    /// hv3: a Linux EVPN VTEP as FRR's documentation sets one up.
    fn kernel_vtep(&mut self, prefix: &str) -> Result<(), String> {
        let ns = self.vm_ns(prefix, 3, 0)?;
        let hv = &self.hvs[2];
        quiet_ipv6(hv);
        for cmd in [
            "link add br100 type bridge".to_string(),
            format!(
                "link add vxlan100 type vxlan id 100 local {} dstport 4789 nolearning",
                vtep(3)
            ),
            "link set vxlan100 master br100".into(),
            format!("link add h3p0 type veth peer name vf0 netns {ns}"),
            "link set h3p0 master br100".into(),
            "link set br100 up".into(),
            "link set vxlan100 up".into(),
            "link set h3p0 up".into(),
        ] {
            check(hv.try_ip(&cmd))?;
        }
        let _ = hv.try_exec("bridge link set dev vxlan100 learning off");
        let vm = self.vm(3, 0);
        check(vm.try_ip(&format!("link set vf0 address {} mtu 1450", vm_mac(3, 0))))?;
        check(vm.try_ip(&format!("addr add {}/24 dev vf0", vm_ip(3, 0))))?;
        check(vm.try_ip("link set vf0 up"))?;
        let _ = vm.try_exec("ethtool -K vf0 tx off");
        Ok(())
    }

    /// VM `k` of hypervisor `h`.
    pub fn vm(&self, h: usize, k: usize) -> &Netns {
        &self
            .vms
            .iter()
            .find(|(id, _)| *id == (h, k))
            .unwrap_or_else(|| panic!("no vm {k} on hv{h}"))
            .1
    }

    /// FRR of hypervisor `h`.
    pub fn frr(&self, h: usize) -> &Frr {
        &self.frr[h - 1]
    }

    /// The control socket of flowd on hypervisor `h`.
    pub fn socket(&self, h: usize) -> PathBuf {
        self.dir.join(format!("flowd-hv{h}.sock"))
    }

    /// flowd's log on hypervisor `h` (without terminal colours).
    pub fn log(&self, h: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("flowd-hv{h}.log"))).unwrap_or_default();
        strip_ansi(&text)
    }

    /// Starts flowd (`exe`, with `args`) on hypervisor `h` and waits until it answers.
    pub fn start_flowd(
        &mut self,
        h: usize,
        exe: &Path,
        backend: &str,
        grace_ms: u64,
        args: &[&str],
    ) -> Result<(), String> {
        let cfg = self.dir.join(format!("flowd-hv{h}.toml"));
        let text = flowd_config(h, backend, &self.socket(h), grace_ms);
        std::fs::write(&cfg, text).map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("flowd-hv{h}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hvs[h - 1].name])
            .arg(exe)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", exe.display()))?;
        self.flowd[h - 1] = Some(child);
        let r = wait_for("flowd's control socket", Duration::from_secs(60), || {
            self.request(h, Request::Show).is_ok()
                || self.flowd[h - 1]
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
        });
        if let Some(Ok(Some(st))) = self.flowd[h - 1].as_mut().map(Child::try_wait) {
            return Err(format!(
                "flowd on hv{h} exited ({st}):\n{}",
                tail(&self.log(h), 30)
            ));
        }
        r.map(|_| ())
    }

    /// Stops flowd on hypervisor `h`: SIGTERM (a clean stop; with `--keep-offloads` on
    /// its command line it keeps the shadow devices) or SIGKILL (a crash).
    pub fn stop_flowd(&mut self, h: usize, kill: bool) {
        if let Some(mut c) = self.flowd[h - 1].take() {
            if kill {
                let _ = c.kill();
                let _ = c.wait();
            } else {
                stop_child(&mut c, Duration::from_secs(10));
            }
        }
    }

    /// Rewrites flowd's configuration file on hypervisor `h` and reloads it; the
    /// daemon's summary of what changed.
    pub fn reload_flowd(&self, h: usize, config: &str) -> Result<String, String> {
        let cfg = self.dir.join(format!("flowd-hv{h}.toml"));
        std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
        match self.request(h, Request::Reload { allow_empty: false })? {
            ResponseBody::Done(d) => Ok(d.message),
            other => Err(format!("reload: {other:?}")),
        }
    }

    /// Asks flowd on hypervisor `h`.
    pub fn request(&self, h: usize, req: Request) -> Result<ResponseBody, String> {
        match client::request(&self.socket(h), &req) {
            Ok(Response::Ok(body)) => Ok(body),
            Ok(Response::Err { message }) => Err(message),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `flowctl fdb` on hypervisor `h`.
    pub fn fdb(&self, h: usize) -> Vec<FdbNetworkRow> {
        match self.request(h, Request::Fdb { network: None }) {
            Ok(ResponseBody::Fdb(rows)) => rows,
            _ => Vec::new(),
        }
    }

    /// A station of VNI `vni` as flowd on hypervisor `h` knows it.
    pub fn station(&self, h: usize, vni: u32, mac: &str) -> Option<StationRow> {
        let seg = format!("vni {vni}");
        self.fdb(h)
            .into_iter()
            .find(|n| n.segment == seg)?
            .stations
            .into_iter()
            .find(|s| s.mac == mac)
    }

    /// The EVPN flood list of VNI `vni` on hypervisor `h`.
    pub fn evpn_flood(&self, h: usize, vni: u32) -> Vec<String> {
        let seg = format!("vni {vni}");
        self.fdb(h)
            .into_iter()
            .find(|n| n.segment == seg)
            .map(|n| {
                n.flood
                    .into_iter()
                    .filter(|f| f.origin == "evpn")
                    .map(|f| f.vtep)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Prints flowctl's answer on hypervisor `h`.
    pub fn show(&self, h: usize, req: Request) -> Result<(), String> {
        print!("{}", format::body(&self.request(h, req)?));
        Ok(())
    }

    /// Waits until every BGP session is up and each flowd hypervisor has the other
    /// hypervisors' type-3 routes (its EVPN flood lists).
    pub fn wait_fabric(&self, within: Duration) -> Result<Duration, String> {
        wait_for("the EVPN flood lists", within, || {
            let mut a1 = self.evpn_flood(1, 100);
            a1.sort();
            let mut a2 = self.evpn_flood(2, 100);
            a2.sort();
            a1 == [vtep(2), vtep(3)]
                && a2 == [vtep(1), vtep(3)]
                && self.evpn_flood(1, 200) == [vtep(2)]
                && self.evpn_flood(2, 200) == [vtep(1)]
        })
    }

    /// Waits until flowd on hypervisor `h` has `mac` of VNI `vni` behind `at` (a VTEP
    /// address, `Some`) with origin evpn, or does not have it from evpn (`None`).
    pub fn wait_station(
        &self,
        h: usize,
        vni: u32,
        mac: &str,
        at: Option<&str>,
        within: Duration,
    ) -> Result<Duration, String> {
        let what = format!("hv{h} vni {vni}: {mac} at {at:?}");
        wait_for(&what, within, || {
            let s = self.station(h, vni, mac);
            match at {
                Some(v) => {
                    s.is_some_and(|s| s.origin == "evpn" && s.location == format!("vtep {v}"))
                }
                None => s.is_none_or(|s| s.origin != "evpn"),
            }
        })
    }

    /// How many times `mac` appears in `vtysh -c 'show evpn mac vni VNI'` on hypervisor
    /// `h` (a line per MAC: 0 or 1, never more), and the line.
    pub fn zebra_mac(&self, h: usize, vni: u32, mac: &str) -> (usize, String) {
        let out = self.frr(h).vtysh(&format!("show evpn mac vni {vni}"));
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(mac)).collect();
        (lines.len(), lines.join("\n"))
    }

    /// The static entries on hypervisor `h`'s advertise port of VNI `vni` (what zebra
    /// advertises as local).
    pub fn advertised(&self, h: usize, vni: u32) -> Vec<String> {
        let (_, out) = self.hvs[h - 1].try_exec(&format!("bridge fdb show dev evad-{vni}"));
        let mut macs: Vec<String> = out
            .lines()
            .filter(|l| l.contains(" static") && !l.contains("permanent"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        // One per station (a bridge whose ports have VLANs lists a copy per VLAN).
        macs.sort();
        macs.dedup();
        macs
    }

    /// Runs `action` while counting the VXLAN packets from hypervisor `from` that the
    /// fabric delivers toward each hypervisor of `to` (tcpdump on the fabric's ports),
    /// only those whose inner frame is addressed to `inner_dst` (a MAC) if given.
    pub fn count_vxlan(
        &self,
        from: usize,
        to: &[usize],
        inner_dst: Option<&str>,
        action: impl FnOnce() -> Result<(), String>,
    ) -> Result<Vec<u64>, String> {
        let mut dumps = Vec::new();
        for &t in to {
            let mut filter = format!(
                "udp dst port 4789 and src host {} and dst host {}",
                vtep(from),
                vtep(t)
            );
            if let Some(mac) = inner_dst {
                // The inner Ethernet destination follows the UDP and VXLAN headers.
                let hex: String = mac.split(':').collect();
                filter.push_str(&format!(
                    " and udp[16:4] = 0x{} and udp[20:2] = 0x{}",
                    &hex[..8],
                    &hex[8..]
                ));
            }
            let mut c = Command::new("ip")
                .args(["netns", "exec", &self.fabric.name, "tcpdump", "-n", "-l"])
                .args(["-i", &format!("p{t}"), &filter])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("tcpdump: {e}"))?;
            // Wait until it listens.
            let mut err = BufReader::new(c.stderr.take().ok_or("tcpdump stderr")?);
            let mut said = String::new();
            while !said.contains("listening on") {
                let mut line = String::new();
                if err.read_line(&mut line).unwrap_or(0) == 0 {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err(format!("tcpdump: {said}"));
                }
                said.push_str(&line);
            }
            dumps.push(c);
        }
        let r = action();
        std::thread::sleep(Duration::from_millis(300));
        let mut counts = Vec::new();
        for c in dumps {
            // SAFETY: SIGINT to our own child: tcpdump flushes and exits.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let out = c.wait_with_output().map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout);
            counts.push(text.lines().filter(|l| l.contains("VXLAN")).count() as u64);
        }
        r.map(|()| counts)
    }

    /// Pings `dst` from VM `(h, k)`: whether all `count` replies came.
    pub fn ping(&self, h: usize, k: usize, dst: &str, count: u32) -> Result<(), String> {
        let (ok, out) = self
            .vm(h, k)
            .try_exec(&format!("ping -c {count} -i 0.1 -W 2 {dst}"));
        let (tx, rx) = ping_counts(&out).unwrap_or((0, 0));
        if ok && rx == tx {
            Ok(())
        } else {
            Err(format!("ping {dst} from hv{h} vm{k}: {rx}/{tx}\n{out}"))
        }
    }

    /// Prints what an operator looks at: flowd's logs, zebra's view, the FDBs.
    pub fn diagnose(&self) {
        for h in 1..=2 {
            println!("--- flowd hv{h} log\n{}", tail(&self.log(h), 25));
        }
        for f in &self.frr {
            println!("{}", f.logs());
            println!(
                "--- {} show evpn mac vni all\n{}",
                f.ns,
                f.vtysh("show evpn mac vni all")
            );
            println!(
                "--- {} show bgp l2vpn evpn summary\n{}",
                f.ns,
                f.vtysh("show bgp l2vpn evpn summary")
            );
        }
        for hv in &self.hvs {
            println!(
                "--- {} bridge fdb\n{}",
                hv.name,
                hv.try_exec("bridge fdb show | grep -v permanent").1
            );
        }
    }
}

/// What a restart of flowd after a crash did.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartReport {
    /// The daemon's log line about the shadow devices (all adopted, none created).
    pub devices: String,
    /// What became of the VM that left while flowd was down.
    pub departed: Departed,
    /// The station that stayed, in the other hypervisor's zebra (one line).
    pub kept_line: String,
}

/// The VM that left while flowd was down, after the restart.
#[derive(Debug, Clone, PartialEq)]
pub enum Departed {
    /// No kept filter carried it (the simulated eswitch keeps none across runs): its
    /// station was withdrawn from the other hypervisor's zebra this long after the
    /// start, when the restart grace ended.
    Withdrawn(Duration),
    /// Its kept filter was adopted, so the new run learned it from the filter: it stays
    /// advertised (this line in the other hypervisor's zebra, exactly one) until it ages
    /// out like any silent station.
    LearnedFromItsFilter(String),
}

impl EvpnLab {
    /// flowd on hv1 is killed (-9: its devices, entries and filters stay), VM 1 of hv1
    /// goes away meanwhile, and flowd starts again (`grace_ms` of restart grace) while VM
    /// 0 keeps talking: the devices are adopted, VM 0's station stays advertised once.
    /// VM 1's is withdrawn when the grace ends, unless a kept filter of VM 1 was adopted
    /// (tc keeps them across runs): then the new run learned it from that filter and it
    /// stays advertised, once, until it ages out.
    pub fn restart_after_crash(
        &mut self,
        exe: &Path,
        backend: &str,
        grace_ms: u64,
    ) -> Result<RestartReport, String> {
        let (m0, m1) = (vm_mac(1, 0), vm_mac(1, 1));
        self.stop_flowd(1, true);
        check(self.vm(1, 1).try_ip("link set vf1 down"))?;
        let log_before = self.log(1).len();
        let t0 = Instant::now();
        self.start_flowd(1, exe, backend, grace_ms, &[])?;
        self.ping(1, 0, &vm_ip(2, 0), 2)?;
        let within = Duration::from_millis(grace_ms) + Duration::from_secs(20);
        let since = |log: &str| log[log_before.min(log.len())..].to_string();
        // The adoption's summary: `adopted=N replaced=M`, where kept filters were taken
        // over. Either way, wait for the grace to end.
        wait_for("the restart grace to end", within, || {
            since(&self.log(1)).contains("restart grace over")
        })?;
        let log = since(&self.log(1));
        let adopted_any = log
            .lines()
            .find(|l| l.contains("adopted a previous run's filters"))
            .is_some_and(|l| !l.contains("flows=0"));
        // The departed VM is still a station of the new run only if a kept filter of
        // its own was adopted (nothing else can have taught it).
        let learned = self.station(1, 200, &m1).is_some();
        if learned && !adopted_any {
            return Err(format!(
                "{m1} left before the restart but is a station of the new run, with no filter adopted"
            ));
        }
        let departed = if learned {
            let (n, line) = self.zebra_mac(2, 200, &m1);
            if n != 1 || !line.contains("remote") || !line.contains(&vtep(1)) {
                return Err(format!(
                    "hv2's zebra after the restart, for {m1} whose filter was adopted: {n} lines: {line}"
                ));
            }
            Departed::LearnedFromItsFilter(line)
        } else {
            wait_for("hv2's zebra to withdraw hv1's departed VM", within, || {
                self.zebra_mac(2, 200, &m1).0 == 0
            })?;
            Departed::Withdrawn(t0.elapsed())
        };
        let devices = log
            .lines()
            .find(|l| l.contains("shadow devices"))
            .unwrap_or_default()
            .to_string();
        let (n, kept_line) = self.zebra_mac(2, 100, &m0);
        if n != 1 || !kept_line.contains("remote") || !kept_line.contains(&vtep(1)) {
            return Err(format!(
                "hv2's zebra after the restart: {n} lines for {m0}: {kept_line}"
            ));
        }
        Ok(RestartReport {
            devices,
            departed,
            kept_line,
        })
    }
}

/// What a station move did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoveReport {
    /// From the moved VM's first packet on its new hypervisor until flowd on the old one
    /// has it behind the new hypervisor's VTEP (as a control-plane station).
    pub flowd_old: Duration,
    /// The same, until the kernel VTEP (hv3) points it at the new hypervisor.
    pub kernel_vtep: Duration,
    /// Until the old hypervisor no longer advertises it (zebra moved its entry).
    pub withdrawn_old: Duration,
}

impl EvpnLab {
    /// VM 0 of hv1 moves to hv2 (it stops on hv1; hv2's spare VF 2 takes its MAC and
    /// address and speaks): the times until each side follows.
    pub fn move_vm(&self) -> Result<MoveReport, String> {
        let (mac, ip) = (vm_mac(1, 0), vm_ip(1, 0));
        check(self.vm(1, 0).try_ip("link set vf0 down"))?;
        let vm = self.vm(2, 2);
        check(vm.try_ip(&format!("link set vf2 address {mac}")))?;
        check(vm.try_ip(&format!("addr add {ip}/24 dev vf2")))?;
        check(vm.try_ip("link set vf2 up"))?;
        let t0 = Instant::now();
        // The VM announces itself (as a migrated VM does): it pings the kernel VTEP's VM,
        // while the sides are watched.
        let (ns, dst) = (vm.name.clone(), vm_ip(3, 0));
        let pinger = std::thread::spawn(move || {
            Netns::borrowed(&ns).try_exec(&format!("ping -c 3 -i 0.2 -W 1 {dst}"))
        });
        // The first moment each side follows, each watched on its own thread.
        let within = Duration::from_secs(20);
        let mac = &mac;
        let watch = |what: &str, f: &(dyn Fn() -> bool + Sync)| {
            wait_for(what, within, f).map(|_| t0.elapsed())
        };
        let (flowd_old, kernel_vtep, withdrawn_old) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                watch("flowd on hv1 to follow the move", &|| {
                    self.station(1, 100, mac).is_some_and(|s| {
                        s.origin == "evpn" && s.location == format!("vtep {}", vtep(2))
                    })
                })
            });
            let b = s.spawn(|| {
                watch("the kernel VTEP to follow the move", &|| {
                    let (_, out) = self.hvs[2].try_exec("bridge fdb show dev vxlan100");
                    out.lines()
                        .any(|l| l.starts_with(mac) && l.contains(&format!("dst {}", vtep(2))))
                })
            });
            let c = s.spawn(|| {
                watch("hv1 to stop advertising the VM", &|| {
                    !self.advertised(1, 100).contains(mac)
                })
            });
            let join = |h: std::thread::ScopedJoinHandle<'_, Result<Duration, String>>| {
                h.join().unwrap_or_else(|_| Err("watcher panicked".into()))
            };
            (join(a), join(b), join(c))
        });
        let _ = pinger.join();
        let (flowd_old, kernel_vtep, withdrawn_old) = (flowd_old?, kernel_vtep?, withdrawn_old?);
        Ok(MoveReport {
            flowd_old,
            kernel_vtep,
            withdrawn_old,
        })
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn run(lab: &mut EvpnLab) -> Result<(), String> {
    let flower = crate::daemon::kernel_has_flower();
    let backend = if flower { "tc" } else { "sim" };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    step(
        "starting flowd on hv1 and hv2 (networks tenant-a VNI 100, tenant-b VNI 200, evpn = true, no remote VTEPs configured)",
    );
    lab.start_flowd(1, &exe, backend, 5_000, &[])?;
    lab.start_flowd(2, &exe, backend, 5_000, &[])?;
    let t = lab.wait_fabric(Duration::from_secs(60))?;
    println!("BGP EVPN up: every flood list learned after {}", ms(t));
    println!("{}", lab.frr(3).vtysh("show bgp l2vpn evpn summary"));
    step("traffic: VMs on three hypervisors ping each other on VNI 100");
    for (h, k, dst) in [
        (1, 0, vm_ip(2, 0)),
        (1, 0, vm_ip(3, 0)),
        (2, 0, vm_ip(3, 0)),
    ] {
        lab.ping(h, k, &dst, 3)?;
        println!("hv{h} vm{k} -> {dst}: 3/3 replies");
    }
    step("isolation: VNI 200's VM (same subnet) reaches VNI 200 only");
    lab.ping(1, 1, &vm_ip(2, 1), 3)?;
    println!("hv1 vm1 -> {} (VNI 200): 3/3 replies", vm_ip(2, 1));
    if lab.ping(1, 1, &vm_ip(2, 0), 2).is_ok() {
        return Err("VNI 200 reached VNI 100".into());
    }
    println!(
        "hv1 vm1 -> {} (VNI 100): no reply, as it should be",
        vm_ip(2, 0)
    );
    step("flowctl fdb on hv1: stations and flood lists with their origin");
    lab.wait_station(
        1,
        100,
        &vm_mac(2, 0),
        Some(&vtep(2)),
        Duration::from_secs(10),
    )?;
    lab.show(1, Request::Fdb { network: None })?;
    step("zebra on hv2: show evpn mac vni all");
    println!("{}", lab.frr(2).vtysh("show evpn mac vni all"));
    step("unicast to a known MAC goes to exactly one VTEP (20 pings hv1 vm0 -> hv2 vm0)");
    let counts = lab.count_vxlan(1, &[2, 3], Some(&vm_mac(2, 0)), || {
        lab.ping(1, 0, &vm_ip(2, 0), 20)
    })?;
    println!(
        "VXLAN packets from hv1 to {}: toward hv2 {}, toward hv3 {}",
        vm_mac(2, 0),
        counts[0],
        counts[1]
    );
    step(
        "flowd on hv1 crashes (kill -9); its VNI 200 VM leaves meanwhile; flowd starts again (grace 3 s)",
    );
    let r = lab.restart_after_crash(&exe, backend, 3_000)?;
    println!("{}", r.devices.trim());
    match &r.departed {
        Departed::Withdrawn(t) => println!(
            "the departed VM's station withdrawn {} after the start",
            ms(*t)
        ),
        Departed::LearnedFromItsFilter(line) => println!(
            "the departed VM's kept filter was adopted: its station stays advertised until it ages out ({line})"
        ),
    }
    println!("hv2's zebra still has: {}", r.kept_line);
    step("a VM moves from hv1 to hv2");
    let m = lab.move_vm()?;
    println!(
        "flowd on hv1 follows after {}, hv3's kernel after {}, hv1 stops advertising after {}",
        ms(m.flowd_old),
        ms(m.kernel_vtep),
        ms(m.withdrawn_old)
    );
    lab.ping(3, 0, &vm_ip(1, 0), 3)?;
    println!("hv3 vm0 -> {} (now on hv2): 3/3 replies", vm_ip(1, 0));
    step("bgpd stops on hv2: its stations and VTEP leave hv1's tables");
    lab.frr[1].stop_bgpd();
    let t = lab.wait_station(1, 100, &vm_mac(2, 0), None, Duration::from_secs(20))?;
    println!("hv1 forgot hv2's stations after {}", ms(t));
    lab.show(1, Request::Fdb { network: None })?;
    lab.frr[1].start_bgpd()?;
    lab.wait_fabric(Duration::from_secs(60))?;
    println!("bgpd back on hv2: flood lists restored");
    Ok(())
}

/// `flowd lab --evpn [--vm] [--hold]`.
pub fn main(vm: bool, hold: bool) -> ExitCode {
    if vm {
        let Some(runner) = super::vm_run() else {
            eprintln!("flowd lab --evpn --vm: ../shared/lab/vm-run not found");
            return ExitCode::from(1);
        };
        let exe = std::env::current_exe().unwrap_or_default();
        println!("booting Debian's kernel in a VM (25-60 s) and running the EVPN lab there");
        let st = Command::new(runner)
            .arg("--")
            .arg(format!("{} lab --evpn", exe.display()))
            .status();
        return match st {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        };
    }
    if !can_netns() {
        eprintln!("flowd lab --evpn: needs root and iproute2 (it builds network namespaces)");
        return ExitCode::from(1);
    }
    if !frr_available() {
        eprintln!(
            "flowd lab --evpn: needs FRR (apt-get install frr): {FRR_DIR}/zebra, bgpd, vtysh"
        );
        return ExitCode::from(1);
    }
    // SAFETY: installing an async-signal-safe handler that only stores an atomic.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = super::on_signal;
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    step(
        "building the EVPN lab: fabric, hv1 and hv2 (flowd), hv3 (route reflector and a kernel VTEP), FRR everywhere",
    );
    let mut lab = match build("fe") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flowd lab --evpn: {e}");
            return ExitCode::from(1);
        }
    };
    let res = run(&mut lab);
    if let Err(e) = &res {
        eprintln!("\nflowd lab --evpn failed: {e}");
        lab.diagnose();
    }
    if hold && res.is_ok() {
        println!(
            "\nlab running; flowctl --socket {} fdb; vtysh --vty_socket {} ...; Ctrl-C to tear down",
            lab.socket(1).display(),
            lab.frr(1).dir.display()
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_configs_are_valid() {
        for h in 1..=2 {
            let cfg: crate::config::Config = flowd_config(h, "sim", Path::new("/tmp/x.sock"), 1000)
                .parse()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                cfg.networks
                    .iter()
                    .all(|n| n.evpn && n.remote_vteps.is_empty())
            );
            assert_eq!(cfg.evpn.restart_grace_ms, 1000);
        }
        assert!(bgp_config(3).contains("route-reflector-client"));
        assert!(bgp_config(1).contains("advertise-all-vni"));
        assert_eq!(vm_ip(2, 1), "10.100.0.12");
        assert_eq!(vm_mac(1, 0), "02:00:00:00:01:00");
        assert_eq!(strip_ansi("\x1b[2mcreated\x1b[0m=[]"), "created=[]");
    }
}
