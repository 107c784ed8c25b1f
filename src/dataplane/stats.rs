//! Per-worker counters: what the exporter and the drain rule read.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer. Counters are
//! `AtomicU64` used with relaxed loads and stores, never read-modify-write:
//! on x86-64 and AArch64 that compiles to plain loads and stores into memory
//! only this core writes, so nothing shared is touched per packet, yet the
//! control plane can read the values without a data race.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::snapshot::MAX_VERSIONS;

/// Why a packet was not forwarded. The discriminant indexes
/// [`WorkerStats::drops`] directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The destination is not a live VIP, or the port is not served.
    NoService = 0,
    /// Headers that do not parse (truncated, bad IHL, bad lengths).
    Malformed,
    /// Too big for the MTU after encapsulation; an ICMP error was sent
    /// instead when the packet allowed it.
    TooBig,
    /// The backend's next hop has no resolved MAC address.
    NoNeighbor,
    /// The version has no healthy backend.
    NoBackend,
    /// The transmit ring was full.
    TxFull,
    /// Not IPv4 or IPv6 (ARP and the like belong to the kernel).
    NotIp,
    /// A VIP was addressed with a protocol other than TCP or UDP.
    Unsupported,
    /// `ipip` towards a backend family without an encapsulation source.
    NoEncapSource,
}

impl DropReason {
    /// Every reason, in discriminant order.
    pub const ALL: [DropReason; 9] = [
        DropReason::NoService,
        DropReason::Malformed,
        DropReason::TooBig,
        DropReason::NoNeighbor,
        DropReason::NoBackend,
        DropReason::TxFull,
        DropReason::NotIp,
        DropReason::Unsupported,
        DropReason::NoEncapSource,
    ];

    /// Number of reasons: the length of the per-worker drop array.
    pub const COUNT: usize = DropReason::ALL.len();

    /// The `reason` label of `cutover_drops_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoService => "no_service",
            DropReason::Malformed => "malformed",
            DropReason::TooBig => "too_big",
            DropReason::NoNeighbor => "no_neighbor",
            DropReason::NoBackend => "no_backend",
            DropReason::TxFull => "tx_full",
            DropReason::NotIp => "not_ip",
            DropReason::Unsupported => "unsupported",
            DropReason::NoEncapSource => "no_encap_source",
        }
    }
}

/// A counter with exactly one writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this: it is a load and a
    /// store, not an atomic increment.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Overwrites the value (gauges, timestamps). Owning worker only.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Reads the value; any thread.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one version slot on one worker.
#[derive(Debug, Default)]
pub struct VersionCounters {
    /// The uid of the version these counts belong to; a reader ignores the
    /// slot when it differs from the version it asks about.
    pub uid: Counter,
    pub packets: Counter,
    pub bytes: Counter,
    /// Flows of this version in this worker's flow table, refreshed a few
    /// times a second (not per packet).
    pub active_flows: Counter,
    /// Time (the worker's clock, ns) of the last packet to this version's
    /// VIPs; 0 when none was seen. The drain rule's quiet check reads it.
    pub last_packet_ns: Counter,
}

/// Everything one worker counts.
#[derive(Debug)]
pub struct WorkerStats {
    pub rx_packets: Counter,
    pub tx_packets: Counter,
    pub idle_polls: Counter,
    /// ICMP errors generated (fragmentation needed / packet too big).
    pub icmp_sent: Counter,
    /// ICMP path-MTU errors to a VIP forwarded to the backend of the flow
    /// they quote.
    pub icmp_forwarded: Counter,
    /// ICMP echo requests to a VIP answered.
    pub echo_replies: Counter,
    pub flow_evictions: Counter,
    pub drops: [Counter; DropReason::COUNT],
    /// Indexed by version slot; [`MAX_VERSIONS`] long.
    pub versions: Box<[VersionCounters]>,
}

impl WorkerStats {
    /// Zeroed counters with room for every slot.
    pub fn new() -> WorkerStats {
        let mut versions = Vec::with_capacity(MAX_VERSIONS);
        versions.resize_with(MAX_VERSIONS, VersionCounters::default);
        WorkerStats {
            rx_packets: Counter::default(),
            tx_packets: Counter::default(),
            idle_polls: Counter::default(),
            icmp_sent: Counter::default(),
            icmp_forwarded: Counter::default(),
            echo_replies: Counter::default(),
            flow_evictions: Counter::default(),
            drops: Default::default(),
            versions: versions.into_boxed_slice(),
        }
    }

    /// Counts one dropped packet.
    #[inline]
    pub fn drop_packet(&self, reason: DropReason) {
        self.drops[reason as usize].add(1);
    }

    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }

    /// The counters of `slot` if they belong to version `uid`.
    pub fn version(&self, slot: u32, uid: u64) -> Option<&VersionCounters> {
        let c = self.versions.get(slot as usize)?;
        (c.uid.get() == uid).then_some(c)
    }
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_index_their_counters() {
        let s = WorkerStats::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            s.drop_packet(*r);
        }
        s.drop_packet(DropReason::Malformed);
        assert_eq!(s.dropped(DropReason::Malformed), 2);
        assert_eq!(s.dropped(DropReason::NoService), 1);
    }

    #[test]
    fn version_counters_check_uid() {
        let s = WorkerStats::new();
        s.versions[3].uid.set(42);
        s.versions[3].packets.add(5);
        assert_eq!(s.version(3, 42).map(|c| c.packets.get()), Some(5));
        assert!(s.version(3, 41).is_none());
        assert!(s.version(u32::MAX, 42).is_none());
    }
}
