//! The release rule of SPEC §2, and how the workers' counters feed it.
//!
//! Flow tables are bounded and evict, so a flow count of 0 alone never
//! proves a version drained: the rule also needs the time of the last
//! packet to the version's VIPs, which each worker keeps for itself.

use std::time::{Duration, Instant, SystemTime};

use crate::dataplane::stats::WorkerStats;

use super::{dur_ms, unix_ms, DrainSettings, ReleaseReason};

/// What the workers saw of one draining version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainObservation {
    /// Flows of the version summed over every worker's flow table.
    pub active_flows: u64,
    /// The latest packet to the version's VIPs on any worker; `None` when
    /// no worker saw one since it started.
    pub last_packet: Option<SystemTime>,
}

/// Sums the counters of version (`slot`, `uid`) over `workers`.
///
/// Workers stamp packets with nanoseconds since the shared `epoch`; they
/// are turned into wall-clock time through `now_mono` and `now`, which the
/// caller reads together. Counters of a slot that belongs to another uid
/// (a reused slot) are ignored.
pub fn observe_workers<'a>(
    workers: impl IntoIterator<Item = &'a WorkerStats>,
    slot: u32,
    uid: u64,
    epoch: Instant,
    now_mono: Instant,
    now: SystemTime,
) -> DrainObservation {
    let mut obs = DrainObservation::default();
    let mut latest_ns: Option<u64> = None;
    for w in workers {
        let Some(c) = w.version(slot, uid) else {
            continue;
        };
        obs.active_flows = obs.active_flows.saturating_add(c.active_flows.get());
        let ns = c.last_packet_ns.get();
        if ns != 0 {
            latest_ns = Some(latest_ns.map_or(ns, |l| l.max(ns)));
        }
    }
    obs.last_packet = latest_ns.map(|ns| {
        let at = epoch
            .checked_add(Duration::from_nanos(ns))
            .unwrap_or(now_mono);
        let age = now_mono.saturating_duration_since(at);
        now.checked_sub(age).unwrap_or(now)
    });
    obs
}

/// The rule, with everything it depends on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    pub(super) ttl: Duration,
    pub(super) drain: DrainSettings,
    /// Unix ms from which this process observed packets.
    pub(super) observing_since: u64,
}

impl Rule {
    /// Whether a version draining since `since` (unix ms) is released at
    /// `now`, and why.
    ///
    /// Silence is measured from the latest of: the start of the drain, the
    /// start of this process's observation, the last packet. Before the
    /// drain packets were expected; before the process started nobody was
    /// counting.
    pub(super) fn verdict(
        &self,
        since: u64,
        obs: &DrainObservation,
        now: u64,
    ) -> Option<ReleaseReason> {
        let draining_for = now.saturating_sub(since);
        let out_of_dns = draining_for >= dur_ms(self.ttl).saturating_add(dur_ms(self.drain.grace));
        let last = obs.last_packet.map_or(0, unix_ms);
        let quiet_from = since.max(self.observing_since).max(last);
        let quiet =
            obs.active_flows == 0 && now.saturating_sub(quiet_from) >= dur_ms(self.drain.quiet);
        if out_of_dns && quiet {
            Some(ReleaseReason::Drained)
        } else if draining_for >= dur_ms(self.drain.timeout) {
            Some(ReleaseReason::Timeout)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn observe_sums_flows_and_takes_latest_packet_of_matching_uid() {
        let a = WorkerStats::new();
        let b = WorkerStats::new();
        for (w, flows, ns) in [(&a, 2, 1_000_000_000), (&b, 3, 3_000_000_000)] {
            w.versions[7].uid.set(42);
            w.versions[7].active_flows.set(flows);
            w.versions[7].last_packet_ns.set(ns);
        }
        let epoch = Instant::now();
        let now_mono = epoch + Duration::from_secs(10);
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let obs = observe_workers([&a, &b], 7, 42, epoch, now_mono, now);
        assert_eq!(obs.active_flows, 5);
        // Last packet at epoch + 3 s, i.e. 7 s before now.
        assert_eq!(obs.last_packet, Some(UNIX_EPOCH + Duration::from_secs(993)));
        let other = observe_workers([&a, &b], 7, 41, epoch, now_mono, now);
        assert_eq!(other, DrainObservation::default());
    }
}
