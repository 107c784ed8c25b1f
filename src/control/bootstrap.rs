//! From a configuration to the first snapshot: every service at version 1.
//!
//! This is what `cutover replay` runs on and what `cutover run` publishes
//! before any rollout. Version 1 takes the service's configured `vips`, or
//! the lowest free addresses of its pool, one per family.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::control::config::{Config, Family};
use crate::control::pool;
use crate::dataplane::maglev::{self, MaglevTable};
use crate::snapshot::{
    Backend, DataplaneSettings, ServiceEntry, Snapshot, SnapshotError, VersionEntry, VersionState,
};

/// Why the first snapshot could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("service {service}: pool {pool} has no free {family:?} address left")]
    PoolExhausted {
        service: String,
        pool: String,
        family: Family,
    },
    #[error("service {service}: {source}")]
    Maglev {
        service: String,
        source: maglev::MaglevError,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// The per-packet settings of `[dataplane]`.
pub fn settings(cfg: &Config) -> DataplaneSettings {
    DataplaneSettings {
        mtu: cfg.dataplane.mtu,
        encap_source_v4: cfg.dataplane.encap_source_v4,
        encap_source_v6: cfg.dataplane.encap_source_v6,
    }
}

/// The services as the data plane sees them, in configuration order.
pub fn service_entries(cfg: &Config) -> Vec<ServiceEntry> {
    cfg.services
        .iter()
        .map(|s| {
            let mut ports = s.ports.clone();
            ports.sort();
            ServiceEntry {
                name: Arc::from(s.name.as_str()),
                forwarding: s.forwarding,
                ports,
            }
        })
        .collect()
}

/// The key a backend is known by in Maglev: its address bytes. Stable
/// across processes and nodes, so every node builds the same table.
pub fn maglev_key(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Builds the Maglev table of a backend list, skipping unhealthy backends
/// unless all of them are.
pub fn build_maglev(
    table_size: usize,
    backends: &[Backend],
) -> Result<MaglevTable, maglev::MaglevError> {
    let keys: Vec<Vec<u8>> = backends.iter().map(|b| maglev_key(&b.addr)).collect();
    let mut enabled: Vec<bool> = backends.iter().map(|b| b.healthy).collect();
    // Fail open: when every backend fails its check, the check is more
    // likely wrong than every backend dead, and dropping all traffic is
    // the worse error. The version then spreads over all its backends.
    if !enabled.contains(&true) {
        enabled.iter_mut().for_each(|e| *e = true);
    }
    MaglevTable::build(table_size, &keys, &enabled)
}

/// The backends of `addrs` with their static next hops, all healthy.
pub fn backends(cfg: &Config, addrs: &[IpAddr]) -> Vec<Backend> {
    addrs
        .iter()
        .map(|a| Backend {
            addr: *a,
            next_hop: cfg
                .dataplane
                .neighbors
                .iter()
                .find(|(ip, _)| ip == a)
                .map(|(_, mac)| *mac),
            healthy: true,
        })
        .collect()
}

/// The VIPs of a service's first version: configured ones first, then the
/// lowest free pool address for each remaining family.
pub fn first_vips(
    cfg: &Config,
    service: usize,
    taken: &HashSet<IpAddr>,
) -> Result<Vec<IpAddr>, BootstrapError> {
    let s = &cfg.services[service];
    let pool = &cfg.pools[s.pool];
    let mut vips = Vec::with_capacity(s.families.len());
    for fam in &s.families {
        if let Some(v) = s.vips.iter().find(|v| pool::family_of(v) == *fam) {
            vips.push(*v);
            continue;
        }
        let v = pool::lowest_free(pool, *fam, |a| {
            taken.contains(a) || vips.contains(a) || cfg.services.iter().any(|o| o.vips.contains(a))
        })
        .ok_or_else(|| BootstrapError::PoolExhausted {
            service: s.name.clone(),
            pool: pool.name.clone(),
            family: *fam,
        })?;
        vips.push(v);
    }
    Ok(vips)
}

/// Version 1 of every service, active, in slots 0..n with uids 1..=n.
pub fn initial_snapshot(cfg: &Config) -> Result<Snapshot, BootstrapError> {
    let mut taken = HashSet::new();
    let mut versions = Vec::with_capacity(cfg.services.len());
    for (i, s) in cfg.services.iter().enumerate() {
        let vips = first_vips(cfg, i, &taken)?;
        taken.extend(vips.iter().copied());
        let backends = backends(cfg, &s.backends);
        let maglev =
            build_maglev(cfg.dataplane.maglev_table_size, &backends).map_err(|source| {
                BootstrapError::Maglev {
                    service: s.name.clone(),
                    source,
                }
            })?;
        let slot = u32::try_from(i).map_err(|_| SnapshotError::SlotOutOfRange(u32::MAX))?;
        versions.push(VersionEntry {
            slot,
            uid: u64::from(slot) + 1,
            service: slot,
            id: 1,
            state: VersionState::Active,
            vips,
            backends,
            maglev: Arc::new(maglev),
        });
    }
    Ok(Snapshot::new(
        1,
        settings(cfg),
        service_entries(cfg),
        versions,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(last: u8, healthy: bool) -> Backend {
        Backend {
            addr: IpAddr::from([10, 0, 1, last]),
            next_hop: None,
            healthy,
        }
    }

    #[test]
    fn maglev_skips_unhealthy_backends_but_fails_open_when_all_are() {
        let some = build_maglev(
            251,
            &[backend(1, true), backend(2, false), backend(3, true)],
        )
        .unwrap();
        let d = some.distribution();
        assert_eq!(d[1], 0);
        assert!(d[0] > 0 && d[2] > 0);
        let none = build_maglev(251, &[backend(1, false), backend(2, false)]).unwrap();
        let d = none.distribution();
        assert!(d.iter().all(|n| *n > 0), "all backends serve: {d:?}");
    }
}
