//! The four single-producer/single-consumer rings of an AF_XDP socket.
//!
//! Each ring is a power-of-two array of entries plus a producer and a
//! consumer index (free-running `u32`s) in memory shared with the kernel.
//! We produce into the fill ring (frames the kernel may receive into) and
//! the TX ring (frames to send); we consume the RX ring (received frames)
//! and the completion ring (sent frames whose memory is ours again). The
//! indices are cached locally and re-read only when the cache says the
//! ring is empty (or full), so a burst costs two atomic operations, not two
//! per packet.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys::{XdpRingOffset, XDP_RING_NEED_WAKEUP};

/// Pointers into one ring's mapping.
#[derive(Debug)]
struct Raw<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<T>,
    mask: u32,
    _t: PhantomData<T>,
}

impl<T: Copy> Raw<T> {
    /// Checks `off` against a mapping of `map_len` bytes at `base` and
    /// builds the pointers; `None` when the layout does not fit (a kernel
    /// we do not understand), when `size` is not a power of two, or when a
    /// field is misaligned.
    ///
    /// # Safety
    /// `base` must point to `map_len` bytes that stay mapped, and are used
    /// as this ring only, for the life of the returned value.
    unsafe fn new(
        base: NonNull<u8>,
        map_len: usize,
        off: &XdpRingOffset,
        size: u32,
    ) -> Option<Self> {
        if !size.is_power_of_two() {
            return None;
        }
        let idx = |o: u64| -> Option<usize> {
            let o = usize::try_from(o).ok()?;
            (o.checked_add(4)? <= map_len && o % 4 == 0).then_some(o)
        };
        let (p, c, f) = (idx(off.producer)?, idx(off.consumer)?, idx(off.flags)?);
        let d = usize::try_from(off.desc).ok()?;
        let d_end = d.checked_add(
            usize::try_from(size)
                .ok()?
                .checked_mul(std::mem::size_of::<T>())?,
        )?;
        if d_end > map_len || d % std::mem::align_of::<T>() != 0 {
            return None;
        }
        let at = |o: usize| base.as_ptr().wrapping_add(o);
        Some(Raw {
            producer: NonNull::new(at(p).cast())?,
            consumer: NonNull::new(at(c).cast())?,
            flags: NonNull::new(at(f).cast())?,
            desc: NonNull::new(at(d).cast())?,
            mask: size - 1,
            _t: PhantomData,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: `new` checked the offset (in bounds, 4-byte aligned) and
        // the mapping lives as long as `self`; the kernel updates the word
        // only atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> u32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed)
    }

    fn slot(&self, index: u32) -> *mut T {
        // The mask keeps the index below the ring size checked in `new`.
        self.desc
            .as_ptr()
            .wrapping_add((index & self.mask) as usize)
    }
}

/// A ring we produce into: fill (`u64` frame addresses) or TX (descriptors).
#[derive(Debug)]
pub(crate) struct ProdRing<T> {
    raw: Raw<T>,
    size: u32,
    cached_prod: u32,
    cached_cons: u32,
}

// SAFETY: the ring is a view of memory owned by the same port; the port
// moves between threads whole, never shared.
unsafe impl<T: Send> Send for ProdRing<T> {}

impl<T: Copy> ProdRing<T> {
    /// # Safety
    /// As [`Raw::new`]: `base`/`map_len` describe this ring's mapping,
    /// which outlives the ring and backs no other ring.
    pub(crate) unsafe fn new(
        base: NonNull<u8>,
        map_len: usize,
        off: &XdpRingOffset,
        size: u32,
    ) -> Option<Self> {
        // SAFETY: forwarded from the caller.
        let raw = unsafe { Raw::new(base, map_len, off, size)? };
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        let cached_cons = raw.consumer().load(Ordering::Acquire);
        Some(ProdRing {
            raw,
            size,
            cached_prod,
            cached_cons,
        })
    }

    /// Free slots, at least `want` if possible: re-reads the consumer index
    /// only when the cached one shows fewer.
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        self.cached_cons = self.raw.consumer().load(Ordering::Acquire);
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Writes the `i`th entry after the producer index. The caller stays
    /// below what `free` returned; it is not yet visible to the kernel.
    pub(crate) fn write(&mut self, i: u32, value: T) {
        let slot = self.raw.slot(self.cached_prod.wrapping_add(i));
        // SAFETY: the slot is inside the ring (masked index); the caller
        // only writes slots `free` reported, which the kernel has consumed
        // and does not read until the producer index moves past them.
        unsafe { slot.write_volatile(value) };
    }

    /// Publishes `n` written entries to the kernel.
    pub(crate) fn submit(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.raw
            .producer()
            .store(self.cached_prod, Ordering::Release);
    }

    /// True when the kernel asks for a system call to look at this ring.
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.raw.flags() & XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries submitted that the kernel has not consumed yet.
    pub(crate) fn outstanding(&mut self) -> u32 {
        self.cached_cons = self.raw.consumer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }
}

/// A ring we consume from: RX (descriptors) or completion (`u64`).
#[derive(Debug)]
pub(crate) struct ConsRing<T> {
    raw: Raw<T>,
    cached_prod: u32,
    cached_cons: u32,
}

// SAFETY: as for ProdRing.
unsafe impl<T: Send> Send for ConsRing<T> {}

impl<T: Copy> ConsRing<T> {
    /// # Safety
    /// As [`ProdRing::new`].
    pub(crate) unsafe fn new(
        base: NonNull<u8>,
        map_len: usize,
        off: &XdpRingOffset,
        size: u32,
    ) -> Option<Self> {
        // SAFETY: forwarded from the caller.
        let raw = unsafe { Raw::new(base, map_len, off, size)? };
        let cached_cons = raw.consumer().load(Ordering::Relaxed);
        let cached_prod = raw.producer().load(Ordering::Acquire);
        Some(ConsRing {
            raw,
            cached_prod,
            cached_cons,
        })
    }

    /// Entries ready to read, at most `max`: re-reads the producer index
    /// only when the cache is exhausted.
    pub(crate) fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            self.cached_prod = self.raw.producer().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(max)
    }

    /// Reads the `i`th entry after the consumer index; the caller stays
    /// below what `available` returned.
    pub(crate) fn read(&self, i: u32) -> T {
        let slot = self.raw.slot(self.cached_cons.wrapping_add(i));
        // SAFETY: the slot is inside the ring (masked index) and was
        // published by the kernel before the producer index we loaded with
        // Acquire; it is not rewritten until we release it.
        unsafe { slot.read_volatile() }
    }

    /// Gives `n` read entries back to the kernel.
    pub(crate) fn release(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.raw
            .consumer()
            .store(self.cached_cons, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring mapping on the heap: producer at 0, consumer at 64, flags at
    /// 128, entries from 192.
    struct Heap(Vec<u64>);

    const OFF: XdpRingOffset = XdpRingOffset {
        producer: 0,
        consumer: 64,
        desc: 192,
        flags: 128,
    };

    impl Heap {
        fn new(size: usize) -> Heap {
            Heap(vec![0; 24 + size * 2])
        }
        fn base(&mut self) -> NonNull<u8> {
            NonNull::new(self.0.as_mut_ptr().cast()).unwrap()
        }
        fn len(&self) -> usize {
            self.0.len() * 8
        }
        fn word(&mut self, off: usize) -> &AtomicU32 {
            // SAFETY: test memory, in bounds and aligned.
            unsafe { &*self.base().as_ptr().add(off).cast::<AtomicU32>() }
        }
    }

    #[test]
    fn producer_fills_wraps_and_waits_for_the_consumer() {
        let mut h = Heap::new(4);
        let (base, len) = (h.base(), h.len());
        // SAFETY: `h` outlives the ring and backs nothing else.
        let mut r = unsafe { ProdRing::<u64>::new(base, len, &OFF, 4) }.unwrap();
        assert_eq!(r.free(4), 4);
        for i in 0..3 {
            r.write(i, u64::from(i) + 100);
        }
        r.submit(3);
        assert_eq!(h.word(0).load(Ordering::Relaxed), 3);
        assert_eq!(r.free(4), 1);
        // The "kernel" consumes two.
        h.word(64).store(2, Ordering::Relaxed);
        assert_eq!(r.free(4), 3);
        assert_eq!(r.outstanding(), 1);
        r.write(0, 7);
        r.write(1, 8);
        r.submit(2);
        // Entries 3 and 4 landed in slots 3 and 0 (wrapped).
        assert_eq!(h.0[24 + 3], 7);
        assert_eq!(h.0[24], 8);
        h.word(128).store(XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(r.needs_wakeup());
    }

    #[test]
    fn consumer_reads_what_the_producer_published() {
        let mut h = Heap::new(4);
        let (base, len) = (h.base(), h.len());
        // SAFETY: `h` outlives the ring and backs nothing else.
        let mut r = unsafe { ConsRing::<u64>::new(base, len, &OFF, 4) }.unwrap();
        assert_eq!(r.available(32), 0);
        h.0[24] = 11;
        h.0[25] = 12;
        h.word(0).store(2, Ordering::Release);
        assert_eq!(r.available(1), 1);
        assert_eq!(r.available(32), 2);
        assert_eq!((r.read(0), r.read(1)), (11, 12));
        r.release(2);
        assert_eq!(h.word(64).load(Ordering::Relaxed), 2);
        assert_eq!(r.available(32), 0);
    }

    #[test]
    fn layouts_that_do_not_fit_are_refused() {
        let mut h = Heap::new(4);
        let (base, len) = (h.base(), h.len());
        // SAFETY: `h` outlives the rings (none is built).
        unsafe {
            assert!(ProdRing::<u64>::new(base, len, &OFF, 3).is_none());
            assert!(ProdRing::<u64>::new(base, len, &OFF, 8).is_some());
            assert!(ProdRing::<u64>::new(base, len, &OFF, 16).is_none());
            let bad = XdpRingOffset { flags: 2, ..OFF };
            assert!(ConsRing::<u64>::new(base, len, &bad, 4).is_none());
        }
    }
}
