//! Active health checks (SPEC §2): a TCP connect to every backend of every
//! live version, per service, every `interval`.
//!
//! The checker runs on its own thread with a current-thread tokio runtime,
//! so hundreds of connects in flight cost one thread and no worker core.
//! Its only output is [`ControlPlane::set_health`] on a change of verdict:
//! the data plane never waits for it, it just reads the next snapshot
//! (the unhealthy backend's versions get a Maglev table without it).
//!
//! * The set of backends is read from the published snapshot at every
//!   round, so a rollout's new backends are checked from its next round
//!   and a released version's gone backends are forgotten.
//! * Verdicts follow the rise/fall rule of [`Verdict`]; a backend first
//!   seen starts with the verdict the snapshot gives it (healthy for a
//!   configured backend; whatever the state file said after a restart).
//! * Work is bounded: at most one probe in flight per (service, backend)
//!   and at most [`MAX_IN_FLIGHT`] connects at once (each `timeout` long).
//! * When a version in the snapshot disagrees with the checker's verdict
//!   (a rollout copied a stale flag, or a `set_health` failed), the verdict
//!   is asserted again at the next round.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::control::config::{Config, HealthCheck};
use crate::control::plane::ControlPlane;

/// Connects in flight at once, over all services: bounds the descriptors
/// and SYNs a round may cost when thousands of backends are configured.
pub const MAX_IN_FLIGHT: usize = 256;

/// How often the checker looks at its stop flags while idle: a stop is
/// honoured within this (plus a `set_health` already running).
const STOP_POLL: Duration = Duration::from_millis(25);

/// The checks of every service of `cfg` that has one (`port` set), as
/// [`HealthChecker::spawn`] and [`HealthChecker::update_services`] take
/// them.
pub fn services_from(cfg: &Config) -> Vec<(String, HealthCheck)> {
    cfg.services
        .iter()
        .filter(|s| s.health.port.is_some())
        .map(|s| (s.name.clone(), s.health.clone()))
        .collect()
}

/// The rise/fall rule for one backend: `fall` consecutive failures make a
/// healthy backend unhealthy, `rise` consecutive successes make an
/// unhealthy one healthy; a result that agrees with the verdict resets the
/// streak. A pure value, so the rule is tested without sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    healthy: bool,
    /// Consecutive results that disagree with `healthy`.
    streak: u32,
}

impl Verdict {
    /// A verdict with no results against it yet.
    pub fn new(healthy: bool) -> Verdict {
        Verdict { healthy, streak: 0 }
    }

    /// The current verdict.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Folds one probe result in; true when the verdict flipped. A
    /// threshold of 0 acts as 1 (the configuration refuses 0 anyway).
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok == self.healthy {
            self.streak = 0;
            return false;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if self.healthy { fall } else { rise };
        if self.streak >= needed.max(1) {
            self.healthy = ok;
            self.streak = 0;
            true
        } else {
            false
        }
    }
}

/// What the checker thread and its handle share.
#[derive(Default)]
struct Shared {
    /// Probes completed (success or failure).
    checks: AtomicU64,
    /// Probes that failed.
    failures: AtomicU64,
    /// Set by the handle (shutdown, drop); the caller's flag also stops.
    quit: AtomicBool,
    /// The verdicts, for [`HealthChecker::state`].
    states: Mutex<HashMap<(String, IpAddr), bool>>,
    /// A new service list from [`HealthChecker::update_services`], taken
    /// at the start of the next loop turn.
    update: Mutex<Option<Vec<(String, HealthCheck)>>>,
}

/// Locks `m`, ignoring poisoning: every value behind these locks is
/// replaced whole, so a panic elsewhere cannot leave one half-written.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running health checker; stopped and joined on drop.
///
/// Started by [`HealthChecker::spawn`]; it stops when the caller's `stop`
/// flag is set, or on [`HealthChecker::shutdown`] / drop.
pub struct HealthChecker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl HealthChecker {
    /// Starts checking `services` (name and check; those with `port: None`
    /// are ignored, their backends keep counting as healthy) on a thread
    /// named `cutover-health`. Every service's first round starts at once.
    /// Fails only when the runtime or the thread cannot be created.
    pub fn spawn(
        plane: Arc<ControlPlane>,
        services: Vec<(String, HealthCheck)>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<HealthChecker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let shared = Arc::new(Shared::default());
        let mut checker = Checker {
            plane,
            shared: Arc::clone(&shared),
            services: HashMap::new(),
            targets: HashMap::new(),
            probes: JoinSet::new(),
            running: HashMap::new(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        };
        checker.set_services(services, Instant::now());
        let thread = std::thread::Builder::new()
            .name("cutover-health".into())
            .spawn(move || {
                runtime.block_on(checker.run(&stop));
                // Dropping the runtime cancels the probes still in flight.
            })?;
        Ok(HealthChecker {
            shared,
            thread: Some(thread),
        })
    }

    /// Replaces the checked services, e.g. after a reload. Services kept
    /// keep their verdicts; a service no longer checked gets every backend
    /// it had marked unhealthy marked healthy again (unchecked backends
    /// count as healthy). Applied within `STOP_POLL` (25 ms).
    pub fn update_services(&self, services: Vec<(String, HealthCheck)>) {
        *locked(&self.shared.update) = Some(services);
    }

    /// Probes completed so far, successful or not.
    pub fn checks(&self) -> u64 {
        self.shared.checks.load(Ordering::Relaxed)
    }

    /// Probes that failed so far.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// The checker's verdict on `addr` of `service` (true = healthy), or
    /// `None` when it does not check that backend (yet, or any more).
    pub fn state(&self, service: &str, addr: IpAddr) -> Option<bool> {
        locked(&self.shared.states)
            .get(&(service.to_string(), addr))
            .copied()
    }

    /// Stops the thread and waits for it (within about `STOP_POLL`, 25 ms).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.shared.quit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the health checker thread panicked");
            }
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// One checked service: its settings and when its next round is due.
struct Schedule {
    check: HealthCheck,
    port: u16,
    next_round: Instant,
}

/// One checked (service, backend).
struct Target {
    verdict: Verdict,
    /// A probe is running: the next round skips this backend rather than
    /// piling connects up behind a slow one.
    in_flight: bool,
}

/// What a probe task reports.
struct Probe {
    service: String,
    addr: IpAddr,
    /// `Err` carries the reason, for the log line.
    result: Result<(), String>,
}

/// The state of the checker thread (owned by it alone).
struct Checker {
    plane: Arc<ControlPlane>,
    shared: Arc<Shared>,
    services: HashMap<String, Schedule>,
    targets: HashMap<(String, IpAddr), Target>,
    probes: JoinSet<Probe>,
    /// The (service, backend) of each probe task, to free it if it dies.
    running: HashMap<tokio::task::Id, (String, IpAddr)>,
    permits: Arc<Semaphore>,
}

impl Checker {
    async fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) && !self.shared.quit.load(Ordering::Relaxed) {
            let update = locked(&self.shared.update).take();
            if let Some(services) = update {
                self.set_services(services, Instant::now());
            }
            let now = Instant::now();
            self.start_due_rounds(now);
            let wake = self
                .services
                .values()
                .map(|s| s.next_round)
                .fold(now + STOP_POLL, Instant::min);
            tokio::select! {
                Some(done) = self.probes.join_next_with_id(), if !self.probes.is_empty() => {
                    match done {
                        Ok((id, probe)) => {
                            self.running.remove(&id);
                            self.record(probe);
                        }
                        // A probe does not panic, but if one ever did, its
                        // backend must not stay "in flight" for good.
                        Err(e) => {
                            tracing::error!(error = %e, "health probe failed to run");
                            if let Some(key) = self.running.remove(&e.id()) {
                                if let Some(t) = self.targets.get_mut(&key) {
                                    t.in_flight = false;
                                }
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
        }
    }

    /// Installs a new service list; see [`HealthChecker::update_services`].
    fn set_services(&mut self, services: Vec<(String, HealthCheck)>, now: Instant) {
        let mut next: HashMap<String, Schedule> = HashMap::new();
        for (name, check) in services {
            let Some(port) = check.port else { continue };
            let next_round = self
                .services
                .get(&name)
                .map_or(now, |old| old.next_round.min(now + check.interval));
            next.insert(
                name,
                Schedule {
                    check,
                    port,
                    next_round,
                },
            );
        }
        let dropped: Vec<(String, IpAddr)> = self
            .targets
            .keys()
            .filter(|(service, _)| !next.contains_key(service))
            .cloned()
            .collect();
        for key in dropped {
            locked(&self.shared.states).remove(&key);
            if let Some(t) = self.targets.remove(&key) {
                if !t.verdict.healthy() {
                    // Unchecked backends count as healthy (`HealthCheck::port`).
                    self.apply(&key.0, key.1, true, "no longer health-checked");
                }
            }
        }
        self.services = next;
    }

    /// Starts the round of every service that is due.
    fn start_due_rounds(&mut self, now: Instant) {
        let due: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.next_round <= now)
            .map(|(name, _)| name.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let snap = self.plane.cell().load_full();
        for name in due {
            // What the live versions of the service say about each backend:
            // (some version has it healthy, every version has it healthy).
            let mut seen: HashMap<IpAddr, (bool, bool)> = HashMap::new();
            if let Some(index) = snap.services.iter().position(|s| *s.name == *name) {
                for v in snap.versions().filter(|v| v.service as usize == index) {
                    for b in &v.backends {
                        let e = seen.entry(b.addr).or_insert((false, true));
                        e.0 |= b.healthy;
                        e.1 &= b.healthy;
                    }
                }
            }
            self.forget_gone(&name, &seen);
            let Some(schedule) = self.services.get_mut(&name) else {
                continue;
            };
            // No catch-up burst after a stall: the next round is one
            // interval from now at the latest.
            schedule.next_round = (schedule.next_round + schedule.check.interval)
                .max(now)
                .min(now + schedule.check.interval);
            let target_port = schedule.port;
            let timeout = schedule.check.timeout;
            let mut to_probe = Vec::new();
            let mut to_assert = Vec::new();
            for (&addr, &(any_healthy, all_healthy)) in &seen {
                let key = (name.clone(), addr);
                let target = self.targets.entry(key.clone()).or_insert_with(|| {
                    locked(&self.shared.states).insert(key, any_healthy);
                    Target {
                        verdict: Verdict::new(any_healthy),
                        in_flight: false,
                    }
                });
                let healthy = target.verdict.healthy();
                if healthy != all_healthy || healthy != any_healthy {
                    to_assert.push((addr, healthy));
                }
                if !target.in_flight {
                    target.in_flight = true;
                    to_probe.push(addr);
                }
            }
            for (addr, healthy) in to_assert {
                self.apply(&name, addr, healthy, "a version disagreed with the checker");
            }
            for addr in to_probe {
                let permits = Arc::clone(&self.permits);
                let service = name.clone();
                let task = self.probes.spawn(async move {
                    let result = probe(&permits, SocketAddr::new(addr, target_port), timeout).await;
                    Probe {
                        service,
                        addr,
                        result,
                    }
                });
                self.running.insert(task.id(), (name.clone(), addr));
            }
        }
    }

    /// Drops the targets of `service` that no live version has any more.
    fn forget_gone(&mut self, service: &str, live: &HashMap<IpAddr, (bool, bool)>) {
        let gone: Vec<(String, IpAddr)> = self
            .targets
            .keys()
            .filter(|(s, a)| s == service && !live.contains_key(a))
            .cloned()
            .collect();
        let mut states = locked(&self.shared.states);
        for key in gone {
            self.targets.remove(&key);
            states.remove(&key);
        }
    }

    /// Folds one probe result into its target's verdict.
    fn record(&mut self, probe: Probe) {
        self.shared.checks.fetch_add(1, Ordering::Relaxed);
        if probe.result.is_err() {
            self.shared.failures.fetch_add(1, Ordering::Relaxed);
        }
        let key = (probe.service, probe.addr);
        let (Some(target), Some(schedule)) =
            (self.targets.get_mut(&key), self.services.get(&key.0))
        else {
            // The backend or the service's check went away meanwhile.
            return;
        };
        target.in_flight = false;
        let (rise, fall) = (schedule.check.rise, schedule.check.fall);
        if !target.verdict.observe(probe.result.is_ok(), rise, fall) {
            return;
        }
        let healthy = target.verdict.healthy();
        locked(&self.shared.states).insert(key.clone(), healthy);
        let (service, addr) = key;
        match probe.result {
            Ok(()) => {
                let reason = format!("{rise} consecutive successful connects");
                tracing::info!(service, backend = %addr, healthy, reason, "backend is healthy again");
                self.apply(&service, addr, healthy, "health check");
            }
            Err(last) => {
                let reason = format!("{fall} consecutive failed connects, last: {last}");
                tracing::warn!(service, backend = %addr, healthy, reason, "backend is unhealthy");
                self.apply(&service, addr, healthy, "health check");
            }
        }
    }

    /// Tells the control plane. A failure is logged; the next round sees
    /// the snapshot disagree and asserts the verdict again.
    fn apply(&self, service: &str, addr: IpAddr, healthy: bool, why: &str) {
        if let Err(e) = self.plane.set_health(service, addr, healthy) {
            tracing::error!(
                service,
                backend = %addr,
                healthy,
                why,
                error = %e,
                "could not record a health verdict"
            );
        }
    }
}

/// One TCP connect to `target` within `timeout` (counted once a permit is
/// held, so waiting for a permit is not a failure). The connection is
/// closed at once: the check asks whether the port accepts, nothing more.
async fn probe(permits: &Semaphore, target: SocketAddr, timeout: Duration) -> Result<(), String> {
    let _permit = permits
        .acquire()
        .await
        .map_err(|_| "checker stopping".to_string())?;
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => {
            drop(stream);
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    /// Feeds `results` (true = connect succeeded) and returns the verdict
    /// after each one.
    fn run(start: bool, rise: u32, fall: u32, results: &[bool]) -> Vec<bool> {
        let mut v = Verdict::new(start);
        results
            .iter()
            .map(|&ok| {
                v.observe(ok, rise, fall);
                v.healthy()
            })
            .collect()
    }

    #[test]
    fn fall_consecutive_failures_make_it_unhealthy() {
        assert_eq!(
            run(true, 2, 3, &[false, false, false, false]),
            [true, true, false, false]
        );
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        assert_eq!(
            run(true, 2, 3, &[false, false, true, false, false, false]),
            [true, true, true, true, true, false]
        );
    }

    #[test]
    fn rise_consecutive_successes_make_it_healthy() {
        assert_eq!(
            run(false, 2, 3, &[true, false, true, true, true]),
            [false, false, false, true, true]
        );
    }

    #[test]
    fn observe_reports_flips_only() {
        let mut v = Verdict::new(true);
        assert!(!v.observe(false, 1, 2));
        assert!(v.observe(false, 1, 2));
        assert!(!v.observe(false, 1, 2), "already unhealthy");
        assert!(v.observe(true, 1, 2), "rise 1: one success is enough");
    }

    #[test]
    fn thresholds_of_one_and_zero_flip_at_once() {
        assert_eq!(run(true, 1, 1, &[false, true, false]), [false, true, false]);
        assert_eq!(run(true, 0, 0, &[false, true]), [false, true]);
    }
}
