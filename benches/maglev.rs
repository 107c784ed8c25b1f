//! Cost of the two lookups of a packet's journey: building a Maglev table
//! (control plane, once per health change), and per packet the flow hash,
//! the Maglev lookup and a flow-table hit.
//!
//! Per-packet groups process a burst of `BURST` packets per iteration and
//! report elements (packets) per second; each group has a baseline that
//! only reads the burst, so results can be read as ratios on a noisy
//! machine. Run: `cargo bench --bench maglev`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use cutover::dataplane::flow::{FlowKey, FlowTable, FlowTimeouts, TcpFlags, VersionRef};
use cutover::dataplane::maglev::{MaglevTable, DEFAULT_TABLE_SIZE};

const BURST: usize = 32;

/// `n` flows from distinct clients and ports to one VIP.
fn flows(n: usize) -> Vec<FlowKey> {
    (0..n)
        .map(|i| {
            let c = u32::try_from(i).unwrap_or(0).to_be_bytes();
            FlowKey::v4(
                [10, c[1], c[2], c[3]],
                [203, 0, 113, 7],
                6,
                u16::from(c[3]) | 0x8000,
                443,
            )
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build_65537");
    g.bench_function("baseline_alloc_fill", |b| {
        b.iter(|| black_box(vec![u16::MAX; DEFAULT_TABLE_SIZE]))
    });
    for n in [10, 100] {
        let keys = cutover::testkit::maglev_keys(n);
        let on = vec![true; n];
        g.bench_with_input(BenchmarkId::new("backends", n), &n, |b, _| {
            b.iter(|| MaglevTable::build(DEFAULT_TABLE_SIZE, black_box(&keys), &on))
        });
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let keys = cutover::testkit::maglev_keys(10);
    let table = MaglevTable::build(DEFAULT_TABLE_SIZE, &keys, &[true; 10]).unwrap_or_else(|e| {
        panic!("bench table: {e}");
    });
    let burst = flows(BURST);
    let hashes: Vec<u64> = burst.iter().map(FlowKey::flow_hash).collect();

    let mut g = c.benchmark_group("per_packet_burst32");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("baseline_read_burst", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in black_box(&burst) {
                acc = acc.wrapping_add(u64::from(k.src_port));
            }
            acc
        })
    });
    g.bench_function("flow_hash", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in black_box(&burst) {
                acc ^= k.flow_hash();
            }
            acc
        })
    });
    g.bench_function("maglev_lookup", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for &h in black_box(&hashes) {
                acc += u32::from(table.lookup(h).unwrap_or(0));
            }
            acc
        })
    });
    g.bench_function("flow_hash_and_maglev_lookup", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for k in black_box(&burst) {
                acc += u32::from(table.lookup(k.flow_hash()).unwrap_or(0));
            }
            acc
        })
    });

    // A flow-table hit with 200k live flows in a 256k table, so nodes and
    // index are mostly out of L2 as in production.
    let live = flows(200_000);
    let mut ft = FlowTable::new(1 << 18, 16, FlowTimeouts::default());
    let v = VersionRef { slot: 1, uid: 1 };
    for (i, k) in live.iter().enumerate() {
        ft.insert(*k, v, u16::try_from(i % 10).unwrap_or(0), 1, TcpFlags::SYN);
    }
    let mut next = 0usize;
    let mut now = 2u64;
    g.bench_function("flow_table_hit_200k", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for _ in 0..BURST {
                next = (next + 7919) % live.len();
                let e = ft.lookup(&live[next], now, TcpFlags::ACK);
                acc += u32::from(e.map_or(0, |e| e.backend));
            }
            now += 1;
            acc
        })
    });
    // The same probe without the LRU move-to-front: what exact LRU costs.
    g.bench_function("flow_table_peek_200k", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for _ in 0..BURST {
                next = (next + 7919) % live.len();
                let e = ft.peek(&live[next], now);
                acc += u32::from(e.map_or(0, |e| e.backend));
            }
            acc
        })
    });
    // A table that fits in L1/L2: the instruction cost of a hit.
    let small = flows(1000);
    let mut fs = FlowTable::new(1024, 16, FlowTimeouts::default());
    for k in &small {
        fs.insert(*k, v, 1, 1, TcpFlags::SYN);
    }
    g.bench_function("flow_table_hit_1k", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for _ in 0..BURST {
                next = (next + 7919) % small.len();
                let e = fs.lookup(&small[next], now, TcpFlags::ACK);
                acc += u32::from(e.map_or(0, |e| e.backend));
            }
            now += 1;
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);
