//! Tests of the transmit ring: its geometry and which frames it takes, and real sockets
//! on veth pairs in fresh network namespaces (skipped without root): frames arrive byte
//! for byte, super-frames with their metadata are segmented by the kernel, more frames
//! than the ring holds in one batch, a device set down and one deleted.

use super::tests::{SRC, ethtool, frame, in_veth_netns, ip, recv_ours, recv_tcp, tso};
use super::txring::{TX_RING_FRAMES, ring_takes, tx_ring_geometry};
use super::*;
use crate::wire::gso::{self, Segmenter};
use crate::wire::tcp::flags::ACK;
use crate::wire::{Gso, GsoKind, PartialCsum};

#[test]
fn tx_ring_geometry_holds_an_mtu_frame_and_its_vnet_header() {
    for (mtu, frame_size) in [(1500, 2048), (9000, 12288), (65535, 69632)] {
        let r = tx_ring_geometry(mtu, 4096);
        assert_eq!(r.tp_frame_size, frame_size, "mtu {mtu}");
        assert!(r.tp_frame_nr as usize >= TX_RING_FRAMES, "mtu {mtu}");
        assert_eq!(r.tp_block_size % 4096, 0, "mtu {mtu}");
        assert_eq!(r.tp_block_size % r.tp_frame_size, 0, "mtu {mtu}");
        let per_block = r.tp_block_size / r.tp_frame_size;
        assert_eq!(r.tp_frame_nr, per_block * r.tp_block_nr, "mtu {mtu}");
        assert!(TX_DATA_OFFSET + 10 + mtu as usize + 14 + 8 <= frame_size as usize);
    }
    // 256 frames of 2 KiB: 512 KiB per port at MTU 1500.
    let r = tx_ring_geometry(1500, 4096);
    assert_eq!((r.tp_frame_nr, r.tp_block_nr), (256, 8));
}

#[test]
fn the_ring_leaves_udp_super_frames_oversized_and_odd_frames_to_sendmmsg() {
    let none = Offload::NONE;
    assert!(ring_takes(60, &none, 1500));
    assert!(ring_takes(1518, &none, 1500), "one VLAN tag over the MTU");
    assert!(!ring_takes(1519, &none, 1500), "kernel says EMSGSIZE");
    assert!(!ring_takes(13, &none, 1500), "no Ethernet header");
    let gso = |kind| Offload {
        gso: Some(Gso {
            kind,
            size: 500,
            ecn: false,
            tunnel: None,
        }),
        ..Offload::NONE
    };
    assert!(ring_takes(1800, &gso(GsoKind::TcpV4), 1500));
    assert!(!ring_takes(1800, &gso(GsoKind::Udp), 1500));
    let csum = |start, offset| Offload {
        csum: Some(PartialCsum { start, offset }),
        ..Offload::NONE
    };
    assert!(ring_takes(100, &csum(34, 16), 1500));
    assert!(ring_takes(52, &csum(34, 16), 1500), "ends on the last byte");
    assert!(!ring_takes(51, &csum(34, 16), 1500), "kernel says EINVAL");
}

fn open_ring(name: &str, batch: usize) -> AfPacketPort {
    let p = AfPacketPort::open(name, batch).expect("open");
    assert_eq!(p.tx_mode(), TxMode::Ring, "{:?}", p.tx_ring_error());
    p
}

/// Frames of every size from the smallest to the MTU's (tagged or not) sent through the
/// ring arrive byte for byte, in order; the port counts them as the ring's.
#[test]
fn frames_sent_through_the_ring_arrive_byte_exact() {
    let ran = in_veth_netns(|| {
        let mut rx = AfPacketPort::open_with("fdr0", 64, RxMode::Ring).expect("fdr0");
        let mut tx = open_ring("fdr1", 64);
        let mut out = PacketBatch::new(64, 1600);
        let mut want = Vec::new();
        for (k, len) in [14, 60, 64, 114, 333, 1000, 1514, 1518]
            .into_iter()
            .enumerate()
        {
            let vid = (k % 3 == 0 && len >= 18).then_some(100 + k as u16);
            let f = frame(len, vid, 0x11 * k as u8);
            assert!(out.push(&f));
            want.push(f);
        }
        assert_eq!(tx.send(&out).expect("send"), want.len());
        assert_eq!(tx.tx_ring_sent(), want.len() as u64, "all through the ring");
        let mut batch = PacketBatch::new(64, 1600);
        let got = recv_ours(&mut rx, &mut batch, want.len());
        assert_eq!(got, want);
        assert_eq!(tx.stats().tx_dropped, 0);
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// TCP super-frames with their vnet metadata (partial checksum, GSO type and size):
/// one small enough for a ring frame goes through the ring, one of 30 KB through
/// `sendmmsg`; `fdr1` has no TSO, so the kernel segments both in software, and the
/// segments are byte for byte flowd's own segmentation, in order.
#[test]
fn super_frames_through_the_ring_are_segmented_by_the_kernel() {
    let ran = in_veth_netns(|| {
        ethtool("-K fdr1 tx off tso off");
        ethtool("-K fdr0 gro off");
        let mut rx = AfPacketPort::open_with("fdr0", 64, RxMode::Ring).expect("fdr0");
        let mut tx = open_ring("fdr1", 8);
        let mut out = PacketBatch::new(4, gso::MAX_FRAME);
        let mut want = Vec::new();
        for (v6, payload, size) in [(false, 1200, 400), (true, 30_000, 1400), (false, 900, 300)] {
            let (f, whole, o) = tso(v6, &[], payload, ACK, size);
            assert!(out.push_offload(&f, o));
            let kind = o.gso.expect("gso").kind;
            let mut seg = Segmenter::new(&whole, kind, usize::from(size)).expect("segmenter");
            let mut scratch = vec![0u8; gso::MAX_FRAME];
            seg.for_each(&mut scratch, &mut |s| {
                want.push(s.to_vec());
                true
            })
            .expect("segments");
        }
        assert_eq!(tx.send(&out).expect("send"), 3);
        assert_eq!(tx.tx_ring_sent(), 2, "the two small ones through the ring");
        let got: Vec<Vec<u8>> = recv_tcp(&mut rx, want.len())
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(got.len(), want.len(), "segment count");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a == b, "segment {i} differs");
        }
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// One batch of more frames than the ring has: the port flushes when it finds the head
/// frame still the kernel's and carries on; every frame is either delivered or counted
/// as dropped, and those delivered come in order.
#[test]
fn a_batch_larger_than_the_ring_is_sent_or_counted() {
    let ran = in_veth_netns(|| {
        let n = 3 * TX_RING_FRAMES + 17;
        let mut rx = AfPacketPort::open_opts(
            "fdr0",
            PortOptions {
                batch: 64,
                ring_bytes: 8 << 20,
                ..PortOptions::default()
            },
        )
        .expect("fdr0");
        let mut tx = open_ring("fdr1", 64);
        let mut out = PacketBatch::new(n, 128);
        for k in 0..n {
            let mut f = frame(100, None, 0);
            f[14..16].copy_from_slice(&(k as u16).to_be_bytes());
            assert!(out.push(&f));
        }
        let sent = tx.send(&out).expect("send");
        let dropped = tx.stats().tx_dropped as usize;
        assert_eq!(sent + dropped, n, "sent {sent} dropped {dropped}");
        assert!(sent > TX_RING_FRAMES, "the ring was reused: {sent}");
        let mut batch = PacketBatch::new(64, 1600);
        let got = recv_ours(&mut rx, &mut batch, sent);
        assert_eq!(got.len(), sent);
        let seq: Vec<u16> = got
            .iter()
            .map(|p| u16::from_be_bytes([p[14], p[15]]))
            .collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "in order");
        // The ring is whole again: one more batch goes through.
        out.clear();
        assert!(out.push(&frame(64, None, 9)));
        assert_eq!(tx.send(&out).expect("send"), 1);
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// A device set down: the ring's frames are dropped and counted, the port stays up and
/// sends again once the device is back; deleted: the port fails with a device-gone
/// error and counts the batch.
#[test]
fn the_ring_on_a_device_set_down_then_deleted() {
    let ran = in_veth_netns(|| {
        let mut tx = open_ring("fdr1", 8);
        let mut out = PacketBatch::new(4, 1600);
        for k in 0..4 {
            assert!(out.push(&frame(80, None, k)));
        }
        ip("link set fdr1 down");
        assert_eq!(tx.send(&out).expect("down is not gone"), 0);
        let st = tx.stats();
        assert_eq!(st.tx_dropped, 4);
        assert!(!st.down);
        ip("link set fdr1 up");
        assert_eq!(tx.send(&out).expect("up again"), 4);

        ip("link del fdr1");
        let e = tx.send(&out).expect_err("gone");
        assert!(e.is_device_gone(), "{e}");
        let st = tx.stats();
        assert_eq!(st.tx_dropped, 8);
        assert!(st.down);
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

/// `FLOWD_TX` and [`PortOptions::tx`] choose `sendmmsg`: no ring, frames still go.
#[test]
fn sendmmsg_mode_has_no_ring() {
    assert_eq!(TxMode::from_env(TxMode::Ring), TxMode::Ring);
    let ran = in_veth_netns(|| {
        let mut rx = AfPacketPort::open_with("fdr0", 8, RxMode::Ring).expect("fdr0");
        let mut tx = AfPacketPort::open_opts(
            "fdr1",
            PortOptions {
                tx: TxMode::Sendmmsg,
                ..PortOptions::default()
            },
        )
        .expect("fdr1");
        assert_eq!((tx.tx_mode(), tx.tx_ring_frames()), (TxMode::Sendmmsg, 0));
        let mut out = PacketBatch::new(2, 1600);
        let f = frame(70, None, 3);
        assert!(out.push(&f));
        assert_eq!(tx.send(&out).expect("send"), 1);
        assert_eq!(tx.tx_ring_sent(), 0);
        let mut batch = PacketBatch::new(8, 1600);
        assert_eq!(recv_ours(&mut rx, &mut batch, 1), vec![f]);
        assert_eq!(SRC, [0x02, 0xfd, 0, 0, 0, 1]);
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}
