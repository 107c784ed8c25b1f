//! `cutover run` as a child process in the lb namespace, and the two ends
//! of traffic through it, for the end-to-end tests that run the binary
//! (`run_drivers`, `gateway`, `icmp_netns`): a one-service configuration,
//! backends that answer with their name on the
//! VIPs, clients that hold many connections, a `/metrics` scrape.
//!
//! Use from a test crate next to `netns.rs` and `services.rs`:
//! `#[path = "common/cutover.rs"] mod cutover;`.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::{in_netns, KillOnDrop, Topology};
use super::services::{serve_name, Conn, NameServer};

/// The IPv4 VIP of [`one_service_config`]'s service.
pub const VIP4: &str = "198.18.0.10";
/// Its IPv6 VIP.
pub const VIP6: &str = "fd98::10";
/// Where that configuration's metrics listen (in the lb namespace).
pub const METRICS: &str = "127.0.0.1:9100";

/// A configuration for `cutover run` in `topo`'s lb namespace: one
/// service `web` on [`VIP4`] and [`VIP6`], ports tcp/80 and udp/9999, over
/// every backend of `topo`, with the given driver, forwarding mode and
/// workers (DPDK through its AF_PACKET PMD on the lb's veth).
pub fn one_service_config(
    topo: &Topology,
    driver: &str,
    forwarding: &str,
    workers: usize,
) -> String {
    let backends: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("\"{}\"", b.ipv4))
        .collect();
    format!(
        r#"
[dataplane]
driver = "{driver}"
interfaces = ["{iface}"]
workers = {workers}
forwarding = "{forwarding}"
encap_source_v4 = "{lb}"

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
        lb = topo.lb.ipv4,
        backends = backends.join(", "),
        iface = if driver == "dpdk" {
            "net_af_packet0"
        } else {
            "eth0"
        },
    ) + if driver == "dpdk" {
        // No NIC, no hugepages: DPDK's AF_PACKET PMD on the lb's veth.
        "\n[dataplane.dpdk]\neal_args = [\"--no-huge\", \"-m\", \"512\", \"--no-pci\", \"--no-shconf\", \"-l\", \"0\", \"-d\", \"/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0\", \"--vdev=net_af_packet0,iface=eth0\"]\n"
    } else {
        ""
    }
}

/// `cutover run --config cfg_path` in namespace `ns`, its log in `log`.
pub fn start_cutover(ns: &str, cfg_path: &Path, log: &Path) -> KillOnDrop {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
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

/// SIGTERM, then waits (10 s at most) for a successful exit; returns the
/// log. Panics if cutover does not stop or exits with an error.
pub fn stop_cutover(mut cutover: KillOnDrop, log: &Path) -> String {
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

/// A name server in `ns` on port 80 of every address in `addrs` (the VIPs
/// for clients, and the backend's own address for the health checks).
pub fn serve_on(ns: &str, name: &str, addrs: Vec<IpAddr>) -> NameServer {
    let listeners = in_netns(ns, move || -> std::io::Result<Vec<TcpListener>> {
        addrs.iter().map(|a| TcpListener::bind((*a, 80))).collect()
    })
    .expect("enter backend namespace")
    .expect("bind on the VIPs");
    serve_name(name, listeners).expect("serve")
}

/// Opens `n` connections to `addr` from namespace `ns` (all held open at
/// once), exchanges three more lines on each, and returns the backend per
/// connection. Panics if any connection fails or changes backend.
pub fn hold_connections(ns: &str, addr: SocketAddr, n: usize) -> Vec<String> {
    in_netns(ns, move || {
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
                assert_eq!(
                    who, c.backend,
                    "connection {i} moved from {} to {who}",
                    c.backend
                );
            }
        }
        conns.into_iter().map(|c| c.backend).collect::<Vec<_>>()
    })
    .expect("enter client namespace")
}

/// `GET /metrics` from `addr` inside namespace `ns`.
pub fn scrape(ns: &str, addr: &'static str) -> String {
    in_netns(ns, move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
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
