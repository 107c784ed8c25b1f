//! The Prometheus exporter and the collector that feeds it.
//!
//! Counters are published as absolute values summed over the workers'
//! per-worker counters, so the exporter never adds anything per packet.
//! A version that leaves the snapshot (released) keeps its last counts and
//! its `cutover_version_state` flips to `released`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use metrics::{counter, gauge};

use crate::dataplane::stats::{Counter, DropReason, WorkerStats};
use crate::snapshot::{SnapshotCell, VersionState};

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("metrics listener on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
    #[error("collector thread: {0}")]
    Thread(std::io::Error),
}

/// Starts the Prometheus exporter on `listen` (`/metrics`, text format) and
/// makes it the process's `metrics` recorder.
pub fn install(listen: SocketAddr) -> Result<(), TelemetryError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .map_err(|e| TelemetryError::Listen {
            addr: listen,
            message: e.to_string(),
        })
}

/// Control-plane counts that are not in the workers' memory: rollouts and
/// releases. Implemented by the version manager.
pub trait ControlCounts: Send + Sync {
    /// `(service, count)` of rollouts so far.
    fn rollouts(&self) -> Vec<(String, u64)>;
    /// `(service, reason, count)` of releases so far.
    fn releases(&self) -> Vec<(String, String, u64)>;
}

/// Labels of one VIP of one version.
type VipLabels = (String, String, String);

/// Reads the workers' counters and the current snapshot into the `metrics`
/// recorder.
pub struct Collector {
    cell: Arc<SnapshotCell>,
    workers: Vec<Arc<WorkerStats>>,
    control: Option<Arc<dyn ControlCounts>>,
    /// VIPs seen in earlier snapshots, so a released one flips its state.
    seen: HashMap<VipLabels, VersionState>,
}

const STATES: [VersionState; 3] = [
    VersionState::Active,
    VersionState::Draining,
    VersionState::Released,
];

impl Collector {
    /// A collector over these workers' counters.
    pub fn new(
        cell: Arc<SnapshotCell>,
        workers: Vec<Arc<WorkerStats>>,
        control: Option<Arc<dyn ControlCounts>>,
    ) -> Collector {
        Collector {
            cell,
            workers,
            control,
            seen: HashMap::new(),
        }
    }

    /// Publishes every metric once.
    pub fn collect(&mut self) {
        let snap = self.cell.load_full();
        let mut live: HashMap<VipLabels, VersionState> = HashMap::new();
        for v in snap.versions() {
            let service = snap
                .service(v.service)
                .map(|s| s.name.to_string())
                .unwrap_or_default();
            let version = v.id.to_string();
            let (mut packets, mut bytes, mut flows) = (0u64, 0u64, 0u64);
            for w in &self.workers {
                if let Some(c) = w.version(v.slot, v.uid) {
                    packets += c.packets.get();
                    bytes += c.bytes.get();
                    flows += c.active_flows.get();
                }
            }
            let labels = [("service", service.clone()), ("version", version.clone())];
            counter!("cutover_packets_total", &labels).absolute(packets);
            counter!("cutover_bytes_total", &labels).absolute(bytes);
            gauge!("cutover_active_flows", &labels).set(flows as f64);
            for b in &v.backends {
                gauge!(
                    "cutover_backend_healthy",
                    "service" => service.clone(),
                    "version" => version.clone(),
                    "backend" => b.addr.to_string()
                )
                .set(if b.healthy { 1.0 } else { 0.0 });
            }
            for vip in &v.vips {
                live.insert((service.clone(), version.clone(), vip.to_string()), v.state);
            }
        }
        for key in self.seen.keys() {
            live.entry(key.clone()).or_insert(VersionState::Released);
        }
        for ((service, version, vip), state) in &live {
            for s in STATES {
                gauge!(
                    "cutover_version_state",
                    "service" => service.clone(),
                    "version" => version.clone(),
                    "vip" => vip.clone(),
                    "state" => s.as_str()
                )
                .set(if s == *state { 1.0 } else { 0.0 });
            }
        }
        self.seen = live;
        for r in DropReason::ALL {
            let n: u64 = self.workers.iter().map(|w| w.dropped(r)).sum();
            counter!("cutover_drops_total", "reason" => r.as_str()).absolute(n);
        }
        // ICMP the data plane sent itself ("too big" for a packet it could
        // not encapsulate, echo replies) and path-MTU errors it passed on
        // to a backend.
        let icmp = |read: fn(&WorkerStats) -> &Counter| -> u64 {
            self.workers.iter().map(|w| read(w).get()).sum()
        };
        counter!("cutover_icmp_total", "kind" => "too_big").absolute(icmp(|w| &w.icmp_sent));
        counter!("cutover_icmp_total", "kind" => "forwarded").absolute(icmp(|w| &w.icmp_forwarded));
        counter!("cutover_icmp_total", "kind" => "echo_reply").absolute(icmp(|w| &w.echo_replies));
        for (i, w) in self.workers.iter().enumerate() {
            let worker = i.to_string();
            counter!("cutover_worker_rx_packets_total", "worker" => worker.clone())
                .absolute(w.rx_packets.get());
            counter!("cutover_worker_tx_packets_total", "worker" => worker.clone())
                .absolute(w.tx_packets.get());
            counter!("cutover_worker_idle_polls_total", "worker" => worker)
                .absolute(w.idle_polls.get());
        }
        if let Some(control) = &self.control {
            for (service, n) in control.rollouts() {
                counter!("cutover_rollouts_total", "service" => service).absolute(n);
            }
            for (service, reason, n) in control.releases() {
                counter!("cutover_releases_total", "service" => service, "reason" => reason)
                    .absolute(n);
            }
        }
    }

    /// Collects every `period` on a thread of its own until `stop` is set.
    pub fn spawn(
        mut self,
        period: Duration,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<()>, TelemetryError> {
        std::thread::Builder::new()
            .name("cutover-metrics".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    self.collect();
                    let mut slept = Duration::ZERO;
                    while slept < period && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                        slept += Duration::from_millis(50);
                    }
                }
                self.collect();
            })
            .map_err(TelemetryError::Thread)
    }
}
