//! [`XdpFrame`]: a UMEM frame lent to the pipeline in place.
//!
//! A received frame is not copied: the pipeline rewrites it where the
//! kernel wrote it, and the same UMEM chunk goes to the TX ring as it is.
//! The kernel leaves [`DATA_OFFSET`] bytes free in front of every received
//! frame (XDP headroom), so an IP-in-IP outer header is prepended inside
//! the chunk without moving the packet.

use std::ptr::NonNull;

use crate::dataplane::frame::FrameBuf;

/// Where the kernel puts a received frame in its chunk (copy and
/// zero-copy mode alike: `XDP_PACKET_HEADROOM`, no UMEM headroom), and so
/// where frames we build ourselves start: the same room to grow in front.
pub const DATA_OFFSET: u32 = 256;

/// One UMEM chunk, owned: while an `XdpFrame` exists its chunk is in no
/// ring and not in the port's free list, so only this value touches it.
///
/// Not `Clone`: one chunk, one owner. Not `Send`: it stays with the worker
/// of its port. Give it back through the port (`tx_burst` or `free`); a
/// frame merely dropped is lost to its port until the port closes, and the
/// port then keeps its UMEM mapped (see `Engine`'s drop) so the frame
/// never points at unmapped memory.
pub struct XdpFrame {
    /// Start of the UMEM the chunk belongs to (identifies the port).
    umem: NonNull<u8>,
    /// Offset of the chunk in the UMEM.
    chunk: u64,
    /// Offset of the frame's first byte in the chunk.
    start: u32,
    /// Bytes in the frame.
    len: u32,
    /// Chunk size: the frame never leaves `[0, size)` of its chunk.
    size: u32,
}

impl XdpFrame {
    /// Lends the chunk at `chunk` holding a frame of `len` bytes at `start`.
    ///
    /// # Safety
    /// `umem + chunk .. umem + chunk + size` is mapped for as long as the
    /// frame lives and is owned by the caller (in no ring, not lent out),
    /// and `start + len <= size`.
    pub(super) unsafe fn new(
        umem: NonNull<u8>,
        chunk: u64,
        start: u32,
        len: u32,
        size: u32,
    ) -> Self {
        debug_assert!(u64::from(start) + u64::from(len) <= u64::from(size));
        XdpFrame {
            umem,
            chunk,
            start,
            len,
            size,
        }
    }

    /// The UMEM the frame belongs to.
    pub(super) fn umem(&self) -> NonNull<u8> {
        self.umem
    }

    /// Offset of the chunk in the UMEM (what goes back to the fill ring).
    pub(super) fn chunk(&self) -> u64 {
        self.chunk
    }

    /// The TX descriptor's address: where the frame starts in the UMEM.
    pub(super) fn addr(&self) -> u64 {
        self.chunk + u64::from(self.start)
    }

    /// Bytes in the frame.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the frame holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the frame.
    pub fn headroom(&self) -> usize {
        self.start as usize
    }

    fn base(&self) -> *mut u8 {
        // The chunk offset is below the UMEM length (type invariant), so
        // it fits a usize and the pointer stays inside the mapping.
        #[allow(clippy::cast_possible_truncation)]
        let chunk = self.chunk as usize;
        // SAFETY: `umem + chunk` is inside the UMEM mapping (see `new`).
        unsafe { self.umem.as_ptr().add(chunk) }
    }
}

impl std::fmt::Debug for XdpFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpFrame")
            .field("chunk", &self.chunk)
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl FrameBuf for XdpFrame {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `[start, start + len)` is inside the chunk, which is
        // mapped and ours alone while `self` lives (see `new`).
        unsafe { std::slice::from_raw_parts(self.base().add(self.start as usize), self.len()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.base().add(self.start as usize), self.len()) }
    }

    fn prepend(&mut self, n: usize) -> bool {
        match u32::try_from(n) {
            Ok(n) if n <= self.start => {
                self.start -= n;
                self.len += n;
                true
            }
            _ => false,
        }
    }

    fn trim_front(&mut self, n: usize) -> bool {
        match u32::try_from(n) {
            Ok(n) if n <= self.len => {
                self.start += n;
                self.len -= n;
                true
            }
            _ => false,
        }
    }

    fn set_len(&mut self, len: usize) -> bool {
        match u32::try_from(len) {
            Ok(len) if u64::from(self.start) + u64::from(len) <= u64::from(self.size) => {
                self.len = len;
                true
            }
            _ => false,
        }
    }

    fn copy_from(&mut self, frame: &[u8]) -> bool {
        let Ok(len) = u32::try_from(frame.len()) else {
            return false;
        };
        let start = DATA_OFFSET.min(self.size);
        if u64::from(start) + u64::from(len) > u64::from(self.size) {
            return false;
        }
        self.start = start;
        self.len = len;
        self.bytes_mut().copy_from_slice(frame);
        true
    }
}
