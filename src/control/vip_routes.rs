//! Does the host's kernel keep out of the VIPs' way?
//!
//! An AF_PACKET socket gets a copy of every frame; the kernel still
//! processes the original. For a packet to a VIP that is harmless only if
//! the kernel drops it silently. Otherwise the clients hear from it too:
//! it answers a VIP that is one of its own addresses (TCP resets), forwards
//! a duplicate when forwarding is on, and sends "unreachable" errors for a
//! VIP it has no usable route for (IPv6 always; IPv4 when forwarding is on,
//! see `ip_error` in net/ipv4/route.c and `ip6_pkt_discard` in
//! net/ipv6/route.c). A `blackhole` route for every VIP prefix is the fix,
//! and what the shipped topology scripts install.
//!
//! At start, `cutover run` with the AF_PACKET driver looks up the first
//! address of every pool prefix and every VIP in use, and warns once per
//! prefix with the command that fixes it. AF_XDP and DPDK take the VIPs'
//! packets away from the kernel and need none of this.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::control::config::Config;
use crate::io::route::{self, Route};

/// Why the kernel's handling of `route` for a received packet of the
/// family `v6`, with forwarding `forwarding` on the interface, reaches the
/// clients; `None` when it drops the packet silently.
pub fn trouble(route: Route, v6: bool, forwarding: bool) -> Option<&'static str> {
    match route {
        Route::Blackhole => None,
        Route::Local => {
            Some("is an address of this host: its kernel answers clients too (TCP resets)")
        }
        Route::Unicast | Route::OtherType(_) if forwarding => {
            Some("is routed and forwarding is on: the kernel forwards a copy of every packet")
        }
        Route::Unicast | Route::OtherType(_) => None,
        Route::Unreachable | Route::Prohibit | Route::NoRoute | Route::Refused(_)
            if v6 || forwarding =>
        {
            Some("has no usable route: the kernel answers clients with ICMP unreachable errors")
        }
        Route::Unreachable | Route::Prohibit | Route::NoRoute | Route::Refused(_) => None,
    }
}

/// Whether forwarding is on for `family` on interface `ifname`, from
/// /proc/sys; `false` when it cannot be read.
fn forwarding(ifname: &str, v6: bool) -> bool {
    let family = if v6 { "ipv6" } else { "ipv4" };
    std::fs::read_to_string(format!("/proc/sys/net/{family}/conf/{ifname}/forwarding"))
        .is_ok_and(|v| v.trim() != "0")
}

/// The warnings for `cfg`'s VIP prefixes, one per prefix in trouble (see
/// the module documentation), probing each prefix's first address and
/// every address of `vips` in it. Run in the data plane's namespace.
pub fn check(cfg: &Config, vips: &[IpAddr]) -> Vec<String> {
    let prefixes: Vec<IpNet> = cfg
        .pools
        .iter()
        .flat_map(|p| p.prefixes.iter().copied())
        .collect();
    let mut out = Vec::new();
    for prefix in prefixes {
        let v6 = matches!(prefix, IpNet::V6(_));
        let on: Vec<&String> = cfg
            .dataplane
            .interfaces
            .iter()
            .filter(|i| forwarding(i, v6))
            .collect();
        let mut probes = vec![prefix.network()];
        probes.extend(vips.iter().copied().filter(|v| prefix.contains(v)));
        for addr in probes {
            let route = match route::lookup(addr) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "route lookup failed");
                    continue;
                }
            };
            if let Some(why) = trouble(route, v6, !on.is_empty()) {
                let ip = if v6 { "ip -6" } else { "ip" };
                let fix = if route == Route::Local {
                    format!("remove {addr} from this host's interfaces")
                } else {
                    format!("{ip} route add blackhole {prefix}")
                };
                out.push(format!(
                    "VIP prefix {prefix}: {addr} {why}; with the af_packet driver the kernel \
                     must drop packets to VIPs silently: {fix}"
                ));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_silent_drops_are_trouble_free() {
        for forwarding in [false, true] {
            for v6 in [false, true] {
                assert_eq!(trouble(Route::Blackhole, v6, forwarding), None);
                assert!(trouble(Route::Local, v6, forwarding).is_some());
                // A routed VIP: dropped unless the kernel forwards.
                assert_eq!(
                    trouble(Route::Unicast, v6, forwarding).is_some(),
                    forwarding
                );
                // No route: IPv6 always answers with an error, IPv4 only
                // when forwarding.
                for r in [Route::NoRoute, Route::Unreachable, Route::Prohibit] {
                    assert_eq!(trouble(r, v6, forwarding).is_some(), v6 || forwarding);
                }
            }
        }
    }
}
