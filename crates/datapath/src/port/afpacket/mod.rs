//! [`AfPacketPort`]: an AF_PACKET raw socket bound to one netdev. Frames are received
//! through a `PACKET_MMAP` ring (TPACKET_V2) by default, with `recvmmsg` as the fallback,
//! and sent through a TPACKET_V2 transmit ring by default, with `sendmmsg` for what the
//! ring does not take and as the fallback.
//!
//! - The socket is created with protocol 0 (it receives nothing) and only then bound to
//!   the interface with `ETH_P_ALL`, so no packet of another interface slips in.
//! - `PACKET_IGNORE_OUTGOING` keeps the frames flowd transmits from coming back on the
//!   same socket; the port is put in promiscuous mode (representors carry every MAC).
//! - The kernel strips VLAN tags into metadata on receive (VLAN offload); the tag is read
//!   back (from the ring frame's `tp_vlan_tci`/`tp_vlan_tpid`, or with `PACKET_AUXDATA`
//!   in the fallback) and reinserted in the slot's headroom, so the datapath sees the
//!   frame as it was on the wire.
//! - Both ways, every frame comes with the kernel's offload metadata
//!   (`PACKET_VNET_HDR`, a `struct virtio_net_hdr`: see [`crate::wire::vnet`]): a
//!   super-frame's GSO type and segment size, a partial checksum's start and offset. The
//!   metadata received is kept next to each frame in the [`PacketBatch`]; the metadata
//!   of each frame sent goes before it (in its transmit ring frame, or a first iovec),
//!   so that the kernel or the device segments super-frames and completes checksums
//!   ([`Port::offloads`]). A kernel without the option (before 2.6.38) leaves the port
//!   without offloads.
//! - A frame larger than the receive batch's room for one packet is received truncated:
//!   it is kept as an empty packet (which the datapath drops) and counted in
//!   [`PortStats::rx_truncated`]. The datapath's batches take 64 KiB super-frames, so
//!   this only happens to frames past what a super-frame can be.
//! - Several datapath threads each get their own socket on a port
//!   ([`AfPacketPort::open_fanout`]): the sockets are one `PACKET_FANOUT_HASH` group, so
//!   each frame reaches one of them and a flow's frames the same one (the `fanout`
//!   module: joining without duplicates, outgoing frames, fragments, super-frames).
//! - [`Port::stats`] also reads the kernel's drop counter (`PACKET_STATISTICS`, reset by
//!   the kernel on every read, so the port sums it): frames dropped because the ring or
//!   the socket buffer was full, which flowd never saw.
//!
//! # The receive ring ([`RxMode::Ring`])
//! With `recvmmsg`, the kernel queues an skb per frame on the socket (in the softirq of
//! the CPU that sent the frame) and the datapath thread pays a system call per batch, a
//! copy per frame and the skb's release. With a TPACKET_V2 `PACKET_RX_RING`, the sender's
//! softirq copies each frame straight into a shared ring and frees the skb there; the
//! datapath thread reads frames whose `tp_status` has `TP_STATUS_USER`, copies them into
//! its [`PacketBatch`] (64 bytes for a small frame: cheaper than any system call) and
//! hands the frame back (`TP_STATUS_KERNEL`) at once. No system call per batch; `poll()`
//! still works (readable while the kernel's last frame is not handed back).
//!
//! Geometry, per port (mmapped, allocated once at open):
//! - frame size: the TPACKET_V2 header and the kernel's alignment (66 bytes before the
//!   MAC header, plus the 10-byte vnet header) + MTU + 14 (Ethernet) + 8 (an inner VLAN
//!   tag, slack), rounded up to a power of two up to a page, a multiple of the page size
//!   above: 2 KiB for MTU 1500, 12 KiB for MTU 9000.
//! - A frame larger than that (a TSO or GRO super-frame of up to 64 KiB, or any frame
//!   after the device's MTU was raised past [`AfPacketPort::ring_mtu`]) is not lost:
//!   with `PACKET_COPY_THRESH` set, the kernel's `tpacket_rcv` queues the whole frame on
//!   the socket as well (a reference to the skb, no copy, while the receive buffer has
//!   room) and marks its truncated ring frame `TP_STATUS_COPY`. The port reads that frame
//!   with `recvmsg` (vnet header and VLAN tag included) in place of the ring frame: the
//!   copies are queued in ring order, so order is kept. Counted in
//!   [`PortStats::rx_large`]; only a frame that found the receive buffer full is
//!   truncated ([`PortStats::rx_truncated`]). Why not size the ring for 64 KiB frames:
//!   1024 of them would pin 64 MiB of kernel memory per port (32x the 2 MiB ring), for
//!   frames that are rare on some ports and, where they are common (a VM's TSO), still
//!   fewer than MTU-sized ones; fewer large frames (32 of 64 KiB, the same 2 MiB) would
//!   hold only 32 frames of any size and drop bursts of small ones. The socket queue
//!   costs memory only while super-frames flow, bounded by the 4 MiB receive buffer
//!   (about 60 super-frames). The price: the kernel still copies a super-frame's first
//!   ring frame's worth (1.9 KiB at MTU 1500) into the ring, unused.
//! - block size: 64 KiB (rounded up to a whole number of frames: 72 KiB for MTU 9000);
//!   small enough for the kernel's page allocator, large enough to hold many frames.
//! - blocks: 2 MiB of ring and at least 256 frames: 32 blocks = 1024 frames (2 MiB) for
//!   MTU 1500, 43 blocks = 258 frames (3.1 MiB) for MTU 9000. That is the kernel memory
//!   each port pins (the fallback's 4 MiB socket buffer is only a limit); 1024 frames are
//!   16 batches of 64 of slack. A full ring drops in the kernel (the sender's softirq),
//!   like a full socket buffer.
//!
//! TPACKET_V2 rather than V3: V3 hands a block over only when it is full or its retire
//! timer fires, which adds up to a timer period of latency at low rates; V2 hands over
//! each frame. If the ring cannot be set up (old kernel, no memory), the port falls back
//! to `recvmmsg` ([`AfPacketPort::rx_mode`] tells which one is in use).
//!
//! # The transmit ring ([`TxMode::Ring`])
//! With `sendmmsg`, each frame costs the kernel a message header and an iovec copied in
//! and checked, a user copy (`copy_from_iter`) and an skb. With a TPACKET_V2
//! `PACKET_TX_RING`, the port fills ring frames (a vnet header, then the frame, at
//! offset 32 of each frame, its length in `tp_len`, `tp_status` set to
//! `TP_STATUS_SEND_REQUEST`) and makes one `send` per batch with no data; the kernel's
//! `tpacket_snd` walks the ring, builds and transmits an skb per frame before it returns,
//! and hands each frame back (`TP_STATUS_AVAILABLE`) when its skb is freed. Still an skb
//! per frame, but no per-frame system call work.
//!
//! - The ring lives on a second AF_PACKET socket per port, bound to the device with
//!   protocol 0 (it receives nothing; `PACKET_IGNORE_OUTGOING` on the receiving socket
//!   keeps what it sends out of the receive ring as before). A socket with a TX ring
//!   sends *only* through it, so the port's own socket stays free for `sendmmsg`.
//! - `tpacket_fill_skb` copies `max(hdr_len, hard_header_len)` bytes into the skb and
//!   attaches the rest as references to the ring's pages, marked zero-copy: a veth must
//!   then copy them into a fresh page (`skb_copy_ubufs`, a page allocation per frame) and
//!   the receiver pull the headers out of it. The port sets the vnet header's `hdr_len`
//!   to the frame's length, so the kernel copies the whole frame into the skb's linear
//!   part, one copy as with `sendmmsg` (measured: without it the ring was slower than
//!   `sendmmsg` on the veth harness; with it, faster; docs/operations.md *Sizing*).
//! - Geometry: frames of a power of two holding offset, vnet header, MTU + 22 bytes
//!   (2 KiB at MTU 1500, 12 KiB at 9000), 256 of them: 512 KiB per port at MTU 1500.
//! - What goes through `sendmmsg` instead (the ring flushed first, so order is kept):
//!   super-frames larger than a ring frame (a 64 KiB TSO frame), UDP super-frames (a
//!   kernel without UDP segmentation must answer `EINVAL`, which the ring would not
//!   show), frames without GSO over the MTU + 18 (`EMSGSIZE`: with vnet headers
//!   `tpacket_snd` checks no MTU), frames shorter than an Ethernet header, and partial
//!   checksums past the frame. TCP super-frames that fit a ring frame go through it.
//! - `PACKET_LOSS` is set: a frame the kernel refuses anyway is skipped instead of
//!   stopping the ring for good (`TP_STATUS_WRONG_FORMAT` blocks the ring's head).
//!   `send` returns the bytes of the frames sent, so such a frame is still counted
//!   ([`PortStats::tx_dropped`], a lower bound: missing bytes over the largest frame).
//! - A full ring (the head frame still the kernel's after a flush: its skb not freed
//!   yet, e.g. queued in a NIC) drops the frame and counts it (`tx_dropped`). On
//!   `EAGAIN`/`ENOBUFS` (the 4 MiB send buffer full; also when `send` stops early
//!   without an error) the frames not taken are handed back and counted; on `ENETDOWN`/`ENXIO` likewise, with the rest of the batch, and
//!   the error is sorted as for `sendmmsg` (below: down, or gone).
//! - If the ring cannot be set up, the port sends with `sendmmsg`
//!   ([`AfPacketPort::tx_mode`], [`AfPacketPort::tx_ring_error`]; the daemon logs it).
//!   `FLOWD_TX=sendmmsg` (the daemon, `cargo bench --bench afpacket`) or
//!   [`PortOptions::tx`] chooses `sendmmsg` to compare.
//! - `PACKET_QDISC_BYPASS` ([`PortOptions::qdisc_bypass`], the daemon's
//!   `FLOWD_QDISC_BYPASS=1`) is off by default: frames sent with it skip the device's
//!   packet taps, so `tcpdump` on an uplink or representor would not see what flowd
//!   sends, for a gain within the noise of the harness.
//!
//! # Offloads on transmit
//! A frame sent with GSO metadata (`VIRTIO_NET_HDR_GSO_TCPV4/TCPV6/UDP_L4`) may exceed
//! the MTU: `packet_snd` checks the MTU only for frames without it, and
//! `virtio_net_hdr_to_skb` turns the header into a GSO skb (`SKB_GSO_DODGY`) with a
//! partial checksum, which the device segments (TSO) or the kernel does in software
//! before the device (a veth passes it whole to its peer, as the kernel's own TCP
//! would). The kernel refuses (`EINVAL`) a header it cannot check; the port then drops
//! that one frame and counts it, as for `EMSGSIZE`.
//!
//! AF_PACKET has no UDP-tunnel GSO (Linux 6.18, checked by the test
//! `the_kernel_offers_no_udp_tunnel_gso_through_af_packet`): `virtio_net_hdr_to_skb`
//! refuses the `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_*` bits, and `PACKET_VNET_HDR_SZ` takes
//! only the 10- and 12-byte headers, not the 24-byte one that carries the tunnel's
//! offsets (tun and virtio-net have it since 6.17). VXLAN super-frames are therefore cut
//! by flowd before encapsulation (see [`crate::exec`]); but plain UDP segmentation
//! (`VIRTIO_NET_HDR_GSO_UDP_L4`, Linux 6.2) is there, so flowd hands the kernel the
//! VXLAN packets of one super-frame as one UDP datagram to cut at the VXLAN unit size
//! ([`Port::udp_segmentation`]): one skb and one trip through the stack instead of one
//! per segment. The kernel insists on the outer UDP checksum (partial) for it. On an
//! older kernel (the release says so, or the first such frame is refused with `EINVAL`)
//! the port reports no UDP segmentation and flowd writes each VXLAN packet.
//!
//! # When the device goes down or away
//! When the device is set down, the kernel unhooks the socket and sets a pending socket
//! error, `ENETDOWN`. When it is unregistered (deleted, or moved to another namespace),
//! the same happens and the socket also loses its binding for good: `getsockname`
//! reports ifindex -1 and `sendmmsg` fails with `ENXIO`. A device re-created under the
//! same name is a new device (a new ifindex) the old socket never sees. The pending error
//! keeps `poll()` reporting `POLLERR` until it is read, which receiving through the ring
//! never does: [`Port::take_error`] reads it (`SO_ERROR`); `recvmmsg` returns it once.
//!
//! So `ENETDOWN` alone does not say which: the port looks at its binding. Still bound,
//! the device is only down and comes back with `ip link set up` (the kernel hooks the
//! socket in again by itself): the error is counted ([`PortStats::errors`]) and the port
//! carries on. Unbound, the device is gone: the port fails with an error for which
//! [`PortError::is_device_gone`] holds, reports [`PortStats::down`] from then on, and the
//! datapath marks it down. [`Port::stats`] checks the binding too, so a removal missed
//! between the two notifications (the error read before the binding went) is still seen.
//!
//! This is the one module of the crate with `unsafe`: the system calls and the ring.
#![allow(unsafe_code)]

mod fanout;
#[cfg(test)]
mod fanout_tests;
mod mmsg;
mod poll;
mod ring;
mod sys;
#[cfg(test)]
mod tests;
mod tungso;
mod txring;
#[cfg(test)]
mod txring_tests;

pub use fanout::MAX_FANOUT;
pub use poll::{Poller, Waker};

use super::{PacketBatch, Port, PortError, PortStats};
use crate::IfIndex;
use crate::wire::vnet::{self, Offload, VnetHeader};
pub use ring::DEFAULT_RING_BYTES;
use ring::RxRing;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use sys::*;
pub use tungso::{TapMode, TunnelInjector};
pub use txring::TxMode;
use txring::TxRing;

/// How an [`AfPacketPort`] receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RxMode {
    /// A TPACKET_V2 `PACKET_RX_RING` shared with the kernel (the default), falling back to
    /// `recvmmsg` if the ring cannot be set up.
    Ring,
    /// `recvmmsg` with `PACKET_AUXDATA` control messages.
    Recvmmsg,
}

/// An AF_PACKET socket bound to a netdev.
pub struct AfPacketPort {
    name: String,
    ifindex: IfIndex,
    mtu: u32,
    mac: [u8; 6],
    fd: OwnedFd,
    ring: Option<RxRing>,
    /// The transmit ring and its socket ([`TxMode::Ring`]), None with `sendmmsg`.
    tx_ring: Option<TxRing>,
    /// Why the transmit ring asked for could not be set up.
    tx_ring_error: Option<String>,
    /// The socket carries a vnet header before every frame, both ways.
    vnet: bool,
    /// The kernel takes UDP super-frames on send ([`Port::udp_segmentation`]).
    uso: bool,
    /// Where UDP-tunnel super-frames go ([`Port::tunnel_segmentation`]), if given.
    tunnel: Option<TunnelInjector>,
    hdrs: Vec<libc::mmsghdr>,
    /// Two per message: the vnet header, then the frame.
    iovs: Vec<libc::iovec>,
    cmsgs: Vec<u8>,
    /// Per message: the vnet header received or to send.
    vnet_hdrs: Vec<[u8; vnet::HEADER_LEN]>,
    truncated: u64,
    /// Frames received through the socket's queue (larger than a ring frame).
    rx_large: u64,
    /// Super-frames received.
    rx_gso: u64,
    tx_dropped: u64,
    /// Frames the kernel took from the transmit ring.
    tx_ring_sent: u64,
    /// I/O errors seen (transient ones included).
    errors: u64,
    /// `PACKET_STATISTICS` drops, summed.
    kernel_drops: u64,
    /// The socket lost its binding: the device is gone.
    gone: bool,
    /// The `PACKET_FANOUT` group the socket is in ([`AfPacketPort::open_fanout`]).
    fanout: Option<u16>,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are scratch space, rewritten before every
// system call to point into buffers borrowed for that call only; they are never
// dereferenced outside it. The ring's mapping belongs to the port alone (one owner, no
// thread affinity), so moving the port to another thread is sound.
unsafe impl Send for AfPacketPort {}

/// Sets the socket options of a port on `raw` (not bound yet) and sets up its receive
/// ring if `mode` asks for one: whether the socket carries vnet headers, and the ring.
fn configure(
    raw: i32,
    name: &str,
    mtu: u32,
    opts: &PortOptions,
) -> Result<(bool, Option<RxRing>), PortError> {
    let opt_err = |op, e| PortError::Io {
        op,
        port: name.to_string(),
        source: e,
    };
    setsockopt_int(raw, PACKET_AUXDATA, 1).map_err(|e| opt_err("PACKET_AUXDATA", e))?;
    // Bursts from a VM outrun one batch: give the socket room (as root, beyond
    // rmem_max); failure only means the default size.
    let _ = setsockopt_sol(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
    let _ = setsockopt_sol(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
    // No PACKET_QDISC_BYPASS: frames sent with it skip the packet taps, so tcpdump
    // on an uplink or a representor would not see what flowd transmits. Operators
    // debug with tcpdump; the qdisc costs little on these devices (noqueue veths,
    // multiqueue NICs).
    // Kernels before 4.20 lack the option: outgoing frames then come back, and the
    // datapath drops them as they carry our own source MACs; not fatal.
    let _ = setsockopt_int(raw, PACKET_IGNORE_OUTGOING, 1);
    // Offload metadata both ways (before the ring: the kernel refuses it after). A
    // kernel without it (before 2.6.38) leaves the port without offloads.
    let vnet = setsockopt_int(raw, PACKET_VNET_HDR, 1).is_ok();
    // Before bind: frames queued on the socket before the ring exists would keep it
    // readable for ever.
    let ring = match opts.rx {
        RxMode::Ring => RxRing::setup(raw, mtu, vnet, opts.ring_bytes),
        RxMode::Recvmmsg => None,
    };
    if ring.is_some() {
        // A frame larger than a ring frame (a super-frame) is also queued whole on
        // the socket, its ring frame marked TP_STATUS_COPY (module docs).
        setsockopt_int(raw, PACKET_COPY_THRESH, 1).map_err(|e| opt_err("PACKET_COPY_THRESH", e))?;
    }
    Ok((vnet, ring))
}

/// How a port's socket is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortOptions {
    /// Frames received per batch at most (default 32).
    pub batch: usize,
    /// How frames are received (default [`RxMode::Ring`]).
    pub rx: RxMode,
    /// About how much memory the receive ring takes (default [`DEFAULT_RING_BYTES`]; at
    /// least 256 frames at any MTU).
    pub ring_bytes: usize,
    /// How frames are sent (default [`TxMode::Ring`]).
    pub tx: TxMode,
    /// `PACKET_QDISC_BYPASS` on the sending sockets (default false: the frames flowd
    /// sends would skip the device's packet taps, so `tcpdump` would not see them).
    pub qdisc_bypass: bool,
}

impl Default for PortOptions {
    fn default() -> Self {
        Self {
            batch: 32,
            rx: RxMode::Ring,
            ring_bytes: DEFAULT_RING_BYTES,
            tx: TxMode::Ring,
            qdisc_bypass: false,
        }
    }
}

impl AfPacketPort {
    /// Opens a non-blocking AF_PACKET socket on interface `name`, able to receive batches
    /// of up to `batch` frames, receiving through a ring if possible ([`RxMode::Ring`]).
    pub fn open(name: &str, batch: usize) -> Result<Self, PortError> {
        Self::open_opts(
            name,
            PortOptions {
                batch,
                ..PortOptions::default()
            },
        )
    }

    /// As [`Self::open`], receiving as `mode` says.
    pub fn open_with(name: &str, batch: usize, mode: RxMode) -> Result<Self, PortError> {
        Self::open_opts(
            name,
            PortOptions {
                batch,
                rx: mode,
                ..PortOptions::default()
            },
        )
    }

    /// Opens the socket as `opts` say.
    pub fn open_opts(name: &str, opts: PortOptions) -> Result<Self, PortError> {
        Self::open_in(name, opts, None)
    }

    /// Opens `n` sockets on interface `name` (at most [`MAX_FANOUT`]), one per datapath
    /// thread, in one `PACKET_FANOUT_HASH` group: each frame the device receives goes
    /// to exactly one of them, every frame of a flow to the same one (see the `fanout`
    /// module for the hash, the join without duplicates, and outgoing frames). Each
    /// socket has its own receive ring as `opts` say, and transmits on its own. With
    /// `n` = 1, one plain socket ([`Self::open_opts`]).
    pub fn open_fanout(name: &str, opts: PortOptions, n: usize) -> Result<Vec<Self>, PortError> {
        Self::open_group(name, opts, n, true)
    }

    /// As [`Self::open_fanout`]; `ignore_outgoing` false makes the group without the
    /// kernel's `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` (the older kernels' way; tests).
    pub(crate) fn open_group(
        name: &str,
        opts: PortOptions,
        n: usize,
        ignore_outgoing: bool,
    ) -> Result<Vec<Self>, PortError> {
        if n <= 1 {
            return Ok(vec![Self::open_opts(name, opts)?]);
        }
        if n > MAX_FANOUT {
            return Err(PortError::Io {
                op: "PACKET_FANOUT",
                port: name.to_string(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{n} sockets in one group (at most {MAX_FANOUT})"),
                ),
            });
        }
        let mut group = fanout::Group::new(ignore_outgoing);
        let ports = (0..n)
            .map(|_| Self::open_in(name, opts, Some(&mut group)))
            .collect::<Result<Vec<_>, _>>()?;
        for p in &ports {
            group
                .open_up(p.fd.as_raw_fd())
                .map_err(|e| sys_io("SO_ATTACH_FILTER", name, e))?;
        }
        Ok(ports)
    }

    /// Opens one socket, joined to `group` if given (filtered until the caller opens it
    /// up).
    fn open_in(
        name: &str,
        opts: PortOptions,
        group: Option<&mut fanout::Group>,
    ) -> Result<Self, PortError> {
        let fd = packet_socket(name)?;
        let raw = fd.as_raw_fd();
        let Device { ifindex, mtu, mac } = Device::query(raw, name)?;
        let (vnet, ring) = configure(raw, name, mtu, &opts)?;
        if group.is_some() {
            fanout::Group::before_bind(raw).map_err(|e| sys_io("SO_ATTACH_FILTER", name, e))?;
        }
        bind_promisc(raw, name, ifindex)?;
        let fanout = match group {
            Some(g) => {
                g.join(raw).map_err(|e| sys_io("PACKET_FANOUT", name, e))?;
                g.id()
            }
            None => None,
        };
        let batch = opts.batch.max(1);
        if opts.qdisc_bypass {
            setsockopt_int(raw, PACKET_QDISC_BYPASS, 1)
                .map_err(|e| sys_io("PACKET_QDISC_BYPASS", name, e))?;
        }
        let (tx_ring, tx_ring_error) = match opts.tx {
            TxMode::Ring => match TxRing::setup(name, ifindex, mtu, vnet, opts.qdisc_bypass) {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.to_string())),
            },
            TxMode::Sendmmsg => (None, None),
        };
        Ok(Self {
            name: name.to_string(),
            ifindex: IfIndex(ifindex),
            mtu,
            mac,
            fd,
            cmsgs: vec![0u8; batch * CMSG_SPACE],
            ring,
            tx_ring,
            tx_ring_error,
            vnet,
            uso: vnet && kernel_at_least(6, 2),
            tunnel: None,
            // SAFETY: all-zero mmsghdr/iovec are valid (null pointers, zero lengths).
            hdrs: vec![unsafe { std::mem::zeroed() }; batch],
            iovs: vec![unsafe { std::mem::zeroed() }; 2 * batch],
            vnet_hdrs: vec![[0; vnet::HEADER_LEN]; batch],
            truncated: 0,
            rx_large: 0,
            rx_gso: 0,
            tx_dropped: 0,
            tx_ring_sent: 0,
            errors: 0,
            kernel_drops: 0,
            gone: false,
            fanout,
        })
    }

    /// Sends UDP-tunnel super-frames through `injector` from now on
    /// ([`Port::tunnel_segmentation`]): the caller has redirected what the tap receives
    /// to this port's device. Ignored for a socket without vnet headers (it would hand
    /// VXLAN output no super-frame to begin with).
    pub fn set_tunnel_injector(&mut self, injector: TunnelInjector) {
        if self.vnet {
            self.tunnel = Some(injector);
        }
    }

    /// The `PACKET_FANOUT` group the socket is in, if any.
    pub fn fanout_group(&self) -> Option<u16> {
        self.fanout
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// How the port receives: [`RxMode::Ring`] unless the ring could not be set up.
    pub fn rx_mode(&self) -> RxMode {
        if self.ring.is_some() {
            RxMode::Ring
        } else {
            RxMode::Recvmmsg
        }
    }

    /// How the port sends: [`TxMode::Ring`] unless it was not asked for or could not be
    /// set up (then [`Self::tx_ring_error`] says why).
    pub fn tx_mode(&self) -> TxMode {
        if self.tx_ring.is_some() {
            TxMode::Ring
        } else {
            TxMode::Sendmmsg
        }
    }

    /// Why the transmit ring asked for could not be set up (the port sends with
    /// `sendmmsg`).
    pub fn tx_ring_error(&self) -> Option<&str> {
        self.tx_ring_error.as_deref()
    }

    /// Frames sent through the transmit ring (the others went through `sendmmsg`).
    pub fn tx_ring_sent(&self) -> u64 {
        self.tx_ring_sent
    }

    /// Frames in the transmit ring (0 without one).
    pub fn tx_ring_frames(&self) -> usize {
        self.tx_ring.as_ref().map_or(0, TxRing::frames)
    }

    /// Frames received larger than a batch slot or a ring frame (dropped).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The MTU the receive ring was sized for (the device's MTU at open), None without a
    /// ring. Frames of a device whose MTU is now larger are truncated: reopen the port.
    pub fn ring_mtu(&self) -> Option<u32> {
        self.ring.as_ref().map(|r| r.mtu)
    }

    /// Whether the socket is still bound to the device it was opened on (false once the
    /// kernel unregistered the device). True if it cannot tell.
    fn still_bound(&mut self) -> bool {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` and `len` outlive the call; `len` is the buffer's size.
        let r = unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if r < 0 {
            self.errors += 1;
            return true;
        }
        sll.sll_ifindex == self.ifindex.0 as i32
    }

    /// Sorts an error of `op`: an error the datapath acts on, or Ok for one counted and
    /// ignored. `ENETDOWN` on a socket still bound is a device set down (delivery resumes
    /// when it comes back up); unbound, or `ENXIO`/`ENODEV`, the device is gone.
    fn io_error(&mut self, op: &'static str, e: io::Error) -> Result<(), PortError> {
        self.errors += 1;
        match e.raw_os_error() {
            Some(libc::EINTR | libc::EAGAIN) => return Ok(()),
            Some(libc::ENETDOWN) if self.still_bound() => return Ok(()),
            Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV) => self.gone = true,
            _ => {}
        }
        Err(PortError::Io {
            op,
            port: self.name.clone(),
            source: e,
        })
    }

    /// Frames the kernel refused to transmit (queue full, too large).
    pub fn tx_dropped(&self) -> u64 {
        self.tx_dropped
    }

    /// The offload metadata in a received vnet header (none without one). A header flowd
    /// cannot act on (a GSO type it cannot segment) is an error: the frame is dropped.
    fn offload_of(&mut self, hdr: &[u8]) -> Option<Offload> {
        if !self.vnet {
            return Some(Offload::NONE);
        }
        match Offload::parse(&VnetHeader::new_unchecked(hdr)) {
            Ok(o) => {
                self.rx_gso += u64::from(o.gso.is_some());
                Some(o)
            }
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn ifindex(&self) -> Option<IfIndex> {
        Some(self.ifindex)
    }

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn raw_fd(&self) -> Option<i32> {
        Some(self.fd.as_raw_fd())
    }

    fn recv(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        if self.ring.is_some() {
            return Ok(self.recv_ring(batch));
        }
        self.recv_mmsg(batch)
    }

    fn offloads(&self) -> bool {
        self.vnet
    }

    fn udp_segmentation(&self) -> bool {
        self.uso
    }

    fn tunnel_segmentation(&self) -> bool {
        self.tunnel.is_some()
    }

    fn sends_direct(&self) -> bool {
        true
    }

    fn send_direct(&mut self, parts: &[&[u8]], offload: Offload) -> Result<bool, PortError> {
        self.send_parts(parts, offload)
    }

    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let Some(mut ring) = self.tx_ring.take() else {
            return self.send_mmsg_range(batch, 0, batch.len());
        };
        let r = self.send_ring(batch, &mut ring);
        self.tx_ring = Some(ring);
        r
    }

    fn take_error(&mut self) -> Result<(), PortError> {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` outlive the call; `len` is the buffer's size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return self.io_error("SO_ERROR", io::Error::last_os_error());
        }
        if err == 0 {
            return Ok(());
        }
        self.io_error("poll", io::Error::from_raw_os_error(err))
    }

    fn stats(&mut self) -> PortStats {
        let mut st = TpacketStats::default();
        let mut len = std::mem::size_of::<TpacketStats>() as libc::socklen_t;
        // SAFETY: `st` and `len` outlive the call; `len` is the buffer's size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStats).cast(),
                &mut len,
            )
        };
        if r < 0 {
            self.errors += 1;
        } else {
            // The kernel resets its counters on every read.
            self.kernel_drops += u64::from(st.tp_drops);
        }
        if !self.gone && !self.still_bound() {
            self.gone = true;
        }
        PortStats {
            rx_truncated: self.truncated,
            rx_large: self.rx_large,
            rx_gso: self.rx_gso,
            kernel_drops: self.kernel_drops,
            tx_dropped: self.tx_dropped,
            errors: self.errors,
            down: self.gone,
            ring_frames: self.ring.as_ref().map_or(0, |r| r.map.frames() as u32),
            ring_frame_size: self.ring.as_ref().map_or(0, |r| r.map.frame_size() as u32),
            ring_mtu: self.ring_mtu().unwrap_or(0),
            // Counted by the datapath.
            rx_malformed: 0,
            upcall_drops: 0,
        }
    }
}
