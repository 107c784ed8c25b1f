//! `ipip` to backends that are not on the load balancer's link, through
//! `[dataplane] gateway_v4` and `gateway_v6`, end to end in network
//! namespaces with real kernel TCP:
//!
//! ```text
//!   client 10.99.0.1 ─┐
//!   lb     10.99.0.2 ─┼─ bridge ─ router 10.99.0.3 ─┬─ eth1 10.77.0.1 ── r4 10.77.0.11
//!   b1     10.99.0.11 ┘   fd99::/64   fd99::3       └─ eth2 10.78.0.1 ── r6 fd78::11
//!                                                         fd78::1          (also 10.78.0.11)
//! ```
//!
//! `cutover run` (AF_PACKET, `ipip`) serves one service on b1 (on-link),
//! r4 (off-link, IPv4 outer header) and r6 (off-link, IPv6 outer header):
//! the remote ones are reached only by sending their encapsulated packets
//! to the router's MAC, which is what the gateways give (the IPv6 one is
//! the router's link-local address, as routers advertise it). Without the
//! key the same remote backend never resolves and every packet to it is
//! counted as `no_neighbor`, so the test fails if the gateway logic breaks.
//! The router forwards plain IP (ip_forward, rp_filter off); the remotes
//! answer the client directly through it (direct server return).
//!
//! The kernel here has no IPIP module: each backend runs the test-side
//! decapsulator (`tests/common/decap.rs`). Needs root; skipped otherwise.

#[path = "common/cutover.rs"]
mod cutover;
#[path = "common/decap.rs"]
mod decap;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/services.rs"]
mod services;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use cutover::{hold_connections, scrape, serve_on, start_cutover, stop_cutover};
use netns::{in_netns, ip, sysctl, Node, Topology};
use services::NameServer;

const VIP4: &str = "198.18.0.10";
const VIP6: &str = "fd98::10";
/// The IPv4 backend behind the router.
const R4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);
/// The IPv6 backend behind the router.
const R6: &str = "fd78::11";
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
/// router on it, and the remote backends behind the router.
struct Net {
    topo: Topology,
    router: Node,
    /// The router's link-local address on the segment.
    router_ll: String,
    r4_ns: String,
    r6_ns: String,
}

fn set_all(ns: &str, settings: &[(&str, &str)]) {
    for (key, val) in settings {
        sysctl(ns, key, val).unwrap_or_else(|e| panic!("{ns}: {e}"));
    }
}

fn ipx(args: &[&str]) {
    ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// A backend namespace behind the router's `ifname`, on subnet
/// 10.`n`.0.0/24 and fd`n`::/64 (router .1 / ::1, backend .11 / ::11),
/// routing everything through the router and holding the VIPs on `lo`.
fn add_remote(topo: &mut Topology, router: &str, role: &str, ifname: &str, n: u8) -> String {
    let ns = topo.add_namespace(role).expect("remote namespace");
    ipx(&[
        "-n", router, "link", "add", ifname, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ]);
    set_all(
        &ns,
        &[
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.lo.rp_filter", "0"),
            ("net.ipv4.ip_nonlocal_bind", "1"),
            ("net.ipv6.ip_nonlocal_bind", "1"),
        ],
    );
    for (dev_ns, dev, host) in [(router, ifname, 1), (ns.as_str(), "eth0", 11)] {
        ipx(&[
            "-n",
            dev_ns,
            "addr",
            "add",
            &format!("10.{n}.0.{host}/24"),
            "dev",
            dev,
        ]);
        ipx(&[
            "-n",
            dev_ns,
            "-6",
            "addr",
            "add",
            &format!("fd{n}::{host}/64"),
            "dev",
            dev,
            "nodad",
        ]);
        ipx(&["-n", dev_ns, "link", "set", dev, "up"]);
        netns::disable_offloads(dev_ns, dev).expect("offloads");
    }
    ipx(&[
        "-n",
        &ns,
        "route",
        "add",
        "default",
        "via",
        &format!("10.{n}.0.1"),
    ]);
    ipx(&[
        "-n",
        &ns,
        "-6",
        "route",
        "add",
        "default",
        "via",
        &format!("fd{n}::1"),
    ]);
    ipx(&[
        "-n",
        &ns,
        "route",
        "add",
        "local",
        netns::VIP_V4_NET,
        "dev",
        "lo",
    ]);
    ipx(&[
        "-n",
        &ns,
        "-6",
        "route",
        "add",
        "local",
        netns::VIP_V6_NET,
        "dev",
        "lo",
    ]);
    // The lb's own kernel (health checks) reaches the remote subnets
    // through the router, as on a real network. The data plane does not
    // use these routes: it decides from the interface prefixes and the
    // gateway keys alone.
    let lb = topo.lb.ns.clone();
    ipx(&[
        "-n",
        &lb,
        "route",
        "add",
        &format!("10.{n}.0.0/24"),
        "via",
        "10.99.0.3",
    ]);
    ipx(&[
        "-n",
        &lb,
        "-6",
        "route",
        "add",
        &format!("fd{n}::/64"),
        "via",
        "fd99::3",
    ]);
    ns
}

fn build(prefix: &str) -> Net {
    let mut topo = Topology::build(prefix, 1).expect("topology");
    let router = topo.add_segment_node("r", 3).expect("router");
    let r = router.ns.clone();
    set_all(
        &r,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.eth0.rp_filter", "0"),
            // The lb and b1 are on the router's segment too: no redirects,
            // which would teach the lb's kernel a shortcut.
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.eth0.send_redirects", "0"),
        ],
    );
    let r4_ns = add_remote(&mut topo, &r, "r4", "eth1", 77);
    let r6_ns = add_remote(&mut topo, &r, "r6", "eth2", 78);
    let out = ip(&[
        "-n", &r, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
    ])
    .expect("router link-local address");
    let text = String::from_utf8_lossy(&out.stdout);
    let router_ll = text
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no link-local address on the router: {text}"))
        .to_owned();
    Net {
        topo,
        router,
        router_ll,
        r4_ns,
        r6_ns,
    }
}

fn config(net: &Net, gateway: bool, backends: &[IpAddr]) -> String {
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let gateway = if gateway {
        format!(
            "gateway_v4 = \"{}\"\ngateway_v6 = \"{}\"\n",
            net.router.ipv4, net.router_ll
        )
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
encap_source_v6 = "{lb6}"
{gateway}
[dns]
listen = []

[metrics]
listen = "{METRICS}"

[[vip_pool]]
name = "vips"
prefixes = ["198.18.0.0/24", "fd98::/64"]

[[service]]
name = "web"
pool = "vips"
ports = ["tcp/80", "udp/9999"]
families = ["ipv4", "ipv6"]
vips = ["{VIP4}", "{VIP6}"]
backends = [{backends}]
"#,
        lb = net.topo.lb.ipv4,
        lb6 = net.topo.lb.ipv6,
        backends = backends.join(", "),
    )
}

/// A name server in `ns` on both VIPs and on `own` (for the health
/// checks).
fn serve(ns: &str, name: &str, own: IpAddr) -> NameServer {
    let addrs = vec![VIP4.parse().unwrap(), VIP6.parse().unwrap(), own];
    serve_on(ns, name, addrs)
}

/// `cutover_drops_total{reason="no_neighbor"}`, summed over its series
/// (0 when the series is not there yet).
fn no_neighbor(net: &Net) -> f64 {
    scrape(&net.topo.lb.ns, METRICS)
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
fn wait_for_backend(net: &Net, vip: &str, backend: &'static str, log: &Path) {
    let addr = SocketAddr::new(vip.parse().unwrap(), 80);
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

/// `n` UDP datagrams to `vip`, each from a new socket (a new flow).
fn datagrams(net: &Net, vip: &'static str, n: u32) {
    in_netns(&net.topo.client.ns, move || {
        let any = if vip.contains(':') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        for i in 0..n {
            let s = std::net::UdpSocket::bind(any).expect("bind");
            s.send_to(&i.to_be_bytes(), (vip, 9999)).expect("send");
        }
    })
    .expect("client namespace");
}

/// The backends' addresses, as `cutover_backend_healthy` labels them,
/// that are not healthy.
fn unhealthy(net: &Net, backends: &[IpAddr]) -> Vec<IpAddr> {
    let text = scrape(&net.topo.lb.ns, METRICS);
    backends
        .iter()
        .copied()
        .filter(|b| {
            let label = format!("backend=\"{b}\"");
            !text.lines().any(|l| {
                l.starts_with("cutover_backend_healthy{") && l.contains(&label) && l.ends_with(" 1")
            })
        })
        .collect()
}

#[test]
fn off_link_backends_are_served_through_the_gateways() {
    if skip() {
        return;
    }
    let net = build(&prefix("a"));
    let b1 = net.topo.backends[0].clone();
    let r6: IpAddr = R6.parse().unwrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    let backends = [IpAddr::V4(b1.ipv4), IpAddr::V4(R4), r6];
    std::fs::write(&cfg_path, config(&net, true, &backends)).expect("write config");
    let log = dir.path().join("cutover.log");
    let _servers = [
        serve(&b1.ns, "b1", IpAddr::V4(b1.ipv4)),
        serve(&net.r4_ns, "r4", IpAddr::V4(R4)),
        serve(&net.r6_ns, "r6", r6),
    ];
    let decaps = [
        decap::start_decap(&b1.ns).expect("decapsulator on b1"),
        decap::start_decap(&net.r4_ns).expect("decapsulator on r4"),
        decap::start_decap(&net.r6_ns).expect("decapsulator on r6"),
    ];
    let cutover = start_cutover(&net.topo.lb.ns, &cfg_path, &log);
    wait_metrics(&net, &log);
    for b in ["b1", "r4", "r6"] {
        wait_for_backend(&net, VIP4, b, &log);
    }
    // Every backend healthy, so each takes new flows.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !unhealthy(&net, &backends).is_empty() {
        assert!(
            Instant::now() < deadline,
            "unhealthy backends {:?}; cutover log:\n{}",
            unhealthy(&net, &backends),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let before = no_neighbor(&net);
    let v4 = hold_connections(
        &net.topo.client.ns,
        SocketAddr::new(VIP4.parse().unwrap(), 80),
        200,
    );
    let v6 = hold_connections(
        &net.topo.client.ns,
        SocketAddr::new(VIP6.parse().unwrap(), 80),
        60,
    );
    let mut share = BTreeMap::new();
    for b in v4.iter().chain(&v6) {
        *share.entry(b.as_str()).or_insert(0usize) += 1;
    }
    assert_eq!(share.len(), 3, "every backend gets connections: {share:?}");
    for (b, n) in &share {
        assert!(
            *n >= 260 / 3 / 3,
            "backend {b} got only {n} of 260: {share:?}"
        );
    }
    datagrams(&net, VIP4, 100);
    datagrams(&net, VIP6, 100);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        no_neighbor(&net),
        before,
        "no packet was dropped for want of a next hop once resolved"
    );
    let text = stop_cutover(cutover, &log);
    for (name, d) in ["b1", "r4", "r6"].into_iter().zip(decaps) {
        let stats = d.stop().expect("decapsulator");
        assert!(
            stats.packets > 0,
            "{name} decapsulated nothing: {stats:?}\n{text}"
        );
    }
}

#[test]
fn off_link_backend_without_gateway_is_no_neighbor() {
    if skip() {
        return;
    }
    let net = build(&prefix("b"));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    std::fs::write(&cfg_path, config(&net, false, &[IpAddr::V4(R4)])).expect("write config");
    let log = dir.path().join("cutover.log");
    let _server = serve(&net.r4_ns, "r4", IpAddr::V4(R4));
    let d = decap::start_decap(&net.r4_ns).expect("decapsulator on r4");
    let cutover = start_cutover(&net.topo.lb.ns, &cfg_path, &log);
    wait_metrics(&net, &log);
    // Several refreshes (about one a second), then traffic.
    std::thread::sleep(Duration::from_secs(3));
    let before = no_neighbor(&net);
    datagrams(&net, VIP4, 100);
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
    let text = stop_cutover(cutover, &log);
    let why = "no [dataplane] gateway_v4 is configured";
    assert_eq!(
        text.matches(why).count(),
        1,
        "the reason is logged once:\n{text}"
    );
    let stats = d.stop().expect("decapsulator");
    assert_eq!(stats.packets, 0, "nothing reached the remote backend");
}
