//! `ipip` to a backend that is not on the load balancer's link, through
//! `[dataplane] gateway_v4`, end to end in network namespaces with real
//! kernel TCP:
//!
//! ```text
//!   client 10.99.0.1 ─┐
//!   lb     10.99.0.2 ─┼─ bridge ─ router 10.99.0.3 ── 10.77.0.1 ─── 10.77.0.11 remote
//!   b1     10.99.0.11 ┘            (ip_forward, rp_filter off)       (decapsulator, VIPs on lo)
//! ```
//!
//! `cutover run` (AF_PACKET, `ipip`) serves one service on b1 (on-link)
//! and the remote backend (off-link): the remote one is reached only by
//! sending its encapsulated packets to the router's MAC, which is what the
//! gateway gives. Without the key the same remote backend never resolves
//! and every packet to it is counted as `no_neighbor`, so the test fails
//! if the gateway logic breaks.
//!
//! The kernel here has no IPIP module: each backend runs the test-side
//! decapsulator (`tests/common/decap.rs`). Needs root; skipped otherwise.

#[path = "common/decap.rs"]
mod decap;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/services.rs"]
mod services;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns::{in_netns, ip, sysctl, KillOnDrop, Node, Topology};
use services::{serve_name, Conn, NameServer};

const VIP4: &str = "198.18.0.10";
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);
const ROUTER_FAR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const METRICS: &str = "127.0.0.1:9100";

fn skip() -> bool {
    if netns::netns_available() {
        return false;
    }
    eprintln!("skipping: needs root and `ip netns` (network namespaces)");
    true
}

/// A unique namespace prefix per test process and case.
fn prefix(case: &str) -> String {
    format!("gw{}{case}", std::process::id())
}

/// The topology of the module doc: the segment with client, lb and b1, a
/// router on it, and the remote backend behind the router.
struct Net {
    topo: Topology,
    router: Node,
    remote_ns: String,
}

fn build(prefix: &str) -> Net {
    let mut topo = Topology::build(prefix, 1).expect("topology");
    let router = topo.add_segment_node("r", 3).expect("router");
    let remote_ns = topo.add_namespace("b").expect("remote namespace");
    let r = router.ns.as_str();
    let b = remote_ns.as_str();
    ip(&[
        "-n", r, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", b,
    ])
    .expect("router-remote veth");
    let far = format!("{ROUTER_FAR}/24");
    let remote = format!("{REMOTE}/24");
    ip(&["-n", r, "addr", "add", &far, "dev", "eth1"]).expect("router address");
    ip(&["-n", r, "link", "set", "eth1", "up"]).expect("router eth1 up");
    for (key, val) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.conf.eth0.rp_filter", "0"),
        ("net.ipv4.conf.eth1.rp_filter", "0"),
        // The lb and b1 are on the router's segment too: no redirects,
        // which would teach the client's or lb's kernel a shortcut.
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.eth0.send_redirects", "0"),
    ] {
        sysctl(r, key, val).expect("router sysctl");
    }
    netns::disable_offloads(r, "eth1").expect("router offloads");

    ip(&["-n", b, "addr", "add", &remote, "dev", "eth0"]).expect("remote address");
    ip(&["-n", b, "link", "set", "eth0", "up"]).expect("remote eth0 up");
    ip(&[
        "-n",
        b,
        "route",
        "add",
        "default",
        "via",
        &ROUTER_FAR.to_string(),
    ])
    .expect("remote default route");
    ip(&[
        "-n",
        b,
        "route",
        "add",
        "local",
        netns::VIP_V4_NET,
        "dev",
        "lo",
    ])
    .expect("remote VIP route");
    for (key, val) in [
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.conf.eth0.rp_filter", "0"),
        ("net.ipv4.conf.lo.rp_filter", "0"),
        ("net.ipv4.ip_nonlocal_bind", "1"),
    ] {
        sysctl(b, key, val).expect("remote sysctl");
    }
    netns::disable_offloads(b, "eth0").expect("remote offloads");

    // The lb's own kernel (health checks) reaches the remote subnet
    // through the router, as on a real network. The data plane does not
    // use this route: it decides from the interface prefixes and the
    // gateway key alone.
    let remote_net = "10.77.0.0/24";
    let via = router.ipv4.to_string();
    ip(&["-n", &topo.lb.ns, "route", "add", remote_net, "via", &via])
        .expect("lb route to the remote subnet");
    Net {
        topo,
        router,
        remote_ns,
    }
}

fn config(net: &Net, gateway: bool, backends: &[IpAddr]) -> String {
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let gateway = if gateway {
        format!("gateway_v4 = \"{}\"\n", net.router.ipv4)
    } else {
        String::new()
    };
    format!(
        r#"
[dataplane]
driver = "af_packet"
interfaces = ["eth0"]
workers = 2
forwarding = "ipip"
encap_source_v4 = "{lb}"
{gateway}
[dns]
listen = []

[metrics]
listen = "{METRICS}"

[[vip_pool]]
name = "vips"
prefixes = ["198.18.0.0/24"]

[[service]]
name = "web"
pool = "vips"
ports = ["tcp/80", "udp/9999"]
families = ["ipv4"]
vips = ["{VIP4}"]
backends = [{backends}]
"#,
        lb = net.topo.lb.ipv4,
        backends = backends.join(", "),
    )
}

/// A name server in `ns` on the VIP and on `own` (for the health checks).
fn serve(ns: &str, name: &str, own: Ipv4Addr) -> NameServer {
    let listeners = in_netns(ns, move || -> std::io::Result<Vec<TcpListener>> {
        Ok(vec![
            TcpListener::bind((VIP4.parse::<IpAddr>().unwrap(), 80))?,
            TcpListener::bind((own, 80))?,
        ])
    })
    .expect("enter backend namespace")
    .expect("bind on the VIP");
    serve_name(name, listeners).expect("serve")
}

fn start_cutover(net: &Net, cfg_path: &Path, log: &Path) -> KillOnDrop {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.topo.lb.ns,
            env!("CARGO_BIN_EXE_cutover"),
            "run",
            "--config",
        ])
        .arg(cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start cutover");
    KillOnDrop(child)
}

/// `GET /metrics` from inside the lb namespace.
fn scrape(net: &Net) -> String {
    in_netns(&net.topo.lb.ns, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(METRICS).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    })
    .expect("lb namespace")
}

/// `cutover_drops_total{reason="no_neighbor"}`, summed over its series
/// (0 when the series is not there yet).
fn no_neighbor(net: &Net) -> f64 {
    scrape(net)
        .lines()
        .filter(|l| l.starts_with("cutover_drops_total{") && l.contains("reason=\"no_neighbor\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded) until the metrics endpoint answers.
fn wait_metrics(net: &Net, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ns = net.topo.lb.ns.clone();
        let up = in_netns(&ns, || std::net::TcpStream::connect(METRICS).is_ok()).unwrap_or(false);
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never came up; cutover log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Opens connections to the VIP from the client until one lands on
/// `backend` (bounded), so that the next hops have settled.
fn wait_for_backend(net: &Net, backend: &'static str, log: &Path) {
    let addr = SocketAddr::new(VIP4.parse().unwrap(), 80);
    let found = in_netns(&net.topo.client.ns, move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(name) = services::wait_until_served(addr, Duration::from_secs(2)) {
                if name == backend {
                    return true;
                }
            }
        }
        false
    })
    .expect("client namespace");
    assert!(
        found,
        "backend {backend} never answered through the VIP; cutover log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Opens `n` connections (all held open), exchanges three more lines on
/// each, and returns the backend per connection; panics on any failure
/// or backend change.
fn connections(net: &Net, n: usize) -> Vec<String> {
    let addr = SocketAddr::new(VIP4.parse().unwrap(), 80);
    in_netns(&net.topo.client.ns, move || {
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            match Conn::open(addr) {
                Ok(c) => conns.push(c),
                Err(e) => panic!("connection {i} to {addr} failed: {e}"),
            }
        }
        for round in 0..3 {
            for (i, c) in conns.iter_mut().enumerate() {
                let who = c
                    .ask()
                    .unwrap_or_else(|e| panic!("round {round}, connection {i}: {e}"));
                assert_eq!(who, c.backend, "connection {i} moved");
            }
        }
        conns.into_iter().map(|c| c.backend).collect::<Vec<_>>()
    })
    .expect("client namespace")
}

/// `n` UDP datagrams to the VIP, each from a new socket (a new flow).
fn datagrams(net: &Net, n: u32) {
    in_netns(&net.topo.client.ns, move || {
        for i in 0..n {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.send_to(&i.to_be_bytes(), (VIP4, 9999)).expect("send");
        }
    })
    .expect("client namespace");
}

fn stop(mut cutover: KillOnDrop, log: &Path) -> String {
    let pid = cutover.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = cutover.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "cutover did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "cutover exited with {status}:\n{text}");
    text
}

#[test]
fn off_link_backend_is_served_through_the_gateway() {
    if skip() {
        return;
    }
    let net = build(&prefix("a"));
    let b1 = net.topo.backends[0].clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    let backends = [IpAddr::V4(b1.ipv4), IpAddr::V4(REMOTE)];
    std::fs::write(&cfg_path, config(&net, true, &backends)).expect("write config");
    let log = dir.path().join("cutover.log");
    let _servers = [
        serve(&b1.ns, "b1", b1.ipv4),
        serve(&net.remote_ns, "remote", REMOTE),
    ];
    let d1 = decap::start_decap(&b1.ns).expect("decapsulator on b1");
    let d2 = decap::start_decap(&net.remote_ns).expect("decapsulator on remote");
    let cutover = start_cutover(&net, &cfg_path, &log);
    wait_metrics(&net, &log);
    wait_for_backend(&net, "remote", &log);
    wait_for_backend(&net, "b1", &log);

    let before = no_neighbor(&net);
    let got = connections(&net, 200);
    let mut share = BTreeMap::new();
    for b in &got {
        *share.entry(b.as_str()).or_insert(0usize) += 1;
    }
    assert_eq!(share.len(), 2, "both backends get connections: {share:?}");
    for (b, n) in &share {
        assert!(
            *n >= 200 / 2 / 3,
            "backend {b} got only {n} of 200: {share:?}"
        );
    }
    datagrams(&net, 100);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        no_neighbor(&net),
        before,
        "no packet was dropped for want of a next hop once resolved"
    );
    let text = stop(cutover, &log);
    let remote_stats = d2.stop().expect("remote decapsulator");
    let b1_stats = d1.stop().expect("b1 decapsulator");
    assert!(
        remote_stats.packets > 0 && b1_stats.packets > 0,
        "both decapsulated: remote {remote_stats:?}, b1 {b1_stats:?}\n{text}"
    );
}

#[test]
fn off_link_backend_without_gateway_is_no_neighbor() {
    if skip() {
        return;
    }
    let net = build(&prefix("b"));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    std::fs::write(&cfg_path, config(&net, false, &[IpAddr::V4(REMOTE)])).expect("write config");
    let log = dir.path().join("cutover.log");
    let _server = serve(&net.remote_ns, "remote", REMOTE);
    let d = decap::start_decap(&net.remote_ns).expect("decapsulator on remote");
    let cutover = start_cutover(&net, &cfg_path, &log);
    wait_metrics(&net, &log);
    // Several refreshes (about one a second), then traffic.
    std::thread::sleep(Duration::from_secs(3));
    let before = no_neighbor(&net);
    datagrams(&net, 100);
    std::thread::sleep(Duration::from_millis(1500));
    let after = no_neighbor(&net);
    assert_eq!(
        after - before,
        100.0,
        "every datagram to the off-link backend is dropped as no_neighbor"
    );
    // And TCP cannot get through either.
    let addr = SocketAddr::new(VIP4.parse().unwrap(), 80);
    let refused = in_netns(&net.topo.client.ns, move || {
        services::wait_until_served(addr, Duration::from_secs(3)).is_err()
    })
    .expect("client namespace");
    assert!(refused, "a connection got through without a gateway");
    let text = stop(cutover, &log);
    assert!(
        text.contains("no [dataplane] gateway_v4 is configured"),
        "the reason is logged:\n{text}"
    );
    assert_eq!(
        text.matches("no [dataplane] gateway_v4 is configured")
            .count(),
        1,
        "logged once:\n{text}"
    );
    let stats = d.stop().expect("decapsulator");
    assert_eq!(stats.packets, 0, "nothing reached the remote backend");
}
