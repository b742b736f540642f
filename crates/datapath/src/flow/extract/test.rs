//! Tests of key extraction: real captures (ping, ARP, TCP, UDP, ICMPv6), tunnel
//! metadata, QinQ, truncated and fragmented packets, flow hashes, and the malformed
//! frames `extract_checked` rejects with a reason; properties: no panic on any input.

use super::*;
use crate::wire::testutil::*;
use crate::wire::vxlan::{IANA_PORT, OuterHeaders, decapsulate, encapsulate};
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn v4(a: &str) -> [u8; 16] {
    addr_to(a.parse().unwrap())
}

fn inner(cap: &str) -> Vec<u8> {
    let b = hex(cap);
    let d = decapsulate(&b, IANA_PORT).unwrap().unwrap();
    d.inner(&b).to_vec()
}

#[test]
fn real_ping() {
    let f = inner(VXLAN_V4_PING);
    let (k, off) = extract_with_offsets(&f, PortId(3), None);
    assert_eq!(k.in_port, 3);
    assert_eq!(k.eth_src, [0x3e, 0x36, 0x93, 0x1e, 0x66, 0x94]);
    assert_eq!(k.eth_dst, [0x7e, 0x02, 0xbd, 0x12, 0xa8, 0xde]);
    assert_eq!(k.eth_type, 0x0800);
    assert_eq!(k.ip_src, v4("10.0.0.1"));
    assert_eq!(k.ip_dst, v4("10.0.0.2"));
    assert_eq!((k.ip_proto, k.ip_ttl, k.ip_tos, k.ip_frag), (1, 64, 0, 0));
    assert_eq!((k.tp_src, k.tp_dst, k.tcp_flags), (8, 0, 0));
    assert_eq!(k.vlan_tci, [0, 0]);
    assert!(!k.has_tunnel());
    assert_eq!(
        off,
        Offsets {
            vlans: 0,
            l3: Some(14),
            l4: Some(34)
        }
    );
    assert_eq!(k.pad, [0; 6]);
}

#[test]
fn real_arp() {
    let f = inner(VXLAN_V4_ARP);
    let k = FlowKey::extract(&f, PortId(1), None);
    assert_eq!(k.eth_type, 0x0806);
    assert_eq!(k.ip_proto, 1);
    assert_eq!(k.ip_src, v4("10.0.0.1"));
    assert_eq!(k.ip_dst, v4("10.0.0.2"));
    assert_eq!(k.arp_sha, [0x3e, 0x36, 0x93, 0x1e, 0x66, 0x94]);
    assert_eq!(k.arp_tha, [0; 6]);
    assert_eq!(k.eth_dst, [0xff; 6]);
}

#[test]
fn real_tcp_syn_and_udp() {
    let k = FlowKey::extract(&inner(VXLAN_V6_TCP_SYN), PortId(1), None);
    assert_eq!((k.ip_proto, k.tp_src, k.tp_dst), (6, 44748, 80));
    assert_eq!(k.tcp_flags, tcp::flags::SYN);
    assert_eq!(k.ip_frag, 0);
    let k = FlowKey::extract(&inner(VXLAN_V6_UDP), PortId(1), None);
    assert_eq!((k.ip_proto, k.tp_src, k.tp_dst), (17, 51927, 5353));
    assert_eq!(k.ip_src, v4("10.0.6.1"));
}

#[test]
fn real_icmpv6() {
    let f = hex(ICMPV6_RS);
    let k = FlowKey::extract(&f, PortId(1), None);
    assert_eq!(k.eth_type, 0x86dd);
    assert_eq!(
        k.ip_src_addr(),
        Some("fe80::3c36:93ff:fe1e:6694".parse().unwrap())
    );
    assert_eq!(k.ip_dst_addr(), Some("ff02::2".parse().unwrap()));
    assert_eq!(
        (k.ip_proto, k.ip_ttl, k.tp_src, k.tp_dst),
        (58, 255, 133, 0)
    );
}

#[test]
fn outer_frame_and_tunnel_meta() {
    let b = hex(VXLAN_V4_PING);
    let outer = FlowKey::extract(&b, PortId(9), None);
    assert_eq!(
        (outer.ip_proto, outer.tp_src, outer.tp_dst),
        (17, 48592, 4789)
    );
    let d = decapsulate(&b, IANA_PORT).unwrap().unwrap();
    let meta = TunnelMeta::from(&d);
    let k = FlowKey::extract(d.inner(&b), PortId(9), Some(&meta));
    assert!(k.has_tunnel());
    assert_eq!(k.tunnel_src(), Some("192.168.203.56".parse().unwrap()));
    assert_eq!(k.tunnel_dst(), Some("192.168.203.51".parse().unwrap()));
    assert_eq!(
        (k.tun_vni, k.tun_ttl, k.tun_tos, k.tun_tp_dst),
        (16, 64, 0, 4789)
    );
    assert_eq!(k.tun_flags, tun_flags::PRESENT | tun_flags::KEY);
    let b6 = hex(VXLAN_V6_UDP);
    let d6 = decapsulate(&b6, IANA_PORT).unwrap().unwrap();
    let k6 = FlowKey::extract(d6.inner(&b6), PortId(9), Some(&d6.into()));
    assert_eq!(
        k6.tun_flags,
        tun_flags::PRESENT | tun_flags::KEY | tun_flags::IPV6 | tun_flags::CSUM
    );
    assert_eq!(k6.tunnel_src(), Some("fd00::56".parse().unwrap()));
    // Same inner flow, same hash, whatever the port or tunnel.
    let plain = FlowKey::extract(d.inner(&b), PortId(1), None);
    assert_eq!(plain.flow_hash(), k.flow_hash());
    assert_ne!(plain.flow_hash(), outer.flow_hash());
}

#[test]
fn qinq_and_offsets() {
    let f = hex("ffff ffff ffff 0200 0000 0001 88a8 a064 8100 00c8 0800
         4500 001c 0000 0000 4011 0000 0a00 0001 0a00 0002 0035 0035 0008 0000");
    let (k, off) = extract_with_offsets(&f, PortId(1), None);
    assert_eq!(k.vlan_tpid, [0x88a8, 0x8100]);
    assert_eq!(k.vlan_tci, [0xa064 | vlan::PRESENT, 0x00c8 | vlan::PRESENT]);
    assert_eq!(k.eth_type, 0x0800);
    assert_eq!((k.tp_src, k.tp_dst), (53, 53));
    assert_eq!(
        off,
        Offsets {
            vlans: 2,
            l3: Some(22),
            l4: Some(42)
        }
    );
    // Truncated second tag: eth_type is its TPID, nothing after.
    let (k, off) = extract_with_offsets(&f[..20], PortId(1), None);
    assert_eq!(k.vlan_tci, [0xa064 | vlan::PRESENT, 0]);
    assert_eq!(k.eth_type, 0x8100);
    assert_eq!(
        off,
        Offsets {
            vlans: 1,
            l3: None,
            l4: None
        }
    );
    // 802.3 length field.
    let mut llc = f.clone();
    llc[12] = 0x00;
    llc[13] = 0x40;
    assert_eq!(
        FlowKey::extract(&llc, PortId(1), None).eth_type,
        ETH_TYPE_NONE
    );
}

#[test]
fn truncated_tcp_keeps_l3() {
    let f = inner(VXLAN_V6_TCP_SYN);
    // Cut inside the TCP header, keeping the IPv4 total length consistent.
    let mut cut = f[..14 + 20 + 30].to_vec();
    let mut ip = Ipv4Packet::new_unchecked(&mut cut[14..34]);
    ip.set_total_len(50);
    let k = FlowKey::extract(&cut, PortId(1), None);
    assert_eq!(k.ip_src, v4("10.0.6.1"));
    assert_eq!(k.ip_proto, 6);
    assert_eq!((k.tp_src, k.tp_dst, k.tcp_flags), (0, 0, 0));
    // Cut without fixing the total length: the IPv4 header is not trusted at all.
    let k = FlowKey::extract(&f[..14 + 20 + 30], PortId(1), None);
    assert_eq!((k.eth_type, k.ip_proto, k.ip_src), (0x0800, 0, [0; 16]));
}

#[test]
fn fragments() {
    let mut f = inner(VXLAN_V4_PING);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
    ip.set_frag(false, true, 0);
    let k = FlowKey::extract(&f, PortId(1), None);
    assert_eq!(k.ip_frag, frag::ANY);
    assert_eq!(k.tp_src, 8);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
    ip.set_frag(false, false, 1480);
    let (k, off) = extract_with_offsets(&f, PortId(1), None);
    assert_eq!(k.ip_frag, frag::ANY | frag::LATER);
    assert_eq!((k.ip_proto, k.tp_src, off.l4), (1, 0, None));

    // IPv6 UDP behind hop-by-hop and a first fragment.
    let f6 = hex("3333 0000 0001 0200 0000 0001 86dd
         6000 0000 0018 0040 fe80 0000 0000 0000 0000 0000 0000 0001
         ff02 0000 0000 0000 0000 0000 0000 0001
         2c00 0104 0000 0000 1100 0001 0000 0007 1234 0035 0008 0000");
    let (k, off) = extract_with_offsets(&f6, PortId(1), None);
    assert_eq!((k.ip_proto, k.ip_frag, k.ip_ttl), (17, frag::ANY, 64));
    assert_eq!((k.tp_src, k.tp_dst), (0x1234, 53));
    assert_eq!(off.l4, Some(14 + 40 + 16));
}

#[test]
fn every_prefix_of_every_capture_is_safe() {
    for cap in [
        VXLAN_V4_PING,
        VXLAN_V4_ARP,
        VXLAN_V6_UDP,
        VXLAN_V6_TCP_SYN,
        ICMPV6_RS,
    ] {
        let b = hex(cap);
        let full = FlowKey::extract(&b, PortId(1), None);
        for n in 0..b.len() {
            let k = FlowKey::extract(&b[..n], PortId(1), None);
            // A prefix never invents information: each non-zero field equals the
            // full frame's.
            if k.eth_type != 0 && is_tpid(k.eth_type) {
                continue;
            }
            for (a, f) in k.as_bytes().iter().zip(full.as_bytes()) {
                assert!(*a == 0 || a == f, "len {n}");
            }
        }
    }
}

#[test]
fn flow_hash_follows_the_connection_not_its_flags() {
    use crate::wire::tcp::flags::{ACK, FIN, PSH, SYN};
    let key = |fl: u16, ttl: u8, tos: u8, sport: u16| {
        let mut f = tcp_frame(false, &[], 10, fl);
        f[14 + 1] = tos;
        f[14 + 8] = ttl;
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        FlowKey::extract(&f, PortId(1), None)
    };
    // One 5-tuple sent S, A, PA, PA, FA with other TTLs and TOS: one hash.
    let one: Vec<u32> = [
        (SYN, 64, 0),
        (ACK, 63, 0x10),
        (PSH | ACK, 1, 0xb8),
        (FIN | ACK, 64, 2),
    ]
    .iter()
    .map(|&(fl, ttl, tos)| key(fl, ttl, tos, 40000).flow_hash())
    .collect();
    assert!(one.iter().all(|&h| h == one[0]), "{one:x?}");
    // Connections spread: 1000 source ports, many distinct outer ports.
    let ports: std::collections::HashSet<u16> = (0..1000)
        .map(|p| crate::wire::vxlan::source_port(key(ACK, 64, 0, 30000 + p).flow_hash()))
        .collect();
    assert!(ports.len() > 950, "{} distinct ports", ports.len());
    // A VLAN tag or another ingress does not change it either.
    let tagged = tcp_frame(false, &[(0x8100, 9)], 10, ACK);
    let plain = tcp_frame(false, &[], 10, ACK);
    assert_eq!(
        FlowKey::extract(&tagged, PortId(2), None).flow_hash(),
        FlowKey::extract(&plain, PortId(1), None).flow_hash()
    );
    // Every fragment of a datagram hashes alike (no ports after the first).
    let mut frag = plain.clone();
    frag[14 + 6] = 0x20; // MF, offset 0: the first fragment, with its ports
    let mut later = plain;
    later[14 + 6] = 0x00;
    later[14 + 7] = 0x10; // offset 128
    let (a, b) = (
        FlowKey::extract(&frag, PortId(1), None),
        FlowKey::extract(&later, PortId(1), None),
    );
    assert_eq!(a.flow_hash(), b.flow_hash());
}

#[test]
fn encapsulated_key_hash_gives_source_port() {
    let f = inner(VXLAN_V4_PING);
    let k = FlowKey::extract(&f, PortId(1), None);
    let port = crate::wire::vxlan::source_port(k.flow_hash());
    assert!(port >= 49152);
    let outer = OuterHeaders {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        dst_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        tos: 0,
        ttl: 64,
        df: true,
        ident: 1,
        udp_src: port,
        udp_dst: IANA_PORT,
        vni: 42,
        udp_csum: true,
    };
    let mut out = [0u8; 256];
    let n = encapsulate(&f, &outer, &mut out).unwrap();
    let d = decapsulate(&out[..n], IANA_PORT).unwrap().unwrap();
    let k2 = FlowKey::extract(d.inner(&out[..n]), PortId(1), Some(&d.into()));
    assert_eq!(k2.flow_hash(), k.flow_hash());
    assert_eq!(
        k2.tun_flags,
        tun_flags::PRESENT | tun_flags::KEY | tun_flags::CSUM | tun_flags::DONT_FRAGMENT
    );
}

/// The verdict on a frame: None when a NIC would pass it.
fn bad(f: &[u8]) -> Option<Malformed> {
    extract_checked(f, PortId(1), None).2
}

/// A minimal IPv4 UDP frame (10.0.0.1:53 -> 10.0.0.2:53, 4 bytes of data).
fn udp4() -> Vec<u8> {
    hex("0200 0000 0002 0200 0000 0001 0800
         4500 0020 0000 0000 4011 0000 0a00 0001 0a00 0002
         0035 0035 000c 0000 6162 6364")
}

/// A minimal IPv6 UDP frame (fd00::1 -> fd00::2, ports 53, no data).
fn udp6() -> Vec<u8> {
    hex("0200 0000 0002 0200 0000 0001 86dd
         6000 0000 0008 1140 fd00 0000 0000 0000 0000 0000 0000 0001
         fd00 0000 0000 0000 0000 0000 0000 0002 0035 0035 0008 0000")
}

#[test]
fn well_formed_frames_pass_padding_included() {
    for f in [
        udp4(),
        udp6(),
        tcp_frame(false, &[], 10, tcp::flags::ACK),
        tcp_frame(true, &[(0x8100, 7)], 10, tcp::flags::ACK),
        inner(VXLAN_V4_ARP),
        inner(VXLAN_V4_PING),
        hex(ICMPV6_RS),
    ] {
        assert_eq!(bad(&f), None);
        let mut padded = f.clone();
        padded.resize(f.len() + 20, 0);
        assert_eq!(bad(&padded), None, "Ethernet padding is no error");
    }
    // An 802.3 frame and an unknown ethertype are not parsed, not judged.
    let mut llc = udp4();
    llc[12..14].copy_from_slice(&[0x00, 0x40]);
    assert_eq!(bad(&llc), None);
}

#[test]
fn each_reason_is_found() {
    let v4 = udp4();
    let set = |f: &[u8], at: usize, b: u8| {
        let mut f = f.to_vec();
        f[at] = b;
        f
    };
    let cases: Vec<(Vec<u8>, Malformed)> = vec![
        (v4[..13].to_vec(), Malformed::EthTruncated),
        (
            hex("ffff ffff ffff 0200 0000 0001 8100 00"),
            Malformed::VlanTruncated,
        ),
        (v4[..14 + 19].to_vec(), Malformed::Ipv4Truncated),
        (set(&v4, 14, 0x65), Malformed::Ipv4Version),
        (set(&v4, 14, 0x44), Malformed::Ipv4Ihl),
        (set(&v4, 17, 0x10), Malformed::Ipv4TotalLen), // 16 < 20
        (set(&v4, 16, 0x01), Malformed::Ipv4TotalLen), // 288 > frame
        (udp6()[..14 + 39].to_vec(), Malformed::Ipv6Truncated),
        (set(&udp6(), 14, 0x40), Malformed::Ipv6Version),
        (set(&udp6(), 19, 0x09), Malformed::Ipv6PayloadLen),
        // Hop-by-hop header claiming 16 bytes in an 8-byte payload.
        (
            {
                let mut f = set(&set(&udp6(), 20, 0), 55, 1);
                f[54] = 17;
                f
            },
            Malformed::Ipv6ExtHeaders,
        ),
        // UDP with 4 bytes of header: total length 24.
        (set(&v4[..38], 17, 24), Malformed::UdpTruncated),
        (set(&udp6()[..58], 19, 4), Malformed::UdpTruncated),
    ];
    for (f, want) in &cases {
        assert_eq!(bad(f), Some(*want), "{want}");
        // The key is the same partial key as before.
        assert_eq!(
            extract_checked(f, PortId(1), None).0,
            FlowKey::extract(f, PortId(1), None)
        );
    }
    // TCP: cut short, data offset < 5, data offset beyond the segment.
    let t = tcp_frame(false, &[], 0, tcp::flags::SYN);
    let mut cut = t[..14 + 20 + 12].to_vec();
    Ipv4Packet::new_unchecked(&mut cut[14..34]).set_total_len(32);
    assert_eq!(bad(&cut), Some(Malformed::TcpTruncated));
    let mut doff = t.clone();
    doff[14 + 20 + 12] = 0x40;
    assert_eq!(bad(&doff), Some(Malformed::TcpTruncated));
    doff[14 + 20 + 12] = 0xf0;
    assert_eq!(bad(&doff), Some(Malformed::TcpTruncated));
    let t6 = tcp_frame(true, &[], 0, tcp::flags::SYN);
    let mut cut6 = t6[..14 + 40 + 10].to_vec();
    cut6[18..20].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(bad(&cut6), Some(Malformed::TcpTruncated));
    // Every name is distinct and every reason was exercised.
    let names: std::collections::HashSet<_> = Malformed::ALL.iter().map(|m| m.name()).collect();
    assert_eq!(names.len(), Malformed::ALL.len());
    for m in Malformed::ALL {
        assert_eq!(Malformed::ALL[m.index()], m);
        let seen = cases.iter().any(|(_, w)| *w == m) || m == Malformed::TcpTruncated;
        assert!(seen, "{m} has a case");
    }
}

#[test]
fn later_fragments_carry_no_l4_header_to_judge() {
    // A later fragment with 4 bytes of payload: not a truncated UDP header.
    let mut f = udp4();
    f.truncate(38);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
    ip.set_total_len(24);
    ip.set_frag(false, false, 1480);
    assert_eq!(bad(&f), None);
    // The first fragment of the same: judged.
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..34]);
    ip.set_frag(false, true, 0);
    assert_eq!(bad(&f), Some(Malformed::UdpTruncated));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let k = FlowKey::extract(&b, PortId(1), None);
        prop_assert_eq!(k.pad, [0; 6]);
        if let Ok(Some(d)) = decapsulate(&b, IANA_PORT) {
            let _ = FlowKey::extract(d.inner(&b), PortId(1), Some(&d.into()));
        }
    }

    #[test]
    fn random_ip_payloads_never_panic(
        etype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100), Just(0x88a8)],
        body in proptest::collection::vec(any::<u8>(), 0..120),
        ver in any::<bool>(),
    ) {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&etype.to_be_bytes());
        f.extend_from_slice(&body);
        if let Some(b) = f.get_mut(14) {
            // Make a plausible version nibble likely.
            let v = match (etype, ver) { (0x0800, true) => 0x45, (0x86dd, true) => 0x60, _ => *b };
            *b = v;
        }
        let (k, off) = extract_with_offsets(&f, PortId(1), None);
        if let Some(l4) = off.l4 { prop_assert!(l4 <= f.len()); }
        if let Some(l3) = off.l3 { prop_assert!(l3 <= f.len()); }
        let _ = k.flow_hash();
        let _ = decapsulate(&f, IANA_PORT);
    }
}
