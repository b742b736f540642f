//! Ports: where packets enter and leave the datapath.
//!
//! A [`Port`] moves whole batches: [`Port::recv`] fills a caller-owned [`PacketBatch`]
//! (preallocated slots, no allocation per packet) and [`Port::send`] transmits one.
//! Two implementations: [`MemPort`] (in-memory queues, for tests and benchmarks) and
//! [`AfPacketPort`] (an AF_PACKET raw socket bound to a Linux netdev, receiving through a
//! `PACKET_MMAP` ring or `recvmmsg`, sending with `sendmmsg`).

mod afpacket;
mod batch;
mod mem;

pub use afpacket::{AfPacketPort, Poller, RxMode, Waker};
pub use batch::PacketBatch;
pub use mem::{MemPort, MemPortHandle, NullPort};

use crate::IfIndex;

/// What went wrong on a port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The netdev does not exist.
    #[error("no such interface `{0}`")]
    NoSuchInterface(String),
    /// A system call failed.
    #[error("{op} on `{port}`: {source}")]
    Io {
        /// The operation (socket, bind, recvmmsg, ...).
        op: &'static str,
        /// The port name.
        port: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A source and sink of packets.
pub trait Port: Send {
    /// The port's name (the netdev name for kernel ports).
    fn name(&self) -> &str;
    /// The kernel interface index, for ports bound to a netdev.
    fn ifindex(&self) -> Option<IfIndex>;
    /// The port's MTU (largest L3 packet it carries).
    fn mtu(&self) -> u32;
    /// Receives up to the batch's free capacity without blocking; returns how many
    /// packets were appended.
    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError>;
    /// Transmits every packet of the batch; returns how many the kernel accepted.
    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError>;
    /// A file descriptor that polls readable when packets wait, if the port has one.
    fn raw_fd(&self) -> Option<i32> {
        None
    }
}
