//! [`MemPort`]: a port backed by in-memory queues, for tests and benchmarks.

use super::{PacketBatch, Port, PortError};
use crate::IfIndex;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

/// An in-memory port. Its [`MemPortHandle`] injects packets (what the port receives) and
/// collects what the datapath sent out of it.
#[derive(Debug)]
pub struct MemPort {
    name: String,
    mtu: u32,
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
                q: q.clone(),
            },
            MemPortHandle { q },
        )
    }
}

impl MemPortHandle {
    /// Queues a frame for the port to receive.
    pub fn inject(&self, frame: &[u8]) {
        self.lock().rx.push_back(frame.to_vec());
    }

    /// Takes every frame the port transmitted so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lock().tx)
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
        let mut n = 0;
        while !batch.is_full() {
            let Some(f) = q.rx.pop_front() else { break };
            // A frame larger than a slot is dropped, as a NIC drops an oversized frame.
            if batch.push(&f) {
                n += 1;
            }
        }
        Ok(n)
    }

    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let mut q = self.q.lock().unwrap_or_else(PoisonError::into_inner);
        q.tx.extend(batch.iter().map(<[u8]>::to_vec));
        Ok(batch.len())
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
