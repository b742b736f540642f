//! Representors plugged and unplugged by a reload while the daemon runs (a VM's VF
//! comes and goes with the VM): the lab's topology in network namespaces, the real
//! daemon binary, with the simulated eswitch on the host and with real tc flower in the
//! VM suite (where a plugged representor needs its ingress qdisc before its filters).

mod common;

use common::lab::{REP2, add_vf2, with_rep2};
use flowd::control::proto::{FlowFilter, FlowRow, PortRow, Request, ResponseBody};
use flowd::lab::{self, Lab};
use flowd::netns::{Netns, can_netns};
use std::time::{Duration, Instant};

/// The answer to `flowctl reload`: `Err` when something was not applied.
fn reload(l: &Lab) -> Result<String, String> {
    match l.request(Request::Reload { allow_empty: false })? {
        ResponseBody::Done(d) => Ok(d.message),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn ports(l: &Lab) -> Vec<PortRow> {
    match l.request(Request::Show) {
        Ok(ResponseBody::Ports(p)) => p,
        other => panic!("show: {other:?}"),
    }
}

fn flows(l: &Lab) -> Vec<FlowRow> {
    match l.request(Request::dump_flows(FlowFilter::All)) {
        Ok(ResponseBody::Flows(f)) => f,
        other => panic!("dump-flows: {other:?}"),
    }
}

/// vf0's unicast encap flow toward the remote station 1.1.1.3.
fn vf0_encap(l: &Lab) -> Option<FlowRow> {
    flows(l).into_iter().find(|r| {
        r.flow
            .contains("in_port(1),eth(src=e4:11:11:11:11:10,dst=82:8a:29:ad:4e:ef)")
            && r.flow.contains("eth_type(0x0800)")
    })
}

fn ping(ns: &Netns, dst: &str) -> bool {
    // A new port's first packets may meet a revalidation in progress: a few tries.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ns.try_exec(&format!("ping -c 2 -i 0.2 -W 1 {dst}")).0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

#[test]
fn representors_plugged_and_unplugged_by_reload() {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let mut l = lab::build("hp").expect("lab topology");
    // A third VM's VF, on tenant-a (VNI 16) like vf0.
    let vf2 = Netns::named("hp-vf2").expect("netns");
    add_vf2(&l, &vf2);
    let _ = vf2.try_exec("ethtool -K vf2 tx off");

    let backend = if flowd::daemon::kernel_has_flower() {
        "tc"
    } else {
        "sim"
    };
    let exe = Lab::flowd_exe(env!("CARGO_BIN_EXE_flowd"));
    // Flows never idle out during the test (it compares vf0's flow before and after
    // the plug, however slow the machine).
    let config = lab::config_text(backend, &l.socket())
        .replace("max_idle_ms = 10000", "max_idle_ms = 3600000");
    l.start_daemon_config(&exe, &config, &[])
        .expect("flowd starts");
    assert!(ping(&l.vfs[0], "1.1.1.3"), "vf0 before:\n{}", l.log());
    let before = vf0_encap(&l).expect("vf0's encap flow");
    assert!(
        !vf2.try_exec("ping -c 1 -W 1 1.1.1.3").0,
        "rep2 is not a port yet"
    );

    // Plug rep2: a port and a member of tenant-a.
    let cfg_path = l.dir.join("flowd.toml");
    let base = std::fs::read_to_string(&cfg_path).expect("config");
    let plugged = with_rep2(&base);
    std::fs::write(&cfg_path, &plugged).expect("write config");
    let msg = reload(&l).expect("reload plugs rep2");
    assert!(msg.contains("representors plugged: rep2"), "{msg}");
    assert!(!msg.contains("not applied"), "{msg}");
    let row = ports(&l).into_iter().find(|p| p.name == "rep2");
    let row = row.expect("show lists rep2");
    assert_eq!((row.id, row.vf, row.mtu), (3, Some(2), Some(1450)));
    assert!(row.ifindex.is_some() && row.switch_id.is_some(), "{row:?}");

    assert!(ping(&vf2, "1.1.1.3"), "vf2 over VXLAN:\n{}", l.log());
    if backend == "tc" {
        // tc flower carries rep2's flows: filters on its (new) ingress qdisc.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut shown = String::new();
        while Instant::now() < deadline && !shown.contains("flower") {
            std::thread::sleep(Duration::from_millis(200));
            shown = l.hv.exec("tc filter show dev rep2 ingress");
        }
        assert!(
            shown.contains("flower"),
            "rep2's filters: {shown}\n{}",
            l.log()
        );
    }
    assert!(ping(&vf2, "1.1.1.2"), "vf2 to vf0, switched locally");
    let rep2_flows = flows(&l)
        .iter()
        .filter(|r| r.flow.contains("in_port(3)"))
        .count();
    assert!(rep2_flows > 0, "flows from rep2");
    // vf0's flow was not dropped by the reload: same flow, its counters kept.
    let after = vf0_encap(&l).expect("vf0's encap flow after the plug");
    assert_eq!(after.id, before.id, "{after:?}");
    assert!(after.packets >= before.packets);

    // A port that does not exist: the reload is refused, nothing changes.
    std::fs::write(
        &cfg_path,
        plugged.clone() + &REP2.replace("rep2", "nosuch0").replace("vf = 2", "vf = 7"),
    )
    .expect("write config");
    let err = reload(&l).expect_err("no such interface");
    assert!(err.contains("nosuch0"), "{err}");
    assert!(ports(&l).iter().all(|p| p.name != "nosuch0"));
    assert!(ping(&vf2, "1.1.1.3"), "rep2 still works");

    // Unplug rep2: its flows go, vf0's stay.
    std::fs::write(&cfg_path, &base).expect("write config");
    let msg = reload(&l).expect("reload unplugs rep2");
    assert!(msg.contains("representors unplugged: rep2"), "{msg}");
    assert!(msg.contains("flows of unplugged ports deleted"), "{msg}");
    assert!(ports(&l).iter().all(|p| p.name != "rep2"));
    let left: Vec<_> = flows(&l)
        .into_iter()
        .filter(|r| r.flow.contains("in_port(3)") || r.actions.split(',').any(|a| a == "3"))
        .collect();
    assert!(left.is_empty(), "flows of rep2 left: {left:#?}");
    assert!(!vf2.try_exec("ping -c 1 -W 1 1.1.1.3").0, "rep2 is gone");
    assert!(ping(&l.vfs[0], "1.1.1.3"), "vf0 after the unplug");
    assert_eq!(vf0_encap(&l).map(|r| r.id), Some(before.id));

    // Plugged again: works again.
    std::fs::write(&cfg_path, &plugged).expect("write config");
    let msg = reload(&l).expect("reload plugs rep2 again");
    assert!(msg.contains("representors plugged: rep2"), "{msg}");
    assert!(ping(&vf2, "1.1.1.3"), "vf2 plugged again:\n{}", l.log());

    // An uplink change is not applied: a restart is needed, and said so in an error
    // answer (flowctl exits non-zero) that also says what was applied.
    std::fs::write(&cfg_path, plugged.replace("id = 12", "id = 13")).expect("write config");
    let msg = reload(&l).expect_err("a reload with a change not applied");
    assert!(
        msg.starts_with("applied: ") && msg.contains("not applied: port (up2)"),
        "{msg}"
    );
    assert!(ports(&l).iter().any(|p| p.name == "up2" && p.id == 12));
}
