//! Restart without traffic loss (VM suite: tests/vm/run-all.sh): `flowd --keep-offloads`
//! stops and leaves its tc filters carrying the traffic; the next start adopts them.
//!
//! In the lab (src/lab.rs) VF 0 pings the host behind the remote VTEP through offloaded
//! filters (encap on rep0, decap on the tunnel device). Under a steady ping the daemon is
//! stopped with --keep-offloads, the traffic runs on tc alone for a second, and a new
//! daemon starts. (A flow that has no filter yet cannot start while no flowd runs: the
//! hosts' neighbour entries are made permanent so that no ARP refresh needs one.) The test asserts that no echo request is lost, that the new daemon
//! took the very same filters over (same handles, no new filter), shows the flows as
//! offloaded and counts the adoption, and that a clean stop without --keep-offloads
//! then removes every filter.
//!
//! On a host without cls_flower it is skipped; with FLOWD_VM=1 (inside the VM) a
//! missing cls_flower fails it.

mod common;

use common::stat;

use flowd::lab;
use flowd::netns::Netns;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// flowd's filters on the lab's two ingress devices, one line per filter (device and
/// the `filter ... handle ...` header line tc prints).
fn filters(l: &lab::Lab) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dev in ["rep0", "rep1", "vxlan_sys_4789"] {
        let shown = l.hv.exec(&format!("tc filter show dev {dev} ingress"));
        out.extend(
            shown
                .lines()
                .filter(|x| x.contains("handle") && x.contains("flower"))
                .map(|x| format!("{dev}: {}", x.trim())),
        );
    }
    out
}

/// Wall-clock time, to line events up with ping -D's timestamps.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn restart_with_keep_offloads_adopts_the_filters_without_loss() {
    let in_vm = std::env::var_os("FLOWD_VM").is_some();
    if !flowd::netns::can_netns() || !flowd::daemon::kernel_has_flower() {
        assert!(!in_vm, "the VM must have cls_flower and root");
        eprintln!("skipped: needs cls_flower (run in the VM suite)");
        return;
    }
    let exe = &lab::Lab::flowd_exe(env!("CARGO_BIN_EXE_flowd"));
    let mut l = lab::build("rs").expect("lab topology");
    // No flow may idle out while the test compares its snapshots: the machine may be
    // slow, the test must not depend on it.
    let cfg =
        lab::config_text("tc", &l.socket()).replace("max_idle_ms = 10000", "max_idle_ms = 3600000");
    assert!(cfg.contains("max_idle_ms = 3600000"));
    l.start_daemon_config(exe, &cfg, &["--keep-offloads"])
        .expect("flowd starts");
    let (ok, out) = l.vfs[0].try_exec("ping -c 3 -i 0.2 -W 2 1.1.1.3");
    assert!(ok, "warm-up ping: {out}\n{}", l.log());
    assert!(
        l.wait_offloaded(2, Duration::from_secs(10)),
        "flows offloaded to tc:\n{}",
        l.log()
    );
    assert!(filters(&l).len() >= 2, "filters: {:?}", filters(&l));
    // While no flowd runs, only flows that have filters move. The stream's own flows do;
    // the neighbour refreshes the two hosts would make meanwhile (a unicast ARP probe
    // and its reply, flows of their own that need the slow path) are taken out of the
    // picture with permanent entries: this test is about the offloaded flows.
    l.remote
        .ip("neigh replace 1.1.1.2 lladdr e4:11:11:11:11:10 dev vxlan16 nud permanent");
    l.vfs[0].ip("neigh replace 1.1.1.3 lladdr 82:8a:29:ad:4e:ef dev vf0 nud permanent");

    // A steady stream across the restart: 200 requests/s for 8 s.
    let vf = l.vfs[0].name.clone();
    let pinger = std::thread::spawn(move || {
        Netns::borrowed(&vf).try_exec("ping -D -c 1600 -i 0.005 -W 1 1.1.1.3")
    });
    std::thread::sleep(Duration::from_secs(2));
    // (Other flows, e.g. the VF's IPv6 neighbour discovery, may add filters at any
    // time: the checks are inclusions.)
    let before = filters(&l);
    let mut events = vec![format!("[{:.6}] stop", now())];
    let st = l.stop_daemon().expect("flowd stops on SIGTERM");
    events.push(format!("[{:.6}] stopped", now()));
    assert!(st.success(), "flowd exit status {st}:\n{}", l.log());
    let kept = filters(&l);
    assert!(
        before.is_subset(&kept),
        "--keep-offloads removed filters: {before:?} -> {kept:?}"
    );
    // tc alone carries the traffic now.
    std::thread::sleep(Duration::from_secs(1));
    events.push(format!("[{:.6}] start", now()));
    l.start_daemon_config(exe, &cfg, &[])
        .expect("flowd starts again");
    events.push(format!("[{:.6}] started", now()));
    assert!(
        l.wait_offloaded(2, Duration::from_secs(10)),
        "flows offloaded after the restart:\n{}",
        l.log()
    );
    let (_, out) = pinger.join().expect("pinger thread");
    let (sent, received) = lab::ping_counts(&out).expect("ping summary");
    let gap = lab::longest_gap_ms(&out).unwrap_or(f64::NAN);
    let report = format!(
        "restart with --keep-offloads under 200 packets/s: sent {sent} received {received} \
         lost {} duplicates {}; longest gap {gap:.1} ms; kept filters found {} adopted {} \
         replaced {} removed {}\n",
        sent - received,
        lab::ping_duplicates(&out),
        stat(&l, "kept_filters_found"),
        stat(&l, "kept_filters_adopted"),
        stat(&l, "kept_filters_replaced"),
        stat(&l, "kept_filters_removed"),
    );
    print!("{report}");
    if let Some(dir) = std::env::var_os("FLOWD_VM_OUT") {
        let _ = std::fs::write(Path::new(&dir).join("restart.txt"), &report);
        let _ = std::fs::write(Path::new(&dir).join("restart-flowd.log"), l.log());
    }
    assert!(sent >= 1500, "the stream ran: {out}");
    // Until adoption decides, a kept filter carries its flow alone: flowd does not
    // forward the copy its tap sees (a duplicate reply would show here).
    let duplicates = lab::ping_duplicates(&out);
    assert_eq!(
        duplicates,
        0,
        "packets forwarded twice during the restart: {}",
        out.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    if received != sent {
        l.diagnose();
        for (ns, cmd) in [
            (&l.hv, "ip neigh; tc -s filter show dev rep0 ingress"),
            (&l.remote, "ip neigh; bridge fdb show dev vxlan16"),
            (&l.vfs[0], "ip neigh"),
        ] {
            println!("--- {}: {cmd}\n{}", ns.name, ns.try_exec(cmd).1);
        }
    }
    assert_eq!(
        received,
        sent,
        "packets lost across the restart:\n{}\n{}\n{}",
        events.join("\n"),
        out.lines()
            .rev()
            .find(|l| l.contains("bytes from"))
            .unwrap_or(""),
        l.log()
    );
    // The same filters, taken over rather than re-created.
    let after = filters(&l);
    assert!(
        kept.is_subset(&after),
        "the new daemon re-created or removed kept filters: {kept:?} -> {after:?}"
    );
    assert!(stat(&l, "kept_filters_adopted") >= 2, "{}", l.log());
    assert_eq!(stat(&l, "kept_filters_removed"), 0, "{}", l.log());

    // A stop without --keep-offloads removes everything flowd owns.
    let st = l.stop_daemon().expect("flowd stops on SIGTERM");
    assert!(st.success(), "flowd exit status {st}");
    assert_eq!(
        filters(&l),
        BTreeSet::new(),
        "filters left after a clean stop"
    );
}
