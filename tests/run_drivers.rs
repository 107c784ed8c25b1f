//! `cutover run` on AF_PACKET and AF_XDP, end to end in network namespaces: a client,
//! the load balancer and three backends on one segment; real kernel TCP on
//! both ends. Every connection must succeed, keep its backend for its whole
//! life, and the backends must share the connections.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

#[path = "common/cutover.rs"]
mod cutover;
#[path = "common/decap.rs"]
mod decap;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/services.rs"]
mod services;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use cutover::{
    hold_connections, one_service_config, scrape, serve_on, start_cutover, stop_cutover, METRICS,
    VIP4, VIP6,
};
use netns::{in_netns, KillOnDrop, Topology};
use services::NameServer;

fn skip() -> bool {
    if netns::netns_available() {
        return false;
    }
    eprintln!("skipping: needs root and `ip netns` (network namespaces)");
    true
}

/// Name servers on every backend: the VIPs for clients, the backend's own
/// address for cutover's health checks (TCP connect to the first service
/// port).
fn start_backends(topo: &Topology) -> Vec<NameServer> {
    let vips: [IpAddr; 2] = [VIP4.parse().unwrap(), VIP6.parse().unwrap()];
    topo.backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let addrs = vec![vips[0], vips[1], IpAddr::V4(b.ipv4)];
            serve_on(&b.ns, &format!("b{}", i + 1), addrs)
        })
        .collect()
}

fn stop(cutover: KillOnDrop, log: &Path, driver: &str) {
    let text = stop_cutover(cutover, log);
    assert!(
        text.contains("stopped"),
        "no clean stop in the log:\n{text}"
    );
    // DPDK workers are lcores, so the mempool caches serve them.
    if driver == "dpdk" {
        assert!(
            text.contains("worker registered as a DPDK lcore"),
            "a DPDK worker without an lcore:\n{text}"
        );
    }
}

fn run_case(prefix: &str, driver: &str, forwarding: &str) {
    let topo = Topology::build(prefix, 3).expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    // The topology's veths have one queue: AF_XDP runs one worker on it.
    let workers = if driver == "af_packet" { 2 } else { 1 };
    std::fs::write(
        &cfg_path,
        one_service_config(&topo, driver, forwarding, workers),
    )
    .expect("write config");
    let log = dir.path().join("cutover.log");
    let _servers = start_backends(&topo);
    // ipip: the backends' kernels have no IPIP support here; a user-space
    // decapsulator hands the inner packets to them through a TUN device.
    let _decaps: Vec<decap::Decap> = if forwarding == "ipip" {
        topo.backends
            .iter()
            .map(|b| decap::start_decap(&b.ns).expect("start decapsulator"))
            .collect()
    } else {
        Vec::new()
    };
    let cutover = start_cutover(&topo.lb.ns, &cfg_path, &log);

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

    let v4 = hold_connections(&topo.client.ns, SocketAddr::new(vip4, 80), 200);
    let v6 = hold_connections(
        &topo.client.ns,
        SocketAddr::new(VIP6.parse().unwrap(), 80),
        30,
    );
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
    check_metrics(&topo);
    stop(cutover, &log, driver);
}

/// The value of the sample whose line starts with `series` (name and
/// labels exactly as the exporter prints them).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        if !series.starts_with(name) || series.as_bytes().get(name.len()) != Some(&b'{') {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

/// Exactly N datagrams to the VIP show up as exactly N more packets of
/// the version; the state and worker series are there.
fn check_metrics(topo: &Topology) {
    std::thread::sleep(Duration::from_millis(1500));
    let web = [("service", "web"), ("version", "1")];
    let before = scrape(&topo.lb.ns, METRICS);
    let p0 = sample(&before, "cutover_packets_total", &web)
        .unwrap_or_else(|| panic!("no packets series in:\n{before}"));
    assert!(p0 > 0.0);
    in_netns(&topo.client.ns, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        for i in 0..100u32 {
            s.send_to(&i.to_be_bytes(), (VIP4, 9999)).expect("send");
        }
    })
    .expect("client namespace");
    std::thread::sleep(Duration::from_millis(1500));
    let after = scrape(&topo.lb.ns, METRICS);
    let p1 = sample(&after, "cutover_packets_total", &web).expect("packets series");
    assert_eq!(p1 - p0, 100.0, "exactly the 100 datagrams were counted");
    assert_eq!(
        sample(
            &after,
            "cutover_version_state",
            &[
                ("service", "web"),
                ("version", "1"),
                ("vip", VIP4),
                ("state", "active")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "cutover_version_state",
            &[
                ("service", "web"),
                ("version", "1"),
                ("vip", VIP4),
                ("state", "draining")
            ]
        ),
        Some(0.0)
    );
    assert!(sample(
        &after,
        "cutover_worker_rx_packets_total",
        &[("worker", "0")]
    )
    .is_some());
    assert!(sample(&after, "cutover_drops_total", &[("reason", "no_service")]).is_some());
    assert!(
        sample(
            &after,
            "cutover_backend_healthy",
            &[("service", "web"), ("backend", "10.99.0.11")]
        ) == Some(1.0)
    );
}

#[test]
fn l2dsr_serves_200_tcp_connections_on_af_packet() {
    if skip() {
        return;
    }
    run_case("rap1", "af_packet", "l2dsr");
}

#[test]
fn ipip_serves_200_tcp_connections_on_af_packet() {
    if skip() {
        return;
    }
    run_case("rap2", "af_packet", "ipip");
}

#[test]
fn af_xdp_l2dsr_serves_200_tcp_connections() {
    if skip() {
        return;
    }
    run_case("rax1", "af_xdp", "l2dsr");
}

#[test]
fn af_xdp_ipip_serves_200_tcp_connections() {
    if skip() {
        return;
    }
    run_case("rax2", "af_xdp", "ipip");
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_l2dsr_serves_200_tcp_connections() {
    if skip() {
        return;
    }
    run_case("rdp1", "dpdk", "l2dsr");
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_ipip_serves_200_tcp_connections() {
    if skip() {
        return;
    }
    run_case("rdp2", "dpdk", "ipip");
}
