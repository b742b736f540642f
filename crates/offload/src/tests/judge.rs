//! The judge: where a flow belongs, from the ports' live facts and its paths' facts.

use super::*;

#[test]
fn judge_mtu_switch_id_neighbour() {
    let (mf, a) = seed_encap(0x0800, [1; 6]);
    assert!(validated(1450, 1500, &mf, &a).is_ok());
    let e = validated(1500, 1500, &mf, &a).unwrap_err();
    assert_eq!(e.to_string(), "mtu: 1500 + 50 > 1500");
    assert_eq!(
        Placement::software(e).to_string(),
        "offloaded:no (mtu: 1500 + 50 > 1500)"
    );
    // IPv6 underlay: 70 bytes.
    let t = TunnelAttrs::vxlan(16, ip("2001:db8::56"));
    let a6 = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    assert_eq!(
        validated(1450, 1500, &mf, &a6).unwrap_err().to_string(),
        "mtu: 1450 + 70 > 1500"
    );
    // The source comes from the route when the flow leaves it open.
    let t = TunnelAttrs::vxlan(16, ip("192.168.203.56"));
    let a4 = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    let r = validated(1450, 1500, &mf, &a4).unwrap();
    let FlowerAction::TunnelSet(ts) = r.actions[0] else {
        panic!()
    };
    assert_eq!(ts.src, ip("192.168.203.51"));
    // Unresolved next hop.
    let t = TunnelAttrs::vxlan(16, ip("192.168.203.99"));
    let a9 = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    let e = validated(1450, 1500, &mf, &a9).unwrap_err();
    assert_eq!(e.category(), "neighbour");
    assert_eq!(
        e.to_string(),
        "neighbour: next hop 192.168.203.1 toward 192.168.203.99 unresolved"
    );
    // A key whose facts are not known yet.
    let t = TunnelAttrs::vxlan(16, ip("192.168.203.77"));
    let a7 = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    let e = validated(1450, 1500, &mf, &a7).unwrap_err();
    assert_eq!(e.category(), "no_route");
    // Different eswitches.
    let mut ports = ports(1450, 1500);
    let mut rep1 = ports.get(REP1).unwrap().clone();
    rep1.switch_id = Some(SwitchId(vec![9, 9]));
    ports.insert(rep1);
    let e = judged_with(&ports, &paths(), &mf, &out(REP1), &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "switch id: rep0 and rep1 are on different eswitches"
    );
}

#[test]
fn judge_reads_live_port_state_and_path_problems() {
    let (mf, a) = seed_encap(0x0800, [1; 6]);
    let p = paths();
    let mut ports = ports(1450, 1500);
    assert!(judged_with(&ports, &p, &mf, &a, &[]).is_ok());
    // The uplink goes down: software, with the uplink named.
    let mut up0 = ports.get(UP0).unwrap().clone();
    up0.up = false;
    ports.insert(up0.clone());
    let e = judged_with(&ports, &p, &mf, &a, &[]).unwrap_err();
    assert_eq!(
        (e.category(), e.to_string()),
        ("link_down", "link down: up0".into())
    );
    // The representor itself down.
    up0.up = true;
    ports.insert(up0);
    let mut rep0 = ports.get(REP0).unwrap().clone();
    rep0.up = false;
    ports.insert(rep0);
    let e = judged_with(&ports, &p, &mf, &a, &[]).unwrap_err();
    assert_eq!(e.to_string(), "link down: rep0");
    // No route, and a path out of an interface flowd does not manage.
    let ports = self::ports(1450, 1500);
    let mut p = paths();
    let key = LookupKey {
        src: Some(ip("192.168.203.51")),
        ..LookupKey::to(ip("192.168.203.56"))
    };
    p.insert(key, Err(PathProblem::NoRoute));
    let e = judged_with(&ports, &p, &mf, &a, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no route (toward 192.168.203.56 from 192.168.203.51)"
    );
    p.insert(
        key,
        Ok(Path {
            uplink: IfIndex(77),
            ..path_via_up0("192.168.203.51")
        }),
    );
    let e = judged_with(&ports, &p, &mf, &a, &[]).unwrap_err();
    assert_eq!(e.category(), "unmanaged_uplink");
}

#[test]
fn a_marked_tunnel_is_judged_on_its_own_key_and_marks_the_packet() {
    let (mf, _) = seed_encap(0x0800, [1; 6]);
    let mut t = TunnelAttrs::vxlan(16, ip("192.168.203.56"));
    t.mark = 0x5;
    let a = Actions::new(vec![Action::SetTunnel(t), Action::Output(VXLAN)]);
    let ports = ports(1450, 1500);
    // The unmarked key has a path; the marked one has none yet.
    let e = judged_with(&ports, &paths(), &mf, &a, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "path not resolved yet (toward 192.168.203.56 mark 0x5)"
    );
    let mut p = paths();
    p.insert(t.lookup_key(), Ok(path_via_up0("192.168.203.77")));
    let r = judged_with(&ports, &p, &mf, &a, &[]).unwrap();
    assert_eq!(r.actions[0], FlowerAction::SetMark(0x5));
    let FlowerAction::TunnelSet(ts) = r.actions[1] else {
        panic!("{:?}", r.actions)
    };
    assert_eq!(ts.src, ip("192.168.203.77"), "the marked key's own source");
    assert_eq!(round_trip(&r, TcPolicy::SkipHw), r, "skbedit round-trips");
}

#[test]
fn a_decap_flow_needs_its_path_on_the_representors_eswitch() {
    let (mf, a) = seed_decap(0x0800, [1; 6]);
    let key = LookupKey {
        src: Some(ip("192.168.203.51")),
        ..LookupKey::to(ip("192.168.203.56"))
    };
    let mut p = paths();
    p.remove(&key);
    let mut ports = ports(1450, 1500);
    assert!(matches!(
        judged_with(&ports, &p, &mf, &a, &[key]),
        Err(SoftwareReason::Path { .. })
    ));
    p.insert(key, Ok(path_via_up0("192.168.203.51")));
    assert!(judged_with(&ports, &p, &mf, &a, &[key]).is_ok());
    let mut up0 = ports.get(UP0).unwrap().clone();
    up0.switch_id = Some(SwitchId(vec![7]));
    ports.insert(up0);
    let e = judged_with(&ports, &p, &mf, &a, &[key]).unwrap_err();
    assert_eq!(e.category(), "switch_id");
}

#[test]
fn drops_on_an_uplink_stay_in_software() {
    // in_port = the uplink, no output: a tc filter would drop the host's traffic too.
    let (mut k, m) = base_key(0x0800);
    k.in_port = UP0.0;
    let e = validated(1450, 1500, &Megaflow::new(&k, &m), &Actions::drop()).expect_err("refused");
    assert_eq!(
        Placement::software(e).to_string(),
        "offloaded:no (uplink drop: kept in software, a filter would drop the host's traffic)"
    );
    // Forwarding from the uplink (a VLAN network's uplink -> representor) is offloaded.
    assert!(validated(1450, 1500, &Megaflow::new(&k, &m), &out(REP0)).is_ok());
}

#[test]
fn placement_display() {
    let p = Placement::Offloaded {
        backend: "tc",
        device: "rep0".into(),
        in_hw: crate::HwState::InHw { count: 1 },
    };
    assert_eq!(p.to_string(), "offloaded:yes dp:tc in_hw dev:rep0");
    let p = Placement::Offloaded {
        backend: "tc",
        device: "rep0".into(),
        in_hw: crate::HwState::NotInHw,
    };
    assert_eq!(p.to_string(), "offloaded:yes dp:tc not_in_hw dev:rep0");
    let p = Placement::software(SoftwareReason::Unsupported(Unsupported::Match {
        field: "tun_flags",
    }));
    assert_eq!(p.to_string(), "offloaded:no (unsupported match: tun_flags)");
}

/// The seed's setup: representor 9000 under a 9216 uplink, AES-GCM transport ESP (37
/// bytes at most) on the path. Offloaded only where packets stay encrypted: `skip_hw`
/// (tc's software path goes through the kernel's xfrm), or hardware with the SA packet-
/// offloaded on the flow's uplink; never while the policy blocks or has no SA. The MTU
/// rule counts ESP: 9000 + 50 + 37 fits 9216, 9150 + 87 does not.
#[test]
fn an_ipsec_protected_path_is_offloaded_only_where_it_stays_encrypted() {
    let (mf, a) = seed_encap(0x0800, [1; 6]);
    let (dmf, da) = seed_decap(0x0800, [1; 6]);
    let key = LookupKey {
        src: Some(ip("192.168.203.51")),
        ..LookupKey::to(ip("192.168.203.56"))
    };
    let ports = ports(9000, 9216);
    let sa = IpsecSa {
        spi: 3,
        overhead: 37,
        packet_offload: None,
    };
    let ipsec = Ipsec {
        policy: 12,
        blocks: false,
        proto: 50,
        mode: 0,
        reqid: 3,
        sa: Some(sa),
    };
    let with = |ipsec: Option<Ipsec>, mtu: u32| {
        let mut p = paths();
        for path in p.values_mut().flatten() {
            (path.ipsec, path.mtu) = (ipsec, mtu);
        }
        p
    };
    let judged = |p: &FastMap<LookupKey, PathFacts>, hw: bool| {
        let enc = judged_on(&ports, p, &mf, &a, &[], hw);
        let dec = judged_on(&ports, p, &dmf, &da, &[key], hw);
        (enc.map(|_| ()), dec.map(|_| ()))
    };
    // skip_hw: offloaded, and the MTU rule counts the ESP overhead.
    let p = with(Some(ipsec), 9216);
    assert_eq!(judged(&p, false), (Ok(()), Ok(())));
    let tight = self::ports(9150, 9216);
    let e = judged_on(&tight, &p, &mf, &a, &[], false).unwrap_err();
    assert_eq!(e.to_string(), "mtu: 9150 + 87 > 9216");
    // Hardware without a packet-offload SA: software, encap and decap alike.
    let (e, d) = judged(&p, true);
    let e = e.unwrap_err();
    assert_eq!(e.category(), "ipsec");
    assert_eq!(
        e.to_string(),
        "ipsec: SA 0x3 is not packet-offloaded on the uplink (if10): hardware would bypass it \
         (toward 192.168.203.56 from 192.168.203.51)"
    );
    assert_eq!(d.unwrap_err().category(), "ipsec");
    // The SA packet-offloaded on the path's uplink: hardware is fine; on another
    // device it is not.
    let on = |dev: u32| {
        let sa = IpsecSa {
            packet_offload: Some(IfIndex(dev)),
            ..sa
        };
        with(
            Some(Ipsec {
                sa: Some(sa),
                ..ipsec
            }),
            9216,
        )
    };
    assert_eq!(judged(&on(10), true), (Ok(()), Ok(())));
    assert_eq!(judged(&on(99), true).0.unwrap_err().category(), "ipsec");
    // No SA yet, or a block policy: software even with skip_hw.
    let p = with(Some(Ipsec { sa: None, ..ipsec }), 9216);
    let e = judged(&p, false).0.unwrap_err();
    assert_eq!(
        e.to_string(),
        "ipsec: policy 12 has no SA yet (toward 192.168.203.56 from 192.168.203.51)"
    );
    let p = with(
        Some(Ipsec {
            blocks: true,
            sa: None,
            ..ipsec
        }),
        9216,
    );
    assert!(
        judged(&p, false)
            .0
            .unwrap_err()
            .to_string()
            .contains("policy 12 blocks")
    );
    // Unprotected: as before, hardware or not.
    let p = with(None, 9216);
    assert_eq!(judged(&p, true), (Ok(()), Ok(())));
}
