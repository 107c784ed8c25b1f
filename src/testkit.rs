//! Ready-made snapshots for the benchmarks, the fuzzer and tests.
//!
//! Building 10 000 services through a TOML file would measure the parser;
//! these helpers build the snapshot directly, the way the control plane
//! does, with documentation addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::control::bootstrap;
use crate::control::config::{Forwarding, PortSpec, Protocol};
use crate::dataplane::flow::FlowTimeouts;
use crate::dataplane::pipeline::{Pipeline, PipelineOptions};
use crate::dataplane::stats::WorkerStats;
use crate::snapshot::{
    Backend, DataplaneSettings, ServiceEntry, Snapshot, SnapshotError, VersionEntry, VersionState,
};

mod dns;
mod fuzz;

pub use dns::{dns_query, DnsHarness, DnsOutcome, FUZZ_ZONE};
pub use fuzz::{split_frames, FuzzHarness, FuzzOutcome, FUZZ_MTU, MAX_FRAMES};

/// MAC of the load balancer in synthetic frames.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// MAC of the client in synthetic frames.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The IPv4 VIP of service `i` (198.18.0.0/15, benchmark space).
pub fn vip_v4(i: u32) -> Ipv4Addr {
    let [a, b, c, d] = (0xc612_0000u32 + i).to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// The IPv6 VIP of service `i`.
pub fn vip_v6(i: u32) -> Ipv6Addr {
    let [a, b, c, d] = i.to_be_bytes();
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x100,
        0,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    )
}

/// Backend `j` of service `i`: 10.(i/256).(i%256).(j+1) style, unique.
pub fn backend_v4(i: u32, j: u32) -> Ipv4Addr {
    let [_, b, c, _] = i.to_be_bytes();
    let [_, _, _, d] = (j + 1).to_be_bytes();
    Ipv4Addr::new(10, b, c, d)
}

/// Maglev keys of `n` backends, `::ffff:10.0.i.i` as 16 bytes: what the
/// Maglev benchmark and the build-time example both build tables for.
pub fn maglev_keys(n: usize) -> Vec<[u8; 16]> {
    (0..n)
        .map(|i| {
            let mut k = [0u8; 16];
            k[10] = 0xff;
            k[11] = 0xff;
            k[12] = 10;
            k[14..].copy_from_slice(&u16::try_from(i).unwrap_or(0).to_be_bytes());
            k
        })
        .collect()
}

/// The next-hop MAC of backend `j` of service `i`.
pub fn backend_mac(i: u32, j: u32) -> [u8; 6] {
    let [_, b, c, _] = i.to_be_bytes();
    let [_, _, _, d] = (j + 1).to_be_bytes();
    [0x02, 0x10, b, c, d, 0x01]
}

/// Default outer source addresses of the synthetic snapshots.
pub fn settings(mtu: u16) -> DataplaneSettings {
    DataplaneSettings {
        mtu,
        encap_source_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
        encap_source_v6: Some("fd00::2".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
    }
}

/// `services` services (`svc0`, `svc1`, ...), each at version 1 with
/// `backends` IPv4 backends, VIPs `vip_v4(i)` and `vip_v6(i)`, ports
/// tcp/80 and udp/53, and Maglev tables of `table_size` entries.
pub fn snapshot(
    services: u32,
    backends: u32,
    forwarding: Forwarding,
    table_size: usize,
) -> Result<Snapshot, SnapshotError> {
    let mut entries = Vec::new();
    let mut versions = Vec::new();
    for i in 0..services {
        entries.push(ServiceEntry {
            name: Arc::from(format!("svc{i}").as_str()),
            forwarding,
            ports: vec![
                PortSpec {
                    protocol: Protocol::Tcp,
                    port: 80,
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    port: 53,
                },
            ],
        });
        let bs: Vec<Backend> = (0..backends)
            .map(|j| Backend {
                addr: IpAddr::V4(backend_v4(i, j)),
                next_hop: Some(backend_mac(i, j)),
                healthy: true,
            })
            .collect();
        let maglev =
            bootstrap::build_maglev(table_size, &bs).map_err(|_| SnapshotError::NoService {
                slot: i,
                service: i,
            })?;
        versions.push(VersionEntry {
            slot: i,
            uid: u64::from(i) + 1,
            service: i,
            id: 1,
            state: VersionState::Active,
            vips: vec![IpAddr::V4(vip_v4(i)), IpAddr::V6(vip_v6(i))],
            backends: bs,
            maglev: Arc::new(maglev),
        });
    }
    Snapshot::new(1, settings(1500), entries, versions)
}

/// A pipeline with default timeouts and the given flow-table size.
pub fn pipeline(flow_table_size: usize) -> Pipeline {
    Pipeline::new(
        PipelineOptions {
            flow_table_size,
            timeouts: FlowTimeouts {
                tcp_idle_ns: 300_000_000_000,
                udp_idle_ns: 30_000_000_000,
                tcp_closing_ns: 10_000_000_000,
            },
            burst: 32,
        },
        Arc::new(WorkerStats::new()),
    )
}
