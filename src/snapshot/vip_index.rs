//! The VIP → version index that every packet reads.
//!
//! A flat open-addressing array with linear probing, at most half full. A
//! lookup is one multiply, one load of a 24-byte entry and a compare in the
//! common case, about a third of the instructions of a general hash map's
//! probe (control-byte group, tag match, bitmask walk) at the same memory:
//! 24 bytes per entry at load 1/4..1/2 against the map's 32 per bucket at
//! up to 7/8.
//!
//! An entry holds the version itself (the snapshot's `Arc`), not its slot:
//! going through the slot table cost each packet one more dependent load,
//! of a line of its own once a thousand versions are in use
//! (`docs/performance.md`, session 7).
//!
//! The snapshot builder inserts and removes on its own copy (removal by
//! backward shift, so no tombstones slow later lookups); a published
//! snapshot's index never changes. A snapshot derived from another starts
//! from a copy of its parent's index, so a publish costs a copy of the
//! array's chunk pointers plus the chunks of the changed VIPs, not a
//! rebuild (`super::chunked`).
//!
//! Keys are inserted only by the control plane, so there is no collision
//! attack to resist and no reason for a keyed hash.

use super::chunked::Chunked;

#[derive(Debug, Clone)]
struct Entry<V> {
    /// The VIP key ([`super::vip_key`]) in halves: 8-byte alignment keeps
    /// the entry at 24 bytes with a pointer for a value.
    hi: u64,
    lo: u64,
    /// What the VIP maps to; `None` for an empty entry.
    value: Option<V>,
}

impl<V> Entry<V> {
    const VACANT: Entry<V> = Entry {
        hi: 0,
        lo: 0,
        value: None,
    };
}

/// An immutable map from VIP to `V` (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct VipIndex<V> {
    /// A power of two long, never more than half full, so every probe
    /// sequence ends at an empty entry. Chunked, so that a derived
    /// snapshot's index shares the chunks its changes did not touch.
    entries: Chunked<Entry<V>>,
    /// `64 - log2(entries.len())`: the hash's top bits pick the start.
    shift: u32,
    len: usize,
}

#[allow(clippy::cast_possible_truncation)] // splits into halves on purpose
#[inline(always)]
fn halves(key: u128) -> (u64, u64) {
    ((key >> 64) as u64, key as u64)
}

impl<V: Clone> VipIndex<V> {
    /// An empty index with room for `n` keys before it grows.
    pub(super) fn with_capacity(n: usize) -> VipIndex<V> {
        // At least twice the keys, and at least 2 entries.
        let size = n.saturating_mul(2).max(2).next_power_of_two();
        VipIndex {
            entries: Chunked::filled(size, Entry::VACANT),
            shift: 64 - size.trailing_zeros(),
            len: 0,
        }
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

    /// Maps `key` to `value`, unless `key` is there already: then nothing
    /// changes and the value it maps to is returned.
    pub(super) fn insert(&mut self, key: u128, value: V) -> Option<V> {
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        let (hi, lo) = halves(key);
        let mask = self.entries.len() - 1;
        let mut i = self.start(hi, lo);
        // Bounded: the table is at most half full, so an empty entry
        // comes long before the end.
        for _ in 0..self.entries.len() {
            let e = self.entries.get(i)?;
            let Some(held) = &e.value else {
                *self.entries.get_mut(i)? = Entry {
                    hi,
                    lo,
                    value: Some(value),
                };
                self.len += 1;
                return None;
            };
            if e.hi == hi && e.lo == lo {
                return Some(held.clone());
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Removes `key`, returning its value. The entries after it in its
    /// cluster move back into the hole when their probe start allows it
    /// (Knuth's algorithm R), so lookups never meet a tombstone.
    pub(super) fn remove(&mut self, key: u128) -> Option<V> {
        let (hi, lo) = halves(key);
        let mask = self.entries.len() - 1;
        let mut i = self.start(hi, lo);
        let mut found = None;
        for _ in 0..self.entries.len() {
            let e = self.entries.get(i)?;
            // An empty entry ends the probe: `key` is not there.
            e.value.as_ref()?;
            if e.hi == hi && e.lo == lo {
                found = Some(i);
                break;
            }
            i = (i + 1) & mask;
        }
        let removed = self.entries.get_mut(found?)?.value.take();
        let mut hole = i;
        let mut j = i;
        for _ in 0..self.entries.len() {
            j = (j + 1) & mask;
            let e = self.entries.get(j)?;
            if e.value.is_none() {
                break;
            }
            // `e` may fill the hole when its start is not cyclically in
            // (hole, j]: its probe sequence then passes the hole.
            let start = self.start(e.hi, e.lo);
            let stays = if hole <= j {
                hole < start && start <= j
            } else {
                hole < start || start <= j
            };
            if !stays {
                let moved = std::mem::replace(self.entries.get_mut(j)?, Entry::VACANT);
                *self.entries.get_mut(hole)? = moved;
                hole = j;
            }
        }
        *self.entries.get_mut(hole)? = Entry::VACANT;
        self.len -= 1;
        removed
    }

    /// Doubles the table and re-inserts every entry.
    fn grow(&mut self) {
        let old = std::mem::replace(self, VipIndex::with_capacity(self.entries.len()));
        for e in old.entries.iter() {
            if let Some(v) = &e.value {
                self.insert((u128::from(e.hi) << 64) | u128::from(e.lo), v.clone());
            }
        }
    }

    /// Chunks of the table, and how many of them `other` shares.
    #[cfg(test)]
    pub(super) fn chunks(&self) -> usize {
        self.entries.len().div_ceil(super::chunked::CHUNK)
    }

    #[cfg(test)]
    pub(super) fn shared_chunks(&self, other: &VipIndex<V>) -> usize {
        self.entries.shared_chunks(&other.entries)
    }

    /// What `key` maps to, if anything.
    #[inline]
    pub(super) fn get(&self, key: u128) -> Option<&V> {
        let (hi, lo) = halves(key);
        let mask = self.entries.len() - 1;
        let mut i = self.start(hi, lo);
        // Bounded by the table size; the table is at most half full, so
        // the loop ends at an empty entry long before.
        for _ in 0..self.entries.len() {
            let e = self.entries.get(i)?;
            let value = e.value.as_ref()?;
            if e.hi == hi && e.lo == lo {
                return Some(value);
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
        let mut index = VipIndex::with_capacity(0);
        for (k, v) in pairs {
            assert_eq!(index.insert(*k, *v), None);
        }
        assert_eq!(index.len(), pairs.len());
        assert!(index.entries.len() >= 2 * pairs.len());
        for (k, v) in pairs {
            assert_eq!(index.get(*k).copied(), Some(*v), "{k:#x}");
        }
        for k in probes {
            assert_eq!(index.get(*k).copied(), pairs.get(k).copied(), "{k:#x}");
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

    /// A random sequence of inserts and removes, with keys drawn from a
    /// small set so that clusters form, wrap around the end and get holes
    /// punched in them, agrees with a `HashMap` after every step.
    #[test]
    fn inserts_and_removes_agree_with_a_map() {
        let mut rng = 7u64;
        for round in 0..20 {
            let keys: Vec<u128> = (0..40)
                .map(|_| u128::from(splitmix(&mut rng)) << (round % 3 * 40))
                .collect();
            let mut index = VipIndex::with_capacity(0);
            let mut model: HashMap<u128, u32> = HashMap::new();
            for step in 0..600u32 {
                let r = splitmix(&mut rng);
                let key = keys[usize::try_from(r % 40).unwrap()];
                if r >> 63 == 0 {
                    let want = model.get(&key).copied();
                    assert_eq!(index.insert(key, step), want);
                    model.entry(key).or_insert(step);
                } else {
                    assert_eq!(index.remove(key), model.remove(&key));
                }
                assert_eq!(index.len(), model.len());
                assert!(index.len() * 2 <= index.entries.len());
                for k in &keys {
                    assert_eq!(
                        index.get(*k).copied(),
                        model.get(k).copied(),
                        "round {round} step {step}"
                    );
                }
            }
        }
    }
}
