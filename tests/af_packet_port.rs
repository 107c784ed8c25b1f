//! The AF_PACKET port on real veth interfaces in network namespaces:
//! receive what a kernel socket sends, forward it to a backend by MAC
//! rewrite (l2dsr) and see the backend answer the client directly; and
//! two ports in one fanout group splitting flows. Needs root.

#[path = "common/netns.rs"]
mod netns;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::dataplane::frame::{FrameBuf, PacketBuf};
use cutover::io::af_packet::{interface_mac, interface_mtu, AfPacketOptions, AfPacketPort};
use cutover::io::Port;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use netns::{in_netns, vip_v4, vip_v6, KillOnDrop, Topology};

fn skip() -> bool {
    if netns::netns_available() {
        return false;
    }
    eprintln!("skipping: needs root and `ip netns` (network namespaces)");
    true
}

/// Destination address and UDP ports of an Ethernet frame, if it is UDP.
fn udp_of(frame: &[u8]) -> Option<(IpAddr, u16, u16)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let dst: IpAddr = match p.net? {
        NetSlice::Ipv4(v4) => v4.header().destination_addr().into(),
        NetSlice::Ipv6(v6) => v6.header().destination_addr().into(),
    };
    match p.transport? {
        TransportSlice::Udp(u) => Some((dst, u.source_port(), u.destination_port())),
        _ => None,
    }
}

fn small_opts(group: Option<u16>) -> AfPacketOptions {
    AfPacketOptions {
        rx_block_size: 64 * 1024,
        rx_block_count: 8,
        tx_block_count: 2,
        fanout_group: group,
        pool_size: 256,
        ..AfPacketOptions::default()
    }
}

#[test]
fn port_receives_and_forwards_to_a_backend_with_direct_return() {
    if skip() {
        return;
    }
    let topo = Topology::build("afp1", 1).expect("topology");
    let b1 = topo.backends[0].clone();
    let lb = topo.lb.clone();

    let (mut port, lb_mac, mtu) = in_netns(&lb.ns, || {
        let port = AfPacketPort::open("eth0", &small_opts(None)).expect("open port in lb");
        (
            port,
            interface_mac("eth0").expect("mac"),
            interface_mtu("eth0").expect("mtu"),
        )
    })
    .expect("lb namespace");
    assert_eq!(lb_mac, lb.mac);
    assert_eq!(mtu, 1500);
    assert!(port.max_tx_frame() >= 1518);

    // Nothing waiting: rx_burst returns at once.
    let mut burst = Vec::new();
    let t = Instant::now();
    assert_eq!(port.rx_burst(&mut burst, 32).expect("rx"), 0);
    assert!(t.elapsed() < Duration::from_millis(50));

    let vip4 = SocketAddr::from((vip_v4(5), 5000));
    let vip6 = SocketAddr::from((vip_v6(5), 5000));
    // The backend listens on the VIPs it holds on lo and echoes.
    let (srv4, srv6) = in_netns(&b1.ns, move || {
        (
            UdpSocket::bind(vip4).expect("bind vip4"),
            UdpSocket::bind(vip6).expect("bind vip6"),
        )
    })
    .expect("backend namespace");
    let deadline = Instant::now() + Duration::from_secs(15);
    let stop = Arc::new(AtomicBool::new(false));
    let echo = |sock: UdpSocket, stop: Arc<AtomicBool>| {
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
    };
    let echo4 = echo(srv4, stop.clone());
    let echo6 = echo(srv6, stop.clone());

    // The data plane: everything UDP to a VIP goes to b1 by MAC rewrite.
    let fwd = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut forwarded, mut own_seen) = (0u32, 0u32);
            let mut rx = Vec::with_capacity(32);
            let mut tx = Vec::with_capacity(32);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if port.rx_burst(&mut rx, 32).expect("rx_burst") == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                for mut buf in rx.drain(..) {
                    let b = buf.bytes_mut();
                    if b[0..6] == b1.mac {
                        own_seen += 1; // our own transmission: must not happen
                    }
                    match udp_of(b) {
                        Some((dst, _, 5000)) if dst == vip4.ip() || dst == vip6.ip() => {
                            b[0..6].copy_from_slice(&b1.mac);
                            b[6..12].copy_from_slice(&lb_mac);
                            tx.push(buf);
                        }
                        _ => port.free(buf),
                    }
                }
                forwarded += u32::try_from(port.tx_burst(&mut tx).expect("tx_burst")).unwrap();
                for buf in tx.drain(..) {
                    port.free(buf); // ring full: dropped
                }
            }
            (forwarded, own_seen, port.stats())
        })
    };

    let client = |target: SocketAddr, n: usize| {
        in_netns(&topo.client.ns, move || {
            let bind: SocketAddr = if target.is_ipv4() {
                "10.99.0.1:0"
            } else {
                "[fd99::1]:0"
            }
            .parse()
            .unwrap();
            let s = UdpSocket::bind(bind).expect("client bind");
            s.connect(target).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let mut got = HashSet::new();
            let mut buf = [0u8; 64];
            // Send each datagram until its echo arrives (ARP/NDP may eat
            // the first), bounded by the deadline.
            for i in 0..n {
                let msg = format!("ping {i}");
                while !got.contains(&i) && Instant::now() < deadline {
                    s.send(msg.as_bytes()).expect("send");
                    // A connected socket accepts only the VIP's answer: a
                    // reply straight from the backend, from the VIP.
                    while let Ok(len) = s.recv(&mut buf) {
                        if let Some(j) = std::str::from_utf8(&buf[..len])
                            .ok()
                            .and_then(|m| m.strip_prefix("ping "))
                            .and_then(|j| j.parse::<usize>().ok())
                        {
                            got.insert(j);
                        }
                        if got.contains(&i) {
                            break;
                        }
                    }
                }
            }
            got.len()
        })
        .expect("client namespace")
    };
    let got4 = client(vip4, 20);
    let got6 = client(vip6, 20);
    stop.store(true, Ordering::Relaxed);
    let (forwarded, own_seen, stats) = fwd.join().expect("forwarder");
    let (n4, n6) = (echo4.join().expect("echo4"), echo6.join().expect("echo6"));
    eprintln!("v4 {got4}/20 v6 {got6}/20 forwarded {forwarded} echoed {n4}+{n6} {stats:?}");
    assert_eq!(got4, 20, "IPv4 echoes through the lb");
    assert_eq!(got6, 20, "IPv6 echoes through the lb");
    assert!(forwarded >= 40);
    assert_eq!(own_seen, 0, "PACKET_IGNORE_OUTGOING hides our own frames");
    assert_eq!(
        stats.rx_csum_not_ready, 0,
        "offloads are off in the topology"
    );
    drop(topo);
}

#[test]
fn fanout_group_splits_flows_and_keeps_each_on_one_port() {
    if skip() {
        return;
    }
    let topo = Topology::build("afp2", 1).expect("topology");
    let mut ports = in_netns(&topo.lb.ns, || {
        let a = AfPacketPort::open("eth0", &small_opts(Some(0x4242))).expect("port a");
        let b = AfPacketPort::open("eth0", &small_opts(Some(0x4242))).expect("port b");
        [a, b]
    })
    .expect("lb namespace");

    const FLOWS: u16 = 32;
    const PER_FLOW: usize = 5;
    let sent = in_netns(&topo.client.ns, || {
        let target = SocketAddr::from((vip_v4(9), 6000));
        let mut sent = 0;
        for f in 0..FLOWS {
            let s = UdpSocket::bind(("10.99.0.1", 40000 + f)).expect("bind");
            for _ in 0..PER_FLOW {
                s.send_to(b"flow", target).expect("send");
                sent += 1;
            }
        }
        sent
    })
    .expect("client namespace");

    // source port -> ports that saw the flow
    let mut seen: HashMap<u16, HashSet<usize>> = HashMap::new();
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rx: Vec<PacketBuf> = Vec::new();
    while total < sent && Instant::now() < deadline {
        let mut idle = true;
        for (i, port) in ports.iter_mut().enumerate() {
            if port.rx_burst(&mut rx, 32).expect("rx") > 0 {
                idle = false;
            }
            for buf in rx.drain(..) {
                if let Some((_, sport, 6000)) = udp_of(buf.bytes()) {
                    seen.entry(sport).or_default().insert(i);
                    total += 1;
                }
                port.free(buf);
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(total, sent, "every datagram reached exactly one port");
    assert_eq!(seen.len(), usize::from(FLOWS));
    assert!(
        seen.values().all(|p| p.len() == 1),
        "a flow stays on one port: {seen:?}"
    );
    let on_a = seen.values().filter(|p| p.contains(&0)).count();
    eprintln!("flows on port a: {on_a}, on port b: {}", seen.len() - on_a);
    assert!(on_a > 0 && on_a < seen.len(), "both ports get flows");
}

#[test]
fn topology_is_one_segment_with_vips_on_backends() {
    if skip() {
        return;
    }
    let mut topo = Topology::build("afp3", 2).expect("topology");
    let names = topo.namespaces();
    assert_eq!(names.len(), 5);
    let listed = netns::list_netns().expect("list");
    assert!(names.iter().all(|n| listed.contains(n)));
    let out =
        netns::run_in(&topo.client.ns, "ip", &["route", "get", "198.18.0.7"]).expect("run_in");
    assert!(String::from_utf8_lossy(&out.stdout).contains("via 10.99.0.2"));
    let out =
        netns::run_in(&topo.backends[1].ns, "ip", &["route", "get", "198.18.0.7"]).expect("run_in");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("local 198.18.0.7"));
    let b2mac = in_netns(&topo.backends[1].ns, || interface_mac("eth0"))
        .unwrap()
        .unwrap();
    assert_eq!(b2mac, topo.backends[1].mac);
    let child = netns::spawn_in(&topo.lb.ns, "sleep", &["30"]).expect("spawn_in");
    drop(KillOnDrop(child));
    topo.teardown();
    let listed = netns::list_netns().expect("list");
    assert!(names.iter().all(|n| !listed.contains(n)));
    // A crashed run's leftovers go with cleanup_stale.
    for n in ["afp3-lb", "afp3-b7", "afp3x-lb"] {
        let _ = netns::run_timeout(
            std::process::Command::new("ip").args(["netns", "add", n]),
            netns::CMD_TIMEOUT,
        );
    }
    netns::cleanup_stale("afp3").expect("cleanup");
    let listed = netns::list_netns().expect("list");
    assert!(!listed.iter().any(|n| n == "afp3-lb" || n == "afp3-b7"));
    assert!(
        listed.iter().any(|n| n == "afp3x-lb"),
        "other prefixes untouched"
    );
    netns::cleanup_stale("afp3x").expect("cleanup");
}
