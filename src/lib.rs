//! cutover: a userspace L4 load balancer with DNS-based in-packet service
//! version tagging.
//!
//! A packet's journey: an `io` port receives a burst, the `dataplane`
//! pipeline parses it with the zero-copy views of `wire`, finds the version
//! of the service from the destination address in the read-copy-update
//! `snapshot`, picks a backend (flow table, then Maglev), rewrites the frame
//! and hands it back to the port. The `control` plane builds snapshots from
//! the configuration and publishes them; it never touches a packet.
#![deny(unsafe_code)]

pub mod control;
pub mod dataplane;
pub mod dns;
pub mod io;
pub mod replay;
pub mod run;
pub mod snapshot;
pub mod telemetry;
#[doc(hidden)]
pub mod testkit;
pub mod wire;
