//! The flow table's index hash: randomly keyed per table, so that
//! clients cannot predict which 5-tuples share a probe chain.

use ahash::RandomState;

use super::FlowKey;

/// The flow table's private index hash, keyed with random secrets per
/// table: clients choose their 5-tuples, so the index must not be
/// predictable or they could pile their flows into one probe chain.
///
/// Same construction as ahash's portable fallback (which this replaced,
/// for about a third of its instructions on a 37-byte key): each pair of
/// 64-bit words is mixed with secret keys by a "folded multiply" (the
/// 128-bit product's halves XORed), and the three lane results are folded
/// once more. (Folding the ports into the final multiply directly saves
/// one multiply but skews the low bits: see the test
/// `index_hash_spreads_and_depends_on_every_field`.) The keys come from
/// ahash's `RandomState`, i.e. the OS's random source. Unrelated to the
/// fixed `FlowKey::flow_hash`, which picks backends and must be the same
/// everywhere.
#[derive(Clone, Copy)]
pub(super) struct IndexHasher {
    keys: [u64; 8],
}

impl IndexHasher {
    pub(super) fn random() -> IndexHasher {
        let seed = RandomState::new();
        let mut keys = [0u64; 8];
        for (i, k) in (0u64..).zip(keys.iter_mut()) {
            *k = seed.hash_one(i);
        }
        IndexHasher { keys }
    }

    #[inline]
    pub(super) fn hash(&self, key: &FlowKey) -> u64 {
        let k = &self.keys;
        let (s0, s1) = halves(&key.src);
        let (d0, d1) = halves(&key.dst);
        let rest = (u64::from(key.src_port) << 24)
            | (u64::from(key.dst_port) << 8)
            | u64::from(key.protocol);
        let a = folded_multiply(s0 ^ k[0], s1 ^ k[1]);
        let b = folded_multiply(d0 ^ k[2], d1 ^ k[3]);
        let c = folded_multiply(rest ^ k[4], a ^ k[5]);
        folded_multiply(b ^ k[6], c ^ k[7])
    }
}

/// The 128-bit product of `a` and `b`, its halves XORed.
#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // splitting into halves on purpose
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // splitting into halves on purpose
fn halves(a: &[u8; 16]) -> (u64, u64) {
    let x = u128::from_ne_bytes(*a);
    (x as u64, (x >> 64) as u64)
}
