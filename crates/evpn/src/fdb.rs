//! Bridge FDB entries (AF_BRIDGE neighbours) as zebra and the kernel exchange them, and
//! the two requests flowd makes: a local station on the advertise port, and its removal.
//!
//! What the kernel reports (each a `RTM_NEWNEIGH`/`RTM_DELNEIGH`, family `AF_BRIDGE`):
//!
//! | entry | ifindex | attributes | state, flags |
//! |---|---|---|---|
//! | bridge entry (`master`) | the port | `NDA_LLADDR`, `NDA_MASTER` = bridge | `NUD_NOARP` static, `NUD_REACHABLE`/`NUD_STALE` dynamic, `NUD_PERMANENT` the port's own address; `NTF_EXT_LEARNED` when zebra installed it |
//! | vxlan entry (`self`) | the vxlan device | `NDA_LLADDR`, `NDA_DST` = remote VTEP | `NTF_SELF`; zebra's remote MACs `NTF_EXT_LEARNED` + `NUD_REACHABLE`; flood entries (`00:00:00:00:00:00`) `NUD_NOARP`+`NUD_PERMANENT`, one per VTEP |
//!
//! zebra installs a remote MAC with `NTF_MASTER | NTF_SELF | NTF_EXT_LEARNED` (the bridge
//! entry moves to the vxlan port, the vxlan entry holds the VTEP), and reads local MACs
//! from the bridge entries of the other ports, ignoring `NUD_PERMANENT` ones. flowd
//! writes what `bridge fdb replace MAC dev ADV master static` writes: `NUD_NOARP`,
//! `NTF_MASTER`.

use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage,
    NeighbourState,
};
use netlink_packet_route::route::RouteType;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vocab::{IfIndex, Mac};

/// `NUD_*` states of `<linux/neighbour.h>`.
pub mod nud {
    /// A dynamic entry, recently confirmed.
    pub const REACHABLE: u16 = 0x02;
    /// A dynamic entry not confirmed lately.
    pub const STALE: u16 = 0x04;
    /// A static entry (`bridge fdb add ... static`): never ages.
    pub const NOARP: u16 = 0x40;
    /// A permanent entry (a port's own address, `permanent`).
    pub const PERMANENT: u16 = 0x80;
}

/// `NTF_*` flags of `<linux/neighbour.h>`.
pub mod ntf {
    /// The device's own table (`self`: the vxlan device's FDB).
    pub const SELF: u8 = 0x02;
    /// The bridge's table (`master`).
    pub const MASTER: u8 = 0x04;
    /// Installed by a control plane (`extern_learn`: zebra).
    pub const EXT_LEARNED: u8 = 0x10;
    /// Never moved by learning (`sticky`).
    pub const STICKY: u8 = 0x40;
}

/// The all-zero MAC: a vxlan FDB entry for it is a flood (head-end replication) target.
pub const FLOOD_MAC: Mac = [0; 6];

/// One bridge FDB entry as rtnetlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port (bridge entries) or the vxlan device (its own entries).
    pub ifindex: IfIndex,
    /// The station.
    pub mac: Mac,
    /// The remote VTEP (`NDA_DST`: vxlan entries).
    pub dst: Option<IpAddr>,
    /// The bridge (`NDA_MASTER`: bridge entries).
    pub master: Option<IfIndex>,
    /// The VLAN (`NDA_VLAN`), on VLAN-aware bridges.
    pub vlan: Option<u16>,
    /// The VNI (`NDA_VNI`), on external (collect-metadata) vxlan devices.
    pub vni: Option<u32>,
    /// `NUD_*` state bits.
    pub state: u16,
    /// `NTF_*` flags.
    pub flags: u8,
}

impl FdbEntry {
    /// A bridge entry (the bridge's own table).
    pub fn is_master(&self) -> bool {
        self.master.is_some()
    }

    /// A `NUD_PERMANENT` entry (a port's own address, or a flood entry).
    pub fn is_permanent(&self) -> bool {
        self.state & nud::PERMANENT != 0
    }

    /// A static (`NUD_NOARP`, not permanent) entry.
    pub fn is_static(&self) -> bool {
        self.state & nud::NOARP != 0 && !self.is_permanent()
    }

    /// Installed by a control plane.
    pub fn is_ext_learned(&self) -> bool {
        self.flags & ntf::EXT_LEARNED != 0
    }

    /// A flood (all-zero MAC) entry.
    pub fn is_flood(&self) -> bool {
        self.mac == FLOOD_MAC
    }
}

/// What a neighbour notification says about the FDB.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FdbEvent {
    /// An entry was added or changed (`RTM_NEWNEIGH`).
    New(FdbEntry),
    /// An entry was removed (`RTM_DELNEIGH`).
    Del(FdbEntry),
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| Ipv4Addr::from(b).into()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| Ipv6Addr::from(b).into()),
        _ => None,
    }
}

/// The FDB entry a neighbour message describes: `None` unless it is an `AF_BRIDGE`
/// message with a 6-byte link-layer address.
pub fn entry(m: &NeighbourMessage) -> Option<FdbEntry> {
    if m.header.family != AddressFamily::Bridge {
        return None;
    }
    let mut e = FdbEntry {
        ifindex: IfIndex(m.header.ifindex),
        mac: FLOOD_MAC,
        dst: None,
        master: None,
        vlan: None,
        vni: None,
        state: u16::from(m.header.state),
        flags: m.header.flags.bits(),
    };
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(b) => mac = <[u8; 6]>::try_from(&b[..]).ok(),
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => e.dst = ip_of(b),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => e.dst = Some((*a).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                e.dst = Some((*a).into());
            }
            NeighbourAttribute::Controller(i) => e.master = Some(IfIndex(*i)),
            NeighbourAttribute::Vlan(v) => e.vlan = Some(*v),
            NeighbourAttribute::Vni(v) => e.vni = Some(*v),
            _ => {}
        }
    }
    e.mac = mac?;
    Some(e)
}

fn bridge_request(port: IfIndex, mac: Mac, state: u16) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header = NeighbourHeader {
        family: AddressFamily::Bridge,
        ifindex: port.0,
        state: NeighbourState::from(state),
        flags: NeighbourFlags::from_bits_retain(ntf::MASTER),
        kind: RouteType::Unspec,
    };
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m
}

/// A local station on the advertise port, as `bridge fdb replace MAC dev PORT master
/// static` asks for it: a static (`NUD_NOARP`, never `NUD_PERMANENT`, which zebra
/// ignores) bridge entry. Sent with `NLM_F_CREATE | NLM_F_REPLACE`: it also moves an
/// entry the bridge holds elsewhere (a station that was remote).
pub fn local_station(port: IfIndex, mac: Mac) -> NeighbourMessage {
    bridge_request(port, mac, nud::NOARP)
}

/// The removal of a local station from the advertise port (`bridge fdb del MAC dev PORT
/// master`); the kernel removes it only if it is still on that port.
pub fn local_station_gone(port: IfIndex, mac: Mac) -> NeighbourMessage {
    bridge_request(port, mac, nud::NOARP)
}

/// A MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{request_bytes, to_route_message};
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
    use netlink_packet_route::RouteNetlinkMessage;

    const MAC: Mac = [0x02, 0, 0, 0, 0x01, 0x01];

    /// The kernel's answer to a dump, or a notification: the netlink header and
    /// `ndmsg` plus attributes, as read from an rtnetlink socket.
    fn decode(bytes: &[u8]) -> FdbEvent {
        let msg = to_route_message(bytes).expect("decodes");
        match msg {
            RouteNetlinkMessage::NewNeighbour(m) => FdbEvent::New(entry(&m).expect("fdb entry")),
            RouteNetlinkMessage::DelNeighbour(m) => FdbEvent::Del(entry(&m).expect("fdb entry")),
            other => panic!("not a neighbour message: {other:?}"),
        }
    }

    /// `bridge fdb replace 02:00:00:00:01:01 dev <ifindex 7> master static`, as iproute2
    /// sends it (bridge/fdb.c: `ndm_state = NUD_NOARP`, `ndm_flags = NTF_MASTER`,
    /// `NDA_LLADDR`; `NLM_F_REQUEST|NLM_F_ACK|NLM_F_CREATE|NLM_F_REPLACE`), laid out from
    /// the uapi structs `nlmsghdr`, `ndmsg` and `rtattr`.
    #[rustfmt::skip]
    const LOCAL_ADD: [u8; 40] = [
        40, 0, 0, 0,            // nlmsg_len
        28, 0,                  // nlmsg_type RTM_NEWNEIGH
        0x05, 0x05,             // flags REQUEST|ACK|REPLACE|CREATE (0x0505)
        9, 0, 0, 0,             // nlmsg_seq
        0, 0, 0, 0,             // nlmsg_pid
        7, 0, 0, 0,             // ndm_family AF_BRIDGE, padding
        7, 0, 0, 0,             // ndm_ifindex 7
        0x40, 0,                // ndm_state NUD_NOARP
        0x04,                   // ndm_flags NTF_MASTER
        0,                      // ndm_type
        10, 0, 2, 0,            // rtattr len 10, NDA_LLADDR
        0x02, 0, 0, 0, 0x01, 0x01, 0, 0, // the MAC, padded to 4
    ];

    #[test]
    fn local_station_is_what_bridge_fdb_sends() {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let m = RouteNetlinkMessage::NewNeighbour(local_station(IfIndex(7), MAC));
        assert_eq!(request_bytes(m, flags, 9), LOCAL_ADD);
        // And it reads back as a static, non-permanent bridge entry.
        let FdbEvent::New(e) = decode(&LOCAL_ADD) else {
            panic!()
        };
        assert!(e.is_static() && !e.is_permanent() && !e.is_ext_learned());
        assert_eq!((e.ifindex, e.mac, e.flags), (IfIndex(7), MAC, ntf::MASTER));
    }

    #[test]
    fn local_station_gone_is_what_bridge_fdb_del_sends() {
        let m = RouteNetlinkMessage::DelNeighbour(local_station_gone(IfIndex(7), MAC));
        let bytes = request_bytes(m, NLM_F_REQUEST | NLM_F_ACK, 9);
        let mut want = LOCAL_ADD;
        want[4] = 29; // RTM_DELNEIGH
        (want[6], want[7]) = (0x05, 0x00); // REQUEST|ACK
        assert_eq!(bytes, want);
    }

    // Captured from the kernel (6.18) with `examples/fdb_capture.rs` in a lab of two
    // namespaces running FRR 8.4 (zebra + bgpd, `advertise-all-vni`), each with shadow
    // devices evbr-100 (ifindex 3), evvx-100 (4, `local 192.168.77.N dstport 61000
    // nolearning`) and evad-100 (6). Hypervisor .2 wrote 02:00:00:00:01:01 on its
    // advertise port (`bridge fdb replace ... master static`); on hypervisor .1 zebra
    // installed it (`02:00:00:00:01:01 dev evvx-100 extern_learn master evbr-100 static`
    // and `... dev evvx-100 dst 192.168.77.2 self extern_learn`), with the flood entry
    // (`00:00:00:00:00:00 dev evvx-100 dst 192.168.77.2 self permanent`); then bgpd
    // stopped on .2 and zebra on .1 removed all three (RTM_DELNEIGH, same order).

    /// The bridge entry on the vxlan port (RTM_NEWNEIGH, dump).
    #[rustfmt::skip]
    const REMOTE_BRIDGE: [u8; 76] = [
        0x4c, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x57, 0x70, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
        0x40, 0x00, 0x10, 0x00, 0x0a, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x01, 0x01, 0x00, 0x00, 0x08, 0x00, 0x09, 0x00, 0x03, 0x00, 0x00, 0x00,
        0x08, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xd2, 0xfe, 0x00, 0x00, 0x2d, 0xfd, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
    ];

    /// The vxlan device's own entry (RTM_NEWNEIGH, dump).
    #[rustfmt::skip]
    const REMOTE_SELF: [u8; 68] = [
        0x44, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x57, 0x70, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x12, 0x01, 0x0a, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x01, 0x01, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0xc0, 0xa8, 0x4d, 0x02,
        0x14, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2d, 0xfd, 0x00, 0x00,
        0x2d, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// The flood entry's removal (RTM_DELNEIGH, notification).
    #[rustfmt::skip]
    const FLOOD_GONE: [u8; 68] = [
        0x44, 0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
        0xc0, 0x00, 0x02, 0x01, 0x0a, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x01, 0x00, 0xc0, 0xa8, 0x4d, 0x02,
        0x14, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9f, 0x28, 0x00, 0x00,
        0xfa, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// The same message's bytes as another notification type.
    fn as_type(bytes: &[u8], rtm: u8) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v[4] = rtm;
        v
    }

    #[test]
    fn parses_zebras_entries() {
        let FdbEvent::New(b) = decode(&REMOTE_BRIDGE) else {
            panic!()
        };
        assert_eq!(b.master, Some(IfIndex(3)));
        assert_eq!((b.ifindex, b.mac, b.dst), (IfIndex(4), MAC, None));
        assert!(b.is_ext_learned() && b.is_static() && b.is_master());
        let FdbEvent::New(x) = decode(&REMOTE_SELF) else {
            panic!()
        };
        assert_eq!(x.dst, Some("192.168.77.2".parse().unwrap()));
        assert_eq!((x.ifindex, x.mac, x.master), (IfIndex(4), MAC, None));
        assert_eq!(
            (x.state, x.flags),
            (nud::REACHABLE, ntf::SELF | ntf::EXT_LEARNED)
        );
        let FdbEvent::Del(f) = decode(&FLOOD_GONE) else {
            panic!()
        };
        assert!(f.is_flood() && f.is_permanent() && !f.is_master());
        assert_eq!(f.dst, Some("192.168.77.2".parse().unwrap()));
    }

    #[test]
    fn zebras_install_and_withdrawal_through_the_mirror() {
        use crate::mirror::{Mirror, RemoteEvent, Shadow};
        let mut m = Mirror::new();
        let sh = Shadow {
            vni: 100,
            bridge: IfIndex(3),
            vxlan: IfIndex(4),
            adv: IfIndex(6),
        };
        m.set_shadows(&[sh], &mut Vec::new());
        let vtep: IpAddr = "192.168.77.2".parse().unwrap();
        let mut out = Vec::new();
        let flood_new = as_type(&FLOOD_GONE, 28);
        for bytes in [&REMOTE_BRIDGE[..], &REMOTE_SELF, &flood_new] {
            m.apply(&decode(bytes));
        }
        m.settle(&mut out);
        assert_eq!(
            out,
            vec![
                RemoteEvent::Station {
                    vni: 100,
                    mac: MAC,
                    vtep
                },
                RemoteEvent::FloodList {
                    vni: 100,
                    vteps: vec![vtep]
                },
            ]
        );
        out.clear();
        for bytes in [
            as_type(&REMOTE_BRIDGE, 29),
            as_type(&REMOTE_SELF, 29),
            FLOOD_GONE.to_vec(),
        ] {
            m.apply(&decode(&bytes));
        }
        m.settle(&mut out);
        assert_eq!(
            out,
            vec![
                RemoteEvent::StationGone {
                    vni: 100,
                    mac: MAC,
                    vtep
                },
                RemoteEvent::FloodList {
                    vni: 100,
                    vteps: vec![]
                },
            ]
        );
    }

    #[test]
    fn non_bridge_and_malformed_messages_are_not_entries() {
        let mut m = local_station(IfIndex(7), MAC);
        m.header.family = AddressFamily::Inet;
        assert_eq!(entry(&m), None);
        let mut m = local_station(IfIndex(7), MAC);
        m.attributes = vec![NeighbourAttribute::LinkLayerAddress(vec![1, 2, 3])];
        assert_eq!(entry(&m), None, "not a MAC");
        m.attributes.clear();
        assert_eq!(entry(&m), None, "no MAC");
        assert_eq!(ip_of(&[1, 2, 3]), None);
    }

    #[test]
    fn mac_prints_like_iproute2() {
        assert_eq!(mac_str(&MAC), "02:00:00:00:01:01");
    }
}
