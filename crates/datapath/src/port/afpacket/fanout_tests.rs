//! Tests of `PACKET_FANOUT` groups on a veth pair in a fresh network namespace (skipped
//! without root): each frame reaches exactly one socket of the group, a flow stays on
//! one socket, and what the group's sockets transmit never comes back to them.

use super::tests::in_veth_netns;
use super::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const SRC: [u8; 6] = [0x02, 0xfd, 0, 0, 0, 7];
const DST: [u8; 6] = [0x02, 0xfd, 0, 0, 0, 8];

/// An IPv4 UDP frame from `SRC` of flow `flow` (its source port) carrying `seq`.
fn udp_frame(flow: u16, seq: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&DST);
    f.extend_from_slice(&SRC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20u16 + 8 + 4).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 9, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 9, 0, 2]);
    let sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!((folded + (folded >> 16)) as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&(10_000 + flow).to_be_bytes());
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&12u16.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(64, 0);
    f
}

/// (flow, seq) of one of our frames.
fn parse(frame: &[u8]) -> Option<(u16, u32)> {
    if frame.get(6..12) != Some(&SRC[..]) {
        return None;
    }
    let port = u16::from_be_bytes(frame.get(34..36)?.try_into().ok()?);
    let seq = u32::from_be_bytes(frame.get(42..46)?.try_into().ok()?);
    Some((port - 10_000, seq))
}

/// Sends `frames` from `port`, a batch at a time, until all are taken (5 s at most).
fn send_all(port: &mut AfPacketPort, frames: &[Vec<u8>]) {
    let mut batch = PacketBatch::new(32, 2048);
    let deadline = Instant::now() + Duration::from_secs(5);
    for chunk in frames.chunks(32) {
        batch.clear();
        for f in chunk {
            assert!(batch.push(f));
        }
        let mut sent = 0;
        while sent == 0 && Instant::now() < deadline {
            sent = port.send(&batch).expect("send");
        }
        assert_eq!(sent, chunk.len(), "the kernel took the whole batch");
        // Let the receiving rings keep up (the kernel drops what does not fit).
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Reads every socket until `want` of our frames arrived in all or the deadline; the
/// (flow, seq) each socket got.
fn drain(ports: &mut [AfPacketPort], want: usize, wait: Duration) -> Vec<Vec<(u16, u32)>> {
    let mut got = vec![Vec::new(); ports.len()];
    let mut batch = PacketBatch::new(32, 2048);
    let deadline = Instant::now() + wait;
    while got.iter().map(Vec::len).sum::<usize>() < want && Instant::now() < deadline {
        for (i, p) in ports.iter_mut().enumerate() {
            batch.clear();
            p.recv(&mut batch).expect("recv");
            got[i].extend(batch.iter().filter_map(parse));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

fn each_frame_once(ignore_outgoing: bool) {
    let ran = in_veth_netns(move || {
        let opts = PortOptions::default();
        let mut group = AfPacketPort::open_group("fdr0", opts, 2, ignore_outgoing).expect("group");
        assert_eq!(group.len(), 2);
        let id = group[0].fanout_group();
        assert!(id.is_some() && id == group[1].fanout_group(), "one group");
        let mut peer = AfPacketPort::open("fdr1", 32).expect("peer");
        // 200 flows, 10 frames each, interleaved.
        let frames: Vec<Vec<u8>> = (0..2000u32)
            .map(|seq| udp_frame((seq % 200) as u16, seq))
            .collect();
        // Sent a ring's worth at a time, read in between (a ring holds 1024 frames).
        let mut got = vec![Vec::new(); 2];
        for chunk in frames.chunks(500) {
            send_all(&mut peer, chunk);
            let part = drain(&mut group, chunk.len(), Duration::from_secs(5));
            for (g, p) in got.iter_mut().zip(part) {
                g.extend(p);
            }
        }
        let mut seen = HashSet::new();
        let mut owner: HashMap<u16, usize> = HashMap::new();
        for (i, frames) in got.iter().enumerate() {
            for &(flow, seq) in frames {
                assert!(seen.insert(seq), "frame {seq} received twice");
                let o = *owner.entry(flow).or_insert(i);
                assert_eq!(o, i, "flow {flow} on two sockets");
            }
        }
        assert_eq!(seen.len(), frames.len(), "every frame received");
        assert!(
            got.iter().all(|g| g.len() > 200),
            "both sockets share the flows: {:?}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let drops: u64 = group.iter_mut().map(|p| p.stats().kernel_drops).sum();
        assert_eq!(drops, 0);

        // What the members transmit reaches the peer, and neither it nor what the host
        // transmits on the device (here another socket, outside the group) comes back
        // to the group.
        let mut host = AfPacketPort::open("fdr0", 32).expect("host");
        let out =
            |base: u32| -> Vec<Vec<u8>> { (0..100).map(|s| udp_frame(7, base + s)).collect() };
        send_all(&mut group[0], &out(100_000));
        send_all(&mut group[1], &out(200_000));
        send_all(&mut host, &out(300_000));
        let back = drain(&mut group, 300, Duration::from_millis(300));
        assert!(
            back.iter().all(Vec::is_empty),
            "outgoing came back: {back:?}"
        );
        let at_peer = drain(std::slice::from_mut(&mut peer), 300, Duration::from_secs(2));
        assert_eq!(
            at_peer[0].len(),
            300,
            "transmitted by both members and the host"
        );
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}

#[test]
fn a_fanout_group_receives_each_frame_once_and_keeps_each_flow_on_one_socket() {
    each_frame_once(true);
}

#[test]
fn without_the_kernels_ignore_outgoing_flag_a_filter_keeps_outgoing_frames_out() {
    each_frame_once(false);
}

#[test]
fn one_socket_is_no_group_and_too_many_is_an_error() {
    let ran = in_veth_netns(|| {
        let one = AfPacketPort::open_fanout("fdr0", PortOptions::default(), 1).expect("one");
        assert_eq!((one.len(), one[0].fanout_group()), (1, None));
        let e = AfPacketPort::open_fanout("fdr0", PortOptions::default(), MAX_FANOUT + 1)
            .err()
            .expect("too many");
        assert!(e.to_string().contains("at most 64"), "{e}");
    });
    if !ran {
        eprintln!("skipped: needs root and iproute2");
    }
}
