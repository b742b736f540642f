//! BGP EVPN through FRR, end to end on the host: `flowd lab --evpn`'s three hypervisors
//! (flowd on two of them, a kernel VTEP on the third, FRR's zebra and bgpd on all three,
//! the third a route reflector) with no static remote VTEP or MAC anywhere.
//!
//! One lab, one scenario (building the lab and starting FRR is the slow part):
//! the flood lists arrive (type 3); VMs on VNI 100 reach each other across all three
//! hypervisors, the kernel VTEP included; VNI 200 stays isolated; remote stations carry
//! their origin; unicast to a known MAC goes to exactly one VTEP; a crash and restart of
//! flowd adopts its shadow devices, keeps the station still in use advertised exactly
//! once and withdraws the one that left; a VM moving between hypervisors is followed
//! (withdraw + re-advertise, timed); stopping bgpd withdraws a hypervisor's stations and
//! VTEP elsewhere; a clean stop of flowd removes its shadow devices and zebra withdraws
//! the networks. Every wait is a bounded loop on a condition; the lab's guards stop the
//! daemons and delete the namespaces even when an assertion fails.

mod common;

use common::exe;

use flowd::control::proto::{FlowFilter, Request, ResponseBody};
use flowd::lab::evpn::{self, Departed, EvpnLab, vm_ip, vm_mac, vtep};
use flowd::netns::can_netns;
use std::time::{Duration, Instant};

/// The backend flowd uses: tc where the kernel has cls_flower (the VM suite), else the
/// simulated eswitch.
fn backend() -> &'static str {
    if flowd::daemon::kernel_has_flower() {
        "tc"
    } else {
        "sim"
    }
}

fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if f() {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// Pings until one reply comes (the first packets may race learning on a loaded
/// machine), then requires 3 out of 3.
fn reach(lab: &EvpnLab, h: usize, k: usize, dst: &str) {
    let vm = lab.vm(h, k);
    eventually(
        &format!("hv{h} vm{k} to reach {dst}"),
        Duration::from_secs(20),
        || vm.try_exec(&format!("ping -c 1 -W 1 {dst}")).0,
    );
    if let Err(e) = lab.ping(h, k, dst, 3) {
        lab.diagnose();
        panic!("{e}");
    }
}

struct Check<'a>(&'a EvpnLab);

impl Check<'_> {
    /// Unwraps, printing the lab's state first on failure.
    fn ok<T>(&self, r: Result<T, String>) -> T {
        r.unwrap_or_else(|e| {
            self.0.diagnose();
            panic!("{e}")
        })
    }
}

#[test]
fn evpn_fabric_of_two_flowd_hypervisors_and_a_kernel_vtep() {
    if !can_netns() || !evpn::frr_available() {
        assert!(
            std::env::var_os("FLOWD_REQUIRE_FRR").is_none(),
            "FRR (zebra, bgpd, vtysh) and root are required"
        );
        eprintln!("skipped: needs root, iproute2 and FRR (apt-get install frr)");
        return;
    }
    let prefix = format!("ev{}", std::process::id() % 100_000);
    let mut lab = evpn::build(&prefix).expect("EVPN lab");
    let exe = exe();
    let backend = backend();
    for h in 1..=2 {
        lab.start_flowd(h, &exe, backend, 300_000, &[])
            .expect("flowd starts");
    }
    let t = Check(&lab).ok(lab.wait_fabric(Duration::from_secs(90)));
    eprintln!("flood lists (type 3) learned after {t:?}");

    // No static remote configuration: everything remote is evpn's.
    for h in 1..=2 {
        for n in lab.fdb(h) {
            assert!(
                n.flood.iter().all(|f| f.origin == "evpn"),
                "hv{h}: {:?}",
                n.flood
            );
            assert!(n.evpn.is_some(), "hv{h}: {n:?}");
        }
    }

    // VNI 100 across the three hypervisors, the kernel VTEP included.
    reach(&lab, 1, 0, &vm_ip(2, 0));
    reach(&lab, 1, 0, &vm_ip(3, 0));
    reach(&lab, 2, 0, &vm_ip(3, 0));
    reach(&lab, 3, 0, &vm_ip(1, 0));
    // VNI 200 (same subnet) reaches VNI 200 only.
    reach(&lab, 1, 1, &vm_ip(2, 1));
    let (ok, out) = lab
        .vm(1, 1)
        .try_exec(&format!("ping -c 2 -W 1 {}", vm_ip(2, 0)));
    assert!(!ok, "VNI 200 reached VNI 100: {out}");

    // Remote stations with their origin, on both flowd hypervisors, and in zebra.
    let within = Duration::from_secs(20);
    for (h, other) in [(1, 2), (2, 1)] {
        for (vni, k) in [(100, 0), (200, 1)] {
            let mac = vm_mac(other, k);
            Check(&lab).ok(lab.wait_station(h, vni, &mac, Some(&vtep(other)), within));
        }
        Check(&lab).ok(lab.wait_station(h, 100, &vm_mac(3, 0), Some(&vtep(3)), within));
        let local = lab.station(h, 100, &vm_mac(h, 0)).expect("own VM");
        assert_eq!(
            (local.origin.as_str(), local.location.as_str()),
            ("learned", "rep0")
        );
    }
    let (n, line) = lab.zebra_mac(2, 100, &vm_mac(1, 0));
    assert_eq!(n, 1, "{line}");
    assert!(line.contains("remote") && line.contains(&vtep(1)), "{line}");
    let (n, line) = lab.zebra_mac(1, 100, &vm_mac(1, 0));
    assert!(
        n == 1 && line.contains("local") && line.contains("evad-100"),
        "{line}"
    );

    // After the first exchange, unicast to a known MAC goes to exactly one VTEP.
    let counts = Check(&lab).ok(lab.count_vxlan(1, &[2, 3], Some(&vm_mac(2, 0)), || {
        lab.ping(1, 0, &vm_ip(2, 0), 20)
    }));
    eprintln!(
        "unicast to {}: toward hv2 {}, toward hv3 {}",
        vm_mac(2, 0),
        counts[0],
        counts[1]
    );
    assert!(counts[0] >= 20, "{counts:?}");
    assert_eq!(counts[1], 0, "unicast flooded to hv3: {counts:?}");
    // ...and its megaflow (and filter: tc in the VM suite, the simulated eswitch here)
    // encapsulates toward that VTEP alone.
    let flows = match lab.request(1, Request::dump_flows(FlowFilter::All)) {
        Ok(ResponseBody::Flows(rows)) => rows,
        other => panic!("dump-flows: {other:?}"),
    };
    let to_vm2 = format!("dst={}", vm_mac(2, 0));
    let f = flows
        .iter()
        .find(|f| {
            f.flow.starts_with("in_port(1)")
                && f.flow.contains(&to_vm2)
                && f.flow.contains("0x0800")
        })
        .unwrap_or_else(|| panic!("no flow toward {to_vm2}: {flows:?}"));
    assert_eq!(f.actions.matches("set(tunnel(").count(), 1, "{}", f.actions);
    assert!(
        f.actions.contains(&format!("dst={}", vtep(2))),
        "{}",
        f.actions
    );
    assert!(f.placement.offloaded, "{:?}", f.placement);

    // A crash and a restart: devices adopted, the station in use advertised once; the
    // one that left while flowd was down is withdrawn when the grace ends, unless its
    // kept filter was adopted (tc, in the VM suite): then it is a station learned from
    // that filter, advertised exactly once until it ages out.
    let grace = 3_000;
    let r = lab.restart_after_crash(&exe, backend, grace);
    let r = Check(&lab).ok(r);
    eprintln!("restart: {} ; departed VM: {:?}", r.devices, r.departed);
    assert!(r.devices.contains("created=[]"), "{}", r.devices);
    assert!(r.devices.contains("evad-200"), "{}", r.devices);
    let (n, line) = lab.zebra_mac(1, 100, &vm_mac(1, 0));
    assert!(n == 1 && line.contains("local"), "{line}");
    assert_eq!(lab.advertised(1, 100), vec![vm_mac(1, 0)]);
    match &r.departed {
        Departed::Withdrawn(t) => {
            assert!(
                *t >= Duration::from_millis(grace - 500),
                "withdrawn before the grace ended: {t:?}"
            );
            assert!(
                lab.advertised(1, 200).is_empty(),
                "{:?}",
                lab.advertised(1, 200)
            );
            let (n, line) = lab.zebra_mac(2, 200, &vm_mac(1, 1));
            assert_eq!(n, 0, "stale route left: {line}");
        }
        Departed::LearnedFromItsFilter(_) => {
            assert_eq!(backend, "tc", "only tc keeps filters across runs");
            assert_eq!(lab.advertised(1, 200), vec![vm_mac(1, 1)]);
            let (n, line) = lab.zebra_mac(1, 200, &vm_mac(1, 1));
            assert!(n == 1 && line.contains("local"), "{line}");
        }
    }

    // A VM moves from hv1 to hv2.
    let m = Check(&lab).ok(lab.move_vm());
    eprintln!(
        "MAC move: flowd on hv1 follows after {:?}, the kernel VTEP after {:?}, hv1 withdraws after {:?}",
        m.flowd_old, m.kernel_vtep, m.withdrawn_old
    );
    reach(&lab, 3, 0, &vm_ip(1, 0));
    let moved = vm_mac(1, 0);
    let (n, line) = lab.zebra_mac(2, 100, &moved);
    assert!(n == 1 && line.contains("local"), "hv2's zebra: {line}");
    eventually("hv1's zebra to see the move", within, || {
        let (n, line) = lab.zebra_mac(1, 100, &moved);
        n == 1 && line.contains("remote") && line.contains(&vtep(2))
    });
    let s = lab.station(1, 100, &moved).expect("moved station");
    assert_eq!(s.location, format!("vtep {}", vtep(2)));

    // bgpd stops on hv2: its stations and its VTEP leave hv1's tables.
    lab.frr[1].stop_bgpd();
    let t = eventually("hv1 to forget hv2", within, || {
        let fdb = lab.fdb(1);
        fdb.iter().all(|n| {
            n.flood.iter().all(|f| f.vtep != vtep(2))
                && n.stations
                    .iter()
                    .all(|s| !(s.origin == "evpn" && s.location == format!("vtep {}", vtep(2))))
        })
    });
    eprintln!("bgpd stopped on hv2: hv1 withdrew its stations and VTEP after {t:?}");
    let z = lab.frr(1).vtysh("show evpn mac vni all");
    assert!(
        !z.contains(&vtep(2)),
        "hv1's zebra still has hv2's MACs:\n{z}"
    );
    lab.frr[1].start_bgpd().expect("bgpd restarts");
    Check(&lab).ok(lab.wait_fabric(Duration::from_secs(90)));

    // A reload takes VNI 200 out of EVPN on hv1 (its devices go, what EVPN gave it is
    // withdrawn, hv2 stops flooding to hv1 on VNI 200), then puts it back.
    let full = evpn::flowd_config(1, backend, &lab.socket(1), grace);
    let (head, tail) = full.rsplit_once("evpn = true").expect("tenant-b's evpn");
    let without = format!("{head}evpn = false{tail}");
    let msg = Check(&lab).ok(lab.reload_flowd(1, &without));
    assert!(msg.contains("networks changed: tenant-b"), "{msg}");
    eventually(
        "hv1 to drop VNI 200's shadow devices and EVPN state",
        within,
        || {
            let gone = !lab.hvs[0].try_exec("ip link show evbr-200").0;
            let b = lab.fdb(1).into_iter().find(|n| n.segment == "vni 200");
            gone && b.is_some_and(|b| {
                b.evpn.is_none()
                    && b.flood.is_empty()
                    && b.stations.iter().all(|s| s.origin != "evpn")
            })
        },
    );
    eventually("hv2 to stop flooding VNI 200 to hv1", within, || {
        lab.evpn_flood(2, 200).is_empty()
    });
    Check(&lab).ok(lab.reload_flowd(1, &full));
    Check(&lab).ok(lab.wait_fabric(Duration::from_secs(90)));

    // A clean stop removes the shadow devices; zebra withdraws hv2's networks.
    lab.stop_flowd(2, false);
    let (gone, _) = lab.hvs[1].try_exec("ip link show evbr-100");
    assert!(!gone, "hv2's shadow bridge survived a clean stop");
    eventually("hv1 to drop hv2 from its flood lists", within, || {
        lab.evpn_flood(1, 100) == [vtep(3)] && lab.evpn_flood(1, 200).is_empty()
    });
}
