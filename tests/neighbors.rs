//! `io::neigh::dump` against a real kernel neighbour table: a namespace
//! with a veth pair, static IPv4 and IPv6 entries and FAILED/INCOMPLETE
//! ones, dumped from a thread inside the namespace. Needs root.

#[path = "common/netns.rs"]
mod netns;

use std::net::IpAddr;

use netns::{cleanup_stale, in_netns, netns_available, run_timeout, CMD_TIMEOUT};

/// The namespace of this test; deleted on drop, also when a test panics.
struct Ns(String);

impl Ns {
    fn create(name: &str) -> Ns {
        cleanup_stale("ngh1").expect("delete stale namespaces");
        ip(&["netns", "add", name]);
        Ns(name.to_owned())
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run_timeout(
            std::process::Command::new("ip").args(["netns", "del", &self.0]),
            CMD_TIMEOUT,
        );
    }
}

fn ip(args: &[&str]) {
    let out =
        run_timeout(std::process::Command::new("ip").args(args), CMD_TIMEOUT).expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dump_reads_the_namespace_table() {
    if !netns_available() {
        eprintln!("skipping: needs root and `ip netns` (network namespaces)");
        return;
    }
    let ns = Ns::create("ngh1-a");
    let n = ns.0.as_str();
    ip(&[
        "-n", n, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    ip(&["-n", n, "link", "set", "veth0", "up"]);
    ip(&["-n", n, "link", "set", "veth1", "up"]);
    ip(&["-n", n, "addr", "add", "10.98.0.1/24", "dev", "veth0"]);
    ip(&[
        "-n",
        n,
        "addr",
        "add",
        "fd98:1::1/64",
        "dev",
        "veth0",
        "nodad",
    ]);
    for (addr, mac) in [
        ("10.98.0.5", "02:11:22:33:44:55"),
        ("fd98:1::5", "02:11:22:33:44:66"),
    ] {
        ip(&[
            "-n",
            n,
            "neigh",
            "add",
            addr,
            "lladdr",
            mac,
            "dev",
            "veth0",
            "nud",
            "permanent",
        ]);
    }
    ip(&[
        "-n",
        n,
        "neigh",
        "add",
        "10.98.0.6",
        "dev",
        "veth0",
        "nud",
        "incomplete",
    ]);
    ip(&[
        "-n",
        n,
        "neigh",
        "add",
        "10.98.0.7",
        "dev",
        "veth0",
        "nud",
        "failed",
    ]);
    ip(&[
        "-n",
        n,
        "neigh",
        "add",
        "fd98:1::7",
        "dev",
        "veth0",
        "nud",
        "failed",
    ]);
    // A STALE entry with an address is still used by the kernel.
    ip(&[
        "-n",
        n,
        "neigh",
        "add",
        "10.98.0.8",
        "lladdr",
        "02:11:22:33:44:88",
        "dev",
        "veth0",
        "nud",
        "stale",
    ]);

    let table = in_netns(n, cutover::io::neigh::dump)
        .expect("enter namespace")
        .expect("dump");
    let get = |a: &str| table.get(&a.parse::<IpAddr>().unwrap()).copied();
    assert_eq!(get("10.98.0.5"), Some([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]));
    assert_eq!(get("fd98:1::5"), Some([0x02, 0x11, 0x22, 0x33, 0x44, 0x66]));
    assert_eq!(get("10.98.0.8"), Some([0x02, 0x11, 0x22, 0x33, 0x44, 0x88]));
    for unusable in ["10.98.0.6", "10.98.0.7", "fd98:1::7"] {
        assert_eq!(get(unusable), None, "{unusable} is not usable");
    }
    // Only this namespace's table: nothing of the host's.
    assert!(
        table.keys().all(|a| match a {
            IpAddr::V4(v4) => v4.octets()[..3] == [10, 98, 0],
            // The kernel's own multicast and link-local entries of veth0/1.
            IpAddr::V6(v6) =>
                v6.segments()[0] == 0xfd98
                    || v6.is_multicast()
                    || v6.segments()[0] & 0xffc0 == 0xfe80,
        }),
        "unexpected entries: {table:?}"
    );
}

#[test]
fn address_dump_gives_the_on_link_prefixes() {
    if !netns_available() {
        eprintln!("skipping: needs root and `ip netns` (network namespaces)");
        return;
    }
    let ns = Ns::create(&format!("ngh{}-b", std::process::id()));
    let n = ns.0.as_str();
    ip(&[
        "-n", n, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    ip(&["-n", n, "link", "set", "lo", "up"]);
    ip(&["-n", n, "link", "set", "veth0", "up"]);
    ip(&["-n", n, "link", "set", "veth1", "up"]);
    ip(&["-n", n, "addr", "add", "10.98.0.1/24", "dev", "veth0"]);
    ip(&["-n", n, "addr", "add", "10.97.5.1/16", "dev", "veth1"]);
    ip(&[
        "-n",
        n,
        "addr",
        "add",
        "fd98:1::1/64",
        "dev",
        "veth0",
        "nodad",
    ]);

    let (veth0, all) = in_netns(n, || {
        let veth0 = cutover::io::ifaddr::prefixes_of(&["veth0".to_owned()]);
        let all = cutover::io::ifaddr::prefixes_of(&["no-such-if".to_owned()]);
        (veth0, all)
    })
    .expect("enter namespace");
    let veth0: Vec<String> = veth0
        .expect("dump")
        .iter()
        .map(ToString::to_string)
        .filter(|p| !p.starts_with("fe80:"))
        .collect();
    assert_eq!(veth0, ["10.98.0.0/24", "fd98:1::/64"]);
    // No configured interface exists: every interface counts, host-scope
    // addresses (127.0.0.1/8, ::1/128) never do.
    let all: Vec<String> = all
        .expect("dump")
        .iter()
        .map(ToString::to_string)
        .filter(|p| !p.starts_with("fe80:"))
        .collect();
    assert_eq!(all, ["10.97.0.0/16", "10.98.0.0/24", "fd98:1::/64"]);
}
