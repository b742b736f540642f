//! [`Fabric`] against the kernel, in a network namespace of its own: the shadow devices
//! as zebra needs them, adoption, local stations written and reconciled idempotently,
//! zebra's entries (written here with `bridge fdb`, the flags zebra uses) read back as
//! remote stations and flood lists, a device deleted behind flowd's back, removal.
//! Needs root; skipped otherwise.

use evpn::{Fabric, LocalOp, RemoteEvent, ShadowSpec};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}`: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread inside a fresh network namespace (deleted afterwards).
fn in_netns(f: impl FnOnce() + Send) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: needs root and iproute2");
        return false;
    }
    let name = format!("evfab{}", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    sh(&format!("ip netns add {name}"));
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _del = Del(name.clone());
    let res = std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
            // SAFETY: a valid namespace descriptor; affects only this thread (and the
            // processes it spawns).
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            sh("ip link set lo up");
            f();
        })
        .join()
    });
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
    true
}

fn spec(port: u16) -> ShadowSpec {
    ShadowSpec {
        vni: 100,
        local: Ipv4Addr::new(10, 0, 0, 1),
        udp_port: port,
    }
}

/// Polls until `f` holds for the events gathered so far.
fn poll_until(
    fabric: &mut Fabric,
    events: &mut Vec<RemoteEvent>,
    f: impl Fn(&[RemoteEvent]) -> bool,
) {
    let t0 = Instant::now();
    while !f(events) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "events so far: {events:?}"
        );
        fabric
            .poll(Duration::from_millis(50), events)
            .expect("poll");
    }
}

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const M: [u8; 6] = [2, 0, 0, 0, 0, 0xc];

#[test]
fn shadow_devices_and_their_fdb() {
    in_netns(|| {
        let mut fabric = Fabric::open().expect("netlink");
        let mut events = Vec::new();
        let r = fabric
            .set_networks(&[spec(61_000)], &mut events)
            .expect("create");
        assert_eq!(r.created, ["evbr-100", "evvx-100", "evad-100"]);
        let vx = sh("ip -d -o link show evvx-100");
        for want in [
            "vxlan id 100",
            "local 10.0.0.1",
            "dstport 61000",
            "nolearning",
            "master evbr-100",
            "learning off",
        ] {
            assert!(vx.contains(want), "{want}: {vx}");
        }
        let adv = sh("ip -d -o link show evad-100");
        assert!(
            adv.contains("master evbr-100") && adv.contains("learning off"),
            "{adv}"
        );
        for dev in ["evbr-100", "evvx-100", "evad-100", "evpe-100"] {
            let l = sh(&format!("ip -o link show {dev}"));
            assert!(l.contains(",UP"), "{dev} is up: {l}");
            let v6 = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"));
            assert!(
                v6.is_err() || v6.is_ok_and(|v| v.trim() == "1"),
                "{dev}: IPv6 disabled"
            );
        }
        // Adopted as they are.
        let r = fabric
            .set_networks(&[spec(61_000)], &mut events)
            .expect("adopt");
        assert!(r.created.is_empty() && r.recreated.is_empty(), "{r:?}");
        assert_eq!(r.adopted.len(), 3);

        // Local stations: written, reconciled idempotently, removed.
        let want = BTreeSet::from([A, B]);
        assert_eq!(
            fabric.sync_local(100, &want, &mut events),
            vec![LocalOp::Add(A), LocalOp::Add(B)]
        );
        assert!(
            fabric.sync_local(100, &want, &mut events).is_empty(),
            "idempotent"
        );
        let fdb = sh("bridge fdb show dev evad-100");
        assert!(
            fdb.contains("02:00:00:00:00:0a master evbr-100 static"),
            "{fdb}"
        );
        assert!(
            !fdb.contains("vlan"),
            "one entry per station, no VLAN copies: {fdb}"
        );
        assert!(!fdb.contains("0a master evbr-100 permanent"), "{fdb}");
        fabric
            .poll(Duration::from_millis(100), &mut events)
            .expect("poll");
        assert!(
            fabric.sync_local(100, &want, &mut events).is_empty(),
            "after the notifications"
        );
        assert_eq!(
            fabric.sync_local(100, &BTreeSet::from([B]), &mut events),
            vec![LocalOp::Del(A)]
        );
        assert!(!sh("bridge fdb show dev evad-100").contains(":0a "));
        // A previous run's entries are found by a new Fabric (a restart).
        drop(fabric);
        let mut fabric = Fabric::open().expect("netlink");
        fabric
            .set_networks(&[spec(61_000)], &mut events)
            .expect("adopt");
        assert_eq!(fabric.local_stations(100), BTreeSet::from([B]));

        // zebra's remote MAC (NTF_MASTER|NTF_SELF|NTF_EXT_LEARNED) and flood entries.
        events.clear();
        sh(
            "bridge fdb replace 02:00:00:00:00:0c dev evvx-100 dst 10.0.0.2 self master extern_learn",
        );
        sh("bridge fdb append 00:00:00:00:00:00 dev evvx-100 dst 10.0.0.2 self permanent");
        sh("bridge fdb append 00:00:00:00:00:00 dev evvx-100 dst 10.0.0.3 self permanent");
        poll_until(&mut fabric, &mut events, |ev| {
            ev.contains(&RemoteEvent::Station {
                vni: 100,
                mac: M,
                vtep: "10.0.0.2".parse().unwrap(),
            }) && ev
                .iter()
                .any(|e| matches!(e, RemoteEvent::FloodList { vteps, .. } if vteps.len() == 2))
        });
        assert_eq!(
            fabric.flood_list(100),
            [
                "10.0.0.2".parse::<std::net::IpAddr>().unwrap(),
                "10.0.0.3".parse().unwrap()
            ]
        );
        // The station moves here: flowd's entry takes the bridge entry over, and it is no
        // longer remote although zebra's vxlan entry stays.
        events.clear();
        fabric.sync_local(100, &BTreeSet::from([B, M]), &mut events);
        assert_eq!(
            events,
            [RemoteEvent::StationGone {
                vni: 100,
                mac: M,
                vtep: "10.0.0.2".parse().unwrap()
            }]
        );
        assert!(sh("bridge fdb show dev evad-100").contains("02:00:00:00:00:0c"));
        assert!(fabric.remote_stations(100).is_empty());

        // A device deleted behind flowd's back is noticed and restored.
        sh("ip link del evad-100");
        let t0 = Instant::now();
        loop {
            let r = fabric
                .poll(Duration::from_millis(50), &mut events)
                .expect("poll");
            if r.devices_lost {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the deletion was not noticed"
            );
        }
        let r = fabric
            .set_networks(&[spec(61_000)], &mut events)
            .expect("restore");
        assert_eq!(r.created, ["evad-100"]);
        // Another port: the vxlan device is re-created.
        let r = fabric
            .set_networks(&[spec(61_001)], &mut events)
            .expect("recreate");
        assert_eq!(r.recreated, ["evvx-100"]);
        assert!(sh("ip -d -o link show evvx-100").contains("dstport 61001"));

        // Gone.
        let gone = fabric.remove_all().expect("remove");
        assert_eq!(gone, ["evad-100", "evbr-100", "evvx-100"]);
        assert!(
            !sh("ip -o link show").contains("ev"),
            "{}",
            sh("ip -o link show")
        );
    });
}
