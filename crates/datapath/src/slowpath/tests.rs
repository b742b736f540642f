//! NORMAL, learning, aging, flooding, isolation and traces.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::PortId;
use crate::actions::{Action, TunnelAttrs};
use crate::flow::{FlowMask, addr_to, tun_flags, vlan};
use std::net::IpAddr;

pub(crate) const TUN: PortId = PortId(100);
pub(crate) const NET16: NetworkId = NetworkId(16);
pub(crate) const NET17: NetworkId = NetworkId(17);
pub(crate) const NET20: NetworkId = NetworkId(20);

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn mac(last: u8) -> Mac {
    Mac([0x02, 0, 0, 0, 0, last])
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// VNI 16: ports 1, 2 and VTEPs .2, .3; VNI 17: port 3 and VTEP .2; VLAN 20: port 4
/// tagged 20 and port 5 untagged.
pub(crate) fn lab() -> SlowPath {
    let mut sp = SlowPath::with_normal(MacConfig::default());
    let seg = |vni, remotes: &[&str]| {
        Some(VxlanSegment::new(
            vni,
            TUN,
            Some(ip("10.0.0.1")),
            remotes.iter().map(|r| ip(r)).collect(),
        ))
    };
    let untagged = |p| Attachment::untagged(PortId(p));
    sp.add_network(
        NET16,
        Network {
            members: vec![untagged(1), untagged(2)],
            vxlan: seg(16, &["10.0.0.2", "10.0.0.3"]),
        },
    )
    .unwrap();
    sp.add_network(
        NET17,
        Network {
            members: vec![untagged(3)],
            vxlan: seg(17, &["10.0.0.2"]),
        },
    )
    .unwrap();
    sp.add_network(
        NET20,
        Network {
            members: vec![Attachment::tagged(PortId(4), 20), untagged(5)],
            vxlan: None,
        },
    )
    .unwrap();
    sp
}

pub(crate) fn frame(in_port: u32, src: Mac, dst: Mac) -> FlowKey {
    let mut k = FlowKey::default();
    k.in_port = in_port;
    k.eth_src = src.0;
    k.eth_dst = dst.0;
    k.eth_type = 0x0800;
    k.ip_src = addr_to(ip("192.168.0.1"));
    k.ip_dst = addr_to(ip("192.168.0.2"));
    k.ip_proto = 6;
    k.tp_src = 40000;
    k.tp_dst = 80;
    k
}

pub(crate) fn from_vtep(vni: u32, vtep: &str, src: Mac, dst: Mac) -> FlowKey {
    let mut k = frame(TUN.0, src, dst);
    k.tun_flags = tun_flags::PRESENT | tun_flags::KEY;
    k.tun_vni = vni;
    k.tun_src = addr_to(ip(vtep));
    k.tun_dst = addr_to(ip("10.0.0.1"));
    k.tun_tp_dst = 4789;
    k
}

fn encap(vni: u32, vtep: &str) -> [Action; 2] {
    let attrs = TunnelAttrs {
        src: Some(ip("10.0.0.1")),
        ..TunnelAttrs::vxlan(vni, ip(vtep))
    };
    [Action::SetTunnel(attrs), Action::Output(TUN)]
}

fn out(p: u32) -> Action {
    Action::Output(PortId(p))
}

fn acts(x: &Xlation) -> Vec<Action> {
    x.actions.as_slice().to_vec()
}

#[test]
fn unknown_unicast_floods_locally_and_head_end() {
    let mut sp = lab();
    let (x, changes) = sp.upcall(&frame(1, mac(0xa), mac(0xb)), secs(0));
    let mut want = vec![out(2)];
    want.extend(encap(16, "10.0.0.2"));
    want.extend(encap(16, "10.0.0.3"));
    assert_eq!(acts(&x), want);
    assert_eq!(changes, vec![Change::Mac((NET16, mac(0xa)))]);
    assert!(!x.needs_learning, "learned before the final translation");
    // Consulted: in_port, the outer tag, the MACs, and (the frame being untagged) the
    // ethertype, which is how "no tag" is expressed to tc; nothing of L3/L4.
    assert_eq!(x.mask.in_port, u32::MAX);
    assert_eq!(x.mask.eth_src, [0xff; 6]);
    assert_eq!(x.mask.eth_dst, [0xff; 6]);
    assert_eq!(x.mask.vlan_tci[0], vlan::PRESENT | vlan::VID_MASK);
    assert_eq!(x.mask.eth_type, 0xffff);
    assert_eq!(x.mask.ip_dst, [0; 16]);
    assert_eq!(x.mask.tp_dst, 0);
}

#[test]
fn broadcast_consults_only_the_group_bit() {
    let sp = lab();
    let mut k = frame(1, mac(0xa), mac::BROADCAST);
    k.eth_type = 0x0806; // ARP is a frame like any other
    let x = sp.xlate(&k, secs(0));
    assert_eq!(acts(&x).len(), 5);
    assert_eq!(x.mask.eth_dst, [1, 0, 0, 0, 0, 0]);
    assert!(x.needs_learning);
}

#[test]
fn learned_stations_get_unicast() {
    let mut sp = lab();
    sp.upcall(&frame(1, mac(0xa), mac(0xb)), secs(0));
    let (x, _) = sp.upcall(&frame(2, mac(0xb), mac(0xa)), secs(1));
    assert_eq!(acts(&x), vec![out(1)]);
    let (x, ch) = sp.upcall(&frame(1, mac(0xa), mac(0xb)), secs(2));
    assert_eq!(acts(&x), vec![out(2)]);
    assert!(ch.is_empty());
    assert_eq!(sp.macs().stats().learned, 2);
}

#[test]
fn an_unplugged_port_is_forgotten() {
    let mut sp = lab();
    sp.upcall(&frame(1, mac(0xa), mac(0xb)), secs(0));
    sp.upcall(&frame(2, mac(0xb), mac(0xa)), secs(1));
    sp.upcall(&frame(3, mac(0xc), mac(0xb)), secs(1));
    assert_eq!(sp.macs().len(), 3);
    let ch = sp.forget_port(PortId(2));
    assert_eq!(ch, vec![Change::Mac((NET16, mac(0xb)))]);
    assert_eq!(sp.macs().len(), 2);
    // Toward the forgotten station: flooded again, no longer sent to port 2 alone.
    let x = sp.xlate(&frame(1, mac(0xa), mac(0xb)), secs(2));
    assert_ne!(acts(&x), vec![out(2)]);
    assert!(sp.forget_port(PortId(2)).is_empty());
    assert!(sp.forget_port(PortId(9)).is_empty());
}

#[test]
fn remote_stations_are_learned_from_vxlan() {
    let mut sp = lab();
    let (x, ch) = sp.upcall(
        &from_vtep(16, "10.0.0.3", mac(0xc), mac::BROADCAST),
        secs(0),
    );
    // From the tunnel: local members only (split horizon).
    assert_eq!(acts(&x), vec![out(1), out(2)]);
    assert_eq!(ch, vec![Change::Mac((NET16, mac(0xc)))]);
    assert_eq!(x.mask.tun_src, [0xff; 16]);
    assert_eq!(x.mask.tun_vni, u32::MAX);
    let e = sp.macs().lookup(NET16, mac(0xc), secs(0)).unwrap();
    assert_eq!(e.location(), Location::Remote(ip("10.0.0.3")));
    let x = sp.xlate(&frame(2, mac(0xa), mac(0xc)), secs(1));
    assert_eq!(acts(&x), encap(16, "10.0.0.3").to_vec());
    // A VTEP's frame to a station behind a VTEP is never relayed.
    let x = sp.xlate(&from_vtep(16, "10.0.0.2", mac(0xd), mac(0xc)), secs(1));
    assert!(x.actions.is_drop());
}

#[test]
fn station_move_is_counted_and_revalidated() {
    let mut sp = lab();
    let k1 = frame(1, mac(0xa), mac(0xb));
    let (x1, _) = sp.upcall(&k1, secs(0));
    let mf1 = x1.megaflow(&k1);
    let k2 = frame(2, mac(0xb), mac(0xa));
    let (x2, _) = sp.upcall(&k2, secs(0));
    let mf2 = x2.megaflow(&k2);
    assert_eq!(acts(&x2), vec![out(1)]);
    // A moves from port 1 to port 2.
    let (x3, ch) = sp.upcall(&frame(2, mac(0xa), mac::BROADCAST), secs(5));
    assert_eq!(sp.macs().stats().moves, 1);
    assert_eq!(ch, vec![Change::Mac((NET16, mac(0xa)))]);
    assert!(!x3.needs_learning);
    let c = ch[0];
    assert!(c.affects(&mf1, &x1.meta) && c.affects(&mf2, &x2.meta));
    // The old flow from port 1 must come up again to relearn; the one to A now hairpins.
    assert_eq!(
        sp.revalidate(&mf1, &x1.actions, &x1.meta, secs(5)),
        Revalidation::Delete
    );
    match sp.revalidate(&mf2, &x2.actions, &x2.meta, secs(5)) {
        Revalidation::Modify(x) => assert!(x.actions.is_drop()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stations_age_out() {
    let mut sp = lab();
    sp.upcall(&frame(1, mac(0xa), mac(0xb)), secs(0));
    let k = frame(2, mac(0xb), mac(0xa));
    let (x, _) = sp.upcall(&k, secs(10));
    assert_eq!(acts(&x), vec![out(1)]);
    // A flow keeps its source alive: refresh at its `used` time.
    sp.refresh(&x.meta, secs(200));
    assert!(
        sp.expire(secs(301))
            .contains(&Change::Mac((NET16, mac(0xa))))
    );
    assert!(sp.macs().lookup(NET16, mac(0xb), secs(301)).is_some());
    assert_eq!(acts(&sp.xlate(&k, secs(301))).len(), 5, "A unknown: flood");
    assert!(
        sp.expire(secs(501))
            .contains(&Change::Mac((NET16, mac(0xb))))
    );
    assert!(sp.macs().is_empty());
}

#[test]
fn static_macs_avoid_flooding() {
    let mut sp = lab();
    let c = sp
        .set_static_mac(NET16, mac(0xd), Location::Remote(ip("10.0.0.3")))
        .unwrap();
    assert_eq!(c, Change::Mac((NET16, mac(0xd))));
    let x = sp.xlate(&frame(1, mac(0xa), mac(0xd)), secs(0));
    assert_eq!(acts(&x), encap(16, "10.0.0.3").to_vec());
    // Learning never overrides a static entry, and it never ages.
    let (_, ch) = sp.upcall(&frame(2, mac(0xd), mac::BROADCAST), secs(1));
    assert!(ch.is_empty());
    assert!(sp.expire(secs(100_000)).is_empty());
    let x = sp.xlate(&frame(1, mac(0xa), mac(0xd)), secs(100_000));
    assert_eq!(acts(&x), encap(16, "10.0.0.3").to_vec());
    // Refused configurations.
    assert_eq!(
        sp.set_static_mac(NET16, mac::BROADCAST, Location::Remote(ip("10.0.0.3"))),
        Err(SlowPathError::GroupMac(mac::BROADCAST))
    );
    let foreign = Location::Local(Attachment::untagged(PortId(3)));
    assert!(sp.set_static_mac(NET16, mac(0xe), foreign).is_err());
    let remote = Location::Remote(ip("10.0.0.9"));
    assert!(sp.set_static_mac(NET20, mac(0xe), remote).is_err());
    assert!(sp.set_static_mac(NetworkId(99), mac(0xe), remote).is_err());
}

#[test]
fn vnis_are_isolated() {
    let mut sp = lab();
    sp.upcall(&frame(1, mac(0xa), mac::BROADCAST), secs(0));
    // VNI 17 does not see VNI 16's stations, and floods only to its own members.
    let (x, _) = sp.upcall(&from_vtep(17, "10.0.0.2", mac(0xf), mac(0xa)), secs(1));
    assert_eq!(acts(&x), vec![out(3)]);
    let (x, _) = sp.upcall(&frame(3, mac(0xa), mac::BROADCAST), secs(1));
    assert_eq!(acts(&x), encap(17, "10.0.0.2").to_vec());
    assert_eq!(
        sp.macs()
            .lookup(NET16, mac(0xa), secs(1))
            .unwrap()
            .location(),
        Location::Local(Attachment::untagged(PortId(1)))
    );
    // An unconfigured VNI, and a port in no network, are dropped.
    let x = sp.xlate(
        &from_vtep(99, "10.0.0.2", mac(0xf), mac::BROADCAST),
        secs(1),
    );
    assert!(x.actions.is_drop());
    assert!(
        sp.xlate(&frame(42, mac(0xa), mac(0xb)), secs(1))
            .actions
            .is_drop()
    );
}

#[test]
fn vlan_networks_tag_and_untag() {
    let sp = lab();
    let mut k = frame(4, mac(0xa), mac::BROADCAST);
    k.vlan_tci[0] = vlan::PRESENT | 20;
    k.vlan_tpid[0] = 0x8100;
    assert_eq!(acts(&sp.xlate(&k, secs(0))), vec![Action::PopVlan, out(5)]);
    let x = sp.xlate(&frame(5, mac(0xb), mac::BROADCAST), secs(0));
    assert_eq!(
        acts(&x),
        vec![
            Action::PushVlan {
                tpid: 0x8100,
                tci: 20
            },
            out(4)
        ]
    );
    // Untagged on the trunk, or another VLAN: in no network.
    assert!(
        sp.xlate(&frame(4, mac(0xa), mac::BROADCAST), secs(0))
            .actions
            .is_drop()
    );
    k.vlan_tci[0] = vlan::PRESENT | 21;
    assert!(sp.xlate(&k, secs(0)).actions.is_drop());
}

#[test]
fn hairpin_and_group_sources_are_dropped() {
    let mut sp = lab();
    sp.upcall(&frame(1, mac(0xa), mac::BROADCAST), secs(0));
    sp.upcall(&frame(1, mac(0xb), mac::BROADCAST), secs(0));
    assert!(
        sp.xlate(&frame(1, mac(0xb), mac(0xa)), secs(1))
            .actions
            .is_drop()
    );
    let x = sp.xlate(&frame(1, mac::BROADCAST, mac(0xa)), secs(1));
    assert!(x.actions.is_drop() && !x.needs_learning);
}

#[test]
fn rules_take_precedence_and_unwildcard_little() {
    let mut sp = lab();
    let mut key = FlowKey::default();
    key.eth_type = 0x0800;
    key.ip_proto = 6;
    key.tp_dst = 22;
    let mut mask = FlowMask::default();
    mask.eth_type = 0xffff;
    mask.ip_proto = 0xff;
    mask.tp_dst = 0xffff;
    let (id, _) = sp
        .add_rule(Rule::new(100, &key, &mask, vec![RuleAction::Drop]))
        .unwrap();
    let mut ssh = frame(1, mac(0xa), mac(0xb));
    ssh.tp_dst = 22;
    let x = sp.xlate(&ssh, secs(0));
    assert!(x.actions.is_drop());
    assert_eq!(x.meta.rule.map(|r| r.id), Some(id));
    // HTTP passes the ACL: tp_dst un-wildcarded only to its first differing bit.
    let x = sp.xlate(&frame(1, mac(0xa), mac(0xb)), secs(0));
    assert_eq!(acts(&x).len(), 5);
    assert_eq!(x.mask.tp_dst, 0xffc0, "80 vs 22 first differ at 0x40");
    assert_eq!(x.mask.ip_src, [0; 16]);
}

#[test]
fn rule_actions_push_pop_and_tunnel() {
    let mut sp = SlowPath::new(MacConfig::default());
    let attrs = TunnelAttrs::vxlan(5, ip("10.9.9.9"));
    let actions = vec![
        RuleAction::PushVlan {
            tpid: 0x8100,
            tci: 7,
        },
        RuleAction::Output(PortId(2)),
        RuleAction::PopVlan,
        RuleAction::Tunnel { port: TUN, attrs },
        RuleAction::Drop,
        RuleAction::Output(PortId(3)),
    ];
    sp.add_rule(Rule::catch_all(1, actions)).unwrap();
    let x = sp.xlate(&frame(1, mac(1), mac(2)), secs(0));
    assert_eq!(
        acts(&x),
        vec![
            Action::PushVlan {
                tpid: 0x8100,
                tci: 7
            },
            out(2),
            Action::PopVlan,
            Action::SetTunnel(attrs),
            Action::Output(TUN)
        ]
    );
    assert!(x.mask.is_wildcard_all());
    // With no rules at all, everything drops and nothing is consulted.
    let empty = SlowPath::new(MacConfig::default());
    let x = empty.xlate(&frame(1, mac(1), mac(2)), secs(0));
    assert!(x.actions.is_drop() && x.mask.is_wildcard_all());
}

#[test]
fn trace_explains_each_step() {
    let mut sp = lab();
    sp.set_static_mac(NET16, mac(0xd), Location::Remote(ip("10.0.0.3")))
        .unwrap();
    let t = sp.trace(&frame(1, mac(0xa), mac::BROADCAST), secs(0));
    let text = t.to_string();
    assert!(
        text.contains("rule #1 (priority 0): match, actions=NORMAL"),
        "{text}"
    );
    assert!(text.contains("NORMAL: network 16, from port 1"), "{text}");
    assert!(text.contains("learn (new or moved)"), "{text}");
    assert!(
        text.contains("head-end to VTEPs [10.0.0.2, 10.0.0.3]"),
        "{text}"
    );
    assert!(
        text.contains(
            "consulted: in_port, eth_type, vlan_tci0/0x1fff, eth_src, eth_dst/0x10000000000"
        ),
        "{text}"
    );
    let t = sp.trace(&frame(1, mac(0xa), mac(0xd)), secs(0));
    assert!(
        t.to_string()
            .contains("destination 02:00:00:00:00:0d is at remote VTEP 10.0.0.3")
    );
    assert_eq!(t.xlation, sp.xlate(&t.key, secs(0)));
}

#[test]
fn network_changes_are_validated_and_reported() {
    let mut sp = lab();
    let bad = Network {
        members: vec![Attachment::untagged(PortId(1))],
        vxlan: None,
    };
    assert!(sp.add_network(NetworkId(5), bad).is_err());
    sp.upcall(&frame(1, mac(0xa), mac::BROADCAST), secs(0));
    assert_eq!(sp.remove_network(NET16), Ok(Change::Networks));
    assert!(sp.macs().is_empty());
    assert!(
        sp.xlate(&frame(1, mac(0xa), mac::BROADCAST), secs(0))
            .actions
            .is_drop()
    );
}

fn station(mac: Mac, vtep: &str) -> RemoteUpdate {
    RemoteUpdate::Station {
        network: NET16,
        mac,
        vtep: ip(vtep),
    }
}

fn gone(mac: Mac, vtep: &str) -> RemoteUpdate {
    RemoteUpdate::StationGone {
        network: NET16,
        mac,
        vtep: ip(vtep),
    }
}

fn flood_list(vteps: &[&str]) -> RemoteUpdate {
    RemoteUpdate::FloodList {
        network: NET16,
        vteps: vteps.iter().map(|v| ip(v)).collect(),
    }
}

#[test]
fn control_plane_stations_get_unicast_and_move() {
    let mut sp = lab();
    let k = frame(1, mac(0xa), mac(0xd));
    let (x, _) = sp.upcall(&k, secs(0));
    assert_eq!(acts(&x).len(), 5, "unknown: flooded");
    let c = sp.apply_remote(&station(mac(0xd), "10.0.0.9")).unwrap();
    assert_eq!(c, Some(Change::Mac((NET16, mac(0xd)))));
    assert!(c.unwrap().affects(&x.megaflow(&k), &x.meta));
    match sp.revalidate(&x.megaflow(&k), &x.actions, &x.meta, secs(1)) {
        Revalidation::Modify(y) => assert_eq!(acts(&y), encap(16, "10.0.0.9").to_vec()),
        other => panic!("{other:?}"),
    }
    assert_eq!(sp.apply_remote(&station(mac(0xd), "10.0.0.9")), Ok(None));
    // Data-plane learning from the tunnel does not move it; a move is the control plane's.
    let (_, ch) = sp.upcall(
        &from_vtep(16, "10.0.0.2", mac(0xd), mac::BROADCAST),
        secs(2),
    );
    assert!(ch.is_empty());
    sp.apply_remote(&station(mac(0xd), "10.0.0.3")).unwrap();
    assert_eq!(acts(&sp.xlate(&k, secs(3))), encap(16, "10.0.0.3").to_vec());
    // A withdrawal from the old VTEP changes nothing; from the current one, it floods.
    assert_eq!(sp.apply_remote(&gone(mac(0xd), "10.0.0.9")), Ok(None));
    assert!(
        sp.apply_remote(&gone(mac(0xd), "10.0.0.3"))
            .unwrap()
            .is_some()
    );
    assert_eq!(acts(&sp.xlate(&k, secs(4))).len(), 5);
    // Refused: group MACs, networks without a segment, unknown networks.
    assert_eq!(
        sp.apply_remote(&station(mac::BROADCAST, "10.0.0.3")),
        Err(SlowPathError::GroupMac(mac::BROADCAST))
    );
    let vlan = RemoteUpdate::FloodList {
        network: NET20,
        vteps: vec![],
    };
    assert_eq!(sp.apply_remote(&vlan), Err(SlowPathError::NotVxlan(NET20)));
    let unknown = RemoteUpdate::FloodList {
        network: NetworkId(99),
        vteps: vec![],
    };
    assert!(sp.apply_remote(&unknown).is_err());
}

#[test]
fn a_local_sighting_takes_a_control_plane_station_over() {
    let mut sp = lab();
    sp.apply_remote(&station(mac(0xa), "10.0.0.9")).unwrap();
    let (x, ch) = sp.upcall(&frame(1, mac(0xa), mac::BROADCAST), secs(0));
    assert_eq!(ch, vec![Change::Mac((NET16, mac(0xa)))]);
    assert!(!x.needs_learning);
    let e = sp.macs().get(NET16, mac(0xa)).unwrap();
    assert_eq!(
        (e.kind(), e.location()),
        (
            MacKind::Dynamic,
            Location::Local(Attachment::untagged(PortId(1)))
        )
    );
    // The control plane's late withdrawal of the old location leaves it here.
    assert_eq!(sp.apply_remote(&gone(mac(0xa), "10.0.0.9")), Ok(None));
    assert!(sp.macs().get(NET16, mac(0xa)).is_some());
}

#[test]
fn flood_lists_add_to_the_configured_remotes() {
    let mut sp = lab();
    let k = frame(1, mac(0xa), mac::BROADCAST);
    let (x, _) = sp.upcall(&k, secs(0));
    assert_eq!(x.meta.flood, Some(NET16));
    let c = sp
        .apply_remote(&flood_list(&["10.0.0.9", "10.0.0.3", "10.0.0.9"]))
        .unwrap();
    assert_eq!(c, Some(Change::Flood(NET16)));
    assert_eq!(sp.flood_list(NET16), &[ip("10.0.0.3"), ip("10.0.0.9")]);
    assert!(c.unwrap().affects(&x.megaflow(&k), &x.meta));
    let mut want = vec![out(2)];
    want.extend(encap(16, "10.0.0.2"));
    want.extend(encap(16, "10.0.0.3"));
    want.extend(encap(16, "10.0.0.9"));
    assert_eq!(acts(&sp.xlate(&k, secs(1))), want, "10.0.0.3 once");
    assert_eq!(
        sp.apply_remote(&flood_list(&["10.0.0.3", "10.0.0.9"])),
        Ok(None)
    );
    // Frames from the tunnel never replicate; flows of other networks are not affected.
    let (y, _) = sp.upcall(
        &from_vtep(16, "10.0.0.2", mac(0xc), mac::BROADCAST),
        secs(1),
    );
    assert_eq!(y.meta.flood, None);
    let (z, _) = sp.upcall(&frame(3, mac(0xe), mac::BROADCAST), secs(1));
    assert!(
        !Change::Flood(NET16).affects(&z.megaflow(&frame(3, mac(0xe), mac::BROADCAST)), &z.meta)
    );
    assert!(sp.apply_remote(&flood_list(&[])).unwrap().is_some());
    assert_eq!(acts(&sp.xlate(&k, secs(2))).len(), 5);
    assert!(sp.flood_list(NET16).is_empty());
}

mod engine {
    use super::*;
    use crate::cache::{FlowEntry, FlowTable};
    use crate::slowpath::upcall::{
        Upcall, UpcallConfig, UpcallCounters, UpcallDrop, upcall_queues,
    };
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<String>>,
        keep_alive: std::sync::atomic::AtomicU64,
    }

    impl FlowObserver for Recorder {
        fn installed(&self, f: &Arc<FlowEntry>) {
            self.events.lock().unwrap().push(format!("add {}", f.id()));
        }
        fn modified(&self, old: &Arc<FlowEntry>, new: &Arc<FlowEntry>) {
            self.events
                .lock()
                .unwrap()
                .push(format!("mod {} {}", old.id(), new.id()));
        }
        fn deleted(&self, f: &Arc<FlowEntry>, why: DeleteReason) {
            self.events
                .lock()
                .unwrap()
                .push(format!("del {} {why:?}", f.id()));
        }
        fn refresh_used(&self, flows: &[Arc<FlowEntry>]) {
            let now = self.keep_alive.load(std::sync::atomic::Ordering::Relaxed);
            if now > 0 {
                flows.iter().for_each(|f| f.touch(now));
            }
        }
    }

    fn engine(limit: usize) -> (Engine, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        let cfg = EngineConfig {
            flow_limit: limit,
            ..EngineConfig::default()
        };
        let table = Arc::new(FlowTable::new(limit));
        let counters = Arc::new(UpcallCounters::default());
        (Engine::new(lab(), table, rec.clone(), cfg, counters), rec)
    }

    fn up(k: FlowKey) -> Upcall {
        Upcall {
            key: k,
            in_port: PortId(k.in_port),
            packet: vec![k.eth_src[5]; 60],
        }
    }

    fn events(rec: &Recorder) -> Vec<String> {
        std::mem::take(&mut *rec.events.lock().unwrap())
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let counters = Arc::new(UpcallCounters::default());
        let cfg = UpcallConfig {
            capacity: 2,
            max_frame: 100,
            ..UpcallConfig::default()
        };
        let (tx, rx) = upcall_queues(cfg, counters.clone());
        let k = frame(1, mac(0xa), mac(0xb));
        let k2 = frame(2, mac(0xb), mac(0xa));
        assert!(tx.send(&k, &[0; 60]).is_ok());
        assert!(tx.send(&k2, &[0; 60]).is_ok());
        assert_eq!(
            tx.send(&frame(3, mac(0xc), mac(0xa)), &[0; 60]),
            Err(UpcallDrop::QueueFull)
        );
        assert_eq!(tx.send(&k, &[0; 101]), Err(UpcallDrop::TooBig(101)));
        let s = counters.snapshot();
        assert_eq!((s.queued, s.queue_full, s.dropped_other), (2, 1, 1));
        assert_eq!(rx[0].try_iter().count(), 2);
    }

    #[test]
    fn a_flooding_port_leaves_the_queue_to_the_others() {
        let counters = Arc::new(UpcallCounters::default());
        let cfg = UpcallConfig {
            capacity: 16,
            ..UpcallConfig::default()
        };
        assert_eq!(cfg.port_share(), 4);
        let (tx, rx) = upcall_queues(cfg, counters.clone());
        // Port 1 floods: it gets slots until the queue is half full, no more.
        let flood: Vec<_> = (0..100u8)
            .map(|i| tx.send(&frame(1, mac(i), mac(0xff)), &[0; 60]))
            .collect();
        assert_eq!(flood.iter().filter(|r| r.is_ok()).count(), 8);
        assert!(flood[8..].iter().all(|r| *r == Err(UpcallDrop::PortShare)));
        // Ports 2 and 3 each still get their share, and more while room is left.
        for p in [2, 3] {
            for i in 0..4 {
                assert_eq!(tx.send(&frame(p, mac(0x40 + i), mac(1)), &[0; 60]), Ok(()));
            }
        }
        assert_eq!(
            tx.send(&frame(2, mac(0x50), mac(1)), &[0; 60]),
            Err(UpcallDrop::PortShare)
        );
        let s = counters.snapshot();
        assert_eq!((s.queued, s.port_share, s.queue_full), (16, 93, 0));
        // Taking upcalls gives their slots back.
        assert_eq!(rx[0].try_iter().count(), 16);
        assert_eq!(tx.send(&frame(1, mac(0x60), mac(1)), &[0; 60]), Ok(()));
    }

    #[test]
    fn handler_installs_coalesces_and_returns_packets() {
        let (e, rec) = engine(100);
        let k = frame(1, mac(0xa), mac(0xb));
        let v = e.handle(vec![up(k), up(k), up(k)], secs(0));
        assert_eq!(v.len(), 3);
        assert!(
            v.iter()
                .all(|v| v.packet == vec![0xa; 60] && v.actions.as_slice().len() == 5)
        );
        assert!(v.iter().all(|x| x.flow == v[0].flow && x.flow.is_some()));
        let s = e.counters().snapshot();
        assert_eq!((s.translated, s.coalesced, s.installed), (1, 2, 1));
        assert_eq!(e.table().len(), 1);
        assert_eq!(events(&rec).len(), 1);
        // Learning queued a change; the sweep finds nothing stale.
        let r = e.sweep(secs(1));
        assert_eq!((r.revalidated, r.modified, r.stale), (1, 0, 0));
    }

    #[test]
    fn learning_revalidates_flooded_flows() {
        let (e, rec) = engine(100);
        let to_b = frame(1, mac(0xa), mac(0xb));
        e.handle(vec![up(to_b)], secs(0));
        e.sweep(secs(0));
        // B speaks: the flow that flooded to B must now go to port 2 only.
        e.handle(vec![up(frame(2, mac(0xb), mac::BROADCAST))], secs(1));
        let r = e.sweep(secs(1));
        assert_eq!(r.modified, 1);
        let f = e.table().lookup(&to_b).unwrap();
        assert_eq!(f.actions().as_slice(), &[Action::Output(PortId(2))]);
        assert!(events(&rec).iter().any(|ev| ev.starts_with("mod")));
    }

    #[test]
    fn preinstall_learns_every_source_first_and_tells_no_observer() {
        let (e, rec) = engine(100);
        // Two directions of a conversation, and a remote station behind VTEP .2: each
        // key's destination is learned only from another key.
        let a_to_b = frame(1, mac(0xa), mac(0xb));
        let b_to_a = frame(2, mac(0xb), mac(0xa));
        let c_to_a = from_vtep(16, "10.0.0.2", mac(0xc), mac(0xa));
        let a_to_c = frame(1, mac(0xa), mac(0xc));
        let flows = e.preinstall(&[a_to_b, b_to_a, c_to_a, a_to_c], secs(0));
        assert_eq!(flows.len(), 4);
        assert!(
            events(&rec).is_empty(),
            "the caller announces preinstalled flows"
        );
        let acts_of = |k: &FlowKey| e.table().lookup(k).unwrap().actions().as_slice().to_vec();
        assert_eq!(acts_of(&a_to_b), vec![out(2)]);
        assert_eq!(acts_of(&b_to_a), vec![out(1)]);
        assert_eq!(acts_of(&c_to_a), vec![out(1)]);
        assert_eq!(acts_of(&a_to_c), encap(16, "10.0.0.2").to_vec());
        // Learning happened and the flows agree with it: revalidation keeps them all.
        let r = e.sweep(secs(1));
        assert_eq!((r.modified, r.stale), (0, 0));
        // The same keys again install nothing new.
        assert!(e.preinstall(&[a_to_b], secs(1)).is_empty());
    }

    #[test]
    fn rule_changes_fix_or_delete_flows() {
        let (e, rec) = engine(100);
        for i in 0..10 {
            e.handle(vec![up(frame(1, mac(0xa), mac(0x10 + i)))], secs(0));
        }
        e.sweep(secs(0));
        events(&rec);
        let mut key = FlowKey::default();
        key.in_port = 1;
        let mut mask = FlowMask::default();
        mask.in_port = u32::MAX;
        let id = e.configure(|sp| {
            let (id, c) = sp
                .add_rule(Rule::new(10, &key, &mask, vec![RuleAction::Drop]))
                .unwrap();
            (id, vec![c])
        });
        let r = e.sweep(secs(1));
        // Masks shrink to in_port only: every flow is deleted, none survive stale.
        assert_eq!((r.revalidated, r.stale), (10, 10));
        assert!(e.table().is_empty());
        let v = e.handle(vec![up(frame(1, mac(0xa), mac(0x10)))], secs(1));
        assert!(v[0].actions.is_drop());
        assert_eq!(
            e.flow_meta(v[0].flow.unwrap()).unwrap().rule.unwrap().id,
            id
        );
        assert_eq!(
            events(&rec)
                .iter()
                .filter(|ev| ev.contains("Stale"))
                .count(),
            10
        );
    }

    #[test]
    fn idle_flows_are_deleted_unless_offload_keeps_them_used() {
        let (e, rec) = engine(100);
        e.handle(vec![up(frame(1, mac(0xa), mac(0xb)))], secs(0));
        e.handle(vec![up(frame(2, mac(0xb), mac(0xa)))], secs(0));
        assert_eq!(e.sweep(secs(10)).idle, 0);
        rec.keep_alive
            .store(15_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(e.sweep(secs(20)).idle, 0, "offload counters moved used");
        rec.keep_alive
            .store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(e.sweep(secs(26)).idle, 2);
        assert!(e.table().is_empty());
        assert!(events(&rec).iter().any(|ev| ev.ends_with("Idle")));
    }

    #[test]
    fn flow_limit_evicts_least_recently_used() {
        let (e, _) = engine(12);
        // Four ports, each owning its quota (12 / 4 = 3 flows), fill the table.
        for i in 0..14 {
            let port = [1u8, 2, 3, 5][usize::from(i) % 4];
            let src = if port == 1 { mac(0xa) } else { mac(port) };
            e.handle(vec![up(frame(port.into(), src, mac(0x10 + i)))], secs(0));
        }
        let s = e.counters().snapshot();
        assert_eq!((s.installed, s.install_failed), (12, 2));
        let owned: Vec<_> = e
            .table()
            .port_stats()
            .iter()
            .map(|(_, s)| (s.flows, s.refused))
            .collect();
        assert_eq!(owned, vec![(3, 0); 4]);
        let first = e.table().lookup(&frame(1, mac(0xa), mac(0x10))).unwrap();
        first.touch(500);
        let r = e.sweep(secs(1));
        assert_eq!(r.evicted, 1);
        assert!(
            e.table().get(first.id()).is_some(),
            "recently used survives"
        );
    }

    #[test]
    fn limits_changed_while_running_apply_at_the_next_sweep() {
        let (e, _) = engine(100);
        for i in 0..20 {
            e.handle(vec![up(frame(1, mac(0xa), mac(0x10 + i)))], secs(0));
        }
        assert_eq!(e.sweep(secs(1)).evicted, 0);
        e.set_limits(secs(5), 10);
        let r = e.sweep(secs(2));
        assert!(r.evicted >= 10, "{r:?}");
        assert!(e.table().len() <= 10);
        // The new limit also bounds installs.
        for i in 0..20 {
            e.handle(vec![up(frame(2, mac(0xb), mac(0x40 + i)))], secs(2));
        }
        assert!(e.table().len() <= 10);
        // And the new idle time: 5 s, not the default.
        assert_eq!(e.sweep(secs(4)).idle, 0);
        assert!(e.sweep(secs(8)).idle > 0);
    }

    #[test]
    fn handler_thread_and_revalidator_run_and_stop() {
        let (e, _) = engine(100);
        let e = Arc::new(e);
        let counters = e.counters().clone();
        let (tx, mut rx) = upcall_queues(UpcallConfig::default(), counters);
        let rx = rx.remove(0);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clock = || Duration::from_secs(1);
        let got = std::thread::scope(|s| {
            let (e2, stop2) = (&e, &stop);
            let h = s.spawn(move || {
                let (e, stop) = (e2, stop2);
                let mut got = Vec::new();
                e.run_handler(&rx, &clock, stop, &mut |v| got.extend(v));
                got
            });
            s.spawn(|| e.run_revalidator(&clock, &stop, Duration::from_millis(10)));
            tx.send(&frame(1, mac(0xa), mac(0xb)), &[1; 60]).unwrap();
            while e.counters().snapshot().translated == 0 {
                std::thread::yield_now();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            h.join().unwrap()
        });
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].packet, vec![1; 60]);
    }

    #[derive(Default)]
    struct Stations(Mutex<Vec<MacKey>>);

    impl StationObserver for Stations {
        fn stations_changed(&self, keys: &[MacKey]) {
            self.0.lock().unwrap().extend_from_slice(keys);
        }
    }

    #[test]
    fn station_observer_hears_learning_aging_and_control_plane() {
        let (e, _) = engine(100);
        let obs = Arc::new(Stations::default());
        assert!(e.observe_stations(obs.clone()));
        assert!(!e.observe_stations(obs.clone()), "one observer");
        let take = || std::mem::take(&mut *obs.0.lock().unwrap());
        e.handle(vec![up(frame(1, mac(0xa), mac(0xb)))], secs(0));
        assert_eq!(take(), vec![(NET16, mac(0xa))]);
        e.handle(vec![up(frame(1, mac(0xa), mac(0xb)))], secs(1));
        assert!(take().is_empty(), "a refresh is no change");
        let r = e.apply_remote(&[station(mac(0xb), "10.0.0.9"), flood_list(&["10.0.0.9"])]);
        assert_eq!((r.changed, r.unchanged, r.refused.len()), (2, 0, 0));
        assert_eq!(take(), vec![(NET16, mac(0xb))]);
        e.sweep(secs(400));
        assert_eq!(take(), vec![(NET16, mac(0xa))], "aged out");
    }

    #[test]
    fn remote_updates_revalidate_only_affected_flows() {
        let (e, _) = engine(100);
        let to_b = frame(1, mac(0xa), mac(0xb));
        let bcast = frame(2, mac(0xc), mac::BROADCAST);
        let other = frame(3, mac(0xe), mac(0xf));
        e.handle(vec![up(to_b), up(bcast), up(other)], secs(0));
        e.sweep(secs(0));
        e.apply_remote(&[station(mac(0xb), "10.0.0.9")]);
        let r = e.sweep(secs(1));
        assert_eq!(
            (r.revalidated, r.modified),
            (1, 1),
            "only the flow toward B"
        );
        let f = e.table().lookup(&to_b).unwrap();
        assert_eq!(f.actions().as_slice(), &encap(16, "10.0.0.9"));
        e.apply_remote(&[flood_list(&["10.0.0.8"])]);
        let r = e.sweep(secs(2));
        assert_eq!(
            (r.revalidated, r.modified),
            (1, 1),
            "only VNI 16's flooding flow"
        );
        let f = e.table().lookup(&bcast).unwrap();
        assert_eq!(f.actions().as_slice().len(), 7);
    }
}
