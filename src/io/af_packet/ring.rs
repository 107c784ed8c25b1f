//! Walking the TPACKET_V3 rings shared with the kernel.
//!
//! The RX ring is a sequence of blocks. The kernel fills a block with
//! variable-sized frames, then hands it over by setting `TP_STATUS_USER`
//! in the block header; user space reads every frame and gives the block
//! back by writing `TP_STATUS_KERNEL`. The TX ring is a sequence of fixed
//! frames: user space fills an available frame and marks it
//! `TP_STATUS_SEND_REQUEST`; the kernel marks it available again once sent.
//!
//! The status word is the only synchronisation (see the kernel's
//! Documentation/networking/packet_mmap.rst): it is read and written with
//! volatile accesses, an acquire fence follows a read that hands us the
//! memory, and a release fence precedes a write that hands it back.
//!
//! Both rings work over a raw region so that the unit tests can run them
//! over heap memory; nothing in them makes a system call.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use crate::dataplane::frame::{FrameBuf, PacketBuf, MAX_FRAME};

/// Offsets in the kernel's ring headers (`linux/if_packet.h`), checked
/// against the `libc` definitions in the tests.
pub(crate) mod field {
    /// `tpacket_block_desc.hdr.bh1.block_status`.
    pub(crate) const BLOCK_STATUS: usize = 8;
    /// `tpacket_block_desc.hdr.bh1.num_pkts`.
    pub(crate) const BLOCK_NUM_PKTS: usize = 12;
    /// `tpacket_block_desc.hdr.bh1.offset_to_first_pkt`.
    pub(crate) const BLOCK_FIRST_PKT: usize = 16;
    /// Size of `tpacket_block_desc`.
    pub(crate) const BLOCK_DESC_LEN: usize = 48;

    /// `tpacket3_hdr.tp_next_offset`.
    pub(crate) const NEXT_OFFSET: usize = 0;
    /// `tpacket3_hdr.tp_snaplen`.
    pub(crate) const SNAPLEN: usize = 12;
    /// `tpacket3_hdr.tp_len`.
    pub(crate) const LEN: usize = 16;
    /// `tpacket3_hdr.tp_status`.
    pub(crate) const STATUS: usize = 20;
    /// `tpacket3_hdr.tp_mac`.
    pub(crate) const MAC: usize = 24;
    /// `tpacket3_hdr.hv1.tp_vlan_tci`.
    pub(crate) const VLAN_TCI: usize = 32;
    /// `tpacket3_hdr.hv1.tp_vlan_tpid`.
    pub(crate) const VLAN_TPID: usize = 36;
    /// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where the
    /// `sockaddr_ll` of an RX frame sits, and where the kernel takes the
    /// data of a TX frame from (no `PACKET_TX_HAS_OFF`).
    pub(crate) const HDR_LEN: usize = 48;
    /// `sockaddr_ll.sll_pkttype` of an RX frame.
    pub(crate) const PKTTYPE: usize = HDR_LEN + 10;
}

/// `PACKET_OUTGOING` in `sockaddr_ll.sll_pkttype`.
const PACKET_OUTGOING: u8 = 4;

/// Reads a `u32` of a ring header.
///
/// # Safety
/// `base + off` must be valid for a 4-byte read and 4-byte aligned.
unsafe fn rd32(base: *const u8, off: usize) -> u32 {
    // SAFETY: guaranteed by the caller.
    unsafe { base.add(off).cast::<u32>().read_volatile() }
}

/// Reads a `u16` of a ring header.
///
/// # Safety
/// `base + off` must be valid for a 2-byte read and 2-byte aligned.
unsafe fn rd16(base: *const u8, off: usize) -> u16 {
    // SAFETY: guaranteed by the caller.
    unsafe { base.add(off).cast::<u16>().read_volatile() }
}

/// Writes a `u32` of a ring header.
///
/// # Safety
/// `base + off` must be valid for a 4-byte write and 4-byte aligned.
unsafe fn wr32(base: *mut u8, off: usize, v: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { base.add(off).cast::<u32>().write_volatile(v) }
}

/// What the RX walk saw besides good frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RxCounts {
    /// Frames handed to the caller.
    pub(crate) packets: u64,
    /// Frames dropped: shorter than an Ethernet header, longer than
    /// [`MAX_FRAME`], or cut short by the kernel (snaplen < len).
    pub(crate) bad_len: u64,
    /// Frames whose L4 checksum was left to offload (`TP_STATUS_CSUMNOTREADY`):
    /// locally generated traffic on a veth with TX checksum offload on.
    pub(crate) csum_not_ready: u64,
    /// Blocks given back early because a header pointed outside the block.
    pub(crate) corrupt_blocks: u64,
}

/// Position inside the block user space currently owns.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Frames not yet read.
    left: u32,
    /// Offset of the next frame's header from the block start.
    off: usize,
}

/// The receive ring: `block_count` blocks of `block_size` bytes.
#[derive(Debug)]
pub(crate) struct RxRing {
    base: NonNull<u8>,
    block_size: usize,
    block_count: usize,
    current: usize,
    cursor: Option<Cursor>,
}

// SAFETY: the ring is a view of memory owned by the port that owns the
// ring; it is used by one thread at a time, whichever holds the port.
unsafe impl Send for RxRing {}

impl RxRing {
    /// A ring over `block_count` blocks of `block_size` bytes at `base`.
    ///
    /// # Safety
    /// `base` must be 8-byte aligned and valid for reads and writes of
    /// `block_size * block_count` bytes for the life of the ring, and be
    /// shared with nobody but a kernel following the TPACKET_V3 protocol.
    /// `block_size` must be a multiple of 8.
    pub(crate) unsafe fn new(base: NonNull<u8>, block_size: usize, block_count: usize) -> Self {
        RxRing {
            base,
            block_size,
            block_count,
            current: 0,
            cursor: None,
        }
    }

    fn block(&self, i: usize) -> *mut u8 {
        // i < block_count: the block lies in the region promised to `new`.
        self.base.as_ptr().wrapping_add(i * self.block_size)
    }

    /// Moves up to `max` received frames into `out`, each copied into a
    /// buffer taken from `pool`. Stops early when the pool is empty (the
    /// frames stay in the ring) or the kernel has nothing more for us.
    /// Never blocks and never makes a system call.
    pub(crate) fn poll(
        &mut self,
        pool: &mut Vec<PacketBuf>,
        out: &mut Vec<PacketBuf>,
        max: usize,
        counts: &mut RxCounts,
    ) -> usize {
        let mut n = 0;
        // Each turn consumes a frame, takes a block, or returns a block, and
        // a returned block is not taken again before the kernel refills it:
        // the loop is bounded by `max` plus twice the block count.
        let mut budget = max.saturating_add(2 * self.block_count + 1);
        while n < max && budget > 0 {
            budget -= 1;
            let block = self.block(self.current);
            let Some(mut cur) = self.cursor else {
                // SAFETY: the block header is in the region and aligned.
                let status = unsafe { rd32(block, field::BLOCK_STATUS) };
                if status & libc::TP_STATUS_USER == 0 {
                    break;
                }
                // The kernel wrote the block before its status: see it all.
                fence(Ordering::Acquire);
                // SAFETY: as above; the block is ours now.
                let (num, first) = unsafe {
                    (
                        rd32(block, field::BLOCK_NUM_PKTS),
                        rd32(block, field::BLOCK_FIRST_PKT) as usize,
                    )
                };
                if num == 0 {
                    self.release();
                } else {
                    self.cursor = Some(Cursor {
                        left: num,
                        off: first,
                    });
                }
                continue;
            };

            let Some(frame) = self.frame_at(block, cur.off) else {
                counts.corrupt_blocks += 1;
                self.release();
                continue;
            };
            if frame.keep {
                let Some(mut buf) = pool.pop() else { break };
                // SAFETY: `frame_at` checked that the data lies in this
                // block, which the kernel will not touch until released.
                let data = unsafe {
                    std::slice::from_raw_parts(
                        block.add(frame.data_off).cast_const(),
                        frame.snaplen,
                    )
                };
                fill(&mut buf, data, frame.vlan);
                out.push(buf);
                counts.packets += 1;
                n += 1;
                if frame.csum_not_ready {
                    counts.csum_not_ready += 1;
                }
            } else if !frame.outgoing {
                counts.bad_len += 1;
            }

            cur.left -= 1;
            if cur.left == 0 {
                self.release();
            } else if frame.next == 0 {
                counts.corrupt_blocks += 1;
                self.release();
            } else {
                cur.off = cur.off.saturating_add(frame.next);
                self.cursor = Some(cur);
            }
        }
        n
    }

    /// Reads and checks the frame header at `off` in `block`; `None` when
    /// it does not lie inside the block.
    fn frame_at(&self, block: *const u8, off: usize) -> Option<Frame> {
        if off < field::BLOCK_DESC_LEN
            || !off.is_multiple_of(8)
            || off.checked_add(field::PKTTYPE + 1)? > self.block_size
        {
            return None;
        }
        // SAFETY: the whole header, and the sockaddr_ll after it, lie in
        // the block (checked above) and `off` is 8-byte aligned.
        let (next, snaplen, len, status, mac, tci, tpid, pkttype) = unsafe {
            let h = block.add(off);
            (
                rd32(h, field::NEXT_OFFSET) as usize,
                rd32(h, field::SNAPLEN) as usize,
                rd32(h, field::LEN) as usize,
                rd32(h, field::STATUS),
                rd16(h, field::MAC) as usize,
                rd32(h, field::VLAN_TCI),
                rd16(h, field::VLAN_TPID),
                h.add(field::PKTTYPE).read_volatile(),
            )
        };
        if next % 8 != 0 {
            return None;
        }
        let data_off = off.checked_add(mac)?;
        if mac < field::HDR_LEN || data_off.checked_add(snaplen)? > self.block_size {
            return None;
        }
        let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
            let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 {
                tpid
            } else {
                0x8100
            };
            // The TCI is 16 bits carried in a u32 field.
            (tpid, (tci & 0xffff) as u16)
        });
        let out_len = snaplen + if vlan.is_some() { 4 } else { 0 };
        let outgoing = pkttype == PACKET_OUTGOING;
        let keep = !outgoing && snaplen == len && snaplen >= 14 && out_len <= MAX_FRAME;
        Some(Frame {
            next,
            data_off,
            snaplen,
            vlan,
            keep,
            outgoing,
            csum_not_ready: status & libc::TP_STATUS_CSUMNOTREADY != 0,
        })
    }

    /// Gives the current block back to the kernel and moves to the next.
    fn release(&mut self) {
        let block = self.block(self.current);
        // Our reads of the block happen before the kernel may reuse it.
        fence(Ordering::Release);
        // SAFETY: the block header is in the region and aligned.
        unsafe { wr32(block, field::BLOCK_STATUS, libc::TP_STATUS_KERNEL) };
        self.cursor = None;
        self.current = (self.current + 1) % self.block_count;
    }
}

/// A checked RX frame header.
#[derive(Debug, Clone, Copy)]
struct Frame {
    next: usize,
    data_off: usize,
    snaplen: usize,
    /// (TPID, TCI) of a tag the kernel took out of the frame.
    vlan: Option<(u16, u16)>,
    keep: bool,
    outgoing: bool,
    csum_not_ready: bool,
}

/// Copies `data` into `buf`, putting back the VLAN tag that the kernel
/// moved into the frame header, so the pipeline sees the frame as it was
/// on the wire. `data` is at least 14 bytes and fits with the tag.
fn fill(buf: &mut PacketBuf, data: &[u8], vlan: Option<(u16, u16)>) {
    buf.load(data);
    if let Some((tpid, tci)) = vlan {
        let len = data.len();
        if buf.set_len(len + 4) {
            let b = buf.bytes_mut();
            b.copy_within(12..len, 16);
            b[12..14].copy_from_slice(&tpid.to_be_bytes());
            b[14..16].copy_from_slice(&tci.to_be_bytes());
        }
    }
}

/// The transmit ring: `frame_count` frames of `frame_size` bytes, packed
/// into blocks of `block_size` bytes (a frame never spans two blocks).
#[derive(Debug)]
pub(crate) struct TxRing {
    base: NonNull<u8>,
    block_size: usize,
    frame_size: usize,
    frames_per_block: usize,
    frame_count: usize,
    head: usize,
}

// SAFETY: as for `RxRing`.
unsafe impl Send for TxRing {}

/// Why a frame did not go into the TX ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxReject {
    /// The next frame is still owned by the kernel.
    Full,
    /// The frame does not fit a ring frame (or is empty).
    BadLen,
}

impl TxRing {
    /// A ring of `block_count` blocks of `block_size` bytes at `base`.
    ///
    /// # Safety
    /// As [`RxRing::new`], for `block_size * block_count` bytes;
    /// `frame_size` must be a multiple of 16, at least [`field::HDR_LEN`]
    /// and at most `block_size`.
    pub(crate) unsafe fn new(
        base: NonNull<u8>,
        block_size: usize,
        block_count: usize,
        frame_size: usize,
    ) -> Self {
        let frames_per_block = block_size / frame_size;
        TxRing {
            base,
            block_size,
            frame_size,
            frames_per_block,
            frame_count: frames_per_block * block_count,
            head: 0,
        }
    }

    /// Largest frame the ring carries.
    pub(crate) fn max_frame(&self) -> usize {
        self.frame_size - field::HDR_LEN
    }

    fn frame(&self, i: usize) -> *mut u8 {
        // i < frame_count: the frame lies in the region promised to `new`.
        self.base.as_ptr().wrapping_add(
            (i / self.frames_per_block) * self.block_size
                + (i % self.frames_per_block) * self.frame_size,
        )
    }

    /// Copies `data` into the next ring frame and marks it for sending.
    /// The kernel sends it at the next kick.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), TxReject> {
        if data.is_empty() || data.len() > self.max_frame() {
            return Err(TxReject::BadLen);
        }
        let len = u32::try_from(data.len()).map_err(|_| TxReject::BadLen)?;
        let f = self.frame(self.head);
        // SAFETY: the frame header is in the region and 16-byte aligned.
        let status = unsafe { rd32(f, field::STATUS) };
        // AVAILABLE, or WRONG_FORMAT (the kernel refused the frame; with
        // PACKET_LOSS it never stays so, but reuse it rather than stall).
        if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
            return Err(TxReject::Full);
        }
        // The kernel is done reading the frame before we overwrite it.
        fence(Ordering::Acquire);
        // SAFETY: the frame is ours (status checked); header and data lie in
        // the frame: HDR_LEN + len <= frame_size.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), f.add(field::HDR_LEN), data.len());
            wr32(f, field::NEXT_OFFSET, 0);
            wr32(f, field::SNAPLEN, len);
            wr32(f, field::LEN, len);
        }
        // The frame's bytes are visible before the kernel sees the request.
        fence(Ordering::Release);
        // SAFETY: as above.
        unsafe { wr32(f, field::STATUS, libc::TP_STATUS_SEND_REQUEST) };
        self.head = (self.head + 1) % self.frame_count;
        Ok(())
    }
}
