//! The system-call seam of the AF_XDP driver.
//!
//! Everything the driver asks of the kernel for its socket goes through
//! [`Sys`]: open the socket, register the UMEM, size and map the four
//! rings, bind, and wake the kernel. [`LinuxSys`] makes the real calls; the
//! tests swap in a fake that hands out heap memory as "rings" and plays the
//! kernel's side of them (the pattern of aya's `sys/fake.rs`). The XDP
//! program and its maps are aya's business (`program.rs`), not this seam's.
//!
//! The uapi structures and constants of `<linux/if_xdp.h>` are written out
//! here rather than taken from `libc`, whose coverage of them varies by
//! version; they are stable kernel ABI.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::io::mmap::cvt;
pub(crate) use crate::io::mmap::{Mapping, MmapRegion};

/// `SOL_XDP`, the socket option level of AF_XDP.
pub(crate) const SOL_XDP: libc::c_int = 283;
/// `AF_XDP`.
pub(crate) const AF_XDP: libc::c_int = 44;
/// `AF_XDP` as `sockaddr_xdp::sxdp_family` spells it.
pub(crate) const AF_XDP_FAMILY: u16 = 44;

pub(crate) const XDP_MMAP_OFFSETS: libc::c_int = 1;
pub(crate) const XDP_RX_RING: libc::c_int = 2;
pub(crate) const XDP_TX_RING: libc::c_int = 3;
pub(crate) const XDP_UMEM_REG: libc::c_int = 4;
pub(crate) const XDP_UMEM_FILL_RING: libc::c_int = 5;
pub(crate) const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
pub(crate) const XDP_STATISTICS: libc::c_int = 7;
pub(crate) const XDP_OPTIONS: libc::c_int = 8;

/// Bind flags (`sxdp_flags`).
pub(crate) const XDP_COPY: u16 = 1 << 1;
pub(crate) const XDP_ZEROCOPY: u16 = 1 << 2;
pub(crate) const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;

/// Ring flag: the kernel waits for a system call before it looks at the
/// ring again.
pub(crate) const XDP_RING_NEED_WAKEUP: u32 = 1;
/// `XDP_OPTIONS` flag: the socket is bound in zero-copy mode.
pub(crate) const XDP_OPTIONS_ZEROCOPY: u32 = 1;

/// `mmap` page offsets of the four rings.
pub(crate) const XDP_PGOFF_RX_RING: i64 = 0;
pub(crate) const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
pub(crate) const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
pub(crate) const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;

/// `struct xdp_umem_reg` (Linux 6.8 layout; older kernels read the prefix
/// they know, and zero in the new fields means "as before").
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct XdpUmemReg {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) chunk_size: u32,
    pub(crate) headroom: u32,
    pub(crate) flags: u32,
    pub(crate) tx_metadata_len: u32,
}

/// `struct xdp_ring_offset`: where a ring's fields sit in its mapping.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct XdpRingOffset {
    pub(crate) producer: u64,
    pub(crate) consumer: u64,
    pub(crate) desc: u64,
    pub(crate) flags: u64,
}

/// `struct xdp_mmap_offsets` (with ring flags: Linux 5.4+).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct XdpMmapOffsets {
    pub(crate) rx: XdpRingOffset,
    pub(crate) tx: XdpRingOffset,
    pub(crate) fr: XdpRingOffset,
    pub(crate) cr: XdpRingOffset,
}

/// `struct sockaddr_xdp`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SockaddrXdp {
    pub(crate) family: u16,
    pub(crate) flags: u16,
    pub(crate) ifindex: u32,
    pub(crate) queue_id: u32,
    pub(crate) shared_umem_fd: u32,
}

/// `struct xdp_desc`: one RX or TX descriptor.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct XdpDesc {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) options: u32,
}

/// `struct xdp_statistics` (Linux 5.9 layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct XdpStatistics {
    pub(crate) rx_dropped: u64,
    pub(crate) rx_invalid_descs: u64,
    pub(crate) tx_invalid_descs: u64,
    pub(crate) rx_ring_full: u64,
    pub(crate) rx_fill_ring_empty_descs: u64,
    pub(crate) tx_ring_empty_descs: u64,
}

/// The few system calls the socket side of the driver needs.
pub(crate) trait Sys {
    /// A memory map (UMEM or ring).
    type Map: Mapping;

    /// A fresh AF_XDP socket.
    fn xdp_socket(&self) -> io::Result<OwnedFd>;
    /// Anonymous, zeroed memory of `len` bytes for the UMEM.
    fn map_umem(&self, len: usize) -> io::Result<Self::Map>;
    /// `XDP_UMEM_REG`.
    fn register_umem(&self, fd: BorrowedFd<'_>, reg: &XdpUmemReg) -> io::Result<()>;
    /// Sets the entry count of ring `name` (`XDP_RX_RING`, ...).
    fn set_ring_size(&self, fd: BorrowedFd<'_>, name: libc::c_int, entries: u32) -> io::Result<()>;
    /// `XDP_MMAP_OFFSETS`.
    fn mmap_offsets(&self, fd: BorrowedFd<'_>) -> io::Result<XdpMmapOffsets>;
    /// Maps `len` bytes of the ring at page offset `pgoff`.
    fn map_ring(&self, fd: BorrowedFd<'_>, pgoff: i64, len: usize) -> io::Result<Self::Map>;
    /// Binds the socket to an interface queue.
    fn bind(&self, fd: BorrowedFd<'_>, addr: &SockaddrXdp) -> io::Result<()>;
    /// True when the bound socket runs in zero-copy mode.
    fn zero_copy(&self, fd: BorrowedFd<'_>) -> io::Result<bool>;
    /// Asks the kernel to send what the TX ring holds, without waiting.
    fn kick_tx(&self, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// Asks the kernel to look at the fill ring again, without waiting.
    fn wake_rx(&self, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// The kernel's counters of the socket.
    fn statistics(&self, fd: BorrowedFd<'_>) -> io::Result<XdpStatistics>;
    /// The index of interface `name`, in the calling thread's namespace.
    fn if_index(&self, name: &str) -> io::Result<u32>;
}

/// The real system calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinuxSys;

fn socklen<T>() -> io::Result<libc::socklen_t> {
    libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn setsockopt_raw<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = socklen::<T>()?;
    // SAFETY: `value` is a live reference to `len` readable bytes; the
    // kernel only reads them during the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            name,
            (value as *const T).cast(),
            len,
        )
    })?;
    Ok(())
}

/// `getsockopt(SOL_XDP, name)` into a zeroed `T`. `T` must be plain old
/// data (every bit pattern valid): only the uapi structs above are used.
fn getsockopt_raw<T: Default>(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<T> {
    let mut value = T::default();
    let mut len = socklen::<T>()?;
    // SAFETY: `value` is a live, exclusively borrowed `T` of `len` bytes
    // that the kernel writes at most `len` bytes of during the call; every
    // `T` used here is a repr(C) struct of integers, valid for any bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

fn wake(fd: BorrowedFd<'_>, tx: bool) -> io::Result<()> {
    // SAFETY: a zero-length send/receive with null buffers: the kernel
    // touches no user memory; MSG_DONTWAIT keeps the call from blocking.
    let ret = unsafe {
        if tx {
            libc::sendto(
                fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        } else {
            libc::recvfrom(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        }
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Sys for LinuxSys {
    type Map = MmapRegion;

    fn xdp_socket(&self) -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2) call with constant arguments.
        let fd = cvt(unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `fd` was just returned by socket(2) and is owned by no
        // one else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn map_umem(&self, len: usize) -> io::Result<MmapRegion> {
        MmapRegion::map(-1, len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, 0)
    }

    fn register_umem(&self, fd: BorrowedFd<'_>, reg: &XdpUmemReg) -> io::Result<()> {
        setsockopt_raw(fd, XDP_UMEM_REG, reg)
    }

    fn set_ring_size(&self, fd: BorrowedFd<'_>, name: libc::c_int, entries: u32) -> io::Result<()> {
        setsockopt_raw(fd, name, &entries)
    }

    fn mmap_offsets(&self, fd: BorrowedFd<'_>) -> io::Result<XdpMmapOffsets> {
        getsockopt_raw(fd, XDP_MMAP_OFFSETS)
    }

    fn map_ring(&self, fd: BorrowedFd<'_>, pgoff: i64, len: usize) -> io::Result<MmapRegion> {
        MmapRegion::map(
            fd.as_raw_fd(),
            len,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            pgoff,
        )
    }

    fn bind(&self, fd: BorrowedFd<'_>, addr: &SockaddrXdp) -> io::Result<()> {
        let len = socklen::<SockaddrXdp>()?;
        // SAFETY: `addr` is a live sockaddr_xdp of `len` bytes that the
        // kernel only reads during the call.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), (addr as *const SockaddrXdp).cast(), len) })?;
        Ok(())
    }

    fn zero_copy(&self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let flags: u32 = getsockopt_raw(fd, XDP_OPTIONS)?;
        Ok(flags & XDP_OPTIONS_ZEROCOPY != 0)
    }

    fn kick_tx(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        wake(fd, true)
    }

    fn wake_rx(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        wake(fd, false)
    }

    fn statistics(&self, fd: BorrowedFd<'_>) -> io::Result<XdpStatistics> {
        getsockopt_raw(fd, XDP_STATISTICS)
    }

    fn if_index(&self, name: &str) -> io::Result<u32> {
        crate::io::af_packet::interface_index(name)
    }
}
