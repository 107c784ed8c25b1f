//! Declarative reload (SIGHUP, `cutover reload`, `POST /v1/reload`): bring
//! the running versions in line with a new configuration file.
//!
//! The change is computed on a copy of the manager and swapped in only when
//! every step succeeded, so a file that cannot be applied (a pool too small
//! for the new versions, a configured VIP still in use) changes nothing.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::control::config::Config;
use crate::control::pool;
use crate::snapshot::VersionState;

use super::{unix_ms, ServiceRecord, VersionError, VersionManager};

/// What a reload did, for the log and the API's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Services that got version 1.
    pub added: Vec<String>,
    /// (service, new version id) of every rollout.
    pub rolled_out: Vec<(String, u32)>,
    /// Services now draining all their versions.
    pub removed: Vec<String>,
}

impl ReconcileReport {
    /// True when the reload changed no version.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.rolled_out.is_empty() && self.removed.is_empty()
    }
}

impl VersionManager {
    /// Applies `cfg` (already validated by `config::load`):
    ///
    /// * a service whose configured backends (as a set) or families differ
    ///   from its active version's gets a rollout;
    /// * a new service gets version 1 (its configured `vips`, or the pool's);
    /// * a service missing from the file has its active version put to
    ///   draining; it is removed once all its versions are released;
    /// * a service back in the file while still draining gets a new version;
    /// * ports, forwarding and drain settings are taken as they are, for
    ///   running versions too (they are per service in the data plane);
    /// * a new `maglev_table_size` rebuilds every live version's table.
    ///
    /// On error nothing changed. This is also the step after
    /// [`VersionManager::restore`] when the file changed while the process
    /// was down.
    pub fn reconcile(
        &mut self,
        cfg: &Config,
        now: SystemTime,
    ) -> Result<ReconcileReport, VersionError> {
        let now = unix_ms(now);
        let mut next = self.clone();
        let report = next.apply_config(cfg, now)?;
        *self = next;
        if !report.is_empty() {
            tracing::info!(
                added = report.added.len(),
                rolled_out = report.rolled_out.len(),
                removed = report.removed.len(),
                "configuration reconciled"
            );
        }
        Ok(report)
    }

    fn apply_config(&mut self, cfg: &Config, now: u64) -> Result<ReconcileReport, VersionError> {
        let old_table = self.table_size;
        self.apply_globals(cfg);
        if self.table_size != old_table {
            self.rebuild_tables()?;
        }
        // Settings, neighbours or ports may have changed even when no
        // version did: the caller republishes and persists either way.
        self.revision += 1;
        // Services may be added, removed, reordered or reconfigured.
        self.touched.everything();
        let mut report = ReconcileReport::default();
        let mut order = Vec::with_capacity(cfg.services.len());
        for (ci, s) in cfg.services.iter().enumerate() {
            let si = match self.services.iter().position(|r| r.name == s.name) {
                Some(si) => {
                    super::touch(&mut self.services, &mut self.touched, si).apply(cfg, ci);
                    si
                }
                None => {
                    self.services.push(Arc::new(ServiceRecord::new(cfg, ci)));
                    let si = self.services.len() - 1;
                    let families = s.families.clone();
                    self.create_version(si, &s.backends, &families, true, now)?;
                    self.activate_newest(si, now);
                    report.added.push(s.name.clone());
                    tracing::info!(service = %s.name, "service added");
                    order.push(s.name.clone());
                    continue;
                }
            };
            let rec = &self.services[si];
            let wanted: HashSet<IpAddr> = s.backends.iter().copied().collect();
            let differs = match rec.active() {
                None => true,
                Some(a) => {
                    let have: HashSet<IpAddr> = a.backends.iter().map(|b| b.addr).collect();
                    let families: Vec<_> = a.vips.iter().map(pool::family_of).collect();
                    have != wanted || families != s.families
                }
            };
            if differs {
                let families = s.families.clone();
                let vi = self.create_version(si, &s.backends, &families, false, now)?;
                self.activate_newest(si, now);
                let rec = super::touch(&mut self.services, &mut self.touched, si);
                rec.rollouts += 1;
                let id = rec.live[vi].id;
                tracing::info!(service = %s.name, version = id, "rollout by reload");
                report.rolled_out.push((s.name.clone(), id));
            }
            order.push(s.name.clone());
        }
        let configured: HashSet<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
        let gone = self
            .services
            .iter_mut()
            .filter(|r| !configured.contains(r.name.as_str()) && !r.removed)
            .map(Arc::make_mut);
        for rec in gone {
            rec.removed = true;
            if let Some(a) = rec.active_mut() {
                a.state = VersionState::Draining;
                a.draining_since = Some(now);
            }
            self.revision += 1;
            tracing::info!(service = %rec.name, "service removed from the configuration: draining");
            report.removed.push(rec.name.clone());
        }
        // Configuration order first, removed services after, as they were.
        let rank = |name: &str| order.iter().position(|n| n == name).unwrap_or(usize::MAX);
        self.services.sort_by_key(|r| rank(&r.name));
        Ok(report)
    }

    /// Rebuilds every live table (the Maglev size changed).
    fn rebuild_tables(&mut self) -> Result<(), VersionError> {
        let size = self.table_size;
        self.touched.everything();
        for rec in self.services.iter_mut().map(Arc::make_mut) {
            for v in &mut rec.live {
                let table = super::build::maglev(size, &v.backends).map_err(|source| {
                    VersionError::Maglev {
                        service: rec.name.clone(),
                        source,
                    }
                })?;
                v.maglev = Some(std::sync::Arc::new(table));
            }
        }
        Ok(())
    }
}
