//! The bindgen output over `src/io/dpdk_shim.h` (generated code: DPDK's
//! `rte_mbuf`, the few EAL/ethdev functions the driver calls, and the C
//! shim over DPDK's inline functions).
#![allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::cast_possible_truncation
)]

include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
