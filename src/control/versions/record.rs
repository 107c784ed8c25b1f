//! What the manager keeps per service and per version.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::ReleaseReason;
use crate::control::config::{Config, Family, Forwarding, PortSpec};
use crate::dataplane::maglev::MaglevTable;
use crate::snapshot::{Backend, VersionState};

/// The drain settings of a service (SPEC §4), applied to all its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DrainSettings {
    pub(super) grace: Duration,
    pub(super) quiet: Duration,
    pub(super) timeout: Duration,
}

/// One version. Live versions (active, draining) hold a slot, their VIPs and
/// a Maglev table; a released one keeps only the record.
#[derive(Debug, Clone)]
pub(super) struct Version {
    pub(super) id: u32,
    pub(super) uid: u64,
    pub(super) slot: u32,
    pub(super) vips: Vec<IpAddr>,
    /// In the order given; the address never changes, health does. Next
    /// hops are resolved from the static neighbours when the version is
    /// created and when they change, so a snapshot copies the list as is.
    pub(super) backends: Vec<Backend>,
    pub(super) state: VersionState,
    pub(super) created_at: u64,
    pub(super) draining_since: Option<u64>,
    pub(super) released_at: Option<u64>,
    pub(super) release_reason: Option<ReleaseReason>,
    /// Built over `backends` with the unhealthy ones disabled; rebuilt only
    /// when this version's health changes, so every snapshot shares it.
    /// `None` once released.
    pub(super) maglev: Option<Arc<MaglevTable>>,
}

/// A service and its versions.
#[derive(Debug, Clone)]
pub(super) struct ServiceRecord {
    pub(super) name: String,
    /// `name` as the snapshot wants it, shared by every snapshot.
    pub(super) label: Arc<str>,
    /// Sorted, as the data plane wants them.
    pub(super) ports: Vec<PortSpec>,
    pub(super) forwarding: Forwarding,
    pub(super) families: Vec<Family>,
    /// By name: pool indices change between configuration files.
    pub(super) pool: String,
    /// The configured first-version VIPs (reserved against other services).
    pub(super) vips: Vec<IpAddr>,
    pub(super) drain: DrainSettings,
    pub(super) next_id: u32,
    /// Gone from the configuration: no active version, dropped once every
    /// version is released.
    pub(super) removed: bool,
    /// Active and draining versions, oldest first.
    pub(super) live: Vec<Version>,
    /// Released versions, oldest first, at most [`HISTORY`](super::HISTORY).
    pub(super) history: VecDeque<Version>,
    /// Rollouts since start (`cutover_rollouts_total`). Kept here, not in a
    /// map of the manager: copying the manager for a change then copies no
    /// string per service.
    pub(super) rollouts: u64,
    /// Releases since start by [`ReleaseReason::index`].
    pub(super) releases: [u64; ReleaseReason::ALL.len()],
}

impl ServiceRecord {
    pub(super) fn new(cfg: &Config, index: usize) -> ServiceRecord {
        let s = &cfg.services[index];
        let mut rec = ServiceRecord {
            name: s.name.clone(),
            label: Arc::from(s.name.as_str()),
            ports: Vec::new(),
            forwarding: s.forwarding,
            families: Vec::new(),
            pool: String::new(),
            vips: Vec::new(),
            drain: DrainSettings {
                grace: s.drain_grace,
                quiet: s.drain_quiet,
                timeout: s.drain_timeout,
            },
            next_id: 1,
            removed: false,
            live: Vec::new(),
            history: VecDeque::new(),
            rollouts: 0,
            releases: [0; ReleaseReason::ALL.len()],
        };
        rec.apply(cfg, index);
        rec
    }

    /// Takes the service's settings from `cfg` (a reload changes ports,
    /// forwarding and drain settings of running versions in place).
    pub(super) fn apply(&mut self, cfg: &Config, index: usize) {
        let s = &cfg.services[index];
        let mut ports = s.ports.clone();
        ports.sort();
        self.ports = ports;
        self.forwarding = s.forwarding;
        self.families.clone_from(&s.families);
        self.pool = cfg
            .pools
            .get(s.pool)
            .map_or_else(String::new, |p| p.name.clone());
        self.vips.clone_from(&s.vips);
        self.drain = DrainSettings {
            grace: s.drain_grace,
            quiet: s.drain_quiet,
            timeout: s.drain_timeout,
        };
        self.removed = false;
    }

    pub(super) fn active(&self) -> Option<&Version> {
        self.live.iter().find(|v| v.state == VersionState::Active)
    }

    pub(super) fn active_mut(&mut self) -> Option<&mut Version> {
        self.live
            .iter_mut()
            .find(|v| v.state == VersionState::Active)
    }
}
