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
//!
//! **Threaded** ([`TapMode::Threaded`], the daemon's default): the tap runs its receive
//! in a NAPI kernel thread of its own (`IFF_NAPI`, `/sys/class/net/<tap>/threaded`, GRO
//! off). A write only queues the frame; the kernel thread, which the scheduler puts on
//! whichever CPU is free, carries it through the redirect, the uplink's segmentation
//! and, where the uplink is a veth, the receiver's whole stack, work that otherwise
//! runs on flowd's datapath thread inside the write. Frames then leave the tap later
//! than frames sent on the uplink's socket after them, so a connection's frames must
//! not be split between the two: the injector remembers (by outer UDP source port,
//! which VXLAN output derives from the inner connection) which connections it carried
//! in the last [`ORDER_MS`] and takes their small frames too ([`TunnelInjector::carries`]).
//! **Inline** ([`TapMode::Inline`]): the write carries the frame to the uplink before
//! it returns, so order holds by itself.

use super::PortError;
use super::sys::{if_ioctl, ifreq, sys_io};
use crate::wire::vnet::{Offload, TUNNEL_HEADER_LEN};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETVNETLE: libc::c_ulong = 0x4004_54dc;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NAPI: libc::c_short = 0x0010;
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
/// A tap's largest MTU (`MAX_MTU` less its Ethernet header).
const MAX_MTU: libc::c_int = 65_535 - 14;
/// `ETHTOOL_SGRO`: sets GRO on or off (`struct ethtool_value`).
const ETHTOOL_SGRO: u32 = 0x2c;
/// How long (ms) a connection whose frame went through a threaded tap keeps its later
/// frames on the tap: far longer than the tap's kernel thread takes to drain its queue
/// on a loaded host, far shorter than a connection's idle gaps matter.
pub const ORDER_MS: u32 = 100;
/// Connections remembered, by outer UDP source port (a power of two): two connections
/// sharing a slot only make each other's small frames take the tap.
const ORDER_SLOTS: usize = 256;

/// How a tap carries what flowd writes to the uplink (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapMode {
    /// In the writer's system call, before `writev` returns.
    Inline,
    /// In the tap's own NAPI kernel thread.
    Threaded,
}

/// A tap device whose writes the kernel cuts as UDP-tunnel super-frames (see the module
/// documentation). Cloning shares the device (one per datapath thread, one device).
#[derive(Debug)]
pub struct TunnelInjector {
    fd: OwnedFd,
    name: String,
    ifindex: u32,
    mode: TapMode,
    /// When (coarse monotonic ms, 0: never) a frame with each outer UDP source port slot
    /// was last written, while threaded.
    recent: Box<[u32; ORDER_SLOTS]>,
}

impl TunnelInjector {
    /// Creates the tap in the calling thread's network namespace and brings it up, in
    /// `mode` (threaded falls back to inline where the kernel cannot thread its NAPI:
    /// [`Self::mode`] says which it got). Errors: no `/dev/net/tun`, no permission, or a
    /// kernel without UDP-tunnel segmentation for tun (`EINVAL` from `TUNSETOFFLOAD`;
    /// [`Self::is_unsupported`]).
    pub fn open(mode: TapMode) -> Result<Self, PortError> {
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
        let napi = if mode == TapMode::Threaded {
            IFF_NAPI
        } else {
            0
        };
        req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | napi;
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
        // Its MTU as large as a tap takes: a frame of a connection the tap carries
        // ([`Self::carries`]) may be as large as the uplink's.
        if let Some(mut mtu) = ifreq(&name) {
            mtu.ifr_ifru.ifru_mtu = MAX_MTU;
            // SAFETY: a valid ifreq naming the device, with its MTU set.
            let _ = unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFMTU as _, &mtu) };
        }
        let idx = if_ioctl(ctl.as_raw_fd(), &name, libc::SIOCGIFINDEX)?;
        // SAFETY: SIOCGIFINDEX filled the index member of the union.
        let ifindex = unsafe { idx.ifr_ifru.ifru_ifindex } as u32;
        let mode = if mode == TapMode::Threaded && thread_napi(ctl.as_raw_fd(), &name, ifindex) {
            TapMode::Threaded
        } else {
            TapMode::Inline
        };
        Ok(Self {
            fd,
            name,
            ifindex,
            mode,
            recent: Box::new([0; ORDER_SLOTS]),
        })
    }

    /// How the tap carries frames: threaded only if asked and the kernel could.
    pub fn mode(&self) -> TapMode {
        self.mode
    }

    /// Whether `frame`, which has no UDP-tunnel segmentation of its own, must still go
    /// through the tap: the tap is threaded and carried a frame of the same connection
    /// (the same outer UDP source port) in the last [`ORDER_MS`], which may still be
    /// queued there. Sent on the uplink's socket, it could overtake it.
    pub fn carries(&self, frame: &[u8]) -> bool {
        if self.mode != TapMode::Threaded {
            return false;
        }
        let Some(sport) = outer_udp_source_port(frame) else {
            return false;
        };
        let at = self.recent[usize::from(sport) % ORDER_SLOTS];
        at != 0 && coarse_ms().wrapping_sub(at) < ORDER_MS
    }

    /// Remembers that a frame of `frame`'s connection went through the tap.
    fn wrote(&mut self, frame: &[u8]) {
        if self.mode == TapMode::Threaded
            && let Some(sport) = outer_udp_source_port(frame)
        {
            self.recent[usize::from(sport) % ORDER_SLOTS] = coarse_ms().max(1);
        }
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
            mode: self.mode,
            recent: Box::new([0; ORDER_SLOTS]),
        })
    }

    /// Writes one frame made of `parts` (at most [`MAX_PARTS`]) with the metadata
    /// `offload` as a 24-byte header. Errors are the kernel's: `EINVAL` for
    /// metadata it refused, `EIO` with the device down, ...
    pub(super) fn write_parts(&mut self, parts: &[&[u8]], offload: &Offload) -> io::Result<()> {
        if let Some(first) = parts.first() {
            self.wrote(first);
        }
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

/// Makes the tap's receive run in its own NAPI kernel thread, GRO off (the frames are
/// super-frames already, and GRO would hold them back to merge): whether it could.
/// Sysfs shows the network namespace it was mounted in: a thread that entered another
/// namespace without mounting its own (`ip netns exec` does) would find the host's
/// devices there, so the device's index is checked first.
fn thread_napi(ctl: i32, name: &str, ifindex: u32) -> bool {
    let dir = format!("/sys/class/net/{name}");
    let ours = std::fs::read_to_string(format!("{dir}/ifindex"))
        .is_ok_and(|s| s.trim().parse() == Ok(ifindex));
    if !ours || std::fs::write(format!("{dir}/threaded"), "1").is_err() {
        return false;
    }
    let Some(mut req) = ifreq(name) else {
        return false;
    };
    let mut value = [ETHTOOL_SGRO, 0];
    req.ifr_ifru.ifru_data = value.as_mut_ptr().cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_SGRO reads a `struct ethtool_value` (two u32s)
    // through the pointer, which outlives the call.
    unsafe { libc::ioctl(ctl, libc::SIOCETHTOOL as _, &req) >= 0 }
}

/// The UDP source port of an Ethernet frame carrying IPv4 or IPv6 UDP (no extension
/// headers), which is what VXLAN output writes.
fn outer_udp_source_port(frame: &[u8]) -> Option<u16> {
    let l4 = match frame.get(12..14)? {
        [0x08, 0x00] if frame.get(23) == Some(&17) => 14 + usize::from(frame[14] & 0x0f) * 4,
        [0x86, 0xdd] if frame.get(20) == Some(&17) => 54,
        _ => return None,
    };
    let p = frame.get(l4..l4 + 2)?;
    Some(u16::from_be_bytes([p[0], p[1]]))
}

/// Coarse monotonic milliseconds (a few ns, no system call; wraps after 49 days).
fn coarse_ms() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` outlives the call; CLOCK_MONOTONIC_COARSE cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outer_udp_source_port_is_read_where_vxlan_output_writes_it() {
        let mut v4 = vec![0u8; 64];
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        v4[14] = 0x45;
        v4[23] = 17;
        v4[34..36].copy_from_slice(&50000u16.to_be_bytes());
        assert_eq!(outer_udp_source_port(&v4), Some(50000));
        // IPv4 options move the UDP header.
        v4[14] = 0x46;
        v4[38..40].copy_from_slice(&50001u16.to_be_bytes());
        assert_eq!(outer_udp_source_port(&v4), Some(50001));
        let mut v6 = vec![0u8; 70];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[20] = 17;
        v6[54..56].copy_from_slice(&50002u16.to_be_bytes());
        assert_eq!(outer_udp_source_port(&v6), Some(50002));
        // Not UDP, another ethertype, or cut short: none.
        let mut tcp = v4.clone();
        tcp[23] = 6;
        assert_eq!(outer_udp_source_port(&tcp), None);
        let mut arp = v4.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(outer_udp_source_port(&arp), None);
        for n in 0..40 {
            assert_eq!(outer_udp_source_port(&v4[..n]), None, "{n} bytes");
        }
        assert_eq!(outer_udp_source_port(&v6[..55]), None);
    }
}
