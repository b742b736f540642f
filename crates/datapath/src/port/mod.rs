//! Ports: where packets enter and leave the datapath.
//!
//! A [`Port`] moves whole batches: [`Port::recv`] fills a caller-owned [`PacketBatch`]
//! (preallocated, no allocation per packet) and [`Port::send`] transmits one. Each packet
//! carries its offload metadata ([`crate::wire::Offload`]: a GSO super-frame's segment
//! size, a partial checksum); a port that [`Port::offloads`] hands it to the kernel with
//! the frame, and the datapath gives other ports complete frames only.
//! Implementations: [`MemPort`] (in-memory queues, for tests and benchmarks),
//! [`AfPacketPort`] (an AF_PACKET raw socket bound to a Linux netdev, receiving through a
//! `PACKET_MMAP` ring or `recvmmsg`, sending through a `PACKET_TX_RING` or `sendmmsg`, and
//! UDP-tunnel super-frames through an uplink's [`TunnelInjector`]), and [`KernelTunnel`] (the
//! tunnel port's I/O through the kernel's IP stack, for IPsec-protected paths).
//!
//! A port whose device is gone (deleted, or re-created under the same name with a new
//! ifindex) fails with an error for which [`PortError::is_device_gone`] holds; the
//! datapath then stops polling it and drops what is sent to it until the port is
//! replaced. [`Port::stats`] reports its counters ([`PortStats`]).

mod afpacket;
mod batch;
mod kernel;
mod mem;

pub use afpacket::{
    AfPacketPort, DEFAULT_RING_BYTES, MAX_FANOUT, Poller, PortOptions, RxMode, TapMode,
    TunnelInjector, TxMode, Waker,
};
pub use batch::PacketBatch;
pub use kernel::{KernelTunnel, KernelTunnelStats, RxControl, mark_mac};
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

impl PortError {
    /// Whether the port's device is gone for good: `ENETDOWN`, `ENXIO` or `ENODEV` (or
    /// [`std::io::ErrorKind::NetworkDown`] without an OS error), or no such interface. A
    /// port returns these only when its device no longer exists; an [`AfPacketPort`]
    /// whose device is only down (`ip link set dev down`) counts the error and carries
    /// on, as the kernel resumes delivery when the device comes back up.
    pub fn is_device_gone(&self) -> bool {
        match self {
            PortError::NoSuchInterface(_) => true,
            PortError::Io { source, .. } => match source.raw_os_error() {
                Some(e) => matches!(e, libc::ENETDOWN | libc::ENXIO | libc::ENODEV),
                None => source.kind() == std::io::ErrorKind::NetworkDown,
            },
        }
    }

    /// Whether the error is transient (interrupted, would block): nothing to do but try
    /// again later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PortError::Io { source, .. } if matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
            )
        )
    }
}

/// A port's counters and state, as [`Port::stats`] reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received larger than a receive-ring frame or a batch slot: delivered empty
    /// (the datapath drops them) or, for a [`MemPort`], not delivered.
    pub rx_truncated: u64,
    /// Frames received whole through the socket's queue because they were larger than a
    /// receive-ring frame (GSO super-frames, up to 64 KiB): never truncated.
    pub rx_large: u64,
    /// Super-frames received (GSO metadata from the kernel: TSO/USO from a VM, or GRO).
    pub rx_gso: u64,
    /// Frames the kernel dropped before flowd could read them (receive ring or socket
    /// buffer full): `PACKET_STATISTICS`' `tp_drops`, summed over every read.
    pub kernel_drops: u64,
    /// Frames dropped on transmit: refused by the kernel (queue full, too large, device
    /// down), or sent to the port while it was marked down (counted by the datapath).
    pub tx_dropped: u64,
    /// I/O errors seen: failed system calls and errors the kernel reported on the socket,
    /// transient ones included.
    pub errors: u64,
    /// The port's device is gone: the datapath no longer polls the port nor transmits to
    /// it until a `PortOp::Add` replaces it.
    pub down: bool,
    /// Frames in the receive ring (0: no ring).
    pub ring_frames: u32,
    /// Bytes per receive-ring frame (0: no ring).
    pub ring_frame_size: u32,
    /// The MTU the receive ring was sized for, the device's MTU at open (0: no ring). A
    /// device whose MTU is now larger gets frames above it truncated: reopen the port.
    pub ring_mtu: u32,
    /// Malformed frames received and dropped (counted by the datapath; by reason in
    /// `DpStats::malformed`).
    pub rx_malformed: u64,
    /// Misses of frames received on this port that the slow path did not take (upcall
    /// queue full, or the port's share of it taken; counted by the datapath).
    pub upcall_drops: u64,
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
    /// Reads and clears the error `poll()` reported on [`Self::raw_fd`] (`POLLERR`): Ok if
    /// there was none or it was transient, the error otherwise.
    fn take_error(&mut self) -> Result<(), PortError> {
        Ok(())
    }
    /// The port's counters. A kernel port reads the kernel's drop counter here (a system
    /// call): call it when publishing statistics, not per packet. Zeros by default.
    fn stats(&mut self) -> PortStats {
        PortStats::default()
    }
    /// Whether [`Self::send`] carries each packet's [`Offload`](crate::wire::Offload)
    /// metadata to the device (an AF_PACKET socket with a vnet header): a super-frame
    /// goes out whole for the device or the kernel to segment, a partial checksum for it
    /// to complete. A port that does not (the default) transmits only complete frames:
    /// the datapath segments and completes them first.
    fn offloads(&self) -> bool {
        false
    }
    /// Whether [`Self::send`] also takes UDP super-frames (`GsoKind::Udp` metadata with
    /// the UDP checksum partial) for the kernel or the device to cut into datagrams
    /// (USO): VXLAN output then hands over one datagram of many VXLAN packets instead of
    /// writing each. An AF_PACKET port with a vnet header on Linux 6.2 or later (earlier
    /// kernels refuse `VIRTIO_NET_HDR_GSO_UDP_L4` there; a refusal turns it off).
    fn udp_segmentation(&self) -> bool {
        false
    }
    /// Whether [`Self::send`] also takes UDP-tunnel super-frames (a VXLAN frame whose
    /// inner TCP super-frame is still to be cut, [`crate::wire::TunnelGso`]): VXLAN output
    /// then hands over each super-frame whole. An AF_PACKET port given a
    /// [`TunnelInjector`] (Linux 6.17 or later); a refusal turns it off.
    fn tunnel_segmentation(&self) -> bool {
        false
    }
    /// Whether [`Self::send_direct`] sends at once, from the caller's buffers (an
    /// AF_PACKET port): the datapath then hands super-frames over without copying them
    /// into a transmit batch first.
    fn sends_direct(&self) -> bool {
        false
    }
    /// Sends one frame made of `parts` (read in place, one after the other) with its
    /// metadata, now; whether the kernel took it. Only for a port that
    /// [`Self::sends_direct`]; the caller has sent the port's pending batch first, so
    /// frames keep their order. Errors as [`Self::send`]'s.
    fn send_direct(
        &mut self,
        _parts: &[&[u8]],
        _offload: crate::wire::Offload,
    ) -> Result<bool, PortError> {
        Ok(false)
    }
}
