//! What a DPDK worker pays per mbuf with and without an lcore id: bursts of
//! 32 `alloc` then 32 frees (the RX refill and TX completion a forwarding
//! worker causes), on a worker thread that is a plain thread (no lcore:
//! every get and put goes to the pool's shared ring) and on one registered
//! as an lcore by `Port::attach_thread` (the per-lcore cache serves it).
//! The EAL runs on `net_null` without hugepages or PCI; the timed loop runs
//! on a thread of its own, since `rte_eal_init` makes the calling thread
//! lcore 0.
//!
//! `cargo bench --features dpdk --bench dpdk_mbuf`; numbers go to
//! docs/performance.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use cutover::io::dpdk::{DpdkOptions, DpdkPort, Eal, Mbuf};
use cutover::io::Port;

const BURST: usize = 32;

/// `iters` bursts on a new thread, registered as an lcore when `lcore`;
/// the time of the loop alone.
fn run(port: DpdkPort, iters: u64, lcore: bool) -> (DpdkPort, Duration) {
    std::thread::spawn(move || {
        let mut port = port;
        if lcore {
            port.attach_thread();
            assert!(port.lcore().is_some(), "no lcore id left");
        }
        let mut bufs: Vec<Mbuf> = Vec::with_capacity(BURST);
        let start = Instant::now();
        for _ in 0..iters {
            for _ in 0..BURST {
                if let Some(m) = port.alloc() {
                    bufs.push(m);
                }
            }
            for m in bufs.drain(..) {
                port.free(black_box(m));
            }
        }
        let took = start.elapsed();
        port.detach_thread();
        (port, took)
    })
    .join()
    .expect("bench thread")
}

fn bench(c: &mut Criterion) {
    let args: Vec<String> = [
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-l",
        "0",
        "--log-level=lib.eal:warning",
        "-d",
        "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0",
        "--vdev=net_null0",
    ]
    .map(String::from)
    .to_vec();
    let eal = Eal::init(&args).expect("EAL init");
    let opts = DpdkOptions::default();
    let mut port = Some(DpdkPort::open(&eal, "net_null0", 0, &opts).expect("open net_null0"));
    let mut group = c.benchmark_group("dpdk_mbuf_alloc_free_32");
    group.throughput(Throughput::Elements(BURST as u64));
    for (name, lcore) in [("plain_thread", false), ("lcore", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (p, took) = run(port.take().expect("port"), iters, lcore);
                port = Some(p);
                took
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
