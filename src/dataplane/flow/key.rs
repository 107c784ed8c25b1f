//! The flow's identity and the fixed hashes over it.
//!
//! Every packet's 5-tuple becomes a `FlowKey`; its `flow_hash` indexes the
//! version's Maglev table when the flow table misses. The hashes are part of
//! the data plane's external behaviour (see `FlowKey::flow_hash`), so they
//! live apart from the table and are pinned by golden tests.

use crate::dataplane::maglev::fmix64;

/// The 5-tuple that identifies a flow, as the client sent it.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so one key type
/// and one table serve both families and an IPv4 flow can never equal an
/// IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

impl FlowKey {
    pub fn v4(src: [u8; 4], dst: [u8; 4], protocol: u8, src_port: u16, dst_port: u16) -> Self {
        FlowKey {
            src: mapped(src),
            dst: mapped(dst),
            src_port,
            dst_port,
            protocol,
        }
    }

    pub fn v6(src: [u8; 16], dst: [u8; 16], protocol: u8, src_port: u16, dst_port: u16) -> Self {
        FlowKey {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
        }
    }

    /// The hash that picks the flow's backend in the Maglev table.
    ///
    /// Fixed forever, like the Maglev backend hashes: another worker,
    /// another node or this node after a restart must compute the same value
    /// for the same flow. So it is written out here rather than taken from a
    /// seeded hasher, reads bytes little-endian on every machine, and is
    /// pinned by a golden test. Three independent multiply-xorshift lanes
    /// (source, destination, ports and protocol) keep the dependency chain
    /// short; murmur3's `fmix64` finishes them so that every input bit
    /// reaches the low bits that `mod M` uses. Being public and fixed, it is
    /// no defence against a client that crafts colliding tuples; the flow
    /// table's own index uses a randomly seeded hash for that reason.
    #[inline]
    pub fn flow_hash(&self) -> u64 {
        let ports = (u64::from(self.src_port) << 24)
            | (u64::from(self.dst_port) << 8)
            | u64::from(self.protocol);
        hash_words(&self.src, &self.dst, ports, SEED_5TUPLE)
    }
}

/// The 3-tuple hash for traffic that may be fragmented: non-first fragments
/// carry no ports, so a service that must keep fragments with their flow
/// hashes every packet (fragment or not) with this instead of `flow_hash`.
/// Fixed forever, like `flow_hash`.
#[inline]
pub fn hash_3tuple(src: &[u8; 16], dst: &[u8; 16], protocol: u8) -> u64 {
    hash_words(src, dst, u64::from(protocol), SEED_3TUPLE)
}

const SEED_5TUPLE: u64 = 0x243f_6a88_85a3_08d3;
const SEED_3TUPLE: u64 = 0x1319_8a2e_0370_7344;
const LANE_SRC: u64 = 0xa409_3822_299f_31d0;
const LANE_DST: u64 = 0x082e_fa98_ec4e_6c89;
const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// One absorb step of a lane: a bijection in `h ^ w`, so no input bit is
/// lost; the multiply spreads low bits up and the shift brings high bits
/// down for the next step.
#[inline(always)]
fn absorb(h: u64, w: u64) -> u64 {
    let x = (h ^ w).wrapping_mul(MUL);
    x ^ (x >> 32)
}

#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    let x = u128::from_le_bytes(*a);
    #[allow(clippy::cast_possible_truncation)] // splitting into halves on purpose
    (x as u64, (x >> 64) as u64)
}

#[inline(always)]
fn hash_words(src: &[u8; 16], dst: &[u8; 16], rest: u64, seed: u64) -> u64 {
    let (s0, s1) = halves(src);
    let (d0, d1) = halves(dst);
    let a = absorb(absorb(seed ^ LANE_SRC, s0), s1);
    let b = absorb(absorb(seed ^ LANE_DST, d0), d1);
    let c = absorb(seed, rest);
    fmix64(a ^ b.rotate_left(21) ^ c.rotate_left(42))
}

fn mapped(a: [u8; 4]) -> [u8; 16] {
    let [a, b, c, d] = a;
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::maglev::MaglevTable;

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    /// A deterministic stream of pseudo-random words (splitmix64).
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        fmix64(*state)
    }

    fn tcp(i: u16) -> FlowKey {
        FlowKey::v4([10, 0, 0, 1], [203, 0, 113, 7], TCP, 1024 + i, 443)
    }

    #[test]
    fn keys_map_ipv4_into_ipv6() {
        let k = FlowKey::v4([192, 0, 2, 1], [198, 51, 100, 2], TCP, 40000, 80);
        assert_eq!(
            k.src,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]
        );
        assert_eq!(k.dst[12..], [198, 51, 100, 2]);
        assert_eq!((k.protocol, k.src_port, k.dst_port), (TCP, 40000, 80));
        let mut src = [0; 16];
        src[12..].copy_from_slice(&[192, 0, 2, 1]);
        let v6 = FlowKey::v6(src, k.dst, TCP, 40000, 80);
        assert_ne!(k, v6, "::192.0.2.1 is not ::ffff:192.0.2.1");
        assert_ne!(k.flow_hash(), v6.flow_hash());
    }

    /// Golden values: if this fails, the flow hash changed and an upgrade would
    /// move established flows to other backends.
    #[test]
    fn flow_hash_golden() {
        let k = FlowKey::v4([10, 0, 0, 1], [203, 0, 113, 7], TCP, 40000, 443);
        assert_eq!(k.flow_hash(), GOLDEN_V4);
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[15] = 1;
        let mut b = a;
        b[15] = 2;
        assert_eq!(FlowKey::v6(a, b, UDP, 5353, 53).flow_hash(), GOLDEN_V6);
        assert_eq!(hash_3tuple(&k.src, &k.dst, TCP), GOLDEN_3TUPLE);
    }

    const GOLDEN_V4: u64 = 0xf164_42c6_e324_f2d9;
    const GOLDEN_V6: u64 = 0xbb3f_5a07_1ee6_3aff;
    const GOLDEN_3TUPLE: u64 = 0x1ef1_c931_228e_c176;

    #[test]
    fn flow_hash_depends_on_every_field() {
        let k = tcp(1);
        let h = k.flow_hash();
        let mut o = k;
        o.src_port += 1;
        assert_ne!(o.flow_hash(), h);
        let mut o = k;
        o.dst_port += 1;
        assert_ne!(o.flow_hash(), h);
        let mut o = k;
        o.protocol = UDP;
        assert_ne!(o.flow_hash(), h);
        // Swapping source and destination is another flow.
        let mut o = k;
        core::mem::swap(&mut o.src, &mut o.dst);
        assert_ne!(o.flow_hash(), h);
        assert_ne!(
            hash_3tuple(&k.src, &k.dst, TCP),
            hash_3tuple(&k.dst, &k.src, TCP)
        );
        assert_ne!(
            hash_3tuple(&k.src, &k.dst, TCP),
            hash_3tuple(&k.src, &k.dst, UDP)
        );
    }

    /// Flipping any input bit flips each output bit with probability ~1/2.
    #[test]
    fn flow_hash_avalanche() {
        let mut rng = 1;
        let mut flips = [0u32; 64];
        let mut samples = 0u32;
        for _ in 0..200 {
            let mut k = FlowKey::v6([0; 16], [0; 16], 0, 0, 0);
            let mut bytes = [0u8; 37];
            for chunk in bytes.chunks_mut(8) {
                let w = splitmix(&mut rng).to_le_bytes();
                chunk.copy_from_slice(&w[..chunk.len()]);
            }
            let set = |k: &mut FlowKey, b: &[u8; 37]| {
                k.src.copy_from_slice(&b[..16]);
                k.dst.copy_from_slice(&b[16..32]);
                k.src_port = u16::from_le_bytes([b[32], b[33]]);
                k.dst_port = u16::from_le_bytes([b[34], b[35]]);
                k.protocol = b[36];
            };
            set(&mut k, &bytes);
            let h = k.flow_hash();
            for bit in 0..37 * 8 {
                let mut b = bytes;
                b[bit / 8] ^= 1 << (bit % 8);
                let mut o = k;
                set(&mut o, &b);
                let d = h ^ o.flow_hash();
                for (j, f) in flips.iter_mut().enumerate() {
                    *f += u32::from(d >> j & 1 == 1);
                }
                samples += 1;
            }
        }
        for (j, &f) in flips.iter().enumerate() {
            let p = f64::from(f) / f64::from(samples);
            assert!((0.47..=0.53).contains(&p), "output bit {j}: {p}");
        }
    }

    /// Sequential clients and ports, the common real-world shape, spread evenly
    /// over a Maglev table.
    #[test]
    fn flow_hash_spreads_over_maglev() {
        let keys: Vec<Vec<u8>> = (1..=10)
            .map(|i| format!("10.0.1.{i}").into_bytes())
            .collect();
        let t = MaglevTable::build(65537, &keys, &[true; 10]).unwrap();
        let mut per_backend = [0u32; 10];
        let mut per_slot_low = [0u32; 64];
        for client in 0..100u8 {
            for port in 0..1000u16 {
                let k = FlowKey::v4([10, 1, 0, client], [203, 0, 113, 7], TCP, 32768 + port, 443);
                let h = k.flow_hash();
                per_backend[usize::from(t.lookup(h).unwrap())] += 1;
                per_slot_low[usize::from(h.to_le_bytes()[0] & 63)] += 1;
            }
        }
        // 10_000 expected each; ±3% is > 9 standard deviations.
        for c in per_backend {
            assert!((9700..=10300).contains(&c), "{per_backend:?}");
        }
        // 1562.5 expected each; ±10% is > 4 standard deviations.
        for c in per_slot_low {
            assert!((1400..=1720).contains(&c), "{per_slot_low:?}");
        }
    }
}
