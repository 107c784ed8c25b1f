//! The common-case parser against the general one: same answer on every
//! frame it accepts, and it accepts the frames it is there for. And what
//! the fast path reads from the version rather than the backend itself.

use proptest::prelude::*;

use super::*;

fn frame(udp: bool, payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
        [192, 0, 2, 1],
        [203, 0, 113, 1],
        64,
    );
    let body = vec![7u8; payload];
    let r = if udp {
        b.udp(5353, 443).write(&mut v, &body)
    } else {
        b.tcp(1234, 80, 1, 1000).syn().write(&mut v, &body)
    };
    r.expect("frame");
    v
}

/// Every field of two parses, as a comparable value.
#[allow(clippy::type_complexity)]
fn fields(p: &Parsed) -> (usize, usize, FlowKey, bool, bool, bool, bool, u8) {
    (
        p.l3,
        p.ip_len,
        p.key,
        p.v6,
        p.has_ports,
        p.fragment,
        p.dont_frag,
        p.tcp_flags,
    )
}

#[test]
fn common_frames_take_the_fast_path() {
    for (udp, payload) in [(false, 0), (false, 10), (true, 12), (true, 900)] {
        let f = frame(udp, payload);
        let (mut fast, mut general) = (Parsed::EMPTY, Parsed::EMPTY);
        assert!(parse_common(&f, &mut fast), "udp={udp} payload={payload}");
        assert_eq!(parse_general(&f, &mut general), Ok(()));
        assert_eq!(fields(&fast), fields(&general));
        assert_eq!(fast.tcp_flags, if udp { 0 } else { 0x02 });
    }
}

#[test]
fn other_shapes_are_left_to_the_general_parser() {
    let base = frame(false, 10);
    let mut vlan = base.clone();
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let mut options = base.clone();
    options[14] = 0x46;
    let mut fragment = base.clone();
    fragment[20] = 0x20; // MF
    let mut icmp = base.clone();
    icmp[23] = 1;
    let mut short_total = base.clone();
    short_total[16..18].copy_from_slice(&39u16.to_be_bytes());
    let mut long_total = base.clone();
    long_total[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let mut bad_doff = base.clone();
    bad_doff[14 + 20 + 12] = 0x40;
    for (name, f) in [
        ("vlan", vlan),
        ("options", options),
        ("fragment", fragment),
        ("icmp", icmp),
        ("short total", short_total),
        ("long total", long_total),
        ("bad data offset", bad_doff),
        ("runt", base[..53].to_vec()),
    ] {
        let mut p = Parsed::EMPTY;
        assert!(!parse_common(&f, &mut p), "{name}");
        assert_eq!(fields(&p), fields(&Parsed::EMPTY), "{name}: p was written");
    }
}

/// A TCP frame from a client to service 0's IPv4 VIP, port 80.
fn to_service_0(syn: bool) -> PacketBuf {
    let mut v = Vec::new();
    let b =
        etherparse::PacketBuilder::ethernet2(crate::testkit::CLIENT_MAC, crate::testkit::LB_MAC)
            .ipv4([192, 0, 2, 7], crate::testkit::vip_v4(0).octets(), 64)
            .tcp(40_000, 80, 1, 1000);
    let b = if syn { b.syn() } else { b.ack(1) };
    b.write(&mut v, &[]).expect("frame");
    PacketBuf::from_slice(&v)
}

/// One frame through `pipe`: its verdict and the MAC it was sent to.
fn forward_one(pipe: &mut Pipeline, snap: &Snapshot, now: u64, syn: bool) -> (Verdict, [u8; 6]) {
    let mut bufs = [to_service_0(syn)];
    let mut verdicts = [Verdict::Drop(DropReason::NoService)];
    pipe.process(snap, now, &mut bufs, &mut verdicts);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bufs[0].bytes()[..6]);
    (verdicts[0], mac)
}

/// The fast path reads a backend's health from the version's copy
/// (`BackendPath`): a known flow must still leave a backend that the next
/// snapshot marks unhealthy, and go to a healthy one.
#[test]
fn a_known_flow_leaves_a_backend_marked_unhealthy() {
    let snap = crate::testkit::snapshot(1, 3, Forwarding::L2dsr, 251).expect("snapshot");
    let mut pipe = crate::testkit::pipeline(1024);
    let (verdict, first) = forward_one(&mut pipe, &snap, 1, true);
    assert_eq!(verdict, Verdict::Forward);
    assert_eq!(
        forward_one(&mut pipe, &snap, 2, false),
        (Verdict::Forward, first)
    );
    let mut version = snap.version(0).expect("version 0").clone();
    let sick = (0..3u32)
        .find(|&j| crate::testkit::backend_mac(0, j) == first)
        .expect("one of the backends");
    version.backends[sick as usize].healthy = false;
    version.maglev =
        Arc::new(crate::control::bootstrap::build_maglev(251, &version.backends).expect("maglev"));
    let services = (*snap.services).clone();
    let next = Snapshot::new(2, snap.settings.clone(), services, vec![version]).expect("next");
    let (verdict, now_to) = forward_one(&mut pipe, &next, 3, false);
    assert_eq!(verdict, Verdict::Forward);
    assert_ne!(now_to, first, "still sent to the unhealthy backend");
    assert!((0..3).any(|j| crate::testkit::backend_mac(0, j) == now_to));
}

/// A version's byte counter adds up the frames as they arrived (Ethernet
/// padding included, before any outer header), for forwarded frames only.
#[test]
fn forwarded_frames_count_their_bytes_as_received() {
    for forwarding in [Forwarding::Ipip, Forwarding::L2dsr] {
        let snap = crate::testkit::snapshot(1, 3, forwarding, 251).expect("snapshot");
        let uid = snap.version(0).expect("version 0").uid;
        let mut pipe = crate::testkit::pipeline(1024);
        // A bare SYN is 54 bytes; padded to the Ethernet minimum, 60.
        let bare = to_service_0(true).bytes().to_vec();
        let mut padded = bare.clone();
        padded.resize(60, 0);
        let mut long = Vec::new();
        etherparse::PacketBuilder::ethernet2(crate::testkit::CLIENT_MAC, crate::testkit::LB_MAC)
            .ipv4([192, 0, 2, 8], crate::testkit::vip_v4(0).octets(), 64)
            .tcp(40_001, 80, 1, 1000)
            .write(&mut long, &[7u8; 100])
            .expect("frame");
        let mut unknown = bare.clone();
        unknown[14 + 16..14 + 20].copy_from_slice(&[198, 51, 100, 250]);
        let mut bufs = [&bare, &padded, &long, &unknown].map(|f| PacketBuf::from_slice(f));
        assert_eq!((bare.len(), long.len()), (54, 154));
        let mut verdicts = [Verdict::Drop(DropReason::Malformed); 4];
        pipe.process(&snap, 1, &mut bufs, &mut verdicts);
        assert_eq!(verdicts[..3], [Verdict::Forward; 3], "{forwarding:?}");
        assert_eq!(verdicts[3], Verdict::Drop(DropReason::NoService));
        let c = pipe.stats().version(0, uid).expect("counters of version 0");
        assert_eq!(c.packets.get(), 3, "{forwarding:?}");
        assert_eq!(c.bytes.get(), 54 + 60 + 154, "{forwarding:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Damage anywhere in the headers: whenever the fast path accepts a
    /// frame, the general parser accepts it too with the same result.
    #[test]
    fn fast_parse_agrees_with_general(
        udp in any::<bool>(),
        payload in 0usize..64,
        edits in proptest::collection::vec((0usize..60, any::<u8>()), 0..4),
        cut in 0usize..200,
    ) {
        let mut f = frame(udp, payload);
        for (i, b) in edits {
            if let Some(x) = f.get_mut(i) {
                *x = b;
            }
        }
        f.truncate(cut.max(1));
        let (mut fast, mut general) = (Parsed::EMPTY, Parsed::EMPTY);
        if parse_common(&f, &mut fast) {
            prop_assert_eq!(parse_general(&f, &mut general), Ok(()));
            prop_assert_eq!(fields(&fast), fields(&general));
        }
    }
}
