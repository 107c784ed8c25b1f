//! `cutover run` on AF_PACKET, end to end in network namespaces: a client,
//! the load balancer and three backends on one segment; real kernel TCP on
//! both ends. Every connection must succeed, keep its backend for its whole
//! life, and the backends must share the connections.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

#[path = "common/netns.rs"]
mod netns;
#[path = "common/services.rs"]
mod services;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use netns::{in_netns, KillOnDrop, Topology};
use services::{serve_name, Conn, NameServer};

const VIP4: &str = "198.18.0.10";
const VIP6: &str = "fd98::10";

fn skip() -> bool {
    if netns::netns_available() {
        return false;
    }
    eprintln!("skipping: needs root and `ip netns` (network namespaces)");
    true
}

fn config(topo: &Topology, forwarding: &str, workers: usize) -> String {
    let backends: Vec<String> = topo
        .backends
        .iter()
        .map(|b| format!("\"{}\"", b.ipv4))
        .collect();
    format!(
        r#"
[dataplane]
driver = "af_packet"
interfaces = ["eth0"]
workers = {workers}
forwarding = "{forwarding}"
encap_source_v4 = "{lb}"

[dns]
listen = []

[metrics]
listen = "off"

[[vip_pool]]
name = "vips"
prefixes = ["198.18.0.0/24", "fd98::/64"]

[[service]]
name = "web"
pool = "vips"
ports = ["tcp/80"]
families = ["ipv4", "ipv6"]
vips = ["{VIP4}", "{VIP6}"]
backends = [{backends}]
"#,
        lb = topo.lb.ipv4,
        backends = backends.join(", ")
    )
}

/// Name servers on every backend, bound to both VIPs on port 80.
fn start_backends(topo: &Topology) -> Vec<NameServer> {
    topo.backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let listeners = in_netns(&b.ns, || -> std::io::Result<Vec<TcpListener>> {
                Ok(vec![
                    TcpListener::bind((VIP4.parse::<IpAddr>().unwrap(), 80))?,
                    TcpListener::bind((VIP6.parse::<IpAddr>().unwrap(), 80))?,
                ])
            })
            .expect("enter backend namespace")
            .expect("bind on the VIPs");
            serve_name(&format!("b{}", i + 1), listeners).expect("serve")
        })
        .collect()
}

fn start_cutover(topo: &Topology, cfg_path: &Path, log: &Path) -> KillOnDrop {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.lb.ns,
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

/// Opens `n` connections to `vip` from the client (all held open at once),
/// exchanges three more lines on each, and returns the backend per
/// connection. Panics if any connection fails or changes backend.
fn connections(topo: &Topology, vip: IpAddr, n: usize) -> Vec<String> {
    let addr = SocketAddr::new(vip, 80);
    in_netns(&topo.client.ns, move || {
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

fn stop(mut cutover: KillOnDrop, log: &Path) {
    let pid = cutover.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = cutover.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cutover did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "cutover exited with {status}:\n{text}");
    assert!(
        text.contains("stopped"),
        "no clean stop in the log:\n{text}"
    );
}

fn run_case(prefix: &str, forwarding: &str) {
    let topo = Topology::build(prefix, 3).expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    std::fs::write(&cfg_path, config(&topo, forwarding, 2)).expect("write config");
    let log = dir.path().join("cutover.log");
    let _servers = start_backends(&topo);
    let cutover = start_cutover(&topo, &cfg_path, &log);

    let vip4: IpAddr = VIP4.parse().unwrap();
    let probe = SocketAddr::new(vip4, 80);
    let ready = in_netns(&topo.client.ns, move || {
        services::wait_until_served(probe, Duration::from_secs(20))
    })
    .expect("client namespace");
    if let Err(e) = ready {
        panic!(
            "the VIP never answered: {e}\ncutover log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    let v4 = connections(&topo, vip4, 200);
    let v6 = connections(&topo, VIP6.parse().unwrap(), 30);
    let mut share = std::collections::BTreeMap::new();
    for b in v4.iter().chain(&v6) {
        *share.entry(b.clone()).or_insert(0usize) += 1;
    }
    assert_eq!(share.len(), 3, "every backend gets connections: {share:?}");
    for (b, n) in &share {
        assert!(
            *n >= 230 / 3 / 3,
            "backend {b} got only {n} of 230: {share:?}"
        );
    }
    stop(cutover, &log);
}

#[test]
fn l2dsr_serves_200_tcp_connections_on_af_packet() {
    if skip() {
        return;
    }
    run_case("rap1", "l2dsr");
}
