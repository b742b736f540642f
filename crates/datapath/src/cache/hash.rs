//! Hashing of flow keys, and the per-mask word lists of the megaflow tier.
//!
//! The mixer is a *folded multiply*: `fold(a, b) = lo(a * b) ^ hi(a * b)` over the 128-bit
//! product, the core of foldhash and wyhash. One fold per 64-bit word mixes every input
//! bit into both halves of the state, which is what a SwissTable needs (it takes the bucket
//! from the low bits and a 7-bit tag from the top bits). It is not collision resistant
//! against an adversary who knows the seeds; the cache bounds the damage of collisions
//! (a full key compare follows every hash match, and EMC collisions only evict).
//!
//! [`key_hash`] hashes all sixteen words of a key in four independent lanes so the
//! multiplications overlap in the CPU. [`MaskWords`] hashes only the words of a key where
//! a subtable's mask is non-zero: a mask on in_port, eth_type and ip_dst touches three
//! words, so a probe of that subtable hashes and compares three words, not sixteen.

use crate::flow::{FlowKey, FlowMask, KEY_WORDS};

/// Seeds: fractional digits of pi, so that an all-zero key does not hash to zero.
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];
/// Odd multiplier (the 64-bit golden ratio).
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn mix(state: u64, word: u64) -> u64 {
    fold(state ^ word, MUL)
}

/// Hash of a whole (unmasked) key, as used by the exact-match cache.
///
/// Compute it once per packet and pass it to [`FlowCache::lookup_hashed`](super::FlowCache::lookup_hashed)
/// when a batch wants to hash (or prefetch) ahead of the lookups.
#[inline]
pub fn key_hash(key: &FlowKey) -> u64 {
    let w = key.words();
    let mut lanes = SEEDS;
    for chunk in w.chunks_exact(4) {
        for (lane, word) in lanes.iter_mut().zip(chunk) {
            *lane = mix(*lane, *word);
        }
    }
    let [a, b, c, d] = lanes;
    fold(fold(a, b ^ MUL), c ^ d.rotate_left(32))
}

/// The non-zero words of a mask, compacted: what a subtable hashes and compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MaskWords {
    /// Word indices (each < [`KEY_WORDS`]) where the mask is non-zero, in order.
    idx: [u8; KEY_WORDS],
    /// The mask's value at those words.
    bits: [u64; KEY_WORDS],
    /// How many of `idx`/`bits` are in use.
    len: usize,
}

impl MaskWords {
    /// The word list of a mask.
    pub(crate) fn new(mask: &FlowMask) -> Self {
        let mut out = Self {
            idx: [0; KEY_WORDS],
            bits: [0; KEY_WORDS],
            len: 0,
        };
        for (i, m) in mask.0.words().iter().enumerate() {
            if *m != 0 {
                // `i < KEY_WORDS == 16` and `len <= i`, so both fit.
                out.idx[out.len] = i as u8;
                out.bits[out.len] = *m;
                out.len += 1;
            }
        }
        out
    }

    #[inline(always)]
    fn pairs(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.idx
            .iter()
            .zip(self.bits.iter())
            .take(self.len)
            // `& (KEY_WORDS - 1)` lets the compiler drop the bounds check on the key.
            .map(|(i, m)| (usize::from(*i) & (KEY_WORDS - 1), *m))
    }

    /// Masks `key`, writes the masked non-zero words to `out[..len]` and returns their
    /// hash. Equal for two keys exactly when their masked words are equal (modulo
    /// collisions).
    #[inline(always)]
    pub(crate) fn hash_masked(&self, key: &FlowKey, out: &mut [u64; KEY_WORDS]) -> u64 {
        let w = key.words();
        let mut h = SEEDS[0];
        for ((i, m), o) in self.pairs().zip(out.iter_mut()) {
            *o = w[i] & m;
            h = mix(h, *o);
        }
        fold(h, MUL ^ self.len as u64)
    }

    /// The same hash as [`Self::hash_masked`], for a key (masked or not).
    #[inline]
    pub(crate) fn hash_key(&self, key: &FlowKey) -> u64 {
        let mut scratch = [0; KEY_WORDS];
        self.hash_masked(key, &mut scratch)
    }

    /// Whether `other`, masked, has the words `masked` (as written by
    /// [`Self::hash_masked`]).
    #[inline(always)]
    pub(crate) fn matches(&self, masked: &[u64; KEY_WORDS], other: &FlowKey) -> bool {
        let w = other.words();
        self.pairs()
            .zip(masked.iter())
            .all(|((i, m), v)| w[i] & m == *v)
    }

    /// Number of non-zero mask words.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_words_skip_zero_words() {
        let mask = FlowMask(FlowKey {
            in_port: u32::MAX,
            tp_dst: 0xffff,
            ..FlowKey::default()
        });
        let mw = MaskWords::new(&mask);
        assert_eq!(mw.len(), 2);

        let mut a = FlowKey {
            in_port: 3,
            tp_dst: 80,
            ..FlowKey::default()
        };
        a.tp_src = 1234; // not in the mask
        let mut b = a;
        b.tp_src = 999;
        b.eth_type = 0x0800;
        assert_eq!(mw.hash_key(&a), mw.hash_key(&b));
        let mut buf = [0; KEY_WORDS];
        mw.hash_masked(&a, &mut buf);
        assert!(mw.matches(&buf, &b));
        b.tp_dst = 81;
        assert!(!mw.matches(&buf, &b));
        assert_ne!(mw.hash_key(&a), mw.hash_key(&b));
    }

    #[test]
    fn key_hash_sees_every_word() {
        let base = FlowKey::default();
        let h0 = key_hash(&base);
        for i in 0..KEY_WORDS {
            let mut k = base;
            k.words_mut()[i] = 1;
            assert_ne!(key_hash(&k), h0, "word {i}");
        }
    }
}
