//! The flowd daemon end to end on the host: the lab's topology in network namespaces,
//! the simulated eswitch (this kernel has no cls_flower), the real `flowctl` binary
//! against the running daemon, a reload by SIGHUP and a clean shutdown by SIGTERM.

use flowd::lab;
use flowd::netns::can_netns;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn flowctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run flowctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn daemon_flowctl_reload_and_shutdown() {
    if !can_netns() {
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let mut l = lab::build("dm").expect("lab topology");
    // A receive ring of 4 MiB per port (`[datapath] ring_kib`): 2048 frames of 2 KiB;
    // rep1 has its own of 8 MiB (`[[port]] ring_kib`).
    let cfg = lab::config_text("sim", &l.socket())
        .replace(
            "max_idle_ms = 10000",
            "max_idle_ms = 10000\nring_kib = 4096",
        )
        .replace("name = \"rep1\"", "name = \"rep1\"\nring_kib = 8192");
    l.start_daemon_config(Path::new(env!("CARGO_BIN_EXE_flowd")), &cfg, &[])
        .expect("flowd starts");
    let sock = l.socket();
    // The datapath publishes its ports' counters after its first rounds.
    let ring = |port: &str| match l.request(flowd::control::proto::Request::Stats) {
        Ok(flowd::control::proto::ResponseBody::Stats(s)) => s
            .ports
            .get(port)
            .and_then(|p| p.get("ring_frames"))
            .copied(),
        other => panic!("stats: {other:?}"),
    };
    eventually("the rings in flowctl stats", || {
        ring("rep0").is_some() && ring("rep1").is_some()
    });
    assert_eq!(ring("rep0"), Some(2048), "rep0's ring frames");
    assert_eq!(ring("rep1"), Some(4096), "rep1's own ring frames");

    let (ok, out) = l.vfs[0].try_exec("ping -c 3 -i 0.2 -W 2 1.1.1.3");
    assert!(ok, "ping through the daemon: {out}\n{}", l.log());

    // dump-flows reads like dpctl/dump-flows, with placement and actions.
    let (code, flows, err) = flowctl(&sock, &["dump-flows"]);
    assert_eq!(code, 0, "{err}");
    assert!(flows.contains("offloaded:yes dp:sim"), "{flows}");
    assert!(
        flows.contains("actions:set(tunnel(tun_id=0x10,dst=10.0.0.2"),
        "the VF's encap flow: {flows}"
    );
    assert!(
        flows.contains("tunnel(tun_id=0x10,src=10.0.0.2),in_port(100)"),
        "{flows}"
    );
    let (code, json, _) = flowctl(&sock, &["--json", "dump-flows", "--offloaded"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(rows.as_array().is_some_and(|a| !a.is_empty()), "{json}");

    let (code, tunnels, _) = flowctl(&sock, &["tunnels"]);
    assert_eq!(code, 0);
    assert!(
        tunnels.contains("10.0.0.2") && tunnels.contains("up1"),
        "{tunnels}"
    );

    let (code, trace, _) = flowctl(
        &sock,
        &[
            "trace",
            "in_port(1),eth(src=e4:11:11:11:11:10,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806)",
        ],
    );
    assert_eq!(code, 0);
    assert!(trace.contains("head-end to VTEPs [10.0.0.2]"), "{trace}");

    // Bad arguments: usage error (2), the daemon unaffected; daemon errors: 1.
    assert_eq!(flowctl(&sock, &["trace", "in_port(x"]).0, 2);
    assert_eq!(
        flowctl(
            &sock,
            &["rules", "del", "--priority", "9", "--match", "in_port(7)"]
        )
        .0,
        1
    );

    // Reload: a rule added to the file is applied on SIGHUP, nothing else moves.
    let cfg = l.dir.join("flowd.toml");
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str(
        "\n[[rule]]\npriority = 500\nmatch = \"in_port(2),eth_type(0x86dd)\"\nactions = \"drop\"\n",
    );
    std::fs::write(&cfg, text).expect("write config");
    let pid = l.daemon.as_ref().expect("daemon").id();
    // `ip netns exec` execs flowd in place: the child is the daemon.
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    eventually("the reloaded rule", || {
        flowctl(&sock, &["rules", "list"])
            .1
            .contains("in_port(2),eth_type(0x86dd)")
    });
    let (_, after, _) = flowctl(&sock, &["dump-flows"]);
    assert!(
        after.contains("actions:set(tunnel(tun_id=0x10,dst=10.0.0.2"),
        "unaffected flows stay: {after}"
    );

    // SIGTERM: clean exit, socket removed.
    let mut child = l.daemon.take().expect("daemon");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "flowd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}\n{}", l.log());
    assert!(!sock.exists(), "control socket left behind");
    assert_eq!(flowctl(&sock, &["show"]).0, 1, "no daemon: exit 1");
}
