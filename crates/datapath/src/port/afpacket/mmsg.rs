//! Batched socket I/O: the `mmsghdr`/`iovec` scratch messages (a vnet header, then the
//! frame), receiving with `recvmmsg` (the fallback without a ring; the VLAN tag read back
//! from `PACKET_AUXDATA`), and sending with `sendmmsg`, dropping and counting the one frame
//! the kernel refuses; one frame made of parts with `sendmsg` ([`Port::send_direct`]), and
//! UDP-tunnel super-frames to the uplink's tap.
//!
//! [`Port::send_direct`]: crate::port::Port::send_direct

use super::sys::*;
use super::{AfPacketPort, tungso};
use crate::port::batch::HEADROOM;
use crate::port::{PacketBatch, PortError};
use crate::wire::vnet::{self, GsoKind, Offload};
use std::io;
use std::os::fd::AsRawFd;

impl AfPacketPort {
    /// Reads the VLAN tag from frame `j`'s control messages, if the kernel stripped one.
    pub(super) fn vlan_from_cmsg(&self, j: usize) -> Option<[u8; 4]> {
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

    /// Points message `j` at a vnet header buffer (if the socket has them) and then at
    /// `len` bytes of frame at `frame`, with `cmsg` bytes of control space (0: none).
    pub(super) fn set_msg(&mut self, j: usize, frame: *mut u8, len: usize, cmsg: usize) {
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

    /// Receives with `recvmmsg`, each frame at a fixed stride in `batch`.
    pub(super) fn recv_mmsg(&mut self, batch: &mut PacketBatch) -> Result<usize, PortError> {
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

    /// Sends frames `from..to` of `batch` with `sendmmsg`, as many messages per call as
    /// the port has headers.
    pub(super) fn send_mmsg_range(
        &mut self,
        batch: &PacketBatch,
        from: usize,
        to: usize,
    ) -> Result<usize, PortError> {
        let to = to.min(batch.len());
        let mut sent = 0;
        let mut next = from;
        while next < to {
            if self.for_tap(batch.get(next), &batch.offload(next)) {
                sent += usize::from(self.send_tunnel(&[batch.get(next)], &batch.offload(next)));
                next += 1;
                continue;
            }
            // The frames up to the next one for the tap.
            let count = (next..to)
                .take(self.hdrs.len())
                .take_while(|&i| !self.for_tap(batch.get(i), &batch.offload(i)))
                .count();
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
                    self.tx_dropped += (to - next) as u64;
                    return self.io_error("sendmmsg", e).map(|()| sent);
                }
                _ => return self.io_error("sendmmsg", e).map(|()| sent),
            }
        }
        Ok(sent)
    }

    /// Writes one frame made of `parts` with its metadata to the port's tap
    /// ([`TunnelInjector`]): whether the kernel took it (counted by
    /// [`Self::tunnel_sent`]).
    fn send_tunnel(&mut self, parts: &[&[u8]], offload: &Offload) -> bool {
        let r = match &mut self.tunnel {
            Some(t) => t.write_parts(parts, offload),
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        self.tunnel_sent(r)
    }
}

impl AfPacketPort {
    /// Whether a frame goes to the port's tap rather than its socket: a UDP-tunnel
    /// super-frame, or a frame of a connection the tap may still hold frames of
    /// ([`TunnelInjector::carries`]).
    pub(super) fn for_tap(&self, frame: &[u8], o: &Offload) -> bool {
        o.gso.is_some_and(|g| g.tunnel.is_some())
            || (o.gso.is_none() && self.tunnel.as_ref().is_some_and(|t| t.carries(frame)))
    }

    /// Sends one frame made of `parts` (at most [`tungso::MAX_PARTS`]) with its metadata
    /// now, with `sendmsg` (or to the tap: [`Self::for_tap`]): whether the kernel took
    /// it. What it refused is counted as `send` counts it.
    pub(super) fn send_parts(
        &mut self,
        parts: &[&[u8]],
        offload: Offload,
    ) -> Result<bool, PortError> {
        if self.for_tap(parts.first().copied().unwrap_or_default(), &offload) {
            return Ok(self.send_tunnel(parts, &offload));
        }
        let hdr = offload.to_bytes();
        let (mut iov, n) = tungso::iovecs(&hdr, parts);
        let first = usize::from(!self.vnet);
        // SAFETY: all-zero is a valid msghdr (no name, no control).
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_iov = iov[first..].as_mut_ptr();
        h.msg_iovlen = n - first;
        loop {
            // SAFETY: the header points at iovecs on this stack frame that point at live
            // buffers the kernel only reads.
            let r = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &h, libc::MSG_DONTWAIT) };
            if r >= 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EMSGSIZE | libc::EAGAIN | libc::ENOBUFS | libc::EINVAL) => {
                    self.tx_dropped += 1;
                    return Ok(false);
                }
                _ => {
                    self.tx_dropped += 1;
                    return self.io_error("sendmsg", e).map(|()| false);
                }
            }
        }
    }

    /// Counts the outcome of a write to the tap; true if the kernel took the frame. A
    /// refusal of the metadata (`EINVAL`) turns tunnel segmentation off for good: VXLAN
    /// output segments in flowd from the next frame on.
    fn tunnel_sent(&mut self, r: io::Result<()>) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                if e.raw_os_error() == Some(libc::EINVAL) {
                    self.tunnel = None;
                }
                self.tx_dropped += 1;
                self.errors += 1;
                false
            }
        }
    }
}
