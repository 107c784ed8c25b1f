//! cutover-dns-bench-server: the embedded authoritative DNS server alone,
//! for benchmarks (`scripts/bench-dns.sh`).
//!
//! Builds the snapshot `cutover run` would publish for `--services`
//! services (`testkit::snapshot`: `svc0`..`svcN-1`, each with one IPv4
//! and one IPv6 VIP, L2 DSR) and serves it with `cutover::dns::spawn`
//! exactly as `cutover run` does, on `--listen` (UDP and TCP), until
//! SIGTERM/SIGINT or `--duration` seconds. On exit it prints the
//! responses it sent per response code.
//!
//! The server runs on one thread with a current-thread tokio runtime;
//! pin the process with `taskset -c 0` to measure one core.
//!
//! ```text
//! taskset -c 0 cutover-dns-bench-server --listen 127.0.0.1:5301 --services 1000
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use cutover::control::config::{Dns, Forwarding};
use cutover::dns::Rcode;
use cutover::snapshot::SnapshotCell;
use cutover::testkit;

#[derive(Debug, Parser)]
#[command(
    name = "cutover-dns-bench-server",
    about = "The embedded authoritative DNS server on a synthetic snapshot"
)]
struct Args {
    /// UDP and TCP listen address (loopback for benchmarks).
    #[arg(long, default_value = "127.0.0.1:5301")]
    listen: SocketAddr,
    /// Services in the snapshot: svc0 .. svcN-1.
    #[arg(long, default_value_t = 1000)]
    services: u32,
    /// Backends per service (they do not show in DNS).
    #[arg(long, default_value_t = 2)]
    backends: u32,
    /// The zone, fully qualified.
    #[arg(long, default_value = "svc.example.")]
    zone: String,
    /// TTL of every record, seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// Stop after this many seconds (0: only on SIGTERM/SIGINT).
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install a signal handler")?;
    }
    let snapshot = testkit::snapshot(args.services, args.backends, Forwarding::L2dsr, 251)
        .context("cannot build the snapshot")?;
    let cell = Arc::new(SnapshotCell::new(snapshot));
    let cfg = Dns {
        listen: vec![args.listen],
        zone: args.zone.clone(),
        ttl: args.ttl,
        update: None,
    };
    let server = cutover::dns::spawn(&cfg, cell).context("cannot start the dns server")?;
    let addrs: Vec<String> = server
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    // One line a script can wait for.
    println!(
        "listening on {} zone {} services {}",
        addrs.join(","),
        args.zone,
        args.services
    );
    let deadline = (args.duration > 0).then(|| Instant::now() + Duration::from_secs(args.duration));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let counts: Vec<String> = Rcode::ALL
        .iter()
        .map(|&r| format!("{}={}", r.as_str(), server.queries(r)))
        .collect();
    println!(
        "responses {} ignored={}",
        counts.join(" "),
        server.ignored()
    );
    server.shutdown();
    Ok(())
}
