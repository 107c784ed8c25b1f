//! Arbitrary bytes as a query to the authoritative DNS responder, over UDP
//! and TCP: nothing may panic, and every response must answer the query
//! within the transport's size (`cutover::testkit::DnsHarness`).
#![no_main]

use cutover::testkit::DnsHarness;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static HARNESS: DnsHarness = DnsHarness::new();
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        h.run(data);
    });
});
