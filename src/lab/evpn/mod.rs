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

mod frr;
mod scenarios;

pub use frr::Frr;
use frr::{bgp_config, quiet_ipv6, stop_child, strip_ansi, tail, wait_for};
pub use scenarios::{Departed, MoveReport, RestartReport, main};

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
        let text = flowd_config(h, backend, &self.socket(h), grace_ms);
        let child = super::spawn_flowd(
            &self.hvs[h - 1],
            exe,
            args,
            (&self.dir.join(format!("flowd-hv{h}.toml")), &text),
            &self.dir.join(format!("flowd-hv{h}.log")),
        )?;
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
