//! Packet I/O: where bursts come from and go to.
//!
//! A [`Port`] receives and sends bursts of frames. The pipeline never knows
//! which port it runs on; the worker loop picks one driver at start and
//! stays monomorphic over it (no dynamic dispatch per packet).

use crate::dataplane::frame::FrameBuf;

pub mod af_packet;
pub mod af_xdp;
pub mod affinity;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod ifaddr;
pub mod memory;
mod mmap;
pub mod neigh;
pub mod pcap;
pub mod route;

/// A source and sink of frames, polled in bursts by one worker.
///
/// Buffers cycle: `rx_burst` hands out buffers, the worker passes them to
/// `tx_burst` or back to `free`. A port must not allocate per packet in
/// `rx_burst`/`tx_burst` (pools are allocated up front).
pub trait Port {
    /// The driver's buffer type.
    type Buf: FrameBuf;

    /// Appends up to `max` received frames to `out` and returns how many.
    /// Returns `Ok(0)` at once when nothing is waiting (poll mode).
    fn rx_burst(&mut self, out: &mut Vec<Self::Buf>, max: usize) -> std::io::Result<usize>;

    /// Queues frames for transmission. Sent frames are removed from the
    /// front of `pkts`; what is left could not be queued (ring full) and
    /// stays with the caller, who counts and frees it.
    fn tx_burst(&mut self, pkts: &mut Vec<Self::Buf>) -> std::io::Result<usize>;

    /// Takes back a buffer that will not be sent.
    fn free(&mut self, buf: Self::Buf);

    /// A buffer for a frame the pipeline creates itself (a second IPv4
    /// fragment); `None` when the pool is empty.
    fn alloc(&mut self) -> Option<Self::Buf>;

    /// Called once on the worker's thread before its first burst. A
    /// driver with per-thread state sets it up here: DPDK registers the
    /// thread as an lcore, so its mempool's per-lcore cache serves the
    /// worker instead of the shared ring.
    fn attach_thread(&mut self) {}

    /// Called once on the worker's thread after its last burst, before the
    /// port is dropped: undoes [`Port::attach_thread`].
    fn detach_thread(&mut self) {}
}
