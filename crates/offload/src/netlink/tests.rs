//! Golden and hostile-input tests of the netlink edge: iproute2's captured requests
//! decode to flowd's own translation, flowd's bytes for the seed's first encap filter
//! are pinned, every flowd rule round-trips through a whole `RTM_NEWTFILTER`, ACKs
//! carry their extack, malformed input is an error and never a panic, and echoes are
//! verified on the bytes.

use crate::netlink::{self, Answer, RequestKind};
use crate::rule::{FlowerAction, FlowerRule, TcPolicy};
use crate::tests::*;
use datapath::{FlowId, IfIndex};

#[test]
fn seed_six_filters_translate_and_round_trip() {
    let bcast = [0xff; 6];
    let vm = [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef];
    let vf = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
    let flows = [
        seed_encap(0x0800, vm),
        seed_encap(0x0806, vm),
        seed_encap(0x0806, bcast),
        seed_decap(0x0800, vf),
        seed_decap(0x0806, vf),
        seed_decap(0x0806, bcast),
    ];
    for (i, (mf, a)) in flows.iter().enumerate() {
        let rule = tr(mf, a).unwrap();
        if i < 3 {
            assert_eq!(rule.ingress, IfIndex(3));
            assert!(matches!(
                rule.actions[..],
                [
                    FlowerAction::TunnelSet(_),
                    FlowerAction::Redirect(IfIndex(5))
                ]
            ));
        } else {
            assert_eq!(rule.ingress, IfIndex(5));
            assert_eq!(rule.matches.tunnel.key_id, Some(16));
            assert_eq!(
                rule.actions,
                vec![
                    FlowerAction::TunnelUnset,
                    FlowerAction::Redirect(IfIndex(3))
                ]
            );
        }
        for p in [TcPolicy::None, TcPolicy::SkipHw, TcPolicy::SkipSw] {
            assert_eq!(round_trip(&rule, p), rule);
        }
        assert_representative(&rule, mf);
    }
}

/// iproute2's request, captured with strace (tc 6.1, rep0 = if3, vxlan_sys = if5):
/// `tc filter add dev rep0 protocol ip parent ffff: prio 1 flower skip_hw
///  dst_mac 82:8a:29:ad:4e:ef src_mac e4:11:11:11:11:10 action tunnel_key set
///  src_ip 192.168.203.51 dst_ip 192.168.203.56 dst_port 4789 id 16
///  action mirred egress redirect dev vxlan_sys`
#[test]
fn golden_tc_encap_capture_decodes_to_our_translation() {
    let got = decode_capture(include_bytes!("../../testdata/tc_encap.bin"));
    let (mf, a) = seed_encap(0x0800, [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
    assert_eq!(got, tr(&mf, &a).unwrap());
}

/// `tc filter add dev vxlan_sys protocol arp parent ffff: prio 3 flower skip_hw
///  dst_mac ff:ff:ff:ff:ff:ff src_mac 82:8a:29:ad:4e:ef enc_src_ip 192.168.203.56
///  enc_dst_ip 192.168.203.51 enc_dst_port 4789 enc_key_id 16
///  action tunnel_key unset action mirred egress redirect dev rep0`
#[test]
fn golden_tc_decap_capture_decodes_to_our_translation() {
    let got = decode_capture(include_bytes!("../../testdata/tc_decap.bin"));
    let (mf, a) = seed_decap(0x0806, [0xff; 6]);
    assert_eq!(got, tr(&mf, &a).unwrap());
}

/// flowd's own bytes for the seed's first encap filter, pinned (regressions in the
/// encoding show up here); they must also decode to the same rule.
#[test]
fn golden_own_encap_bytes() {
    let (mf, a) = seed_encap(0x0800, [0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
    let rule = tr(&mf, &a).unwrap();
    let h = crate::RuleHandle {
        device: IfIndex(3),
        prio: 0x4000,
        protocol: 0x0800,
        handle: 1,
    };
    let mut buf = Vec::new();
    netlink::push_request(
        &mut buf,
        RequestKind::Create,
        1,
        netlink::new_filter(
            &h,
            &rule,
            TcPolicy::SkipHw,
            Some(netlink::cookie(0, FlowId(1))),
            0,
        ),
    );
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    let golden = include_str!("../../testdata/own_encap.hex").trim();
    assert_eq!(hex, golden);
}

#[test]
fn ack_with_extack_is_decoded() {
    // NLMSG_ERROR, flags CAPPED|ACK_TLVS, seq 5, errno -ENOENT, the request header,
    // then NLMSGERR_ATTR_MSG "TC classifier not found".
    let msg = b"TC classifier not found\0";
    let mut b = Vec::new();
    let tlv_len = 4 + msg.len();
    let total = 16 + 4 + 16 + tlv_len.next_multiple_of(4);
    b.extend((total as u32).to_ne_bytes());
    b.extend(2u16.to_ne_bytes());
    b.extend(0x300u16.to_ne_bytes());
    b.extend(5u32.to_ne_bytes());
    b.extend(0u32.to_ne_bytes());
    b.extend((-libc::ENOENT).to_ne_bytes());
    b.extend([0u8; 16]);
    b.extend((tlv_len as u16).to_ne_bytes());
    b.extend(1u16.to_ne_bytes());
    b.extend(msg);
    b.resize(total, 0);
    let a = netlink::parse_answers(&b);
    let Ok(Answer::Ack {
        seq: 5,
        error: Some((e, Some(m))),
    }) = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!(*e, crate::KernelErrno::NotFound);
    assert_eq!(m, "TC classifier not found");
}

#[test]
fn hostile_netlink_input_never_panics() {
    let (mf, a) = seed_decap(0x0806, [0xff; 6]);
    let rule = tr(&mf, &a).unwrap();
    let h = crate::RuleHandle {
        device: IfIndex(5),
        prio: 1,
        protocol: 0x0806,
        handle: 1,
    };
    let mut buf = Vec::new();
    netlink::push_request(
        &mut buf,
        RequestKind::Create,
        1,
        netlink::new_filter(&h, &rule, TcPolicy::None, None, 0),
    );
    // Every truncation and many byte flips: decoding may fail, never panic.
    for cut in 0..buf.len() {
        for a in netlink::parse_answers(&buf[..cut]) {
            if let Ok(Answer::Filter { msg, .. }) = a {
                let _ = netlink::decode_filter_msg(&msg);
            }
        }
    }
    let mut x: u32 = 12345;
    for _ in 0..5000 {
        let mut b = buf.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = (x as usize) % b.len();
            b[i] = (x >> 8) as u8;
        }
        for a in netlink::parse_answers(&b) {
            if let Ok(Answer::Filter { msg, .. }) = a {
                let _ = netlink::decode_filter_msg(&msg);
            }
        }
    }
}

#[test]
fn tcm_info_packs_prio_and_protocol() {
    let info = netlink::tcm_info(1, 0x0800);
    assert_eq!(info, 65544); // what tc sends for `protocol ip prio 1`
    assert_eq!(netlink::split_tcm_info(info), (1, 0x0800));
}

fn filter_bytes(rule: &FlowerRule, extra_flags: u32, kernel_extras: bool) -> Vec<u8> {
    use netlink_packet_route::tc::{
        TcActionAttribute, TcAttribute, TcFilterFlowerOption as O, TcOption,
    };
    let h = crate::RuleHandle {
        device: rule.ingress,
        prio: 0x4000,
        protocol: rule.matches.protocol,
        handle: 3,
    };
    // The options in object form (new_filter sends them pre-serialized), to edit.
    let opts = netlink::encode_flower(
        rule,
        TcPolicy::SkipHw,
        Some(netlink::cookie(1, FlowId(2))),
        0,
    )
    .into_iter()
    .map(TcOption::Flower)
    .collect();
    let mut msg = netlink::new_filter(&h, rule, TcPolicy::SkipHw, None, 0);
    msg.attributes = vec![
        TcAttribute::Kind("flower".into()),
        TcAttribute::Options(opts),
    ];
    for a in &mut msg.attributes {
        if let TcAttribute::Options(opts) = a {
            for o in opts.iter_mut() {
                match o {
                    TcOption::Flower(O::Flags(f)) => *f |= extra_flags,
                    TcOption::Flower(O::Actions(acts)) if kernel_extras => {
                        for act in acts.iter_mut() {
                            act.attributes.push(TcActionAttribute::Index(42));
                        }
                    }
                    _ => {}
                }
            }
            if kernel_extras {
                opts.reverse(); // the kernel's attribute order is its own
            }
        }
    }
    let mut buf = Vec::new();
    netlink::push_request(&mut buf, RequestKind::Create, 1, msg);
    buf
}

#[test]
fn echo_verification_on_bytes() {
    let (mf, a) = seed_encap(0x0806, [0xff; 6]);
    let rule = tr(&mf, &a).unwrap();
    let request = filter_bytes(&rule, 0, false);
    let echo = filter_bytes(&rule, crate::netlink::cls_flags::NOT_IN_HW, true);
    assert_eq!(
        crate::echo::verify(&request, &echo),
        Ok(crate::HwState::NotInHw)
    );
    let mut other = rule.clone();
    other.matches.eth_dst.as_mut().unwrap().value[0] = 0xfe;
    assert!(crate::echo::verify(&request, &filter_bytes(&other, 0, true)).is_err());
    let mut other = rule.clone();
    other.actions[1] = FlowerAction::Redirect(IfIndex(99));
    assert!(crate::echo::verify(&request, &filter_bytes(&other, 0, true)).is_err());
    for cut in 0..echo.len() {
        let _ = crate::echo::verify(&request, &echo[..cut]);
    }
    // DF asked for, and an echo without `nofrag` (a kernel without it, 6.1 for one, ignores it): told
    // apart from any other difference, so the backend can stop asking.
    let mut df = rule.clone();
    let Some(FlowerAction::TunnelSet(t)) = df
        .actions
        .iter_mut()
        .find(|a| matches!(a, FlowerAction::TunnelSet(_)))
    else {
        panic!("{:?}", df.actions)
    };
    t.df = true;
    assert!(df.sets_df());
    let request = filter_bytes(&df, 0, false);
    assert_eq!(
        crate::echo::verify(&request, &filter_bytes(&rule, 0, true)),
        Err(crate::echo::Mismatch::NoFragIgnored)
    );
    assert!(crate::echo::verify(&request, &filter_bytes(&df, 0, true)).is_ok());
    let mut cleared = df.clone();
    cleared.clear_df();
    assert_eq!(cleared, rule);
}
