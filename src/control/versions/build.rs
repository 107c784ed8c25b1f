//! From the manager's state to the data plane's immutable [`Snapshot`].
//!
//! Maglev tables are built when a version is created or its health changes,
//! never here: a snapshot after a rollout of one service out of a thousand
//! copies the other 999 versions' `Arc`s and backend lists, and that is all.

use std::sync::Arc;

use crate::control::bootstrap;
use crate::dataplane::maglev::{MaglevError, MaglevTable};
use crate::snapshot::{Backend, ServiceEntry, Snapshot, SnapshotError, VersionEntry};

use super::VersionManager;

/// The Maglev table of a backend list, unhealthy backends disabled. Keys are
/// the address bytes, as in `bootstrap`, so every node and every restart
/// builds the same table.
pub(super) fn maglev(table_size: usize, backends: &[Backend]) -> Result<MaglevTable, MaglevError> {
    bootstrap::build_maglev(table_size, backends)
}

pub(super) fn snapshot(m: &VersionManager, generation: u64) -> Result<Snapshot, SnapshotError> {
    let mut services = Vec::with_capacity(m.services.len());
    let mut versions = Vec::with_capacity(m.services.len() * 2);
    for (si, rec) in m.services.iter().enumerate() {
        let service = u32::try_from(si).map_err(|_| SnapshotError::SlotOutOfRange(u32::MAX))?;
        services.push(ServiceEntry {
            name: Arc::clone(&rec.label),
            forwarding: rec.forwarding,
            ports: rec.ports.clone(),
        });
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
    Snapshot::new(generation, m.settings.clone(), services, versions)
}
