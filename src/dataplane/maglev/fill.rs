//! Filling a Maglev table: the paper's turns, walked faster.
//!
//! In the paper's loop (§3.4, Pseudocode 1) the backends take turns, and
//! each walks its permutation from a cursor until it meets a free slot.
//! Written as one slot per step, the walk waits for a table read (the
//! 65 537 `u16` entries do not fit in L1) and then mispredicts the branch
//! that depends on it, about once per slot claimed: `perf record -e
//! cpu-clock` put 60 % of a rollout's time on that one branch. Two changes
//! make the same walk cheaper, and give the same table entry for entry:
//!
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
//!   free.
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
/// 0.55 ms without the ranking, 0.74 ms at 1 600.
const RANK_SHARE: usize = 16;

/// The filled table of `m` slots (a prime) for `cursors`, at least one and
/// fewer than `m`, taking turns in their order.
pub(super) fn fill(m: usize, cursors: &mut [Cursor]) -> Vec<u16> {
    let mut entries = vec![EMPTY; m];
    let rank_below = (m / RANK_SHARE) / cursors.len().max(1);
    let free = walk_rounds(&mut entries, cursors, rank_below);
    if free > 0 {
        finish_ranked(m, cursors, &mut entries, free);
    }
    entries
}

/// Whole rounds of walks until at most `stop` slots are free (whole rounds
/// only, so that the ranked turns start where a round does); returns how
/// many are.
#[inline(never)]
fn walk_rounds(entries: &mut [u16], cursors: &mut [Cursor], stop: usize) -> usize {
    let m = entries.len();
    let mut free = m;
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
    let free_slots: Vec<u64> = entries
        .iter()
        .enumerate()
        .filter(|(_, &e)| e == EMPTY)
        .map(|(slot, _)| slot as u64)
        .collect();
    let n = free_slots.len();
    let m64 = m as u64;
    // Ranking of backend k: rankings[k * n..(k + 1) * n], each entry
    // `steps << 32 | slot`, sorted. Steps and slots are below M ≤ 2^24.
    let mut rankings: Vec<u64> = Vec::with_capacity(n * cursors.len());
    for c in cursors {
        let inverse = inverse_mod(c.skip as u64, m64);
        let from = rankings.len();
        rankings.extend(free_slots.iter().map(|&slot| {
            let ahead = (slot + m64 - c.next as u64) % m64;
            let steps = ahead * inverse % m64;
            steps << 32 | slot
        }));
        rankings[from..].sort_unstable();
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
            for n in [1, 2, 3, 10, 37, 100, 1000] {
                if n >= m {
                    continue;
                }
                for seed in 0..4 {
                    let c = cursors(m, n, seed);
                    let want = probing_only(m, &mut c.clone());
                    let got = fill(m, &mut c.clone());
                    assert_eq!(got, want, "m={m} n={n} seed={seed}");
                    tables += 1;
                }
            }
        }
        assert!(tables > 150);
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
