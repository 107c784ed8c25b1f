//! [`Mbuf`]: a DPDK `rte_mbuf` as the pipeline's [`FrameBuf`].

use std::ptr::NonNull;

use super::sys;
use crate::dataplane::frame::FrameBuf;

/// One received or allocated packet buffer, owned: the pipeline reads and
/// rewrites the mbuf's data room in place (nothing is copied between the
/// NIC and the pipeline). Dropping it frees the mbuf to its pool.
///
/// Invariants, kept by the port that hands it out: the mbuf is a single
/// segment (`nb_segs == 1`, so `pkt_len == data_len`), its reference count
/// is one, and nothing else points to it.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an `Mbuf` is the only reference to its mbuf (see the type's
// invariants); freeing it from another thread is allowed by DPDK's
// multi-producer mempool rings, which the driver's pools use.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of `m`.
    ///
    /// # Safety
    /// `m` is a valid single-segment mbuf with reference count one, owned
    /// by the caller and referenced nowhere else.
    pub(super) unsafe fn from_raw(m: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf(m)
    }

    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: the mbuf is valid and owned by `self` (type invariant).
        unsafe { self.0.as_ref() }
    }

    fn raw_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as in `raw`, and `&mut self` makes the access unique.
        unsafe { self.0.as_mut() }
    }

    /// Bytes free in front of the frame.
    pub fn headroom(&self) -> usize {
        usize::from(self.raw().data_off)
    }

    /// Bytes free after the frame.
    pub fn tailroom(&self) -> usize {
        let m = self.raw();
        usize::from(m.buf_len)
            .saturating_sub(usize::from(m.data_off))
            .saturating_sub(usize::from(m.data_len))
    }

    /// Length of the frame.
    pub fn len(&self) -> usize {
        usize::from(self.raw().data_len)
    }

    /// True when the frame holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Segments of the frame (the driver keeps only frames of one).
    pub(super) fn segments(&self) -> u16 {
        self.raw().nb_segs
    }

    /// The DPDK port the frame was received on.
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Sets the frame to start `off` bytes into the data room with `len`
    /// bytes; false, changing nothing, if that leaves the data room.
    fn set_window(&mut self, off: usize, len: usize) -> bool {
        let m = self.raw_mut();
        if off + len > usize::from(m.buf_len) {
            return false;
        }
        // Both fit in u16: they are below buf_len, a u16.
        let (Ok(off), Ok(len16)) = (u16::try_from(off), u16::try_from(len)) else {
            return false;
        };
        m.data_off = off;
        m.data_len = len16;
        m.pkt_len = u32::from(len16);
        true
    }
}

impl FrameBuf for Mbuf {
    fn bytes(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: a single-segment mbuf's frame is `data_len` bytes at
        // `buf_addr + data_off`, inside its `buf_len`-byte data room (DPDK's
        // rte_pktmbuf_mtod); `&self` borrows the only owner.
        unsafe {
            let start = m.buf_addr.cast::<u8>().add(usize::from(m.data_off));
            std::slice::from_raw_parts(start, usize::from(m.data_len))
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let m = self.raw();
        // SAFETY: as in `bytes`; `&mut self` makes the borrow unique and the
        // reference count of one means no other mbuf shares the data room.
        unsafe {
            let start = m.buf_addr.cast::<u8>().add(usize::from(m.data_off));
            std::slice::from_raw_parts_mut(start, usize::from(m.data_len))
        }
    }

    fn prepend(&mut self, n: usize) -> bool {
        let Ok(n) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: the mbuf is valid and owned; rte_pktmbuf_prepend returns
        // NULL, changing nothing, when the headroom is too small.
        !unsafe { sys::cutover_pktmbuf_prepend(self.0.as_ptr(), n) }.is_null()
    }

    fn trim_front(&mut self, n: usize) -> bool {
        let Ok(n) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: the mbuf is valid and owned; rte_pktmbuf_adj returns NULL,
        // changing nothing, when the segment is shorter than `n`.
        !unsafe { sys::cutover_pktmbuf_adj(self.0.as_ptr(), n) }.is_null()
    }

    fn set_len(&mut self, len: usize) -> bool {
        let off = self.headroom();
        self.set_window(off, len)
    }

    fn copy_from(&mut self, frame: &[u8]) -> bool {
        // rte_pktmbuf_reset_headroom: the pool's headroom, or less in a
        // data room smaller than it.
        let room = usize::from(self.raw().buf_len);
        let headroom = usize::from(headroom_default()).min(room);
        if !self.set_window(headroom, frame.len()) {
            return false;
        }
        self.bytes_mut().copy_from_slice(frame);
        true
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: the mbuf is valid and owned by `self`, which is going away.
        unsafe { sys::cutover_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("headroom", &self.headroom())
            .field("len", &self.len())
            .field("tailroom", &self.tailroom())
            .finish()
    }
}

/// `RTE_PKTMBUF_HEADROOM` of the DPDK build (128 on Debian).
pub(super) fn headroom_default() -> u16 {
    // SAFETY: returns a compile-time constant; no state is touched.
    unsafe { sys::cutover_pktmbuf_headroom() }
}
