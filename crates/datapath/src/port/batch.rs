//! [`PacketBatch`]: packets and their offload metadata in one allocation.
//!
//! Packets are packed one after the other into a buffer allocated once, each at a
//! 64-byte boundary behind [`HEADROOM`] bytes (room to put back a VLAN tag in place).
//! A batch holds at most `capacity` packets of at most `max_frame` bytes each, and as
//! many as its bytes allow: [`PacketBatch::new`] gives every packet room for a
//! `max_frame` frame; [`PacketBatch::with_bytes`] gives fewer bytes, for batches that must
//! take an occasional 64 KiB super-frame among frames of an MTU's size (a transmit batch
//! per port: 32 frames of 9 KiB *or* a few super-frames, not 32 super-frames). Next to
//! each packet lies its [`Offload`] metadata (what the kernel said about it: a partial
//! checksum, a segmentation still to do), in a fixed array: nothing is allocated per
//! packet.

use crate::wire::Offload;

/// Bytes reserved before each packet so that a VLAN tag (or another 4-byte header) can be
/// inserted in place.
pub const HEADROOM: usize = 4;

/// Packets start at multiples of this.
const ALIGN: usize = 64;

/// One packet's place and metadata.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Offset of its first byte in the buffer.
    off: u32,
    /// Its length.
    len: u32,
    /// What is left to do to it.
    offload: Offload,
}

/// Up to `capacity` packets of at most `max_frame` bytes each, with their offload
/// metadata, stored in one buffer allocated once. Packets are appended, read by index and
/// cleared together.
#[derive(Debug, Clone)]
pub struct PacketBatch {
    buf: Box<[u8]>,
    max_frame: usize,
    slots: Box<[Slot]>,
    count: usize,
    /// Bytes of `buf` used (the next packet's headroom starts here, aligned).
    used: usize,
}

/// The bytes a packet of `max_frame` may take in the buffer, headroom included.
fn stride(max_frame: usize) -> usize {
    (max_frame + HEADROOM).next_multiple_of(ALIGN)
}

impl PacketBatch {
    /// A batch of `capacity` packets of up to `max_frame` bytes each (at most
    /// `u32::MAX`), with room for `capacity` frames of `max_frame` bytes.
    pub fn new(capacity: usize, max_frame: usize) -> Self {
        Self::with_bytes(capacity, max_frame, capacity * stride(max_frame))
    }

    /// A batch of `capacity` packets of up to `max_frame` bytes each, in a buffer of
    /// `bytes` (rounded up to hold at least one `max_frame` frame): it holds as many
    /// packets as fit.
    pub fn with_bytes(capacity: usize, max_frame: usize, bytes: usize) -> Self {
        let max_frame = max_frame.min(u32::MAX as usize - 2 * ALIGN);
        let bytes = bytes.max(stride(max_frame)).next_multiple_of(ALIGN);
        Self {
            buf: vec![0u8; bytes].into_boxed_slice(),
            max_frame,
            slots: vec![Slot::default(); capacity].into_boxed_slice(),
            count: 0,
            used: 0,
        }
    }

    /// Number of packets held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch holds no packet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Largest number of packets.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Whether no packet can be appended: every packet slot used, or no byte left.
    pub fn is_full(&self) -> bool {
        self.count == self.slots.len() || self.room() == 0
    }

    /// Whether a frame of `len` bytes can be appended now.
    pub fn fits(&self, len: usize) -> bool {
        self.count < self.slots.len() && len <= self.room()
    }

    /// Largest frame a packet holds.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Largest frame that can be appended now (0 when full).
    pub fn room(&self) -> usize {
        if self.count == self.slots.len() {
            return 0;
        }
        let free = self.buf.len().saturating_sub(self.used + HEADROOM);
        free.min(self.max_frame)
    }

    /// Forgets every packet (keeps the memory).
    pub fn clear(&mut self) {
        self.count = 0;
        self.used = 0;
    }

    /// Packet `i`, or an empty slice past the end.
    pub fn get(&self, i: usize) -> &[u8] {
        match self.slots.get(i) {
            Some(s) if i < self.count => {
                let start = s.off as usize;
                self.buf.get(start..start + s.len as usize).unwrap_or(&[])
            }
            _ => &[],
        }
    }

    /// Packet `i`'s offload metadata ([`Offload::NONE`] past the end).
    pub fn offload(&self, i: usize) -> Offload {
        match self.slots.get(i) {
            Some(s) if i < self.count => s.offload,
            _ => Offload::NONE,
        }
    }

    /// Iterates over the packets.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.count).map(|i| self.get(i))
    }

    /// Iterates over the packets with their offload metadata.
    pub fn iter_offload(&self) -> impl Iterator<Item = (&[u8], Offload)> {
        (0..self.count).map(|i| (self.get(i), self.offload(i)))
    }

    /// Appends a copy of `frame` (a complete frame); false (and nothing appended) if the
    /// batch is full or the frame does not fit.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        self.push_offload(frame, Offload::NONE)
    }

    /// Appends a copy of `frame` with its offload metadata; false (and nothing appended)
    /// if the batch is full or the frame does not fit.
    pub fn push_offload(&mut self, frame: &[u8], offload: Offload) -> bool {
        let Some(dst) = self.next_slot() else {
            return false;
        };
        let Some(dst) = dst.get_mut(..frame.len()) else {
            return false;
        };
        dst.copy_from_slice(frame);
        self.commit_offload(frame.len(), offload)
    }

    /// Appends a complete packet written in place: `fill` gets the whole free room (see
    /// [`Self::room`]) and returns the frame's length (0 to append nothing). Returns
    /// whether a packet was appended.
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        self.push_with_offload(Offload::NONE, fill)
    }

    /// As [`Self::push_with`], with the packet's offload metadata.
    pub fn push_with_offload(
        &mut self,
        offload: Offload,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        let Some(dst) = self.next_slot() else {
            return false;
        };
        let cap = dst.len();
        let n = fill(dst);
        if n == 0 || n > cap {
            return false;
        }
        self.commit_offload(n, offload)
    }

    /// The free room after the last packet (past the headroom), if a packet can be
    /// appended.
    pub(crate) fn next_slot(&mut self) -> Option<&mut [u8]> {
        let room = self.room();
        if room == 0 {
            return None;
        }
        let start = self.used + HEADROOM;
        self.buf.get_mut(start..start + room)
    }

    /// Records the complete packet written into [`Self::next_slot`] with `len` bytes.
    pub(crate) fn commit(&mut self, len: usize) -> bool {
        self.commit_offload(len, Offload::NONE)
    }

    /// Records the packet written into [`Self::next_slot`] with `len` bytes and its
    /// metadata. False (nothing recorded) if it does not fit.
    pub(crate) fn commit_offload(&mut self, len: usize, offload: Offload) -> bool {
        if len > self.room() {
            return false;
        }
        let Some(s) = self.slots.get_mut(self.count) else {
            return false;
        };
        let off = self.used + HEADROOM;
        *s = Slot {
            off: off as u32,
            len: len as u32,
            offload,
        };
        self.count += 1;
        self.used = (off + len).next_multiple_of(ALIGN);
        true
    }

    /// Raw access for batched system calls: the buffer, the offset where the next packet
    /// would start (its headroom's first byte) and the stride that gives every packet
    /// room for a `max_frame` frame. Receive `n` frames at `start + k * stride +
    /// HEADROOM` and record them with [`Self::commit_at`].
    pub(crate) fn raw_slots(&mut self) -> (&mut [u8], usize, usize) {
        (&mut self.buf, self.used, stride(self.max_frame))
    }

    /// How many frames of `max_frame` bytes fit in the free bytes at a fixed stride (for
    /// [`Self::raw_slots`]), bounded by the free packet slots.
    pub(crate) fn raw_slot_count(&self) -> usize {
        let free = self.buf.len().saturating_sub(self.used) / stride(self.max_frame);
        free.min(self.slots.len() - self.count)
    }

    /// Records a frame of `len` bytes written at `at` (from [`Self::raw_slots`]: past the
    /// current end, at or after the next packet's headroom, within the buffer).
    pub(crate) fn commit_at(&mut self, at: usize, len: usize, offload: Offload) -> bool {
        if self.count == self.slots.len()
            || at < self.used + HEADROOM
            || at + len > self.buf.len()
            || len > self.max_frame
        {
            return false;
        }
        self.slots[self.count] = Slot {
            off: at as u32,
            len: len as u32,
            offload,
        };
        self.count += 1;
        self.used = (at + len).next_multiple_of(ALIGN);
        true
    }

    /// Inserts 4 bytes at byte `at` of packet `i` (using the headroom); used to restore a
    /// VLAN tag the kernel moved to metadata. The packet's offload offsets past `at` move
    /// with its bytes. Returns false if impossible.
    pub fn insert4(&mut self, i: usize, at: usize, bytes: [u8; 4]) -> bool {
        if i >= self.count {
            return false;
        }
        let s = self.slots[i];
        let (off, len) = (s.off as usize, s.len as usize);
        let first = if i == 0 {
            0
        } else {
            let p = self.slots[i - 1];
            (p.off + p.len) as usize
        };
        if off < first + 4 || at > len {
            return false;
        }
        let Some(offload) = s.offload.shifted(at, 4) else {
            return false;
        };
        let pkt = &mut self.buf[off - 4..off + len];
        pkt.copy_within(4..4 + at, 0);
        pkt[at..at + 4].copy_from_slice(&bytes);
        self.slots[i] = Slot {
            off: (off - 4) as u32,
            len: (len + 4) as u32,
            offload,
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Offload, PartialCsum};

    #[test]
    fn push_get_clear() {
        let mut b = PacketBatch::new(2, 100);
        assert!(b.push(&[1, 2, 3]));
        assert!(b.push_with(|s| {
            s[..2].copy_from_slice(&[9, 9]);
            2
        }));
        assert!(!b.push(&[0]), "full");
        assert_eq!(b.get(0), &[1, 2, 3]);
        assert_eq!(b.get(1), &[9, 9]);
        assert_eq!(b.get(2), &[] as &[u8]);
        b.clear();
        assert!(b.is_empty());
        assert!(!b.push(&vec![0u8; 1000]), "too big for a slot");
    }

    #[test]
    fn insert_vlan_tag() {
        let mut b = PacketBatch::new(1, 64);
        let frame: Vec<u8> = (0..20).collect();
        b.push(&frame);
        assert!(b.insert4(0, 12, [0x81, 0, 0, 10]));
        let p = b.get(0);
        assert_eq!(&p[..12], &frame[..12]);
        assert_eq!(&p[12..16], &[0x81, 0, 0, 10]);
        assert_eq!(&p[16..], &frame[12..]);
        assert!(!b.insert4(0, 12, [0; 4]), "headroom used up");
    }

    #[test]
    fn a_byte_budget_takes_small_frames_or_a_super_frame() {
        // 4 frames of 1514 asked for: rounded up to one super-frame's room.
        let mut b = PacketBatch::with_bytes(8, 65_600, 4 * 1600);
        assert_eq!(b.room(), 65_600);
        assert!(b.push(&vec![1u8; 65_000]));
        assert!(!b.fits(1514), "no bytes left for more");
        b.clear();
        let part = Offload {
            csum: Some(PartialCsum {
                start: 34,
                offset: 16,
            }),
            ..Offload::NONE
        };
        let mut n = 0;
        while b.fits(1514) {
            assert!(b.push_offload(&[n as u8; 1514], part));
            n += 1;
        }
        assert!(n >= 4, "{n}");
        for i in 0..n {
            assert_eq!(b.get(i), &[i as u8; 1514][..]);
            assert_eq!(b.offload(i), part);
        }
        // A tag restored in one packet moves its checksum start, and not its neighbours.
        assert!(b.insert4(1, 12, [0x81, 0, 0, 1]));
        assert_eq!(b.offload(1).csum.unwrap().start, 38);
        assert_eq!(b.get(0), &[0u8; 1514][..]);
        assert_eq!(b.get(1).len(), 1518);
        assert_eq!(b.get(2), &[2u8; 1514][..]);
    }

    #[test]
    fn raw_slots_at_a_fixed_stride() {
        let mut b = PacketBatch::new(4, 1000);
        assert!(b.push(&[7; 10]));
        assert_eq!(b.raw_slot_count(), 3);
        let (buf, start, stride) = b.raw_slots();
        let at = start + stride + HEADROOM;
        buf[at..at + 3].copy_from_slice(&[1, 2, 3]);
        assert!(!b.commit_at(0, 3, Offload::NONE), "before the end");
        assert!(b.commit_at(at, 3, Offload::NONE));
        assert_eq!(b.get(1), &[1, 2, 3]);
        // 4 strides of 1024 bytes, the first 64 and the next 1088 used.
        assert_eq!(b.raw_slot_count(), 2);
    }
}
