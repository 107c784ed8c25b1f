//! ICMP to a VIP (`src/dataplane/pipeline/icmp.rs`): path-MTU errors that
//! routers send to a VIP reach the backend that holds the flow they quote,
//! unchanged, in both forwarding modes; echo requests are answered; every
//! other ICMP to a VIP is dropped and counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use cutover::control::bootstrap::build_maglev;
use cutover::control::config::Forwarding;
use cutover::dataplane::frame::{FrameBuf, PacketBuf};
use cutover::dataplane::pipeline::{Pipeline, Verdict};
use cutover::dataplane::stats::DropReason;
use cutover::snapshot::Snapshot;
use cutover::testkit::{self, CLIENT_MAC, LB_MAC};
use etherparse::{icmpv4, Icmpv4Type, Icmpv6Type, PacketBuilder};

const BACKENDS: u32 = 4;
const TABLE: usize = 251;
/// A router between the backends and the clients.
const ROUTER_V4: [u8; 4] = [203, 0, 113, 1];
const ROUTER_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

/// Client `i` of the IPv4 tests and its TCP port.
fn client_v4(i: u16) -> ([u8; 4], u16) {
    let [hi, lo] = i.to_be_bytes();
    ([192, 0, hi, lo], 40_000 + i)
}

fn client_v6(i: u16) -> ([u8; 16], u16) {
    let mut a = [
        0x20, 0x01, 0x0d, 0xb8, 0xc1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    a[14..].copy_from_slice(&i.to_be_bytes());
    (a, 41_000 + i)
}

/// A client's TCP segment to `vip` port 80.
fn to_vip(client: IpAddr, vip: IpAddr, port: u16, syn: bool) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let b = match (client, vip) {
        (IpAddr::V4(c), IpAddr::V4(v)) => eth.ipv4(c.octets(), v.octets(), 64),
        (IpAddr::V6(c), IpAddr::V6(v)) => eth.ipv6(c.octets(), v.octets(), 64),
        _ => panic!("mixed families"),
    }
    .tcp(port, 80, 1, 1000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("segment");
    v
}

/// The start of the backend's reply to the client (from `vip` port
/// `from_port`, as direct server return sends it): what a router quotes.
fn reply_quote(vip: IpAddr, client: IpAddr, from_port: u16, to_port: u16, len: usize) -> Vec<u8> {
    let b = match (vip, client) {
        (IpAddr::V4(v), IpAddr::V4(c)) => PacketBuilder::ipv4(v.octets(), c.octets(), 63),
        (IpAddr::V6(v), IpAddr::V6(c)) => PacketBuilder::ipv6(v.octets(), c.octets(), 63),
        _ => panic!("mixed families"),
    }
    .tcp(from_port, to_port, 7, 1000)
    .ack(2);
    let mut v = Vec::new();
    b.write(&mut v, &[9u8; 1400]).expect("reply");
    v.truncate(len);
    v
}

/// An ICMPv4 "fragmentation needed" from the router to `vip` quoting
/// `quote`.
fn frag_needed(vip: Ipv4Addr, quote: &[u8]) -> Vec<u8> {
    let t =
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        });
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(ROUTER_V4, vip.octets(), 64)
        .icmpv4(t)
        .write(&mut v, quote)
        .expect("frag needed");
    v
}

/// An ICMPv6 "packet too big" from the router to `vip` quoting `quote`.
fn packet_too_big(vip: Ipv6Addr, quote: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(ROUTER_V6, vip.octets(), 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut v, quote)
        .expect("packet too big");
    v
}

/// Runs `frames` as one burst; the verdicts and the frames as they left.
fn burst(
    pipe: &mut Pipeline,
    snap: &Snapshot,
    now: u64,
    frames: &[Vec<u8>],
) -> Vec<(Verdict, Vec<u8>)> {
    let mut bufs: Vec<PacketBuf> = frames.iter().map(|f| PacketBuf::from_slice(f)).collect();
    let mut verdicts = vec![Verdict::Drop(DropReason::NoService); frames.len()];
    pipe.process(snap, now, &mut bufs, &mut verdicts);
    verdicts
        .into_iter()
        .zip(bufs.iter().map(|b| b.bytes().to_vec()))
        .collect()
}

/// Which backend of service 0 a forwarded frame went to (its destination
/// MAC, in both modes).
fn backend_of(frame: &[u8]) -> u32 {
    (0..BACKENDS)
        .find(|&j| frame[..6] == testkit::backend_mac(0, j))
        .unwrap_or_else(|| panic!("not sent to a backend: {:02x?}", &frame[..6]))
}

/// The IP packet a forwarded frame carries, as the backend sees it: the
/// frame after its Ethernet header (`l2dsr`), or after the outer IPv4
/// header too (`ipip`, checked to go to the backend's address).
fn delivered(forwarding: Forwarding, frame: &[u8]) -> Vec<u8> {
    match forwarding {
        Forwarding::L2dsr => frame[14..].to_vec(),
        Forwarding::Ipip => {
            assert_eq!(&frame[12..14], &[0x08, 0x00], "outer IPv4");
            let outer = &frame[14..34];
            let backend = testkit::backend_v4(0, backend_of(frame));
            assert_eq!(&outer[16..20], &backend.octets(), "outer destination");
            frame[34..].to_vec()
        }
    }
}

/// The same snapshot with backend `sick` of service 0 healthy or not, and
/// Maglev built over the healthy ones (as the control plane builds it).
fn with_health(snap: &Snapshot, generation: u64, sick: Option<usize>) -> Snapshot {
    let mut version = snap.version(0).expect("version 0").clone();
    for (j, b) in version.backends.iter_mut().enumerate() {
        b.healthy = Some(j) != sick;
    }
    version.maglev = Arc::new(build_maglev(TABLE, &version.backends).expect("maglev"));
    let services = (*snap.services).clone();
    Snapshot::new(generation, snap.settings.clone(), services, vec![version]).expect("snapshot")
}

/// Both families: (VIP, client `i`'s address and port).
fn flows(n: u16) -> Vec<(IpAddr, IpAddr, u16)> {
    (0..n)
        .flat_map(|i| {
            let (c4, p4) = client_v4(i);
            let (c6, p6) = client_v6(i);
            [
                (IpAddr::V4(testkit::vip_v4(0)), IpAddr::from(c4), p4),
                (IpAddr::V6(testkit::vip_v6(0)), IpAddr::from(c6), p6),
            ]
        })
        .collect()
}

fn error_for(vip: IpAddr, client: IpAddr, port: u16) -> Vec<u8> {
    let quote = reply_quote(vip, client, 80, port, 68);
    match vip {
        IpAddr::V4(v) => frag_needed(v, &quote),
        IpAddr::V6(v) => packet_too_big(v, &quote),
    }
}

/// An error about a known flow goes where that flow's packets go, even
/// when Maglev would now choose another backend for it; it is forwarded
/// byte for byte and neither creates nor refreshes a flow entry.
#[test]
fn an_error_reaches_the_backend_that_holds_the_flow() {
    for forwarding in [Forwarding::L2dsr, Forwarding::Ipip] {
        let base = testkit::snapshot(1, BACKENDS, forwarding, TABLE).expect("snapshot");
        // Flows opened while backend 0 was down are on backends 1 to 3;
        // once it is back, Maglev gives some of them to backend 0, but
        // the flow table keeps them where they are.
        let down = with_health(&base, 2, Some(0));
        let up = with_health(&base, 3, None);
        let mut pipe = testkit::pipeline(4096);
        let all = flows(100);
        let syns: Vec<Vec<u8>> = all.iter().map(|&(v, c, p)| to_vip(c, v, p, true)).collect();
        let mut held = Vec::new();
        for chunk in syns.chunks(32) {
            for (verdict, frame) in burst(&mut pipe, &down, 1, chunk) {
                assert_eq!(verdict, Verdict::Forward, "{forwarding:?}");
                held.push(backend_of(&frame));
            }
        }
        assert!(!held.contains(&0));
        let flows_before = pipe.flows().len();
        assert_eq!(flows_before, all.len());
        let mut fresh = testkit::pipeline(4096);
        let mut moved = 0;
        for (i, &(vip, client, port)) in all.iter().enumerate() {
            // Maglev's choice for the flow now: a new pipeline's.
            let seg = to_vip(client, vip, port, true);
            let maglev = backend_of(&burst(&mut fresh, &up, 10, &[seg])[0].1);
            if maglev != held[i] {
                moved += 1;
            }
            let error = error_for(vip, client, port);
            let out = burst(&mut pipe, &up, 10, std::slice::from_ref(&error));
            assert_eq!(out[0].0, Verdict::Forward, "{forwarding:?} {vip} {client}");
            assert_eq!(backend_of(&out[0].1), held[i], "{forwarding:?} {client}");
            assert_eq!(delivered(forwarding, &out[0].1), error[14..], "unchanged");
        }
        assert!(moved > 0, "no flow that Maglev would place elsewhere");
        assert_eq!(
            pipe.flows().len(),
            flows_before,
            "an error made a flow entry"
        );
        assert_eq!(
            pipe.stats().icmp_forwarded.get(),
            all.len() as u64,
            "{forwarding:?}"
        );
        assert_eq!(pipe.stats().icmp_sent.get(), 0);
    }
}

/// `quote` (an IPv6 packet) with the extension header `ext` (its first
/// byte, the next header, is filled in) inserted after the IPv6 header as
/// `kind` (0 hop-by-hop, 44 fragment).
fn with_extension(quote: &[u8], kind: u8, ext: &[u8]) -> Vec<u8> {
    let mut q = quote[..40].to_vec();
    let mut ext = ext.to_vec();
    ext[0] = q[6];
    q[6] = kind;
    let len = u16::from_be_bytes([q[4], q[5]]) + u16::try_from(ext.len()).expect("short");
    q[4..6].copy_from_slice(&len.to_be_bytes());
    q.extend_from_slice(&ext);
    q.extend_from_slice(&quote[40..]);
    q
}

/// A backend fragments its own large UDP replies: a router's "packet too
/// big" then quotes a fragment header. An error quoting the first
/// fragment, or a hop-by-hop header, reaches the flow's backend; one
/// quoting a later fragment (no ports) is dropped as unsupported.
#[test]
fn errors_quoting_ipv6_extension_headers_reach_the_flows_backend() {
    let snap = testkit::snapshot(1, BACKENDS, Forwarding::L2dsr, TABLE).expect("snapshot");
    let mut pipe = testkit::pipeline(4096);
    let vip = testkit::vip_v6(0);
    let first_fragment = [0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    let later_fragment = [0, 0, 0x05, 0xa8, 0xde, 0xad, 0xbe, 0xef];
    let hop_by_hop = [0, 0, 1, 4, 0, 0, 0, 0];
    let mut seen = std::collections::HashSet::new();
    for i in 0..32 {
        let (c, port) = client_v6(i);
        let client = IpAddr::from(c);
        let syn = to_vip(client, vip.into(), port, true);
        let held = backend_of(&burst(&mut pipe, &snap, 1, &[syn])[0].1);
        seen.insert(held);
        let quote = reply_quote(vip.into(), client, 80, port, 68);
        for (kind, ext) in [(44, first_fragment), (0, hop_by_hop)] {
            let error = packet_too_big(vip, &with_extension(&quote, kind, &ext));
            let out = burst(&mut pipe, &snap, 2, std::slice::from_ref(&error));
            assert_eq!(out[0].0, Verdict::Forward, "client {i}, header {kind}");
            assert_eq!(backend_of(&out[0].1), held, "client {i}, header {kind}");
            assert_eq!(out[0].1[14..], error[14..], "unchanged");
        }
        let later = packet_too_big(vip, &with_extension(&quote, 44, &later_fragment));
        let out = burst(&mut pipe, &snap, 2, &[later]);
        assert_eq!(out[0].0, Verdict::Drop(DropReason::Unsupported));
        // Extension headers the quote cuts off: malformed.
        let cut = packet_too_big(vip, &with_extension(&quote, 0, &hop_by_hop)[..44]);
        let out = burst(&mut pipe, &snap, 2, &[cut]);
        assert_eq!(out[0].0, Verdict::Drop(DropReason::Malformed));
    }
    assert!(seen.len() > 1, "flows on several backends");
    assert_eq!(pipe.stats().icmp_forwarded.get(), 64);
}

/// An error about a flow this worker does not know goes to Maglev's
/// backend for it, the one its next packet would reach, and leaves no
/// entry behind.
#[test]
fn an_error_about_an_unknown_flow_follows_maglev() {
    let snap = testkit::snapshot(1, BACKENDS, Forwarding::Ipip, TABLE).expect("snapshot");
    let mut pipe = testkit::pipeline(4096);
    let mut reference = testkit::pipeline(4096);
    let mut seen = std::collections::HashSet::new();
    for &(vip, client, port) in &flows(64) {
        let out = burst(&mut pipe, &snap, 1, &[error_for(vip, client, port)]);
        assert_eq!(out[0].0, Verdict::Forward);
        let seg = to_vip(client, vip, port, true);
        let expected = backend_of(&burst(&mut reference, &snap, 1, &[seg])[0].1);
        assert_eq!(backend_of(&out[0].1), expected, "{client}");
        seen.insert(expected);
    }
    assert_eq!(
        seen.len(),
        BACKENDS as usize,
        "errors spread like their flows"
    );
    assert!(pipe.flows().is_empty());
}

/// ICMP to a VIP that is not a path-MTU error about one of its flows is
/// dropped and counted, and a forwarded error that no longer fits the MTU
/// once encapsulated is dropped without an ICMP error about it.
#[test]
fn other_icmp_to_a_vip_is_dropped_and_counted() {
    let mut snap = testkit::snapshot(1, BACKENDS, Forwarding::Ipip, TABLE).expect("snapshot");
    let vip = testkit::vip_v4(0);
    let (client, port) = client_v4(1);
    let client = Ipv4Addr::from(client);
    let quote = reply_quote(vip.into(), client.into(), 80, port, 48);
    let mut expired = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(ROUTER_V4, vip.octets(), 64)
        .icmpv4(Icmpv4Type::TimeExceeded(
            icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut expired, &quote)
        .expect("time exceeded");
    let other_port = frag_needed(vip, &reply_quote(vip.into(), client.into(), 81, port, 48));
    let not_from_vip = frag_needed(
        vip,
        &reply_quote(testkit::vip_v4(1).into(), client.into(), 80, port, 48),
    );
    let cut_short = frag_needed(vip, &quote[..24]);
    let nowhere = testkit::vip_v4(9);
    let to_nowhere = frag_needed(
        nowhere,
        &reply_quote(nowhere.into(), client.into(), 80, port, 48),
    );
    let mut pipe = testkit::pipeline(64);
    let cases = [
        (expired, DropReason::Unsupported),
        (other_port, DropReason::NoService),
        (not_from_vip, DropReason::Malformed),
        (cut_short, DropReason::Malformed),
        (to_nowhere, DropReason::NoService),
    ];
    for (i, (frame, reason)) in cases.iter().enumerate() {
        let out = burst(&mut pipe, &snap, 1, std::slice::from_ref(frame));
        assert_eq!(out[0].0, Verdict::Drop(*reason), "case {i}");
    }
    // A "packet too big" of 1 280 bytes (the most RFC 4443 quotes) over a
    // link whose MTU leaves room for 1 000.
    snap.settings.mtu = 1020;
    let (c6, p6) = client_v6(1);
    let vip6 = testkit::vip_v6(0);
    let big = packet_too_big(
        vip6,
        &reply_quote(vip6.into(), Ipv6Addr::from(c6).into(), 80, p6, 1232),
    );
    assert_eq!(big.len(), 14 + 1280);
    let out = burst(&mut pipe, &snap, 2, &[big]);
    assert_eq!(out[0].0, Verdict::Drop(DropReason::TooBig));
    assert_eq!(
        pipe.stats().icmp_sent.get(),
        0,
        "an ICMP error about an ICMP error"
    );
    assert_eq!(pipe.stats().icmp_forwarded.get(), 0);
    assert!(pipe.flows().is_empty());
}

/// An echo request to `dst` from the client (IPv4 or IPv6) with `data`.
fn echo_request(dst: IpAddr, data: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let mut v = Vec::new();
    match dst {
        IpAddr::V4(d) => eth
            .ipv4(client_v4(3).0, d.octets(), 9)
            .icmpv4_echo_request(0x1234, 7)
            .write(&mut v, data),
        IpAddr::V6(d) => eth
            .ipv6(client_v6(3).0, d.octets(), 9)
            .icmpv6_echo_request(0x1234, 7)
            .write(&mut v, data),
    }
    .expect("echo request");
    v
}

/// A live VIP answers pings in both families and both forwarding modes:
/// the reply goes back to the client's MAC from the VIP, carries the
/// request's identifier, sequence and data, has valid checksums and a
/// fresh TTL, and counts as neither a drop nor traffic of the version.
#[test]
fn a_live_vip_answers_echo_requests() {
    let data: Vec<u8> = (0u8..56).collect();
    for forwarding in [Forwarding::L2dsr, Forwarding::Ipip] {
        let snap = testkit::snapshot(1, BACKENDS, forwarding, TABLE).expect("snapshot");
        let uid = snap.version(0).expect("version 0").uid;
        let mut pipe = testkit::pipeline(64);
        let vips = [
            IpAddr::V4(testkit::vip_v4(0)),
            IpAddr::V6(testkit::vip_v6(0)),
        ];
        let requests: Vec<Vec<u8>> = vips.iter().map(|v| echo_request(*v, &data)).collect();
        let out = burst(&mut pipe, &snap, 1, &requests);
        for ((vip, request), (verdict, reply)) in vips.iter().zip(&requests).zip(&out) {
            assert_eq!(*verdict, Verdict::Reply, "{forwarding:?} {vip}");
            assert_eq!(reply.len(), request.len());
            let parsed = etherparse::SlicedPacket::from_ethernet(reply).expect("reply parses");
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = &parsed.link else {
                panic!("no Ethernet header");
            };
            assert_eq!((eth.destination(), eth.source()), (CLIENT_MAC, LB_MAC));
            match (&parsed.net, &parsed.transport) {
                (
                    Some(etherparse::NetSlice::Ipv4(ip)),
                    Some(etherparse::TransportSlice::Icmpv4(icmp)),
                ) => {
                    let h = ip.header();
                    assert_eq!(IpAddr::V4(h.source_addr()), *vip);
                    assert_eq!(h.destination_addr().octets(), client_v4(3).0);
                    assert_eq!(h.ttl(), 64);
                    let hdr = h.to_header();
                    assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
                    assert_eq!(
                        icmp.icmp_type(),
                        Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 0x1234, seq: 7 })
                    );
                    assert_eq!(icmp.payload(), &data[..]);
                    let fresh =
                        etherparse::Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload());
                    assert_eq!(icmp.checksum(), fresh.checksum, "ICMP checksum");
                }
                (
                    Some(etherparse::NetSlice::Ipv6(ip)),
                    Some(etherparse::TransportSlice::Icmpv6(icmp)),
                ) => {
                    let h = ip.header();
                    assert_eq!(IpAddr::V6(h.source_addr()), *vip);
                    assert_eq!(h.destination_addr().octets(), client_v6(3).0);
                    assert_eq!(h.hop_limit(), 64);
                    assert_eq!(
                        icmp.icmp_type(),
                        Icmpv6Type::EchoReply(etherparse::IcmpEchoHeader { id: 0x1234, seq: 7 })
                    );
                    assert_eq!(icmp.payload(), &data[..]);
                    let fresh = etherparse::Icmpv6Header::with_checksum(
                        icmp.icmp_type(),
                        h.source(),
                        h.destination(),
                        icmp.payload(),
                    )
                    .expect("checksum");
                    assert_eq!(icmp.checksum(), fresh.checksum, "ICMPv6 checksum");
                }
                other => panic!("not an echo reply: {other:?}"),
            }
        }
        let stats = pipe.stats();
        assert_eq!(stats.echo_replies.get(), 2);
        assert_eq!(stats.icmp_sent.get(), 0);
        assert!(DropReason::ALL.iter().all(|r| stats.dropped(*r) == 0));
        let c = stats.version(0, uid).expect("counters of version 0");
        assert_eq!((c.packets.get(), c.last_packet_ns.get()), (0, 0));
    }
}

/// Pings that get no reply: to an address that is not a live VIP, with a
/// wrong checksum (the kernel would drop them too), or with IPv4 options.
#[test]
fn echo_requests_that_get_no_reply() {
    let snap = testkit::snapshot(1, BACKENDS, Forwarding::L2dsr, TABLE).expect("snapshot");
    let mut pipe = testkit::pipeline(64);
    let data = [5u8; 24];
    let elsewhere = echo_request(IpAddr::V4(testkit::vip_v4(7)), &data);
    let mut bad_sum = echo_request(IpAddr::V4(testkit::vip_v4(0)), &data);
    let last = bad_sum.len() - 1;
    bad_sum[last] ^= 1;
    let mut bad_sum6 = echo_request(IpAddr::V6(testkit::vip_v6(0)), &data);
    let last = bad_sum6.len() - 1;
    bad_sum6[last] ^= 1;
    let mut with_options = Vec::new();
    let mut ip = etherparse::Ipv4Header::new(
        0,
        64,
        etherparse::IpNumber::ICMP,
        client_v4(3).0,
        testkit::vip_v4(0).octets(),
    )
    .expect("header");
    ip.options = [1u8, 1, 1, 1][..].try_into().expect("options");
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .icmpv4_echo_request(1, 1)
        .write(&mut with_options, &data)
        .expect("frame");
    let out = burst(
        &mut pipe,
        &snap,
        1,
        &[elsewhere, bad_sum, bad_sum6, with_options],
    );
    let verdicts: Vec<Verdict> = out.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Drop(DropReason::NoService),
            Verdict::Drop(DropReason::Malformed),
            Verdict::Drop(DropReason::Malformed),
            Verdict::Drop(DropReason::Unsupported),
        ]
    );
    assert_eq!(pipe.stats().echo_replies.get(), 0);
}
