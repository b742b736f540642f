//! NORMAL on a lab of networks: flooding (locally and head-end), learning, port
//! unplugging, remote stations learned from VXLAN, moves, aging, static MACs, VNI and
//! VLAN isolation, dropped hairpins and group sources.

use super::*;

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
