//! The data plane: what happens to a packet between receive and send.
//!
//! `pipeline` is one sans-IO function over a burst; `maglev` and `flow` are
//! its two lookups; `stats` is the per-worker memory it counts into;
//! `prefetch` is how a burst's passes overlap their cache misses.

pub mod flow;
pub mod frame;
pub mod hugepages;
pub mod maglev;
pub mod pipeline;
mod prefetch;
pub mod rewrite;
pub mod stats;
pub mod worker;
