//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A load balancer rewrites a few header fields of every packet it forwards
//! (addresses, ports, TTL, lengths); recomputing the checksum over the whole
//! header or segment would touch every byte again. Instead the pipeline
//! adjusts the stored checksum by the difference of the changed fields with
//! [`update_u16`], [`update_u32`] or [`update_bytes`], and only freshly built
//! headers (encapsulation, ICMP errors) are summed in full with [`checksum`].
//!
//! Partial sums returned by [`sum`] and the pseudo-header helpers are already
//! folded to at most `0xffff`, so a caller can add a handful of them with
//! plain `+` on `u32` without overflow and finish with [`fold`].

use std::net::{Ipv4Addr, Ipv6Addr};

/// Ones' complement sum of `data` read as big-endian 16-bit words, folded to
/// at most `0xffff`.
///
/// An odd trailing byte is the high byte of a final word padded with zero
/// (RFC 1071). Eight bytes are summed per step with end-around carry, which
/// is equivalent to 16-bit ones' complement addition because
/// `2^16 ≡ 1 (mod 0xffff)`. A partial sum is only position-independent when
/// every piece but the last has even length.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        acc = add_carry(acc, u64::from_be_bytes(chunk.try_into().unwrap_or([0; 8])));
    }
    // The tail too: after the chunks `acc` may be as large as `u64::MAX`.
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc = add_carry(
            acc,
            u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]])),
        );
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc = add_carry(acc, u64::from(u16::from_be_bytes([rest[0], rest[1]])));
        rest = &rest[2..];
    }
    if let Some(&last) = rest.first() {
        acc = add_carry(acc, u64::from(last) << 8);
    }
    u32::from(fold64(acc))
}

/// `acc + x` in 64-bit ones' complement: a carry out of the top bit comes
/// back in at the bottom (`2^64 ≡ 1 (mod 0xffff)`), so no sum is lost, and
/// the result cannot overflow again (it is at most `2^64 - 1`).
#[inline(always)]
fn add_carry(acc: u64, x: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(x);
    s + u64::from(carry)
}

/// Folds a 32-bit accumulator into 16 bits with end-around carry.
///
/// The result is the ones' complement sum, not yet complemented; see
/// [`checksum`].
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    low16(s)
}

/// The Internet checksum of `data`: the complement of its folded sum.
///
/// Fill a header's checksum field with this value computed while the field
/// is zero; verifying a received header means `checksum(header) == 0`.
///
/// ```
/// use cutover::wire::checksum::checksum;
/// // An IPv4 header with its checksum field (bytes 10..12) zeroed.
/// let mut h = [
///     0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
///     0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
/// ];
/// let c = checksum(&h);
/// assert_eq!(c, 0xb861);
/// h[10..12].copy_from_slice(&c.to_be_bytes());
/// assert_eq!(checksum(&h), 0);
/// ```
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the IPv4 pseudo-header for TCP/UDP checksums (RFC 793).
///
/// `len` is the length of the transport header plus payload.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) -> u32 {
    let acc = u64::from(u32::from(src))
        + u64::from(u32::from(dst))
        + u64::from(protocol)
        + u64::from(len);
    u32::from(fold64(acc))
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1), used by
/// TCP, UDP and ICMPv6.
///
/// `len` is the upper-layer packet length, `next_header` the upper-layer
/// protocol (not that of an extension header in between).
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let acc = u64::from(sum(&src.octets()))
        + u64::from(sum(&dst.octets()))
        + u64::from(next_header)
        + u64::from(len);
    u32::from(fold64(acc))
}

/// Adjusts `checksum` for one 16-bit field changing from `old` to `new`.
///
/// RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which unlike RFC 1141's
/// form never produces `0x0000` where a full recomputation gives `0xffff`
/// or the reverse, for any header that is not all zero.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// Adjusts `checksum` for a 32-bit field (an IPv4 address, a TCP sequence
/// number) that sits at an even offset; same algebra as [`update_u16`].
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let [o0, o1, o2, o3] = old.to_be_bytes();
    let [n0, n1, n2, n3] = new.to_be_bytes();
    let acc = u32::from(!checksum)
        + u32::from(!u16::from_be_bytes([o0, o1]))
        + u32::from(!u16::from_be_bytes([o2, o3]))
        + u32::from(u16::from_be_bytes([n0, n1]))
        + u32::from(u16::from_be_bytes([n2, n3]));
    !fold(acc)
}

/// Adjusts `checksum` for a field of any even length, such as a 16-byte
/// IPv6 address, that changed from `old` to `new`.
///
/// Both slices must be the same field (same length, same even offset in the
/// checksummed data); the cost is one [`sum`] of each.
#[inline]
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let acc = u32::from(!checksum) + u32::from(!fold(sum(old))) + sum(new);
    !fold(acc)
}

/// [`update_bytes`] for an IPv4 address; equivalent to [`update_u32`].
#[inline]
pub fn update_addr_v4(checksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(checksum, u32::from(old), u32::from(new))
}

/// [`update_bytes`] for an IPv6 address.
#[inline]
pub fn update_addr_v6(checksum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    update_bytes(checksum, &old.octets(), &new.octets())
}

/// Folds a 64-bit end-around-carry accumulator into 16 bits.
#[inline]
fn fold64(acc: u64) -> u16 {
    let s = (acc & 0xffff_ffff) + (acc >> 32);
    let s = (s & 0xffff_ffff) + (s >> 32);
    let [_, _, _, _, a, b, c, d] = s.to_be_bytes();
    fold(u32::from_be_bytes([a, b, c, d]))
}

/// The low 16 bits of `x`; callers have folded `x` below `0x1_0000`.
#[inline]
fn low16(x: u32) -> u16 {
    let [_, _, hi, lo] = x.to_be_bytes();
    u16::from_be_bytes([hi, lo])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward 16-bit reference implementation of RFC 1071.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        fold(acc)
    }

    #[test]
    fn test_rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn a_tail_after_a_full_accumulator_keeps_its_carry() {
        // All-ones chunks leave the accumulator at u64::MAX; each tail
        // length then overflowed it (a panic in debug builds, a sum one
        // short in release). Found by the pipeline fuzzer in an ICMP error.
        for len in 8..=24 {
            let data = vec![0xff; len];
            assert_eq!(fold(sum(&data)), reference_sum(&data), "{len} bytes");
        }
    }

    #[test]
    fn test_odd_length() {
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x00, 0x01, 0xf2]), 0xf201);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn test_ipv4_header_vector() {
        // The widely quoted header with checksum 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
    }

    #[test]
    fn test_pseudo_headers() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 53);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 17, 0, 37]);
        assert_eq!(pseudo_header_v4(src, dst, 17, 37), sum(&bytes));

        let src6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src6.octets());
        bytes.extend_from_slice(&dst6.octets());
        bytes.extend_from_slice(&[0, 1, 0, 16, 0, 0, 0, 58]);
        assert_eq!(pseudo_header_v6(src6, dst6, 58, 0x1_0010), sum(&bytes));
    }

    #[test]
    fn test_rfc1624_corner_case() {
        // RFC 1624 section 4: other octets sum to 0xcd7a, m = 0x5555 -> 0x3285.
        // The full recomputation gives 0x0000; RFC 1141's formula gave 0xffff.
        let hc = !fold(0xcd7a + 0x5555);
        assert_eq!(hc, 0xdd2f);
        assert_eq!(!fold(0xcd7a + 0x3285), 0x0000);
        assert_eq!(update_u16(hc, 0x5555, 0x3285), 0x0000);
        // And back again.
        assert_eq!(update_u16(0x0000, 0x3285, 0x5555), 0xdd2f);
    }

    #[test]
    fn test_update_ttl_like_a_router() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let old = u16::from_be_bytes([header[8], header[9]]);
        header[8] -= 1;
        let new = u16::from_be_bytes([header[8], header[9]]);
        let updated = update_u16(0xb861, old, new);
        header[10..12].copy_from_slice(&updated.to_be_bytes());
        assert_eq!(checksum(&header), 0);
        assert_eq!(updated, 0xb961);
    }

    /// Data with a zeroed checksum field in word 1 and a non-zero first
    /// word, as every real header has.
    fn header_strategy() -> impl Strategy<Value = Vec<u8>> {
        (3usize..40).prop_flat_map(|words| {
            proptest::collection::vec(any::<u8>(), words * 2).prop_map(|mut v| {
                v[0] |= 0x40;
                v[2] = 0;
                v[3] = 0;
                v
            })
        })
    }

    proptest! {
        #[test]
        fn prop_sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(fold(sum(&data)), reference_sum(&data));
            prop_assert!(sum(&data) <= 0xffff);
        }

        #[test]
        fn prop_sum_of_mostly_ones_matches_reference(
            data in proptest::collection::vec(prop_oneof![3 => Just(0xffu8), 1 => any::<u8>()], 0..200)
        ) {
            // Mostly 0xff bytes push the accumulator to its top, where
            // uniform bytes almost never take it.
            prop_assert_eq!(fold(sum(&data)), reference_sum(&data));
        }

        #[test]
        fn prop_update_u16_matches_recompute(
            mut data in header_strategy(),
            word in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let words = data.len() / 2;
            let i = 4 + word.index(words - 2) * 2;
            let hc = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update_u16(hc, old, new), checksum(&data));
        }

        #[test]
        fn prop_update_u32_and_bytes_match_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 40..41),
            new4 in any::<u32>(),
            new16 in any::<[u8; 16]>(),
        ) {
            data[0] |= 0x60;
            let hc = checksum(&data);
            let old4 = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            data[4..8].copy_from_slice(&new4.to_be_bytes());
            let hc = update_u32(hc, old4, new4);
            prop_assert_eq!(hc, checksum(&data));

            let old16: [u8; 16] = data[8..24].try_into().unwrap();
            data[8..24].copy_from_slice(&new16);
            let hc = update_addr_v6(hc, Ipv6Addr::from(old16), Ipv6Addr::from(new16));
            prop_assert_eq!(hc, checksum(&data));
        }
    }
}
