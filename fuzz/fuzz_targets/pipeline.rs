//! Arbitrary frames through the whole pipeline, both forwarding modes:
//! nothing may panic, whatever the bytes.
#![no_main]

use cutover::testkit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    testkit::fuzz_one(data);
});
