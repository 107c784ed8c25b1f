//! The running control plane: one place that changes versions.
//!
//! Every change — rollout, rollback, reload, a health verdict, a release by
//! the drain rule — goes through [`ControlPlane`]: it is applied to a copy
//! of the version manager, a snapshot derived from the published one is
//! published (with a state file: first the data plane's view, then the
//! state is written, then DNS's view; see `change`), and the copy is kept. A change
//! that fails anywhere leaves everything as it was, which is what a `4xx`
//! from the admin API promises.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::control::config::{self, Config, Forwarding};
use crate::control::neighbors;
use crate::control::nexthop::{self, KernelView, Resolver, Route};
use crate::control::state::{self, StateError};
use crate::control::versions::{
    observe_workers, ReconcileReport, ReleaseReason, Staging, VersionError, VersionInfo,
    VersionManager, VersionSelector,
};
use crate::dataplane::stats::WorkerStats;
use crate::snapshot::{Snapshot, SnapshotCell, SnapshotError};
use crate::telemetry::metrics::ControlCounts;

/// Why a control-plane call changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is wrong (unknown service, bad backends, pool empty…).
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The configuration file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The snapshot could not be built (an internal invariant broke).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl ControlError {
    /// True when the caller asked for something impossible (a 4xx), false
    /// when the appliance failed (a 5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(self, ControlError::Version(_) | ControlError::Config(_))
    }
}

/// A version as the API shows it: the manager's view plus its active flows.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    #[serde(flatten)]
    pub info: VersionInfo,
    /// Flows in the workers' flow tables (0 once released).
    pub active_flows: u64,
}

/// A service as `GET /v1/services` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub ports: Vec<String>,
    pub removed: bool,
    pub versions: Vec<VersionView>,
}

struct Inner {
    manager: VersionManager,
    cfg: Config,
    generation: u64,
    /// The kernel's neighbours and on-link prefixes, as last read.
    kernel: KernelView,
    /// Unresolved backends whose reason was logged (once each).
    explained: HashSet<(IpAddr, Route)>,
    /// `nexthop::static_hops(&cfg)`, kept with `cfg`.
    static_hops: HashMap<IpAddr, [u8; 6]>,
}

/// Something outside the snapshot that must know every live VIP before
/// packets to it can reach the workers (the AF_XDP redirect map).
pub type VipHook = Box<dyn Fn(&[IpAddr]) + Send + Sync>;

/// Told about every snapshot just before it is published (tests check the
/// publishing order with it).
pub type PublishObserver = Box<dyn Fn(&Snapshot) + Send + Sync>;

/// A state file write at least this long is logged: a change holds the
/// control lock across it.
const SLOW_STATE_WRITE: std::time::Duration = std::time::Duration::from_secs(1);

/// Rollouts and releases per service, as [`VersionManager::tallies`] gives
/// them.
type Tallies = Vec<(String, u64, [u64; ReleaseReason::ALL.len()])>;

/// The control plane of one running appliance.
pub struct ControlPlane {
    inner: Mutex<Inner>,
    /// The settled manager's tallies, behind a lock of their own: a change
    /// holds `inner` across the state file's fsync, which a busy disk can
    /// stretch to seconds, and the metrics exporter must not freeze with
    /// it.
    tallies: Mutex<Tallies>,
    vip_hook: std::sync::OnceLock<VipHook>,
    observer: std::sync::OnceLock<PublishObserver>,
    cell: Arc<SnapshotCell>,
    workers: Vec<Arc<WorkerStats>>,
    epoch: Instant,
    config_path: PathBuf,
}

impl ControlPlane {
    /// Restores the versions from the state file when there is one (a
    /// restart: draining versions keep draining), then applies the
    /// configuration; otherwise starts every service at version 1. Fails
    /// on an unreadable or corrupt state file rather than replacing it.
    pub fn start(
        cfg: Config,
        config_path: &Path,
        workers: Vec<Arc<WorkerStats>>,
        epoch: Instant,
    ) -> Result<ControlPlane, ControlError> {
        let now = SystemTime::now();
        let manager = match cfg
            .state
            .path
            .as_deref()
            .map(state::load)
            .transpose()?
            .flatten()
        {
            Some(saved) => {
                let mut m = VersionManager::restore(&cfg, saved, now)?;
                m.reconcile(&cfg, now)?;
                tracing::info!("versions restored from the state file");
                m
            }
            None => VersionManager::from_config(&cfg, now)?,
        };
        if let Some(path) = &cfg.state.path {
            state::save(path, &manager.persisted(now))?;
        }
        let kernel = neighbors::kernel_view(&cfg.dataplane.interfaces, &[]);
        let first = manager.snapshot(1)?;
        let static_hops = nexthop::static_hops(&cfg);
        // DNS names the first versions as soon as it starts: their next
        // hops are asked for first (see `neighbors::RESOLVE_WAIT`).
        let missing = neighbors::to_resolve(
            &Resolver::with_static(&cfg, &static_hops, &kernel),
            &kernel,
            backends_of(&first),
        );
        let kernel = neighbors::await_resolved(
            &cfg.dataplane.interfaces,
            &missing,
            &kernel,
            neighbors::RESOLVE_WAIT,
        )
        .unwrap_or(kernel);
        let first = with_next_hops(&cfg, first, &kernel)?;
        let mut explained = HashSet::new();
        neighbors::solicit_unresolved(&cfg, &first, &kernel, &mut explained);
        Ok(ControlPlane {
            tallies: Mutex::new(manager.tallies()),
            inner: Mutex::new(Inner {
                manager,
                static_hops,
                cfg,
                generation: first.generation,
                kernel,
                explained,
            }),
            cell: Arc::new(SnapshotCell::new(first)),
            vip_hook: std::sync::OnceLock::new(),
            observer: std::sync::OnceLock::new(),
            workers,
            epoch,
            config_path: config_path.to_path_buf(),
        })
    }

    /// The cell the workers and the DNS server read.
    pub fn cell(&self) -> &Arc<SnapshotCell> {
        &self.cell
    }

    /// Installs the hook told about the live VIPs, and tells it the current
    /// ones. Before a publish it gets the old and the new VIPs together, so
    /// a new VIP reaches the workers before DNS can name it; after the
    /// publish it gets the new set alone. Only the first call installs.
    pub fn set_vip_hook(&self, hook: VipHook) {
        let _ = self.vip_hook.set(hook);
        let _guard = self.lock();
        if let Some(h) = self.vip_hook.get() {
            h(&vips_of(&self.cell.load_full()));
        }
    }

    /// Installs `observer`, called with every snapshot just before it is
    /// published, with the control lock held (so it sees them in order).
    /// Only the first call installs.
    pub fn set_publish_observer(&self, observer: PublishObserver) {
        let _ = self.observer.set(observer);
    }

    /// Publishes `snap`, keeping the VIP hook ahead of DNS. Called with
    /// the lock held, so publishes are ordered.
    fn publish(&self, snap: Arc<Snapshot>) {
        if let Some(observe) = self.observer.get() {
            observe(&snap);
        }
        match self.vip_hook.get() {
            None => self.cell.publish_arc(snap),
            Some(hook) => {
                let new = vips_of(&snap);
                let mut both = vips_of(&self.cell.load_full());
                both.extend(new.iter().copied());
                both.sort();
                both.dedup();
                hook(&both);
                self.cell.publish_arc(snap);
                hook(&new);
            }
        }
    }

    /// The configuration in force (the last one loaded successfully).
    pub fn config(&self) -> Config {
        self.lock().cfg.clone()
    }

    /// The per-worker counters.
    pub fn workers(&self) -> &[Arc<WorkerStats>] {
        &self.workers
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied change
        // (changes are made on copies), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Services and versions with their active flows.
    pub fn status(&self) -> Vec<ServiceView> {
        let inner = self.lock();
        inner
            .manager
            .services()
            .into_iter()
            .map(|s| ServiceView {
                name: s.name,
                ports: s.ports,
                removed: s.removed,
                versions: s
                    .versions
                    .into_iter()
                    .map(|info| {
                        let active_flows = info.slot.map_or(0, |slot| {
                            self.workers
                                .iter()
                                .filter_map(|w| w.version(slot, info.uid))
                                .map(|c| c.active_flows.get())
                                .sum()
                        });
                        VersionView { info, active_flows }
                    })
                    .collect(),
            })
            .collect()
    }

    /// A new version of `service` with `backends`; the old one drains.
    ///
    /// Backends whose next hop the kernel has not resolved yet are asked
    /// for first, and the call waits for them (up to
    /// [`neighbors::RESOLVE_WAIT`], without the lock) before the version
    /// is published and DNS names it: otherwise its first connections
    /// would meet `no_neighbor` drops until the next refresh.
    pub fn rollout(&self, service: &str, backends: &[IpAddr]) -> Result<VersionInfo, ControlError> {
        let fresh = self.resolve_first(None, |cfg| {
            cfg.services
                .iter()
                .find(|s| s.name == service)
                .map(|s| backends.iter().map(|&a| (s.forwarding, a)).collect())
                .unwrap_or_default()
        });
        self.change_seeing(fresh, |m, _| {
            m.rollout(service, backends, SystemTime::now())
                .map_err(Into::into)
        })
    }

    /// The newest draining version of `service` becomes active again.
    pub fn rollback(&self, service: &str) -> Result<VersionInfo, ControlError> {
        self.change(|m, _| m.rollback(service, SystemTime::now()).map_err(Into::into))
    }

    /// Re-reads the configuration file and applies it; an invalid file is
    /// refused and the running state kept.
    pub fn reload(&self) -> Result<ReconcileReport, ControlError> {
        let cfg = config::load(&self.config_path)?;
        // New backends are resolved first, as for a rollout.
        let fresh = self.resolve_first(Some(&cfg), |cfg| {
            cfg.services
                .iter()
                .flat_map(|s| s.backends.iter().map(|&a| (s.forwarding, a)))
                .collect()
        });
        let report = self.change_seeing(fresh, |m, new_cfg| {
            let r = m.reconcile(&cfg, SystemTime::now())?;
            *new_cfg = Some(cfg);
            Ok(r)
        })?;
        tracing::info!(
            added = ?report.added,
            rolled_out = ?report.rolled_out,
            removed = ?report.removed,
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Records a health-check verdict for `addr` in every live version of
    /// `service` that has it.
    pub fn set_health(
        &self,
        service: &str,
        addr: IpAddr,
        healthy: bool,
    ) -> Result<(), ControlError> {
        self.change(|m, _| {
            m.set_backend_health(service, VersionSelector::All, addr, healthy)
                .map(|_| ())
                .map_err(Into::into)
        })
    }

    /// The periodic work: releases drained versions, refreshes next hops.
    pub fn tick(&self) {
        let now = SystemTime::now();
        let now_mono = Instant::now();
        let workers = &self.workers;
        let epoch = self.epoch;
        let released = self.change(|m, _| {
            Ok(m.evaluate(now, |slot, uid| {
                observe_workers(
                    workers.iter().map(|w| &**w),
                    slot,
                    uid,
                    epoch,
                    now_mono,
                    now,
                )
            }))
        });
        if let Err(e) = released {
            tracing::error!(error = %e, "drain evaluation failed");
        }
        // The dumps run without the lock (the API stays responsive if the
        // kernel is slow to answer), from what the last tick saw.
        let (interfaces, last) = {
            let inner = self.lock();
            (
                inner.cfg.dataplane.interfaces.clone(),
                inner.kernel.prefixes.clone(),
            )
        };
        let kernel = neighbors::kernel_view(&interfaces, &last);
        let mut inner = self.lock();
        self.adopt(&mut inner, kernel);
        // Unknown next hops are solicited on every tick until resolved.
        let inner = &mut *inner;
        neighbors::solicit_unresolved(
            &inner.cfg,
            &self.cell.load_full(),
            &inner.kernel,
            &mut inner.explained,
        );
    }

    /// Asks the kernel for the next hops of `backends` (of `cfg`, a
    /// configuration about to be applied, or else of the running one) that
    /// it has not resolved, and waits for them (see
    /// [`neighbors::RESOLVE_WAIT`]): what to ask is read under the lock,
    /// the wait is without it. Returns the kernel view to adopt, `None`
    /// when nothing needed asking.
    fn resolve_first(
        &self,
        cfg: Option<&Config>,
        backends: impl FnOnce(&Config) -> Vec<(Forwarding, IpAddr)>,
    ) -> Option<KernelView> {
        let (interfaces, missing, kernel) = {
            let inner = self.lock();
            let (cfg, resolver) = match cfg {
                Some(cfg) => (cfg, Resolver::new(cfg, &inner.kernel)),
                None => (
                    &inner.cfg,
                    Resolver::with_static(&inner.cfg, &inner.static_hops, &inner.kernel),
                ),
            };
            let missing = neighbors::to_resolve(&resolver, &inner.kernel, backends(cfg));
            if missing.is_empty() {
                return None;
            }
            (
                cfg.dataplane.interfaces.clone(),
                missing,
                inner.kernel.clone(),
            )
        };
        neighbors::await_resolved(&interfaces, &missing, &kernel, neighbors::RESOLVE_WAIT)
    }

    /// Makes `kernel` the view next hops come from; when it differs from
    /// the last one, publishes the current snapshot with its next hops
    /// refreshed (if any changed). Called with the lock held.
    fn adopt(&self, inner: &mut Inner, kernel: KernelView) {
        if kernel == inner.kernel {
            return;
        }
        inner.kernel = kernel;
        let current = self.cell.load_full();
        match neighbors::refresh(&inner.cfg, &current, &inner.kernel) {
            Ok(Some(next)) => {
                inner.generation = next.generation;
                tracing::info!(generation = next.generation, "next hops changed");
                self.publish(Arc::new(next));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "next-hop refresh failed"),
        }
    }

    /// [`ControlPlane::change`] after adopting `fresh`, a kernel view read
    /// without the lock (see [`ControlPlane::rollout`]), under the same
    /// lock, so that no tick can put an older view back in between.
    fn change_seeing<T>(
        &self,
        fresh: Option<KernelView>,
        f: impl FnOnce(&mut VersionManager, &mut Option<Config>) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let mut inner = self.lock();
        if let Some(kernel) = fresh {
            self.adopt(&mut inner, kernel);
        }
        self.change_locked(inner, f)
    }

    /// Applies `f` to a copy of the manager; when the copy changed, publishes
    /// it and keeps it. Any error leaves the running state untouched.
    ///
    /// Without a state file there is one publish. With one, SPEC §2's order
    /// (data plane first, then DNS) is kept across the durable write too:
    ///
    /// 1. a snapshot in which every version of the copy forwards but DNS
    ///    still sees the running states (a new version shows as
    ///    `draining`, so DNS does not name its VIP): the workers see the
    ///    change as soon as this store is done;
    /// 2. the copy's state is written and fsynced;
    /// 3. the snapshot with the copy's states: DNS names the new VIP.
    ///
    /// A crash between 1 and 3 restarts from the old state file: the new VIP
    /// was never named by DNS, so forgetting it is safe. A failed write in 2
    /// republishes the running state and returns the error. Step 1 is
    /// skipped when it would change nothing (a rollback, a health verdict:
    /// no new version).
    fn change<T>(
        &self,
        f: impl FnOnce(&mut VersionManager, &mut Option<Config>) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        self.change_locked(self.lock(), f)
    }

    /// [`ControlPlane::change`] with the lock already taken.
    fn change_locked<T>(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        f: impl FnOnce(&mut VersionManager, &mut Option<Config>) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let mut next = inner.manager.clone();
        let mut new_cfg = None;
        let out = f(&mut next, &mut new_cfg)?;
        if next.revision() == inner.manager.revision() {
            if let Some(cfg) = new_cfg {
                inner.static_hops = nexthop::static_hops(&cfg);
                inner.cfg = cfg;
            }
            return Ok(out);
        }
        let current = self.cell.load_full();
        let inner = &mut *inner;
        let cfg = new_cfg.as_ref().unwrap_or(&inner.cfg);
        let resolver = match &new_cfg {
            Some(cfg) => Resolver::new(cfg, &inner.kernel),
            None => Resolver::with_static(&inner.cfg, &inner.static_hops, &inner.kernel),
        };
        let kernel = &|forwarding, addr| resolver.next_hop(forwarding, addr);
        // A new configuration may bring other static neighbours or
        // gateways; otherwise `tick` keeps published next hops current.
        let recheck = new_cfg.is_some();
        // `inner.manager` is settled whenever the published snapshot shows
        // it, so a derived snapshot visits only the services `f` changed.
        let derive = |parent: &Snapshot, generation: u64, staging: Staging| {
            if recheck {
                next.snapshot_from(parent, generation, kernel, true, staging)
            } else {
                next.snapshot_since_settled(parent, generation, kernel, staging)
            }
        };
        let state_path = cfg.state.path.clone();
        let mut generation = inner.generation;
        let mut parent = current;
        if let Some(path) = &state_path {
            let staged = derive(&parent, generation + 1, Staging::DataplaneOnly)?;
            if staged.changed_since(parent.generation) != Some(&[]) {
                generation += 1;
                let staged = Arc::new(staged);
                self.publish(Arc::clone(&staged));
                parent = staged;
            }
            let writing = Instant::now();
            let saved = state::save(path, &next.persisted(SystemTime::now()));
            let took = writing.elapsed();
            if took >= SLOW_STATE_WRITE {
                // Everything waits for it: DNS is not switched, the API and
                // the drain rule queue behind the control lock.
                tracing::warn!(path = %path.display(), ?took, "the state file write (fsync) was slow");
            }
            if let Err(e) = saved {
                if generation != inner.generation {
                    // Take the staged version out of the data plane again.
                    match inner.manager.snapshot_from(
                        &parent,
                        generation + 1,
                        kernel,
                        recheck,
                        Staging::Final,
                    ) {
                        Ok(back) => {
                            inner.generation = back.generation;
                            self.publish(Arc::new(back));
                        }
                        // Cannot happen (it was published before); the
                        // staged snapshot names no VIP in DNS that the
                        // state file lacks, so it may stay.
                        Err(se) => {
                            inner.generation = generation;
                            inner.manager.unsettle();
                            tracing::error!(error = %se, "restoring the running snapshot failed");
                        }
                    }
                }
                return Err(e.into());
            }
        }
        let snap = match derive(&parent, generation + 1, Staging::Final) {
            Ok(snap) => snap,
            Err(e) => {
                if generation != inner.generation {
                    // The staged snapshot stays published: it shows `next`.
                    inner.generation = generation;
                    inner.manager.unsettle();
                }
                return Err(e.into());
            }
        };
        inner.generation = snap.generation;
        self.publish(Arc::new(snap));
        inner.manager = next;
        *self.tallies.lock().unwrap_or_else(|e| e.into_inner()) = inner.manager.tallies();
        inner.manager.settle();
        if let Some(cfg) = new_cfg {
            inner.static_hops = nexthop::static_hops(&cfg);
            inner.cfg = cfg;
        }
        Ok(out)
    }
}

/// Every VIP of every version in `snap`.
fn vips_of(snap: &Snapshot) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = snap
        .versions()
        .flat_map(|v| v.vips.iter().copied())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Every backend of every version in `snap`, with its service's
/// forwarding mode.
fn backends_of(snap: &Snapshot) -> Vec<(Forwarding, IpAddr)> {
    snap.versions()
        .filter_map(|v| Some((snap.service(v.service)?.forwarding, v)))
        .flat_map(|(f, v)| v.backends.iter().map(move |b| (f, b.addr)))
        .collect()
}

/// `snap` with next hops filled in from the static table and the kernel's.
fn with_next_hops(
    cfg: &Config,
    snap: Snapshot,
    kernel: &KernelView,
) -> Result<Snapshot, SnapshotError> {
    let generation = snap.generation;
    let mut filled = match neighbors::refresh(cfg, &snap, kernel)? {
        Some(s) => s,
        None => return Ok(snap),
    };
    // `refresh` bumps the generation for its own publishes; here the
    // snapshot is new anyway and keeps the number it was built with.
    filled.generation = generation;
    Ok(filled)
}

impl ControlCounts for ControlPlane {
    fn rollouts(&self) -> Vec<(String, u64)> {
        let tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        tallies
            .iter()
            .map(|(name, n, _)| (name.clone(), *n))
            .collect()
    }

    fn releases(&self) -> Vec<(String, String, u64)> {
        let tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (name, _, by_reason) in tallies.iter() {
            for (r, n) in ReleaseReason::ALL.into_iter().zip(by_reason) {
                out.push((name.clone(), r.as_str().to_owned(), *n));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "plane_tests.rs"]
mod tests;
