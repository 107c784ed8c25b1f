//! The immutable service table and the one read-copy-update cell that
//! publishes it.
//!
//! The control plane builds a complete [`Snapshot`] (services, versions,
//! VIPs, backends with their next hops, Maglev tables) and swaps it in with
//! one atomic pointer store. A worker loads it once per burst: it sees the
//! old or the new table, never a mix, and a publish never waits for a
//! worker. Dependencies point one way: `control` writes snapshots, the
//! `dataplane` reads them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::control::config::{Forwarding, PortSpec, Protocol};
use crate::dataplane::maglev::MaglevTable;
use crate::dataplane::rewrite::EncapTemplate;

mod builder;
mod cell;
mod chunked;
mod vip_index;

pub use builder::SnapshotBuilder;
pub use cell::SnapshotCell;

use chunked::Chunked;
use vip_index::VipIndex;

/// Upper bound on live versions: per-worker counters are preallocated for
/// this many slots so that nothing is resized on the fast path.
pub const MAX_VERSIONS: usize = 65536;

/// Where a version is in its life (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// In DNS, forwards.
    Active,
    /// Out of DNS, still forwards old and new flows to its VIPs.
    Draining,
    /// VIP withdrawn: never in a snapshot, kept for the record only.
    Released,
}

impl VersionState {
    /// The lower-case name used in the API, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Active => "active",
            VersionState::Draining => "draining",
            VersionState::Released => "released",
        }
    }
}

/// Settings of the data path that every worker needs per packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneSettings {
    /// Egress MTU: the largest IP packet (outer header included) we send.
    pub mtu: u16,
    /// Outer source address for IPv4 outer headers (`ipip`).
    pub encap_source_v4: Option<Ipv4Addr>,
    /// Outer source address for IPv6 outer headers (`ipip`).
    pub encap_source_v6: Option<Ipv6Addr>,
}

/// A service as the data plane needs it.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// `web` in `web.svc.example.`.
    pub name: Arc<str>,
    /// How packets reach this service's backends.
    pub forwarding: Forwarding,
    /// The (protocol, port) pairs served on every VIP of the service,
    /// sorted; a handful, so a linear scan beats a hash.
    pub ports: Vec<PortSpec>,
}

impl ServiceEntry {
    /// True when the service listens on `port` for `protocol`; with no
    /// port (non-first fragments carry none), on any port of `protocol`.
    #[inline]
    pub fn serves(&self, protocol: Protocol, port: Option<u16>) -> bool {
        lists(&self.ports, protocol, port)
    }
}

/// [`ServiceEntry::serves`] over a list of ports (the service's own, or a
/// version's copy of them).
#[inline]
fn lists(ports: &[PortSpec], protocol: Protocol, port: Option<u16>) -> bool {
    ports
        .iter()
        .any(|p| p.protocol == protocol && port.is_none_or(|n| p.port == n))
}

/// A backend of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The backend's address: the outer destination for `ipip`.
    pub addr: IpAddr,
    /// The MAC the frame is sent to: the backend's own for `l2dsr` and
    /// on-link `ipip` backends, the gateway's otherwise. `None` while the
    /// next hop is unresolved: packets are dropped as `no_neighbor`.
    pub next_hop: Option<[u8; 6]>,
    /// Health-check verdict; an unhealthy backend gets no new flows.
    pub healthy: bool,
}

/// A version of a service: immutable once created, health aside.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    /// Dense index below [`MAX_VERSIONS`], stable for the version's life;
    /// indexes per-worker counters.
    pub slot: u32,
    /// Unique forever: tells a reused slot from its previous occupant.
    pub uid: u64,
    /// Index into [`Snapshot::services`].
    pub service: u32,
    /// Version number within the service (1, 2, ...).
    pub id: u32,
    pub state: VersionState,
    /// One per family.
    pub vips: Vec<IpAddr>,
    pub backends: Vec<Backend>,
    /// Built over `backends` with the unhealthy ones disabled; shared
    /// between snapshots while the version's health does not change.
    pub maglev: Arc<MaglevTable>,
}

/// The whole service table as one immutable value.
///
/// Versions are held behind `Arc`s, so a snapshot derived from the previous
/// one ([`Snapshot::derive`]) shares every version that did not change: a
/// rollout of one service out of a thousand builds one version (its encap
/// templates; its Maglev table was built by the manager) and copies 999
/// pointers.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Raised by one on every publish.
    pub generation: u64,
    pub settings: DataplaneSettings,
    /// Shared with the previous snapshot while no service changed.
    pub services: Arc<Vec<ServiceEntry>>,
    /// Indexed by slot; `None` for a free slot. Chunked, like `vips`, so
    /// that a derived snapshot shares the parts of both that it did not
    /// change (see `chunked`).
    versions: Chunked<Option<Arc<LiveVersion>>>,
    /// VIP (as [`vip_key`]) → the version holding it, the same `Arc` as
    /// in `versions`: every place of a version inserts its VIPs afresh,
    /// so an entry never outlives its version. One VIP belongs to one
    /// version (the pools guarantee it), so the port is checked after the
    /// lookup.
    vips: VipIndex<Arc<LiveVersion>>,
    /// Indexed by slot: the service index of its version, [`NO_OWNER`] for
    /// a free slot. Lets `derive_replacing` find a service's versions
    /// without reading every version (control plane only).
    owners: Vec<u32>,
    /// What changed since the snapshot this one was derived from, and
    /// since that one's ancestors, newest first, at most [`DELTA_HISTORY`]:
    /// a worker that saw any of them binds only the changed slots.
    deltas: Arc<[Delta]>,
}

/// Generations a snapshot remembers its changes over. A worker that missed
/// a publish or two (two publishes within one of its bursts) still binds
/// only the slots they changed instead of every version: a full bind of
/// 1 000 versions made a burst 2.3-3.6x the median one in the snapshot
/// bench's `direct cell.publish` run.
const DELTA_HISTORY: usize = 8;

/// `Snapshot::owners` of a free slot.
const NO_OWNER: u32 = u32::MAX;

/// The difference between a derived snapshot and its parent.
#[derive(Debug, Clone)]
struct Delta {
    /// The parent's generation.
    parent: u64,
    /// Slots whose version is new or replaced, ascending. Freed slots are
    /// not listed: nothing is bound for them.
    changed: Arc<[u32]>,
}

/// A published version with what the data plane derives from it once, at
/// build time, instead of per packet.
///
/// Laid out for a packet of a known flow: it reads the first cache line
/// (the uid and slot, the service's forwarding and ports, copied here) and
/// one [`BackendPath`], and nothing else of the version or its service.
/// With a thousand versions in use, also reading the service entry, its
/// port list and the backend's own record took a cache simulation of the
/// pipeline from 10.4 to 14.6 first-level misses per packet
/// (`docs/performance.md`, session 6).
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct LiveVersion {
    uid: u64,
    /// One per backend, in `version.backends` order.
    paths: Box<[BackendPath]>,
    slot: u32,
    forwarding: Forwarding,
    /// How many of `ports` are the service's; [`PORTS_ELSEWHERE`] when it
    /// has more than fit, and the service entry is asked instead.
    nports: u8,
    ports: [PortSpec; INLINE_PORTS],
    version: VersionEntry,
}

/// Ports of a service a version keeps in its first cache line.
const INLINE_PORTS: usize = 8;

/// `LiveVersion::nports` of a service with more than [`INLINE_PORTS`].
const PORTS_ELSEWHERE: u8 = u8::MAX;

/// What a packet of a known flow needs of its backend, in one cache line:
/// whether it is healthy (an unhealthy backend's flows move), its next hop
/// (`l2dsr`) and its IP-in-IP template.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct BackendPath {
    /// The backend's health-check verdict, as in `version.backends`.
    pub(crate) healthy: bool,
    /// The backend's next hop, as in `version.backends`.
    pub(crate) next_hop: Option<[u8; 6]>,
    /// The backend's outer IP-in-IP header with its constant fields and
    /// their checksum folded in (Katran's trick). `None` where the backend
    /// has no next hop or no encapsulation source of its family: such
    /// packets take the general path, which drops them with the right
    /// reason.
    pub(crate) encap: Option<EncapTemplate>,
}

const _: () = assert!(core::mem::size_of::<BackendPath>() == 64);
const _: () = assert!(
    core::mem::offset_of!(LiveVersion, ports) + core::mem::size_of::<[PortSpec; INLINE_PORTS]>()
        <= 64
);

impl LiveVersion {
    /// `version` of `service`, with its backends' paths built under
    /// `settings`.
    fn new(
        version: VersionEntry,
        service: &ServiceEntry,
        settings: &DataplaneSettings,
    ) -> LiveVersion {
        let paths = version
            .backends
            .iter()
            .map(|b| BackendPath {
                healthy: b.healthy,
                next_hop: b.next_hop,
                encap: EncapTemplate::new(b, settings),
            })
            .collect();
        let (nports, ports) = inline_ports(&service.ports);
        LiveVersion {
            uid: version.uid,
            paths,
            slot: version.slot,
            forwarding: service.forwarding,
            nports,
            ports,
            version,
        }
    }

    /// True when this version's copy of the service is `service` as it is
    /// now: a kept version whose service changed is built again.
    fn agrees_with(&self, service: &ServiceEntry) -> bool {
        let (nports, ports) = inline_ports(&service.ports);
        self.forwarding == service.forwarding && self.nports == nports && self.ports == ports
    }

    /// The version.
    #[inline]
    pub(crate) fn version(&self) -> &VersionEntry {
        &self.version
    }

    /// The version's slot.
    #[inline]
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// The version's uid.
    #[inline]
    pub(crate) fn uid(&self) -> u64 {
        self.uid
    }

    /// How the service reaches its backends.
    #[inline]
    pub(crate) fn forwarding(&self) -> Forwarding {
        self.forwarding
    }

    /// The backends' paths, indexed like `version.backends`.
    #[inline]
    pub(crate) fn paths(&self) -> &[BackendPath] {
        &self.paths
    }

    /// [`ServiceEntry::serves`] from the version's copy of the ports.
    /// `services` is the snapshot's, consulted only for a service with
    /// more ports than the version keeps.
    #[inline]
    pub(crate) fn serves(
        &self,
        services: &[ServiceEntry],
        protocol: Protocol,
        port: Option<u16>,
    ) -> bool {
        match self.ports.get(..usize::from(self.nports)) {
            Some(inline) => lists(inline, protocol, port),
            None => services
                .get(self.version.service as usize)
                .is_some_and(|s| s.serves(protocol, port)),
        }
    }
}

/// The first [`INLINE_PORTS`] of `ports` and their count, or
/// [`PORTS_ELSEWHERE`] when there are more.
fn inline_ports(ports: &[PortSpec]) -> (u8, [PortSpec; INLINE_PORTS]) {
    let mut inline = [PortSpec {
        protocol: Protocol::Tcp,
        port: 0,
    }; INLINE_PORTS];
    match u8::try_from(ports.len()) {
        Ok(n) if ports.len() <= INLINE_PORTS => {
            inline[..ports.len()].copy_from_slice(ports);
            (n, inline)
        }
        _ => (PORTS_ELSEWHERE, inline),
    }
}

/// The key of a VIP in the service table: the address as IPv6, IPv4
/// mapped (`::ffff:a.b.c.d`), read as one 128-bit number.
#[inline]
pub fn vip_key(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from_be_bytes(a.to_ipv6_mapped().octets()),
        IpAddr::V6(a) => u128::from_be_bytes(a.octets()),
    }
}

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("version slot {0} is out of range (max {MAX_VERSIONS})")]
    SlotOutOfRange(u32),
    #[error("version slot {0} is used twice")]
    SlotTaken(u32),
    #[error("VIP {0} is held by two versions")]
    VipTaken(IpAddr),
    #[error("version in slot {slot} names service {service}, which does not exist")]
    NoService { slot: u32, service: u32 },
    #[error("version in slot {0} is released: released versions are not published")]
    Released(u32),
    #[error("slot {0} has no version in the snapshot it is derived from")]
    NotInParent(u32),
    #[error("service {0} is not one of the version manager's services")]
    UnknownService(usize),
}

impl Snapshot {
    /// Builds a snapshot, checking the invariants the fast path relies on:
    /// slots in range and unique, every VIP held once, services exist.
    pub fn new(
        generation: u64,
        settings: DataplaneSettings,
        services: impl Into<Arc<Vec<ServiceEntry>>>,
        versions: Vec<VersionEntry>,
    ) -> Result<Snapshot, SnapshotError> {
        let mut b = SnapshotBuilder::new(generation, settings, services.into(), None);
        for v in versions {
            b.add(v)?;
        }
        Ok(b.finish())
    }

    /// Starts a snapshot derived from `self`: versions the caller
    /// [`keep`](SnapshotBuilder::keep)s are shared, not rebuilt, and the
    /// result records which slots changed. The same invariants as
    /// [`Snapshot::new`] are checked on every version, kept or added.
    pub fn derive(
        &self,
        generation: u64,
        settings: DataplaneSettings,
        services: Arc<Vec<ServiceEntry>>,
    ) -> SnapshotBuilder<'_> {
        SnapshotBuilder::new(generation, settings, services, Some(self))
    }

    /// A builder that starts with every version of this snapshot except
    /// those of the services in `replace` (indices into `services`, which
    /// must list the same services in the same order as this snapshot's).
    /// The caller places those services' versions again, with `keep` or
    /// `add`.
    ///
    /// Why: a rollout changes one service. `derive` makes the caller visit
    /// every version; this costs a copy of the slot table and the VIP map
    /// plus the replaced services, which keeps a publish fast when the
    /// records of a thousand services are no longer in the CPU's caches.
    pub fn derive_replacing(
        &self,
        generation: u64,
        settings: DataplaneSettings,
        services: Arc<Vec<ServiceEntry>>,
        replace: &[u32],
    ) -> SnapshotBuilder<'_> {
        let mut b = SnapshotBuilder {
            parent: Some(self),
            generation,
            settings,
            services,
            versions: self.versions.clone(),
            vips: self.vips.clone(),
            owners: self.owners.clone(),
            changed: Vec::new(),
        };
        for (slot, owner) in b.owners.iter_mut().enumerate() {
            if *owner == NO_OWNER || !replace.contains(owner) {
                continue;
            }
            *owner = NO_OWNER;
            if let Some(live) = b.versions.get_mut(slot).and_then(Option::take) {
                for vip in &live.version.vips {
                    b.vips.remove(vip_key(vip));
                }
            }
        }
        b
    }

    /// When this snapshot was derived from generation `parent`: the slots
    /// whose version is new or replaced since it, ascending. `None` when it
    /// was built from scratch or from another generation.
    pub fn changed_since(&self, parent: u64) -> Option<&[u32]> {
        self.deltas
            .first()
            .filter(|d| d.parent == parent)
            .map(|d| &*d.changed)
    }

    /// The slots whose version is new or replaced since `generation`, an
    /// ancestor of this snapshot at most `DELTA_HISTORY` (8) derivations
    /// back; a slot may come more than once. `None` when `generation` is
    /// not one of those (bind everything).
    pub fn slots_changed_since(&self, generation: u64) -> Option<impl Iterator<Item = u32> + '_> {
        let back = self.deltas.iter().position(|d| d.parent == generation)?;
        Some(
            self.deltas[..=back]
                .iter()
                .flat_map(|d| d.changed.iter().copied()),
        )
    }

    /// True when the version in `slot` is the very same (shared) value in
    /// both snapshots.
    pub fn shares_version(&self, other: &Snapshot, slot: u32) -> bool {
        match (self.live(slot), other.live(slot)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    #[inline]
    fn live(&self, slot: u32) -> Option<&Arc<LiveVersion>> {
        self.versions.get(slot as usize)?.as_ref()
    }

    /// An empty table: every packet is `no_service`.
    pub fn empty(settings: DataplaneSettings) -> Snapshot {
        Snapshot {
            generation: 0,
            settings,
            services: Arc::new(Vec::new()),
            versions: Chunked::filled(0, None),
            vips: VipIndex::with_capacity(0),
            owners: Vec::new(),
            deltas: Arc::from([]),
        }
    }

    /// The version that holds `vip`, if any.
    #[inline]
    pub fn version_for_vip(&self, vip: &IpAddr) -> Option<&VersionEntry> {
        self.version_for_key(vip_key(vip))
    }

    /// The version that holds the VIP with this [`vip_key`]: one hash
    /// probe, the data plane's lookup.
    #[inline]
    pub fn version_for_key(&self, key: u128) -> Option<&VersionEntry> {
        self.live_for_key(key).map(|l| &l.version)
    }

    /// The version holding the VIP `key` with its backends' encapsulation
    /// templates: the pipeline's lookup. One thin reference, so that a
    /// burst's worth of them is cheap to keep between passes.
    #[inline]
    pub(crate) fn live_for_key(&self, key: u128) -> Option<&LiveVersion> {
        self.vips.get(key).map(|live| &**live)
    }

    /// The version in `slot`.
    #[inline]
    pub fn version(&self, slot: u32) -> Option<&VersionEntry> {
        Some(&self.versions.get(slot as usize)?.as_ref()?.version)
    }

    /// All live versions, in slot order.
    pub fn versions(&self) -> impl Iterator<Item = &VersionEntry> {
        self.versions.iter().flatten().map(|l| &l.version)
    }

    /// The service a version belongs to.
    #[inline]
    pub fn service(&self, index: u32) -> Option<&ServiceEntry> {
        self.services.get(index as usize)
    }

    /// One past the highest slot in use: per-slot arrays this long cover
    /// every version of the snapshot.
    pub fn slot_count(&self) -> usize {
        self.versions.len()
    }
}

#[cfg(test)]
mod tests;
