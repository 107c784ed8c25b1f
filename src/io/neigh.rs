//! The kernel's neighbour table (ARP and NDP caches) over rtnetlink.
//!
//! The control plane needs the MAC address of every backend about once a
//! second. One `RTM_GETNEIGH` dump on a `NETLINK_ROUTE` socket returns both
//! families without spawning a process or parsing text, and it reads the
//! table of the calling thread's network namespace (the socket is created
//! in it). The socket code is a thin libc layer; the message parsing is
//! separate ([`parse_batch`], [`parse_neighbor`]) so it is tested over
//! captured bytes.
//!
//! Netlink messages are in host byte order; every length and offset read
//! from the kernel is checked before use, so a short or corrupt reply is an
//! error or a skipped entry, never a panic.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

// Kernel ABI constants (include/uapi/linux/netlink.h, rtnetlink.h,
// neighbour.h). Spelled out here rather than taken from libc so the parser
// does not depend on which of them a libc release happens to export.
pub(crate) const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x01;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
/// `sizeof(struct ndmsg)`.
const NDMSG_LEN: usize = 12;
/// `sizeof(struct rtattr)` header.
pub(crate) const RTA_HDRLEN: usize = 4;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// The nested-attribute flags of `rta_type`, masked off before comparing.
pub(crate) const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;

/// Neighbour states (`NUD_*`, a bit set in `ndm_state`).
pub mod nud {
    /// Resolution in progress, no address yet.
    pub const INCOMPLETE: u16 = 0x01;
    /// Confirmed recently.
    pub const REACHABLE: u16 = 0x02;
    /// Known but not confirmed recently; still used for sending.
    pub const STALE: u16 = 0x04;
    /// Waiting before probing; still used for sending.
    pub const DELAY: u16 = 0x08;
    /// Being re-confirmed; still used for sending.
    pub const PROBE: u16 = 0x10;
    /// Resolution failed.
    pub const FAILED: u16 = 0x20;
    /// A device without link-layer resolution.
    pub const NOARP: u16 = 0x40;
    /// Configured statically.
    pub const PERMANENT: u16 = 0x80;
    /// The states whose link-layer address the kernel itself sends to.
    pub const USABLE: u16 = REACHABLE | STALE | DELAY | PROBE | PERMANENT | NOARP;
}

/// How long one receive may wait for the kernel before the dump fails.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);
/// The most datagrams one dump may take; a table this big (tens of
/// thousands of entries per read) means something is wrong.
const MAX_READS: usize = 4096;
/// Receive buffer: the kernel fills dump datagrams up to about a page (or
/// 32 KiB); larger is harmless.
const RECV_BUF: usize = 64 * 1024;

/// One entry of the neighbour table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    /// `ndm_family`: `AF_INET` (2) or `AF_INET6` (10).
    pub family: u8,
    /// The interface the entry belongs to.
    pub ifindex: i32,
    /// `NUD_*` bits (see [`nud`]).
    pub state: u16,
    /// `NTF_*` flags.
    pub flags: u8,
    /// `ndm_type` (a route type, `RTN_UNICAST` for ordinary entries).
    pub kind: u8,
    /// `NDA_DST`: the protocol address.
    pub addr: IpAddr,
    /// `NDA_LLADDR`: the link-layer address, absent for INCOMPLETE and
    /// FAILED entries.
    pub lladdr: Option<Vec<u8>>,
}

impl Neighbor {
    /// The MAC to send to, when the kernel would send to it too: a usable
    /// state and a 6-byte, non-zero link-layer address.
    pub fn usable_mac(&self) -> Option<[u8; 6]> {
        if self.state & nud::USABLE == 0 || self.state & (nud::FAILED | nud::INCOMPLETE) != 0 {
            return None;
        }
        let mac: [u8; 6] = self.lladdr.as_deref()?.try_into().ok()?;
        (mac != [0; 6]).then_some(mac)
    }
}

/// What a batch of messages (one datagram) said about the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` was seen: the dump is complete.
    Done,
}

/// The usable neighbours of the calling thread's network namespace, both
/// families: the IP address and the MAC of every entry the kernel would
/// send to (see [`Neighbor::usable_mac`]). When an address is on several
/// interfaces, the entry dumped last wins.
pub fn dump() -> io::Result<HashMap<IpAddr, [u8; 6]>> {
    // Any sequence number works; a per-process one keeps stray replies of
    // an earlier socket apart in `strace` output.
    let seq = std::process::id();
    let mut out = HashMap::new();
    dump_messages(&dump_request(seq), seq, &mut |kind, payload| {
        if kind == RTM_NEWNEIGH {
            if let Some(n) = parse_neighbor(payload) {
                if let Some(mac) = n.usable_mac() {
                    out.insert(n.addr, mac);
                }
            }
        }
    })?;
    Ok(out)
}

/// Sends the dump request `request` (sequence `seq`) on a new
/// `NETLINK_ROUTE` socket and passes every message of the reply, as
/// (`nlmsg_type`, payload), to `each` until `NLMSG_DONE`. Shared by the
/// neighbour and the address dumps ([`crate::io::ifaddr`]).
pub(crate) fn dump_messages(
    request: &[u8],
    seq: u32,
    each: &mut dyn FnMut(u16, &[u8]),
) -> io::Result<()> {
    converse(request, seq, each, MAX_READS)
}

/// Sends the one-answer request `request` (sequence `seq`, not a dump) on
/// a new `NETLINK_ROUTE` socket and passes the messages of the reply's
/// datagram to `each`; the kernel's refusal (`NLMSG_ERROR`) is the error.
/// Shared with the route lookup ([`crate::io::route`]).
pub(crate) fn request_one(
    request: &[u8],
    seq: u32,
    each: &mut dyn FnMut(u16, &[u8]),
) -> io::Result<()> {
    converse(request, seq, each, 1)
}

/// Sends `request` and walks up to `reads` datagrams of the reply (see
/// [`walk_batch`]); a dump must end with `NLMSG_DONE` within them, a
/// one-answer request (`reads` 1) needs none.
fn converse(
    request: &[u8],
    seq: u32,
    each: &mut dyn FnMut(u16, &[u8]),
    reads: usize,
) -> io::Result<()> {
    let sock = NetlinkSocket::open()?;
    sock.send(request)?;
    let mut buf = vec![0u8; RECV_BUF];
    for _ in 0..reads {
        let n = sock.recv(&mut buf)?;
        let data = buf.get(..n).unwrap_or_default();
        if walk_batch(data, seq, each)? == Progress::Done || reads == 1 {
            return Ok(());
        }
    }
    Err(io::Error::other(format!(
        "netlink dump: no NLMSG_DONE after {reads} reads"
    )))
}

/// The `RTM_GETNEIGH` dump request: a netlink header and a zeroed `ndmsg`
/// (family `AF_UNSPEC`, so both families are dumped).
pub fn dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + NDMSG_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + NDMSG_LEN];
    // nlmsg_pid 0 and the ndmsg stay zero.
    write_dump_header(&mut req, RTM_GETNEIGH, seq);
    req
}

/// Writes the netlink header of a dump request of message type `kind` at
/// the front of `req`, whose whole length (header and zeroed body) is the
/// message length. `req` is at least `NLMSG_HDRLEN` long.
pub(crate) fn write_dump_header(req: &mut [u8], kind: u16, seq: u32) {
    write_header(req, kind, NLM_F_REQUEST | NLM_F_DUMP, seq);
}

/// Writes the netlink header of a request of message type `kind` with
/// `flags` at the front of `req`, whose whole length is the message
/// length. `req` is at least `NLMSG_HDRLEN` long.
pub(crate) fn write_header(req: &mut [u8], kind: u16, flags: u16, seq: u32) {
    // A request is a few dozen bytes: the length always fits.
    let len = u32::try_from(req.len()).unwrap_or(u32::MAX);
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&kind.to_ne_bytes());
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
}

/// Parses one datagram of a dump reply: every `RTM_NEWNEIGH` with sequence
/// number `seq` is parsed and passed to `each`; messages of other
/// sequences (none are expected) are ignored. Returns
/// [`Progress::Done`] at `NLMSG_DONE`, the kernel's error at `NLMSG_ERROR`
/// (or a negative `NLMSG_DONE` status), and an error for a truncated
/// message.
pub fn parse_batch(data: &[u8], seq: u32, each: &mut dyn FnMut(Neighbor)) -> io::Result<Progress> {
    walk_batch(data, seq, &mut |kind, payload| {
        if kind == RTM_NEWNEIGH {
            if let Some(n) = parse_neighbor(payload) {
                each(n);
            }
        }
    })
}

/// The message walk under [`parse_batch`], for any dump: every message of
/// sequence `seq` other than `NLMSG_DONE`, `NLMSG_ERROR` and `NLMSG_NOOP`
/// is passed to `each` as (`nlmsg_type`, payload).
pub(crate) fn walk_batch(
    mut data: &[u8],
    seq: u32,
    each: &mut dyn FnMut(u16, &[u8]),
) -> io::Result<Progress> {
    while data.len() >= NLMSG_HDRLEN {
        let len = read_u32(data, 0).unwrap_or(0) as usize;
        let kind = read_u16(data, 4).unwrap_or(0);
        let msg_seq = read_u32(data, 8).unwrap_or(0);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(invalid(format!(
                "netlink message length {len} of {} bytes",
                data.len()
            )));
        }
        let payload = &data[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => {
                    // Since Linux 4.x a dump that failed midway reports the
                    // error here as a negative int.
                    return match read_i32(payload, 0) {
                        Some(err) if err < 0 => Err(io::Error::from_raw_os_error(-err)),
                        _ => Ok(Progress::Done),
                    };
                }
                NLMSG_ERROR => {
                    let err = read_i32(payload, 0)
                        .ok_or_else(|| invalid("short NLMSG_ERROR".to_owned()))?;
                    // An error code of 0 is an acknowledgement, which a
                    // dump does not ask for; treat it as the end.
                    return if err < 0 {
                        Err(io::Error::from_raw_os_error(-err))
                    } else {
                        Ok(Progress::Done)
                    };
                }
                NLMSG_NOOP => {}
                _ => each(kind, payload),
            }
        }
        data = data.get(align4(len)..).unwrap_or_default();
    }
    Ok(Progress::More)
}

/// Parses the payload of one `RTM_NEWNEIGH` (an `ndmsg` and its
/// attributes). `None` for entries that are not IPv4/IPv6 neighbours (an
/// `AF_UNSPEC` dump also returns bridge FDB entries) or lack a destination
/// of the family's length.
pub fn parse_neighbor(payload: &[u8]) -> Option<Neighbor> {
    // struct ndmsg { u8 family, pad1; u16 pad2; s32 ifindex; u16 state;
    //                u8 flags, type; }
    let family = *payload.first()?;
    let ifindex = read_i32(payload, 4)?;
    let state = read_u16(payload, 8)?;
    let flags = *payload.get(10)?;
    let kind = *payload.get(11)?;
    let mut dst = None;
    let mut lladdr = None;
    walk_attrs(payload.get(NDMSG_LEN..)?, &mut |ty, value| match ty {
        NDA_DST => dst = Some(value),
        NDA_LLADDR => lladdr = Some(value.to_vec()),
        _ => {}
    })?;
    let addr = ip_of(family, dst?)?;
    Some(Neighbor {
        family,
        ifindex,
        state,
        flags,
        kind,
        addr,
        lladdr,
    })
}

/// Calls `each(type, value)` for every route attribute (`struct rtattr`)
/// in `attrs`, in order; `None` as soon as one is malformed (a length
/// shorter than its header or beyond the buffer).
pub(crate) fn walk_attrs<'a>(
    mut attrs: &'a [u8],
    each: &mut dyn FnMut(u16, &'a [u8]),
) -> Option<()> {
    while attrs.len() >= RTA_HDRLEN {
        let len = usize::from(read_u16(attrs, 0)?);
        let ty = read_u16(attrs, 2)? & NLA_TYPE_MASK;
        if len < RTA_HDRLEN || len > attrs.len() {
            return None;
        }
        each(ty, &attrs[RTA_HDRLEN..len]);
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    Some(())
}

/// An address attribute of `family`: `None` for another family or a
/// value of the wrong length.
pub(crate) fn ip_of(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

/// `NLMSG_ALIGN` / `RTA_ALIGN`: messages and attributes start on 4 bytes.
pub(crate) fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

pub(crate) fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A `NETLINK_ROUTE` socket with a receive timeout, closed on drop.
struct NetlinkSocket {
    fd: OwnedFd,
}

impl NetlinkSocket {
    fn open() -> io::Result<NetlinkSocket> {
        // SAFETY: socket(2) takes no pointers; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just returned by socket(2) and
        // owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(RECV_TIMEOUT.as_secs()).unwrap_or(1),
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval that outlives the call, and the
        // length passed is its size.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                socklen_of::<libc::timeval>(),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NetlinkSocket { fd })
    }

    /// Sends `msg` to the kernel (netlink port 0).
    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
        kernel.nl_family = libc::sa_family_t::try_from(libc::AF_NETLINK).unwrap_or(16);
        // SAFETY: `msg` and `kernel` are valid for the lengths passed and
        // outlive the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                std::ptr::from_ref(&kernel).cast(),
                socklen_of::<libc::sockaddr_nl>(),
            )
        };
        match usize::try_from(n) {
            Ok(sent) if sent == msg.len() => Ok(()),
            Ok(_) => Err(io::Error::other("short netlink send")),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }

    /// Receives one datagram into `buf`; a datagram larger than `buf` or
    /// the receive timeout is an error. Retries on EINTR.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of its length for the call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            match usize::try_from(n) {
                Ok(len) if len > buf.len() => {
                    return Err(invalid(format!(
                        "netlink datagram of {len} bytes truncated to {}",
                        buf.len()
                    )))
                }
                Ok(len) => return Ok(len),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    match err.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "neighbour dump: no reply from the kernel",
                            ))
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
    }
}

/// `sizeof(T)` as a `socklen_t` (the sockaddr and option types here are a
/// few bytes).
fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_neighbour_dump() {
        let req = dump_request(7);
        assert_eq!(read_u32(&req, 0), Some(28));
        assert_eq!(read_u16(&req, 4), Some(RTM_GETNEIGH));
        assert_eq!(read_u16(&req, 6), Some(0x301));
        assert_eq!(read_u32(&req, 8), Some(7));
        assert!(req[16..].iter().all(|b| *b == 0));
    }
    /// One datagram of a real `RTM_GETNEIGH` dump (x86_64, Linux 6.x),
    /// captured in a namespace with a veth pair after `ip neigh add` of a
    /// permanent IPv4 and IPv6 entry, an INCOMPLETE and a FAILED one; the
    /// kernel added the two NOARP ff02::16 entries itself. Sequence 7.
    #[cfg(target_endian = "little")]
    const CAPTURE: &[u8] = &[
        // 10.98.0.7 dev veth0 FAILED (no NDA_LLADDR)
        0x40, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0xf0, 0x3a, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x01, 0x08, 0x00,
        0x01, 0x00, 0x0a, 0x62, 0x00, 0x07, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14,
        0x00, 0x03, 0x00, 0x85, 0x17, 0x00, 0x00, 0x15, 0x00, 0x00, 0x00, 0x15, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        // 10.98.0.5 dev veth0 lladdr 02:11:22:33:44:55 PERMANENT
        0x4c, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0xf0, 0x3a, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x01, 0x08, 0x00,
        0x01, 0x00, 0x0a, 0x62, 0x00, 0x05, 0x0a, 0x00, 0x02, 0x00, 0x02, 0x11, 0x22, 0x33, 0x44,
        0x55, 0x00, 0x00, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00,
        0x16, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, // 10.98.0.6 dev veth0 INCOMPLETE
        0x40, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0xf0, 0x3a, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x08, 0x00,
        0x01, 0x00, 0x0a, 0x62, 0x00, 0x06, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14,
        0x00, 0x03, 0x00, 0x86, 0x17, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, // ff02::16 dev veth0 lladdr 33:33:00:00:00:16 NOARP
        0x58, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0xf0, 0x3a, 0x00,
        0x00, 0x0a, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x05, 0x14, 0x00,
        0x01, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x16, 0x0a, 0x00, 0x02, 0x00, 0x33, 0x33, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00,
        0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00, 0x86, 0x17, 0x00,
        0x00, 0x16, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // ff02::16 dev veth1 lladdr 33:33:00:00:00:16 NOARP
        0x58, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0xf0, 0x3a, 0x00,
        0x00, 0x0a, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x05, 0x14, 0x00,
        0x01, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x16, 0x0a, 0x00, 0x02, 0x00, 0x33, 0x33, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00,
        0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00, 0x86, 0x17, 0x00,
        0x00, 0x16, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // fd98:1::5 dev veth0 lladdr 02:11:22:33:44:66 PERMANENT
        0x58, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0xf0, 0x3a, 0x00,
        0x00, 0x0a, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x01, 0x14, 0x00,
        0x01, 0x00, 0xfd, 0x98, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x05, 0x0a, 0x00, 0x02, 0x00, 0x02, 0x11, 0x22, 0x33, 0x44, 0x66, 0x00, 0x00,
        0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x03, 0x00, 0x16, 0x00, 0x00,
        0x00, 0x16, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // NLMSG_DONE, status 0
        0x14, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0xf0, 0x3a, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[cfg(target_endian = "little")]
    fn parse_all(data: &[u8], seq: u32) -> (io::Result<Progress>, Vec<Neighbor>) {
        let mut seen = Vec::new();
        let r = parse_batch(data, seq, &mut |n| seen.push(n));
        (r, seen)
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn test_deconstruct() {
        let (r, seen) = parse_all(CAPTURE, 7);
        assert_eq!(r.unwrap(), Progress::Done);
        assert_eq!(seen.len(), 6);
        let mac55 = vec![0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        assert_eq!(
            seen[1],
            Neighbor {
                family: AF_INET,
                ifindex: 3,
                state: nud::PERMANENT,
                flags: 0,
                kind: 1, // RTN_UNICAST
                addr: "10.98.0.5".parse().unwrap(),
                lladdr: Some(mac55),
            }
        );
        assert_eq!(seen[0].addr, "10.98.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            (seen[0].state, seen[0].lladdr.as_ref()),
            (nud::FAILED, None)
        );
        assert_eq!(
            (seen[2].state, seen[2].lladdr.as_ref()),
            (nud::INCOMPLETE, None)
        );
        assert_eq!(
            (seen[3].family, seen[3].state, seen[3].kind),
            (AF_INET6, nud::NOARP, 5)
        );
        assert_eq!(seen[4].ifindex, 2);
        assert_eq!(seen[5].addr, "fd98:1::5".parse::<IpAddr>().unwrap());

        let usable: HashMap<IpAddr, [u8; 6]> = seen
            .iter()
            .filter_map(|n| Some((n.addr, n.usable_mac()?)))
            .collect();
        let expect: HashMap<IpAddr, [u8; 6]> = [
            ("10.98.0.5", [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]),
            ("fd98:1::5", [0x02, 0x11, 0x22, 0x33, 0x44, 0x66]),
            ("ff02::16", [0x33, 0x33, 0, 0, 0, 0x16]),
        ]
        .into_iter()
        .map(|(ip, mac)| (ip.parse().unwrap(), mac))
        .collect();
        assert_eq!(usable, expect);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn without_done_more_is_expected() {
        // The first three messages end exactly at byte 64 + 76 + 64.
        let (r, seen) = parse_all(&CAPTURE[..204], 7);
        assert_eq!(r.unwrap(), Progress::More);
        assert_eq!(seen.len(), 3);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn truncated_message_is_an_error() {
        let (r, seen) = parse_all(&CAPTURE[..100], 7);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(seen.len(), 1);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn other_sequences_are_ignored() {
        let (r, seen) = parse_all(CAPTURE, 8);
        assert_eq!(r.unwrap(), Progress::More);
        assert!(seen.is_empty());
    }

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(NLMSG_HDRLEN + payload.len()).unwrap();
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(RTA_HDRLEN + value.len()).unwrap();
        let mut a = Vec::new();
        a.extend_from_slice(&len.to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn ndmsg(family: u8, state: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![family, 0, 0, 0];
        p.extend_from_slice(&4i32.to_ne_bytes());
        p.extend_from_slice(&state.to_ne_bytes());
        p.extend_from_slice(&[0, 1]);
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }

    #[test]
    fn kernel_errors_are_returned() {
        let mut err = (-libc::EPERM).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        let r = parse_batch(&message(NLMSG_ERROR, 1, &err), 1, &mut |_| {});
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EPERM));

        let done = (-libc::EINTR).to_ne_bytes();
        let r = parse_batch(&message(NLMSG_DONE, 1, &done), 1, &mut |_| {});
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EINTR));
    }

    #[test]
    fn unusable_entries_have_no_mac() {
        let dst = attr(NDA_DST, &[10, 0, 0, 1]);
        let zero = attr(NDA_LLADDR, &[0; 6]);
        let mac = attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 1]);
        let long = attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 0, 0, 1]);
        let usable = |state: u16, attrs: &[Vec<u8>]| {
            parse_neighbor(&ndmsg(AF_INET, state, attrs)).and_then(|n| n.usable_mac())
        };
        assert_eq!(
            usable(nud::STALE, &[dst.clone(), mac.clone()]),
            Some([2, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            usable(nud::DELAY, &[dst.clone(), mac.clone()]),
            Some([2, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            usable(nud::PROBE, &[dst.clone(), mac.clone()]),
            Some([2, 0, 0, 0, 0, 1])
        );
        assert_eq!(usable(nud::REACHABLE, &[dst.clone(), zero]), None);
        assert_eq!(usable(nud::REACHABLE, &[dst.clone(), long]), None);
        assert_eq!(usable(nud::FAILED, &[dst.clone(), mac.clone()]), None);
        assert_eq!(usable(0, &[dst.clone(), mac.clone()]), None);
        assert_eq!(usable(nud::REACHABLE, std::slice::from_ref(&mac)), None);
        // A bridge FDB entry (AF_BRIDGE) of an AF_UNSPEC dump is skipped.
        assert_eq!(
            parse_neighbor(&ndmsg(7, nud::PERMANENT, std::slice::from_ref(&mac))),
            None
        );
        // An IPv6 entry with a 4-byte destination is malformed.
        assert_eq!(
            parse_neighbor(&ndmsg(AF_INET6, nud::PERMANENT, &[dst, mac])),
            None
        );
        // A truncated attribute ends the entry.
        assert_eq!(
            parse_neighbor(&ndmsg(AF_INET, nud::PERMANENT, &[vec![40, 0, 1, 0]])),
            None
        );
        assert_eq!(parse_neighbor(&[2, 0, 0]), None);
    }
}
