//! The AF_XDP port on a real veth in network namespaces: the XDP program
//! redirects VIP traffic to the port, which forwards it to a backend by MAC
//! rewrite (l2dsr) while the lb's kernel keeps answering on the same
//! interface (ping, a UDP echo on its own address). Needs root and a crate
//! built with clang (the XDP program); skips with a message otherwise.
//!
//! The topology's veths have one queue each, so one port on queue 0 (one
//! worker per interface) serves the lb's eth0.

#[path = "common/netns.rs"]
mod netns;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::dataplane::frame::FrameBuf;
use cutover::io::af_packet::interface_mac;
use cutover::io::af_xdp::{AfXdpError, AfXdpOptions, AfXdpPort};
use cutover::io::Port;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use netns::{in_netns, vip_v4, vip_v6, Topology};

/// Destination address and UDP destination port of an Ethernet frame.
fn udp_dst(frame: &[u8]) -> Option<(IpAddr, u16)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let dst: IpAddr = match p.net? {
        NetSlice::Ipv4(v4) => v4.header().destination_addr().into(),
        NetSlice::Ipv6(v6) => v6.header().destination_addr().into(),
    };
    match p.transport? {
        TransportSlice::Udp(u) => Some((dst, u.destination_port())),
        _ => None,
    }
}

fn small_opts() -> AfXdpOptions {
    AfXdpOptions {
        frame_size: 2048,
        frame_count: 1024,
        fill_size: 256,
        comp_size: 256,
        rx_size: 256,
        tx_size: 256,
        ..AfXdpOptions::default()
    }
}

/// Sends datagrams to `target` from a socket bound to `bind` in the client
/// namespace, each until its echo comes back (ARP/NDP may eat the first),
/// and returns how many came back before `deadline`.
fn echo_client(ns: &str, bind: &str, target: SocketAddr, n: usize, deadline: Instant) -> usize {
    let bind: SocketAddr = bind.parse().expect("bind address");
    in_netns(ns, move || {
        let s = UdpSocket::bind(bind).expect("client bind");
        // Connected: only answers from `target` itself are accepted, so a
        // VIP's echo proves the backend answered with the VIP as source.
        s.connect(target).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let mut got = 0;
        for i in 0..n {
            let msg = format!("ping {i}");
            'this: while Instant::now() < deadline {
                s.send(msg.as_bytes()).expect("send");
                while let Ok(len) = s.recv(&mut buf) {
                    if buf[..len] == *msg.as_bytes() {
                        got += 1;
                        break 'this;
                    }
                }
            }
        }
        got
    })
    .expect("client namespace")
}

/// A UDP echo server on `sock` until `stop` or `deadline`; returns the
/// number of datagrams echoed.
fn echo_server(
    sock: UdpSocket,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok((len, from)) = sock.recv_from(&mut buf) {
                sock.send_to(&buf[..len], from).expect("echo");
                n += 1;
            }
        }
        n
    })
}

fn xdp_attached(ns: &str) -> bool {
    let out = netns::run_in(ns, "ip", &["link", "show", "dev", "eth0"]).expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

#[test]
fn vip_traffic_is_forwarded_and_the_host_keeps_its_interface() {
    if !netns::netns_available() {
        eprintln!("skipping: needs root and `ip netns` (network namespaces)");
        return;
    }
    let topo = Topology::build("axp1", 1).expect("topology");
    let b1 = topo.backends[0].clone();
    let lb = topo.lb.clone();
    let vip4 = SocketAddr::from((vip_v4(5), 5000));
    let vip6 = SocketAddr::from((vip_v6(5), 5000));

    let opened = in_netns(&lb.ns, move || {
        let port = AfXdpPort::open("eth0", 0, &small_opts())?;
        port.set_vips(&[vip4.ip(), vip6.ip()])?;
        Ok::<_, AfXdpError>((port, interface_mac("eth0").expect("mac")))
    })
    .expect("lb namespace");
    let (mut port, lb_mac) = match opened {
        Ok(p) => p,
        Err(AfXdpError::Unavailable(why)) => {
            eprintln!("skipping: the XDP program is not built ({why})");
            return;
        }
        Err(e) => panic!("open AF_XDP port: {e}"),
    };
    assert_eq!(lb_mac, lb.mac);
    assert!(xdp_attached(&lb.ns), "program attached to the lb's eth0");
    let mut vips = port.vip_filter().vips();
    vips.sort();
    assert_eq!(vips, vec![vip4.ip(), vip6.ip()]);
    eprintln!(
        "port: zero_copy={} native_xdp={}",
        port.zero_copy(),
        port.vip_filter().native()
    );

    // Nothing waiting: rx_burst returns at once.
    let mut burst = Vec::new();
    let t = Instant::now();
    assert_eq!(port.rx_burst(&mut burst, 32).expect("rx"), 0);
    assert!(t.elapsed() < Duration::from_millis(50));

    let deadline = Instant::now() + Duration::from_secs(20);
    let stop = Arc::new(AtomicBool::new(false));
    // The backend holds the VIPs on lo and echoes, straight to the client.
    let (srv4, srv6) = in_netns(&b1.ns, move || {
        (
            UdpSocket::bind(vip4).expect("bind vip4"),
            UdpSocket::bind(vip6).expect("bind vip6"),
        )
    })
    .expect("backend namespace");
    let echo4 = echo_server(srv4, stop.clone(), deadline);
    let echo6 = echo_server(srv6, stop.clone(), deadline);
    // The lb's kernel echoes on its own address, on the same interface.
    let own = SocketAddr::from((lb.ipv4, 7000));
    let lb_srv =
        in_netns(&lb.ns, move || UdpSocket::bind(own).expect("bind lb")).expect("lb namespace");
    let lb_echo = echo_server(lb_srv, stop.clone(), deadline);

    // The data plane: every frame the port gets goes to b1 by MAC rewrite.
    let fwd = {
        let stop = stop.clone();
        let b1_mac = b1.mac;
        std::thread::spawn(move || {
            let (mut forwarded, mut not_vip) = (0usize, 0usize);
            let mut rx = Vec::with_capacity(32);
            let mut tx = Vec::with_capacity(32);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if port.rx_burst(&mut rx, 32).expect("rx_burst") == 0 {
                    port.flush().expect("flush");
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                for mut buf in rx.drain(..) {
                    match udp_dst(buf.bytes()) {
                        Some((dst, _)) if dst == vip4.ip() || dst == vip6.ip() => {
                            let b = buf.bytes_mut();
                            b[0..6].copy_from_slice(&b1_mac);
                            b[6..12].copy_from_slice(&lb_mac);
                            tx.push(buf);
                        }
                        _ => {
                            not_vip += 1;
                            port.free(buf);
                        }
                    }
                }
                forwarded += port.tx_burst(&mut tx).expect("tx_burst");
                for buf in tx.drain(..) {
                    port.free(buf); // ring full: dropped
                }
            }
            (forwarded, not_vip, port)
        })
    };

    let c = topo.client.ns.clone();
    let got4 = echo_client(&c, "10.99.0.1:0", vip4, 20, deadline);
    let got6 = echo_client(&c, "[fd99::1]:0", vip6, 20, deadline);
    // Not a VIP (in the VIP prefix, routed to the lb): the program passes
    // it to the lb's kernel, which does not forward; the port never sees it.
    let stray = SocketAddr::from((vip_v4(9), 5000));
    let stray_got = echo_client(
        &c,
        "10.99.0.1:0",
        stray,
        1,
        Instant::now() + Duration::from_secs(1),
    );
    // The lb's own address: ARP and the UDP echo are the kernel's.
    let got_own = echo_client(&c, "10.99.0.1:0", own, 5, deadline);
    let ping =
        netns::run_in(&c, "ping", &["-c", "2", "-W", "2", &lb.ipv4.to_string()]).expect("ping");
    let ping6 = netns::run_in(
        &c,
        "ping",
        &["-6", "-c", "2", "-W", "2", &lb.ipv6.to_string()],
    )
    .expect("ping -6");

    stop.store(true, Ordering::Relaxed);
    let (forwarded, not_vip, port) = fwd.join().expect("forwarder");
    let (n4, n6, n_own) = (
        echo4.join().expect("echo4"),
        echo6.join().expect("echo6"),
        lb_echo.join().expect("lb echo"),
    );
    eprintln!(
        "v4 {got4}/20 v6 {got6}/20 own {got_own}/5 forwarded {forwarded} not_vip {not_vip} \
         echoed {n4}+{n6}+{n_own} stats {:?} kernel {:?}",
        port.stats(),
        port.kernel_stats()
    );
    assert_eq!(got4, 20, "IPv4 echoes through the lb");
    assert_eq!(got6, 20, "IPv6 echoes through the lb");
    assert!(forwarded >= 40);
    assert_eq!(stray_got, 0, "a non-VIP is not forwarded");
    assert_eq!(not_vip, 0, "only VIP frames reach the port");
    assert_eq!(got_own, 5, "the lb's kernel still answers on eth0");
    assert!(ping.status.success(), "ping the lb: {ping:?}");
    assert!(ping6.status.success(), "ping6 the lb: {ping6:?}");

    // Withdrawing a VIP takes it out of the map.
    port.set_vips(&[vip4.ip()]).expect("set_vips");
    assert_eq!(port.vip_filter().vips(), vec![vip4.ip()]);

    // The last port gone, the program is detached.
    drop(port);
    assert!(!xdp_attached(&lb.ns), "program detached with the last port");
    drop(topo);
}
