//! `cutover run`: the appliance in the foreground.
//!
//! Builds the first snapshot from the configuration, starts one poll-mode
//! worker per configured core on the configured driver, and keeps the next
//! hops fresh from the kernel's neighbour table until SIGTERM or SIGINT;
//! then every worker finishes the burst in flight and stops.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::config::{Config, Driver, Idle};
use crate::control::health::{self, HealthChecker};
use crate::control::plane::ControlPlane;
use crate::control::vip_routes;
use crate::dataplane::pipeline::{Pipeline, PipelineOptions};
use crate::dataplane::stats::{DropReason, WorkerStats};
use crate::dataplane::worker::{self, IdleMode};
use crate::io::af_packet::{AfPacketOptions, AfPacketPort};
use crate::io::af_xdp::{AfXdpOptions, AfXdpPort, VipFilter};
use crate::io::affinity;
use crate::io::Port;
use crate::replay;
use crate::snapshot::SnapshotCell;
use crate::telemetry::metrics::{Collector, ControlCounts};

/// Packets per burst (SPEC §1: default 32).
pub const BURST: usize = 32;

/// How often the metrics are refreshed from the workers' counters.
const METRICS_PERIOD: Duration = Duration::from_millis(500);

/// How often the drain rule runs and next hops are refreshed.
const TICK_PERIOD: Duration = Duration::from_secs(1);

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "driver {0:?} is not available in this build (dpdk needs `cargo build --features dpdk`)"
    )]
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
    #[cfg(feature = "dpdk")]
    #[error("dpdk: {0}")]
    Dpdk(crate::io::dpdk::DpdkError),
    #[error("interface {ifname} queue {queue}: {source}")]
    XdpPort {
        ifname: String,
        queue: u32,
        source: crate::io::af_xdp::AfXdpError,
    },
    #[error(transparent)]
    Control(#[from] crate::control::plane::ControlError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("dns: {0}")]
    Dns(crate::dns::DnsError),
    #[error(transparent)]
    Telemetry(crate::telemetry::metrics::TelemetryError),
    #[error(transparent)]
    Api(crate::control::api::ApiError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("worker thread: {0}")]
    Thread(std::io::Error),
}

/// Runs until SIGTERM or SIGINT (or `stop` is set by the caller). SIGHUP
/// reloads the configuration from `config_path`.
pub fn run(cfg: &Config, config_path: &Path, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    match cfg.dataplane.driver {
        Driver::AfPacket | Driver::AfXdp => {}
        #[cfg(feature = "dpdk")]
        Driver::Dpdk => {}
        #[cfg(not(feature = "dpdk"))]
        Driver::Dpdk => return Err(RunError::DriverUnavailable(Driver::Dpdk)),
        Driver::Pcap => return Err(RunError::PcapDriver),
    }
    if cfg.dataplane.interfaces.is_empty() {
        return Err(RunError::NoInterface);
    }
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(RunError::Signal)?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(RunError::Signal)?;

    let workers = cfg.dataplane.workers.max(cfg.dataplane.interfaces.len());
    let stats: Vec<Arc<WorkerStats>> = (0..workers).map(|_| Arc::new(WorkerStats::new())).collect();
    let epoch = Instant::now();
    let plane = Arc::new(ControlPlane::start(
        cfg.clone(),
        config_path,
        stats.clone(),
        epoch,
    )?);
    let sees = match cfg.dataplane.driver {
        Driver::AfPacket => Some(vip_routes::KernelSees::Everything),
        Driver::AfXdp => Some(vip_routes::KernelSees::NotLive),
        _ => None,
    };
    if let Some(sees) = sees {
        let vips: Vec<_> = plane
            .cell()
            .load()
            .versions()
            .flat_map(|v| v.vips.iter().copied())
            .collect();
        for warning in vip_routes::check(cfg, &vips, sees) {
            tracing::warn!("{warning}");
        }
    }
    let handles = start_workers(cfg, &plane, &stats, epoch, &stop)?;
    let mut services = Services::default();
    let started = start_services(cfg, &plane, &stop, &mut services);
    if let Err(e) = started {
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        services.shutdown();
        return Err(e);
    }
    for v in plane.cell().load().versions() {
        tracing::info!(
            service = %plane.cell().load().service(v.service).map(|s| s.name.to_string()).unwrap_or_default(),
            version = v.id,
            vips = ?v.vips,
            backends = v.backends.len(),
            "serving"
        );
    }
    run_control_loop(&plane, &stop, &reload, services.health.as_ref());
    tracing::info!("stopping: finishing the bursts in flight");
    for h in handles {
        let _ = h.join();
    }
    services.shutdown();
    let drops: u64 = stats
        .iter()
        .map(|s| DropReason::ALL.iter().map(|r| s.dropped(*r)).sum::<u64>())
        .sum();
    let rx: u64 = stats.iter().map(|s| s.rx_packets.get()).sum();
    let tx: u64 = stats.iter().map(|s| s.tx_packets.get()).sum();
    tracing::info!(rx, tx, drops, "stopped");
    Ok(())
}

/// What runs beside the workers: DNS, the metrics collector, the admin API.
#[derive(Default)]
struct Services {
    health: Option<HealthChecker>,
    dns: Option<crate::dns::DnsServer>,
    collector: Option<JoinHandle<()>>,
    api: Option<crate::control::api::ApiServer>,
}

impl Services {
    fn shutdown(self) {
        // First, so that no change is accepted while the rest stops.
        if let Some(a) = self.api {
            a.shutdown();
        }
        if let Some(h) = self.health {
            h.shutdown();
        }
        if let Some(d) = self.dns {
            d.shutdown();
        }
        if let Some(c) = self.collector {
            let _ = c.join();
        }
    }
}

/// Starts DNS, metrics and the admin API. DNS names a version only once the
/// snapshot that carries it is the one the workers read: both read the same
/// cell.
fn start_services(
    cfg: &Config,
    plane: &Arc<ControlPlane>,
    stop: &Arc<AtomicBool>,
    out: &mut Services,
) -> Result<(), RunError> {
    if !cfg.dns.listen.is_empty() || cfg.dns.update.is_some() {
        let d = crate::dns::spawn(&cfg.dns, Arc::clone(plane.cell())).map_err(RunError::Dns)?;
        tracing::info!(listen = ?d.local_addrs(), zone = %cfg.dns.zone, "dns serving");
        out.dns = Some(d);
    }
    if let Some(addr) = cfg.metrics.listen {
        crate::telemetry::metrics::install(addr).map_err(RunError::Telemetry)?;
        tracing::info!(listen = %addr, "metrics at /metrics");
        let counts: Arc<dyn ControlCounts> = Arc::clone(plane) as Arc<dyn ControlCounts>;
        let c = Collector::new(
            Arc::clone(plane.cell()),
            plane.workers().to_vec(),
            Some(counts),
        );
        out.collector = Some(
            c.spawn(METRICS_PERIOD, Arc::clone(stop))
                .map_err(RunError::Telemetry)?,
        );
    }
    out.health = Some(
        HealthChecker::spawn(
            Arc::clone(plane),
            health::services_from(cfg),
            Arc::clone(stop),
        )
        .map_err(RunError::Thread)?,
    );
    let api = crate::control::api::serve(&cfg.admin, Arc::clone(plane)).map_err(RunError::Api)?;
    out.api = Some(api);
    Ok(())
}

/// The control plane's periodic work (drain rule, next hops) and SIGHUP
/// reloads, until `stop` is set.
fn run_control_loop(
    plane: &ControlPlane,
    stop: &AtomicBool,
    reload: &AtomicBool,
    health: Option<&HealthChecker>,
) {
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if reload.swap(false, Ordering::Relaxed) {
            match plane.reload() {
                Ok(_) => {
                    if let Some(h) = health {
                        h.update_services(health::services_from(&plane.config()));
                    }
                }
                Err(e) => tracing::error!(error = %e, "reload refused; the running state is kept"),
            }
        }
        if last_tick.elapsed() >= TICK_PERIOD {
            last_tick = Instant::now();
            plane.tick();
        }
    }
}

/// Opens one port per worker (workers are spread over the interfaces, each
/// interface's ports in one fanout group) and starts the worker threads.
fn start_workers(
    cfg: &Config,
    plane: &ControlPlane,
    stats: &[Arc<WorkerStats>],
    epoch: Instant,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, RunError> {
    let ifaces = &cfg.dataplane.interfaces;
    let workers = stats.len();
    let mut handles = Vec::with_capacity(workers);
    let mut filters: Vec<Arc<VipFilter>> = Vec::new();
    #[cfg(feature = "dpdk")]
    let eal = match cfg.dataplane.driver {
        // Once per process, before any worker thread exists: the EAL pins
        // the calling thread while it starts.
        Driver::Dpdk => Some(
            crate::io::dpdk::Eal::init(
                &cfg.dataplane
                    .dpdk
                    .as_ref()
                    .map(|d| d.eal_args.clone())
                    .unwrap_or_default(),
            )
            .map_err(RunError::Dpdk)?,
        ),
        _ => None,
    };
    for w in 0..workers {
        let ifname = &ifaces[w % ifaces.len()];
        let h = match cfg.dataplane.driver {
            #[cfg(feature = "dpdk")]
            Driver::Dpdk => {
                // `interfaces` names DPDK devices (`net_af_packet0`, a PCI
                // address); workers of one device take its queues in order.
                let per_device = u16::try_from(workers.div_ceil(ifaces.len())).unwrap_or(u16::MAX);
                let queue = u16::try_from(w / ifaces.len()).unwrap_or(u16::MAX);
                let opts = crate::io::dpdk::DpdkOptions {
                    queues: per_device,
                    ..Default::default()
                };
                let eal = eal
                    .as_ref()
                    .ok_or(RunError::DriverUnavailable(Driver::Dpdk))?;
                let port = crate::io::dpdk::DpdkPort::open(eal, ifname, queue, &opts)
                    .map_err(RunError::Dpdk)?;
                spawn_worker(cfg, port, w, plane.cell(), &stats[w], epoch, stop)?
            }
            Driver::AfXdp => {
                // One queue per worker: workers of one interface take its
                // queues 0, 1, ... in order.
                let queue = u32::try_from(w / ifaces.len()).unwrap_or(u32::MAX);
                let port =
                    AfXdpPort::open(ifname, queue, &AfXdpOptions::default()).map_err(|source| {
                        RunError::XdpPort {
                            ifname: ifname.clone(),
                            queue,
                            source,
                        }
                    })?;
                if !filters.iter().any(|f| Arc::ptr_eq(f, port.vip_filter())) {
                    filters.push(Arc::clone(port.vip_filter()));
                }
                spawn_worker(cfg, port, w, plane.cell(), &stats[w], epoch, stop)?
            }
            _ => {
                let opts = AfPacketOptions {
                    fanout_group: Some(fanout_group(w % ifaces.len())),
                    // Fragments are placed by their 3-tuple hash in the
                    // pipeline, so the kernel need not reassemble them
                    // (which would also drop datagrams larger than a buffer).
                    fanout_defrag: false,
                    ..AfPacketOptions::default()
                };
                let port = AfPacketPort::open(ifname, &opts).map_err(|source| RunError::Port {
                    ifname: ifname.clone(),
                    source,
                })?;
                spawn_worker(cfg, port, w, plane.cell(), &stats[w], epoch, stop)?
            }
        };
        handles.push(h);
    }
    if !filters.is_empty() {
        plane.set_vip_hook(Box::new(move |vips| {
            for f in &filters {
                if let Err(e) = f.set_vips(vips) {
                    tracing::error!(ifname = f.ifname(), error = %e, "XDP VIP map update failed");
                }
            }
        }));
    }
    Ok(handles)
}

/// Starts worker `w` on `port`, pinned to a core.
fn spawn_worker<P: Port + Send + 'static>(
    cfg: &Config,
    port: P,
    w: usize,
    cell: &Arc<SnapshotCell>,
    stats: &Arc<WorkerStats>,
    epoch: Instant,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>, RunError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pipe = Pipeline::new(
        PipelineOptions {
            flow_table_size: cfg.dataplane.flow_table_size,
            timeouts: replay::timeouts(cfg),
            burst: BURST,
        },
        Arc::clone(stats),
    );
    let cell = Arc::clone(cell);
    let stop = Arc::clone(stop);
    let core = w % cores;
    let idle = cfg.dataplane.idle;
    std::thread::Builder::new()
        .name(format!("cutover-w{w}"))
        .spawn(move || {
            if let Err(e) = affinity::pin_current_thread(core) {
                tracing::warn!(worker = w, core, error = %e, "could not pin worker");
            }
            let idle = match idle {
                Idle::Busy => IdleMode::Busy,
                Idle::Adaptive => IdleMode::Adaptive {
                    max_sleep: Duration::from_micros(500),
                },
            };
            let port = worker::run(port, &cell, &mut pipe, &stop, BURST, idle, epoch);
            drop(port);
        })
        .map_err(RunError::Thread)
}

/// A fanout group id unique to this process and interface.
fn fanout_group(iface: usize) -> u16 {
    let pid = std::process::id();
    let [_, _, hi, lo] = pid
        .wrapping_add(u32::try_from(iface).unwrap_or(0))
        .to_be_bytes();
    u16::from_be_bytes([hi, lo])
}
