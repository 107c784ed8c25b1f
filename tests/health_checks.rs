//! The health checker against real loopback listeners, no root needed: a
//! backend whose port stops accepting goes unhealthy within `fall` rounds
//! and leaves its version's Maglev table; it comes back within `rise`
//! rounds once it listens again; a backend that never listens is
//! unhealthy; the stop flag ends the checker promptly.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cutover::control::config;
use cutover::control::health::{services_from, HealthChecker};
use cutover::control::plane::ControlPlane;
use cutover::dataplane::stats::WorkerStats;
use cutover::snapshot::VersionState;

/// The longest any verdict may take here: far above fall × interval
/// (200 ms) and rise × interval, for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(3);

/// A loopback TCP port that accepts (and at once closes) connections until
/// dropped; dropping it closes the listening socket.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn bind(addr: SocketAddr) -> io::Result<Listener> {
        Listener::serve(TcpListener::bind(addr)?)
    }

    /// Accepts so that the backlog never fills up with probes.
    fn serve(l: TcpListener) -> io::Result<Listener> {
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// One port free on every address of `lasts` (127.0.0.X), with a listener
/// on each: the kernel picks a port for the first, the others must follow.
fn listeners(lasts: &[u8]) -> (u16, Vec<Listener>) {
    for _ in 0..50 {
        let Some((&first, rest)) = lasts.split_first() else {
            panic!("no addresses");
        };
        let l = TcpListener::bind(SocketAddr::new(lo(first), 0)).expect("bind loopback");
        let port = l.local_addr().expect("local addr").port();
        let mut all = vec![Listener::serve(l).expect("serve")];
        for &last in rest {
            match Listener::bind(SocketAddr::new(lo(last), port)) {
                Ok(l) => all.push(l),
                Err(_) => break,
            }
        }
        if all.len() == lasts.len() {
            return (port, all);
        }
    }
    panic!("no port free on all of {lasts:?}");
}

/// A control plane over one service `web` with `backends` on 127.0.0.X,
/// checked on `port` every 100 ms (rise 2, fall 2), state in a tempdir.
fn plane(dir: &tempfile::TempDir, backends: &[u8], port: u16) -> Arc<ControlPlane> {
    let list: Vec<String> = backends.iter().map(|&b| format!("\"{}\"", lo(b))).collect();
    let state = dir.path().join("state.json");
    let text = format!(
        r#"[dataplane]
driver = "pcap"

[state]
path = "{}"

[[vip_pool]]
name = "public"
prefixes = ["203.0.113.0/28"]

[[service]]
name = "web"
pool = "public"
ports = ["tcp/80"]
backends = [{}]
forwarding = "l2dsr"

[service.health]
interval = "100ms"
timeout = "100ms"
rise = 2
fall = 2
port = {port}
"#,
        state.display(),
        list.join(", ")
    );
    let path: PathBuf = dir.path().join("cutover.toml");
    std::fs::write(&path, &text).expect("write config");
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("config refused: {e}"),
    };
    match ControlPlane::start(
        cfg,
        &path,
        vec![Arc::new(WorkerStats::new())],
        Instant::now(),
    ) {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("control plane did not start: {e}"),
    }
}

fn checker(
    plane: &Arc<ControlPlane>,
    path_cfg: &config::Config,
) -> (HealthChecker, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let c = HealthChecker::spawn(
        Arc::clone(plane),
        services_from(path_cfg),
        Arc::clone(&stop),
    )
    .expect("spawn checker");
    (c, stop)
}

/// The configuration the plane was started with, read back from disk.
fn cfg(dir: &tempfile::TempDir) -> config::Config {
    match config::load(&dir.path().join("cutover.toml")) {
        Ok(c) => c,
        Err(e) => panic!("config refused: {e}"),
    }
}

/// `addr`'s health in the active version of `web`, as `status()` shows it.
fn status_healthy(plane: &ControlPlane, addr: IpAddr) -> Option<bool> {
    plane
        .status()
        .into_iter()
        .find(|s| s.name == "web")?
        .versions
        .into_iter()
        .find(|v| v.info.state == VersionState::Active)?
        .info
        .backends
        .into_iter()
        .find(|b| b.addr == addr)
        .map(|b| b.healthy)
}

/// Maglev slots owned by `addr` in the published active version of `web`,
/// and how many of 20 000 spread hashes land on it.
fn published_share(plane: &ControlPlane, addr: IpAddr) -> (usize, usize) {
    let snap = plane.cell().load_full();
    let web = snap
        .services
        .iter()
        .position(|s| &*s.name == "web")
        .expect("web published");
    let v = snap
        .versions()
        .find(|v| v.service as usize == web && v.state == VersionState::Active)
        .expect("an active version");
    let idx = v
        .backends
        .iter()
        .position(|b| b.addr == addr)
        .expect("backend in the version");
    let slots = v.maglev.distribution()[idx];
    let hits = (0..20_000u64)
        .filter(|i| {
            let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            v.maglev.lookup(h).map(usize::from) == Some(idx)
        })
        .count();
    (slots, hits)
}

/// Polls `cond` until it holds or [`WAIT`] passes; how long it took.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn a_backend_that_stops_listening_leaves_and_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, mut ls) = listeners(&[1, 2, 3]);
    let plane = plane(&dir, &[1, 2, 3], port);
    let (checker, stop) = checker(&plane, &cfg(&dir));
    let (b1, b2, b3) = (lo(1), lo(2), lo(3));

    // A few rounds with everyone listening: all healthy, every probe ok.
    wait_for("three rounds of probes", || checker.checks() >= 9);
    assert_eq!(checker.failures(), 0);
    for b in [b1, b2, b3] {
        assert_eq!(checker.state("web", b), Some(true), "{b}");
        assert_eq!(status_healthy(&plane, b), Some(true), "{b}");
        assert!(published_share(&plane, b).0 > 0, "{b} owns slots");
    }

    // 127.0.0.2 stops listening: unhealthy, and out of the Maglev table.
    drop(ls.remove(1));
    let took = wait_for("127.0.0.2 unhealthy in status()", || {
        status_healthy(&plane, b2) == Some(false)
    });
    eprintln!("127.0.0.2 went unhealthy after {took:?}");
    assert_eq!(checker.state("web", b2), Some(false));
    assert_eq!(published_share(&plane, b2), (0, 0), "no slot, no lookup");
    for b in [b1, b3] {
        assert_eq!(status_healthy(&plane, b), Some(true), "{b}");
        assert!(published_share(&plane, b).1 > 0, "{b} still gets flows");
    }

    // It listens again: healthy and back in the table.
    let back = Listener::bind(SocketAddr::new(b2, port)).expect("rebind 127.0.0.2");
    let took = wait_for("127.0.0.2 healthy again", || {
        status_healthy(&plane, b2) == Some(true)
    });
    eprintln!("127.0.0.2 came back after {took:?}");
    assert_eq!(checker.state("web", b2), Some(true));
    let (slots, hits) = published_share(&plane, b2);
    assert!(slots > 0 && hits > 0, "back in the table: {slots} slots");

    stop.store(true, Ordering::Relaxed);
    let t = Instant::now();
    checker.shutdown();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    drop(back);
}

#[test]
fn a_backend_that_never_listens_is_unhealthy_and_stop_is_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 127.0.0.1 listens; 127.0.0.4 never does on that port.
    let (port, _ls) = listeners(&[1]);
    let plane = plane(&dir, &[1, 4], port);
    let (checker, stop) = checker(&plane, &cfg(&dir));

    wait_for("127.0.0.4 unhealthy", || {
        status_healthy(&plane, lo(4)) == Some(false)
    });
    assert_eq!(checker.state("web", lo(4)), Some(false));
    assert_eq!(published_share(&plane, lo(4)), (0, 0));
    assert_eq!(checker.state("web", lo(1)), Some(true));
    assert_eq!(status_healthy(&plane, lo(1)), Some(true));
    assert!(checker.failures() >= 2);
    assert_eq!(checker.state("web", lo(9)), None, "not a backend");

    // The caller's stop flag alone ends the thread: checks stop counting.
    let t = Instant::now();
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(100));
    let frozen = checker.checks();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(checker.checks(), frozen, "no probe after stop");
    drop(checker);
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_service_no_longer_checked_gets_its_backends_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, _ls) = listeners(&[1]);
    let plane = plane(&dir, &[1, 4], port);
    let (checker, _stop) = checker(&plane, &cfg(&dir));
    wait_for("127.0.0.4 unhealthy", || {
        status_healthy(&plane, lo(4)) == Some(false)
    });

    checker.update_services(Vec::new());
    wait_for("127.0.0.4 healthy once unchecked", || {
        status_healthy(&plane, lo(4)) == Some(true)
    });
    assert_eq!(checker.state("web", lo(4)), None);
}
