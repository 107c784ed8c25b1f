//! The packet buffer the pipeline rewrites in place.
//!
//! Drivers own their buffers (a TPACKET ring copy, an AF_XDP UMEM frame, a
//! DPDK mbuf); the pipeline only needs to read and write the frame's bytes
//! and to grow it at the front for IP-in-IP, so that is all [`FrameBuf`]
//! asks. [`PacketBuf`] is the plain heap implementation used by the memory
//! and pcap ports, the benchmarks and the tests.

/// Bytes reserved in front of a frame so that an outer IPv6 header (40
/// bytes) plus a VLAN-tagged Ethernet header fit without moving the packet.
pub const HEADROOM: usize = 128;

/// Largest frame a [`PacketBuf`] holds (jumbo frames are not supported).
pub const MAX_FRAME: usize = 2048;

/// A frame that the pipeline can read, rewrite and grow at the front.
pub trait FrameBuf {
    /// The frame, starting at the Ethernet header.
    fn bytes(&self) -> &[u8];
    /// The frame, mutable.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Grows the frame by `n` bytes at the front (the new bytes are
    /// unspecified). Returns false, changing nothing, when the headroom is
    /// too small.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front. Returns false, changing nothing,
    /// when the frame is shorter than `n`.
    fn trim_front(&mut self, n: usize) -> bool;
    /// Sets the length of the frame (shrinking, or growing into tailroom).
    /// Returns false, changing nothing, when `len` does not fit.
    fn set_len(&mut self, len: usize) -> bool;
    /// Replaces the frame with a copy of `frame`, headroom restored.
    /// Returns false, changing nothing, when it does not fit.
    fn copy_from(&mut self, frame: &[u8]) -> bool;

    /// Length of the frame: `bytes().len()`, which an implementation that
    /// keeps the length can give without checking its bounds.
    #[inline]
    fn frame_len(&self) -> usize {
        self.bytes().len()
    }

    /// [`set_len`](FrameBuf::set_len)`(len)`, then
    /// [`prepend`](FrameBuf::prepend)`(n)`, then the frame: what IP-in-IP
    /// does to every packet (drop the Ethernet padding, make room for the
    /// outer header). `None` when either step fails, with the effects of
    /// the steps before it kept, exactly as the three calls would.
    ///
    /// One call so that an implementation can check its bounds once
    /// rather than three times per packet.
    #[inline]
    fn set_len_prepend(&mut self, len: usize, n: usize) -> Option<&mut [u8]> {
        if !self.set_len(len) || !self.prepend(n) {
            return None;
        }
        Some(self.bytes_mut())
    }
}

/// A heap buffer with fixed headroom: the frame lives in
/// `data[start..start + len]`.
#[derive(Clone)]
pub struct PacketBuf {
    /// A fixed-size array rather than a slice: every bounds check of the
    /// fast path compares with a constant instead of a loaded length.
    data: Box<[u8; HEADROOM + MAX_FRAME]>,
    start: usize,
    len: usize,
}

impl PacketBuf {
    /// An empty buffer with [`HEADROOM`] in front and room for
    /// [`MAX_FRAME`] bytes.
    pub fn new() -> Self {
        PacketBuf {
            data: Box::new([0u8; HEADROOM + MAX_FRAME]),
            start: HEADROOM,
            len: 0,
        }
    }

    /// A buffer holding a copy of `frame`, truncated to [`MAX_FRAME`].
    pub fn from_slice(frame: &[u8]) -> Self {
        let mut buf = PacketBuf::new();
        buf.load(frame);
        buf
    }

    /// Replaces the content with a copy of `frame` (truncated to
    /// [`MAX_FRAME`]) and restores the full headroom. Reuses the allocation.
    pub fn load(&mut self, frame: &[u8]) {
        let n = frame.len().min(MAX_FRAME);
        self.start = HEADROOM;
        self.len = n;
        self.data[HEADROOM..HEADROOM + n].copy_from_slice(&frame[..n]);
    }

    /// Number of bytes in the frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the frame holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        PacketBuf::new()
    }
}

impl core::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("headroom", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl FrameBuf for PacketBuf {
    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + self.len]
    }

    #[inline]
    fn frame_len(&self) -> usize {
        self.len
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        self.len += n;
        true
    }

    #[inline]
    fn trim_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.start += n;
        self.len -= n;
        true
    }

    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        if self.start + len > self.data.len() {
            return false;
        }
        self.len = len;
        true
    }

    #[inline]
    fn copy_from(&mut self, frame: &[u8]) -> bool {
        if frame.len() > MAX_FRAME {
            return false;
        }
        self.load(frame);
        true
    }

    #[inline]
    fn set_len_prepend(&mut self, len: usize, n: usize) -> Option<&mut [u8]> {
        if !self.set_len(len) || n > self.start {
            return None;
        }
        self.start -= n;
        self.len += n;
        // Within `data`: the end did not move since `set_len` checked it.
        self.data.get_mut(self.start..self.start + self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_trim_keep_bytes() {
        let mut b = PacketBuf::from_slice(&[1, 2, 3]);
        assert!(b.prepend(2));
        b.bytes_mut()[..2].copy_from_slice(&[9, 8]);
        assert_eq!(b.bytes(), &[9, 8, 1, 2, 3]);
        assert_eq!(b.frame_len(), 5);
        assert!(b.trim_front(2));
        assert_eq!(b.bytes(), &[1, 2, 3]);
        assert!(!b.prepend(HEADROOM + 1));
        assert!(!b.trim_front(4));
        assert!(b.set_len(1));
        assert_eq!(b.bytes(), &[1]);
        assert_eq!(b.frame_len(), 1);
        assert!(!b.set_len(MAX_FRAME + 1));
    }

    /// `PacketBuf`'s one-step `set_len_prepend` does what the three calls
    /// of the trait's default do, failures included.
    #[test]
    fn set_len_prepend_matches_the_three_steps() {
        /// The trait's default, for comparison.
        struct Plain(PacketBuf);
        impl FrameBuf for Plain {
            fn bytes(&self) -> &[u8] {
                self.0.bytes()
            }
            fn bytes_mut(&mut self) -> &mut [u8] {
                self.0.bytes_mut()
            }
            fn prepend(&mut self, n: usize) -> bool {
                self.0.prepend(n)
            }
            fn trim_front(&mut self, n: usize) -> bool {
                self.0.trim_front(n)
            }
            fn set_len(&mut self, len: usize) -> bool {
                self.0.set_len(len)
            }
            fn copy_from(&mut self, frame: &[u8]) -> bool {
                self.0.copy_from(frame)
            }
        }
        let frame: Vec<u8> = (0..100u8).collect();
        for start_trim in [0, 5, HEADROOM] {
            for len in [0, 10, 100, 150, MAX_FRAME, MAX_FRAME + 200] {
                for n in [0, 20, 40, HEADROOM, HEADROOM + 1] {
                    let mut fast = PacketBuf::from_slice(&frame);
                    let mut plain = Plain(PacketBuf::from_slice(&frame));
                    assert_eq!(fast.trim_front(start_trim), plain.trim_front(start_trim));
                    let a = fast.set_len_prepend(len, n).map(|b| b.to_vec());
                    let b = plain.set_len_prepend(len, n).map(|b| b.to_vec());
                    assert_eq!(a, b, "trim {start_trim} len {len} n {n}");
                    assert_eq!(fast.bytes(), plain.bytes());
                    assert_eq!((fast.start, fast.len), (plain.0.start, plain.0.len));
                }
            }
        }
    }
}
