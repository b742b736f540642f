//! Tests of software execution: VLAN push/pop, super-frames and partial checksums handed
//! over or finished in software, VXLAN output (segmented, as UDP super-frames), and
//! frames too big for the tunnel's path (ICMP replies, fragmentation, drops).

use super::*;
use crate::actions::Actions;
use crate::tunnel::{StaticResolver, TunnelRoute};
use crate::wire::gso::{Layout, Segmenter};
use crate::wire::icmp::{IcmpPacket, IcmpRepr};
use crate::wire::testutil::{
    ipv4_frame, ipv4_repr, ipv6_frame, ipv6_repr, l2_header, pattern, tcp_frame,
};
use crate::wire::vxlan;
use crate::wire::{Gso, GsoKind, Ipv4Packet, Ipv4Repr, Ipv6Packet, TcpPacket, ip_proto};
use std::net::IpAddr;

/// What the executor sent: frames by port, their metadata, and whether the ports
/// take metadata.
#[derive(Default)]
struct Collect(Vec<(PortId, Vec<u8>)>, Vec<Offload>, bool);

impl PacketSink for Collect {
    fn send(&mut self, port: PortId, frame: &[u8], offload: Offload) -> bool {
        assert!(
            self.2 || offload.is_complete(),
            "metadata to a port without"
        );
        self.0.push((port, frame.to_vec()));
        self.1.push(offload);
        true
    }
    fn send_with(
        &mut self,
        port: PortId,
        len: usize,
        offload: Offload,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> bool {
        assert!(
            self.2 || offload.is_complete(),
            "metadata to a port without"
        );
        let mut buf = vec![0u8; len.max(2048)];
        let n = fill(&mut buf);
        if n == 0 {
            return false;
        }
        assert!(n <= len, "{n} bytes written for a {len}-byte request");
        buf.truncate(n);
        self.0.push((port, buf));
        self.1.push(offload);
        true
    }
    fn offloads(&self, _: PortId) -> bool {
        self.2
    }
}

fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
    f[6..12].copy_from_slice(&[0xe4, 0x11, 0x11, 0x11, 0x11, 0x10]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

fn run(actions: &str, resolver: &StaticResolver) -> (Collect, ExecStats) {
    run_frame(actions, resolver, &frame(), Some(PortId(1)))
}

fn run_frame(
    actions: &str,
    resolver: &StaticResolver,
    frame: &[u8],
    in_port: Option<PortId>,
) -> (Collect, ExecStats) {
    let a: Actions = actions.parse().unwrap();
    let mut ex = Executor::new();
    let mut sink = Collect::default();
    let env = ExecEnv {
        resolver,
        tunnel_port: Some(PortId(9)),
        in_port,
    };
    ex.execute(Packet::new(frame, 42), a.as_slice(), &env, &mut sink);
    (sink, ex.stats)
}

/// Runs `actions` on `frame` with `offload` from port 1 (flow hash 42) into `sink`;
/// the executor after.
fn run_into(
    actions: &str,
    resolver: &StaticResolver,
    frame: &[u8],
    offload: Offload,
    sink: &mut dyn PacketSink,
) -> Executor {
    let a: Actions = actions.parse().unwrap();
    let mut ex = Executor::new();
    let env = ExecEnv {
        resolver,
        tunnel_port: Some(PortId(9)),
        in_port: Some(PortId(1)),
    };
    let pkt = Packet {
        frame,
        offload,
        flow_hash: 42,
    };
    ex.execute(pkt, a.as_slice(), &env, sink);
    ex
}

/// Runs `actions` on `frame` with `offload` from port 1, into ports that take
/// offload metadata if `offloads`.
fn run_offload(
    actions: &str,
    resolver: &StaticResolver,
    frame: &[u8],
    offload: Offload,
    offloads: bool,
) -> (Collect, ExecStats) {
    let mut sink = Collect(Vec::new(), Vec::new(), offloads);
    let ex = run_into(actions, resolver, frame, offload, &mut sink);
    (sink, ex.stats)
}

/// A TCP super-frame as a VM's TSO hands it over: `payload` bytes, segments of
/// `size`, its checksum partial.
fn tso_frame(v6: bool, tags: &[(u16, u16)], payload: usize, size: u16) -> (Vec<u8>, Offload) {
    use crate::wire::tcp::flags::{ACK, PSH};
    let mut f = tcp_frame(v6, tags, payload, ACK | PSH);
    let lay = Layout::parse(&f).unwrap();
    let c = gso::prepare_partial(&mut f, &lay).unwrap();
    let kind = if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
    let o = Offload {
        csum: Some(c),
        gso: Some(Gso {
            kind,
            size,
            ecn: false,
            tunnel: None,
        }),
        hdr_len: lay.header_len() as u16,
        ..Offload::NONE
    };
    (f, o)
}

/// Checks that `segs` (inner frames) are a correct segmentation of `orig`'s payload
/// with `size` bytes each: checksums, and the payload in order.
fn check_segments(orig: &[u8], segs: &[Vec<u8>], size: usize) {
    let lay = Layout::parse(orig).unwrap();
    let mut data = Vec::new();
    for s in segs {
        let l = Layout::parse(s).unwrap();
        let (src, dst) = if l.v6 {
            let ip = Ipv6Packet::new_checked(&s[l.l3..]).unwrap();
            (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()))
        } else {
            let ip = Ipv4Packet::new_checked(&s[l.l3..]).unwrap();
            assert!(ip.verify_checksum());
            (IpAddr::from(ip.src_addr()), IpAddr::from(ip.dst_addr()))
        };
        let t = TcpPacket::new_checked(&s[l.l4..l.end]).unwrap();
        assert!(t.verify_checksum(&src, &dst));
        assert!(t.payload().len() <= size);
        data.extend_from_slice(t.payload());
    }
    assert_eq!(data, &orig[lay.header_len()..lay.end]);
}

#[test]
fn super_frames_go_whole_to_ports_that_take_them_and_cut_to_others() {
    let r = StaticResolver::new();
    let (f, o) = tso_frame(false, &[], 10_000, 1448);
    let (s, st) = run_offload("2", &r, &f, o, true);
    assert_eq!(s.0, vec![(PortId(2), f.clone())], "whole, untouched");
    assert_eq!(s.1, vec![o]);
    assert_eq!((st.outputs, st.gso_passed, st.gso_segmented), (1, 1, 0));

    let (s, st) = run_offload("2", &r, &f, o, false);
    assert_eq!(s.0.len(), 7);
    assert!(s.1.iter().all(Offload::is_complete));
    let segs: Vec<_> = s.0.iter().map(|(_, p)| p.clone()).collect();
    check_segments(&f, &segs, 1448);
    assert_eq!((st.outputs, st.gso_segmented, st.gso_segments), (1, 1, 7));

    // A tag pushed first: the metadata moves with the bytes.
    let (s, _) = run_offload("push_vlan(vid=10),2", &r, &f, o, true);
    assert_eq!(s.1[0].csum.unwrap().start, o.csum.unwrap().start + 4);
    assert_eq!(s.1[0].hdr_len, o.hdr_len + 4);
    let (s, _) = run_offload("push_vlan(vid=10),2", &r, &f, o, false);
    assert_eq!(s.0.len(), 7);
    assert!(s.0.iter().all(|(_, p)| p[12..14] == [0x81, 0x00]));
}

#[test]
fn a_gro_super_frame_is_handed_over_with_a_partial_checksum() {
    // GRO's: checksum whole and verified, no checksum start.
    let f = tcp_frame(true, &[(0x8100, 5)], 20_000, crate::wire::tcp::flags::ACK);
    let o = Offload {
        csum_valid: true,
        gso: Some(Gso {
            kind: GsoKind::TcpV6,
            size: 1428,
            ecn: false,
            tunnel: None,
        }),
        ..Offload::NONE
    };
    let (s, st) = run_offload("2", &StaticResolver::new(), &f, o, true);
    assert_eq!(st.gso_passed, 1);
    let sent = s.1[0];
    let c = sent.csum.expect("a partial checksum");
    assert_eq!((c.start, c.offset), (18 + 40, 16));
    assert_eq!(sent.gso, o.gso);
    let mut back = s.0[0].1.clone();
    assert_ne!(back, f);
    gso::complete_checksum(&mut back, c).unwrap();
    assert_eq!(
        back, f,
        "what the kernel will complete is the frame's checksum"
    );
}

#[test]
fn metadata_that_does_not_describe_the_frame_drops_it() {
    let (f, mut o) = tso_frame(false, &[], 5000, 1448);
    o.gso = Some(Gso {
        kind: GsoKind::TcpV6,
        size: 1448,
        ecn: false,
        tunnel: None,
    });
    for offloads in [true, false] {
        let (s, st) = run_offload("2", &StaticResolver::new(), &f, o, offloads);
        assert!(s.0.is_empty());
        assert_eq!(st.offload_invalid, 1);
    }
    let (f, mut o) = tso_frame(false, &[], 5000, 1448);
    o.csum = Some(crate::wire::PartialCsum {
        start: 14,
        offset: 16,
    });
    let (s, st) = run_offload(TUN4, &resolver(1500), &f, o, true);
    assert!(s.0.is_empty());
    assert_eq!(st.offload_invalid, 1);
}

/// Decapsulates what the executor sent to the uplink: the inner frames, checking
/// each outer frame's length, IPv4 checksum and UDP source port.
fn inner_frames(s: &Collect, mtu: usize) -> (Vec<Vec<u8>>, Vec<u16>) {
    let mut inner = Vec::new();
    let mut ids = Vec::new();
    for (port, pkt) in &s.0 {
        assert_eq!(*port, PortId(2));
        assert!(pkt.len() <= mtu + 14, "{} > {}", pkt.len(), mtu + 14);
        let d = vxlan::decapsulate(pkt, 4789).unwrap().expect("vxlan");
        assert_eq!(d.udp_src, vxlan::source_port(42), "one source port");
        if let Ok(ip) = Ipv4Packet::new_checked(&pkt[14..]) {
            assert!(ip.verify_checksum());
            ids.push(ip.ident());
        }
        let udp = crate::wire::UdpPacket::new_checked(&pkt[d.inner_offset - 16..]).unwrap();
        assert!(udp.verify_checksum(&d.src, &d.dst));
        inner.push(d.inner(pkt).to_vec());
    }
    (inner, ids)
}

#[test]
fn vxlan_output_segments_super_frames_in_software() {
    // A VF at MTU 1450 over a 1500-byte IPv4 path: segments of 1398 bytes fit.
    let (f, o) = tso_frame(false, &[], 10_000, 1398);
    let (s, st) = run_offload(TUN4, &resolver(1500), &f, o, true);
    assert_eq!(s.0.len(), 8);
    assert!(s.1.iter().all(Offload::is_complete));
    let (segs, ids) = inner_frames(&s, 1500);
    check_segments(&f, &segs, 1398);
    assert_eq!(
        (
            st.outputs,
            st.gso_segmented,
            st.gso_segments,
            st.encap_too_big
        ),
        (1, 1, 8, 0)
    );
    // One outer ID per packet, counting.
    for w in ids.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1));
    }
    // IPv6 inner over an IPv6 underlay, tagged: the outer UDP checksum covers the
    // segments' completed checksums.
    let (f, o) = tso_frame(true, &[(0x8100, 3)], 9_000, 1354);
    let (s, st) = run_offload(TUN6, &resolver(1500), &f, o, false);
    assert_eq!(st.gso_segments, 7);
    let (segs, _) = inner_frames(&s, 1500);
    check_segments(&f, &segs, 1354);
}

/// A [`Collect`] whose ports also take UDP super-frames (`.1`) or UDP-tunnel
/// super-frames (`.2`).
struct Cutting(Collect, bool, bool);

impl PacketSink for Cutting {
    fn send(&mut self, port: PortId, frame: &[u8], offload: Offload) -> bool {
        self.0.send(port, frame, offload)
    }
    fn send_with(
        &mut self,
        port: PortId,
        len: usize,
        offload: Offload,
        fill: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> bool {
        self.0.send_with(port, len, offload, fill)
    }
    fn offloads(&self, _: PortId) -> bool {
        true
    }
    fn udp_segmentation(&self, _: PortId) -> bool {
        self.1
    }
    fn tunnel_segmentation(&self, _: PortId) -> bool {
        self.2
    }
}

/// Runs `actions` on `frame` with `offload` from port 1 (flow hash 42) into ports that
/// take metadata, UDP super-frames if `udp`, UDP-tunnel super-frames if `tunnel`; what
/// they got, and the executor after.
fn run_cutting(
    actions: &str,
    frame: &[u8],
    offload: Offload,
    udp: bool,
    tunnel: bool,
) -> (Collect, Executor) {
    let mut sink = Cutting(Collect(Vec::new(), Vec::new(), true), udp, tunnel);
    let ex = run_into(actions, &resolver(1500), frame, offload, &mut sink);
    (sink.0, ex)
}

/// To an uplink that takes UDP super-frames, VXLAN output hands over the VXLAN
/// packets of a super-frame as few datagrams for the kernel to cut: cut as the
/// kernel would ([`Segmenter`] on UDP), they are the very packets written one by one
/// otherwise, but for the outer UDP checksum, which they always carry.
#[test]
fn vxlan_output_hands_segments_to_udp_segmentation_as_one_datagram() {
    for (v6, tun, payload, frames) in [
        (false, TUN4, 10_000, 1),
        (false, TUN4, 65_000, 2),
        (true, TUN6, 9_000, 1),
    ] {
        let (f, o) = tso_frame(v6, &[], payload, 1354);
        let (one_by_one, _) = run_offload(tun, &resolver(1500), &f, o, true);
        let (sink, ex) = run_cutting(tun, &f, o, true, false);
        let (sent, offloads) = (&sink.0, &sink.1);
        assert_eq!(sent.len(), frames, "payload {payload}");
        assert_eq!(ex.stats.udp_super_frames, frames as u64);
        assert_eq!(ex.stats.gso_segments, one_by_one.0.len() as u64);
        let mut cut = Vec::new();
        for ((port, frame), o) in sent.iter().zip(offloads) {
            assert_eq!(*port, PortId(2));
            let g = o.gso.expect("a UDP super-frame");
            assert_eq!(g.kind, GsoKind::Udp);
            let over = if v6 { 70 } else { 50 };
            assert_eq!(
                o.csum.map(|c| (c.start, c.offset)),
                Some((over as u16 - 16, 6))
            );
            assert_eq!(usize::from(o.hdr_len), over - 8);
            assert!(frame.len() - 14 <= 65_535 + if v6 { 40 } else { 0 });
            let mut seg = Segmenter::new(frame, GsoKind::Udp, usize::from(g.size)).unwrap();
            let mut buf = vec![0u8; 65_600];
            while let Some(n) = seg.write_next(&mut buf).unwrap() {
                cut.push(buf[..n].to_vec());
            }
        }
        assert_eq!(cut.len(), one_by_one.0.len(), "payload {payload}");
        for (i, (c, (_, w))) in cut.iter_mut().zip(&one_by_one.0).enumerate() {
            let d = vxlan::decapsulate(c, 4789).unwrap().expect("vxlan");
            let udp = crate::wire::UdpPacket::new_checked(&c[d.inner_offset - 16..]).unwrap();
            assert!(udp.checksum() != 0 && udp.verify_checksum(&d.src, &d.dst));
            let mut w = w.clone();
            if !v6 {
                // Written one by one over IPv4, the outer checksum is off by default.
                c[40..42].fill(0);
                w[40..42].fill(0);
            }
            assert_eq!(*c, w, "segment {i} of {payload}");
        }
    }
}

/// To an uplink that takes UDP-tunnel super-frames, VXLAN output hands over each TCP
/// super-frame whole behind one set of outer headers, described for the kernel's cut:
/// cut as the kernel does (the inner super-frame segmented, each segment behind the
/// outer headers), it is the very packets written one by one otherwise. A GRO
/// super-frame (checksum whole) gets its partial checksum in the copy; one whose outer
/// packet would pass 64 KiB is segmented here instead.
#[test]
fn vxlan_output_hands_tcp_super_frames_to_tunnel_segmentation_whole() {
    for (v6, tun, payload, gro) in [
        (false, TUN4, 10_000, false),
        (false, TUN4, 20_000, true),
        (true, TUN6, 9_000, false),
    ] {
        let (f, o) = tso_frame(v6, &[], payload, 1354);
        let (one_by_one, _) = run_offload(tun, &resolver(1500), &f, o, true);
        let (one_by_one, ids) = inner_frames(&one_by_one, 1500);
        let (input, o_in) = if gro {
            let whole = tcp_frame(
                v6,
                &[],
                payload,
                crate::wire::tcp::flags::ACK | crate::wire::tcp::flags::PSH,
            );
            (
                whole,
                Offload {
                    csum: None,
                    csum_valid: true,
                    ..o
                },
            )
        } else {
            (f.clone(), o)
        };
        let (sink, ex) = run_cutting(tun, &input, o_in, true, true);
        assert_eq!(ex.stats.tunnel_super_frames, 1);
        assert_eq!((ex.stats.gso_segmented, ex.stats.udp_super_frames), (0, 0));
        let ((port, frame), out) = (&sink.0[0], sink.1[0]);
        assert_eq!((*port, sink.0.len()), (PortId(2), 1));
        let over = if v6 { 70 } else { 50 };
        assert_eq!(
            &frame[over..],
            &f[..],
            "the inner super-frame, its checksum partial"
        );
        let g = out.gso.expect("a super-frame");
        let t = g.tunnel.expect("in a tunnel");
        assert_eq!((g.kind, g.size), (o.gso.unwrap().kind, 1354));
        assert_eq!(
            (t.outer_l4, t.inner_l3, t.outer_v6),
            (over as u16 - 16, over as u16 + 14, v6)
        );
        assert_eq!(t.outer_csum, v6, "IPv6 always, IPv4 as udp_csum says (off)");
        let c = out.csum.unwrap();
        assert_eq!(
            (c.start, c.offset),
            (o.csum.unwrap().start + over as u16, 16)
        );
        assert_eq!(usize::from(out.hdr_len), over + usize::from(o.hdr_len));
        // The kernel's cut, by the segmenter that matches it byte for byte.
        let mut seg = Segmenter::new(&frame[over..], g.kind, 1354).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut cut = Vec::new();
        while let Some(n) = seg.write_next(&mut buf).unwrap() {
            cut.push(buf[..n].to_vec());
        }
        assert_eq!(cut, one_by_one, "payload {payload}");
        let d = vxlan::decapsulate(frame, 4789).unwrap().expect("vxlan");
        assert_eq!(d.udp_src, vxlan::source_port(42));
        if let Some(first) = ids.first() {
            let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
            assert_eq!(ip.ident(), *first, "numbered from where segments would be");
            assert_eq!(ex.ip_id, ids.last().copied().unwrap(), "one ID per segment");
        }
        let udp = crate::wire::UdpPacket::new_checked(&frame[over - 16..]).unwrap();
        assert_eq!(udp.checksum() != 0, v6, "partial over IPv6, none over IPv4");
    }
    // Past 64 KiB with its outer headers: segmented here.
    let (f, o) = tso_frame(false, &[], 65_440, 1354);
    let (_, ex) = run_cutting(TUN4, &f, o, false, true);
    assert_eq!(
        (ex.stats.tunnel_super_frames, ex.stats.gso_segmented),
        (0, 1)
    );
}

#[test]
fn a_super_frame_whose_segments_do_not_fit_is_answered() {
    // A VF at MTU 1500 (segments of 1448) over a 1500-byte path: 1514 > 1464.
    let (f, o) = tso_frame(false, &[], 10_000, 1448);
    let (s, st) = run_offload(TUN4, &resolver(1500), &f, o, true);
    assert_eq!(s.0.len(), 1);
    assert_eq!(s.0[0].0, PortId(1), "an ICMP reply to the in-port");
    check_frag_needed(&f, &s.0[0].1, 14, 1450);
    assert_eq!(
        (st.encap_too_big, st.too_big_replies, st.outputs),
        (1, 1, 0)
    );

    // Without DF, TCP is cut to the payload that fits instead: 1464 - 66.
    let mut nodf = f.clone();
    let mut ip = Ipv4Packet::new_unchecked(&mut nodf[14..34]);
    ip.set_frag(false, false, 0);
    ip.fill_checksum();
    let (s, st) = run_offload(TUN4, &resolver(1500), &nodf, o, true);
    assert_eq!((st.encap_too_big, st.gso_segments), (1, 8));
    let (segs, _) = inner_frames(&s, 1500);
    check_segments(&nodf, &segs, 1398);
}

#[test]
fn partial_checksums_are_completed_in_the_tunnel() {
    let mut f = tcp_frame(false, &[], 1000, crate::wire::tcp::flags::ACK);
    let full = f.clone();
    let lay = Layout::parse(&f).unwrap();
    let c = gso::prepare_partial(&mut f, &lay).unwrap();
    let o = Offload {
        csum: Some(c),
        ..Offload::NONE
    };
    for tun in [TUN4, TUN6] {
        let (s, st) = run_offload(tun, &resolver(1500), &f, o, true);
        assert_eq!((st.outputs, st.csum_completed), (1, 1));
        let (inner, _) = inner_frames(&s, 1500);
        assert_eq!(inner, vec![full.clone()]);
    }
    // To a port without offloads, in place of the kernel.
    let (s, st) = run_offload("2", &resolver(1500), &f, o, false);
    assert_eq!(s.0[0].1, full);
    assert_eq!(st.csum_completed, 1);
    // Too big for the path without DF: completed, then fragmented.
    let mut big = tcp_frame(false, &[], 3000, crate::wire::tcp::flags::ACK);
    let mut ip = Ipv4Packet::new_unchecked(&mut big[14..34]);
    ip.set_frag(false, false, 0);
    ip.fill_checksum();
    let full = big.clone();
    let lay = Layout::parse(&big).unwrap();
    let c = gso::prepare_partial(&mut big, &lay).unwrap();
    let o = Offload {
        csum: Some(c),
        ..Offload::NONE
    };
    let (s, st) = run_offload(TUN4, &resolver(1500), &big, o, true);
    assert_eq!((st.fragmented, st.csum_completed), (1, 1));
    let mut data = Vec::new();
    for (_, pkt) in &s.0 {
        let d = vxlan::decapsulate(pkt, 4789).unwrap().unwrap();
        let ip = Ipv4Packet::new_checked(&d.inner(pkt)[14..]).unwrap();
        data.extend_from_slice(ip.payload());
    }
    assert_eq!(
        data,
        &full[34..],
        "the fragments carry the completed segment"
    );
}

#[test]
fn output_push_pop() {
    let r = StaticResolver::new();
    let (s, st) = run("1,push_vlan(vid=10,pcp=5),2,pop_vlan,3", &r);
    assert_eq!(st.outputs, 3);
    assert_eq!(s.0[0], (PortId(1), frame()));
    let tagged = &s.0[1].1;
    assert_eq!(tagged.len(), 64);
    assert_eq!(&tagged[12..16], &[0x81, 0x00, 0xa0, 0x0a]);
    assert_eq!(&tagged[16..18], &[0x08, 0x00]);
    assert_eq!(s.0[2], (PortId(3), frame()));
}

#[test]
fn pop_on_untagged_is_a_no_op() {
    let (s, _) = run("pop_vlan,1", &StaticResolver::new());
    assert_eq!(s.0[0].1, frame());
}

#[test]
fn encap_needs_route_and_fitting_mtu() {
    let set = "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),9";
    let (s, st) = run(set, &StaticResolver::new());
    assert!(s.0.is_empty());
    assert_eq!(st.no_route, 1);

    let mut r = StaticResolver::new();
    let route = TunnelRoute {
        egress: PortId(2),
        src_ip: "192.168.203.51".parse().unwrap(),
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        mtu: 1500,
        via: crate::tunnel::Via::Uplink,
    };
    r.insert("192.168.203.56".parse().unwrap(), route);
    let (s, st) = run(set, &r);
    assert_eq!(st.outputs, 1);
    let (port, pkt) = &s.0[0];
    assert_eq!(*port, PortId(2));
    assert_eq!(pkt.len(), 60 + 50);
    let d = vxlan::decapsulate(pkt, 4789).unwrap().expect("vxlan");
    assert_eq!(d.vni, 0x10);
    assert_eq!(
        &pkt[d.inner_offset..d.inner_offset + d.inner_len],
        &frame()[..]
    );

    r.insert(
        "192.168.203.56".parse().unwrap(),
        TunnelRoute { mtu: 90, ..route },
    );
    let (s, st) = run(set, &r);
    assert!(s.0.is_empty());
    assert_eq!(st.encap_too_big, 1);
}

const TUN4: &str = "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),9";
const TUN6: &str = "set(tunnel(tun_id=0x10,dst=fd00::56,ttl=64,tp_dst=4789)),9";

/// Routes to both remote VTEPs of TUN4 and TUN6 over uplink 2 with path MTU `mtu`.
fn resolver(mtu: u16) -> StaticResolver {
    let mut r = StaticResolver::new();
    let route = TunnelRoute {
        egress: PortId(2),
        src_ip: "192.168.203.51".parse().unwrap(),
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        mtu,
        via: crate::tunnel::Via::Uplink,
    };
    r.insert("192.168.203.56".parse().unwrap(), route);
    let v6 = TunnelRoute {
        src_ip: "fd00::51".parse().unwrap(),
        ..route
    };
    r.insert("fd00::56".parse().unwrap(), v6);
    r
}

/// Checks that `reply` is an ICMPv4 "fragmentation needed" answering `orig` with
/// `mtu`, at L3 offset `l3`.
fn check_frag_needed(orig: &[u8], reply: &[u8], l3: usize, mtu: u32) {
    let o = Ipv4Packet::new_checked(&orig[l3..]).unwrap();
    assert_eq!(&reply[..6], &orig[6..12]);
    assert_eq!(&reply[6..12], &orig[..6]);
    let ip = Ipv4Packet::new_checked(&reply[l3..]).unwrap();
    let r = Ipv4Repr::parse(&ip).unwrap();
    assert_eq!((r.src_addr, r.dst_addr), (o.dst_addr(), o.src_addr()));
    assert_eq!(r.protocol, ip_proto::ICMP);
    let m = IcmpPacket::new_checked(ip.payload()).unwrap();
    let icmp = IcmpRepr::parse_v4(&m).unwrap();
    assert_eq!((icmp.msg_type, icmp.code, icmp.rest_of_header), (3, 4, mtu));
    assert_eq!(m.payload(), &orig[l3..l3 + 548]);
}

#[test]
fn df_too_big_gets_one_icmp_reply_on_in_port() {
    // 1500 - 50 = 1450 bytes of inner IP fit; 1451 do not.
    let r = resolver(1500);
    let fits = ipv4_frame(&[], ipv4_repr(1430, true), &pattern(1430));
    let (s, st) = run_frame(TUN4, &r, &fits, Some(PortId(1)));
    assert_eq!((st.outputs, st.encap_too_big), (1, 0));
    assert_eq!(s.0[0].0, PortId(2));
    assert_eq!(s.0[0].1.len(), 1514);

    let big = ipv4_frame(&[], ipv4_repr(1431, true), &pattern(1431));
    let (s, st) = run_frame(TUN4, &r, &big, Some(PortId(1)));
    assert_eq!(s.0.len(), 1, "exactly one packet, nothing on the uplink");
    let (port, reply) = &s.0[0];
    assert_eq!(*port, PortId(1));
    assert_eq!(reply.len(), 14 + 576);
    check_frag_needed(&big, reply, 14, 1450);
    assert_eq!((st.too_big_replies, st.encap_too_big), (1, 1));
    assert_eq!((st.outputs, st.fragmented, st.sink_drops), (0, 0, 0));
}

#[test]
fn reply_uses_received_tags_and_mtu_counts_pushed_ones() {
    // The tag pushed before the tunnel output costs 4 bytes of the inner MTU, but
    // the reply goes back untagged, as the packet came in.
    let r = resolver(1500);
    let f = ipv4_frame(&[], ipv4_repr(1430, true), &pattern(1430));
    let acts = format!("push_vlan(vid=10),{TUN4}");
    let (s, st) = run_frame(&acts, &r, &f, Some(PortId(1)));
    assert_eq!(st.too_big_replies, 1);
    let (port, reply) = &s.0[0];
    assert_eq!(*port, PortId(1));
    assert_eq!(&reply[12..14], &[0x08, 0x00]);
    check_frag_needed(&f, reply, 14, 1446);
    // And a tagged arrival is answered with its tags.
    let tagged = ipv4_frame(&[(0x8100, 7)], ipv4_repr(1440, true), &pattern(1440));
    let (s, _) = run_frame(TUN4, &r, &tagged, Some(PortId(1)));
    assert_eq!(&s.0[0].1[12..18], &tagged[12..18]);
    check_frag_needed(&tagged, &s.0[0].1, 18, 1446);
}

#[test]
fn non_df_too_big_is_fragmented_and_encapsulated() {
    let r = resolver(1500);
    let f = ipv4_frame(&[], ipv4_repr(3000, false), &pattern(3000));
    let (s, st) = run_frame(TUN4, &r, &f, Some(PortId(1)));
    assert_eq!((st.fragmented, st.encap_too_big, st.outputs), (1, 1, 1));
    assert_eq!(st.too_big_replies, 0);
    // 1450 - 20 = 1430, rounded down to 1424 bytes of data per fragment.
    assert_eq!(s.0.len(), 3);
    let mut data = Vec::new();
    for (i, (port, pkt)) in s.0.iter().enumerate() {
        assert_eq!(*port, PortId(2));
        assert!(pkt.len() <= 1514);
        let d = vxlan::decapsulate(pkt, 4789).unwrap().expect("vxlan");
        let inner = d.inner(pkt);
        assert_eq!(&inner[..14], &f[..14]);
        let ip = Ipv4Packet::new_checked(&inner[14..]).unwrap();
        let r = Ipv4Repr::parse(&ip).unwrap();
        assert_eq!(usize::from(r.frag_offset), data.len());
        assert_eq!(r.more_frags, i < 2);
        assert_eq!(r.ident, 0x1234);
        data.extend_from_slice(ip.payload());
    }
    assert_eq!(data, pattern(3000));
}

#[test]
fn ipv6_too_big_gets_packet_too_big() {
    // Over an IPv6 underlay: 1500 - 70 = 1430 bytes of inner IP fit.
    let r = resolver(1500);
    let f = ipv6_frame(&[], ipv6_repr(1400), &pattern(1400));
    let (s, st) = run_frame(TUN6, &r, &f, Some(PortId(1)));
    assert_eq!(st.too_big_replies, 1);
    assert_eq!(s.0.len(), 1);
    let (port, reply) = &s.0[0];
    assert_eq!(*port, PortId(1));
    assert_eq!(reply.len(), 14 + 1280);
    let ip = Ipv6Packet::new_checked(&reply[14..]).unwrap();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    assert_eq!(src, ipv6_repr(0).dst_addr);
    assert_eq!(dst, ipv6_repr(0).src_addr);
    let m = IcmpPacket::new_checked(ip.payload()).unwrap();
    let icmp = IcmpRepr::parse_v6(&m, &src, &dst).unwrap();
    assert_eq!(
        (icmp.msg_type, icmp.code, icmp.rest_of_header),
        (2, 0, 1430)
    );
    // The same packet fits an IPv4 underlay (1450).
    let (s, st) = run_frame(TUN4, &r, &f, Some(PortId(1)));
    assert_eq!((st.outputs, st.too_big_replies), (1, 0));
    assert_eq!(s.0[0].0, PortId(2));
}

#[test]
fn too_big_without_an_answer_is_dropped() {
    let r = resolver(1500);
    let df = ipv4_frame(&[], ipv4_repr(1460, true), &pattern(1460));
    for in_port in [None, Some(PortId(9))] {
        let (s, st) = run_frame(TUN4, &r, &df, in_port);
        assert!(s.0.is_empty());
        assert_eq!((st.encap_too_big, st.too_big_replies), (1, 0));
    }
    // Not IP, and an IPv6 path below 1280: dropped.
    let mut other = l2_header(&[], 0x88b5);
    other.extend_from_slice(&pattern(1480));
    let v6 = ipv6_frame(&[], ipv6_repr(1300), &pattern(1300));
    for (f, mtu) in [(&other, 1500), (&v6, 1300)] {
        let (s, st) = run_frame(TUN4, &resolver(mtu), f, Some(PortId(1)));
        assert!(s.0.is_empty());
        assert_eq!(st.encap_too_big, 1);
        assert_eq!((st.too_big_replies, st.fragmented, st.outputs), (0, 0, 0));
    }
}

#[test]
fn tunnel_output_without_set_is_invalid() {
    let (s, st) = run("9", &StaticResolver::new());
    assert!(s.0.is_empty());
    assert_eq!(st.invalid, 1);
}
