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
//! prefix with the command that fixes it.
//!
//! AF_XDP takes the live VIPs' packets away from the kernel, but its XDP
//! program passes the rest of a pool's traffic on: packets to a released
//! VIP (from clients with stale DNS) or to an address not handed out yet.
//! Answering those, or dropping them, is fine; forwarding them is not:
//! out through the default route, back from the router that routes the
//! pool to this host, again and again until the TTL runs out. So with
//! AF_XDP only a routed prefix with forwarding on is a warning. DPDK takes
//! the whole interface away from the kernel and needs no check.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::control::config::Config;
use crate::io::route::{self, Route};

/// Which packets to the VIPs the kernel sees besides cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSees {
    /// A copy of every one (AF_PACKET).
    Everything,
    /// Those to addresses that are not live VIPs (AF_XDP).
    NotLive,
}

/// Why the kernel's handling of `route` for a received packet of the
/// family `v6`, with forwarding `forwarding` on the interface, reaches the
/// clients or the network; `None` when it is harmless.
pub fn trouble(route: Route, v6: bool, forwarding: bool, sees: KernelSees) -> Option<&'static str> {
    if sees == KernelSees::NotLive {
        return (forwarding && matches!(route, Route::Unicast | Route::OtherType(_))).then_some(
            "is routed and forwarding is on: the kernel forwards packets to addresses that \
             are not live VIPs (released, or not handed out yet) back towards the router, \
             which sends them back here until their TTL runs out",
        );
    }
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
pub fn check(cfg: &Config, vips: &[IpAddr], sees: KernelSees) -> Vec<String> {
    let prefixes: Vec<IpNet> = cfg
        .pools
        .iter()
        .flat_map(|p| p.prefixes.iter().copied())
        .collect();
    let mut out = Vec::new();
    for prefix in prefixes {
        let v6 = matches!(prefix, IpNet::V6(_));
        let forwards = cfg.dataplane.interfaces.iter().any(|i| forwarding(i, v6));
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
            if let Some(why) = trouble(route, v6, forwards, sees) {
                let ip = if v6 { "ip -6" } else { "ip" };
                let fix = if route == Route::Local {
                    format!("remove {addr} from this host's interfaces")
                } else {
                    format!("{ip} route add blackhole {prefix}")
                };
                let driver = match sees {
                    KernelSees::Everything => "af_packet",
                    KernelSees::NotLive => "af_xdp",
                };
                out.push(format!(
                    "VIP prefix {prefix}: {addr} {why}; with the {driver} driver the kernel \
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
        let all = KernelSees::Everything;
        for forwarding in [false, true] {
            for v6 in [false, true] {
                assert_eq!(trouble(Route::Blackhole, v6, forwarding, all), None);
                assert!(trouble(Route::Local, v6, forwarding, all).is_some());
                // A routed VIP: dropped unless the kernel forwards.
                assert_eq!(
                    trouble(Route::Unicast, v6, forwarding, all).is_some(),
                    forwarding
                );
                // No route: IPv6 always answers with an error, IPv4 only
                // when forwarding.
                for r in [Route::NoRoute, Route::Unreachable, Route::Prohibit] {
                    assert_eq!(trouble(r, v6, forwarding, all).is_some(), v6 || forwarding);
                }
            }
        }
    }

    #[test]
    fn with_af_xdp_only_a_forwarding_loop_is_trouble() {
        let rest = KernelSees::NotLive;
        for v6 in [false, true] {
            for route in [
                Route::Blackhole,
                Route::Local,
                Route::NoRoute,
                Route::Unreachable,
                Route::Prohibit,
            ] {
                assert_eq!(trouble(route, v6, true, rest), None, "{route:?}");
            }
            assert_eq!(trouble(Route::Unicast, v6, false, rest), None);
            assert!(trouble(Route::Unicast, v6, true, rest).is_some());
        }
    }
}
