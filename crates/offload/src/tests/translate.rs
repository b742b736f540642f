//! Translation: every match and action flower can express round-trips; the rest fails
//! closed with the field or action named.

use super::*;

#[test]
fn every_match_translates_and_round_trips() {
    let mut cases: Vec<(FlowKey, FlowMask)> = Vec::new();
    // IPv4 TCP with prefixes, ports, flags, tos, ttl, fragments.
    let (mut k, mut m) = base_key(0x0800);
    k.ip_src = addr_to(ip("10.1.0.0"));
    m.ip_src = addr_to(ip("255.255.0.0"));
    k.ip_dst = addr_to(ip("10.2.3.4"));
    m.ip_dst = addr_to(ip("255.255.255.255"));
    k.ip_proto = 6;
    m.ip_proto = 0xff;
    k.tp_src = 1000;
    m.tp_src = 0xff00 & 1000 | 0xff00;
    k.tp_src &= m.tp_src;
    k.tp_dst = 80;
    m.tp_dst = 0xffff;
    k.tcp_flags = 0x002;
    m.tcp_flags = 0x0ff;
    k.ip_tos = 0x10;
    m.ip_tos = 0xfc;
    k.ip_ttl = 64;
    m.ip_ttl = 0xff;
    k.ip_frag = 0;
    m.ip_frag = frag::ANY | frag::LATER;
    cases.push((k, m));
    // UDP, SCTP.
    for proto in [17u8, 132] {
        let (mut k, mut m) = base_key(0x0800);
        k.ip_proto = proto;
        m.ip_proto = 0xff;
        k.tp_dst = 4789;
        m.tp_dst = 0xffff;
        cases.push((k, m));
    }
    // ICMP and ICMPv6 type/code; IPv6 addresses; later fragments.
    let (mut k, mut m) = base_key(0x0800);
    k.ip_proto = 1;
    m.ip_proto = 0xff;
    k.tp_src = 8;
    m.tp_src = 0xffff;
    k.tp_dst = 0;
    m.tp_dst = 0xffff;
    k.ip_frag = frag::ANY | frag::LATER;
    m.ip_frag = frag::ANY | frag::LATER;
    cases.push((k, m));
    let (mut k, mut m) = base_key(0x86dd);
    k.ip_src = addr_to(ip("2001:db8::1"));
    m.ip_src = addr_to(ip("ffff:ffff:ffff:ffff::"));
    k.ip_src[8..].fill(0);
    k.ip_dst = addr_to(ip("2001:db8::2"));
    m.ip_dst = [0xff; 16];
    k.ip_proto = 58;
    m.ip_proto = 0xff;
    k.tp_src = 135;
    m.tp_src = 0xff;
    cases.push((k, m));
    // ARP: op, spa, tpa, sha, tha.
    let (mut k, mut m) = base_key(0x0806);
    k.ip_proto = 1;
    m.ip_proto = 0xff;
    k.ip_src = addr_to(ip("1.1.1.2"));
    m.ip_src = addr_to(ip("255.255.255.255"));
    k.ip_dst = addr_to(ip("1.1.1.0"));
    m.ip_dst = addr_to(ip("255.255.255.0"));
    k.arp_sha = [0xe4, 0x11, 0x11, 0x11, 0x11, 0x10];
    m.arp_sha = [0xff; 6];
    k.arp_tha = [0; 6];
    m.arp_tha = [0xff; 6];
    cases.push((k, m));
    // VLAN: id + prio; QinQ.
    let (mut k, mut m) = base_key(0x0800);
    k.vlan_tci[0] = vlan::PRESENT | (3 << vlan::PCP_SHIFT) | 100;
    m.vlan_tci[0] = 0xffff;
    k.vlan_tpid[0] = 0x8100;
    m.vlan_tpid[0] = 0xffff;
    cases.push((k, m));
    let (mut k, mut m) = base_key(0x0800);
    k.vlan_tci = [vlan::PRESENT | 200, vlan::PRESENT | 300];
    m.vlan_tci = [
        vlan::PRESENT | vlan::VID_MASK,
        vlan::PRESENT | vlan::VID_MASK,
    ];
    k.vlan_tpid = [0x88a8, 0x8100];
    m.vlan_tpid = [0xffff, 0xffff];
    cases.push((k, m));
    // Exact mask of an untagged IPv4 UDP packet (every field consulted).
    let (mut k, _) = base_key(0x0800);
    k.ip_proto = 17;
    k.tp_src = 5;
    k.tp_dst = 6;
    k.ip_ttl = 64;
    k.eth_dst = [2, 0, 0, 0, 0, 1];
    cases.push((k, FlowMask::exact()));
    for (k, m) in cases {
        let mf = Megaflow::new(&k, &m);
        let rule = tr(&mf, &out(REP1)).unwrap_or_else(|e| panic!("{e} for {k:?}"));
        assert_eq!(round_trip(&rule, TcPolicy::None), rule);
        assert_representative(&rule, &mf);
        assert!(
            crate::sim::matches_key(&rule.matches, &k),
            "{rule:?} must match its own key"
        );
    }
}

#[test]
fn decap_ipv6_tunnel_with_tos_ttl_round_trips() {
    let (mut mf, a) = seed_decap(0x0800, [1; 6]);
    mf.key.tun_flags |= tun_flags::IPV6;
    mf.key.tun_src = addr_to(ip("2001:db8::56"));
    mf.mask.tun_src = [0xff; 16];
    mf.key.tun_dst = addr_to(ip("2001:db8::51"));
    mf.mask.tun_dst = [0xff; 16];
    mf.key.tun_tos = 0x20;
    mf.mask.tun_tos = 0xff;
    mf.key.tun_ttl = 10;
    mf.mask.tun_ttl = 0xff;
    let rule = tr(&mf, &a).unwrap();
    assert_eq!(rule.matches.tunnel.src.unwrap().value, ip("2001:db8::56"));
    assert_eq!(round_trip(&rule, TcPolicy::SkipHw), rule);
    assert_representative(&rule, &mf);
}

#[test]
fn every_action_translates_and_round_trips() {
    let (mf, _) = seed_encap(0x0800, [1; 6]);
    let mut t6 = TunnelAttrs::vxlan(0xabcdef, ip("2001:db8::56"));
    t6.tos = 0x10;
    t6.ttl = 32;
    let lists = vec![
        vec![],
        vec![
            Action::PushVlan {
                tpid: 0x8100,
                tci: (5 << 13) | 42,
            },
            Action::Output(UP0),
        ],
        vec![Action::PopVlan, Action::Output(REP1)],
        vec![Action::Output(REP1), Action::Output(UP0)],
        vec![Action::SetTunnel(t6), Action::Output(VXLAN)],
        vec![
            Action::Output(REP1),
            Action::SetTunnel(TunnelAttrs::vxlan(7, ip("192.168.203.56"))),
            Action::Output(VXLAN),
        ],
    ];
    for l in lists {
        let rule = tr(&mf, &Actions::new(l.clone())).unwrap();
        assert_eq!(round_trip(&rule, TcPolicy::None), rule, "{l:?}");
    }
    let rule = tr(&mf, &Actions::drop()).unwrap();
    assert_eq!(rule.actions, vec![FlowerAction::Drop]);
    let rule = tr(
        &mf,
        &Actions::new(vec![Action::Output(REP1), Action::Output(UP0)]),
    )
    .unwrap();
    assert_eq!(
        rule.actions,
        vec![
            FlowerAction::Mirror(IfIndex(4)),
            FlowerAction::Redirect(IfIndex(10))
        ]
    );
}

fn unsupported(mf: &Megaflow, a: &Actions) -> String {
    tr(mf, a).unwrap_err().to_string()
}

#[test]
fn unsupported_matches_and_actions_fail_closed() {
    let (k, m) = base_key(0x0800);
    let mut m2 = m;
    m2.eth_type = 0xff00;
    assert_eq!(
        unsupported(&Megaflow::new(&k, &m2), &out(REP1)),
        "unsupported match: eth_type"
    );
    let mut m2 = m;
    m2.in_port = 0;
    assert_eq!(
        unsupported(&Megaflow::new(&k, &m2), &out(REP1)),
        "unsupported match: in_port"
    );
    let (mut k2, mut m2) = (k, m);
    k2.ip_proto = 47;
    m2.ip_proto = 0xff;
    k2.tp_src = 1;
    m2.tp_src = 0xffff;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: tp_src"
    );
    let (mut k2, mut m2) = (k, m);
    k2.vlan_tci[0] = vlan::PRESENT | 5;
    m2.vlan_tci[0] = vlan::PRESENT | 0x00f;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: vlan_tci"
    );
    // "Untagged" with any ethertype: flower's `protocol all` would also take 802.1Q
    // frames, so it is refused; with an exact ethertype it is offloaded.
    let mut m2 = FlowMask(FlowKey {
        in_port: u32::MAX,
        ..FlowKey::default()
    });
    m2.vlan_tci[0] = vlan::PRESENT | vlan::VID_MASK;
    assert_eq!(
        unsupported(&Megaflow::new(&k, &m2), &out(REP1)),
        "unsupported match: vlan_tci"
    );
    m2.eth_type = 0xffff;
    let rule = tr(&Megaflow::new(&k, &m2), &out(REP1)).expect("untagged IPv4 offloads");
    assert_eq!(rule.matches.protocol, 0x0800);
    let (mut k2, mut m2) = (k, m);
    m2.ip_frag = frag::LATER;
    k2.ip_frag = frag::LATER;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: ip_frag"
    );
    let (mut k2, mut m2) = seed_decap(0x0800, [1; 6]).0.key_mask();
    m2.tun_flags |= tun_flags::CSUM;
    k2.tun_flags |= tun_flags::CSUM;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP0)),
        "unsupported match: tun_flags"
    );
    let (mut k2, mut m2) = (k, m);
    k2.tun_vni = 5;
    m2.tun_vni = u32::MAX;
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: tun_flags"
    );
    let (mut k2, mut m2) = (k, m);
    k2.eth_type = 0x8847;
    k2.ip_src = addr_to(ip("1.2.3.4"));
    m2.ip_src = addr_to(ip("255.255.255.255"));
    assert_eq!(
        unsupported(&Megaflow::new(&k2, &m2), &out(REP1)),
        "unsupported match: ip_src"
    );
    let mf = Megaflow::new(&k, &m);
    assert_eq!(
        unsupported(&mf, &Actions::new(vec![Action::Userspace])),
        "unsupported action: userspace"
    );
    let mut t = TunnelAttrs::vxlan(1 << 24, ip("192.168.203.56"));
    t.vni = 1 << 24;
    assert_eq!(
        unsupported(
            &mf,
            &Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)])
        ),
        "unsupported action: set_tunnel(vni > 24 bits)"
    );
    assert!(matches!(
        tr(&mf, &out(PortId(99))),
        Err(OffloadError::UnknownPort(PortId(99)))
    ));
    let e = tr(&mf, &Actions::new(vec![Action::Userspace])).unwrap_err();
    assert!(matches!(
        e,
        OffloadError::Unsupported(Unsupported::Action { .. })
    ));
}

#[test]
fn df_and_the_udp_checksum_translate_to_tunnel_key() {
    let (mf, _) = seed_encap(0x0800, [1; 6]);
    // Room for IPv6's 70 bytes of overhead.
    let ports = ports(1400, 1500);
    for (dst, df, csum) in [
        ("192.168.203.56", true, false),
        ("192.168.203.56", false, true),
        ("2001:db8::56", true, true),
    ] {
        let mut t = TunnelAttrs::vxlan(16, ip(dst));
        assert_eq!(t.csum, ip(dst).is_ipv6(), "the checksum is on over IPv6");
        assert!(t.df, "DF is set by default");
        (t.df, t.csum) = (df, csum);
        let a = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
        let r = judged_with(&ports, &paths(), &mf, &a, &[]).unwrap();
        let FlowerAction::TunnelSet(ts) = r.actions[0] else {
            panic!("{:?}", r.actions)
        };
        assert_eq!((ts.df, ts.csum), (df, csum));
        assert_eq!(
            round_trip(&r, TcPolicy::SkipHw),
            r,
            "nofrag and csum round-trip"
        );
    }
}
