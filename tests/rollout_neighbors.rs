//! A rollout to a backend the load balancer's kernel has never talked to:
//! the new version's very first connection must get through.
//!
//! `cutover run` (AF_PACKET, `l2dsr`) serves `web` on backend b1 only; b2's
//! entry is flushed from the lb's neighbour table before cutover starts,
//! and nothing makes the lb talk to b2. Then `cutover rollout web
//! --backends b2`, and at once a connection to the new VIP. Its first SYN
//! gets through only if the version was published with b2's next hop,
//! which the periodic refresh (once a second) would find too late: no
//! packet may be dropped as `no_neighbor` (the check that does not depend
//! on timing), and the connection must be up within the connect timeout.
//! Needs root; skipped with a message otherwise.

#[path = "common/cutover.rs"]
mod cutover;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/services.rs"]
mod services;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use cutover::{one_service_config, scrape, serve_on, start_cutover, stop_cutover, METRICS};
use netns::{in_netns, run_in, Topology};

/// The connect timeout: generous for a loaded CI machine; the drop
/// counter is what tells a first SYN lost.
const FIRST_TRY: Duration = Duration::from_secs(5);

/// Connects to `addr` once (no retry beyond the kernel's own) and returns
/// the name of the backend that answers.
fn first_connection(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, FIRST_TRY)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"who?\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// The value of the `cutover_drops_total` sample for `reason`, 0 when
/// the series is absent.
fn drops(metrics: &str, reason: &str) -> f64 {
    let series = format!("cutover_drops_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn rollout_to_an_unresolved_backend_serves_its_first_connection() {
    if !netns::netns_available() {
        eprintln!("skipping: needs root and `ip netns` (network namespaces)");
        return;
    }
    let topo = Topology::build("rnb", 2).expect("topology");
    let (b1, b2) = (&topo.backends[0], &topo.backends[1]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    let text = one_service_config(&topo, "af_packet", "l2dsr", 1);
    let all = format!("backends = [\"{}\", \"{}\"]", b1.ipv4, b2.ipv4);
    assert!(text.contains(&all), "the configuration lists both backends");
    let text = text.replace(&all, &format!("backends = [\"{}\"]", b1.ipv4));
    std::fs::write(&cfg_path, text).expect("write config");

    // Every VIP of the pool is local on the backends' loopback: one
    // wildcard listener serves the new VIP and the health checks.
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let _servers = [
        serve_on(&b1.ns, "b1", vec![any]),
        serve_on(&b2.ns, "b2", vec![any]),
    ];
    let b2_addr = b2.ipv4.to_string();
    let flush = run_in(
        &topo.lb.ns,
        "ip",
        &["neigh", "flush", "to", &b2_addr, "dev", "eth0"],
    )
    .expect("ip neigh flush");
    assert!(flush.status.success(), "ip neigh flush: {flush:?}");

    let log = dir.path().join("cutover.log");
    let cutover = start_cutover(&topo.lb.ns, &cfg_path, &log);
    let v1 = SocketAddr::new(cutover::VIP4.parse().expect("VIP4"), 80);
    let ready = in_netns(&topo.client.ns, move || {
        services::wait_until_served(v1, Duration::from_secs(20))
    })
    .expect("client namespace");
    if let Err(e) = ready {
        panic!(
            "v1 never answered: {e}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let shown =
        run_in(&topo.lb.ns, "ip", &["neigh", "show", "to", &b2_addr]).expect("ip neigh show");
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        !shown.contains("lladdr"),
        "the lb resolved b2 before the rollout: {shown}"
    );

    let out = run_in(
        &topo.lb.ns,
        env!("CARGO_BIN_EXE_cutover"),
        &["rollout", "web", "--backends", &b2_addr, "--json"],
    )
    .expect("cutover rollout");
    assert!(
        out.status.success(),
        "rollout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("rollout prints JSON");
    let vip: IpAddr = version["vips"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
                .find(IpAddr::is_ipv4)
        })
        .unwrap_or_else(|| panic!("no IPv4 VIP in {version}"));
    let v2 = SocketAddr::new(vip, 80);
    let answer = in_netns(&topo.client.ns, move || first_connection(v2)).expect("client ns");
    let metrics = scrape(&topo.lb.ns, METRICS);
    let text = stop_cutover(cutover, &log);
    match answer {
        Ok(name) => assert_eq!(name, "b2", "the new version's backend answers"),
        Err(e) => panic!("the first connection to {v2} failed: {e}\ncutover log:\n{text}"),
    }
    assert_eq!(
        drops(&metrics, "no_neighbor"),
        0.0,
        "packets dropped for want of a next hop:\n{text}"
    );
}
