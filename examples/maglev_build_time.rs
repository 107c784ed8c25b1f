//! Best-of-N timing of `MaglevTable::build` for `M = 65537`, steadier than
//! criterion's mean on a shared machine: the minimum shows what the code
//! can do, the median how noisy the run was.
//!
//! Run: `cargo run --release --example maglev_build_time -- [backends] [builds]`
//! (defaults 10 and 400), pinned with `taskset -c 1` for comparisons.

use std::hint::black_box;
use std::time::Instant;

use cutover::dataplane::maglev::{MaglevTable, DEFAULT_TABLE_SIZE};

fn main() {
    let mut args = std::env::args().skip(1);
    let backends: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let builds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400);
    let keys = cutover::testkit::maglev_keys(backends);
    let on = vec![true; backends];
    let mut times = Vec::with_capacity(builds);
    let mut check = 0u64;
    for _ in 0..builds.max(1) {
        let t = Instant::now();
        let table = MaglevTable::build(DEFAULT_TABLE_SIZE, black_box(&keys), &on);
        let elapsed = t.elapsed();
        match table {
            Ok(t) => check = check.wrapping_add(u64::from(t.entries()[12345])),
            Err(e) => {
                eprintln!("build failed: {e}");
                std::process::exit(1);
            }
        }
        times.push(elapsed.as_nanos());
    }
    times.sort_unstable();
    let min = times[0] as f64 / 1e3;
    let median = times[times.len() / 2] as f64 / 1e3;
    println!(
        "backends={backends} builds={builds} min={min:.1}us median={median:.1}us check={check}"
    );
}
