//! The port's logic: the UMEM, the four rings and the free list of
//! chunks, over any [`Sys`] (the real system calls, or the tests' fake).

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use super::frame::{XdpFrame, DATA_OFFSET};
use super::ring::{ConsRing, ProdRing};
use super::sys::{self, Mapping, SockaddrXdp, Sys, XdpDesc, XdpUmemReg};
use super::{check, invalid, AfXdpError, AfXdpOptions, AfXdpStats, BindMode};
use crate::dataplane::frame::FrameBuf;

/// The port's logic over any [`Sys`]: the real one, or the tests' fake.
pub(super) struct Engine<S: Sys> {
    pub(super) fill: ProdRing<u64>,
    pub(super) comp: ConsRing<u64>,
    pub(super) rx: ConsRing<XdpDesc>,
    pub(super) tx: ProdRing<XdpDesc>,
    /// Addresses of the UMEM frames that are ours and idle.
    pub(super) frames: Vec<u64>,
    /// Frames lent out as `XdpFrame`s and not given back yet.
    pub(super) lent: usize,
    pub(super) frame_size: u32,
    /// Idle frames never given to the fill ring, kept for frames the
    /// pipeline creates (`alloc`) and copies from other ports.
    pub(super) tx_reserve: usize,
    pub(super) umem_base: NonNull<u8>,
    pub(super) umem_len: usize,
    pub(super) stats: AfXdpStats,
    pub(super) need_wakeup: bool,
    pub(super) zero_copy: bool,
    /// Frames were queued since the last successful kick.
    pub(super) tx_pending: bool,
    pub(super) ifname: String,
    pub(super) queue: u32,
    pub(super) sys: S,
    // Held for their Drop; the rings point into them. Unmapped before the
    // socket closes, the UMEM last.
    #[allow(dead_code)]
    pub(super) ring_maps: Vec<S::Map>,
    pub(super) fd: OwnedFd,
    #[allow(dead_code)]
    pub(super) umem: Umem<S::Map>,
}

/// The UMEM mapping, unmapped on drop unless the engine leaks it.
pub(super) struct Umem<M> {
    map: ManuallyDrop<M>,
    leak: bool,
}

impl<M> Drop for Umem<M> {
    fn drop(&mut self) {
        if !self.leak {
            // SAFETY: dropped once, here; `map` is not used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.map) };
        }
    }
}

impl<S: Sys> Drop for Engine<S> {
    /// A frame still lent out points into the UMEM: keep the memory
    /// mapped (leaked) so it never dangles. Only a worker that drops
    /// frames instead of giving them back gets here.
    fn drop(&mut self) {
        if self.lent > 0 {
            tracing::warn!(
                ifname = self.ifname,
                queue = self.queue,
                lent = self.lent,
                "AF_XDP port closed with frames lent out: UMEM left mapped"
            );
            self.umem.leak = true;
        }
    }
}

// SAFETY: `umem_base` points into `umem`, owned by the engine; the engine
// moves between threads whole and is never shared.
unsafe impl<S: Sys + Send> Send for Engine<S> where S::Map: Send {}

impl<S: Sys> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("ifname", &self.ifname)
            .field("queue", &self.queue)
            .field("zero_copy", &self.zero_copy)
            .field("frames_free", &self.frames.len())
            .field("frames_lent", &self.lent)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Bytes of a ring mapping: the offset of its entries plus the entries.
fn ring_len(desc_off: u64, entries: u32, entry: usize) -> Option<usize> {
    usize::try_from(desc_off)
        .ok()?
        .checked_add(usize::try_from(entries).ok()?.checked_mul(entry)?)
}

impl<S: Sys> Engine<S> {
    pub(super) fn open(
        sys: S,
        ifname: &str,
        queue: u32,
        opts: &AfXdpOptions,
    ) -> Result<Self, AfXdpError> {
        check(opts)?;
        let ifindex = sys
            .if_index(ifname)
            .map_err(|source| AfXdpError::Interface {
                ifname: ifname.to_owned(),
                source,
            })?;
        let setup = |op: &'static str| {
            let ifname = ifname.to_owned();
            move |source| AfXdpError::Setup {
                ifname,
                queue,
                op,
                source,
            }
        };
        let fd = sys.xdp_socket().map_err(setup("socket"))?;
        let umem_len = usize::try_from(u64::from(opts.frame_size) * u64::from(opts.frame_count))
            .map_err(|_| invalid("UMEM does not fit in memory"))?;
        let umem = sys.map_umem(umem_len).map_err(setup("mmap UMEM"))?;
        if umem.len() < umem_len {
            return Err(setup("mmap UMEM")(io::Error::other("mapping too short")));
        }
        let umem_base = umem.as_ptr();
        sys.register_umem(
            fd.as_fd(),
            &XdpUmemReg {
                addr: umem_base.as_ptr() as u64,
                len: umem_len as u64,
                chunk_size: opts.frame_size,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            },
        )
        .map_err(setup("XDP_UMEM_REG"))?;
        for (name, op, n) in [
            (
                sys::XDP_UMEM_FILL_RING,
                "XDP_UMEM_FILL_RING",
                opts.fill_size,
            ),
            (
                sys::XDP_UMEM_COMPLETION_RING,
                "XDP_UMEM_COMPLETION_RING",
                opts.comp_size,
            ),
            (sys::XDP_RX_RING, "XDP_RX_RING", opts.rx_size),
            (sys::XDP_TX_RING, "XDP_TX_RING", opts.tx_size),
        ] {
            sys.set_ring_size(fd.as_fd(), name, n).map_err(setup(op))?;
        }
        let off = sys
            .mmap_offsets(fd.as_fd())
            .map_err(setup("XDP_MMAP_OFFSETS"))?;
        let desc = std::mem::size_of::<XdpDesc>();
        let bad_layout = || setup("ring layout")(io::Error::other("unexpected ring offsets"));
        let map = |pgoff: i64, desc_off: u64, n: u32, entry: usize, op: &'static str| {
            let len = ring_len(desc_off, n, entry).ok_or_else(bad_layout)?;
            sys.map_ring(fd.as_fd(), pgoff, len).map_err(setup(op))
        };
        let fill_map = map(
            sys::XDP_UMEM_PGOFF_FILL_RING,
            off.fr.desc,
            opts.fill_size,
            8,
            "mmap fill ring",
        )?;
        let comp_map = map(
            sys::XDP_UMEM_PGOFF_COMPLETION_RING,
            off.cr.desc,
            opts.comp_size,
            8,
            "mmap completion ring",
        )?;
        let rx_map = map(
            sys::XDP_PGOFF_RX_RING,
            off.rx.desc,
            opts.rx_size,
            desc,
            "mmap RX ring",
        )?;
        let tx_map = map(
            sys::XDP_PGOFF_TX_RING,
            off.tx.desc,
            opts.tx_size,
            desc,
            "mmap TX ring",
        )?;
        // SAFETY: each ring gets its own mapping, which the engine keeps
        // (`ring_maps`) for as long as the ring; `Raw::new` checks the
        // kernel's offsets against the mapping's length.
        let rings = unsafe {
            (
                ProdRing::new(fill_map.as_ptr(), fill_map.len(), &off.fr, opts.fill_size),
                ConsRing::new(comp_map.as_ptr(), comp_map.len(), &off.cr, opts.comp_size),
                ConsRing::new(rx_map.as_ptr(), rx_map.len(), &off.rx, opts.rx_size),
                ProdRing::new(tx_map.as_ptr(), tx_map.len(), &off.tx, opts.tx_size),
            )
        };
        let (Some(mut fill), Some(comp), Some(rx), Some(tx)) = rings else {
            return Err(bad_layout());
        };

        // Every frame is ours; give the fill ring its share before bind so
        // the first packets find room.
        let mut frames: Vec<u64> = (0..u64::from(opts.frame_count))
            .rev()
            .map(|i| i * u64::from(opts.frame_size))
            .collect();
        let n = fill.free(opts.fill_size);
        for i in 0..n {
            if let Some(addr) = frames.pop() {
                fill.write(i, addr);
            }
        }
        fill.submit(n);

        let mut flags = match opts.bind_mode {
            BindMode::Auto => 0,
            BindMode::Copy => sys::XDP_COPY,
            BindMode::ZeroCopy => sys::XDP_ZEROCOPY,
        };
        if opts.need_wakeup {
            flags |= sys::XDP_USE_NEED_WAKEUP;
        }
        sys.bind(
            fd.as_fd(),
            &SockaddrXdp {
                family: sys::AF_XDP_FAMILY,
                flags,
                ifindex,
                queue_id: queue,
                shared_umem_fd: 0,
            },
        )
        .map_err(setup("bind"))?;
        let zero_copy = sys.zero_copy(fd.as_fd()).map_err(setup("XDP_OPTIONS"))?;
        Ok(Engine {
            fill,
            comp,
            rx,
            tx,
            frames,
            lent: 0,
            frame_size: opts.frame_size,
            tx_reserve: opts.tx_size as usize,
            umem_base,
            umem_len,
            stats: AfXdpStats::default(),
            need_wakeup: opts.need_wakeup,
            zero_copy,
            tx_pending: false,
            ifname: ifname.to_owned(),
            queue,
            sys,
            ring_maps: vec![fill_map, comp_map, rx_map, tx_map],
            fd,
            umem: Umem {
                map: ManuallyDrop::new(umem),
                leak: false,
            },
        })
    }

    /// The frame at `addr` (any address inside it) as a chunk base.
    pub(super) fn chunk(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }

    /// The bytes `[addr, addr + len)` of the UMEM, if in bounds and
    /// inside one frame.
    pub(super) fn umem_range(&self, addr: u64, len: u32) -> Option<(usize, usize)> {
        let start = usize::try_from(addr).ok()?;
        let len = usize::try_from(len).ok()?;
        let end = start.checked_add(len)?;
        let frame_end = usize::try_from(self.chunk(addr) + u64::from(self.frame_size)).ok()?;
        (end <= self.umem_len && end <= frame_end).then_some((start, len))
    }

    pub(super) fn rx_burst(&mut self, out: &mut Vec<XdpFrame>, max: usize) -> io::Result<usize> {
        self.reap_completions();
        if self.tx_pending {
            self.kick()?;
        }
        // Frames completed or dropped since the last burst feed the kernel
        // before we take more from it.
        self.refill();
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        let n = self.rx.available(want);
        let mut got = 0;
        for i in 0..n {
            let d = self.rx.read(i);
            let chunk = self.chunk(d.addr);
            let start = u32::try_from(d.addr - chunk).unwrap_or(u32::MAX);
            if d.len >= 14 && self.umem_range(d.addr, d.len).is_some() {
                // SAFETY: `umem_range` checked the frame against the UMEM
                // mapping and its chunk; the kernel published the chunk in
                // the RX ring (read after an Acquire of the producer index)
                // and does not touch it until we give it back, and it is in
                // no other ring nor the free list. The mapping outlives the
                // frame (`Engine`'s drop leaks it while frames are lent).
                out.push(unsafe {
                    XdpFrame::new(self.umem_base, chunk, start, d.len, self.frame_size)
                });
                got += 1;
            } else {
                self.stats.rx_bad_len += 1;
                if self.umem_range(chunk, self.frame_size).is_some() {
                    self.frames.push(chunk);
                }
            }
        }
        self.rx.release(n);
        self.lent += got;
        self.stats.rx_packets += got as u64;
        if n == 0 && self.need_wakeup && self.fill.needs_wakeup() {
            self.stats.rx_wakeups += 1;
            match self.sys.wake_rx(self.fd.as_fd()) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// Hands idle frames to the fill ring, keeping `tx_size` worth back
    /// for transmission (the UMEM holds fill + RX + TX, see `check`).
    pub(super) fn refill(&mut self) {
        let spare = self.frames.len().saturating_sub(self.tx_reserve);
        let spare = u32::try_from(spare).unwrap_or(u32::MAX);
        if spare == 0 {
            return;
        }
        let n = self.fill.free(spare).min(spare);
        for i in 0..n {
            if let Some(addr) = self.frames.pop() {
                self.fill.write(i, addr);
            }
        }
        self.fill.submit(n);
    }

    pub(super) fn reap_completions(&mut self) {
        let n = self.comp.available(u32::MAX);
        for i in 0..n {
            let addr = self.comp.read(i);
            let chunk = self.chunk(addr);
            self.frames.push(chunk);
        }
        self.comp.release(n);
    }

    pub(super) fn tx_burst(&mut self, pkts: &mut Vec<XdpFrame>) -> io::Result<usize> {
        self.reap_completions();
        let want = u32::try_from(pkts.len()).unwrap_or(u32::MAX);
        let slots = self.tx.free(want);
        let mut queued = 0u32;
        let mut consumed = 0;
        for pkt in pkts.iter() {
            let Ok(len) = u32::try_from(pkt.len()) else {
                self.stats.tx_bad_len += 1;
                consumed += 1;
                continue;
            };
            if len == 0 || len > self.frame_size {
                // The kernel would skip the descriptor without completing
                // it, and the chunk would be lost.
                self.stats.tx_bad_len += 1;
                consumed += 1;
                continue;
            }
            if queued == slots {
                break;
            }
            let addr = if pkt.umem() == self.umem_base {
                pkt.addr()
            } else {
                // Another port's frame: copy it into one of ours.
                let Some(addr) = self.frames.pop() else { break };
                let Some((start, n)) = self.umem_range(addr, len) else {
                    self.frames.push(addr);
                    break;
                };
                // SAFETY: the frame at `addr` is idle and ours (from the
                // free list, in no ring); `umem_range` checked the range
                // against the mapping; `pkt` is in another UMEM.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        pkt.bytes().as_ptr(),
                        self.umem_base.as_ptr().add(start),
                        n,
                    );
                }
                addr
            };
            self.tx.write(
                queued,
                XdpDesc {
                    addr,
                    len,
                    options: 0,
                },
            );
            queued += 1;
            consumed += 1;
        }
        self.tx.submit(queued);
        for buf in pkts.drain(..consumed) {
            if buf.umem() == self.umem_base && !buf.is_empty() {
                // In the TX ring now: the kernel gives the chunk back
                // through the completion ring.
                self.lent -= 1;
            } else {
                self.give_back(buf);
            }
        }
        self.stats.tx_packets += u64::from(queued);
        if queued > 0 {
            self.tx_pending = true;
        }
        self.kick()?;
        Ok(queued as usize)
    }

    /// One `sendto` for everything queued, when the kernel wants one. A
    /// transient failure (device busy, a signal, the kernel's per-call
    /// budget) leaves the frames queued for the next kick.
    pub(super) fn kick(&mut self) -> io::Result<()> {
        if !self.tx_pending {
            return Ok(());
        }
        if self.need_wakeup && !self.tx.needs_wakeup() {
            // The driver is polling the TX ring itself (zero-copy).
            self.tx_pending = false;
            return Ok(());
        }
        self.stats.tx_kicks += 1;
        match self.sys.kick_tx(self.fd.as_fd()) {
            Ok(()) => {
                // Copy mode sends at most a budget per call: kick again
                // next time while the kernel has not consumed everything.
                self.tx_pending = self.tx.outstanding() > 0;
                Ok(())
            }
            Err(e) => {
                self.stats.tx_kick_errors += 1;
                match e.raw_os_error() {
                    Some(
                        libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR | libc::ENETDOWN,
                    ) => Ok(()),
                    _ => Err(e),
                }
            }
        }
    }

    /// Takes back a frame that will not be sent: its chunk goes to the
    /// free list (and to the fill ring at the next burst). A frame of
    /// another port is not ours to reuse and is let go.
    pub(super) fn give_back(&mut self, buf: XdpFrame) {
        if buf.umem() == self.umem_base {
            self.frames.push(buf.chunk());
            self.lent -= 1;
        }
    }

    /// Lends a free chunk as an empty frame with [`DATA_OFFSET`] headroom.
    pub(super) fn alloc(&mut self) -> Option<XdpFrame> {
        let chunk = self.frames.pop()?;
        self.lent += 1;
        // SAFETY: the chunk came from the free list, so it is ours and in
        // no ring; it is inside the mapping (every free-list entry is a
        // chunk base of the UMEM), which outlives the frame (see `Drop`).
        Some(unsafe {
            XdpFrame::new(
                self.umem_base,
                chunk,
                DATA_OFFSET.min(self.frame_size),
                0,
                self.frame_size,
            )
        })
    }
}
