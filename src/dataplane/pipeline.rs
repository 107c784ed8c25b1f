//! One burst through the data path: parse, find the version, pick the
//! backend, rewrite.
//!
//! [`Pipeline::process`] is sans-IO: it takes the time and a burst of
//! frames and writes one [`Verdict`] per frame; it never reads a clock or a
//! socket. That is what lets the same code run under criterion, in
//! `cutover replay`, in the tests and on a NIC. Per packet it takes no lock,
//! allocates nothing and touches only this worker's memory.

use std::net::IpAddr;
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
use crate::wire::ethernet::{self, EtherType};
use crate::wire::{ipv4, ipv6, tcp, udp};

/// What becomes of one frame of a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten towards a backend: transmit.
    Forward,
    /// Replaced in place by an ICMP error for its sender: transmit.
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

/// What the parser learnt of a frame; offsets index the frame's bytes.
///
/// Filled in place by [`parse`] (a caller-owned value rather than a
/// returned one, so the fast path does not move it through `Result`s).
pub(crate) struct Parsed {
    /// Offset of the IP header (= length of the Ethernet header).
    pub(crate) l3: usize,
    /// Length of the IP packet from its header's length fields (Ethernet
    /// padding excluded).
    pub(crate) ip_len: usize,
    /// The 5-tuple, built in place as the flow table reads it: addresses
    /// as 16 bytes (IPv4 mapped); the protocol number (IPv4 protocol, or
    /// the IPv6 upper layer after extension headers); ports 0 unless
    /// `has_ports`.
    pub(crate) key: FlowKey,
    /// IPv6 (else IPv4).
    pub(crate) v6: bool,
    /// The ports were read (TCP and UDP, except non-first fragments).
    pub(crate) has_ports: bool,
    /// Part of a fragmented datagram (IPv4 MF/offset, IPv6 fragment header).
    pub(crate) fragment: bool,
    /// IPv4 DF bit (always true for IPv6: routers never fragment it).
    pub(crate) dont_frag: bool,
    /// The TCP flags byte (0 for other protocols).
    pub(crate) tcp_flags: u8,
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
                if !p.fragment && matches!(p.key.protocol, TCP | UDP) {
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
    if p.fragment {
        let k = &p.key;
        let b = live
            .version()
            .maglev
            .lookup(hash_3tuple(&k.src, &k.dst, k.protocol))?;
        return pick(b, None);
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

impl Parsed {
    /// The starting point that [`parse`] fills in.
    pub(crate) const EMPTY: Parsed = Parsed {
        l3: 0,
        ip_len: 0,
        key: FlowKey {
            src: [0; 16],
            dst: [0; 16],
            src_port: 0,
            dst_port: 0,
            protocol: 0,
        },
        v6: false,
        has_ports: false,
        fragment: false,
        dont_frag: false,
        tcp_flags: 0,
    };

    /// The source address (slow paths only: ICMP errors, reports).
    pub(crate) fn src_ip(&self) -> IpAddr {
        unmapped(self.key.src, self.v6)
    }

    /// The destination address (slow paths only).
    pub(crate) fn dst_ip(&self) -> IpAddr {
        unmapped(self.key.dst, self.v6)
    }
}

fn unmapped(bytes: [u8; 16], v6: bool) -> IpAddr {
    let a = std::net::Ipv6Addr::from(bytes);
    match (v6, a.to_ipv4_mapped()) {
        (false, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(a),
    }
}

/// An IPv4 address as the 16 bytes flow keys and the VIP table use
/// (`::ffff:a.b.c.d`).
///
/// Built as one 128-bit number rather than byte by byte: the pipeline
/// reads the result back in 64-bit halves (VIP key, hashes), and a wide
/// load of bytes just written by narrow stores stalls the core on store
/// forwarding (`perf` put a tenth of the pipeline's samples there).
#[inline]
fn mapped_v4(a: std::net::Ipv4Addr) -> [u8; 16] {
    const MAPPED: u128 = 0xffff << 32;
    (MAPPED | u128::from(u32::from(a))).to_be_bytes()
}

/// The destination of a frame, for reports (`cutover replay`).
pub fn destination(frame: &[u8]) -> Option<IpAddr> {
    let mut p = Parsed::EMPTY;
    parse(frame, &mut p).ok().map(|()| p.dst_ip())
}

/// Parses Ethernet, IP and the transport ports into `p` without copying
/// the frame. On an error `p` is partly written and meaningless.
#[inline]
pub(crate) fn parse(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    if parse_common(frame, p) {
        return Ok(());
    }
    parse_general(frame, p)
}

/// Every frame the common case does not cover: VLAN tags, IPv4 options,
/// fragments, IPv6 and its extension headers, other protocols, and every
/// malformed frame with its drop reason.
///
/// Kept out of line: inlined into the burst loop it only added to the
/// common case's register pressure.
#[inline(never)]
fn parse_general(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| DropReason::Malformed)?;
    p.l3 = eth.header_len();
    match eth.ethertype() {
        EtherType::Ipv4 => parse_v4(frame, p),
        EtherType::Ipv6 => parse_v6(frame, p),
        _ => Err(DropReason::NotIp),
    }
}

/// The headers of the common case: untagged Ethernet, IPv4 without
/// options, and the 20 bytes of a TCP header (a UDP header is 8 of them).
const COMMON_HEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp::HEADER_LEN;

/// The common case in one bounds check: an untagged IPv4 frame with a
/// 20-byte header, not a fragment, carrying TCP or UDP. True when it
/// filled `p`; false (and `p` untouched) for anything else, which the
/// general parser then handles, errors included.
///
/// The same views and the same checks as the general path (the property
/// test `fast_parse_agrees_with_general` holds them to it), but over a
/// fixed-size head of the frame, so the compiler drops the bounds checks
/// of every accessor: most traffic is this shape, and at 20 Mpps the
/// general path's per-header checks were a fifth of the pipeline.
#[inline(always)]
fn parse_common(frame: &[u8], p: &mut Parsed) -> bool {
    let Some(head) = frame.first_chunk::<COMMON_HEAD>() else {
        return false;
    };
    let eth = ethernet::Frame::new_unchecked(&head[..]);
    if eth.outer_ethertype() != EtherType::Ipv4 {
        return false;
    }
    let ip = ipv4::Packet::new_unchecked(&head[ethernet::HEADER_LEN..]);
    if ip.version() != 4 || ip.header_len() != ipv4::HEADER_LEN || ip.is_fragment() {
        return false;
    }
    let total = usize::from(ip.total_len());
    // `frame` is at least COMMON_HEAD long, so the subtraction holds.
    if total > frame.len() - ethernet::HEADER_LEN {
        return false;
    }
    let Some(l4_len) = total.checked_sub(ipv4::HEADER_LEN) else {
        return false;
    };
    let l4 = &head[ethernet::HEADER_LEN + ipv4::HEADER_LEN..];
    let protocol = u8::from(ip.next_header());
    let (ports, tcp_flags) = match protocol {
        TCP => {
            let t = tcp::Packet::new_unchecked(l4);
            let hl = t.header_len();
            if l4_len < tcp::HEADER_LEN || hl < tcp::HEADER_LEN || hl > l4_len {
                return false;
            }
            let [_, low] = t.flags().to_be_bytes();
            ((t.src_port(), t.dst_port()), low)
        }
        UDP => {
            let u = udp::Packet::new_unchecked(l4);
            let len = usize::from(u.len());
            if l4_len < udp::HEADER_LEN || len < udp::HEADER_LEN || len > l4_len {
                return false;
            }
            ((u.src_port(), u.dst_port()), 0)
        }
        _ => return false,
    };
    p.l3 = ethernet::HEADER_LEN;
    p.ip_len = total;
    p.key = FlowKey {
        src: mapped_v4(ip.src_addr()),
        dst: mapped_v4(ip.dst_addr()),
        src_port: ports.0,
        dst_port: ports.1,
        protocol,
    };
    p.v6 = false;
    p.has_ports = true;
    p.fragment = false;
    p.dont_frag = ip.dont_frag();
    p.tcp_flags = tcp_flags;
    true
}

#[inline]
fn parse_v4(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let bytes = frame.get(p.l3..).ok_or(DropReason::Malformed)?;
    let ip = ipv4::Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
    p.ip_len = usize::from(ip.total_len());
    p.key.src = mapped_v4(ip.src_addr());
    p.key.dst = mapped_v4(ip.dst_addr());
    p.v6 = false;
    p.key.protocol = u8::from(ip.next_header());
    p.fragment = ip.is_fragment();
    p.dont_frag = ip.dont_frag();
    if !p.fragment || ip.frag_offset() == 0 {
        transport(p, ip.payload())?;
    }
    Ok(())
}

fn parse_v6(frame: &[u8], p: &mut Parsed) -> Result<(), DropReason> {
    let bytes = frame.get(p.l3..).ok_or(DropReason::Malformed)?;
    let ip = ipv6::Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
    let upper = ip.upper_layer().map_err(|_| DropReason::Malformed)?;
    p.ip_len = usize::from(ip.payload_len()) + ipv6::HEADER_LEN;
    p.key.src = ip.src_addr().octets();
    p.key.dst = ip.dst_addr().octets();
    p.v6 = true;
    p.key.protocol = u8::from(upper.protocol);
    p.fragment = upper.fragment.is_some();
    p.dont_frag = true;
    let first = upper.fragment.map_or(true, |f| f.offset == 0);
    if first {
        let l4 = bytes
            .get(upper.offset..p.ip_len)
            .ok_or(DropReason::Malformed)?;
        transport(p, l4)?;
    }
    Ok(())
}

/// Reads ports (and TCP flags) of TCP and UDP; other protocols have none.
///
/// A first fragment holds only the start of the transport header, and a
/// UDP length field that covers the whole datagram: only the ports, which
/// lead every TCP and UDP header, are read from it.
#[inline]
fn transport(p: &mut Parsed, l4: &[u8]) -> Result<(), DropReason> {
    let (src_port, dst_port) = if p.fragment {
        if !matches!(p.key.protocol, TCP | UDP) {
            return Ok(());
        }
        let ports = l4.get(..4).ok_or(DropReason::Malformed)?;
        (
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        )
    } else {
        match p.key.protocol {
            TCP => {
                let t = tcp::Packet::new_checked(l4).map_err(|_| DropReason::Malformed)?;
                let [_, low] = t.flags().to_be_bytes();
                p.tcp_flags = low;
                (t.src_port(), t.dst_port())
            }
            UDP => {
                let u = udp::Packet::new_checked(l4).map_err(|_| DropReason::Malformed)?;
                (u.src_port(), u.dst_port())
            }
            _ => return Ok(()),
        }
    };
    p.key.src_port = src_port;
    p.key.dst_port = dst_port;
    p.has_ports = true;
    Ok(())
}

#[cfg(test)]
mod tests;
