//! Fuzz target: arbitrary bytes as a datagram of rtnetlink notifications read from the
//! EVPN shadow devices, through `evpn::netlink::split_raw`, `to_route_message` and
//! `evpn::fdb::entry` into an `evpn::Mirror` that knows one network (VNI 100, bridge 1,
//! vxlan 2, advertise port 3): what flowd does with what zebra writes.
//!
//! Invariants checked: nothing panics; every remote station reported was reported with a
//! VTEP and is not also a local station; a flood list has no duplicate; reconciling the
//! local stations is idempotent (after the requests of a diff are applied, the same diff
//! asks for nothing).

#![no_main]

use evpn::{FdbEvent, Mirror, Shadow};
use libfuzzer_sys::fuzz_target;
use netlink_packet_route::RouteNetlinkMessage;
use std::collections::BTreeSet;
use vocab::IfIndex;

const VNI: u32 = 100;

fuzz_target!(|data: &[u8]| {
    let mut mirror = Mirror::new();
    let mut out = Vec::new();
    mirror.set_shadows(
        &[Shadow {
            vni: VNI,
            bridge: IfIndex(1),
            vxlan: IfIndex(2),
            adv: IfIndex(3),
        }],
        &mut out,
    );
    for raw in evpn::netlink::split_raw(data) {
        let ev = match evpn::netlink::to_route_message(raw) {
            Some(RouteNetlinkMessage::NewNeighbour(m)) => evpn::fdb::entry(&m).map(FdbEvent::New),
            Some(RouteNetlinkMessage::DelNeighbour(m)) => evpn::fdb::entry(&m).map(FdbEvent::Del),
            _ => None,
        };
        if let Some(ev) = ev {
            mirror.apply(&ev);
        }
    }
    mirror.settle(&mut out);
    let local = mirror.local_stations(VNI);
    for (mac, _) in mirror.remote_stations(VNI) {
        assert!(!local.contains(&mac), "{mac:?} both local and remote");
    }
    let flood = mirror.flood_list(VNI);
    let unique: BTreeSet<_> = flood.iter().collect();
    assert_eq!(unique.len(), flood.len(), "{flood:?}");
    // Reconcile toward the local stations plus the first remote one (a station that
    // moved here), twice.
    let mut want = local.clone();
    if let Some((mac, _)) = mirror.remote_stations(VNI).first() {
        want.insert(*mac);
    }
    for op in mirror.diff_local(VNI, &want) {
        mirror.applied(VNI, op);
    }
    assert!(mirror.diff_local(VNI, &want).is_empty());
    assert_eq!(mirror.local_stations(VNI), want);
});
