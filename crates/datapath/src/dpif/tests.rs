//! Tests of the datapath loop on in-memory ports: encapsulation and decapsulation,
//! super-frames (whole to ports that take them, as segments to the slow path), IPsec
//! paths through the kernel, malformed frames, port hot-plug, wakes, and ports whose
//! device is gone.

use super::*;
use crate::FlowId;
use crate::cache::FlowEntry;
use crate::flow::Malformed;
use crate::flow::Megaflow;
use crate::port::PortError;
use crate::port::{MemPort, MemPortHandle};
use crate::tunnel::{StaticResolver, TunnelRoute};
use crate::wire::{Offload, vxlan};

const REP: PortId = PortId(1);
const UPLINK: PortId = PortId(2);
const TUN: PortId = PortId(3);

fn datapath() -> (Datapath, MemPortHandle, MemPortHandle) {
    let mut r = StaticResolver::new();
    r.insert(
        "192.168.203.56".parse().unwrap(),
        TunnelRoute {
            egress: UPLINK,
            src_ip: "192.168.203.51".parse().unwrap(),
            src_mac: [2, 0, 0, 0, 0, 0x51],
            dst_mac: [2, 0, 0, 0, 0, 0x56],
            mtu: 1500,
            via: crate::tunnel::Via::Uplink,
        },
    );
    let cfg = DpConfig {
        local_vteps: vec!["192.168.203.51".parse().unwrap()],
        ..DpConfig::default()
    };
    let mut dp = Datapath::new(cfg, Arc::new(r), Box::new(DropMisses));
    let (rep, rep_h) = MemPort::new("rep0", 1450);
    let (up, up_h) = MemPort::new("up0", 1500);
    dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
    dp.add_port(UPLINK, PortRole::Uplink, Some(Box::new(up)));
    dp.add_port(TUN, PortRole::Tunnel, None);
    (dp, rep_h, up_h)
}

fn install(dp: &mut Datapath, id: u64, flow: &str, actions: &str) {
    let mf: Megaflow = flow.parse().unwrap();
    let e = FlowEntry::new(
        FlowId(id),
        &mf.key,
        Arc::new(mf.mask),
        actions.parse().unwrap(),
        0,
    );
    dp.cache_mut().insert(Arc::new(e));
}

fn inner_frame() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[0x82, 0x8a, 0x29, 0xad, 0x4e, 0xef]);
    f[6..12].copy_from_slice(&[0xe4, 0x11, 0x11, 0x11, 0x11, 0x10]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

#[test]
fn encap_then_decap_with_static_flows() {
    let (mut dp, rep, up) = datapath();
    install(
        &mut dp,
        1,
        "in_port(1)",
        "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),3",
    );
    install(
        &mut dp,
        2,
        "tunnel(tun_id=0x10,src=192.168.203.56),in_port(3)",
        "1",
    );
    rep.inject(&inner_frame());
    assert_eq!(dp.run_once(0, 1).unwrap(), 1);
    let sent = up.take_sent();
    assert_eq!(sent.len(), 1);
    let outer = &sent[0];
    assert_eq!(&outer[..6], &[2, 0, 0, 0, 0, 0x56]);
    let d = vxlan::decapsulate(outer, 4789).unwrap().unwrap();
    assert_eq!(d.vni, 0x10);
    assert_eq!(d.inner(outer), &inner_frame()[..]);

    // The remote VTEP's answer: the same packet with the addresses swapped.
    let mut reply = outer.clone();
    let (src_ip, dst_ip) = (26..30, 30..34);
    let s: Vec<u8> = reply[src_ip.clone()].to_vec();
    reply.copy_within(dst_ip.clone(), src_ip.start);
    reply[dst_ip].copy_from_slice(&s);
    up.inject(&reply);
    dp.run_once(0, 2).unwrap();
    assert_eq!(rep.take_sent(), vec![inner_frame()]);
    let st = dp.stats();
    assert_eq!((st.rx, st.decap, st.hits, st.misses), (2, 1, 2, 0));
}

/// A UDP super-frame of VXLAN packets (what a peer's USO or GRO of forwarded UDP
/// hands over) is cut into its datagrams, each decapsulated on its own.
#[test]
fn a_udp_super_frame_of_vxlan_packets_is_decapsulated_datagram_by_datagram() {
    use crate::wire::vxlan::OuterHeaders;
    use crate::wire::{Gso, GsoKind};
    let (mut dp, rep, up) = datapath();
    install(
        &mut dp,
        2,
        "tunnel(tun_id=0x10,src=192.168.203.56),in_port(3)",
        "1",
    );
    let inners: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            let mut f = inner_frame();
            f[20..].fill(i);
            if i == 2 {
                f.truncate(60);
            }
            f
        })
        .collect();
    let first = vxlan::VXLAN_OVERHEAD_V4 - vxlan::HEADER_LEN;
    let mut f = vec![0u8; first];
    for inner in &inners {
        let at = f.len();
        f.resize(at + vxlan::HEADER_LEN, 0);
        vxlan::emit_header(&mut f[at..], 0x10).unwrap();
        f.extend_from_slice(inner);
    }
    let outer = OuterHeaders {
        src_mac: [2, 0, 0, 0, 0, 0x56],
        dst_mac: [2, 0, 0, 0, 0, 0x51],
        src_ip: "192.168.203.56".parse().unwrap(),
        dst_ip: "192.168.203.51".parse().unwrap(),
        tos: 0,
        ttl: 64,
        df: true,
        ident: 1,
        udp_src: 50000,
        udp_dst: 4789,
        vni: 0x10,
        udp_csum: false,
    };
    let inner_len = f.len() - vxlan::VXLAN_OVERHEAD_V4;
    let (_, csum) = vxlan::encapsulate_for_segmentation(&mut f, inner_len, &outer).unwrap();
    let o = Offload {
        csum: Some(csum),
        csum_valid: false,
        gso: Some(Gso {
            kind: GsoKind::Udp,
            size: (vxlan::HEADER_LEN + 64) as u16,
            ecn: false,
            tunnel: None,
        }),
        hdr_len: first as u16,
    };
    up.inject_offload(&f, o);
    dp.run_once(0, 1).unwrap();
    assert_eq!(rep.take_sent(), inners);
    let st = dp.stats();
    assert_eq!((st.rx, st.decap, st.hits), (1, 3, 3));
    assert_eq!((st.exec.gso_segmented, st.exec.gso_segments), (1, 3));
}

/// A path IPsec protects: encapsulated frames go to the tunnel port (the kernel's IP
/// output), never the uplink; a blocked path drops; VXLAN from a protected remote
/// counts only as the kernel delivers it, any other only off the uplink.
#[test]
fn protected_paths_go_through_the_kernel_and_only_its_copy_counts() {
    let route = TunnelRoute {
        egress: UPLINK,
        src_ip: "192.168.203.51".parse().unwrap(),
        src_mac: [2, 0, 0, 0, 0, 0x51],
        dst_mac: [2, 0, 0, 0, 0, 0x56],
        mtu: 1450,
        via: crate::tunnel::Via::Kernel { sa: true },
    };
    let mut r = StaticResolver::new();
    r.insert("192.168.203.56".parse().unwrap(), route);
    r.insert(
        "192.168.203.57".parse().unwrap(),
        TunnelRoute {
            via: crate::tunnel::Via::Kernel { sa: false },
            ..route
        },
    );
    r.insert(
        "192.168.203.58".parse().unwrap(),
        TunnelRoute {
            via: crate::tunnel::Via::Uplink,
            ..route
        },
    );
    r.protect_inbound("192.168.203.56".parse().unwrap());
    let cfg = DpConfig {
        local_vteps: vec!["192.168.203.51".parse().unwrap()],
        ..DpConfig::default()
    };
    let mut dp = Datapath::new(cfg, Arc::new(r), Box::new(DropMisses));
    let (rep, rep_h) = MemPort::new("rep0", 1400);
    let (up, up_h) = MemPort::new("up0", 1500);
    let (tun, tun_h) = MemPort::new("vxlan_sys_4789", 65535);
    dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
    dp.add_port(UPLINK, PortRole::Uplink, Some(Box::new(up)));
    dp.add_port(TUN, PortRole::Tunnel, Some(Box::new(tun)));
    for (i, dst) in ["192.168.203.56", "192.168.203.57", "192.168.203.58"]
        .iter()
        .enumerate()
    {
        let mut f = inner_frame();
        f[5] = i as u8;
        install(
            &mut dp,
            i as u64 + 1,
            &format!("in_port(1),eth(dst=82:8a:29:ad:4e:{i:02x})"),
            &format!("set(tunnel(tun_id=0x10,dst={dst},ttl=64,tp_dst=4789,mark=0x7)),3"),
        );
        rep_h.inject(&f);
    }
    install(&mut dp, 9, "tunnel(tun_id=0x10),in_port(3)", "1");
    dp.run_once(0, 1).unwrap();
    let to_kernel = tun_h.take_sent();
    assert_eq!(to_kernel.len(), 2, "both protected paths go to the kernel");
    assert_eq!(&to_kernel[0][..6], &crate::port::mark_mac(7));
    let d = vxlan::decapsulate(&to_kernel[0], 4789).unwrap().unwrap();
    assert_eq!(d.dst, "192.168.203.56".parse::<IpAddr>().unwrap());
    let on_wire = up_h.take_sent();
    assert_eq!(
        on_wire.len(),
        1,
        "only the unprotected path uses the uplink"
    );
    let st = dp.stats();
    assert_eq!((st.exec.kernel_out, st.exec.ipsec_no_sa), (2, 1));

    // From the protected remote: the kernel's copy is decapsulated, the uplink's
    // dropped. From the unprotected one: the other way round.
    // (Each answer is the frame sent with its addresses swapped.)
    let answer = |sent: &[u8]| {
        let mut f = sent.to_vec();
        f.copy_within(30..34, 26);
        f[30..34].copy_from_slice(&sent[26..30]);
        f
    };
    let (protected, clear) = (answer(&to_kernel[0]), answer(&on_wire[0]));
    tun_h.inject(&protected);
    up_h.inject(&protected);
    tun_h.inject(&clear);
    up_h.inject(&clear);
    dp.run_once(0, 2).unwrap();
    dp.run_once(0, 3).unwrap();
    assert_eq!(rep_h.take_sent().len(), 2, "one copy of each");
    let st = dp.stats();
    assert_eq!(
        (
            st.decap,
            st.ipsec_rx,
            st.ipsec_clear_dropped,
            st.kernel_rx_ignored
        ),
        (2, 1, 1, 1)
    );
}

/// The remote VTEP's VXLAN frame (to 192.168.203.51, VNI 0x10) around `inner`, as
/// its kernel hands a super-frame over: the inner TCP checksum partial.
fn vxlan_from_remote(inner: &[u8]) -> Vec<u8> {
    let outer = vxlan::OuterHeaders {
        src_mac: [2, 0, 0, 0, 0, 0x56],
        dst_mac: [2, 0, 0, 0, 0, 0x51],
        src_ip: "192.168.203.56".parse().unwrap(),
        dst_ip: "192.168.203.51".parse().unwrap(),
        tos: 0,
        ttl: 64,
        df: true,
        ident: 7,
        udp_src: 50_000,
        udp_dst: 4789,
        vni: 0x10,
        udp_csum: false,
    };
    let mut out = vec![0u8; inner.len() + 50];
    let n = vxlan::encapsulate(inner, &outer, &mut out).unwrap();
    out.truncate(n);
    out
}

/// What a recording slow path saw: each miss's frame and TCP flags.
type Seen = Arc<std::sync::Mutex<Vec<(Vec<u8>, u16)>>>;
struct Record(Seen);

impl MissHandler for Record {
    fn miss(&mut self, miss: Miss<'_>) -> MissVerdict {
        let mut v = self.0.lock().unwrap();
        v.push((miss.frame.to_vec(), miss.key.tcp_flags));
        MissVerdict::Queued
    }
}

#[test]
fn a_decapsulated_super_frame_goes_whole_to_a_representor_that_takes_it() {
    use crate::wire::gso::{self, Layout};
    use crate::wire::testutil::tcp_frame;
    use crate::wire::{Gso, GsoKind, Offload};
    let (mut dp, _rep, up) = datapath();
    let (rep, rep_h) = MemPort::with_offloads("rep0", 1450);
    dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
    install(
        &mut dp,
        2,
        "tunnel(tun_id=0x10,src=192.168.203.56),in_port(3)",
        "1",
    );
    // What Linux 6.18 reported for such a frame: TCPV4, csum_start at the inner TCP
    // header (50 + 34), the tunnel not mentioned.
    let mut inner = tcp_frame(false, &[], 20_000, crate::wire::tcp::flags::ACK);
    let lay = Layout::parse(&inner).unwrap();
    let c = gso::prepare_partial(&mut inner, &lay).unwrap();
    let gso = Some(Gso {
        kind: GsoKind::TcpV4,
        size: 1398,
        ecn: false,
        tunnel: None,
    });
    let o = Offload {
        csum: Some(c),
        gso,
        hdr_len: 116,
        ..Offload::NONE
    }
    .shifted(0, 50)
    .unwrap();
    up.inject_offload(&vxlan_from_remote(&inner), o);
    dp.run_once(0, 1).unwrap();
    let sent = rep_h.take_sent_offload();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, inner);
    assert_eq!(sent[0].1.csum, Some(c));
    assert_eq!(sent[0].1.gso, gso);
    let st = dp.stats();
    assert_eq!((st.decap, st.exec.gso_passed), (1, 1));
    let entry = dp.cache_mut().iter().next().cloned().expect("flow");
    assert_eq!(
        entry.stats().packets,
        15,
        "20000 bytes in 1398-byte segments"
    );

    // A partial checksum of the outer headers leaves a complete inner frame.
    let small = tcp_frame(false, &[], 100, crate::wire::tcp::flags::ACK);
    let outer_csum = Offload {
        csum: Some(crate::wire::PartialCsum {
            start: 34,
            offset: 6,
        }),
        ..Offload::NONE
    };
    up.inject_offload(&vxlan_from_remote(&small), outer_csum);
    dp.run_once(0, 2).unwrap();
    assert_eq!(rep_h.take_sent_offload(), vec![(small, Offload::NONE)]);
}

#[test]
fn a_super_frame_that_misses_goes_up_as_its_segments() {
    use crate::wire::testutil::tcp_frame;
    use crate::wire::{Gso, GsoKind, Offload};
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut dp = Datapath::new(
        DpConfig::default(),
        Arc::new(StaticResolver::new()),
        Box::new(Record(seen.clone())),
    );
    let (rep, rep_h) = MemPort::with_offloads("rep0", 1450);
    dp.add_port(REP, PortRole::Representor, Some(Box::new(rep)));
    use crate::wire::tcp::flags::{ACK, FIN, PSH};
    let f = tcp_frame(false, &[], 5000, ACK | PSH | FIN);
    let o = Offload {
        csum_valid: true,
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1398,
            ecn: false,
            tunnel: None,
        }),
        ..Offload::NONE
    };
    rep_h.inject_offload(&f, o);
    dp.run_once(0, 1).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert_eq!(dp.stats().misses, 4);
    for (i, (seg, flags)) in seen.iter().enumerate() {
        let ip = crate::wire::Ipv4Packet::new_checked(&seg[14..]).unwrap();
        let t = crate::wire::TcpPacket::new_checked(ip.payload()).unwrap();
        let (s, d) = (ip.src_addr().into(), ip.dst_addr().into());
        assert!(t.verify_checksum(&s, &d), "segment {i} is complete");
        let want = if i == 3 { ACK | PSH | FIN } else { ACK };
        assert_eq!(*flags, want, "segment {i}'s key has its own flags");
    }
}

#[test]
fn flows_carried_by_tc_are_counted_not_forwarded() {
    let (mut dp, rep, up) = datapath();
    install(&mut dp, 1, "in_port(1)", "2");
    rep.inject(&inner_frame());
    dp.run_once(0, 1).unwrap();
    assert_eq!(up.take_sent().len(), 1);
    let entry = dp.cache_mut().iter().next().cloned().expect("flow");
    entry.set_in_tc(true);
    rep.inject(&inner_frame());
    dp.run_once(0, 2).unwrap();
    assert!(up.take_sent().is_empty(), "tc forwards it, not us");
    assert_eq!(dp.stats().tc_carried, 1);
    assert_eq!(entry.stats().packets, 1, "tc's counters account for it");
}

#[test]
fn malformed_frames_are_dropped_and_counted_per_reason() {
    use crate::wire::testutil::tcp_frame;
    let (mut dp, rep, up) = datapath();
    install(&mut dp, 1, "in_port(1)", "2");
    let good = tcp_frame(false, &[], 10, crate::wire::tcp::flags::ACK);
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    let mut long = good.clone();
    long[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let mut doff = good.clone();
    doff[14 + 20 + 12] = 0x30;
    for f in [&ihl, &long, &doff, &good[..20].to_vec(), &good] {
        rep.inject(f);
    }
    dp.run_once(0, 1).unwrap();
    assert_eq!(up.take_sent(), vec![good], "only the well-formed frame");
    let st = dp.stats();
    let by = |m: Malformed| st.malformed[m.index()];
    assert_eq!(by(Malformed::Ipv4Ihl), 1);
    assert_eq!(by(Malformed::Ipv4TotalLen), 1);
    assert_eq!(by(Malformed::TcpTruncated), 1);
    assert_eq!(by(Malformed::Ipv4Truncated), 1);
    assert_eq!(st.malformed.iter().sum::<u64>(), 4);
    assert_eq!((st.hits, st.misses), (1, 0));
    assert_eq!(port_stats(&mut dp, REP).rx_malformed, 4);
}

#[test]
fn ports_plugged_and_unplugged_through_the_queue() {
    let (mut dp, rep, up) = datapath();
    let (tx, rx) = std::sync::mpsc::channel();
    dp.set_port_ops(rx);
    install(&mut dp, 1, "in_port(1)", "4");
    install(&mut dp, 2, "in_port(4)", "1");
    // No port 4 yet: its flow's output is dropped, nothing panics.
    rep.inject(&inner_frame());
    dp.run_once(0, 1).unwrap();
    assert!(up.take_sent().is_empty());

    let (vf1, vf1_h) = MemPort::new("rep1", 1450);
    tx.send(PortOp::Add {
        id: PortId(4),
        role: PortRole::Representor,
        io: Some(Box::new(vf1)),
    })
    .unwrap();
    rep.inject(&inner_frame());
    dp.run_once(0, 2).unwrap();
    assert_eq!(vf1_h.take_sent(), vec![inner_frame()]);
    vf1_h.inject(&inner_frame());
    dp.run_once(0, 3).unwrap();
    assert_eq!(
        rep.take_sent(),
        vec![inner_frame()],
        "the new port is polled"
    );

    tx.send(PortOp::Remove(PortId(4))).unwrap();
    vf1_h.inject(&inner_frame());
    rep.inject(&inner_frame());
    let rx_before = dp.stats().rx;
    dp.run_once(0, 4).unwrap();
    assert_eq!(
        dp.stats().rx,
        rx_before + 1,
        "the removed port is not polled"
    );
    assert!(vf1_h.take_sent().is_empty() && rep.take_sent().is_empty());
    assert!(dp.remove_port(PortId(4)).is_none());
    assert!(dp.remove_port(PortId(99)).is_none());
    assert!(dp.remove_port(TUN).is_none(), "the tunnel port has no I/O");
}

#[test]
fn a_wake_ends_the_poll_early() {
    let (mut dp, _rep, _up) = datapath();
    let w = dp.waker().expect("eventfd");
    w.wake();
    let t = std::time::Instant::now();
    dp.run_once(5_000, 1).unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "woken, not timed out"
    );
}

#[test]
fn miss_goes_to_the_handler_and_vxlan_to_others_is_not_decapsulated() {
    let (mut dp, rep, up) = datapath();
    rep.inject(&inner_frame());
    dp.run_once(0, 1).unwrap();
    assert_eq!(dp.stats().misses, 1);
    assert_eq!(dp.stats().upcall_drops, 1);
    // VXLAN to an address that is not a local VTEP stays a plain uplink packet.
    install(
        &mut dp,
        1,
        "in_port(1)",
        "set(tunnel(tun_id=0x10,dst=192.168.203.56,ttl=64,tp_dst=4789)),3",
    );
    rep.inject(&inner_frame());
    dp.run_once(0, 2).unwrap();
    let outer = up.take_sent().remove(0);
    up.inject(&outer); // destined to .56, not to us
    dp.run_once(0, 3).unwrap();
    assert_eq!(dp.stats().decap, 0);
}

/// What the datapath reports for port `id`.
fn port_stats(dp: &mut Datapath, id: PortId) -> PortStats {
    dp.stats()
        .ports
        .into_iter()
        .find(|&(p, _)| p == id)
        .map(|(_, st)| st)
        .expect("a port with I/O")
}

#[test]
fn a_port_whose_device_is_gone_is_marked_down_until_replaced() {
    let (mut dp, rep, up) = datapath();
    let (tx, rx) = std::sync::mpsc::channel();
    dp.set_port_ops(rx);
    install(&mut dp, 1, "in_port(1)", "2");
    install(&mut dp, 2, "in_port(2)", "1");
    rep.fail_recv(std::io::ErrorKind::NetworkDown);
    rep.inject(&inner_frame());
    assert_eq!(dp.run_once(0, 1).unwrap(), 0, "handled, not an error");
    assert_eq!(dp.down_ports(), vec![REP]);
    let recvs = rep.recvs();
    for now in 2..5 {
        dp.run_once(0, now).unwrap();
    }
    assert_eq!(rep.recvs(), recvs, "not polled any more");
    assert_eq!(dp.poll_set(), vec![UPLINK]);

    // Frames for it are dropped and counted.
    up.inject(&inner_frame());
    dp.run_once(0, 5).unwrap();
    assert!(rep.take_sent().is_empty());
    let st = port_stats(&mut dp, REP);
    assert!(st.down);
    assert_eq!((st.tx_dropped, st.errors), (1, 1));
    assert_eq!(dp.stats().exec.sink_drops, 1);
    assert!(!port_stats(&mut dp, UPLINK).down);

    // The daemon reopened the device: the same id, a new port.
    let (rep2, rep2_h) = MemPort::new("rep0", 1450);
    tx.send(PortOp::Add {
        id: REP,
        role: PortRole::Representor,
        io: Some(Box::new(rep2)),
    })
    .unwrap();
    up.inject(&inner_frame());
    dp.run_once(0, 6).unwrap();
    assert!(dp.down_ports().is_empty());
    assert_eq!(rep2_h.take_sent(), vec![inner_frame()]);
    rep2_h.inject(&inner_frame());
    dp.run_once(0, 7).unwrap();
    assert_eq!(up.take_sent(), vec![inner_frame()], "polled again");
    assert!(!port_stats(&mut dp, REP).down);
}

#[test]
fn a_transmit_to_a_gone_device_marks_the_port_down() {
    let (mut dp, rep, up) = datapath();
    install(&mut dp, 1, "in_port(1)", "2");
    up.fail_send(std::io::ErrorKind::NetworkDown);
    rep.inject(&inner_frame());
    dp.run_once(0, 1).unwrap();
    assert_eq!(dp.down_ports(), vec![UPLINK]);
    rep.inject(&inner_frame());
    dp.run_once(0, 2).unwrap();
    assert_eq!(up.recvs(), 0, "marked down before its turn, never polled");
    let st = dp.stats();
    assert_eq!(st.tx_dropped, 1, "the batch the port refused");
    assert_eq!(st.exec.sink_drops, 1, "the frame sent to it once down");
    let up_st = port_stats(&mut dp, UPLINK);
    assert!(up_st.down);
    assert_eq!(up_st.tx_dropped, 2);
}

#[test]
fn transient_errors_never_mark_a_port_down() {
    let (mut dp, rep, up) = datapath();
    install(&mut dp, 1, "in_port(1)", "2");
    for (now, kind) in [
        (1, std::io::ErrorKind::Interrupted),
        (2, std::io::ErrorKind::WouldBlock),
    ] {
        rep.fail_recv(kind);
        rep.inject(&inner_frame());
        assert_eq!(dp.run_once(0, now).unwrap(), 0, "{kind:?}");
    }
    rep.heal();
    up.fail_send(std::io::ErrorKind::WouldBlock);
    assert_eq!(dp.run_once(0, 3).unwrap(), 2);
    assert!(up.take_sent().is_empty());
    up.heal();
    rep.inject(&inner_frame());
    dp.run_once(0, 4).unwrap();
    assert_eq!(up.take_sent(), vec![inner_frame()]);
    assert!(dp.down_ports().is_empty());
    let st = dp.stats();
    assert_eq!(st.tx_dropped, 2);
    let errors: Vec<_> = st
        .ports
        .iter()
        .map(|(id, p)| (*id, p.errors, p.down))
        .collect();
    assert_eq!(errors, vec![(REP, 2, false), (UPLINK, 1, false)]);
}

/// A port on one end of a socket pair: what `poll()` reports on it is the test's.
struct SocketPort {
    sock: std::os::unix::net::UnixStream,
    recvs: Arc<std::sync::atomic::AtomicU64>,
}

impl Port for SocketPort {
    fn name(&self) -> &str {
        "sock"
    }

    fn ifindex(&self) -> Option<crate::IfIndex> {
        None
    }

    fn mtu(&self) -> u32 {
        1500
    }

    fn recv(&mut self, _: &mut PacketBatch) -> Result<usize, PortError> {
        self.recvs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(0)
    }

    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        Ok(batch.len())
    }

    fn raw_fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        Some(self.sock.as_raw_fd())
    }
}

#[test]
fn a_hung_up_descriptor_leaves_the_poll_set() {
    let (mut dp, _rep, _up) = datapath();
    let (ours, peer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let recvs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let port = SocketPort {
        sock: ours,
        recvs: recvs.clone(),
    };
    dp.add_port(PortId(4), PortRole::Representor, Some(Box::new(port)));
    dp.run_once(0, 1).unwrap();
    assert!(dp.down_ports().is_empty(), "nothing reported yet");
    // The peer's close hangs the socket up: poll() reports it at once, every time.
    drop(peer);
    dp.run_once(0, 2).unwrap();
    assert_eq!(dp.down_ports(), vec![PortId(4)]);
    let n = recvs.load(std::sync::atomic::Ordering::Relaxed);
    for now in 3..6 {
        dp.run_once(0, now).unwrap();
    }
    assert_eq!(recvs.load(std::sync::atomic::Ordering::Relaxed), n);
    assert!(!dp.poll_set().contains(&PortId(4)), "out of the poll set");
}
