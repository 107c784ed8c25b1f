//! Path-MTU discovery through cutover, end to end with real kernels: a
//! backend replies to a client straight from the VIP (direct server
//! return), a router on the way back sends "fragmentation needed" to the
//! VIP, and cutover must hand it to the backend that holds the connection,
//! whose kernel then lowers that connection's path MTU.
//!
//! The client namespace plays the router too: it learns where the server's
//! sequence numbers are from a raw socket (Linux ignores an error whose
//! quoted segment is outside the unacknowledged window) and sends the error
//! with another raw socket. Three backends, so that an error sent to the
//! wrong one changes nothing: only the backend with the connection has a
//! socket for it. Both forwarding modes: with `ipip` the error reaches the
//! backend's kernel through the user-space decapsulator, as the client's
//! packets do. Then a real `ping` of the VIP, which cutover answers
//! itself. Needs root; skipped with a message otherwise.

#[path = "common/cutover.rs"]
mod cutover;
#[path = "common/decap.rs"]
mod decap;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/services.rs"]
mod services;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cutover::{
    one_service_config, scrape, serve_on, start_cutover, stop_cutover, METRICS, VIP4, VIP6,
};
use etherparse::{icmpv4, Icmpv4Header, Icmpv4Type, Ipv4HeaderSlice, TcpHeaderSlice};
use netns::{in_netns, Topology};

/// The service's IPv4 VIP ([`VIP4`]); its IPv6 VIP is only pinged: the
/// path-MTU part is IPv4's.
fn vip() -> Ipv4Addr {
    VIP4.parse().expect("VIP4 is an IPv4 address")
}
/// The MTU the "router" reports: below the segment's 1 500.
const ROUTER_MTU: u16 = 1300;
const REPLY: &[u8] = b"hello from the backend\n";

/// The size of `T` as a socket length.
fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("small struct")
}

/// `getsockopt(IP_MTU)`: the path MTU the kernel holds for a connected
/// socket.
fn path_mtu(s: &TcpStream) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = socklen::<libc::c_int>();
    // SAFETY: `v` and `len` are live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A raw IPv4 socket of `protocol` with a 200 ms receive timeout.
fn raw_socket(protocol: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: `tv` is a live timeval of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            socklen::<libc::timeval>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// The server's side of the connection as the client saw it arrive: the
/// IP header and first 8 TCP bytes of its last data segment, with the
/// sequence number moved to where the server's unacknowledged data starts
/// now (all of it acknowledged: the end of that segment).
fn sniff_reply(raw: &OwnedFd, client_port: u16, deadline: Instant) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let mut last = None;
    while Instant::now() < deadline {
        // SAFETY: `buf` is a live buffer of the length passed.
        let n = unsafe { libc::recv(raw.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            if last.is_some() {
                break;
            }
            continue;
        };
        let pkt = &buf[..n];
        let Ok(ip) = Ipv4HeaderSlice::from_slice(pkt) else {
            continue;
        };
        let hl = ip.slice().len();
        let Ok(tcp) = TcpHeaderSlice::from_slice(&pkt[hl..]) else {
            continue;
        };
        let payload = usize::from(ip.total_len()) - hl - tcp.slice().len();
        if ip.source_addr() == vip() && tcp.destination_port() == client_port && payload > 0 {
            let mut quote = pkt[..hl + 8].to_vec();
            let payload = u32::try_from(payload).expect("segment length");
            let end = tcp.sequence_number().wrapping_add(payload);
            quote[hl + 4..hl + 8].copy_from_slice(&end.to_be_bytes());
            last = Some(quote);
        }
    }
    last.expect("no data segment from the VIP seen by the client")
}

/// Sends an ICMP "fragmentation needed" quoting `quote` to the VIP.
fn send_frag_needed(quote: &[u8]) {
    let raw = raw_socket(libc::IPPROTO_ICMP).expect("raw ICMP socket");
    let t =
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: ROUTER_MTU,
        });
    let mut msg = Icmpv4Header::with_checksum(t, quote).to_bytes().to_vec();
    msg.extend_from_slice(quote);
    // SAFETY: sockaddr_in is plain old data; all-zero is valid.
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET");
    to.sin_addr.s_addr = u32::from(vip()).to_be();
    // SAFETY: `msg` and `to` are live and of the lengths passed.
    let n = unsafe {
        libc::sendto(
            raw.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_in).cast(),
            socklen::<libc::sockaddr_in>(),
        )
    };
    assert_eq!(usize::try_from(n).ok(), Some(msg.len()), "sendto");
}

/// One backend's server on the VIP: accepts the client's connection (the
/// health checks go to the backend's own address), sends `REPLY`, reports
/// its path MTU, and on `check` waits (5 s at most) for it to drop below
/// 1 500, reporting what it ends at. Gives up after 30 s without a client.
fn serve_vip(
    ns: &str,
    index: usize,
    events: mpsc::Sender<(usize, i32)>,
    check: mpsc::Receiver<()>,
) {
    let listener = in_netns(ns, || TcpListener::bind((vip(), 80)))
        .expect("backend namespace")
        .expect("bind the VIP");
    std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => return,
            }
        };
        conn.set_nonblocking(false).expect("blocking");
        conn.write_all(REPLY).expect("reply");
        let _ = events.send((index, path_mtu(&conn).unwrap_or(-1)));
        if check.recv_timeout(Duration::from_secs(30)).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut mtu = path_mtu(&conn).unwrap_or(-1);
        while mtu >= 1500 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            mtu = path_mtu(&conn).unwrap_or(-1);
        }
        let _ = events.send((index, mtu));
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
    });
}

#[test]
fn l2dsr_path_mtu_errors_reach_the_backend_and_the_vip_answers_ping() {
    run_case("pmtu1", "l2dsr");
}

#[test]
fn ipip_path_mtu_errors_reach_the_backend_and_the_vip_answers_ping() {
    run_case("pmtu2", "ipip");
}

fn run_case(prefix: &str, forwarding: &str) {
    if !netns::netns_available() {
        eprintln!("skipping: needs root and `ip netns` (network namespaces)");
        return;
    }
    let topo = Topology::build(prefix, 3).expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    std::fs::write(
        &cfg_path,
        one_service_config(&topo, "af_packet", forwarding, 1),
    )
    .expect("write config");
    let _decaps: Vec<decap::Decap> = if forwarding == "ipip" {
        topo.backends
            .iter()
            .map(|b| decap::start_decap(&b.ns).expect("start decapsulator"))
            .collect()
    } else {
        Vec::new()
    };
    let log = dir.path().join("cutover.log");
    let _health: Vec<_> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| serve_on(&b.ns, &format!("b{}", i + 1), vec![IpAddr::V4(b.ipv4)]))
        .collect();
    let (events_tx, events) = mpsc::channel();
    let mut checks = Vec::new();
    for (i, b) in topo.backends.iter().enumerate() {
        let (tx, rx) = mpsc::channel();
        checks.push(tx);
        serve_vip(&b.ns, i, events_tx.clone(), rx);
    }
    let lb = start_cutover(&topo.lb.ns, &cfg_path, &log);
    let cutover_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The client connects (retrying while cutover starts and the health
    // checks pass), reads the reply, and picks the reply's segment up on a
    // raw socket opened before the connection.
    let client = in_netns(&topo.client.ns, move || {
        let raw = raw_socket(libc::IPPROTO_TCP).expect("raw TCP socket");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn = loop {
            match TcpStream::connect_timeout(
                &SocketAddr::new(vip().into(), 80),
                Duration::from_secs(1),
            ) {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("no connection to the VIP: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = vec![0u8; REPLY.len()];
        conn.read_exact(&mut got).expect("the backend's reply");
        assert_eq!(got, REPLY);
        let port = conn.local_addr().expect("local address").port();
        let quote = sniff_reply(&raw, port, Instant::now() + Duration::from_secs(2));
        (conn, quote)
    });
    let (conn, quote) = match client {
        Ok(c) => c,
        Err(e) => panic!("client failed: {e}\ncutover log:\n{}", cutover_log()),
    };
    let (holder, before) = events
        .recv_timeout(Duration::from_secs(10))
        .expect("a backend accepted the connection");
    assert_eq!(before, 1500, "the path MTU before the error");

    in_netns(&topo.client.ns, move || send_frag_needed(&quote)).expect("client namespace");
    for tx in &checks {
        let _ = tx.send(());
    }
    let (index, after) = events
        .recv_timeout(Duration::from_secs(10))
        .expect("the backend reports its path MTU");
    assert_eq!(index, holder);
    assert_eq!(
        after,
        i32::from(ROUTER_MTU),
        "the backend holding the connection did not lower its path MTU\ncutover log:\n{}",
        cutover_log()
    );
    // A real ping of each VIP: cutover answers it.
    for vip in [vip().to_string(), VIP6.to_owned()] {
        let ping = netns::run_in(
            &topo.client.ns,
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", &vip],
        )
        .expect("run ping");
        let said = String::from_utf8_lossy(&ping.stdout);
        assert!(
            ping.status.success() && said.contains("3 received"),
            "ping of {vip} failed:\n{said}{}",
            String::from_utf8_lossy(&ping.stderr)
        );
    }
    // The exporter copies the workers' counters periodically.
    let counted = |m: &str| {
        let lines: Vec<&str> = m.lines().collect();
        lines.contains(&"cutover_icmp_total{kind=\"forwarded\"} 1")
            && lines.contains(&"cutover_icmp_total{kind=\"echo_reply\"} 6")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut metrics = scrape(&topo.lb.ns, METRICS);
    while !counted(&metrics) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        metrics = scrape(&topo.lb.ns, METRICS);
    }
    assert!(counted(&metrics), "forwarded ICMP not counted:\n{metrics}");
    drop(conn);
    let text = stop_cutover(lb, &log);
    assert!(
        text.contains("stopped"),
        "no clean stop in the log:\n{text}"
    );
}
