//! The system-call seam of the AF_PACKET driver.
//!
//! Everything the driver asks of the kernel goes through [`Sys`]: open the
//! socket, set its options, bind it, map its rings and kick transmission.
//! [`LinuxSys`] makes the real calls; the tests swap in a fake that hands
//! out heap memory as "rings", so the ring-walking code runs without a
//! kernel (the pattern of aya's `sys/fake.rs`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::io::mmap::cvt;
pub(crate) use crate::io::mmap::{Mapping, MmapRegion};

/// The few system calls the driver needs.
pub(crate) trait Sys {
    /// The memory map of a socket's rings.
    type Map: Mapping;

    /// An AF_PACKET/SOCK_RAW socket that receives nothing yet (protocol 0:
    /// no packet reaches it before `bind`).
    fn packet_socket(&self) -> io::Result<OwnedFd>;
    /// `setsockopt(fd, SOL_PACKET, name, &value)` for an `int` option.
    fn set_packet_int(
        &self,
        fd: BorrowedFd<'_>,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()>;
    /// `setsockopt(fd, SOL_PACKET, name, req)` for `PACKET_RX_RING`/`PACKET_TX_RING`.
    fn set_ring(
        &self,
        fd: BorrowedFd<'_>,
        name: libc::c_int,
        req: &libc::tpacket_req3,
    ) -> io::Result<()>;
    /// Maps `len` bytes of the socket's rings (RX ring first, then TX).
    fn map_rings(&self, fd: BorrowedFd<'_>, len: usize) -> io::Result<Self::Map>;
    /// Binds the socket to interface `ifindex`, all protocols (ETH_P_ALL).
    fn bind_interface(&self, fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()>;
    /// Asks the kernel to send every TX frame marked `TP_STATUS_SEND_REQUEST`,
    /// without waiting.
    fn kick_tx(&self, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// The kernel's RX counters since the last call (`PACKET_STATISTICS`
    /// resets them on read): (packets, drops).
    fn rx_stats(&self, fd: BorrowedFd<'_>) -> io::Result<(u32, u32)>;
    /// The index of interface `name`, in the calling thread's namespace.
    fn if_index(&self, name: &str) -> io::Result<u32>;
}

/// The real system calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinuxSys;

fn setsockopt_raw<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is a live reference to `len` readable bytes; the
    // kernel only reads them during the call.
    cvt(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) })?;
    Ok(())
}

/// `htons(ETH_P_ALL)`, the protocol value of a capture-everything socket.
#[allow(clippy::cast_possible_truncation)] // ETH_P_ALL is 3: exact
fn eth_p_all_be() -> u16 {
    (libc::ETH_P_ALL as u16).to_be()
}

impl Sys for LinuxSys {
    type Map = MmapRegion;

    fn packet_socket(&self) -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2) call with constant arguments.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `fd` was just returned by socket(2) and is owned by no
        // one else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn set_packet_int(
        &self,
        fd: BorrowedFd<'_>,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        setsockopt_raw(fd, libc::SOL_PACKET, name, &value)
    }

    fn set_ring(
        &self,
        fd: BorrowedFd<'_>,
        name: libc::c_int,
        req: &libc::tpacket_req3,
    ) -> io::Result<()> {
        setsockopt_raw(fd, libc::SOL_PACKET, name, req)
    }

    fn map_rings(&self, fd: BorrowedFd<'_>, len: usize) -> io::Result<MmapRegion> {
        MmapRegion::map(fd.as_raw_fd(), len, libc::MAP_SHARED, 0)
    }

    fn bind_interface(&self, fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
        let ifindex = libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::c_ushort::try_from(libc::AF_PACKET)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        sll.sll_protocol = eth_p_all_be();
        sll.sll_ifindex = ifindex;
        let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `sll` is a valid sockaddr_ll of `len` bytes, read by the
        // kernel during the call only.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                len,
            )
        })?;
        Ok(())
    }

    fn kick_tx(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: sendto with no buffer and no address: with a TX ring the
        // kernel sends the frames marked in the ring; nothing is read from
        // user pointers.
        let ret = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn rx_stats(&self, fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
        // SAFETY: tpacket_stats_v3 is plain old data; all-zero is valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tpacket_stats_v3>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `st` is writable for `len` bytes and the kernel writes at
        // most `len` bytes, updating `len`.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        })?;
        Ok((st.tp_packets, st.tp_drops))
    }

    fn if_index(&self, name: &str) -> io::Result<u32> {
        if_index(name)
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    let c = ifname_cstring(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

fn ifname_cstring(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1 to 15 bytes"),
        ));
    }
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} contains a NUL byte"),
        )
    })
}

/// Runs an interface ioctl (`SIOCGIFHWADDR`, `SIOCGIFMTU`) on a throwaway
/// datagram socket of the calling thread's namespace.
fn ifreq_ioctl(name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    let c = ifname_cstring(name)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(c.as_bytes()) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by no one else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifr` is a valid, writable ifreq for the request's duration,
    // which is what both requests used here expect.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut ifr) })?;
    Ok(ifr)
}

/// The hardware address of interface `name` (calling thread's namespace).
pub(crate) fn interface_mac(name: &str) -> io::Result<[u8; 6]> {
    let ifr = ifreq_ioctl(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR fills the `ifru_hwaddr` member of the union.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *dst = src.to_ne_bytes()[0];
    }
    Ok(mac)
}

/// The MTU of interface `name` (calling thread's namespace).
pub(crate) fn interface_mtu(name: &str) -> io::Result<u32> {
    let ifr = ifreq_ioctl(name, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU fills the `ifru_mtu` member of the union.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::other(format!("negative MTU {mtu} on {name}")))
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory stand-in for the kernel: rings are heap memory, options
    //! are recorded, and a kick "sends" every requested TX frame.

    use super::{Mapping, Sys};
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::{BorrowedFd, OwnedFd};
    use std::ptr::NonNull;
    use std::rc::Rc;

    /// Heap memory posing as a ring mapping (8-byte aligned).
    #[derive(Debug)]
    pub(crate) struct HeapMap {
        mem: Box<[u64]>,
    }

    impl Mapping for HeapMap {
        fn as_ptr(&self) -> NonNull<u8> {
            NonNull::from(&self.mem[0]).cast()
        }

        fn len(&self) -> usize {
            self.mem.len() * 8
        }
    }

    /// What the driver asked of the fake kernel.
    #[derive(Debug, Default)]
    pub(crate) struct Log {
        pub(crate) ints: Vec<(libc::c_int, libc::c_int)>,
        pub(crate) rings: Vec<(libc::c_int, libc::tpacket_req3)>,
        pub(crate) bound: Option<u32>,
        pub(crate) mapped: usize,
        pub(crate) kicks: usize,
        /// Base of the mapping, so a test can play the kernel's part.
        pub(crate) base: Option<usize>,
    }

    /// The fake; clones share one log.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct FakeSys {
        pub(crate) log: Rc<RefCell<Log>>,
    }

    impl Sys for FakeSys {
        type Map = HeapMap;

        fn packet_socket(&self) -> io::Result<OwnedFd> {
            // Any real descriptor will do: the fake never uses it.
            Ok(std::fs::File::open("/dev/null")?.into())
        }

        fn set_packet_int(
            &self,
            _fd: BorrowedFd<'_>,
            name: libc::c_int,
            value: libc::c_int,
        ) -> io::Result<()> {
            self.log.borrow_mut().ints.push((name, value));
            Ok(())
        }

        fn set_ring(
            &self,
            _fd: BorrowedFd<'_>,
            name: libc::c_int,
            req: &libc::tpacket_req3,
        ) -> io::Result<()> {
            self.log.borrow_mut().rings.push((name, *req));
            Ok(())
        }

        fn map_rings(&self, _fd: BorrowedFd<'_>, len: usize) -> io::Result<HeapMap> {
            let map = HeapMap {
                mem: vec![0u64; len.div_ceil(8)].into_boxed_slice(),
            };
            let mut log = self.log.borrow_mut();
            log.mapped = len;
            log.base = Some(map.as_ptr().as_ptr() as usize);
            Ok(map)
        }

        fn bind_interface(&self, _fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
            self.log.borrow_mut().bound = Some(ifindex);
            Ok(())
        }

        fn kick_tx(&self, _fd: BorrowedFd<'_>) -> io::Result<()> {
            self.log.borrow_mut().kicks += 1;
            Ok(())
        }

        fn rx_stats(&self, _fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
            Ok((0, 0))
        }

        fn if_index(&self, name: &str) -> io::Result<u32> {
            if name == "fake0" {
                Ok(7)
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        }
    }
}
