//! Memory for the per-worker tables that packets look up at random.
//!
//! A worker's flow table is sized for the configured maximum
//! (`flow_table_size`, a million flows by default), so even a few thousand
//! live flows sit scattered over tens of MiB: the index and the nodes of
//! 1 000 flows touch about 2 000 distinct 4 KiB pages, far more than the
//! TLB holds, and every lookup paid a page walk (in a VM, a nested one).
//! DPDK avoids this by putting everything in huge pages; cutover asks the
//! kernel for transparent huge pages instead, so that no hugetlbfs setup is
//! needed: allocations of 2 MiB and more are mapped on their own,
//! 2 MiB-aligned, advised with `MADV_HUGEPAGE` (which takes effect when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` or
//! `always`), and touched at once, so that the fast path never takes a
//! page fault later. Where the kernel has no huge page to give, the memory
//! is still there, in small pages, and only slower.
//!
//! `cargo bench --bench pipeline -- ipip_10svc/1000flows` measured the
//! difference (docs/performance.md).

#![allow(unsafe_code)] // mmap(2), madvise(2) and the allocator contract

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// The size of a transparent huge page on x86-64 and arm64 (4 KiB base
/// pages): blocks are aligned to it so that the kernel can back all of
/// them with huge pages.
pub const HUGE_PAGE: usize = 2 << 20;

/// The base page size, for touching every page of a fresh block.
const PAGE: usize = 4096;

/// An allocator that maps blocks of `HUGE_PAGE` bytes and more as
/// transparent huge pages (see the module comment) and leaves smaller ones
/// to the global allocator. Only for memory allocated once at start: each
/// large block is a system call.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePages;

impl HugePages {
    /// Whether a block of `layout` is mapped by this allocator rather than
    /// taken from the global one. The same answer for `allocate` and
    /// `deallocate`, which see the same layout.
    fn maps(layout: Layout) -> bool {
        layout.size() >= HUGE_PAGE && layout.align() <= HUGE_PAGE
    }
}

/// `size` rounded up to whole huge pages.
fn mapped_len(size: usize) -> Option<usize> {
    size.checked_add(HUGE_PAGE - 1)
        .map(|s| s & !(HUGE_PAGE - 1))
}

// SAFETY: blocks are valid for their layout until `deallocate`: large ones
// are private anonymous mappings of at least `layout.size()` bytes,
// aligned to `HUGE_PAGE` (at least `layout.align()`), unmapped only by
// `deallocate`; small ones are the global allocator's. A copy of the
// allocator may free any block, as nothing is kept per instance.
unsafe impl Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !HugePages::maps(layout) {
            return Global.allocate(layout);
        }
        let len = mapped_len(layout.size()).ok_or(AllocError)?;
        // One extra huge page of room so that an aligned start exists.
        let room = len.checked_add(HUGE_PAGE).ok_or(AllocError)?;
        // SAFETY: a new private anonymous mapping; no memory of ours is
        // touched.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                room,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(AllocError);
        }
        let base = base as usize;
        let start = (base + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        let head = start - base;
        let tail = room - head - len;
        // SAFETY: both ranges lie inside the mapping just made and outside
        // the block handed out; unmapping them cannot fail for a valid
        // range, and if it did the pages would only stay mapped.
        unsafe {
            if head > 0 {
                libc::munmap(base as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
            // Advice only: an error (no THP in this kernel) leaves small
            // pages, which work.
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        let ptr = start as *mut u8;
        // Touch every page now so that neither the fast path nor the first
        // packets take the faults.
        for offset in (0..len).step_by(PAGE) {
            // SAFETY: `offset < len`, inside the block; volatile so that the
            // write is not dropped as a store of the zero already there.
            unsafe { ptr.add(offset).write_volatile(0) };
        }
        let block = core::ptr::slice_from_raw_parts_mut(ptr, len);
        NonNull::new(block).ok_or(AllocError)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if !HugePages::maps(layout) {
            // SAFETY: the caller's contract: `ptr` came from `allocate`
            // with this layout, which sent it to the global allocator.
            unsafe { Global.deallocate(ptr, layout) };
            return;
        }
        if let Some(len) = mapped_len(layout.size()) {
            // SAFETY: `ptr` is the start of a block of `len` bytes mapped by
            // `allocate` for this layout, and the caller no longer uses it.
            unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many bytes of the mapping that holds `addr` are backed by huge
    /// pages, read from `/proc/self/smaps` (`AnonHugePages`); `None` when the
    /// file or the mapping is not found.
    fn huge_bytes_at(addr: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let mut fields = line.split_whitespace();
            let Some(first) = fields.next() else {
                continue;
            };
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if inside && first == "AnonHugePages:" {
                let kib: u64 = fields.next()?.parse().ok()?;
                return Some(kib * 1024);
            }
        }
        None
    }

    /// Whether the kernel hands out transparent huge pages to memory advised
    /// with `MADV_HUGEPAGE`: `enabled` names `[always]` or `[madvise]`.
    fn transparent_huge_pages() -> bool {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"))
    }

    #[test]
    fn small_blocks_come_from_the_global_allocator() {
        let layout = Layout::from_size_align(4096, 64).unwrap();
        let block = HugePages.allocate(layout).unwrap();
        assert!(block.len() >= 4096);
        // SAFETY: allocated just above with this layout.
        unsafe { HugePages.deallocate(block.cast(), layout) };
    }

    #[test]
    fn large_blocks_are_aligned_writable_and_huge() {
        let layout = Layout::from_size_align(5 * HUGE_PAGE + 123, 64).unwrap();
        let block = HugePages.allocate(layout).unwrap();
        let ptr: *mut u8 = block.as_ptr().cast();
        assert_eq!(ptr as usize % HUGE_PAGE, 0);
        assert_eq!(block.len(), 6 * HUGE_PAGE);
        // SAFETY: inside the block.
        unsafe {
            ptr.write(7);
            ptr.add(layout.size() - 1).write(9);
            assert_eq!(ptr.read(), 7);
        }
        if transparent_huge_pages() {
            let huge = huge_bytes_at(ptr as usize).expect("mapping in smaps");
            assert!(
                huge >= HUGE_PAGE as u64,
                "block of {} bytes has {huge} bytes of huge pages",
                block.len()
            );
        } else {
            eprintln!("skipping the huge page check: transparent huge pages are off here");
        }
        // SAFETY: allocated just above with this layout.
        unsafe { HugePages.deallocate(block.cast(), layout) };
    }
}
