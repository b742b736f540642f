//! Tests of VXLAN encapsulation and decapsulation: real captures (IPv4, IPv6), byte-exact
//! matches with the kernel's encapsulation, errors and frames that are not VXLAN, and
//! properties (no panic on any input, encap/decap round trip, the in-place and
//! completing paths agree with `encapsulate`).

use super::*;
use crate::wire::testutil::*;
use proptest::prelude::*;

fn v4_outer() -> OuterHeaders {
    OuterHeaders {
        src_mac: [0xe2, 0x1a, 0xff, 0xcc, 0xd0, 0x28],
        dst_mac: [0x86, 0xb0, 0xc4, 0x13, 0x39, 0x75],
        src_ip: "192.168.203.56".parse().unwrap(),
        dst_ip: "192.168.203.51".parse().unwrap(),
        tos: 0,
        ttl: 64,
        df: false,
        ident: 0x591e,
        udp_src: 48592,
        udp_dst: IANA_PORT,
        vni: 16,
        udp_csum: false,
    }
}

#[test]
fn decap_real_v4_ping() {
    let b = hex(VXLAN_V4_PING);
    let d = decapsulate(&b, IANA_PORT).unwrap().unwrap();
    assert_eq!(d.src, "192.168.203.56".parse::<IpAddr>().unwrap());
    assert_eq!(d.dst, "192.168.203.51".parse::<IpAddr>().unwrap());
    assert_eq!((d.tos, d.ttl, d.df), (0, 64, false));
    assert_eq!((d.udp_src, d.udp_dst, d.udp_csum), (48592, 4789, false));
    assert_eq!(d.vni, 16);
    assert_eq!(d.inner_offset, INNER_V4);
    assert_eq!(d.inner_len, b.len() - INNER_V4);
    assert_eq!(&d.inner(&b)[12..14], &[0x08, 0x00]);
    assert_eq!(decapsulate(&b, 8472), Ok(None));
}

#[test]
fn decap_real_v6() {
    for (cap, csum) in [(VXLAN_V6_UDP, 0xbeef), (VXLAN_V6_TCP_SYN, 0xf1dc)] {
        let b = hex(cap);
        let d = decapsulate(&b, IANA_PORT).unwrap().unwrap();
        assert_eq!(d.src, "fd00::56".parse::<IpAddr>().unwrap());
        assert_eq!(d.dst, "fd00::51".parse::<IpAddr>().unwrap());
        assert_eq!((d.vni, d.ttl, d.udp_csum), (16, 64, true));
        assert_eq!(d.inner_offset, INNER_V6);
        assert_eq!(d.inner_len, b.len() - INNER_V6);
        let udp = UdpPacket::new_checked(&b[54..]).unwrap();
        assert_eq!(udp.checksum(), csum);
        assert!(udp.verify_checksum(&d.src, &d.dst));
    }
}

#[test]
fn encap_matches_kernel_v4() {
    let cap = hex(VXLAN_V4_PING);
    let mut out = [0u8; 256];
    let n = encapsulate(&cap[INNER_V4..], &v4_outer(), &mut out).unwrap();
    assert_eq!(n, cap.len());
    // The kernel's IP id 0x591e, given as the executor's counter would.
    assert_eq!(&out[..n], &cap[..]);
}

#[test]
fn encap_matches_kernel_v6_with_checksum() {
    for cap in [VXLAN_V6_UDP, VXLAN_V6_TCP_SYN] {
        let cap = hex(cap);
        let udp_src = UdpPacket::new_checked(&cap[54..]).unwrap().src_port();
        let outer = OuterHeaders {
            src_ip: "fd00::56".parse().unwrap(),
            dst_ip: "fd00::51".parse().unwrap(),
            udp_src,
            udp_csum: false, // ignored: always computed over IPv6
            ..v4_outer()
        };
        let mut out = [0u8; 256];
        let n = encapsulate(&cap[INNER_V6..], &outer, &mut out).unwrap();
        assert_eq!(&out[..n], &cap[..]);
    }
}

#[test]
fn encap_errors() {
    let inner = [0u8; 60];
    let mut out = [0u8; 109];
    assert_eq!(
        encapsulate(&inner, &v4_outer(), &mut out),
        Err(Error::BufferTooSmall)
    );
    let mut out = [0u8; 110];
    assert_eq!(encapsulate(&inner, &v4_outer(), &mut out), Ok(110));
    let mixed = OuterHeaders {
        dst_ip: "::1".parse().unwrap(),
        ..v4_outer()
    };
    assert_eq!(encapsulate(&inner, &mixed, &mut out), Err(Error::Malformed));
    let big_vni = OuterHeaders {
        vni: 1 << 24,
        ..v4_outer()
    };
    assert_eq!(
        encapsulate(&inner, &big_vni, &mut out),
        Err(Error::Malformed)
    );
    let huge = vec![0u8; 65535 - 35];
    let mut out = vec![0u8; 70000];
    assert_eq!(
        encapsulate(&huge, &v4_outer(), &mut out),
        Err(Error::TooLarge)
    );
    assert!(encapsulate(&huge[..65535 - 36], &v4_outer(), &mut out).is_ok());
}

#[test]
fn every_prefix_is_an_error_not_a_panic() {
    for cap in [VXLAN_V4_PING, VXLAN_V4_ARP, VXLAN_V6_UDP, VXLAN_V6_TCP_SYN] {
        let b = hex(cap);
        for n in 0..b.len() {
            let r = decapsulate(&b[..n], IANA_PORT);
            assert!(r.is_err(), "len {n}: {r:?}");
        }
    }
}

#[test]
fn not_vxlan_and_malformed() {
    let mut b = hex(VXLAN_V4_PING);
    b[42] = 0; // clear the I flag
    assert_eq!(decapsulate(&b, IANA_PORT), Err(Error::Malformed));
    let mut b = hex(VXLAN_V4_PING);
    b[23] = 6; // protocol TCP (checksum now stale, but not UDP: not ours)
    assert_eq!(decapsulate(&b, IANA_PORT), Ok(None));
    let mut b = hex(VXLAN_V4_PING);
    b[22] = 1; // TTL changed: header checksum fails
    assert_eq!(decapsulate(&b, IANA_PORT), Err(Error::Checksum));
    let mut b = hex(VXLAN_V4_PING);
    b[12] = 0x86;
    b[13] = 0xdd;
    assert!(decapsulate(&b, IANA_PORT).is_err());
    b[12] = 0x08;
    b[13] = 0x06;
    assert_eq!(decapsulate(&b, IANA_PORT), Ok(None));
    // A fragment is not decapsulated.
    let mut b = hex(VXLAN_V4_PING);
    let mut ip = Ipv4Packet::new_unchecked(&mut b[14..34]);
    ip.set_frag(false, true, 0);
    ip.fill_checksum();
    assert_eq!(decapsulate(&b, IANA_PORT), Ok(None));
    // Ethernet padding after the IPv4 total length is ignored.
    let mut b = hex(VXLAN_V4_PING);
    let len = b.len();
    b.extend_from_slice(&[0xee; 10]);
    let d = decapsulate(&b, IANA_PORT).unwrap().unwrap();
    assert_eq!(d.inner_range().end, len);
}

#[test]
fn source_port_range() {
    assert_eq!(source_port(0), 49152);
    assert_eq!(source_port(u32::MAX), 65535);
    assert_eq!(source_port(0x8000_0000), 49152 + 8192);
}

#[test]
fn header_round_trip() {
    let mut buf = [0xffu8; 8];
    VxlanRepr { vni: 0xabcdef }.emit(&mut VxlanHeader::new_unchecked(&mut buf[..]));
    assert_eq!(buf, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
    let h = VxlanHeader::new_checked(&buf[..]).unwrap();
    assert_eq!(VxlanRepr::parse(&h), Ok(VxlanRepr { vni: 0xabcdef }));
    assert_eq!(
        VxlanHeader::new_checked(&buf[..7]).unwrap_err(),
        Error::Truncated
    );
}

fn arb_outer() -> impl Strategy<Value = OuterHeaders> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<(u8, u8, bool, u16, u16, bool)>(),
        0..=MAX_VNI,
        any::<([u8; 6], [u8; 6], u16)>(),
    )
        .prop_map(
            |(v6, s, d, (tos, ttl, df, us, ud, csum), vni, (sm, dm, ident))| {
                let (src_ip, dst_ip) = if v6 {
                    (IpAddr::from(s), IpAddr::from(d))
                } else {
                    (
                        IpAddr::from([s[0], s[1], s[2], s[3]]),
                        IpAddr::from([d[0], d[1], d[2], d[3]]),
                    )
                };
                OuterHeaders {
                    src_mac: sm,
                    dst_mac: dm,
                    src_ip,
                    dst_ip,
                    tos,
                    ttl,
                    df,
                    ident,
                    udp_src: us,
                    udp_dst: ud,
                    vni,
                    udp_csum: csum,
                }
            },
        )
}

proptest! {
    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200), port in any::<u16>()) {
        let _ = decapsulate(&b, port);
        let _ = decapsulate(&b, IANA_PORT);
    }

    #[test]
    fn mutated_capture_never_panics(i in 0usize..92, v in any::<u8>(), cut in 0usize..93) {
        let mut b = hex(VXLAN_V4_PING);
        b[i] = v;
        let _ = decapsulate(&b[..cut], IANA_PORT);
        if let Ok(Some(d)) = decapsulate(&b, IANA_PORT) {
            prop_assert!(d.inner_range().end <= b.len());
        }
    }

    #[test]
    fn encap_decap_round_trip(outer in arb_outer(), inner in proptest::collection::vec(any::<u8>(), 14..300)) {
        let mut out = [0u8; 400];
        let n = encapsulate(&inner, &outer, &mut out).unwrap();
        let frame = &out[..n];
        let d = decapsulate(frame, outer.udp_dst).unwrap().unwrap();
        prop_assert_eq!(d.inner(frame), &inner[..]);
        prop_assert_eq!((d.src, d.dst, d.vni, d.ttl, d.tos), (outer.src_ip, outer.dst_ip, outer.vni, outer.ttl, outer.tos));
        prop_assert_eq!((d.udp_src, d.udp_dst), (outer.udp_src, outer.udp_dst));
        prop_assert_eq!(d.df, outer.df && outer.src_ip.is_ipv4());
        let udp_at = if outer.src_ip.is_ipv6() { 54 } else { 34 };
        let udp = UdpPacket::new_checked(&frame[udp_at..]).unwrap();
        prop_assert!(udp.verify_checksum(&outer.src_ip, &outer.dst_ip));
        prop_assert_eq!(d.udp_csum, outer.udp_csum || outer.src_ip.is_ipv6());
        if outer.src_ip.is_ipv4() {
            let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
            prop_assert_eq!(ip.ident(), outer.ident);
            prop_assert!(ip.verify_checksum());
        }
    }

    #[test]
    fn in_place_and_completing_agree_with_encapsulate(
        outer in arb_outer(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // An inner UDP datagram over IPv4 with a correct checksum, and the same with
        // the checksum left partial by its sender.
        let mut seg = vec![0u8; 8];
        seg.extend_from_slice(&payload);
        let ip = crate::wire::Ipv4Repr { payload_len: 0, ..ipv4_repr(0, true) };
        let mut inner = ipv4_frame(&[], ip, &seg);
        let l4 = inner.len() - seg.len();
        inner[l4 + 4..l4 + 6].copy_from_slice(&(seg.len() as u16).to_be_bytes());
        let lay = crate::wire::gso::Layout::parse(&inner).unwrap();
        let (s, d) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        UdpPacket::new_unchecked(&mut inner[l4..]).fill_checksum(&s, &d);
        let mut partial = inner.clone();
        let c = crate::wire::gso::prepare_partial(&mut partial, &lay).unwrap();
        let mut a = [0u8; 500];
        let n = encapsulate(&inner, &outer, &mut a).unwrap();
        let mut b = [0u8; 500];
        let m = encapsulate_completing(&partial, Some(c), &outer, &mut b).unwrap();
        prop_assert_eq!(&a[..n], &b[..m]);
        let mut p = [0u8; 500];
        let o = overhead(&outer).unwrap();
        p[o..o + inner.len()].copy_from_slice(&inner);
        let k = encapsulate_in_place(&mut p, inner.len(), &outer).unwrap();
        prop_assert_eq!(&a[..n], &p[..k]);
    }
}
