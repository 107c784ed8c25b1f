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
    val, RawAdmin, RawConfig, RawDataplane, RawDns, RawDriver, RawFamily, RawForwarding, RawHealth,
    RawIdle, RawMetrics, RawPool, RawService, RawState,
};
use super::values::{is_prime, Int};
use super::{
    Admin, AdminListen, Config, Dataplane, Dns, DnsUpdate, Dpdk, Driver, Family, Forwarding,
    HealthCheck, Idle, Metrics, Protocol, Service, State, VipPool, MAGLEV_TABLE_SIZE_MAX,
};

/// A semantic error: what is wrong, and the byte span to point at.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

type Result<T> = std::result::Result<T, Invalid>;

fn invalid<T>(span: Range<usize>, message: impl Into<String>) -> Result<T> {
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
fn int<T: TryFrom<i64>>(value: &Spanned<Int>, key: &str, range: RangeInclusive<i64>) -> Result<T> {
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

fn forwarding(raw: RawForwarding) -> Forwarding {
    match raw {
        RawForwarding::Ipip => Forwarding::Ipip,
        RawForwarding::L2dsr => Forwarding::L2dsr,
    }
}

fn family(raw: RawFamily) -> Family {
    match raw {
        RawFamily::Ipv4 => Family::Ipv4,
        RawFamily::Ipv6 => Family::Ipv6,
    }
}

fn family_of(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

fn has_family(pool: &VipPool, family: Family) -> bool {
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

fn service(raw: RawService, pools: &[VipPool], dataplane: &Dataplane) -> Result<Service> {
    let name = val(&raw.name).0.clone();

    let pool_index = pools
        .iter()
        .position(|p| p.name == *raw.pool.get_ref())
        .map_or_else(
            || {
                invalid(
                    raw.pool.span(),
                    format!("no vip_pool named \"{}\"", raw.pool.get_ref()),
                )
            },
            Ok,
        )?;
    let pool = &pools[pool_index];

    if raw.ports.get_ref().is_empty() {
        return invalid(raw.ports.span(), "`ports` must not be empty");
    }
    let mut ports = Vec::new();
    for port in raw.ports.get_ref() {
        if ports.contains(val(port)) {
            return invalid(port.span(), format!("duplicate port \"{}\"", val(port)));
        }
        ports.push(*val(port));
    }

    let mut families = Vec::new();
    match &raw.families {
        None => {
            families.push(Family::Ipv4);
            if !has_family(pool, Family::Ipv4) {
                return invalid(
                    raw.pool.span(),
                    format!(
                        "vip_pool \"{}\" has no IPv4 prefix for service \"{name}\" (set `families`)",
                        pool.name
                    ),
                );
            }
        }
        Some(list) => {
            if list.get_ref().is_empty() {
                return invalid(list.span(), "`families` must not be empty");
            }
            for raw_family in list.get_ref() {
                let family = family(*raw_family.get_ref());
                if families.contains(&family) {
                    return invalid(raw_family.span(), format!("duplicate family \"{family}\""));
                }
                if !has_family(pool, family) {
                    return invalid(
                        raw_family.span(),
                        format!(
                            "vip_pool \"{}\" has no {} prefix",
                            pool.name,
                            family.label()
                        ),
                    );
                }
                families.push(family);
            }
        }
    }

    let mut vips: Vec<IpAddr> = Vec::new();
    for vip in raw.vips.iter().flatten() {
        let addr = *val(vip);
        let fam = family_of(&addr);
        if !families.contains(&fam) {
            return invalid(
                vip.span(),
                format!(
                    "VIP {addr} is {}, which is not among the families of service \"{name}\"",
                    fam.label()
                ),
            );
        }
        if !pool.prefixes.iter().any(|p| p.contains(&addr)) {
            return invalid(
                vip.span(),
                format!("VIP {addr} is not in vip_pool \"{}\"", pool.name),
            );
        }
        if vips.iter().any(|v| family_of(v) == fam) {
            return invalid(
                vip.span(),
                format!(
                    "a second {} VIP, {addr}: a version has one VIP per family",
                    fam.label()
                ),
            );
        }
        vips.push(addr);
    }

    if raw.backends.get_ref().is_empty() {
        return invalid(raw.backends.span(), "`backends` must not be empty");
    }
    let mut backends: Vec<IpAddr> = Vec::new();
    for backend in raw.backends.get_ref() {
        let addr = *val(backend);
        if addr.is_unspecified()
            || addr.is_multicast()
            || addr == IpAddr::from([255, 255, 255, 255])
        {
            return invalid(
                backend.span(),
                format!("backend {addr} is not a unicast address"),
            );
        }
        if backends.contains(&addr) {
            return invalid(backend.span(), format!("duplicate backend {addr}"));
        }
        if let Some(p) = pools
            .iter()
            .find(|p| p.prefixes.iter().any(|n| n.contains(&addr)))
        {
            return invalid(
                backend.span(),
                format!(
                    "backend {addr} lies in vip_pool \"{}\"; a backend cannot be a VIP",
                    p.name
                ),
            );
        }
        backends.push(addr);
    }

    let forwarding = raw.forwarding.map_or(dataplane.forwarding, forwarding);
    if forwarding == Forwarding::Ipip {
        let needs = if backends.iter().any(IpAddr::is_ipv4) && dataplane.encap_source_v4.is_none() {
            Some(("IPv4", "encap_source_v4"))
        } else if backends.iter().any(IpAddr::is_ipv6) && dataplane.encap_source_v6.is_none() {
            Some(("IPv6", "encap_source_v6"))
        } else {
            None
        };
        if let Some((fam, key)) = needs {
            return invalid(
                raw.backends.span(),
                format!(
                    "service \"{name}\" forwards by ipip to {fam} backends, which needs [dataplane] {key}"
                ),
            );
        }
    }

    let drain_grace = raw
        .drain_grace
        .as_ref()
        .map_or(Duration::from_secs(5), |d| *val(d));
    let drain_quiet = raw.drain_quiet.map_or(Duration::from_secs(30), |d| d.0);
    let drain_timeout = raw
        .drain_timeout
        .as_ref()
        .map_or(Duration::from_secs(600), |d| *val(d));
    if drain_timeout < drain_grace {
        let span = match (&raw.drain_timeout, &raw.drain_grace) {
            (Some(t), _) => t.span(),
            (None, Some(g)) => g.span(),
            (None, None) => raw.name.span(),
        };
        return invalid(
            span,
            format!(
                "`drain_timeout` ({}) is shorter than `drain_grace` ({})",
                show(drain_timeout),
                show(drain_grace)
            ),
        );
    }

    let first_tcp = ports
        .iter()
        .find(|p| p.protocol == Protocol::Tcp)
        .map(|p| p.port);
    let health = health(raw.health.unwrap_or_default(), first_tcp)?;

    Ok(Service {
        name,
        pool: pool_index,
        ports,
        families,
        vips,
        backends,
        forwarding,
        drain_grace,
        drain_quiet,
        drain_timeout,
        health,
    })
}

fn health(raw: RawHealth, first_tcp: Option<u16>) -> Result<HealthCheck> {
    let interval = raw
        .interval
        .as_ref()
        .map_or(Duration::from_secs(2), |d| *val(d));
    let timeout = raw
        .timeout
        .as_ref()
        .map_or(Duration::from_secs(1), |d| *val(d));
    for (key, value) in [("interval", &raw.interval), ("timeout", &raw.timeout)] {
        if let Some(v) = value {
            if val(v).is_zero() {
                return invalid(v.span(), format!("health `{key}` must be longer than 0s"));
            }
        }
    }
    if timeout > interval {
        // At least one of the two was written, or the defaults would hold.
        let span = match (&raw.timeout, &raw.interval) {
            (Some(t), _) => t.span(),
            (None, Some(i)) => i.span(),
            (None, None) => 0..0,
        };
        return invalid(
            span,
            format!(
                "health `timeout` ({}) is longer than `interval` ({})",
                show(timeout),
                show(interval)
            ),
        );
    }
    Ok(HealthCheck {
        interval,
        timeout,
        rise: raw
            .rise
            .as_ref()
            .map_or(Ok(2), |v| int(v, "rise", 1..=i64::from(u32::MAX)))?,
        fall: raw
            .fall
            .as_ref()
            .map_or(Ok(3), |v| int(v, "fall", 1..=i64::from(u32::MAX)))?,
        port: match &raw.port {
            Some(v) => Some(int(v, "port", 1..=65535)?),
            None => first_tcp,
        },
    })
}

/// A duration as an operator writes it: `90s`, `250ms`.
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
