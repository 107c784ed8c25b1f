//! Arbitrary bytes into the pipeline never panic, in both forwarding modes
//! (the same harness the cargo-fuzz target runs), including frames that
//! look almost valid: a real Ethernet/IP header with random damage.

use cutover::testkit;
use proptest::prelude::*;

fn valid_frame() -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(testkit::CLIENT_MAC, testkit::LB_MAC)
        .ipv4([192, 0, 2, 1], testkit::vip_v4(0).octets(), 64)
        .tcp(1234, 80, 1, 1000)
        .write(&mut v, &[7u8; 700])
        .unwrap();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        testkit::fuzz_one(&data);
    }

    #[test]
    fn damaged_valid_frames_never_panic(
        edits in proptest::collection::vec((0usize..760, any::<u8>()), 1..8),
        cut in 0usize..760,
    ) {
        let mut f = valid_frame();
        for (i, b) in edits {
            if let Some(x) = f.get_mut(i) {
                *x = b;
            }
        }
        f.truncate(cut.max(1));
        testkit::fuzz_one(&f);
    }
}

#[test]
fn the_valid_frame_is_forwarded() {
    // Guards the harness itself: with no damage the frame must go through,
    // or the property tests above would only ever exercise drops.
    use cutover::control::config::Forwarding;
    use cutover::dataplane::frame::PacketBuf;
    use cutover::dataplane::pipeline::Verdict;
    use cutover::dataplane::stats::DropReason;
    let snap = testkit::snapshot(2, 3, Forwarding::Ipip, 251).unwrap();
    let mut pipe = testkit::pipeline(64);
    let mut burst = [PacketBuf::from_slice(&valid_frame())];
    let mut verdicts = [Verdict::Drop(DropReason::NoService)];
    pipe.process(&snap, 1, &mut burst, &mut verdicts);
    assert_eq!(verdicts[0], Verdict::Forward);
}
