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
//! All `unsafe` of the driver is in this module and its submodules: the
//! UMEM and the rings' bookkeeping in `engine`, the ring walking in
//! `ring`, the system calls behind the `sys` seam.
#![allow(unsafe_code)]

mod engine;
mod frame;
mod program;
mod ring;
mod sys;

use engine::Engine;

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::io::Port;

pub use frame::{XdpFrame, DATA_OFFSET};
pub use program::{VipFilter, MAX_VIPS};
use sys::{LinuxSys, Sys};

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

#[cfg(test)]
mod tests;
