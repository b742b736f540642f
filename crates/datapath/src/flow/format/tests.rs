//! Tests of the flow syntax: printing and parsing round-trip (examples and a property
//! over arbitrary megaflows), masking on parse, rejected input, actions.

use crate::actions::Actions;
use crate::flow::key::{FlowKey, FlowMask, Megaflow, frag, tun_flags, vlan};
use proptest::prelude::*;

fn rt(s: &str) {
    let mf: Megaflow = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(mf.to_string(), s);
}

#[test]
fn prints_and_parses_common_flows() {
    rt(
        "in_port(3),eth(src=e4:11:11:11:11:10,dst=82:8a:29:ad:4e:ef),eth_type(0x0800),\
        ipv4(src=1.1.1.2,dst=1.1.0.0/16,proto=17,frag=no),udp(dst=4789)",
    );
    rt(
        "tunnel(tun_id=0x10,src=192.168.203.56,dst=192.168.203.51,tp_dst=4789,flags(key)),\
        in_port(1),eth(dst=e4:11:11:11:11:10),eth_type(0x0806),arp(tip=1.1.1.2,op=1)",
    );
    rt("in_port(2),vlan(vid=10,pcp=0),eth_type(0x86dd),\
        ipv6(src=2001:db8::/32,proto=58,hlimit=255),icmpv6(type=135,code=0)");
    rt("in_port(1),vlan(tpid=0x88a8,vid=100),cvlan(vid=20),eth_type(0x0800)");
    rt("in_port(1),eth(src=e4:11:11:11:11:10),vlan(none)");
    rt(
        "eth(src=00:00:00:00:00:00/01:00:00:00:00:00),eth_type(0x0800),\
        ipv4(src=10.0.0.1/255.0.255.1,proto=6,tos=0xfc/0xfc),tcp(dst=80),tcp_flags(0x002/0x012)",
    );
    rt("<all>");
}

#[test]
fn masks_values_on_parse() {
    let mf: Megaflow = "eth_type(0x0800),ipv4(src=10.1.2.3/8)".parse().unwrap();
    assert_eq!(&mf.key.ip_src[..4], &[10, 0, 0, 0]);
    assert_eq!(mf.to_string(), "eth_type(0x0800),ipv4(src=10.0.0.0/8)");
}

#[test]
fn rejects_garbage() {
    for s in [
        "in_port(",
        "in_port(x)",
        "eth(src=zz:00:00:00:00:00)",
        "bogus(1)",
        "ipv4(src=1.2.3.4/40)",
        "ipv4(src=2001::1)",
        "eth_type(0x10000)",
        "in_port(1))",
        "tunnel(flags(nope))",
    ] {
        assert!(s.parse::<Megaflow>().is_err(), "{s} parsed");
    }
    for s in [
        "",
        "frob",
        "push_vlan(vid=5000)",
        "set(tunnel(tun_id=1))",
        "output(x)",
    ] {
        assert!(s.parse::<Actions>().is_err(), "{s} parsed");
    }
}

#[test]
fn actions_round_trip() {
    for s in [
        "drop",
        "3",
        "push_vlan(vid=10,pcp=3),2",
        "pop_vlan,4",
        "push_vlan(tpid=0x88a8,vid=100,pcp=0),1",
        "set(tunnel(tun_id=0x10,src=192.168.203.51,dst=192.168.203.56,tos=0x0,ttl=64,\
         tp_dst=4789,flags(key))),5",
        "set(tunnel(tun_id=0x11,ipv6_dst=2001:db8::2,tos=0x0,ttl=64,tp_dst=4789,\
         flags(key|csum))),5,userspace",
    ] {
        let a: Actions = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(a.to_string(), s);
    }
}

#[test]
fn packet_key_prints_relevant_fields() {
    let mut k = FlowKey {
        in_port: 1,
        eth_type: 0x0800,
        ip_proto: 6,
        ip_ttl: 64,
        tp_src: 1234,
        tp_dst: 80,
        tcp_flags: 0x002,
        ..FlowKey::default()
    };
    k.ip_src[..4].copy_from_slice(&[10, 0, 0, 1]);
    k.ip_dst[..4].copy_from_slice(&[10, 0, 0, 2]);
    assert_eq!(
        k.to_string(),
        "in_port(1),eth(src=00:00:00:00:00:00,dst=00:00:00:00:00:00),eth_type(0x0800),\
         ipv4(src=10.0.0.1,dst=10.0.0.2,proto=6,tos=0x0,ttl=64,frag=no),\
         tcp(src=1234,dst=80),tcp_flags(0x002)"
    );
}

/// A random megaflow whose fields are consistent with its protocols (what xlate makes).
/// Groups of the match syntax, for the round trip of what a user may type.
const GROUPS: [&str; 18] = [
    "in_port(3)",
    "eth(src=02:00:00:00:00:01)",
    "vlan(vid=10)",
    "eth_type(0x0800)",
    "eth_type(0x86dd)",
    "eth_type(0x0806)",
    "ipv4(src=10.0.0.0/8,dst=1.2.3.4,proto=6)",
    "ipv4(src=10.1.0.0/16,proto=1)",
    "ipv6(src=2001:db8::/32,proto=17)",
    "arp(sip=10.0.0.1,op=1)",
    "tcp(src=1,dst=2)",
    "udp(dst=53)",
    "icmp(type=8)",
    "icmpv6(type=128)",
    "tp(dst=5)",
    "tcp_flags(0x002)",
    "ipv4(proto=47)",
    "ipv4(frag=no)",
];

#[test]
fn a_protocol_group_carries_its_prerequisites() {
    let p = |s: &str| s.parse::<Megaflow>().map(|m| m.to_string());
    // The examples: ARP no longer matches an ipv4(..) rule, tcp(..) never
    // matches UDP, and the fuzz finding prints back whole.
    assert_eq!(
        p("ipv4(src=10.1.0.0/16,proto=1)").unwrap(),
        "eth_type(0x0800),ipv4(src=10.1.0.0/16,proto=1)"
    );
    assert_eq!(
        p("eth_type(0x0800),tcp(dst=80)").unwrap(),
        "eth_type(0x0800),ipv4(proto=6),tcp(dst=80)"
    );
    assert_eq!(
        p("ipv4(src=10.0.0.0/8,dst=1.2.3.4,proto=6),tcp(src=1,dst=2)").unwrap(),
        "eth_type(0x0800),ipv4(src=10.0.0.0/8,dst=1.2.3.4,proto=6),tcp(src=1,dst=2)"
    );
    assert_eq!(
        p("icmp(type=8)").unwrap(),
        "eth_type(0x0800),ipv4(proto=1),icmp(type=8)"
    );
    let e = p("tcp(dst=80)").unwrap_err().to_string();
    assert!(e.contains("`tcp(..)` needs the IP version"), "{e}");
    let e = p("ipv4(proto=17),tcp(dst=80)").unwrap_err().to_string();
    assert!(e.contains("proto=6"), "{e}");
    let e = p("eth_type(0x0806),ipv4(src=1.2.3.4)")
        .unwrap_err()
        .to_string();
    assert!(e.contains("eth_type(0x0800)"), "{e}");
    let e = p("ipv4(proto=6),tp(dst=1)").unwrap_err().to_string();
    assert!(e.contains("use tcp(..)"), "{e}");
    assert!(p("ipv4(src=1.2.3.4),ipv6(src=::1)").is_err());

    let rule: Megaflow = "ipv4(src=10.1.0.0/16,proto=1)".parse().unwrap();
    let mut arp = FlowKey {
        eth_type: 0x0806,
        ip_proto: 1,
        ..FlowKey::default()
    };
    arp.ip_src[..4].copy_from_slice(&[10, 1, 0, 9]);
    assert!(!rule.matches(&arp), "an ipv4 rule matched ARP");
    let mut icmp = arp;
    icmp.eth_type = 0x0800;
    assert!(rule.matches(&icmp));
    let tcp80: Megaflow = "eth_type(0x0800),tcp(dst=80)".parse().unwrap();
    let udp = FlowKey {
        eth_type: 0x0800,
        ip_proto: 17,
        tp_dst: 80,
        ..FlowKey::default()
    };
    assert!(!tcp80.matches(&udp), "a tcp rule matched UDP");
}

fn arb_megaflow() -> impl Strategy<Value = Megaflow> {
    let ip = prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x1234)];
    let proto = prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(47)];
    (
        ip,
        proto,
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u64>(),
        0u8..=128,
        0u8..=128,
    )
        .prop_map(|(et, proto, a, b, r1, r2, p1, p2)| {
            let mut k = FlowKey::default();
            let mut m = FlowKey::default();
            k.in_port = (r1 & 0xffff) as u32;
            m.in_port = if r2 & 1 != 0 { u32::MAX } else { 0 };
            k.eth_src.copy_from_slice(&a[..6]);
            k.eth_dst.copy_from_slice(&b[..6]);
            m.eth_src = if r2 & 2 != 0 { [0xff; 6] } else { [0; 6] };
            m.eth_dst = [b[6], 0, 0, 0, 0, b[7]];
            k.eth_type = et;
            m.eth_type = 0xffff;
            if r2 & 4 != 0 {
                k.vlan_tci[0] = vlan::PRESENT | (r1 >> 16) as u16 & 0xefff;
                k.vlan_tpid[0] = if r2 & 8 != 0 { 0x88a8 } else { 0x8100 };
                m.vlan_tci[0] = 0xffff;
                m.vlan_tpid[0] = 0xffff;
            }
            if r2 & 16 != 0 {
                k.tun_flags = tun_flags::PRESENT | tun_flags::KEY;
                m.tun_flags = tun_flags::ALL;
                k.tun_vni = (r1 >> 32) as u32 & 0xffffff;
                m.tun_vni = u32::MAX;
                k.tun_src[..4].copy_from_slice(&a[8..12]);
                m.tun_src[..4].fill(0xff);
                k.tun_tp_dst = 4789;
                m.tun_tp_dst = 0xffff;
            }
            let (n, plen) = match et {
                0x86dd => (16, p1),
                0x0800 | 0x0806 => (4, p1 % 33),
                _ => (0, 0),
            };
            if n > 0 {
                k.ip_src[..n].copy_from_slice(&a[16..16 + n]);
                k.ip_dst[..n].copy_from_slice(&b[16..16 + n]);
                for i in 0..n {
                    let bits = (plen as usize).saturating_sub(i * 8).min(8);
                    m.ip_src[i] = if bits == 0 { 0 } else { 0xff << (8 - bits) };
                }
                m.ip_dst[..n].fill(if p2 > 64 { 0xff } else { 0 });
                k.ip_proto = if et == 0x0806 { 1 } else { proto };
                m.ip_proto = 0xff;
            }
            if et == 0x0806 {
                k.arp_sha.copy_from_slice(&a[..6]);
                m.arp_sha = [0xff; 6];
            } else if n > 0 {
                k.ip_ttl = b[30];
                m.ip_ttl = if r2 & 32 != 0 { 0xff } else { 0 };
                k.ip_frag = [0, frag::ANY, frag::ANY | frag::LATER][usize::from(b[31] % 3)];
                m.ip_frag = 3;
                k.tp_src = (r1 >> 8) as u16;
                k.tp_dst = (r1 >> 24) as u16;
                m.tp_dst = 0xffff;
                m.tp_src = if r2 & 64 != 0 { 0xff00 } else { 0 };
                if proto == 6 {
                    k.tcp_flags = (r1 >> 40) as u16 & 0x0fff;
                    m.tcp_flags = 0x0fff;
                }
            }
            Megaflow::new(&k, &FlowMask(m))
        })
}

proptest! {
    #[test]
    fn megaflow_round_trips(mf in arb_megaflow()) {
        let s = mf.to_string();
        let back: Megaflow = s.parse().map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
        prop_assert_eq!(back, mf, "{}", s);
    }

    /// Whatever parses prints back to text that parses to the same match, and that
    /// text is a fixed point: nothing is dropped, nothing widened.
    #[test]
    fn parsed_matches_print_back_exactly(
        groups in proptest::sample::subsequence(GROUPS.to_vec(), 0..6).prop_shuffle()
    ) {
        let s = groups.join(",");
        if let Ok(mf) = s.parse::<Megaflow>() {
            let printed = mf.to_string();
            let back: Megaflow = printed
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{s} -> {printed}: {e}")))?;
            prop_assert_eq!(back, mf, "{} -> {}", s, printed);
            prop_assert_eq!(back.to_string(), printed.clone());
            // Every group given is in the printed text (the implied ones added).
            for g in &groups {
                let name = g.split('(').next().unwrap_or_default();
                prop_assert!(printed.contains(&format!("{name}(")), "{} -> {}", s, printed);
            }
        }
    }

    #[test]
    fn parse_never_panics(s in "[a-z_0-9(),=./:|x]{0,80}") {
        let _ = s.parse::<Megaflow>();
        let _ = s.parse::<Actions>();
    }
}
