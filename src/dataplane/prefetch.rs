//! A hint that a cache line will be read soon.
//!
//! The pipeline takes a burst through in passes (see `Pipeline::process`):
//! each pass asks for the lines that the next one reads (the version, the
//! flow's node, the counters and the backend's path), so that their
//! misses (tens of cycles each from L2 and L3, hundreds from memory) overlap
//! instead of waiting in turn. A plain load would do the same for a
//! single packet, but it holds its place in the core's reorder window until
//! the line arrives; a prefetch retires at once, so a whole burst's lines
//! are in flight together.
//!
//! Unsafe code (the crate denies it outside a few modules): one intrinsic
//! that cannot fault.
#![allow(unsafe_code)]

/// Starts loading the line that holds the start of `value` into every
/// cache level. Does nothing but hint: it changes no memory and no result,
/// and on other architectures than x86-64 it is a no-op.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 loads nothing into a register, writes nothing and
    // never faults, whatever the address; and `value` is a valid reference.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(core::ptr::from_ref(value).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
