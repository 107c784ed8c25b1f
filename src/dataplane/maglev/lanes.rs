//! The first rounds of the fill, walked in lockstep with AVX2.
//!
//! While many slots are free, a walk is short (one or two slots) but its
//! end is still a branch on a table read, and claims of the same round
//! wait on one another. Here the backends of a round, up to 16 at a time
//! (a *chunk*: two vectors of eight), each look for their candidate — the
//! first slot of their permutation, from their cursor, free at the start
//! of the chunk — all in one loop that reads a slot per backend per step
//! (AVX2 gathers from a bitmap of taken slots, 8 KiB for the default size,
//! so it stays in L1) and ends when every backend has found one: one
//! unpredictable branch per chunk instead of one per claim.
//!
//! The claims are then made in turn order, and this is exact: a slot
//! taken at the start of the chunk stays taken, so at a backend's real
//! turn its first free slot is its candidate, unless a backend earlier in
//! the same chunk took that slot; then its walk goes on from there, slot
//! by slot, as in the paper's loop.
//!
//! It only pays while walks are short: the loop runs as long as the
//! longest walk of the chunk, and a gather costs more than a scalar read.
//! `fill` stops it at `LANES_SHARE` (see there).
//!
//! Unsafe code (the crate denies it elsewhere in the data plane): only the
//! AVX2 intrinsics, behind `is_x86_feature_detected!`.
#![allow(unsafe_code)]

use super::fill::{advance, Cursor};

/// Backends walked together: two AVX2 vectors of eight `u32` lanes.
const LANES: usize = 16;

/// Whole rounds of lockstep walks while more than `stop` slots are free;
/// returns how many are, or `entries.len()` (nothing done) when the CPU
/// has no AVX2. `entries` must be all free, `stop` at least
/// `cursors.len()` so that every walk of a round finds a free slot.
pub(super) fn rounds(entries: &mut [u16], cursors: &mut [Cursor], stop: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { avx2::rounds(entries, cursors, stop) };
        }
    }
    let _ = (cursors, stop);
    entries.len()
}

/// True when `rounds` does anything on this CPU (for tests).
#[cfg(test)]
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{advance, Cursor, LANES};
    use std::arch::x86_64::*;

    /// `rounds` for a CPU with AVX2. Slots and skips are below
    /// `M ≤ MAX_TABLE_SIZE = 2^24`, so they fit the `u32` (and `i32`)
    /// lanes, and `slot + skip` does not overflow.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rounds(entries: &mut [u16], cursors: &mut [Cursor], stop: usize) -> usize {
        let m = entries.len();
        let n = cursors.len();
        let chunks = n.div_ceil(LANES);
        // One lane per backend; lanes past the last backend walk slot 0
        // with skip 1 and are never claimed.
        let mut pos = vec![0u32; chunks * LANES];
        let mut skip = vec![1u32; chunks * LANES];
        for ((p, s), c) in pos.iter_mut().zip(skip.iter_mut()).zip(cursors.iter()) {
            *p = u32::try_from(c.next).unwrap_or(0);
            *s = u32::try_from(c.skip).unwrap_or(1);
        }
        let index: Vec<u16> = cursors.iter().map(|c| c.index).collect();
        // Bit `s % 32` of word `s / 32` is set once slot `s` is taken.
        let mut taken = vec![0u32; m / 32 + 1];
        let mut candidates = [0u32; LANES];
        let mut free = m;
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // m ≤ 2^24
        let m_lanes = m as i32;
        // SAFETY: AVX2 is enabled for this function and the caller checked
        // the CPU has it. The unaligned loads and stores of `pos`, `skip`
        // and `candidates` read or write 16 `u32` from `base`, within their
        // length (a multiple of 16). The gathers read `taken[slot / 32]`
        // for slots < m, within its m / 32 + 1 words.
        unsafe {
            let mv = _mm256_set1_epi32(m_lanes);
            let one = _mm256_set1_epi32(1);
            let low5 = _mm256_set1_epi32(31);
            let zero = _mm256_setzero_si256();
            let all = _mm256_set1_epi32(-1);
            let lane0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let lane1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
            while free > stop {
                for chunk in 0..chunks {
                    let base = chunk * LANES;
                    let active = (n - base).min(LANES);
                    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
                    let act = _mm256_set1_epi32(active as i32);
                    // Lanes past the last backend start done.
                    let mut done0 = _mm256_xor_si256(_mm256_cmpgt_epi32(act, lane0), all);
                    let mut done1 = _mm256_xor_si256(_mm256_cmpgt_epi32(act, lane1), all);
                    let mut p0 = _mm256_loadu_si256(pos.as_ptr().add(base).cast());
                    let mut p1 = _mm256_loadu_si256(pos.as_ptr().add(base + 8).cast());
                    let s0 = _mm256_loadu_si256(skip.as_ptr().add(base).cast());
                    let s1 = _mm256_loadu_si256(skip.as_ptr().add(base + 8).cast());
                    let mut c0 = p0;
                    let mut c1 = p1;
                    let bits: *const i32 = taken.as_ptr().cast();
                    while _mm256_movemask_epi8(_mm256_and_si256(done0, done1)) != -1 {
                        let w0 = _mm256_i32gather_epi32::<4>(bits, _mm256_srli_epi32::<5>(p0));
                        let w1 = _mm256_i32gather_epi32::<4>(bits, _mm256_srli_epi32::<5>(p1));
                        let t0 = _mm256_srlv_epi32(w0, _mm256_and_si256(p0, low5));
                        let t1 = _mm256_srlv_epi32(w1, _mm256_and_si256(p1, low5));
                        let f0 = _mm256_cmpeq_epi32(_mm256_and_si256(t0, one), zero);
                        let f1 = _mm256_cmpeq_epi32(_mm256_and_si256(t1, one), zero);
                        // The first free slot a lane meets is its candidate.
                        c0 = _mm256_blendv_epi8(c0, p0, _mm256_andnot_si256(done0, f0));
                        c1 = _mm256_blendv_epi8(c1, p1, _mm256_andnot_si256(done1, f1));
                        done0 = _mm256_or_si256(done0, f0);
                        done1 = _mm256_or_si256(done1, f1);
                        p0 = add_mod(p0, s0, mv);
                        p1 = add_mod(p1, s1, mv);
                    }
                    _mm256_storeu_si256(candidates.as_mut_ptr().cast(), c0);
                    _mm256_storeu_si256(candidates.as_mut_ptr().add(8).cast(), c1);
                    // The cursors after the candidates, as whole vectors
                    // (rewritten below for the rare lane whose candidate
                    // was taken by an earlier lane).
                    _mm256_storeu_si256(pos.as_mut_ptr().add(base).cast(), add_mod(c0, s0, mv));
                    _mm256_storeu_si256(pos.as_mut_ptr().add(base + 8).cast(), add_mod(c1, s1, mv));
                    for (j, &candidate) in candidates.iter().enumerate().take(active) {
                        let k = base + j;
                        let mut slot = candidate as usize;
                        if taken[slot / 32] >> (slot % 32) & 1 != 0 {
                            // Taken by an earlier lane of this chunk: walk
                            // on. Terminates: a slot is free, since free
                            // > stop ≥ backends at the start of the round.
                            let step = skip[k] as usize;
                            while taken[slot / 32] >> (slot % 32) & 1 != 0 {
                                slot = advance(slot, step, m);
                            }
                            #[allow(clippy::cast_possible_truncation)] // < m ≤ 2^24
                            let next = advance(slot, step, m) as u32;
                            pos[k] = next;
                        }
                        taken[slot / 32] |= 1 << (slot % 32);
                        entries[slot] = index[k];
                    }
                    free -= active;
                }
            }
        }
        for (c, &p) in cursors.iter_mut().zip(&pos) {
            c.next = p as usize;
        }
        free
    }

    /// `(a + b) mod m` per lane for `a, b < m`, `mv` holding `m`: the
    /// smaller of `a + b` and `a + b − m` (which wraps to a large value
    /// when `a + b < m`).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn add_mod(a: __m256i, b: __m256i, mv: __m256i) -> __m256i {
        // SAFETY: AVX2 is enabled for this function (the caller's duty).
        // Rust ≥ 1.87 calls these intrinsics safe here, 1.80 (the MSRV)
        // does not.
        #[allow(unused_unsafe)]
        unsafe {
            let sum = _mm256_add_epi32(a, b);
            _mm256_min_epu32(sum, _mm256_sub_epi32(sum, mv))
        }
    }
}
