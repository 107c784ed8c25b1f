//! Memory shared with the kernel: the rings of AF_PACKET and AF_XDP
//! sockets and the AF_XDP UMEM. Both drivers map it the same way and unmap
//! it on drop; the [`Mapping`] trait lets their ring logic run over a fake
//! region in unit tests.
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;

/// A memory region shared with the kernel (or faked). The region stays
/// valid, at the same address, until the value is dropped.
pub(crate) trait Mapping {
    /// First byte of the region; page aligned for real mappings, at least
    /// 8-byte aligned for fakes.
    fn as_ptr(&self) -> NonNull<u8>;
    /// Length of the region in bytes.
    fn len(&self) -> usize;
}

/// An `mmap`ed region; unmapped on drop.
#[derive(Debug)]
pub(crate) struct MmapRegion {
    ptr: NonNull<u8>,
    len: usize,
}

impl MmapRegion {
    /// Maps `len` bytes, read-write, of `fd` at `offset` with `flags`
    /// (`fd` = -1 with `MAP_ANONYMOUS`).
    pub(crate) fn map(
        fd: libc::c_int,
        len: usize,
        flags: libc::c_int,
        offset: i64,
    ) -> io::Result<MmapRegion> {
        // SAFETY: a fresh mapping chosen by the kernel (no address hint),
        // so it aliases no memory of the program; the kernel checks `len`
        // and `offset` against the object mapped. The result is checked
        // before use and unmapped by Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
        Ok(MmapRegion { ptr, len })
    }
}

impl Mapping for MmapRegion {
    fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what a successful mmap returned,
        // and the region is unmapped only here, once. The rings and frames
        // that point into it belong to the same port and die with it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// SAFETY: the region is plain shared memory; the port that owns it is its
// only user in this process, and moving it to a worker thread is fine.
unsafe impl Send for MmapRegion {}

/// A libc return value as a `Result`: negative means `errno`.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
