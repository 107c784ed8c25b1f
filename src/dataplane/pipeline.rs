//! One burst through the data path: parse, find the version, pick the
//! backend, rewrite.
//!
//! [`Pipeline::process`] is sans-IO: it takes the time and a burst of
//! frames and writes one [`Verdict`] per frame; it never reads a clock or a
//! socket. That is what lets the same code run under criterion, in
//! `cutover replay`, in the tests and on a NIC. Per packet it takes no lock,
//! allocates nothing and touches only this worker's memory.

use std::sync::Arc;

use crate::control::config::{Forwarding, Protocol};
use crate::dataplane::flow::{
    hash_3tuple, FlowKey, FlowTable, FlowTimeouts, Located, TcpFlags, VersionRef,
};
use crate::dataplane::frame::{FrameBuf, PacketBuf};
use crate::dataplane::prefetch::prefetch;
use crate::dataplane::rewrite;
use crate::dataplane::stats::{DropReason, WorkerStats};
use crate::snapshot::{BackendPath, LiveVersion, Snapshot, VersionEntry, MAX_VERSIONS};

mod icmp;
mod parse;

pub use parse::destination;
pub(crate) use parse::{parse, Kind, Parsed};

/// What becomes of one frame of a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten towards a backend: transmit.
    Forward,
    /// Replaced in place by an ICMP message for its sender (an error, or
    /// the reply to a ping of a VIP): transmit.
    Reply,
    /// Not sent; counted under the reason.
    Drop(DropReason),
}

impl Verdict {
    /// True when the frame goes to the transmit queue.
    #[inline]
    pub fn is_tx(self) -> bool {
        matches!(self, Verdict::Forward | Verdict::Reply)
    }
}

/// Sizing of one worker's pipeline.
#[derive(Debug, Clone, Copy)]
pub struct PipelineOptions {
    /// Flow-table entries (`flow_table_size`).
    pub flow_table_size: usize,
    /// Idle timeouts of the flow table.
    pub timeouts: FlowTimeouts,
    /// Largest burst the caller passes: sizes the spare buffers for outer
    /// fragments.
    pub burst: usize,
}

/// How often the per-version active-flow gauges are refreshed from the
/// flow table (ns). Drain decisions are made on a scale of seconds.
const FLOW_GAUGE_PERIOD_NS: u64 = 100_000_000;

/// Flow entries are refreshed at most once per 2^20 ns (~1 ms) of the
/// worker's clock: see `FlowTable::with_refresh`. Timeouts are seconds,
/// so a millisecond of slack is invisible, and a busy flow's packets
/// mostly only read the table.
const FLOW_REFRESH_SHIFT: u32 = 20;

/// Packets parsed and located together before any is handled (see
/// `Pipeline::process`): a burst, or a part of a longer one.
const STAGE: usize = 32;

/// Expired flow entries removed per burst at most: bounded work per poll.
const EXPIRE_BUDGET: usize = 64;

/// Version slots whose active-flow gauge one burst refreshes at most: a
/// sweep over a thousand versions is spread over a few bursts instead of
/// making one burst every 100 ms slower than the others.
const GAUGE_BUDGET: usize = 64;

/// The state of one worker's data path: its flow table, its counters and
/// the spare buffers for fragments.
pub struct Pipeline {
    flows: FlowTable,
    stats: Arc<WorkerStats>,
    /// Generation of the snapshot whose versions are bound to the flow
    /// table's and the counters' slots; `u64::MAX` before the first burst.
    bound_generation: u64,
    /// Second and later fragments of outer packets made in this burst.
    extra: Vec<PacketBuf>,
    /// Preallocated buffers for `extra`.
    spare: Vec<PacketBuf>,
    /// Identification of the outer IPv4/IPv6 fragments we make.
    frag_ident: u32,
    /// When the last gauge sweep started.
    last_gauge_ns: u64,
    /// Next slot of the gauge sweep in progress, if one is.
    gauge_cursor: Option<usize>,
}

/// Protocol numbers the fast path compares against.
const TCP: u8 = 6;
const UDP: u8 = 17;

impl Pipeline {
    /// A pipeline counting into `stats`; everything it needs later is
    /// allocated here.
    pub fn new(opts: PipelineOptions, stats: Arc<WorkerStats>) -> Pipeline {
        let spare_count = opts.burst.saturating_mul(4).max(8);
        Pipeline {
            flows: FlowTable::with_refresh(
                opts.flow_table_size,
                MAX_VERSIONS,
                opts.timeouts,
                FLOW_REFRESH_SHIFT,
            ),
            stats,
            bound_generation: u64::MAX,
            extra: Vec::with_capacity(spare_count),
            spare: (0..spare_count).map(|_| PacketBuf::new()).collect(),
            frag_ident: 0,
            last_gauge_ns: 0,
            gauge_cursor: None,
        }
    }

    /// The counters this pipeline writes.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The worker's flow table (tests and diagnostics).
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Runs one burst: `verdicts[i]` is set for `pkts[i]` (the shorter of
    /// the two slices bounds the work). `now` is the worker's clock in ns.
    /// Outer fragments beyond the first are left in [`Pipeline::extra`].
    pub fn process<B: FrameBuf>(
        &mut self,
        snap: &Snapshot,
        now: u64,
        pkts: &mut [B],
        verdicts: &mut [Verdict],
    ) {
        if snap.generation != self.bound_generation {
            self.bind(snap);
        }
        let n = pkts.len().min(verdicts.len());
        self.stats.rx_packets.add(n as u64);
        for (pkts, verdicts) in pkts[..n].chunks_mut(STAGE).zip(verdicts.chunks_mut(STAGE)) {
            // Passes over the burst, each reading what the one before
            // prefetched, then the packets one by one: with thousands of
            // services and flows, the lines a packet needs are in L2 or
            // beyond, and one after the other they would each wait for
            // the last. Parse and find the version; locate the flow in the
            // flow index (which prefetches its node) and prefetch the
            // version; then, from those two, prefetch the version's
            // counters and the flow's backend path. Alternated with the
            // code before them, the passes raised the median rate by 9 to
            // 20 % at 1 000 flows and by 74 to 80 % at 100 000
            // (docs/performance.md, session 8).
            let mut parsed = [Parsed::EMPTY; STAGE];
            let mut outcome = [Ok(()); STAGE];
            let mut located = [Located::NOWHERE; STAGE];
            let mut found: [Option<&LiveVersion>; STAGE] = [None; STAGE];
            for (((pkt, p), ok), f) in pkts
                .iter()
                .zip(&mut parsed)
                .zip(&mut outcome)
                .zip(&mut found)
            {
                *ok = parse(pkt.bytes(), p);
                if ok.is_ok() {
                    *f = snap.live_for_key(u128::from_be_bytes(p.key.dst));
                }
            }
            for ((p, at), f) in parsed.iter().zip(&mut located).zip(&found) {
                // A version was found only for a packet that parsed.
                let Some(live) = f else { continue };
                prefetch(*live);
                if p.kind == Kind::Flow && matches!(p.key.protocol, TCP | UDP) {
                    *at = self.flows.locate(&p.key);
                }
            }
            for (at, f) in located.iter().zip(&found) {
                let Some(live) = f else { continue };
                if let Some(c) = self.stats.versions.get(live.slot() as usize) {
                    prefetch(c);
                }
                let path = self.flows.located_backend(*at);
                if let Some(path) = path.and_then(|b| live.paths().get(usize::from(b))) {
                    prefetch(path);
                }
            }
            // By index into the pass arrays, not a zip of them by value:
            // each by-value array iterator kept its position in memory and
            // the zip wrote it back on every packet (11 instructions a
            // packet in callgrind).
            for (i, (pkt, verdict)) in pkts.iter_mut().zip(verdicts.iter_mut()).enumerate() {
                let (Some(p), Some(ok), Some(at), Some(f)) =
                    (parsed.get(i), outcome.get(i), located.get(i), found.get(i))
                else {
                    break;
                };
                let (ok, at, f) = (*ok, *at, *f);
                let v = match ok {
                    Ok(()) => self.handle(snap, now, pkt, p, at, f),
                    Err(r) => Verdict::Drop(r),
                };
                match v {
                    Verdict::Forward => {}
                    Verdict::Reply if p.kind == Kind::Echo => self.stats.echo_replies.add(1),
                    Verdict::Reply => {
                        self.stats.icmp_sent.add(1);
                        self.stats.drop_packet(DropReason::TooBig);
                    }
                    Verdict::Drop(r) => self.stats.drop_packet(r),
                }
                *verdict = v;
            }
        }
        self.flows.expire(now, EXPIRE_BUDGET);
        self.gauge_step(snap, now);
    }

    /// Frames made by this burst in addition to the input (the second and
    /// later fragments of fragmented outer packets), to transmit after the
    /// burst's forwarded frames.
    pub fn extra(&self) -> &[PacketBuf] {
        &self.extra
    }

    /// Hands the extra frames back to the spare pool once transmitted.
    pub fn recycle_extra(&mut self) {
        self.spare.append(&mut self.extra);
    }

    /// Refreshes the active-flow gauges of every version now (the pipeline
    /// also does it on its own every 100 ms of `now`).
    pub fn publish_flow_gauges(&mut self, snap: &Snapshot, now: u64) {
        self.gauges(snap, 0, snap.slot_count());
        self.stats.flow_evictions.set(self.flows.evictions());
        self.last_gauge_ns = now;
        self.gauge_cursor = None;
    }

    /// The periodic gauge refresh, [`GAUGE_BUDGET`] slots per burst: a sweep
    /// starts every [`FLOW_GAUGE_PERIOD_NS`] and goes on where the previous
    /// burst stopped (slots index every snapshot alike, so a publish in
    /// the middle of a sweep changes nothing to it).
    fn gauge_step(&mut self, snap: &Snapshot, now: u64) {
        let start = match self.gauge_cursor {
            Some(c) => c,
            None if now.saturating_sub(self.last_gauge_ns) >= FLOW_GAUGE_PERIOD_NS => {
                self.last_gauge_ns = now;
                0
            }
            None => return,
        };
        let end = start.saturating_add(GAUGE_BUDGET).min(snap.slot_count());
        self.gauges(snap, start, end);
        if end >= snap.slot_count() {
            self.stats.flow_evictions.set(self.flows.evictions());
            self.gauge_cursor = None;
        } else {
            self.gauge_cursor = Some(end);
        }
    }

    /// Sets the active-flow gauge of the versions in slots `start..end`.
    fn gauges(&self, snap: &Snapshot, start: usize, end: usize) {
        for slot in start..end {
            let Ok(slot) = u32::try_from(slot) else {
                break;
            };
            if snap.version(slot).is_none() {
                continue;
            }
            if let Some(c) = self.stats.versions.get(slot as usize) {
                c.active_flows.set(u64::from(self.flows.active_flows(slot)));
            }
        }
    }

    /// Ties the flow table's and the counters' slots to the versions of a
    /// newly published snapshot. Runs once per publish, not per packet:
    /// for the changed slots only when the snapshot descends from the one
    /// bound now by a few derivations (the others are bound already), for
    /// every version when the worker missed more publishes than the
    /// snapshot remembers or the snapshot was built from scratch.
    fn bind(&mut self, snap: &Snapshot) {
        match snap.slots_changed_since(self.bound_generation) {
            Some(changed) => {
                for slot in changed {
                    if let Some(v) = snap.version(slot) {
                        self.bind_one(v);
                    }
                }
            }
            None => {
                for v in snap.versions() {
                    self.bind_one(v);
                }
            }
        }
        self.bound_generation = snap.generation;
    }

    /// Binds `v`'s slot to it; counters of a slot's previous occupant are
    /// reset.
    fn bind_one(&mut self, v: &VersionEntry) {
        self.flows.bind_version(v.slot, v.uid);
        if let Some(c) = self.stats.versions.get(v.slot as usize) {
            if c.uid.get() != v.uid {
                c.packets.set(0);
                c.bytes.set(0);
                c.active_flows.set(0);
                c.last_packet_ns.set(0);
                c.uid.set(v.uid);
            }
        }
    }

    /// One parsed packet (`p`, its version `found` in the snapshot, its
    /// flow located `at`) from the port check on.
    fn handle<B: FrameBuf>(
        &mut self,
        snap: &Snapshot,
        now: u64,
        pkt: &mut B,
        p: &Parsed,
        at: Located,
        found: Option<&LiveVersion>,
    ) -> Verdict {
        let frame_len = pkt.frame_len();
        let Some(live) = found else {
            return Verdict::Drop(DropReason::NoService);
        };
        let proto = match p.key.protocol {
            TCP => Protocol::Tcp,
            UDP => Protocol::Udp,
            // Not traffic of the version: no counter, and no reason for
            // a draining version to wait.
            _ if p.kind == Kind::Echo => return icmp::echo_reply(pkt, p),
            _ => return Verdict::Drop(DropReason::Unsupported),
        };
        let port = p.has_ports.then_some(p.key.dst_port);
        if !live.serves(&snap.services, proto, port) {
            return Verdict::Drop(DropReason::NoService);
        }
        // One lookup of the version's counters serves the whole packet.
        let counters = self.stats.versions.get(live.slot() as usize);
        if let Some(c) = counters {
            // The drain rule's "quiet" clock: any packet that reached the
            // version's VIPs counts, forwarded or not.
            c.last_packet_ns.set(now);
        }
        let Some((index, path, placed)) = select(&mut self.flows, live, p, at, now) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let verdict = match live.forwarding() {
            Forwarding::L2dsr => rewrite::l2dsr(pkt, path.next_hop),
            Forwarding::Ipip => {
                let fast = path
                    .encap
                    .as_ref()
                    .and_then(|t| rewrite::ipip_template(pkt, p, t, &snap.settings));
                // The backend's own record only on the general path: it
                // is in the version's second line, and reading it for every
                // packet (a `match` on the pair) cost the 10 000-service
                // bench about 7 % (`docs/performance.md`, session 7).
                match fast {
                    Some(verdict) => verdict,
                    None => match live.version().backends.get(index) {
                        Some(backend) => {
                            let ctx = rewrite::EncapContext {
                                settings: &snap.settings,
                                spare: &mut self.spare,
                                extra: &mut self.extra,
                                frag_ident: &mut self.frag_ident,
                            };
                            rewrite::ipip(pkt, p, backend, ctx)
                        }
                        // `paths` and `backends` have the same length.
                        None => Verdict::Drop(DropReason::NoBackend),
                    },
                }
            }
        };
        if !verdict.is_tx() {
            // A flow is remembered only once a packet of it went out: a SYN
            // dropped for an unresolved next hop must not leave an entry
            // that counts as a live connection of its version.
            if let Some(key) = placed {
                self.flows.remove(&key);
            }
        }
        if verdict == Verdict::Forward {
            if let Some(c) = counters {
                c.packets.add(1);
                c.bytes.add(frame_len as u64);
            }
            if p.kind == Kind::IcmpError {
                self.stats.icmp_forwarded.add(1);
            }
        }
        verdict
    }
}

/// The backend index for this packet: fragments by the 3-tuple hash
/// (later fragments carry no ports), others through the flow table and,
/// for a new flow, Maglev.
///
/// Returns the backend's index and path (`None` when the index is not one
/// of the version's backends), and the flow key when this packet created
/// the flow's entry.
#[inline(always)]
fn select<'v>(
    flows: &mut FlowTable,
    live: &'v LiveVersion,
    p: &Parsed,
    at: Located,
    now: u64,
) -> Option<(usize, &'v BackendPath, Option<FlowKey>)> {
    let paths = live.paths();
    let pick = |b: u16, placed: Option<FlowKey>| {
        let index = usize::from(b);
        paths.get(index).map(|b| (index, b, placed))
    };
    if p.kind != Kind::Flow {
        return pick(stateless_backend(flows, live, p, now)?, None);
    }
    let key = &p.key;
    let this = VersionRef {
        slot: live.slot(),
        uid: live.uid(),
    };
    let flags = TcpFlags(p.tcp_flags);
    // The flow table forgets expired and stale entries and a bare SYN
    // on a closing 5-tuple by itself: those come back as `None` and
    // are placed afresh, like any new flow.
    if let Some(entry) = flows.lookup_located(key, at, now, flags) {
        let index = usize::from(entry.backend);
        if let Some(b) = paths.get(index) {
            if entry.version == this && b.healthy {
                return Some((index, b, None));
            }
        }
        flows.remove(key);
    }
    let backend = live.version().maglev.lookup(key.flow_hash())?;
    flows.insert(*key, this, backend, now, flags);
    // An index beyond the backends (Maglev never gives one) drops the
    // packet as `no_backend` and keeps the entry.
    pick(backend, Some(*key))
}

/// The backend of a packet that the flow table does not track, read
/// without creating or refreshing an entry. Inlined: out of line, the
/// call cost the common case 9 instructions a packet in callgrind
/// (register pressure around it), inlined 5.
///
/// - A fragment: by the 3-tuple hash, since later fragments carry no ports.
/// - An ICMP error about a flow (`p.key`, in the client's direction): the
///   backend the flow's packets go to. An error is not a packet of the
///   flow, so it neither creates nor refreshes its entry; as for the
///   flow's next packet, an entry of another version or on an unhealthy
///   backend gives way to Maglev.
#[inline(always)]
fn stateless_backend(flows: &FlowTable, live: &LiveVersion, p: &Parsed, now: u64) -> Option<u16> {
    let key = &p.key;
    let maglev = &live.version().maglev;
    if p.kind == Kind::Fragment {
        return maglev.lookup(hash_3tuple(&key.src, &key.dst, key.protocol));
    }
    let this = VersionRef {
        slot: live.slot(),
        uid: live.uid(),
    };
    if let Some(entry) = flows.peek(key, now) {
        let healthy = live
            .paths()
            .get(usize::from(entry.backend))
            .is_some_and(|b| b.healthy);
        if entry.version == this && healthy {
            return Some(entry.backend);
        }
    }
    maglev.lookup(key.flow_hash())
}

#[cfg(test)]
mod tests;
