//! [`PacketBatch`]: a fixed set of packet slots in one allocation.

/// Bytes reserved before each packet so that a VLAN tag (or another 4-byte header) can be
/// inserted in place.
pub const HEADROOM: usize = 4;

/// Up to `capacity` packets of at most `slot_size - HEADROOM` bytes each, stored in one
/// buffer allocated once. Packets are appended, read by index and cleared together.
#[derive(Debug, Clone)]
pub struct PacketBatch {
    buf: Box<[u8]>,
    slot: usize,
    /// Per packet: (offset of its first byte within its slot, length).
    meta: Box<[(u16, u16)]>,
    count: usize,
}

impl PacketBatch {
    /// A batch of `capacity` slots, each able to hold a frame of `max_frame` bytes
    /// (at most 65535).
    pub fn new(capacity: usize, max_frame: usize) -> Self {
        let slot = (max_frame.min(u16::MAX as usize - HEADROOM) + HEADROOM).next_multiple_of(64);
        Self {
            buf: vec![0u8; capacity * slot].into_boxed_slice(),
            slot,
            meta: vec![(0, 0); capacity].into_boxed_slice(),
            count: 0,
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

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Whether every slot is used.
    pub fn is_full(&self) -> bool {
        self.count == self.meta.len()
    }

    /// Largest frame a slot holds.
    pub fn max_frame(&self) -> usize {
        self.slot - HEADROOM
    }

    /// Forgets every packet (keeps the memory).
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Packet `i`, or an empty slice past the end.
    pub fn get(&self, i: usize) -> &[u8] {
        match self.meta.get(i) {
            Some(&(off, len)) if i < self.count => {
                let start = i * self.slot + off as usize;
                self.buf.get(start..start + len as usize).unwrap_or(&[])
            }
            _ => &[],
        }
    }

    /// Iterates over the packets.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.count).map(|i| self.get(i))
    }

    /// Appends a copy of `frame`; false (and nothing appended) if the batch is full or the
    /// frame does not fit a slot.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        let Some(dst) = self.next_slot() else {
            return false;
        };
        if frame.len() > dst.len() {
            return false;
        }
        dst[..frame.len()].copy_from_slice(frame);
        self.commit(frame.len())
    }

    /// Appends a packet written in place: `fill` gets the whole free slot and returns the
    /// frame's length (0 to append nothing). Returns whether a packet was appended.
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let Some(dst) = self.next_slot() else {
            return false;
        };
        let cap = dst.len();
        let n = fill(dst);
        if n == 0 || n > cap {
            return false;
        }
        self.commit(n)
    }

    /// The free slot after the last packet (past the headroom), if any.
    pub(crate) fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.count * self.slot + HEADROOM;
        self.buf.get_mut(start..(self.count + 1) * self.slot)
    }

    /// Records the packet written into [`Self::next_slot`] with `len` bytes.
    pub(crate) fn commit(&mut self, len: usize) -> bool {
        let Some(m) = self.meta.get_mut(self.count) else {
            return false;
        };
        *m = (HEADROOM as u16, len as u16);
        self.count += 1;
        true
    }

    /// Raw access for batched system calls: the slot buffer and slot size.
    pub(crate) fn slots_mut(&mut self) -> (&mut [u8], usize) {
        (&mut self.buf, self.slot)
    }

    /// Inserts 4 bytes at byte `at` of packet `i` (using the headroom); used to restore a
    /// VLAN tag the kernel moved to metadata. Returns false if impossible.
    pub fn insert4(&mut self, i: usize, at: usize, bytes: [u8; 4]) -> bool {
        let Some(&(off, len)) = self.meta.get(i) else {
            return false;
        };
        let (off, len) = (off as usize, len as usize);
        if i >= self.count || off < 4 || at > len {
            return false;
        }
        let base = i * self.slot;
        let pkt = &mut self.buf[base + off - 4..base + off + len];
        pkt.copy_within(4..4 + at, 0);
        pkt[at..at + 4].copy_from_slice(&bytes);
        self.meta[i] = ((off - 4) as u16, (len + 4) as u16);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
