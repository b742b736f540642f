//! Tests of the AF_PACKET port: ring geometry and kernel release parsing, and real
//! sockets on veth pairs in fresh network namespaces (skipped without root).

use super::ring::{RING_MAC_OFFSET, RING_MIN_FRAMES, ring_geometry};
use super::*;
use std::sync::atomic::Ordering;

#[test]
fn missing_interface_is_a_clear_error() {
    let e = AfPacketPort::open("flowd-no-such0", 8)
        .err()
        .expect("must fail");
    assert!(matches!(e, PortError::NoSuchInterface(ref n) if n == "flowd-no-such0"));
    assert_eq!(e.to_string(), "no such interface `flowd-no-such0`");
}

#[test]
fn ring_geometry_fits_frames_in_blocks() {
    for (mtu, frame, frames) in [(1500, 2048, 1024), (1450, 2048, 1024), (9000, 12288, 258)] {
        let r = ring_geometry(mtu, 4096, true, DEFAULT_RING_BYTES);
        assert_eq!(
            (r.tp_frame_size, r.tp_frame_nr),
            (frame, frames),
            "mtu {mtu}"
        );
        assert_eq!(r.tp_block_size % 4096, 0);
        assert_eq!(r.tp_block_size % r.tp_frame_size, 0);
        let per_block = r.tp_block_size / r.tp_frame_size;
        assert_eq!(r.tp_frame_nr, per_block * r.tp_block_nr);
        assert!(RING_MAC_OFFSET + 10 + mtu as usize + 14 <= r.tp_frame_size as usize);
    }
    // A 65535 MTU still yields a valid (page-multiple) geometry.
    let r = ring_geometry(65535, 4096, true, DEFAULT_RING_BYTES);
    assert_eq!(r.tp_block_size % r.tp_frame_size, 0);
    assert!(r.tp_frame_nr >= RING_MIN_FRAMES as u32);
    // `[datapath] ring_kib`: the frame count follows the budget, never below the floor.
    let r = ring_geometry(1500, 4096, true, 32 << 20);
    assert_eq!((r.tp_frame_size, r.tp_frame_nr), (2048, 16384));
    let r = ring_geometry(9000, 4096, true, 128 << 10);
    assert_eq!(r.tp_frame_nr, 258, "at least RING_MIN_FRAMES");
}

/// Runs `f` on a thread in a fresh network namespace with a veth pair `fdr0`/`fdr1`
/// (MTU 1500, up); false (test skipped) without root or iproute2.
pub(super) fn in_veth_netns(f: impl FnOnce() + Send + 'static) -> bool {
    std::thread::spawn(move || {
        // SAFETY: unshare only moves the calling thread (ours, short-lived) into a
        // new network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return false;
        }
        // No IPv6 on the pair: the kernel's own router solicitations and MLD reports,
        // sent at random delays after a link comes up, would otherwise reach the ports
        // at any time (a test that expects nothing more to arrive would race them).
        // The sysctl is this namespace's: the thread just moved into it.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        for cmd in [
            "link add fdr0 type veth peer name fdr1",
            "link set fdr0 up",
            "link set fdr1 up",
        ] {
            let ok = std::process::Command::new("ip")
                .args(cmd.split(' '))
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return false;
            }
        }
        f();
        true
    })
    .join()
    .expect("test thread")
}

pub(super) fn ip(cmd: &str) {
    let ok = std::process::Command::new("ip")
        .args(cmd.split(' '))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {cmd}");
}

pub(super) const SRC: [u8; 6] = [0x02, 0xfd, 0, 0, 0, 1];

/// A frame from `SRC` of `len` bytes, ethertype 0x88b5, VLAN-tagged if `vid` is set.
pub(super) fn frame(len: usize, vid: Option<u16>, fill: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&SRC);
    if let Some(vid) = vid {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&((5 << 13) | vid).to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(len, fill);
    f
}

/// Receives on `port` into `batch` until `want` frames from `SRC` arrived (2 s max).
pub(super) fn recv_ours(
    port: &mut AfPacketPort,
    batch: &mut PacketBatch,
    want: usize,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut poller = Poller::new(&[port.raw_fd().expect("fd")]);
    let mut ready = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while got.len() < want && std::time::Instant::now() < deadline {
        poller.wait(100, &mut ready).expect("poll");
        batch.clear();
        port.recv(batch).expect("recv");
        // Keep ours (and the empty truncated ones); the kernel's own IPv6 chatter
        // goes.
        got.extend(
            batch
                .iter()
                .filter(|p| p.is_empty() || p.get(6..12) == Some(&SRC[..]))
                .map(<[u8]>::to_vec),
        );
    }
    got
}

fn vlan_restore_and_truncation(mode: RxMode) {
    let mut rx = AfPacketPort::open_with("fdr0", 8, mode).expect("open fdr0");
    assert_eq!(rx.rx_mode(), mode);
    let mut tx = AfPacketPort::open_with("fdr1", 8, RxMode::Recvmmsg).expect("open fdr1");
    let mut out = PacketBatch::new(8, 9000);
    let tagged = frame(64, Some(100), 0xa5);
    let plain = frame(200, None, 0x5a);
    assert!(out.push(&tagged) && out.push(&plain));
    assert_eq!(tx.send(&out).expect("send"), 2);
    let mut batch = PacketBatch::new(8, 1600);
    let got = recv_ours(&mut rx, &mut batch, 2);
    assert_eq!(
        got,
        vec![tagged, plain],
        "{mode:?}: tag restored, frames intact"
    );
    assert_eq!(rx.truncated(), 0);

    // A frame larger than the batch slot: received empty and counted.
    let mut small = PacketBatch::new(8, 100);
    out.clear();
    assert!(out.push(&frame(300, None, 1)));
    assert_eq!(tx.send(&out).expect("send"), 1);
    assert_eq!(recv_ours(&mut rx, &mut small, 1), vec![Vec::<u8>::new()]);
    assert_eq!(rx.truncated(), 1, "{mode:?}");

    // The MTU raised after open: a jumbo frame outgrows the ring's frames (and the
    // recvmmsg path's 1600-byte slots) and is counted, not delivered cut.
    ip("link set fdr0 mtu 9000");
    ip("link set fdr1 mtu 9000");
    out.clear();
    assert!(out.push(&frame(4000, Some(7), 2)));
    assert_eq!(tx.send(&out).expect("send"), 1);
    assert_eq!(recv_ours(&mut rx, &mut batch, 1), vec![Vec::<u8>::new()]);
    assert_eq!(rx.truncated(), 2, "{mode:?}");

    // Many frames: the ring wraps around (more frames than it holds).
    out.clear();
    let total = 3000;
    let mut seen = 0;
    let mut batch = PacketBatch::new(64, 1600);
    for i in 0..total {
        out.push(&frame(60, Some((i % 4000) as u16 + 1), i as u8));
        if out.is_full() {
            assert_eq!(tx.send(&out).expect("send"), out.len());
            out.clear();
            seen += recv_ours(&mut rx, &mut batch, 8).len();
        }
    }
    tx.send(&out).expect("send");
    while seen < total {
        let n = recv_ours(&mut rx, &mut batch, 1).len();
        if n == 0 {
            break;
        }
        seen += n;
    }
    assert_eq!(seen, total, "{mode:?}: every frame through the ring");
    assert_eq!(rx.truncated(), 2);
}

#[test]
fn ring_restores_vlan_tags_and_counts_truncation() {
    if !in_veth_netns(|| vlan_restore_and_truncation(RxMode::Ring)) {
        eprintln!("skipped: needs root and iproute2");
    }
}

#[test]
fn recvmmsg_restores_vlan_tags_and_counts_truncation() {
    if !in_veth_netns(|| vlan_restore_and_truncation(RxMode::Recvmmsg)) {
        eprintln!("skipped: needs root and iproute2");
    }
}

use crate::PortId;
use crate::dpif::{Datapath, DpConfig, Miss, MissHandler, MissVerdict, PortRole};
use crate::tunnel::StaticResolver;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

/// Counts the frames from `SRC` that reach the slow path, and drops everything.
struct CountOurs(Arc<AtomicUsize>);

impl MissHandler for CountOurs {
    fn miss(&mut self, miss: Miss<'_>) -> MissVerdict {
        if miss.frame.get(6..12) == Some(&SRC[..]) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        MissVerdict::Dropped
    }
}

/// A datapath with `port` as port 1, and the count of our frames it received.
fn datapath_on(port: AfPacketPort) -> (Datapath, Arc<AtomicUsize>) {
    let ours = Arc::new(AtomicUsize::new(0));
    let mut dp = Datapath::new(
        DpConfig::default(),
        Arc::new(StaticResolver::new()),
        Box::new(CountOurs(ours.clone())),
    );
    dp.add_port(PortId(1), PortRole::Representor, Some(Box::new(port)));
    (dp, ours)
}

/// Waits (2 s at most) until `poll()` reports an error on `fd`; its `revents`.
fn wait_for_pollerr(fd: i32) -> i16 {
    let mut poller = Poller::new(&[fd]);
    let mut ready = Vec::new();
    for _ in 0..20 {
        poller.wait(100, &mut ready).expect("poll");
        if poller.revents(0) & libc::POLLERR != 0 {
            break;
        }
    }
    poller.revents(0)
}

/// What `poll()` reports on `fd` now, without waiting.
fn revents_now(fd: i32) -> i16 {
    let mut poller = Poller::new(&[fd]);
    poller.wait(0, &mut Vec::new()).expect("poll");
    poller.revents(0)
}

fn the_port(dp: &mut Datapath) -> PortStats {
    dp.stats().ports[0].1
}

fn device_deleted_under_the_datapath(mode: RxMode) {
    let port = AfPacketPort::open_with("fdr0", 8, mode).expect("open fdr0");
    let fd = port.raw_fd().expect("fd");
    let (mut dp, _) = datapath_on(port);
    dp.run_once(0, 0).expect("round");
    assert_eq!(dp.poll_set(), vec![PortId(1)]);

    // Deleting the peer deletes the pair. The kernel sets ENETDOWN on the socket:
    // poll() reports POLLERR, a level that stays until the error is read.
    ip("link del fdr1");
    assert_ne!(wait_for_pollerr(fd) & libc::POLLERR, 0, "{mode:?}");
    assert_ne!(
        revents_now(fd) & libc::POLLERR,
        0,
        "{mode:?}: still reported"
    );

    // One round reads the error, sees the binding gone and marks the port down; the
    // next ones leave it out of the poll set. (Frames that arrived before the removal
    // may still poll readable, for ever: another reason it must leave the set.)
    for now in 1..4 {
        assert_eq!(dp.run_once(0, now).expect("round"), 0, "{mode:?}");
    }
    assert_eq!(dp.down_ports(), vec![PortId(1)], "{mode:?}");
    assert!(dp.poll_set().is_empty(), "{mode:?}: out of the poll set");
    assert_eq!(
        revents_now(fd) & libc::POLLERR,
        0,
        "{mode:?}: the error was read"
    );
    let st = the_port(&mut dp);
    assert!(st.down && st.errors >= 1, "{mode:?}: {st:?}");
}

#[test]
fn ring_port_of_a_deleted_device_is_marked_down() {
    if !in_veth_netns(|| device_deleted_under_the_datapath(RxMode::Ring)) {
        eprintln!("skipped: needs root and iproute2");
    }
}

#[test]
fn recvmmsg_port_of_a_deleted_device_is_marked_down() {
    if !in_veth_netns(|| device_deleted_under_the_datapath(RxMode::Recvmmsg)) {
        eprintln!("skipped: needs root and iproute2");
    }
}

fn device_set_down_then_up(mode: RxMode) {
    let port = AfPacketPort::open_with("fdr0", 8, mode).expect("open fdr0");
    let fd = port.raw_fd().expect("fd");
    let mut tx = AfPacketPort::open_with("fdr1", 8, RxMode::Recvmmsg).expect("open fdr1");
    let (mut dp, ours) = datapath_on(port);

    // Down is not gone: the same ENETDOWN, but the socket keeps its binding.
    ip("link set fdr0 down");
    assert_ne!(wait_for_pollerr(fd) & libc::POLLERR, 0, "{mode:?}");
    for now in 0..3 {
        dp.run_once(0, now).expect("round");
    }
    assert!(dp.down_ports().is_empty(), "{mode:?}");
    assert_eq!(revents_now(fd) & libc::POLLERR, 0, "{mode:?}: error read");
    let st = the_port(&mut dp);
    assert!(!st.down && st.errors >= 1, "{mode:?}: {st:?}");

    // Back up, the kernel hooks the socket in again: frames arrive (2 s at most).
    ip("link set fdr0 up");
    let mut out = PacketBatch::new(1, 1600);
    assert!(out.push(&frame(100, None, 7)));
    for now in 3..200 {
        if ours.load(Ordering::Relaxed) > 0 {
            break;
        }
        let _ = tx.send(&out);
        dp.run_once(10, now).expect("round");
    }
    assert!(ours.load(Ordering::Relaxed) > 0, "{mode:?}: received again");
    assert!(dp.down_ports().is_empty(), "{mode:?}");
}

#[test]
fn ring_port_of_a_device_set_down_comes_back() {
    if !in_veth_netns(|| device_set_down_then_up(RxMode::Ring)) {
        eprintln!("skipped: needs root and iproute2");
    }
}

#[test]
fn recvmmsg_port_of_a_device_set_down_comes_back() {
    if !in_veth_netns(|| device_set_down_then_up(RxMode::Recvmmsg)) {
        eprintln!("skipped: needs root and iproute2");
    }
}

#[test]
fn frames_above_the_mtu_the_ring_was_sized_for_come_whole_through_the_socket() {
    let ran = in_veth_netns(|| {
        let port = AfPacketPort::open("fdr0", 8).expect("open fdr0");
        assert_eq!(port.ring_mtu(), Some(1500));
        let mut tx = AfPacketPort::open_with("fdr1", 8, RxMode::Recvmmsg).expect("fdr1");
        let (mut dp, ours) = datapath_on(port);
        let st = the_port(&mut dp);
        assert_eq!(
            (st.ring_mtu, st.ring_frame_size, st.ring_frames),
            (1500, 2048, 1024)
        );

        ip("link set fdr0 mtu 4000");
        ip("link set fdr1 mtu 4000");
        let mut out = PacketBatch::new(1, 4000);
        assert!(out.push(&frame(3000, None, 3)));
        assert_eq!(tx.send(&out).expect("send"), 1);
        for now in 0..20 {
            if ours.load(Ordering::Relaxed) > 0 {
                break;
            }
            dp.run_once(100, now).expect("round");
        }
        let st = the_port(&mut dp);
        assert_eq!((st.rx_truncated, st.rx_large), (0, 1), "{st:?}");
        assert_eq!(ours.load(Ordering::Relaxed), 1, "delivered whole");
        assert_eq!(dp.stats().rx_dropped, 0);
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

#[test]
fn a_full_ring_counts_kernel_drops() {
    let ran = in_veth_netns(|| {
        let mut rx = AfPacketPort::open("fdr0", 8).expect("open fdr0");
        let mut tx = AfPacketPort::open_with("fdr1", 64, RxMode::Recvmmsg).expect("fdr1");
        let ring = rx.stats().ring_frames as usize;
        // More frames than the ring holds, and nobody reading it.
        let mut out = PacketBatch::new(64, 1600);
        let mut sent = 0;
        while sent < ring + 256 {
            out.clear();
            while out.push(&frame(60, None, sent as u8)) {
                sent += 1;
            }
            tx.send(&out).expect("send");
        }
        let mut drops = 0;
        for _ in 0..200 {
            drops = rx.stats().kernel_drops;
            if drops >= 256 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(drops >= 256, "{drops} drops for {sent} frames into {ring}");
        // The kernel resets its counter on every read; the port keeps the sum.
        assert_eq!(rx.stats().kernel_drops, drops);
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

use crate::wire::gso::{self, Layout, Segmenter};
use crate::wire::testutil::{SRC_MAC, tcp_frame};
use crate::wire::{Gso, GsoKind};

/// Receives on `port` until `want` frames from the test frames' source MAC arrived
/// (2 s at most), with their metadata.
pub(super) fn recv_tcp(port: &mut AfPacketPort, want: usize) -> Vec<(Vec<u8>, Offload)> {
    let mut batch = PacketBatch::new(16, gso::MAX_FRAME);
    let mut got = Vec::new();
    let mut poller = Poller::new(&[port.raw_fd().expect("fd")]);
    let mut ready = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while got.len() < want && std::time::Instant::now() < deadline {
        poller.wait(100, &mut ready).expect("poll");
        batch.clear();
        port.recv(&mut batch).expect("recv");
        got.extend(
            batch
                .iter_offload()
                .filter(|(p, _)| p.get(6..12) == Some(&SRC_MAC[..]))
                .map(|(p, o)| (p.to_vec(), o)),
        );
    }
    got
}

/// A TSO super-frame as a VM hands it over (checksum partial, metadata), and the
/// frame with its checksum whole.
pub(super) fn tso(
    v6: bool,
    tags: &[(u16, u16)],
    payload: usize,
    fl: u16,
    size: u16,
) -> (Vec<u8>, Vec<u8>, Offload) {
    let whole = tcp_frame(v6, tags, payload, fl);
    let mut f = whole.clone();
    let lay = Layout::parse(&f).expect("layout");
    let c = gso::prepare_partial(&mut f, &lay).expect("partial");
    let o = Offload {
        csum: Some(c),
        gso: Some(Gso {
            kind: if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 },
            size,
            ecn: fl & crate::wire::tcp::flags::CWR != 0,
            tunnel: None,
        }),
        hdr_len: lay.header_len() as u16,
        ..Offload::NONE
    };
    (f, whole, o)
}

pub(super) fn ethtool(args: &str) {
    let ok = std::process::Command::new("ethtool")
        .args(args.split(' '))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ethtool {args}");
}

fn super_frames_arrive_whole(mode: RxMode) {
    let mut rx = AfPacketPort::open_with("fdr0", 16, mode).expect("open fdr0");
    let mut tx = AfPacketPort::open_with("fdr1", 16, RxMode::Recvmmsg).expect("fdr1");
    assert!(rx.offloads() && tx.offloads(), "vnet headers");
    let (f, _, o) = tso(
        false,
        &[(0x8100, 12)],
        40_000,
        crate::wire::tcp::flags::ACK,
        1448,
    );
    let (g, _, p) = tso(true, &[], 3_000, crate::wire::tcp::flags::ACK, 1428);
    let mut out = PacketBatch::new(4, gso::MAX_FRAME);
    assert!(out.push_offload(&f, o) && out.push_offload(&g, p));
    assert_eq!(tx.send(&out).expect("send"), 2);
    // And one sent at once from two buffers, as the datapath hands over a super-frame.
    assert!(tx.sends_direct());
    assert!(
        tx.send_direct(&[&f[..30], &f[30..]], o)
            .expect("send_direct")
    );
    let got = recv_tcp(&mut rx, 3);
    // The header length is a hint: the kernel reports its linear part (a frame under
    // a page is all linear).
    let meta: Vec<_> = got.iter().map(|(b, m)| (b.len(), m.csum, m.gso)).collect();
    let sent = vec![
        (f.len(), o.csum, o.gso),
        (g.len(), p.csum, p.gso),
        (f.len(), o.csum, o.gso),
    ];
    assert_eq!(meta, sent, "{mode:?}: the metadata");
    assert!(
        got[0].0 == f && got[1].0 == g && got[2].0 == f,
        "{mode:?}: whole and untouched"
    );
    let st = rx.stats();
    assert_eq!(st.rx_truncated, 0, "{mode:?}");
    assert_eq!(st.rx_gso, 3, "{mode:?}");
    if mode == RxMode::Ring {
        assert_eq!(st.rx_large, 3, "past the 2 KiB ring frames");
    }
}

#[test]
fn ring_receives_super_frames_whole_with_their_metadata() {
    if !in_veth_netns(|| super_frames_arrive_whole(RxMode::Ring)) {
        eprintln!("skipped: needs root and iproute2");
    }
}

#[test]
fn recvmmsg_receives_super_frames_whole_with_their_metadata() {
    if !in_veth_netns(|| super_frames_arrive_whole(RxMode::Recvmmsg)) {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// The kernel's segmentation against flowd's: super-frames sent with a vnet header
/// out of `fdr1`, whose TSO and checksum offload are off (the kernel segments them
/// in software and completes every checksum), arrive on `fdr0` (GRO off) as
/// segments, which must be byte for byte what [`Segmenter`] makes of the same
/// super-frames: IPv4 and IPv6, tagged or not, payloads and segment sizes and flags
/// drawn at random (a fixed seed).
#[test]
fn software_segmentation_matches_the_kernels() {
    let ran = in_veth_netns(|| {
        ethtool("-K fdr1 tx off tso off");
        ethtool("-K fdr0 gro off");
        let mut rx = AfPacketPort::open_with("fdr0", 64, RxMode::Ring).expect("open fdr0");
        let mut tx = AfPacketPort::open_with("fdr1", 4, RxMode::Recvmmsg).expect("fdr1");
        let mut x: u64 = 0x5eed_1234_abcd_0001;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        use crate::wire::tcp::flags::{ACK, CWR, ECE, FIN, PSH};
        let mut out = PacketBatch::new(1, gso::MAX_FRAME);
        let mut scratch = vec![0u8; gso::MAX_FRAME];
        for case in 0..24 {
            let v6 = rnd(2) == 1;
            let tags: &[(u16, u16)] = if rnd(3) == 0 { &[(0x8100, 77)] } else { &[] };
            let payload = 1 + rnd(30_000) as usize;
            let max = if v6 { 1428 } else { 1448 };
            let size = 200 + rnd(max - 199) as u16;
            let mut fl = ACK;
            for f in [CWR, ECE, PSH, FIN] {
                if rnd(2) == 1 {
                    fl |= f;
                }
            }
            let (f, whole, o) = tso(v6, tags, payload, fl, size);
            let mut ours = Vec::new();
            let mut seg =
                Segmenter::new(&whole, o.gso.unwrap().kind, usize::from(size)).expect("segmenter");
            seg.for_each(&mut scratch, &mut |s| {
                ours.push(s.to_vec());
                true
            })
            .expect("segments");
            out.clear();
            assert!(out.push_offload(&f, o));
            assert_eq!(tx.send(&out).expect("send"), 1, "case {case}");
            let theirs: Vec<Vec<u8>> = recv_tcp(&mut rx, ours.len())
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            assert_eq!(theirs.len(), ours.len(), "case {case}: segment count");
            for (i, (a, b)) in theirs.iter().zip(&ours).enumerate() {
                assert!(
                    a == b,
                    "case {case} (v6 {v6}, tags {tags:?}, payload {payload}, size {size}, \
                     flags {fl:#x}): segment {i} differs\nkernel {:02x?}\nflowd  {:02x?}",
                    &a[..a.len().min(90)],
                    &b[..b.len().min(90)]
                );
            }
        }
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

#[test]
fn kernel_releases_compare_by_major_and_minor() {
    assert!(release_at_least("6.18.44-fc-v1045", 6, 2));
    assert!(release_at_least("6.2.0", 6, 2));
    assert!(!release_at_least("6.1.0-28-amd64", 6, 2));
    assert!(!release_at_least("5.10.0", 6, 2));
    assert!(release_at_least("10.0", 6, 2));
    assert!(!release_at_least("", 6, 2));
    assert!(!release_at_least("six", 6, 2));
}

/// What VXLAN output relies on where the kernel has it (Linux 6.2): one UDP
/// datagram of VXLAN units, sent with `VIRTIO_NET_HDR_GSO_UDP_L4` and a partial UDP
/// checksum, reaches the peer's UDP socket as one datagram per unit, each with a
/// valid checksum (the socket would drop a bad one) and its own VXLAN header.
#[test]
fn a_udp_super_frame_reaches_the_peer_as_its_vxlan_datagrams() {
    use crate::wire::vxlan;
    use crate::wire::{Gso, GsoKind};
    let ran = in_veth_netns(|| {
        ip("addr add 10.99.0.1/24 dev fdr0");
        let sock = std::net::UdpSocket::bind("10.99.0.1:4789").expect("bind 4789");
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let rx = AfPacketPort::open_with("fdr0", 4, RxMode::Recvmmsg).expect("fdr0");
        let mut tx = AfPacketPort::open_with("fdr1", 4, RxMode::Recvmmsg).expect("fdr1");
        assert!(
            tx.udp_segmentation(),
            "this kernel takes UDP_L4 through AF_PACKET"
        );
        let outer = outer_v4(tx.mac(), rx.mac());
        // Three units of 1000 bytes and a last one of 300: VXLAN header + payload.
        let unit = 1000;
        let lens = [unit, unit, unit, 300];
        let over = vxlan::VXLAN_OVERHEAD_V4;
        let first = over - vxlan::HEADER_LEN;
        let mut f = vec![0u8; first + lens.iter().sum::<usize>()];
        let mut at = first;
        for (i, &n) in lens.iter().enumerate() {
            vxlan::emit_header(&mut f[at..], 42 + i as u32).unwrap();
            f[at + 8..at + n].fill(0x30 + i as u8);
            at += n;
        }
        let inner_len = f.len() - over;
        let (n, csum) =
            vxlan::encapsulate_for_segmentation(&mut f, inner_len, &outer).expect("headers");
        assert_eq!(n, f.len());
        let mut batch = PacketBatch::new(1, f.len());
        let o = Offload {
            csum: Some(csum),
            csum_valid: false,
            gso: Some(Gso {
                kind: GsoKind::Udp,
                size: unit as u16,
                ecn: false,
                tunnel: None,
            }),
            hdr_len: first as u16,
        };
        assert!(batch.push_offload(&f, o));
        assert_eq!(tx.send(&batch).expect("send"), 1);
        assert!(tx.udp_segmentation(), "still taken after a send");
        let mut buf = [0u8; 2048];
        for (i, &n) in lens.iter().enumerate() {
            let got = sock.recv(&mut buf).expect("a datagram per unit");
            assert_eq!(got, n, "unit {i}");
            let h = &buf[..8];
            assert_eq!(h, &[0x08, 0, 0, 0, 0, 0, 42 + i as u8, 0], "unit {i}");
            assert!(buf[8..n].iter().all(|&b| b == 0x30 + i as u8), "unit {i}");
        }
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// A canary for the kernel fact VXLAN output relies on: AF_PACKET offers no
/// UDP-tunnel GSO (Linux 6.18). A vnet header with `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4`
/// (0x20) or `_IPV6` (0x40) on top of TCPv4 is refused with `EINVAL`, and
/// `PACKET_VNET_HDR_SZ` takes no 24-byte header (the one that carries the tunnel
/// offsets for tun and virtio-net). If this test fails, the running kernel offers it:
/// flowd could hand VXLAN super-frames to the kernel instead of segmenting them.
#[test]
fn the_kernel_offers_no_udp_tunnel_gso_through_af_packet() {
    let ran = in_veth_netns(|| {
        let tx = AfPacketPort::open_with("fdr1", 4, RxMode::Recvmmsg).expect("fdr1");
        let fd = tx.raw_fd().expect("fd");
        const PACKET_VNET_HDR_SZ: libc::c_int = 24;
        let e = setsockopt_int(fd, PACKET_VNET_HDR_SZ, 24).expect_err("24-byte header");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let (f, _, o) = tso(false, &[], 5000, crate::wire::tcp::flags::ACK, 1448);
        for tunnel in [0x20u8, 0x40] {
            let mut msg = o.to_bytes().to_vec();
            msg[1] |= tunnel;
            msg.extend_from_slice(&f);
            // SAFETY: sends `msg`, a live buffer of its length, on our socket.
            let r = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
            let e = io::Error::last_os_error();
            assert!(r < 0, "gso_type {:#x} accepted", msg[1]);
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        }
        // The plain TCPv4 GSO header is taken.
        let mut msg = o.to_bytes().to_vec();
        msg.extend_from_slice(&f);
        // SAFETY: as above.
        let r = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
        assert_eq!(r, msg.len() as isize);
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// A VXLAN frame whose inner TCP super-frame is to be cut, written to a
/// [`TunnelInjector`] with its 24-byte header: the kernel takes it (Linux 6.17 or later;
/// skipped before) and it enters the tap whole, one skb, as a packet socket on the tap
/// sees it: the inner GSO type and size, the checksum start at the inner TCP header.
#[test]
fn a_udp_tunnel_super_frame_enters_the_tap_whole() {
    let ran = in_veth_netns(|| {
        let mut inj = match TunnelInjector::open(TapMode::Inline) {
            Ok(i) => i,
            Err(e) if TunnelInjector::is_unsupported(&e) => {
                eprintln!("skipped: no UDP-tunnel segmentation for tun here ({e})");
                return;
            }
            Err(e) => panic!("tap: {e}"),
        };
        assert!(inj.name().starts_with("flowdgso"), "{}", inj.name());
        let mut rx = AfPacketPort::open_with(inj.name(), 16, RxMode::Recvmmsg).expect("tap");
        let (inner, _, o) = tso(false, &[], 20_000, crate::wire::tcp::flags::ACK, 1448);
        let outer = outer_v4(SRC_MAC, [2, 0, 0, 0, 0, 9]);
        let mut hdr = [0u8; 70];
        let n = crate::wire::vxlan::tunnel_segmentation_headers(&mut hdr, inner.len(), &outer)
            .expect("headers");
        let g = o.gso.unwrap();
        let t = behind_vxlan_v4(o, n);
        inj.write_parts(&[&hdr[..n], &inner], &t)
            .expect("the kernel takes it");
        let got = recv_tcp(&mut rx, 1);
        assert_eq!(got.len(), 1, "one frame, whole");
        let (frame, m) = &got[0];
        assert_eq!(&frame[..n], &hdr[..n]);
        assert_eq!(&frame[n..], &inner[..]);
        assert_eq!(m.gso.map(|x| (x.kind, x.size)), Some((g.kind, g.size)));
        assert_eq!(m.csum, t.csum, "the inner TCP checksum, partial");
        // Metadata the kernel refuses: a tunnel flag without NEEDS_CSUM.
        let bad = Offload { csum: None, ..t };
        let e = inj
            .write_parts(&[&hdr[..n], &inner], &bad)
            .expect_err("refused");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// The metadata of an inner TSO super-frame `o` sent behind `n` bytes of VXLAN over
/// IPv4 (no outer UDP checksum), as VXLAN output describes the cut to the tap.
fn behind_vxlan_v4(o: Offload, n: usize) -> Offload {
    let c = o.csum.expect("a partial checksum");
    Offload {
        csum: Some(crate::wire::PartialCsum {
            start: c.start + n as u16,
            offset: c.offset,
        }),
        gso: Some(Gso {
            tunnel: Some(crate::wire::TunnelGso {
                outer_l4: 34,
                inner_l3: 64,
                outer_v6: false,
                outer_csum: false,
            }),
            ..o.gso.expect("a super-frame")
        }),
        hdr_len: o.hdr_len + n as u16,
        ..o
    }
}

/// Mounts a sysfs of the calling thread's network namespace on /sys, in a mount
/// namespace of the thread's own, as `ip netns exec` does: /sys/class/net then shows
/// this namespace's devices. False where it cannot.
fn own_sysfs() -> bool {
    // SAFETY: unshare moves only the calling thread (a test's own) into a new mount
    // namespace; the mounts change only that namespace's view, with valid C strings.
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                c"sysfs".as_ptr(),
                c"/sys".as_ptr(),
                c"sysfs".as_ptr(),
                0,
                std::ptr::null(),
            ) == 0
    }
}

/// A threaded tap ([`TapMode::Threaded`]) carries its frames in a kernel thread, later
/// than frames sent on the socket after them: a connection's small frame sent after its
/// super-frame must go through the tap too, and arrive after it; another connection's
/// does not. Where sysfs shows another namespace's devices, the tap falls back to
/// inline instead of touching a device of the same name there.
#[test]
fn a_threaded_tap_keeps_each_connections_frames_in_order() {
    let ran = in_veth_netns(|| {
        let host_sysfs = TunnelInjector::open(TapMode::Threaded);
        if let Ok(i) = &host_sysfs {
            assert_eq!(
                i.mode(),
                TapMode::Inline,
                "the host's sysfs is not this netns'"
            );
        }
        drop(host_sysfs);
        assert!(own_sysfs(), "a mount namespace with this netns' sysfs");
        let inj = match TunnelInjector::open(TapMode::Threaded) {
            Ok(i) => i,
            Err(e) if TunnelInjector::is_unsupported(&e) => {
                eprintln!("skipped: no UDP-tunnel segmentation for tun here ({e})");
                return;
            }
            Err(e) => panic!("tap: {e}"),
        };
        assert_eq!(inj.mode(), TapMode::Threaded);
        let tap = inj.name().to_string();
        let sys = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{tap}/{f}"))
                .expect("sysfs")
                .trim()
                .to_string()
        };
        assert_eq!(sys("threaded"), "1");
        assert_eq!(sys("mtu"), "65521", "any frame the uplink takes");
        for cmd in [
            format!("qdisc add dev {tap} ingress"),
            format!(
                "filter add dev {tap} ingress protocol all u32 match u32 0 0 action mirred egress redirect dev fdr1"
            ),
        ] {
            let ok = std::process::Command::new("tc")
                .args(cmd.split(' '))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "tc {cmd}");
        }
        let mut rx = AfPacketPort::open_with("fdr0", 16, RxMode::Recvmmsg).expect("fdr0");
        let mut tx = AfPacketPort::open_with("fdr1", 16, RxMode::Recvmmsg).expect("fdr1");
        tx.set_tunnel_injector(inj);
        let outer = |udp_src| crate::wire::vxlan::OuterHeaders {
            udp_src,
            ..outer_v4(SRC_MAC, [2, 0, 0, 0, 0, 9])
        };
        let vxlan = |inner: &[u8], udp_src| {
            let mut f = vec![0u8; 50];
            let n = crate::wire::vxlan::tunnel_segmentation_headers(
                &mut f,
                inner.len(),
                &outer(udp_src),
            )
            .expect("headers");
            f.truncate(n);
            f.extend_from_slice(inner);
            f
        };
        let (inner, _, o) = tso(false, &[], 20_000, crate::wire::tcp::flags::ACK, 1448);
        let sup = behind_vxlan_v4(o, 50);
        let small = tcp_frame(false, &[], 100, crate::wire::tcp::flags::ACK);
        let (a_super, a_small, b_small) = (
            vxlan(&inner, 50000),
            vxlan(&small, 50000),
            vxlan(&small, 50001),
        );
        assert!(!tx.for_tap(&a_small, &Offload::NONE), "nothing carried yet");
        let mut out = PacketBatch::new(4, gso::MAX_FRAME);
        assert!(out.push_offload(&a_super, sup));
        assert!(out.push(&a_small) && out.push(&b_small));
        assert_eq!(tx.send(&out).expect("send"), 3);
        assert!(
            tx.for_tap(&a_small, &Offload::NONE),
            "the connection's frames follow"
        );
        assert!(
            !tx.for_tap(&b_small, &Offload::NONE),
            "another connection's do not"
        );
        let got: Vec<Vec<u8>> = recv_tcp(&mut rx, 3).into_iter().map(|(f, _)| f).collect();
        let at = |f: &[u8]| got.iter().position(|g| g == f);
        let (sup_at, small_at) = (at(&a_super), at(&a_small));
        assert!(
            sup_at.is_some() && small_at.is_some() && at(&b_small).is_some(),
            "all arrive"
        );
        assert!(
            sup_at < small_at,
            "the connection's small frame after its super-frame"
        );
        assert_eq!(
            sys("statistics/rx_packets"),
            "2",
            "both of its frames through the tap"
        );
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// VXLAN over IPv4 from `src` to `dst` (10.99.0.2 -> 10.99.0.1, VNI 42, DF, no outer
/// UDP checksum).
fn outer_v4(src: [u8; 6], dst: [u8; 6]) -> crate::wire::vxlan::OuterHeaders {
    crate::wire::vxlan::OuterHeaders {
        src_mac: src,
        dst_mac: dst,
        src_ip: "10.99.0.2".parse().unwrap(),
        dst_ip: "10.99.0.1".parse().unwrap(),
        tos: 0,
        ttl: 64,
        df: true,
        ident: 7,
        udp_src: 50000,
        udp_dst: 4789,
        vni: 42,
        udp_csum: false,
    }
}
