//! IPsec on the underlay, through the real daemon on the host (the lab in network
//! namespaces, the simulated eswitch). This kernel has no esp4, so no SA can exist here:
//! these tests cover what must hold without one (the VM suite, `ipsec_vm.rs`, covers
//! encryption end to end with real SAs and tc):
//!
//! - an outbound policy with no SA: nothing leaves in clear, first packets included;
//!   the drops are counted, the flows say why they stay in software, `flowctl tunnels`
//!   shows the policy; flushing the policy re-decides the flows and traffic flows in
//!   clear again;
//! - a `block` policy: dropped and counted;
//! - an inbound policy for a remote that sends in clear: flowd does not take the
//!   cleartext frames off the uplink (the kernel would drop them too), counted.

mod common;

use common::{exe, skip_without_netns as skip, stat, tunnels};

use common::lab::{encap_flows, flows, ping, wait};
use common::wire;

use flowd::lab;

/// The seed's outbound policy shape, from uplink 1's address to the remote VTEP.
const OUT_POLICY: &str = "xfrm policy add src 192.168.1.1/32 dst 10.0.0.2/32 dir out \
                          tmpl src 192.168.1.1 dst 10.0.0.2 proto esp reqid 3 mode transport \
                          priority 12";

#[test]
fn a_policy_without_an_sa_never_sends_in_clear() {
    if skip() {
        return;
    }
    let mut l = lab::build("ipns").expect("lab");
    l.hv.ip(OUT_POLICY);
    l.start_daemon_config(&exe(), &common::lab_config(&l, "sim"), &[])
        .expect("flowd");
    let w = wire(&l.remote, "eth1", || {
        let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
        assert!(!ok, "no SA: nothing can get through\n{out}");
    });
    assert_eq!(w.vxlan, 0, "not one frame in clear, first packets included");
    assert!(
        stat(&l, "ipsec_no_sa") > 0,
        "the drops are counted\n{}",
        l.log()
    );
    assert!(stat(&l, "ipsec_kernel_out") >= stat(&l, "ipsec_no_sa"));
    let t = tunnels(&l);
    let row = t.iter().find(|r| r.endpoint == "10.0.0.2").expect("a row");
    let ipsec = row.ipsec.as_deref().expect("protected");
    assert!(ipsec.ends_with("esp transport (no SA)"), "{ipsec}");
    // The flows toward the remote (ARP's, since nothing answers) stay in software, and
    // say why.
    assert!(
        wait(10, || {
            let f: Vec<_> = flows(&l)
                .into_iter()
                .filter(|f| f.flow.starts_with("in_port(1)") && f.actions.contains("set(tunnel("))
                .collect();
            !f.is_empty()
                && f.iter().all(|f| {
                    f.placement
                        .reason
                        .as_deref()
                        .is_some_and(|r| r.starts_with("ipsec: policy") && r.contains("no SA yet"))
                })
        }),
        "{:#?}",
        flows(&l)
    );

    // The policy goes: the flows are re-decided and the path is in clear again.
    l.hv.ip("xfrm policy flush");
    assert!(
        wait(10, || tunnels(&l).iter().all(|r| r.ipsec.is_none())),
        "{:#?}",
        tunnels(&l)
    );
    let w = wire(&l.remote, "eth1", || {
        let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
        assert!(ok, "{out}\n{}", l.log());
    });
    assert!(w.vxlan > 0, "plain VXLAN again: {w:?}");
    assert!(
        wait(10, || encap_flows(&l, 0)
            .iter()
            .all(|f| f.placement.offloaded)),
        "{:#?}",
        flows(&l)
    );
}

#[test]
fn a_block_policy_drops_and_counts() {
    if skip() {
        return;
    }
    let mut l = lab::build("ipbl").expect("lab");
    l.hv.ip("xfrm policy add dst 10.0.0.2/32 dir out action block");
    l.start_daemon_config(&exe(), &common::lab_config(&l, "sim"), &[])
        .expect("flowd");
    let w = wire(&l.remote, "eth1", || {
        let (ok, _) = ping(&l.vfs[0], "1.1.1.3");
        assert!(!ok);
    });
    assert_eq!(w, common::Wire::default(), "nothing at all on the wire");
    assert!(stat(&l, "ipsec_blocked") > 0, "{}", l.log());
    let t = tunnels(&l);
    assert!(
        t.iter()
            .any(|r| r.ipsec.as_deref().is_some_and(|i| i.ends_with(" block"))),
        "{t:#?}"
    );
}

#[test]
fn cleartext_from_a_remote_an_inbound_policy_covers_is_refused() {
    if skip() {
        return;
    }
    let mut l = lab::build("ipin").expect("lab");
    // Only inbound: flowd sends in clear, the remote answers in clear, and the host's
    // policy says that remote's packets must come as ESP.
    l.hv.ip("xfrm policy add src 10.0.0.2/32 dst 192.168.1.1/32 dir in \
         tmpl src 10.0.0.2 dst 192.168.1.1 proto esp reqid 7 mode transport priority 12");
    l.start_daemon_config(&exe(), &common::lab_config(&l, "sim"), &[])
        .expect("flowd");
    let (ok, _) = ping(&l.vfs[0], "1.1.1.3");
    assert!(!ok, "the answers come in clear: refused");
    assert!(stat(&l, "ipsec_clear_dropped") > 0, "counted\n{}", l.log());
    assert_eq!(stat(&l, "ipsec_rx"), 0, "the kernel delivered none either");
    l.hv.ip("xfrm policy flush");
    assert!(
        wait(15, || ping(&l.vfs[0], "1.1.1.3").0),
        "in clear both ways again\n{}",
        l.log()
    );
}
