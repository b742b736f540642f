//! The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-headers (RFC 768, RFC 8200
//! section 8.1).
//!
//! Sums are accumulated unfolded in a `u64` (no overflow for any buffer shorter than
//! 2^48 bytes) and folded to 16 bits at the end; [`finish`] complements the folded sum.
//! A region whose stored checksum is correct sums (with the checksum field included) to
//! `0xffff`, so `finish(..) == 0` means "verifies".

use std::net::IpAddr;

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded
/// with zero), added to `acc`. Unfolded, and congruent modulo 0xffff to the sum of the
/// words: the bulk is summed as big-endian 32-bit words (a 32-bit word `hi:lo` is
/// `hi * 65536 + lo`, and 65536 is 1 modulo 0xffff), eight bytes at a time, which
/// [`fold`] brings to the same 16-bit result. `acc` plus the sum must stay below 2^64
/// (buffers shorter than 2^31 bytes with a small `acc`).
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut wide = data.chunks_exact(8);
    for c in &mut wide {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut chunks = wide.remainder().chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an unfolded sum to 16 bits (end-around carry).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for an unfolded sum: the complement of the folded sum.
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The Internet checksum of `data` (what goes into the checksum field when the field
/// itself is zero in `data`).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// Unfolded sum of the pseudo-header for an upper-layer protocol `proto` carried in
/// `len` bytes between `src` and `dst`: the IPv4 form (RFC 768) when both are IPv4, the
/// IPv6 form (RFC 8200) otherwise. Mixed families are summed as given (never panics;
/// such a packet cannot exist on the wire).
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, proto: u8, len: u32) -> u64 {
    let mut acc = 0;
    acc = match src {
        IpAddr::V4(a) => sum(acc, &a.octets()),
        IpAddr::V6(a) => sum(acc, &a.octets()),
    };
    acc = match dst {
        IpAddr::V4(a) => sum(acc, &a.octets()),
        IpAddr::V6(a) => sum(acc, &a.octets()),
    };
    acc + u64::from(proto) + u64::from(len >> 16) + u64::from(len & 0xffff)
}

/// The checksum of an upper-layer segment `data` (its checksum field zeroed or, to
/// verify, as received) including the pseudo-header.
pub fn upper_layer(src: &IpAddr, dst: &IpAddr, proto: u8, data: &[u8]) -> u16 {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    finish(sum(pseudo_header(src, dst, proto, len), data))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn known_ipv4_header() {
        // Outer IPv4 header of a kernel VXLAN capture; stored checksum 0x09b4.
        let mut h = crate::wire::testutil::hex("4500 005e 591e 0000 4011 09b4 c0a8 cb38 c0a8 cb33");
        assert_eq!(checksum(&h), 0);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0x09b4);
    }

    /// The plain RFC 1071 sum of 16-bit words, to check the 32-bit one against.
    fn sum16(data: &[u8]) -> u64 {
        data.chunks(2)
            .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    }

    proptest::proptest! {
        #[test]
        fn wide_sum_folds_like_the_plain_one(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            acc in 0u64..0x1_0000_0000,
        ) {
            proptest::prop_assert_eq!(fold(sum(acc, &data)), fold(acc + sum16(&data)));
        }
    }

    #[test]
    fn large_input_does_not_overflow() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(fold(sum(0, &data)), 0xffff);
    }
}
