//! The DPDK port on DPDK's virtual devices, without NIC or hugepages:
//! frames sent on `net_ring` come back on its receive side (the vdev's one
//! ring pair loops TX to RX), mbufs are grown and trimmed in place, queues
//! are claimed once; and, with root, `net_af_packet` on the lb's veth of a
//! namespace topology forwards a kernel client's UDP to a backend.
//!
//! The EAL starts once per process, so every test shares one `Eal`
//! (`OnceLock`) and each uses its own vdev.
#![cfg(feature = "dpdk")]

#[path = "common/netns.rs"]
mod netns;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cutover::dataplane::frame::{FrameBuf, HEADROOM};
use cutover::io::dpdk::{DpdkError, DpdkOptions, DpdkPort, Eal, Mbuf};
use cutover::io::Port;
use netns::{in_netns, vip_v4, Topology};

fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let mut args: Vec<String> = [
            "--no-huge",
            "-m",
            "512",
            "--no-pci",
            "--no-shconf",
            "--no-telemetry",
            "-l",
            "0",
            "--log-level=lib.eal:warning",
            "--vdev=net_ring0",
            "--vdev=net_ring1",
            "--vdev=net_ring2",
            "--vdev=net_ring3",
        ]
        .map(String::from)
        .to_vec();
        let pmds = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0";
        if std::path::Path::new(pmds).is_dir() {
            args.extend(["-d".to_owned(), pmds.to_owned()]);
        }
        Eal::init(&args).expect("EAL init")
    })
}

fn small() -> DpdkOptions {
    DpdkOptions {
        rx_descriptors: 256,
        tx_descriptors: 256,
        pool_size: 1023,
        pool_cache: 32,
        ..DpdkOptions::default()
    }
}

fn frame(i: u8, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|j| (j % 256).to_le_bytes()[0].wrapping_mul(7) ^ i)
        .collect();
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// Receives until `n` frames or 2 s.
fn rx_n(port: &mut DpdkPort, n: usize) -> Vec<Mbuf> {
    let mut out = Vec::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(2);
    while out.len() < n && Instant::now() < deadline {
        let want = 64 - out.len().min(63);
        port.rx_burst(&mut out, want).expect("rx_burst");
    }
    out
}

#[test]
fn ring_loops_frames_back_without_copy() {
    let mut port = DpdkPort::open(eal(), "net_ring0", 0, &small()).expect("open net_ring0");
    let frames: Vec<Vec<u8>> = (0..5u8)
        .map(|i| frame(i, 60 + 100 * usize::from(i)))
        .collect();
    let mut tx: Vec<Mbuf> = Vec::with_capacity(8);
    for f in &frames {
        let mut m = port.alloc().expect("alloc");
        assert_eq!(m.headroom(), HEADROOM);
        assert!(m.copy_from(f));
        tx.push(m);
    }
    assert_eq!(port.tx_burst(&mut tx).expect("tx"), 5);
    assert!(tx.is_empty(), "sent mbufs leave the vector");
    let got = rx_n(&mut port, 5);
    let bytes: Vec<&[u8]> = got.iter().map(FrameBuf::bytes).collect();
    let want: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(bytes, want);
    // Nothing more waiting: poll mode returns at once.
    let mut more = Vec::with_capacity(32);
    assert_eq!(port.rx_burst(&mut more, 32).expect("rx"), 0);
    let s = port.stats();
    assert_eq!((s.rx_packets, s.tx_packets), (5, 5));
    for m in got {
        port.free(m);
    }
    let dev = port.device_stats().expect("device stats");
    assert!(dev.opackets >= 5, "{dev:?}");
    assert!(port.mac_address().is_ok());
}

/// A worker thread registers as an lcore: the pool's per-lcore cache then
/// takes the mbufs it frees (a plain thread has none and goes to the ring),
/// and detaching gives the lcore back to the EAL.
#[test]
fn a_worker_thread_becomes_an_lcore_and_uses_the_pool_cache() {
    let port = DpdkPort::open(eal(), "net_ring3", 0, &small()).expect("open net_ring3");
    let port = std::thread::spawn(move || {
        let mut port = port;
        let churn = |port: &mut DpdkPort| {
            let bufs: Vec<Mbuf> = (0..16).map(|_| port.alloc().expect("alloc")).collect();
            for b in bufs {
                port.free(b);
            }
        };
        churn(&mut port);
        assert_eq!(port.lcore(), None);
        assert_eq!(port.cached_mbufs(), 0, "a plain thread has no cache");
        port.attach_thread();
        let lcore = port.lcore().expect("registered as an lcore");
        assert_ne!(lcore, 0, "lcore 0 is the EAL's main lcore");
        churn(&mut port);
        let cached = port.cached_mbufs();
        // Up to DPDK's flush threshold, 1.5 times the cache size (32).
        assert!(
            (1..=48).contains(&cached),
            "the freed mbufs went to the lcore cache: {cached}"
        );
        port.detach_thread();
        assert_eq!(port.lcore(), None);
        assert_eq!(port.cached_mbufs(), 0, "no lcore after detaching");
        port
    })
    .join()
    .expect("worker thread");
    drop(port);
}

#[test]
fn mbuf_grows_and_shrinks_in_place() {
    let mut port = DpdkPort::open(eal(), "net_ring1", 0, &small()).expect("open net_ring1");
    let mut m = port.alloc().expect("alloc");
    assert!(m.is_empty());
    assert!(m.copy_from(&[1, 2, 3, 4]));
    let room = m.tailroom();
    assert!(room >= 2048 - 4, "tailroom {room}");

    // Prepend an outer header in the headroom, as IP-in-IP does.
    assert!(m.prepend(20));
    m.bytes_mut()[..20].fill(0xee);
    assert_eq!(m.len(), 24);
    assert_eq!(&m.bytes()[20..], &[1, 2, 3, 4]);
    assert_eq!(m.headroom(), HEADROOM - 20);
    assert!(m.trim_front(20));
    assert_eq!(m.bytes(), &[1, 2, 3, 4]);
    assert!(!m.prepend(HEADROOM + 1), "more than the headroom");
    assert!(!m.prepend(usize::from(u16::MAX) + 1));
    assert_eq!(m.bytes(), &[1, 2, 3, 4], "a failed prepend changes nothing");
    assert!(!m.trim_front(5), "more than the frame");
    assert_eq!(m.bytes(), &[1, 2, 3, 4]);

    // set_len shrinks and grows into the tailroom, not beyond.
    assert!(m.set_len(2));
    assert_eq!(m.bytes(), &[1, 2]);
    assert!(m.set_len(4 + room));
    assert!(!m.set_len(4 + room + 1));
    assert_eq!(m.len(), 4 + room);
    assert!(m.set_len(3));
    assert_eq!(m.bytes(), &[1, 2, 3]);

    // copy_from restores the headroom and refuses what does not fit.
    assert!(m.trim_front(1));
    assert!(m.copy_from(&[9; 100]));
    assert_eq!(m.headroom(), HEADROOM);
    assert!(!m.copy_from(&vec![0; HEADROOM + room + 1]));
    assert_eq!(m.bytes(), &[9; 100][..]);

    // An mbuf moves between threads (workers hand bursts around).
    let m = std::thread::spawn(move || {
        let mut m = m;
        m.bytes_mut()[0] = 7;
        m
    })
    .join()
    .expect("thread");
    assert_eq!(m.bytes()[0], 7);
    // A prepended frame goes out and comes back whole.
    let mut m = m;
    assert!(m.prepend(14));
    m.bytes_mut()[..14].copy_from_slice(&frame(0, 14));
    let sent = m.bytes().to_vec();
    let mut tx = vec![m];
    assert_eq!(port.tx_burst(&mut tx).expect("tx"), 1);
    let got = rx_n(&mut port, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].bytes(), &sent[..]);
}

#[test]
fn queues_are_claimed_once_and_pools_run_dry() {
    let opts = DpdkOptions {
        queues: 2,
        ..small()
    };
    let mut q0 = DpdkPort::open(eal(), "net_ring2", 0, &opts).expect("queue 0");
    let mut q1 = DpdkPort::open(eal(), "net_ring2", 1, &opts).expect("queue 1");
    assert!(matches!(
        DpdkPort::open(eal(), "net_ring2", 1, &opts),
        Err(DpdkError::QueueInUse { queue: 1, .. })
    ));
    assert!(matches!(
        DpdkPort::open(eal(), "net_ring2", 0, &small()),
        Err(DpdkError::Reconfigure { .. })
    ));
    assert!(matches!(
        DpdkPort::open(eal(), "net_ring2", 2, &opts),
        Err(DpdkError::InvalidOptions(_))
    ));
    assert!(matches!(
        DpdkPort::open(eal(), "net_nosuch0", 0, &opts),
        Err(DpdkError::NoSuchPort(_))
    ));
    assert!(matches!(Eal::init(&[]), Err(DpdkError::AlreadyInitialized)));

    // net_ring loops queue q's TX to queue q's RX.
    for (q, port) in [(0u8, &mut q0), (1, &mut q1)] {
        let mut m = port.alloc().expect("alloc");
        let f = frame(q, 64);
        assert!(m.copy_from(&f));
        let mut tx = vec![m];
        assert_eq!(port.tx_burst(&mut tx).expect("tx"), 1);
        let got = rx_n(port, 1);
        assert_eq!(got.len(), 1, "queue {q}");
        assert_eq!(got[0].bytes(), &f[..]);
    }

    // The pool runs dry (its RX descriptors hold some), then refills.
    let mut held = Vec::with_capacity(1024);
    while let Some(m) = q0.alloc() {
        held.push(m);
        assert!(held.len() <= 1023);
    }
    assert!(!held.is_empty());
    assert_eq!(q0.stats().alloc_failed, 1);
    let n = held.len();
    held.clear();
    let mut again = Vec::with_capacity(n);
    while again.len() < n {
        again.push(q0.alloc().expect("freed mbufs are back in the pool"));
    }
    drop(again);

    // Dropping every queue stops the device; opening one restarts it.
    drop(q0);
    drop(q1);
    let mut q0 = DpdkPort::open(eal(), "net_ring2", 0, &opts).expect("reopen");
    let mut m = q0.alloc().expect("alloc");
    assert!(m.copy_from(&frame(9, 64)));
    let mut tx = vec![m];
    assert_eq!(q0.tx_burst(&mut tx).expect("tx"), 1);
    assert_eq!(rx_n(&mut q0, 1).len(), 1);
}

/// A kernel client in one namespace sends UDP to a VIP through the lb's
/// veth, where `net_af_packet` hands it to this port; the port rewrites the
/// MACs and sends it to the backend's veth, whose kernel echoes it straight
/// back to the client (direct server return).
#[test]
fn af_packet_vdev_forwards_kernel_traffic_on_a_veth() {
    if !netns::netns_available() {
        eprintln!("skipping: needs root and `ip netns` (network namespaces)");
        return;
    }
    let topo = Topology::build("dpk1", 1).expect("topology");
    let b1 = topo.backends[0].clone();
    let lb = topo.lb.clone();
    let eal = eal();
    // The vdev opens its AF_PACKET socket in the namespace of the thread
    // that probes it: the lb's.
    let port_id = in_netns(&lb.ns, move || {
        eal.attach("net_af_packet_dpk1,iface=eth0,qpairs=1")
    })
    .expect("lb namespace")
    .expect("attach net_af_packet");
    let mut port = DpdkPort::open(eal, &port_id.to_string(), 0, &small()).expect("open");
    assert_eq!(port.mac_address().expect("mac"), lb.mac);

    let vip = SocketAddr::from((vip_v4(7), 5000));
    let srv = in_netns(&b1.ns, move || UdpSocket::bind(vip).expect("bind vip")).expect("b1");
    let deadline = Instant::now() + Duration::from_secs(15);
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            srv.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((len, from)) = srv.recv_from(&mut buf) {
                    srv.send_to(&buf[..len], from).expect("echo");
                }
            }
        })
    };
    let fwd = {
        let stop = stop.clone();
        let lb_mac = lb.mac;
        std::thread::spawn(move || {
            let mut forwarded = 0usize;
            let mut rx = Vec::with_capacity(32);
            let mut tx = Vec::with_capacity(32);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if port.rx_burst(&mut rx, 32).expect("rx_burst") == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                for mut buf in rx.drain(..) {
                    let b = buf.bytes_mut();
                    // IPv4 UDP to the VIP, port 5000 (no IP options here).
                    let to_vip = b.len() >= 38
                        && b[12..14] == [0x08, 0x00]
                        && b[23] == 17
                        && b[30..34] == vip_v4(7).octets()
                        && b[36..38] == 5000u16.to_be_bytes();
                    if to_vip {
                        b[0..6].copy_from_slice(&b1.mac);
                        b[6..12].copy_from_slice(&lb_mac);
                        tx.push(buf);
                    } else {
                        port.free(buf);
                    }
                }
                forwarded += port.tx_burst(&mut tx).expect("tx_burst");
                tx.clear(); // not sent: dropped (freed)
            }
            (forwarded, port.stats())
        })
    };
    let got = in_netns(&topo.client.ns, move || {
        let s = UdpSocket::bind("10.99.0.1:0").expect("client bind");
        s.connect(vip).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut got = 0;
        let mut buf = [0u8; 64];
        for i in 0..10 {
            let msg = format!("ping {i}");
            'retry: while Instant::now() < deadline {
                s.send(msg.as_bytes()).expect("send");
                while let Ok(len) = s.recv(&mut buf) {
                    if &buf[..len] == msg.as_bytes() {
                        got += 1;
                        break 'retry;
                    }
                }
            }
        }
        got
    })
    .expect("client namespace");
    stop.store(true, Ordering::Relaxed);
    let (forwarded, stats) = fwd.join().expect("forwarder");
    echo.join().expect("echo");
    eprintln!("echoed {got}/10, forwarded {forwarded}, {stats:?}");
    assert_eq!(got, 10, "every datagram echoed through the DPDK port");
    assert!(forwarded >= 10);
    drop(topo);
}
