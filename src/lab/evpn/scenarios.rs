//! The EVPN lab's scenarios: a crash and restart of flowd, a VM moving between
//! hypervisors, and the run `flowd lab --evpn` prints.

use super::*;

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
    traffic(lab)?;
    disruptions(lab, &exe, backend)
}

/// Traffic across the fabric: reachability, isolation, the tables, and unicast to
/// exactly one VTEP.
fn traffic(lab: &mut EvpnLab) -> Result<(), String> {
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
    Ok(())
}

/// What the fabric lives through: flowd crashing, a VM moving, bgpd stopping.
fn disruptions(lab: &mut EvpnLab, exe: &Path, backend: &str) -> Result<(), String> {
    step(
        "flowd on hv1 crashes (kill -9); its VNI 200 VM leaves meanwhile; flowd starts again (grace 3 s)",
    );
    let r = lab.restart_after_crash(exe, backend, 3_000)?;
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

impl crate::lab::Scenario for EvpnLab {
    fn diagnose(&self) {
        EvpnLab::diagnose(self);
    }

    fn hold_hint(&self) -> String {
        format!(
            "flowctl --socket {} fdb; vtysh --vty_socket {} ...",
            self.socket(1).display(),
            self.frr(1).dir.display()
        )
    }
}

/// `flowd lab --evpn [--vm] [--hold]`.
pub fn main(vm: bool, hold: bool) -> ExitCode {
    let needs = (!vm && can_netns() && !frr_available())
        .then(|| format!("needs FRR (apt-get install frr): {FRR_DIR}/zebra, bgpd, vtysh"));
    crate::lab::drive(
        "flowd lab --evpn",
        "lab --evpn",
        (vm, hold),
        needs,
        || {
            step(
                "building the EVPN lab: fabric, hv1 and hv2 (flowd), hv3 (route reflector and a kernel VTEP), FRR everywhere",
            );
            build("fe")
        },
        run,
    )
}
