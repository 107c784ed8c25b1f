//! Linux AF_XDP driver: an XDP program steers VIP traffic into one AF_XDP
//! socket per worker; everything else stays with the kernel.
//!
//! One [`AfXdpPort`] per worker, bound to one RX queue of the interface.
//! The interface's XDP program (`bpf/xdp_vip.c`, compiled by build.rs,
//! loaded by aya) looks the destination address of each frame (after an
//! optional VLAN tag) up in a map of live VIPs: a VIP's frame is redirected
//! to the socket of the queue it arrived on, any other frame (ARP, NDP,
//! DNS, SSH, the admin API) is passed to the kernel, so the host keeps
//! working on the interface. The VIP map is written through the
//! [`VipFilter`] every port of the interface shares; the control plane
//! calls [`VipFilter::set_vips`] whenever the snapshot's VIP set changes.
//!
//! Frames are not copied between the rings and the pipeline: a received
//! UMEM frame is lent to the pipeline as an [`XdpFrame`] and rewritten in
//! place (an IP-in-IP header goes into the kernel's XDP headroom in front
//! of it); a forwarded frame's chunk goes to the TX ring as it is and back
//! to the free list when the kernel completes it; a dropped frame goes
//! back to the free list at once, and from there to the fill ring at the
//! next burst. Only frames the pipeline creates itself (a second IPv4
//! fragment) are copied, into a free UMEM frame from [`Port::alloc`].
//! Every chunk is in exactly one place: the free list, a ring, or lent
//! out as one `XdpFrame` (the type is neither `Clone` nor `Send`).
//!
//! The rings are driven in bursts with cached indices, so the fast path
//! makes no system call per packet: a `sendto` kick per TX burst (only
//! when the kernel asks for one, with `XDP_USE_NEED_WAKEUP`), a `recvfrom`
//! wake-up only when the kernel flags the fill ring, no `poll`.
//!
//! Zero-copy is requested by default and the kernel falls back to copy
//! mode where the driver has none (veth); [`AfXdpPort::zero_copy`] says
//! which one was granted.
//!
//! All `unsafe` of the driver is here and in the submodules: the ring
//! walking in `ring`, the system calls behind the `sys` seam.
#![allow(unsafe_code)]

mod frame;
mod program;
mod ring;
mod sys;

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::dataplane::frame::FrameBuf;
use crate::io::Port;

pub use frame::{XdpFrame, DATA_OFFSET};
pub use program::{VipFilter, MAX_VIPS};
use ring::{ConsRing, ProdRing};
use sys::{LinuxSys, Mapping, SockaddrXdp, Sys, XdpDesc, XdpUmemReg};

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic mode when the driver
    /// refuses it.
    #[default]
    Auto,
    /// Native mode only (veth supports it).
    Native,
    /// Generic (skb) mode: any interface, slowest.
    Generic,
}

/// How the socket shares frames with the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Zero-copy where the driver offers it, copy mode otherwise (the
    /// kernel decides at bind).
    #[default]
    Auto,
    /// Copy mode (the only one veth has).
    Copy,
    /// Zero-copy or fail.
    ZeroCopy,
}

/// Ring and UMEM geometry of an [`AfXdpPort`].
///
/// Ring sizes are powers of two. The UMEM must hold the fill, RX and TX
/// rings' worth of frames at once, so that frames the kernel holds for
/// receiving can never starve transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfXdpOptions {
    /// UMEM frame (chunk) size: 2048 or 4096 (default 4096: a 1518-byte
    /// frame fits after the kernel's 256-byte XDP headroom either way).
    pub frame_size: u32,
    /// Number of UMEM frames (default 4096: 16 MiB per port).
    pub frame_count: u32,
    /// Fill ring entries (default 1024).
    pub fill_size: u32,
    /// Completion ring entries (default 1024).
    pub comp_size: u32,
    /// RX ring entries (default 1024).
    pub rx_size: u32,
    /// TX ring entries (default 1024).
    pub tx_size: u32,
    /// Where the XDP program runs (default [`XdpMode::Auto`]). Only the
    /// first port of an interface decides; later ones share its program.
    pub xdp_mode: XdpMode,
    /// Copy or zero-copy (default [`BindMode::Auto`]).
    pub bind_mode: BindMode,
    /// Ask the kernel to flag when it needs a system call
    /// (`XDP_USE_NEED_WAKEUP`, default on); off, every TX burst kicks.
    pub need_wakeup: bool,
}

impl Default for AfXdpOptions {
    fn default() -> Self {
        AfXdpOptions {
            frame_size: 4096,
            frame_count: 4096,
            fill_size: 1024,
            comp_size: 1024,
            rx_size: 1024,
            tx_size: 1024,
            xdp_mode: XdpMode::Auto,
            bind_mode: BindMode::Auto,
            need_wakeup: true,
        }
    }
}

/// Why a port or filter could not be opened or updated.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// The crate was built without the XDP program (no clang or BPF
    /// headers at build time): install clang and libbpf-dev and rebuild.
    #[error("af_xdp driver unavailable: {0}")]
    Unavailable(String),
    /// The options break a rule of the kernel or of the driver.
    #[error("invalid AF_XDP options: {0}")]
    InvalidOptions(String),
    /// The interface does not exist in this network namespace.
    #[error("interface {ifname:?}: {source}")]
    Interface {
        /// The interface asked for.
        ifname: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A system call setting up the socket failed.
    #[error("AF_XDP socket on {ifname:?} queue {queue}: {op}: {source}")]
    Setup {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
        /// The step that failed, e.g. `XDP_UMEM_REG`.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Loading, attaching or updating the XDP program or its maps failed.
    #[error("XDP program on {ifname:?}: {op}: {source}")]
    Program {
        /// The interface.
        ifname: String,
        /// The step that failed.
        op: &'static str,
        /// What aya or the kernel said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Counters of one port, read by the worker's stats export.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AfXdpStats {
    /// Frames received and handed to the pipeline.
    pub rx_packets: u64,
    /// Received frames dropped for their length (shorter than an
    /// Ethernet header, or outside their UMEM frame).
    pub rx_bad_len: u64,
    /// `recvfrom` wake-ups asked for by the kernel.
    pub rx_wakeups: u64,
    /// Frames queued in the TX ring.
    pub tx_packets: u64,
    /// Frames dropped because they are empty or, copied from another
    /// port, do not fit a UMEM frame.
    pub tx_bad_len: u64,
    /// Kicks (`sendto`) made.
    pub tx_kicks: u64,
    /// Kicks that failed or left work behind (`EAGAIN`, `ENOBUFS`, ...);
    /// the frames stay queued and go with the next kick.
    pub tx_kick_errors: u64,
}

/// A worker's AF_XDP socket on one queue of one interface.
///
/// Owns the socket, its UMEM and rings, and holds the
/// interface's [`VipFilter`]: the XDP program stays attached while any
/// port (or the control plane) holds it.
pub struct AfXdpPort {
    // Dropped first: the socket closes (and leaves the XSKMAP) before the
    // last reference to the program can go.
    inner: Engine<LinuxSys>,
    filter: Arc<VipFilter>,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl AfXdpPort {
    /// Opens a port on queue `queue` of `ifname`, in the calling thread's
    /// network namespace, attaching the interface's XDP program if no port
    /// of this process has yet. Frames reach the port only for the VIPs in
    /// [`vip_filter`](Self::vip_filter) (empty for a new program).
    pub fn open(ifname: &str, queue: u32, opts: &AfXdpOptions) -> Result<Self, AfXdpError> {
        check(opts)?;
        let filter = VipFilter::for_interface(ifname, opts.xdp_mode)?;
        let inner = Engine::open(LinuxSys, ifname, queue, opts)?;
        filter.register(queue, inner.fd.as_fd())?;
        tracing::info!(
            ifname,
            queue,
            zero_copy = inner.zero_copy,
            native_xdp = filter.native(),
            "AF_XDP port open"
        );
        Ok(AfXdpPort { inner, filter })
    }

    /// The VIP filter of the port's interface, shared by all its ports.
    pub fn vip_filter(&self) -> &Arc<VipFilter> {
        &self.filter
    }

    /// Shorthand for `vip_filter().set_vips(vips)`.
    pub fn set_vips(&self, vips: &[std::net::IpAddr]) -> Result<(), AfXdpError> {
        self.filter.set_vips(vips)
    }

    /// The interface the port is bound to.
    pub fn ifname(&self) -> &str {
        &self.inner.ifname
    }

    /// The queue the port is bound to.
    pub fn queue(&self) -> u32 {
        self.inner.queue
    }

    /// True when the kernel granted zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.inner.zero_copy
    }

    /// The port's counters.
    pub fn stats(&self) -> AfXdpStats {
        self.inner.stats
    }

    /// The kernel's counters of the socket: (RX drops for a full RX ring or
    /// an empty fill ring, invalid RX descriptors, invalid TX descriptors).
    pub fn kernel_stats(&self) -> io::Result<(u64, u64, u64)> {
        let s = self.inner.sys.statistics(self.inner.fd.as_fd())?;
        Ok((
            s.rx_dropped + s.rx_ring_full + s.rx_fill_ring_empty_descs,
            s.rx_invalid_descs,
            s.tx_invalid_descs,
        ))
    }

    /// Sends what an earlier burst queued but could not kick, and takes
    /// back sent frames. A worker calls it when idle; the bursts do anyway.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.reap_completions();
        self.inner.kick()
    }

    /// Largest frame `tx_burst` accepts.
    pub fn max_tx_frame(&self) -> usize {
        self.inner.frame_size as usize
    }
}

impl Port for AfXdpPort {
    type Buf = XdpFrame;

    /// Lends up to `max` received UMEM frames, in place.
    fn rx_burst(&mut self, out: &mut Vec<XdpFrame>, max: usize) -> io::Result<usize> {
        self.inner.rx_burst(out, max)
    }

    /// Queues the frames at the front of `pkts` in the TX ring as they are
    /// (a frame of another port is copied into a free UMEM frame) and
    /// kicks the kernel once if it asks. Empty frames are dropped (counted
    /// in `tx_bad_len`) and leave `pkts` too; what stays in `pkts` did not
    /// fit (TX ring full). Returns the number queued. An error means the
    /// kick failed for a reason other than a busy device: the frames stay
    /// queued and go with the next kick.
    fn tx_burst(&mut self, pkts: &mut Vec<XdpFrame>) -> io::Result<usize> {
        self.inner.tx_burst(pkts)
    }

    fn free(&mut self, buf: XdpFrame) {
        self.inner.give_back(buf);
    }

    /// A free UMEM frame, empty, with [`DATA_OFFSET`] bytes of headroom.
    fn alloc(&mut self) -> Option<XdpFrame> {
        self.inner.alloc()
    }
}

fn invalid(msg: impl Into<String>) -> AfXdpError {
    AfXdpError::InvalidOptions(msg.into())
}

fn check(o: &AfXdpOptions) -> Result<(), AfXdpError> {
    if o.frame_size != 2048 && o.frame_size != 4096 {
        return Err(invalid(format!(
            "frame_size {} must be 2048 or 4096",
            o.frame_size
        )));
    }
    for (name, n) in [
        ("fill_size", o.fill_size),
        ("comp_size", o.comp_size),
        ("rx_size", o.rx_size),
        ("tx_size", o.tx_size),
    ] {
        if !n.is_power_of_two() {
            return Err(invalid(format!("{name} {n} must be a power of two")));
        }
    }
    let need = u64::from(o.fill_size) + u64::from(o.rx_size) + u64::from(o.tx_size);
    if u64::from(o.frame_count) < need {
        return Err(invalid(format!(
            "frame_count {} must be at least fill_size + rx_size + tx_size = {need}",
            o.frame_count
        )));
    }
    Ok(())
}

/// The port's logic over any [`Sys`]: the real one, or the tests' fake.
struct Engine<S: Sys> {
    fill: ProdRing<u64>,
    comp: ConsRing<u64>,
    rx: ConsRing<XdpDesc>,
    tx: ProdRing<XdpDesc>,
    /// Addresses of the UMEM frames that are ours and idle.
    frames: Vec<u64>,
    /// Frames lent out as `XdpFrame`s and not given back yet.
    lent: usize,
    frame_size: u32,
    /// Idle frames never given to the fill ring, kept for frames the
    /// pipeline creates (`alloc`) and copies from other ports.
    tx_reserve: usize,
    umem_base: NonNull<u8>,
    umem_len: usize,
    stats: AfXdpStats,
    need_wakeup: bool,
    zero_copy: bool,
    /// Frames were queued since the last successful kick.
    tx_pending: bool,
    ifname: String,
    queue: u32,
    sys: S,
    // Held for their Drop; the rings point into them. Unmapped before the
    // socket closes, the UMEM last.
    #[allow(dead_code)]
    ring_maps: Vec<S::Map>,
    fd: OwnedFd,
    #[allow(dead_code)]
    umem: Umem<S::Map>,
}

/// The UMEM mapping, unmapped on drop unless the engine leaks it.
struct Umem<M> {
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
    fn open(sys: S, ifname: &str, queue: u32, opts: &AfXdpOptions) -> Result<Self, AfXdpError> {
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
    fn chunk(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }

    /// The bytes `[addr, addr + len)` of the UMEM, if in bounds and
    /// inside one frame.
    fn umem_range(&self, addr: u64, len: u32) -> Option<(usize, usize)> {
        let start = usize::try_from(addr).ok()?;
        let len = usize::try_from(len).ok()?;
        let end = start.checked_add(len)?;
        let frame_end = usize::try_from(self.chunk(addr) + u64::from(self.frame_size)).ok()?;
        (end <= self.umem_len && end <= frame_end).then_some((start, len))
    }

    fn rx_burst(&mut self, out: &mut Vec<XdpFrame>, max: usize) -> io::Result<usize> {
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
    fn refill(&mut self) {
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

    fn reap_completions(&mut self) {
        let n = self.comp.available(u32::MAX);
        for i in 0..n {
            let addr = self.comp.read(i);
            let chunk = self.chunk(addr);
            self.frames.push(chunk);
        }
        self.comp.release(n);
    }

    fn tx_burst(&mut self, pkts: &mut Vec<XdpFrame>) -> io::Result<usize> {
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
    fn kick(&mut self) -> io::Result<()> {
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
    fn give_back(&mut self, buf: XdpFrame) {
        if buf.umem() == self.umem_base {
            self.frames.push(buf.chunk());
            self.lent -= 1;
        }
    }

    /// Lends a free chunk as an empty frame with [`DATA_OFFSET`] headroom.
    fn alloc(&mut self) -> Option<XdpFrame> {
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

#[cfg(test)]
mod tests;
