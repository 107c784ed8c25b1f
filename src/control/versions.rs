//! The version state machine of SPEC §2: `active` → `draining` → `released`.
//!
//! A [`VersionManager`] owns every version of every service: its VIPs, its
//! backends with their health, its state and timestamps, its Maglev table
//! and its counter slot. It is sans-IO, as the data plane is: no threads, no
//! files, no clock. Every method that depends on time takes `now`, and the
//! drain rule takes the workers' observations through a closure, so the
//! whole cutover is unit-tested with a fake clock. The caller (the `run`
//! loop) owns the clock, publishes [`VersionManager::snapshot`] to the one
//! read-copy-update cell after every change, and writes
//! [`VersionManager::persisted`] to the state file (see `control::state`).
//!
//! # Publishing order of a rollout
//!
//! SPEC §2 wants the new version in the data plane before it is in DNS.
//! The data plane and the built-in DNS server read the same [`Snapshot`],
//! and a snapshot is published with one atomic pointer store, so publishing
//! one snapshot that already carries the new version as `active` is safe:
//! the instant a DNS answer can name the new VIP, the workers forward it.
//! With a state file the control plane publishes twice around the durable
//! write ([`Staging::DataplaneOnly`] first: the new version forwards but
//! shows as `draining`, so DNS does not name it yet; then the final
//! states), so the workers see a change before the fsync and DNS names a
//! VIP only once it is on disk. Anything that updates DNS *outside* the
//! snapshot (the RFC 2136 pusher) must run after the publish.
//!
//! # Time
//!
//! Times are kept as milliseconds since the Unix epoch (what the state file
//! stores); the API takes [`SystemTime`]. A clock step backwards never
//! releases early: every elapsed time saturates at zero.

mod alloc;
mod build;
mod drain;
mod error;
mod health;
mod persist;
mod reconcile;
mod record;
mod view;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_reconcile;
#[cfg(test)]
mod tests_state;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::control::config::{Config, Family, Forwarding, VipPool};
use crate::control::pool;
use crate::snapshot::{Backend, DataplaneSettings, Snapshot, VersionState, MAX_VERSIONS};

use record::{DrainSettings, ServiceRecord, Version};

pub use build::Staging;
pub use drain::{observe_workers, DrainObservation};
pub use error::VersionError;
pub use reconcile::ReconcileReport;
pub use view::{rfc3339, BackendStatus, ServiceStatus, VersionInfo};

/// Released versions kept per service for `status` and the API; older ones
/// are forgotten so a service rolled out every minute does not grow forever.
pub const HISTORY: usize = 10;

/// Why a draining version was released (`cutover_releases_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseReason {
    /// Out of DNS for TTL + grace and quiet for `drain_quiet`.
    Drained,
    /// `drain_timeout` passed first; connections may have been cut.
    Timeout,
}

impl ReleaseReason {
    /// Every reason, in the order of their `index`.
    pub const ALL: [ReleaseReason; 2] = [ReleaseReason::Drained, ReleaseReason::Timeout];

    /// Position in [`ReleaseReason::ALL`].
    const fn index(self) -> usize {
        match self {
            ReleaseReason::Drained => 0,
            ReleaseReason::Timeout => 1,
        }
    }

    /// The label used in logs, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::Drained => "drained",
            ReleaseReason::Timeout => "timeout",
        }
    }
}

/// Which versions of a service a health verdict applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// Every live version that has the backend: a dead host is dead for all.
    All,
    /// One version by id.
    Id(u32),
}

/// A version that [`VersionManager::evaluate`] released: its VIPs are out of
/// the next snapshot and cooling down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseEvent {
    pub service: String,
    pub id: u32,
    pub uid: u64,
    /// The freed slot; the next version to take it has another uid.
    pub slot: u32,
    pub vips: Vec<IpAddr>,
    pub reason: ReleaseReason,
}

/// Milliseconds since the Unix epoch; 0 for times before it.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Saturating milliseconds of a duration.
fn dur_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Owns the versions of every service; see the module documentation.
#[derive(Debug, Clone)]
pub struct VersionManager {
    /// Configuration order, removed services after. Behind `Arc`s so that
    /// the copy `ControlPlane::change` works on shares every record it does
    /// not change (`Arc::make_mut` copies one on its first change).
    services: Vec<Arc<ServiceRecord>>,
    pools: Vec<VipPool>,
    settings: DataplaneSettings,
    /// Static neighbours and the reserved VIPs below change only with the
    /// configuration: shared, so that copying the manager does not copy
    /// them (11 000 neighbours in a large appliance).
    neighbors: Arc<HashMap<IpAddr, [u8; 6]>>,
    dns_ttl: Duration,
    table_size: usize,
    /// VIP → end of its cooldown (unix ms).
    cooldowns: HashMap<IpAddr, u64>,
    /// VIPs of live versions: never handed out again while held.
    held: HashSet<IpAddr>,
    /// Configured first-version VIPs of every configured service.
    reserved: Arc<HashSet<IpAddr>>,
    next_uid: u64,
    slots: alloc::Slots,
    /// When this process started watching traffic: the quiet rule never
    /// counts silence from before it (after a restart the workers' counters
    /// are fresh, and silence they did not observe proves nothing).
    observing_since: u64,
    revision: u64,
    /// Which records changed since `settle`; see [`Touched`].
    touched: Touched,
}

/// The services whose records changed since the manager was last settled
/// (`None`: unknown, or the list of services itself changed).
///
/// Why: a rollout changes one service of perhaps thousands. With this list
/// the next snapshot is derived by visiting that service only; without it,
/// every record and every version of the parent snapshot is read, which
/// after a cache-cold second cost more than the change itself.
#[derive(Debug, Clone, Default)]
struct Touched(Option<Vec<u32>>);

impl Touched {
    /// More than this many touched services: visit all, the list would not
    /// save much.
    const MAX: usize = 64;

    fn mark(&mut self, si: usize) {
        let Some(list) = &mut self.0 else { return };
        let Ok(si) = u32::try_from(si) else {
            self.0 = None;
            return;
        };
        if !list.contains(&si) {
            if list.len() == Self::MAX {
                self.0 = None;
            } else {
                list.push(si);
            }
        }
    }

    fn everything(&mut self) {
        self.0 = None;
    }
}

/// Service `si`'s record, to change: copied first if shared, and marked
/// touched. Takes the two fields, not the manager, so that callers can
/// still use its other fields while they hold the record.
fn touch<'a>(
    services: &'a mut [Arc<ServiceRecord>],
    touched: &mut Touched,
    si: usize,
) -> &'a mut ServiceRecord {
    touched.mark(si);
    Arc::make_mut(&mut services[si])
}

impl VersionManager {
    /// Version 1 of every service, active: the configured `vips`, or the
    /// lowest free pool address of each family. Supersedes
    /// `bootstrap::initial_snapshot` for `cutover run`.
    pub fn from_config(cfg: &Config, now: SystemTime) -> Result<VersionManager, VersionError> {
        let now = unix_ms(now);
        let mut m = VersionManager::empty(cfg, now);
        for i in 0..cfg.services.len() {
            m.services.push(Arc::new(ServiceRecord::new(cfg, i)));
            let si = m.services.len() - 1;
            let families = m.services[si].families.clone();
            let backends = cfg.services[i].backends.clone();
            m.create_version(si, &backends, &families, true, now)?;
            m.activate_newest(si, now);
        }
        Ok(m)
    }

    fn empty(cfg: &Config, now: u64) -> VersionManager {
        let mut m = VersionManager {
            services: Vec::new(),
            pools: Vec::new(),
            settings: crate::control::bootstrap::settings(cfg),
            neighbors: Arc::default(),
            dns_ttl: Duration::ZERO,
            table_size: cfg.dataplane.maglev_table_size,
            cooldowns: HashMap::new(),
            held: HashSet::new(),
            reserved: Arc::default(),
            next_uid: 1,
            slots: alloc::Slots::new(MAX_VERSIONS),
            observing_since: now,
            revision: 0,
            touched: Touched::default(),
        };
        m.apply_globals(cfg);
        m
    }

    /// Caps the number of live versions below [`MAX_VERSIONS`] (tests, and
    /// operators who want a smaller per-worker counter footprint).
    pub fn with_slot_limit(mut self, limit: usize) -> VersionManager {
        self.slots.set_limit(limit.min(MAX_VERSIONS));
        self
    }

    /// Raised by one on every change: the caller republishes and persists
    /// when it moved.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Creates version `id + 1` of `service` with `backends` and makes it
    /// active; the previous active version starts draining at `now`.
    ///
    /// The new version gets one VIP per family of the current active version,
    /// each the lowest pool address that no live version holds, that is not
    /// cooling down and not configured for another service. Backends that
    /// the active version has keep their health verdict; new ones start
    /// healthy until the health checker says otherwise.
    pub fn rollout(
        &mut self,
        service: &str,
        backends: &[IpAddr],
        now: SystemTime,
    ) -> Result<VersionInfo, VersionError> {
        let now = unix_ms(now);
        let si = self.index(service)?;
        let rec = &self.services[si];
        let active = rec
            .active()
            .ok_or_else(|| VersionError::NoActive(service.to_string()))?;
        let families: Vec<Family> = active.vips.iter().map(pool::family_of).collect();
        let current: HashSet<IpAddr> = active.backends.iter().map(|b| b.addr).collect();
        let requested: HashSet<IpAddr> = backends.iter().copied().collect();
        if requested == current && requested.len() == backends.len() {
            return Err(VersionError::SameBackends {
                service: service.to_string(),
                id: active.id,
            });
        }
        let vi = self.create_version(si, backends, &families, false, now)?;
        self.activate_newest(si, now);
        let rec = touch(&mut self.services, &mut self.touched, si);
        rec.rollouts += 1;
        let rec = &self.services[si];
        let info = self.info(rec, &rec.live[vi]);
        tracing::info!(
            service,
            version = info.id,
            vip = %view::join(&info.vips),
            backends = backends.len(),
            "rollout: new version active, previous one draining"
        );
        Ok(info)
    }

    /// Makes the newest draining version of `service` active again (its VIPs
    /// never left the data plane) and puts the current active one to
    /// draining at `now`.
    pub fn rollback(
        &mut self,
        service: &str,
        now: SystemTime,
    ) -> Result<VersionInfo, VersionError> {
        let now = unix_ms(now);
        let si = self.index(service)?;
        let rec = touch(&mut self.services, &mut self.touched, si);
        if rec.active().is_none() {
            return Err(VersionError::NoActive(service.to_string()));
        }
        let back = rec
            .live
            .iter()
            .rposition(|v| v.state == VersionState::Draining)
            .ok_or_else(|| VersionError::NothingDraining(service.to_string()))?;
        if let Some(a) = rec.active_mut() {
            a.state = VersionState::Draining;
            a.draining_since = Some(now);
        }
        let v = &mut rec.live[back];
        v.state = VersionState::Active;
        v.draining_since = None;
        self.revision += 1;
        let rec = &self.services[si];
        let info = self.info(rec, &rec.live[back]);
        tracing::info!(
            service,
            version = info.id,
            vip = %view::join(&info.vips),
            "rollback: version active again, previous one draining"
        );
        Ok(info)
    }

    /// Applies the release rule of SPEC §2 to every draining version and
    /// releases those it allows: out of DNS for at least `dns.ttl +
    /// drain_grace` and quiet (no flow, no packet for `drain_quiet`), or
    /// `drain_timeout` passed. `observe(slot, uid)` reports what the workers
    /// saw (see [`observe_workers`]). A released version frees its slot, and
    /// its VIPs cool down for the pool's `cooldown`.
    pub fn evaluate(
        &mut self,
        now: SystemTime,
        mut observe: impl FnMut(u32, u64) -> DrainObservation,
    ) -> Vec<ReleaseEvent> {
        let now = unix_ms(now);
        self.cooldowns.retain(|_, until| *until > now);
        let mut events = Vec::new();
        for si in 0..self.services.len() {
            let rec = &self.services[si];
            let mut due = Vec::new();
            for (vi, v) in rec.live.iter().enumerate() {
                let Some(since) = v.draining_since else {
                    continue;
                };
                if v.state != VersionState::Draining {
                    continue;
                }
                let obs = observe(v.slot, v.uid);
                let rule = drain::Rule {
                    ttl: self.dns_ttl,
                    drain: rec.drain,
                    observing_since: self.observing_since,
                };
                if let Some(reason) = rule.verdict(since, &obs, now) {
                    due.push((vi, reason));
                }
            }
            for (vi, reason) in due.into_iter().rev() {
                events.push(self.release(si, vi, reason, now));
            }
        }
        // Removed services disappear once nothing of them is live.
        let before = self.services.len();
        self.services.retain(|r| !(r.removed && r.live.is_empty()));
        if self.services.len() != before {
            self.touched.everything();
        }
        if !events.is_empty() {
            self.revision += 1;
        }
        events
    }

    /// Rollouts of `service` since start (`cutover_rollouts_total`); the
    /// first version and restored versions do not count.
    pub fn rollouts(&self, service: &str) -> u64 {
        self.record(service).map_or(0, |r| r.rollouts)
    }

    /// Releases of `service` for `reason` since start
    /// (`cutover_releases_total`).
    pub fn releases(&self, service: &str, reason: ReleaseReason) -> u64 {
        self.record(service)
            .map_or(0, |r| r.releases[reason.index()])
    }

    /// `(service, rollouts, releases by ReleaseReason::ALL)` of every
    /// service, in one pass (the metrics exporter's view).
    pub fn tallies(&self) -> Vec<(String, u64, [u64; ReleaseReason::ALL.len()])> {
        self.services
            .iter()
            .map(|r| (r.name.clone(), r.rollouts, r.releases))
            .collect()
    }

    fn record(&self, service: &str) -> Option<&ServiceRecord> {
        self.services
            .iter()
            .find(|r| r.name == service)
            .map(|r| &**r)
    }

    /// The DNS TTL the drain rule uses.
    pub fn dns_ttl(&self) -> Duration {
        self.dns_ttl
    }

    fn index(&self, service: &str) -> Result<usize, VersionError> {
        self.services
            .iter()
            .position(|r| r.name == service)
            .ok_or_else(|| VersionError::UnknownService(service.to_string()))
    }

    /// Takes the global parts of `cfg`: pools, DNS TTL, data plane settings
    /// and neighbours, the Maglev size, the reserved VIPs.
    fn apply_globals(&mut self, cfg: &Config) {
        self.pools.clone_from(&cfg.pools);
        self.settings = crate::control::bootstrap::settings(cfg);
        self.neighbors = Arc::new(cfg.dataplane.neighbors.iter().copied().collect());
        self.dns_ttl = Duration::from_secs(u64::from(cfg.dns.ttl));
        self.table_size = cfg.dataplane.maglev_table_size;
        self.touched.everything();
        for rec in self.services.iter_mut().map(Arc::make_mut) {
            for v in &mut rec.live {
                for b in &mut v.backends {
                    b.next_hop = self.neighbors.get(&b.addr).copied();
                }
            }
        }
        self.reserved = Arc::new(
            cfg.services
                .iter()
                .flat_map(|s| s.vips.iter().copied())
                .collect(),
        );
    }

    /// Makes the newest live version of service `si` active; the previous
    /// active one starts draining at `now`.
    fn activate_newest(&mut self, si: usize, now: u64) {
        let rec = touch(&mut self.services, &mut self.touched, si);
        if let Some(a) = rec.active_mut() {
            a.state = VersionState::Draining;
            a.draining_since = Some(now);
        }
        if let Some(v) = rec.live.last_mut() {
            v.state = VersionState::Active;
            v.draining_since = None;
        }
        self.revision += 1;
    }

    /// Releases live version `vi` of service `si`.
    fn release(&mut self, si: usize, vi: usize, reason: ReleaseReason, now: u64) -> ReleaseEvent {
        let cooldown = self
            .pool(&self.services[si].pool)
            .map_or(self.dns_ttl.saturating_mul(10), |p| p.cooldown);
        let rec = touch(&mut self.services, &mut self.touched, si);
        let mut v = rec.live.remove(vi);
        v.state = VersionState::Released;
        v.released_at = Some(now);
        v.release_reason = Some(reason);
        v.maglev = None;
        let until = now.saturating_add(dur_ms(cooldown));
        for vip in &v.vips {
            self.held.remove(vip);
            self.cooldowns.insert(*vip, until);
        }
        self.slots.free(v.slot);
        tracing::info!(
            service = %rec.name,
            version = v.id,
            vip = %view::join(&v.vips),
            reason = reason.as_str(),
            "version released"
        );
        rec.releases[reason.index()] += 1;
        let event = ReleaseEvent {
            service: rec.name.clone(),
            id: v.id,
            uid: v.uid,
            slot: v.slot,
            vips: v.vips.clone(),
            reason,
        };
        rec.history.push_back(v);
        while rec.history.len() > HISTORY {
            rec.history.pop_front();
        }
        event
    }

    fn pool(&self, name: &str) -> Option<&VipPool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The data plane table of the current state: active and draining
    /// versions, released ones absent. Maglev tables are shared with the
    /// previous snapshot (`Arc`), so this costs a copy of the backend lists
    /// and one hash insert per VIP, never a table build.
    pub fn snapshot(&self, generation: u64) -> Result<Snapshot, crate::snapshot::SnapshotError> {
        build::snapshot(self, generation)
    }

    /// The table of the current state derived from `parent` (the published
    /// one): unchanged versions are shared with it, so the cost is that of
    /// the versions that changed plus one VIP insert and a few comparisons
    /// per version. Next hops not known statically come from `next_hop`
    /// (the service's forwarding and the backend's address; the control
    /// plane asks its `nexthop::Resolver`, which knows on-link prefixes and
    /// gateways). `staging` chooses the states DNS will see (see
    /// [`Staging`]). `recheck_hops` also re-resolves the next hops of
    /// versions the parent already has (after a change of configuration);
    /// otherwise theirs are kept.
    pub fn snapshot_from(
        &self,
        parent: &Snapshot,
        generation: u64,
        next_hop: &dyn Fn(Forwarding, IpAddr) -> Option<[u8; 6]>,
        recheck_hops: bool,
        staging: Staging,
    ) -> Result<Snapshot, crate::snapshot::SnapshotError> {
        build::derived(self, parent, generation, next_hop, recheck_hops, staging)
    }

    /// Marks this state as the one the published snapshot shows: from now
    /// on the manager lists the services it changes, and
    /// `snapshot_since_settled` visits only those.
    pub fn settle(&mut self) {
        self.touched = Touched(Some(Vec::new()));
    }

    /// Forgets the settled state: the published snapshot no longer shows
    /// it (a publish from a copy that was then dropped).
    pub fn unsettle(&mut self) {
        self.touched.everything();
    }

    /// `snapshot_from` without re-checking next hops, for a `parent` that
    /// shows this manager's state at its last `settle` (next hops
    /// refreshed since are kept): visits only the services changed since,
    /// or every one when that is not known.
    pub fn snapshot_since_settled(
        &self,
        parent: &Snapshot,
        generation: u64,
        next_hop: &dyn Fn(Forwarding, IpAddr) -> Option<[u8; 6]>,
        staging: Staging,
    ) -> Result<Snapshot, crate::snapshot::SnapshotError> {
        match &self.touched.0 {
            Some(touched) => {
                build::derived_touched(self, parent, generation, next_hop, staging, touched)
            }
            None => build::derived(self, parent, generation, next_hop, false, staging),
        }
    }
}
