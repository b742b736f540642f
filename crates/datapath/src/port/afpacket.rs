//! [`AfPacketPort`]: an AF_PACKET raw socket bound to one netdev. Frames are received
//! through a `PACKET_MMAP` ring (TPACKET_V2) by default, with `recvmmsg` as the fallback,
//! and sent with `sendmmsg`.
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
//!   of each frame sent goes before it (a second iovec), so that the kernel or the device
//!   segments super-frames and completes checksums ([`Port::offloads`]). A kernel
//!   without the option (before 2.6.38) leaves the port without offloads.
//! - A frame larger than the receive batch's room for one packet is received truncated:
//!   it is kept as an empty packet (which the datapath drops) and counted in
//!   [`PortStats::rx_truncated`]. The datapath's batches take 64 KiB super-frames, so
//!   this only happens to frames past what a super-frame can be.
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
//! Transmission stays on `sendmmsg`: a TPACKET_V2 TX ring still allocates an skb per
//! frame, and attaches the frame's bytes as page fragments that a veth peer must copy
//! into a fresh page (`skb_copy_ubufs`) before crossing into another namespace.
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

use super::batch::HEADROOM;
use super::{PacketBatch, Port, PortError, PortStats};
use crate::IfIndex;
use crate::wire::vnet::{self, GsoKind, Offload, VnetHeader};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const ETH_P_ALL: u16 = 0x0003;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_COPY_THRESH: libc::c_int = 7;
const PACKET_VNET_HDR: libc::c_int = 15;
const TP_STATUS_COPY: u32 = 1 << 1;

/// Mirrors `struct tpacket_stats` from `<linux/if_packet.h>` (TPACKET_V1 and V2).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

/// Mirrors `struct tpacket2_hdr` from `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Tpacket2Hdr {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_sec: u32,
    tp_nsec: u32,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
    tp_padding: [u8; 4],
}

/// Mirrors `struct tpacket_req` from `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketReq {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
}

/// Bytes the kernel puts before the MAC header in a TPACKET_V2 frame of a raw socket:
/// `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)` = 80, minus the 14-byte Ethernet header; the
/// vnet header (when the socket has one) lies in the 10 bytes after that, just before
/// the MAC header.
const RING_MAC_OFFSET: usize = 66;
/// Ring memory per port (for MTUs up to ~1900: 1024 frames of 2 KiB).
const RING_BYTES: usize = 2 << 20;
/// Fewest frames in a ring (jumbo MTUs).
const RING_MIN_FRAMES: usize = 256;
/// Target block size.
const RING_BLOCK: usize = 64 << 10;

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

/// The geometry of a receive ring for a port of MTU `mtu` with pages of `page` bytes, for
/// a socket with a vnet header or without.
fn ring_geometry(mtu: u32, page: usize, vnet: bool) -> TpacketReq {
    let vnet = if vnet { vnet::HEADER_LEN } else { 0 };
    let need = RING_MAC_OFFSET + vnet + mtu as usize + 14 + 8;
    let frame = if need <= page {
        need.next_power_of_two()
    } else {
        need.next_multiple_of(page)
    };
    let per_block = RING_BLOCK.div_ceil(frame).max(1);
    let block = frame * per_block;
    let blocks = (RING_BYTES / block)
        .max(RING_MIN_FRAMES.div_ceil(per_block))
        .max(1);
    TpacketReq {
        tp_block_size: block as u32,
        tp_block_nr: blocks as u32,
        tp_frame_size: frame as u32,
        tp_frame_nr: (blocks * per_block) as u32,
    }
}

/// A TPACKET_V2 receive ring mapped from the socket.
struct RxRing {
    base: *mut u8,
    map_len: usize,
    frame_size: usize,
    frames_per_block: usize,
    block_size: usize,
    frames: usize,
    /// The MTU the frames were sized for.
    mtu: u32,
    /// The next frame to read.
    head: usize,
}

impl RxRing {
    /// Sets up and maps a ring on `fd` (which must not be bound yet); None if the kernel
    /// refuses (the caller falls back to `recvmmsg`).
    fn setup(fd: i32, mtu: u32, vnet: bool) -> Option<Self> {
        // SAFETY: plain sysconf query.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => 4096,
        };
        let req = ring_geometry(mtu, page, vnet);
        setsockopt_int(fd, PACKET_VERSION, TPACKET_V2).ok()?;
        // SAFETY: `req` outlives the call and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_RX_RING,
                (&req as *const TpacketReq).cast(),
                std::mem::size_of::<TpacketReq>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return None;
        }
        let map_len = req.tp_block_size as usize * req.tp_block_nr as usize;
        // SAFETY: maps the ring the kernel just allocated for `fd`; the result is checked
        // and the mapping is released in `Drop`. (The ring's pages are kernel memory, never
        // swapped: no MAP_LOCKED; MAP_POPULATE spares the first pass its page faults.)
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            // Release the kernel's ring (a zero request) so that recvmmsg works.
            let zero = TpacketReq::default();
            // SAFETY: as above, with a zero request.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    PACKET_RX_RING,
                    (&zero as *const TpacketReq).cast(),
                    std::mem::size_of::<TpacketReq>() as libc::socklen_t,
                );
            }
            return None;
        }
        Some(Self {
            base: base.cast(),
            map_len,
            frame_size: req.tp_frame_size as usize,
            frames_per_block: (req.tp_block_size / req.tp_frame_size) as usize,
            block_size: req.tp_block_size as usize,
            frames: req.tp_frame_nr as usize,
            mtu,
            head: 0,
        })
    }

    /// The first byte of frame `i` (< `frames`): frames never straddle blocks.
    fn frame(&self, i: usize) -> *mut u8 {
        let off = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * self.frame_size;
        // SAFETY: `off + frame_size <= map_len` by construction of the geometry, so the
        // pointer stays inside the mapping.
        unsafe { self.base.add(off) }
    }

    /// The status word of the frame at `f` (from [`Self::frame`]), shared with the kernel.
    fn status(&self, f: *mut u8) -> &AtomicU32 {
        // SAFETY: `f` is a frame start inside the mapping (16-byte aligned: the mapping is
        // page aligned and frame and block sizes are multiples of 16), which lives as long
        // as `self`; the kernel accesses the word with word-sized accesses and barriers.
        unsafe { AtomicU32::from_ptr(f.cast()) }
    }

    /// The frame at the head of the ring, if the kernel handed it over: its start and
    /// its header (read once: the frame is ours until [`Self::release`]).
    fn peek(&self) -> Option<(*mut u8, u32, Tpacket2Hdr)> {
        let f = self.frame(self.head);
        let status = self.status(f).load(Ordering::Acquire);
        if status & TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the frame is ours until we store TP_STATUS_KERNEL (the kernel does not
        // write it meanwhile; the Acquire load orders its writes before our reads); the
        // header lies at the aligned start of the frame.
        let h: Tpacket2Hdr = unsafe { std::ptr::read(f.cast()) };
        Some((f, status, h))
    }

    /// Hands the head frame back to the kernel and moves to the next.
    fn release(&mut self) {
        let f = self.frame(self.head);
        self.status(f).store(TP_STATUS_KERNEL, Ordering::Release);
        self.head = if self.head + 1 == self.frames {
            0
        } else {
            self.head + 1
        };
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `setup`; no reference into it
        // outlives the ring.
        unsafe {
            libc::munmap(self.base.cast(), self.map_len);
        }
    }
}

/// The 4 tag bytes for a VLAN tag the kernel moved to metadata.
fn vlan_bytes(status: u32, tci: u16, tpid: u16) -> [u8; 4] {
    let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
        tpid
    } else {
        0x8100
    };
    let [a, b] = tpid.to_be_bytes();
    let [c, d] = tci.to_be_bytes();
    [a, b, c, d]
}

/// Mirrors `struct tpacket_auxdata` from `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AuxData {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// Control-message space per frame: one `cmsghdr` + `AuxData`, rounded up.
const CMSG_SPACE: usize = 64;

/// Whether the running kernel's release is at least `major.minor` (`uname`); false if it
/// cannot be read.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: an all-zero utsname is valid; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a live utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    let release: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    release_at_least(&String::from_utf8_lossy(&release), major, minor)
}

/// Whether a kernel release string ("6.18.44-fc", "5.10.0-28-amd64") is at least
/// `major.minor`.
fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// An AF_PACKET socket bound to a netdev.
pub struct AfPacketPort {
    name: String,
    ifindex: IfIndex,
    mtu: u32,
    mac: [u8; 6],
    fd: OwnedFd,
    ring: Option<RxRing>,
    /// The socket carries a vnet header before every frame, both ways.
    vnet: bool,
    /// The kernel takes UDP super-frames on send ([`Port::udp_segmentation`]).
    uso: bool,
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
    /// I/O errors seen (transient ones included).
    errors: u64,
    /// `PACKET_STATISTICS` drops, summed.
    kernel_drops: u64,
    /// The socket lost its binding: the device is gone.
    gone: bool,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are scratch space, rewritten before every
// system call to point into buffers borrowed for that call only; they are never
// dereferenced outside it. The ring's mapping belongs to the port alone (one owner, no
// thread affinity), so moving the port to another thread is sound.
unsafe impl Send for AfPacketPort {}

fn sys_err(op: &'static str, port: &str) -> PortError {
    PortError::Io {
        op,
        port: port.to_string(),
        source: io::Error::last_os_error(),
    }
}

/// An interface request for `name`; None if the name does not fit.
fn ifreq(name: &str) -> Option<libc::ifreq> {
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Some(req)
}

/// Runs an interface ioctl on `fd` (whose network namespace decides which `name` is
/// meant: sysfs would show the mounter's namespace instead).
fn if_ioctl(fd: i32, name: &str, req: libc::c_ulong) -> Result<libc::ifreq, PortError> {
    let mut r = ifreq(name).ok_or_else(|| PortError::NoSuchInterface(name.to_string()))?;
    // SAFETY: `r` is a valid ifreq for the call; these requests only fill its union.
    let rc = unsafe { libc::ioctl(fd, req as _, &mut r) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODEV) => PortError::NoSuchInterface(name.to_string()),
            _ => PortError::Io {
                op: "ioctl",
                port: name.to_string(),
                source: e,
            },
        });
    }
    Ok(r)
}

fn setsockopt_int(fd: i32, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    setsockopt_sol(fd, libc::SOL_PACKET, opt, val)
}

fn setsockopt_sol(
    fd: i32,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `val` outlives the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl AfPacketPort {
    /// Opens a non-blocking AF_PACKET socket on interface `name`, able to receive batches
    /// of up to `batch` frames, receiving through a ring if possible ([`RxMode::Ring`]).
    pub fn open(name: &str, batch: usize) -> Result<Self, PortError> {
        Self::open_with(name, batch, RxMode::Ring)
    }

    /// As [`Self::open`], receiving as `mode` says.
    pub fn open_with(name: &str, batch: usize, mode: RxMode) -> Result<Self, PortError> {
        // SAFETY: plain system call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(sys_err("socket", name));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY (union reads): each request fills the member read after it.
        let ifindex = unsafe {
            if_ioctl(raw, name, libc::SIOCGIFINDEX)?
                .ifr_ifru
                .ifru_ifindex
        } as u32;
        let mtu = unsafe { if_ioctl(raw, name, libc::SIOCGIFMTU)?.ifr_ifru.ifru_mtu } as u32;
        let hw = unsafe {
            if_ioctl(raw, name, libc::SIOCGIFHWADDR)?
                .ifr_ifru
                .ifru_hwaddr
        };
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(hw.sa_data) {
            *d = s as u8;
        }
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
        let ring = match mode {
            RxMode::Ring => RxRing::setup(raw, mtu, vnet),
            RxMode::Recvmmsg => None,
        };
        if ring.is_some() {
            // A frame larger than a ring frame (a super-frame) is also queued whole on
            // the socket, its ring frame marked TP_STATUS_COPY (module docs).
            setsockopt_int(raw, PACKET_COPY_THRESH, 1)
                .map_err(|e| opt_err("PACKET_COPY_THRESH", e))?;
        }
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        // SAFETY: `mreq` outlives the call and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sys_err("PACKET_ADD_MEMBERSHIP", name));
        }
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` outlives the call and its size is passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sys_err("bind", name));
        }
        let batch = batch.max(1);
        Ok(Self {
            name: name.to_string(),
            ifindex: IfIndex(ifindex),
            mtu,
            mac,
            fd,
            cmsgs: vec![0u8; batch * CMSG_SPACE],
            ring,
            vnet,
            uso: vnet && kernel_at_least(6, 2),
            // SAFETY: all-zero mmsghdr/iovec are valid (null pointers, zero lengths).
            hdrs: vec![unsafe { std::mem::zeroed() }; batch],
            iovs: vec![unsafe { std::mem::zeroed() }; 2 * batch],
            vnet_hdrs: vec![[0; vnet::HEADER_LEN]; batch],
            truncated: 0,
            rx_large: 0,
            rx_gso: 0,
            tx_dropped: 0,
            errors: 0,
            kernel_drops: 0,
            gone: false,
        })
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

    /// Reads the VLAN tag from frame `j`'s control messages, if the kernel stripped one.
    fn vlan_from_cmsg(&self, j: usize) -> Option<[u8; 4]> {
        let h = &self.hdrs[j].msg_hdr;
        // SAFETY: `h` was filled by recvmmsg with msg_control pointing into `self.cmsgs`
        // (still borrowed by us) and msg_controllen set by the kernel; CMSG_* walk it
        // within those bounds.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    let aux: AuxData = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    if aux.tp_status & TP_STATUS_VLAN_VALID == 0 {
                        return None;
                    }
                    return Some(vlan_bytes(aux.tp_status, aux.tp_vlan_tci, aux.tp_vlan_tpid));
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
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

    /// Points message `j` at a vnet header buffer (if the socket has them) and then at
    /// `len` bytes of frame at `frame`, with `cmsg` bytes of control space (0: none).
    fn set_msg(&mut self, j: usize, frame: *mut u8, len: usize, cmsg: usize) {
        let first = if self.vnet { 2 * j } else { 2 * j + 1 };
        self.iovs[2 * j] = libc::iovec {
            iov_base: self.vnet_hdrs[j].as_mut_ptr().cast(),
            iov_len: vnet::HEADER_LEN,
        };
        self.iovs[2 * j + 1] = libc::iovec {
            iov_base: frame.cast(),
            iov_len: len,
        };
        // SAFETY: all-zero is a valid msghdr (no name, no control).
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_iov = &mut self.iovs[first];
        h.msg_iovlen = 2 * j + 2 - first;
        if cmsg > 0 {
            h.msg_control = self.cmsgs[j * CMSG_SPACE..].as_mut_ptr().cast();
            h.msg_controllen = cmsg as _;
        }
        self.hdrs[j].msg_hdr = h;
        self.hdrs[j].msg_len = 0;
    }

    /// Receives through the ring: copies the frames the kernel handed over into `batch`
    /// (as many as it has room for), handing each back at once. A frame too large for a
    /// ring frame (marked `TP_STATUS_COPY`) is read whole from the socket's queue instead.
    fn recv_ring(&mut self, batch: &mut PacketBatch) -> usize {
        let Some(mut ring) = self.ring.take() else {
            return 0;
        };
        let vnet_len = if self.vnet { vnet::HEADER_LEN } else { 0 };
        let mut n = 0;
        while !batch.is_full() {
            let Some((f, status, h)) = ring.peek() else {
                break;
            };
            let (mac, snap, len) = (h.tp_mac as usize, h.tp_snaplen as usize, h.tp_len as usize);
            if status & TP_STATUS_COPY != 0 {
                // The whole frame waits on the socket's queue, in ring order.
                if !batch.fits(len) && len <= batch.max_frame() {
                    break; // the next batch takes it
                }
                self.recv_copy(batch);
                ring.release();
                n += 1;
                continue;
            }
            // Lengths come from the kernel but are bounded against the frame anyway.
            let in_frame = mac >= std::mem::size_of::<Tpacket2Hdr>() + vnet_len
                && mac.checked_add(snap).is_some_and(|e| e <= ring.frame_size);
            if in_frame && len == snap && !batch.fits(snap) && snap <= batch.max_frame() {
                break; // the next batch takes it
            }
            let idx = batch.len();
            let offload = if in_frame {
                // SAFETY: `mac - vnet_len .. mac` lies inside this frame (checked above).
                let hdr = unsafe { std::slice::from_raw_parts(f.add(mac - vnet_len), vnet_len) };
                self.offload_of(hdr)
            } else {
                None
            };
            let stored = match (offload, batch.next_slot()) {
                (Some(o), Some(dst)) if in_frame && len == snap && snap <= dst.len() => {
                    // SAFETY: `mac + snap <= frame_size` (checked above), so the source
                    // lies inside this frame, which we own; `dst` is a distinct buffer.
                    let src = unsafe { std::slice::from_raw_parts(f.add(mac), snap) };
                    dst[..snap].copy_from_slice(src);
                    batch.commit_offload(snap, o)
                }
                (None, _) => batch.commit(0),
                _ => {
                    self.truncated += 1;
                    batch.commit(0)
                }
            };
            ring.release();
            n += 1;
            if stored && snap >= 12 && status & TP_STATUS_VLAN_VALID != 0 {
                batch.insert4(idx, 12, vlan_bytes(status, h.tp_vlan_tci, h.tp_vlan_tpid));
            }
        }
        self.ring = Some(ring);
        n
    }

    /// Reads one frame whole from the socket's queue into `batch` (the copy of a ring
    /// frame marked `TP_STATUS_COPY`); appends an empty packet if there was none or it
    /// did not fit.
    fn recv_copy(&mut self, batch: &mut PacketBatch) {
        let idx = batch.len();
        let Some(dst) = batch.next_slot() else {
            return;
        };
        let (ptr, cap) = (dst.as_mut_ptr(), dst.len());
        self.set_msg(0, ptr, cap, CMSG_SPACE);
        // SAFETY: message 0 points at a vnet header buffer and control space in `self`
        // and at `cap` free bytes of `batch`, all borrowed for the call.
        let r = unsafe {
            libc::recvmsg(
                self.fd.as_raw_fd(),
                &mut self.hdrs[0].msg_hdr,
                libc::MSG_DONTWAIT,
            )
        };
        let vnet_len = if self.vnet { vnet::HEADER_LEN } else { 0 };
        let truncated = self.hdrs[0].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        if r < 0 || truncated || (r as usize) < vnet_len {
            if r < 0 {
                self.errors += 1;
            }
            self.truncated += 1;
            batch.commit(0);
            return;
        }
        let len = r as usize - vnet_len;
        let hdr = self.vnet_hdrs[0];
        let Some(o) = self.offload_of(&hdr) else {
            batch.commit(0);
            return;
        };
        self.rx_large += 1;
        let tag = if len >= 12 {
            self.vlan_from_cmsg(0)
        } else {
            None
        };
        if batch.commit_offload(len, o)
            && let Some(tag) = tag
        {
            batch.insert4(idx, 12, tag);
        }
    }

    /// Receives with `recvmmsg`, each frame at a fixed stride in `batch`.
    fn recv_mmsg(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
        let want = batch.raw_slot_count().min(self.hdrs.len());
        if want == 0 {
            return Ok(0);
        }
        let max = batch.max_frame();
        let (buf, start, stride) = batch.raw_slots();
        let base = buf.as_mut_ptr();
        for j in 0..want {
            let at = start + j * stride + HEADROOM;
            // SAFETY: `raw_slot_count` guarantees `at + max` lies within `buf`.
            let p = unsafe { base.add(at) };
            self.set_msg(j, p, max, CMSG_SPACE);
        }
        // SAFETY: every header points at iovecs and control buffers that live in `self`
        // or `batch`, sized as declared, and both stay borrowed for the call.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => self.io_error("recvmmsg", e).map(|()| 0),
            };
        }
        let vnet_len = if self.vnet { vnet::HEADER_LEN } else { 0 };
        let n = n as usize;
        for j in 0..n {
            let at = start + j * stride + HEADROOM;
            let got = self.hdrs[j].msg_len as usize;
            let truncated = self.hdrs[j].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let hdr = self.vnet_hdrs[j];
            let offload = if truncated || got < vnet_len {
                self.truncated += 1;
                None
            } else {
                self.offload_of(&hdr)
            };
            let idx = batch.len();
            let Some(o) = offload else {
                batch.commit_at(at, 0, Offload::NONE);
                continue;
            };
            let len = got - vnet_len;
            let tag = if len >= 12 {
                self.vlan_from_cmsg(j)
            } else {
                None
            };
            if batch.commit_at(at, len, o)
                && let Some(tag) = tag
            {
                batch.insert4(idx, 12, tag);
            }
        }
        Ok(n)
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

    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let mut sent = 0;
        let mut next = 0;
        while next < batch.len() {
            let count = (batch.len() - next).min(self.hdrs.len());
            for j in 0..count {
                let p = batch.get(next + j);
                self.vnet_hdrs[j] = batch.offload(next + j).to_bytes();
                // The kernel only reads the frame (the pointer is mutable for the iovec).
                self.set_msg(j, p.as_ptr().cast_mut(), p.len(), 0);
            }
            // SAFETY: the headers point at iovecs in `self` that point into `batch`, all
            // borrowed for the call; the kernel only reads the packet bytes.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    count as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                next += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The frame at `next` cannot go (too large, queue full): drop it, count
                // it, and carry on with the rest of the batch.
                // EINVAL: a vnet header the kernel refused for this frame.
                Some(libc::EMSGSIZE | libc::EAGAIN | libc::ENOBUFS | libc::EINVAL) => {
                    // A kernel that refuses UDP segmentation here (a backport without
                    // it, a build without it): VXLAN output cuts datagrams itself from
                    // now on.
                    if e.raw_os_error() == Some(libc::EINVAL)
                        && batch
                            .offload(next)
                            .gso
                            .is_some_and(|g| g.kind == GsoKind::Udp)
                    {
                        self.uso = false;
                    }
                    self.tx_dropped += 1;
                    next += 1;
                }
                Some(libc::EINTR) => {}
                // The device is down or gone: the rest of the batch would fail alike.
                Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV) => {
                    self.tx_dropped += (batch.len() - next) as u64;
                    return self.io_error("sendmmsg", e).map(|()| sent);
                }
                _ => return self.io_error("sendmmsg", e).map(|()| sent),
            }
        }
        Ok(sent)
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
            ring_frames: self.ring.as_ref().map_or(0, |r| r.frames as u32),
            ring_frame_size: self.ring.as_ref().map_or(0, |r| r.frame_size as u32),
            ring_mtu: self.ring_mtu().unwrap_or(0),
            // Counted by the datapath.
            rx_malformed: 0,
            upcall_drops: 0,
        }
    }
}

/// Wakes a datapath thread blocked in [`Poller::wait`]: an eventfd the poller also
/// watches. Slow-path handlers wake it after queueing a first packet's verdict, so the
/// packet does not wait for the poll timeout.
#[derive(Debug, Clone)]
pub struct Waker {
    fd: std::sync::Arc<OwnedFd>,
}

impl Waker {
    /// A new eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self {
            fd: std::sync::Arc::new(fd),
        })
    }

    /// Makes the poller's next (or current) wait return.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd; a full counter (EAGAIN)
        // only means a wake is already pending.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wakes.
    pub fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The descriptor to poll.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Waits until some of the given file descriptors are readable (or report an error).
#[derive(Debug, Default)]
pub struct Poller {
    fds: Vec<libc::pollfd>,
}

// SAFETY: pollfd holds only integers.
unsafe impl Send for Poller {}

impl Poller {
    /// A poller over `fds`.
    pub fn new(fds: &[i32]) -> Self {
        Self {
            fds: fds
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        }
    }

    /// Waits up to `timeout_ms`; returns the indices (in the order given to `new`) of the
    /// descriptors that are readable or report an error condition (see [`Self::revents`])
    /// through `ready`.
    pub fn wait(&mut self, timeout_ms: i32, ready: &mut Vec<usize>) -> io::Result<()> {
        ready.clear();
        for p in &mut self.fds {
            p.revents = 0;
        }
        // SAFETY: `fds` is a valid array of its length for the call.
        let r = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        ready.extend(
            self.fds
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
                })
                .map(|(i, _)| i),
        );
        Ok(())
    }

    /// What the last [`Self::wait`] reported for descriptor `i` (0 past the end): `POLLIN`;
    /// `POLLERR`, a socket error is pending; `POLLHUP`, hung up; `POLLNVAL`, not an open
    /// descriptor.
    pub fn revents(&self, i: usize) -> i16 {
        self.fds.get(i).map_or(0, |p| p.revents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let r = ring_geometry(mtu, 4096, true);
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
        let r = ring_geometry(65535, 4096, true);
        assert_eq!(r.tp_block_size % r.tp_frame_size, 0);
        assert!(r.tp_frame_nr >= RING_MIN_FRAMES as u32);
    }

    /// Runs `f` on a thread in a fresh network namespace with a veth pair `fdr0`/`fdr1`
    /// (MTU 1500, up); false (test skipped) without root or iproute2.
    fn in_veth_netns(f: impl FnOnce() + Send + 'static) -> bool {
        std::thread::spawn(move || {
            // SAFETY: unshare only moves the calling thread (ours, short-lived) into a
            // new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return false;
            }
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

    fn ip(cmd: &str) {
        let ok = std::process::Command::new("ip")
            .args(cmd.split(' '))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {cmd}");
    }

    const SRC: [u8; 6] = [0x02, 0xfd, 0, 0, 0, 1];

    /// A frame from `SRC` of `len` bytes, ethertype 0x88b5, VLAN-tagged if `vid` is set.
    fn frame(len: usize, vid: Option<u16>, fill: u8) -> Vec<u8> {
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
    fn recv_ours(port: &mut AfPacketPort, batch: &mut PacketBatch, want: usize) -> Vec<Vec<u8>> {
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
    fn recv_tcp(port: &mut AfPacketPort, want: usize) -> Vec<(Vec<u8>, Offload)> {
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
    fn tso(
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
            }),
            hdr_len: lay.header_len() as u16,
            ..Offload::NONE
        };
        (f, whole, o)
    }

    fn ethtool(args: &str) {
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
        let got = recv_tcp(&mut rx, 2);
        // The header length is a hint: the kernel reports its linear part (a frame under
        // a page is all linear).
        let meta: Vec<_> = got.iter().map(|(b, m)| (b.len(), m.csum, m.gso)).collect();
        let sent = vec![(f.len(), o.csum, o.gso), (g.len(), p.csum, p.gso)];
        assert_eq!(meta, sent, "{mode:?}: the metadata");
        assert!(
            got[0].0 == f && got[1].0 == g,
            "{mode:?}: whole and untouched"
        );
        let st = rx.stats();
        assert_eq!(st.rx_truncated, 0, "{mode:?}");
        assert_eq!(st.rx_gso, 2, "{mode:?}");
        if mode == RxMode::Ring {
            assert_eq!(st.rx_large, 2, "past the 2 KiB ring frames");
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
                let mut seg = Segmenter::new(&whole, o.gso.unwrap().kind, usize::from(size))
                    .expect("segmenter");
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
        use crate::wire::vxlan::{self, OuterHeaders};
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
            let outer = OuterHeaders {
                src_mac: tx.mac(),
                dst_mac: rx.mac(),
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
            };
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
}
