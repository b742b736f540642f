//! The TPACKET_V2 receive ring (`PACKET_RX_RING`): its geometry, its mapping, and
//! reading frames out of it into a [`PacketBatch`] (with the whole-frame copy from the
//! socket's queue for a frame marked `TP_STATUS_COPY`). See the parent module's docs
//! ("The receive ring") for why it is sized as it is.

use super::AfPacketPort;
use super::sys::*;
use crate::port::PacketBatch;
use crate::wire::vnet;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

/// Bytes the kernel puts before the MAC header in a TPACKET_V2 frame of a raw socket:
/// `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)` = 80, minus the 14-byte Ethernet header; the
/// vnet header (when the socket has one) lies in the 10 bytes after that, just before
/// the MAC header.
pub(super) const RING_MAC_OFFSET: usize = 66;
/// Ring memory per port by default (for MTUs up to ~1900: 1024 frames of 2 KiB).
pub const DEFAULT_RING_BYTES: usize = 2 << 20;
/// Fewest frames in a ring (jumbo MTUs).
pub(super) const RING_MIN_FRAMES: usize = 256;
/// Target block size.
pub(super) const RING_BLOCK: usize = 64 << 10;

/// The geometry of a receive ring of about `bytes` for a port of MTU `mtu` with pages of
/// `page` bytes, for a socket with a vnet header or without.
pub(super) fn ring_geometry(mtu: u32, page: usize, vnet: bool, bytes: usize) -> TpacketReq {
    let vnet = if vnet { vnet::HEADER_LEN } else { 0 };
    let need = RING_MAC_OFFSET + vnet + mtu as usize + 14 + 8;
    let frame = ring_frame_size(need, page);
    let per_block = RING_BLOCK.div_ceil(frame).max(1);
    let block = frame * per_block;
    let blocks = (bytes / block)
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
pub(super) struct RxRing {
    pub(super) map: RingMap,
    /// The MTU the frames were sized for.
    pub(super) mtu: u32,
    /// The next frame to read.
    pub(super) head: usize,
}

impl RxRing {
    /// Sets up and maps a ring on `fd` (which must not be bound yet); None if the kernel
    /// refuses (the caller falls back to `recvmmsg`).
    pub(super) fn setup(fd: i32, mtu: u32, vnet: bool, bytes: usize) -> Option<Self> {
        let req = ring_geometry(mtu, page_size(), vnet, bytes);
        setsockopt_int(fd, PACKET_VERSION, TPACKET_V2).ok()?;
        let map = map_ring(fd, PACKET_RX_RING, &req).ok()?;
        Some(Self { map, mtu, head: 0 })
    }

    /// The frame at the head of the ring, if the kernel handed it over: its start and
    /// its header (read once: the frame is ours until [`Self::release`]).
    fn peek(&self) -> Option<(*mut u8, u32, Tpacket2Hdr)> {
        let status = self.map.status(self.head).load(Ordering::Acquire);
        if status & TP_STATUS_USER == 0 {
            return None;
        }
        let f = self.map.frame(self.head);
        // SAFETY: the frame is ours until we store TP_STATUS_KERNEL (the kernel does not
        // write it meanwhile; the Acquire load orders its writes before our reads); the
        // header lies at the aligned start of the frame.
        let h: Tpacket2Hdr = unsafe { std::ptr::read(f.cast()) };
        Some((f, status, h))
    }

    /// Hands the head frame back to the kernel and moves to the next.
    fn release(&mut self) {
        self.map
            .status(self.head)
            .store(TP_STATUS_KERNEL, Ordering::Release);
        self.head = self.map.next(self.head);
    }
}

impl AfPacketPort {
    /// Receives through the ring: copies the frames the kernel handed over into `batch`
    /// (as many as it has room for), handing each back at once. A frame too large for a
    /// ring frame (marked `TP_STATUS_COPY`) is read whole from the socket's queue instead.
    pub(super) fn recv_ring(&mut self, batch: &mut PacketBatch) -> usize {
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
                && mac
                    .checked_add(snap)
                    .is_some_and(|e| e <= ring.map.frame_size());
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
}
