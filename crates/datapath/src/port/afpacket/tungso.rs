//! UDP-tunnel segmentation for an uplink: a tap device whose writes the kernel cuts.
//!
//! AF_PACKET cannot hand the kernel a VXLAN frame whose inner TCP super-frame is still
//! to be cut (its vnet header is 10 or 12 bytes, with no room for the tunnel's offsets).
//! A tun/tap device can, since Linux 6.17: with a 24-byte vnet header
//! (`struct virtio_net_hdr_v1_hash_tunnel`, [`crate::wire::vnet::TUNNEL_HEADER_LEN`]) a
//! frame written to it becomes one skb of type `SKB_GSO_UDP_TUNNEL(_CSUM)`, as the
//! kernel's own VXLAN device makes. [`TunnelInjector`] is such a tap, with nothing
//! configured on it (no address, no ARP, IPv6 off): it only takes flowd's writes. What
//! it receives is redirected to the uplink's egress by a tc filter on its ingress
//! (`u32` match-all + `mirred egress redirect`, set by whoever opens it: flowd's daemon
//! through `offload::redirect_ingress`), so the uplink (a NIC with tunnel TSO, or the
//! kernel's GSO in software) cuts each super-frame once, at the lowest point, instead of
//! flowd writing each segment and the receiver re-checking each.
//!
//! The device lives as long as its file descriptors: closing the last (flowd exiting,
//! even on `kill -9`) removes it and its filter.

use super::sys::{if_ioctl, ifreq, sys_io};
use super::{PacketBatch, PortError};
use crate::wire::vnet::{Offload, TUNNEL_HEADER_LEN};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETVNETLE: libc::c_ulong = 0x4004_54dc;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
/// `TUN_F_UDP_TUNNEL_GSO` and `TUN_F_UDP_TUNNEL_GSO_CSUM` (Linux 6.17): a kernel
/// without them refuses the whole `TUNSETOFFLOAD` with `EINVAL`.
const TUN_F_UDP_TUNNEL: libc::c_ulong = 0x080 | 0x100;
/// The name asked for; the kernel replaces `%d` with the first free number.
const NAME_PATTERN: &str = "flowdgso%d";

/// A tap device whose writes the kernel cuts as UDP-tunnel super-frames (see the module
/// documentation). Cloning shares the device (one per datapath thread, one device).
#[derive(Debug)]
pub struct TunnelInjector {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
}

impl TunnelInjector {
    /// Creates the tap in the calling thread's network namespace and brings it up.
    /// Errors: no `/dev/net/tun`, no permission, or a kernel without UDP-tunnel
    /// segmentation for tun (`EINVAL` from `TUNSETOFFLOAD`; [`Self::is_unsupported`]).
    pub fn open() -> Result<Self, PortError> {
        let err = |op| move |e: io::Error| sys_io(op, NAME_PATTERN, e);
        // SAFETY: a plain open of a path with a NUL-terminated name.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if raw < 0 {
            return Err(err("open /dev/net/tun")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a descriptor just opened and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = ifreq(NAME_PATTERN).expect("the pattern fits IFNAMSIZ");
        req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        // SAFETY: `req` is a valid ifreq; TUNSETIFF fills its name.
        if unsafe { libc::ioctl(raw, TUNSETIFF as _, &mut req) } < 0 {
            return Err(err("TUNSETIFF")(io::Error::last_os_error()));
        }
        let name: String = req
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect();
        let int_ioctl = |op, req: libc::c_ulong, v: libc::c_int| {
            // SAFETY: these requests read one int through the pointer.
            if unsafe { libc::ioctl(raw, req as _, &v) } < 0 {
                return Err(sys_io(op, &name, io::Error::last_os_error()));
            }
            Ok(())
        };
        int_ioctl(
            "TUNSETVNETHDRSZ",
            TUNSETVNETHDRSZ,
            TUNNEL_HEADER_LEN as libc::c_int,
        )?;
        int_ioctl("TUNSETVNETLE", TUNSETVNETLE, 1)?;
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UDP_TUNNEL;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(raw, TUNSETOFFLOAD as _, offloads) } < 0 {
            return Err(sys_io("TUNSETOFFLOAD", &name, io::Error::last_os_error()));
        }
        // Nothing but flowd's writes: no IPv6 link-local address, router solicitations
        // or MLD reports queued to a reader that never reads.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        let ctl = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::DGRAM, None)
            .map_err(|e| sys_io("socket", &name, e))?;
        let mut up = if_ioctl(ctl.as_raw_fd(), &name, libc::SIOCGIFFLAGS)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe {
            up.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_NOARP) as libc::c_short;
        }
        // SAFETY: `up` is a valid ifreq naming the device, with its flags set.
        if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS as _, &up) } < 0 {
            return Err(sys_io("SIOCSIFFLAGS", &name, io::Error::last_os_error()));
        }
        let idx = if_ioctl(ctl.as_raw_fd(), &name, libc::SIOCGIFINDEX)?;
        // SAFETY: SIOCGIFINDEX filled the index member of the union.
        let ifindex = unsafe { idx.ifr_ifru.ifru_ifindex } as u32;
        Ok(Self { fd, name, ifindex })
    }

    /// Whether an [`Self::open`] error says the kernel has no UDP-tunnel segmentation for
    /// tun devices (before Linux 6.17), or no tun at all: nothing to warn about, VXLAN
    /// output segments in flowd instead.
    pub fn is_unsupported(e: &PortError) -> bool {
        matches!(e, PortError::Io { op, source, .. }
            if (*op == "TUNSETOFFLOAD" && source.raw_os_error() == Some(libc::EINVAL))
                || (*op == "open /dev/net/tun" && source.raw_os_error() == Some(libc::ENOENT)))
    }

    /// The device's name (`flowdgsoN`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Another handle on the same device (for another datapath thread).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
            name: self.name.clone(),
            ifindex: self.ifindex,
        })
    }

    /// Writes frame `i` of `batch` with its metadata as a 24-byte header. Errors are the
    /// kernel's: `EINVAL` for metadata it refused, `EIO` with the device down, ...
    pub(super) fn write(&self, batch: &PacketBatch, i: usize) -> io::Result<()> {
        self.write_parts(&[batch.get(i)], &batch.offload(i))
    }

    /// Writes one frame made of `parts` (at most [`MAX_PARTS`]) with the metadata
    /// `offload` as a 24-byte header. Errors as [`Self::write`]'s.
    pub(super) fn write_parts(&self, parts: &[&[u8]], offload: &Offload) -> io::Result<()> {
        let hdr = offload.to_tunnel_bytes();
        let (iov, n) = iovecs(&hdr, parts);
        // SAFETY: the iovecs point at live buffers the kernel only reads.
        let r = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), n as i32) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Most parts a frame sent directly is made of (outer headers, inner frame).
pub(super) const MAX_PARTS: usize = 2;

/// The iovecs of `hdr` followed by `parts` (at most [`MAX_PARTS`] of them), and how many
/// are used. They point into the buffers given: use them while those live.
pub(super) fn iovecs(hdr: &[u8], parts: &[&[u8]]) -> ([libc::iovec; MAX_PARTS + 1], usize) {
    let iovec = |b: &[u8]| libc::iovec {
        iov_base: b.as_ptr().cast_mut().cast(),
        iov_len: b.len(),
    };
    let mut iov = [iovec(&[]); MAX_PARTS + 1];
    iov[0] = iovec(hdr);
    let n = parts.len().min(MAX_PARTS);
    for (v, p) in iov[1..].iter_mut().zip(&parts[..n]) {
        *v = iovec(p);
    }
    (iov, n + 1)
}
