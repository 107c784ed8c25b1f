//! Health verdicts inside versions: the one thing of a version that
//! changes. An unhealthy backend gets no new flows (its version's Maglev
//! table is rebuilt without it); flows pinned to it in flow tables are the
//! data plane's business.

use std::net::IpAddr;
use std::sync::Arc;

use super::{build, VersionError, VersionManager, VersionSelector};

impl VersionManager {
    /// Records a health verdict for backend `addr` of the selected versions
    /// and rebuilds the Maglev table of each version whose health changed;
    /// every other version keeps its table. Returns how many versions
    /// changed (0 when the verdict was already known).
    pub fn set_backend_health(
        &mut self,
        service: &str,
        which: VersionSelector,
        addr: IpAddr,
        healthy: bool,
    ) -> Result<usize, VersionError> {
        let si = self.index(service)?;
        let rec = &self.services[si];
        let selected: Vec<usize> = match which {
            VersionSelector::All => (0..rec.live.len()).collect(),
            VersionSelector::Id(id) => vec![rec.live.iter().position(|v| v.id == id).ok_or(
                VersionError::UnknownVersion {
                    service: service.to_string(),
                    id,
                },
            )?],
        };
        // Build every new table first, so a failure changes nothing.
        let mut rebuilt = Vec::new();
        let mut found = false;
        for vi in selected {
            let v = &rec.live[vi];
            let Some(bi) = v.backends.iter().position(|b| b.addr == addr) else {
                continue;
            };
            found = true;
            if v.backends[bi].healthy == healthy {
                continue;
            }
            let mut backends = v.backends.clone();
            backends[bi].healthy = healthy;
            let table = build::maglev(self.table_size, &backends).map_err(|source| {
                VersionError::Maglev {
                    service: service.to_string(),
                    source,
                }
            })?;
            rebuilt.push((vi, backends, table));
        }
        if !found {
            return Err(VersionError::UnknownBackend {
                service: service.to_string(),
                addr,
            });
        }
        let changed = rebuilt.len();
        for (vi, backends, table) in rebuilt {
            let v = &mut super::touch(&mut self.services, &mut self.touched, si).live[vi];
            v.backends = backends;
            v.maglev = Some(Arc::new(table));
            tracing::info!(
                service,
                version = v.id,
                backend = %addr,
                healthy,
                "backend health changed"
            );
        }
        if changed > 0 {
            self.revision += 1;
        }
        Ok(changed)
    }
}
