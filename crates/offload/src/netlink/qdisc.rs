//! Queueing disciplines: the ingress qdisc flowd's filters hang from.

use datapath::IfIndex;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcHeader, TcMessage};

/// An `RTM_NEWQDISC` message adding the ingress qdisc to a device.
pub fn new_ingress_qdisc(device: IfIndex) -> TcMessage {
    TcMessage::from_parts(
        TcHeader {
            family: AddressFamily::Unspec,
            index: device.0 as i32,
            handle: TcHandle {
                major: 0xffff,
                minor: 0,
            },
            parent: TcHandle::INGRESS,
            info: 0,
        },
        vec![TcAttribute::Kind("ingress".into())],
    )
}
