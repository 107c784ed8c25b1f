//! The VIP → version-slot index that every packet reads.
//!
//! A snapshot never changes once built, so its VIP index needs no inserts
//! or removals after [`VipIndex::build`]: a flat open-addressing array with
//! linear probing, at most half full, does. A lookup is one multiply, one
//! load of a 24-byte entry and a compare in the common case, about a third
//! of the instructions of a general hash map's probe (control-byte group,
//! tag match, bitmask walk) at the same memory: 24 bytes per entry at load
//! 1/4..1/2 against the map's 32 per bucket at up to 7/8. The builder
//! keeps its own map for the checks (a VIP held twice) and this index is
//! made from it once in `SnapshotBuilder::finish`.
//!
//! Keys are inserted only by the control plane, so there is no collision
//! attack to resist and no reason for a keyed hash.

/// Marks an empty entry: version slots are below `MAX_VERSIONS`.
const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The VIP key ([`super::vip_key`]) in halves: 8-byte alignment keeps
    /// the entry at 24 bytes.
    hi: u64,
    lo: u64,
    /// The version slot, or [`EMPTY`].
    slot: u32,
}

const VACANT: Entry = Entry {
    hi: 0,
    lo: 0,
    slot: EMPTY,
};

/// An immutable VIP → slot map (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct VipIndex {
    /// A power of two long, never more than half full, so every probe
    /// sequence ends at an empty entry.
    entries: Box<[Entry]>,
    /// `64 - log2(entries.len())`: the hash's top bits pick the start.
    shift: u32,
    len: usize,
}

#[allow(clippy::cast_possible_truncation)] // splits into halves on purpose
#[inline(always)]
fn halves(key: u128) -> (u64, u64) {
    ((key >> 64) as u64, key as u64)
}

impl VipIndex {
    /// The index of `pairs` (VIP key, slot). Keys must be distinct (the
    /// builder's map guarantees it) and slots below `u32::MAX`; a pair
    /// breaking either is left out rather than corrupting the index.
    pub(super) fn build(pairs: impl ExactSizeIterator<Item = (u128, u32)>) -> VipIndex {
        // At least twice the keys, and at least 2 entries.
        let size = pairs.len().saturating_mul(2).max(2).next_power_of_two();
        let mut index = VipIndex {
            entries: vec![VACANT; size].into_boxed_slice(),
            shift: 64 - size.trailing_zeros(),
            len: 0,
        };
        for (key, slot) in pairs {
            if slot != EMPTY {
                index.insert(key, slot);
            }
        }
        index
    }

    /// Number of VIPs.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The start of `key`'s probe sequence: Fibonacci hashing of the
    /// folded key, whose top bits depend on every input bit.
    #[inline(always)]
    fn start(&self, hi: u64, lo: u64) -> usize {
        let x = (hi.rotate_left(29) ^ lo).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // `shift` is at most 63 (`entries` holds at least 2), and the
        // result is below `entries.len()`.
        usize::try_from(x >> self.shift).unwrap_or(0)
    }

    fn insert(&mut self, key: u128, slot: u32) {
        let (hi, lo) = halves(key);
        let mask = self.entries.len() - 1;
        let mut i = self.start(hi, lo);
        for _ in 0..self.entries.len() {
            let Some(e) = self.entries.get_mut(i) else {
                return;
            };
            if e.slot == EMPTY {
                *e = Entry { hi, lo, slot };
                self.len += 1;
                return;
            }
            if e.hi == hi && e.lo == lo {
                return; // duplicate key: the first one stays
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot of the version holding `key`, if any.
    #[inline]
    pub(super) fn get(&self, key: u128) -> Option<u32> {
        let (hi, lo) = halves(key);
        let mask = self.entries.len() - 1;
        let mut i = self.start(hi, lo);
        // Bounded by the table size; the table is at most half full, so
        // the loop ends at an empty entry long before.
        for _ in 0..self.entries.len() {
            let e = self.entries.get(i)?;
            if e.hi == hi && e.lo == lo && e.slot != EMPTY {
                return Some(e.slot);
            }
            if e.slot == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A deterministic stream of pseudo-random words (splitmix64).
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn check(pairs: &HashMap<u128, u32>, probes: &[u128]) {
        let index = VipIndex::build(pairs.iter().map(|(k, v)| (*k, *v)));
        assert_eq!(index.len(), pairs.len());
        assert!(index.entries.len() >= 2 * pairs.len());
        for (k, v) in pairs {
            assert_eq!(index.get(*k), Some(*v), "{k:#x}");
        }
        for k in probes {
            assert_eq!(index.get(*k), pairs.get(k).copied(), "{k:#x}");
        }
    }

    /// Agrees with a `HashMap` on sequential IPv4-mapped VIPs (the common
    /// shape), random IPv6 ones, and absent keys next to present ones.
    #[test]
    fn agrees_with_a_map() {
        let mapped = |a: u32| (0xffff_u128 << 32) | u128::from(a);
        for n in [0u32, 1, 2, 3, 7, 100, 1000, 5000] {
            let mut pairs = HashMap::new();
            let mut probes = Vec::new();
            let mut rng = u64::from(n) + 1;
            for i in 0..n {
                pairs.insert(mapped(0xc633_6400 + i), i);
                let v6 = (u128::from(splitmix(&mut rng)) << 64) | u128::from(splitmix(&mut rng));
                pairs.insert(v6, i + n);
                probes.push(mapped(0xc633_6400 + n + i));
                probes.push(v6 ^ 1);
            }
            probes.extend([0, u128::MAX, mapped(0)]);
            check(&pairs, &probes);
        }
    }

    /// Keys that collide on the probe start still all resolve.
    #[test]
    fn colliding_starts_probe_on() {
        let mut pairs = HashMap::new();
        let mut k = 0u128;
        // Gather keys whose start is entry 0 of a 64-entry table.
        while pairs.len() < 20 {
            let (hi, lo) = halves(k);
            let x = (hi.rotate_left(29) ^ lo).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if x >> 58 == 0 {
                pairs.insert(k, u32::try_from(pairs.len()).unwrap());
            }
            k += 1;
        }
        check(&pairs, &[k, k + 1]);
    }

    /// The reserved slot value is never stored, so it cannot be returned.
    #[test]
    fn empty_marker_is_not_a_slot() {
        let index = VipIndex::build([(5u128, EMPTY), (6, 1)].into_iter());
        assert_eq!(index.get(5), None);
        assert_eq!(index.get(6), Some(1));
        assert_eq!(index.len(), 1);
    }
}
