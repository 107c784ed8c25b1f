//! Next hops from the kernel's neighbour table.
//!
//! The data plane needs the MAC address of every backend's next hop: the
//! backend itself when it is on-link (`l2dsr`, and on-link `ipip`
//! backends), the configured gateway otherwise (see
//! [`crate::control::nexthop`]). Static entries come from
//! `[dataplane.neighbors]`; the others are read from the kernel, off the
//! fast path, about once a second, with one rtnetlink dump of both
//! families and one of the interfaces' addresses (no process is spawned).
//! A next hop the kernel does not know yet is solicited with one UDP
//! datagram to its discard port, which makes the kernel resolve it; until
//! then the backend's packets are dropped as `no_neighbor`, and why is
//! logged once per backend.
//!
//! A once-a-second refresh is too slow for a version about to be named by
//! DNS: its first clients would connect within milliseconds, and the SYNs
//! to a backend the kernel had never talked to would be dropped until the
//! next refresh, longer than a client's first retransmission. So a rollout
//! (or a start, or a reload) first asks the kernel for the next hops of
//! its new backends and waits for them, up to [`RESOLVE_WAIT`]
//! ([`to_resolve`], [`await_resolved`]), before it publishes the version.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::control::config::{Config, Forwarding};
use crate::control::nexthop::{KernelView, Resolver, Route};
use crate::snapshot::{Snapshot, SnapshotError, VersionEntry};

/// Parses a MAC written `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// When a failed neighbour dump (index 0) or address dump (index 1) was
/// last logged, in seconds since the Unix epoch (0: never); keeps a
/// persistent failure to one warning a minute at a refresh a second.
static LAST_WARNING: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn warn_rarely(which: usize, what: &str, e: &std::io::Error) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Some(cell) = LAST_WARNING.get(which) else {
        return;
    };
    let last = cell.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60
        && cell
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %e, "reading the kernel {what} failed");
    } else {
        tracing::debug!(error = %e, "reading the kernel {what} failed");
    }
}

/// The kernel's resolved neighbours, both families, from one rtnetlink
/// dump (see [`crate::io::neigh::dump`]). A failed dump gives an empty
/// table: the next refresh tries again, and static entries still apply.
pub fn kernel_neighbors() -> HashMap<IpAddr, [u8; 6]> {
    crate::io::neigh::dump().unwrap_or_else(|e| {
        warn_rarely(0, "neighbour table", &e);
        HashMap::new()
    })
}

/// The kernel's neighbours and the on-link prefixes of `interfaces` (see
/// [`crate::io::ifaddr::prefixes_of`]). A failed address dump keeps the
/// `last` prefixes: addresses rarely change, and forgetting them would
/// send on-link backends to the gateway.
pub fn kernel_view(interfaces: &[String], last: &[IpNet]) -> KernelView {
    let prefixes = crate::io::ifaddr::prefixes_of(interfaces).unwrap_or_else(|e| {
        warn_rarely(1, "interface addresses", &e);
        last.to_vec()
    });
    KernelView {
        neighbors: kernel_neighbors(),
        prefixes,
    }
}

/// Asks the kernel to resolve `addr`: a one-byte datagram to the discard
/// port makes it send an ARP request or neighbour solicitation. A
/// link-local IPv6 address (a router's `fe80::1`) needs the interface it
/// is on: `scope`, the index of the first configured interface.
pub fn solicit(addr: IpAddr, scope: u32) {
    let (bind, to): (SocketAddr, SocketAddr) = match addr {
        IpAddr::V4(a) => (
            SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::from((a, 9)),
        ),
        IpAddr::V6(a) => {
            let scope = if a.segments()[0] & 0xffc0 == 0xfe80 {
                scope
            } else {
                0
            };
            (
                SocketAddr::from(([0u16; 8], 0)),
                SocketAddr::V6(SocketAddrV6::new(a, 9, 0, scope)),
            )
        }
    };
    if let Ok(sock) = UdpSocket::bind(bind) {
        let _ = sock.send_to(&[0], to);
    }
}

/// The longest a rollout, reload or start waits for the kernel to resolve
/// its backends' next hops (an ARP or neighbour-discovery round trip on the
/// local segment takes well under a millisecond; the kernel's first retry
/// comes after a second). A backend still unresolved then is published
/// without a next hop, as before: its packets are dropped as
/// `no_neighbor` until the periodic refresh finds it.
pub const RESOLVE_WAIT: Duration = Duration::from_secs(1);

/// How often [`await_resolved`] re-reads the kernel's neighbours.
const RESOLVE_POLL: Duration = Duration::from_millis(5);

/// The addresses to resolve before `backends` (each with the forwarding
/// mode of its service) can be published with next hops: for each backend
/// that `resolver` cannot resolve yet and that can be resolved (on one of
/// `kernel`'s on-link prefixes, or through a configured gateway), the
/// address it resolves at, once. With no prefix known, or off-link without
/// a gateway, nothing is worth waiting for; the periodic refresh still
/// solicits and explains those.
pub fn to_resolve(
    resolver: &Resolver<'_>,
    kernel: &KernelView,
    backends: impl IntoIterator<Item = (Forwarding, IpAddr)>,
) -> Vec<IpAddr> {
    let mut missing: Vec<IpAddr> = Vec::new();
    for (forwarding, addr) in backends {
        if resolver.next_hop(forwarding, addr).is_some() {
            continue;
        }
        let at = match resolver.route(forwarding, addr) {
            Route::OnLink if kernel.on_link(&addr) => addr,
            Route::Gateway(gw) => gw,
            _ => continue,
        };
        if !missing.contains(&at) {
            missing.push(at);
        }
    }
    missing
}

/// Solicits every address of `missing` (see [`to_resolve`]) at once, then
/// re-reads the kernel's neighbours and the addresses of `interfaces`
/// until all of `missing` are known or `wait` has passed. Returns the
/// newest view, or `None` when `missing` is empty (no dump is made).
/// Blocks for up to `wait`: call it without the control lock.
pub fn await_resolved(
    interfaces: &[String],
    missing: &[IpAddr],
    kernel: &KernelView,
    wait: Duration,
) -> Option<KernelView> {
    if missing.is_empty() {
        return None;
    }
    let scope = first_ifindex(interfaces);
    for &at in missing {
        solicit(at, scope);
    }
    let deadline = Instant::now() + wait;
    loop {
        std::thread::sleep(RESOLVE_POLL);
        let view = kernel_view(interfaces, &kernel.prefixes);
        let unresolved: Vec<&IpAddr> = missing
            .iter()
            .filter(|at| !view.neighbors.contains_key(at))
            .collect();
        if unresolved.is_empty() {
            return Some(view);
        }
        if Instant::now() >= deadline {
            tracing::info!(
                ?unresolved,
                "next hops not resolved within {wait:?}; publishing without them"
            );
            return Some(view);
        }
    }
}

/// The index of the first of `interfaces` (the scope of a link-local next
/// hop), 0 when there is none.
fn first_ifindex(interfaces: &[String]) -> u32 {
    interfaces
        .first()
        .and_then(|n| crate::io::ifaddr::ifindex(n))
        .unwrap_or(0)
}

/// A copy of `snap` with every backend's next hop set from the static
/// table of `cfg` or else from `kernel` (at the backend's own address when
/// it is on-link, at its gateway's otherwise), or `None` when nothing
/// changed.
///
/// Runs on every publish: a prefix scan and one or two hash probes per
/// backend, and nothing is copied unless a next hop actually changed.
pub fn refresh(
    cfg: &Config,
    snap: &Snapshot,
    kernel: &KernelView,
) -> Result<Option<Snapshot>, SnapshotError> {
    let resolver = Resolver::new(cfg, kernel);
    let resolve = |v: &VersionEntry, addr: IpAddr| {
        let forwarding = snap.service(v.service).map(|s| s.forwarding)?;
        resolver.next_hop(forwarding, addr)
    };
    let stale = snap
        .versions()
        .any(|v| v.backends.iter().any(|b| resolve(v, b.addr) != b.next_hop));
    if !stale {
        return Ok(None);
    }
    let mut versions: Vec<VersionEntry> = snap.versions().cloned().collect();
    for v in &mut versions {
        let hops: Vec<Option<[u8; 6]>> = v.backends.iter().map(|b| resolve(v, b.addr)).collect();
        for (b, hop) in v.backends.iter_mut().zip(hops) {
            b.next_hop = hop;
        }
    }
    Snapshot::new(
        snap.generation + 1,
        snap.settings.clone(),
        snap.services.clone(),
        versions,
    )
    .map(Some)
}

/// Solicits the next hop of every backend of `snap` that is still
/// unresolved (once per call; the control plane calls it about once a
/// second), and logs why once (see [`unresolved_next_hops`]).
pub fn solicit_unresolved(
    cfg: &Config,
    snap: &Snapshot,
    kernel: &KernelView,
    explained: &mut HashSet<(IpAddr, Route)>,
) {
    let scope = first_ifindex(&cfg.dataplane.interfaces);
    for at in unresolved_next_hops(cfg, snap, kernel, explained) {
        solicit(at, scope);
    }
}

/// The addresses to resolve for the backends of `snap` without a next
/// hop (each once: a backend's own, or its gateway's), logging once per
/// backend and route why it is unresolved. `explained` remembers what was
/// logged; a backend that resolves is forgotten, so it is reported again
/// if it loses its next hop. (One address may be a backend of an `ipip`
/// and of an `l2dsr` service, with a different route in each.)
pub fn unresolved_next_hops(
    cfg: &Config,
    snap: &Snapshot,
    kernel: &KernelView,
    explained: &mut HashSet<(IpAddr, Route)>,
) -> Vec<IpAddr> {
    let resolver = Resolver::new(cfg, kernel);
    let mut ask = Vec::new();
    let mut unresolved = HashSet::new();
    for v in snap.versions() {
        let Some(service) = snap.service(v.service) else {
            continue;
        };
        for b in v.backends.iter().filter(|b| b.next_hop.is_none()) {
            let route = resolver.route(service.forwarding, b.addr);
            unresolved.insert((b.addr, route));
            if explained.insert((b.addr, route)) {
                match resolver.explain(route, b.addr) {
                    (why, true) => tracing::warn!(backend = %b.addr, "{why}"),
                    (why, false) => tracing::info!(backend = %b.addr, "{why}"),
                }
            }
            if let Some(at) = route.resolve_at(b.addr) {
                if !ask.contains(&at) {
                    ask.push(at);
                }
            }
        }
    }
    explained.retain(|key| unresolved.contains(key));
    ask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_sends_off_link_ipip_backends_to_the_gateway() {
        let text = r#"[dataplane]
encap_source_v4 = "10.0.0.2"
gateway_v4 = "10.0.0.1"

[[vip_pool]]
name = "public"
prefixes = ["203.0.113.0/28"]

[[service]]
name = "tunnel"
pool = "public"
ports = ["tcp/80"]
backends = ["10.0.0.11", "10.7.0.11"]

[[service]]
name = "direct"
pool = "public"
ports = ["tcp/81"]
forwarding = "l2dsr"
backends = ["10.0.0.11", "10.7.0.11"]
"#;
        let cfg = crate::control::config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let snap = crate::control::bootstrap::initial_snapshot(&cfg).unwrap();
        let gw = [2, 0, 0, 0, 0, 1];
        let b1 = [2, 0, 0, 0, 0, 0x11];
        let mut view = KernelView {
            neighbors: [
                ("10.0.0.1".parse().unwrap(), gw),
                ("10.0.0.11".parse().unwrap(), b1),
            ]
            .into_iter()
            .collect(),
            prefixes: vec!["10.0.0.0/24".parse().unwrap()],
        };
        let next = refresh(&cfg, &snap, &view)
            .unwrap()
            .expect("next hops changed");
        assert_eq!(next.generation, snap.generation + 1);
        let hops = |s: &Snapshot, service: u32| -> Vec<Option<[u8; 6]>> {
            let v = s.versions().find(|v| v.service == service).unwrap();
            v.backends.iter().map(|b| b.next_hop).collect()
        };
        assert_eq!(hops(&next, 0), [Some(b1), Some(gw)]);
        // l2dsr: the off-link backend is not sent to the gateway.
        assert_eq!(hops(&next, 1), [Some(b1), None]);
        // Nothing changed: no copy.
        assert!(refresh(&cfg, &next, &view).unwrap().is_none());
        // The gateway's MAC changes: the off-link backend follows.
        let gw2 = [2, 0, 0, 0, 0, 2];
        view.neighbors.insert("10.0.0.1".parse().unwrap(), gw2);
        let again = refresh(&cfg, &next, &view).unwrap().expect("changed");
        assert_eq!(hops(&again, 0), [Some(b1), Some(gw2)]);
        // The gateway is forgotten by the kernel: unresolved again.
        view.neighbors.remove(&"10.0.0.1".parse().unwrap());
        let lost = refresh(&cfg, &again, &view).unwrap().expect("changed");
        assert_eq!(hops(&lost, 0), [Some(b1), None]);
        let mut explained = HashSet::new();
        let ask = unresolved_next_hops(&cfg, &lost, &view, &mut explained);
        // The gateway for the ipip service, the backend itself for l2dsr.
        let far: IpAddr = "10.7.0.11".parse().unwrap();
        assert_eq!(ask, ["10.0.0.1".parse::<IpAddr>().unwrap(), far]);
        let expect: HashSet<(IpAddr, Route)> = [
            (far, Route::Gateway("10.0.0.1".parse().unwrap())),
            (far, Route::L2dsrOffLink),
        ]
        .into_iter()
        .collect();
        assert_eq!(explained, expect);
        // Logged once: a second pass adds nothing.
        unresolved_next_hops(&cfg, &lost, &view, &mut explained);
        assert_eq!(explained, expect);
        // The gateway resolves: the ipip entry is forgotten, so a later
        // loss is reported again; the l2dsr one stays unresolved.
        view.neighbors.insert("10.0.0.1".parse().unwrap(), gw);
        let back = refresh(&cfg, &lost, &view).unwrap().expect("changed");
        let ask = unresolved_next_hops(&cfg, &back, &view, &mut explained);
        assert_eq!(ask, [far]);
        assert_eq!(
            explained.into_iter().collect::<Vec<_>>(),
            [(far, Route::L2dsrOffLink)]
        );
    }

    #[test]
    fn to_resolve_waits_only_where_an_answer_can_come() {
        let text = r#"[dataplane]
encap_source_v4 = "10.0.0.2"
gateway_v4 = "10.0.0.1"

[dataplane.neighbors]
"10.0.0.13" = "02:00:00:00:00:13"

[[vip_pool]]
name = "public"
prefixes = ["203.0.113.0/28"]

[[service]]
name = "web"
pool = "public"
ports = ["tcp/80"]
backends = ["10.0.0.11"]
"#;
        let cfg = crate::control::config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let view = KernelView {
            neighbors: [(ip("10.0.0.12"), [2, 0, 0, 0, 0, 0x12])]
                .into_iter()
                .collect(),
            prefixes: vec!["10.0.0.0/24".parse().unwrap()],
        };
        let resolver = Resolver::new(&cfg, &view);
        let ask = |f: Forwarding, addrs: &[&str]| {
            to_resolve(&resolver, &view, addrs.iter().map(|a| (f, ip(a))))
        };
        // On-link and unknown: itself, once; known or static: nothing.
        assert_eq!(
            ask(
                Forwarding::L2dsr,
                &["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.11"]
            ),
            [ip("10.0.0.11")]
        );
        // Off-link ipip: the gateway, once for all of them.
        assert_eq!(
            ask(Forwarding::Ipip, &["10.7.0.1", "10.7.0.2", "10.0.0.11"]),
            [ip("10.0.0.1"), ip("10.0.0.11")]
        );
        // Off-link l2dsr and IPv6 without a gateway: nothing will answer.
        assert!(ask(Forwarding::L2dsr, &["10.7.0.1"]).is_empty());
        assert!(ask(Forwarding::Ipip, &["2001:db8::1"]).is_empty());
        // No prefix known (no address on the interfaces): no wait.
        let blind = KernelView::default();
        let resolver = Resolver::new(&cfg, &blind);
        let none = to_resolve(&resolver, &blind, [(Forwarding::L2dsr, ip("10.0.0.11"))]);
        assert!(none.is_empty());
        // Nothing to resolve: no dump, no wait.
        assert!(await_resolved(&[], &[], &view, RESOLVE_WAIT).is_none());
    }

    #[test]
    fn mac_parsing_is_strict() {
        assert_eq!(parse_mac("02:00:00:00:01:11"), Some([2, 0, 0, 0, 1, 0x11]));
        assert_eq!(parse_mac("02:00:00:00:01"), None);
        assert_eq!(parse_mac("02:00:00:00:01:11:22"), None);
        assert_eq!(parse_mac("zz:00:00:00:01:11"), None);
    }
}
