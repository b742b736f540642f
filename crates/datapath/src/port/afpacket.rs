//! [`AfPacketPort`]: an AF_PACKET raw socket bound to one netdev, batched with
//! `recvmmsg`/`sendmmsg`.
//!
//! - The socket is created with protocol 0 (it receives nothing) and only then bound to
//!   the interface with `ETH_P_ALL`, so no packet of another interface slips in.
//! - `PACKET_IGNORE_OUTGOING` keeps the frames flowd transmits from coming back on the
//!   same socket; the port is put in promiscuous mode (representors carry every MAC).
//! - The kernel strips VLAN tags into metadata on receive (VLAN offload); with
//!   `PACKET_AUXDATA` each frame's tag is read back and reinserted in the slot's headroom,
//!   so the datapath sees the frame as it was on the wire.
//! - A frame larger than a batch slot is received truncated (`MSG_TRUNC`): it is kept as
//!   an empty packet (which the datapath drops) and counted in [`AfPacketPort::truncated`].
//!   Representors of VMs that send TSO super-frames need `ethtool -K <rep> gro off` or
//!   slots sized for 64 KiB.
//!
//! This is the one module of the crate with `unsafe`: the system calls themselves.
#![allow(unsafe_code)]

use super::batch::HEADROOM;
use super::{PacketBatch, Port, PortError};
use crate::IfIndex;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const ETH_P_ALL: u16 = 0x0003;

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

/// An AF_PACKET socket bound to a netdev.
pub struct AfPacketPort {
    name: String,
    ifindex: IfIndex,
    mtu: u32,
    mac: [u8; 6],
    fd: OwnedFd,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    cmsgs: Vec<u8>,
    truncated: u64,
    tx_dropped: u64,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are scratch space, rewritten before every
// system call to point into buffers borrowed for that call only; they are never
// dereferenced outside it, so moving the port to another thread is sound.
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
    /// of up to `batch` frames.
    pub fn open(name: &str, batch: usize) -> Result<Self, PortError> {
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
        // Transmit straight to the driver: flowd's batches are its queue, and the qdisc
        // layer would only add a lock and a copy of bookkeeping per frame.
        let _ = setsockopt_int(raw, PACKET_QDISC_BYPASS, 1);
        // Kernels before 4.20 lack the option: outgoing frames then come back, and the
        // datapath drops them as they carry our own source MACs; not fatal.
        let _ = setsockopt_int(raw, PACKET_IGNORE_OUTGOING, 1);
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
            // SAFETY: all-zero mmsghdr/iovec are valid (null pointers, zero lengths).
            hdrs: vec![unsafe { std::mem::zeroed() }; batch],
            iovs: vec![unsafe { std::mem::zeroed() }; batch],
            cmsgs: vec![0u8; batch * CMSG_SPACE],
            truncated: 0,
            tx_dropped: 0,
        })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Frames received larger than a batch slot (dropped).
    pub fn truncated(&self) -> u64 {
        self.truncated
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
                    let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    let [a, b] = tpid.to_be_bytes();
                    let [c2, d] = aux.tp_vlan_tci.to_be_bytes();
                    return Some([a, b, c2, d]);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
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
        let first = batch.len();
        let want = (batch.capacity() - first).min(self.hdrs.len());
        if want == 0 {
            return Ok(0);
        }
        let (buf, slot) = batch.slots_mut();
        for j in 0..want {
            let start = (first + j) * slot + HEADROOM;
            self.iovs[j] = libc::iovec {
                iov_base: buf[start..].as_mut_ptr().cast(),
                iov_len: slot - HEADROOM,
            };
            let h = &mut self.hdrs[j].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[j];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[j * CMSG_SPACE..].as_mut_ptr().cast();
            h.msg_controllen = CMSG_SPACE as _;
            h.msg_flags = 0;
            self.hdrs[j].msg_len = 0;
        }
        // SAFETY: every header points at an iovec and control buffer that live in `self`
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
                _ => Err(PortError::Io {
                    op: "recvmmsg",
                    port: self.name.clone(),
                    source: e,
                }),
            };
        }
        let n = n as usize;
        for j in 0..n {
            let truncated = self.hdrs[j].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let len = if truncated {
                self.truncated += 1;
                0
            } else {
                self.hdrs[j].msg_len as usize
            };
            let tag = if len >= 12 {
                self.vlan_from_cmsg(j)
            } else {
                None
            };
            batch.commit(len);
            if let Some(tag) = tag {
                batch.insert4(first + j, 12, tag);
            }
        }
        Ok(n)
    }

    fn send(&mut self, batch: &PacketBatch) -> Result<usize, PortError> {
        let mut sent = 0;
        let mut next = 0;
        while next < batch.len() {
            let count = (batch.len() - next).min(self.hdrs.len());
            for j in 0..count {
                let p = batch.get(next + j);
                self.iovs[j] = libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                };
                // SAFETY: all-zero is a valid msghdr (no name, no control).
                self.hdrs[j].msg_hdr = unsafe { std::mem::zeroed() };
                self.hdrs[j].msg_hdr.msg_iov = &mut self.iovs[j];
                self.hdrs[j].msg_hdr.msg_iovlen = 1;
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
                // The frame at `next` cannot go (too large, queue full, link down): drop
                // it, count it, and carry on with the rest of the batch.
                Some(
                    libc::EMSGSIZE | libc::EAGAIN | libc::ENOBUFS | libc::ENETDOWN | libc::ENXIO,
                ) => {
                    self.tx_dropped += 1;
                    next += 1;
                }
                Some(libc::EINTR) => {}
                _ => {
                    return Err(PortError::Io {
                        op: "sendmmsg",
                        port: self.name.clone(),
                        source: e,
                    });
                }
            }
        }
        Ok(sent)
    }
}

/// Waits until some of the given file descriptors are readable.
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
    /// readable descriptors through `ready`.
    pub fn wait(&mut self, timeout_ms: i32, ready: &mut Vec<usize>) -> io::Result<()> {
        ready.clear();
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
                .filter(|(_, p)| p.revents & (libc::POLLIN | libc::POLLERR) != 0)
                .map(|(i, _)| i),
        );
        Ok(())
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
}
