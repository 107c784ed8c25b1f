//! Arbitrary bursts of frames through the whole pipeline, both forwarding
//! modes: nothing may panic and every frame that comes out must be well
//! formed, whatever the bytes (`cutover::testkit::FuzzHarness`). An input
//! is a sequence of frames, each a 2-byte big-endian length and its bytes.
#![no_main]

use std::cell::RefCell;

use cutover::testkit::FuzzHarness;
use libfuzzer_sys::fuzz_target;

thread_local! {
    // Built once: a fresh pipeline per input costs more than the input.
    static HARNESS: RefCell<FuzzHarness> = RefCell::new(FuzzHarness::new());
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        h.borrow_mut().run(data);
    });
});
