//! From the file as written ([`raw`](super::raw)) to the validated domain
//! types: defaults, ranges, and every rule that relates one value to another.
//! Each failure carries the byte span of the value to blame.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::raw::{
    val, RawAdmin, RawConfig, RawDataplane, RawDns, RawDriver, RawFamily, RawForwarding, RawIdle,
    RawMetrics, RawPool, RawState,
};
use super::values::{is_prime, Int};
use super::{
    Admin, AdminListen, Config, Dataplane, Dns, DnsUpdate, Dpdk, Driver, Family, Forwarding, Idle,
    Metrics, Service, State, VipPool, MAGLEV_TABLE_SIZE_MAX,
};

/// A semantic error: what is wrong, and the byte span to point at.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

mod service;

use service::service;

pub(super) type Result<T> = std::result::Result<T, Invalid>;

pub(super) fn invalid<T>(span: Range<usize>, message: impl Into<String>) -> Result<T> {
    Err(Invalid {
        span,
        message: message.into(),
    })
}

/// Converts the whole file; `path` is only recorded in the result.
pub(super) fn config(path: &Path, raw: RawConfig) -> Result<Config> {
    let mtu_span = raw.dataplane.mtu.as_ref().map(Spanned::span);
    let maglev_span = raw.dataplane.maglev_table_size.as_ref().map(Spanned::span);
    let gateway_spans = [
        raw.dataplane.gateway_v4.as_ref().map(Spanned::span),
        raw.dataplane.gateway_v6.as_ref().map(Spanned::span),
    ];
    let dataplane = dataplane(raw.dataplane)?;
    let dns = dns(raw.dns)?;
    let metrics = metrics(raw.metrics);
    let admin = admin(raw.admin)?;
    let state = state(raw.state)?;
    let pools = pools(raw.vip_pool, dns.ttl)?;

    let mut services: Vec<Service> = Vec::with_capacity(raw.service.len());
    let mut vip_owner: HashMap<IpAddr, usize> = HashMap::new();
    for raw in raw.service {
        let name_span = raw.name.span();
        let backends_span = raw.backends.span();
        let vip_spans: Vec<_> = raw.vips.iter().flatten().map(Spanned::span).collect();
        let service = service(raw, &pools, &dataplane)?;

        if services.iter().any(|s| s.name == service.name) {
            return invalid(name_span, format!("duplicate service \"{}\"", service.name));
        }
        for (vip, span) in service.vips.iter().zip(vip_spans) {
            if let Some(&other) = vip_owner.get(vip) {
                let other = &services[other].name;
                return invalid(
                    span,
                    format!("VIP {vip} is already used by service \"{other}\""),
                );
            }
            vip_owner.insert(*vip, services.len());
        }
        if service.backends.len() >= dataplane.maglev_table_size {
            let (span, message) = match &maglev_span {
                Some(span) => (
                    span.clone(),
                    format!(
                        "`maglev_table_size` {} must be larger than the {} backends of service \"{}\"",
                        dataplane.maglev_table_size,
                        service.backends.len(),
                        service.name
                    ),
                ),
                None => (
                    backends_span,
                    format!(
                        "{} backends do not fit the Maglev table ({} entries); raise [dataplane] maglev_table_size",
                        service.backends.len(),
                        dataplane.maglev_table_size
                    ),
                ),
            };
            return invalid(span, message);
        }
        services.push(service);
    }

    if let Some(span) = mtu_span {
        let v6 = services
            .iter()
            .find(|s| s.families.contains(&Family::Ipv6) || s.backends.iter().any(IpAddr::is_ipv6));
        if let (true, Some(service)) = (dataplane.mtu < 1280, v6) {
            return invalid(
                span,
                format!(
                    "`mtu` {} is below 1280, the IPv6 minimum, and service \"{}\" uses IPv6",
                    dataplane.mtu, service.name
                ),
            );
        }
    }

    gateways(&dataplane, &pools, &services, gateway_spans)?;

    Ok(Config {
        path: path.to_path_buf(),
        dataplane,
        dns,
        metrics,
        admin,
        state,
        pools,
        services,
    })
}

/// The rules that relate a gateway to the rest of the file: it is a
/// router next to this host, so not one of its own addresses (a VIP or
/// the encapsulation source), and only `ipip` uses it — `l2dsr` rewrites
/// the Ethernet destination alone, so its backends must be on-link and a
/// gateway there would silently do nothing.
fn gateways(
    dataplane: &Dataplane,
    pools: &[VipPool],
    services: &[Service],
    spans: [Option<Range<usize>>; 2],
) -> Result<()> {
    let [span_v4, span_v6] = spans;
    let configured = [
        (
            dataplane.gateway_v4.map(IpAddr::V4),
            dataplane.encap_source_v4.map(IpAddr::V4),
            span_v4,
            "gateway_v4",
            "encap_source_v4",
        ),
        (
            dataplane.gateway_v6.map(IpAddr::V6),
            dataplane.encap_source_v6.map(IpAddr::V6),
            span_v6,
            "gateway_v6",
            "encap_source_v6",
        ),
    ];
    for (gateway, source, span, key, source_key) in configured {
        let (Some(gw), Some(span)) = (gateway, span) else {
            continue;
        };
        if source == Some(gw) {
            return invalid(
                span,
                format!(
                    "`{key}` {gw} is `{source_key}`, this host; the gateway is the next router"
                ),
            );
        }
        if let Some(pool) = pools
            .iter()
            .find(|p| p.prefixes.iter().any(|n| n.contains(&gw)))
        {
            return invalid(
                span,
                format!(
                    "`{key}` {gw} lies in VIP pool \"{}\"; the gateway is the next router",
                    pool.name
                ),
            );
        }
        if !services.is_empty() && services.iter().all(|s| s.forwarding == Forwarding::L2dsr) {
            return invalid(
                span,
                format!(
                    "`{key}` is used only by `ipip` services, and every service forwards by \
                     `l2dsr`, whose backends must be on-link; remove it"
                ),
            );
        }
    }
    Ok(())
}

/// An integer key within `range`, converted to the domain's type.
pub(super) fn int<T: TryFrom<i64>>(
    value: &Spanned<Int>,
    key: &str,
    range: RangeInclusive<i64>,
) -> Result<T> {
    let n = value.get_ref().0;
    if !range.contains(&n) {
        let message = if *range.end() == i64::MAX {
            format!("`{key}` must be at least {}, got {n}", range.start())
        } else {
            format!(
                "`{key}` must be between {} and {}, got {n}",
                range.start(),
                range.end()
            )
        };
        return invalid(value.span(), message);
    }
    T::try_from(n).or_else(|_| invalid(value.span(), format!("`{key}` {n} is too large")))
}

pub(super) fn forwarding(raw: RawForwarding) -> Forwarding {
    match raw {
        RawForwarding::Ipip => Forwarding::Ipip,
        RawForwarding::L2dsr => Forwarding::L2dsr,
    }
}

pub(super) fn family(raw: RawFamily) -> Family {
    match raw {
        RawFamily::Ipv4 => Family::Ipv4,
        RawFamily::Ipv6 => Family::Ipv6,
    }
}

pub(super) fn family_of(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

pub(super) fn has_family(pool: &VipPool, family: Family) -> bool {
    pool.prefixes.iter().any(|p| match family {
        Family::Ipv4 => matches!(p, IpNet::V4(_)),
        Family::Ipv6 => matches!(p, IpNet::V6(_)),
    })
}

fn dataplane(raw: RawDataplane) -> Result<Dataplane> {
    let driver = match raw.driver.unwrap_or(RawDriver::AfPacket) {
        RawDriver::AfPacket => Driver::AfPacket,
        RawDriver::AfXdp => Driver::AfXdp,
        RawDriver::Dpdk => Driver::Dpdk,
        RawDriver::Pcap => Driver::Pcap,
    };

    let mut interfaces: Vec<String> = Vec::new();
    for name in raw.interfaces.unwrap_or_default() {
        let span = name.span();
        let name = name.into_inner();
        if name.is_empty() {
            return invalid(span, "empty interface name");
        }
        if interfaces.contains(&name) {
            return invalid(span, format!("duplicate interface \"{name}\""));
        }
        interfaces.push(name);
    }

    let maglev_table_size = match &raw.maglev_table_size {
        None => 65537,
        Some(v) => {
            let n: u64 = int(v, "maglev_table_size", 1..=MAGLEV_TABLE_SIZE_MAX)?;
            if !is_prime(n) {
                let next = (n + 1..).find(|&m| is_prime(m)).unwrap_or(65537);
                return invalid(
                    v.span(),
                    format!("`maglev_table_size` must be a prime, {n} is not (the next prime is {next})"),
                );
            }
            int(v, "maglev_table_size", 1..=MAGLEV_TABLE_SIZE_MAX)?
        }
    };

    let gateway_v4 = match &raw.gateway_v4 {
        None => None,
        Some(at) => {
            let a = *val(at);
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
                return invalid(
                    at.span(),
                    format!("`gateway_v4` {a} is not a unicast address; the gateway is one router"),
                );
            }
            Some(a)
        }
    };
    let gateway_v6 = match &raw.gateway_v6 {
        None => None,
        Some(at) => {
            let a = *val(at);
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                return invalid(
                    at.span(),
                    format!("`gateway_v6` {a} is not a unicast address; the gateway is one router"),
                );
            }
            Some(a)
        }
    };

    let mut neighbors: Vec<(IpAddr, [u8; 6])> = Vec::new();
    for (ip, mac) in raw.neighbors.unwrap_or_default().0 {
        let addr = *val(&ip);
        if neighbors.iter().any(|(known, _)| *known == addr) {
            return invalid(ip.span(), format!("duplicate neighbor {addr}"));
        }
        neighbors.push((addr, mac.0 .0));
    }

    Ok(Dataplane {
        driver,
        interfaces,
        workers: raw
            .workers
            .as_ref()
            .map_or(Ok(1), |v| int(v, "workers", 1..=i64::MAX))?,
        forwarding: raw.forwarding.map_or(Forwarding::Ipip, forwarding),
        idle: match raw.idle {
            Some(RawIdle::Busy) => Idle::Busy,
            Some(RawIdle::Adaptive) | None => Idle::Adaptive,
        },
        encap_source_v4: raw.encap_source_v4.map(|a| a.0),
        encap_source_v6: raw.encap_source_v6.map(|a| a.0),
        gateway_v4,
        gateway_v6,
        mtu: raw
            .mtu
            .as_ref()
            .map_or(Ok(1500), |v| int(v, "mtu", 576..=9000))?,
        tcp_idle_timeout: raw
            .tcp_idle_timeout
            .map_or(Duration::from_secs(300), |d| d.0),
        udp_idle_timeout: raw
            .udp_idle_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        flow_table_size: raw
            .flow_table_size
            .as_ref()
            .map_or(Ok(1 << 20), |v| int(v, "flow_table_size", 1..=i64::MAX))?,
        maglev_table_size,
        neighbors,
        dpdk: raw.dpdk.map(|d| Dpdk {
            eal_args: d.eal_args.unwrap_or_default(),
        }),
    })
}

fn dns(raw: RawDns) -> Result<Dns> {
    let mut listen = Vec::new();
    match raw.listen {
        None => listen.push(SocketAddr::from(([127, 0, 0, 1], 5353))),
        Some(addrs) => {
            for addr in addrs {
                if listen.contains(val(&addr)) {
                    return invalid(addr.span(), format!("duplicate address {}", val(&addr)));
                }
                listen.push(*val(&addr));
            }
        }
    }
    let zone = raw
        .zone
        .map_or_else(|| "svc.example.".to_owned(), |z| z.0 .0);
    let update = raw.update.map(|u| DnsUpdate {
        server: u.server.0 .0,
        zone: u.zone.map_or_else(|| zone.clone(), |z| z.0 .0),
        key_name: u.key_name.0 .0,
        key_secret: u.key_secret.0 .0,
        algorithm: u
            .algorithm
            .map_or_else(|| "hmac-sha256".to_owned(), |a| a.0 .0),
    });
    Ok(Dns {
        listen,
        zone,
        ttl: raw
            .ttl
            .as_ref()
            .map_or(Ok(5), |v| int(v, "ttl", 1..=86400))?,
        update,
    })
}

fn metrics(raw: RawMetrics) -> Metrics {
    Metrics {
        listen: raw
            .listen
            .map_or(Some(SocketAddr::from(([127, 0, 0, 1], 9100))), |l| l.0 .0),
    }
}

fn admin(raw: RawAdmin) -> Result<Admin> {
    let token_file = match raw.token_file {
        Some(f) if f.get_ref().is_empty() => return invalid(f.span(), "empty `token_file`"),
        f => f.map(|f| PathBuf::from(f.into_inner())),
    };
    let listen = match raw.listen {
        None => AdminListen::Tcp(SocketAddr::from(([127, 0, 0, 1], 9180))),
        Some(l) => {
            if let (AdminListen::Tcp(addr), None) = (val(&l), &token_file) {
                if !addr.ip().is_loopback() {
                    return invalid(
                        l.span(),
                        format!(
                            "the admin API on {addr} is reachable from the network: set `token_file`, or listen on loopback or a unix socket"
                        ),
                    );
                }
            }
            l.into_inner().0
        }
    };
    Ok(Admin { listen, token_file })
}

fn state(raw: RawState) -> Result<State> {
    match raw.path {
        Some(p) if p.get_ref().is_empty() => invalid(p.span(), "empty state `path`"),
        p => Ok(State {
            path: p.map(|p| PathBuf::from(p.into_inner())),
        }),
    }
}

fn pools(raw: Vec<RawPool>, ttl: u32) -> Result<Vec<VipPool>> {
    let mut pools: Vec<VipPool> = Vec::with_capacity(raw.len());
    for raw in raw {
        let name = raw.name.get_ref().clone();
        if name.is_empty() {
            return invalid(raw.name.span(), "empty vip_pool name");
        }
        if pools.iter().any(|p| p.name == name) {
            return invalid(raw.name.span(), format!("duplicate vip_pool \"{name}\""));
        }
        if raw.prefixes.get_ref().is_empty() {
            return invalid(raw.prefixes.span(), "`prefixes` must not be empty");
        }
        let mut prefixes: Vec<IpNet> = Vec::new();
        for prefix in raw.prefixes.into_inner() {
            let net = *val(&prefix);
            let overlaps = |other: &IpNet| other.contains(&net) || net.contains(other);
            if let Some(other) = prefixes.iter().find(|o| overlaps(o)) {
                return invalid(
                    prefix.span(),
                    format!("prefix {net} overlaps {other}, listed before it in this pool"),
                );
            }
            for pool in &pools {
                if let Some(other) = pool.prefixes.iter().find(|o| overlaps(o)) {
                    return invalid(
                        prefix.span(),
                        format!(
                            "prefix {net} overlaps {other} of vip_pool \"{}\"",
                            pool.name
                        ),
                    );
                }
            }
            prefixes.push(net);
        }
        let cooldown = raw
            .cooldown
            .map_or(Duration::from_secs(10 * u64::from(ttl)), |d| d.0);
        pools.push(VipPool {
            name,
            prefixes,
            cooldown,
        });
    }
    Ok(pools)
}
