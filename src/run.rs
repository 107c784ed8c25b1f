//! `cutover run`: the appliance in the foreground.
//!
//! Builds the first snapshot from the configuration, starts one poll-mode
//! worker per configured core on the configured driver, and keeps the next
//! hops fresh from the kernel's neighbour table until SIGTERM or SIGINT;
//! then every worker finishes the burst in flight and stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::config::{Config, Driver};
use crate::control::{bootstrap, neighbors};
use crate::dataplane::pipeline::{Pipeline, PipelineOptions};
use crate::dataplane::stats::{DropReason, WorkerStats};
use crate::dataplane::worker::{self, IdleMode};
use crate::io::af_packet::{AfPacketOptions, AfPacketPort};
use crate::io::affinity;
use crate::replay;
use crate::snapshot::SnapshotCell;
use crate::telemetry::metrics::Collector;

/// Packets per burst (SPEC §1: default 32).
pub const BURST: usize = 32;

/// How often the metrics are refreshed from the workers' counters.
const METRICS_PERIOD: Duration = Duration::from_millis(500);

/// How often next hops are refreshed from the kernel.
const NEIGHBOR_PERIOD: Duration = Duration::from_secs(1);

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("driver {0:?} is not available in this build yet; use af_packet")]
    DriverUnavailable(Driver),
    #[error("driver pcap reads capture files: use `cutover replay`")]
    PcapDriver,
    #[error("[dataplane] interfaces is empty: name the interface(s) to serve on")]
    NoInterface,
    #[error("interface {ifname}: {source}")]
    Port {
        ifname: String,
        source: crate::io::af_packet::AfPacketError,
    },
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("dns: {0}")]
    Dns(crate::dns::DnsError),
    #[error(transparent)]
    Telemetry(crate::telemetry::metrics::TelemetryError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("worker thread: {0}")]
    Thread(std::io::Error),
}

/// The running appliance's shared state, for the control plane.
pub struct Appliance {
    pub cell: Arc<SnapshotCell>,
    pub stats: Vec<Arc<WorkerStats>>,
    pub epoch: Instant,
}

/// Runs until SIGTERM or SIGINT (or `stop` is set by the caller).
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    match cfg.dataplane.driver {
        Driver::AfPacket => {}
        Driver::Pcap => return Err(RunError::PcapDriver),
        other => return Err(RunError::DriverUnavailable(other)),
    }
    if cfg.dataplane.interfaces.is_empty() {
        return Err(RunError::NoInterface);
    }
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(RunError::Signal)?;
    }
    let first = bootstrap::initial_snapshot(cfg)?;
    let first = neighbors::refresh(cfg, &first, &neighbors::kernel_neighbors())?.unwrap_or(first);
    let app = Appliance {
        cell: Arc::new(SnapshotCell::new(first)),
        stats: Vec::new(),
        epoch: Instant::now(),
    };
    let (app, handles) = start_workers(cfg, app, &stop)?;
    // DNS names a version only once the snapshot that carries it is the
    // one the workers read: both read the same cell.
    let dns = if cfg.dns.listen.is_empty() && cfg.dns.update.is_none() {
        None
    } else {
        let server = crate::dns::spawn(&cfg.dns, Arc::clone(&app.cell));
        match server {
            Ok(s) => {
                tracing::info!(listen = ?s.local_addrs(), zone = %cfg.dns.zone, "dns serving");
                Some(s)
            }
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for h in handles {
                    let _ = h.join();
                }
                return Err(RunError::Dns(e));
            }
        }
    };
    for v in app.cell.load().versions() {
        tracing::info!(
            service = %app.cell.load().service(v.service).map(|s| s.name.to_string()).unwrap_or_default(),
            version = v.id,
            vips = ?v.vips,
            backends = v.backends.len(),
            "serving"
        );
    }
    let collector = match cfg.metrics.listen {
        Some(addr) => {
            crate::telemetry::metrics::install(addr).map_err(RunError::Telemetry)?;
            tracing::info!(listen = %addr, "metrics at /metrics");
            let c = Collector::new(Arc::clone(&app.cell), app.stats.clone(), None);
            Some(
                c.spawn(METRICS_PERIOD, Arc::clone(&stop))
                    .map_err(RunError::Telemetry)?,
            )
        }
        None => None,
    };
    run_control_loop(cfg, &app, &stop);
    tracing::info!("stopping: finishing the bursts in flight");
    if let Some(c) = collector {
        let _ = c.join();
    }
    if let Some(d) = dns {
        d.shutdown();
    }
    for h in handles {
        let _ = h.join();
    }
    let drops: u64 = app
        .stats
        .iter()
        .map(|s| DropReason::ALL.iter().map(|r| s.dropped(*r)).sum::<u64>())
        .sum();
    let rx: u64 = app.stats.iter().map(|s| s.rx_packets.get()).sum();
    let tx: u64 = app.stats.iter().map(|s| s.tx_packets.get()).sum();
    tracing::info!(rx, tx, drops, "stopped");
    Ok(())
}

/// Keeps the next hops fresh until `stop` is set.
fn run_control_loop(cfg: &Config, app: &Appliance, stop: &AtomicBool) {
    let mut last_refresh = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if last_refresh.elapsed() >= NEIGHBOR_PERIOD {
            last_refresh = Instant::now();
            let current = app.cell.load_full();
            match neighbors::refresh(cfg, &current, &neighbors::kernel_neighbors()) {
                Ok(Some(next)) => {
                    tracing::info!(generation = next.generation, "next hops changed");
                    app.cell.publish(next);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "next-hop refresh failed"),
            }
        }
    }
}

/// Opens one port per worker (workers are spread over the interfaces, each
/// interface's ports in one fanout group) and starts the worker threads.
fn start_workers(
    cfg: &Config,
    mut app: Appliance,
    stop: &Arc<AtomicBool>,
) -> Result<(Appliance, Vec<JoinHandle<()>>), RunError> {
    let ifaces = &cfg.dataplane.interfaces;
    let workers = cfg.dataplane.workers.max(ifaces.len());
    let mut handles = Vec::with_capacity(workers);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for w in 0..workers {
        let ifname = &ifaces[w % ifaces.len()];
        let group = fanout_group(w % ifaces.len());
        let opts = AfPacketOptions {
            fanout_group: Some(group),
            // Fragments are placed by their 3-tuple hash in the pipeline,
            // so the kernel need not reassemble them (which would also drop
            // datagrams larger than a buffer).
            fanout_defrag: false,
            ..AfPacketOptions::default()
        };
        let port = AfPacketPort::open(ifname, &opts).map_err(|source| RunError::Port {
            ifname: ifname.clone(),
            source,
        })?;
        let stats = Arc::new(WorkerStats::new());
        app.stats.push(Arc::clone(&stats));
        let mut pipe = Pipeline::new(
            PipelineOptions {
                flow_table_size: cfg.dataplane.flow_table_size,
                timeouts: replay::timeouts(cfg),
                burst: BURST,
            },
            stats,
        );
        let cell = Arc::clone(&app.cell);
        let stop = Arc::clone(stop);
        let epoch = app.epoch;
        let core = w % cores;
        let h = std::thread::Builder::new()
            .name(format!("cutover-w{w}"))
            .spawn(move || {
                if let Err(e) = affinity::pin_current_thread(core) {
                    tracing::warn!(worker = w, core, error = %e, "could not pin worker");
                }
                let idle = IdleMode::Adaptive {
                    max_sleep: Duration::from_micros(500),
                };
                let port = worker::run(port, &cell, &mut pipe, &stop, BURST, idle, epoch);
                drop(port);
            })
            .map_err(RunError::Thread)?;
        handles.push(h);
    }
    Ok((app, handles))
}

/// A fanout group id unique to this process and interface.
fn fanout_group(iface: usize) -> u16 {
    let pid = std::process::id();
    let [_, _, hi, lo] = pid
        .wrapping_add(u32::try_from(iface).unwrap_or(0))
        .to_be_bytes();
    u16::from_be_bytes([hi, lo])
}
