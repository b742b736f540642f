//! IPsec on the underlay with real SAs and real tc flower (VM suite: Debian's kernel has
//! esp4 and gcm(aes); the host kernel has neither). The seed's setup
//! (seeds/sriov-connectx6-vxlan-ipsec.txt) between the lab's two hosts: transport-mode
//! ESP with AES-GCM between the hypervisor's VTEP address (uplink 1, 192.168.1.1) and
//! the remote VTEP (10.0.0.2), a policy and an SA each way on each side. A VF pings a
//! remote VM while the remote's underlay port is captured:
//!
//! (a) the first packets (flowd's software path, both directions),
//! (b) the flows offloaded (tc `skip_hw`: tc's software path sends through the tunnel
//!     device, so the kernel encrypts),
//! (c) software again after an MTU refusal: the MTU rule counts ESP, so the lab's
//!     representor MTU 1450, which plain VXLAN fits in the 1500 underlay, no longer fits
//!     (1450 + 50 + 37 > 1500; the test starts at 1400),
//!
//! zero cleartext VXLAN frames in every phase, ESP frames present, every ping answered.
//! Then the policies and SAs go: the flows are re-decided and traffic is plain VXLAN.

mod common;

use common::{exe, stat, tunnels};

use common::lab::{encap_flows, flows, ping, wait};
use common::{Wire, wire};
use flowd::lab::{self, Lab};
use flowd::netns::Netns;

const HV: &str = "192.168.1.1";
const RM: &str = "10.0.0.2";
const KEY_OUT: &str = "0x20f01f80a26f633d85617465686c32552c92c42f";
const KEY_IN: &str = "0x6cb228189b4c6e82e66e46920a2cde39187de4ba";

/// The seed's states and policies on one side: `local` sends with SPI `out_spi`.
fn seed_ipsec(ns: &Netns, local: &str, remote: &str, out: (u32, &str), inn: (u32, &str)) {
    for (src, dst, (spi, key), dir) in [(local, remote, out, "out"), (remote, local, inn, "in")] {
        ns.ip(&format!(
            "xfrm state add src {src} dst {dst} proto esp spi {spi:#x} reqid {spi:#x} \
             mode transport aead 'rfc4106(gcm(aes))' {key} 128 sel src {src} dst {dst} \
             flag esn replay-window 64"
        ));
        ns.ip(&format!(
            "xfrm policy add src {src}/32 dst {dst}/32 dir {dir} tmpl src {src} dst {dst} \
             proto esp reqid {spi:#x} mode transport priority 12"
        ));
    }
}

/// Pings a remote VM from vf0 while the remote's uplink-1 port is captured; every ping
/// must be answered.
fn pinged(l: &Lab, phase: &str) -> Wire {
    let w = wire(&l.remote, "eth1", || {
        let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
        assert!(ok, "{phase}: {out}\n{}", l.log());
    });
    eprintln!(
        "{phase}: on the remote's underlay {} cleartext VXLAN, {} ESP",
        w.vxlan, w.esp
    );
    w
}

fn all_encap_flows(l: &Lab, pred: impl Fn(&flowd::control::proto::FlowRow) -> bool) -> bool {
    let f = encap_flows(l, 0);
    !f.is_empty() && f.iter().all(pred)
}

#[test]
fn no_tunnel_frame_ever_leaves_in_clear() {
    if common::skip_without_flower("cls_flower and esp4") {
        return;
    }
    let mut l = lab::build("vips").expect("lab");
    seed_ipsec(&l.hv, HV, RM, (3, KEY_OUT), (7, KEY_IN));
    seed_ipsec(&l.remote, RM, HV, (7, KEY_IN), (3, KEY_OUT));
    // Room for ESP, as the seed leaves 216 bytes under its 9216 uplink.
    l.hv.ip("link set rep0 mtu 1400");
    l.vfs[0].ip("link set vf0 mtu 1400");
    // The VMs speak only the pings: their neighbours are permanent and IPv6 is off on
    // every VM, the other network's too (an ARP refresh or an IPv6 multicast report is
    // a new flow, which flowd rightly sends itself, through the kernel, to the same
    // remote; under qemu's slow clock one would fall into the offloaded phase, where
    // what is checked is that tc sent the pings).
    for (ns, dev) in [
        (&l.vfs[0], "vf0"),
        (&l.vfs[1], "vf1"),
        (&l.remote, "vxlan16"),
        (&l.remote, "vxlan17"),
    ] {
        let _ = ns.try_exec(&format!("sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1"));
    }
    l.remote
        .ip("neigh replace 1.1.1.2 lladdr e4:11:11:11:11:10 dev vxlan16 nud permanent");
    l.vfs[0].ip("neigh replace 1.1.1.3 lladdr 82:8a:29:ad:4e:ef dev vf0 nud permanent");
    l.start_daemon_config(&exe(), &common::lab_config(&l, "tc"), &[])
        .expect("flowd");

    // (a) The first packets: flowd's software path, both ways.
    let w = pinged(&l, "first packets");
    assert_eq!(w.vxlan, 0, "first packets: {w:?}");
    assert!(w.esp > 0, "first packets: {w:?}");
    assert!(stat(&l, "ipsec_kernel_out") > 0, "{}", l.log());
    assert!(
        stat(&l, "ipsec_rx") > 0,
        "the answers came decrypted by the kernel"
    );
    let t = tunnels(&l);
    let row = t.iter().find(|r| r.endpoint == RM).expect("a row");
    let ipsec = row.ipsec.as_deref().expect("protected");
    assert!(ipsec.contains("esp transport spi 0x3"), "{ipsec}");

    // (b) Offloaded (skip_hw): encap and decap filters, the kernel encrypts.
    assert!(
        wait(20, || all_encap_flows(&l, |f| f.placement.offloaded)),
        "offloaded: {:#?}\n{}",
        flows(&l),
        l.log()
    );
    let before = stat(&l, "ipsec_kernel_out");
    let w = pinged(&l, "offloaded");
    assert_eq!(w.vxlan, 0, "offloaded: {w:?}");
    assert!(w.esp >= 6, "offloaded: {w:?}");
    assert_eq!(
        stat(&l, "ipsec_kernel_out"),
        before,
        "tc sent them, not flowd: {:#?}",
        flows(&l)
    );

    // (c) An MTU refusal: software again, still through the kernel.
    l.hv.ip("link set rep0 mtu 1450");
    l.vfs[0].ip("link set vf0 mtu 1450");
    assert!(
        wait(20, || all_encap_flows(&l, |f| f
            .placement
            .reason
            .as_deref()
            == Some("mtu: 1450 + 87 > 1500"))),
        "{:#?}",
        flows(&l)
    );
    let before = stat(&l, "ipsec_kernel_out");
    let w = pinged(&l, "software after the MTU refusal");
    assert_eq!(w.vxlan, 0, "software: {w:?}");
    assert!(w.esp >= 6, "software: {w:?}");
    assert!(stat(&l, "ipsec_kernel_out") > before, "flowd sent them");

    // The policies and SAs go: re-decided, plain VXLAN.
    for ns in [&l.hv, &l.remote] {
        ns.ip("xfrm policy flush");
        ns.ip("xfrm state flush");
    }
    assert!(
        wait(20, || tunnels(&l).iter().all(|r| r.ipsec.is_none())),
        "{:#?}",
        tunnels(&l)
    );
    assert!(
        wait(20, || all_encap_flows(&l, |f| f.placement.offloaded)),
        "{:#?}",
        flows(&l)
    );
    // 1450 + 50 fits again.
    let w = pinged(&l, "without IPsec");
    assert!(w.vxlan > 0 && w.esp == 0, "plain VXLAN: {w:?}");
}
