//! A rollout to a backend the load balancer's kernel has never talked to:
//! the new version's very first connection must get through.
//!
//! `cutover run` (AF_PACKET, `l2dsr`) serves `web` on backend b1 only; b2's
//! and b3's entries are flushed from the lb's neighbour table before
//! cutover starts, and nothing makes the lb talk to them. Then `cutover
//! rollout web --backends b2`, and at once a connection to the new VIP;
//! then a reload of a configuration that names b3 alone, and the same.
//! Each first SYN gets through only if its version was published with its
//! backend's next hop, which the periodic refresh (once a second) would
//! find too late: no
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

/// `cutover ARGS --json` in namespace `ns`, parsed; panics on failure.
fn cli_json(ns: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run_in(ns, env!("CARGO_BIN_EXE_cutover"), &all).expect("cutover CLI");
    assert!(
        out.status.success(),
        "cutover {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the CLI prints JSON")
}

/// The IPv4 address among a version's `vips`.
fn ipv4_vip(version: &serde_json::Value) -> IpAddr {
    version["vips"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
                .find(IpAddr::is_ipv4)
        })
        .unwrap_or_else(|| panic!("no IPv4 VIP in {version}"))
}

/// `backends = [...]` of `topo`'s backends `which` (indices).
fn backends_line(topo: &Topology, which: &[usize]) -> String {
    let list: Vec<String> = which
        .iter()
        .map(|&i| format!("\"{}\"", topo.backends[i].ipv4))
        .collect();
    format!("backends = [{}]", list.join(", "))
}

#[test]
fn rollout_to_an_unresolved_backend_serves_its_first_connection() {
    if !netns::netns_available() {
        eprintln!("skipping: needs root and `ip netns` (network namespaces)");
        return;
    }
    let topo = Topology::build("rnb", 3).expect("topology");
    let lb = topo.lb.ns.as_str();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("cutover.toml");
    let text = one_service_config(&topo, "af_packet", "l2dsr", 1);
    let all = backends_line(&topo, &[0, 1, 2]);
    assert!(text.contains(&all), "the configuration lists every backend");
    std::fs::write(&cfg_path, text.replace(&all, &backends_line(&topo, &[0])))
        .expect("write config");

    // Every VIP of the pool is local on the backends' loopback: one
    // wildcard listener serves the new VIPs and the health checks.
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let _servers: Vec<_> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| serve_on(&b.ns, &format!("b{}", i + 1), vec![any]))
        .collect();
    // b2 and b3 are unknown to the lb's kernel, and stay so: nothing makes
    // the lb talk to them before their version exists.
    let unknown: Vec<String> = topo.backends[1..]
        .iter()
        .map(|b| b.ipv4.to_string())
        .collect();
    for b in &unknown {
        let flush = run_in(lb, "ip", &["neigh", "flush", "to", b, "dev", "eth0"]).expect("ip");
        assert!(flush.status.success(), "ip neigh flush: {flush:?}");
    }

    let log = dir.path().join("cutover.log");
    let cutover = start_cutover(lb, &cfg_path, &log);
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
    for b in &unknown {
        let shown = run_in(lb, "ip", &["neigh", "show", "to", b]).expect("ip neigh show");
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        assert!(
            !shown.contains("lladdr"),
            "the lb resolved {b} before its version: {shown}"
        );
    }

    // By the admin API: version 2 on b2 alone.
    let v2 = ipv4_vip(&cli_json(
        lb,
        &["rollout", "web", "--backends", &unknown[0]],
    ));
    let on_v2 = in_netns(&topo.client.ns, move || {
        first_connection(SocketAddr::new(v2, 80))
    })
    .expect("client ns");
    // By a reload of the configuration: version 3 on b3 alone.
    std::fs::write(&cfg_path, text.replace(&all, &backends_line(&topo, &[2])))
        .expect("write config");
    cli_json(lb, &["reload"]);
    let status = cli_json(lb, &["status"]);
    let v3 = status[0]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["state"] == "active"))
        .map(ipv4_vip)
        .unwrap_or_else(|| panic!("no active version in {status}"));
    assert!(v3 != v2, "the reload rolled out: {status}");
    let on_v3 = in_netns(&topo.client.ns, move || {
        first_connection(SocketAddr::new(v3, 80))
    })
    .expect("client ns");

    let metrics = scrape(lb, METRICS);
    let text = stop_cutover(cutover, &log);
    for (answer, want, vip) in [(on_v2, "b2", v2), (on_v3, "b3", v3)] {
        match answer {
            Ok(name) => assert_eq!(name, want, "the new version's backend answers"),
            Err(e) => panic!("the first connection to {vip} failed: {e}\ncutover log:\n{text}"),
        }
    }
    assert_eq!(
        drops(&metrics, "no_neighbor"),
        0.0,
        "packets dropped for want of a next hop:\n{text}"
    );
}
