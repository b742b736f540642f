//! TCP with every device's default offloads through real tc flower (VM suite:
//! tests/vm/run-all.sh), `[offload] policy = "skip_hw"`, MTU 1500 and 9000, both
//! directions: the first packets of each connection cross flowd's software path (on the
//! VM's Debian 6.1 kernel, without UDP segmentation through AF_PACKET: flowd cuts and
//! encapsulates each segment), the rest the filters flowd installed; every transfer is
//! checked byte for byte by its receiver, and tc must have carried the bulk of it.
//!
//! On a host without cls_flower the test is skipped; with FLOWD_VM=1 (inside the VM) a
//! missing cls_flower fails it.

mod common;

use common::exe;
use common::lab::{flows, ping, wait};
use common::tcp::{BYTES, set_mtu, transfers};
use flowd::lab;

/// Packets tc carried (a flow's packets less those through flowd) over the flows `which`
/// selects by their match.
fn tc_packets(l: &lab::Lab, which: impl Fn(&str) -> bool) -> u64 {
    flows(l)
        .iter()
        .filter(|f| which(&f.flow))
        .map(|f| f.packets.saturating_sub(f.sw_packets))
        .sum()
}

#[test]
fn tcp_with_default_offloads_through_tc_flower() {
    if common::skip_without_flower("cls_flower") {
        return;
    }
    let mut l = lab::build("vtcp").expect("lab");
    for dev in ["rep0", "rep1", "up1", "up2"] {
        let _ = l.hv.try_exec(&format!("ethtool -K {dev} gro on"));
    }
    l.start_daemon_config(&exe(), &common::lab_config(&l, "tc"), &[])
        .expect("flowd");
    let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
    assert!(ok, "{out}\n{}", l.log());
    // Two connections each way: 8 MiB per direction, a few thousand packets at 1500.
    let connections = 2;
    let from_vf = |f: &str| f.starts_with("in_port(1)");
    let to_vf = |f: &str| f.contains("tunnel(");
    for (mtu, port) in [(1500u32, 5301u16), (9000, 5311)] {
        if mtu != 1500 {
            set_mtu(&l, mtu);
        }
        let (out0, in0) = (tc_packets(&l, from_vf), tc_packets(&l, to_vf));
        transfers(&l.vfs[0], &l.remote, "1.1.1.3", port, connections);
        transfers(&l.remote, &l.vfs[0], "1.1.1.2", port + 1, connections);
        // The bulk crossed tc: at least a quarter of the packets the transfers need at
        // this MTU (flow counters follow tc's statistics, read periodically: wait).
        let least = (BYTES * usize::from(connections) / mtu as usize / 4) as u64;
        let mut carried = (0, 0);
        let enough = wait(30, || {
            carried = (tc_packets(&l, from_vf) - out0, tc_packets(&l, to_vf) - in0);
            carried.0 >= least && carried.1 >= least
        });
        let (o, i) = carried;
        if !enough {
            panic!(
                "tc carried too little at MTU {mtu} (want {least} packets each way): {o} out, \
                 {i} in\n{:#?}\n{}",
                flows(&l),
                l.log()
            );
        }
        eprintln!("mtu {mtu}: tc carried {o} packets VF -> remote, {i} remote -> VF");
    }
}
