//! The TPACKET_V2 transmit ring (`PACKET_TX_RING`): a second AF_PACKET socket per port
//! that only sends, its ring mapped once; filling ring frames from a [`PacketBatch`],
//! one `send` per batch, and the frames that go through the port's own socket instead.
//! See the parent module's docs ("The transmit ring") for why and what it costs.

use super::AfPacketPort;
use super::sys::*;
use crate::port::{PacketBatch, PortError};
use crate::wire::{GsoKind, Offload, vnet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

/// Frames in a transmit ring: 8 batches of 32 (512 KiB at MTU 1500).
pub(super) const TX_RING_FRAMES: usize = 256;

/// How an [`AfPacketPort`] transmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxMode {
    /// A TPACKET_V2 `PACKET_TX_RING` on a second socket, one `send` per batch; frames the
    /// ring does not take (super-frames larger than a ring frame, UDP super-frames,
    /// frames over the MTU) and every frame if the ring cannot be set up go through
    /// `sendmmsg`.
    Ring,
    /// `sendmmsg` on the port's socket.
    Sendmmsg,
}

impl TxMode {
    /// The mode the environment variable `FLOWD_TX` names (`ring` or `sendmmsg`), or
    /// `default` if unset or anything else: a switch to compare the two.
    pub fn from_env(default: Self) -> Self {
        match std::env::var("FLOWD_TX").as_deref() {
            Ok("ring") => Self::Ring,
            Ok("sendmmsg") => Self::Sendmmsg,
            _ => default,
        }
    }
}

/// The geometry of a transmit ring for MTU `mtu` with pages of `page` bytes: frames that
/// hold the data offset, a vnet header, an MTU-sized frame, its Ethernet header and two
/// VLAN tags, rounded as the receive ring's are; blocks of about 64 KiB.
pub(super) fn tx_ring_geometry(mtu: u32, page: usize) -> TpacketReq {
    let need = TX_DATA_OFFSET + vnet::HEADER_LEN + mtu as usize + 14 + 8;
    let frame = ring_frame_size(need, page);
    let per_block = (super::ring::RING_BLOCK / frame).max(1);
    let blocks = TX_RING_FRAMES.div_ceil(per_block);
    TpacketReq {
        tp_block_size: (frame * per_block) as u32,
        tp_block_nr: blocks as u32,
        tp_frame_size: frame as u32,
        tp_frame_nr: (blocks * per_block) as u32,
    }
}

/// A transmit ring on its own socket, bound to the port's device.
pub(super) struct TxRing {
    /// Declared before the socket: unmapped before it is closed.
    map: RingMap,
    fd: OwnedFd,
    /// The next frame to fill.
    head: usize,
    /// The first frame filled and not yet taken by the kernel.
    khead: usize,
    /// Frames filled and not yet taken (from `khead` to `head`, all of them when full).
    queued: usize,
    /// Bytes (after the vnet header) the port's vnet setting puts before each frame.
    vnet_len: usize,
}

impl TxRing {
    /// Opens a sending socket on device `ifindex` (`vnet`: with vnet headers, as the
    /// port's socket), sets up and maps its ring; the error says which step failed.
    pub(super) fn setup(
        name: &str,
        ifindex: u32,
        mtu: u32,
        vnet: bool,
        qdisc_bypass: bool,
    ) -> Result<Self, PortError> {
        let fd = packet_socket(name)?;
        let raw = fd.as_raw_fd();
        let err = |op| move |e| sys_io(op, name, e);
        if vnet {
            setsockopt_int(raw, PACKET_VNET_HDR, 1).map_err(err("PACKET_VNET_HDR"))?;
        }
        let _ = setsockopt_sol(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
        setsockopt_int(raw, PACKET_VERSION, TPACKET_V2).map_err(err("PACKET_VERSION"))?;
        // A frame the kernel refuses is skipped (and seen as missing bytes in what
        // `send` returns) rather than left in the ring, which would stop it for good.
        setsockopt_int(raw, PACKET_LOSS, 1).map_err(err("PACKET_LOSS"))?;
        if qdisc_bypass {
            setsockopt_int(raw, PACKET_QDISC_BYPASS, 1).map_err(err("PACKET_QDISC_BYPASS"))?;
        }
        let req = tx_ring_geometry(mtu, page_size());
        let map = map_ring(raw, PACKET_TX_RING, &req).map_err(|(op, e)| sys_io(op, name, e))?;
        let ring = Self {
            map,
            fd,
            head: 0,
            khead: 0,
            queued: 0,
            vnet_len: if vnet { vnet::HEADER_LEN } else { 0 },
        };
        bind_ll(raw, name, ifindex, 0)?;
        Ok(ring)
    }

    /// Frames in the ring.
    pub(super) fn frames(&self) -> usize {
        self.map.frames()
    }

    /// The largest frame a ring frame holds.
    pub(super) fn max_frame(&self) -> usize {
        self.map.frame_size() - TX_DATA_OFFSET - self.vnet_len
    }

    /// Fills the head frame with `hdr` (a vnet header, used if the socket has them) and
    /// `frame` (at most [`Self::max_frame`] bytes); false if the head frame is still
    /// the kernel's (the ring is full).
    pub(super) fn push(&mut self, hdr: &[u8; vnet::HEADER_LEN], frame: &[u8]) -> bool {
        let st = self.map.status(self.head).load(Ordering::Acquire);
        let busy = TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING | TP_STATUS_WRONG_FORMAT;
        if st & busy != 0 || frame.len() > self.max_frame() {
            return false;
        }
        let f = self.map.frame(self.head);
        let total = self.vnet_len + frame.len();
        // The header length says how much of the frame the kernel copies into the skb
        // (`tpacket_fill_skb`); it attaches the rest as references to the ring's pages,
        // which a veth must then copy into a fresh page (`skb_copy_ubufs`) and a
        // receiver pull back. The whole frame in: one copy, as `sendmmsg` does.
        let mut hdr = *hdr;
        let whole = u16::try_from(frame.len()).unwrap_or(u16::MAX);
        let mut vh = vnet::VnetHeader::new_unchecked(&mut hdr[..]);
        vh.set_hdr_len(vh.hdr_len().max(whole));
        // SAFETY: the frame is ours (status AVAILABLE, the Acquire load orders the
        // kernel's last use before our writes); `TX_DATA_OFFSET + total <= frame_size`
        // (checked against `max_frame`); `tp_len` is an aligned u32 of the header.
        unsafe {
            let data = f.add(TX_DATA_OFFSET);
            std::ptr::copy_nonoverlapping(hdr.as_ptr(), data, self.vnet_len);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), data.add(self.vnet_len), frame.len());
            std::ptr::write(f.add(4).cast::<u32>(), total as u32);
        }
        self.map
            .status(self.head)
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.head = self.map.next(self.head);
        self.queued += 1;
        true
    }

    /// Hands the filled frames to the kernel (`send` on the ring's socket, which
    /// transmits them before it returns). Returns how many frames the kernel took and
    /// how many it skipped (refused: a lower bound, from the bytes it reports); on an
    /// error, the frames not taken are handed back and counted as the error's.
    pub(super) fn flush(&mut self) -> Result<(usize, usize), (usize, io::Error)> {
        if self.queued == 0 {
            return Ok((0, 0));
        }
        // SAFETY: a send with no data on our socket: the kernel reads the ring.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        let err = (r < 0).then(io::Error::last_os_error);
        // The kernel took the frames from `khead` on that are no longer SEND_REQUEST.
        let (mut taken, mut bytes, mut largest) = (0usize, 0usize, 0usize);
        while self.queued > 0
            && self.map.status(self.khead).load(Ordering::Acquire) != TP_STATUS_SEND_REQUEST
        {
            // SAFETY: `tp_len` (written by us, read-only for the kernel) of a frame
            // inside the mapping.
            let len = unsafe { std::ptr::read(self.map.frame(self.khead).add(4).cast::<u32>()) };
            let len = (len as usize).saturating_sub(self.vnet_len);
            bytes += len;
            largest = largest.max(len);
            taken += 1;
            self.queued -= 1;
            self.khead = self.map.next(self.khead);
        }
        match err {
            None => {
                let missing = bytes.saturating_sub(r as usize);
                let lost = if missing > 0 {
                    missing.div_ceil(largest.max(1)).min(taken)
                } else {
                    0
                };
                Ok((taken - lost, lost))
            }
            Some(e) => Err((taken, e)),
        }
    }

    /// Hands back the frames filled and not taken (after a [`Self::flush`] that failed
    /// or stopped early): returns how many.
    pub(super) fn reclaim(&mut self) -> usize {
        let n = self.queued;
        while self.queued > 0 {
            self.head = self.map.prev(self.head);
            self.map
                .status(self.head)
                .store(TP_STATUS_AVAILABLE, Ordering::Release);
            self.queued -= 1;
        }
        n
    }
}

/// Whether the transmit ring may carry a frame of `len` bytes with `o`: one the kernel
/// would take without a question `sendmmsg` would answer better. Not: frames too short
/// for an Ethernet header; UDP super-frames (a kernel without UDP segmentation refuses
/// them, and the port must see that `EINVAL`); frames without GSO over the MTU
/// (`EMSGSIZE`: the ring's socket has vnet headers, so the kernel would not check);
/// a partial checksum past the frame (`EINVAL`).
pub(super) fn ring_takes(len: usize, o: &Offload, mtu: u32) -> bool {
    if len < 14 {
        return false;
    }
    match o.gso {
        Some(g) if g.kind == GsoKind::Udp || g.tunnel.is_some() => return false,
        Some(_) => {}
        None if len > mtu as usize + 14 + 4 => return false,
        None => {}
    }
    o.csum
        .is_none_or(|c| usize::from(c.start) + usize::from(c.offset) + 2 <= len)
}

/// What a flush of the ring came to.
struct Flushed {
    /// Frames the kernel took.
    taken: usize,
    /// The device is down or gone: send nothing more of this batch.
    stop: bool,
}

impl AfPacketPort {
    /// Sends `batch` through the transmit ring: frames the ring takes are filled in, the
    /// others go through `sendmmsg` (the ring flushed first, so order is kept), and a
    /// frame that finds the ring full after a flush is dropped and counted.
    pub(super) fn send_ring(
        &mut self,
        batch: &PacketBatch,
        ring: &mut TxRing,
    ) -> Result<usize, PortError> {
        let mut sent = 0;
        for i in 0..batch.len() {
            let (p, o) = (batch.get(i), batch.offload(i));
            let fits = ring_takes(p.len(), &o, self.mtu)
                && p.len() <= ring.max_frame()
                && !self.for_tap(p, &o);
            let hdr = o.to_bytes();
            if fits && ring.push(&hdr, p) {
                continue;
            }
            // Out of room, or a frame for sendmmsg: what is queued goes first.
            let f = self.flush_ring(ring, batch.len() - i)?;
            sent += f.taken;
            if f.stop {
                return Ok(sent);
            }
            if fits {
                if !ring.push(&hdr, p) {
                    self.tx_dropped += 1;
                }
                continue;
            }
            sent += self.send_mmsg_range(batch, i, i + 1)?;
        }
        Ok(sent + self.flush_ring(ring, 0)?.taken)
    }

    /// Flushes the ring: the frames the kernel took, counting those it skipped. On an
    /// error, the frames not taken are dropped and counted, with `rest` (the batch's
    /// frames not yet in the ring) if the device is down or gone.
    fn flush_ring(&mut self, ring: &mut TxRing, rest: usize) -> Result<Flushed, PortError> {
        let (taken, e) = match ring.flush() {
            Ok((taken, lost)) => {
                // Frames still queued: the kernel stopped early (no send buffer left
                // after the first frames); dropped and counted like a refusal.
                let left = ring.reclaim();
                self.tx_dropped += (lost + left) as u64;
                self.errors += u64::from(lost + left > 0);
                self.tx_ring_sent += taken as u64;
                return Ok(Flushed { taken, stop: false });
            }
            Err(x) => x,
        };
        self.tx_ring_sent += taken as u64;
        self.tx_dropped += ring.reclaim() as u64;
        let stop = matches!(
            e.raw_os_error(),
            Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV)
        );
        if stop {
            self.tx_dropped += rest as u64;
        } else if matches!(
            e.raw_os_error(),
            Some(libc::EAGAIN | libc::ENOBUFS | libc::EMSGSIZE | libc::EINVAL | libc::EINTR)
        ) {
            // Refused or no room: those frames are dropped (counted), the rest go on.
            self.errors += 1;
            return Ok(Flushed { taken, stop });
        }
        self.io_error("send (tx ring)", e)
            .map(|()| Flushed { taken, stop: true })
    }
}
