//! Stations and flood lists from a control plane: unicast to the station's VTEP, moves,
//! local sightings taking over, flood lists added to the configured remotes.

use super::*;

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
