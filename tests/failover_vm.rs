//! Route-change failover with real tc flower (VM suite: tests/vm/run-all.sh).
//!
//! The lab's topology (src/lab.rs): each uplink on its own subnet with its own VTEP
//! address, strict reverse-path filtering in the remote namespace, so a packet that
//! still carries uplink 1's source address after the route moved to uplink 2 is dropped
//! there, and only a real migration (the tc filter rewritten with uplink 2's source)
//! restores the stream. A VF pings a host behind the remote VTEP at 1,000 packets/s;
//! the route is replaced mid-stream. The test asserts the stream recovers and the filter
//! now carries uplink 2's address, and records the loss, the longest gap between
//! replies, and the failover time (FLOWD_VM_OUT/failover.txt): from the new route taking
//! effect (the first VXLAN packet over uplink 2, still with uplink 1's source) to the
//! first one with uplink 2's source, both stamped by the remote end's kernel.
//!
//! On a host without cls_flower it is skipped; with FLOWD_VM=1 (inside the VM) a
//! missing cls_flower fails it.

use flowd::control::proto::{FlowFilter, Request, ResponseBody};
use flowd::lab;
use std::path::Path;
use std::time::Duration;

/// The VF's ICMP encap flow: (all packets, packets flowd's software datapath forwarded).
fn encap_counters(l: &lab::Lab) -> Option<(u64, u64)> {
    let Ok(ResponseBody::Flows(rows)) = l.request(Request::dump_flows(FlowFilter::All)) else {
        return None;
    };
    rows.iter()
        .find(|r| {
            r.flow
                .contains("in_port(1),eth(src=e4:11:11:11:11:10,dst=82:8a:29:ad:4e:ef)")
                && r.flow.contains("eth_type(0x0800)")
        })
        .map(|r| (r.packets, r.sw_packets))
}

#[test]
fn route_change_moves_offloaded_flows_to_uplink_2() {
    let in_vm = std::env::var_os("FLOWD_VM").is_some();
    if !flowd::netns::can_netns() || !flowd::daemon::kernel_has_flower() {
        assert!(!in_vm, "the VM must have cls_flower and root");
        eprintln!("skipped: needs cls_flower (run in the VM suite)");
        return;
    }
    let mut l = lab::build("fo").expect("lab topology");
    l.start_daemon_exe(&lab::Lab::flowd_exe(env!("CARGO_BIN_EXE_flowd")), "tc")
        .expect("flowd starts");
    let (ok, out) = l.vfs[0].try_exec("ping -c 3 -i 0.2 -W 2 1.1.1.3");
    assert!(ok, "warm-up ping: {out}\n{}", l.log());
    assert!(
        l.wait_offloaded(2, Duration::from_secs(10)),
        "flows offloaded to tc:\n{}",
        l.log()
    );

    let before = encap_counters(&l).expect("the VF's encap flow exists");
    let r = l.failover("0.001", 3000).expect("failover run");
    // tc's stats are pulled every second.
    std::thread::sleep(Duration::from_millis(1500));
    let after = encap_counters(&l).expect("the VF's encap flow still exists");
    let report = format!(
        "route-change failover (tc flower, skip_hw, 1,000 packets/s): {}\n",
        r.summary()
    );
    print!("{report}");
    if let Some(dir) = std::env::var_os("FLOWD_VM_OUT") {
        let _ = std::fs::write(Path::new(&dir).join("failover.txt"), &report);
        let _ = std::fs::write(Path::new(&dir).join("failover-flowd.log"), l.log());
    }
    assert!(r.sent >= 1000, "the stream ran: {r:?}");
    assert!(
        r.first_on_up2_ms.is_some(),
        "no VXLAN packet with uplink 2's address reached the remote: {r:?}\n{}",
        l.log()
    );
    // Recovery: the stream keeps flowing after the change (a stuck flow would lose
    // everything after it, about two thirds of the stream).
    assert!(
        r.lost() < r.sent / 4,
        "the stream did not recover: {r:?}\n{}",
        l.log()
    );
    // tc, not flowd's software datapath, carried the stream: flowd's own count for the
    // flow barely moves (packets in the instants a filter was being replaced) while the
    // total, which adds tc's counters, grows by the stream.
    let (total, sw) = (after.0 - before.0, after.1 - before.1);
    println!("encap flow during the stream: {total} packets, of which flowd forwarded {sw}");
    assert!(
        total >= r.sent / 2,
        "tc counted the stream: {before:?} -> {after:?}"
    );
    assert!(
        sw * 20 < total,
        "flowd forwarded what tc should: {before:?} -> {after:?}"
    );
    let filters = l.hv.exec("tc filter show dev rep0 ingress");
    assert!(
        filters.contains("src_ip 192.168.2.1"),
        "rep0's encap filter still carries the old source:\n{filters}"
    );
    assert!(
        !filters.contains("src_ip 192.168.1.1"),
        "a filter with uplink 1's source is left:\n{filters}"
    );
}
