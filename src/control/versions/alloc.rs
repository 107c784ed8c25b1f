//! Where a new version's resources come from: its counter slot, its uid
//! and its VIPs.
//!
//! A VIP is handed out only when no live version holds it, it is not cooling
//! down after a release, and it is not configured as another service's
//! first VIP; the lowest such address of the pool wins (SPEC §2). Every
//! check runs before anything is taken, so a refused version leaves no
//! trace.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::control::config::{Family, Forwarding};
use crate::control::pool;
use crate::snapshot::VersionState;

use super::{build, Backend, Version, VersionError, VersionManager};

/// Dense version slots: the lowest free one is reused first, so per-slot
/// arrays stay short. A reused slot is told apart by the new uid.
#[derive(Debug, Clone)]
pub(super) struct Slots {
    limit: u32,
    next: u32,
    free: BTreeSet<u32>,
}

impl Slots {
    pub(super) fn new(limit: usize) -> Slots {
        Slots {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            next: 0,
            free: BTreeSet::new(),
        }
    }

    pub(super) fn set_limit(&mut self, limit: usize) {
        self.limit = u32::try_from(limit).unwrap_or(u32::MAX);
    }

    pub(super) fn limit(&self) -> u32 {
        self.limit
    }

    /// The slot [`Slots::take`] would return, without taking it.
    pub(super) fn peek(&self) -> Option<u32> {
        self.free
            .first()
            .copied()
            .filter(|s| *s < self.limit)
            .or_else(|| (self.next < self.limit).then_some(self.next))
    }

    pub(super) fn take(&mut self) -> Option<u32> {
        let slot = self.peek()?;
        if !self.free.remove(&slot) {
            self.next += 1;
        }
        Some(slot)
    }

    pub(super) fn free(&mut self, slot: u32) {
        if slot + 1 == self.next {
            self.next -= 1;
            // Fold trailing free slots back into `next`.
            while self.next > 0 && self.free.remove(&(self.next - 1)) {
                self.next -= 1;
            }
        } else if slot < self.next {
            self.free.insert(slot);
        }
    }

    /// Rebuilds the allocator from the slots of restored live versions.
    pub(super) fn from_used(limit: usize, used: &BTreeSet<u32>) -> Slots {
        let next = used.last().map_or(0, |s| s + 1);
        Slots {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            next,
            free: (0..next).filter(|s| !used.contains(s)).collect(),
        }
    }
}

impl VersionManager {
    /// Creates the next version of service `si` (state `Draining` with no
    /// `draining_since`, i.e. not yet visible: the caller activates it) and
    /// returns its index in the service's live list. `first` lets the
    /// configured `vips` be used.
    pub(super) fn create_version(
        &mut self,
        si: usize,
        backends: &[IpAddr],
        families: &[Family],
        first: bool,
        now: u64,
    ) -> Result<usize, VersionError> {
        self.check_backends(si, backends)?;
        let vips = self.pick_vips(si, families, first, now)?;
        let rec = &self.services[si];
        let slot = self.slots.peek().ok_or(VersionError::TooManyVersions {
            limit: self.slots.limit(),
        })?;
        // Backends the active version knows keep their health verdict.
        let known = rec.active().map(|a| a.backends.as_slice()).unwrap_or(&[]);
        let states: Vec<Backend> = backends
            .iter()
            .map(|a| Backend {
                addr: *a,
                next_hop: self.neighbors.get(a).copied(),
                healthy: known
                    .iter()
                    .find(|b| b.addr == *a)
                    .is_none_or(|b| b.healthy),
            })
            .collect();
        let table =
            build::maglev(self.table_size, &states).map_err(|source| VersionError::Maglev {
                service: rec.name.clone(),
                source,
            })?;
        // Nothing can fail from here on.
        let taken = self.slots.take();
        debug_assert_eq!(taken, Some(slot));
        let uid = self.next_uid;
        self.next_uid += 1;
        self.held.extend(vips.iter().copied());
        let rec = super::touch(&mut self.services, &mut self.touched, si);
        let id = rec.next_id;
        rec.next_id += 1;
        rec.live.push(Version {
            id,
            uid,
            slot,
            vips,
            backends: states,
            state: VersionState::Draining,
            created_at: now,
            draining_since: None,
            released_at: None,
            release_reason: None,
            maglev: Some(Arc::new(table)),
        });
        Ok(rec.live.len() - 1)
    }

    /// Refuses backend lists the data plane could not serve.
    fn check_backends(&self, si: usize, backends: &[IpAddr]) -> Result<(), VersionError> {
        let rec = &self.services[si];
        let service = || rec.name.clone();
        if backends.is_empty() {
            return Err(VersionError::NoBackends(service()));
        }
        for (i, addr) in backends.iter().enumerate() {
            if backends[..i].contains(addr) {
                return Err(VersionError::DuplicateBackend {
                    service: service(),
                    addr: *addr,
                });
            }
            if addr.is_unspecified() || addr.is_multicast() || is_broadcast(addr) {
                return Err(VersionError::BadBackend {
                    service: service(),
                    addr: *addr,
                });
            }
            if let Some(p) = self
                .pools
                .iter()
                .find(|p| p.prefixes.iter().any(|n| n.contains(addr)))
            {
                return Err(VersionError::BackendInPool {
                    service: service(),
                    addr: *addr,
                    pool: p.name.clone(),
                });
            }
            let family = pool::family_of(addr);
            let has_source = match family {
                Family::Ipv4 => self.settings.encap_source_v4.is_some(),
                Family::Ipv6 => self.settings.encap_source_v6.is_some(),
            };
            if rec.forwarding == Forwarding::Ipip && !has_source {
                return Err(VersionError::NoEncapSource {
                    service: service(),
                    addr: *addr,
                    family,
                });
            }
        }
        Ok(())
    }

    /// One VIP per family, lowest free first; see the module documentation.
    fn pick_vips(
        &self,
        si: usize,
        families: &[Family],
        first: bool,
        now: u64,
    ) -> Result<Vec<IpAddr>, VersionError> {
        let rec = &self.services[si];
        let pool = self
            .pool(&rec.pool)
            .ok_or_else(|| VersionError::UnknownPool {
                service: rec.name.clone(),
                pool: rec.pool.clone(),
            })?;
        let cooling = |a: &IpAddr| self.cooldowns.get(a).is_some_and(|until| *until > now);
        let mut vips: Vec<IpAddr> = Vec::with_capacity(families.len());
        for fam in families {
            let configured = rec.vips.iter().find(|v| pool::family_of(v) == *fam);
            if let (true, Some(vip)) = (first, configured) {
                let why = if self.held.contains(vip) {
                    Some("is still held by a live version".to_string())
                } else {
                    self.cooldowns.get(vip).filter(|u| **u > now).map(|until| {
                        format!(
                            "is cooling down after a release until {}",
                            super::rfc3339(*until)
                        )
                    })
                };
                if let Some(why) = why {
                    return Err(VersionError::VipUnavailable {
                        service: rec.name.clone(),
                        vip: *vip,
                        why,
                    });
                }
                vips.push(*vip);
                continue;
            }
            let vip = pool::lowest_free(pool, *fam, |a| {
                self.held.contains(a) || cooling(a) || self.reserved.contains(a) || vips.contains(a)
            })
            .ok_or_else(|| VersionError::PoolExhausted {
                service: rec.name.clone(),
                pool: pool.name.clone(),
                family: *fam,
            })?;
            vips.push(vip);
        }
        Ok(vips)
    }
}

fn is_broadcast(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V4(a) if a.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_reuse_lowest_and_respect_limit() {
        let mut s = Slots::new(3);
        assert_eq!(s.take(), Some(0));
        assert_eq!(s.take(), Some(1));
        assert_eq!(s.take(), Some(2));
        assert_eq!(s.take(), None);
        s.free(1);
        assert_eq!(s.peek(), Some(1));
        s.free(2);
        assert_eq!(s.take(), Some(1));
        assert_eq!(s.take(), Some(2));
        let used: BTreeSet<u32> = [0, 3].into_iter().collect();
        let mut r = Slots::from_used(8, &used);
        assert_eq!(r.take(), Some(1));
        assert_eq!(r.take(), Some(2));
        assert_eq!(r.take(), Some(4));
    }
}
