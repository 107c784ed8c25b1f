//! From the manager's state to the data plane's immutable [`Snapshot`].
//!
//! Maglev tables are built when a version is created or its health changes,
//! never here. A snapshot derived from the published one
//! ([`VersionManager::snapshot_from`]) shares every version that did not
//! change: after a rollout of one service out of a thousand it builds two
//! versions (the new one and the one that started draining) and copies the
//! other pointers.

use std::net::IpAddr;
use std::sync::Arc;

use crate::control::bootstrap;
use crate::control::config::Forwarding;
use crate::dataplane::maglev::{MaglevError, MaglevTable};
use crate::snapshot::{
    Backend, ServiceEntry, Snapshot, SnapshotBuilder, SnapshotError, VersionEntry, VersionState,
};

use super::{Version, VersionManager};

/// The Maglev table of a backend list, unhealthy backends disabled. Keys are
/// the address bytes, as in `bootstrap`, so every node and every restart
/// builds the same table.
pub(super) fn maglev(table_size: usize, backends: &[Backend]) -> Result<MaglevTable, MaglevError> {
    bootstrap::build_maglev(table_size, backends)
}

fn service_index(si: usize) -> Result<u32, SnapshotError> {
    u32::try_from(si).map_err(|_| SnapshotError::UnknownService(si))
}

fn service_entries(m: &VersionManager) -> Vec<ServiceEntry> {
    m.services
        .iter()
        .map(|rec| ServiceEntry {
            name: Arc::clone(&rec.label),
            forwarding: rec.forwarding,
            ports: rec.ports.clone(),
        })
        .collect()
}

pub(super) fn snapshot(m: &VersionManager, generation: u64) -> Result<Snapshot, SnapshotError> {
    let mut versions = Vec::with_capacity(m.services.len() * 2);
    for (si, rec) in m.services.iter().enumerate() {
        let service = service_index(si)?;
        for v in &rec.live {
            // A live version always has its table; skipping one without
            // would be a bug, but not a reason to stop serving the rest.
            let Some(maglev) = v.maglev.clone() else {
                continue;
            };
            versions.push(VersionEntry {
                slot: v.slot,
                uid: v.uid,
                service,
                id: v.id,
                state: v.state,
                vips: v.vips.clone(),
                backends: v.backends.clone(),
                maglev,
            });
        }
    }
    Snapshot::new(generation, m.settings.clone(), service_entries(m), versions)
}

/// Which state each version shows in a derived snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging {
    /// The manager's states: the snapshot to make active for DNS.
    Final,
    /// The data plane first: every version of the manager forwards, but DNS
    /// (which names the `Active` versions) still sees the parent's states; a
    /// version the parent does not have shows as `Draining`. Published
    /// before the state file is written, so DNS never names a VIP that a
    /// restart would not know.
    DataplaneOnly,
}

/// The snapshot of `m`'s state derived from `parent`: versions equal to
/// the parent's (same uid, state, VIPs, backends with their resolved next
/// hops, the same Maglev table) are shared, the others built. Next hops the
/// manager does not know statically come from `next_hop`, as
/// `neighbors::refresh` would set them.
pub(super) fn derived(
    m: &VersionManager,
    parent: &Snapshot,
    generation: u64,
    next_hop: &dyn Fn(Forwarding, IpAddr) -> Option<[u8; 6]>,
    recheck_hops: bool,
    staging: Staging,
) -> Result<Snapshot, SnapshotError> {
    let same_services = parent.services.len() == m.services.len()
        && parent.services.iter().zip(&m.services).all(|(p, rec)| {
            *p.name == *rec.label && p.forwarding == rec.forwarding && p.ports == rec.ports
        });
    let services = if same_services {
        Arc::clone(&parent.services)
    } else {
        Arc::new(service_entries(m))
    };
    // Encapsulation templates depend on the settings: nothing is shared
    // across a change of them.
    let same_settings = parent.settings == m.settings;
    let mut b = parent.derive(generation, m.settings.clone(), services);
    for si in 0..m.services.len() {
        place_service(
            &mut b,
            m,
            si,
            next_hop,
            recheck_hops,
            staging,
            same_settings,
        )?;
    }
    Ok(b.finish())
}

/// `derived` for a parent built from this manager's state at its last
/// settle (see `VersionManager::settle`): only the services in `touched`
/// are visited, every other version is the parent's. Falls back to
/// `derived` when the settings or the list of services differ.
pub(super) fn derived_touched(
    m: &VersionManager,
    parent: &Snapshot,
    generation: u64,
    next_hop: &dyn Fn(Forwarding, IpAddr) -> Option<[u8; 6]>,
    staging: Staging,
    touched: &[u32],
) -> Result<Snapshot, SnapshotError> {
    if parent.settings != m.settings || parent.services.len() != m.services.len() {
        return derived(m, parent, generation, next_hop, false, staging);
    }
    let mut b = parent.derive_replacing(
        generation,
        m.settings.clone(),
        Arc::clone(&parent.services),
        touched,
    );
    for &si in touched {
        place_service(&mut b, m, si as usize, next_hop, false, staging, true)?;
    }
    Ok(b.finish())
}

/// Places the live versions of service `si` in `b`: the parent's own
/// version where nothing changed, a new one otherwise.
fn place_service(
    b: &mut SnapshotBuilder<'_>,
    m: &VersionManager,
    si: usize,
    next_hop: &dyn Fn(Forwarding, IpAddr) -> Option<[u8; 6]>,
    recheck_hops: bool,
    staging: Staging,
    same_settings: bool,
) -> Result<(), SnapshotError> {
    let Some(rec) = m.services.get(si) else {
        return Err(SnapshotError::UnknownService(si));
    };
    let service = service_index(si)?;
    let resolve = |x: &Backend| x.next_hop.or_else(|| next_hop(rec.forwarding, x.addr));
    for v in &rec.live {
        let Some(maglev) = &v.maglev else {
            continue;
        };
        let prev = b.parent_version(v.slot).filter(|p| p.uid == v.uid);
        let state = match (staging, prev) {
            (Staging::Final, _) => v.state,
            (Staging::DataplaneOnly, Some(p)) => p.state,
            (Staging::DataplaneOnly, None) => VersionState::Draining,
        };
        let unchanged = same_settings
            && prev.is_some_and(|p| {
                same_version(
                    p,
                    v,
                    service,
                    state,
                    maglev,
                    recheck_hops.then_some(&resolve),
                )
            });
        if unchanged {
            b.keep(v.slot)?;
        } else {
            b.add(VersionEntry {
                slot: v.slot,
                uid: v.uid,
                service,
                id: v.id,
                state,
                vips: v.vips.clone(),
                backends: v
                    .backends
                    .iter()
                    .map(|x| Backend {
                        next_hop: resolve(x),
                        ..x.clone()
                    })
                    .collect(),
                maglev: Arc::clone(maglev),
            })?;
        }
    }
    Ok(())
}

/// True when the parent's entry `p` is what `v` would be built into. With
/// `resolve`, the next hops are compared too; without, the parent's are
/// taken as current (the control plane's tick keeps published next hops up
/// to date with the kernel, so only a change of configuration needs the
/// per-backend lookups, which cost more than the rest of a rollout with
/// ten thousand backends).
fn same_version(
    p: &VersionEntry,
    v: &Version,
    service: u32,
    state: VersionState,
    maglev: &Arc<MaglevTable>,
    resolve: Option<&impl Fn(&Backend) -> Option<[u8; 6]>>,
) -> bool {
    p.service == service
        && p.id == v.id
        && p.state == state
        && p.vips == v.vips
        && Arc::ptr_eq(&p.maglev, maglev)
        && p.backends.len() == v.backends.len()
        && p.backends.iter().zip(&v.backends).all(|(pb, b)| {
            pb.addr == b.addr
                && pb.healthy == b.healthy
                && resolve.is_none_or(|r| pb.next_hop == r(b))
        })
}
