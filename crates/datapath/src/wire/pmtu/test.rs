//! Tests of the too-big answers: ICMP fragmentation needed and ICMPv6 packet too big
//! (fields, quote limits, tags, minimum MTUs), the packets that get no reply, the choice
//! between reply, fragment and drop, and IPv4 fragmentation (reassembly, tags, options,
//! refusals); properties: no panic on any input, fragments always reassemble.

use super::*;
use crate::wire::VlanTag;
use crate::wire::checksum;
use crate::wire::testutil::*;
use proptest::prelude::*;

const QINQ: [(u16, u16); 2] = [(0x88a8, 0xa064), (0x8100, 0x00c8)];

fn v4(len: usize, df: bool) -> Vec<u8> {
    ipv4_frame(&[], ipv4_repr(len, df), &pattern(len))
}

fn v6(len: usize) -> Vec<u8> {
    ipv6_frame(&[], ipv6_repr(len), &pattern(len))
}

fn reply(frame: &[u8], mtu: u32) -> Vec<u8> {
    let mut out = vec![0u8; 2048];
    let n = too_big_reply(frame, mtu, &mut out);
    out.truncate(n);
    out
}

/// Checks the reply's Ethernet header against the original's; returns the L3 offset.
fn check_l2(orig: &[u8], r: &[u8]) -> usize {
    let (o, a) = (L2Info::parse(orig).unwrap(), L2Info::parse(r).unwrap());
    assert_eq!((a.src_addr, a.dst_addr), (o.dst_addr, o.src_addr));
    assert_eq!(
        (a.n_tags, a.tags, a.ethertype),
        (o.n_tags, o.tags, o.ethertype)
    );
    assert_eq!(a.l3_offset, o.l3_offset);
    a.l3_offset
}

/// Verifies every field of an ICMPv4 reply to `orig`; returns the quoted bytes.
fn check_v4_reply(orig: &[u8], r: &[u8], mtu: u16) -> Vec<u8> {
    let l3 = check_l2(orig, r);
    let o = Ipv4Packet::new_checked(&orig[l3..]).unwrap();
    let p = Ipv4Packet::new_checked(&r[l3..]).unwrap();
    assert_eq!(usize::from(p.total_len()), r.len() - l3, "no padding after");
    assert!(usize::from(p.total_len()) <= IPV4_MAX_ERROR_LEN);
    assert!(p.verify_checksum());
    assert_eq!(
        checksum::checksum(p.header()),
        0,
        "header checksum by the helper"
    );
    let ip = Ipv4Repr::parse(&p).unwrap();
    assert_eq!(ip.src_addr, o.dst_addr());
    assert_eq!(ip.dst_addr, o.src_addr());
    assert_eq!(
        (ip.protocol, ip.ttl, ip.tos, ip.ident),
        (1, REPLY_TTL, 0, 0)
    );
    assert!(ip.dont_frag && !ip.more_frags && ip.frag_offset == 0);
    assert_eq!(p.header_len(), 20);
    let m = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(m.verify_checksum_v4());
    assert_eq!(checksum::checksum(p.payload()), 0);
    let icmp = IcmpRepr::parse_v4(&m).unwrap();
    assert_eq!((icmp.msg_type, icmp.code), (3, 4));
    assert_eq!(
        icmp.rest_of_header,
        u32::from(mtu),
        "unused 16 bits, then MTU"
    );
    let quoted = m.payload().to_vec();
    let total = usize::from(o.total_len());
    let original = &o.into_inner()[..total];
    assert_eq!(quoted.len(), original.len().min(576 - 28));
    assert_eq!(&quoted[..], &original[..quoted.len()]);
    quoted
}

fn check_v6_reply(orig: &[u8], r: &[u8], mtu: u32) -> Vec<u8> {
    let l3 = check_l2(orig, r);
    let o = Ipv6Packet::new_checked(&orig[l3..]).unwrap();
    let p = Ipv6Packet::new_checked(&r[l3..]).unwrap();
    assert_eq!(40 + usize::from(p.payload_len()), r.len() - l3);
    assert!(r.len() - l3 <= IPV6_MAX_ERROR_LEN);
    let ip = Ipv6Repr::parse(&p).unwrap();
    assert_eq!(ip.src_addr, o.dst_addr());
    assert_eq!(ip.dst_addr, o.src_addr());
    assert_eq!((ip.next_header, ip.hop_limit), (58, REPLY_TTL));
    assert_eq!((ip.traffic_class, ip.flow_label), (0, 0));
    let m = IcmpPacket::new_checked(p.payload()).unwrap();
    assert!(m.verify_checksum_v6(&ip.src_addr, &ip.dst_addr));
    let (s, d) = (ip.src_addr.into(), ip.dst_addr.into());
    assert_eq!(checksum::upper_layer(&s, &d, 58, p.payload()), 0);
    let icmp = IcmpRepr::parse_v6(&m, &ip.src_addr, &ip.dst_addr).unwrap();
    assert_eq!((icmp.msg_type, icmp.code, icmp.rest_of_header), (2, 0, mtu));
    let quoted = m.payload().to_vec();
    let total = 40 + usize::from(o.payload_len());
    let original = &o.into_inner()[..total];
    assert_eq!(quoted.len(), original.len().min(1280 - 48));
    assert_eq!(&quoted[..], &original[..quoted.len()]);
    quoted
}

#[test]
fn reply_v4_fields_and_quote_limit() {
    let f = v4(1480, true);
    let r = reply(&f, 1450);
    assert_eq!(r.len(), 14 + 576);
    assert_eq!(check_v4_reply(&f, &r, 1450).len(), 548);
    // Exact bytes of the head: a reference for the field layout.
    assert_eq!(&r[..14], &hex("e411 1111 1110 828a 29ad 4eef 0800")[..]);
    assert_eq!(&r[14..22], &hex("4500 0240 0000 4000")[..]);
    assert_eq!(&r[22..24], &[64, 1]);
    assert_eq!(&r[26..34], &hex("0a00 0002 0a00 0001")[..]);
    assert_eq!(&r[34..36], &[3, 4]);
    assert_eq!(&r[38..42], &hex("0000 05aa")[..]);
    // A 16-bit field: larger MTUs are reported as 65535.
    let r = reply(&f, 70_000);
    check_v4_reply(&f, &r, 0xffff);
}

#[test]
fn reply_v4_quotes_a_short_packet_whole_without_padding() {
    let mut f = v4(60, true);
    let r = reply(&f, 68);
    assert_eq!(r.len(), 14 + 28 + 80);
    check_v4_reply(&f, &r, 68);
    f.extend_from_slice(&[0xee; 10]); // Ethernet padding
    assert_eq!(reply(&f, 68), r);
}

#[test]
fn reply_v6_fields_and_quote_limit() {
    let f = v6(1460);
    let r = reply(&f, 1400);
    assert_eq!(r.len(), 14 + 1280);
    assert_eq!(check_v6_reply(&f, &r, 1400).len(), 1232);
    assert_eq!(&r[12..14], &[0x86, 0xdd]);
    assert_eq!(&r[14..22], &hex("6000 0000 04d8 3a40")[..]);
    assert_eq!(&r[54..56], &[2, 0]);
    assert_eq!(&r[58..62], &hex("0000 0578")[..]);
    // IPv6 reports the full 32 bits.
    let r = reply(&f, 70_000);
    check_v6_reply(&f, &r, 70_000);
    let short = v6(100);
    let r = reply(&short, 1280);
    assert_eq!(r.len(), 14 + 48 + 140);
    check_v6_reply(&short, &r, 1280);
}

#[test]
fn reply_keeps_tags_in_order() {
    let f = ipv4_frame(&QINQ, ipv4_repr(1400, true), &pattern(1400));
    let r = reply(&f, 1300);
    assert_eq!(r.len(), 22 + 576);
    assert_eq!(&r[12..22], &f[12..22]);
    assert_eq!(VlanTag::new_checked(&r[14..]).unwrap().vid(), 100);
    check_v4_reply(&f, &r, 1300);

    let f = ipv6_frame(&[(0x8100, 0x2005)], ipv6_repr(1400), &pattern(1400));
    let r = reply(&f, 1300);
    assert_eq!(r.len(), 18 + 1280);
    assert_eq!(&r[12..18], &f[12..18]);
    check_v6_reply(&f, &r, 1300);
}

#[test]
fn reply_mtu_minimums() {
    let f = v4(1000, true);
    assert!(reply(&f, 67).is_empty());
    check_v4_reply(&f, &reply(&f, 68), 68);
    let f = v6(1400);
    assert!(reply(&f, 1279).is_empty());
    assert!(reply(&f, 0).is_empty());
    check_v6_reply(&f, &reply(&f, 1280), 1280);
}

#[test]
fn reply_needs_room() {
    for f in [v4(1000, true), v6(1400)] {
        let need = reply(&f, 1280).len();
        for n in 0..need {
            let mut out = vec![0u8; n];
            assert_eq!(too_big_reply(&f, 1280, &mut out), 0, "out {n}");
        }
        let mut out = vec![0u8; need];
        assert_eq!(too_big_reply(&f, 1280, &mut out), need);
    }
}

#[test]
fn no_reply_to_non_ip_or_truncated() {
    let arp = hex(VXLAN_V4_ARP);
    assert!(reply(&arp[INNER_V4..], 1400).is_empty());
    let three_tags = ipv4_frame(
        &[(0x8100, 1), (0x8100, 2), (0x8100, 3)],
        ipv4_repr(100, true),
        &pattern(100),
    );
    assert!(reply(&three_tags, 1400).is_empty());
    for f in [
        v4(200, true),
        v6(200),
        ipv4_frame(&QINQ, ipv4_repr(200, true), &pattern(200)),
    ] {
        for n in 0..f.len() {
            assert!(reply(&f[..n], 1400).is_empty(), "len {n}");
        }
    }
}

#[test]
fn no_reply_to_malformed_ip() {
    let f = v4(200, true);
    let mut bad = f.clone();
    bad[22] = 63; // TTL changed: the header checksum fails
    assert!(reply(&bad, 1400).is_empty());
    let mut bad = f.clone();
    bad[14] = 0x55; // version 5, checksum refreshed
    Ipv4Packet::new_unchecked(&mut bad[14..]).fill_checksum();
    assert!(reply(&bad, 1400).is_empty());
    let mut bad = f.clone();
    bad[14] = 0x44; // IHL 4
    assert!(reply(&bad, 1400).is_empty());
    let mut bad = v6(200);
    bad[14] = 0x40;
    assert!(reply(&bad, 1400).is_empty());
    // IPv6 extension header chain running off the end.
    let mut bad = v6(200);
    bad[20] = ip_proto::HOPOPTS;
    bad[55] = 200;
    assert!(reply(&bad, 1400).is_empty());
}

#[test]
fn no_reply_to_later_fragments() {
    let first = Ipv4Repr {
        more_frags: true,
        ..ipv4_repr(0, true)
    };
    let f = ipv4_frame(&[], first, &pattern(200));
    check_v4_reply(&f, &reply(&f, 100), 100);
    let later = Ipv4Repr {
        frag_offset: 1480,
        ..first
    };
    assert!(reply(&ipv4_frame(&[], later, &pattern(200)), 100).is_empty());
    let last = Ipv4Repr {
        more_frags: false,
        ..later
    };
    assert!(reply(&ipv4_frame(&[], last, &pattern(200)), 100).is_empty());

    // IPv6: fragment header, first (offset 0, M) then later (offset 1448).
    let v6frag = |off_flags: u16| {
        let mut pl = vec![ip_proto::UDP, 0];
        pl.extend_from_slice(&off_flags.to_be_bytes());
        pl.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        pl.extend_from_slice(&pattern(1300));
        let ip = Ipv6Repr {
            next_header: ip_proto::FRAGMENT,
            ..ipv6_repr(0)
        };
        ipv6_frame(&[], ip, &pl)
    };
    let f = v6frag(1);
    check_v6_reply(&f, &reply(&f, 1280), 1280);
    assert!(reply(&v6frag(1448 | 1), 1280).is_empty());
    assert!(reply(&v6frag(1448), 1280).is_empty());
}

#[test]
fn no_reply_to_icmp_errors() {
    let icmp = |t: u8| {
        let mut m = vec![t, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&pattern(600));
        IcmpPacket::new_unchecked(&mut m[..]).fill_checksum_v4();
        let ip = Ipv4Repr {
            protocol: ip_proto::ICMP,
            ..ipv4_repr(0, true)
        };
        ipv4_frame(&[], ip, &m)
    };
    for t in [3, 4, 5, 11, 12] {
        assert!(reply(&icmp(t), 576).is_empty(), "type {t}");
    }
    for t in [0, 8, 13, 14, 255] {
        let f = icmp(t);
        check_v4_reply(&f, &reply(&f, 576), 576);
    }
    // An ICMP packet with no ICMP byte at all is malformed.
    let ip = Ipv4Repr {
        protocol: ip_proto::ICMP,
        ..ipv4_repr(0, true)
    };
    assert!(reply(&ipv4_frame(&[], ip, &[]), 576).is_empty());

    let icmp6 = |t: u8, behind_dstopts: bool| {
        let mut pl = Vec::new();
        if behind_dstopts {
            pl.extend_from_slice(&[ip_proto::ICMPV6, 0, 1, 4, 0, 0, 0, 0]);
        }
        pl.extend_from_slice(&[t, 0, 0, 0, 0, 0, 0, 0]);
        pl.extend_from_slice(&pattern(1400));
        let next_header = if behind_dstopts {
            ip_proto::DSTOPTS
        } else {
            ip_proto::ICMPV6
        };
        let ip = Ipv6Repr {
            next_header,
            ..ipv6_repr(0)
        };
        ipv6_frame(&[], ip, &pl)
    };
    for ext in [false, true] {
        for t in [1, 2, 3, 4, 100, 127, 137] {
            assert!(reply(&icmp6(t, ext), 1280).is_empty(), "type {t}");
        }
        for t in [128, 129, 135, 136, 200] {
            let f = icmp6(t, ext);
            check_v6_reply(&f, &reply(&f, 1280), 1280);
        }
    }
}

#[test]
fn no_reply_to_bad_addresses() {
    let with = |src: [u8; 4], dst: [u8; 4]| {
        let ip = Ipv4Repr {
            src_addr: src.into(),
            dst_addr: dst.into(),
            ..ipv4_repr(0, true)
        };
        ipv4_frame(&[], ip, &pattern(600))
    };
    let ok = [192, 0, 2, 1];
    for bad in [
        [0, 0, 0, 0],
        [0, 1, 2, 3],
        [127, 0, 0, 1],
        [224, 0, 0, 1],
        [239, 1, 1, 1],
        [255, 255, 255, 255],
    ] {
        assert!(reply(&with(bad, ok), 576).is_empty(), "src {bad:?}");
    }
    for bad in [[0, 0, 0, 0], [224, 0, 0, 5], [255, 255, 255, 255]] {
        assert!(reply(&with(ok, bad), 576).is_empty(), "dst {bad:?}");
    }
    let f = with([169, 254, 1, 1], [10, 9, 8, 7]);
    check_v4_reply(&f, &reply(&f, 576), 576);

    let with6 = |src: &str, dst: &str| {
        let ip = Ipv6Repr {
            src_addr: src.parse().unwrap(),
            dst_addr: dst.parse().unwrap(),
            ..ipv6_repr(0)
        };
        ipv6_frame(&[], ip, &pattern(1400))
    };
    for bad in ["::", "::1", "ff02::1", "ff0e::1:2"] {
        assert!(reply(&with6(bad, "fd00::2"), 1280).is_empty(), "{bad}");
        assert!(reply(&with6("fd00::1", bad), 1280).is_empty(), "{bad}");
    }
    let f = with6("fe80::1", "2001:db8::2");
    check_v6_reply(&f, &reply(&f, 1280), 1280);
}

#[test]
fn no_reply_to_multicast_ethernet() {
    let f = v4(600, true);
    let mut bad = f.clone();
    bad[6] |= 1; // multicast source
    assert!(reply(&bad, 576).is_empty());
    let mut bad = f.clone();
    bad[..6].copy_from_slice(&[0xff; 6]); // broadcast destination
    assert!(reply(&bad, 576).is_empty());
    let mut bad = v6(1400);
    bad[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    assert!(reply(&bad, 1280).is_empty());
}

#[test]
fn action_by_kind() {
    assert_eq!(too_big_action(&v4(100, true)), TooBig::Reply);
    assert_eq!(too_big_action(&v4(100, false)), TooBig::Fragment);
    assert_eq!(too_big_action(&v6(100)), TooBig::Reply);
    let tagged = ipv4_frame(&QINQ, ipv4_repr(100, false), &pattern(100));
    assert_eq!(too_big_action(&tagged), TooBig::Fragment);
    let arp = hex(VXLAN_V4_ARP);
    assert_eq!(too_big_action(&arp[INNER_V4..]), TooBig::Drop);
    let f = v4(100, true);
    assert_eq!(too_big_action(&f[..30]), TooBig::Drop);
    let mut bad = v6(100);
    bad[14] = 0x40;
    assert_eq!(too_big_action(&bad), TooBig::Drop);
    assert_eq!(too_big_action(&[]), TooBig::Drop);
}

/// Collects the fragments of `frame`.
fn fragments(frame: &[u8], mtu: u32) -> Vec<Vec<u8>> {
    let mut scratch = vec![0u8; 65_600];
    let mut out = Vec::new();
    let n = fragment_ipv4(frame, mtu, &mut scratch, &mut |f| {
        out.push(f.to_vec());
        true
    });
    assert_eq!(n, out.len());
    out
}

/// Checks every fragment against the original and returns the reassembled data.
fn reassemble(orig: &[u8], frags: &[Vec<u8>], mtu: usize) -> Vec<u8> {
    let l3 = L2Info::parse(orig).unwrap().l3_offset;
    let o = Ipv4Packet::new_checked(&orig[l3..]).unwrap();
    let base = usize::from(o.frag_offset());
    let mut data = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        assert_eq!(&f[..l3], &orig[..l3], "Ethernet header and tags kept");
        let p = Ipv4Packet::new_checked(&f[l3..]).unwrap();
        assert_eq!(f.len(), l3 + usize::from(p.total_len()));
        assert!(usize::from(p.total_len()) <= mtu);
        assert!(p.verify_checksum());
        let r = Ipv4Repr::parse(&p).unwrap();
        let last = i + 1 == frags.len();
        assert_eq!(r.more_frags, !last || o.more_frags(), "fragment {i}");
        assert!(!r.dont_frag);
        assert_eq!(usize::from(r.frag_offset), base + data.len());
        if !last {
            assert_eq!(p.payload().len() % 8, 0);
        }
        assert_eq!((r.ident, r.ttl, r.tos), (o.ident(), o.ttl(), o.tos()));
        assert_eq!((r.src_addr, r.dst_addr), (o.src_addr(), o.dst_addr()));
        assert_eq!(r.protocol, o.protocol());
        assert_eq!(p.header_len(), o.header_len());
        data.extend_from_slice(p.payload());
    }
    assert_eq!(data, o.payload());
    data
}

#[test]
fn fragments_reassemble() {
    let f = v4(1480, false);
    let frags = fragments(&f, 576);
    assert_eq!(frags.len(), 3);
    let lens: Vec<_> = frags.iter().map(|f| f.len() - 14).collect();
    assert_eq!(lens, [572, 572, 396]); // 552 + 552 + 376 bytes of data
    reassemble(&f, &frags, 576);
    // An MTU that is not 20 + a multiple of 8 rounds the data down.
    let frags = fragments(&f, 1000);
    assert_eq!(frags.len(), 2);
    assert_eq!(frags[0].len() - 14, 20 + 976);
    reassemble(&f, &frags, 1000);
    // Smallest: 8 bytes per fragment.
    let small = v4(100, false);
    let frags = fragments(&small, 28);
    assert_eq!(frags.len(), 13);
    reassemble(&small, &frags, 28);
    assert!(fragments(&small, 27).is_empty());
    // Already fits: one fragment, identical.
    assert_eq!(fragments(&small, 120), vec![small.clone()]);
}

#[test]
fn fragments_keep_tags_and_padding_is_dropped() {
    let mut f = ipv4_frame(&QINQ, ipv4_repr(3000, false), &pattern(3000));
    let frags = fragments(&f, 1400);
    assert_eq!(frags.len(), 3);
    reassemble(&f, &frags, 1400);
    f.extend_from_slice(&[0xee; 7]);
    assert_eq!(fragments(&f, 1400), frags);
}

#[test]
fn fragmenting_a_fragment() {
    let ip = Ipv4Repr {
        more_frags: true,
        frag_offset: 1480,
        ..ipv4_repr(0, false)
    };
    let f = ipv4_frame(&[], ip, &pattern(1480));
    let frags = fragments(&f, 600);
    assert_eq!(frags.len(), 3);
    reassemble(&f, &frags, 600);
    let last = Ipv4Packet::new_checked(&frags[2][14..]).unwrap();
    assert!(last.more_frags());
    assert_eq!(last.frag_offset(), 1480 + 2 * 576);
    // The last fragment of a datagram stays the last.
    let ip = Ipv4Repr {
        more_frags: false,
        ..ip
    };
    let f = ipv4_frame(&[], ip, &pattern(1480));
    reassemble(&f, &fragments(&f, 600), 600);
    // Offsets that would leave the 13-bit field are refused.
    let ip = Ipv4Repr {
        frag_offset: 65528,
        ..ip
    };
    let f = ipv4_frame(&[], ip, &pattern(100));
    assert!(fragments(&f, 60).is_empty());
}

#[test]
fn options_only_copied_ones_after_the_first() {
    // IHL 8: record route (7, not copied, 7 bytes), NOP, then a 4-byte option with
    // the copied flag (0x82).
    let opts = [7, 7, 4, 0, 0, 0, 0, 1, 0x82, 4, 0xab, 0xcd];
    let mut f = l2_header(&[], ethertype::IPV4);
    let mut hdr = hex("4800 0000 4242 0000 4011 0000 0a00 0001 0a00 0002");
    hdr.extend_from_slice(&opts);
    let total = (hdr.len() + 1000) as u16;
    hdr[2..4].copy_from_slice(&total.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut hdr[..]).fill_checksum();
    f.extend_from_slice(&hdr);
    f.extend_from_slice(&pattern(1000));
    let frags = fragments(&f, 500);
    assert_eq!(frags.len(), 3);
    reassemble(&f, &frags, 500);
    let opts_of = |i: usize| {
        Ipv4Packet::new_checked(&frags[i][14..])
            .unwrap()
            .options()
            .to_vec()
    };
    assert_eq!(opts_of(0), opts);
    let later = [1, 1, 1, 1, 1, 1, 1, 1, 0x82, 4, 0xab, 0xcd];
    assert_eq!(opts_of(1), later);
    assert_eq!(opts_of(2), later);

    // Malformed options: length 1, then length past the end.
    for bad in [[7, 1, 0, 0], [0x82, 9, 0, 0]] {
        let mut h = hex("4600 0000 4242 0000 4011 0000 0a00 0001 0a00 0002");
        h.extend_from_slice(&bad);
        h[2..4].copy_from_slice(&(24u16 + 1000).to_be_bytes());
        Ipv4Packet::new_unchecked(&mut h[..]).fill_checksum();
        let mut f = l2_header(&[], ethertype::IPV4);
        f.extend_from_slice(&h);
        f.extend_from_slice(&pattern(1000));
        assert!(fragments(&f, 500).is_empty(), "{bad:?}");
    }
}

#[test]
fn fragment_refusals() {
    assert!(fragments(&v4(1480, true), 576).is_empty(), "DF");
    assert!(fragments(&v6(1480), 576).is_empty());
    let arp = hex(VXLAN_V4_ARP);
    assert!(fragments(&arp[INNER_V4..], 576).is_empty());
    let f = v4(1480, false);
    let mut bad = f.clone();
    bad[22] = 1; // stale header checksum
    assert!(fragments(&bad, 576).is_empty());
    for n in 0..f.len() {
        assert!(fragments(&f[..n], 576).is_empty(), "len {n}");
    }
    assert!(fragments(&f, 27).is_empty());
    assert!(fragments(&f, 0).is_empty());
}

#[test]
fn emit_failure_stops() {
    let f = v4(1480, false);
    let mut scratch = vec![0u8; 2048];
    let mut calls = 0;
    let n = fragment_ipv4(&f, 576, &mut scratch, &mut |_| {
        calls += 1;
        calls < 2
    });
    assert_eq!((n, calls), (1, 2));
}

#[test]
fn small_scratch_makes_small_fragments() {
    let f = v4(1480, false);
    let mut scratch = vec![0u8; 14 + 20 + 400];
    let mut out = Vec::new();
    let n = fragment_ipv4(&f, 1500, &mut scratch, &mut |f| {
        out.push(f.to_vec());
        true
    });
    assert_eq!(n, 4); // 400 * 3 + 280
    reassemble(&f, &out, 420);
    let mut tiny = vec![0u8; 14 + 20 + 7];
    assert_eq!(fragment_ipv4(&f, 1500, &mut tiny, &mut |_| true), 0);
}

#[test]
fn option_walk() {
    let mut o = [1, 1, 0, 7, 1];
    assert!(strip_uncopied_options(&mut o));
    assert_eq!(o, [1, 1, 0, 7, 1], "nothing after the end of list");
    let mut o = [0x44, 2];
    assert!(strip_uncopied_options(&mut o));
    assert_eq!(o, [1, 1]);
    assert!(!strip_uncopied_options(&mut [0x44]));
    assert!(strip_uncopied_options(&mut []));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(
        b in proptest::collection::vec(any::<u8>(), 0..1600),
        mtu in any::<u32>(),
        out_len in 0usize..1600,
        scratch_len in 0usize..1600,
    ) {
        let _ = too_big_action(&b);
        let mut out = vec![0u8; out_len];
        let n = too_big_reply(&b, mtu, &mut out);
        prop_assert!(n <= out_len);
        let mut scratch = vec![0u8; scratch_len];
        let l3 = L2Info::parse(&b).map(|l| l.l3_offset).unwrap_or(0);
        let mut max = 0;
        fragment_ipv4(&b, mtu, &mut scratch, &mut |f| {
            max = max.max(f.len());
            true
        });
        prop_assert!(max <= l3 + mtu.min(65535) as usize);
    }

    #[test]
    fn mutated_frames_never_panic(
        df in any::<bool>(),
        six in any::<bool>(),
        len in 0usize..1500,
        edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        mtu in 0u32..2000,
    ) {
        let mut f = if six { v6(len) } else { v4(len, df) };
        for (i, v) in edits {
            if let Some(b) = f.get_mut(i) {
                *b = v;
            }
        }
        let _ = too_big_action(&f);
        let mut out = vec![0u8; 1600];
        let _ = too_big_reply(&f, mtu, &mut out);
        let mut scratch = vec![0u8; 1600];
        let l3 = L2Info::parse(&f).map(|l| l.l3_offset).unwrap_or(0);
        fragment_ipv4(&f, mtu, &mut scratch, &mut |frag| {
            assert!(frag.len() <= l3 + mtu as usize);
            true
        });
    }

    #[test]
    fn fragments_always_reassemble(
        len in 0usize..4000,
        mtu in 28u32..3000,
        tags in 0usize..=2,
        offset in 0u16..100,
        mf in any::<bool>(),
    ) {
        let ip = Ipv4Repr {
            more_frags: mf,
            frag_offset: offset * 8,
            ..ipv4_repr(0, false)
        };
        let f = ipv4_frame(&QINQ[..tags], ip, &pattern(len));
        let frags = fragments(&f, mtu);
        prop_assert!(!frags.is_empty());
        // Full steps until the rest fits in one datagram, then the rest.
        let (room, step) = (mtu as usize - 20, (mtu as usize - 20) & !7);
        prop_assert_eq!(frags.len(), 1 + len.saturating_sub(room).div_ceil(step));
        reassemble(&f, &frags, mtu as usize);
    }
}
