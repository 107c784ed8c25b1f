//! Runs the pipeline over a fixed workload for instruction counting with
//! callgrind (repeatable, unlike wall time on a shared machine):
//!
//! `valgrind --tool=callgrind target/release/examples/profile_pipeline 1000 10 20000`
//! (flows, services, bursts). Prints the instructions-per-packet divisor.
//! `MAGLEV=N` sets the Maglev table size (default 65537).

// Synthetic data: the narrowing casts below are on small counters.
#![allow(clippy::cast_possible_truncation)]

use cutover::control::config::Forwarding;
use cutover::dataplane::frame::PacketBuf;
use cutover::dataplane::pipeline::Verdict;
use cutover::dataplane::stats::DropReason;
use cutover::testkit;
use etherparse::PacketBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (flows, services, bursts) = match args[..] {
        [f, s, b] => (f, s, b),
        _ => (1000, 10, 20_000),
    };
    let baseline = std::env::var_os("BASELINE").is_some();
    // MAGLEV=251 shortens the setup of 10 000 services under valgrind; the
    // table is not read for a known flow.
    let table: usize = match std::env::var("MAGLEV") {
        Ok(v) => v.parse()?,
        Err(_) => 65537,
    };
    let snap = testkit::snapshot(services, 10, Forwarding::Ipip, table)?;
    let frames: Vec<Vec<u8>> = (0..flows)
        .map(|i| {
            let mut v = Vec::new();
            PacketBuilder::ethernet2(testkit::CLIENT_MAC, testkit::LB_MAC)
                .ipv4(
                    [172, 16 + (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    testkit::vip_v4(i % services).octets(),
                    64,
                )
                .tcp(1024 + (i % 50_000) as u16, 80, i, 1024)
                .write(&mut v, &[0u8; 10])
                .map(|_| v)
        })
        .collect::<Result<_, _>>()?;
    let mut pipe = testkit::pipeline(1 << 20);
    let mut bufs: Vec<PacketBuf> = (0..32).map(|_| PacketBuf::new()).collect();
    let mut verdicts = [Verdict::Drop(DropReason::NoService); 32];
    let mut next = 0usize;
    let mut forwarded = 0u64;
    for burst in 0..bursts {
        for b in bufs.iter_mut() {
            b.load(&frames[next]);
            next = (next + 1) % frames.len();
        }
        if baseline {
            for b in bufs.iter_mut() {
                let f = cutover::dataplane::frame::FrameBuf::bytes_mut(b);
                let mut dst = [0u8; 6];
                dst.copy_from_slice(&f[..6]);
                f.copy_within(6..12, 0);
                f[6..12].copy_from_slice(&dst);
            }
            forwarded += 32;
        } else {
            pipe.process(&snap, 1 + u64::from(burst) * 1000, &mut bufs, &mut verdicts);
            forwarded += verdicts.iter().filter(|v| **v == Verdict::Forward).count() as u64;
        }
    }
    println!("packets forwarded: {forwarded}");
    Ok(())
}
