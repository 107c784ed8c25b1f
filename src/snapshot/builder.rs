//! Building a snapshot, from scratch or derived from the one before:
//! every invariant the fast path relies on is checked here, as each
//! version is placed.

use std::sync::Arc;

use super::chunked::Chunked;
use super::vip_index::VipIndex;
use super::{
    vip_key, DataplaneSettings, Delta, LiveVersion, ServiceEntry, Snapshot, SnapshotError,
    VersionEntry, VersionState, DELTA_HISTORY, MAX_VERSIONS, NO_OWNER,
};

/// Builds a [`Snapshot`] version by version, checking every invariant the
/// fast path relies on as it goes; see [`Snapshot::new`] and
/// [`Snapshot::derive`].
pub struct SnapshotBuilder<'p> {
    pub(super) parent: Option<&'p Snapshot>,
    pub(super) generation: u64,
    pub(super) settings: DataplaneSettings,
    pub(super) services: Arc<Vec<ServiceEntry>>,
    pub(super) versions: Chunked<Option<Arc<LiveVersion>>>,
    pub(super) vips: VipIndex<Arc<LiveVersion>>,
    pub(super) owners: Vec<u32>,
    pub(super) changed: Vec<u32>,
}

impl<'p> SnapshotBuilder<'p> {
    pub(super) fn new(
        generation: u64,
        settings: DataplaneSettings,
        services: Arc<Vec<ServiceEntry>>,
        parent: Option<&'p Snapshot>,
    ) -> SnapshotBuilder<'p> {
        let (slots, vips) = parent.map_or((0, 0), |p| (p.versions.len(), p.vips.len()));
        SnapshotBuilder {
            parent,
            generation,
            settings,
            services,
            versions: Chunked::filled(0, None),
            vips: VipIndex::with_capacity(vips),
            owners: Vec::with_capacity(slots),
            changed: Vec::new(),
        }
    }

    /// The parent's version in `slot`, to decide whether to keep it.
    pub fn parent_version(&self, slot: u32) -> Option<&'p VersionEntry> {
        self.parent?.version(slot)
    }

    /// Keeps the parent's version in `slot` as it is (shared, not copied).
    /// Fails when there is no parent version there, or when it breaks an
    /// invariant in this snapshot (slot taken, VIP held twice, service
    /// index beyond this snapshot's services).
    ///
    /// A version keeps a copy of its service's forwarding and ports: when
    /// those changed, the version is built again (as [`add`](Self::add)
    /// would) rather than shared.
    pub fn keep(&mut self, slot: u32) -> Result<(), SnapshotError> {
        let live = self
            .parent
            .and_then(|p| p.live(slot))
            .ok_or(SnapshotError::NotInParent(slot))?;
        if !live.agrees_with(self.service_of(&live.version)?) {
            return self.add(live.version.clone());
        }
        self.place(Arc::clone(live), false)
    }

    /// Adds a new version (its encapsulation templates are built here).
    pub fn add(&mut self, version: VersionEntry) -> Result<(), SnapshotError> {
        if version.slot as usize >= MAX_VERSIONS {
            return Err(SnapshotError::SlotOutOfRange(version.slot));
        }
        let service = self.service_of(&version)?;
        let live = LiveVersion::new(version, service, &self.settings);
        self.place(Arc::new(live), true)
    }

    /// The service `v` names in this snapshot's list.
    fn service_of(&self, v: &VersionEntry) -> Result<&ServiceEntry, SnapshotError> {
        self.services
            .get(v.service as usize)
            .ok_or(SnapshotError::NoService {
                slot: v.slot,
                service: v.service,
            })
    }

    /// Places a version whose service both callers have found.
    fn place(&mut self, live: Arc<LiveVersion>, new: bool) -> Result<(), SnapshotError> {
        let v = &live.version;
        let idx = v.slot as usize;
        if idx >= MAX_VERSIONS {
            return Err(SnapshotError::SlotOutOfRange(v.slot));
        }
        if v.state == VersionState::Released {
            return Err(SnapshotError::Released(v.slot));
        }
        if self.versions.get(idx).is_some_and(Option::is_some) {
            return Err(SnapshotError::SlotTaken(v.slot));
        }
        for (i, vip) in v.vips.iter().enumerate() {
            if self.vips.insert(vip_key(vip), Arc::clone(&live)).is_some() {
                // Undo this version's inserts: the builder stays consistent
                // for a caller that reports the error and drops it.
                for earlier in &v.vips[..i] {
                    self.vips.remove(vip_key(earlier));
                }
                return Err(SnapshotError::VipTaken(*vip));
            }
        }
        let shared = !new && self.parent.is_some_and(|p| p.shares_live(idx, &live));
        if !shared {
            self.changed.push(v.slot);
        }
        self.versions.grow_to(idx + 1);
        if self.owners.len() <= idx {
            self.owners.resize(idx + 1, NO_OWNER);
        }
        self.owners[idx] = v.service;
        if let Some(entry) = self.versions.get_mut(idx) {
            *entry = Some(live);
        }
        Ok(())
    }

    /// The snapshot. Derived snapshots remember what changed since their
    /// parent.
    pub fn finish(mut self) -> Snapshot {
        self.changed.sort_unstable();
        let deltas = match self.parent {
            Some(p) => {
                let newest = Delta {
                    parent: p.generation,
                    changed: Arc::from(self.changed),
                };
                std::iter::once(newest)
                    .chain(p.deltas.iter().take(DELTA_HISTORY - 1).cloned())
                    .collect()
            }
            None => Arc::from([]),
        };
        Snapshot {
            generation: self.generation,
            settings: self.settings,
            services: self.services,
            versions: self.versions,
            vips: self.vips,
            owners: self.owners,
            deltas,
        }
    }
}

impl Snapshot {
    /// True when `live` is the parent's own version in slot `idx`.
    fn shares_live(&self, idx: usize, live: &Arc<LiveVersion>) -> bool {
        self.versions
            .get(idx)
            .and_then(Option::as_ref)
            .is_some_and(|p| Arc::ptr_eq(p, live))
    }
}
