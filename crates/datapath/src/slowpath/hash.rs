//! A fast, seeded hasher for the slow path's maps (MAC table, network index, flow
//! metadata): SipHash costs more than the rest of a MAC lookup. Each map gets a random
//! seed and a multiply-fold mix, so crafted MACs cannot aim at one bucket without
//! knowing the seed.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// The 64-bit golden ratio, odd.
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`FastHasher`]s with a per-map random seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHash(u64);

impl Default for FastHash {
    fn default() -> Self {
        Self(RandomState::new().hash_one(0x5eed_u64) | 1)
    }
}

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

/// The hasher: each word folded into the state with a 128-bit multiply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = fold(self.0 ^ i, MUL);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.0, MUL ^ 0x2d35_8dcc_aa6c_78a5)
    }
}

/// A `HashMap` with [`FastHash`].
pub(crate) type FastMap<K, V> = HashMap<K, V, FastHash>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_spread() {
        let (a, b) = (FastHash::default(), FastHash::default());
        assert_ne!(
            a.hash_one([1u8, 2, 3, 4, 5, 6]),
            b.hash_one([1u8, 2, 3, 4, 5, 6])
        );
        let mut m: FastMap<[u8; 6], u32> = FastMap::default();
        for i in 0..1000u32 {
            m.insert([0, 0, 0, 0, (i >> 8) as u8, i as u8], i);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(&[0, 0, 0, 0, 3, 0xe7]), Some(&999));
    }
}
