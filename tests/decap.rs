//! End to end: cutover's `ipip` forwarding terminated by `cutover-decap`
//! on a backend whose kernel has no tunnel modules.
//!
//! The lb namespace runs a stand-in for the data plane: an AF_PACKET
//! socket on its `eth0` captures the client's packets to the VIPs,
//! wraps each in an outer IPv4 (10.99.0.2 → 10.99.0.11, protocol 4/41) or
//! IPv6 (fd99::2 → fd99::11, next header 4/41) header and sends it to b1's
//! MAC. b1 runs the decapsulator and a kernel TCP server on the VIPs; its
//! replies go straight to the client. Needs root; skipped otherwise.
#![allow(unsafe_code)] // AF_PACKET socket of the lb stand-in

#[path = "common/decap.rs"]
mod decap;
#[path = "common/netns.rs"]
mod netns;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netns::{Node, Topology};

const PORT: u16 = 8080;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// An AF_PACKET socket bound to one interface, opened in a namespace.
struct PacketSock {
    fd: OwnedFd,
}

impl PacketSock {
    /// Opens it on `ifname` inside namespace `ns`; usable from any thread.
    fn open(ns: &str, ifname: &str) -> io::Result<PacketSock> {
        let ifname = ifname.to_owned();
        netns::in_netns(ns, move || -> io::Result<PacketSock> {
            let all = u16::try_from(libc::ETH_P_ALL).unwrap_or(3).to_be();
            // SAFETY: socket(2) takes plain integers; the result is checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::c_int::from(all),
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let cname = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
            // SAFETY: `cname` is a valid NUL-terminated string for the call.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
            sll.sll_protocol = all;
            sll.sll_ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
            // SAFETY: `sll` is a live sockaddr_ll of the length given.
            let ret = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&sll).cast(),
                    socklen_of::<libc::sockaddr_ll>(),
                )
            };
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
            // A receive timeout, so the capture loop sees its stop flag.
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: the option value is a live timeval of the length given.
            let ret = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::from_ref(&tv).cast(),
                    socklen_of::<libc::timeval>(),
                )
            };
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(PacketSock { fd })
        })?
    }

    /// One frame and its packet type (PACKET_HOST, PACKET_OUTGOING...);
    /// `None` on timeout.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, u8)>> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = socklen_of::<libc::sockaddr_ll>();
        // SAFETY: `buf` is valid for `buf.len()` bytes and `sll`/`len`
        // for the address, all for the duration of the call.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                std::ptr::from_mut(&mut sll).cast(),
                &mut len,
            )
        };
        match usize::try_from(n) {
            Ok(n) => Ok(Some((n.min(buf.len()), sll.sll_pkttype))),
            Err(_) => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }

    /// Sends one Ethernet frame out of the bound interface.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        match usize::try_from(n) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!("sent {n} of {}", frame.len()))),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// The Internet checksum of `data` (an IPv4 header).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// The outer header family the lb stand-in uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outer {
    V4,
    V6,
}

/// Wraps `payload` in Ethernet (lb → backend) and an outer IP header with
/// protocol/next header `proto`.
fn encap_frame(lb: &Node, backend: &Node, outer: Outer, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40 + payload.len());
    f.extend_from_slice(&backend.mac);
    f.extend_from_slice(&lb.mac);
    match outer {
        Outer::V4 => {
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
            let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            h[8] = 64; // TTL
            h[9] = proto;
            h[12..16].copy_from_slice(&lb.ipv4.octets());
            h[16..20].copy_from_slice(&backend.ipv4.octets());
            let sum = checksum(&h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&h);
        }
        Outer::V6 => {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.push(proto);
            f.push(64); // hop limit
            f.extend_from_slice(&lb.ipv6.octets());
            f.extend_from_slice(&backend.ipv6.octets());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// The IP packet of a frame to a VIP (198.18.0.0/24 or fd98::/64) and its
/// protocol number inside IP-in-IP (4 or 41).
fn vip_packet(frame: &[u8]) -> Option<(&[u8], u8)> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    match ethertype {
        ETH_P_IP if ip.len() >= 20 && ip[16..19] == [198, 18, 0] => {
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            Some((ip.get(..total)?, 4))
        }
        ETH_P_IPV6 if ip.len() >= 40 && ip[24..32] == [0xfd, 0x98, 0, 0, 0, 0, 0, 0] => {
            let total = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            Some((ip.get(..total)?, 41))
        }
        _ => None,
    }
}

/// The lb stand-in: captures VIP traffic on the lb's eth0 and forwards it
/// IP-in-IP to b1. Stops on drop.
struct LbEmulator {
    sock: Arc<PacketSock>,
    stop: Arc<AtomicBool>,
    /// 0: outer IPv4, 1: outer IPv6.
    outer_v6: Arc<AtomicBool>,
    encapsulated: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
    lb: Node,
    backend: Node,
}

impl LbEmulator {
    fn start(topo: &Topology) -> io::Result<LbEmulator> {
        let lb = topo.lb.clone();
        let backend = topo.backends[0].clone();
        let sock = Arc::new(PacketSock::open(&lb.ns, &lb.ifname)?);
        let stop = Arc::new(AtomicBool::new(false));
        let outer_v6 = Arc::new(AtomicBool::new(false));
        let encapsulated = Arc::new(AtomicU64::new(0));
        let thread = {
            let (sock, stop, outer_v6, count) = (
                Arc::clone(&sock),
                Arc::clone(&stop),
                Arc::clone(&outer_v6),
                Arc::clone(&encapsulated),
            );
            let (lb, backend) = (lb.clone(), backend.clone());
            std::thread::spawn(move || -> io::Result<()> {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let Some((n, pkttype)) = sock.recv(&mut buf)? else {
                        continue;
                    };
                    if pkttype != libc::PACKET_HOST {
                        continue;
                    }
                    let Some((inner, proto)) = vip_packet(&buf[..n]) else {
                        continue;
                    };
                    let outer = if outer_v6.load(Ordering::SeqCst) {
                        Outer::V6
                    } else {
                        Outer::V4
                    };
                    sock.send(&encap_frame(&lb, &backend, outer, proto, inner))?;
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            })
        };
        Ok(LbEmulator {
            sock,
            stop,
            outer_v6,
            encapsulated,
            thread: Some(thread),
            lb,
            backend,
        })
    }

    fn set_outer(&self, outer: Outer) {
        self.outer_v6.store(outer == Outer::V6, Ordering::SeqCst);
    }

    /// Sends a raw outer packet (header built here, payload as given).
    fn send_outer(&self, outer: Outer, proto: u8, payload: &[u8]) -> io::Result<()> {
        self.sock
            .send(&encap_frame(&self.lb, &self.backend, outer, proto, payload))
    }

    fn encapsulated(&self) -> u64 {
        self.encapsulated.load(Ordering::SeqCst)
    }

    /// Stops the capture loop; its error, if it failed.
    fn stop(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("lb stand-in panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for LbEmulator {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Kernel TCP servers on 198.18.0.7:8080 and [fd98::7]:8080 in b1: read
/// "hello", answer "b1", close. Stop on drop.
struct Server {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, name: &'static str, addrs: Vec<SocketAddr>) -> io::Result<Server> {
        let listeners = netns::in_netns(ns, move || -> io::Result<Vec<TcpListener>> {
            addrs.iter().map(TcpListener::bind).collect()
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for l in listeners {
            l.set_nonblocking(true)?;
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((s, _)) => {
                            if serve(s, name).is_ok() {
                                served.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
        }
        Ok(Server {
            stop,
            served,
            threads,
        })
    }
}

fn serve(mut s: TcpStream, name: &str) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = [0u8; 5];
    s.read_exact(&mut req)?;
    if &req != b"hello" {
        return Err(io::Error::other("bad request"));
    }
    s.write_all(name.as_bytes())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// From the client namespace: connect to `vip`:8080, send "hello", read
/// the answer to EOF, close.
fn request(client_ns: &str, vip: IpAddr) -> io::Result<String> {
    request_within(client_ns, vip, IO_TIMEOUT)
}

/// [`request`] with another connect timeout.
fn request_within(client_ns: &str, vip: IpAddr, connect: Duration) -> io::Result<String> {
    netns::in_netns(client_ns, move || -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(vip, PORT), connect)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.write_all(b"hello")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })?
}

/// Outer packets that reach the decapsulator's raw sockets (the outer
/// header is valid, so the kernel delivers them) but carry no valid inner
/// packet.
fn garbage() -> Vec<(Outer, u8, Vec<u8>)> {
    let mut v6_in_v4_slot = vec![0x60; 40];
    v6_in_v4_slot[4..6].copy_from_slice(&0u16.to_be_bytes());
    let mut truncated_v4 = vec![0u8; 40];
    truncated_v4[0] = 0x45;
    truncated_v4[2..4].copy_from_slice(&200u16.to_be_bytes());
    let mut bad_ihl = vec![0u8; 20];
    bad_ihl[0] = 0x43;
    bad_ihl[2..4].copy_from_slice(&20u16.to_be_bytes());
    let mut v4_in_v6_slot = vec![0u8; 40];
    v4_in_v6_slot[0] = 0x45;
    v4_in_v6_slot[2..4].copy_from_slice(&40u16.to_be_bytes());
    let mut truncated_v6 = vec![0u8; 60];
    truncated_v6[0] = 0x60;
    truncated_v6[4..6].copy_from_slice(&1000u16.to_be_bytes());
    vec![
        (Outer::V4, 4, Vec::new()),             // empty payload
        (Outer::V4, 4, vec![0xff; 10]),         // shorter than a header
        (Outer::V4, 4, v6_in_v4_slot.clone()),  // IPv6 with protocol 4
        (Outer::V4, 4, truncated_v4),           // inner length past the end
        (Outer::V4, 4, bad_ihl.clone()),        // inner header length 12
        (Outer::V4, 41, v4_in_v6_slot.clone()), // IPv4 with protocol 41
        (Outer::V4, 41, truncated_v6.clone()),  // inner payload past the end
        (Outer::V6, 4, vec![0x45, 0, 0]),       // 3 bytes
        (Outer::V6, 4, bad_ihl),                // 4-in-6, bad inner header
        (Outer::V6, 41, vec![0u8; 40]),         // version 0
        (Outer::V6, 41, truncated_v6),          // 6-in-6, truncated
    ]
}

#[test]
fn parse_stats_reads_the_exit_line() {
    let text = "decap: tun0 up, receiving ...\ndecap: 12 packets, 3 errors\n";
    assert_eq!(
        decap::parse_stats(text),
        Some(decap::DecapStats {
            packets: 12,
            errors: 3
        })
    );
    assert_eq!(decap::parse_stats("decap: tun0 up"), None);
}

#[test]
fn ipip_tcp_end_to_end_through_userspace_decap() {
    if !netns::netns_available() {
        eprintln!("skipping: needs root");
        return;
    }
    let topo = Topology::build("dcp1", 1).expect("topology");
    let b1 = topo.backends[0].clone();
    let vip4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7));
    let vip6 = IpAddr::V6(Ipv6Addr::new(0xfd98, 0, 0, 0, 0, 0, 0, 7));
    let server = Server::start(
        &b1.ns,
        "b1",
        vec![SocketAddr::new(vip4, PORT), SocketAddr::new(vip6, PORT)],
    )
    .expect("TCP server in b1");
    let mut lb = LbEmulator::start(&topo).expect("lb stand-in on the lb's eth0");

    // Control: without the decapsulator the backend kernel cannot open
    // the tunnel, so nothing connects.
    let control = request_within(&topo.client.ns, vip4, Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(100));
    assert!(control.is_err(), "connected without decap: {control:?}");
    let without = lb.encapsulated();
    assert!(without >= 1, "the lb stand-in saw no SYN");

    let dcp = decap::start_decap(&b1.ns).expect("start cutover-decap in b1");

    let cases = [
        ("4-in-4", Outer::V4, vip4),
        ("6-in-4", Outer::V4, vip6),
        ("4-in-6", Outer::V6, vip4),
        ("6-in-6", Outer::V6, vip6),
    ];
    for (name, outer, vip) in cases {
        lb.set_outer(outer);
        let before = lb.encapsulated();
        let started = Instant::now();
        let answer = request(&topo.client.ns, vip).unwrap_or_else(|e| {
            panic!(
                "{name}: request to {vip}: {e}; decap: {}",
                dcp.stderr_text()
            )
        });
        assert_eq!(answer, "b1", "{name}");
        let n = lb.encapsulated() - before;
        // At least the SYN and the data went through (the client's last
        // ACK/FIN may still be on its way, or count for the next case).
        assert!(n >= 2, "{name}: only {n} packets went through the lb");
        eprintln!(
            "{name}: ok, {n} client packets encapsulated, {:?}",
            started.elapsed()
        );
    }

    // Garbage reaches the raw sockets but must neither be forwarded nor
    // stop the decapsulator.
    let junk = garbage();
    for (outer, proto, payload) in &junk {
        lb.send_outer(*outer, *proto, payload)
            .expect("send garbage");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut dcp = dcp;
    assert!(dcp.is_running(), "decap died: {}", dcp.stderr_text());
    let answer = request(&topo.client.ns, vip4).expect("request after garbage");
    assert_eq!(answer, "b1");

    // Let the last segments (the client's FIN/ACK) through, then count.
    std::thread::sleep(Duration::from_millis(300));
    lb.stop().expect("lb stand-in");
    std::thread::sleep(Duration::from_millis(300));
    let encapsulated = lb.encapsulated() - without;
    let stats = dcp.stop().expect("stop cutover-decap");
    eprintln!(
        "lb encapsulated {encapsulated}; decap: {} packets, {} errors; served {}",
        stats.packets,
        stats.errors,
        server.served.load(Ordering::SeqCst)
    );
    assert_eq!(stats.errors, u64::try_from(junk.len()).unwrap_or(0));
    assert_eq!(stats.packets, encapsulated);
    assert_eq!(server.served.load(Ordering::SeqCst), 5);
    drop(server);
    drop(topo);
    let left: Vec<String> = netns::list_netns()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with("dcp1-"))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
