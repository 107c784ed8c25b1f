//! Arbitrary bytes to the authoritative DNS responder never panic, and
//! every response it gives answers the query within the transport's size
//! (the harness the `dns` fuzz target runs, `testkit::DnsHarness`),
//! including real queries with random damage.

use cutover::testkit::{dns_query, DnsHarness};
use hickory_proto::op::OpCode;
use hickory_proto::rr::RecordType;
use proptest::prelude::*;

fn valid_query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    dns_query(name, rtype, OpCode::Query, edns.then_some(1400)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        DnsHarness::new().run(&data);
    }

    #[test]
    fn damaged_queries_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((0usize..64, any::<u8>()), 1..6),
        cut in 0usize..64,
    ) {
        let (name, rtype, edns) = [
            ("svc0.svc.example.", RecordType::A, false),
            ("svc1.svc.example.", RecordType::AAAA, true),
            ("svc.example.", RecordType::SOA, true),
            ("svc.example.", RecordType::ANY, false),
        ][which];
        let mut q = valid_query(name, rtype, edns);
        for (i, b) in edits {
            if let Some(x) = q.get_mut(i) {
                *x = b;
            }
        }
        q.truncate(cut.max(1));
        DnsHarness::new().run(&q);
    }
}

#[test]
fn the_valid_queries_are_answered() {
    // Guards the harness: undamaged, each query gets a response with
    // records over both transports, or the properties above would only
    // ever exercise errors.
    let h = DnsHarness::new();
    for (name, rtype, edns) in [
        ("svc0.svc.example.", RecordType::A, false),
        ("svc1.svc.example.", RecordType::AAAA, true),
        ("svc.example.", RecordType::SOA, true),
    ] {
        let o = h.run(&valid_query(name, rtype, edns));
        assert_eq!((o.answered, o.with_answers), (2, 2), "{name} {rtype}");
    }
}
