//! What the fast path reads from the version rather than the backend
//! itself, and what it counts.

use super::*;

/// A TCP frame from a client to service 0's IPv4 VIP, port 80, carrying
/// `payload` bytes.
fn to_service_0(syn: bool, payload: usize) -> PacketBuf {
    let mut v = Vec::new();
    let b =
        etherparse::PacketBuilder::ethernet2(crate::testkit::CLIENT_MAC, crate::testkit::LB_MAC)
            .ipv4([192, 0, 2, 7], crate::testkit::vip_v4(0).octets(), 64)
            .tcp(40_000, 80, 1, 1000);
    let b = if syn { b.syn() } else { b.ack(1) };
    b.write(&mut v, &vec![7u8; payload]).expect("frame");
    PacketBuf::from_slice(&v)
}

/// One frame through `pipe`: its verdict and the MAC it was sent to.
fn forward_one(pipe: &mut Pipeline, snap: &Snapshot, now: u64, syn: bool) -> (Verdict, [u8; 6]) {
    let mut bufs = [to_service_0(syn, 0)];
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
        let bare = to_service_0(true, 0).bytes().to_vec();
        let mut padded = bare.clone();
        padded.resize(60, 0);
        let long = to_service_0(false, 100).bytes().to_vec();
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
