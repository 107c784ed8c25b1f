//! The harness of the cargo-fuzz target and of the pipeline's property
//! tests: arbitrary frames through the whole pipeline, in both forwarding
//! modes, with a flow table that carries state from one frame to the
//! next, and checks on every frame that comes out.
//!
//! Why a harness object: a fresh pipeline allocates its counters and slot
//! bindings for every possible version (about 5 MiB, 60 µs), which held the
//! fuzzer to about 130 inputs a second. The harness builds its snapshots and
//! pipelines once and empties the flow tables between inputs instead, by
//! moving its clock past every timeout, so an input's outcome does not
//! depend on the inputs before it.

use std::sync::Arc;

use crate::control::config::Forwarding;
use crate::dataplane::flow::FlowTimeouts;
use crate::dataplane::frame::{FrameBuf, PacketBuf, MAX_FRAME};
use crate::dataplane::pipeline::{Pipeline, PipelineOptions, Verdict};
use crate::dataplane::stats::{DropReason, WorkerStats};
use crate::snapshot::Snapshot;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::icmp::{self, Icmpv4Packet, Icmpv6Packet};
use crate::wire::ip::IpProtocol;
use crate::wire::{ipv4, ipv6};

/// MTU of the harness's snapshots: small, so that encapsulation,
/// fragmentation of the outer packet and ICMP errors are all reachable.
pub const FUZZ_MTU: u16 = 576;

/// Frames taken from one input at most: one stage of the pipeline and
/// then some, so an input can span two stages of a burst.
pub const MAX_FRAMES: usize = 40;

/// Flow-table entries: fewer than an input's frames, so that inputs reach
/// eviction too, and no more than one burst expires (`EXPIRE_BUDGET`).
const FLOW_TABLE_SIZE: usize = 16;

/// Idle timeouts of the harness's flow tables.
const TIMEOUTS: FlowTimeouts = FlowTimeouts {
    tcp_idle_ns: 1_000_000_000,
    udp_idle_ns: 1_000_000_000,
    tcp_closing_ns: 500_000_000,
};

/// Between two inputs the clock moves past every timeout.
const INPUT_STEP_NS: u64 = 2_000_000_000;

/// Between the two bursts of one input (shorter than every timeout).
const BURST_STEP_NS: u64 = 1_000_000;

/// One forwarding mode's snapshot and pipeline.
struct Lane {
    forwarding: Forwarding,
    snap: Snapshot,
    pipe: Pipeline,
}

/// What came out of one input, summed over the forwarding modes and the
/// two bursts: lets a test see that the harness reaches past the drops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FuzzOutcome {
    pub forwarded: usize,
    pub replied: usize,
    pub dropped: usize,
    /// Outer fragments beyond the first.
    pub extra: usize,
}

/// Runs inputs through the pipeline (see the module documentation).
pub struct FuzzHarness {
    lanes: Vec<Lane>,
    now: u64,
}

impl FuzzHarness {
    /// Two services of three IPv4 backends each, one snapshot per
    /// forwarding mode, MTU [`FUZZ_MTU`].
    pub fn new() -> FuzzHarness {
        let lanes = [Forwarding::Ipip, Forwarding::L2dsr]
            .into_iter()
            .map(|forwarding| {
                // Fixed arguments that always build: a harness that
                // silently lost a mode would test less than it says.
                let mut snap =
                    super::snapshot(2, 3, forwarding, 251).expect("the harness's snapshot");
                snap.settings.mtu = FUZZ_MTU;
                let pipe = Pipeline::new(
                    PipelineOptions {
                        flow_table_size: FLOW_TABLE_SIZE,
                        timeouts: TIMEOUTS,
                        burst: MAX_FRAMES,
                    },
                    Arc::new(WorkerStats::new()),
                );
                Lane {
                    forwarding,
                    snap,
                    pipe,
                }
            })
            .collect();
        FuzzHarness { lanes, now: 1 }
    }

    /// Runs `data` read as frames by [`split_frames`].
    pub fn run(&mut self, data: &[u8]) -> FuzzOutcome {
        let frames = split_frames(data);
        self.run_frames(&frames)
    }

    /// Runs `frames` through each forwarding mode as one burst, twice: the
    /// second time 1 ms later, when the first burst's flows are known.
    /// Panics when a frame comes out wrong (see [`check`]).
    pub fn run_frames(&mut self, frames: &[&[u8]]) -> FuzzOutcome {
        let mut outcome = FuzzOutcome::default();
        // As a buffer holds them: a longer frame is cut to `MAX_FRAME`.
        let frames: Vec<&[u8]> = frames
            .iter()
            .take(MAX_FRAMES)
            .map(|f| f.get(..MAX_FRAME).unwrap_or(f))
            .collect();
        let mut burst: Vec<PacketBuf> = frames.iter().map(|f| PacketBuf::from_slice(f)).collect();
        let mut verdicts = vec![Verdict::Drop(DropReason::NoService); burst.len()];
        for lane in &mut self.lanes {
            for step in [0, BURST_STEP_NS] {
                for (b, f) in burst.iter_mut().zip(&frames) {
                    b.load(f);
                }
                lane.pipe
                    .process(&lane.snap, self.now + step, &mut burst, &mut verdicts);
                for ((b, f), v) in burst.iter().zip(&frames).zip(&verdicts) {
                    check(lane.forwarding, f, *v, b.bytes());
                    match v {
                        Verdict::Forward => outcome.forwarded += 1,
                        Verdict::Reply => outcome.replied += 1,
                        Verdict::Drop(_) => outcome.dropped += 1,
                    }
                }
                for e in lane.pipe.extra() {
                    check_outer(e.bytes());
                }
                outcome.extra += lane.pipe.extra().len();
                lane.pipe.recycle_extra();
            }
        }
        // Past every timeout, an empty burst expires what this input left
        // (the table holds no more entries than one burst expires).
        self.now += INPUT_STEP_NS;
        for lane in &mut self.lanes {
            lane.pipe
                .process(&lane.snap, self.now, &mut [] as &mut [PacketBuf], &mut []);
            assert!(
                lane.pipe.flows().is_empty(),
                "flow table not emptied between inputs"
            );
        }
        outcome
    }
}

impl Default for FuzzHarness {
    fn default() -> Self {
        FuzzHarness::new()
    }
}

/// `data` as up to [`MAX_FRAMES`] frames, each a 2-byte big-endian length
/// and that many bytes. A length beyond the bytes left takes what is left,
/// and so does a last piece too short to hold a length.
pub fn split_frames(data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && frames.len() < MAX_FRAMES {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            frames.push(rest);
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (frame, next) = tail.split_at(len);
        frames.push(frame);
        rest = next;
    }
    frames
}

/// What every frame that leaves the pipeline must be. `input` is the frame
/// as received, `out` as it is after the pipeline.
fn check(forwarding: Forwarding, input: &[u8], verdict: Verdict, out: &[u8]) {
    match verdict {
        Verdict::Forward => match forwarding {
            // Only the Ethernet addresses change: the frame keeps its
            // length, and its source becomes the address it was sent to.
            Forwarding::L2dsr => {
                assert_eq!(out.len(), input.len(), "l2dsr changed the length");
                assert_eq!(out.get(6..12), input.get(..6), "l2dsr source MAC");
                assert_eq!(out.get(12..), input.get(12..), "l2dsr changed the packet");
            }
            Forwarding::Ipip => check_outer(out),
        },
        Verdict::Reply => check_icmp_reply(input, out),
        Verdict::Drop(_) => {}
    }
}

/// An encapsulated frame (or a fragment of one) towards an IPv4 backend:
/// a valid outer IPv4 header that fits the MTU, exactly as long as the
/// frame, carrying IPv4 or IPv6.
fn check_outer(out: &[u8]) {
    let eth = ethernet::Frame::new_checked(out).expect("outer Ethernet header");
    assert_eq!(eth.ethertype(), EtherType::Ipv4, "outer ethertype");
    let ip = whole_ipv4(eth.payload(), "outer");
    assert!(ip.total_len() <= FUZZ_MTU, "outer packet over the MTU");
    assert!(
        matches!(ip.next_header(), IpProtocol::Ipv4 | IpProtocol::Ipv6),
        "outer protocol {:?}",
        ip.next_header()
    );
}

/// `payload` as an IPv4 packet with a valid header checksum and a total
/// length of exactly `payload` (the pipeline writes no padding); `what`
/// names it in the panic.
fn whole_ipv4<'a>(payload: &'a [u8], what: &str) -> ipv4::Packet<&'a [u8]> {
    let ip = ipv4::Packet::new_checked(payload).expect("an IPv4 header");
    assert!(ip.verify_checksum(), "{what} IPv4 checksum");
    assert_eq!(usize::from(ip.total_len()), payload.len(), "{what} length");
    ip
}

/// An ICMP "fragmentation needed" or ICMPv6 "packet too big" error with
/// valid checksums, within the sizes RFC 1812 and RFC 4443 allow; or an
/// echo reply with valid checksums, as long as the request (`input`).
fn check_icmp_reply(input: &[u8], out: &[u8]) {
    let eth = ethernet::Frame::new_checked(out).expect("reply Ethernet header");
    match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = ipv4::Packet::new_checked(eth.payload()).expect("reply IPv4 header");
            assert!(ip.verify_checksum(), "reply IPv4 checksum");
            assert_eq!(ip.next_header(), IpProtocol::Icmp);
            let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("ICMP header");
            assert!(icmp.verify_checksum(), "ICMP checksum");
            if icmp.msg_type() == icmp::V4_ECHO_REPLY {
                assert_eq!(out.len(), input.len(), "echo reply length");
                return;
            }
            let ip = whole_ipv4(eth.payload(), "reply");
            assert!(ip.total_len() <= 576, "ICMP error over 576 bytes");
            assert_eq!(
                (icmp.msg_type(), icmp.code()),
                (3, 4),
                "not fragmentation needed"
            );
        }
        EtherType::Ipv6 => {
            let ip = ipv6::Packet::new_checked(eth.payload()).expect("reply IPv6 header");
            assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
            let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6 header");
            assert!(
                icmp.verify_checksum(ip.src_addr(), ip.dst_addr()),
                "ICMPv6 checksum"
            );
            if icmp.msg_type() == icmp::V6_ECHO_REPLY {
                assert_eq!(out.len(), input.len(), "echo reply length");
                return;
            }
            assert_eq!(
                usize::from(ip.payload_len()) + 40,
                eth.payload().len(),
                "reply length"
            );
            assert!(eth.payload().len() <= 1280, "ICMPv6 error over 1280 bytes");
            assert_eq!(icmp.msg_type(), 2, "not packet too big");
        }
        other => panic!("reply with ethertype {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{vip_v4, vip_v6, CLIENT_MAC, LB_MAC};
    use etherparse::PacketBuilder;

    fn tcp_v4(payload: usize, dont_fragment: bool) -> Vec<u8> {
        let mut v = Vec::new();
        let mut ip = etherparse::Ipv4Header::new(
            0,
            64,
            etherparse::IpNumber::TCP,
            [192, 0, 2, 1],
            vip_v4(0).octets(),
        )
        .expect("header");
        ip.dont_fragment = dont_fragment;
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .tcp(1234, 80, 1, 1000)
            .write(&mut v, &vec![7u8; payload])
            .expect("frame");
        v
    }

    fn tcp_v6(payload: usize) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
            .ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                vip_v6(1).octets(),
                64,
            )
            .tcp(1234, 80, 1, 1000)
            .write(&mut v, &vec![7u8; payload])
            .expect("frame");
        v
    }

    #[test]
    fn frames_are_split_by_their_length_prefixes() {
        let data = [0, 2, 0xaa, 0xbb, 0, 0, 0, 9, 0xcc, 0xdd];
        let frames = split_frames(&data);
        assert_eq!(frames, [&[0xaa, 0xbb][..], &[][..], &[0xcc, 0xdd][..]]);
        assert_eq!(split_frames(&[7]), [&[7][..]]);
        assert!(split_frames(&[]).is_empty());
        let many = [0u8; 2 * (MAX_FRAMES + 5)];
        assert_eq!(split_frames(&many).len(), MAX_FRAMES);
    }

    #[test]
    fn the_harness_reaches_forwarding_fragmentation_and_icmp_errors() {
        // Guards the harness: inputs must get past the drops, or the fuzzer
        // and the property tests would only ever exercise those.
        let mut h = FuzzHarness::new();
        let small = tcp_v4(10, false);
        // Two modes, two bursts each: every packet is forwarded 4 times.
        let o = h.run_frames(&[&small, &small]);
        assert_eq!((o.forwarded, o.replied, o.dropped, o.extra), (8, 0, 0, 0));
        // Over the MTU once encapsulated: without DF, IP-in-IP sends the
        // outer packet in two fragments (l2dsr forwards it as it is); with
        // DF, the sender gets an ICMP error.
        let o = h.run_frames(&[&tcp_v4(540, false)]);
        assert_eq!((o.forwarded, o.replied, o.extra), (4, 0, 2));
        let o = h.run_frames(&[&tcp_v4(540, true)]);
        assert_eq!((o.forwarded, o.replied), (2, 2));
        let o = h.run_frames(&[&tcp_v6(600)]);
        assert_eq!((o.forwarded, o.replied), (2, 2));
        // Longer than a buffer: cut to `MAX_FRAME`, which leaves the
        // packet whole here (the rest is Ethernet padding), so the checks
        // compare with the frame as cut.
        let padded = [&small[..], &[0u8; 3000][..]].concat();
        let o = h.run_frames(&[&padded]);
        assert_eq!((o.forwarded, o.dropped), (4, 0));
        // More flows than the table holds: the oldest are evicted, and all
        // are still forwarded.
        let many: Vec<Vec<u8>> = (0..24u16)
            .map(|i| {
                let mut f = small.clone();
                f[34..36].copy_from_slice(&(2000 + i).to_be_bytes());
                f
            })
            .collect();
        let many: Vec<&[u8]> = many.iter().map(|f| &f[..]).collect();
        let evicted = h.lanes[0].pipe.flows().evictions();
        let o = h.run_frames(&many);
        assert_eq!((o.forwarded, o.dropped), (4 * 24, 0));
        assert!(h.lanes[0].pipe.flows().evictions() >= evicted + 8);
        // The same input again gives the same outcome: the flow table was
        // emptied in between.
        let len = u16::try_from(small.len()).expect("small frame");
        let data = [&len.to_be_bytes()[..], &small].concat();
        assert_eq!(h.run(&data), h.run(&data));
    }

    #[test]
    #[should_panic(expected = "outer IPv4 checksum")]
    fn a_bad_outer_checksum_fails_the_check() {
        let mut h = FuzzHarness::new();
        let small = tcp_v4(10, false);
        let lane = &mut h.lanes[0];
        let mut burst = [PacketBuf::from_slice(&small)];
        let mut verdicts = [Verdict::Drop(DropReason::NoService)];
        lane.pipe.process(&lane.snap, 1, &mut burst, &mut verdicts);
        assert_eq!(verdicts[0], Verdict::Forward);
        let frame = burst[0].bytes_mut();
        frame[14 + 10] ^= 0xff;
        check(Forwarding::Ipip, &small, verdicts[0], burst[0].bytes());
    }

    #[test]
    #[should_panic(expected = "l2dsr changed the packet")]
    fn an_l2dsr_frame_with_a_changed_byte_fails_the_check() {
        let small = tcp_v4(10, false);
        let mut out = small.clone();
        out[..6].copy_from_slice(&[2, 0x10, 0, 0, 1, 1]);
        out[6..12].copy_from_slice(&small[..6]);
        check(Forwarding::L2dsr, &small, Verdict::Forward, &out);
        out[40] ^= 1;
        check(Forwarding::L2dsr, &small, Verdict::Forward, &out);
    }
}
