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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{RequestKind, push_request};

    /// `tc qdisc add dev if3 ingress`: RTM_NEWQDISC (36), REQUEST|ACK|CREATE|EXCL, a
    /// tcmsg on ifindex 3 with handle ffff:0 under TC_H_INGRESS, TCA_KIND "ingress"
    /// (iproute2 adds an empty TCA_OPTIONS, which the kernel does not need).
    #[rustfmt::skip]
    const INGRESS_IF3: [u8; 48] = [
        48, 0, 0, 0,  36, 0,  0x05, 0x06,  1, 0, 0, 0,  0, 0, 0, 0,
        0, 0, 0, 0,  3, 0, 0, 0,  0, 0, 0xff, 0xff,  0xf1, 0xff, 0xff, 0xff,  0, 0, 0, 0,
        12, 0, 1, 0,  b'i', b'n', b'g', b'r', b'e', b's', b's', 0,
    ];

    #[test]
    fn the_ingress_qdisc_request_is_byte_exact() {
        let mut buf = Vec::new();
        push_request(
            &mut buf,
            RequestKind::Qdisc,
            1,
            new_ingress_qdisc(IfIndex(3)),
        );
        assert_eq!(buf, INGRESS_IF3);
    }
}
