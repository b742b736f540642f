//! Placement as conditions change, through the real daemon on the host (the lab's
//! topology in network namespaces, the simulated eswitch: this kernel has no
//! cls_flower). Each test is one of the placement issue's scenarios:
//!
//! - a representor's MTU raised and lowered with `ip link` while flowd runs re-decides
//!   its flows both ways; a configured `mtu` is set on the netdev;
//! - two networks toward the same remote VTEP, one sourced from an address a policy rule
//!   routes through the other uplink: each takes its own path (the remote runs strict
//!   reverse-path filtering, so a packet on the wrong uplink or with the wrong source
//!   is dropped), `flowctl tunnels` shows a row per lookup key;
//! - a network's `fwmark` picks the path `ip rule fwmark` names;
//! - a burst of new flows larger than the offload queue is offloaded in full;
//! - a flow kept in software (MTU) gets its next hop resolved and is forwarded;
//! - a representor deleted and re-created under the same name carries traffic again;
//! - a raised MTU is carried (the receive ring grows) and a packet too big for its path
//!   is answered with ICMP "fragmentation needed".

mod common;

use common::{exe, skip_without_netns as skip, stat, tunnels};

use common::lab::{capture, encap_flows, flows, ping, wait};
use flowd::control::proto::{Request, ResponseBody};
use flowd::lab::{self, Lab};
use flowd::netns::Netns;

#[test]
fn a_live_mtu_change_redecides_the_flows_of_its_port() {
    if skip() {
        return;
    }
    let mut l = lab::build("pmtu").expect("lab");
    // rep1 is configured at MTU 1400: flowd sets it on the netdev.
    let cfg = common::lab_config(&l, "sim").replace(
        "name = \"rep1\"\nrole = \"representor\"\n",
        "name = \"rep1\"\nrole = \"representor\"\nmtu = 1400\n",
    );
    l.start_daemon_config(&exe(), &cfg, &[]).expect("flowd");
    assert!(
        l.hv.ip("link show rep1").contains("mtu 1400"),
        "the configured mtu is set on the netdev"
    );
    let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
    assert!(ok, "{out}\n{}", l.log());
    assert!(
        wait(10, || encap_flows(&l, 0)
            .iter()
            .any(|f| f.placement.offloaded)),
        "offloaded at MTU 1450: {:#?}",
        flows(&l)
    );

    // 1500 + 50 no longer fits the 1500 uplink: back to software, with the reason.
    l.hv.ip("link set rep0 mtu 1500");
    assert!(
        wait(10, || encap_flows(&l, 0).iter().any(|f| f
            .placement
            .reason
            .as_deref()
            == Some("mtu: 1500 + 50 > 1500"))),
        "{:#?}\n{}",
        encap_flows(&l, 0),
        l.log()
    );
    assert_eq!(
        encap_flows(&l, 0)
            .iter()
            .find(|f| !f.placement.offloaded)
            .and_then(|f| f.placement.category.clone())
            .as_deref(),
        Some("mtu")
    );
    let show = match l.request(Request::Show) {
        Ok(ResponseBody::Ports(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        show.iter().find(|p| p.name == "rep0").and_then(|p| p.mtu),
        Some(1500),
        "flowctl show tells the live MTU"
    );
    // And back, with no restart and no reload.
    l.hv.ip("link set rep0 mtu 1450");
    assert!(
        wait(10, || {
            let f = encap_flows(&l, 0);
            !f.is_empty() && f.iter().all(|f| f.placement.offloaded)
        }),
        "{:#?}",
        encap_flows(&l, 0)
    );
}

#[test]
fn two_networks_toward_one_remote_take_their_own_paths() {
    if skip() {
        return;
    }
    let mut l = lab::build("pshr").expect("lab");
    // tenant-a (VNI 16) sources its tunnels from up2's address, which a policy rule
    // sends through table 100 (up2); tenant-b follows the main table (up1).
    l.hv.ip("route add 10.0.0.2/32 via 192.168.2.2 dev up2 table 100");
    l.hv.ip("rule add from 192.168.2.1 lookup 100 pref 100");
    let cfg = common::lab_config(&l, "sim").replace(
        "name = \"tenant-a\"\nvni = 16\n",
        "name = \"tenant-a\"\nvni = 16\nlocal_vtep = \"192.168.2.1\"\n",
    );
    l.start_daemon_config(&exe(), &cfg, &[]).expect("flowd");
    let vf0 = l.vfs[0].name.clone();
    let vf1 = l.vfs[1].name.clone();
    let on_eth2 = capture(&l, "eth2", || {
        let (ok, out) = ping(&Netns::borrowed(&vf0), "1.1.1.3");
        assert!(ok, "tenant-a through up2: {out}");
    });
    let on_eth1 = capture(&l, "eth1", || {
        let (ok, out) = ping(&Netns::borrowed(&vf1), "2.2.2.3");
        assert!(ok, "tenant-b through up1: {out}");
    });
    assert!(
        on_eth2.iter().any(|(s, v)| s == "192.168.2.1" && *v == 16),
        "{on_eth2:?}"
    );
    assert!(
        on_eth2.iter().all(|(s, v)| s == "192.168.2.1" && *v == 16),
        "only tenant-a, from up2's address, on up2: {on_eth2:?}"
    );
    assert!(
        on_eth1.iter().any(|(s, v)| s == "192.168.1.1" && *v == 17),
        "{on_eth1:?}"
    );
    assert!(
        on_eth1.iter().all(|(s, v)| s == "192.168.1.1" && *v == 17),
        "only tenant-b, from up1's address, on up1: {on_eth1:?}"
    );
    // One row per lookup key, each with its own uplink.
    let rows = tunnels(&l);
    let sourced = rows
        .iter()
        .find(|r| r.endpoint == "10.0.0.2" && r.from.as_deref() == Some("192.168.2.1"))
        .unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(sourced.uplink.as_deref(), Some("up2"));
    let routed = rows
        .iter()
        .find(|r| r.endpoint == "10.0.0.2" && r.from.is_none())
        .unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(routed.uplink.as_deref(), Some("up1"));
    assert_eq!(routed.source_ip.as_deref(), Some("192.168.1.1"));
    // Both offloaded (the simulated eswitch holds up1 and up2).
    assert!(
        wait(10, || encap_flows(&l, 0)
            .iter()
            .any(|f| f.placement.offloaded)
            && encap_flows(&l, 1).iter().any(|f| f.placement.offloaded)),
        "{:#?}",
        flows(&l)
    );
}

#[test]
fn a_networks_fwmark_picks_its_path() {
    if skip() {
        return;
    }
    let mut l = lab::build("pmrk").expect("lab");
    l.hv.ip("route add 10.0.0.2/32 via 192.168.2.2 dev up2 table 100");
    l.hv.ip("rule add fwmark 0x10 lookup 100 pref 100");
    let cfg = common::lab_config(&l, "sim").replace(
        "name = \"tenant-a\"\nvni = 16\n",
        "name = \"tenant-a\"\nvni = 16\nfwmark = 0x10\n",
    );
    l.start_daemon_config(&exe(), &cfg, &[]).expect("flowd");
    let vf0 = l.vfs[0].name.clone();
    let vf1 = l.vfs[1].name.clone();
    let on_eth2 = capture(&l, "eth2", || {
        let (ok, out) = ping(&Netns::borrowed(&vf0), "1.1.1.3");
        assert!(ok, "the marked network through up2: {out}");
        let (ok, out) = ping(&Netns::borrowed(&vf1), "2.2.2.3");
        assert!(ok, "the other through up1: {out}");
    });
    assert!(
        on_eth2.iter().any(|(s, v)| s == "192.168.2.1" && *v == 16),
        "{on_eth2:?}"
    );
    assert!(
        on_eth2.iter().all(|(_, v)| *v == 16),
        "the unmarked network stays on up1: {on_eth2:?}"
    );
    let kernel = l.hv.ip("route get 10.0.0.2 mark 0x10");
    assert!(kernel.contains("dev up2"), "{kernel}");
    let rows = tunnels(&l);
    let marked = rows
        .iter()
        .find(|r| r.mark == 0x10)
        .unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(marked.uplink.as_deref(), Some("up2"));
    assert!(
        encap_flows(&l, 0)
            .iter()
            .all(|f| f.actions.contains(",mark=0x10,")),
        "{:#?}",
        encap_flows(&l, 0)
    );
}

#[test]
fn a_burst_larger_than_the_offload_queue_is_offloaded_in_full() {
    if skip() {
        return;
    }
    let mut l = lab::build("pbst").expect("lab");
    let cfg = common::lab_config(&l, "sim").replace(
        "policy = \"skip_hw\"\n",
        "policy = \"skip_hw\"\nqueue = 4\n",
    );
    l.start_daemon_config(&exe(), &cfg, &[]).expect("flowd");
    let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
    assert!(ok, "{out}");
    // 400 new flows at once: IPv4 frames from as many source MACs toward the remote
    // host's MAC, written on the VF.
    let n = 400u32;
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut f = vec![0u8; 60];
            f[..6].copy_from_slice(&[0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
            f[6..12].copy_from_slice(&[0x02, 0x42, 0, 0, (i >> 8) as u8, i as u8]);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14] = 0x45;
            f[16..18].copy_from_slice(&46u16.to_be_bytes());
            f[22] = 64;
            f[23] = 17;
            f[26..30].copy_from_slice(&[1, 1, 1, 2]);
            f[30..34].copy_from_slice(&[1, 1, 1, 3]);
            f
        })
        .collect();
    let vf = l.vfs[0].name.clone();
    std::thread::spawn(move || {
        flowd::netns::Netns::borrowed(&vf)
            .enter()
            .expect("enter the VF");
        let mut port = datapath::port::AfPacketPort::open("vf0", 64).expect("AF_PACKET");
        let mut batch = datapath::port::PacketBatch::new(64, 128);
        for chunk in frames.chunks(64) {
            batch.clear();
            for f in chunk {
                assert!(batch.push(f));
            }
            datapath::port::Port::send(&mut port, &batch).expect("send");
        }
    })
    .join()
    .expect("sender");
    let burst = |l: &Lab| {
        flows(l)
            .into_iter()
            .filter(|f| f.flow.contains("src=02:42:00:00:"))
            .collect::<Vec<_>>()
    };
    let done = wait(30, || {
        let b = burst(&l);
        b.len() == n as usize && b.iter().all(|f| f.placement.offloaded)
    });
    let b = burst(&l);
    let waiting = b.iter().filter(|f| !f.placement.offloaded).count();
    assert!(
        done,
        "{} flows, {waiting} not offloaded: {:?}",
        b.len(),
        b.iter().find(|f| !f.placement.offloaded)
    );
    assert!(
        stat(&l, "offload_deferred") > 0,
        "the queue of 4 overflowed into the backlog"
    );
}

#[test]
fn a_software_flow_gets_its_next_hop_resolved() {
    if skip() {
        return;
    }
    let mut l = lab::build("pblk").expect("lab");
    // A fresh hypervisor's defaults: representor and uplinks all at 1500 (the VF too);
    // the next hop toward the remote never resolved.
    for i in 0..2 {
        l.vfs[i].ip(&format!("link set vf{i} mtu 1500"));
        l.hv.ip(&format!("link set rep{i} mtu 1500"));
    }
    l.hv.ip("neigh flush dev up1");
    assert!(
        !l.hv.ip("neigh show dev up1").contains("lladdr"),
        "the gateway is unresolved"
    );
    l.start_daemon_config(&exe(), &common::lab_config(&l, "sim"), &[])
        .expect("flowd");
    let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
    assert!(
        ok,
        "a flow kept in software for its MTU still works: {out}\n{}",
        l.log()
    );
    let f = encap_flows(&l, 0);
    assert!(
        f.iter()
            .any(|f| f.placement.reason.as_deref() == Some("mtu: 1500 + 50 > 1500")),
        "{f:#?}"
    );
    assert!(f.iter().all(|f| f.sw_packets > 0 || f.packets == 0));
}

#[test]
fn a_recreated_representor_carries_traffic_again() {
    if skip() {
        return;
    }
    let mut l = lab::build("prec").expect("lab");
    l.start_daemon_config(&exe(), &common::lab_config(&l, "sim"), &[])
        .expect("flowd");
    let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
    assert!(ok, "{out}");
    let before = l.hv.ifindex("rep0").expect("rep0");
    // The VM's VF goes and comes back: a new veth pair under the same names.
    l.hv.ip("link del rep0");
    l.hv.ip(&format!(
        "link add rep0 type veth peer name vf0 netns {}",
        l.vfs[0].name
    ));
    l.vfs[0].ip("addr add 1.1.1.2/24 dev vf0");
    l.vfs[0].ip("link set vf0 address e4:11:11:11:11:10 mtu 1450 up");
    let _ = l.vfs[0].try_exec("ethtool -K vf0 tx off");
    l.hv.ip("link set rep0 mtu 1450 up");
    let after = l.hv.ifindex("rep0").expect("rep0");
    assert_ne!(before, after);
    assert!(
        wait(10, || match l.request(Request::Show) {
            Ok(ResponseBody::Ports(p)) => p
                .iter()
                .any(|p| p.name == "rep0" && p.ifindex == Some(after.0) && p.up == Some(true)),
            _ => false,
        }),
        "flowctl show follows the new netdev\n{}",
        l.log()
    );
    let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
    assert!(
        ok,
        "traffic again through the re-created port: {out}\n{}",
        l.log()
    );
    assert!(stat(&l, "ports_reopened") >= 1);
}

#[test]
fn a_raised_mtu_is_carried_and_too_big_is_answered() {
    if skip() {
        return;
    }
    let mut l = lab::build("pbig").expect("lab");
    l.start_daemon_config(&exe(), &common::lab_config(&l, "sim"), &[])
        .expect("flowd");
    let (ok, out) = ping(&l.vfs[0], "1.1.1.3");
    assert!(ok, "{out}");
    // Jumbo frames end to end: the uplinks at 9000, the VF, its representor and the
    // remote's VXLAN device at 4000.
    for n in 1..=2 {
        l.hv.ip(&format!("link set up{n} mtu 9000"));
        l.remote.ip(&format!("link set eth{n} mtu 9000"));
    }
    l.remote.ip("link set vxlan16 mtu 4000");
    l.vfs[0].ip("link set vf0 mtu 4000");
    l.hv.ip("link set rep0 mtu 4000");
    assert!(
        wait(10, || match l.request(Request::Show) {
            Ok(ResponseBody::Ports(p)) => p.iter().any(|p| p.name == "rep0" && p.mtu == Some(4000)),
            _ => false,
        }),
        "{}",
        l.log()
    );
    // 3000 bytes of payload: frames well past the 2 KiB slots of the old ring.
    let (ok, out) = ping(&l.vfs[0], "-M do -s 3000 1.1.1.3");
    assert!(
        ok,
        "jumbo frames through the reopened port: {out}\n{}",
        l.log()
    );
    assert!(wait(5, || stat(&l, "ports_reopened") >= 1));
    // The path shrinks back to 1500: a DF packet too big for it gets "fragmentation
    // needed" with the MTU that fits (1500 - 50), as from a router.
    for n in 1..=2 {
        l.hv.ip(&format!("link set up{n} mtu 1500"));
        l.remote.ip(&format!("link set eth{n} mtu 1500"));
    }
    let (_, out) = l.vfs[0].try_exec("ping -c 2 -i 0.3 -W 1 -M do -s 3000 1.1.1.3");
    assert!(
        out.contains("mtu = 1450") || out.contains("mtu=1450"),
        "an ICMP 'fragmentation needed' with MTU 1450: {out}\n{}",
        l.log()
    );
    assert!(stat(&l, "encap_too_big_replies") >= 1);
}

/// `dump-flows` selects by port, network, remote VTEP and reason, limits, and counts:
/// vf0's flows kept in software for their MTU, vf1's offloaded, both toward one remote.
#[test]
fn dump_flows_selects_what_an_operator_asks_for() {
    use flowd::control::proto::{FlowFilter, FlowRow, FlowSelect};
    if skip() {
        return;
    }
    let mut l = lab::build("psel").expect("lab");
    l.vfs[0].ip("link set vf0 mtu 1500");
    l.hv.ip("link set rep0 mtu 1500");
    l.start_daemon_config(&exe(), &common::lab_config(&l, "sim"), &[])
        .expect("flowd");
    for (vf, dst) in [(0, "1.1.1.3"), (1, "2.2.2.3")] {
        let (ok, out) = ping(&l.vfs[vf], dst);
        assert!(ok, "vf{vf}: {out}\n{}", l.log());
    }
    let ask = |filter: FlowFilter, select: FlowSelect| -> Vec<FlowRow> {
        match l.request(Request::DumpFlows {
            filter,
            select,
            summary: false,
            stream: 0,
        }) {
            Ok(ResponseBody::Flows(rows)) => rows,
            other => panic!("dump-flows: {other:?}"),
        }
    };
    let by = |f: FlowSelect| ask(FlowFilter::All, f);
    let all = by(FlowSelect::default());
    let from_rep0 = by(FlowSelect {
        port: Some("rep0".into()),
        ..Default::default()
    });
    assert!(!from_rep0.is_empty(), "{all:#?}");
    assert!(from_rep0.iter().all(|f| f.flow.starts_with("in_port(1)")));
    assert_eq!(
        from_rep0.len(),
        all.iter()
            .filter(|f| f.flow.starts_with("in_port(1)"))
            .count()
    );
    // tenant-b: vf1's flows (from rep1, or decapsulated from VNI 17), none of rep0's.
    let tenant_b = by(FlowSelect {
        network: Some("tenant-b".into()),
        ..Default::default()
    });
    assert!(tenant_b.iter().any(|f| f.flow.starts_with("in_port(2)")));
    assert!(
        tenant_b
            .iter()
            .all(|f| f.flow.starts_with("in_port(2)") || f.flow.contains("tun_id=0x11")),
        "{tenant_b:#?}"
    );
    // Both networks' tunnel flows go to or come from 10.0.0.2; none of a stranger.
    let remote = by(FlowSelect {
        remote: Some("10.0.0.2".parse().unwrap()),
        ..Default::default()
    });
    assert!(remote.iter().any(|f| f.actions.contains("dst=10.0.0.2")));
    assert!(
        remote
            .iter()
            .all(|f| f.actions.contains("dst=10.0.0.2") || f.flow.contains("src=10.0.0.2"))
    );
    assert!(
        by(FlowSelect {
            remote: Some("10.9.9.9".parse().unwrap()),
            ..Default::default()
        })
        .is_empty()
    );
    // In software for their MTU: rep0's encapsulations only.
    let mtu = ask(
        FlowFilter::Software,
        FlowSelect {
            reason: Some("mtu".into()),
            ..Default::default()
        },
    );
    assert!(!mtu.is_empty(), "{all:#?}");
    assert!(mtu.iter().all(
        |f| f.flow.starts_with("in_port(1)") && f.placement.category.as_deref() == Some("mtu")
    ));
    assert_eq!(
        by(FlowSelect {
            limit: Some(1),
            ..Default::default()
        })
        .len(),
        1
    );
    // The summary counts what the rows list.
    let sum = match l.request(Request::DumpFlows {
        filter: FlowFilter::All,
        select: FlowSelect::default(),
        summary: true,
        stream: 0,
    }) {
        Ok(ResponseBody::FlowSummary(s)) => s,
        other => panic!("summary: {other:?}"),
    };
    let now = by(FlowSelect::default());
    assert!(
        sum.flows.abs_diff(now.len() as u64) <= 2,
        "{sum:?} vs {}",
        now.len()
    );
    assert_eq!(sum.flows, sum.offloaded + sum.software);
    assert!(sum.by_placement.get("software (mtu)").copied().unwrap_or(0) >= mtu.len() as u64 - 1);
    assert!(sum.by_port.get("rep0").copied().unwrap_or(0) > 0, "{sum:?}");
    // Names the daemon does not know are an error answer, naming them.
    for select in [
        FlowSelect {
            port: Some("rep9".into()),
            ..Default::default()
        },
        FlowSelect {
            network: Some("tenant-z".into()),
            ..Default::default()
        },
    ] {
        match l.request(Request::DumpFlows {
            filter: FlowFilter::All,
            select,
            summary: false,
            stream: 0,
        }) {
            Err(e) => assert!(e.to_string().contains("no "), "{e}"),
            Ok(other) => panic!("an unknown name answered {other:?}"),
        }
    }
}
