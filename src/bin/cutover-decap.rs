//! cutover-decap: a user-space IP-in-IP decapsulator for test backends.
//!
//! The kernels the end-to-end tests run on have no `ipip`, `sit`,
//! `ip6_tunnel` or `fou` modules, so a backend cannot terminate cutover's
//! `ipip` forwarding in the kernel. This program does it instead, inside
//! the backend's network namespace:
//!
//! * four raw sockets receive the outer packets addressed to this host:
//!   AF_INET with protocol 4 (4-in-4) and 41 (6-in-4), AF_INET6 with next
//!   header 4 (4-in-6) and 41 (6-in-6). An AF_INET raw socket delivers the
//!   outer IPv4 header with the payload, an AF_INET6 one only the payload;
//! * each outer packet is checked (outer header length, inner version
//!   matching protocol 4/41, inner length within the packet) and the inner
//!   packet, byte for byte (trailing padding cut), is written to a TUN
//!   device (`IFF_TUN | IFF_NO_PI`), so the backend's kernel receives it as
//!   if from the wire. The reply goes straight back to the client (direct
//!   server return).
//!
//! On SIGTERM, SIGINT or after `--duration` it prints
//! `decap: N packets, M errors` to stderr and exits 0. It exits 1 if the
//! setup fails (no root, no TUN support).
//!
//! ```text
//! ip netns exec t-b1 cutover-decap --tun tun0 --duration 60
//! ```
#![allow(unsafe_code)] // raw sockets, TUN ioctl, poll, signal handlers

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "cutover-decap",
    about = "User-space IP-in-IP decapsulator (4-in-4, 6-in-4, 4-in-6, 6-in-6) into a TUN device"
)]
struct Args {
    /// Name of the TUN device to create (at most 15 bytes).
    #[arg(long, default_value = "tun0")]
    tun: String,
    /// Exit after this many seconds (default: run until SIGTERM/SIGINT).
    #[arg(long)]
    duration: Option<u64>,
    /// Print a line to stderr for each of the first 20 rejected packets.
    #[arg(short, long)]
    verbose: bool,
}

/// IP protocol number of an IPv4 packet inside another IP packet.
const PROTO_IPIP: u8 = 4;
/// IP protocol number of an IPv6 packet inside another IP packet.
const PROTO_IPV6: u8 = 41;
/// Receive buffer: the largest IP packet plus one, to see truncation.
const BUF_LEN: usize = 65536;
/// Packets read from one socket before the others get their turn.
const BURST: usize = 64;
/// poll() timeout, which bounds the reaction to a signal or the deadline.
const POLL_MS: libc::c_int = 200;
/// How many rejected packets `--verbose` reports.
const VERBOSE_LIMIT: u64 = 20;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Why an outer packet was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    /// Shorter than an IPv4 header, or not version 4.
    OuterHeader,
    /// The outer IPv4 header length or total length does not fit.
    OuterLength,
    /// The outer protocol is neither 4 nor 41.
    OuterProtocol,
    /// The inner packet is shorter than its header.
    InnerShort,
    /// The inner version does not match the outer protocol.
    InnerVersion,
    /// The inner header length or total length does not fit.
    InnerLength,
    /// The packet did not fit the receive buffer.
    Truncated,
}

/// The inner packet of an outer IPv4 packet (as an AF_INET raw socket
/// delivers it: outer header included).
fn decap_outer_v4(pkt: &[u8]) -> Result<&[u8], Reject> {
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return Err(Reject::OuterHeader);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    // The kernel delivers the total length as the packet's, but do not
    // rely on it: cut to the smaller of the two.
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if ihl < 20 || ihl > pkt.len() || total < ihl {
        return Err(Reject::OuterLength);
    }
    let end = total.min(pkt.len());
    inner_packet(pkt[9], &pkt[ihl..end])
}

/// Checks the inner packet carried with protocol `proto` and returns it
/// without trailing padding.
fn inner_packet(proto: u8, inner: &[u8]) -> Result<&[u8], Reject> {
    match proto {
        PROTO_IPIP => {
            if inner.len() < 20 {
                return Err(Reject::InnerShort);
            }
            if inner[0] >> 4 != 4 {
                return Err(Reject::InnerVersion);
            }
            let ihl = usize::from(inner[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
            if ihl < 20 || total < ihl || total > inner.len() {
                return Err(Reject::InnerLength);
            }
            Ok(&inner[..total])
        }
        PROTO_IPV6 => {
            if inner.len() < 40 {
                return Err(Reject::InnerShort);
            }
            if inner[0] >> 4 != 6 {
                return Err(Reject::InnerVersion);
            }
            // A payload length of 0 would be a jumbogram (hop-by-hop
            // option); those cannot travel inside a 64 KiB outer packet.
            let payload = usize::from(u16::from_be_bytes([inner[4], inner[5]]));
            let total = 40 + payload;
            if payload == 0 && inner[6] == 0 && inner.len() > 40 {
                return Err(Reject::InnerLength);
            }
            if total > inner.len() {
                return Err(Reject::InnerLength);
            }
            Ok(&inner[..total])
        }
        _ => Err(Reject::OuterProtocol),
    }
}

/// One of the four receiving sockets.
struct RawSock {
    fd: OwnedFd,
    /// AF_INET (outer header delivered) or AF_INET6 (payload only).
    v4: bool,
    /// The protocol it was opened for: 4 or 41.
    proto: u8,
}

impl RawSock {
    fn open(v4: bool, proto: u8) -> io::Result<RawSock> {
        let family = if v4 { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: socket(2) takes plain integers; the result is checked.
        let fd = unsafe {
            libc::socket(
                family,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            let fam = if v4 { "AF_INET" } else { "AF_INET6" };
            return Err(io::Error::new(
                e.kind(),
                format!("raw socket {fam} protocol {proto}: {e}"),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A burst of SYNs from a load test should not overflow the default.
        let size: libc::c_int = 4 << 20;
        // SAFETY: the option value is a live c_int of the length given.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                std::ptr::from_ref(&size).cast(),
                socklen_of::<libc::c_int>(),
            )
        };
        Ok(RawSock { fd, v4, proto })
    }

    /// Receives one packet: `Ok(None)` when none is waiting, `Ok(Some(n))`
    /// with its real length (larger than `buf` when truncated).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
        // duration of the call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        match usize::try_from(n) {
            Ok(n) => Ok(Some(n)),
            Err(_) => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }

    /// The inner packet of a received packet.
    fn decap<'a>(&self, pkt: &'a [u8]) -> Result<&'a [u8], Reject> {
        if self.v4 {
            let inner = decap_outer_v4(pkt)?;
            // The socket only gets its protocol, but check anyway.
            if pkt[9] != self.proto {
                return Err(Reject::OuterProtocol);
            }
            Ok(inner)
        } else {
            inner_packet(self.proto, pkt)
        }
    }

    fn name(&self) -> String {
        let outer = if self.v4 { "ipv4" } else { "ipv6" };
        let inner = if self.proto == PROTO_IPIP {
            "ipv4"
        } else {
            "ipv6"
        };
        format!("{inner}-in-{outer}")
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// Opens `/dev/net/tun` (creating the node if missing) and attaches a TUN
/// device named `name` without packet information.
fn open_tun(name: &str) -> io::Result<File> {
    check_tun_name(name)?;
    let path = Path::new("/dev/net/tun");
    if !path.exists() {
        std::fs::create_dir_all("/dev/net")?;
        let cpath = CString::new("/dev/net/tun").map_err(io::Error::other)?;
        // SAFETY: `cpath` is a valid NUL-terminated path for the call.
        let ret = unsafe {
            libc::mknod(
                cpath.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(10, 200),
            )
        };
        if ret != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mknod /dev/net/tun c 10 200: {e}"),
            ));
        }
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = libc::c_char::from_ne_bytes([s]);
    }
    let flags = libc::IFF_TUN | libc::IFF_NO_PI;
    ifr.ifr_ifru.ifru_flags = libc::c_short::try_from(flags).unwrap_or(0);
    // SAFETY: `ifr` is a live, NUL-terminated ifreq that the kernel reads
    // and writes during the call only.
    let ret = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if ret != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
    }
    Ok(tun)
}

/// A valid interface name: 1-15 bytes, no '/', whitespace or NUL.
fn check_tun_name(name: &str) -> io::Result<()> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name.contains(['/', '\0'])
        || name.contains(char::is_whitespace)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TUN name {name:?}: 1-15 bytes, no '/', whitespace or NUL"),
        ));
    }
    Ok(())
}

/// Writes a sysctl under /proc/sys (dotted key).
fn sysctl(key: &str, val: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, val).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// Lets the kernel accept the decapsulated packets on `tun` and brings it
/// up.
fn configure_tun(tun: &str) -> io::Result<()> {
    // The inner source (the client) is routed via eth0, not via the TUN:
    // reverse-path filtering would drop every packet.
    sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    sysctl(&format!("net.ipv4.conf.{tun}.rp_filter"), "0")?;
    // IPv6 on the TUN: enabled, no DAD to wait for (no address is needed
    // to receive, but the link-local one must not hold the link).
    let _ = sysctl(&format!("net.ipv6.conf.{tun}.disable_ipv6"), "0");
    let _ = sysctl(&format!("net.ipv6.conf.{tun}.accept_dad"), "0");
    let out = Command::new("ip")
        .args(["link", "set", tun, "up"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("ip link set {tun} up: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip link set {tun} up: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn install_signal_handlers() -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction is plain old data; all-zero is a valid value.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // No SA_RESTART: poll() returns EINTR at once.
        sa.sa_flags = 0;
        // SAFETY: `sa` is initialized; the handler only stores to an
        // atomic, which is async-signal-safe.
        let ret = unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Counters {
    packets: u64,
    errors: u64,
}

impl Counters {
    fn reject(&mut self, verbose: bool, what: &str) {
        self.errors += 1;
        if verbose && self.errors <= VERBOSE_LIMIT {
            eprintln!("decap: rejected: {what}");
        }
    }
}

fn run(args: &Args) -> io::Result<Counters> {
    check_tun_name(&args.tun)?;
    install_signal_handlers()?;
    // Sockets first: once the TUN is up (what a caller waits for), packets
    // are already being received.
    let socks = [
        RawSock::open(true, PROTO_IPIP)?,
        RawSock::open(true, PROTO_IPV6)?,
        RawSock::open(false, PROTO_IPIP)?,
        RawSock::open(false, PROTO_IPV6)?,
    ];
    let mut tun = open_tun(&args.tun)?;
    configure_tun(&args.tun)?;
    eprintln!(
        "decap: {} up, receiving 4-in-4, 6-in-4, 4-in-6, 6-in-6",
        args.tun
    );

    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut buf = vec![0u8; BUF_LEN];
    let mut counters = Counters::default();
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let nfds = libc::nfds_t::try_from(pfds.len()).unwrap_or(0);
    while !STOP.load(Ordering::SeqCst) {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                libc::c_int::try_from(left.as_millis())
                    .unwrap_or(POLL_MS)
                    .clamp(1, POLL_MS)
            }
            None => POLL_MS,
        };
        // SAFETY: `pfds` is a live array of `nfds` pollfd entries.
        let ready = unsafe { libc::poll(pfds.as_mut_ptr(), nfds, timeout) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (sock, pfd) in socks.iter().zip(pfds.iter_mut()) {
            if pfd.revents == 0 {
                continue;
            }
            pfd.revents = 0;
            for _ in 0..BURST {
                let n = match sock.recv(&mut buf) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => {
                        counters.reject(args.verbose, &format!("{}: recv: {e}", sock.name()));
                        break;
                    }
                };
                if n > buf.len() {
                    counters.reject(
                        args.verbose,
                        &format!("{}: {:?} ({n} bytes)", sock.name(), Reject::Truncated),
                    );
                    continue;
                }
                match sock.decap(&buf[..n]) {
                    Ok(inner) => match tun.write(inner) {
                        Ok(w) if w == inner.len() => counters.packets += 1,
                        Ok(w) => counters.reject(
                            args.verbose,
                            &format!("{}: short TUN write {w}/{}", sock.name(), inner.len()),
                        ),
                        Err(e) => counters
                            .reject(args.verbose, &format!("{}: TUN write: {e}", sock.name())),
                    },
                    Err(why) => counters.reject(
                        args.verbose,
                        &format!("{}: {why:?} ({n} bytes)", sock.name()),
                    ),
                }
            }
        }
    }
    Ok(counters)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(c) => {
            eprintln!("decap: {} packets, {} errors", c.packets, c.errors);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cutover-decap: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_header(proto: u8, payload: usize) -> Vec<u8> {
        let total = u16::try_from(20 + payload).unwrap_or(u16::MAX);
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        h
    }

    fn v6_header(next: u8, payload: usize) -> Vec<u8> {
        let len = u16::try_from(payload).unwrap_or(u16::MAX);
        let mut h = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        h[4..6].copy_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[0xfd; 32]);
        h
    }

    #[test]
    fn four_in_four_strips_outer_and_padding() {
        let mut inner = v4_header(6, 8);
        inner.extend_from_slice(&[1; 8]);
        let mut outer = v4_header(4, inner.len());
        outer.extend_from_slice(&inner);
        outer.extend_from_slice(&[0; 6]); // Ethernet-style padding
        assert_eq!(decap_outer_v4(&outer), Ok(&inner[..]));
    }

    #[test]
    fn six_in_four_and_six_in_six() {
        let mut inner = v6_header(17, 4);
        inner.extend_from_slice(&[2; 4]);
        let mut outer = v4_header(41, inner.len());
        outer.extend_from_slice(&inner);
        assert_eq!(decap_outer_v4(&outer), Ok(&inner[..]));
        assert_eq!(inner_packet(41, &inner), Ok(&inner[..]));
    }

    #[test]
    fn rejects_mismatch_and_truncation() {
        let v6 = v6_header(17, 0);
        assert_eq!(inner_packet(4, &v6), Err(Reject::InnerVersion));
        let v4 = v4_header(17, 0);
        assert_eq!(
            inner_packet(41, &[v4.clone(), vec![0; 20]].concat()),
            Err(Reject::InnerVersion)
        );
        assert_eq!(inner_packet(4, &v4[..10]), Err(Reject::InnerShort));
        let mut long = v4_header(17, 100);
        long.extend_from_slice(&[0; 10]);
        assert_eq!(inner_packet(4, &long), Err(Reject::InnerLength));
        let mut bad_ihl = v4_header(17, 0);
        bad_ihl[0] = 0x43;
        assert_eq!(inner_packet(4, &bad_ihl), Err(Reject::InnerLength));
        let long6 = v6_header(17, 500);
        assert_eq!(inner_packet(41, &long6), Err(Reject::InnerLength));
        assert_eq!(inner_packet(17, &v4), Err(Reject::OuterProtocol));
        assert_eq!(decap_outer_v4(&[0x45; 5]), Err(Reject::OuterHeader));
        let mut outer = v4_header(4, 0);
        outer[0] = 0x4f;
        assert_eq!(decap_outer_v4(&outer), Err(Reject::OuterLength));
    }

    #[test]
    fn never_panics_on_garbage() {
        // Every length up to 80 with a few byte patterns, both protocols.
        for len in 0..80 {
            for fill in [0u8, 0x45, 0x4f, 0x60, 0xff] {
                let mut p = vec![fill; len];
                if len > 9 {
                    p[9] = 4;
                }
                let _ = decap_outer_v4(&p);
                let _ = inner_packet(4, &p);
                let _ = inner_packet(41, &p);
            }
        }
    }
}
