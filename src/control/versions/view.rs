//! The read-only view of the versions for the admin API, `cutover status`
//! and the metrics exporter (SPEC §6).
//!
//! Timestamps are RFC 3339 strings in UTC with milliseconds
//! (`2024-05-01T12:00:00.000Z`): readable in `status --json` and parsed by
//! every JSON consumer; absent times are `null`. Worker counters
//! (`active_flows`) are not the manager's: the API adds them using the
//! `slot` and `uid` fields, which are not serialised.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::snapshot::VersionState;

use super::{ReleaseReason, ServiceRecord, Version, VersionManager};

/// A service and its versions, oldest first; released versions are the
/// last [`super::HISTORY`] ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    /// `tcp/80` as in the configuration.
    pub ports: Vec<String>,
    /// True once the service left the configuration: it drains, then goes.
    pub removed: bool,
    pub versions: Vec<VersionInfo>,
}

/// One version as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub service: String,
    pub id: u32,
    /// One per family.
    pub vips: Vec<IpAddr>,
    pub state: VersionState,
    pub backends: Vec<BackendStatus>,
    pub created_at: String,
    pub draining_since: Option<String>,
    pub released_at: Option<String>,
    pub release_reason: Option<ReleaseReason>,
    /// The counter slot, while live: `WorkerStats::version(slot, uid)`.
    #[serde(skip)]
    pub slot: Option<u32>,
    #[serde(skip)]
    pub uid: u64,
}

/// A backend of a version and its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendStatus {
    pub addr: IpAddr,
    pub healthy: bool,
}

impl VersionManager {
    /// Every service, in configuration order (removed ones last).
    pub fn services(&self) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .map(|rec| {
                let mut versions: Vec<VersionInfo> = rec
                    .history
                    .iter()
                    .chain(rec.live.iter())
                    .map(|v| self.info(rec, v))
                    .collect();
                versions.sort_by_key(|v| v.id);
                ServiceStatus {
                    name: rec.name.clone(),
                    ports: rec.ports.iter().map(ToString::to_string).collect(),
                    removed: rec.removed,
                    versions,
                }
            })
            .collect()
    }

    /// Version `id` of `service`, live or in the history.
    pub fn version(&self, service: &str, id: u32) -> Option<VersionInfo> {
        let rec = self.services.iter().find(|r| r.name == service)?;
        let v = rec
            .live
            .iter()
            .chain(rec.history.iter())
            .find(|v| v.id == id)?;
        Some(self.info(rec, v))
    }

    /// The active version of `service` (what DNS answers with).
    pub fn active(&self, service: &str) -> Option<VersionInfo> {
        let rec = self.services.iter().find(|r| r.name == service)?;
        rec.active().map(|v| self.info(rec, v))
    }

    pub(super) fn info(&self, rec: &ServiceRecord, v: &Version) -> VersionInfo {
        VersionInfo {
            service: rec.name.clone(),
            id: v.id,
            vips: v.vips.clone(),
            state: v.state,
            backends: v
                .backends
                .iter()
                .map(|b| BackendStatus {
                    addr: b.addr,
                    healthy: b.healthy,
                })
                .collect(),
            created_at: rfc3339(v.created_at),
            draining_since: v.draining_since.map(rfc3339),
            released_at: v.released_at.map(rfc3339),
            release_reason: v.release_reason,
            slot: (v.state != VersionState::Released).then_some(v.slot),
            uid: v.uid,
        }
    }
}

/// `203.0.113.1,2001:db8::1`, for log fields.
pub(super) fn join(vips: &[IpAddr]) -> String {
    let mut s = String::new();
    for (i, v) in vips.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v}");
    }
    s
}

/// Formats unix milliseconds as RFC 3339 UTC, `1970-01-01T00:00:00.000Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
