//! One `[[service]]` table and its health check: backends, VIP pools,
//! ports, forwarding, drain settings, and the rules between them.

use std::net::IpAddr;
use std::time::Duration;

use super::{family, family_of, forwarding, has_family, int, invalid, Result};
use crate::control::config::raw::{val, RawHealth, RawService};
use crate::control::config::{
    Dataplane, Family, Forwarding, HealthCheck, Protocol, Service, VipPool,
};

/// Converts one `[[service]]` table, given the VIP pools (the service names
/// one) and the data plane (the default forwarding, and the encapsulation
/// sources that `ipip` needs).
pub(super) fn service(
    raw: RawService,
    pools: &[VipPool],
    dataplane: &Dataplane,
) -> Result<Service> {
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
