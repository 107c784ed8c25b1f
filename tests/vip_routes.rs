//! `cutover run` on AF_PACKET warns when the host's kernel would not keep
//! out of the VIPs' way: a VIP prefix without a blackhole route (the
//! kernel answers IPv6 clients with "no route" errors), a VIP that is an
//! address of the host (the kernel answers with resets). The namespace
//! topology installs blackhole routes, so it starts without a warning;
//! then the routes are broken and cutover restarted. On AF_XDP, which
//! leaves the kernel only what is not a live VIP, those two are fine and
//! only a routed VIP prefix with forwarding on (a loop through the router)
//! is warned about. Needs root; skipped with a message otherwise.

#[path = "common/cutover.rs"]
mod cutover;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/services.rs"]
mod services;

use std::path::Path;
use std::time::{Duration, Instant};

use cutover::{one_service_config, start_cutover, stop_cutover, VIP4};
use netns::{run_in, Topology, VIP_V4_NET, VIP_V6_NET};

/// Starts cutover, waits until it serves, stops it, and returns its log.
fn run_once(ns: &str, cfg: &Path, log: &Path) -> String {
    let child = start_cutover(ns, cfg, log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("serving")
    {
        assert!(Instant::now() < deadline, "cutover never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_cutover(child, log)
}

fn ip_in(ns: &str, args: &[&str]) {
    let out = run_in(ns, "ip", args).expect("ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

#[test]
fn warns_about_vip_traffic_the_kernel_would_answer_or_loop() {
    if !netns::netns_available() {
        eprintln!("skipping: needs root and `ip netns` (network namespaces)");
        return;
    }
    let topo = Topology::build("vrt", 1).expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("cutover.toml");
    std::fs::write(&cfg, one_service_config(&topo, "af_packet", "l2dsr", 1)).expect("config");
    let lb = topo.lb.ns.as_str();

    let text = run_once(lb, &cfg, &dir.path().join("ok.log"));
    assert!(
        !text.contains("VIP prefix"),
        "blackhole routes in place, yet a warning:\n{text}"
    );

    ip_in(lb, &["-6", "route", "del", "blackhole", VIP_V6_NET]);
    ip_in(lb, &["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
    let text = run_once(lb, &cfg, &dir.path().join("bad.log"));
    let warned = |what: &str| text.lines().any(|l| l.contains("WARN") && l.contains(what));
    assert!(
        warned(&format!(
            "VIP prefix {VIP_V6_NET}: fd98:: has no usable route"
        )) && warned(&format!("ip -6 route add blackhole {VIP_V6_NET}")),
        "no warning about the IPv6 prefix without a route:\n{text}"
    );
    assert!(
        warned(&format!("{VIP4} is an address of this host"))
            && warned(&format!("remove {VIP4} from this host's interfaces")),
        "no warning about the local VIP:\n{text}"
    );

    // AF_XDP: the kernel only sees what is not a live VIP. Neither of the
    // above matters then; a routed prefix with forwarding on does (a loop
    // through the router).
    std::fs::write(&cfg, one_service_config(&topo, "af_xdp", "l2dsr", 1)).expect("config");
    let text = run_once(lb, &cfg, &dir.path().join("xdp-ok.log"));
    assert!(
        !text.contains("VIP prefix"),
        "AF_XDP warned about what only AF_PACKET minds:\n{text}"
    );
    ip_in(lb, &["route", "del", "blackhole", VIP_V4_NET]);
    let client = topo.client.ipv4.to_string();
    ip_in(lb, &["route", "add", VIP_V4_NET, "via", &client]);
    let fwd = run_in(lb, "sysctl", &["-qw", "net.ipv4.conf.eth0.forwarding=1"]).expect("sysctl");
    assert!(fwd.status.success(), "sysctl: {fwd:?}");
    let text = run_once(lb, &cfg, &dir.path().join("xdp-loop.log"));
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains(&format!("VIP prefix {VIP_V4_NET}"))
            && l.contains("forwarding is on")
            && l.contains("af_xdp")
            && l.contains(&format!("ip route add blackhole {VIP_V4_NET}"))),
        "no warning about the forwarding loop:\n{text}"
    );
    assert!(
        !text.contains(&format!("VIP prefix {VIP_V6_NET}")),
        "AF_XDP warned about the IPv6 prefix:\n{text}"
    );
}
