//! What an operator sees: Prometheus metrics (SPEC §7).
//!
//! Workers count in their own memory ([`crate::dataplane::stats`]); the
//! collector here reads those counts a few times a second and hands them
//! to the `metrics` facade, which the Prometheus exporter serves. Nothing
//! here runs per packet.

pub mod metrics;
