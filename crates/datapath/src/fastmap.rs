//! Hash maps for the per-flow and per-packet state: SipHash, the standard library's
//! default, costs more than the rest of a MAC lookup or a placement update, and a daemon
//! holding a million flows hashes their ids many times a second (slow path metadata,
//! offload state, published placements and counters, the observer's path lists).
//!
//! [`FastMap`] and [`FastSet`] use foldhash's quality hasher: a folded multiply, seeded
//! per process and per map, so crafted keys (MACs, VNIs) cannot aim at one bucket without
//! knowing the seeds, and one more fold at the end. Without it (foldhash's fast hasher)
//! the top bits of sequential keys' hashes, which the tables use as their buckets' tags,
//! took as few as 19 of their 128 values under some process seeds (about 7% of test
//! runs took under 100): more false tag matches to check on every lookup.

use std::collections::{HashMap, HashSet};

/// The seeded builder of the fast hasher.
pub type FastHash = foldhash::quality::RandomState;

/// A `HashMap` with [`FastHash`].
pub type FastMap<K, V> = HashMap<K, V, FastHash>;

/// A `HashSet` with [`FastHash`].
pub type FastSet<T> = HashSet<T, FastHash>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn seeded_per_map_and_spread() {
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
        // Sequential ids (flow ids are a counter) spread over the buckets' control
        // bits: the top 7 bits of their hashes take many values.
        let tops: FastSet<u64> = (0..1000u64).map(|i| a.hash_one(i) >> 57).collect();
        assert!(tops.len() > 100, "{} distinct top bits", tops.len());
    }
}
