//! A device's whole ingress redirected to another device's egress: the `ingress` qdisc,
//! and a `u32` filter matching every frame with a `mirred egress redirect` action, as
//! `tc filter add dev FROM ingress protocol all u32 match u32 0 0 action mirred egress
//! redirect dev TO` makes. flowd uses it to send what it writes to an uplink's
//! UDP-tunnel tap (`datapath::port::TunnelInjector`) out of the uplink; u32 and mirred
//! are in every kernel that has tc at all (cls_flower is not needed).

use super::actions::encode_actions;
use super::filter::{preserialized, tcm_info};
use super::qdisc::new_ingress_qdisc;
use crate::FlowerAction;
use datapath::IfIndex;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAttribute, TcFilterU32Option, TcHandle, TcHeader, TcMessage, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// `ETH_P_ALL`: the filter sees every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// The `RTM_NEWTFILTER` message: on `from`'s ingress, every frame to `to`'s egress.
pub fn redirect_filter(from: IfIndex, to: IfIndex) -> TcMessage {
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    // Mask 0: the one key matches any frame.
    sel.keys = vec![TcU32Key::default()];
    let opts = vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(encode_actions(
            &[FlowerAction::Redirect(to)],
            None,
            0,
        ))),
    ];
    TcMessage::from_parts(
        TcHeader {
            family: AddressFamily::Unspec,
            index: from.0 as i32,
            handle: TcHandle { major: 0, minor: 0 },
            parent: TcHandle {
                major: 0xffff,
                minor: 0,
            },
            info: tcm_info(1, ETH_P_ALL),
        },
        vec![TcAttribute::Kind("u32".into()), preserialized(&opts)],
    )
}

/// Redirects everything `from` receives to `to`'s egress: adds the ingress qdisc to
/// `from` (a fresh device: none is there yet) and the filter. Errors are the kernel's
/// (no `sch_ingress`, `cls_u32` or `act_mirred`, no permission, a device gone).
pub fn redirect_ingress(from: IfIndex, to: IfIndex) -> Result<(), rtnl::Error> {
    let mut rq = rtnl::Requester::open()?;
    let flags = NLM_F_CREATE | NLM_F_EXCL;
    rq.request(
        "ingress qdisc",
        RouteNetlinkMessage::NewQueueDiscipline(new_ingress_qdisc(from)),
        flags,
    )?;
    rq.request(
        "u32 redirect filter",
        RouteNetlinkMessage::NewTrafficFilter(redirect_filter(from, to)),
        flags,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::decode_actions;

    /// On the tap's ingress, every protocol, one terminal key that masks nothing, and
    /// one action: mirred redirecting to the uplink's egress.
    #[test]
    fn the_redirect_matches_everything_and_sends_it_out_of_the_uplink() {
        let m = redirect_filter(IfIndex(7), IfIndex(3));
        assert_eq!(m.header.index, 7);
        assert_eq!((m.header.parent.major, m.header.parent.minor), (0xffff, 0));
        assert_eq!(
            crate::netlink::split_tcm_info(m.header.info),
            (1, ETH_P_ALL)
        );
        assert_eq!(m.attributes[0], TcAttribute::Kind("u32".into()));
        let TcAttribute::Other(opts) = &m.attributes[1] else {
            panic!("options: {:?}", m.attributes[1]);
        };
        // Decoded back as the kernel would read them.
        let mut buf = vec![0u8; netlink_packet_core::Emitable::buffer_len(opts)];
        netlink_packet_core::Emitable::emit(opts, &mut buf);
        let nla = netlink_packet_core::NlaBuffer::new_checked(&buf[..]).unwrap();
        let mut sel = None;
        let mut acts = None;
        for a in netlink_packet_core::NlasIterator::new(nla.value()) {
            let a = a.unwrap();
            match netlink_packet_core::Parseable::parse(&a).unwrap() {
                TcFilterU32Option::Selector(s) => sel = Some(s),
                TcFilterU32Option::Action(v) => acts = Some(v),
                other => panic!("unexpected {other:?}"),
            }
        }
        let sel = sel.expect("a selector");
        assert_eq!(sel.flags, TcU32SelectorFlags::Terminal);
        assert_eq!(sel.keys.len(), 1);
        assert_eq!((sel.keys[0].mask, sel.keys[0].val), (0, 0));
        let acts = decode_actions(&acts.expect("actions")).unwrap();
        assert_eq!(acts.0, vec![FlowerAction::Redirect(IfIndex(3))]);
    }
}
