//! [`MemPort`]: a port backed by in-memory queues, for tests and benchmarks.

use super::{PacketBatch, Port, PortError, PortStats};
use crate::IfIndex;
use crate::wire::Offload;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
struct Queues {
    rx: VecDeque<(Vec<u8>, Offload)>,
    tx: Vec<(Vec<u8>, Offload)>,
    /// Every `recv` fails with this (see [`MemPortHandle::fail_recv`]).
    fail_recv: Option<io::ErrorKind>,
    /// Every `send` fails with this.
    fail_send: Option<io::ErrorKind>,
    /// Calls of `recv`.
    recvs: u64,
    stats: PortStats,
}

/// An in-memory port. Its [`MemPortHandle`] injects packets (what the port receives) and
/// collects what the datapath sent out of it.
#[derive(Debug)]
pub struct MemPort {
    name: String,
    mtu: u32,
    offloads: bool,
    udp_segmentation: bool,
    tunnel_segmentation: bool,
    q: Arc<Mutex<Queues>>,
}

/// The test side of a [`MemPort`].
#[derive(Debug, Clone)]
pub struct MemPortHandle {
    q: Arc<Mutex<Queues>>,
}

impl MemPort {
    /// A port named `name` with the given MTU, and its handle.
    pub fn new(name: &str, mtu: u32) -> (Self, MemPortHandle) {
        let q = Arc::new(Mutex::new(Queues::default()));
        (
            Self {
                name: name.to_string(),
                mtu,
                offloads: false,
                udp_segmentation: false,
                tunnel_segmentation: false,
                q: q.clone(),
            },
            MemPortHandle { q },
        )
    }

    /// As [`Self::new`], for a port that takes frames with offload metadata on transmit
    /// ([`Port::offloads`]), as an AF_PACKET port with a vnet header does.
    pub fn with_offloads(name: &str, mtu: u32) -> (Self, MemPortHandle) {
        let (mut p, h) = Self::new(name, mtu);
        p.offloads = true;
        (p, h)
    }

    /// As [`Self::with_offloads`], for a port that also takes UDP super-frames
    /// ([`Port::udp_segmentation`]).
    pub fn with_udp_segmentation(name: &str, mtu: u32) -> (Self, MemPortHandle) {
        let (mut p, h) = Self::with_offloads(name, mtu);
        p.udp_segmentation = true;
        (p, h)
    }

    /// As [`Self::with_offloads`], for a port that also takes UDP-tunnel super-frames
    /// ([`Port::tunnel_segmentation`]).
    pub fn with_tunnel_segmentation(name: &str, mtu: u32) -> (Self, MemPortHandle) {
        let (mut p, h) = Self::with_offloads(name, mtu);
        p.tunnel_segmentation = true;
        (p, h)
    }
}

impl MemPortHandle {
    /// Queues a frame for the port to receive.
    pub fn inject(&self, frame: &[u8]) {
        self.inject_offload(frame, Offload::NONE);
    }

    /// Queues a frame with offload metadata (a super-frame, a partial checksum) for the
    /// port to receive.
    pub fn inject_offload(&self, frame: &[u8], offload: Offload) {
        self.lock().rx.push_back((frame.to_vec(), offload));
    }

    /// Takes every frame the port transmitted so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.take_sent_offload()
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    /// Takes every frame the port transmitted so far, with its offload metadata.
    pub fn take_sent_offload(&self) -> Vec<(Vec<u8>, Offload)> {
        std::mem::take(&mut self.lock().tx)
    }

    /// Makes every later `recv` of the port fail with `kind` until [`Self::heal`]: a device
    /// that went away (`NetworkDown`), or a transient error (`Interrupted`, `WouldBlock`).
    pub fn fail_recv(&self, kind: io::ErrorKind) {
        self.lock().fail_recv = Some(kind);
    }

    /// Makes every later `send` of the port fail with `kind` until [`Self::heal`].
    pub fn fail_send(&self, kind: io::ErrorKind) {
        self.lock().fail_send = Some(kind);
    }

    /// Ends the failures [`Self::fail_recv`] and [`Self::fail_send`] started.
    pub fn heal(&self) {
        let mut q = self.lock();
        q.fail_recv = None;
        q.fail_send = None;
    }

    /// How many times the port's `recv` was called (whether it failed or not).
    pub fn recvs(&self) -> u64 {
        self.lock().recvs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.q.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn ifindex(&self) -> Option<IfIndex> {
        None
    }

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let mut q = self.q.lock().unwrap_or_else(PoisonError::into_inner);
        q.recvs += 1;
        if let Some(kind) = q.fail_recv {
            q.stats.errors += 1;
            return Err(self.error("recv", kind));
        }
        let mut n = 0;
        while !batch.is_full() {
            let Some((f, _)) = q.rx.front() else { break };
            if !batch.fits(f.len()) && f.len() <= batch.max_frame() {
                break; // no room left in this batch: the next one takes it
            }
            let Some((f, o)) = q.rx.pop_front() else {
                break;
            };
            // A frame larger than a slot is dropped, as a NIC drops an oversized frame.
            if batch.push_offload(&f, o) {
                n += 1;
                q.stats.rx_gso += u64::from(o.gso.is_some());
            } else {
                q.stats.rx_truncated += 1;
            }
        }
        Ok(n)
    }

    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let mut q = self.q.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(kind) = q.fail_send {
            q.stats.errors += 1;
            q.stats.tx_dropped += batch.len() as u64;
            return Err(self.error("send", kind));
        }
        q.tx.extend(batch.iter_offload().map(|(f, o)| (f.to_vec(), o)));
        Ok(batch.len())
    }

    fn offloads(&self) -> bool {
        self.offloads
    }

    fn udp_segmentation(&self) -> bool {
        self.udp_segmentation
    }

    fn tunnel_segmentation(&self) -> bool {
        self.tunnel_segmentation
    }

    fn stats(&mut self) -> PortStats {
        self.q.lock().unwrap_or_else(PoisonError::into_inner).stats
    }
}

impl MemPort {
    fn error(&self, op: &'static str, kind: io::ErrorKind) -> PortError {
        PortError::Io {
            op,
            port: self.name.clone(),
            source: kind.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_recv_send_collect() {
        let (mut p, h) = MemPort::new("vf0", 1500);
        h.inject(&[1, 2, 3]);
        h.inject(&[4]);
        let mut b = PacketBatch::new(1, 1518);
        assert_eq!(p.recv(&mut b).unwrap(), 1, "batch of one");
        assert_eq!(b.get(0), &[1, 2, 3]);
        p.send(&b).unwrap();
        b.clear();
        assert_eq!(p.recv(&mut b).unwrap(), 1);
        assert_eq!(h.take_sent(), vec![vec![1, 2, 3]]);
        assert_eq!(p.name(), "vf0");
        assert_eq!(p.mtu(), 1500);
    }

    #[test]
    fn oversized_frames_and_injected_failures_are_counted() {
        let (mut p, h) = MemPort::new("vf0", 1500);
        let mut b = PacketBatch::new(4, 100);
        h.inject(&[0; 200]);
        h.inject(&[1; 50]);
        assert_eq!(p.recv(&mut b).unwrap(), 1);
        assert_eq!(p.stats().rx_truncated, 1);

        h.fail_recv(io::ErrorKind::NetworkDown);
        h.fail_send(io::ErrorKind::WouldBlock);
        assert!(p.recv(&mut b).unwrap_err().is_device_gone());
        let e = p.send(&b).unwrap_err();
        assert!(e.is_transient() && !e.is_device_gone());
        assert_eq!(h.recvs(), 2);
        let st = p.stats();
        assert_eq!((st.errors, st.tx_dropped, st.down), (2, 1, false));
        h.heal();
        assert_eq!(p.send(&b).unwrap(), 1);
        assert_eq!(h.take_sent(), vec![vec![1; 50]]);
    }
}

/// A port that receives nothing and counts (then discards) what is sent to it: the sink
/// of benchmarks.
#[derive(Debug, Default)]
pub struct NullPort {
    /// Frames sent to the port.
    pub sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Port for NullPort {
    fn name(&self) -> &str {
        "null"
    }

    fn ifindex(&self) -> Option<IfIndex> {
        None
    }

    fn mtu(&self) -> u32 {
        9000
    }

    fn recv(&mut self, _: &mut PacketBatch) -> Result<usize, PortError> {
        Ok(0)
    }

    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        self.sent
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(batch.len())
    }
}
