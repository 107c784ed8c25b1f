//! Linux AF_PACKET driver: TPACKET_V3 memory-mapped rings with fanout.
//!
//! One [`AfPacketPort`] per worker and interface. Every port of an
//! interface joins one `PACKET_FANOUT_HASH` group, so the kernel spreads
//! flows over the workers and keeps each flow (and, with the defrag flag,
//! every fragment of a datagram) on one worker. Receiving copies frames
//! out of the kernel's RX ring into preallocated [`PacketBuf`]s; sending
//! copies them into the TX ring and kicks the kernel once per burst. The
//! fast path makes no system call per packet and never blocks: an empty
//! ring is one volatile read.
//!
//! Both rings live on one socket and are TPACKET_V3. The V3 TX ring
//! (Linux 4.11+) is frame-based like V2, so it needs no second socket; it
//! also means one bind, one fanout membership and one `PACKET_IGNORE_OUTGOING`
//! cover both directions.
//!
//! All `unsafe` of the driver is here and in the submodules: the ring
//! walking in `ring`, the system calls behind the `sys` seam.
#![allow(unsafe_code)]

mod ring;
mod sys;

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::dataplane::frame::{FrameBuf, PacketBuf, MAX_FRAME};
use crate::io::Port;

use ring::{RxCounts, RxRing, TxReject, TxRing};
use sys::{LinuxSys, Mapping, Sys};

/// Ring geometry and socket options of an [`AfPacketPort`].
///
/// Sizes follow the kernel's rules: block sizes are multiples of the page
/// size (4096 is checked here; the kernel checks its own), frame sizes
/// multiples of 16.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// Bytes per RX block (default 256 KiB).
    pub rx_block_size: u32,
    /// Number of RX blocks (default 64: 16 MiB of ring per port).
    pub rx_block_count: u32,
    /// Nominal RX frame size; V3 packs frames of any size into a block,
    /// this only sets the frame count the kernel asks for (default 2048).
    pub rx_frame_size: u32,
    /// Milliseconds after which the kernel hands over a block that is not
    /// full, bounding the latency at low rates (default 2).
    pub rx_retire_timeout_ms: u32,
    /// Bytes per TX block (default 256 KiB).
    pub tx_block_size: u32,
    /// Number of TX blocks (default 4).
    pub tx_block_count: u32,
    /// Bytes per TX frame, the 48-byte frame header included (default
    /// 2112: any [`PacketBuf`] fits).
    pub tx_frame_size: u32,
    /// Fanout group shared by every port of one interface; `None` for a
    /// port alone on its interface.
    pub fanout_group: Option<u16>,
    /// Reassemble IPv4 fragments before fanout so that a fragmented
    /// datagram reaches one worker whole (`PACKET_FANOUT_FLAG_DEFRAG`;
    /// default on; only with a fanout group). A reassembled datagram longer
    /// than [`MAX_FRAME`] is dropped (`rx_bad_len`); without the flag the
    /// fragments arrive one by one, spread by their address-only hash.
    pub fanout_defrag: bool,
    /// Send straight to the driver, skipping the qdisc layer
    /// (`PACKET_QDISC_BYPASS`; default on).
    pub qdisc_bypass: bool,
    /// Buffers preallocated for received and generated frames (default 4096).
    pub pool_size: usize,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            rx_block_size: 256 * 1024,
            rx_block_count: 64,
            rx_frame_size: 2048,
            rx_retire_timeout_ms: 2,
            tx_block_size: 256 * 1024,
            tx_block_count: 4,
            tx_frame_size: 2112,
            fanout_group: None,
            fanout_defrag: true,
            qdisc_bypass: true,
            pool_size: 4096,
        }
    }
}

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// The options break a rule of the kernel or of the driver.
    #[error("invalid AF_PACKET options: {0}")]
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
    #[error("AF_PACKET socket on {ifname:?}: {op}: {source}")]
    Setup {
        /// The interface.
        ifname: String,
        /// The step that failed, e.g. `PACKET_RX_RING`.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// Counters of one port, read by the worker's stats export.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AfPacketStats {
    /// Frames received and handed to the pipeline.
    pub rx_packets: u64,
    /// Received frames dropped for their length: runts, frames over
    /// [`MAX_FRAME`], frames the kernel truncated (e.g. GSO super-frames
    /// of a veth with TSO on).
    pub rx_bad_len: u64,
    /// Received frames with `TP_STATUS_CSUMNOTREADY`: their L4 checksum is
    /// not filled in (local traffic over a veth with checksum offload).
    pub rx_csum_not_ready: u64,
    /// RX blocks given back early because of an inconsistent header.
    pub rx_corrupt_blocks: u64,
    /// Frames queued in the TX ring.
    pub tx_packets: u64,
    /// Frames dropped because they do not fit a TX ring frame.
    pub tx_bad_len: u64,
    /// Kicks (`sendto`) that failed; the frames stay queued and go with the
    /// next kick.
    pub tx_kick_errors: u64,
}

/// A worker's port on one interface through AF_PACKET rings.
///
/// Owns the socket, the mapping of its rings and the buffer pool; dropping
/// it unmaps the rings and closes the socket.
pub struct AfPacketPort {
    inner: Engine<LinuxSys>,
}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl AfPacketPort {
    /// Opens a port on `ifname` in the calling thread's network namespace.
    pub fn open(ifname: &str, opts: &AfPacketOptions) -> Result<Self, AfPacketError> {
        Ok(AfPacketPort {
            inner: Engine::open(LinuxSys, ifname, opts)?,
        })
    }

    /// The interface the port is bound to.
    pub fn ifname(&self) -> &str {
        &self.inner.ifname
    }

    /// The port's counters.
    pub fn stats(&self) -> AfPacketStats {
        self.inner.stats()
    }

    /// The kernel's RX counters since the previous call (reading resets
    /// them): frames seen by the socket and frames dropped because the ring
    /// was full.
    pub fn kernel_rx_stats(&self) -> io::Result<(u32, u32)> {
        self.inner.sys.rx_stats(self.inner.fd.as_fd())
    }

    /// Sends what an earlier burst queued but could not kick (the kick
    /// failed). A worker calls it when idle; `tx_burst` does it anyway.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.kick()
    }

    /// Largest frame `tx_burst` accepts.
    pub fn max_tx_frame(&self) -> usize {
        self.inner.tx.max_frame()
    }
}

impl Port for AfPacketPort {
    type Buf = PacketBuf;

    fn rx_burst(&mut self, out: &mut Vec<PacketBuf>, max: usize) -> io::Result<usize> {
        Ok(self.inner.rx_burst(out, max))
    }

    /// Queues the frames at the front of `pkts` in the TX ring and kicks the
    /// kernel once. Frames too long for a ring frame are dropped (counted
    /// in `tx_bad_len`) and leave `pkts` too; what stays in `pkts` did not
    /// fit because the ring is full. Returns the number queued. An error
    /// means the kick failed for a reason other than a full device queue:
    /// the frames are queued all the same and go with the next kick.
    fn tx_burst(&mut self, pkts: &mut Vec<PacketBuf>) -> io::Result<usize> {
        self.inner.tx_burst(pkts)
    }

    fn free(&mut self, buf: PacketBuf) {
        self.inner.free(buf);
    }

    fn alloc(&mut self) -> Option<PacketBuf> {
        self.inner.pool.pop()
    }
}

/// The hardware address of `ifname`, in the calling thread's network
/// namespace (an ioctl, so it is right after `setns`, unlike `/sys`).
pub fn interface_mac(ifname: &str) -> io::Result<[u8; 6]> {
    sys::interface_mac(ifname)
}

/// The MTU of `ifname`, in the calling thread's network namespace.
pub fn interface_mtu(ifname: &str) -> io::Result<u32> {
    sys::interface_mtu(ifname)
}

/// The index of `ifname`, in the calling thread's network namespace.
pub fn interface_index(ifname: &str) -> io::Result<u32> {
    sys::if_index(ifname)
}

/// The port's logic over any [`Sys`]: the real one, or the tests' fake.
struct Engine<S: Sys> {
    rx: RxRing,
    tx: TxRing,
    pool: Vec<PacketBuf>,
    pool_size: usize,
    rx_counts: RxCounts,
    tx_packets: u64,
    tx_bad_len: u64,
    tx_kick_errors: u64,
    /// Frames were queued since the last successful kick.
    tx_pending: bool,
    ifname: String,
    sys: S,
    // Held for its Drop: the rings point into it (they are never
    // dereferenced on drop); unmapped before the socket closes.
    #[allow(dead_code)]
    map: S::Map,
    fd: OwnedFd,
}

/// Checked ring geometry, in bytes.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    rx: libc::tpacket_req3,
    tx: libc::tpacket_req3,
    rx_len: usize,
    total_len: usize,
}

fn invalid(msg: impl Into<String>) -> AfPacketError {
    AfPacketError::InvalidOptions(msg.into())
}

fn geometry(o: &AfPacketOptions) -> Result<Geometry, AfPacketError> {
    const PAGE: u32 = 4096;
    let ring = |name: &str, block: u32, count: u32, frame: u32, min_frame: u32| {
        if block == 0 || !block.is_multiple_of(PAGE) {
            return Err(invalid(format!(
                "{name} block size {block} must be a positive multiple of {PAGE}"
            )));
        }
        if count == 0 {
            return Err(invalid(format!("{name} block count must be positive")));
        }
        if !frame.is_multiple_of(16) || frame < min_frame || frame > block {
            return Err(invalid(format!(
                "{name} frame size {frame} must be a multiple of 16 between {min_frame} and the block size {block}"
            )));
        }
        let frames = (block / frame)
            .checked_mul(count)
            .ok_or_else(|| invalid(format!("{name} ring has too many frames")))?;
        let len = usize::try_from(u64::from(block) * u64::from(count))
            .map_err(|_| invalid(format!("{name} ring does not fit in memory")))?;
        Ok((frames, len))
    };
    // A TX frame must carry any PacketBuf after its 48-byte header; an RX
    // frame only needs room for the header.
    let min_tx = u32::try_from(MAX_FRAME + 48).unwrap_or(u32::MAX);
    let (rx_frames, rx_len) = ring(
        "rx",
        o.rx_block_size,
        o.rx_block_count,
        o.rx_frame_size,
        128,
    )?;
    let (tx_frames, tx_len) = ring(
        "tx",
        o.tx_block_size,
        o.tx_block_count,
        o.tx_frame_size,
        min_tx,
    )?;
    if o.rx_retire_timeout_ms == 0 {
        return Err(invalid("rx_retire_timeout_ms must be positive"));
    }
    if o.pool_size == 0 {
        return Err(invalid("pool_size must be positive"));
    }
    let total_len = rx_len
        .checked_add(tx_len)
        .ok_or_else(|| invalid("rings do not fit in memory"))?;
    Ok(Geometry {
        rx: libc::tpacket_req3 {
            tp_block_size: o.rx_block_size,
            tp_block_nr: o.rx_block_count,
            tp_frame_size: o.rx_frame_size,
            tp_frame_nr: rx_frames,
            tp_retire_blk_tov: o.rx_retire_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        },
        // The kernel refuses a V3 TX ring with a timeout, private area or
        // feature word: those are RX block features.
        tx: libc::tpacket_req3 {
            tp_block_size: o.tx_block_size,
            tp_block_nr: o.tx_block_count,
            tp_frame_size: o.tx_frame_size,
            tp_frame_nr: tx_frames,
            tp_retire_blk_tov: 0,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        },
        rx_len,
        total_len,
    })
}

/// The `PACKET_FANOUT` argument: group id in the low 16 bits, mode and
/// flags in the high 16.
fn fanout_arg(group: u16, defrag: bool) -> libc::c_int {
    let mut mode = libc::PACKET_FANOUT_HASH;
    if defrag {
        mode |= libc::PACKET_FANOUT_FLAG_DEFRAG;
    }
    let arg = u32::from(group) | (mode << 16);
    libc::c_int::from_ne_bytes(arg.to_ne_bytes())
}

impl<S: Sys> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("ifname", &self.ifname)
            .field("pool_free", &self.pool.len())
            .field("pool_size", &self.pool_size)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: Sys> Engine<S> {
    fn open(sys: S, ifname: &str, opts: &AfPacketOptions) -> Result<Self, AfPacketError> {
        let geo = geometry(opts)?;
        let ifindex = sys
            .if_index(ifname)
            .map_err(|source| AfPacketError::Interface {
                ifname: ifname.to_owned(),
                source,
            })?;
        let setup = |op: &'static str| {
            let ifname = ifname.to_owned();
            move |source| AfPacketError::Setup { ifname, op, source }
        };

        // Protocol 0: the socket sees no packet until it is bound to the
        // interface, after the rings exist.
        let fd = sys.packet_socket().map_err(setup("socket"))?;
        let v3 = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        sys.set_packet_int(fd.as_fd(), libc::PACKET_VERSION, v3)
            .map_err(setup("PACKET_VERSION"))?;
        // A frame the kernel cannot send is skipped instead of stalling the
        // TX ring in TP_STATUS_WRONG_FORMAT.
        sys.set_packet_int(fd.as_fd(), libc::PACKET_LOSS, 1)
            .map_err(setup("PACKET_LOSS"))?;
        if opts.qdisc_bypass {
            sys.set_packet_int(fd.as_fd(), libc::PACKET_QDISC_BYPASS, 1)
                .map_err(setup("PACKET_QDISC_BYPASS"))?;
        }
        // Our own transmissions (and the host's) are not received again.
        // Before Linux 4.20 the option does not exist; RX then skips
        // PACKET_OUTGOING frames itself.
        match sys.set_packet_int(fd.as_fd(), libc::PACKET_IGNORE_OUTGOING, 1) {
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
            r => r.map_err(setup("PACKET_IGNORE_OUTGOING"))?,
        }
        sys.set_ring(fd.as_fd(), libc::PACKET_RX_RING, &geo.rx)
            .map_err(setup("PACKET_RX_RING"))?;
        sys.set_ring(fd.as_fd(), libc::PACKET_TX_RING, &geo.tx)
            .map_err(setup("PACKET_TX_RING"))?;
        let map = sys
            .map_rings(fd.as_fd(), geo.total_len)
            .map_err(setup("mmap"))?;
        if map.len() < geo.total_len {
            return Err(AfPacketError::Setup {
                ifname: ifname.to_owned(),
                op: "mmap",
                source: io::Error::other("mapping shorter than the rings"),
            });
        }
        let base = map.as_ptr();
        // The TX ring follows the RX ring in the mapping.
        let tx_base = std::ptr::NonNull::new(base.as_ptr().wrapping_add(geo.rx_len))
            .ok_or_else(|| invalid("ring mapping wraps around"))?;
        // SAFETY: `map` holds `total_len` bytes, page aligned, shared only
        // with the kernel, and lives in the same `Engine` as the rings. The
        // RX ring takes the first `rx_len` bytes (block size a multiple of
        // 4096), the TX ring the rest; `geometry` checked the frame size.
        let (rx, tx) = unsafe {
            (
                RxRing::new(
                    base,
                    geo.rx.tp_block_size as usize,
                    geo.rx.tp_block_nr as usize,
                ),
                TxRing::new(
                    tx_base,
                    geo.tx.tp_block_size as usize,
                    geo.tx.tp_block_nr as usize,
                    geo.tx.tp_frame_size as usize,
                ),
            )
        };
        sys.bind_interface(fd.as_fd(), ifindex)
            .map_err(setup("bind"))?;
        if let Some(group) = opts.fanout_group {
            sys.set_packet_int(
                fd.as_fd(),
                libc::PACKET_FANOUT,
                fanout_arg(group, opts.fanout_defrag),
            )
            .map_err(setup("PACKET_FANOUT"))?;
        }
        let pool = (0..opts.pool_size).map(|_| PacketBuf::new()).collect();
        Ok(Engine {
            rx,
            tx,
            pool,
            pool_size: opts.pool_size,
            rx_counts: RxCounts::default(),
            tx_packets: 0,
            tx_bad_len: 0,
            tx_kick_errors: 0,
            tx_pending: false,
            ifname: ifname.to_owned(),
            sys,
            map,
            fd,
        })
    }

    fn rx_burst(&mut self, out: &mut Vec<PacketBuf>, max: usize) -> usize {
        self.rx.poll(&mut self.pool, out, max, &mut self.rx_counts)
    }

    fn tx_burst(&mut self, pkts: &mut Vec<PacketBuf>) -> io::Result<usize> {
        let mut queued = 0;
        let mut consumed = 0;
        for pkt in pkts.iter() {
            match self.tx.push(pkt.bytes()) {
                Ok(()) => queued += 1,
                Err(TxReject::BadLen) => self.tx_bad_len += 1,
                Err(TxReject::Full) => break,
            }
            consumed += 1;
        }
        for buf in pkts.drain(..consumed) {
            Self::give_back(&mut self.pool, self.pool_size, buf);
        }
        self.tx_packets += queued as u64;
        if queued > 0 {
            self.tx_pending = true;
        }
        self.kick()?;
        Ok(queued)
    }

    /// One `sendto` for everything queued. A transient failure (the device
    /// queue is full, a signal) leaves the frames queued for the next kick.
    fn kick(&mut self) -> io::Result<()> {
        if !self.tx_pending {
            return Ok(());
        }
        match self.sys.kick_tx(self.fd.as_fd()) {
            Ok(()) => {
                self.tx_pending = false;
                Ok(())
            }
            Err(e) => {
                self.tx_kick_errors += 1;
                match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(()),
                    _ => Err(e),
                }
            }
        }
    }

    fn free(&mut self, buf: PacketBuf) {
        Self::give_back(&mut self.pool, self.pool_size, buf);
    }

    /// Returns a buffer to the pool; a buffer beyond the pool's size (one
    /// the pool never handed out) is dropped so the pool never reallocates.
    fn give_back(pool: &mut Vec<PacketBuf>, pool_size: usize, buf: PacketBuf) {
        if pool.len() < pool_size {
            pool.push(buf);
        }
    }

    fn stats(&self) -> AfPacketStats {
        AfPacketStats {
            rx_packets: self.rx_counts.packets,
            rx_bad_len: self.rx_counts.bad_len,
            rx_csum_not_ready: self.rx_counts.csum_not_ready,
            rx_corrupt_blocks: self.rx_counts.corrupt_blocks,
            tx_packets: self.tx_packets,
            tx_bad_len: self.tx_bad_len,
            tx_kick_errors: self.tx_kick_errors,
        }
    }
}

#[cfg(test)]
mod tests;
