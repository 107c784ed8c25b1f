//! Packets per second per core through the whole pipeline, in bursts of 32
//! 64-byte TCP frames, next to a baseline that only swaps the Ethernet
//! addresses of the same frames. Both copy each frame into its buffer
//! first (as a receive would), so the ratio isolates the pipeline's work.
//!
//! `cargo bench --bench pipeline`; numbers go to docs/performance.md.

// Synthetic test data: the narrowing casts below are on small counters.
#![allow(clippy::cast_possible_truncation)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use cutover::control::config::Forwarding;
use cutover::dataplane::frame::{FrameBuf, PacketBuf};
use cutover::dataplane::pipeline::Verdict;
use cutover::dataplane::stats::DropReason;
use cutover::testkit;
use etherparse::PacketBuilder;

const BURST: usize = 32;

/// `flows` distinct 64-byte TCP frames spread over `services` VIPs.
fn frames(flows: u32, services: u32) -> Vec<Vec<u8>> {
    (0..flows)
        .map(|i| {
            let svc = i % services;
            let src = [172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let mut v = Vec::with_capacity(64);
            PacketBuilder::ethernet2(testkit::CLIENT_MAC, testkit::LB_MAC)
                .ipv4(src, testkit::vip_v4(svc).octets(), 64)
                .tcp(1024 + (i % 50_000) as u16, 80, i, 1024)
                .write(&mut v, &[0u8; 10])
                .expect("frame");
            assert_eq!(v.len(), 64);
            v
        })
        .collect()
}

fn load(bufs: &mut [PacketBuf], frames: &[Vec<u8>], next: &mut usize) {
    for b in bufs.iter_mut() {
        b.load(&frames[*next]);
        *next += 1;
        if *next == frames.len() {
            *next = 0;
        }
    }
}

/// Runs every frame through once (filling the flow table) and checks that
/// each is forwarded: a benchmark of drops would measure nothing useful.
fn warm(
    pipe: &mut cutover::dataplane::pipeline::Pipeline,
    snap: &cutover::snapshot::Snapshot,
    frames: &[Vec<u8>],
) {
    let mut verdicts = [Verdict::Drop(DropReason::NoService); BURST];
    for chunk in frames.chunks(BURST) {
        let mut bufs: Vec<PacketBuf> = chunk.iter().map(|f| PacketBuf::from_slice(f)).collect();
        let n = bufs.len();
        pipe.process(snap, 1, &mut bufs, &mut verdicts[..n]);
        assert!(
            verdicts[..n].iter().all(|v| *v == Verdict::Forward),
            "{:?}",
            &verdicts[..n]
        );
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline_64B_burst32");
    group.throughput(Throughput::Elements(BURST as u64));

    let base_frames = frames(1000, 10);
    group.bench_function("baseline_swap_macs", |b| {
        let mut bufs: Vec<PacketBuf> = (0..BURST).map(|_| PacketBuf::new()).collect();
        let mut next = 0;
        b.iter(|| {
            load(&mut bufs, &base_frames, &mut next);
            for p in bufs.iter_mut() {
                let f = p.bytes_mut();
                let mut dst = [0u8; 6];
                dst.copy_from_slice(&f[..6]);
                f.copy_within(6..12, 0);
                f[6..12].copy_from_slice(&dst);
            }
            black_box(&mut bufs);
        })
    });

    for services in [10u32, 10_000] {
        let snap = testkit::snapshot(services, 10, Forwarding::Ipip, 65537).expect("snapshot");
        for flows in [1u32, 1000, 100_000] {
            let frames = frames(flows, services);
            let id = BenchmarkId::new(format!("ipip_{services}svc"), format!("{flows}flows"));
            group.bench_with_input(id, &frames, |b, frames| {
                let mut pipe = testkit::pipeline(1 << 20);
                warm(&mut pipe, &snap, frames);
                let mut bufs: Vec<PacketBuf> = (0..BURST).map(|_| PacketBuf::new()).collect();
                let mut verdicts = [Verdict::Drop(DropReason::NoService); BURST];
                let mut next = 0;
                let mut now = 1u64;
                b.iter(|| {
                    load(&mut bufs, frames, &mut next);
                    now += 1000;
                    pipe.process(&snap, now, &mut bufs, &mut verdicts);
                    black_box(&verdicts);
                })
            });
        }
    }
    // l2dsr at 1 000 flows, 10 services: the cheapest rewrite.
    let snap = testkit::snapshot(10, 10, Forwarding::L2dsr, 65537).expect("snapshot");
    let frames = frames(1000, 10);
    group.bench_function(BenchmarkId::new("l2dsr_10svc", "1000flows"), |b| {
        let mut pipe = testkit::pipeline(1 << 20);
        warm(&mut pipe, &snap, &frames);
        let mut bufs: Vec<PacketBuf> = (0..BURST).map(|_| PacketBuf::new()).collect();
        let mut verdicts = [Verdict::Drop(DropReason::NoService); BURST];
        let mut next = 0;
        let mut now = 1u64;
        b.iter(|| {
            load(&mut bufs, &frames, &mut next);
            now += 1000;
            pipe.process(&snap, now, &mut bufs, &mut verdicts);
            black_box(&verdicts);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
