//! The control plane: configuration, versions and VIP pools, and the
//! snapshots it publishes to the data plane. Nothing here runs per packet.

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod health;
pub mod neighbors;
pub mod nexthop;
pub mod plane;
pub mod pool;
pub mod state;
pub mod versions;
pub mod vip_routes;
