//! Filling a Maglev table: the paper's turns, walked faster.
//!
//! In the paper's loop (§3.4, Pseudocode 1) the backends take turns, and
//! each walks its permutation from a cursor until it meets a free slot.
//! Written as one slot per step, the walk waits for a table read (the
//! 65 537 `u16` entries do not fit in L1) and then mispredicts the branch
//! that depends on it, about once per slot claimed: `perf record -e
//! cpu-clock` put 60 % of a rollout's time on that one branch. Three
//! changes make the same walks cheaper, and give the same table entry for
//! entry:
//!
//! * While many slots are free (down to `LANES_SHARE` %), the walks of a
//!   round run in lockstep with AVX2 (`lanes`): one unpredictable branch
//!   per 16 backends instead of one per claim. Without AVX2 the walks
//!   below do the whole fill.
//! * `walk` looks at four slots of the permutation per step, computed
//!   independently and read without a branch between them: four reads in
//!   flight and one well-predicted branch per step.
//! * The tail is ranked instead of walked. With `F` slots left a walk costs
//!   about `M / F` slots. A cursor has only ever passed slots that were
//!   taken when it looked, and a taken slot never becomes free again, so a
//!   walk always ends on the free slot the fewest steps ahead of its
//!   cursor. Once few slots are free, each backend ranks them by that
//!   number of steps, `(slot − cursor) · skip⁻¹ mod M` (`M` is prime), and
//!   the turns go on by taking the next slot of each ranking that is still
//!   free. The products use no division (`Modulus`) and the rankings are
//!   radix-sorted.
//!
//! Where the time goes (stages timed separately, best of 1 000, M = 65537,
//! 10 backends, this host): lockstep rounds to 30 % free 0.17 ms, walks to
//! 409 free 0.20 ms, ranked tail 0.035 ms (0.075 ms with `%` and
//! `sort_unstable`). The walks of the dense middle still mispredict once
//! per claim, and their cost is that branch and the instructions per slot,
//! not the L2 reads: walking an L1-resident bitmap of taken slots instead
//! of the entries was slower (0.24 ms instead of 0.20 for that stage).
//! Also slower: the lockstep rounds further down, eight slots per step
//! (scalar, or from one AVX2 gather), lockstep over several rounds at once
//! (fewer idle lanes, but more bookkeeping), rounds of 8 lanes, and one
//! AVX-512 vector of 16 lanes instead of two AVX2 vectors (Zen 4 gathers
//! 16 lanes slower than 2 × 8).
//!
//! `tests::matches_the_papers_loop` compares with the one-slot loop on
//! many tables; `maglev::tests::golden_hashes_and_table` pins the result.

/// One enabled backend's walk through its permutation.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cursor {
    /// Index of the backend in the caller's list: what its slots hold.
    pub index: u16,
    /// The next slot of its permutation it has not looked at.
    pub next: usize,
    /// Its permutation's step, in `1..M`.
    pub skip: usize,
}

/// Marks a free slot while the table is filled.
pub(super) const EMPTY: u16 = u16::MAX;

/// The walks switch to ranked free slots when `free × backends` is at most
/// `M / RANK_SHARE`: the rankings then hold at most `M / 16` entries (32 KiB
/// for the default size), and their sort costs less than the walks saved.
/// Chosen by timing builds (best of 400, M = 65537, 10 backends) with the
/// switch at 100–1 600 free slots: 0.51 ms at 100–400 (16 gives 409),
/// 0.55 ms without the ranking, 0.74 ms at 1 600. Retimed after the
/// ranking got cheaper (`Modulus`, `RadixSort`; fill of 10 backends, best
/// of 1 000): 0.42 ms at 10, 16 and 24 alike, 0.46–0.50 ms at 6.
const RANK_SHARE: usize = 16;

/// Lockstep rounds (`lanes`) run while more than `M · LANES_SHARE / 100`
/// slots are free. Chosen by timing the stages of builds (best of 1 000,
/// M = 65537): with 10 backends the lanes and the walks cost the same per
/// claim near 25–30 % free (fill 0.41 ms at 25 and at 30 %, 0.46 at 40 %,
/// 0.50 at 10 %); with 100 and 1 000 backends 30–40 % were best too.
const LANES_SHARE: usize = 30;

/// The filled table of `m` slots (a prime) for `cursors`, at least one and
/// fewer than `m`, taking turns in their order.
pub(super) fn fill(m: usize, cursors: &mut [Cursor]) -> Vec<u16> {
    fill_with(m, cursors, true)
}

/// `fill`, with the lockstep rounds (when the CPU has AVX2) or without
/// them: the tests compare both with the paper's loop.
pub(super) fn fill_with(m: usize, cursors: &mut [Cursor], lockstep: bool) -> Vec<u16> {
    let mut entries = vec![EMPTY; m];
    let rank_below = (m / RANK_SHARE) / cursors.len().max(1);
    let mut free = m;
    if lockstep {
        // At least one free slot per backend, for every round.
        let stop = (m / 100 * LANES_SHARE).max(rank_below).max(cursors.len());
        free = super::lanes::rounds(&mut entries, cursors, stop);
    }
    let free = walk_rounds(&mut entries, cursors, rank_below, free);
    if free > 0 {
        finish_ranked(m, cursors, &mut entries, free);
    }
    entries
}

/// Whole rounds of walks, from a table with `free` free slots, until at
/// most `stop` are (whole rounds only, so that the ranked turns start where
/// a round does); returns how many are.
#[inline(never)]
fn walk_rounds(entries: &mut [u16], cursors: &mut [Cursor], stop: usize, mut free: usize) -> usize {
    let m = entries.len();
    let strides: Vec<[usize; 4]> = cursors.iter().map(|c| strides(c.skip, m)).collect();
    while free > stop {
        for (c, stride) in cursors.iter_mut().zip(&strides) {
            let slot = walk(entries, c.next, stride, m);
            entries[slot] = c.index;
            c.next = advance(slot, c.skip, m);
            free -= 1;
            if free == 0 {
                return 0;
            }
        }
    }
    free
}

/// `[skip, 2·skip, 3·skip, 4·skip] mod m`: the offsets of the four slots
/// `walk` looks at in one step.
fn strides(skip: usize, m: usize) -> [usize; 4] {
    let two = advance(skip, skip, m);
    let three = advance(two, skip, m);
    [skip, two, three, advance(three, skip, m)]
}

/// The first free slot of a permutation from `slot` on, looking at four
/// slots per step (see the module comment). It is the same slot the
/// one-slot walk finds: the first free one in permutation order.
///
/// Always inlined into `walk_rounds`, a function of its own: written
/// inside `fill`, the compiler kept `entries` and `m` on the stack and
/// reloaded them on every step (790 µs a table instead of 567 µs here).
#[inline(always)]
fn walk(entries: &[u16], mut slot: usize, stride: &[usize; 4], m: usize) -> usize {
    // Terminates: the table is not full, and a skip in 1..M with M prime
    // walks all M slots.
    loop {
        let s1 = advance(slot, stride[0], m);
        let s2 = advance(slot, stride[1], m);
        let s3 = advance(slot, stride[2], m);
        let free = u32::from(entries[slot] == EMPTY)
            | u32::from(entries[s1] == EMPTY) << 1
            | u32::from(entries[s2] == EMPTY) << 2
            | u32::from(entries[s3] == EMPTY) << 3;
        if free != 0 {
            return [slot, s1, s2, s3][free.trailing_zeros() as usize];
        }
        slot = advance(slot, stride[3], m);
    }
}

/// The turns after the switch: each backend takes the free slot fewest
/// steps ahead of its cursor, read from its ranking of the slots that were
/// free at the switch.
fn finish_ranked(m: usize, cursors: &[Cursor], entries: &mut [u16], mut free: usize) {
    // The free slots, found 32 at a time: few are left.
    let mut free_slots: Vec<u64> = Vec::with_capacity(free);
    for (i, chunk) in entries.chunks(32).enumerate() {
        if chunk.iter().fold(false, |any, &e| any | (e == EMPTY)) {
            let slots = chunk.iter().enumerate().filter(|(_, &e)| e == EMPTY);
            free_slots.extend(slots.map(|(j, _)| (i * 32 + j) as u64));
        }
    }
    let n = free_slots.len();
    let modulus = Modulus::new(m);
    // Ranking of backend k: rankings[k * n..(k + 1) * n], each entry
    // `steps << 32 | slot`, sorted. Steps and slots are below M ≤ 2^24.
    let mut rankings: Vec<u64> = Vec::with_capacity(n * cursors.len());
    let mut sort = RadixSort::new(m, n);
    for c in cursors {
        let inverse = inverse_mod(c.skip as u64, m as u64);
        let from = rankings.len();
        let next = c.next as u64;
        rankings.extend(free_slots.iter().map(|&slot| {
            let ahead = if slot >= next {
                slot - next
            } else {
                slot + m as u64 - next
            };
            modulus.mul(ahead, inverse) << 32 | slot
        }));
        sort.sort(&mut rankings[from..]);
    }
    let mut taken = vec![0usize; cursors.len()];
    loop {
        let before = free;
        for (k, c) in cursors.iter().enumerate() {
            let ranking = &rankings[k * n..(k + 1) * n];
            // Some slot of the ranking is still free while the table is
            // not full: each slot a backend passes over was taken.
            while let Some(&entry) = ranking.get(taken[k]) {
                taken[k] += 1;
                #[allow(clippy::cast_possible_truncation)] // the low 32 bits: a slot < M
                let slot = (entry as u32) as usize;
                if entries[slot] == EMPTY {
                    entries[slot] = c.index;
                    free -= 1;
                    break;
                }
            }
            if free == 0 {
                return;
            }
        }
        if free == before {
            // Cannot happen (see above); a full table is still better
            // than an endless loop.
            debug_assert!(false, "maglev rankings exhausted with {free} free");
            let first = cursors.first().map_or(0, |c| c.index);
            entries
                .iter_mut()
                .filter(|e| **e == EMPTY)
                .for_each(|e| *e = first);
            return;
        }
    }
}

/// `a · b mod m` for `a, b < m ≤ 2^24` without a division: the quotient
/// from a floating-point product with `1/m` is off by at most one, then
/// corrected. `%` on `u64` took 40 % of the ranked turns.
struct Modulus {
    m: u64,
    reciprocal: f64,
}

impl Modulus {
    fn new(m: usize) -> Modulus {
        Modulus {
            m: m as u64,
            reciprocal: 1.0 / m as f64,
        }
    }

    fn mul(&self, a: u64, b: u64) -> u64 {
        // a · b < 2^48: exact as f64 and as i64. The estimate of the
        // quotient a · b / m < 2^24 is within 2^-27 of it, and the quotient
        // is 0 (exact) or at least 1/m ≥ 2^-24 away from an integer, so it
        // truncates to the true quotient; the correction below only guards
        // that argument.
        let product = a * b;
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let estimate = ((product as i64) as f64 * self.reciprocal) as i64;
        #[allow(clippy::cast_possible_wrap)]
        let (product, m) = (product as i64, self.m as i64);
        let r = product - estimate * m;
        #[allow(clippy::cast_sign_loss)] // in 0..m after the correction
        let r = if r < 0 {
            r + m
        } else if r >= m {
            r - m
        } else {
            r
        } as u64;
        r
    }
}

/// Sorts ranking entries (`steps << 32 | slot`, steps < M) by their steps
/// in two counting passes of half the bits of `M − 1` each: cheaper than
/// `sort_unstable` for the few hundred entries of a ranking (38 µs instead
/// of 46 µs for the ranked turns of 10 backends).
struct RadixSort {
    digit: u32,
    counts: Vec<u32>,
    scratch: Vec<u64>,
}

impl RadixSort {
    fn new(m: usize, len: usize) -> RadixSort {
        let bits = usize::BITS - m.saturating_sub(1).leading_zeros();
        let digit = bits.div_ceil(2).max(1);
        RadixSort {
            digit,
            counts: vec![0; 1 << digit],
            scratch: vec![0; len],
        }
    }

    fn sort(&mut self, keys: &mut [u64]) {
        let scratch = &mut self.scratch[..keys.len()];
        Self::pass(keys, scratch, &mut self.counts, 32, self.digit);
        Self::pass(scratch, keys, &mut self.counts, 32 + self.digit, self.digit);
    }

    /// Stable counting sort of `from` into `to` by bits `shift..shift + digit`.
    fn pass(from: &[u64], to: &mut [u64], counts: &mut [u32], shift: u32, digit: u32) {
        let mask = (1u64 << digit) - 1;
        #[allow(clippy::cast_possible_truncation)] // < 2^digit ≤ 2^12
        let bucket = |key: u64| ((key >> shift) & mask) as usize;
        counts.fill(0);
        for &key in from {
            counts[bucket(key)] += 1;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            (*c, sum) = (sum, sum + *c);
        }
        for &key in from {
            let b = bucket(key);
            to[counts[b] as usize] = key;
            counts[b] += 1;
        }
    }
}

/// `a⁻¹ mod m` for a prime `m` and `a` in `1..m` (extended Euclid).
fn inverse_mod(a: u64, m: u64) -> u64 {
    // Values stay below m ≤ 2^24 in magnitude: i64 holds them.
    let (mut r0, mut r1) = (m as i64, a as i64);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    // r0 == 1 because m is prime and a is not a multiple of it.
    t0.rem_euclid(m as i64) as u64
}

/// `(slot + skip) mod m` for `slot, skip < m`, without overflow.
pub(super) fn advance(slot: usize, skip: usize, m: usize) -> usize {
    let room = m - skip;
    if slot >= room {
        slot - room
    } else {
        slot + skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::maglev::{backend_hashes, is_prime, reduce};

    /// The paper's loop as written: every turn walks until a free slot.
    fn probing_only(m: usize, cursors: &mut [Cursor]) -> Vec<u16> {
        let mut entries = vec![EMPTY; m];
        let mut free = m;
        loop {
            for c in cursors.iter_mut() {
                let mut slot = c.next;
                while entries[slot] != EMPTY {
                    slot = advance(slot, c.skip, m);
                }
                entries[slot] = c.index;
                c.next = advance(slot, c.skip, m);
                free -= 1;
                if free == 0 {
                    return entries;
                }
            }
        }
    }

    fn cursors(m: usize, n: usize, seed: u64) -> Vec<Cursor> {
        (0..n)
            .map(|i| {
                let key = [seed.to_le_bytes(), (i as u64).to_le_bytes()].concat();
                let (h1, h2) = backend_hashes(&key);
                Cursor {
                    index: u16::try_from(i).unwrap(),
                    next: reduce(h1, m),
                    skip: reduce(h2, m - 1) + 1,
                }
            })
            .collect()
    }

    #[test]
    fn matches_the_papers_loop() {
        let mut tables = 0;
        for m in [2, 3, 7, 13, 101, 251, 1009, 4099, 65537] {
            assert!(is_prime(m));
            for n in [1, 2, 3, 10, 15, 16, 17, 37, 100, 1000] {
                if n >= m {
                    continue;
                }
                for seed in 0..4 {
                    let c = cursors(m, n, seed);
                    let want = probing_only(m, &mut c.clone());
                    let lockstep = fill_with(m, &mut c.clone(), true);
                    assert_eq!(lockstep, want, "lockstep m={m} n={n} seed={seed}");
                    let scalar = fill_with(m, &mut c.clone(), false);
                    assert_eq!(scalar, want, "scalar m={m} n={n} seed={seed}");
                    tables += 1;
                }
            }
        }
        assert!(tables > 230);
    }

    /// The lockstep path is the one a build uses on this CPU, so the test
    /// above covers it wherever AVX2 exists (all x86-64 CI hosts here).
    #[test]
    fn lockstep_runs_where_avx2_is() {
        let m = 65537;
        let mut c = cursors(m, 10, 1);
        let free = crate::dataplane::maglev::lanes::rounds(&mut vec![EMPTY; m], &mut c, m / 2);
        if crate::dataplane::maglev::lanes::available() {
            assert!(free <= m / 2, "lockstep left {free} free");
        } else {
            assert_eq!(free, m);
        }
    }

    /// Backends sharing one permutation (duplicate keys) split its slots
    /// the same way in both fills.
    #[test]
    fn duplicate_permutations_match_too() {
        let m = 65537;
        let mut c = cursors(m, 10, 7);
        c[3].next = c[1].next;
        c[3].skip = c[1].skip;
        assert_eq!(fill(m, &mut c.clone()), probing_only(m, &mut c));
    }

    #[test]
    fn fast_modular_products() {
        for m in [2usize, 3, 13, 65537, 16_777_213] {
            let modulus = Modulus::new(m);
            let m = m as u64;
            let values = [0, 1, 2, m / 3, m / 2, m - 2, m - 1];
            for a in values.into_iter().filter(|&v| v < m) {
                for b in values.into_iter().filter(|&v| v < m) {
                    assert_eq!(modulus.mul(a, b), a * b % m, "{a}·{b} mod {m}");
                }
            }
        }
        // Random products, and the quotients closest to an integer:
        // a · a⁻¹ = 1 and a · (m − a⁻¹) = m − 1 (mod m).
        let modulus = Modulus::new(16_777_213);
        let m = 16_777_213u64;
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let (a, b) = ((x >> 16) % m, (x >> 40) % m);
            assert_eq!(modulus.mul(a, b), a * b % m);
            let a = a.max(1);
            let inverse = inverse_mod(a, m);
            assert_eq!(modulus.mul(a, inverse), 1);
            assert_eq!(modulus.mul(a, m - inverse), m - 1);
        }
    }

    #[test]
    fn radix_sort_orders_by_steps() {
        for (m, len) in [(2usize, 2usize), (13, 13), (65537, 500), (16_777_213, 1000)] {
            let mut x = 99u64;
            let mut keys: Vec<u64> = (0..len as u64)
                .map(|slot| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    ((x >> 20) % m as u64) << 32 | slot
                })
                .collect();
            let mut want = keys.clone();
            want.sort_by_key(|k| k >> 32);
            RadixSort::new(m, len).sort(&mut keys);
            assert_eq!(keys, want, "m={m}");
        }
    }

    #[test]
    fn inverses() {
        for m in [2u64, 13, 65537, 16_777_213] {
            for a in [1, 2, m / 2, m - 1]
                .into_iter()
                .filter(|a| (1..m).contains(a))
            {
                assert_eq!(a * inverse_mod(a, m) % m, 1, "a={a} m={m}");
            }
        }
    }
}
