//! The kernel's side of an AF_PACKET socket: the `<linux/if_packet.h>` constants and
//! structures flowd uses (mirrored, `#[repr(C)]`), the interface ioctls and socket
//! options the port is opened with, and the kernel release check for UDP segmentation.

use super::PortError;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU32;

pub(super) const PACKET_AUXDATA: libc::c_int = 8;
pub(super) const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
pub(super) const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
pub(super) const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
pub(super) const ETH_P_ALL: u16 = 0x0003;
pub(super) const PACKET_RX_RING: libc::c_int = 5;
pub(super) const PACKET_VERSION: libc::c_int = 10;
pub(super) const TPACKET_V2: libc::c_int = 1;
pub(super) const TP_STATUS_KERNEL: u32 = 0;
pub(super) const TP_STATUS_USER: u32 = 1;
pub(super) const PACKET_STATISTICS: libc::c_int = 6;
pub(super) const PACKET_COPY_THRESH: libc::c_int = 7;
pub(super) const PACKET_VNET_HDR: libc::c_int = 15;
pub(super) const TP_STATUS_COPY: u32 = 1 << 1;
pub(super) const PACKET_TX_RING: libc::c_int = 13;
pub(super) const PACKET_LOSS: libc::c_int = 14;
pub(super) const PACKET_QDISC_BYPASS: libc::c_int = 20;
/// Transmit ring frame states (`tp_status`): free for user space to fill...
pub(super) const TP_STATUS_AVAILABLE: u32 = 0;
/// ...filled, for the kernel to send at the next `send`...
pub(super) const TP_STATUS_SEND_REQUEST: u32 = 1;
/// ...taken by the kernel (its skb still lives)...
pub(super) const TP_STATUS_SENDING: u32 = 2;
/// ...or refused (only without `PACKET_LOSS`, which flowd sets).
pub(super) const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// Where a transmit frame's data (the vnet header, then the frame) starts in a
/// TPACKET_V2 ring frame: `TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)` =
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`.
pub(super) const TX_DATA_OFFSET: usize = 32;

/// Mirrors `struct tpacket_stats` from `<linux/if_packet.h>` (TPACKET_V1 and V2).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct TpacketStats {
    pub(super) tp_packets: u32,
    pub(super) tp_drops: u32,
}

/// Mirrors `struct tpacket2_hdr` from `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct Tpacket2Hdr {
    pub(super) tp_status: u32,
    pub(super) tp_len: u32,
    pub(super) tp_snaplen: u32,
    pub(super) tp_mac: u16,
    pub(super) tp_net: u16,
    pub(super) tp_sec: u32,
    pub(super) tp_nsec: u32,
    pub(super) tp_vlan_tci: u16,
    pub(super) tp_vlan_tpid: u16,
    pub(super) tp_padding: [u8; 4],
}

/// Mirrors `struct tpacket_req` from `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct TpacketReq {
    pub(super) tp_block_size: u32,
    pub(super) tp_block_nr: u32,
    pub(super) tp_frame_size: u32,
    pub(super) tp_frame_nr: u32,
}

/// The 4 tag bytes for a VLAN tag the kernel moved to metadata.
pub(super) fn vlan_bytes(status: u32, tci: u16, tpid: u16) -> [u8; 4] {
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
pub(super) struct AuxData {
    pub(super) tp_status: u32,
    pub(super) tp_len: u32,
    pub(super) tp_snaplen: u32,
    pub(super) tp_mac: u16,
    pub(super) tp_net: u16,
    pub(super) tp_vlan_tci: u16,
    pub(super) tp_vlan_tpid: u16,
}

/// Control-message space per frame: one `cmsghdr` + `AuxData`, rounded up.
pub(super) const CMSG_SPACE: usize = 64;

/// Whether the running kernel's release is at least `major.minor` (`uname`); false if it
/// cannot be read.
pub(super) fn kernel_at_least(major: u32, minor: u32) -> bool {
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
pub(super) fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

pub(super) fn sys_err(op: &'static str, port: &str) -> PortError {
    PortError::Io {
        op,
        port: port.to_string(),
        source: io::Error::last_os_error(),
    }
}

/// An error of `op` on `port`.
pub(super) fn sys_io(op: &'static str, port: &str, source: io::Error) -> PortError {
    PortError::Io {
        op,
        port: port.to_string(),
        source,
    }
}

/// An interface request for `name`; None if the name does not fit.
pub(super) fn ifreq(name: &str) -> Option<libc::ifreq> {
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
pub(super) fn if_ioctl(fd: i32, name: &str, req: libc::c_ulong) -> Result<libc::ifreq, PortError> {
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

pub(super) fn setsockopt_int(fd: i32, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    setsockopt_sol(fd, libc::SOL_PACKET, opt, val)
}

pub(super) fn setsockopt_sol(
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

/// A fresh non-blocking AF_PACKET raw socket that receives nothing yet (protocol 0).
pub(super) fn packet_socket(name: &str) -> Result<OwnedFd, PortError> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// What the port needs to know of its netdev, read with ioctls on the socket.
pub(super) struct Device {
    pub(super) ifindex: u32,
    pub(super) mtu: u32,
    pub(super) mac: [u8; 6],
}

impl Device {
    /// Reads the index, MTU and MAC address of interface `name` in `fd`'s namespace.
    pub(super) fn query(fd: i32, name: &str) -> Result<Self, PortError> {
        // SAFETY (union reads): each request fills the member read after it.
        let ifindex = unsafe {
            if_ioctl(fd, name, libc::SIOCGIFINDEX)?
                .ifr_ifru
                .ifru_ifindex
        } as u32;
        let mtu = unsafe { if_ioctl(fd, name, libc::SIOCGIFMTU)?.ifr_ifru.ifru_mtu } as u32;
        let hw = unsafe {
            if_ioctl(fd, name, libc::SIOCGIFHWADDR)?
                .ifr_ifru
                .ifru_hwaddr
        };
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(hw.sa_data) {
            *d = s as u8;
        }
        Ok(Self { ifindex, mtu, mac })
    }
}

/// Puts interface `ifindex` in promiscuous mode for the socket `fd` and binds the socket
/// to it with `ETH_P_ALL`: from here on it receives that interface's frames only.
pub(super) fn bind_promisc(fd: i32, name: &str, ifindex: u32) -> Result<(), PortError> {
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex as i32,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    // SAFETY: `mreq` outlives the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(sys_err("PACKET_ADD_MEMBERSHIP", name));
    }
    bind_ll(fd, name, ifindex, ETH_P_ALL)
}

/// Binds the socket `fd` to interface `ifindex` for `protocol` (host order): `ETH_P_ALL`
/// receives every frame of the interface, 0 receives nothing (a socket that only sends).
pub(super) fn bind_ll(fd: i32, name: &str, ifindex: u32, protocol: u16) -> Result<(), PortError> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` outlives the call and its size is passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(sys_err("bind", name));
    }
    Ok(())
}

/// The system's page size (4096 if the query fails).
pub(super) fn page_size() -> usize {
    // SAFETY: plain sysconf query.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => 4096,
    }
}

/// The size of a ring frame that holds `need` bytes with pages of `page` bytes: a power
/// of two up to a page, whole pages past it (frames never straddle blocks, and the
/// kernel wants 16-byte-aligned frames).
pub(super) fn ring_frame_size(need: usize, page: usize) -> usize {
    if need <= page {
        need.next_power_of_two()
    } else {
        need.next_multiple_of(page)
    }
}

/// A TPACKET ring mapped from its socket ([`map_ring`]): its frames by index, unmapped
/// on drop. The receive and the transmit ring each hold one.
pub(super) struct RingMap {
    base: *mut u8,
    len: usize,
    frame_size: usize,
    frames_per_block: usize,
    block_size: usize,
    frames: usize,
}

impl RingMap {
    /// Bytes per frame.
    pub(super) fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Frames in the ring.
    pub(super) fn frames(&self) -> usize {
        self.frames
    }

    /// The first byte of frame `i` (< `frames`): frames never straddle blocks.
    pub(super) fn frame(&self, i: usize) -> *mut u8 {
        let off = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * self.frame_size;
        // SAFETY: `off + frame_size <= len` by construction of the geometry, so the
        // pointer stays inside the mapping.
        unsafe { self.base.add(off) }
    }

    /// The status word of frame `i`, shared with the kernel.
    pub(super) fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: a frame start inside the mapping (16-byte aligned: the mapping is page
        // aligned and frame and block sizes are multiples of 16), which lives as long as
        // `self`; the kernel accesses the word with word-sized accesses and barriers.
        unsafe { AtomicU32::from_ptr(self.frame(i).cast()) }
    }

    /// The frame after `i`, wrapping.
    pub(super) fn next(&self, i: usize) -> usize {
        if i + 1 == self.frames { 0 } else { i + 1 }
    }

    /// The frame before `i`, wrapping.
    pub(super) fn prev(&self, i: usize) -> usize {
        if i == 0 { self.frames - 1 } else { i - 1 }
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map_ring` made; no reference into it
        // outlives the ring that owns it.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// Asks the kernel for a TPACKET ring of geometry `req` on `fd` (`opt`:
/// `PACKET_RX_RING` or `PACKET_TX_RING`; the version set first) and maps it. On failure,
/// the failed step's name and error; a ring the kernel allocated but that could not be
/// mapped is released (a zero request), so the socket works without one.
pub(super) fn map_ring(
    fd: i32,
    opt: libc::c_int,
    req: &TpacketReq,
) -> Result<RingMap, (&'static str, io::Error)> {
    let request = |req: &TpacketReq| {
        // SAFETY: `req` outlives the call and its size is passed.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                opt,
                (req as *const TpacketReq).cast(),
                std::mem::size_of::<TpacketReq>() as libc::socklen_t,
            )
        }
    };
    if request(req) < 0 {
        let op = if opt == PACKET_TX_RING {
            "PACKET_TX_RING"
        } else {
            "PACKET_RX_RING"
        };
        return Err((op, io::Error::last_os_error()));
    }
    let map_len = req.tp_block_size as usize * req.tp_block_nr as usize;
    // SAFETY: maps the ring the kernel just allocated for `fd`; the result is checked.
    // (The ring's pages are kernel memory, never swapped: no MAP_LOCKED; MAP_POPULATE
    // spares the first pass its page faults.)
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
        let e = io::Error::last_os_error();
        request(&TpacketReq::default());
        return Err(("mmap", e));
    }
    Ok(RingMap {
        base: base.cast(),
        len: map_len,
        frame_size: req.tp_frame_size as usize,
        frames_per_block: (req.tp_block_size / req.tp_frame_size) as usize,
        block_size: req.tp_block_size as usize,
        frames: req.tp_frame_nr as usize,
    })
}
